from __future__ import annotations

"""spread_ring.py: the RING protocol of Spread inside one site, with membership and EVS.

This is the transport level of spread_mini (thesis section 7.3.2.2 "Protocolo RING" and 7.3.3
"Entrega de Mensagens, Ordenação e Estabilidade"), written as a sans-I/O `RingOrderer` with the
Orderer interface of SPREAD-DESIGN.md:

    orderer = RingOrderer("d1", incarnation=1, peers=["d1", "d2", "d3"], rng=random.Random(7))
    orderer.submit(DaemonMessage(...))        # from this daemon's client sessions
    orderer.receive(datagram, src, now)       # a daemon-daemon datagram
    orderer.tick(now)                         # time passes
    for out in orderer.poll(): ...            # Send / Deliver / ConfigurationChange

It descends from the Totem single-ring protocol (Amir, Moser, Melliar-Smith, Agarwal, Ciarfella,
ACM TOCS 1995) that the thesis names as the origin of the RING: a token circulates on a logical
ring of the daemons that are up; only the token holder sends; the token carries the sequence
numbers that give every packet its place in one total order, the all-received-up-to value that
tells when everybody has a packet, and the retransmission requests. The membership algorithm
(states OPERATIONAL, GATHER, COMMIT, RECOVERY; join messages; a commit token; recovery of the
messages of the old ring) gives extended virtual synchrony (Moser, Amir, Melliar-Smith, Agarwal,
1994): a TRANSITIONAL configuration, then a REGULAR one.

Until the integration into spread_mini.py this file stands alone; its sections follow the
project's banners. The deterministic simulator and the guarantee checkers are in tests/ring_sim.py.
"""

import argparse
import collections
import random
import struct
import sys
import zlib

try:
    import rich
    from rich.table import Table
except ImportError:  # plain text still works
    rich = None
    Table = None

# =====================================================================================
# Constants
# =====================================================================================

#: Service types (the real Spread values, PROTOCOL.md section 5).
UNRELIABLE_MESS = 0x00000001
RELIABLE_MESS = 0x00000002
FIFO_MESS = 0x00000004
CAUSAL_MESS = 0x00000008
AGREED_MESS = 0x00000010
SAFE_MESS = 0x00000020
SELF_DISCARD = 0x00000040

#: Kinds of daemon messages (group operations travel in agreed order like data).
KIND_DATA, KIND_JOIN, KIND_LEAVE, KIND_KILL = 0, 1, 2, 3

#: Membership states (Totem's names; one enter function each in RingOrderer).
OPERATIONAL = "OPERATIONAL"
GATHER = "GATHER"
COMMIT = "COMMIT"
RECOVERY = "RECOVERY"

#: The legal state changes (anything else is a bug in this file, not a network event).
TRANSITIONS = {
    None: {GATHER},
    GATHER: {COMMIT},  # consensus reached: commit token created or accepted
    COMMIT: {RECOVERY, GATHER},  # commit token came round / commit token lost
    RECOVERY: {OPERATIONAL, GATHER},  # old messages recovered / token lost
    OPERATIONAL: {GATHER},  # token lost, join from a newcomer, another ring seen
}

#: Kinds of configuration change delivered to the layer above.
REGULAR = "REGULAR"
TRANSITIONAL = "TRANSITIONAL"

RING_MAGIC = b"SMRG"  # spread_mini ring: every daemon-daemon datagram starts with it
RING_VERSION = 1
PT_DATA, PT_TOKEN, PT_JOIN, PT_COMMIT, PT_MERGE = 1, 2, 3, 4, 5
PACKET_TYPE_NAMES = {PT_DATA: "data", PT_TOKEN: "token", PT_JOIN: "join",
                     PT_COMMIT: "commit", PT_MERGE: "merge"}
TOKEN_REGULAR = 1  # the thesis's token Type: "regular except during membership changes"

MAX_NAME_BYTES = 20  # MAX_PROC_NAME of Spread (daemon names)
MAX_SET_MEMBERS = 128  # members in a join / commit token / ring: a limit on everything
MAX_CHUNKS_PER_PACKET = 1024
MAX_MESSAGE_BODY_BYTES = 144000 + 100 * 33 + 64  # data + group names + our small header
MAX_GROUPS = 100
#: room kept free in every data packet so that it still fits max_packet_bytes when a daemon
#: wraps it for recovery (outer header with the longest names, length and checksum: 89 bytes)
RECOVERY_WRAP_BYTES = 96
#: a token without its rtr list, with the longest names (the rtr list fills the rest of a packet)
TOKEN_FIXED_BYTES = 170


class RingSettings:
    """Tunable values. The defaults install a new configuration well within 2 s of a crash:
    token loss is noticed after token_timeout_s (0.6 s), then the survivors wait at most
    consensus_timeout_s (0.5 s) for the dead daemon's join before they leave it out; the commit
    token and the recovery take a few token rotations (milliseconds on a LAN)."""

    def __init__(self, **overrides):
        #: no token for this long while OPERATIONAL/RECOVERY: the ring is broken (Totem "token loss")
        self.token_timeout_s = 0.6
        #: the holder that passed the token sends it again after this long without a sign of life
        self.token_retransmit_s = 0.08
        #: at most this many token retransmissions per pass (token_timeout_s catches the rest)
        self.token_retransmits_max = 6
        #: an idle ring (nothing sent, nothing missing) is held this long by the representative,
        #: so an idle ring does not burn the CPU; a submit() releases it at once
        self.token_hold_s = 0.02
        #: GATHER: a join message is sent to every configured daemon this often
        self.join_interval_s = 0.05
        #: GATHER: daemons whose join does not agree with ours within this time are left out
        self.consensus_timeout_s = 0.5
        #: OPERATIONAL: the representative announces the ring to the daemons outside it this often
        #: (Totem's merge detection), so that partitions heal
        self.merge_detect_s = 0.5
        #: largest daemon-daemon datagram (fits a 1500-byte Ethernet MTU with IP and UDP headers)
        self.max_packet_bytes = 1400
        #: flow control: packets (new and retransmitted) in the whole ring per token rotation
        self.global_window_packets = 300
        #: flow control: packets one daemon may send per token visit
        self.personal_window_packets = 60
        #: longest retransmission request list on the token (keeps the token within one packet)
        self.max_rtr_entries = 100
        #: submitted messages waiting for the token; beyond this submit() refuses
        self.max_pending_messages = 20000
        #: lines kept in the protocol log
        self.max_log_lines = 2000
        for key, value in overrides.items():
            if not hasattr(self, key):
                raise TypeError("unknown ring setting %r" % key)
            setattr(self, key, value)


# =====================================================================================
# Wire format
# =====================================================================================
#
# Every datagram: magic "SMRG" (4 bytes), version (u8), packet type (u8), then the body, then a
# CRC-32 of everything before it (u32), so that a mangled or foreign datagram is recognised and
# dropped rather than delivered with wrong contents.
# All integers are big-endian. A daemon id ("pid") is the daemon's name (u8 length + UTF-8,
# at most 20 bytes) and its incarnation (u64; a restarted daemon gets a new one, so its old
# packets can never be taken for new ones). A ring id is (u64 ring seq, representative pid).
#
#   DATA   ring_id, sender, link_seq u64, flags u8, then either chunks (u16 count, each:
#          origin_counter u64, lts u64, site_seq u64, frag_index u16, frag_count u16,
#          service u32, length u32, bytes) or, with flag RECOVERED, one old-ring DATA packet
#          (u32 length + its encoding) that a daemon retransmits for the members of its old ring.
#   TOKEN  ring_id, sender, token_id u64, type u8, link_seq u64, link_aru u64, flow_control u32,
#          rtr (u16 count + u64 each), site_seq u64, site_lts u64, site_aru u64,
#          site_aru_modifier (u8 present + pid), retrans_flg u8
#   JOIN   sender, ring_seq u64, proc_set (u16 + pids), fail_set (u16 + pids)
#   COMMIT ring_id, sender, token_id u64, rotation u8, members (u16 + pids),
#          entries (u16 count, each: pid, old ring_id, old_aru u64, old_high u64,
#          old_safe_lts u64, site_lts u64)
#   MERGE  sender, ring_id   (the representative's "a ring is here")

