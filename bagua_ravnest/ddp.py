"""bagua_ravnest.DistributedDataParallel: a drop-in for torch's DDP whose
communication is done by a bagua_ravnest algorithm.

Gradients live in flat buckets (each parameter's ``.grad`` is a view into its
bucket). Autograd hooks mark parameters ready; the C++ engine runs the
algorithm on each complete bucket on its communication thread while backward
continues, and the end of backward waits for all of them (with a timeout).
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import os
import socket
import sys
import zlib

import torch
import torch.distributed as dist
from torch import nn

from . import _C
from .algorithms import describe_algorithm, resolve_algorithm
from .backend import link_mbit_of, private_backend

# DDP's first bucket is small so that communication starts early.
_FIRST_BUCKET_MB = 1.0
_SPEC_BYTES = 512  # room for an algorithm spec or an error message in the start-up check
_DEFAULT_TIMEOUT_S = 300.0


def _timeout_seconds(timeout) -> float:
    if timeout is None:
        return float(os.environ.get("BAGUA_TIMEOUT_S", _DEFAULT_TIMEOUT_S))
    if isinstance(timeout, datetime.timedelta):
        return timeout.total_seconds()
    return float(timeout)


def _check_backend(process_group) -> None:
    name = dist.get_backend(process_group)
    if name not in ("bagua", "gloo"):
        raise ValueError(
            f"bagua_ravnest.DistributedDataParallel needs a process group of backend 'bagua' or 'gloo', "
            f"got {name!r}; call dist.init_process_group('bagua') (after `import bagua_ravnest`)"
        )


def _all_gather_flat(out: torch.Tensor, mine: torch.Tensor, group) -> None:
    # torch 2.13 renamed all_gather_into_tensor; older releases lack the new name.
    gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
    gather(out, mine, group=group)


def _host_keys(process_group) -> list[int]:
    """One key per group rank; equal keys share a host. torchrun's
    LOCAL_WORLD_SIZE defines hosts as blocks of global ranks; without it,
    hostnames decide (gathered from every rank)."""
    ranks = dist.get_process_group_ranks(process_group)
    local = os.environ.get("LOCAL_WORLD_SIZE")
    if local:
        local_world = int(local)
        if local_world <= 0:
            raise ValueError(f"LOCAL_WORLD_SIZE must be positive, got {local}")
        return [r // local_world for r in ranks]
    mine = torch.tensor([zlib.crc32(socket.gethostname().encode())], dtype=torch.int64)
    everyone = torch.empty(len(ranks), dtype=torch.int64)
    _all_gather_flat(everyone, mine, process_group)
    return everyone.tolist()


def _encode(text: str, size: int) -> torch.Tensor:
    raw = text.encode()[: size - 1]
    out = torch.zeros(size, dtype=torch.uint8)
    out[: len(raw)] = torch.frombuffer(bytearray(raw), dtype=torch.uint8)
    return out


def _decode(t: torch.Tensor) -> str:
    raw = bytes(t.tolist())
    return raw.split(b"\0", 1)[0].decode(errors="replace")


class DistributedDataParallel(nn.Module):
    """Drop-in replacement for ``torch.nn.parallel.DistributedDataParallel``.

    Args (as torch DDP unless noted):
        module: the model; its parameters must be on the CPU.
        device_ids, output_device, dim: accepted for compatibility; CPU only.
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
        self._moves_weights = False  # set with the buckets
        self.find_unused_parameters = find_unused_parameters
        self.gradient_as_bucket_view = True
        self.static_graph = static_graph
        self.process_group = process_group if process_group is not None else dist.group.WORLD
        self.require_backward_grad_sync = True
        self.bucket_cap_mb = 25 if bucket_cap_mb is None else bucket_cap_mb
        self._timeout_s = _timeout_seconds(timeout)

        named = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
        if not named:
            raise RuntimeError(
                "DistributedDataParallel is not needed for a module without parameters that require gradients"
            )
        for name, p in named:
            if p.device.type != "cpu":
                raise ValueError(
                    f"parameter {name!r} is on {p.device}; bagua_ravnest.DistributedDataParallel runs CPU "
                    f"modules in this version (use the 'bagua' backend with torch DDP for CUDA models)"
                )
        self._param_names = [n for n, _ in named]
        self._params = [p for _, p in named]

        _check_backend(self.process_group)
        self._group_ranks = dist.get_process_group_ranks(self.process_group)
        self._rank = dist.get_rank(self.process_group)
        self._world = dist.get_world_size(self.process_group)
        self._src = self._group_ranks[0]
        self._host_keys = _host_keys(self.process_group)

        spec = resolve_algorithm(algorithm)
        spec = _with_optimizer_hyperparameters(spec, self._registry_name(spec), optimizer)
        self.algorithm = self._agree_on_configuration(spec)
        name = self._registry_name(self.algorithm)
        if name and describe_algorithm(name)["optimizer"]:
            # The optimizer shares hyperparameters with the algorithm
            # (QAdamOptimizer): it learns the ones the algorithm filled in.
            optimizer.bind_algorithm(self.algorithm)

        self._sync_module_states()
        # Two lanes let two buckets' latency-bound operations overlap (as
        # Gloo's two worker threads do for torch DDP); see docs/engine.md.
        lanes = int(os.environ.get("BAGUA_COMM_LANES", 2))
        # The engine talks over its own connections (see private_backend).
        self._transport = private_backend(self.process_group, self._timeout_s)
        self._engine = _C.Engine(
            self._transport.communicator(self._timeout_s),
            self.algorithm,
            self._host_keys,
            self._timeout_s,
            lanes,
            link_mbit_of(self.process_group),
        )
        if self._rank == 0 and self._engine.plan_description:
            print(f"bagua: {self._engine.plan_description}", file=sys.stderr, end="", flush=True)
        self._views: list[torch.Tensor | None] = [None] * len(self._params)
        self._buckets: list[torch.Tensor] = []
        self._bucket_members: list[list[int]] = []
        self._weight_buckets: list[torch.Tensor] = []
        self._buffer_buckets: list[torch.Tensor] = []
        self._optimizer = optimizer
        self._build_buckets()
        self._engine.start()
        self._hooks = [
            p.register_post_accumulate_grad_hook(self._make_grad_hook(i)) for i, p in enumerate(self._params)
        ]
        self._optimizer_hook = optimizer.register_step_post_hook(self._on_optimizer_step) if optimizer else None
        # Algorithm state (momenta, residuals) and the step travel in state_dict.
        self.register_state_dict_post_hook(_save_algorithm_state)
        self.register_load_state_dict_pre_hook(_load_algorithm_state)
        self.register_load_state_dict_post_hook(_release_weights_after_load)
        self._has_optimizer = optimizer is not None
        self._sync_this_iteration = False
        self._callback_queued = False
        self._awaiting_forward = False  # a synchronized backward has finished
        self._failed = ""  # set when an iteration failed; the wrapper is then unusable
        self._unused: list[int] = []

    # ----- start-up ---------------------------------------------------------

    def _registry_name(self, spec: str) -> str | None:
        """The registered algorithm `spec` builds: its name, or for a composed
        spec ("codec=...,exchange=...,schedule=...") the name of what the
        composition makes of it; None when it does not build (the start-up
        agreement then reports why, on every rank)."""
        try:
            name, _ = _C.parse_algorithm_spec(spec)
            if not name:
                canonical = _C.canonical_spec(spec, self._rank, self._world, self._host_keys)
                name, _ = _C.parse_algorithm_spec(canonical)
        except RuntimeError:
            return None
        return name if name in _C.algorithm_names() else None

    def _agree_on_configuration(self, spec: str) -> str:
        """Every rank must run the same algorithm on the same parameters. A
        local error (e.g. a bad option on one rank) still takes part in the
        exchange, so every rank fails with the same clear message instead of
        some ranks waiting forever."""
        try:
            canonical = _C.canonical_spec(spec, self._rank, self._world, self._host_keys)
            local_error = ""
        except RuntimeError as e:
            canonical, local_error = "", str(e)
        shapes = ";".join(f"{tuple(p.shape)}:{p.dtype}" for p in self._params)
        digest = hashlib.sha256(shapes.encode()).digest()
        record = torch.cat(
            [
                _encode(("error:" + local_error) if local_error else canonical, _SPEC_BYTES),
                torch.frombuffer(bytearray(digest), dtype=torch.uint8),
            ]
        )
        everyone = torch.empty(self._world * record.numel(), dtype=torch.uint8)
        _all_gather_flat(everyone, record, self.process_group)
        rows = everyone.view(self._world, -1)
        specs = [_decode(r[:_SPEC_BYTES]) for r in rows]
        digests = [bytes(r[_SPEC_BYTES:].tolist()) for r in rows]
        errors = [(r, s[len("error:") :]) for r, s in enumerate(specs) if s.startswith("error:")]
        if errors:
            rank, message = errors[0]
            raise ValueError(f"algorithm {spec!r} is not valid on rank {rank}: {message}")
        if len(set(specs)) != 1:
            listing = ", ".join(f"rank {r}: {s}" for r, s in enumerate(specs))
            raise ValueError(
                f"ranks disagree on the algorithm ({listing}); pass the same algorithm= (or BAGUA_ALGORITHM) "
                f"on every rank"
            )
        if len(set(digests)) != 1:
            odd = [r for r, d in enumerate(digests) if d != digests[0]]
            raise ValueError(
                f"ranks {odd} have parameters of different shapes or dtypes than rank 0; every rank must wrap "
                f"the same model"
            )
        return canonical

    def _broadcast_flat(self, tensors: list[torch.Tensor]) -> None:
        _through_flat(tensors, lambda flat: dist.broadcast(flat, src=self._src, group=self.process_group))

    def _sync_module_states(self) -> None:
        states = [p.data for p in self.module.parameters()] + [b for b in self.module.buffers()]
        if self._world > 1 and states:
            self._broadcast_flat(states)

    def _build_buckets(self) -> None:
        """Buckets of each role the algorithm asks for: gradients (each
        .grad a view into its bucket) and weights (each parameter's data a
        view into its bucket), planned by the algorithm or by DDP's rule."""
        roles = self._engine.bucket_roles()
        self._moves_weights = "weights" in roles
        first = min(_FIRST_BUCKET_MB, self.bucket_cap_mb)
        tensors = [p.detach() for p in self._params]
        self._grad_role = "gradients" in roles
        if self._grad_role:
            plan = self._engine.plan("gradients", tensors, self.bucket_cap_mb, first)
            self._buckets, self._bucket_members = [], []
            for members in plan:
                flat = self._flatten(self._params, members, _set_grad, value=lambda p: p.grad)
                for i, view in zip(members, _views_of(flat, [self._params[i] for i in members])):
                    self._views[i] = view
                self._buckets.append(flat)
                self._bucket_members.append(list(members))
            companions = []
            if self._engine.fills_companions:
                # What the algorithm fills beside each bucket for its
                # optimizer (qadam: the rounding its exchange added to each
                # momentum); the optimizer reads each parameter's part.
                companions = [torch.zeros(flat.numel(), dtype=torch.float32) for flat in self._buckets]
                parts = {}
                for companion, members in zip(companions, self._bucket_members):
                    params = [self._params[i] for i in members]
                    parts.update(zip(params, _views_of(companion, params)))
                if not hasattr(self._optimizer, "bind_companions"):
                    raise ValueError(f"algorithm {self.algorithm} leaves its optimizer what its exchange's rounding "
                                     f"added beside each gradient; pass optimizer= of the class its entry names "
                                     f"(bagua_ravnest.describe_algorithm)")
                self._optimizer.bind_companions(parts)
            self._engine.set_buckets("gradients", list(zip(self._buckets, self._bucket_members)), len(self._params),
                                     companions)
        elif self._buckets:
            # The algorithm no longer wants gradients (a warm-up ended):
            # backward must not wait for their buckets any more.
            self._buckets, self._bucket_members = [], []
            self._engine.set_buckets("gradients", [], len(self._params))
        if "weights" in roles:
            plan = self._engine.plan("weights", tensors, self.bucket_cap_mb, first)
            self._weight_buckets = [self._flatten(self._params, members, _set_data) for members in plan]
            self._engine.set_buckets("weights", list(zip(self._weight_buckets, plan)), len(self._params))
        if "buffers" in roles and self._float_buffers():
            slots = self._float_buffers()
            values = [b for _, _, b in slots]
            plan = self._engine.plan("buffers", values, self.bucket_cap_mb, first)
            # Each buffer becomes a view of its bucket; modules update them in place.
            self._buffer_buckets = [
                self._flatten(values, members, lambda i, view: setattr(slots[i][0], slots[i][1], view),
                              by_index=True)
                for members in plan
            ]
            self._engine.set_buckets("buffers", list(zip(self._buffer_buckets, plan)), len(values))

    def _float_buffers(self) -> list[tuple[nn.Module, str, torch.Tensor]]:
        """(module, name, tensor) of each floating-point buffer, once each."""
        seen, out = set(), []
        for module in self.module.modules():
            for name, b in module._buffers.items():
                if b is not None and b.is_floating_point() and id(b) not in seen:
                    seen.add(id(b))
                    out.append((module, name, b))
        return out

    @staticmethod
    @torch.no_grad()
    def _flatten(tensors: list[torch.Tensor], members: list[int], attach, value=lambda t: t.data,
                 by_index: bool = False) -> torch.Tensor:
        """One flat buffer holding `value(t)` of each member tensor (zeros
        where it is None); `attach(t, view)` (or `attach(index, view)`) makes
        the tensor's owner use its view from now on."""
        chosen = [tensors[i] for i in members]
        flat = torch.zeros(sum(t.numel() for t in chosen), dtype=chosen[0].dtype)
        for i, t, view in zip(members, chosen, _views_of(flat, chosen)):
            current = value(t)
            if current is not None:
                view.copy_(current)
            attach(i if by_index else t, view)
        return flat

    # ----- per iteration ----------------------------------------------------

    def _attach_grad_views(self) -> None:
        """zero_grad(set_to_none=True) drops .grad; point it back at the
        bucket (zeroed: the next backward starts from nothing)."""
        for p, view in zip(self._params, self._views):
            if p.grad is None:
                view.zero_()
                p.grad = view
            elif p.grad.data_ptr() != view.data_ptr():
                view.copy_(p.grad)
                p.grad = view

    def _broadcasts_buffers(self) -> bool:
        """Whether this forward starts with rank 0's buffers (read each time:
        the attribute may be changed, as torch DDP's may)."""
        if self.broadcast_buffers is not None:
            return bool(self.broadcast_buffers)
        # A per-forward broadcast makes every rank wait for rank 0 and, on a
        # busy link, for the algorithm's own traffic queued ahead of it: an
        # algorithm that moves weights rank by rank would lose the point of
        # not waiting, and its replicas' buffers belong to their own weights.
        return not self._moves_weights

    def forward(self, *inputs, **kwargs):
        if self._failed:
            raise RuntimeError(f"DistributedDataParallel failed in an earlier iteration: {self._failed}")
        if self._broadcasts_buffers() and self._world > 1:
            buffers = list(self.module.buffers())
            if buffers:
                self._broadcast_flat(buffers)
        if not torch.is_grad_enabled():
            # Evaluation: no backward follows, so the iteration state of a
            # pending training forward must stay as it is.
            return self.module(*inputs, **kwargs)
        sync = self.require_backward_grad_sync
        self._sync_this_iteration = sync
        self._callback_queued = False
        self._awaiting_forward = False
        if sync:
            if self._grad_role:
                self._attach_grad_views()
            self._engine.forward_pre_hook()
        output = self.module(*inputs, **kwargs)
        self._unused = self._find_unused(output) if (sync and self.find_unused_parameters) else []
        return output

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

    def _make_grad_hook(self, index: int):
        def hook(param: torch.Tensor) -> None:
            if self._awaiting_forward:
                raise RuntimeError(
                    "backward ran twice after one forward (retain_graph=True?); each synchronized backward needs "
                    "its own forward, or run the extra backward passes inside no_sync()"
                )
            if not self._sync_this_iteration:
                return
            if not self._grad_role:
                # The algorithm works on weights; backward only needs its end.
                if not self._callback_queued:
                    self._callback_queued = True
                    torch.autograd.Variable._execution_engine.queue_callback(self._finalize_backward)
                return
            view = self._views[index]
            if param.grad is not None and param.grad.data_ptr() != view.data_ptr():
                view.copy_(param.grad)
                param.grad = view
            if not self._callback_queued:
                self._callback_queued = True
                torch.autograd.Variable._execution_engine.queue_callback(self._finalize_backward)
                for i in self._unused:
                    # Their bucket slots hold zeros, or what no_sync() accumulated.
                    if self._params[i].grad is None:
                        self._views[i].zero_()
                        self._params[i].grad = self._views[i]
                    self._engine.mark_ready(i)
            self._engine.mark_ready(index)

        return hook

    def _finalize_backward(self) -> None:
        missing = self._engine.unready_tensors()
        if missing:
            names = ", ".join(self._param_names[i] for i in missing[:10])
            more = f" and {len(missing) - 10} more" if len(missing) > 10 else ""
            self._failed = (
                f"these parameters got no gradient in this iteration: {names}{more}. Pass "
                f"find_unused_parameters=True to DistributedDataParallel if parts of the model are unused, "
                f"or make sure every parameter takes part in the loss"
            )
            raise RuntimeError(self._failed)
        try:
            self._engine.wait_all()
        except RuntimeError as e:
            self._failed = str(e)
            raise
        self._sync_this_iteration = False
        self._awaiting_forward = True
        if not self._has_optimizer:
            self._after_step()

    def _on_optimizer_step(self, optimizer, args, kwargs) -> None:
        self._after_step()

    def _after_step(self) -> None:
        self._engine.post_optimizer_step_hook()
        if self._engine.need_reset():
            self._build_buckets()

    def algorithm_control(self, name: str) -> None:
        """Runs the algorithm's control `name` (for example "abort" or
        "resume" of async_model_average). Collective: every rank calls it at
        the same point. An unknown name is an error listing the controls."""
        self._engine.control(name)

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
        if self._failed:
            raise RuntimeError(f"DistributedDataParallel failed in an earlier iteration: {self._failed}")
        if self._sync_this_iteration:
            raise RuntimeError("average_replicas() was called between a forward and its backward; call it between "
                               "steps (after optimizer.step(), before the next forward), on every rank")
        try:
            # An exchange launched by the last step lands first; a thread
            # that moves the weights (async_model_average) stops on every rank.
            self._engine.before_averaging_replicas()
            states = [p.data for p in self._params] + [b for _, _, b in self._float_buffers()]
            if self._world > 1:
                self._all_reduce_mean(states)
            self._engine.replicas_averaged()
        except RuntimeError as e:
            self._failed = f"average_replicas() failed: {e}"
            raise

    def _all_reduce_mean(self, tensors: list[torch.Tensor]) -> None:
        """Each tensor becomes its mean over the ranks, summed in fp64 (exact
        where the replicas are equal: n x / n is x again), the same bits on
        every rank."""
        def mean(flat: torch.Tensor) -> None:
            dist.all_reduce(flat, group=self.process_group)
            flat /= self._world

        _through_flat(tensors, mean, widen=True)

    @property
    def algorithm_controls(self) -> list[str]:
        """The names algorithm_control accepts."""
        return list(self._engine.controls)

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


