"""Hostile datagrams against three real ring daemons on loopback, as a curious student on the LAN
would send them: captured ring datagrams replayed as they were, mutated (and, without a key,
re-checksummed), and forged ones with extreme values (the issue's 2**53 join among them).

Three daemons (127.0.0.1..3), a client on each that sends AGREED messages all along and counts
what it receives. A raw socket on lo (root) captures the daemons' datagrams for a few seconds;
then the hostile ones go to the daemons' ring port from their own addresses (127.0.0.1..3, so
that they pass the daemons' check of the source address) while the clients go on. Printed: the
membership changes the clients saw, messages lost at clients, transitional views followed by
data before a regular view, and whether each daemon ends in the ring of all three.

    python3 bench/ring_hostile.py                    # with a key, then without, 20,000 each
    python3 bench/ring_hostile.py --count 2000 --modes key
"""
from __future__ import annotations

import argparse
import os
import random
import re
import socket
import struct
import sys
import tempfile
import threading
import time
import types
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))

import spread_mini as sp  # noqa: E402
from ring_sim import Hostile  # noqa: E402
from ring_throughput import machine_line, start_daemons, stop_daemons  # noqa: E402

IPS = ["127.0.0.1", "127.0.0.2", "127.0.0.3"]
ETH_P_ALL = 0x0003


def capture(port, seconds):
    """UDP payloads to `port` on lo for `seconds`: (src ip, dst ip, payload) each."""
    raw = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    raw.bind(("lo", 0))
    raw.settimeout(0.2)
    got = []
    end = time.monotonic() + seconds
    try:
        while time.monotonic() < end:
            try:
                frame, addr = raw.recvfrom(65535)
            except socket.timeout:
                continue
            if addr[2] == socket.PACKET_OUTGOING:
                continue  # each frame on lo is seen twice: going out and coming in
            ip = frame[14:]
            if len(ip) < 28 or ip[0] >> 4 != 4 or ip[9] != 17:
                continue
            ihl = (ip[0] & 0x0F) * 4
            sport, dport = struct.unpack(">HH", ip[ihl:ihl + 4])
            if dport == port and sport == port:
                got.append((socket.inet_ntoa(ip[12:16]), socket.inet_ntoa(ip[16:20]),
                            bytes(ip[ihl + 8:])))
    finally:
        raw.close()
    return got


class Client:
    """One client of one daemon: sends numbered AGREED messages, records what it receives."""

    def __init__(self, port, ip, name):
        self.name = name
        self.mbox = sp.connect("%d@%s" % (port, ip), name, 0, True)
        self.sent = 0
        self.got = {}  # sender -> set of numbers
        self.regular_views = 0
        self.transitional_then_data = 0
        self.altered = 0  # messages that are not one of the clients' (made up or altered)
        self.after_transitional = False
        self.stop = False
        self.lock = threading.Lock()

    def receive_loop(self):
        while not self.stop:
            msg = self.mbox.receive(timeout=0.2)
            if msg is None:
                continue
            if msg.is_membership:
                if msg.is_regular:
                    self.regular_views += 1
                    self.after_transitional = False
                elif msg.is_transitional:
                    self.after_transitional = True
                continue
            if self.after_transitional:
                self.transitional_then_data += 1
            try:  # without a key, a mutated data packet can reach the clients altered
                sender, number = msg.data.split(b" ", 1)
                sender, number = sender.decode("ascii"), int(number)
            except ValueError:
                self.altered += 1
                continue
            with self.lock:
                self.got.setdefault(sender, set()).add(number)

    def send_loop(self, rate, until):
        while time.monotonic() < until[0] and not self.stop:
            self.mbox.multicast(sp.AGREED_MESS, "h", b"%s %d" % (self.name.encode(), self.sent))
            self.sent += 1
            time.sleep(1.0 / rate)


class BenchHostile(Hostile):
    """The simulator's forger, with the stamp it copied from captured packets; it has no key
    (a random one when the daemons have one)."""

    def __init__(self, rng, keyed, stamp):
        super().__init__(rng, types.SimpleNamespace(names=["d1", "d2", "d3"],
                                                    key=b"x" if keyed else None))
        self.stamp = stamp

    def forger_seal(self):
        key = bytes(self.rng.getrandbits(8) for _ in range(32)) if self.sim.key else None
        return sp.RingSeal(key, self.stamp)


def mutate(rng, raw, keyed):
    data = bytearray(raw)
    trailer = sp.RING_TAG_BYTES if keyed else 4
    if len(data) <= sp.RING_HEADER_BYTES + trailer:
        return bytes(data)
    for _ in range(rng.randrange(1, 4)):
        i = rng.randrange(sp.RING_HEADER_BYTES, len(data) - trailer)
        data[i] = rng.randrange(256) if rng.random() < 0.5 else data[i] ^ (1 << rng.randrange(8))
    body = bytes(data[:-trailer])
    if keyed:
        return bytes(data)  # without the key, no valid tag can be made
    return body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)


def the_issues_join():
    """The 44-byte JOIN of the issue (54 bytes in wire version 2): d1 with incarnation 2**53."""
    ghost = ("d1", 2 ** 53)
    return sp.RingJoin(ghost, 0, [ghost], [])


