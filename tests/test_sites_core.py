"""The wide-area pieces one at a time, with a fake clock (thesis 7.3.3): site records and HELLO
on the wire (and what a forger's bytes do: nothing but a counter), and one SiteGateway fed
by hand with what its ring would deliver, to see the frontier rule, the merge and the gate."""
from __future__ import annotations

import collections
import json
import random
import struct

import pytest

import spread_mini as sr

SITES = [["a1", "a2"], ["b1"]]
COSTS = [[0, 1], [1, 0]]


def gateway(name="a1", sites=None, costs=None):
    sites = sites or SITES
    orderer = sr.RingOrderer(name, 1, sites["abc".index(name[0])], random.Random(1))
    return sr.SiteGateway(name, sites, costs or COSTS, orderer, sr.HopSettings())


def regular(gw, members, now=0.0):
    gw.ring_output(sr.ConfigurationChange(sr.CONF_REGULAR, members, members, (1, members[0])), now)


def carrier(records, lts, origin="a1", epoch=0):
    """A SITES message as the ring would deliver it, with its ring lts (and the epoch of our
    site its representative made it under, if said)."""
    msg = sr.DaemonMessage(sr.SITES, origin, "", sr.AGREED_MESS, [str(epoch)] if epoch else [],
                           data=sr.encode_site_records(records))
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
    if kind == sr.SITE_UNRELIABLE:  # outside every order: lts and seq only name it
        service = rng.choice([sr.UNRELIABLE_MESS, sr.UNRELIABLE_MESS | sr.SELF_DISCARD])
        return sr.SiteRecord(kind, site, rng.choice([0, lts]), seq, service, "a1", body)
    return sr.SiteRecord(kind, site, lts, seq, rng.choice([sr.AGREED_MESS, 0xFFFFFFFF]), "a1", body)


def _unreliable_raw(lts, site_seq, service):
    """An UNRELIABLE record as a forger might write it (the encoder writes what it is given)."""
    raw = b"".join([bytes([sr.SITE_UNRELIABLE]), b"\x01", sr.encode_varint(lts), sr.encode_varint(site_seq),
                    sr.encode_varint(service), sr._ring_name_bytes("b1"), b"\x80body"])
    return sr.encode_varint(len(raw)) + raw


@pytest.mark.parametrize("raw, why", [
    (_unreliable_raw(5, 0, sr.UNRELIABLE_MESS), "no origin's sequence: it could not be told from its copies"),
    (_unreliable_raw(0, 3, sr.AGREED_MESS), "an ordered service"),
    (_unreliable_raw(0, 3, sr.UNRELIABLE_MESS | sr.SAFE_MESS), "UNRELIABLE with SAFE"),
])
def test_an_unreliable_record_without_a_name_or_with_an_order_is_refused(raw, why):
    with pytest.raises(sr.RingWireError):
        sr.decode_site_records(raw)
    r = sr.decode_site_records(_unreliable_raw(5, 3, sr.UNRELIABLE_MESS))[0]
    assert (r.kind, r.lts, r.site_seq) == (sr.SITE_UNRELIABLE, 5, 3)


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


def test_a_sites_message_of_a_fork_of_our_site_counts_nowhere_the_kept_state_is_read():
    """Two rings of our site meet: a SITES message the fork's representative submitted
    before it took the kept state is ordered in the shared ring after the rings met. Its
    records are the fork's (here the ARU of the fork's view, where the other sites' streams
    ended): at the kept side they would say our site holds what it never had (seed 38
    --lan-splits: the other sites dropped what it lacked). Refused where our lineage does not
    name its epoch; one of our epoch, of one our lineage went through (made before the
    fork), or naming none (an older daemon's) is taken."""
    gw = gateway()
    regular(gw, ["a1", "a2"])
    gw.epoch, gw.lineage = 5, [(5, 0)]
    gw.ring_output(carrier([remote(1, 10, b"safe", sr.SAFE_MESS)], 11, epoch=5), 1.0)
    gw.ring_output(carrier([sr.SiteRecord(sr.SITE_ARU, 1, 10)], 12, epoch=5), 1.1)
    gw.ring_output(carrier([sr.SiteRecord(sr.SITE_ARU, 0, 10)], 13, origin="a2", epoch=77), 1.2)
    assert delivered(gw) == [] and gw.counters["sites_messages_of_another_incarnation"] == 1
    gw.ring_output(carrier([sr.SiteRecord(sr.SITE_ARU, 0, 10)], 14), 1.3)
    assert delivered(gw) == [b"safe"]
    fork = gateway("a2")
    regular(fork, ["a2"])
    fork.epoch, fork.lineage = 77, [(5, 0), (77, 3)]  # (a fork of epoch 5 at site_seq 3)
    fork.ring_output(carrier([remote(1, 10, b"safe", sr.SAFE_MESS), sr.SiteRecord(sr.SITE_ARU, 1, 10)],
                             11, origin="a2", epoch=5), 1.0)
    fork.ring_output(carrier([sr.SiteRecord(sr.SITE_ARU, 0, 10)], 12, origin="a2", epoch=77), 1.1)
    assert delivered(fork) == [b"safe"] and not fork.counters["sites_messages_of_another_incarnation"]


def _split_site_of_three():
    """Site a of three daemons, voting, split a1 | a2 a3 after one ring of all three: a1's
    gateway forks (a new epoch), a2's keeps epoch 5. Each with the SITES messages it submits."""
    sites, costs = [["a1", "a2", "a3"], ["b1"]], [[0, 1], [1, 0]]
    gws = {}
    for name in ("a1", "a2"):
        gw = gateway(name, sites, costs)
        gw.epoch, gw.lineage, gw.wide_ring = 5, [(5, 0)], frozenset(sites[0])
        gw.sent = []
        gw.orderer.submit = lambda msg, urgent=False, gw=gw: gw.sent.append(msg) or True
        regular(gw, ["a1", "a2", "a3"])
        gws[name] = gw
    return gws["a1"], gws["a2"]


def _made_by(gw, records, lts):
    """A SITES message of these records as gw's _flush_ring makes it, delivered at lts."""
    gw.to_ring.extend(records)
    gw._flush_ring()
    msg = sr.decode_message_body(sr.encode_message_body(gw.sent.pop()), gw.name)
    msg.lts = lts
    return sr.Deliver(msg)


def test_a_kept_side_sites_message_made_after_the_fork_counts_nowhere_the_fork_reads():
    """Defect 1 of issue 10's notes, the mirror of the test above: the kept side's
    representative makes a SITES message after the split (its records say what the kept
    state holds: here another site's message and its ARU of the kept view) and the ring it
    shares with the fork once the rings meet orders it before the status round. The epoch
    alone is the old one, which the fork's lineage holds (made before the fork): the fork's
    daemon took it. The message names the rings that kept its epoch too (kept_rings): the
    kept side counted one more (the ring without a1) than the fork left the epoch at
    (epochs_left), so the fork refuses it; one made before the split, or naming no count (an
    older daemon's), is still taken."""
    fork, kept = _split_site_of_three()
    before = _made_by(kept, [remote(1, 10, b"before", sr.SAFE_MESS), sr.SiteRecord(sr.SITE_ARU, 1, 10)], 11)
    regular(fork, ["a1"])
    regular(kept, ["a2", "a3"])
    assert fork.epoch != 5 and fork.counters["site_forks"] == 1 and kept.epoch == 5
    assert (fork.epochs_left, fork.kept_rings, kept.kept_rings) == ({5: 1}, 0, 2)
    after = _made_by(kept, [remote(2, 20, b"after", sr.SAFE_MESS), sr.SiteRecord(sr.SITE_ARU, 1, 20)], 21)
    assert after.msg.groups == ["5", "2"] and before.msg.groups == ["5", "1"]
    fork.ring_output(before, 1.0)
    fork.ring_output(after, 1.1)
    fork.ring_output(_made_by(fork, [sr.SiteRecord(sr.SITE_ARU, 0, 20)], 22), 1.2)
    assert delivered(fork) == [b"before"]
    assert fork.counters["sites_messages_of_another_incarnation"] == 1
    assert fork.counters["sites_messages_made_after_our_fork"] == 1
    fork.ring_output(carrier([remote(2, 30, b"older daemon's"), sr.SiteRecord(sr.SITE_ARU, 1, 30)], 31,
                             origin="a2", epoch=5), 1.3)  # (the epoch alone: taken, as before)
    fork.ring_output(_made_by(fork, [sr.SiteRecord(sr.SITE_ARU, 0, 30)], 32), 1.4)
    assert delivered(fork) == [b"older daemon's"]
    # the kept side reads its own, whatever their count, and the count goes with the state
    kept.ring_output(after, 1.0)
    assert kept.counters["sites_messages_of_another_incarnation"] == 0
    late = gateway("a3", [["a1", "a2", "a3"], ["b1"]], [[0, 1], [1, 0]])
    late.import_state(json.loads(json.dumps(fork.export_state())), 2.0)
    assert (late.epochs_left, late.kept_rings, late.lineage) == ({5: 1}, 0, fork.lineage)
    assert late.fork_unread and not kept.export_state()["fork_unread"]
    for key, bad in (("epochs_left", [[5]]), ("epochs_left", [["5", 1]]), ("kept_rings", -1),
                     ("fork_unread", 1)):  # (a malformed state stops the daemon, never misread)
        state = json.loads(json.dumps(fork.export_state()))
        state[key] = bad
        with pytest.raises(ValueError):
            gateway("a3", [["a1", "a2", "a3"], ["b1"]], [[0, 1], [1, 0]]).import_state(state, 2.0)
    older = json.loads(json.dumps(fork.export_state()))
    for key in ("epochs_left", "kept_rings", "fork_unread"):  # (a daemon of before sends none)
        del older[key]
    late.import_state(older, 2.0)
    assert (late.epochs_left, late.kept_rings, late.fork_unread) == ({}, 0, False)


def _linked_rep_of_a_split_site(name):
    """a1 or a2 of site a (a1 a2 a3, voting, epoch 5) after a ring of all three, linked to b1
    (a1 represents site a; a2 is made its representative here to see what it would send)."""
    sites, costs = [["a1", "a2", "a3"], ["b1"]], [[0, 1], [1, 0]]
    gw = gateway(name, sites, costs)
    gw.epoch, gw.lineage, gw.wide_ring = 5, [(5, 0)], frozenset(sites[0])
    regular(gw, ["a1", "a2", "a3"])
    gw.representative = name
    gw._start_link(1, ("b1", 1), {}, 0.0, 0)
    gw.poll()
    return gw


def _ring_ends(gw):
    """Our ring orderer installs the next ring (its outputs not read yet): the new ring's
    safe_lts starts above every lts of the old one, as a real ring's start_lts does."""
    old = gw.orderer.ring
    gw.orderer.ring = sr._Ring((2, "a1"), old.members, 1 << 16)


def test_what_the_last_ring_never_made_safe_goes_to_no_site_if_our_ring_forks():
    """(seed 125 --lan-splits --groups) a1 delivered its own JOIN in the ring of a1 a2 a3,
    which never made it safe (a2 and a3 lacked it), then the LAN split: a1 alone forks, a2
    a3 keep epoch 5 and number their stream on without that JOIN. a1's gate passed it to
    site b as site a's first message of epoch 5 anyway, twice over: on a tick after its ring
    orderer installed the ring of a1 alone (the new ring's safe_lts is above every old lts),
    and at that ring's regular configuration, before it found that the ring forks. Site b
    then refused the kept side's stream from that site_seq on. Now the gate waits from the
    ring's end to the regular configuration, which passes what is left if our ring keeps
    the epoch and withholds it if it forks."""
    for name, ring, forwarded in (("a1", ["a1"], 0), ("a2", ["a2", "a3"], 1)):
        gw = _linked_rep_of_a_split_site(name)
        gw.orderer.ring.safe_lts = 0
        gw.ring_output(local(5, b"join", origin=name), 0.1)
        assert gw.counters["site_records_forwarded"] == 0 and gw.passed_seq[0] == 0
        _ring_ends(gw)
        gw.tick(0.2)
        assert gw.counters["site_records_forwarded"] == 0 and gw.passed_seq[0] == 0
        regular(gw, ring, 0.3)
        assert gw.counters["site_records_forwarded"] == forwarded
        assert gw.passed_seq[0] == forwarded and not gw.gate
        assert gw.counters["site_records_withheld_at_fork"] == 1 - forwarded
        assert (gw.epoch != 5) == (forwarded == 0)  # (a1 forked; a2 kept the epoch)
    # the new ring's own messages go on by its safe_lts, as before
    gw.ring_output(local((1 << 16) + 1, b"next", origin="a2"), 0.4)
    assert gw.counters["site_records_forwarded"] == 1
    gw.orderer.ring.safe_lts = (1 << 16) + 1
    gw.tick(0.5)
    assert gw.counters["site_records_forwarded"] == 2 and gw.passed_seq[0] == 2


def _fork_takes_the_kept_state(fork, kept_first):
    """The fork's daemon stands down and takes the state of a2 (kept), whose ring numbered
    kept_first as site a's first message: the bodies of site a's stream at the fork then."""
    kept = _linked_rep_of_a_split_site("a2")
    kept.orderer.ring.safe_lts = 0
    kept.ring_output(kept_first, 0.1)
    fork.stand_down()
    fork.import_state(json.loads(json.dumps(kept.export_state())), 0.4)
    return {m.site_seq: m.frags[0] for m in fork.streams[0].ordered}


def test_a_forks_own_message_its_last_ring_never_made_safe_hides_no_kept_message_of_that_site_seq():
    """Seed 125's cause seen where the fork's daemon lives on (there b1 crashed first): a1's
    fork numbered its own JOIN, which the ring of a1 a2 a3 never made safe, as site a's first
    message; a2 a3, kept, numbered another one so. Where a1 takes the kept state, the kept
    side's first message is not the one a1 delivered in its fork's closing view: held as
    delivered (a SKIP, by its site_seq alone) it was never delivered at a1. The same message
    still is a SKIP."""
    for kept_first, skipped in (local(4, b"kept's first", origin="a2"), False), \
            (local(5, b"fork's join", origin="a1"), True):  # (the same message: delivered here)
        fork = _linked_rep_of_a_split_site("a1")
        fork.orderer.ring.safe_lts = 0
        fork.ring_output(local(5, b"fork's join", origin="a1"), 0.1)
        _ring_ends(fork)
        regular(fork, ["a1"], 0.2)
        assert fork.epoch != 5
        fork.close_fork(0.3)
        assert delivered(fork) == [b"fork's join"] and fork.counters["fork_held_delivered"] == 1
        bodies = _fork_takes_the_kept_state(fork, kept_first)
        assert (bodies[1] == sr.SITE_SKIP_BODY) == skipped
        assert skipped or b"kept's first" in bodies[1]


def test_a_forks_own_message_the_kept_side_numbered_higher_is_still_the_one_it_delivered():
    """(seed 840 --lan-splits) The two sides' transitional configurations of the ring they
    shared delivered different sets: the kept side had another message before a1's, so it
    numbered a1's message second, where the fork had it first (even above the fork's
    site_seq). a1 delivered it in its fork's closing view, then again from the kept state:
    matched by site_seq it was another message. The same lts (its place in the shared ring)
    and body are the same message, whatever its number: a SKIP."""
    fork = _linked_rep_of_a_split_site("a1")
    fork.orderer.ring.safe_lts = 0
    fork.ring_output(local(5, b"fork's own", origin="a1"), 0.1)
    _ring_ends(fork)
    regular(fork, ["a1"], 0.2)
    fork.close_fork(0.3)
    assert delivered(fork) == [b"fork's own"] and fork.fork_seq == 1
    kept = _linked_rep_of_a_split_site("a2")
    kept.orderer.ring.safe_lts = 0
    kept.ring_output(local(4, b"kept's first", origin="a2"), 0.1)
    kept.ring_output(local(5, b"fork's own", origin="a1"), 0.1)
    fork.stand_down()
    fork.import_state(json.loads(json.dumps(kept.export_state())), 0.4)
    bodies = {m.site_seq: m.frags[0] for m in fork.streams[0].ordered}
    assert b"kept's first" in bodies[1] and bodies[2] == sr.SITE_SKIP_BODY


def _merging_with_b(name, forked):
    """a1 or a2 of site a (epoch 5), linked to b1; a1's ring forks first if `forked` (a1
    alone: a new epoch). Then, in a view of site a alone (b left out earlier; the cut
    healed), it proposes view 2 with b, and has not decided it. Its SITES messages are
    caught (`sent`)."""
    gw = _linked_rep_of_a_split_site(name)
    if forked:
        _ring_ends(gw)
        regular(gw, [name], 0.2)
        assert gw.epoch != 5 and gw.counters["site_forks"] == 1
        gw._start_link(1, ("b1", 1), {}, 0.2, 0)
    gw.sent = []
    gw.orderer.submit = lambda msg, urgent=False: gw.sent.append(msg) or True
    gw.live_sites, gw.view_seq = [0], 1
    gw.merge.uninstall(1)
    del gw.streams[1]
    assert gw._start_merge(2, frozenset({0, 1}), [])
    assert 0 in gw.merging.proposals and 0 not in gw.merging.ready  # (our MERGE went, undecided)
    return gw


def _giveups_in(gw, sent):
    """The GIVEUPs of the SITES messages gw submitted, each with the epochs it names."""
    return [(r.site_seq, sr.decode_site_view_bases(r.body)) for msg in sent
            for r in sr.decode_site_records(msg.data) if r.kind == sr.SITE_GIVEUP]


def test_an_incarnation_that_ends_with_its_merge_undecided_gives_that_merge_up_under_its_epoch():
    """(seed 1037 --lan-splits --groups --client-views) c1, a fork of site c alone (a new
    epoch), proposed view 2 to sites a and b; they took its MERGE, decided, and waited for
    c's READY naming the fork's epoch. c1's ring then met c2 c3's (epoch 1) and c1 took their
    state: the fork's merge went with its own, and nobody ever sent its READY or GIVEUP. c,
    epoch 1 again, gave up its own view 2 (b's READY named the fork's epoch), and a and b
    read that GIVEUP as another incarnation's: they waited for good, refused every later
    merge, and the sites stayed apart. Now a daemon whose incarnation ends so (the state it
    takes is of another epoch) submits the GIVEUP of that merge under the ended epoch; every
    daemon of the site keeps it and resends it to a link that starts, until a merge brings
    the merge's sites into our view."""
    fork = _merging_with_b("a1", forked=True)
    fork_epoch = fork.epoch
    fork.close_fork(0.3)
    kept = _linked_rep_of_a_split_site("a2")  # (epoch 5, whose state a1 takes)
    fork.sent.clear()
    fork.stand_down()
    fork.import_state(json.loads(json.dumps(kept.export_state())), 0.4)
    assert fork.epoch == 5 and fork.merging is None
    assert _giveups_in(fork, fork.sent) == [(2, {0: fork_epoch})]
    assert fork.counters["merges_given_up_as_our_incarnation_ended"] == 1
    # where the ring delivers it, each daemon of the site keeps it, and floods it on
    made = sr.decode_message_body(sr.encode_message_body(fork.sent[-1]), "a1")
    made.lts = 50
    for gw in (fork, kept):
        gw.ring_output(sr.Deliver(made), 0.5)
        assert list(gw.ended_giveups) == [fork_epoch]
        gw._out_bytes[1] = bytearray()
        gw._resend(1, {})
        resent = sr.decode_site_records(bytes(gw._out_bytes[1]))
        assert [r for r in resent if r.kind == sr.SITE_GIVEUP] == [gw.ended_giveups[fork_epoch]]
    late = gateway("a3", [["a1", "a2", "a3"], ["b1"]], [[0, 1], [1, 0]])  # (it goes with the state)
    late.import_state(json.loads(json.dumps(kept.export_state())), 0.6)
    assert list(late.ended_giveups) == [fork_epoch]
    state = json.loads(json.dumps(kept.export_state()))
    state["ended_giveups"] = sr._records_text([sr.SiteRecord(sr.SITE_READY, 0, 1, 2)])
    with pytest.raises(ValueError):  # (no GIVEUP of an epoch of ours: never misread)
        gateway("a3", [["a1", "a2", "a3"], ["b1"]], [[0, 1], [1, 0]]).import_state(state, 0.6)
    # kept until a merge brings b into our view
    kept.live_sites = [0, 1]
    kept._drop_ended_giveups()
    assert kept.ended_giveups == {}


def test_a_daemon_that_takes_a_state_of_its_own_epoch_or_decided_its_merge_gives_nothing_up():
    """The same incarnation goes on in the state taken (its other daemons carry the merge on),
    and a merge decided may be installed with our READY: neither is given up."""
    gw = _merging_with_b("a2", forked=False)
    gw.stand_down()
    gw.import_state(json.loads(json.dumps(_linked_rep_of_a_split_site("a1").export_state())), 0.4)
    assert gw.epoch == 5 and _giveups_in(gw, gw.sent) == []
    decided = _merging_with_b("a1", forked=True)
    decided.merging.ready[0] = sr.SiteRecord(sr.SITE_READY, 0, 1, 2)  # (as if decided)
    decided.sent.clear()
    decided.stand_down()
    decided.import_state(json.loads(json.dumps(_linked_rep_of_a_split_site("a2").export_state())), 0.4)
    assert _giveups_in(decided, decided.sent) == []
    assert decided.counters["merges_given_up_as_our_incarnation_ended"] == 0


def _ordered_group_op(kind, lts, origin):
    msg = sr.DaemonMessage(kind, origin, "#c#" + origin, sr.AGREED_MESS, ["g"])
    msg.lts = lts
    return sr.Deliver(msg)


def test_another_daemons_join_the_fork_delivered_reaches_the_kept_table_it_takes():
    """(seed 914 --lan-splits --client-views) c3's fork delivered c2's JOIN in its closing
    view; c2, kept, delivered it after the point where c3 took its state, so the table c3
    took lacks it. Held as delivered (a SKIP) it never reached that table: c3 named c3 alone
    in the group that c2 saw with both. Another daemon's group operation is handed over
    again, marked `again` (the daemon's second delivery of it, the kept table's first); data,
    and our own client's JOIN (the REJOIN names it), stay SKIPs."""
    def shared():
        return [_ordered_group_op(sr.JOIN, 5, "a2"), local(6, b"a2's data", origin="a2"),
                _ordered_group_op(sr.JOIN, 7, "a1")]
    fork = _linked_rep_of_a_split_site("a1")
    fork.orderer.ring.safe_lts = 0
    for d in shared():
        fork.ring_output(d, 0.1)
    _ring_ends(fork)
    regular(fork, ["a1"], 0.2)
    fork.close_fork(0.3)
    first = [(o.msg.kind, o.msg.sender, o.msg.again) for o in fork.poll() if isinstance(o, sr.Deliver)]
    assert first == [(sr.JOIN, "#c#a2", False), (sr.DATA, "#c#a2", False), (sr.JOIN, "#c#a1", False)]
    kept = _linked_rep_of_a_split_site("a2")
    kept.orderer.ring.safe_lts = 0
    for d in shared():
        kept.ring_output(d, 0.1)  # (not delivered there yet: the three are in its state)
    fork.stand_down()
    fork.import_state(json.loads(json.dumps(kept.export_state())), 0.4)
    bodies = {m.site_seq: m.frags[0] for m in fork.streams[0].ordered}
    assert bodies[1] != sr.SITE_SKIP_BODY and bodies[2] == bodies[3] == sr.SITE_SKIP_BODY
    fork.ring_output(carrier([sr.SiteRecord(sr.SITE_FRONTIER, 1, 1 << 20)], (1 << 20) + 1), 0.5)
    again = [(o.msg.kind, o.msg.sender, o.msg.again) for o in fork.poll() if isinstance(o, sr.Deliver)]
    assert again == [(sr.JOIN, "#c#a2", True)] and fork.counters["group_ops_delivered_again"] == 1


def test_a_daemon_that_stands_down_keeps_no_parked_merge_whose_deadline_its_tick_never_moves():
    """(seed 61081 --lan-splits --merge-kills-only, issue 10: "no datagram may take a daemon
    down") b3, site b's representative (a fork's), parked the MERGEs of sites a and c that
    came on its link to a1 (no link to c1 yet), then stood down and took the kept side's state with b2 as the representative.
    The parked MERGE stayed: next_deadline_s counted its grace, which only a
    representative's tick looks at, so the deadline stayed in the past: a real daemon's poll
    loop would spin at 100 % CPU (the simulator re-ran b3's tick at 5.005 s for ever)."""
    gw = gateway("a1", SITES_C, COSTS_C)
    regular(gw, ["a1", "a2"])
    gw.hop_datagram("b1", sr.encode_site_hello(sr.SiteHello(("b1", 1), 1, False, {}, 0, (0, 1),
                                                            sr.hop_session(1, 0))), 0.1)
    assert gw.is_representative() and 1 in gw.links and 2 not in gw.links
    gw.live_sites = [0, 1]  # (c left out by an earlier view; the cut healed)
    merge = sr.SiteRecord(sr.SITE_MERGE, 1, 9, gw.view_seq + 1, body=sr.encode_site_view_body({0, 1, 2}, {}))
    gw.now_s = 0.2
    gw._from_link(1, merge)  # (as its link hands it up: site c brought in, no link to c1)
    assert gw.merge_parked and gw.counters["site_merges_unreachable"] == 1
    donor = gateway("a2", SITES_C, COSTS_C)
    regular(donor, ["a1", "a2"])
    donor.representative = "a2"  # (the kept side's representative: not this daemon)
    gw.stand_down()
    gw.import_state(json.loads(json.dumps(donor.export_state())), 0.3)
    assert not gw.is_representative()
    now = 0.2 + sr.SITE_GRACE_S + 0.1  # (past the parked MERGE's grace)
    for _ in range(3):
        gw.tick(now)
        deadline = gw.next_deadline_s()
        assert deadline > now, "tick at %.2f s leaves the deadline at %.2f s: a spin" % (now, deadline)
        now = min(deadline, now + 10.0)


