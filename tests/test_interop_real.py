"""The real Spread 4.4 as an oracle, both ways (PROTOCOL.md of the spread-wire notes):

* the real clients (spuser, spflooder, and sp_probe.c: a small client linked against the real
  libspread) against spread_mini's daemon;
* spread_mini's library (Mailbox), floodtools and logbm against the real daemon.

Where both daemons can run the same script, they do, and the two transcripts must be equal: the
real daemon says what is right. The transcripts cover membership (join, leave, disconnect, the
VS sets and group ids as the real daemon gives them), all six services with SELF_DISCARD, several
groups, private groups, and messages at the largest size both daemons take. A group id's middle
number is the time its ring was made, different on every run: it is compared as a placeholder.

The real daemon runs in a network namespace of its own with a private /tmp (real_spread.py);
spread_mini's daemon runs on a free loopback port. Without root, iproute2 or gcc the tests skip
with the reason. One daemon of each kind serves the whole module; every test uses its own groups.
"""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, List, Optional, Sequence

import pytest

import spread_mini as sp
from conftest import ROOT, wait_for
from real_spread import PROBE_SOURCE, RealSpread, compile_client, usable_build
from spread_helpers import port_open, start_daemon

pytestmark = pytest.mark.slow

#: the largest data of a message to one group that our library sends (data + 32 x groups <=
#: sp.MAX_SEND_LEN: one byte under the size that can make the real daemon abort)
LARGEST_ONE_GROUP = sp.MAX_SEND_LEN - sp.MAX_GROUP_NAME
SERVICES = ("UNRELIABLE", "RELIABLE", "FIFO", "CAUSAL", "AGREED", "SAFE")
RECEIVE_TIMEOUT_S = 10.0


# ---------------------------------------------------------------------------------------------
# The two daemons, seen the same way by the tests
# ---------------------------------------------------------------------------------------------

@dataclass
class Side:
    """One daemon as the tests reach it: library sessions, and processes with a spread_name."""

    kind: str                                   #: "real" or "mini"
    spread_name: str                            #: for processes started through `prefix`
    connect: Callable[..., sp.Mailbox]          #: connect(private_name, group_membership=True)
    prefix: List[str] = field(default_factory=list)  #: argv prefix that puts a process beside it
    build: Optional[Path] = None                #: the real Spread build folder (clients, libspread)
    started: List[subprocess.Popen] = field(default_factory=list)

    def start(self, argv: Sequence[str], log: Path, stdin=subprocess.DEVNULL, **kwargs) -> subprocess.Popen:
        """A process beside this daemon (killed at the end of the module if still running)."""
        out = open(log, "w+")
        proc = subprocess.Popen([*self.prefix, *argv], cwd=ROOT, stdin=stdin, stdout=out,
                                stderr=subprocess.STDOUT, **kwargs)
        proc.log_path = log  # type: ignore[attr-defined]
        self.started.append(proc)
        return proc

    def stop_started(self) -> None:
        for proc in self.started:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
        self.started.clear()


SIDES: List[Side] = []  # the daemons the module has started so far


@pytest.fixture(autouse=True)
def no_process_outlives_its_test():
    """A client a test left behind would change the next test's groups (spflooder's is fixed)."""
    yield
    for side in SIDES:
        side.stop_started()


def output(proc: subprocess.Popen) -> str:
    return Path(proc.log_path).read_text(errors="replace")  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    folder = usable_build(client_tools=True)
    daemon = RealSpread(folder, tmp_path_factory.mktemp("real"))
    daemon.start()
    side = Side("real", "4803@127.0.0.1", daemon.connect, daemon.prefix(), folder)
    SIDES.append(side)
    try:
        daemon.wait_ready()
        yield side
    finally:
        SIDES.remove(side)
        daemon.stop()


