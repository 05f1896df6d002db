"""Independent re-implementations, in plain torch, of what the compressing
algorithms compute (each one's page in docs/), for tests to compare against."""

import torch
import torch.distributed as dist


def minmax_roundtrip(v: torch.Tensor) -> torch.Tensor:
    """minmax_uint8 of one chunk, encode then decode, written from the spec."""
    if v.numel() == 0:
        return v.clone()
    lo, hi = float(v.min()) + 0.0, float(v.max()) + 0.0
    span = hi - lo + 1e-12  # in double, like the C++ side
    scale = torch.tensor(255.0 / span, dtype=torch.float32)
    step = torch.tensor(span / 255.0, dtype=torch.float32)
    lo_t = torch.tensor(lo, dtype=torch.float32)
    q = ((v - lo_t) * scale + 0.5).clamp(0, 255).to(torch.int32)
    return lo_t + q.to(torch.float32) * step


ROUNDTRIP = {
    "bytegrad": minmax_roundtrip,
    "fp16_allreduce": lambda v: v.half().float(),
    "bf16_allreduce": lambda v: v.bfloat16().float(),
}


def chunks(count: int, n: int):
    base, extra = divmod(count, n)
    offset = 0
    for r in range(n):
        size = base + (1 if r < extra else 0)
        yield offset, size
        offset += size


def reference_average(flat: torch.Tensor, roundtrip, group) -> torch.Tensor:
    n = dist.get_world_size(group)
    everyone = [torch.empty_like(flat) for _ in range(n)]
    dist.all_gather(everyone, flat, group=group)
    out = torch.empty_like(flat)
    for off, size in chunks(flat.numel(), n):
        acc = torch.zeros(size)
        for q in range(n):  # in rank order, every copy through the codec
            acc = acc + roundtrip(everyone[q][off : off + size])
        out[off : off + size] = roundtrip(acc / n)
    return out


def blockwise(roundtrip, block: int):
    """`roundtrip` applied to each `block` values of a chunk (the last block
    shorter), as a codec with one header per block encodes a chunk."""
    return lambda v: torch.cat([roundtrip(part) for part in v.split(block)])


def sign_roundtrip(v: torch.Tensor) -> torch.Tensor:
    """sign1bit of one block, encode then decode: +-mean|v| by sign (0 counts as +)."""
    if v.numel() == 0:
        return v.clone()
    scale = v.abs().sum() / v.numel()
    return torch.where(v >= 0, scale, -scale)


def reference_average_with_feedback(flat: torch.Tensor, worker: torch.Tensor, server: torch.Tensor, group,
                                    block: int):
    """onebit_adam's exchange of one bucket: each rank sends C(x + worker
    residual) per chunk, one sign scale per `block` values; the owner of
    chunk r averages the decoded copies, adds its server residual and sends C
    of that back. Every rank sees every decoded send, so each keeps all
    owners' server residuals (its own part is what the owner keeps). Returns
    (result, new worker, new server)."""
    n = dist.get_world_size(group)
    sign = blockwise(sign_roundtrip, block)
    x = flat + worker
    sent = torch.cat([sign(x[off : off + size]) for off, size in chunks(x.numel(), n)])
    new_worker = x - sent
    everyone = [torch.empty_like(sent) for _ in range(n)]
    dist.all_gather(everyone, sent, group=group)
    out, new_server = torch.empty_like(flat), torch.empty_like(flat)
    for off, size in chunks(flat.numel(), n):
        acc = torch.zeros(size)
        for q in range(n):
            acc = acc + everyone[q][off : off + size]
        y = acc / n + server[off : off + size]
        out[off : off + size] = sign(y)
        new_server[off : off + size] = y - out[off : off + size]
    return out, new_worker, new_server


def shift_one_peer(position: int, n: int, step: int) -> int:
    """docs/decentralized.md: rank r < n/2 pairs with
    ((step + r) mod (n/2)) + n/2, rank r >= n/2 with (r - n/2 - step) mod (n/2)."""
    half = n // 2
    if position < half:
        return (step + position) % half + half
    return (position - half - step) % half


def reference_peer_mix(flat: torch.Tensor, mode: str, step: int, group) -> torch.Tensor:
    """One decentralized averaging of `flat` (this rank's weights) over the
    ranks of `group`, from every rank's gathered copy: all = mean, shift_one =
    (mine + partner's) / 2, ring = (mine + left's + right's) / 3, summed in
    that order in the weights' dtype."""
    n = dist.get_world_size(group)
    r = dist.get_rank(group)
    everyone = [torch.empty_like(flat) for _ in range(n)]
    dist.all_gather(everyone, flat, group=group)
    if n == 1:
        return flat.clone()
    if mode == "all":
        return (torch.stack([e.double() for e in everyone]).sum(0) / n).to(flat.dtype)
    if mode == "shift_one":
        return (flat + everyone[shift_one_peer(r, n, step)]) / 2
    if mode == "ring":
        return (flat + everyone[(r - 1) % n] + everyone[(r + 1) % n]) / 3
    raise ValueError(mode)