FLAG_RECOVERED = 0x01


class WireError(ValueError):
    """A datagram that is not a well-formed ring packet of our version (dropped and counted)."""


class _Reader:
    """Strict reader: running past the end or leaving bytes behind is a WireError."""

    def __init__(self, data):
        self.data = data
        self.pos = 0

    def take(self, n):
        if n < 0 or self.pos + n > len(self.data):
            raise WireError("truncated packet")
        piece = self.data[self.pos:self.pos + n]
        self.pos += n
        return piece

    def unpack(self, fmt):
        s = struct.Struct(fmt)
        return s.unpack(self.take(s.size))

    def u8(self):
        return self.unpack(">B")[0]

    def u16(self):
        return self.unpack(">H")[0]

    def u32(self):
        return self.unpack(">I")[0]

    def u64(self):
        return self.unpack(">Q")[0]

    def pid(self):
        n = self.u8()
        if n == 0 or n > MAX_NAME_BYTES:
            raise WireError("bad daemon name length %d" % n)
        try:
            name = self.take(n).decode("utf-8")
        except UnicodeDecodeError:
            raise WireError("daemon name is not UTF-8")
        return (name, self.u64())

    def ring_id(self):
        seq = self.u64()
        rep = self.pid()
        return (seq, rep[0], rep[1])

    def pid_list(self):
        n = self.u16()
        if n > MAX_SET_MEMBERS:
            raise WireError("too many members (%d)" % n)
        return [self.pid() for _ in range(n)]

    def end(self):
        if self.pos != len(self.data):
            raise WireError("%d unexpected bytes after the packet" % (len(self.data) - self.pos))


def _pid_bytes(pid):
    raw = pid[0].encode("utf-8")
    return struct.pack(">B", len(raw)) + raw + struct.pack(">Q", pid[1])


def _ring_id_bytes(ring_id):
    return struct.pack(">Q", ring_id[0]) + _pid_bytes((ring_id[1], ring_id[2]))


def _pid_list_bytes(pids):
    return struct.pack(">H", len(pids)) + b"".join(_pid_bytes(p) for p in pids)


def _header(ptype):
    return RING_MAGIC + struct.pack(">BB", RING_VERSION, ptype)


def _seal(raw):
    return raw + struct.pack(">I", zlib.crc32(raw) & 0xFFFFFFFF)


_CHUNK = struct.Struct(">QQQHHII")
CHUNK_HEADER_BYTES = _CHUNK.size


class Chunk:
    """A piece of one message inside a data packet (small messages are packed several to a
    packet; a big one is fragmented over several packets)."""
    __slots__ = ("origin_counter", "lts", "site_seq", "frag_index", "frag_count", "service", "body")

    def __init__(self, origin_counter, lts, site_seq, frag_index, frag_count, service, body):
        self.origin_counter = origin_counter
        self.lts = lts
        self.site_seq = site_seq
        self.frag_index = frag_index
        self.frag_count = frag_count
        self.service = service
        self.body = body


class DataPacket:
    __slots__ = ("ring_id", "sender", "link_seq", "chunks", "inner", "_raw")

    def __init__(self, ring_id, sender, link_seq, chunks=(), inner=None):
        self.ring_id = ring_id
        self.sender = sender
        self.link_seq = link_seq
        self.chunks = list(chunks)
        self.inner = inner  # an old-ring DataPacket retransmitted in RECOVERY, or None
        self._raw = None


class Token:
    """The ring token. Thesis field -> Totem field:
    link_seq = seq (highest packet sequence sent on the ring), link_aru = aru,
    site_aru_modifier = aru_id (who last lowered the aru), flow_control = fcc,
    rtr = rtr list, retrans_flg = retrans_flg (recovery still has old messages to resend).
    site_seq, site_lts and site_aru are the message-level counterparts the thesis adds
    (message count, Lamport time stamp, all-received-up-to in LTS units)."""
    __slots__ = ("ring_id", "sender", "token_id", "type", "link_seq", "link_aru", "flow_control",
                 "rtr", "site_seq", "site_lts", "site_aru", "site_aru_modifier", "retrans_flg")

    def __init__(self, ring_id, sender, token_id=0, type=TOKEN_REGULAR, link_seq=0, link_aru=0,
                 flow_control=0, rtr=(), site_seq=0, site_lts=0, site_aru=0,
                 site_aru_modifier=None, retrans_flg=0):
        self.ring_id = ring_id
        self.sender = sender
        self.token_id = token_id
        self.type = type
        self.link_seq = link_seq
        self.link_aru = link_aru
        self.flow_control = flow_control
        self.rtr = list(rtr)
        self.site_seq = site_seq
        self.site_lts = site_lts
        self.site_aru = site_aru
        self.site_aru_modifier = site_aru_modifier
        self.retrans_flg = retrans_flg


class Join:
    __slots__ = ("sender", "ring_seq", "proc_set", "fail_set")

    def __init__(self, sender, ring_seq, proc_set, fail_set):
        self.sender = sender
        self.ring_seq = ring_seq
        self.proc_set = sorted(proc_set)
        self.fail_set = sorted(fail_set)


class CommitEntry:
    """What one member tells the others, on the commit token, about its old ring."""
    __slots__ = ("old_ring_id", "old_aru", "old_high", "old_safe_lts", "site_lts")

    def __init__(self, old_ring_id, old_aru, old_high, old_safe_lts, site_lts):
        self.old_ring_id = old_ring_id
        self.old_aru = old_aru
        self.old_high = old_high
        self.old_safe_lts = old_safe_lts
        self.site_lts = site_lts


class CommitToken:
    __slots__ = ("ring_id", "sender", "token_id", "rotation", "members", "entries")

    def __init__(self, ring_id, sender, token_id, rotation, members, entries):
        self.ring_id = ring_id
        self.sender = sender
        self.token_id = token_id
        self.rotation = rotation
        self.members = list(members)
        self.entries = dict(entries)


class Merge:
    __slots__ = ("sender", "ring_id")

    def __init__(self, sender, ring_id):
        self.sender = sender
        self.ring_id = ring_id


def encode_data(p):
    if p._raw is not None:
        return p._raw
    parts = [_header(PT_DATA), _ring_id_bytes(p.ring_id), _pid_bytes(p.sender),
             struct.pack(">Q", p.link_seq)]
    if p.inner is not None:
        inner = encode_data(p.inner)
        parts.append(struct.pack(">BI", FLAG_RECOVERED, len(inner)))
        parts.append(inner)
    else:
        parts.append(struct.pack(">BH", 0, len(p.chunks)))
        for c in p.chunks:
            parts.append(_CHUNK.pack(c.origin_counter, c.lts, c.site_seq, c.frag_index,
                                     c.frag_count, c.service, len(c.body)))
            parts.append(c.body)
    p._raw = _seal(b"".join(parts))
    return p._raw


def encode_token(t):
    mod = b"\x00" if t.site_aru_modifier is None else b"\x01" + _pid_bytes(t.site_aru_modifier)
    return _seal(b"".join([
        _header(PT_TOKEN), _ring_id_bytes(t.ring_id), _pid_bytes(t.sender),
        struct.pack(">QBQQI", t.token_id, t.type, t.link_seq, t.link_aru, t.flow_control),
        struct.pack(">H", len(t.rtr)), b"".join(struct.pack(">Q", s) for s in t.rtr),
        struct.pack(">QQQ", t.site_seq, t.site_lts, t.site_aru), mod,
        struct.pack(">B", t.retrans_flg)]))


