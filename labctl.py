#!/usr/bin/env python3
"""labctl.py: the thesis's lab-management application (section 8.1): a resident agent on every
lab machine, always a member of group GG, and a query program that asks them all at once.

    python3 labctl.py agent                            # on every lab machine (a service, see lab_guide)
    python3 labctl.py ask free                         # 2: which machines have nobody logged in
    python3 labctl.py ask running firefox              # 3: where is this program running
    python3 labctl.py ask files mp3 --sort kbytes      # 4: files of a kind and their size, per machine
    python3 labctl.py ask user alice                   # 5: where is this login logged in
    python3 labctl.py ask message "Lab closes at 22h" --key lab.key    # 1: a pop-up on every screen
    python3 labctl.py ask quit --key lab.key           # Z: stop the agents
    python3 labctl.py ask                              # the thesis's menu (1-5, Z) at a prompt
    python3 labctl.py keygen lab.key                   # the shared key of message and quit

Both speak the Spread client protocol through spread_mini's client library, so they work against
spread_mini's daemon and a real Spread daemon alike.

Who is asked. Agents join GG (the thesis's group, where the requests go and where the 8.1.3 logger
`logbm.py connlog` watches machines come and go) and GG.agents, the roll call. The asker joins only
the roll call: its membership names the agents that must answer, without the logger (a member of
GG that never answers) and without the asker showing up in the connection log as a machine. Askers
use private names starting with `$`, which agents may not, so two askers never wait for each other.

Module map, in the order a request meets the code:
    Request, encode_request, decode_request, sign_request   wire format of a request (8.1.1)
    Answer, encode_answer, decode_answer                     wire format of an answer
    AskCore        the asker: roll call from membership, the request, answers, time-out
    AgentCore      the agent: checks (signature, age, replay), answers from the facts
    NonceBook      the agent's memory of nonces already seen
    MachineFacts   what an agent knows about its machine (PsutilFacts; tests inject fakes)
    count_files    function 4's bounded walk
    Reconnect      when the agent tries its daemon again, and the line that says it is back
    run_agent, run_ask, run_menu, run_keygen                 I/O loops (spread_mini's client library)
    answer_rows, answer_cells, render_table, render_json, render_csv   terminal rendering
    build_parser, main                                       command line
"""
from __future__ import annotations

import argparse
import binascii
import csv
import datetime
import hashlib
import heapq
import hmac
import io
import json
import os
import random
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

try:
    import rich
    from rich.console import Console
    from rich.live import Live
    from rich.table import Table
except ImportError:  # plain text still works
    rich = None

# spread_mini and psutil are imported on first use (see _spread() and PsutilFacts), so that the
# wire format and the cores can be used and tested on their own.
sp = None

# ============================================================================================
# Constants
# ============================================================================================

DEFAULT_DAEMON = "4803@127.0.0.1"
DEFAULT_GROUP = "GG"                 #: the thesis's Grupo Geral (8.1.1)
ROSTER_SUFFIX = ".agents"            #: GG.agents: the roll call the asker reads (module docstring)
ASKER_PREFIX = "$"                   #: askers' private names start with it; agents' never do
MAX_PRIVATE_NAME = 10                #: Spread's limit on a private name
MAX_GROUP_CHARS = 31 - len(ROSTER_SUFFIX)   #: Spread's group names have at most 31 characters

#: The thesis's functions (8.1.1): one byte of code, then up to 400 bytes of content.
FUNCTIONS = {"message": "1", "free": "2", "running": "3", "files": "4", "user": "5", "quit": "Z"}
NAMES = {code: name for name, code in FUNCTIONS.items()}
SIGNED_ONLY = ("1", "Z")             #: need the key even on the way in; questions are open
QUESTIONS = ("2", "3", "4", "5")
ARGUMENT_OF = {"1": "TEXT", "3": "NAME", "4": "EXT", "5": "LOGIN"}
MAX_TEXT_BYTES = 400

DEFAULT_TIMEOUT_S = 60.0             #: the thesis's query window starts at one minute (8.1.2)
QUIT_TIMEOUT_S = 10.0                #: quit waits this long for the agents to leave, unless told
MAX_TIMEOUT_S = 3600.0

KEY_BYTES = 32                       #: keygen's key: 256 random bits, written as hex
MIN_KEY_BYTES = 16
NONCE_BYTES = 16
MAX_AGE_S = 60.0                     #: a signed request older (or further ahead) than this is refused
MAX_NONCES = 100_000                 #: nonces remembered; only key holders can fill the book
AUTH_CONTEXT = b"labctl-v1"          #: the tag of one protocol can never be taken for another's

MAX_SCAN_ENTRIES = 200_000           #: function 4 looks at this many directory entries at most
MAX_SCAN_S = 10.0                    #: ... and for this many seconds; the answer says it was cut
SCAN_CLOCK_EVERY = 256               #: entries between two looks at the clock
MAX_LOGGED_REFUSALS_PER_MIN = 30     #: a flood of forged requests is counted, not all printed
MAX_ROSTER = 5000                    #: members an asker follows

RECONNECT_FIRST_DELAY_S = 0.5        #: the agent comes back after a daemon restart (a service)
RECONNECT_MAX_DELAY_S = 5.0
MAX_RECONNECT_ATTEMPTS = 720         #: about an hour at the longest delay; then systemd restarts us
RECEIVE_EVERY_S = 0.2                #: how often the loops look at the clock and the signals
REFRESH_S = 0.25                     #: the live table

EXIT_OK, EXIT_USAGE, EXIT_MISSING = 0, 2, 3

EXT_RE = re.compile(r"^\.?([A-Za-z0-9_+~-]{1,16})$")
AUTH_RE = re.compile(rb"^v1 t=(\d{1,16}) n=([0-9a-f]{32}) h=([0-9a-f]{64})$")
WORD_RE = re.compile(r"^([a-z_]{1,16})=(\S{1,64})$")


# ============================================================================================
# Wire format
# ============================================================================================
# A request, sent AGREED to GG, is the thesis's message (8.1.1):
#     CODE TEXT [ NUL AUTH ]
#   CODE  one byte: 1 message, 2 free, 3 running, 4 files, 5 user, Z quit
#   TEXT  the content, UTF-8, at most 400 bytes, no NUL
#   AUTH  signed requests only: "v1 t=<unix ms> n=<16 random bytes, hex> h=<HMAC-SHA256, hex>"
# The request id travels in Spread's 16-bit mess_type, so the content stays the thesis's.
#
# An answer, sent FIFO to the asker's private group with the same mess_type, is one line:
#     CODE key=value ...    e.g.  "4 files=12 kbytes=3400 truncated=no"
# readable in `spread_mini.py user` and in a packet dump.

class MalformedRequest(ValueError):
    """Bytes on GG that are not a well-formed request (another team's traffic, or a forgery)."""


