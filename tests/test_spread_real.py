"""spread_mini as real processes on loopback: the daemon, the library, the user tool (issue 3)."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest

import spread_mini as sp
from conftest import free_tcp_port, unique_name, wait_for
from spread_helpers import be_message, closed_by_peer, raw_handshake, recv_exact, start_daemon


def addr(port: int) -> str:
    return "%d@127.0.0.1" % port


def recv_memb(mbox, timeout_s: float = 10.0):
    msg = mbox.receive(timeout=timeout_s)
    assert msg is not None and msg.is_membership, msg
    return msg


def test_connect_join_multicast_leave_disconnect(procs):
    """The transcript's scenario A with an observer (PROTOCOL.md sections 1-4)."""
    _, port = start_daemon(procs)
    group = unique_name("g")
    with sp.connect(addr(port), "obs") as obs:
        assert obs.private_group == "#obs#localhost"
        obs.join(group)
        first = recv_memb(obs)
        assert first.is_regular and first.caused_by == "JOIN" and first.members == ["#obs#localhost"]
        assert first.group_id.index == 1 and first.group_id.proc_id == 0x7F000001
        with sp.connect(addr(port), "demo") as demo:
            demo.join(group)
            for mbox in (demo, obs):
                m = recv_memb(mbox)
                assert m.members == ["#demo#localhost", "#obs#localhost"]
                assert m.vs_sets == [["#demo#localhost"]] and m.changed_members == ["#demo#localhost"]
                assert m.group_id.index == 2
                assert m.my_index == m.members.index(mbox.private_group)
            demo.multicast(sp.AGREED_MESS, group, b"hello", mess_type=1)
            for mbox in (demo, obs):
                msg = mbox.receive(timeout=10)
                assert (msg.service_type, msg.sender, msg.groups, msg.mess_type, msg.data, msg.endian_mismatch) == \
                    (sp.AGREED_MESS, "#demo#localhost", [group], 1, b"hello", False)
            demo.leave(group)
            assert recv_memb(demo).is_self_leave
            left = recv_memb(obs)
            assert left.caused_by == "LEAVE" and left.members == ["#obs#localhost"] and left.changed_members == ["#demo#localhost"]
            assert left.group_id.index == 3
            demo.join(group)
            recv_memb(demo)
            recv_memb(obs)
        gone = recv_memb(obs)
        assert gone.caused_by == "DISCONNECT" and gone.changed_members == ["#demo#localhost"]


def test_reject_not_unique_and_illegal_name(procs):
    _, port = start_daemon(procs)
    with sp.connect(addr(port), "dup"):
        with pytest.raises(sp.RejectNotUnique):
            sp.connect(addr(port), "dup")
    # the name is free again once the first session is gone
    wait_for(lambda: _connects(port, "dup"), 10)
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(b"\x04\x04\x00\x01\x03a#b")  # '#' is not allowed in a private name
    assert recv_exact(sock, 1) == b"\xfb"  # -5 REJECT_ILLEGAL_NAME
    sock.close()
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(b"\x03\x00\x01\x03abc")  # library 3.00 < 3.01
    assert recv_exact(sock, 1) == b"\xf9"  # -7 REJECT_VERSION
    sock.close()


def _connects(port: int, name: str) -> bool:
    try:
        sp.connect(addr(port), name).disconnect()
        return True
    except sp.RejectNotUnique:
        return False


def test_private_group_multigroup_self_discard(procs):
    _, port = start_daemon(procs)
    g1, g2 = unique_name("a"), unique_name("b")
    with sp.connect(addr(port), "a", group_membership=False) as a, sp.connect(addr(port), "b") as b:
        b.join(g1)
        b.join(g2)
        recv_memb(b)
        recv_memb(b)
        a.join(g1)
        assert recv_memb(b).caused_by == "JOIN"
        # one copy per receiving session, even when it is in both groups
        a.multicast(sp.SAFE_MESS | sp.SELF_DISCARD, [g1, g2], [b"scat", b"tered"], mess_type=7)
        msg = b.receive(timeout=10)
        assert msg.data == b"scattered" and msg.groups == [g1, g2] and msg.mess_type == 7
        assert msg.service_type == sp.SAFE_MESS | sp.SELF_DISCARD
        # a does not get its own message back, nor membership messages (group_membership=False)
        b.multicast(sp.FIFO_MESS, a.private_group, b"just for you")
        got = a.receive(timeout=10)
        assert got.data == b"just for you" and got.groups == [a.private_group]
        assert b.receive(timeout=0.3) is None and a.receive(timeout=0.3) is None


