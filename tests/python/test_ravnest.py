"""Ravnest (bagua_ravnest.pipeline.Ravnest): clusters of asynchronous
pipelines that average each stage with its copies in the other clusters,
overlapped with training. What every replica computes is checked against an
independent replay in plain PyTorch of the events the run recorded (which
weights each forward used, which micro-batches each step summed, when each
averaging was started and when it landed); then layouts the planner can
write (clusters cut differently, a rank left out), synchronize(),
checkpoints and the errors of a bad set-up."""

import io

import pytest
import torch
from torch import nn

from bagua_ravnest.launch import run_world, values
from test_async_pipeline import batch, layer_factories, make_optimizer, packed, unpacked

GRID = ([[0, 1], [2, 3]], [[2, 4], [2, 4]])       # world 4 as 2 clusters of 2 stages
PAIRS = ([[0], [1]], [[4], [4]])                   # world 2 as 2 clusters of 1 stage
UNEVEN = ([[0, 1], [2]], [[1, 4], [4]])            # different cuts; rank 3 of 4 left out
CROSSED = ([[0, 1], [2, 3]], [[1, 4], [3, 4]])     # every stage meets a differently cut copy


def cluster_data(cluster, first=0):
    """Cluster c's micro-batch mb is batch(10000 c + mb): clusters see
    different data."""
    mb = first
    while True:
        yield batch(10000 * cluster + mb)
        mb += 1


def _ravnest(layout, kind, **options):
    from bagua_ravnest.pipeline import Layout, Ravnest

    return Ravnest(layer_factories(), Layout(*layout), lambda ps: make_optimizer(kind, ps), nn.functional.mse_loss,
                   timeout=30, **options)


def _train(rank, world, layout, kind, n, reduce_interval, update_frequency, chunk_bytes=1 << 20):
    rv = _ravnest(layout, kind, reduce_interval=reduce_interval, update_frequency=update_frequency,
                  record_trace=True, chunk_bytes=chunk_bytes)
    if rv.pipeline is None:
        rv.train(None, n)
        return packed(None)
    losses = rv.train(cluster_data(rv.cluster), n)
    result = dict(cluster=rv.cluster, stage=rv.stage_index, trace=rv.pipeline.trace, losses=losses,
                  params={k: v.clone() for k, v in rv.stage.state_dict().items()},
                  launched=rv.averager.launched, in_flight_at_launch=rv.averager.launched_in_flight)
    rv.synchronize()
    result["synchronized"] = {k: v.clone() for k, v in rv.stage.state_dict().items()}
    return packed(result)


class Replica:
    """One stage of one cluster in the replay: its module, optimizer and
    the live weights after each of its recorded events."""

    def __init__(self, layout, cluster, stage, kind, trace):
        from bagua_ravnest.pipeline import stage_module

        self.module = stage_module(layer_factories(), layout[1][cluster], stage, seed=0)
        self.opt = make_optimizer(kind, self.module.parameters())
        self.trace = trace
        self.states = [self.weights()]  # states[i]: after the first i events
        self.snapshots = {}              # (averaging k, chunk's names) -> the weights it started from

    def weights(self):
        return {k: v.detach().clone() for k, v in self.module.named_parameters()}

    @property
    def done(self):
        return len(self.states) > len(self.trace["events"])


