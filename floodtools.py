#!/usr/bin/env python3
"""floodtools.py: the thesis's flood experiment (section 8.2): FLOOENV sends, FLOOREC receives.

    python3 floodtools.py recv --name h2                  # FLOOREC: on every lab machine
    python3 floodtools.py send --count 2000 --size 1000 --service safe     # FLOOENV: one batch
    python3 floodtools.py experiment --hosts 9            # the whole experiment on this machine
    sudo python3 floodtools.py experiment --topology thesis --wan both   # Quadro 4's three sites

A batch is a start marker, COUNT data messages and an end marker sent to group `flood`. Each
receiver sends a start record and an end record (elapsed time, real count) to group `log`, where
`python3 logbm.py record` (LOGBM) writes them to a file; `python3 logbm.py report` makes the tables.
Both tools speak the Spread client protocol through spread_mini's client library, so they work
against spread_mini's daemon and a real Spread daemon alike.

Module map, in the order a batch meets the code:
    Marker, encode_start/_end/_data/_echo, decode_marker   wire format of the flood messages
    LogRecord, format_record, parse_record                 the log records (logbm.py stores them)
    FlooEnvCore    FLOOENV: window, echoes, rate, intervals (outputs Multicast, Interval)
    FlooRecCore    FLOOREC: BatchProgress per batch, records (outputs SendRecord, Say)
    batch_matrix   the experiment's batches (BatchSpec)
    Reconnect      when FLOOREC --reconnect tries again, and the line that says it is back
    run_send, run_recv, run_experiment (_Lab; _WanLab: three sites joined by an emulated WAN)
                                                             I/O loops
    run_wan_comparison, wan_comparison_text, batch_span_s   --wan both: HOP against one ring
    render_interval, render_summary                          terminal rendering
    build_parser, main                                       command line
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

try:
    import rich
except ImportError:  # plain text still works
    rich = None

# spread_mini is imported lazily (see _spread()), so that the wire format and the cores can be
# used and tested on their own.
sp = None

# ============================================================================================
# Constants
# ============================================================================================

DEFAULT_DAEMON = "4803@127.0.0.1"
DEFAULT_GROUP = "flood"              #: where FLOOENV sends its batches
LOG_GROUP = "log"                    #: where FLOOREC sends its records (section 8.2)

#: mess_type of each kind of flood message (16 bits); 0x46 is "F", so that a program that
#: prints mess_type shows where these come from. The payload is checked too (other teams).
MESS_START = 0x4601
MESS_DATA = 0x4602
MESS_END = 0x4603
MESS_ECHO = 0x4604                   #: FLOOENV's self-addressed flow-control echo
MESS_RECORD = 0x4605                 #: FLOOREC's log records to group `log`
MESS_JOINED = 0x4606                 #: FLOOREC's AGREED echo to itself, sent after its join

SERVICE_NAMES = ("unreliable", "reliable", "fifo", "causal", "agreed", "safe")

MIN_SIZE_BYTES = 32                  #: a data message carries "FLD <batch> <seq> "
MAX_SIZE_BYTES = 100_000             #: well under Spread's 143152-byte body limit
MAX_COUNT = 10_000_000
MAX_NAME_CHARS = 31
MAX_BATCH_CHARS = 16
MAX_RECORD_BYTES = 1000              #: one log record, one line

NAME_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,31}$")
BATCH_RE = re.compile(r"^[A-Za-z0-9_-]{1,16}$")

COUNTER_EVERY = 1000                 #: FLOOREC prints a counter every 1000 messages, as in 8.2.1
END_GRACE_S = 2.0                    #: after the end marker, wait this long for stragglers
IDLE_TIMEOUT_S = 30.0                #: a batch with no message for this long ends (sender died)
MAX_OPEN_BATCHES = 16                #: batches a receiver follows at once
MAX_FINISHED_REMEMBERED = 256        #: ids of finished batches (late messages are ignored)

#: Flow control of FLOOENV. At most WINDOW data messages are "in flight": sent but not yet
#: confirmed by the echo that the sender sends to its own private group every ECHO_EVERY data
#: messages. The sender is not a member of the flood group, so the daemon queues nothing for it
#: but these echoes (at most WINDOW/ECHO_EVERY + 2): the per-session limit (MAX_SESSION, 1000 in
#: Spread and spread_mini) can never disconnect it, whatever the receivers do.
DEFAULT_WINDOW = 500
MAX_WINDOW = 50_000
DEFAULT_ECHO_EVERY = 50
REPORT_EVERY_S = 1.0                 #: iperf3-like progress line interval
STALL_TIMEOUT_S = 30.0               #: no echo for this long: the sender gives up
MAX_RECONNECT_ATTEMPTS = 120         #: recv --reconnect: tries to reach a vanished daemon
MIN_RETRY_DELAY_S = 0.5              #: ... the second and later ones this far apart at least
EXIT_CUT_OFF = 3                     #: recv: the daemon cut this receiver off (without --reconnect)
EXIT_DAEMON_GONE = 4                 #: recv: the daemon is gone and no other of the list is up

#: The experiment's batch matrix. The thesis's own counts are in its Quadros 6-13, which are cut
#: off in our copy; it says only that disconnections began "above a thousand messages" with the
#: daemon's queue limit at 1000. The default counts keep a 9-host run to a few minutes here;
#: --full uses the larger counts of a lab session.
DEFAULT_COUNTS = (1000, 5000)
FULL_COUNTS = (1000, 5000, 10000, 50000)
MATRIX_SIZES = (100, 1000)
MATRIX_SERVICES = ("reliable", "safe")

MAX_LAB_HOSTS = 200                  #: labnet.py's limit: the daemons' hosts plus the receivers'
THESIS_SITES = 3                     #: Quadro 4: three campus segments, a daemon in each
THESIS_RECEIVERS = (40, 79, 48)      #: Quadro 4: the lab machines of each segment
WAN_MODES = ("hop", "ring")         #: --wan both runs these, in this order
HOP_SHARE_OF_WAN = 0.98              #: --wan hop: the HOP bucket's rate, as a share of --wan-mbit
RING_SEGMENT_ADDRESS = "239.255.4.3" #: the generated spread.conf's segment (not used for sending)
RING_FORM_TIMEOUT_S = 30.0           #: the daemons of --daemons N must form one ring by then
MAX_PORT_TRIES = 20


# ============================================================================================
# Wire format
# ============================================================================================
# Markers and records are one line of ASCII `key=value` words: readable in a packet dump, in
# `spread_mini.py user`, in the log file, and easy to cut with awk. Values never hold spaces
# (names are checked against NAME_RE / BATCH_RE).

class MalformedMessage(ValueError):
    """A message on the flood or log group that is not ours or not well formed."""


@dataclass
class Marker:
    kind: str                    # "start" or "end"
    batch: str
    count: int = 0
    size: int = 0
    service: str = ""
    sender: str = ""
    start: str = ""              # sender's clock at the start, ISO 8601 (start marker)
    sent: int = 0                # data messages sent (end marker)


def check_name(name: str, what: str = "name") -> str:
    if not NAME_RE.match(name or ""):
        raise ValueError(f"{what} {name!r}: 1 to {MAX_NAME_CHARS} characters from A-Z a-z 0-9 _ . : -")
    return name


def check_batch(batch: str) -> str:
    if not BATCH_RE.match(batch or ""):
        raise ValueError(f"batch id {batch!r}: 1 to {MAX_BATCH_CHARS} characters from A-Z a-z 0-9 _ -")
    return batch


def iso_time(wall: float) -> str:
    """The local clock as 2026-11-22T08:31:02.123 (the machine's own clock, as in 8.2)."""
    return datetime.datetime.fromtimestamp(wall).isoformat(timespec="milliseconds")


def _words(text: str) -> Dict[str, str]:
    out = {}
    for word in text.split():
        key, eq, value = word.partition("=")
        if not eq or not key:
            raise MalformedMessage(f"not key=value: {word[:40]!r}")
        out[key] = value
    return out


def _int_field(fields: Dict[str, str], key: str, low: int, high: int) -> int:
    try:
        value = int(fields[key])
    except KeyError:
        raise MalformedMessage(f"missing {key}=") from None
    except ValueError:
        raise MalformedMessage(f"{key}= is not a number: {fields[key][:20]!r}") from None
    if not low <= value <= high:
        raise MalformedMessage(f"{key}={value} outside {low}..{high}")
    return value


def encode_start(batch: str, count: int, size: int, service: str, sender: str, start_wall: float) -> bytes:
    return (f"FLOOD start batch={batch} count={count} size={size} service={service} "
            f"sender={sender} start={iso_time(start_wall)}").encode()


def encode_end(batch: str, sent: int) -> bytes:
    return f"FLOOD end batch={batch} sent={sent}".encode()


def encode_data(batch: str, seq: int, size: int) -> bytes:
    """A data message of exactly `size` bytes: a short header, then dots."""
    head = f"FLD {batch} {seq} ".encode()
    return head + b"." * (size - len(head))


def encode_echo(batch: str, seq: int) -> bytes:
    return f"FLOOD echo batch={batch} seq={seq}".encode()


def decode_marker(mess_type: int, data: bytes) -> Marker:
    """Start or end marker; raises MalformedMessage for anything else."""
    if mess_type not in (MESS_START, MESS_END) or not data.startswith(b"FLOOD "):
        raise MalformedMessage("not a flood marker")
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise MalformedMessage("marker is not ASCII") from None
    words = text.split(None, 2)
    if len(words) < 3:
        raise MalformedMessage("marker too short")
    kind, fields = words[1], _words(words[2])
    batch = fields.get("batch", "")
    if not BATCH_RE.match(batch):
        raise MalformedMessage(f"bad batch id {batch[:20]!r}")
    if kind == "start" and mess_type == MESS_START:
        service = fields.get("service", "")
        if service not in SERVICE_NAMES:
            raise MalformedMessage(f"unknown service {service[:20]!r}")
        sender = fields.get("sender", "")
        if not NAME_RE.match(sender):
            raise MalformedMessage(f"bad sender {sender[:20]!r}")
        return Marker("start", batch, count=_int_field(fields, "count", 0, MAX_COUNT),
                      size=_int_field(fields, "size", 1, MAX_SIZE_BYTES), service=service,
                      sender=sender, start=fields.get("start", "")[:32])
    if kind == "end" and mess_type == MESS_END:
        return Marker("end", batch, sent=_int_field(fields, "sent", 0, MAX_COUNT))
    raise MalformedMessage(f"unknown marker {kind[:20]!r}")


def decode_data(data: bytes) -> Tuple[str, int]:
    """(batch, seq) of a data message; raises MalformedMessage."""
    if not data.startswith(b"FLD "):
        raise MalformedMessage("not a flood data message")
    parts = data[:4 + MAX_BATCH_CHARS + 12].split(b" ", 3)
    if len(parts) < 4:
        raise MalformedMessage("data header cut short")
    try:
        batch, seq = parts[1].decode("ascii"), int(parts[2])
    except (UnicodeDecodeError, ValueError):
        raise MalformedMessage("bad data header") from None
    if not BATCH_RE.match(batch):
        raise MalformedMessage("bad batch id in data")
    return batch, seq


def decode_echo(data: bytes) -> Tuple[str, int]:
    if not data.startswith(b"FLOOD echo "):
        raise MalformedMessage("not an echo")
    fields = _words(data[11:].decode("ascii", "replace"))
    return fields.get("batch", ""), _int_field(fields, "seq", 0, MAX_COUNT)


# ---- log records (FLOOREC -> group `log` -> LOGBM's file -> logbm.py report) ---------------
# One line per record:
#   FLOODLOG rec=start date=2026-11-22 time=08:31:02.123 machine=h2 batch=r1000x2000 count=2000
#            size=1000 service=safe sender=h1
#   FLOODLOG rec=end ... (the same fields) received=2000 elapsed_s=1.234567 end=complete
# `end` says why the batch ended: complete (all COUNT arrived), marker (the end marker came and
# the grace time passed with messages missing), idle (nothing for IDLE_TIMEOUT_S: the sender
# died), disconnected (the session ended: `cause=cut-off` when the daemon cut this receiver off,
# a slow receiver as in 8.2.1; `cause=daemon-gone` when the daemon died or was stopped),
# superseded (too many batches at once). Unknown keys are kept, so the format can grow.

RECORD_KINDS = ("start", "end")
END_REASONS = ("complete", "marker", "idle", "disconnected", "superseded")
RECORD_KEYS = ("rec", "date", "time", "machine", "batch", "count", "size", "service", "sender")
END_KEYS = ("received", "elapsed_s", "end")


@dataclass
class LogRecord:
    rec: str                     # "start" or "end"
    date: str                    # receiver's clock, YYYY-MM-DD
    time: str                    # receiver's clock, HH:MM:SS.mmm
    machine: str
    batch: str
    count: int
    size: int
    service: str
    sender: str
    received: int = 0            # end records only
    elapsed_s: float = 0.0       # end records only: first to last message of the batch
    end: str = ""                # end records only: one of END_REASONS
    extra: Dict[str, str] = field(default_factory=dict)

    @property
    def msgs_per_s(self) -> float:
        return self.received / self.elapsed_s if self.elapsed_s > 0 else 0.0


def format_record(r: LogRecord) -> str:
    line = (f"FLOODLOG rec={r.rec} date={r.date} time={r.time} machine={r.machine} "
            f"batch={r.batch} count={r.count} size={r.size} service={r.service} sender={r.sender}")
    if r.rec == "end":
        line += f" received={r.received} elapsed_s={r.elapsed_s:.6f} end={r.end}"
    for key, value in r.extra.items():
        line += f" {key}={value}"
    return line


def parse_record(line: str) -> LogRecord:
    """A record line back into a LogRecord; raises MalformedMessage saying what is wrong."""
    if len(line) > MAX_RECORD_BYTES:
        raise MalformedMessage("record longer than %d bytes" % MAX_RECORD_BYTES)
    words = line.strip().split(None, 1)
    if not words or words[0] != "FLOODLOG":
        raise MalformedMessage("not a FLOODLOG record")
    fields = _words(words[1] if len(words) > 1 else "")
    missing = [k for k in RECORD_KEYS if k not in fields]
    if fields.get("rec") == "end":
        missing += [k for k in END_KEYS if k not in fields]
    if missing:
        raise MalformedMessage("missing " + ", ".join(missing))
    if fields["rec"] not in RECORD_KINDS:
        raise MalformedMessage(f"rec={fields['rec'][:20]} is neither start nor end")
    for key in ("machine", "sender"):
        if not NAME_RE.match(fields[key]):
            raise MalformedMessage(f"bad {key}={fields[key][:40]}")
    if not BATCH_RE.match(fields["batch"]):
        raise MalformedMessage(f"bad batch={fields['batch'][:40]}")
    if fields["service"] not in SERVICE_NAMES:
        raise MalformedMessage(f"unknown service={fields['service'][:20]}")
    record = LogRecord(fields["rec"], fields["date"], fields["time"], fields["machine"],
                       fields["batch"], _int_field(fields, "count", 0, MAX_COUNT),
                       _int_field(fields, "size", 1, MAX_SIZE_BYTES), fields["service"],
                       fields["sender"])
    if record.rec == "end":
        record.received = _int_field(fields, "received", 0, MAX_COUNT)
        try:
            record.elapsed_s = float(fields["elapsed_s"])
        except ValueError:
            raise MalformedMessage("elapsed_s is not a number") from None
        if not 0 <= record.elapsed_s < 1e7:
            raise MalformedMessage("elapsed_s out of range")
        record.end = fields["end"]
    known = set(RECORD_KEYS) | set(END_KEYS)
    record.extra = {k: v for k, v in fields.items() if k not in known}
    return record


def clock_fields(wall: float) -> Tuple[str, str]:
    """(date, time) of the receiver's own clock for a record."""
    moment = datetime.datetime.fromtimestamp(wall)
    return moment.strftime("%Y-%m-%d"), moment.strftime("%H:%M:%S.") + f"{moment.microsecond // 1000:03d}"


# ============================================================================================
# Protocol core
# ============================================================================================
# Outputs of both cores; the I/O loop carries them out.

@dataclass
class Multicast:
    """Send `data` with `mess_type`; to the flood group, or to our own private group (echo)."""
    mess_type: int
    data: bytes
    to_self: bool = False


@dataclass
class SendRecord:
    """A log record for group `log`."""
    line: str


@dataclass
class Say:
    """A line for the terminal (the student watching)."""
    text: str


@dataclass
class Interval:
    """One iperf3-like progress line of FLOOENV."""
    start_s: float
    end_s: float
    messages: int
    bytes: int

    def as_dict(self) -> dict:
        span = max(self.end_s - self.start_s, 1e-9)
        return {"start_s": round(self.start_s, 3), "end_s": round(self.end_s, 3),
                "messages": self.messages, "bytes": self.bytes,
                "msgs_per_s": round(self.messages / span, 1),
                "mbit_per_s": round(self.bytes * 8 / span / 1e6, 3)}


# ---- FLOOREC -------------------------------------------------------------------------------

RECEIVING, DRAINING, ENDED = "RECEIVING", "DRAINING", "ENDED"


@dataclass
class BatchProgress:
    marker: Marker
    started_at: float            # monotonic, when the start marker arrived
    started_wall: float
    state: str = RECEIVING
    received: int = 0
    last_at: float = 0.0         # monotonic, last data message of this batch
    last_seen_at: float = 0.0    # monotonic, last message of any kind of this batch
    drain_deadline: float = 0.0


class FlooRecCore:
    """FLOOREC (section 8.2): follows batches on the flood group and produces the log records.

    Per batch: the start marker opens it (state RECEIVING) and yields the start record; data
    messages are counted; the batch ends when all COUNT messages arrived (complete), or the end
    marker came and END_GRACE_S passed (state DRAINING, then `marker`: some never came), or no
    message for IDLE_TIMEOUT_S (`idle`), or the daemon cut us off (`disconnected`). Every change
    is said on the terminal with its reason and counted in `self.changes`.
    """

    def __init__(self, machine: str, counter_every: int = COUNTER_EVERY, end_grace_s: float = END_GRACE_S,
                 idle_timeout_s: float = IDLE_TIMEOUT_S, max_open: int = MAX_OPEN_BATCHES):
        self.machine = check_name(machine, "machine name")
        self.counter_every = counter_every
        self.end_grace_s = end_grace_s
        self.idle_timeout_s = idle_timeout_s
        self.max_open = max_open
        self.open: Dict[str, BatchProgress] = {}
        self.early: Dict[str, dict] = {}   #: batches seen before their start marker (insertion order)
        self._hot: Optional[Tuple[bytes, str]] = None   #: (data header prefix, batch) of the last data
        self.finished: deque = deque(maxlen=MAX_FINISHED_REMEMBERED)
        self.last_records: deque = deque(maxlen=20)  #: for the live table
        self.total = 0           #: data messages counted, all batches (the thesis's counter)
        self.ignored: Dict[str, int] = {}  #: foreign / late / orphan messages, by reason
        self.changes: Dict[str, int] = {}  #: state changes by "FROM->TO (reason)"

    # -- events --------------------------------------------------------------------------
    def on_message(self, mess_type: int, data: bytes, now: float, wall: float) -> list:
        if mess_type == MESS_DATA:
            return self._on_data(data, now, wall)
        try:
            marker = decode_marker(mess_type, data)
        except MalformedMessage as why:
            return self._ignore(f"foreign ({why})")
        if marker.kind == "start":
            return self._on_start(marker, now, wall)
        return self._on_end(marker, now, wall)

    def tick(self, now: float, wall: float) -> list:
        out: list = []
        for progress in list(self.open.values()):
            if progress.state == DRAINING and now >= progress.drain_deadline:
                out += self._finish(progress, "marker", now, wall)
            elif now - progress.last_seen_at >= self.idle_timeout_s:
                out += self._finish(progress, "idle", now, wall)
        return out

    def on_disconnect(self, now: float, wall: float, cause: str = "") -> list:
        """The session ended: record what we had for every open batch, and why it ended
        (`cause=cut-off`: the daemon cut us off; `daemon-gone`: it died or was stopped)."""
        out: list = []
        for progress in list(self.open.values()):
            out += self._finish(progress, "disconnected", now, wall, cause)
        return out

    # -- handlers ------------------------------------------------------------------------
    def _on_start(self, marker: Marker, now: float, wall: float) -> list:
        if marker.batch in self.open:
            return self._ignore("duplicate start marker")
        if marker.batch in self.finished:
            self.finished.remove(marker.batch)   # the same id used again: a new batch
        out: list = []
        if len(self.open) >= self.max_open:
            oldest = min(self.open.values(), key=lambda p: p.started_at)
            out += self._finish(oldest, "superseded", now, wall)
        progress = BatchProgress(marker, started_at=now, started_wall=wall, last_at=now, last_seen_at=now)
        early = self.early.pop(marker.batch, None)
        if early is not None:
            # Messages that overtook the start marker (RELIABLE and UNRELIABLE promise no order):
            # they belong to the batch, and the batch began when the first of them came.
            progress.received, progress.started_at = early["data"], early["first_at"]
            self.total += early["data"]
            progress.last_at = early["last_at"]
        self.open[marker.batch] = progress
        out.append(self._enter_receiving(progress, f"start marker from {marker.sender}: {marker.count} x "
                                                   f"{marker.size} B {marker.service}"
                                         + (f" ({early['data']} messages came before it)" if early else "")))
        out.append(SendRecord(format_record(self._record(progress, "start", wall))))
        if progress.received >= marker.count:
            out += self._finish(progress, "complete", now, wall)
        elif early is not None and early["end"]:
            out += self._on_end(Marker("end", marker.batch), now, wall)
        return out

    def _note_early(self, batch: str, now: float, data: int = 0, end: bool = False) -> None:
        """Data or an end marker of a batch whose start marker has not come (yet): keep a count,
        for at most MAX_OPEN_BATCHES such batches (a receiver that joined mid-batch never sees
        the start marker; those counts age out)."""
        early = self.early.get(batch)
        if early is None:
            if len(self.early) >= self.max_open:
                self.early.pop(next(iter(self.early)))
                self._ignore("orphan (joined after the start marker)")
            early = self.early[batch] = {"data": 0, "first_at": now, "last_at": now, "end": False}
        early["data"] += data
        early["end"] = early["end"] or end
        if data:
            early["last_at"] = now

    def _on_data(self, data: bytes, now: float, wall: float) -> list:
        hot = self._hot
        if hot is not None and data.startswith(hot[0]):
            batch = hot[1]   # most messages belong to the batch before: skip parsing (15% of the CPU)
        else:
            try:
                batch, _seq = decode_data(data)
            except MalformedMessage as why:
                return self._ignore(f"foreign ({why})")
            self._hot = (f"FLD {batch} ".encode(), batch)
        progress = self.open.get(batch)
        if progress is None:
            if batch in self.finished:
                return self._ignore("late (batch already ended)")
            self._note_early(batch, now, data=1)
            return []
        progress.received += 1
        progress.last_at = progress.last_seen_at = now
        self.total += 1
        out: list = []
        if self.total % self.counter_every == 0:
            out.append(Say(f"{self.total} messages"))
        if progress.received >= progress.marker.count:
            out += self._finish(progress, "complete", now, wall)
        return out

    def _on_end(self, marker: Marker, now: float, wall: float) -> list:
        progress = self.open.get(marker.batch)
        if progress is None:
            if marker.batch in self.finished:
                return self._ignore("late (batch already ended)")
            self._note_early(marker.batch, now, end=True)
            return []
        progress.last_seen_at = now
        if progress.state == DRAINING:
            return self._ignore("duplicate end marker")
        progress.drain_deadline = now + self.end_grace_s
        return [self._enter_draining(progress, f"end marker: {progress.received} of {progress.marker.count} "
                                               f"so far; waiting {self.end_grace_s:g} s for the rest")]

    # -- transitions ---------------------------------------------------------------------
    def _finish(self, progress: BatchProgress, reason: str, now: float, wall: float, cause: str = "") -> list:
        del self.open[progress.marker.batch]
        self.finished.append(progress.marker.batch)
        record = self._record(progress, "end", wall)
        record.received = progress.received
        record.elapsed_s = max(progress.last_at - progress.started_at, 0.0)
        record.end = reason
        if cause:
            record.extra["cause"] = cause
        self.last_records.append(record)
        because = f" ({cause})" if cause else ""
        return [self._enter_ended(progress, f"{reason}{because}: {progress.received} of {progress.marker.count} "
                                            f"in {record.elapsed_s:.3f} s"),
                SendRecord(format_record(record))]

    def _enter_receiving(self, progress: BatchProgress, reason: str) -> Say:
        """Counting the batch's data messages."""
        return self._change(progress, "-", RECEIVING, reason)

    def _enter_draining(self, progress: BatchProgress, reason: str) -> Say:
        """The end marker came before all COUNT messages: a grace time for stragglers."""
        return self._change(progress, RECEIVING, DRAINING, reason)

    def _enter_ended(self, progress: BatchProgress, reason: str) -> Say:
        """The end record is out; the batch is forgotten but for its id."""
        return self._change(progress, progress.state, ENDED, reason)

    def _change(self, progress: BatchProgress, old: str, new: str, reason: str) -> Say:
        key = f"{old}->{new} ({reason.split(':')[0]})"
        self.changes[key] = self.changes.get(key, 0) + 1
        progress.state = new
        return Say(f"batch {progress.marker.batch}: {old} -> {new}: {reason}")

    def _ignore(self, reason: str) -> list:
        key = reason.split(" (")[0]
        self.ignored[key] = self.ignored.get(key, 0) + 1
        return []

    def _record(self, progress: BatchProgress, kind: str, wall: float) -> LogRecord:
        day, clock = clock_fields(wall)
        m = progress.marker
        return LogRecord(kind, day, clock, self.machine, m.batch, m.count, m.size, m.service, m.sender)

    def snapshot(self) -> dict:
        return {"machine": self.machine, "total": self.total, "ignored": dict(self.ignored),
                "open": [(p.marker.batch, p.state, p.received, p.marker.count) for p in self.open.values()],
                "last": [(r.batch, r.received, r.count, r.elapsed_s, r.end) for r in self.last_records]}


# ---- FLOOENV -------------------------------------------------------------------------------

SENDING, CLOSING, DONE, FAILED = "SENDING", "CLOSING", "DONE", "FAILED"


class FlooEnvCore:
    """FLOOENV (section 8.2): one batch of COUNT messages of SIZE bytes, with its own flow control.

    States: SENDING (start marker, then data while fewer than WINDOW are unconfirmed) ->
    CLOSING (end marker and a last echo sent; waiting for that echo) -> DONE; FAILED when no echo
    comes for STALL_TIMEOUT_S. Confirmation: every ECHO_EVERY data messages the sender sends an
    echo to its OWN private group with the batch's service (reliable for unreliable batches, so an
    echo is never lost). Its return means the daemon has taken in everything before it.
    """

    def __init__(self, batch: str, count: int, size: int, service: str, sender: str,
                 window: int = DEFAULT_WINDOW, echo_every: int = DEFAULT_ECHO_EVERY,
                 report_every_s: float = REPORT_EVERY_S, stall_timeout_s: float = STALL_TIMEOUT_S,
                 rate_msgs_per_s: float = 0.0):
        self.batch, self.count, self.size, self.service = check_batch(batch), count, size, service
        self.sender = check_name(sender, "sender name")
        if not MIN_SIZE_BYTES <= size <= MAX_SIZE_BYTES:
            raise ValueError(f"size {size}: {MIN_SIZE_BYTES} to {MAX_SIZE_BYTES} bytes")
        if not 0 <= count <= MAX_COUNT:
            raise ValueError(f"count {count}: 0 to {MAX_COUNT}")
        if service not in SERVICE_NAMES:
            raise ValueError(f"service {service!r}: one of {', '.join(SERVICE_NAMES)}")
        if not 1 <= echo_every <= window <= MAX_WINDOW:
            raise ValueError(f"need 1 <= echo_every ({echo_every}) <= window ({window}) <= {MAX_WINDOW}")
        if not 0 <= rate_msgs_per_s <= 1e7:
            raise ValueError(f"rate {rate_msgs_per_s}: 0 (no limit) to 1e7 messages per second")
        self.window, self.echo_every = window, echo_every
        self.rate_msgs_per_s = rate_msgs_per_s
        self.report_every_s, self.stall_timeout_s = report_every_s, stall_timeout_s
        self.state = "NEW"
        self.sent = 0            #: data messages handed to the daemon
        self.confirmed = 0       #: data messages confirmed by an echo
        self.final_echo = -1     #: seq of the echo that closes the batch
        self.started_at = self.finished_at = 0.0
        self.last_progress_at = 0.0
        self.intervals: List[Interval] = []
        self._interval_start_s = 0.0
        self._interval_confirmed = 0
        self.changes: List[str] = []              #: every state change with its reason, in order
        self.change_counts: Dict[str, int] = {}   #: state changes counted by "FROM->TO"
        self.failure = ""

    # -- events --------------------------------------------------------------------------
    def start(self, now: float, wall: float) -> list:
        self.started_at = self.last_progress_at = now
        out: list = [Multicast(MESS_START, encode_start(self.batch, self.count, self.size, self.service,
                                                        self.sender, wall))]
        self._enter_sending(f"start marker sent: {self.count} x {self.size} B {self.service}, "
                            f"window {self.window}, echo every {self.echo_every}")
        return out + self._fill(now)

    def on_own_message(self, mess_type: int, data: bytes, now: float) -> list:
        """A message delivered to us: only our echoes matter; the rest is ignored."""
        if mess_type != MESS_ECHO or self.state not in (SENDING, CLOSING):
            return []
        try:
            batch, seq = decode_echo(data)
        except MalformedMessage:
            return []
        if batch != self.batch or seq <= self.confirmed and seq != self.final_echo:
            return []
        out = self._intervals_until(now)   # seconds already past get what was confirmed in them
        self.confirmed = max(self.confirmed, min(seq, self.sent))
        self.last_progress_at = now
        if self.state == CLOSING and seq == self.final_echo:
            self.finished_at = now
            out += self._intervals_until(now, final=True)
            self._enter_done(f"last echo back: {self.confirmed} messages confirmed")
            return out
        return out + self._fill(now)

    def tick(self, now: float) -> list:
        if self.state not in (SENDING, CLOSING):
            return []
        out = self._intervals_until(now)
        if self.rate_msgs_per_s and self.state == SENDING:
            out += self._fill(now)
        if now - self.last_progress_at >= self.stall_timeout_s:
            self.failure = (f"no echo for {self.stall_timeout_s:g} s with {self.sent - self.confirmed} "
                            f"messages unconfirmed: is the daemon alive?")
            self.finished_at = now
            self._enter_failed(self.failure)
        return out

    def interrupt(self, now: float, why: str) -> list:
        """Stopped before the end (Ctrl-C): the end marker still goes out, with the count really
        sent, so that the receivers close the batch after their grace time (`end=marker`)
        instead of waiting IDLE_TIMEOUT_S for a marker that would never come."""
        if self.state not in (SENDING, CLOSING):
            return []
        out: list = []
        if self.state == SENDING:
            out.append(Multicast(MESS_END, encode_end(self.batch, self.sent)))
        self.finished_at = now
        self.failure = f"{why} after {self.sent} of {self.count} planned messages were sent; end marker sent"
        self._enter_failed(self.failure)
        return out

    # -- internals -----------------------------------------------------------------------
    def _allowed(self, now: float) -> int:
        """Data messages the rate limit allows by `now` (no limit: all of them)."""
        if not self.rate_msgs_per_s:
            return self.count
        return min(self.count, int(self.rate_msgs_per_s * (now - self.started_at)) + 1)

    def _fill(self, now: float) -> list:
        """Data while the window (and the rate, if any) allows, with an echo every echo_every;
        then the close."""
        out: list = []
        allowed = self._allowed(now)
        while self.state == SENDING and self.sent < allowed and self.sent - self.confirmed < self.window:
            self.sent += 1
            out.append(Multicast(MESS_DATA, encode_data(self.batch, self.sent, self.size)))
            if self.sent % self.echo_every == 0 and self.sent < self.count:
                out.append(Multicast(MESS_ECHO, encode_echo(self.batch, self.sent), to_self=True))
        if self.state == SENDING and self.sent == self.count:
            # The end marker goes to the receivers; the final echo tells us everything is in.
            self.final_echo = self.count + 1
            out.append(Multicast(MESS_END, encode_end(self.batch, self.sent)))
            out.append(Multicast(MESS_ECHO, encode_echo(self.batch, self.final_echo), to_self=True))
            self._enter_closing(f"all {self.count} data messages sent; end marker and last echo sent")
        return out

    def _intervals_until(self, now: float, final: bool = False) -> list:
        out: list = []
        while now - self.started_at >= self._interval_start_s + self.report_every_s:
            out.append(self._close_interval(self._interval_start_s + self.report_every_s))
        if final and (self.confirmed > self._interval_confirmed or not self.intervals):
            out.append(self._close_interval(now - self.started_at))
        return out

    def _close_interval(self, end_s: float) -> Interval:
        confirmed = min(self.confirmed, self.count)
        messages = confirmed - self._interval_confirmed
        interval = Interval(self._interval_start_s, end_s, messages, messages * self.size)
        self.intervals.append(interval)
        self._interval_start_s, self._interval_confirmed = end_s, confirmed
        return interval

    def _enter_sending(self, reason: str) -> None:
        """Data goes out while the window (and the rate) allow."""
        self._enter(SENDING, reason)

    def _enter_closing(self, reason: str) -> None:
        """Everything is sent; only the last echo is awaited."""
        self._enter(CLOSING, reason)

    def _enter_done(self, reason: str) -> None:
        self._enter(DONE, reason)

    def _enter_failed(self, reason: str) -> None:
        self._enter(FAILED, reason)

    def _enter(self, state: str, reason: str) -> None:
        self.changes.append(f"{self.state} -> {state}: {reason}")
        key = f"{self.state}->{state}"
        self.change_counts[key] = self.change_counts.get(key, 0) + 1
        self.state = state

    @property
    def done(self) -> bool:
        return self.state in (DONE, FAILED)

    def summary(self) -> dict:
        elapsed_s = max(self.finished_at - self.started_at, 1e-9)
        messages = min(self.confirmed, self.count)
        return {"batch": self.batch, "sender": self.sender, "service": self.service, "size": self.size,
                "count": self.count, "messages": messages, "bytes": messages * self.size,
                "seconds": round(elapsed_s, 6), "msgs_per_s": round(messages / elapsed_s, 1),
                "mbit_per_s": round(messages * self.size * 8 / elapsed_s / 1e6, 3),
                "state": self.state, "failure": self.failure}


# ---- the experiment's batch matrix ---------------------------------------------------------

@dataclass
class BatchSpec:
    batch: str
    count: int
    size: int
    service: str


def batch_matrix(counts: Sequence[int], sizes: Sequence[int], services: Sequence[str],
                 repeat: int = 1) -> List[BatchSpec]:
    """The thesis's matrix: every count with 100 and 1000 B, Reliable and Safe (8.2.2)."""
    out = []
    for r in range(1, repeat + 1):
        for size in sizes:
            for service in services:
                for count in counts:
                    tag = f"-{r}" if repeat > 1 else ""
                    batch = f"{service[0]}{size}x{count}{tag}"   # r1000x5000: readable in the tables
                    if not BATCH_RE.match(batch):
                        batch = f"{service[0]}{len(out) + 1:04d}"
                    out.append(BatchSpec(batch, count, size, service))
    return out


# ---- reconnecting (FLOOREC --reconnect; logbm.py connlog --reconnect) -----------------------
# labctl.py has the same class: each tool is one file that a lab machine copies alone.

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
    """A problem the user can fix (no daemon, a bad name...): one clear line, no traceback."""


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


def service_bits(lib, service: str) -> int:
    return {"unreliable": lib.UNRELIABLE_MESS, "reliable": lib.RELIABLE_MESS, "fifo": lib.FIFO_MESS,
            "causal": lib.CAUSAL_MESS, "agreed": lib.AGREED_MESS, "safe": lib.SAFE_MESS}[service]


def private_name_for(name: str) -> str:
    """A Spread private name (at most 10 characters, all above '#') from a machine name."""
    clean = "".join(ch for ch in name if "#" < ch <= "~")
    return (clean or "flood")[:10]


def connect_mailbox(lib, daemon: str, name: str, group_membership: bool = False):
    """Connect with a private name made from `name`; when the daemon already has one of that name
    (two tools on one machine), try a few with a random suffix instead."""
    base = private_name_for(name)
    rng = random.SystemRandom()
    candidates = [base] + [base[:6] + f"{rng.randrange(10000):04d}" for _ in range(3)]
    last = None
    for private in candidates:
        try:
            return lib.connect(daemon, private, priority=0, group_membership=group_membership)
        except lib.SpreadError as why:
            last = why
            if getattr(why, "code", None) != getattr(lib, "REJECT_NOT_UNIQUE", -6):
                break
        except OSError as why:
            last = why
            break
    raise ToolError(f"cannot connect to the daemon {daemon!r} as {base!r}: {last}")


def _perform_send(lib, mbox, outputs: list, data_bits: int, echo_bits: int, group: str) -> None:
    for out in outputs:
        if isinstance(out, Multicast):
            if out.to_self:
                mbox.multicast(echo_bits, mbox.private_group, out.data, mess_type=out.mess_type)
            else:
                mbox.multicast(data_bits, group, out.data, mess_type=out.mess_type)


def run_send(args, say=print) -> int:
    """FLOOENV: one batch, paced by the echoes; iperf3-like lines; the summary (or JSON)."""
    lib = _spread()
    batch = args.batch or f"{random.SystemRandom().randrange(16 ** 6):06x}"
    try:
        core = FlooEnvCore(batch, args.count, args.size, args.service, args.name, window=args.window,
                           echo_every=args.echo_every, stall_timeout_s=args.stall_timeout,
                           rate_msgs_per_s=args.rate)
    except ValueError as why:
        raise ToolError(str(why)) from None
    data_bits = service_bits(lib, args.service)
    echo_bits = lib.RELIABLE_MESS if args.service == "unreliable" else data_bits
    progress = _Progress(args.count, enabled=not args.json)
    if not args.json:
        say(f"FLOOENV {args.name}: batch {batch}, {args.count} x {args.size} B {args.service} "
            f"to {args.group!r} at {args.daemon}")
        say(render_interval_header())
    shown = 0
    interrupted = False
    try:
        shown = _send_loop(lib, core, args, batch, data_bits, echo_bits, progress)
    except KeyboardInterrupt:
        if core.state != FAILED:   # the connection was lost before the marker could go
            raise
        interrupted = True
    except lib.SpreadError as why:
        raise ToolError(f"the daemon {args.daemon} ended the session during batch {batch} "
                        f"after {core.sent} messages ({core.confirmed} confirmed): {why}") from None
    summary = core.summary()
    if args.json:
        say(json.dumps({"start": {"batch": batch, "sender": args.name, "group": args.group,
                                  "daemon": args.daemon, "count": args.count, "size": args.size,
                                  "service": args.service, "window": args.window},
                        "intervals": [i.as_dict() for i in core.intervals],
                        "end": {"sum": summary}}, indent=2))
    else:
        say(render_summary(summary))
    if not args.json and args.verbose:
        for change in core.changes[shown:]:
            say(f"FLOOENV {change}")
    if core.state == FAILED:
        print(f"floodtools send: {core.failure}", file=sys.stderr)
        return 130 if interrupted else 1
    return 0


def _send_loop(lib, core: FlooEnvCore, args, batch: str, data_bits: int, echo_bits: int, progress) -> int:
    """Start, then echoes in and data out until the batch is done; returns changes shown."""
    shown = 0
    with connect_mailbox(lib, args.daemon, args.name) as mbox, progress:
        try:
            _perform_send(lib, mbox, core.start(time.monotonic(), time.time()), data_bits, echo_bits, args.group)
            shown = _send_until_done(lib, mbox, core, args, batch, data_bits, echo_bits, progress)
        except KeyboardInterrupt:
            _perform_send(lib, mbox, core.interrupt(time.monotonic(), "interrupted (Ctrl-C)"), data_bits,
                          echo_bits, args.group)
            raise
    return shown


def _send_until_done(lib, mbox, core: FlooEnvCore, args, batch: str, data_bits: int, echo_bits: int,
                     progress) -> int:
    """Echoes in, data out, until the batch is done; returns the state changes shown."""
    shown = 0
    while not core.done:
        if not args.json and args.verbose:
            for change in core.changes[shown:]:
                progress.print(f"FLOOENV {change}")
            shown = len(core.changes)
        # With a rate limit the loop must wake up often enough to send on time.
        msg = mbox.receive(timeout=0.002 if args.rate else 0.2)
        now = time.monotonic()
        outputs = []
        if msg is not None and isinstance(msg, lib.RegularMessage):
            outputs = core.on_own_message(msg.mess_type, msg.data, now)
        outputs += core.tick(now)
        _perform_send(lib, mbox, outputs, data_bits, echo_bits, args.group)
        for out in outputs:
            if isinstance(out, Interval) and not args.json:
                progress.print(render_interval(batch, out))
        progress.update(core.confirmed)
    return shown


class _Progress:
    """A progress bar under the interval lines when rich and a terminal are there; else nothing."""

    def __init__(self, total: int, enabled: bool):
        self.bar = None
        if enabled and rich is not None and sys.stdout.isatty():
            from rich.progress import Progress
            self.bar = Progress(transient=True)
            self.task = self.bar.add_task("sending", total=total)

    def __enter__(self):
        if self.bar:
            self.bar.__enter__()
        return self

    def __exit__(self, *exc):
        if self.bar:
            self.bar.__exit__(*exc)

    def update(self, done: int) -> None:
        if self.bar:
            self.bar.update(self.task, completed=done)

    def print(self, line: str) -> None:
        if self.bar:
            self.bar.console.print(line, highlight=False)
        else:
            print(line, flush=True)


def daemon_list(text: str) -> List[str]:
    """`--daemon A,B,C`: our daemon first, then the others of the configuration."""
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names:
        raise ToolError(f"--daemon {text!r} names no daemon")
    return names


def run_recv(args, say=print) -> int:
    """FLOOREC: batch after batch; records to `log`. When the session ends: record why, and go on
    at another daemon of the configuration (ours is gone) or, with --reconnect, at ours."""
    lib = _spread()
    core = FlooRecCore(args.name, end_grace_s=args.end_grace, idle_timeout_s=args.idle_timeout)
    daemons = daemon_list(args.daemon)
    others = f" (if it goes: {', '.join(daemons[1:])})" if len(daemons) > 1 else ""
    say(f"FLOOREC {args.name}: waiting for batches on {args.group!r} at {daemons[0]}{others}; "
        f"records to {args.log_group!r}")
    later_s = max(args.reconnect_delay, MIN_RETRY_DELAY_S)
    retry = Reconnect(args.reconnect_delay, later_s, later_s, MAX_RECONNECT_ATTEMPTS)
    current = daemons[0]
    pending: List[str] = []   # end records to hand in first on the next session (we moved)
    while True:
        try:
            _recv_session(lib, core, args, current, say, pending, retry)
            return 0
        except ToolError as why:   # `current` took no session
            if pending:
                say(f"FLOOREC {args.name}: could not send the end records ({why}); they are printed above")
                pending = []
            delay_s = retry.next_delay_s() if args.reconnect else None
            if delay_s is None:
                raise
            current = daemons[(daemons.index(current) + 1) % len(daemons)]
            say(f"FLOOREC {args.name}: {why}; trying again at {current} in {delay_s:g} s "
                f"({retry.attempts}/{retry.max_attempts})")
        except (lib.SpreadError, OSError) as why:   # the session ended
            retry.lost(time.monotonic())
            cause = _session_end_cause(lib, why)
            records = _record_lost_session(lib, core, args, why, cause, say)
            gone = cause == lib.DAEMON_GONE
            up = _other_daemon_up(lib, args, daemons, current, say) if gone else None
            if up is not None:   # the next session hands the records in, then receives: one name
                current, pending = up, records
                continue
            _deliver_late_records(lib, args, [] if gone else [current], records, say)
            if not args.reconnect:
                say(f"FLOOREC {args.name}: exiting (use --reconnect to go on after a disconnection)")
                return EXIT_DAEMON_GONE if gone else EXIT_CUT_OFF
            delay_s = retry.next_delay_s()
            say(f"FLOOREC {args.name}: reconnecting in {delay_s:g} s")
        time.sleep(delay_s)


def _record_lost_session(lib, core: FlooRecCore, args, why, cause: str, say) -> List[str]:
    """Say that the session ended and why; the end records of the batches it cut short."""
    say(f"FLOOREC {args.name}: DISCONNECTED: {why}")
    if cause == lib.CUT_OFF:
        say(f"FLOOREC {args.name}: a slow receiver is cut off when more than the daemon's "
            f"per-session limit of messages wait for it (8.2.1)")
    records = [o.line for o in core.on_disconnect(time.monotonic(), time.time(), cause)
               if isinstance(o, SendRecord)]
    for line in records:
        say(line)
    return records


def _other_daemon_up(lib, args, daemons: List[str], current: str, say) -> Optional[str]:
    """Ours is gone: the first other daemon of the configuration that is up, said either way."""
    others = [d for d in daemons if d != current]
    if not others:
        return None
    up = _first_daemon_up(lib, others)
    if up is None:
        say(f"FLOOREC {args.name}: no other daemon of the configuration is up "
            f"({', '.join(others)}: connection refused)")
    else:
        say(f"FLOOREC {args.name}: moving to {up}, another daemon of the configuration")
    return up


def _session_end_cause(lib, why) -> str:
    """CUT_OFF, DAEMON_GONE or UNKNOWN_CAUSE: the library probes the daemon when a session ends."""
    cause = getattr(why, "cause", None)
    return cause or lib.UNKNOWN_CAUSE


def _recv_session(lib, core: FlooRecCore, args, daemon: str, say, pending: List[str], retry: Reconnect) -> None:
    """One session: first the end records of the one before (`pending`, emptied once sent), then
    batch after batch until the session ends (an exception says how)."""
    with connect_mailbox(lib, daemon, args.name) as mbox:
        back = retry.connected(time.monotonic())
        if pending:
            for line in pending:
                mbox.multicast(lib.AGREED_MESS, args.log_group, line.encode(), mess_type=MESS_RECORD)
            say(f"FLOOREC {args.name}: {len(pending)} end record(s) sent to {args.log_group!r} at {daemon} "
                f"after the disconnection")
            pending.clear()
        mbox.join(args.group)
        # The echo is ordered after the join (one session's messages keep their order, and AGREED
        # puts every daemon's deliveries in one order): when it is back, every batch started
        # later reaches us. Cheaper than membership messages, which every join of every other
        # receiver would send to all (167 receivers: 167 x 167 of them).
        mbox.multicast(lib.AGREED_MESS, mbox.private_group, b"joined " + args.group.encode(),
                       mess_type=MESS_JOINED)
        say(f"FLOOREC {args.name}: connected as {mbox.private_group} to {daemon}{back}")
        if not mbox.private_group.startswith(f"#{private_name_for(args.name)}#"):
            say(f"FLOOREC {args.name}: WARNING: the daemon already has a session named "
                f"{private_name_for(args.name)!r}; if it is another receiver, both records will "
                f"say machine={args.name} (give each machine its own --name)")
        next_tick = 0.0
        while True:
            msg = mbox.receive(timeout=0.5)
            now = time.monotonic()
            outputs: list = []
            if msg is not None and isinstance(msg, lib.RegularMessage) and msg.mess_type == MESS_JOINED \
                    and msg.sender == mbox.private_group:
                say(f"FLOOREC {args.name}: {member_line(args.group)} at {daemon}")
            elif msg is not None and isinstance(msg, lib.RegularMessage):
                outputs = core.on_message(msg.mess_type, msg.data, now, time.time())
                if args.delay_ms:
                    # A slow machine (the thesis's first FLOOREC showed every message on screen).
                    time.sleep(args.delay_ms / 1000)
            if now >= next_tick:
                outputs += core.tick(now, time.time())
                next_tick = now + 0.2
            for out in outputs:
                if isinstance(out, SendRecord):
                    mbox.multicast(lib.AGREED_MESS, args.log_group, out.line.encode(), mess_type=MESS_RECORD)
                    if args.verbose:
                        say(out.line)
                elif isinstance(out, Say):
                    say(f"{args.name}: {out.text}")


def member_line(group: str) -> str:
    """What a receiver prints once its join has taken effect (the experiment waits for it)."""
    return f"member of {group!r}"


def is_member_now(output: str, group: str) -> bool:
    """A receiver's output says it is a member in its latest session (a receiver that moved to
    another daemon says `connected as` again, then, once joined there, `member of` again)."""
    return output.rfind(member_line(group)) > output.rfind("connected as")


def _deliver_late_records(lib, args, daemons: List[str], records: List[str], say) -> None:
    """After a disconnection: a fresh session just to hand the end records to `log`, at the first
    of `daemons` that takes them (none: say so; they were printed)."""
    if not records:
        return
    failures = []
    for daemon in daemons:
        try:
            with connect_mailbox(lib, daemon, args.name) as mbox:
                for line in records:
                    mbox.multicast(lib.AGREED_MESS, args.log_group, line.encode(), mess_type=MESS_RECORD)
            say(f"FLOOREC {args.name}: {len(records)} end record(s) sent to {args.log_group!r} at {daemon} "
                f"after the disconnection")
            return
        except (lib.SpreadError, OSError, ToolError) as why:
            failures.append(str(why))
    say(f"FLOOREC {args.name}: could not send the end records "
        f"({'; '.join(failures) or 'no daemon is up: connection refused'}); they are printed above")


def _first_daemon_up(lib, daemons: List[str]) -> Optional[str]:
    for daemon in daemons:
        if lib.probe_daemon(daemon) == lib.CUT_OFF:   # "accepts connections"
            return daemon
    return None


# ---- the experiment runner -----------------------------------------------------------------

class _Lab:
    """Where the experiment's processes run: network namespaces (root) or loopback.

    The thesis's set-up (8.2): the daemons each on their own server, LOGBM and FLOOENV on the
    first, the lab machines (FLOOREC) spread over the daemons."""

    def __init__(self, hosts: int, daemons: int, use_namespaces: bool, workdir: Path):
        self.hosts, self.daemons, self.workdir = hosts, daemons, workdir
        self.procs: List[subprocess.Popen] = []
        self.daemon_procs: List[subprocess.Popen] = []
        self.net = None
        if use_namespaces:
            import labnet
            # Hosts 1..D are the servers (daemon i on host i; LOGBM and FLOOENV on host 1, as the
            # thesis's Linux server); hosts D+1..D+N are the N lab machines running FLOOREC.
            self.net = labnet.LabNet(hosts + daemons)
            try:
                self.net.up()
            except BaseException:
                self.net.close()   # never leave half a lab of namespaces behind
                raise
        # Without namespaces every daemon gets its own loopback address (all of 127/8 is loopback).
        self.server_ips = [self.net.ip(d) if self.net else f"127.0.0.{d}" for d in range(1, daemons + 1)]
        self.server_ip = self.server_ips[0]

    def receiver_host(self, i: int) -> int:
        """The namespace host of receiver i (0-based); 1 (unused) on loopback."""
        return self.daemons + 1 + i if self.net else 1

    def receiver_daemon(self, i: int) -> int:
        """The daemon (0-based) of receiver i: round-robin over the daemons (Quadro 4's lab
        machines shared the three servers)."""
        return i % self.daemons

    def start(self, host: int, argv: List[str], log_name: str, daemon: bool = False) -> subprocess.Popen:
        out = open(self.workdir / log_name, "w")
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        proc = self._popen(host, argv, stdout=out, stderr=subprocess.STDOUT, env=env)
        proc.log_path = out.name  # type: ignore[attr-defined]
        self.procs.append(proc)
        if daemon:
            self.daemon_procs.append(proc)
        return proc

    def _popen(self, host: int, argv: List[str], **kwargs) -> subprocess.Popen:
        if self.net:
            return self.net.popen(host, argv, **kwargs)
        return subprocess.Popen(argv, **kwargs)

    def close(self) -> None:
        # Receivers first, the daemons last: a receiver that outlives its daemon would report
        # a disconnection that never happened during the experiment.
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=5 if proc in self.daemon_procs else 0.05)
                except subprocess.TimeoutExpired:
                    pass
        for proc in self.procs:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
        if self.net:
            self.net.close()


