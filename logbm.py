#!/usr/bin/env python3
"""logbm.py: the thesis's LOGBM, its connection log and the tables of a lab report.

    python3 logbm.py record --out flood.log         # LOGBM (8.2): group `log` -> one line per record
    python3 logbm.py connlog --out connections.log  # 8.1.3: C/D lines as members join and leave GG
    python3 logbm.py usage connections.log --machine lab07     # Figure 48: a row per day
    python3 logbm.py report flood.log               # Quadros 6-13, Figures 53-55 (Markdown)
    python3 logbm.py report flood.log --format csv  # machine,batch,count,size,service,received,...

`record` and `connlog` speak the Spread client protocol through spread_mini's client library,
so they work against spread_mini's daemon and a real Spread daemon alike.

Module map, in the order a record or a membership meets the code:
    ConnEvent, format_conn_line, parse_conn_line     wire format of the connection log
    LogbmCore      LOGBM: a flood record (floodtools' LogRecord) to a line of the file
    ConnLogCore    GG's memberships to C/D events
    usage_chart    Figure 48 from the events (UsageChart)
    build_report   Quadros 6-13 and Figures 53-55 from the records (Row, BatchSummary, Report)
    run_record, run_connlog (floodtools' Reconnect)  I/O loops
    render_usage_*, render_markdown/_csv/_json, render_record_table   terminal rendering
    build_parser, main                               command line
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import datetime
import io
import json
import os
import re
import signal
import sys
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

try:
    import rich
    from rich.console import Console
    from rich.live import Live
    from rich.table import Table
    from rich.text import Text
except ImportError:  # plain text still works
    rich = None

import floodtools as ft  # the flood record format (FLOOREC writes it, LOGBM stores it)

# ============================================================================================
# Constants
# ============================================================================================

DEFAULT_DAEMON = ft.DEFAULT_DAEMON
LOG_GROUP = ft.LOG_GROUP
CONN_GROUP = "GG"                    #: the thesis's Grupo Geral (8.1.1)
DEFAULT_FLOOD_LOG = "flood.log"
DEFAULT_CONN_LOG = "connections.log"

CELL_S = 15 * 60                     #: one chart cell is a quarter of an hour (Figure 48)
CELLS_PER_DAY = 96
#: An off followed by an on within this many seconds is drawn as `R` (a reboot). A lab PC of
#: 2002 took one to three minutes to shut down, boot and start the client service; a person who
#: switches a machine off on purpose leaves it off far longer than five minutes. 300 s also
#: keeps an R inside one or two quarter-hour cells, so it reads as one event on the chart.
REBOOT_S = 300
MAX_CHART_DAYS = 400
CHART_ON, CHART_OFF, CHART_REBOOT = "#", ".", "R"

MAX_LINE_BYTES = 2000                #: longer lines in a log are skipped, never loaded whole
BAR_WIDTH = 50
REFRESH_S = 1.0                      #: the live table of `record`


# ============================================================================================
# Wire format
# ============================================================================================
# The connection log of 8.1.3, one event per line:  AAMMDD HH:MM:SS E NAME
#   261122 08:31:02 C lab07        (C: connected, D: disconnected)
# The flood records are floodtools' (format_record / parse_record).

@dataclass(frozen=True)
class ConnEvent:
    when: datetime.datetime
    state: str                   # "C" or "D"
    name: str


def format_conn_line(event: ConnEvent) -> str:
    return f"{event.when:%y%m%d %H:%M:%S} {event.state} {event.name}"


def parse_conn_line(line: str) -> ConnEvent:
    """One connection-log line; raises ValueError saying what is wrong."""
    words = line.split()
    if len(words) != 4:
        raise ValueError(f"expected 'AAMMDD HH:MM:SS E NAME', got {len(words)} words")
    day, clock, state, name = words
    if state not in ("C", "D"):
        raise ValueError(f"state {state[:5]!r} is neither C nor D")
    try:
        when = datetime.datetime.strptime(f"{day} {clock}", "%y%m%d %H:%M:%S")
    except ValueError:
        raise ValueError(f"bad date/time {day[:8]} {clock[:8]}") from None
    if len(name) > 64:
        raise ValueError("name longer than 64 characters")
    return ConnEvent(when, state, name)


def read_lines(path: str) -> Iterable[Tuple[int, str]]:
    """(line number, text) of a log file; over-long lines are returned cut (and then rejected)."""
    with open(path, "r", encoding="utf-8", errors="replace") as fh:
        for number, line in enumerate(fh, 1):
            yield number, line[:MAX_LINE_BYTES + 1].rstrip("\n")


def member_name(private_group: str) -> str:
    """'#lab07#daemon1' -> 'lab07' (the machine name the thesis logs); other forms unchanged."""
    parts = private_group.split("#")
    if len(parts) == 3 and parts[0] == "" and parts[1]:
        return parts[1]
    return private_group


# ============================================================================================
# Protocol core
# ============================================================================================

# ---- LOGBM: records from group `log` to lines of the file ----------------------------------

class LogbmCore:
    """Takes what arrives on group `log`; returns the line to append, or None (and why).

    Only well-formed FLOODLOG records are written (another team may share the group); LOGBM adds
    its own clock as `logbm=`, the clock the thesis used first (8.2).
    """

    def __init__(self):
        self.written = 0
        self.ignored: Dict[str, int] = {}
        self.machines: Dict[str, dict] = OrderedDict()  #: latest state per machine, for the table
        self.open_batches = 0

    def on_message(self, data: bytes, wall: float) -> Optional[str]:
        if len(data) > ft.MAX_RECORD_BYTES:
            return self._ignore("too long")
        try:
            text = data.decode("ascii").strip()
            record = ft.parse_record(text)
        except (UnicodeDecodeError, ft.MalformedMessage) as why:
            return self._ignore("not a flood record" if "FLOODLOG" not in str(data[:10]) else f"malformed ({why})")
        self.written += 1
        self._remember(record)
        return f"{text} logbm={ft.iso_time(wall)}"

    def _remember(self, r: ft.LogRecord) -> None:
        seen = self.machines.setdefault(r.machine, {"records": 0})
        seen.update(records=seen["records"] + 1, rec=r.rec, batch=r.batch, count=r.count,
                    size=r.size, service=r.service, received=r.received if r.rec == "end" else None,
                    elapsed_s=r.elapsed_s if r.rec == "end" else None, end=r.end, time=r.time)
        self.open_batches = sum(1 for m in self.machines.values() if m["rec"] == "start")

    def _ignore(self, reason: str) -> None:
        key = reason.split(" (")[0]
        self.ignored[key] = self.ignored.get(key, 0) + 1
        return None

    def snapshot(self) -> dict:
        return {"written": self.written, "ignored": dict(self.ignored), "open": self.open_batches,
                "machines": [dict(name=k, **v) for k, v in self.machines.items()]}


# ---- connection log: membership of GG to C/D lines (8.1.3) ---------------------------------

class ConnLogCore:
    """Turns the member lists of group GG into C and D events.

    It compares each regular membership with the last one, so joins, leaves, disconnects and
    network changes all come out the same way, and a reconnection of the logger itself yields
    the changes it missed (stamped with the time it learned of them). The members present when
    the logger first joins get a C line: from then on the log knows they are on.
    """

    def __init__(self, own_private_group: str = ""):
        self.own = own_private_group
        self.members: Optional[set] = None
        self.counts = {"C": 0, "D": 0}

    def on_membership(self, members: Sequence[str], when: datetime.datetime) -> List[ConnEvent]:
        now_members = {m for m in members if m != self.own}
        before = self.members if self.members is not None else set()
        self.members = now_members
        events = [ConnEvent(when, "C", member_name(m)) for m in sorted(now_members - before)]
        events += [ConnEvent(when, "D", member_name(m)) for m in sorted(before - now_members)]
        for event in events:
            self.counts[event.state] += 1
        return events

    def set_own(self, own_private_group: str) -> None:
        self.own = own_private_group


# ---- the usage chart of Figure 48 ----------------------------------------------------------

@dataclass
class UsageChart:
    machine: str
    reboot_s: int
    rows: List[Tuple[datetime.date, str, float]]  # (day, 96 cells, hours on)
    sessions: int = 0
    reboots: int = 0


def on_intervals(events: Sequence[ConnEvent], machine: str, log_start: datetime.datetime,
                 log_end: datetime.datetime) -> List[Tuple[datetime.datetime, datetime.datetime]]:
    """When the machine was on. A first D means it was on since the log began; a last C means
    it is still on at the log's end; a C while on or a D while off changes nothing."""
    intervals = []
    on_since: Optional[datetime.datetime] = None
    first = True
    for event in events:
        if event.name != machine:
            continue
        if event.state == "C" and on_since is None:
            on_since = event.when
        elif event.state == "D":
            if on_since is None and first:
                on_since = log_start
            if on_since is not None:
                intervals.append((on_since, event.when))
                on_since = None
        first = False
    if on_since is not None:
        intervals.append((on_since, max(log_end, on_since)))
    return intervals