def replay(layout, runs, update_frequency):
    """Walks every replica through its recorded events in an order the
    run's causality allows: a step needs the forwards of its micro-batches
    on every stage of its cluster; an averaging's landing needs every
    cluster's snapshot of it. Returns the final weights by (cluster, stage)."""
    reps = {(r["cluster"], r["stage"]): Replica(layout, r["cluster"], r["stage"], r["kind"], r["trace"]) for r in runs}
    clusters = layout[0]
    grads = {}  # (cluster, mb) -> per-stage gradients

    def gradient(c, mb):
        if (c, mb) in grads:
            return grads[c, mb]
        chain = [reps[c, s] for s in range(len(clusters[c]))]
        if any(rep.trace["forward_at"][mb] >= len(rep.states) for rep in chain):
            return None  # a stage's weights for this forward are not replayed yet
        x, y = batch(10000 * c + mb)
        used = [{k: v.clone().requires_grad_(True) for k, v in rep.states[rep.trace["forward_at"][mb]].items()}
                for rep in chain]
        h = x
        for rep, w in zip(chain, used):
            h = torch.func.functional_call(rep.module, w, (h,))
        (nn.functional.mse_loss(h, y) / update_frequency).backward()
        grads[c, mb] = [{k: v.grad for k, v in w.items()} for w in used]
        return grads[c, mb]

    def advance(c, s):
        rep = reps[c, s]
        kind, arg, *names = rep.trace["events"][len(rep.states) - 1]
        names = names[0] if names else ()
        if kind == "step":
            got = [gradient(c, mb) for mb in arg]
            if any(g is None for g in got):
                return False
            for name, p in rep.module.named_parameters():
                p.grad = sum(g[s][name] for g in got)
            rep.opt.step()
            rep.opt.zero_grad(set_to_none=True)
        elif kind == "launch":  # of averaging arg, for the chunk of tensors `names`
            rep.snapshots[arg, names] = {n: v for n, v in rep.weights().items() if n in names}
        else:  # "apply": the mean of every cluster's snapshot, less this one's
            others = [reps[k, s].snapshots.get((arg, names)) for k in range(len(clusters))]
            if any(o is None for o in others):
                return False
            with torch.no_grad():
                for name, p in rep.module.named_parameters():
                    if name in names:
                        mean = sum(o[name] for o in others) / len(others)
                        p.add_(mean - rep.snapshots[arg, names][name])
        rep.states.append(rep.weights())
        return True

    while not all(rep.done for rep in reps.values()):
        moved = False
        for (c, s), rep in reps.items():
            while not rep.done and advance(c, s):
                moved = True
        assert moved, "the recorded events contradict each other: no replica can go on"
    return {key: rep.states[-1] for key, rep in reps.items()}


@pytest.mark.parametrize("world,layout,kind,reduce_interval,update_frequency,chunk_bytes", [
    (4, GRID, "sgd", 2, 1, 1),  # every tensor a chunk of its own
    (4, GRID, "adam", 1, 2, 1 << 20),
    (2, PAIRS, "adam", 3, 1, 1 << 20),
])
def test_every_replica_matches_a_replay_of_its_events(world, layout, kind, reduce_interval, update_frequency,
                                                      chunk_bytes):
    n = 24
    runs = [r for r in unpacked(run_world(_train, world, layout, kind, n, reduce_interval, update_frequency,
                                          chunk_bytes, timeout=180)) if r is not None]
    for r in runs:
        r["kind"] = kind
        events = r["trace"]["events"]
        updates = n // update_frequency
        # Every reduce_interval steps an averaging starts; every chunk of it
        # lands, in order, before train() returns.
        count = updates // reduce_interval
        chunks = [e[2] for e in events if e[0] == "launch" and e[1] == 0]
        assert len(chunks) == (4 if chunk_bytes == 1 else 1)  # two Linears: weights and biases, or all at once
        for what in ("launch", "apply"):
            assert [e[1:] for e in events if e[0] == what] == [(k, c) for k in range(count) for c in chunks]
        assert r["launched"] == count
    expected = replay(layout, runs, update_frequency)
    for r in runs:
        for name, value in expected[r["cluster"], r["stage"]].items():
            torch.testing.assert_close(r["params"][name], value, rtol=1e-5, atol=1e-6,
                                       msg=lambda m: f"cluster {r['cluster']} stage {r['stage']} {name}: {m}")
    # Averaging never drains the pipeline: with two stages, the first has
    # micro-batches in flight when it starts some of them.
    if world == 4:
        first = [r for r in runs if r["stage"] == 0]
        assert any(k > 0 for r in first for k in r["in_flight_at_launch"])


def global_layers(run, layout):
    """The run's synchronized weights keyed by (global layer, name inside it)."""
    cluster, stage = run["cluster"], run["stage"]
    first = layout[1][cluster][stage - 1] if stage else 0
    out = {}
    for name, value in run["synchronized"].items():
        local, _, rest = name.partition(".")
        out[first + int(local), rest] = value
    return out


