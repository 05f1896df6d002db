"""Ravnest's asynchronous pipeline inside one cluster (docs/pipeline.md;
semantics in docs/pipeline.md): this rank runs one stage.

Unlike a synchronous schedule (GPipe, 1F1B), the pipeline never drains
between optimizer steps. The first stage keeps feeding micro-batches as
long as fewer than `max_in_flight` (default: the number of stages) are
between their forward and their backward; every stage does backward work
before forward work whenever both are waiting; each stage steps its own
optimizer after every `update_frequency` backwards. A micro-batch's
backward runs on the weights its forward ran on (weight stashing,
VersionStore), so gradients are exact for the weights they belong to, just
applied a few updates late. The last stage owns the loss and the labels.

All stages call the same methods with the same arguments: ``train(data,
n)`` runs n micro-batches through and returns when all n have finished
their backward everywhere (the pipeline is then drained, and only then is
``state_dict()`` meaningful); ``evaluate(data, n)`` runs forward only.
"""

from __future__ import annotations

import collections
import contextlib
import datetime
import queue
import time
from typing import Callable, Iterable

import torch
import torch.distributed as dist
from torch import nn

from .agreement import agree
from .transport import (ACTIVATION, EVAL_ACTIVATION, EVAL_RESULT, GRADIENT, AsSent, Event, Link, PipelineError, Receiver,
                        Outbox, SameEveryTime, Spec)
from .versions import VersionStore

# The pipeline's messages carry this tag unless told otherwise; the bagua
# backend accepts user tags below 2**23.
DEFAULT_TAG = 7717


