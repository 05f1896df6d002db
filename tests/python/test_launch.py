"""bagua_ravnest.launch.run_world: what its workers start with."""

import ctypes
import os

from bagua_ravnest.launch import run_world, values

_BIG = 64 << 20  # above glibc's default mmap threshold (128 KiB, 32 MiB at most when it adapts)


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]


def _big_allocation_is_mmapped(rank, world):
    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = _MallInfo2
    libc.malloc.restype = ctypes.c_void_p
    before = libc.mallinfo2().hblkhd
    p = libc.malloc(_BIG)
    mmapped = libc.mallinfo2().hblkhd - before >= _BIG
    libc.free(ctypes.c_void_p(p))
    return mmapped, os.environ.get("MALLOC_MMAP_THRESHOLD_")


def test_env_is_there_when_the_worker_starts():
    # glibc reads MALLOC_MMAP_THRESHOLD_ once, as the process starts: a value
    # set after that would leave a 64 MiB allocation mmapped.
    assert "MALLOC_MMAP_THRESHOLD_" not in os.environ
    plain = values(run_world(_big_allocation_is_mmapped, 2, backend="gloo"))
    assert plain == [(True, None)] * 2
    tuned = values(run_world(_big_allocation_is_mmapped, 2, backend="gloo",
                             env={"MALLOC_MMAP_THRESHOLD_": str(1 << 30)}))
    assert tuned == [(False, str(1 << 30))] * 2
    assert "MALLOC_MMAP_THRESHOLD_" not in os.environ  # the parent's environment is restored
