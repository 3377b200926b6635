"""labctl.py as real processes on loopback against spread_mini's daemon: every function with facts
the test controls, a silent agent named missing, 50 agents, quit without and with the key, a
replayed quit packet, a daemon restart, the menu."""
from __future__ import annotations

import shutil
import signal
import subprocess
import time

import pytest

import labctl as lc
import spread_mini as sp
from conftest import unique_name, wait_for
from labctl_helpers import ask, start_agent, wait_roll_call
from spread_helpers import start_daemon

pytestmark = pytest.mark.slow


@pytest.fixture
def daemon(procs):
    _proc, port = start_daemon(procs)
    return f"{port}@127.0.0.1"


def logged(procs, proc, text: str) -> bool:
    return text in procs.output(proc)


def test_every_function_answers_with_the_facts_the_test_controls(procs, daemon, tmp_path):
    root1, root2, outside = tmp_path / "home1", tmp_path / "home2", tmp_path / "outside"
    for folder in (root1 / "ana", root2, outside):
        folder.mkdir(parents=True)
    (root1 / "ana" / "a.lbq").write_bytes(b"x" * 3000)
    (root1 / "b.LBQ").write_bytes(b"x" * 100)
    (root2 / "c.lbq").write_bytes(b"x" * 5000)
    (outside / "big.lbq").write_bytes(b"x" * 100_000)
    (root2 / "away").symlink_to(outside, target_is_directory=True)      # never followed
    program = unique_name("lbx")                                          # a process under a known name
    binary = tmp_path / program
    shutil.copy(shutil.which("sleep"), binary)
    sleeper = subprocess.Popen([str(binary), "120"])
    try:
        start_agent(procs, daemon, "lab1", "--files-root", str(root1))
        start_agent(procs, daemon, "lab2", "--files-root", str(root2))
        wait_roll_call(daemon, ["lab1", "lab2"])

        files = ask(daemon, "files", "lbq", "--timeout", "30")
        assert files.code == 0, files.stderr
        assert files.rows["lab1"]["files"] == 2 and files.rows["lab1"]["kbytes"] == 4     # 3100 bytes
        assert files.rows["lab2"]["files"] == 1 and files.rows["lab2"]["kbytes"] == 5
        assert not files.rows["lab1"]["truncated"]
        assert files.summary == {**files.summary, "asked": 2, "answered": 2, "missing": [],
                                 "ended": "every member answered"}

        running = ask(daemon, "running", program)
        assert running.code == 0 and all(r["running"] and r["processes"] == 1 for r in running.rows.values())
        sleeper.kill()
        sleeper.wait()
        gone = ask(daemon, "running", program)
        assert gone.code == 0 and not any(r["running"] for r in gone.rows.values())

        import psutil       # function 2 and 5: the logins of this machine, as psutil reports them
        logins = sorted({u.name for u in psutil.users()})
        free = ask(daemon, "free")
        assert free.code == 0 and all(r["free"] is (not logins) and r["users"] == len(logins)
                                      for r in free.rows.values())
        nobody = ask(daemon, "user", unique_name("nobody"))
        assert nobody.code == 0 and not any(r["logged_in"] for r in nobody.rows.values())
        if logins:
            somebody = ask(daemon, "user", logins[0])
            assert all(r["logged_in"] for r in somebody.rows.values())
    finally:
        sleeper.kill()
        sleeper.wait()


def test_table_csv_and_sort_from_the_command_line(procs, daemon, tmp_path):
    for i, size in ((1, 2048), (2, 10240), (10, 1024)):
        (tmp_path / f"r{i}").mkdir()
        (tmp_path / f"r{i}" / "f.dat").write_bytes(b"x" * size)
        start_agent(procs, daemon, f"lab{i}", "--files-root", str(tmp_path / f"r{i}"))
    wait_roll_call(daemon, ["lab1", "lab10", "lab2"])
    table = ask(daemon, "files", "dat", "--sort", "kbytes", "--reverse", json_out=False)
    lines = table.stdout.splitlines()
    assert table.code == 0 and lines[0] == "files: 3 of 3 answered"
    assert [line.split()[:3] for line in lines[2:5]] == [["lab2", "1", "10"], ["lab1", "1", "2"], ["lab10", "1", "1"]]
    assert lines[-1] == "files: asked 3, answered 3 [every member answered]"
    csv_out = ask(daemon, "files", "dat", "--csv", json_out=False)
    assert csv_out.stdout.splitlines()[0] == "machine,files,kbytes,truncated,ms"
    assert [line.split(",")[0] for line in csv_out.stdout.splitlines()[1:]] == ["lab1", "lab2", "lab10"]
    assert "asked 3, answered 3" in csv_out.stderr


