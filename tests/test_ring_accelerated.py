"""The Accelerated Ring (Babay and Amir, ICDCS 2016; Spread 5's AcceleratedRing and
AcceleratedWindow): the token holder passes the token before the last packets of its visit,
the token's link_seq counts them, and a daemon asks again only for packets the previous
rotation should have brought, never for those still on their way. In RECOVERY the ring sends
in order, as Spread 5 does in its EVS state.

Tier 1: one orderer's outputs for one token visit (the order of what it sends). Tier 2: the
seeded simulator; its seed space runs a third of the seeds on the original ring and the rest
accelerated (tests/ring_sim.py, ring_protocol_for_seed), so the fixed CI seeds of
tests/test_ring_sim.py cover both."""
from __future__ import annotations

import collections

import pytest

import spread_mini as sr
import ring_sim
from ring_sim import all_in_one_ring, assert_guarantees, calm_sim, delivered


def sends_of_one_visit(sim, name, messages, size=900, service=sr.AGREED_MESS):
    """What daemon `name` sends to its successor on its next token visit with `messages`
    messages of `size` bytes queued: [(packet type, link_seq)], in the order it sent them."""
    orderer = sim.nodes[name][0]
    ring = orderer.ring
    succ = sr._successor(ring.members, orderer.me)[0]
    for _ in range(messages):
        sim.submit(name, service, size=size)
    seen = []
    orig_send = sim.send

    def spy(src, dest, raw):
        if src == name and dest == succ and raw[5] in (sr.PT_DATA, sr.PT_TOKEN):
            p = sr.decode_ring_packet(raw)
            seen.append((raw[5], p.link_seq))
        orig_send(src, dest, raw)

    sim.send = spy
    try:
        sim.run_until(sim.now + 2.0, stop=lambda: any(t == sr.PT_TOKEN for t, _ in seen)
                      and sum(t == sr.PT_DATA for t, _ in seen) >= messages)
    finally:
        sim.send = orig_send
    first_token = next(i for i, (t, _) in enumerate(seen) if t == sr.PT_TOKEN)
    visit = seen[:first_token + 1]
    visit += [s for s in seen[first_token + 1:] if s[0] == sr.PT_DATA
              and s[1] <= seen[first_token][1]]
    return visit


@pytest.mark.parametrize("window, before", [(3, 5), (0, 8), (20, 0)])
def test_the_token_goes_before_the_last_window_packets_and_counts_them(window, before):
    sim = calm_sim(accelerated_ring=True, accelerated_window_packets=window)
    visit = sends_of_one_visit(sim, "d2", 8)
    kinds = [t for t, _ in visit]
    assert kinds == [sr.PT_DATA] * before + [sr.PT_TOKEN] + [sr.PT_DATA] * (8 - before)
    data_seqs = [seq for t, seq in visit if t == sr.PT_DATA]
    token_seq = next(seq for t, seq in visit if t == sr.PT_TOKEN)
    assert data_seqs == list(range(data_seqs[0], data_seqs[0] + 8)), "in link_seq order"
    assert token_seq == data_seqs[-1], "the token's link_seq counts the packets still to come"
    sim.run_until(sim.now + 1.0)
    assert len(delivered(sim, "d1")) == 8 and delivered(sim, "d1") == delivered(sim, "d3")
    assert_guarantees(sim)


def test_the_original_ring_sends_every_packet_before_the_token():
    sim = calm_sim(accelerated_ring=False, accelerated_window_packets=3)
    kinds = [t for t, _ in sends_of_one_visit(sim, "d2", 8)]
    assert kinds == [sr.PT_DATA] * 8 + [sr.PT_TOKEN]


def test_a_visit_that_sends_a_safe_message_sends_every_packet_before_the_token():
    """Sent after the token, the visit's packets would be missing at the next daemon when the
    token comes: it would lower the token's aru below them and raise it only a rotation
    later, and the SAFE message would be stable a rotation later (at its sender two)."""
    sim = calm_sim(accelerated_ring=True, accelerated_window_packets=3)
    kinds = [t for t, _ in sends_of_one_visit(sim, "d2", 8, service=sr.SAFE_MESS)]
    assert kinds == [sr.PT_DATA] * 8 + [sr.PT_TOKEN]
    sim.run_until(sim.now + 1.0)
    assert len(delivered(sim, "d1")) == 8 and delivered(sim, "d1") == delivered(sim, "d3")
    assert_guarantees(sim)


def test_the_window_never_exceeds_a_visit_of_the_personal_window():
    sim = calm_sim(accelerated_ring=True, accelerated_window_packets=15, personal_window_packets=4)
    kinds = [t for t, _ in sends_of_one_visit(sim, "d1", 4)]
    assert kinds == [sr.PT_TOKEN] + [sr.PT_DATA] * 4


def flood(sim, names, count, size=900, safe=True):
    """Messages from `names` in turn, every other one SAFE (safe=False: all AGREED; a visit
    that sends a SAFE message sends nothing after the token)."""
    for i in range(count):
        sim.submit(names[i % len(names)], sr.AGREED_MESS if i % 2 or not safe else sr.SAFE_MESS,
                   size=size)


def requested(sim):
    return sum(o.counters["retransmissions_requested"] for o, _ in sim.nodes.values())


