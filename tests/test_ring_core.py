from __future__ import annotations

"""Tier 1 and scenario tests of the RING protocol core (spread_mini.RingOrderer).

Named after the rules of the thesis (section 7.3.2.2 "Protocolo RING", 7.3.3 "Entrega de
Mensagens, Ordenação e Estabilidade", lines 2691-2763 of seeds/003_5c6401fa5e45e77c.txt) and of
Totem's membership algorithm. Every scenario runs on the deterministic simulator with a fake
clock, and ends with the full set of guarantee checkers.
"""

import random

import pytest

import spread_mini as sr
from ring_sim import CALM, Faults, Sim, all_in_one_ring, assert_guarantees, calm_sim, delivered


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
    assert len(delivered(sim, "d3")) == 30 and packets <= 2
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


# ------------------------------------------------------------------------ membership

def test_startup_daemons_find_each_other_and_form_one_ring():
    sim = calm_sim(n=5)
    assert [p[0] for p in sim.nodes["d4"][0].ring.members] == ["d1", "d2", "d3", "d4", "d5"]
    conf = sim.regular_configs("d2")[-1]
    assert conf.members == ["d1", "d2", "d3", "d4", "d5"]


def test_a_crashed_daemon_is_noticed_and_the_new_ring_installed_within_2_s():
    sim = calm_sim()
    for i in range(20):
        sim.submit("d%d" % (1 + i % 3), sr.AGREED_MESS)
    sim.run_until(sim.now + 0.05)
    crash_at = sim.now
    sim.crash("d3")
    for _ in range(10):
        sim.submit("d1", sr.SAFE_MESS)
    ok = sim.run_until(crash_at + 5.0, stop=lambda: all(
        sim.regular_configs(n)[-1].members == ["d1", "d2"] for n in ("d1", "d2")))
    assert ok
    installed_after_s = sim.now - crash_at
    assert installed_after_s < 2.0, "took %.2f s (target 2 s)" % installed_after_s
    reasons = [line for line in sim.nodes["d1"][0].log if "token lost" in line]
    assert reasons, "the log must say why the membership changed"
    sim.run_until(sim.now + 1.0)
    assert_guarantees(sim)


def test_transitional_configuration_comes_before_messages_not_safe_in_the_old_ring():
    """EVS: a SAFE message that the crashed daemon had, but of which the others could not learn
    that it had, is delivered in the transitional configuration {d1, d2}."""
    sim = calm_sim()
    safe = sim.submit("d1", sr.SAFE_MESS)
    sim.run_until(sim.now + 1.0, stop=lambda: sim.nodes["d3"][1].completed)
    sim.crash("d3")  # before d3 could report on the token that it has the message
    sim.run_until(sim.now + 3.0)
    events = [(e[0], e[1].kind if e[0] == "conf" else e[1]) for e in sim.nodes["d2"][1].events]
    i = events.index(("msg", safe))
    assert events[i - 1] == ("conf", sr.CONF_TRANSITIONAL) and events[i + 1] == ("conf", sr.CONF_REGULAR)
    trans = [e[1] for e in sim.nodes["d2"][1].events if e[0] == "conf"][-2]
    assert trans.members == ["d1", "d2"] and trans.kind == sr.CONF_TRANSITIONAL
    assert_guarantees(sim)


def test_consensus_timeout_leaves_out_a_configured_daemon_that_never_answers():
    sim = Sim(1, daemons=3, faults=CALM)
    sim.crash("d3")  # configured but never up
    sim.run_until(3.0, stop=lambda: all_in_one_ring(sim))
    assert [p[0] for p in sim.nodes["d1"][0].ring.members] == ["d1", "d2"]
    assert sim.nodes["d1"][0].counters["consensus_timeouts"] >= 1 or \
        sim.nodes["d2"][0].counters["consensus_timeouts"] >= 1


def test_a_restarted_daemon_comes_back_with_a_new_incarnation():
    sim = calm_sim()
    sim.crash("d2")
    sim.run_until(sim.now + 0.1)
    sim.start("d2")  # faster than token loss detection: the old incarnation is superseded
    sim.run_until(sim.now + 4.0, stop=lambda: all_in_one_ring(sim))
    assert ("d2", 2000) in sim.nodes["d1"][0].ring.members
    serial = sim.submit("d2", sr.AGREED_MESS)
    sim.run_until(sim.now + 1.0)
    assert serial in delivered(sim, "d1")
    assert_guarantees(sim)


