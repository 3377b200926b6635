"""How a flood batch ends when something goes away (issue 12, first contact): a killed daemon is
not a slow receiver, a receiver moves to another daemon of the configuration and hands in its
records there, Ctrl-C of the sender still sends the end marker, Ctrl-C of the experiment still
leaves a report. Real processes on loopback."""
from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import floodtools as ft
from conftest import ROOT, Procs, wait_for
from ring_helpers import start_ring
from spread_helpers import start_daemon

pytestmark = pytest.mark.slow


def records(path: Path):
    if not path.exists():
        return []
    return [ft.parse_record(line) for line in path.read_text().splitlines() if line.strip()]


def ends_of(path: Path, machine: str):
    return [r for r in records(path) if r.rec == "end" and r.machine == machine]


def start_tool(procs, *argv):
    proc = procs.start(*argv)
    wait_for(lambda: any(w in Procs.output(proc) for w in ("joined", "connected as")) or proc.poll() is not None, 20)
    assert proc.poll() is None, Procs.output(proc)
    return proc


def sender(name: str, *argv) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "floodtools.py", "send", "--daemon", name, "--name", "env", *argv],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_receiver_of_a_killed_daemon_moves_to_another_and_hands_in_its_records(procs, tmp_path):
    """It used to say `DISCONNECTED by the daemon ... a slow receiver`, fail with `Connection
    refused`, and the report counted it nowhere."""
    _conf, port, ips, daemons = start_ring(procs, tmp_path)
    names = ["%d@%s" % (port, ip) for ip in ips]
    log = tmp_path / "flood.log"
    start_tool(procs, "logbm.py", "record", "--plain", "--daemon", names[0], "--out", str(log))
    pc03 = start_tool(procs, "floodtools.py", "recv", "--name", "pc03", "--daemon", ",".join(names[2:] + names[:2]))
    long = sender(names[0], "--count", "1000000", "--size", "100", "--rate", "2000", "--batch", "long")
    try:
        wait_for(lambda: "RECEIVING" in Procs.output(pc03), 30)
        daemons[2].kill()                                  # d3: by its pid, never by name
        wait_for(lambda: ends_of(log, "pc03"), 30)
    finally:
        long.send_signal(signal.SIGINT)
        long.communicate(timeout=30)
    [end] = ends_of(log, "pc03")
    assert (end.batch, end.end, end.extra.get("cause")) == ("long", "disconnected", "daemon-gone"), end
    out = Procs.output(pc03)
    assert "is gone (connection refused)" in out and "slow receiver" not in out, out
    assert "moving to %s" % names[0] in out and "sent to 'log' at %s" % names[0] in out, out
    # and it goes on there: the next batch is whole
    assert subprocess.run([sys.executable, "floodtools.py", "send", "--daemon", names[1], "--count", "300",
                           "--size", "100", "--batch", "after"], cwd=ROOT, timeout=60).returncode == 0
    wait_for(lambda: [r.received for r in ends_of(log, "pc03") if r.batch == "after"] == [300], 30)
    assert pc03.poll() is None


def test_receiver_whose_only_daemon_died_says_so_and_exits_4(procs, tmp_path):
    daemon, port = start_daemon(procs)
    name = "%d@127.0.0.1" % port
    pc01 = start_tool(procs, "floodtools.py", "recv", "--name", "pc01", "--daemon", name)
    long = sender(name, "--count", "1000000", "--size", "100", "--rate", "2000", "--batch", "long")
    wait_for(lambda: "RECEIVING" in Procs.output(pc01), 30)
    daemon.kill()
    long.communicate(timeout=30)
    assert pc01.wait(15) == ft.EXIT_DAEMON_GONE
    out = Procs.output(pc01)
    assert "end=disconnected cause=daemon-gone" in out and "could not send the end records" in out, out
    assert "slow receiver" not in out and "Traceback" not in out


def test_ctrl_c_of_the_sender_still_sends_the_end_marker(procs, tmp_path):
    """Without it the receivers waited 30 s (IDLE_TIMEOUT_S) for a marker that never came."""
    _, port = start_daemon(procs)
    name = "%d@127.0.0.1" % port
    log = tmp_path / "flood.log"
    start_tool(procs, "logbm.py", "record", "--plain", "--daemon", name, "--out", str(log))
    start_tool(procs, "floodtools.py", "recv", "--name", "pc01", "--daemon", name, "--end-grace", "0.5")
    long = sender(name, "--count", "1000000", "--size", "100", "--rate", "2000", "--batch", "cut")
    wait_for(lambda: [r for r in records(log) if r.rec == "start"], 30)
    long.send_signal(signal.SIGINT)
    out, err = long.communicate(timeout=30)
    assert long.returncode == 130 and "end marker sent" in err and "Traceback" not in err, (out, err)
    stopped = time.monotonic()
    wait_for(lambda: ends_of(log, "pc01"), 15)
    [end] = ends_of(log, "pc01")
    assert end.end == "marker" and 0 < end.received < 1000000, end
    assert time.monotonic() - stopped < ft.IDLE_TIMEOUT_S / 2


def test_ctrl_c_of_the_experiment_leaves_a_report_of_what_was_done(tmp_path):
    out_dir = tmp_path / "exp"
    runner = subprocess.Popen([sys.executable, "floodtools.py", "experiment", "--loopback", "--hosts", "2",
                               "--counts", "300,1000000", "--sizes", "100", "--services", "reliable",
                               "--rate", "3000", "--out", str(out_dir)],
                              cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: any(r.batch == "r100x1000000" for r in records(out_dir / "flood.log")), 90)
    finally:
        runner.send_signal(signal.SIGINT)   # the runner only, as `kill -INT` would
        out, err = runner.communicate(timeout=90)
    assert runner.returncode == 130, (out[-2000:], err[-2000:])
    report = (out_dir / "report.md").read_text()
    assert "Interrupted after 1 of 2 batches" in report, report[-1500:]
    assert "| pc01 | r100x300 | 300 | 100 | reliable | 300 |" in report
    assert (out_dir / "report.csv").exists() and "Traceback" not in err
