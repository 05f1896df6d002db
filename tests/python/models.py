"""Small deterministic models and data shared by the DDP tests."""

import torch
from torch import nn


def mlp(seed: int = 0, batchnorm: bool = False) -> nn.Module:
    torch.manual_seed(seed)
    layers = [nn.Linear(20, 64), nn.ReLU()]
    if batchnorm:
        layers.append(nn.BatchNorm1d(64))
    layers += [nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 5)]
    return nn.Sequential(*layers)


def batches(rank: int, steps: int, batch: int = 16):
    g = torch.Generator().manual_seed(1000 + rank)
    for _ in range(steps):
        yield torch.randn(batch, 20, generator=g), torch.randint(0, 5, (batch,), generator=g)


def train(model: nn.Module, rank: int, steps: int = 20, lr: float = 0.05, optimizer_hook=None):
    """SGD with momentum; returns the flat parameters and the last loss."""
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    if optimizer_hook is not None:
        optimizer_hook(opt)
    loss = None
    for x, y in batches(rank, steps):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
    return flat_params(model), float(loss.detach())


def flat_params(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1).clone() for p in model.parameters()])
