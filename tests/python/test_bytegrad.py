"""bytegrad, fp16_allreduce and bf16_allreduce against an independent
reference written with plain torch.distributed over Gloo: every rank gathers
everyone's exact gradients and applies the algorithm's math (docs/bytegrad.md)
itself, with the codec re-implemented in torch."""

import pytest
import torch
import torch.distributed as dist
from torch import nn

import bagua_ravnest
from bagua_ravnest.launch import run_world, values
from models import batches, flat_params, mlp
from references import ROUNDTRIP, reference_average


def _against_reference(rank, world, algorithm, cap_mb):
    gloo = dist.new_group(backend="gloo")
    ours = bagua_ravnest.DistributedDataParallel(mlp(), algorithm=algorithm, bucket_cap_mb=cap_mb)
    ref = mlp()
    params = list(ref.parameters())
    opt_ours = torch.optim.SGD(ours.parameters(), lr=0.05, momentum=0.9)
    opt_ref = torch.optim.SGD(params, lr=0.05, momentum=0.9)
    for x, y in batches(rank, 6):
        for model, opt in ((ours, opt_ours), (ref, opt_ref)):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
        # The reference reduces the same buckets (same members, same order).
        for members in ours._buckets.members:
            flat = torch.cat([params[i].grad.reshape(-1) for i in members])
            averaged = reference_average(flat, ROUNDTRIP[algorithm], gloo)
            offset = 0
            for i in members:
                g = params[i].grad
                g.copy_(averaged[offset : offset + g.numel()].view_as(g))
                offset += g.numel()
        opt_ours.step()
        opt_ref.step()
    return (flat_params(ours) - flat_params(ref)).abs().max().item(), ours.algorithm, len(ours._buckets.gradients)


@pytest.mark.parametrize("world", [2, 4])
@pytest.mark.parametrize("algorithm", ["bytegrad", "fp16_allreduce", "bf16_allreduce"])
def test_matches_the_reference(world, algorithm):
    cap = 0.001  # several buckets of odd sizes
    for diff, spec, nbuckets in values(run_world(_against_reference, world, algorithm, cap)):
        assert diff <= 1e-6, diff
        assert spec == f"{algorithm}:hierarchical=false"
        assert nbuckets > 2


def _hierarchical(rank, world):
    model = bagua_ravnest.DistributedDataParallel(mlp(), algorithm="bytegrad:hierarchical=true")
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    x, y = next(batches(rank, 1))
    nn.functional.cross_entropy(model(x), y).backward()
    grads = torch.cat([p.grad.reshape(-1) for p in model.parameters()])
    # The exact average, for comparison: compression only touched host sums.
    exact = mlp()
    nn.functional.cross_entropy(exact(x), y).backward()
    flat = torch.cat([p.grad.reshape(-1) for p in exact.parameters()])
    dist.all_reduce(flat)
    opt.step()
    # Plain lists: tensors would travel through shared memory the worker frees.
    return grads.tolist(), (flat / world).tolist(), model.algorithm


def test_hierarchical_compresses_only_between_hosts():
    out = [(torch.tensor(g), torch.tensor(e), s) for g, e, s in
           values(run_world(_hierarchical, 4, env={"LOCAL_WORLD_SIZE": "2"}))]
    for grads, exact, spec in out:
        assert spec == "bytegrad:hierarchical=true"
        assert torch.equal(grads, out[0][0])  # every rank ends with the same gradient
        span = (exact.max() - exact.min()).item()
        # Two host sums, each within half an 8-bit step of its chunk's range.
        assert (grads - exact).abs().max().item() <= 2 * span / 255
        assert (grads - exact).abs().max().item() > 0  # it did compress


def _half_model(rank, world):
    bagua_ravnest.DistributedDataParallel(mlp().half(), algorithm="bytegrad")


def test_non_fp32_gradients_are_refused_with_the_fix():
    for r in run_world(_half_model, 2):
        assert not r.ok and "compresses fp32 gradients" in r.error and "gradient_allreduce" in r.error


def test_compressed_algorithms_converge_like_ddp_on_the_benchmark_task(tmp_path):
    import json
    import os
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    out = tmp_path / "train.json"
    proc = subprocess.run([sys.executable, "benchmarks/train.py", "--world-size", "4", "--model", "mlp",
                           "--algorithms", "ddp,bytegrad,codec=fp16,exchange=allreduce,qadam,onebit_adam",
                           "--steps", "60",
                           "--quiet", "--json", str(out)], cwd=root, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = {r["algorithm"]: r for r in json.loads(out.read_text())["rows"]}
    ddp = rows["ddp"]["final_loss"]
    for name in ("bytegrad", "codec=fp16,exchange=allreduce"):
        assert abs(rows[name]["final_loss"] - ddp) <= 0.05 * ddp, (name, rows[name]["final_loss"], ddp)
    assert rows["codec=fp16,exchange=allreduce"]["spec"] == "codec=fp16,exchange=allreduce,hierarchical=false"
    # qadam and onebit_adam train with Adam (ddp with SGD): no more than 5% above ddp's loss.
    for name in ("qadam", "onebit_adam"):
        assert rows[name]["final_loss"] <= 1.05 * ddp, (name, rows[name]["final_loss"], ddp)
