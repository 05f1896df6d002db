"""`make bench`: every algorithm against torch DDP and its relaxations, in
four parts, each regenerating its own section of docs/benchmarks.md
(between its markers) and its pictures:

- matrix: the all-reduce at 16 MiB and a convnet training run where all
  algorithms take turns, on loopback, uniform 1 Gbit/s, uniform 100 Mbit/s
  and heterogeneous 1000/1000/100/20 Mbit/s; world 4, batch 8 per rank,
  1 MiB buckets; time to target is to a 5-step mean loss of 1.0;
- realdata: the real-data task (charlm, benchmarks/charlm.py), every
  algorithm, world 4, 120 steps, on 100 Mbit/s: held-out loss at equal
  samples and time to a held-out target;
- adam: qadam and onebit_adam with their defaults and a 4-step warm-up
  against exact Adam (ddp_adam), on charlm and the convnet, world 2 and 4,
  loopback (the loss of a synchronous algorithm does not depend on the
  network);
- pipeline: the asynchronous pipeline against torch's GPipe and 1F1B on
  charlm as an nn.Sequential (benchmarks/pipeline.py): world 2 on loopback
  and world 4 on 100 Mbit/s links, balanced and with one stage at half a
  core;
- ravnest: Ravnest (2 clusters × 2 stages of charlm, averaged across
  clusters) against its synchronous analogue (torch's 1F1B per cluster,
  gradients all-reduced across clusters every step) and torch DDP, on
  uniform 100 Mbit/s and heterogeneous 1000/1000/100/20 Mbit/s; and a
  wider charlm under a per-rank memory limit that DDP cannot train in.

    python benchmarks/bench.py                 # everything, needs root, about 75 min
    python benchmarks/bench.py --parts adam    # the Adam family only, about 3 min, no root needed
    python benchmarks/bench.py --quick --docs /tmp/b.md   # plumbing check, ~2 min
    python benchmarks/bench.py --render        # docs sections again from out/bench's JSON
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import collectives  # noqa: E402
import pipeline  # noqa: E402
import plot  # noqa: E402
import report  # noqa: E402
import train  # noqa: E402

import bagua_ravnest  # noqa: E402

PARTS = ("matrix", "realdata", "adam", "pipeline", "ravnest")
# Each part's section of the docs lies between its two markers.
MARKERS = {part: (f"<!-- make bench{'' if part == 'matrix' else ' ' + part}: begin -->",
                  f"<!-- make bench{'' if part == 'matrix' else ' ' + part}: end -->") for part in PARTS}
HEADINGS = {"matrix": "Standard matrix", "realdata": "Real data: every algorithm on charlm",
            "adam": "The Adam family on a short warm-up",
            "pipeline": "Pipelines: async against torch's GPipe and 1F1B",
            "ravnest": "Ravnest: clusters of pipelines against 1F1B with all-reduce, and DDP"}
# (network, steps): fewer steps where a step takes seconds, but enough for
# DDP to reach the target loss everywhere (about 11 steps).
FULL = [(None, 30), ("1000", 24), ("100", 18), ("1000,1000,100,20", 16)]
# qadam and onebit_adam: 4 exact-Adam steps (left out of their speed
# figures), then compressed; lr 1e-3. They also run with precondition=true,
# which keeps them stable after so short a warm-up (docs/qadam.md).
ADAM = ["--adam-lr", "1e-3", "--adam-warmup-steps", "4"]
PRECONDITIONED = ["qadam:precondition=true", "onebit_adam:precondition=true"]
# Options of a registered algorithm that change how it communicates, run
# beside it in the matrix.
VARIANTS = [*PRECONDITIONED, "gradient_allreduce:allreduce=multi_ring"]
QUICK = [(None, 6), ("200", 6)]
# The real-data task: (bandwidth, steps, held-out target). 120 steps of
# batch 8 take DDP's held-out loss from 5.5 to about 2.4 nats per byte.
REALDATA = ("100", 120, 2.7)
REALDATA_QUICK = (None, 6, 5.0)
# The Adam family against exact Adam: (model, world, steps), loopback.
ADAM_FAMILY = "ddp_adam,qadam,onebit_adam"
ADAM_RUNS = [("charlm", 2, 120), ("charlm", 4, 120), ("convnet", 2, 100), ("convnet", 4, 100)]
ADAM_QUICK = [("charlm", 2, 6)]
# Pipeline schedules on charlm as an nn.Sequential: (world, bandwidth, slow
# stage, steps). World 2 on loopback (a core per stage: idle time is
# real); world 4 over 100 Mbit/s links (four stages share two cores, so
# without a network one stage's bubble is filled by another's compute).
# Three interleaved rounds per case: single runs of the same schedule
# differ by up to 20% on this machine.
PIPELINE_CASES = [(2, None, None, 60, 3), (2, None, 1, 60, 3), (4, "100", None, 40, 3), (4, "100", 3, 40, 3)]
PIPELINE_QUICK = [(2, None, None, 6, 1)]
# (network, steps, rounds, per-rank memory budget in MiB, model options).
# The memory case: charlm 8 blocks wide (about 100M parameters, 0.4 GB of
# weights; with Adam a DDP rank needs about 2.5 GB, a Ravnest stage about
# 1.8 GB) under 2200 MiB per rank.
WIDE = ["--width", "1024", "--blocks", "8", "--context", "16", "--micro-batch-size", "2", "--held-out-windows", "16",
        "--eval-points", "2", "--warmup-steps", "2"]
# The plans case: the cluster planner's plan against Ravnest's own for the
# heterogeneous network's nodes, each holding 0.6 of the model.
RAVNEST_CASES = [("100", 30, 3, None, []), ("1000,1000,100,20", 30, 3, None, []), (None, 10, 1, 2200, WIDE),
                 ("1000,1000,100,20", 30, 3, None, ["--plans"])]
RAVNEST_QUICK = [(None, 4, 1, None, ["--eval-points", "2"])]


def horovod_available() -> bool:
    try:
        import horovod.torch  # noqa: F401
    except ImportError:
        return False
    return True


def algorithms() -> str:
    """Every baseline and every bagua_ravnest algorithm; Horovod when it has
    been built (`make horovod`, about 20 minutes once)."""
    baselines = [b for b in train.BASELINES if b != "horovod" or horovod_available()]
    if "horovod" not in baselines:
        print("bench: Horovod is not installed, its rows are left out (build it with `make horovod`)")
    return ",".join(baselines + bagua_ravnest.algorithm_names() + VARIANTS)


def _network_tag(bandwidth) -> str:
    return "loopback" if bandwidth is None else bandwidth.replace(",", "-") + "mbit"


def _json_paths(bandwidth, args) -> tuple[str, str]:
    tag = _network_tag(bandwidth)
    return os.path.join(args.out, f"collectives_{tag}.json"), os.path.join(args.out, f"train_{tag}.json")


def load_network(bandwidth, args) -> tuple[dict, dict]:
    coll_json, train_json = _json_paths(bandwidth, args)
    with open(coll_json) as f, open(train_json) as g:
        return json.load(f), json.load(g)


def run_network(bandwidth, steps, args) -> tuple[dict, dict]:
    coll_json, train_json = _json_paths(bandwidth, args)
    net = [] if bandwidth is None else ["--bandwidth-mbit", bandwidth]
    collectives.main(["--world-size", str(args.world_size), "--sizes", args.sizes, "--iters", "10",
                      "--json", coll_json, *net])
    _train(train_json, args, args.model, args.world_size, args.batch_size, args.algorithms, steps,
           min(4, steps - 1), ["--target-loss", str(args.target_loss), *net])
    return load_network(bandwidth, args)


def _train(json_path: str, args, model: str, world: int, batch: int, algorithms: str, steps: int, rounds: int,
           extra: list[str]) -> None:
    """One train.py run with what every part shares: the first steps (at most
    3) left out of speed, the bucket cap, the Adam family's schedule."""
    train.main(["--world-size", str(world), "--model", model, "--batch-size", str(batch),
                "--algorithms", algorithms, "--steps", str(steps), "--warmup-steps", str(min(3, steps - 1)),
                "--rounds", str(rounds), "--quiet", "--bucket-cap-mb", str(args.bucket_cap_mb), *ADAM,
                "--json", json_path, *extra])


