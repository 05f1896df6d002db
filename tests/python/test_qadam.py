"""qadam and onebit_adam with bagua_ravnest.QAdamOptimizer: exactly Adam
during warm-up; after it, against an independent reference in plain
torch.distributed over Gloo; and a checkpoint taken mid-run resumes exactly."""

import io
import math

import pytest
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel as TorchDDP

import bagua_ravnest
from bagua_ravnest.launch import run_world, values
from models import batches, flat_params, mlp
from references import minmax_roundtrip, reference_average, reference_average_with_feedback

LR = 0.01


def _step(model, opt, x, y):
    opt.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    opt.step()


def _warmup_is_adam(rank, world, algorithm):
    gloo = dist.new_group(backend="gloo")
    ref = TorchDDP(mlp(), process_group=gloo)
    ref_opt = torch.optim.Adam(ref.parameters(), lr=LR, foreach=False)
    net = mlp()
    opt = bagua_ravnest.QAdamOptimizer(net.parameters(), lr=LR, warmup_steps=100)
    ours = bagua_ravnest.DistributedDataParallel(net, algorithm=algorithm, optimizer=opt)
    for x, y in batches(rank, 8):
        _step(ref, ref_opt, x, y)
        _step(ours, opt, x, y)
    return (flat_params(ours) - flat_params(ref)).abs().max().item(), ours.algorithm


@pytest.mark.parametrize("world", [2, 4])
@pytest.mark.parametrize("algorithm", ["qadam", "onebit_adam"])
def test_before_the_switch_it_is_adam_on_the_averaged_gradient(world, algorithm):
    for diff, spec in values(run_world(_warmup_is_adam, world, algorithm)):
        assert diff <= 1e-6
        assert spec == f"{algorithm}:beta1=0.9,warmup_steps=100"


def _against_reference(rank, world, algorithm, warmup, steps):
    gloo = dist.new_group(backend="gloo")
    net = mlp()
    opt = bagua_ravnest.QAdamOptimizer(net.parameters(), lr=LR, warmup_steps=warmup)
    ours = bagua_ravnest.DistributedDataParallel(net, algorithm=algorithm, optimizer=opt, bucket_cap_mb=0.001)
    residuals = {}  # bucket -> (worker, server), for onebit_adam
    ref = mlp()
    params = list(ref.parameters())
    b1, b2, eps = 0.9, 0.999, 1e-8
    m = [torch.zeros_like(p) for p in params]
    v = [torch.zeros_like(p) for p in params]
    for t, (x, y) in enumerate(batches(rank, steps), start=1):
        _step(ours, opt, x, y)
        ref.zero_grad()
        nn.functional.cross_entropy(ref(x), y).backward()
        grads = [p.grad.clone() for p in params]
        if t <= warmup:  # exact Adam on the averaged gradient
            # Averaged per bucket with the "bagua" default group's ring, whose
            # summation order is the engine's: the 8-bit codes after the
            # switch would otherwise amplify last-bit differences of the sum.
            # (That ring is checked against Gloo in test_backend_collectives.)
            for members in ours._bucket_members:
                flat = torch.cat([grads[i].reshape(-1) for i in members])
                dist.all_reduce(flat, op=dist.ReduceOp.AVG)
                offset = 0
                for i in members:
                    grads[i] = flat[offset : offset + grads[i].numel()].view_as(grads[i])
                    offset += grads[i].numel()
            for i, g in enumerate(grads):
                m[i] = m[i] + (1 - b1) * (g - m[i])
                v[i].mul_(b2).addcmul_(g, g, value=1 - b2)
            momentum = m
        else:  # local momentum, averaged per bucket through minmax_uint8; v frozen
            for i, g in enumerate(grads):
                m[i] = m[i] + (1 - b1) * (g - m[i])
            for b, members in enumerate(ours._bucket_members):
                flat = torch.cat([m[i].reshape(-1) for i in members])
                if algorithm == "qadam":
                    averaged = reference_average(flat, minmax_roundtrip, gloo)
                else:
                    worker, server = residuals.get(b, (torch.zeros_like(flat), torch.zeros_like(flat)))
                    averaged, worker, server = reference_average_with_feedback(flat, worker, server, gloo)
                    residuals[b] = (worker, server)
                offset = 0
                for i in members:
                    m[i] = averaged[offset : offset + m[i].numel()].view_as(m[i]).clone()
                    offset += m[i].numel()
            momentum = m
        # Adam's step with the same torch operations as the optimizer, so that
        # what is compared is the momentum exchange, not rounding of the step.
        with torch.no_grad():
            for p, mo, vi in zip(params, momentum, v):
                denom = (vi.sqrt() / math.sqrt(1 - b2**t)).add_(eps)
                if t > warmup:  # no update where the frozen variance is 0
                    mo = mo * (vi > 0)
                p.addcdiv_(mo, denom, value=-LR / (1 - b1**t))
    return (flat_params(ours) - flat_params(ref)).abs().max().item()


