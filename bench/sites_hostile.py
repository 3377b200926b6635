"""Hostile datagrams at the HOP ports of two real sites on loopback, as a curious student on the
lab LAN would send them, while the two sites exchange AGREED traffic (LinkProtocol = Hop):
site 0 = a1, a2; site 1 = b1; a client on each daemon sends numbered AGREED messages to "h"
all along and records what it receives.

A raw socket on lo (root) captures the HOP datagrams for a few seconds; then the hostile ones
go to the representatives' HOP ports (a1 mostly, b1 too) from spoofed sources (a raw IP
socket: the address and port of the daemon the packet claims, so that they pass the daemons'
check of the source; a few from an address outside the configuration):
  replayed    captured HOP datagrams as they were (old link seqs, HELLOs, another link's)
  mangled     captured ones with bits flipped or cut short (the CRC or the key's tag refuses them)
  hello       forged HELLOs: other sessions (the peer's, another site's), other epochs, a
              daemon that is not its site's representative, another incarnation, the wrong site
  other_team  captured ones as another spread.conf's daemons would send them (another stamp)
  stranger    captured ones from an address that no daemon of the configuration has
  in_session  (with --key, or --forge-in-session) DATA with forged site records, ACKs and NACKs
              under a link's sniffed sender and session, and captured DATA mutated with its CRC
              made good: without a key these pass the CRC (what only a key stops). The records
              include the epochs' (EPOCH first hand or heard, FRONTIER and UNRELIABLE with an
              epoch: the sites' own, next to it, above EPOCH_MAX) and some mangled ones (an
              EPOCH's unknown flag, an epoch 0 written, bytes after the epoch)
  sites_ring  (likewise) a DATA packet of site 0's ring (sniffed: its ring, sender and seqs)
              holding a SITES message as the representative makes them: its epoch tag site
              0's epoch, another, none, not a number, too long; its records as in_session's
Daemons that exit or log a traceback or an internal error are printed with their log.
Printed per mode: what was sent, the clients' messages, lost / duplicated / out of order /
altered at clients, whether every client saw one agreed order, the membership changes the
clients saw, and what the daemons counted and refused (their status tables' "HOP refused" rows).

    python3 bench/sites_hostile.py                       # with a key, then without, 5000 each
    python3 bench/sites_hostile.py --count 1000 --modes nokey
    python3 bench/sites_hostile.py --modes nokey --forge-in-session   # the harm a key stops
"""
from __future__ import annotations

import argparse
import collections
import os
import random
import re
import shutil
import socket
import struct
import sys
import tempfile
import threading
import time
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)

import spread_mini as sp  # noqa: E402
from ring_throughput import machine_line  # noqa: E402
from sites_failover import start, stop, wait_members  # noqa: E402

LAYOUT = [["a1", "a2"], ["b1"]]
ETH_P_ALL = 0x0003
STRANGER_IP = "127.0.9.9"
NAMES = [name for site in LAYOUT for name in site]


def capture(ports, seconds, stop=None, on_packet=None):
    """UDP datagrams on lo between `ports` for `seconds` (or until stop[0]): (src ip, src port,
    dst ip, dst port, payload) each, also handed to on_packet as they come."""
    raw = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    raw.bind(("lo", 0))
    raw.settimeout(0.2)
    got = []
    end = time.monotonic() + seconds
    try:
        while time.monotonic() < end and not (stop and stop[0]):
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
            if sport in ports and dport in ports:
                got.append((socket.inet_ntoa(ip[12:16]), sport, socket.inet_ntoa(ip[16:20]), dport,
                            bytes(ip[ihl + 8:])))
                if on_packet is not None:
                    on_packet(got.pop())
    finally:
        raw.close()
    return got


