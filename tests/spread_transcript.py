"""The real Spread wire transcript (tests/data/spread_transcript.txt) as data for golden-vector tests.

The transcript holds bytes captured with strace between the real Spread 4.4.0 / 5.0.1 daemon and
its real client library, one section per traced client (A, A', B1, B2, B3, C1, C2, A(5.0.1)),
each unit annotated with its decoded fields.  This module:

* parses it into `Section`s of ordered `Unit`s (timestamp, direction C->D / D->C / TCP, exact
  bytes, label, the annotated fields as text);
* decodes units independently (`decode_unit`) so the tests can check the annotations and our
  parser against each other;
* frames a byte stream into protocol units (`unit_size`), so a harness reads exactly one unit
  whatever the peer sends (a wrong length shows as a wrong unit, not as a hang or a shifted
  stream);
* masks the fields that legitimately differ between two correct implementations (`Mask`):
  group_id proc_id and time, daemon/library version bytes, the garbage the real library leaves
  after the NUL of names in its KILL message, and renames (random private names, a daemon name
  the test cannot choose);
* describes a unit in words (`describe`) for assertion messages a person can read.

Only the standard library; no import of spread_mini (this is the reference it is checked against).
"""
from __future__ import annotations

import re
import struct
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Dict, List, Optional, Tuple

TRANSCRIPT_PATH = Path(__file__).resolve().parent / "data" / "spread_transcript.txt"

# ====================================================================================================
# Constants (PROTOCOL.md section 5; repeated here on purpose: the tests must not trust spread_mini)
# ====================================================================================================

HEADER_LEN = 48
GROUP_NAME_LEN = 32          # MAX_GROUP_NAME
AUTH_CHOICE_LEN = 90         # MAX_AUTH_METHODS * MAX_AUTH_NAME = 3 * 30
ENDIAN_TYPE = 0x80000080
ACCEPT_SESSION = 1

UNRELIABLE_MESS = 0x1
RELIABLE_MESS = 0x2
FIFO_MESS = 0x4
CAUSAL_MESS = 0x8
AGREED_MESS = 0x10
SAFE_MESS = 0x20
REGULAR_MESS = 0x3F
SELF_DISCARD = 0x40
CAUSED_BY_JOIN = 0x100
CAUSED_BY_LEAVE = 0x200
CAUSED_BY_DISCONNECT = 0x400
CAUSED_BY_NETWORK = 0x800
REG_MEMB_MESS = 0x1000
TRANSITION_MESS = 0x2000
MEMBERSHIP_MESS = 0x3F00
JOIN_MESS = 0x10000
LEAVE_MESS = 0x20000
KILL_MESS = 0x40000
REJECT_MESS = 0x400000

REJECT_CODES = {-3: "REJECT_QUOTA", -4: "REJECT_NO_NAME", -5: "REJECT_ILLEGAL_NAME",
                -6: "REJECT_NOT_UNIQUE", -7: "REJECT_VERSION", -9: "REJECT_AUTH"}

_TYPE_BIT_NAMES = [
    (UNRELIABLE_MESS, "UNRELIABLE_MESS"), (RELIABLE_MESS, "RELIABLE_MESS"), (FIFO_MESS, "FIFO_MESS"),
    (CAUSAL_MESS, "CAUSAL_MESS"), (AGREED_MESS, "AGREED_MESS"), (SAFE_MESS, "SAFE_MESS"),
    (SELF_DISCARD, "SELF_DISCARD"), (CAUSED_BY_JOIN, "CAUSED_BY_JOIN"),
    (CAUSED_BY_LEAVE, "CAUSED_BY_LEAVE"), (CAUSED_BY_DISCONNECT, "CAUSED_BY_DISCONNECT"),
    (CAUSED_BY_NETWORK, "CAUSED_BY_NETWORK"), (REG_MEMB_MESS, "REG_MEMB_MESS"),
    (TRANSITION_MESS, "TRANSITION_MESS"), (JOIN_MESS, "JOIN_MESS"), (LEAVE_MESS, "LEAVE_MESS"),
    (KILL_MESS, "KILL_MESS"), (REJECT_MESS, "REJECT_MESS"),
]

# Unit kinds: the handshake units have their own layouts, everything after it is a 48-byte-header message.
CONNECT, AUTH_LIST, AUTH_CHOICE, ACCEPT, REJECT, MESSAGE, TCP_OPEN = (
    "connect", "auth_list", "auth_choice", "accept", "reject", "message", "tcp")
TCP_CLOSE = "tcp_close"   # derived only: the client closes its socket (no unit of the transcript)
ACTION = "action"         # an event of the run that is not a client's unit (e.g. "kill -9 d3")

