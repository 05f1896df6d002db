"""The cluster planner on the command line (docs/planner.md).

    python -m bagua_ravnest.plan --nodes nodes.json --profile profile.json [--json plan.json]
    torchrun --nnodes ... -m bagua_ravnest.plan --measure-nodes nodes.json [--profile profile.json]

nodes.json: [{"name": "n0", "memory_gb": 8, "compute": 2.0, "bandwidth_mbit": 1000}, ...]
    (compute: relative speed; 2.0 runs a layer in half the profiled time)
profile.json: {"layers": [{"param_bytes": ..., "activation_bytes_per_sample": ...,
    "compute_s_per_sample": ...}, ...]}  (bagua_ravnest.pipeline.profile writes it)

The plan is printed in words with Ravnest's own method (a genetic algorithm
on memory and bandwidth, equal splits) beside it for comparison; --json
writes both. --measure-nodes, run on every rank under torchrun, measures
each rank's compute (a fixed workload, relative to the profile's machine
when --profile is given, else to rank 0), memory (what is available, shared
among the host's ranks, unless --memory-gb) and link rate (the backend's
probe), and writes nodes.json on rank 0.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys

NODE_KEYS = ("name", "memory_gb", "compute", "bandwidth_mbit")
LAYER_KEYS = ("param_bytes", "activation_bytes_per_sample", "compute_s_per_sample")


def _load(path: str, what: str):
    try:
        with open(path) as f:
            return json.load(f)
    except OSError as e:
        raise SystemExit(f"plan: cannot read {what} {path!r}: {e.strerror}")
    except json.JSONDecodeError as e:
        raise SystemExit(f"plan: {what} {path!r} is not JSON: {e}")


def load_nodes(path: str) -> list[dict]:
    nodes = _load(path, "nodes file")
    if not isinstance(nodes, list) or not nodes:
        raise SystemExit(f"plan: {path!r} must hold a non-empty list of nodes, each {{{', '.join(NODE_KEYS)}}}")
    for i, n in enumerate(nodes):
        missing = [k for k in NODE_KEYS if not isinstance(n, dict) or k not in n]
        if missing:
            raise SystemExit(f"plan: node {i} of {path!r} has no {', '.join(missing)}; each node needs "
                             f"{', '.join(NODE_KEYS)}")
    return nodes


def load_profile(path: str) -> dict:
    profile = _load(path, "profile")
    layers = profile.get("layers") if isinstance(profile, dict) else None
    if not isinstance(layers, list) or not layers:
        raise SystemExit(f"plan: {path!r} must be {{\"layers\": [...]}} with one entry per layer")
    for i, layer in enumerate(layers):
        missing = [k for k in LAYER_KEYS if not isinstance(layer, dict) or k not in layer]
        if missing:
            raise SystemExit(f"plan: layer {i} of {path!r} has no {', '.join(missing)}")
    return profile


def make_plans(nodes: list[dict], profile: dict, micro_batch: int, optimizer_state_factor: float,
               max_clusters: int = 0) -> dict:
    """Our plan and Ravnest's on the same inputs, as dicts."""
    from . import _C

    layers = [{k: float(layer[k]) for k in LAYER_KEYS} for layer in profile["layers"]]
    args = (nodes, layers, micro_batch, optimizer_state_factor, max_clusters)
    return {"plan": _C.plan_clusters(*args, method="bagua"), "ravnest": _C.plan_clusters(*args, method="ravnest")}


def _available_memory_gb() -> float:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024 / 1e9
    raise RuntimeError("no MemAvailable in /proc/meminfo")


def measure_nodes(path: str, profile_path: str | None, memory_gb: float | None) -> None:
    import torch.distributed as dist

    import bagua_ravnest
    from bagua_ravnest.pipeline import calibration_seconds

    # The multi-ring set-up probes every rank's link as the group is made.
    dist.init_process_group("bagua", pg_options=bagua_ravnest.BackendOptions(allreduce="multi_ring", link_mbit=""))
    try:
        rank, world = dist.get_rank(), dist.get_world_size()
        backend = dist.group.WORLD._get_backend(__import__("torch").device("cpu"))
        rates = list(backend.link_mbit) or [0.0] * world
        local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        mine = {
            "name": f"rank{rank}@{socket.gethostname()}",
            "memory_gb": memory_gb if memory_gb else _available_memory_gb() / local,
            "calibration_s": calibration_seconds(),
            "bandwidth_mbit": rates[rank] if world > 1 else 10000.0,
        }
        everyone = [None] * world
        dist.all_gather_object(everyone, mine)
        if rank == 0:
            reference = load_profile(profile_path).get("calibration_s") if profile_path else None
            reference = reference or everyone[0]["calibration_s"]
            nodes = [{"name": n["name"], "memory_gb": round(n["memory_gb"], 3),
                      "compute": round(reference / n["calibration_s"], 3), "bandwidth_mbit": round(n["bandwidth_mbit"], 1)}
                     for n in everyone]
            with open(path, "w") as f:
                json.dump(nodes, f, indent=2)
            print(f"wrote {path}: {len(nodes)} nodes")
        # Everyone leaves together. (Once, in a full test run, rank 0's
        # teardown hung after rank 1 had left while rank 0 wrote the file.)
        dist.barrier()
    finally:
        dist.destroy_process_group()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bagua_ravnest.plan", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nodes", help="nodes.json to plan for")
    ap.add_argument("--profile", help="profile.json of the model")
    ap.add_argument("--micro-batch", type=int, default=8, help="samples per micro-batch (default 8)")
    ap.add_argument("--optimizer-state-factor", type=float, default=2.0,
                    help="optimizer state per byte of weights: 2 for Adam (default), 1 for SGD with momentum")
    ap.add_argument("--max-clusters", type=int, default=0, help="at most this many clusters (default: any)")
    ap.add_argument("--json", dest="json_path", help="write our plan and Ravnest's here")
    ap.add_argument("--measure-nodes", metavar="OUT", help="(under torchrun) measure every rank and write nodes.json")
    ap.add_argument("--memory-gb", type=float, help="with --measure-nodes: each rank's memory budget")
    args = ap.parse_args(argv)
    if args.measure_nodes:
        measure_nodes(args.measure_nodes, args.profile, args.memory_gb)
        return 0
    if not args.nodes or not args.profile:
        ap.error("give --nodes and --profile (or --measure-nodes under torchrun)")
    from . import _C  # noqa: F401  (loads the extension; its errors are bagua errors)
    import bagua_ravnest

    try:
        plans = make_plans(load_nodes(args.nodes), load_profile(args.profile), args.micro_batch,
                           args.optimizer_state_factor, args.max_clusters)
    except bagua_ravnest.BaguaError as e:
        print(f"plan: {e}", file=sys.stderr)
        return 2
    print(plans["plan"]["explanation"], end="")
    print()
    print(plans["ravnest"]["explanation"], end="")
    ours, theirs = plans["plan"]["samples_per_s"], plans["ravnest"]["samples_per_s"]
    if plans["ravnest"]["fits"]:
        print(f"\npredicted: ours {ours:.1f} samples/s, Ravnest's {theirs:.1f} (ours {ours / theirs:.2f}x as fast)")
    else:
        print(f"\npredicted: ours {ours:.1f} samples/s; Ravnest's plan does not fit its nodes' memory")
    if args.json_path:
        with open(args.json_path, "w") as f:
            json.dump(plans, f, indent=2)
        print(f"wrote {args.json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
