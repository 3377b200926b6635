#!/usr/bin/env python3
"""calc_server.py: one server of the fault-tolerant calculator cluster.

Every server multicasts a heartbeat with its index to the server group every tick and keeps a
state for every index (itself included): ACTIVE, AWAITING_CONFIRMATION, UNRESPONSIVE,
DISCONNECTED. Clients multicast arithmetic expressions to the client group; the server with the
lowest index that is fit to answer (ACTIVE or AWAITING_CONFIRMATION) answers by unicast.
Kill it and the next one takes over. (After seed 000: Dantas & Alves, UFPI 2020.)

    python3 calc_server.py 1                 # server 1 on this machine (loopback)
    python3 calc_server.py --demo 3          # three servers on this machine, to kill one by one
    python3 calc_server.py 2 --iface 10.1.2.3 --cluster team7    # on a lab machine
    python3 calc_server.py --new-key calc.key    # a key; then --key calc.key on every server
                                                 # and client: forged packets are refused

Module map, in the order a datagram meets it: decode (wire format, with the HMAC tag when
there is a key) -> CalcServer.datagram (replays refused; with a key, a process's heartbeats
believed only once one echoes our incarnation) -> HeartbeatTracker (states) or the expression
language (parse, evaluate) -> Output -> serve (the I/O loop) -> Show.
"""
from __future__ import annotations

import argparse
import collections
import hashlib
import hmac
import ipaddress
import os
import random
import selectors
import signal
import socket
import struct
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Deque, Dict, List, NamedTuple, Optional, Tuple, Union

try:
    import rich
    import rich.box
    from rich.console import Console
    from rich.table import Table
except ImportError:  # the tools still run, in plain text, where rich is missing
    rich = None

# ============================================================================================
# Constants
# ============================================================================================

#: Defaults shared with calc_client.py and the lab guide. Administratively scoped groups
#: (239.255.0.0/16) never leave a site; TTL 1 keeps them on the local LAN anyway.
DEFAULT_IFACE = "127.0.0.1"
DEFAULT_CLUSTER = "calc"
DEFAULT_SERVER_GROUP = "239.255.67.1:46701"
DEFAULT_CLIENT_GROUP = "239.255.67.2:46702"
DEFAULT_HEARTBEAT_S = 1.0          # the seed: a heartbeat every second
DEFAULT_STATUS_EVERY_S = 20.0      # the seed: the table of all servers every 20 s
DEFAULT_MAX_SERVERS = 5            # the seed: an index in (0, 5]
MAX_SERVERS_LIMIT = 64             # one byte on the wire would allow 255; a lab never needs more

#: Thresholds in own ticks without a heartbeat from an index (the seed's TTL). The seed:
#: "a server not heard from for more than 2 ticks is Unresponsive", so 3 missed ticks.
DEFAULT_AWAITING_AFTER_TICKS = 2
DEFAULT_UNRESPONSIVE_AFTER_TICKS = 3
DEFAULT_DISCONNECTED_AFTER_TICKS = 10
#: A new server listens this many ticks before it answers, so that it knows who is alive
#: before it decides it is the lowest fit index (otherwise every restart doubles answers).
#: The warm-up ends the jitter grace (below) after that tick: a heartbeat due just before it
#: may arrive just after it, and then the new server would not know of that index.
DEFAULT_WARMUP_TICKS = 1
#: Phase jitter is not silence. Two servers' ticks run on two clocks, so a heartbeat that
#: usually arrives just before our tick sometimes arrives just after it, and that tick seems
#: missed although nothing was late by more than a few milliseconds. An own tick that comes
#: less than this fraction of a tick after the index's last heartbeat is therefore not
#: counted as missed (states still slide only by our own ticks). The price: detection may
#: take this much of a tick longer. 0 is the seed's plain count.
DEFAULT_JITTER_GRACE = 0.2

MAGIC = b"CaLc"
VERSION = 1
MAX_EXPR_CHARS = 256               # the language's stated length limit
MAX_TEXT_BYTES = 4 * MAX_EXPR_CHARS   # expression or answer text: any 256 characters of UTF-8
MAX_CLUSTER_BYTES = 32
TAG_BYTES = 32                     # HMAC-SHA256
MAX_DATAGRAM_BYTES = 1100 + TAG_BYTES   # header + longest name + body + text + tag
KEY_BYTES = 32                     # what --new-key writes
MIN_KEY_BYTES = 16                 # what --key accepts: shorter keys can be guessed
MAX_NESTING = 32                   # parentheses and unary minus, nested
MAX_HELD_REQUESTS = 512            # requests remembered for a takeover (see CalcServer)
#: Replay refusal memory. A request (id, attempt) is answered once; at the benchmark's 50
#: requests/s this remembers 200 s. (index, incarnation) -> newest heartbeat seq.
MAX_SEEN_REQUESTS = 10000
MAX_INCARNATIONS_REMEMBERED = 256
MAX_CONFLICTS_REMEMBERED = 64      # pairs of incarnations claiming one index, reported once
#: With a key, a keyed heartbeat echoes the incarnations its sender heard within the last
#: ECHO_WINDOW_TICKS of its own ticks (newest first, at most MAX_ECHOED): the freshness proof
#: a server asks of a process it has not believed yet (CalcServer says why).
ECHO_WINDOW_TICKS = 2
MAX_ECHOED = 128                   # 4 bytes each; a cluster has at most 64 indexes
#: Heartbeats of one process refused for want of our echo before the log says so. A genuine
#: process started before us sends one or two of them (before it heard us), never three.
UNCONFIRMED_NOTE_AFTER = 3
MAX_NOTES_PER_TICK = 20            # never flood the terminal

ACTIVE = "ACTIVE"
AWAITING_CONFIRMATION = "AWAITING_CONFIRMATION"
UNRESPONSIVE = "UNRESPONSIVE"
DISCONNECTED = "DISCONNECTED"
STATES = (ACTIVE, AWAITING_CONFIRMATION, UNRESPONSIVE, DISCONNECTED)
#: The seed: Active and Awaiting confirmation may answer; Unresponsive may not.
FIT_STATES = (ACTIVE, AWAITING_CONFIRMATION)

#: Destination of a send that goes to the server group (heartbeats); answers go to an address.
TO_SERVER_GROUP = "server-group"


# ============================================================================================
# Wire format
# ============================================================================================
# Every datagram: magic "CaLc" (4 bytes), version (1), kind (1), cluster name length (1), the
# cluster name (UTF-8, 1..32 bytes), then a body that depends on the kind. Big-endian, sizes
# exact: a datagram one byte too short or too long is rejected, never guessed at.
# With a key (--key) the kind has its top bit set and the datagram ends in a 32-byte
# HMAC-SHA256 tag over everything before it: header, cluster name and body. The bit says a
# tag is there, so that a server with a key and one without each name the other's mistake.
# A keyed heartbeat's body goes on after the fixed part: a count (1 byte), then that many
# incarnations (4 bytes each) its sender heard lately, its echoes. Without a key the body
# stays the fixed part: an echo anyone can forge would prove nothing.

KIND_HEARTBEAT = 1   # server -> server group: index, incarnation, seq, answered count, flags
                     # (keyed: and the incarnations heard lately)
KIND_REQUEST = 2     # client -> client group: request id, attempt, expression
KIND_ANSWER = 3      # server -> client (unicast): request id, attempt, server index, ok, text
KIND_TAGGED = 0x80   # or-ed into the kind: the datagram ends in an HMAC tag

_HEADER = struct.Struct("!4sBBB")
_HEARTBEAT = struct.Struct("!BIIIB")
_INCARNATION = struct.Struct("!I")
FLAG_READY = 1       # the sender can answer: past its warm-up, and it hears itself
_REQUEST = struct.Struct("!QBH")
_ANSWER = struct.Struct("!QBBBH")


class Heartbeat(NamedTuple):
    index: int
    incarnation: int     # random per process start: tells a restarted server from the old one
    seq: int             # its own tick count: a replayed heartbeat is not newer
    answered: int        # requests this server has answered, for everyone's status table
    ready: bool = True   # False while the sender warms up or cannot hear itself
    echoes: Tuple[int, ...] = ()   # keyed only: incarnations the sender heard lately


class Request(NamedTuple):
    rid: int             # request id: the client's random 32 bits, then its sequence number
    attempt: int         # 1 for the first send, 2 for the first retry...; echoed in the answer
    expr: str


class Answer(NamedTuple):
    rid: int
    attempt: int
    server: int
    ok: bool
    text: str            # the result (repr of the Python value) or the error message


