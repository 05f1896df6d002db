"""local_sgd against an independent reference in plain torch.distributed over
Gloo: ranks step alone, and every `period` steps either average their weights
(plain) or, with DiLoCo's outer optimizer, average the pseudo-gradient
x0 - x and step x0 with torch.optim.SGD, every rank restarting from x0."""

import pytest
import torch
import torch.distributed as dist
from torch import nn

import bagua_ravnest
from bagua_ravnest.launch import run_world, values
from models import batches, construction_error, flat_params, mlp, resumed_run_is_identical

PLAIN = "local_sgd:period=3"
DILOCO = "local_sgd:period=2,outer_lr=0.7,outer_momentum=0.9,nesterov=true"


def _outer_of(spec):
    options = bagua_ravnest.parse_algorithm_spec(spec)[1]
    return float(options.get("outer_lr", 1)), float(options.get("outer_momentum", 0)), \
        options.get("nesterov", "false") == "true", int(options["period"])


def _against_reference(rank, world, spec, dtype):
    gloo = dist.new_group(backend="gloo")
    # Smooth: the reference's sums are ordered differently (Gloo's all-reduce,
    # not our ring), and a ReLU at its kink would turn a last-bit difference
    # into a different gradient (seen with ATEN_CPU_CAPABILITY=default).
    model = mlp(seed=rank, smooth=True).to(dtype)
    opt_ours = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    ours = bagua_ravnest.DistributedDataParallel(model, algorithm=spec, optimizer=opt_ours)
    ref = mlp(seed=0, smooth=True).to(dtype)
    params = list(ref.parameters())
    opt_ref = torch.optim.SGD(params, lr=0.05, momentum=0.9)
    outer_lr, outer_momentum, nesterov, period = _outer_of(spec)
    x0 = [p.detach().clone() for p in params]
    outer = torch.optim.SGD(x0, lr=outer_lr, momentum=outer_momentum, nesterov=nesterov)
    plain = outer_lr == 1 and outer_momentum == 0
    overlap = bagua_ravnest.parse_algorithm_spec(spec)[1].get("overlap") == "true"
    pending, snapshot = None, None
    worst, spreads = 0.0, []
    for step, (x, y) in enumerate(batches(rank, 9)):
        x = x.to(dtype)
        for model, opt in ((ours, opt_ours), (ref, opt_ref)):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
        if (step + 1) % period == 0:
            with torch.no_grad():
                if overlap:
                    # The average of the previous sync's snapshot arrives now,
                    # plus the progress made since that snapshot.
                    if pending is not None:
                        if not plain:
                            for p0, avg in zip(x0, pending):
                                p0.grad = avg
                            outer.step()
                        bases = pending if plain else x0
                        for p, base, s in zip(params, bases, snapshot):
                            p.copy_(base + (p - s))
                    snapshot = [p.detach().clone() for p in params]
                    pending = []
                    for p, p0 in zip(params, x0):
                        value = p.detach().clone() if plain else p0 - p
                        dist.all_reduce(value, group=gloo)
                        pending.append(value / world)
                elif plain:
                    for p in params:
                        dist.all_reduce(p.data, group=gloo)
                        p.data /= world
                else:
                    for p, p0 in zip(params, x0):
                        delta = p0 - p
                        dist.all_reduce(delta, group=gloo)
                        p0.grad = delta / world
                    outer.step()
                    for p, p0 in zip(params, x0):
                        p.copy_(p0)
            everyone = [torch.empty_like(flat_params(ours)) for _ in range(world)]
            dist.all_gather(everyone, flat_params(ours), group=gloo)
            spreads.append(max(float((e - everyone[0]).abs().max()) for e in everyone))
        scale = float(flat_params(ref).abs().max())
        worst = max(worst, float((flat_params(ours) - flat_params(ref)).abs().max()) / scale)
    return worst, spreads, ours.algorithm


@pytest.mark.parametrize("world", [2, 4])
@pytest.mark.parametrize("spec", [PLAIN, PLAIN + ",outer_lr=1,outer_momentum=0", DILOCO, PLAIN + ",overlap=true",
                                  DILOCO + ",overlap=true"])
