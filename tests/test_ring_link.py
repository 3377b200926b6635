"""The LINK level of the ring (spread_mini.RingLink, thesis 7.3.2.2 "Protocolo RING", lines
2676-2727 of seeds/003_5c6401fa5e45e77c.txt): the token's aru rule, flow control (personal and
global window), packing and fragmenting into packets of at most max_packet_bytes,
retransmission requests (rtr), the hand-up of chunks in link_seq order and its gaps when a
configuration closes; and Routing, the seam where a HopLink will sit beside the ring (7.3.1).
Tier 1 (RingLink alone, with a fake transport) and tier 2 (the simulator)."""
from __future__ import annotations

import collections
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import spread_mini as sr
from ring_sim import all_in_one_ring, assert_guarantees, calm_sim, delivered

PEERS = ["d1", "d2", "d3"]


# ------------------------------------------------------------------------ the token (7.3.2.2)

def ring_with(aru, lts_complete=0):
    ring = sr._Ring((1, "a", 1), [("a", 1), ("b", 1)], 0, sr.SiteStream(sr.LOCAL_SITE, 0))
    ring.my_aru = aru
    ring.stream.delivered_lts = lts_complete
    return ring


def test_aru_rule_lower_token_aru_and_sign_site_aru_modifier():
    o = sr.RingOrderer("b", 1, ["a", "b"])
    tok = sr.RingToken((1, "a", 1), ("a", 1), link_seq=20, link_aru=20, site_aru=9)
    o._update_aru(ring_with(aru=15, lts_complete=4), tok)
    assert (tok.link_aru, tok.site_aru, tok.site_aru_modifier) == (15, 4, ("b", 1))


def test_aru_rule_only_the_modifier_raises_the_aru():
    o = sr.RingOrderer("b", 1, ["a", "b"])
    tok = sr.RingToken((1, "a", 1), ("a", 1), link_seq=20, link_aru=10, site_aru=3,
                   site_aru_modifier=("c", 1))
    o._update_aru(ring_with(aru=18), tok)
    assert tok.link_aru == 10, "a daemon that did not lower the aru must not raise it"
    tok.site_aru_modifier = ("b", 1)
    o._update_aru(ring_with(aru=18, lts_complete=6), tok)
    assert (tok.link_aru, tok.site_aru, tok.site_aru_modifier) == (18, 6, ("b", 1))
    o._update_aru(ring_with(aru=20, lts_complete=7), tok)
    assert (tok.link_aru, tok.site_aru_modifier) == (20, None), "everything received: nobody signs"


def test_aru_rule_stable_value_is_the_smaller_of_this_and_the_last_rotation():
    o = sr.RingOrderer("b", 1, ["a", "b"])
    ring = ring_with(aru=20, lts_complete=8)
    ring.prev_link_aru, ring.prev_site_aru = 12, 5
    tok = sr.RingToken((1, "a", 1), ("a", 1), link_seq=20, link_aru=20, site_aru=8)
    o._update_aru(ring, tok)
    assert (ring.safe_link, ring.safe_lts) == (12, 5)


def test_flow_control_personal_window_and_global_window_minus_the_others():
    o = sr.RingOrderer("b", 1, ["a", "b"], settings=sr.RingSettings(
        personal_window_packets=10, global_window_packets=25))
    ring = ring_with(aru=0)
    ring.my_last_sent = 4
    assert o.link.flow_allowance(ring, sr.RingToken(ring.ring_id, ("a", 1), flow_control=4), 0) == 10
    assert o.link.flow_allowance(ring, sr.RingToken(ring.ring_id, ("a", 1), flow_control=24), 0) == 5
    assert o.link.flow_allowance(ring, sr.RingToken(ring.ring_id, ("a", 1), flow_control=40), 0) == 0
    assert o.link.flow_allowance(ring, sr.RingToken(ring.ring_id, ("a", 1), flow_control=4), 3) == 7


