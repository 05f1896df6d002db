"""The "bagua" torch.distributed backend.

``import bagua_ravnest`` registers it; then ``dist.init_process_group("bagua")``
works like any built-in backend. Each process group gets an inner Gloo
backend (and NCCL for CUDA tensors when available); our ring all-reduce runs
over the inner backend's point-to-point messages.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import secrets
import socket
import sys
import warnings

import torch
import torch.distributed as dist

from . import _C

BACKEND_NAME = "bagua"
ALLREDUCE_CHOICES = ("ring", "multi_ring", "inner")


@dataclasses.dataclass
class BackendOptions:
    """Options of the bagua backend; pass as ``init_process_group(..., pg_options=BackendOptions(...))``.

    allreduce: "ring" (our pipelined ring, the default), "multi_ring"
        (several rings at once, each rank's chunk sized from its link rate:
        docs/multi_ring.md) or "inner" (the inner Gloo/NCCL backend's own).
        Default from ``BAGUA_ALLREDUCE``.
    rings: rings run at once by multi_ring, or "auto" (one per core each
        rank has to itself, at most 4). Default from ``BAGUA_RINGS`` or auto.
    ring_directions: "one" (every multi_ring ring the same way, the
        default) or "both" (every other ring the opposite way). Default from
        ``BAGUA_RING_DIRECTIONS``.
    link_mbit: each rank's link rate in Mbit/s for multi_ring, as
        "1000,1000,100,20" (one per rank of the group). Default from
        ``BAGUA_LINK_MBIT``; without it a short probe measures the links
        when the group is made. Groups of another size than the list
        (sub-groups) measure theirs.
    ring_chunk_bytes: pipelining unit of the ring. Default from
        ``BAGUA_RING_CHUNK_BYTES`` or 2 MiB.
    shm: send to ranks of the same host through shared memory rather than
        loopback TCP. Default from ``BAGUA_SHM`` (1, 0) or on.
    shm_bytes: ring buffer size of each shared-memory channel (one per
        ordered pair of same-host ranks). Default from ``BAGUA_SHM_BYTES``
        or 1 MiB.
    """

    allreduce: str | None = None
    ring_chunk_bytes: int | None = None
    shm: bool | None = None
    shm_bytes: int | None = None
    rings: int | str | None = None
    link_mbit: str | None = None
    ring_directions: str | None = None

    def resolved(self) -> "BackendOptions":
        allreduce = self.allreduce or os.environ.get("BAGUA_ALLREDUCE", "ring")
        if allreduce not in ALLREDUCE_CHOICES:
            raise ValueError(
                f"bagua backend: allreduce={allreduce!r} is not valid; choose one of "
                f"{', '.join(ALLREDUCE_CHOICES)} (BAGUA_ALLREDUCE or BackendOptions.allreduce)"
            )
        chunk = self.ring_chunk_bytes or int(os.environ.get("BAGUA_RING_CHUNK_BYTES", 2 << 20))
        if chunk <= 0:
            raise ValueError(f"bagua backend: ring_chunk_bytes must be positive, got {chunk}")
        shm = self.shm
        if shm is None:
            flag = os.environ.get("BAGUA_SHM", "1")
            if flag not in ("0", "1"):
                raise ValueError(f"bagua backend: BAGUA_SHM must be 0 or 1, got {flag!r}")
            shm = flag == "1"
        shm_bytes = self.shm_bytes or int(os.environ.get("BAGUA_SHM_BYTES", 1 << 20))
        if shm_bytes < 4096:
            raise ValueError(f"bagua backend: shm_bytes must be at least 4096, got {shm_bytes}")
        rings = self.rings or os.environ.get("BAGUA_RINGS", "auto")
        if rings != "auto":
            try:
                rings = int(rings)
            except ValueError:
                rings = 0
            if not 1 <= rings <= 8:
                raise ValueError(
                    f"bagua backend: rings must be auto or 1 to 8, got {self.rings or os.environ.get('BAGUA_RINGS')!r} "
                    f"(BAGUA_RINGS or BackendOptions.rings)"
                )
        link_mbit = self.link_mbit if self.link_mbit is not None else os.environ.get("BAGUA_LINK_MBIT", "")
        directions = self.ring_directions or os.environ.get("BAGUA_RING_DIRECTIONS", "one")
        if directions not in ("one", "both"):
            raise ValueError(
                f"bagua backend: ring_directions={directions!r} is not one or both "
                f"(BAGUA_RING_DIRECTIONS or BackendOptions.ring_directions)"
            )
        return BackendOptions(allreduce, chunk, shm, shm_bytes, rings, link_mbit, directions)


def _timeout_seconds(timeout) -> float:
    if isinstance(timeout, datetime.timedelta):
        return timeout.total_seconds()
    return float(timeout)


def host_identity() -> str:
    """Ranks with equal identities can share memory: one kernel (boot id),
    one /dev/shm, and one network namespace, so that the ranks of an
    emulated cluster (benchmarks/netem: one namespace per rank) keep talking
    over their shaped links."""
    with open("/proc/sys/kernel/random/boot_id") as f:
        boot = f.read().strip()
    shm = os.stat("/dev/shm")
    net = os.stat("/proc/self/ns/net").st_ino
    return f"{socket.gethostname()}/{boot}/{shm.st_dev}:{shm.st_ino}/{net}"


def _shared_memory(store, rank: int, size: int, timeout: datetime.timedelta, options: BackendOptions):
    """Sets up the shared-memory channels among this rank's same-host peers
    (every rank of the group takes part). Returns None where there are none
    or set-up failed on any rank of this host (then all of them use TCP)."""
    store = dist.PrefixStore("bagua/shm/", store)
    store.set(f"host/{rank}", host_identity() if options.shm else f"off/{rank}")
    if rank == 0:
        store.set("session", f"{os.getpid():x}{secrets.token_hex(4)}")
    session = store.get("session").decode()
    mine = store.get(f"host/{rank}").decode()
    peers = [r for r in range(size) if r != rank and store.get(f"host/{r}").decode() == mine]
    if not peers:
        return None

    def phase(name: str, step) -> bool:
        # Every rank of the host reports; all go ahead only if all succeeded.
        try:
            step()
            status = "ok"
        except Exception as e:  # noqa: BLE001 - reported to the peers, then warned about
            status = f"rank {rank}: {e}"
        store.set(f"{name}/{rank}", status)
        problems = [s for s in (store.get(f"{name}/{r}").decode() for r in [rank, *peers]) if s != "ok"]
        if problems:
            warnings.warn(f"bagua: shared memory is off on this host, using TCP: {problems[0]}", stacklevel=3)
        return not problems

    transport = None

    def create():
        nonlocal transport
        transport = _C.ShmTransport(session, rank, peers, options.shm_bytes, _timeout_seconds(timeout))

    pids = {}
    store.set(f"pid/{rank}", str(os.getpid()))
    ok = phase("created", create)
    if ok:
        pids = {r: int(store.get(f"pid/{r}").decode()) for r in peers}
        ok = phase("connected", lambda: transport.connect(pids))
    if transport is not None:
        # Everyone has opened its channels (or given up): the names can go,
        # so a crash later leaves nothing behind in /dev/shm.
        transport.unlink_names()
    return transport if ok else None


def _ranks_on_my_host(store, rank: int, size: int) -> int:
    """How many ranks of the group share this rank's host (its cores)."""
    store = dist.PrefixStore("bagua/hosts/", store)
    store.set(str(rank), host_identity())
    mine = store.get(str(rank))
    return sum(store.get(str(r)) == mine for r in range(size))


def _make_backend(store, rank: int, size: int, timeout: datetime.timedelta, options: BackendOptions, cuda: bool):
    # Separate key spaces in the store for each inner backend.
    cpu_inner = dist.ProcessGroupGloo(dist.PrefixStore("bagua/gloo/", store), rank, size, timeout)
    cuda_inner = None
    if cuda and torch.cuda.is_available() and dist.is_nccl_available():
        nccl_options = dist.ProcessGroupNCCL.Options()
        nccl_options._timeout = timeout
        cuda_inner = dist.ProcessGroupNCCL(dist.PrefixStore("bagua/nccl/", store), rank, size, nccl_options)
    link_mbit = options.link_mbit if options.allreduce == "multi_ring" else ""
    if link_mbit and len(link_mbit.split(",")) != size and dist.is_initialized():
        link_mbit = ""  # the rates are the world's, by rank; a sub-group measures its own
    return _C.ProcessGroupBagua(
        rank,
        size,
        cpu_inner,
        cuda_inner,
        options.allreduce,
        options.ring_chunk_bytes,
        _timeout_seconds(timeout),
        _shared_memory(store, rank, size, timeout, options),
        0 if options.rings == "auto" else options.rings,
        link_mbit,
        options.ring_directions == "both",
        _ranks_on_my_host(store, rank, size) if options.allreduce == "multi_ring" else 1,
    )


def _create(dist_options, pg_options):
    if pg_options is not None and not isinstance(pg_options, BackendOptions):
        raise TypeError(
            f"bagua backend: pg_options must be bagua_ravnest.BackendOptions, got {type(pg_options).__name__}"
        )
    options = (pg_options or BackendOptions()).resolved()
    default_group = not dist.is_initialized()
    backend = _make_backend(
        dist_options.store, dist_options.group_rank, dist_options.group_size, dist_options.timeout, options, cuda=True
    )
    if backend.multi_ring_plan and dist_options.group_rank == 0 and default_group:
        print(f"bagua: {backend.multi_ring_plan}", file=sys.stderr, end="", flush=True)
    return backend


# Private backends made so far per process group name: the n-th one of a
# group meets the n-th one of the same group on the other ranks.
_private_counts: dict[str, int] = {}


def private_backend(process_group, timeout_s: float):
    """A bagua backend over the ranks of ``process_group`` with its own
    connections, for one DDP wrapper's engine.

    Owning its transport means the engine's messages and inner collectives
    can never interleave with the user's collectives, with another wrapper's
    engine, or with a send/recv whose tag happens to match. Every rank of
    the group must call this in the same order (as constructing DDP is).
    """
    name = process_group.group_name
    n = _private_counts.get(name, 0)
    _private_counts[name] = n + 1
    store = dist.PrefixStore(f"bagua/private/{name}/{n}/", dist.distributed_c10d._get_default_store())
    timeout = datetime.timedelta(seconds=timeout_s)
    # Its own all-reduce is never used (the engine runs the algorithm's), so
    # it never plans or probes for multi_ring.
    return _make_backend(
        store,
        dist.get_rank(process_group),
        process_group.size(),
        timeout,
        BackendOptions(allreduce="ring").resolved(),
        cuda=False,
    )


def register() -> None:
    """Registers "bagua" with torch.distributed (idempotent)."""
    if BACKEND_NAME.upper() in dist.Backend._plugins:
        return
    devices = ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]
    dist.Backend.register_backend(BACKEND_NAME, _create, extended_api=True, devices=devices)


def link_mbit_of(process_group) -> list[float]:
    """The link rates (Mbit/s, by group rank) for plans over ``process_group``:
    ``BAGUA_LINK_MBIT`` when it lists one rate per rank of the group, else
    the rates its bagua backend planned a multi-ring all-reduce with, else
    [] (an algorithm that needs them measures them)."""
    size = process_group.size()
    text = os.environ.get("BAGUA_LINK_MBIT", "")
    if text and len(text.split(",")) == size:
        return _C.parse_link_mbit(text, size)
    try:
        backend = process_group._get_backend(torch.device("cpu"))
    except RuntimeError:
        return []
    return list(backend.link_mbit) if isinstance(backend, _C.ProcessGroupBagua) else []
