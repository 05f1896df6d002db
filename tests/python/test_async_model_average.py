"""async_model_average: training never waits for the network, so the weights
a run ends with depend on timing; what must hold whatever the timing is
tested here. Averaging (every peer mode) keeps the sum of the weights over
the ranks, so the final sum equals the initial sum plus every optimizer
step of every rank: a background update lost inside optimizer.step (BAGUA
released its lock before the step) breaks it. abort/resume agree on every
rank, a checkpoint is consistent, shutdown is bounded, a dead peer is an
error naming it and the round, and the warm-up is gradient_allreduce."""

import os
import time

import pytest
import torch
import torch.distributed as dist
from torch import nn

import bagua_ravnest
from bagua_ravnest.launch import run_world, values
from models import batches, flat_params, mlp

ALGORITHM = "async_model_average"


class RecordingSGD(torch.optim.Optimizer):
    """Plain SGD that reads each weight, waits `pause` seconds, then writes it
    (a wide read-modify-write window for a racing update to fall into), and
    adds up in float64 exactly how far each step moved each weight."""

    def __init__(self, params, lr, pause=0.0):
        super().__init__(params, dict(lr=lr))
        self.pause = pause

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                read = p.detach().clone()
                if self.pause:
                    time.sleep(self.pause)
                new = read - group["lr"] * p.grad
                p.copy_(new)
                state = self.state[p]
                moved = (new.double() - read.double())
                state["moved"] = state["moved"] + moved if "moved" in state else moved


def _wrapped(rank, options="sync_interval_ms=0", timeout=60, pause=0.0):
    """mlp() under async_model_average with a RecordingSGD."""
    model = mlp(seed=rank)
    opt = RecordingSGD(model.parameters(), lr=0.05, pause=pause)
    spec = f"{ALGORITHM}:{options}" if options else ALGORITHM
    return bagua_ravnest.DistributedDataParallel(model, algorithm=spec, optimizer=opt, timeout=timeout), opt


def _moved(opt) -> torch.Tensor:
    return torch.cat([opt.state[p]["moved"].reshape(-1) for p in opt.param_groups[0]["params"]])


def _step(model, opt, x, y):
    opt.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    opt.step()


def _sum_is_kept(rank, world, options, steps, pause):
    ddp, opt = _wrapped(rank, options, pause=pause)
    start = flat_params(ddp).double()  # rank 0's, broadcast by the wrapper
    for x, y in batches(rank, steps):
        _step(ddp, opt, x, y)
    ddp.close()  # every rank's thread ends at the same round
    rounds = int.from_bytes(bytes(ddp.state_dict()["_bagua_algorithm_state"]["state"]["round"].tolist()), "little")
    residual = flat_params(ddp).double() - start - _moved(opt)
    gloo = dist.new_group(backend="gloo")
    dist.all_reduce(residual, group=gloo)
    moved = _moved(opt).abs().max().item()
    return residual.abs().max().item(), rounds, moved


@pytest.mark.parametrize(
    "world,mode", [(2, "all"), (4, "all"), (4, "shift_one"), (4, "ring")])
def test_no_update_is_lost_beside_a_slow_optimizer_step(world, mode):
    # Each step holds every weight read-but-not-written for 6 x 3 ms while
    # the rounds run back to back: an update applied inside would be lost.
    options = f"sync_interval_ms=0,peer_selection_mode={mode}"
    results = values(run_world(_sum_is_kept, world, options, 25, 0.003, timeout=180))
    for residual, rounds, moved in results:
        assert moved > 1e-3  # training moved the weights
        assert rounds >= 1, "no background round ran"
        assert residual < 1e-4, residual
    assert len({rounds for _, rounds, _ in results}) == 1  # the same rounds on every rank


def _abort_and_resume(rank, world, options="sync_interval_ms=0"):
    ddp, opt = _wrapped(rank, options)
    assert ddp.algorithm_controls == ["abort", "resume"]
    data = list(batches(rank, 30))
    for x, y in data[:10]:
        _step(ddp, opt, x, y)
    ddp.algorithm_control("abort")
    ddp.algorithm_control("abort")  # idempotent
    # Aborted: only the optimizer moves the weights, bit for bit.
    before, moved_before = flat_params(ddp), _moved(opt).clone()
    for x, y in data[10:20]:
        _step(ddp, opt, x, y)
    alone = (flat_params(ddp).double() - before.double() - (_moved(opt) - moved_before)).abs().max().item()
    round_aborted = ddp.state_dict()["_bagua_algorithm_state"]["state"]["round"].clone()
    ddp.algorithm_control("resume")
    ddp.algorithm_control("resume")
    for x, y in data[20:]:
        _step(ddp, opt, x, y)
    ddp.close()
    ddp.close()  # idempotent
    with pytest.raises(bagua_ravnest.InvalidArgument, match="has no control 'pause'; its controls: abort, resume"):
        ddp.algorithm_control("pause")
    return alone, round_aborted.tolist()


