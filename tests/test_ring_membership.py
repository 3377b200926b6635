"""Membership of the RING protocol (spread_mini.RingOrderer; Totem's GATHER, COMMIT, RECOVERY,
OPERATIONAL, thesis 7.3.2.2): rings form, crashed daemons are noticed, partitions heal,
restarted daemons come back with a new incarnation (also with their clock set back), a daemon
stopped cleanly says so (LEAVE), the dispatch table covers every state and packet type, and no
forged, replayed or far-fetched datagram costs more than one membership change. Every scenario
runs on the deterministic simulator with a fake clock and ends with the guarantee checkers."""
from __future__ import annotations

import copy
import random
import struct

import pytest

import spread_mini as sr
import ring_sim
from ring_sim import CALM, Faults, Sim, all_in_one_ring, assert_guarantees, calm_sim, delivered


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


def test_a_survivor_knows_when_it_left_the_ring_whose_rest_its_recovery_delivers():
    """left_ring_s: when the daemon left OPERATIONAL (token lost after a crash): every message
    of that ring was sent by then, though the next ring's recovery delivers the rest of it
    later (the sites' gateway dates a neighbour site's silence by it)."""
    sim = calm_sim()
    sim.run_until(sim.now + 0.05)
    assert all(sim.nodes[n][0].left_ring_s is None for n in ("d1", "d2"))
    crash_at = sim.now
    sim.crash("d3")
    assert sim.run_until(crash_at + 5.0, stop=lambda: all(
        sim.regular_configs(n)[-1].members == ["d1", "d2"] for n in ("d1", "d2")))
    for name in ("d1", "d2"):
        orderer = sim.nodes[name][0]
        assert crash_at < orderer.left_ring_s <= crash_at + orderer.cfg.token_timeout_s + 0.01
        assert orderer.left_ring_s + orderer.cfg.consensus_timeout_s <= sim.now  # (installed after)


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


# ------------------------------------------------------------------------ incarnations: a clock set back
# A daemon's incarnation is its start time in ms; the others ignore a smaller one of the same
# name (an old process). A daemon restarted after its clock went back must learn that the others
# know its name with a higher incarnation, take one above it, and gather again.

PEERS = ["d1", "d2", "d3"]


def join_from(pid, proc_set=(), fail_set=(), ring_seq=0):
    return sr.encode_ring_join(sr.RingJoin(pid, ring_seq, list(proc_set) or [pid], list(fail_set)))


def sent_packets(orderer, dest=None):
    return [sr.decode_ring_packet(s.packet) for s in orderer.poll()
            if (isinstance(s, sr.Send) and (dest is None or s.dest == dest))
            or (isinstance(s, sr.SendToAll) and (dest is None or dest in s.dests))]


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


# ------------------------------------------------------------------ single datagrams

def membership_changes(sim):
    return sum(len(sim.regular_configs(n)) for n in sim.nodes)


def test_the_forged_join_naming_d1_with_incarnation_2_to_the_53_costs_at_most_one_change():
    """The issue's datagram: a JOIN sent to d1 from d2's address, naming d1 with incarnation
    2**53. d1 took an incarnation that its peers' decoders refuse, and was cut off for good."""
    for sender in (("d2", 1000), ("d1", 2 ** 53)):
        sim = calm_sim()
        before = membership_changes(sim)
        d1 = sim.nodes["d1"][0]
        forged = sr.encode_ring_join(sr.RingJoin(sender, 0, [("d1", 2 ** 53)], []))
        d1.receive(forged, "d2", sim.now)
        sim.drain("d1")
        assert sim.run_until(sim.now + 5.0, stop=lambda: all_in_one_ring(sim) and sim.settled())
        assert d1.me == ("d1", 1000)
        assert membership_changes(sim) - before <= len(sim.nodes), "more than one change each"
        serial = sim.submit("d1", sr.AGREED_MESS)
        sim.run_until(sim.now + 0.5)
        assert all(serial in delivered(sim, n) for n in PEERS)
        assert_guarantees(sim)


