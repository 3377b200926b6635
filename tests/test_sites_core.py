"""The wide-area pieces one at a time, with a fake clock (thesis 7.3.3): site records and HELLO
on the wire (and what a forger's bytes do: nothing but a counter), and one SiteGateway fed
by hand with what its ring would deliver, to see the frontier rule, the merge and the gate."""
from __future__ import annotations

import collections
import random
import struct

import pytest

import spread_mini as sr

SITES = [["a1", "a2"], ["b1"]]
COSTS = [[0, 1], [1, 0]]


def gateway(name="a1"):
    orderer = sr.RingOrderer(name, 1, SITES[0] if name.startswith("a") else SITES[1],
                             random.Random(1))
    return sr.SiteGateway(name, SITES, COSTS, orderer, sr.HopSettings())


def regular(gw, members, now=0.0):
    gw.ring_output(sr.ConfigurationChange(sr.CONF_REGULAR, members, members, (1, members[0])), now)


def carrier(records, lts, origin="a1"):
    """A SITES message as the ring would deliver it, with its ring lts."""
    msg = sr.DaemonMessage(sr.SITES, origin, "", sr.AGREED_MESS, [], data=sr.encode_site_records(records))
    msg.lts = lts
    return sr.Deliver(msg)


def remote(site_seq, lts, data=b"hello", service=sr.AGREED_MESS, site=1, origin="b1"):
    body = sr.encode_message_body(sr.DaemonMessage(sr.DATA, origin, "#c#" + origin, service, ["g"], data=data))
    return sr.SiteRecord(sr.SITE_MSG, site, lts, site_seq, service, origin, body)


def local(lts, data=b"mine", service=sr.AGREED_MESS, origin="a2"):
    msg = sr.DaemonMessage(sr.DATA, origin, "#c#" + origin, service, ["g"], data=data)
    msg.lts = lts
    return sr.Deliver(msg)


def delivered(gw):
    return [o.msg.data for o in gw.poll() if isinstance(o, sr.Deliver)]


# ---- the wire --------------------------------------------------------------------------------

def test_records_cross_in_any_cut_of_the_byte_stream():
    records = [remote(1, 5, b"x" * 3000), sr.SiteRecord(sr.SITE_FRONTIER, 1, 9),
               sr.SiteRecord(sr.SITE_ARU, 0, 4),
               sr.SiteRecord(sr.SITE_PROPOSE, 1, 12, 2, body=sr.encode_site_view_body({0}, {1: (3, 2, 7)}))]
    raw = sr.encode_site_records(records)
    for step in (1, 7, 1000, len(raw)):
        reader, out = sr.SiteRecordReader(), []
        for i in range(0, len(raw), step):
            out += reader.feed(raw[i:i + step])
        assert out == records and reader.pending_bytes() == 0


def test_a_proposal_carries_merge_bases_and_a_body_with_bytes_after_them_is_refused():
    body = sr.encode_site_view_body({2}, {0: (3, 2, 7), 1: (9, 4, 8)}, {1: 6, 2: 41})
    assert sr.decode_site_view_body(body) == (frozenset({2}), {0: (3, 2, 7), 1: (9, 4, 8)})
    assert sr.decode_site_view_bases(body) == {1: 6, 2: 41}
    plain = sr.encode_site_view_body({2}, {0: (3, 2, 7)})
    assert sr.decode_site_view_bases(plain) == {}
    for bad in (body + b"\x00", body[:-1], plain + b"\x00"):
        with pytest.raises(sr.RingWireError):
            sr.decode_site_view_body(bad)
    record = sr.SiteRecord(sr.SITE_PROPOSE, 1, 12, 2, body=body)
    assert sr.SiteRecordReader().feed(sr.encode_site_record(record)) == [record]


