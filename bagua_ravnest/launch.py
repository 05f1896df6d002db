"""Runs a function on N local processes joined by torch.distributed and
returns each rank's result or failure. Used by the tests, the benchmarks and
the demo. Nothing can hang: the parent kills every worker still alive after
the deadline and reports the hang.

    from bagua_ravnest.launch import run_world, values
    results = values(run_world(train_fn, 4, backend="bagua"))

`fn` must be importable by name (defined at module level). Workers are
forked from a server process that has imported torch, torch._dynamo (which
torch's DistributedDataParallel imports on construction) and bagua_ravnest
once, so a worker starts in a fraction of a second rather than spending
seconds per process importing them; no worker runs in the process that
called run_world. Environments with variables a process reads only as it
starts get spawned workers instead (see `_START_TIME_VARIABLES`).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import pickle
import queue as queue_mod
import tempfile
import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass


# Modules the fork server imports once for all workers: torch alone costs
# about 2 s per process and torch._dynamo another 1.5 s, on a 2-core machine
# several times that when four workers import at once.
_PRELOAD = ["torch", "torch.distributed", "torch._dynamo", "torch.nn.parallel", "bagua_ravnest"]

# Prefixes of variables read as a process (or torch, which the fork server
# has already imported) starts: glibc's allocator tunables, the loader,
# OpenMP/MKL, torch's kernel selection and logging, CUDA's, the
# interpreter's own. Given any of them, workers are spawned so that they
# take effect (some of torch's are read later; spawning is never wrong).
_START_TIME_VARIABLES = ("MALLOC_", "GLIBC_TUNABLES", "LD_", "OMP_", "GOMP_", "MKL_", "KMP_", "ATEN_", "TORCH_",
                         "CUDA_", "PYTHON")


def _start_method(env: dict[str, str], requested: str | None) -> str:
    if requested is not None:
        if requested not in ("forkserver", "spawn"):
            raise ValueError(f"run_world start_method must be 'forkserver' or 'spawn', got {requested!r}")
        return requested
    return "spawn" if any(k.startswith(_START_TIME_VARIABLES) for k in env) else "forkserver"


@dataclass
class RankResult:
    rank: int
    ok: bool
    value: object = None
    error_type: str = ""
    error: str = ""
    exitcode: int | None = None


def _enter_network_namespace(name: str, hostname: str | None) -> None:
    """Moves this process into the named network namespace (ip netns) and,
    given a hostname, into a UTS namespace of its own with that name. Must
    run before torch starts threads: a namespace switch applies to the calling
    thread, and threads created later inherit it."""
    import ctypes

    clone_newnet, clone_newuts = 0x40000000, 0x04000000
    libc = ctypes.CDLL(None, use_errno=True)

    def check(rc: int, what: str) -> None:
        if rc != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"{what} failed: {os.strerror(err)}")

    fd = os.open(f"/var/run/netns/{name}", os.O_RDONLY)
    try:
        check(libc.setns(fd, clone_newnet), f"setns into network namespace {name!r}")
    finally:
        os.close(fd)
    if hostname:
        check(libc.unshare(clone_newuts), "unshare of the UTS namespace")
        raw = hostname.encode()
        check(libc.sethostname(raw, len(raw)), f"sethostname({hostname!r})")


def _checked_env(env: dict | None) -> dict[str, str]:
    """The workers' extra environment: names and values must be strings
    (an environment holds nothing else), checked here rather than in a
    worker after it has started."""
    env = dict(env or {})
    bad = {k: v for k, v in env.items() if not isinstance(k, str) or not isinstance(v, str) or not k or "=" in k}
    if bad:
        raise ValueError(f"run_world env: names must be non-empty strings without '=' and values strings; "
                         f"got {bad!r} (pass str(value))")
    return env


@contextmanager
def _inherited_environment(env: dict[str, str]):
    """`env` in os.environ while workers are started, restored afterwards.
    A spawned worker is a new interpreter that inherits the environment it
    is started with; variables read as a process starts (glibc's MALLOC_*
    tunables, for one) take effect only if they are there by then. The
    whole process sees them meanwhile: run_world is not for concurrent use
    from several threads."""
    saved = {k: os.environ.get(k) for k in env}
    try:
        os.environ.update(env)
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _worker(fn, rank, world, backend, store_path, args_path, queue, netns=None, hostname=None, environ=None):
    # A spawned worker inherited run_world's env as it started; a forked one
    # has the fork server's environment and takes the caller's here.
    if environ is not None:
        os.environ.clear()
        os.environ.update(environ)
    if netns:
        _enter_network_namespace(netns, hostname)
    os.environ.update({"RANK": str(rank), "WORLD_SIZE": str(world)})
    try:
        import torch
        import torch.distributed as dist

        import bagua_ravnest  # noqa: F401  registers the backend

        with open(args_path, "rb") as f:
            args = pickle.load(f)
        torch.set_num_threads(1)
        dist.init_process_group(backend, init_method=f"file://{store_path}", rank=rank, world_size=world)
        try:
            value = fn(rank, world, *args)
        finally:
            if os.environ.get("HARNESS_SKIP_DESTROY") != "1":
                dist.destroy_process_group()
        queue.put(RankResult(rank, True, value))
    except BaseException as e:  # noqa: BLE001 - everything goes back to the test
        queue.put(RankResult(rank, False, error_type=type(e).__name__, error=f"{e}\n{traceback.format_exc()}"))


def run_world(fn, world: int, *args, backend: str = "bagua", env: dict | None = None, timeout: float = 120.0,
              netns: list[str] | None = None, hostnames: list[str] | None = None, failure_grace: float = 60.0,
              start_method: str | None = None):
    """fn(rank, world, *args) on `world` processes; returns RankResults by rank.

    Each worker gets RANK/WORLD_SIZE and `env` in its environment (`env`
    from its start, so that variables read as a process starts apply), and a
    default process group of `backend` before fn runs. HARNESS_SKIP_DESTROY=1
    in `env` skips destroy_process_group (for runs where a peer dies).
    `netns`: one network namespace per rank to run it in (the rendezvous
    store is a file, so only rank-to-rank traffic uses the network).
    `hostnames`: with `netns`, each rank's hostname (in a UTS namespace of its
    own), so that every rank is a host of its own, as in a real cluster.
    Once a rank has failed or died, the others get `failure_grace` seconds
    to finish (usually by raising) before they are stopped.
    `start_method`: "forkserver" (the default, unless `env` names a variable
    read at process start) or "spawn"."""
    if netns is not None and len(netns) != world:
        raise ValueError(f"netns names {len(netns)} namespaces for {world} ranks")
    if hostnames is not None and (netns is None or len(hostnames) != world):
        raise ValueError("hostnames needs netns and one name per rank")
    env = _checked_env(env)
    method = _start_method(env, start_method)
    ctx = mp.get_context(method)
    if method == "forkserver":
        ctx.set_forkserver_preload(_PRELOAD)
    environ = dict(os.environ, **env) if method == "forkserver" else None
    queue = ctx.Queue()
    with tempfile.TemporaryDirectory() as tmp:
        store = os.path.join(tmp, "store")
        # The arguments go through a file, not the pipe that starts a worker:
        # the parent writes that pipe while still holding its read end, so
        # a worker that dies before reading more than the pipe's 64 KiB (a
        # checkpoint passed to resume from, say) would block the parent's
        # write forever, before any deadline applies.
        args_path = os.path.join(tmp, "args.pickle")
        with open(args_path, "wb") as f:
            pickle.dump(args, f, protocol=pickle.HIGHEST_PROTOCOL)
        procs = [
            ctx.Process(target=_worker, args=(fn, r, world, backend, store, args_path, queue,
                                              netns[r] if netns else None, hostnames[r] if hostnames else None,
                                              environ),
                        daemon=True)
            for r in range(world)
        ]
        # A spawned worker inherits the environment it starts with; the fork
        # server must not (it would keep the first caller's env for good).
        with _inherited_environment(env if method == "spawn" else {}):
            for p in procs:
                p.start()
        results: dict[int, RankResult] = {}
        deadline = time.monotonic() + timeout
        while len(results) < world and time.monotonic() < deadline:
            try:
                res = queue.get(timeout=0.2)
                results[res.rank] = res
            except queue_mod.Empty:
                if all(not p.is_alive() for p in procs) and queue.empty():
                    break
            failed = any(not r.ok for r in results.values()) or any(
                not p.is_alive() and p.exitcode not in (0, None) and r not in results for r, p in enumerate(procs))
            if failed:
                # The others are probably waiting on the failed rank: give them
                # a moment to raise on their own, then stop them.
                deadline = min(deadline, time.monotonic() + failure_grace)
        for p in procs:
            p.join(timeout=max(0.0, deadline - time.monotonic()) if len(results) == world else 1.0)
        hung = [r for r, p in enumerate(procs) if p.is_alive()]
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join()
        if hung and len(results) < world and all(r.ok for r in results.values()):
            raise TimeoutError(f"ranks {hung} did not finish within {timeout} s (hang)")
        for r, p in enumerate(procs):
            if r not in results:
                results[r] = RankResult(r, False, error_type="died", error=f"exit code {p.exitcode}", exitcode=p.exitcode)
        return [results[r] for r in range(world)]


def values(results):
    """The per-rank return values; raises with every failed rank's error."""
    failed = [r for r in results if not r.ok]
    if failed:
        raise RuntimeError("\n\n".join(f"rank {r.rank}: {r.error_type}: {r.error}" for r in failed))
    return [r.value for r in results]
