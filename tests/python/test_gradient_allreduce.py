"""bagua_ravnest.DistributedDataParallel with gradient_allreduce against
torch DDP on Gloo: same seeds and data, parameters allclose after 20 steps."""

import pytest
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as TorchDDP

import bagua_ravnest
from bagua_ravnest.launch import run_world, values
from models import batches, flat_params, mlp, train


def _against_torch_ddp(rank, world, algorithm, cap_mb):
    gloo = dist.new_group(backend="gloo")
    reference, _ = train(TorchDDP(mlp(batchnorm=True), process_group=gloo), rank)
    model = bagua_ravnest.DistributedDataParallel(mlp(batchnorm=True), algorithm=algorithm, bucket_cap_mb=cap_mb)
    ours, _ = train(model, rank)
    views_ok = all(
        p.grad is not None and any(p.grad.data_ptr() == v.data_ptr() for v in [model._buckets.views[i]])
        for i, p in enumerate(model._params)
    )
    return (ours - reference).abs().max().item(), model.algorithm, len(model._buckets.gradients), views_ok


@pytest.mark.parametrize("world", [2, 4])
@pytest.mark.parametrize(
    "algorithm,cap_mb",
    [
        ("gradient_allreduce", 25),
        ("gradient_allreduce", 0.001),  # many buckets, launched out of ready order
        ("gradient_allreduce:allreduce=inner", 0.001),
    ],
)
def test_matches_torch_ddp(world, algorithm, cap_mb):
    for diff, spec, nbuckets, views_ok in values(run_world(_against_torch_ddp, world, algorithm, cap_mb)):
        assert diff <= 1e-6
        assert spec.startswith(algorithm.split(":")[0])
        assert views_ok, "grads must stay views into the buckets"
        if cap_mb < 1:
            assert nbuckets > 2


def test_hierarchical_matches_torch_ddp():
    # Two emulated hosts of two ranks each.
    out = values(run_world(_against_torch_ddp, 4, "gradient_allreduce:hierarchical=true", 0.001,
                           env={"LOCAL_WORLD_SIZE": "2"}))
    for diff, spec, _, _ in out:
        assert diff <= 1e-6
        assert "hierarchical=true" in spec


def _env_choice_and_gloo_group(rank, world):
    model = bagua_ravnest.DistributedDataParallel(mlp())
    return model.algorithm, dist.get_backend()


def test_algorithm_from_environment_on_a_gloo_group():
    out = values(run_world(_env_choice_and_gloo_group, 2, backend="gloo",
                           env={"BAGUA_ALGORITHM": "gradient_allreduce:allreduce=inner"}))
    assert all(spec == "gradient_allreduce:allreduce=inner,hierarchical=false" and be == "gloo" for spec, be in out)


def _no_sync(rank, world):
    """Two half batches under no_sync + one synchronized backward equal one
    full batch per rank."""
    (x, y), = list(batches(rank, 1, batch=32))
    a = bagua_ravnest.DistributedDataParallel(mlp(seed=3))
    with a.no_sync():
        torch.nn.functional.cross_entropy(a(x[:16]), y[:16], reduction="sum").backward()
    torch.nn.functional.cross_entropy(a(x[16:]), y[16:], reduction="sum").backward()
    b = bagua_ravnest.DistributedDataParallel(mlp(seed=3))
    torch.nn.functional.cross_entropy(b(x), y, reduction="sum").backward()
    ga = torch.cat([p.grad.reshape(-1) for p in a.parameters()])
    gb = torch.cat([p.grad.reshape(-1) for p in b.parameters()])
    return (ga - gb).abs().max().item()


def test_no_sync_accumulates():
    assert all(d < 1e-4 for d in values(run_world(_no_sync, 2)))


def _state_dict_and_buffers(rank, world):
    torch.manual_seed(rank)  # different initial weights per rank
    model = bagua_ravnest.DistributedDataParallel(torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.BatchNorm1d(4)))
    keys = list(model.state_dict())
    plain = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.BatchNorm1d(4))
    plain.load_state_dict(model.module.state_dict())
    model.load_state_dict(model.state_dict())
    model(torch.randn(8, 4) + rank)  # updates BN running stats locally
    model(torch.randn(8, 4))  # broadcasts rank 0's buffers first
    return keys, flat_params(model).tolist(), model.module[1].running_mean.tolist()