class MalformedAnswer(ValueError):
    """Bytes sent to an asker that are not a well-formed answer to its question."""


@dataclass(frozen=True)
class Auth:
    time_ms: int
    nonce: str                   # 32 hex digits
    tag: str                     # 64 hex digits


@dataclass(frozen=True)
class Request:
    code: str                    # one of FUNCTIONS' values
    text: str = ""
    auth: Optional[Auth] = None


def check_text(code: str, text: str) -> str:
    """The content of a request as the user typed it; ValueError with the reason otherwise."""
    raw = text.encode("utf-8")
    if len(raw) > MAX_TEXT_BYTES:
        raise ValueError(f"the text is {len(raw)} bytes; the thesis's messages hold at most {MAX_TEXT_BYTES}")
    if "\0" in text:
        raise ValueError("the text may not contain a NUL character")
    if code in ("3", "5") and (not text.strip() or any(ch < " " for ch in text)):
        raise ValueError(f"{NAMES[code]} needs a {ARGUMENT_OF[code]} without control characters")
    if code == "4" and not EXT_RE.match(text):
        raise ValueError(f"file extension {text!r}: 1 to 16 characters from A-Z a-z 0-9 _ + ~ - (a leading . is fine)")
    if code in ("2", "Z") and text:
        raise ValueError(f"{NAMES[code]} takes no argument")
    return text


def encode_request(req: Request) -> bytes:
    data = req.code.encode("ascii") + req.text.encode("utf-8")
    if req.auth is not None:
        data += b"\0" + b"v1 t=%d n=%s h=%s" % (req.auth.time_ms, req.auth.nonce.encode(), req.auth.tag.encode())
    return data


def decode_request(data: bytes) -> Request:
    if not data:
        raise MalformedRequest("empty")
    code = chr(data[0])
    if code not in NAMES:
        raise MalformedRequest(f"unknown function code {data[:1]!r}")
    body, auth = data[1:], None
    if b"\0" in body:
        body, _, auth_raw = body.partition(b"\0")
        found = AUTH_RE.match(auth_raw)
        if not found:
            raise MalformedRequest("a signature that is not 'v1 t=... n=... h=...'")
        auth = Auth(int(found.group(1)), found.group(2).decode(), found.group(3).decode())
    if len(body) > MAX_TEXT_BYTES:
        raise MalformedRequest(f"{len(body)} bytes of content (at most {MAX_TEXT_BYTES})")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedRequest("content that is not UTF-8") from None
    try:
        check_text(code, text)
    except ValueError as why:
        raise MalformedRequest(str(why)) from None
    return Request(code, text, auth)


def signed_bytes(code: str, text: str, time_ms: int, nonce: str) -> bytes:
    """What the tag covers: the function, the text, the time and the nonce, each unambiguous."""
    return b"\0".join([AUTH_CONTEXT, code.encode("ascii"), text.encode("utf-8"), b"%d" % time_ms, nonce.encode()])


def make_tag(key: bytes, code: str, text: str, time_ms: int, nonce: str) -> str:
    return hmac.new(key, signed_bytes(code, text, time_ms, nonce), hashlib.sha256).hexdigest()


def sign_request(key: bytes, code: str, text: str, wall_s: float, nonce: bytes) -> Request:
    """A signed request; the caller passes the clock and the random bytes."""
    time_ms = int(wall_s * 1000)
    nonce_hex = binascii.hexlify(nonce).decode()
    return Request(code, text, Auth(time_ms, nonce_hex, make_tag(key, code, text, time_ms, nonce_hex)))


def tag_is_right(key: bytes, req: Request) -> bool:
    assert req.auth is not None
    good = make_tag(key, req.code, req.text, req.auth.time_ms, req.auth.nonce)
    return hmac.compare_digest(good, req.auth.tag)


#: The fields of each answer, in order, with their types (JSON and CSV use the same names).
ANSWER_FIELDS: Dict[str, Tuple[Tuple[str, type], ...]] = {
    "2": (("free", bool), ("users", int)),
    "3": (("running", bool), ("processes", int)),
    "4": (("files", int), ("kbytes", int), ("truncated", bool)),
    "5": (("logged_in", bool), ("machine", str)),
}


@dataclass(frozen=True)
class Answer:
    code: str
    fields: Tuple[Tuple[str, object], ...]   # (name, value) in ANSWER_FIELDS order

    def get(self, name: str):
        return dict(self.fields)[name]


def make_answer(code: str, **values) -> Answer:
    return Answer(code, tuple((name, values[name]) for name, _ in ANSWER_FIELDS[code]))