# With max_lag, steps taken while aborted must not wait for rounds that
# are not coming (they would time out after 60 s).
@pytest.mark.parametrize("options", ["sync_interval_ms=0", "max_lag=1,sync_interval_ms=300"])
def test_abort_stops_averaging_on_every_rank_and_resume_restarts_it(options):
    results = values(run_world(_abort_and_resume, 2, options, timeout=180))
    for alone, _ in results:
        assert alone < 1e-6, alone  # float rounding of the recorded steps only
    assert results[0][1] == results[1][1]  # aborted at the same round


def _checkpoint(rank, world):
    ddp, opt = _wrapped(rank)
    data = list(batches(rank, 20))
    for x, y in data[:8]:
        _step(ddp, opt, x, y)
    saved = ddp.state_dict()
    frozen = {k: v.clone() for k, v in saved.items() if isinstance(v, torch.Tensor)}
    for x, y in data[8:]:
        _step(ddp, opt, x, y)
    # A copy, not views of the weights the thread and the optimizer moved since.
    unchanged = all(torch.equal(saved[k], v) for k, v in frozen.items())
    moved_since = not torch.equal(saved["module.0.weight"], ddp.module[0].weight.detach())
    ddp.close()
    # Each rank resumes from rank 0's checkpoint: the ranks agree on the
    # round (and the weights are the same) right after loading.
    everyone = [None] * world
    dist.all_gather_object(everyone, saved)
    ddp2, opt2 = _wrapped(99)
    ddp2.load_state_dict(everyone[0])
    same_weights = torch.equal(flat_params(ddp2), torch.cat([everyone[0][k].reshape(-1) for k in everyone[0]
                                                              if k.startswith("module.")]))
    for x, y in data[8:12]:
        _step(ddp2, opt2, x, y)
    ddp2.algorithm_control("abort")
    rounds = ddp2.state_dict()["_bagua_algorithm_state"]["state"]["round"].tolist()
    ddp2.close()
    return unchanged, moved_since, same_weights, rounds, int(ddp2.step)


def test_checkpoint_is_a_consistent_copy_and_ranks_agree_after_loading():
    results = values(run_world(_checkpoint, 2, timeout=180))
    for unchanged, moved_since, same_weights, _, step in results:
        assert unchanged and moved_since and same_weights
        assert step == 12  # the step travels in the checkpoint
    assert results[0][3] == results[1][3]


def _warmup(rank, world):
    model = mlp(seed=rank)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    ddp = bagua_ravnest.DistributedDataParallel(
        model, algorithm=f"{ALGORITHM}:warmup_steps=3", optimizer=opt, timeout=60)
    ref_model = mlp(seed=0)
    ref = torch.nn.parallel.DistributedDataParallel(ref_model, process_group=dist.new_group(backend="gloo"))
    ref_opt = torch.optim.SGD(ref_model.parameters(), lr=0.05, momentum=0.9)
    data = list(batches(rank, 6))
    worst = 0.0
    for x, y in data[:3]:
        _step(ddp, opt, x, y)
        _step(ref, ref_opt, x, y)
        worst = max(worst, (flat_params(ddp) - flat_params(ref_model)).abs().max().item())
    for x, y in data[3:]:  # now averaging in the background
        _step(ddp, opt, x, y)
    ddp.close()
    return worst


def test_warmup_is_gradient_allreduce():
    for worst in values(run_world(_warmup, 2, timeout=120)):
        assert worst < 1e-6, worst


def test_max_lag_bounds_the_steps_between_averages():
    # Rounds start a second apart while a step takes a few ms: unbounded, 12
    # steps would see one round. With max_lag=2, the forward of step t
    # waits until weights averaged from step t - 2 or later have landed, so
    # at least one round lands per 3 steps, and no update is lost to it.
    results = values(run_world(_sum_is_kept, 2, "max_lag=2,sync_interval_ms=1000", 12, 0.0, timeout=180))
    for residual, rounds, _ in results:
        assert rounds >= (12 - 1) // 3, rounds
        assert residual < 1e-4, residual


