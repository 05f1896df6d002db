"""Native bookkeeping must not grow with the number of steps (issue 13: about
1 KB per step and rank was held by per-tag queues of the shared-memory
transport). What is asserted is counted by the code itself, never resident
memory: once every rank has passed a barrier nothing is in flight, so the
transport tracks no tag at all, at step 50 as at step 1,500.
benchmarks/soak.py measures resident memory itself over long runs."""

import pytest
import torch
import torch.distributed as dist
from torch import nn

import bagua_ravnest
from bagua_ravnest.launch import run_world, values


def _tracked_tags_over_a_run(rank, world, algorithm, steps, checks):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
    if algorithm in ("qadam", "onebit_adam"):
        opt = bagua_ravnest.QAdamOptimizer(net.parameters(), lr=1e-3, warmup_steps=5)
    else:
        opt = torch.optim.SGD(net.parameters(), lr=0.01)
    # Small buckets: several bucket operations (each with fresh tags) a step.
    model = bagua_ravnest.DistributedDataParallel(net, algorithm=algorithm, optimizer=opt, bucket_cap_mb=0.0002)
    gloo = dist.new_group(backend="gloo")
    g = torch.Generator().manual_seed(rank)
    seen = {}
    for step in range(1, steps + 1):
        opt.zero_grad()
        nn.functional.cross_entropy(model(torch.randn(4, 8, generator=g)), torch.randint(0, 3, (4,), generator=g)).backward()
        opt.step()
        if step in checks:
            dist.barrier(group=gloo)  # nobody sends until everyone has counted
            seen[step] = model._transport.shared_memory_tracked_tags
            dist.barrier(group=gloo)
    return len(model._buckets.gradients), model._transport.shared_memory_peers, seen


@pytest.mark.parametrize("algorithm", ["gradient_allreduce", "bytegrad", "onebit_adam"])
def test_transport_tracks_nothing_between_steps_however_long_the_run(algorithm):
    checks = (1, 50, 1500)
    for buckets, peers, seen in values(run_world(_tracked_tags_over_a_run, 2, algorithm, 1500, checks, timeout=300)):
        assert buckets > 1 and peers, (buckets, peers)  # the case that leaked: many tags over shared memory
        assert seen == {s: 0 for s in checks}, seen