class AsyncPipeline:
    def __init__(self, stage: nn.Module, optimizer: torch.optim.Optimizer,
                 loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None, *, group=None,
                 max_in_flight: int | None = None, update_frequency: int = 1,
                 timeout: float | datetime.timedelta = 120.0, max_message_bytes: int = 1 << 30,
                 tag: int = DEFAULT_TAG, record_trace: bool = False, averager=None):
        """stage: this rank's layers (stage i = rank i of `group`, default the
        whole world). optimizer: over exactly the stage's parameters.
        loss_fn(output, target): needed on the last stage only. timeout:
        seconds (or a timedelta) any one message may take; a neighbour
        silent for longer is an error naming it. record_trace: keep, for
        tests, which weights every micro-batch used (``trace``). averager:
        a ClusterAverager that averages the stage with its copies in other
        clusters (Ravnest builds it); told of every optimizer step, polled
        while the stage works, waited for before train() returns."""
        if not dist.is_initialized():
            raise RuntimeError("AsyncPipeline needs torch.distributed initialized (init_process_group, torchrun)")
        # The default group is looked up on use, never held: a pipeline that
        # outlives destroy_process_group() must not keep the group (and its
        # Gloo threads, which may still be releasing Python tensors) alive
        # into interpreter shutdown.
        self._group = group
        self.stage_index = dist.get_rank(self.group)
        self.num_stages = dist.get_world_size(self.group)
        self.rank = dist.get_rank()
        self.me = f"async_pipeline stage {self.stage_index} (rank {self.rank})"
        self.first, self.last = self.stage_index == 0, self.stage_index == self.num_stages - 1
        self.max_in_flight = self.num_stages if max_in_flight is None else int(max_in_flight)
        self.update_frequency = int(update_frequency)
        self.timeout = timeout if isinstance(timeout, datetime.timedelta) else datetime.timedelta(seconds=timeout)
        self.max_message_bytes, self.tag = int(max_message_bytes), int(tag)
        self._check_arguments(stage, optimizer, loss_fn)
        self.stage, self.optimizer, self.loss_fn = stage, optimizer, loss_fn
        self.averager = averager
        self.versions = VersionStore(stage)
        self.micro_batches = 0  # finished backwards (every stage agrees once train() returns)
        self.updates = 0        # optimizer steps
        self._accumulated = 0   # backwards since the last step
        self.peak_in_flight = 0
        self.busy_seconds = 0.0  # in forward, backward and optimizer steps (the rest of train() is waiting)
        self.peak_activation_bytes = 0
        # forward_update[mb]: the optimizer steps before mb's forward;
        # updates[k]: the micro-batches step k summed; events: every change
        # of the live weights in order (("step", micro-batches), and an
        # averager's ("launch", k) and ("apply", k)); forward_at[mb]: the
        # events before mb's forward.
        self.trace = {"forward_update": {}, "updates": [], "events": [], "forward_at": {}} if record_trace else None
        if self.trace is not None and averager is not None:
            averager.trace = self.trace["events"]
        self._activations = SameEveryTime()  # pinned by the first activation, for every train() call
        self._failure: str | None = None  # why an earlier train()/evaluate() stopped
        self._agree("settings", [self.num_stages, self.max_in_flight, self.update_frequency, self.tag])

    @property
    def group(self):
        return self._group if self._group is not None else dist.group.WORLD

    # ---------------------------------------------------------------- setup

    def _check_arguments(self, stage, optimizer, loss_fn) -> None:
        if self.max_in_flight < 1:
            raise ValueError(f"{self.me}: max_in_flight must be at least 1, got {self.max_in_flight}")
        if self.update_frequency < 1:
            raise ValueError(f"{self.me}: update_frequency must be at least 1, got {self.update_frequency}")
        if self.timeout.total_seconds() <= 0:
            raise ValueError(f"{self.me}: timeout must be positive, got {self.timeout}")
        if self.last and loss_fn is None:
            raise ValueError(f"{self.me} is the last stage: it computes the loss, so give it loss_fn(output, target)")
        trainable = {id(p) for p in stage.parameters() if p.requires_grad}
        stepped = {id(p) for g in optimizer.param_groups for p in g["params"]}
        if stepped != trainable:
            raise ValueError(
                f"{self.me}: the optimizer must step exactly the stage's trainable parameters ({len(trainable)}), "
                f"it has {len(stepped)} of which {len(stepped - trainable)} are not the stage's: build it from "
                "stage.parameters()")

    def _agree(self, what: str, values: list[int]) -> None:
        agree(values, group=self.group, size=self.num_stages, me=self.me, member="stage", what=f"pipeline's {what}")

    def _links(self) -> tuple[Link | None, Link | None]:
        prev = Link(self.group, self.me, self.stage_index - 1, self.timeout, self.tag) if not self.first else None
        nxt = Link(self.group, self.me, self.stage_index + 1, self.timeout, self.tag) if not self.last else None
        return prev, nxt

    # ---------------------------------------------------------------- training

    def train(self, data: Iterable | None, micro_batches: int,
              on_finish: Callable[[int], None] | None = None) -> list[float]:
        """Runs `micro_batches` micro-batches through the pipeline. `data`
        yields (inputs, targets) per micro-batch: the first stage uses the
        inputs, the last the targets, the others may pass None (and never
        read it). `on_finish(micro_batch)` is called when this stage has
        finished a micro-batch's backward. Returns the last stage's loss of
        every micro-batch (an empty list elsewhere)."""
        if micro_batches < 0:
            raise ValueError(f"{self.me}: micro_batches must be non-negative, got {micro_batches}")
        self._check_not_failed()
        self._agree("train() call (micro-batches done so far, micro-batches now)", [self.micro_batches, micro_batches])
        if micro_batches == 0:
            return []
        if (self.first or self.last) and data is None:
            raise ValueError(f"{self.me}: the first and last stages need data (inputs and targets)")
        reads = data is not None and (self.first or self.last)
        with self._failing_for_good():
            return _Run(self, iter(data) if reads else None, micro_batches, on_finish).loop()

    def _check_not_failed(self) -> None:
        if self._failure is not None:
            raise PipelineError(
                f"{self.me}: an earlier train() or evaluate() failed ({self._failure}); messages of that run may "
                "still be in flight, so this pipeline cannot go on: build a new one (from a checkpoint) on every stage")

    @contextlib.contextmanager
    def _failing_for_good(self):
        try:
            yield
        except BaseException as e:
            self._failure = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise

    def _step_if_due(self, in_flight: int = 0) -> None:
        if self._accumulated < self.update_frequency:
            return
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.versions.updated()
        self._accumulated = 0
        self.updates += 1
        if self.averager is not None and self.averager.stepped(self.updates, in_flight):
            self.versions.updated()

    def _poll_averager(self) -> None:
        # An averaging that has arrived changes the live weights: new
        # forwards get a new version, the ones in flight keep theirs.
        if self.averager is not None and self.averager.poll():
            self.versions.updated()

    # ---------------------------------------------------------------- evaluation

    @torch.no_grad()
    def evaluate(self, data: Iterable | None, micro_batches: int) -> float:
        """Mean loss over `micro_batches` micro-batches of `data`, forward only
        on the live weights; every stage returns it."""
        self._check_not_failed()
        self._agree("evaluate() call", [micro_batches])
        with self._failing_for_good():
            return self._evaluate(data, micro_batches)

    def _evaluate(self, data: Iterable | None, micro_batches: int) -> float:
        prev, nxt = self._links()
        it = iter(data) if data is not None and (self.first or self.last) else None
        training = self.stage.training
        self.stage.eval()
        total = torch.zeros((), dtype=torch.float64)
        try:
            for mb in range(micro_batches):
                x, y = next(it) if it is not None else (None, None)
                h = x if self.first else prev.recv(EVAL_ACTIVATION, mb, None, self.max_message_bytes)
                out = self.stage(h)
                if self.last:
                    total += float(self.loss_fn(out, y))
                else:
                    nxt.send(EVAL_ACTIVATION, mb, out)
        finally:
            self.stage.train(training)
        # The result walks back along the chain by send/recv rather than a
        # broadcast: a Gloo collective's work is released on Gloo's own
        # thread, which crashes the interpreter if that happens during its
        # shutdown (and evaluate() is often the last thing a script does).
        if not self.last:
            total = nxt.recv(EVAL_RESULT, 0, Spec((), torch.float64), self.max_message_bytes)
        if not self.first:
            prev.send(EVAL_RESULT, 0, total)
        return float(total) / max(1, micro_batches)

    # ---------------------------------------------------------------- checkpoints

    def state_dict(self) -> dict:
        """The stage's weights and buffers, its optimizer, the counters and any
        gradient accumulated towards the next step. train() drains the
        pipeline before it returns, so there is nothing in flight to save."""
        grads = {}
        if self._accumulated:
            grads = {n: p.grad.detach().clone() for n, p in self.stage.named_parameters() if p.grad is not None}
        return {"stage": self.stage.state_dict(), "optimizer": self.optimizer.state_dict(),
                "stage_index": self.stage_index, "num_stages": self.num_stages, "micro_batches": self.micro_batches,
                "updates": self.updates, "accumulated": self._accumulated, "grads": grads,
                "averagings": self.averager.applied if self.averager is not None else 0}

    def load_state_dict(self, state: dict) -> None:
        if (state.get("stage_index"), state.get("num_stages")) != (self.stage_index, self.num_stages):
            raise ValueError(f"{self.me}: this checkpoint is stage {state.get('stage_index')} of "
                             f"{state.get('num_stages')}, not stage {self.stage_index} of {self.num_stages}: load each "
                             "stage's own checkpoint on the rank that runs that stage")
        self.stage.load_state_dict(state["stage"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.micro_batches, self.updates = int(state["micro_batches"]), int(state["updates"])
        self._accumulated = int(state["accumulated"])
        params = dict(self.stage.named_parameters())
        for p in params.values():
            p.grad = None
        for name, g in state["grads"].items():
            params[name].grad = g.clone()
        if self.averager is not None:
            self.averager.launched = self.averager.applied = int(state.get("averagings", 0))
        self.versions.updated()  # the stashed copy (if any) is of the old weights
        self._agree("checkpoint position (micro-batches, updates)", [self.micro_batches, self.updates])


class _Run:
    """One train() call: the stage's event loop and the threads that move
    its messages."""

    def __init__(self, pipe: AsyncPipeline, data, count: int, on_finish):
        self.p, self.data, self.count, self.on_finish = pipe, data, count, on_finish
        self.begin, self.end = pipe.micro_batches, pipe.micro_batches + count
        self.events: queue.Queue = queue.Queue()
        self.prev, self.next = pipe._links()
        self.sent = AsSent()
        self.threads: list = []
        self.to_prev = self.to_next = None
        if self.prev:
            self.to_prev = Outbox(self.prev, pipe.max_in_flight + 2)
            self.threads += [Receiver(self.prev, ACTIVATION, self.begin, count, pipe._activations,
                                                    pipe.max_message_bytes, self.events)]
        if self.next:
            self.to_next = Outbox(self.next, pipe.max_in_flight + 2)
            self.threads += [Receiver(self.next, GRADIENT, self.begin, count, self.sent,
                                                    pipe.max_message_bytes, self.events)]
        self.activations: collections.deque[Event] = collections.deque()
        self.gradients: collections.deque[Event] = collections.deque()
        self.in_flight: dict[int, tuple] = {}  # micro-batch -> (input, output, version)
        self.forwarded = self.finished = self.begin
        self.losses: list[float] = []

    def loop(self) -> list[float]:
        for t in self.threads:
            t.start()
        while self.finished < self.end:
            self.p._poll_averager()
            self._take_events(block=False)
            if self.gradients:  # backward first: it frees a version and unblocks the stages before
                ev = self.gradients.popleft()
                start = time.perf_counter()
                self._backward(ev.micro_batch, ev.tensor)
                self.p.busy_seconds += time.perf_counter() - start
            elif self._may_forward():
                start = time.perf_counter()
                self._forward()
                self.p.busy_seconds += time.perf_counter() - start
            else:
                self._take_events(block=True)
        # Drained: every message this stage expected has arrived, so the
        # receivers are done; what it sent must have left before train()
        # returns (on an error, nothing is waited for: the error is news).
        for outbox in (self.to_prev, self.to_next):
            if outbox is not None:
                outbox.close()
        for t in self.threads:
            t.join(self.p.timeout.total_seconds())
        # An averaging still travelling lands before train() returns, so
        # that what train() leaves (weights, a checkpoint) is whole.
        if self.p.averager is not None and self.p.averager.wait():
            self.p.versions.updated()
        self.p.micro_batches = self.end
        return self.losses

    def _may_forward(self) -> bool:
        if not self.p.first:
            return bool(self.activations)
        return self.forwarded < self.end and self.forwarded - self.finished < self.p.max_in_flight

    def _take_events(self, block: bool) -> None:
        deadline = time.monotonic() + self.p.timeout.total_seconds() + 5.0
        while True:
            try:
                # Receivers and senders time out on their own; the deadline is
                # a backstop beyond theirs. While an averaging travels the
                # wait is cut short now and then to look at it.
                if not block:
                    ev = self.events.get_nowait()
                elif self.p.averager is not None and self.p.averager.pending:
                    ev = self.events.get(timeout=0.002)
                else:
                    ev = self.events.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                if block and self.p.averager is not None and time.monotonic() < deadline:
                    self.p._poll_averager()
                    continue
                if block:
                    raise PipelineError(f"{self.p.me}: nothing arrived for {self.p.timeout.total_seconds() + 5:g} s "
                                        f"with micro-batches {self.finished}..{self.forwarded - 1} in flight") from None
                return
            if ev.error is not None:
                raise ev.error
            (self.gradients if ev.kind == GRADIENT else self.activations).append(ev)
            block = False

    def _forward(self) -> None:
        p, mb = self.p, self.forwarded
        x = y = None
        if self.data is not None:
            try:
                x, y = next(self.data)
            except StopIteration:
                raise ValueError(f"{p.me}: data ran out at micro-batch {mb}; train() was asked for "
                                 f"{self.count} from micro-batch {self.begin}") from None
        if p.first:
            inp = x
        else:
            inp = self.activations.popleft().tensor
            if inp.is_floating_point():
                inp.requires_grad_(True)
        if p.trace is not None:
            p.trace["forward_update"][mb] = p.updates
            p.trace["forward_at"][mb] = len(p.trace["events"])
        if p.last:
            # The last stage runs a micro-batch's forward, loss and backward
            # at once: no update can come in between, so it stashes nothing
            # and runs on the live weights (autograd accumulates into .grad).
            out = p.stage(inp)
            self.forwarded += 1
            loss = p.loss_fn(out, y)
            self.losses.append(loss.item())
            (loss / p.update_frequency).backward()
            self._finish(mb, inp, None)
            return
        version = p.versions.acquire()
        out = p.versions.forward(version, inp)
        self.forwarded += 1
        if not isinstance(out, torch.Tensor) or not out.is_floating_point() or not out.requires_grad:
            what = type(out).__name__ if not isinstance(out, torch.Tensor) else f"a {out.dtype} tensor" + (
                "" if out.requires_grad else " that needs no gradient")
            raise PipelineError(f"{p.me}: the stage's output is {what}; a cut between stages must carry one "
                                "floating-point tensor that depends on the stage's weights or input")
        self.in_flight[mb] = (inp, out, version)
        p.peak_in_flight = max(p.peak_in_flight, self.forwarded - self.finished)
        held = sum(o.numel() * o.element_size() for _, o, _ in self.in_flight.values())
        p.peak_activation_bytes = max(p.peak_activation_bytes, held)
        self.sent.specs[mb] = Spec.of(out)
        self.to_next.put(ACTIVATION, mb, out.detach())

    def _backward(self, mb: int, grad: torch.Tensor) -> None:
        inp, out, version = self.in_flight.pop(mb)
        torch.autograd.backward(out, grad)
        self._finish(mb, inp, version)

    def _finish(self, mb: int, inp, version) -> None:
        p = self.p
        if not p.first:
            if inp.grad is None:
                raise PipelineError(f"{p.me}: the stage's input got no gradient: its output does not depend on it")
            self.to_prev.put(GRADIENT, mb, inp.grad)
        if version is not None:
            p.versions.accumulate_grads(version)
            p.versions.release(version)
        p._accumulated += 1
        self.finished += 1
        if p.trace is not None and p._accumulated == p.update_frequency:
            p.trace["updates"].append(list(range(self.finished - p.update_frequency, self.finished)))
            p.trace["events"].append(("step", p.trace["updates"][-1]))
        p._step_if_due(self.forwarded - self.finished)
        if self.on_finish is not None:
            self.on_finish(mb)