@pytest.mark.parametrize("raw, why", [
    (b"\xff\xff\xff\xff", "a length prefix of more than 3 bytes"),
    (sr.encode_varint(sr.MAX_SITE_RECORD_BYTES + 1), "a length beyond any record"),
    (b"\x02\x02\x00", "shorter than its header"),
    (b"\x03\x09\x00\x01", "an unknown kind"),
    (b"\x04" + bytes([sr.SITE_FRONTIER]) + sr.encode_varint(sr.MAX_SITES + 1) + b"\x01", "a site beyond MAX_SITES"),
    (b"\x04" + bytes([sr.SITE_FRONTIER]) + b"\x80\x00\x01", "a varint not in its shortest form"),
    (b"\x0b" + bytes([sr.SITE_FRONTIER]) + b"\x00" + b"\xff" * 8 + b"\x01", "an lts beyond MAX_WIRE_COUNTER"),
    (b"\x04" + bytes([sr.SITE_FRONTIER]) + b"\x00\x01\x00", "a byte after a FRONTIER"),
    (b"\x04" + bytes([sr.SITE_MSG]) + b"\x00\x01\x01", "a MSG record cut short"),
    (b"\x06" + bytes([sr.SITE_UNRELIABLE]) + b"\x01\x00\x00\x01\x09", "an UNRELIABLE record's origin cut short"),
])
def test_a_stream_that_cannot_be_records_is_refused(raw, why):
    with pytest.raises(sr.RingWireError):
        sr.SiteRecordReader().feed(raw)


def _client_body(rng, order="="):
    """A client-format body (RING_WIRE_DATA) as a client of either byte order writes it."""
    groups = [rng.choice(["g", "gp", "a" * 31, "#x#y"]) for _ in range(rng.choice([0, 1, 1, 2, 5]))]
    data = bytes(rng.randrange(256) for _ in range(rng.choice([0, 1, 100, 1000])))
    service = rng.choice([sr.AGREED_MESS, sr.SAFE_MESS, sr.FIFO_MESS | sr.SELF_DISCARD])
    marker = sr.ENDIAN_TYPE if order == "<" else 0
    head = struct.pack(order + "I32siIi", service | marker, sr.pad_name("#s#" + "d" * rng.randrange(1, 20)),
                       len(groups), rng.getrandbits(32), len(data))
    return b"\x80" + head + b"".join(sr.pad_name(g) for g in groups) + data


def _random_record(rng):
    kind = rng.choice(list(sr.SITE_RECORD_KINDS))
    site, lts = rng.randrange(sr.MAX_SITES + 1), rng.choice([1, 127, 128, 2 ** 21, sr.MAX_WIRE_COUNTER])
    seq = rng.choice([1, 300, sr.MAX_WIRE_COUNTER])
    if kind == sr.SITE_FRONTIER:
        return sr.SiteRecord(kind, site, lts, rng.choice([0, seq]))
    if kind in (sr.SITE_ARU, sr.SITE_EPOCH):
        return sr.SiteRecord(kind, site, lts, seq)
    if kind in sr.SITE_BODY_KINDS:
        return sr.SiteRecord(kind, site, lts, seq, body=sr.encode_site_view_body({1, 3}, {0: (4, 5, 6)}))
    body = rng.choice([_client_body(rng, "<"), _client_body(rng, ">"),
                       sr.encode_message_body(sr.DaemonMessage(sr.JOIN, "a1", "#c#a1", 0, ["g"]))])
    if kind == sr.SITE_UNRELIABLE:  # outside every order: no lts, no site_seq
        service = rng.choice([sr.UNRELIABLE_MESS, sr.UNRELIABLE_MESS | sr.SELF_DISCARD])
        return sr.SiteRecord(kind, site, 0, 0, service, "a1", body)
    return sr.SiteRecord(kind, site, lts, seq, rng.choice([sr.AGREED_MESS, 0xFFFFFFFF]), "a1", body)


def _unreliable_raw(lts, site_seq, service):
    """An UNRELIABLE record as a forger might write it (the encoder writes what it is given)."""
    raw = b"".join([bytes([sr.SITE_UNRELIABLE]), b"\x01", sr.encode_varint(lts), sr.encode_varint(site_seq),
                    sr.encode_varint(service), sr._ring_name_bytes("b1"), b"\x80body"])
    return sr.encode_varint(len(raw)) + raw


