"""low_precision_decentralized against an independent reference in plain
torch.distributed over Gloo (docs/low_precision_decentralized.md): three replicas per rank,
d = x + l/3 + r/3 - 5w/3 compressed and sent to both ring neighbours, every
side adding the same decoded difference; and its invariant, my weights equal
my right neighbour's copy of them bit for bit, checked at run time."""

import pytest
import torch
import torch.distributed as dist
from torch import nn

import bagua_ravnest
from bagua_ravnest.launch import run_world, values
from models import batches, construction_error, flat_params, mlp, resumed_run_is_identical

STATE = "_bagua_algorithm_state"


def _replicas(model) -> dict:
    state = model.state_dict()[STATE]["state"]
    return {k: v.view(torch.float32).clone() for k, v in state.items()}


def _against_reference(rank, world, interval, repeat_steps):
    gloo = dist.new_group(backend="gloo")
    model = mlp(seed=rank)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    ours = bagua_ravnest.DistributedDataParallel(
        model, algorithm=f"low_precision_decentralized:codec=fp16,communication_interval={interval}", optimizer=opt)
    ref = mlp(seed=0)
    params = list(ref.parameters())
    opt_ref = torch.optim.SGD(params, lr=0.05, momentum=0.9)
    w = flat_params(ref)
    left, right = w.clone(), w.clone()
    steps = 0
    worst = 0.0

    def reference_step():
        nonlocal w, left, right, steps
        opt_ref.step()
        steps += 1
        if steps % interval:
            return  # x moves alone; the replicas wait for the next gossip step
        with torch.no_grad():
            x_new = flat_params(ref)
            d = x_new + left / 3 + right / 3 - 5 * w / 3
            c = d.half().float()  # fp16 through the codec and back
            w = w + c
            offset = 0
            for p in params:
                p.copy_(w[offset : offset + p.numel()].view_as(p))
                offset += p.numel()
            everyone = [torch.empty_like(c) for _ in range(world)]
            dist.all_gather(everyone, c, group=gloo)
            left = left + everyone[(rank - 1) % world]
            right = right + everyone[(rank + 1) % world]

    for step, (x, y) in enumerate(batches(rank, 7)):
        opt.zero_grad()
        nn.functional.cross_entropy(ours(x), y).backward()
        opt_ref.zero_grad()
        nn.functional.cross_entropy(ref(x), y).backward()
        # With repeat_steps, some optimizer steps follow one another with no
        # forward between them (the same gradients applied twice): the
        # difference encoded at the first is sent before the second.
        for _ in range(2 if repeat_steps and step % 3 == 1 else 1):
            opt.step()
            reference_step()
            worst = max(worst, float((flat_params(ours) - flat_params(ref)).abs().max()))
    return worst


@pytest.mark.parametrize("world,interval,repeat_steps", [(2, 1, False), (4, 1, False), (4, 3, False), (4, 1, True)])
def test_matches_the_reference(world, interval, repeat_steps):
    for worst in values(run_world(_against_reference, world, interval, repeat_steps)):
        assert worst == 0.0, worst


def _invariant(rank, world, codec):
    gloo = dist.new_group(backend="gloo")
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    ours = bagua_ravnest.DistributedDataParallel(
        model, algorithm=f"low_precision_decentralized:codec={codec},check_interval=1", optimizer=opt)
    seen = list(batches(rank, 8))

    def loss_on_seen():
        with torch.no_grad():
            return sum(float(nn.functional.cross_entropy(ours(x), y)) for x, y in seen) / len(seen)

    before = loss_on_seen()
    for x, y in seen:
        opt.zero_grad()
        nn.functional.cross_entropy(ours(x), y).backward()
        opt.step()
    after = loss_on_seen()
    # One more forward and backward: the end of backward waits for the last exchange.
    x, y = next(batches(rank, 1))
    nn.functional.cross_entropy(ours(x), y).backward()
    rep = _replicas(ours)
    mine = rep["bucket0.weights"]
    everyone = [torch.empty_like(mine) for _ in range(world)]
    dist.all_gather(everyone, mine, group=gloo)
    return (torch.equal(rep["bucket0.left"], everyone[(rank - 1) % world]),
            torch.equal(rep["bucket0.right"], everyone[(rank + 1) % world]),
            torch.equal(mine, flat_params(ours)), before, after,
            float((everyone[0] - everyone[1]).abs().max()))


@pytest.mark.parametrize("world,codec", [(2, "minmax_uint8"), (4, "minmax_uint8"), (4, "sign1bit"), (4, "bf16")])
def test_my_weights_equal_my_neighbours_copies_bit_for_bit(world, codec):
    for left_ok, right_ok, w_is_x, first, last, spread in values(run_world(_invariant, world, codec)):
        assert left_ok and right_ok and w_is_x
        assert last < first  # it trains (on the batches it saw)
        assert spread > 0  # ranks differ: it is decentralized


def _drift(rank, world):
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    ours = bagua_ravnest.DistributedDataParallel(
        model, algorithm="low_precision_decentralized:check_interval=1", optimizer=opt)
    data = batches(rank, 4)
    for _ in range(2):
        x, y = next(data)
        opt.zero_grad()
        nn.functional.cross_entropy(ours(x), y).backward()
        opt.step()
    if rank == 1:  # rank 1 alone loads an altered copy of its left neighbour
        state = ours.state_dict()
        left = state[STATE]["state"]["bucket0.left"].view(torch.float32)
        left[0] += 1.0
        ours.load_state_dict(state)
    try:
        for x, y in data:
            opt.zero_grad()
            nn.functional.cross_entropy(ours(x), y).backward()
            opt.step()
    except RuntimeError as e:
        return str(e)
    return "no error"


def test_drift_is_a_named_error_on_every_rank():
    for message in values(run_world(_drift, 4)):
        assert "ranks 1 keep" in message and "drifted" in message, message


def _resume(rank, world):
    return resumed_run_is_identical(rank, "low_precision_decentralized:codec=sign1bit,check_interval=2")


def test_a_resumed_run_continues_bit_identically():
    assert all(values(run_world(_resume, 4)))


def _without_optimizer(rank, world):
    return construction_error(algorithm="low_precision_decentralized")


def test_it_needs_the_optimizer():
    for message in values(run_world(_without_optimizer, 2)):
        assert "optimizer=" in message, message
