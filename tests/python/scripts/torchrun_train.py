"""Launched by torchrun in test_torchrun.py: the user's view of the project.
Everything comes from torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK,
MASTER_ADDR, MASTER_PORT, LOCAL_WORLD_SIZE)."""

import json
import os
import sys

import torch
import torch.distributed as dist

import bagua_ravnest

dist.init_process_group("bagua")
torch.manual_seed(0)
model = bagua_ravnest.DistributedDataParallel(torch.nn.Linear(8, 2))
opt = torch.optim.SGD(model.parameters(), lr=0.1)
initial = [p.detach().flatten().tolist() for p in model.parameters()]
g = torch.Generator().manual_seed(dist.get_rank())
for _ in range(5):
    opt.zero_grad()
    model(torch.randn(4, 8, generator=g)).pow(2).mean().backward()
    opt.step()
weights = [p.detach().flatten().tolist() for p in model.parameters()]
out = {"rank": dist.get_rank(), "world": dist.get_world_size(), "local_rank": int(os.environ["LOCAL_RANK"]),
       "algorithm": model.algorithm, "step": model.step, "weights": weights, "initial_weights": initial,
       "hosts": len(set(model._host_keys))}
with open(os.path.join(sys.argv[1], f"rank{dist.get_rank()}.json"), "w") as f:
    json.dump(out, f)
dist.destroy_process_group()