@pytest.mark.parametrize("raw, why", [
    (_unreliable_raw(5, 0, sr.UNRELIABLE_MESS), "an lts: it takes no place in any order"),
    (_unreliable_raw(0, 3, sr.UNRELIABLE_MESS), "a site_seq: it is outside its site's stream"),
    (_unreliable_raw(0, 0, sr.AGREED_MESS), "an ordered service"),
    (_unreliable_raw(0, 0, sr.UNRELIABLE_MESS | sr.SAFE_MESS), "UNRELIABLE with SAFE"),
])
def test_an_unreliable_record_that_claims_an_order_is_refused(raw, why):
    with pytest.raises(sr.RingWireError):
        sr.decode_site_records(raw)
    assert sr.decode_site_records(_unreliable_raw(0, 0, sr.UNRELIABLE_MESS))[0].kind == sr.SITE_UNRELIABLE


@pytest.mark.parametrize("seed", range(20))
def test_records_round_trip_byte_for_byte(seed):
    """Whatever a record holds (client bodies of both byte orders, other bodies, the largest
    numbers), the far end reads back the very record, and its body the very bytes."""
    rng = random.Random(seed)
    records = [_random_record(rng) for _ in range(30)]
    raw = sr.encode_site_records(records)
    assert sr.decode_site_records(raw) == records
    for r in records:
        if r.kind == sr.SITE_MSG and r.body[0] == sr.RING_WIRE_DATA:
            lean = sr.lean_message_body(r.body)
            assert lean[0] == sr.RING_WIRE_LEAN and sr.full_message_body(lean) == r.body
            assert len(lean) < len(r.body), "the padding stays home"


def test_a_client_body_that_only_the_padded_form_can_say_crosses_as_it_is():
    """Bytes after a name's NUL (a client may send them), or a header whose counts do not add
    up: the body crosses unchanged, still byte for byte."""
    body = bytearray(_client_body(random.Random(1)))
    body[1 + 4 + 20] = ord("z")  # after the sender's NUL
    odd = [bytes(body), b"\x80" + b"\x01" * 60, b"\x80short"]
    for b in odd:
        assert sr.lean_message_body(b) == b
        r = sr.SiteRecord(sr.SITE_MSG, 1, 5, 1, sr.AGREED_MESS, "b1", b)
        assert sr.decode_site_records(sr.encode_site_record(r)) == [r]


@pytest.mark.parametrize("lean, why", [
    (b"\x81" + b"\x00" * 8 + b"\x20" + b"a" * 32 + b"\x00", "a sender of 32 bytes"),
    (b"\x81" + b"\x00" * 8 + b"\x02a\x00\x00", "a NUL in a name"),
    (b"\x81" + b"\x00" * 8 + b"\x01a\x65" + b"\x01g" * 101, "101 groups"),
    (b"\x81" + b"\x00" * 8 + b"\x01a\x02\x01g", "a group missing"),
    (b"\x81" + b"\x00" * 5, "a header cut short"),
])
def test_a_forged_lean_message_is_refused(lean, why):
    raw = b"".join([bytes([sr.SITE_MSG]), b"\x01\x05\x01\x04", sr._ring_name_bytes("b1"), lean])
    with pytest.raises(sr.RingWireError):
        sr.decode_site_records(sr.encode_varint(len(raw)) + raw)


@pytest.mark.parametrize("seed", range(10))
def test_garbage_in_any_field_is_a_wire_error_or_records_never_a_crash(seed):
    """Every byte of a lean stream flipped, cut or inserted at random: the reader refuses it
    (RingWireError) or reads records, nothing else."""
    rng = random.Random(1000 + seed)
    raw = sr.encode_site_records([_random_record(rng) for _ in range(5)])
    outcomes = collections.Counter()
    for _ in range(300):
        bad = bytearray(raw)
        for _ in range(rng.randrange(1, 4)):
            at = rng.randrange(len(bad))
            choice = rng.random()
            if choice < 0.6:
                bad[at] = rng.randrange(256)
            elif choice < 0.8:
                del bad[at]
            else:
                bad.insert(at, rng.randrange(256))
        try:
            sr.decode_site_records(bytes(bad))
            outcomes["read"] += 1
        except sr.RingWireError:
            outcomes["refused"] += 1
    assert outcomes["refused"] > 0 and sum(outcomes.values()) == 300


def test_a_sites_message_cut_short_is_refused():
    raw = sr.encode_site_records([remote(1, 5)])
    with pytest.raises(sr.RingWireError):
        sr.decode_site_records(raw[:-1])