def test_partition_gives_two_rings_and_the_heal_merges_them():
    sim = calm_sim(n=4)
    sim.group_of = {"d1": 0, "d2": 0, "d3": 1, "d4": 1}
    a = sim.submit("d1", sr.AGREED_MESS)
    b = sim.submit("d4", sr.SAFE_MESS)
    sim.run_until(sim.now + 3.0)
    assert [p[0] for p in sim.nodes["d1"][0].ring.members] == ["d1", "d2"]
    assert [p[0] for p in sim.nodes["d3"][0].ring.members] == ["d3", "d4"]
    assert a in delivered(sim, "d2") and a not in delivered(sim, "d3")
    assert b in delivered(sim, "d3") and b not in delivered(sim, "d1")
    sim.group_of = None
    assert sim.run_until(sim.now + 4.0, stop=lambda: all_in_one_ring(sim)), "no merge"
    reasons = " ".join(sim.nodes["d1"][0].log)
    assert "merge" in reasons or "join from" in reasons
    conf = sim.regular_configs("d3")[-1]
    assert conf.members == ["d1", "d2", "d3", "d4"] and conf.transitional_members == ["d3", "d4"]
    assert_guarantees(sim)


def test_stale_join_from_before_the_ring_formed_is_ignored():
    sim = calm_sim()
    o = sim.nodes["d1"][0]
    d2 = sim.nodes["d2"][0].me
    stale = sr.encode_ring_join(sr.RingJoin(d2, 0, [d2], []))
    before = o.counters["enter_gather"]
    o.receive(stale, "d2", sim.now)
    assert o.state == sr.OPERATIONAL and o.counters["enter_gather"] == before
    assert o.counters["stale_joins"] == 1


def test_membership_changes_are_logged_with_reasons_and_counted():
    sim = calm_sim()
    crashed_at = sim.now
    sim.crash("d1")
    sim.run_until(sim.now + 3.0)
    o = sim.nodes["d2"][0]
    assert o.counters["configurations_installed"] >= 2
    assert o.counters["enter_gather"] >= 2 and o.counters["enter_recovery"] >= 2
    # a log line per state change: "<time> d2 OLD -> NEW: <reason>"
    changes = [line.split(" ", 2)[2] for line in o.log
               if " -> " in line and float(line.split(" ", 1)[0]) >= crashed_at]
    assert [c.split(":", 1)[0] for c in changes] == [
        "OPERATIONAL -> GATHER", "GATHER -> COMMIT", "COMMIT -> RECOVERY",
        "RECOVERY -> OPERATIONAL"], changes
    assert "token lost" in changes[0] and "token lost" in changes[-1], changes
    assert o.snapshot()["last_change_reason"]


def test_submit_refuses_beyond_the_queue_limit():
    o = sr.RingOrderer("d1", 1, ["d1", "d2"], settings=sr.RingSettings(max_pending_messages=3))
    results = [o.submit(sr.DaemonMessage(sr.DATA, "d1", "#a#d1", sr.AGREED_MESS, ["g"], data=b"x")) for _ in range(5)]
    assert results == [True, True, True, False, False]
    assert o.counters["submit_refused_queue_full"] == 2
    # a disconnect is never refused: every daemon must learn of it, or the groups would disagree
    assert o.submit(sr.Kill(sr.KILL, "d1", "#a#d1", reason="test")) is True


# ------------------------------------------------------------------------ rendering

def test_status_rows_show_the_ring():
    sim = calm_sim()
    rows = dict(sr.ring_status_rows(sim.nodes["d1"][0].snapshot()))
    assert rows["state"] == "OPERATIONAL" and "d1, d2, d3" in rows["ring"]
    assert "packets" in rows["windows global / personal"]
    text = sr.render_ring_status(sim.nodes["d1"][0].snapshot())
    if sr.Table is not None:
        from rich.console import Console
        console = Console(record=True, width=100)
        console.print(text)
        text = console.export_text()
    assert "membership changes" in text


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


# ------------------------------------------------------------------------ incarnations: a clock set back
# A daemon's incarnation is its start time in ms; the others ignore a smaller one of the same
# name (an old process). A daemon restarted after its clock went back must learn that the others
# know its name with a higher incarnation, take one above it, and gather again.

PEERS = ["d1", "d2", "d3"]


