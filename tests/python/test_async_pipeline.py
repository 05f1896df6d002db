"""The asynchronous pipeline (bagua_ravnest.pipeline.AsyncPipeline) at world
2 and 4: what each stage computes, checked against an independent replay in
plain PyTorch of the trace the run recorded (which weights each
micro-batch's forward used, which micro-batches each update summed);
the schedule's bounds; checkpoints; and the errors a broken pipeline must
give instead of a hang."""

import io
import os
import time

import pytest
import torch
from torch import nn

from bagua_ravnest.launch import run_world, values

WIDTH = 16
ENDS = {1: [4], 2: [2, 4], 4: [1, 2, 3, 4]}


def layer_factories():
    return [lambda: nn.Linear(8, WIDTH)] + [lambda: nn.Sequential(nn.Tanh(), nn.Linear(WIDTH, WIDTH))] * 2 + [
        lambda: nn.Sequential(nn.Tanh(), nn.Linear(WIDTH, 4))]


def batch(mb):
    g = torch.Generator().manual_seed(1000 + mb)
    return torch.randn(6, 8, generator=g), torch.randn(6, 4, generator=g)


def batches(first=0):
    mb = first
    while True:
        yield batch(mb)
        mb += 1


def packed(obj) -> bytes:
    """Tensors leave a worker as bytes: a tensor put on the result queue is
    shared through a file descriptor that dies with the worker."""
    blob = io.BytesIO()
    torch.save(obj, blob)
    return blob.getvalue()


def unpacked(results):
    return [torch.load(io.BytesIO(r), weights_only=False) for r in values(results)]


def make_optimizer(kind, params):
    if kind == "sgd":
        return torch.optim.SGD(params, lr=0.05, momentum=0.9)
    return torch.optim.Adam(params, lr=0.01)


def _stage(rank, world, kind):
    from bagua_ravnest.pipeline import stage_module

    stage = stage_module(layer_factories(), ENDS[world], rank, seed=0)
    return stage, make_optimizer(kind, stage.parameters())


def _train(rank, world, kind, n, update_frequency, max_in_flight):
    from bagua_ravnest.pipeline import AsyncPipeline

    stage, opt = _stage(rank, world, kind)
    pipe = AsyncPipeline(stage, opt, nn.functional.mse_loss, update_frequency=update_frequency,
                         max_in_flight=max_in_flight, record_trace=True, timeout=30)
    losses = pipe.train(batches(), n)
    params = {k: v.clone() for k, v in stage.state_dict().items()}
    param_bytes = sum(p.numel() * p.element_size() for p in stage.parameters())
    return packed(dict(trace=pipe.trace, params=params, losses=losses, peak_in_flight=pipe.peak_in_flight,
                       peak_version_bytes=pipe.versions.peak_bytes, param_bytes=param_bytes, updates=pipe.updates,
                       versions_held=pipe.versions.versions_held))


def replay(world, kind, n, update_frequency, traces):
    """Plain PyTorch, one process: micro-batch by micro-batch, each stage's
    forward on the weights its trace says it used, one backward through the
    whole chain, each stage's optimizer stepped when its trace's update is
    complete. Returns each stage's final state and the losses."""
    from bagua_ravnest.pipeline import stage_module

    stages = [stage_module(layer_factories(), ENDS[world], s, seed=0) for s in range(world)]
    opts = [make_optimizer(kind, st.parameters()) for st in stages]
    history = [[{k: v.detach().clone() for k, v in st.named_parameters()}] for st in stages]
    update_of = [{mb: k for k, group in enumerate(t["updates"]) for mb in group} for t in traces]
    last_of = [{k: group[-1] for k, group in enumerate(t["updates"])} for t in traces]
    acc = [dict() for _ in stages]
    losses = []
    for mb in range(n):
        x, y = batch(mb)
        weights = []
        h = x
        for s, st in enumerate(stages):
            w = {k: v.clone().requires_grad_(True) for k, v in history[s][traces[s]["forward_update"][mb]].items()}
            weights.append(w)
            h = torch.func.functional_call(st, w, (h,))
        loss = nn.functional.mse_loss(h, y)
        losses.append(loss.item())
        (loss / update_frequency).backward()
        for s, st in enumerate(stages):
            for k, v in weights[s].items():
                acc[s][k] = v.grad.clone() if k not in acc[s] else acc[s][k] + v.grad
            k = update_of[s].get(mb)
            if k is not None and last_of[s][k] == mb:
                for name, p in st.named_parameters():
                    p.grad = acc[s][name]
                opts[s].step()
                opts[s].zero_grad(set_to_none=True)
                acc[s] = {}
                history[s].append({name: p.detach().clone() for name, p in st.named_parameters()})
    return [st.state_dict() for st in stages], losses


