"""Pipeline schedules on the same split, the same micro-batches and the same
data, in the same run (docs/pipeline.md):

- async:       bagua_ravnest.pipeline.AsyncPipeline (Ravnest's asynchronous
               pipeline: never drains, weight stashing, backward first);
- torch_gpipe: torch.distributed.pipelining.ScheduleGPipe;
- torch_1f1b:  torch.distributed.pipelining.Schedule1F1B.

With --clusters K (K > 1; the world is K clusters of world/K stages, ranks
in order: world 4 as 2 × 2 is ranks 0, 1 and 2, 3), the schedules of
Ravnest's whole system (docs/ravnest.md):

- ravnest:   bagua_ravnest.pipeline.Ravnest: an AsyncPipeline per cluster,
             each stage averaged with its copy in the other clusters every
             --reduce-interval steps on a background multi-ring all-reduce,
             never draining;
- sync_1f1b: the synchronous analogue: torch's Schedule1F1B in each
             cluster, each stage's gradients all-reduced (the same
             multi-ring groups) with its copies every step;
- ddp:       data parallel: torch DDP over all ranks, the whole model on
             each, the same all-reduce, the same samples per step.

With --plans, the layout is not a grid but a cluster plan for nodes made
from the emulated network (each rank's link rate, its share of the cores,
and a memory that holds only --node-memory-fraction of the model): ravnest
runs on the cluster planner's plan (plan:bagua) and on Ravnest's own
(plan:ravnest, a genetic algorithm on memory and bandwidth with equal
splits), and each row gives the plan's predicted samples/s beside the
measured one (docs/planner.md).

The model is the real-data task (benchmarks/charlm.py) as an nn.Sequential
(embedding, transformer blocks, head), cut where the cluster planner's
split puts the cuts for the measured per-layer profile. A step is
--micro-batches micro-batches; the torch schedules step the optimizer once
per step (their gradients are the mean over the step's micro-batches), and
async steps every stage's optimizer after every --micro-batches backwards
(update_frequency), so all three apply the same number of updates to the
same samples. Each schedule runs in fresh processes (so peak memory is its
own), all on the bagua backend (send/recv through shared memory on one
host, TCP across emulated hosts).

    python benchmarks/pipeline.py --world-size 4 --schedules async,torch_gpipe,torch_1f1b --json OUT
        [--bandwidth-mbit 100]       one network namespace per stage, tc-shaped links (root)
        [--slow-stage K --slow-cpu 0.5]  stage K gets half a core (cgroup v1 cpu quota, root)

Rows: schedule, samples_per_s, step_ms_median, per-stage peak_memory_bytes
(resident set) and cpu_cores (CPU time over the timed run per second: a
stage under a quota that used all of it was bound by the quota), the
training loss per step, held-out loss at equal samples
(evaluated forward-only at --eval-points points, outside the timed
region), and the speed relative to each torch schedule.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

from bagua_ravnest.launch import run_world, values  # noqa: E402
from machine import machine_info  # noqa: E402
from netem.cluster import NetemUnavailable  # noqa: E402
from netem.network import network  # noqa: E402

SCHEDULES = ("async", "torch_gpipe", "torch_1f1b")
CLUSTER_SCHEDULES = ("ravnest", "sync_1f1b", "ddp")
PLAN_SCHEDULES = ("plan:bagua", "plan:ravnest")
CGROUP_CPU = "/sys/fs/cgroup/cpu"
CGROUP_MEMORY = "/sys/fs/cgroup/memory"


def async_options(schedule: str) -> dict:
    """'async' or 'async:max_in_flight=N' -> the AsyncPipeline options it sets."""
    name, _, options = schedule.partition(":")
    out = {}
    for item in filter(None, options.split(",")):
        key, _, value = item.partition("=")
        if name != "async" or key != "max_in_flight" or not value.isdigit() or int(value) < 1:
            raise ValueError(f"schedule {schedule!r}: only async takes an option, max_in_flight=N (N >= 1)")
        out[key] = int(value)
    return out


def model_layers(args):
    import charlm

    return charlm.sequential_layers(context=args.context, width=args.width, layers=args.blocks, heads=4)


def model_profile(args) -> dict:
    from bagua_ravnest.pipeline import profile
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(*[f() for f in model_layers(args)])
    return profile(model, torch.randint(0, 256, (args.micro_batch_size, args.context)))


def cut_points(args) -> list[int]:
    """The planner's split of the model's measured profile over the stages
    (equal compute speeds; the slow stage, if any, is the benchmark's
    unannounced straggler, as in a real cluster whose planner was wrong)."""
    from bagua_ravnest.pipeline import equal_split, split

    if args.split == "equal":
        return equal_split(args.blocks + 2, args.stages)
    prof = model_profile(args)
    return split(prof, args.stages, micro_batch=args.micro_batch_size,
                 bandwidth_mbit=float(args.bandwidth_mbit.split(",")[0]) if args.bandwidth_mbit else 1e5)


class StepData:
    """The same stream of (inputs, targets) micro-batches for every schedule:
    step k's batch of micro_batches × micro_batch_size windows, cut in
    order."""

    def __init__(self, args, seed: int = 0):
        import charlm

        self.task = charlm.CharTask(rank=0, batch_size=args.micro_batch_size * args.micro_batches,
                                    context=args.context, seed=seed)
        self.m = args.micro_batches

    def step(self):
        return self.task.batch()

    def micro_batches(self, steps: int):
        for _ in range(steps):
            x, y = self.step()
            yield from zip(x.chunk(self.m), y.chunk(self.m))


def held_out(args):
    import charlm

    x, y = charlm.held_out_windows(count=args.held_out_windows, context=args.context)
    return list(zip(x.split(args.micro_batch_size), y.split(args.micro_batch_size)))


def _join_cgroups(paths: list[str]) -> None:
    for path in paths:
        with open(os.path.join(path, "cgroup.procs"), "w") as f:
            f.write(str(os.getpid()))


class Trainer:
    """What the timing loop needs of a schedule on this rank: train(steps),
    the held-out loss, and what to report."""

    def __init__(self):
        self.step_done: list[float] = []  # perf_counter at the end of every step
        self.losses: list[float] = []     # training loss per step (where this rank knows it)
        self.extras: dict = {}

    def train(self, steps: int) -> None:
        raise NotImplementedError

    def evaluate(self) -> float:
        raise NotImplementedError


class PipelineTrainer(Trainer):
    """async, and ravnest (an AsyncPipeline per cluster, averaged)."""

    def __init__(self, pipe, data, args, ravnest=None):
        super().__init__()
        self.pipe, self.data, self.args, self.ravnest = pipe, data, args, ravnest
        self.evaluation = held_out(args)

    def on_finish(self, mb):
        if (mb + 1) % self.args.micro_batches == 0:
            self.step_done.append(time.perf_counter())

    def train(self, steps):
        m = self.args.micro_batches
        run = self.ravnest or self.pipe
        got = run.train(self.data.micro_batches(steps) if self.data else None, steps * m, on_finish=self.on_finish)
        for k in range(0, len(got), m):
            self.losses.append(statistics.fmean(got[k : k + m]))

    def synchronize(self):
        # Ravnest's model is the clusters' average: evaluated after a
        # blocking average (timed, as part of the run).
        if self.ravnest is not None:
            self.ravnest.synchronize()

    def evaluate(self):
        if self.pipe is None:
            return float("nan")
        return self.pipe.evaluate(self.evaluation, len(self.evaluation))


class TorchScheduleTrainer(Trainer):
    """torch_gpipe, torch_1f1b, and sync_1f1b (1F1B per cluster, gradients
    averaged across clusters every step)."""

    def __init__(self, kind, stage, opt, stage_index, stages, group, data, args, evaluator, averager=None):
        import charlm
        from torch.distributed.pipelining import PipelineStage

        super().__init__()
        self.sched = kind(PipelineStage(stage, stage_index, stages, torch.device("cpu"), group=group),
                          n_microbatches=args.micro_batches, loss_fn=charlm.lm_loss)
        self.opt, self.data, self.averager, self.evaluator = opt, data, averager, evaluator
        self.first, self.last = stage_index == 0, stage_index == stages - 1
        self.evaluation = held_out(args)

    def train(self, steps):
        for _ in range(steps):
            x, y = self.data.step()
            self.opt.zero_grad(set_to_none=True)
            got: list = []
            if self.first and self.last:
                self.sched.step(x, target=y, losses=got)
            elif self.first:
                self.sched.step(x)
            elif self.last:
                self.sched.step(target=y, losses=got)
            else:
                self.sched.step()
            if self.averager is not None:
                self.averager.average_gradients()
            self.opt.step()
            self.step_done.append(time.perf_counter())
            if self.last:
                self.losses.append(statistics.fmean(float(v.detach()) for v in got))

    def evaluate(self):
        return self.evaluator.evaluate(self.evaluation, len(self.evaluation))


class DDPTrainer(Trainer):
    """ddp: the whole model on every rank, torch DDP over the world."""

    def __init__(self, rank, args):
        import charlm
        from bagua_ravnest.pipeline import stage_module
        from torch.nn.parallel import DistributedDataParallel

        super().__init__()
        # The whole model as one stage: the same seeds, so the same initial
        # weights, as every pipeline schedule.
        layers = model_layers(args)
        self.model = DistributedDataParallel(stage_module(layers, [len(layers)], 0, seed=0))
        self.opt = torch.optim.Adam(self.model.parameters(), lr=args.lr)
        # The same samples per step as a cluster schedule: clusters ×
        # micro-batches × micro-batch size, spread over the ranks.
        per_rank = args.clusters * args.micro_batches * args.micro_batch_size // args.world_size
        self.task = charlm.CharTask(rank=rank, batch_size=per_rank, context=args.context, seed=100)
        self.loss_fn, self.evaluation = charlm.lm_loss, held_out(args)

    def train(self, steps):
        for _ in range(steps):
            x, y = self.task.batch()
            self.opt.zero_grad(set_to_none=True)
            loss = self.loss_fn(self.model(x), y)
            loss.backward()
            self.opt.step()
            self.step_done.append(time.perf_counter())
            self.losses.append(loss.item())

    @torch.no_grad()
    def evaluate(self):
        self.model.eval()
        total = sum(float(self.loss_fn(self.model.module(x), y)) for x, y in self.evaluation)
        self.model.train()
        return total / len(self.evaluation)


def _trainer(rank, world, schedule, args, ends) -> Trainer:
    import charlm
    from bagua_ravnest.pipeline import AsyncPipeline, Layout, Ravnest, stage_module
    from torch.distributed.pipelining import Schedule1F1B, ScheduleGPipe

    if schedule == "ddp":
        return DDPTrainer(rank, args)
    m = args.micro_batches
    if schedule in args.layouts:
        rv = Ravnest(model_layers(args), args.layouts[schedule], lambda ps: torch.optim.Adam(ps, lr=args.lr),
                     charlm.lm_loss, reduce_interval=args.reduce_interval, update_frequency=m, timeout=args.timeout)
        # A rank the plan leaves out has no data and nothing to do.
        data = StepData(args, seed=rv.cluster) if rv.pipeline is not None else None
        return PipelineTrainer(rv.pipeline, data, args, ravnest=rv)
    if schedule in ("ravnest", "sync_1f1b"):
        rv = Ravnest(model_layers(args), Layout.grid(args.clusters, ends),
                     lambda ps: torch.optim.Adam(ps, lr=args.lr), charlm.lm_loss, reduce_interval=args.reduce_interval,
                     update_frequency=m, timeout=args.timeout)
        data = StepData(args, seed=rv.cluster)
        if schedule == "ravnest":
            return PipelineTrainer(rv.pipeline, data, args, ravnest=rv)
        return TorchScheduleTrainer(Schedule1F1B, rv.stage, rv.pipeline.optimizer, rv.stage_index, args.stages,
                                    rv.pipeline.group, data, args, rv.pipeline, averager=rv.averager)
    stage = stage_module(model_layers(args), ends, rank, seed=0)
    opt = torch.optim.Adam(stage.parameters(), lr=args.lr)
    # Evaluation goes through the pipeline runtime's forward-only pass for
    # every schedule: the same code measures every row's held-out loss.
    pipe = AsyncPipeline(stage, opt, charlm.lm_loss, update_frequency=m, timeout=args.timeout,
                         max_in_flight=async_options(schedule).get("max_in_flight"))
    if schedule.startswith("async"):
        return PipelineTrainer(pipe, StepData(args), args)
    kind = ScheduleGPipe if schedule == "torch_gpipe" else Schedule1F1B
    return TorchScheduleTrainer(kind, stage, opt, rank, world, None, StepData(args), args, pipe)


def _run(rank, world, schedule, args, ends, cgroups):
    _join_cgroups(cgroups[rank])
    trainer = _trainer(rank, world, schedule, args, ends)
    trainer.train(args.warmup_steps)  # shapes, allocations, the first messages: not timed
    dist.barrier()
    pipe = getattr(trainer, "pipe", None)
    busy_before = pipe.busy_seconds if pipe is not None else 0.0  # the warm-up's is not timed either
    curve, gaps = [], []
    timed = cpu = 0.0
    per_point = [args.steps * (k + 1) // args.eval_points for k in range(args.eval_points)]
    done = 0
    for target in per_point:
        trainer.step_done.clear()
        cpu_start = _cpu_seconds()
        start = time.perf_counter()
        trainer.step_done.append(start)
        trainer.train(target - done)
        if isinstance(trainer, PipelineTrainer):
            trainer.synchronize()
        timed += time.perf_counter() - start
        cpu += _cpu_seconds() - cpu_start
        gaps += [b - a for a, b in zip(trainer.step_done, trainer.step_done[1:])]
        done = target
        loss = trainer.evaluate()
        curve.append({"steps": done, "samples": done * samples_per_step(args, schedule), "held_out_loss": loss})
        dist.barrier()
    averager = getattr(getattr(trainer, "ravnest", None), "averager", None)
    return {
        "rank": rank, "seconds": timed, "step_ms": statistics.median(gaps) * 1e3 if gaps else None,
        "train_loss": trainer.losses[args.warmup_steps:] or None, "held_out": curve,
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "version_store_peak_bytes": pipe.versions.peak_bytes if pipe is not None else None,
        "busy_fraction": (pipe.busy_seconds - busy_before) / timed if pipe is not None else None,
        "cpu_cores": cpu / timed,
        "averaging_wait_s": averager.wait_seconds if averager is not None else None,
        "stage_layers": None if schedule == "ddp" else [ends[rank % args.stages - 1] if rank % args.stages else 0,
                                                        ends[rank % args.stages]],
    }


def _cpu_seconds() -> float:
    """CPU time of every thread of this process so far. Over the timed run it
    says how many cores a stage used: a stage under a CPU quota that used
    all of it was bound by the quota in that schedule, whatever its idle
    time (the quota is a budget per period, so short idle spells cost no
    compute), and no schedule could have run it faster."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def samples_per_step(args, schedule: str | None = None) -> int:
    clusters = len(args.layouts[schedule].clusters) if schedule in args.layouts else args.clusters
    return clusters * args.micro_batches * args.micro_batch_size