def join_from(pid, proc_set=(), fail_set=(), ring_seq=0):
    return sr.encode_ring_join(sr.RingJoin(pid, ring_seq, list(proc_set) or [pid], list(fail_set)))


def sent_packets(orderer, dest=None):
    return [sr.decode_ring_packet(s.packet) for s in orderer.poll()
            if isinstance(s, sr.Send) and (dest is None or s.dest == dest)]


def test_a_join_naming_us_with_a_higher_incarnation_makes_us_take_a_newer_one_and_gather():
    o = sr.RingOrderer("d2", 500, PEERS, random.Random(1), now=0.0)
    o.poll()
    o.receive(join_from(("d1", 7000), [("d1", 7000), ("d2", 900)], ring_seq=3), "d1", 0.1)
    assert o.me[0] == "d2" and 900 < o.me[1] <= 900 + sr.INCARNATION_BUMP_SPREAD_MS
    assert o.state == sr.GATHER and o.counters["incarnation_bumps"] == 1
    assert any("was the clock set back" in line and "d2#900" in line for line in o.log)
    joins = [p for p in sent_packets(o) if isinstance(p, sr.RingJoin)]
    assert joins and all(j.sender == o.me and o.me in j.proc_set for j in joins)
    assert ("d2", 500) not in joins[-1].proc_set


def test_our_own_incarnation_or_an_older_one_in_the_others_packets_is_no_evidence():
    o = sr.RingOrderer("d2", 900, PEERS, random.Random(1), now=0.0)
    o.receive(join_from(("d1", 7000), [("d1", 7000), ("d2", 900)], [("d2", 300)]), "d1", 0.1)
    o.receive(sr.encode_ring_merge(sr.RingMerge(("d1", 7000), (0, "d2", 900))), "d1", 0.2)
    assert o.me == ("d2", 900) and o.counters["incarnation_bumps"] == 0


def evidence_packets():
    """Every kind of packet that can name our name with a higher incarnation (d2#900)."""
    d1, new = ("d1", 7000), ("d2", 900)
    entry = sr.RingCommitEntry((0, "d1", 7000), 0, 0, 0, 0)
    return {
        "join proc set": join_from(d1, [d1, new]),
        "join fail set": join_from(d1, [d1], [new]),
        "commit members": sr.encode_ring_commit(sr.RingCommit((4, "d1", 7000), d1, 1, 1, [d1, new],
                                                              {d1: entry})),
        "ring id of a data packet": sr.encode_ring_data(sr.RingData((4, "d2", 900), d1, 1, [])),
        "token": sr.encode_ring_token(sr.RingToken((4, "d1", 7000), d1, site_aru_modifier=new)),
        "incarnation notice": sr.encode_ring_merge(sr.RingMerge(d1, (0, "d2", 900))),
        "sender with our name": join_from(new, [new]),
    }


@pytest.mark.parametrize("kind", sorted(evidence_packets()))
def test_every_packet_that_names_us_newer_is_evidence(kind):
    o = sr.RingOrderer("d2", 500, PEERS, random.Random(1), now=0.0)
    o.receive(evidence_packets()[kind], "d1", 0.1)
    assert o.counters["incarnation_bumps"] == 1 and o.me[1] > 900, kind


def test_packets_of_an_older_incarnation_are_answered_with_a_notice_at_a_limited_rate():
    o = sr.RingOrderer("d1", 7000, PEERS, random.Random(1), now=0.0)
    o.receive(join_from(("d2", 900)), "d2", 0.01)  # d1 now knows d2#900
    o.poll()

    def notices():
        return [p for p in sent_packets(o, "d2") if isinstance(p, sr.RingMerge)]

    o.receive(join_from(("d2", 500)), "d2", 0.02)  # from an older d2: dropped, and answered
    first = notices()
    assert len(first) == 1 and first[0].ring_id == (0, "d2", 900) and first[0].sender == o.me
    o.receive(join_from(("d2", 500)), "d2", 0.05)
    assert notices() == []  # not more often than INCARNATION_NOTICE_EVERY_S
    o.receive(join_from(("d2", 500)), "d2", 0.03 + sr.INCARNATION_NOTICE_EVERY_S)
    assert len(notices()) == 1
    assert o.counters["dropped_old_incarnation"] == 3 and o.counters["incarnation_notices_sent"] == 2


