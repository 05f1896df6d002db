"""An emulated cluster on one machine: one network namespace per rank, each
joined by a veth pair to a bridge in a hub namespace, with a `tc tbf` shaper
on each rank's link in both directions.

    with EmulatedCluster(4, [1000, 1000, 100, 20]) as cluster:
        cluster.namespaces   # ["bgr1234-0", ...]: run rank k inside namespaces[k]
        cluster.addresses    # ["198.18.0.1", ...] on interface cluster.ifname

Everything it creates carries the prefix bgr<pid>- and is removed on exit,
on an exception, on SIGINT/SIGTERM, and (for runs killed outright) by the
next cluster, which removes namespaces whose creating process is gone.
Addresses come from 198.18.0.0/15, the range set aside for benchmarking,
and exist only inside these namespaces.

Command line (root):
    python benchmarks/netem/cluster.py --world-size 2 --bandwidth-mbit 100 -- CMD...
        runs CMD once per rank inside its namespace with RANK, WORLD_SIZE,
        BAGUA_NETNS_ADDR and GLOO_SOCKET_IFNAME set, then tears down.
    python benchmarks/netem/cluster.py --cleanup
        removes leftovers of dead runs.
"""

from __future__ import annotations

import argparse
import atexit
import os
import re
import shutil
import signal
import subprocess
import sys

PREFIX = "bgr"
SUBNET = "198.18.0"
IFNAME = "eth0"


class NetemUnavailable(RuntimeError):
    """This machine or user cannot build the emulated network."""


def check_available() -> None:
    if os.geteuid() != 0:
        raise NetemUnavailable("the emulated network needs root (network namespaces and tc); run as root")
    for tool in ("ip", "tc"):
        if shutil.which(tool) is None:
            raise NetemUnavailable(f"'{tool}' is not installed; install Debian's iproute2 (make deps does)")


