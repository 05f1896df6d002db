"""The cluster planner from Python: profiling an nn.Sequential, the
`python -m bagua_ravnest.plan` command on hand-written inputs, and node
measurement under torchrun (docs/planner.md)."""

import json
import os
import subprocess
import sys

import pytest
import torch
from torch import nn

from bagua_ravnest.pipeline import profile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_profile_measures_every_layer():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Embedding(50, 16), nn.Flatten(), nn.Linear(16 * 4, 32), nn.ReLU(), nn.Linear(32, 5))
    tokens = torch.randint(0, 50, (6, 4))
    out = profile(model, tokens, repeats=2)
    layers = out["layers"]
    assert out["batch"] == 6 and out["calibration_s"] > 0
    assert len(layers) == 5
    assert [l["param_bytes"] for l in layers] == [50 * 16 * 4, 0, (64 * 32 + 32) * 4, 0, (32 * 5 + 5) * 4]
    assert [l["activation_bytes_per_sample"] for l in layers] == [4 * 16 * 4, 64 * 4, 32 * 4, 32 * 4, 5 * 4]
    assert all(l["compute_s_per_sample"] > 0 for l in layers)
    # Profiling leaves no gradients behind and keeps the mode.
    assert all(p.grad is None for p in model.parameters())


def test_profile_refuses_what_a_pipeline_cannot_cut():
    with pytest.raises(TypeError, match="nn.Sequential"):
        profile(nn.Linear(3, 3), torch.zeros(2, 3))


def _plan(tmp_path, nodes, layers, *extra):
    (tmp_path / "nodes.json").write_text(json.dumps(nodes))
    (tmp_path / "profile.json").write_text(json.dumps({"layers": layers}))
    return subprocess.run(
        [sys.executable, "-m", "bagua_ravnest.plan", "--nodes", str(tmp_path / "nodes.json"), "--profile",
         str(tmp_path / "profile.json"), "--json", str(tmp_path / "plan.json"), *extra],
        cwd=ROOT, capture_output=True, text=True, timeout=120)


LAYERS = [{"param_bytes": 4e6, "activation_bytes_per_sample": 2e5, "compute_s_per_sample": 1e-3}] * 12


def test_plan_command_prints_and_writes_both_plans(tmp_path):
    nodes = [
        {"name": "fast", "memory_gb": 0.2, "compute": 2.0, "bandwidth_mbit": 1000},
        {"name": "slow", "memory_gb": 0.2, "compute": 1.0, "bandwidth_mbit": 1000},
        {"name": "a", "memory_gb": 0.2, "compute": 1.0, "bandwidth_mbit": 1000},
        {"name": "b", "memory_gb": 0.2, "compute": 1.0, "bandwidth_mbit": 100},
    ]
    proc = _plan(tmp_path, nodes, LAYERS)
    assert proc.returncode == 0, proc.stderr
    assert "bagua planner" in proc.stdout and "Ravnest's method" in proc.stdout
    plans = json.loads((tmp_path / "plan.json").read_text())
    ours = plans["plan"]
    assert ours["fits"] and ours["samples_per_s"] > 0
    # Every layer is held exactly once in each cluster, in order.
    for cluster in ours["clusters"]:
        ends = [(s["first_layer"], s["end_layer"]) for s in cluster["stages"]]
        assert ends[0][0] == 0 and ends[-1][1] == 12
        assert all(a[1] == b[0] for a, b in zip(ends, ends[1:]))
        for s in cluster["stages"]:
            node = next(n for n in nodes if n["name"] == s["node"])
            assert s["memory_bytes"] <= node["memory_gb"] * 1e9
        # A cluster's pace: its slowest stage, or its round trip over the
        # stage count (at most that many micro-batches in flight).
        bounds = [max(s["time_s"] for s in cluster["stages"]), cluster["round_trip_s"] / len(cluster["stages"])]
        assert cluster["time_per_microbatch_s"] == pytest.approx(max(bounds))
    if plans["ravnest"]["fits"]:
        assert ours["samples_per_s"] >= plans["ravnest"]["samples_per_s"] * (1 - 1e-9)


@pytest.mark.parametrize(
    "nodes,needle",
    [
        ([{"name": "n0", "memory_gb": 0.01, "compute": 1, "bandwidth_mbit": 100}], "short"),
        ([{"name": "n0", "memory_gb": 8, "compute": 1, "bandwidth_mbit": 100},
          {"name": "tiny", "memory_gb": 0.00001, "compute": 1, "bandwidth_mbit": 100}], "'tiny' .* fits no layer"),
        ([{"name": "n0", "memory_gb": 8, "compute": 1}], "has no bandwidth_mbit"),
    ],
)
def test_plan_command_explains_impossible_inputs(tmp_path, nodes, needle):
    proc = _plan(tmp_path, nodes, LAYERS)
    assert proc.returncode != 0
    assert __import__("re").search(needle, proc.stderr), proc.stderr


def test_measure_nodes_under_torchrun(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    out = tmp_path / "nodes.json"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--rdzv-backend", "c10d",
           "--rdzv-endpoint", "127.0.0.1:0", "--max-restarts", "0", "-m", "bagua_ravnest.plan",
           "--measure-nodes", str(out), "--memory-gb", "3"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    nodes = json.loads(out.read_text())
    assert [n["name"].split("@")[0] for n in nodes] == ["rank0", "rank1"]
    for n in nodes:
        assert n["memory_gb"] == 3 and n["compute"] > 0 and n["bandwidth_mbit"] > 0
    assert nodes[0]["compute"] == 1.0  # relative to rank 0 without a profile
