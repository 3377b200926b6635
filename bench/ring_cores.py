#!/usr/bin/env python3
"""The CPU that three daemon cores spend per message, without sockets: where the Python time goes.

Three spread_mini Daemon cores (d1, d2, d3, one ring) in this process, joined by an in-memory
network that hands each daemon every datagram queued for it at once, the way the I/O loop
reads a burst (Daemon.datagrams_in_burst, a daemon's datagrams in one call, then end_of_burst;
datagram_in_burst for each, or one at a time, for a version without them). A client session on d1 sends COUNT messages to a group, 20 per read, as a
flooding client's TCP stream would arrive; a client on d2 and one on d3 are its members. The
figure is this process's CPU time for the flood, per message (the three cores summed): the
system calls, the kernel and the other processes of a real run are not in it, so it moves
much less with the machine's load than bench/ring_throughput.py. Each core's own share (the
CPU of its inputs, the sender d1's and the receivers d2's and d3's) is printed beside it. With
--against the same is measured for another spread_mini.py, alternating, and the ratio of the
medians printed, for the whole ring and for a receiving core.

    python3 bench/ring_cores.py                                   # 20,000 x 1000 B AGREED
    python3 bench/ring_cores.py --size 100 --service SAFE
    python3 bench/ring_cores.py --packet-bytes 1400               # a LAN's packets: one message each
    git show main:spread_mini.py > /tmp/main_spread_mini.py       # another version, in the same run:
    python3 bench/ring_cores.py --against /tmp/main_spread_mini.py --repeat 5
    python3 bench/ring_cores.py --profile                         # cProfile: the top functions
    python3 bench/ring_cores.py --profile d2                      # ... of a receiver's inputs only
    python3 bench/ring_cores.py --key-compare --repeat 5          # what --key costs the cores

With --key-compare the same spread_mini.py runs with and without a ring key (every daemon
packet signed with HMAC-SHA256 instead of a CRC), alternating, and the ratio is the key's cost
in CPU, the daemons' bottleneck. Without the system calls in the figure this overstates it.
"""
from __future__ import annotations

import argparse
import collections
import cProfile
import importlib.util
import os
import pstats
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
NAMES = ["d1", "d2", "d3"]
IPS = {name: "127.0.0.%d" % i for i, name in enumerate(NAMES, 1)}
BATCH = 20  # messages per read of the sender's connection
TICK_S = 0.001
KEY = bytes(range(32))  # --key-compare: any 32 bytes do, as a key file made by keygen