def usage_chart(events: Sequence[ConnEvent], machine: str, reboot_s: int = REBOOT_S) -> UsageChart:
    """Figure 48: a row per day from the log's first to its last day, 96 quarter-hour cells.

    A cell is on when the machine was on at any moment of that quarter hour (so a short session
    still shows); R marks the cell where the machine went off and came back within reboot_s.
    """
    if not events:
        return UsageChart(machine, reboot_s, [])
    log_start = min(e.when for e in events)
    log_end = max(e.when for e in events)
    intervals = on_intervals(events, machine, log_start, log_end)
    day0 = datetime.datetime.combine(log_start.date(), datetime.time())
    days = min((log_end.date() - log_start.date()).days + 1, MAX_CHART_DAYS)
    cells = [CHART_OFF] * (days * CELLS_PER_DAY)
    on_s = [0.0] * days

    def cell_of(moment: datetime.datetime) -> int:
        return int((moment - day0).total_seconds() // CELL_S)

    for start, end in intervals:
        first, last = cell_of(start), cell_of(end)
        if end > start and (end - day0).total_seconds() % CELL_S == 0:
            last -= 1  # an interval ending exactly on a cell boundary does not touch the next cell
        for index in range(max(first, 0), min(last, len(cells) - 1) + 1):
            cells[index] = CHART_ON
        _add_hours(on_s, day0, start, end, days)
    reboots = 0
    for (_, off_at), (on_at, _) in zip(intervals, intervals[1:]):
        if (on_at - off_at).total_seconds() <= reboot_s:
            reboots += 1
            index = cell_of(off_at)
            if 0 <= index < len(cells):
                cells[index] = CHART_REBOOT
    rows = [(log_start.date() + datetime.timedelta(days=d),
             "".join(cells[d * CELLS_PER_DAY:(d + 1) * CELLS_PER_DAY]), on_s[d] / 3600)
            for d in range(days)]
    return UsageChart(machine, reboot_s, rows, sessions=len(intervals), reboots=reboots)


def _add_hours(on_s: List[float], day0: datetime.datetime, start: datetime.datetime,
               end: datetime.datetime, days: int) -> None:
    """Adds the seconds of [start, end) to each day they cover."""
    for d in range(days):
        day_start = day0 + datetime.timedelta(days=d)
        day_end = day_start + datetime.timedelta(days=1)
        overlap = (min(end, day_end) - max(start, day_start)).total_seconds()
        if overlap > 0:
            on_s[d] += overlap


# ---- the report: Quadros 6-13 and Figures 53-55 --------------------------------------------

CSV_COLUMNS = ("machine", "batch", "count", "size", "service", "received", "elapsed_s", "msgs_per_s")


@dataclass
class Row:
    machine: str
    batch: str
    count: int
    size: int
    service: str
    received: int
    elapsed_s: float
    msgs_per_s: float
    end: str
    started: str                 # "date time" of the start (or end) record, for ordering


@dataclass
class BatchSummary:
    batch: str
    service: str
    size: int
    count: int
    machines: int                # machines that took part (a start or an end record)
    ended: int                   # machines with an end record (the means are over these)
    complete: int                # machines that received all COUNT messages
    mean_elapsed_s: float
    mean_msgs_per_s: float
    min_msgs_per_s: float
    max_msgs_per_s: float
    started: str


@dataclass
class Report:
    rows: List[Row]
    batches: List[BatchSummary]
    incomplete: List[ft.LogRecord]       # a start record and no end record
    by_machines: List[dict]
    reliable_vs_safe: List[dict]
    small_vs_large: List[dict]
    records: int = 0
    skipped: List[str] = field(default_factory=list)
    duplicates: int = 0


def natural_key(name: str):
    """h2 before h10, as a person reads machine names."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def read_records(paths: Sequence[str]) -> Tuple[List[ft.LogRecord], List[str]]:
    """All records of the flood logs, and a note for every line skipped (torn, foreign...)."""
    runs, skipped = read_runs(paths)
    return [r for _, records in runs for r in records], skipped


def read_runs(paths: Sequence[str]) -> Tuple[List[Tuple[str, List[ft.LogRecord]]], List[str]]:
    """The records of each log file, labelled by run when there are several files (the same
    batch ids come back in every run of the experiment, and must not be merged)."""
    runs, skipped = [], []
    labels = run_labels(paths)
    for path, label in zip(paths, labels):
        records = []
        for number, line in read_lines(path):
            if not line.strip():
                continue
            try:
                records.append(ft.parse_record(line))
            except ft.MalformedMessage as why:
                skipped.append(f"{path}:{number}: {why}")
        runs.append((label, records))
    return runs, skipped


def run_labels(paths: Sequence[str]) -> List[str]:
    """'' for one file; otherwise the shortest name that tells the files apart: the file's stem
    (nine.log -> nine), else its folder (run9/flood.log -> run9), else run1, run2..."""
    if len(paths) <= 1:
        return [""] * len(paths)
    for pick in (lambda p: os.path.splitext(os.path.basename(p))[0],
                 lambda p: os.path.basename(os.path.dirname(os.path.abspath(p)))):
        labels = [pick(p) for p in paths]
        if len(set(labels)) == len(labels) and all(labels):
            return labels
    return [f"run{i}" for i in range(1, len(paths) + 1)]


def _pair(records: Sequence[ft.LogRecord]) -> Tuple[List[Tuple[str, Optional[ft.LogRecord], Optional[ft.LogRecord]]], int]:
    """(batch label, start, end) per machine and batch, in log order. A batch id used again
    later (say `--batch test` twice) is a new occurrence, labelled test#2; an end record equal to
    the one before it is a duplicate (a log concatenated twice)."""
    occurrences: Dict[Tuple[str, str], list] = OrderedDict()
    duplicates = 0
    for r in records:
        seen = occurrences.setdefault((r.machine, r.batch), [])
        if r.rec == "start":
            if seen and seen[-1][0] is not None and seen[-1][1] is None:
                duplicates += 1          # a second start while the first is still open
            else:
                seen.append([r, None])
        elif seen and seen[-1][1] is None:
            seen[-1][1] = r
        elif seen and seen[-1][1] == r:
            duplicates += 1
        else:
            seen.append([None, r])       # an end without its start (the recorder came late)
    out = []
    for (_machine, batch), seen in occurrences.items():
        for i, (start, end) in enumerate(seen):
            out.append((batch if i == 0 else f"{batch}#{i + 1}", start, end))
    return out, duplicates


def build_report(records, skipped: Sequence[str] = ()) -> Report:
    """`records`: the records of one log, or [(run label, records), ...] from read_runs()."""
    runs = records if records and isinstance(records[0], tuple) else [("", records)]
    rows, incomplete, taking_part = [], [], {}
    duplicates = total = 0
    for label, run_records in runs:
        total += len(run_records)
        pairs, dup = _pair(run_records)
        duplicates += dup
        for batch, start, end in pairs:
            name = f"{label}:{batch}" if label else batch
            some = end or start
            taking_part.setdefault(name, set()).add(some.machine)
            if end is None:
                incomplete.append(dataclasses.replace(start, batch=name))
                continue
            first = start or end
            rows.append(Row(end.machine, name, end.count, end.size, end.service, end.received, end.elapsed_s,
                            end.msgs_per_s, end.end, f"{first.date} {first.time}"))
    batches = _batch_summaries(rows, taking_part)
    order = {b.batch: i for i, b in enumerate(batches)}
    rows.sort(key=lambda w: (order[w.batch], natural_key(w.machine)))
    incomplete.sort(key=lambda r: (r.date, r.time, natural_key(r.machine)))
    return Report(rows, batches, incomplete, _by_machines(batches), _versus(batches, "service", "reliable", "safe"),
                  _versus(batches, "size", 100, 1000), records=total, skipped=list(skipped),
                  duplicates=duplicates)


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def _batch_summaries(rows: Sequence[Row], taking_part: Dict[str, set]) -> List[BatchSummary]:
    groups: Dict[str, List[Row]] = OrderedDict()
    for row in rows:
        groups.setdefault(row.batch, []).append(row)
    out = []
    for batch, members in groups.items():
        rates = [m.msgs_per_s for m in members]
        first = members[0]
        out.append(BatchSummary(batch, first.service, first.size, first.count, len(taking_part[batch]),
                                len(members), sum(1 for m in members if m.received >= m.count),
                                _mean([m.elapsed_s for m in members]), _mean(rates), min(rates), max(rates),
                                min(m.started for m in members)))
    out.sort(key=lambda b: (b.started, b.batch))
    return out


def _by_machines(batches: Sequence[BatchSummary]) -> List[dict]:
    """Figure 53: mean time and rate by number of machines, per service, size and count."""
    groups: Dict[tuple, List[BatchSummary]] = OrderedDict()
    for b in sorted(batches, key=lambda b: (b.machines, b.service, b.size, b.count)):
        groups.setdefault((b.machines, b.service, b.size, b.count), []).append(b)
    return [{"machines": k[0], "service": k[1], "size": k[2], "count": k[3], "batches": len(v),
             "mean_elapsed_s": _mean([b.mean_elapsed_s for b in v]),
             "mean_msgs_per_s": _mean([b.mean_msgs_per_s for b in v])} for k, v in groups.items()]


def _versus(batches: Sequence[BatchSummary], attr: str, left, right) -> List[dict]:
    """Figures 54 and 55: the same cases side by side, `left` against `right` of one attribute."""
    others = [a for a in ("machines", "service", "size", "count") if a != attr]
    groups: Dict[tuple, Dict[object, List[BatchSummary]]] = OrderedDict()
    for b in sorted(batches, key=lambda b: tuple(getattr(b, a) for a in others)):
        groups.setdefault(tuple(getattr(b, a) for a in others), {}).setdefault(getattr(b, attr), []).append(b)
    out = []
    for key, sides in groups.items():
        if left not in sides and right not in sides:
            continue
        item = dict(zip(others, key))
        for side in (left, right):
            got = sides.get(side, [])
            item[f"{side}_elapsed_s"] = _mean([b.mean_elapsed_s for b in got]) if got else None
            item[f"{side}_msgs_per_s"] = _mean([b.mean_msgs_per_s for b in got]) if got else None
        l_t, r_t = item[f"{left}_elapsed_s"], item[f"{right}_elapsed_s"]
        item["time_ratio"] = (r_t / l_t) if l_t and r_t else None
        out.append(item)
    return out


# ============================================================================================
# I/O loop
# ============================================================================================

def _spread():
    """spread_mini's client library, or a clear error when it is not beside us."""
    return ft._spread()


class Stop(Exception):
    pass


def _stop_on_signals() -> None:
    def handler(signum, frame):
        raise Stop()
    signal.signal(signal.SIGTERM, handler)


def run_record(daemon: str, name: str, out_path: str, group: str, live: bool, say=print) -> int:
    """LOGBM: join `log`, append every record to out_path, one line each, flushed at once."""
    sp = _spread()
    core = LogbmCore()
    _stop_on_signals()
    with open(out_path, "a", encoding="ascii", buffering=1) as out:
        try:
            with ft.connect_mailbox(sp, daemon, name, group_membership=False) as mbox:
                mbox.join(group)
                say(f"LOGBM: {mbox.private_group} joined {group!r}; appending to {out_path}")
                with _LiveTable(live, lambda: render_record_table(core.snapshot(), out_path)) as table:
                    while True:
                        msg = mbox.receive(timeout=REFRESH_S)
                        if msg is not None and isinstance(msg, sp.RegularMessage):
                            line = core.on_message(msg.data, time.time())
                            if line is not None:
                                out.write(line + "\n")
                                # flush() hands the line to the kernel: a kill -9 of this
                                # process cannot lose it any more (only a machine crash could).
                                out.flush()
                                if not table.live:
                                    say(line)
                        table.refresh()
        except (KeyboardInterrupt, Stop):
            say(f"LOGBM: stopped; {core.written} records written to {out_path}")
            return 0
        except sp.SpreadError as why:
            say(f"LOGBM: the daemon {daemon} ended the session: {why}")
            return 1


def run_connlog(daemon: str, name: str, out_path: str, group: str, reconnect: bool = False,
                reconnect_delay_s: float = 2.0, say=print) -> int:
    """8.1.3: join GG with membership messages on; one C/D line per member joining or leaving.
    With reconnect (a logger that runs as a service, as the thesis's did) it outlives daemon
    restarts: on its return, whoever came or went meanwhile gets a line stamped with that time."""
    sp = _spread()
    core = ConnLogCore()
    _stop_on_signals()
    retry = ft.Reconnect(reconnect_delay_s, reconnect_delay_s, reconnect_delay_s, ft.MAX_RECONNECT_ATTEMPTS)
    with open(out_path, "a", encoding="utf-8", buffering=1) as out:
        try:
            while True:
                try:
                    _connlog_session(sp, core, daemon, name, out, out_path, group, say, retry)
                except (sp.SpreadError, OSError, ft.ToolError) as why:
                    if retry.in_session:
                        retry.lost(time.monotonic())
                    delay_s = retry.next_delay_s() if reconnect else None
                    if delay_s is None:
                        if isinstance(why, ft.ToolError):
                            raise
                        say(f"connlog: the daemon {daemon} ended the session: {why}")
                        return 1
                    say(f"connlog: {why}; trying again in {delay_s:g} s")
                    time.sleep(delay_s)
        except (KeyboardInterrupt, Stop):
            say(f"connlog: stopped; {core.counts['C']} C and {core.counts['D']} D lines written")
            return 0


def _connlog_session(sp, core: ConnLogCore, daemon: str, name: str, out, out_path: str, group: str, say,
                     retry: ft.Reconnect) -> None:
    with ft.connect_mailbox(sp, daemon, name, group_membership=True) as mbox:
        back = retry.connected(time.monotonic())
        core.set_own(mbox.private_group)
        mbox.join(group)
        say(f"connlog: {mbox.private_group} joined {group!r}; appending to {out_path}{back}")
        while True:
            msg = mbox.receive(timeout=None)
            if not isinstance(msg, sp.MembershipMessage) or msg.group != group:
                continue
            if not msg.is_regular or msg.is_self_leave:
                continue
            for event in core.on_membership(msg.members, datetime.datetime.now()):
                line = format_conn_line(event)
                out.write(line + "\n")
                out.flush()
                say(line)


class _LiveTable:
    """rich.Live around the record loop when asked and possible; otherwise nothing."""

    def __init__(self, wanted: bool, make):
        self.make = make
        self.live = None
        self.next_at = 0.0
        if wanted and rich is not None and sys.stdout.isatty():
            self.live = Live(make(), auto_refresh=False)

    def __enter__(self):
        if self.live:
            self.live.__enter__()
        return self

    def __exit__(self, *exc):
        if self.live:
            self.live.__exit__(*exc)

    def refresh(self) -> None:
        if self.live and time.monotonic() >= self.next_at:
            self.next_at = time.monotonic() + REFRESH_S
            self.live.update(self.make(), refresh=True)


# ============================================================================================
# Terminal rendering
# ============================================================================================

# ---- usage chart ---------------------------------------------------------------------------

def chart_header() -> List[str]:
    labels = [" "] * CELLS_PER_DAY
    for hour in range(0, 24, 2):
        for i, ch in enumerate(str(hour)):
            labels[hour * 4 + i] = ch
    ticks = ("|" + "   ") * 24
    pad = " " * 11
    return [pad + "".join(labels).rstrip(), (pad + ticks).rstrip()]


def render_usage_text(chart: UsageChart, source: str = "") -> str:
    """Plain text: pastes into a report as is (inside a code block in Markdown)."""
    lines = [f"Usage of {chart.machine}" + (f" ({source})" if source else "")
             + f": one cell = 15 min; {CHART_ON} on, {CHART_OFF} off, "
             f"{CHART_REBOOT} off and on again within {chart.reboot_s} s"]
    if not chart.rows:
        return lines[0] + "\n(no events in this log)\n"
    if len(chart.rows) >= MAX_CHART_DAYS:
        lines[0] += f" (only the first {MAX_CHART_DAYS} days)"
    lines += chart_header()
    for day, cells, hours in chart.rows:
        lines.append(f"{day.isoformat()} {cells} {hours:5.2f} h")
    lines.append(f"sessions on: {chart.sessions}, reboots: {chart.reboots}")
    return "\n".join(lines) + "\n"


def render_usage_rich(chart: UsageChart, source: str = ""):
    """The same chart in colour: on green, R red, off dim."""
    styles = {CHART_ON: "green", CHART_OFF: "bright_black", CHART_REBOOT: "bold red"}
    text = Text()
    for line in render_usage_text(chart, source).splitlines():
        if len(line) > 11 and line[4:5] == "-" and line[10:11] == " ":
            text.append(line[:11])
            for ch in line[11:11 + CELLS_PER_DAY]:
                text.append(ch, style=styles.get(ch))
            text.append(line[11 + CELLS_PER_DAY:] + "\n")
        else:
            text.append(line + "\n")
    return text


# ---- report --------------------------------------------------------------------------------

def _fmt(value, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _md_table(header: Sequence[str], rows: Sequence[Sequence]) -> List[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines


def row_cells(row: Row) -> List[str]:
    return [row.machine, row.batch, str(row.count), str(row.size), row.service, str(row.received),
            f"{row.elapsed_s:.3f}", f"{row.msgs_per_s:.1f}"]


def render_markdown(report: Report, sources: Sequence[str] = ()) -> str:
    out = ["# Flood experiment report", ""]
    out.append(f"From {', '.join(sources) or 'the log'}: {report.records} records, "
               f"{len(report.rows)} completed batch receptions, {len(report.incomplete)} without an end record, "
               f"{len(report.skipped)} lines skipped, {report.duplicates} duplicates.")
    out += ["", "## Per batch", ""]
    out += _md_table(["batch", "service", "size", "count", "machines", "ended", "complete", "mean elapsed_s",
                      "mean msgs/s", "min msgs/s", "max msgs/s"],
                     [[b.batch, b.service, b.size, b.count, b.machines, b.ended, b.complete, f"{b.mean_elapsed_s:.3f}",
                       f"{b.mean_msgs_per_s:.1f}", f"{b.min_msgs_per_s:.1f}", f"{b.max_msgs_per_s:.1f}"]
                      for b in report.batches])
    # One table per size and service, as the thesis's Quadros 6-13 ("Medidas ... 1000 Reliable").
    cases: Dict[Tuple[int, str], List[Row]] = OrderedDict()
    for row in sorted(report.rows, key=lambda w: (-w.size, ft.SERVICE_NAMES.index(w.service))):
        cases.setdefault((row.size, row.service), []).append(row)
    for (size, service), rows in cases.items():
        rows.sort(key=lambda w: ([b.batch for b in report.batches].index(w.batch), natural_key(w.machine)))
        out += ["", f"## Measurements: messages of {size} B, {service} (cf. Quadros 6-13)", ""]
        out += _md_table(CSV_COLUMNS, [row_cells(r) for r in rows])
    out += ["", "## Mean by number of machines (cf. Figure 53)", ""]
    out += _md_table(["machines", "service", "size", "count", "batches", "mean elapsed_s", "mean msgs/s"],
                     [[c["machines"], c["service"], c["size"], c["count"], c["batches"],
                       f"{c['mean_elapsed_s']:.3f}", f"{c['mean_msgs_per_s']:.1f}"] for c in report.by_machines])
    out += ["", "## Reliable against Safe (cf. Figure 54)", ""]
    out += _versus_table(report.reliable_vs_safe, ("machines", "size", "count"), ("reliable", ""), ("safe", ""))
    out += ["", "## 100 against 1000 bytes (cf. Figure 55)", ""]
    out += _versus_table(report.small_vs_large, ("machines", "service", "count"), (100, " B"), (1000, " B"))
    if report.incomplete:
        out += ["", "## Started but never ended (receiver killed or cut off before its end record)", ""]
        out += _md_table(["machine", "batch", "count", "size", "service", "start"],
                         [[r.machine, r.batch, r.count, r.size, r.service, f"{r.date} {r.time}"]
                          for r in report.incomplete])
    out += ["", "## Chart: mean msgs/s per batch", "", "```"] + render_bars(report) + ["```"]
    if report.skipped:
        out += ["", "Skipped lines:", ""] + [f"- {s}" for s in report.skipped[:20]]
        if len(report.skipped) > 20:
            out.append(f"- ... and {len(report.skipped) - 20} more")
    return "\n".join(out) + "\n"


def _versus_table(cases: Sequence[dict], keys: Sequence[str], left: Tuple[object, str],
                  right: Tuple[object, str]) -> List[str]:
    """Figures 54 and 55: a case per row, `left` against `right` of one attribute (its value,
    and the unit that follows it in the column names)."""
    (lv, lu), (rv, ru) = left, right
    header = [*keys, f"{lv}{lu} elapsed_s", f"{rv}{ru} elapsed_s", f"{rv}/{lv} time", f"{lv}{lu} msgs/s",
              f"{rv}{ru} msgs/s"]
    return _md_table(header, [[*(c[k] for k in keys), _fmt(c[f"{lv}_elapsed_s"], 3), _fmt(c[f"{rv}_elapsed_s"], 3),
                               _fmt(c["time_ratio"], 2), _fmt(c[f"{lv}_msgs_per_s"]), _fmt(c[f"{rv}_msgs_per_s"])]
                              for c in cases])


def render_bars(report: Report, width: int = BAR_WIDTH) -> List[str]:
    """Horizontal bars of the mean msgs/s of each batch: a chart that pastes as text."""
    if not report.batches:
        return ["(no completed batches)"]
    labels = [f"{b.batch} {b.service} {b.size} B x{b.count} ({b.machines} m)" for b in report.batches]
    top = max(b.mean_msgs_per_s for b in report.batches) or 1.0
    pad = max(len(label) for label in labels)
    return [f"{label:<{pad}} {'#' * max(int(round(b.mean_msgs_per_s / top * width)), 0):<{width}} "
            f"{b.mean_msgs_per_s:9.1f}" for label, b in zip(labels, report.batches)]


def render_csv(report: Report) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for row in report.rows:
        writer.writerow([row.machine, row.batch, row.count, row.size, row.service, row.received,
                         f"{row.elapsed_s:.6f}", f"{row.msgs_per_s:.1f}"])
    return buf.getvalue()


def render_json(report: Report) -> str:
    def row_dict(row: Row) -> dict:
        return {"machine": row.machine, "batch": row.batch, "count": row.count, "size": row.size,
                "service": row.service, "received": row.received, "elapsed_s": row.elapsed_s,
                "msgs_per_s": round(row.msgs_per_s, 1), "end": row.end}
    return json.dumps({
        "rows": [row_dict(r) for r in report.rows],
        "batches": [b.__dict__ for b in report.batches],
        "by_machines": report.by_machines,
        "reliable_vs_safe": report.reliable_vs_safe,
        "small_vs_large": report.small_vs_large,
        "incomplete": [{"machine": r.machine, "batch": r.batch, "count": r.count, "size": r.size,
                        "service": r.service, "start": f"{r.date} {r.time}"} for r in report.incomplete],
        "records": report.records, "skipped": report.skipped, "duplicates": report.duplicates,
    }, indent=2) + "\n"


def write_png(report: Report, path: str) -> Optional[str]:
    """Bar charts of Figures 53-55 as a PNG; returns why not when matplotlib is missing."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install matplotlib, or pip install -e '.[charts]'): no PNG written"
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    # Figure 53: one group of bars per case, one bar per number of machines (9 against 167).
    cases = list(OrderedDict.fromkeys((c["service"], c["size"], c["count"]) for c in report.by_machines))
    sizes_of_lab = sorted({c["machines"] for c in report.by_machines})
    elapsed = {(c["machines"], c["service"], c["size"], c["count"]): c["mean_elapsed_s"] for c in report.by_machines}
    panels = [
        ("Mean time by number of machines", [f"{svc} {size}B x{count}" for svc, size, count in cases],
         [[elapsed.get((m,) + case, 0) for case in cases] for m in sizes_of_lab],
         [f"{m} machines" for m in sizes_of_lab]),
        ("Reliable vs Safe", [f"{c['machines']}m {c['size']}B x{c['count']}" for c in report.reliable_vs_safe],
         [[c["reliable_elapsed_s"] or 0 for c in report.reliable_vs_safe],
          [c["safe_elapsed_s"] or 0 for c in report.reliable_vs_safe]], ["reliable", "safe"]),
        ("100 vs 1000 bytes", [f"{c['machines']}m {c['service']} x{c['count']}" for c in report.small_vs_large],
         [[c["100_elapsed_s"] or 0 for c in report.small_vs_large],
          [c["1000_elapsed_s"] or 0 for c in report.small_vs_large]], ["100 B", "1000 B"]),
    ]
    for ax, (title, labels, series, names) in zip(axes, panels):
        width = 0.8 / max(len(series), 1)
        for i, (values, name) in enumerate(zip(series, names)):
            ax.bar([x + i * width for x in range(len(labels))], values, width, label=name)
        ax.set_title(title)
        ax.set_ylabel("mean elapsed time (s)")
        ax.set_xticks([x + width * (len(series) - 1) / 2 for x in range(len(labels))])
        ax.set_xticklabels(labels, rotation=30, ha="right", fontsize=7)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return None


# ---- live table of `record` ----------------------------------------------------------------

def render_record_table(snapshot: dict, out_path: str = "", plain: bool = False):
    """A pure function from the recorder's snapshot to a rich Table (or plain text)."""
    title = (f"LOGBM -> {out_path}: {snapshot['written']} records, {snapshot['open']} batches open, "
             f"ignored {sum(snapshot['ignored'].values())}")
    header = ["machine", "records", "last", "batch", "received/count", "elapsed_s", "msgs/s", "end"]
    rows = [[m["name"], str(m["records"]), f"{m['rec']} {m['time']}", m["batch"],
             f"{_fmt(m['received'])}/{m['count']}", _fmt(m["elapsed_s"], 3),
             _fmt((m["received"] or 0) / m["elapsed_s"] if m["elapsed_s"] else None), m["end"] or "-"]
            for m in snapshot["machines"]]
    return _table(title, header, rows, plain)


def _table(title: str, header: Sequence[str], rows: Sequence[Sequence[str]], plain: bool = False):
    """A rich Table, or the same as aligned plain text (without rich, or when asked)."""
    if rich is None or plain:
        widths = [max([len(h)] + [len(row[i]) for row in rows]) for i, h in enumerate(header)]
        lines = [title] + ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)) for row in [header, *rows]]
        return "\n".join(line.rstrip() for line in lines)
    table = Table(title=title)
    for column in header:
        table.add_column(column)
    for row in rows:
        table.add_row(*row)
    return table


