#!/usr/bin/env python3
"""labnet.py: a small lab LAN on one machine, made of Linux network namespaces.

Tests, benchmarks and the experiment runner use it so that no packet of ours ever reaches the
machine's real interface: every host is a namespace with a veth leg on a bridge that itself lives
in a namespace. Needs root and iproute2 (nftables for packet loss and drop_from).

    with LabNet(3) as lab:                    # hosts h1..h3 at 10.99.0.1..3 on one bridge
        p = lab.popen(1, ["python3", "calc_server.py", "1", "--iface", lab.ip(1)])
        lab.cut(2)                            # host 2 loses its link: a partition
        lab.heal(2)
        lab.set_loss(3, percent=10)           # host 3 drops ~10% of incoming UDP
        lab.drop_from(2, [1]); lab.drop_from(1, [2])   # hosts 1 and 2 no longer hear each other
        lab.undrop(1); lab.undrop(2)          # (nftables, as set_loss: a LAN split, not a cut)

From a shell, for a demo by hand:  python3 labnet.py up 3 ... python3 labnet.py down

It also picks free loopback ports for the tests and benchmarks (free_port, port_open).

Sites joined by a wide-area network (WanLab): every site is a LAN of hosts at 10.98.S.k on a
bridge of its own, and a router namespace joins the sites. Packets between sites go through a
TUN device into a WAN relay (this file, `wan-relay`, run in the router namespace) that holds them
for the link's delay, sends them at the link's rate and drops a share of them, and writes them
back to be routed on: a delay line the kernel's `tc netem` would give, on kernels without it.

    with WanLab([1, 3, 2], WanSettings(rate_mbit=2, delay_ms=15, loss_percent=1)) as wan:
        wan.popen(1, 1, [...])                # site 1's host 1, at 10.98.1.1
        wan.cut_site(3)                       # site 3 loses its WAN links: a partition
        wan.heal_site(3)

Module map, in the order a packet meets them: WanLab (namespaces, bridges, routes: a packet for
another site is routed into the TUN device) -> run_wan_relay (I/O loop: read from TUN, write
back when due) -> WanEmulator (sans-I/O: per-direction WanLink queues with rate, delay, loss).
"""
from __future__ import annotations

import heapq
import json
import os
import random
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

# ============================================================================================
# Constants
# ============================================================================================

#: The lab subnet: private, never routed anywhere, and only ever configured inside namespaces.
SUBNET_PREFIX = "10.99.0."
SUBNET_BITS = 24

#: Sites of a WanLab: site S is 10.98.S.0/24, its router leg 10.98.S.254 (S from 1 to 250).
WAN_PREFIX = "10.98."
WAN_ROUTER_HOST = 254
WAN_TABLE = "100"                   #: the router's routing table that sends everything into TUN

TUNSETIFF = 0x400454CA              #: linux/if_tun.h
IFF_TUN = 0x0001                    #: IP packets, no Ethernet header
IFF_NO_PI = 0x1000                  #: no 4-byte packet information before each packet


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

#: drop_from's nftables table in a host's namespace (undrop deletes it)
DROP_TABLE = "dropfrom"

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


def _plug_host(ns: str, leg: str, port: str, switch_ns: str, bridge: str, cidr: str,
               gateway: Optional[str] = None) -> None:
    """Make host namespace `ns` with one veth leg (eth0, address `cidr`) whose other end is a
    port of `bridge` in namespace `switch_ns`. Both ends are created in the root namespace and
    moved out at once, so nothing of ours stays in the root namespace."""
    _run("ip", "netns", "add", ns)
    _run("ip", "link", "add", leg, "type", "veth", "peer", "name", port)
    _run("ip", "link", "set", leg, "netns", ns)
    _run("ip", "link", "set", port, "netns", switch_ns)
    _run("ip", "netns", "exec", switch_ns, "ip", "link", "set", port, "master", bridge)
    _run("ip", "netns", "exec", switch_ns, "ip", "link", "set", port, "up")
    inside = ("ip", "netns", "exec", ns)
    _run(*inside, "ip", "link", "set", leg, "name", "eth0")
    _run(*inside, "ip", "addr", "add", cidr, "dev", "eth0")
    _run(*inside, "ip", "link", "set", "eth0", "up")
    _run(*inside, "ip", "link", "set", "lo", "up")
    if gateway:
        _run(*inside, "ip", "route", "add", "default", "via", gateway)
    # Multicast goes to the lab LAN, as `route add -net 224.0.0.0 ...` does on a lab machine.
    _run(*inside, "ip", "route", "add", "224.0.0.0/4", "dev", "eth0")


