"""bagua_ravnest.DistributedDataParallel on a model that lives on a GPU:
gradient buckets on the device, exchanges on pinned host buffers (the
host-staged path, docs/devices.md). Skipped without a CUDA device; the
same path runs on the CPU suite through the threaded stage
(test_staging.py).

World 2 shares the one GPU the lent machines have (NCCL refuses that; the
host path does not). The model's arithmetic on a GPU rounds differently
from a CPU's, so comparisons with a CPU run use a tolerance; comparisons
of two GPU runs of the same math are exact or 1e-6."""

import os

import pytest
import torch
import torch.distributed as dist
from torch import nn

from bagua_ravnest.launch import run_world, values

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

GRADIENT_ALGORITHMS = ["gradient_allreduce", "bytegrad", "fp16_allreduce", "bf16_allreduce",
                       "codec=minmax_uint8,exchange=allreduce"]


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(32, 256), nn.Tanh(), nn.Linear(256, 256), nn.Tanh(), nn.Linear(256, 4))


def _batches(rank, steps):
    g = torch.Generator().manual_seed(10 + rank)
    return [(torch.randn(16, 32, generator=g), torch.randn(16, 4, generator=g)) for _ in range(steps)]


def _train(rank, world, algorithm, device, steps, ours=True):
    import bagua_ravnest

    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    model = _model().to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    if ours:
        ddp = bagua_ravnest.DistributedDataParallel(model, algorithm=algorithm, optimizer=opt, bucket_cap_mb=0.1)
    else:
        ddp = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                                  bucket_cap_mb=0.1)
    for x, y in _batches(rank, steps):
        opt.zero_grad()
        nn.functional.mse_loss(ddp(x.to(device)), y.to(device)).backward()
        opt.step()
    if ours:
        ddp.close()
    return torch.cat([p.detach().flatten() for p in model.parameters()]).cpu().tolist()


@needs_cuda
@pytest.mark.parametrize("world", [1, 2])
@pytest.mark.parametrize("algorithm", GRADIENT_ALGORITHMS)
def test_a_cuda_model_trains_as_the_same_model_on_the_cpu(algorithm, world):
    gpu = [torch.tensor(v) for v in values(run_world(_train, world, algorithm, "cuda:0", 10, timeout=300))]
    cpu = [torch.tensor(v) for v in values(run_world(_train, world, algorithm, "cpu", 10, timeout=300))]
    assert all(torch.equal(gpu[0], g) for g in gpu), "the GPU replicas differ"
    # The exchange is the same; only the model's own arithmetic rounds
    # differently on the GPU (and a codec may round a value to its
    # neighbouring code because of it).
    tolerance = 1e-4 if algorithm == "gradient_allreduce" else 2e-2
    assert (gpu[0] - cpu[0]).abs().max().item() < tolerance


@needs_cuda
def test_gradient_allreduce_on_cuda_matches_torch_ddp_on_cuda():
    # Both at world 2 on one GPU over host memory: ours over its engine,
    # torch's over Gloo with CUDA tensors.
    ours = [torch.tensor(v) for v in values(run_world(_train, 2, "gradient_allreduce", "cuda:0", 20, timeout=300))]
    torch_ddp = [torch.tensor(v) for v in values(run_world(_train, 2, None, "cuda:0", 20, False, backend="gloo",
                                                           timeout=300))]
    assert (ours[0] - torch_ddp[0]).abs().max().item() < 1e-6


def _mixed(rank, world):
    return _train(rank, world, "gradient_allreduce", "cuda:0" if rank == 0 else "cpu", 10)


@needs_cuda
def test_a_cuda_rank_and_a_cpu_rank_train_one_model():
    a, b = (torch.tensor(v) for v in values(run_world(_mixed, 2, timeout=300)))
    # Each rank applies the same averaged gradient to the same weights, its
    # own arithmetic rounding them: the replicas agree to rounding.
    assert (a - b).abs().max().item() < 1e-4


def _checkpoint_through_the_cpu(rank, world):
    import bagua_ravnest

    model = _model().cuda()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    ddp = bagua_ravnest.DistributedDataParallel(model, algorithm="bytegrad", optimizer=opt)
    for x, y in _batches(rank, 3):
        opt.zero_grad()
        nn.functional.mse_loss(ddp(x.cuda()), y.cuda()).backward()
        opt.step()
    saved = {k: v.cpu() if isinstance(v, torch.Tensor) else v for k, v in ddp.state_dict().items()}
    on_cpu = _model()
    ddp_cpu = bagua_ravnest.DistributedDataParallel(on_cpu, algorithm="bytegrad",
                                                    optimizer=torch.optim.SGD(on_cpu.parameters(), lr=0.05))
    ddp_cpu.load_state_dict(saved)
    back = _model().cuda()
    ddp_back = bagua_ravnest.DistributedDataParallel(back, algorithm="bytegrad",
                                                     optimizer=torch.optim.SGD(back.parameters(), lr=0.05))
    ddp_back.load_state_dict(ddp_cpu.state_dict())
    same = all(torch.equal(a.cpu(), b.cpu()) for a, b in zip(model.state_dict().values(), back.state_dict().values()))
    for d in (ddp, ddp_cpu, ddp_back):
        d.close()
    return same


@needs_cuda
def test_a_cuda_checkpoint_round_trips_through_the_cpu():
    assert values(run_world(_checkpoint_through_the_cpu, 2, timeout=300)) == [True, True]


def _refused(rank, world, algorithm):
    import bagua_ravnest

    model = _model().cuda()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    try:
        bagua_ravnest.DistributedDataParallel(model, algorithm=algorithm, optimizer=opt)
    except ValueError as e:
        return str(e)
    return None


@needs_cuda
@pytest.mark.parametrize("algorithm", ["decentralized", "local_sgd", "async_model_average"])
def test_an_algorithm_that_moves_weights_is_refused_on_cuda_by_name(algorithm):
    (message,) = values(run_world(_refused, 1, algorithm, timeout=300))
    assert message and "does not run on a CUDA model in this version" in message and "docs/devices.md" in message


def _killed(rank, world):
    import bagua_ravnest

    model = _model().cuda()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    ddp = bagua_ravnest.DistributedDataParallel(model, optimizer=opt, timeout=10)
    for step, (x, y) in enumerate(_batches(rank, 50)):
        if rank == 1 and step == 3:
            os._exit(17)  # dies without a word
        opt.zero_grad()
        nn.functional.mse_loss(ddp(x.cuda()), y.cuda()).backward()
        opt.step()
    raise AssertionError("training continued past a dead peer")


@needs_cuda
def test_a_killed_rank_is_an_error_on_the_other_within_the_timeout():
    import time

    start = time.monotonic()
    survivor, dead = run_world(_killed, 2, timeout=120, env={"HARNESS_SKIP_DESTROY": "1"})
    assert dead.error_type == "died" and dead.exitcode == 17
    assert not survivor.ok and survivor.error_type != "died" and "training continued" not in survivor.error
    assert "rank 0" in survivor.error and "bucket" in survivor.error, survivor.error
    assert time.monotonic() - start < 60