_KIND_BY_LABEL = [("CONNECT request", CONNECT), ("AUTH list", AUTH_LIST),
                  ("AUTH method choice", AUTH_CHOICE), ("ACCEPT", ACCEPT), ("REJECT code", REJECT),
                  ("TCP connect()", TCP_OPEN)]


# ====================================================================================================
# Parsed transcript
# ====================================================================================================

@dataclass
class Unit:
    section: str            #: section key as printed: "A", "A'", "B1", ..., "A(5.0.1)"
    index: int              #: position in its section (TCP connect included)
    time: str               #: "07:36:52.331400" (client-side syscall completion time)
    direction: str          #: "C->D", "D->C" or "TCP" (the client's connect())
    label: str              #: e.g. "JOIN message: 48-byte header + 1 group name(s) + 0 data bytes"
    data: bytes             #: exact bytes of the unit (b"" for TCP)
    kind: str               #: CONNECT, AUTH_LIST, AUTH_CHOICE, ACCEPT, REJECT, MESSAGE or TCP_OPEN
    notes: List[str] = field(default_factory=list)   #: the annotation lines, stripped

    @property
    def time_s(self) -> float:
        """Seconds since midnight, for merging the sections of one run in capture order."""
        h, m, s = self.time.split(":")
        return int(h) * 3600 + int(m) * 60 + float(s)

    def __repr__(self) -> str:  # short, for pytest ids and messages
        return f"<{self.section}#{self.index} {self.time} {self.direction} {self.label[:40]!r}>"


@dataclass
class Section:
    key: str                 #: "A", "A'", "B1", ..., "A(5.0.1)"
    title: str               #: rest of the title line
    trace_file: str          #: e.g. "A_demo.strace"
    units: List[Unit]
    declared: Tuple[int, int, int, int]   #: (c2d decoded, c2d total, d2c decoded, d2c total)
    spread_version: str      #: "4.4.0" or "5.0.1"
    connect_to: str = ""     #: "127.0.0.1:4803" as traced

    def bytes_in(self, direction: str) -> int:
        return sum(len(u.data) for u in self.units if u.direction == direction)

    def data_units(self) -> List[Unit]:
        return [u for u in self.units if u.direction != "TCP"]


_SECTION_RULE = re.compile(r"^={20,}$")
_SECTION_TITLE = re.compile(r"^(?P<key>[A-Z][0-9]?(?:'|\([0-9.]+\))?)\. (?P<title>.*?)\s+\[(?P<file>[^\]]+)\]\s*$")
_UNIT_LINE = re.compile(r"^\[(?P<time>\d\d:\d\d:\d\d\.\d+)\] (?P<dir>C->D|D->C|TCP)\s+(?P<label>.*)$")
_HEX_LINE = re.compile(r"^    (?P<off>[0-9a-f]{4}): ")
_DECODED = re.compile(r"^\(decoded (\d+)/(\d+) client->daemon bytes, (\d+)/(\d+) daemon->client bytes\)")
_VERSION_BANNER = re.compile(r"^SPREAD (\d+\.\d+\.\d+)")


def _kind_of(direction: str, label: str) -> str:
    for prefix, kind in _KIND_BY_LABEL:
        if label.startswith(prefix):
            return kind
    return MESSAGE


class TranscriptFormatError(ValueError):
    pass


def parse_transcript(text: str) -> Dict[str, Section]:
    """Sections by key, in file order.  Raises TranscriptFormatError on anything it does not understand."""
    lines = text.splitlines()
    sections: Dict[str, Section] = {}
    version = "4.4.0"
    current: Optional[Section] = None
    unit: Optional[Unit] = None
    hex_bytes = bytearray()

    def finish_unit():
        nonlocal unit, hex_bytes
        if unit is not None:
            unit.data = bytes(hex_bytes)
            current.units.append(unit)
        unit, hex_bytes = None, bytearray()

    i = 0
    while i < len(lines):
        line = lines[i]
        banner = _VERSION_BANNER.match(line)
        if banner:
            version = banner.group(1)
        if _SECTION_RULE.match(line) and i + 2 < len(lines) and _SECTION_RULE.match(lines[i + 2]):
            title = _SECTION_TITLE.match(lines[i + 1])
            if title:
                finish_unit()
                current = Section(title.group("key"), title.group("title"), title.group("file"), [],
                                  (0, 0, 0, 0), version)
                if current.key in sections:
                    raise TranscriptFormatError(f"line {i + 2}: section {current.key} twice")
                sections[current.key] = current
                i += 3
                continue
        if current is not None:
            m = _UNIT_LINE.match(line)
            if m:
                finish_unit()
                direction, label = m.group("dir"), m.group("label").strip()
                unit = Unit(current.key, len(current.units), m.group("time"), direction, label, b"",
                            _kind_of(direction, label))
                if direction == "TCP":
                    target = re.search(r"connect\(\) to (\S+)", label)
                    current.connect_to = target.group(1) if target else ""
            elif unit is not None and _HEX_LINE.match(line):
                off = int(_HEX_LINE.match(line).group("off"), 16)
                if off != len(hex_bytes):
                    raise TranscriptFormatError(f"line {i + 1}: offset {off:#x}, expected {len(hex_bytes):#x}")
                hex_bytes.extend(bytes.fromhex(line[10:57]))
            elif _DECODED.match(line):
                finish_unit()
                current.declared = tuple(int(x) for x in _DECODED.match(line).groups())
            elif unit is not None and line.strip():
                unit.notes.append(line.strip())
        i += 1
    finish_unit()
    return sections