def test_flow_control_no_daemon_exceeds_its_personal_window_per_visit():
    sim = calm_sim(personal_window_packets=3)
    sent = []
    orig = sr.RingLink.send_new_packets

    def spy(self, ring, tok, allowed):
        n = orig(self, ring, tok, allowed)
        sent.append(n)
        return n

    sr.RingLink.send_new_packets = spy
    try:
        for i in range(60):
            sim.submit("d1", sr.AGREED_MESS, size=900)
        sim.run_until(sim.now + 3.0)
    finally:
        sr.RingLink.send_new_packets = orig
    assert max(sent) == 3 and len(delivered(sim, "d2")) == 60
    assert_guarantees(sim)


def test_small_messages_are_packed_several_to_a_packet():
    sim = calm_sim()
    before = sim.nodes["d1"][0].counters["packets_sent"]
    for _ in range(30):
        sim.submit("d1", sr.AGREED_MESS, size=20)
    sim.run_until(sim.now + 1.0)
    packets = sim.nodes["d1"][0].counters["packets_sent"] - before
    # each message travels in the clients' format (48-byte header, 32 bytes per group) behind
    # a 32-byte chunk header: 30 of them fill 3 packets of 1400 bytes (one more if the token
    # comes by before the rest are queued), never one packet each
    assert len(delivered(sim, "d3")) == 30 and packets <= 4
    assert_guarantees(sim)


def test_large_messages_are_fragmented_into_packets_of_at_most_max_packet_bytes():
    sim = calm_sim(max_packet_bytes=500)
    sizes = []
    orig_send = sim.send

    def spy(src, dest, raw):
        if raw[5] == sr.PT_DATA:
            sizes.append(len(raw))
        orig_send(src, dest, raw)

    sim.send = spy
    serial = sim.submit("d2", sr.SAFE_MESS, size=20000)
    sim.run_until(sim.now + 2.0)
    assert serial in delivered(sim, "d1") and max(sizes) <= 500 and len(sizes) >= 2 * 40
    assert_guarantees(sim)


def test_default_packet_fits_an_ethernet_mtu():
    assert sr.RingSettings().max_packet_bytes + 20 + 8 <= 1500  # + IPv4 and UDP headers


def test_retransmission_requests_on_the_token_repair_a_lost_packet():
    sim = calm_sim()
    dropped = []

    def drop_first_data_to_d3(src, dest, raw):
        if dest == "d3" and raw[5] == sr.PT_DATA and not dropped:
            dropped.append(raw)
            return True
        return False

    sim.drop_rule = drop_first_data_to_d3
    serial = sim.submit("d1", sr.AGREED_MESS)
    sim.run_until(sim.now + 1.0)
    assert dropped and serial in delivered(sim, "d3")
    assert sim.nodes["d3"][0].counters["retransmissions_requested"] >= 1
    assert_guarantees(sim)


# ------------------------------------------------------------------ a far link_seq and recovery

def test_closing_a_configuration_hands_up_a_run_of_missing_packets_as_one_gap():
    """Was: one gap marker per missing link_seq, so a packet with a far link_seq (or a commit
    entry with a far old_high) made the closing loop run for ever. A run of missing packets is
    one gap to drain (after the first, the same rule applies to all), so one marker is enough."""
    t = sr.Transport("d1", sr.RingSettings(), collections.Counter(), lambda m: None)
    link = sr.RingLink(("d1", 1), sr.RingSettings(), collections.Counter(), lambda r, d: None, t)
    ring = sr._Ring((1, "d1", 1), [("d1", 1), ("d2", 1)], 0, t.open_stream(sr.LOCAL_SITE, 0))
    for seq in (1, 2, 5, 10 ** 12):
        ring.store(sr.RingData(ring.ring_id, ("d2", 1), seq, []))
    link.feed(ring, upto=10 ** 15, allow_gaps=True)
    gaps = [m.link_seq for m in ring.stream.ordered if m.gap]
    assert gaps == [3, 6, 10 ** 12 + 1] and ring.fed_upto == 10 ** 15


