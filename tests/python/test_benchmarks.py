"""The benchmark scripts run end to end and write the documented JSON rows
(tiny settings: this checks the plumbing and schema, not speed)."""

import importlib.util
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _run(args, tmp_path):
    out = tmp_path / "out.json"
    proc = subprocess.run([sys.executable, *args, "--json", str(out)], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text())


def test_collectives_json(tmp_path):
    data = _run(["benchmarks/collectives.py", "--world-size", "2", "--sizes", "4K,64K", "--iters", "10"], tmp_path)
    rows = data["rows"]
    impls = ("bagua_ring", "bagua_multi_ring", "gloo", "bagua_bytegrad", "bagua_fp16", "bagua_sign1bit", "tcp_ring")
    assert {(r["impl"], r["bytes"]) for r in rows} == {(i, b) for i in impls for b in (4096, 65536)}
    ratio = {r["impl"]: r["wire_ratio"] for r in rows if r["bytes"] == 65536}
    assert ratio["bagua_ring"] == ratio["bagua_multi_ring"] == ratio["gloo"] == ratio["tcp_ring"] == 1.0
    assert ratio["bagua_fp16"] == 0.5
    # The multi-ring rows carry the plan its probe made.
    assert all(r["plan"].startswith("multi_ring plan: 2 ranks") for r in rows if r["impl"] == "bagua_multi_ring")
    assert 0.25 < ratio["bagua_bytegrad"] < 0.26 and ratio["bagua_sign1bit"] < 0.04
    for r in rows:
        assert r["op"] == "allreduce" and r["world_size"] == 2 and r["seconds"] > 0
        assert abs(r["busbw_GBps"] - r["algbw_GBps"] * 2 * (2 - 1) / 2) < 1e-12
        assert abs(r["algbw_GBps"] - r["bytes"] / r["seconds"] / 1e9) < 1e-9
    assert data["machine"]["cores"] >= 1


