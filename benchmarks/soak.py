"""Resident memory over a long run, for torch DDP and every registered
algorithm: does anything grow with the step count?

    python benchmarks/soak.py                      # 20,000 steps each, world 4
    python benchmarks/soak.py --steps 4000 --algorithms ddp,bytegrad --json out/soak.json

Each algorithm trains in processes of its own (resident memory is per
process), with SGD or, for qadam/onebit_adam, their QAdamOptimizer, and
small buckets so that every step runs several bucket operations. What leaks
is held per operation, not per byte, so the default model is small (`tiny`:
an MLP of 12 K parameters in 4 buckets; 20,000 steps of all algorithms take
about 15 minutes on 2 cores); `--model mlp` is the training benchmark's
0.4 M-parameter MLP. Every --every steps each rank records
its resident set size (/proc/self/statm). A row reports rank 0's series, and
per rank the growth from the first sample to the last, the slope of a
least-squares line through the samples (bytes per step), and that growth
next to torch DDP's in the same run (growth_vs_ddp_mb, the largest over
ranks). The first sample is taken after --every steps, so allocator pools
and caches filled by the first steps do not count as growth.

glibc's malloc keeps its defaults here (--malloc system): the benchmarks'
tuned setting keeps up to 1 GiB of freed memory mapped, which would show as
growth that is not a leak.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
from torch import nn  # noqa: E402

import bagua_ravnest  # noqa: E402
from allocator import CHOICES as MALLOC_CHOICES  # noqa: E402
from allocator import malloc_env  # noqa: E402
from bagua_ravnest.launch import run_world, values  # noqa: E402
from machine import machine_info  # noqa: E402
from netem.network import network  # noqa: E402
from train import BASELINES, _wrap  # noqa: E402
from workloads import SyntheticTask, build_model  # noqa: E402

_PAGE = resource.getpagesize()


def resident_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * _PAGE


def slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of ys against xs (0 for fewer than two points)."""
    n = len(xs)
    if n < 2:
        return 0.0
    mx, my = sum(xs) / n, sum(ys) / n
    var = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / var if var else 0.0


class _TinyTask:
    def __init__(self, rank, batch_size, seed):
        self.batch_size = batch_size
        self.generator = torch.Generator().manual_seed(seed * 7919 + rank)

    def batch(self):
        x = torch.randn(self.batch_size, 32, generator=self.generator)
        return x, (x[:, :10].argmax(dim=1))


def _tiny_model(seed):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(32, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 10))


def _worker(rank, world, algorithm, args, net):
    torch.set_num_threads(1)
    gloo = dist.new_group(backend="gloo")
    model = _tiny_model(args.seed) if args.model == "tiny" else build_model(args.model, seed=args.seed)
    make_opt = lambda m: torch.optim.SGD(m.parameters(), lr=args.lr, momentum=0.9)  # noqa: E731
    model, opt, after_step = _wrap(algorithm, model, gloo, make_opt, 0, rank, world, net, args, args.bucket_cap_mb)
    task = _TinyTask(rank, args.batch_size, args.seed) if args.model == "tiny" else SyntheticTask(
        args.model, rank, args.batch_size, seed=args.seed)
    steps, rss = [], []
    start = time.perf_counter()
    for step in range(1, args.steps + 1):
        x, y = task.batch()
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        after_step()
        if step % args.every == 0:
            steps.append(step)
            rss.append(resident_bytes())
    elapsed = time.perf_counter() - start
    return {"steps": steps, "rss": rss, "final_loss": float(loss.detach()), "seconds": elapsed}


