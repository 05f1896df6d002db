"""`make demo`: what the project is for, in about three minutes. Four
processes train the same model on the same data with torch DDP and with
every relaxation bagua_ravnest has (each registered algorithm with its
default options, so algorithms added later join by themselves), over an
emulated 100 Mbit/s network when run as root (network namespaces and tc, as
`make bench` does), else over loopback. Prints a table (speed against torch
DDP, bytes on the wire per step, held-out loss, and that of the replicas'
mean) and writes out/demo.json and
out/demo_heldout.png (held-out loss against training time).

    python benchmarks/demo.py --world-size 4 --out out

The Adam family (qadam, onebit_adam) is measured against torch DDP with
torch.optim.Adam (`ddp_adam`), the others against torch DDP with SGD.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import bagua_ravnest  # noqa: E402
import plot  # noqa: E402
import train  # noqa: E402
from netem.cluster import NetemUnavailable, check_available  # noqa: E402

# The convnet: on two cores the character model is compute-bound (a
# relaxation saves little of a step there) and learns little in a few
# dozen steps; the convnet moves 8 MB of gradients a step, which a 100
# Mbit/s link feels.
DEFAULT_MODEL = "convnet"


def demo_algorithms() -> list[str]:
    return ["ddp", "ddp_adam"] + list(bagua_ravnest.algorithm_names())


def print_table(rows: list[dict]) -> None:
    adam = {r["algorithm"] for r in rows if train.uses_adam(r["algorithm"])}
    base = {r["algorithm"]: r for r in rows}
    # Held-out loss: the mean of the replicas' losses, and the loss of the
    # replicas' mean (average_replicas()), which differ where replicas do.
    width = max([len("algorithm")] + [len(r["algorithm"]) for r in rows])
    print(f"{'algorithm':<{width}} {'optimizer':<9} {'samples/s':>10} {'vs DDP':>8} {'MB/step':>9} {'held-out loss':>14} "
          f"{'of the mean':>12}")
    for r in rows:
        # The yardstick is torch DDP with the same optimizer, when it ran.
        ref = base.get("ddp_adam" if r["algorithm"] in adam else "ddp")
        speed = f"{r['samples_per_s'] / ref['samples_per_s']:>7.2f}x" if ref else f"{'-':>8}"
        print(f"{r['algorithm']:<{width}} {'Adam' if r['algorithm'] in adam else 'SGD':<9} {r['samples_per_s']:>10.1f} "
              f"{speed} {r['bytes_sent_per_step'] / 1e6:>9.2f} {r['heldout_loss']:>14.4f} "
              f"{_loss(r.get('heldout_loss_of_mean')):>12}")


def _loss(value) -> str:
    return "-" if value is None else f"{value:.4f}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--world-size", type=int, default=4)
    ap.add_argument("--algorithms", default=None, help="default: ddp, ddp_adam and every registered algorithm")
    ap.add_argument("--model", choices=train.MODELS, default=DEFAULT_MODEL)
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--bandwidth-mbit", default="100", help="the emulated link rate when run as root")
    ap.add_argument("--out", default="out")
    opts = ap.parse_args(argv)

    bandwidth = opts.bandwidth_mbit
    try:
        check_available()
    except NetemUnavailable as e:
        print(f"demo: not root, so no emulated slow network ({e}); training over loopback instead")
        bandwidth = None
    algorithms = opts.algorithms or ",".join(demo_algorithms())
    net = [] if bandwidth is None else ["--bandwidth-mbit", bandwidth]
    args = train.parser().parse_args(
        ["--world-size", str(opts.world_size), "--algorithms", algorithms, "--model", opts.model,
         "--steps", str(opts.steps), "--warmup-steps", "3", "--rounds", "3", "--batch-size", "8",
         "--bucket-cap-mb", "1", "--adam-warmup-steps", "4", "--eval-every", "4", "--quiet", *net]
    )
    where = "loopback" if bandwidth is None else f"an emulated {bandwidth} Mbit/s network"
    print(f"training a {args.model} on {args.world_size} processes over {where}, {args.steps} steps per algorithm, "
          f"batch {args.batch_size} per rank: {', '.join(train.split_algorithms(algorithms))} ...", flush=True)
    rows = train.run(args)
    print()
    print_table(rows)
    os.makedirs(opts.out, exist_ok=True)
    train.write_json(os.path.join(opts.out, "demo.json"), rows, args)
    png = plot.plot_heldout_vs_time(rows, os.path.join(opts.out, "demo_heldout.png"),
                                    title=f"{args.model}, {args.world_size} ranks, {where}",
                                    dashed={r["algorithm"] for r in rows if train.uses_adam(r["algorithm"])})
    print(f"wrote {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