def _word(value) -> str:
    """A value as an answer carries it, and as the table and the CSV show it: yes/no, digits."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def encode_answer(answer: Answer) -> bytes:
    return (answer.code + " " + " ".join(f"{k}={_word(v)}" for k, v in answer.fields)).encode("utf-8")


def decode_answer(data: bytes, expect_code: str) -> Answer:
    if len(data) > MAX_TEXT_BYTES:
        raise MalformedAnswer(f"{len(data)} bytes")
    try:
        words = data.decode("utf-8").split(" ")
    except UnicodeDecodeError:
        raise MalformedAnswer("not UTF-8") from None
    if words[0] != expect_code:
        raise MalformedAnswer(f"an answer to function {words[0][:4]!r}, not {expect_code!r}")
    schema = ANSWER_FIELDS[expect_code]
    if len(words) - 1 != len(schema):
        raise MalformedAnswer(f"{len(words) - 1} fields, expected {len(schema)}")
    values = []
    for word, (name, kind) in zip(words[1:], schema):
        found = WORD_RE.match(word)
        if not found or found.group(1) != name:
            raise MalformedAnswer(f"{word[:40]!r} where {name}= was expected")
        values.append((name, _parse_value(found.group(2), kind, name)))
    return Answer(expect_code, tuple(values))


def _parse_value(text: str, kind: type, name: str):
    if kind is bool:
        if text not in ("yes", "no"):
            raise MalformedAnswer(f"{name}={text[:20]}: yes or no")
        return text == "yes"
    if kind is int:
        if not text.isdigit() or len(text) > 15:
            raise MalformedAnswer(f"{name}={text[:20]}: a whole number")
        return int(text)
    return text


def member_name(private_group: str) -> str:
    """'#lab07#daemon1' -> 'lab07'; other forms unchanged."""
    parts = private_group.split("#")
    return parts[1] if len(parts) == 3 and parts[0] == "" and parts[1] else private_group


def is_asker(private_group: str) -> bool:
    return member_name(private_group).startswith(ASKER_PREFIX)


def roster_group(group: str) -> str:
    return group + ROSTER_SUFFIX


# ============================================================================================
# Protocol core
# ============================================================================================

# ---- the asker (8.1.2) ----------------------------------------------------------------------

@dataclass(frozen=True)
class SendRequest:
    data: bytes
    request_id: int


@dataclass
class Row:
    member: str                  # the private group '#lab07#d1'
    answer: Optional[Answer]     # None for quit (the row says the agent left)
    ms: float


@dataclass
class Summary:
    function: str
    asked: List[str]
    rows: List[Row]
    missing: Dict[str, str]      # member -> why ("no answer", "left the group", "still running")
    ended: str                   # why the asker stopped
    ignored: Dict[str, int]

    @property
    def complete(self) -> bool:
        return bool(self.asked) and not self.missing


JOINING, ASKING, DONE = "joining", "asking", "done"


class AskCore:
    """The query program of 8.1.2 as a state machine: JOINING -> ASKING -> DONE.

    JOINING: it has joined the roll call; the first membership that names it says who the agents
    are, and the request goes out. ASKING: answers arrive; a member that leaves is not waited for.
    DONE: every asked member answered (or, for quit, left), or the time-out passed. Function 1
    has no answers: it is done once sent. Time is passed in; nothing here reads a clock.
    """

    def __init__(self, request: Request, request_id: int, me: str, timeout_s: float):
        self.request = request
        self.code = request.code
        self.request_id = request_id
        self.me = me
        self.timeout_s = timeout_s
        self.state = JOINING
        self.ended = ""
        self.asked: List[str] = []
        self.members: set = set()
        self.sent_at_s = 0.0
        self.deadline_s: Optional[float] = None
        self.rows: Dict[str, Row] = {}
        self.left: List[str] = []
        self.ignored: Dict[str, int] = {}

    # -- events --------------------------------------------------------------------------
    def start(self, now_s: float) -> None:
        """The asker has asked to join; the time-out covers the wait for the roll call too."""
        self.deadline_s = now_s + self.timeout_s

    def on_membership(self, members: Sequence[str], now_s: float) -> List[SendRequest]:
        current = set(list(members)[:MAX_ROSTER])
        if self.state == JOINING:
            if self.me not in current:
                return []
            self.asked = sorted(m for m in current if m != self.me and not is_asker(m))
            self.members = set(self.asked)
            self.state = ASKING
            self.sent_at_s = now_s
            self.deadline_s = now_s + self.timeout_s
            self._finish_if_done()
            if self.code == "1" and self.asked:
                self._done("function 1 has no answers")
            return [SendRequest(encode_request(self.request), self.request_id)]
        if self.state == ASKING:
            for member in sorted(self.members - current):
                self.members.discard(member)
                if self.code == "Z":
                    self.rows[member] = Row(member, None, (now_s - self.sent_at_s) * 1000)
                elif member not in self.rows:
                    self.left.append(member)
            self._finish_if_done()
        return []

    def on_answer(self, sender: str, request_id: int, data: bytes, now_s: float) -> Optional[Row]:
        if self.state != ASKING or self.code in ("1", "Z"):
            return self._ignore("not asking")
        if request_id != self.request_id:
            return self._ignore("another request's id")
        if sender not in self.asked:
            return self._ignore("from a non-member")
        if sender in self.rows:
            return self._ignore("a second answer")
        try:
            answer = decode_answer(data, self.code)
        except MalformedAnswer:
            return self._ignore("malformed")
        row = Row(sender, answer, (now_s - self.sent_at_s) * 1000)
        self.rows[sender] = row
        self._finish_if_done()
        return row

    def tick(self, now_s: float) -> None:
        if self.state != DONE and self.deadline_s is not None and now_s >= self.deadline_s:
            self._done("time-out" if self.state == ASKING else "time-out before the roll call arrived")

    # -- state ---------------------------------------------------------------------------
    @property
    def done(self) -> bool:
        return self.state == DONE

    def _finish_if_done(self) -> None:
        if self.state != ASKING:
            return
        if not self.asked:
            self._done("nobody is in the roll call")
        elif self.code == "Z" and not self.members:
            self._done("every agent left the group")
        elif self.code in QUESTIONS and all(m in self.rows or m in self.left for m in self.asked):
            self._done("every member answered" if not self.left else "every member still present answered")

    def _done(self, why: str) -> None:
        self.state = DONE
        self.ended = why

    def _ignore(self, why: str) -> None:
        self.ignored[why] = self.ignored.get(why, 0) + 1
        return None

    def summary(self) -> Summary:
        if self.code == "1":
            missing: Dict[str, str] = {}
        else:
            still = "still in the group" if self.code == "Z" else "no answer"
            missing = {m: ("left the group" if m in self.left else still) for m in self.asked if m not in self.rows}
        rows = [self.rows[m] for m in self.asked if m in self.rows]
        return Summary(NAMES[self.code], list(self.asked), rows, missing, self.ended, dict(self.ignored))


# ---- the agent (8.1.1) ----------------------------------------------------------------------

@dataclass(frozen=True)
class Reply:
    to: str                      # the asker's private group
    request_id: int
    data: bytes


@dataclass(frozen=True)
class Popup:
    sender: str
    text: str


@dataclass(frozen=True)
class Stop:
    sender: str


@dataclass(frozen=True)
class Log:
    line: str


@dataclass(frozen=True)
class FileCount:
    files: int
    total_bytes: int
    truncated: bool


class MachineFacts:
    """What the agent knows about its machine; the core asks, tests inject their own answers."""

    def logins(self) -> List[str]:
        raise NotImplementedError

    def processes_named(self, name: str) -> int:
        raise NotImplementedError

    def count_files(self, ext: str) -> FileCount:
        raise NotImplementedError


class NonceBook:
    """Nonces of signed requests already obeyed, each kept until its request is too old to pass
    the age check anyway; so a replay is caught for as long as it could otherwise succeed."""

    def __init__(self, max_age_s: float = MAX_AGE_S, capacity: int = MAX_NONCES):
        self.max_age_ms = int(max_age_s * 1000)
        self.capacity = capacity
        self._seen: Dict[str, int] = {}
        self._expiry: List[Tuple[int, str]] = []   # heap of (forget after, nonce)

    def forget_old(self, now_ms: int) -> None:
        while self._expiry and self._expiry[0][0] < now_ms:
            _, nonce = heapq.heappop(self._expiry)
            self._seen.pop(nonce, None)

    def seen(self, nonce: str, now_ms: int) -> bool:
        self.forget_old(now_ms)
        return nonce in self._seen

    def full(self, now_ms: int) -> bool:
        self.forget_old(now_ms)
        return len(self._seen) >= self.capacity

    def add(self, nonce: str, time_ms: int) -> None:
        forget_after = time_ms + self.max_age_ms
        self._seen[nonce] = forget_after
        heapq.heappush(self._expiry, (forget_after, nonce))

    def __len__(self) -> int:
        return len(self._seen)


class AgentCore:
    """The resident client of 8.1.1: takes what arrives on GG, returns what to do.

    With a key, every request must carry a right tag, a nonce not seen before and a time within
    MAX_AGE_S of ours and not before this agent started; without one, message and quit are refused outright and the questions are
    open. Each refusal is counted by reason and logged (at most MAX_LOGGED_REFUSALS_PER_MIN a
    minute, then a count, so forged traffic cannot fill the log).
    """

    def __init__(self, name: str, facts: MachineFacts, key: Optional[bytes] = None, max_age_s: float = MAX_AGE_S,
                 started_wall_s: float = 0.0):
        self.name = name
        self.facts = facts
        self.key = key
        self.max_age_ms = int(max_age_s * 1000)
        #: A request signed before this agent started was not meant for it: its nonce book is
        #: empty, so this is what stops a quit recorded earlier and replayed at agents that were
        #: just restarted (all the agents that saw the original stopped, or remember its nonce).
        self.not_before_ms = int(started_wall_s * 1000)
        self.nonces = NonceBook(max_age_s)
        self.obeyed: Dict[str, int] = {}
        self.refused: Dict[str, int] = {}
        self._log_minute = -1
        self._logged_this_minute = 0
        self._unlogged = 0

    def on_request(self, data: bytes, sender: str, request_id: int, wall_s: float) -> List[object]:
        try:
            req = decode_request(data)
        except MalformedRequest as why:
            return self._refuse("malformed", f"{why}", sender, wall_s)
        refusal = self._check(req, wall_s)
        if refusal:
            return self._refuse(refusal[0], refusal[1], sender, wall_s, req.code)
        if req.auth is not None and self.key is not None:
            self.nonces.add(req.auth.nonce, req.auth.time_ms)
        name = NAMES[req.code]
        self.obeyed[name] = self.obeyed.get(name, 0) + 1
        if req.code == "1":
            return [Popup(sender, req.text)]
        if req.code == "Z":
            return [Log(f"quit from {member_name(sender)} (signed): stopping"), Stop(sender)]
        return [Reply(sender, request_id, encode_answer(self.answer(req)))]

    def _check(self, req: Request, wall_s: float) -> Optional[Tuple[str, str]]:
        """None when the request may be obeyed, else (reason, detail)."""
        if self.key is None:
            if req.code in SIGNED_ONLY:
                return "no key", "this agent was started without --key: message and quit are off"
            return None
        if req.auth is None:
            return "unsigned", "this agent has a key: every request must be signed"
        if not tag_is_right(self.key, req):
            return "bad signature", "the tag does not match (wrong key, or the request was altered)"
        now_ms = int(wall_s * 1000)
        self.nonces.forget_old(now_ms)
        if req.auth.time_ms < now_ms - self.max_age_ms:
            return "too old", f"signed {(now_ms - req.auth.time_ms) / 1000:.0f} s ago (limit {self.max_age_ms // 1000} s)"
        if req.auth.time_ms > now_ms + self.max_age_ms:
            return "from the future", f"signed {(req.auth.time_ms - now_ms) / 1000:.0f} s ahead of this clock"
        if req.auth.time_ms < self.not_before_ms:
            return "before start", "signed before this agent started (a recorded request played again)"
        if self.nonces.seen(req.auth.nonce, now_ms):
            return "replay", f"nonce {req.auth.nonce[:8]}... was already used"
        if self.nonces.full(now_ms):
            return "nonce book full", f"{len(self.nonces)} signed requests in the last {self.max_age_ms // 1000} s"
        return None

    def answer(self, req: Request) -> Answer:
        if req.code == "2":
            users = self.facts.logins()
            return make_answer("2", free=not users, users=len(users))
        if req.code == "3":
            count = self.facts.processes_named(req.text)
            return make_answer("3", running=count > 0, processes=count)
        if req.code == "4":
            found = self.facts.count_files(EXT_RE.match(req.text).group(1))
            return make_answer("4", files=found.files, kbytes=-(-found.total_bytes // 1024), truncated=found.truncated)
        logged_in = req.text in self.facts.logins()
        return make_answer("5", logged_in=logged_in, machine=self.name if logged_in else "-")

    def _refuse(self, reason: str, detail: str, sender: str, wall_s: float, code: str = "?") -> List[object]:
        self.refused[reason] = self.refused.get(reason, 0) + 1
        minute = int(wall_s // 60)
        out: List[object] = []
        if minute != self._log_minute:
            if self._unlogged:
                out.append(Log(f"{self._unlogged} more refusals in the last minute were counted, not logged"))
            self._log_minute, self._logged_this_minute, self._unlogged = minute, 0, 0
        if self._logged_this_minute < MAX_LOGGED_REFUSALS_PER_MIN:
            self._logged_this_minute += 1
            what = NAMES.get(code, "a request")
            out.append(Log(f"REFUSED {what} from {printable(member_name(sender))}: {reason} ({detail}); "
                           f"refusals so far: {self.refused_total}"))
        else:
            self._unlogged += 1
        return out

    @property
    def refused_total(self) -> int:
        return sum(self.refused.values())


def printable(text: str, limit: int = MAX_TEXT_BYTES) -> str:
    """Text from the network made safe for a terminal: no escape sequences, no control chars."""
    return "".join(ch if ch == "\n" or (ch >= " " and ch != "\x7f" and not 0x80 <= ord(ch) < 0xa0) else "?"
                   for ch in text[:limit])


# ---- function 4: the bounded walk -----------------------------------------------------------

def count_files(roots: Sequence[str], ext: str, max_entries: int = MAX_SCAN_ENTRIES, max_s: float = MAX_SCAN_S,
                clock: Callable[[], float] = time.monotonic) -> FileCount:
    """Files whose name ends in .EXT (any case) under the roots, and their total size.

    No symbolic link below a root is followed, neither to a directory nor to a file: one that
    points out of the root would show what is not the root's, one that points inside would count
    a file twice. At most max_entries directory entries and max_s seconds; then truncated=True.
    Unreadable folders are skipped (a lab machine's other users' homes)."""
    suffix = "." + ext.lower()
    started = clock()
    files = total = seen = 0
    stack = [r for r in roots if os.path.isdir(r)]
    while stack:
        folder = stack.pop()
        try:
            with os.scandir(folder) as entries:
                for entry in entries:
                    seen += 1
                    if seen > max_entries or (seen % SCAN_CLOCK_EVERY == 0 and clock() - started > max_s):
                        return FileCount(files, total, True)
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            stack.append(entry.path)
                        elif entry.is_file(follow_symlinks=False) and entry.name.lower().endswith(suffix):
                            files += 1
                            total += entry.stat(follow_symlinks=False).st_size
                    except OSError:
                        continue
        except OSError:
            continue
    return FileCount(files, total, False)


def process_matches(wanted: str, name: str, cmdline: Sequence[str]) -> bool:
    """A process is NAME when its name is (firefox, firefox.exe, FIREFOX.EXE on Windows), or when
    one of its first words is a path to it (a script run by an interpreter: python3 quiz.py)."""
    def same(candidate: str) -> bool:
        base = os.path.basename(candidate.replace("\\", "/")).lower()
        return base in (wanted, wanted + ".exe") or (base.endswith(".exe") and base[:-4] == wanted)
    wanted = wanted.lower()
    return same(name or "") or any(same(word) for word in list(cmdline)[:3])


# ---- reconnecting (the agent after a daemon restart) ----------------------------------------
# floodtools.py has the same class: each tool is one file that a lab machine copies alone.

class Reconnect:
    """When a client of the daemon tries again, and the line that says it is back. Pure: the
    I/O loop reads the clock, sleeps and connects.

    Only a client that has had a session tries again: no daemon at the start is a mistake to
    report. A lost session starts a series of tries: the first after first_delay_s (a restarted
    daemon is back soon), the second after later_delay_s, each further one after twice the wait
    before it, at most max_delay_s. After max_attempts tries in a row the client gives up; a
    session that begins ends the series."""

    def __init__(self, first_delay_s: float, later_delay_s: float, max_delay_s: float, max_attempts: int):
        self.first_delay_s = first_delay_s
        self.later_delay_s = later_delay_s
        self.max_delay_s = max_delay_s
        self.max_attempts = max_attempts
        self.sessions = 0                       #: sessions that reached the daemon
        self.in_session = False
        self.attempts = 0                       #: tries since the last session ended
        self.lost_at_s: Optional[float] = None  #: when it ended; None: never, or back since
        self._delay_s = first_delay_s

    def connected(self, now_s: float) -> str:
        """A session began. After a loss, what to add to the `connected` line: ' (back ...)'."""
        back = ""
        if self.lost_at_s is not None:
            tries = f", {self.attempts} tries" if self.attempts > 1 else ""
            back = f" (back {now_s - self.lost_at_s:.1f} s after the session was lost{tries})"
        self.sessions += 1
        self.in_session, self.attempts, self.lost_at_s = True, 0, None
        return back

    def lost(self, now_s: float) -> None:
        """The session ended: the daemon went away, or cut this client off."""
        self.in_session, self.attempts, self.lost_at_s = False, 0, now_s
        self._delay_s = self.first_delay_s

    def next_delay_s(self) -> Optional[float]:
        """How long to wait before the next try; None: give up (never a session, or too many)."""
        if not self.sessions or self.attempts >= self.max_attempts:
            return None
        self.attempts += 1
        delay_s = self._delay_s
        self._delay_s = self.later_delay_s if self.attempts == 1 else min(delay_s * 2, self.max_delay_s)
        return delay_s


# ============================================================================================
# I/O loop
# ============================================================================================

class ToolError(Exception):
    """A problem the user can fix (no daemon, a bad key file...): one clear line, exit status 2."""


class Stopped(Exception):
    """SIGTERM or Ctrl-C."""


def _spread():
    """spread_mini's client library (imported on first use)."""
    global sp
    if sp is None:
        here = os.path.dirname(os.path.abspath(__file__))
        if here not in sys.path:
            sys.path.insert(0, here)
        try:
            import spread_mini
        except ImportError as why:
            raise ToolError(f"cannot import spread_mini.py (it must sit beside this file): {why}") from None
        sp = spread_mini
    return sp