def test_hello_round_trip_and_garbage():
    hello = sr.SiteHello(("b1", 1000), 1, True, {0: 4, 1: 9}, 3, (0, 1), 7, 1796472668982)
    raw = sr.encode_site_hello(hello)
    assert sr.decode_site_hello(raw) == hello and sr.hop_packet_type(raw) == sr.PT_SITE_HELLO
    with pytest.raises(sr.RingWireError):
        sr.decode_site_hello(raw[:-5] + raw[-4:])  # a byte missing: the CRC fails
    with pytest.raises(sr.RingWireError):
        sr.decode_site_hello(sr.encode_hop_ack(("b1", 1), 0, 0))
    assert sr.hop_packet_type(b"not ours") is None


# ---- one gateway, fed by hand ------------------------------------------------------------------

def test_a_remote_message_waits_for_our_frontier_and_our_site_answers_once():
    gw = gateway()
    regular(gw, ["a1", "a2"])
    gw.poll()
    # b's message (lts 10) arrives in our ring inside a SITES message whose ring lts is 11
    gw.ring_output(carrier([remote(1, 10, b"from b")], 11), 1.0)
    assert delivered(gw) == [b"from b"]  # our frontier (11) passed it, b's (10) is its own
    assert gw.frontier_answered == 11
    gw.ring_output(carrier([remote(2, 12, b"again")], 13), 1.1)
    assert gw.frontier_answered == 13 and delivered(gw) == [b"again"]
    gw.ring_output(carrier([sr.SiteRecord(sr.SITE_FRONTIER, 1, 20)], 14), 1.2)
    assert gw.frontier_answered == 13  # a frontier is not a message: nothing to answer


def test_our_message_waits_for_the_other_sites_frontier():
    gw = gateway()
    regular(gw, ["a1", "a2"])
    gw.ring_output(local(5), 1.0)
    assert delivered(gw) == []  # b might still send something with lts <= 5
    gw.ring_output(carrier([sr.SiteRecord(sr.SITE_FRONTIER, 1, 5)], 6), 1.1)
    assert delivered(gw) == [b"mine"]


def test_safe_waits_for_the_global_aru():
    gw = gateway()
    regular(gw, ["a1", "a2"])
    gw.ring_output(carrier([remote(1, 10, b"safe", sr.SAFE_MESS)], 11), 1.0)
    assert delivered(gw) == []
    gw.ring_output(carrier([sr.SiteRecord(sr.SITE_ARU, 1, 10)], 12), 1.1)
    assert delivered(gw) == []  # b holds it; our site has not said so
    gw.ring_output(carrier([sr.SiteRecord(sr.SITE_ARU, 0, 10)], 13), 1.2)
    assert delivered(gw) == [b"safe"]


def test_our_stream_lts_keeps_growing_when_a_new_ring_starts_lower():
    gw = gateway()
    regular(gw, ["a1", "a2"])
    gw.ring_output(local(40, b"old ring"), 1.0)
    gw.ring_output(local(37, b"new ring"), 2.0)  # a new ring whose start lts was lower
    kept = gw.kept[0]
    assert [r.lts for r in kept] == [40, 41] and [r.site_seq for r in kept] == [1, 2]


def test_the_representative_forwards_only_what_its_ring_made_safe():
    gw = gateway()
    regular(gw, ["a1", "a2"])
    gw._start_link(1, ("b1", 1), {}, 0.0, 0)
    gw.orderer.ring.safe_lts = 0
    gw.ring_output(local(5), 0.1)
    assert gw.counters["site_records_forwarded"] == 0 and gw.passed_seq[0] == 0
    gw.orderer.ring.safe_lts = 5  # every daemon of the site holds it now
    gw.tick(0.2)
    assert gw.counters["site_records_forwarded"] == 1 and gw.passed_seq[0] == 1
    sends = [o for o in gw.poll() if isinstance(o, sr.SendHop)]
    assert sends and all(o.dest == "b1" for o in sends)


