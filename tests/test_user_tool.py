"""The `user` tool as the lab guide uses it: piped scripts, paced bursts, refused sessions.
Its line reader and argument parsing alone, then real processes on loopback."""
from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

import spread_mini as sp
from conftest import ROOT, Procs, unique_name, wait_for
from spread_helpers import start_daemon


def addr(port: int) -> str:
    return "%d@127.0.0.1" % port


def run_user(port: int, name: str, script: str, timeout_s: float = 60):
    return subprocess.run([sys.executable, "spread_mini.py", "user", "-s", addr(port), "-u", name],
                          input=script, capture_output=True, text=True, timeout=timeout_s, cwd=ROOT)


# ---- the pieces alone -------------------------------------------------------------------------

def test_line_reader_hands_out_every_line_of_one_read_before_reading_again():
    read_end, write_end = os.pipe()
    try:
        os.write(write_end, b"j g\ns g hi\nw 1")
        lines = sp.LineReader(read_end)
        lines.fill()                          # one read took all three
        assert [lines.next_line(), lines.next_line()] == ["j g\n", "s g hi\n"]
        assert lines.next_line() is None and not lines.at_end   # "w 1" has no newline yet
        os.close(write_end)
        write_end = -1
        lines.fill()                          # the end of the input: the rest is a line
        assert lines.next_line() == "w 1"
        assert lines.next_line() is None and lines.at_end
    finally:
        os.close(read_end)
        if write_end >= 0:
            os.close(write_end)


@pytest.mark.parametrize("text, parsed", [
    ("", (10, 100, 0.0)), ("5000", (5000, 100, 0.0)), ("5000 1000", (5000, 1000, 0.0)),
    ("5000 1000 2000", (5000, 1000, 2000.0)), ("3 10 0.5", (3, 10, 0.5))])
def test_burst_arguments(text, parsed):
    assert sp.burst_arguments(text) == parsed


@pytest.mark.parametrize("text", ["x", "5 -1", "-5", "5 10 -1", "5 10 inf", "5 10 nan", "1 2 3 4",
                                  "5 %d" % sp.MAX_SEND_LEN])
def test_burst_arguments_refuses_bad_ones(text):
    with pytest.raises(ValueError):
        sp.burst_arguments(text)


@pytest.mark.parametrize("code, words", [
    (sp.REJECT_QUOTA, "as many sessions as it allows"),
    (sp.REJECT_NOT_UNIQUE, "'alice' is already in use"),
    (sp.REJECT_ILLEGAL_NAME, "'alice' is not allowed"),
    (sp.REJECT_VERSION, "version"),
    (sp.REJECT_NO_NAME, "private name"),
    (sp.REJECT_AUTH, "authentication")])
def test_every_refusal_says_why_in_one_line(code, words):
    error = sp.refusal(code, "alice")
    assert type(error) is type(sp.error_for_code(code)) and error.code == code
    assert words in str(error) and "\n" not in str(error), error


# ---- real processes -----------------------------------------------------------------------------

@pytest.mark.slow
def test_commands_written_at_once_are_all_run_while_stdin_stays_open(procs):
    """A buffered reader took both lines at once and select() then saw the pipe empty: `s` waited
    for more input that a script feeding it slowly had not sent yet."""
    _, port = start_daemon(procs)
    group = unique_name("p")
    user = procs.start("spread_mini.py", "user", "-s", addr(port), "-u", "pipe", stdin=subprocess.PIPE)
    user.stdin.write(("j %s\ns %s hello from a pipe\n" % (group, group)).encode())
    user.stdin.flush()                        # and the pipe stays open
    wait_for(lambda: "hello from a pipe" in Procs.output(user), 20)
    assert "REGULAR membership" in Procs.output(user)


@pytest.mark.slow
def test_piped_script_with_spusers_s_then_text_line(procs):
    """`s GROUP` without text takes the next line as the text, as the real spuser does."""
    _, port = start_daemon(procs)
    with sp.connect(addr(port), "rx", group_membership=False) as receiver:
        receiver.join("g")
        done = run_user(port, "spu", "j g\ns g\nhi\nq\n")     # the q comes before "hi" is back
        assert done.returncode == 0, done.stderr
        assert "unknown command" not in done.stdout
        msg = receiver.receive(timeout=10)
    assert msg is not None and msg.data == b"hi" and msg.sender.startswith("#spu#"), msg


