"""The backend and the DDP wrapper under torchrun, configured only by its
environment variables, with the algorithm chosen by BAGUA_ALGORITHM."""

import json
import os
import subprocess
import sys

SCRIPT = os.path.join(os.path.dirname(__file__), "scripts", "torchrun_train.py")


def test_torchrun_two_processes(tmp_path):
    env = dict(os.environ, BAGUA_ALGORITHM="gradient_allreduce:hierarchical=true", OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--rdzv-backend", "c10d",
           "--rdzv-endpoint", "127.0.0.1:0", "--max-restarts", "0", SCRIPT, str(tmp_path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert [r["world"] for r in ranks] == [2, 2]
    assert sorted(r["local_rank"] for r in ranks) == [0, 1]
    for r in ranks:
        # torchrun sets LOCAL_WORLD_SIZE=2: one host of two ranks.
        assert r["algorithm"] == "gradient_allreduce:allreduce=ring,hierarchical=true"
        assert r["step"] == 5
    assert ranks[0]["weights"] == ranks[1]["weights"], "replicas must stay identical"