@pytest.mark.parametrize("layout", [UNEVEN, CROSSED], ids=["uneven_left_out", "crossed"])
def test_clusters_cut_differently_average_layer_by_layer(layout):
    """The planner cuts each cluster by its own nodes, so a stage's copy may
    be spread over two stages of another cluster (and a rank may be left
    out). After synchronize() every layer is the same in every cluster, and
    the clusters trained (the loss fell)."""
    runs = unpacked(run_world(_train, 4, layout, "adam", 30, 2, 1, 1, timeout=180))  # a chunk per tensor
    if layout is UNEVEN:
        assert runs[3] is None  # left out: it joined the set-up and returned
    runs = [r for r in runs if r is not None]
    by_cluster: dict[int, dict] = {}
    for r in runs:
        by_cluster.setdefault(r["cluster"], {}).update(global_layers(r, layout))
    a, b = by_cluster[0], by_cluster[1]
    assert a.keys() == b.keys() and len(a) > 0
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert all(r["launched"] == 30 // 2 for r in runs)


def test_layouts_are_checked():
    from bagua_ravnest.pipeline import Layout

    with pytest.raises(ValueError, match="one cluster only"):
        Layout([[0, 1], [1, 2]], [[1, 2], [1, 2]])
    with pytest.raises(ValueError, match="strictly rising"):
        Layout([[0, 1]], [[2, 2]])
    with pytest.raises(ValueError, match="whole model"):
        Layout([[0], [1]], [[4], [3]])
    with pytest.raises(ValueError, match="stage ends for 1"):
        Layout([[0], [1]], [[4]])
    layout = Layout(*CROSSED)
    # layer 0: ranks 0 and 2; 1-2: ranks 1 and 2; 3: ranks 1 and 3
    assert layout.segments() == [(0, 1, (0, 2)), (1, 3, (1, 2)), (3, 4, (1, 3))]
    assert layout.role(3) == (1, 1) and Layout(*UNEVEN).role(3) is None
    assert Layout.grid(2, [2, 4]) == Layout(*GRID)


def test_a_cluster_plan_becomes_a_layout():
    from bagua_ravnest import _C
    from bagua_ravnest.pipeline import Layout

    nodes = [{"name": f"n{i}", "memory_gb": 0.1, "compute": 1.0, "bandwidth_mbit": 1000.0} for i in range(4)]
    layers = [{"param_bytes": 4e6, "activation_bytes_per_sample": 3e4, "compute_s_per_sample": 1e-3}] * 6
    plan = _C.plan_clusters(nodes, layers, 8, 2.0, 0, method="bagua")
    layout = Layout.from_plan(plan, [n["name"] for n in nodes])
    assert layout.layers == 6
    assert set(layout.ranks) <= set(range(4))
    for cluster, members in zip(plan["clusters"], layout.clusters):
        assert [f"n{r}" for r in members] == [st["node"] for st in cluster["stages"]]
    with pytest.raises(ValueError, match="not among"):
        Layout.from_plan(plan, ["a", "b", "c", "d"])


def _disagree(rank, world):
    with pytest.raises(ValueError, match="disagree on the layout and settings"):
        _ravnest(GRID, "sgd", reduce_interval=2 if rank else 3)
    return True


def test_ranks_that_disagree_all_raise():
    assert all(values(run_world(_disagree, 4, timeout=120)))


def _checkpoint(rank, world, checkpoint):
    rv = _ravnest(PAIRS, "adam", reduce_interval=2)
    if checkpoint is not None:
        rv.load_state_dict(torch.load(io.BytesIO(checkpoint[rank]), weights_only=False))
        state = rv.state_dict()
        wrong = dict(state, cluster=1 - rv.cluster)
        with pytest.raises(ValueError, match="same layout"):
            rv.load_state_dict(wrong)
    else:
        rv.train(cluster_data(rv.cluster), 6)
    state = rv.state_dict()
    return packed(dict(state=state, averaged=rv.averager.applied))


def test_a_checkpoint_keeps_the_weights_and_the_averaging_count():
    saved = unpacked(run_world(_checkpoint, 2, None, timeout=120))
    assert all(s["averaged"] == 3 for s in saved)
    loaded = unpacked(run_world(_checkpoint, 2, [packed(s["state"]) for s in saved], timeout=120))
    for a, b in zip(saved, loaded):
        assert b["averaged"] == 3
        for name, value in a["state"]["stage"].items():
            assert torch.equal(value, b["state"]["stage"][name]), name
