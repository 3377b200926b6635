"""Tier 1: the calculator on a hostile LAN (issue 14): tags, keys and replays, with a fake clock.

With --key every datagram ends in an HMAC-SHA256 tag; a forger without the key can send
anything and replay what it recorded. Nothing it sends may change a server's state or a
client's answer.
"""
from __future__ import annotations

import hashlib
import hmac
import os
import random

import pytest
from hypothesis import given, strategies as st

import calc_server
from calc_client import CalcClientCore, format_reply, reply_json
from calc_server import (ACTIVE, DISCONNECTED, KIND_TAGGED, TAG_BYTES, TO_SERVER_GROUP,
                         UNRESPONSIVE, Answer, CalcServer, Heartbeat, Request, Settings,
                         WireError, decode, encode_answer, encode_heartbeat, encode_request,
                         status_counters)

from calc_helpers import own_tick

CLUSTER = "keyed"
KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))
CLIENT = ("127.0.0.9", 5555)
FORGER = ("127.0.0.66", 6666)


def messages():
    return [Heartbeat(2, 77, 5, 3, True, (0xDEADBEEF, 12)), Request(2**40 + 3, 2, "3+5-4/3*4"),
            Answer(2**40 + 3, 2, 1, True, "2.666666666666667")]


def unkeyed(msg):
    """What the unkeyed format keeps of msg: a heartbeat without its echoes."""
    return msg._replace(echoes=()) if isinstance(msg, Heartbeat) else msg


def encode(msg, cluster=CLUSTER, key=KEY):
    enc = {Heartbeat: encode_heartbeat, Request: encode_request, Answer: encode_answer}
    return enc[type(msg)](cluster, msg, key)


# ---- the wire format -------------------------------------------------------------------------

@pytest.mark.parametrize("msg", messages())
def test_a_keyed_datagram_ends_in_the_hmac_of_everything_before_it(msg):
    data = encode(msg)
    plain = encode(msg, key=None)
    echoes = 1 + 4 * len(msg.echoes) if isinstance(msg, Heartbeat) else 0
    assert len(data) == len(plain) + echoes + TAG_BYTES
    assert data[5] == plain[5] | KIND_TAGGED                    # the kind says: tagged
    assert data[-TAG_BYTES:] == hmac.new(KEY, data[:-TAG_BYTES], hashlib.sha256).digest()
    assert decode(data, CLUSTER, KEY) == msg
    assert decode(plain, CLUSTER) == unkeyed(msg)


@pytest.mark.parametrize("msg", messages())
def test_wrong_key_missing_tag_and_unexpected_tag_each_have_their_reason(msg):
    cases = [(encode(msg, key=OTHER_KEY), KEY, "bad-tag"),
             (encode(msg, key=None), KEY, "no-tag"),
             (encode(msg), None, "unexpected-tag")]
    for data, key, reason in cases:
        with pytest.raises(WireError) as caught:
            decode(data, CLUSTER, key)
        assert caught.value.reason == reason
        # what it says, kept for the report only
        assert caught.value.claimed == (unkeyed(msg) if key == KEY and reason == "no-tag"
                                        else msg)


@pytest.mark.parametrize("msg", messages())
@pytest.mark.parametrize("cut", [1, 16, TAG_BYTES, TAG_BYTES + 3])
def test_a_truncated_tag_is_a_bad_tag(msg, cut):
    with pytest.raises(WireError) as caught:
        decode(encode(msg)[:-cut], CLUSTER, KEY)
    assert caught.value.reason in ("bad-tag", "truncated")
    if cut < TAG_BYTES:
        assert caught.value.reason == "bad-tag"


@given(st.sampled_from(range(3)), st.data())
def test_any_changed_byte_is_refused(which, data):
    good = encode(messages()[which])
    at = data.draw(st.integers(0, len(good) - 1))
    flip = data.draw(st.integers(1, 255))
    bad = good[:at] + bytes([good[at] ^ flip]) + good[at + 1:]
    with pytest.raises(WireError):
        decode(bad, CLUSTER, KEY)


# ---- the server: forgeries and replays change nothing ------------------------------------------