def _stop_and_remove(procs: Sequence[subprocess.Popen], namespaces: List[str]) -> None:
    """Kill the processes, then delete the namespaces (last made, first deleted)."""
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
    for proc in procs:
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
    for ns in reversed(namespaces):
        _run("ip", "netns", "del", ns, check=False)
    namespaces.clear()


class _ScopedLab:
    """`with Lab(...) as lab:` builds it (up) and always removes it (close), half-built too."""

    def __enter__(self):
        try:
            self.up()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class LabNet(_ScopedLab):
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
    def up(self) -> None:
        _run("ip", "netns", "add", self.switch)
        self._made.append(self.switch)
        # a plain lab switch floods multicast (with IGMP snooping and no querier, groups fade)
        _run("ip", "netns", "exec", self.switch, "ip", "link", "add", "br0", "type", "bridge", "mcast_snooping", "0")
        _run("ip", "netns", "exec", self.switch, "ip", "link", "set", "br0", "up")
        for host in range(1, self.hosts + 1):
            self._add_host(host)

    def _add_host(self, host: int) -> None:
        ns = self.ns(host)
        self._made.append(ns)
        _plug_host(ns, f"v{host}x{self.tag}", self._port(host), self.switch, "br0",
                   f"{self.ip(host)}/{SUBNET_BITS}")

    def close(self) -> None:
        _stop_and_remove(self._procs, self._made)

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
        match = ["udp", "dport", str(dport)] if dport else ["meta", "l4proto", "udp"]
        self._nft_input_rule(host, "lossy", [*match, "numgen", "random", "mod", "100", "<", str(percent), "drop"])

    def drop_from(self, host: int, others: Sequence[int]) -> None:
        """The host hears nothing from the hosts `others` (nftables in its namespace); the switch
        still carries everything else. Drop both ways between two groups of hosts and the LAN is
        split in two, as a bad switch or a firewall would split it."""
        self._nft_input_rule(host, DROP_TABLE, ["ip", "saddr", "{ %s }" % ", ".join(self.ip(h) for h in others),
                                                "drop"])

    def undrop(self, host: int) -> None:
        """Undo drop_from: the host hears every host again."""
        _run("ip", "netns", "exec", self.ns(host), "nft", "delete", "table", "inet", DROP_TABLE)

    def _nft_input_rule(self, host: int, table: str, rule: Sequence[str]) -> None:
        """A rule on what arrives at the host, in an nftables table of its own (made if new)."""
        if shutil.which("nft") is None:
            raise RuntimeError("dropping packets needs nftables (the `nft` command)")
        inside = ("ip", "netns", "exec", self.ns(host), "nft")
        _run(*inside, "add", "table", "inet", table)
        _run(*inside, f"add chain inet {table} input {{ type filter hook input priority 0; }}")
        _run(*inside, "add", "rule", "inet", table, "input", *rule)


# ============================================================================================
# Wide-area links: the emulator core (sans-I/O)
# ============================================================================================

@dataclass
class WanSettings:
    """One WAN link's character, the same in each direction between every two sites."""
    rate_mbit: float = 2.0          #: the thesis's campus links: 2 Mbit/s
    delay_ms: float = 15.0          #: one way, on top of the time on the wire at the rate
    loss_percent: float = 0.0
    queue_kb: int = 64              #: a router's buffer per link: beyond it packets are dropped
    seed: int = 1                   #: the losses replay with the same seed


@dataclass
class WanLink:
    """One direction between two sites: when its wire is free again, and what it did."""
    busy_until_s: float = 0.0
    packets: int = 0
    bytes: int = 0
    lost: int = 0                   #: dropped at random (loss_percent)
    overflowed: int = 0             #: dropped because the queue was full (faster than the rate)
    cut: int = 0                    #: dropped while a site, or this link, was cut off


def wan_site(address: bytes) -> Optional[int]:
    """The site of a 4-byte IPv4 address in the WAN lab (10.98.S.k), or None."""
    if address[0] == 10 and address[1] == 98 and 1 <= address[2] <= 250:
        return address[2]
    return None