def test_a_packet_with_a_far_link_seq_does_not_stop_the_next_configuration():
    """Was: RECOVERY planned its resends with range(first, high + 1): a packet of the current
    ring with link_seq 2**52 (from a confused or hostile daemon) hung every daemon at the next
    ring change."""
    sim = calm_sim()
    early = [sim.submit("d1", sr.AGREED_MESS) for _ in range(5)]
    sim.run_until(sim.now + 0.5)
    d2 = sim.nodes["d2"][0]
    far = sr.RingData(d2.ring.ring_id, sim.nodes["d3"][0].me, 2 ** 52, [])
    d2.receive(sr.encode_ring_data(far), "d3", sim.now)
    sim.crash("d3")
    assert sim.run_until(sim.now + 5.0, stop=lambda: all_in_one_ring(sim)), "no new ring"
    late = sim.submit("d2", sr.SAFE_MESS)
    sim.run_until(sim.now + 1.0)
    for name in ("d1", "d2"):
        assert set(early) | {late} <= set(delivered(sim, name))
    assert_guarantees(sim)


# ------------------------------------------------------------------ flow control

def test_reliable_messages_are_not_starved_by_unreliable_at_a_window_of_one_packet():
    """Was: UNRELIABLE took max(1, allowed // 4) first: with one packet per visit (a personal
    window of 1, or a visit that answered retransmissions) a steady UNRELIABLE stream took every
    packet and AGREED never left the queue."""
    sim = calm_sim(personal_window_packets=1)
    d1 = sim.nodes["d1"][0]
    agreed = [sim.submit("d1", sr.AGREED_MESS) for _ in range(5)]
    unreliable = []
    for _ in range(300):  # keep d1's UNRELIABLE queue from ever running dry (one per packet)
        while len(d1.transport.unreliable) < 5:
            unreliable.append(sim.submit("d1", sr.UNRELIABLE_MESS, size=1200))
        sim.run_until(sim.now + 0.004)
    for name in PEERS:
        assert set(agreed) <= set(delivered(sim, name)), name
    got = {s for s, _ in sim.nodes["d2"][1].unreliable}
    assert len(got & set(unreliable)) >= 10  # and UNRELIABLE still flows
    assert_guarantees(sim)


# ------------------------------------------------------------------------ link (7.3.2.2)


def make_transport(name="t"):
    delivered = []
    t = sr.Transport(name, sr.RingSettings(), collections.Counter(), delivered.append)
    return t, delivered


class FakeUpper:
    """What the link sees of the transport: a queue of bodies to pack, and the hand-up."""

    def __init__(self, sizes=()):
        self.t, _ = make_transport()
        for i, size in enumerate(sizes):
            self.t.submit(sr.DaemonMessage(sr.DATA, "a", "#c#a", sr.AGREED_MESS, ["g"],
                                           data=bytes([i % 256]) * size))
        self.handed = []

    def next_piece_bytes(self, piece_bytes):
        return self.t.next_piece_bytes(piece_bytes)

    def take_piece(self, stamp, piece_bytes):
        return self.t.take_piece(stamp, piece_bytes)

    def link_chunk(self, stream, sender, chunk):
        self.handed.append(("chunk", sender, chunk.origin_counter, chunk.frag_index))

    def link_gap(self, stream, link_seq):
        self.handed.append(("gap", link_seq))


def make_link(upper, **cfg):
    sent = []
    me = ("a", 1)
    link = sr.RingLink(me, sr.RingSettings(**cfg), collections.Counter(),
                       lambda raw, dest: dest != me and sent.append((raw, dest)), upper)
    ring = sr._Ring((1, "a", 1), [("a", 1), ("b", 1), ("c", 1)], 0)
    return link, ring, sent


