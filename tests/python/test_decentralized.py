"""decentralized (D-PSGD over weights) against an independent reference in
plain torch.distributed over Gloo: every rank gathers everyone's weights and
mixes them by the mode's formula (docs/decentralized.md), then applies its own
gradient taken at the weights before the mix: x_{t+1} = W x_t - lr g(x_t)."""

import pytest
import torch
import torch.distributed as dist
from torch import nn

import bagua_ravnest
from bagua_ravnest.launch import run_world, values
from models import batches, construction_error, flat_params, mlp, resumed_run_is_identical
from references import reference_peer_mix


def _against_reference(rank, world, mode, interval, dtype):
    gloo = dist.new_group(backend="gloo")
    spec = f"decentralized:peer_selection_mode={mode},communication_interval={interval}"
    ours = bagua_ravnest.DistributedDataParallel(mlp(seed=rank).to(dtype), algorithm=spec)
    # Every rank starts from rank 0's weights, as the wrapper broadcasts them.
    ref = mlp(seed=0).to(dtype)
    params = list(ref.parameters())
    opt_ours = torch.optim.SGD(ours.parameters(), lr=0.05, momentum=0.9)
    opt_ref = torch.optim.SGD(params, lr=0.05, momentum=0.9)
    spread = []
    for step, (x, y) in enumerate(batches(rank, 7)):
        x = x.to(dtype)
        for model, opt in ((ours, opt_ours), (ref, opt_ref)):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
        if step % interval == 0:
            with torch.no_grad():
                flat = torch.cat([p.reshape(-1) for p in params])
                mixed = reference_peer_mix(flat, mode, step, gloo)
                offset = 0
                for p in params:
                    p.copy_(mixed[offset : offset + p.numel()].view_as(p))
                    offset += p.numel()
        opt_ours.step()
        opt_ref.step()
        spread.append(float((flat_params(ours) - flat_params(ref)).abs().max()))
    return max(spread), ours.algorithm, float(flat_params(ours).float().norm())


@pytest.mark.parametrize("world", [2, 4])
@pytest.mark.parametrize("mode", ["shift_one", "ring", "all"])
def test_matches_the_reference(world, mode):
    for diff, spec, _ in values(run_world(_against_reference, world, mode, 1, torch.float32)):
        # shift_one and ring add in the reference's order: equal to the bit;
        # all is a ring all-reduce, whose sums are ordered differently.
        assert diff <= (1e-6 if mode == "all" else 0.0), diff
        assert spec == f"decentralized:communication_interval=1,hierarchical=false,peer_selection_mode={mode}"


def test_communication_interval_and_bf16_weights():
    out = values(run_world(_against_reference, 4, "ring", 3, torch.bfloat16))
    for diff, _, _ in out:
        assert diff == 0.0, diff
    # Ranks train on different data and mix only every third step: they differ.
    assert len({norm for _, _, norm in out}) > 1


def _odd_shift_one(rank, world):
    return construction_error(algorithm="decentralized:peer_selection_mode=shift_one")


def test_shift_one_on_an_odd_world_fails_on_every_rank():
    for message in values(run_world(_odd_shift_one, 3)):
        assert "even number" in message and "3" in message, message


def _hierarchical(rank, world):
    gloo = dist.new_group(backend="gloo")
    ours = bagua_ravnest.DistributedDataParallel(mlp(), algorithm="decentralized:hierarchical=true")
    opt = torch.optim.SGD(ours.parameters(), lr=0.05)
    data = batches(rank, 2)
    # A local step first (no exchange inside no_sync), so that ranks differ.
    with ours.no_sync():
        x, y = next(data)
        nn.functional.cross_entropy(ours(x), y).backward()
    opt.step()
    before = flat_params(ours)
    x, y = next(data)
    nn.functional.cross_entropy(ours(x), y).backward()  # the mix replaces the weights here
    mixed = flat_params(ours)
    everyone = [torch.empty_like(before) for _ in range(world)]
    dist.all_gather(everyone, before, group=gloo)
    # Hosts {0, 1} and {2, 3}: each host's mean, then shift_one between the two leaders.
    expected = ((everyone[0] + everyone[1]) / 2 + (everyone[2] + everyone[3]) / 2) / 2
    return float((mixed - expected).abs().max()), float((everyone[0] - everyone[2]).abs().max())


def test_hierarchical_mixes_host_means_between_leaders():
    for diff, spread in values(run_world(_hierarchical, 4, env={"LOCAL_WORLD_SIZE": "2"})):
        assert spread > 0  # the ranks did differ before the mix
        assert diff == 0.0, diff


def _resume(rank, world):
    return resumed_run_is_identical(rank, "decentralized:peer_selection_mode=shift_one,communication_interval=2")


def test_a_resumed_run_continues_bit_identically():
    # The partner and the communication steps follow the step count, which
    # the checkpoint carries although the algorithm has no other state.
    assert all(values(run_world(_resume, 4)))
