"""Start-up and per-call agreement between the ranks of a group: a rank
whose settings differ would otherwise wait forever for messages the others
never send, so every rank checks and all raise together."""

from __future__ import annotations

import torch
import torch.distributed as dist


def agree(values: list[int], *, group, size: int, me: str, member: str, what: str, hint: str = "") -> None:
    """Every member of `group` (`size` of them, each a `member`: "stage",
    "rank") holds the same `values`, or every one raises ValueError naming
    the first member that differs; `me` starts the message."""
    mine = torch.tensor(values, dtype=torch.int64)
    everyone = [torch.empty_like(mine) for _ in range(size)]
    dist.all_gather(everyone, mine, group=group)
    for i, theirs in enumerate(everyone):
        if not torch.equal(theirs, everyone[0]):
            raise ValueError(f"{me}: the {member}s disagree on the {what}: {member} 0 has {everyone[0].tolist()}, "
                             f"{member} {i} has {theirs.tolist()}{hint}")
