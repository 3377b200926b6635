"""spread_mini's sans-I/O cores driven directly (tier 1): handshake, requests, membership bytes,
validation, queue limits, endianness, the library's decoder, the configuration parser, the status
table.  Byte values come from PROTOCOL.md / TRANSCRIPT.txt (the real Spread 4.4 on the wire) and
the thesis sections 7.3.3 and 7.4 (seed 003)."""
from __future__ import annotations

import struct

import pytest

import spread_mini as sp
from daemon_driver import driven

MARK = sp.MY_ENDIAN_MARKER


def hx(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", "").replace("\n", ""))


class Client:
    """A fake client on a Daemon core: feeds bytes, collects what the daemon writes back."""

    def __init__(self, daemon, conn_id: int, name: str, membership: bool = True, address: str = "127.0.0.1"):
        self.d = daemon
        self.conn_id = conn_id
        self.name = name
        self.inbox = b""
        daemon.connection_opened(conn_id, 0.0, address)
        daemon.connection_data(conn_id, sp.encode_connect(name, membership))
        self.pump()
        daemon.connection_data(conn_id, sp.encode_auth_choice())
        self.pump()
        self.pg = "#%s#%s" % (name, daemon.name)

    def pump(self) -> bytes:
        self.inbox += self.d.take_output(self.conn_id)
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
    d = driven("localhost")
    d.connection_opened(1)
    d.connection_data(1, hx("04 04 00 01 04 64 65 6d 6f"))
    assert d.take_output(1) == hx("05 4e 55 4c 4c 20")
    d.connection_data(1, b"NULL" + b"\0" * 86)
    assert d.take_output(1) == hx("01 04 04 00 0f") + b"#demo#localhost"


def test_reject_codes_on_the_wire():
    """PROTOCOL.md section 1: REJECT_NOT_UNIQUE (fa) in place of the auth-list length, -5, -7, -9."""
    d = driven("localhost")
    Client(d, 1, "obs")
    d.connection_opened(2)
    d.connection_data(2, hx("04 04 00 01 03 6f 62 73"))
    assert d.take_output(2) == b"\xfa"
    assert any(isinstance(a, sp.CloseConnection) and a.conn_id == 2 and a.flush_first for a in d.take_actions())
    for conn_id, data, code in ((3, b"\x04\x04\x00\x01\x0bABCDEFGHIJK", b"\xfb"),  # 11 chars > 10
                                (4, b"\x04\x04\x00\x01\x02a ", b"\xfb"),  # a space is not allowed
                                (5, b"\x03\x00\x01\x01a", b"\xf9")):  # lib 3.00 < 3.01 -> REJECT_VERSION
        d.connection_opened(conn_id)
        d.connection_data(conn_id, data)
        assert d.take_output(conn_id) == code
    d.connection_opened(6)
    d.connection_data(6, b"\x04\x04\x00\x01\x01z")
    d.take_output(6)
    d.connection_data(6, b"KERBEROS".ljust(90, b"\0"))
    assert d.take_output(6) == b"\xf7"  # -9 REJECT_AUTH


def test_reject_quota():
    d = driven("localhost", max_sessions=2)
    Client(d, 1, "a")
    Client(d, 2, "b")
    d.connection_opened(3)
    assert d.take_output(3) == b"\xfd"  # -3 REJECT_QUOTA right after accept()


def test_old_library_versions():
    """Libs <= 3.14 send no patch byte; < 3.15 get no daemon patch; < 3.16 have no auth exchange."""
    d = driven("localhost")
    d.connection_opened(1)
    d.connection_data(1, b"\x03\x0e\x01\x02ab")  # 3.14: major, minor, flags, len, name
    assert d.take_output(1) == b"\x01\x04\x04\x0d#ab#localhost"
    d.connection_opened(2)
    d.connection_data(2, b"\x03\x0f\x00\x01\x02cd")  # 3.15.0: patch byte, no auth exchange
    assert d.take_output(2) == b"\x01\x04\x04\x00\x0d#cd#localhost"


def test_empty_private_name_gets_an_invented_one():
    d = driven("localhost", rng=__import__("random").Random(1))
    d.connection_opened(7)
    d.connection_data(7, b"\x04\x04\x00\x01\x00")
    d.take_output(7)
    d.connection_data(7, sp.encode_auth_choice())
    reply = d.take_output(7)
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
    d = driven("localhost", proc_id=0x7F000001, memb_time=0x6B029B6F)
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
    assert any(isinstance(a, sp.CloseConnection) and a.conn_id == 2 for a in d.take_actions())
    assert "#demo#localhost" not in d.core.local


def burst(sender: Client, group: str, count: int) -> None:
    sender.send(b"".join(sp.encode_message(sp.RELIABLE_MESS, sender.pg, [group], sp.make_hint(0), b"m%d" % i)
                         for i in range(count)))


def test_queue_limit_counts_only_what_the_socket_did_not_take():
    """A burst larger than --max-session-messages in one read: a reader whose socket takes it
    survives; one that never reads is disconnected; the others see DISCONNECT (thesis 8.2.1)."""
    d = driven("localhost", max_session_messages=10)
    fast, lazy, tx = Client(d, 1, "fast"), Client(d, 2, "lazy"), Client(d, 3, "tx")
    for c in (fast, lazy):
        c.request(sp.JOIN_MESS, ["g"])
    fast.pump()
    lazy.pump()
    d.stall(2)  # lazy's socket takes nothing more
    burst(tx, "g", 50)
    got = fast.messages()
    assert [m.is_membership for m in got] == [False] * 50 + [True]  # the socket took everything
    closes = [a for a in d.take_actions() if isinstance(a, sp.CloseConnection)]
    assert [a.conn_id for a in closes] == [2] and "not reading" in closes[0].reason
    assert got[-1].caused_by == "DISCONNECT" and got[-1].changed_members == ["#lazy#localhost"]
    assert d.take_output(2) == b"" and 2 not in d.sessions  # the lazy session's queue is freed
    burst(tx, "g", 5)
    assert len(fast.messages()) == 5


def test_queue_memory_hard_bound():
    d = driven("localhost", max_session_messages=1000, max_session_bytes=10000)
    lazy, tx = Client(d, 1, "lazy"), Client(d, 2, "tx")
    lazy.request(sp.JOIN_MESS, ["g"])
    d.stall(1)
    tx.send(sp.encode_message(sp.RELIABLE_MESS, tx.pg, ["g"], sp.make_hint(0), b"x" * 20000))
    assert any(isinstance(a, sp.CloseConnection) and a.conn_id == 1 for a in d.take_actions())


# ---- validation: a violation closes that session only (PROTOCOL.md section 2) --------------------

def _violates(raw_for, expect_text: str):
    d = driven("localhost")
    bad, good = Client(d, 1, "bad"), Client(d, 2, "good")
    good.request(sp.JOIN_MESS, ["g"])
    bad.request(sp.JOIN_MESS, ["g"])
    good.pump()
    d.take_actions()
    bad.send(raw_for(bad))
    closes = [a for a in d.take_actions() if isinstance(a, sp.CloseConnection)]
    assert [a.conn_id for a in closes] == [1], closes
    assert any(expect_text in line for line in d.log), list(d.log)
    gone = good.messages()
    assert gone[-1].caused_by == "DISCONNECT" and gone[-1].changed_members == ["#bad#localhost"]
    good.request(sp.AGREED_MESS, ["g"], b"still here")
    assert good.messages()[0].data == b"still here"


def test_violation_wrong_sender():
    _violates(lambda c: sp.encode_message(sp.AGREED_MESS, "#good#localhost", ["g"], sp.make_hint(0), b"x"), "sender")


def test_violation_too_many_groups():
    _violates(lambda c: sp.HEADER.pack(sp.AGREED_MESS | MARK, sp.pad_name(c.pg), 101, MARK, 0), "num_groups")


def test_violation_hint_bits():
    _violates(lambda c: sp.HEADER.pack(sp.AGREED_MESS | MARK, sp.pad_name(c.pg), 1, MARK | 0x01000000, 0), "hint")


def test_violation_two_service_bits_or_unknown_type():
    _violates(lambda c: sp.HEADER.pack(sp.AGREED_MESS | sp.SAFE_MESS | MARK, sp.pad_name(c.pg), 0, MARK, 0), "type")
    _violates(lambda c: sp.HEADER.pack(sp.REG_MEMB_MESS | MARK, sp.pad_name(c.pg), 0, MARK, 0), "type")


def test_violation_join_with_illegal_group_name():
    _violates(lambda c: sp.encode_message(sp.JOIN_MESS, c.pg, ["#priv"], sp.make_hint(0), b""), "JOIN")
    _violates(lambda c: sp.encode_message(sp.JOIN_MESS, c.pg, ["a", "b"], sp.make_hint(0), b""), "JOIN")


def test_largest_message_accepted_and_one_more_refused_before_its_body():
    """Our limit: data_len + 32*num_groups <= 143152 (the real daemon's safe maximum)."""
    d = driven("localhost")
    rx, tx = Client(d, 1, "rx"), Client(d, 2, "tx")
    rx.request(sp.JOIN_MESS, ["g"])
    rx.pump()
    biggest = b"b" * (sp.MAX_MESSAGE_LEN - 32)
    tx.request(sp.SAFE_MESS, ["g"], biggest)
    assert rx.messages()[0].data == biggest
    # one byte more: refused from the header alone (the body is never buffered)
    tx.send(sp.HEADER.pack(sp.SAFE_MESS | MARK, sp.pad_name(tx.pg), 1, MARK, sp.MAX_MESSAGE_LEN - 31))
    assert any(isinstance(a, sp.CloseConnection) and a.conn_id == 2 for a in d.take_actions())
    assert any("over the limit" in line for line in d.log)


def test_split_reads_and_many_messages_per_read():
    d = driven("localhost")
    rx, tx = Client(d, 1, "rx"), Client(d, 2, "tx")
    rx.request(sp.JOIN_MESS, ["g"])
    rx.pump()
    stream = b"".join(sp.encode_message(sp.FIFO_MESS, tx.pg, ["g"], sp.make_hint(i), b"p%d" % i) for i in range(20))
    for i in range(len(stream)):  # one byte at a time
        tx.send(stream[i:i + 1])
    tx.send(stream)  # and all at once
    got = rx.messages()
    assert [m.data for m in got] == [b"p%d" % i for i in range(20)] * 2
    assert [m.mess_type for m in got[:20]] == list(range(20))


def test_open_groups_private_groups_and_membership_flag():
    """Thesis 7.2: open groups (a non-member sends); a private group reaches one session;
    a session without group_membership gets data only."""
    d = driven("localhost")
    member, quiet, outsider = Client(d, 1, "m"), Client(d, 2, "q", membership=False), Client(d, 3, "o")
    member.request(sp.JOIN_MESS, ["g"])
    quiet.request(sp.JOIN_MESS, ["g"])
    assert quiet.pump() == b""  # no membership messages for it
    member.pump()
    outsider.request(sp.RELIABLE_MESS, ["g"], b"from outside")
    assert member.messages()[0].data == b"from outside" and quiet.messages()[0].data == b"from outside"
    assert outsider.pump() == b""
    outsider.request(sp.RELIABLE_MESS, ["#q#localhost"], b"private")
    assert quiet.messages()[0].data == b"private" and member.pump() == b""
    quiet.request(sp.LEAVE_MESS, ["g"])
    assert quiet.pump() == b""  # not even the self-leave
    assert member.messages()[0].caused_by == "LEAVE"


def test_join_twice_and_leave_without_membership_are_ignored():
    d = driven("localhost")
    a = Client(d, 1, "a")
    a.request(sp.JOIN_MESS, ["g"])
    assert len(a.messages()) == 1
    a.request(sp.JOIN_MESS, ["g"])
    a.request(sp.LEAVE_MESS, ["other"])
    assert a.pump() == b""
    assert d.core.groups["g"].index == 1


def test_group_ids_change_on_every_change_and_groups_vanish_when_empty():
    d = driven("localhost", proc_id=0x0A4D0001, memb_time=77)
    a, b = Client(d, 1, "a"), Client(d, 2, "b")
    ids = []
    for client, kind in ((a, sp.JOIN_MESS), (b, sp.JOIN_MESS), (b, sp.LEAVE_MESS)):
        client.request(kind, ["g"])
        ids.append(tuple(a.messages()[-1].group_id))
    assert ids == [(0x0A4D0001, 77, 1), (0x0A4D0001, 77, 2), (0x0A4D0001, 77, 3)]
    assert not sp.equal_group_ids(ids[0], ids[1]) and sp.equal_group_ids(ids[2], sp.GroupId(0x0A4D0001, 77, 3))
    a.request(sp.LEAVE_MESS, ["g"])
    assert "g" not in d.core.groups


def test_member_order_is_daemon_order_then_name():
    d = driven("d2", daemon_order=["d1", "d2"])
    zed, amy = Client(d, 1, "zed"), Client(d, 2, "amy")
    remote = sp.DaemonMessage(sp.JOIN, "d1", "#rem#d1", 0, ["g"])
    d.orderer.submit(remote)
    zed.request(sp.JOIN_MESS, ["g"])
    amy.request(sp.JOIN_MESS, ["g"])
    assert amy.messages()[-1].members == ["#rem#d1", "#amy#d2", "#zed#d2"]


def test_kill_in_the_middle_of_a_read_ignores_what_follows():
    d = driven("localhost")
    rx, tx = Client(d, 1, "rx"), Client(d, 2, "tx")
    rx.request(sp.JOIN_MESS, ["g"])
    rx.pump()
    tx.send(sp.encode_message(sp.AGREED_MESS, tx.pg, ["g"], sp.make_hint(0), b"before")
            + sp.encode_message(sp.KILL_MESS, tx.pg, [tx.pg], sp.make_hint(0), b"")
            + sp.encode_message(sp.AGREED_MESS, tx.pg, ["g"], sp.make_hint(0), b"after"))
    assert [m.data for m in rx.messages()] == [b"before"]
    assert "tx" not in d.names  # the name is free again


def test_connection_closed_without_kill_is_a_disconnect():
    d = driven("localhost")
    a, b = Client(d, 1, "a"), Client(d, 2, "b")
    a.request(sp.JOIN_MESS, ["g"])
    b.request(sp.JOIN_MESS, ["g"])
    a.pump()
    d.connection_closed(2)
    m = a.messages()[0]
    assert m.caused_by == "DISCONNECT" and m.members == ["#a#localhost"]
    assert d.snapshot().disconnections == {"connection closed by the client": 1}


def test_handshake_timeout():
    d = driven("localhost")
    d.connection_opened(1, now=100.0)
    d.connection_data(1, b"\x04\x04")
    d.tick(100.0 + sp.DEFAULT_HANDSHAKE_TIMEOUT_S + 1)
    assert any(isinstance(a, sp.CloseConnection) and a.conn_id == 1 for a in d.take_actions())


def test_handshake_timeout_is_a_setting():
    d = driven("localhost", handshake_timeout_s=2.0)
    d.connection_opened(1, now=100.0)
    d.tick(101.9)
    assert d.closes() == []
    d.tick(102.1)
    assert [(a.conn_id, a.reason) for a in d.closes()] == [(1, "handshake timeout")]
    assert d.snapshot().disconnections == {"handshake timeout": 1}


def idle(d, first: int, count: int, now: float = 0.0, address: str = "127.0.0.1") -> None:
    """`count` connections that never send a byte (a student's idle script)."""
    for conn_id in range(first, first + count):
        d.connection_opened(conn_id, now, address)


def test_idle_connections_from_one_address_make_room_for_the_newest():
    # On loopback every client comes from 127.0.0.1: the limit per address closes the OLDEST
    # unfinished handshake, so the newest connection (a real client) always gets its turn.
    d = driven("localhost", max_handshakes_per_address=3)
    idle(d, 1, 3)
    assert d.closes() == []
    Client(d, 4, "real")  # the fourth from the same address: it finishes its handshake
    closes = d.closes()
    assert [a.conn_id for a in closes] == [1]
    assert any("connection 1 closed: more than 3 unfinished handshakes from 127.0.0.1" in line for line in d.log)
    assert d.snapshot().disconnections == {"handshake: made room for a newer connection": 1}
    idle(d, 5, 1, address="10.0.0.7")  # another address has its own allowance
    assert d.closes() == []
    assert sorted(d.handshaking) == [2, 3, 5]


def test_at_the_session_limit_an_idle_connection_gives_way_and_open_sessions_get_reject_quota():
    d = driven("localhost", max_sessions=3, max_handshakes_per_address=1000)
    Client(d, 1, "a")
    idle(d, 2, 2)
    c = Client(d, 4, "real")  # 3 connections already: the oldest idle one (2) makes room
    assert [a.conn_id for a in d.closes()] == [2] and c.pg == "#real#localhost"
    assert d.take_output(4) == b""  # (its accept was read by Client)
    Client(d, 5, "b")  # and again: 3 gives way
    assert [a.conn_id for a in d.closes()] == [3]
    d.connection_opened(6, 0.0, "127.0.0.1")  # three OPEN sessions: the quota, as before
    assert d.take_output(6) == b"\xfd" and [a.conn_id for a in d.closes()] == [6]


def test_a_thousand_idle_connections_never_keep_a_client_out():
    d = driven("localhost")  # the defaults
    idle(d, 1, 1000, now=10.0)
    c = Client(d, 1001, "real")
    assert c.pg == "#real#localhost"
    # the newest idle ones are left, one fewer than the limit: the real client made room and is OPEN
    assert list(d.handshaking) == list(range(1002 - sp.DEFAULT_MAX_HANDSHAKES_PER_ADDRESS, 1001))
    d.tick(10.0 + sp.DEFAULT_HANDSHAKE_TIMEOUT_S + 0.1)  # the idle ones go after the time-out
    assert d.handshaking == {} and len(d.sessions) == 1


# ---- endianness -----------------------------------------------------------------------------------

def test_big_endian_client_is_flipped_and_its_hint_passed_through():
    """PROTOCOL.md section 2: type, num_groups, data_len are flipped; hint is forwarded as sent."""
    from spread_helpers import be_message
    d = driven("localhost")
    rx = Client(d, 1, "rx")
    d.connection_opened(2)
    d.connection_data(2, b"\x04\x04\x00\x01\x02be")
    d.take_output(2)
    d.connection_data(2, sp.encode_auth_choice())
    d.take_output(2)
    rx.request(sp.JOIN_MESS, ["g"])
    rx.pump()
    d.connection_data(2, be_message(sp.SAFE_MESS, "#be#localhost", ["g"], 513, b"payload")
                      + be_message(sp.JOIN_MESS, "#be#localhost", ["g"], 0, b""))
    raw = rx.pump()
    msg = sp.decode_message(raw, 0, rx.pg)
    assert (msg.service_type, msg.mess_type, msg.endian_mismatch, msg.data) == (sp.SAFE_MESS, 513, True, b"payload")
    assert struct.unpack_from("<I", raw, 0)[0] == sp.SAFE_MESS | MARK  # re-stamped in our order
    assert raw[40:44] == struct.pack(">I", 513 << 8)  # the original hint bytes
    assert sp.decode_message(raw, sp.message_length(raw), rx.pg).members == ["#be#localhost", "#rx#localhost"]


def test_library_reads_a_big_endian_daemon():
    members = ["#a#bigd", "#b#bigd"]
    body = struct.pack(">Iii", 0x0A000001, 9, 4) + struct.pack(">II", 1, 0) + struct.pack(">I", 1) + sp.pad_name("#b#bigd")
    raw = struct.pack(">I32siIi", sp.REG_MEMB_MESS | sp.CAUSED_BY_JOIN, sp.pad_name("g"), 2, 0, len(body)) \
        + b"".join(sp.pad_name(m) for m in members) + body
    m = sp.decode_message(raw, 0, "#b#bigd")
    assert m.is_regular and m.caused_by == "JOIN" and m.members == members and m.my_index == 1
    assert tuple(m.group_id) == (0x0A000001, 9, 4) and m.vs_sets == [["#b#bigd"]]
    data = struct.pack(">I32siIi", sp.FIFO_MESS, sp.pad_name("#a#bigd"), 1, 7 << 8, 3) + sp.pad_name("g") + b"abc"
    r = sp.decode_message(data, 0, "")
    assert (r.service_type, r.mess_type, r.endian_mismatch, r.groups, r.data) == (sp.FIFO_MESS, 7, True, ["g"], b"abc")


def test_library_reads_reject_mess_with_old_type():
    raw = sp.HEADER.pack(sp.REJECT_MESS | MARK, sp.pad_name("#a#d"), 1, sp.make_hint(3), 2) \
        + struct.pack("=I", sp.AGREED_MESS | MARK) + sp.pad_name("g") + b"hi"
    assert sp.message_length(raw) == len(raw)
    m = sp.decode_message(raw)
    assert m.service_type == sp.AGREED_MESS | sp.REJECT_MESS and m.data == b"hi" and m.mess_type == 3


# ---- the library's decoder: BUFFER_TOO_SHORT / GROUPS_TOO_SHORT / DROP_RECV (thesis 7.4.1) ------

def test_too_short_keeps_message_and_drop_recv_truncates():
    raw = sp.encode_message(sp.SAFE_MESS, "#a#d", ["g1", "g2"], sp.make_hint(9), b"0123456789")
    with pytest.raises(sp.BufferTooShort) as exc:
        sp.decode_message(raw, 0, "", max_mess_len=4)
    e = exc.value
    assert (e.code, e.needed_len, e.needed_groups, e.service_type, e.mess_type) == (-15, 10, 2, sp.SAFE_MESS, 9)
    with pytest.raises(sp.GroupsTooShort) as exc:
        sp.decode_message(raw, 0, "", max_groups=1)
    assert exc.value.code == -16 and exc.value.needed_groups == 2
    m = sp.decode_message(raw, 0, "", max_mess_len=4, max_groups=1, drop_recv=True)
    assert m.truncated and m.data == b"0123" and m.groups == ["g1"]


def test_parse_spread_name_forms():
    assert sp.parse_spread_name("4803@localhost") == ("tcp", ("localhost", 4803))
    assert sp.parse_spread_name("4803@10.0.0.123") == ("tcp", ("10.0.0.123", 4803))
    kind, target = sp.parse_spread_name("59999")
    assert (kind, target) in (("unix", "/tmp/59999"), ("tcp", ("127.0.0.1", 59999)))
    for bad in ("", "abc", "4803@", "0", "70000@h"):
        with pytest.raises(sp.IllegalSpread):
            sp.parse_spread_name(bad)


def test_orderer_stamps_order_fields_for_every_service_type():
    """All six service types travel the same submit/poll path (thesis 7.3.3: site id, seq, LTS)."""
    d = driven("localhost")
    seen = []
    real_deliver_all = d.core.deliver_all  # the daemon hands the core its deliveries in runs
    d.core.deliver_all = lambda msgs: (seen.extend((m.kind, m.service_type & sp.REGULAR_MESS, m.seq, m.lts)
                                                   for m in msgs), real_deliver_all(msgs))[1]
    rx = Client(d, 1, "rx")
    rx.request(sp.JOIN_MESS, ["g"])
    for bit in sp.SERVICE_BITS:
        rx.request(bit, ["g"], b"x")
    assert [s[1] for s in seen[1:]] == list(sp.SERVICE_BITS)
    assert [s[2] for s in seen] == list(range(1, 8)) and [s[3] for s in seen] == list(range(1, 8))
    assert len(rx.messages()) == 7


# ---- configuration file ------------------------------------------------------------------------------

CONF = """
# a lab with two segments
Spread_Segment 127.0.0.255:4803 {
    d1 127.0.0.1 { 127.0.0.1 }
    d2 127.0.0.2 {
        D 127.0.0.2
        C 127.0.0.12
    }
}
Spread_Segment 10.99.0.255 {   # no port: 4803
    d3 10.99.0.3
}
EventLogFile = /tmp/spread.log
DebugFlags = { PRINT EXIT }
EventTimeStamp
EventTimeStamp = "[%a %d %b %Y %H:%M:%S]"
AcceleratedRing = false
"""


def test_spread_conf_parser():
    conf = sp.parse_spread_conf(CONF.replace("EventTimeStamp\n", ""))
    assert conf.daemon_order() == ["d1", "d2", "d3"]
    d2 = conf.find("d2")
    assert (d2.ip, d2.port, d2.segment, d2.interfaces) == ("127.0.0.2", 4803, 0, [("D", "127.0.0.2"), ("C", "127.0.0.12")])
    assert d2.client_addresses() == ["127.0.0.12"]
    assert conf.find("d1").interfaces == [("", "127.0.0.1")]
    assert conf.find("d3").port == 4803 and conf.segments[1].address == "10.99.0.255"
    assert conf.ignored == ["EventLogFile", "DebugFlags", "EventTimeStamp"]
    assert conf.used == {"AcceleratedRing": 0}  # the ring protocol (Spread 5's setting)
    assert sp.choose_daemon(conf, "d3").ip == "10.99.0.3"
    with pytest.raises(sp.ConfigError, match="--name"):
        sp.choose_daemon(conf, None)
    with pytest.raises(sp.ConfigError, match="not in the configuration"):
        sp.choose_daemon(conf, "d9")


@pytest.mark.parametrize("text, message", [
    ("Spread_Segment 127.0.0.255:4803 {\n d1 127.0.0.1\n", "expected '}'"),
    ("Spread_Segment 127.0.0.255:4803 {\n d1 300.0.0.1\n}\n", "line 2"),
    ("Spread_Segment 127.0.0.255:99999 {\n d1 127.0.0.1\n}\n", "bad port"),
    ("Spread_Segment 127.0.0.255:4803 {\n d1 127.0.0.1\n d1 127.0.0.2\n}\n", "twice"),
    ("Spread_Segment 127.0.0.255:4803 {\n averyveryverylongdaemonname 127.0.0.1\n}\n", "daemon name"),
    ("hello world\n", "unexpected"),
    ("# nothing\n", "no daemons"),
])
def test_spread_conf_errors_name_the_line(text, message):
    with pytest.raises(sp.ConfigError, match=message):
        sp.parse_spread_conf(text)


# ---- status table -----------------------------------------------------------------------------------

def test_status_table_rich_and_plain():
    d = driven("localhost")
    a, b = Client(d, 1, "a"), Client(d, 2, "b")
    a.request(sp.JOIN_MESS, ["g"])
    b.request(sp.JOIN_MESS, ["g"])
    a.request(sp.SAFE_MESS, ["g"], b"x")
    d.connection_closed(2)
    snap = d.snapshot("127.0.0.1:4803", 5.0)
    text = sp.render_status_text(snap)
    assert "spread_mini daemon localhost on 127.0.0.1:4803" in text
    assert "#a#localhost" in text and "g" in text and "SAFE" in text and "in 1, out 2" in text
    assert "connection closed by the client" in text
    if sp.rich is not None:
        from rich.console import Console
        console = Console(record=True, width=140)
        console.print(sp.render_status(snap))
        out = console.export_text()
        assert "#a#localhost" in out and "in 1, out 2" in out and "connection closed by the client" in out


def test_library_refuses_absurd_headers():
    with pytest.raises(sp.IllegalMessage):
        sp.message_length(sp.HEADER.pack(sp.SAFE_MESS | MARK, b"", -1, MARK, 0))
    with pytest.raises(sp.IllegalMessage):
        sp.message_length(sp.HEADER.pack(sp.SAFE_MESS | MARK, b"", 0, MARK, 2 ** 31 - 1))
    assert sp.message_length(b"short") == 0


def test_every_session_state_change_is_logged_and_counted():
    """STYLE: explicit states, a logged and counted reason for every change."""
    d = driven("localhost")
    a = Client(d, 1, "a")
    d.connection_opened(2)
    d.connection_data(2, sp.encode_connect("a", True))  # the name is taken
    a.request(sp.KILL_MESS, [a.pg])
    log = "\n".join(d.log)
    assert "connection 1: AWAIT_CONNECT -> AWAIT_AUTH: connect message from library 4.4.0, name 'a'" in log
    assert "session #a#localhost: AWAIT_AUTH -> OPEN: accepted as #a#localhost (NULL authentication)" in log
    assert "connection 2 closed: rejected: REJECT_NOT_UNIQUE" in log
    assert "session #a#localhost closed: client disconnect (KILL) (OPEN -> CLOSED)" in log
    assert d.snapshot().state_changes == {"AWAIT_AUTH": 1, "OPEN": 1, "CLOSED": 2}


def test_total_queued_bytes_bounded_across_sessions():
    d = driven("localhost", max_session_messages=1000, max_total_bytes=30000)
    small, big, tx = Client(d, 1, "small"), Client(d, 2, "big"), Client(d, 3, "tx")
    small.request(sp.JOIN_MESS, ["s"])
    big.request(sp.JOIN_MESS, ["b"])
    d.stall(1)
    d.stall(2)
    tx.request(sp.RELIABLE_MESS, ["s"], b"x" * 10000)
    for _ in range(3):
        tx.request(sp.RELIABLE_MESS, ["b"], b"y" * 10000)
    d.tick(1.0)
    closes = [a.conn_id for a in d.take_actions() if isinstance(a, sp.CloseConnection)]
    assert closes == [2]  # the longest queue goes; the other session keeps its message
    d.unstall(1)
    assert small.messages()[-1].data == b"x" * 10000


def test_join_beyond_the_limits_comes_back_as_reject_mess(monkeypatch):
    """PROTOCOL.md section 4: REJECT_MESS (old type after the header) only to the sender."""
    monkeypatch.setattr(sp, "MAX_GROUPS_PER_MEMBER", 2)
    d = driven("localhost")
    a = Client(d, 1, "a")
    for name in ("g1", "g2", "g3"):
        a.request(sp.JOIN_MESS, [name])
    got = a.messages()
    assert [m.is_membership for m in got] == [True, True, False]
    rejected = got[2]
    assert rejected.service_type == sp.JOIN_MESS | sp.REJECT_MESS and rejected.groups == ["g3"]
    assert rejected.sender == "#a#localhost" and "g3" not in d.core.groups
    assert any("may not join g3" in line for line in d.log)


def test_two_slow_sessions_are_cut_in_order_and_others_see_both_disconnects():
    d = driven("localhost", max_session_messages=3)
    watcher, s1, s2, tx = Client(d, 1, "w"), Client(d, 2, "s1"), Client(d, 3, "s2"), Client(d, 4, "tx")
    for c in (watcher, s1, s2):
        c.request(sp.JOIN_MESS, ["g"])
    watcher.pump()
    d.stall(2)
    d.stall(3)
    burst(tx, "g", 5)
    assert [a.conn_id for a in d.take_actions() if isinstance(a, sp.CloseConnection)] == [2, 3]
    got = watcher.messages()
    assert [m.is_membership for m in got] == [False] * 5 + [True, True]  # the burst, then both cuts
    gone = got[5:]
    assert [(m.caused_by, m.changed_members) for m in gone] == [("DISCONNECT", ["#s1#localhost"]),
                                                                ("DISCONNECT", ["#s2#localhost"])]


def test_a_message_the_ring_refuses_ends_its_session_instead_of_vanishing():
    # The ring's hard queue limit (the I/O loop's flow control keeps far below it in practice):
    # the session that overflows it is closed with a reason; nothing is lost without a word.
    d = driven("d1", {"d1": "127.0.0.1", "d2": "127.0.0.2"}, settings=sp.RingSettings(max_pending_messages=1))
    c = Client(d, 1, "alice")
    c.request(sp.AGREED_MESS, ["g"], b"first")    # waits for a token that never comes
    c.request(sp.AGREED_MESS, ["g"], b"second")   # the queue is full
    closes = [a for a in d.take_actions() if isinstance(a, sp.CloseConnection) and a.conn_id == 1]
    assert closes and "queue is full" in closes[0].reason
    assert d.disconnections["daemon overloaded: the ring's queue is full"] == 1


# ---- the client library: several messages in one system call ----------------------------------

def _mailbox_pair():
    import socket
    ours, daemon_side = socket.socketpair()
    return sp.Mailbox(ours, "#u#d1", (4, 4, 0), False), daemon_side


def _read_all(sock, count):
    data = b""
    sock.settimeout(2)
    while len(data) < count:
        data += sock.recv(65536)
    return data


def test_multicast_many_sends_the_bytes_of_each_multicast_at_once():
    one, side_one = _mailbox_pair()
    many, side_many = _mailbox_pair()
    datas = [b"first", "second", [b"sca", "tter"], b"x" * 1000]
    sizes = [one.multicast(sp.AGREED_MESS, ["g1", "g2"], d, 7) for d in datas]
    expected = _read_all(side_one, sum(sizes) + len(datas) * (48 + 64))
    assert many.multicast_many(sp.AGREED_MESS, ["g1", "g2"], datas, 7) == sum(sizes)
    assert _read_all(side_many, len(expected)) == expected
    # and the daemon's session reads them as the four messages they are
    import random
    session = sp.ClientSession(1, "d1", lambda name: True, random.Random(1), lambda *a: None)
    session.receive_data(sp.encode_connect("u", False) + sp.encode_auth_choice())
    assert session.state == sp.OPEN and session.private_group == "#u#d1"
    events = session.receive_data(expected)
    assert [e.data for e in events] == [b"first", b"second", b"scatter", b"x" * 1000]


def test_multicast_many_sends_nothing_when_one_message_is_refused():
    box, side = _mailbox_pair()
    with pytest.raises(sp.MessageTooLong):
        box.multicast_many(sp.AGREED_MESS, "g", [b"fine", b"x" * (sp.MAX_SEND_LEN + 1)])
    side.setblocking(False)
    with pytest.raises(BlockingIOError):
        side.recv(100)
    assert box.multicast_many(sp.AGREED_MESS, "g", []) == 0
