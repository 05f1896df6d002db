"""Several hosts, as docs/multinode.md tells a user to run them: one torchrun
per node (--nnodes 2, --node-rank 0|1, c10d rendezvous), here two "nodes" of
two processes each on this machine, on loopback. torchrun's LOCAL_WORLD_SIZE
makes each node a host of its own, so hierarchical=true reduces inside each
node and exchanges between the two node leaders."""

import json
import os
import socket
import subprocess
import sys

import pytest

SCRIPT = os.path.join(os.path.dirname(__file__), "scripts", "torchrun_train.py")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("algorithm,spec", [
    ("gradient_allreduce:hierarchical=true", "gradient_allreduce:allreduce=ring,hierarchical=true"),
    ("bytegrad", "bytegrad:hierarchical=false"),
])
def test_two_nodes_of_two_processes_train_identical_replicas(tmp_path, algorithm, spec):
    env = dict(os.environ, BAGUA_ALGORITHM=algorithm, OMP_NUM_THREADS="1")
    endpoint = f"127.0.0.1:{_free_port()}"
    nodes = []
    for node in (0, 1):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node-rank", str(node),
               "--nproc-per-node", "2", "--rdzv-backend", "c10d", "--rdzv-endpoint", endpoint,
               "--rdzv-id", f"test-{os.getpid()}", "--max-restarts", "0", SCRIPT, str(tmp_path)]
        nodes.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outputs = []
    try:
        for p in nodes:
            outputs.append(p.communicate(timeout=180)[0])
    finally:
        for p in nodes:
            p.kill()
    for node, (p, out) in enumerate(zip(nodes, outputs)):
        assert p.returncode == 0, f"node {node}:\n{out[-3000:]}"
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(4)]
    assert [r["world"] for r in ranks] == [4] * 4
    assert sorted(r["local_rank"] for r in ranks) == [0, 0, 1, 1]
    for r in ranks:
        assert r["algorithm"] == spec
        assert r["hosts"] == 2  # LOCAL_WORLD_SIZE=2 of WORLD_SIZE=4
        assert r["step"] == 5
        assert r["weights"] == ranks[0]["weights"], f"rank {r['rank']}'s replica differs from rank 0's"
    assert ranks[0]["weights"] != ranks[0]["initial_weights"]  # it did train
