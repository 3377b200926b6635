"""The wide-area pieces one at a time, with a fake clock (thesis 7.3.3): site records and HELLO
on the wire (and what a forger's bytes do: nothing but a counter), and one SiteGateway fed
by hand with what its ring would deliver, to see the frontier rule, the merge and the gate."""
from __future__ import annotations

import random

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


@pytest.mark.parametrize("raw, why", [
    (b"\xff\xff\xff\xff", "a length beyond any record"),
    (b"\x00\x00\x00\x02\x01\x00", "shorter than its header"),
    (sr._U32.pack(11) + bytes([9]) + b"\x00\x01" + b"\x00" * 8, "an unknown kind"),
    (sr._U32.pack(11) + bytes([sr.SITE_FRONTIER]) + b"\x01\x01" + b"\x00" * 8, "a site beyond MAX_SITES"),
])
def test_a_stream_that_cannot_be_records_is_refused(raw, why):
    with pytest.raises(sr.RingWireError):
        sr.SiteRecordReader().feed(raw)


def test_a_sites_message_cut_short_is_refused():
    raw = sr.encode_site_records([remote(1, 5)])
    with pytest.raises(sr.RingWireError):
        sr.decode_site_records(raw[:-1])


def test_hello_round_trip_and_garbage():
    hello = sr.SiteHello(("b1", 1000), 1, True, {0: 4, 1: 9}, 3, (0, 1), 7)
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


def test_a_hello_from_a_site_that_left_us_out_starts_no_link():
    gw = gateway()
    regular(gw, ["a1", "a2"])
    gw.poll()
    gw.hop_datagram("b1", sr.encode_site_hello(sr.SiteHello(("b1", 1), 1, True, {}, 1, (1,), 1)), 0.1)
    assert gw.links == {} and gw.counters["hellos_left_out"] == 1
