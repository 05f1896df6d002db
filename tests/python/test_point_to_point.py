"""torch.distributed send/recv on the bagua backend: between ranks of one
host they go through shared memory (not Gloo's loopback TCP), with torch's
semantics: matched by source and tag, in order per pair and tag, any dtype,
contiguous or not."""

import pytest
import torch
import torch.distributed as dist

from bagua_ravnest.launch import run_world, values


def _exchange(rank, world):
    backend = dist.group.WORLD._get_backend(torch.device("cpu"))
    gloo = dist.new_group(backend="gloo")
    right, left = (rank + 1) % world, (rank - 1) % world
    problems = []

    # A receive posted before its message arrives waits on the shared-memory
    # transport: proof of the route, not just of the result.
    got = torch.empty(1000)
    pending = dist.irecv(got, left, tag=7)
    if backend.shared_memory_tracked_tags < 1:
        problems.append("the receive is not waiting on shared memory")
    dist.barrier(group=gloo)
    dist.isend(torch.full((1000,), float(rank)), right, tag=7).wait()
    pending.wait()
    if not torch.equal(got, torch.full((1000,), float(left))):
        problems.append("first message")

    # Several tags, received in the opposite order of sending; dtypes;
    # non-contiguous sources and targets; an empty tensor.
    payloads = {
        1: torch.arange(12, dtype=torch.float64).reshape(3, 4).t() * (rank + 1),  # non-contiguous
        2: torch.arange(70_000, dtype=torch.int32) + rank,
        3: torch.tensor([rank % 2 == 0, True, False]),
        4: torch.empty(0),
        5: torch.randn(300, 300, generator=torch.Generator().manual_seed(rank)).to(torch.bfloat16),
    }
    sends = [dist.isend(t, right, tag=tag) for tag, t in payloads.items()]
    for tag in sorted(payloads, reverse=True):
        want = {
            1: torch.arange(12, dtype=torch.float64).reshape(3, 4).t() * (left + 1),
            2: torch.arange(70_000, dtype=torch.int32) + left,
            3: torch.tensor([left % 2 == 0, True, False]),
            4: torch.empty(0),
            5: torch.randn(300, 300, generator=torch.Generator().manual_seed(left)).to(torch.bfloat16),
        }[tag]
        target = torch.zeros(want.shape[::-1], dtype=want.dtype).t() if tag == 1 else torch.zeros_like(want)
        dist.recv(target, left, tag=tag)
        if not torch.equal(target, want):
            problems.append(f"tag {tag}")
    for s in sends:
        s.wait()

    # Order within one tag.
    for i in range(20):
        dist.isend(torch.tensor([float(i)]), right, tag=9)
    seen = []
    for _ in range(20):
        t = torch.empty(1)
        dist.recv(t, left, tag=9)
        seen.append(int(t.item()))
    if seen != list(range(20)):
        problems.append(f"order {seen}")
    dist.barrier(group=gloo)
    return problems


@pytest.mark.parametrize("world", [2, 4])
def test_send_recv_between_ranks_of_one_host_use_shared_memory(world):
    for rank, problems in enumerate(values(run_world(_exchange, world))):
        assert problems == [], f"rank {rank}: {problems}"


def _mismatch(rank, world):
    if rank == 0:
        dist.send(torch.zeros(10), 1)
        return None
    try:
        dist.recv(torch.zeros(12), 0)
    except RuntimeError as e:
        return str(e)
    return "no error"


def test_a_size_mismatch_is_named():
    out = values(run_world(_mismatch, 2, env={"HARNESS_SKIP_DESTROY": "1"}))
    assert "expected 48 bytes, rank 0 sent 40" in out[1]


def _any_source(rank, world):
    if rank == 0:
        try:
            dist.recv(torch.zeros(1))
        except RuntimeError as e:
            return str(e)
        return "no error"
    return None


def test_recv_from_any_source_says_what_to_do():
    out = values(run_world(_any_source, 2))
    assert "name the source" in out[0]
