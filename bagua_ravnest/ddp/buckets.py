"""The wrapper's flat buckets, of the three roles an algorithm may ask for:
gradients (each ``.grad`` a view into its bucket), weights (each
parameter's data a view into its bucket) and floating-point buffers
(BatchNorm's running statistics). The engine plans them (the algorithm's
plan, or DDP's rule) and is handed each bucket with its tensor indices."""

from __future__ import annotations

import torch
from torch import nn

from .optimizer_coupling import bind_companions
from .replicas import views_of

# DDP's first bucket is small so that communication starts early.
_FIRST_BUCKET_MB = 1.0


class Buckets:
    def __init__(self, engine, module: nn.Module, params: list[torch.Tensor], staging, algorithm: str, optimizer,
                 bucket_cap_mb: float):
        self._engine = engine
        self._module = module
        self._params = params
        self._staging = staging
        self._algorithm = algorithm
        self._optimizer = optimizer
        self._cap_mb = bucket_cap_mb
        self.views: list[torch.Tensor | None] = [None] * len(params)  # each parameter's .grad view
        self.gradients: list[torch.Tensor] = []
        self.members: list[list[int]] = []
        self.weights: list[torch.Tensor] = []
        self.buffers: list[torch.Tensor] = []
        self.has_gradients = False
        self.moves_weights = False
        self.staged_gradients = False

    def build(self) -> None:
        """Buckets of each role the algorithm asks for now (again after a
        need_reset: a warm-up that ended changes the roles)."""
        engine = self._engine
        roles = engine.bucket_roles()
        self.moves_weights = "weights" in roles
        first = min(_FIRST_BUCKET_MB, self._cap_mb)
        tensors = [p.detach() for p in self._params]
        self.has_gradients = "gradients" in roles
        if self.has_gradients:
            plan = engine.plan("gradients", tensors, self._cap_mb, first)
            self.gradients, self.members = [], []
            for members in plan:
                flat = flatten(self._params, members, _set_grad, value=lambda p: p.grad)
                for i, view in zip(members, views_of(flat, [self._params[i] for i in members])):
                    self.views[i] = view
                self.gradients.append(flat)
                self.members.append(list(members))
            companions = self._companions() if engine.fills_companions else []
            # Staged: the exchange runs on a host buffer beside each bucket.
            self.staged_gradients = self._staging.active and not companions
            if self.staged_gradients:
                hosts = [self._staging.host_buffer(flat) for flat in self.gradients]
                engine.set_buckets("gradients", list(zip(hosts, self.members)), len(self._params), [], self.gradients)
            else:
                engine.set_buckets("gradients", list(zip(self.gradients, self.members)), len(self._params),
                                   companions)
        elif self.gradients:
            # The algorithm no longer wants gradients (a warm-up ended):
            # backward must not wait for their buckets any more.
            self.gradients, self.members = [], []
            self.staged_gradients = False
            engine.set_buckets("gradients", [], len(self._params))
        if "weights" in roles:
            plan = engine.plan("weights", tensors, self._cap_mb, first)
            self.weights = [flatten(self._params, members, _set_data) for members in plan]
            engine.set_buckets("weights", list(zip(self.weights, plan)), len(self._params))
        slots = self.float_buffers()
        if "buffers" in roles and slots:
            values = [b for _, _, b in slots]
            plan = engine.plan("buffers", values, self._cap_mb, first)
            # Each buffer becomes a view of its bucket; modules update them in place.
            self.buffers = [
                flatten(values, members, lambda i, view: setattr(slots[i][0], slots[i][1], view), by_index=True)
                for members in plan
            ]
            engine.set_buckets("buffers", list(zip(self.buffers, plan)), len(values))

    def _companions(self) -> list[torch.Tensor]:
        """What the algorithm fills beside each bucket for its optimizer
        (qadam: the rounding its exchange added to each momentum); the
        optimizer reads each parameter's part."""
        companions = [torch.zeros(flat.numel(), dtype=torch.float32) for flat in self.gradients]
        parts = {}
        for companion, members in zip(companions, self.members):
            params = [self._params[i] for i in members]
            parts.update(zip(params, views_of(companion, params)))
        bind_companions(self._optimizer, self._algorithm, parts)
        return companions

    def attach_grad_views(self) -> None:
        """zero_grad(set_to_none=True) drops .grad; point it back at the
        bucket (zeroed: the next backward starts from nothing)."""
        for p, view in zip(self._params, self.views):
            if p.grad is None:
                view.zero_()
                p.grad = view
            elif p.grad.data_ptr() != view.data_ptr():
                view.copy_(p.grad)
                p.grad = view

    def float_buffers(self) -> list[tuple[nn.Module, str, torch.Tensor]]:
        """(module, name, tensor) of each floating-point buffer, once each."""
        seen, out = set(), []
        for module in self._module.modules():
            for name, b in module._buffers.items():
                if b is not None and b.is_floating_point() and id(b) not in seen:
                    seen.add(id(b))
                    out.append((module, name, b))
        return out


@torch.no_grad()
def flatten(tensors: list[torch.Tensor], members: list[int], attach, value=lambda t: t.data,
            by_index: bool = False) -> torch.Tensor:
    """One flat buffer, on the tensors' device, holding `value(t)` of each
    member tensor (zeros where it is None); `attach(t, view)` (or
    `attach(index, view)`) makes the tensor's owner use its view from now on."""
    chosen = [tensors[i] for i in members]
    flat = torch.zeros(sum(t.numel() for t in chosen), dtype=chosen[0].dtype, device=chosen[0].device)
    for i, t, view in zip(members, chosen, views_of(flat, chosen)):
        current = value(t)
        if current is not None:
            view.copy_(current)
        attach(i if by_index else t, view)
    return flat


def _set_grad(p: torch.Tensor, view: torch.Tensor) -> None:
    p.grad = view


def _set_data(p: torch.Tensor, view: torch.Tensor) -> None:
    p.data = view
