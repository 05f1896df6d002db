"""Ravnest: clusters of asynchronous pipelines that average across clusters
(docs/ravnest.md).

A *layout* says which ranks form each cluster (a chain, stage 0 first) and
where each cluster cuts the model's layers; the cluster planner writes one
(``Layout.from_plan``), or it is given. Every cluster trains the whole model
as an AsyncPipeline on its own data; every `reduce_interval` optimizer steps
each stage averages its layers with the ranks that hold the same layers in
the other clusters (ClusterAverager: on the backend's background thread,
multi-ring on the bagua backend, while the pipeline keeps running).

Every rank of the world constructs ``Ravnest`` with the same layout and
options and calls the same methods; a rank the layout leaves out takes part
in the set-up and then has nothing to do.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import zlib
from typing import Callable, Iterable, Sequence

import torch
import torch.distributed as dist
from torch import nn

from .agreement import agree
from .async_pipeline import AsyncPipeline
from .cluster_average import DEFAULT_CHUNK_BYTES, ClusterAverager
from .partition import stage_module


@dataclasses.dataclass(frozen=True)
class Layout:
    """clusters[c]: the ranks of cluster c in chain order; ends[c]: where
    cluster c's stages end (layer index one past each stage's last)."""

    clusters: tuple[tuple[int, ...], ...]
    ends: tuple[tuple[int, ...], ...]

    def __post_init__(self):
        clusters = tuple(tuple(int(r) for r in c) for c in self.clusters)
        ends = tuple(tuple(int(e) for e in c) for c in self.ends)
        object.__setattr__(self, "clusters", clusters)
        object.__setattr__(self, "ends", ends)
        if not clusters or any(not c for c in clusters):
            raise ValueError(f"ravnest layout: every cluster needs at least one rank, got {list(map(list, clusters))}")
        ranks = [r for c in clusters for r in c]
        if len(set(ranks)) != len(ranks) or min(ranks) < 0:
            raise ValueError(f"ravnest layout: a rank may be in one cluster only, once: {list(map(list, clusters))}")
        if len(ends) != len(clusters):
            raise ValueError(f"ravnest layout: {len(clusters)} clusters but stage ends for {len(ends)}")
        for c, (members, cuts) in enumerate(zip(clusters, ends)):
            if len(cuts) != len(members) or any(b <= a for a, b in zip((0,) + cuts, cuts)):
                raise ValueError(f"ravnest layout: cluster {c} has {len(members)} ranks, so it needs {len(members)} "
                                 f"strictly rising stage ends, got {list(cuts)}")
        if len({cuts[-1] for cuts in ends}) != 1:
            raise ValueError(f"ravnest layout: every cluster must hold the whole model, but the clusters end at "
                             f"layers {[cuts[-1] for cuts in ends]}")

    @classmethod
    def grid(cls, clusters: int, ends: Sequence[int]) -> "Layout":
        """`clusters` clusters of len(ends) consecutive ranks each, all cut
        at `ends` (world 4 as 2 × 2: ranks 0, 1 and 2, 3)."""
        s = len(ends)
        return cls(tuple(tuple(range(c * s, (c + 1) * s)) for c in range(clusters)), (tuple(ends),) * clusters)

    @classmethod
    def from_plan(cls, plan: dict, node_names: Sequence[str]) -> "Layout":
        """The layout of a cluster plan (python -m bagua_ravnest.plan --json,
        its "plan"); node_names[r] is the name of the node rank r runs on,
        as in the plan's nodes.json."""
        rank_of = {name: r for r, name in enumerate(node_names)}
        clusters, ends = [], []
        for c, cluster in enumerate(plan["clusters"]):
            missing = [st["node"] for st in cluster["stages"] if st["node"] not in rank_of]
            if missing:
                raise ValueError(f"ravnest layout: the plan's cluster {c} uses nodes {missing}, which are not among "
                                 f"the ranks' node names {list(node_names)}")
            clusters.append([rank_of[st["node"]] for st in cluster["stages"]])
            ends.append([int(st["end_layer"]) for st in cluster["stages"]])
        return cls(clusters, ends)

    @property
    def layers(self) -> int:
        return self.ends[0][-1]

    @property
    def ranks(self) -> list[int]:
        return [r for c in self.clusters for r in c]

    def role(self, rank: int) -> tuple[int, int] | None:
        """(cluster, stage) of `rank`, None if the layout leaves it out."""
        for c, members in enumerate(self.clusters):
            if rank in members:
                return c, members.index(rank)
        return None

    def stage_range(self, cluster: int, stage: int) -> tuple[int, int]:
        cuts = self.ends[cluster]
        return (cuts[stage - 1] if stage else 0), cuts[stage]

    def holders(self, layer: int) -> tuple[int, ...]:
        """The rank holding `layer` in each cluster, by cluster."""
        return tuple(members[next(s for s, e in enumerate(cuts) if layer < e)]
                     for members, cuts in zip(self.clusters, self.ends))

    def segments(self) -> list[tuple[int, int, tuple[int, ...]]]:
        """Maximal runs [first, end) of layers held by the same ranks in every
        cluster: the units averaged together."""
        out: list[tuple[int, int, tuple[int, ...]]] = []
        for layer in range(self.layers):
            h = self.holders(layer)
            if out and out[-1][2] == h:
                out[-1] = (out[-1][0], layer + 1, h)
            else:
                out.append((layer, layer + 1, h))
        return out

    def describe(self) -> str:
        k = len(self.clusters)
        lines = [f"ravnest layout: {k} cluster{'s' if k > 1 else ''} over {len(self.ranks)} ranks, {self.layers} layers"]
        for c, (members, cuts) in enumerate(zip(self.clusters, self.ends)):
            stages = ", ".join(f"rank {r}: layers {a}-{b - 1}" for r, a, b in zip(members, (0,) + cuts[:-1], cuts))
            lines.append(f"  cluster {c}: {stages}")
        return "\n".join(lines)

    def fingerprint(self) -> int:
        return zlib.crc32(json.dumps([self.clusters, self.ends]).encode())


