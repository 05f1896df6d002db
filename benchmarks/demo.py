"""`make demo`: four processes on this machine train the same model on the
same generated data with torch DDP and with bagua_ravnest algorithms, print a
comparison table and write a loss-against-time plot.

    python benchmarks/demo.py --world-size 4 --out out
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import plot  # noqa: E402
import train  # noqa: E402

DEMO_ALGORITHMS = "ddp,gradient_allreduce,gradient_allreduce:allreduce=inner"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--world-size", type=int, default=4)
    ap.add_argument("--algorithms", default=DEMO_ALGORITHMS)
    ap.add_argument("--model", choices=["mlp", "convnet"], default="mlp")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--out", default="out")
    opts = ap.parse_args(argv)

    args = train.parser().parse_args(
        ["--world-size", str(opts.world_size), "--algorithms", opts.algorithms, "--model", opts.model,
         "--steps", str(opts.steps)]
    )
    print(f"training a {args.model} on {args.world_size} processes, {args.steps} steps per algorithm, "
          f"batch {args.batch_size} per rank, algorithms taking turns in {args.rounds} rounds ...")
    rows = train.run(args)
    print()
    train.print_table(rows)
    os.makedirs(opts.out, exist_ok=True)
    train.write_json(os.path.join(opts.out, "demo.json"), rows, args)
    png = plot.plot_loss_vs_time(rows, os.path.join(opts.out, "demo_loss.png"),
                                 title=f"{args.model}, {args.world_size} ranks: loss against training time")
    print(f"wrote {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
