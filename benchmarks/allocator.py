"""How the benchmarks' ranks allocate memory (--malloc).

A training step frees and allocates the same large tensors (activations,
their gradients) every step. With glibc's defaults, blocks above the mmap
threshold are mapped and unmapped each time (it starts at 128 KiB and
rises to the size of a freed block, but never above 32 MiB), and free
memory at the top of the heap is trimmed back to the kernel once it passes
twice that threshold: steps then take page faults to get the same memory
again, and the kernel zeroes every page. Where the step is compute-bound that is time
taken from the step; on this project's 2-core machine, with 4 ranks, it
cost onebit_adam about 10% (docs/benchmarks.md, session 6).

"tuned" keeps freed memory in each rank, as PyTorch's CPU performance
advice does with jemalloc or tcmalloc, using glibc's own tunables (no
extra package): large blocks come from the heap and the heap is not
trimmed below 1 GiB of free memory. Every algorithm, torch DDP included,
runs with the same setting; "system" leaves glibc's defaults.
"""

from __future__ import annotations

import ctypes
import platform

CHOICES = ("tuned", "system")

_TUNED = {
    # Blocks up to 1 GiB come from the heap, where freed memory stays mapped.
    "MALLOC_MMAP_THRESHOLD_": str(1 << 30),
    # Free memory at the heap's top is returned to the kernel only above 1 GiB.
    "MALLOC_TRIM_THRESHOLD_": str(1 << 30),
    # The heap grows 64 MiB beyond each request, so that it grows rarely.
    "MALLOC_TOP_PAD_": str(64 << 20),
}


def malloc_env(choice: str) -> dict[str, str]:
    """Environment for ranks started with `choice` (read by glibc at process
    start; bagua_ravnest.launch.run_world's env is there by then)."""
    if choice not in CHOICES:
        raise ValueError(f"--malloc {choice!r}: choose from {', '.join(CHOICES)}")
    return dict(_TUNED) if choice == "tuned" else {}


def large_blocks_are_mapped() -> bool | None:
    """Whether this process's malloc maps a 64 MiB block of its own (glibc's
    default) rather than carving it from the heap (the tuned setting): what
    the setting did, not what was asked. None where the C library is not
    glibc. Reads the IS_MMAPPED bit of glibc's chunk header, the word just
    before the block."""
    if platform.libc_ver()[0] != "glibc":
        return None
    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    block = libc.malloc(64 << 20)
    if not block:
        raise MemoryError("malloc(64 MiB) failed")
    try:
        return bool(ctypes.c_size_t.from_address(block - ctypes.sizeof(ctypes.c_size_t)).value & 2)
    finally:
        libc.free(block)
