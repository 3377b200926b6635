#!/usr/bin/env python3
"""labnet.py: a small lab LAN on one machine, made of Linux network namespaces.

Tests, benchmarks and the experiment runner use it so that no packet of ours ever reaches the
machine's real interface: every host is a namespace with a veth leg on a bridge that itself lives
in a namespace. Needs root and iproute2 (nftables for packet loss).

    with LabNet(3) as lab:                    # hosts h1..h3 at 10.99.0.1..3 on one bridge
        p = lab.popen(1, ["python3", "calc_server.py", "1", "--iface", lab.ip(1)])
        lab.cut(2)                            # host 2 loses its link: a partition
        lab.heal(2)
        lab.set_loss(3, percent=10)           # host 3 drops ~10% of incoming UDP

From a shell, for a demo by hand:  python3 labnet.py up 3 ... python3 labnet.py down

It also picks free loopback ports for the tests and benchmarks (free_port, port_open).
"""
from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import sys
from typing import List, Optional, Sequence

# ============================================================================================
# Constants
# ============================================================================================

#: The lab subnet: private, never routed anywhere, and only ever configured inside namespaces.
SUBNET_PREFIX = "10.99.0."
SUBNET_BITS = 24


# ============================================================================================
# Loopback ports (shared by the tests and the benchmarks)
# ============================================================================================

def ephemeral_port_range() -> tuple:
    """The kernel's range for the source ports of outgoing connections."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low, high = (int(x) for x in f.read().split())
        return low, high
    except (OSError, ValueError):
        return 32768, 60999


def port_is_free(host: str, port: int) -> bool:
    """Nobody has `port` bound on `host`, for TCP or for UDP."""
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        with socket.socket(socket.AF_INET, kind) as s:
            try:
                s.bind((host, port))
            except OSError:
                return False
    return True


def free_port(hosts: Sequence[str] = ("127.0.0.1",), tries: int = 200) -> int:
    """A port free for TCP and UDP on every one of `hosts` (loopback addresses), taken BELOW the
    kernel's ephemeral range. A port the kernel hands out for bind(0) comes from that range, and
    on a loaded machine the source port of some other program's connection can take it between
    the pick and the server's bind ("Address already in use"); below the range only a bind can."""
    low, _ = ephemeral_port_range()
    if low > 12000:
        for _ in range(tries):
            port = random.randrange(10000, low)
            if all(port_is_free(h, port) for h in hosts):
                return port
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:  # no room below: any free one
        s.bind((hosts[0], 0))
        return s.getsockname()[1]


