"""bagua_ravnest: a communication backend for distributed PyTorch on slow and
uneven networks.

``import bagua_ravnest`` registers the "bagua" torch.distributed backend.
"""

import atexit

from . import _C
from ._C import BaguaError, CommTimeoutError, InvalidArgument, ProtocolError
from .backend import BackendOptions, register as _register_backend

_register_backend()

# Before the interpreter stops handing out its GIL: our communication threads
# drop what their finished jobs held (a tensor's last reference taken on one
# of them during shutdown would abort the process; see CommThread::settle_all).
atexit.register(_C.settle_threads, 5.0)

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