def test_forged_and_misplaced_input_changes_nothing_but_counters():
    gw = gateway()
    regular(gw, ["a1", "a2"])
    before = (dict(gw.applied_seq), gw.frontier_answered)
    gw.hop_datagram("b1", b"\x00garbage", 1.0)  # no link to b1 yet
    gw.hop_datagram("b1", sr.encode_site_hello(sr.SiteHello(("zz", 1), 7, True, {})), 1.0)
    gw.hop_datagram("b1", sr.encode_site_hello(sr.SiteHello(("a2", 1), 0, True, {})), 1.0)  # our own site
    gw.ring_output(_bad_carrier(), 1.0)  # a SITES message that does not decode
    gw.ring_output(carrier([remote(5, 10)], 4), 1.0)  # b's site_seq 5 before 1..4
    assert gw.counters["hop_dropped_not_a_link"] == 1
    assert gw.counters["hellos_not_a_neighbour"] == 2
    assert gw.counters["site_records_undecodable"] == 1
    assert gw.counters["site_records_out_of_order"] == 1
    assert (dict(gw.applied_seq), gw.frontier_answered) == before


def _bad_carrier():
    msg = sr.DaemonMessage(sr.SITES, "a1", "", sr.AGREED_MESS, [], data=b"\x00\x00\x00\x05junk")
    msg.lts = 3
    return sr.Deliver(msg)


def test_a_hello_starts_a_link_and_sends_what_the_peer_lacks():
    gw = gateway()
    regular(gw, ["a1", "a2"])
    gw.orderer.ring.safe_lts = 100
    for lts in (5, 6, 7):
        gw.ring_output(local(lts, b"m%d" % lts), 1.0)
    gw.hop_datagram("b1", sr.encode_site_hello(sr.SiteHello(("b1", 1), 1, True, {0: 1}, 0, (0, 1))), 1.2)
    assert gw.links[1].peer == ("b1", 1)
    assert gw.counters["site_records_resent"] == 2  # b has our first message: seq 2 and 3 again
    answers = [sr.decode_site_hello(o.packet) for o in gw.poll()
               if isinstance(o, sr.SendHop) and sr.hop_packet_type(o.packet) == sr.PT_SITE_HELLO]
    assert answers and not answers[-1].request and answers[-1].positions[0] == 3


def test_what_every_site_holds_is_no_longer_kept():
    import sites_sim
    sim = sites_sim.SitesSim(2)
    assert sim.case.site_kill_after_s is None and sim.case.rep_crash_after_s is None
    res = sim.run()
    assert res.violations == [], res.summary()
    total = len(sim.submitted)
    for name, node in sim.nodes.items():
        kept = sum(len(k) for k in node.gateway.kept.values())
        dropped = sum(node.gateway.kept_base.values())
        assert dropped > 0 and kept + dropped == total and kept < total / 2, (name, kept, dropped, total)


def test_view_records_and_a_tagged_aru_cross_the_wire():
    records = [sr.SiteRecord(sr.SITE_JOIN, 0, 0, 4, body=sr.encode_site_view_body({0, 1}, {})),
               sr.SiteRecord(sr.SITE_MERGE, 1, 33, 4, body=sr.encode_site_view_body({0, 1}, {})),
               sr.SiteRecord(sr.SITE_READY, 1, 40, 4, body=sr.encode_site_view_body({0, 1}, {})),
               sr.SiteRecord(sr.SITE_GIVEUP, 0, 0, 4, body=sr.encode_site_view_body({0, 1}, {})),
               sr.SiteRecord(sr.SITE_ARU, 1, 20, 4)]
    assert sr.decode_site_records(sr.encode_site_records(records)) == records