def encode_join(j):
    return _seal(b"".join([_header(PT_JOIN), _pid_bytes(j.sender), struct.pack(">Q", j.ring_seq),
                           _pid_list_bytes(j.proc_set), _pid_list_bytes(j.fail_set)]))


def encode_commit(c):
    parts = [_header(PT_COMMIT), _ring_id_bytes(c.ring_id), _pid_bytes(c.sender),
             struct.pack(">QB", c.token_id, c.rotation), _pid_list_bytes(c.members),
             struct.pack(">H", len(c.entries))]
    for pid in sorted(c.entries):
        e = c.entries[pid]
        parts += [_pid_bytes(pid), _ring_id_bytes(e.old_ring_id),
                  struct.pack(">QQQQ", e.old_aru, e.old_high, e.old_safe_lts, e.site_lts)]
    return _seal(b"".join(parts))


def encode_merge(m):
    return _seal(_header(PT_MERGE) + _pid_bytes(m.sender) + _ring_id_bytes(m.ring_id))


def _decode_data_body(r):
    ring_id = r.ring_id()
    sender = r.pid()
    link_seq = r.u64()
    flags = r.u8()
    if flags == FLAG_RECOVERED:
        inner = decode_packet(r.take(r.u32()))
        if not isinstance(inner, DataPacket) or inner.inner is not None:
            raise WireError("a recovered packet must hold one plain data packet")
        return DataPacket(ring_id, sender, link_seq, inner=inner)
    if flags != 0:
        raise WireError("unknown data flags 0x%x" % flags)
    n = r.u16()
    if n > MAX_CHUNKS_PER_PACKET:
        raise WireError("too many chunks (%d)" % n)
    chunks = []
    for _ in range(n):
        counter, lts, site_seq, index, count, service, length = r.unpack(_CHUNK.format)
        if count == 0 or index >= count:
            raise WireError("bad fragment %d of %d" % (index, count))
        chunks.append(Chunk(counter, lts, site_seq, index, count, service, r.take(length)))
    return DataPacket(ring_id, sender, link_seq, chunks)


def _decode_token_body(r):
    ring_id = r.ring_id()
    sender = r.pid()
    token_id, ttype, link_seq, link_aru, fcc = r.unpack(">QBQQI")
    n = r.u16()
    if n > 10000:
        raise WireError("rtr list too long")
    rtr = [r.u64() for _ in range(n)]
    site_seq, site_lts, site_aru = r.unpack(">QQQ")
    present = r.u8()
    if present not in (0, 1):
        raise WireError("bad site_aru_modifier flag")
    modifier = r.pid() if present else None
    retrans_flg = r.u8()
    if ttype != TOKEN_REGULAR or retrans_flg not in (0, 1) or link_aru > link_seq:
        raise WireError("inconsistent token")
    return Token(ring_id, sender, token_id, ttype, link_seq, link_aru, fcc, rtr,
                 site_seq, site_lts, site_aru, modifier, retrans_flg)


def _decode_join_body(r):
    sender = r.pid()
    ring_seq = r.u64()
    return Join(sender, ring_seq, r.pid_list(), r.pid_list())


def _decode_commit_body(r):
    ring_id = r.ring_id()
    sender = r.pid()
    token_id, rotation = r.unpack(">QB")
    if rotation not in (1, 2):
        raise WireError("bad commit rotation %d" % rotation)
    members = r.pid_list()
    n = r.u16()
    if n > len(members):
        raise WireError("more commit entries than members")
    entries = {}
    for _ in range(n):
        pid = r.pid()
        old_ring = r.ring_id()
        entries[pid] = CommitEntry(old_ring, *r.unpack(">QQQQ"))
    if not members or any(p not in members for p in entries):
        raise WireError("commit entries for non-members")
    return CommitToken(ring_id, sender, token_id, rotation, members, entries)


def _decode_merge_body(r):
    sender = r.pid()
    return Merge(sender, r.ring_id())


_DECODERS = {PT_DATA: _decode_data_body, PT_TOKEN: _decode_token_body,
             PT_JOIN: _decode_join_body, PT_COMMIT: _decode_commit_body,
             PT_MERGE: _decode_merge_body}


def decode_packet(data):
    """bytes -> DataPacket / Token / Join / CommitToken / Merge, or WireError."""
    if len(data) < 10 or data[:4] != RING_MAGIC:
        raise WireError("not a spread_mini ring packet (no magic)")
    version, ptype = data[4], data[5]
    if version != RING_VERSION:
        raise WireError("ring protocol version %d, we speak %d" % (version, RING_VERSION))
    decoder = _DECODERS.get(ptype)
    if decoder is None:
        raise WireError("unknown packet type %d" % ptype)
    body, crc = data[:-4], struct.unpack(">I", data[-4:])[0]
    if zlib.crc32(body) & 0xFFFFFFFF != crc:
        raise WireError("checksum mismatch (a mangled packet)")
    r = _Reader(body)
    r.pos = 6
    packet = decoder(r)
    r.end()
    if isinstance(packet, DataPacket) and packet.inner is None:
        packet._raw = bytes(data)
    return packet


def encode_packet(p):
    if isinstance(p, DataPacket):
        return encode_data(p)
    if isinstance(p, Token):
        return encode_token(p)
    if isinstance(p, Join):
        return encode_join(p)
    if isinstance(p, CommitToken):
        return encode_commit(p)
    return encode_merge(p)


# --- daemon messages (what the ring carries for the layer above) ---------------------

class DaemonMessage:
    """A message between daemons (SPREAD-DESIGN.md layer 3). The orderer fills in the ordering
    fields: origin/origin_incarnation (the daemon that sent it), lts, site_seq, msg_id."""
    __slots__ = ("origin", "sender", "service_type", "groups", "hint", "data", "kind",
                 "origin_incarnation", "origin_counter", "lts", "site_seq", "ring_id")

    def __init__(self, sender="", service_type=AGREED_MESS, groups=(), hint=0, data=b"",
                 kind=KIND_DATA, origin=""):
        self.origin = origin
        self.sender = sender
        self.service_type = service_type
        self.groups = list(groups)
        self.hint = hint
        self.data = bytes(data)
        self.kind = kind
        self.origin_incarnation = 0
        self.origin_counter = 0
        self.lts = 0
        self.site_seq = 0
        self.ring_id = None

    @property
    def msg_id(self):
        """Unique in the whole system: (origin name, origin incarnation, origin's counter)."""
        return (self.origin, self.origin_incarnation, self.origin_counter)

    def __repr__(self):
        return "DaemonMessage(%s#%d:%d svc=0x%x lts=%d %d bytes)" % (
            self.origin, self.origin_incarnation, self.origin_counter, self.service_type,
            self.lts, len(self.data))


_MSG_HEAD = struct.Struct(">BIiH")  # kind, service, hint (raw int32), groups count


def encode_message_body(m):
    parts = [_MSG_HEAD.pack(m.kind, m.service_type, m.hint, len(m.groups))]
    for name in [m.sender] + list(m.groups):
        raw = name.encode("utf-8")
        parts.append(struct.pack(">B", len(raw)) + raw)
    parts.append(m.data)
    return b"".join(parts)


def decode_message_body(body):
    r = _Reader(body)
    kind, service, hint, ngroups = r.unpack(_MSG_HEAD.format)
    if ngroups > MAX_GROUPS or kind > KIND_KILL:
        raise WireError("bad message header")
    names = []
    for _ in range(ngroups + 1):
        names.append(r.take(r.u8()).decode("utf-8", "replace"))
    data = body[r.pos:]
    return DaemonMessage(names[0], service, names[1:], hint, data, kind)


# =====================================================================================
# Protocol core
# =====================================================================================

class Send:
    """A datagram for another daemon (dest is its configured name)."""
    __slots__ = ("packet", "dest")

    def __init__(self, packet, dest):
        self.packet = packet
        self.dest = dest

    def __repr__(self):
        return "Send(%s -> %s)" % (PACKET_TYPE_NAMES.get(self.packet[5], "?"), self.dest)


