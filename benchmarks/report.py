"""Markdown tables from benchmark JSON files, for docs/benchmarks.md.

    python benchmarks/report.py out/collectives.json out/train.json
"""

from __future__ import annotations

import json
import sys


def collectives_table(data: dict) -> str:
    rows = data["rows"]
    lines = ["| bytes | impl | seconds (median) | algbw GB/s | busbw GB/s |", "|---:|---|---:|---:|---:|"]
    for r in sorted(rows, key=lambda r: (r["bytes"], r["impl"])):
        lines.append(f"| {r['bytes']:,} | {r['impl']} | {r['seconds']:.5f} | {r['algbw_GBps']:.3f} | {r['busbw_GBps']:.3f} |")
    return "\n".join(lines)


def train_table(data: dict) -> str:
    shaped = any(r.get("network", "loopback") != "loopback" for r in data["rows"])
    target = data.get("config", {}).get("target_loss")
    head = "| algorithm | samples/s | step ms (median) | timed steps | final loss | speed vs ddp |"
    rule = "|---|---:|---:|---:|---:|---:|"
    if target is not None:
        head += f" time to loss {target:g} (s) |"
        rule += "---:|"
    if shaped:
        head += " network | MB sent per rank per step |"
        rule += "---|---:|"
    held_target = data.get("config", {}).get("target_heldout_loss")
    held = all("heldout_loss" in r for r in data["rows"]) and held_target is not None
    # The replicas' mean, where some row's replicas differ at the end.
    of_mean = held and all(r.get("heldout_loss_of_mean") is not None for r in data["rows"]) and any(
        abs(r["heldout_loss_of_mean"] - r["heldout_loss"]) > 5e-5 for r in data["rows"])
    if held:
        head += f" held-out loss | time to held-out {held_target:g} (s) |"
        rule += "---:|---:|"
    if of_mean:
        head += " held-out loss of the replicas' mean |"
        rule += "---:|"
    lines = [head, rule]
    for r in data["rows"]:
        speed = f"{r['speedup_vs_ddp']:.2f}x" if r.get("speedup_vs_ddp") else "-"
        line = (f"| {r['algorithm']} | {r['samples_per_s']:.1f} | {r['step_ms_median']:.2f} | "
                f"{r.get('timed_steps', '-')} | {r['final_loss']:.4g} | {speed} |")
        if target is not None:
            reached = r.get("time_to_target_s")
            line += f" {reached:.2f} |" if reached is not None else " not reached |"
        if shaped:
            line += f" {r['network']} | {r['bytes_sent_per_step'] / 1e6:.2f} |"
        if held:
            reached = r.get("time_to_target_heldout_s")
            line += f" {r['heldout_loss']:.4f} | " + (f"{reached:.2f} |" if reached is not None else "not reached |")
        if of_mean:
            line += f" {r['heldout_loss_of_mean']:.4f} |"
        lines.append(line)
    return "\n".join(lines)


def speed_summary(runs: list[dict], focus: int = -1) -> str:
    """One line per algorithm: its speed against torch DDP on each network
    of `runs` (train JSONs, one network each), and from runs[focus] its
    bytes per step, time to the target loss and final loss."""
    chosen = runs[focus]
    labels = [data["rows"][0]["network"] for data in runs]
    where = chosen["rows"][0]["network"]
    target = chosen.get("config", {}).get("target_loss")
    head = "| algorithm | " + " | ".join(labels) + f" | MB per rank and step ({where}) |"
    rule = "|---|" + "---:|" * (len(labels) + 1)
    if target is not None:
        head += f" time to loss {target:g} ({where}, s) | final loss ({where}) |"
        rule += "---:|---:|"
    lines = [head, rule]
    for r in chosen["rows"]:
        speeds = []
        for data in runs:
            same = next((x for x in data["rows"] if x["algorithm"] == r["algorithm"]), None)
            speeds.append(f"{same['speedup_vs_ddp']:.2f}x" if same and same.get("speedup_vs_ddp") else "-")
        line = f"| {r['algorithm']} | " + " | ".join(speeds) + f" | {r['bytes_sent_per_step'] / 1e6:.2f} |"
        if target is not None:
            reached = r.get("time_to_target_s")
            line += (f" {reached:.1f} |" if reached is not None else " not reached |") + f" {r['final_loss']:.4g} |"
        lines.append(line)
    return "\n".join(lines)