@pytest.mark.parametrize("world", [2, 4])
@pytest.mark.parametrize("kind,update_frequency", [("sgd", 1), ("adam", 3)])
def test_every_stage_matches_a_replay_of_its_trace(world, kind, update_frequency):
    n = 40
    runs = unpacked(run_world(_train, world, kind, n, update_frequency, None, timeout=180))
    traces = [r["trace"] for r in runs]
    expected, losses = replay(world, kind, n, update_frequency, traces)
    for s, r in enumerate(runs):
        for name, value in expected[s].items():
            torch.testing.assert_close(r["params"][name], value, rtol=1e-5, atol=1e-6,
                                       msg=lambda m: f"stage {s} {name}: {m}")
        assert r["updates"] == n // update_frequency
        # Weight stashing keeps only what is in flight: at most S + 1 versions.
        assert r["peak_version_bytes"] <= (world + 1) * r["param_bytes"]
        assert r["versions_held"] <= 1
    torch.testing.assert_close(torch.tensor(runs[-1]["losses"]), torch.tensor(losses), rtol=1e-5, atol=1e-6)
    # The first stage never has more than S micro-batches between forward
    # and backward, so no forward runs on weights more than S - 1
    # micro-batches old.
    assert runs[0]["peak_in_flight"] <= world
    for mb, used in traces[0]["forward_update"].items():
        assert used >= max(0, mb - world + 1) // update_frequency, (mb, used)


