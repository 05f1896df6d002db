"""Weight stashing of a pipeline stage (bagua_ravnest/pipeline/versions.py):
a backward uses the weights of its forward although the optimizer stepped
in between, versions are shared until the next step, and a stage holds at
most S + 1 versions with S micro-batches in flight."""

import pytest
import torch
from torch import nn

from bagua_ravnest.pipeline.versions import VersionStore


def _stage():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3))


def test_backward_uses_the_weights_of_its_forward():
    stage = _stage()
    reference = _stage()  # the same initial weights
    opt = torch.optim.SGD(stage.parameters(), lr=0.5)
    store = VersionStore(stage)
    x0, x1 = torch.randn(4, 6), torch.randn(4, 6)

    v0 = store.acquire()
    y0 = store.forward(v0, x0)
    # Another micro-batch's backward and an optimizer step happen before
    # micro-batch 0's backward.
    v1 = store.acquire()
    store.forward(v1, x1).pow(2).sum().backward()
    store.accumulate_grads(v1)
    store.release(v1)
    opt.step()
    opt.zero_grad()
    store.updated()
    assert not torch.equal(stage[0].weight, reference[0].weight)

    y0.pow(2).sum().backward()
    store.accumulate_grads(v0)
    store.release(v0)
    # The gradient is the one of the initial weights, not of the stepped ones.
    reference(x0).pow(2).sum().backward()
    for mine, want in zip(stage.parameters(), reference.parameters()):
        torch.testing.assert_close(mine.grad, want.grad, rtol=0, atol=0)


def test_versions_are_shared_until_the_next_step_and_freed_when_unused():
    store = VersionStore(_stage())
    a, b = store.acquire(), store.acquire()
    assert a is b and store.versions_held == 1
    params = sum(p.numel() * 4 for p in _stage().parameters())
    assert store.bytes_held == params
    store.updated()
    c = store.acquire()
    assert c is not a and store.versions_held == 2
    store.release(a)
    assert store.versions_held == 2  # b still runs on it
    store.release(b)
    assert store.versions_held == 1
    store.release(c)
    assert store.versions_held == 1  # the current version stays for the next forward
    store.updated()
    assert store.versions_held == 0
    with pytest.raises(ValueError, match="released more often"):
        store.release(c)


@pytest.mark.parametrize("stages", [2, 4])
def test_at_most_s_plus_one_versions_with_s_in_flight(stages):
    # An asynchronous stage's order: keep S micro-batches in flight, finish
    # the oldest, step after every backward.
    stage = _stage()
    opt = torch.optim.SGD(stage.parameters(), lr=0.1)
    store = VersionStore(stage)
    in_flight = []
    most = 0
    for mb in range(20):
        v = store.acquire()
        in_flight.append((v, store.forward(v, torch.randn(2, 6))))
        most = max(most, store.versions_held)
        if len(in_flight) == stages:
            v, y = in_flight.pop(0)
            y.sum().backward()
            store.accumulate_grads(v)
            store.release(v)
            opt.step()
            opt.zero_grad()
            store.updated()
    assert most == stages  # S versions in use while the next forward starts on a new one
    assert store.peak_bytes == stages * sum(p.numel() * 4 for p in stage.parameters())
    assert store.versions_held <= stages + 1
    assert store.state()["in_flight"] == len(in_flight)