def _stop_on_signals() -> None:
    def handler(signum, frame):
        raise Stopped()
    signal.signal(signal.SIGTERM, handler)


class PsutilFacts(MachineFacts):
    """The machine's facts from psutil (the same calls on Linux and on Windows, where the thesis's
    lab machines were) and from the file system under the files roots."""

    def __init__(self, roots: Sequence[str], max_entries: int = MAX_SCAN_ENTRIES, max_s: float = MAX_SCAN_S):
        try:
            import psutil
        except ImportError:
            raise ToolError("the agent needs psutil: python3 -m pip install psutil") from None
        self.psutil = psutil
        self.roots = list(roots)
        self.max_entries = max_entries
        self.max_s = max_s

    def logins(self) -> List[str]:
        return sorted({u.name for u in self.psutil.users()})

    def processes_named(self, name: str) -> int:
        count = 0
        for proc in self.psutil.process_iter(["name", "cmdline"]):
            info = proc.info
            if process_matches(name, info.get("name") or "", info.get("cmdline") or ()):
                count += 1
        return count

    def count_files(self, ext: str) -> FileCount:
        return count_files(self.roots, ext, self.max_entries, self.max_s)


def default_files_roots() -> List[str]:
    """The home folders of the machine: /home (Linux), /Users (macOS), C:\\Users (Windows); else ours."""
    candidates = ["/home", "/Users", os.path.join(os.environ.get("SystemDrive", "C:") + os.sep, "Users")]
    found = [c for c in candidates if os.path.isdir(c)]
    return found[:1] or [os.path.expanduser("~")]


