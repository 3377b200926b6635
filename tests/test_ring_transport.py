from __future__ import annotations

"""Tier 1 tests of the two levels of the ring daemon, each alone (thesis 7.3.1 separates them).

TRANSPORT (spread_mini.Transport, thesis 7.3.3 "Entrega de Mensagens, Ordenação e
Estabilidade", lines 2729-2763 of seeds/003_5c6401fa5e45e77c.txt): driven with two or three
synthetic site streams, as a HOP link from another site would hand them up: every message
carries its site id, site_seq and Lamport time stamp; AGREED order is {lts, site id}; a message
waits until every site's stream has passed it (a message or a pseudo "update" message from each
site); SAFE waits for the minimum over sites of their All-Received-Upto.

LINK (spread_mini.RingLink, thesis 7.3.2.2 "Protocolo RING", lines 2676-2727): retransmission
requests, the packing of messages into packets of at most max_packet_bytes, the hand-up of
chunks in link_seq order.
"""

import collections

from hypothesis import given, settings, strategies as st

import spread_mini as sr

# ------------------------------------------------------------------------ synthetic sites


class Stamp:
    """What take_piece reads and advances: the token's site_lts and site_seq."""

    def __init__(self, site_lts=0, site_seq=0):
        self.site_lts = site_lts
        self.site_seq = site_seq


def make_transport(name="t"):
    delivered = []
    t = sr.Transport(name, sr.RingSettings(), collections.Counter(), delivered.append)
    return t, delivered


def body_of(origin, service, text):
    msg = sr.DaemonMessage(sr.DATA, origin[0], "#c#%s" % origin[0], service, ["g"],
                           data=text.encode())
    return sr.encode_message_body(msg)


def chunks_of(origin, counter, lts, site_seq, service, text, frag_bytes=None):
    """The chunks of one message as a site's link would hand them up."""
    body = body_of(origin, service, text)
    size = frag_bytes or len(body)
    pieces = [body[i:i + size] for i in range(0, len(body), size)] or [b""]
    return [sr.RingChunk(counter, lts, site_seq, i, len(pieces), service, piece)
            for i, piece in enumerate(pieces)]


class SiteFeed:
    """One site: its daemons' messages get increasing lts and site_seq, like its ring's token."""

    def __init__(self, transport, site_id, start_lts=0):
        self.t = transport
        self.stream = transport.open_stream(site_id, start_lts)
        transport.install(self.stream)
        self.site_id = site_id
        self.seq = 0
        self.counters = collections.Counter()

    def message(self, lts, service=sr.AGREED_MESS, daemon="a", text=None, frag_bytes=None):
        """Hand up a whole message (all its fragments) and deliver what is ready."""
        for c in self.pieces(lts, service, daemon, text, frag_bytes):
            self.t.link_chunk(self.stream, c[0], c[1])
        self.t.deliver_ready()

    def pieces(self, lts, service=sr.AGREED_MESS, daemon="a", text=None, frag_bytes=None):
        origin = ("s%d%s" % (self.site_id, daemon), 1)
        self.seq += 1
        self.counters[origin] += 1
        text = text or "%s@%d" % (origin[0], lts)
        return [(origin, c) for c in chunks_of(origin, self.counters[origin], lts, self.seq,
                                               service, text, frag_bytes)]

    def update(self, lts):
        """The site's pseudo "update" message: nothing more with lts <= this from here."""
        self.t.advance_frontier(self.stream, lts)
        self.t.deliver_ready()

    def stable(self, lts):
        self.t.site_stable(self.stream, lts)
        self.t.deliver_ready()


def texts(delivered):
    return [m.data.decode() for m in delivered]


def keys(delivered):
    return [(m.lts, m.site_id) for m in delivered]


# ------------------------------------------------------------------------ transport: AGREED order


def test_agreed_order_is_lts_then_site_id_whatever_the_arrival_order():
    t, out = make_transport()
    s0, s1, s2 = SiteFeed(t, 0), SiteFeed(t, 1), SiteFeed(t, 2)
    s2.message(3)
    s1.message(5)
    s0.message(5)  # same lts as s1's: site id 0 goes first
    s2.message(5)
    s1.message(9)
    s0.message(8)
    for s in (s0, s1, s2):
        s.update(100)
    assert keys(out) == [(3, 2), (5, 0), (5, 1), (5, 2), (8, 0), (9, 1)]
    assert all(m.site_id in (0, 1, 2) and m.seq >= 1 for m in out)