def test_a_forks_own_message_it_delivered_before_the_fork_hides_no_kept_message_of_that_site_seq():
    """The same where a1 delivered its own message in the view of the sites before the fork
    (site b's frontier let it through; the ring of a1 a2 a3 never made it safe): a2 a3
    numbered another message so, which a1 owes after it takes their state, though its lts
    is below what a1 delivered of its stream. The same message is a SKIP."""
    for kept_first, skipped in (local(4, b"kept's first", origin="a2"), False), \
            (local(5, b"a1's own", origin="a1"), True):
        fork = _linked_rep_of_a_split_site("a1")
        fork.orderer.ring.safe_lts = 0
        fork.ring_output(local(5, b"a1's own", origin="a1"), 0.1)
        fork.ring_output(carrier([sr.SiteRecord(sr.SITE_FRONTIER, 1, 10, 0)], 11), 0.1)
        assert delivered(fork) == [b"a1's own"]
        _ring_ends(fork)
        regular(fork, ["a1"], 0.2)
        fork.close_fork(0.3)
        assert delivered(fork) == [] and fork.epoch != 5
        bodies = _fork_takes_the_kept_state(fork, kept_first)
        assert (bodies[1] == sr.SITE_SKIP_BODY) == skipped
        assert skipped or b"kept's first" in bodies[1]


def test_a_sites_message_names_its_epoch_across_the_ring():
    gw = gateway()
    regular(gw, ["a1", "a2"])
    sent = []
    gw.orderer.submit = lambda msg, urgent=False: sent.append(msg) or True
    gw.epoch = 2 ** 47 + 3
    gw.to_ring.append(sr.SiteRecord(sr.SITE_ARU, 0, 4))
    gw._flush_ring()
    gw.kept_rings = 6  # (six rings kept it: named too)
    gw.to_ring.append(sr.SiteRecord(sr.SITE_ARU, 0, 5))
    gw._flush_ring()
    gw.epoch = 0  # (not known: named by none)
    gw.to_ring.append(sr.SiteRecord(sr.SITE_ARU, 0, 6))
    gw._flush_ring()
    read = [sr.decode_message_body(sr.encode_message_body(m), "a1") for m in sent]
    assert [sr._sites_message_name(m) for m in read] == [(2 ** 47 + 3, 0), (2 ** 47 + 3, 6), (0, 0)]
    assert [len(m.groups) for m in read] == [1, 2, 0]  # (no count: the name an older daemon wrote)
    for groups in (["x1"], ["1", "2", "3"], ["1", "x"], ["0", "2"], [str(sr.EPOCH_MAX + 1)], ["\u0661"],
                   ["1", str(sr.EPOCH_MAX + 1)]):  # (a forger's, a mangled one)
        msg = sr.DaemonMessage(sr.SITES, "a1", "", sr.AGREED_MESS, groups)
        assert sr._sites_message_name(msg) == (0, 0) and sr._sites_message_epoch(msg) == 0


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


def test_a_joined_sites_records_that_passed_the_gate_before_the_decision_go_on_to_a_third_site():
    """Seed 81225 --unreliable --groups: a line b - a - c, c healed back. c decided the merge
    first (b's MERGE still on its way to a) and sent a its messages of the merged view; a's
    gate passed them while the trees were those of a's view, which has no tree of c: they
    went to no one. Once a decided, its trees took b as c's child, and b got c's later
    messages, taking the first that came for the start of c's stream: the ones before it
    never came (a1 delivered c1's SAFE on b1's ARU though b1 never held it). Now they go on to
    b at the decision, in order, ahead of the rest (_forward_joined_passed)."""
    sites = [["a1"], ["b1"], ["c1"]]
    gw = gateway("a1", sites, [[0, 1, 1], [1, 0, 0], [1, 0, 0]])  # (0: no link)
    regular(gw, ["a1"])
    gw.poll()
    gw.orderer.ring.safe_lts = 1000  # (what our ring delivers passes the gate at once)
    for site, peer in ((1, "b1"), (2, "c1")):
        gw._start_link(site, (peer, 1), {}, 0.0, 0)
    gw.view_seq, gw.live_sites, gw.neighbours = 1, [0, 1], [1]  # (c left out by view 1: healed)
    gw.trees = gw._view_trees()
    sent = bytearray()  # (what goes down the link to b1, as a byte stream of records)
    submit = gw.links[1].submit
    gw.links[1].submit = lambda payload, now: (sent.extend(payload), submit(payload, now))[1]
    assert gw._start_merge(2, frozenset({0, 1, 2}), [])
    c_merge = sr.SiteRecord(sr.SITE_MERGE, 2, 10, 2, body=sr.encode_site_view_body({0, 1, 2}, {}))
    b_merge = sr.SiteRecord(sr.SITE_MERGE, 1, 9, 2, body=sr.encode_site_view_body(
        {0, 1, 2}, {0: (1, 0, 0), 1: (1, 0, 0)}))
    of_c = lambda seq, lts: remote(seq, lts, b"c%d" % seq, site=2, origin="c1")
    gw.ring_output(carrier([c_merge], 11), 1.0)
    gw.ring_output(carrier([of_c(4, 10), of_c(5, 11), of_c(6, 12)], 13), 1.1)  # (4: c's old view)
    assert gw.closing is None and gw.passed_seq[2] == 6  # passed, to no one
    gw.ring_output(carrier([b_merge], 14), 1.2)  # decided: limit 10
    assert gw.closing is not None and gw.join_after_lts == {2: 10}
    gw.ring_output(carrier([of_c(7, 15)], 16), 1.3)
    gw.tick(1.4)
    to_b = [r.site_seq for r in sr.SiteRecordReader().feed(bytes(sent))
            if r.kind == sr.SITE_MSG and r.site == 2]
    assert to_b == [5, 6, 7]  # (before: [7]; b took 7 for the first of c's merged view)
    assert gw.counters["site_records_forwarded_at_a_merge_decision"] == 2


def test_forged_and_misplaced_input_changes_nothing_but_counters():
    gw = gateway()
    regular(gw, ["a1", "a2"])
    before = (dict(gw.applied_seq), gw.frontier_answered)
    gw.hop_datagram("b1", b"\x00garbage", 1.0)  # no link to b1 yet
    gw.hop_datagram("b1", sr.encode_site_hello(sr.SiteHello(("zz", 1), 7, True, {})), 1.0)
    gw.hop_datagram("b1", sr.encode_site_hello(sr.SiteHello(("a2", 1), 0, True, {})), 1.0)  # our own site
    gw.ring_output(_bad_carrier(), 1.0)  # a SITES message that does not decode
    gw.ring_output(carrier([remote(5, 10)], 11), 1.0)  # b's site_seq 5 before 1..4
    assert gw.counters["hop_dropped_not_a_link"] == 1
    assert gw.counters["hellos_not_a_neighbour"] == 2
    assert gw.counters["site_records_undecodable"] == 1
    assert gw.counters["site_records_out_of_order"] == 1
    assert (dict(gw.applied_seq), gw.frontier_answered) == before


def test_a_forged_sites_message_cannot_put_a_record_above_its_own_lts_into_our_site():
    """(issue 10, a keyless lab LAN) A ring packet forged on our LAN (no key: it passes the CRC)
    can hold a SITES message; the ring bounds the message's lts (LTS_AHEAD_MAX) but the records
    in it were taken at any lts. One record put the Lamport clock at the wire's limit (our next
    message one that no decoder takes); a FRONTIER at 2**40 made b's real messages "out of
    order" here for good. Our representative takes the clock past each record before it
    submits it, so a record above its message's lts is not one it brought: refused."""
    gw = gateway()
    regular(gw, ["a1", "a2"])
    gw.poll()
    gw.ring_output(carrier([remote(1, sr.MAX_WIRE_COUNTER, b"forged"),
                            sr.SiteRecord(sr.SITE_FRONTIER, 1, 2 ** 40)], 11), 1.0)
    assert gw.counters["site_records_above_their_message"] == 2
    assert gw.orderer.transport.max_lts_seen < sr.LTS_AHEAD_MAX and gw.applied_seq[1] == 0
    assert gw.streams[1].frontier_lts < 2 ** 40
    gw.ring_output(carrier([remote(1, 12, b"real")], 13), 1.1)  # b's real first message
    assert delivered(gw) == [b"real"] and gw.applied_seq[1] == 1
    assert gw.counters["site_records_out_of_order"] == 0


def test_a_forged_merge_above_its_message_lts_decides_nothing():
    """The same forgery during a merge: b's MERGE at lts 2**40 was taken as b's proposal, and
    the merge was decided with that limit (a1's clock at 2**40, bench/sites_hostile.py
    --forge-in-session): b's messages up to 2**40 counted as "delivered in its old view" here,
    and b refused our READY (lts 2**40) as far ahead: the sites never merged again. Refused,
    b's real MERGE (lts 9, in a SITES message of lts 11) decides it with b's limit."""
    gw = gateway()
    regular(gw, ["a1", "a2"])
    gw.poll()
    gw.live_sites = [0]  # (b left out by an earlier view; the partition healed)
    assert gw._start_merge(2, frozenset({0, 1}), [])
    merge = lambda lts: sr.SiteRecord(sr.SITE_MERGE, 1, lts, 2, body=sr.encode_site_view_body({0, 1}, {}))
    gw.ring_output(carrier([merge(2 ** 40)], 11), 1.0)
    assert gw.closing is None and gw.counters["site_records_above_their_message"] == 1
    gw.ring_output(carrier([merge(9)], 11), 1.1)
    assert gw.closing is not None and gw.closing.limit_lts == 9 and gw.join_after_lts == {1: 9}
    assert gw.merging.ready[0].lts == 9


def test_a_forged_sites_message_cannot_put_a_view_or_links_number_far_ahead_into_our_site():
    """The same forged ring packet with a PROPOSE of b for view 2**53 (our next view a number
    no encoder takes) or b's LINKS at version 2**40 (b's real reports all "older" for good):
    refused as on a link (a view seq, a links version grow by one per change)."""
    gw = gateway()
    regular(gw, ["a1", "a2"])
    gw.poll()
    body = sr.encode_site_view_body({1}, {})
    gw.ring_output(carrier([sr.SiteRecord(sr.SITE_PROPOSE, 1, 5, sr.MAX_WIRE_COUNTER, body=body),
                            sr.SiteRecord(sr.SITE_LINKS, 1, 0, 2 ** 40, body=body)], 11), 1.0)
    assert gw.counters["site_records_refused_far_ahead"] == 2
    assert (gw.view_seq, gw.proposed_view, gw.link_reports) == (0, 0, {})
    real = sr.SiteRecord(sr.SITE_LINKS, 1, 0, 1, body=sr.encode_site_view_body((), {}))
    gw.ring_output(carrier([real], 12), 1.1)
    assert gw.link_reports[1][0] == 1


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
    one, two = sr.hop_session(1, 0), sr.hop_session(2, 0)  # (b1's sessions of its link to site 0)
    gw.hop_datagram("b1", sr.encode_site_hello(sr.SiteHello(("b1", 1), 1, True, {}, 0, (0, 1), one)), 0.1)
    first = gw.links[1]
    assert (first.peer_session, gw.poll() != []) == (one, True)
    gw.hop_datagram("b1", sr.encode_site_hello(sr.SiteHello(("b1", 1), 1, True, {}, 0, (0, 1), one)), 0.2)
    assert gw.links[1] is first  # a late copy: answered, nothing restarted
    gw.hop_datagram("b1", sr.encode_site_hello(sr.SiteHello(("b1", 1), 1, True, {}, 0, (0, 1), two)), 0.3)
    second = gw.links[1]
    assert second is not first and second.peer_session == two
    assert second.session == first.session + sr.HOP_SESSION_SITES and sr.hop_session_site(second.session) == 1
    # a packet of the peer's old end is a stranger's to the new one
    old = sr.encode_hop_data(("b1", 1), 1, b"old stream", session=one)
    gw.hop_datagram("b1", old, 0.4)
    assert second.counters["dropped_old_session"] == 1


def test_a_hello_of_another_epoch_is_a_restarted_site_never_a_takeover():
    """Site b's daemons were all restarted and started afresh (a new epoch): their site_seq
    1, 2, 3... are not the rest of the stream we read, so no link starts; a new representative
    of b's old epoch still takes over; the epoch reaches every daemon of our site through our
    ring (an EPOCH record, first hand), so a later representative of ours knows it too."""
    gw = gateway()
    regular(gw, ["a1", "a2"])
    into_ring = []
    gw.orderer.submit = lambda msg, urgent=False: into_ring.append(msg) or True
    gw.hop_datagram("b1", sr.encode_site_hello(sr.SiteHello(("b1", 1), 1, True, {}, 0, (0, 1), sr.hop_session(1, 0), 7)), 0.1)
    assert gw.links[1].peer == ("b1", 1) and gw.site_epochs == {1: 7}
    submitted = [r for m in into_ring if m.kind == sr.SITES
                 for r in sr.decode_site_records(m.data) if r.kind == sr.SITE_EPOCH]
    assert [(r.site, r.site_seq) for r in submitted] == [(1, 7)]
    gw.hop_datagram("b1", sr.encode_site_hello(sr.SiteHello(("b1", 2), 1, True, {1: 1}, 0, (0, 1), sr.hop_session(1, 0), 9)), 0.2)
    assert gw.links[1].peer == ("b1", 1) and gw.counters["hellos_new_incarnation"] == 1
    assert any("new incarnation (epoch 9, we read epoch 7)" in line for line in gw.log)
    # another daemon of our site learns it where the ring delivers the record
    other = gateway("a2")
    regular(other, ["a1", "a2"])
    other.ring_output(carrier([sr.SiteRecord(sr.SITE_EPOCH, 1, 0, 7)], 3), 0.3)
    assert other.site_epochs == {1: 7} and other.export_state()["site_epochs"] == {"1": 7}
    assert sr.decode_site_records(sr.encode_site_records(submitted)) == submitted


def test_an_epoch_heard_from_a_third_site_never_overrides_one_on_record():
    """EPOCH_AS_HEARD is taken only where no epoch is on record; a first-hand one (a HELLO to
    our representative) always is. From a link: only as heard, of a third site, and not beyond
    EPOCH_MAX (a forger's, without a key); a FRONTIER of another epoch than the one we read
    is a stale incarnation's."""
    three, mesh = [["a1", "a2"], ["b1"], ["c1"]], [[0, 1, 1], [1, 0, 1], [1, 1, 0]]
    gw = gateway("a1", three, mesh)
    regular(gw, ["a1", "a2"])
    heard = lambda site, epoch: sr.SiteRecord(sr.SITE_EPOCH, site, 0, epoch, sr.EPOCH_AS_HEARD)
    gw.ring_output(carrier([heard(2, 5)], 3), 0.1)
    gw.ring_output(carrier([heard(2, 6)], 4), 0.2)
    assert gw.site_epochs == {2: 5} and gw.counters["site_epochs_heard_known"] == 1
    gw.ring_output(carrier([sr.SiteRecord(sr.SITE_EPOCH, 2, 0, 7)], 5), 0.3)
    gw.ring_output(carrier([heard(2, 8)], 6), 0.4)
    assert gw.site_epochs == {2: 7} and gw.epochs_first_hand == {2}
    assert gw.export_state()["epochs_first_hand"] == [2]
    gw.to_ring.clear()
    gw._from_link(1, heard(2, 9))  # (known: ours stands)
    gw._from_link(1, sr.SiteRecord(sr.SITE_EPOCH, 1, 0, 9, sr.EPOCH_FROM_HELLO))  # (never first hand)
    gw._from_link(1, heard(1, 9))  # (the peer's own: its HELLO says it)
    assert list(gw.to_ring) == [] and gw.counters["site_records_not_for_us"] == 2
    other = gateway("a1", three, mesh)
    regular(other, ["a1", "a2"])
    other._from_link(1, heard(2, sr.EPOCH_MAX + 1))
    assert list(other.to_ring) == [] and other.counters["site_epochs_refused_far_ahead"] == 1
    other._from_link(1, heard(2, sr.EPOCH_MAX))
    assert list(other.to_ring) == [heard(2, sr.EPOCH_MAX)]
    gw._from_link(2, sr.SiteRecord(sr.SITE_FRONTIER, 2, 9, 0, epoch=8))
    assert gw.counters["site_epochs_refused"] == 1 and list(gw.to_ring) == []


def test_a_hello_from_a_site_that_left_us_out_starts_no_link():
    gw = gateway()
    regular(gw, ["a1", "a2"])
    gw.poll()
    gw.hop_datagram("b1", sr.encode_site_hello(sr.SiteHello(("b1", 1), 1, True, {}, 1, (1,), sr.hop_session(1, 0))), 0.1)
    assert gw.links == {} and gw.counters["hellos_left_out"] == 1



# ---- a representative that takes over: when it suspects a silent site ------------------------

SILENCE_S = sr.HopSettings().peer_silence_s


#: site b of two daemons: a successor may take over there (the grace waits for its HELLO)
SITES_B2 = [["a1", "a2"], ["b1", "b2"]]


def taken_over(heard_at=None, now=5.0, sites=SITES_B2):
    """a2 in a ring with a1 (a1 represents site 0); our ring delivers b's message at heard_at
    (never, with None); a1 dies and a2 takes over at `now`."""
    gw = gateway("a2", sites)
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


def test_a_takeover_counts_a_sites_silence_from_when_our_ring_ended_not_from_its_recovery():
    """Seed 112077: a1, our representative, died 0.75 s after site c's kill; our ring's
    recovery, 1.1 s later, delivered a1's last SITES message, with a record of b in it, and
    b's silence counted from that delivery: a2, taking over, suspected b (cut off meanwhile)
    a second late. That message was sent before our ring ended here (our ring orderer left
    OPERATIONAL then): b's silence, and our site's LINKS report of a link down in it, count
    from there (3.34 -> 2.83 s from the kill)."""
    ended_at, recovered_at = 1.2, 2.3
    # (b's record; or a1's report of its link to b down, whose silence it dates)
    for record, heard_at, wait_s in ((remote(1, 5), ended_at, sr.SITE_HELLO_WAIT_S),
                                     (sr._links_record(0, 1, (), (1,)), ended_at - SILENCE_S,
                                      sr.SITE_TAKEOVER_HELLO_S)):
        gw = gateway("a2", SITES_B2)
        regular(gw, ["a1", "a2"])
        gw.orderer.left_ring_s = ended_at  # (token lost: RingOrderer._set_state)
        _ring_ends(gw)
        gw.ring_output(carrier([record], 6), recovered_at)  # (the recovery's delivery)
        assert gw.heard_s[1] == pytest.approx(heard_at)
        regular(gw, ["a2"], recovered_at)
        assert gw.is_representative() and gw.wide
        # the wait for an answer to its own HELLO ends last, not a silence and grace from
        # the recovery
        assert gw.suspect_at[1] == pytest.approx(recovered_at + wait_s)
        assert gw.suspect_at[1] < recovered_at + sr.SITE_GRACE_S
    assert gw.link_down_s == {1: pytest.approx(ended_at)}
    # a message our ring delivers while it runs is dated by its delivery, as before
    gw = gateway("a2", SITES_B2)
    regular(gw, ["a1", "a2"])
    gw.orderer.left_ring_s = 0.5  # (an earlier ring's end)
    gw.ring_output(carrier([remote(1, 5)], 6), 0.9)
    assert gw.heard_s[1] == pytest.approx(0.9)


def test_a_takeover_gives_a_site_heard_long_ago_time_for_its_hello_and_one_never_heard_all_of_it():
    gw = taken_over(heard_at=0.5, now=5.0)
    assert gw.suspect_at[1] == pytest.approx(5.0 + sr.SITE_HELLO_WAIT_S)
    # (nothing says how long it has been silent: our ring never held all of site 0, so we do
    # not know when a1 started its links; see the next test for when we do)
    gw = taken_over(heard_at=None, now=5.0, sites=[["a1", "a2", "a3"], ["b1", "b2"]])
    assert gw.counters["site_hello_waits_from_the_predecessors_start"] == 0
    assert gw.suspect_at[1] == pytest.approx(5.0 + SILENCE_S + sr.SITE_GRACE_S)
    assert not gw.no_successor(1)
    # its HELLO in time starts the link and ends the suspicion
    gw.hop_datagram("b1", sr.encode_site_hello(sr.SiteHello(("b1", 1), 1, False, {}, 0, (0, 1), sr.hop_session(1, 0))), 5.2)
    assert 1 in gw.links and 1 not in gw.suspect_at


def test_a_takeover_counts_a_never_heard_sites_silence_from_when_its_predecessor_began_to_ask():
    """Seed 103339: b killed 6 ms after its start, before any link to it ran (nothing of b in
    c's ring); c1, c's representative since c's ring formed with all of c at 0.0, died at 1.3,
    and c2 took over at 2.41 and gave b a whole silence and grace more: b left out 3.65 s after
    the kill. c2 knows c1 said HELLO to b since 0.0 (it was chosen with our whole site in our
    ring: its links started at once), unanswered: b's silence counts from there, and c2 waits
    only for the answer to its own HELLO (2.32 s from the kill). A site heard of keeps its
    rules (see above), and a predecessor that began to ask lately is waited for as long as its
    own wait would have been."""
    gw = taken_over(heard_at=None, now=2.41)
    assert gw.counters["site_hello_waits_from_the_predecessors_start"] == 1
    assert gw.suspect_at[1] == pytest.approx(2.41 + sr.SITE_TAKEOVER_HELLO_S)
    assert gw.asked_since_s == {1: 0.0}  # (a handover from us carries it on)
    # a1 chosen at 1.0 (a ring that held all of site 0 from then): its wait ends at 1.0 + 1.6
    gw = gateway("a2", SITES_B2)
    regular(gw, ["a2"])
    regular(gw, ["a1", "a2"], 1.0)
    assert not gw.is_representative()
    regular(gw, ["a2"], 1.5)
    assert gw.suspect_at[1] == pytest.approx(1.0 + SILENCE_S + sr.SITE_GRACE_S)
    # a record of b delivered since: its silence counts from that record, as before
    gw = taken_over(heard_at=3.0, now=5.0)
    assert gw.counters["site_hello_waits_from_the_predecessors_start"] == 0
    assert gw.suspect_at[1] == pytest.approx(5.0 + sr.SITE_HELLO_WAIT_S)


def test_a_takeover_keeps_the_links_our_site_reported_down_until_they_start():
    """Our old representative reported its link to b down (a LINKS record, in our ring): the
    new one must not report it up before it runs (the others would route through us), and the
    report dates b's silence (the link had heard nothing for its silence time)."""
    gw = gateway("a2", SITES_B2)
    regular(gw, ["a1", "a2"])
    gw.ring_output(carrier([sr._links_record(0, 1, (), (1,))], 6), 3.0)
    assert gw.heard_s[1] == pytest.approx(3.0 - SILENCE_S)
    into_ring = []
    gw.orderer.submit = lambda msg, urgent=False: into_ring.append(msg) or True
    # (taken over early in the report's grace: the grace, not the HELLO waits, ends last)
    took_over = 3.0 + sr.SITE_GRACE_S / 2
    assert took_over + sr.SITE_TAKEOVER_HELLO_S < 3.0 + sr.SITE_GRACE_S
    regular(gw, ["a2"], took_over)
    assert gw.dead_links == {1} and gw.suspect_at[1] == pytest.approx(3.0 - SILENCE_S + SILENCE_S + sr.SITE_GRACE_S)
    gw.tick(took_over + 0.05)
    links = [r for m in into_ring if m.kind == sr.SITES for r in sr.decode_site_records(m.data)
             if r.kind == sr.SITE_LINKS]
    assert links == []  # nothing new to say: the link is still down
    gw.hop_datagram("b1", sr.encode_site_hello(sr.SiteHello(("b1", 1), 1, False, {}, 0, (0, 1), sr.hop_session(1, 0))), took_over + 0.1)
    gw.tick(took_over + 0.1)
    links = [sr.decode_site_view_body(r.body) for m in into_ring if m.kind == sr.SITES
             for r in sr.decode_site_records(m.data) if r.kind == sr.SITE_LINKS]
    assert links == [(frozenset(), {})]  # now it runs: up


def reported_down_then_taken_over(now, up_at=None):
    """Our ring delivers a1's LINKS record of its link to b down at 3.0 (and, at `up_at`, one
    of it up again); a1 dies and a2 takes over at `now`."""
    gw = gateway("a2", SITES_B2)
    regular(gw, ["a1", "a2"])
    gw.ring_output(carrier([sr._links_record(0, 1, (), (1,))], 6), 3.0)
    if up_at is not None:
        gw.ring_output(carrier([sr._links_record(0, 2, (), ())], 7), up_at)
    regular(gw, ["a2"], now)
    assert gw.is_representative() and gw.wide
    return gw


def test_a_takeover_counts_its_predecessors_hello_wait_from_our_sites_links_report():
    """a1 reported its link to b down at 3.0, and said HELLO there since: a2, which takes over
    long after, waits SITE_TAKEOVER_HELLO_S for b's answer to its own HELLO, not the whole
    SITE_HELLO_WAIT_S again (seed 1834: a site killed, left out 3.06 s after the kill)."""
    assert sr.SITE_TAKEOVER_HELLO_S < sr.SITE_HELLO_WAIT_S
    gw = reported_down_then_taken_over(now=5.0)
    assert gw.link_down_s == {1: pytest.approx(3.0)}
    assert gw.suspect_at[1] == pytest.approx(5.0 + sr.SITE_TAKEOVER_HELLO_S)
    # soon after the report: the link's grace, counted from the report, is the later
    gw = reported_down_then_taken_over(now=3.2)
    assert gw.suspect_at[1] == pytest.approx(3.0 - SILENCE_S + SILENCE_S + sr.SITE_GRACE_S)
    # reported up again before the takeover: nothing says a HELLO went unanswered
    gw = reported_down_then_taken_over(now=5.0, up_at=3.5)
    assert gw.link_down_s == {} and gw.suspect_at[1] == pytest.approx(5.0 + sr.SITE_HELLO_WAIT_S)