class WanEmulator:
    """Packets in (an IPv4 packet and the time), packets out when due: each direction between
    two sites is a WanLink that sends at the rate, one packet after another, then holds each for
    the delay. Packets that are not between two lab sites pass at once (nothing else should come
    this way). Never reads the clock: the relay hands it the time."""

    def __init__(self, settings: WanSettings) -> None:
        if settings.rate_mbit <= 0 or settings.delay_ms < 0 or not 0 <= settings.loss_percent < 100:
            raise ValueError("a WAN link needs rate_mbit > 0, delay_ms >= 0 and 0 <= loss_percent < 100")
        self.settings = settings
        self.rng = random.Random(settings.seed)
        self.links: Dict[Tuple[int, int], WanLink] = {}
        self.cut_sites: set = set()
        self.cut_links: set = set()     #: (site, site), both orders: one WAN link cut
        self._due: List[Tuple[float, int, bytes]] = []
        self._count = 0

    def packet_in(self, packet: bytes, now_s: float) -> None:
        if len(packet) < 20 or packet[0] >> 4 != 4:
            self._hold(packet, now_s)           # not IPv4: not ours to shape
            return
        src, dst = wan_site(packet[12:16]), wan_site(packet[16:20])
        if src is None or dst is None or src == dst:
            self._hold(packet, now_s)
            return
        link = self.links.setdefault((src, dst), WanLink())
        if src in self.cut_sites or dst in self.cut_sites or (src, dst) in self.cut_links:
            link.cut += 1
            return
        if self.settings.loss_percent and self.rng.random() * 100 < self.settings.loss_percent:
            link.lost += 1
            return
        rate_bytes_per_s = self.settings.rate_mbit * 1e6 / 8
        start_s = max(now_s, link.busy_until_s)
        if (start_s - now_s) * rate_bytes_per_s > self.settings.queue_kb * 1024:
            link.overflowed += 1
            return
        link.busy_until_s = start_s + len(packet) / rate_bytes_per_s
        link.packets += 1
        link.bytes += len(packet)
        self._hold(packet, link.busy_until_s + self.settings.delay_ms / 1000)

    def _hold(self, packet: bytes, due_s: float) -> None:
        self._count += 1
        heapq.heappush(self._due, (due_s, self._count, packet))

    def next_due_s(self) -> Optional[float]:
        return self._due[0][0] if self._due else None

    def packets_out(self, now_s: float) -> List[bytes]:
        """The packets whose time has come, in the order they fall due."""
        out = []
        while self._due and self._due[0][0] <= now_s:
            out.append(heapq.heappop(self._due)[2])
        return out

    def report(self) -> Dict[str, dict]:
        return {"%d->%d" % key: vars(link) for key, link in sorted(self.links.items())}


# ============================================================================================
# Wide-area links: the relay (I/O loop) and the lab of sites
# ============================================================================================

def open_tun(name: str) -> int:
    """The file descriptor of the existing TUN device `name` (made by WanLab in this namespace)."""
    import fcntl
    fd = os.open("/dev/net/tun", os.O_RDWR)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI))
    return fd


def run_wan_relay(tun: str, emulator: WanEmulator, control_path: Optional[str] = None,
                  say=print) -> int:
    """Read packets from the TUN device, write them back when the emulator says: until SIGTERM,
    then print the links' counts as one JSON line. A file at control_path with the words
    `cut S` cuts a site off, `cutlink S T` the link between two sites (the file lists what is
    cut now; read when its modification time changes)."""
    fd = open_tun(tun)
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    seen_mtime = None
    say("wan-relay: %s, %g Mbit/s, %g ms, %g %% loss" % (
        tun, emulator.settings.rate_mbit, emulator.settings.delay_ms, emulator.settings.loss_percent),
        flush=True)
    while not stop:
        now = time.monotonic()
        due = emulator.next_due_s()
        timeout_s = 0.05 if due is None else min(0.05, max(0.0, due - now))
        try:
            readable, _, _ = select.select([fd], [], [], timeout_s)
        except InterruptedError:
            continue
        if readable:
            for _ in range(64):   # a burst per wake-up; the device is non-blocking only after select
                try:
                    emulator.packet_in(os.read(fd, 65536), time.monotonic())
                except BlockingIOError:
                    break
                readable, _, _ = select.select([fd], [], [], 0)
                if not readable:
                    break
        for packet in emulator.packets_out(time.monotonic()):
            try:
                os.write(fd, packet)
            except OSError:
                pass   # a packet the kernel will not route back (it is lost, as on a WAN)
        if control_path:
            seen_mtime = _read_wan_control(control_path, seen_mtime, emulator)
    say(json.dumps(emulator.report()), flush=True)
    return 0


