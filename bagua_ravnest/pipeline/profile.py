"""Per-layer profile of an ``nn.Sequential`` for the cluster planner
(docs/planner.md): what each layer's weights weigh, what its output weighs
per sample, and how long its forward and backward take per sample."""

from __future__ import annotations

import statistics
import time

import torch
from torch import nn


def calibration_seconds(repeats: int = 5) -> float:
    """Seconds of a fixed fp32 workload (matrix products on one thread):
    a node's ``compute`` is the profiling machine's calibration over its
    own, so profiles and node speeds taken on different machines compare."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        g = torch.Generator().manual_seed(0)
        a = torch.randn(256, 256, generator=g)
        b = torch.randn(256, 256, generator=g)
        times = []
        for _ in range(repeats + 1):
            start = time.perf_counter()
            for _ in range(20):
                a = torch.tanh(a @ b)
            times.append(time.perf_counter() - start)
        return statistics.median(times[1:])
    finally:
        torch.set_num_threads(threads)


def _time(fn, repeats: int) -> float:
    fn()  # warm-up: allocations, lazy initialization
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def profile(model: nn.Sequential, sample_input: torch.Tensor, repeats: int = 5) -> dict:
    """The planner's profile of ``model`` on ``sample_input`` (a batch):
    ``{"layers": [{"param_bytes", "activation_bytes_per_sample",
    "compute_s_per_sample"}, ...], "batch": N, "calibration_s": t}``, one
    entry per child of the Sequential, in order. Compute is forward plus
    backward of that layer alone, the median of ``repeats`` runs, divided by
    the batch; activations are the layer's output."""
    if not isinstance(model, nn.Sequential):
        raise TypeError(
            f"profile needs an nn.Sequential (a pipeline cuts it between children), got {type(model).__name__}"
        )
    if len(model) == 0:
        raise ValueError("profile: the Sequential has no layers")
    if sample_input.dim() == 0:
        raise ValueError("profile: sample_input must be a batch (its first dimension counts samples)")
    batch = sample_input.shape[0]
    layers = []
    x = sample_input
    was_training = model.training
    model.train()
    try:
        for index, layer in enumerate(model):
            x_in = x.detach()
            if x_in.is_floating_point():
                x_in.requires_grad_(True)
            with torch.no_grad():
                out = layer(x_in)
            if not isinstance(out, torch.Tensor):
                raise TypeError(f"profile: layer {index} ({type(layer).__name__}) returns {type(out).__name__}, "
                                "not one tensor; a pipeline stage passes one tensor on")

            def step():
                y = layer(x_in)
                if y.requires_grad:
                    y.backward(torch.ones_like(y))

            seconds = _time(step, repeats)
            layer.zero_grad(set_to_none=True)
            layers.append(
                {
                    "param_bytes": sum(p.numel() * p.element_size() for p in layer.parameters()),
                    "activation_bytes_per_sample": out.numel() * out.element_size() / batch,
                    "compute_s_per_sample": seconds / batch,
                }
            )
            x = out
    finally:
        model.train(was_training)
    return {"layers": layers, "batch": batch, "calibration_s": calibration_seconds()}
