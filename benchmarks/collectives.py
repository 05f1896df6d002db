"""All-reduce bandwidth of our ring and our compressed all-reduces against
Gloo's, in the same processes.

    python benchmarks/collectives.py --world-size 4 --sizes 4K,1M,16M,64M --json out/collectives.json
    python benchmarks/collectives.py --world-size 4 --sizes 16M --bandwidth-mbit 100 --json out/c100.json  # root

One row per (impl, size): op, impl, world_size, bytes, seconds (median over
iterations of the slowest rank's time), algbw_GBps = bytes / seconds and
busbw_GBps = algbw * 2(n-1)/n, the traffic each rank's link carries in an
uncompressed ring. The implementations take turns iteration by iteration
so that all see the same machine conditions.

impl: bagua_ring (the "bagua" backend's all-reduce), bagua_multi_ring (the
backend with allreduce="multi_ring": several rings at once, each rank's
chunk sized from its link rate, docs/multi_ring.md; the rates are measured
by the backend's probe, or with --multi-ring-rates given taken from
--bandwidth-mbit as a user would write BAGUA_LINK_MBIT), gloo, and the backend's
compressed all-reduces bagua_bytegrad (minmax_uint8), bagua_fp16 and
bagua_sign1bit (docs/codecs.md; sign1bit without error feedback, as a speed
figure only). Their algbw/busbw count the fp32 bytes reduced, so they can
exceed the link rate; wire_ratio says what fraction of those bytes they send.
tcp_ring is no all-reduce but the ceiling of one: plain TCP sockets in a
ring, each rank streaming the bytes a ring all-reduce sends, nothing else
(see _TcpRing); on a shaped network it says what the links deliver.

With --bandwidth-mbit the ranks run in an emulated cluster (one network
namespace per rank, tc-shaped links; benchmarks/netem) and every row also
carries the configured bottleneck rate and busbw_over_link = busbw / rate,
which is 1.0 at the physical limit of an uncompressed ring.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

from bagua_ravnest.launch import run_world, values  # noqa: E402
from machine import machine_info  # noqa: E402
from netem.cluster import NetemUnavailable  # noqa: E402
from netem.network import network  # noqa: E402

IMPLS = ("bagua_ring", "bagua_multi_ring", "gloo", "bagua_bytegrad", "bagua_fp16", "bagua_sign1bit", "tcp_ring")
# The compressed all-reduces of the bagua backend, by their codec.
CODEC_OF = {"bagua_bytegrad": "minmax_uint8", "bagua_fp16": "fp16", "bagua_sign1bit": "sign1bit"}


def parse_size(text: str) -> int:
    text = text.strip().upper().removesuffix("B")
    scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
    number = text[:-1] if text[-1:] in "KMG" else text
    value = int(float(number) * scale)
    if value <= 0 or value % 4:
        raise argparse.ArgumentTypeError(f"size {text!r} must be a positive multiple of 4 bytes (fp32 elements)")
    return value


class _TcpRing:
    """The network's ceiling for a ring: each rank streams the bytes a ring
    all-reduce sends (2(n-1)/n of the buffer) to its right neighbour over one
    plain TCP socket while taking as many from its left, with no steps, no
    reduction and no framing. What the shaped links and the kernel's TCP
    deliver to this pattern bounds every ring implementation."""

    def __init__(self, rank: int, world: int, address: str, group):
        self.listener = socket.create_server((address, 0))
        self.listener.settimeout(600)  # a neighbour that never connects is an error, not a hang
        ports = [None] * world
        dist.all_gather_object(ports, (address, self.listener.getsockname()[1]), group=group)
        self.out = socket.create_connection(ports[(rank + 1) % world], timeout=600)
        self.inc, _ = self.listener.accept()
        self.inc.settimeout(600)
        self.world = world

    def run(self, nbytes: int) -> None:
        n = 2 * (self.world - 1) * nbytes // self.world
        payload = memoryview(bytes(n))
        sender = threading.Thread(target=self.out.sendall, args=(payload,))
        sender.start()
        buf, got = bytearray(1 << 20), 0
        while got < n:
            k = self.inc.recv_into(buf, min(len(buf), n - got))
            if k == 0:
                raise ConnectionError("tcp_ring: the left neighbour closed its socket")
            got += k
        sender.join()

    def close(self) -> None:
        for s in (self.out, self.inc, self.listener):
            s.close()


def _bench(rank, world, sizes, iters, warmup, impls, addresses, multi_ring_rates):
    torch.set_num_threads(1)
    gloo = dist.new_group(backend="gloo")
    bagua = dist.group.WORLD._get_backend(torch.device("cpu"))
    tcp = _TcpRing(rank, world, addresses[rank], gloo) if "tcp_ring" in impls else None
    multi = plan = None
    if "bagua_multi_ring" in impls:
        from bagua_ravnest import BackendOptions

        options = BackendOptions(allreduce="multi_ring", link_mbit=multi_ring_rates or "")
        multi = dist.new_group(backend="bagua", pg_options=options)
        plan = multi._get_backend(torch.device("cpu")).multi_ring_plan

    def allreduce(impl, t):
        if impl == "tcp_ring":
            tcp.run(t.numel() * 4)
        elif impl == "gloo":
            dist.all_reduce(t, group=gloo)
        elif impl == "bagua_ring":
            dist.all_reduce(t)  # the default group, backend "bagua"
        elif impl == "bagua_multi_ring":
            dist.all_reduce(t, group=multi)
        else:
            bagua.compressed_allreduce(t, CODEC_OF[impl]).wait()

    rows = []
    for size in sizes:
        tensors = {impl: torch.randn(size // 4, generator=torch.Generator().manual_seed(rank)) for impl in impls}
        for impl in impls:
            for _ in range(warmup):
                allreduce(impl, tensors[impl])
        times = {impl: [] for impl in impls}
        for it in range(iters):
            for impl in impls if it % 2 == 0 else reversed(impls):
                dist.barrier(group=gloo)
                start = time.perf_counter()
                allreduce(impl, tensors[impl])
                times[impl].append(time.perf_counter() - start)
        for impl in impls:
            # A collective takes as long as its slowest rank.
            t = torch.tensor(times[impl], dtype=torch.float64)
            dist.all_reduce(t, op=dist.ReduceOp.MAX, group=gloo)
            seconds = statistics.median(t.tolist())
            algbw = size / seconds / 1e9
            rows.append(
                {
                    "op": "allreduce",
                    "impl": impl,
                    "world_size": world,
                    "bytes": size,
                    "seconds": seconds,
                    "algbw_GBps": algbw,
                    "busbw_GBps": algbw * 2 * (world - 1) / world,
                    "iterations": iters,
                    # Bytes a rank sends per byte of fp32 data, relative to an uncompressed ring.
                    "wire_ratio": _wire_ratio(impl, size // 4, world),
                    **({"plan": plan} if impl == "bagua_multi_ring" else {}),
                }
            )
    if tcp is not None:
        tcp.close()
    return rows


def _wire_ratio(impl: str, count: int, world: int) -> float:
    if impl not in CODEC_OF:
        return 1.0
    from bagua_ravnest import _C

    codec = _C.Codec(CODEC_OF[impl])
    chunk = -(-count // world)
    return codec.wire_bytes(chunk) / (4 * chunk)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--world-size", type=int, default=4)
    ap.add_argument("--sizes", default="4K,1M,16M,64M", help="comma-separated byte sizes, K/M/G suffixes")
    ap.add_argument("--iters", type=int, default=10, help="timed iterations per (impl, size), at least 10")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--impls", default=",".join(IMPLS),
                    help=f"which all-reduces, comma-separated (default: all of {', '.join(IMPLS)})")
    ap.add_argument("--bandwidth-mbit", help="emulated link rate(s) in Mbit/s: one, or one per rank (needs root)")
    ap.add_argument("--multi-ring-rates", choices=("probe", "given"), default="probe",
                    help="bagua_multi_ring's link rates: measured by its probe (default) or the --bandwidth-mbit rates")
    ap.add_argument("--json", dest="json_path", help="write the rows here")
    args = ap.parse_args(argv)
    if args.iters < 10:
        ap.error("--iters must be at least 10 (the median of fewer is too noisy)")
    if args.world_size < 2:
        ap.error("--world-size must be at least 2")
    sizes = [parse_size(s) for s in args.sizes.split(",")]
    impls = [i for i in args.impls.split(",") if i]
    for i in impls:
        if i not in IMPLS:
            ap.error(f"unknown impl {i!r}; choose from {', '.join(IMPLS)}")

    given = None
    if args.multi_ring_rates == "given":
        if not args.bandwidth_mbit:
            ap.error("--multi-ring-rates given needs --bandwidth-mbit")
        rates = args.bandwidth_mbit.split(",")
        given = ",".join(rates * args.world_size if len(rates) == 1 else rates)

    try:
        with network(args.bandwidth_mbit, args.world_size) as net:
            addresses = [net.address_of(r) for r in range(args.world_size)]
            rows = values(run_world(_bench, args.world_size, sizes, args.iters, args.warmup, impls, addresses, given,
                                    env={"BAGUA_ALLREDUCE": "ring", **net.env}, timeout=3600, netns=net.netns,
                                    hostnames=net.hostnames))[0]
    except (NetemUnavailable, ValueError) as e:
        ap.exit(2, f"collectives.py: {e}\n")
    for r in rows:
        r["network"] = net.label
        r["link_mbit"] = net.bottleneck_mbit
        r["busbw_over_link"] = r["busbw_GBps"] * 8e3 / net.bottleneck_mbit if net.bottleneck_mbit else None
    print(f"network: {net.label}")
    for r in rows:
        if r.get("plan"):
            print(r["plan"], end="")
            break
    print(f"{'impl':<12} {'bytes':>10} {'seconds':>10} {'algbw GB/s':>11} {'busbw GB/s':>11} {'of link':>8}")
    for r in rows:
        of_link = f"{r['busbw_over_link']:.2f}" if r["busbw_over_link"] is not None else "-"
        print(f"{r['impl']:<12} {r['bytes']:>10} {r['seconds']:>10.5f} {r['algbw_GBps']:>11.3f} "
              f"{r['busbw_GBps']:>11.3f} {of_link:>8}")
    if args.json_path:
        os.makedirs(os.path.dirname(os.path.abspath(args.json_path)), exist_ok=True)
        with open(args.json_path, "w") as f:
            json.dump({"benchmark": "collectives", "machine": machine_info(), "rows": rows}, f, indent=2)
        print(f"wrote {args.json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
