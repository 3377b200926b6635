"""The ring's wire format (spread_mini: Wire format, daemon-daemon packets): every packet type
round-trips with every field; the strict decoder refuses mangled, truncated and hostile bytes
with a RingWireError (a RingPeerError) and nothing else; counters beyond what the protocol can
add to are refused; the key's tag (--key, keygen) replaces the CRC; the caller's mistakes are
RingUsageErrors. Tier 1: no network, no clock."""
from __future__ import annotations

import hmac
import os
import random
import stat

import pytest
from hypothesis import given, settings, strategies as st

import spread_mini as sr
from ring_sim import CALM, Sim, all_in_one_ring, assert_guarantees, delivered

PEERS = ["d1", "d2", "d3"]
REASON = "stopped by its operator"


# ------------------------------------------------------------------------ wire format

def a_token():
    return sr.RingToken((7, "d1", 3), ("d2", 3), token_id=41, link_seq=90, link_aru=80,
                    flow_control=12, rtr=[81, 85], site_seq=50, site_lts=77, site_aru=70,
                    site_aru_modifier=("d3", 9), retrans_flg=1)


def test_wire_token_round_trip_keeps_every_thesis_field():
    t = sr.decode_ring_packet(sr.encode_ring_token(a_token()))
    assert (t.ring_id, t.sender, t.token_id, t.link_seq, t.link_aru, t.flow_control, t.rtr,
            t.site_seq, t.site_lts, t.site_aru, t.site_aru_modifier, t.retrans_flg) == (
        (7, "d1", 3), ("d2", 3), 41, 90, 80, 12, [81, 85], 50, 77, 70, ("d3", 9), 1)


def test_wire_data_join_commit_merge_round_trip():
    chunk = sr.RingChunk(5, 6, 7, 0, 2, sr.SAFE_MESS, b"half")
    d = sr.decode_ring_packet(sr.encode_ring_data(sr.RingData((1, "a", 1), ("a", 1), 9, [chunk])))
    assert (d.link_seq, d.chunks[0].body, d.chunks[0].frag_count, d.chunks[0].service) == (
        9, b"half", 2, sr.SAFE_MESS)
    wrapped = sr.RingData((2, "b", 1), ("b", 1), 1, inner=d)
    back = sr.decode_ring_packet(sr.encode_ring_data(wrapped))
    assert back.inner.ring_id == (1, "a", 1) and back.inner.chunks[0].body == b"half"
    j = sr.decode_ring_packet(sr.encode_ring_join(sr.RingJoin(("a", 1), 4, [("a", 1), ("b", 2)], [("c", 1)])))
    assert (j.ring_seq, j.proc_set, j.fail_set) == (4, [("a", 1), ("b", 2)], [("c", 1)])
    entry = sr.RingCommitEntry((3, "a", 1), 10, 12, 8, 99)
    c = sr.decode_ring_packet(sr.encode_ring_commit(sr.RingCommit((5, "a", 1), ("a", 1), 2, 1,
                                                         [("a", 1), ("b", 2)], {("a", 1): entry})))
    assert c.entries[("a", 1)].old_high == 12 and c.members == [("a", 1), ("b", 2)]
    m = sr.decode_ring_packet(sr.encode_ring_merge(sr.RingMerge(("a", 1), (5, "a", 1))))
    assert m.ring_id == (5, "a", 1)


def test_wire_unreliable_round_trip_has_no_link_seq():
    chunk = sr.RingChunk(3, 40, 0, 1, 2, sr.UNRELIABLE_MESS, b"tail")
    u = sr.decode_ring_packet(sr.encode_ring_unreliable(sr.RingUnreliable((1, "a", 1), ("b", 2),
                                                                          [chunk])))
    assert isinstance(u, sr.RingUnreliable) and not hasattr(u, "link_seq")
    assert (u.ring_id, u.sender, u.chunks[0].origin_counter, u.chunks[0].body) == (
        (1, "a", 1), ("b", 2), 3, b"tail")