class _ModuleProcs:
    """What spread_helpers.start_daemon needs from the `procs` fixture, for a module-wide daemon."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.started: List[subprocess.Popen] = []

    def start(self, *argv: str) -> subprocess.Popen:
        log = open(self.folder / f"proc{len(self.started)}.out", "w+")
        proc = subprocess.Popen([sys.executable, *argv], cwd=ROOT, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT)
        proc.log_path = log.name  # type: ignore[attr-defined]
        self.started.append(proc)
        return proc

    @staticmethod
    def output(proc: subprocess.Popen) -> str:
        return Path(proc.log_path).read_text(errors="replace")  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def mini(tmp_path_factory):
    folder = usable_build(client_tools=True)  # the C clients come from the real build: without it there is nothing to compare
    procs = _ModuleProcs(tmp_path_factory.mktemp("mini"))
    daemon, port = start_daemon(procs)
    name = f"{port}@127.0.0.1"
    side = Side("mini", name, lambda private, group_membership=True: sp.connect(
        name, private, group_membership=group_membership), [], folder)
    SIDES.append(side)
    try:
        yield side
    finally:
        SIDES.remove(side)
        daemon.kill()
        daemon.wait(timeout=10)


@pytest.fixture(scope="module")
def probe(tmp_path_factory) -> Path:
    folder = usable_build(client_tools=True)
    if shutil.which("gcc") is None:
        pytest.skip("compiling sp_probe.c against the real libspread needs gcc")
    return compile_client(folder, PROBE_SOURCE, tmp_path_factory.mktemp("probe") / "sp_probe")


# ---------------------------------------------------------------------------------------------
# Transcripts: what a session saw, one line per message, comparable across daemons
# ---------------------------------------------------------------------------------------------

def pattern(size: int) -> bytes:
    """The data sp_probe.c sends and checks: byte i of n is (31 i + n) mod 256."""
    return bytes((i * 31 + size) & 0xFF for i in range(size))


def gid(group_id) -> str:
    """proc_id:RING:index. The middle number is the ring's creation time, never the same twice."""
    return "%d:RING:%d" % (group_id.proc_id, group_id.index)


def describe(msg) -> str:
    if msg is None:
        return "TIMEOUT"
    if isinstance(msg, sp.RegularMessage):
        kind = sp.service_name(msg.service_type & sp.REGULAR_MESS)
        data_ok = "ok" if msg.data == pattern(len(msg.data)) else "bad"
        return "MSG %s from=%s groups=%s type=%d endian=%d len=%d pattern=%s" % (
            kind, msg.sender, ",".join(msg.groups), msg.mess_type, msg.endian_mismatch, len(msg.data), data_ok)
    if msg.is_self_leave:
        return "MEMB SELF_LEAVE group=%s" % msg.group
    if msg.is_transitional:
        return "MEMB TRANS group=%s gid=%s" % (msg.group, gid(msg.group_id))
    return "MEMB REG cause=%s group=%s members=%s me=%d gid=%s changed=%s vs=%s" % (
        msg.caused_by, msg.group, ",".join(msg.members), msg.my_index, gid(msg.group_id),
        ",".join(msg.changed_members), "/".join(",".join(s) for s in msg.vs_sets))


class Sessions:
    """Named library sessions on one daemon; every receive goes into one transcript."""

    def __init__(self, side: Side):
        self.side = side
        self.boxes = {}
        self.lines: List[str] = []

    def connect(self, name: str, group_membership: bool = True) -> sp.Mailbox:
        self.boxes[name] = self.side.connect(name, group_membership=group_membership)
        self.lines.append("%s CONNECTED %s" % (name, self.boxes[name].private_group))
        return self.boxes[name]

    def recv(self, name: str, timeout_s: float = RECEIVE_TIMEOUT_S, **kwargs) -> None:
        try:
            line = describe(self.boxes[name].receive(timeout=timeout_s, **kwargs))
        except sp.SpreadError as exc:
            line = "ERR %s" % type(exc).__name__
        self.lines.append("%s %s" % (name, line))

    def nothing(self, name: str, wait_s: float = 0.3) -> None:
        """What arrives within wait_s where nothing should: recorded, so both daemons must agree."""
        self.recv(name, wait_s)

    def close(self) -> None:
        for box in self.boxes.values():
            box.close()


def run_on_both(real: Side, mini: Side, scenario: Callable[[Sessions, str], None], tag: str) -> List[str]:
    """The scenario against each daemon; their transcripts must be equal. Returns the real one."""
    transcripts = {}
    for side in (real, mini):
        sessions = Sessions(side)
        try:
            scenario(sessions, tag)
        finally:
            sessions.close()
        transcripts[side.kind] = sessions.lines
    assert transcripts["mini"] == transcripts["real"]
    return transcripts["real"]