_STATE_KEY = "_bagua_algorithm_state"


def _with_optimizer_hyperparameters(spec: str, name: str | None, optimizer) -> str:
    """`name`: the registered algorithm `spec` builds. One that acts after
    the optimizer's step needs optimizer=; one whose registry entry names an
    optimizer class (qadam's QAdamOptimizer, say) shares hyperparameters with
    it: the optimizer must be of that class, and it writes the spec."""
    if name is None:
        return spec  # the start-up agreement reports it, on every rank
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
    from . import optim

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


def _save_algorithm_state(module, state_dict, prefix, local_metadata) -> None:
    # Work launched after the last optimizer step (a gossip exchange) lands
    # first, so that the state is the one every rank has at this step.
    module._engine.drain()
    if module._engine.moves_weights_in_background:
        # state_dict's tensors are views of the live weights, which the
        # algorithm's thread keeps moving: copy them while it is held off.
        module._engine.hold_weights(replace=False)
        try:
            for key, value in state_dict.items():
                if key.startswith(prefix) and isinstance(value, torch.Tensor):
                    state_dict[key] = value.detach().clone()
        finally:
            module._engine.release_weights()
    state = module._engine.state_dict()
    if not state and not module._engine.depends_on_step:
        return  # stateless algorithms keep exactly torch DDP's keys
    state_dict[prefix + _STATE_KEY] = {
        "algorithm": module.algorithm,
        "step": torch.tensor(module._engine.step, dtype=torch.int64),
        "state": {k: torch.frombuffer(bytearray(v), dtype=torch.uint8) for k, v in state.items()},
    }