def last_ring(log_text):
    rings = re.findall(r"installed ring \S+ \{([^}]*)\}", log_text)
    return sorted(m.split("#")[0] for m in rings[-1].split(",")) if rings else []


def run_mode(keyed, args, rng):
    tmpdir = tempfile.mkdtemp(prefix="ring_hostile_")
    key = None
    if keyed:
        key = os.path.join(tmpdir, "ring.key")
        sp.write_key_file(key)
    procs, port, log_paths = start_daemons(3, tmpdir, key=key)
    clients = []
    try:
        clients = [Client(port, ip, "c%d" % i) for i, ip in enumerate(IPS, 1)]
        for c in clients:
            c.mbox.join("h")
        threads = [threading.Thread(target=c.receive_loop, daemon=True) for c in clients]
        for t in threads:
            t.start()
        time.sleep(1.0)
        views_at_start = [c.regular_views for c in clients]
        until = [time.monotonic() + 3600]
        senders = [threading.Thread(target=c.send_loop, args=(args.rate, until), daemon=True)
                   for c in clients]
        for t in senders:
            t.start()
        captured = capture(port, args.capture_s)
        if not captured:
            raise SystemExit("captured no ring datagrams on lo")
        stamp = (captured[0][2][7], captured[0][2][8:12], captured[0][2][12:16])
        forger = BenchHostile(rng, keyed, stamp)
        socks = {}
        for ip in IPS:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind((ip, 0))  # a configured daemon's address, another port
            socks[ip] = s
        kinds = {"replayed": 0, "mutated": 0, "forged": 0}
        started = time.monotonic()
        for i in range(args.count):
            src, dst, raw = rng.choice(captured)
            r = rng.random()
            if i == 0:
                what, raw, src, dst = "forged", sp.encode_ring_join(
                    the_issues_join(), forger.forger_seal()), IPS[1], IPS[0]
            elif r < 0.4:
                what, dst = "replayed", rng.choice(IPS)
            elif r < 0.8:
                what, raw, dst = "mutated", mutate(rng, raw, keyed), rng.choice(IPS)
            else:
                what, src, dst = "forged", rng.choice(IPS), rng.choice(IPS)
                try:
                    raw = sp.encode_ring_packet(forger.forged(), forger.forger_seal())
                except struct.error:
                    raw = b"SMRG"
            kinds[what] += 1
            socks[src].sendto(raw, (dst, port))
            delay = started + (i + 1) / args.hostile_rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        hostile_s = time.monotonic() - started
        until[0] = time.monotonic()  # the clients stop sending
        for t in senders:
            t.join(5)
        time.sleep(args.settle_s)  # the ring delivers what is left
        for c in clients:
            c.stop = True
        for t in threads:
            t.join(2)
        lost = 0
        for c in clients:
            for other in clients:
                have = c.got.get(other.name, set())
                lost += sum(1 for n in range(other.sent) if n not in have)
        changes = sum(c.regular_views - v for c, v in zip(clients, views_at_start))
        logs = [open(path).read() for path in log_paths]
        whole = sum(1 for text in logs if last_ring(text) == ["d1", "d2", "d3"])
        installs = [text.count("installed ring") for text in logs]
        print("| %s | %d (%s) | %.1f | %d | %d | %d | %d | %d | %d of 3 | %s |" % (
            "yes" if keyed else "no", sum(kinds.values()),
            ", ".join("%s %d" % kv for kv in kinds.items()), hostile_s,
            sum(c.sent for c in clients), changes, lost, sum(c.altered for c in clients),
            sum(c.transitional_then_data for c in clients), whole,
            "/".join(str(n) for n in installs)), flush=True)
        for s in socks.values():
            s.close()
    finally:
        for c in clients:
            c.stop = True
            try:
                c.mbox.disconnect()
            except sp.SpreadError:
                pass
        stop_daemons(procs)


def main(argv=None):
    parser = argparse.ArgumentParser(description="Replayed, mutated and forged datagrams against "
                                                 "three real ring daemons on loopback.")
    parser.add_argument("--count", type=int, default=20000, help="hostile datagrams (default 20000)")
    parser.add_argument("--modes", default="key,nokey", help="key,nokey (default both)")
    parser.add_argument("--rate", type=float, default=50.0, help="client messages/s each (default 50)")
    parser.add_argument("--hostile-rate", type=float, default=2000.0,
                        help="hostile datagrams per second (default 2000)")
    parser.add_argument("--capture-s", type=float, default=3.0, help="seconds of capture (default 3)")
    parser.add_argument("--settle-s", type=float, default=5.0, help="seconds after (default 5)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        parser.error("capturing on lo needs a raw socket: run as root")
    modes = args.modes.split(",")
    if any(m not in ("key", "nokey") for m in modes) or args.count < 1:
        parser.error("--modes key,nokey; --count at least 1")
    print(machine_line())
    print("| key | hostile datagrams | s | client messages | membership changes at clients | "
          "lost at clients | altered at clients | transitional then data | "
          "daemons in the ring of 3 at the end | rings installed d1/d2/d3 |")
    print("|---|---|---|---|---|---|---|---|---|---|", flush=True)
    rng = random.Random(args.seed)
    for mode in modes:
        run_mode(mode == "key", args, rng)
    print("rerun: python3 bench/ring_hostile.py --count %d --modes %s --seed %d" % (
        args.count, args.modes, args.seed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