@pytest.mark.parametrize("world", [2, 4])
@pytest.mark.parametrize("algorithm", ["qadam", "onebit_adam"])
def test_after_the_switch_matches_the_reference(world, algorithm):
    for diff in values(run_world(_against_reference, world, algorithm, 3, 8)):
        assert diff <= 1e-5, diff


def _train(rank, world, algorithm, steps, resume_from, skip):
    net = mlp()
    opt = bagua_ravnest.QAdamOptimizer(net.parameters(), lr=LR, warmup_steps=2)
    model = bagua_ravnest.DistributedDataParallel(net, algorithm=algorithm, optimizer=opt)
    if resume_from is not None:
        state = torch.load(io.BytesIO(resume_from[rank]), weights_only=True)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
    for i, (x, y) in enumerate(batches(rank, skip + steps)):
        if i >= skip:
            _step(model, opt, x, y)
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, buf)
    return flat_params(model).tolist(), buf.getvalue(), model.step, sorted(model.state_dict())


@pytest.mark.parametrize("algorithm", ["qadam", "onebit_adam"])
def test_checkpoint_resumes_exactly(algorithm):
    world = 2
    straight = values(run_world(_train, world, algorithm, 6, None, 0))
    first = values(run_world(_train, world, algorithm, 3, None, 0))
    saved = [r[1] for r in first]
    assert "_bagua_algorithm_state" in first[0][3]
    resumed = values(run_world(_train, world, algorithm, 3, saved, 3))
    for r in range(world):
        assert resumed[r][2] == 6  # the step counter came back too
        assert resumed[r][0] == straight[r][0], "a resumed run must continue exactly as an uninterrupted one"


def _misuse(rank, world, case):
    net = mlp()
    if case == "plain optimizer":
        bagua_ravnest.DistributedDataParallel(net, algorithm="qadam", optimizer=torch.optim.Adam(net.parameters()))
    elif case == "options in the spec":
        opt = bagua_ravnest.QAdamOptimizer(net.parameters())
        bagua_ravnest.DistributedDataParallel(net, algorithm="qadam:warmup_steps=5", optimizer=opt)
    elif case == "other checkpoint":
        opt = bagua_ravnest.QAdamOptimizer(net.parameters(), warmup_steps=2)
        model = bagua_ravnest.DistributedDataParallel(net, algorithm="qadam", optimizer=opt)
        state = model.state_dict()
        state["_bagua_algorithm_state"]["algorithm"] = "qadam:beta1=0.5,warmup_steps=2"
        model.load_state_dict(state)


@pytest.mark.parametrize("case,message", [
    ("plain optimizer", "QAdamOptimizer"),
    ("options in the spec", "pass them there"),
    ("other checkpoint", "beta1=0.5"),
])
def test_misuse_is_explained(case, message):
    for r in run_world(_misuse, 2, case):
        assert not r.ok and message in r.error, r.error