def keyed_server(index, now=0.0, settings=Settings(heartbeat_s=1.0, jitter_grace=0.0)):
    server = CalcServer(index, CLUSTER, settings, rng=random.Random(index), key=KEY)
    out = server.tick(now)
    server.datagram(out.sends[0].data, ("127.0.0.1", 40000 + index), now + 0.001)
    return server


def heard_by(server, seq, index=1, incarnation=5):
    """A genuine keyed heartbeat of (index, incarnation) from a process that hears `server`:
    it echoes the server's incarnation."""
    return encode(Heartbeat(index, incarnation, seq, 0, True, (server.incarnation,)))


def state_of(server, now):
    snap = server.snapshot(now)
    return (snap.rows, snap.requests_seen, snap.requests_answered, snap.answering,
            snap.conflicts)


def test_a_forged_heartbeat_for_a_dead_index_does_not_stop_the_failover():
    """The issue's forger: heartbeats for index 1 every 0.3 s, without the key."""
    s2 = keyed_server(2)
    s2.datagram(heard_by(s2, 1), ("127.0.0.1", 40001), 0.5)
    forged = 0
    for tick in range(1, 7):
        own_tick(s2, float(tick))
        for offset in (0.0, 0.3, 0.6, 0.9):
            for key in (None, OTHER_KEY):
                s2.datagram(encode(Heartbeat(1, 5, 1000 + forged, 0, True), key=key), FORGER,
                            tick + offset + 0.01)
                forged += 1
    assert s2.tracker.state(1) == UNRESPONSIVE and s2.answering
    assert s2.dropped["no-tag"] == s2.dropped["bad-tag"] == forged // 2


def test_replayed_heartbeats_are_refused_and_an_older_seq_too():
    s2 = keyed_server(2)
    recorded = [heard_by(s2, seq) for seq in (1, 2, 3)]
    for k, data in enumerate(recorded):
        s2.datagram(data, ("127.0.0.1", 40001), 0.1 + k * 0.3)
    for tick in (1.0, 2.0, 3.0, 4.0):          # server 1 died after seq 3
        own_tick(s2, tick)
        for data in recorded:                  # the forger replays all it recorded
            s2.datagram(data, FORGER, tick + 0.5)
    assert s2.tracker.state(1) == UNRESPONSIVE and s2.answering
    assert s2.dropped["replayed-heartbeat"] == 4 * 3
    assert s2.tracker.peers[1].address == "127.0.0.1:40001"    # never the forger's


def recording_of_server_1(seconds=5):
    """Server 1 and server 3 exchange keyed heartbeats; a forger records server 1's. Then
    server 1 dies. Returns the recording (its heartbeats echo server 3, not anyone later)."""
    s1, s3 = keyed_server(1), keyed_server(3, now=0.5)
    recorded = []
    for tick in range(1, seconds + 1):
        for server, peer, at in ((s1, s3, float(tick)), (s3, s1, tick + 0.5)):
            for send in own_tick(server, at).sends:
                if send.to == TO_SERVER_GROUP:
                    peer.datagram(send.data, ("127.0.0.1", 40000 + server.index), at + 0.001)
                    if server is s1:
                        recorded.append(send.data)
    assert s3.tracker.state(1) == ACTIVE and not s3.answering      # it was genuine
    return recorded


def test_a_recording_replayed_to_a_server_started_after_it_is_refused():
    """The hole the newer-seq rule left: server 2 starts after server 1 died and never heard
    its heartbeats. The forger replays the recording, in order and over and over."""
    recorded = recording_of_server_1()
    s2 = keyed_server(2, now=10.0)
    notes = []
    for tick in range(11, 17):
        notes += own_tick(s2, float(tick)).events
        for k, data in enumerate(recorded):
            notes += s2.datagram(data, FORGER, tick + 0.05 * (k + 1)).events
    assert s2.tracker.state(1) == DISCONNECTED and s2.tracker.peers[1].last_heard_at is None
    assert s2.answering
    assert s2.dropped["unconfirmed-heartbeat"] == 6 * len(recorded)
    unconfirmed = [n.text for n in notes if "do not echo ours" in n.text]
    assert unconfirmed == [f"index 1: heartbeats from 127.0.0.66:6666 (incarnation "
                           f"{decode(recorded[0], CLUSTER, KEY).incarnation:08x}) do not echo "
                           f"ours ({s2.incarnation:08x}), so they may be older than this "
                           f"server: ignored until one does (a replayed recording, or that "
                           f"process does not hear us: its --iface or a firewall); counted as "
                           f"unconfirmed-heartbeat"]
    assert f"unconfirmed-heartbeat {6 * len(recorded)}" in status_counters(s2.snapshot(17.0))


