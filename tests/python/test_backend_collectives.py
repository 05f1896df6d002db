"""Every collective of the "bagua" backend against Gloo's result on the same
inputs, world sizes 2 and 4, several dtypes and sizes."""

import pytest
import torch
import torch.distributed as dist

from bagua_ravnest.launch import run_world, values

DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int32, torch.int64, torch.int8]
SIZES = [0, 1, 7, 1003, (1 << 18) + 5]


def _input(rank, n, dtype, op=None):
    g = torch.Generator().manual_seed(1234 + 17 * rank + n)
    if op == dist.ReduceOp.PRODUCT:
        x = torch.randint(1, 3, (n,), generator=g)  # 1 or 2: exact in every dtype
    else:
        x = torch.randint(-20, 21, (n,), generator=g)  # small integers: exact sums
    return x.to(dtype)


def _collectives(rank, world):
    gloo = dist.new_group(backend="gloo")
    problems = []

    def check(name, ours, ref):
        if isinstance(ours, (list, tuple)):
            for i, (a, b) in enumerate(zip(ours, ref)):
                check(f"{name}[{i}]", a, b)
            return
        if ours.dtype != ref.dtype or ours.shape != ref.shape or not torch.equal(ours, ref):
            problems.append(f"{name}: ours {ours.flatten()[:6].tolist()} vs gloo {ref.flatten()[:6].tolist()}")

    for dtype in DTYPES:
        for n in SIZES:
            for op in (dist.ReduceOp.SUM, dist.ReduceOp.MIN, dist.ReduceOp.MAX, dist.ReduceOp.PRODUCT):
                if n > 2000 and op != dist.ReduceOp.SUM:
                    continue
                ours, ref = _input(rank, n, dtype, op), _input(rank, n, dtype, op)
                dist.all_reduce(ours, op=op)
                dist.all_reduce(ref, op=op, group=gloo)
                check(f"all_reduce {op} {dtype} n={n}", ours, ref)
    for dtype in (torch.float32, torch.float64, torch.bfloat16):
        ours = _input(rank, 1003, dtype)
        ref = _input(rank, 1003, dtype)
        dist.all_reduce(ours, op=dist.ReduceOp.AVG)
        dist.all_reduce(ref, group=gloo)
        check(f"all_reduce AVG {dtype}", ours, ref / world)

    # Async work with a future chained like a DDP comm hook.
    t = _input(rank, 100, torch.float32)
    ref = t.clone()
    work = dist.all_reduce(t, async_op=True)
    fut = work.get_future().then(lambda f: f.value()[0] * 2)
    dist.all_reduce(ref, group=gloo)
    check("future.then", fut.wait(), ref * 2)
    assert work.is_completed()

    for dtype in (torch.float32, torch.int64, torch.float16):
        for n in (1, 999):
            src = world - 1
            ours, ref = _input(rank, n, dtype), _input(rank, n, dtype)
            dist.broadcast(ours, src=src)
            dist.broadcast(ref, src=src, group=gloo)
            check(f"broadcast {dtype}", ours, ref)

            ours, ref = _input(rank, n, dtype), _input(rank, n, dtype)
            dist.reduce(ours, dst=1)
            dist.reduce(ref, dst=1, group=gloo)
            if rank == 1:
                check(f"reduce {dtype}", ours, ref)

            x = _input(rank, n, dtype)
            ours = [torch.empty_like(x) for _ in range(world)]
            ref = [torch.empty_like(x) for _ in range(world)]
            dist.all_gather(ours, x)
            dist.all_gather(ref, x, group=gloo)
            check(f"all_gather {dtype}", ours, ref)

            ours, ref = torch.empty(world * n, dtype=dtype), torch.empty(world * n, dtype=dtype)
            dist.all_gather_into_tensor(ours, x)
            dist.all_gather_into_tensor(ref, x, group=gloo)
            check(f"all_gather_into_tensor {dtype}", ours, ref)

            ours = [torch.empty_like(x) for _ in range(world)] if rank == 0 else None
            ref = [torch.empty_like(x) for _ in range(world)] if rank == 0 else None
            dist.gather(x, ours, dst=0)
            dist.gather(x, ref, dst=0, group=gloo)
            if rank == 0:
                check(f"gather {dtype}", ours, ref)

            chunks = [_input(rank * 10 + i, n, dtype) for i in range(world)] if rank == 0 else None
            ours, ref = torch.empty(n, dtype=dtype), torch.empty(n, dtype=dtype)
            dist.scatter(ours, chunks, src=0)
            dist.scatter(ref, chunks, src=0, group=gloo)
            check(f"scatter {dtype}", ours, ref)

            big = _input(rank, world * n, dtype)
            ours, ref = torch.empty(n, dtype=dtype), torch.empty(n, dtype=dtype)
            dist.reduce_scatter_tensor(ours, big.clone())
            dist.reduce_scatter_tensor(ref, big.clone(), group=gloo)
            check(f"reduce_scatter_tensor {dtype}", ours, ref)

            parts = list(big.chunk(world))
            ours, ref = torch.empty(n, dtype=dtype), torch.empty(n, dtype=dtype)
            dist.reduce_scatter(ours, [p.clone() for p in parts])
            dist.reduce_scatter(ref, [p.clone() for p in parts], group=gloo)
            check(f"reduce_scatter {dtype}", ours, ref)

            ours, ref = torch.empty_like(big), torch.empty_like(big)
            dist.all_to_all_single(ours, big)
            dist.all_to_all_single(ref, big, group=gloo)
            check(f"all_to_all_single {dtype}", ours, ref)

            outs = [torch.empty(n, dtype=dtype) for _ in range(world)]
            refs = [torch.empty(n, dtype=dtype) for _ in range(world)]
            dist.all_to_all(outs, [p.clone() for p in parts])
            dist.all_to_all(refs, [p.clone() for p in parts], group=gloo)
            check(f"all_to_all {dtype}", outs, refs)

    # Uneven all_to_all_single: rank r sends r + 1 elements to everyone.
    inp = torch.full((world * (rank + 1),), float(rank))
    out = torch.empty(sum(r + 1 for r in range(world)))
    ref = torch.empty_like(out)
    in_splits, out_splits = [rank + 1] * world, [r + 1 for r in range(world)]
    dist.all_to_all_single(out, inp, out_splits, in_splits)
    dist.all_to_all_single(ref, inp, out_splits, in_splits, group=gloo)
    check("all_to_all_single uneven", out, ref)

    # all_reduce_coalesced and the coalescing manager path.
    ts = [_input(rank, 5, torch.float32), _input(rank, 9, torch.float32)]
    rs = [t.clone() for t in ts]
    dist.all_reduce_coalesced(ts)
    dist.all_reduce_coalesced(rs, group=gloo)
    check("all_reduce_coalesced", ts, rs)

    # Point to point around the ring.
    msg = torch.full((33,), float(rank))
    got = torch.empty(33)
    right, left = (rank + 1) % world, (rank - 1) % world
    reqs = [dist.isend(msg, right), dist.irecv(got, left)]
    for r in reqs:
        r.wait()
    check("send/recv", got, torch.full((33,), float(left)))

    dist.barrier()
    return problems


