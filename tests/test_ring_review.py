from __future__ import annotations

"""Review of the ring's link/transport split, UNRELIABLE outside the link and the incarnation
notices (issue 5): each test first showed a suspected fault, then guards its fix.

Tier 1 (cores with a fake clock) and scenarios on tests/ring_sim.py. Adversarial datagrams here
are WELL-FORMED ring packets (right magic, version and CRC) with hostile values: what a
confused or malicious daemon at a configured address could send. Foreign traffic without our
magic is covered by tests/test_ring_core.py (test_wire_*, test_garbage_*).
"""

import collections
import copy
import random
import struct

import spread_mini as sr
from ring_sim import CALM, Sim, all_in_one_ring, assert_guarantees, calm_sim, delivered

PEERS = ["d1", "d2", "d3"]


# ------------------------------------------------------------------ counters beyond u64 arithmetic

def test_a_notice_naming_us_with_the_largest_incarnation_is_dropped_not_fatal():
    """Was: d2 took incarnation 2**64-1 + 1.., and encoding its next join raised struct.error
    out of receive(): one datagram stopped the daemon. Counters on the wire are now at most
    MAX_WIRE_COUNTER, far above any real one (an incarnation is a time in ms)."""
    sim = calm_sim()
    o = sim.nodes["d2"][0]
    forged = sr.encode_ring_merge(sr.RingMerge(sim.nodes["d1"][0].me, (0, "d2", 2 ** 64 - 1)))
    o.receive(forged, "d1", sim.now)
    assert o.me == ("d2", 1000) and o.state == sr.OPERATIONAL
    assert o.counters["dropped_garbage"] == 1


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


# ------------------------------------------------------------------ daemons outside the configuration

def test_a_daemon_outside_the_configuration_cannot_break_the_ring_nor_fill_our_tables():
    """Was: every join from a name not in spread.conf (another team's daemon at a configured
    address) made the ring gather again, and each new name stayed in known_incarnation for
    ever. We cannot even answer such a daemon (packets go to configured daemons only)."""
    sim = calm_sim()
    d1 = sim.nodes["d1"][0]
    ring_before = d1.ring.ring_id
    for i in range(50):
        stranger = ("x%d" % i, 5)
        d1.receive(sr.encode_ring_join(sr.RingJoin(stranger, 0, [stranger], [])), "d2", sim.now)
        d1.receive(sr.encode_ring_merge(sr.RingMerge(stranger, (9, "x%d" % i, 5))), "d2", sim.now)
    sim.run_until(sim.now + 1.0)
    assert all_in_one_ring(sim) and d1.ring.ring_id == ring_before
    assert set(d1.known_incarnation) <= set(PEERS)
    assert d1.counters["dropped_unknown_daemon"] == 100


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


# ------------------------------------------------------------------ two daemons with one name

def test_after_the_last_incarnation_change_another_process_with_our_name_is_ignored():
    """Was: once INCARNATION_BUMPS_MAX changes were spent (two daemons run as d2), the next join
    FROM the other d2 went on as a peer's: it superseded our own incarnation, left us out of our
    own proc set, and min() of an empty set raised ValueError out of receive()."""
    o = sr.RingOrderer("d2", 100, PEERS, random.Random(2), now=0.0)
    t = 0.0
    for _ in range(sr.INCARNATION_BUMPS_MAX):
        t += 0.1
        other = ("d2", o.me[1] + 5000)  # the other "d2" overtakes us again
        o.receive(sr.encode_ring_join(sr.RingJoin(other, 0, [other], [])), "d2", t)
    assert o.incarnation_bumps == sr.INCARNATION_BUMPS_MAX
    mine = o.me
    other = ("d2", o.me[1] + 5000)
    o.receive(sr.encode_ring_join(sr.RingJoin(other, 0, [other], [])), "d2", t + 0.1)
    o.tick(t + 2.0)
    assert o.me == mine and o.known_incarnation["d2"] == mine[1]
    assert o.counters["dropped_other_process_with_our_name"] == 1
    assert mine in o.proc_set


# ------------------------------------------------------------------ fuzzing with well-formed packets

HUGE = [0, 1, 2, 5, 100, 2 ** 32 - 1, sr.MAX_WIRE_COUNTER, 2 ** 63, 2 ** 64 - 1]