def test_link_rtr_asks_for_every_missing_packet_up_to_the_tokens_link_seq_within_the_limit():
    link, ring, _ = make_link(FakeUpper(), max_rtr_entries=4)
    for seq in (1, 2, 5, 9):
        ring.store(sr.RingData(ring.ring_id, ("b", 1), seq))
    tok = sr.RingToken(ring.ring_id, ("c", 1), link_seq=10, rtr=[3])
    link.request_missing(ring, tok)
    assert ring.my_aru == 2 and tok.rtr == [3, 4, 6], "within max_rtr_entries, no duplicates"


def test_link_answers_the_retransmission_requests_it_can_and_leaves_the_rest():
    link, ring, sent = make_link(FakeUpper())
    ring.store(sr.RingData(ring.ring_id, ("b", 1), 1))
    ring.store(sr.RingData(ring.ring_id, ("b", 1), 3))
    tok = sr.RingToken(ring.ring_id, ("c", 1), link_seq=3, rtr=[1, 2, 3])
    assert link.answer_retransmissions(ring, tok) == 2
    assert tok.rtr == [2]
    assert sorted(d[0] for _, d in sent) == ["b", "b", "c", "c"], "to every other member"


def test_link_packs_small_messages_and_never_splits_one_across_packets():
    upper = FakeUpper(sizes=[300] * 10)
    link, ring, sent = make_link(upper, max_packet_bytes=1400)
    tok = sr.RingToken(ring.ring_id, ("c", 1))
    assert link.send_new_packets(ring, tok, allowed=10) >= 3
    packets = [sr.decode_ring_packet(raw) for raw, dest in sent if dest == ("b", 1)]
    assert all(len(raw) <= 1400 - sr.RECOVERY_WRAP_BYTES for raw, _ in sent)
    assert all(c.frag_count == 1 for p in packets for c in p.chunks), "small: never fragmented"
    assert max(len(p.chunks) for p in packets) >= 2, "several to a packet"
    assert [p.link_seq for p in packets] == list(range(1, len(packets) + 1))
    assert tok.site_seq == 10 and not upper.t.has_outgoing()


def test_link_fragments_a_big_message_into_packets_of_at_most_max_packet_bytes():
    upper = FakeUpper(sizes=[5000])
    link, ring, sent = make_link(upper, max_packet_bytes=600)
    tok = sr.RingToken(ring.ring_id, ("c", 1))
    link.send_new_packets(ring, tok, allowed=100)
    raws = [raw for raw, dest in sent if dest == ("b", 1)]
    frags = [c for raw in raws for c in sr.decode_ring_packet(raw).chunks]
    assert len(raws) >= 9 and all(len(raw) <= 600 for raw in raws)
    assert [c.frag_index for c in frags] == list(range(frags[0].frag_count))
    assert len({(c.lts, c.site_seq) for c in frags}) == 1, "one message: one lts, one site_seq"


def test_link_respects_the_flow_control_allowance():
    upper = FakeUpper(sizes=[1000] * 20)
    link, ring, sent = make_link(upper)
    tok = sr.RingToken(ring.ring_id, ("c", 1))
    assert link.send_new_packets(ring, tok, allowed=4) == 4 and tok.link_seq == 4
    link.account_flow(ring, tok, 4)
    assert tok.flow_control == 4 and ring.my_last_sent == 4


def test_link_hands_chunks_up_in_link_seq_order_and_stops_at_a_hole():
    upper = FakeUpper()
    link, ring, _ = make_link(upper)
    chunk = lambda n: sr.RingChunk(n, n, n, 0, 1, sr.AGREED_MESS, b"")  # noqa: E731
    for seq in (2, 1, 4):
        ring.store(sr.RingData(ring.ring_id, ("b", 1), seq, [chunk(seq)]))
    link.feed(ring, upto=ring.my_aru)
    assert upper.handed == [("chunk", ("b", 1), 1, 0), ("chunk", ("b", 1), 2, 0)]
    assert ring.fed_upto == 2
    link.feed(ring, upto=4, allow_gaps=True)  # closing a configuration: the hole is a gap
    assert upper.handed[2:] == [("gap", 3), ("chunk", ("b", 1), 4, 0)]


