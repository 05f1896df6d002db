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


def _parent_and_probe(rank, world):
    return os.getppid(), os.environ.get("BAGUA_LAUNCH_PROBE"), os.environ.get("BAGUA_LAUNCH_GIVEN")


def test_forked_workers_see_the_callers_environment_as_it_is_now(monkeypatch):
    # Workers fork from a server that imported torch once; the server keeps
    # the environment it started with, so each worker must take the
    # caller's current one, and the server must never see run_world's env.
    monkeypatch.delenv("BAGUA_LAUNCH_PROBE", raising=False)
    first = values(run_world(_parent_and_probe, 2, backend="gloo", env={"BAGUA_LAUNCH_GIVEN": "a"}))
    assert all(ppid != os.getpid() for ppid, _, _ in first), "workers come from the fork server"
    assert [w[1:] for w in first] == [(None, "a")] * 2
    monkeypatch.setenv("BAGUA_LAUNCH_PROBE", "set later")
    second = values(run_world(_parent_and_probe, 2, backend="gloo"))
    assert [w[1:] for w in second] == [("set later", None)] * 2, "a variable set after the server started"
    assert {w[0] for w in second} == {w[0] for w in first}, "the same server serves both worlds"
    assert "BAGUA_LAUNCH_GIVEN" not in os.environ


def test_variables_read_at_process_start_get_spawned_workers():
    for env in ({"MALLOC_ARENA_MAX": "2"}, {"OMP_NUM_THREADS": "1"}, {"ATEN_CPU_CAPABILITY": "default"}):
        out = values(run_world(_parent_and_probe, 2, backend="gloo", env=env))
        assert all(ppid == os.getpid() for ppid, _, _ in out), env
    forced = values(run_world(_parent_and_probe, 2, backend="gloo", start_method="spawn"))
    assert all(ppid == os.getpid() for ppid, _, _ in forced)
    with pytest.raises(ValueError, match="start_method must be 'forkserver' or 'spawn'"):
        run_world(_parent_and_probe, 2, backend="gloo", start_method="fork")
