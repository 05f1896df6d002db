"""Trains one model with torch DDP and with bagua_ravnest algorithms, in the
same processes, on the same generated data and seeds, and reports speed and
loss per algorithm.

    python benchmarks/train.py --world-size 4 --algorithms ddp,gradient_allreduce --steps 50 --json out/train.json

Names in --algorithms: `ddp` (torch DDP on Gloo) or any bagua_ravnest
algorithm spec; options follow a colon and are comma-separated
(`gradient_allreduce:hierarchical=true,allreduce=inner`).

Algorithms take turns in --rounds blocks of steps, so that drifts of the
machine's speed affect all of them alike. A step's time is its slowest
rank's. Per algorithm: samples_per_s (all ranks' samples over the summed
step times, warm-up steps excluded), step_ms_median, final_loss (mean over
ranks of the loss averaged over the last five steps), and the loss curve
against the algorithm's own training time.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
from torch import nn  # noqa: E402
from torch.nn.parallel import DistributedDataParallel as TorchDDP  # noqa: E402

import bagua_ravnest  # noqa: E402
from bagua_ravnest.launch import run_world, values  # noqa: E402
from machine import machine_info  # noqa: E402
from workloads import SyntheticTask, build_model  # noqa: E402

BASELINES = ("ddp",)


def split_algorithms(text: str) -> list[str]:
    """'a,b:x=1,y=2,c' -> ['a', 'b:x=1,y=2', 'c'] (an option continues its spec)."""
    out: list[str] = []
    for token in (t.strip() for t in text.split(",")):
        if not token:
            continue
        if "=" in token and ":" not in token and out:
            out[-1] += "," + token
        else:
            out.append(token)
    return out


def _wrap(algorithm: str, model: nn.Module, gloo, optimizer_factory):
    if algorithm == "ddp":
        model = TorchDDP(model, process_group=gloo)
        return model, optimizer_factory(model)
    opt = optimizer_factory(model)
    return bagua_ravnest.DistributedDataParallel(model, algorithm=algorithm, optimizer=opt), opt


class _Trainer:
    """One algorithm's model, optimizer and data stream; trains in blocks so
    that algorithms can take turns on the machine."""

    def __init__(self, rank, algorithm, args, gloo):
        self.algorithm, self.args = algorithm, args
        model = build_model(args.model, seed=args.seed)
        make_opt = lambda m: torch.optim.SGD(m.parameters(), lr=args.lr, momentum=0.9)  # noqa: E731
        self.model, self.opt = _wrap(algorithm, model, gloo, make_opt)
        self.task = SyntheticTask(args.model, rank, args.batch_size, seed=args.seed)
        self.step_times: list[float] = []
        self.losses: list[float] = []

    def run(self, steps: int) -> None:
        for _ in range(steps):
            x, y = self.task.batch()
            t0 = time.perf_counter()
            self.opt.zero_grad()
            loss = nn.functional.cross_entropy(self.model(x), y)
            loss.backward()
            self.opt.step()
            self.step_times.append(time.perf_counter() - t0)
            self.losses.append(float(loss.detach()))

    def summary(self, world, gloo) -> dict:
        args = self.args
        # A step ends when its slowest rank has finished it.
        t = torch.tensor(self.step_times, dtype=torch.float64)
        dist.all_reduce(t, op=dist.ReduceOp.MAX, group=gloo)
        loss = torch.tensor(self.losses, dtype=torch.float64)
        dist.all_reduce(loss, group=gloo)
        mean_loss = (loss / world).tolist()
        timed = t[args.warmup_steps :]
        return {
            "algorithm": self.algorithm,
            "spec": getattr(self.model, "algorithm", "torch DDP (gloo)"),
            "model": args.model,
            "world_size": world,
            "batch_size": args.batch_size,
            "steps": args.steps,
            "samples_per_s": world * args.batch_size * len(timed) / float(timed.sum()),
            "step_ms_median": 1000 * statistics.median(timed.tolist()),
            "final_loss": statistics.fmean(mean_loss[-5:]),
            "curve": {"seconds": torch.cumsum(t, 0).tolist(), "loss": mean_loss},
        }


def _worker(rank, world, algorithms, args):
    torch.set_num_threads(args.threads)
    gloo = dist.new_group(backend="gloo")
    trainers = [_Trainer(rank, a, args, gloo) for a in algorithms]
    # Algorithms take turns in blocks (alternating order), so slow drifts of
    # the machine affect all of them alike.
    blocks = [len(b) for b in torch.arange(args.steps).tensor_split(args.rounds)]
    for i, block in enumerate(blocks):
        for trainer in trainers if i % 2 == 0 else reversed(trainers):
            dist.barrier(group=gloo)
            trainer.run(block)
    return [t.summary(world, gloo) for t in trainers]


def run(args) -> list[dict]:
    algorithms = split_algorithms(args.algorithms)
    for a in algorithms:
        name = a.split(":")[0]
        if name not in BASELINES and name not in bagua_ravnest.algorithm_names():
            raise SystemExit(
                f"unknown algorithm {name!r}; choose from {', '.join(BASELINES + tuple(bagua_ravnest.algorithm_names()))}"
            )
    rows = values(run_world(_worker, args.world_size, algorithms, args, timeout=args.timeout))[0]
    base = next((r for r in rows if r["algorithm"] == "ddp"), None)
    for r in rows:
        r["speedup_vs_ddp"] = r["samples_per_s"] / base["samples_per_s"] if base else None
    return rows


def print_table(rows: list[dict]) -> None:
    print(f"{'algorithm':<40} {'samples/s':>10} {'step ms':>9} {'final loss':>11} {'vs ddp':>7}")
    for r in rows:
        speedup = f"{r['speedup_vs_ddp']:.2f}x" if r["speedup_vs_ddp"] else "-"
        print(f"{r['algorithm']:<40} {r['samples_per_s']:>10.1f} {r['step_ms_median']:>9.2f} "
              f"{r['final_loss']:>11.4f} {speedup:>7}")


def write_json(path: str, rows: list[dict], args) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump({"benchmark": "train", "machine": machine_info(), "config": vars(args), "rows": rows}, f, indent=2)
    print(f"wrote {path}")


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--world-size", type=int, default=4)
    ap.add_argument("--algorithms", default="ddp,gradient_allreduce")
    ap.add_argument("--model", choices=["mlp", "convnet"], default="mlp")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--warmup-steps", type=int, default=5, help="steps left out of the speed figures")
    ap.add_argument("--batch-size", type=int, default=32, help="per rank")
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="torch threads per rank")
    ap.add_argument("--rounds", type=int, default=10, help="algorithms take turns this many times")
    ap.add_argument("--timeout", type=float, default=3600)
    ap.add_argument("--json", dest="json_path")
    return ap


def main(argv=None) -> int:
    ap = parser()
    args = ap.parse_args(argv)
    if args.steps <= args.warmup_steps:
        ap.error("--steps must be larger than --warmup-steps")
    rows = run(args)
    print_table(rows)
    if args.json_path:
        write_json(args.json_path, rows, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
