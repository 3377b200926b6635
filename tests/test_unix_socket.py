"""The short spread name `4803` is the unix socket /tmp/4803, as in Spread; when that file is stale
or another user's, the library uses TCP 127.0.0.1:4803 and says so once, and a daemon that cannot
take the socket says so in its banner (issue 12, first contact)."""
from __future__ import annotations

import io
import os
import random
import socket

import pytest

import spread_mini as sp
from conftest import Procs, remove_if_stale, wait_for
from spread_helpers import start_daemon


@pytest.fixture
def unix_path(procs):
    """A /tmp/<port> for a daemon on a free port; removed at the end whatever happened."""
    _, port = start_daemon(procs)   # TCP only (--no-unix): the socket file is the test's to make
    path = "/tmp/%d" % port
    yield port, path
    procs.stop_all()
    if os.path.exists(path):
        os.unlink(path)


def stale_socket(path: str) -> None:
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(path)  # bound, never listening: what a SIGKILLed daemon leaves behind
    stale.close()


def connect_and_capture(spread_name: str, capsys):
    sp._FALLBACKS_SAID.clear()
    with sp.connect(spread_name, "fb%d" % random.randrange(1000)) as mbox:
        group = mbox.private_group
    return group, capsys.readouterr().err


def test_a_stale_unix_socket_falls_back_to_tcp_and_says_so_once(unix_path, capsys):
    port, path = unix_path
    stale_socket(path)
    group, err = connect_and_capture(str(port), capsys)
    assert group.endswith("#localhost")
    assert err.count("\n") == 1 and "using TCP 127.0.0.1:%d instead" % port in err and "refused" in err, err
    with sp.connect(str(port), "again"):
        pass
    assert capsys.readouterr().err == ""      # once: a script that connects again is not told again


def test_another_users_unix_socket_is_not_used(unix_path, capsys, monkeypatch):
    port, path = unix_path
    other = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    other.bind(path)
    other.listen(1)          # a live daemon of somebody else: we must not talk to it
    monkeypatch.setattr(sp.os, "getuid", lambda: os.stat(path).st_uid + 1)
    try:
        group, err = connect_and_capture(str(port), capsys)
    finally:
        other.close()
    assert group.endswith("#localhost")
    assert "belongs to another user; using TCP 127.0.0.1:%d" % port in err, err


def test_no_daemon_at_all_is_still_could_not_connect(unix_path, procs, capsys):
    port, path = unix_path
    procs.stop_all()
    stale_socket(path)
    with pytest.raises(sp.CouldNotConnect) as err:
        sp.connect(str(port), "none")
    assert "using TCP" in str(err.value)


def test_a_daemon_says_in_its_banner_that_another_has_the_unix_socket(tmp_path):
    port = random.randrange(20000, 30000)
    path = "/tmp/%d" % port
    other = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    other.bind(path)
    other.listen(1)
    procs = Procs(tmp_path)
    try:
        daemon = procs.start("spread_mini.py", "daemon", "--port", str(port), "--status-every", "0")
        wait_for(lambda: "listening" in Procs.output(daemon), 15)
        banner = [line for line in Procs.output(daemon).splitlines() if "listening" in line][0]
        assert ("listening on 127.0.0.1:%d (not on the unix socket %s: it is in use by another daemon; "
                "clients given just \"%d\" use TCP)" % (port, path, port)) in banner
        assert "pid %d" % daemon.pid in banner
    finally:
        procs.stop_all()
        other.close()
        assert os.path.exists(path)   # the daemon left the other's socket alone
        os.unlink(path)


def test_a_daemon_that_may_not_remove_a_stale_socket_says_why(monkeypatch):
    port = random.randrange(20000, 30000)
    path = "/tmp/%d" % port
    stale_socket(path)
    monkeypatch.setattr(sp.os, "unlink", lambda p: (_ for _ in ()).throw(PermissionError(1, "Operation not permitted")))
    server = sp.DaemonServer(sp.Daemon("t"), "127.0.0.1", port, path, 0, out=io.StringIO())
    try:
        server._open_unix()
        assert server.unix_path is None and server.listeners == []
        assert server.where_listening("127.0.0.1:%d" % port) == (
            "127.0.0.1:%d (not on the unix socket %s: it is stale, and we may not remove it "
            "(Operation not permitted); clients given just \"%d\" use TCP)" % (port, path, port))
    finally:
        monkeypatch.undo()
        server.close()
        remove_if_stale(path)
    assert not os.path.exists(path)