def run(args) -> list[dict]:
    names = bagua_ravnest.split_algorithm_specs(args.algorithms) if args.algorithms else (
        ["ddp"] + list(bagua_ravnest.algorithm_names()))
    for name in names:
        base, _ = bagua_ravnest.parse_algorithm_spec(name)
        if base not in BASELINES and base not in bagua_ravnest.algorithm_names():
            raise SystemExit(f"unknown algorithm {name!r}; choose from ddp or "
                             f"{', '.join(bagua_ravnest.algorithm_names())}")
    if "ddp" not in names:
        names.insert(0, "ddp")  # the yardstick
    rows = []
    with network(None, args.world_size) as net:
        env = {**malloc_env(args.malloc), **net.env}
        for name in names:
            ranks = values(run_world(_worker, args.world_size, name, args, net, env=env, timeout=args.timeout))
            growth = [r["rss"][-1] - r["rss"][0] for r in ranks]
            rows.append({
                "algorithm": name,
                "model": args.model,
                "world_size": args.world_size,
                "steps": args.steps,
                "sample_steps": ranks[0]["steps"],
                "rss_mb_rank0": [b / 1e6 for b in ranks[0]["rss"]],
                "growth_mb": [g / 1e6 for g in growth],
                "growth_bytes_per_step": [slope(r["steps"], r["rss"]) for r in ranks],
                "final_loss_rank0": ranks[0]["final_loss"],
                "seconds": max(r["seconds"] for r in ranks),
            })
            if not args.quiet:
                print(f"{name:<22} rank 0 {rows[-1]['rss_mb_rank0'][0]:.1f} -> {rows[-1]['rss_mb_rank0'][-1]:.1f} MB, "
                      f"{max(rows[-1]['growth_bytes_per_step']):.1f} B/step at most, {rows[-1]['seconds']:.0f} s",
                      flush=True)
    ddp = next(r for r in rows if r["algorithm"] == "ddp")
    for r in rows:
        r["growth_vs_ddp_mb"] = max(g - d for g, d in zip(r["growth_mb"], ddp["growth_mb"]))
    return rows


def print_table(rows: list[dict]) -> None:
    print(f"{'algorithm':<22} {'rss first':>10} {'rss last':>9} {'growth':>9} {'B/step':>8} {'vs ddp':>9}")
    for r in rows:
        print(f"{r['algorithm']:<22} {r['rss_mb_rank0'][0]:>8.1f}MB {r['rss_mb_rank0'][-1]:>7.1f}MB "
              f"{max(r['growth_mb']):>7.2f}MB {max(r['growth_bytes_per_step']):>8.1f} {r['growth_vs_ddp_mb']:>+7.2f}MB")


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--world-size", type=int, default=4)
    ap.add_argument("--algorithms", default=None, help="comma-separated names (default: ddp and every registered one)")
    ap.add_argument("--steps", type=int, default=20_000)
    ap.add_argument("--every", type=int, default=1000, help="record resident memory every this many steps")
    ap.add_argument("--model", choices=["tiny", "mlp", "convnet"], default="tiny")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--bucket-cap-mb", type=float, default=0.012,
                    help="small buckets: several operations a step (0.012: 4 buckets of the tiny model)")
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--adam-lr", type=float, default=0.001)
    ap.add_argument("--adam-warmup-steps", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--malloc", choices=MALLOC_CHOICES, default="system")
    ap.add_argument("--timeout", type=float, default=7200)
    ap.add_argument("--max-growth-vs-ddp-mb", type=float, default=None,
                    help="exit 1 if an algorithm's growth exceeds torch DDP's by more than this")
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument("--json", dest="json_path")
    return ap


def main(argv=None) -> int:
    ap = parser()
    args = ap.parse_args(argv)
    if args.steps < 2 * args.every:
        ap.error("--steps must be at least twice --every (growth needs two samples)")
    rows = run(args)
    print_table(rows)
    if args.json_path:
        os.makedirs(os.path.dirname(os.path.abspath(args.json_path)), exist_ok=True)
        with open(args.json_path, "w") as f:
            json.dump({"benchmark": "soak", "machine": machine_info(), "config": vars(args), "rows": rows}, f, indent=2)
        print(f"wrote {args.json_path}")
    if args.max_growth_vs_ddp_mb is not None:
        worst = max(rows, key=lambda r: r["growth_vs_ddp_mb"])
        if worst["growth_vs_ddp_mb"] > args.max_growth_vs_ddp_mb:
            print(f"{worst['algorithm']} grew {worst['growth_vs_ddp_mb']:.2f} MB more than torch DDP "
                  f"(limit {args.max_growth_vs_ddp_mb} MB)")
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
