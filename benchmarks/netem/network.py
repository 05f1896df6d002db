"""Where a benchmark's ranks run: loopback, or an emulated cluster with
shaped links. Both benchmark scripts take --bandwidth-mbit and use this."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

from .cluster import EmulatedCluster, parse_rates


@dataclass
class Network:
    label: str                      # "loopback", "uniform-100mbit", "hetero-1000-1000-100-20mbit"
    rates_mbit: list[float] | None  # per rank; None on loopback
    netns: list[str] | None = None  # per rank; None on loopback
    env: dict = field(default_factory=dict)
    ifname: str = "lo"
    addresses: list[str] | None = None  # per rank, on the shaped network; None on loopback

    @property
    def hostnames(self) -> list[str] | None:
        """Each emulated rank is a host of its own, named by its address:
        host-aware algorithms see separate hosts, and anything that finds
        its own address by resolving its hostname (Gloo without an interface
        name, as Horovod's process sets do) finds the shaped link."""
        return self.addresses

    def address_of(self, rank: int) -> str:
        return self.addresses[rank] if self.addresses else "127.0.0.1"

    @property
    def bottleneck_mbit(self) -> float | None:
        return min(self.rates_mbit) if self.rates_mbit else None


def label_for(rates: list[float] | None) -> str:
    if not rates:
        return "loopback"
    fmt = lambda r: f"{r:g}"  # noqa: E731
    if len(set(rates)) == 1:
        return f"uniform-{fmt(rates[0])}mbit"
    return "hetero-" + "-".join(fmt(r) for r in rates) + "mbit"


@contextlib.contextmanager
def network(bandwidth_mbit: str | None, world: int):
    """Yields a Network; builds (and always removes) the namespaces if shaped."""
    if not bandwidth_mbit:
        yield Network("loopback", None)
        return
    rates = parse_rates(bandwidth_mbit, world)
    with EmulatedCluster(world, rates) as cluster:
        yield Network(label_for(rates), rates, cluster.namespaces, {"GLOO_SOCKET_IFNAME": cluster.ifname},
                      cluster.ifname, list(cluster.addresses))


def tx_bytes(ifname: str) -> int:
    """Bytes this process's network namespace sent on `ifname`, from the
    interface counters (/proc/self/net/dev follows the caller's namespace)."""
    with open("/proc/self/net/dev") as f:
        for line in f:
            name, sep, rest = line.partition(":")
            if sep and name.strip() == ifname:
                return int(rest.split()[8])
    raise RuntimeError(f"interface {ifname!r} not found in /proc/self/net/dev")