@pytest.mark.parametrize("mangle", [
    lambda raw: raw[:-1],                                    # cut short
    lambda raw: raw + b"\x00",                               # trailing junk
    lambda raw: raw[:20] + bytes([raw[20] ^ 1]) + raw[21:],  # a flipped bit
    lambda raw: b"XXXX" + raw[4:],                           # somebody else's magic
    lambda raw: raw[:4] + bytes([sr.RING_VERSION + 1]) + raw[5:],  # another protocol version
    lambda raw: b"",
])
def test_wire_strict_decoder_rejects_mangled_packets(mangle):
    with pytest.raises(sr.RingWireError):
        sr.decode_ring_packet(mangle(sr.encode_ring_token(a_token())))


def test_wire_random_bytes_only_ever_raise_wire_error():
    hypothesis = pytest.importorskip("hypothesis")
    st = hypothesis.strategies

    @hypothesis.given(st.binary(max_size=300))
    @hypothesis.settings(max_examples=300)
    def check(data):
        try:
            sr.decode_ring_packet(sr.RING_MAGIC + b"\x01" + data)
        except sr.RingWireError:
            pass

    check()


def test_garbage_datagrams_are_dropped_and_counted_never_fatal():
    o = sr.RingOrderer("d1", 1, ["d1", "d2"])
    for junk in [b"", b"hello", sr.RING_MAGIC + b"\x01\x02" + b"\x00" * 40,
                 b"\x80\x00\x00\x80" + b"\x00" * 44]:
        o.receive(junk, ("127.0.0.9", 4803), 0.1)
    assert o.counters["dropped_garbage"] == 4
    assert o.state == sr.GATHER


def test_wire_round_trip_property_for_tokens_and_data():
    hypothesis = pytest.importorskip("hypothesis")
    st = hypothesis.strategies
    names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_", min_size=1, max_size=20)
    # counters travel as u64 but the decoder refuses those beyond MAX_WIRE_COUNTER (the daemon
    # adds to them); rtr entries are only looked up
    pids = st.tuples(names, st.integers(0, sr.MAX_WIRE_COUNTER))
    u64 = st.integers(0, sr.MAX_WIRE_COUNTER)

    @hypothesis.given(pids, pids, u64, u64, st.lists(st.integers(0, 2 ** 64 - 1), max_size=30),
                      st.one_of(st.none(), pids),
                      st.integers(0, 2 ** 32 - 1), st.binary(max_size=2000), st.integers(1, 9))
    @hypothesis.settings(max_examples=200)
    def check(rep, sender, seq, aru_less, rtr, modifier, fcc, body, frags):
        ring_id = (seq, rep[0], rep[1])
        aru = min(seq, aru_less)
        t = sr.RingToken(ring_id, sender, 7, link_seq=seq, link_aru=aru, flow_control=fcc,
                         rtr=rtr, site_seq=aru_less, site_lts=seq, site_aru=aru,
                         site_aru_modifier=modifier, retrans_flg=1)
        back = sr.decode_ring_packet(sr.encode_ring_token(t))
        assert (back.ring_id, back.sender, back.link_seq, back.link_aru, back.rtr,
                back.site_aru_modifier, back.flow_control) == (ring_id, sender, seq, aru, rtr,
                                                                modifier, fcc)
        chunk = sr.RingChunk(aru_less, seq, aru, frags - 1, frags, sr.FIFO_MESS, body)
        d = sr.decode_ring_packet(sr.encode_ring_data(sr.RingData(ring_id, sender, seq, [chunk])))
        assert d.chunks[0].body == body and d.chunks[0].frag_index == frags - 1

    check()


def test_message_body_round_trip_keeps_what_the_group_core_needs():
    msg = sr.DaemonMessage(sr.KILL, "d2", "#bob#d2", sr.SAFE_MESS | sr.SELF_DISCARD, ["g1", "g2"],
                           hint=0x80000180, data=b"\x00payload", reason="not reading")
    back = sr.decode_message_body(sr.encode_message_body(msg), "d2")
    assert (back.kind, back.origin, back.sender, back.service_type, list(back.groups), back.hint,
            back.data, back.reason) == (sr.KILL, "d2", "#bob#d2", sr.SAFE_MESS | sr.SELF_DISCARD,
                                        ["g1", "g2"], 0x80000180, b"\x00payload", "not reading")