def test_a_hello_request_of_a_new_session_restarts_our_end_of_the_link():
    """The peer's end died (its dead-peer rule fired first) and it asks again with a new
    session: our end starts afresh (else its new packets would read as our old stream); a late
    copy of the request that started our end changes nothing."""
    gw = gateway()
    regular(gw, ["a1", "a2"])
    gw.poll()
    gw.hop_datagram("b1", sr.encode_site_hello(sr.SiteHello(("b1", 1), 1, True, {}, 0, (0, 1), 1)), 0.1)
    first = gw.links[1]
    assert (first.peer_session, gw.poll() != []) == (1, True)
    gw.hop_datagram("b1", sr.encode_site_hello(sr.SiteHello(("b1", 1), 1, True, {}, 0, (0, 1), 1)), 0.2)
    assert gw.links[1] is first  # a late copy: answered, nothing restarted
    gw.hop_datagram("b1", sr.encode_site_hello(sr.SiteHello(("b1", 1), 1, True, {}, 0, (0, 1), 2)), 0.3)
    second = gw.links[1]
    assert second is not first and second.peer_session == 2 and second.session == first.session + 1
    # a packet of the peer's old end is a stranger's to the new one
    old = sr.encode_hop_data(("b1", 1), 1, b"old stream", session=1)
    gw.hop_datagram("b1", old, 0.4)
    assert second.counters["dropped_old_session"] == 1


def test_a_hello_of_another_epoch_is_a_restarted_site_never_a_takeover():
    """Site b's daemons were all restarted and started afresh (a new epoch): their site_seq
    1, 2, 3... are not the rest of the stream we read, so no link starts; a new representative
    of b's old epoch still takes over; the epoch reaches every daemon of our site through our
    ring (an EPOCH record, never passed on), so a later representative of ours knows it too."""
    gw = gateway()
    regular(gw, ["a1", "a2"])
    into_ring = []
    gw.orderer.submit = lambda msg, urgent=False: into_ring.append(msg) or True
    gw.hop_datagram("b1", sr.encode_site_hello(sr.SiteHello(("b1", 1), 1, True, {}, 0, (0, 1), 1, 7)), 0.1)
    assert gw.links[1].peer == ("b1", 1) and gw.site_epochs == {1: 7}
    submitted = [r for m in into_ring if m.kind == sr.SITES
                 for r in sr.decode_site_records(m.data) if r.kind == sr.SITE_EPOCH]
    assert [(r.site, r.site_seq) for r in submitted] == [(1, 7)]
    gw.hop_datagram("b1", sr.encode_site_hello(sr.SiteHello(("b1", 2), 1, True, {1: 1}, 0, (0, 1), 1, 9)), 0.2)
    assert gw.links[1].peer == ("b1", 1) and gw.counters["hellos_new_incarnation"] == 1
    assert any("new incarnation (epoch 9, we read epoch 7)" in line for line in gw.log)
    # another daemon of our site learns it where the ring delivers the record
    other = gateway("a2")
    regular(other, ["a1", "a2"])
    other.ring_output(carrier([sr.SiteRecord(sr.SITE_EPOCH, 1, 0, 7)], 3), 0.3)
    assert other.site_epochs == {1: 7} and other.export_state()["site_epochs"] == {"1": 7}
    assert sr.decode_site_records(sr.encode_site_records(submitted)) == submitted


def test_a_hello_from_a_site_that_left_us_out_starts_no_link():
    gw = gateway()
    regular(gw, ["a1", "a2"])
    gw.poll()
    gw.hop_datagram("b1", sr.encode_site_hello(sr.SiteHello(("b1", 1), 1, True, {}, 1, (1,), 1)), 0.1)
    assert gw.links == {} and gw.counters["hellos_left_out"] == 1



# ---- a representative that takes over: when it suspects a silent site ------------------------

SILENCE_S = sr.HopSettings().peer_silence_s


def taken_over(heard_at=None, now=5.0):
    """a2 in a ring with a1 (a1 represents site 0); our ring delivers b's message at heard_at
    (never, with None); a1 dies and a2 takes over at `now`."""
    gw = gateway("a2")
    regular(gw, ["a1", "a2"])
    if heard_at is not None:
        gw.ring_output(carrier([remote(1, 5)], 6), heard_at)
    regular(gw, ["a2"], now)
    assert gw.is_representative() and gw.wide
    return gw


def test_a_takeover_counts_a_sites_silence_from_the_last_record_our_ring_delivered():
    """The site went silent at 1.0 (its last record in our ring): the new representative
    suspects it when a link to it would have, not a silence and a grace after the takeover."""
    heard_at, now = 1.0, 2.1
    gw = taken_over(heard_at, now)
    assert gw.suspect_at[1] == pytest.approx(heard_at + SILENCE_S + sr.SITE_GRACE_S)
    assert gw.suspect_at[1] < now + SILENCE_S + sr.SITE_GRACE_S