def _load(path: str) -> dict:
    with open(path) as f:
        return json.load(f)


def realdata_json(args) -> str:
    return os.path.join(args.out, f"realdata_{_network_tag(args.realdata[0])}.json")


def run_realdata(args) -> dict:
    bandwidth, steps, target = args.realdata
    net = [] if bandwidth is None else ["--bandwidth-mbit", bandwidth]
    _train(realdata_json(args), args, "charlm", args.world_size, 8, args.algorithms, steps, min(4, steps - 1),
           ["--eval-every", str(max(1, steps // 6)), "--target-heldout-loss", str(target), *net])
    return _load(realdata_json(args))


def adam_json(args, model: str, world: int) -> str:
    return os.path.join(args.out, f"adam_{model}_w{world}.json")


def run_adam(args, model: str, world: int, steps: int) -> dict:
    # Batch 8 per rank on both tasks; no bandwidth: only the loss is read here.
    _train(adam_json(args, model, world), args, model, world, 8, ADAM_FAMILY, steps, 1,
           ["--eval-every", str(max(1, steps // 6))])
    return _load(adam_json(args, model, world))


def pipeline_json(args, world: int, bandwidth, slow) -> str:
    tag = f"w{world}_{_network_tag(bandwidth)}" + (f"_slow{slow}" if slow is not None else "")
    return os.path.join(args.out, f"pipeline_{tag}.json")


def run_pipeline(args, world: int, bandwidth, slow, steps: int, rounds: int) -> dict:
    path = pipeline_json(args, world, bandwidth, slow)
    extra = (["--bandwidth-mbit", bandwidth] if bandwidth is not None else []) + (
        ["--slow-stage", str(slow)] if slow is not None else [])
    # async with its default bound (S in flight) and with 2S, which a slow
    # link needs to keep the stages busy (docs/pipeline.md).
    schedules = f"async,async:max_in_flight={2 * world},torch_gpipe,torch_1f1b"
    if pipeline.main(["--world-size", str(world), "--steps", str(steps), "--rounds", str(rounds), "--schedules",
                      schedules, "--json", path, *extra]) != 0:
        raise RuntimeError(f"benchmarks/pipeline.py failed for world {world}, network {bandwidth}, slow {slow}")
    return _load(path)


def ravnest_json(args, bandwidth, budget_mb, model: list[str]) -> str:
    tag = _network_tag(bandwidth) + (f"_mem{budget_mb}" if budget_mb else "") + ("_plans" if "--plans" in model else "")
    return os.path.join(args.out, f"ravnest_{tag}.json")


def run_ravnest(args, bandwidth, steps: int, rounds: int, budget_mb, model: list[str]) -> dict:
    path = ravnest_json(args, bandwidth, budget_mb, model)
    extra = (["--bandwidth-mbit", bandwidth] if bandwidth is not None else []) + (
        ["--memory-budget-mb", str(budget_mb)] if budget_mb else []) + model
    # --plans: the planners choose the clusters; otherwise 2 × 2.
    shape = [] if "--plans" in model else ["--clusters", "2"]
    if pipeline.main(["--world-size", "4", *shape, "--steps", str(steps), "--rounds", str(rounds),
                      "--json", path, *extra]) != 0:
        raise RuntimeError(f"benchmarks/pipeline.py failed for ravnest, network {bandwidth}, budget {budget_mb}")
    return _load(path)


def ravnest_section(runs: list[dict]) -> str:
    plans = [r for r in runs if r["args"].get("plans")]
    grids = [r for r in runs if not r["args"].get("plans")]
    body = [f"Machine: {report.machine_line(runs[0])}.", "", report.ravnest_table(grids), ""]
    if plans:
        body += ["The cluster planner's plan against Ravnest's own method, each run as ravnest:", "",
                 report.plans_table(plans), ""]
    return _generated("ravnest", body)


def pipeline_section(runs: list[dict]) -> str:
    return _generated("pipeline", [f"Machine: {report.machine_line(runs[0])}.", "", report.pipeline_table(runs),
                                   ""])


def _generated(part: str, body: list[str]) -> str:
    begin, end = MARKERS[part]
    return "\n".join([begin, "", "Generated by `make bench` (benchmarks/bench.py); do not edit by hand.", "",
                      *body, end])


def realdata_section(data: dict, img_dir: str, docs_dir: str) -> str:
    label = data["rows"][0]["network"]
    png = plot.plot_heldout_vs_time(data["rows"], os.path.join(img_dir, f"bench_realdata_{label}_heldout.png"),
                                    title=f"charlm, {data['rows'][0]['world_size']} ranks, {label}",
                                    dashed={r["algorithm"] for r in data["rows"] if train.uses_adam(r["algorithm"])})
    return _generated("realdata", [f"Machine: {report.machine_line(data)}. Network: {label}.", "",
                                   report.train_table(data), "",
                                   f"![charlm held-out loss, {label}]({os.path.relpath(png, docs_dir)})", ""])


def adam_section(runs: list[dict]) -> str:
    return _generated("adam", [f"Machine: {report.machine_line(runs[0])}. Loopback.", "",
                               report.adam_table(runs), ""])


def section(results, img_dir: str, docs_dir: str) -> str:
    # Bytes and time to target from uniform 100 Mbit/s where it ran: the
    # network a relaxation is for, and one where no single link decides.
    trains = [tr for _, tr in results]
    focus = next((i for i, tr in enumerate(trains) if tr["rows"][0]["network"] == "uniform-100mbit"), -1)
    parts = ["Speed against torch DDP (SGD) in the same run, per network:", "",
             report.speed_summary(trains, focus), ""]
    for coll, tr in results:
        label = tr["rows"][0]["network"]
        parts += [f"### {label}", "", f"Machine: {report.machine_line(tr)}.", "",
                  report.collectives_table(coll), "", report.train_table(tr), ""]
        for kind, fn in (("speed", plot.plot_speedup), ("loss", plot.plot_loss_vs_time)):
            png = os.path.join(img_dir, f"bench_{label}_{kind}.png")
            fn(tr["rows"], png, title=f"{label}: {kind}")
            parts.append(f"![{label} {kind}]({os.path.relpath(png, docs_dir)})")
        parts.append("")
    return _generated("matrix", parts)


def write_docs(path: str, text: str, part: str = "matrix") -> None:
    """Replaces `part`'s generated section of the page (appends it, under a
    heading of its own, where the page has none yet)."""
    begin, end = MARKERS[part]
    old = open(path).read() if os.path.exists(path) else ""
    if begin in old and end in old:
        new = re.sub(re.escape(begin) + ".*?" + re.escape(end), lambda _: text, old, flags=re.S)
    else:
        new = old.rstrip() + f"\n\n## {HEADINGS[part]}\n\n" + text + "\n"
    with open(path, "w") as f:
        f.write(new)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="two small networks, the MLP, a few steps")
    ap.add_argument("--out", default="out/bench")
    ap.add_argument("--docs", default="docs/benchmarks.md")
    ap.add_argument("--img", default=None, help="where the pictures go (default: docs/img beside --docs)")
    ap.add_argument("--render", action="store_true",
                    help="measure nothing: rebuild the docs section and pictures from the JSON in --out")
    ap.add_argument("--parts", default=",".join(PARTS),
                    help=f"comma-separated, of {', '.join(PARTS)} (default: all)")
    args = ap.parse_args(argv)
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown or not parts:
        ap.error(f"--parts: unknown {', '.join(unknown) or 'nothing'}; choose from {', '.join(PARTS)}")
    args.world_size = 2 if args.quick else 4
    args.model = "mlp" if args.quick else "convnet"
    # Batch 8 per rank: with four ranks on two cores a convnet step is mostly
    # compute at batch 16 (about 420 ms), which hides what the network costs.
    args.batch_size = 32 if args.quick else 8
    # 1 MiB buckets for every algorithm, torch DDP included: compressed
    # all-reduces overlap backward better with small buckets, and DDP is no
    # slower with them (docs/benchmarks.md).
    args.bucket_cap_mb = 1
    args.sizes = "1M" if args.quick else "16M"
    args.target_loss = 2.25 if args.quick else 1.0
    args.algorithms = algorithms()
    matrix = QUICK if args.quick else FULL
    os.makedirs(args.out, exist_ok=True)
    docs_dir = os.path.dirname(os.path.abspath(args.docs))
    img_dir = args.img or os.path.join(docs_dir, "img")
    os.makedirs(img_dir, exist_ok=True)
    args.realdata = REALDATA_QUICK if args.quick else REALDATA
    if "matrix" in parts:
        results = [load_network(bw, args) if args.render else run_network(bw, steps, args) for bw, steps in matrix]
        write_docs(args.docs, section(results, img_dir, docs_dir))
    if "realdata" in parts:
        data = _load(realdata_json(args)) if args.render else run_realdata(args)
        write_docs(args.docs, realdata_section(data, img_dir, docs_dir), "realdata")
    if "adam" in parts:
        runs = [_load(adam_json(args, m, w)) if args.render else run_adam(args, m, w, steps)
                for m, w, steps in (ADAM_QUICK if args.quick else ADAM_RUNS)]
        write_docs(args.docs, adam_section(runs), "adam")
    if "pipeline" in parts:
        runs = [_load(pipeline_json(args, w, bw, slow)) if args.render else
                run_pipeline(args, w, bw, slow, steps, rounds)
                for w, bw, slow, steps, rounds in (PIPELINE_QUICK if args.quick else PIPELINE_CASES)]
        write_docs(args.docs, pipeline_section(runs), "pipeline")
    if "ravnest" in parts:
        runs = [_load(ravnest_json(args, bw, budget, model)) if args.render else
                run_ravnest(args, bw, steps, rounds, budget, model)
                for bw, steps, rounds, budget, model in (RAVNEST_QUICK if args.quick else RAVNEST_CASES)]
        write_docs(args.docs, ravnest_section(runs), "ravnest")
    print(f"updated {args.docs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