Message = Union[Heartbeat, Request, Answer]


class WireError(Exception):
    """A datagram we drop; `reason` is the short name it is counted under. `claimed` is what
    a datagram refused for its tag says, parsed but not believed (the client shows it)."""

    def __init__(self, reason: str, detail: str = "", claimed: Optional[Message] = None):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.claimed = claimed


def tag(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.sha256).digest()


def _encode(kind: int, cluster: str, body: bytes, key: Optional[bytes]) -> bytes:
    name = cluster.encode("utf-8")
    if not 1 <= len(name) <= MAX_CLUSTER_BYTES:
        raise ValueError(f"cluster name must be 1 to {MAX_CLUSTER_BYTES} bytes of UTF-8")
    if key is not None:
        kind |= KIND_TAGGED
    data = _HEADER.pack(MAGIC, VERSION, kind, len(name)) + name + body
    if key is not None:
        data += tag(key, data)
    if len(data) > MAX_DATAGRAM_BYTES:
        raise ValueError(f"datagram of {len(data)} bytes is over {MAX_DATAGRAM_BYTES}")
    return data


def _text_bytes(text: str) -> bytes:
    data = text.encode("utf-8")
    if len(data) > MAX_TEXT_BYTES:
        raise ValueError(f"text of {len(data)} bytes is over {MAX_TEXT_BYTES}")
    return data


def encode_heartbeat(cluster: str, hb: Heartbeat, key: Optional[bytes] = None) -> bytes:
    """The heartbeat's datagram; its echoes only with a key (the unkeyed format has none)."""
    body = _HEARTBEAT.pack(hb.index, hb.incarnation, hb.seq, hb.answered,
                           FLAG_READY if hb.ready else 0)
    if key is not None:
        if len(hb.echoes) > MAX_ECHOED:
            raise ValueError(f"{len(hb.echoes)} echoes is over {MAX_ECHOED}")
        body += bytes([len(hb.echoes)]) + b"".join(_INCARNATION.pack(i) for i in hb.echoes)
    return _encode(KIND_HEARTBEAT, cluster, body, key)


def encode_request(cluster: str, req: Request, key: Optional[bytes] = None) -> bytes:
    text = _text_bytes(req.expr)
    return _encode(KIND_REQUEST, cluster, _REQUEST.pack(req.rid, req.attempt, len(text)) + text,
                   key)


def encode_answer(cluster: str, ans: Answer, key: Optional[bytes] = None) -> bytes:
    text = _text_bytes(ans.text)
    head = _ANSWER.pack(ans.rid, ans.attempt, ans.server, 0 if ans.ok else 1, len(text))
    return _encode(KIND_ANSWER, cluster, head + text, key)


def decode(data: bytes, cluster: str, key: Optional[bytes] = None) -> Message:
    """The message in `data`, or WireError naming why it is not one of our cluster's.

    With a key, only a datagram whose tag is right is parsed and believed: "no-tag" (sent
    without a key), "bad-tag" (another key, a forgery, or cut short). Without one, a tagged
    datagram is "unexpected-tag": its sender has a key we lack."""
    if len(data) > MAX_DATAGRAM_BYTES:
        raise WireError("oversize", f"{len(data)} bytes")
    if len(data) < _HEADER.size or data[:4] != MAGIC:
        raise WireError("foreign", "no CaLc magic")
    _, version, kind, name_len = _HEADER.unpack_from(data)
    if version != VERSION:
        raise WireError("version", f"version {version}, we speak {VERSION}")
    body_at = _HEADER.size + name_len
    if len(data) < body_at:
        raise WireError("truncated", "in the cluster name")
    if data[_HEADER.size:body_at] != cluster.encode("utf-8"):
        raise WireError("other-cluster")
    tagged, kind = bool(kind & KIND_TAGGED), kind & ~KIND_TAGGED
    if tagged and key is None:
        raise WireError("unexpected-tag", "the sender uses --key and we have none",
                        _claim(kind, data[body_at:-TAG_BYTES], True))
    if key is not None and not tagged:
        raise WireError("no-tag", "the sender has no --key",
                        _claim(kind, data[body_at:], False))
    if tagged:
        signed, got = data[:-TAG_BYTES], data[-TAG_BYTES:]
        if len(signed) < body_at or not hmac.compare_digest(got, tag(key, signed)):
            raise WireError("bad-tag", "another key, a forgery, or cut short",
                            _claim(kind, data[body_at:-TAG_BYTES], True))
        data = signed
    return _body(kind, data[body_at:], tagged)


def _body(kind: int, body: bytes, tagged: bool) -> Message:
    if kind == KIND_HEARTBEAT:
        fixed = body[:_HEARTBEAT.size] if tagged else body
        index, incarnation, seq, answered, flags = _fixed(_HEARTBEAT, fixed)
        if flags & ~FLAG_READY:
            raise WireError("malformed", f"unknown heartbeat flags {flags:#x}")
        echoes = _echoes(body[_HEARTBEAT.size:]) if tagged else ()
        return Heartbeat(index, incarnation, seq, answered, bool(flags & FLAG_READY), echoes)
    if kind == KIND_REQUEST:
        rid, attempt, size = _head(_REQUEST, body)
        return Request(rid, attempt, _text(body[_REQUEST.size:], size))
    if kind == KIND_ANSWER:
        rid, attempt, server, status, size = _head(_ANSWER, body)
        if status > 1:
            raise WireError("malformed", f"answer status {status}")
        return Answer(rid, attempt, server, status == 0, _text(body[_ANSWER.size:], size))
    raise WireError("malformed", f"unknown kind {kind}")


def _claim(kind: int, body: bytes, tagged: bool) -> Optional[Message]:
    """What a refused datagram says, for the refusal's report only; None if unreadable."""
    try:
        return _body(kind, body, tagged)
    except WireError:
        return None


def _echoes(rest: bytes) -> Tuple[int, ...]:
    """A keyed heartbeat's echoes: a count, then that many incarnations."""
    if not rest:
        raise WireError("truncated", "a keyed heartbeat without its echo count")
    size = 1 + rest[0] * _INCARNATION.size
    if len(rest) < size:
        raise WireError("truncated", f"{rest[0]} echoes announced, {len(rest) - 1} bytes")
    if len(rest) > size:
        raise WireError("malformed", f"{len(rest) - size} bytes after the echoes")
    return tuple(i for (i,) in _INCARNATION.iter_unpack(rest[1:]))


def _fixed(shape: struct.Struct, body: bytes) -> tuple:
    if len(body) < shape.size:
        raise WireError("truncated", f"body of {len(body)} bytes, need {shape.size}")
    if len(body) > shape.size:
        raise WireError("malformed", f"{len(body) - shape.size} bytes after the body")
    return shape.unpack(body)


def _head(shape: struct.Struct, body: bytes) -> tuple:
    if len(body) < shape.size:
        raise WireError("truncated", f"body of {len(body)} bytes, need {shape.size}")
    return shape.unpack_from(body)


def _text(rest: bytes, size: int) -> str:
    if len(rest) < size:
        raise WireError("truncated", f"text of {len(rest)} bytes, announced {size}")
    if len(rest) > size:
        raise WireError("malformed", f"{len(rest) - size} bytes after the text")
    try:
        return rest.decode("utf-8")
    except UnicodeDecodeError:
        raise WireError("malformed", "text is not UTF-8") from None


# ============================================================================================
# Protocol core
# ============================================================================================

# ---- the expression language --------------------------------------------------------------
# expr   := term (('+' | '-') term)*          left associative
# term   := factor (('*' | '/') factor)*      left associative
# factor := '-' factor | NUMBER | '(' expr ')'
# NUMBER := digits ['.' digits] | '.' digits  (integers stay int, decimals are float)
# This is Python's own grammar restricted to these tokens, and evaluation applies Python's own
# operators to Python ints and floats, so the result is what Python gives for the same text
# (true division: 7/2 is 3.5). Results are formatted as Python's repr: 6, 3.5,
# 0.30000000000000004. One difference: Python refuses integers with leading zeros (007);
# we read them as 7. We parse the whole text before evaluating, as Python compiles before it
# runs: "1/0 + (" is a syntax error, not a division by zero.

class CalcError(Exception):
    """An error answer: a message that names the column (1-based) where it happened."""

    def __init__(self, message: str, column: Optional[int] = None):
        super().__init__(message)
        self.column = column


class _Token(NamedTuple):
    kind: str            # "num", "op" (+ - * /), "(", ")", "end"
    text: str
    column: int


class _Num(NamedTuple):
    value: Union[int, float]
    column: int