def default_agent_name(hostname: str) -> str:
    """The host name as a Spread private name: its first label, characters Spread refuses left
    out, and cut to 10 characters keeping the first 4 and the last 6 (lab machines differ at the
    end: 'lab-pc-0123' -> 'lab-c-0123'). Two machines that still come out equal collide at the
    daemon: the second is refused (not unique) and must be given --name."""
    label = hostname.split(".")[0]
    clean = "".join(ch for ch in label if "#" < ch <= "~").lstrip(ASKER_PREFIX)
    if len(clean) > MAX_PRIVATE_NAME:
        clean = clean[:4] + clean[-6:]
    return clean or "agent"


def check_agent_name(name: str) -> str:
    if not 1 <= len(name) <= MAX_PRIVATE_NAME or any(not "#" < ch <= "~" for ch in name):
        raise ValueError(f"agent name {name!r}: 1 to {MAX_PRIVATE_NAME} characters from '$'..'~' without '#' or spaces")
    if name.startswith(ASKER_PREFIX):
        raise ValueError(f"agent name {name!r}: names starting with {ASKER_PREFIX!r} are the askers'")
    return name


def check_group(name: str) -> str:
    if not 1 <= len(name) <= MAX_GROUP_CHARS or any(not "#" < ch <= "~" for ch in name):
        raise ValueError(f"group {name!r}: 1 to {MAX_GROUP_CHARS} characters from '$'..'~' without '#' or spaces")
    return name


def load_key(path: str) -> bytes:
    """The shared key from a keygen file: hex, at least 16 bytes."""
    try:
        with open(path, "r", encoding="ascii") as fh:
            text = fh.read(4096).strip()
        key = binascii.unhexlify(text)
    except OSError as why:
        raise ToolError(f"cannot read the key file: {why}") from None
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise ToolError(f"{path}: not a key file (expected hex digits, as `labctl.py keygen` writes)") from None
    if len(key) < MIN_KEY_BYTES:
        raise ToolError(f"{path}: the key has {len(key)} bytes; at least {MIN_KEY_BYTES}")
    return key


