"""Small deterministic models and data shared by the DDP tests."""

import io

import torch
from torch import nn


def mlp(seed: int = 0, batchnorm: bool = False, smooth: bool = False) -> nn.Module:
    """smooth: Tanh instead of ReLU, for tests that compare with a tolerance
    a run whose sums are ordered differently: a ReLU at its kink turns a
    last-bit difference into a different gradient."""
    torch.manual_seed(seed)
    layers = [nn.Linear(20, 64), nn.Tanh() if smooth else nn.ReLU()]
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


def resumed_run_is_identical(rank: int, spec: str, steps: int = 9, stop: int = 5) -> bool:
    """Trains `steps` steps under bagua_ravnest's DDP with `spec`, and again
    from a checkpoint (model and optimizer state_dict) taken after `stop`
    steps into fresh objects: whether both end with the same weights, bit
    for bit."""
    import bagua_ravnest

    def fresh():
        model = mlp()
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        return bagua_ravnest.DistributedDataParallel(model, algorithm=spec, optimizer=opt), opt

    def run(model, opt, data):
        for x, y in data:
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()

    data = list(batches(rank, steps))
    model, opt = fresh()
    run(model, opt, data[:stop])
    blob = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, blob)
    run(model, opt, data[stop:])
    uninterrupted = flat_params(model)
    blob.seek(0)
    saved = torch.load(blob, weights_only=False)
    model, opt = fresh()
    model.load_state_dict(saved["model"])
    opt.load_state_dict(saved["opt"])
    run(model, opt, data[stop:])
    return bool(torch.equal(flat_params(model), uninterrupted))


def construction_error(**ddp_kwargs) -> str:
    """The ValueError that bagua_ravnest's DDP raises when wrapping mlp()
    with these arguments ("no error" when it does not)."""
    import bagua_ravnest

    try:
        bagua_ravnest.DistributedDataParallel(mlp(), **ddp_kwargs)
    except ValueError as e:
        return str(e)
    return "no error"