class _Neg(NamedTuple):
    operand: "Node"
    column: int


class _BinOp(NamedTuple):
    op: str
    left: "Node"
    right: "Node"
    column: int          # of the operator: where a division by zero is reported


Node = Union[_Num, _Neg, _BinOp]


def _describe(tok: _Token) -> str:
    return "the end" if tok.kind == "end" else repr(tok.text)


def tokenize(text: str) -> List[_Token]:
    tokens = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch in " \t":
            i += 1
        elif ch.isdigit() and ch.isascii() or ch == ".":
            j = i
            while j < len(text) and text[j].isascii() and text[j].isdigit():
                j += 1
            if j < len(text) and text[j] == ".":
                j += 1
                while j < len(text) and text[j].isascii() and text[j].isdigit():
                    j += 1
            if text[i:j] == ".":
                raise CalcError(f"a '.' without digits at column {i + 1}", i + 1)
            tokens.append(_Token("num", text[i:j], i + 1))
            i = j
        elif ch in "+-*/":
            tokens.append(_Token("op", ch, i + 1))
            i += 1
        elif ch in "()":
            tokens.append(_Token(ch, ch, i + 1))
            i += 1
        else:
            raise CalcError(f"unexpected character {ch!r} at column {i + 1}", i + 1)
    tokens.append(_Token("end", "", len(text) + 1))
    return tokens


class _Parser:
    """Recursive descent over the token list; depth counts '(' and unary '-' (MAX_NESTING)."""

    def __init__(self, tokens: List[_Token]):
        self.tokens = tokens
        self.at = 0
        self.depth = 0

    def peek(self) -> _Token:
        return self.tokens[self.at]

    def take(self) -> _Token:
        tok = self.tokens[self.at]
        self.at += 1
        return tok

    def expr(self) -> Node:
        node = self.term()
        while self.peek().kind == "op" and self.peek().text in "+-":
            op = self.take()
            node = _BinOp(op.text, node, self.term(), op.column)
        return node

    def term(self) -> Node:
        node = self.factor()
        while self.peek().kind == "op" and self.peek().text in "*/":
            op = self.take()
            node = _BinOp(op.text, node, self.factor(), op.column)
        return node

    def factor(self) -> Node:
        tok = self.take()
        if tok.kind == "num":
            return _Num(float(tok.text) if "." in tok.text else int(tok.text), tok.column)
        if tok.kind == "op" and tok.text == "-":
            self.enter(tok)
            node = _Neg(self.factor(), tok.column)
            self.depth -= 1
            return node
        if tok.kind == "(":
            self.enter(tok)
            node = self.expr()
            close = self.take()
            if close.kind != ")":
                raise CalcError(f"expected ')' at column {close.column} to close the '(' at "
                                f"column {tok.column}, found {_describe(close)}", close.column)
            self.depth -= 1
            return node
        raise CalcError(f"expected a number, '(' or '-' at column {tok.column}, "
                        f"found {_describe(tok)}", tok.column)

    def enter(self, tok: _Token) -> None:
        self.depth += 1
        if self.depth > MAX_NESTING:
            raise CalcError(f"nested more than {MAX_NESTING} levels deep at column {tok.column}",
                            tok.column)


def parse(text: str) -> Node:
    """The syntax tree of `text`, or CalcError (length, characters, syntax, nesting)."""
    if len(text) > MAX_EXPR_CHARS:
        raise CalcError(f"expression of {len(text)} characters is over the limit of "
                        f"{MAX_EXPR_CHARS}")
    if not text.strip():
        raise CalcError("empty expression")
    parser = _Parser(tokenize(text))
    node = parser.expr()
    rest = parser.peek()
    if rest.kind != "end":
        what = "unmatched ')'" if rest.kind == ")" else f"expected an operator, found {rest.text!r}"
        raise CalcError(f"{what} at column {rest.column}", rest.column)
    return node


def evaluate(node: Node) -> Union[int, float]:
    """Python's arithmetic on the tree; ZeroDivisionError and OverflowError become CalcError."""
    if isinstance(node, _Num):
        return node.value
    if isinstance(node, _Neg):
        return -evaluate(node.operand)
    left, right = evaluate(node.left), evaluate(node.right)
    try:
        if node.op == "+":
            return left + right
        if node.op == "-":
            return left - right
        if node.op == "*":
            return left * right
        return left / right
    except ZeroDivisionError:
        raise CalcError(f"division by zero at column {node.column}", node.column) from None
    except OverflowError:
        raise CalcError(f"number too large for a float at column {node.column}",
                        node.column) from None


def calculate(text: str) -> Tuple[bool, str]:
    """(True, result) or (False, error message): what every server answers for `text`."""
    try:
        return True, repr(evaluate(parse(text)))
    except CalcError as exc:
        return False, str(exc)


# ---- the heartbeat tracker (seed section 3) -----------------------------------------------

@dataclass(frozen=True)
class Thresholds:
    """Own ticks without a heartbeat after which an index changes state (the seed's TTL)."""
    awaiting_after_ticks: int = DEFAULT_AWAITING_AFTER_TICKS
    unresponsive_after_ticks: int = DEFAULT_UNRESPONSIVE_AFTER_TICKS
    disconnected_after_ticks: int = DEFAULT_DISCONNECTED_AFTER_TICKS

    def check(self) -> None:
        if not 1 <= self.awaiting_after_ticks < self.unresponsive_after_ticks \
                < self.disconnected_after_ticks <= 1000:
            raise ValueError("thresholds must grow: 1 <= awaiting < unresponsive < "
                             "disconnected <= 1000 ticks")


class StateChange(NamedTuple):
    at: float
    index: int
    old: str
    new: str
    reason: str


class Note(NamedTuple):
    """Something else a student should see in the log (answering changes, conflicts)."""
    at: float
    text: str


@dataclass
class PeerState:
    """What one server believes about one index (itself included)."""
    index: int
    state: str = DISCONNECTED
    #: The seed's TTL: set full by a heartbeat, decremented by each of our own ticks.
    ttl_ticks: int = 0
    last_heard_at: Optional[float] = None
    address: str = ""
    answered: Optional[int] = None      # as the index's own heartbeats report it
    incarnation: Optional[int] = None
    ready: bool = False                 # its last heartbeat said it can answer
    #: Own ticks since its heartbeats began to say "not ready" (a server warming up says so
    #: for about one tick; one that cannot hear itself says so for ever).
    unready_ticks: int = 0