class Spoofer:
    """UDP datagrams with any source address and port (a raw IP socket; UDP checksum 0: none)."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)

    def send(self, src, sport, dst, dport, payload):
        if not (src.startswith("127.") and dst.startswith("127.")):  # (the network rule: lo only)
            raise ValueError("the spoofer sends on loopback only, not %s -> %s" % (src, dst))
        udp = struct.pack(">HHHH", sport, dport, 8 + len(payload), 0) + payload
        ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0,
                         socket.inet_aton(src), socket.inet_aton(dst))
        self.sock.sendto(ip + udp, (dst, 0))

    def close(self):
        self.sock.close()


class Client:
    """One client of one daemon: sends numbered AGREED messages, records what it receives (two
    connections: a Mailbox is not for two threads at once)."""

    def __init__(self, port, ip, name):
        self.name = name
        self.mbox = sp.connect("%d@%s" % (port, ip), "u" + name, 0, True)
        self.out = sp.connect("%d@%s" % (port, ip), "s" + name, 0, False)
        self.sent = 0
        self.order = []  # (sender, number) as delivered
        self.altered = 0  # messages that are none of the clients' (made up or altered)
        self.views = 0  # REG_MEMB of "h" after the start
        self.stop = False

    def receive_loop(self):
        while not self.stop:
            try:
                msg = self.mbox.receive(timeout=0.2)
            except sp.SpreadError:
                return
            if msg is None:
                continue
            if msg.is_membership:
                self.views += msg.is_regular
                continue
            try:
                sender, number = msg.data.split(b" ", 1)
                sender, number = sender.decode("ascii"), int(number)
            except ValueError:
                sender = None
            if sender not in NAMES:
                self.altered += 1  # (a forged message: it may have taken a real one's place)
            else:
                self.order.append((sender, number))

    def send_loop(self, rate, until):
        while time.monotonic() < until[0] and not self.stop:
            self.out.multicast(sp.AGREED_MESS, "h", b"%s %d" % (self.name.encode(), self.sent))
            self.sent += 1
            time.sleep(1.0 / rate)


class HopForger:
    """What the student makes of the captured HOP datagrams: he reads every field (the key only
    signs), copies the configuration stamp, and has no key (a random one when the daemons have
    one)."""

    def __init__(self, rng, captured, read_seal, keyed, in_session):
        self.rng = rng
        self.captured = captured
        self.read_seal = read_seal  # (only to read the fields of what was captured)
        self.keyed = keyed
        self.in_session = in_session
        first = captured[0][4]
        self.stamp = (first[7], first[8:12], first[12:16])
        self.hellos, self.links = [], []  # (capture, SiteHello); (capture, sender, session, seq)
        #: (src, sport, dst, dport) -> the last (capture, sender, session, seq) seen on that link
        self.live = {}
        self.mine = set()  #: what we sent (the sniffer sees it too: not the daemons')
        #: site -> the epoch of its streams, as its HELLOs say (what an EPOCH record names)
        self.epochs = {}
        #: (src, sport) -> the last (ring_id, sender, link_seq, chunk) sniffed on site 0's ring
        self.ring_live = {}
        for c in captured:
            self.sniffed(c)

    def sniffed(self, c):
        """A HOP datagram seen on the wire (the capture, then live during the burst)."""
        if c[4] in self.mine:
            return
        ptype = sp.hop_packet_type(c[4])
        try:
            if ptype == sp.PT_SITE_HELLO:
                self.hellos.append((c, sp.decode_site_hello(c[4], self.read_seal)))
                if self.hellos[-1][1].epoch:
                    self.epochs[self.hellos[-1][1].site] = self.hellos[-1][1].epoch
            elif ptype is not None:
                p = sp.decode_hop_packet(c[4], self.read_seal)
                seq = getattr(p, "seq", 0)
                old = self.live.get(c[:4])
                if old is not None and old[1:3] == (p.sender, p.session):
                    seq = max(seq, old[3])
                self.live[c[:4]] = (c, p.sender, p.session, seq)
                if len(self.links) < 1000:
                    self.links.append((c, p.sender, p.session, seq))
        except sp.RingPeerError:
            pass

    def seal(self, stamp=None):
        key = bytes(self.rng.getrandbits(8) for _ in range(32)) if self.keyed else None
        return sp.RingSeal(key, stamp or self.stamp)

    def trailer(self):
        return sp.RING_TAG_BYTES if self.keyed else 4

    def mangled(self, raw):
        data = bytearray(raw)
        if self.rng.random() < 0.3:
            return bytes(data[:self.rng.randrange(len(data))])
        for _ in range(self.rng.randrange(1, 4)):
            i = self.rng.randrange(len(data))
            data[i] ^= 1 << self.rng.randrange(8)
        return bytes(data)

    def other_team(self, raw):
        stamp = (self.stamp[0] + 1, b"TEAM", self.stamp[2])
        return self.seal(stamp).seal(self.seal(stamp).header(raw[5]) + raw[sp.RING_HEADER_BYTES:-self.trailer()])

    def hello(self):
        """A HELLO like a captured one, or like one the sender of a captured link packet
        would send (its pid, its session of that link, its site)."""
        if self.hellos and self.rng.random() < 0.5:
            (src, sport, dst, dport, _), h = self.rng.choice(self.hellos)
        else:
            (src, sport, dst, dport, _), sender, session, seq = self.rng.choice(self.links)
            site = next(i for i, names in enumerate(LAYOUT) if sender[0] in names)
            h = sp.SiteHello(sender, site, True, {0: seq, 1: seq}, 0, (0, 1), session, 0)
        r = self.rng.random()
        names = [n for site in LAYOUT for n in site]
        sender, site, session, epoch = h.sender, h.site, h.session, h.epoch
        if r < 0.2:
            session += sp.HOP_SESSION_SITES * self.rng.choice([1, 2, 1000])  # "the peer started over"
        elif r < 0.35:
            count, to = divmod(session, sp.HOP_SESSION_SITES)  # a HELLO meant for another site
            session = sp.hop_session(count, (to + 1) % len(LAYOUT))
        elif r < 0.5:
            epoch = self.rng.choice([epoch + 1, 2 ** 53, 0])
        elif r < 0.65:
            sender = (sender[0], self.rng.choice([sender[1] + 1, 2 ** 53, max(0, sender[1] - 1)]))
        elif r < 0.8:
            sender = (self.rng.choice(names), sender[1])  # another daemon, of its site or not
        else:
            site = self.rng.choice([0, 1, 7, sp.MAX_SITES])
        forged = sp.SiteHello(sender, site, self.rng.random() < 0.7,
                              {s: self.rng.choice([v, v + 5, 2 ** 53]) for s, v in h.positions.items()},
                              self.rng.choice([h.view_seq, h.view_seq + 1, 2 ** 53]),
                              self.rng.choice([h.view_sites, (0,), (1,), (0, 1)]), session, epoch)
        return src, sport, dst, dport, sp.encode_site_hello(forged, self.seal())

    def records(self):
        rng = self.rng
        forged = [
            sp.SiteRecord(sp.SITE_MSG, rng.choice([0, 1]), rng.choice([5, 2 ** 40]), rng.choice([1, 50, 2 ** 40]),
                          sp.AGREED_MESS, rng.choice(["a1", "b1"]), sp.encode_message_body(
                              sp.DaemonMessage(sp.DATA, "b1", "#ub1#b1", sp.AGREED_MESS, ["h"], data=b"forged 1"))),
            sp.SiteRecord(sp.SITE_MSG, 1, 2 ** 40, 2 ** 40, sp.SAFE_MESS, "b1", sp.SITE_SKIP_BODY),
            sp.SiteRecord(sp.SITE_FRONTIER, rng.choice([0, 1]), rng.choice([2 ** 40, sp.MAX_WIRE_COUNTER])),
            sp.SiteRecord(sp.SITE_ARU, 1, sp.MAX_WIRE_COUNTER, rng.choice([0, 1, 2 ** 40])),
            sp.SiteRecord(rng.choice([sp.SITE_PROPOSE, sp.SITE_READY, sp.SITE_GIVEUP, sp.SITE_MERGE]), 1,
                          rng.choice([0, 2 ** 40]), rng.choice([1, 2, 2 ** 40]),
                          body=sp.encode_site_view_body(rng.choice([(), (0,), (1,)]), {0: (1, 1, 1), 1: (9, 9, 9)})),
            sp.SiteRecord(sp.SITE_LINKS, 1, 0, rng.choice([1, 2 ** 40]), body=sp.encode_site_view_body((0,), {})),
        ]
        forged += self.epoch_records()
        out = b"".join(sp.encode_site_record(r) for r in rng.sample(forged, rng.randrange(1, 4)))
        if rng.random() < 0.1:
            out = sp.encode_varint(sp.MAX_SITE_RECORD_BYTES + 1) + out
        elif rng.random() < 0.1:
            out = self.mangled_epoch_record() + out
        return out

    def ring_sniffed(self, c):
        """A datagram of site 0's ring (the student sniffs its LAN too): the ring, the sender
        and where its packets and messages are now."""
        if c[4] in self.mine:
            return
        try:
            p = sp.decode_ring_packet(c[4], self.read_seal)
        except sp.RingPeerError:
            return
        if isinstance(p, sp.RingData) and p.chunks:
            old = self.ring_live.get(c[:2])
            seq = max(p.link_seq, old[2]) if old and old[:2] == (p.ring_id, p.sender) else p.link_seq
            self.ring_live[c[:2]] = (p.ring_id, p.sender, seq, p.chunks[-1], c)

    def epoch(self, site):
        """An epoch to forge for `site`: its own (as its HELLOs say), one next to it, or extremes
        (above EPOCH_MAX: only a forger's)."""
        real = self.epochs.get(site, 1)
        return self.rng.choice([real, real, real + 1, max(1, real - 1), 1, sp.EPOCH_MAX, sp.EPOCH_MAX + 1])

    def epoch_records(self):
        """Well-formed records of the epochs: EPOCH (first hand or heard), FRONTIER with an
        epoch, UNRELIABLE with its site's epoch."""
        rng = self.rng
        site = rng.choice([0, 1, 1, 7])
        body = sp.encode_message_body(sp.DaemonMessage(sp.DATA, "b1", "#ub1#b1", sp.UNRELIABLE_MESS, ["h"],
                                                       data=b"forged 2"))
        return [
            sp.SiteRecord(sp.SITE_EPOCH, site, rng.choice([0, 5, 2 ** 40]), self.epoch(site),
                          rng.choice([sp.EPOCH_FROM_HELLO, sp.EPOCH_AS_HEARD])),
            sp.SiteRecord(sp.SITE_FRONTIER, site, rng.choice([5, 2 ** 40]), rng.choice([0, 1, 2 ** 40]),
                          epoch=self.epoch(site)),
            sp.SiteRecord(sp.SITE_UNRELIABLE, site, rng.choice([5, 2 ** 40]), rng.choice([1, 2 ** 40]),
                          sp.UNRELIABLE_MESS, rng.choice(["a1", "b1"]), body, epoch=self.epoch(site)),
        ]

    def mangled_epoch_record(self):
        """An epoch record as no daemon writes it (each refused by the reader): an EPOCH with
        another flag or bytes after it, a FRONTIER or UNRELIABLE with epoch 0 written, an epoch
        beyond the varint's limit."""
        rng = self.rng
        head = lambda kind: bytes([kind]) + sp.encode_varint(rng.choice([0, 1])) + sp.encode_varint(5)
        epoch = sp.encode_varint(self.epoch(1))
        raw = rng.choice([
            head(sp.SITE_EPOCH) + epoch + sp.encode_varint(rng.choice([2, 7, 2 ** 20])),
            head(sp.SITE_EPOCH) + epoch + sp.encode_varint(sp.EPOCH_AS_HEARD) + b"\x00",
            head(sp.SITE_FRONTIER) + sp.encode_varint(3) + b"\x00",
            head(sp.SITE_FRONTIER) + sp.encode_varint(3) + epoch + epoch,
            head(sp.SITE_FRONTIER) + sp.encode_varint(3) + b"\xff" * 9,
            head(sp.SITE_UNRELIABLE) + sp.encode_varint(1)
            + sp.encode_varint(sp.UNRELIABLE_MESS | sp.SITE_SERVICE_EPOCH) + b"\x00\x02b1x",
        ])
        return sp.encode_varint(len(raw)) + raw

    def sites_ring_packet(self):
        """A ring DATA packet of site 0 holding a SITES message (what its representative brings
        into its ring from the other sites), forged under a sniffed sender and ring, its one
        group the epoch tag: site 0's own epoch, another, none, not a number, too long; its
        records forged (the epoch ones among them), well-formed or mangled. None if the ring
        was never sniffed."""
        if not self.ring_live:
            return None
        rng = self.rng
        (src, sport), (ring_id, sender, seq, chunk, c) = rng.choice(sorted(self.ring_live.items()))
        tag = rng.choice([[str(self.epoch(0))]] * 3 + [[], ["0"], ["x1"], [str(sp.EPOCH_MAX + 1)],
                                                         ["9" * 16], [str(self.epoch(0)), "h"]])
        data = self.records() if rng.random() < 0.7 else self.mangled_epoch_record() + self.records()
        body = sp.encode_message_body(sp.DaemonMessage(sp.SITES, sender[0], "", sp.AGREED_MESS, tag, data=data))
        near = lambda v: rng.choice([v + 1, v + rng.randrange(1, 4), 2 ** 40])
        forged = sp.RingData(ring_id, sender, near(seq), [
            sp.RingChunk(near(chunk.origin_counter), near(chunk.lts), near(chunk.site_seq), 0, 1,
                         sp.AGREED_MESS, body)])
        dst = [(ip, port) for (ip, port) in self.ring_live if (ip, port) != (src, sport)] or [(c[2], c[3])]
        dst_ip, dport = rng.choice(dst)
        return src, sport, dst_ip, dport, sp.encode_ring_packet(forged, self.seal())

    def in_session_packet(self):
        """In the session and around the seq a link has now (sniffed live)."""
        live = sorted(self.live.values(), key=lambda v: v[0][:4])
        (src, sport, dst, dport, raw), sender, session, seq = self.rng.choice(live)
        r = self.rng.random()
        seal = self.seal()
        if r < 0.4:
            payload = sp.encode_hop_data(sender, seq + self.rng.randrange(1, 4), self.records(), seal,
                                         session, self.rng.choice([0, seq, 2 ** 40]))
        elif r < 0.55:
            payload = sp.encode_hop_ack(sender, self.rng.choice([seq, seq + 10, 2 ** 40]),
                                        self.rng.choice([seq + 1, 2 ** 40]), seal, session,
                                        self.rng.choice([1, 1000, 2 ** 32 - 1]))
        elif r < 0.7:
            payload = sp.encode_hop_nack(sender, seq, sorted({self.rng.randrange(1, seq + 2) for _ in range(50)}),
                                         seal, session, self.rng.choice([1, 1000, 2 ** 32 - 1]))
        else:  # a captured one with bytes changed and, without a key, its CRC made good
            data = bytearray(raw[:-self.trailer()])
            for _ in range(self.rng.randrange(1, 4)):
                i = self.rng.randrange(sp.RING_HEADER_BYTES, len(data))
                data[i] = self.rng.randrange(256)
            payload = bytes(data) + (raw[-self.trailer():] if self.keyed
                                     else struct.pack(">I", zlib.crc32(bytes(data)) & 0xFFFFFFFF))
        return src, sport, dst, dport, payload


def refused_counts(log_text):
    """The last status table's "HOP refused" rows, strangers and its ring's tags refused, of one
    daemon's log."""
    counts = {}
    for reason, n in re.findall(r"HOP refused: (\w+)\W+(\d+)", log_text):
        counts[reason] = int(n)  # (a later table's count replaces an earlier one's)
    tags = re.findall(r"dropped: no / wrong / unexpected tag\W+(\d+) / (\d+) / (\d+)", log_text)
    for what, n in zip(("no", "wrong", "unexpected"), tags[-1] if tags else ()):
        if int(n):  # (the ring's own rows: the forged SITES messages went to site 0's ring)
            counts["ring_dropped_%s_tag" % what] = int(n)
    strangers = re.findall(r"HOP datagrams in / strangers\W+(\d+) / (\d+)", log_text)
    if strangers:
        counts["strangers (no daemon's address)"] = int(strangers[-1][1])
    return counts


def last_view(log_text):
    """The sites of the view in a daemon's last status table ("" if none)."""
    views = re.findall(r"view of the sites\W+\d+: sites ([\d, ]+)", log_text)
    return views[-1].strip().replace(" ", "") if views else ""


def check_clients(clients):
    """lost, duplicated, out of order (per sender), and whether every client has one order."""
    lost = dup = disorder = 0
    for c in clients:
        seen = collections.Counter(c.order)
        dup += sum(n - 1 for n in seen.values() if n > 1)
        for other in clients:
            mine = [n for s, n in c.order if s == other.name]
            lost += sum(1 for n in range(other.sent) if (other.name, n) not in seen)
            disorder += sum(1 for x, y in zip(mine, mine[1:]) if y <= x)
    orders = [[m for m in c.order] for c in clients]
    agreed = all(o == orders[0] for o in orders)
    return lost, dup, disorder, agreed


def run_mode(keyed, args, rng):
    tmpdir = tempfile.mkdtemp(prefix="sites_hostile_")
    extra = ["--status-every", "1"]
    read_seal = None
    if keyed:
        key_path = os.path.join(tmpdir, "ring.key")
        sp.write_key_file(key_path)
        extra += ["--key", key_path]
        read_seal = sp.RingSeal(sp.read_key_file(key_path))
    procs, ip, port = start(tmpdir, 1, LAYOUT, extra)
    clients, spoofer = [], None
    sniffing = [False]  # (the student keeps his sniffers running during the burst)
    try:
        # (the stamp is read from what is captured; the seal only needs the key to read fields)
        clients = [Client(port[n], ip[n], n) for n in ip]
        for c in clients:
            c.mbox.join("h")
        for c in clients:
            wait_members(c.mbox, len(clients), 30)
        threads = [threading.Thread(target=c.receive_loop, daemon=True) for c in clients]
        for t in threads:
            t.start()
        until = [time.monotonic() + 3600]
        senders = [threading.Thread(target=c.send_loop, args=(args.rate, until), daemon=True) for c in clients]
        for t in senders:
            t.start()
        hop_ports = {port[n] + sp.HOP_PORT_OFFSET for n in ip}
        # (site 0's ring too, from the start: a forged SITES message needs its ring's numbers)
        ring_seen, forger_box = [], [None]
        ring_sniffer = threading.Thread(target=capture, args=({port[LAYOUT[0][0]]}, 3600, sniffing, lambda c: (
            forger_box[0].ring_sniffed(c) if forger_box[0] else ring_seen.append(c))), daemon=True)
        ring_sniffer.start()
        captured = capture(hop_ports, args.capture_s)
        if not captured:
            raise SystemExit("captured no HOP datagrams on lo")
        if read_seal is not None:
            read_seal = sp.RingSeal(read_seal.key, (captured[0][4][7], captured[0][4][8:12], captured[0][4][12:16]))
        else:
            read_seal = sp.RingSeal(None, (captured[0][4][7], captured[0][4][8:12], captured[0][4][12:16]))
        forger = HopForger(rng, captured, read_seal, keyed, keyed or args.forge_in_session)
        for c in ring_seen:
            forger.ring_sniffed(c)
        forger_box[0] = forger
        sniffer = threading.Thread(target=capture, args=(hop_ports, 3600, sniffing, forger.sniffed), daemon=True)
        sniffer.start()
        reps = [LAYOUT[0][0], LAYOUT[1][0]]
        targets = [(ip[n], port[n] + sp.HOP_PORT_OFFSET) for n in reps]
        kinds = collections.Counter()
        spoofer = Spoofer()
        started = time.monotonic()
        menu = ["replayed", "mangled", "hello", "other_team", "stranger"]
        if forger.in_session and forger.links:
            menu += ["in_session", "in_session"]
        if forger.in_session:
            menu += ["sites_ring"]
        if not forger.hellos and not forger.links:
            menu.remove("hello")
        for i in range(args.count):
            what = rng.choice(menu)
            src, sport, dst, dport, raw = rng.choice(captured)
            if what == "mangled":
                raw = forger.mangled(raw)
            elif what == "other_team":
                raw = forger.other_team(raw)
            elif what == "stranger":
                src = STRANGER_IP
            elif what == "hello":
                src, sport, dst, dport, raw = forger.hello()
            elif what == "in_session":
                src, sport, dst, dport, raw = forger.in_session_packet()
            elif what == "sites_ring":
                packet = forger.sites_ring_packet()
                if packet is None:
                    continue  # (site 0's ring not sniffed yet)
                src, sport, dst, dport, raw = packet
            if what not in ("in_session", "sites_ring") and rng.random() < 0.8:
                to = targets[0] if rng.random() < 0.75 else targets[1]  # a1 mostly
                if (src, sport) == to:  # (from the other end of that link, not from itself)
                    src, sport = dst, dport
                dst, dport = to
            kinds[what] += 1
            forger.mine.add(raw)
            spoofer.send(src, sport, dst, dport, raw)
            delay = started + (i + 1) / args.hostile_rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        hostile_s = time.monotonic() - started
        sniffing[0] = True
        sniffer.join(2)
        ring_sniffer.join(2)
        until[0] = time.monotonic()  # the clients stop sending
        for t in senders:
            t.join(5)
        time.sleep(args.settle_s)  # what is left crosses
        for c in clients:
            c.stop = True
        for t in threads:
            t.join(2)
        lost, dup, disorder, agreed = check_clients(clients)
        time.sleep(1.5)  # (a status table after the settling)
        refused = collections.Counter()
        views, crashed = [], []
        dead = [name for name in ip if procs[name].poll() is not None]
        for name in ip:
            text = open(os.path.join(tmpdir, "r1_%s.log" % name)).read()
            refused.update(refused_counts(text))
            # (a daemon that died keeps its last status table: it does not count as in the view)
            views.append(last_view(text) if name not in dead else "")
            marks = [text.index(m) for m in ("Traceback", "internal error") if m in text]
            if marks:
                crashed.append(name)
                print("== %s's log, from its first error:\n%s" % (name, text[min(marks):][:3000]))
        whole = sum(1 for v in views if v == ",".join(str(i) for i in range(len(LAYOUT))))
        print("| %s | %d (%s) | %.1f | %d | %d / %d / %d / %d | %s | %d | %d of %d | %s |" % (
            "yes" if keyed else "no", sum(kinds.values()), ", ".join("%s %d" % kv for kv in sorted(kinds.items())),
            hostile_s, sum(c.sent for c in clients), lost, dup, disorder, sum(c.altered for c in clients),
            "yes" if agreed else "NO", sum(c.views for c in clients), whole, len(views),
            ", ".join("%s %d" % kv for kv in sorted(refused.items())) or "none"), flush=True)
        if dead or crashed:
            print("daemons exited: %s; tracebacks in the logs of: %s" % (dead or "none", crashed or "none"))
        return lost == dup == disorder == 0 and agreed and not any(c.altered for c in clients) \
            and whole == len(views) and not dead and not crashed
    finally:
        sniffing[0] = True
        if spoofer is not None:
            spoofer.close()
        for c in clients:
            c.stop = True
            for mbox in (c.mbox, c.out):
                try:
                    mbox.disconnect()
                except sp.SpreadError:
                    pass
        stop(procs)
        shutil.rmtree(tmpdir, ignore_errors=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description="Hostile datagrams at the HOP ports of two real "
                                                 "sites on loopback while they exchange AGREED traffic.")
    parser.add_argument("--count", type=int, default=5000, help="hostile datagrams (default 5000)")
    parser.add_argument("--modes", default="key,nokey", help="key,nokey (default both)")
    parser.add_argument("--rate", type=float, default=30.0, help="client messages/s each (default 30)")
    parser.add_argument("--hostile-rate", type=float, default=1000.0,
                        help="hostile datagrams per second (default 1000)")
    parser.add_argument("--capture-s", type=float, default=3.0, help="seconds of capture (default 3)")
    parser.add_argument("--settle-s", type=float, default=6.0, help="seconds after (default 6)")
    parser.add_argument("--forge-in-session", action="store_true",
                        help="without a key too: forged DATA / ACK / NACK in a link's sniffed session")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        parser.error("capturing on lo and spoofing sources need raw sockets: run as root")
    modes = args.modes.split(",")
    if any(m not in ("key", "nokey") for m in modes) or args.count < 1:
        parser.error("--modes key,nokey; --count at least 1")
    print(machine_line())
    print("| key | hostile datagrams | s | client messages | lost / duplicated / out of order / "
          "altered at clients | one agreed order | membership changes at clients | "
          "daemons in the view of both sites at the end | refused by the daemons (status tables) |")
    print("|---|---|---|---|---|---|---|---|---|", flush=True)
    rng = random.Random(args.seed)
    ok = all([run_mode(mode == "key", args, rng) for mode in modes])
    print("rerun: python3 bench/sites_hostile.py --count %d --modes %s --seed %d%s" % (
        args.count, args.modes, args.seed, " --forge-in-session" if args.forge_in_session else ""))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