def key_file_warning(path: str) -> Optional[str]:
    """A warning when others than the owner may read the key (POSIX only)."""
    if os.name != "posix":
        return None
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        return f"WARNING: {path} can be read by other users (mode {stat.S_IMODE(mode):o}); chmod 600 it"
    return None


def run_keygen(path: str, say=print) -> int:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise ToolError(f"{path} exists; keygen never overwrites a key (remove it first if you mean to)") from None
    except OSError as why:
        raise ToolError(f"cannot create {path}: {why}") from None
    with os.fdopen(fd, "w") as fh:
        fh.write(binascii.hexlify(os.urandom(KEY_BYTES)).decode() + "\n")
    say(f"key written to {path} (readable by you only). Copy it to every lab machine and to the "
        f"instructor's; start agents with --key {path}. Anybody with this file can stop the agents.")
    return EXIT_OK


def _stamp() -> str:
    return datetime.datetime.now().strftime("%Y-%m-%d %H:%M:%S")


# ---- the agent's loop ---------------------------------------------------------------------

def run_agent(args, say=print) -> int:
    """Join GG and the roll call; answer; come back after a daemon restart; stop on a good quit."""
    lib = _spread()
    key = load_key(args.key) if args.key else None
    roots = args.files_root or default_files_roots()
    core = AgentCore(args.name, PsutilFacts(roots), key, started_wall_s=time.time())

    def log(line: str) -> None:
        say(f"{_stamp()} labctl agent {args.name}: {line}")

    # the pid first: the lab sheet stops and kills agents by it (never by a name search, which
    # finds other users' agents on a shared machine)
    log(f"pid {os.getpid()}; daemon {args.daemon}, group {args.group!r} (roll call "
        f"{roster_group(args.group)!r}), files under {', '.join(roots)}")
    if key is None:
        log("no --key: message and quit will be REFUSED; the questions (free, running, files, user) are open")
    else:
        log(f"key from {args.key}: every request must be signed (HMAC-SHA256), at most {MAX_AGE_S:g} s old, never replayed")
        warning = key_file_warning(args.key)
        if warning:
            log(warning)
    _stop_on_signals()
    retry = Reconnect(RECONNECT_FIRST_DELAY_S, 2 * RECONNECT_FIRST_DELAY_S, RECONNECT_MAX_DELAY_S,
                      MAX_RECONNECT_ATTEMPTS)
    try:
        while True:
            try:
                _agent_session(lib, core, args, log, retry)
                return EXIT_OK                         # a good quit
            except (lib.SpreadError, OSError) as why:
                if retry.in_session:
                    retry.lost(time.monotonic())
                    log(f"lost the daemon: {why}")
                elif not retry.sessions:   # never connected: a mistake to report
                    raise _unreachable(lib, args, why) from None
                delay_s = retry.next_delay_s()
                if delay_s is None:
                    log(f"gave up after {retry.max_attempts} attempts to reach {args.daemon}: {why}")
                    return 1
                log(f"trying again in {delay_s:g} s ({retry.attempts}/{retry.max_attempts})")
                time.sleep(delay_s)
    except (KeyboardInterrupt, Stopped):
        log(f"stopped by a signal; obeyed {sum(core.obeyed.values())}, refused {core.refused_total}")
        return EXIT_OK


def _unreachable(lib, args, why) -> ToolError:
    """The first connection failed (a service manager starts the agent again later)."""
    if isinstance(why, lib.RejectNotUnique):
        return ToolError(f"the daemon {args.daemon} already has a session named {args.name!r}: another "
                         f"machine's name cuts to the same 10 characters; give this one --name")
    return ToolError(f"cannot reach the daemon {args.daemon}: {why}")


def _agent_session(lib, core: AgentCore, args, log, retry: Reconnect) -> None:
    with lib.connect(args.daemon, args.name, group_membership=True) as mbox:
        back = retry.connected(time.monotonic())
        mbox.join(args.group)
        mbox.join(roster_group(args.group))
        log(f"connected as {mbox.private_group}; answering on {args.group!r}{back}")
        while True:
            msg = mbox.receive(timeout=RECEIVE_EVERY_S * 5)
            if msg is None or not isinstance(msg, lib.RegularMessage) or args.group not in msg.groups:
                continue
            for action in core.on_request(msg.data, msg.sender, msg.mess_type, time.time()):
                if isinstance(action, Reply):
                    mbox.multicast(lib.FIFO_MESS, action.to, action.data, mess_type=action.request_id)
                elif isinstance(action, Log):
                    log(action.line)
                elif isinstance(action, Popup):
                    show_popup(action.text, member_name(action.sender), log)
                elif isinstance(action, Stop):
                    log(f"obeyed {sum(core.obeyed.values())}, refused {core.refused_total}; bye")
                    return


