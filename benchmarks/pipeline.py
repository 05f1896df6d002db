"""Pipeline schedules on the same split, the same micro-batches and the same
data, in the same run (docs/pipeline.md):

- async:       bagua_ravnest.pipeline.AsyncPipeline (Ravnest's asynchronous
               pipeline: never drains, weight stashing, backward first);
- torch_gpipe: torch.distributed.pipelining.ScheduleGPipe;
- torch_1f1b:  torch.distributed.pipelining.Schedule1F1B.

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
(resident set), the training loss per step, held-out loss at equal samples
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
CGROUP_CPU = "/sys/fs/cgroup/cpu"


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


def cut_points(args) -> list[int]:
    """The planner's split of the model's measured profile over the stages
    (equal compute speeds; the slow stage, if any, is the benchmark's
    unannounced straggler, as in a real cluster whose planner was wrong)."""
    from bagua_ravnest.pipeline import equal_split, profile, split
    from torch import nn

    if args.split == "equal":
        return equal_split(args.blocks + 2, args.world_size)
    torch.manual_seed(0)
    model = nn.Sequential(*[f() for f in model_layers(args)])
    tokens = torch.randint(0, 256, (args.micro_batch_size, args.context))
    prof = profile(model, tokens)
    return split(prof, args.world_size, micro_batch=args.micro_batch_size,
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


def _join_cgroup(path: str | None) -> None:
    if path:
        with open(os.path.join(path, "cgroup.procs"), "w") as f:
            f.write(str(os.getpid()))


def _run(rank, world, schedule, args, ends, cgroups):
    import charlm
    from bagua_ravnest.pipeline import AsyncPipeline, stage_module

    _join_cgroup(cgroups[rank])
    stage = stage_module(model_layers(args), ends, rank, seed=0)
    opt = torch.optim.Adam(stage.parameters(), lr=args.lr)
    first, last = rank == 0, rank == world - 1
    data = StepData(args)
    evaluation = held_out(args)
    # Evaluation goes through the pipeline runtime's forward-only pass for
    # every schedule: the same code measures every row's held-out loss.
    evaluator = AsyncPipeline(stage, opt, charlm.lm_loss, update_frequency=args.micro_batches, timeout=args.timeout,
                              max_in_flight=async_options(schedule).get("max_in_flight"))
    step_done: list[float] = []
    losses: list[float] = []

    if schedule.startswith("async"):
        pipe = evaluator

        def on_finish(mb):
            if (mb + 1) % args.micro_batches == 0:
                step_done.append(time.perf_counter())

        def train(steps):
            got = pipe.train(data.micro_batches(steps), steps * args.micro_batches, on_finish=on_finish)
            for k in range(0, len(got), args.micro_batches):
                losses.append(statistics.fmean(got[k : k + args.micro_batches]))
    else:
        from torch.distributed.pipelining import PipelineStage, Schedule1F1B, ScheduleGPipe

        kind = ScheduleGPipe if schedule == "torch_gpipe" else Schedule1F1B
        sched = kind(PipelineStage(stage, rank, world, torch.device("cpu")), n_microbatches=args.micro_batches,
                     loss_fn=charlm.lm_loss)

        def train(steps):
            for _ in range(steps):
                x, y = data.step()
                opt.zero_grad(set_to_none=True)
                got: list = []
                if first and last:
                    sched.step(x, target=y, losses=got)
                elif first:
                    sched.step(x)
                elif last:
                    sched.step(target=y, losses=got)
                else:
                    sched.step()
                opt.step()
                step_done.append(time.perf_counter())
                if last:
                    losses.append(statistics.fmean(float(v.detach()) for v in got))

    train(args.warmup_steps)  # shapes, allocations, the first messages: not timed
    dist.barrier()
    curve, gaps = [], []
    timed = 0.0
    per_point = [args.steps * (k + 1) // args.eval_points for k in range(args.eval_points)]
    done = 0
    for target in per_point:
        step_done.clear()
        start = time.perf_counter()
        step_done.append(start)
        train(target - done)
        timed += time.perf_counter() - start
        gaps += [b - a for a, b in zip(step_done, step_done[1:])]
        done = target
        loss = evaluator.evaluate(evaluation, len(evaluation))
        curve.append({"steps": done, "samples": done * args.micro_batches * args.micro_batch_size,
                      "held_out_loss": loss})
        dist.barrier()
    return {
        "rank": rank, "seconds": timed, "step_ms": statistics.median(gaps) * 1e3 if gaps else None,
        "train_loss": losses[args.warmup_steps:] if last else None, "held_out": curve,
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "version_store_peak_bytes": evaluator.versions.peak_bytes if schedule.startswith("async") else None,
        "busy_fraction": evaluator.busy_seconds / timed if schedule.startswith("async") else None,
        "stage_layers": [ends[rank - 1] if rank else 0, ends[rank]],
        "stage_params": sum(p.numel() for p in stage.parameters()),
    }


@contextlib.contextmanager
def slow_cgroups(world: int, slow_stage: int | None, cpu: float):
    """One cgroup v1 cpu group for the slow stage (cpu.cfs_quota_us = cpu ×
    period), removed afterwards; None for every other rank."""
    groups: list[str | None] = [None] * world
    if slow_stage is None:
        yield groups
        return
    if os.geteuid() != 0 or not os.path.isdir(CGROUP_CPU):
        raise NetemUnavailable(f"--slow-stage needs root and cgroup v1's {CGROUP_CPU}")
    path = os.path.join(CGROUP_CPU, f"bgr{os.getpid()}-slow")
    os.makedirs(path, exist_ok=True)
    try:
        with open(os.path.join(path, "cpu.cfs_period_us"), "w") as f:
            f.write("100000")
        with open(os.path.join(path, "cpu.cfs_quota_us"), "w") as f:
            f.write(str(int(cpu * 100000)))
        groups[slow_stage] = path
        yield groups
    finally:
        with contextlib.suppress(OSError):
            os.rmdir(path)


def summarize(schedule: str, ranks: list[dict], args, ends) -> dict:
    last = ranks[-1]
    seconds = max(r["seconds"] for r in ranks)
    samples = args.steps * args.micro_batches * args.micro_batch_size
    return {
        "schedule": schedule,
        "world_size": args.world_size,
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
        "train_loss": last["train_loss"],
        "held_out_curve": last["held_out"],
        "held_out_loss": last["held_out"][-1]["held_out_loss"],
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--world-size", type=int, default=4, help="stages, one per rank")
    ap.add_argument("--schedules", default=",".join(SCHEDULES),
                    help=f"comma-separated, of {', '.join(SCHEDULES)}; async:max_in_flight=N sets async's bound on "
                         "micro-batches in flight (default: the number of stages)")
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
    ap.add_argument("--slow-stage", type=int, help="this stage gets --slow-cpu of a core (cgroup cpu quota; root)")
    ap.add_argument("--slow-cpu", type=float, default=0.5)
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds a pipeline message may take")
    ap.add_argument("--json", dest="json_path", help="write the rows here")
    args = ap.parse_args(argv)
    schedules = [s for s in args.schedules.split(",") if s]
    for s in schedules:
        if s.partition(":")[0] not in SCHEDULES:
            ap.error(f"unknown schedule {s!r}; choose from {', '.join(SCHEDULES)}")
        try:
            async_options(s)
        except ValueError as e:
            ap.error(str(e))
    if args.world_size < 2:
        ap.error("--world-size must be at least 2 (a pipeline of one stage has no schedule)")
    args.micro_batches = args.micro_batches or args.world_size
    args.blocks = args.blocks or max(2, 2 * args.world_size - 2)
    if args.slow_stage is not None and not 0 <= args.slow_stage < args.world_size:
        ap.error(f"--slow-stage must be a stage, 0..{args.world_size - 1}")
    if not 0 < args.slow_cpu <= 1:
        ap.error("--slow-cpu is a fraction of one core, in (0, 1]")
    if args.rounds < 1:
        ap.error("--rounds must be at least 1")
    if args.steps < args.eval_points:
        ap.error("--steps must be at least --eval-points")

    torch.set_num_threads(1)
    ends = cut_points(args)
    runs: dict[str, list[dict]] = {s: [] for s in schedules}
    try:
        with network(args.bandwidth_mbit, args.world_size) as net, \
                slow_cgroups(args.world_size, args.slow_stage, args.slow_cpu) as cgroups:
            # Rounds interleave the schedules, so that a slow spell of the
            # machine does not fall on one schedule only.
            for _ in range(args.rounds):
                for schedule in schedules:
                    ranks = values(run_world(_run, args.world_size, schedule, args, ends, cgroups, env=net.env,
                                             timeout=3600, netns=net.netns, hostnames=net.hostnames))
                    row = summarize(schedule, ranks, args, ends)
                    runs[schedule].append(row)
                    print(f"{schedule:<12} {row['samples_per_s']:8.1f} samples/s  step {row['step_ms_median']:7.1f} ms"
                          f"  held-out {row['held_out_loss']:.4f}  peak RSS "
                          f"{max(row['peak_memory_bytes']) / 2**20:.0f} MiB", flush=True)
    except (NetemUnavailable, ValueError) as e:
        ap.exit(2, f"pipeline.py: {e}\n")
    rows = []
    for schedule in schedules:
        # The round of median speed stands for the schedule (its loss too).
        ordered = sorted(runs[schedule], key=lambda r: r["samples_per_s"])
        row = dict(ordered[len(ordered) // 2])
        row["samples_per_s_rounds"] = [r["samples_per_s"] for r in runs[schedule]]
        row["network"] = net.label
        row["slow_stage"] = None if args.slow_stage is None else {"stage": args.slow_stage, "cpu": args.slow_cpu}
        rows.append(row)
    by = {r["schedule"]: r for r in rows}
    for r in rows:
        for base in ("torch_gpipe", "torch_1f1b"):
            if base in by:
                r[f"speed_vs_{base}"] = r["samples_per_s"] / by[base]["samples_per_s"]
                r[f"held_out_vs_{base}"] = r["held_out_loss"] / by[base]["held_out_loss"]
    print(f"stages: {args.world_size}, cuts after layers {ends} of {args.blocks + 2}; network {net.label}"
          + (f"; stage {args.slow_stage} at {args.slow_cpu:g} core" if args.slow_stage is not None else ""))
    for r in rows:
        vs = "  ".join(f"{k.removeprefix('speed_vs_')} ×{v:.2f}" for k, v in r.items() if k.startswith("speed_vs_"))
        print(f"{r['schedule']:<12} {r['samples_per_s']:8.1f} samples/s  held-out {r['held_out_loss']:.4f}  {vs}")
    if args.json_path:
        os.makedirs(os.path.dirname(os.path.abspath(args.json_path)), exist_ok=True)
        with open(args.json_path, "w") as f:
            json.dump({"benchmark": "pipeline", "machine": machine_info(), "args": vars(args), "rows": rows}, f,
                      indent=2)
        print(f"wrote {args.json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