def test_unix_socket_spread_name(procs):
    proc, port = start_daemon(procs, unix=True)
    path = "/tmp/%d" % port
    wait_for(lambda: os.path.exists(path), 10)
    with sp.connect(str(port), "u") as mbox:
        assert sp.parse_spread_name(str(port)) == ("unix", path)
        mbox.join("ux")
        assert recv_memb(mbox).members == ["#u#localhost"]
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(15) == 0
    assert not os.path.exists(path)  # a clean stop removes the socket file


def test_stale_unix_socket_is_replaced(procs):
    port = free_tcp_port()
    path = "/tmp/%d" % port
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(path)  # bound, never listening: what a SIGKILLed daemon leaves behind
    stale.close()
    proc, _ = start_daemon(procs, port=port, unix=True)
    with sp.connect(str(port), "st") as mbox:
        assert mbox.private_group == "#st#localhost"
    proc.send_signal(signal.SIGTERM)
    proc.wait(15)


def test_fast_receiver_survives_a_burst_larger_than_the_limit(procs):
    """The limit counts what the socket did not take (lead's L1 / FLOOD-NEEDS item 1)."""
    _, port = start_daemon(procs, "--max-session-messages", "100")
    group = unique_name("f")
    with sp.connect(addr(port), "rx") as rx:
        rx.join(group)
        recv_memb(rx)
        tx = raw_handshake(port, "tx")
        tx.sendall(b"".join(sp.encode_message(sp.RELIABLE_MESS, "#tx#localhost", [group], sp.make_hint(0), b"b%d" % i)
                            for i in range(2000)))  # one write: the daemon reads it in a few chunks
        for i in range(2000):
            msg = rx.receive(timeout=20)
            assert msg is not None and not msg.is_membership and msg.data == b"b%d" % i, (i, msg)
        tx.close()


def test_client_that_never_reads_is_disconnected(procs):
    _, port = start_daemon(procs, "--max-session-messages", "200")
    group = unique_name("s")
    lazy = raw_handshake(port, "lazy", rcvbuf=4096)
    lazy.sendall(sp.encode_message(sp.JOIN_MESS, "#lazy#localhost", [group], sp.MY_ENDIAN_MARKER, b""))
    with sp.connect(addr(port), "rx") as rx, sp.connect(addr(port), "tx") as tx:
        rx.join(group)
        recv_memb(rx)
        payload = b"x" * 1000
        sent = got = 0
        seen_disconnect = False
        # kernel buffers absorb a few MB before the daemon's queue for `lazy` grows: keep sending
        while not seen_disconnect and sent < 60000:
            for _ in range(100):  # fewer than the limit: rx, which reads, is never over it
                tx.multicast(sp.RELIABLE_MESS, group, payload)
            sent += 100
            while got < sent:
                msg = rx.receive(timeout=20)
                assert msg is not None, "rx stopped receiving after %d of %d messages" % (got, sent)
                if msg.is_membership:
                    assert msg.caused_by == "DISCONNECT" and msg.changed_members == ["#lazy#localhost"], msg
                    seen_disconnect = True
                else:
                    got += 1
        assert seen_disconnect, "lazy was never disconnected after %d messages" % sent
        assert got == sent
    assert closed_by_peer(lazy)


def test_garbage_on_client_port_daemon_goes_on(procs):
    proc, port = start_daemon(procs)
    for junk in (b"GET / HTTP/1.0\r\n\r\n", bytes(range(256)) * 40, b"\x04\x04\x00\x01\x03abc" + b"\xff" * 90):
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        try:
            sock.sendall(junk)
        except OSError:
            pass
        assert closed_by_peer(sock)
        sock.close()
    # garbage after a good handshake closes only that session
    bad = raw_handshake(port, "bad")
    bad.sendall(b"\x00" * 200)
    assert closed_by_peer(bad)
    with sp.connect(addr(port), "ok") as ok:
        ok.join("after")
        assert recv_memb(ok).members == ["#ok#localhost"]
    assert proc.poll() is None


