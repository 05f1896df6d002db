"""DistributedDataParallel.average_replicas(): every rank's parameters and
floating-point buffers become their mean over the ranks, and the algorithm
goes on from the common weights (its copies of the neighbours' weights, an
average in flight of a per-rank snapshot, a background round: none may pull
the replicas apart again)."""

import time

import pytest
import torch
import torch.distributed as dist
from torch import nn

import bagua_ravnest
from bagua_ravnest.launch import run_world, values
from models import batches, mlp


def _state(model) -> torch.Tensor:
    """Parameters and floating-point buffers, flat, in fp64."""
    tensors = [p.detach() for p in model.parameters()] + [b for b in model.buffers() if b.is_floating_point()]
    return torch.cat([t.reshape(-1).double() for t in tensors])


def _params(model) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1).double() for p in model.parameters()])


def _gathered(t: torch.Tensor, world: int, group) -> list[torch.Tensor]:
    everyone = [torch.empty_like(t) for _ in range(world)]
    dist.all_gather(everyone, t, group=group)
    return everyone


def _step(model, opt, x, y):
    opt.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    opt.step()


def _averages(rank, world, algorithm, ddp_kwargs):
    gloo = dist.new_group(backend="gloo")
    model = mlp(seed=rank, batchnorm=True)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    ddp = bagua_ravnest.DistributedDataParallel(model, algorithm=algorithm, optimizer=opt, timeout=60,
                                                **ddp_kwargs)
    data = list(batches(rank, 14))
    for x, y in data[:5]:  # ends mid-period for local_sgd:period=2 (an average in flight with overlap)
        _step(ddp, opt, x, y)
    pausable = "abort" in ddp.algorithm_controls
    if pausable:  # the gather must not race a background round
        ddp.algorithm_control("abort")
    before = _gathered(_state(model), world, gloo)
    if pausable:
        # Rounds run back to back again (with no step between them they keep
        # the mean), and the ranks come to average_replicas apart, as over
        # uneven links: no rank may join a round with the old weights while
        # another has the mean.
        ddp.algorithm_control("resume")
        time.sleep(0.3 * rank)
    ddp.average_replicas()
    after = _state(model)
    mean = torch.stack(before).mean(dim=0)
    moved_apart = max((b - mean).abs().max().item() for b in before)
    off_mean = (after - mean).abs().max().item()
    same_bits = all(torch.equal(a, after) for a in _gathered(after, world, gloo))
    # With lr 0 the weights move only by the algorithm, which now starts
    # from equal replicas: they must stay equal.
    averaged = _params(model)
    for group in opt.param_groups:
        group["lr"] = 0.0
    stay_equal = 0.0  # after every step: a pull apart may heal by the next sync
    for x, y in data[5:]:
        _step(ddp, opt, x, y)
        mine = _params(model)
        stay_equal = max(stay_equal, max((p - mine).abs().max().item() for p in _gathered(mine, world, gloo)))
    drift = (_params(model) - averaged).abs().max().item()
    ddp.close()
    return moved_apart, off_mean, same_bits, stay_equal, drift


@pytest.mark.parametrize("algorithm,world,ddp_kwargs", [
    ("decentralized:peer_selection_mode=ring", 2, {}),
    # check_interval=1: the replicas' invariant is checked at every step after it.
    ("low_precision_decentralized:check_interval=1", 4, {}),
    ("low_precision_decentralized:check_interval=1,codec=sign1bit", 2, {}),  # residuals
    ("local_sgd:period=2", 2, {}),
    ("local_sgd:overlap=true,period=2", 2, {}),
    ("local_sgd:outer_lr=0.7,outer_momentum=0.5,overlap=true,period=2", 2, {}),
    ("async_model_average:sync_interval_ms=0,warmup_steps=1", 2, {}),
    ("gradient_allreduce", 2, {"broadcast_buffers": False}),
])
def test_every_rank_holds_the_mean_and_training_goes_on_from_it(algorithm, world, ddp_kwargs):
    for moved_apart, off_mean, same_bits, stay_equal, drift in values(
            run_world(_averages, world, algorithm, ddp_kwargs, timeout=180)):
        assert moved_apart > 1e-3, "the replicas (or their buffers) did not differ: the test shows nothing"
        assert off_mean < 1e-5, off_mean
        assert same_bits
        # Exactly equal but for low_precision_decentralized, whose gossip of
        # (rounded) zero differences moves every rank alike by rounding.
        assert stay_equal < 1e-6, stay_equal
        if "outer_lr" not in algorithm:  # an outer step moves the weights without the inner lr
            assert drift < 1e-4, drift


def _misuse(rank, world, case):
    model = mlp(seed=rank)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    ddp = bagua_ravnest.DistributedDataParallel(model, algorithm="decentralized", optimizer=opt, timeout=30)
    x, y = next(batches(rank, 1))
    if case == "between forward and backward":
        nn.functional.cross_entropy(ddp(x), y)  # its backward never runs
        ddp.average_replicas()
    ddp.close()


@pytest.mark.parametrize("case,message", [
    ("between forward and backward", "between a forward and its backward; call it between steps"),
])
def test_misuse_is_explained(case, message):
    for r in run_world(_misuse, 2, case, timeout=120):
        assert not r.ok and message in r.error, r.error