@contextlib.contextmanager
def rank_cgroups(world: int, slow_stage: int | None, cpu: float, memory_mb: int | None):
    """The cgroup v1 groups each rank joins, removed afterwards: the slow
    rank's cpu group (cpu.cfs_quota_us = cpu × period) and, with a memory
    budget, one memory group per rank (memory.limit_in_bytes: a rank that
    needs more is killed by the kernel, as on a node with that much RAM)."""
    groups: list[list[str]] = [[] for _ in range(world)]
    made: list[str] = []
    wanted = ([CGROUP_CPU] if slow_stage is not None else []) + ([CGROUP_MEMORY] if memory_mb else [])
    for root in wanted:
        if os.geteuid() != 0 or not os.path.isdir(root):
            raise NetemUnavailable(f"--slow-stage and --memory-budget-mb need root and cgroup v1's {root}")

    def make(root: str, name: str, settings: dict) -> str:
        path = os.path.join(root, f"bgr{os.getpid()}-{name}")
        os.makedirs(path, exist_ok=True)
        made.append(path)
        for key, value in settings.items():
            with open(os.path.join(path, key), "w") as f:
                f.write(str(value))
        return path

    try:
        if slow_stage is not None:
            groups[slow_stage].append(
                make(CGROUP_CPU, "slow", {"cpu.cfs_period_us": 100000, "cpu.cfs_quota_us": int(cpu * 100000)}))
        if memory_mb:
            for rank in range(world):
                groups[rank].append(make(CGROUP_MEMORY, f"r{rank}", {"memory.limit_in_bytes": memory_mb << 20}))
        yield groups
    finally:
        for path in made:
            with contextlib.suppress(OSError):
                os.rmdir(path)