def test_packets_still_on_their_way_are_never_asked_for():
    """Every daemon floods; no packet is lost, but the token overtakes the packets its holder
    sends after it. The requests stop at the token's link_seq of our own last pass."""
    sim = calm_sim(accelerated_ring=True, accelerated_window_packets=15)
    flood(sim, ["d1", "d2", "d3"], 600, safe=False)
    sim.run_until(sim.now + 3.0)
    assert all(len(delivered(sim, n)) == 600 for n in ("d1", "d2", "d3"))
    assert requested(sim) == 0
    assert_guarantees(sim)


def test_without_the_rotation_rule_the_same_flood_asks_for_packets_in_flight():
    """The test above is not empty: asking up to the token's link_seq (the original ring's
    rule) with the token ahead of the packets asks for packets that are merely in flight."""
    def unlimited(name, orderer):
        link = orderer.link
        original = link.request_missing

        def request_missing(ring, tok):
            accelerated, link.accelerated = link.accelerated, False
            try:
                original(ring, tok)
            finally:
                link.accelerated = accelerated
        link.request_missing = request_missing

    sim = calm_sim(accelerated_ring=True, accelerated_window_packets=15, on_start=unlimited)
    flood(sim, ["d1", "d2", "d3"], 600, safe=False)
    sim.run_until(sim.now + 3.0)
    assert requested(sim) > 0
    assert all(len(delivered(sim, n)) == 600 for n in ("d1", "d2", "d3"))


def test_a_lost_packet_after_the_token_is_asked_for_a_rotation_later():
    sim = calm_sim(accelerated_ring=True, accelerated_window_packets=15)
    token_seq = []
    dropped = []

    def drop_first_trailing(src, dest, raw):
        # the first data packet d1 sends to d2 after its token: one the token already counts
        if src != "d1" or dest != "d2":
            return False
        p = sr.decode_ring_packet(raw)
        if raw[5] == sr.PT_TOKEN:
            token_seq.append(p.link_seq)
        elif raw[5] == sr.PT_DATA and token_seq and p.link_seq <= token_seq[-1] and not dropped:
            dropped.append(p.link_seq)
            return True
        return False

    sim.drop_rule = drop_first_trailing
    flood(sim, ["d1"], 10, safe=False)
    sim.run_until(sim.now + 2.0)
    assert dropped and sim.nodes["d2"][0].counters["retransmissions_requested"] == 1
    assert len(delivered(sim, "d2")) == 10
    assert_guarantees(sim)


def test_recovery_sends_in_order_and_the_ring_accelerates_again_after():
    """A crash during a flood, d2 short of d3's packets that d1 has: the RECOVERY visits
    send every packet before the token (as Spread 5 in EVS); the new ring is accelerated
    again."""
    trailing_by_state = collections.defaultdict(int)

    def watch(name, orderer):
        link = orderer.link
        original = link.pass_token

        def pass_token(ring, tok, now, may_hold):
            trailing_by_state[orderer.state] += len(link.trailing)
            original(ring, tok, now, may_hold)
        link.pass_token = pass_token

    sim = calm_sim(accelerated_ring=True, accelerated_window_packets=15, on_start=watch)
    sim.drop_rule = lambda src, dest, raw: src == "d3" and dest == "d2" and raw[5] == sr.PT_DATA
    flood(sim, ["d1", "d2", "d3"], 300)
    sim.run_until(sim.now + 0.05)
    sim.crash("d3")
    sim.drop_rule = None
    assert sim.run_until(sim.now + 5.0, stop=lambda: all_in_one_ring(sim))
    before = trailing_by_state[sr.OPERATIONAL]
    flood(sim, ["d1", "d2"], 100)
    sim.run_until(sim.now + 2.0)
    assert trailing_by_state[sr.RECOVERY] == 0 and trailing_by_state[sr.OPERATIONAL] > before
    assert sum(o.counters["recovery_packets_sent"] for o, _ in sim.nodes.values()) > 0
    assert_guarantees(sim)


def test_the_seed_space_covers_both_ring_protocols():
    protocols = collections.Counter()
    for seed in range(1, 161):  # the CI seeds of tests/test_ring_sim.py
        settings = ring_sim.case_for_seed(seed)["settings"]
        protocols[settings["accelerated_ring"], settings.get("accelerated_window_packets")] += 1
    assert protocols[False, None] >= 30
    for window in ring_sim.ACCELERATED_WINDOWS:
        assert protocols[True, window] >= 10, protocols


def test_the_checkers_catch_a_token_that_does_not_count_the_packets_after_it():
    """The token must carry the link_seq its holder will reach. A holder that passes the seq of
    what it has sent so far lets its successor reuse the numbers of the packets still to come:
    two packets per number, and the daemons deliver different messages, or lose some."""
    def uncounted(name, orderer):
        link = orderer.link
        original = link._pass_or_hold

        def pass_or_hold(ring, tok, now, may_hold):
            tok.link_seq -= len(link.trailing)
            original(ring, tok, now, may_hold)
        link._pass_or_hold = pass_or_hold

    kinds = collections.Counter()
    for seed in range(1, 6):  # under faults (in a calm run the ring's changes repair it)
        kinds.update(ring_sim.run_seed(seed, on_start=uncounted, accelerated=15).kinds())
    assert kinds[ring_sim.LOSS] + kinds[ring_sim.VIRTUAL_SYNCHRONY] + kinds[ring_sim.AGREED] >= 2, kinds