_CACHE: Dict[str, Dict[str, Section]] = {}


def load(path: Path = TRANSCRIPT_PATH) -> Dict[str, Section]:
    key = str(path)
    if key not in _CACHE:
        _CACHE[key] = parse_transcript(Path(path).read_text())
    return _CACHE[key]


def merged(sections: List[Section]) -> List[Unit]:
    """The units of several clients of one run in capture order (stable merge by timestamp)."""
    order = {s.key: n for n, s in enumerate(sections)}
    units = [u for s in sections for u in s.units]
    return sorted(units, key=lambda u: (u.time_s, order[u.section], u.index))


def retimed(units: List[Unit], template: List[Unit]) -> List[Unit]:
    """Copies of `units` carrying the timestamps of `template`, unit for unit (same directions and
    kinds required).  Used to place a client traced in another run (A(5.0.1)) into the timeline
    of a run whose other clients were traced (A, A')."""
    if [(u.direction, u.kind) for u in units] != [(t.direction, t.kind) for t in template]:
        raise ValueError("retimed(): the two unit sequences differ in shape")
    return [replace(u, time=t.time) for u, t in zip(units, template)]


def with_membership_ids(units: List[Unit], proc_id: int, memb_time: int) -> List[Unit]:
    """Copies of `units` whose membership bodies carry group_id (proc_id, memb_time, index).  Only
    for joining clients of two captures into one run: these two fields are masked in every
    comparison anyway, and rewriting them keeps the "same daemon, same ids" check meaningful."""
    out = []
    for u in units:
        fields = decode_unit(u) if u.kind == MESSAGE else {}
        if "group_id" in fields:
            at = fields["body_offset"]
            data = u.data[:at] + struct.pack(fields["byte_order"] + "ii", proc_id, memb_time) + u.data[at + 8:]
            u = replace(u, data=data)
        out.append(u)
    return out


# ----------------------------------------------------------------------------------------------------
# Derived vectors: the captured host was little-endian; a big-endian peer writes the same fields
# with the marker bits clear and its ints big-endian (PROTOCOL.md section 2).  NOT captured: these
# follow the documented rule (sess_types.h, Flip_mess) and are labelled "derived" wherever used.
# ----------------------------------------------------------------------------------------------------

def is_forwarded(unit: Unit) -> bool:
    """A D->C data (or reject) message: its hint is the ORIGINAL sender's, not the daemon's."""
    if unit.kind != MESSAGE or unit.direction != "D->C":
        return False
    return bool(decode_message(unit.data)["service"] & (REGULAR_MESS | REJECT_MESS))


def big_endian_message(data: bytes, keep_hint: bool = False) -> bytes:
    """A little-endian writer's message as a big-endian writer would send it.  keep_hint: leave the
    hint bytes alone (a daemon forwards the original sender's hint untouched)."""
    f = decode_message(data)
    if f["byte_order"] != "<":
        raise ValueError("already big-endian")
    service = f["type"] & ~ENDIAN_TYPE & 0xFFFFFFFF
    hint = data[40:44] if keep_hint else struct.pack(">I", f["hint"] & ~ENDIAN_TYPE & 0xFFFFFFFF)
    out = bytearray(struct.pack(">I", service) + data[4:36] + struct.pack(">i", f["num_groups"]) + hint
                    + struct.pack(">i", f["data_len"]))
    at = HEADER_LEN
    if service & REJECT_MESS:
        out += struct.pack(">I", f["old_type"])
        at += 4
    out += data[at:f["body_offset"]]
    body = bytearray(f["data"])
    if "group_id" in f:
        body[0:12] = struct.pack(">iii", *f["group_id"])
        if "num_vs_sets" in f:
            body[12:20] = struct.pack(">II", f["num_vs_sets"], f["local_vs_set_offset"])
            for offset, names in zip(f["vs_set_offsets"], f["vs_sets"]):
                body[20 + offset:24 + offset] = struct.pack(">I", len(names))
    return bytes(out + body)


def to_big_endian(units: List[Unit], direction: str) -> List[Unit]:
    """The units of one direction ("C->D": a big-endian client; "D->C": a big-endian daemon)
    rewritten as a big-endian host writes them; forwarded hints kept as the sender wrote them."""
    out = []
    for u in units:
        if u.direction == direction and u.kind == MESSAGE:
            u = replace(u, data=big_endian_message(u.data, keep_hint=is_forwarded(u)))
        out.append(u)
    return out


