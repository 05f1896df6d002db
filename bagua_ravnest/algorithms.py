"""Choosing an algorithm: by argument, by the BAGUA_ALGORITHM environment
variable, or the default. A spec is ``name`` or ``name:key=value,...``."""

from __future__ import annotations

import os

from . import _C

DEFAULT_ALGORITHM = "gradient_allreduce"
ENV_VAR = "BAGUA_ALGORITHM"


def algorithm_names() -> list[str]:
    """Names of the algorithms compiled into this build."""
    return list(_C.algorithm_names())


def describe_algorithm(name: str) -> dict:
    """{"summary": str, "options": {key: description}} for one algorithm."""
    summary, options = _C.algorithm_info(name)
    return {"summary": summary, "options": dict(options)}


def resolve_algorithm(algorithm: str | None = None) -> str:
    """The spec to use: the argument, else $BAGUA_ALGORITHM, else the default."""
    if algorithm is None:
        algorithm = os.environ.get(ENV_VAR) or DEFAULT_ALGORITHM
    if not isinstance(algorithm, str):
        raise TypeError(
            f"algorithm must be a string such as 'gradient_allreduce' or "
            f"'gradient_allreduce:hierarchical=true', got {type(algorithm).__name__}"
        )
    return algorithm.strip()