def adam_table(runs: list[dict]) -> str:
    """Held-out loss of the Adam family against exact Adam (ddp_adam) of the
    same run, one line per task, world size and algorithm."""
    lines = ["| task | world | algorithm | steps | held-out loss | vs ddp_adam | held-out at the first evaluation |",
             "|---|---:|---|---:|---:|---:|---:|"]
    for data in runs:
        rows = data["rows"]
        exact = next(r for r in rows if r["algorithm"] == "ddp_adam")["heldout_loss"]
        for r in rows:
            gap = "—" if r["algorithm"] == "ddp_adam" else f"{100 * (r['heldout_loss'] / exact - 1):+.1f}%"
            first = r["heldout_curve"]
            lines.append(f"| {r['model']} | {r['world_size']} | {r['algorithm']} | {r['steps']} | "
                         f"{r['heldout_loss']:.4f} | {gap} | {first['loss'][0]:.4f} (step {first['steps'][0]}) |")
    return "\n".join(lines)


def pipeline_table(runs: list[dict]) -> str:
    """One line per case and schedule of benchmarks/pipeline.py: speed and
    held-out loss against torch's schedules of the same run."""
    lines = ["| stages | network | slow stage | schedule | samples/s (median; range over rounds) | step ms | vs torch_gpipe | vs torch_1f1b | "
             "held-out loss | vs torch_1f1b | peak RSS per stage (MiB) | cores used per stage |",
             "|---:|---|---|---|---:|---:|---:|---:|---:|---:|---|---|"]
    for data in runs:
        for r in data["rows"]:
            slow = f"{r['slow_stage']['stage']} at {r['slow_stage']['cpu']:g} core" if r.get("slow_stage") else "—"
            speed = [f"×{r[k]:.2f}" if k in r else "—" for k in ("speed_vs_torch_gpipe", "speed_vs_torch_1f1b")]
            held = f"{100 * (r['held_out_vs_torch_1f1b'] - 1):+.1f}%" if "held_out_vs_torch_1f1b" in r else "—"
            rss = " / ".join(f"{b / 2**20:.0f}" for b in r["peak_memory_bytes"])
            rounds = r.get("samples_per_s_rounds") or [r["samples_per_s"]]
            speed_cell = f"{r['samples_per_s']:.1f}" + (f" ({min(rounds):.0f}–{max(rounds):.0f})" if len(rounds) > 1 else "")
            cores = " / ".join(f"{c:.2f}" for c in r["cpu_cores"]) if r.get("cpu_cores") else "—"
            lines.append(f"| {r['world_size']} | {r['network']} | {slow} | {r['schedule']} | {speed_cell} | "
                         f"{r['step_ms_median']:.1f} | {speed[0]} | {speed[1]} | {r['held_out_loss']:.4f} | {held} | "
                         f"{rss} | {cores} |")
    return "\n".join(lines)