class _WanLab(_Lab):
    """The thesis's own topology (Quadro 4): three sites, one daemon each on its site's host 1,
    the lab machines of each site on the same LAN as their daemon, the sites joined by WAN
    links of --wan-mbit and --wan-delay-ms (labnet.WanLab: a delay line in a router
    namespace). Receivers are split over the sites as the thesis's 40 / 79 / 48."""

    def __init__(self, hosts: int, args, workdir: Path):
        import labnet
        self.hosts, self.daemons, self.workdir = hosts, THESIS_SITES, workdir
        self.procs: List[subprocess.Popen] = []
        self.daemon_procs: List[subprocess.Popen] = []
        self.split = thesis_split(hosts)
        self.first_receiver = [sum(self.split[:s]) for s in range(THESIS_SITES)]
        self.net = labnet.WanLab([n + 1 for n in self.split], labnet.WanSettings(
            rate_mbit=args.wan_mbit, delay_ms=args.wan_delay_ms, loss_percent=args.wan_loss,
            seed=args.wan_seed))
        try:
            self.net.up()
        except RuntimeError as why:   # an `ip` command failed: no TUN device, say
            self.net.close()
            raise ToolError(f"cannot build the thesis's sites: {why}")
        except BaseException:
            self.net.close()
            raise
        self.server_ips = [self.net.ip(site, 1) for site in range(1, THESIS_SITES + 1)]
        self.server_ip = self.server_ips[0]

    def _site_host(self, host: int) -> Tuple[int, int]:
        """(site, host in the site) of a host number: 1..3 the servers, then the receivers."""
        if host <= THESIS_SITES:
            return host, 1
        i = host - THESIS_SITES - 1
        site = self.receiver_daemon(i)
        return site + 1, i - self.first_receiver[site] + 2

    def receiver_host(self, i: int) -> int:
        return THESIS_SITES + 1 + i

    def receiver_daemon(self, i: int) -> int:
        return max(s for s in range(THESIS_SITES) if self.first_receiver[s] <= i and self.split[s])

    def _popen(self, host: int, argv: List[str], **kwargs) -> subprocess.Popen:
        site, k = self._site_host(host)
        return self.net.popen(site, k, argv, **kwargs)

    def close(self) -> None:
        self.link_report = self.net.link_report() if self.net.relay else {}
        super().close()