def test_an_incarnation_notice_to_the_current_incarnation_changes_nothing():
    sim = calm_sim()
    o = sim.nodes["d2"][0]
    before = (o.me, o.ring.ring_id, o.counters["enter_gather"])
    o.receive(sr.encode_ring_merge(sr.RingMerge(sim.nodes["d1"][0].me, (0, "d2", o.me[1]))), "d1", sim.now)
    assert o.state == sr.OPERATIONAL and (o.me, o.ring.ring_id, o.counters["enter_gather"]) == before
    assert o.counters["incarnation_notices_received"] == 1


def test_two_daemons_with_one_name_stop_overtaking_each_other_and_say_so():
    o = sr.RingOrderer("d2", 100, PEERS, random.Random(2), now=0.0)
    for i in range(sr.INCARNATION_BUMPS_MAX + 3):
        other = ("d2", o.me[1] + 5000)  # the other "d2" overtakes us again
        o.receive(join_from(("d1", 7000), [("d1", 7000), other]), "d1", 0.1 * (i + 1))
    assert o.incarnation_bumps == sr.INCARNATION_BUMPS_MAX
    assert o.counters["newer_incarnation_ignored"] == 3
    errors = [line for line in o.log if "ERROR" in line]
    assert len(errors) == 1  # not once per packet
    assert "same name d2" in errors[0] and "--name" in errors[0]


def restart_with_clock_set_back(sim, name, incarnation, wait_for_new_ring=True):
    sim.crash(name)
    if wait_for_new_ring:
        assert sim.run_until(sim.now + 3.0, stop=lambda: all_in_one_ring(sim))
    restarted_at = sim.now
    sim.start(name, incarnation=incarnation)
    return restarted_at


def test_a_daemon_restarted_with_its_clock_set_back_joins_the_operational_ring():
    """The others are OPERATIONAL without d2 and remember d2#1000; d2 comes back as d2#400.
    Their incarnation notice tells it; it becomes d2#1001.. and joins; its message sent before
    it knew is delivered everywhere."""
    sim = calm_sim()
    restarted_at = restart_with_clock_set_back(sim, "d2", 400)
    early = sim.submit("d2", sr.AGREED_MESS)
    assert sim.run_until(sim.now + 5.0, stop=lambda: all_in_one_ring(sim)), "d2 never joined"
    joined_after_s = sim.now - restarted_at
    o2 = sim.nodes["d2"][0]
    assert o2.me[1] > 1000 and o2.counters["incarnation_bumps"] == 1
    assert sim.nodes["d1"][0].counters["incarnation_notices_sent"] >= 1
    assert joined_after_s < 3.0, "took %.2f s" % joined_after_s  # simulated time: deterministic
    late = sim.submit("d2", sr.SAFE_MESS)
    sim.run_until(sim.now + 1.0)
    for name in ("d1", "d2", "d3"):
        assert early in delivered(sim, name) and late in delivered(sim, name)
    assert_guarantees(sim)


def test_a_daemon_restarted_with_its_clock_set_back_before_the_others_noticed_the_crash():
    """Its old incarnation is still in their ring: their joins (after the token loss) name it."""
    sim = calm_sim()
    restart_with_clock_set_back(sim, "d3", 10, wait_for_new_ring=False)
    assert sim.run_until(sim.now + 5.0, stop=lambda: all_in_one_ring(sim) and
                         sim.nodes["d3"][0].me in sim.nodes["d1"][0].ring.members)
    assert sim.nodes["d3"][0].me[1] > 1000
    serial = sim.submit("d3", sr.SAFE_MESS)
    sim.run_until(sim.now + 1.0)
    assert serial in delivered(sim, "d1")
    assert_guarantees(sim)


def test_without_the_notice_an_operational_ring_waits_until_it_forgets_the_silent_incarnation(
        monkeypatch):
    """Why the notice exists: an OPERATIONAL ring sends a daemon outside it only merge
    detection, which does not name it. Without the notice, only the rule against forged
    incarnations brings d2 back: d2#1000 has been silent INCARNATION_FORGET_S while d2#400
    kept sending, so the others take d2#400 as current (seconds instead of milliseconds)."""
    monkeypatch.setattr(sr.RingOrderer, "_send_incarnation_notice", lambda self, stale: None)
    sim = calm_sim()
    restart_with_clock_set_back(sim, "d2", 400)
    assert not sim.run_until(sim.now + sr.INCARNATION_FORGET_S / 2, stop=lambda: all_in_one_ring(sim))
    assert sim.run_until(sim.now + 2 * sr.INCARNATION_FORGET_S, stop=lambda: all_in_one_ring(sim))
    assert sim.nodes["d2"][0].counters["incarnation_bumps"] == 0
    assert sim.nodes["d2"][0].me == ("d2", 400)
    assert sim.nodes["d1"][0].counters["incarnations_forgotten"] == 1
    assert_guarantees(sim)