@pytest.mark.parametrize("world", [2, 4])
def test_one_in_flight_is_plain_sequential_training(world):
    """With max_in_flight=1 nothing overlaps: every forward sees every
    earlier update, so the run is ordinary training of the whole model."""
    n, uf = 12, 2
    runs = unpacked(run_world(_train, world, "adam", n, uf, 1, timeout=180))
    for r in runs:
        assert r["trace"]["forward_update"] == {mb: mb // uf for mb in range(n)}
        assert r["peak_version_bytes"] <= r["param_bytes"]
    expected, _ = replay(world, "adam", n, uf, [r["trace"] for r in runs])
    for s, r in enumerate(runs):
        for name, value in expected[s].items():
            torch.testing.assert_close(r["params"][name], value, rtol=1e-5, atol=1e-6)


def _train_in_two(rank, world, first, second, checkpoint):
    """`first` micro-batches, a checkpoint, `second` more; or, with a
    checkpoint given, only the `second` from it."""
    from bagua_ravnest.pipeline import AsyncPipeline

    stage, opt = _stage(rank, world, "adam")
    pipe = AsyncPipeline(stage, opt, nn.functional.mse_loss, update_frequency=3, max_in_flight=1, timeout=30)
    state = None
    if checkpoint is None:
        pipe.train(batches(), first)
        state = packed(pipe.state_dict())  # as torch.save would: a copy, not the live tensors
    else:
        pipe.load_state_dict(torch.load(io.BytesIO(checkpoint[rank]), weights_only=False))
    losses = pipe.train(batches(pipe.micro_batches), second)
    return packed(dict(state=state, params=stage.state_dict(), losses=losses, updates=pipe.updates))


def test_a_checkpoint_resumes_the_same_run():
    world = 2
    # 7 micro-batches with update_frequency=3: one gradient is accumulated
    # but not yet applied when the checkpoint is taken.
    straight = unpacked(run_world(_train_in_two, world, 7, 8, None, timeout=120))
    saved = torch.load(io.BytesIO(straight[0]["state"]), weights_only=False)
    assert saved["accumulated"] == 1 and saved["grads"]
    checkpoint = [r["state"] for r in straight]
    resumed = unpacked(run_world(_train_in_two, world, 7, 8, checkpoint, timeout=120))
    for a, b in zip(straight, resumed):
        assert a["updates"] == b["updates"] == 5
        for name in a["params"]:
            assert torch.equal(a["params"][name], b["params"][name]), name
        assert a["losses"] == b["losses"]


def _load_other_stage(rank, world):
    from bagua_ravnest.pipeline import AsyncPipeline

    stage, opt = _stage(rank, world, "sgd")
    pipe = AsyncPipeline(stage, opt, nn.functional.mse_loss, timeout=30)
    state = pipe.state_dict()
    state["stage_index"] = 1 - rank
    with pytest.raises(ValueError, match="load each stage's own checkpoint"):
        pipe.load_state_dict(state)
    return True


def test_a_checkpoint_of_another_stage_is_refused():
    assert values(run_world(_load_other_stage, 2, timeout=60)) == [True, True]


def _disagree(rank, world):
    from bagua_ravnest.pipeline import AsyncPipeline

    stage, opt = _stage(rank, world, "sgd")
    AsyncPipeline(stage, opt, nn.functional.mse_loss, update_frequency=1 + rank, timeout=30)


def test_stages_that_disagree_on_settings_all_raise():
    results = run_world(_disagree, 2, timeout=60)
    for r in results:
        assert not r.ok and "disagree on the pipeline's settings" in r.error, r.error


def _no_loss(rank, world):
    from bagua_ravnest.pipeline import AsyncPipeline

    stage, opt = _stage(rank, world, "sgd")
    try:
        AsyncPipeline(stage, opt, None if rank == world - 1 else nn.functional.mse_loss, timeout=5)
    except ValueError as e:
        return str(e)
    return None


def test_the_last_stage_needs_a_loss():
    out = [r.value if r.ok else r.error for r in run_world(_no_loss, 2, timeout=60)]
    assert "last stage" in str(out[1]) and "loss_fn" in str(out[1])


class ShapeShifter(nn.Module):
    """Drops a column on micro-batch 3, as a stage with a data-dependent
    output shape would."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(8, WIDTH)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        h = self.linear(x)
        return h[:, :-1] if self.calls == 4 else h


def _shape_change(rank, world):
    from bagua_ravnest.pipeline import AsyncPipeline

    stage = ShapeShifter() if rank == 0 else nn.Sequential(nn.Tanh(), nn.Linear(WIDTH, 4))
    pipe = AsyncPipeline(stage, torch.optim.SGD(stage.parameters(), lr=0.1), nn.functional.mse_loss, timeout=5)
    pipe.train(batches(), 10)


def test_a_changed_activation_shape_is_named_on_receipt():
    results = run_world(_shape_change, 2, env={"HARNESS_SKIP_DESTROY": "1"}, timeout=90, failure_grace=30)
    assert not results[1].ok
    assert "micro-batch 3's activation from stage 0 (rank 0) is float32[6, 15], expected float32[6, 16]" in \
        results[1].error, results[1].error
    assert not results[0].ok and "stage 1 (rank 1)" in results[0].error, results[0].error


def _dies(rank, world, backend_shm):
    from bagua_ravnest.pipeline import AsyncPipeline

    stage, opt = _stage(rank, world, "sgd")
    pipe = AsyncPipeline(stage, opt, nn.functional.mse_loss, timeout=3)

    def data():
        for mb, b in enumerate(batches()):
            if rank == world - 1 and mb == 5:
                os._exit(3)  # the last stage dies mid-run
            yield b

    start = time.monotonic()
    try:
        pipe.train(data(), 50)
    except RuntimeError as e:
        seconds = time.monotonic() - start
        # A failed pipeline refuses to go on (messages of the failed run may
        # still be in flight) rather than mixing them into the next run.
        with pytest.raises(RuntimeError, match="an earlier train"):
            pipe.train(batches(), 1)
        with pytest.raises(RuntimeError, match="build a new one"):
            pipe.evaluate(batches(), 1)
        return str(e), seconds
    return None, time.monotonic() - start


@pytest.mark.parametrize("shm", ["1", "0"])
def test_a_dead_neighbour_is_a_named_error_within_the_timeout(shm):
    results = run_world(_dies, 2, shm, env={"HARNESS_SKIP_DESTROY": "1", "BAGUA_SHM": shm}, timeout=90,
                        failure_grace=30)
    assert results[1].error_type == "died"
    assert results[0].ok, results[0].error
    message, _ = results[0].value
    assert message is not None and "async_pipeline stage 0 (rank 0)" in message and "stage 1 (rank 1)" in message, \
        message
    # Not a hang: the survivor's error is the pipeline's own timeout (or the
    # dead peer's closed connection), named; no wall-clock bound is asserted
    # (the suite never depends on timing).
    assert "within 3 s" in message or "failed" in message, message


def test_headers_are_checked_before_use():
    from bagua_ravnest.pipeline.transport import (ACTIVATION, MAGIC, PipelineError, Spec, decode_header,
                                                  encode_header)

    t = torch.zeros(3, 5, dtype=torch.bfloat16)
    kind, mb, spec = decode_header(encode_header(ACTIVATION, 9, t), 1 << 20)
    assert (kind, mb, spec) == (ACTIVATION, 9, Spec((3, 5), torch.bfloat16))
    h = encode_header(ACTIVATION, 9, t)
    h[0] = MAGIC + 1
    with pytest.raises(PipelineError, match="magic"):
        decode_header(h, 1 << 20)
    h = encode_header(ACTIVATION, 9, t)
    h[5] = 16  # element count that the shape does not give
    with pytest.raises(PipelineError, match="inconsistent"):
        decode_header(h, 1 << 20)
    h = encode_header(ACTIVATION, 9, torch.zeros(1024))
    with pytest.raises(PipelineError, match="more than the 1000"):
        decode_header(h, 1000)
    h = encode_header(ACTIVATION, 9, t)
    h[3] = 99
    with pytest.raises(PipelineError, match="dtype code"):
        decode_header(h, 1 << 20)
    with pytest.raises(PipelineError, match="cannot carry"):
        encode_header(ACTIVATION, 0, torch.zeros(2, dtype=torch.complex64))


class _RecordingLink:
    """A link that logs when each message's receives are posted and when
    each is waited for; message mb's payload is float32[2, mb % 2 + 1]."""

    def __init__(self):
        self.log = []

    def post_recv(self, expect):
        from bagua_ravnest.pipeline.transport import Posted

        self.log.append("post")
        return Posted(torch.empty(1), None, payload_known=expect is not None)

    def finish_recv(self, posted, kind, mb, expect, max_bytes):
        self.log.append(f"finish {mb} {'known' if posted.payload_known else 'unknown'} {expect}")
        return torch.zeros(2, mb % 2 + 1)


def test_receives_are_posted_ahead_of_the_messages_they_wait_for():
    import queue

    from bagua_ravnest.pipeline.transport import ACTIVATION, GRADIENT, AsSent, Receiver, SameEveryTime, Spec

    # Activations: the first message's payload size comes with its header,
    # so nothing is posted behind it; from then on the next message's
    # receives are out before the current one is waited for.
    link = _RecordingLink()
    events = queue.Queue()
    Receiver(link, ACTIVATION, 0, 4, SameEveryTime(), 1 << 20, events).run()
    posts = [i for i, e in enumerate(link.log) if e.startswith("post")]
    finishes = [i for i, e in enumerate(link.log) if e.startswith("finish")]
    assert len(posts) == len(finishes) == 4
    assert link.log[finishes[0]].startswith("finish 0 unknown None")
    assert posts[1] > finishes[0]  # nothing behind a payload posted late
    for k in range(1, 3):
        assert posts[k + 1] < finishes[k], link.log  # k + 1 posted before k is waited for
    assert [events.get_nowait().micro_batch for _ in range(4)] == [0, 1, 2, 3]

    # Gradients: each is expected in its activation's spec, which may be
    # recorded only after its receive was posted; it is checked against the
    # spec known when it is waited for.
    link = _RecordingLink()
    sent = AsSent()
    sent.specs = {0: Spec((2, 1), torch.float32)}
    events = queue.Queue()
    receiver = Receiver(link, GRADIENT, 0, 2, sent, 1 << 20, events)
    original = link.finish_recv

    def record_the_next_activation(posted, kind, mb, expect, max_bytes):
        sent.specs[mb + 1] = Spec((2, (mb + 1) % 2 + 1), torch.float32)
        return original(posted, kind, mb, expect, max_bytes)

    link.finish_recv = record_the_next_activation
    receiver.run()
    assert link.log[:2] == ["post", "post"], link.log  # 0's payload was known: 1 went ahead
    assert link.log[3] == "finish 1 unknown float32[2, 2]", link.log
    assert events.get_nowait().micro_batch == 0 and events.get_nowait().micro_batch == 1


def test_under_torchrun(tmp_path):
    """Three stages under torchrun, from its environment alone: the loss falls,
    and every stage's checkpoint loads back to the same weights."""
    import json
    import subprocess
    import sys

    script = os.path.join(os.path.dirname(__file__), "scripts", "torchrun_pipeline.py")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "3", "--rdzv-backend", "c10d",
           "--rdzv-endpoint", "127.0.0.1:0", "--max-restarts", "0", script, str(tmp_path)]
    proc = subprocess.run(cmd, env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True, text=True,
                          timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(3)]
    assert [r["losses"] for r in ranks] == [0, 0, 200]  # the last stage owns the loss
    for r in ranks:
        assert r["world"] == 3 and r["updates"] == 100 and r["micro_batches"] == 200
        assert r["after"] < 0.5 * r["before"], r
        assert r["again"] == r["after"]
