"""Activations and gradients between neighbouring pipeline stages, as
tensors over the process group's send/recv (the bagua backend carries them
through shared memory between ranks of one host, over TCP otherwise).

Every message is a fixed-size header, then the payload. The header says
what the payload is (kind, micro-batch, dtype, shape); the receiver checks
it against what it expects *before* it allocates or receives the payload,
so a stage that sends the wrong thing is an error that names both sides
rather than a corrupt tensor or a hang. Nothing is pickled.

Sends are posted from the stage's own thread and complete in the
background (Outbox); receives run on a thread per neighbour (Receiver), so
a stage computes while its messages move. A receive is posted a message
ahead, payload included once its spec is known: over TCP a send leaves only
once its receive has been announced to the sender, and on a busy link that
announcement would queue behind the bulk traffic. Everything received, and every
receive failure, arrives on the stage's one event queue, which is where
its loop blocks (always with a timeout).
"""

from __future__ import annotations

import collections
import dataclasses
import datetime
import queue
import threading

import torch
import torch.distributed as dist

MAGIC = 0x5241564E  # "RAVN"
MAX_DIMS = 8
HEADER_WORDS = 6 + MAX_DIMS

ACTIVATION, GRADIENT, EVAL_ACTIVATION, EVAL_RESULT = 1, 2, 3, 4
KIND_NAMES = {ACTIVATION: "activation", GRADIENT: "gradient", EVAL_ACTIVATION: "evaluation activation",
              EVAL_RESULT: "evaluation result"}

# Wire codes of the dtypes a stage boundary may carry (a code, never a
# pickled dtype object).
DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.int64, torch.int32, torch.uint8,
          torch.bool]
_CODE = {d: i for i, d in enumerate(DTYPES)}


class PipelineError(RuntimeError):
    """A pipeline stage could not go on: a neighbour is dead or silent, or it
    sent something other than what this stage expects."""


@dataclasses.dataclass(frozen=True)
class Spec:
    """What a payload must look like."""

    shape: tuple[int, ...]
    dtype: torch.dtype

    def __str__(self) -> str:
        return f"{str(self.dtype).removeprefix('torch.')}{list(self.shape)}"

    @staticmethod
    def of(t: torch.Tensor) -> "Spec":
        return Spec(tuple(t.shape), t.dtype)


def encode_header(kind: int, micro_batch: int, t: torch.Tensor) -> torch.Tensor:
    if t.dim() > MAX_DIMS:
        raise PipelineError(f"a stage boundary carries at most {MAX_DIMS} dimensions, got shape {list(t.shape)}")
    if t.dtype not in _CODE:
        raise PipelineError(
            f"a stage boundary cannot carry {t.dtype}; use one of {', '.join(str(d) for d in DTYPES)}")
    header = torch.zeros(HEADER_WORDS, dtype=torch.int64)
    header[0], header[1], header[2], header[3], header[4] = MAGIC, kind, micro_batch, _CODE[t.dtype], t.dim()
    header[5] = t.numel()
    if t.dim():
        header[6 : 6 + t.dim()] = torch.tensor(t.shape, dtype=torch.int64)
    return header


def decode_header(header: torch.Tensor, max_bytes: int) -> tuple[int, int, Spec]:
    """(kind, micro_batch, spec) of a received header; raises PipelineError
    naming the problem for anything a sender of ours would never write."""
    w = header.tolist()
    if w[0] != MAGIC:
        raise PipelineError(f"received a header without the pipeline's magic number ({w[0]:#x}): the neighbour is "
                            "not a pipeline stage of this run, or the stream is out of step")
    kind, micro_batch, code, ndim, numel = w[1:6]
    if kind not in KIND_NAMES:
        raise PipelineError(f"received a header of unknown kind {kind}")
    if not 0 <= code < len(DTYPES):
        raise PipelineError(f"received a header with unknown dtype code {code}")
    if not 0 <= ndim <= MAX_DIMS:
        raise PipelineError(f"received a header with {ndim} dimensions (at most {MAX_DIMS})")
    shape = tuple(w[6 : 6 + ndim])
    if any(d < 0 for d in shape) or _numel(shape) != numel:
        raise PipelineError(f"received an inconsistent header: shape {list(shape)} but {numel} elements")
    spec = Spec(shape, DTYPES[code])
    nbytes = numel * torch.empty((), dtype=spec.dtype).element_size()
    if nbytes > max_bytes:
        raise PipelineError(f"received a header announcing {nbytes} bytes ({spec}), more than the {max_bytes} a "
                            "message may carry (max_message_bytes)")
    return kind, micro_batch, spec


