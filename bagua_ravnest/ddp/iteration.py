"""The autograd state machine of one training iteration: a forward begins
it; each parameter's post-accumulate-grad hook marks it ready (the engine
launches every complete bucket while backward goes on); a callback queued
at the first hook ends backward by waiting for every bucket. One failed
iteration leaves the wrapper failed: its replicas can no longer be trusted
to agree."""

from __future__ import annotations

import torch


class Iteration:
    def __init__(self, engine, buckets, params: list[torch.Tensor], names: list[str], staging,
                 find_unused_parameters: bool, on_backward_end):
        self._engine = engine
        self._buckets = buckets
        self._params = params
        self._names = names
        self._staging = staging
        self._find_unused_parameters = find_unused_parameters
        self._on_backward_end = on_backward_end
        self.syncing = False  # between a synchronized forward and the end of its backward
        self._callback_queued = False
        self._awaiting_forward = False  # a synchronized backward has finished
        self.failed = ""  # why an iteration failed; the wrapper is then unusable
        self._unused: list[int] = []

    def check_usable(self) -> None:
        if self.failed:
            raise RuntimeError(f"DistributedDataParallel failed in an earlier iteration: {self.failed}")

    def begin(self, sync: bool) -> None:
        """A training forward starts; `sync`: its backward communicates."""
        self.syncing = sync
        self._callback_queued = False
        self._awaiting_forward = False
        if sync:
            if self._buckets.has_gradients:
                self._buckets.attach_grad_views()
            self._engine.forward_pre_hook()

    def forward_done(self, output) -> None:
        self._unused = self._find_unused(output) if (self.syncing and self._find_unused_parameters) else []

    def _find_unused(self, output) -> list[int]:
        """Parameters not reachable from the output's autograd graph."""
        roots = [t.grad_fn for t in _tensors_in(output) if t.grad_fn is not None]
        seen, stack, used = set(), list(roots), set()
        while stack:
            fn = stack.pop()
            if fn is None or fn in seen:
                continue
            seen.add(fn)
            variable = getattr(fn, "variable", None)
            if variable is not None:
                used.add(id(variable))
            stack.extend(next_fn for next_fn, _ in fn.next_functions)
        return [i for i, p in enumerate(self._params) if id(p) not in used]

    def grad_hook(self, index: int):
        def hook(param: torch.Tensor) -> None:
            if self._awaiting_forward:
                raise RuntimeError(
                    "backward ran twice after one forward (retain_graph=True?); each synchronized backward needs "
                    "its own forward, or run the extra backward passes inside no_sync()"
                )
            if not self.syncing:
                return
            if not self._buckets.has_gradients:
                # The algorithm works on weights; backward only needs its end.
                self._queue_end_of_backward()
                return
            view = self._buckets.views[index]
            if param.grad is not None and param.grad.data_ptr() != view.data_ptr():
                view.copy_(param.grad)
                param.grad = view
            producer = self._staging.producer() if self._buckets.staged_gradients else 0
            if self._queue_end_of_backward():
                for i in self._unused:
                    # Their bucket slots hold zeros, or what no_sync() accumulated.
                    if self._params[i].grad is None:
                        self._buckets.views[i].zero_()
                        self._params[i].grad = self._buckets.views[i]
                    self._engine.mark_ready(i, producer)
            self._engine.mark_ready(index, producer)

        return hook

    def _queue_end_of_backward(self) -> bool:
        """Queues the end of backward once per iteration; True the first time."""
        if self._callback_queued:
            return False
        self._callback_queued = True
        torch.autograd.Variable._execution_engine.queue_callback(self._end_of_backward)
        return True

    def _end_of_backward(self) -> None:
        missing = self._engine.unready_tensors()
        if missing:
            names = ", ".join(self._names[i] for i in missing[:10])
            more = f" and {len(missing) - 10} more" if len(missing) > 10 else ""
            self.failed = (
                f"these parameters got no gradient in this iteration: {names}{more}. Pass "
                f"find_unused_parameters=True to DistributedDataParallel if parts of the model are unused, "
                f"or make sure every parameter takes part in the loss"
            )
            raise RuntimeError(self.failed)
        try:
            # The optimizer's stream waits for every bucket's copy back.
            self._engine.wait_all(self._staging.consumer() if self._buckets.staged_gradients else 0)
        except RuntimeError as e:
            self.failed = str(e)
            raise
        self.syncing = False
        self._awaiting_forward = True
        self._on_backward_end()


def _tensors_in(obj):
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, (list, tuple)):
        for x in obj:
            yield from _tensors_in(x)
    elif isinstance(obj, dict):
        for x in obj.values():
            yield from _tensors_in(x)
