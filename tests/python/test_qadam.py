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


def _against_reference(rank, world, algorithm, warmup, steps, precondition=False):
    gloo = dist.new_group(backend="gloo")
    net = mlp()
    opt = bagua_ravnest.QAdamOptimizer(net.parameters(), lr=LR, warmup_steps=warmup, precondition=precondition)
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
                if precondition:  # compress m / d, d = Adam's denominator at the switch; 0 where v is 0
                    frozen = torch.cat([v[i].reshape(-1) for i in members])
                    d = (frozen.sqrt() / math.sqrt(1 - b2**warmup)).add_(eps)
                    flat = torch.where(frozen > 0, flat / d, torch.zeros_like(flat))
                if algorithm == "qadam":
                    averaged = reference_average(flat, minmax_roundtrip, gloo)
                else:
                    worker, server = residuals.get(b, (torch.zeros_like(flat), torch.zeros_like(flat)))
                    averaged, worker, server = reference_average_with_feedback(flat, worker, server, gloo)
                    residuals[b] = (worker, server)
                if precondition:
                    averaged = averaged * d
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


@pytest.mark.parametrize("precondition", [False, True])
@pytest.mark.parametrize("world", [2, 4])
@pytest.mark.parametrize("algorithm", ["qadam", "onebit_adam"])
def test_after_the_switch_matches_the_reference(world, algorithm, precondition):
    for diff in values(run_world(_against_reference, world, algorithm, 3, 8, precondition)):
        assert diff <= 1e-5, diff


_WARMUP = 3


def _tiny_input_task(rank):
    """A layer one of whose inputs is a million times smaller than the
    others: the weights it feeds get a tiny but non-zero frozen variance, and
    share a codec block with weights whose momenta are large."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
    g = torch.Generator().manual_seed(rank)

    def batches():
        for _ in range(8):
            x = torch.randn(32, 16, generator=g)
            x[:, 0] *= 1e-6
            yield x, torch.randint(0, 4, (32,), generator=g)

    return net, batches()


def _largest_step_after_the_switch(rank, world, algorithm, precondition):
    """The largest |change of a parameter| / lr over the steps after the switch."""
    net, data = _tiny_input_task(rank)
    opt = bagua_ravnest.QAdamOptimizer(net.parameters(), lr=LR, warmup_steps=_WARMUP, precondition=precondition)
    model = bagua_ravnest.DistributedDataParallel(net, algorithm=algorithm, optimizer=opt)
    largest = 0.0
    for step, (x, y) in enumerate(data):
        before = [p.detach().clone() for p in net.parameters()]
        _step(model, opt, x, y)
        if step >= _WARMUP:
            moved = max(float((p.detach() - b).abs().max()) for p, b in zip(net.parameters(), before))
            largest = max(largest, moved / LR)
    return largest


def _largest_step_of_exact_frozen_adam(rank, world):
    """The same, for the uncompressed algorithm: momenta averaged exactly,
    variance frozen after the warm-up (plain torch.distributed)."""
    net, data = _tiny_input_task(rank)
    params = list(net.parameters())
    b1, b2, eps = 0.9, 0.999, 1e-8
    m = [torch.zeros_like(p) for p in params]
    v = [torch.zeros_like(p) for p in params]
    largest = 0.0
    for t, (x, y) in enumerate(data, start=1):
        net.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        with torch.no_grad():
            for p, mi, vi in zip(params, m, v):
                g = p.grad.clone()
                if t <= _WARMUP:
                    dist.all_reduce(g, op=dist.ReduceOp.AVG)
                    vi.mul_(b2).addcmul_(g, g, value=1 - b2)
                mi.lerp_(g, 1 - b1)
                if t > _WARMUP:
                    dist.all_reduce(mi, op=dist.ReduceOp.AVG)
                step = (mi * (vi > 0)) / ((vi.sqrt() / math.sqrt(1 - b2**t)).add_(eps)) * (LR / (1 - b1**t))
                p.sub_(step)
                if t > _WARMUP:
                    largest = max(largest, float(step.abs().max()) / LR)
    return largest


@pytest.mark.parametrize("algorithm", ["qadam", "onebit_adam"])
def test_precondition_keeps_steps_the_size_of_exact_steps(algorithm):
    # Compressing raw momenta gives the tiny-variance weights their block's
    # momentum scale (or quantization error), divided by their tiny sqrt(v):
    # steps hundreds of times those of the uncompressed algorithm (the first
    # assertion shows the case is the hard one). Compressing m / d keeps
    # every step within twice the largest uncompressed one.
    exact = max(values(run_world(_largest_step_of_exact_frozen_adam, 2)))
    assert 0.1 < exact < 100, exact
    for largest in values(run_world(_largest_step_after_the_switch, 2, algorithm, False)):
        assert largest > 100 * exact, (largest, exact)
    for largest in values(run_world(_largest_step_after_the_switch, 2, algorithm, True)):
        assert largest < 2 * exact, (largest, exact)


def _train(rank, world, algorithm, steps, resume_from, skip, precondition=False):
    net = mlp()
    opt = bagua_ravnest.QAdamOptimizer(net.parameters(), lr=LR, warmup_steps=2, precondition=precondition)
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


@pytest.mark.parametrize("algorithm,precondition", [("qadam", False), ("onebit_adam", False), ("onebit_adam", True)])
def test_checkpoint_resumes_exactly(algorithm, precondition):
    world = 2
    straight = values(run_world(_train, world, algorithm, 6, None, 0, precondition))
    first = values(run_world(_train, world, algorithm, 3, None, 0, precondition))
    saved = [r[1] for r in first]
    assert "_bagua_algorithm_state" in first[0][3]
    resumed = values(run_world(_train, world, algorithm, 3, saved, 3, precondition))
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
    elif case == "precondition without warm-up":
        bagua_ravnest.QAdamOptimizer(net.parameters(), warmup_steps=0, precondition=True)
    elif case == "precondition across checkpoints":
        opt = bagua_ravnest.QAdamOptimizer(net.parameters(), warmup_steps=2)
        state = bagua_ravnest.DistributedDataParallel(mlp(), algorithm="onebit_adam", optimizer=opt).state_dict()
        opt = bagua_ravnest.QAdamOptimizer(net.parameters(), warmup_steps=2, precondition=True)
        bagua_ravnest.DistributedDataParallel(net, algorithm="onebit_adam", optimizer=opt).load_state_dict(state)


@pytest.mark.parametrize("case,message", [
    ("plain optimizer", "QAdamOptimizer"),
    ("options in the spec", "pass them there"),
    ("other checkpoint", "beta1=0.5"),
    ("precondition without warm-up", "warmup_steps >= 1"),
    ("precondition across checkpoints", "precondition=true"),
])
def test_misuse_is_explained(case, message):
    for r in run_world(_misuse, 2, case):
        assert not r.ok and message in r.error, r.error
