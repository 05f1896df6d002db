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
    """{"summary", "options": {key: description}, "optimizer", "needs_optimizer"}
    for one algorithm: "optimizer" names the bagua_ravnest optimizer class
    the wrapper must be given ("" for any); "needs_optimizer" says that the
    wrapper must be given optimizer= at all (the algorithm acts after its
    step)."""
    summary, options, optimizer, needs_optimizer = _C.algorithm_info(name)
    return {"summary": summary, "options": dict(options), "optimizer": optimizer, "needs_optimizer": needs_optimizer}


def parse_algorithm_spec(spec: str) -> tuple[str, dict]:
    """(name, options) of a spec, by the one grammar (C++'s); a composed spec
    (codec=...,exchange=...) has the name ''."""
    name, options = _C.parse_algorithm_spec(spec)
    return name, dict(options)


def split_algorithm_specs(text: str) -> list[str]:
    """'a,b:x=1,y=2,c' -> ['a', 'b:x=1,y=2', 'c']: a key=value continues the
    spec before it when that spec takes options."""
    return list(_C.split_algorithm_specs(text))


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