def test_the_state_a_late_daemon_takes_carries_the_silences_and_the_merges_given_up():
    """A daemon that takes the sites' state (and may represent the site next) knows how long
    ago each site was heard (ages: the daemons' clocks are their own) and the GIVEUPs it must
    resend to a site that decided that merge."""
    gw = gateway("a2")
    regular(gw, ["a1", "a2"])
    gw.ring_output(carrier([remote(1, 5)], 6), 4.0)
    gw.ring_output(carrier([sr._links_record(0, 1, (), (1,))], 7), 4.1)  # (our link to b down)
    giveup = sr.SiteRecord(sr.SITE_GIVEUP, 0, 0, 3, body=sr.encode_site_view_body({0, 1}, {}))
    gw.giveups, gw.given_up_view = {0: giveup}, 3
    ready = {s: sr.SiteRecord(sr.SITE_READY, s, 9, 2, body=sr.encode_site_view_body({0, 1}, {})) for s in (0, 1)}
    gw.merged_readies = dict(ready)  # (of the last merge installed: a site of it may lack one)
    gw.now_s = 4.25
    state = gw.export_state()
    late = gateway("a1")
    late.import_state(state, 100.0)
    assert late.heard_s == {1: pytest.approx(100.0 - 0.25)}
    assert late.link_down_s == {1: pytest.approx(100.0 - 0.15)}  # (a takeover's HELLO wait counts from it)
    assert (late.giveups, late.given_up_view) == ({0: giveup}, 3)
    assert late.merged_readies == ready
    for bad in (-1.0, float("nan"), "1", float("inf")):
        for table in ("heard_ages", "link_down_ages", "asked_ages"):
            broken = dict(state, **{table: {"1": bad}})
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
    # (site b is one daemon: its HELLO's time, not a successor's grace)
    assert late.suspect_at[1] == pytest.approx(max(100.05, 99.0 + SILENCE_S) + sr.SITE_HELLO_WAIT_S)



#: (the handover tests) site 0's ring never holds all of it, so a2 does not know when a1 began
#: to say HELLO (see test_a_takeover_counts_a_never_heard_sites_silence_from_when_its_...):
#: a2's own first HELLO, at its takeover, is the moment a handover carries
SITES_A3B2 = [["a1", "a2", "a3"], ["b1", "b2"]]


def handed_over(heard_at=None, hand_over_at=2.3, export_first=True):
    """a1 represents site 0 and dies; a2 takes over at 2.0 and says HELLO to site b (which
    never answers); a1, restarted, joins a2's ring at `hand_over_at` and takes a2's state
    (a1 comes first in spread.conf: it represents the site next). Our ring delivered b's
    message at heard_at (never, with None). export_first: a2 sends the state before it sees
    the new representative (seed 20768), else after (seed 109 --lan-splits: the daemon that
    joined held a fork's state, so it was eligible at once)."""
    donor = gateway("a2", SITES_A3B2)
    regular(donor, ["a1", "a2"])
    if heard_at is not None:
        donor.ring_output(carrier([remote(1, 5)], 6), heard_at)
    regular(donor, ["a2"], 2.0)
    assert donor.is_representative() and donor.wide
    if not export_first:
        regular(donor, ["a1", "a2"], hand_over_at)
        assert donor.representative == "a1"
    donor.now_s = hand_over_at
    state = donor.export_state()
    orderer = sr.RingOrderer("a1", 1, SITES_A3B2[0], random.Random(1))
    late = sr.SiteGateway("a1", SITES_A3B2, COSTS, orderer, sr.HopSettings(), now=hand_over_at)
    late.import_state(state, hand_over_at)
    late.ring_members = frozenset(["a1", "a2"])
    late.choose_representative(hand_over_at)
    assert late.is_representative() and late.wide
    return donor, late


@pytest.mark.parametrize("export_first", [True, False])
def test_a_handover_to_a_daemon_that_joined_keeps_the_hello_wait_its_predecessor_began(export_first):
    """a2 said HELLO to b from 2.0 on and would have suspected b at 2.0 +
    SITE_HELLO_WAIT_S (b heard long ago); a1 takes over at 2.3: its own HELLO gets
    SITE_TAKEOVER_HELLO_S, the rest of the wait counts from a2's first HELLO, as after a
    LINKS report of the link down. It waited SITE_HELLO_WAIT_S afresh: seed 20768 left a
    killed site out 3.01 s after the kill, seed 109 --lan-splits 3.17 s (now 2.66 s, 2.69 s)."""
    donor, late = handed_over(heard_at=0.5, export_first=export_first)
    if export_first:  # (a2 still represents the site: when it would suspect b)
        assert donor.suspect_at[1] == pytest.approx(2.0 + sr.SITE_HELLO_WAIT_S)
    assert late.suspect_at[1] == pytest.approx(max(2.3 + sr.SITE_TAKEOVER_HELLO_S, 2.0 + sr.SITE_HELLO_WAIT_S))
    assert late.suspect_at[1] < 2.3 + sr.SITE_HELLO_WAIT_S
    # read once: a later takeover by a1 has no such moment (a2 or others asked since)
    assert getattr(late, "taken_asked_s", {}) == {}


def test_a_handover_counts_a_never_heard_sites_silence_from_the_first_hello():
    """Site b killed before any record of it reached our ring: a2's suspicion comes a silence
    and a grace after its first HELLO (2.0), and a1, taking over at 2.3, keeps that moment
    rather than count them afresh (seed 20596: c1 took over from c2 1.3 s after c2 went wide
    and left b out 4.10 s after the kill; now 2.80 s)."""
    donor, late = handed_over(heard_at=None)
    assert donor.suspect_at[1] == pytest.approx(2.0 + SILENCE_S + sr.SITE_GRACE_S)
    assert late.suspect_at[1] == pytest.approx(2.0 + SILENCE_S + sr.SITE_GRACE_S)


def test_a_record_heard_after_the_first_hello_or_a_later_term_drops_the_predecessors_moment():
    """A record of b our ring delivered after a2's first HELLO (a link ran, or it came round):
    its silence counts from that record, and the HELLO wait from now, as before. And a2's
    moment is of its own term: once the representation moved away from it and on (a1 gone
    again), a2 asks afresh."""
    donor = gateway("a2", SITES_A3B2)
    regular(donor, ["a1", "a2"])
    regular(donor, ["a2"], 2.0)
    donor.ring_output(carrier([remote(1, 5)], 6), 2.2)
    donor.now_s = 2.3
    late = sr.SiteGateway("a1", SITES_A3B2, COSTS, sr.RingOrderer("a1", 1, SITES_A3B2[0], random.Random(1)),
                          sr.HopSettings(), now=2.3)
    late.import_state(donor.export_state(), 2.3)
    late.ring_members = frozenset(["a1", "a2"])
    late.choose_representative(2.3)
    assert late.suspect_at[1] == pytest.approx(max(2.3 + sr.SITE_HELLO_WAIT_S, 2.2 + SILENCE_S + sr.SITE_GRACE_S))
    regular(donor, ["a1", "a2"], 2.3)  # a2 hands over: it keeps its moment for the state
    assert donor.representative == "a1" and donor.asked_since_s == {1: 2.0}
    regular(donor, ["a2"], 4.0)  # a1 died: a2 takes over again, and its old moment is gone
    assert donor.is_representative() and donor.asked_since_s == {1: 4.0}
    # a link that starts ends the asking
    donor.hop_datagram("b1", sr.encode_site_hello(sr.SiteHello(("b1", 1), 1, False, {}, 0, (0, 1), sr.hop_session(1, 0))), 4.1)
    assert 1 in donor.links and donor.asked_since_s == {}


# ---- a site where nobody can take over: no grace for a successor's HELLO -------------------------

def linked(sites, now=0.1):
    """a1 represents site 0 and its link to b1 has started (b1's answer at `now`)."""
    gw = gateway("a1", sites)
    regular(gw, ["a1", "a2"])
    assert gw.wide
    gw.hop_datagram("b1", sr.encode_site_hello(sr.SiteHello(("b1", 1), 1, False, {}, 0, (0, 1), sr.hop_session(1, 0))), now)
    assert 1 in gw.links
    gw.into_ring = []  # what it submits to its ring
    gw.orderer.submit = lambda msg, urgent=False: gw.into_ring.append(msg) or True
    return gw


def silence_fires(gw):
    """Tick until the link's dead-peer rule fires (b1 says nothing); returns when, and when
    the site was suspected (None: not yet)."""
    now = gw.links[1].next_deadline_s()
    while 1 in gw.links:
        gw.tick(now)
        died = now
        now = gw.next_deadline_s()
    assert gw.counters["hop_peer_dead_silence"] == 1
    return died


def suspects(gw):
    return [sr.decode_site_view_body(r.body)[0] for m in gw.into_ring if m.kind == sr.SITES
            for r in sr.decode_site_records(m.data) if r.kind == sr.SITE_SUSPECT]


def test_a_site_of_one_daemon_is_suspected_a_hello_wait_after_its_link_falls_silent():
    """Site b is b1 alone: nobody can say HELLO in its place, so no successor's grace after
    the silence; only b1's own answer is waited for (it may live: one end of a link can fall
    silent while the other lives, and a HELLO starts both afresh)."""
    gw = linked(SITES)
    assert gw.no_successor(1) and not gw.no_successor(0)
    died = silence_fires(gw)
    assert any("nobody there can take over" in line for line in gw.log)
    assert gw.suspect_at[1] == pytest.approx(died + sr.SITE_HELLO_WAIT_S)
    gw.tick(died + sr.SITE_HELLO_WAIT_S - 0.01)
    assert suspects(gw) == []
    gw.tick(died + sr.SITE_HELLO_WAIT_S)
    assert suspects(gw) == [frozenset({1})]


def test_a_site_of_several_daemons_still_gets_its_grace_after_the_silence():
    gw = linked(SITES_B2)
    died = silence_fires(gw)
    assert gw.suspect_at[1] == pytest.approx(died + sr.SITE_GRACE_S)
    gw.tick(died + sr.SITE_GRACE_S / 2)
    assert suspects(gw) == []
    gw.tick(died + sr.SITE_GRACE_S)
    assert suspects(gw) == [frozenset({1})]


def test_a_site_of_one_daemon_whose_answer_comes_keeps_its_link_and_its_view():
    gw = linked(SITES)
    died = silence_fires(gw)
    gw.hop_datagram("b1", sr.encode_site_hello(sr.SiteHello(("b1", 1), 1, True, {}, 0, (0, 1), sr.hop_session(2, 0))), died + 0.2)
    assert 1 in gw.links and 1 not in gw.suspect_at
    gw.tick(died + 1.0)
    assert suspects(gw) == []


def test_a_takeover_gives_a_site_of_one_daemon_no_successors_grace_after_its_silence():
    gw = taken_over(heard_at=1.0, now=1.2, sites=SITES)
    assert gw.suspect_at[1] == pytest.approx(1.0 + SILENCE_S + sr.SITE_HELLO_WAIT_S)
    gw = taken_over(heard_at=1.0, now=2.1, sites=SITES)
    assert gw.suspect_at[1] == pytest.approx(2.1 + sr.SITE_HELLO_WAIT_S)
    gw = taken_over(heard_at=None, now=5.0, sites=[["a1", "a2", "a3"], ["b1"]])  # (since when a1 asked: unknown)
    assert gw.suspect_at[1] == pytest.approx(5.0 + SILENCE_S + sr.SITE_HELLO_WAIT_S)
    gw = taken_over(heard_at=None, now=1.2, sites=SITES)  # (a1 asked since 0.0)
    assert gw.suspect_at[1] == pytest.approx(0.0 + SILENCE_S + sr.SITE_HELLO_WAIT_S)


MESH3 = [[0, 1, 1], [1, 0, 1], [1, 1, 0]]
SITES3 = [["a1", "a2"], ["b1", "b2"], ["c1", "c2"]]


def linked_mesh(now=0.1):
    """a1 represents site 0 of a mesh of three sites of two daemons, its links to b1 and c1
    started."""
    gw = gateway("a1", SITES3, MESH3)
    regular(gw, ["a1", "a2"])
    for site, peer in ((1, "b1"), (2, "c1")):
        gw.hop_datagram(peer, sr.encode_site_hello(sr.SiteHello((peer, 1), site, False, {}, 0, (0, 1, 2), sr.hop_session(1, 0))), now)
    assert sorted(gw.links) == [1, 2]
    gw.into_ring = []
    gw.orderer.submit = lambda msg, urgent=False: gw.into_ring.append(msg) or True
    return gw


@pytest.mark.parametrize("reported_after_death_s", [-0.1, 0.4])
def test_a_link_in_its_grace_that_cuts_the_last_path_is_waited_for_until_its_grace_ends(
        reported_after_death_s):
    """c reported its link to b down, in its grace, when our ring delivered its LINKS at
    `reported_at`; our own link to b fell silent at 1.1 and its grace ended (1.1 +
    SITE_GRACE_S) with no HELLO from b. c's link may still come back (a successor of b says
    HELLO to c within its grace): we wait for it, but only until a grace after c's report,
    not a grace more from now (which cost a whole grace when both links died of b's death
    together)."""
    assert reported_after_death_s < sr.SITE_GRACE_S  # (c's report comes within our grace)
    died, reported_at = 1.1, 1.1 + reported_after_death_s
    grace_ends = died + sr.SITE_GRACE_S
    suspected_at = max(grace_ends, reported_at + sr.SITE_GRACE_S)
    gw = linked_mesh()
    gw.ring_output(carrier([sr._links_record(2, 1, (), (1,))], 6), reported_at)
    gw._drop_link(1, "peer dead (silence)", died)
    assert gw.suspect_at[1] == pytest.approx(grace_ends)
    gw.tick(grace_ends)
    if suspected_at > grace_ends:
        assert suspects(gw) == [] and gw.suspect_at[1] == pytest.approx(reported_at + sr.SITE_GRACE_S)
        gw.tick(suspected_at - 0.01)
        assert suspects(gw) == []
        gw.tick(suspected_at)
    assert suspects(gw) == [frozenset({1})]


def test_a_link_in_its_grace_to_a_site_of_one_daemon_has_a_hello_wait_for_its_grace():
    """As above, c's link to b in its grace cuts our last path to b; b is b1 alone, so c
    waits SITE_HELLO_WAIT_S for b1's answer, not a successor's grace: so do we."""
    gw = gateway("a1", [["a1", "a2"], ["b1"], ["c1", "c2"]], MESH3)
    regular(gw, ["a1", "a2"])
    for site, peer in ((1, "b1"), (2, "c1")):
        gw.hop_datagram(peer, sr.encode_site_hello(sr.SiteHello((peer, 1), site, False, {}, 0, (0, 1, 2), sr.hop_session(1, 0))), 0.1)
    gw.into_ring = []
    gw.orderer.submit = lambda msg, urgent=False: gw.into_ring.append(msg) or True
    gw.ring_output(carrier([sr._links_record(2, 1, (), (1,))], 6), 1.2)
    gw._drop_link(1, "peer dead (silence)", 1.1)
    assert gw.suspect_at[1] == pytest.approx(1.1 + sr.SITE_HELLO_WAIT_S)
    gw.tick(1.6)
    assert suspects(gw) == [] and gw.suspect_at[1] == pytest.approx(1.2 + sr.SITE_HELLO_WAIT_S)
    gw.tick(1.7)
    assert suspects(gw) == [frozenset({1})]


def test_after_a_merge_a_link_cut_between_two_sites_of_one_old_view_is_routed_through_the_other_side():
    """Views {a, b} and {c} merged (a mesh of three) at limit 4: a merged view's trees carry a
    site's records to the sites of its old view through those sites only (merged_view_trees),
    so in a's tree c is a leaf. Then the a - b link is cut and a reports it (a LINKS record): a
    and b still reach each other through c (routed around, nobody suspected), so c must relay
    a's records to b. Before, b was unreachable in a's tree as long as the merged view lasted:
    c sent b nothing of a, and the order stopped at b for good (seed 2's mesh, a - b cut 2.5 s
    after the heal). Now c takes b as its child in a's tree once every site has said, in the
    merged view, an ARU of at least the merge's limit (before, b may lack a's last messages of
    the old view, which c never had, and c's relay of a's FRONTIER would carry b over that gap:
    seed 1789 --cut-after-merge); then it sends b what b lacks of a's stream (b's positions)
    and forwards a's later records."""
    gw = gateway("c1", SITES3, MESH3)
    regular(gw, ["c1", "c2"])
    for site, peer in ((0, "a1"), (1, "b1")):
        gw.hop_datagram(peer, sr.encode_site_hello(sr.SiteHello(
            (peer, 1), site, False, {}, 0, (0, 1, 2), sr.hop_session(1, 2))), 0.1)
    assert sorted(gw.links) == [0, 1]
    gw.orderer.ring.safe_lts = 1000  # (what our ring delivers passes the gate at once)
    gw.hop_settings.prune = False  # (whole records: nobody here knows who is in group g)
    gw.tree_groups = {0: frozenset({0, 1}), 1: frozenset({0, 1}), 2: frozenset({2})}
    gw.tree_groups_limit_lts = 4  # (as _install_joined leaves them)
    gw.trees = gw._view_trees()
    assert gw.trees[0].parent == {0: None, 1: 0, 2: 0} and gw.trees[0].children(2) == []
    sent = bytearray()  # (what went down the link to b1, as a byte stream of records)
    submit = gw.links[1].submit
    gw.links[1].submit = lambda payload, now: (sent.extend(payload), submit(payload, now))[1]
    of_a = lambda seq, lts: remote(seq, lts, b"a%d" % seq, site=0, origin="a1")

    def to_b():
        """a's records for b: gone down the link, or waiting for it (a partial payload waits
        while b1's ACKs, never sent here, leave packets queued: _flush_links)."""
        gw.tick(gw.now_s + 0.01)
        stream = bytes(sent) + bytes(gw._out_bytes[1])
        return [r.site_seq for r in sr.SiteRecordReader().feed(stream) if r.kind == sr.SITE_MSG and r.site == 0]

    gw.ring_output(carrier([of_a(1, 5), of_a(2, 6), of_a(3, 7)], 8, origin="c1"), 0.2)
    assert to_b() == []  # (b gets them from a, on their direct link)
    gw.ring_output(carrier([sr._links_record(0, 1, (1,), ())], 9, origin="c1"), 0.3)
    # the sites' ARUs are not above the limit yet: b may lack a's old-view messages
    assert gw.trees[0].parent == {0: None, 2: 0} and to_b() == []
    # every site says, in the merged view, an ARU of at least the limit (exactly it: what is
    # just above it may have been lost on the cut link, seed 1656 --cut-after-merge)
    gw.ring_output(carrier([sr.SiteRecord(sr.SITE_ARU, s, 4, 0) for s in (0, 1)], 10, origin="c1"), 0.33)
    assert gw.trees[0].parent == {0: None, 2: 0}  # (c's own ARU not said yet)
    gw.ring_output(carrier([sr.SiteRecord(sr.SITE_ARU, 2, 4, 0)], 11, origin="c1"), 0.35)
    assert gw.trees[0].parent == {0: None, 1: 2, 2: 0}  # (b through c: before, unreachable)
    assert to_b() == [1, 2, 3]  # what b lacks of a's stream, by b's positions
    gw.ring_output(carrier([of_a(4, 12)], 13, origin="c1"), 0.4)  # (the links live: < peer_silence_s)
    assert to_b() == [1, 2, 3, 4]
    # c's own tree and b's keep their paths: only what no path within a view reaches moves
    assert gw.trees[2].parent == {2: None, 0: 2, 1: 2} and gw.trees[1].parent == {1: None, 0: 2, 2: 1}


def roster(site_seq, lts, ring_seq, names, origin="b1"):
    """Site b's ROSTER (SitesGroupCore's STATE message: its ring's seq and daemons) as a
    record of its stream."""
    msg = sr.DaemonMessage(sr.STATE, origin, "#roster#" + origin, sr.AGREED_MESS, [sr.ROSTER_GROUP],
                           data="\n".join([str(ring_seq)] + names).encode("latin-1"))
    return sr.SiteRecord(sr.SITE_MSG, 1, lts, site_seq, sr.AGREED_MESS, origin, sr.encode_message_body(msg))


def test_a_site_whose_last_roster_names_one_daemon_has_no_successor():
    """b1 and b2 in spread.conf, but b's ring lost b2 (its ROSTER names b1 alone): nobody can
    take over from b1. A newer ring with b2 back (restarted: "!b2") brings the grace back; an
    older ring's ROSTER delivered late says nothing; a daemon that takes our state knows it."""
    gw = gateway("a2", SITES_B2)
    regular(gw, ["a1", "a2"])
    assert not gw.no_successor(1)
    gw.ring_output(carrier([roster(1, 5, 7, ["b1"])], 6), 1.0)
    assert gw.no_successor(1) and gw.site_rings == {1: (7, frozenset({"b1"}))}
    late = gateway("a1", SITES_B2)
    gw.now_s = 1.0
    late.import_state(gw.export_state(), 50.0)
    assert late.no_successor(1)
    gw.ring_output(carrier([roster(2, 8, 9, ["!b2", "b1"], origin="b1")], 9), 2.0)
    assert not gw.no_successor(1)
    gw.ring_output(carrier([roster(3, 10, 8, ["b1"])], 11), 3.0)  # (ring 8: older than 9)
    assert not gw.no_successor(1)
    # the takeover rule follows it: no grace after b's silence while b1 was alone
    gw = taken_over(heard_at=1.0, now=2.1)
    assert gw.suspect_at[1] == pytest.approx(1.0 + SILENCE_S + sr.SITE_GRACE_S)
    gw = gateway("a2", SITES_B2)
    regular(gw, ["a1", "a2"])
    gw.ring_output(carrier([roster(1, 5, 7, ["b1"])], 6), 1.0)
    regular(gw, ["a2"], 1.3)
    assert gw.suspect_at[1] == pytest.approx(1.0 + SILENCE_S + sr.SITE_HELLO_WAIT_S)
    for bad in ([7, ["c1"]], [7, "b1"], [-1, ["b1"]]):
        broken = dict(gw.export_state(), site_rings={"1": bad})
        with pytest.raises(ValueError):
            gateway("a1", SITES_B2).import_state(broken, 50.0)


def test_a_new_incarnation_of_a_site_forgets_its_old_roster():
    gw = gateway("a2", SITES_B2)
    regular(gw, ["a1", "a2"])
    gw.ring_output(carrier([sr.SiteRecord(sr.SITE_EPOCH, 1, 0, 7), roster(1, 5, 7, ["b1"])], 6), 1.0)
    assert gw.no_successor(1)
    gw.ring_output(carrier([sr.SiteRecord(sr.SITE_EPOCH, 1, 0, 8)], 9), 2.0)
    assert not gw.no_successor(1)

# ---- UNRELIABLE across sites: a record outside the stream ----------------------------------------

def remote_unreliable(data=b"u", origin="b1", site=1, service=sr.UNRELIABLE_MESS, kind=sr.DATA,
                      seq=1, lts=0):
    """Another site's UNRELIABLE record: `seq` (its origin's UNRELIABLE sequence) and `lts`
    name it."""
    msg = sr.DaemonMessage(kind, origin, "#c#" + origin, service, ["g"], data=data)
    return sr.SiteRecord(sr.SITE_UNRELIABLE, site, lts, seq, sr.UNRELIABLE_MESS, origin,
                         sr.encode_message_body(msg))


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
    ours = local(5, b"u", sr.UNRELIABLE_MESS)
    ours.msg.seq = 9  # (its origin's UNRELIABLE sequence, as the ring hands it over)
    forward, records = gw._forward_unreliable, []
    gw._forward_unreliable = lambda r: (records.append(r), forward(r))
    gw.ring_output(ours, 0.1)
    assert gw.counters["site_unreliable_forwarded"] == 1 and gw.counters["site_records_forwarded"] == 0
    sent, = sr.decode_site_records(sr.encode_site_records(records))  # (named: it crosses the wire)
    assert (sent.kind, sent.site, sent.origin, sent.site_seq, sent.lts) == (sr.SITE_UNRELIABLE, 0, "a2", 9, 5)
    assert delivered(gw) == [b"u"]
    # the same record from b's end of the link goes into our ring, once per copy it sends
    gw._from_link(1, remote_unreliable(b"from b"))
    assert [r.kind for r in gw.to_ring] == [sr.SITE_UNRELIABLE]


def test_a_second_copy_of_an_unreliable_record_is_neither_delivered_nor_passed_on():
    """While the trees change, two sites may each send us b's record (one under its old tree,
    one under its new): our ring brings both, every daemon of ours keeps the first. Told apart
    by origin, sequence and lts: another message of b1's, or b1 restarted (its sequence from 1
    again, at a later lts), is delivered."""
    gw = gateway()
    regular(gw, ["a1", "a2"])
    gw.poll()
    gw.ring_output(carrier([remote_unreliable(b"once", seq=4, lts=20)], 6), 1.0)
    gw.ring_output(carrier([remote_unreliable(b"once", seq=4, lts=20),  # the other parent's copy
                            remote_unreliable(b"next", seq=5, lts=20),
                            remote_unreliable(b"restarted", seq=4, lts=31)], 7), 1.1)
    gw.ring_output(carrier([remote_unreliable(b"once", seq=4, lts=20)], 8), 1.2)  # a link's resending
    assert delivered(gw) == [b"once", b"next", b"restarted"]
    assert gw.counters["site_unreliable_duplicates"] == 2
    assert gw.counters["site_unreliable_delivered"] == 3