class HeartbeatTracker:
    """The state of every index, driven by heartbeats heard and by our own ticks.

    A heartbeat from index i makes i ACTIVE and fills its TTL. Each of our own ticks takes one
    from every TTL; the ticks missed since the last heartbeat decide the state. All indexes
    start DISCONNECTED. Every change goes through one enter function and carries its reason.
    An own tick less than grace_s after an index's last heartbeat does not count as missed
    (DEFAULT_JITTER_GRACE says why).
    """

    def __init__(self, max_servers: int, thresholds: Thresholds = Thresholds(),
                 grace_s: float = 0.0):
        thresholds.check()
        self.thresholds = thresholds
        self.grace_s = grace_s
        self.peers = {i: PeerState(i) for i in range(1, max_servers + 1)}
        self.changes_into = collections.Counter()   # state -> how many times entered

    def full_ttl(self) -> int:
        return self.thresholds.disconnected_after_ticks

    def missed_ticks(self, index: int) -> int:
        return self.full_ttl() - self.peers[index].ttl_ticks

    def state(self, index: int) -> str:
        return self.peers[index].state

    def is_fit(self, index: int) -> bool:
        return self.peers[index].state in FIT_STATES

    def heartbeat(self, hb: Heartbeat, address: str, now: float) -> List[StateChange]:
        peer = self.peers[hb.index]
        if hb.ready or peer.ready or hb.incarnation != peer.incarnation:
            peer.unready_ticks = 0
        peer.ttl_ticks = self.full_ttl()
        peer.last_heard_at = now
        peer.address = address
        peer.answered = hb.answered
        peer.incarnation = hb.incarnation
        peer.ready = hb.ready
        if peer.state == ACTIVE:
            return []
        return [self._enter(peer, ACTIVE, "heartbeat received", now)]

    def own_tick(self, now: float) -> List[StateChange]:
        changes = []
        for peer in self.peers.values():
            if peer.ttl_ticks == 0:
                continue          # never heard, or already DISCONNECTED: nothing to count
            if not peer.ready:
                peer.unready_ticks += 1
            if now - peer.last_heard_at < self.grace_s:
                continue          # its heartbeat came just before this tick: on time
            peer.ttl_ticks -= 1
            change = self._slide(peer, now)
            if change:
                changes.append(change)
        return changes

    def _slide(self, peer: PeerState, now: float) -> Optional[StateChange]:
        missed = self.missed_ticks(peer.index)
        t = self.thresholds
        if missed >= t.disconnected_after_ticks:
            new, why = DISCONNECTED, f"gone: {missed} ticks without a heartbeat"
        elif missed >= t.unresponsive_after_ticks:
            new, why = UNRESPONSIVE, (f"{missed} ticks without a heartbeat (more than "
                                      f"{t.unresponsive_after_ticks - 1}): may not answer")
        elif missed >= t.awaiting_after_ticks:
            new, why = AWAITING_CONFIRMATION, (f"{missed} ticks without a heartbeat: late, "
                                               f"still fit to answer")
        else:
            return None
        if new == peer.state:
            return None
        return self._enter(peer, new, why, now)

    # One enter function per state, so that every change is counted and has a reason.
    def _enter(self, peer: PeerState, new: str, reason: str, now: float) -> StateChange:
        enter = {ACTIVE: self._enter_active, AWAITING_CONFIRMATION: self._enter_awaiting,
                 UNRESPONSIVE: self._enter_unresponsive, DISCONNECTED: self._enter_disconnected}
        return enter[new](peer, reason, now)

    def _change(self, peer: PeerState, new: str, reason: str, now: float) -> StateChange:
        old, peer.state = peer.state, new
        self.changes_into[new] += 1
        return StateChange(now, peer.index, old, new, reason)

    def _enter_active(self, peer: PeerState, reason: str, now: float) -> StateChange:
        return self._change(peer, ACTIVE, reason, now)

    def _enter_awaiting(self, peer: PeerState, reason: str, now: float) -> StateChange:
        return self._change(peer, AWAITING_CONFIRMATION, reason, now)

    def _enter_unresponsive(self, peer: PeerState, reason: str, now: float) -> StateChange:
        return self._change(peer, UNRESPONSIVE, reason, now)

    def _enter_disconnected(self, peer: PeerState, reason: str, now: float) -> StateChange:
        peer.ttl_ticks = 0
        return self._change(peer, DISCONNECTED, reason, now)


# ---- the server -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Settings:
    heartbeat_s: float = DEFAULT_HEARTBEAT_S
    max_servers: int = DEFAULT_MAX_SERVERS
    thresholds: Thresholds = Thresholds()
    warmup_ticks: int = DEFAULT_WARMUP_TICKS
    jitter_grace: float = DEFAULT_JITTER_GRACE     # a fraction of heartbeat_s

    @property
    def grace_s(self) -> float:
        return self.jitter_grace * self.heartbeat_s


class Send(NamedTuple):
    data: bytes
    to: Union[str, Tuple[str, int]]      # TO_SERVER_GROUP or a client's (address, port)


@dataclass
class Output:
    sends: List[Send] = field(default_factory=list)
    events: List[Union[StateChange, Note]] = field(default_factory=list)

    def extend(self, other: "Output") -> "Output":
        self.sends.extend(other.sends)
        self.events.extend(other.events)
        return self


class _Held(NamedTuple):
    request: Request
    src: Tuple[str, int]
    seen_at: float
    expected: Optional[int]     # the index we expected to answer it (None: nobody was fit)


@dataclass
class Snapshot:
    """Everything the status table shows, copied out of the core at one moment."""
    at: float
    index: int
    cluster: str
    answering: bool
    rows: List[Tuple[int, str, Optional[float], Optional[int], str]]
    requests_seen: int
    requests_answered: int
    dropped: Dict[str, int]
    changes_into: Dict[str, int]       # state -> how many times some index entered it
    keyed: bool = False
    conflicts: List["Conflict"] = field(default_factory=list)   # heard lately


class Claim(NamedTuple):
    """One process's heartbeats for an index: when last heard, and from where."""
    at: float
    address: str


class Conflict(NamedTuple):
    """Two incarnations of one index heard alternately: two processes claim the index."""
    index: int
    first: Tuple[int, str]       # (incarnation, address) heard before
    second: Tuple[int, str]      # the one whose heartbeat showed the conflict
    last_at: float


