"""bagua_ravnest.DistributedDataParallel and the parts of its story, one
module each:

- ``wrapper``: the wrapper itself, which reads as the story of a step;
- ``startup``: what every rank agrees on before the first step;
- ``buckets``: the flat buckets of gradients, weights and buffers;
- ``staging``: how buckets of a model on a GPU reach host memory;
- ``iteration``: the autograd state machine of one training iteration;
- ``optimizer_coupling``: what the algorithm and the optimizer share;
- ``checkpoint``: the algorithm's state in ``state_dict``;
- ``replicas``: ``average_replicas`` and the collectives on flat copies.
"""

from .wrapper import DistributedDataParallel

__all__ = ["DistributedDataParallel"]