def test_a_takeover_gives_a_site_heard_long_ago_time_for_its_hello_and_one_never_heard_all_of_it():
    gw = taken_over(heard_at=0.5, now=5.0)
    assert gw.suspect_at[1] == pytest.approx(5.0 + sr.SITE_HELLO_WAIT_S)
    gw = taken_over(heard_at=None, now=5.0)  # (nothing says how long it has been silent)
    assert gw.suspect_at[1] == pytest.approx(5.0 + SILENCE_S + sr.SITE_GRACE_S)
    # its HELLO in time starts the link and ends the suspicion
    gw.hop_datagram("b1", sr.encode_site_hello(sr.SiteHello(("b1", 1), 1, False, {}, 0, (0, 1), 1)), 5.2)
    assert 1 in gw.links and 1 not in gw.suspect_at


def test_a_takeover_keeps_the_links_our_site_reported_down_until_they_start():
    """Our old representative reported its link to b down (a LINKS record, in our ring): the
    new one must not report it up before it runs (the others would route through us), and the
    report dates b's silence (the link had heard nothing for its silence time)."""
    gw = gateway("a2")
    regular(gw, ["a1", "a2"])
    gw.ring_output(carrier([sr._links_record(0, 1, (), (1,))], 6), 3.0)
    assert gw.heard_s[1] == pytest.approx(3.0 - SILENCE_S)
    into_ring = []
    gw.orderer.submit = lambda msg, urgent=False: into_ring.append(msg) or True
    regular(gw, ["a2"], 3.5)
    assert gw.dead_links == {1} and gw.suspect_at[1] == pytest.approx(3.0 - SILENCE_S + SILENCE_S + sr.SITE_GRACE_S)
    gw.tick(3.6)
    links = [r for m in into_ring if m.kind == sr.SITES for r in sr.decode_site_records(m.data)
             if r.kind == sr.SITE_LINKS]
    assert links == []  # nothing new to say: the link is still down
    gw.hop_datagram("b1", sr.encode_site_hello(sr.SiteHello(("b1", 1), 1, False, {}, 0, (0, 1), 1)), 3.7)
    gw.tick(3.7)
    links = [sr.decode_site_view_body(r.body) for m in into_ring if m.kind == sr.SITES
             for r in sr.decode_site_records(m.data) if r.kind == sr.SITE_LINKS]
    assert links == [(frozenset(), {})]  # now it runs: up


def test_the_state_a_late_daemon_takes_carries_the_silences_and_the_merges_given_up():
    """A daemon that takes the sites' state (and may represent the site next) knows how long
    ago each site was heard (ages: the daemons' clocks are their own) and the GIVEUPs it must
    resend to a site that decided that merge."""
    gw = gateway("a2")
    regular(gw, ["a1", "a2"])
    gw.ring_output(carrier([remote(1, 5)], 6), 4.0)
    giveup = sr.SiteRecord(sr.SITE_GIVEUP, 0, 0, 3, body=sr.encode_site_view_body({0, 1}, {}))
    gw.giveups, gw.given_up_view = {0: giveup}, 3
    ready = {s: sr.SiteRecord(sr.SITE_READY, s, 9, 2, body=sr.encode_site_view_body({0, 1}, {})) for s in (0, 1)}
    gw.merged_readies = dict(ready)  # (of the last merge installed: a site of it may lack one)
    gw.now_s = 4.25
    state = gw.export_state()
    late = gateway("a1")
    late.import_state(state, 100.0)
    assert late.heard_s == {1: pytest.approx(100.0 - 0.25)}
    assert (late.giveups, late.given_up_view) == ({0: giveup}, 3)
    assert late.merged_readies == ready
    for bad in (-1.0, float("nan"), "1", float("inf")):
        broken = dict(state, heard_ages={"1": bad})
        with pytest.raises(ValueError):
            gateway("a1").import_state(broken, 100.0)
    broken = dict(state, giveups={"0": sr._records_text([sr.SiteRecord(sr.SITE_FRONTIER, 0, 4)])})
    with pytest.raises(ValueError):
        gateway("a1").import_state(broken, 100.0)
    broken = dict(state, merged_readies={"0": sr._records_text([giveup])})  # (not a READY)
    with pytest.raises(ValueError):
        gateway("a1").import_state(broken, 100.0)