class CalcServer:
    """One calculator server, sans I/O: feed it datagrams and ticks, send what it returns.

    The answering rule (seed section 4): answer a request only when we are fit ourselves and
    no lower index is fit. A request we do not answer is held for a while, with the index we
    expected to answer it; when that index is found unfit and we become the answerer, we answer
    the requests that arrived after its last heartbeat: a client waiting on a dead server then
    gets its answer as soon as the failure is noticed, not one retry later. Some of those were
    answered already by the dead server just before it died; the client drops the duplicate.

    Replays are refused (with a key they are all a forger without it can send): a heartbeat
    only if it is newer than the last one of its index and incarnation, a request once per
    (request id, attempt).

    That rule alone refuses only what we heard before: a server started after a recording was
    made would believe a dead server's recorded heartbeats. So with a key a heartbeat must
    also be fresh, and freshness is proved by an echo, not by a clock: every keyed heartbeat
    echoes the incarnations its sender heard lately, and we believe a process (index,
    incarnation) we have not believed yet only once one of its heartbeats echoes our own
    incarnation. Ours is random and was first sent when we started, so that heartbeat was
    made after we started, by a process holding the key; no recording made before can hold
    it. After that its heartbeats need only be newer. We chose the echo over timestamps
    because it leaves no window (a timestamp check would believe a recording younger than
    the clock tolerance) and needs no clocks set alike; it costs nothing in time, since the
    heartbeats go round every tick anyway. A process that does not hear us (its --iface, a
    firewall) is never believed either, and the log says so once.
    """

    def __init__(self, index: int, cluster: str = DEFAULT_CLUSTER,
                 settings: Settings = Settings(), rng: Optional[random.Random] = None,
                 key: Optional[bytes] = None):
        if not 1 <= index <= settings.max_servers:
            raise ValueError(f"index must be in 1..{settings.max_servers}")
        self.index = index
        self.cluster = cluster
        self.settings = settings
        self.key = key
        self.tracker = HeartbeatTracker(settings.max_servers, settings.thresholds,
                                        settings.grace_s)
        self.incarnation = (rng or random.Random()).getrandbits(32)
        self.next_tick_at: Optional[float] = None      # None: not started
        self.warm_at: Optional[float] = None           # when the warm-up ends
        self.warm = False
        self.ticks = 0
        self.answering = False
        self.held: Deque[_Held] = collections.deque(maxlen=MAX_HELD_REQUESTS)
        self.requests_seen = 0
        self.requests_answered = 0
        self.replayed = 0
        self.dropped = collections.Counter()           # reason -> datagrams dropped
        #: (index, incarnation) -> newest heartbeat seq, to refuse replayed heartbeats
        self.newest_seq: "collections.OrderedDict[Tuple[int, int], int]" = \
            collections.OrderedDict()
        self.seen_requests: "collections.OrderedDict[Tuple[int, int], None]" = \
            collections.OrderedDict()
        #: index -> incarnation -> its last heartbeat, to see two processes claim one index
        self.claims: Dict[int, Dict[int, Claim]] = collections.defaultdict(dict)
        self.conflicts: "collections.OrderedDict[Tuple[int, frozenset], Conflict]" = \
            collections.OrderedDict()
        #: With a key: incarnation -> when we last heard it, oldest first (our echoes), and
        #: incarnation -> heartbeats refused for want of our echo (logged once).
        self.heard_at: "collections.OrderedDict[int, float]" = collections.OrderedDict()
        self.unconfirmed: "collections.OrderedDict[int, int]" = collections.OrderedDict()

    # ---- inputs -------------------------------------------------------------------------
    def tick(self, now: float) -> Output:
        """Call at (or after) next_deadline(); the first call starts the server."""
        out = Output()
        if self.next_tick_at is not None and now < self.next_tick_at:
            if not self.warm and now >= self.warm_at:
                return self._end_warmup(now)
            return out
        if self.warm_at is None:
            self.warm_at = now + self.settings.warmup_ticks * self.settings.heartbeat_s \
                + self.settings.grace_s
        self.ticks += 1
        # Catch up without a burst: a late loop sends one heartbeat, not the ones it missed.
        base = now if self.next_tick_at is None else self.next_tick_at
        self.next_tick_at = base + self.settings.heartbeat_s
        if self.next_tick_at <= now:
            self.next_tick_at = now + self.settings.heartbeat_s
        out.events.extend(self.tracker.own_tick(now))
        if not self.warm and now >= self.warm_at:
            self.warm = True
        hb = Heartbeat(self.index, self.incarnation, self.ticks % 2**32,
                       self.requests_answered % 2**32, self.able_to_answer(),
                       self.echoes(now) if self.key is not None else ())
        out.sends.append(Send(encode_heartbeat(self.cluster, hb, self.key), TO_SERVER_GROUP))
        return out.extend(self._review_answering(now))

    def datagram(self, data: bytes, src: Tuple[str, int], now: float) -> Output:
        try:
            msg = decode(data, self.cluster, self.key)
        except WireError as exc:
            self.dropped[exc.reason] += 1
            return Output()
        if isinstance(msg, Heartbeat):
            return self._on_heartbeat(msg, src, now)
        if isinstance(msg, Request):
            return self._on_request(msg, src, now)
        self.dropped["unexpected-answer"] += 1      # answers go to clients, not to us
        return Output()

    def next_deadline(self) -> float:
        if self.next_tick_at is None:
            return float("-inf")
        if not self.warm:
            return min(self.next_tick_at, self.warm_at)
        return self.next_tick_at

    def _end_warmup(self, now: float) -> Output:
        """The warm-up is over between two ticks: answer now if we are the one."""
        self.warm = True
        return self._review_answering(now)

    # ---- heartbeats ---------------------------------------------------------------------
    def _on_heartbeat(self, hb: Heartbeat, src: Tuple[str, int], now: float) -> Output:
        if not 1 <= hb.index <= self.settings.max_servers:
            self.dropped["index-out-of-range"] += 1
            return Output()
        if self.key is not None:
            self._hear(hb.incarnation, now)
            if not self._confirmed(hb):
                return self._refuse_unconfirmed(hb, src, now)
        if not self._newer(hb):
            self.dropped["replayed-heartbeat"] += 1
            return Output()
        out = Output(events=self._check_claims(hb, f"{src[0]}:{src[1]}", now))
        if hb.index == self.index and hb.incarnation != self.incarnation:
            # Not our own heartbeat: it must not tell us that we hear ourselves.
            self.dropped["our-index-elsewhere"] += 1
            return out
        out.events.extend(self.tracker.heartbeat(hb, f"{src[0]}:{src[1]}", now))
        return out.extend(self._review_answering(now))

    def _hear(self, incarnation: int, now: float) -> None:
        """Remember a keyed heartbeat's incarnation, to echo it. A replay may make us echo a
        dead process: harmless, since only that process could use the echo."""
        if incarnation == self.incarnation:
            return
        self.heard_at[incarnation] = now
        self.heard_at.move_to_end(incarnation)
        while len(self.heard_at) > MAX_INCARNATIONS_REMEMBERED:
            self.heard_at.popitem(last=False)

    def echoes(self, now: float) -> Tuple[int, ...]:
        """The incarnations heard within the echo window, newest first (the freshness proof
        our heartbeats give to every server; CalcServer says why)."""
        window_s = ECHO_WINDOW_TICKS * self.settings.heartbeat_s
        while self.heard_at and now - next(iter(self.heard_at.values())) > window_s:
            self.heard_at.popitem(last=False)
        return tuple(reversed(self.heard_at))[:MAX_ECHOED]

    def _confirmed(self, hb: Heartbeat) -> bool:
        """Believed already (we keep its newest seq), ourselves, or echoing us now."""
        return ((hb.index, hb.incarnation) in self.newest_seq
                or (hb.index, hb.incarnation) == (self.index, self.incarnation)
                or self.incarnation in hb.echoes)

    def _refuse_unconfirmed(self, hb: Heartbeat, src: Tuple[str, int], now: float) -> Output:
        self.dropped["unconfirmed-heartbeat"] += 1
        count = self.unconfirmed.pop(hb.incarnation, 0) + 1
        self.unconfirmed[hb.incarnation] = count
        while len(self.unconfirmed) > MAX_INCARNATIONS_REMEMBERED:
            self.unconfirmed.popitem(last=False)
        if count != UNCONFIRMED_NOTE_AFTER:
            return Output()
        return Output(events=[Note(now, unconfirmed_text(hb, f"{src[0]}:{src[1]}",
                                                         self.incarnation))])

    def _newer(self, hb: Heartbeat) -> bool:
        """Is hb newer than every heartbeat heard from its index and incarnation? (Remembers
        it.) A genuine heartbeat delivered twice or out of order is refused too: harmless."""
        who = (hb.index, hb.incarnation)
        newest = self.newest_seq.get(who)
        if newest is not None and hb.seq <= newest:
            return False
        self.newest_seq[who] = hb.seq
        self.newest_seq.move_to_end(who)
        while len(self.newest_seq) > MAX_INCARNATIONS_REMEMBERED:
            self.newest_seq.popitem(last=False)
        return True

    def _check_claims(self, hb: Heartbeat, address: str, now: float) -> List[Note]:
        """Two processes claim one index when their heartbeats alternate: since this
        incarnation's previous heartbeat another one was heard, within one heartbeat period.
        (A restart does not alternate: the old process stops before the new one starts.)
        For our own index, any other incarnation is a second process: we are alive."""
        claims = self.claims[hb.index]
        before = claims.get(hb.incarnation)
        if hb.index == self.index and hb.incarnation != self.incarnation:
            before = claims.get(self.incarnation, before)
            rivals = [(self.incarnation, c) for i, c in claims.items() if i == self.incarnation]
        else:
            rivals = [(inc, c) for inc, c in claims.items() if inc != hb.incarnation and
                      before is not None and c.at > before.at and
                      now - c.at <= self.settings.heartbeat_s]
        claims[hb.incarnation] = Claim(now, address)
        if len(claims) > 4:       # old incarnations of the index (restarts): forget the oldest
            del claims[min(claims, key=lambda inc: claims[inc].at)]
        notes = []
        for inc, claim in rivals:
            pair = (hb.index, frozenset((inc, hb.incarnation)))
            seen = pair in self.conflicts
            self.conflicts[pair] = Conflict(hb.index, (inc, claim.address),
                                            (hb.incarnation, address), now)
            self.conflicts.move_to_end(pair)
            while len(self.conflicts) > MAX_CONFLICTS_REMEMBERED:
                self.conflicts.popitem(last=False)
            if not seen:
                notes.append(Note(now, conflict_text(self.conflicts[pair], self.cluster)))
        return notes

    # ---- requests -----------------------------------------------------------------------
    def _on_request(self, req: Request, src: Tuple[str, int], now: float) -> Output:
        if (req.rid, req.attempt) in self.seen_requests:
            self.dropped["replayed-request"] += 1
            return Output()
        self.seen_requests[(req.rid, req.attempt)] = None
        while len(self.seen_requests) > MAX_SEEN_REQUESTS:
            self.seen_requests.popitem(last=False)
        self.requests_seen += 1
        if self.answering:
            return Output(sends=[self._answer(req, src)])
        self.held.append(_Held(req, src, now, self.lowest_fit_other()))
        return Output()

    def _answer(self, req: Request, src: Tuple[str, int]) -> Send:
        ok, text = calculate(req.expr)
        if len(text.encode("utf-8")) > MAX_TEXT_BYTES:    # cannot happen within the length
            ok, text = False, "result too long to send"  # limit; a limit all the same
        self.requests_answered += 1
        data = encode_answer(self.cluster, Answer(req.rid, req.attempt, self.index, ok, text),
                             self.key)
        return Send(data, src)

    # ---- who answers --------------------------------------------------------------------
    def can_answer(self, index: int) -> bool:
        """Another index answers when it is fit (the seed's rule) and its heartbeats say it
        is able to: a restarted lower index does not silence us before it answers itself
        (so a restart leaves no gap), and a server that cannot hear the group (so cannot
        hear requests either) does not silence anybody."""
        return self.tracker.is_fit(index) and self.tracker.peers[index].ready

    def warming_up(self, index: int) -> bool:
        """A fit index whose heartbeats have said "not ready" for no longer than a warm-up
        (with its grace, and a tick of phase): at a cold start, it is about to answer."""
        peer = self.tracker.peers[index]
        return (self.tracker.is_fit(index) and not peer.ready
                and peer.unready_ticks <= self.settings.warmup_ticks + 2)

    def able_to_answer(self) -> bool:
        """What our heartbeats say: past the warm-up, and we hear our own heartbeats."""
        return self.warm and self.tracker.is_fit(self.index)

    def lowest_fit_other(self) -> Optional[int]:
        for i in sorted(self.tracker.peers):
            if i != self.index and self.can_answer(i):
                return i
        return None

    def should_answer(self) -> bool:
        if not self.able_to_answer():
            return False   # warming up, or we cannot hear ourselves: our link is broken
        lower = range(1, self.index)
        if not self.answering and any(self.warming_up(i) for i in lower):
            return False   # a cold start: do not answer for the moment before it can
        return all(not self.can_answer(i) for i in lower)

    def _review_answering(self, now: float) -> Output:
        now_answering = self.should_answer()
        if now_answering == self.answering:
            return Output()
        self.answering = now_answering
        if not now_answering:
            lower = [i for i in range(1, self.index) if self.can_answer(i)]
            why = (f"index {lower[0]} is {self.tracker.state(lower[0])}" if lower
                   else f"my own state is {self.tracker.state(self.index)}")
            return Output(events=[Note(now, f"stopped answering: {why}")])
        out = Output(events=[Note(now, "now answering requests: no lower index is fit")])
        return out.extend(self._take_over(now))

    def _take_over(self, now: float) -> Output:
        """Answer held requests whose expected answerer is no longer fit (see class doc)."""
        out = Output()
        window_s = (self.settings.thresholds.disconnected_after_ticks + 1) * self.settings.heartbeat_s
        latest = collections.OrderedDict()     # a client's retries: answer its request once
        for held in self.held:
            latest[(held.src, held.request.rid)] = held
        # Another index able to answer now is a higher one (else we would not take over): it
        # was answering the requests that came while we warmed up, when nobody was expected.
        higher_answering = self.lowest_fit_other() is not None
        for held in latest.values():
            if now - held.seen_at > window_s:
                continue
            expected = held.expected
            if expected is None and higher_answering:
                continue
            if expected is not None:
                if self.can_answer(expected):
                    continue
                last = self.tracker.peers[expected].last_heard_at
                if last is not None and held.seen_at < last:
                    continue        # it was alive after this request arrived: it answered
            out.sends.append(self._answer(held.request, held.src))
            self.replayed += 1
        if out.sends:
            out.events.append(Note(now, f"answered {len(out.sends)} held-back requests that "
                                        f"may have gone unanswered"))
        self.held.clear()
        return out

    # ---- status -------------------------------------------------------------------------
    def snapshot(self, now: float) -> Snapshot:
        rows = []
        for i, peer in sorted(self.tracker.peers.items()):
            since = None if peer.last_heard_at is None else max(0.0, now - peer.last_heard_at)
            answered = self.requests_answered if i == self.index else peer.answered
            rows.append((i, peer.state, since, answered, peer.address))
        recent_s = self.settings.thresholds.disconnected_after_ticks * self.settings.heartbeat_s
        conflicts = [c for c in self.conflicts.values() if now - c.last_at <= recent_s]
        return Snapshot(now, self.index, self.cluster, self.answering, rows,
                        self.requests_seen, self.requests_answered, dict(self.dropped),
                        dict(self.tracker.changes_into), self.key is not None, conflicts)


