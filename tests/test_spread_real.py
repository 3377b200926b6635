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
