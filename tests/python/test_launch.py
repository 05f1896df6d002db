"""bagua_ravnest.launch.run_world: what its workers start with."""

import os
import platform
import sys
import threading

import pytest

from bagua_ravnest.launch import run_world, values

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                                "benchmarks"))
from allocator import large_blocks_are_mapped  # noqa: E402

_THRESHOLD = str(1 << 30)


def _allocator_view(rank, world):
    return large_blocks_are_mapped(), os.environ.get("MALLOC_MMAP_THRESHOLD_")


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="reads glibc's malloc tunables")
def test_env_is_there_when_the_worker_starts(monkeypatch):
    # glibc reads MALLOC_MMAP_THRESHOLD_ once, as the process starts: a value
    # set after that would leave a 64 MiB block mapped on its own.
    for name in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "GLIBC_TUNABLES"):
        monkeypatch.delenv(name, raising=False)
    plain = values(run_world(_allocator_view, 2, backend="gloo"))
    assert plain == [(True, None)] * 2
    tuned = values(run_world(_allocator_view, 2, backend="gloo", env={"MALLOC_MMAP_THRESHOLD_": _THRESHOLD}))
    assert tuned == [(False, _THRESHOLD)] * 2
    assert "MALLOC_MMAP_THRESHOLD_" not in os.environ  # the parent's environment is restored


@pytest.mark.parametrize("env", [{"X": 1}, {"X": None}, {"A=B": "1"}, {"": "1"}])
def test_env_that_no_environment_can_hold_is_refused_before_starting(env):
    with pytest.raises(ValueError, match=r"str\(value\)"):
        run_world(_allocator_view, 2, backend="gloo", env=env)
    assert "X" not in os.environ


def _returns_size(rank, world, blob):
    return len(blob)


def test_workers_that_die_at_start_are_reported_even_with_large_arguments():
    # A worker whose interpreter cannot start (here: no standard library)
    # never reads what it was sent. Arguments larger than a pipe's buffer
    # used to block the parent's write to it forever; they travel through a
    # file, so the death is reported.
    blob = b"x" * (1 << 20)
    done = []
    thread = threading.Thread(
        target=lambda: done.append(run_world(_returns_size, 2, blob, backend="gloo",
                                             env={"PYTHONHOME": "/nonexistent"}, timeout=60)),
        daemon=True)
    thread.start()
    thread.join(90)
    assert done, "run_world hung on workers that died at start"
    assert [r.error_type for r in done[0]] == ["died", "died"]
    assert values(run_world(_returns_size, 2, blob, backend="gloo")) == [len(blob)] * 2