def unconfirmed_text(hb: Heartbeat, address: str, ours: int) -> str:
    return (f"index {hb.index}: heartbeats from {address} (incarnation {hb.incarnation:08x}) "
            f"do not echo ours ({ours:08x}), so they may be older than this server: ignored "
            f"until one does (a replayed recording, or that process does not hear us: its "
            f"--iface or a firewall); counted as unconfirmed-heartbeat")


def conflict_text(conflict: Conflict, cluster: str) -> str:
    (inc_a, addr_a), (inc_b, addr_b) = conflict.first, conflict.second
    return (f"two processes claim index {conflict.index} in cluster {cluster!r}: {addr_a} "
            f"(incarnation {inc_a:08x}) and {addr_b} (incarnation {inc_b:08x}); give every "
            f"server its own index (if nobody started a second one, someone forges heartbeats: "
            f"use --key)")


# ============================================================================================
# I/O loop
# ============================================================================================

def parse_group(text: str) -> Tuple[str, int]:
    """ADDR:PORT of a multicast group, or ValueError with a message for the user."""
    addr, sep, port = text.rpartition(":")
    if not sep:
        raise ValueError(f"{text!r}: expected ADDR:PORT, for example {DEFAULT_SERVER_GROUP}")
    try:
        ip = ipaddress.IPv4Address(addr)
        number = int(port)
    except ValueError:
        raise ValueError(f"{text!r}: expected ADDR:PORT, for example "
                         f"{DEFAULT_SERVER_GROUP}") from None
    if not ip.is_multicast:
        raise ValueError(f"{addr} is not a multicast address (224.0.0.0 to 239.255.255.255)")
    if not 1 <= number <= 65535:
        raise ValueError(f"port {number} is not in 1..65535")
    return str(ip), number


KEY_FILE_HEADER = ("# calculator cluster key (calc_server.py --new-key): give this file to every "
                   "server and client of the cluster with --key; keep it secret\n")


def write_new_key(path: str) -> None:
    """A new random key in a new file readable by its owner only; never overwrites."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(KEY_FILE_HEADER + os.urandom(KEY_BYTES).hex() + "\n")


def load_key(path: str) -> bytes:
    """The key in a --new-key file, or ValueError saying what is wrong with the file."""
    try:
        with open(path) as f:
            lines = [line.strip() for line in f if not line.lstrip().startswith("#")]
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read key file {path}: {exc}") from None
    try:
        key = bytes.fromhex("".join(lines))
    except ValueError:
        key = b""
    if len(key) < MIN_KEY_BYTES:
        raise ValueError(f"{path} holds no key of at least {MIN_KEY_BYTES} bytes in hex; make "
                         f"one with: python3 calc_server.py --new-key FILE")
    return key


def key_fingerprint(key: bytes) -> str:
    """A short name for a key, so that students can compare keys without showing them."""
    return hashlib.sha256(b"calc key fingerprint" + key).hexdigest()[:8]


def parse_iface(text: str) -> str:
    try:
        ip = ipaddress.IPv4Address(text)
    except ValueError:
        raise ValueError(f"{text!r} is not an IPv4 address: give the address of the lab "
                         f"interface (see `ip -4 addr`)") from None
    if ip.is_unspecified or ip.is_multicast:
        raise ValueError(f"{text}: name one interface's address, not {text}")
    return str(ip)


def multicast_receiver(group: Tuple[str, int], iface: str) -> socket.socket:
    """A socket bound to (group, port) and joined to the group on iface only."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(group)      # the group, not 0.0.0.0: we receive only that group's datagrams
    member = struct.pack("4s4s", socket.inet_aton(group[0]), socket.inet_aton(iface))
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, member)
    sock.setblocking(False)
    return sock