def test_the_unreliable_names_kept_are_bounded_per_site():
    gw = gateway()
    regular(gw, ["a1", "a2"])
    gw.poll()
    window = sr.UNRELIABLE_DUP_WINDOW
    for seq in range(1, window + 11):
        assert not gw._unreliable_again(remote_unreliable(seq=seq))
    order, names = gw.unreliable_seen[1]
    assert len(order) == len(names) == window
    assert gw._unreliable_again(remote_unreliable(seq=window + 10))  # a recent one: still known
    assert not gw._unreliable_again(remote_unreliable(seq=1))  # the oldest went first
    assert not gw._unreliable_again(remote_unreliable(site=2, origin="c1", seq=5))  # its own site's
    assert len(gw.unreliable_seen[1][0]) == window


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


# ---- a hostile LAN: what a sniffer's copies and a forger's HELLOs can do -------------------------

def linked_b1(name="a1", peer=("b1", 1), count=1):
    """A representative of site 0 with a link to b1 (its `count`th end of the link to site 0)."""
    gw = gateway(name)
    regular(gw, ["a1", "a2"])
    gw.poll()
    session = sr.hop_session(count, 0)
    gw.hop_datagram(peer[0], sr.encode_site_hello(sr.SiteHello(peer, 1, True, {}, 0, (0, 1), session)), 0.1)
    gw.poll()
    return gw, gw.links[1]


def test_a_hop_packet_of_the_peers_link_to_another_site_is_refused():
    """b1 talks to sites 0 and 2, each link's first session: a packet of its link to site 2,
    captured and sent to us from b1's address (it passes any key: b1 signed it), is not ours:
    its session names site 2. Before sessions named their site both were session 1, and such a
    copy took a seq of our stream (the real packet of that seq then dropped as a duplicate)."""
    gw, link = linked_b1()
    theirs = sr.encode_hop_data(("b1", 1), 1, b"records for site 2", session=sr.hop_session(1, 2))
    gw.hop_datagram("b1", theirs, 0.2)
    assert link.counters["dropped_old_session"] == 1 and link.r_highest_seq == 0
    ours = sr.encode_hop_data(("b1", 1), 1, b"", session=sr.hop_session(1, 0))
    gw.hop_datagram("b1", ours, 0.3)
    assert link.r_highest_seq == 1
    # and a HELLO on its way to site 2 starts nothing here
    to_c = sr.SiteHello(("b1", 1), 1, True, {}, 0, (0, 1), sr.hop_session(2, 2))
    gw.hop_datagram("b1", sr.encode_site_hello(to_c), 0.4)
    assert gw.links[1] is link and gw.counters["hellos_refused_other_link"] == 1
    assert gw.hop_counters() == {"hellos_refused_other_link": 1, "link_dropped_old_session": 1}


def test_a_replayed_hello_of_an_older_session_never_restarts_a_live_link():
    """The peer's ends take growing sessions: a request of an older one is a copy captured on
    the LAN (it passes any key), and must not start our end afresh (the peer, whose end lives,
    would drop what our new end sends: the link silent until both dead-peer rules fire)."""
    gw, link = linked_b1(count=3)
    old = sr.SiteHello(("b1", 1), 1, True, {}, 0, (0, 1), sr.hop_session(2, 0))
    gw.hop_datagram("b1", sr.encode_site_hello(old), 0.2)
    assert gw.links[1] is link and gw.counters["hellos_old_session"] == 1
    newer = sr.SiteHello(("b1", 1), 1, True, {}, 0, (0, 1), sr.hop_session(4, 0))
    gw.hop_datagram("b1", sr.encode_site_hello(newer), 0.3)
    assert gw.links[1] is not link and gw.links[1].peer_session == sr.hop_session(4, 0)


def _hop_packets(gw):
    """What a gateway sends on its HOP port now: (daemon, datagram)."""
    return [(o.dest, o.packet) for o in gw.poll() if isinstance(o, sr.SendHop)]


def _carry(sender, packets, to, now):
    """Hands `sender`'s datagrams for the gateways in `to` (name -> gateway) over; the rest
    (to daemons not in the test) are lost."""
    for dest, packet in packets:
        if dest in to:
            to[dest].hop_datagram(sender.name, packet, now)


def test_an_answer_of_a_newer_session_from_our_links_peer_restarts_the_link_at_once():
    """Seed 103981 (c killed; b1 killed and started again as b's ring re-formed): b2 and b1 each
    represented site b for a moment and both asked a1. a1 answered b1 (its end for b1), then b2
    (its link now b2's), then b1's answer to a1's answer came: a1 started a new end for b1 under
    a new session. b1's end read a1's first session: each end dropped the other's packets as an
    old session's, and the link carried nothing until b1's silence rule (1 s): b's view without
    c came 1.1 s after its decision. Now b1 asks again at once under its next session; both
    ends start again and read each other's."""
    sites, costs = [["a1"], ["b1", "b2"]], [[0, 1], [1, 0]]
    a1, b1 = gateway("a1", sites, costs), gateway("b1", sites, costs)
    regular(a1, ["a1"])
    regular(b1, ["b1", "b2"])
    assert a1.wide and b1.wide
    ends = {"a1": a1, "b1": b1}
    _hop_packets(a1)  # (a1's first HELLOs: lost)
    b1_asks = _hop_packets(b1)
    _carry(b1, b1_asks, {"a1": a1}, 0.1)  # a1 answers b1: its first end
    a1_answers_b1 = _hop_packets(a1)
    b2_asks = sr.SiteHello(("b2", 1), 1, True, {}, 0, (0, 1), sr.hop_session(1, 0))
    a1.hop_datagram("b2", sr.encode_site_hello(b2_asks), 0.11)  # a1 answers b2: its link is b2's
    assert a1.links[1].peer == ("b2", 1)
    _hop_packets(a1)
    _carry(a1, a1_answers_b1, {"b1": b1}, 0.12)  # b1 starts its end on a1's first answer
    read_first = b1.links[0].peer_session
    _carry(b1, _hop_packets(b1), {"a1": a1}, 0.13)  # b1's answer: a1 starts a new end for b1
    assert a1.links[1].peer == ("b1", 1) and a1.links[1].session > read_first
    now = 0.14
    for _ in range(6):  # the HELLOs go back and forth until neither end sends one
        a_out, b_out = _hop_packets(a1), _hop_packets(b1)
        if not any(sr.hop_packet_type(p) == sr.PT_SITE_HELLO for _, p in a_out + b_out):
            break
        _carry(a1, a_out, ends, now)
        _carry(b1, b_out, ends, now)
        now += 0.01
    a_end, b_end = a1.links[1], b1.links[0]
    assert (b_end.peer_session, a_end.peer_session) == (a_end.session, b_end.session)
    assert b1.counters["hop_links_asked_again"] == 1 and now < 0.2  # (a round trip, not a second)
    # and what a1's end sends now is read at b1's (before: dropped as an old session's)
    a1.tick(now + a1.hop_settings.keepalive_s)
    _carry(a1, _hop_packets(a1), {"b1": b1}, now + a1.hop_settings.keepalive_s)
    assert b_end.counters["dropped_old_session"] == 0 and b_end._heard_s > now
    assert 0 not in b1.suspect_at


def test_the_peers_data_of_a_newer_session_asks_again_at_once():
    """Seed 250658 (c killed; b1, b's representative, killed and started again as b's ring
    re-formed): a1's request crossed b1's at the takeover. b1 started its end on a1's request,
    reading the session a1's end for b2 then took; a1 started a new end for b1 on b1's request,
    under its next session, and both HELLO answers were lost. Nothing said so but a1's packets,
    which b1's end dropped as another session's (a1's PROPOSE among them) until its silence
    rule, a second later: 3.32 s from the kill to the view. Now a packet of the peer's very
    daemon under a newer session than ours reads asks again at once, as its answer does
    (test_an_answer_of_a_newer_session_...). An older session's packet (a copy of an end that
    is over, or captured) changes nothing."""
    gw, link = linked_b1(count=3)
    older = sr.encode_hop_data(("b1", 1), 1, b"", session=sr.hop_session(2, 0))
    gw.hop_datagram("b1", older, 0.2)
    assert gw.links[1] is link and link.counters["dropped_old_session"] == 1
    assert gw.counters["hop_links_asked_again_on_data"] == 0
    gw.poll()
    other_daemon = sr.encode_hop_data(("b2", 1), 1, b"", session=sr.hop_session(9, 0))
    gw.hop_datagram("b2", other_daemon, 0.25)  # (not our link's peer: nothing to ask)
    to_c = sr.encode_hop_data(("b1", 1), 1, b"", session=sr.hop_session(9, 2))
    gw.hop_datagram("b1", to_c, 0.26)  # (b1's link to site 2, captured: not ours either)
    assert gw.links[1] is link and gw.counters["hop_links_asked_again_on_data"] == 0
    newer = sr.encode_hop_data(("b1", 1), 1, b"", session=sr.hop_session(4, 0))
    gw.hop_datagram("b1", newer, 0.3)
    assert 1 not in gw.links and gw.counters["hop_links_asked_again_on_data"] == 1
    asked = [sr.decode_site_hello(p) for dest, p in _hop_packets(gw)
             if dest == "b1" and sr.hop_packet_type(p) == sr.PT_SITE_HELLO]
    assert asked and asked[0].request and asked[0].session > link.session


def test_a_record_or_hello_far_beyond_any_daemons_counters_is_refused():
    """Without a key a forger who sniffed a link's session can put records into its stream (what
    only a key stops). One with an lts at the wire's limit made our site's next lts one that no
    decoder takes (our ring and our stream cut off for good); a view seq there, our next view.
    Such records and HELLOs are refused: an lts grows by one per message, a view seq by one per
    change (LTS_AHEAD_MAX, RING_SEQ_AHEAD_MAX, as the ring bounds its own)."""
    gw, link = linked_b1()
    session = sr.hop_session(1, 0)
    far = [remote(1, sr.MAX_WIRE_COUNTER),
           sr.SiteRecord(sr.SITE_PROPOSE, 1, 3, sr.MAX_WIRE_COUNTER, body=sr.encode_site_view_body({0}, {}))]
    gw.hop_datagram("b1", sr.encode_hop_data(("b1", 1), 1, sr.encode_site_records(far), session=session), 0.2)
    assert gw.counters["site_records_refused_far_ahead"] == 2
    assert gw.orderer.transport.max_lts_seen < sr.LTS_AHEAD_MAX and not gw.to_ring
    near = remote(1, 1000)
    gw.hop_datagram("b1", sr.encode_hop_data(("b1", 1), 2, sr.encode_site_records([near]), session=session), 0.3)
    assert list(gw.to_ring) == [near] or gw.orderer.transport.max_lts_seen == 1000
    hello = sr.SiteHello(("b1", 1), 1, True, {}, sr.MAX_WIRE_COUNTER, (1,), sr.hop_session(2, 0))
    gw.hop_datagram("b1", sr.encode_site_hello(hello), 0.4)
    assert gw.counters["hellos_refused_view_ahead"] == 1 and gw.links[1] is link


def test_a_link_that_brought_records_above_a_message_it_never_brings_starts_again():
    """Without a key, a DATA forged in the link's sniffed session and next seq is handed up in
    the real packet's place (that one is then a duplicate, never NACKed): b's message 1 never
    comes, its message 2 waits above the hole. After STREAM_HOLE_WAIT_S the link starts again
    (our HELLO names what our ring holds: the peer sends the rest), without reporting it down."""
    gw, link = linked_b1()
    session = sr.hop_session(1, 0)
    gw.hop_datagram("b1", sr.encode_hop_data(("b1", 1), 1, sr.encode_site_records([remote(2, 7)]),
                                             session=session), 1.0)
    assert gw.counters["site_records_held_ahead"] == 1 and gw.links[1] is link
    for n, at in enumerate((1.5, 2.0, 2.5, 2.9), 1):  # (the peer's keep-alives: the silence rule hears them)
        gw.hop_datagram("b1", sr.encode_hop_ack(("b1", 1), 0, 1, session=session, control_seq=n), at)
        gw.tick(at)
    gw.tick(1.0 + sr.STREAM_HOLE_WAIT_S - 0.01)
    assert gw.links[1] is link
    assert gw.next_deadline_s() <= 1.0 + sr.STREAM_HOLE_WAIT_S
    gw.tick(1.0 + sr.STREAM_HOLE_WAIT_S)
    assert 1 not in gw.links and gw.counters["hop_links_restarted_for_a_hole"] == 1
    hellos = [sr.decode_site_hello(o.packet) for o in gw.poll()
              if isinstance(o, sr.SendHop) and sr.hop_packet_type(o.packet) == sr.PT_SITE_HELLO]
    assert hellos and hellos[-1].request and hellos[-1].positions[1] == 0
    assert hellos[-1].session == sr.hop_session(2, 1)  # our next end: b1 starts its own again
    assert 1 not in gw.dead_links  # (the link is not reported down: the trees stay)


def test_an_aru_of_the_merged_view_is_taken_at_or_below_the_lts_of_one_of_the_view_before():
    """An ARU counts only in its own view (_aru_record): once our ring installed a merged view,
    the peer's last ARU of the view before is refused where our ring delivers it. Its ARU of the
    merged view may name the same lts (seed 3163 --hostile 0.1 --key) or a lower one (seed 4314
    on the code of branch s12-mergekill: b1's ARU of view 1 at lts 270, of view 2 at 269, since
    the merged view's ARU counts the joined site's stream too); taken for a duplicate of the
    refused one, SAFE waited for ever for that site's ARU. The duplicate mark is per view."""
    gw, _ = linked_b1()
    sent = []
    gw.orderer.submit = lambda msg, urgent=False: sent.append(msg) or True
    session = sr.hop_session(1, 0)
    arus = [sr.SiteRecord(sr.SITE_ARU, 1, 270, 1),  # view 1's last ARU
            sr.SiteRecord(sr.SITE_ARU, 1, 269, 2),  # the merged view's, lower
            sr.SiteRecord(sr.SITE_ARU, 1, 269, 2),  # (a HELLO's resending: a duplicate)
            sr.SiteRecord(sr.SITE_ARU, 1, 270, 2)]  # the merged view's, at view 1's lts
    for seq, r in enumerate(arus, 1):
        gw.hop_datagram("b1", sr.encode_hop_data(("b1", 1), seq, sr.encode_site_records([r]), session=session),
                        0.1 + seq / 100)
    in_ring = [(r.lts, r.site_seq) for m in sent for r in sr.decode_site_records(m.data) if r.kind == sr.SITE_ARU]
    assert in_ring == [(270, 1), (269, 2), (270, 2)]
    assert gw.counters["site_records_duplicate"] == 1


def test_a_hole_that_fills_in_time_restarts_nothing():
    gw, link = linked_b1()
    session = sr.hop_session(1, 0)
    gw.hop_datagram("b1", sr.encode_hop_data(("b1", 1), 1, sr.encode_site_records([remote(2, 7)]),
                                             session=session), 1.0)
    gw.hop_datagram("b1", sr.encode_hop_data(("b1", 1), 2, sr.encode_site_records([remote(1, 5)]),
                                             session=session), 1.5)
    assert [r.site_seq for r in gw.to_ring if r.kind == sr.SITE_MSG] == [1, 2] or gw.injected[(sr.SITE_MSG, 1)] == 2
    for n, at in enumerate((2.0, 2.5, 2.9), 1):  # (the peer's keep-alives: the silence rule hears them)
        gw.hop_datagram("b1", sr.encode_hop_ack(("b1", 1), 0, 2, session=session, control_seq=n), at)
        gw.tick(at)
    gw.tick(1.0 + sr.STREAM_HOLE_WAIT_S + 0.1)
    assert gw.links[1] is link and gw.counters["hop_links_restarted_for_a_hole"] == 0
# ---- pruning after a merge: a joined site's members from its STATE ----------------------------

def group_op(kind, sender, group, lts, site=1, origin="b1"):
    """A JOIN / LEAVE of another site's member as it enters our merge (its interest record)."""
    body = sr.encode_message_body(sr.DaemonMessage(kind, origin, sender, sr.AGREED_MESS, [group]))
    return sr.SiteRecord(sr.SITE_MSG, site, lts, 0, sr.AGREED_MESS, origin, body)


def site_state(view, pairs, part=0, parts=1, origin="b1", site=1):
    """A part of a site's STATE after a merge, as SitesGroupCore._send_site_state writes it."""
    lines = ["3\t0\t1\t%s" % origin] + ["%s\t%s\t%s" % (g, m, d) for g, m, d in pairs]
    body = sr.encode_message_body(sr.DaemonMessage(
        sr.STATE, origin, "#sitestate#" + origin, sr.AGREED_MESS, [sr.SITES_STATE_GROUP, str(view)],
        part << 16 | parts, data="\n".join(lines).encode("latin-1")))
    return sr.SiteRecord(sr.SITE_MSG, site, 0, 0, sr.AGREED_MESS, origin, body)


def test_a_joined_site_is_known_again_from_its_state_then_its_joins_and_leaves_since_the_merge():
    gw = gateway()
    gw.interest_members[1] = {"g1": {"#u#b1"}}  # (stale: what b had before the partition)
    gw._interest_from_merge(1, 5)
    assert gw._may_owe(1, ["nobody"], 10)  # not known until its STATE
    # b's JOIN and LEAVE of the merged view that its ring ordered before its STATE
    gw._interest_record(group_op(sr.JOIN, "#v#b1", "g2", 8))
    gw._interest_record(group_op(sr.LEAVE, "#w#b1", "g3", 9))
    gw._interest_record(site_state(4, [("g9", "#x#b1", "b1")]))  # an older exchange's: ignored
    gw._interest_record(site_state(5, [("g3", "#w#b1", "b1"), ("g4", "#y#b1", "b1")], 0, 2))
    assert 1 not in gw.interest_known  # one part of two
    gw._interest_record(site_state(5, [("g5", "#z#a1", "a1")], 1, 2))  # (a1 is not b's daemon)
    assert 1 in gw.interest_known and gw.counters["site_interest_states"] == 1
    assert gw.interest_members[1] == {"g2": {"#v#b1"}, "g3": set(), "g4": {"#y#b1"}}
    assert not gw._may_owe(1, ["g1", "g5", "g9"], 10)  # the stale member and the foreign one: gone
    assert gw._may_owe(1, ["g2"], 10) and gw._may_owe(1, ["g4"], 10)
    assert gw._may_owe(1, ["g3"], 9) and not gw._may_owe(1, ["g3"], 10)  # left at lts 9
    gw._interest_record(site_state(5, [("g1", "#u#b1", "b1")]))  # (known: a late copy changes nothing)
    assert not gw._may_owe(1, ["g1"], 10)


def test_a_member_marked_as_a_silent_joiner_still_counts_for_pruning():
    """A site's STATE and a REJOIN mark a member that joined with no view of its group ("j",
    for its vs_set of its own: SitesGroupCore.silent_joins); the gateway reads it as a member
    all the same (seeds 52 and 56 --lan-splits --client-views lost messages when it did not)."""
    gw = gateway()
    gw._interest_from_merge(1, 5)
    gw._interest_record(site_state(5, [("g1", "#u#b1", "b1\tj"), ("g2", "#v#b1", "b1")]))
    assert gw.interest_members[1] == {"g1": {"#u#b1"}, "g2": {"#v#b1"}}
    body = sr.encode_message_body(sr.DaemonMessage(
        sr.STATE, "b1", "#rejoin#b1", sr.AGREED_MESS, [sr.REJOIN_GROUP], data=b"4\ng3\t#w#b1\tj"))
    gw._interest_record(sr.SiteRecord(sr.SITE_MSG, 1, 9, 0, sr.AGREED_MESS, "b1", body))
    assert gw._may_owe(1, ["g3"], 10)


def test_a_new_representatives_state_voids_the_parts_of_the_one_that_crashed():
    gw = gateway()
    gw._interest_from_merge(1, 5)
    gw._interest_record(site_state(5, [("g1", "#u#b1", "b1")], 0, 2, origin="b1"))
    # (the next representative: another daemon, here under another name than b's one)
    gw._interest_record(site_state(5, [("g2", "#v#b1", "b1")], 1, 2, origin="b2"))
    assert 1 not in gw.interest_known  # one part of b2's two
    gw._interest_record(site_state(5, [], 0, 2, origin="b2"))
    assert gw.interest_members[1] == {"g2": {"#v#b1"}}


def test_a_site_state_we_do_not_wait_for_changes_nothing():
    """The STATE of a site of our own view (we saw its joins and leaves): still known."""
    gw = gateway()
    gw._interest_record(group_op(sr.JOIN, "#v#b1", "g2", 8))
    gw._interest_record(site_state(5, []))
    assert 1 in gw.interest_known and gw.interest_members[1] == {"g2": {"#v#b1"}}


def test_a_late_daemon_takes_the_members_of_the_sites_its_ring_knows():
    """A restarted daemon that may represent the site next prunes as its ring does: the
    exporter's table of the sites it knows (one whose STATE is awaited stays unknown)."""
    gw = gateway("a2")
    regular(gw, ["a1", "a2"])
    gw._interest_record(group_op(sr.JOIN, "#v#b1", "g2", 8))
    gw._interest_record(group_op(sr.LEAVE, "#v#b1", "g2", 9))
    gw._interest_record(group_op(sr.JOIN, "#w#b1", "g3", 10))
    state = json.loads(json.dumps(gw.export_state()))  # (what the ring carries: JSON)
    late = gateway("a1")
    late.import_state(state, 100.0)
    assert late.interest_known == {1} and late.interest_members[1] == {"g2": set(), "g3": {"#w#b1"}}
    assert not late._may_owe(1, ["g1"], 11) and late._may_owe(1, ["g2"], 9) and late._may_owe(1, ["g3"], 11)
    gw._interest_from_merge(1, 4)  # (b joined us: its STATE awaited)
    late = gateway("a1")
    late.import_state(gw.export_state(), 100.0)
    assert late.interest_known == set() and late._may_owe(1, ["g1"], 11)
    for bad in ({"0": [{}, {}]}, {"1": [{"g": "x"}, {}]}, {"1": [{}, {"g": -1}]}, {"1": [{}]}):
        with pytest.raises(ValueError):
            gateway("a1").import_state(dict(state, interest=bad), 100.0)


def test_a_joined_site_whose_state_never_comes_stays_unknown_past_the_kept_joins(monkeypatch):
    monkeypatch.setattr(sr, "INTEREST_PENDING_OPS_MAX", 2)
    gw = gateway()
    gw._interest_from_merge(1, 5)
    for lts, group in ((8, "g1"), (9, "g2"), (10, "g3")):
        gw._interest_record(group_op(sr.JOIN, "#v#b1", group, lts))
    assert gw.interest_pending == {}
    gw._interest_record(site_state(5, []))  # (too late: what came before it is not kept)
    assert 1 not in gw.interest_known and gw._may_owe(1, ["g9"], 11)


# ---- a left-out site's ARU never crosses beyond the wire's limit -----------------------------

SITES_C = [["a1", "a2"], ["b1"], ["c1"]]
COSTS_C = [[0, 1, 1], [1, 0, 1], [1, 1, 0]]


def past_transitional(name="a1"):
    """A gateway of sites a, b, c installing view 1 without c (decided with c's ARU at 5),
    past its transitional view: c's ARU here is LOST_SITE_ARU, c still in live_sites."""
    gw = gateway(name, SITES_C, COSTS_C)
    regular(gw, ["a1", "a2"])
    gw.closing = sr.ViewClosing(1, [0, 1], frozenset({2}), {2: 0}, {2: 0}, 9, {2: 4}, aru={2: 5},
                                reason="sites [2] gone")
    gw._emit_view(sr.CONF_TRANSITIONAL)
    assert gw.streams[2].stable_aru == sr.LOST_SITE_ARU and 2 in gw.live_sites
    return gw


def test_a_proposal_made_past_a_transitional_view_says_the_left_out_sites_decided_aru():
    """(issue 10, seen with SITE_GRACE_S 0.6 s, seed 26 --lan-splits) b dies while view 1 is
    installed: the next PROPOSE carried c's LOST_SITE_ARU (2**62), which no link, ring or
    state could decode. It says the ARU decided for c, and decodes."""
    gw = past_transitional()
    passed = []
    gw._propose(2, {1}, passed)
    proposals = [r for r in passed if r.kind == sr.SITE_PROPOSE]
    assert len(proposals) == 1
    (back,) = sr.decode_site_records(sr.encode_site_records(proposals))
    lost, entries = sr.decode_site_view_body(back.body)
    assert lost == {1}
    assert entries[2][1] == 5 and entries[0][1] == gw.streams[0].stable_aru
    assert all(v <= sr.MAX_WIRE_COUNTER for e in entries.values() for v in e)


def test_a_gate_record_of_the_state_that_does_not_decode_is_refused_not_a_stop():
    """A state whose gate holds a record beyond the wire's limit (a peer's, as a PROPOSE with
    LOST_SITE_ARU was): the late daemon takes the state without it, counts and logs it,
    and keeps the gate's other records."""
    gw = gateway("a2")
    regular(gw, ["a1", "a2"])
    state = gw.export_state()
    bad = sr.SiteRecord(sr.SITE_PROPOSE, 0, 12, 2,
                        body=sr.encode_site_view_body({1}, {0: (3, sr.LOST_SITE_ARU, 7)}))
    good = sr.SiteRecord(sr.SITE_FRONTIER, 0, 12, 3)
    state["gate"] = [[6, 12, sr._records_text([bad, good]), 0]]
    late = gateway("a1")
    late.import_state(state, 100.0)
    assert [rs for _, _, rs, _ in late.gate] == [[good]]
    assert late.counters["state_records_refused"] == 1
    assert any("does not decode" in line for line in late.log)
    for cut in (sr._records_text([good])[:-4] + "AAAA", "not base64!"):  # (its framing broken: still an error)
        with pytest.raises(ValueError):
            gateway("a1").import_state(dict(state, gate=[[6, 12, cut, 0]]), 100.0)


