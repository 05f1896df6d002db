"""Where a model's buckets live, and how the engine reaches them.

A model on the CPU has host buckets: the engine's exchanges run on them in
place. A model on a GPU has its buckets on the GPU (each ``.grad`` a view,
as on the CPU) and one pinned host buffer beside each: the engine copies a
bucket out on a copy stream of its own once autograd's stream has written
its gradients (a CUDA event, never a device-wide synchronisation), runs the
same exchange it runs for a CPU model on the host buffer, copies the result
back, and the end of backward makes the training stream wait for that copy
(the host does not block). docs/devices.md says when this is the right path.

``BAGUA_STAGE=threaded[:OUT_MS,IN_MS]`` stages a CPU model the same way,
through host copies on a thread of their own delayed as given: the CPU
suite's stand-in for a GPU, which proves the ordering without one.
"""

from __future__ import annotations

import os

import torch


def module_device(named: list[tuple[str, torch.Tensor]], device_ids) -> torch.device:
    """The one device of the module's parameters; an error names one
    parameter of each device when there are several, or a device_ids that
    does not fit (torch DDP's convention: None for a CPU module, [i] for a
    module on cuda:i)."""
    first: dict[torch.device, str] = {}
    for name, p in named:
        first.setdefault(p.device, name)
    if len(first) > 1:
        listing = ", ".join(f"{name!r} on {device}" for device, name in first.items())
        raise ValueError(
            f"the module's parameters are on {len(first)} devices ({listing}); bagua_ravnest."
            f"DistributedDataParallel takes a module on one device: move it with module.to(device)"
        )
    (device,) = first
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"parameter {first[device]!r} is on {device}; CPU and CUDA modules are supported")
    if device_ids is not None and len(list(device_ids)) > 0:  # [] is None, as for torch DDP
        ids = list(device_ids)
        wanted = [device.index if device.type == "cuda" else None]
        given = [torch.device(i).index if isinstance(i, (str, torch.device)) else i for i in ids]
        if device.type == "cpu" or given != wanted:
            hint = "None for a CPU module" if device.type == "cpu" else f"[{device.index}] (or None)"
            raise ValueError(
                f"device_ids={ids!r} does not fit a module on {device}: pass device_ids={hint}, as to torch DDP"
            )
    return device


class Staging:
    """The engine's stage for a model on `device` (none for a host model
    unless BAGUA_STAGE forces the threaded stand-in)."""

    def __init__(self, device: torch.device, setting: str | None = None):
        self.device = device
        setting = os.environ.get("BAGUA_STAGE", "") if setting is None else setting
        self._delays = (0.0, 0.0)
        if device.type == "cuda":
            if setting not in ("", "auto", "cuda"):
                raise ValueError(f"BAGUA_STAGE={setting!r} is for CPU models; a CUDA model stages through CUDA")
            self.kind = "cuda"
        elif setting in ("", "auto", "none"):
            self.kind = None
        elif setting.split(":", 1)[0] == "threaded":
            self.kind = "threaded"
            if ":" in setting:
                try:
                    out_ms, in_ms = (float(x) for x in setting.split(":", 1)[1].split(","))
                except ValueError:
                    raise ValueError(f"BAGUA_STAGE={setting!r}: write threaded or threaded:OUT_MS,IN_MS") from None
                self._delays = (out_ms, in_ms)
        else:
            raise ValueError(
                f"BAGUA_STAGE={setting!r}: write threaded or threaded:OUT_MS,IN_MS (CPU models), or leave it unset"
            )

    @property
    def active(self) -> bool:
        return self.kind is not None

    def configure(self, engine) -> None:
        if self.kind == "cuda":
            index = self.device.index if self.device.index is not None else torch.cuda.current_device()
            engine.set_stage("cuda", index)
        elif self.kind == "threaded":
            engine.set_stage("threaded", delay_out_ms=self._delays[0], delay_in_ms=self._delays[1])

    def host_buffer(self, flat: torch.Tensor) -> torch.Tensor:
        """The host buffer an exchange of `flat` runs on (pinned for a GPU,
        so that the copies are asynchronous)."""
        return torch.empty(flat.numel(), dtype=flat.dtype, pin_memory=self.kind == "cuda")

    def producer(self) -> int:
        """The queue that wrote the gradient a hook was called for: the
        current stream of autograd's device thread."""
        return torch.cuda.current_stream(self.device).cuda_stream if self.kind == "cuda" else 0

    def consumer(self) -> int:
        """The queue the optimizer step will run on: the current stream."""
        return torch.cuda.current_stream(self.device).cuda_stream if self.kind == "cuda" else 0
