"""Algorithms composed from their parts (docs/composition.md):
codec= x exchange= x schedule= build the named algorithm that computes it
(the canonical spec says which), train through the DDP wrapper, and get the
wrapper's requirements from what they build."""

import pytest
import torch
from torch import nn

import bagua_ravnest
from bagua_ravnest.launch import run_world, values
from models import batches, construction_error, mlp


def _trains(rank, world, spec):
    model = mlp(seed=rank)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    ddp = bagua_ravnest.DistributedDataParallel(model, algorithm=spec, optimizer=opt, timeout=60)
    seen = list(batches(rank, 8))

    def loss_on_seen():
        with torch.no_grad():
            return sum(float(nn.functional.cross_entropy(ddp(x), y)) for x, y in seen) / len(seen)

    before = loss_on_seen()
    for _ in range(4):  # random labels: only memorizing lowers the loss
        for x, y in seen:
            opt.zero_grad()
            nn.functional.cross_entropy(ddp(x), y).backward()
            opt.step()
    ddp.close()
    return ddp.algorithm, before, loss_on_seen()


@pytest.mark.parametrize("spec,builds", [
    ("codec=minmax_uint8,exchange=decentralized:ring,schedule=every:4", "low_precision_decentralized:"),
    ("codec=identity,exchange=decentralized:shift_one,schedule=every:2", "decentralized:communication_interval=2"),
    ("codec=sign1bit,exchange=allreduce,schedule=every:3", "local_sgd:codec=sign1bit"),
    ("codec=identity,exchange=decentralized:ring,schedule=async:0", "async_model_average:max_lag=0,peer_selection_mode=ring"),
])
def test_composed_specs_train(spec, builds):
    for canonical, before, after in values(run_world(_trains, 4, spec, timeout=180)):
        assert canonical.startswith(builds), canonical
        assert after < before - 0.05, (before, after)  # about 0.15 lower when it trains


def _without_optimizer(rank, world):
    return construction_error(algorithm="codec=fp16,exchange=decentralized:ring,schedule=every:2")


def test_a_composed_spec_carries_its_requirements():
    for error in values(run_world(_without_optimizer, 2, timeout=60)):
        assert "built as low_precision_decentralized" in error and "optimizer=" in error, error


def _meaningless(rank, world):
    return construction_error(algorithm="codec=minmax_uint8,exchange=decentralized:shift_one",
                              optimizer=torch.optim.SGD(mlp().parameters(), lr=0.1))


def test_a_meaningless_combination_fails_on_every_rank_saying_why():
    for error in values(run_world(_meaningless, 2, timeout=60)):
        assert "needs fixed neighbours" in error and "valid combinations" in error, error
