"""bagua_ravnest: a communication backend for distributed PyTorch on slow and
uneven networks.

``import bagua_ravnest`` registers the "bagua" torch.distributed backend.
"""

from . import _C
from ._C import BaguaError, CommTimeoutError, InvalidArgument, ProtocolError
from .backend import BackendOptions, register as _register_backend

_register_backend()

from .algorithms import (  # noqa: E402
    algorithm_names,
    describe_algorithm,
    parse_algorithm_spec,
    resolve_algorithm,
    split_algorithm_specs,
)
from .ddp import DistributedDataParallel  # noqa: E402
from .optim import QAdamOptimizer  # noqa: E402

__all__ = [
    "BackendOptions",
    "BaguaError",
    "CommTimeoutError",
    "DistributedDataParallel",
    "InvalidArgument",
    "ProtocolError",
    "QAdamOptimizer",
    "algorithm_names",
    "describe_algorithm",
    "parse_algorithm_spec",
    "resolve_algorithm",
    "split_algorithm_specs",
]