@pytest.mark.parametrize("world", [2, 4])
def test_every_collective_matches_gloo(world):
    for rank, problems in enumerate(values(run_world(_collectives, world, timeout=300))):
        assert problems == [], f"rank {rank}:\n" + "\n".join(problems)


def _subgroups_and_inner(rank, world):
    backend = dist.group.WORLD._get_backend(torch.device("cpu"))
    pair = dist.new_group([0, 1])  # a "bagua" subgroup
    t = torch.full((10,), float(rank + 1))
    if rank in (0, 1):
        dist.all_reduce(t, group=pair)
    whole = torch.arange(100, dtype=torch.float32) * (rank + 1)
    dist.all_reduce(whole)
    return backend.allreduce, t[0].item(), whole[1].item()


@pytest.mark.parametrize("allreduce", ["ring", "multi_ring", "inner"])
def test_subgroups_and_allreduce_choice(allreduce):
    world = 4
    out = values(run_world(_subgroups_and_inner, world, env={"BAGUA_ALLREDUCE": allreduce}))
    for rank, (ring, sub, whole) in enumerate(out):
        assert ring == allreduce
        assert sub == (3.0 if rank in (0, 1) else rank + 1)
        assert whole == sum(range(1, world + 1))


def _bad_option(rank, world):
    import bagua_ravnest

    bagua_ravnest.backend.BackendOptions(allreduce="magic").resolved()


def test_bad_backend_option_is_explained():
    results = run_world(_bad_option, 2)
    assert all(not r.ok and "ring, inner" in r.error for r in results)


