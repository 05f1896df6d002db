"""What every rank agrees on before the first step: the process group's
backend, which ranks share a host, the algorithm (canonical spec) and the
parameters' shapes; a local error takes part in the exchange, so that every
rank fails with the same message instead of some ranks waiting forever."""

from __future__ import annotations

import datetime
import hashlib
import os
import socket
import zlib

import torch
import torch.distributed as dist

from .. import _C

_SPEC_BYTES = 512  # room for an algorithm spec or an error message
_DEFAULT_TIMEOUT_S = 300.0


def timeout_seconds(timeout) -> float:
    if timeout is None:
        return float(os.environ.get("BAGUA_TIMEOUT_S", _DEFAULT_TIMEOUT_S))
    if isinstance(timeout, datetime.timedelta):
        return timeout.total_seconds()
    return float(timeout)


def check_backend(process_group) -> None:
    name = dist.get_backend(process_group)
    if name not in ("bagua", "gloo"):
        raise ValueError(
            f"bagua_ravnest.DistributedDataParallel needs a process group of backend 'bagua' or 'gloo', "
            f"got {name!r}; call dist.init_process_group('bagua') (after `import bagua_ravnest`)"
        )


def all_gather_flat(out: torch.Tensor, mine: torch.Tensor, group) -> None:
    # torch 2.13 renamed all_gather_into_tensor; older releases lack the new name.
    gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
    gather(out, mine, group=group)


def host_keys(process_group) -> list[int]:
    """One key per group rank; equal keys share a host. torchrun's
    LOCAL_WORLD_SIZE defines hosts as blocks of global ranks; without it,
    hostnames decide (gathered from every rank)."""
    ranks = dist.get_process_group_ranks(process_group)
    local = os.environ.get("LOCAL_WORLD_SIZE")
    if local:
        local_world = int(local)
        if local_world <= 0:
            raise ValueError(f"LOCAL_WORLD_SIZE must be positive, got {local}")
        return [r // local_world for r in ranks]
    mine = torch.tensor([zlib.crc32(socket.gethostname().encode())], dtype=torch.int64)
    everyone = torch.empty(len(ranks), dtype=torch.int64)
    all_gather_flat(everyone, mine, process_group)
    return everyone.tolist()


def registry_name(spec: str, rank: int, world: int, keys: list[int]) -> str | None:
    """The registered algorithm `spec` builds: its name, or for a composed
    spec ("codec=...,exchange=...,schedule=...") the name of what the
    composition makes of it; None when it does not build (the agreement
    then reports why, on every rank)."""
    try:
        name, _ = _C.parse_algorithm_spec(spec)
        if not name:
            canonical = _C.canonical_spec(spec, rank, world, keys)
            name, _ = _C.parse_algorithm_spec(canonical)
    except RuntimeError:
        return None
    return name if name in _C.algorithm_names() else None


def _encode(text: str, size: int) -> torch.Tensor:
    raw = text.encode()[: size - 1]
    out = torch.zeros(size, dtype=torch.uint8)
    if raw:
        out[: len(raw)] = torch.frombuffer(bytearray(raw), dtype=torch.uint8)
    return out


def _decode(t: torch.Tensor) -> str:
    raw = bytes(t.tolist())
    return raw.split(b"\0", 1)[0].decode(errors="replace")


def agree_on_configuration(spec: str, params: list[torch.Tensor], rank: int, world: int, keys: list[int],
                           process_group) -> str:
    """The canonical spec every rank runs; raises the same error on every
    rank when one rank's spec does not build, the ranks' specs differ, or
    their parameters differ in shape or dtype."""
    try:
        canonical = _C.canonical_spec(spec, rank, world, keys)
        local_error = ""
    except RuntimeError as e:
        canonical, local_error = "", str(e)
    shapes = ";".join(f"{tuple(p.shape)}:{p.dtype}" for p in params)
    digest = hashlib.sha256(shapes.encode()).digest()
    record = torch.cat(
        [
            _encode(("error:" + local_error) if local_error else canonical, _SPEC_BYTES),
            torch.frombuffer(bytearray(digest), dtype=torch.uint8),
        ]
    )
    everyone = torch.empty(world * record.numel(), dtype=torch.uint8)
    all_gather_flat(everyone, record, process_group)
    rows = everyone.view(world, -1)
    specs = [_decode(r[:_SPEC_BYTES]) for r in rows]
    digests = [bytes(r[_SPEC_BYTES:].tolist()) for r in rows]
    errors = [(r, s[len("error:") :]) for r, s in enumerate(specs) if s.startswith("error:")]
    if errors:
        bad_rank, message = errors[0]
        raise ValueError(f"algorithm {spec!r} is not valid on rank {bad_rank}: {message}")
    if len(set(specs)) != 1:
        listing = ", ".join(f"rank {r}: {s}" for r, s in enumerate(specs))
        raise ValueError(
            f"ranks disagree on the algorithm ({listing}); pass the same algorithm= (or BAGUA_ALGORITHM) "
            f"on every rank"
        )
    _check_agreed_shapes(digests)
    return canonical


def agree_no_error(local_error: str, world: int, process_group) -> None:
    """Raises on every rank when some rank has an error (a refusal found
    after the configuration agreed), so that none goes on alone."""
    everyone = torch.empty(world * _SPEC_BYTES, dtype=torch.uint8)
    all_gather_flat(everyone, _encode(local_error, _SPEC_BYTES), process_group)
    errors = [(r, _decode(row)) for r, row in enumerate(everyone.view(world, -1))]
    errors = [(r, m) for r, m in errors if m]
    if errors:
        bad_rank, message = errors[0]
        raise ValueError(f"rank {bad_rank}: {message}")


def _check_agreed_shapes(digests: list[bytes]) -> None:
    if len(set(digests)) != 1:
        odd = [r for r, d in enumerate(digests) if d != digests[0]]
        raise ValueError(
            f"ranks {odd} have parameters of different shapes or dtypes than rank 0; every rank must wrap "
            f"the same model"
        )