def test_a_message_waits_until_every_sites_frontier_has_passed_it():
    t, out = make_transport()
    s0, s1, s2 = SiteFeed(t, 0), SiteFeed(t, 1), SiteFeed(t, 2)
    s0.message(5)
    assert out == [], "sites 1 and 2 could still send something with a smaller {lts, site id}"
    s1.message(7)  # site 1's message shows it will send nothing below (7, 1)
    assert out == [], "site 2 has said nothing yet"
    s2.message(3)  # site 2 at 3: (3, 2) goes; (5, 0) still waits: site 2 could send (4, 2)
    assert keys(out) == [(3, 2)]
    s2.update(4)   # site 2's later messages are >= (5, 2) > (5, 0): (5, 0) goes
    assert keys(out) == [(3, 2), (5, 0)]
    s2.update(6)
    assert keys(out) == [(3, 2), (5, 0)], "(7, 1) waits for site 0 to pass it"
    s0.update(6)
    assert keys(out) == [(3, 2), (5, 0)], "site 0 could still send (7, 0)"
    s0.update(7)
    assert keys(out) == [(3, 2), (5, 0), (7, 1)], "site 2 at 6 can only send (7, 2) or later"


def test_a_tie_on_lts_waits_for_the_sites_with_smaller_ids():
    t, out = make_transport()
    s0, s1 = SiteFeed(t, 0), SiteFeed(t, 1)
    s1.message(6)
    s0.update(5)
    assert out == [], "site 0 could still send (6, 0), which goes before (6, 1)"
    s0.update(6)
    assert keys(out) == [(6, 1)]


def test_a_sites_pseudo_update_message_releases_what_waits():
    t, out = make_transport()
    s0, s1 = SiteFeed(t, 0), SiteFeed(t, 1)
    s0.message(10)
    s0.message(12)
    assert out == []
    s1.update(10)  # an idle site: no message, only "I will send nothing up to lts 10"
    assert keys(out) == [(10, 0)]
    s1.update(20)
    assert keys(out) == [(10, 0), (12, 0)]
    assert t.max_lts_seen >= 20, "a remote site's update moves our Lamport clock"


def test_an_incomplete_message_blocks_the_order_until_its_last_fragment():
    t, out = make_transport()
    s0, s1 = SiteFeed(t, 0), SiteFeed(t, 1)
    big = s0.pieces(3, text="x" * 300, frag_bytes=100)
    for origin, c in big[:-1]:
        t.link_chunk(s0.stream, origin, c)
    s1.message(4)
    s0.update(50)
    s1.update(50)
    assert out == [], "(3, 0) is first and is not complete"
    t.link_chunk(s0.stream, big[-1][0], big[-1][1])
    t.deliver_ready()
    assert keys(out) == [(3, 0), (4, 1)] and out[0].data == b"x" * 300


def test_one_site_alone_delivers_as_soon_as_complete():
    t, out = make_transport()
    s0 = SiteFeed(t, 0)
    s0.message(1)
    s0.message(2, service=sr.FIFO_MESS)
    assert keys(out) == [(1, 0), (2, 0)], "with one site nobody else can come before"


# ------------------------------------------------------------------------ transport: SAFE, FIFO


def test_safe_waits_for_the_minimum_over_sites_of_their_all_received_upto():
    t, out = make_transport()
    s0, s1, s2 = SiteFeed(t, 0), SiteFeed(t, 1), SiteFeed(t, 2)
    s0.message(5, service=sr.SAFE_MESS)
    s0.message(6, service=sr.AGREED_MESS)
    for s in (s0, s1, s2):
        s.update(10)
    assert out == [], "agreed order puts the SAFE message first, and it is not stable yet"
    s0.stable(9)
    s1.stable(9)
    assert out == [], "site 2 has not reported that all its daemons have lts 5"
    s2.stable(4)
    assert out == []
    s2.stable(5)
    assert keys(out) == [(5, 0), (6, 0)]
    assert out[0].service_type & sr.SAFE_MESS