@pytest.mark.slow
def test_burst_with_a_rate_is_paced_and_all_arrive(procs):
    _, port = start_daemon(procs)
    group = unique_name("b")
    receiver = sp.connect(addr(port), "rx", group_membership=False)
    receiver.join(group)
    try:
        done = run_user(port, "tx", "b %s 21 50 100\nq\n" % group)
        assert done.returncode == 0, done.stderr
        line = [x for x in done.stdout.splitlines() if x.startswith("sent 21 messages")]
        assert line and "(at most 100 per second)" in line[0], done.stdout
        # 21 messages at 100/s cannot take less than 0.2 s: the first goes at once
        assert float(line[0].split(" in ")[1].split(" s")[0]) >= 0.19, line
        got = []
        while len(got) < 21:
            msg = receiver.receive(timeout=10)
            assert msg is not None, "only %d of 21 arrived" % len(got)
            got.append(msg.data)
        assert [d.split()[1] for d in got] == [b"%d" % i for i in range(21)]
        assert all(len(d) == 50 for d in got)
    finally:
        receiver.close()


@pytest.mark.slow
def test_user_refused_for_the_quota_says_why_in_one_line(procs):
    _, port = start_daemon(procs, "--max-sessions", "1")
    holder = sp.connect(addr(port), "first")
    try:
        done = run_user(port, "second", "q\n")
    finally:
        holder.close()
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "REJECT_QUOTA" in lines[0], done.stderr
    assert "as many sessions as it allows" in lines[0] and "--max-sessions" in lines[0], done.stderr


@pytest.mark.slow
def test_library_refused_for_a_taken_name_says_which_name(procs):
    _, port = start_daemon(procs)
    with sp.connect(addr(port), "twin"):
        with pytest.raises(sp.RejectNotUnique) as refused:
            sp.connect(addr(port), "twin")
    assert "the private name 'twin' is already in use on this daemon" in str(refused.value)


class Terminal:
    """`spread_mini.py user` in a pseudo-terminal, as a student runs it."""

    def __init__(self, port: int, name: str):
        import pty  # noqa: F401  (Linux: the terminal is a real one)
        import threading
        self.master, slave = os.openpty()
        self.proc = subprocess.Popen([sys.executable, "spread_mini.py", "user", "-s", addr(port), "-u", name],
                                     cwd=ROOT, stdin=slave, stdout=slave, stderr=slave,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1"})
        os.close(slave)
        self.screen: list = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        while True:
            try:
                data = os.read(self.master, 65536)
            except OSError:
                return
            if not data:
                return
            self.screen.append(data.decode("utf-8", "replace"))

    def text(self) -> str:
        return "".join(self.screen)

    def type(self, line: str, then: str, timeout_s: float = 30) -> None:
        os.write(self.master, (line + "\n").encode())
        wait_for(lambda: then in self.text(), timeout_s)

    def close(self) -> None:
        self.proc.send_signal(signal.SIGCONT)
        self.proc.kill()
        self.proc.wait(10)
        self.reader.join(5)
        os.close(self.master)


@pytest.mark.slow
def test_guide_chapter_2_step_5_r2_gets_all_5000_and_slow_is_cut_off(procs):
    """lab_guide.md chapter 2, step 5, in terminals: `slow` stopped with Ctrl-Z is cut off at the
    queue limit of 200; r2, counting with `v`, gets every one of the paced burst."""
    daemon, port = start_daemon(procs, "--max-session-messages", "200")
    r1, r2, slow = Terminal(port, "r1"), Terminal(port, "r2"), Terminal(port, "slow")
    try:
        r1.type("j exp", "REGULAR membership")
        r2.type("j exp", "#r1#")
        r2.type("v", "verbose off")
        slow.type("j exp", "#slow#")
        wait_for(lambda: "#slow#" in r2.text(), 15)
        slow.proc.send_signal(signal.SIGSTOP)          # Ctrl-Z
        r1.type("t agreed+self", "service type is now")
        r1.type("b exp 5000 1000 2000", "sent 5000 messages of 1000 bytes", 120)
        wait_for(lambda: "not reading" in Procs.output(daemon), 30)
        wait_for(lambda: "received 5000 data messages" in r2.text() or r2.proc.poll() is not None, 60)
        r2.type("v", "verbose on", 30)
        assert "verbose on (5000 data messages so far)" in r2.text(), r2.text()[-1500:]
        wait_for(lambda: "DISCONNECT of #slow#" in r2.text(), 15)
        cut = [line for line in Procs.output(daemon).splitlines() if "not reading" in line]
        assert any("#slow#" in line for line in cut) and not any("#r2#" in line for line in cut), cut
    finally:
        for terminal in (r1, r2, slow):
            terminal.close()
