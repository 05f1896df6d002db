"""Stock torch DDP runs unchanged on the "bagua" backend and gives the same
model as on Gloo (with and without comm hooks)."""

import pytest
import torch
import torch.distributed as dist
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
from torch.nn.parallel import DistributedDataParallel as TorchDDP

from bagua_ravnest.launch import run_world, values
from models import mlp, train


def _compare(rank, world, hook_name):
    gloo = dist.new_group(backend="gloo")
    results = []
    for group in (None, gloo):  # None: the default group, backend "bagua"
        model = TorchDDP(mlp(batchnorm=True), process_group=group, bucket_cap_mb=0.01)
        if hook_name == "allreduce":
            model.register_comm_hook(group, default_hooks.allreduce_hook)
        elif hook_name == "fp16":
            model.register_comm_hook(group, default_hooks.fp16_compress_hook)
        results.append(train(model, rank)[0])
    return (results[0] - results[1]).abs().max().item()


@pytest.mark.parametrize("world", [2, 4])
@pytest.mark.parametrize("hook", [None, "allreduce", "fp16"])
def test_torch_ddp_on_bagua_matches_gloo(world, hook):
    # fp16 sums round after every addition, so a different (equally valid)
    # summation order changes results at fp16 precision; fp32 paths must agree
    # to fp32 rounding.
    tolerance = 1e-3 if hook == "fp16" else 1e-6
    for diff in values(run_world(_compare, world, hook)):
        assert diff <= tolerance