class HostilePackets:
    """Well-formed ring packets (they pass the magic, version and CRC) with hostile values: the
    current ring id or another, senders that are members, other incarnations of members or
    strangers, counters up to 2**64-1, fragment counts that disagree. One seed, one sequence."""

    def __init__(self, rng, orderer, names):
        self.rng = rng
        self.o = orderer
        self.names = names

    def number(self):
        r = self.rng
        return r.choice(HUGE) if r.random() < 0.5 else r.randrange(0, 300)

    def pid(self):
        r = self.rng.random()
        if r < 0.6:
            return self.rng.choice(self.o.ring.members)
        if r < 0.85:
            return (self.rng.choice(self.names), self.number())
        return ("x%d" % self.rng.randrange(5), self.number())

    def ring_id(self):
        if self.rng.random() < 0.6:
            return self.o.ring.ring_id
        p = self.pid()
        return (self.number(), p[0], p[1])

    def chunks(self):
        out = []
        for _ in range(self.rng.randrange(1, 4)):
            count = self.rng.choice([1, 2, 3, 65535])
            index = self.rng.randrange(min(count, 4))
            service = self.rng.choice([sr.UNRELIABLE_MESS, sr.AGREED_MESS, sr.SAFE_MESS,
                                       self.rng.getrandbits(32)])
            body = bytes(self.rng.getrandbits(8) for _ in range(self.rng.randrange(40)))
            out.append(sr.RingChunk(self.rng.randrange(1, 4), self.number(), self.number(),
                                    index, count, service, body))
        return out

    def packet(self):
        kind = self.rng.choice(["data", "token", "join", "commit", "merge", "unreliable", "leave"])
        if kind == "leave":  # from a member, another incarnation or a stranger; any ring
            return sr.RingLeave(self.pid(), self.ring_id(), self.rng.choice(["", "x", "bye"]))
        if kind == "data":
            seq = self.rng.choice([self.o.ring.high_seq + 1, self.o.ring.my_aru + 2, self.number()])
            return sr.RingData(self.ring_id(), self.pid(), seq, self.chunks())
        if kind == "token":
            link_seq = self.number()
            return sr.RingToken(self.ring_id(), self.pid(), self.number(), sr.TOKEN_REGULAR,
                                link_seq, self.rng.choice([0, link_seq]), self.number() & 0xFFFF,
                                [self.number() for _ in range(self.rng.randrange(3))],
                                self.number(), self.number(), self.number(),
                                self.rng.choice([None, self.pid()]), self.rng.randrange(2))
        if kind == "join":
            return sr.RingJoin(self.pid(), self.number(),
                               [self.pid() for _ in range(self.rng.randrange(1, 4))],
                               [self.pid() for _ in range(self.rng.randrange(3))])
        if kind == "commit":
            members = sorted({self.pid() for _ in range(self.rng.randrange(1, 4))})
            entries = {m: sr.RingCommitEntry(self.ring_id(), *[self.number() for _ in range(4)])
                       for m in members if self.rng.random() < 0.7}
            return sr.RingCommit(self.ring_id(), self.pid(), self.number(),
                                 self.rng.choice([1, 2]), members, entries)
        if kind == "merge":
            return sr.RingMerge(self.pid(), self.ring_id())
        return sr.RingUnreliable(self.ring_id(), self.pid(), self.chunks())


def _base_sim():
    sim = calm_sim()
    for _ in range(4):  # fragments in flight, of both kinds
        sim.submit("d1", sr.AGREED_MESS, size=2500)
        sim.submit("d2", sr.UNRELIABLE_MESS, size=2500)
    sim.run_until(sim.now + 0.002)
    return sim


def test_well_formed_hostile_packets_never_raise_nor_hang():
    """Found, before the fixes above: struct.error (an incarnation or a sequence at 2**64-1
    incremented), a loop to a far link_seq in RECOVERY, ValueError (our own name superseded),
    KeyError (fragment counts that disagree). Each round: a copy of a healthy ring, 12 hostile
    packets to one daemon, the simulation run on after each."""
    base = _base_sim()
    for seed in range(150):
        rng = random.Random(seed)
        sim = copy.deepcopy(base)
        for _ in range(12):
            name = rng.choice(PEERS)
            orderer = sim.nodes[name][0]
            packet = HostilePackets(rng, orderer, PEERS).packet()
            try:
                raw = sr.encode_ring_packet(packet)
            except struct.error:
                continue  # a value our own encoder cannot write (beyond u64): not a datagram
            try:
                orderer.receive(raw, rng.choice(PEERS), sim.now)
                sim.drain(name)
                sim.run_until(sim.now + 0.005)
            except Exception as e:  # the seed replays the sequence
                raise AssertionError("seed %d: %r" % (seed, e))


# ------------------------------------------------------------------ a forged incarnation notice

def test_forged_notices_naming_a_live_daemon_newer_cost_a_few_ring_changes_and_nothing_else():
    """A notice (or any packet) from a configured daemon naming d2 with a newer incarnation makes
    d2 take a newer one and gather: there is no way to tell it from a true one (the daemon whose
    clock went back cannot know its own past incarnations). What guards it: each forged packet
    costs one ring change (about a second), EVS holds through it, no message is lost, and after
    INCARNATION_BUMPS_MAX changes d2 stops changing (and says so in its log)."""
    sim = calm_sim()
    serials = []
    for i in range(sr.INCARNATION_BUMPS_MAX + 3):
        serials += [sim.submit(n, s) for n in PEERS for s in (sr.AGREED_MESS, sr.SAFE_MESS)]
        d2 = sim.nodes["d2"][0]
        forged = sr.RingMerge(sim.nodes["d1"][0].me, (0, "d2", d2.me[1] + 10))
        d2.receive(sr.encode_ring_merge(forged), "d1", sim.now)
        assert sim.run_until(sim.now + 5.0, stop=lambda: all_in_one_ring(sim) and sim.settled()), i
    d2 = sim.nodes["d2"][0]
    assert d2.incarnation_bumps == sr.INCARNATION_BUMPS_MAX
    assert d2.counters["newer_incarnation_ignored"] == 3
    for name in PEERS:
        assert set(serials) <= set(delivered(sim, name)), name
    assert_guarantees(sim)


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


def test_a_join_or_leave_that_names_no_group_is_refused_not_delivered():
    """Was: such a message (never sent by our daemons; a confused one could) went up to the
    group core, which reads groups[0]: IndexError at every daemon of the ring at once."""
    for kind in (sr.JOIN, sr.LEAVE, "STATE"):
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