def test_train_json_and_plot(tmp_path):
    data = _run(["benchmarks/train.py", "--world-size", "2", "--algorithms", "ddp,gradient_allreduce,onebit_adam",
                 "--steps", "8", "--warmup-steps", "2", "--adam-warmup-steps", "3", "--rounds", "2"], tmp_path)
    rows = {r["algorithm"]: r for r in data["rows"]}
    assert set(rows) == {"ddp", "gradient_allreduce", "onebit_adam"}
    # Timed: after the common warm-up; for onebit_adam after its 3 exact-Adam
    # steps and the switch step.
    assert rows["ddp"]["timed_steps"] == rows["gradient_allreduce"]["timed_steps"] == 6
    assert rows["onebit_adam"]["timed_steps"] == 4
    # When the switch step is the run's only compressed step, it stays timed.
    (tmp_path / "short").mkdir()
    short = _run(["benchmarks/train.py", "--world-size", "2", "--algorithms", "onebit_adam", "--steps", "4",
                  "--warmup-steps", "1", "--adam-warmup-steps", "3", "--rounds", "1", "--malloc", "system"],
                 tmp_path / "short")
    assert short["rows"][0]["timed_steps"] == 1
    # The ranks' allocator setting is recorded (tuned unless asked otherwise).
    assert data["config"]["malloc"] == "tuned" and short["config"]["malloc"] == "system"
    # ... and took effect: tuned ranks carve large blocks from the heap, glibc's defaults map them.
    assert all(r["large_blocks_mapped"] is False for r in data["rows"])
    assert short["rows"][0]["large_blocks_mapped"] is True
    for r in rows.values():
        assert r["samples_per_s"] > 0 and r["step_ms_median"] > 0
        assert len(r["curve"]["loss"]) == 8
    assert rows["ddp"]["speedup_vs_ddp"] == 1.0
    # Same seeds, same data, same math: the two must train the same model.
    assert abs(rows["ddp"]["final_loss"] - rows["gradient_allreduce"]["final_loss"]) < 1e-4
    proc = subprocess.run([sys.executable, "benchmarks/plot.py", str(tmp_path / "out.json"), "--out", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "out_loss.png").stat().st_size > 1000
    report = subprocess.run([sys.executable, "benchmarks/report.py", str(tmp_path / "out.json")], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert report.returncode == 0 and "| gradient_allreduce |" in report.stdout, report.stderr
    assert "training ranks' malloc: tuned" in report.stdout


def test_charlm_reports_held_out_loss_at_equal_samples(tmp_path):
    data = _run(["benchmarks/train.py", "--world-size", "2", "--model", "charlm", "--algorithms",
                 "ddp_adam,qadam,decentralized",
                 "--steps", "6", "--warmup-steps", "1", "--adam-warmup-steps", "2", "--eval-every", "3",
                 "--batch-size", "4", "--rounds", "1", "--target-heldout-loss", "100"], tmp_path)
    rows = {r["algorithm"]: r for r in data["rows"]}
    assert rows["ddp_adam"]["spec"] == "torch DDP (gloo)"
    for r in rows.values():
        # Held out every 3 steps and at the end: the same steps (samples) for every algorithm.
        assert r["heldout_curve"]["steps"] == [3, 6]
        assert r["heldout_loss"] == r["heldout_curve"]["loss"][-1]
        assert 0 < r["heldout_loss"] < 6  # a byte model starts near log(256) = 5.55
        assert r["time_to_target_heldout_s"] == r["heldout_curve"]["seconds"][0]  # 100 is reached at once
    # The replicas' mean: the model itself where the replicas are equal,
    # another model where they differ by design.
    for name in ("ddp_adam", "qadam"):
        assert abs(rows[name]["heldout_loss_of_mean"] - rows[name]["heldout_loss"]) < 1e-6
    assert abs(rows["decentralized"]["heldout_loss_of_mean"] - rows["decentralized"]["heldout_loss"]) > 1e-7
    # Warm-up of qadam is exact Adam: both are Adam on the same data until its switch.
    assert abs(rows["qadam"]["curve"]["loss"][0] - rows["ddp_adam"]["curve"]["loss"][0]) < 1e-5


@pytest.mark.skipif(importlib.util.find_spec("horovod") is None,
                    reason="Horovod is not installed (`make horovod` builds it, about 20 minutes)")
def test_horovod_baseline_trains_the_same_model(tmp_path):
    data = _run(["benchmarks/train.py", "--world-size", "2", "--algorithms", "ddp,horovod,gradient_allreduce",
                 "--steps", "6", "--warmup-steps", "2", "--rounds", "2"], tmp_path)
    assert [r["algorithm"] for r in data["rows"]] == ["ddp", "horovod", "gradient_allreduce"]
    rows = {r["algorithm"]: r for r in data["rows"]}
    assert rows["horovod"]["spec"] == "horovod (gloo)" and rows["horovod"]["samples_per_s"] > 0
    # Horovod trains in processes of its own (its background thread would slow the others).
    assert rows["horovod"]["run"] == 1 and rows["ddp"]["run"] == rows["gradient_allreduce"]["run"] == 0
    # Horovod averages gradients like DDP: same seeds and data, same model.
    assert abs(rows["ddp"]["final_loss"] - rows["horovod"]["final_loss"]) < 1e-4


def test_bad_arguments_are_explained():
    proc = subprocess.run([sys.executable, "benchmarks/train.py", "--algorithms", "ddp,warp_drive"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "warp_drive" in proc.stderr + proc.stdout
    assert "gradient_allreduce" in proc.stderr + proc.stdout
    proc = subprocess.run([sys.executable, "benchmarks/train.py", "--algorithms", "onebit_adam:precondition=maybe"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "precondition='maybe' is not a boolean" in proc.stderr + proc.stdout


def test_demo_table_without_a_yardstick(capsys):
    # `demo.py --algorithms` may leave out ddp or ddp_adam: the speed column
    # then says "-" for what has no torch DDP of its optimizer in the run.
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    import demo

    row = dict(samples_per_s=100.0, bytes_sent_per_step=2e6, heldout_loss=1.5)
    demo.print_table([dict(row, algorithm="bytegrad"), dict(row, algorithm="qadam", heldout_loss_of_mean=1.25),
                      dict(row, algorithm="ddp_adam", samples_per_s=50.0)])
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4
    assert lines[1].split()[-1] == "-" and lines[2].split()[-1] == "1.2500"  # an older JSON has no mean's loss
    assert lines[1].split()[:2] == ["bytegrad", "SGD"] and lines[1].split()[3] == "-"
    assert lines[2].split()[:2] == ["qadam", "Adam"] and lines[2].split()[3] == "2.00x"


def _seeds_module():
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    import seeds

    return seeds


def test_seed_sweep_summary_math():
    seeds = _seeds_module()
    curve = lambda last: {"loss": [9.0, 9.0, last]}  # noqa: E731
    runs = {0: [dict(algorithm="ref", heldout_loss=2.0, heldout_curve=curve(2.0)),
                dict(algorithm="alg", heldout_loss=2.2, heldout_curve=curve(2.2))],
            1: [dict(algorithm="ref", heldout_loss=1.0, heldout_curve=curve(1.0)),
                dict(algorithm="alg", heldout_loss=0.9, heldout_curve=curve(0.9))]}
    e = seeds.summarize(runs, "ref")["alg"]
    assert set(e) == {"heldout_loss", "last3"}  # no replicas' mean in these rows
    h = e["heldout_loss"]
    assert h["seeds"] == 2 and abs(h["geomean_ratio"] - (1.1 * 0.9) ** 0.5) < 1e-12
    assert (h["min_ratio"], h["max_ratio"]) == (0.9, 1.1)
    import math
    stderr = abs(math.log(1.1) - math.log(0.9)) / 2  # stdev of two values / sqrt(2)
    assert abs(h["stderr_log"] - stderr) < 1e-12
    assert abs(h["ci95"][1] - h["geomean_ratio"] * math.exp(12.706 * stderr)) < 1e-9
    # last3: (9 + 9 + last) / 3 for each.
    assert abs(e["last3"]["geomean_ratio"] - ((20.2 / 20) * (18.9 / 19)) ** 0.5) < 1e-12
    assert abs(seeds.t975(47) - 2.0117) < 0.001 and abs(seeds.t975(200) - 1.9719) < 0.001
    assert seeds.parse_seeds("0-3,8") == [0, 1, 2, 3, 8]
    for bad in ("3-1", "1,1", ""):
        with pytest.raises(ValueError):
            seeds.parse_seeds(bad)


def test_seed_sweep_runs_and_continues(tmp_path):
    train_args = ["--world-size", "2", "--algorithms", "ddp,gradient_allreduce", "--steps", "4", "--warmup-steps",
                  "1", "--batch-size", "8", "--rounds", "1", "--eval-every", "2", "--quiet"]
    cmd = [sys.executable, "benchmarks/seeds.py", "--seeds", "0-1", "--reference", "ddp", "--out", str(tmp_path),
           "--", *train_args]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    e = summary["summary"]["gradient_allreduce"]["heldout_loss"]
    # The same model as torch DDP's on every seed: a ratio of 1.
    assert e["seeds"] == 2 and abs(e["geomean_ratio"] - 1) < 1e-4
    kept = {p: p.stat().st_mtime_ns for p in tmp_path.glob("seed_*.json")}
    assert len(kept) == 2
    proc = subprocess.run(cmd[:3] + ["0-2"] + cmd[4:], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert all(p.stat().st_mtime_ns == t for p, t in kept.items())  # seeds 0 and 1 were not run again
    assert json.loads((tmp_path / "summary.json").read_text())["summary"]["gradient_allreduce"]["heldout_loss"][
        "seeds"] == 3
    proc = subprocess.run(cmd[:-len(train_args)] + train_args + ["--seed", "3"], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2 and "--seed is set by seeds.py" in proc.stderr
