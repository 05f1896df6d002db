"""The wrapper's staged path on a CPU: BAGUA_STAGE=threaded puts a host
buffer beside each gradient bucket and moves the bytes between them with
copies on a thread of the engine's, delayed, as a GPU's copy stream would.
Training must be bit-equal to the unstaged path (same exchange, same
bytes), with no_sync and unused parameters too; a copy the engine forgot to
wait for would show as a different model. The GPU itself: test_cuda_models.py."""

import pytest
import torch
from torch import nn

import bagua_ravnest
from bagua_ravnest.launch import run_world, values


class WithUnused(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(13, 31)
        self.b = nn.Linear(31, 5)
        self.unused = nn.Linear(3, 3)

    def forward(self, x):
        return self.b(torch.tanh(self.a(x)))


def _train(rank, world, algorithm, accumulate):
    torch.manual_seed(0)
    model = WithUnused()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    # A small cap: several buckets, so copies of different buckets overlap.
    ddp = bagua_ravnest.DistributedDataParallel(model, algorithm=algorithm, optimizer=opt, bucket_cap_mb=0.0005,
                                                find_unused_parameters=True)
    g = torch.Generator().manual_seed(100 + rank)
    for _ in range(6):
        opt.zero_grad()
        for micro in range(accumulate):
            x, y = torch.randn(8, 13, generator=g), torch.randn(8, 5, generator=g)
            context = ddp.no_sync() if micro < accumulate - 1 else torch.enable_grad()
            with context:
                nn.functional.mse_loss(ddp(x), y).backward()
        opt.step()
    staged = ddp._buckets.staged_gradients
    ddp.close()
    return staged, len(ddp._buckets.gradients), torch.cat([p.detach().flatten() for p in model.parameters()]).tolist()


@pytest.mark.parametrize("algorithm,world,accumulate", [
    ("gradient_allreduce", 2, 1),
    ("bytegrad", 4, 1),
    ("fp16_allreduce", 2, 2),
    ("codec=minmax_uint8,exchange=allreduce", 2, 1),
])
def test_staged_training_is_bit_equal_to_the_host_path(algorithm, world, accumulate):
    plain = values(run_world(_train, world, algorithm, accumulate, env={"BAGUA_STAGE": "none"}))
    staged = values(run_world(_train, world, algorithm, accumulate, env={"BAGUA_STAGE": "threaded:2,4"}))
    assert all(s for s, _, _ in staged) and not any(s for s, _, _ in plain)
    assert staged[0][1] > 1, "the test needs several buckets"
    for rank, ((_, _, a), (_, _, b)) in enumerate(zip(plain, staged)):
        a, b = torch.tensor(a), torch.tensor(b)
        assert torch.equal(a, b), f"rank {rank}: staged training differs by {(a - b).abs().max().item()}"
    assert all(staged[0][2] == s[2] for s in staged), "replicas differ"


def _weights_stay_on_the_host(rank, world):
    model = nn.Linear(4, 4)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    ddp = bagua_ravnest.DistributedDataParallel(model, algorithm="decentralized", optimizer=opt)
    nn.functional.mse_loss(ddp(torch.randn(2, 4)), torch.zeros(2, 4)).backward()
    opt.step()
    ddp.close()
    return ddp._engine.staged, ddp._buckets.staged_gradients


def test_an_algorithm_of_weights_keeps_host_buckets_under_the_threaded_stage():
    assert values(run_world(_weights_stay_on_the_host, 2, env={"BAGUA_STAGE": "threaded"})) == [(True, False)] * 2


def _error_of(rank, world, make_model, kwargs):
    try:
        bagua_ravnest.DistributedDataParallel(make_model(), **kwargs)
    except ValueError as e:
        return str(e)
    return None


def _two_devices():
    model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))
    model[1].to("meta")
    return model


def _small():
    return nn.Linear(2, 2)


def test_a_module_on_two_devices_is_refused_naming_a_parameter_of_each():
    (message,) = values(run_world(_error_of, 1, _two_devices, {}))
    assert "'0.weight' on cpu" in message and "'1.weight' on meta" in message and "module.to(device)" in message


def test_device_ids_must_fit_the_module():
    (message,) = values(run_world(_error_of, 1, _small, {"device_ids": [0]}))
    assert "device_ids=[0] does not fit a module on cpu" in message and "None for a CPU module" in message


@pytest.mark.parametrize("setting", ["threaded:5", "gpu", "threaded:a,b"])
def test_a_bad_stage_setting_is_explained(setting):
    (message,) = values(run_world(_error_of, 1, _small, {}, env={"BAGUA_STAGE": setting}))
    assert message and f"BAGUA_STAGE={setting!r}" in message and "threaded:OUT_MS,IN_MS" in message, message


def _bad_stage_on_the_last_rank(rank, world):
    import os

    if rank == world - 1:
        os.environ["BAGUA_STAGE"] = "gpu"
    try:
        bagua_ravnest.DistributedDataParallel(_small())
    except ValueError as e:
        return str(e)
    return None


def test_a_setting_one_rank_refuses_fails_every_rank():
    messages = values(run_world(_bad_stage_on_the_last_rank, 2, timeout=60))
    assert all(m and m.startswith("rank 1: BAGUA_STAGE='gpu'") for m in messages), messages