def expected_in_order_of(unit: Unit, got: bytes) -> bytes:
    """The unit's bytes in the byte order `got` was written in.  The capture host was
    little-endian; a big-endian host running our code writes its own order, which is as correct
    (PROTOCOL.md section 2), so the tests compare like with like."""
    if unit.kind != MESSAGE or len(got) < HEADER_LEN or message_byte_order(got) == message_byte_order(unit.data):
        return unit.data
    return big_endian_message(unit.data, keep_hint=is_forwarded(unit))


def with_forwarded_hint(units: List[Unit], sender: str, hint_raw: bytes) -> List[Unit]:
    """D->C data messages from `sender` carrying hint_raw (the 4 bytes the sender wrote)."""
    out = []
    for u in units:
        if is_forwarded(u) and decode_message(u.data)["sender"] == sender:
            u = replace(u, data=u.data[:40] + hint_raw + u.data[44:])
        out.append(u)
    return out


def without_membership(units: List[Unit], section: str) -> List[Unit]:
    """Derived: `section`'s client connects with group_membership=0 (connect flags bit0 clear).
    Such a session gets data messages only: no REG_MEMB, no TRANSITION, no self-leave
    (PROTOCOL.md section 4, Is_memb_session in groups.c:1410,1442,1489,1544)."""
    out = []
    for u in units:
        if u.section == section:
            if u.kind == CONNECT:
                at = 3 if lib_has_patch(u.data[0], u.data[1]) else 2
                u = replace(u, data=u.data[:at] + bytes([u.data[at] & ~1]) + u.data[at + 1:])
            elif u.direction == "D->C" and u.kind == MESSAGE and decode_message(u.data)["service"] & MEMBERSHIP_MESS:
                continue
        out.append(u)
    return out


def with_priority(units: List[Unit], section: str, priority: int) -> List[Unit]:
    """Derived: `section`'s client connects with this priority (connect flags bits 4-7, sp.c:690-694)."""
    out = []
    for u in units:
        if u.section == section and u.kind == CONNECT:
            at = 3 if lib_has_patch(u.data[0], u.data[1]) else 2
            u = replace(u, data=u.data[:at] + bytes([(u.data[at] & 0x0F) | (priority << 4)]) + u.data[at + 1:])
        out.append(u)
    return out


def anonymous(units: List[Unit], section: str) -> List[Unit]:
    """Derived: `section`'s client sends an empty private name (length 0): the daemon invents one
    (session.c:738-762).  The expected bytes keep the traced name; compare with a rename."""
    out = []
    for u in units:
        if u.section == section and u.kind == CONNECT:
            at = 4 if lib_has_patch(u.data[0], u.data[1]) else 3
            u = replace(u, data=u.data[:at] + b"\0")
        out.append(u)
    return out


def rename_in_unit(kind: str, data: bytes, old: str, new: str) -> bytes:
    """`data` with every name field holding `old` (sender, groups, vs_set members) holding `new`;
    nothing else changed (KILL garbage included)."""
    return mask_unit(kind, data, Mask(group_id_ids=False, daemon_version=False, kill_garbage=False,
                                      renames={old: new}))


def rejected_at(units: List[Unit], index: int, code: int) -> List[Unit]:
    """Derived: the units of one client up to `index`, where the daemon answers the reject `code`
    (one signed byte, then it closes: PROTOCOL.md section 1) instead of the traced unit."""
    cut = units[index]
    if cut.direction != "D->C" or cut.kind not in (AUTH_LIST, ACCEPT, REJECT):
        raise ValueError(f"{cut!r} is not a handshake answer")
    reject = replace(cut, data=struct.pack("b", code), kind=REJECT,
                     label=f"REJECT code {REJECT_CODES.get(code, code)} (derived)", notes=[])
    return list(units[:index]) + [reject]


def with_auth_list(units: List[Unit], methods: str) -> List[Unit]:
    """Derived: the daemon offers other auth methods ("IP NULL " ...)."""
    raw = methods.encode("latin-1")
    return [replace(u, data=bytes([len(raw)]) + raw) if u.kind == AUTH_LIST else u for u in units]


def closed_instead_of_kill(units: List[Unit], section: str) -> List[Unit]:
    """Derived: `section`'s client closes its socket where it sent SP_disconnect's KILL (a killed
    program, spflooder): handled like a disconnect (PROTOCOL.md section 3, Sess_kill)."""
    out = []
    for u in units:
        if u.section == section and u.kind == MESSAGE and u.direction == "C->D" \
                and decode_message(u.data)["service"] & KILL_MESS:
            u = replace(u, direction="TCP", kind=TCP_CLOSE, data=b"", label="close() without KILL (derived)",
                        notes=[])
        out.append(u)
    return out