def plan_nodes(args, prof: dict) -> list[dict]:
    """One node per rank: its emulated link, its share of the machine's cores
    (the profile is one process alone on a core), and a memory that holds
    --node-memory-fraction of what the whole model needs on one node (so
    that no node holds it alone and every cluster is a pipeline)."""
    from netem.cluster import parse_rates

    rates = parse_rates(args.bandwidth_mbit, args.world_size) if args.bandwidth_mbit else [1e5] * args.world_size
    weights = sum(layer["param_bytes"] for layer in prof["layers"])
    activations = sum(layer["activation_bytes_per_sample"] for layer in prof["layers"])
    # The planner's memory for one stage holding everything (Adam: 2 bytes
    # of state per byte of weights; one stashed version; one micro-batch).
    whole = weights * (1 + 1 + 2 + 1) + args.micro_batch_size * activations
    share = min(1.0, (os.cpu_count() or 1) / args.world_size)
    return [{"name": f"rank{r}", "memory_gb": args.node_memory_fraction * whole / 1e9, "compute": share,
             "bandwidth_mbit": float(rates[r])} for r in range(args.world_size)]


def plan_layouts(args) -> None:
    """args.layouts and args.plan_rows for plan:bagua and plan:ravnest."""
    from bagua_ravnest.pipeline import Layout
    from bagua_ravnest.plan import make_plans

    prof = model_profile(args)
    nodes = plan_nodes(args, prof)
    plans = make_plans(nodes, prof, args.micro_batch_size, 2.0)
    names = [n["name"] for n in nodes]
    for schedule, key in zip(PLAN_SCHEDULES, ("plan", "ravnest")):
        plan = plans[key]
        layout = Layout.from_plan(plan, names)
        args.layouts[schedule] = layout
        left_out = args.world_size - len(layout.ranks)
        shape = " + ".join(f"1 × {len(c)}" for c in layout.clusters) + (f", {left_out} left out" if left_out else "")
        args.plan_rows[schedule] = {"predicted_samples_per_s": plan["samples_per_s"], "plan_fits": plan["fits"],
                                    "shape": shape,
                                    "layout": layout.describe(), "plan_explanation": plan["explanation"],
                                    "nodes": nodes}
        print(plan["explanation"], end="", flush=True)


