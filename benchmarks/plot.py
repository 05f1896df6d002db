"""Pictures from the benchmark JSON files.

    python benchmarks/plot.py out/train.json --out out/

Writes <name>_loss.png (training loss against each algorithm's training time)
and <name>_speed.png (samples/s relative to torch DDP in the same run).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import matplotlib

matplotlib.use("Agg")  # files only; no display needed
import matplotlib.pyplot as plt  # noqa: E402


def plot_loss_vs_time(rows: list[dict], path: str, title: str = "") -> str:
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for r in rows:
        curve = r["curve"]
        ax.plot(curve["seconds"], curve["loss"], label=r["algorithm"], linewidth=1.4)
    ax.set_xlabel("training time (s, slowest rank)")
    ax.set_ylabel("training loss (mean over ranks)")
    ax.set_title(title or f"{rows[0]['model']}, {rows[0]['world_size']} ranks")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_heldout_vs_time(rows: list[dict], path: str, title: str = "", dashed=frozenset()) -> str:
    """Held-out loss against each algorithm's training time; the algorithms
    named in `dashed` are drawn dashed (the demo's Adam family)."""
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    # The default cycle has 10 colours; a run of every algorithm has more.
    colours = plt.cm.tab20.colors if len(rows) > 10 else plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, r in enumerate(rows):
        curve = r["heldout_curve"]
        ax.plot(curve["seconds"], curve["loss"], label=r["algorithm"], linewidth=1.4, marker=".",
                color=colours[i % len(colours)], linestyle="--" if r["algorithm"] in dashed else "-")
    ax.set_xlabel("training time (s, slowest rank)")
    ax.set_ylabel("held-out loss (mean over ranks)")
    ax.set_title(title or f"{rows[0]['model']}, {rows[0]['world_size']} ranks")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_speedup(rows: list[dict], path: str, title: str = "") -> str:
    named = [r for r in rows if r.get("speedup_vs_ddp") is not None]
    fig, ax = plt.subplots(figsize=(7, 0.6 * len(named) + 1.5))
    labels = [r["algorithm"] + (f" [{r['network']}]" if r.get("network") else "") for r in named]
    ax.barh(labels, [r["speedup_vs_ddp"] for r in named], color="#4477aa")
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_xlabel("samples/s relative to torch DDP (same run)")
    ax.set_title(title or "speed against torch DDP")
    ax.invert_yaxis()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("json_files", nargs="+")
    ap.add_argument("--out", default="out")
    args = ap.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    for path in args.json_files:
        with open(path) as f:
            data = json.load(f)
        if data.get("benchmark") != "train":
            print(f"skipping {path}: not a train benchmark")
            continue
        stem = os.path.join(args.out, os.path.splitext(os.path.basename(path))[0])
        print(plot_loss_vs_time(data["rows"], stem + "_loss.png"))
        print(plot_speedup(data["rows"], stem + "_speed.png"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