def multicast_sender(iface: str, port: int = 0) -> socket.socket:
    """A socket bound to iface that sends multicast out of iface only, TTL 1."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((iface, port))
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(iface))
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)   # we hear ourselves
    sock.setblocking(False)
    return sock


class _Stop(Exception):
    """Raised by the SIGINT/SIGTERM handler to leave the loop cleanly."""


def _stop(signum, frame):
    raise _Stop(signal.Signals(signum).name)


def install_stop_handlers() -> None:
    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)


def drain(sock: socket.socket, limit: int = 64):
    """Up to `limit` datagrams waiting on sock, as (data, src); oversize ones come out longer
    than MAX_DATAGRAM_BYTES so the decoder counts them."""
    for _ in range(limit):
        try:
            data, src = sock.recvfrom(MAX_DATAGRAM_BYTES + 1)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            return   # e.g. an ICMP error reported on the socket: nothing to read
        yield data, src


def serve(server: CalcServer, iface: str, server_group: Tuple[str, int],
          client_group: Tuple[str, int], status_every_s: float, show) -> int:
    """Run the server until SIGINT/SIGTERM; `show` prints events and status tables."""
    heartbeats = multicast_receiver(server_group, iface)
    requests = multicast_receiver(client_group, iface)
    out_sock = multicast_sender(iface)
    sel = selectors.DefaultSelector()
    for sock in (heartbeats, requests, out_sock):
        sel.register(sock, selectors.EVENT_READ)
    # Half a tick off the heartbeats, so the table shows our own heartbeat already back.
    next_status_at = time.monotonic() + status_every_s + server.settings.heartbeat_s / 2
    show.started(server, iface, server_group, client_group, out_sock.getsockname())
    try:
        while True:
            now = time.monotonic()
            _send(out_sock, server.tick(now), server_group, show)
            if now >= next_status_at:
                show.status(server.snapshot(now))
                next_status_at = now + status_every_s
            timeout_s = max(0.0, min(server.next_deadline(), next_status_at) - time.monotonic())
            for key, _ in sel.select(timeout_s):
                for data, src in drain(key.fileobj):
                    _send(out_sock, server.datagram(data, src, time.monotonic()), server_group,
                          show)
    except _Stop as stop:
        show.stopped(server, str(stop))
        return 0
    finally:
        sel.close()
        for sock in (heartbeats, requests, out_sock):
            sock.close()


def _send(sock: socket.socket, out: Output, server_group: Tuple[str, int], show) -> None:
    for send in out.sends:
        try:
            sock.sendto(send.data, server_group if send.to == TO_SERVER_GROUP else send.to)
        except OSError as exc:     # e.g. no route: the tracker will show us UNRESPONSIVE
            show.send_failed(send.to, exc)
    for event in out.events[:MAX_NOTES_PER_TICK]:
        show.event(event)


# ---- the local demo: N servers as separate processes ----------------------------------------

def run_demo(count: int, argv_common: List[str], prefix_width: int = 6) -> int:
    """Start servers 1..count on this machine, show their output, stop them all on Ctrl-C."""
    script = os.path.abspath(__file__)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    try:
        width = os.get_terminal_size(sys.stdout.fileno()).columns
    except OSError:
        width = 100
    env["COLUMNS"] = str(max(60, width - prefix_width))   # room for the "[s1] " prefix
    children = {}
    install_stop_handlers()    # also when started with SIGINT ignored (a background job)
    signal.signal(signal.SIGHUP, _stop)    # the terminal closed: do not leave servers behind
    try:
        for index in range(1, count + 1):
            argv = [sys.executable, script, str(index)] + argv_common
            children[index] = subprocess.Popen(argv, stdout=subprocess.PIPE,
                                               stderr=subprocess.STDOUT, env=env,
                                               start_new_session=True)
        print(_demo_banner(children, argv_common), flush=True)
        _demo_follow(children, argv_common)
    except (_Stop, KeyboardInterrupt):
        pass
    finally:
        _demo_stop(children)
    return 0


def _demo_banner(children, argv_common: List[str]) -> str:
    lines = ["calculator demo: servers running on this machine (loopback only)"]
    for index, proc in children.items():
        lines.append(f"  server {index}: pid {proc.pid}")
    first = children[min(children)]
    opts = " ".join(argv_common)
    lines += [f"crash server 1:      kill -9 {first.pid}",
              f"ask the cluster:     python3 calc_client.py {_client_opts(argv_common)}".rstrip(),
              f"restart a server i:  python3 calc_server.py i {opts}".rstrip(),
              "stop the demo:       Ctrl-C", ""]
    return "\n".join(lines)


def _client_opts(argv_common: List[str]) -> str:
    keep = []
    for name in ("--iface", "--cluster", "--client-group", "--key"):
        if name in argv_common:
            keep += [name, argv_common[argv_common.index(name) + 1]]
    return " ".join(keep)


def _demo_follow(children, argv_common: List[str]) -> None:
    sel = selectors.DefaultSelector()
    for index, proc in children.items():
        sel.register(proc.stdout, selectors.EVENT_READ, index)
    while sel.get_map():
        for key, _ in sel.select():
            index = key.data
            line = key.fileobj.readline()
            if line:
                print(f"[s{index}] {line.decode(errors='replace').rstrip()}", flush=True)
                continue
            sel.unregister(key.fileobj)
            code = children[index].wait()
            how = f"killed by signal {-code}" if code < 0 else f"exited with status {code}"
            print(f"[s{index}] server {index} (pid {children[index].pid}) {how}; restart it "
                  f"in another terminal with: python3 calc_server.py {index} "
                  f"{' '.join(argv_common)}".rstrip(), flush=True)


def _demo_stop(children) -> None:
    # the stop is under way: an impatient second Ctrl-C must not cut it short and leave servers
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)
    for proc in children.values():
        if proc.poll() is None:
            proc.terminate()
    for proc in children.values():
        try:
            proc.wait(timeout=3)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    print("demo stopped: all servers ended", flush=True)


# ============================================================================================
# Terminal rendering
# ============================================================================================

STATE_STYLE = {ACTIVE: "bold green", AWAITING_CONFIRMATION: "yellow", UNRESPONSIVE: "bold red",
               DISCONNECTED: "dim"}


def clock(at_wall: float) -> str:
    """HH:MM:SS.mmm of a wall-clock time (the log's time column)."""
    return time.strftime("%H:%M:%S", time.localtime(at_wall)) + f".{int(at_wall * 1000) % 1000:03d}"


UNKEYED_WARNING = ("no --key: anyone on this LAN can stop or fake this service (forge "
                   "heartbeats or answers); make a key with `python3 calc_server.py --new-key "
                   "calc.key` and give every server and client --key calc.key")


def key_words(key: Optional[bytes]) -> str:
    return "no key" if key is None else f"key {key_fingerprint(key)}"


def format_event(event: Union[StateChange, Note], me: int, wall_at: float) -> str:
    """One log line; the time is wall-clock so that logs of several machines can be merged."""
    if isinstance(event, Note):
        return f"{clock(wall_at)}  server {me}: {event.text}"
    who = f"index {event.index}" + (" (me)" if event.index == me else "")
    return f"{clock(wall_at)}  {who}: {event.old} -> {event.new}  ({event.reason})"


def _cells(snap: Snapshot):
    for index, state, since, answered, address in snap.rows:
        yield (str(index) + (" (me)" if index == snap.index else ""), state,
               "-" if since is None else f"{since:.1f}",
               "-" if answered is None else str(answered), address or "-")


def status_counters(snap: Snapshot) -> str:
    """The counters line printed under the table (plain text in both renderings)."""
    dropped = sum(snap.dropped.values())
    detail = ", ".join(f"{k} {v}" for k, v in sorted(snap.dropped.items()))
    changes = ", ".join(f"{state} {snap.changes_into[state]}" for state in STATES
                        if snap.changes_into.get(state))
    return (f"requests seen {snap.requests_seen}, answered {snap.requests_answered}, "
            f"dropped packets {dropped}" + (f" ({detail})" if detail else "") +
            f"; answering: {'yes' if snap.answering else 'no'}" +
            (f"; changes into {changes}" if changes else ""))


def status_warnings(snap: Snapshot) -> List[str]:
    """Lines under the counters: what a student must fix (two processes on one index)."""
    return [f"index {c.index} is claimed by two processes: {c.first[1]} and {c.second[1]} "
            f"(see the log)" for c in snap.conflicts]


STATUS_HEADERS = ("index", "state", "heard (s ago)", "answered", "address")


def status_table(snap: Snapshot) -> "Table":
    """The rich table of all servers as this server sees them (counters: status_counters)."""
    table = Table(title=f"cluster {snap.cluster!r} seen by server {snap.index}"
                        f"{'' if snap.keyed else ' (no key)'}",
                  box=rich.box.SIMPLE_HEAD)
    for header in STATUS_HEADERS:
        table.add_column(header, justify="left" if header == "state" else "right", no_wrap=True)
    for cells in _cells(snap):
        table.add_row(*cells[:1], f"[{STATE_STYLE[cells[1]]}]{cells[1]}[/]", *cells[2:])
    return table


def status_text(snap: Snapshot) -> str:
    """The same table in plain text, for terminals without rich."""
    rows = [STATUS_HEADERS] + list(_cells(snap))
    widths = [max(len(r[c]) for r in rows) for c in range(len(STATUS_HEADERS))]
    lines = [f"cluster {snap.cluster!r} seen by server {snap.index}"
             f"{'' if snap.keyed else ' (no key)'}"]
    lines += ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in rows]
    lines.append(status_counters(snap))
    lines += status_warnings(snap)
    return "\n".join(lines)


