"""Collectives on flat copies of many tensors, and the mean of the replicas
that ``DistributedDataParallel.average_replicas`` sets."""

from __future__ import annotations

import torch
import torch.distributed as dist


@torch.no_grad()
def through_flat(tensors: list[torch.Tensor], collective, widen: bool = False) -> None:
    """Runs `collective` on one flat host tensor per dtype holding `tensors`
    (in fp64 when `widen`), then copies the results back. Host memory
    whatever the tensors' device: the wrapper's own collectives then run
    where the engine's exchanges do, which works for ranks that share a GPU
    (NCCL refuses them) and for ranks on different kinds of device."""
    by_dtype: dict[torch.dtype, list[torch.Tensor]] = {}
    for t in tensors:
        by_dtype.setdefault(t.dtype, []).append(t)
    for dtype, group in by_dtype.items():
        wide = torch.promote_types(dtype, torch.float64) if widen else dtype
        flat = torch.cat([t.reshape(-1).to(device="cpu", dtype=wide) for t in group])
        collective(flat)
        for t, view in zip(group, views_of(flat, group)):
            t.copy_(view)


def all_reduce_mean(tensors: list[torch.Tensor], world: int, process_group) -> None:
    """Each tensor becomes its mean over the ranks, summed in fp64 (exact
    where the replicas are equal: n x / n is x again), the same bits on
    every rank."""

    def mean(flat: torch.Tensor) -> None:
        dist.all_reduce(flat, group=process_group)
        flat /= world

    through_flat(tensors, mean, widen=True)


def broadcast(tensors: list[torch.Tensor], src: int, process_group) -> None:
    through_flat(tensors, lambda flat: dist.broadcast(flat, src=src, group=process_group))


def views_of(flat: torch.Tensor, tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """Views of consecutive slices of `flat` shaped as `tensors`."""
    out, offset = [], 0
    for t in tensors:
        out.append(flat[offset : offset + t.numel()].view_as(t))
        offset += t.numel()
    return out