def clock_back_inside_a_ring(seed, loss):
    """d2 comes back as d2#400 on the side of a partition where d3 is new too (d3 never knew
    d2#1000), so d2#400 and d3 form a ring and carry traffic. Only d1 knows d2#1000: after the
    heal its notice makes d2 take a newer incarnation while it is in a ring with d3."""
    faults = Faults(loss=loss, dup=0.0, delay_s=0.001, jitter_s=0.001, crashes=False,
                    partitions=False, garbage=0.0)
    sim = Sim(seed, daemons=3, faults=faults)
    assert sim.run_until(3.0, stop=lambda: all_in_one_ring(sim))
    sim.group_of = {"d1": 0, "d2": 1, "d3": 1}
    sim.crash("d2")
    sim.crash("d3")
    sim.start("d3")
    sim.start("d2", incarnation=400)
    assert sim.run_until(sim.now + 4.0, stop=lambda: sim.nodes["d2"][0].state == sr.OPERATIONAL
                         and len(sim.nodes["d2"][0].ring.members) == 2), "seed %d" % seed
    rng = random.Random(seed)
    for i in range(100):
        if i == 40:
            sim.group_of = None
        sim.submit(rng.choice(["d1", "d2", "d3"]), rng.choice([sr.AGREED_MESS, sr.SAFE_MESS, sr.FIFO_MESS]),
                   size=rng.choice([20, 900, 3000]))
        sim.run_until(sim.now + 0.01)
    assert sim.run_until(sim.now + 8.0, stop=lambda: all_in_one_ring(sim) and sim.settled()), \
        "seed %d: no merge" % seed
    return sim


def test_a_daemon_that_takes_a_newer_incarnation_inside_a_ring_moves_on_with_its_partner():
    moved_together = 0
    for seed in range(1, 9):
        sim = clock_back_inside_a_ring(seed, loss=0.0 if seed <= 4 else 0.05)
        o2 = sim.nodes["d2"][0]
        assert o2.counters["incarnation_bumps"] == 1 and o2.me[1] > 1000, "seed %d" % seed
        result = sim.check()
        assert not result.violations, "seed %d:\n%s" % (seed, "\n".join(result.violations[:10]))
        confs = [e[1] for e in sim.nodes["d3"][1].events
                 if e[0] == "conf" and e[1].kind == sr.CONF_REGULAR]
        # d3 and the renamed d2 came from the same ring: one transitional configuration
        moved_together += any(o2.me in c.transitional_ids for c in confs)
    assert moved_together >= 4


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


# ------------------------------------------------------------------ a clean stop: LEAVE
# A daemon stopped with Ctrl-C or SIGTERM calls RingOrderer.leave(reason): it sends LEAVE_COPIES
# LEAVE packets and nothing more; the others leave it out at once (in any state), instead of
# waiting for token loss (token_timeout_s) and a consensus timeout. EVS as after a crash.

REASON = "stopped by its operator"


def leaves_to(dest=None):
    """A drop rule's helper: is `raw` a LEAVE (to `dest`, or to anyone)?"""
    def match(src, d, raw):
        return raw[5] == sr.PT_LEAVE and (dest is None or d == dest)
    return match


def record_sends(sim, name):
    """Every datagram `name` sends from now on, as (dest, packet type)."""
    sent = []
    original = sim.send

    def send(src, dest, raw):
        if src == name:
            sent.append((dest, raw[5]))
        original(src, dest, raw)

    sim.send = send
    return sent


def new_ring_of_two(sim):
    return all(sim.nodes[n][0].state == sr.OPERATIONAL and
               [p[0] for p in sim.nodes[n][0].ring.members] == ["d1", "d2"] for n in ("d1", "d2"))


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


def test_leave_refuses_a_reason_that_could_not_travel():
    o = sr.RingOrderer("d1", 1, ["d1", "d2"], random.Random(1))
    with pytest.raises(sr.RingUsageError):  # our caller's mistake, not the network's
        o.leave("bad\nreason", 0.0)
    assert o.state == sr.GATHER