def test_big_endian_peer_and_endian_mismatch(procs):
    _, port = start_daemon(procs)
    group = unique_name("e")
    with sp.connect(addr(port), "le") as le:
        le.join(group)
        recv_memb(le)
        be = raw_handshake(port, "be")
        be.sendall(be_message(sp.AGREED_MESS, "#be#localhost", [group], 300, b"from a big-endian host"))
        msg = le.receive(timeout=10)
        assert msg.endian_mismatch is True and msg.mess_type == 300 and msg.data == b"from a big-endian host"
        assert msg.service_type == sp.AGREED_MESS and msg.sender == "#be#localhost"
        be.close()


def test_user_tool_scripted(procs):
    _, port = start_daemon(procs)
    group = unique_name("u")
    script = "j %s\nt agreed\nm 5\ns %s hello from the script\nw 1\nl %s\nw 0.5\nq\n" % (group, group, group)
    out = subprocess.run([sys.executable, "spread_mini.py", "user", "-s", addr(port), "-u", "scr"], input=script,
                         capture_output=True, text=True, timeout=60, cwd=sp.__file__.rsplit("/", 1)[0])
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "REGULAR membership for group %s with 1 member(s)" % group in text
    assert "due to the JOIN of #scr#localhost" in text
    assert "received AGREED message from #scr#localhost, mess_type 5" in text
    assert "hello from the script" in text
    assert "SELF-LEAVE: you left group %s" % group in text


def test_reject_quota(procs):
    _, port = start_daemon(procs, "--max-sessions", "2")
    with sp.connect(addr(port), "q1"), sp.connect(addr(port), "q2"):
        with pytest.raises(sp.RejectQuota):
            sp.connect(addr(port), "q3")
    wait_for(lambda: _connects(port, "q3"), 10)


def test_all_six_service_types_deliver_in_order(procs):
    """Thesis 7.3.3: in one daemon every service type is delivered, FIFO per sender, one order for all."""
    _, port = start_daemon(procs)
    group = unique_name("six")
    with sp.connect(addr(port), "r1") as r1, sp.connect(addr(port), "r2") as r2, \
            sp.connect(addr(port), "t1") as t1, sp.connect(addr(port), "t2") as t2:
        for r in (r1, r2):
            r.join(group)
        recv_memb(r1)
        recv_memb(r1)
        recv_memb(r2)
        sent = []
        for i in range(60):
            service = sp.SERVICE_BITS[i % 6]
            sender = (t1, t2)[i % 2]
            sender.multicast(service, group, b"%s-%d" % (sender.private_group.encode(), i), mess_type=i)
            sent.append((service, i))
        seqs = []
        for r in (r1, r2):
            got = [r.receive(timeout=10) for _ in range(60)]
            assert all(m is not None and not m.is_membership for m in got)
            assert sorted((m.service_type, m.mess_type) for m in got) == sorted(sent)
            for t in (t1, t2):  # FIFO per sender
                mine = [m.mess_type for m in got if m.sender == t.private_group]
                assert mine == sorted(mine)
            seqs.append([m.mess_type for m in got])
        assert seqs[0] == seqs[1]  # the same total order at both receivers