def test_wire_leave_round_trip_and_strict_decoding():
    raw = sr.encode_ring_leave(sr.RingLeave(("d3", 7), (4, "d1", 5), REASON))
    p = sr.decode_ring_packet(raw)
    assert isinstance(p, sr.RingLeave) and (p.sender, p.ring_id, p.reason) == (
        ("d3", 7), (4, "d1", 5), REASON)
    head = sr._ring_header(sr.PT_LEAVE) + sr._pid_bytes(("d3", 7)) + sr._ring_id_bytes((4, "d1", 5))
    for bad in (b"\x02\xff\xfe",                      # not UTF-8
                b"\x05ab\x1b[m",                      # a terminal escape code in the reason
                b"\x51" + b"x" * 0x51,                # longer than LEAVE_REASON_MAX_BYTES
                b"\x02ok!",                           # a byte after the reason
                b"\x05ok"):                           # cut short
        with pytest.raises(sr.RingWireError):
            sr.decode_ring_packet(sr._ring_seal(head + bad))
    assert sr.decode_ring_packet(sr._ring_seal(head + b"\x00")).reason == ""


def test_two_error_kinds_caller_mistakes_and_peer_misbehaviour():
    """h11's split: what the caller did wrong is raised to it; what a peer sent is a
    RingPeerError, which the orderer drops and counts (never raised out of receive)."""
    with pytest.raises(sr.RingUsageError):
        sr.RingOrderer("x" * (sr.MAX_NAME_BYTES + 1), 1, [])
    o = sr.RingOrderer("d1", 1, ["d1", "d2"], random.Random(1))
    with pytest.raises(sr.RingUsageError, match="too long"):
        o.submit(sr.DaemonMessage(sr.DATA, "d1", "#c#d1", sr.AGREED_MESS, ["g"],
                                  data=b"x" * (sr.MAX_MESSAGE_BODY_BYTES + 1)))
    with pytest.raises(sr.RingPeerError):
        sr.decode_ring_packet(b"SMRG garbage")
    o.receive(b"SMRG garbage", ("127.0.0.2", 4803), 0.1)
    assert o.counters["dropped_garbage"] == 1
    assert not issubclass(sr.RingUsageError, sr.RingPeerError)
    assert not issubclass(sr.RingPeerError, sr.RingUsageError)


def test_the_wire_refuses_counters_that_the_protocol_would_overflow():
    ring = (3, "d1", 1000)
    for pid, token_id, link_seq in [(("d1", sr.MAX_WIRE_COUNTER + 1), 1, 1),
                                    (("d1", 1000), 2 ** 64 - 1, 1),
                                    (("d1", 1000), 1, 2 ** 64 - 1)]:
        raw = sr.encode_ring_token(sr.RingToken(ring, pid, token_id, link_seq=link_seq))
        try:
            sr.decode_ring_packet(raw)
        except sr.RingWireError:
            continue
        raise AssertionError("accepted %r" % ((pid, token_id, link_seq),))
    ok = sr.decode_ring_packet(sr.encode_ring_token(sr.RingToken(ring, ("d1", 1000), 5, link_seq=9)))
    assert ok.link_seq == 9


# ------------------------------------------------------------------ the decoders behind the CRC

def test_decoders_behind_a_valid_crc_only_ever_raise_wire_error():
    """Random bodies for every packet type, UNRELIABLE and the incarnation notice (a merge)
    included, sealed with a correct CRC so that they reach the field decoders: only
    RingWireError may come out (the CRC alone stops random bytes, not a confused sender)."""
    hypothesis = __import__("hypothesis")
    st = hypothesis.strategies
    ptypes = sorted(sr.PACKET_TYPE_NAMES)

    @hypothesis.given(st.sampled_from(ptypes), st.binary(max_size=400))
    @hypothesis.settings(max_examples=600, deadline=None)
    def check(ptype, body):
        raw = sr._ring_seal(sr._ring_header(ptype) + body)
        try:
            sr.decode_ring_packet(raw)
        except sr.RingWireError:
            pass

    check()

    # and mutations of real packets (close to valid: the interesting ones)
    rng = random.Random(5)
    d1 = ("d1", 1000)
    samples = [
        sr.encode_ring_unreliable(sr.RingUnreliable((3, "d1", 1000), d1, [
            sr.RingChunk(4, 9, 0, 1, 3, sr.UNRELIABLE_MESS, b"abc")])),
        sr.encode_ring_merge(sr.RingMerge(d1, (0, "d2", 900))),
        sr.encode_ring_data(sr.RingData((3, "d1", 1000), d1, 7, [
            sr.RingChunk(4, 9, 2, 0, 1, sr.AGREED_MESS, b"xyz")])),
    ]
    for _ in range(3000):
        raw = bytearray(rng.choice(samples)[:-4])
        for _ in range(rng.randrange(1, 4)):
            raw[rng.randrange(6, len(raw))] = rng.randrange(256)
        try:
            sr.decode_ring_packet(sr._ring_seal(bytes(raw)))
        except sr.RingWireError:
            pass