# ============================================================================================
# Command line
# ============================================================================================

def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="logbm.py", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", metavar="{record,connlog,usage,report}")
    sub.required = True
    rec = sub.add_parser("record", help="LOGBM: write the records of group `log` to a file")
    rec.add_argument("--out", default=DEFAULT_FLOOD_LOG, help="file to append to (default flood.log)")
    rec.add_argument("--group", default=LOG_GROUP, help="group to record (default log)")
    rec.add_argument("--daemon", default=DEFAULT_DAEMON, help="spread_name of the daemon (default 4803@127.0.0.1)")
    rec.add_argument("--name", default="logbm", help="private name at the daemon (default logbm)")
    rec.add_argument("--plain", action="store_true", help="print each record instead of the live table")
    con = sub.add_parser("connlog", help="8.1.3: log members of a group connecting (C) and leaving (D)")
    con.add_argument("--group", default=CONN_GROUP, help="group to watch (default GG)")
    con.add_argument("--out", default=DEFAULT_CONN_LOG, help="file to append to (default connections.log)")
    con.add_argument("--daemon", default=DEFAULT_DAEMON)
    con.add_argument("--name", default="connlog", help="private name at the daemon (default connlog)")
    con.add_argument("--reconnect", action="store_true", help="outlive daemon restarts (a logger run as a service)")
    use = sub.add_parser("usage", help="Figure 48: a machine's usage chart from a connection log")
    use.add_argument("logfile")
    use.add_argument("--machine", required=True, help="machine name as in the log")
    use.add_argument("--reboot-s", type=_positive_int, default=REBOOT_S,
                     help=f"off and on again within this many seconds is drawn as R (default {REBOOT_S})")
    use.add_argument("--plain", action="store_true", help="no colour even in a terminal")
    rep = sub.add_parser("report", help="Quadros 6-13 and Figures 53-55 from flood logs")
    rep.add_argument("logfiles", nargs="+", metavar="FLOODLOG")
    rep.add_argument("--format", choices=("markdown", "csv", "json"), default="markdown")
    rep.add_argument("--png", metavar="FILE", help="also draw Figures 53-55 as a PNG (needs matplotlib)")
    return parser


