"""The TRANSPORT level of the ring daemon (spread_mini.Transport, thesis 7.3.3 "Entrega de
Mensagens, Ordenação e Estabilidade", lines 2729-2763 of seeds/003_5c6401fa5e45e77c.txt):
ordering, stability and delivery. Tier 1: driven with two or three synthetic site streams, as a
HOP link from another site would hand them up: every message carries its site id, site_seq
and Lamport time stamp; AGREED order is {lts, site id}; a message waits until every site's
stream has passed it (a message or a pseudo "update" message from each site); SAFE waits for
the minimum over sites of their All-Received-Upto. Tier 2 (the simulator): one total order
for every reliable service type, SAFE, the send queue (urgent messages, its limit), fragments,
messages cut by a ring change, and UNRELIABLE (7.3.3)."""
from __future__ import annotations

import collections
import random

from hypothesis import given, settings, strategies as st

import spread_mini as sr
from ring_sim import all_in_one_ring, assert_guarantees, calm_sim, delivered


def test_pending_bytes_counts_what_waits_for_the_token_and_drains_to_zero():
    # The daemon pauses its clients on this figure as well as on the message count, so that
    # big messages cannot pile up half a gigabyte behind the token.
    sim = calm_sim()
    d1 = sim.nodes["d1"][0]
    assert d1.transport.pending_bytes == 0
    for _ in range(5):
        sim.submit("d1", sr.AGREED_MESS, size=30000)
    assert d1.transport.pending_bytes == sum(len(body) for _, body in d1.transport.pending) >= 5 * 30000
    sim.run_until(sim.now + 2.0)
    assert len(delivered(sim, "d3")) == 5
    assert d1.transport.pending_bytes == 0 and not d1.transport.pending
    assert_guarantees(sim)


# ------------------------------------------------------------------------ delivery (7.3.3)

def test_every_reliable_service_type_is_delivered_in_one_total_order_at_every_daemon():
    sim = calm_sim(n=4)
    rng = random.Random(3)
    services = [sr.UNRELIABLE_MESS, sr.RELIABLE_MESS, sr.FIFO_MESS, sr.CAUSAL_MESS,
                sr.AGREED_MESS, sr.SAFE_MESS]
    for i in range(120):
        sim.submit(rng.choice(sorted(sim.nodes)), rng.choice(services), size=rng.randrange(8, 3000))
        sim.run_until(sim.now + rng.random() * 0.005)
    sim.run_until(sim.now + 2.0)
    orders = [delivered(sim, n) for n in sorted(sim.nodes)]
    unreliable = [sorted(s for s, _ in sim.nodes[n][1].unreliable) for n in sorted(sim.nodes)]
    # UNRELIABLE is outside the total order (7.3.3); on a calm network none is lost
    assert len(orders[0]) + len(unreliable[0]) == 120 and len(unreliable[0]) > 5
    assert all(o == orders[0] for o in orders) and all(u == unreliable[0] for u in unreliable)
    assert_guarantees(sim)


def test_safe_message_waits_until_every_member_has_it_agreed_does_not():
    sim = calm_sim()
    held = []

    def hold_data_to_d3(src, dest, raw):
        # d3 misses the first copies; it gets the packet again by retransmission
        if dest == "d3" and raw[5] == sr.PT_DATA and len(held) < 2:
            held.append(raw)
            return True
        return False

    sim.drop_rule = hold_data_to_d3
    agreed = sim.submit("d1", sr.AGREED_MESS)
    safe = sim.submit("d1", sr.SAFE_MESS)
    sim.run_until(sim.now + 0.5, stop=lambda: agreed in delivered(sim, "d2"))
    d3_has = sim.nodes["d3"][1].completed
    assert agreed in delivered(sim, "d2") and safe not in delivered(sim, "d2")
    assert not d3_has, "d3 should not have the messages yet in this scenario"
    sim.run_until(sim.now + 1.0)
    assert safe in delivered(sim, "d2") and safe in delivered(sim, "d3")
    assert_guarantees(sim)  # the safe checker: complete at every member before delivery