def action(time: str, label: str) -> Unit:
    """A pseudo-unit for an event of the run outside the clients (the harness performs it)."""
    return Unit("(run)", 0, time, "TCP", label, b"", ACTION)


def kill_time(section: Section) -> Optional[str]:
    """The time of a 'kill -9 ... at HH:MM:SS.fff' noted in a section title (C1)."""
    m = re.search(r"kill -9 \w+ at (\d\d:\d\d:\d\d\.\d{6})", section.title)
    return m.group(1) if m else None


def legal_private_name(name: str) -> bool:
    """1..MAX_PRIVATE_NAME characters, each > '#' and <= '~' (session.c:784-786)."""
    return 1 <= len(name) <= 10 and all(0x23 < ord(c) <= 0x7E for c in name)


# ====================================================================================================
# Framing: how many bytes make the unit that starts this buffer
# ====================================================================================================

def lib_has_patch(major: int, minor: int) -> bool:
    """The daemon reads a patch byte from libs newer than 3.14 (session.c:683)."""
    return major * 10000 + minor * 100 > 31400


def accept_has_patch(lib_version: Tuple[int, int, int]) -> bool:
    """The daemon sends its patch byte to libs >= 3.15.0 (session.c:1066)."""
    major, minor, patch = lib_version
    return major * 10000 + minor * 100 + patch >= 31500


def message_byte_order(buf: bytes) -> str:
    """'<' or '>': the writer's byte order, told by the endian marker bits of `type`."""
    return "<" if struct.unpack_from("<I", buf, 0)[0] & ENDIAN_TYPE == ENDIAN_TYPE else ">"


def unit_size(kind: str, buf: bytes, accept_patch: bool = True) -> Optional[int]:
    """Total length of the unit of this kind at the start of buf, or None if more bytes are needed
    to know it.  AUTH_LIST and ACCEPT answer 1 when the first byte is a reject code."""
    if kind == CONNECT:
        if len(buf) < 2:
            return None
        name_len_at = 4 if lib_has_patch(buf[0], buf[1]) else 3
        return None if len(buf) <= name_len_at else name_len_at + 1 + buf[name_len_at]
    if kind in (AUTH_LIST, REJECT):
        if not buf:
            return None
        code = struct.unpack_from("b", buf, 0)[0]
        return 1 if code < 0 or kind == REJECT else 1 + code
    if kind == AUTH_CHOICE:
        return AUTH_CHOICE_LEN
    if kind == ACCEPT:
        if not buf:
            return None
        if buf[0] != ACCEPT_SESSION:
            return 1
        len_at = 4 if accept_patch else 3
        return None if len(buf) <= len_at else len_at + 1 + buf[len_at]
    if kind == MESSAGE:
        if len(buf) < HEADER_LEN:
            return None
        order = message_byte_order(buf)
        mtype, = struct.unpack_from(order + "I", buf, 0)
        num_groups, = struct.unpack_from(order + "i", buf, 36)
        data_len, = struct.unpack_from(order + "i", buf, 44)
        if num_groups < 0 or data_len < 0:
            raise ValueError(f"message header with num_groups={num_groups} data_len={data_len}")
        extra = 4 if mtype & REJECT_MESS else 0
        return HEADER_LEN + extra + GROUP_NAME_LEN * num_groups + data_len
    raise ValueError(f"no framing for kind {kind!r}")


# ====================================================================================================
# Decoding (independent of spread_mini)
# ====================================================================================================

def cstr(raw: bytes) -> str:
    """A NUL-padded name field as text (bytes after the first NUL ignored, as the C code does)."""
    return raw.split(b"\0", 1)[0].decode("latin-1")


def type_names(mtype: int) -> str:
    names = [name for bit, name in _TYPE_BIT_NAMES if mtype & bit]
    return " | ".join(names) if names else "0"


