"""Nothing hangs: a dead peer is an error on the survivors within the
timeout, and ranks that disagree on the configuration fail at start."""

import os
import time

import pytest
import torch

import bagua_ravnest
from bagua_ravnest.launch import run_world
from models import batches, mlp


def _killed_mid_training(rank, world):
    model = bagua_ravnest.DistributedDataParallel(mlp(), timeout=10)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    start = None
    for step, (x, y) in enumerate(batches(rank, 50)):
        if step == 5 and rank == world - 1:
            os._exit(17)  # dies without a word
        if step == 5:
            start = time.monotonic()
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    raise AssertionError("training continued past a dead peer")


@pytest.mark.parametrize("world", [2, 4])
def test_killed_rank_makes_others_raise(world):
    start = time.monotonic()
    results = run_world(_killed_mid_training, world, timeout=90, env={"HARNESS_SKIP_DESTROY": "1"})
    elapsed = time.monotonic() - start
    dead = results[world - 1]
    assert dead.error_type == "died" and dead.exitcode == 17
    for r in results[:-1]:
        assert not r.ok and r.error_type != "died", r
        assert "RuntimeError" in r.error_type or "Error" in r.error_type
        assert "training continued" not in r.error
        # The engine's error names the rank, the operation and the bucket.
        assert f"rank {r.rank}" in r.error and "gradient_allreduce" in r.error and "bucket" in r.error, r.error
    assert elapsed < 60


def _mismatched_algorithms(rank, world):
    algorithm = "gradient_allreduce" if rank == 0 else "gradient_allreduce:allreduce=inner"
    bagua_ravnest.DistributedDataParallel(mlp(), algorithm=algorithm)


def test_different_algorithms_fail_at_start_on_every_rank():
    for r in run_world(_mismatched_algorithms, 2, timeout=60):
        assert not r.ok
        assert "ranks disagree on the algorithm" in r.error


def _bad_name_on_one_rank(rank, world):
    bagua_ravnest.DistributedDataParallel(mlp(), algorithm="gradient_allreduce" if rank else "no_such_algorithm")


def test_unknown_algorithm_on_one_rank_fails_everywhere_with_the_list():
    for r in run_world(_bad_name_on_one_rank, 2, timeout=60):
        assert not r.ok
        assert "no_such_algorithm" in r.error and "gradient_allreduce" in r.error and "rank 0" in r.error


def _different_models(rank, world):
    bagua_ravnest.DistributedDataParallel(torch.nn.Linear(4, 4 + rank))


def test_different_parameter_shapes_fail_at_start():
    for r in run_world(_different_models, 2, timeout=60):
        assert not r.ok and "different shapes" in r.error


def test_registry_lists_algorithms():
    assert "gradient_allreduce" in bagua_ravnest.algorithm_names()
    info = bagua_ravnest.describe_algorithm("gradient_allreduce")
    assert set(info["options"]) == {"allreduce", "hierarchical", "rings", "directions"}
    with pytest.raises(bagua_ravnest.InvalidArgument, match="available: .*gradient_allreduce"):
        bagua_ravnest.describe_algorithm("nope")