def test_submit_refuses_beyond_the_queue_limit():
    o = sr.RingOrderer("d1", 1, ["d1", "d2"], settings=sr.RingSettings(max_pending_messages=3))
    results = [o.submit(sr.DaemonMessage(sr.DATA, "d1", "#a#d1", sr.AGREED_MESS, ["g"], data=b"x")) for _ in range(5)]
    assert results == [True, True, True, False, False]
    assert o.counters["submit_refused_queue_full"] == 2
    # a disconnect is never refused: every daemon must learn of it, or the groups would disagree
    assert o.submit(sr.Kill(sr.KILL, "d1", "#a#d1", reason="test")) is True


# ------------------------------------------------------------------------ urgent messages

def _named(o, text, kind=sr.DATA):
    return sr.DaemonMessage(kind, o.me[0], "#c#%s" % o.me[0], sr.AGREED_MESS, ["g"],
                            data=text.encode())


def _queue(o):
    return [m.data.decode() for m, _ in o.transport.pending]


def test_an_urgent_message_goes_to_the_front_behind_only_the_message_being_fragmented():
    o = sr.RingOrderer("d1", 1, ["d1", "d2"])
    o.submit(_named(o, "big" * 2000))
    o.submit(_named(o, "a"))
    o.submit(_named(o, "b"))
    o.transport.take_piece(sr.RingToken(o.ring.ring_id, o.me), 500)  # "big..." is being sent
    assert o.transport.in_progress is not None and _queue(o) == ["a", "b"]
    assert o.submit(_named(o, "u1"), urgent=True)
    assert o.submit(_named(o, "u2"), urgent=True)
    o.submit(_named(o, "c"))
    assert _queue(o) == ["u1", "u2", "a", "b", "c"], "urgent ones first, FIFO among themselves"
    assert o.transport.pending_bytes == sum(len(body) for _, body in o.transport.pending)
    o._requeue_partial_message()  # a ring change: the cut message goes again, whole and first
    o.submit(_named(o, "u3"), urgent=True)
    assert _queue(o)[0].startswith("big") and _queue(o)[1:] == ["u1", "u2", "u3", "a", "b", "c"]


def test_an_urgent_message_is_delivered_before_messages_queued_earlier():
    sim = calm_sim(personal_window_packets=2)
    serials = [sim.submit("d1", sr.AGREED_MESS, size=900) for _ in range(40)]
    d1, proc = sim.nodes["d1"]
    urgent = len(sim.submitted) + 1
    data = urgent.to_bytes(8, "big") + b"state"
    assert d1.submit(sr.DaemonMessage(sr.DATA, "d1", "#c#d1", sr.AGREED_MESS, ["g"], data=data),
                     urgent=True)
    sim.submitted[urgent] = (sr.AGREED_MESS, data, (proc.pid, len(proc.delivered)), proc.pid)
    sim.run_until(sim.now + 3.0)
    for name in ("d1", "d2", "d3"):
        order = delivered(sim, name)
        assert sorted(order) == sorted(serials + [urgent])
        assert order.index(urgent) < 10, "it overtook the queue (order %s)" % order[:12]
    # the checker sees the overtaking as a FIFO break of d1 (by design); nothing else is wrong
    violations = sim.check().violations
    assert violations and all(v.split(" ", 1)[1].startswith("FIFO: d") for v in violations), \
        violations[:5]


# ------------------------------------------------------------------------ UNRELIABLE (7.3.3)

