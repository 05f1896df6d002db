"""How the benchmarks' ranks allocate memory (--malloc).

A training step frees and allocates the same large tensors (activations,
their gradients) every step. With glibc's defaults, blocks above the mmap
threshold (128 KiB, adapting up to 32 MiB) are mapped and unmapped each
time, and free memory at the top of the heap is trimmed back to the kernel:
each step then takes page faults to get the same memory again, and the
kernel zeroes every page. Where the step is compute-bound that is time
taken from the step; on this project's 2-core machine, with 4 ranks, it
cost onebit_adam about 10% (docs/benchmarks.md, session 6).

"tuned" keeps freed memory in each rank, as PyTorch's CPU performance
advice does with jemalloc or tcmalloc, using glibc's own tunables (no
extra package): large blocks come from the heap and the heap is not
trimmed below 1 GiB of free memory. Every algorithm, torch DDP included,
runs with the same setting; "system" leaves glibc's defaults.
"""

from __future__ import annotations

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