def port_open(host: str, port: int, timeout_s: float = 0.5) -> bool:
    """Something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


# ============================================================================================
# Namespace lab
# ============================================================================================

#: The package that brings each command a lab may need (for the reason a test is skipped).
COMMAND_PACKAGES = {"ip": "iproute2", "nft": "nftables", "tc": "iproute2"}


def available(needs: Sequence[str] = ()) -> Optional[str]:
    """None when namespaces can be made here (and every command in `needs`, such as "nft" for
    set_loss, is installed), otherwise the reason they cannot."""
    if os.geteuid() != 0:
        return "needs root"
    for command in ("ip", *needs):
        if shutil.which(command) is None:
            return f"needs {COMMAND_PACKAGES.get(command, command)} (the `{command}` command)"
    probe = f"labnet-probe-{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True)
    if made.returncode != 0:
        return "cannot create network namespaces: " + made.stderr.decode(errors="replace").strip()
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def _run(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(list(argv), capture_output=True, text=True)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {done.stderr.strip()}")
    return done


class LabNet:
    """N hosts (numbered from 1) on one bridge; everything is removed on close()."""

    def __init__(self, hosts: int, tag: Optional[str] = None):
        if not 1 <= hosts <= 200:
            raise ValueError("a lab has 1 to 200 hosts")
        self.hosts = hosts
        # Names unique to this process, so parallel runs never meet; short, since
        # interface names are limited to 15 characters.
        self.tag = tag or f"{os.getpid() % 100000}"
        self.switch = f"sw{self.tag}"
        self._procs: List[subprocess.Popen] = []
        self._made: List[str] = []

    # ---- names -------------------------------------------------------------------------
    def ns(self, host: int) -> str:
        return f"h{host}x{self.tag}"

    def ip(self, host: int) -> str:
        return f"{SUBNET_PREFIX}{host}"

    def _port(self, host: int) -> str:
        return f"p{host}x{self.tag}"

    # ---- life cycle --------------------------------------------------------------------
    def __enter__(self) -> "LabNet":
        try:
            self.up()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def up(self) -> None:
        _run("ip", "netns", "add", self.switch)
        self._made.append(self.switch)
        # a plain lab switch floods multicast (with IGMP snooping and no querier, groups fade)
        _run("ip", "netns", "exec", self.switch, "ip", "link", "add", "br0", "type", "bridge", "mcast_snooping", "0")
        _run("ip", "netns", "exec", self.switch, "ip", "link", "set", "br0", "up")
        for host in range(1, self.hosts + 1):
            self._add_host(host)

    def _add_host(self, host: int) -> None:
        ns, leg, port = self.ns(host), f"v{host}x{self.tag}", self._port(host)
        _run("ip", "netns", "add", ns)
        self._made.append(ns)
        # Both ends are created in the root namespace and moved out at once, so nothing of
        # ours stays in the root namespace.
        _run("ip", "link", "add", leg, "type", "veth", "peer", "name", port)
        _run("ip", "link", "set", leg, "netns", ns)
        _run("ip", "link", "set", port, "netns", self.switch)
        _run("ip", "netns", "exec", self.switch, "ip", "link", "set", port, "master", "br0")
        _run("ip", "netns", "exec", self.switch, "ip", "link", "set", port, "up")
        inside = ("ip", "netns", "exec", ns)
        _run(*inside, "ip", "link", "set", leg, "name", "eth0")
        _run(*inside, "ip", "addr", "add", f"{self.ip(host)}/{SUBNET_BITS}", "dev", "eth0")
        _run(*inside, "ip", "link", "set", "eth0", "up")
        _run(*inside, "ip", "link", "set", "lo", "up")
        # Multicast goes to the lab LAN, as `route add -net 224.0.0.0 ...` does on a lab machine.
        _run(*inside, "ip", "route", "add", "224.0.0.0/4", "dev", "eth0")

    def close(self) -> None:
        for proc in self._procs:
            if proc.poll() is None:
                proc.kill()
        for proc in self._procs:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        for ns in reversed(self._made):
            _run("ip", "netns", "del", ns, check=False)
        self._made.clear()

    # ---- running things on a host ------------------------------------------------------
    def command(self, host: int, argv: Sequence[str]) -> List[str]:
        return ["ip", "netns", "exec", self.ns(host), *argv]

    def popen(self, host: int, argv: Sequence[str], **kwargs) -> subprocess.Popen:
        proc = subprocess.Popen(self.command(host, argv), **kwargs)
        self._procs.append(proc)
        return proc

    def run(self, host: int, argv: Sequence[str], **kwargs) -> subprocess.CompletedProcess:
        return subprocess.run(self.command(host, argv), **kwargs)

    # ---- faults ------------------------------------------------------------------------
    def cut(self, host: int) -> None:
        """Take the host's switch port down: it is partitioned from every other host."""
        _run("ip", "netns", "exec", self.switch, "ip", "link", "set", self._port(host), "down")

    def heal(self, host: int) -> None:
        _run("ip", "netns", "exec", self.switch, "ip", "link", "set", self._port(host), "up")

    def set_loss(self, host: int, percent: int, dport: Optional[int] = None) -> None:
        """Drop about `percent`% of the UDP datagrams arriving at the host (nftables)."""
        if not 0 < percent < 100:
            raise ValueError("loss is a percentage between 1 and 99")
        if shutil.which("nft") is None:
            raise RuntimeError("packet loss needs nftables (the `nft` command)")
        inside = ("ip", "netns", "exec", self.ns(host), "nft")
        _run(*inside, "add", "table", "inet", "lossy")
        _run(*inside, "add chain inet lossy input { type filter hook input priority 0; }")
        match = ["udp", "dport", str(dport)] if dport else ["meta", "l4proto", "udp"]
        _run(*inside, "add", "rule", "inet", "lossy", "input", *match,
             "numgen", "random", "mod", "100", "<", str(percent), "drop")


# ============================================================================================
# Command line
# ============================================================================================

def main(argv: Optional[Sequence[str]] = None) -> int:
    import argparse
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up", help="make N hosts and leave them up (names are printed)")
    up.add_argument("hosts", type=int)
    sub.add_parser("down", help="remove the hosts that `up` made")
    args = parser.parse_args(argv)
    reason = available()
    if reason:
        print(f"labnet: {reason}", file=sys.stderr)
        return 2
    tag = "demo"
    ours = [name for name in _run("ip", "netns", "list").stdout.split()
            if name.endswith("x" + tag) or name == "sw" + tag]
    if args.cmd == "up":
        if not 1 <= args.hosts <= 200:
            parser.error("a lab has 1 to 200 hosts")
        if ours:
            print(f"labnet: a lab is already up ({len(ours)} namespaces: {', '.join(sorted(ours)[:4])}"
                  f"{' ...' if len(ours) > 4 else ''}); remove it first: python3 labnet.py down", file=sys.stderr)
            return 1
        lab = LabNet(args.hosts, tag=tag)
        try:
            lab.up()
        except RuntimeError as why:
            lab.close()   # never half a lab
            print(f"labnet: cannot make the lab: {why}", file=sys.stderr)
            return 1
        for host in range(1, args.hosts + 1):
            print(f"host {host}: ip netns exec {lab.ns(host)} ...   address {lab.ip(host)}")
        print("remove with: python3 labnet.py down")
        return 0
    for name in ours:
        _run("ip", "netns", "del", name, check=False)
    print(f"labnet: {len(ours)} namespaces removed" if ours else "labnet: no lab was up")
    return 0


if __name__ == "__main__":
    sys.exit(main())