def late_unreliable_piece(sim):
    """d1 sends an UNRELIABLE message; its piece for d2 is held back (the others get it); d3
    crashes and d1, d2 form a new ring; then the held piece reaches d2."""
    held = []

    def hold_for_d2(src, dest, raw):
        if raw[5] == sr.PT_UNRELIABLE and dest == "d2" and not held:
            held.append((src, raw))
            return True
        return False

    sim.drop_rule = hold_for_d2
    serial = sim.submit("d1", sr.UNRELIABLE_MESS)
    sim.run_until(sim.now + 0.3)
    assert held and serial in {s for s, _ in sim.nodes["d1"][1].unreliable}
    sim.drop_rule = None
    sim.crash("d3")
    assert sim.run_until(sim.now + 5.0, stop=lambda: all_in_one_ring(sim))
    d2 = sim.nodes["d2"][0]
    d2.receive(held[0][1], held[0][0], sim.now)
    sim.drain("d2")
    return serial, d2


def test_unreliable_is_never_delivered_in_another_configuration_than_it_was_sent_in():
    sim = calm_sim()
    serial, d2 = late_unreliable_piece(sim)
    assert serial not in {s for s, _ in sim.nodes["d2"][1].unreliable}
    assert d2.counters["unreliable_dropped_other_configuration"] == 1
    assert_guarantees(sim)


def test_checker_catches_unreliable_delivered_in_another_configuration(monkeypatch):
    def sloppy(self, p):  # no check of the state or of the ring id
        for c in p.chunks:
            self.transport.unreliable_chunk(self.ring.stream, p.sender, c, self.now)

    for state in (sr.GATHER, sr.COMMIT, sr.RECOVERY, sr.OPERATIONAL):  # taken in every state
        monkeypatch.setitem(sr.RingOrderer.DISPATCH, (state, sr.PT_UNRELIABLE), sloppy)
    sim = calm_sim()
    late_unreliable_piece(sim)
    assert any("unreliable: message" in v for v in sim.check().violations)


def test_unreliable_lost_piece_is_never_resent_and_reliable_traffic_goes_on():
    sim = calm_sim()

    def lose_unreliable_to_d3(src, dest, raw):
        return raw[5] == sr.PT_UNRELIABLE and dest == "d3"

    sim.drop_rule = lose_unreliable_to_d3
    lost = sim.submit("d1", sr.UNRELIABLE_MESS)
    agreed = sim.submit("d1", sr.AGREED_MESS)
    sim.run_until(sim.now + 1.0)
    assert agreed in delivered(sim, "d3")
    assert lost not in {s for s, _ in sim.nodes["d3"][1].unreliable}
    assert lost in {s for s, _ in sim.nodes["d2"][1].unreliable}
    assert sim.nodes["d1"][0].counters["retransmissions_sent"] == 0
    assert_guarantees(sim)


# ------------------------------------------------------------------ fragments that disagree

def _chunk(counter, index, count, body=b"x"):
    return sr.RingChunk(counter, 7, 1, index, count, sr.AGREED_MESS, body)


def test_a_fragment_that_disagrees_with_its_message_on_the_count_is_ignored():
    """Was: fragment 0 of 2, then fragment 3 of 5 of the same message: two fragments, so
    "complete", and joining fragments 0 and 1 raised KeyError in the delivery."""
    delivered_msgs = []
    t = sr.Transport("d1", sr.RingSettings(), collections.Counter(), delivered_msgs.append)
    s = t.open_stream(sr.LOCAL_SITE, 0)
    t.install(s)
    t.link_chunk(s, ("d2", 1), _chunk(1, 0, 2))
    t.link_chunk(s, ("d2", 1), _chunk(1, 3, 5))
    t.advance_frontier(s, 9)
    t.deliver_ready()
    assert delivered_msgs == [] and not s.ordered[0].complete
    assert t.counters["inconsistent_fragments"] == 1
    t.unreliable_chunk(s, ("d2", 1), sr.RingChunk(1, 7, 0, 0, 2, sr.UNRELIABLE_MESS, b"a"), 0.0)
    t.unreliable_chunk(s, ("d2", 1), sr.RingChunk(1, 7, 0, 3, 5, sr.UNRELIABLE_MESS, b"b"), 0.0)
    assert delivered_msgs == [] and t.counters["inconsistent_fragments"] == 2


