"""bagua_ravnest.DistributedDataParallel: a drop-in for torch's DDP whose
communication is done by a bagua_ravnest algorithm.

Gradients live in flat buckets (each parameter's ``.grad`` is a view into its
bucket). Autograd hooks mark parameters ready; the C++ engine runs the
algorithm on each complete bucket on its communication thread while backward
continues, and the end of backward waits for all of them (with a timeout).
Every call into the algorithm goes through the engine.
"""

from __future__ import annotations

import contextlib
import os
import sys

import torch
import torch.distributed as dist
from torch import nn

from .. import _C
from ..algorithms import resolve_algorithm
from ..backend import link_mbit_of, private_backend
from . import checkpoint, optimizer_coupling, replicas, startup
from .buckets import Buckets
from .iteration import Iteration
from .staging import Staging, module_device


class DistributedDataParallel(nn.Module):
    """Drop-in replacement for ``torch.nn.parallel.DistributedDataParallel``.

    Args (as torch DDP unless noted):
        module: the model, on the CPU or on one CUDA device (docs/devices.md
            says which algorithms run on a GPU in this version).
        device_ids: None, or [i] for a module on cuda:i (torch DDP's
            convention; LOCAL_RANK usually picks i). Several ranks may share
            one GPU: the exchanges run on host memory.
        output_device, dim: accepted for compatibility.
        broadcast_buffers: True: broadcast buffers from rank 0 before each
            forward (torch DDP's default). False: never. None (the default):
            True while the algorithm averages gradients, so that every
            replica is the same model; False while it moves the weights
            itself (decentralized, low_precision_decentralized, local_sgd,
            async_model_average), whose replicas differ between exchanges by
            design: there buffers stay rank-local (local_sgd averages them
            with the weights), and no forward waits for rank 0.
        process_group: a group of backend "bagua" or "gloo"; default WORLD.
        bucket_cap_mb: bucket size cap in MiB (the first bucket closes at
            min(1 MiB, bucket_cap_mb) so communication starts early).
        find_unused_parameters: find parameters that get no gradient in a
            forward's graph and treat them as ready (their gradient is zero).
        gradient_as_bucket_view: always true here (grads are bucket views).
        static_graph, check_reduction: accepted, no effect.
        algorithm: the algorithm spec ("gradient_allreduce",
            "gradient_allreduce:hierarchical=true", ...). Default:
            $BAGUA_ALGORITHM, else "gradient_allreduce".
        optimizer: the optimizer stepping these parameters; its steps drive
            the algorithm's post-optimizer-step hook and step counter.
        timeout: seconds (or timedelta) any communication may take before it
            becomes an error. Default $BAGUA_TIMEOUT_S or 300.
    """

    def __init__(
        self,
        module: nn.Module,
        device_ids=None,
        output_device=None,
        dim: int = 0,
        broadcast_buffers: bool | None = None,
        process_group=None,
        bucket_cap_mb: float | None = 25,
        find_unused_parameters: bool = False,
        check_reduction: bool = False,
        gradient_as_bucket_view: bool = False,
        static_graph: bool = False,
        *,
        algorithm: str | None = None,
        optimizer: torch.optim.Optimizer | None = None,
        timeout=None,
    ):
        super().__init__()
        if not dist.is_initialized():
            raise RuntimeError(
                "torch.distributed is not initialized: call dist.init_process_group('bagua') "
                "(or 'gloo') before wrapping the model"
            )
        self.module = module
        self.device_ids = device_ids
        self.output_device = output_device
        self.dim = dim
        if broadcast_buffers not in (None, True, False):
            raise TypeError(f"broadcast_buffers must be True, False or None (the algorithm's choice), "
                            f"got {broadcast_buffers!r}")
        self.broadcast_buffers = broadcast_buffers
        self.find_unused_parameters = find_unused_parameters
        self.gradient_as_bucket_view = True
        self.static_graph = static_graph
        self.process_group = process_group if process_group is not None else dist.group.WORLD
        self.require_backward_grad_sync = True
        self.bucket_cap_mb = 25 if bucket_cap_mb is None else bucket_cap_mb
        self._timeout_s = startup.timeout_seconds(timeout)

        named = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
        if not named:
            raise RuntimeError(
                "DistributedDataParallel is not needed for a module without parameters that require gradients"
            )
        self.device = module_device(named, device_ids)
        self._param_names = [n for n, _ in named]
        self._params = [p for _, p in named]

        # Start-up: every rank agrees on the algorithm and the model.
        startup.check_backend(self.process_group)
        self._rank = dist.get_rank(self.process_group)
        self._world = dist.get_world_size(self.process_group)
        self._src = dist.get_process_group_ranks(self.process_group)[0]
        self._host_keys = startup.host_keys(self.process_group)
        # A local refusal takes part in an exchange, so that every rank
        # raises it instead of some going on alone.
        self._staging, refusal = None, ""
        try:
            self._staging = Staging(self.device)
        except ValueError as e:
            refusal = str(e)
        startup.agree_no_error(refusal, self._world, self.process_group)
        spec = resolve_algorithm(algorithm)
        name = self._registry_name(spec)
        spec = optimizer_coupling.with_optimizer_hyperparameters(spec, name, optimizer)
        self.algorithm = startup.agree_on_configuration(spec, self._params, self._rank, self._world,
                                                        self._host_keys, self.process_group)
        name = self._registry_name(self.algorithm)
        optimizer_coupling.bind_algorithm(optimizer, self.algorithm, name)
        if self._world > 1:
            replicas.broadcast([p.data for p in module.parameters()] + list(module.buffers()), self._src,
                               self.process_group)

        # The engine, on connections of its own (see private_backend). Two
        # lanes let two buckets' latency-bound operations overlap (as Gloo's
        # two worker threads do for torch DDP); see docs/engine.md.
        lanes = int(os.environ.get("BAGUA_COMM_LANES", 2))
        self._transport = private_backend(self.process_group, self._timeout_s)
        self._engine = _C.Engine(self._transport.communicator(self._timeout_s), self.algorithm, self._host_keys,
                                 self._timeout_s, lanes, link_mbit_of(self.process_group))
        if self._rank == 0 and self._engine.plan_description:
            print(f"bagua: {self._engine.plan_description}", file=sys.stderr, end="", flush=True)
        refusal = _refusal_on_a_gpu(self._engine, self.algorithm, name) if self._staging.kind == "cuda" else ""
        startup.agree_no_error(refusal, self._world, self.process_group)
        self._staging.configure(self._engine)
        self._optimizer = optimizer
        self._buckets = Buckets(self._engine, module, self._params, self._staging, self.algorithm, optimizer,
                                self.bucket_cap_mb)
        self._buckets.build()
        self._engine.start()
        self._iteration = Iteration(self._engine, self._buckets, self._params, self._param_names, self._staging,
                                    find_unused_parameters, self._after_backward)
        self._hooks = [p.register_post_accumulate_grad_hook(self._iteration.grad_hook(i))
                       for i, p in enumerate(self._params)]
        self._optimizer_hook = optimizer.register_step_post_hook(self._on_optimizer_step) if optimizer else None
        # Algorithm state (momenta, residuals) and the step travel in state_dict.
        checkpoint.register(self)

    def _registry_name(self, spec: str) -> str | None:
        return startup.registry_name(spec, self._rank, self._world, self._host_keys)

    # ----- a step -----------------------------------------------------------

    def _broadcasts_buffers(self) -> bool:
        """Whether this forward starts with rank 0's buffers (read each time:
        the attribute may be changed, as torch DDP's may)."""
        if self.broadcast_buffers is not None:
            return bool(self.broadcast_buffers)
        # A per-forward broadcast makes every rank wait for rank 0 and, on a
        # busy link, for the algorithm's own traffic queued ahead of it: an
        # algorithm that moves weights rank by rank would lose the point of
        # not waiting, and its replicas' buffers belong to their own weights.
        return not self._buckets.moves_weights

    def forward(self, *inputs, **kwargs):
        self._iteration.check_usable()
        if self._broadcasts_buffers() and self._world > 1:
            buffers = list(self.module.buffers())
            if buffers:
                replicas.broadcast(buffers, self._src, self.process_group)
        if not torch.is_grad_enabled():
            # Evaluation: no backward follows, so the iteration state of a
            # pending training forward must stay as it is.
            return self.module(*inputs, **kwargs)
        self._iteration.begin(self.require_backward_grad_sync)
        output = self.module(*inputs, **kwargs)
        self._iteration.forward_done(output)
        return output

    def _after_backward(self) -> None:
        if self._optimizer is None:
            self._after_step()

    def _on_optimizer_step(self, optimizer, args, kwargs) -> None:
        self._after_step()

    def _after_step(self) -> None:
        self._engine.post_optimizer_step_hook()
        if self._engine.need_reset():
            self._buckets.build()

    # ----- between steps ----------------------------------------------------

    def algorithm_control(self, name: str) -> None:
        """Runs the algorithm's control `name` (for example "abort" or
        "resume" of async_model_average). Collective: every rank calls it at
        the same point. An unknown name is an error listing the controls."""
        self._engine.control(name)

    @property
    def algorithm_controls(self) -> list[str]:
        """The names algorithm_control accepts."""
        return list(self._engine.controls)

    @torch.no_grad()
    def average_replicas(self) -> None:
        """Sets every rank's parameters and floating-point buffers to their
        mean over the ranks. Collective: every rank calls it, between steps
        (after optimizer.step(), before the next forward).

        The replicas of decentralized, low_precision_decentralized,
        local_sgd and async_model_average differ between exchanges by
        design; this is the consensus model to evaluate or save at the end
        of training (or at any step). The algorithm then goes on from it:
        async_model_average's rounds stop on every rank around it, and its
        copies of the neighbours' weights, a snapshot waiting for its
        average, a compression residual start again from the common
        weights. With gradient algorithms the replicas are equal already
        (their buffers too, unless broadcast_buffers=False), and stay so to
        the bit."""
        self._iteration.check_usable()
        if self._iteration.syncing:
            raise RuntimeError("average_replicas() was called between a forward and its backward; call it between "
                               "steps (after optimizer.step(), before the next forward), on every rank")
        try:
            # An exchange launched by the last step lands first; a thread
            # that moves the weights (async_model_average) stops on every rank.
            self._engine.before_averaging_replicas()
            states = [p.data for p in self._params] + [b for _, _, b in self._buckets.float_buffers()]
            if self._world > 1:
                replicas.all_reduce_mean(states, self._world, self.process_group)
            self._engine.replicas_averaged()
        except RuntimeError as e:
            self._iteration.failed = f"average_replicas() failed: {e}"
            raise

    def close(self) -> None:
        """Stops the algorithm's background thread, if it has one (within the
        timeout). Also done when the wrapper is garbage-collected."""
        self._engine.stop()

    @contextlib.contextmanager
    def no_sync(self):
        """Gradients accumulate locally inside this context; the first
        backward after it communicates the accumulated sum."""
        previous = self.require_backward_grad_sync
        self.require_backward_grad_sync = False
        try:
            yield
        finally:
            self.require_backward_grad_sync = previous

    @property
    def step(self) -> int:
        """Completed optimizer steps (or synchronized backward passes)."""
        return self._engine.step


def _refusal_on_a_gpu(engine, algorithm: str, name: str | None) -> str:
    """This version stages gradient buckets between a GPU and host memory;
    weights an algorithm moves itself, and optimizer state the algorithm
    shares, still live on the host only."""
    roles = engine.bucket_roles()
    if "weights" in roles or engine.moves_weights_in_background:
        why = "moves the weights itself"
    elif optimizer_coupling.shares_hyperparameters(name) or engine.fills_companions:
        why = "shares its arithmetic with its optimizer"
    else:
        return ""
    return (
        f"algorithm {algorithm!r} does not run on a CUDA model in this version: it {why}, which is staged for "
        f"host memory only. On a GPU, use an algorithm that averages gradients (gradient_allreduce, bytegrad, "
        f"fp16_allreduce, bf16_allreduce, or a composed spec with exchange=allreduce), or keep the model on the "
        f"CPU (docs/devices.md)"
    )