def test_a_silent_agent_is_named_missing_and_a_killed_one_leaves_the_roll_call(procs, daemon):
    start_agent(procs, daemon, "ok1")
    frozen = start_agent(procs, daemon, "frozen")
    killed = start_agent(procs, daemon, "killed")
    wait_roll_call(daemon, ["frozen", "killed", "ok1"])
    frozen.send_signal(signal.SIGSTOP)            # a hung machine: still a member, never answers
    try:
        killed.kill()                              # a machine switched off: the daemon sees it go
        killed.wait()
        wait_roll_call(daemon, ["frozen", "ok1"])
        started = time.monotonic()
        result = ask(daemon, "free", "--timeout", "3")
        assert result.code == 3 and list(result.rows) == ["ok1"]
        assert result.summary["missing"] == ["frozen"] and result.summary["why"] == {"frozen": "no answer"}
        assert result.summary["ended"] == "time-out" and time.monotonic() - started >= 3
        text = ask(daemon, "free", "--timeout", "2", json_out=False)
        assert "not answered: frozen (no answer)" in text.stdout and "killed" not in text.stdout
    finally:
        frozen.send_signal(signal.SIGCONT)


def test_fifty_agents_on_one_daemon_all_answer_before_the_time_out(procs, daemon):
    names = [f"pc{i:02d}" for i in range(1, 51)]
    for name in names:
        start_agent(procs, daemon, name)
    wait_roll_call(daemon, names, timeout_s=120)
    result = ask(daemon, "running", "python3", "--timeout", "60")
    assert result.code == 0, result.stderr
    assert sorted(result.rows) == names and result.summary["answered"] == 50
    assert result.summary["ended"] == "every member answered"      # it did not wait for the time-out
    assert all(r["running"] for r in result.rows.values())          # they are python3 themselves


def test_quit_without_the_key_leaves_agents_up_and_with_it_stops_them(procs, daemon, tmp_path):
    key = str(tmp_path / "lab.key")
    assert lc.run_keygen(key, say=lambda _: None) == 0
    plain = start_agent(procs, daemon, "nokey")
    keyed = [start_agent(procs, daemon, f"k{i}", "--key", key) for i in (1, 2)]
    wait_roll_call(daemon, ["k1", "k2", "nokey"])
    assert "message and quit will be REFUSED" in procs.output(plain)

    unsigned = ask(daemon, "quit", "--timeout", "2")
    assert unsigned.code == 3 and unsigned.summary["answered"] == 0
    assert unsigned.summary["why"] == {"k1": "still in the group", "k2": "still in the group", "nokey": "still in the group"}
    message = ask(daemon, "message", "from a student")
    assert message.code == 0
    wrong_key = str(tmp_path / "other.key")
    lc.run_keygen(wrong_key, say=lambda _: None)
    assert ask(daemon, "quit", "--timeout", "2", "--key", wrong_key).code == 3
    wait_for(lambda: all(logged(procs, p, "bad signature") for p in keyed))
    assert all(p.poll() is None for p in [plain] + keyed)
    assert all(logged(procs, p, "REFUSED quit") and logged(procs, p, "REFUSED message") for p in [plain] + keyed)
    assert not any(logged(procs, p, "POP-UP") for p in [plain] + keyed)

    popup = ask(daemon, "message", "Lab closes at 22h", "--key", key)
    assert popup.code == 0
    wait_for(lambda: all(logged(procs, p, "Lab closes at 22h") for p in keyed))
    assert not logged(procs, plain, "Lab closes at 22h")
    stop = ask(daemon, "quit", "--key", key, "--timeout", "4")
    assert sorted(stop.rows) == ["k1", "k2"] and stop.summary["why"] == {"nokey": "still in the group"}
    assert stop.code == 3                         # the agent without a key did not stop
    for proc in keyed:
        assert proc.wait(timeout=10) == 0
    assert plain.poll() is None