def test_a_chained_views_transitional_part_leaves_out_the_survivor_that_died_after_its_decision():
    """(issue 10, seed 43 --lan-splits with SITE_GRACE_S 0.6 s) View 1 without c is decided
    here with b's PROPOSE; b, cut off, never had ours, decided nothing, and then left out c
    and a together (and a's messages above c's frontier). View 2 without b is decided before
    view 1's transitional view: what we deliver in that transitional part is not owed at b,
    so b is not named in it. With no next view decided, every survivor is."""
    for chained, trans_sites in ((False, [0, 1]), (True, [0])):
        gw = gateway("a1", SITES_C, COSTS_C)
        regular(gw, ["a1", "a2"])
        gw.poll()
        gw.closing = sr.ViewClosing(1, [0, 1], frozenset({2}), {2: 0}, {2: 0}, 9, {2: 4}, aru={2: 5})
        if chained:
            gw.closing_next = sr.ViewClosing(2, [0], frozenset({1}), {1: 0}, {1: 0}, 11, {1: 6}, aru={1: 6})
        gw._emit_view(sr.CONF_TRANSITIONAL)
        gw._emit_view(sr.CONF_REGULAR)
        views = [(o.kind, o.view_seq, o.sites) for o in gw.poll() if isinstance(o, sr.SiteViewChange)]
        assert views == [(sr.CONF_TRANSITIONAL, 1, trans_sites), (sr.CONF_REGULAR, 1, [0, 1])]


def test_the_state_a_rejoined_daemon_exports_carries_the_bodies_of_what_it_delivered_in_its_fork():
    """a2 was a fork of site a and took the kept state: the messages of it that a2 had
    delivered already in its fork's view keep their place in its merge without their body
    (_delivered_here), but the other daemons of the kept ring have not delivered them yet.
    A daemon that takes the state from a2 (a1, restarted) owes them in the same view: it
    gets their bodies, not a2's SKIPs (seed 208 --lan-splits before the fork_unread timing:
    the restarted b1 took the rejoined b2's state and never delivered 31 messages b3
    delivered in the same transitional view)."""
    sites, costs = [["a1", "a2"], ["b1"], ["c1"]], [[0, 1, 1], [1, 0, 1], [1, 1, 0]]
    donor = gateway("a2", sites, costs)
    regular(donor, ["a2"])
    donor.delivered_marks = {1: 10}  # (as import_state after its fork's view delivered up to lts 10)
    donor.ring_output(carrier([remote(1, 5, data=b"seen-in-the-fork")], 6), 1.0)
    donor.ring_output(carrier([remote(2, 11, data=b"new")], 12), 1.1)
    assert delivered(donor) == []  # (site c's stream said nothing yet: both wait in the merge)
    late = gateway("a1", sites, costs)
    late.import_state(donor.export_state(), 2.0)
    bodies = {m.site_seq: m.frags[0] for m in late.streams[1].ordered}
    assert bodies[1] != sr.SITE_SKIP_BODY and b"seen-in-the-fork" in bodies[1]
    assert b"new" in bodies[2]
    # the donor still delivers the first without its body (it delivered it in its fork)
    assert [m.frags[0] for m in donor.streams[1].ordered][0] == sr.SITE_SKIP_BODY


def _client(core, member):
    session = sr.ClientSession(len(core.local) + 1, core.daemon_name, lambda _: True, random.Random(0))
    session.private_group, session.group_membership = member, True
    core.add_session(session)
    return session


def _views(session):
    """(kind, members, vs_sets, the client's own vs_set) of each membership message queued."""
    out = []
    for raw in session.out.chunks:
        m = sr.decode_message(raw, 0, session.private_group)
        if m.is_transitional:
            out.append(("TRANS",))
        elif m.is_membership and not m.is_self_leave:
            mine = [sorted(s) for s in m.vs_sets if session.private_group in s]
            out.append(("REG", sorted(m.members), sorted(sorted(s) for s in m.vs_sets), mine[0] if mine else None))
    session.out.clear()
    return out


def _group_op(kind, member, group):
    return sr.DaemonMessage(kind, member.rsplit("#", 1)[1], member, sr.AGREED_MESS, [group])


def _rejoin(origin, ring_seq, pairs):
    return sr.DaemonMessage(sr.STATE, origin, "#rejoin#%s" % origin, sr.AGREED_MESS, [sr.REJOIN_GROUP],
                            data="\n".join([str(ring_seq)] + ["%s\t%s" % p for p in pairs]).encode())


class _Orderer(sr.Orderer):
    def __init__(self):
        self.submitted = []

    def submit(self, msg, urgent=False):
        self.submitted.append(msg)
        return True


def test_a_rejoin_in_the_sites_transitional_view_waits_for_the_regular_view():
    """Seed 6 --lan-splits --client-views: b3's client had REG_MEMB {ca1, cb3} of g (ca1 at
    site a); b2's fork took b3's table and sent a REJOIN of cb2; the sites' transitional view
    lost site a (TRANSITION); then the REJOIN was delivered, and b3's client got REG_MEMB
    {ca1, cb2, cb3} with ca1 in its own vs_set: a view ca1 never installs, and a vs_set
    saying ca1 came along with cb3, though site a is partitioned from us (EVS: a vs_set holds
    members that are virtually synchronous with each other, or crashed). b2's client, the
    REJOIN's own, got the same view. The REJOIN changes the table (alike everywhere), but
    the REG_MEMB waits for the regular view, as a ROSTER's does (_drop_daemons' hold): that
    view drops ca1 and gives cb2, back from another view (b2's fork), a vs_set of its own."""
    kept, fork = (sr.SitesGroupCore(n, _Orderer(), [["a1"], ["b1", "b2", "b3"]]) for n in ("b3", "b2"))
    clients = {"b3": _client(kept, "#c#b3"), "b2": _client(fork, "#c#b2")}
    kept.deliver(_group_op(sr.JOIN, "#c#a1", "g"))
    kept.deliver(_group_op(sr.JOIN, "#c#b3", "g"))
    fork.deliver(_group_op(sr.JOIN, "#c#b2", "g"))  # (in its fork's own order)
    assert [v[0] for c in clients.values() for v in _views(c)] == ["REG", "REG"]
    state = json.loads(json.dumps(kept.site_sync(sr.SiteSync("point", ["b2"], export=True))))  # (as sent)
    fork.site_sync(sr.SiteSync("install", ["b2"], groups=state, members=["b2", "b3"], ring_seq=7))
    assert _views(clients["b2"]) == [("TRANS",)]  # (the kept table lacks cb2)
    rejoin = fork.orderer.submitted[-1]
    assert rejoin.groups == [sr.REJOIN_GROUP]
    for core in (kept, fork):
        core.site_view_change(sr.SiteViewChange(sr.CONF_TRANSITIONAL, 1, [1], "sites [0] gone"))
    assert _views(clients["b3"]) == [("TRANS",)] and _views(clients["b2"]) == []
    both = ["#c#b2", "#c#b3"]
    for core in (kept, fork):
        core.deliver(rejoin)
        assert sorted(core.groups["g"].members) == ["#c#a1"] + both
    for client in clients.values():
        assert _views(client) == []  # (before: REG_MEMB {ca1, cb2, cb3}, ca1 with cb3)
    for core in (kept, fork):
        core.site_view_change(sr.SiteViewChange(sr.CONF_REGULAR, 1, [1], "sites [0] gone"))
    for client in clients.values():
        assert _views(client) == [("REG", both, [["#c#b2"], ["#c#b3"]], [client.private_group])]


def test_a_join_after_the_transition_comes_in_a_vs_set_of_its_own():
    """Issue 10, EVS as clients see it (seed 67 --lan-splits --client-views: b3's client
    joined g3 after b2's TRANSITION and the regular view's REG_MEMB put both in one vs_set).
    A vs_set is the members that came from the receiver's previous view together; a joiner
    had no view of the group, so each joiner is alone in a vs_set of its own, after the
    others (the real Spread's join in its transitional state, groups.c G_build_memb_vs_buf),
    and a joiner's own set is that one. One that joined and left meanwhile is not named; one
    that left and joined again comes from no view either."""
    sites = [["a1"], ["b1", "b2"]]
    cores = {n: sr.SitesGroupCore(n, _Orderer(), sites) for n in ("b1", "b2")}
    clients = {m: _client(cores[m.rsplit("#", 1)[1]], m) for m in ("#c#b1", "#d#b1", "#c#b2", "#e#b2")}
    for core in cores.values():
        for member in ("#c#a1", "#c#b1", "#d#b1"):
            core.deliver(_group_op(sr.JOIN, member, "g"))
    for client in clients.values():
        client.out.clear()
    for core in cores.values():
        core.site_view_change(sr.SiteViewChange(sr.CONF_TRANSITIONAL, 1, [1], "sites [0] gone"))
    assert _views(clients["#c#b1"]) == _views(clients["#d#b1"]) == [("TRANS",)]
    for core in cores.values():
        for kind, member in ((sr.JOIN, "#c#b2"), (sr.JOIN, "#e#b2"), (sr.LEAVE, "#e#b2"),
                             (sr.LEAVE, "#d#b1"), (sr.JOIN, "#d#b1")):
            core.deliver(_group_op(kind, member, "g"))
    assert _views(clients["#c#b1"]) == _views(clients["#c#b2"]) == []  # (shown in the next REG_MEMB)
    for core in cores.values():
        core.site_view_change(sr.SiteViewChange(sr.CONF_REGULAR, 1, [1], "sites [0] gone"))
    members = ["#c#b1", "#c#b2", "#d#b1"]
    sets = [["#c#b1"], ["#c#b2"], ["#d#b1"]]
    for member in members:
        assert _views(clients[member]) == [("REG", members, sets, [member])]
    # (the REG_MEMB went: at the next network change nobody is a joiner any more)
    for core in cores.values():
        core.site_view_change(sr.SiteViewChange(sr.CONF_TRANSITIONAL, 2, [1], "again"))
        core.deliver(_group_op(sr.LEAVE, "#c#b2", "g"))
        core.site_view_change(sr.SiteViewChange(sr.CONF_REGULAR, 2, [1], "again"))
    assert not any(core.silent_joins for core in cores.values())


def test_a_join_in_the_forks_closing_view_comes_back_in_a_vs_set_of_its_own():
    """A client that joined in our fork's closing transitional view had no view of the group
    there; the REJOIN marks it ("j"), so the REJOIN's REG_MEMB, at every daemon, gives it a
    vs_set of its own, not the one of the members back from the fork, who had a view."""
    kept, fork = (sr.SitesGroupCore(n, _Orderer(), [["a1"], ["b1", "b2", "b3"]]) for n in ("b3", "b2"))
    clients = {"#c#b3": _client(kept, "#c#b3"), "#c#b2": _client(fork, "#c#b2"), "#j#b2": _client(fork, "#j#b2")}
    kept.deliver(_group_op(sr.JOIN, "#c#b3", "g"))
    fork.deliver(_group_op(sr.JOIN, "#c#b2", "g"))  # (in its fork's own order)
    fork.site_view_change(sr.SiteViewChange(sr.CONF_TRANSITIONAL, 1, [1], "the fork ends", fork_ends=True))
    fork.deliver(_group_op(sr.JOIN, "#j#b2", "g"))
    for client in clients.values():
        client.out.clear()
    state = json.loads(json.dumps(kept.site_sync(sr.SiteSync("point", ["b2"], export=True))))
    fork.site_sync(sr.SiteSync("install", ["b2"], groups=state, members=["b2", "b3"], ring_seq=7))
    assert _views(clients["#c#b2"]) == [("TRANS",)] and _views(clients["#j#b2"]) == []
    rejoin = fork.orderer.submitted[-1]
    assert rejoin.data.split(b"\n")[1:] == [b"g\t#c#b2", b"g\t#j#b2\tj"]
    for core in (kept, fork):
        core.deliver(rejoin)
    members = ["#c#b2", "#c#b3", "#j#b2"]
    sets = [["#c#b2"], ["#c#b3"], ["#j#b2"]]
    assert _views(clients["#c#b3"]) == [("TRANS",), ("REG", members, sets, ["#c#b3"])]
    assert _views(clients["#c#b2"]) == [("REG", members, sets, ["#c#b2"])]
    assert _views(clients["#j#b2"]) == [("REG", members, sets, ["#j#b2"])]


def test_a_restarted_daemons_new_client_is_not_its_predecessors_member_of_that_name():
    """(seed 958 --lan-splits --client-views) b2 restarted and took b1's table, which still
    held the earlier b2's client #c#b2 in g (it goes by the ROSTER of the ring that took b2
    in, at every daemon). b2's new client has the same private name: it was taken for that
    member, and a ROSTER of an older ring that dropped b1's member gave it TRANSITION and a
    REG_MEMB of a group it never joined, with no view of it before. A member at our name in
    the first table this incarnation takes is the predecessor's: no session of ours."""
    sites = [["a1"], ["b1", "b2", "b3"]]
    kept, late = (sr.SitesGroupCore(n, _Orderer(), sites) for n in ("b1", "b2"))
    kept.configuration_change(_ring_of(["b1", "b2", "b3"], 1), 1)
    for member in ("#c#b1", "#c#a1", "#c#b2"):  # (#c#b2: the earlier b2's client)
        kept.deliver(_group_op(sr.JOIN, member, "g"))
    new_client = _client(late, "#c#b2")
    state = json.loads(json.dumps(kept.site_sync(sr.SiteSync("point", ["b2"], export=True))))
    late.site_sync(sr.SiteSync("install", ["b2"], groups=state, members=["b1", "b2", "b3"], ring_seq=4))
    assert late.groups["g"].members["#c#b2"] == "b2" and new_client.groups == set()
    assert _views(new_client) == []
    late.deliver(_roster("b3", 2, ["b2", "b3"]))  # (the older ring's: b1's member goes)
    assert sorted(late.groups["g"].members) == ["#c#a1", "#c#b2"] and _views(new_client) == []
    late.deliver(_roster("b1", 4, ["b1", "!b2", "b3"]))  # (the predecessor's member goes)
    assert sorted(late.groups["g"].members) == ["#c#a1"] and not late.predecessor_members
    late.deliver(_group_op(sr.JOIN, "#c#b2", "g"))  # (now the new client's own join)
    assert _views(new_client) == [("REG", ["#c#a1", "#c#b2"], [["#c#b2"]], ["#c#b2"])]
    assert new_client.groups == {"g"}


def test_a_joiner_after_the_transition_keeps_its_own_vs_set_across_a_merge():
    """The REG_MEMB that ends the wait can be a merge's (the transitional view lost site c, the
    regular one brings site a back): every daemon builds it from the sites' STATE, so a site's
    STATE marks its silent joiners ("j"), and the other side's clients see the joiner alone
    too."""
    sites = [["a1"], ["b1"], ["c1"]]
    cores = {n: sr.SitesGroupCore(n, _Orderer(), sites) for n in ("a1", "b1")}
    for name, core in cores.items():
        core.configuration_change(_ring_of([name], 1), 1)
    clients = {m: _client(cores[m.rsplit("#", 1)[1]], m) for m in ("#c#a1", "#c#b1", "#j#b1")}
    for core in cores.values():
        for member in ("#c#a1", "#c#b1", "#c#c1"):
            core.deliver(_group_op(sr.JOIN, member, "g"))
    cores["a1"].site_view_change(sr.SiteViewChange(sr.CONF_TRANSITIONAL, 1, [0], "apart"))
    cores["a1"].site_view_change(sr.SiteViewChange(sr.CONF_REGULAR, 1, [0], "apart"))
    b1 = cores["b1"]
    b1.site_view_change(sr.SiteViewChange(sr.CONF_TRANSITIONAL, 1, [1, 2], "apart"))
    b1.site_view_change(sr.SiteViewChange(sr.CONF_REGULAR, 1, [1, 2], "apart"))
    b1.site_view_change(sr.SiteViewChange(sr.CONF_TRANSITIONAL, 2, [1], "sites [2] gone"))
    b1.deliver(_group_op(sr.JOIN, "#j#b1", "g"))  # (silent: after g's TRANSITION)
    for client in clients.values():
        client.out.clear()
    for core in cores.values():
        core.site_view_change(sr.SiteViewChange(sr.CONF_REGULAR, 3, [0, 1], "sites [0] back"))
    states = [m for core in cores.values() for m in core.orderer.submitted
              if m.groups and m.groups[0] == sr.SITES_STATE_GROUP]
    assert len(states) == 2
    for msg in states:
        for core in cores.values():
            core.deliver(msg)
    members = ["#c#a1", "#c#b1", "#j#b1"]
    sets = [["#c#a1"], ["#c#b1"], ["#j#b1"]]
    assert _views(clients["#c#a1"]) == [("TRANS",), ("REG", members, sets, ["#c#a1"])]
    assert _views(clients["#c#b1"]) == [("REG", members, sets, ["#c#b1"])]
    assert _views(clients["#j#b1"]) == [("REG", members, sets, ["#j#b1"])]
    assert [line for m in states for line in m.data.split(b"\n") if line.endswith(b"\tj")] == [b"g\t#j#b1\tb1\tj"]


def test_an_exchange_whose_last_state_comes_in_the_transitional_view_that_lost_its_site_ends_with_the_regular_view():
    """Seed 80022 --hostile 0.2 --key --client-views: sites a, b, c merged again (view 2), a1
    was killed just after it sent its site's STATE, and the view that lost site a came
    before b1 and c1 had it: they delivered it in that view's transitional part, where it
    was the last STATE awaited. The exchange ended there, and b1's client got REG_MEMB
    {ca1, cb1} of g, ca1 in a vs_set of its own: a view naming a member of a site the sites'
    view had just lost (it never installs it), then that member lost again at the regular
    view. Now the exchange ends with the regular view, without the lost sites
    (_view_change_in_exchange), as when their STATE never comes; what came meanwhile is
    held until then, as in any exchange."""
    sites = [["a1"], ["b1"], ["c1"]]
    cores = {n: sr.SitesGroupCore(n, _Orderer(), sites) for n in ("a1", "b1", "c1")}
    for name, core in cores.items():
        core.configuration_change(_ring_of([name], 1), 1)
    clients = {n: _client(core, "#c#" + n) for n, core in cores.items()}
    for core in cores.values():
        for member in ("#c#a1", "#c#b1"):
            core.deliver(_group_op(sr.JOIN, member, "g"))
    sides = {"a1": [0], "b1": [1, 2], "c1": [1, 2]}
    for name, core in cores.items():  # a apart from b and c
        core.site_view_change(sr.SiteViewChange(sr.CONF_TRANSITIONAL, 1, sides[name], "apart"))
        core.site_view_change(sr.SiteViewChange(sr.CONF_REGULAR, 1, sides[name], "apart"))
    for name, core in cores.items():  # healed: the views merge
        core.site_view_change(sr.SiteViewChange(sr.CONF_TRANSITIONAL, 2, sides[name], "joined"))
        core.site_view_change(sr.SiteViewChange(sr.CONF_REGULAR, 2, [0, 1, 2], "joined"))
    assert sorted(cores["b1"].groups["g"].members) == ["#c#b1"]
    states = {n: [m for m in core.orderer.submitted if m.groups and m.groups[0] == sr.SITES_STATE_GROUP]
              for n, core in cores.items()}
    assert [len(states[n]) for n in ("a1", "b1", "c1")] == [1, 1, 1]
    survivors = [cores["b1"], cores["c1"]]
    for core in survivors:
        for name in ("b1", "c1"):
            core.deliver(states[name][0])
    for client in clients.values():
        client.out.clear()
    for core in survivors:  # a1 killed: the view that loses site a
        core.site_view_change(sr.SiteViewChange(sr.CONF_TRANSITIONAL, 3, [1, 2], "sites [0] gone"))
        core.deliver(states["a1"][0])  # (in its transitional part: the last STATE awaited)
        core.deliver(_group_op(sr.JOIN, "#c#c1", "g"))  # (held: the exchange is not over)
        assert core.exchange is not None and sorted(core.groups["g"].members) == ["#c#b1"]
        assert core.exchanges_ended_by_the_regular_view == 1
    assert _views(clients["b1"]) == [] and _views(clients["c1"]) == []  # (before: REG_MEMB {ca1, cb1})
    for core in survivors:
        core.site_view_change(sr.SiteViewChange(sr.CONF_REGULAR, 3, [1, 2], "sites [0] gone"))
        assert core.exchange is None and core.exchanges_done == 1
        assert sorted(core.groups["g"].members) == ["#c#b1", "#c#c1"]
    both = ["#c#b1", "#c#c1"]
    assert _views(clients["b1"]) == [("REG", both, [["#c#c1"]], None)]  # (the held JOIN's)
    assert _views(clients["c1"]) == [("REG", both, [["#c#c1"]], ["#c#c1"])]



def _sites_states(core, view_seq):
    return [m for m in core.orderer.submitted
            if m.groups == [sr.SITES_STATE_GROUP, str(view_seq)]]


def test_a_merge_that_ends_an_unfinished_exchange_keeps_each_sides_vs_set():
    """Seed 1409 --lan-splits --groups --client-views: sites a, b and c each alone in a view of
    its own. b and c merged (view 2); before c's STATE came, site a joined too (view 3): a new
    exchange, for all three. b1 and c1 never took view 2's table (each still had its own
    side's members), yet each said in view 3's STATE it came from view 2's sites "1,2": their
    clients got one vs_set {cb1, cc1}, a view b1's client and c1's never shared. An exchange
    that a merge ends unfinished leaves each daemon where it came from: the next STATE names
    that view."""
    sites = [["a1"], ["b1"], ["c1"]]
    cores = {n: sr.SitesGroupCore(n, _Orderer(), sites) for n in ("a1", "b1", "c1")}
    for name, core in cores.items():
        core.configuration_change(_ring_of([name], 1), 1)
    clients = {n: _client(core, "#c#" + n) for n, core in cores.items()}
    sides = {"a1": [0], "b1": [1], "c1": [2]}
    for name, core in cores.items():  # each site apart, its client alone in g
        core.site_view_change(sr.SiteViewChange(sr.CONF_TRANSITIONAL, 1, sides[name], "apart"))
        core.site_view_change(sr.SiteViewChange(sr.CONF_REGULAR, 1, sides[name], "apart"))
        core.deliver(_group_op(sr.JOIN, "#c#" + name, "g"))
    b1, c1 = cores["b1"], cores["c1"]
    for core in (b1, c1):  # b and c merge: view 2
        core.site_view_change(sr.SiteViewChange(sr.CONF_TRANSITIONAL, 2, sides[core.daemon_name], "joined"))
        core.site_view_change(sr.SiteViewChange(sr.CONF_REGULAR, 2, [1, 2], "joined"))
    for core in (b1, c1):  # b1's STATE of view 2 comes, c1's not yet
        core.deliver(_sites_states(b1, 2)[0])
        assert core.exchange is not None
    for name, core in cores.items():  # a joins them: view 3, before view 2's exchange ended
        core.site_view_change(sr.SiteViewChange(sr.CONF_TRANSITIONAL, 3, sides[name] if name == "a1" else [1, 2],
                                                "joined"))
        core.site_view_change(sr.SiteViewChange(sr.CONF_REGULAR, 3, [0, 1, 2], "joined"))
    for client in clients.values():
        client.out.clear()
    states = [m for core in cores.values() for m in _sites_states(core, 3)]
    assert len(states) == 3
    for core in cores.values():
        for msg in states:
            core.deliver(msg)
        assert core.exchange is None
    members = ["#c#a1", "#c#b1", "#c#c1"]
    sets = [["#c#a1"], ["#c#b1"], ["#c#c1"]]  # (before: [["#c#a1"], ["#c#b1", "#c#c1"]])
    for name, client in clients.items():
        assert _views(client) == [("TRANS",), ("REG", members, sets, ["#c#" + name])]



def _roster(origin, ring_seq, names):
    return sr.DaemonMessage(sr.STATE, origin, "#roster#%s" % origin, sr.AGREED_MESS, [sr.ROSTER_GROUP],
                            data="\n".join([str(ring_seq)] + names).encode())