# ------------------------------------------------------------------ a message cut by a ring change

def test_a_message_cut_by_a_ring_change_is_not_a_gap_for_the_messages_after_it():
    """d1 sends a 6000-byte message one packet per visit; d3's small message goes between its
    fragments; d3 crashes. d1's message is cut (it goes again whole in the next ring), and was
    taken for a gap: d3's message, which d1 and d2 both hold, was discarded after it. Its sender
    d1 moves with them and holds every packet it sent: the rest was never sent."""
    sim = calm_sim(personal_window_packets=1)
    big = sim.submit("d1", sr.AGREED_MESS, size=6000)
    d1, d2 = sim.nodes["d1"][0], sim.nodes["d2"][0]
    while d1.transport.in_progress is None:
        sim.run_until(sim.now + 0.0002)
    small = sim.submit("d3", sr.AGREED_MESS, size=20)
    while not any(m.complete and m.origin[0] == "d3" for m in d2.ring.stream.ordered):
        sim.run_until(sim.now + 0.0002)
    assert d1.transport.in_progress is not None  # d1's message is still being fragmented
    sim.crash("d3")
    assert sim.run_until(sim.now + 5.0, stop=lambda: all_in_one_ring(sim))
    sim.run_until(sim.now + 1.0)
    for name in ("d1", "d2"):
        assert big in delivered(sim, name) and small in delivered(sim, name), name
        o = sim.nodes[name][0]
        assert o.counters["messages_cut_by_change"] == 1 and o.counters["discarded_after_gap"] == 0
    assert_guarantees(sim)


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


def _body(i, service):
    return sr.encode_message_body(sr.DaemonMessage(sr.DATA, "d2", "#c%d#d2" % (i % 3), service, ["g"],
                                                   data=bytes([i % 256]) * (i % 40)))


@given(st.lists(st.tuples(st.sampled_from([sr.AGREED_MESS, sr.FIFO_MESS, sr.SAFE_MESS]),
                          st.integers(1, 3), st.booleans()), min_size=1, max_size=40),
       st.integers(0, 2 ** 32 - 1))
@settings(max_examples=150, deadline=None)
def test_delivering_as_handed_up_is_the_same_as_handing_up_then_delivering(messages, seed):
    """Transport.link_chunk_at_once (the ring's hot path) delivers a whole message at once when
    deliver_ready would deliver it next. Two transports get the same packets (whole messages
    and fragments, AGREED, FIFO and SAFE, the site's stability moving now and then): one hands
    the chunks up with link_chunk, the other with link_chunk_at_once, and both call
    deliver_ready after each packet, as the ring does. The same messages, in the same order,
    with the same sequence fields; the same state after."""
    runs = []
    for at_once in (False, True):
        got = []
        t = sr.Transport("d1", sr.RingSettings(), collections.Counter(), got.append)
        t.trace_delivered, t.trace_completed = [], []
        s = t.open_stream(sr.LOCAL_SITE, 0)
        t.install(s)
        hand_up = t.link_chunk_at_once if at_once else t.link_chunk
        pick = random.Random(seed)
        for i, (service, frags, stable_now) in enumerate(messages, 1):
            body = _body(i, service)
            piece = -(-len(body) // frags)
            for index in range(frags):  # one packet per fragment, in order
                hand_up(s, ("d2", 1), sr.RingChunk(i, i, i, index, frags, service,
                                                    body[index * piece:(index + 1) * piece]))
                t.deliver_ready()
            if stable_now:
                t.site_stable(s, pick.randrange(i + 1))
                t.deliver_ready()
        t.site_stable(s, len(messages))
        t.deliver_ready()
        runs.append(([(m.sender, m.seq, m.lts, m.service_type, m.data) for m in got],
                     t.trace_delivered, t.trace_completed, s.delivered_lts, len(s.ordered),
                     t.site_aru(s)))
    assert runs[0] == runs[1]
    assert len(runs[0][0]) == len(messages), "everything is delivered in the end"
