"""Cutting an ``nn.Sequential`` into pipeline stages: where to cut (the
cluster planner's split over one chain of nodes), and building only this
rank's slice."""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn


def split(profile: dict, stages: int, compute: Sequence[float] | None = None, bandwidth_mbit: float = 1e5,
          micro_batch: int = 1, optimizer_state_factor: float = 2.0) -> list[int]:
    """Stage ends (layer index one past each stage's last layer) that make the
    slowest stage as fast as the planner's cost model can: per-layer compute
    of `profile` (bagua_ravnest.pipeline.profile) scaled by each stage's
    relative `compute` speed (default all equal), plus sending activations
    at `bandwidth_mbit`. Memory is not limited here (use
    python -m bagua_ravnest.plan for that)."""
    from .. import _C

    layers = profile["layers"]
    if stages < 1 or stages > len(layers):
        raise ValueError(f"split: {stages} stages for {len(layers)} layers; every stage needs at least one layer")
    compute = list(compute) if compute is not None else [1.0] * stages
    if len(compute) != stages:
        raise ValueError(f"split: {len(compute)} compute speeds for {stages} stages")
    nodes = [{"name": f"stage{s}", "memory_gb": 1e9, "compute": float(c), "bandwidth_mbit": float(bandwidth_mbit)}
             for s, c in enumerate(compute)]
    keys = ("param_bytes", "activation_bytes_per_sample", "compute_s_per_sample")
    plan = _C.split_layers(nodes, [{k: float(layer[k]) for k in keys} for layer in layers], micro_batch,
                           optimizer_state_factor)
    return [int(st["end_layer"]) for st in plan["stages"]]


def equal_split(layers: int, stages: int) -> list[int]:
    """Stage ends with the layers spread as evenly as counts allow."""
    if stages < 1 or stages > layers:
        raise ValueError(f"equal_split: {stages} stages for {layers} layers; every stage needs at least one layer")
    return [(s + 1) * layers // stages for s in range(stages)]


def stage_module(layers: Sequence[nn.Module | Callable[[], nn.Module]], ends: Sequence[int], stage: int,
                 seed: int | None = None) -> nn.Sequential:
    """Stage `stage`'s layers as an ``nn.Sequential``. `layers` are modules
    or factories; factories of other stages are never called, so a rank
    builds (and allocates) only its own layers. With `seed`, factory i runs
    under ``torch.manual_seed(seed + i)``: a layer's initial weights do not
    depend on how the model is cut."""
    ends = list(ends)
    if not ends or ends[-1] != len(layers) or any(b <= a for a, b in zip([0] + ends, ends)):
        raise ValueError(f"stage_module: stage ends {ends} must rise strictly and end at the {len(layers)} layers")
    if not 0 <= stage < len(ends):
        raise ValueError(f"stage_module: stage {stage} is not one of the {len(ends)} stages")
    begin = ends[stage - 1] if stage else 0
    built = []
    for i in range(begin, ends[stage]):
        layer = layers[i]
        if not isinstance(layer, nn.Module):
            if seed is not None:
                torch.manual_seed(seed + i)
            layer = layer()
        built.append(layer)
    return nn.Sequential(*built)