def test_a_daemon_that_sat_out_a_ring_ends_its_clients_views_when_it_takes_the_kept_state():
    """(the h9599 doubt) a1 sat out a ring of its site (its token lost, in GATHER) while a2
    and a3, a quorum, went on: their ROSTER drops a1's members. The rings meet; a1 takes the
    kept state of its own epoch through close_fork. Where the kept side's ROSTER is still
    in its stream at the point (not yet delivered: the other sites' frontier), the kept
    table still holds a1's client, and a1 delivers that ROSTER after it: its client was
    dropped silently and the REJOIN's REG_MEMB put it in a vs_set of its own, with no
    TRANSITION ending the view it had shared with ca3 (who went through a view without it).
    The real Spread gives a daemon that rejoins its ring after missing configurations a
    transitional configuration of itself alone, and every group with members at another
    daemon its TRANSITION before that REG_MEMB (groups.c, G_handle_trans_memb)."""
    sites = [["a1", "a2", "a3"], ["b1"]]
    kept, sat = (sr.SitesGroupCore(n, _Orderer(), sites) for n in ("a3", "a1"))
    clients = {"a3": _client(kept, "#c#a3"), "a1": _client(sat, "#c#a1")}
    for core in (kept, sat):
        core.deliver(_group_op(sr.JOIN, "#c#a1", "g"))
        core.deliver(_group_op(sr.JOIN, "#c#a3", "g"))
    both = ["#c#a1", "#c#a3"]
    assert _views(clients["a1"])[-1] == ("REG", both, [["#c#a3"]], None)  # (ca3's JOIN)
    _views(clients["a3"])
    state = json.loads(json.dumps(kept.site_sync(sr.SiteSync("point", ["a1"], export=True))))
    sat.site_view_change(sr.SiteViewChange(sr.CONF_TRANSITIONAL, 0, [0], "site 0's fork ends", fork_ends=True))
    sat.site_sync(sr.SiteSync("install", ["a1"], groups=state, members=["a1", "a2", "a3"], ring_seq=3))
    assert sorted(sat.groups["g"].members) == both  # (the kept table still holds ca1)
    rejoin = sat.orderer.submitted[-1]
    assert rejoin.groups == [sr.REJOIN_GROUP]
    roster = _roster("a2", 2, ["a2", "a3"])  # (the kept side's ring without a1)
    for core in (kept, sat):
        core.deliver(roster)
        core.deliver(rejoin)
        assert sorted(core.groups["g"].members) == both
    assert _views(clients["a3"]) == [("TRANS",), ("REG", ["#c#a3"], [["#c#a3"]], ["#c#a3"]),
                                     ("TRANS",), ("REG", both, [["#c#a1"], ["#c#a3"]], ["#c#a3"])]
    assert _views(clients["a1"]) == [("TRANS",), ("REG", both, [["#c#a1"], ["#c#a3"]], ["#c#a1"])]




def _fork_of_a2_takes_the_kept_table(joined_in_the_closing_view):
    """Site a (a1 a2 a3) split: a2 forked alone, a1 a3 kept the epoch. a2's client joined g
    before the split; the kept side delivered that JOIN (g: cb1, ca2, cb2), a2 delivered it
    in its fork (its own regular view, or the fork's closing transitional one). a2 takes the
    kept table; the kept side's ROSTER of the split (a1 a3) is still ahead in the order."""
    sites = [["a1", "a2", "a3"], ["b1", "b2"]]
    kept, fork = (sr.SitesGroupCore(n, _Orderer(), sites) for n in ("a3", "a2"))
    client = _client(fork, "#c#a2")
    for member in ("#c#b1", "#c#a2", "#c#b2"):
        kept.deliver(_group_op(sr.JOIN, member, "g"))
    if not joined_in_the_closing_view:
        fork.deliver(_group_op(sr.JOIN, "#c#a2", "g"))
    fork.site_view_change(sr.SiteViewChange(sr.CONF_TRANSITIONAL, 0, [0], "site 0's fork ends", fork_ends=True))
    if joined_in_the_closing_view:
        fork.deliver(_group_op(sr.JOIN, "#c#a2", "g"))
    state = json.loads(json.dumps(kept.site_sync(sr.SiteSync("point", ["a2"], export=True))))
    views_in_the_fork = _views(client)
    fork.site_sync(sr.SiteSync("install", ["a2"], groups=state, members=["a1", "a2", "a3"], ring_seq=3))
    assert sorted(fork.groups["g"].members) == ["#c#a2", "#c#b1", "#c#b2"]  # (the kept table holds ca2)
    return kept, fork, client, views_in_the_fork


def test_a_join_in_the_forks_closing_view_gets_no_view_of_the_kept_table_before_the_rejoin():
    """(seed 478 --lan-splits --groups --client-views) a2's client joined g3 in a2's fork's
    closing transitional view (no REG_MEMB there); the kept table a2 took still held it in g3,
    with cb1 and cb2. The install judged g3 by the fork's table alone (ca2 only: no member at
    a daemon that did not come with a2), so g3 neither got a TRANSITION nor waited: cb1's
    LEAVE, delivered next, gave a2's client REG_MEMB {ca2, cb2} (its first view of g3), the
    kept side's ROSTER of the split then dropped ca2 silently at a2, and a2's REJOIN's
    REG_MEMB put it in a vs_set of its own: a view shared with cb2 ended with no TRANSITION
    (check_client_views). A group whose kept table has members at daemons that did not come
    with us waits from the install like one whose fork's table has (the REJOIN's REG_MEMB
    gives our members a vs_set of their own either way); a client with no view of it gets
    no TRANSITION and nothing of it but that REG_MEMB."""
    kept, fork, client, views_in_the_fork = _fork_of_a2_takes_the_kept_table(True)
    assert views_in_the_fork == [] and _views(client) == []
    rejoin = fork.orderer.submitted[-1]
    assert rejoin.groups == [sr.REJOIN_GROUP]
    for core in (kept, fork):
        core.deliver(_group_op(sr.LEAVE, "#c#b1", "g"))
    assert _views(client) == []  # (before: REG_MEMB {ca2, cb2} of cb1's LEAVE)
    for core in (kept, fork):
        core.deliver(_roster("a1", 2, ["a1", "a3"]))  # (the kept side's ring without a2)
        core.deliver(rejoin)
        assert sorted(core.groups["g"].members) == ["#c#a2", "#c#b2"]
    both = ["#c#a2", "#c#b2"]
    assert _views(client) == [("REG", both, [["#c#a2"], ["#c#b2"]], ["#c#a2"])]


def test_our_member_the_kept_sides_roster_drops_after_a_network_change_ended_its_wait_gets_a_transition():
    """The same install, a2's client with a view of g in the fork ({ca2}): its view ends there
    (TRANSITION: the kept table's g has members elsewhere). A network change before the kept
    side's ROSTER (site b's ring lost b2) ends the wait: REG_MEMB {ca2, cb1}, ca2 in a vs_set
    of its own (it came from the fork's view, cb1 did not). Then that ROSTER drops ca2 from
    the table at a2 too: its client's view ends there (TRANSITION; before, silently), since
    the REJOIN's REG_MEMB, which its sender gives with no TRANSITION, puts it alone again."""
    kept, fork, client, views_in_the_fork = _fork_of_a2_takes_the_kept_table(False)
    assert views_in_the_fork == [("REG", ["#c#a2"], [["#c#a2"]], ["#c#a2"])]
    assert _views(client) == [("TRANS",)]  # (before: nothing)
    rejoin = fork.orderer.submitted[-1]
    pair = ["#c#a2", "#c#b1"]
    for core in (kept, fork):
        core.deliver(_roster("b1", 5, ["b1"]))
    assert _views(client) == [("REG", pair, [["#c#a2"], ["#c#b1"]], ["#c#a2"])]
    for core in (kept, fork):
        core.deliver(_roster("a1", 2, ["a1", "a3"]))
    assert _views(client) == [("TRANS",)]  # (before: nothing, and none before the next REG_MEMB)
    for core in (kept, fork):
        core.deliver(rejoin)
        assert sorted(core.groups["g"].members) == pair
    assert _views(client) == [("REG", pair, [["#c#a2"], ["#c#b1"]], ["#c#a2"])]




def _fork_of_a2_joins_in_its_closing_view(member_elsewhere):
    """Site a (a1 a2 a3) split: a2 forked alone, a1 a3 kept the epoch and never dropped a2
    (no ROSTER of the split: their ring took a2 back whole). a2's client #c#a2 sent its JOIN
    of g before the split; the kept side delivered it, a2 only in its fork's closing
    transitional view (no REG_MEMB there). With `member_elsewhere` cb1 had joined g before,
    at both sides, so g got its TRANSITION as the fork's closing view began (nobody here was
    in g then); without it g is new. #d#a2 is in h, joined in the fork's regular view (and
    at the kept side): a2's other client. a2 takes the kept table, which holds #c#a2 and
    #d#a2 already: its REJOIN changes nothing anywhere."""
    sites = [["a1", "a2", "a3"], ["b1", "b2"]]
    kept, fork = (sr.SitesGroupCore(n, _Orderer(), sites) for n in ("a3", "a2"))
    client, other = _client(fork, "#c#a2"), _client(fork, "#d#a2")
    ops = [(sr.JOIN, "#c#b1", "g")] if member_elsewhere else []
    for core in (kept, fork):
        for op in ops + [(sr.JOIN, "#d#a2", "h")]:
            core.deliver(_group_op(*op))
    kept.deliver(_group_op(sr.JOIN, "#c#a2", "g"))
    fork.site_view_change(sr.SiteViewChange(sr.CONF_TRANSITIONAL, 0, [0], "site 0's fork ends", fork_ends=True))
    assert ("g" in fork.transition_sent) == member_elsewhere
    fork.deliver(_group_op(sr.JOIN, "#c#a2", "g"))
    _views(other)
    state = json.loads(json.dumps(kept.site_sync(sr.SiteSync("point", ["a2"], export=True))))
    fork.site_sync(sr.SiteSync("install", ["a2"], groups=state, members=["a1", "a2", "a3"], ring_seq=3))
    assert sorted(fork.groups["g"].members) == sorted(kept.groups["g"].members)  # (it holds ca2)
    assert _views(client) == []  # (it has no view of g: no TRANSITION)
    rejoin = fork.orderer.submitted[-1]
    assert rejoin.groups == [sr.REJOIN_GROUP] and b"g\t#c#a2\tj" in rejoin.data.split(b"\n")
    return kept, fork, client, other, rejoin


def test_a_join_in_the_forks_closing_view_that_the_kept_table_holds_gets_a_vs_set_of_its_own():
    """(seed 2403 --lan-splits --groups --client-views) c2's client joined g2 in c2's fork's
    closing transitional view; g2 had had its TRANSITION there (cb1, at another site, in it).
    The kept table c2 took already held that member, so the REJOIN changed nothing; the group
    waited for it (rejoin_waiting) as one whose clients had their TRANSITION, and its
    REG_MEMB put c2's client, which had no view of g2 before, in one vs_set with cb1: a view
    it never shared (check_own_vs_set). A joiner of the fork's closing view comes from no
    view: whatever REG_MEMB ends the wait gives it a vs_set of its own (silent_joins). ca1's
    JOIN after the install is silent here too (g waits), and comes alone as well."""
    kept, fork, client, other, rejoin = _fork_of_a2_joins_in_its_closing_view(True)
    for core in (kept, fork):
        core.deliver(_group_op(sr.JOIN, "#c#a1", "g"))
        core.deliver(rejoin)
        assert sorted(core.groups["g"].members) == ["#c#a1", "#c#a2", "#c#b1"]
    members = ["#c#a1", "#c#a2", "#c#b1"]
    assert _views(client) == [("REG", members, [["#c#a1"], ["#c#a2"], ["#c#b1"]], ["#c#a2"])]  # (before: ["#c#a2", "#c#b1"])
    assert _views(other) == []  # (h did not change, and had no TRANSITION)


def test_a_join_in_the_forks_closing_view_of_a_group_only_ours_still_gets_its_view_at_the_rejoin():
    """The same with g new: nobody elsewhere in it, so the fork's closing view gave it no
    TRANSITION and the kept table's g is ca2 alone. The REJOIN changed nothing and g did not
    wait for it: ca2's client never got a view of the group it joined. It gets one where the
    REJOIN is delivered, alone in its vs_set; a network change before that ends the wait
    instead, with the joiner alone as well."""
    kept, fork, client, other, rejoin = _fork_of_a2_joins_in_its_closing_view(False)
    for core in (kept, fork):
        core.deliver(rejoin)
    assert _views(client) == [("REG", ["#c#a2"], [["#c#a2"]], ["#c#a2"])]  # (before: nothing)
    kept, fork, client, other, rejoin = _fork_of_a2_joins_in_its_closing_view(False)
    for core in (kept, fork):
        core.deliver(_group_op(sr.JOIN, "#c#b2", "g"))  # (silent here: g waits)
        core.deliver(_roster("b1", 5, ["b1"]))  # (site b's ring lost b2)
    assert _views(client) == [("REG", ["#c#a2"], [["#c#a2"]], ["#c#a2"])]
    for core in (kept, fork):
        core.deliver(rejoin)
    assert _views(client) == [] and _views(other) == []



def test_messages_held_for_our_proposal_go_to_the_side_of_the_split_their_daemon_is_on():
    """(seed 328 --lan-splits --groups) Site a (a1 a2 a3, voting) proposes view 1 without b
    and waits for c's PROPOSE; meanwhile its ring orders a1's and a2's clients' messages,
    which wait (own_held) for the view we decide. Then the LAN splits: a1 forks alone, a2 a3
    keep the epoch. a2 a3 decide view 1 (c's PROPOSE) and number both above its limit, in
    view 1; the fork decides view 2 alone and numbers both too, in its own view: a1's
    message was delivered in two views (a1 in the fork's, b and c in view 1), and a2's by
    a fork that never was in view 1. Each side takes the messages of its own daemons only."""
    sites, costs = [["a1", "a2", "a3"], ["b1"], ["c1"]], [[0, 1, 1], [1, 0, 1], [1, 1, 0]]

    def own_stream(gw):
        return [sr.decode_message_body(r.body, r.origin).data for r in gw.kept[0] if r.kind == sr.SITE_MSG]
    gws = {}
    for name in ("a1", "a2"):
        gw = gateway(name, sites, costs)
        gw.epoch, gw.lineage, gw.wide_ring = 5, [(5, 0)], frozenset(sites[0])
        regular(gw, ["a1", "a2", "a3"])
        gw.ring_output(carrier([sr.SiteRecord(sr.SITE_SUSPECT, 0, 0, 1, body=sr.encode_site_view_body({1}, {}))],
                               10, origin="a1", epoch=5), 1.0)
        gw.ring_output(local(11, b"a1's", origin="a1"), 1.1)
        gw.ring_output(local(12, b"a2's", origin="a2"), 1.1)
        assert gw.proposed_view == 1 and len(gw.own_held) == 2 and own_stream(gw) == []
        gws[name] = gw
    fork, kept = gws["a1"], gws["a2"]
    regular(fork, ["a1"], 1.2)
    regular(kept, ["a2", "a3"], 1.2)
    assert fork.epoch != 5 and kept.epoch == 5
    kept.ring_output(carrier([sr.SiteRecord(sr.SITE_PROPOSE, 2, 20, 1, body=sr.encode_site_view_body({1}, {}))],
                             21, origin="a2", epoch=5), 1.3)
    assert kept.closing is not None and kept.closing.view_seq == 1
    fork.ring_output(carrier([sr.SiteRecord(sr.SITE_SUSPECT, 0, 0, 2, body=sr.encode_site_view_body({1, 2}, {}))],
                             22, origin="a1", epoch=fork.epoch), 1.3)
    assert fork.view_seq == 2 and delivered(fork) == [b"a1's"]
    assert own_stream(kept) == [b"a2's"] and own_stream(fork) == [b"a1's"]
    assert kept.counters["own_held_of_a_daemon_gone"] == fork.counters["own_held_of_a_daemon_gone"] == 1


def test_a_merge_our_site_decided_ends_where_our_ring_forks():
    """(seed 772 --lan-splits --client-views) Our site decided the merge with b and waits for
    b's READY; the LAN splits and a1, alone, forks: a new incarnation, which b takes for one
    (left out until a merge with it), so b's READY or GIVEUP of that merge never comes to it
    (there: c1, the representative, was killed after site c decided view 3; b gave it up and
    its GIVEUP died with c1; c2, forked alone, held the merge for good and delivered nothing
    more). The fork ends the merge as a withdrawn one ends and goes on in its old view."""
    sites, costs = [["a1", "a2", "a3"], ["b1"]], [[0, 1], [1, 0]]
    gw = gateway("a1", sites, costs)
    gw.epoch, gw.lineage, gw.wide_ring = 5, [(5, 0)], frozenset(sites[0])
    regular(gw, ["a1", "a2", "a3"])
    gw.poll()
    gw.live_sites = [0]  # (b left out by an earlier view; the partition healed)
    gw.merge.uninstall(1)
    del gw.streams[1]
    assert gw._start_merge(2, frozenset({0, 1}), [])
    gw.ring_output(carrier([sr.SiteRecord(sr.SITE_MERGE, 1, 9, 2, body=sr.encode_site_view_body({0, 1}, {}))],
                           11, epoch=5), 1.0)
    assert gw.closing is not None and gw.merging is not None and 1 not in gw.merging.ready
    gw.poll()
    regular(gw, ["a1"], 1.1)
    gw.ring_output(local(20, b"after the fork", origin="a1"), 1.2)
    assert delivered(gw) == [b"after the fork"]  # (before: held above the merge's limit for good)
    assert gw.epoch != 5 and gw.merging is None and gw.closing is None and gw.live_sites == [0]
    assert gw.counters["merges_ended_by_our_fork"] == 1

SITES_FORKED_B = [["a1", "a2"], ["b1", "b2", "b3"], ["c1"]]
E_B2, E_B3 = 11857820980719, 47062323233849  # (the two forks' epochs in seed 61081)


def _merging_with_a_forked_site():
    """a1 in view 1 of sites a and c (b left out: forked in two, b2 and b3, each alone)
    starts merging view 2 with b, and c's MERGE comes: it names a's and c's epochs."""
    gw = gateway("a1", SITES_FORKED_B, COSTS_C)
    gw.epoch = 1
    regular(gw, ["a1", "a2"])
    gw.poll()
    gw.live_sites, gw.view_seq = [0, 2], 1  # (b left out by an earlier view; the cut healed)
    gw.site_epochs[2] = 1
    gw.merge.uninstall(1)
    del gw.streams[1]
    assert gw._start_merge(2, frozenset({0, 1, 2}), [])
    merge_c = sr.SiteRecord(sr.SITE_MERGE, 2, 8, 2, body=sr.encode_site_view_body(
        {0, 1, 2}, {0: (1, 0, 0), 2: (1, 0, 0)}, {0: 1, 2: 1}))
    gw.ring_output(carrier([merge_c], 10, epoch=1), 1.0)
    return gw


def _merge_record(kind, site, epochs, lts=9):
    """site's MERGE or READY of view 2 of sites a, b, c, naming `epochs`."""
    return sr.SiteRecord(kind, site, lts, 2, body=sr.encode_site_view_body({0, 1, 2}, {}, epochs))


def test_a_merge_takes_one_incarnation_of_a_site_and_withdraws_if_another_site_took_the_other():
    """(seed 61081 --lan-splits) Site b forked twice (b2 and b3, each alone) and both forks
    answered the heal: a1 linked with b3, c1 with b2. a1 took b3's MERGE and b2's READY (one
    record per site, no epoch), c1 b2's MERGE and READY, and both installed view 2, a1 reading
    b3's epoch, c1 b2's; b3 then took b2's state, and a1, reaching b round through c1, refused
    b2's HELLOs and FRONTIERs for ever: 4 of b's messages never delivered at a1. A merge now
    takes one incarnation of each site: another's READY is not its site's, and a READY that
    took another incarnation of a third site ends the merge (withdrawn after our decision:
    neither decision can be installed, since every READY names every site)."""
    gw = _merging_with_a_forked_site()
    gw.ring_output(carrier([_merge_record(sr.SITE_MERGE, 1, {1: E_B3})], 11, epoch=1), 1.1)
    assert gw.closing is not None and gw.merging.view_seq == 2  # decided, with b3's MERGE
    own_ready = gw.merging.ready[0]
    gw.ring_output(carrier([_merge_record(sr.SITE_READY, 1, {0: 1, 1: E_B2, 2: 1})], 12, epoch=1), 1.2)
    assert 1 not in gw.merging.ready  # b2's READY: not site b's for this merge
    assert gw.counters["site_merge_records_of_another_incarnation"] == 1
    gw.ring_output(carrier([_merge_record(sr.SITE_READY, 2, {0: 1, 1: E_B2, 2: 1})], 13, epoch=1), 1.3)
    gw.poll()
    assert gw.view_seq == 1 and gw.merging is None and gw.closing is None and gw.live_sites == [0, 2]
    assert gw.counters["site_merges_of_two_incarnations"] == 1
    assert sr.decode_site_view_bases(own_ready.body) == {0: 1, 1: E_B3, 2: 1}  # (what c1 reads)


def test_a_merge_installed_reads_the_incarnation_whose_records_it_took():
    """The same merge where every site took b3's: installed, a1 reads b3's epoch (before: the
    epoch of its own link's HELLO, whichever fork that was), and a link to b2 is dropped."""
    gw = _merging_with_a_forked_site()
    gw.ring_output(carrier([_merge_record(sr.SITE_MERGE, 1, {1: E_B3})], 11, epoch=1), 1.1)
    for lts, site in ((12, 1), (13, 2)):
        gw.ring_output(carrier([_merge_record(sr.SITE_READY, site, {0: 1, 1: E_B3, 2: 1}, 9)], lts, epoch=1), 1.2)
    # (our representative's link to b: b2's HELLO came first)
    gw.hop_datagram("b2", sr.encode_site_hello(sr.SiteHello(("b2", 1), 1, False, {}, 1, (1,),
                                                            sr.hop_session(1, 0), E_B2)), 1.25)
    assert 1 in gw.links
    gw.ring_output(carrier([sr.SiteRecord(sr.SITE_FRONTIER, 2, 9)], 14, epoch=1), 1.3)  # (c reaches the limit)
    gw.poll()
    assert 1 not in gw.links and gw.suspect_at.get(1) is not None
    assert gw.view_seq == 2 and gw.live_sites == [0, 1, 2]
    assert gw.site_epochs[1] == E_B3 and gw.counters["site_merges_of_two_incarnations"] == 0


# ---- two rings of one site meet: whose state is kept ---------------------------------------------

SITE_OF_THREE = [["a1", "a2", "a3"], ["b1"]]


class _RingEnd:
    """What a SitesOrderer reads of its site's ring, by hand: what it submits goes into the
    ring's one order (`ring`), what the ring delivers to it waits in `out` for its poll()."""

    def __init__(self, ring):
        self.ring = ring
        self.out = []
        self.log = []
        self.leaving = False
        self.cfg = sr.RingSettings()

    def submit(self, msg, urgent=False):
        self.ring.append(msg)
        return True

    def withdraw_queued(self, kinds):
        return []  # (what it is given is in the order at once: nothing waits for a token)

    def poll(self):
        out, self.out = self.out, []
        return out


def _daemons_of_site_a():
    ring = []
    daemons = {name: sr.SitesOrderer(_RingEnd(ring), gateway(name, SITE_OF_THREE), {})
               for name in ("a1", "a2", "a3")}
    return daemons, ring


def _ring_orders(daemons, ring, names, items, lts):
    """The ring of `names` delivers `items` to each of them, then what they submit, in one
    order, until nothing more comes (a state asked for goes out at once: the group core's
    part, send_state, with an empty table). `lts`: the ring's next lts, returned moved on."""
    def hand(item):
        for name in names:
            daemons[name].ring_orderer.out.append(item)
            for o in daemons[name].poll():
                if isinstance(o, sr.SiteSync) and o.kind == "point" and o.export:
                    daemons[name].send_state(o, {})
    for item in items:
        if isinstance(item, sr.Deliver):
            item.msg.lts, lts = lts, lts + 1
        hand(item)
    while ring:
        msg = ring.pop(0)
        msg.lts, lts = lts, lts + 1
        hand(sr.Deliver(msg))
    return lts


def _ring_of(members, seq):
    change = sr.ConfigurationChange(sr.CONF_REGULAR, list(members), list(members), (seq, members[0], 1))
    change.member_ids = [(n, 1) for n in members]
    return change


def _own_stream(daemon):
    """Our site's stream as this daemon holds it: site_seq -> the client's data."""
    out = {}
    for r in daemon.gateway.kept[daemon.gateway.site_id]:
        out[r.site_seq] = sr.decode_message_body(r.body, r.origin).data
    return out


def test_of_two_rings_of_one_epoch_that_meet_the_state_of_the_ring_that_went_on_is_kept():
    """a1 sat out a ring (its commit token lost) while a2 and a3, a quorum of the last ring,
    went on under the same epoch and ordered a3's client's message as our stream's 2; a1's
    client's message comes in the ring where the three meet, before the status round. Both
    states are of epoch 1, no fork, the same sites: the file's order kept a1's, which never
    had the quorum ring's message, and whose 2 was its own client's. a3 took that state,
    its fork-view marks took a1's 2 for the message it had delivered there, and the quorum
    ring's message was lost everywhere (seed 9599 --key: a1 and a3 delivered different
    messages in one view, and three messages nowhere). Of one epoch, the state that more
    rings kept (kept_rings, in the STATUS) is the later one: it is kept."""
    daemons, ring = _daemons_of_site_a()
    lts = _ring_orders(daemons, ring, ["a1", "a2", "a3"], [_ring_of(["a1", "a2", "a3"], 1),
                                                            local(0, b"ring-1", origin="a2")], 10)
    assert all(d.synced and d.gateway.epoch == 1 for d in daemons.values())
    lts = _ring_orders(daemons, ring, ["a2", "a3"], [_ring_of(["a2", "a3"], 2),
                                                      local(0, b"quorum-ring", origin="a3")], lts)
    kept = {n: d.gateway.kept_rings for n, d in daemons.items()}
    assert kept["a2"] == kept["a3"] == kept["a1"] + 1 and daemons["a2"].gateway.epoch == 1
    _ring_orders(daemons, ring, ["a1", "a2", "a3"], [_ring_of(["a1", "a2", "a3"], 3),
                                                      local(0, b"sat-out", origin="a1")], lts)
    streams = {n: _own_stream(d) for n, d in daemons.items()}
    assert all(d.synced for d in daemons.values())
    assert streams["a1"] == streams["a2"] == streams["a3"]
    assert streams["a1"] == {1: b"ring-1", 2: b"quorum-ring", 3: b"sat-out"}
    assert daemons["a1"].gateway.epoch == 1