def _fields(p):
    if isinstance(p, sr.RingToken):
        return tuple(getattr(p, name) for name in sr.RingToken.__slots__)
    return (type(p), p.ring_id, p.sender, p.link_seq, p.inner,
            [(c.origin_counter, c.lts, c.site_seq, c.frag_index, c.frag_count, c.service, c.body)
             for c in p.chunks])


@pytest.mark.parametrize("key", [None, bytes(range(32))])
def test_the_hot_paths_accept_exactly_what_the_general_decoder_accepts(key):
    """decode_ring_packet reads a data packet of a known ring and sender in one pass
    (_decode_plain_data), and a token with its header compared in one piece
    (_decode_plain_token), and leaves everything else to the general decoder: on mutations of
    real data packets and tokens (bytes changed, cut or added, resealed or not) the two agree
    on every field, or the hot path declines and the general one decides."""
    seal = sr.RingSeal(key, sr.configuration_stamp([("d1", "127.0.0.1", 4803)]))
    rng = random.Random(13)
    d1 = ("d1", 1000)
    samples = [sr.encode_ring_data(sr.RingData((3, "d1", 1000), d1, seq, [
        sr.RingChunk(4 + i, 9 + i, 2 + i, i % 2, 1 + i % 2, sr.AGREED_MESS, bytes([i]) * (7 * i))
        for i in range(count)]), seal) for seq, count in ((7, 1), (8, 3), (9, 0))] + [
        sr.encode_ring_token(sr.RingToken((3, "d1", 1000), d1, 41, link_seq=90, link_aru=80,
                                          flow_control=12, rtr=rtr, site_seq=50, site_lts=77,
                                          site_aru=70, site_aru_modifier=modifier), seal)
        for rtr, modifier in (([], None), ([81, 85], ("d3", 9)))]
    took = declined = refused = 0
    kinds = set()
    for n in range(4000):
        raw = bytearray(rng.choice(samples))
        trailer = seal.trailer_bytes
        body = raw[:-trailer]
        for _ in range(rng.randrange(0, 3)):
            kind = rng.randrange(4)
            if kind == 0 and len(body) > 6:
                body[rng.randrange(6, len(body))] = rng.choice([0, 1, 255, rng.randrange(256)])
            elif kind == 1 and body:
                del body[rng.randrange(len(body)):]
            elif kind == 2:
                body += bytes(rng.randrange(1, 9))
        raw = bytes(body) + bytes(raw[-trailer:]) if n % 5 == 0 else seal.seal(bytes(body))
        try:
            general = sr._decode_any_packet(raw, seal)
        except sr.RingWireError as e:
            general = e
        if len(raw) <= sr.RING_HEADER_BYTES:
            continue
        hot_path = sr._decode_plain_token if raw[5] == sr.PT_TOKEN else sr._decode_plain_data
        try:
            fast = hot_path(raw, seal)
        except sr.RingWireError as e:  # only the key's own refusal, the general path's first
            assert isinstance(general, sr.RingWireError) and str(e) == str(general)
            refused += 1
            continue
        if fast is None:
            declined += 1
            continue
        took += 1
        assert not isinstance(general, Exception), "the hot path took what the general refused"
        assert _fields(fast) == _fields(general) and getattr(fast, "_raw", raw) == raw
        kinds.add(type(fast))
    assert took > 100 and declined > 100 and len(kinds) == 2, (took, declined, refused, kinds)