def test_leave_from_operational_the_others_change_at_once_and_say_why():
    sim = calm_sim()
    serials = [sim.submit("d%d" % (1 + i % 3), s) for i in range(12)
               for s in (sr.AGREED_MESS, sr.SAFE_MESS)]
    sim.run_until(sim.now + 0.005)
    d3 = sim.nodes["d3"][0]
    sent = record_sends(sim, "d3")
    left_at = sim.now
    sim.stop_cleanly("d3", REASON)
    assert d3.state == sr.LEFT and d3.leaving
    assert sim.run_until(left_at + 2.0, stop=lambda: new_ring_of_two(sim))
    # well before the token loss path (token_timeout_s, then consensus_timeout_s) could
    assert sim.now - left_at < sim.nodes["d1"][0].cfg.token_timeout_s
    sim.run_until(sim.now + 1.0)
    assert "d3" not in sim.nodes  # gone once its last copy was sent
    assert sent == [(dest, sr.PT_LEAVE) for _ in range(sr.LEAVE_COPIES) for dest in ("d1", "d2")]
    for name in ("d1", "d2"):
        o = sim.nodes[name][0]
        assert any("OPERATIONAL -> GATHER: d3 is leaving (stopped by its operator)" in line
                   for line in o.log), name
        assert o.counters["token_loss"] == 0 and o.counters["consensus_timeouts"] == 0
        assert o.counters["leaves_received"] == 1
        assert o.counters["duplicate_leaves"] == sr.LEAVE_COPIES - 1
        trans = [e[1] for e in sim.nodes[name][1].events if e[0] == "conf"][-2:]
        assert [c.kind for c in trans] == [sr.CONF_TRANSITIONAL, sr.CONF_REGULAR]
        assert trans[0].members == ["d1", "d2"]  # the leaver is not in the transitional one
    for s in serials:  # what d1 and d2 sent is delivered at both; d3's: at both or at neither
        if sim.submitted[s][3][0] != "d3":
            assert s in delivered(sim, "d1") and s in delivered(sim, "d2")
        else:
            assert (s in delivered(sim, "d1")) == (s in delivered(sim, "d2"))
    assert_guarantees(sim)


def test_the_leaver_sends_its_copies_apart_then_nothing_and_takes_nothing():
    sim = calm_sim()
    d3 = sim.nodes["d3"][0]
    t0 = sim.now
    d3.leave(REASON, t0)
    first = [o for o in d3.poll() if isinstance(o, sr.Send)]
    assert sorted(o.dest for o in first) == ["d1", "d2"]
    assert {sr.decode_ring_packet(o.packet).reason for o in first} == {REASON}
    d3.tick(t0 + sr.LEAVE_COPY_GAP_S / 2)
    assert d3.poll() == []  # not yet
    copies = 1
    t = t0
    while d3.leaving:
        t += 0.005
        d3.tick(t)
        copies += bool(d3.poll())
    assert copies == sr.LEAVE_COPIES and t - t0 >= (sr.LEAVE_COPIES - 1) * sr.LEAVE_COPY_GAP_S
    d3.tick(t + 5.0)  # no token retransmission, no join, nothing
    token = sr.encode_ring_token(sr.RingToken(d3.ring.ring_id, sim.nodes["d1"][0].me, 10 ** 6))
    d3.receive(token, "d1", t + 5.0)
    assert d3.poll() == [] and d3.counters["dropped_after_we_left"] == 1
    msg = sr.DaemonMessage(sr.DATA, "d3", "#c#d3", sr.AGREED_MESS, ["g"], data=b"late")
    assert d3.submit(msg) is False
    d3.leave(REASON, t + 6.0)  # a second Ctrl-C: nothing more
    assert d3.poll() == [] and d3.state == sr.LEFT


