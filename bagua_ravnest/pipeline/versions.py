"""Weight stashing for one pipeline stage (Ravnest's asynchronous pipeline,
../docs/planner.md): a micro-batch's backward must use the weights its
forward used, though the stage's optimizer may have stepped in between.

The live parameters are only ever touched by the optimizer. A forward runs
on a *version*: detached copies of the parameters as they were (made once
per optimizer step, shared by every micro-batch that starts before the next
step), through ``torch.func.functional_call``. Its autograd graph holds the
version's tensors, never the live ones, so an in-place optimizer step cannot
invalidate it. A version is freed when the last micro-batch that used it has
finished its backward, so with at most S micro-batches in flight a stage
holds at most S + 1 versions (S in use and the current one); ``bytes_held``
and ``peak_bytes`` say what they cost.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn


@dataclasses.dataclass(eq=False)
class Version:
    """The weights one or more in-flight micro-batches run on."""

    number: int
    tensors: dict[str, torch.Tensor]  # parameter name -> copy that requires grad
    users: int = 0


class VersionStore:
    def __init__(self, module: nn.Module):
        self._module = module
        self._params = dict(module.named_parameters())
        if not self._params:
            raise ValueError("VersionStore: the stage has no parameters to stash")
        self._current: Version | None = None
        self._held: dict[int, Version] = {}
        self._next = 0
        self.peak_bytes = 0

    def acquire(self) -> Version:
        """The version a micro-batch starting its forward now runs on (the
        current weights), counted as used until release()."""
        if self._current is None:
            tensors = {n: p.detach().clone().requires_grad_(p.requires_grad) for n, p in self._params.items()}
            self._current = Version(self._next, tensors)
            self._held[self._next] = self._current
            self._next += 1
            self.peak_bytes = max(self.peak_bytes, self.bytes_held)
        self._current.users += 1
        return self._current

    def forward(self, version: Version, *args, **kwargs):
        """The stage's forward on `version`'s weights (and the live buffers,
        which forward may update in place, as BatchNorm does)."""
        return torch.func.functional_call(self._module, version.tensors, args, kwargs)

    def accumulate_grads(self, version: Version) -> None:
        """Adds the gradients a backward left on `version`'s tensors into the
        live parameters' .grad (where the optimizer looks), and clears them
        for the next micro-batch on the same version."""
        for name, t in version.tensors.items():
            if t.grad is None:
                continue
            live = self._params[name]
            if live.grad is None:
                # Handed over, not copied: the version's tensor lets go of it
                # below, and a copy would briefly hold the stage's gradients
                # twice.
                live.grad = t.grad.detach()
            else:
                live.grad.add_(t.grad)
            t.grad = None

    def release(self, version: Version) -> None:
        """The micro-batch that acquired `version` has finished its backward."""
        held = self._held.get(version.number)
        if held is not version or version.users <= 0:
            raise ValueError(f"VersionStore: version {version.number} released more often than acquired")
        version.users -= 1
        if version.users == 0 and version is not self._current:
            del self._held[version.number]

    def updated(self) -> None:
        """The optimizer has stepped the live parameters: micro-batches that
        start from now on get a new version; the old one lives while used."""
        if self._current is not None and self._current.users == 0:
            del self._held[self._current.number]
        self._current = None

    @property
    def versions_held(self) -> int:
        return len(self._held)

    @property
    def bytes_held(self) -> int:
        return sum(t.numel() * t.element_size() for v in self._held.values() for t in v.tensors.values())

    def state(self) -> dict:
        """What a checkpoint must know: versions still held mean micro-batches
        in flight, which a checkpoint drains first (an empty store saves
        nothing else)."""
        return {"versions_held": self.versions_held, "in_flight": sum(v.users for v in self._held.values())}