def _load_algorithm_state(module, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                          error_msgs) -> None:
    if module._engine.moves_weights_in_background:
        # Held until _release_weights_after_load: the algorithm's thread must
        # neither write into the weights being loaded nor move them later by
        # a difference taken from the old ones.
        module._engine.hold_weights(replace=True)
    saved = state_dict.pop(prefix + _STATE_KEY, None)
    if saved is None:
        if strict and (module._engine.state_dict() or module._engine.depends_on_step):
            missing_keys.append(prefix + _STATE_KEY)
        return
    if saved["algorithm"] != module.algorithm:
        error_msgs.append(
            f"the checkpoint's algorithm state is for {saved['algorithm']!r}, this wrapper runs {module.algorithm!r}"
        )
        return
    try:
        module._engine.drain()
        module._engine.load_state_dict({k: bytes(v.numpy().tobytes()) for k, v in saved["state"].items()})
    except RuntimeError as e:
        error_msgs.append(str(e))
        return
    module._engine.step = int(saved["step"])


def _release_weights_after_load(module, incompatible_keys) -> None:
    if module._engine.moves_weights_in_background:
        module._engine.release_weights()


@torch.no_grad()
def _through_flat(tensors: list[torch.Tensor], collective, widen: bool = False) -> None:
    """Runs `collective` on one flat tensor per dtype holding `tensors`
    (in fp64 when `widen`), then copies the results back."""
    by_dtype: dict[torch.dtype, list[torch.Tensor]] = {}
    for t in tensors:
        by_dtype.setdefault(t.dtype, []).append(t)
    for dtype, group in by_dtype.items():
        wide = torch.promote_types(dtype, torch.float64) if widen else dtype
        flat = torch.cat([t.reshape(-1).to(wide) for t in group])
        collective(flat)
        for t, view in zip(group, _views_of(flat, group)):
            t.copy_(view)


def _views_of(flat: torch.Tensor, params: list[torch.Tensor]) -> list[torch.Tensor]:
    out, offset = [], 0
    for p in params:
        out.append(flat[offset : offset + p.numel()].view_as(p))
        offset += p.numel()
    return out


def _set_grad(p: torch.Tensor, view: torch.Tensor) -> None:
    p.grad = view


def _set_data(p: torch.Tensor, view: torch.Tensor) -> None:
    p.data = view


def _tensors_in(obj):
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, (list, tuple)):
        for x in obj:
            yield from _tensors_in(x)
    elif isinstance(obj, dict):
        for x in obj.values():
            yield from _tensors_in(x)
