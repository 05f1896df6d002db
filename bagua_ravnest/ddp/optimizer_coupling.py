"""What an algorithm and the optimizer share. An algorithm that acts after
the optimizer's step needs it passed; one whose registry entry names an
optimizer class (qadam's QAdamOptimizer) shares hyperparameters with it
(the optimizer writes the spec and learns what the algorithm filled in),
and may leave it a companion beside each gradient bucket."""

from __future__ import annotations

import torch

from .. import _C
from ..algorithms import describe_algorithm


def with_optimizer_hyperparameters(spec: str, name: str | None, optimizer) -> str:
    """`name`: the registered algorithm `spec` builds (None: it does not
    build, which the start-up agreement reports on every rank)."""
    if name is None:
        return spec
    written, options = _C.parse_algorithm_spec(spec)
    entry = describe_algorithm(name)
    if entry["needs_optimizer"] and optimizer is None:
        what = name if written == name else f"{spec!r} (built as {name})"
        raise ValueError(
            f"algorithm {what} acts after each optimizer step: pass optimizer= (the optimizer stepping these "
            f"parameters) to DistributedDataParallel"
        )
    needed = entry["optimizer"]
    if not needed:
        return spec
    from .. import optim

    cls = getattr(optim, needed)
    if not isinstance(optimizer, cls):
        raise ValueError(
            f"algorithm {name} needs optimizer=bagua_ravnest.{needed}(...) (it shares its hyperparameters "
            f"with the algorithm)"
        )
    if options:
        raise ValueError(
            f"algorithm {spec!r}: {name} takes its options from its {needed}; pass them there "
            f"and use algorithm='{name}'"
        )
    return optimizer.algorithm_spec(name)


def shares_hyperparameters(name: str | None) -> bool:
    return bool(name) and bool(describe_algorithm(name)["optimizer"])


def bind_algorithm(optimizer, canonical: str, name: str | None) -> None:
    """The optimizer learns the hyperparameters the algorithm filled in."""
    if shares_hyperparameters(name):
        optimizer.bind_algorithm(canonical)


def bind_companions(optimizer, algorithm: str, parts: dict[torch.Tensor, torch.Tensor]) -> None:
    """Hands the optimizer each parameter's part of the companions."""
    if not hasattr(optimizer, "bind_companions"):
        raise ValueError(f"algorithm {algorithm} leaves its optimizer what its exchange's rounding "
                         f"added beside each gradient; pass optimizer= of the class its entry names "
                         f"(bagua_ravnest.describe_algorithm)")
    optimizer.bind_companions(parts)
