"""Averaging one stage's layers with their copies in the other clusters
(Ravnest's cross-cluster step, docs/ravnest.md), overlapped with training.

Every `reduce_interval` optimizer steps the stage starts an averaging and
goes on training. The averaging walks the stage's tensors a chunk at a time
(whole tensors, about `chunk_bytes` per chunk): it snapshots the chunk,
all-reduces the snapshot on the group's background thread (multi_ring on
the bagua backend) and, once that has finished, adds the average's
difference from its own snapshot to the live tensors:

    w <- w + (mean over clusters of snapshot) - snapshot

so what the stage learned while the average travelled is kept, and two
replicas whose steps since the snapshot were equal end equal. Then the next
chunk. Chunks keep the averaging's memory at two chunks per group instead of
two copies of the stage; the chunks of one averaging are snapshotted at
slightly different times, which the formula allows (each chunk's delta is
its own). At most one averaging is in flight: the next one first finishes
the last (a cluster far behind holds the others back only that much).

Clusters may cut the model differently (the planner splits each cluster's
chain by its nodes' speeds), so the unit of averaging is a *segment*: a run
of layers held by the same ranks in every cluster, with a process group of
those ranks. A stage spans one or more segments; their groups run at once.
"""

from __future__ import annotations

import dataclasses
import datetime
import time

import torch
import torch.distributed as dist
from torch import nn

from .transport import PipelineError

DEFAULT_CHUNK_BYTES = 16 << 20


@dataclasses.dataclass(eq=False)
class Chunk:
    """Whole tensors of one segment, averaged together; `names` are their
    names in the stage (for traces)."""

    names: tuple[str, ...]
    tensors: list[torch.Tensor]
    snapshot: torch.Tensor | None = None
    result: torch.Tensor | None = None
    work: object = None

    def flat(self) -> torch.Tensor:
        return _flatten(self.tensors)

    def views(self, flat: torch.Tensor):
        return _views(self.tensors, flat)


def _flatten(tensors: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.detach().reshape(-1) for t in tensors])


def _views(tensors: list[torch.Tensor], flat: torch.Tensor):
    """Each of `tensors` with its part of `flat` (as _flatten laid them out)."""
    offset = 0
    for t in tensors:
        yield t, flat[offset : offset + t.numel()].view_as(t)
        offset += t.numel()


@dataclasses.dataclass(eq=False)
class Segment:
    """Layers [first, end) of the model, held by `holders` (one rank per
    cluster), and this rank's chunks of their parameters and floating-point
    buffers; `next` is the chunk the averaging in flight is at."""

    first: int
    end: int
    holders: tuple[int, ...]
    group: object
    chunks: list[Chunk]
    next: int = 0


def layer_tensors(stage: nn.Sequential, first_layer: int, begin: int, end: int) -> list[tuple[str, torch.Tensor]]:
    """(name in the stage, tensor) of the parameters and floating-point
    buffers of global layers [begin, end) of a stage whose child 0 is global
    layer `first_layer`."""
    out: list[tuple[str, torch.Tensor]] = []
    for layer in range(begin, end):
        prefix = str(layer - first_layer)
        child = stage[layer - first_layer]
        out += [(f"{prefix}.{n}", p) for n, p in child.named_parameters()]
        out += [(f"{prefix}.{n}", b) for n, b in child.named_buffers() if b.is_floating_point()]
    return out


def chunked(named: list[tuple[str, torch.Tensor]], chunk_bytes: int) -> list[Chunk]:
    """Consecutive whole tensors, a new chunk whenever the next tensor would
    take the current one past chunk_bytes (a larger tensor is a chunk)."""
    chunks: list[Chunk] = []
    size = 0
    for name, t in named:
        nbytes = t.numel() * t.element_size()
        if not chunks or size + nbytes > chunk_bytes:
            chunks.append(Chunk((), []))
            size = 0
        chunks[-1].names += (name,)
        chunks[-1].tensors.append(t)
        size += nbytes
    return chunks


