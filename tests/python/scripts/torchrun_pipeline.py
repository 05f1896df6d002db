"""Launched by torchrun in test_async_pipeline.py: an asynchronous pipeline
of one stage per process, configured only by torchrun's environment, with a
checkpoint of every stage written and read back."""

import json
import os
import sys

import torch
import torch.distributed as dist
from torch import nn

import bagua_ravnest  # noqa: F401  registers the backend
from bagua_ravnest.pipeline import AsyncPipeline, stage_module

dist.init_process_group("bagua")
rank, world = dist.get_rank(), dist.get_world_size()
layers = [lambda: nn.Linear(8, 32)] + [lambda: nn.Sequential(nn.Tanh(), nn.Linear(32, 32))] * (world - 2) + [
    lambda: nn.Sequential(nn.Tanh(), nn.Linear(32, 1))]
stage = stage_module(layers, list(range(1, world + 1)), rank, seed=0)
opt = torch.optim.Adam(stage.parameters(), lr=0.01)
pipe = AsyncPipeline(stage, opt, nn.functional.mse_loss, update_frequency=2, timeout=60)

g = torch.Generator().manual_seed(0)
w = torch.randn(8, 1, generator=g)
data = []
for _ in range(200):
    x = torch.randn(16, 8, generator=g)
    data.append((x, x @ w))
before = pipe.evaluate(data[:8], 8)
losses = pipe.train(data, len(data))
after = pipe.evaluate(data[:8], 8)
path = os.path.join(sys.argv[1], f"stage{rank}.pt")
torch.save(pipe.state_dict(), path)
pipe.load_state_dict(torch.load(path, weights_only=False))
again = pipe.evaluate(data[:8], 8)
with open(os.path.join(sys.argv[1], f"rank{rank}.json"), "w") as f:
    json.dump({"rank": rank, "world": world, "before": before, "after": after, "again": again,
               "losses": len(losses), "updates": pipe.updates, "micro_batches": pipe.micro_batches}, f)
dist.destroy_process_group()