def test_a_daemon_that_took_the_state_of_its_ring_represents_it_at_once():
    """a1 restarted at 100.0 and took a2's state: their ring is formed (not two rings of a
    start), so a1, first in spread.conf, takes the links at once, not SITE_ALONE_AFTER_S later
    (the site would have no representative meanwhile, and nobody to suspect a silent site)."""
    donor = gateway("a2")
    regular(donor, ["a2"])
    donor.ring_output(carrier([remote(1, 5)], 6), 99.0)
    donor.now_s = 100.0
    orderer = sr.RingOrderer("a1", 1, SITES[0], random.Random(1))
    late = sr.SiteGateway("a1", SITES, COSTS, orderer, sr.HopSettings(), now=100.0)
    late.import_state(donor.export_state(), 100.0)
    late.ring_members = frozenset(["a1"])  # (a2 died meanwhile: the site is not whole)
    late.choose_representative(100.05)
    assert late.is_representative() and late.wide
    assert late.suspect_at[1] == pytest.approx(99.0 + SILENCE_S + sr.SITE_GRACE_S)

# ---- UNRELIABLE across sites: a record outside the stream ----------------------------------------

def remote_unreliable(data=b"u", origin="b1", site=1, service=sr.UNRELIABLE_MESS, kind=sr.DATA):
    msg = sr.DaemonMessage(kind, origin, "#c#" + origin, service, ["g"], data=data)
    return sr.SiteRecord(sr.SITE_UNRELIABLE, site, 0, 0, sr.UNRELIABLE_MESS, origin, sr.encode_message_body(msg))


def test_another_sites_unreliable_message_is_delivered_at_once_outside_the_order():
    """It waits for no frontier (an ordered message of b's with a lower lts still waits for
    ours), takes no place in b's stream, and answers nothing."""
    gw = gateway()
    regular(gw, ["a1", "a2"])
    gw.poll()
    gw.ring_output(local(5, b"ours waits"), 1.0)
    gw.ring_output(carrier([remote_unreliable(b"at once")], 6), 1.1)
    assert delivered(gw) == [b"at once"]
    assert gw.applied_seq[1] == 0 and gw.frontier_answered == 0 and gw.kept[1] == collections.deque()
    assert gw.counters["site_unreliable_delivered"] == 1


def test_our_sites_unreliable_message_goes_at_once_down_our_tree_and_theirs_comes_into_our_ring():
    gw = gateway()
    regular(gw, ["a1", "a2"])
    gw._start_link(1, ("b1", 1), {}, 0.0, 0)
    gw.orderer.ring.safe_lts = 0  # nothing safe: the ordered records wait, UNRELIABLE does not
    gw.ring_output(local(5, b"u", sr.UNRELIABLE_MESS), 0.1)
    assert gw.counters["site_unreliable_forwarded"] == 1 and gw.counters["site_records_forwarded"] == 0
    assert delivered(gw) == [b"u"]
    # the same record from b's end of the link goes into our ring, once per copy it sends
    gw._from_link(1, remote_unreliable(b"from b"))
    assert [r.kind for r in gw.to_ring] == [sr.SITE_UNRELIABLE]


def test_a_forged_unreliable_record_is_dropped_and_counted():
    gw = gateway()
    regular(gw, ["a1", "a2"])
    gw.poll()
    before = (dict(gw.applied_seq), gw.frontier_answered)
    gw.ring_output(carrier([remote_unreliable(origin="a2", site=1),  # a daemon of another site
                            remote_unreliable(origin="a2", site=0),  # "from" our own site
                            remote_unreliable(site=7, origin="zz"),  # no such site
                            remote_unreliable(service=sr.AGREED_MESS),  # an ordered body
                            remote_unreliable(kind=sr.JOIN)], 3), 1.0)  # not data
    assert delivered(gw) == []
    assert gw.counters["site_unreliable_not_for_us"] == 3
    assert gw.counters["site_unreliable_undecodable"] == 2
    assert (dict(gw.applied_seq), gw.frontier_answered) == before
