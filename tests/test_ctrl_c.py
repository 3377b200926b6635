"""Ctrl-C reaches every tool, also one a script started in the background: a shell without job
control starts `cmd &` with SIGINT ignored, and Python keeps it so unless the tool takes it back.
Real processes on loopback, each started with SIGINT ignored, then sent SIGINT."""
from __future__ import annotations

import signal
import subprocess

import pytest

from conftest import Procs, wait_for
from spread_helpers import start_daemon

pytestmark = pytest.mark.slow


def ignoring_sigint() -> None:
    """What bash does for a background job of a script (preexec_fn: runs in the child)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def addr(port: int) -> str:
    return "%d@127.0.0.1" % port


def interrupted(proc: subprocess.Popen, within_s: float = 15.0) -> int:
    proc.send_signal(signal.SIGINT)
    try:
        return proc.wait(within_s)
    except subprocess.TimeoutExpired:
        pytest.fail("SIGINT ignored: still running %.0f s later:\n%s" % (within_s, Procs.output(proc)[-1500:]))


TOOLS = {
    # argv, what it prints once it runs, what it says when Ctrl-C stops it
    "floodtools send": (["floodtools.py", "send", "--count", "1000000", "--rate", "200", "--batch", "cc"],
                        "sec", "interrupted (Ctrl-C) after"),
    "floodtools recv": (["floodtools.py", "recv", "--name", "pc01"], "member of", None),
    "logbm record": (["logbm.py", "record", "--plain", "--out", "{tmp}/flood.log"], "joined", "LOGBM: stopped"),
    "labctl agent": (["labctl.py", "agent", "--name", "lab01", "--files-root", "{tmp}"], "connected as",
                     "stopped by a signal"),
}


@pytest.mark.parametrize("tool", sorted(TOOLS))
def test_a_tool_started_with_sigint_ignored_still_stops_on_ctrl_c(procs, tmp_path, tool):
    _, port = start_daemon(procs)
    argv, running, stopped = TOOLS[tool]
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv] + ["--daemon", addr(port)]
    proc = procs.start(*argv, preexec_fn=ignoring_sigint)
    wait_for(lambda: running in Procs.output(proc) or proc.poll() is not None, 30)
    assert proc.poll() is None, Procs.output(proc)
    code = interrupted(proc)
    out = Procs.output(proc)
    assert "Traceback" not in out, out
    if stopped:
        assert stopped in out, out
    assert code in (0, 130), out


def test_send_interrupted_says_sent_and_planned_in_one_line(procs):
    _, port = start_daemon(procs)
    proc = procs.start("floodtools.py", "send", "--count", "1000000", "--rate", "200", "--batch", "half",
                       "--daemon", addr(port))
    wait_for(lambda: "sec" in Procs.output(proc), 30)
    assert interrupted(proc) == 130
    lines = [x for x in Procs.output(proc).splitlines() if "interrupted (Ctrl-C)" in x]
    assert len(lines) == 1, Procs.output(proc)
    words = lines[0].split("after ", 1)[1].split()
    sent, planned = int(words[0]), int(words[2])
    assert words[1] == "of" and words[3:6] == ["planned", "messages", "were"], lines[0]
    assert 0 < sent < planned == 1000000, lines[0]
    assert "end marker sent" in lines[0]


def test_labctl_agent_says_its_pid_first(procs, tmp_path):
    _, port = start_daemon(procs)
    proc = procs.start("labctl.py", "agent", "--name", "lab02", "--files-root", str(tmp_path),
                       "--daemon", addr(port))
    wait_for(lambda: "labctl agent lab02:" in Procs.output(proc), 30)
    first = Procs.output(proc).splitlines()[0]
    assert "labctl agent lab02: pid %d;" % proc.pid in first, first
