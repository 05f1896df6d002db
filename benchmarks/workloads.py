"""Models and generated data shared by the training benchmarks and the demo.

The data is a fixed synthetic classification task: inputs are Gaussian, labels
come from a randomly initialised "teacher" network, so the task is learnable,
needs no download, and is identical on every machine for a given seed.
"""

from __future__ import annotations

import torch
from torch import nn

NUM_CLASSES = 10


def build_model(name: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    if name == "mlp":
        return nn.Sequential(
            nn.Linear(256, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, NUM_CLASSES)
        )
    if name == "convnet":
        # CIFAR-size input (3x32x32); 2.01 M parameters, so gradient
        # traffic (8 MB per step) matters next to compute. Convolutions
        # before a BatchNorm have no bias (the norm cancels it, as in
        # ResNets): such a bias only ever gets a rounding-noise gradient,
        # which a frozen-variance optimizer (qadam, onebit_adam) would turn
        # into huge steps.
        return nn.Sequential(
            nn.Conv2d(3, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
            nn.Conv2d(64, 128, 3, padding=1, bias=False), nn.BatchNorm2d(128), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(128, 256, 3, padding=1, bias=False), nn.BatchNorm2d(256), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(256, 256, 3, padding=1, bias=False), nn.BatchNorm2d(256), nn.ReLU(), nn.AdaptiveAvgPool2d(4),
            nn.Flatten(), nn.Linear(256 * 16, 256), nn.ReLU(), nn.Linear(256, NUM_CLASSES),
        )
    raise ValueError(f"unknown model {name!r}; choose mlp or convnet")


def input_shape(name: str) -> tuple[int, ...]:
    return (256,) if name == "mlp" else (3, 32, 32)


class SyntheticTask:
    """An endless, deterministic stream of (x, y) batches for one rank."""

    def __init__(self, model: str, rank: int, batch_size: int, seed: int = 0):
        self.shape = input_shape(model)
        self.batch_size = batch_size
        self.generator = torch.Generator().manual_seed(seed * 7919 + rank)
        torch.manual_seed(10_000 + seed)  # the teacher is the same on every rank
        features = int(torch.tensor(self.shape).prod())
        self.teacher = nn.Sequential(nn.Linear(features, 64), nn.Tanh(), nn.Linear(64, NUM_CLASSES))

    @torch.no_grad()
    def batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.randn(self.batch_size, *self.shape, generator=self.generator)
        y = self.teacher(x.reshape(self.batch_size, -1)).argmax(dim=1)
        return x, y
