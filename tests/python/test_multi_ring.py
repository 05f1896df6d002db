"""The multi-ring all-reduce (docs/multi_ring.md) through the backend
(BAGUA_ALLREDUCE=multi_ring) and through the DDP wrapper
(gradient_allreduce:allreduce=multi_ring): exact results, plans from given
or measured link rates, and clear errors for bad rates."""

import pytest
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as TorchDDP

import bagua_ravnest
from bagua_ravnest.launch import run_world, values
from models import mlp, train


def _allreduce_exactly(rank, world):
    backend = dist.group.WORLD._get_backend(torch.device("cpu"))
    problems = []
    # Small integers: any reduction order gives the exact sum.
    for numel in (1, 7, 1000, 300_001):
        for dtype in (torch.float32, torch.float64, torch.int32):
            t = ((torch.arange(numel) * 3 + rank * 7) % 11 - 5).to(dtype)
            want = sum(((torch.arange(numel) * 3 + r * 7) % 11 - 5).to(dtype) for r in range(world))
            dist.all_reduce(t)
            if not torch.equal(t, want):
                problems.append(f"sum of {numel} x {dtype}: off by {(t - want).abs().max().item()}")
    t = torch.full((100_000,), float(rank))
    dist.all_reduce(t, op=dist.ReduceOp.AVG)
    if not torch.equal(t, torch.full_like(t, (world - 1) / 2)):
        problems.append("average")
    return backend.allreduce, backend.link_mbit, backend.multi_ring_plan, problems


@pytest.mark.parametrize("world", [2, 4])
def test_backend_multi_ring_is_exact_with_measured_links(world):
    for allreduce, rates, plan, problems in values(
        run_world(_allreduce_exactly, world, env={"BAGUA_ALLREDUCE": "multi_ring"}, timeout=300)
    ):
        assert problems == []
        assert allreduce == "multi_ring"
        # No rates given: the probe measured every rank's link.
        assert len(rates) == world and all(r > 0 for r in rates)
        assert plan.startswith("multi_ring plan")


def test_backend_multi_ring_plans_from_given_rates():
    env = {"BAGUA_ALLREDUCE": "multi_ring", "BAGUA_LINK_MBIT": "1000,1000,100,20", "BAGUA_RINGS": "3"}
    for allreduce, rates, plan, problems in values(run_world(_allreduce_exactly, 4, env=env, timeout=300)):
        assert problems == []
        assert rates == [1000, 1000, 100, 20]
        assert "3 rings" in plan and "20 Mbit/s" in plan and "1.50x faster" in plan, plan


def _init_fails(rank, world):
    return "never reached"


@pytest.mark.parametrize(
    "variable,value,needle",
    [
        ("BAGUA_LINK_MBIT", "1000,20", "gives 2 rates for 4 ranks"),
        ("BAGUA_LINK_MBIT", "1000,x,100,20", "is not a positive rate"),
        ("BAGUA_RINGS", "9", "rings must be auto or 1 to 8"),
        ("BAGUA_RING_DIRECTIONS", "up", "is not one or both"),
    ],
)
def test_bad_multi_ring_settings_are_explained(variable, value, needle):
    env = {"BAGUA_ALLREDUCE": "multi_ring", variable: value}
    with pytest.raises(RuntimeError, match=needle):
        values(run_world(_init_fails, 4, env=env, timeout=120))


def _ddp_against_torch(rank, world, algorithm):
    gloo = dist.new_group(backend="gloo")
    reference, _ = train(TorchDDP(mlp(batchnorm=True), process_group=gloo), rank)
    model = bagua_ravnest.DistributedDataParallel(mlp(batchnorm=True), algorithm=algorithm, bucket_cap_mb=0.001)
    ours, _ = train(model, rank)
    return (ours - reference).abs().max().item(), model.algorithm, model._engine.plan_description


@pytest.mark.parametrize("world", [2, 4])
def test_ddp_multi_ring_matches_torch_ddp(world):
    rates = ",".join(["1000"] * (world - 1) + ["20"])
    for diff, spec, plan in values(
        run_world(_ddp_against_torch, world, "gradient_allreduce:allreduce=multi_ring,rings=3",
                  env={"BAGUA_LINK_MBIT": rates})
    ):
        assert diff <= 1e-6
        assert spec == "gradient_allreduce:allreduce=multi_ring,hierarchical=false,rings=3,directions=one"
        assert "20 Mbit/s" in plan


def _ddp_rates_of_the_group(rank, world):
    measured = list(dist.group.WORLD._get_backend(torch.device("cpu")).link_mbit)
    model = bagua_ravnest.DistributedDataParallel(mlp(), algorithm="gradient_allreduce:allreduce=multi_ring")
    return measured, model._engine.plan_description


def test_ddp_takes_the_rates_its_process_group_measured():
    # No BAGUA_LINK_MBIT: the world group probed its links when it was made,
    # and the wrapper plans with those rates (a second probe would measure
    # others: timings are never equal to the last digit).
    for measured, plan in values(run_world(_ddp_rates_of_the_group, 2, env={"BAGUA_ALLREDUCE": "multi_ring"})):
        assert len(measured) == 2
        for rate in measured:
            assert f"link {rate:g} Mbit/s" in plan, plan
