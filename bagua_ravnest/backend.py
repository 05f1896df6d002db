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

import torch
import torch.distributed as dist

from . import _C

BACKEND_NAME = "bagua"
ALLREDUCE_CHOICES = ("ring", "inner")


@dataclasses.dataclass
class BackendOptions:
    """Options of the bagua backend; pass as ``init_process_group(..., pg_options=BackendOptions(...))``.

    allreduce: "ring" (our pipelined ring, the default) or "inner" (the inner
        Gloo/NCCL backend's own). Default from ``BAGUA_ALLREDUCE``.
    ring_chunk_bytes: pipelining unit of the ring. Default from
        ``BAGUA_RING_CHUNK_BYTES`` or 2 MiB.
    """

    allreduce: str | None = None
    ring_chunk_bytes: int | None = None

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
        return BackendOptions(allreduce, chunk)


def _timeout_seconds(timeout) -> float:
    if isinstance(timeout, datetime.timedelta):
        return timeout.total_seconds()
    return float(timeout)


def _make_backend(store, rank: int, size: int, timeout: datetime.timedelta, options: BackendOptions, cuda: bool):
    # Separate key spaces in the store for each inner backend.
    cpu_inner = dist.ProcessGroupGloo(dist.PrefixStore("bagua/gloo/", store), rank, size, timeout)
    cuda_inner = None
    if cuda and torch.cuda.is_available() and dist.is_nccl_available():
        nccl_options = dist.ProcessGroupNCCL.Options()
        nccl_options._timeout = timeout
        cuda_inner = dist.ProcessGroupNCCL(dist.PrefixStore("bagua/nccl/", store), rank, size, nccl_options)
    return _C.ProcessGroupBagua(
        rank,
        size,
        cpu_inner,
        cuda_inner,
        options.allreduce == "ring",
        options.ring_chunk_bytes,
        _timeout_seconds(timeout),
    )


def _create(dist_options, pg_options):
    if pg_options is not None and not isinstance(pg_options, BackendOptions):
        raise TypeError(
            f"bagua backend: pg_options must be bagua_ravnest.BackendOptions, got {type(pg_options).__name__}"
        )
    options = (pg_options or BackendOptions()).resolved()
    return _make_backend(
        dist_options.store, dist_options.group_rank, dist_options.group_size, dist_options.timeout, options, cuda=True
    )


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
    return _make_backend(
        store, dist.get_rank(process_group), process_group.size(), timeout, BackendOptions().resolved(), cuda=False
    )


def register() -> None:
    """Registers "bagua" with torch.distributed (idempotent)."""
    if BACKEND_NAME.upper() in dist.Backend._plugins:
        return
    devices = ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]
    dist.Backend.register_backend(BACKEND_NAME, _create, extended_api=True, devices=devices)