def test_fifo_per_sender_holds_across_sites():
    t, out = make_transport()
    s0, s1 = SiteFeed(t, 0), SiteFeed(t, 1)
    lts = 0
    for i in range(20):
        lts += 1 + i % 3
        (s0 if i % 2 else s1).message(lts, daemon="ab"[i % 4 // 2],
                                      service=[sr.FIFO_MESS, sr.AGREED_MESS, sr.CAUSAL_MESS][i % 3])
    s0.update(1000)
    s1.update(1000)
    assert len(out) == 20
    by_sender = collections.defaultdict(list)
    for m in out:
        by_sender[m.sender].append(m.seq)
    for sender, seqs in by_sender.items():
        assert seqs == sorted(seqs), "sender %s out of FIFO order" % sender


def test_the_transport_send_queue_assigns_site_seq_and_lamport_lts_in_order():
    t, out = make_transport()
    remote = SiteFeed(t, 1)
    remote.message(40)  # we have seen lts 40 from another site
    for text in ("a", "b"):
        t.submit(sr.DaemonMessage(sr.DATA, "t", "#c#t", sr.AGREED_MESS, ["g"], data=text.encode()))
    stamp = Stamp(site_lts=7, site_seq=3)
    c1 = t.take_piece(stamp, 1000)
    c2 = t.take_piece(stamp, 1000)
    assert (c1.lts, c1.site_seq, c2.lts, c2.site_seq) == (41, 4, 42, 5), \
        "Lamport: after everything seen here; site_seq: one more per message"
    assert (stamp.site_lts, stamp.site_seq) == (42, 5) and t.pending_bytes == 0


# ------------------------------------------------------------------------ transport: property


def _site_events(draw_ints, site_id, n_msgs):
    """Per site, in its own order: messages with strictly increasing lts, some fragmented,
    some pseudo updates between them, and a final update past everything."""
    events = []
    lts = 0
    for i in range(n_msgs):
        lts += draw_ints[i % len(draw_ints)]
        if i % 3 == 2:
            events.append(("update", lts))
            lts += 1
        events.append(("msg", lts, i % 2 == 1))
    events.append(("update", 10 ** 6))
    return events


@st.composite
def streams_and_interleavings(draw):
    n_sites = draw(st.integers(min_value=2, max_value=3))
    per_site = []
    for site in range(n_sites):
        steps = draw(st.lists(st.integers(min_value=0, max_value=4), min_size=1, max_size=6))
        steps = [s + (1 if k == 0 else 0) for k, s in enumerate(steps)]
        per_site.append(_site_events([max(1, s) for s in steps], site,
                                     draw(st.integers(min_value=0, max_value=8))))
    orders = []
    for _ in range(2):
        # an arrival interleaving: each site's events stay in its order
        remaining = [len(e) for e in per_site]
        order = []
        while any(remaining):
            choices = [s for s in range(n_sites) if remaining[s]]
            s = draw(st.sampled_from(choices))
            order.append(s)
            remaining[s] -= 1
        orders.append(order)
    return per_site, orders


def _play(per_site, order):
    """One daemon receiving the sites' streams in one interleaving (fragments split up)."""
    t, out = make_transport()
    feeds = [SiteFeed(t, s) for s in range(len(per_site))]
    # expand each site's events into arrival units: a fragmented message arrives in pieces
    units = []
    for s, events in enumerate(per_site):
        site_units = []
        for ev in events:
            if ev[0] == "update":
                site_units.append([("update", ev[1])])
            else:
                pieces = feeds[s].pieces(ev[1], frag_bytes=20 if ev[2] else None,
                                         service=sr.SAFE_MESS if ev[1] % 5 == 0 else sr.AGREED_MESS)
                site_units.append([("chunk", p) for p in pieces])
        units.append(site_units)
    cursor = [0] * len(per_site)
    for s in order:
        for kind, value in units[s][cursor[s]]:
            if kind == "update":
                feeds[s].t.advance_frontier(feeds[s].stream, value)
                feeds[s].t.site_stable(feeds[s].stream, value)
            else:
                t.link_chunk(feeds[s].stream, value[0], value[1])
            t.deliver_ready()
        cursor[s] += 1
    return keys(out), [m.data for m in out]


@settings(max_examples=150, deadline=None)
@given(streams_and_interleavings())
def test_every_interleaving_of_the_same_streams_delivers_the_same_sequence(case):
    per_site, orders = case
    first = _play(per_site, orders[0])
    second = _play(per_site, orders[1])
    assert first == second
    expected = sorted((ev[1], s) for s, events in enumerate(per_site)
                      for ev in events if ev[0] == "msg")
    assert first[0] == expected, "everything delivered, in {lts, site id} order"


@settings(max_examples=100, deadline=None)
@given(streams_and_interleavings())
def test_what_is_delivered_at_any_moment_is_a_prefix_of_the_final_order(case):
    per_site, orders = case
    expected = sorted((ev[1], s) for s, events in enumerate(per_site)
                      for ev in events if ev[0] == "msg")
    t, out = make_transport()
    feeds = [SiteFeed(t, s) for s in range(len(per_site))]
    cursor = [0] * len(per_site)
    for s in orders[0]:
        ev = per_site[s][cursor[s]]
        cursor[s] += 1
        if ev[0] == "update":
            feeds[s].update(ev[1])
        else:
            feeds[s].message(ev[1])
        assert keys(out) == expected[:len(out)]
    assert keys(out) == expected


# ------------------------------------------------------------------------ link (7.3.2.2)


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


# ------------------------------------------------------------------------ UNRELIABLE (7.3.3)

def unreliable_pieces(counter, text, frag_bytes=None, origin=("s0a", 1)):
    return chunks_of(origin, counter, 0, 0, sr.UNRELIABLE_MESS, text, frag_bytes)


def test_unreliable_is_delivered_as_soon_as_complete_outside_the_order():
    t, out = make_transport()
    s0, s1 = SiteFeed(t, 0), SiteFeed(t, 1)
    s0.message(5)  # an AGREED message waits for site 1
    for c in unreliable_pieces(1, "u" * 50, frag_bytes=20):
        assert out == []
        t.unreliable_chunk(s0.stream, ("s0a", 1), c, now=1.0)
    assert [m.data for m in out] == [b"u" * 50], "no wait for the order, nor for site 1"
    assert out[0].service_type == sr.UNRELIABLE_MESS and out[0].seq == 1


def test_unreliable_is_never_delivered_twice():
    t, out = make_transport()
    s0 = SiteFeed(t, 0)
    for _ in range(3):  # the network duplicates it
        for c in unreliable_pieces(7, "once"):
            t.unreliable_chunk(s0.stream, ("s0a", 1), c, now=1.0)
    assert len(out) == 1 and t.counters["unreliable_duplicates"] == 2


def test_unreliable_pieces_are_all_dropped_when_incomplete_after_the_timeout():
    t, out = make_transport()
    s0 = SiteFeed(t, 0)
    pieces = unreliable_pieces(3, "z" * 60, frag_bytes=20)
    t.unreliable_chunk(s0.stream, ("s0a", 1), pieces[0], now=1.0)
    t.unreliable_chunk(s0.stream, ("s0a", 1), pieces[1], now=1.5)
    t.expire_unreliable(1.0 + t.cfg.unreliable_timeout_s - 0.01)
    assert s0.stream.unrel_partial, "not yet"
    t.expire_unreliable(1.0 + t.cfg.unreliable_timeout_s)
    assert not s0.stream.unrel_partial and t.counters["unreliable_dropped_incomplete"] == 1
    for c in pieces:  # the rest, and even a full copy, comes too late
        t.unreliable_chunk(s0.stream, ("s0a", 1), c, now=2.5)
    assert out == []


def test_unreliable_has_its_own_sequence_and_takes_no_lts():
    t, out = make_transport()
    t.submit(sr.DaemonMessage(sr.DATA, "t", "#c#t", sr.AGREED_MESS, ["g"], data=b"r"))
    t.submit(sr.DaemonMessage(sr.DATA, "t", "#c#t", sr.UNRELIABLE_MESS, ["g"], data=b"u"))
    assert len(t.pending) == 1 and len(t.unreliable) == 1
    stamp = Stamp(site_lts=10, site_seq=4)
    u = t.take_unreliable_piece(stamp, 1000)
    r = t.take_piece(stamp, 1000)
    assert (u.origin_counter, u.site_seq, stamp.site_seq) == (1, 0, 5)
    assert (r.origin_counter, r.lts) == (1, 11), "the reliable sequence and the lts go on alone"
    assert t.pending_bytes == 0 and not t.has_outgoing()