# ---------------------------------------------------------------------------------------------
# spread_mini's library against both daemons
# ---------------------------------------------------------------------------------------------

def membership_scenario(s: Sessions, tag: str) -> None:
    group, other = "mg" + tag, "mo" + tag
    s.connect("ma")
    s.boxes["ma"].join(group)
    s.recv("ma")
    s.connect("mb")
    s.boxes["mb"].join(group)
    s.recv("ma"), s.recv("mb")
    s.connect("mc", group_membership=False)       # joins, but is told of no membership
    s.boxes["mc"].join(group)
    s.recv("ma"), s.recv("mb")
    s.nothing("mc")
    s.boxes["mb"].join(other)
    s.recv("mb")
    s.boxes["mb"].leave(group)
    s.recv("mb"), s.recv("ma")
    s.boxes["mb"].join(group)
    s.recv("ma"), s.recv("mb")
    s.boxes["mb"].disconnect()                    # leaves both groups at once
    s.recv("ma")
    s.boxes["mc"].close()                         # a session that vanishes without a word
    s.recv("ma")
    s.boxes["ma"].leave(group)
    s.recv("ma")
    s.nothing("ma")


def test_membership_messages_are_the_real_daemons(real, mini):
    lines = run_on_both(real, mini, membership_scenario, "1")
    # a group id counts the group's changes; a VS set of a join, leave or disconnect is the one
    # member that changed (Spread 4.4 sends no other)
    assert "ma MEMB REG cause=DISCONNECT group=mg1 members=#ma#localhost,#mc#localhost me=0 gid=2130706433:RING:6 " \
           "changed=#mb#localhost vs=#mb#localhost" in lines
    assert "mc TIMEOUT" in lines and "ma MEMB SELF_LEAVE group=mg1" in lines


def services_scenario(s: Sessions, tag: str) -> None:
    group, second, empty = "sg" + tag, "sh" + tag, "se" + tag
    for name in ("sa", "sb"):
        s.connect(name)
        s.boxes[name].join(group)
        s.recv(name)
    s.recv("sa")
    s.boxes["sb"].join(second)
    s.recv("sb")
    for mess_type, service in enumerate(SERVICES):
        for discard in (0, sp.SELF_DISCARD):
            code = getattr(sp, service + "_MESS") | discard
            s.boxes["sa"].multicast(code, group, pattern(100 + mess_type), mess_type=mess_type + 10 * bool(discard))
            s.recv("sb")
            if not discard:
                s.recv("sa")
    s.nothing("sa")
    # one message to several groups, one of them without members; a private group; a non-member
    s.boxes["sa"].multicast(sp.AGREED_MESS, [group, second, empty], pattern(7), mess_type=-3)
    s.recv("sa"), s.recv("sb")
    s.boxes["sa"].multicast(sp.FIFO_MESS, "#sb#localhost", pattern(9), mess_type=4)
    s.recv("sb")
    s.boxes["sb"].multicast(sp.SAFE_MESS, [second, "#sa#localhost"], pattern(11))
    s.recv("sa"), s.recv("sb")
    s.connect("sc", group_membership=False)
    s.boxes["sc"].multicast(sp.CAUSAL_MESS, group, pattern(0), mess_type=32767)
    s.recv("sa"), s.recv("sb")
    s.nothing("sc")


def test_all_six_services_several_groups_and_private_groups_as_the_real_daemon_delivers(real, mini):
    lines = run_on_both(real, mini, services_scenario, "2")
    assert sum(" MSG " in line for line in lines) == 6 * 3 + 7
    assert all("pattern=ok" in line for line in lines if " MSG " in line)


def big_scenario(s: Sessions, tag: str) -> None:
    group, second = "bg" + tag, "bh" + tag
    for name in ("ba", "bb"):
        s.connect(name)
        s.boxes[name].join(group)
        s.boxes[name].join(second)
        for _ in range(2):
            s.recv(name)
            if name != "ba":
                s.recv("ba")
    for size, groups in ((100_000, [group]), (LARGEST_ONE_GROUP, [group]),
                         (sp.MAX_SEND_LEN - 2 * sp.MAX_GROUP_NAME, [group, second]),
                         (LARGEST_ONE_GROUP, [group])):
        s.boxes["ba"].multicast(sp.SAFE_MESS, groups, pattern(size))
        s.recv("bb")
    s.boxes["ba"].multicast(sp.AGREED_MESS, group, pattern(5000))
    s.recv("bb", max_mess_len=100)                # too short: the message stays queued
    s.recv("bb", max_mess_len=5000)
    for _ in range(5):
        s.recv("ba")
    s.nothing("ba")