def decode_message(buf: bytes) -> dict:
    """All fields of a 48-byte-header message, membership bodies included."""
    order = message_byte_order(buf)
    mtype, = struct.unpack_from(order + "I", buf, 0)
    num_groups, hint, data_len = struct.unpack_from(order + "iii", buf, 36)
    out = {"type": mtype, "service": mtype & ~ENDIAN_TYPE & 0xFFFFFFFF, "byte_order": order,
           "sender": cstr(buf[4:36]), "num_groups": num_groups, "hint": hint & 0xFFFFFFFF,
           "mess_type": ((hint & ~ENDIAN_TYPE & 0xFFFFFFFF) >> 8) & 0xFFFF, "data_len": data_len}
    at = HEADER_LEN
    if mtype & REJECT_MESS:
        out["old_type"], = struct.unpack_from(order + "I", buf, at)
        at += 4
    out["groups"] = [cstr(buf[at + GROUP_NAME_LEN * k: at + GROUP_NAME_LEN * (k + 1)]) for k in range(num_groups)]
    at += GROUP_NAME_LEN * num_groups
    body = buf[at:at + data_len]
    out["data"] = body
    out["body_offset"] = at
    service = out["service"]
    if service & (REG_MEMB_MESS | TRANSITION_MESS) and len(body) >= 12:
        out["group_id"] = struct.unpack_from(order + "iii", body, 0)
        if service & REG_MEMB_MESS and len(body) >= 20:
            num_sets, local_offset = struct.unpack_from(order + "II", body, 12)
            out["num_vs_sets"], out["local_vs_set_offset"] = num_sets, local_offset
            sets, offsets, pos = [], [], 20
            for _ in range(min(num_sets, 100)):
                count, = struct.unpack_from(order + "I", body, pos)
                offsets.append(pos - 20)
                names = [cstr(body[pos + 4 + 32 * k: pos + 36 + 32 * k]) for k in range(count)]
                sets.append(names)
                pos += 4 + 32 * count
            out["vs_sets"], out["vs_set_offsets"] = sets, offsets
    return out


def decode_unit(unit_or_kind, data: Optional[bytes] = None) -> dict:
    """Fields of any unit (pass a Unit, or a kind and bytes)."""
    if isinstance(unit_or_kind, Unit):
        kind, data = unit_or_kind.kind, unit_or_kind.data
    else:
        kind = unit_or_kind
    if kind == CONNECT:
        has_patch = lib_has_patch(data[0], data[1])
        flags_at = 3 if has_patch else 2
        flags, name_len = data[flags_at], data[flags_at + 1]
        return {"lib_version": (data[0], data[1], data[2] if has_patch else None),
                "group_membership": flags & 1, "priority": flags >> 4, "name_len": name_len,
                "name": data[flags_at + 2:flags_at + 2 + name_len].decode("latin-1")}
    if kind in (AUTH_LIST, REJECT) or (kind == ACCEPT and data[:1] != b"\x01"):
        code = struct.unpack_from("b", data, 0)[0]
        if code < 0 or kind == REJECT or kind == ACCEPT:
            return {"code": code, "code_name": REJECT_CODES.get(code, "?")}
        return {"length": code, "methods": data[1:1 + code].decode("latin-1")}
    if kind == AUTH_CHOICE:
        return {"methods": [cstr(data[30 * k:30 * (k + 1)]) for k in range(3)]}
    if kind == ACCEPT:
        has_patch = len(data) >= 5 and data[4] == len(data) - 5
        len_at = 4 if has_patch else 3
        return {"code": 1, "daemon_version": tuple(data[1:len_at]), "name_len": data[len_at],
                "private_group": data[len_at + 1:].decode("latin-1")}
    if kind == MESSAGE:
        return decode_message(data)
    if kind == TCP_OPEN:
        return {}
    raise ValueError(kind)


def describe(kind: str, data: bytes) -> str:
    """One readable line per field, for assertion messages."""
    try:
        fields = decode_unit(kind, data)
    except Exception as exc:  # a malformed unit is exactly what we want to see described
        return f"{kind}: undecodable ({exc}); raw {data.hex(' ')}"
    if kind != MESSAGE:
        return f"{kind} {len(data)} bytes {fields}; raw {data.hex(' ')}"
    lines = [f"message {len(data)} bytes: type {fields['type']:#010x} = {type_names(fields['service'])}"
             f" (byte order {fields['byte_order']})",
             f"  sender {fields['sender']!r} num_groups {fields['num_groups']} hint {fields['hint']:#010x}"
             f" (mess_type {fields['mess_type']}) data_len {fields['data_len']}",
             f"  groups {fields['groups']}"]
    if "old_type" in fields:
        lines.append(f"  old_type {fields['old_type']:#x}")
    if "group_id" in fields:
        lines.append(f"  group_id {fields['group_id']} num_vs_sets {fields.get('num_vs_sets')}"
                     f" local_vs_set_offset {fields.get('local_vs_set_offset')} vs_sets {fields.get('vs_sets')}")
    else:
        lines.append(f"  data {fields['data'][:64]!r}")
    return "\n".join(lines)


# ====================================================================================================
# The annotations, read back as fields (for the self-checks)
# ====================================================================================================