def test_a_replayed_quit_packet_stops_nothing(procs, daemon, tmp_path):
    """Anybody can join GG and record a signed quit; playing it again must not stop agents that
    were restarted since (their nonce book is new) nor count as a second quit."""
    key = str(tmp_path / "lab.key")
    lc.run_keygen(key, say=lambda _: None)
    first = start_agent(procs, daemon, "lab1", "--key", key)
    wait_roll_call(daemon, ["lab1"])
    with sp.connect(daemon, "eve", group_membership=False) as eve:
        eve.join(lc.DEFAULT_GROUP)                                      # an eavesdropper in GG
        time.sleep(0.3)
        assert ask(daemon, "quit", "--key", key).code == 0
        assert first.wait(timeout=10) == 0
        recorded = None
        while recorded is None:
            msg = eve.receive(timeout=5)
            assert msg is not None, "the eavesdropper saw no quit"
            if isinstance(msg, sp.RegularMessage) and msg.data.startswith(b"Z"):
                recorded = msg
        assert b"\0v1 t=" in recorded.data
        again = start_agent(procs, daemon, "lab1", "--key", key)      # restarted machines
        other = start_agent(procs, daemon, "lab2", "--key", key)
        wait_roll_call(daemon, ["lab1", "lab2"])
        for _ in range(3):
            eve.multicast(sp.AGREED_MESS, lc.DEFAULT_GROUP, recorded.data, mess_type=recorded.mess_type)
        wait_for(lambda: all(procs.output(p).count("REFUSED quit") == 3 for p in (again, other)))
        assert all("before start" in procs.output(p) for p in (again, other))
        # a signed question recorded and played back to an agent that obeyed it: a replay
        eve_seen = []
        assert ask(daemon, "free", "--key", key).code == 0
        while True:
            msg = eve.receive(timeout=5)
            assert msg is not None
            if isinstance(msg, sp.RegularMessage) and msg.data.startswith(b"2"):
                eve_seen.append(msg)
                break
        eve.multicast(sp.AGREED_MESS, lc.DEFAULT_GROUP, eve_seen[0].data, mess_type=eve_seen[0].mess_type)
        wait_for(lambda: all("REFUSED free" in procs.output(p) and ": replay" in procs.output(p) for p in (again, other)))
    assert again.poll() is None and other.poll() is None
    assert ask(daemon, "free", "--key", key).summary["answered"] == 2


def test_an_agent_comes_back_after_its_daemon_restarts(procs):
    proc, port = start_daemon(procs)
    daemon = f"{port}@127.0.0.1"
    agent = start_agent(procs, daemon, "lab1")
    wait_roll_call(daemon, ["lab1"])
    proc.kill()
    proc.wait()
    wait_for(lambda: "trying again" in procs.output(agent))
    start_daemon(procs, port=port)
    wait_roll_call(daemon, ["lab1"])
    assert ask(daemon, "free").summary["answered"] == 1 and agent.poll() is None
    [back] = [line for line in procs.output(agent).splitlines() if "(back " in line]
    assert "lab1: connected as #lab1#" in back and "after the session was lost" in back, back


def test_two_agents_with_one_name_on_one_daemon_the_second_is_told(procs, daemon):
    start_agent(procs, daemon, "same")
    wait_roll_call(daemon, ["same"])
    second = start_agent(procs, daemon, "same")
    assert second.wait(timeout=30) == 2
    assert "already has a session named 'same'" in procs.output(second)


def test_the_menu_over_a_real_daemon(procs, daemon):
    start_agent(procs, daemon, "lab1")
    wait_roll_call(daemon, ["lab1"])
    result = ask(daemon, "--timeout", "10", json_out=False, stdin="2\n5\nnobody_here\nQ\n")
    assert result.code == 0, result.stderr
    assert "2  which machines are free" in result.stdout
    assert "free: asked 1, answered 1" in result.stdout and "user: asked 1, answered 1" in result.stdout
