"""Helpers for the spread_mini tests: start a daemon as a real process, raw protocol clients."""
from __future__ import annotations

import socket
import struct
import time

import spread_mini as sp
from conftest import wait_for
from ring_helpers import free_ring_port


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def start_daemon(procs, *extra: str, name: str = "localhost", port: int = 0, unix: bool = False):
    """A spread_mini daemon on a free loopback port; returns (process, port).  Without unix=True
    it does not make /tmp/PORT (the fixture kills with SIGKILL, which would leave the file)."""
    port = port or free_ring_port(["127.0.0.1"])  # below the ephemeral range: see there
    argv = ["spread_mini.py", "daemon", "--port", str(port), "--name", name, "--status-every", "0"]
    if not unix:
        argv.append("--no-unix")
    proc = procs.start(*argv, *extra)

    def listening():
        assert proc.poll() is None, "daemon exited early:\n" + procs.output(proc)
        return port_open(port)

    wait_for(listening, 15)
    return proc, port


def raw_handshake(port: int, name: str, membership: bool = True, rcvbuf: int = 0) -> socket.socket:
    """A bare-socket session speaking the protocol by hand (for bytes the library never sends)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(10)
    sock.connect(("127.0.0.1", port))
    sock.sendall(sp.encode_connect(name, membership))
    assert recv_exact(sock, 6) == b"\x05NULL "
    sock.sendall(sp.encode_auth_choice())
    reply = recv_exact(sock, 5)
    assert reply[0] == 1
    pg = recv_exact(sock, reply[4]).decode()
    assert pg.startswith("#%s#" % name)
    return sock


def recv_exact(sock: socket.socket, count: int) -> bytes:
    data = b""
    while len(data) < count:
        part = sock.recv(count - len(data))
        if not part:
            break
        data += part
    return data


def closed_by_peer(sock: socket.socket, timeout_s: float = 10.0) -> bool:
    """True when the peer closes the connection within timeout_s (data before that is skipped)."""
    sock.settimeout(timeout_s)
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            if not sock.recv(65536):
                return True
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False
    return False


def be_message(type_bits: int, sender: str, groups, mess_type: int, data: bytes) -> bytes:
    """A message as a big-endian client writes it (no endian marker, ints big-endian)."""
    head = struct.pack(">I32siIi", type_bits, sp.pad_name(sender), len(groups), (mess_type << 8) & 0x00FFFF00, len(data))
    return head + b"".join(sp.pad_name(g) for g in groups) + data