def show_popup(text: str, sender: str, log) -> None:
    """Function 1: a desktop notification where there is a desktop, always the terminal and log."""
    safe = printable(text)
    log(f"POP-UP from {sender}:\n    " + safe.replace("\n", "\n    "))
    try:
        if os.name == "nt":
            subprocess.run(["msg", "*", safe[:255]], timeout=5, capture_output=True)
        elif (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")) and shutil.which("notify-send"):
            subprocess.run(["notify-send", f"labctl: message from {sender}", safe], timeout=5, capture_output=True)
    except (OSError, subprocess.SubprocessError) as why:
        log(f"(the desktop notification failed: {why})")


# ---- the asker's loop ---------------------------------------------------------------------

def build_request(function: str, text: str, key: Optional[bytes], wall_s: float, nonce: bytes) -> Request:
    code = FUNCTIONS[function]
    check_text(code, text)
    if key is not None:
        return sign_request(key, code, text, wall_s, nonce)
    return Request(code, text)


def _asker_name(rng: random.Random) -> str:
    return ASKER_PREFIX + "ask" + "%05d" % rng.randrange(100000)


def run_ask(args, say=print) -> int:
    """Ask every agent in the roll call once; show answers as they arrive; exit 0 or 3."""
    lib = _spread()
    key = load_key(args.key) if args.key else None
    rng = random.SystemRandom()
    try:
        request = build_request(args.function, args.text, key, time.time(), os.urandom(NONCE_BYTES))
    except ValueError as why:
        raise ToolError(f"ask {args.function}: {why}") from None
    if request.code in SIGNED_ONLY and key is None:
        say(f"note: {args.function} without --key is refused by every agent (keyed agents want it signed, "
            f"agents without a key never obey it)")
    timeout_s = args.timeout if args.timeout is not None else (
        QUIT_TIMEOUT_S if request.code == "Z" else DEFAULT_TIMEOUT_S)
    try:
        mbox = _connect_asker(lib, args.daemon, rng)
    except (lib.SpreadError, OSError) as why:
        raise ToolError(f"cannot reach the daemon {args.daemon}: {why}") from None
    core = AskCore(request, rng.randrange(1, 0x8000), mbox.private_group, timeout_s)
    roster = roster_group(args.group)
    view = _LiveView(args, core)
    try:
        with mbox, view:
            mbox.join(roster)
            core.start(time.monotonic())
            while not core.done:
                msg = mbox.receive(timeout=RECEIVE_EVERY_S)
                now = time.monotonic()
                if isinstance(msg, lib.MembershipMessage) and msg.group == roster and msg.is_regular:
                    for out in core.on_membership(msg.members, now):
                        mbox.multicast(lib.AGREED_MESS, args.group, out.data, mess_type=out.request_id)
                elif isinstance(msg, lib.RegularMessage):
                    if core.on_answer(msg.sender, msg.mess_type, msg.data, now) is not None:
                        view.refresh()
                core.tick(now)
                view.refresh(quiet=True)
    except (KeyboardInterrupt, Stopped):
        core._done("interrupted")
    except (lib.SpreadError, OSError) as why:
        raise ToolError(f"the daemon {args.daemon} ended the session: {why}") from None
    summary = core.summary()
    print_results(summary, args, say, live_shown=view.live is not None)
    return EXIT_OK if summary.complete else EXIT_MISSING


def _connect_asker(lib, daemon: str, rng: random.Random):
    last = None
    for _ in range(4):   # an asker name already taken: another asker drew the same number
        try:
            return lib.connect(daemon, _asker_name(rng), group_membership=True)
        except lib.RejectNotUnique as why:
            last = why
    raise last


class _LiveView:
    """rich.Live around the collecting loop, when the output is a terminal and a table is wanted."""

    def __init__(self, args, core: AskCore):
        self.args = args
        self.core = core
        self.live = None
        self.next_at = 0.0
        if rich is not None and sys.stdout.isatty() and not args.json and not args.csv and core.code in QUESTIONS:
            self.live = Live(self._make(), auto_refresh=False, transient=True)

    def _make(self):
        return render_table(self.core.summary(), self.args.sort, self.args.reverse, waiting=True)

    def __enter__(self):
        if self.live:
            self.live.__enter__()
        return self

    def __exit__(self, *exc):
        if self.live:
            self.live.__exit__(*exc)

    def refresh(self, quiet: bool = False) -> None:
        if self.live and (not quiet or time.monotonic() >= self.next_at):
            self.next_at = time.monotonic() + REFRESH_S
            self.live.update(self._make(), refresh=True)


def print_results(summary: Summary, args, say, live_shown: bool = False) -> None:
    if args.json:
        for line in render_json(summary):
            say(line)
        return
    if args.csv:
        sys.stdout.write(render_csv(summary, args.sort, args.reverse))
        print(summary_line(summary), file=sys.stderr)
        return
    if summary.function != "message":
        plain = rich is None or not sys.stdout.isatty()   # a pipe or a file: plain text
        table = render_table(summary, args.sort, args.reverse, plain=plain)
        if plain:
            say(table)
        else:
            Console().print(table)
    say(summary_line(summary))


def run_menu(args, say=print, read=input) -> int:
    """The thesis's window of Figure 42 as a prompt: a function, its argument, the answers; again."""
    prompts = {"1": ("message", "text to show on every screen: "), "2": ("free", None),
               "3": ("running", "program name: "), "4": ("files", "file extension: "),
               "5": ("user", "login: "), "Z": ("quit", None)}
    code = EXIT_OK
    while True:
        say(render_menu(args.group, args.daemon, args.key is not None))
        try:
            choice = read("choice: ").strip().upper()
            if choice in ("", "Q"):
                return code
            if choice not in prompts:
                say(f"{choice!r}: choose 1-5, Z, or Q")
                continue
            function, prompt = prompts[choice]
            text = read(prompt) if prompt else ""
            if choice == "Z" and read("stop every agent? type yes: ").strip().lower() != "yes":
                continue
        except EOFError:
            return code
        one = argparse.Namespace(**{**vars(args), "function": function, "text": text})
        try:
            code = run_ask(one, say)
        except ToolError as why:
            say(f"labctl ask: {why}")
            code = EXIT_USAGE


# ============================================================================================
# Terminal rendering
# ============================================================================================

COLUMNS = {
    "free": ("machine", "free", "users", "ms"),
    "running": ("machine", "running", "processes", "ms"),
    "files": ("machine", "files", "kbytes", "truncated", "ms"),
    "user": ("machine", "logged_in", "ms"),
    "quit": ("machine", "stopped", "ms"),
    "message": ("machine",),
}
SORTABLE = sorted({c for cols in COLUMNS.values() for c in cols})


def natural_key(name: str):
    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", name)]


def display_names(members: Iterable[str]) -> Dict[str, str]:
    """'#lab07#d1' -> 'lab07'; when two daemons each have a lab07, 'lab07@d1' and 'lab07@d2'."""
    members = list(members)
    short = {m: member_name(m) for m in members}
    counts: Dict[str, int] = {}
    for name in short.values():
        counts[name] = counts.get(name, 0) + 1
    return {m: (s if counts[s] == 1 else s + "@" + m.split("#")[-1]) for m, s in short.items()}


def answer_rows(summary: Summary, sort: str = "machine", reverse: bool = False) -> List[Dict[str, object]]:
    """One dict per answering machine: machine, the function's fields, ms; sorted as asked."""
    names = display_names(summary.asked)
    rows = []
    for row in summary.rows:
        values: Dict[str, object] = {"machine": names.get(row.member, member_name(row.member))}
        if row.answer is None:
            values["stopped"] = True
        else:
            values.update((k, v) for k, v in row.answer.fields if k != "machine")
        values["ms"] = round(row.ms, 1)
        rows.append(values)
    column = sort if sort in COLUMNS[summary.function] else "machine"

    def key(values):
        value = values.get(column)
        if column == "machine":
            return natural_key(str(value))
        return (value, natural_key(str(values["machine"])))
    return sorted(rows, key=key, reverse=reverse)


def summary_line(summary: Summary) -> str:
    names = display_names(summary.asked)
    verb = "stopped" if summary.function == "quit" else "answered"
    if summary.function == "message":
        return f"{summary.function}: sent to {len(summary.asked)} agents ({summary.ended})"
    missing = ", ".join(f"{names[m]} ({why})" for m, why in
                        sorted(summary.missing.items(), key=lambda kv: natural_key(names[kv[0]])))
    line = f"{summary.function}: asked {len(summary.asked)}, {verb} {len(summary.rows)}"
    if missing:
        line += f"; not {verb}: {missing}"
    return line + f" [{summary.ended}]"


def render_table(summary: Summary, sort: str = "machine", reverse: bool = False, waiting: bool = False,
                 plain: bool = False):
    """A pure function from a summary to a rich Table (or plain text without rich)."""
    cells = answer_cells(summary, sort, reverse)
    verb = "stopped" if summary.function == "quit" else "answered"
    title = f"{summary.function}: {len(cells)} of {len(summary.asked)} {verb}" + (" (waiting...)" if waiting else "")
    return _table(title, COLUMNS[summary.function], cells, plain)


def answer_cells(summary: Summary, sort: str = "machine", reverse: bool = False) -> List[List[str]]:
    """The table's rows as text, in the function's columns (the table and the CSV)."""
    columns = COLUMNS[summary.function]
    return [[_word(values.get(c, "")) for c in columns] for values in answer_rows(summary, sort, reverse)]


def _table(title: str, columns: Sequence[str], rows: Sequence[Sequence[str]], plain: bool = False):
    """A rich Table, machine names to the left and numbers to the right; or the same as aligned
    plain text (without rich, or when asked: a pipe, a file)."""
    if rich is None or plain:
        widths = [max([len(c)] + [len(row[i]) for row in rows]) for i, c in enumerate(columns)]
        lines = [title] + ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)) for row in [columns, *rows]]
        return "\n".join(line.rstrip() for line in lines)
    table = Table(title=title)
    for column in columns:
        table.add_column(column, justify="left" if column == "machine" else "right")
    for row in rows:
        table.add_row(*row)
    return table