def test_the_same_recording_is_refused_by_a_server_that_heard_it_as_a_replay():
    recorded = recording_of_server_1()
    s3_like = keyed_server(2)
    for k, data in enumerate(recorded):    # a server that heard the originals (it was named
        hb = decode(data, CLUSTER, KEY)    # in their echoes) refuses them by their seq
        s3_like.datagram(heard_by(s3_like, hb.seq, incarnation=hb.incarnation),
                         ("127.0.0.1", 40001), 1.0 + k)
    assert s3_like.tracker.state(1) == ACTIVE
    for data in recorded:
        hb = decode(data, CLUSTER, KEY)
        s3_like.datagram(heard_by(s3_like, hb.seq, incarnation=hb.incarnation), FORGER, 7.0)
    assert s3_like.dropped["replayed-heartbeat"] == len(recorded)


def test_two_fresh_keyed_servers_believe_each_other_after_one_exchange():
    """A fresh genuine heartbeat is believed: server 2 starts 0.3 s after server 1, hears
    server 1's first heartbeat (which cannot echo it yet), and believes server 1 at its
    next one. Server 2 never answers: server 1 is lower. Nothing is logged as unconfirmed."""
    s1 = keyed_server(1)                                   # its first heartbeat at 0.0
    s2 = CalcServer(2, CLUSTER, Settings(heartbeat_s=1.0, jitter_grace=0.0),
                    rng=random.Random(2), key=KEY)
    first = own_tick(s2, 0.3).sends[0].data                # no echo of s1: not heard yet
    s1.datagram(first, ("127.0.0.1", 40002), 0.301)
    assert s1.tracker.peers[2].last_heard_at is None        # it echoes nobody: unconfirmed
    events = []
    for tick in range(0, 5):
        for server, peer, at in ((s1, s2, tick + 1.0), (s2, s1, tick + 1.3)):
            out = own_tick(server, at)
            events += out.events
            for send in out.sends:
                if send.to == TO_SERVER_GROUP:
                    hb = decode(send.data, CLUSTER, KEY)
                    assert peer.incarnation in hb.echoes or tick == 0
                    events += peer.datagram(send.data, ("127.0.0.1", 40000 + server.index),
                                            at + 0.001).events
        assert not s2.answering
    assert s1.tracker.state(2) == s2.tracker.state(1) == ACTIVE
    assert s1.answering
    assert s1.dropped == {"unconfirmed-heartbeat": 1} and s2.dropped == {}
    assert not [e for e in events if "do not echo" in getattr(e, "text", "")]


def test_a_second_process_on_our_index_is_still_reported_with_a_key():
    """It hears us, so it echoes us: believed enough to be seen as a second process."""
    s1 = keyed_server(1)
    out = s1.datagram(heard_by(s1, 1, index=1, incarnation=9), ("127.0.0.2", 40001), 0.5)
    assert [e.text for e in out.events if "two processes claim index 1" in e.text]
    assert s1.dropped["our-index-elsewhere"] == 1


def test_echoes_are_the_incarnations_heard_within_two_ticks_newest_first():
    s2 = keyed_server(2)
    for at, inc in ((0.1, 5), (0.2, 6), (1.5, 7), (2.5, 6)):
        s2.datagram(encode(Heartbeat(3, inc, int(at * 10), 0, True)), CLIENT, at)
    assert s2.echoes(2.6) == (6, 7)                 # 5 was heard 2.5 s ago: over 2 ticks
    hb = decode(own_tick(s2, 3.0).sends[0].data, CLUSTER, KEY)
    assert hb.echoes == (6, 7) and s2.incarnation not in hb.echoes