def _read_wan_control(path: str, seen_mtime, emulator: WanEmulator):
    try:
        mtime = os.stat(path).st_mtime_ns
    except OSError:
        return seen_mtime
    if mtime == seen_mtime:
        return seen_mtime
    cut, links = set(), set()
    with open(path) as f:
        for line in f:
            words = line.split()
            if len(words) == 2 and words[0] == "cut" and words[1].isdigit():
                cut.add(int(words[1]))
            elif len(words) == 3 and words[0] == "cutlink" and words[1].isdigit() and words[2].isdigit():
                a, b = int(words[1]), int(words[2])
                links |= {(a, b), (b, a)}
    emulator.cut_sites, emulator.cut_links = cut, links
    return mtime


class WanLab(_ScopedLab):
    """Sites of hosts (site S has hosts 1..n at 10.98.S.k on a bridge of its own) joined by a
    router namespace whose WAN relay shapes every packet between two sites. Each site's LAN is
    fast; multicast stays inside a site (the router does not route it, as campus routers did
    not). Everything is removed on close()."""

    def __init__(self, sites: Sequence[int], settings: Optional[WanSettings] = None,
                 tag: Optional[str] = None, python: str = sys.executable) -> None:
        if not 1 <= len(sites) <= 9 or not all(1 <= n <= 200 for n in sites):
            raise ValueError("a WAN lab has 1 to 9 sites of 1 to 200 hosts")
        self.sites = list(sites)
        self.settings = settings or WanSettings()
        self.tag = tag or f"{os.getpid() % 100000}"
        self.router = f"wr{self.tag}"
        self.python = python
        self.control_path = f"/tmp/wan-{self.tag}-{os.getpid()}.control"
        self.relay: Optional[subprocess.Popen] = None
        self.relay_out = f"/tmp/wan-{self.tag}-{os.getpid()}.relay"
        self._procs: List[subprocess.Popen] = []
        self._made: List[str] = []

    def ns(self, site: int, host: int) -> str:
        return f"s{site}h{host}x{self.tag}"

    def ip(self, site: int, host: int) -> str:
        return f"{WAN_PREFIX}{site}.{host}"

    def up(self) -> None:
        r = ("ip", "netns", "exec", self.router)
        _run("ip", "netns", "add", self.router)
        self._made.append(self.router)
        _run(*r, "ip", "link", "set", "lo", "up")
        _run(*r, "sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv4.conf.all.rp_filter=0",
             "net.ipv4.conf.default.rp_filter=0")
        _run(*r, "ip", "tuntap", "add", "dev", "wan0", "mode", "tun")
        _run(*r, "ip", "link", "set", "wan0", "up")
        # every packet routed between sites goes into wan0; what the relay writes back comes in
        # on wan0 and is routed by the main table to its site
        _run(*r, "ip", "route", "add", "default", "dev", "wan0", "table", WAN_TABLE)
        for site, hosts in enumerate(self.sites, 1):
            bridge = f"br{site}"
            _run(*r, "ip", "link", "add", bridge, "type", "bridge", "mcast_snooping", "0")
            _run(*r, "ip", "addr", "add", f"{WAN_PREFIX}{site}.{WAN_ROUTER_HOST}/24", "dev", bridge)
            _run(*r, "ip", "link", "set", bridge, "up")
            _run(*r, "ip", "rule", "add", "iif", bridge, "lookup", WAN_TABLE)
            for host in range(1, hosts + 1):
                self._add_host(site, host, bridge)
        with open(self.control_path, "w"):
            pass
        self.relay = subprocess.Popen(
            [*r, self.python, os.path.abspath(__file__), "wan-relay", "--tun", "wan0",
             "--rate-mbit", str(self.settings.rate_mbit), "--delay-ms", str(self.settings.delay_ms),
             "--loss-percent", str(self.settings.loss_percent), "--queue-kb", str(self.settings.queue_kb),
             "--seed", str(self.settings.seed), "--control", self.control_path],
            stdout=open(self.relay_out, "w"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while "wan-relay:" not in _read_text(self.relay_out):
            if self.relay.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the WAN relay did not start: " + _read_text(self.relay_out).strip())
            time.sleep(0.05)

    def _add_host(self, site: int, host: int, bridge: str) -> None:
        ns = self.ns(site, host)
        self._made.append(ns)
        _plug_host(ns, f"w{site}v{host}x{self.tag}", f"w{site}p{host}x{self.tag}", self.router, bridge,
                   f"{self.ip(site, host)}/24", gateway=f"{WAN_PREFIX}{site}.{WAN_ROUTER_HOST}")

    def command(self, site: int, host: int, argv: Sequence[str]) -> List[str]:
        return ["ip", "netns", "exec", self.ns(site, host), *argv]

    def popen(self, site: int, host: int, argv: Sequence[str], **kwargs) -> subprocess.Popen:
        proc = subprocess.Popen(self.command(site, host, argv), **kwargs)
        self._procs.append(proc)
        return proc

    def run(self, site: int, host: int, argv: Sequence[str], **kwargs) -> subprocess.CompletedProcess:
        return subprocess.run(self.command(site, host, argv), **kwargs)

    def cut_site(self, site: int) -> None:
        """Every WAN packet from or to the site is dropped (its LAN still works): a partition."""
        self._control(self._cut | {site})

    def heal_site(self, site: int) -> None:
        self._control(self._cut - {site})

    def cut_link(self, a: int, b: int) -> None:
        """Every packet between sites a and b is dropped, both ways; the other links work."""
        self._control(self._cut, self._cut_links | {tuple(sorted((a, b)))})

    def heal_link(self, a: int, b: int) -> None:
        self._control(self._cut, self._cut_links - {tuple(sorted((a, b)))})

    @property
    def _cut(self) -> set:
        return {int(line.split()[1]) for line in _read_text(self.control_path).splitlines()
                if line.startswith("cut ")}

    @property
    def _cut_links(self) -> set:
        return {(int(line.split()[1]), int(line.split()[2]))
                for line in _read_text(self.control_path).splitlines() if line.startswith("cutlink ")}

    def _control(self, cut: set, links: Optional[set] = None) -> None:
        links = self._cut_links if links is None else links
        tmp = self.control_path + ".new"
        with open(tmp, "w") as f:
            f.writelines("cut %d\n" % site for site in sorted(cut))
            f.writelines("cutlink %d %d\n" % pair for pair in sorted(links))
        os.replace(tmp, self.control_path)
        time.sleep(0.1)   # the relay looks at the file every 50 ms at most

    def link_report(self) -> Dict[str, dict]:
        """The relay's counts per direction ("1->2": packets, bytes, lost, overflowed, cut);
        stops the relay (the figures are final)."""
        if self.relay is not None and self.relay.poll() is None:
            self.relay.terminate()
            try:
                self.relay.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.relay.kill()
        for line in reversed(_read_text(self.relay_out).splitlines()):
            if line.startswith("{"):
                return json.loads(line)
        return {}

    def close(self) -> None:
        _stop_and_remove(self._procs + ([self.relay] if self.relay else []), self._made)
        for path in (self.control_path, self.relay_out):
            try:
                os.unlink(path)
            except OSError:
                pass


def _read_text(path: str) -> str:
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except OSError:
        return ""


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
    relay = sub.add_parser("wan-relay", help="the WAN delay line of a WanLab (run in its router namespace)")
    relay.add_argument("--tun", required=True)
    relay.add_argument("--rate-mbit", type=float, default=WanSettings.rate_mbit)
    relay.add_argument("--delay-ms", type=float, default=WanSettings.delay_ms)
    relay.add_argument("--loss-percent", type=float, default=WanSettings.loss_percent)
    relay.add_argument("--queue-kb", type=int, default=WanSettings.queue_kb)
    relay.add_argument("--seed", type=int, default=WanSettings.seed)
    relay.add_argument("--control", help="file of `cut S` lines: sites cut off")
    args = parser.parse_args(argv)
    if args.cmd == "wan-relay":
        try:
            emulator = WanEmulator(WanSettings(args.rate_mbit, args.delay_ms, args.loss_percent,
                                               args.queue_kb, args.seed))
        except ValueError as why:
            parser.error(str(why))
        return run_wan_relay(args.tun, emulator, args.control)
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