def _reserved_tag(rank, world):
    t = torch.zeros(4)
    ok = []
    # A tag in the user range works...
    if rank == 0:
        dist.send(t + 1, dst=1, tag=(1 << 24) - 1)
    else:
        dist.recv(t, src=0, tag=(1 << 24) - 1)
        ok.append(t[0].item())
    # ...one in bagua's own range is refused before anything is sent.
    try:
        if rank == 0:
            dist.send(t, dst=1, tag=1 << 25)
        else:
            dist.recv(t, src=0, tag=1 << 25)
    except Exception as e:  # noqa: BLE001 - the message is what is checked
        return ok, str(e)
    return ok, ""


def test_send_recv_tags_in_the_reserved_range_are_refused():
    out = values(run_world(_reserved_tag, 2))
    assert out[1][0] == [1.0]
    for _, message in out:
        assert "out of range" in message and "[0, 16777216)" in message


def _transports(rank, world):
    backend = dist.group.WORLD._get_backend(torch.device("cpu"))
    t = torch.arange(300_001, dtype=torch.float64) * (rank + 1)
    dist.all_reduce(t)
    return backend.shared_memory_peers, t[7].item()


@pytest.mark.parametrize("shm", ["1", "0"])
def test_same_host_ranks_use_shared_memory_unless_turned_off(shm):
    import os

    world = 4
    out = values(run_world(_transports, world, env={"BAGUA_SHM": shm}))
    for rank, (peers, value) in enumerate(out):
        assert peers == ([r for r in range(world) if r != rank] if shm == "1" else [])
        assert value == 7 * sum(range(1, world + 1))
    # Set-up removes the channels' names once every rank has opened them.
    assert not [f for f in os.listdir("/dev/shm") if f.startswith("bagua-")]


def _compressed(rank, world):
    backend = dist.group.WORLD._get_backend(torch.device("cpu"))
    g = torch.Generator().manual_seed(rank)
    x = torch.randn(10_001, generator=g)
    exact = x.clone()
    dist.all_reduce(exact)
    exact /= world
    results = {}
    for codec in ("identity", "fp16", "minmax_uint8"):
        t = x.clone()
        backend.compressed_allreduce(t, codec).wait()
        results[codec] = ((t - exact).abs().max().item(), t[:5].tolist())
    errors = []
    for bad in (lambda: backend.compressed_allreduce(x.clone(), "zip"),
                lambda: backend.compressed_allreduce(x.double(), "fp16")):
        try:
            bad()
        except Exception as e:  # noqa: BLE001 - the message is what is checked
            errors.append(str(e))
    return results, errors


def test_compressed_allreduce_on_the_backend():
    out = values(run_world(_compressed, 4))
    for results, errors in out:
        assert results["identity"][0] < 1e-6
        assert results["fp16"][0] < 5e-3
        assert results["minmax_uint8"][0] < 0.1
        for codec in results:  # every rank holds the same values
            assert results[codec][1] == out[0][0][codec][1]
        assert "minmax_uint8" in errors[0] and "float32" in errors[1]


def _destroyed_with_work_in_flight(rank, world):
    import datetime
    import sys
    import threading

    from bagua_ravnest import _C

    store = dist.PrefixStore("gil/", dist.distributed_c10d._get_default_store())
    gloo = dist.ProcessGroupGloo(dist.PrefixStore("gloo/", store), rank, world, datetime.timedelta(seconds=60))
    pg = _C.ProcessGroupBagua(rank, world, gloo, None, "ring", 1 << 20, 60.0)
    del gloo  # the backend holds the only reference to its inner Gloo group
    outs = [torch.empty(3) for _ in range(world)]
    if rank == 1:
        store.wait(["join"])  # rank 0 says when to join the all-gather
        pg.allgather([outs], [torch.full((3,), 1.0)]).wait()
        return "joined"
    # An all-gather that waits for rank 1; Gloo's worker holds the only
    # references to its tensors once Python lets go of them.
    work = pg.allgather([outs], [torch.full((3,), 0.0)])
    del work, outs
    # Rank 1 is told to join by a thread that can run only once this thread
    # lets go of the GIL (no preemption: a huge switch interval), which it
    # does nowhere but in the backend's destruction. Destroying the backend
    # waits for the all-gather, so holding the GIL there would be a deadlock.
    told = threading.Event()

    def tell_rank_1():
        told.wait()
        store.set("join", "1")

    helper = threading.Thread(target=tell_rank_1)
    helper.start()
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e6)
    try:
        told.set()
        del pg
    finally:
        sys.setswitchinterval(interval)
    helper.join()
    return "destroyed"


def test_a_backend_destroyed_with_work_in_flight_lets_go_of_the_gil():
    assert values(run_world(_destroyed_with_work_in_flight, 2, timeout=60)) == ["destroyed", "joined"]