@pytest.mark.parametrize("state", [sr.GATHER, sr.COMMIT, sr.RECOVERY])
def test_leave_while_the_ring_is_forming(state):
    """d3 leaves while d1 (the representative) is in GATHER, COMMIT or RECOVERY of a ring with
    d3: d1 and d2 form {d1, d2} at once, without a token loss or consensus timeout."""
    sim = Sim(1, daemons=3, faults=CALM)
    d1 = sim.nodes["d1"][0]

    def d1_waits_for_d3():
        if state == sr.GATHER:
            return d1.state == sr.GATHER and any(p[0] == "d3" for p in d1.proc_set) \
                and any(p[0] == "d3" for p in d1.joins)
        target = d1.commit if state == sr.COMMIT else d1.new_ring
        return d1.state == state and target is not None and \
            any(p[0] == "d3" for p in target.members)

    assert sim.run_until(2.0, stop=d1_waits_for_d3), "d1 never reached %s with d3" % state
    left_at = sim.now
    sim.stop_cleanly("d3", REASON)
    assert sim.run_until(left_at + 2.0, stop=lambda: new_ring_of_two(sim))
    assert sim.now - left_at < d1.cfg.consensus_timeout_s
    assert any("d3 is leaving (stopped by its operator)" in line for line in d1.log)
    if state != sr.GATHER:
        assert any("%s -> GATHER: d3 is leaving" % state in line for line in d1.log)
    for name in ("d1", "d2"):
        o = sim.nodes[name][0]
        assert o.counters["token_loss"] == 0 and o.counters["consensus_timeouts"] == 0, name
    sim.run_until(sim.now + 1.0)
    assert_guarantees(sim)


def test_a_lost_first_announcement_the_next_copy_does_it():
    sim = calm_sim()
    lost = []

    def lose_first_leave(src, dest, raw):
        if raw[5] == sr.PT_LEAVE and dest not in lost:
            lost.append(dest)
            return True
        return False

    sim.drop_rule = lose_first_leave
    left_at = sim.now
    sim.stop_cleanly("d3", REASON)
    assert sim.run_until(left_at + 2.0, stop=lambda: new_ring_of_two(sim))
    assert sorted(lost) == ["d1", "d2"]
    assert sim.now - left_at < sim.nodes["d1"][0].cfg.token_timeout_s
    for name in ("d1", "d2"):
        o = sim.nodes[name][0]
        assert o.counters["leaves_received"] + o.counters["duplicate_leaves"] >= 1
        assert o.counters["token_loss"] == 0, name
    sim.run_until(sim.now + 1.0)
    assert_guarantees(sim)


def test_every_copy_lost_falls_back_to_token_loss_as_for_a_crash():
    sim = calm_sim()
    sim.drop_rule = leaves_to()
    sim.stop_cleanly("d3", REASON)
    assert sim.run_until(sim.now + 3.0, stop=lambda: new_ring_of_two(sim))
    assert sim.nodes["d1"][0].counters["token_loss"] + sim.nodes["d2"][0].counters["token_loss"] >= 1
    assert_guarantees(sim)


def test_a_duplicate_announcement_after_the_new_ring_formed_does_nothing():
    sim = calm_sim()
    d3 = sim.nodes["d3"][0]
    sim.drop_rule = leaves_to("d2")  # d2 gets none: it learns from d1's join
    sim.stop_cleanly("d3", REASON)
    assert sim.run_until(sim.now + 2.0, stop=lambda: new_ring_of_two(sim))
    sim.run_until(sim.now + 0.5)
    sim.drop_rule = None
    late = d3.leave_packet
    for name in ("d1", "d2"):  # d1 saw copies before (departed), d2 never did
        o = sim.nodes[name][0]
        ring, changes = o.ring.ring_id, o.counters["enter_gather"]
        o.receive(late, "d3", sim.now)
        sim.drain(name)
        assert o.state == sr.OPERATIONAL and o.ring.ring_id == ring, name
        assert o.counters["enter_gather"] == changes, name
    assert sim.nodes["d1"][0].counters["duplicate_leaves"] >= sr.LEAVE_COPIES
    assert sim.nodes["d2"][0].counters["leaves_ignored_not_member"] == 1
    sim.run_until(sim.now + 1.0)
    assert_guarantees(sim)


def test_a_late_join_from_the_leaver_does_not_bring_it_back():
    sim = calm_sim()
    d3 = sim.nodes["d3"][0]
    old_join = sr.encode_ring_join(sr.RingJoin(d3.me, d3.ring_seq, [d3.me], []))
    sim.stop_cleanly("d3", REASON)
    assert sim.run_until(sim.now + 2.0, stop=lambda: new_ring_of_two(sim))
    d1 = sim.nodes["d1"][0]
    d1.receive(old_join, "d3", sim.now)  # sent before the LEAVE, arriving after it
    assert d1.state == sr.OPERATIONAL and d1.counters["dropped_late_from_departed"] == 1