def test_a_forged_newer_incarnation_of_a_live_daemon_never_leaves_it_out_for_good():
    """A join that claims to come from d1 with an incarnation d1 cannot outgrow: d3 takes it
    as d1's restart and ignores the real d1; the real d1 keeps sending, the forged one is
    never heard again, so d3 forgets it (INCARNATION_FORGET_S) and the ring is whole again."""
    sim = calm_sim()
    d3 = sim.nodes["d3"][0]
    ghost = ("d1", sr.MAX_WIRE_COUNTER)
    d3.receive(sr.encode_ring_join(sr.RingJoin(ghost, 0, [ghost], [])), "d1", sim.now)
    sim.drain("d3")
    assert sim.run_until(sim.now + 3 * sr.INCARNATION_FORGET_S,
                         stop=lambda: all_in_one_ring(sim) and sim.settled())
    assert sim.nodes["d1"][0].me == ("d1", 1000)
    assert d3.counters["incarnations_forgotten"] == 1
    assert_guarantees(sim)


def test_a_token_replayed_to_a_daemon_it_was_not_sent_to_is_dropped():
    """A sniffer copies every token d1 passes to d2 to d3 at once: d3 has not seen that token
    id yet, and taking it would make two tokens in the ring (two packets with one link_seq)."""
    sim = calm_sim()
    copies = []

    def copy_tokens_to_d3(src, dest, raw):
        if raw[5] == sr.PT_TOKEN and (src, dest) == ("d1", "d2") and len(copies) < 20:
            copies.append(raw)
            sim.push("d3", "d1", raw)
        return False

    sim.drop_rule = copy_tokens_to_d3
    serials = [sim.submit(n, sr.AGREED_MESS) for n in PEERS for _ in range(5)]
    sim.run_until(sim.now + 1.0)
    d3 = sim.nodes["d3"][0]
    assert len(copies) == 20 and d3.counters["dropped_tokens_not_for_us"] == 20
    assert all(set(serials) <= set(delivered(sim, n)) for n in PEERS)
    assert all(len(sim.regular_configs(n)) == 1 for n in PEERS)
    assert_guarantees(sim)


@pytest.mark.parametrize("field", ["token_id", "link_seq", "site_lts"])
def test_a_token_far_ahead_of_the_ring_is_dropped_not_followed(field):
    sim = calm_sim()
    d2 = sim.nodes["d2"][0]
    ring = d2.ring
    values = {"token_id": ring.last_token_id + 1, "link_seq": ring.last_token_seq,
              "site_lts": d2.transport.max_lts_seen}
    values[field] = sr.MAX_WIRE_COUNTER
    tok = sr.RingToken(ring.ring_id, sim.nodes["d1"][0].me, values["token_id"],
                       link_seq=values["link_seq"], link_aru=0, site_lts=values["site_lts"])
    d2.receive(sr.encode_ring_token(tok), "d1", sim.now)
    assert d2.counters["dropped_tokens_far_ahead"] == 1
    serial = sim.submit("d1", sr.AGREED_MESS)
    sim.run_until(sim.now + 1.0)
    assert all(serial in delivered(sim, n) for n in PEERS)
    assert all(len(sim.regular_configs(n)) == 1 for n in PEERS)
    assert_guarantees(sim)


def test_a_join_or_commit_token_with_a_ring_seq_near_the_wire_limit_is_dropped():
    sim = calm_sim()
    d2 = sim.nodes["d2"][0]
    d1 = sim.nodes["d1"][0].me
    join = sr.RingJoin(d1, sr.MAX_WIRE_COUNTER - 1, [d1, d2.me], [])
    d2.receive(sr.encode_ring_join(join), "d1", sim.now)
    assert d2.counters["dropped_ring_seq_far_ahead"] == 1 and d2.state == sr.OPERATIONAL


# ------------------------------------------------------------------ the simulator's hostile packets

@pytest.mark.parametrize("key", [False, True], ids=["without key", "with key"])
def test_replayed_and_forged_packets_keep_every_guarantee(key):
    failures = []
    totals = {}
    for seed in range(1, 13):
        result = ring_sim.run_seed(seed, hostile=0.1, key=key)
        for name, value in result.stats.items():
            totals[name] = totals.get(name, 0) + value
        if result.violations:
            failures.append("%s\n  %s" % (result.summary(),
                                          ring_sim.replay_command(seed, hostile=0.1, key=key)))
    assert not failures, "\n".join(failures)
    assert totals["hostile_replayed"] > 100 and totals["hostile_forged"] > 100
    if key:  # forged ones are refused by their tag (some reach a daemon that is down, or cut off)
        assert totals["dropped_bad_tag"] >= 0.8 * totals["hostile_forged"]