class Deliver:
    __slots__ = ("msg",)

    def __init__(self, msg):
        self.msg = msg

    def __repr__(self):
        return "Deliver(%r)" % (self.msg,)


class ConfigurationChange:
    """kind REGULAR or TRANSITIONAL. members: daemon names in ring order; member_ids: the same
    with incarnations; transitional_members: the members that came with us from our previous
    regular configuration (for TRANSITIONAL, the same as members). ring_id: the regular
    configuration's ring id (for TRANSITIONAL, the one it leads to); old_ring_id: the previous
    regular configuration (None at start); reason: why the membership changed."""
    __slots__ = ("kind", "members", "transitional_members", "ring_id", "member_ids",
                 "transitional_ids", "old_ring_id", "reason")

    def __init__(self, kind, member_ids, transitional_ids, ring_id, old_ring_id, reason):
        self.kind = kind
        self.member_ids = list(member_ids)
        self.members = [p[0] for p in member_ids]
        self.transitional_ids = list(transitional_ids)
        self.transitional_members = [p[0] for p in transitional_ids]
        self.ring_id = ring_id
        self.old_ring_id = old_ring_id
        self.reason = reason

    def __repr__(self):
        return "ConfigurationChange(%s %s ring=%s trans=%s)" % (
            self.kind, self.members, self.ring_id, self.transitional_members)


class _Message:
    """A message being assembled and ordered in one ring. Its place in the total order is the
    link_seq of its first fragment (the lts follows the same order: both grow with the token)."""
    __slots__ = ("key", "origin", "counter", "lts", "site_seq", "service", "frag_count", "frags",
                 "complete", "gap")

    def __init__(self, key, origin, chunk):
        self.key = key
        self.origin = origin
        self.counter = chunk.origin_counter
        self.lts = chunk.lts
        self.site_seq = chunk.site_seq
        self.service = chunk.service
        self.frag_count = chunk.frag_count
        self.frags = {}
        self.complete = False
        self.gap = False


class _GapMarker:
    """Stands in the order for a packet nobody in the transitional configuration has."""
    __slots__ = ("key",)
    complete = False
    gap = True

    def __init__(self, key):
        self.key = key


class _Ring:
    """Link-level state of one ring (the current one, or in RECOVERY the new one beside the old)."""

    def __init__(self, ring_id, members, start_lts):
        self.ring_id = ring_id
        self.members = list(members)
        self.start_lts = start_lts
        self.packets = {}  # link_seq -> DataPacket (kept until stable everywhere)
        self.my_aru = 0  # all packets up to here received (Totem my_aru)
        self.high_seq = 0  # highest link_seq seen
        self.fed_upto = 0  # packets given to message assembly, in order
        self.ordered = collections.deque()  # undelivered _Message / _GapMarker in total order
        self.partial = {}  # (origin, counter) -> _Message still missing fragments
        self.delivered_lts = start_lts
        self.safe_lts = start_lts  # messages with lts <= this are held by every member
        self.safe_link = 0
        self.prev_link_aru = 0  # token values after our update, at our previous visit
        self.prev_site_aru = start_lts
        self.last_token_id = -1
        self.my_last_sent = 0  # our contribution to flow_control on the last visit
        self.gc_upto = 0

    def store(self, packet):
        """Keep a packet; True if it is new."""
        seq = packet.link_seq
        if seq <= self.gc_upto or seq in self.packets:
            return False
        self.packets[seq] = packet
        if seq > self.high_seq:
            self.high_seq = seq
        while (self.my_aru + 1) in self.packets:
            self.my_aru += 1
        return True

    def missing(self, upto, limit):
        out = []
        seq = self.my_aru + 1
        while seq <= upto and len(out) < limit:
            if seq not in self.packets:
                out.append(seq)
            seq += 1
        return out

    def local_site_aru(self):
        """f(my_aru): the lts up to which every message is complete in packets <= my_aru. The
        same function at every member (it depends only on the packets), so the member that sets
        the token's link_aru can set site_aru with it."""
        lts = self.delivered_lts
        for m in self.ordered:
            if not m.complete:
                break
            lts = m.lts
        return lts