def ravnest_table(runs: list[dict]) -> str:
    """One line per case and schedule of benchmarks/pipeline.py --clusters:
    speed and held-out loss against the synchronous analogue and DDP of the
    same run; a schedule that could not run says why."""
    lines = ["| clusters × stages | network | memory per rank | schedule | samples/s (median; range over rounds) | "
             "step ms | vs sync_1f1b | vs ddp | held-out loss | vs sync_1f1b | peak RSS per rank (MiB) | "
             "waited for averaging (s, per rank) |",
             "|---|---|---|---|---:|---:|---:|---:|---:|---:|---|---|"]
    for data in runs:
        for r in data["rows"]:
            shape = f"{r['clusters']} × {r['stages']}"
            budget = f"{r['memory_budget_mb']} MiB" if r.get("memory_budget_mb") else "—"
            if "failed" in r:
                lines.append(f"| {shape} | {r['network']} | {budget} | {r['schedule']} | failed: {r['failed']} | "
                             "| | | | | | |")
                continue
            speed = [f"×{r[k]:.2f}" if k in r else "—" for k in ("speed_vs_sync_1f1b", "speed_vs_ddp")]
            held = f"{100 * (r['held_out_vs_sync_1f1b'] - 1):+.1f}%" if "held_out_vs_sync_1f1b" in r else "—"
            rounds = [v for v in (r.get("samples_per_s_rounds") or [r["samples_per_s"]]) if v is not None]
            speed_cell = f"{r['samples_per_s']:.1f}" + (f" ({min(rounds):.0f}–{max(rounds):.0f})" if len(rounds) > 1 else "")
            rss = " / ".join(f"{b / 2**20:.0f}" for b in r["peak_memory_bytes"])
            waits = r.get("averaging_wait_s") or []
            wait = " / ".join(f"{w:.1f}" for w in waits) if any(w is not None for w in waits) else "—"
            lines.append(f"| {shape} | {r['network']} | {budget} | {r['schedule']} | {speed_cell} | "
                         f"{r['step_ms_median']:.1f} | {speed[0]} | {speed[1]} | {r['held_out_loss']:.4f} | {held} | "
                         f"{rss} | {wait} |")
    return "\n".join(lines)


def plans_table(runs: list[dict]) -> str:
    """One line per plan of benchmarks/pipeline.py --plans: its layout, the
    speed it predicts and the speed measured."""
    lines = ["| network | plan | layout | predicted samples/s | measured samples/s (median; range) | measured / predicted "
             "| vs Ravnest's plan | held-out loss |", "|---|---|---|---:|---:|---:|---:|---:|"]
    for data in runs:
        for r in data["rows"]:
            rounds = [v for v in (r.get("samples_per_s_rounds") or [r["samples_per_s"]]) if v is not None]
            speed = f"{r['samples_per_s']:.1f}" + (f" ({min(rounds):.0f}–{max(rounds):.0f})" if len(rounds) > 1 else "")
            name = {"plan:bagua": "ours", "plan:ravnest": "Ravnest's (GA, equal splits)"}.get(r["schedule"], r["schedule"])
            vs = f"×{r['speed_vs_plan:ravnest']:.2f}" if "speed_vs_plan:ravnest" in r else "—"
            layout = "; ".join(line.strip() for line in r["layout"].splitlines()[1:])
            lines.append(f"| {r['network']} | {name} | {r.get('shape', '')}: {layout} | {r['predicted_samples_per_s']:.1f} | "
                         f"{speed} | {r['samples_per_s'] / r['predicted_samples_per_s']:.2f} | {vs} | "
                         f"{r['held_out_loss']:.4f} |")
    return "\n".join(lines)


def machine_line(data: dict) -> str:
    m = data["machine"]
    line = f"{m['cpu']}, {m['cores']} cores, torch {m['torch']}, Python {m['python']}"
    # Training runs say how their ranks allocated (benchmarks/allocator.py);
    # runs from before the option kept glibc's defaults.
    malloc = data.get("config", {}).get("malloc", "system") if data.get("benchmark") == "train" else None
    return line if malloc is None else f"{line}; training ranks' malloc: {malloc}"


def main(argv=None) -> int:
    for path in (argv if argv is not None else sys.argv[1:]):
        with open(path) as f:
            data = json.load(f)
        render = {"collectives": collectives_table, "train": train_table}[data["benchmark"]]
        print(f"<!-- {path}; {machine_line(data)} -->\n{render(data)}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