def _numel(shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


@dataclasses.dataclass
class Event:
    """What the stage loop is woken by: a message in, or a failure."""

    kind: int
    micro_batch: int = -1
    tensor: torch.Tensor | None = None
    error: BaseException | None = None


class Link:
    """This stage's end of the connection to one neighbour."""

    def __init__(self, group, me: str, peer_stage: int, timeout: datetime.timedelta, tag: int):
        # Sends and receives address the peer by its rank in `group` (its
        # stage); errors name its global rank too.
        self.group, self.me, self.peer_stage = group, me, peer_stage
        self.peer_rank = dist.get_global_rank(group, peer_stage)
        self.timeout, self.tag = timeout, tag

    @property
    def peer(self) -> str:
        return f"stage {self.peer_stage} (rank {self.peer_rank})"

    def _wait(self, work, what: str) -> None:
        try:
            work.wait(self.timeout)
        except Exception as e:  # noqa: BLE001 - every failure becomes one named error
            seconds = self.timeout.total_seconds()
            raise PipelineError(f"{self.me}: {what} {self.peer} failed or did not finish within {seconds:g} s: is "
                                f"that rank alive? (a slower neighbour needs a larger timeout=) [{e}]") from e

    def post(self, kind: int, micro_batch: int, t: torch.Tensor) -> list:
        """Starts sending `t` (header, then payload); returns what to wait
        on: (work, tensors it reads, description)."""
        t = t.detach().contiguous()
        what = f"sending micro-batch {micro_batch}'s {KIND_NAMES[kind]} to"
        header = encode_header(kind, micro_batch, t)
        posted = [(self.group.send([header], self.peer_stage, self.tag), header, what)]
        if t.numel():
            posted.append((self.group.send([t], self.peer_stage, self.tag), t, what))
        return posted

    def send(self, kind: int, micro_batch: int, t: torch.Tensor) -> None:
        for work, _, what in self.post(kind, micro_batch, t):
            self._wait(work, what)

    def recv(self, kind: int, micro_batch: int, expect: Spec | None, max_bytes: int) -> torch.Tensor:
        """The payload of the next message, which must be `kind` for
        `micro_batch` and, when `expect` is given, of that spec."""
        return self.finish_recv(self.post_recv(expect), kind, micro_batch, expect, max_bytes)

    def post_recv(self, expect: Spec | None) -> "Posted":
        """Posts the receive of the next message: its header, and its payload
        too when its spec is known (`expect`). Over TCP a Gloo send leaves
        only once its receive has been announced to the sender, and on a busy
        shaped link that announcement queues behind the bulk traffic: a
        receive posted early is a send that does not wait for it."""
        header = torch.empty(HEADER_WORDS, dtype=torch.int64)
        posted = Posted(header, self.group.recv([header], self.peer_stage, self.tag))
        if expect is not None:
            posted.payload_known = True
            if _numel(expect.shape):
                posted.payload = torch.empty(expect.shape, dtype=expect.dtype)
                posted.payload_work = self.group.recv([posted.payload], self.peer_stage, self.tag)
        return posted

    def finish_recv(self, posted: "Posted", kind: int, micro_batch: int, expect: Spec | None,
                    max_bytes: int) -> torch.Tensor:
        """Waits for a posted message and checks it: it must be `kind` for
        `micro_batch` and, when `expect` is given, of that spec. A payload not
        posted with its header is posted once the header has said what it
        is, so no receive may be posted behind such a message before this."""
        what = f"receiving micro-batch {micro_batch}'s {KIND_NAMES[kind]} from"
        self._wait(posted.header_work, what)
        try:
            got_kind, got_mb, spec = decode_header(posted.header, max_bytes)
        except PipelineError as e:
            raise PipelineError(f"{self.me}: from {self.peer}: {e}") from None
        if (got_kind, got_mb) != (kind, micro_batch):
            raise PipelineError(
                f"{self.me}: expected micro-batch {micro_batch}'s {KIND_NAMES[kind]} from {self.peer}, got micro-batch "
                f"{got_mb}'s {KIND_NAMES[got_kind]}: the stages disagree on the schedule")
        if expect is not None and spec != expect:
            raise PipelineError(
                f"{self.me}: micro-batch {micro_batch}'s {KIND_NAMES[kind]} from {self.peer} is {spec}, expected "
                f"{expect}: {_hint(kind)}")
        payload = posted.payload
        if not posted.payload_known:
            payload = torch.empty(spec.shape, dtype=spec.dtype)
            if payload.numel():
                posted.payload_work = self.group.recv([payload], self.peer_stage, self.tag)
        elif payload is None:
            payload = torch.empty(spec.shape, dtype=spec.dtype)  # empty: no payload message
        if posted.payload_work is not None:
            self._wait(posted.payload_work, what)
        return payload


@dataclasses.dataclass
class Posted:
    """A message's receives, posted before it arrives."""

    header: torch.Tensor
    header_work: object
    payload_known: bool = False
    payload: torch.Tensor | None = None
    payload_work: object = None


def _hint(kind: int) -> str:
    if kind == GRADIENT:
        return "a gradient must have the shape and dtype of the activation it belongs to"
    return "every micro-batch must give the stage boundary the same shape and dtype (equal micro-batch sizes)"


class SameEveryTime:
    """Activations: whatever the first micro-batch brings, every later one
    must bring too."""

    def __init__(self):
        self.spec: Spec | None = None

    def expect(self, micro_batch: int) -> Spec | None:
        return self.spec

    def received(self, micro_batch: int, t: torch.Tensor) -> None:
        if self.spec is None:
            self.spec = Spec.of(t)


class AsSent:
    """Gradients: each must match the activation it belongs to, recorded
    before that activation was queued for sending."""

    def __init__(self):
        self.specs: dict[int, Spec] = {}

    def expect(self, micro_batch: int) -> Spec | None:
        return self.specs.get(micro_batch)

    def received(self, micro_batch: int, t: torch.Tensor) -> None:
        self.specs.pop(micro_batch, None)


class Receiver(threading.Thread):
    """Receives `count` messages of one kind from one neighbour, in order,
    onto `events`; the first failure ends it (as an error event). The next
    message's receives are posted before the current one has arrived
    (RECEIVES_AHEAD messages in all) wherever the current one's payload is
    already posted, so that its sender never waits for the announcement of
    a receive (Link.post_recv)."""

    RECEIVES_AHEAD = 2

    def __init__(self, link: Link, kind: int, first: int, count: int, expectation, max_bytes: int,
                 events: queue.Queue):
        super().__init__(name=f"pipeline-recv-{KIND_NAMES[kind]}", daemon=True)
        self.link, self.kind, self.first, self.count, self.expectation, self.max_bytes, self.events = (
            link, kind, first, count, expectation, max_bytes, events)

    def run(self) -> None:
        try:
            posted: collections.deque = collections.deque()  # (micro-batch, Posted)
            upcoming = self.first
            end = self.first + self.count
            for mb in range(self.first, end):
                # A message whose payload is not yet posted must be the last
                # one posted: its payload's receive comes after its header.
                while (upcoming < end and len(posted) < self.RECEIVES_AHEAD
                       and (not posted or posted[-1][1].payload_known)):
                    posted.append((upcoming, self.link.post_recv(self.expectation.expect(upcoming))))
                    upcoming += 1
                _, message = posted.popleft()
                # What the message must be may have become known since its
                # receive was posted (a gradient's activation was sent).
                t = self.link.finish_recv(message, self.kind, mb, self.expectation.expect(mb), self.max_bytes)
                self.expectation.received(mb, t)
                self.events.put(Event(self.kind, mb, t))
        except BaseException as e:  # noqa: BLE001 - handed to the stage loop
            self.events.put(Event(self.kind, error=e))


class Outbox:
    """Sends to one neighbour from the stage's own thread without waiting for
    the bytes to leave: the sends are posted (the backend moves them) and
    their handles kept, so the tensors stay alive until sent. Only when more
    than `depth` messages are outstanding does put() wait for the oldest
    (backpressure from a slow link); close() waits for all. Each wait has
    the link's timeout."""

    def __init__(self, link: Link, depth: int):
        self.link, self.depth = link, depth
        self.pending: collections.deque = collections.deque()

    def put(self, kind: int, micro_batch: int, t: torch.Tensor) -> None:
        self.pending.extend(self.link.post(kind, micro_batch, t))
        while len(self.pending) > 2 * self.depth:  # two sends per message
            work, _, what = self.pending.popleft()
            self.link._wait(work, what)

    def close(self) -> None:
        while self.pending:
            work, _, what = self.pending.popleft()
            self.link._wait(work, what)