def _run(*cmd: str) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise NetemUnavailable(f"`{' '.join(cmd)}` failed: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout


def _namespaces() -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def leftovers(pid: int | None = None) -> list[str]:
    """Namespaces of ours: of process `pid`, or of every process when None."""
    pattern = re.compile(rf"^{PREFIX}(\d+)-")
    return [ns for ns in _namespaces() if (m := pattern.match(ns)) and (pid is None or int(m.group(1)) == pid)]


def cleanup_stale() -> list[str]:
    """Removes namespaces left by runs whose process no longer exists."""
    removed = []
    for ns in leftovers():
        pid = int(re.match(rf"^{PREFIX}(\d+)-", ns).group(1))
        if pid != os.getpid() and not os.path.exists(f"/proc/{pid}"):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
            removed.append(ns)
    return removed


def parse_rates(text: str, world: int) -> list[float]:
    """'100' -> [100]*world; '1000,1000,100,20' -> one rate per rank."""
    rates = [float(x) for x in str(text).split(",") if x.strip()]
    if len(rates) == 1:
        rates *= world
    if len(rates) != world:
        raise ValueError(f"--bandwidth-mbit has {len(rates)} rates for {world} ranks; give one, or one per rank")
    if any(r <= 0 for r in rates):
        raise ValueError("bandwidth rates must be positive Mbit/s")
    return rates


def _shape(ns: str, dev: str, mbit: float) -> None:
    # Burst: at least one timer tick of traffic, so the rate holds with HZ=250.
    burst = max(32 * 1024, int(mbit * 1e6 / 8 / 250))
    _run("tc", "-n", ns, "qdisc", "add", "dev", dev, "root", "tbf", "rate", f"{mbit}mbit",
         "burst", str(burst), "latency", "100ms")


class EmulatedCluster:
    def __init__(self, world: int, rates_mbit: list[float]):
        if world < 1:
            raise ValueError("world must be at least 1")
        if len(rates_mbit) != world:
            raise ValueError("one rate per rank")
        self.world = world
        self.rates_mbit = list(rates_mbit)
        tag = f"{PREFIX}{os.getpid()}"
        self.hub = f"{tag}-hub"
        self.namespaces = [f"{tag}-{k}" for k in range(world)]
        self.addresses = [f"{SUBNET}.{k + 1}" for k in range(world)]
        self.ifname = IFNAME
        self._up = False
        self._previous_handlers: dict[int, object] = {}

    def __enter__(self) -> "EmulatedCluster":
        check_available()
        cleanup_stale()
        atexit.register(self.teardown)
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous_handlers[sig] = signal.signal(sig, self._on_signal)
        try:
            self._build()
        except BaseException:
            self.teardown()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.teardown()

    def _on_signal(self, signum, frame):
        # Unwinding through __exit__ tears down, after the code inside the
        # `with` has stopped what it runs in the namespaces (atexit remains
        # the backstop).
        raise KeyboardInterrupt(f"signal {signum}")

    def _build(self) -> None:
        self._up = True
        _run("ip", "netns", "add", self.hub)
        _run("ip", "-n", self.hub, "link", "add", "br0", "type", "bridge")
        _run("ip", "-n", self.hub, "link", "set", "br0", "up")
        for k, (ns, addr, rate) in enumerate(zip(self.namespaces, self.addresses, self.rates_mbit)):
            port = f"v{k}"
            _run("ip", "netns", "add", ns)
            _run("ip", "link", "add", IFNAME, "netns", ns, "type", "veth", "peer", "name", port, "netns", self.hub)
            _run("ip", "-n", self.hub, "link", "set", port, "master", "br0")
            _run("ip", "-n", self.hub, "link", "set", port, "up")
            _run("ip", "-n", ns, "addr", "add", f"{addr}/24", "dev", IFNAME)
            _run("ip", "-n", ns, "link", "set", IFNAME, "up")
            _run("ip", "-n", ns, "link", "set", "lo", "up")
            _shape(ns, IFNAME, rate)  # what rank k sends
            _shape(self.hub, port, rate)  # what rank k receives

    def teardown(self) -> None:
        """Removes everything this cluster made (idempotent)."""
        if not self._up:
            return
        self._up = False
        for ns in self.namespaces + [self.hub]:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        for sig, handler in self._previous_handlers.items():
            signal.signal(sig, handler)
        self._previous_handlers.clear()
        atexit.unregister(self.teardown)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--world-size", type=int, default=2)
    ap.add_argument("--bandwidth-mbit", default="100", help="one rate, or one per rank (comma-separated)")
    ap.add_argument("--cleanup", action="store_true", help="remove leftovers of dead runs and exit")
    ap.add_argument("command", nargs=argparse.REMAINDER)
    args = ap.parse_args(argv)
    try:
        check_available()
        if args.cleanup:
            print("removed:", " ".join(cleanup_stale()) or "nothing")
            return 0
        command = args.command[1:] if args.command[:1] == ["--"] else args.command
        if not command:
            ap.error("give a command after --")
        rates = parse_rates(args.bandwidth_mbit, args.world_size)
        with EmulatedCluster(args.world_size, rates) as cluster:
            procs: list[subprocess.Popen] = []
            try:
                for rank, (ns, addr) in enumerate(zip(cluster.namespaces, cluster.addresses)):
                    env = dict(os.environ, RANK=str(rank), WORLD_SIZE=str(args.world_size), BAGUA_NETNS_ADDR=addr,
                               GLOO_SOCKET_IFNAME=cluster.ifname, MASTER_ADDR=cluster.addresses[0])
                    # Own session: killing the group reaches grandchildren too.
                    procs.append(subprocess.Popen(["ip", "netns", "exec", ns, *command], env=env,
                                                  start_new_session=True))
                codes = [p.wait() for p in procs]
                return next((c if c > 0 else 128 - c for c in codes if c != 0), 0)
            finally:
                # Before the namespaces go: nothing may keep running in one.
                for p in procs:
                    if p.poll() is None:
                        try:
                            os.killpg(p.pid, signal.SIGKILL)
                        except ProcessLookupError:
                            pass
                        p.wait()
    except (NetemUnavailable, ValueError) as e:
        print(f"cluster: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cluster: interrupted; namespaces removed", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
