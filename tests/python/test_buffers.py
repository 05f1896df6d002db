"""When the wrapper broadcasts rank 0's buffers before a forward: always
with broadcast_buffers=True (torch DDP's default), never with False, and by
default (None) while the algorithm averages gradients but not while it
moves the weights rank by rank."""

import pytest
import torch
import torch.distributed as dist
from torch import nn

import bagua_ravnest
from bagua_ravnest.launch import run_world, values


class Counting(nn.Module):
    """Each forward adds rank + 1 to a buffer, so a rank's buffer shows
    whether rank 0's was copied over it before the forward."""

    def __init__(self, rank: int):
        super().__init__()
        torch.manual_seed(0)
        self.linear = nn.Linear(4, 2)
        self.register_buffer("seen", torch.zeros(1))
        self.rank = rank

    def forward(self, x):
        self.seen += self.rank + 1
        return self.linear(x)


def _seen_after_each_step(rank, world, algorithm, broadcast_buffers, steps):
    model = Counting(rank)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    kwargs = {} if broadcast_buffers in ("default", "set later") else {"broadcast_buffers": broadcast_buffers}
    ddp = bagua_ravnest.DistributedDataParallel(model, algorithm=algorithm, optimizer=opt, **kwargs)
    if broadcast_buffers == "set later":
        ddp.broadcast_buffers = True  # as torch DDP's attribute, read at every forward
    seen = []
    for _ in range(steps):
        opt.zero_grad()
        ddp(torch.ones(3, 4)).sum().backward()
        opt.step()
        seen.append(float(model.seen))
    dist.barrier()
    return seen


# What rank 1's buffer holds after each step (rank 0's after step k is k).
BROADCAST = [2.0, 3.0, 4.0, 5.0]
RANK_LOCAL = [2.0, 4.0, 6.0, 8.0]


@pytest.mark.parametrize(
    "algorithm,broadcast_buffers,rank1",
    [
        ("gradient_allreduce", "default", BROADCAST),
        ("gradient_allreduce", False, RANK_LOCAL),
        ("decentralized", "default", RANK_LOCAL),
        ("decentralized", True, BROADCAST),
        ("decentralized", "set later", BROADCAST),
        ("low_precision_decentralized", "default", RANK_LOCAL),
        # Averaged with the weights every second step: (2 + 4) / 2 = 3 at
        # step 2, (5 + 7) / 2 = 6 at step 4.
        ("local_sgd:period=2", "default", [2.0, 3.0, 5.0, 6.0]),
        # gradient_allreduce for two steps (every replica the same model),
        # then weights moved rank by rank: broadcast, then rank-local.
        ("async_model_average:warmup_steps=2,sync_interval_ms=60000", "default", [2.0, 3.0, 5.0, 7.0]),
    ],
)
def test_when_buffers_are_broadcast(algorithm, broadcast_buffers, rank1):
    rank0, got1 = values(run_world(_seen_after_each_step, 2, algorithm, broadcast_buffers, 4))
    if algorithm.startswith("local_sgd"):
        assert rank0 == [1.0, 3.0, 4.0, 6.0]
    else:
        assert rank0 == [1.0, 2.0, 3.0, 4.0]
    assert got1 == rank1


def _bad_value(rank, world):
    try:
        bagua_ravnest.DistributedDataParallel(Counting(rank), broadcast_buffers="yes")
    except TypeError as e:
        return str(e)
    return "accepted"


def test_broadcast_buffers_must_be_a_bool_or_none():
    for message in values(run_world(_bad_value, 2)):
        assert "broadcast_buffers must be True, False or None" in message and "'yes'" in message