def test_a_daemon_that_sat_out_a_ring_takes_the_kept_state_alone_in_its_transitional_configuration():
    """The same rings: a1 came from ring 1, a2 and a3 from ring 2, so a1 takes the state with
    nobody beside it (SiteSync.together), as the ring's transitional configuration would
    have it: its group core ends the views its clients shared with a2's and a3's."""
    daemons, ring = _daemons_of_site_a()
    installs = []
    for name, daemon in daemons.items():
        def poll(daemon=daemon, name=name, inner=daemon.poll):
            out = inner()
            installs.extend((name, o.together) for o in out if isinstance(o, sr.SiteSync) and o.kind == "install")
            return out
        daemon.poll = poll
    lts = _ring_orders(daemons, ring, ["a1", "a2", "a3"], [_ring_of(["a1", "a2", "a3"], 1),
                                                            local(0, b"ring-1", origin="a2")], 10)
    lts = _ring_orders(daemons, ring, ["a2", "a3"], [_ring_of(["a2", "a3"], 2)], lts)
    _ring_orders(daemons, ring, ["a1", "a2", "a3"], [_ring_of(["a1", "a2", "a3"], 3)], lts)
    assert installs == [("a1", ["a1"])]


def test_a_fork_that_meets_the_kept_ring_delivers_nothing_that_ring_orders_before_the_point():
    """(seed 461 --lan-splits) a1 forks alone and decides a view of our site alone (site b
    silent), so its merge delivers our stream's messages at once. The rings meet: the ring
    of a1 a2 a3 orders a2's client's message before the status round's point. a1's gateway
    numbered it in the fork's stream and delivered it in the fork's view, then took a2's
    state, which holds it too (the kept side numbered it): delivered twice, in two views.
    Until the point a daemon of a fork holds what the ring where it may meet another ring
    delivers; taking the kept state, it drops it (the state holds it). The kept side, whose
    incarnation's first ring held all three, applies it at once, as before."""
    daemons, ring = _daemons_of_site_a()
    for d in daemons.values():  # (the gateways' SITES messages go into the ring too)
        d.gateway.orderer.submit = lambda msg, urgent=False: ring.append(msg) or True
    seen = {n: [] for n in daemons}

    def watched(d, name):
        def poll():
            out = sr.SitesOrderer.poll(d)
            seen[name].extend(out)
            return out
        return poll
    for name, d in daemons.items():
        d.poll = watched(d, name)
    lts = _ring_orders(daemons, ring, ["a1", "a2", "a3"], [_ring_of(["a1", "a2", "a3"], 1),
                                                            local(0, b"ring-1", origin="a2")], 10)
    lts = _ring_orders(daemons, ring, ["a1"], [_ring_of(["a1"], 2), local(0, b"fork's", origin="a1")], lts)
    lts = _ring_orders(daemons, ring, ["a2", "a3"], [_ring_of(["a2", "a3"], 2),
                                                      local(0, b"kept's", origin="a2")], lts)
    fork = daemons["a1"].gateway
    assert fork.epoch != 1 and daemons["a2"].gateway.epoch == 1
    assert fork._suspect({1}, 1.0)  # (site b silent: a view of our site alone)
    fork._flush_ring()
    lts = _ring_orders(daemons, ring, ["a1"], [], lts)
    assert (fork.view_seq, fork.live_sites) == (1, [0])
    del seen["a1"][:]
    _ring_orders(daemons, ring, ["a1", "a2", "a3"], [_ring_of(["a1", "a2", "a3"], 3),
                                                      local(0, b"met", origin="a2")], lts)
    outs = [o.msg.data if isinstance(o, sr.Deliver) else (o.kind, getattr(o, "view_seq", None))
            for o in seen["a1"] if isinstance(o, (sr.Deliver, sr.SiteViewChange, sr.SiteSync))]
    # the fork's view ends (nothing of ours left to deliver there), then the kept state
    assert outs == [(sr.CONF_TRANSITIONAL, 1), ("install", None)]
    assert all(d.synced for d in daemons.values())
    assert _own_stream(daemons["a1"]) == {1: b"ring-1", 2: b"kept's", 3: b"met"}
    # site b's frontier comes: a1 delivers what the kept state holds and it had not, "met"
    # once, as a2 (a1 delivered "ring-1" in its fork's view: a SKIP here)
    for name in daemons:
        del seen[name][:]
    _ring_orders(daemons, ring, ["a1", "a2", "a3"],
                 [carrier([sr.SiteRecord(sr.SITE_FRONTIER, 1, 1000, 0)], 0, origin="a2", epoch=1)], 2000)
    got = {n: [o.msg.data for o in seen[n] if isinstance(o, sr.Deliver)] for n in ("a1", "a2")}
    assert got["a1"] == [b"kept's", b"met"] and got["a2"] == [b"ring-1", b"kept's", b"met"]

LINE_SITES, LINE_COSTS = [["a1"], ["b1"], ["c1"]], [[0, 1, 0], [1, 0, 1], [0, 1, 0]]


def suspect(lost, view, lts):
    return carrier([sr.SiteRecord(sr.SITE_SUSPECT, 1, 0, view, body=sr.encode_site_view_body(lost, {}))],
                   lts, origin="b1")


def test_our_messages_wait_for_the_view_we_proposed_and_go_in_the_one_we_decide():
    """(issue 10, seed 43 --lan-splits at SITE_GRACE_S 0.6 s) b proposes view 1 without a;
    c's PROPOSE never reaches b (its link to c dies), then b leaves c out too and decides
    view 2 alone. c had b's PROPOSE, decided view 1, and put b's messages above view 1's
    limit in view 1: a message b's clients sent after b's PROPOSE must not go out (nor be
    delivered here in view 0) before b decides a view. It waits, and goes in view 2."""
    gw = gateway("b1", LINE_SITES, LINE_COSTS)
    regular(gw, ["b1"])
    gw.poll()
    gw.ring_output(local(5, b"before", origin="b1"), 1.0)
    gw.ring_output(suspect({0}, 1, 6), 1.1)
    assert gw.proposed_view == 1 and gw.closing is None  # (c's PROPOSE is awaited)
    gw.ring_output(local(7, b"after", origin="b1"), 1.2)
    assert gw.applied_seq[1] == 1  # not in our stream: nothing of it goes to c
    assert not any(r.kind == sr.SITE_MSG and r.site_seq == 2 for _, _, rs, _ in gw.gate for r in rs)
    gw.ring_output(suspect({0, 2}, 2, 8), 2.0)
    out = [o.msg.data if isinstance(o, sr.Deliver) else (o.kind, o.view_seq, o.sites)
           for o in gw.poll() if isinstance(o, (sr.Deliver, sr.SiteViewChange))]
    # ("before" in the transitional view: a and c never said a frontier, so a message of
    # theirs below it may exist that we lack: ..._above_a_lost_sites_frontier_goes_in_the_...)
    assert out == [(sr.CONF_TRANSITIONAL, 2, [1]), b"before", (sr.CONF_REGULAR, 2, [1]), b"after"]
    assert gw.applied_seq[1] == 2 and not gw.own_held


def test_what_the_old_view_delivers_above_a_lost_sites_frontier_goes_in_the_transitional_view():
    """(issue 10, seed 86400 --lan-splits --groups --client-views at SITE_GRACE_S 0.3 s) Site
    c, cut off from a and b, decided a view without them and delivered its own messages above
    site a's frontier in the old view's regular part; a and b delivered a1's LEAVE, which c
    never had, just above that frontier and before c's messages, in the same regular view.
    A hole in a regular configuration (EVS; the real Spread delivers what follows a hole in
    the transitional one): here c's table still named a1's member, b1 pruned those messages
    for a by its own, and a was said to owe them. Our own messages above the lost site's
    frontier wait for TRANSITIONAL; what the lost site sent up to it went before."""
    gw = gateway()
    regular(gw, ["a1", "a2"])
    gw.poll()
    gw.ring_output(carrier([remote(1, 10, b"from b")], 11), 1.0)
    assert delivered(gw) == [b"from b"]  # b's frontier: 10
    gw.ring_output(local(12, b"mine 12"), 1.1)
    gw.ring_output(local(13, b"mine 13"), 1.2)
    assert delivered(gw) == []  # b may still send something with lts 11 or 12
    suspect_b = sr.SiteRecord(sr.SITE_SUSPECT, 0, 0, 1, body=sr.encode_site_view_body({1}, {}))
    gw.ring_output(carrier([suspect_b], 14), 1.3)  # (we are the only survivor: we decide)
    out = [o.msg.data if isinstance(o, sr.Deliver) else (o.kind, o.view_seq, o.sites)
           for o in gw.poll() if isinstance(o, (sr.Deliver, sr.SiteViewChange))]
    assert out == [(sr.CONF_TRANSITIONAL, 1, [0]), b"mine 12", b"mine 13", (sr.CONF_REGULAR, 1, [0])]
    assert gw.view_seq == 1 and gw.closing is None and gw.merge.deliver_limit_lts is None


def test_a_lower_sites_message_at_the_lost_sites_frontier_plus_one_stays_in_the_regular_part():
    """(issue 10, seeds 160032, 162013, 162043, 162097, 163625, plain) The bound is a
    {lts, site id}, as the frontier rule's (SiteStream.passed): site b (id 1) with frontier
    11 sends nothing at or below (12, 1), so our (12, 0) follows no hole. An lts bound (12 >
    11: after TRANSITIONAL) split survivors: one that had delivered such a message before
    the cut (its other frontiers had passed it) put it in the regular part, another that
    still waited for one of them put it in the transitional part (seed 160032: a1's (0, 1)
    at lts 3, b's decided frontier 2; c1 delivered it at 0.6 s, a2 only after the cut). Here
    our SAFE message waits for our own site's ARU past the decision."""
    gw = gateway()
    regular(gw, ["a1", "a2"])
    gw.poll()
    gw.ring_output(carrier([remote(1, 10, b"from b"), sr.SiteRecord(sr.SITE_FRONTIER, 1, 11)], 11), 1.0)
    assert delivered(gw) == [b"from b"]  # b's frontier: 11
    gw.ring_output(local(12, b"mine 12", sr.SAFE_MESS), 1.1)
    gw.ring_output(carrier([sr.SiteRecord(sr.SITE_ARU, 1, 12)], 13), 1.2)
    assert delivered(gw) == []  # b holds it; our site has not said so
    suspect_b = sr.SiteRecord(sr.SITE_SUSPECT, 0, 0, 1, body=sr.encode_site_view_body({1}, {}))
    gw.ring_output(carrier([suspect_b], 14), 1.3)  # (we are the only survivor: we decide)
    assert gw.closing is not None and gw.closing.frontier == {1: 11}
    assert delivered(gw) == []
    gw.ring_output(carrier([sr.SiteRecord(sr.SITE_ARU, 0, 14)], 15), 1.4)
    out = [o.msg.data if isinstance(o, sr.Deliver) else (o.kind, o.view_seq, o.sites)
           for o in gw.poll() if isinstance(o, (sr.Deliver, sr.SiteViewChange))]
    assert out == [b"mine 12", (sr.CONF_TRANSITIONAL, 1, [0]), (sr.CONF_REGULAR, 1, [0])]
    assert gw.merge.deliver_below_key is None


# ---- a second site suspected while our SUSPECT of the first crosses our ring --------------------

LINE3_SITES = [["a1", "a2"], ["b1", "b2", "b3"], ["c1"]]  # seed 41181's sites: a line a - b - c


def linked_middle_of_a_line(now=0.1):
    """b1 represents site b, the middle of the line a - b - c, its links to a1 and c1 started;
    what it submits to its ring waits in `into_ring` until `ring_delivers` hands it back."""
    gw = gateway("b1", LINE3_SITES, LINE_COSTS)
    regular(gw, ["b1", "b2", "b3"])
    for site, peer in ((0, "a1"), (2, "c1")):
        gw.hop_datagram(peer, sr.encode_site_hello(sr.SiteHello((peer, 1), site, False, {}, 0, (0, 1, 2), sr.hop_session(1, 1))), now)
    assert sorted(gw.links) == [0, 2]
    gw.into_ring = []
    gw.orderer.submit = lambda msg, urgent=False: gw.into_ring.append(msg) or True
    gw.ring_lts = 10
    return gw


def ring_delivers(gw, now):
    """Our ring delivers, in order, everything b1 submitted so far (and what that makes it
    submit), as a ring of site b's daemons would."""
    while gw.into_ring:
        msg = gw.into_ring.pop(0)
        msg.lts, gw.ring_lts = gw.ring_lts, gw.ring_lts + 1
        gw.ring_output(sr.Deliver(msg), now)


def test_a_second_site_suspected_while_our_suspect_of_the_first_crosses_the_ring_is_named_next():
    """(issue 10, seed 41181) A line a - b - c: the a - b link is cut, and site c (c1 alone)
    dies 130 ms later. b1's grace for a ends (SUSPECT of a submitted, view 1), and c's HELLO
    wait ends while that SUSPECT still goes round b's ring. c must wait for it, then a SUSPECT
    of view 2 names both; forgotten, b proposes view 1 with c in it, waits for c's PROPOSE
    for ever, and never installs a view (the soak's failing seed)."""
    gw = linked_middle_of_a_line()
    a_dies, c_dies = 1.8, 1.93  # (each link's silence rule fires a second after the last word)
    gw._drop_link(0, "peer dead (silence)", a_dies)
    gw._drop_link(2, "peer dead (silence)", c_dies)
    a_suspected, c_suspected = a_dies + sr.SITE_GRACE_S, c_dies + sr.SITE_HELLO_WAIT_S
    assert gw.suspect_at == {0: pytest.approx(a_suspected), 2: pytest.approx(c_suspected)}
    assert a_suspected < c_suspected  # (the race: c's wait ends after a's grace)
    gw.tick(c_dies + 0.01)
    ring_delivers(gw, c_dies + 0.01)  # (our LINKS reports: both links down)
    assert gw.suspect_sent == 0  # (nothing suspected yet)
    gw.tick(a_suspected)
    assert suspects(gw) == [frozenset({0})] and gw.suspect_sent == 1
    gw.tick(c_suspected)  # our SUSPECT of a is still in the ring
    assert 2 in gw.suspect_at  # c waits for it, not forgotten
    assert gw.counters["site_suspects_waiting"] == 1
    ring_delivers(gw, c_suspected + 0.01)
    assert gw.proposed_view == 1 and gw.closing is None  # (c's PROPOSE of view 1 never comes)
    now = c_suspected + 0.01
    while gw.view_seq < 2 and now < c_suspected + 3.0:
        now = max(now, min(gw.next_deadline_s(), now + 0.05))
        gw.tick(now)
        ring_delivers(gw, now)
    views = [(o.kind, o.view_seq, o.sites) for o in gw.poll() if isinstance(o, sr.SiteViewChange)]
    assert views == [(sr.CONF_TRANSITIONAL, 2, [1]), (sr.CONF_REGULAR, 2, [1])], gw.log
    assert now < c_suspected + 1.0  # at the next HELLO round, not after a wait of its own


def _outputs_seen(daemons):
    """name -> every output its poll() gives from now on (the tests' helpers read them too)."""
    seen = {}
    for name, daemon in daemons.items():
        seen[name] = []

        def poll(poll=daemon.poll, out=seen[name]):
            items = poll()
            out.extend(items)
            return items
        daemon.poll = poll
    return seen


def _data(outputs):
    return [o.msg.data for o in outputs if isinstance(o, sr.Deliver)]


def _ring_meets(daemons, ring, came_from, items, lts):
    """A ring of every daemon in `came_from` (name -> the daemons that came from its old ring
    with it: its transitional members) delivers `items`, then what they submit, in one order
    (as _ring_orders, with each daemon its own configuration)."""
    members = sorted(came_from)
    ids = [(n, 1) for n in members]

    def hand(name, item):
        daemons[name].ring_orderer.out.append(item)
        for o in daemons[name].poll():
            if isinstance(o, sr.SiteSync) and o.kind == "point" and o.export:
                daemons[name].send_state(o, {})
    for name in members:
        change = sr.ConfigurationChange(sr.CONF_REGULAR, members, sorted(came_from[name]), (9, members[0], 1))
        change.member_ids = ids
        hand(name, change)
    items = list(items)
    while items or ring:
        item = items.pop(0) if items else sr.Deliver(ring.pop(0))
        item.msg.lts, lts = lts, lts + 1
        for name in members:
            hand(name, item)
    return lts


def test_what_the_ring_delivers_before_the_point_where_a_fork_meets_the_kept_ring_goes_to_the_fork_once():
    """(seed 71302 --lan-splits --groups) c3 alone forked (c1 c2 kept the epoch); c1's
    client's message, queued in c1's ring while c2 died, went round in the ring where c1 and
    c3 met, before the status round. c3's gateway, up to date under its fork's epoch, took it
    into the fork's stream and delivered it; at the point c3 took c1's state, which held it
    too: delivered twice, in two views. Now a daemon up to date holds what a ring with
    daemons from another ring delivers until the point: applied if its state is kept,
    dropped if it takes another's (that state holds it)."""
    daemons, ring = _daemons_of_site_a()
    seen = _outputs_seen(daemons)
    lts = _ring_orders(daemons, ring, ["a1", "a2", "a3"], [_ring_of(["a1", "a2", "a3"], 1),
                                                            local(0, b"ring-1", origin="a2")], 10)
    lts = _ring_orders(daemons, ring, ["a1"], [_ring_of(["a1"], 2)], lts)
    lts = _ring_orders(daemons, ring, ["a2", "a3"], [_ring_of(["a2", "a3"], 2)], lts)
    assert daemons["a1"].gateway.epoch != 1 and daemons["a2"].gateway.epoch == 1  # (a1 forked)
    # the fork's view leaves site b out (its own SUSPECT): its messages are delivered at once
    lost_b = carrier([sr.SiteRecord(sr.SITE_SUSPECT, 0, 0, 1, body=sr.encode_site_view_body([1], {}))], 0)
    lts = _ring_orders(daemons, ring, ["a1"], [lost_b], lts)
    assert daemons["a1"].gateway.live_sites == [0] and daemons["a2"].gateway.live_sites == [0, 1]
    for out in seen.values():
        out.clear()
    lts = _ring_meets(daemons, ring, {"a1": ["a1"], "a2": ["a2", "a3"], "a3": ["a2", "a3"]},
                      [local(0, b"met", origin="a2")], lts)
    assert daemons["a1"].gateway.live_sites == [0, 1]  # (a1 took the kept state)
    # site b's frontier passes "met" where the kept view waits for it
    _ring_orders(daemons, ring, ["a1", "a2", "a3"], [carrier([sr.SiteRecord(sr.SITE_FRONTIER, 1, lts)], 0)], lts)
    streams = {n: _own_stream(d) for n, d in daemons.items()}
    assert all(d.synced for d in daemons.values())
    assert streams["a1"] == streams["a2"] == streams["a3"] == {1: b"ring-1", 2: b"met"}
    # "met" once everywhere (a1 delivered ring-1 in its fork's view; the kept side now)
    assert {name: _data(out) for name, out in seen.items()} == {
        "a1": [b"met"], "a2": [b"ring-1", b"met"], "a3": [b"ring-1", b"met"]}


def test_a_heal_answered_by_two_incarnations_of_a_site_links_with_the_first_one_only():
    """(seed 71257 --lan-splits --groups --hostile 0.1 --key) c1 had left site b out; b's LAN
    was split, b3 alone forked (a new epoch) beside b1 b2 (the kept one), and both answered
    the heal from their views. c1 linked with b1 and then, b3's HELLO coming, with b3: its
    merge read the fork's epoch while sites a and b read the kept one; when b3 took b1's
    state, c1 refused site b's HELLOs and records as a new incarnation, for ever (reached
    round through a, never suspected): a message lost at c. A HELLO out of our view, of
    another epoch than our live link to that site, takes no link over (in our view,
    _new_incarnation says the same); one of the link's epoch still does."""
    sites, costs = [["a1", "a2"], ["b1", "b2", "b3"]], [[0, 1], [1, 0]]
    gw = gateway("a1", sites, costs)
    regular(gw, ["a1", "a2"])
    gw.ring_output(carrier([sr.SiteRecord(sr.SITE_SUSPECT, 0, 0, 1, body=sr.encode_site_view_body([1], {}))], 3), 0.1)
    assert gw.live_sites == [0]
    session = sr.hop_session(1, 0)  # (b's sessions of its link to site 0)
    hello = lambda pid, epoch: sr.encode_site_hello(sr.SiteHello(pid, 1, True, {}, 1, (1,), session, epoch))
    gw.hop_datagram("b1", hello(("b1", 1), 7), 0.2)
    assert gw.links[1].peer == ("b1", 1) and gw.site_epochs == {1: 7}
    gw.hop_datagram("b3", hello(("b3", 1), 9), 0.3)  # (the fork's)
    assert gw.links[1].peer == ("b1", 1) and gw.site_epochs == {1: 7}
    assert gw.counters["hellos_other_incarnation_than_our_link"] == 1
    gw.hop_datagram("b2", hello(("b2", 1), 7), 0.4)  # (another daemon of the kept one)
    assert gw.links[1].peer == ("b2", 1) and gw.site_epochs == {1: 7}


def test_a_daemon_brought_up_to_date_in_a_forks_ring_ends_the_fork_as_its_daemons_do():
    """(seed 73027 --lan-splits --groups --client-views) a2 forked alone; a3, restarted, joined
    a2's ring and took a2's state; when that ring met a1's (kept), a2 delivered in the fork's
    closing view what its merge still held of the fork's stream (close_fork), and a3 did not:
    the state it took said nothing of the fork (fork_ring, own_held_upto), so a3 never ended
    the fork's view and never delivered those messages. They go with the state now."""
    fork = _linked_rep_of_a_split_site("a1")
    fork.orderer.ring.safe_lts = 0
    _ring_ends(fork)
    regular(fork, ["a1"], 0.2)
    assert fork.epoch != 5 and fork.fork_ring == {"a1"}
    fork.ring_output(local((1 << 16) + 1, b"fork's own", origin="a1"), 0.3)  # (b's frontier: none yet)
    regular(fork, ["a1", "a3"], 0.4)  # (a restarted a3 comes in and takes a1's state)
    late = gateway("a3", [["a1", "a2", "a3"], ["b1"]], [[0, 1], [1, 0]])
    late.import_state(json.loads(json.dumps(fork.export_state())), 0.5)
    regular(late, ["a1", "a3"], 0.5)
    assert (late.fork_ring, late.own_held_upto) == (fork.fork_ring, fork.own_held_upto) == ({"a1"}, 1)
    fork.poll()
    late.poll()
    for gw in (fork, late):  # (the rings meet: both end the fork's view alike)
        gw.close_fork(0.6)
        assert delivered(gw) == [b"fork's own"] and gw.counters["fork_held_delivered"] == 1
    state = json.loads(json.dumps(fork.export_state()))
    state["fork_ring"] = ["b1"]  # (not a daemon of our site: the state is refused)
    with pytest.raises(ValueError):
        gateway("a3", [["a1", "a2", "a3"], ["b1"]], [[0, 1], [1, 0]]).import_state(state, 0.7)


def test_the_forks_own_sites_message_before_the_point_still_reaches_the_fork():
    """(seed 74011 --lan-splits) What the merged ring delivers before the point is dropped at
    the fork's daemon (the kept state holds it), but not a SITES message its own
    representative made under the fork's epoch: the kept side refuses it (another
    incarnation), so only the fork reads it, and it may end a view change of the fork's
    (there a1's view 1 without site b, its transitional view given out: dropped, a1 closed
    the fork in view 0 and its messages counted as owed by a2 and a3)."""
    daemons, ring = _daemons_of_site_a()
    seen = _outputs_seen(daemons)
    lts = _ring_orders(daemons, ring, ["a1", "a2", "a3"], [_ring_of(["a1", "a2", "a3"], 1),
                                                            local(0, b"ring-1", origin="a2")], 10)
    lts = _ring_orders(daemons, ring, ["a1"], [_ring_of(["a1"], 2)], lts)
    lts = _ring_orders(daemons, ring, ["a2", "a3"], [_ring_of(["a2", "a3"], 2)], lts)
    fork_epoch = daemons["a1"].gateway.epoch
    for out in seen.values():
        out.clear()
    lost_b = sr.SiteRecord(sr.SITE_SUSPECT, 0, 0, 1, body=sr.encode_site_view_body([1], {}))
    _ring_meets(daemons, ring, {"a1": ["a1"], "a2": ["a2", "a3"], "a3": ["a2", "a3"]},
                [carrier([lost_b], 0, origin="a1", epoch=fork_epoch), local(0, b"met", origin="a2")], lts)
    views = {n: [(o.kind, o.view_seq, o.sites, o.fork_ends) for o in out if isinstance(o, sr.SiteViewChange)]
             for n, out in seen.items()}
    assert views["a1"][:2] == [(sr.CONF_TRANSITIONAL, 1, [0], False), (sr.CONF_REGULAR, 1, [0], False)]
    assert views["a1"][2] == (sr.CONF_TRANSITIONAL, 1, [0], True)  # (the fork's view ends, in view 1)
    assert views["a2"] == views["a3"] == []  # (another incarnation's: refused)
    assert daemons["a1"].gateway.counters["ring_outputs_dropped_at_the_point"] == 1  # ("met")


# ---- a link asked for under one epoch, answered under another -----------------------------------

SITES_B3 = [["a1", "a2"], ["b1", "b2", "b3"]]


def _left_out(gw, site, now):
    """Our ring delivers our own SUSPECT of `site`: a view without it (a partition)."""
    ours = gw.site_id
    gw.ring_output(carrier([sr.SiteRecord(sr.SITE_SUSPECT, ours, 0, 1, body=sr.encode_site_view_body([site], {}))],
                           3), now)
    assert gw.live_sites == [ours]