def test_an_announcement_from_a_non_member_or_an_old_incarnation_changes_nothing():
    sim = calm_sim(n=4)
    sim.group_of = {"d1": 0, "d2": 0, "d3": 0, "d4": 1}
    assert sim.run_until(sim.now + 3.0, stop=lambda: [p[0] for p in sim.nodes["d1"][0].ring.members]
                         == ["d1", "d2", "d3"] and sim.nodes["d1"][0].state == sr.OPERATIONAL)
    d1 = sim.nodes["d1"][0]
    d3, d4 = sim.nodes["d3"][0].me, sim.nodes["d4"][0]
    ring, gathers = d1.ring.ring_id, d1.counters["enter_gather"]
    # d4 (configured, in another partition's ring) leaves: not a member of d1's ring
    d1.receive(sr.encode_ring_leave(sr.RingLeave(d4.me, d4.ring.ring_id, REASON)), "d4", sim.now)
    assert d1.counters["leaves_ignored_not_member"] == 1
    # an older incarnation of d3 (a process that was replaced) says it leaves
    d1.receive(sr.encode_ring_leave(sr.RingLeave((d3[0], d3[1] - 1), ring, REASON)), "d3", sim.now)
    assert d1.counters["dropped_old_incarnation"] == 1
    # a daemon spread.conf does not name
    d1.receive(sr.encode_ring_leave(sr.RingLeave(("x9", 5), ring, REASON)), "d3", sim.now)
    assert d1.counters["dropped_unknown_daemon"] == 1
    sim.drain("d1")
    sim.run_until(sim.now + 0.5)
    assert d1.state == sr.OPERATIONAL and d1.ring.ring_id == ring
    assert d1.counters["enter_gather"] == gathers and d1.counters["leaves_received"] == 0
    assert d3 in d1.ring.members


def test_a_safe_message_of_the_ring_the_leaver_was_in_goes_in_the_transitional_configuration():
    """EVS exactly as for a crash: d1's SAFE message, which d3 had but could not report on the
    token, is delivered in the transitional configuration {d1, d2}, without d3."""
    sim = calm_sim()
    safe = sim.submit("d1", sr.SAFE_MESS)
    sim.run_until(sim.now + 1.0, stop=lambda: sim.nodes["d3"][1].completed)
    sim.stop_cleanly("d3", REASON)
    sim.run_until(sim.now + 1.0)
    events = [(e[0], e[1].kind if e[0] == "conf" else e[1]) for e in sim.nodes["d2"][1].events]
    i = events.index(("msg", safe))
    assert events[i - 1] == ("conf", sr.CONF_TRANSITIONAL) and events[i + 1] == ("conf", sr.CONF_REGULAR)
    assert_guarantees(sim)


def test_a_leave_naming_a_live_daemon_costs_a_few_ring_changes_not_a_livelock():
    """A LEAVE that names a daemon that is in fact alive (a confused or forged sender on a
    configured address): d1 leaves d3 out and drops its packets, d2 takes it in. That lasts
    LEAVE_REMEMBER_S, then the three are one ring again, EVS holding throughout."""
    sim = calm_sim()
    d1, d3 = sim.nodes["d1"][0], sim.nodes["d3"][0]
    serials = [sim.submit(n, sr.AGREED_MESS) for n in ("d1", "d2", "d3")]
    d1.receive(sr.encode_ring_leave(sr.RingLeave(d3.me, d3.ring.ring_id, "forged")), "d3", sim.now)
    sim.drain("d1")
    sim.run_until(sim.now + sr.LEAVE_REMEMBER_S + 0.5)
    assert sim.run_until(sim.now + 5.0, stop=lambda: all_in_one_ring(sim))
    assert sim.stats["configurations"] < 40
    sim.run_until(sim.now + 1.0)
    for name in ("d1", "d2", "d3"):  # each at its sender at least (it was a partition meanwhile)
        assert serials[int(name[1]) - 1] in delivered(sim, name), name
    assert_guarantees(sim)


def test_the_dispatch_table_has_a_handler_for_every_packet_type_in_every_state():
    """totemsrp's shape: (state, packet type) -> handler; a pair missing would be a KeyError
    on the first such packet from the network."""
    states = (sr.GATHER, sr.COMMIT, sr.RECOVERY, sr.OPERATIONAL)
    assert set(sr.RingOrderer.DISPATCH) == {(s, pt) for s in states for pt in sr.PACKET_TYPE_NAMES}
    assert all(callable(h) for h in sr.RingOrderer.DISPATCH.values())


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