def test_a_keyed_heartbeat_with_a_wrong_echo_count_is_malformed_even_with_a_good_tag():
    good = encode(Heartbeat(2, 77, 5, 3, True, (1, 2)))
    body_end = len(good) - TAG_BYTES
    for body, reason in ((good[:body_end - 4], "truncated"), (good[:body_end] + b"xx",
                                                               "malformed"),
                         (good[:body_end - 9], "truncated")):
        resealed = body + hmac.new(KEY, body, hashlib.sha256).digest()
        with pytest.raises(WireError) as caught:
            decode(resealed, CLUSTER, KEY)
        assert caught.value.reason == reason


def test_the_unkeyed_heartbeat_format_is_unchanged():
    hb = Heartbeat(2, 77, 5, 3, True)
    assert encode(hb, key=None) == (b"CaLc\x01\x01\x05keyed" + bytes([2]) +
                                    (77).to_bytes(4, "big") + (5).to_bytes(4, "big") +
                                    (3).to_bytes(4, "big") + b"\x01")
    plain = CalcServer(2, CLUSTER, rng=random.Random(2))
    plain.datagram(encode(Heartbeat(1, 5, 1, 0, True), key=None), CLIENT, 0.1)
    assert plain.tracker.state(1) == ACTIVE          # no echo asked for without a key


def test_a_replayed_request_is_answered_once():
    s1 = keyed_server(1)
    own_tick(s1, 1.0)
    data = encode(Request(99, 1, "2+2"))
    first = s1.datagram(data, CLIENT, 1.1)
    assert [decode(s.data, CLUSTER, KEY).text for s in first.sends] == ["4"]
    assert s1.datagram(data, FORGER, 1.2).sends == []
    assert s1.dropped["replayed-request"] == 1
    retry = s1.datagram(encode(Request(99, 2, "2+2")), CLIENT, 1.6)     # a new attempt
    assert len(retry.sends) == 1 and s1.requests_seen == 2


@given(st.lists(st.tuples(st.sampled_from(range(3)), st.binary(max_size=80),
                          st.integers(0, 2000), st.booleans()), max_size=30))
def test_nothing_sent_without_the_key_changes_any_server_state(forgeries):
    """Genuine datagrams recorded, then cut, extended, re-keyed, or replayed whole."""
    s2 = keyed_server(2)
    s2.datagram(heard_by(s2, 1), ("127.0.0.1", 40001), 0.2)
    own_tick(s2, 1.0)
    genuine = [heard_by(s2, 1), encode(Request(7, 1, "1+1")),
               encode(Answer(7, 1, 1, True, "2"))]
    s2.datagram(genuine[1], CLIENT, 1.1)
    before = state_of(s2, 1.5)
    for which, junk, at, rekey in forgeries:
        data = genuine[which]
        candidates = [data, data[:at % len(data)] + junk, junk, data + junk,
                      encode(decode(data, CLUSTER, KEY), key=OTHER_KEY if rekey else None)]
        for forged in candidates:
            out = s2.datagram(forged, FORGER, 1.5)
            assert out.sends == [] and out.events == []
    assert state_of(s2, 1.5) == before


def test_keyed_and_unkeyed_servers_do_not_hear_each_other():
    keyed = keyed_server(1)
    plain = CalcServer(2, CLUSTER, rng=random.Random(2))
    plain_hb = plain.tick(0.0).sends[0].data
    keyed_hb = keyed.tick(1.0).sends[0].data
    keyed.datagram(plain_hb, ("127.0.0.1", 40002), 1.1)
    plain.datagram(keyed_hb, ("127.0.0.1", 40001), 1.1)
    assert keyed.dropped == {"no-tag": 1} and plain.dropped == {"unexpected-tag": 1}
    assert keyed.tracker.peers[2].last_heard_at is None
    assert plain.tracker.peers[1].last_heard_at is None


# ---- the client: forged answers are refused, and shown as refused ------------------------------

def keyed_client(key=KEY):
    return CalcClientCore(CLUSTER, 0.5, 10.0, random.Random(3), key=key)