def load(path):
    """spread_mini from `path` (a second version may sit beside ours in another process only)."""
    spec = importlib.util.spec_from_file_location("spread_mini", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["spread_mini"] = module
    spec.loader.exec_module(module)
    return module


def daemon_settings(sp, packet_bytes=None):
    """The ring settings a daemon of a spread.conf naming these three addresses runs with, with
    --packet-bytes if given (a version without ring_settings_of: its defaults)."""
    if not hasattr(sp, "ring_settings_of"):
        return None
    conf = "Spread_Segment 239.255.4.3:4803 {\n%s}\n" % "".join(
        " %s %s\n" % (name, ip) for name, ip in IPS.items())
    if packet_bytes is None:
        return sp.ring_settings_of(sp.parse_spread_conf(conf))
    return sp.ring_settings_of(sp.parse_spread_conf(conf), packet_bytes)


class Ring:
    """Three cores and the datagrams between them; clients are connection 1 of each."""

    def __init__(self, sp, key=None, packet_bytes=None, profiled=None):
        self.sp = sp
        settings = daemon_settings(sp, packet_bytes)
        seal = sp.RingSeal(key, sp.configuration_stamp([(n, IPS[n], 4803) for n in NAMES], settings)) \
            if key else None
        self.cores = {name: sp.build_daemon(name, IPS, incarnation=i, settings=settings, seal=seal)
                      for i, name in enumerate(NAMES, 1)}
        self.queue = collections.deque()  # (dest, src, packet)
        self.received = collections.Counter()  # daemon -> bytes its client got
        self.now = 0.0
        self.burst = hasattr(sp.Daemon, "datagram_in_burst")
        self.burst_call = hasattr(sp.Daemon, "datagrams_in_burst")  # a daemon's burst in one call
        #: CPU seconds spent in each core's inputs (the writes' bookkeeping included)
        self.cpu_s = collections.Counter()
        self.profiled = profiled  # (daemon name, cProfile.Profile): only that core's inputs

    def call(self, name, method, *args):
        """One input of a core, its CPU counted to it (and profiled if it is the one)."""
        started = time.process_time()
        profile = self.profiled[1] if self.profiled and self.profiled[0] == name else None
        if profile:
            profile.enable()
        actions = method(*args)
        if profile:
            profile.disable()
        self.cpu_s[name] += time.process_time() - started
        return actions

    def perform(self, name, actions):
        """Writes: the client takes everything. Datagrams: queued. The rest: ignored."""
        core = self.cores[name]
        todo = collections.deque(actions)
        while todo:
            action = todo.popleft()
            kind = action.__class__.__name__
            if kind == "Write":
                self.received[name] += len(action.data)
                todo.extend(self.call(name, core.written, action.conn_id, len(action.data)))
            elif kind == "SendDatagram":
                self.queue.append((action.dest, name, action.packet))
            elif kind == "MulticastDatagram":
                self.queue.extend((dest, name, action.packet) for dest in action.dests)

    def run_network(self):
        while self.queue:
            burst = list(self.queue)
            self.queue.clear()
            if self.burst_call:
                self.run_bursts(burst)
                continue
            touched = []
            for dest, src, packet in burst:
                core = self.cores[dest]
                if self.burst:
                    self.perform(dest, self.call(dest, core.datagram_in_burst, packet, (IPS[src], 4803), self.now))
                    if dest not in touched:
                        touched.append(dest)
                else:
                    self.perform(dest, self.call(dest, core.datagram, packet, (IPS[src], 4803), self.now))
            for name in touched:
                self.perform(name, self.call(name, self.cores[name].end_of_burst))

    def run_bursts(self, burst):
        """Each daemon's datagrams of this burst, in their order, in one call (as the I/O loop
        hands over what one socket had)."""
        by_dest = {}
        for dest, src, packet in burst:
            by_dest.setdefault(dest, []).append((packet, (IPS[src], 4803)))
        for dest, datagrams in by_dest.items():
            core = self.cores[dest]
            self.perform(dest, self.call(dest, core.datagrams_in_burst, datagrams, self.now))
        for dest in by_dest:
            self.perform(dest, self.call(dest, self.cores[dest].end_of_burst))

    def tick(self, steps=1):
        for _ in range(steps):
            self.now += TICK_S
            for name in NAMES:
                self.perform(name, self.call(name, self.cores[name].tick, self.now))
            self.run_network()

    def client(self, name, user, group=None):
        sp, core = self.sp, self.cores[name]
        self.perform(name, core.connection_opened(1, self.now, "127.0.0.1"))
        self.perform(name, core.connection_data(1, sp.encode_connect(user, True) + sp.encode_auth_choice()))
        if group:
            self.perform(name, core.connection_data(1, sp.encode_message(
                sp.JOIN_MESS, "#%s#%s" % (user, name), [group], sp.make_hint(0), b"")))
        return "#%s#%s" % (user, name)


def measure(path, count, size, service, profile, key=None, packet_bytes=None):
    """(us of CPU per message, messages each receiver got, {daemon: us of its core's inputs per
    message}); `profile` names a daemon whose inputs alone are profiled, or "all"."""
    sp = load(path)
    prof = cProfile.Profile() if profile else None
    ring = Ring(sp, key, packet_bytes, (profile, prof) if profile and profile != "all" else None)
    ring.tick(3000)  # the ring forms (startup waits one consensus timeout)
    sender = ring.client("d1", "snd")
    ring.client("d2", "r2", "g")
    ring.client("d3", "r3", "g")
    ring.tick(500)
    ring.received.clear()
    ring.cpu_s.clear()
    one = sp.encode_message(getattr(sp, service + "_MESS"), sender, ["g"], sp.make_hint(0), b"x" * size)
    started = time.process_time()
    if profile == "all":
        prof.enable()
    sent = 0
    core1 = ring.cores["d1"]
    while sent < count:
        ring.perform("d1", ring.call("d1", core1.connection_data, 1, one * BATCH))
        sent += BATCH
        ring.run_network()
        if sent % (BATCH * 20) == 0:
            ring.tick()
    ring.tick(200)
    if profile == "all":
        prof.disable()
    cpu_s = time.process_time() - started
    if prof:
        pstats.Stats(prof).sort_stats("tottime").print_stats(30)
    got = min(ring.received["d2"], ring.received["d3"]) // len(one)
    per_daemon = {name: ring.cpu_s[name] / sent * 1e6 for name in NAMES}
    return cpu_s / sent * 1e6, got, per_daemon


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=20000, help="messages (default 20000)")
    parser.add_argument("--size", type=int, default=1000, help="bytes of data per message (default 1000)")
    parser.add_argument("--service", type=str.upper, choices=["AGREED", "SAFE"], default="AGREED")
    parser.add_argument("--against", metavar="SPREAD_MINI_PY", help="another spread_mini.py, measured alternately")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each version (default 3)")
    parser.add_argument("--profile", nargs="?", const="all", choices=["all"] + NAMES,
                        help="one run of ours under cProfile: every core, or one daemon's inputs "
                             "only (d2: a receiver)")
    parser.add_argument("--packet-bytes", type=int, metavar="N",
                        help="ring packets of up to N bytes (default: the daemons' own for a ring "
                             "on loopback, 8900; 1400 is a LAN's)")
    parser.add_argument("--key-compare", action="store_true",
                        help="ours with and without a ring key, alternately: what the key costs")
    parser.add_argument("--key", action="store_true", help=argparse.SUPPRESS)  # a child: with a key
    parser.add_argument("--one", metavar="SPREAD_MINI_PY", help=argparse.SUPPRESS)  # a child: one run
    args = parser.parse_args(argv)
    if args.count < BATCH or not 1 <= args.size <= 100000 or args.repeat < 1:
        parser.error("needs --count >= %d, 1 <= --size <= 100000, --repeat >= 1" % BATCH)
    if args.one:
        us, got, per_daemon = measure(args.one, args.count, args.size, args.service, None,
                                      KEY if args.key else None, args.packet_bytes)
        print("%.3f %d %s" % (us, got, " ".join("%.3f" % per_daemon[n] for n in NAMES)))
        return 0
    ours = os.path.join(ROOT, "spread_mini.py")
    print("%d x %d B %s through 3 daemon cores, no sockets, packets of %s bytes; load average %.2f" % (
        args.count, args.size, args.service, args.packet_bytes or "the default", os.getloadavg()[0]),
        flush=True)
    if args.profile:
        us, got, per_daemon = measure(ours, args.count, args.size, args.service, args.profile,
                                      None, args.packet_bytes)
        print("%.1f us CPU per message under the profiler (it costs about 3x; %s); each receiver got %d" % (
            us, ", ".join("%s %.1f" % (n, per_daemon[n]) for n in NAMES), got))
        return 0
    if args.key_compare and args.against:
        parser.error("--key-compare measures this spread_mini.py only (no --against)")
    versions = [("this", ours, False)]
    if args.against:
        versions.append(("against", os.path.abspath(args.against), False))
    if args.key_compare:
        versions.append(("key", ours, True))
    figures = {name: [] for name, _, _ in versions}
    receivers = {name: [] for name, _, _ in versions}  # us per message on one receiving core
    for run in range(args.repeat):
        for name, path, key in (versions if run % 2 == 0 else versions[::-1]):
            # each run in a fresh process: two versions of the module never share one
            out = subprocess.run([sys.executable, __file__, "--one", path, "--count", str(args.count),
                                  "--size", str(args.size), "--service", args.service]
                                 + (["--key"] if key else [])
                                 + (["--packet-bytes", str(args.packet_bytes)] if args.packet_bytes else []),
                                 capture_output=True, text=True)
            if out.returncode != 0:
                print("%s: failed: %s" % (name, (out.stderr.strip().splitlines() or ["?"])[-1]))
                return 2
            us, got, *per_daemon = out.stdout.split()
            if int(got) != args.count - args.count % BATCH:
                print("%s: a receiver got %s of %d messages" % (name, got, args.count))
                return 2
            figures[name].append(float(us))
            receivers[name].append((float(per_daemon[1]) + float(per_daemon[2])) / 2)
            print("run %d %-7s %.1f us CPU per message (the cores' inputs: d1 %s, d2 %s, d3 %s)" % (
                run + 1, name, float(us), *("%.1f" % float(v) for v in per_daemon)), flush=True)
    line = "this spread_mini.py: %.1f us CPU per message, a receiving core %.1f (medians of %d)" % (
        statistics.median(figures["this"]), statistics.median(receivers["this"]), args.repeat)
    if args.against:
        line += "; %s: %.1f us, a receiving core %.1f; this / against %.2f, receivers %.2f" % (
            args.against, statistics.median(figures["against"]), statistics.median(receivers["against"]),
            statistics.median(figures["this"]) / statistics.median(figures["against"]),
            statistics.median(receivers["this"]) / statistics.median(receivers["against"]))
    if args.key_compare:
        with_key, without = statistics.median(figures["key"]), statistics.median(figures["this"])
        line += "; with a key: %.1f us; key / no key %.2f (the key costs %.0f %% more CPU)" % (
            with_key, with_key / without, (with_key / without - 1) * 100)
    print(line)
    print("rerun: python3 bench/ring_cores.py --count %d --size %d --service %s --repeat %d%s%s%s" % (
        args.count, args.size, args.service, args.repeat,
        " --packet-bytes %d" % args.packet_bytes if args.packet_bytes else "",
        " --against %s" % args.against if args.against else "", " --key-compare" if args.key_compare else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