def test_a_join_or_leave_that_names_no_group_is_refused_not_delivered():
    """Was: such a message (never sent by our daemons; a confused one could) went up to the
    group core, which reads groups[0]: IndexError at every daemon of the ring at once."""
    for kind in (sr.JOIN, sr.LEAVE, sr.STATE):
        msg = sr.DaemonMessage(kind, "d1", "#c#d1", sr.AGREED_MESS, [], data=b"")
        try:
            sr.decode_message_body(sr.encode_message_body(msg), "d1")
        except sr.RingWireError:
            continue
        raise AssertionError("%s without a group was accepted" % kind)
    sim = Sim(3, daemons=3, faults=CALM, group_cores=True)
    assert sim.run_until(3.0, stop=lambda: all_in_one_ring(sim))
    d1 = sim.nodes["d1"][0]
    d1.submit(sr.DaemonMessage(sr.JOIN, "d1", "#c#d1", sr.AGREED_MESS, [], data=b""))
    sim.run_until(sim.now + 1.0)
    assert all(o.counters["undecodable_messages"] == 1 for o, _ in sim.nodes.values())


KEY = b"k" * 32


def keyed(key, daemons=(), settings=None):
    return sr.RingSeal(key, sr.configuration_stamp(daemons, settings) if daemons else None)


def a_join(sender=("d2", 7), seal=None):
    return sr.encode_ring_join(sr.RingJoin(sender, 0, [sender], []), seal)


# ------------------------------------------------------------------ the key's tag

def test_a_keyed_packet_round_trips_and_carries_a_16_byte_tag_instead_of_the_crc():
    seal = keyed(KEY)
    raw = a_join(seal=seal)
    assert len(raw) == len(a_join()) - 4 + sr.RING_TAG_BYTES
    assert sr.decode_ring_packet(raw, seal).sender == ("d2", 7)


@settings(max_examples=60, deadline=None)
@given(key=st.binary(min_size=16, max_size=200), body=st.binary(max_size=3000))
def test_the_tag_is_the_standard_hmac_sha256_of_the_packet_cut_to_16_bytes(key, body):
    # the seal hashes the key's pads once; what it appends must still be plain HMAC-SHA256
    # (keys longer than SHA-256's 64-byte block included), so any tool can check our packets
    packet = keyed(key).seal(body)
    assert packet[:-sr.RING_TAG_BYTES] == body
    assert packet[-sr.RING_TAG_BYTES:] == hmac.digest(key, body, "sha256")[:sr.RING_TAG_BYTES]


@pytest.mark.parametrize("sender_seal, receiver_seal, reason", [
    (keyed(b"x" * 32), keyed(KEY), "bad_tag"),      # another key
    (None, keyed(KEY), "no_tag"),                    # no key at all
    (keyed(KEY), None, "unexpected_tag"),            # we have no key, it has one
])
def test_packets_without_a_valid_tag_are_refused_with_their_reason(sender_seal, receiver_seal,
                                                                   reason):
    with pytest.raises(sr.RingWireError) as info:
        sr.decode_ring_packet(a_join(seal=sender_seal), receiver_seal)
    assert info.value.reason == reason


def test_an_altered_keyed_packet_fails_its_tag_even_with_its_checksum_recomputed():
    seal = keyed(KEY)
    raw = bytearray(a_join(seal=seal))
    raw[20] ^= 1
    with pytest.raises(sr.RingWireError) as info:
        sr.decode_ring_packet(bytes(raw), seal)
    assert info.value.reason == "bad_tag"


def test_a_keyed_orderer_counts_refused_packets_by_reason_and_stays_in_its_ring():
    o = sr.RingOrderer("d1", 1, PEERS, seal=keyed(KEY))
    o.receive(a_join(), "d2", 0.1)
    o.receive(a_join(seal=keyed(b"y" * 32)), "d2", 0.1)
    o.receive(b"junk", "d2", 0.1)
    assert (o.counters["dropped_no_tag"], o.counters["dropped_bad_tag"],
            o.counters["dropped_garbage"]) == (1, 1, 1)
    assert o.joins == {} and o.counters["joins_received"] == 0
    rows = dict(sr.ring_status_rows(o.snapshot()))
    assert rows["dropped: no / wrong / unexpected tag"] == "1 / 1 / 0"
    assert rows["daemon key"].startswith("HMAC-SHA256")