_NOTE_PATTERNS = [
    ("type", re.compile(r"^\+0\s+type \(int32, sender byte order\) = (0x[0-9a-f]+)"), lambda m: int(m.group(1), 16)),
    ("sender", re.compile(r"^\+4\s+private_group_name / sender \[32\] = '([^']*)'"), lambda m: m.group(1)),
    ("num_groups", re.compile(r"^\+36 num_groups \(int32\) = (\d+)"), lambda m: int(m.group(1))),
    ("hint", re.compile(r"^\+40 hint \(int32\) = (0x[0-9a-f]+)"), lambda m: int(m.group(1), 16)),
    ("mess_type", re.compile(r"^\+40 hint .*mess_type = \(hint>>8\)&0xffff = (\d+)"), lambda m: int(m.group(1))),
    ("data_len", re.compile(r"^\+44 data_len \(int32\) = (\d+)"), lambda m: int(m.group(1))),
    ("data", re.compile(r"^\+\d+ data \(\d+ bytes\) = b'(.*)'$"), lambda m: m.group(1).encode("latin-1")),
    ("group_id", re.compile(r"group_id = \{(?:memb_id\.)?proc_id=(\d+).*?(?:memb_id\.)?time=(\d+), index=(\d+)\}"),
     lambda m: (int(m.group(1)), int(m.group(2)), int(m.group(3)))),
    ("num_vs_sets", re.compile(r"^body \+12 num_vs_sets \(uint32\) = (\d+)"), lambda m: int(m.group(1))),
    ("local_vs_set_offset", re.compile(r"^body \+16 local_vs_set_offset .* = (\d+)"), lambda m: int(m.group(1))),
    # handshake units
    ("lib_major", re.compile(r"^\+0 0x([0-9a-f]{2})\s+library major version"), lambda m: int(m.group(1), 16)),
    ("lib_minor", re.compile(r"^\+1 0x([0-9a-f]{2})\s+library minor version"), lambda m: int(m.group(1), 16)),
    ("lib_patch", re.compile(r"^\+2 0x([0-9a-f]{2})\s+library patch version"), lambda m: int(m.group(1), 16)),
    ("flags", re.compile(r"^\+3 0x([0-9a-f]{2})\s+bit0: group_membership"), lambda m: int(m.group(1), 16)),
    ("name_len", re.compile(r"^\+4 0x([0-9a-f]{2})\s+private (?:group )?name length"), lambda m: int(m.group(1), 16)),
    ("name", re.compile(r"^\+5 '([^']*)'\s+private name"), lambda m: m.group(1)),
    ("private_group", re.compile(r"^\+5 '([^']*)'\s+private group name"), lambda m: m.group(1)),
    ("auth_length", re.compile(r"^\+0 0x([0-9a-f]{2})\s+length = \d+"), lambda m: int(m.group(1), 16)),
    ("methods", re.compile(r"^\+1 '([^']*)'\s+allowed auth methods"), lambda m: m.group(1)),
    ("accept", re.compile(r"^\+0 0x([0-9a-f]{2})\s+ACCEPT_SESSION"), lambda m: int(m.group(1), 16)),
    ("daemon_major", re.compile(r"^\+1 0x([0-9a-f]{2})\s+daemon major version"), lambda m: int(m.group(1), 16)),
    ("daemon_minor", re.compile(r"^\+2 0x([0-9a-f]{2})\s+daemon minor version"), lambda m: int(m.group(1), 16)),
    ("daemon_patch", re.compile(r"^\+3 0x([0-9a-f]{2})\s+daemon patch version"), lambda m: int(m.group(1), 16)),
    ("reject_code", re.compile(r"^(-\d+) = (REJECT_\w+)"), lambda m: (int(m.group(1)), m.group(2))),
    ("slot0", re.compile(r"here slot0='([^']*)', others empty"), lambda m: m.group(1)),
]
_GROUP_NOTE = re.compile(r"^\+\d+ group\[(\d+)\] \(32 bytes\) = '([^']*)'")
_VS_NOTE = re.compile(r"^body \+\d+ vs_set\[(\d+)\]: num_members \(uint32\) = (\d+), members\[32 each\] = \[(.*)\]")


def annotated_fields(unit: Unit) -> dict:
    """What the transcript's annotation lines say about this unit."""
    out: dict = {}
    groups: Dict[int, str] = {}
    vs_sets: Dict[int, List[str]] = {}
    for note in unit.notes:
        for name, pattern, convert in _NOTE_PATTERNS:
            m = pattern.search(note)  # the patterns that must start the line say so with ^
            if m:
                out[name] = convert(m)
        g = _GROUP_NOTE.match(note)
        if g:
            groups[int(g.group(1))] = g.group(2)
        v = _VS_NOTE.match(note)
        if v:
            members = re.findall(r"'([^']*)'", v.group(3))
            if len(members) != int(v.group(2)):
                raise TranscriptFormatError(f"{unit!r}: vs_set count {v.group(2)} but {members}")
            vs_sets[int(v.group(1))] = members
    if groups:
        out["groups"] = [groups[k] for k in sorted(groups)]
    if vs_sets:
        out["vs_sets"] = [vs_sets[k] for k in sorted(vs_sets)]
    return out