class ClusterAverager:
    def __init__(self, stage: nn.Sequential, first_layer: int, segments: list[tuple[int, int, tuple[int, ...], object]],
                 reduce_interval: int, timeout: datetime.timedelta, me: str, chunk_bytes: int = DEFAULT_CHUNK_BYTES):
        """segments: (first, end, holders, group) for the runs of this stage's
        layers (groups of one rank are skipped: nothing to average)."""
        if reduce_interval < 1:
            raise ValueError(f"{me}: reduce_interval must be at least 1, got {reduce_interval}")
        if chunk_bytes < 1:
            raise ValueError(f"{me}: chunk_bytes must be positive, got {chunk_bytes}")
        self.reduce_interval, self.timeout, self.me = int(reduce_interval), timeout, me
        self.segments = [Segment(a, b, h, g, chunked(layer_tensors(stage, first_layer, a, b), chunk_bytes))
                         for a, b, h, g in segments if len(h) > 1]
        self.launched = 0        # averagings started
        self.applied = 0         # averagings whose every chunk is in the weights
        self.launched_in_flight: list[int] = []  # for tests: micro-batches in flight at each start
        self.wait_seconds = 0.0  # blocked on an averaging (the overlap that did not happen)
        self.trace: list | None = None  # the pipeline's event trace, for tests

    @property
    def pending(self) -> bool:
        return self.launched > self.applied

    def stepped(self, updates: int, in_flight: int = 0) -> bool:
        """Called after every optimizer step; starts an averaging when one is
        due (after finishing the one before). True if the weights changed."""
        if not self.segments or updates % self.reduce_interval:
            return False
        changed = self.wait()
        self.launched += 1
        self.launched_in_flight.append(in_flight)
        for seg in self.segments:
            seg.next = 0
            self._launch(seg)
        return changed

    def poll(self) -> bool:
        """Lands every chunk that has arrived (and starts its segment's next);
        True if the weights changed."""
        changed = False
        for seg in self.segments:
            while self.pending and seg.next < len(seg.chunks) and seg.chunks[seg.next].work.is_completed():
                self._land(seg)
                changed = True
        self._check_done()
        return changed

    def wait(self) -> bool:
        """Finishes the averaging in flight (if any), blocking."""
        if not self.pending:
            return False
        start = time.perf_counter()
        for seg in self.segments:
            while seg.next < len(seg.chunks):
                self._land(seg)
        self.wait_seconds += time.perf_counter() - start
        self._check_done()
        return True

    def _launch(self, seg: Segment) -> None:
        chunk = seg.chunks[seg.next]
        chunk.snapshot = chunk.flat()
        chunk.result = chunk.snapshot.clone()
        chunk.work = dist.all_reduce(chunk.result, group=seg.group, async_op=True)
        if self.trace is not None:
            self.trace.append(("launch", self.launched - 1, chunk.names))

    @torch.no_grad()
    def _land(self, seg: Segment) -> None:
        chunk = seg.chunks[seg.next]
        # Also for a chunk poll() saw completed: a completed all-reduce may
        # have failed, and wait() is what raises its error.
        try:
            chunk.work.wait(self.timeout)
        except Exception as e:  # noqa: BLE001 (re-raised with the segment named)
            raise PipelineError(
                f"{self.me}: averaging layers {seg.first}..{seg.end - 1} with ranks {list(seg.holders)} failed or "
                f"did not finish within {self.timeout.total_seconds():g} s ({e}): are those ranks alive?") from e
        delta = chunk.result.div_(len(seg.holders)).sub_(chunk.snapshot)
        for t, d in chunk.views(delta):
            t.add_(d)
        chunk.snapshot = chunk.result = chunk.work = None
        if self.trace is not None:
            self.trace.append(("apply", self.launched - 1, chunk.names))
        seg.next += 1
        if seg.next < len(seg.chunks):
            self._launch(seg)

    def _check_done(self) -> None:
        if self.pending and all(seg.next == len(seg.chunks) for seg in self.segments):
            self.applied = self.launched

    @torch.no_grad()
    def average_now(self) -> None:
        """A blocking average of the current weights (every holder calls it):
        afterwards the copies of every layer are equal."""
        self.wait()
        for seg in self.segments:
            for chunk in seg.chunks:
                flat = chunk.flat()
                dist.all_reduce(flat, group=seg.group)
                for t, v in chunk.views(flat.div_(len(seg.holders))):
                    t.copy_(v)

    @torch.no_grad()
    def average_gradients(self) -> None:
        """All-reduces (means) the gradients of the stage's layers with their
        copies, blocking: the synchronous analogue of averaging, every step."""
        for seg in self.segments:
            for chunk in seg.chunks:
                grads = [t.grad for t in chunk.tensors if isinstance(t, nn.Parameter) and t.grad is not None]
                if not grads:
                    continue
                flat = _flatten(grads)
                dist.all_reduce(flat, group=seg.group)
                flat.div_(len(seg.holders))
                for g, mean in _views(grads, flat):
                    g.copy_(mean)