def render_json(summary: Summary) -> List[str]:
    """One JSON object per answering machine, then one summary object."""
    lines = [json.dumps(values) for values in answer_rows(summary)]
    names = display_names(summary.asked)
    missing = sorted((names[m] for m in summary.missing), key=natural_key)
    lines.append(json.dumps({"function": summary.function, "asked": len(summary.asked), "answered": len(summary.rows),
                             "missing": missing, "why": {names[m]: w for m, w in summary.missing.items()},
                             "ended": summary.ended}))
    return lines


def render_csv(summary: Summary, sort: str = "machine", reverse: bool = False) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS[summary.function])
    writer.writerows(answer_cells(summary, sort, reverse))
    return out.getvalue()


def render_menu(group: str, daemon: str, keyed: bool) -> str:
    lock = "" if keyed else "   (needs --key)"
    return "\n".join([
        f"labctl: the agents of group {group} at {daemon} (thesis 8.1.2)",
        f"  1  message to every screen{lock}",
        "  2  which machines are free",
        "  3  where is a program running",
        "  4  files of a kind on each machine",
        "  5  where is a user logged in",
        f"  Z  stop the agents{lock}",
        "  Q  leave",
    ])


# ============================================================================================
# Command line
# ============================================================================================

def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 < value <= MAX_TIMEOUT_S:
        raise argparse.ArgumentTypeError(f"{value:g} s: between 0 and {MAX_TIMEOUT_S:g}")
    return value


def _typed(check):
    def parse(text: str) -> str:
        try:
            return check(text)
        except ValueError as why:
            raise argparse.ArgumentTypeError(str(why)) from None
    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="labctl.py", description="The thesis's lab-management application (8.1): a resident agent on every lab machine (agent) and a query program that asks them all at once (ask).")
    sub = parser.add_subparsers(dest="cmd", metavar="{agent,ask,keygen}")
    sub.required = True
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--daemon", default=DEFAULT_DAEMON, help=f"spread_name of the daemon (default {DEFAULT_DAEMON})")
    common.add_argument("--group", type=_typed(check_group), default=DEFAULT_GROUP, help="the agents' group (default GG)")
    common.add_argument("--key", metavar="FILE", help="the shared key (labctl.py keygen FILE)")
    agent = sub.add_parser("agent", parents=[common], help="the resident program of every lab machine (8.1.1)")
    agent.add_argument("--name", type=_typed(check_agent_name), default=None,
                       help="this machine's name at the daemon (default: the host name cut to 10 characters)")
    agent.add_argument("--files-root", action="append", metavar="DIR",
                       help="where function 4 counts files (repeatable; default: the home folders)")
    ask = sub.add_parser("ask", parents=[common], help="ask every agent (8.1.2); no FUNCTION: the menu",
                         description="FUNCTION is one of: message TEXT, free, running NAME, files EXT, user LOGIN, quit")
    ask.add_argument("function", nargs="?", choices=list(FUNCTIONS), metavar="FUNCTION")
    ask.add_argument("text", nargs="?", default=None, metavar="ARG")
    ask.add_argument("--timeout", type=_seconds, default=None, metavar="SECONDS",
                     help=f"wait at most this long (default {DEFAULT_TIMEOUT_S:g}; quit {QUIT_TIMEOUT_S:g})")
    ask.add_argument("--sort", choices=SORTABLE, default="machine", metavar="COLUMN",
                     help="column to sort the table by: machine or one of the function's (default machine)")
    ask.add_argument("--reverse", action="store_true", help="sort from the largest")
    ask.add_argument("--json", action="store_true", help="one JSON object per machine, then a summary object")
    ask.add_argument("--csv", action="store_true", help="the table as CSV (the summary goes to stderr)")
    keygen = sub.add_parser("keygen", help="write a new shared key to FILE (mode 600)")
    keygen.add_argument("file")
    return parser


def _check_ask_args(parser: argparse.ArgumentParser, args) -> None:
    if args.function is None:
        return
    code = FUNCTIONS[args.function]
    if code in ARGUMENT_OF and args.text is None:
        parser.error(f"ask {args.function} needs its {ARGUMENT_OF[code]}")
    if code not in ARGUMENT_OF and args.text is not None:
        parser.error(f"ask {args.function} takes no argument (got {args.text!r})")
    args.text = args.text or ""
    try:
        check_text(code, args.text)
    except ValueError as why:
        parser.error(f"ask {args.function}: {why}")
    if args.json and args.csv:
        parser.error("--json or --csv, not both")
    if args.sort not in COLUMNS[args.function]:
        parser.error(f"--sort {args.sort}: {args.function} has the columns {', '.join(COLUMNS[args.function])}")


def react_to_ctrl_c() -> None:
    """Take SIGINT back: a shell without job control (a script, `cmd &`) starts its background
    jobs with SIGINT ignored, and Python keeps it so, so Ctrl-C stopped the script but left
    this process running (and `kill -INT` did nothing)."""
    try:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    except ValueError:   # not the main thread (a test calling main()): nothing to take back
        pass


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    react_to_ctrl_c()
    try:
        if args.cmd == "keygen":
            return run_keygen(args.file)
        if args.cmd == "agent":
            if args.name is None:
                args.name = default_agent_name(socket.gethostname())
            return run_agent(args)
        _check_ask_args(parser, args)
        if args.function is None:
            return run_menu(args)
        return run_ask(args)
    except ToolError as why:
        print(f"labctl {args.cmd}: {why}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