class Show:
    """Prints what the loop reports: rich when available, plain text otherwise."""

    def __init__(self, me: int, use_rich: bool = True):
        self.me = me
        self.console = Console(highlight=False) if (rich is not None and use_rich) else None
        self.wall_minus_mono = time.time() - time.monotonic()

    def line(self, text: str, style: str = "") -> None:
        if self.console is not None:
            self.console.print(text, style=style or None, markup=False, soft_wrap=True)
        else:
            print(text, flush=True)

    def started(self, server: CalcServer, iface, server_group, client_group, out_addr) -> None:
        s = server.settings
        t = s.thresholds
        self.line(f"{clock(time.time())}  server {server.index} of cluster {server.cluster!r} "
                  f"on {iface} (answers from {out_addr[0]}:{out_addr[1]}); server group "
                  f"{server_group[0]}:{server_group[1]}, client group "
                  f"{client_group[0]}:{client_group[1]}; heartbeat every {s.heartbeat_s} s; "
                  f"awaiting/unresponsive/disconnected after {t.awaiting_after_ticks}/"
                  f"{t.unresponsive_after_ticks}/{t.disconnected_after_ticks} missed ticks; "
                  f"{key_words(server.key)}; pid {os.getpid()}")
        if server.key is None:
            self.line(f"{clock(time.time())}  {UNKEYED_WARNING}", "yellow")

    def event(self, event) -> None:
        text = format_event(event, self.me, event.at + self.wall_minus_mono)
        style = STATE_STYLE.get(getattr(event, "new", ""), "cyan")
        self.line(text, style)

    def status(self, snap: Snapshot) -> None:
        if self.console is not None:
            self.console.print(status_table(snap))
            self.console.print(status_counters(snap), markup=False, soft_wrap=True)
            for line in status_warnings(snap):
                self.console.print(line, style="bold red", markup=False, soft_wrap=True)
        else:
            print(status_text(snap), flush=True)

    def send_failed(self, to, exc: OSError) -> None:
        self.line(f"{clock(time.time())}  send to {to} failed: {exc}", "red")

    def stopped(self, server: CalcServer, why: str) -> None:
        self.status(server.snapshot(time.monotonic()))
        self.line(f"{clock(time.time())}  server {server.index} stopped ({why})")


# ============================================================================================
# Command line
# ============================================================================================

def _arg(convert):
    def parse_arg(text: str):
        try:
            return convert(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    parse_arg.__name__ = convert.__name__
    return parse_arg


def number_in(convert, low, high, what: str):
    """An argparse type: a number (convert: int or float) from low to high, `what` in the error
    (calc_client's options too)."""
    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{text}: expected {what} between {low:g} and {high:g}")
        return value
    return parse


_seconds = number_in(float, 0.01, 3600, "a number of seconds")
_fraction = number_in(float, 0, 0.5, "a fraction of a tick")
_ticks = number_in(int, 1, 1000, "a number of ticks")


def _cluster(text: str) -> str:
    if not 1 <= len(text.encode("utf-8")) <= MAX_CLUSTER_BYTES:
        raise ValueError(f"cluster names are 1 to {MAX_CLUSTER_BYTES} bytes long")
    return text


def add_common_options(parser: argparse.ArgumentParser) -> None:
    """The options server and client share (fixed names: the lab guide uses them)."""
    parser.add_argument("--iface", type=_arg(parse_iface), default=DEFAULT_IFACE,
                        help="address of the interface for multicast (default %(default)s: "
                             "this machine only)")
    parser.add_argument("--cluster", type=_arg(_cluster), default=DEFAULT_CLUSTER,
                        help="cluster name: teams sharing a LAN each use their own "
                             "(default %(default)s)")
    parser.add_argument("--client-group", type=_arg(parse_group), default=DEFAULT_CLIENT_GROUP,
                        metavar="ADDR:PORT",
                        help="group clients send requests to (default %(default)s)")
    parser.add_argument("--key", metavar="FILE",
                        help="key file (make one with calc_server.py --new-key FILE): every "
                             "packet is tagged with it, and packets without its tag are "
                             "refused; give the same file to every server and client")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="One server of the fault-tolerant calculator cluster (see lab_guide.md).")
    parser.add_argument("index", nargs="?", type=int,
                        help="this server's index, unique in the cluster: 1..--max-servers; "
                             "the lowest fit index answers")
    parser.add_argument("--demo", type=int, metavar="N",
                        help="start N servers on this machine (loopback) and show them all")
    parser.add_argument("--new-key", metavar="FILE",
                        help="write a new random key to FILE (readable by you only) and exit")
    add_common_options(parser)
    parser.add_argument("--server-group", type=_arg(parse_group), default=DEFAULT_SERVER_GROUP,
                        metavar="ADDR:PORT", help="group for heartbeats (default %(default)s)")
    parser.add_argument("--heartbeat", type=_seconds, default=DEFAULT_HEARTBEAT_S,
                        metavar="SECONDS", help="seconds between heartbeats, one tick "
                                                "(default %(default)s)")
    parser.add_argument("--status-every", type=_seconds,
                        default=DEFAULT_STATUS_EVERY_S, metavar="SECONDS",
                        help="seconds between status tables (default %(default)s)")
    parser.add_argument("--max-servers", type=int, default=DEFAULT_MAX_SERVERS, metavar="N",
                        help="highest index (default %(default)s)")
    parser.add_argument("--awaiting-after", type=_ticks,
                        default=DEFAULT_AWAITING_AFTER_TICKS, metavar="TICKS",
                        help="missed ticks before AWAITING_CONFIRMATION (default %(default)s)")
    parser.add_argument("--unresponsive-after", type=_ticks,
                        default=DEFAULT_UNRESPONSIVE_AFTER_TICKS, metavar="TICKS",
                        help="missed ticks before UNRESPONSIVE: may not answer "
                             "(default %(default)s)")
    parser.add_argument("--disconnected-after", type=_ticks,
                        default=DEFAULT_DISCONNECTED_AFTER_TICKS, metavar="TICKS",
                        help="missed ticks before DISCONNECTED (default %(default)s)")
    parser.add_argument("--jitter-grace", type=_fraction, default=DEFAULT_JITTER_GRACE,
                        metavar="FRACTION",
                        help="an own tick less than this fraction of a tick after a heartbeat "
                             "is not a missed tick (phase jitter; 0: the seed's plain count; "
                             "default %(default)s)")
    parser.add_argument("--plain", action="store_true", help="plain text even if rich is there")
    return parser


def _check(parser: argparse.ArgumentParser, args) -> Settings:
    if not 1 <= args.max_servers <= MAX_SERVERS_LIMIT:
        parser.error(f"--max-servers must be in 1..{MAX_SERVERS_LIMIT}")
    if args.demo is not None:
        if args.index is not None:
            parser.error("give either an INDEX or --demo N, not both")
        if not 1 <= args.demo <= args.max_servers:
            parser.error(f"--demo N needs N in 1..{args.max_servers} (--max-servers)")
    elif args.index is None:
        parser.error("give this server's INDEX (1..--max-servers), or --demo N")
    elif not 1 <= args.index <= args.max_servers:
        parser.error(f"INDEX must be in 1..{args.max_servers} (--max-servers), got {args.index}")
    if args.server_group == args.client_group:
        parser.error("--server-group and --client-group must differ")
    thresholds = Thresholds(args.awaiting_after, args.unresponsive_after, args.disconnected_after)
    try:
        thresholds.check()
    except ValueError as exc:
        parser.error(str(exc))
    return Settings(args.heartbeat, args.max_servers, thresholds,
                    jitter_grace=args.jitter_grace)


def key_option(parser: argparse.ArgumentParser, path: Optional[str]) -> Optional[bytes]:
    """The key of --key, or None; a bad key file is a command-line error."""
    if path is None:
        return None
    try:
        return load_key(path)
    except ValueError as exc:
        parser.error(f"--key: {exc}")
        raise   # not reached: parser.error exits


def new_key_command(path: str) -> int:
    try:
        write_new_key(path)
    except FileExistsError:
        print(f"calc_server: {path} exists; not overwritten (a key in use must stay as it is)",
              file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"calc_server: cannot write {path}: {exc}", file=sys.stderr)
        return 2
    print(f"wrote a new key to {path} (fingerprint {key_fingerprint(load_key(path))}, readable "
          f"by you only); copy it to every server and client of the cluster and give them "
          f"--key {path}")
    return 0


def _forwarded(argv: List[str]) -> List[str]:
    """The demo's own options, without --demo N, to pass on to every server it starts."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--demo":
            skip = True
        elif not arg.startswith("--demo="):
            out.append(arg)
    return out


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.new_key is not None:
        return new_key_command(args.new_key)
    settings = _check(parser, args)
    key = key_option(parser, args.key)
    if args.demo is not None:
        return run_demo(args.demo, _forwarded(argv))
    server = CalcServer(args.index, args.cluster, settings, rng=random.Random(), key=key)
    show = Show(args.index, use_rich=not args.plain)
    install_stop_handlers()
    try:
        return serve(server, args.iface, args.server_group, args.client_group,
                     args.status_every, show)
    except OSError as exc:
        print(f"calc_server: cannot use --iface {args.iface} with groups "
              f"{args.server_group[0]}:{args.server_group[1]} and {args.client_group[0]}:"
              f"{args.client_group[1]}: {exc}. Give the address of one of this machine's "
              f"interfaces (see ip -4 addr).", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
