"""The codecs as Python sees them (bagua_ravnest._C.Codec): CPU tensors, and
CUDA tensors through the CUDA kernels, which must write the CPU's bytes."""

import os
import subprocess
import sys

import pytest
import torch

from bagua_ravnest import _C

CUDA = torch.cuda.is_available() and _C.cuda_codecs_built()
needs_cuda = pytest.mark.skipif(
    not CUDA,
    reason="needs a CUDA device and a build with the CUDA codecs"
    + ("" if _C.cuda_codecs_built() else " (this build has none: nvcc was not found)"),
)


def values(n, dtype, specials=False):
    x = torch.randn(n, generator=torch.Generator().manual_seed(n)) * 3 + 0.5
    if specials and n > 3:
        x[n // 3] = float("nan")
        x[n // 2] = float("inf")
    return x.to(dtype)


@pytest.mark.parametrize("name", _C.codec_names())
def test_cpu_round_trip_and_sizes(name):
    codec = _C.Codec(name, 4096)
    x = values(10_001, torch.float32)
    wire = codec.encode(x)
    assert wire.dtype == torch.uint8 and wire.numel() == codec.wire_bytes(x.numel())
    y = codec.decode(wire, x.numel())
    if codec.lossless:
        assert torch.equal(x, y)
    elif name == "minmax_uint8":
        assert (x - y).abs().max() <= (x.max() - x.min()) / 510 + 1e-5
    else:
        assert torch.isfinite(y).all()


def test_tensors_on_other_devices_are_refused_with_the_reason():
    codec = _C.Codec("minmax_uint8")
    with pytest.raises(RuntimeError, match="codecs run on CPU or CUDA tensors"):
        codec.encode(torch.empty(8, device="meta"))


@needs_cuda
@pytest.mark.parametrize("name", _C.codec_names())
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("block", [0, 4096])
def test_cuda_writes_the_cpu_bytes_and_decodes_alike(name, dtype, block):
    codec = _C.Codec(name, block)
    for n in (1, 17, 4099, 300_001):
        x = values(n, dtype, specials=n % 2 == 1)
        cpu = codec.encode(x)
        gpu = codec.encode(x.cuda())
        assert gpu.is_cuda
        assert torch.equal(gpu.cpu(), cpu), f"{name} {dtype} block={block} n={n}"
        decoded = codec.decode(cpu.cuda(), n)
        assert torch.equal(decoded.cpu().view(torch.int32), codec.decode(cpu, n).view(torch.int32))


@needs_cuda
def test_cuda_decode_refuses_corrupt_bytes():
    codec = _C.Codec("minmax_uint8", 64)
    wire = codec.encode(values(200, torch.float32))
    wire[64 + 16 + 8] ^= 0x40  # the second block's count
    out = torch.full((200,), 7.0, device="cuda")
    with pytest.raises(RuntimeError, match="block at value 64"):
        codec.decode(wire.cuda(), 200, out=out)
    assert torch.equal(out.cpu(), torch.full((200,), 7.0))


_DIGEST = """
import hashlib, torch
from bagua_ravnest import _C
x = torch.randn(100_003, generator=torch.Generator().manual_seed(7)) * 3 + 0.5
x[5] = float("nan"); x[77] = float("inf"); x[4095:4097] = 0.0
h = hashlib.sha256()
for name in ("fp16", "bf16", "minmax_uint8", "sign1bit"):
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        codec = _C.Codec(name, 256)
        wire = codec.encode(x.to(dtype))
        h.update(wire.numpy().tobytes())
        h.update(codec.decode(wire, x.numel()).numpy().tobytes())
print(h.hexdigest())
"""


def _digest_under(isa):
    env = {k: v for k, v in os.environ.items() if k != "BAGUA_CODEC_ISA"}
    if isa is not None:
        env["BAGUA_CODEC_ISA"] = isa
    return subprocess.run([sys.executable, "-c", _DIGEST], env=env, capture_output=True, text=True, timeout=120)


def test_every_codec_variant_writes_and_reads_the_same_bytes():
    # BAGUA_CODEC_ISA forces the codec's loop variant (for running a suite
    # on each); all of them must agree with what this CPU picks by itself.
    native = _digest_under(None)
    assert native.returncode == 0, native.stderr[-2000:]
    for isa in ("scalar", "baseline"):
        forced = _digest_under(isa)
        assert forced.returncode == 0, forced.stderr[-2000:]
        assert forced.stdout == native.stdout, isa
    wrong = _digest_under("avx9000")
    assert wrong.returncode != 0
    assert "BAGUA_CODEC_ISA=avx9000" in wrong.stderr and "valid: scalar, baseline" in wrong.stderr, wrong.stderr[-2000:]