def test_a_ring_of_keyed_daemons_forms_and_delivers_in_the_simulator():
    sim = Sim(4, daemons=3, faults=CALM, key=KEY)
    assert sim.run_until(3.0, stop=lambda: all_in_one_ring(sim))
    serial = sim.submit("d1", sr.SAFE_MESS)
    sim.run_until(sim.now + 0.5)
    assert all(serial in delivered(sim, n) for n in PEERS)
    assert_guarantees(sim)


def test_keygen_writes_a_random_key_for_its_owner_only_and_never_overwrites(tmp_path):
    path = str(tmp_path / "ring.key")
    assert sr.main(["keygen", path]) == 0
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    key = sr.read_key_file(path)
    assert len(key) == sr.RING_KEY_BYTES
    assert sr.main(["keygen", path]) == 2
    assert sr.read_key_file(path) == key
    other = str(tmp_path / "other.key")
    sr.write_key_file(other)
    assert sr.read_key_file(other) != key


def test_a_short_or_missing_key_file_is_refused_with_the_way_to_make_one(tmp_path):
    short = tmp_path / "short.key"
    short.write_bytes(b"abc")
    with pytest.raises(ValueError, match="keygen"):
        sr.read_key_file(str(short))
    with pytest.raises(ValueError, match="cannot read"):
        sr.read_key_file(str(tmp_path / "none.key"))


def test_data_travels_in_the_client_format_and_is_delivered_without_encoding_it_again():
    raw = sr.encode_message(sr.AGREED_MESS, "#bob#d1", ["g1", "g2"], sr.make_hint(7), b"\x00hello")
    msg = sr.Multicast(sr.DATA, "d1", "#bob#d1", sr.AGREED_MESS, ["g1", "g2"], sr.make_hint(7), None, raw)
    body = sr.encode_message_body(msg)
    assert body[0] == sr.RING_WIRE_DATA and body[1:] == raw
    back = sr.decode_message_body(body, "d1")
    assert back.raw == raw  # what every client of every daemon gets, as it came in
    assert (back.kind, back.origin, back.sender, back.service_type, list(back.groups), back.hint,
            back.data) == (sr.DATA, "d1", "#bob#d1", sr.AGREED_MESS, ["g1", "g2"], sr.make_hint(7), b"\x00hello")


def test_data_from_a_daemon_of_the_other_byte_order_is_read_and_given_to_clients_in_ours():
    hint = sr.make_hint(3)
    ours = sr.encode_message(sr.SAFE_MESS | sr.SELF_DISCARD, "#al#d2", ["g"], hint, b"xyz")
    other_marker = sr.ENDIAN_TYPE ^ sr.MY_ENDIAN_MARKER
    theirs = sr.HEADER_SWAPPED.pack(sr.SAFE_MESS | sr.SELF_DISCARD | other_marker, sr.pad_name("#al#d2"),
                                    1, hint, 3) + sr.pad_name("g") + b"xyz"
    back = sr.decode_message_body(b"\x80" + theirs, "d2")
    assert (back.sender, back.service_type, list(back.groups), back.data) == (
        "#al#d2", sr.SAFE_MESS | sr.SELF_DISCARD, ["g"], b"xyz")
    # in our order, but the hint's raw bits as the client sent them (its reader flips it)
    out = back.wire()
    assert out[:40] == ours[:40] and out[44:] == ours[44:] and out[40:44] == theirs[40:44]


def test_a_client_format_body_that_does_not_add_up_is_refused():
    raw = sr.encode_message(sr.AGREED_MESS, "#bob#d1", ["g1"], sr.make_hint(0), b"12345")
    for bad in (raw[:-1], raw + b"!", raw[:40], sr.encode_message(sr.JOIN_MESS, "#bob#d1", ["g1"], 0, b""),
                raw[:36] + sr.INT32.pack(sr.MAX_GROUPS + 1) + raw[40:]):
        try:
            sr.decode_message_body(b"\x80" + bad, "d1")
        except sr.RingWireError:
            continue
        raise AssertionError("accepted %r" % bad)


def test_data_whose_names_do_not_fit_the_client_format_goes_field_by_field():
    msg = sr.DaemonMessage(sr.DATA, "d1", "#" + "x" * 40, sr.FIFO_MESS, ["g"], data=b"d")
    body = sr.encode_message_body(msg)
    assert body[0] != sr.RING_WIRE_DATA
    assert sr.decode_message_body(body, "d1").sender == "#" + "x" * 40