class RingOrderer:
    """One daemon's RING protocol engine (sans-I/O). See the module docstring."""

    def __init__(self, name, incarnation, peers, rng=None, settings=None, now=0.0):
        if not name or len(name.encode("utf-8")) > MAX_NAME_BYTES:
            raise ValueError("daemon name must be 1..%d bytes" % MAX_NAME_BYTES)
        self.me = (name, int(incarnation))
        self.peers = [p for p in peers if p != name]
        self.rng = rng or random.Random(0)
        self.cfg = settings or RingSettings()
        self.now = now
        self.outputs = []
        self.log = collections.deque(maxlen=self.cfg.max_log_lines)
        self.counters = collections.Counter()
        self.state = None
        self.state_since = now
        self.known_incarnation = {name: self.me[1]}
        self.ring_seq = 0  # highest ring seq this daemon has committed to
        self.max_lts_seen = 0
        self.origin_counter = 0
        self.pending = collections.deque()  # (DaemonMessage, body) waiting for the token
        self.in_progress = None  # [msg, body, counter, lts, site_seq, next_frag, frag_count]
        # the "old ring" of a fresh daemon: just itself, no messages
        self.ring = _Ring((0, name, self.me[1]), [self.me], 0)
        self.had_regular = False
        self.new_ring = None
        self.recovery = None
        self.token_deadline = None
        self.held_token = None
        self.hold_until = None
        self.last_sent_token = None  # (bytes, dest, retransmit_at, retransmits_left, link_seq)
        self.proc_set = set()
        self.fail_set = set()
        self.joins = {}
        self.consensus_deadline = None
        self.next_join_at = None
        self.commit = None
        self.commit_token_id = -1
        self.next_merge_detect = None
        self.change_reason = "startup"
        self.trace_completed = None  # tests set a list: msg ids as they are complete here
        self.rotations = 0
        self.startup_alone_after = now + self.cfg.consensus_timeout_s
        self._enter_gather("startup", extra=())

    # ---------------------------------------------------------------- public interface

    def submit(self, msg):
        """Queue a message from this daemon's sessions; False if the queue is full."""
        if len(self.pending) >= self.cfg.max_pending_messages:
            self.counters["submit_refused_queue_full"] += 1
            return False
        msg.origin = self.me[0]
        msg.origin_incarnation = self.me[1]
        body = encode_message_body(msg)
        if len(body) > MAX_MESSAGE_BODY_BYTES:
            raise ValueError("message too long (%d bytes)" % len(body))
        self.pending.append((msg, body))
        self.counters["submitted"] += 1
        if self.held_token is not None:
            self._release_held_token()
        return True

    def receive(self, packet, src, now):
        self.now = now
        try:
            p = decode_packet(packet)
        except WireError as e:
            self.counters["dropped_garbage"] += 1
            self._log("dropped a packet from %s: %s" % (src, e))
            return
        sender = p.sender
        if self._superseded(sender):
            self.counters["dropped_old_incarnation"] += 1
            return
        if isinstance(p, DataPacket):
            self._on_data(p)
        elif isinstance(p, Token):
            self._on_token(p)
        elif isinstance(p, Join):
            self._on_join(p)
        elif isinstance(p, CommitToken):
            self._on_commit(p)
        else:
            self._on_merge(p)

    def tick(self, now):
        self.now = now
        if self.held_token is not None and now >= self.hold_until:
            self._release_held_token()
        self._retransmit_token_if_due()
        if self.state in (OPERATIONAL, RECOVERY, COMMIT) and self.token_deadline is not None \
                and now >= self.token_deadline:
            what = "commit token" if self.state == COMMIT else "token"
            self.counters["token_loss"] += 1
            self._enter_gather("%s lost (nothing for %.2f s)" % (what, self.cfg.token_timeout_s))
        if self.state == GATHER:
            self._gather_timers()
        if self.state == OPERATIONAL and self.ring.members[0] == self.me \
                and now >= self.next_merge_detect:
            self._send_merge_detect()

    def poll(self):
        out, self.outputs = self.outputs, []
        return out

    def snapshot(self):
        """Plain data for the status table."""
        ring = self.ring
        return {
            "name": self.me[0], "incarnation": self.me[1], "state": self.state,
            "ring_id": ring.ring_id, "members": [p[0] for p in ring.members],
            "my_aru": ring.my_aru, "high_seq": ring.high_seq, "pending": len(self.pending),
            "rotations": self.rotations, "counters": dict(self.counters),
            "global_window_packets": self.cfg.global_window_packets,
            "personal_window_packets": self.cfg.personal_window_packets,
            "last_change_reason": self.change_reason,
        }

    # ---------------------------------------------------------------- helpers

    def _log(self, text):
        self.log.append("%.3f %s %s" % (self.now, self.me[0], text))

    def _send(self, raw, dest_pid):
        if dest_pid == self.me:
            return
        self.outputs.append(Send(raw, dest_pid[0]))

    def _multicast(self, raw, members):
        # unicast to each member: on loopback and small rings as good as IP multicast
        for pid in members:
            self._send(raw, pid)

    def _superseded(self, pid):
        known = self.known_incarnation.get(pid[0])
        return known is not None and pid[1] < known

    def _note_incarnation(self, pid):
        """A daemon with a newer incarnation restarted: its old incarnation is gone."""
        known = self.known_incarnation.get(pid[0])
        if known is None or pid[1] > known:
            self.known_incarnation[pid[0]] = pid[1]
            if known is not None:
                return (pid[0], known)
        return None

    def _set_state(self, state, reason):
        if state not in TRANSITIONS[self.state]:
            raise AssertionError("illegal state change %s -> %s (%s)" % (self.state, state, reason))
        if self.state != state:
            self.counters["enter_" + state.lower()] += 1
        self._log("%s -> %s: %s" % (self.state, state, reason))
        self.state = state
        self.state_since = self.now

    def _successor(self, members):
        i = members.index(self.me)
        return members[(i + 1) % len(members)]

    # ---------------------------------------------------------------- state: GATHER

    def _enter_gather(self, reason, extra=()):
        """Start (or restart) forming a ring: propose the members we know, wait for agreement."""
        self._set_state(GATHER, reason)
        self.change_reason = reason
        self.counters["membership_changes_started"] += 1
        self.proc_set = set(self.ring.members) | {self.me} | set(extra)
        self.proc_set = {p for p in self.proc_set if not self._superseded(p)}
        self.fail_set = set()
        self.joins = {}
        self.commit = None
        self.new_ring = None
        self.recovery = None
        self.held_token = None
        self.last_sent_token = None
        self.token_deadline = None
        self.consensus_deadline = self.now + self.cfg.consensus_timeout_s
        self._requeue_partial_message()
        self._send_join()
        self._check_consensus()

    def _requeue_partial_message(self):
        """A message cut by the ring change is incomplete in the old ring, so nobody delivers it
        there; it goes again, whole, in the next ring."""
        if self.in_progress is not None:
            msg, body = self.in_progress[0], self.in_progress[1]
            self.pending.appendleft((msg, body))
            self.in_progress = None
            self.counters["messages_resent_after_change"] += 1

    def _send_join(self):
        self.next_join_at = self.now + self.cfg.join_interval_s
        j = Join(self.me, self.ring_seq, self.proc_set, self.fail_set)
        raw = encode_join(j)
        for name in self.peers:  # every configured daemon: that is how newcomers find us
            self.outputs.append(Send(raw, name))
        self.counters["joins_sent"] += 1

    def _gather_timers(self):
        if self.now >= self.consensus_deadline:
            active = self.proc_set - self.fail_set
            mine = (frozenset(self.proc_set), frozenset(self.fail_set))
            silent = {p for p in active if p != self.me and self.joins.get(p, (None,))[:2] != mine}
            if silent:
                self.fail_set |= silent
                self.counters["consensus_timeouts"] += 1
                self._log("consensus timeout: leaving out %s" % _names(silent))
            self.joins = {}  # peers must show again that they are alive
            self.consensus_deadline = self.now + self.cfg.consensus_timeout_s
            self._send_join()
            self._check_consensus()
        elif self.now >= self.next_join_at:
            self._send_join()

    def _join_is_stale(self, j, ring):
        # a member of `ring` committed to it, so its ring_seq is at least ring's seq; a join with
        # a smaller ring_seq was sent before and arrives late
        return j.sender in ring.members and j.ring_seq < ring.ring_id[0]

    def _on_join(self, j):
        self.counters["joins_received"] += 1
        old = self._note_incarnation(j.sender)
        if self.state == OPERATIONAL:
            if self._join_is_stale(j, self.ring):
                self.counters["stale_joins"] += 1
                return
            if self.me in j.fail_set and j.sender not in self.ring.members:
                return  # it leaves us out; it will form its own ring and merge later
            self._enter_gather("join from %s" % j.sender[0], extra=(j.sender,))
        elif self.state in (COMMIT, RECOVERY):
            target = self.new_ring if self.state == RECOVERY else self.commit
            members = target.members
            if j.sender in members and j.ring_seq >= target.ring_id[0]:
                self._enter_gather("%s went back to gather" % j.sender[0], extra=(j.sender,))
            elif old is not None and (old in members):
                self._enter_gather("%s restarted" % j.sender[0], extra=(j.sender,))
            else:
                return
        if self.state != GATHER:
            return
        if old is not None:
            self.fail_set.add(old)
        if j.sender in self.fail_set or self._join_is_stale(j, self.ring):
            return
        self._merge_sets(j)
        self.joins[j.sender] = (frozenset(j.proc_set), frozenset(j.fail_set), j.ring_seq)
        self._check_consensus()

    def _merge_sets(self, j):
        before = (set(self.proc_set), set(self.fail_set))
        if self.me in j.fail_set:
            self.fail_set.add(j.sender)  # it cannot hear us: we cannot be in one ring
        else:
            self.proc_set |= {p for p in j.proc_set if not self._superseded(p)}
            self.proc_set.add(j.sender)
            self.fail_set |= set(j.fail_set)
        for p in list(self.proc_set):
            if self._superseded(p):
                self.fail_set.add(p)
        self.proc_set |= self.fail_set
        if (self.proc_set, self.fail_set) != before:
            self._send_join()

    def _check_consensus(self):
        active = self.proc_set - self.fail_set
        if active == {self.me} and self.ring.ring_id[0] == 0 and self.now < self.startup_alone_after:
            return  # just started: give the other daemons one consensus timeout to answer
        mine = (frozenset(self.proc_set), frozenset(self.fail_set))
        for p in active:
            if p != self.me and self.joins.get(p, (None, None))[:2] != mine:
                return
        if min(active) == self.me:
            self._create_commit_token(sorted(active))

    # ---------------------------------------------------------------- state: COMMIT

    def _my_commit_entry(self):
        ring = self.ring
        return CommitEntry(ring.ring_id, ring.my_aru, ring.high_seq, ring.safe_lts,
                           self.max_lts_seen)

    def _create_commit_token(self, members):
        seqs = [self.ring_seq] + [v[2] for p, v in self.joins.items() if p in members]
        ring_id = (max(seqs) + 1, self.me[0], self.me[1])
        c = CommitToken(ring_id, self.me, 0, 1, members, {})
        self.counters["commit_tokens_created"] += 1
        self._log("consensus on %s: new ring %s" % (_names(members), _ring_str(ring_id)))
        self._enter_commit(c)

    def _enter_commit(self, c):
        """First rotation: add what we know of our old ring; from now on the old ring's store
        only grows through recovery, so every member decides from the same packets."""
        self.ring_seq = max(self.ring_seq, c.ring_id[0])
        c.entries[self.me] = self._my_commit_entry()
        self.commit = c
        self._set_state(COMMIT, "commit token for %s" % _ring_str(c.ring_id))
        self.token_deadline = self.now + self.cfg.token_timeout_s
        if c.members == [self.me]:  # a ring of one: the token is already full
            c.rotation = 2
            self._enter_recovery(c)
            self._start_new_ring_token()
            return
        self._forward_commit(c)

    def _forward_commit(self, c):
        c.sender = self.me
        c.token_id += 1
        self.commit_token_id = c.token_id
        nxt = self._successor(c.members)
        self._pass(encode_commit(c), nxt, link_seq=None)

    def _on_commit(self, c):
        if self.me not in c.members:
            return
        if c.rotation == 1 and self.state == GATHER:
            active = sorted(self.proc_set - self.fail_set)
            if c.members == active and c.ring_id[0] > self.ring_seq and self.me not in c.entries:
                self.commit_token_id = c.token_id
                self._enter_commit(c)
            return
        if self.commit is None or c.ring_id != self.commit.ring_id or c.token_id <= self.commit_token_id:
            return  # a duplicate or another attempt's token
        self.commit_token_id = c.token_id
        self.last_sent_token = None
        self.token_deadline = self.now + self.cfg.token_timeout_s
        rep = c.members[0] == self.me
        if c.rotation == 1 and rep and self.state == COMMIT and len(c.entries) == len(c.members):
            c.rotation = 2
            self.commit = c
            self._enter_recovery(c)
            self._forward_commit(c)
        elif c.rotation == 2 and self.state == COMMIT and not rep:
            self.commit = c
            self._enter_recovery(c)
            self._forward_commit(c)
        elif c.rotation == 2 and self.state == RECOVERY and rep:
            self._start_new_ring_token()

    # ---------------------------------------------------------------- state: RECOVERY

    def _enter_recovery(self, c):
        """Everybody knows everybody's old-ring state: plan which old packets to resend."""
        start_lts = max([e.site_lts for e in c.entries.values()] + [self.max_lts_seen])
        self.new_ring = _Ring(c.ring_id, c.members, start_lts)
        old_id = self.ring.ring_id
        trans = [p for p in c.members if c.entries[p].old_ring_id == old_id]
        entries = [c.entries[p] for p in trans]
        low = min(e.old_aru for e in entries)
        high = max(e.old_high for e in entries)
        best_aru = max(e.old_aru for e in entries)
        resender = min(p for p in trans if c.entries[p].old_aru == best_aru)
        first = low + 1 if resender == self.me else best_aru + 1
        queue = collections.deque(s for s in range(first, high + 1) if s in self.ring.packets)
        self.recovery = {
            "trans": trans, "low": low, "high": high,
            "safe_lts": max(e.old_safe_lts for e in entries),
            "queue": queue, "flag_owner": False, "clean": 0, "recovery_high": None,
            "reason": self.change_reason, "members": c.members,
        }
        self.counters["recovery_packets_planned"] += len(queue)
        self._set_state(RECOVERY, "ring %s: %d old packets to resend, old ring %s had (%d, %d]"
                        % (_ring_str(c.ring_id), len(queue), _ring_str(old_id), low, high))
        self.token_deadline = self.now + self.cfg.token_timeout_s

    def _start_new_ring_token(self):
        """The representative turns the commit token into the first regular token."""
        ring = self.new_ring
        tok = Token(ring.ring_id, self.me, 0, TOKEN_REGULAR, 0, 0, 0, (), 0, ring.start_lts,
                    ring.start_lts, None, 0)
        self.commit = None
        self._handle_token(tok)

    def _recovery_flags(self, tok, had_work):
        """Totem's retrans_flg: set while somebody still has old packets to resend; after two
        rotations with it clear (and every recovered packet here) the new ring is installed."""
        rec = self.recovery
        # "had work" counts too: the packets sent on this visit must be before everybody's
        # first clean visit, or a daemon could install without them
        if had_work or rec["queue"]:
            if not tok.retrans_flg:
                tok.retrans_flg = 1
                rec["flag_owner"] = True
        elif tok.retrans_flg and rec["flag_owner"]:
            tok.retrans_flg = 0
            rec["flag_owner"] = False
        if tok.retrans_flg:
            rec["clean"] = 0
            rec["recovery_high"] = None
            return False
        rec["clean"] += 1
        if rec["recovery_high"] is None:
            rec["recovery_high"] = tok.link_seq  # every resent packet has a seq <= this
        return rec["clean"] >= 2 and self.new_ring.my_aru >= rec["recovery_high"]

    def _enter_operational(self):
        """Deliver what is left of the old ring (regular, then transitional), then the new ring."""
        rec = self.recovery
        old = self.ring
        self._feed(old, upto=rec["high"], allow_gaps=True)
        trans = rec["trans"]
        new_id = self.new_ring.ring_id
        emitted_trans = False
        after_gap = False
        while old.ordered:
            m = old.ordered.popleft()
            regular_ok = not after_gap and not emitted_trans and m.complete and not (
                m.service & SAFE_MESS and m.lts > rec["safe_lts"])
            if not regular_ok and not emitted_trans and self.had_regular:
                self._emit_transitional(trans, new_id, old.ring_id)
                emitted_trans = True
            if not m.complete:  # a gap: nobody here has it all
                after_gap = True
                self.counters["messages_lost_in_gaps"] += 0 if m.gap else 1
                continue
            if after_gap and m.origin not in trans:
                # it may depend on the missing message (its sender could have seen it)
                self.counters["discarded_after_gap"] += 1
                continue
            self._deliver(m, old)
        if not emitted_trans and self.had_regular:
            self._emit_transitional(trans, new_id, old.ring_id)
        self.ring = self.new_ring
        self.new_ring = None
        self.recovery = None
        self.had_regular = True
        self.counters["configurations_installed"] += 1
        self.outputs.append(ConfigurationChange(REGULAR, self.ring.members, trans, new_id,
                                                old.ring_id, rec["reason"]))
        self._set_state(OPERATIONAL, "installed ring %s %s (%s)" % (
            _ring_str(new_id), _names(self.ring.members), rec["reason"]))
        self.change_reason = rec["reason"]
        self.next_merge_detect = self.now + self.cfg.merge_detect_s
        self._feed(self.ring, upto=self.ring.my_aru)
        self._deliver_ready(self.ring)

    def _emit_transitional(self, trans, new_id, old_id):
        self.outputs.append(ConfigurationChange(TRANSITIONAL, trans, trans, new_id, old_id,
                                                self.recovery["reason"]))

    # ---------------------------------------------------------------- data packets

    def _on_data(self, p):
        if self.state == RECOVERY or (self.state == OPERATIONAL and self.new_ring is None):
            ring = self.new_ring if self.state == RECOVERY else self.ring
            if p.ring_id == ring.ring_id:
                self._on_ring_data(ring, p)
                return
        if self.state == GATHER and p.ring_id == self.ring.ring_id and p.inner is None:
            # late packets of the old ring still help recovery (not once we reported on it)
            if self.ring.store(p):
                self.counters["late_old_ring_packets"] += 1
            return
        self.counters["dropped_foreign_data"] += 1

    def _on_ring_data(self, ring, p):
        self._evidence(p.link_seq)
        if not ring.store(p):
            self.counters["duplicate_packets"] += 1
            return
        self.counters["packets_received"] += 1
        if p.inner is not None and self.recovery is not None:
            self._store_recovered(p.inner)
        if self.state == OPERATIONAL:
            self._feed(ring, upto=ring.my_aru)
            self._deliver_ready(ring)

    def _store_recovered(self, inner):
        rec = self.recovery
        if inner.ring_id == self.ring.ring_id and inner.link_seq <= rec["high"]:
            if self.ring.store(inner):
                self.counters["recovered_packets"] += 1

    def _evidence(self, link_seq):
        """A packet sent after we passed the token shows that the token got through."""
        last = self.last_sent_token
        if last is not None and last[4] is not None and link_seq > last[4]:
            self.last_sent_token = None

    # ---------------------------------------------------------------- the token

    def _on_token(self, tok):
        ring = self.new_ring if self.state == RECOVERY else self.ring
        if self.state not in (OPERATIONAL, RECOVERY) or tok.ring_id != ring.ring_id:
            self.counters["dropped_foreign_tokens"] += 1
            return
        if tok.token_id <= ring.last_token_id:
            self.counters["duplicate_tokens"] += 1
            return
        self._handle_token(tok)

    def _handle_token(self, tok):
        """Thesis 7.3.2.2: answer the retransmission requests of the previous holder, send new
        packets within the flow-control limits, update the token, pass it, then deliver."""
        ring = self.new_ring if self.state == RECOVERY else self.ring
        ring.last_token_id = tok.token_id
        self.last_sent_token = None
        self.token_deadline = self.now + self.cfg.token_timeout_s
        if ring.members[0] == self.me:
            self.rotations += 1
        sent = self._answer_retransmissions(ring, tok)
        allowed = self._flow_allowance(ring, tok, sent)
        had_recovery_work = self.state == RECOVERY and bool(self.recovery["queue"])
        if self.state == RECOVERY:
            sent += self._send_recovery_packets(ring, tok, allowed)
        else:
            sent += self._send_new_packets(ring, tok, allowed)
        self._request_missing(ring, tok)
        self._update_aru(ring, tok)
        tok.flow_control = max(0, tok.flow_control - ring.my_last_sent) + sent
        ring.my_last_sent = sent
        install = self.state == RECOVERY and self._recovery_flags(tok, had_recovery_work)
        if install:
            self._enter_operational()
            ring = self.ring
        self._pass_token(ring, tok)
        if self.state == OPERATIONAL:
            self._feed(ring, upto=ring.my_aru)
            self._garbage_collect(ring)
            self._deliver_ready(ring)

    def _answer_retransmissions(self, ring, tok):
        sent = 0
        still = []
        for seq in tok.rtr:
            p = ring.packets.get(seq)
            if p is None:
                still.append(seq)
                continue
            self._multicast(encode_data(p), ring.members)
            sent += 1
            self.counters["retransmissions_sent"] += 1
        tok.rtr = still
        return sent

    def _flow_allowance(self, ring, tok, already_sent):
        """Send at most our personal window, and at most what the global window leaves after
        what the others sent in the last rotation (flow_control minus our own share)."""
        others = max(0, tok.flow_control - ring.my_last_sent)
        return max(0, min(self.cfg.personal_window_packets - already_sent,
                          self.cfg.global_window_packets - others - already_sent))

    def _new_packet(self, ring, tok, chunks=(), inner=None):
        tok.link_seq += 1
        p = DataPacket(ring.ring_id, self.me, tok.link_seq, chunks, inner)
        ring.store(p)
        self._multicast(encode_data(p), ring.members)
        self.counters["packets_sent"] += 1
        return p

    def _send_recovery_packets(self, ring, tok, allowed):
        queue = self.recovery["queue"]
        sent = 0
        while queue and sent < allowed:
            old_packet = self.ring.packets.get(queue.popleft())
            if old_packet is None:
                continue
            self._new_packet(ring, tok, inner=old_packet)
            sent += 1
            self.counters["recovery_packets_sent"] += 1
        return sent

    def _send_new_packets(self, ring, tok, allowed):
        """Pack small messages several to a packet, fragment big ones (thesis 7.3.2)."""
        limit = self.cfg.max_packet_bytes - RECOVERY_WRAP_BYTES - self._packet_overhead(ring)
        sent = 0
        while sent < allowed:
            chunks = self._fill_packet(tok, limit)
            if not chunks:
                break
            self._new_packet(ring, tok, chunks)
            sent += 1
        return sent

    def _fill_packet(self, tok, limit):
        """Chunks for one packet of at most `limit` payload bytes. A message gets its lts and
        site_seq only when its first piece goes into a packet that is sent right away."""
        chunks = []
        room = limit
        while len(chunks) < MAX_CHUNKS_PER_PACKET:
            if self.in_progress is None:
                if not self.pending:
                    break
                first_piece = min(len(self.pending[0][1]), limit - CHUNK_HEADER_BYTES)
                if chunks and CHUNK_HEADER_BYTES + first_piece > room:
                    break  # a small message is never split: it starts the next packet
                self._start_message(tok, limit)
            ip = self.in_progress
            offset = ip[5] * ip[7]
            piece = ip[1][offset:offset + ip[7]]
            if chunks and CHUNK_HEADER_BYTES + len(piece) > room:
                break
            chunks.append(Chunk(ip[2], ip[3], ip[4], ip[5], ip[6], ip[0].service_type, piece))
            room -= CHUNK_HEADER_BYTES + len(piece)
            ip[5] += 1
            if ip[5] >= ip[6]:
                self.in_progress = None
            if room <= CHUNK_HEADER_BYTES:
                break
        return chunks

    def _packet_overhead(self, ring):
        dummy = DataPacket(ring.ring_id, self.me, 0, [])
        return len(encode_data(dummy))

    def _start_message(self, tok, limit):
        msg, body = self.pending.popleft()
        self.origin_counter += 1
        tok.site_lts += 1
        tok.site_seq += 1
        self.max_lts_seen = max(self.max_lts_seen, tok.site_lts)
        msg.origin_counter = self.origin_counter
        piece_bytes = max(1, limit - CHUNK_HEADER_BYTES)
        frag_count = max(1, -(-len(body) // piece_bytes))
        self.in_progress = [msg, body, self.origin_counter, tok.site_lts, tok.site_seq, 0,
                            frag_count, piece_bytes]
        self.counters["messages_sent"] += 1

    def _request_missing(self, ring, tok):
        fits = (self.cfg.max_packet_bytes - TOKEN_FIXED_BYTES) // 8
        room = min(self.cfg.max_rtr_entries, fits) - len(tok.rtr)
        if room <= 0:
            return
        have = set(tok.rtr)
        for seq in ring.missing(tok.link_seq, room):
            if seq not in have:
                tok.rtr.append(seq)
                self.counters["retransmissions_requested"] += 1

    def _update_aru(self, ring, tok):
        """The aru rule of 7.3.2.2 (Totem's): lower the token's aru to ours and sign it with
        site_aru_modifier; raise it only if we were the last to lower it (or nobody was)."""
        my_site = ring.local_site_aru()
        if ring.my_aru < tok.link_aru:
            tok.link_aru, tok.site_aru, tok.site_aru_modifier = ring.my_aru, my_site, self.me
        elif tok.site_aru_modifier in (None, self.me):
            tok.link_aru, tok.site_aru = ring.my_aru, my_site
            tok.site_aru_modifier = None if ring.my_aru >= tok.link_seq else self.me
        # stable = what the token said on this visit and the last one (a full rotation)
        safe_link = min(tok.link_aru, ring.prev_link_aru)
        safe_lts = min(tok.site_aru, ring.prev_site_aru)
        ring.safe_link = max(ring.safe_link, safe_link)
        ring.safe_lts = max(ring.safe_lts, safe_lts)
        ring.prev_link_aru, ring.prev_site_aru = tok.link_aru, tok.site_aru
        self.max_lts_seen = max(self.max_lts_seen, tok.site_lts)

    def _pass_token(self, ring, tok):
        tok.sender = self.me
        tok.token_id += 1
        ring.last_token_id = tok.token_id
        nxt = self._successor(ring.members)
        idle = (tok.flow_control == 0 and not tok.rtr and tok.link_aru == tok.link_seq
                and not self.pending and self.in_progress is None and self.state == OPERATIONAL)
        if idle and ring.members[0] == self.me:
            self.held_token = (ring, tok, nxt)
            self.hold_until = self.now + self.cfg.token_hold_s
            return
        if nxt == self.me:  # a ring of one: the token comes straight back at the next chance
            self.held_token = (ring, tok, nxt)
            self.hold_until = self.now
            return
        self._pass(encode_token(tok), nxt, link_seq=tok.link_seq)

    def _release_held_token(self):
        ring, tok, nxt = self.held_token
        self.held_token = None
        current = self.new_ring if self.state == RECOVERY else self.ring
        if current is not ring or self.state not in (OPERATIONAL, RECOVERY):
            return
        if nxt == self.me:
            self._handle_token(tok)
        else:
            self._pass(encode_token(tok), nxt, link_seq=tok.link_seq)

    def _pass(self, raw, nxt, link_seq):
        self._send(raw, nxt)
        self.last_sent_token = [raw, nxt, self.now + self.cfg.token_retransmit_s,
                                self.cfg.token_retransmits_max, link_seq]

    def _retransmit_token_if_due(self):
        last = self.last_sent_token
        if last is None or self.now < last[2]:
            return
        if last[3] <= 0:
            self.last_sent_token = None
            return
        self._send(last[0], last[1])
        last[2] = self.now + self.cfg.token_retransmit_s
        last[3] -= 1
        self.counters["token_retransmissions"] += 1

    def _garbage_collect(self, ring):
        upto = min(ring.safe_link, ring.fed_upto)
        for seq in range(ring.gc_upto + 1, upto + 1):
            ring.packets.pop(seq, None)
        ring.gc_upto = max(ring.gc_upto, upto)

    # ---------------------------------------------------------------- assembly and delivery

    def _feed(self, ring, upto, allow_gaps=False):
        """Give packets to message assembly in link_seq order (the total order)."""
        seq = ring.fed_upto + 1
        while seq <= upto:
            p = ring.packets.get(seq)
            if p is None:
                if not allow_gaps:
                    break
                ring.ordered.append(_GapMarker(seq))
            elif p.inner is None:
                for c in p.chunks:
                    self._add_chunk(ring, p, c)
            ring.fed_upto = seq
            seq += 1

    def _add_chunk(self, ring, p, c):
        key = (p.sender, c.origin_counter)
        if c.frag_index == 0:
            m = _Message(p.link_seq, p.sender, c)
            ring.ordered.append(m)
            ring.partial[key] = m
        m = ring.partial.get(key)
        if m is None:  # its first fragment is lost for good (only in recovery)
            return
        m.frags[c.frag_index] = c.body
        if len(m.frags) == m.frag_count:
            m.complete = True
            del ring.partial[key]
            if self.trace_completed is not None:
                self.trace_completed.append((m.origin[0], m.origin[1], m.counter))

    def _deliver_ready(self, ring):
        """Thesis 7.3.3. The ring gives one total order to every message, which is also FIFO and
        causal, so UNRELIABLE..AGREED are delivered in that order as soon as there is no gap
        before them; SAFE waits until every member has it (lts <= the stable site_aru)."""
        while ring.ordered:
            m = ring.ordered[0]
            if not m.complete:
                return
            if m.service & SAFE_MESS and m.lts > ring.safe_lts:
                return
            ring.ordered.popleft()
            self._deliver(m, ring)

    def _deliver(self, m, ring):
        body = b"".join(m.frags[i] for i in range(m.frag_count))
        try:
            msg = decode_message_body(body)
        except (WireError, UnicodeDecodeError):
            self.counters["undecodable_messages"] += 1
            return
        msg.origin, msg.origin_incarnation = m.origin
        msg.origin_counter = m.counter
        msg.lts = m.lts
        msg.site_seq = m.site_seq
        msg.ring_id = ring.ring_id
        ring.delivered_lts = m.lts
        self.counters["messages_delivered"] += 1
        self.outputs.append(Deliver(msg))

    # ---------------------------------------------------------------- merge detection

    def _send_merge_detect(self):
        self.next_merge_detect = self.now + self.cfg.merge_detect_s
        raw = encode_merge(Merge(self.me, self.ring.ring_id))
        inside = {p[0] for p in self.ring.members}
        for name in self.peers:
            if name not in inside:
                self.outputs.append(Send(raw, name))

    def _on_merge(self, m):
        self._note_incarnation(m.sender)
        if self.state == OPERATIONAL and m.sender not in self.ring.members \
                and m.ring_id != self.ring.ring_id:
            self.counters["foreign_rings_seen"] += 1
            self._enter_gather("ring %s of %s is reachable: merge" % (
                _ring_str(m.ring_id), m.sender[0]), extra=(m.sender,))


def _names(pids):
    return "{" + ",".join("%s#%d" % p for p in sorted(pids)) + "}"


def _ring_str(ring_id):
    return "%d/%s#%d" % ring_id


# =====================================================================================
# I/O loop
# =====================================================================================
# The UDP loop lives in spread_mini.py once the ring is integrated (phase 2 of issue 5).
# Until then this file is exercised by the deterministic simulator in tests/ring_sim.py.


# =====================================================================================
# Terminal rendering
# =====================================================================================

def ring_status_rows(snap):
    """(label, value) rows for the status table: the ring as a student sees it."""
    c = snap["counters"]
    return [
        ("daemon", "%s (incarnation %d)" % (snap["name"], snap["incarnation"])),
        ("state", snap["state"]),
        ("ring", "%s: %s" % (_ring_str(snap["ring_id"]), ", ".join(snap["members"]))),
        ("token rotations", str(snap["rotations"])),
        ("packets sent / received", "%d / %d" % (c.get("packets_sent", 0), c.get("packets_received", 0))),
        ("retransmissions asked / sent", "%d / %d" % (c.get("retransmissions_requested", 0),
                                                      c.get("retransmissions_sent", 0))),
        ("windows global / personal", "%d / %d packets" % (snap["global_window_packets"],
                                                            snap["personal_window_packets"])),
        ("membership changes", "%d (last: %s)" % (c.get("configurations_installed", 0),
                                                   snap["last_change_reason"])),
        ("garbage dropped", str(c.get("dropped_garbage", 0))),
    ]


def render_ring_status(snap):
    rows = ring_status_rows(snap)
    if Table is None:
        return "\n".join("%-30s %s" % r for r in rows)
    table = Table(title="RING %s" % snap["name"])
    table.add_column("what")
    table.add_column("value")
    for label, value in rows:
        table.add_row(label, value)
    return table


# =====================================================================================
# Command line
# =====================================================================================

def main(argv=None):
    parser = argparse.ArgumentParser(
        description="The RING protocol of spread_mini (standalone until integration). "
                    "Runs the deterministic simulator: python3 spread_ring.py sim --seed 7")
    sub = parser.add_subparsers(dest="command")
    sim = sub.add_parser("sim", help="run one simulated seed with faults and check the guarantees")
    sim.add_argument("--seed", type=int, default=1)
    sim.add_argument("--daemons", type=int, default=None, help="override the seed's ring size")
    sim.add_argument("--seconds", type=float, default=None, help="override the seed's length")
    sim.add_argument("--log", action="store_true", help="print the protocol log")
    args = parser.parse_args(argv)
    if args.command != "sim":
        parser.print_help()
        return 2
    import os
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "tests"))
    import ring_sim  # noqa: E402  (the simulator lives with the tests)
    result = ring_sim.run_seed(args.seed, daemons=args.daemons, seconds=args.seconds)
    if args.log:
        for line in sorted(result.log_lines, key=lambda l: float(l.split(" ", 1)[0])):
            print(line)
    print(result.summary())
    return 0 if not result.violations else 1


if __name__ == "__main__":
    sys.exit(main())