def _dies(rank, world, options="sync_interval_ms=0"):
    ddp, opt = _wrapped(rank, options, timeout=3, pause=0.001)
    give_up = time.monotonic() + 60
    step = 0
    for x, y in batches(rank, 100000):
        if rank == 1 and step == 5:
            os._exit(17)
        try:
            _step(ddp, opt, x, y)
        except RuntimeError as e:
            started = time.monotonic()
            ddp.close()  # the thread has ended: returns at once
            return str(e), time.monotonic() - started
        if time.monotonic() > give_up:
            raise AssertionError("training continued for 60 s past a dead peer")
        step += 1


def test_a_dead_peer_is_an_error_naming_it_and_the_round():
    results = run_world(_dies, 2, timeout=120, env={"HARNESS_SKIP_DESTROY": "1"})
    assert results[1].error_type == "died"
    assert results[0].ok, results[0]
    error, close_s = results[0].value
    assert "async_model_average: background round" in error and "rank 1" in error, error
    assert close_s < 10


def test_a_dead_peer_ends_a_max_lag_wait_in_an_error():
    # Rank 0's forward waits for a round that rank 1 never joins: the round
    # fails (or the wait times out), and the forward raises, never hangs.
    results = run_world(_dies, 2, "max_lag=1,sync_interval_ms=100", timeout=120,
                        env={"HARNESS_SKIP_DESTROY": "1"})
    assert results[1].error_type == "died"
    assert results[0].ok, results[0]
    error, close_s = results[0].value
    named = "async_model_average: background round" in error and "rank 1" in error
    timed_out = "async_model_average:max_lag=1" in error and "a peer is slow or gone" in error
    assert named or timed_out, error
    assert close_s < 10


def _close_with_a_dead_peer(rank, world):
    ddp, opt = _wrapped(rank, timeout=5)
    for x, y in batches(rank, 3):
        _step(ddp, opt, x, y)
    if rank == 1:
        os._exit(17)
    started = time.monotonic()
    ddp.close()
    return time.monotonic() - started


def test_shutdown_is_bounded_when_a_peer_is_gone():
    results = run_world(_close_with_a_dead_peer, 2, timeout=120, env={"HARNESS_SKIP_DESTROY": "1"})
    assert results[0].ok, results[0]
    assert results[0].value < 5 * 2 + 5  # at most the timeout for the round in flight, and the join's


def _exit_without_close(rank, world):
    ddp, opt = _wrapped(rank)
    for x, y in batches(rank, 10):
        _step(ddp, opt, x, y)
    return "done"  # the wrapper is dropped: its thread must not keep the process alive


def test_processes_exit_without_close():
    # BAGUA's thread kept processes from exiting (its PR #110). The timeout
    # is far below the wrapper's 60 s: a thread left waiting would show.
    assert values(run_world(_exit_without_close, 4, timeout=60)) == ["done"] * 4


def _construction(rank, world, spec, with_optimizer):
    model = mlp()
    kwargs = {"optimizer": torch.optim.SGD(model.parameters(), lr=0.1)} if with_optimizer else {}
    try:
        bagua_ravnest.DistributedDataParallel(model, algorithm=spec(rank) if callable(spec) else spec, **kwargs)
    except (ValueError, bagua_ravnest.InvalidArgument) as e:
        return str(e)
    return "no error"


def _interval_by_rank(rank):
    return f"{ALGORITHM}:sync_interval_ms={100 + rank}"


@pytest.mark.parametrize("spec,with_optimizer,expected", [
    (_interval_by_rank, True, "ranks disagree on the algorithm"),
    (ALGORITHM, False, "pass optimizer="),
    (f"{ALGORITHM}:peer_selection_mode=star", True, "peer_selection_mode"),
    (f"{ALGORITHM}:sync_interval_ms=-1", True, "sync_interval_ms"),
    (f"{ALGORITHM}:max_lag=2,sync_interval_ms=400000", True,
     "sync_interval_ms must be shorter than the wrapper's timeout (300000 ms)"),
])
def test_bad_configurations_fail_on_every_rank(spec, with_optimizer, expected):
    for error in values(run_world(_construction, 2, spec, with_optimizer, timeout=60)):
        assert expected in error, error