def _hellos(gw):
    return [(o.dest, sr.decode_site_hello(o.packet)) for o in gw.poll()
            if isinstance(o, sr.SendHop) and sr.hop_packet_type(o.packet) == sr.PT_SITE_HELLO]


def test_an_answer_to_a_hello_asked_under_our_former_epoch_starts_no_link_and_we_ask_again():
    """(seed 1113 --lan-splits --client-views) b1, a fork of site b (its own epoch), asked a2
    across a heal; before a2's answer came, b1's ring met b2 b3 and b1 took their kept state,
    epoch 1. a2 had started its end with the fork's epoch and merged site b in under it;
    b1 started its end from the answer, and every FRONTIER of site b said epoch 1: a2 refused
    them all as a stale incarnation's, its site's STATE never went, and a1, restarted, never
    got the sites' state. The answer now starts no link; b1 asks again under its epoch (a
    later session), and a2, merging with site b, starts its end again with that epoch."""
    fork_epoch, peer_epoch = 7, 9
    asker = gateway("b1", SITES_B3)
    asker.epoch = fork_epoch
    regular(asker, ["b1", "b2", "b3"])
    _left_out(asker, 0, 0.1)
    answerer = gateway("a1", SITES_B3)
    answerer.epoch = peer_epoch
    regular(answerer, ["a1", "a2"])
    _left_out(answerer, 1, 0.1)
    asker.poll()
    answerer.poll()
    asker._probe(0.2)
    first = [h for dest, h in _hellos(asker) if dest == "a1"]
    assert len(first) == 1 and first[0].request and first[0].epoch == fork_epoch
    answerer.hop_datagram("b1", sr.encode_site_hello(first[0]), 0.25)
    assert answerer.site_epochs == {1: fork_epoch} and answerer.links[1].peer_session == first[0].session
    assert answerer._start_merge(2, frozenset({0, 1}), [])  # (where its ring delivers its JOIN)
    answer = [h for dest, h in _hellos(answerer) if dest == "b1"]
    assert len(answer) == 1 and not answer[0].request
    # b1's ring meets the kept one: it takes b2's state (epoch 1), then a2's answer comes
    kept = gateway("b2", SITES_B3)
    kept.epoch = 1
    regular(kept, ["b1", "b2", "b3"])
    _left_out(kept, 0, 0.1)
    asker.stand_down()
    asker.import_state(json.loads(json.dumps(kept.export_state())), 0.3)
    asker.ring_members = frozenset(["b1", "b2", "b3"])
    asker.choose_representative(0.3)
    assert asker.is_representative() and asker.epoch == 1
    asker.poll()
    asker.hop_datagram("a1", sr.encode_site_hello(answer[0]), 0.35)
    assert 0 not in asker.links and asker.counters["hellos_answer_of_another_epoch"] == 1
    again = [h for dest, h in _hellos(asker) if dest == "a1"]
    assert len(again) == 1 and again[0].request and again[0].epoch == 1
    assert again[0].session > first[0].session  # (a session a1 never linked to)
    # a1, merging with site b, starts its end again: site b's epoch is 1 now
    answerer.hop_datagram("b1", sr.encode_site_hello(again[0]), 0.4)
    assert answerer.links[1].peer_session == again[0].session and answerer.site_epochs == {1: 1}
    assert answerer.counters["hellos_new_incarnation"] == 0
    answer = [h for dest, h in _hellos(answerer) if dest == "b1"]
    asker.hop_datagram("a1", sr.encode_site_hello(answer[-1]), 0.45)
    assert asker.links[0].peer_session == answer[-1].session
    answerer._from_link(1, sr.SiteRecord(sr.SITE_FRONTIER, 1, 20, 0, epoch=1))
    assert answerer.counters["site_epochs_refused"] == 0


def test_a_hello_of_another_epoch_from_our_links_peer_is_refused_where_its_site_is_not_joining():
    """The rule above is only for a site joining us in the merge being agreed (its epoch is
    read again from the link the merged view starts with): in our view, a later session of
    our peer under another epoch is a new incarnation still, as any HELLO of another epoch."""
    gw = gateway("a1", SITES_B3)
    regular(gw, ["a1", "a2"])
    gw.poll()
    hello = lambda session, epoch: sr.encode_site_hello(
        sr.SiteHello(("b1", 1), 1, True, {}, 0, (0, 1), sr.hop_session(session, 0), epoch))
    gw.hop_datagram("b1", hello(1, 7), 0.1)
    assert gw.site_epochs == {1: 7} and gw.merging is None
    gw.hop_datagram("b1", hello(2, 1), 0.2)
    assert gw.links[1].peer_session == sr.hop_session(1, 0) and gw.site_epochs == {1: 7}
    assert gw.counters["hellos_new_incarnation"] == 1


def test_a_joiners_peer_starting_over_under_another_epoch_than_our_merge_took_is_refused():
    """(seeds 190147 and 190199 --lan-splits) The rule above is not for a joining site whose
    MERGE, under its fork's epoch, our merge took: b2, a fork of site b alone, decided the
    merge with us where its ring met the kept one and took that one's state, and its READY
    of the fork's epoch went nowhere. Its end of our link started over under the kept
    epoch; taken for the joiner starting over, our decided merge read that epoch and waited
    for the fork's READY with a live link to the site, never suspecting it. Refused, the link
    to the fork's end goes silent, and the silence rule leaves the site out after the merge."""
    fork_epoch, kept_epoch = 7, 1
    gw = gateway("a1", SITES_B3)
    regular(gw, ["a1", "a2"])
    _left_out(gw, 1, 0.1)
    gw.poll()
    hello = lambda session, epoch: sr.encode_site_hello(
        sr.SiteHello(("b1", 1), 1, True, {}, 0, (1,), sr.hop_session(session, 0), epoch))
    gw.hop_datagram("b1", hello(1, fork_epoch), 0.1)
    assert gw.site_epochs == {1: fork_epoch} and gw.links[1].peer_session == sr.hop_session(1, 0)
    assert gw._start_merge(2, frozenset({0, 1}), [])  # (where its ring delivers its JOIN)
    theirs = sr.SiteRecord(sr.SITE_MERGE, 1, 30, 2, body=sr.encode_site_view_body(
        [0, 1], {1: (1, 0, 0)}, {1: fork_epoch}))
    gw.ring_output(carrier([theirs], 40), 0.2)
    assert gw.closing is not None and gw.closing.joined == frozenset({1})  # (decided)
    gw.poll()
    gw.hop_datagram("b1", hello(2, kept_epoch), 0.3)
    assert gw.links[1].peer_session == sr.hop_session(1, 0) and gw.site_epochs == {1: fork_epoch}
    assert gw.counters["hellos_new_incarnation"] == 1
    assert gw.counters["hellos_joiner_of_another_incarnation_than_the_merge"] == 1
    # (the fork's end says nothing more: the link dies, and the site is suspected)
    gw.tick(0.3 + 2 * sr.HopSettings().peer_silence_s)
    assert 1 not in gw.links and 1 in gw.suspect_at


# ---- a fork's clients' messages queued when its ring meets the kept one ---------------------------

class _QueuedRingEnd(_RingEnd):
    """A _RingEnd whose clients' messages wait in this daemon's queue for its token
    (send_queued puts them into the one order), as a real ring's pending queue does; the
    daemon's own STATE and SITES messages go at once, as the urgent ones do."""

    def __init__(self, ring):
        super().__init__(ring)
        self.queue = []

    def submit(self, msg, urgent=False):
        if msg.kind in sr.CLIENT_MESSAGE_KINDS:
            self.queue.append(msg)
            return True
        return super().submit(msg, urgent)

    def send_queued(self):
        self.ring.extend(self.queue)
        self.queue = []

    def withdraw_queued(self, kinds):
        taken = [m for m in self.queue if m.kind in kinds]
        self.queue = [m for m in self.queue if m.kind not in kinds]
        return taken


def test_a_forks_clients_message_queued_when_its_ring_meets_the_kept_one_is_delivered_at_the_fork_too():
    """(seed 840 --lan-splits --client-views) a1 forked alone; its client's message waited in
    its ring's queue while the ring re-formed (GATHER), and went round first in the ring
    where a1 met a2 a3, before the status round's point: a2 and a3, whose state is kept,
    delivered it; a1 dropped it with what that ring delivered before the point (the kept
    state holds it) and took a state where it was delivered already: a1, its sender, never
    delivered it (there b3's 10 messages, delivered by b2 only). Where another ring of our
    site may meet ours, our clients' messages wait for the point: then they go into the
    order, after the state if we take one, and every daemon delivers them once."""
    ring = []
    daemons = {name: sr.SitesOrderer(_QueuedRingEnd(ring), gateway(name, SITE_OF_THREE), {})
               for name in ("a1", "a2", "a3")}
    seen = _outputs_seen(daemons)
    lts = _ring_orders(daemons, ring, ["a1", "a2", "a3"], [_ring_of(["a1", "a2", "a3"], 1),
                                                            local(0, b"ring-1", origin="a2")], 10)
    lts = _ring_orders(daemons, ring, ["a1"], [_ring_of(["a1"], 2)], lts)
    lts = _ring_orders(daemons, ring, ["a2", "a3"], [_ring_of(["a2", "a3"], 2)], lts)
    lost_b = sr.SiteRecord(sr.SITE_SUSPECT, 0, 0, 1, body=sr.encode_site_view_body([1], {}))
    lts = _ring_orders(daemons, ring, ["a2", "a3"], [carrier([lost_b], 0, origin="a2", epoch=1)], lts)
    fork = daemons["a1"]
    assert fork.gateway.epoch != daemons["a2"].gateway.epoch  # (a1 forked)
    assert daemons["a2"].gateway.live_sites == [0]  # (b1 silent: the kept side delivers at once)
    assert fork.submit(sr.DaemonMessage(sr.DATA, "a1", "#c#a1", sr.AGREED_MESS, ["g"], data=b"queued"))
    assert fork.ring_orderer.queue  # (its ring re-forms: no token yet)
    for out in seen.values():
        out.clear()
    members, came_from = ["a1", "a2", "a3"], {"a1": ["a1"], "a2": ["a2", "a3"], "a3": ["a2", "a3"]}

    def hand(name, item):
        daemons[name].ring_orderer.out.append(item)
        for o in daemons[name].poll():
            if isinstance(o, sr.SiteSync) and o.kind == "point" and o.export:
                daemons[name].send_state(o, {})
    for name in members:  # the regular configuration where the rings meet; a1 reads it first
        change = sr.ConfigurationChange(sr.CONF_REGULAR, members, came_from[name], (9, "a1", 1))
        change.member_ids = [(n, 1) for n in members]
        hand(name, change)
        if name == "a1":
            fork.ring_orderer.send_queued()  # (a1's first token visit: before a2's, a3's STATUS)
    while ring or any(d.ring_orderer.queue for d in daemons.values()):
        if not ring:
            for d in daemons.values():
                d.ring_orderer.send_queued()
            continue
        msg = ring.pop(0)
        msg.lts, lts = lts, lts + 1
        for name in members:
            hand(name, sr.Deliver(msg))
    assert all(d.synced for d in daemons.values()) and fork.gateway.epoch == daemons["a2"].gateway.epoch == 1
    assert {name: _data(out).count(b"queued") for name, out in seen.items()} == {"a1": 1, "a2": 1, "a3": 1}


def test_a_ring_gives_back_the_clients_messages_no_packet_carries_yet_and_keeps_its_own():
    """RingOrderer.withdraw_queued (SitesOrderer._withdraw_clients_queue): the clients'
    messages come back in their order; the daemon's own urgent STATE stays at the front."""
    ring = sr.RingOrderer("a1", 1, ["a1", "a2"], random.Random(1))
    client = lambda kind, data: sr.DaemonMessage(kind, "a1", "#c#a1", sr.AGREED_MESS, ["g"], data=data)
    for msg in (client(sr.DATA, b"one"), client(sr.JOIN, b""), client(sr.DATA, b"two")):
        assert ring.submit(msg)
    state = sr.DaemonMessage(sr.STATE, "a1", "#sync#a1", sr.AGREED_MESS, ["#sync#"], data=b"status")
    assert ring.submit(state, urgent=True)
    taken = ring.withdraw_queued(sr.CLIENT_MESSAGE_KINDS)
    assert [(m.kind, m.data) for m in taken] == [(sr.DATA, b"one"), (sr.JOIN, b""), (sr.DATA, b"two")]
    transport = ring.transport
    assert [m for m, _ in transport.pending] == [state] and transport.front == 1
    assert transport.pending_bytes == len(sr.encode_message_body(state))
    assert ring.counters["messages_withdrawn"] == 3


def test_a_forks_own_message_held_for_its_undecided_view_is_delivered_as_the_fork_ends():
    """(seed 86093 --lan-splits --groups --site-grace-s 0.3) b2, forked alone, proposed a view
    without a silent site; a fork asks no site until a merge, so nobody answered and the view
    stayed undecided, and its client's messages after the PROPOSE waited for the decision
    (own_held, never numbered in the fork's stream). Then the rings met: b2 took b1's state
    and ended the fork's view with what its stream held; the waiting messages were
    delivered nowhere, not even to their sender. close_fork delivers them too, as the fork
    would have numbered them; only the fork's daemons' (_release_own's rule)."""
    sites, costs = [["a1", "a2", "a3"], ["b1"], ["c1"]], [[0, 1, 1], [1, 0, 1], [1, 1, 0]]
    fork = gateway("a1", sites, costs)
    fork.epoch, fork.lineage, fork.wide_ring = 5, [(5, 0)], frozenset(sites[0])
    regular(fork, ["a1", "a2", "a3"])
    regular(fork, ["a1"], 1.0)
    assert fork.epoch != 5 and fork.fork_ring == {"a1"}
    fork.ring_output(local(10, b"before the PROPOSE", origin="a1"), 1.1)
    lost_b = sr.SiteRecord(sr.SITE_SUSPECT, 0, 0, 1, body=sr.encode_site_view_body({1}, {}))
    fork.ring_output(carrier([lost_b], 11, origin="a1", epoch=fork.epoch), 1.2)
    fork.ring_output(local(12, b"after the PROPOSE", origin="a1"), 1.3)
    assert fork.proposed_view == 1 and fork.closing is None and len(fork.own_held) == 1
    assert delivered(fork) == []  # (site b's and c's frontiers: none yet)
    regular(fork, ["a1", "a2", "a3"], 1.5)  # (the rings meet; a2's state is kept)
    fork.close_fork(1.5)
    assert delivered(fork) == [b"before the PROPOSE", b"after the PROPOSE"]
    assert fork.counters["fork_held_delivered"] == 2 and not fork.own_held


def test_a_daemon_that_takes_a_forks_state_joins_the_fork_and_what_they_order_ends_with_it():
    """(seed 86048 --lan-splits --groups --site-grace-s 0.3) a3 forked alone; a2, restarted,
    joined a3's ring and took its state; their ring ordered a3's client's messages. When that
    ring met a1's (kept), a3 and a2 ended the fork's view with their stream up to
    own_held_upto, the end of the last ring of the fork's daemons alone: the ring with a2
    was not, so its messages were delivered nowhere (a1's state never had them). A daemon
    that takes our state joins fork_ring at the round's point (here, and in the state)."""
    daemons, ring = _daemons_of_site_a()
    seen = _outputs_seen(daemons)
    lts = _ring_orders(daemons, ring, ["a1", "a2", "a3"], [_ring_of(["a1", "a2", "a3"], 1)], 10)
    lts = _ring_orders(daemons, ring, ["a2", "a3"], [_ring_of(["a2", "a3"], 2), local(0, b"kept's", origin="a2")], lts)
    lts = _ring_orders(daemons, ring, ["a1"], [_ring_of(["a1"], 2), local(0, b"fork alone", origin="a1")], lts)
    lts = _ring_orders(daemons, ring, ["a2"], [_ring_of(["a2"], 3)], lts)  # (a3 crashed)
    fork = daemons["a1"]
    assert fork.gateway.epoch != daemons["a2"].gateway.epoch == 1 and fork.gateway.fork_ring == {"a1"}
    restarted = daemons["a3"] = sr.SitesOrderer(_RingEnd(ring), gateway("a3", SITE_OF_THREE), {})
    seen.update(_outputs_seen({"a3": restarted}))
    lts = _ring_orders(daemons, ring, ["a1", "a3"], [_ring_of(["a1", "a3"], 4)], lts)
    assert restarted.synced and restarted.gateway.epoch == fork.gateway.epoch
    assert fork.gateway.fork_ring == restarted.gateway.fork_ring == {"a1", "a3"}
    lts = _ring_orders(daemons, ring, ["a1", "a3"], [local(0, b"fork with a3", origin="a1")], lts)
    for out in seen.values():
        out.clear()
    _ring_meets(daemons, ring, {"a1": ["a1", "a3"], "a3": ["a1", "a3"], "a2": ["a2"]}, [], lts)
    assert all(d.synced for d in daemons.values()) and fork.gateway.epoch == 1
    assert _data(seen["a1"]) == _data(seen["a3"]) == [b"fork alone", b"fork with a3"]


def test_a_stood_down_daemon_whose_ring_starts_afresh_has_a_fresh_daemons_sites_state():
    """(seed 86307 --site-grace-s 0.3 --lan-splits --groups) a2 and a3 forked alone (a1 gone);
    a2's fork left silent site b out (view 1 of site a alone, no neighbours). The rings met,
    a3's state was to be kept, and a3 was killed before it sent it: a2 stood down and waited.
    a3, restarted, joined a2's ring; nobody held a state, so both started afresh, but a2's
    gateway kept its fork's view while a3's was view 0 of sites a and b. a2 represented site
    a and opened no link to b, so b was never suspected in a3's view. Where its ring starts
    afresh, a stood-down daemon's sites' state is a freshly started daemon's, as a3's."""
    daemons, ring = _daemons_of_site_a()
    for d in daemons.values():  # (the gateways' SITES messages go into the ring too)
        d.gateway.orderer.submit = lambda msg, urgent=False: ring.append(msg) or True
    lts = _ring_orders(daemons, ring, ["a1", "a2", "a3"], [_ring_of(["a1", "a2", "a3"], 1)], 10)
    lts = _ring_orders(daemons, ring, ["a2"], [_ring_of(["a2"], 2), local(0, b"a2's fork", origin="a2")], lts)
    lts = _ring_orders(daemons, ring, ["a3"], [_ring_of(["a3"], 2), local(0, b"a3's fork", origin="a3")], lts)
    a2 = daemons["a2"]
    assert a2.gateway.forks == daemons["a3"].gateway.forks == 1
    assert a2.gateway._suspect({1}, 1.0)  # (site b silent: a view of our site alone)
    a2.gateway._flush_ring()
    lts = _ring_orders(daemons, ring, ["a2"], [], lts)
    assert (a2.gateway.view_seq, a2.gateway.live_sites, a2.gateway.neighbours) == (1, [0], [])
    daemons["a3"].send_state = lambda event, groups: None  # (killed before it sends its state)
    del daemons["a1"]
    lts = _ring_meets(daemons, ring, {"a2": ["a2"], "a3": ["a3"]}, [], lts)
    assert not a2.synced and a2.gateway.stood_down and a2.gateway.view_seq == 1
    restarted = daemons["a3"] = sr.SitesOrderer(_RingEnd(ring), gateway("a3", SITE_OF_THREE), {})
    restarted.gateway.orderer.submit = lambda msg, urgent=False: ring.append(msg) or True
    change = _ring_of(["a2", "a3"], 4)
    change.member_ids = [("a2", 1), ("a3", 2)]
    _ring_orders(daemons, ring, ["a2", "a3"], [change], lts)
    assert a2.synced and restarted.synced and a2.gateway.epoch == restarted.gateway.epoch == 2
    assert (a2.gateway.view_seq, a2.gateway.live_sites, a2.gateway.neighbours) == (0, [0, 1], [1])
    assert not a2.gateway.stood_down and a2.gateway.counters["sites_state_started_over"] == 1
    # nothing of the old state stays: the two export the same (but where their clocks differ)
    mine, theirs = a2.gateway.export_state(), restarted.gateway.export_state()
    assert {k for k in mine if mine[k] != theirs[k]} <= {"numbers"}
    assert mine["numbers"][:-1] == theirs["numbers"][:-1]  # (the last: its ring's lts seen)
    # a2 represents site a, and its links start: site b is asked (and suspected if silent)
    assert a2.gateway.is_representative()
    a2.gateway.tick(sr.SITE_ALONE_AFTER_S)
    assert a2.gateway.wide and set(a2.gateway.suspect_at) == {1}
    assert any(isinstance(o, sr.SendHop) and o.dest == "b1" for o in a2.gateway.poll())


def test_a_stood_down_daemon_that_starts_afresh_still_gives_up_its_ended_incarnations_merge():
    """(start_over) The GIVEUP of the merge a fork proposed and never decided (stand_down's
    ending_giveup, sent at import_state when the state taken is another incarnation's) goes
    into the ring under the new epoch where the ring starts afresh instead, and every daemon
    of it keeps it for the sites that wait for it (seed 1037's rule)."""
    gw = gateway("a1", SITE_OF_THREE)
    into_ring = []
    gw.orderer.submit = lambda msg, urgent=False: into_ring.append(msg) or True
    giveup = sr.SiteRecord(sr.SITE_GIVEUP, 0, 0, 2, body=sr.encode_site_view_body({0, 1}, {}, {0: 77}))
    gw.representative = "a1"
    gw.stand_down()
    gw.ending_giveup = giveup  # (planted: our fork, epoch 77, proposed view 2 and never decided)
    gw.start_over(3, 5.0)
    assert gw.epoch == 3 and gw.ended_giveups == {} and len(into_ring) == 1
    assert into_ring[0].groups[:1] == ["3"]  # (named by the new epoch: read, not refused)
    regular(gw, ["a1"], 5.0)
    msg = into_ring[0]
    msg.lts = 20
    gw.ring_output(sr.Deliver(msg), 5.1)
    assert list(gw.ended_giveups) == [77]


def _installed_merge_with_b():
    """a1 (representative of a) in view 1 of sites a and c (b left out; the cut healed)
    installs view 2 with b: MERGEs and READYs of b and c at lts 9, c's FRONTIER at the limit.
    Links to b1 and c1; b's stream of the merged view starts above lts 9, and its first
    message there is not delivered by our ring yet."""
    gw = gateway("a1", [["a1", "a2"], ["b1"], ["c1"]], COSTS_C)
    regular(gw, ["a1", "a2"])
    gw.poll()
    gw.live_sites, gw.view_seq = [0, 2], 1
    gw.merge.uninstall(1)
    del gw.streams[1]
    for site, peer in ((1, "b1"), (2, "c1")):
        gw._start_link(site, (peer, 1), {}, 0.0, 0)
    assert gw._start_merge(2, frozenset({0, 1, 2}), [])
    gw.ring_output(carrier([_merge_record(sr.SITE_MERGE, 2, {}), _merge_record(sr.SITE_MERGE, 1, {})], 10), 1.0)
    gw.ring_output(carrier([_merge_record(sr.SITE_READY, 1, {}), _merge_record(sr.SITE_READY, 2, {})], 11), 1.1)
    gw.ring_output(carrier([sr.SiteRecord(sr.SITE_FRONTIER, 2, 9)], 12), 1.2)  # (c reaches the limit)
    gw.poll()
    assert gw.view_seq == 2 and gw.live_sites == [0, 1, 2] and gw.join_after_lts == {1: 9}
    gw.to_ring.clear()
    return gw


def test_a_joined_sites_message_that_comes_the_short_way_before_those_under_it_waits_for_them():
    """Seed 2761 --lan-splits --groups --client-views: b1 had installed the merged view with
    c, and its ring had not yet delivered c's first message of that view. c1 sent c's records
    79..98 down their link; the trees had changed, and 108.. came through a1 before 99..107.
    The hold for a message above the next one left out a joined site's stream until its first
    message was delivered: 108 went into b's ring, was dropped there as out of order, and
    99..107 then counted as duplicates of what the ring had. b never delivered c's later
    messages, and a1 delivered c's SAFE ones on b's ARU. Here b's stream, joined: 11 and 12 on
    b's own link, then 14 through c, then 13."""
    gw = _installed_merge_with_b()
    of_b = lambda seq, lts: remote(seq, lts, b"b%d" % seq)
    for link_site, r in ((1, of_b(11, 20)), (1, of_b(12, 21)), (2, of_b(14, 23)), (1, of_b(13, 22))):
        gw._from_link(link_site, r)
    assert [r.site_seq for r in gw.to_ring if r.kind == sr.SITE_MSG] == [11, 12, 13, 14]
    assert gw.counters["site_records_held_ahead"] == 1
    assert gw.counters["site_records_duplicate"] == 0
    # what our ring delivers is b's stream whole, from its first message of the merged view
    gw.ring_output(carrier(list(gw.to_ring), 30), 2.0)
    assert gw.applied_seq[1] == 14 and gw.counters["site_records_out_of_order"] == 0


def test_a_joined_sites_messages_at_or_below_the_limit_or_before_its_first_above_are_not_held():
    """The hold of a joined site's stream counts from a message above the merge's limit that we
    put into our ring: one at or below it is of b's old view (dropped where our ring delivers
    it), and before any, where b's merged view's stream starts is not known here."""
    gw = _installed_merge_with_b()
    gw._from_link(1, remote(7, 8))  # (b's old view: at or below the limit 9)
    gw._from_link(2, remote(11, 20))  # (the first above the limit we see: its stream starts here)
    gw._from_link(1, remote(12, 21))
    assert [r.site_seq for r in gw.to_ring if r.kind == sr.SITE_MSG] == [7, 11, 12]
    assert gw.counters["site_records_held_ahead"] == 0
