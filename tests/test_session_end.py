"""When the daemon goes away, or ends a session: every tool that holds a mailbox notices at once,
says why in one line and exits non-zero (issue 12, first contact). Real processes on loopback."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

import spread_mini as sp
from conftest import ROOT, Procs, remove_if_stale, unique_name, wait_for
from spread_helpers import start_daemon

pytestmark = pytest.mark.slow


def addr(port: int) -> str:
    return "%d@127.0.0.1" % port


def stop(daemon: subprocess.Popen, how: str) -> None:
    """kill -9 (a crash) or Ctrl-C (a clean stop): the two demos of the ring chapter."""
    daemon.send_signal(signal.SIGKILL if how == "kill -9" else signal.SIGINT)
    daemon.wait(15)


def exits_soon(proc: subprocess.Popen, within_s: float = 10.0) -> int:
    try:
        return proc.wait(within_s)
    except subprocess.TimeoutExpired:
        pytest.fail("still running %.0f s after its daemon went away:\n%s" % (within_s, Procs.output(proc)[-1500:]))


@pytest.mark.parametrize("how", ["kill -9", "Ctrl-C"])
def test_user_tool_says_its_daemon_is_gone_and_exits(procs, how):
    """It used to spin at 15-25 % CPU printing `User>` (poll() was 0 at end of stream, so it never
    called receive() to see the end)."""
    daemon, port = start_daemon(procs)
    # stdin stays open (a person who types nothing): only the daemon's end can end the tool
    user = procs.start("spread_mini.py", "user", "-s", addr(port), "-u", "alice", stdin=subprocess.PIPE)
    user.stdin.write(b"j demo\n")
    user.stdin.flush()
    wait_for(lambda: "REGULAR membership" in Procs.output(user), 15)
    stop(daemon, how)
    assert exits_soon(user) == 1
    out = Procs.output(user)
    ended = [line for line in out.splitlines() if "the session ended" in line]
    assert len(ended) == 1 and "is gone (connection refused)" in ended[0], out
    assert out.count("User>") <= 2 and "Traceback" not in out


def test_poll_raises_at_the_end_of_the_session_instead_of_saying_0(procs):
    daemon, port = start_daemon(procs)
    mbox = sp.connect(addr(port), "p")
    assert mbox.poll() == 0
    daemon.kill()
    daemon.wait(10)
    wait_for(lambda: _poll_error(mbox), 10)
    error = _poll_error(mbox)
    assert isinstance(error, sp.ConnectionClosed) and error.cause == sp.DAEMON_GONE, error
    with pytest.raises(sp.ConnectionClosed) as again:   # the same, said the same way, every time
        mbox.receive(timeout=0)
    assert again.value is error
    mbox.close()


def _poll_error(mbox):
    try:
        mbox.poll()
    except sp.ConnectionClosed as exc:
        return exc
    return None


def flood_until_cut_off(port: int, group: str, daemon, most: int = 60000) -> None:
    """1000-byte messages to `group` until the daemon cuts a session off for not reading (the
    kernel's socket buffers take a few MB first)."""
    with sp.connect(addr(port), "tx", group_membership=False) as tx:
        for sent in range(0, most, 500):
            for _ in range(500):
                tx.multicast(sp.RELIABLE_MESS, group, b"x" * 1000)
            if "not reading" in Procs.output(daemon):
                return
            time.sleep(0.01)   # let the daemon write its queues out
        wait_for(lambda: "not reading" in Procs.output(daemon), 20)


def test_a_session_the_daemon_cuts_off_is_told_from_a_daemon_that_died(procs):
    daemon, port = start_daemon(procs, "--max-session-messages", "100")
    group = unique_name("c")
    slow = sp.connect(addr(port), "slow")
    slow.join(group)
    flood_until_cut_off(port, group, daemon)   # slow reads nothing meanwhile
    with pytest.raises(sp.ConnectionClosed) as cut:
        while slow.receive(timeout=10) is not None:
            pass
    assert cut.value.cause == sp.CUT_OFF and "MaxSessionMessages" in str(cut.value), cut.value
    slow.close()
    assert daemon.poll() is None


def test_user_tool_cut_off_by_the_daemon_says_why(procs):
    """It said only `CONNECTION_CLOSED (-8): send failed: [Errno 104]`: the reason was the queue limit."""
    daemon, port = start_daemon(procs, "--max-session-messages", "50")
    group = unique_name("q")
    user = procs.start("spread_mini.py", "user", "-s", addr(port), "-u", "lazy", stdin=subprocess.PIPE)
    user.stdin.write(("j %s\n" % group).encode())
    user.stdin.flush()
    wait_for(lambda: "REGULAR membership" in Procs.output(user), 15)
    user.send_signal(signal.SIGSTOP)   # Ctrl-Z: the guide's slow receiver
    try:
        flood_until_cut_off(port, group, daemon)
    finally:
        user.send_signal(signal.SIGCONT)
    assert exits_soon(user, 30) == 1
    out = Procs.output(user)
    assert "still there, so it ended this session" in out and "MaxSessionMessages" in out, out[-1500:]


def test_user_tool_refuses_a_mess_type_out_of_16_bits(procs):
    """`m 70000` used to become mess_type 4464 without a word."""
    _, port = start_daemon(procs)
    group = unique_name("m")
    script = "j %s\nm 70000\ns %s first\nm -5\ns %s second\nw 1\nq\n" % (group, group, group)
    out = subprocess.run([sys.executable, "spread_mini.py", "user", "-s", addr(port), "-u", "m"], input=script,
                         capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert "mess_type 70000 is out of range: it is 16 bits, -32768..32767 (still 0)" in out.stdout
    assert "mess_type 0, endian_mismatch False, to 1 group(s) %s\n  (5 bytes): first" % group in out.stdout
    assert "mess_type -5," in out.stdout and "mess_type 4464" not in out.stdout


def test_library_refuses_a_mess_type_out_of_16_bits(procs):
    _, port = start_daemon(procs)
    with sp.connect(addr(port), "lib") as mbox:
        for bad in (70000, -32769, 1 << 20):
            with pytest.raises(sp.IllegalMessage):
                mbox.multicast(sp.AGREED_MESS, "g", b"x", mess_type=bad)
        mbox.join("g")
        mbox.multicast(sp.AGREED_MESS, "g", b"x", mess_type=0xFFFF)   # the unsigned spelling of -1
        got = [m for m in (mbox.receive(timeout=10), mbox.receive(timeout=10)) if not m.is_membership]
        assert got[0].mess_type == -1


# ---- the other tools that hold a mailbox ----------------------------------------------------

TOOLS = {
    "floodtools recv": ["floodtools.py", "recv", "--name", "pc01"],
    "floodtools send": ["floodtools.py", "send", "--count", "1000000", "--rate", "500", "--batch", "dies"],
    "logbm record": ["logbm.py", "record", "--plain"],
    "logbm connlog": ["logbm.py", "connlog"],
}


@pytest.mark.parametrize("tool", sorted(TOOLS))
def test_every_tool_with_a_mailbox_notices_a_killed_daemon_at_once(procs, tmp_path, tool):
    daemon, port = start_daemon(procs)
    argv = TOOLS[tool] + ["--daemon", addr(port)]
    if tool.startswith("logbm"):
        argv += ["--out", str(tmp_path / "out.log")]
    proc = procs.start(*argv)
    wait_for(lambda: any(w in Procs.output(proc) for w in ("joined", "connected as", "Interval")), 20)
    time.sleep(0.3)
    stop(daemon, "kill -9")
    code = exits_soon(proc)
    out = Procs.output(proc)
    assert code != 0 and "Traceback" not in out, out
    assert "is gone (connection refused)" in out, out


def test_suite_leaves_no_stale_unix_socket_after_a_kill(procs):
    """A daemon killed with SIGKILL cannot remove /tmp/<port>; the fixture removes it."""
    daemon, port = start_daemon(procs, unix=True)
    path = "/tmp/%d" % port
    wait_for(lambda: os.path.exists(path), 10)
    daemon.kill()
    daemon.wait(10)
    assert os.path.exists(path)     # what the kill leaves
    procs.stop_all()
    assert not os.path.exists(path)
    remove_if_stale(path)           # and again: nothing there is fine


def test_daemon_pid_file_holds_its_pid_and_goes_at_a_clean_stop(procs, tmp_path):
    """The guide's kill commands use it (`pgrep -f "name d3"` found other users' daemons)."""
    pid_file = tmp_path / "d.pid"
    daemon, _ = start_daemon(procs, "--pid-file", str(pid_file))
    wait_for(lambda: pid_file.exists() and pid_file.read_text().strip(), 10)
    assert int(pid_file.read_text()) == daemon.pid
    assert "(pid %d)" % daemon.pid in Procs.output(daemon)
    stop(daemon, "Ctrl-C")
    assert not pid_file.exists()


def test_interactive_user_prints_no_prompt_per_arriving_message(procs):
    """In a terminal, `v` (count only) must make a burst cost the reader nothing but counting: a
    `User>` line per wake-up slowed the guide's r2 until the daemon cut it off on a busy machine."""
    import pty
    import threading
    _, port = start_daemon(procs)
    group = unique_name("t")
    master, slave = os.openpty()
    user = subprocess.Popen([sys.executable, "spread_mini.py", "user", "-s", addr(port), "-u", "r2"], cwd=ROOT,
                            stdin=slave, stdout=slave, stderr=slave, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    os.close(slave)
    screen = []
    reader = threading.Thread(target=_read_pty, args=(master, screen), daemon=True)
    reader.start()
    try:
        os.write(master, ("j %s\nv\n" % group).encode())
        wait_for(lambda: "verbose off" in "".join(screen), 15)
        with sp.connect(addr(port), "tx", group_membership=False) as tx:
            for i in range(1000):          # paced: each one wakes the reader up
                tx.multicast(sp.AGREED_MESS, group, b"m%d" % i)
                time.sleep(0.001)
            wait_for(lambda: "received 1000 data messages" in "".join(screen), 30)
        text = "".join(screen)
        assert text.count("User>") <= 8, text[-2000:]   # one per command and per count line
    finally:
        user.kill()
        user.wait(10)
        reader.join(5)
        os.close(master)
    assert pty  # the module is there (Linux): the terminal is a real one


def _read_pty(fd, screen):
    while True:
        try:
            data = os.read(fd, 65536)
        except OSError:
            return
        if not data:
            return
        screen.append(data.decode("utf-8", "replace"))