def test_link_aru_rule_carries_the_transports_site_aru_with_link_aru():
    link, ring, _ = make_link(FakeUpper())
    ring.my_aru = 15
    tok = sr.RingToken(ring.ring_id, ("c", 1), link_seq=20, link_aru=20, site_aru=9)
    link.update_aru(ring, tok, my_site_aru=4)
    assert (tok.link_aru, tok.site_aru, tok.site_aru_modifier) == (15, 4, ("a", 1))


def test_link_garbage_collects_only_what_is_stable_and_handed_up():
    link, ring, _ = make_link(FakeUpper())
    for seq in range(1, 6):
        ring.store(sr.RingData(ring.ring_id, ("b", 1), seq))
    ring.fed_upto, ring.safe_link = 4, 3
    link.garbage_collect(ring)
    assert sorted(ring.packets) == [4, 5] and ring.gc_upto == 3
    assert not ring.store(sr.RingData(ring.ring_id, ("b", 1), 2)), "a collected packet is old"


# ---- Routing: the seam for HOP links beside the ring (thesis 7.3.1) ---------------------------

class RecordingLink(sr.Link):
    """A second link beside the ring, as a HopLink will be: it records what Routing gives it."""

    def __init__(self):
        self.forwarded = []

    def feed(self, state, upto, allow_gaps=False):
        pass

    def garbage_collect(self, state):
        pass

    def retransmit_if_due(self, now):
        pass

    def evidence(self, link_seq):
        pass

    def forward(self, packet):
        self.forwarded.append((packet.ring_id, packet.link_seq))


def test_with_one_ring_routing_sends_a_ring_packet_nowhere_else():
    o = sr.RingOrderer("d1", 1, ["d1", "d2"], random.Random(1))
    assert o.routing.links() == [o.link]
    assert o.routing.onward(o.link) == ()
    assert o.routing.link_to(sr.LOCAL_SITE) is o.link and o.routing.link_to(7) is None


def test_a_link_added_beside_the_ring_gets_every_ring_packet_once_in_link_order():
    """The seam a HopLink will use: every packet the ring hands up goes on to the links that
    lead to other sites, and never back to the ring."""
    hops = {}

    def add_hop(name, orderer):
        hops[name] = RecordingLink()
        orderer.routing.add_link(hops[name], sites=(1,))

    sim = calm_sim(on_start=add_hop)
    for i in range(30):
        sim.submit("d%d" % (1 + i % 3), sr.AGREED_MESS, size=40 + 50 * i)
    sim.run_until(sim.now + 2.0)
    assert_guarantees(sim)
    for name, hop in hops.items():
        orderer = sim.nodes[name][0]
        seqs = [seq for ring_id, seq in hop.forwarded if ring_id == orderer.ring.ring_id]
        assert seqs and seqs == list(range(seqs[0], seqs[0] + len(seqs))), name
        assert orderer.routing.onward(hops[name]) == (orderer.link,)


@given(st.lists(st.integers(min_value=0, max_value=3000), max_size=40),
       st.sampled_from([300, 600, 1400, 8900]), st.booleans())
