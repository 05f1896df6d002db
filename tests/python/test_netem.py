"""The emulated cluster (benchmarks/netem): namespaces, shaped links, and
that nothing is left behind, whatever way a run ends. Skipped, with the
reason, where namespaces cannot be made (not root, no iproute2)."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

from netem import cluster as netem  # noqa: E402
from netem.network import label_for  # noqa: E402


def _unavailable() -> str:
    try:
        netem.check_available()
    except netem.NetemUnavailable as e:
        return str(e)
    return ""


pytestmark = pytest.mark.skipif(bool(_unavailable()), reason=f"emulated network unavailable: {_unavailable()}")


ECHO_SERVER = """
import socket, sys
s = socket.socket(); s.bind((sys.argv[1], 5055)); s.listen(1); s.settimeout(20)
c, _ = s.accept(); c.sendall(c.recv(5))
"""
ECHO_CLIENT = """
import socket, sys, time
for _ in range(100):
    try:
        c = socket.create_connection((sys.argv[1], 5055), timeout=5); break
    except OSError:
        time.sleep(0.1)
c.sendall(b"hello"); print(c.recv(5).decode())
"""


def _ours():
    return netem.leftovers(os.getpid())


def test_build_shape_and_remove():
    with netem.EmulatedCluster(3, [100, 100, 20]) as c:
        assert set(c.namespaces + [c.hub]) <= set(netem._namespaces())
        qdisc = subprocess.run(["tc", "-n", c.namespaces[2], "qdisc", "show", "dev", c.ifname],
                               capture_output=True, text=True).stdout
        assert "tbf" in qdisc and "20Mbit" in qdisc
        hub_side = subprocess.run(["tc", "-n", c.hub, "qdisc", "show", "dev", "v2"], capture_output=True,
                                  text=True).stdout
        assert "20Mbit" in hub_side, "the download direction is shaped too"
        # A TCP round trip from rank 0's namespace to rank 2's address.
        server = subprocess.Popen(["ip", "netns", "exec", c.namespaces[2], sys.executable, "-c", ECHO_SERVER,
                                   c.addresses[2]])
        try:
            reply = subprocess.run(["ip", "netns", "exec", c.namespaces[0], sys.executable, "-c", ECHO_CLIENT,
                                    c.addresses[2]], capture_output=True, text=True, timeout=30)
            assert reply.stdout.strip() == "hello", reply.stderr
        finally:
            server.kill()
            server.wait()
    assert _ours() == []


def test_removed_after_an_exception():
    with pytest.raises(RuntimeError, match="boom"):
        with netem.EmulatedCluster(2, [100, 100]):
            assert len(_ours()) == 3
            raise RuntimeError("boom")
    assert _ours() == []


def test_cli_removes_everything_on_sigterm():
    proc = subprocess.Popen([sys.executable, "benchmarks/netem/cluster.py", "--world-size", "2", "--bandwidth-mbit",
                             "50", "--", "sleep", "60"], cwd=ROOT, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and len(netem.leftovers(proc.pid)) < 3:
        time.sleep(0.1)
    assert len(netem.leftovers(proc.pid)) == 3
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) != 0
    assert netem.leftovers(proc.pid) == []
    assert "interrupted" in proc.stderr.read()


def test_stale_namespaces_of_dead_runs_are_removed():
    dead = subprocess.Popen(["true"])
    dead.wait()
    name = f"{netem.PREFIX}{dead.pid}-0"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        assert name in netem.cleanup_stale()
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)
    assert name not in netem._namespaces()


def test_bad_rates_are_explained():
    with pytest.raises(ValueError, match="one per rank"):
        netem.parse_rates("100,20,5", 2)
    assert label_for([100, 100]) == "uniform-100mbit"
    assert label_for([1000, 1000, 100, 20]) == "hetero-1000-1000-100-20mbit"


def test_train_on_two_shaped_namespaces(tmp_path):
    out = tmp_path / "train.json"
    # glibc's own malloc settings: no variable read at process start, so the
    # ranks are forked from run_world's fork server and enter their
    # namespaces from there (the quick bench below covers spawned ranks).
    proc = subprocess.run([sys.executable, "benchmarks/train.py", "--world-size", "2", "--model", "mlp",
                           "--algorithms", "ddp,ddp_fp16,gradient_allreduce", "--steps", "6", "--warmup-steps", "2",
                           "--rounds", "2", "--bandwidth-mbit", "200", "--malloc", "system", "--quiet",
                           "--json", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = {r["algorithm"]: r for r in json.loads(out.read_text())["rows"]}
    params = 256 * 512 + 512 + 512 * 512 + 512 + 512 * 10 + 10
    for name, element_bytes in (("ddp", 4), ("ddp_fp16", 2), ("gradient_allreduce", 4)):
        r = rows[name]
        assert r["network"] == "uniform-200mbit"
        # A ring all-reduce sends 2(n-1)/n of the gradients per rank and step;
        # TCP/IP framing adds about 5% on a 1500-byte MTU.
        theory = 2 * (2 - 1) / 2 * params * element_bytes
        assert 0.98 * theory < r["bytes_sent_per_step"] < 1.10 * theory, (name, r["bytes_sent_per_step"], theory)
    assert _ours() == [] and netem.leftovers() == []


def test_bench_quick_regenerates_its_sections_only(tmp_path):
    docs = tmp_path / "benchmarks.md"
    docs.write_text("# Benchmarks\n\nHand-written text stays.\n")
    # The second pass re-renders from the first one's JSON and must replace
    # each generated section, not add another.
    for extra in ([], ["--render"]):
        proc = subprocess.run([sys.executable, "benchmarks/bench.py", "--quick", "--docs", str(docs),
                               "--out", str(tmp_path / "out"), "--img", str(tmp_path / "img"), *extra],
                              cwd=ROOT, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
    text = docs.read_text()
    assert text.startswith("# Benchmarks\n\nHand-written text stays.")
    for part in ("", " realdata", " adam", " pipeline", " ravnest"):
        assert text.count(f"<!-- make bench{part}: begin -->") == 1, part
        assert text.count(f"<!-- make bench{part}: end -->") == 1, part
    assert "### loopback" in text and "### uniform-200mbit" in text
    assert (tmp_path / "img" / "bench_uniform-200mbit_speed.png").stat().st_size > 1000
    # Every algorithm on the real-data task, with its held-out loss; the
    # Adam family against exact Adam.
    realdata = text.split("<!-- make bench realdata: begin -->")[1].split("<!-- make bench realdata: end -->")[0]
    for name in ("| ddp |", "| ddp_adam |", "| bytegrad |", "| onebit_adam |", "held-out loss"):
        assert name in realdata, name
    assert (tmp_path / "img" / "bench_realdata_loopback_heldout.png").stat().st_size > 1000
    adam = text.split("<!-- make bench adam: begin -->")[1].split("<!-- make bench adam: end -->")[0]
    assert "| charlm | 2 | ddp_adam | 6 |" in adam and "| charlm | 2 | onebit_adam | 6 |" in adam
    # The pipeline schedules, each against torch's in the same run.
    pipeline = text.split("<!-- make bench pipeline: begin -->")[1].split("<!-- make bench pipeline: end -->")[0]
    for name in ("| async |", "| async:max_in_flight=4 |", "| torch_gpipe |", "| torch_1f1b |"):
        assert name in pipeline, name
    ravnest = text.split("<!-- make bench ravnest: begin -->")[1].split("<!-- make bench ravnest: end -->")[0]
    for name in ("| ravnest |", "| sync_1f1b |", "| ddp |"):
        assert name in ravnest, name
    proc = subprocess.run([sys.executable, "benchmarks/bench.py", "--parts", "adam,nope"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "unknown nope" in proc.stderr
    assert netem.leftovers() == []