class Ravnest:
    def __init__(self, layers: Sequence[nn.Module | Callable[[], nn.Module]], layout: Layout,
                 optimizer: Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer],
                 loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], *, reduce_interval: int = 4,
                 seed: int | None = 0, allreduce: str = "multi_ring", link_mbit: Sequence[float] | None = None,
                 timeout: float | datetime.timedelta = 120.0, chunk_bytes: int = DEFAULT_CHUNK_BYTES,
                 **pipeline_options):
        """layers: the model's layers as factories (a rank builds only its
        own) or modules. optimizer(params): builds a stage's optimizer.
        reduce_interval: optimizer steps between averagings. allreduce: the
        averaging groups' all-reduce on the bagua backend ("multi_ring",
        "ring" or "inner"; other backends use their own). link_mbit: each
        world rank's link rate for multi_ring plans (default: from
        BAGUA_LINK_MBIT or the world group's, else each group probes).
        chunk_bytes: an averaging moves the stage this much at a time (its
        memory: two chunks per averaging group).
        pipeline_options: AsyncPipeline's (max_in_flight, update_frequency,
        max_message_bytes, tag)."""
        if not dist.is_initialized():
            raise RuntimeError("Ravnest needs torch.distributed initialized (init_process_group, torchrun)")
        world, self.rank = dist.get_world_size(), dist.get_rank()
        if len(layers) != layout.layers:
            raise ValueError(f"ravnest: the layout cuts {layout.layers} layers but the model has {len(layers)}")
        if max(layout.ranks) >= world:
            raise ValueError(f"ravnest: the layout uses rank {max(layout.ranks)} but the world has {world} ranks")
        if int(reduce_interval) < 1:
            raise ValueError(f"ravnest: reduce_interval must be at least 1, got {reduce_interval}")
        self.layout, self.reduce_interval = layout, int(reduce_interval)
        self.timeout = timeout if isinstance(timeout, datetime.timedelta) else datetime.timedelta(seconds=timeout)
        self._agree_world("layout and settings",
                          [layout.fingerprint(), self.reduce_interval,
                           int(pipeline_options.get("update_frequency", 1)), int(pipeline_options.get("max_in_flight") or 0)])
        role = layout.role(self.rank)
        self.cluster, self.stage_index = role if role is not None else (None, None)
        self.me = (f"ravnest rank {self.rank} (cluster {self.cluster}, stage {self.stage_index})" if role is not None
                   else f"ravnest rank {self.rank} (left out of the layout)")
        # torch's rule: every rank creates every group, in the same order.
        bagua = dist.get_backend() == "bagua"
        rates = self._link_rates(link_mbit) if bagua else []
        cluster_groups = [dist.new_group(list(members), timeout=self.timeout,
                                         pg_options=self._group_options("ring", bagua, rates, members))
                          for members in layout.clusters]
        segment_groups = {}
        for _, _, holders in layout.segments():
            if len(holders) > 1 and holders not in segment_groups:
                members = sorted(holders)
                segment_groups[holders] = dist.new_group(
                    members, timeout=self.timeout, pg_options=self._group_options(allreduce, bagua, rates, members))
        self.pipeline: AsyncPipeline | None = None
        self.averager: ClusterAverager | None = None
        if role is None:
            return
        first, end = layout.stage_range(*role)
        self.stage = stage_module(layers, layout.ends[self.cluster], self.stage_index, seed=seed)
        mine = [(a, b, h, segment_groups.get(h)) for a, b, h in layout.segments() if a < end and b > first]
        # A segment never crosses a cut of any cluster, so this stage's
        # segments lie inside its layers.
        self.averager = ClusterAverager(self.stage, first, mine, self.reduce_interval, self.timeout, self.me,
                                        chunk_bytes=chunk_bytes)
        last = self.stage_index == len(layout.clusters[self.cluster]) - 1
        self.pipeline = AsyncPipeline(self.stage, optimizer(self.stage.parameters()), loss_fn if last else None,
                                      group=cluster_groups[self.cluster], timeout=self.timeout,
                                      averager=self.averager, **pipeline_options)

    @staticmethod
    def _link_rates(link_mbit) -> list[float]:
        from ..backend import link_mbit_of

        rates = [float(r) for r in link_mbit] if link_mbit is not None else link_mbit_of(dist.group.WORLD)
        if rates and len(rates) != dist.get_world_size():
            raise ValueError(f"ravnest: link_mbit has {len(rates)} rates for a world of {dist.get_world_size()} ranks")
        return rates

    @staticmethod
    def _group_options(allreduce: str, bagua: bool, rates: list[float], members: list[int]):
        """The bagua backend's options for a group of `members`: its
        all-reduce, and their link rates (so a multi-ring group plans without
        probing); None on other backends."""
        if not bagua:
            return None
        from ..backend import BackendOptions

        return BackendOptions(allreduce=allreduce,
                              link_mbit=",".join(f"{rates[r]:g}" for r in members) if rates else "")

    def _agree_world(self, what: str, values: list[int]) -> None:
        agree(values, group=None, size=dist.get_world_size(), me=f"ravnest rank {self.rank}", member="rank",
              what=what, hint=" (every rank must build Ravnest with the same layout and options)")

    # ---------------------------------------------------------------- use

    def train(self, data: Iterable | None, micro_batches: int, on_finish=None) -> list[float]:
        """Every cluster runs `micro_batches` micro-batches of its own `data`
        (the first and last stage of each cluster read it: give each cluster
        different data). Averagings happen on the way, never draining; the
        last one has landed when train() returns. Returns the last stage's
        losses (an empty list elsewhere)."""
        self._agree_world("train() call (micro-batches now)", [micro_batches])
        if self.pipeline is None:
            return []
        return self.pipeline.train(data, micro_batches, on_finish=on_finish)

    def evaluate(self, data: Iterable | None, micro_batches: int) -> float:
        """The cluster's mean loss on `data` (forward only); nan on a rank
        left out."""
        if self.pipeline is None:
            return float("nan")
        return self.pipeline.evaluate(data, micro_batches)

    def synchronize(self) -> None:
        """Averages every layer across clusters now, blocking: afterwards
        all clusters hold the same weights (every rank calls it)."""
        if self.averager is not None:
            self.averager.average_now()
            self.pipeline.versions.updated()

    def state_dict(self) -> dict:
        if self.pipeline is None:
            return {"rank": self.rank, "left_out": True}
        return {"layout": [list(map(list, self.layout.clusters)), list(map(list, self.layout.ends))],
                "cluster": self.cluster, **self.pipeline.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        if self.pipeline is None:
            return
        saved = state.get("layout")
        if saved != [list(map(list, self.layout.clusters)), list(map(list, self.layout.ends))] or \
                state.get("cluster") != self.cluster:
            raise ValueError(f"{self.me}: this checkpoint was saved by cluster {state.get('cluster')} of layout "
                             f"{saved}; load each rank's own checkpoint under the same layout")
        self.pipeline.load_state_dict(state)
