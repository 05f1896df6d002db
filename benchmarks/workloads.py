"""Models and data shared by the training benchmarks and the demo.

- charlm: the real-data task, a character-level transformer on the Python
  standard library's source text (benchmarks/charlm.py).

The other tasks' data is generated, so it needs no download and is identical
on every machine for a given seed:
- mlp: Gaussian inputs labelled by a randomly initialised "teacher" network;
- convnet: noisy images of ten fixed smooth patterns, one per class (the
  image is Gaussian noise plus 0.2 times the class's pattern). A convnet
  learns it in a few dozen steps, so "time to a target loss" separates
  algorithms; the teacher task moved the convnet's loss only from 2.30 to
  2.25 in 30 steps, and a target there measured noise.
"""

from __future__ import annotations

import torch
from torch import nn

NUM_CLASSES = 10
MODELS = ("mlp", "convnet", "charlm")


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
    if name == "charlm":
        from charlm import CharLM

        return CharLM()
    raise ValueError(f"unknown model {name!r}; choose from {', '.join(MODELS)}")


def input_shape(name: str) -> tuple[int, ...]:
    return (256,) if name == "mlp" else (3, 32, 32)


PATTERN_AMPLITUDE = 0.2  # the convnet task's signal next to unit noise


def class_patterns(seed: int = 0) -> torch.Tensor:
    """Ten smooth 3x32x32 patterns of unit standard deviation: random 4x4
    images scaled up bilinearly, so that convolutions and pooling see them."""
    g = torch.Generator().manual_seed(10_000 + seed)
    coarse = torch.randn(NUM_CLASSES, 3, 4, 4, generator=g)
    patterns = nn.functional.interpolate(coarse, size=(32, 32), mode="bilinear", align_corners=False)
    return patterns / patterns.flatten(1).std(dim=1).view(-1, 1, 1, 1)


class SyntheticTask:
    """An endless, deterministic stream of (x, y) batches for one rank."""

    def __init__(self, model: str, rank: int, batch_size: int, seed: int = 0):
        self.model, self.seed = model, seed
        self.shape = input_shape(model)
        self.batch_size = batch_size
        self.generator = torch.Generator().manual_seed(seed * 7919 + rank)
        if model == "convnet":
            self.patterns = class_patterns(seed)
        else:
            torch.manual_seed(10_000 + seed)  # the teacher is the same on every rank
            features = int(torch.tensor(self.shape).prod())
            self.teacher = nn.Sequential(nn.Linear(features, 64), nn.Tanh(), nn.Linear(64, NUM_CLASSES))

    loss = staticmethod(nn.functional.cross_entropy)

    def held_out(self, batches: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
        """Fresh samples of the same distribution, the same on every rank."""
        stream = SyntheticTask(self.model, 0, self.batch_size * batches, seed=self.seed)
        stream.generator = torch.Generator().manual_seed(99_991 + self.seed)
        return stream.batch()

    @torch.no_grad()
    def batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.randn(self.batch_size, *self.shape, generator=self.generator)
        if self.model == "convnet":
            y = torch.randint(0, NUM_CLASSES, (self.batch_size,), generator=self.generator)
            return x + PATTERN_AMPLITUDE * self.patterns[y], y
        y = self.teacher(x.reshape(self.batch_size, -1)).argmax(dim=1)
        return x, y


def make_task(model: str, rank: int, batch_size: int, seed: int = 0):
    """The data stream of `model`'s task for one rank: .batch() -> (x, y),
    .loss(output, y), .held_out() -> a fixed (x, y) set, the same on every rank."""
    if model == "charlm":
        from charlm import CharTask

        return CharTask(rank, batch_size, seed=seed)
    return SyntheticTask(model, rank, batch_size, seed=seed)
