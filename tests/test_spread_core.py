"""spread_mini's sans-I/O cores driven directly (tier 1): handshake, requests, membership bytes,
validation, queue limits, endianness, the library's decoder, the configuration parser, the status
table.  Byte values come from PROTOCOL.md / TRANSCRIPT.txt (the real Spread 4.4 on the wire) and
the thesis sections 7.3.3 and 7.4 (seed 003)."""
from __future__ import annotations

import struct

import pytest

import spread_mini as sp

MARK = sp.MY_ENDIAN_MARKER


def hx(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", "").replace("\n", ""))


class Client:
    """A fake client on a Daemon core: feeds bytes, collects what the daemon writes back."""

    def __init__(self, daemon: sp.Daemon, conn_id: int, name: str, membership: bool = True):
        self.d = daemon
        self.conn_id = conn_id
        self.name = name
        self.inbox = b""
        daemon.connection_opened(conn_id, 0.0)
        daemon.connection_data(conn_id, sp.encode_connect(name, membership))
        self.pump()
        daemon.connection_data(conn_id, sp.encode_auth_choice())
        self.pump()
        self.pg = "#%s#%s" % (name, daemon.name)

    def pump(self) -> bytes:
        while True:
            data = self.d.pending_output(self.conn_id)
            if not data:
                break
            self.d.output_written(self.conn_id, len(data))
            self.inbox += data
        out, self.inbox = self.inbox, b""
        return out

    def send(self, raw: bytes) -> None:
        self.d.connection_data(self.conn_id, raw)

    def request(self, type_bits: int, groups, data: bytes = b"", mess_type: int = 0) -> None:
        self.send(sp.encode_message(type_bits, self.pg, groups, sp.make_hint(mess_type), data))

    def messages(self) -> list:
        buf = self.pump()
        out, off = [], 0
        while off < len(buf):
            n = sp.message_length(buf, off)
            out.append(sp.decode_message(buf, off, self.pg))
            off += n
        return out


def test_handshake_bytes_match_transcript_scenario_a():
    """TRANSCRIPT A: 04 04 00 01 04 'demo' -> 05 'NULL ', 90-byte NULL choice -> 01 04 04 00 0f '#demo#localhost'."""
    d = sp.Daemon("localhost")
    d.connection_opened(1)
    d.connection_data(1, hx("04 04 00 01 04 64 65 6d 6f"))
    assert d.pending_output(1) == hx("05 4e 55 4c 4c 20")
    d.output_written(1, 6)
    d.connection_data(1, b"NULL" + b"\0" * 86)
    assert d.pending_output(1) == hx("01 04 04 00 0f") + b"#demo#localhost"


def test_reject_codes_on_the_wire():
    """PROTOCOL.md section 1: REJECT_NOT_UNIQUE (fa) in place of the auth-list length, -5, -7, -9."""
    d = sp.Daemon("localhost")
    Client(d, 1, "obs")
    d.connection_opened(2)
    d.connection_data(2, hx("04 04 00 01 03 6f 62 73"))
    assert d.pending_output(2) == b"\xfa"
    assert any(isinstance(a, sp.CloseConnection) and a.conn_id == 2 and a.flush_first for a in d.poll())
    for conn_id, data, code in ((3, b"\x04\x04\x00\x01\x0bABCDEFGHIJK", b"\xfb"),  # 11 chars > 10
                                (4, b"\x04\x04\x00\x01\x02a ", b"\xfb"),  # a space is not allowed
                                (5, b"\x03\x00\x01\x01a", b"\xf9")):  # lib 3.00 < 3.01 -> REJECT_VERSION
        d.connection_opened(conn_id)
        d.connection_data(conn_id, data)
        assert d.pending_output(conn_id) == code
    d.connection_opened(6)
    d.connection_data(6, b"\x04\x04\x00\x01\x01z")
    d.output_written(6, len(d.pending_output(6)))
    d.connection_data(6, b"KERBEROS".ljust(90, b"\0"))
    assert d.pending_output(6) == b"\xf7"  # -9 REJECT_AUTH


def test_reject_quota():
    d = sp.Daemon("localhost", max_sessions=2)
    Client(d, 1, "a")
    Client(d, 2, "b")
    d.connection_opened(3)
    assert d.pending_output(3) == b"\xfd"  # -3 REJECT_QUOTA right after accept()


def test_old_library_versions():
    """Libs <= 3.14 send no patch byte; < 3.15 get no daemon patch; < 3.16 have no auth exchange."""
    d = sp.Daemon("localhost")
    d.connection_opened(1)
    d.connection_data(1, b"\x03\x0e\x01\x02ab")  # 3.14: major, minor, flags, len, name
    assert d.pending_output(1) == b"\x01\x04\x04\x0d#ab#localhost"
    d.connection_opened(2)
    d.connection_data(2, b"\x03\x0f\x00\x01\x02cd")  # 3.15.0: patch byte, no auth exchange
    assert d.pending_output(2) == b"\x01\x04\x04\x00\x0d#cd#localhost"


def test_empty_private_name_gets_an_invented_one():
    d = sp.Daemon("localhost", rng=__import__("random").Random(1))
    d.connection_opened(7)
    d.connection_data(7, b"\x04\x04\x00\x01\x00")
    d.output_written(7, len(d.pending_output(7)))
    d.connection_data(7, sp.encode_auth_choice())
    reply = d.pending_output(7)
    name = reply[5:].decode()
    assert reply[:4] == b"\x01\x04\x04\x00" and name.startswith("#r") and name.endswith("#localhost")
    assert len(name.split("#")[1]) <= sp.MAX_PRIVATE_NAME


A_JOIN_DEMO_MEMB = hx("""
80 11 00 80 64 65 6d 6f 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00
00 00 00 00 02 00 00 00 80 00 00 80 38 00 00 00 23 64 65 6d 6f 23 6c 6f 63 61 6c 68 6f 73 74 00
00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 23 6f 62 73 23 6c 6f 63 61 6c 68 6f 73 74 00 00
00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 01 00 00 7f 6f 9b 02 6b 02 00 00 00 01 00 00 00
00 00 00 00 01 00 00 00 23 64 65 6d 6f 23 6c 6f 63 61 6c 68 6f 73 74 00 00 00 00 00 00 00 00 00
00 00 00 00 00 00 00 00""")
A_HELLO = hx("""
90 00 00 80 23 64 65 6d 6f 23 6c 6f 63 61 6c 68 6f 73 74 00 00 00 00 00 00 00 00 00 00 00 00 00
00 00 00 00 01 00 00 00 80 01 00 80 05 00 00 00 64 65 6d 6f 00 00 00 00 00 00 00 00 00 00 00 00
00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 68 65 6c 6c 6f""")
A_SELF_LEAVE = hx("""
80 02 00 80 64 65 6d 6f 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00
00 00 00 00 00 00 00 00 80 00 00 80 00 00 00 00""")


@pytest.mark.skipif(not sp.LITTLE_HOST, reason="the transcript was captured on a little-endian host")
def test_scenario_a_daemon_bytes_match_transcript():
    """TRANSCRIPT A / A': join, membership bytes (proc_id 127.0.0.1, time from the capture), hello, leave."""
    d = sp.Daemon("localhost", proc_id=0x7F000001, memb_time=0x6B029B6F)
    obs = Client(d, 1, "obs")
    obs.pump()
    obs.request(sp.JOIN_MESS, ["demo"])
    obs.pump()
    demo = Client(d, 2, "demo")
    demo.pump()
    demo.send(hx("80 00 01 80") + sp.pad_name("#demo#localhost") + hx("01 00 00 00 80 00 00 80 00 00 00 00") + sp.pad_name("demo"))
    assert demo.pump() == A_JOIN_DEMO_MEMB
    assert obs.pump() == A_JOIN_DEMO_MEMB
    demo.send(A_HELLO)  # the client's multicast bytes are forwarded unchanged (same byte order)
    assert demo.pump() == A_HELLO and obs.pump() == A_HELLO
    demo.request(sp.LEAVE_MESS, ["demo"])
    assert demo.pump() == A_SELF_LEAVE
    left = obs.messages()[0]
    assert left.caused_by == "LEAVE" and tuple(left.group_id) == (0x7F000001, 0x6B029B6F, 3)
    # KILL with stack garbage after the NUL of the group name (seen on the wire) is accepted
    demo.send(hx("80 00 04 80") + sp.pad_name("#demo#localhost") + hx("01 00 00 00 80 00 00 80 00 00 00 00")
              + b"#demo#localhost\0" + hx("20 4f 9e b2 fe 7f 00 00 8c 25 01 64 00 00 00 00"))
    assert any(isinstance(a, sp.CloseConnection) and a.conn_id == 2 for a in d.poll())
    assert "#demo#localhost" not in d.core.local