def thesis_split(hosts: int) -> List[int]:
    """Receivers per site in the proportions of the thesis's 40 / 79 / 48 (largest remainder),
    at least one per site when there are enough."""
    total = sum(THESIS_RECEIVERS)
    exact = [hosts * n / total for n in THESIS_RECEIVERS]
    split = [int(x) for x in exact]
    for s in sorted(range(len(exact)), key=lambda s: exact[s] - split[s], reverse=True)[:hosts - sum(split)]:
        split[s] += 1
    for s in range(len(split)):          # a site with none takes one from the largest
        if split[s] == 0 and max(split) > 1:
            split[split.index(max(split))] -= 1
            split[s] += 1
    return split


def _read(path) -> str:
    try:
        return Path(path).read_text(errors="replace")
    except OSError:
        return ""


def _wait(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise ToolError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(0.1)


def _proc_usage(pid: int) -> Tuple[float, int]:
    """(CPU seconds, peak resident kB) of a process, from /proc (Linux); zeros elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        cpu_s = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        peak = 0
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                peak = int(line.split()[1])
        return cpu_s, peak
    except (OSError, ValueError, IndexError):
        return 0.0, 0


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt()


def run_experiment(args, say=print) -> int:
    """N lab machines, one daemon or a ring of several, the batch matrix, then the report (8.2)."""
    reason = None
    if args.topology == "thesis":
        import labnet
        reason = labnet.available()
        if reason or args.loopback:
            raise ToolError(f"--topology thesis runs three sites in network namespaces joined by emulated "
                            f"WAN links: {reason or 'not with --loopback'}")
        args.daemons = THESIS_SITES
    elif not args.loopback:
        import labnet
        reason = labnet.available()
        if reason:
            say(f"experiment: network namespaces unavailable ({reason}); using loopback")
    use_ns = not args.loopback and reason is None
    if use_ns and args.hosts + args.daemons > MAX_LAB_HOSTS:
        raise ToolError(f"--hosts {args.hosts} with --daemons {args.daemons} needs {args.hosts + args.daemons} "
                        f"namespace hosts; labnet.py builds at most {MAX_LAB_HOSTS} "
                        f"(use --hosts {MAX_LAB_HOSTS - args.daemons} or --loopback)")
    counts = FULL_COUNTS if args.full else tuple(args.counts)
    matrix = batch_matrix(counts, args.sizes, args.services, args.repeat)
    workdir = Path(args.out or tempfile.mkdtemp(prefix="flood-experiment-", dir="."))
    workdir.mkdir(parents=True, exist_ok=True)
    here = os.path.dirname(os.path.abspath(__file__))
    py = sys.executable
    # A `kill` of the runner must still take the lab down (namespaces, processes): make SIGTERM
    # unwind like Ctrl-C, through the finally below.
    signal.signal(signal.SIGTERM, _interrupt)
    if args.topology == "thesis":
        lab = _WanLab(args.hosts, args, workdir)
        where = (f"network namespaces, three sites joined by {args.wan_mbit:g} Mbit/s links with "
                 f"{args.wan_delay_ms:g} ms delay{f' and {args.wan_loss:g} % loss' if args.wan_loss else ''}")
    else:
        lab = _Lab(args.hosts, args.daemons, use_ns, workdir)
        where = "network namespaces" if use_ns else "loopback"
    started = time.monotonic()
    flood_log = workdir / "flood.log"
    done: List[str] = []          # batches run to the end
    interrupted = ""
    usage: List[Tuple[float, int]] = []
    died: List[str] = []
    try:
        try:
            daemon_names = _start_daemons(lab, args, py, here, use_ns, say)
            say(f"experiment: {args.hosts} receivers, {_daemons_phrase(args.daemons)} at {', '.join(daemon_names)}, "
                f"{where}; {len(matrix)} batches; files in {workdir}")
            _say_daemon_pids(lab, say)
            receivers = _start_receivers(lab, args, py, here, daemon_names, flood_log, say)
            for spec in matrix:
                _run_batch(lab, spec, py, here, daemon_names[0], args, flood_log, receivers, say)
                done.append(spec.batch)
        except KeyboardInterrupt:
            # Ctrl-C, or a `kill` of the runner (SIGTERM): the report of what was done still counts
            interrupted = f"interrupted after {len(done)} of {len(matrix)} batches"
            say(f"experiment: {interrupted}; stopping the lab, then the report of what was done")
        usage = [_proc_usage(d.pid) for d in lab.daemon_procs]
        died = [f"d{k}" for k, d in enumerate(lab.daemon_procs, 1) if d.poll() is not None]
    finally:
        lab.close()
    elapsed_s = time.monotonic() - started
    text = _report_text(lab, args, matrix, flood_log, where, elapsed_s, usage, died, interrupted, py, here)
    (workdir / "report.md").write_text(text)
    (workdir / "report.csv").write_text(_logbm_report(py, here, flood_log, "csv"))
    if getattr(lab, "link_report", None):
        (workdir / "wan-links.json").write_text(json.dumps(lab.link_report, indent=1) + "\n")
    say(text)
    say(f"experiment: report in {workdir / 'report.md'} (CSV: report.csv; raw log: flood.log)")
    return 130 if interrupted else 0


def run_wan_comparison(args, say=print) -> int:
    """--wan both: the same matrix over HOP links and over one ring spanning the WAN, each in a
    lab of its own (folders hop/ and ring/), then both side by side in compare.md."""
    base = Path(args.out or tempfile.mkdtemp(prefix="flood-wan-", dir="."))
    for wan in WAN_MODES:
        one = argparse.Namespace(**vars(args))
        one.wan, one.out = wan, str(base / wan)
        say(f"experiment: --wan {wan} ({'a ring per site, HOP links between them' if wan == 'hop' else 'one ring over the WAN'})")
        code = run_experiment(one, say)
        if code:
            return code
    text = wan_comparison_text({wan: _flood_records(base / wan / "flood.log") for wan in WAN_MODES},
                               {wan: _read_json(base / wan / "wan-links.json") for wan in WAN_MODES}, args)
    (base / "compare.md").write_text(text)
    say(text)
    say(f"experiment: the comparison in {base / 'compare.md'} (each run's report in hop/ and ring/)")
    return 0


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def wan_comparison_text(records: Dict[str, List[LogRecord]], links: Dict[str, dict], args) -> str:
    """The thesis's argument measured: how long each batch took over HOP links and over one ring
    spanning the WAN, from the first receiver's start marker to the last receiver's end marker
    (every process runs on this machine's one clock), and what the WAN links dropped. A
    receiver's own msgs/s (in each run's report) counts from its first message, which SAFE
    delivers late at a far site: it overstates what crossed the link."""
    batches: List[LogRecord] = []
    for r in records["hop"] + records["ring"]:
        if r.rec == "end" and r.batch not in [b.batch for b in batches]:
            batches.append(r)
    lines = [f"# HOP links against one ring over the WAN ({args.wan_mbit:g} Mbit/s, {args.wan_delay_ms:g} ms"
             f"{f', {args.wan_loss:g} % loss' if args.wan_loss else ''})", "",
             "Seconds from the first receiver's start marker to the last receiver's end marker, and the",
             "batch's messages per second over that time.", "",
             "| batch | service | size | count | HOP s | ring s | HOP msgs/s | ring msgs/s | ring / HOP time |",
             "|---|---|---|---|---|---|---|---|---|"]
    for b in batches:
        hop, ring = batch_span_s(records["hop"], b.batch), batch_span_s(records["ring"], b.batch)
        cells = [f"{x:.2f}" if x else "-" for x in (hop, ring)]
        cells += [f"{b.count / x:.0f}" if x else "-" for x in (hop, ring)]
        cells.append(f"{ring / hop:.2f}" if hop and ring else "-")
        lines.append(f"| {b.batch} | {b.service} | {b.size} | {b.count} | " + " | ".join(cells) + " |")
    lines.append("")
    for wan in WAN_MODES:
        sent = sum(c["packets"] for c in links[wan].values())
        dropped = sum(c["overflowed"] for c in links[wan].values())
        lines.append(f"- {wan}: the WAN links carried {sent} packets and dropped {dropped} at a full queue.")
    lines += ["", f"Command: `python3 floodtools.py {' '.join(args.argv)}`", ""]
    return "\n".join(lines)


def batch_span_s(records: Sequence[LogRecord], batch: str) -> Optional[float]:
    """Seconds from the batch's first start record to its last end record (receivers' clocks:
    one machine's here), or None when either is missing."""
    def when(r: LogRecord) -> float:
        return datetime.datetime.strptime(f"{r.date} {r.time}", "%Y-%m-%d %H:%M:%S.%f").timestamp()
    starts = [when(r) for r in records if r.rec == "start" and r.batch == batch]
    ends = [when(r) for r in records if r.rec == "end" and r.batch == batch]
    if not starts or not ends:
        return None
    return max(ends) - min(starts)


def _say_daemon_pids(lab: _Lab, say) -> None:
    """Each daemon's pid, printed and in a pid file: the demos kill a daemon by it (never by a
    name search, which finds other users' daemons on a shared machine)."""
    for k, proc in enumerate(lab.daemon_procs, 1):
        name = f"d{k}" if len(lab.daemon_procs) > 1 else "daemon"
        pid_file = lab.workdir / f"{name}.pid"
        pid_file.write_text(f"{proc.pid}\n")
        say(f"experiment: {name} is pid {proc.pid} (crash it: kill -9 {proc.pid}, or kill -9 $(cat {pid_file}))")


def _start_receivers(lab: _Lab, args, py: str, here: str, daemon_names: List[str], flood_log: Path,
                     say) -> list:
    """LOGBM and the N receivers; returns the receivers once they have joined."""
    # LOGBM and FLOOENV on the first daemon, as on the thesis's first server.
    logbm = lab.start(1, [py, os.path.join(here, "logbm.py"), "record", "--plain", "--daemon", daemon_names[0],
                          "--out", str(flood_log)], "logbm.out")
    _wait(lambda: "joined" in _read(logbm.log_path) or logbm.poll() is not None, 30, "LOGBM to join")
    names = [f"pc{i:02d}" if args.hosts < 100 else f"pc{i:03d}" for i in range(1, args.hosts + 1)]
    receivers = []
    for i, name in enumerate(names):
        slow = ["--delay-ms", str(args.slow_ms)] if i < args.slow else []
        # The lab machines spread over the daemons round-robin (the thesis's Quadro 4); each also
        # knows the others, and moves to one of them if its own daemon dies.
        k = lab.receiver_daemon(i)
        mine = ",".join(daemon_names[k:] + daemon_names[:k])
        receivers.append(lab.start(lab.receiver_host(i),
                                   [py, os.path.join(here, "floodtools.py"), "recv", "--name", name,
                                    "--daemon", mine, "--group", args.group] + slow,
                                   f"recv-{name}.out"))
        receivers[-1].machine = name  # type: ignore[attr-defined]
    _wait_members(receivers, args.group, max(30, args.hosts))
    joined = sum(1 for r in receivers if r.poll() is None)
    say(f"experiment: {joined} of {args.hosts} receivers joined {args.group!r}")
    return receivers


def _wait_members(receivers: list, group: str, timeout_s: float) -> None:
    """Until every receiver still running is a member of `group` in its latest session: a batch
    started before a receiver's join has taken effect would miss it from its first message."""
    _wait(lambda: all(r.poll() is not None or is_member_now(_read(r.log_path), group) for r in receivers),
          timeout_s, f"every receiver's membership of {group!r}")


def session_end_counts(records: Sequence[LogRecord], receiver_outputs: Sequence[str]) -> Dict[str, int]:
    """Why receivers lost their sessions, counted: from their end records (`end=disconnected`,
    by `cause=`) and from what they printed (moved to another daemon; records no daemon took)."""
    counts = {"cut-off": 0, "daemon-gone": 0, "unknown": 0, "moved": 0, "records refused": 0}
    for r in records:
        if r.rec == "end" and r.end == "disconnected":
            cause = r.extra.get("cause", "unknown")
            counts[cause if cause in counts else "unknown"] += 1
    for out in receiver_outputs:
        counts["moved"] += out.count("moving to ")
        counts["records refused"] += out.count("could not send the end records")
    return counts


def _flood_records(flood_log: Path) -> List[LogRecord]:
    """The records of the run's flood log (torn or foreign lines are for logbm's report to name)."""
    records = []
    for line in _read(flood_log).splitlines():
        try:
            records.append(parse_record(line))
        except MalformedMessage:
            continue
    return records


def _report_text(lab: _Lab, args, matrix, flood_log: Path, where: str, elapsed_s: float, usage, died,
                 interrupted: str, py: str, here: str) -> str:
    # logbm reads the flood record format from this file: it runs as its own program here, so
    # that the two modules do not import each other
    text = _logbm_report(py, here, flood_log, "markdown")
    records = _flood_records(flood_log)
    # Sessions a daemon closed for "not reading" (its per-session limit, 8.2.1).
    cut = [line for d in lab.daemon_procs for line in _read(d.log_path).splitlines()
           if "not reading" in line and "closed" in line]
    outputs = [_read(p.log_path) for p in lab.procs if os.path.basename(p.log_path).startswith("recv-")]
    ends = session_end_counts(records, outputs)
    cpu = ", ".join(f"{c:.1f}" for c, _ in usage)
    peak = ", ".join(f"{kb / 1024:.0f}" for _, kb in usage)
    if args.daemons == 1:
        daemons_text = "one daemon"
    elif isinstance(lab, _WanLab):
        per = ", ".join(f"{n} at site {d + 1}" for d, n in enumerate(lab.split))
        how = ("in one ring spanning the WAN as the real Spread 4.4 runs" if args.wan == "ring" else
               f"each site its own ring, HOP links between the sites (bucket "
               f"{args.wan_mbit * HOP_SHARE_OF_WAN:g} Mbit/s) as the thesis proposes")
        daemons_text = f"a daemon at each site, {how} (receivers {per}; LOGBM and the sender at site 1)"
    else:
        per = ", ".join(f"{n} on d{d + 1}" for d, n in enumerate(_receivers_per_daemon(args.hosts, args.daemons)))
        daemons_text = f"{args.daemons} daemons in a ring (receivers {per}; LOGBM and the sender on d1)"
    batches = f"{interrupted.capitalize()}" if interrupted else f"{len(matrix)} batches"
    wan = wan_links_text(getattr(lab, "link_report", None) or {})
    return text + (
        f"\n## Run\n\n{args.hosts} receivers, {where}, {daemons_text} "
        f"(--max-session-messages {args.max_session_messages}); {batches} in {elapsed_s:.0f} s; "
        f"daemon CPU {cpu or '-'} s, peak memory {peak or '-'} MB.\n\n{wan}"
        f"Sessions that ended during a batch (`end=disconnected`): {ends['cut-off']} receivers cut off by "
        f"their daemon for being slow (the daemons' logs: {len(cut)} sessions closed for not reading), "
        f"{ends['daemon-gone']} whose daemon died or was stopped ({ends['moved']} moved to another daemon of "
        f"the configuration), {ends['unknown']} for another reason; "
        f"{ends['records refused']} receivers could not hand in their end records (connection refused "
        f"at every daemon)"
        f"{'; daemons that died during the run: ' + ', '.join(died) if died else ''}.\n\n"
        f"Command: `python3 floodtools.py {' '.join(args.argv)}`\n")


def wan_links_text(report: Dict[str, dict]) -> str:
    """The WAN relay's counts per direction between sites, as a line of the report."""
    if not report:
        return ""
    parts = [f"{link} {c['packets']} packets, {c['bytes'] / 1e6:.1f} MB, {c['lost']} lost, "
             f"{c['overflowed']} dropped at a full queue" for link, c in sorted(report.items())]
    return "WAN links (the relay's counts): " + "; ".join(parts) + ".\n\n"


def _daemons_phrase(daemons: int) -> str:
    return "1 daemon" if daemons == 1 else f"{daemons} daemons in a ring"


def _receivers_per_daemon(hosts: int, daemons: int) -> List[int]:
    return [len(range(d, hosts, daemons)) for d in range(daemons)]


def _start_daemons(lab: _Lab, args, py: str, here: str, use_ns: bool, say) -> List[str]:
    """Start the daemon(s) and wait until they serve clients (and, several, form one ring);
    returns their spread_names, the first one's first."""
    mini = os.path.join(here, "spread_mini.py")
    if args.daemons == 1:
        # A random free port even inside namespaces, and no unix socket: everybody is given
        # PORT@ADDRESS, and /tmp is shared by the namespaces and the other users of this machine.
        port = args.port or _free_port("127.0.0.1")
        daemon = lab.start(1, [py, mini, "daemon", "--port", str(port), "--listen", lab.server_ip, "--no-unix",
                               "--max-session-messages", str(args.max_session_messages)], "daemon.out", daemon=True)
        _wait_connectable(lab, daemon, py, here, f"{port}@{lab.server_ip}")
        return [f"{port}@{lab.server_ip}"]
    # Several: a spread.conf listing every daemon at its lab (or loopback) address; the segment
    # port serves clients (TCP) and the ring (UDP) on each daemon's own address. On loopback it
    # must be free on all of them; in namespaces any port is, so the same check does no harm.
    port = args.port or _free_ring_port(lab.server_ips if not use_ns else ["127.0.0.1"])
    conf = lab.workdir / "spread.conf"
    sites = args.topology == "thesis" and args.wan == "hop"
    conf.write_text(render_spread_conf(lab.server_ips, port, sites))
    say(f"experiment: {conf} lists {', '.join(f'd{d} {ip}' for d, ip in enumerate(lab.server_ips, 1))}")
    daemons = []
    for d in range(1, args.daemons + 1):
        # --no-unix: the daemons share one /tmp (namespaces share the file system), so a unix
        # socket /tmp/<port> would be one file for all three.
        # Across the WAN the router does not carry multicast (as campus routers did not): the
        # ring's data goes by unicast to each daemon, as the real Spread 4.4 sends to another segment.
        # With HOP each site is a ring of its own and the links between sites are HOP's, with a
        # token bucket a little under the WAN's rate so that the routers' queues never fill.
        across_wan = ["--no-multicast"] if args.topology == "thesis" and not sites else []
        if sites:
            across_wan = ["--hop-rate-mbit", "%g" % (args.wan_mbit * HOP_SHARE_OF_WAN)]
        daemons.append(lab.start(d, [py, mini, "daemon", "-c", str(conf), "--name", f"d{d}", "--no-unix",
                                     "--max-session-messages", str(args.max_session_messages)] + across_wan,
                                 f"daemon-d{d}.out", daemon=True))
    names = [f"{port}@{ip}" for ip in lab.server_ips]
    for daemon, name in zip(daemons, names):
        _wait_connectable(lab, daemon, py, here, name)
    if sites:
        _wait_sites(daemons)
    else:
        _wait_ring(daemons, args.daemons)
    return names


def render_spread_conf(ips: Sequence[str], port: int, sites: bool = False) -> str:
    """The spread.conf of the experiment's daemons d1.. at the given addresses: one segment
    (one ring), or with `sites` a segment per daemon joined by HOP links (LinkProtocol = Hop)."""
    lines = ["# written by floodtools.py experiment: the thesis's three servers (8.2)"]
    if not sites:
        lines.append(f"Spread_Segment {RING_SEGMENT_ADDRESS}:{port} {{")
        lines += [f"    d{d} {ip}" for d, ip in enumerate(ips, 1)]
        return "\n".join(lines + ["}", ""])
    group = RING_SEGMENT_ADDRESS.rsplit(".", 1)[0]
    for d, ip in enumerate(ips, 1):
        lines += [f"Spread_Segment {group}.{10 + d}:{port} {{", f"    d{d} {ip}", "}"]
    return "\n".join(lines + ["LinkProtocol = Hop", ""])


def _wait_sites(daemons: list) -> None:
    """Until every daemon (each a site of its own) has a HOP link up to every other site."""
    def linked() -> bool:
        for daemon in daemons:
            if daemon.poll() is not None:
                raise ToolError(f"a daemon exited: {_read(daemon.log_path)[-500:]}")
        return all(_read(d.log_path).count("HOP link to") - _read(d.log_path).count(") is over")
                   >= len(daemons) - 1 for d in daemons)
    _wait(linked, RING_FORM_TIMEOUT_S, f"the {len(daemons)} sites' HOP links")


def _free_ring_port(ips: Sequence[str]) -> int:
    """A port free for TCP and UDP on every address (several daemons on one machine)."""
    for _ in range(MAX_PORT_TRIES):
        port = _free_port(ips[0])
        try:
            for ip in ips:
                for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
                    with socket.socket(socket.AF_INET, kind) as s:
                        s.bind((ip, port))
        except OSError:
            continue
        return port
    raise ToolError(f"no port free on all of {', '.join(ips)} after {MAX_PORT_TRIES} tries")


def _wait_ring(daemons: list, count: int) -> None:
    """Until every daemon's last installed ring has all the daemons d1..dN in it."""
    wanted = [f"d{d}#" for d in range(1, count + 1)]

    def formed() -> bool:
        for daemon in daemons:
            if daemon.poll() is not None:
                raise ToolError(f"a daemon exited: {_read(daemon.log_path)[-500:]}")
        return all(all(w in _last_ring(_read(d.log_path)) for w in wanted) for d in daemons)
    _wait(formed, RING_FORM_TIMEOUT_S, f"the {count} daemons to form one ring")


def _last_ring(text: str) -> str:
    lines = [line for line in text.splitlines() if "installed ring" in line]
    return lines[-1] if lines else ""


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _wait_connectable(lab: _Lab, daemon, py: str, here: str, daemon_name: str) -> None:
    """Until the daemon's banner appears in its output (it is listening), or it died."""
    def ready() -> bool:
        if daemon.poll() is not None:
            raise ToolError(f"the daemon exited: {_read(daemon.log_path)[-500:]}")
        return "listening" in _read(daemon.log_path)
    _wait(ready, 30, "the daemon to start")


def _logbm_report(py: str, here: str, flood_log, fmt: str) -> str:
    """`logbm.py report FLOODLOG --format FMT`: the experiment's report tables."""
    done = subprocess.run([py, os.path.join(here, "logbm.py"), "report", str(flood_log), "--format", fmt],
                          capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise ToolError(f"logbm report failed: {done.stderr.strip() or done.returncode}")
    return done.stdout


def _run_batch(lab: _Lab, spec: BatchSpec, py: str, here: str, daemon_name: str, args, flood_log: Path,
               receivers: list, say) -> None:
    try:
        # a receiver that moved to another daemon (its own died) joins there again first
        _wait_members(receivers, args.group, max(30, args.hosts))
    except ToolError as why:
        say(f"batch {spec.batch}: {why}; starting it anyway")
    alive = sum(1 for r in receivers if r.poll() is None)
    window = max(1, min(DEFAULT_WINDOW, args.max_session_messages // 2))
    sender = lab.start(1, [py, os.path.join(here, "floodtools.py"), "send", "--count", str(spec.count),
                           "--size", str(spec.size), "--service", spec.service, "--batch", spec.batch,
                           # In flight at most half the daemon's per-session limit: a burst the
                           # daemon reads at once then never fills a receiver's queue by itself.
                           "--window", str(window), "--echo-every", str(max(1, min(DEFAULT_ECHO_EVERY, window // 5))),
                           "--name", "flooenv", "--group", args.group, "--daemon", daemon_name, "--json",
                           "--rate", str(args.rate)],
                       f"send-{spec.batch}.out")
    try:
        sender.wait(timeout=args.batch_timeout)
    except subprocess.TimeoutExpired:
        sender.kill()
        say(f"batch {spec.batch}: the sender did not finish in {args.batch_timeout} s")
    summary = {}
    try:
        summary = json.loads(_read(sender.log_path))["end"]["sum"]
    except (ValueError, KeyError):
        say(f"batch {spec.batch}: sender output: {_read(sender.log_path)[-300:]}")

    def ended() -> bool:
        recs = [r for r in _flood_records(flood_log) if r.batch == spec.batch]
        starts = {r.machine for r in recs if r.rec == "start"}
        ends = {r.machine for r in recs if r.rec == "end"}
        still = sum(1 for r in receivers if r.poll() is None)
        # A receiver that exited without its end record (its daemon died: with several
        # daemons the others go on) will never send it: do not wait for it.
        gone = {r.machine for r in receivers if r.poll() is not None}
        return len(starts) >= min(alive, still) and starts - gone <= ends
    try:
        _wait(ended, args.batch_timeout, f"the end records of batch {spec.batch}")
    except ToolError as why:
        say(f"batch {spec.batch}: {why}")
    recs = [r for r in _flood_records(flood_log) if r.batch == spec.batch and r.rec == "end"]
    rates = [r.msgs_per_s for r in recs]
    say(f"batch {spec.batch:<12} sender {summary.get('msgs_per_s', 0):9.1f} msgs/s; "
        f"{len(recs)} receivers, {sum(1 for r in recs if r.received >= r.count)} complete, "
        f"mean {sum(rates) / max(len(rates), 1):9.1f} msgs/s")


# ============================================================================================
# Terminal rendering
# ============================================================================================

def render_interval_header() -> str:
    return "[ batch]  Interval          Messages     Transfer        Rate         Bitrate"


def render_interval(batch: str, i: Interval) -> str:
    d = i.as_dict()
    return (f"[{batch[:6]:>6}]  {d['start_s']:6.2f}-{d['end_s']:<6.2f} sec  {d['messages']:8d} msgs  "
            f"{d['bytes'] / 1e6:8.2f} MB  {d['msgs_per_s']:10.1f} msgs/s  {d['mbit_per_s']:8.2f} Mbit/s")


def render_summary(s: dict) -> str:
    line = (f"- - - - - - - - - - - - - - - - - - - - - - - - -\n"
            f"[{s['batch'][:6]:>6}]  {0:6.2f}-{s['seconds']:<6.2f} sec  {s['messages']:8d} msgs  "
            f"{s['bytes'] / 1e6:8.2f} MB  {s['msgs_per_s']:10.1f} msgs/s  {s['mbit_per_s']:8.2f} Mbit/s  "
            f"sender ({s['service']}, {s['size']} B)")
    # a failure (Ctrl-C: sent and planned counts) is said once, by the caller, on stderr
    return line


# ============================================================================================
# Command line
# ============================================================================================

def _number_in(convert, what: str, low, high):
    """An argparse type: `convert` the text, then check it lies in low..high."""
    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is outside {low:g}..{high:g}")
        return value
    return parse


def _int_in(low: int, high: int):
    return _number_in(int, "a whole number", low, high)


def _float_in(low: float, high: float):
    return _number_in(float, "a number", low, high)


def _name(text: str) -> str:
    try:
        return check_name(text)
    except ValueError as why:
        raise argparse.ArgumentTypeError(str(why)) from None


def _batch_id(text: str) -> str:
    try:
        return check_batch(text)
    except ValueError as why:
        raise argparse.ArgumentTypeError(str(why)) from None


def _int_list(text: str) -> List[int]:
    parse = _int_in(1, MAX_COUNT)
    return [parse(part) for part in text.split(",") if part]


def default_name() -> str:
    clean = "".join(ch for ch in socket.gethostname().split(".")[0] if NAME_RE.match(ch))
    return (clean or "machine")[:MAX_NAME_CHARS]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="floodtools.py", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", metavar="{send,recv,experiment}")
    sub.required = True
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--group", default=DEFAULT_GROUP, help="flood group (default flood)")
    send = sub.add_parser("send", parents=[common], help="FLOOENV: send one batch")
    send.add_argument("--daemon", default=DEFAULT_DAEMON, help="spread_name of the daemon (default 4803@127.0.0.1)")
    send.add_argument("--count", type=_int_in(0, MAX_COUNT), default=1000, help="messages in the batch (default 1000)")
    send.add_argument("--size", type=_int_in(MIN_SIZE_BYTES, MAX_SIZE_BYTES), default=1000,
                      help="bytes per message (default 1000)")
    send.add_argument("--service", choices=SERVICE_NAMES, default="reliable")
    send.add_argument("--name", type=_name, default=default_name(), help="sender name (default: host name)")
    send.add_argument("--batch", type=_batch_id, help="batch id (default: 6 random hex digits)")
    send.add_argument("--window", type=_int_in(1, MAX_WINDOW), default=DEFAULT_WINDOW,
                      help=f"at most this many messages unconfirmed (default {DEFAULT_WINDOW})")
    send.add_argument("--echo-every", type=_int_in(1, MAX_WINDOW), default=DEFAULT_ECHO_EVERY,
                      help=f"an echo to ourselves every N messages (default {DEFAULT_ECHO_EVERY})")
    send.add_argument("--stall-timeout", type=_float_in(0.1, 3600), default=STALL_TIMEOUT_S,
                      help=f"give up after this many seconds without an echo (default {STALL_TIMEOUT_S:g})")
    send.add_argument("--rate", type=_float_in(0, 1e7), default=0.0,
                      help="at most this many messages per second (default 0: as fast as the daemon takes them)")
    send.add_argument("--json", action="store_true", help="print one JSON object instead of lines")
    send.add_argument("--verbose", action="store_true", help="also show the sender's state changes and why")
    recv = sub.add_parser("recv", parents=[common], help="FLOOREC: receive batches, send records to `log`")
    recv.add_argument("--daemon", default=DEFAULT_DAEMON,
                      help="spread_name of the daemon (default 4803@127.0.0.1); A,B,C: A, and when A is "
                           "gone the first of the others (the daemons of the configuration) that is up")
    recv.add_argument("--name", type=_name, default=default_name(), help="machine name (default: host name)")
    recv.add_argument("--log-group", default=LOG_GROUP, help="where records go (default log)")
    recv.add_argument("--reconnect", action="store_true",
                      help="after a disconnection, reconnect and go on (without it: exit 3 when cut off, "
                           "4 when the daemon is gone and no other of --daemon A,B,... is up)")
    recv.add_argument("--reconnect-delay", type=_float_in(0, 600), default=1.0)
    recv.add_argument("--end-grace", type=_float_in(0, 600), default=END_GRACE_S,
                      help=f"after the end marker, wait this long for missing messages (default {END_GRACE_S:g} s)")
    recv.add_argument("--idle-timeout", type=_float_in(0.1, 86400), default=IDLE_TIMEOUT_S,
                      help=f"end a batch that is silent this long (default {IDLE_TIMEOUT_S:g} s)")
    recv.add_argument("--verbose", action="store_true", help="print every record sent")
    recv.add_argument("--delay-ms", type=_float_in(0, 10_000), default=0.0,
                      help="spend this long on every message: a slow receiver, like the thesis's first "
                           "FLOOREC that showed each message on screen (8.2.1)")
    exp = sub.add_parser("experiment", help="the whole experiment on this machine, then the report")
    exp.add_argument("--hosts", type=_int_in(1, 199), default=9, help="lab machines running FLOOREC (default 9)")
    exp.add_argument("--loopback", action="store_true", help="processes on loopback even when root")
    exp.add_argument("--daemons", type=_int_in(1, 3), default=1,
                     help="Spread daemons (default 1; 3: the thesis's three servers, a ring, receivers round-robin)")
    exp.add_argument("--counts", type=_int_list, default=list(DEFAULT_COUNTS),
                     help="batch sizes in messages, comma separated (default %s)" % ",".join(map(str, DEFAULT_COUNTS)))
    exp.add_argument("--full", action="store_true",
                     help="the larger counts of a lab session: %s" % ",".join(map(str, FULL_COUNTS)))
    exp.add_argument("--sizes", type=_int_list, default=list(MATRIX_SIZES), help="message sizes (default 100,1000)")
    exp.add_argument("--services", type=lambda t: [s for s in t.split(",") if s], default=list(MATRIX_SERVICES),
                     help="services (default reliable,safe)")
    exp.add_argument("--repeat", type=_int_in(1, 100), default=1, help="run the matrix this many times")
    exp.add_argument("--max-session-messages", type=_int_in(1, 1_000_000), default=1000,
                     help="the daemon's per-session queue limit (the thesis: 1000, later 2000)")
    exp.add_argument("--rate", type=_float_in(0, 1e7), default=0.0,
                     help="the sender's limit in messages per second (default 0: none)")
    exp.add_argument("--slow", type=_int_in(0, 199), default=0,
                     help="this many receivers are slow (recv --delay-ms, see --slow-ms): watch the daemon cut them off")
    exp.add_argument("--slow-ms", type=_float_in(0, 10_000), default=1.0, help="delay per message of a slow receiver")
    exp.add_argument("--port", type=_int_in(1024, 65535), help="daemon port, the segment's with several (default: a free one)")
    exp.add_argument("--group", default=DEFAULT_GROUP)
    exp.add_argument("--batch-timeout", type=_int_in(5, 86400), default=300,
                     help="seconds to wait for one batch (default 300)")
    exp.add_argument("--out", help="folder for the logs and the report (default: a new flood-experiment-*)")
    exp.add_argument("--topology", choices=["lan", "thesis"], default="lan",
                     help="lan (default): every daemon on one LAN; thesis: Quadro 4, three sites of one "
                          "daemon each joined by WAN links, receivers split 40/79/48 (root: namespaces)")
    exp.add_argument("--wan", choices=["hop", "ring", "both"], default="hop",
                     help="with --topology thesis: hop (default: a ring per site, HOP links between the "
                          "sites, as the thesis proposes), ring (one token ring spanning the WAN, as "
                          "the real Spread 4.4 runs), or both, one after the other, compared side by side")
    exp.add_argument("--wan-mbit", type=_float_in(0.01, 10_000), default=2.0,
                     help="WAN link rate in Mbit/s (default 2, the thesis's campus links)")
    exp.add_argument("--wan-delay-ms", type=_float_in(0, 10_000), default=15.0,
                     help="WAN link delay, one way (default 15 ms)")
    exp.add_argument("--wan-loss", type=_float_in(0, 99), default=0.0, help="WAN packet loss in %% (default 0)")
    exp.add_argument("--wan-seed", type=int, default=1, help="the losses replay with the same seed")
    return parser


def react_to_ctrl_c() -> None:
    """Take SIGINT back: a shell without job control (a script, `cmd &`) starts its background
    jobs with SIGINT ignored, and Python keeps it so, so Ctrl-C stopped the script but left
    this process running (and `kill -INT` did nothing)."""
    try:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    except ValueError:   # not the main thread (a test calling main()): nothing to take back
        pass


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = argv
    react_to_ctrl_c()
    if args.cmd == "experiment":
        bad = [s for s in args.services if s not in SERVICE_NAMES]
        if bad:
            parser.error(f"unknown service(s) {', '.join(bad)}: choose from {', '.join(SERVICE_NAMES)}")
        if any(not MIN_SIZE_BYTES <= s <= MAX_SIZE_BYTES for s in args.sizes):
            parser.error(f"sizes must be {MIN_SIZE_BYTES} to {MAX_SIZE_BYTES} bytes")
    if args.cmd == "send" and args.echo_every > args.window:
        parser.error(f"--echo-every ({args.echo_every}) must not exceed --window ({args.window})")
    try:
        if args.cmd == "send":
            return run_send(args)
        if args.cmd == "recv":
            return run_recv(args)
        if args.topology == "thesis" and args.wan == "both":
            return run_wan_comparison(args)
        return run_experiment(args)
    except KeyboardInterrupt:
        return 130
    except ToolError as why:
        print(f"floodtools {args.cmd}: {why}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