def cmd_usage(args) -> int:
    events, bad = [], 0
    for _, line in read_lines(args.logfile):
        if not line.strip():
            continue
        try:
            events.append(parse_conn_line(line))
        except ValueError:
            bad += 1
    if not any(e.name == args.machine for e in events):
        names = sorted({e.name for e in events}, key=natural_key)
        print(f"logbm usage: no events of {args.machine!r} in {args.logfile}; machines in it: "
              f"{', '.join(names[:30]) or 'none'}", file=sys.stderr)
        return 1
    chart = usage_chart(events, args.machine, args.reboot_s)
    if rich is not None and sys.stdout.isatty() and not args.plain:
        Console().print(render_usage_rich(chart, args.logfile), end="")
    else:
        sys.stdout.write(render_usage_text(chart, args.logfile))
    if bad:
        print(f"({bad} malformed lines skipped)", file=sys.stderr)
    return 0


def cmd_report(args) -> int:
    runs, skipped = read_runs(args.logfiles)
    report = build_report(runs, skipped)
    if args.format == "csv":
        sys.stdout.write(render_csv(report))
    elif args.format == "json":
        sys.stdout.write(render_json(report))
    else:
        sys.stdout.write(render_markdown(report, args.logfiles))
    if args.png:
        why = write_png(report, args.png)
        print(why if why else f"chart written to {args.png}", file=sys.stderr)
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    ft.react_to_ctrl_c()   # Ctrl-C works even when a script started us in the background
    try:
        if args.cmd == "usage":
            return cmd_usage(args)
        if args.cmd == "report":
            return cmd_report(args)
        if args.cmd == "record":
            return run_record(args.daemon, args.name, args.out, args.group, live=not args.plain)
        return run_connlog(args.daemon, args.name, args.out, args.group, reconnect=args.reconnect)
    except OSError as why:
        print(f"logbm {args.cmd}: {why}", file=sys.stderr)
        return 1
    except ft.ToolError as why:
        print(f"logbm {args.cmd}: {why}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