def test_largest_message_and_too_long(procs):
    _, port = start_daemon(procs)
    group = unique_name("big")
    with sp.connect(addr(port), "big") as mbox:
        mbox.join(group)
        recv_memb(mbox)
        data = bytes(range(256)) * ((sp.MAX_SEND_LEN - 32) // 256) + b"z" * ((sp.MAX_SEND_LEN - 32) % 256)
        assert len(data) == 143119  # the largest the library sends with one group (see MAX_SEND_LEN)
        assert mbox.multicast(sp.RELIABLE_MESS, group, data) == len(data)
        assert mbox.receive(timeout=20).data == data
        with pytest.raises(sp.MessageTooLong):
            mbox.multicast(sp.RELIABLE_MESS, group, data + b"!")
        with pytest.raises(sp.IllegalService):
            mbox.multicast(sp.AGREED_MESS | sp.SAFE_MESS, group, b"x")
        with pytest.raises(sp.IllegalGroup):
            mbox.join("#private")
        with pytest.raises(sp.IllegalGroup):
            mbox.multicast(sp.AGREED_MESS, ["g"] * 101, b"x")
    raw = raw_handshake(port, "raw")  # a client that ignores the limit is closed; the daemon goes on
    raw.sendall(sp.HEADER.pack(sp.RELIABLE_MESS | sp.MY_ENDIAN_MARKER, sp.pad_name("#raw#localhost"), 1,
                               sp.MY_ENDIAN_MARKER, sp.MAX_MESSAGE_LEN))
    assert closed_by_peer(raw)
    with sp.connect(addr(port), "after") as mbox:
        assert mbox.private_group == "#after#localhost"


def test_receive_too_short_keeps_the_message_and_poll_fileno(procs):
    _, port = start_daemon(procs)
    group = unique_name("ts")
    with sp.connect(addr(port), "ts", group_membership=False) as mbox:
        mbox.join(group)
        assert mbox.poll() == 0
        mbox.multicast(sp.SAFE_MESS, group, b"0123456789", mess_type=4)
        wait_for(lambda: mbox.poll() > 0, 10)
        import select
        assert select.select([mbox.fileno()], [], [], 0)[0]
        with pytest.raises(sp.BufferTooShort) as exc:
            mbox.receive(timeout=10, max_mess_len=5)
        assert (exc.value.needed_len, exc.value.service_type, exc.value.mess_type) == (10, sp.SAFE_MESS, 4)
        with pytest.raises(sp.GroupsTooShort) as exc:
            mbox.receive(timeout=10, max_groups=0)
        assert exc.value.needed_groups == 1
        cut = mbox.receive(timeout=10, max_mess_len=5, drop_recv=True)
        assert cut.truncated and cut.data == b"01234"
        mbox.multicast(sp.SAFE_MESS, group, b"again")
        assert mbox.receive(timeout=10, max_mess_len=100, max_groups=1).data == b"again"
        assert mbox.receive(timeout=0.2) is None


def test_one_thread_receives_while_another_multicasts(procs):
    import threading
    _, port = start_daemon(procs)
    group = unique_name("th")
    got = []
    with sp.connect(addr(port), "th", group_membership=False) as mbox:
        mbox.join(group)

        def reader():
            while len(got) < 2000:
                msg = mbox.receive(timeout=20)
                if msg is None:
                    return
                got.append(msg.data)

        thread = threading.Thread(target=reader)
        thread.start()
        for i in range(2000):
            mbox.multicast(sp.FIFO_MESS, group, b"%d" % i)
        thread.join(60)
    assert got == [b"%d" % i for i in range(2000)]


def test_status_table_printed_every_period(procs):
    proc, port = start_daemon(procs, "--status-every", "0.5", name="stat")  # the last --status-every wins
    group = unique_name("st")
    with sp.connect(addr(port), "watch") as mbox:
        mbox.join(group)
        mbox.multicast(sp.CAUSAL_MESS, group, b"x")
        wait_for(lambda: "CAUSAL" in procs.output(proc) and group in procs.output(proc), 15)
    text = procs.output(proc)
    assert "#watch#stat" in text and "in 1, out 1" in text
    wait_for(lambda: "connection closed by the client" in procs.output(proc) or "client disconnect (KILL)" in procs.output(proc), 15)


def test_daemon_with_config_file(procs, tmp_path):
    port = free_tcp_port()
    conf = tmp_path / "spread.conf"
    conf.write_text("# two daemons on loopback addresses\nSpread_Segment 127.0.0.255:%d {\n"
                    "  d1 127.0.0.1 { 127.0.0.1 }\n  d2 127.0.0.2\n}\nEventLogFile = /tmp/x.log\n"
                    "DebugFlags = { PRINT EXIT }\n" % port)
    proc = procs.start("spread_mini.py", "daemon", "-c", str(conf), "--name", "d1", "--no-unix", "--status-every", "0")
    wait_for(lambda: __import__("spread_helpers").port_open(port), 15)
    with sp.connect(addr(port), "cf") as mbox:
        assert mbox.private_group == "#cf#d1"
    out = procs.output(proc)
    ignored = [line for line in out.splitlines() if "accepts and ignores" in line]  # said once, in one line
    assert len(ignored) == 1 and "EventLogFile" in ignored[0] and "DebugFlags" in ignored[0], out


@pytest.mark.parametrize("argv, text", [
    (["daemon", "--port", "0"], "at least 1"),
    (["daemon", "--port", "abc"], "not a whole number"),
    (["daemon", "--name", "has#hash"], "daemon name"),
    (["daemon", "--max-session-messages", "-3"], "at least 1"),
    (["daemon", "-c", "/nonexistent/spread.conf"], "cannot read"),
    (["daemon", "-c", "/etc/hostname"], "line 1"),
    (["user", "--linger", "x"], "seconds"),
    (["daemon", "--listen", "0.0.0.0"], "every interface"),
    (["user", "-s", "nonsense"], "expected PORT"),
    (["user", "-u", "much_too_long_name"], "private name"),
    (["daemon", "--listen", "localhost"], "IPv4 address"),
])
def test_bad_arguments_exit_2_without_traceback(argv, text):
    out = subprocess.run([sys.executable, "spread_mini.py", *argv], capture_output=True, text=True, timeout=30,
                         cwd=os.path.dirname(sp.__file__))
    assert out.returncode == 2 and text in out.stderr and "Traceback" not in out.stderr, out.stderr


def test_user_tool_cannot_connect_is_a_clear_error():
    port = free_tcp_port()
    out = subprocess.run([sys.executable, "spread_mini.py", "user", "-s", addr(port)], capture_output=True, text=True,
                         timeout=30, cwd=os.path.dirname(sp.__file__), input="")
    assert out.returncode == 1 and "COULD_NOT_CONNECT" in out.stderr and "Traceback" not in out.stderr


def test_port_in_use_is_a_clear_error(procs):
    _, port = start_daemon(procs)
    out = subprocess.run([sys.executable, "spread_mini.py", "daemon", "--port", str(port), "--no-unix"],
                         capture_output=True, text=True, timeout=30, cwd=os.path.dirname(sp.__file__))
    assert out.returncode == 1 and "cannot listen" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.netns
def test_lab_lan_daemon_from_config_and_clients_on_two_hosts(labnet, tmp_path):
    """A daemon on lab host 1 (address and port from a spread.conf), users on hosts 1 and 2."""
    lab = labnet(2)
    conf = tmp_path / "spread.conf"
    conf.write_text("Spread_Segment 10.99.0.255:4803 {\n  h1 %s\n  h2 %s\n}\n" % (lab.ip(1), lab.ip(2)))
    root = os.path.dirname(sp.__file__)
    log = open(tmp_path / "daemon.out", "w+")
    daemon = lab.popen(1, [sys.executable, os.path.join(root, "spread_mini.py"), "daemon", "-c", str(conf),
                           "--name", "h1", "--no-unix", "--status-every", "0"], stdout=log, stderr=subprocess.STDOUT)
    try:
        probe = [sys.executable, "-c", "import socket,sys; socket.create_connection((sys.argv[1], 4803), 1)", lab.ip(1)]
        wait_for(lambda: lab.run(2, probe, capture_output=True).returncode == 0, 20)
        listener = lab.popen(1, [sys.executable, os.path.join(root, "spread_mini.py"), "user", "-s", "4803@" + lab.ip(1),
                                 "-u", "near", "--linger", "0"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        # the listener stays in the group until the talker is done (a fixed 4 s window was too
        # short when a loaded machine took seconds to start the talker's python)
        listener.stdin.write("j lab\n")
        listener.stdin.flush()
        wait_for(lambda: "#near#h1 joined lab" in open(log.name).read(), 30)
        talker = lab.run(2, [sys.executable, os.path.join(root, "spread_mini.py"), "user", "-s", "4803@" + lab.ip(1),
                             "-u", "far"], input="j lab\nt safe\ns lab across the lab\nw 1\n", capture_output=True,
                         text=True, timeout=60)
        assert talker.returncode == 0, talker.stderr
        assert "REGULAR membership for group lab with 2 member(s)" in talker.stdout, talker.stdout
        out, _ = listener.communicate("w 2\nq\n", timeout=60)
        assert "received SAFE message from #far#h1" in out and "across the lab" in out
        assert "due to the JOIN of #far#h1" in out
    finally:
        daemon.terminate()
        daemon.wait(10)


def test_runs_without_rich(procs, tmp_path):
    """Plain-text fallback: the daemon's status table and the user tool work where rich is missing."""
    port = free_tcp_port()
    blocker = tmp_path / "norich"
    blocker.mkdir()
    (blocker / "rich.py").write_text("raise ImportError('rich is not installed here')\n")
    env = dict(os.environ, PYTHONPATH=str(blocker))
    root = os.path.dirname(sp.__file__)
    daemon = subprocess.Popen([sys.executable, os.path.join(root, "spread_mini.py"), "daemon", "--port", str(port),
                               "--name", "plain", "--no-unix", "--status-every", "0.3"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: __import__("spread_helpers").port_open(port), 15)
        user = subprocess.run([sys.executable, os.path.join(root, "spread_mini.py"), "user", "-s", addr(port), "-u", "p"],
                              input="j plain\ns plain hi\nw 0.8\n", env=env, capture_output=True, text=True, timeout=60)
        assert "received SAFE message from #p#plain" in user.stdout, user.stdout + user.stderr
    finally:
        daemon.terminate()
        out = daemon.communicate(timeout=15)[0]
    assert "spread_mini daemon plain on 127.0.0.1:%d" % port in out and "session" in out
    assert "Traceback" not in out and "┃" not in out


def test_out_of_file_descriptors_pauses_accepting_and_recovers(procs, tmp_path):
    """With a tiny descriptor limit, connections beyond it wait; the daemon neither dies nor spins."""
    port = free_tcp_port()
    script = tmp_path / "lowfd.py"
    script.write_text("import resource, runpy, sys\nresource.setrlimit(resource.RLIMIT_NOFILE, (24, 24))\n"
                      "sys.argv = ['spread_mini.py'] + sys.argv[1:]\nrunpy.run_path(%r, run_name='__main__')\n"
                      % os.path.join(os.path.dirname(sp.__file__), "spread_mini.py"))
    proc = procs.start(str(script), "daemon", "--port", str(port), "--name", "fd", "--no-unix", "--status-every", "0")
    wait_for(lambda: __import__("spread_helpers").port_open(port), 15)
    held = []
    for i in range(30):
        sock = socket.socket()
        sock.settimeout(5)
        sock.connect(("127.0.0.1", port))
        held.append(sock)
    wait_for(lambda: "accept failed" in procs.output(proc), 15)
    for sock in held:
        sock.close()
    wait_for(lambda: _connects(port, "again"), 20)
    assert proc.poll() is None


def test_benchmark_runs_and_prints_its_rows():
    """The benchmark itself (tiny counts; its figures are not judged here: speed is for benchmarks)."""
    root = os.path.dirname(sp.__file__)
    out = subprocess.run([sys.executable, "bench/spread_throughput.py", "--count", "300", "--sizes", "100",
                          "--services", "agreed,unreliable", "--receivers", "2"], capture_output=True, text=True,
                         timeout=120, cwd=root)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert any(line.startswith("spread_mini AGREED") and " 300 " in line for line in lines), out.stdout
    assert any(line.startswith("raw TCP relay (ceiling)") for line in lines)
    assert lines[-1].startswith("command: python3 bench/spread_throughput.py --receivers 2 --count 300")
    core = subprocess.run([sys.executable, "bench/spread_throughput.py", "--core-only", "--sizes", "100"],
                          capture_output=True, text=True, timeout=60, cwd=root)
    assert core.returncode == 0 and "daemon core alone" in core.stdout


# ---- the client port cannot be locked by idle connections ----------------------------------------

def open_idle(port: int, count: int, first_bytes: bytes = b"") -> list:
    """`count` connections that never finish the handshake (some send its first bytes)."""
    socks = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        if first_bytes:
            sock.sendall(first_bytes)
        socks.append(sock)
    return socks


def seconds_to_connect(port: int) -> float:
    start = time.monotonic()
    mbox = sp.connect("%d@127.0.0.1" % port, unique_name("rc")[:10], 0, True)
    took = time.monotonic() - start
    mbox.disconnect()
    return took


@pytest.mark.parametrize("extra", [(), ("--max-sessions", "120", "--max-handshakes-per-address", "1000")],
                         ids=["limit-per-address", "limit-of-sessions"])
def test_idle_connections_never_keep_a_real_client_out(procs, extra):
    # 300 idle connections (every one from 127.0.0.1, like the real client): with the defaults
    # the limit per address closes the oldest; with a high one, the session limit makes the
    # oldest unfinished handshake give way. Either way the client is in at once.
    proc, port = start_daemon(procs, *extra)
    socks = open_idle(port, 250) + open_idle(port, 50, b"\x04\x04")
    try:
        assert seconds_to_connect(port) < 2.0
        wait_for(lambda: "closed: " in procs.output(proc) and "unfinished handshake" in procs.output(proc), 10)
    finally:
        for sock in socks:
            sock.close()
    assert proc.poll() is None and "REJECT_QUOTA" not in procs.output(proc)


def test_an_idle_connection_is_closed_after_the_handshake_timeout(procs):
    proc, port = start_daemon(procs, "--handshake-timeout", "0.5")
    sock = open_idle(port, 1, b"\x04")[0]
    start = time.monotonic()
    assert closed_by_peer(sock, 10.0)
    assert time.monotonic() - start < 5.0
    assert "handshake not finished within 0.5 s" in procs.output(proc)