def test_matches_the_reference(world, spec):
    for worst, spreads, canonical in values(run_world(_against_reference, world, spec, torch.float32)):
        # The reference sums with Gloo's all-reduce, ours with a ring: the
        # order of the additions differs, nothing else.
        assert worst <= 1e-6, worst
        if "overlap" not in spec:
            assert spreads and max(spreads) == 0.0  # every rank restarts from the same weights
        else:
            assert spreads and max(spreads) > 0  # each keeps its own progress on top of the late average
        assert canonical.startswith("local_sgd:codec=identity")


def test_plain_averaging_of_bf16_weights():
    for worst, spreads, _ in values(run_world(_against_reference, 4, PLAIN, torch.bfloat16)):
        assert max(spreads) == 0.0
        # bf16 sums rounded in another order (a unit in the last place, 2^-8
        # of the weight) and carried through seven steps of training.
        assert worst <= 2 ** -6, worst


def _buffers(rank, world):
    gloo = dist.new_group(backend="gloo")
    model = mlp(batchnorm=True)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    ours = bagua_ravnest.DistributedDataParallel(model, algorithm="local_sgd:period=2", broadcast_buffers=False,
                                                 optimizer=opt)
    bn = ours.module[2]
    out = []
    for step, (x, y) in enumerate(batches(rank, 2)):
        opt.zero_grad()
        nn.functional.cross_entropy(ours(x), y).backward()
        before = bn.running_mean.clone()
        opt.step()
        if step == 1:
            mean = before.clone()
            dist.all_reduce(mean, group=gloo)
            out = [float((bn.running_mean - mean / world).abs().max()), float((before - mean / world).abs().max())]
    return out


def test_batchnorm_statistics_are_averaged():
    for diff, spread in values(run_world(_buffers, 2)):
        assert spread > 0  # the ranks' statistics differed before the averaging
        assert diff <= 1e-6, diff


def _codec(rank, world, codec):
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    ours = bagua_ravnest.DistributedDataParallel(model, algorithm=f"local_sgd:period=2,codec={codec}", optimizer=opt)
    exact = mlp()
    opt_exact = torch.optim.SGD(exact.parameters(), lr=0.05)
    gloo = dist.new_group(backend="gloo")
    for x, y in batches(rank, 2):
        for model, o in ((ours, opt), (exact, opt_exact)):
            o.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            o.step()
    with torch.no_grad():
        for p in exact.parameters():
            dist.all_reduce(p.data, group=gloo)
            p.data /= world
    everyone = [torch.empty_like(flat_params(ours)) for _ in range(world)]
    dist.all_gather(everyone, flat_params(ours), group=gloo)
    moved = float((flat_params(exact) - flat_params(mlp())).abs().max())
    return float((flat_params(ours) - flat_params(exact)).abs().max()), moved, \
        max(float((e - everyone[0]).abs().max()) for e in everyone)


@pytest.mark.parametrize("codec", ["minmax_uint8", "sign1bit"])
def test_a_compressed_pseudo_gradient_lands_near_the_average(codec):
    for diff, moved, spread in values(run_world(_codec, 4, codec)):
        assert spread == 0.0
        # Within a fraction of how far two steps moved the weights.
        assert diff <= (0.02 if codec == "minmax_uint8" else 1.0) * moved, (diff, moved)
        assert diff > 0  # it did compress


def _resume(rank, world, spec):
    return resumed_run_is_identical(rank, spec)


@pytest.mark.parametrize("spec", ["local_sgd:period=3", DILOCO + ",codec=sign1bit", PLAIN + ",overlap=true",
                                  DILOCO + ",codec=sign1bit,overlap=true"])
def test_a_resumed_run_continues_bit_identically(spec):
    assert all(values(run_world(_resume, 2, spec)))


def _without_optimizer(rank, world):
    return construction_error(algorithm="local_sgd")


def test_it_needs_the_optimizer():
    for message in values(run_world(_without_optimizer, 2)):
        assert "optimizer=" in message, message


@pytest.mark.parametrize("spec,words", [
    ("local_sgd:nesterov=true", "outer_momentum > 0"),
    ("local_sgd:codec=gzip", "minmax_uint8"),
    ("local_sgd:period=0", "integer >= 1"),
    ("local_sgd:outer_momentum=1", "[0, 1)"),
])
def test_bad_options_are_explained(spec, words):
    with pytest.raises(RuntimeError, match=None) as e:
        bagua_ravnest._C.canonical_spec(spec, 0, 2, [0, 0])
    assert words in str(e.value)
