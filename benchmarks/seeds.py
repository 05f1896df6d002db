"""Held-out loss over many seeds, against a reference trained beside it.

Where one seed's held-out loss is not a measurement (the convnet ends near
zero, where a ratio of two runs spreads over a factor of four from seed to
seed), the question "within 5% of the baseline?" needs many seeds. For each
seed, benchmarks/train.py trains the algorithms and the reference in the
same processes on the same data and seed; each algorithm's held-out loss is
divided by the reference's of that seed, and the summary is the geometric
mean of those ratios with a 95% interval (Student's t over the seeds' log
ratios). Three measures: the held-out loss after the last step, the mean of
the last three evaluations, and (where the JSON has it) that of the
replicas' mean.

    python benchmarks/seeds.py --seeds 0-47 --reference ddp_adam --out out/seeds/w2 -- \\
        --world-size 2 --model convnet --algorithms ddp_adam,qadam --batch-size 8 --steps 100 \\
        --warmup-steps 1 --adam-lr 1e-3 --adam-warmup-steps 4 --eval-every 16

Everything after "--" goes to train.py (without --seed and --json, which
this sets). Each seed's train.py JSON is kept in --out as seed_N.json, and
a seed whose JSON is there (from the same train.py arguments) is not run
again: a long sweep can be stopped and continued. Writes --out/summary.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import train  # noqa: E402

# Student's t, two-sided 95%, for 1..10 degrees of freedom; beyond, the
# Cornish-Fisher expansion around the normal quantile (within 0.1%).
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228)
_Z975 = 1.959964


def t975(df: int) -> float:
    if df < 1:
        raise ValueError("a 95% interval needs at least two seeds")
    if df <= len(_T975):
        return _T975[df - 1]
    z = _Z975
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


def parse_seeds(text: str) -> list[int]:
    """'0-47' or '0,3,5' or '0-3,8'."""
    seeds: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if "-" in part:
            lo, hi = (int(x) for x in part.split("-", 1))
            if hi < lo:
                raise ValueError(f"--seeds: {part!r} runs backwards")
            seeds += range(lo, hi + 1)
        elif part:
            seeds.append(int(part))
    if len(set(seeds)) != len(seeds) or not seeds:
        raise ValueError(f"--seeds: {text!r} must name each seed once, at least one")
    return seeds


MEASURES = {
    "heldout_loss": lambda r: r["heldout_loss"],
    "last3": lambda r: statistics.fmean(r["heldout_curve"]["loss"][-3:]),
    "heldout_loss_of_mean": lambda r: r.get("heldout_loss_of_mean"),
}


def summarize(runs: dict[int, list[dict]], reference: str) -> dict:
    """runs: seed -> train.py rows. Per algorithm other than the reference
    and per measure: the geometric mean ratio to the reference, its 95%
    interval, the standard error of the mean log ratio, the seeds' range."""
    algorithms = [r["algorithm"] for r in next(iter(runs.values())) if r["algorithm"] != reference]
    out: dict = {}
    for algorithm in algorithms:
        out[algorithm] = {}
        for measure, value in MEASURES.items():
            logs, ratios = [], []
            for seed, rows in sorted(runs.items()):
                by_name = {r["algorithm"]: r for r in rows}
                ours, ref = value(by_name[algorithm]), value(by_name[reference])
                if ours is None or ref is None:
                    break
                if ours <= 0 or ref <= 0:
                    raise ValueError(f"seed {seed}: a held-out loss of {ours} or {ref} has no log ratio")
                ratios.append(ours / ref)
                logs.append(math.log(ours / ref))
            else:
                mean = statistics.fmean(logs)
                entry = {"seeds": len(logs), "geomean_ratio": math.exp(mean), "min_ratio": min(ratios),
                         "max_ratio": max(ratios)}
                if len(logs) > 1:
                    stderr = statistics.stdev(logs) / math.sqrt(len(logs))
                    half = t975(len(logs) - 1) * stderr
                    entry.update(stderr_log=stderr, ci95=[math.exp(mean - half), math.exp(mean + half)])
                out[algorithm][measure] = entry
    return out


def table(summary: dict, reference: str) -> str:
    lines = [f"| algorithm | measure | seeds | vs {reference} (geometric mean) | 95% interval | single seeds |",
             "|---|---|---:|---:|---|---|"]
    pct = lambda x: f"{100 * (x - 1):+.1f}%"  # noqa: E731
    for algorithm, measures in summary.items():
        for measure, e in measures.items():
            if measure == "heldout_loss_of_mean" and e == measures.get("heldout_loss"):
                continue  # replicas that are equal: their mean is the same model
            interval = f"{pct(e['ci95'][0])} … {pct(e['ci95'][1])}" if "ci95" in e else "—"
            lines.append(f"| {algorithm} | {measure} | {e['seeds']} | {pct(e['geomean_ratio'])} | {interval} | "
                         f"{pct(e['min_ratio'])} … {pct(e['max_ratio'])} |")
    return "\n".join(lines)


def run_seeds(seeds: list[int], train_argv: list[str], out: str, reference: str) -> dict[int, list[dict]]:
    for flag in ("--seed", "--json"):
        if any(a == flag or a.startswith(flag + "=") for a in train_argv):
            raise ValueError(f"{flag} is set by seeds.py; leave it out of the train.py arguments")
    args = train.parser().parse_args(train_argv)
    if reference not in train.split_algorithms(args.algorithms):
        raise ValueError(f"--reference {reference} is not among --algorithms {args.algorithms}")
    os.makedirs(out, exist_ok=True)
    runs = {}
    for seed in seeds:
        path = os.path.join(out, f"seed_{seed}.json")
        if os.path.exists(path):
            with open(path) as f:
                data = json.load(f)
            if data.get("train_argv") == train_argv:
                runs[seed] = data["rows"]
                continue
        rc = train.main([*train_argv, "--seed", str(seed), "--json", path])
        if rc != 0:
            raise RuntimeError(f"train.py failed for seed {seed}")
        with open(path) as f:
            data = json.load(f)
        data["train_argv"] = train_argv  # what makes a kept JSON reusable
        with open(path, "w") as f:
            json.dump(data, f, indent=2)
        runs[seed] = data["rows"]
    return runs


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--" not in argv:
        print("seeds.py: give train.py's arguments after --", file=sys.stderr)
        return 2
    cut = argv.index("--")
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", default="0-7", help="e.g. 0-47, or 0,3,5 (default 0-7)")
    ap.add_argument("--reference", required=True, help="the algorithm each ratio divides by (e.g. ddp, ddp_adam)")
    ap.add_argument("--out", default="out/seeds", help="where each seed's JSON and summary.json go")
    opts = ap.parse_args(argv[:cut])
    try:
        seeds = parse_seeds(opts.seeds)
        runs = run_seeds(seeds, argv[cut + 1 :], opts.out, opts.reference)
        summary = summarize(runs, opts.reference)
    except ValueError as e:
        print(f"seeds.py: {e}", file=sys.stderr)
        return 2
    print(table(summary, opts.reference))
    path = os.path.join(opts.out, "summary.json")
    with open(path, "w") as f:
        json.dump({"benchmark": "seeds", "reference": opts.reference, "seeds": seeds,
                   "train_argv": argv[cut + 1 :], "summary": summary}, f, indent=2)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
