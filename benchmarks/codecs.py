"""Encode and decode speed of each codec, next to a memcpy of the same
buffer measured in the same run, on one core.

    python benchmarks/codecs.py --json out/codecs.json
    python benchmarks/codecs.py --sizes 1M,64M --dtypes float32,bfloat16 --json out/codecs.json
    python benchmarks/codecs.py --device cuda --json out/codecs_cuda.json   # the CUDA kernels

One row per (codec, dtype, size): encode_GBps and decode_GBps, in bytes of
fp32 values per second (count * 4 / seconds, whatever the input dtype, so
rows compare directly), the memcpy_GBps of the same fp32 buffer, their
ratios to memcpy, and wire_bytes / fp32 bytes. Times are medians over
--iters runs, taken alternately with the memcpy. With --device cuda the
buffers are on the GPU, the memcpy is a device-to-device copy, times are
taken with the stream synchronized, and `matches_cpu` says whether the
kernels wrote the CPU codec's bytes for the same values.
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

from bagua_ravnest import _C  # noqa: E402
from machine import machine_info  # noqa: E402

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def parse_size(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    text = text.strip().upper()
    return int(text[:-1]) * units[text[-1]] if text[-1] in units else int(text)


def timed(fn, device: str) -> float:
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    sync()
    t0 = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - t0


def bench(codec_name: str, dtype: str, nbytes: int, iters: int, device: str = "cpu", block_elems: int = 0) -> dict:
    count = nbytes // 4
    gen = torch.Generator().manual_seed(0)
    host_values = torch.randn(count, generator=gen).to(DTYPES[dtype])
    values = host_values.to(device)
    fp32 = torch.randn(count, generator=gen).to(device)
    copy_dst = torch.empty_like(fp32)
    codec = _C.Codec(codec_name, block_elems)
    wire = codec.encode(values)
    out = torch.empty(count, device=device)
    encode_s, decode_s, copy_s = [], [], []
    for _ in range(iters):
        copy_s.append(timed(lambda: copy_dst.copy_(fp32), device))
        encode_s.append(timed(lambda: codec.encode(values, out=wire), device))
        decode_s.append(timed(lambda: codec.decode(wire, count, out=out), device))
    enc, dec, cp = (statistics.median(x) for x in (encode_s, decode_s, copy_s))
    fp32_bytes = count * 4
    row = {"device": device}
    if device == "cuda":
        cpu_wire = codec.encode(host_values)
        row["matches_cpu"] = bool(torch.equal(wire.cpu(), cpu_wire))
        row["decode_matches_cpu"] = bool(torch.equal(codec.decode(cpu_wire.to(device), count).cpu().view(torch.int32),
                                                    codec.decode(cpu_wire, count).view(torch.int32)))
    return {
        **row,
        "codec": codec_name,
        "block_elems": block_elems,
        "dtype": dtype,
        "bytes": fp32_bytes,
        "encode_GBps": fp32_bytes / enc / 1e9,
        "decode_GBps": fp32_bytes / dec / 1e9,
        "memcpy_GBps": fp32_bytes / cp / 1e9,
        "encode_vs_memcpy": cp / enc,
        "decode_vs_memcpy": cp / dec,
        "wire_ratio": codec.wire_bytes(count) / fp32_bytes,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--codecs", default=",".join(_C.codec_names()))
    ap.add_argument("--dtypes", default="float32,float16,bfloat16")
    ap.add_argument("--sizes", default="1M,64M", help="fp32 bytes per buffer")
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--block-elems", type=int, default=0,
                    help="values per block of the lossy codecs (0: one block per buffer; qadam uses 4096)")
    ap.add_argument("--json", required=True)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)  # one core, for the codecs and the memcpy alike
    if args.device == "cuda":
        if not torch.cuda.is_available():
            ap.error("--device cuda: torch sees no CUDA device here")
        if not _C.cuda_codecs_built():
            ap.error("--device cuda: this build of bagua_ravnest has no CUDA codecs (nvcc was not found at build time)")
    codecs = [c for c in args.codecs.split(",") if c]
    for c in codecs:
        if c not in _C.codec_names():
            ap.error(f"unknown codec {c!r}; choose from {', '.join(_C.codec_names())}")
    dtypes = [d for d in args.dtypes.split(",") if d]
    for d in dtypes:
        if d not in DTYPES:
            ap.error(f"unknown dtype {d!r}; choose from {', '.join(DTYPES)}")
    rows = [bench(c, d, parse_size(s), args.iters, args.device, args.block_elems)
            for s in args.sizes.split(",") for c in codecs for d in dtypes]
    print(f"{'codec':14} {'dtype':9} {'bytes':>10} {'encode GB/s':>12} {'decode GB/s':>12} {'memcpy GB/s':>12} "
          f"{'enc/memcpy':>10} {'wire':>6}" + ("  same bytes as CPU" if args.device == "cuda" else ""))
    for r in rows:
        print(f"{r['codec']:14} {r['dtype']:9} {r['bytes']:>10} {r['encode_GBps']:>12.2f} {r['decode_GBps']:>12.2f} "
              f"{r['memcpy_GBps']:>12.2f} {r['encode_vs_memcpy']:>10.2f} {r['wire_ratio']:>6.3f}"
              + (f"  {r['matches_cpu'] and r['decode_matches_cpu']}" if args.device == "cuda" else ""))
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump({"machine": machine_info(), "device": args.device, "rows": rows}, f, indent=1)
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