@settings(max_examples=150, deadline=None)
def test_take_whole_packs_the_same_chunks_as_piece_by_piece(sizes, packet_bytes, urgent_first):
    """The packing's hot path (Transport.take_whole) must give the chunks, counters and token
    stamps that next_piece_bytes / take_piece give, for any mix of small and fragmented ones."""
    def packets(fast):
        t, _ = make_transport()
        for i, size in enumerate(sizes):
            t.submit(sr.DaemonMessage(sr.DATA, "a", "#c#a", sr.AGREED_MESS, ["g"],
                                      data=bytes([i % 256]) * size), urgent=urgent_first and i < 2)
        link, ring, _ = make_link(FakeUpper(), max_packet_bytes=packet_bytes)
        stamp = sr.RingToken(ring.ring_id, ("a", 1), site_lts=5, site_seq=2)
        t.max_lts_seen = 7
        limit = link.payload_limit(ring)
        out = []
        while True:
            chunks = link.fill_packet(stamp, limit, t.next_piece_bytes, t.take_piece,
                                      t.take_whole if fast else None)
            if not chunks:
                break
            assert sum(sr.CHUNK_HEADER_BYTES + len(c.body) for c in chunks) <= limit or len(chunks) == 1
            out.append([(c.origin_counter, c.lts, c.site_seq, c.frag_index, c.frag_count,
                         c.service, c.body) for c in chunks])
        return out, (stamp.site_lts, stamp.site_seq), t.pending_bytes, t.front, dict(t.counters)

    fast, slow = packets(True), packets(False)
    assert fast == slow
    assert sum(len(p) for p in fast[0]) >= len(sizes)


def test_an_idle_ring_holds_the_token_but_not_while_a_safe_message_waits_for_stability():
    """The representative keeps an idle token token_hold_s (an idle ring costs little), but a
    ring whose last messages are not yet stable at every member is not idle: a SAFE message
    needs the aru of two visits at each daemon, and one whose sender gets it a hold after the
    others would make that client (and a flooder's window) wait."""
    sim = calm_sim()
    d1 = sim.nodes["d1"][0]
    hold_s = d1.cfg.token_hold_s
    assert d1.ring.members[0] == d1.me  # d1 is the representative: it holds an idle token
    sim.run_until(sim.now + 1.0)
    rotations = d1.rotations
    sim.run_until(sim.now + 1.0)
    idle_rotations = d1.rotations - rotations
    assert idle_rotations <= 1.0 / hold_s + 1  # at most one rotation per hold
    for sender in ("d1", "d2", "d3"):
        before = {name: len(delivered(sim, name)) for name in PEERS}
        sim.submit(sender, sr.SAFE_MESS)
        times = {}

        def everywhere():
            for name in PEERS:
                if name not in times and len(delivered(sim, name)) > before[name]:
                    times[name] = sim.now
            return len(times) == len(PEERS)

        assert sim.run_until(sim.now + 1.0, stop=everywhere)
        spread_s = max(times.values()) - min(times.values())
        assert spread_s < hold_s / 2, "SAFE from %s: delivered %.3f s apart" % (sender, spread_s)
        sim.run_until(sim.now + 0.5)
        rotations = d1.rotations
        sim.run_until(sim.now + 1.0)
        assert d1.rotations - rotations <= idle_rotations + 1  # idle again, held again
    assert_guarantees(sim)


@pytest.mark.parametrize("accelerated", [False, True])
def test_the_sender_of_a_safe_message_delivers_it_at_its_next_visit(accelerated):
    """A visit that sends SAFE messages sends them all before the token (none after it, on
    the Accelerated Ring too) and hands them up before the aru rule, so the site_aru it puts
    on the token covers them: with nothing lost, they are stable at the sender's next visit,
    as at the other daemons (a sender waiting for its own SAFE messages, as a flooder with a
    window does, waits one rotation, not two or three)."""
    sim = calm_sim(accelerated_ring=accelerated)
    for sender in PEERS:
        sim.run_until(sim.now + 0.5)
        before = {name: len(delivered(sim, name)) for name in PEERS}
        visits_before = sim.nodes[sender][0].rotations
        sim.submit(sender, sr.SAFE_MESS)
        visits_at = {}

        def everywhere():
            for name in PEERS:
                if name not in visits_at and len(delivered(sim, name)) > before[name]:
                    visits_at[name] = sim.nodes[name][0].rotations
            return len(visits_at) == len(PEERS)

        assert sim.run_until(sim.now + 1.0, stop=everywhere)
        # the first visit sends it, the second finds it stable
        assert visits_at[sender] - visits_before == 2, (sender, visits_before, visits_at)
    assert_guarantees(sim)