def test_a_forged_answer_is_refused_and_the_genuine_one_shown_with_the_refusal():
    c = keyed_client()
    rid, data, _ = c.ask("2+2", 0.0)
    assert decode(data, CLUSTER, KEY) == Request(rid, 1, "2+2")
    assert c.datagram(encode(Answer(rid, 1, 1, True, "5"), key=None), FORGER, 0.001) == []
    assert c.datagram(encode(Answer(rid, 1, 1, True, "5"), key=OTHER_KEY), FORGER, 0.002) == []
    [reply] = c.datagram(encode(Answer(rid, 1, 1, True, "4")), ("127.0.0.1", 40001), 0.003)
    assert (reply.ok, reply.text, reply.server) == (True, "4", 1)
    assert [(r.source, r.reason, r.text) for r in reply.refused] == [
        ("127.0.0.66:6666", "no-tag", "5"), ("127.0.0.66:6666", "bad-tag", "5")]
    lines = format_reply(reply).splitlines()
    assert lines[0].startswith("2+2 = 4    [server 1")
    assert lines[1] == ("  refused an answer from 127.0.0.66:6666 (claiming server 1: '5'): "
                        "no tag: the sender has no --key")
    assert lines[2].endswith("bad tag: another key, or forged")
    import json
    assert json.loads(reply_json(reply))["refused"] == [
        {"from": "127.0.0.66:6666", "reason": "no-tag", "server": 1, "text": "5"},
        {"from": "127.0.0.66:6666", "reason": "bad-tag", "server": 1, "text": "5"}]


def test_an_answer_to_an_attempt_never_sent_or_from_an_impossible_index_is_refused():
    c = CalcClientCore(CLUSTER, 0.5, 10.0, random.Random(3))      # even without a key
    rid, _, _ = c.ask("2+2", 0.0)
    assert c.datagram(encode(Answer(rid, 2, 1, True, "5"), key=None), FORGER, 0.1) == []
    assert c.datagram(encode(Answer(rid, 1, 200, True, "5"), key=None), FORGER, 0.1) == []
    [reply] = c.datagram(encode(Answer(rid, 1, 1, True, "4"), key=None), CLIENT, 0.2)
    assert [r.reason for r in reply.refused] == ["attempt-not-sent", "impossible-server"]


def test_a_replayed_answer_is_never_shown_twice_nor_for_another_request():
    c = keyed_client()
    rid, _, _ = c.ask("2+2", 0.0)
    genuine = encode(Answer(rid, 1, 1, True, "4"))
    assert len(c.datagram(genuine, CLIENT, 0.1)) == 1
    rid2, _, _ = c.ask("3+3", 0.2)
    assert c.datagram(genuine, FORGER, 0.3) == []            # a replay: dropped as a duplicate
    assert c.duplicates == 1 and rid2 in c.pending


def test_a_keyed_client_refuses_unkeyed_servers_and_says_why():
    c = keyed_client()
    rid, _, _ = c.ask("1+1", 0.0)
    c.datagram(encode(Answer(rid, 1, 1, True, "2"), key=None), CLIENT, 0.1)
    _, [expired] = c.tick(10.0)
    assert expired.ok is None and [r.reason for r in expired.refused] == ["no-tag"]
    assert "refused an answer" in format_reply(expired)


# ---- the key file ------------------------------------------------------------------------------

def test_new_key_writes_a_private_random_key_and_never_overwrites(tmp_path):
    path = tmp_path / "calc.key"
    calc_server.write_new_key(str(path))
    assert os.stat(path).st_mode & 0o777 == 0o600
    key = calc_server.load_key(str(path))
    assert len(key) == calc_server.KEY_BYTES
    with pytest.raises(FileExistsError):
        calc_server.write_new_key(str(path))
    assert calc_server.load_key(str(path)) == key
    other = tmp_path / "other.key"
    calc_server.write_new_key(str(other))
    assert calc_server.load_key(str(other)) != key


@pytest.mark.parametrize("content", ["", "# only a comment\n", "not hex at all\n", "abcd\n"])
def test_a_file_that_is_not_a_key_is_refused_with_a_reason(tmp_path, content):
    path = tmp_path / "bad.key"
    path.write_text(content)
    with pytest.raises(ValueError) as caught:
        calc_server.load_key(str(path))
    assert "--new-key" in str(caught.value)