# ====================================================================================================
# Masks: the fields two correct implementations may legitimately disagree on
# ====================================================================================================

@dataclass
class Mask:
    """What to blank before comparing two units.  Every mask is named in the assertion message."""
    group_id_ids: bool = True       #: proc_id (daemon IP / virtual id) and time of group_id.memb_id
    group_id_index: bool = False    #: the index (it counts changes of the group: compared by default)
    daemon_version: bool = True     #: version bytes in the accept reply
    lib_version: bool = False       #: version bytes in the connect message (our lib vs the real one)
    kill_garbage: bool = True       #: bytes after the NUL of names in KILL (the real lib leaves stack garbage)
    renames: Dict[str, str] = field(default_factory=dict)   #: name as got -> name as in the transcript

    def describe(self) -> str:
        parts = [name for name in ("group_id_ids", "group_id_index", "daemon_version", "lib_version",
                                   "kill_garbage") if getattr(self, name)]
        if self.renames:
            parts.append(f"renames {self.renames}")
        return ", ".join(parts) or "nothing"


def _rename(name: str, renames: Dict[str, str]) -> str:
    if name in renames:
        return renames[name]
    for got, want in renames.items():  # '#x#d' renamed also renames a bare private name 'x'
        if got.startswith("#") and got.split("#")[1] == name:
            return want.split("#")[1]
    return name


def _name_field(name: str) -> bytes:
    raw = name.encode("latin-1")
    return raw + b"\0" * (GROUP_NAME_LEN - len(raw)) if len(raw) <= GROUP_NAME_LEN else raw


def _mask_name_field(raw: bytes, mask: Mask, is_kill: bool) -> bytes:
    name = cstr(raw)
    new = _rename(name, mask.renames)
    if new != name:
        return _name_field(new)
    if is_kill and mask.kill_garbage:
        return _name_field(name)
    return raw


def mask_unit(kind: str, data: bytes, mask: Mask) -> bytes:
    """A copy of the unit with the masked fields blanked (zeros) and renames applied."""
    if kind == CONNECT:
        out = bytearray(data)
        has_patch = lib_has_patch(data[0], data[1]) if len(data) > 1 else True
        if mask.lib_version:
            out[0:3 if has_patch else 2] = b"\0" * (3 if has_patch else 2)
        at = 3 if has_patch else 2
        if len(data) > at + 1 and mask.renames:
            name = data[at + 2:at + 2 + data[at + 1]].decode("latin-1")
            new = _rename(name, mask.renames).encode("latin-1")
            out = out[:at + 1] + bytes([len(new)]) + new + out[at + 2 + data[at + 1]:]
        return bytes(out)
    if kind == ACCEPT and data[:1] == b"\x01":
        fields = decode_unit(ACCEPT, data)
        version = bytes(len(fields["daemon_version"])) if mask.daemon_version else bytes(fields["daemon_version"])
        name = _rename(fields["private_group"], mask.renames).encode("latin-1")
        return b"\x01" + version + bytes([len(name)]) + name
    if kind != MESSAGE or len(data) < HEADER_LEN:
        return data
    order = message_byte_order(data)
    mtype, = struct.unpack_from(order + "I", data, 0)
    is_kill = bool(mtype & KILL_MESS)
    fields = decode_message(data)
    out = bytearray(data[:4]) + _mask_name_field(data[4:36], mask, is_kill) + data[36:HEADER_LEN]
    at = HEADER_LEN
    if mtype & REJECT_MESS:
        out += data[at:at + 4]
        at += 4
    for _ in range(fields["num_groups"]):
        out += _mask_name_field(data[at:at + GROUP_NAME_LEN], mask, is_kill)
        at += GROUP_NAME_LEN
    body = bytearray(data[at:])
    if "group_id" in fields:
        if mask.group_id_ids:
            body[0:8] = bytes(8)
        if mask.group_id_index:
            body[8:12] = bytes(4)
        for set_offset, names in zip(fields.get("vs_set_offsets", []), fields.get("vs_sets", [])):
            pos = 20 + set_offset + 4
            for k in range(len(names)):
                body[pos + 32 * k:pos + 32 * (k + 1)] = _mask_name_field(
                    bytes(body[pos + 32 * k:pos + 32 * (k + 1)]), mask, False)
    return bytes(out + body)


def compare_units(kind: str, expected: bytes, got: bytes, mask: Mask) -> Optional[str]:
    """None when equal after masking, else a readable account of the difference."""
    want, have = mask_unit(kind, expected, mask), mask_unit(kind, got, mask)
    if want == have:
        return None
    first = next((k for k in range(min(len(want), len(have))) if want[k] != have[k]), min(len(want), len(have)))
    return (f"differs at byte {first} (masked: {mask.describe()})\n"
            f"expected: {describe(kind, expected)}\n"
            f"got:      {describe(kind, got)}")