def failed_row(schedule: str, failed: list, args, ends) -> dict:
    """A schedule that could not run: which ranks stopped and why (a rank
    the kernel killed at the memory limit exits with -9)."""
    why = []
    for r in failed:
        if r.exitcode == -9 and args.memory_budget_mb:
            why.append(f"rank {r.rank} killed at the {args.memory_budget_mb} MiB memory limit")
        else:
            why.append(f"rank {r.rank}: {r.error_type}: {r.error.strip().splitlines()[-1] if r.error else ''}")
    return {"schedule": schedule, "world_size": args.world_size, "clusters": args.clusters, "stages": args.stages,
            "stage_ends": ends, "failed": "; ".join(why)}


def summarize(schedule: str, ranks: list[dict], args, ends) -> dict:
    layout = args.layouts.get(schedule)
    # The loss is the last stage's (of cluster 0 under a plan: the last rank
    # may be left out).
    last = ranks[layout.clusters[0][-1]] if layout is not None else ranks[-1]
    seconds = max(r["seconds"] for r in ranks)
    samples = args.steps * samples_per_step(args, schedule)
    return {
        "schedule": schedule,
        "world_size": args.world_size,
        "clusters": args.clusters,
        "stages": args.stages,
        "reduce_interval": args.reduce_interval if schedule == "ravnest" else None,
        "micro_batches_per_step": args.micro_batches,
        "micro_batch_size": args.micro_batch_size,
        "steps": args.steps,
        "stage_ends": ends,
        "seconds": seconds,
        "samples_per_s": samples / seconds,
        "step_ms_median": statistics.median(r["step_ms"] for r in ranks if r["step_ms"] is not None),
        "peak_memory_bytes": [r["peak_rss_bytes"] for r in ranks],
        "version_store_peak_bytes": [r["version_store_peak_bytes"] for r in ranks],
        "busy_fraction": [r["busy_fraction"] for r in ranks],
        "cpu_cores": [r["cpu_cores"] for r in ranks],
        "averaging_wait_s": [r["averaging_wait_s"] for r in ranks],
        "train_loss": last["train_loss"],
        "held_out_curve": last["held_out"],
        "held_out_loss": last["held_out"][-1]["held_out_loss"],
        **(args.plan_rows.get(schedule) or {}),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--world-size", type=int, default=4, help="ranks: clusters × stages, one stage per rank")
    ap.add_argument("--clusters", type=int, default=1,
                    help="clusters of world/clusters stages each (ranks in order); more than 1 for "
                         f"{', '.join(CLUSTER_SCHEDULES)}")
    ap.add_argument("--reduce-interval", type=int, default=4, help="ravnest: optimizer steps between averagings")
    ap.add_argument("--schedules",
                    help=f"comma-separated, of {', '.join(SCHEDULES)} (default all; one cluster) or "
                         f"{', '.join(CLUSTER_SCHEDULES)} (default all; --clusters > 1); async:max_in_flight=N sets "
                         "async's bound on micro-batches in flight (default: the number of stages)")
    ap.add_argument("--micro-batches", type=int, help="micro-batches per step (default: the number of stages)")
    ap.add_argument("--micro-batch-size", type=int, default=8, help="windows per micro-batch")
    ap.add_argument("--steps", type=int, default=60, help="timed steps")
    ap.add_argument("--warmup-steps", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=1, help="runs of every schedule, interleaved; the median counts")
    ap.add_argument("--eval-points", type=int, default=3, help="held-out evaluations along the run (untimed)")
    ap.add_argument("--held-out-windows", type=int, default=64)
    ap.add_argument("--blocks", type=int, help="transformer blocks (default: 2 × stages - 2, at least 2)")
    ap.add_argument("--context", type=int, default=64)
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--lr", type=float, default=1e-3, help="Adam's learning rate, every schedule")
    ap.add_argument("--split", choices=("planner", "equal"), default="planner")
    ap.add_argument("--bandwidth-mbit", help="emulated link rate(s) between stages in Mbit/s (needs root)")
    ap.add_argument("--slow-stage", type=int, help="this rank gets --slow-cpu of a core (cgroup cpu quota; root)")
    ap.add_argument("--slow-cpu", type=float, default=0.5)
    ap.add_argument("--plans", action="store_true",
                    help="run ravnest on the cluster planner's plan and on Ravnest's own for nodes made from the "
                         "emulated network (predicted against measured)")
    ap.add_argument("--node-memory-fraction", type=float, default=0.6,
                    help="with --plans: each node's memory as a fraction of what the whole model needs on one")
    ap.add_argument("--memory-budget-mb", type=int,
                    help="every rank's memory limit in MiB (cgroup v1 memory, root): a schedule whose ranks need "
                         "more is killed and reported as failed")
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds a pipeline message may take")
    ap.add_argument("--json", dest="json_path", help="write the rows here")
    args = ap.parse_args(argv)
    if args.clusters < 1 or args.world_size % args.clusters:
        ap.error(f"--clusters must divide --world-size ({args.world_size}) into clusters of equal size")
    args.stages = args.world_size // args.clusters
    args.layouts, args.plan_rows = {}, {}
    allowed = SCHEDULES if args.clusters == 1 else CLUSTER_SCHEDULES
    if args.plans:
        if args.clusters != 1 or args.schedules:
            ap.error("--plans chooses the layouts and the schedule (ravnest on each plan): leave out --clusters and "
                     "--schedules")
        if not 0 < args.node_memory_fraction:
            ap.error("--node-memory-fraction must be positive")
        allowed = PLAN_SCHEDULES
    schedules = [s for s in (args.schedules or ",".join(allowed)).split(",") if s]
    for s in schedules:
        if s not in allowed and s.partition(":")[0] not in allowed:
            ap.error(f"schedule {s!r} does not run with --clusters {args.clusters}; choose from {', '.join(allowed)}"
                     + ("" if args.clusters > 1 else f" (or --clusters > 1 for {', '.join(CLUSTER_SCHEDULES)})"))
        try:
            async_options(s) if s not in PLAN_SCHEDULES else None
        except ValueError as e:
            ap.error(str(e))
    if args.stages < 2:
        ap.error("every cluster needs at least 2 stages (a pipeline of one stage has no schedule)")
    if args.reduce_interval < 1:
        ap.error("--reduce-interval must be at least 1")
    args.micro_batches = args.micro_batches or args.stages
    args.blocks = args.blocks or max(2, 2 * args.stages - 2)
    if "ddp" in schedules and samples_per_step(args) % args.world_size:
        ap.error(f"ddp spreads a step's {samples_per_step(args)} samples over {args.world_size} ranks: choose "
                 "--micro-batches and --micro-batch-size so that they divide")
    if args.slow_stage is not None and not 0 <= args.slow_stage < args.world_size:
        ap.error(f"--slow-stage must be a rank, 0..{args.world_size - 1}")
    if not 0 < args.slow_cpu <= 1:
        ap.error("--slow-cpu is a fraction of one core, in (0, 1]")
    if args.rounds < 1:
        ap.error("--rounds must be at least 1")
    if args.steps < args.eval_points:
        ap.error("--steps must be at least --eval-points")

    torch.set_num_threads(1)
    ends = cut_points(args)
    if args.plans:
        try:
            plan_layouts(args)
        except ValueError as e:
            ap.exit(2, f"pipeline.py: {e}\n")
    runs: dict[str, list[dict]] = {s: [] for s in schedules}
    try:
        with network(args.bandwidth_mbit, args.world_size) as net, \
                rank_cgroups(args.world_size, args.slow_stage, args.slow_cpu, args.memory_budget_mb) as cgroups:
            # Rounds interleave the schedules, so that a slow spell of the
            # machine does not fall on one schedule only.
            env = dict(net.env)
            if args.clusters > 1:
                # Every all-reduce of the cluster schedules (ravnest's
                # averaging, sync_1f1b's gradients, DDP's buckets) is the
                # multi-ring one, planned for the emulated links.
                env["BAGUA_ALLREDUCE"] = "multi_ring"
                if net.rates_mbit:
                    env["BAGUA_LINK_MBIT"] = ",".join(f"{r:g}" for r in net.rates_mbit)
            for _ in range(args.rounds):
                for schedule in schedules:
                    results = run_world(_run, args.world_size, schedule, args, ends, cgroups, env=env,
                                        timeout=3600, netns=net.netns, hostnames=net.hostnames)
                    failed = [r for r in results if not r.ok]
                    if failed and args.memory_budget_mb:
                        row = failed_row(schedule, failed, args, ends)
                        runs[schedule].append(row)
                        print(f"{schedule:<12} failed: {row['failed']}", flush=True)
                        continue
                    row = summarize(schedule, values(results), args, ends)
                    runs[schedule].append(row)
                    print(f"{schedule:<12} {row['samples_per_s']:8.1f} samples/s  step {row['step_ms_median']:7.1f} ms"
                          f"  held-out {row['held_out_loss']:.4f}  peak RSS "
                          f"{max(row['peak_memory_bytes']) / 2**20:.0f} MiB  cores used "
                          f"{' / '.join(f'{c:.2f}' for c in row['cpu_cores'])}", flush=True)
    except (NetemUnavailable, ValueError) as e:
        ap.exit(2, f"pipeline.py: {e}\n")
    rows = []
    for schedule in schedules:
        failures = [r for r in runs[schedule] if "failed" in r]
        # The round of median speed stands for the schedule (its loss too);
        # a schedule that failed in any round is reported as failed.
        ordered = sorted(runs[schedule], key=lambda r: r["samples_per_s"]) if not failures else failures
        row = dict(ordered[len(ordered) // 2])
        row["samples_per_s_rounds"] = [r.get("samples_per_s") for r in runs[schedule]]
        row["memory_budget_mb"] = args.memory_budget_mb
        row["network"] = net.label
        row["slow_stage"] = None if args.slow_stage is None else {"stage": args.slow_stage, "cpu": args.slow_cpu}
        rows.append(row)
    by = {r["schedule"]: r for r in rows if "failed" not in r}
    for r in by.values():
        for base in ("torch_gpipe", "torch_1f1b", "sync_1f1b", "ddp", "plan:ravnest"):
            if base in by:
                r[f"speed_vs_{base}"] = r["samples_per_s"] / by[base]["samples_per_s"]
                r[f"held_out_vs_{base}"] = r["held_out_loss"] / by[base]["held_out_loss"]
    print(f"{args.clusters} cluster(s) of {args.stages} stages, cuts after layers {ends} of {args.blocks + 2}; "
          f"network {net.label}" if not args.plans else
          "\n".join(f"{name}: {layout.describe()}" for name, layout in args.layouts.items()) + f"\nnetwork {net.label}"
          + (f"; stage {args.slow_stage} at {args.slow_cpu:g} core" if args.slow_stage is not None else ""))
    for r in rows:
        if "failed" in r:
            print(f"{r['schedule']:<12} failed: {r['failed']}")
            continue
        vs = "  ".join(f"{k.removeprefix('speed_vs_')} ×{v:.2f}" for k, v in r.items() if k.startswith("speed_vs_"))
        predicted = f"  (predicted {r['predicted_samples_per_s']:.1f})" if "predicted_samples_per_s" in r else ""
        print(f"{r['schedule']:<12} {r['samples_per_s']:8.1f} samples/s{predicted}  held-out {r['held_out_loss']:.4f}  "
              f"{vs}")
    if args.json_path:
        os.makedirs(os.path.dirname(os.path.abspath(args.json_path)), exist_ok=True)
        with open(args.json_path, "w") as f:
            settings = {k: v for k, v in vars(args).items() if k not in ("layouts", "plan_rows")}
            json.dump({"benchmark": "pipeline", "machine": machine_info(), "args": settings, "rows": rows}, f,
                      indent=2)
        print(f"wrote {args.json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