def test_state_dict_prefix_and_initial_broadcast():
    out = values(run_world(_state_dict_and_buffers, 2))
    keys = out[0][0]
    assert keys and all(k.startswith("module.") for k in keys)
    assert out[0][1] == out[1][1], "parameters are broadcast from rank 0 at start"


def _unused(rank, world, find_unused):
    class TwoHeads(torch.nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.body = torch.nn.Linear(8, 8)
            self.used = torch.nn.Linear(8, 2)
            self.unused = torch.nn.Linear(8, 2)

        def forward(self, x):
            return self.used(self.body(x))

    model = bagua_ravnest.DistributedDataParallel(TwoHeads(), find_unused_parameters=find_unused)
    for _ in range(2):
        model.zero_grad()
        model(torch.randn(4, 8)).sum().backward()
    return model.module.unused.weight.grad.abs().sum().item()


def test_find_unused_parameters():
    assert values(run_world(_unused, 2, True)) == [0.0, 0.0]


def test_unused_parameters_without_flag_are_named():
    results = run_world(_unused, 2, False)
    for r in results:
        assert not r.ok
        assert "unused.weight" in r.error and "find_unused_parameters=True" in r.error


def _edge_cases(rank, world):
    out = {}
    # Two wrapped models in one backward (a GAN's generator and discriminator):
    # their engines share the transport and must not take each other's messages.
    torch.manual_seed(0)
    gen = bagua_ravnest.DistributedDataParallel(torch.nn.Linear(6, 6), bucket_cap_mb=0.0001)
    disc = bagua_ravnest.DistributedDataParallel(torch.nn.Linear(6, 1), bucket_cap_mb=0.0001)
    x = torch.full((3, 6), float(rank + 1))
    disc(gen(x)).sum().backward()
    grads = torch.cat([p.grad.flatten() for p in list(gen.parameters()) + list(disc.parameters())])
    everyone = [torch.empty_like(grads) for _ in range(world)]
    dist.all_gather(everyone, grads)
    out["replicas_equal"] = all(torch.equal(everyone[0], g) for g in everyone)

    # An evaluation forward between a training forward and its backward.
    model = bagua_ravnest.DistributedDataParallel(torch.nn.Linear(4, 1))
    loss = model(torch.full((2, 4), float(rank))).sum()
    with torch.no_grad():
        model(torch.ones(1, 4))
    loss.backward()
    out["synced_after_eval"] = model.module.weight.grad.tolist()

    # A second backward after one forward is refused, not silently unsynced.
    loss = model(torch.ones(2, 4)).sum()
    loss.backward(retain_graph=True)
    try:
        loss.backward()
        out["second_backward"] = "no error"
    except RuntimeError as e:
        out["second_backward"] = str(e)

    # find_unused_parameters keeps what no_sync() accumulated for a
    # parameter that the synchronized step does not use.
    class Branches(torch.nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.a = torch.nn.Linear(2, 1, bias=False)
            self.b = torch.nn.Linear(2, 1, bias=False)

        def forward(self, x, use_b):
            return self.a(x) + (self.b(x) if use_b else 0)

    m = bagua_ravnest.DistributedDataParallel(Branches(), find_unused_parameters=True)
    with m.no_sync():
        m(torch.ones(1, 2), True).sum().backward()  # b.grad = [1, 1] locally
    m(torch.ones(1, 2), False).sum().backward()  # b unused now: its accumulation is averaged
    out["accumulated_b"] = m.module.b.weight.grad.tolist()
    return out


def test_edge_cases_found_in_review():
    for out in values(run_world(_edge_cases, 2)):
        assert out["replicas_equal"]
        # rank r's input is r: the mean gradient over ranks 0 and 1 is 0.5 * 2 rows.
        assert out["synced_after_eval"] == [[1.0, 1.0, 1.0, 1.0]]
        assert "backward ran twice" in out["second_backward"]
        assert out["accumulated_b"] == [[1.0, 1.0]]