def test_messages_at_the_largest_size_both_daemons_take(real, mini):
    lines = run_on_both(real, mini, big_scenario, "3")
    assert "bb MSG SAFE from=#ba#localhost groups=bg3 type=0 endian=0 len=%d pattern=ok" % LARGEST_ONE_GROUP in lines
    assert "bb ERR BufferTooShort" in lines


def test_a_name_in_use_and_an_illegal_group_are_refused_alike(real, mini):
    seen = {}
    for side in (real, mini):
        first = side.connect("dup")
        try:
            with pytest.raises(sp.RejectNotUnique):
                side.connect("dup")
            first.join("ok")
            first.multicast(sp.AGREED_MESS, "ok", b"x")
            seen[side.kind] = describe(first.receive(timeout=RECEIVE_TIMEOUT_S)), \
                describe(first.receive(timeout=RECEIVE_TIMEOUT_S))
        finally:
            first.disconnect()
    assert seen["mini"] == seen["real"]


# ---------------------------------------------------------------------------------------------
# The real libspread (sp_probe.c) against both daemons
# ---------------------------------------------------------------------------------------------

class Probe:
    """sp_probe as a process: one command in, and for `recv`/`send`/`quit` one line out."""

    def __init__(self, side: Side, exe: Path, name: str, log: Path, *extra: str):
        self.name = name
        self.proc = subprocess.Popen([*side.prefix, str(exe), side.spread_name, name, *extra], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
        side.started.append(self.proc)
        self.first = self._line()

    def _line(self) -> str:
        line = self.proc.stdout.readline()
        assert line, "sp_probe %s ended: exit %s" % (self.name, self.proc.poll())
        return line.rstrip("\n")

    def say(self, command: str) -> Optional[str]:
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self._line() if command.split()[0] in ("recv", "send", "quit") else None


def probe_scenario(side: Side, exe: Path, tmp: Path, tag: str) -> List[str]:
    group, second = "pg" + tag, "ph" + tag
    lines: List[str] = []
    probes = {}

    def start(name, *extra):
        probes[name] = Probe(side, exe, name, tmp / ("%s_%s.log" % (side.kind, name)), *extra)
        lines.append("%s %s" % (name, probes[name].first))

    def do(name, command):
        line = probes[name].say(command)
        if line is not None:
            lines.append("%s %s" % (name, re.sub(r"gid=(-?\d+):-?\d+:", r"gid=\1:RING:", line)))

    start("pa")
    start("pb")
    do("pa", "join " + group), do("pa", "recv")
    do("pb", "join " + group), do("pa", "recv"), do("pb", "recv")
    do("pb", "join " + second), do("pb", "recv")
    for mess_type, service in enumerate(SERVICES):
        do("pa", "send %s %s %d %d" % (service, group, 200 + mess_type, mess_type)), do("pb", "recv"), do("pa", "recv")
        do("pa", "send %s+SD %s 1 -1" % (service, group)), do("pb", "recv")
    # the largest messages our library sends (sp.MAX_SEND_LEN: at 143152 the real daemon can abort)
    do("pa", "send SAFE %s,%s %d 7" % (group, second, sp.MAX_SEND_LEN - 64)), do("pb", "recv"), do("pa", "recv")
    do("pa", "send AGREED %s %d 2" % (group, LARGEST_ONE_GROUP)), do("pb", "recv 100"), do("pb", "recv")
    do("pa", "recv")
    do("pa", "send RELIABLE #pb#localhost 3 0"), do("pb", "recv")
    start("pc", "nomemb")
    do("pc", "join " + group), do("pa", "recv"), do("pb", "recv")
    do("pb", "leave " + group), do("pb", "recv"), do("pa", "recv")
    do("pb", "join " + group), do("pa", "recv"), do("pb", "recv")
    do("pb", "quit"), do("pa", "recv")
    probes["pc"].proc.kill()                      # killed: the daemon sees the connection drop
    do("pa", "recv")
    do("pa", "quit")
    for p in probes.values():
        p.proc.wait(timeout=10)
    return lines


def test_the_real_libspread_sees_the_same_on_both_daemons(real, mini, probe, tmp_path):
    seen = {side.kind: probe_scenario(side, probe, tmp_path, "4") for side in (real, mini)}
    assert seen["mini"] == seen["real"]
    lines = seen["real"]
    assert "pb MSG AGREED from=#pa#localhost groups=pg4 type=2 endian=0 len=%d pattern=ok" % LARGEST_ONE_GROUP in lines
    assert "pb ERR BUFFER_TOO_SHORT needed=%d" % LARGEST_ONE_GROUP in lines
    assert sum("pattern=ok" in line for line in lines) == 6 * 3 + 5 and "pattern=bad" not in "".join(lines)


# ---------------------------------------------------------------------------------------------
# The real spuser and spflooder against spread_mini's daemon
# ---------------------------------------------------------------------------------------------

def spuser_session(side: Side, tmp: Path, tag: str) -> List[str]:
    """spuser joins a group, gets a message from our library, sends one back, leaves, quits.
    Returns spuser's lines without its prompts (its menu and `User>` change nothing)."""
    group = "ug" + tag
    user = subprocess.Popen([*side.prefix, str(side.build / "spuser"), "-s", side.spread_name, "-u", "su"],
                            stdin=subprocess.PIPE, stdout=open(tmp / ("spuser_%s.out" % side.kind), "w"),
                            stderr=subprocess.STDOUT, text=True, bufsize=1)
    side.started.append(user)
    printed = lambda: (tmp / ("spuser_%s.out" % side.kind)).read_text(errors="replace")
    box = side.connect("py")
    try:
        box.join(group)
        assert box.receive(timeout=RECEIVE_TIMEOUT_S).is_membership
        user.stdin.write("j %s\n" % group)
        user.stdin.flush()
        wait_for(lambda: "#su#localhost" in describe(box.receive(timeout=RECEIVE_TIMEOUT_S)), 15)
        box.multicast(sp.AGREED_MESS, group, b"from the library", mess_type=3)
        assert box.receive(timeout=RECEIVE_TIMEOUT_S).data == b"from the library"  # our own copy
        wait_for(lambda: "from the library" in printed(), 15)
        user.stdin.write("s %s\nfrom spuser\n" % group)
        user.stdin.flush()
        sent = box.receive(timeout=RECEIVE_TIMEOUT_S)
        assert (sent.service_type & sp.REGULAR_MESS, sent.sender, sent.mess_type, sent.data) == \
            (sp.SAFE_MESS, "#su#localhost", 1, b"from spuser\n")
        # spuser reads its commands with stdio from a pipe: a line it has buffered waits for the
        # next readable event, so the last command goes with the end of input
        user.stdin.write("l %s\n" % group)
        user.stdin.flush()
        left = box.receive(timeout=RECEIVE_TIMEOUT_S)
        assert left.caused_by == "LEAVE" and left.changed_members == ["#su#localhost"]
        # spuser's own self-leave notice may still be on its way when the others' notice reached
        # us; if "q" got there first spuser would quit without printing it (CI saw that once)
        wait_for(lambda: "left group %s" % group in printed(), 15)
        user.stdin.write("q\n")
        user.stdin.close()
        assert user.wait(timeout=15) == 0
    finally:
        box.disconnect()
    text = re.sub(r"grp id is (-?\d+) -?\d+ ", r"grp id is \1 RING ", printed()).replace(side.spread_name, "DAEMON")
    return [line.strip() for line in text.replace("User>", "\n").splitlines()
            if line.strip() and not line.startswith(("=", "\t", "-")) and "--" not in line
            and "User Menu" not in line and "enter message" not in line]


def test_spuser_works_against_our_daemon_as_against_the_real_one(real, mini, tmp_path):
    seen = {side.kind: spuser_session(side, tmp_path, "5") for side in (real, mini)}
    assert seen["mini"] == seen["real"]
    assert "received AGREED message from #py#localhost, of type 3, (endian 0) to 1 groups" in seen["real"]


def test_spflooder_floods_through_our_daemon(mini, tmp_path):
    flooder = str(mini.build / "spflooder")
    watcher = mini.connect("watch")               # sees the reader join (its output is buffered)
    watcher.join("flooder")
    # The writer waits for its own message i - 200 after sending message i, and exits without
    # SP_disconnect: the close with its own last messages unread resets the connection, and what
    # its kernel had not sent yet is gone. What the reader is sure to get is 5000 - 200.
    reader = mini.start([flooder, "-u", "fr", "-s", mini.spread_name, "-ro", "-m", "4800"], tmp_path / "reader.out")
    wait_for(lambda: "#fr#localhost" in describe(watcher.receive(timeout=1)), 15)
    watcher.disconnect()
    writer = mini.start([flooder, "-u", "fw", "-s", mini.spread_name, "-m", "5000", "-b", "1000"], tmp_path / "writer.out")
    assert writer.wait(timeout=120) == 0, output(writer)
    assert reader.wait(timeout=60) == 0, output(reader)
    assert "completed multicast of 5000 messages" in output(writer)
    assert "completed multicast of 4800 messages" in output(reader)


def test_spflooders_with_membership_wait_for_each_other_on_our_daemon(mini, tmp_path):
    flooder = str(mini.build / "spflooder")
    pair = [mini.start([flooder, "-u", "fn%d" % i, "-s", mini.spread_name, "-n", "2", "-m", "3000", "-b", "500"],
                       tmp_path / ("n%d.out" % i)) for i in (1, 2)]
    for proc in pair:
        assert proc.wait(timeout=120) == 0, output(proc)
        assert "completed multicast of 3000 messages" in output(proc)
        assert "with 2 members" in output(proc)


# ---------------------------------------------------------------------------------------------
# floodtools and logbm against the real daemon
# ---------------------------------------------------------------------------------------------

def test_floodtools_and_logbm_run_a_batch_through_the_real_daemon(real, tmp_path):
    import floodtools as ft
    log = tmp_path / "flood.log"
    recorder = real.start([sys.executable, "logbm.py", "record", "--plain", "--daemon", real.spread_name,
                           "--out", str(log)], tmp_path / "logbm.out")
    wait_for(lambda: "joined" in output(recorder) or recorder.poll() is not None, 20)
    receivers = []
    for machine in ("pc01", "pc02"):
        proc = real.start([sys.executable, "floodtools.py", "recv", "--name", machine, "--daemon", real.spread_name],
                          tmp_path / (machine + ".out"))
        wait_for(lambda: "connected as" in output(proc) or proc.poll() is not None, 20)
        receivers.append(proc)
    assert all(p.poll() is None for p in (recorder, *receivers)), output(recorder)
    for service, batch in (("safe", "rsafe"), ("agreed", "ragreed")):
        done = subprocess.run([*real.prefix, sys.executable, "floodtools.py", "send", "--daemon", real.spread_name,
                               "--count", "1500", "--size", "1000", "--service", service, "--batch", batch,
                               "--name", "env"], cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr

    def records():
        return [ft.parse_record(line) for line in log.read_text().splitlines()] if log.exists() else []

    wait_for(lambda: sum(r.rec == "end" for r in records()) == 4, 60)
    ends = sorted((r.machine, r.batch, r.received, r.end) for r in records() if r.rec == "end")
    assert ends == [(m, b, 1500, "complete") for m in ("pc01", "pc02") for b in ("ragreed", "rsafe")]


# ---------------------------------------------------------------------------------------------
# The side-by-side benchmark still runs (its figures are in the README, not asserted here)
# ---------------------------------------------------------------------------------------------

def test_side_by_side_benchmark_runs_one_small_pair(real):
    done = subprocess.run([sys.executable, "bench/side_by_side.py", "--count", "500", "--pairs", "1"], cwd=ROOT,
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(r"pair 1 real: +\d+ msgs/s", done.stdout) and re.search(r"pair 1 mini: +\d+ msgs/s", done.stdout)
    assert re.search(r"spread_mini \d+ msgs/s, real Spread \d+ msgs/s, ratio \d+\.\d\d", done.stdout)
    assert "rerun: sudo python3 bench/side_by_side.py" in done.stdout
