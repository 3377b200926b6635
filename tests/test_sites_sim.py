"""Several sites joined by HOP links, through the seeded simulator (tests/sites_sim.py): rings
of 1-3 daemons, representatives joined by lossy (1-10 %), delayed (10-50 ms), bandwidth-limited
links, some topologies a line (packets cross a middle site). One agreed order at every daemon
of every site, FIFO, causal, SAFE only once every daemon holds it, nothing lost, nothing
invented. A failing seed replays: python3 tests/sites_sim.py SEED --log. Every checker is shown
to catch a fault planted in what the daemons deliver."""
from __future__ import annotations

import dataclasses
import heapq
import types

import pytest

import spread_mini as sr
import sites_sim

#: the CI's fixed seeds (bench/sites_soak.py runs thousands)
CI_SEEDS = range(30)


@pytest.mark.parametrize("seed", CI_SEEDS)
def test_static_sites_agree_on_one_order_and_lose_nothing(seed):
    res = sites_sim.run_seed(seed)
    assert res.violations == [], "%s\nreplay: %s" % (res.summary(), sites_sim.replay_command(seed))
    assert res.stats["submitted"] > 0


#: seeds that once failed in the soak (each fixed since): they stay in CI. They run with the
#: daemon's split_quorum defaults (on, sites of 3+) since s12; only 361 and 2004 fork with them
#: (a ring of a site of three holds no quorum of its last one after two deaths), and their logs
#: stay the same but for the fork's line (and in 2004 a few packets): the same race, so they
#: were kept on the default, not on the old setting (--no-split-quorum)
REGRESSION_SEEDS = [29, 36, 5039, 5400, 20215, 30002, 31387, 41181,
                    645, 782, 833, 2152, 2256,  # (these five: partitions that heal)
                    # a site of a mesh cut off and healed right at its loss: MERGEs that came
                    # before the link to a site they bring in, no HELLO to a site of the new
                    # view, a tree through a joined site, a site that gave up a merge we decided
                    204, 469, 1021, 1062,
                    # a site gave up a merge the others decided, and the merged view's tree
                    # to one of them went through it (with a restarted representative)
                    1416,
                    # a site gave up a merge that the others had decided (a link to a joining
                    # site died just before its decision): the others waited for it for ever,
                    # or delivered in the merged view what it delivered in its old one; now
                    # a merge needs every site's READY, and they withdraw on its GIVEUP
                    6725, 13392,
                    # a second site killed after the survivors decided the view without the
                    # first: they waited for it for ever; now the next view is agreed meanwhile
                    320, 327, 329, 386,
                    # ... and that dead site had delivered SAFE messages, in the old view or its
                    # transitional part, on ARUs the others never heard of
                    1300, 1433, 4078,
                    # a whole site started again: 19 and 32 before the others suspected it
                    # (read as the rest of the old stream before streams had an epoch), 95 with
                    # three daemons, 13 three daemons restarted together, 9 after the view
                    # without it
                    19, 32, 95, 13, 9,
                    # issue 10's seed: a site split in two rings under 3 % LAN loss. It passes
                    # since HELLO carries the epoch (the run changed), not because the split is
                    # handled: that is test_a_site_split_in_two_rings_keeps_every_guarantee
                    840,
                    # a site's ring started afresh while its representative's links ran under
                    # the old epoch: it took a new one (from a restarted daemon's incarnation)
                    # and the others refused the site as a new incarnation; now a ring that
                    # starts afresh keeps the epoch its daemons already run under
                    1412,
                    # a representative restarted and took the sites' state from its ring after
                    # its site gave up a merge the other two had decided: the state lacked the
                    # GIVEUP, so the new representative never resent it and they waited for ever
                    361,
                    # the checker's: b2, out of site b's ring (its token lost; b1 restarted and
                    # b3 formed a ring without it), was said to owe holding a1's SAFE message
                    # that a1 delivered on that ring's ARU (test_a_daemon_out_of_its_sites_ring_...)
                    111636,
                    # the checker's: a1 stood down to take a2's state (two rings of site a met)
                    # and a2 delivered its SAFE 70 on that ring's ARU before the state went:
                    # a1 was asked to hold it (test_a_daemon_waiting_for_the_kept_state_...)
                    161686,
                    # a site killed after the healed views decided their merge (the simulator's
                    # merge_kill): the others waited for its READY or its frontier for ever; now
                    # the next view leaves it out, chained after the merge. 5231, 8834: two
                    # sites; 423, 4388: a line, an end dies; 3584: a line, the middle dies and
                    # the far end had given the merge up; 2182, 4569: a mesh's cut-off site
                    5231, 8834, 423, 4388, 3584, 2182, 4569,
                    # a site of one daemon (a) killed in a line a - b - c while b's
                    # representative restarted: b's end of its new link to c fell silent (c's
                    # packets of a session it did not take) while c lived; with no wait at all
                    # for a site where nobody can take over, b left c out at once, just after c
                    # decided a view with b. SITE_HELLO_WAIT_S lets the HELLO restart both ends
                    136,
                    # a restarted daemon of site c took the state and the links after c installed
                    # a heal's merge whose READY the others lacked: they waited for ever (on
                    # session 9's code; the race itself: test_a_ready_lost_with_the_...)
                    2004,
                    # the GIVEUP race (stream +23) with both ends deciding: b proposed the view
                    # without a (chained after the merge), then installed the merge after all (a
                    # came back in time) and dropped that proposal, which c had decided with:
                    # proposals for ever; now it is the next view's proposal
                    5500,
                    # a merge through a third site (stream +22): c kept b's LINKS report of its
                    # cut to a, made before c's view left b out; it found no path to b and
                    # parked the MERGE through a for ever. Now a site left out takes its report
                    # with it
                    711,
                    # failed only with a change taken back (s18-cv86400: the old view's regular
                    # part ended at the lost sites' decided frontiers): two daemons delivered
                    # different messages in one view. Its bound was an lts F: a lower site's
                    # message at F + 1, which F passes, went in the regular part at a survivor
                    # that delivered it before the cut, in the transitional one at another
                    # (s19-cv86400b: a {lts, site id} bound, SiteGateway._hole_free_key)
                    160032, 162013, 162043, 162097, 163625,
                    # the checker's: a daemon that held nothing took a fresh ring's state past
                    # what that ring delivered (SitesSim.rejoined)
                    222691,
                    # the checker's: b1 sat out ring 2 (b2, the restarted b3), which ordered 10
                    # of b2's messages; it closed its fork's view and stood down before b2
                    # delivered them, and took b2's state past them after b2 had left that
                    # view: it was owed them from the start (test_a_daemon_waiting_for_the_
                    # kept_state_owes_nothing_delivered_before_the_states_point)
                    271361,
                    # the checker's: the same, but b3 reached ring 3's point (applied its held
                    # outputs: a3's 1, 4, 6 in its transitional view 1) 0.5 ms before b1, which
                    # stood down at that same point of the order (test_a_daemon_that_stood_
                    # down_owes_nothing_the_others_delivered_from_that_rounds_point_on)
                    297659,
                    # (session 22, the checker's: a fork's daemon closed its view before the
                    # other site left that view, and took the kept state after; closed_its_fork_before)
                    314524]


@pytest.mark.parametrize("seed", REGRESSION_SEEDS)
def test_seeds_that_once_failed(seed):
    res = sites_sim.run_seed(seed)
    assert res.violations == [], "%s\nreplay: %s" % (res.summary(), sites_sim.replay_command(seed))


#: seeds of a hostile LAN (--hostile 0.1, with or without --key) that once failed, and a few
#: more: 35 --key, a line a - b - c: a copy of b's packet to c, sent to a from b's address,
#: passed a's session check (both links were session 1) and took a seq of a's stream, with a
#: key too; now a session names the site at the other end. 9599 --key: no hostile datagram
#: in it (it fails with --key alone: the key's tags move the timing), a1 sat out a ring while
#: a2 (restarted) and a3 went on with a quorum, and where they met a1's older state of the
#: same epoch was kept (test_sites_core.py -k two_rings_of_one_epoch). 280561 --key: not the
#: hostile datagrams' (it fails with every one of them withheld too): site c (c3, a fork) died
#: after the merged view 2 {a, b, c} was decided, view 3 {a, b} chained after it; b1 and b2
#: (site c of their old view, its stream closed at view 3's limit 215 by view 2's close)
#: delivered site b's messages of lts 144.. in view 2's regular part, past site c's decided
#: frontier 132, with no bound once view 2 was installed; a1 (site c joined by that merge)
#: after view 3's TRANSITIONAL (SiteGateway._install_view: the bound set before delivering)
HOSTILE_SEEDS = [(35, True), (1, False), (2, True), (3, False), (186, False), (9599, True),
                 (280561, True)]


def test_four_restarted_daemons_and_the_hold_before_the_status_point_regression_seed():
    """Seed 120953 --hostile 0.1 --key (3 hostile datagrams: the restarts are the point):
    with a ring that only fresh daemons join skipping the hold before the status point
    (s16-targets' 9fe5ce5, taken back; its cause not read) the two sites never merged again
    after four daemons were restarted, and 21 messages were lost."""
    res = sites_sim.run_seed(120953, hostile=0.1, key=True)
    assert res.stats.get("restarts", 0) >= 4, res.summary()
    assert res.violations == [], "%s\nreplay: %s" % (
        res.summary(), sites_sim.replay_command(120953, hostile=0.1, key=True))


def test_an_aru_announced_again_in_the_merged_view_is_not_a_duplicate():
    # seed 3163 --hostile 0.1 --key (only 8 hostile datagrams: the merge is the point; with
    # split_quorum on, site a's a2 alone forks when a1 and a3 die): c1 installed the merged
    # view 3 before b1 did, refused b1's last ARU of view 2 (lts 112, through a2), and took
    # b1's ARU of view 3 at the same lts for a duplicate (SiteGateway._from_link): its SAFE
    # messages waited for ever for site b's ARU. Now an ARU's duplicate mark is per view
    sim = sites_sim.SitesSim(3163, hostile=0.1, key=sites_sim.SIM_KEY)  # (run_seed's, with its nodes)
    res = sim.run()
    assert res.stats.get("site_forks") == 1, res.summary()
    assert sim.nodes["c1"].gateway.counters["site_aru_of_an_older_view"] >= 1  # (the race ran)
    assert res.violations == [], "%s\nreplay: %s" % (
        res.summary(), sites_sim.replay_command(3163, hostile=0.1, key=True))


def test_a_keyless_forger_sends_no_epoch_taken_first_hand():
    # seed 70506 --hostile 0.1 (no key): c1, with no epoch of site 0 on record, took a forged
    # HELLO's epoch as site 0's own (as a restarted site's: nothing keyless tells them apart),
    # refused the real a1's HELLOs as a new incarnation for good (site 0 read round through b,
    # never left out) and never delivered one message: lab_guide.md's list of what a keyless
    # LAN cannot be protected from. Without a key the simulator keeps such a HELLO's real epoch
    sim = sites_sim.SitesSim(70506, hostile=0.1)  # (run_seed's, with its hostile forger)
    res = sim.run()
    assert sim.hostile.epochs_kept >= 1, res.summary()  # (the case came up)
    assert res.violations == [], "%s\nreplay: %s" % (
        res.summary(), sites_sim.replay_command(70506, hostile=0.1))


@pytest.mark.parametrize("seed, key", HOSTILE_SEEDS)
def test_hostile_seeds_keep_every_guarantee(seed, key):
    res = sites_sim.run_seed(seed, hostile=0.1, key=key)
    assert res.violations == [], "%s\nreplay: %s" % (
        res.summary(), sites_sim.replay_command(seed, hostile=0.1, key=key))
    # not a vacuous pass: hostile datagrams went, the daemons refused them and counted it
    sent = sum(v for k, v in res.stats.items() if k.startswith("hostile_"))
    refused = sum(v for k, v in res.stats.items() if k.startswith("dropped_"))
    assert sent >= 10 and refused >= 10, res.summary()
    if key:  # (every forged one fails the key's tag)
        assert res.stats.get("dropped_link_dropped_bad_tag", 0) + res.stats.get("dropped_hop_dropped_bad_tag", 0) > 0


#: (seed, P, key) --hostile P [--key] --client-views. 80022 (0.2, key): a1 killed just after
#: the views merged; its site's STATE came at b1 and c1 in the transitional view that lost
#: site a, and the exchange ended there: their clients got a REG_MEMB naming a1's member
#: (test_sites_core.py -k exchange_whose_last_state)
HOSTILE_CLIENT_VIEW_SEEDS = [(80022, 0.2, True)]


@pytest.mark.parametrize("seed, hostile, key", HOSTILE_CLIENT_VIEW_SEEDS)
def test_hostile_client_view_seed(seed, hostile, key):
    sim = sites_sim.SitesSim(seed, hostile=hostile, key=sites_sim.SIM_KEY if key else None,
                             client_views=True)  # (run_seed's, with its nodes)
    res = sim.run()
    assert res.violations == [], "%s\nreplay: %s" % (
        res.summary(), sites_sim.replay_command(seed, hostile=hostile, key=key, client_views=True))
    assert any(node.core.exchanges_ended_by_the_regular_view for node in sim.nodes.values()
               if node.core is not None), res.summary()  # (the case came up)


def test_the_seeds_exercise_loss_lines_and_safe():
    """Not a vacuous pass: HOP packets are lost and resent, some topologies are a line whose
    middle site forwards the others' records, and SAFE messages are delivered."""
    lost = forwarded_through_middle = safe = 0
    for seed in range(12):
        sim = sites_sim.SitesSim(seed)
        res = sim.run()
        lost += res.stats["hop_lost"]
        costs = sim.case.costs
        if len(costs) == 3 and costs[0][2] == 0:
            middle = sim.case.sites[1][0]
            forwarded_through_middle += sim.nodes[middle].gateway.counters["site_records_forwarded"]
        safe += sum(1 for s in sim.submitted.values() if s[0] == sr.SAFE_MESS)
    assert lost > 0 and forwarded_through_middle > 0 and safe > 0


def test_a_seed_replays_exactly():
    a, b = sites_sim.run_seed(7), sites_sim.run_seed(7)
    assert a.stats == b.stats and a.violations == b.violations


# ---- planted faults: each checker catches what it names ----------------------------------------

def _first_deliver(outputs):
    return next((i for i, out in enumerate(outputs) if isinstance(out, sr.Deliver)), None)


class HoldBack:
    """At the daemons named, holds back one message (the first delivered at the first of them)
    until a later one satisfying `release(sim, held, serial)` is delivered there, then hands it
    over: a reordering planted in the delivery, the same at every daemon named."""

    def __init__(self, sim_ref, names, release):
        self.sim_ref, self.names, self.release = sim_ref, set(names), release
        self.target = None
        self.held = {}  # daemon -> the held Deliver

    def __call__(self, name, outputs):
        if name not in self.names:
            return outputs
        out = []
        for o in outputs:
            if not isinstance(o, sr.Deliver):
                out.append(o)
                continue
            serial = int.from_bytes(o.msg.data[:8], "big")
            if self.target is None:
                self.target = serial
            if serial == self.target and name not in self.held:
                self.held[name] = o
                continue
            out.append(o)
            held = self.held.get(name)
            if held is not None and held is not True and self.release(self.sim_ref[0], self.target, serial):
                out.append(held)
                self.held[name] = True
        return out


def _run_planted(seed, filter_factory=None, on_start=None):
    sim_ref = [None]
    flt = filter_factory(sim_ref) if filter_factory else None
    # (the case without its restart: each planted fault was made for the case as it was)
    case = dataclasses.replace(sites_sim.case_for_seed(seed), restart_name=None)
    sim = sites_sim.SitesSim(seed, case=case, on_start=on_start, delivery_filter=flt)
    sim_ref[0] = sim
    return sim.run(drain_max_s=5.0)


def _all_names(seed):
    return [d for s in sites_sim.case_for_seed(seed).sites for d in s]


def test_planted_reorder_at_one_daemon_is_an_agreed_order_violation():
    res = _run_planted(1, lambda ref: HoldBack(ref, ["a1"], lambda sim, held, s: True))
    assert sites_sim.AGREED in res.kinds(), res.summary()


def test_planted_reorder_of_one_senders_messages_everywhere_is_a_fifo_violation():
    def same_sender(sim, held, serial):
        return sim.submitted[serial][2] == sim.submitted[held][2]
    res = _run_planted(1, lambda ref: HoldBack(ref, _all_names(1), same_sender))
    assert sites_sim.FIFO in res.kinds() and sites_sim.AGREED not in res.kinds(), res.summary()


def test_planted_effect_before_its_cause_everywhere_is_a_causal_violation():
    def depends_on_held(sim, held, serial):
        service, data, origin, prefix = sim.submitted[serial][:4]
        return origin != sim.submitted[held][2] and held in sim.nodes[origin].delivered[:prefix]
    # a1 delivers as it should (its clients send messages that depend on the held one); the
    # others deliver those before the held one
    others = [n for n in _all_names(1) if n != "a1"]
    res = _run_planted(1, lambda ref: HoldBack(ref, others, depends_on_held))
    assert sites_sim.CAUSAL in res.kinds(), res.summary()


def test_planted_safe_without_the_global_aru_is_a_safe_violation():
    def ignore_aru(name, gateway):
        for stream in gateway.streams.values():
            stream.stable_aru = 1 << 60  # as if every site held everything
    # (seed 2: on seed 1 the fault now stalls the view change after the kill first)
    res = _run_planted(2, on_start=ignore_aru)
    assert sites_sim.SAFE in res.kinds(), res.summary()


def test_planted_lost_message_is_a_loss_violation():
    dropped = []

    def drop_one(ref):
        def flt(name, outputs):
            i = _first_deliver(outputs)
            if name == "c1" and i is not None and not dropped:
                dropped.append(outputs.pop(i))
            return outputs
        return flt
    res = _run_planted(1, drop_one)
    assert sites_sim.LOSS in res.kinds(), res.summary()


def test_planted_duplicate_and_altered_messages_are_caught():
    def twice(ref):
        def flt(name, outputs):
            i = _first_deliver(outputs)
            if name == "a2" and i is not None:
                outputs.insert(i, outputs[i])
            return outputs
        return flt

    def altered(ref):
        def flt(name, outputs):
            i = _first_deliver(outputs)
            if name == "c1" and i is not None:
                m = outputs[i].msg
                outputs[i] = sr.Deliver(sr.DaemonMessage(m.kind, m.origin, m.sender, m.service_type,
                                                         m.groups, data=m.data[:8] + b"forged"))
            return outputs
        return flt
    assert sites_sim.DUPLICATE in _run_planted(1, twice).kinds()
    assert sites_sim.FOREIGN in _run_planted(1, altered).kinds()


# ---- a whole site lost, a representative killed ------------------------------------------------

KILL_SEED = 1  # three sites; every daemon of site 1 is killed while messages flow
REP_SEED = 10  # site 1's representative is killed while messages flow


def test_a_killed_site_is_left_out_by_every_survivor_within_3_s_with_a_transitional_view():
    sim = sites_sim.SitesSim(KILL_SEED)
    res = sim.run()
    assert res.violations == [], res.summary()
    lost = sim.case.site_kill
    for name, node in sim.live().items():
        kinds = [(kind, sites) for kind, _, sites, _, _ in node.views if kind != sites_sim.JOINED]
        survivors = tuple(s for s in range(len(sim.case.sites)) if s != lost)
        assert kinds == [(sr.CONF_TRANSITIONAL, survivors), (sr.CONF_REGULAR, survivors)], (name, kinds)
        installed_at = node.views[-1][4]
        # simulated time (the protocol's bound, not the machine's speed): the issue's target
        assert installed_at - sim.kill_at < 3.0, (name, installed_at - sim.kill_at)


@pytest.mark.parametrize("seed", [548, 256])
def test_a_representative_taking_over_in_a_third_site_still_leaves_a_killed_site_out_within_3_s(seed):
    """A mesh of three: site 2 killed, and site 0's representative killed 0.95 s (548) or
    0.21 s (256) later, before or after its link to site 2 fell silent; in 256 it also comes
    back and takes over again, with the state of its ring. The new representative counts site
    2's silence from its last record in its ring (its link's silence, not a fresh one), and
    keeps the link its site reported down reported, so site 1 never routes through it."""
    sim = sites_sim.SitesSim(seed)
    case = sim.case
    assert (case.site_kill, case.rep_crash_site, len(case.sites)) == (2, 0, 3)
    assert 0 < case.rep_crash_after_s - case.site_kill_after_s < 1.0
    res = sim.run()
    assert res.violations == [], res.summary()
    # simulated time (the protocol's bound, not the machine's speed): the issue's target
    assert res.stats["view_after_kill_s"] < 3.0, res.summary()


def test_three_sites_of_one_daemon_leave_a_killed_one_out_without_a_successors_grace():
    """The thesis's topology: nobody can take over from a site of one daemon, so the others
    suspect it SITE_HELLO_WAIT_S after its link's silence, not SITE_GRACE_S."""
    sim = sites_sim.SitesSim(308)
    case = sim.case
    assert [len(s) for s in case.sites] == [1, 1, 1] and case.site_kill == 2
    res = sim.run()
    assert res.violations == [], res.summary()
    waits = []
    for name in ("a1", "b1"):
        gw = sim.nodes[name].gateway
        assert any("(nobody there can take over)" in line for line in gw.log), name
        over = [float(line.split()[0]) for line in gw.log if "HOP link to c1 (site 2) is over" in line]
        suspected = [float(line.split()[0]) for line in gw.log if "suspected gone" in line]
        if over and suspected:
            waits.append(suspected[0] - over[0])
    # simulated time (the protocol's bound, not the machine's speed): the first suspicion
    # came SITE_HELLO_WAIT_S after its link's death, not a successor's grace (read in the
    # logs: the view's time alone would not tell them apart with a grace close to the wait)
    assert waits and min(waits) == pytest.approx(sr.SITE_HELLO_WAIT_S, abs=0.01), waits
    assert sr.SITE_HELLO_WAIT_S < sr.SITE_GRACE_S
    assert res.stats["view_after_kill_s"] < sr.HopSettings().peer_silence_s + sr.SITE_HELLO_WAIT_S + 0.3, res.summary()


def test_a_link_in_its_grace_is_waited_for_from_its_report_not_a_grace_more():
    """A mesh of three: site 1 (three daemons) killed; both survivors' links to it die
    together, and site 2's representative dies 1.3 s after the kill. Site 0's grace ends
    while site 2's link to 1 is still reported in its grace: site 0 waits until that grace
    is over (from where its report came), not a whole grace more (3.12 s before)."""
    sim = sites_sim.SitesSim(1299)
    case = sim.case
    assert (case.site_kill, case.rep_crash_site, len(case.sites[1])) == (1, 2, 3)
    res = sim.run()
    assert res.violations == [], res.summary()
    assert res.stats["view_after_kill_s"] < 3.0, res.summary()


def test_a_takeover_after_its_predecessor_said_hello_to_a_killed_site_waits_only_a_round_trip_more():
    """Seed 1834, a mesh of three: site b (one daemon) killed; a's representative a1 reports
    its link to b down at 1.63 s and says HELLO there, and dies 0.4 s before its wait is over;
    a1, restarted, takes its ring's state and takes over 1.5 s later. It counts its
    predecessor's HELLO wait from that LINKS report (the state carries when, as an age) and
    waits SITE_TAKEOVER_HELLO_S for its own HELLO: b is left out 2.85 s after the kill, not
    3.15 s (the whole SITE_HELLO_WAIT_S again after the takeover; 2.76 against 3.06 s before
    the epochs were passed on at a link's start, which moved this seed's timing)."""
    sim = sites_sim.SitesSim(1834)
    case = sim.case
    assert (case.site_kill, case.rep_crash_site, [len(s) for s in case.sites]) == (1, 0, [3, 1, 3])
    res = sim.run()
    assert res.violations == [], res.summary()
    assert res.stats["view_after_kill_s"] < 3.0, res.summary()  # the target; 3.15 s without the rule



#: a representative handed over to a daemon that joined its ring (restarted, or a fork's
#: daemon where the rings meet) while it said HELLO to a killed site: the successor's wait
#: counts from its predecessor's first HELLO (asked_ages in the state). Before: 4.10 s (20596:
#: b killed 3 ms in, never heard, a whole silence and grace afresh), 3.01 s (20768), 3.17 s
#: (109 --lan-splits --groups --client-views); now 2.80, 2.66, 2.69 s
HANDOVER_KILL_SEEDS = [(20596, {}), (20768, {}),
                       (109, dict(lan_splits=True, groups=True, client_views=True))]


@pytest.mark.parametrize("seed,mix", HANDOVER_KILL_SEEDS)
def test_a_handover_while_a_killed_site_is_asked_for_keeps_the_predecessors_wait(seed, mix):
    sim = sites_sim.SitesSim(seed, **mix)
    res = sim.run()
    assert res.violations == [], res.summary()
    handed = sum(n.gateway.counters["site_hello_waits_handed_over"] for n in sim.nodes.values())
    assert handed, "no handover used its predecessor's HELLO: the seed no longer has its case"
    assert res.stats["view_after_kill_s"] < 3.0, res.summary()


#: seeds of the kill -> view tail (s17-tail) and the counter that says their case ran: a
#: link's end asked again on an answer of a newer session (103981), a takeover that counted a
#: never-heard site from its predecessor's start (103339); 3.34 and 3.65 s before; and
#: (s18-tail) a takeover that dated a site's last records at its ring's end, not at the
#: recovery that delivered them (112077, 3.34 s before); (s20-tail) a resend that queued a
#: backlog again behind the same backlog still on its way on a slow link (223230: c1 75
#: messages to b2, b2 63 to c1, each twice; 3.51 s before); (s21-tail) a link's end asked
#: again on the peer's data of a newer session, its answer lost where HELLOs crossed at a
#: takeover (250658: b1's end dropped a1's packets, a1's PROPOSE among them, until its silence
#: rule; 3.32 s before), and a site suspected at once when its HELLO says its view leaves us
#: out (253358: c1, taking over, waited out its HELLO wait for b; 3.06 s before)
TAIL_KILL_SEEDS = [(103981, "hop_links_asked_again"), (103339, "site_hello_waits_from_the_predecessors_start"),
                   (112077, "site_records_dated_at_ring_end"), (223230, "site_records_on_their_way"),
                   (250658, "hop_links_asked_again_on_data"), (253358, "site_left_us_out_suspected_at_once")]


@pytest.mark.parametrize("seed,counter", TAIL_KILL_SEEDS)
def test_a_killed_site_is_left_out_without_the_tails_needless_waits(seed, counter):
    sim = sites_sim.SitesSim(seed)
    res = sim.run()
    assert res.violations == [], res.summary()
    assert sum(n.gateway.counters[counter] for n in sim.nodes.values()), \
        "%s never ran: the seed no longer has its case" % counter
    assert res.stats["view_after_kill_s"] < 3.0, res.summary()


#: a resend's backlog queued twice on one link (SiteGateway._on_the_way), seeds above 3 s
#: still for a second fault (s20-tail): the view without the killed site, in simulated time,
#: after the kill before the fix and the bound now. 221367: b2 and a1 (a's representative)
#: killed in the window, b1 queued 153 messages (58 KB at 0.9 Mbit/s) for a2 at the LINKS
#: change and again at the decision; a2 had b's ARU, and its view, behind both
RESENT_TWICE_SEEDS = [(221367, 3.83, 3.4), (224489, 3.57, 3.3)]


@pytest.mark.parametrize("seed,before_s,bound_s", RESENT_TWICE_SEEDS)
def test_a_resend_does_not_queue_again_what_is_on_its_way(seed, before_s, bound_s):
    sim = sites_sim.SitesSim(seed)
    res = sim.run()
    assert res.violations == [], res.summary()
    assert sum(n.gateway.counters["site_records_on_their_way"] for n in sim.nodes.values()), \
        "no resend met its own backlog on its way: the seed no longer has its case"
    assert res.stats["view_after_kill_s"] < bound_s < before_s, res.summary()


def test_the_kill_to_view_time_counts_a_forks_daemon_at_the_view_it_joined():
    """A fork's daemon that takes the kept side's state (its clients get the view there, by the
    REJOIN) has the view without the killed site then, not at its next REGULAR view (seeds 61
    and 247 --lan-splits --groups --client-views read 3.80 and 3.44 s for 2.54 and 2.41 s)."""
    sim = sites_sim.SitesSim(61, lan_splits=True)
    node = next(iter(sim.nodes.values()))
    lost = sim.case.site_kill
    others = tuple(s for s in range(len(sim.case.sites)) if s != lost)
    node.views = [(sr.CONF_TRANSITIONAL, 0, (others[0],), 0, 2.69),
                  (sites_sim.JOINED, 1, others, 0, 2.70),
                  (sr.CONF_TRANSITIONAL, 2, others, 0, 3.96), (sr.CONF_REGULAR, 2, tuple(range(3)), 0, 3.96)]
    assert sim.view_without_killed_site_at(node) == pytest.approx(2.70)
    # a view joined with the killed site still in it is not that view
    node.views[1] = (sites_sim.JOINED, 1, tuple(range(3)), 0, 2.70)
    assert sim.view_without_killed_site_at(node) == pytest.approx(3.96)
    node.views = [(sr.CONF_TRANSITIONAL, 1, others, 0, 2.5), (sr.CONF_REGULAR, 1, others, 0, 2.5)]
    assert sim.view_without_killed_site_at(node) == pytest.approx(2.5)


def test_a_site_that_dies_after_the_view_change_is_decided_is_left_out_by_the_next_one():
    """Seed 2192: site 1 killed, then site 2 killed 2.14 s later, after a1 decided view 1 (sites
    0 and 2) and before site 2's stream reached that view's limit. a1 agrees on view 2 meanwhile
    (alone), installs view 1 as decided, then view 2 at once; view 1's transitional view names
    only a1's site (what it delivers there is not owed at site 2). (Seed 320 drew it until the
    epochs passed on at a link's start moved its timing; it stays a regression seed above.)"""
    sim = sites_sim.SitesSim(2192)
    assert (sim.case.site_kill, sim.case.second_kill) == (1, 2)
    res = sim.run()
    assert res.violations == [], res.summary()
    views = [(kind, seq, sites) for kind, seq, sites, _, _ in sim.nodes["a1"].views]
    assert views == [(sr.CONF_TRANSITIONAL, 1, (0,)), (sr.CONF_REGULAR, 1, (0, 2)),
                     (sr.CONF_TRANSITIONAL, 2, (0,)), (sr.CONF_REGULAR, 2, (0,))], views
    assert any("view 1 is installed first: sites [2] of it died" in line for line in res.log_lines)


def test_a_killed_representative_is_replaced_and_its_site_stays():
    sim = sites_sim.SitesSim(REP_SEED, case=dataclasses.replace(sites_sim.case_for_seed(REP_SEED),
                                                                 restart_name=None))
    assert sim.case.rep_crash_after_s is not None and sim.case.site_kill_after_s is None
    res = sim.run()
    assert res.violations == [], res.summary()
    site = sim.case.rep_crash_site
    new_rep = sim.case.sites[site][1]
    assert sim.nodes[new_rep].gateway.is_representative()
    assert all(not node.views for node in sim.live().values())  # no view change: same sites
    assert sim.nodes[new_rep].gateway.counters["hellos_sent"] > 0
    peers = [n for n in sim.live().values() if n.gateway.is_representative() and n is not sim.nodes[new_rep]]
    assert any(link.peer[0] == new_rep for n in peers for link in n.gateway.links.values())


def test_a_killed_representative_started_again_is_brought_up_to_date_and_represents_its_site():
    sim = sites_sim.SitesSim(REP_SEED)  # the representative comes back 0.3-3 s after its kill
    rep = sim.case.sites[sim.case.rep_crash_site][0]
    assert sim.case.restart_name == rep and sim.case.restart_kill_after_s is None
    res = sim.run()
    assert res.violations == [], res.summary()
    again = sim.nodes[rep]
    assert again.restarted and again.sites.synced and again.sites.syncs_installed == 1
    assert again.gateway.is_representative() and again.delivered
    assert any("waits for the sites' state" in line for line in again.gateway.log)
    peers = [n for n in sim.live().values() if n.gateway.is_representative() and n is not again]
    assert all(link.peer[0] == rep for n in peers for link in n.gateway.links.values())


RESTART_SEED = 41  # a2 of three sites is killed and started again; 83 messages wait in its state


def test_restarted_daemons_in_the_soak_seeds_keep_every_guarantee():
    seeds = [seed for seed in range(1, 120) if sites_sim.case_for_seed(seed).restart_name][:12]
    for seed in seeds:
        res = sites_sim.run_seed(seed)
        assert res.violations == [] and res.stats.get("restarts", 0) >= 1, (res.summary(),
                                                                         sites_sim.replay_command(seed))


def test_planted_message_lost_from_a_restarted_daemons_state_is_a_loss_violation(monkeypatch):
    real = sr.SiteGateway.import_state

    def lossy(self, state, now):
        real(self, state, now)
        for stream in self.streams.values():
            if len(stream.ordered) > 1:
                del stream.ordered[1]  # the state came without one waiting message
                return
    monkeypatch.setattr(sr.SiteGateway, "import_state", lossy)
    res = sites_sim.run_seed(RESTART_SEED)
    assert sites_sim.LOSS in res.kinds(), res.summary()


def test_planted_view_never_installed_is_a_view_violation():
    def stuck(name, gateway):
        if name == "a1":
            gateway._install_view = lambda: None
    res = _run_planted(KILL_SEED, on_start=stuck)
    assert sites_sim.VIEW in res.kinds(), res.summary()


def test_planted_message_moved_across_the_transitional_view_is_a_virtual_synchrony_violation():
    """At one survivor, every delivery is held until the next output: the last message of the
    old view's regular part comes after the TRANSITIONAL view there, and only there."""
    def late(ref):
        held = []

        def flt(name, outputs):
            if name != "a1":
                return outputs
            out = []
            for o in outputs:
                if isinstance(o, sr.Deliver):
                    out += held
                    held[:] = [o]
                elif isinstance(o, sr.SiteViewChange):
                    out.append(o)
                    out += held
                    held[:] = []
                else:
                    out.append(o)
            return out
        return flt
    res = _run_planted(KILL_SEED, late)
    assert sites_sim.VIRTUAL_SYNCHRONY in res.kinds(), res.summary()


CUT_SEED = 43  # a line a - b - c; the b - c link is cut for good while messages flow


def test_a_cut_link_splits_the_sites_into_two_views_and_each_goes_on():
    case = sites_sim.case_for_seed(CUT_SEED)
    case.heal_after_s = None  # cut for good
    sim = sites_sim.SitesSim(CUT_SEED, case=case)
    assert sim.case.cut_pair == (1, 2) and sim.case.site_kill_after_s is None
    res = sim.run()
    assert res.violations == [], res.summary()
    for name, node in sim.live().items():
        expected = (0, 1) if sim.site_of[name] in (0, 1) else (2,)
        assert node.views[-1][:3] == (sr.CONF_REGULAR, 1, expected), (name, node.views)
    # messages sent on each side after the cut are delivered on that side only
    after = [s for s, sub in sim.submitted.items() if sub[4] > sim.stats["formed_at_s"] + sim.case.cut_after_s]
    assert after
    for serial in after:
        origin_side = {0, 1} if sim.site_of[sim.submitted[serial][2]] in (0, 1) else {2}
        for name, node in sim.live().items():
            assert (serial in node.position) == (sim.site_of[name] in origin_side)


MESH_CUT_SEED = 2  # three sites in a mesh; the a - b link is cut 0.5 s in


def _mesh_cut_sim(heal_after_s):
    case = sites_sim.case_for_seed(MESH_CUT_SEED)
    assert len(case.sites) == 3 and all(c > 0 for i, row in enumerate(case.costs) for j, c in enumerate(row) if i != j)
    case.cut_pair, case.cut_after_s = (0, 1), 0.5
    case.cut_site = case.cut_for_good = None  # (the seed draws a merge through a third site)
    case.site_kill_after_s = case.rep_crash_after_s = None
    case.heal_after_s = heal_after_s
    return sites_sim.SitesSim(MESH_CUT_SEED, case=case)


def test_a_cut_link_in_a_mesh_is_routed_around_and_the_sites_stay_in_one_view():
    """Three sites in a mesh, the a - b link cut for good (before routing around a dead
    link, a and b each left the other out and the sites ended split: the 'view' and 'no
    loss' checkers complained). Now a and b find each other reachable through c, report
    their link down (LINKS), and every site's trees go through c: no view change at all,
    every message everywhere, and every guarantee checked."""
    sim = _mesh_cut_sim(None)
    res = sim.run()
    assert res.violations == [], res.summary()
    # the run may end (all delivered) inside the dead link's grace: go on past it
    sim.run_until(sim.now + 2 * sr.SITE_GRACE_S)
    for name, node in sim.nodes.items():
        assert node.views == [], (name, node.views)  # one view from start to end
    for name in sim.case.sites[2]:
        g = sim.nodes[name].gateway
        assert g.link_reports[0][1] == {1} and g.link_reports[1][1] == {0}
        assert g.trees[0].parent[1] == 2 and g.trees[1].parent[0] == 2  # a -> c -> b, b -> c -> a
    rep_a = sim.nodes[sim.case.sites[0][0]].gateway
    assert rep_a.routed_around == {1} and rep_a.suspect_sent == 0


def test_a_cut_link_that_comes_back_brings_the_trees_back_to_it():
    """The same cut, healed 3 s later (after the link's silence rule and its grace): the link
    starts again, LINKS says so, and a's messages go to b on the direct link again."""
    sim = _mesh_cut_sim(3.0)
    res = sim.run()
    assert res.violations == [], res.summary()
    for name, node in sim.nodes.items():
        assert node.views == [], (name, node.views)
        g = node.gateway
        assert g.link_reports[0][1] == frozenset() and g.link_reports[1][1] == frozenset()
        assert g.trees[0].parent[1] == 0 and g.trees[1].parent[0] == 1
    assert any("routed around" in line for line in res.log_lines)


def test_a_link_cut_after_a_merge_between_two_sites_of_one_old_view_is_routed_around():
    """Mesh of three (seed 2's sites): c cut off 0.5 s in, healed 3 s later, the views {a, b}
    and {c} merge; 2.5 s after the heal the a - b link is cut for good. a and b each find the
    other reachable through c ('routed around': no suspicion, no view change). The merged
    view's trees send a's records to the sites of a's old view through those sites only
    (merged_view_trees); with a - b cut no such path is left, and b was unreachable in a's
    tree: c never forwarded a's records to b nor b's to a, and the order stopped at a and b
    for good (5 "no loss" violations; found 2026-12-07, branch s17-figures; with real daemons
    in namespaces tests/test_sites_route_real.py failed this way when a loaded machine started
    site 3's daemon 1.5-2 s before the others). Now a site that no path within its old view
    reaches is reached through the other side: c relays. The core test is
    test_after_a_merge_a_link_cut_between_two_sites_of_one_old_view_is_routed_through_the_other_side."""
    case = sites_sim.case_for_seed(MESH_CUT_SEED)
    case.cut_site, case.cut_after_s, case.heal_after_s, case.cut_for_good = 2, 0.5, 3.0, None
    case.site_kill_after_s = case.rep_crash_after_s = case.merge_kill_after_s = None
    case.recut_after_s = case.restart_name = case.lan_split_after_s = None
    case.merge_cut_pair, case.merge_cut_after_s, case.merge_cut_for_s = (0, 1), 2.5, None  # (--cut-after-merge's)
    sim = sites_sim.SitesSim(MESH_CUT_SEED, case=case)
    res = sim.run()
    assert sim.stats["merge_cuts_installed"] == 1  # (every daemon had the merged view at the cut)
    # the case ran as meant: one merged view of the three sites, then a and b routed round
    for name, node in sim.nodes.items():
        assert node.views[-1][:3] == (sr.CONF_REGULAR, 2, (0, 1, 2)), (name, node.views)
    assert sim.nodes[sim.case.sites[0][0]].gateway.routed_around == {1}
    assert sim.nodes[sim.case.sites[1][0]].gateway.routed_around == {0}
    assert res.violations == [], res.summary()
    for name in sim.case.sites[2]:
        g = sim.nodes[name].gateway
        assert g.trees[0].parent.get(1) == 2 and g.trees[1].parent.get(0) == 2, g.trees


#: --cut-after-merge seeds whose cut for good fell while a merge was being installed (the
#: merge decided, the old view's last messages not yet across): a link between the two
#: sites of one old view cut, the joined site relaying none of their old-view records, and
#: nobody suspected; neither end ever installed the merge. Now the lower id leaves the other
#: out, chained after the merge, and the other learns it from a HELLO of the joined site's
#: next view and goes on alone (SiteGateway._cut_within_old_view, _left_out_after_our_merge);
#: 826 and 1957 are two more of the 22 the draw failed (1957's cut came before the merge
#: began: decided with the link down already, the same stall). 1467 and 1789 passed before: they
#: failed with the lower id's suspicion at the link's grace (the cut came back 2 s and 0.5 s
#: later), which SITE_CUT_WITHIN_WAIT_S waits out
CUT_AFTER_MERGE_REGRESSION_SEEDS = [4, 177, 826, 1467, 1789,
                                    # (session 20, s20-cut: the 8 the draw failed on 9104702)
                                    609, 1191, 1430, 1675, 1762, 1819, 1957, 1958,
                                    # (session 21, s21-relay: the fresh draw's 3, --first 2001)
                                    3231, 3720, 3743,
                                    # (session 21: spun at one instant on s21-tail's code)
                                    2094,
                                    # (session 22: s22-held's first version sent a joined site's
                                    # held messages ahead of those still in the gate)
                                    920]
# 609, 1430, 1675, 1957, 1958: the lower id left the other end out, chained after the merge,
# and lacked that end's last old-view messages, which no survivor held (the joined site's
# stream of it starts at the merge): they are skipped (_skip_old_view_records_nobody_holds).
# 1762, 1819: the same cut, but the lower id had installed the merge: it leaves the other out
# then too (_cut_within_old_view). 1191: a READY lost on the cut link, its sender merging the
# next view when the link came back (_resend: merged_readies). 3231, 3720, 3743 (`--seeds 2000
# --first 2001 --cut-after-merge-only`): failed on 9104702 ("no loss" at a1: 7, 15 and 7
# violations), pass through the same skip (s20-cut); each still pays the 5 s wait, a view change
# and a merge (7.6-8.5 s from the heal to the merged view): no relay by the joined site (s21-relay).
# 2094: with s21-tail's rules its trajectory moved, and _cut_within_old_view's "now - down >= 5 s"
# was false at the very deadline "down + 5 s" it set (floating point): the deadline came due again
# at once, for ever (the simulator now fails such a run: "progress", SPIN_EVENTS_MAX).


@pytest.mark.parametrize("seed", CUT_AFTER_MERGE_REGRESSION_SEEDS)
def test_cut_after_merge_seeds_that_once_failed(seed):
    res = sites_sim.run_seed(seed, cut_after_merge=True)
    assert res.stats["merge_cuts"] == 1  # (the draw still cuts a link after the heal)
    assert res.violations == [], "%s\nreplay: %s" % (res.summary(), sites_sim.replay_command(
        seed, cut_after_merge=True))


# Window 1 of the relay round a cut (s22-relay, taken back): seed, x, y, x's merge base (x's
# last message of the old view), y's representative and when it died (the instant the joined
# site relayed y's frontier to x, as it did with the relay).
LOST_WITH_THE_REPRESENTATIVE = [(177, 1, 2, 45, "c1", 4.0637), (469, 1, 2, 18, "c1", 3.4245)]


@pytest.mark.parametrize("seed, x, y, base, rep, dead_s", LOST_WITH_THE_REPRESENTATIVE)
def test_a_cut_pairs_message_lost_with_the_representative_that_counted_it(seed, x, y, base, rep, dead_s):
    """Seeds 177 and 469 --cut-after-merge, planted: the x - y link (old view {x, y}) dies while
    the merge with the third site j is installed; y's representative put x's last old-view
    message into y's ring (its HELLO to j counted it: _positions) and died before the ring
    delivered it (the record dropped where it was submitted), so y never gets it. With the relay
    of s22-relay (j passed y's frontier to x, the HELLO saying both held the other's old view)
    x installed the merge with y in its transitional configuration: "no loss" at y's survivor,
    one violation in each seed. Without it, y leaves x out after the wait and nothing is lost.
    A relay round a cut must not trust an end's HELLO positions for what its ring holds."""
    dropped = []

    def lose_at_submission(name, gateway):
        if name != rep:
            return
        submit = gateway._submit_records

        def submit_but_lose(batch):
            kept = [r for r in batch if not (r.kind == sr.SITE_MSG and r.site == x and r.site_seq == base)]
            dropped.extend(r for r in batch if r not in kept)
            if kept:
                submit(kept)
        gateway._submit_records = submit_but_lose

    sim = sites_sim.SitesSim(seed, cut_after_merge=True, on_start=lose_at_submission)
    sim.push(dead_s + 0.001, "crash", rep)
    res = sim.run()
    assert len(dropped) == 1 and sim.nodes[rep].crashed_at is not None
    assert res.violations == [], res.summary()
    survivor = [n for n in sim.case.sites[y] if n != rep][0]
    assert sim.nodes[survivor].gateway.applied_seq[x] < base  # (y never held it: its stream of x stops)


def test_a_site_left_out_after_its_decided_merge_goes_on_alone():
    """Seed 4 --cut-after-merge, the mechanism: b cut off and healed, a and c (old view {a, c})
    decide merge view 2, and the a - c link dies for good before they install it. a, the lower
    id, leaves c out in view 3, chained after the merge (b agrees); c, left out by b's view 3,
    installs view 2 and then view 3 of its own alone, and the next probe merges all three."""
    sim = sites_sim.SitesSim(4, cut_after_merge=True)
    res = sim.run()
    assert res.violations == [], res.summary()
    a1, c1 = sim.nodes["a1"], sim.nodes["c1"]
    views = lambda node: [v[:3] for v in node.views if v[0] == sr.CONF_REGULAR]
    assert views(a1)[1:4] == [(sr.CONF_REGULAR, 2, (0, 1, 2)), (sr.CONF_REGULAR, 3, (0, 1)),
                              (sr.CONF_REGULAR, 4, (0, 1, 2))], views(a1)
    assert views(c1)[1:4] == [(sr.CONF_REGULAR, 2, (0, 1, 2)), (sr.CONF_REGULAR, 3, (2,)),
                              (sr.CONF_REGULAR, 4, (0, 1, 2))], views(c1)
    assert c1.gateway.counters["hellos_left_out_after_our_merge"] >= 1
    assert any("went on without us after the merge" in line for line in res.log_lines)


def _regular_views(node):
    return [v[:3] for v in node.views if v[0] == sr.CONF_REGULAR]


def test_a_dead_sites_old_view_messages_that_no_survivor_holds_are_skipped():
    """Seed 609 --cut-after-merge: b cut off and healed; the a - c link (old view {a, c}) cut
    for good 26 ms after the heal, before the merge began, with c's record 20, its last of
    the old view, on the wire. a and c decided merge view 2 with b; a, the lower id, left c
    out 5 s later (view 3, chained after the merge). a held c's stream up to 19; b's stream of
    c starts at 21 (the merge), so nobody held 20 and a waited for it for ever (view 2 never
    installed, b waiting for a's ARU). Now a and a2 go on from c's merge base alike."""
    sim = sites_sim.SitesSim(609, cut_after_merge=True)
    res = sim.run()
    assert res.violations == [], res.summary()
    for name in ("a1", "a2"):
        g = sim.nodes[name].gateway
        assert g.counters["old_view_records_held_by_no_survivor"] == 1, (name, g.counters)
        assert _regular_views(sim.nodes[name])[1:4] == [
            (sr.CONF_REGULAR, 2, (0, 1, 2)), (sr.CONF_REGULAR, 3, (0, 1)), (sr.CONF_REGULAR, 4, (0, 1, 2))]
    assert any("site 2's old-view messages 20..20: held by no survivor, skipped" in line
               for line in res.log_lines)


def test_after_a_skipped_hole_the_old_views_regular_part_ends_at_our_frontier_of_that_site():
    """Seed 1430 --cut-after-merge, the same hole (c's record 8): a's own old-view messages
    sent after the cut, which c never had, went into the old view's regular part {a, c} as
    SAFE (c's ARU, said in its own view 2 that had left a out, passed them). Past our frontier
    of c lies the hole: the regular part ends there, and they go in view 2's transitional part,
    {a} alone, as EVS asks."""
    sim = sites_sim.SitesSim(1430, cut_after_merge=True)
    res = sim.run()
    assert res.violations == [], res.summary()
    a1 = sim.nodes["a1"]
    assert a1.gateway.counters["old_view_records_held_by_no_survivor"] == 1
    assert (sr.CONF_TRANSITIONAL, 2, (0,)) in [v[:3] for v in a1.views]
    assert [s for s in a1.delivered if a1.delivered_in[s] == (0,)], "nothing after TRANSITIONAL"


def test_the_lower_id_leaves_out_a_site_of_its_old_view_cut_off_after_it_installed_the_merge():
    """Seed 1819 --cut-after-merge: c cut off and healed, the a - b link (old view {a, b}) cut
    for good 0.23 s after the heal. a installed merge view 2 (it lacked nothing), b (b1 dead,
    b2 alone) decided it but lacked a's last old-view messages: c's stream of a starts at the
    merge, and the trees go round only once b said an ARU of the merge's limit, which it never
    could. Now a leaves b out (view 3) 5 s after its link died, as while installing; b learns
    it from c's HELLO, goes on alone, and the next probe merges the three."""
    sim = sites_sim.SitesSim(1819, cut_after_merge=True)
    res = sim.run()
    assert res.violations == [], res.summary()
    assert _regular_views(sim.nodes["a1"])[1:4] == [
        (sr.CONF_REGULAR, 2, (0, 1, 2)), (sr.CONF_REGULAR, 3, (0, 2)), (sr.CONF_REGULAR, 4, (0, 1, 2))]
    assert _regular_views(sim.nodes["b2"])[1:4] == [
        (sr.CONF_REGULAR, 2, (0, 1, 2)), (sr.CONF_REGULAR, 3, (1,)), (sr.CONF_REGULAR, 4, (0, 1, 2))]


def test_a_ready_lost_on_a_cut_link_is_resent_while_its_sender_merges_the_next_view():
    """Seed 1191 --cut-after-merge: site c forked (c2 c3, a new incarnation) and merged view 3
    with b; b installed it, and its READY to c was lost on the b - c link, cut 0.73 s after
    the heal for 1.3 s. When the link came back b was merging the next view with a, and sent
    the READYs of its last merge only when merging nothing: c2 waited for it for ever."""
    sim = sites_sim.SitesSim(1191, cut_after_merge=True)
    res = sim.run()
    assert res.violations == [], res.summary()
    for name in ("c2", "c3"):
        assert (sr.CONF_REGULAR, 3, (1, 2)) in _regular_views(sim.nodes[name]), name


def test_a_second_site_suspected_while_the_first_suspicion_crosses_the_ring_is_not_forgotten(monkeypatch):
    """A line a - b - c: the a - b link cut, then site c killed 130 ms later (seed 41181's
    case, found by a soak). b's suspicion of c fires while its SUSPECT of a still goes round
    b's ring; it must wait for it and then name both, else b proposes a view with c in it and
    waits for c's PROPOSE for ever. (c was killed 30 ms after the cut until the timings moved:
    on main at SITE_GRACE_S 1.0 s b suspected c 0.48 s before a, and at 0.6 s 78 ms before;
    130 ms puts c's suspicion 40 ms after a's. Pinned at 0.6 s, the window is 0.12-0.14 s.)
    A regression only: the cause is planted, timings aside, in tests/test_sites_core.py
    (test_a_second_site_suspected_while_our_suspect_of_the_first_crosses_the_ring_...)."""
    monkeypatch.setattr(sr, "SITE_GRACE_S", 0.6)
    case = sites_sim.case_for_seed(41181)
    assert case.cut_pair == (0, 1) and case.site_kill == 2 and case.costs[0][2] == 0
    case.site_kill_after_s = case.cut_after_s + 0.13
    case.heal_after_s = case.site_restart_after_s = None
    sim = sites_sim.SitesSim(41181, case=case)
    res = sim.run(drain_max_s=8.0)
    assert res.violations == [], res.summary()
    # the race ran: b's suspicion of c waited for its SUSPECT of a (not a vacuous pass)
    assert sim.nodes["b1"].gateway.counters["site_suspects_waiting"] >= 1
    for name in sim.case.sites[1]:
        assert sim.nodes[name].views[-1][:3] == (sr.CONF_REGULAR, 2, (1,)), sim.nodes[name].views


# ---- a partition that heals: the views merge ---------------------------------------------------

HEAL_SEED = 79  # a line a - b - c; the a - b link is cut for 2 s, then comes back


def test_a_healed_partition_merges_the_views_and_the_order_resumes_across_them():
    sim = sites_sim.SitesSim(HEAL_SEED)
    case = sim.case
    assert case.cut_pair == (0, 1) and case.heal_after_s is not None
    assert case.site_kill_after_s is None and case.rep_crash_after_s is None
    res = sim.run()
    assert res.violations == [], res.summary()
    everyone = tuple(range(len(case.sites)))
    for name, node in sim.nodes.items():
        side = (0,) if sim.site_of[name] == 0 else (1, 2)
        kinds = [(kind, sites) for kind, _, sites, _, _ in node.views if kind != sites_sim.JOINED]
        # the partition's view, then the merge: TRANSITIONAL with the sites it came with
        assert kinds == [(sr.CONF_TRANSITIONAL, side), (sr.CONF_REGULAR, side),
                         (sr.CONF_TRANSITIONAL, side), (sr.CONF_REGULAR, everyone)], (name, kinds)
    merged_at = max(node.views[-1][4] for node in sim.nodes.values())
    cut_at = sim.stats["formed_at_s"] + case.cut_after_s
    healed_at = cut_at + case.heal_after_s
    after = [s for s, sub in sim.submitted.items() if sub[4] > merged_at]
    during = [s for s, sub in sim.submitted.items() if cut_at < sub[4] < healed_at]
    assert after and during
    for name, node in sim.nodes.items():
        assert all(s in node.position for s in after)  # the merged view: every site
        side = {0} if sim.site_of[name] == 0 else {1, 2}
        for s in during:  # sent after the cut: on its own side only (EVS: in its own view)
            assert (s in node.position) == (sim.site_of[sim.submitted[s][2]] in side)


def test_planted_merge_never_started_is_a_view_violation():
    def never(name, gateway):
        gateway._request_merge = lambda *args: None
    res = _run_planted(HEAL_SEED, on_start=never)
    assert sites_sim.VIEW in res.kinds(), res.summary()


class _NoFloor(dict):
    """The merge's limit forgotten: what a site sends to a joined site, and where the joined
    site's stream starts, take the messages of the partition too."""

    def __setitem__(self, key, value):
        super().__setitem__(key, 0)


def test_planted_merge_without_its_limit_is_a_one_view_violation():
    def no_floor(name, gateway):
        gateway.join_after_lts, gateway.join_floor = _NoFloor(), _NoFloor()
        open_stream = gateway.merge.open_stream
        gateway.merge.open_stream = lambda site, lts: open_stream(site, 0)
    # (seed 711: a mesh, a - b cut, healed. Seed 645 showed it until the old view's regular
    # part ended at the lost sites' frontiers (seed 86400): its partition's messages now go
    # in the transitional view and the plant crosses nothing to c there)
    res = _run_planted(711, on_start=no_floor)
    assert sites_sim.ONE_VIEW in res.kinds(), res.summary()


# ---- UNRELIABLE: to every site, best effort ----------------------------------------------------

def test_unreliable_messages_reach_the_other_sites_and_leave_the_order_alone():
    """The ring delivers an UNRELIABLE message outside its order, at each daemon at its own
    moment: it must not take a place in the site's stream (the site's daemons would number
    that stream differently). It crosses as a record of its own: at most once at each daemon
    (the duplicate checker), never altered (foreign), and in a run without a crash or a cut
    nearly always (the HOP links are reliable; a ring may lose it); the ordered messages
    keep every guarantee."""
    home = crossed = owed = crossed_calm = 0
    for seed in (2, 7, 8, 22):
        # (seed 2 draws a merge through a third site since session 10: its case as before,
        # calm; that draw with UNRELIABLE: test_a_merge_through_a_third_site_after_the_...)
        case = dataclasses.replace(sites_sim.case_for_seed(seed), cut_for_good=None, cut_site=None,
                                   cut_after_s=None, heal_after_s=None)
        sim = sites_sim.SitesSim(seed, case=case, services=sites_sim.SERVICES + [sr.UNRELIABLE_MESS])
        res = sim.run()
        assert res.violations == [], res.summary()
        calm = sim.case.rep_crash_after_s is None and sim.case.site_kill_after_s is None \
            and sim.case.cut_after_s is None and sim.case.restart_name is None
        for serial, sub in sim.submitted.items():
            if sub[0] != sr.UNRELIABLE_MESS:
                continue
            for name, node in sim.nodes.items():
                if sim.site_of[name] == sim.site_of[sub[2]]:
                    home += serial in node.unreliable
                else:
                    crossed += serial in node.unreliable
                    crossed_calm += calm and serial in node.unreliable
                    owed += calm
    assert home > 0 and crossed > 0 and crossed_calm > 0.8 * owed > 0, (home, crossed, crossed_calm, owed)



@pytest.mark.parametrize("seed", [19, 32])
def test_a_whole_site_started_again_is_merged_back_as_a_new_incarnation(seed):
    """Every daemon of a site killed and started afresh (a new epoch): the others refuse it as
    a takeover, leave the old incarnation out, then merge the new one (TRANSITIONAL, REGULAR
    with every site), and what its clients send after the merge reaches every daemon."""
    sim = sites_sim.SitesSim(seed)
    case = sim.case
    assert case.site_kill_after_s is not None and case.site_restart_after_s is not None
    res = sim.run()
    assert res.violations == [], "%s\nreplay: %s" % (res.summary(), sites_sim.replay_command(seed))
    back = case.sites[case.site_kill]
    everyone = tuple(range(len(case.sites)))
    refused = sum(n.gateway.counters["hellos_new_incarnation"] for n in sim.nodes.values())
    assert refused > 0
    for name, node in sim.live().items():
        kinds = [(v[0], v[2]) for v in node.views]
        assert kinds[-1] == (sr.CONF_REGULAR, everyone), (name, kinds)
        if name in back:  # it came alone, then merged
            assert (sr.CONF_TRANSITIONAL, (case.site_kill,)) in kinds, (name, kinds)
    after = sim.kill_at + case.site_restart_after_s + sites_sim.SITE_RESTART_TRAFFIC_AFTER_S
    theirs = {s for s, sub in sim.submitted.items() if sub[2] in back and sub[4] > after}
    others = [n for name, n in sim.live().items() if name not in back]
    assert theirs and others and all(theirs <= n.position.keys() for n in others)


def test_a_whole_site_restart_is_drawn_from_its_own_stream():
    """The scenario's draws leave every earlier draw of a seed as it was."""
    drawn = [s for s in range(200) if sites_sim.case_for_seed(s).site_restart_after_s is not None]
    assert 20 < len(drawn) < 80
    case = sites_sim.case_for_seed(840)
    assert (case.sites, case.rep_crash_after_s is not None, case.restart_name) == (
        [["a1", "a2"], ["b1", "b2", "b3"]], True, "b1")


def test_lan_splits_are_drawn_only_when_asked_from_their_own_stream():
    """A site split in two rings with traffic on both (issue 10; the soak's `--lan-splits`) is
    drawn from its own stream, never in the default draws, and it changes nothing else of a
    seed's case."""
    assert all(sites_sim.case_for_seed(s).lan_split_after_s is None for s in range(100))
    case = sites_sim.case_for_seed(1, lan_splits=True)
    assert case.lan_split_apart and dataclasses.replace(
        case, lan_split_after_s=None, lan_split_for_s=0.0, lan_split_apart=()) == sites_sim.case_for_seed(1)


def test_the_simulator_runs_the_daemons_split_quorum_defaults():
    """The soak tests what ships: dynamic voting on in sites of split_quorum_min_daemons (3),
    as the daemon's HopSettings; --lan-splits votes in sites of two as well (its split may cut
    one); split_quorum=False (--no-split-quorum) is the old setting, off. Seed 361 (a1 killed,
    a2 killed in the merge, a1 back: ring a1 a3 against the last ring a2 a3) forks with it."""
    shipped = sr.HopSettings()
    settings = sites_sim.SitesSim(361).hop_settings(0)
    assert (settings.split_quorum, settings.split_quorum_min_daemons) == (
        shipped.split_quorum, shipped.split_quorum_min_daemons) == (True, 3)
    split = sites_sim.SitesSim(361, lan_splits=True).hop_settings(0)
    assert (split.split_quorum, split.split_quorum_min_daemons) == (True, 2)
    assert not sites_sim.SitesSim(361, split_quorum=False).hop_settings(0).split_quorum
    assert sites_sim.run_seed(361).stats.get("site_forks") == 1
    assert "site_forks" not in sites_sim.run_seed(361, split_quorum=False).stats
    assert sites_sim.replay_command(361, split_quorum=False).endswith(" --no-split-quorum")


def test_a_site_split_in_two_rings_keeps_every_guarantee():
    # several seeds, so that a change to the draws elsewhere does not flip it by chance (before
    # dynamic voting and forks, about half of them failed)
    for seed in range(1, 9):
        res = sites_sim.run_seed(seed, lan_splits=True)
        assert res.stats.get("lan_splits") == 1
        assert res.violations == [], "seed %d: %s" % (seed, res.summary())


#: --lan-splits seeds that failed once: a fork's daemon that never delivered a message its
#: ring ordered and its merge still held when it took the kept state (40, 56, 57:
#: SiteGateway.close_fork; at SITE_GRACE_S 0.6 s 57's fork holds none, 40 and 56 still do:
#: test_a_forks_daemon_delivers_its_held_messages_... asserts it on 40); delivered twice what the kept side's records brought after the
#: import (38: delivered_marks outlive it); a ring started afresh beside the kept one read as
#: sharing its numbering (98, 70, 122: lineage); no loss asked of a daemon cut off by the split
#: what the other side delivered meanwhile (154: the checker's split rule, split_off); SAFE
#: asked a fork's daemon that took the kept state for a message stable at its site before it
#: came (153, 177: the checker's rule for a restarted daemon, now for a rejoined one too).
#: After the epochs passed on: a fork's SITES message ordered in the ring it shares with the
#: kept side told the others our site held what it lacked (38 again: _other_incarnation); a
#: merged view that forgot a joined site's epoch was checked against that site's fork's view
#: of the same seq (79: the checker's named_at_views); a fork's view that close_fork ended
#: and the state taken in one poll: the simulator put the rejoin before that view's
#: deliveries, so they counted as the kept view's (103: SitesSim.group_outputs); a LINKS
#: record of the ring before a fork, delivered in the fork's ring after its representative
#: read our links: our site said for ever that its link to a was down, so no tree crossed it
#: after the merge (184: _own_report_delivered). Branch s13-seeds: no loss asked of a daemon
#: restarted after a fork's view closed (7104, 7286) or while it waited for the state (7238)
#: for what that fork delivered as it closed (the checker's same_incarnation: a daemon with no
#: state yet is of the incarnation it takes next); a restarted daemon that lost its commit
#: token started afresh alone, and its state was kept over the running incarnation's (7158:
#: the older epoch is kept, SitesOrderer._kept_rank)
#: 7158: a restarted daemon that started afresh alone beside its running site (the older
#: epoch kept, SitesOrderer._kept_rank). Since the fork-count and fork-client work merged, its
#: timing moved (a3 forks instead) and no seed of 7001..7400 takes that path; the rule is pinned
#: by test_sites_daemon's ..._started_apart_both_with_traffic_go_on_as_one and seed 4408 below
#: 461: c2, a fork of site c alone in its own view, delivered c1's message that the ring where
#: the two rings met ordered before the status round, and again from the kept state it took
#: (SitesOrderer._may_meet_another_ring, `undecided`; test_sites_core's ..._delivers_nothing_that_ring_orders_before_the_point).
#: 840: b2 lacked b3's last packets of the shared ring, so the kept side numbered b2's own
#: messages higher than the fork had; delivered in close_fork, then again from the kept state
#: (_delivered_here: by lts and body; ..._the_kept_side_numbered_higher_is_still_the_one_it_delivered)
#: 74011: a1's fork closed in view 0 with its view 1 half installed (the fork's own SITES
#: message that ended it was dropped with the rest of what the merged ring delivered before
#: the point, branch s15-exploreB; pinned by test_sites_core's ..._own_sites_message_before_...)
#: 74220: b1's message held for the view 1 both proposed went, after b2 forked alone, into b1's
#: stream at view 1's decision and into b2's fork's at its view 2's: one view at b1, another at
#: b2 (failing on 247a8bc; fixed on s15-exploreA by seed 328's rule, 57f75ed: each side takes
#: its own daemons' held messages; test_sites_core's ..._go_to_the_side_of_the_split_...)
#: 190147, 190199: a fork of a split site (b2; a1 a3 in 190199) decided a merge with another
#: site where its ring met the kept one and took that state; its READY went nowhere, and its
#: end of the link started over under the kept epoch. The other site took that for the joiner
#: starting over and waited for the fork's READY for ever, the link alive (views never merge
#: again; 190199 loses messages too). Pinned by test_sites_core's
#: test_a_joiners_peer_starting_over_under_another_epoch_than_our_merge_took_is_refused
LAN_SPLIT_REGRESSION_SEEDS = [40, 56, 57, 38, 154, 98, 70, 122, 153, 177, 79, 103, 184, 7104, 7238, 7286,
                              7158, 461, 840, 74011, 74220, 190147, 190199]


@pytest.mark.parametrize("seed", LAN_SPLIT_REGRESSION_SEEDS)
def test_a_site_split_in_two_rings_regression_seed(seed):
    res = sites_sim.run_seed(seed, lan_splits=True)
    assert res.stats.get("rejoined"), res.summary()  # (a fork's daemon took the kept state)
    assert res.violations == [], "seed %d: %s" % (seed, res.summary())


#: --lan-splits --groups seeds. 125: b1, cut off from b2 and b3, forked; its gate had sent a1,
#: under the old epoch, its own JOIN that their ring never made safe, as site b's third
#: message; a1 then refused the kept side's stream from there (no loss, SAFE). Pinned by
#: test_sites_core's ..._never_made_safe_goes_to_no_site_if_our_ring_forks. 89: as in
#: GROUPS_REGRESSION_SEEDS (the same fork of c3, the checker's). 328: b3 forked while its
#: site's proposal held its own message; b1 b2 delivered it in the view they decided, b3 in
#: its fork's (each side now takes its own daemons' held messages only: test_sites_core's
#: test_messages_held_for_our_proposal_go_to_the_side_of_the_split_their_daemon_is_on)
#: 71302: c3 forked alone;
#: c1's messages went round the ring where c1 and c3 met before the status round, and c3's
#: fork delivered them, then again from c1's state (duplicate, one view, FIFO). Pinned by
#: test_sites_core's ..._where_a_fork_meets_the_kept_ring_goes_to_the_fork_once
#: 86585: the checker's (b2's own message in its fork's regular view, closed in the instant
#: of the rejoin: test_a_forks_regular_view_closed_in_the_instant_it_takes_the_kept_state_...)
#: 86320: the checker's (a message's interest read from a2's table, cut off from site c:
#: test_a_messages_interest_per_site_is_read_where_a_view_held_that_site)
LAN_SPLIT_GROUPS_REGRESSION_SEEDS = [125, 89, 328, 71302, 86585, 86320]

#: --lan-splits --groups --client-views seeds. 73027: a3, restarted into a2's fork, took a2's
#: state without the fork's ring; where the fork met a1's ring a2 delivered 38 messages in the
#: fork's closing view and a3 none (failed only once 71302's hold moved the timing). Pinned
#: by test_sites_core's ..._brought_up_to_date_in_a_forks_ring_ends_the_fork_... 478: a2
#: forked alone; its client joined g3 in the fork's closing view and the kept table a2 took
#: still held it with cb1 and cb2: cb1's LEAVE gave it a view of g3 with cb2, then the
#: REJOIN's REG_MEMB a vs_set of its own, no TRANSITION between. Pinned by test_sites_core's
#: ..._gets_no_view_of_the_kept_table_before_the_rejoin. 1037: c1, a fork of site c alone,
#: proposed view 2 to a and b, which decided it, then took c2 c3's state (epoch 1): the fork's
#: merge went undecided with its state, and a and b waited for its READY for good (c's GIVEUP
#: under epoch 1 is another incarnation's), refusing every later merge: the views ended split.
#: Pinned by test_sites_core's test_an_incarnation_that_ends_with_its_merge_undecided_...
#: 1409: b and c merged (view 2) and site
#: a joined before c's STATE came; the new exchange's STATEs of b2 and c1 both named view 2 as
#: the view they came from, and their clients got one vs_set. Pinned by test_sites_core's
#: ..._merge_that_ends_an_unfinished_exchange_keeps_each_sides_vs_set
#: 2377: the checker's (test_a_forks_regular_view_that_its_closing_view_ends_in_the_instant_...)
#: 2170: the checker's (test_what_a_daemon_cut_off_delivers_before_it_takes_the_kept_state_...);
#: its cut-off daemon sat out (no ring of its own: no fork counted) and took the kept state
#: 2033 (failed on af5d447, passes since s17-huntB's taken_in): b3 forked alone, b2 restarted
#: into its ring and took its state; fork_ring stayed {b3}, so own_held_upto stopped at the
#: end of b3's ring alone and, when b2 b3 took b1's state, the 48 messages their ring ordered
#: (20 of b2's, 28 of b3's) were delivered nowhere, not even to their senders. Pinned by
#: test_sites_core's ..._takes_a_forks_state_joins_the_fork_... (seed 86048's case)
#: 2403: c2's client joined g2 in its fork's closing view; the kept table c2 took held it
#: already, and the REG_MEMB that ended g2's wait (the REJOIN's, changing nothing) put it in
#: cb1's vs_set. Pinned by test_sites_core's test_a_join_in_the_forks_closing_view_that_the_...
#: 2761: b1, c's stream joined in the merged view and its first message there not delivered
#: yet, took c's 108.. through a1 before c1's 99..107 and lost c's stream for good (no hold
#: for a joined site). Pinned by test_sites_core's test_a_joined_sites_message_that_comes_...
LAN_SPLIT_CLIENT_VIEWS_REGRESSION_SEEDS = [73027, 478, 1037, 1409, 2377, 2170, 2033, 2403, 2761]  # (73236: the checker test below)
SAT_OUT_SEEDS = {2170}


def test_a_daemon_that_forks_just_after_the_heal_owes_nothing_its_old_ring_delivered_without_it():
    """The checker's (seed 73236 --lan-splits --groups --client-views, failing on 247a8bc):
    b2 was split off b's LAN from 0.85 to 1.88 s; b1's message went out in the ring of before,
    whose last messages b2 never had, and b1 and b3 delivered it at 1.916 s, after the heal,
    as that ring ended without b2; b2 forked at 1.920 s (its ring re-formed alone) and later
    took b1's state, where the message was delivered. EVS owed it nothing (it was not in
    b1's transitional configuration), but split_off stopped at the heal: "no loss". It now
    runs to b2's fork, if the fork comes within a ring's re-forming of the heal."""
    sim = sites_sim.SitesSim(73236, lan_splits=True, groups=True, client_views=True)
    res = sim.run()
    assert res.violations == [], res.summary()
    (start, end), = sim.lan_windows
    serial = next(s for s, sub in sorted(sim.submitted.items()) if sub[5] == "b1"
                  and s in sim.nodes["b1"].position and s not in sim.nodes["b2"].position)
    at = sim.nodes["b1"].delivered_at[serial]
    forked = next(t for t, row in sim.nodes["b2"].incarnations if t > start and row.get(1) not in (0, 1))
    assert end < at < forked and sim.split_off("b1", "b2", at)
    assert not sim.split_off("b1", "b2", start - 0.01) and not sim.split_off("b1", "b2", forked + 0.01)


def test_what_a_daemon_cut_off_delivers_before_it_takes_the_kept_state_is_not_owed_by_the_other_side():
    """The checker's (seed 2170 --lan-splits --groups --client-views): b3, cut off from b1 and
    b2 by the LAN split, lost the token and sat in GATHER until the heal: no ring of its own,
    no new epoch. Its own message, ordered in the old ring where only b3 ever had it, it
    delivered in that ring's transitional configuration of b3 alone (b1 and b2 came from the
    ring they formed without it) just before it took b1's state. split_off looked only for a
    fork of the daemon said to owe it (b1 kept the epoch), so b1 and b2 were said to owe it.
    What the deliverer delivered from the split until it took the kept state is its side's."""
    sim = sites_sim.SitesSim(1)
    sim.case = types.SimpleNamespace(lan_split_apart=["b3"])
    sim.lan_windows = [(1.56, 2.64)]
    sim.site_of = {"b1": 1, "b3": 1}
    ring = types.SimpleNamespace(cfg=types.SimpleNamespace(token_timeout_s=0.6, consensus_timeout_s=0.5))
    b1, b3 = (sites_sim.Node(ring, types.SimpleNamespace(name=n), None) for n in ("b1", "b3"))
    sim.nodes = {"b1": b1, "b3": b3}
    for node in (b1, b3):
        node.incarnations = [(0.0, {1: 1})]  # (no fork on either side)
    b3.rejoined = [(2.66, 23)]
    assert sim.split_off("b3", "b1", 2.659, b3)
    assert not sim.split_off("b3", "b1", 2.661, b3)  # (after it took the kept state)
    assert not sim.split_off("b3", "b1", 1.50, b3)  # (before the split)
    assert not sim.split_off("b3", "b1", 2.659)  # (as before: b1 never forked)


def test_a_merged_view_that_forgot_a_sites_epoch_is_not_a_forks_view_of_that_number():
    """The checker's (seed 74128 --lan-splits, failing on 247a8bc and 12ee07f): a1 forked
    alone (a new epoch of site 0) and installed its own view 2 of site 0 alone; it took a2's
    kept state at 4.74 s and went on to view 2 of sites 0, 1, 2 with everyone. c1's merge
    into that view forgot site 0's epoch (_install_joined) and c1, reaching site 0 only
    round through b, never learned it again: its view 2 named no epoch of site 0, fitted a1's
    fork's view 2 too, and check_views compared the two ("view"). A view that fits the
    views of several incarnations of a site now differs only if it matches none. (A merge
    now reads each joined site's epoch from its MERGE and READY records: c1 reads none there
    here, as a daemon of before the merge named epochs, to keep the case.)"""
    def reads_no_merge_epochs(name, gw):
        if name == "c1":
            gw._record_epochs = lambda r: {}

    sim = sites_sim.SitesSim(74128, lan_splits=True, on_start=reads_no_merge_epochs)
    res = sim.run()
    assert res.violations == [], res.summary()
    views = {n: [v for v in sim.nodes[n].views if v[0] == sr.CONF_REGULAR and v[1] == 2]
             for n in ("a1", "c1")}
    fork, kept = views["a1"]
    assert fork[2] == (0,) and kept[2] == views["c1"][0][2] == (0, 1, 2)
    tags_c1 = sim.named_at_views(sim.nodes["c1"])[sim.nodes["c1"].views.index(views["c1"][0])]
    tags_fork = sim.named_at_views(sim.nodes["a1"])[sim.nodes["a1"].views.index(fork)]
    assert not tags_c1.get(0) and tags_fork[0] != 1  # (c1 names no epoch of site 0; the fork its own)
    assert sim.compatible(tags_c1, tags_fork)  # (so it fits the fork's view too: ambiguous)


@pytest.mark.parametrize("seed", LAN_SPLIT_CLIENT_VIEWS_REGRESSION_SEEDS)
def test_a_site_split_in_two_rings_with_client_views_regression_seed(seed):
    res = sites_sim.run_seed(seed, lan_splits=True, groups=True, client_views=True)
    assert (res.stats.get("site_forks") or seed in SAT_OUT_SEEDS) and res.stats.get("rejoined"), res.summary()
    assert res.violations == [], "seed %d: %s" % (seed, res.summary())


@pytest.mark.parametrize("seed", LAN_SPLIT_GROUPS_REGRESSION_SEEDS)
def test_a_site_split_in_two_rings_with_groups_regression_seed(seed):
    res = sites_sim.run_seed(seed, lan_splits=True, groups=True)
    assert res.stats.get("site_forks"), res.summary()
    assert res.violations == [], "seed %d: %s" % (seed, res.summary())


#: --lan-splits --groups --site-grace-s 0.3 seeds (bench/sites_soak.py --first 86001). 86093:
#: b2, forked alone, proposed a view nobody answered; its client's messages waited for it
#: (own_held) and were delivered nowhere when b2 took b1's state (test_sites_core's
#: ..._held_for_its_undecided_view_is_delivered_as_the_fork_ends). 86048: a2, restarted into
#: a3's fork, took its state; what their ring ordered was above own_held_upto and delivered
#: nowhere (..._takes_a_forks_state_joins_the_fork_...). 86279: the checker's (SAFE in a
#: fork's closing view in the instant of the rejoin: test_a_safe_message_of_a_forks_closing_view_...)
#: 86522: the checker's (a site killed whole and another's restarted daemon began afresh
#: and met in view 0: test_a_restarted_site_that_began_afresh_knows_the_members_of_...)
#: 86307: b2 stood down for b3's state, b3 was killed before it sent it, and b2's ring with
#: b3 restarted started afresh while b2 kept its fork's view (test_sites_core's
#: ..._stood_down_daemon_whose_ring_starts_afresh_has_a_fresh_daemons_sites_state)
LAN_SPLIT_GROUPS_SHORT_GRACE_SEEDS = [86048, 86093, 86279, 86307, 86522]


@pytest.mark.parametrize("seed", LAN_SPLIT_GROUPS_SHORT_GRACE_SEEDS)
def test_a_site_split_in_two_rings_with_groups_at_a_short_grace_regression_seed(seed, monkeypatch):
    monkeypatch.setattr(sr, "SITE_GRACE_S", 0.3)
    res = sites_sim.run_seed(seed, lan_splits=True, groups=True)
    # (a fork ends by taking the kept state, or, where that state never came, by starting
    # over with its ring afresh: 86307)
    assert res.stats.get("site_forks") and (res.stats.get("rejoined") or res.stats.get("began_over")), res.summary()
    assert res.violations == [], "seed %d: %s" % (seed, res.summary())


#: --lan-splits --groups --client-views --site-grace-s 0.3 seeds (bench/sites_soak.py --first
#: 86301). 86400: c1 c2 c3, cut off from a and b, delivered their own messages above site a's
#: frontier in view 0's regular part, where a and b had a1's LEAVE before them (a hole in a
#: regular configuration): test_sites_core's ..._above_a_lost_sites_frontier_goes_in_the_
#: transitional_view. (Without --client-views it passed on main: no violation there.) The
#: bound is a {lts, site id} (s19-cv86400b): an lts one broke REGRESSION_SEEDS' 160032 ...
LAN_SPLIT_CLIENT_VIEWS_SHORT_GRACE_SEEDS = [86400]


@pytest.mark.parametrize("seed", LAN_SPLIT_CLIENT_VIEWS_SHORT_GRACE_SEEDS)
def test_a_site_split_in_two_rings_with_client_views_at_a_short_grace_regression_seed(seed, monkeypatch):
    monkeypatch.setattr(sr, "SITE_GRACE_S", 0.3)
    res = sites_sim.run_seed(seed, lan_splits=True, groups=True, client_views=True)
    assert res.stats.get("site_forks") and res.stats.get("rejoined"), res.summary()
    assert res.violations == [], "seed %d: %s" % (seed, res.summary())


#: --lan-splits --groups --hostile 0.1 --key seeds. 71257: b3 forked alone beside b1 b2 and
#: both answered c1's heal; c1 linked with b1, then took b3's HELLO over it and its merge
#: read the fork's epoch; once b3 took b1's state c1 refused site b for ever (a message lost
#: at c). Pinned by test_sites_core's ..._answered_by_two_incarnations_of_a_site_...; with
#: the probe rule alone on 247a8bc the seed passes with the rule engaged (c1 refused b3's
#: HELLO once), but the fork's hold at the point (71302's fix) moves its timing so that the
#: race no longer runs here: the seed stays as a plain regression of the mode
LAN_SPLIT_HOSTILE_REGRESSION_SEEDS = [71257]


@pytest.mark.parametrize("seed", LAN_SPLIT_HOSTILE_REGRESSION_SEEDS)
def test_a_site_split_in_two_rings_on_a_hostile_lan_regression_seed(seed):
    res = sites_sim.run_seed(seed, lan_splits=True, groups=True, hostile=0.1, key=True)
    assert res.stats.get("site_forks"), res.summary()
    assert res.violations == [], "seed %d: %s" % (seed, res.summary())


#: --groups seeds. 89: c3, restarted into site c's ring, forked alone (c1, c2 dead) and merged
#: back with sites a and b; from their STATEs it pruned its own g2 messages to them (no member
#: there: right). Only c3 delivered those, and the simulator took members only from daemons
#: that saw every JOIN, so those messages had no interest and every site "owed" them (no
#: loss at a1, a2, b1; the daemons were right). Pinned by
#: test_a_message_only_a_restarted_daemon_delivered_is_owed_by_the_sites_with_a_member
GROUPS_REGRESSION_SEEDS = [89]


@pytest.mark.parametrize("seed", GROUPS_REGRESSION_SEEDS)
def test_groups_regression_seed(seed):
    res = sites_sim.run_seed(seed, groups=True)
    assert res.stats.get("skips_after_merge"), res.summary()
    assert res.violations == [], "seed %d: %s" % (seed, res.summary())


def test_a_fork_takes_no_view_record_another_site_made_for_the_incarnation_it_left(monkeypatch):
    """Seed 7123 --lan-splits (a line a - b - c; a = a1 a2 a3): a2 died, a3 was split off, and
    a1 forked alone (epoch 1 -> a new one). b1's PROPOSE of view 1 (without c), put into a1's
    ring before the fork, was delivered after it: a1 proposed, decided view 1 with site b and
    delivered in it what b1 (which refused the fork's HELLO) never had: SAFE and no loss
    broken. A fork now refuses the other sites' view records of a SITES message made before
    it (_made_before_our_fork). Planted back on the merged code of s13 (the transitional
    view leaves out what a decided next view loses, s13-lostaru), a1 still decides view 1
    with site b, which b1 never decides, but delivers nothing the checkers count in it: so the
    test compares the views decided, not the violations."""
    sim = sites_sim.SitesSim(7123, lan_splits=True)
    res = sim.run()
    assert res.violations == [], res.summary()
    assert sim.nodes["a1"].gateway.counters["site_view_records_before_our_fork"] >= 1
    assert _views_decided_by_a1_with_site_b_that_b1_never_decided(res) == []
    monkeypatch.setattr(sr.SiteGateway, "_made_before_our_fork", lambda self, msg: False)
    planted = sites_sim.run_seed(7123, lan_splits=True)
    assert _views_decided_by_a1_with_site_b_that_b1_never_decided(planted) != []


def _decided_views(res, name):
    """{view: its sites} from the daemon's "view N decided: sites [...]" log lines."""
    views = {}
    for line in res.log_lines:
        words = line.split()
        if len(words) > 6 and words[1] == name and words[2:4] == ["view", words[3]] and words[4] == "decided:":
            listed = line.split("sites [", 1)[1].split("]", 1)[0]
            views[int(words[3])] = tuple(int(site) for site in listed.split(", ") if site)
    return views


def _views_decided_by_a1_with_site_b_that_b1_never_decided(res):
    a1, b1 = _decided_views(res, "a1"), _decided_views(res, "b1")
    return [(v, sites) for v, sites in sorted(a1.items()) if 1 in sites and b1.get(v) != sites]


def test_without_split_quorum_a_daemon_that_started_afresh_beside_its_site_takes_its_state():
    """Seed 4408 --hostile 0.1 --key (site a = a1 a2: no split_quorum in a site of two): a1,
    restarted, lost its commit token and started afresh alone; where it met a2, a2 stopped
    (two states of the site cannot merge). a1's state is of another epoch (the others refused
    its HELLO while a2's lived): a1 takes a2's state instead, as a fork's daemon would."""
    res = sites_sim.run_seed(4408, hostile=0.1, key=True)
    assert res.violations == [], "%s\nreplay: %s" % (res.summary(), sites_sim.replay_command(4408, hostile=0.1, key=True))
    assert "site_forks" not in res.stats and res.stats.get("rejoined") == 1, res.summary()


def test_a_forks_daemon_delivers_its_held_messages_in_a_transitional_view_of_its_site():
    """Seed 40: b2, cut off from b1 by the split, forks; its merge holds messages of its own
    clients that its ring ordered before the fork (the kept side delivered them meanwhile).
    Where the rings meet it ends the fork's view, TRANSITIONAL of its site alone, delivers
    them in it, then takes the kept state."""
    sim = sites_sim.SitesSim(40, lan_splits=True)
    res = sim.run()
    assert res.violations == [], res.summary()
    b2 = sim.nodes["b2"]
    assert b2.gateway.counters["fork_held_delivered"] > 0 and b2.rejoined
    trans = [v for v in b2.views if v[0] == sr.CONF_TRANSITIONAL]
    assert trans and trans[0][2] == (1,)
    assert trans[0][3] < b2.rejoined[0][1]  # (delivered in it, before the kept state came)


#: --lan-splits --client-views seeds (each daemon runs its group core, one client each) whose
#: forked daemon's client got a wrong membership before s13: a REG_MEMB inside the
#: transitional view that ends the fork (2: JOINs held in the fork's stream); a fork's REG_MEMB
#: naming a member of a site that refuses the fork (7, 60: JOINs delivered in the fork's old
#: or transitional view of the sites); a second TRANSITION after the fork's, where the kept
#: table still held the fork's member when it was taken (33: the REJOIN names it too); a
#: REJOIN delivered in the sites' transitional view that lost another site, whose REG_MEMB
#: named that site's member in the client's own vs_set (6: _hold_rejoin); a member that
#: joined after its group's TRANSITION put in the old members' vs_set by the regular view's
#: REG_MEMB (67, s15: check_own_vs_set, silent_joins). 772 (no client-view
#: violation: only this mode's timing has it): c2 forked alone while its site's decided merge
#: waited for b's READY, and held it for good (b's GIVEUP died with c1): no view, no delivery
#: (SiteGateway._fork_ends_merge). 981: the checker's (see
#: test_a_forks_closing_view_in_the_instant_it_takes_the_kept_state_is_the_forks). 908: the
#: checker's (test_a_messages_interest_is_the_kept_sides_table_not_the_forks_that_sent_it).
#: 1256: the checker's (test_a_daemon_that_takes_the_state_joins_the_view_the_state_holds).
#: 914: c3's fork delivered c2's JOIN in its closing view, the kept table it took lacked it
#: (test_another_daemons_join_the_fork_delivered_reaches_the_kept_table_it_takes). 958: b2's
#: new client after a restart was taken for its predecessor's member of that name
#: (test_a_restarted_daemons_new_client_is_not_its_predecessors_member_of_that_name). 1113
#: (no loss, no client-view violation): b1, a fork, asked a2 across a heal and took b's kept
#: state (epoch 1) before a2's answer came; a2 merged site b in under the fork's epoch and
#: refused every FRONTIER of site b, so a1, restarted, never got the sites' state
#: (test_an_answer_to_a_hello_asked_under_our_former_epoch_starts_no_link_and_we_ask_again).
#: 840 (here; its --lan-splits run is in LAN_SPLIT_REGRESSION_SEEDS): b3, a fork, queued 10
#: of its clients' messages while its ring re-formed; they went round the ring where it met
#: b2 before the status round's point, b2 delivered them and b3, taking b2's state, never
#: did (test_a_forks_clients_message_queued_when_its_ring_meets_the_kept_one_is_delivered_...)
CLIENT_VIEW_SEEDS = [2, 7, 60, 33, 6, 67, 772, 981, 908, 1256, 914, 958, 1113, 840]


@pytest.mark.parametrize("seed", CLIENT_VIEW_SEEDS)
def test_a_forks_clients_get_right_memberships_in_the_client_view_seed(seed):
    res = sites_sim.run_seed(seed, lan_splits=True, client_views=True)
    assert res.stats.get("site_forks"), res.summary()
    assert res.violations == [], "seed %d: %s" % (seed, res.summary())



def test_a_forks_closing_view_in_the_instant_it_takes_the_kept_state_is_the_forks():
    """(seed 981 --lan-splits --client-views) b2, a fork of site b alone, delivered its own
    fork's messages in close_fork's transitional view and took the kept state in the same
    instant (one poll). The checker read the incarnation b2 left that view with at that
    instant, the kept one already, and asked b1 and b3 for messages only the fork ever had.
    It is the fork's, just before the rejoin (as a delivery just before JOINED)."""
    sim = sites_sim.SitesSim(1)
    sim.site_of = {"b1": 1, "b2": 1}
    b1, b2 = (sites_sim.Node(None, types.SimpleNamespace(name=n), None) for n in ("b1", "b2"))
    for node in (b1, b2):
        node.incarnations = [(0.0, {1: 1})]
    t = 3.41
    b2.incarnations += [(2.9, {1: 777}), (t, {1: 1})]  # (forked, then the kept state)
    b2.delivered = [10, 11]
    b2.position = {10: 0, 11: 1}
    b2.views = [(sr.CONF_TRANSITIONAL, 0, (1,), 0, t), (sites_sim.JOINED, 1, (0, 1), 2, t)]
    sites, left_s = sim.companions(b2)[10]
    assert sites == (1,) and left_s < t
    assert not sim.same_incarnation(b1, b2, left_s)  # (before: t, the kept incarnation)
    assert sim.same_incarnation(b1, b2, t)


def test_a_forks_regular_view_closed_in_the_instant_it_takes_the_kept_state_is_the_forks():
    """(seed 86585 --lan-splits --groups) b2, a fork of site b alone, delivered its own
    message in its fork's regular view 1; its fork's closing TRANSITIONAL and the kept state
    came in one instant. The checker read the incarnation at that instant, the kept one, and
    said b1 and b3 (kept, which never had the message) owed it. As for a delivery in the
    closing view itself (seed 981): the fork's, just before the rejoin."""
    sim = sites_sim.SitesSim(1)
    sim.site_of = {"b1": 1, "b2": 1}
    b1, b2 = (sites_sim.Node(None, types.SimpleNamespace(name=n), None) for n in ("b1", "b2"))
    for node in (b1, b2):
        node.incarnations = [(0.0, {1: 1})]
    t = 2.43
    b2.incarnations += [(1.41, {1: 777}), (t, {1: 1})]  # (forked, then the kept state)
    b2.delivered, b2.position = [280], {280: 0}
    b2.views = [(sr.CONF_REGULAR, 1, (1,), 0, 1.92), (sr.CONF_TRANSITIONAL, 1, (1,), 1, t),
                (sites_sim.JOINED, 0, (), 1, t)]
    sites, left_s = sim.companions(b2)[280]
    assert sites == (1,) and left_s < t
    assert not sim.same_incarnation(b1, b2, left_s)  # (before: t, the kept incarnation)


def test_a_safe_message_of_a_forks_closing_view_in_the_instant_it_rejoined_waits_for_the_fork_only():
    """(seed 86279 --lan-splits --groups --site-grace-s 0.3) c3, forked alone, delivered its
    client's SAFE message in the fork's closing view (close_fork) and took c1's kept state in
    the same instant. check_safe read c3's incarnation at that instant, the kept one already,
    and said c1 (kept side, which never had the message) had to hold it first. SAFE holds in
    the transitional configuration where it is delivered (the real Spread's Discard_packets
    delivers after the transitional signal what only its members hold): here the fork's
    daemons alone. Read as companions reads it (seed 981): the fork's, just before."""
    sim = sites_sim.SitesSim(1)
    sim.site_of = {"c1": 2, "c3": 2}
    sim.submitted = {137: (sr.SAFE_MESS, b"", "#c#c3", 0, 1.37, "c3", sr.DATA, ("g1",))}
    c1, c3 = (sites_sim.Node(None, types.SimpleNamespace(name=n), None) for n in ("c1", "c3"))
    sim.nodes = {"c1": c1, "c3": c3}
    for node in (c1, c3):
        node.incarnations = [(0.0, {2: 1})]
    t = 3.136
    c3.incarnations += [(2.45, {2: 777}), (t, {2: 1})]  # (forked, then the kept state)
    c3.delivered, c3.position, c3.delivered_at = [137], {137: 0}, {137: t}
    c3.key_of, c3.delivered_in, c3.held_at = {137: (2, 49)}, {137: (2,)}, {(2, 49): 1.4}
    c3.views = [(sr.CONF_TRANSITIONAL, 1, (2,), 0, t), (sites_sim.JOINED, 1, (2,), 1, t)]
    c3.rejoined = [(t, 1)]
    sim.check_safe()
    assert sim.violations == []
    c3.rejoined = [(t, 0)]  # (delivered after the rejoin: of the kept incarnation, c1 owes it)
    sim.check_safe()
    assert len(sim.violations) == 1 and "c1 held it only at inf" in sim.violations[0]


def test_a_messages_interest_per_site_is_read_where_a_view_held_that_site():
    """(seed 86320 --lan-splits --groups) a2, cut off alone (view of site a), delivered a1's
    message 29 before c1's LEAVE of its group reached a2's order; b1 delivered the LEAVE
    first, in a view with site c, and pruned 29 for c (a SKIP). The replayed interest took
    a2's table, the first whole one, and said c1 owed 29. Per site, the table of a daemon
    that delivered it in a view holding that site (as table_for, seed 879, for the cores')."""
    sim = sites_sim.SitesSim(1, groups=True)
    a2, b1 = (sites_sim.Node(None, types.SimpleNamespace(name=n), None) for n in ("a2", "b1"))
    a2.delivered_in, b1.delivered_in = {29: (0,)}, {29: (1, 2)}
    out = {}
    sim.read_interest([(a2, {29: frozenset({0, 1, 2})}), (b1, {29: frozenset({0, 1})})], out)
    assert out == {29: frozenset({0, 1})}  # (a from a2's view, b and c from b1's)
    out = {}
    sim.read_interest([(a2, {29: frozenset({0, 1, 2})})], out)
    assert out == {29: frozenset({0, 1, 2})}  # (nobody delivered it with c: the first's)
    out = {29: frozenset({2})}
    sim.read_interest([(b1, {29: frozenset({0})})], out)
    assert out == {29: frozenset({2})}  # (an earlier list's reading stands)


def test_a_restarted_site_that_began_afresh_knows_the_members_of_the_sites_that_shared_its_view_zero():
    """The checker's (seed 86522 --lan-splits --groups --site-grace-s 0.3): site a, killed
    whole, began the sites' state afresh (view 0) beside site b, whose b1 had also restarted
    alone and begun afresh; the two met in view 0 with no merge (each had the other's stream
    from its first message: the gateway's interest_known keeps a site until a merge), and went
    on to view 1 together. a2's messages to g1, which nobody was in, were pruned for b
    rightly; the replay of a1's table took b as unknown for ever (no merge ever named it) and
    said b owed them. A site that came with it out of view 0 is known from the start; one
    the daemon never shared view 0 with (state taken, or a later view) stays unknown."""
    sim = sites_sim.SitesSim(1, groups=True)
    sim.case = dataclasses.replace(sim.case, sites=[["a1", "a2"], ["b1", "b2"], ["c1"]])
    sim.site_of = {"a1": 0, "a2": 0, "b1": 1, "b2": 1, "c1": 2}
    sim.submitted = {88: (sr.AGREED_MESS, b"", "b1", 0, 1.3, "b1", sr.JOIN, ("g2",)),
                     141: (sr.AGREED_MESS, b"", "a2", 0, 8.5, "a2", sr.DATA, ("g1",)),
                     142: (sr.AGREED_MESS, b"", "a2", 0, 8.6, "a2", sr.DATA, ("g2",))}
    a1 = sites_sim.Node(None, types.SimpleNamespace(name="a1"), None)
    sim.nodes = {"a1": a1}
    a1.restarted, a1.began_afresh = True, True
    a1.delivered = [88, 141, 142]
    a1.views = [(sites_sim.JOINED, 0, (), 0, 3.5), (sr.CONF_TRANSITIONAL, 1, (0, 1), 1, 5.1),
                (sr.CONF_REGULAR, 1, (0, 1), 1, 5.1)]
    table = sim.node_interest(a1, {})
    assert table[141] == frozenset({2})  # (b has nobody in g1; c, never met, may owe it)
    assert table[142] == frozenset({1, 2})  # (b1 joined g2 in the shared order)
    a1.began_afresh = False  # (it took a state: what came before it is not in its replay)
    assert sim.node_interest(a1, {})[141] == frozenset({1, 2})
    a1.began_afresh = True
    a1.views[0] = (sites_sim.JOINED, 3, (0, 1), 0, 3.5)  # (came in at a later view)
    assert sim.node_interest(a1, {})[141] == frozenset({1, 2})


def test_a_forks_regular_view_that_its_closing_view_ends_in_the_instant_it_takes_the_kept_state_is_the_forks():
    """The checker's (seed 2377 --lan-splits --groups --client-views): c2, a fork of site c
    alone, delivered its client's message in the fork's regular view; its closing view and
    the kept state it took came in one instant. The checker read the incarnation c2 left the
    regular view with at the closing view's instant, the kept one already, and said c1 owed a
    message only the fork ever had (EVS: c1 was never in the fork's configuration). It is the
    fork's, just before the rejoin, as a delivery in that closing view is (seed 981)."""
    sim = sites_sim.SitesSim(1)
    sim.site_of = {"c1": 2, "c2": 2}
    c1, c2 = (sites_sim.Node(None, types.SimpleNamespace(name=n), None) for n in ("c1", "c2"))
    for node in (c1, c2):
        node.incarnations = [(0.0, {2: 1})]
    t = 3.2188
    c2.incarnations += [(2.19, {2: 777}), (t, {2: 1})]  # (forked, then the kept state)
    c2.delivered, c2.position = [129], {129: 0}
    c2.views = [(sr.CONF_TRANSITIONAL, 1, (2,), 0, 2.69), (sr.CONF_REGULAR, 1, (2,), 0, 2.71),
                (sr.CONF_TRANSITIONAL, 1, (2,), 1, t), (sites_sim.JOINED, 0, (), 1, t)]
    sites, left_s = sim.companions(c2)[129]
    assert sites == (2,) and left_s < t
    assert not sim.same_incarnation(c1, c2, left_s)  # (before: t, the kept incarnation)
    c2.views[-1] = (sites_sim.JOINED, 0, (), 1, t + 0.5)  # (the kept state taken later: left at t)
    assert sim.companions(c2)[129] == ((2,), t)


def test_a_safe_message_delivered_in_a_forks_closing_view_in_the_instant_it_takes_the_kept_state_is_the_forks():
    """The checker's (seed 84502 --lan-splits --unreliable --client-views): b3, a fork of site
    b alone, delivered its own SAFE message in close_fork's view and took the kept state in
    the same instant. check_safe read the incarnation b3 delivered it in at that instant, the
    kept one already, and asked b2 (kept, never in the fork's configuration) to have held it.
    It is the fork's, just before the rejoin (as companions reads it: seed 981)."""
    sim = sites_sim.SitesSim(1)
    sim.case = types.SimpleNamespace(sites=[["a1"], ["b2", "b3"]], lan_split_apart=[])
    sim.site_of = {"b2": 1, "b3": 1}
    sim.submitted = {40: (sr.SAFE_MESS, b"", "#c#b3", 0, 1.05, "b3", sr.DATA, ("g",))}
    b2, b3 = (sites_sim.Node(None, types.SimpleNamespace(name=n), None) for n in ("b2", "b3"))
    sim.nodes = {"b2": b2, "b3": b3}
    for node in (b2, b3):
        node.incarnations = [(0.0, {1: 1})]
    t = 2.3642
    b2.incarnations += [(1.76, {1: 555})]  # (the kept side went on as a new incarnation)
    b3.incarnations += [(1.85, {1: 777}), (t, {1: 555})]  # (forked, then the kept state)
    b3.delivered, b3.position, b3.delivered_at = [40], {40: 0}, {40: t}
    b3.key_of, b3.delivered_in, b3.rejoined = {40: (1, 16)}, {40: (1,)}, [(t, 1)]
    b3.held_at = {(1, 16): 1.05}
    b2.held_at = {(1, 16): 3.87}  # (its own site's message of that seq, long after)
    assert sim.fork_instant(b3, 40, t) < t
    sim.check_safe()
    assert sim.violations == []
    b3.rejoined = [(t + 0.5, 1)]  # (the kept state taken later: delivered in the kept incarnation)
    assert sim.fork_instant(b3, 40, t) == t
    sim.check_safe()
    assert [v for v in sim.violations if "b2 held it only at 3.87" in str(v)]


def test_a_daemon_waiting_for_the_kept_state_owes_no_safe_message_delivered_before_it_came():
    """The checker's (seed 161686): two rings of site a met in ring 3 {a1,a2,a3}; a1 (a fork)
    stood down at 2.83 to take a2's state and took it at 3.19 (JOINED, a2's view 1 from the
    state's point). a2 delivered its SAFE 70 at 3.01 on site a's ARU; the state a1 took holds
    70 as delivered (positions {0: 37}). check_safe asked a1 to have held 70 before 3.01; EVS
    asks it of the view's members, and a1 was in none of a2's views then (a late daemon, as a
    restarted one before it is up to date)."""
    sim = sites_sim.SitesSim(1)
    sim.case = types.SimpleNamespace(sites=[["a1", "a2"]], lan_split_apart=[])
    sim.site_of = {"a1": 0, "a2": 0}
    sim.submitted = {70: (sr.SAFE_MESS, b"", "#c#a2", 0, 1.49, "a2", sr.DATA, ("g",))}
    a1, a2 = (sites_sim.Node(None, types.SimpleNamespace(name=n), None) for n in ("a1", "a2"))
    sim.nodes = {"a1": a1, "a2": a2}
    everyone = frozenset({"a1", "a2"})
    for node in (a1, a2):
        node.incarnations = [(0.0, {0: 1})]
        node.rings = [(2.745, "3/a1#1", everyone)]
    a2.delivered, a2.position, a2.delivered_at = [70], {70: 0}, {70: 3.0136}
    a2.key_of, a2.delivered_in, a2.held_at = {70: (0, 37)}, {70: (0,)}, {(0, 37): 3.0118}
    a1.rejoined = [(3.1926, 0)]
    sim.check_safe()
    assert [v for v in sim.violations if "a1 held it only at inf" in str(v)]  # (without the wait)
    sim.violations.clear()
    a1.waited = [(2.8317, 3.1926)]
    assert sim.waiting_for_state(a1, 3.0136) and not sim.waiting_for_state(a1, 3.2)
    sim.check_safe()
    assert sim.violations == []
    a1.waited, a1.waiting_since = [], 2.8317  # (still waiting: the same)
    sim.check_safe()
    assert sim.violations == []
    a1.waiting_since = 3.05  # (stood down after the delivery: it was in the view then, it owes it)
    sim.check_safe()
    assert [v for v in sim.violations if "a1 held it only at inf" in str(v)]


def test_a_daemon_waiting_for_the_kept_state_owes_nothing_delivered_before_the_states_point():
    """The checker's (seed 271361): b1 sat out ring 2 {b2, b3 restarted}, which ordered b2's
    messages 125..138; in ring 3 b1 closed its fork's view at 3.9999 and stood down for b2's
    state; b2 delivered them at 4.031 in its transitional view 1 (which it left at 4.0002 by
    left_with's reckoning) and the state b1 took at 4.843 holds them: b1's first delivery
    after it, 129, comes after them in b2's order. No loss owed them to b1 (not a member of
    any view then: a late daemon, as a restarted one before it is up to date), since the
    rejoin came after b2 left the view."""
    sim = sites_sim.SitesSim(1)
    sim.site_of = {"b1": 1, "b2": 1}
    b1, b2 = (sites_sim.Node(None, types.SimpleNamespace(name=n), None) for n in ("b1", "b2"))
    b2.delivered = [124, 125, 138, 129]
    b2.position = {s: i for i, s in enumerate(b2.delivered)}
    b2.delivered_at = {124: 4.031, 125: 4.031, 138: 4.031, 129: 4.031}
    b1.delivered, b1.position = [124, 129], {124: 0, 129: 1}
    b1.rejoined = [(4.843, 1)]
    left_s = 4.0002
    assert sim.owes(b1, b2, 125, left_s)  # (without the wait: owed from the start)
    b1.waited = [(3.9999, 4.843)]
    assert not sim.owes(b1, b2, 125, left_s) and not sim.owes(b1, b2, 138, left_s)
    assert sim.owes(b1, b2, 129, left_s)  # (from the state's point on: owed)
    b2.delivered_at[125] = 3.99  # (delivered before it stood down: it was in the view, owes it)
    assert sim.owes(b1, b2, 125, left_s)
    b1.waited, b1.waiting_since = [], 3.9999  # (still waiting, no state yet: owed as before)
    b1.rejoined = []
    assert sim.owes(b1, b2, 138, left_s)


def test_a_daemon_that_stood_down_owes_nothing_the_others_delivered_from_that_rounds_point_on():
    """The checker's (seed 297659): b1 sat out ring 2 {b2 restarted, b3}, which kept site 1's
    epoch; ring 3 {b1, b2, b3} met there and b1 took b2's state. At ring 3's point b3 applied
    its held outputs and delivered a3's 1, 4, 6 (site 0, gone) in its transitional view 1 at
    1.8932; b1, at the same point of the order, closed its view (its own stream's messages it
    held) and stood down at 1.8937: by the simulator's clock b1 was still in the view, and
    no loss owed them to b1. Past the point where it stood down it owes only what close_fork
    promises: its own site's messages that it held then."""
    sim = sites_sim.SitesSim(1)
    sim.site_of = {"b1": 1, "b3": 1}
    b1, b3 = (sites_sim.Node(None, types.SimpleNamespace(name=n), None) for n in ("b1", "b3"))
    b3.delivered = [1, 2, 4, 18]  # (1, 4: site 0's; 2: site 1's, b1 held it; 18: past the state)
    b3.position = {s: i for i, s in enumerate(b3.delivered)}
    b3.delivered_at = {1: 1.8932, 2: 1.8932, 4: 1.8932, 18: 1.9532}
    b3.key_of = {1: (0, 1), 2: (1, 1), 4: (0, 2), 18: (1, 8)}
    b1.delivered, b1.position = [2, 18], {2: 0, 18: 1}
    b1.delivered_at = {2: 1.8937, 18: 1.9532}
    b1.held_at = {(0, 1): 0.0776, (1, 1): 0.03}
    b1.rejoined, b1.waited = [(1.9523, 1)], [(1.89369, 1.9523)]
    left_s = 1.9214
    assert sim.owes(b1, b3, 1, left_s) and sim.owes(b1, b3, 4, left_s)  # (by the clock alone)
    b1.stood_down_in = {1.89369: "3/b1#1"}
    b3.points = [(1.8932, "3/b1#1", frozenset({"b1"}))]
    assert not sim.owes(b1, b3, 1, left_s) and not sim.owes(b1, b3, 4, left_s)
    assert sim.owes(b1, b3, 2, left_s)  # (its own site's, held: close_fork delivers it)
    assert sim.owes(b1, b3, 18, left_s)  # (past the state's point: owed)
    b3.points = [(1.8932, "2/b2#2", frozenset({"b1"}))]  # (another ring's round: not where it stood down)
    assert sim.owes(b1, b3, 1, left_s)
    b3.points = [(1.8932, "3/b1#1", frozenset({"b2"}))]  # (a round that did not name it late)
    assert sim.owes(b1, b3, 1, left_s)
    b3.points = [(1.8933, "3/b1#1", frozenset({"b1"}))]  # (delivered before b3 reached the point)
    assert sim.owes(b1, b3, 1, left_s)


def test_planted_loss_in_a_forks_closing_view_past_the_rounds_point_is_a_loss_violation():
    """Seed 297659, with b1's close_fork dropping its first message (site 1's 2, which b1
    held): b2 and b3 delivered it past the point where b1 stood down, and the rule above
    still owes it to b1 (close_fork's promise), so no loss catches it."""
    dropped = []

    def flt(name, outputs):
        ends = [i for i, out in enumerate(outputs) if isinstance(out, sr.SiteViewChange) and out.fork_ends]
        if name == "b1" and ends and not dropped:
            i = _first_deliver(outputs[ends[0]:])
            if i is not None:
                dropped.append(outputs.pop(ends[0] + i))
        return outputs
    res = sites_sim.run_seed(297659, delivery_filter=flt)
    assert dropped and sites_sim.LOSS in res.kinds(), res.summary()
    assert any("b1 never delivered 1 of" in v for v in res.violations), res.summary()


def test_a_daemon_out_of_its_sites_ring_owes_no_safe_message_that_ring_made_stable():
    """The checker's (seed 111636): b2's token was lost; b1, restarted, and b3 formed ring 2
    without it; a1 delivered SAFE 12 on site b's ARU of that ring; b2 came back into ring 3
    later and took b1's state. check_safe said b2 had to hold 12 first; EVS asks it of the
    configuration that delivers it, and b2 was in no ring of site b then."""
    sim = sites_sim.SitesSim(1)
    sim.site_of = {"b1": 1, "b2": 1, "b3": 1}
    b1, b2, b3 = (sites_sim.Node(None, types.SimpleNamespace(name=n), None) for n in ("b1", "b2", "b3"))
    sim.nodes = {"b1": b1, "b2": b2, "b3": b3}
    for node in (b1, b2, b3):
        node.incarnations = [(0.0, {1: 1})]
    everyone = frozenset({"b1", "b2", "b3"})
    b2.rings = [(0.007, "1/b1#1", everyone), (2.427, "3/b1#2", everyone)]
    b3.rings = [(0.007, "1/b1#1", everyone), (1.824, "2/b1#2", frozenset({"b1", "b3"})),
                (2.427, "3/b1#2", everyone)]
    b1.rings = [(1.824, "2/b1#2", frozenset({"b1", "b3"})), (2.426, "3/b1#2", everyone)]
    assert sim.left_out_of_site_ring("b2", 2.134)
    assert not sim.left_out_of_site_ring("b2", 1.0)  # (in ring 1 with them)
    assert not sim.left_out_of_site_ring("b2", 2.5)  # (back in ring 3)
    assert not sim.left_out_of_site_ring("b3", 2.134)
    b2.incarnations = [(0.0, {1: 1}), (1.9, {1: 777})]  # (another incarnation's rings do not count)
    b1.incarnations = b3.incarnations = [(0.0, {1: 777})]
    assert sim.left_out_of_site_ring("b2", 2.134)
    b1.incarnations = b3.incarnations = [(0.0, {1: 555})]
    assert not sim.left_out_of_site_ring("b2", 2.134)


#: --lan-splits --unreliable --client-views seeds. 84502: the checker's (test_a_safe_message_
#: delivered_in_a_forks_closing_view_in_the_instant_it_takes_the_kept_state_is_the_forks)
LAN_SPLIT_UNRELIABLE_CLIENT_VIEWS_SEEDS = [84502]


@pytest.mark.parametrize("seed", LAN_SPLIT_UNRELIABLE_CLIENT_VIEWS_SEEDS)
def test_a_site_split_in_two_rings_with_unreliable_messages_and_client_views_regression_seed(seed):
    res = sites_sim.run_seed(seed, unreliable=True, lan_splits=True, client_views=True)
    assert res.stats.get("site_forks") and res.stats.get("rejoined"), res.summary()
    assert res.violations == [], "seed %d: %s" % (seed, res.summary())


def test_a_messages_interest_is_the_kept_sides_table_not_the_forks_that_sent_it():
    """(seed 908 --lan-splits --client-views) b2's client sent a message; b2, forked, delivered
    it in its fork's transitional view, where its table still named c1 in the group (c was
    gone from the fork's view); b1, kept, delivered it with c1 out of the group and pruned it
    for site c. The checker took the sender's table and said c1 owed it. A table of a
    delivery in a fork that later took the kept state comes last."""
    sim = sites_sim.SitesSim(1, groups=True, client_views=True)
    sim.submitted = {7: (sr.AGREED_MESS, b"", "#c#b2", 0, 0.0, "b2", sr.DATA, ("g1",))}
    b1, b2 = (sites_sim.Node(None, types.SimpleNamespace(name=n), None) for n in ("b1", "b2"))
    sim.nodes = {"b1": b1, "b2": b2}
    b2.delivered, b2.position, b2.core_sites = [7], {7: 0}, {7: frozenset({1, 2})}
    b1.delivered, b1.position, b1.core_sites = [7], {7: 0}, {7: frozenset({1})}
    assert sim.core_interest()[7] == frozenset({1, 2})  # (b2 never forked: its own table)
    b2.rejoined = [(3.0, 1)]  # (delivered in its fork, before it took the kept state)
    assert sim.core_interest()[7] == frozenset({1})
    del b1.core_sites[7]
    assert sim.core_interest()[7] == frozenset({1, 2})  # (nobody else delivered it)


def test_a_sites_interest_is_read_where_a_view_holding_it_delivered_the_message():
    """(seeds 879, 1092, 1201 --lan-splits --client-views) c2, cut off from sites a and b,
    delivered its own message 85 (group g3) in its view of site c alone, its table still
    naming a2 in g3: a2's LEAVE came after the cut of a's stream there. In the order of a's
    and b's view a2's LEAVE came before 85; b1 delivered 85 with site a out of g3 and pruned
    it for a (a SKIP). The checker took the sender's table and said a1 owed 85. Whether a
    site had a member is read where a view holding that site delivered the message."""
    sim = sites_sim.SitesSim(879, groups=True, client_views=True)
    assert len(sim.case.sites) == 3
    sim.submitted = {85: (sr.RELIABLE_MESS, b"", "c2", 0, 0.0, "c2", sr.DATA, ("g3",))}
    b1, c2 = (sites_sim.Node(None, types.SimpleNamespace(name=n), None) for n in ("b1", "c2"))
    sim.nodes = {"b1": b1, "c2": c2}
    c2.delivered, c2.position, c2.core_sites = [85], {85: 0}, {85: frozenset({0, 1, 2})}
    b1.delivered, b1.position, b1.core_sites = [85], {85: 0}, {85: frozenset({1, 2})}
    c2.delivered_in, b1.delivered_in = {85: (2,)}, {85: (0, 1)}
    interest = sim.core_interest()
    assert interest[85] == frozenset({1, 2})  # (a by b1's table; c by the sender's own)
    assert not sim.site_owes(0, 85, interest) and sim.site_owes(2, 85, interest)
    b1.core_sites[85] = frozenset({0, 1, 2})  # (had a2 still been in g3 there, a owes it)
    assert sim.core_interest()[85] == frozenset({0, 1, 2})
    del b1.core_sites[85]  # (nobody of a view holding a delivered it: the sender's table)
    assert sim.core_interest()[85] == frozenset({0, 1, 2})


#: --lan-splits --client-views seeds where a site was cut off (a fork in 879 and 1201, a HOP
#: cut in 1092) and its daemon's table missed the others' LEAVE: the checker's
#: (test_a_sites_interest_is_read_where_a_view_holding_it_delivered_the_message)
CLIENT_VIEW_INTEREST_SEEDS = [879, 1092, 1201]


@pytest.mark.parametrize("seed", CLIENT_VIEW_INTEREST_SEEDS)
def test_a_message_pruned_for_a_site_without_a_member_in_the_view_that_delivered_it_seed(seed):
    res = sites_sim.run_seed(seed, lan_splits=True, client_views=True)
    assert res.stats.get("site_forks") or res.stats.get("cuts"), res.summary()
    assert res.stats.get("skips_sent"), res.summary()
    assert res.violations == [], "seed %d: %s" % (seed, res.summary())


def test_a_daemon_that_takes_the_state_joins_the_view_the_state_holds():
    """(seed 1256 --lan-splits --client-views) b2, restarted, took the state of view 0 and,
    in the same poll, its gateway installed view 1: the simulator recorded the view it came
    in as view 1 (read after the poll), so a message it delivered in view 0's transitional
    part counted in view 1 (one view). SiteSync("install") says the state's view."""
    sim = sites_sim.SitesSim(1)
    gw = types.SimpleNamespace(view_seq=1, live_sites=[1], site_epochs={}, site_id=1, epoch=1, name="b2")
    node = sites_sim.Node(None, gw, None)
    node.install_view = (0, [0, 1, 2])
    sim.joined_view(node)
    assert node.views[-1][:3] == (sites_sim.JOINED, 0, ()) and node.install_view is None
    sim.joined_view(node)  # (no install read: the gateway's view, as before)
    assert node.views[-1][:3] == (sites_sim.JOINED, 1, (1,))

def test_planted_group_core_that_tells_joins_in_every_view_is_caught_by_the_client_view_checker(monkeypatch):
    """A group core that gives every JOIN and LEAVE its REG_MEMB at once (GroupCore's, as
    before s13) shows its fork's client a REG_MEMB inside the fork's closing transitional view
    (seed 41; it was seed 2, whose run moved when a ring's recovered records were dated at
    that ring's end, s18-tail) and one naming a member of a site that refuses the fork (seed 7)."""
    monkeypatch.setattr(sr.SitesGroupCore, "_notify", sr.GroupCore._notify)
    kinds = {}
    for seed in (41, 7):
        res = sites_sim.run_seed(seed, lan_splits=True, client_views=True)
        kinds[seed] = [v for v in res.violations if sites_sim.kind_of(v) == sites_sim.CLIENT_VIEW]
    assert any("inside the fork's closing transitional view" in v for v in kinds[41]), kinds
    assert any("a fork's REG_MEMB" in v for v in kinds[7]), kinds


def test_planted_group_core_that_puts_a_joiner_with_the_old_members_is_caught_by_the_own_vs_set_check(monkeypatch):
    """A group core that forgets who joined after the TRANSITION (before s15) shows, in seed
    67, b2's client a vs_set naming b3's, which was not in its previous view, and b3's client,
    with no view of g3 before, a vs_set in company."""
    monkeypatch.setattr(sr.SitesGroupCore, "_take_joiners", lambda self, group: set())
    res = sites_sim.run_seed(67, lan_splits=True, client_views=True)
    views = [v for v in res.violations if sites_sim.kind_of(v) == sites_sim.CLIENT_VIEW]
    assert any("b2's client, group g3: its own vs_set" in v and "not in its previous view" in v for v in views), views
    assert any("b3's client, group g3: a REG_MEMB puts it, with no view" in v for v in views), views


def test_planted_group_core_that_announces_a_rejoin_at_once_is_caught_by_the_client_view_checker(monkeypatch):
    """A group core whose REJOIN gives its REG_MEMB at once, though the group keeps members at
    a site the sites' transitional view lost (before _hold_rejoin), shows b2's and b3's
    clients, in seed 6, a REG_MEMB in that transitional view naming a1's member: b3 forked
    since its last regular view of the sites (the fork rule), b2 took the kept state since
    (the transitional view's rule). Pinned to the HOP links of before _ask_again: at b's start
    b2 and b1 both asked a1 and b1's link to a1 fell silent for a second; asked again at once,
    the run goes elsewhere and b3's fork never shows such a REG_MEMB (no seed of 1-109 does).
    And to the resends of before _on_the_way (s20-tail: every send by positions from the
    positions alone), with which the run moved too."""
    monkeypatch.setattr(sr.SitesGroupCore, "_waits_for_view", lambda self, group, hold: False)
    monkeypatch.setattr(sr.SiteGateway, "_ask_again",
                        lambda self, site, peer, now: self.counters.update(["hellos_old_session"]))
    monkeypatch.setattr(sr.SiteGateway, "_on_the_way", lambda self, site: {})
    res = sites_sim.run_seed(6, lan_splits=True, client_views=True)
    naming_a1 = [v for v in res.violations if sites_sim.kind_of(v) == sites_sim.CLIENT_VIEW and "#c#a1" in v]
    assert any("b3's client, group g1: a fork's REG_MEMB" in v for v in naming_a1), res.summary()
    assert any("b2's client, group g1: a REG_MEMB" in v and "transitional view [1] names a site it lost" in v
               for v in naming_a1), res.summary()


def test_planted_group_core_that_gives_no_transition_is_caught_by_the_client_view_checker(monkeypatch):
    """A group core whose TRANSITIONs never reach its clients: a REG_MEMB CAUSED_BY_NETWORK
    then ends, with no TRANSITION, a view whose members it leaves out of the client's vs_set
    (the rule the h9599 doubt added; the core test of the cause is in test_sites_core.py,
    test_a_daemon_that_sat_out_a_ring_...)."""
    enqueue = sr.SitesGroupCore._enqueue
    monkeypatch.setattr(sr, "encode_transition", lambda group, group_id: None)
    monkeypatch.setattr(sr.SitesGroupCore, "_enqueue",
                        lambda self, session, data: None if data is None else enqueue(self, session, data))
    res = sites_sim.run_seed(7, lan_splits=True, client_views=True)
    views = [v for v in res.violations if sites_sim.kind_of(v) == sites_sim.CLIENT_VIEW]
    assert any("a REG_MEMB CAUSED_BY_NETWORK with no TRANSITION before it" in v for v in views), res.summary()

def test_planted_fork_that_takes_the_kept_state_without_delivering_its_held_messages_is_a_loss():
    """Without close_fork's deliveries a fork's daemon never delivers messages of its own
    clients that its merge held: no loss (self-delivery) catches it."""
    def no_close(name, gateway):
        gateway.close_fork = lambda now: None
    for seed in (40, 56):
        res = sites_sim.SitesSim(seed, on_start=no_close, lan_splits=True).run()
        assert sites_sim.LOSS in res.kinds(), res.summary()


def test_planted_unreliable_record_applied_twice_is_a_duplicate_violation():
    """A representative that puts each UNRELIABLE record from a link into its ring twice: its
    site's daemons deliver it twice, which the duplicate checker sees."""
    def twice(name, gateway):
        from_link = gateway._from_link

        def doubled(site, r):
            from_link(site, r)
            if r.kind == sr.SITE_UNRELIABLE:
                from_link(site, r)
        gateway._from_link = doubled
        gateway._unreliable_again = lambda r: False  # (the receiving end's guard off too)
    case = dataclasses.replace(sites_sim.case_for_seed(2), cut_for_good=None, cut_site=None,
                               cut_after_s=None, heal_after_s=None)  # (seed 2's calm case, as before)
    sim = sites_sim.SitesSim(2, case=case, on_start=twice, services=sites_sim.SERVICES + [sr.UNRELIABLE_MESS])
    res = sim.run(drain_max_s=5.0)
    assert sites_sim.DUPLICATE in res.kinds(), res.summary()


def stale_parent(name, gateway):
    """The race of a tree change, on purpose and all the time: a representative passes each
    UNRELIABLE record on as its tree says, and also to every other neighbour but the origin,
    as a site that still holds an old tree (or already a new one) would. Every site with two
    neighbours then gets copies through two parents."""
    forward = gateway._forward_unreliable

    def to_every_neighbour(r):
        forward(r)
        if not gateway.is_representative():
            return
        tree = gateway.trees.get(r.site)
        children = tree.children(gateway.site_id) if tree is not None else []
        for site in gateway.links:
            if site != r.site and site not in children:
                gateway._out_bytes[site] += sr.encode_site_record(r)
                gateway.counters["test_stale_forwarded"] += 1
    gateway._forward_unreliable = to_every_neighbour


@pytest.mark.parametrize("seed", [1, 3, 4])
def test_unreliable_copies_through_two_parents_are_delivered_once(seed):
    """Seeds 525 and 662 (--hostile 0.1 --groups --unreliable) delivered an UNRELIABLE
    message twice: a tree change had two sites each send it to a third. Here every
    representative does that for every record: the copies come, and each message is still
    delivered once at every daemon."""
    sim = sites_sim.SitesSim(seed, on_start=stale_parent, groups=True,
                             services=sites_sim.SERVICES + [sr.UNRELIABLE_MESS])
    res = sim.run()
    assert res.violations == [], res.summary()
    gateways = [node.gateway for node in sim.nodes.values()]
    assert sum(g.counters["test_stale_forwarded"] for g in gateways) > 0, res.summary()
    assert sum(g.counters["site_unreliable_duplicates"] for g in gateways) > 0, res.summary()
    assert sum(g.counters["site_unreliable_delivered"] for g in gateways) > 0, res.summary()


#: seeds of --groups --unreliable (with --hostile P, or 0) that once failed: an UNRELIABLE
#: message delivered twice while the trees changed (a takeover, a cut)
UNRELIABLE_SEEDS = [(525, 0.1), (662, 0.1), (180, 0.0), (364, 0.0), (447, 0.0)]


@pytest.mark.parametrize("seed, hostile", UNRELIABLE_SEEDS)
def test_unreliable_seeds_deliver_nothing_twice(seed, hostile):
    res = sites_sim.run_seed(seed, unreliable=True, groups=True, hostile=hostile)
    assert res.violations == [], "%s\nreplay: %s" % (
        res.summary(), sites_sim.replay_command(seed, unreliable=True, groups=True, hostile=hostile))


#: --unreliable --groups seeds where a joined site decided a merge first and its messages of
#: the merged view passed a third site's gate before that site decided: 81225, c1's seq
#: 130-135 never went on from a1 to b1, which took seq 136 for the start of c's stream; a1
#: delivered c1's SAFE 130 that b1 never held (test_sites_core.py -k passed_the_gate_before_the_decision).
#: Pinned to the HELLO wait of before s21-tail (a site whose HELLO leaves us out is suspected
#: at once since: the run moves, and the case no longer comes up)
MERGE_DECISION_FORWARD_SEEDS = [81225]


@pytest.mark.parametrize("seed", MERGE_DECISION_FORWARD_SEEDS)
def test_a_joined_sites_records_that_passed_before_the_decision_reach_the_third_site(seed, monkeypatch):
    monkeypatch.setattr(sr.SiteGateway, "_suspect_now_it_left_us_out", lambda self, site, now: None)
    sim = sites_sim.SitesSim(seed, services=sites_sim.SERVICES + [sr.UNRELIABLE_MESS], groups=True)
    res = sim.run()  # (run_seed's, with its nodes)
    assert res.violations == [], "%s\nreplay: %s" % (
        res.summary(), sites_sim.replay_command(seed, unreliable=True, groups=True))
    assert any(node.gateway.counters["site_records_forwarded_at_a_merge_decision"]
               for node in sim.nodes.values()), res.summary()  # (the case came up)



#: --groups --client-views --cut-after-merge seeds where a third site's link to the joined site
#: died between its neighbour's decision of the merge and that neighbour's install: 6061, b1
#: became c1's parent in a's tree holding a's seq 77..96 (join_hold, not `kept`); c1 took seq 97
#: for the start of a's stream and a1 delivered a's SAFE seq 85 on c's ARU though c never held it
#: (SiteGateway._resend_joined_held; found by s22-relay's `--seeds 1000 --first 6001
#: --cut-after-merge-only --groups --client-views`)
MERGE_HOLD_NEW_CHILD_SEEDS = [6061]


@pytest.mark.parametrize("seed", MERGE_HOLD_NEW_CHILD_SEEDS)
def test_a_new_child_in_a_joined_sites_tree_gets_what_waits_for_the_merge(seed):
    sim = sites_sim.SitesSim(seed, services=sites_sim.SERVICES, groups=True, client_views=True,
                             cut_after_merge=True)
    res = sim.run()  # (run_seed's, with its nodes)
    assert res.violations == [], "%s\nreplay: %s" % (
        res.summary(), sites_sim.replay_command(seed, groups=True, client_views=True, cut_after_merge=True))
    assert any(node.gateway.counters["site_records_resent_from_a_merge_hold"]
               for node in sim.nodes.values()), res.summary()  # (the case came up)


#: --groups --client-views --cut-after-merge seeds where the decision of a view chained after a
#: merge not installed yet took the ARU of a dead site of our old view from a joined site's
#: PROPOSE: its stream of it had opened at the merge's limit (SiteGateway._presumed_aru; found
#: by `bench/sites_soak.py --seeds 2000 --cut-after-merge-only --groups --client-views`)
PRESUMED_ARU_SEEDS = [1430]


@pytest.mark.parametrize("seed", PRESUMED_ARU_SEEDS)
def test_a_joined_sites_aru_of_a_site_of_our_old_view_makes_nothing_safe_there(seed):
    """Seed 1430: b cut off and healed; a and c (old view {a, c}) decide merge view 2 with b
    (limit lts 458857), and the a - c link dies for good with a's seq 28..32 (lts 458851..
    458856, below the limit) not across: c's last ARU was 458840. a leaves c out by view 3,
    chained after the merge; b's PROPOSE said c's ARU 458857, its stream of c's opening. On
    it a1 delivered its SAFE seq 31 in view 1's regular part {a, c}; c never held it. It
    belongs in view 2's transitional part, {a} alone."""
    sim = sites_sim.SitesSim(seed, services=sites_sim.SERVICES, groups=True, client_views=True,
                             cut_after_merge=True)
    res = sim.run()
    assert res.violations == [], "%s\nreplay: %s" % (
        res.summary(), sites_sim.replay_command(seed, groups=True, client_views=True, cut_after_merge=True))
    for name in ("a1", "a2"):
        node = sim.nodes[name]
        assert node.gateway.counters["site_arus_presumed_by_a_joined_site"] == 1, name
        if seed == 1430:  # (the case as read: a's SAFE seq 31, which c lacks, after TRANSITIONAL)
            safe = next(s for s, key in node.key_of.items() if key == (0, 31))
            assert sim.submitted[safe][0] == sr.SAFE_MESS
            assert node.delivered_in[safe] == (0,), (name, node.delivered_in[safe])
            assert (0, 31) not in sim.nodes["c1"].held_at

def _case_as_before(seed):
    """Seed 2 draws a merge through a third site since session 10 (stream +22); the tests
    written for its calm case keep it (that draw with groups, and with UNRELIABLE: in
    test_a_merge_through_a_third_site_after_the_joining_site_reported_its_links_down)."""
    case = sites_sim.case_for_seed(seed)
    if seed != 2:
        return case
    return dataclasses.replace(case, cut_for_good=None, cut_site=None, cut_after_s=None, heal_after_s=None)


# ---- groups: a site owes a message only if it has a member of its group then -------------------

class DropGroupAtSite:
    """Every daemon of one site drops the data of one group that come from the other sites:
    all of it (`always`), or only where the site has no member of the group (what pruning may
    do; a site's own messages are in its ring anyway)."""

    def __init__(self, sim_ref, site, group, always):
        self.sim_ref, self.site, self.group, self.always = sim_ref, site, group, always
        self.dropped = 0

    def __call__(self, name, outputs):
        sim = self.sim_ref[0]
        if sim.site_of[name] != self.site:
            return outputs
        members = {g: set(d) for g, d in sim.nodes[name].members.items()}  # as record_delivery will
        kept = []
        for out in outputs:
            msg = getattr(out, "msg", None)
            if isinstance(out, sr.Deliver) and msg.kind in (sr.JOIN, sr.LEAVE):
                (members.setdefault(msg.groups[0], set()).add if msg.kind == sr.JOIN
                 else members.setdefault(msg.groups[0], set()).discard)(msg.origin)
            elif isinstance(out, sr.Deliver) and msg.kind == sr.DATA and msg.groups == [self.group] \
                    and sim.site_of[msg.origin] != self.site \
                    and (self.always or not any(sim.site_of[d] == self.site for d in members.get(self.group, ()))):
                self.dropped += 1
                continue
            kept.append(out)
        return kept


def _run_groups(seed, site, always):
    ref = [None]
    flt = DropGroupAtSite(ref, site, "g1", always)
    sim = sites_sim.SitesSim(seed, delivery_filter=flt, groups=True)
    ref[0] = sim
    return sim.run(drain_max_s=5.0), flt


def test_with_groups_joins_and_leaves_go_on_during_the_traffic_and_every_guarantee_holds():
    for seed in (2, 7, 8):
        res = sites_sim.SitesSim(seed, case=_case_as_before(seed), groups=True).run()
        assert res.violations == [], res.summary()
        assert res.stats["group_changes"] > 8 and res.stats["sites_without_member"] > 0, res.summary()


def test_planted_site_missing_the_messages_of_a_group_it_has_a_member_in_is_a_loss_violation():
    # (seed 7, site b: b has a member of g1 at times, and at times none)
    res, flt = _run_groups(7, 1, always=True)
    assert flt.dropped > 0 and sites_sim.LOSS in res.kinds(), res.summary()


def test_a_site_may_go_without_the_messages_of_a_group_it_has_no_member_in():
    """What pruning is allowed to leave out: the checkers stay quiet."""
    res, flt = _run_groups(7, 1, always=False)
    assert flt.dropped > 0 and res.violations == [], res.summary()


# ---- a merge that brings in a site reached only through a third one ----------------------------

def _merge_through_a_third_site_sim(heal_after_s):
    """A mesh of three whose a - c link is cut from the start (a and c reach each other
    through b); site a is cut off at 3 s and its link to b comes back heal_after_s later, the
    a - c link never: the views {a} and {b, c} merge through b."""
    case = sites_sim.case_for_seed(MESH_CUT_SEED)
    case.site_kill_after_s = case.rep_crash_after_s = case.restart_name = None
    case.merge_kill_after_s = case.site_restart_after_s = None
    case.cut_for_good = (0, 2)
    case.cut_site, case.cut_after_s, case.heal_after_s = 0, 3.0, heal_after_s
    return sites_sim.SitesSim(MESH_CUT_SEED, case=case)


@pytest.mark.parametrize("heal_after_s", [2.2, 3.0, 6.0])
def test_a_merge_that_brings_in_a_site_reached_through_a_third_one_is_not_parked_for_ever(heal_after_s):
    """a gets c's MERGE through b, and c gets a's, with no direct link between them: each
    parked it until that link started, for ever. Now, after a grace, each reports its link to
    the other down and takes the MERGE; the merged view's trees go through b."""
    sim = _merge_through_a_third_site_sim(heal_after_s)
    res = sim.run(drain_max_s=15.0)
    assert res.violations == [], res.summary()
    for name, node in sim.live().items():
        assert node.views[-1][0] == sr.CONF_REGULAR and node.views[-1][2] == (0, 1, 2), (name, node.views)
    rep_a, rep_c = (sim.nodes[sim.case.sites[s][0]].gateway for s in (0, 2))
    assert rep_a.counters["site_merges_routed_around"] >= 1 and rep_c.counters["site_merges_routed_around"] >= 1
    for node in sim.live().values():
        trees = node.gateway.trees
        assert trees[0].parent[2] == 1 and trees[2].parent[0] == 1  # a -> b -> c, c -> b -> a


def test_the_simulator_kills_a_site_around_a_merge_in_some_seeds_only():
    """The merge kill has a Random of its own, drawn only in seeds whose cut heals with no other
    kill or restart: the other scenarios keep their draws."""
    drawn = [s for s in range(1, 1500) if sites_sim.case_for_seed(s).merge_kill_after_s is not None
             and not sites_sim.case_for_seed(s).merge_kill_rep]
    assert 423 in drawn and len(drawn) > 10
    for seed in drawn:
        case = sites_sim.case_for_seed(seed)
        assert case.heal_after_s is not None and case.site_kill_after_s is None
        assert case.rep_crash_after_s is None and case.restart_name is None



#: the merge kills (site, seconds after the heal) the simulator drew in seeds 1..1500 before
#: the draw with a representative crash (taken from main at 8122846)
MERGE_KILLS_BEFORE = {
    8: (2, 1.0094), 12: (2, 0.0278), 111: (0, 0.7213), 154: (0, 0.6898), 163: (0, 0.6581),
    266: (2, 0.0239), 291: (0, 0.3238), 423: (0, 0.6308), 467: (0, 0.4248), 519: (0, 1.186),
    538: (0, 0.1906), 611: (1, 1.0975), 627: (2, 0.407), 691: (1, 0.2), 824: (1, 0.7311),
    943: (0, 0.8979), 1007: (1, 0.1642), 1089: (1, 0.3342), 1099: (0, 1.1466), 1160: (0, 0.202),
    1172: (1, 0.1455), 1198: (0, 0.5441), 1236: (0, 0.1586), 1240: (1, 0.4571), 1369: (1, 1.0514),
    1385: (1, 0.5961), 1410: (1, 0.9488), 1421: (1, 0.9096)}


def test_the_simulator_draws_the_merge_kill_as_before():
    """The merge kill with a representative crash comes from the same stream (+21), drawn
    only in seeds the old draw never fires in: every other seed's case is as it was."""
    for seed in range(1, 1501):
        case = sites_sim.case_for_seed(seed)
        if case.merge_kill_rep:
            assert seed not in MERGE_KILLS_BEFORE and case.rep_crash_after_s is not None, seed
            continue
        now = None if case.merge_kill_after_s is None else (case.merge_kill, round(case.merge_kill_after_s, 4))
        assert now == MERGE_KILLS_BEFORE.get(seed), seed


def test_the_simulator_kills_a_representative_during_a_merge_in_seeds_with_a_representative_crash():
    drawn = [s for s in range(1, 1500) if sites_sim.case_for_seed(s).merge_kill_rep]
    assert len(drawn) > 20
    for seed in drawn:
        case = sites_sim.case_for_seed(seed)
        assert case.heal_after_s is not None and case.site_kill_after_s is None
        assert case.rep_crash_after_s is not None and len(case.sites[case.merge_kill]) > 1


#: seeds that draw a representative killed about when the healed views decide their merge, in
#: a run whose representative crashed before (stream +21, merge_kill_rep), picked among those
#: whose representative had proposed the merge and not installed it yet when it died (its
#: gateway still merging), at SITE_GRACE_S 0.6 s and 1.0 s alike: 1197 a line, 1444 and 1928 a
#: mesh, 1648 a mesh and 1346 two sites where the merge kill takes the representative of the
#: site whose representative crashed, 2003 a mesh. (It was 221, 654, 747, 874, 1346, 2003:
#: 654, 747 and 874 no longer killed a merging representative on main, nor 221 at 0.6 s.)
MERGE_KILL_REP_CRASH_SEEDS = [1197, 1444, 1928, 1648, 1346, 2003]


@pytest.mark.parametrize("seed", MERGE_KILL_REP_CRASH_SEEDS)
def test_a_representative_killed_while_the_merge_is_decided(seed):
    sim = sites_sim.SitesSim(seed)
    res = sim.run()
    assert res.violations == [], "%s\nreplay: %s" % (res.summary(), sites_sim.replay_command(seed))
    assert sim.merge_killed is not None and sim.case.merge_kill_rep  # (not a vacuous pass)
    assert res.stats["merge_rep_kills_while_merging"] == 1, res.summary()  # (the merge undecided there)



@pytest.mark.timeout(120)
def test_seed_61081_lan_splits_a_merge_kill_seed_whose_run_spun_for_ever():
    """(issue 10, --lan-splits --merge-kills-only) The run never ended: b3, site b's fork's
    representative, parked MERGEs, stood down and took b2's state with them still parked; its
    next deadline stayed in the past and the simulator re-ran its tick at 5.005 s for ever
    (test_sites_core: test_a_daemon_that_stands_down_keeps_no_parked_merge_...). Then it ended
    with a loss: site b forked twice (b2 and b3), both forks answered the heal, and a1 merged
    b3's incarnation, c1 b2's, in one view 2; b3 then took b2's state and a1, reading b3's
    epoch and reaching b round through c1, refused b2's HELLOs for ever (4 of b's messages
    never delivered at a1). A merge now takes one incarnation of each site: view 2 is
    withdrawn at every site, and view 3 merges b3's everywhere (test_sites_core:
    test_a_merge_takes_one_incarnation_of_a_site_and_withdraws_...)."""
    sim = sites_sim.SitesSim(61081, lan_splits=True)
    res = sim.run()
    assert res.violations == [], "%s\nreplay: %s" % (res.summary(), sites_sim.replay_command(61081, lan_splits=True))
    # (two forks still; the two-incarnation clash itself no longer meets in this run since
    # session 17 took back the skip of the hold for fresh daemons: the core test plants it)
    assert res.stats["site_forks"] == 2 and res.stats.get("merge_rep_kills") == 1, res.summary()


def test_a_forced_merge_kill_kills_the_representative_the_scan_asks_for():
    """bench/sites_merge_kill_scan.py's case: seed 423 (a line a - b - c), b's representative
    killed 0.23 s after the heal, just after b decided the merge: the next of b's ring takes
    the merge over. (The scan's kill point after "b1 decides the merge"; it was 0.6113 s
    while SITE_GRACE_S was 1.0 s: rerun the scan with --site 1 if the timing moves.)"""
    case = sites_sim.forced_merge_kill_case(423, 0.2299, site=1)
    sim = sites_sim.SitesSim(423, case=case)
    res = sim.run()
    assert res.violations == [], res.summary()
    assert sim.merge_killed == "b1" and res.stats["merge_rep_kills_while_merging"] == 1
    with pytest.raises(ValueError):
        sites_sim.forced_merge_kill_case(423, 0.5, site=0)  # (a has one daemon)
    no_heal = next(s for s in range(1, 100) if sites_sim.case_for_seed(s).heal_after_s is None)
    with pytest.raises(ValueError):
        sites_sim.forced_merge_kill_case(no_heal, 0.5)


def test_a_restarted_representative_killed_after_a_heal_seed_4314(monkeypatch):
    """Seed 4314 (merge_kill_rep): site c (c1 c2 c3) cut off and healed; c1, restarted, is killed
    0.86 s after the heal, c2 takes over. It was a strict xfail on branch s12-mergekill: c2 and
    c3 delivered nothing in the merged view (c's SAFE messages, then everything behind them).
    The cause, read on that branch's code: b1's last ARU of view 1 (lts 270) reached c2 after c
    installed the merged view 2, so c's ring refused it (an older view's), and b1's ARU of view
    2 (lts 269) was then dropped at c2's link as a duplicate of it: site b's ARU never counted
    in view 2. Seed 3163's fix (an ARU's duplicate mark per view, 1b21b06) alone makes that code
    pass; test_sites_core's test_an_aru_of_the_merged_view_is_taken_at_or_below_... plants it.
    On main the timing moved and the seed passes with or without that fix.
    Pinned at SITE_GRACE_S 1.0 s: at 0.6 s the heal comes 0.4 s sooner, c1 is not c's
    representative then, and the merge kill takes c2 (no takeover by c2 to see)."""
    monkeypatch.setattr(sr, "SITE_GRACE_S", 1.0)
    sim = sites_sim.SitesSim(4314)
    res = sim.run()
    assert res.violations == [], res.summary()
    # (the scenario, not a vacuous pass: the restarted c1 killed while merging, c2 in its place)
    assert sim.case.restart_name == "c1" and sim.merge_killed == "c1", (sim.merge_killed, res.summary())
    assert sim.nodes["c2"].gateway.is_representative()


#: (seed, site, seconds after the heal) representatives killed during a merge that once
#: failed: bench/sites_merge_kill_scan.py found them (both seeds draw the GIVEUP race's recut too)
MERGE_KILL_SCAN_POINTS = [(35, 0, 0.5336), (35, 0, 0.8), (35, 0, 1.3), (35, 0, 1.6956), (115, 1, 1.561),
                          (115, 1, 2.2434)]


@pytest.mark.parametrize("seed, site, at_s", MERGE_KILL_SCAN_POINTS)
def test_a_representative_that_takes_over_during_a_merge_watches_the_joining_sites(seed, site, at_s):
    """Seed 35 (a line a - b - c; a = a1, a2; b dies after the recut): a1 killed just after a
    decided the merge (0.5336 s after the heal) or later (1.3, 1.6956 s). a2 took over with the
    merge decided and started links to its view's neighbours only (none), or took b's MERGE
    from its offer after b died: nobody suspected b, and a2 waited for it for ever ("no loss":
    a2 never delivered its own messages). Now a joining site with no link is watched: the
    next view leaves it out, or the merge not decided yet is given up."""
    sim = sites_sim.SitesSim(seed, case=sites_sim.forced_merge_kill_case(seed, at_s, site=site))
    res = sim.run()
    assert res.violations == [], "%s\nreplay: python3 bench/sites_merge_kill_scan.py %d --site %d --at %s --log" % (
        res.summary(), seed, site, at_s)
    assert sim.merge_killed is not None
    if (seed, at_s) == (35, 0.8):  # (the merge not decided yet: given up)
        # (1.3 s on the branch that found it; the epochs passed on and the takeover rule moved
        # the window to 0.45-1.0 s. With them, these points pass even without the give-up: a
        # later rule covers it, so this only shows the path still runs)
        assert sim.nodes["a2"].gateway.counters["site_merges_given_up_unlinked"] == 1


def test_seed_1319_a_merge_taken_from_a_view_change():
    """Seed 1319 as drawn (a regression seed kept out of REGRESSION_SEEDS: it draws the GIVEUP
    race, see test_the_simulator_draws_the_giveup_race_in_seeds_with_no_other_cut_or_death).
    It failed on branch s12-tail and on main before the epochs were passed on (b1 never
    delivered 280 of 407); today's timing gets b's link to a up before a dies, so the hole it
    took is planted below."""
    res = sites_sim.run_seed(1319)
    assert res.violations == [], "%s\nreplay: %s" % (res.summary(), sites_sim.replay_command(1319))
    assert res.stats.get("recuts") == 1, res.summary()  # (the recut ran: the race's premise)


def test_a_merge_taken_from_a_view_change_watches_the_joining_site():
    """Seed 1319 (a = a1, a2; b = b1) with a dying 0.14 s after the recut link comes back (the
    seed draws 0.444 s; at 0.14 s the run takes seed 1319's path on branch s12-tail). The merged
    view 2 was decided on both sides; a chained view 3 without b after the recut, b installed 2
    late, then took a's MERGE for view 4 as made in another view than ours: b left a out (its
    view 3), proposed view 4 from it and decided it at once with a's MERGE, its link to a gone
    with its view 3. a died before b's HELLO: no link, no silence rule, so b waited for a's
    READY for ever ("no loss": b1 never delivered 281 of 407). Now the representative watches
    a joining site it has no link with from the merge's start (SiteGateway._watch_joining):
    view 5 leaves a out, chained after view 4. Fails with that call in _start_merge removed."""
    case = dataclasses.replace(sites_sim.case_for_seed(1319), recut_kill_after_s=0.14)
    sim = sites_sim.SitesSim(1319, case=case)
    res = sim.run()
    assert res.violations == [], res.summary()
    assert res.stats.get("recuts") == 1
    assert sim.nodes["b1"].gateway.merging is None
    assert 0 not in sim.nodes["b1"].gateway.live_sites


# ---- a READY lost with the representative that installed the merge (seed 2004's race) ----------

#: two sites, a (a1, a2) and b (b1, b2); the link is cut and heals 4.6 s later. (It was seed
#: 314 while SITE_GRACE_S was 1.0 s; at 0.6 s a's READY never reaches b1 there, the case's
#: premise, and b1 never installs the merge. Seeds 1-700 at 0.6 s: 632 and 657 give the case)
READY_SEED = 657


class _ReadyLostSim(sites_sim.SitesSim):
    """From b1's decision of the merge on, everything site b sends to site a is lost; b1 is
    killed the moment it installs the merged view (it had every READY, a lacked b's), and
    with `restart_s` started again that much later, the wire kept cut until it is up to date
    (it takes the sites' state from its ring and represents site b again)."""

    restart_s = None
    phase = 0

    def step(self):
        super().step()
        b1 = self.nodes["b1"]
        g = b1.gateway
        if self.phase == 0 and g.merging is not None and g.site_id in g.merging.ready:
            self.phase = 1
            self.cut_pairs.add((1, 0))
        elif self.phase == 1 and g.merging is None and g.view_seq >= 2:
            self.phase = 2
            self.crash("b1")
            if self.restart_s is None:
                self.cut_pairs.discard((1, 0))
            else:
                self.push(self.now + self.restart_s, "restart", "b1")
                self.restart_pending = True
        elif self.phase == 2 and b1.restarted and b1.synced_at is not None:
            self.phase = 3
            self.cut_pairs.discard((1, 0))


@pytest.mark.parametrize("restart_s", [None, 1.0])
def test_a_ready_lost_with_the_representative_that_installed_the_merge_is_sent_again(restart_s):
    """Site b installed the merge (it held every READY) and its representative died before its
    own READY reached a (python3 tests/sites_sim.py 2004 on the code of session 9: a
    restarted daemon of site c took the state and the links during the merge). b's next
    representative ignored a's HELLO, which still named a's old view ("it left us out"), and
    had no READY to send: a waited for it for ever, b left a out and asked to merge again,
    which a, still installing the first merge, refused. Now a HELLO of an older view from a
    site whose READY of our last merge we hold starts the link, and a link that starts gets
    those READYs (they are in the state a restarted daemon takes, restart_s=1.0)."""
    sim = _ReadyLostSim(READY_SEED)
    sim.restart_s = restart_s
    case = sim.case
    assert len(case.sites) == 2 and case.heal_after_s is not None and case.site_kill_after_s is None
    assert case.rep_crash_after_s is None and case.restart_name is None
    res = sim.run(drain_max_s=15.0)
    assert sim.phase == (2 if restart_s is None else 3)
    assert res.violations == [], res.summary()
    for name, node in sim.live().items():  # the merge of the heal itself, never a second one
        kind = sites_sim.JOINED if node.restarted else sr.CONF_REGULAR  # (b1 came in view 2)
        assert node.views[-1][:3] == (kind, 2, (0, 1)), (name, node.views)
    rep_b = sim.nodes[sim.nodes["a1"].gateway.links[1].peer[0]].gateway
    assert rep_b.name == ("b2" if restart_s is None else "b1") and rep_b.merged_readies.keys() == {0, 1}



def test_the_simulator_draws_a_merge_through_a_third_site_in_mesh_seeds_with_no_other_cut():
    """A MERGE parked behind a site reached only through a third one has a Random of its own
    (stream +22), drawn only in meshes of three with no other cut and no kill: every other seed,
    the regression seeds included, keeps its trajectory. Seed 16 draws it, and its merge is
    taken round the dead link."""
    drawn = [s for s in range(1, 1500) if sites_sim.case_for_seed(s).cut_for_good is not None]
    assert 16 in drawn and len(drawn) > 40
    for seed in drawn:
        case = sites_sim.case_for_seed(seed)
        assert len(case.sites) == 3 and all(c > 0 for i, row in enumerate(case.costs) for j, c in enumerate(row) if i != j)
        assert case.cut_site in case.cut_for_good and case.site_kill_after_s is None and case.heal_after_s
    assert set(drawn) & set(REGRESSION_SEEDS) <= {711}  # (711: a regression seed of this draw)
    sim = sites_sim.SitesSim(16)
    res = sim.run()
    assert res.violations == [], res.summary()
    assert res.stats.get("site_merges_routed_around", 0) > 0
    for name, node in sim.live().items():
        assert node.views[-1][0] == sr.CONF_REGULAR and node.views[-1][2] == (0, 1, 2), (name, node.views)



@pytest.mark.parametrize("seed, mix", [(711, {}), (941, {}), (2, {"groups": True}), (2, {"unreliable": True})])
def test_a_merge_through_a_third_site_after_the_joining_site_reported_its_links_down(seed, mix):
    """Seed 711: b is cut off from a (its b - c link is cut for good), reports its links down,
    and a and c leave it out; then b - a heals. c has no link to b: it parks the MERGEs until
    a grace says b is reached through a. c still held b's report of its cut to a, made before
    c's view left b out (b's later reports were records not for c): no path, parked for ever,
    and the views stayed split. Seed 2 (a - c cut for good, c cut off) is the same race seen
    from a: it ended split with --groups, short of messages with --unreliable, on session
    10's code. A site our view leaves out now takes its report with it. Seed 941 is 711's
    case (b cut off, b - c cut for good, a - b heals) at SITE_GRACE_S 0.6 s, where 711's
    timing no longer keeps the stale report (the planted test below runs 941)."""
    sim = sites_sim.SitesSim(seed, groups=mix.get("groups", False), services=sites_sim.SERVICES + (
        [sr.UNRELIABLE_MESS] if mix.get("unreliable") else []))
    res = sim.run()
    assert res.violations == [], "%s\nreplay: %s" % (res.summary(), sites_sim.replay_command(seed, **mix))
    assert res.stats.get("site_merges_routed_around", 0) > 0, res.summary()
    for name, node in sim.live().items():
        assert node.views[-1][0] == sr.CONF_REGULAR and node.views[-1][2] == (0, 1, 2), (name, node.views)


def test_planted_a_left_out_site_whose_links_report_stays_keeps_seed_941_split():
    """The fault the test above guards against, put back: with the stale report kept, the
    views of seed 941 never merge (a and c in [0, 2], b alone) and the view checker says so.
    (It was seed 711 while SITE_GRACE_S was 1.0 s; at 0.6 s 711's views merge even so.
    Seeds 1-1500 at 0.6 s with b cut off and b - c cut for good: 941 alone.)"""
    def keep_reports(name, gateway):
        gateway._forget_link_report = lambda site: None
    res = _run_planted(941, on_start=keep_reports)
    assert sites_sim.VIEW in res.kinds(), res.summary()


def test_the_simulator_draws_the_giveup_race_in_seeds_with_no_other_cut_or_death():
    """The GIVEUP race after a death has a Random of its own (stream +23), drawn only in
    two-site and line seeds with no other cut, kill, crash or restart: every other seed, the
    regression seeds included, keeps its trajectory."""
    drawn = [s for s in range(1, 1500) if sites_sim.case_for_seed(s).recut_after_s is not None]
    assert 411 in drawn and len(drawn) > 40
    for seed in drawn:
        case = sites_sim.case_for_seed(seed)
        assert case.heal_after_s and case.site_kill_after_s is None and case.rep_crash_after_s is None
        assert case.restart_name is None and case.merge_kill_after_s is None and case.cut_site is None
    assert not set(drawn) & set(REGRESSION_SEEDS)


class _GiveupBetweenDecisionsSim(sites_sim.SitesSim):
    """(seed 411's line a - b - c and its recut) The race driven by events, not by timing:
    the a - b link, cut again when b decided the merge, stays cut (a gives the merge up) until
    b proposes the view without a, chained after the merge; then it comes back (a's GIVEUP is
    resent to the link that starts) and what c sends b is held until b's ring has delivered
    that GIVEUP, so it comes between b's proposal and b's decision (c's PROPOSE). a dies 0.2 s
    after the heal."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.race = "cut"  # -> "held" (c's packets to b held) -> "released"
        self.held: list = []
        self.merge_view = None

    def recut_at_decision(self, node) -> None:
        armed = self.recut_armed
        super().recut_at_decision(node)
        if armed and not self.recut_armed:  # (the heal and a's death come from events below)
            self.events = [e for e in self.events if e[2] not in ("heal", "crash")]
            heapq.heapify(self.events)

    def step(self) -> None:
        super().step()
        b = self.nodes["b1"].gateway
        if self.race == "cut" and self.stats.get("recuts") and b.closing is not None \
                and 0 in b.closing.joined and b.closing_next is None \
                and b.proposed_view > b.closing.view_seq and 0 in b.proposal_lost:
            self.race, self.merge_view = "held", b.closing.view_seq
            self.push(self.now, "heal", "again")
            for name in self.case.sites[0]:
                self.push(self.now + 0.2, "crash", name)
        elif self.race == "held" and 0 in b.giveups and b.giveups[0].site_seq == self.merge_view:
            assert b.closing_next is None, "b decided the view without a before a's GIVEUP came"
            self.race = "released"
            held, self.held = self.held, []
            for raw in held:
                super().hop_send("c1", "b1", raw)

    def hop_send(self, src: str, dest: str, raw: bytes) -> None:
        if self.race == "held" and (src, dest) == ("c1", "b1"):
            self.held.append(raw)
            return
        super().hop_send(src, dest, raw)


def test_a_giveup_that_comes_between_the_proposal_and_the_decision_of_the_view_without_its_site():
    """A line a - b - c, the a - b link healed and cut again the moment b and c decide the
    merge (a lacks their MERGE and gives it up: GIVEUP); a's GIVEUP reaches b after b proposed
    the view without a (chained after the merge) and before b decided it; a dies. b withdrew
    the merge and kept its proposal for a site no longer in its view, decided it, and stopped
    (KeyError in _close_lost_streams); c, which had decided, installed the merge. Now a GIVEUP
    of a site that our chained proposal leaves out is ignored from the proposal on, as from
    the decision (and a withdrawn merge drops a chained proposal too). Driven by events
    (_GiveupBetweenDecisionsSim): it was a recut_for_s tuned by hand, which every change of
    timing elsewhere moved out of the window."""
    sim = _GiveupBetweenDecisionsSim(411)
    assert sim.case.recut_after_s is not None and sim.case.cut_pair == (0, 1)
    res = sim.run()
    assert sim.race == "released", sim.race
    assert res.violations == [], res.summary()
    views = {name: [v[:3] for v in node.views] for name, node in sim.live().items()}
    assert set(views) == {"b1", "c1"}, views
    # b and c: the same views (b that withdrew the merge went from view 1 to 4, c by 2 and 3)
    assert views["b1"] == views["c1"], views
    assert views["b1"][-1] == (sr.CONF_REGULAR, sim.merge_view + 1, (1, 2)), views
    assert res.stats.get("recuts") == 1 and res.stats.get("site_giveups_of_a_dead_site", 0) >= 1, res.summary()


class _LinkUpLateSim(sites_sim.SitesSim):
    """(seed 2's mesh) The a - b link is down from the start and comes up at heal_at_s."""

    #: after a's restart (1.0 s in) and before the views leave a out (its kill 0.5 s in, then
    #: the link's silence 1 s, SITE_GRACE_S and the views' agreement), so b takes a's new
    #: incarnation from a link's HELLO. It was 3.0 s while SITE_GRACE_S was 1.0 s; at 0.6 s a
    #: link up at 2.5 s or later (measured: 1.2-2.2 s lose, 2.5-4.0 s not) finds a left out,
    #: and the planted fault below loses nothing. 1.5 s loses at both graces
    heal_at_s = 1.5

    def step(self):
        super().step()
        if self.case.cut_for_good is not None and self.now >= self.heal_at_s:
            self.case.cut_for_good = None
            self.cut_pairs -= {(0, 1), (1, 0)}


def test_a_whole_site_restarted_whose_epoch_a_neighbour_never_heard_is_a_new_incarnation():
    """Seed 1432's oddity, made a failure on purpose: in a mesh whose a - b link is down from the
    start, b reads a's stream through c and never learns a's epoch (it comes only with a link's
    HELLO). Site a is killed 0.5 s in and started again 0.5 s later (a new epoch); when the a - b
    link comes up, b takes a's new incarnation for the old one (its site_seq 1, 2, 3... as the
    rest of the old stream): FIFO, no loss and virtual synchrony break. c, which knows a's
    epoch, refuses it. The fix: c passes the epochs it knows on as its link to b starts
    (EPOCH records "as heard"), so b refuses the new incarnation too (lab guide, *A whole site
    restarted*); test_planted_epochs_not_passed_on_... shows the failure without it."""
    case = sites_sim.case_for_seed(MESH_CUT_SEED)
    case.cut_site = case.cut_after_s = case.heal_after_s = case.recut_after_s = None
    case.rep_crash_after_s = case.restart_name = case.merge_kill_after_s = case.second_kill_after_s = None
    case.cut_for_good = (0, 1)
    case.site_kill, case.site_kill_after_s, case.site_restart_after_s = 0, 0.5, 0.5
    sim = _LinkUpLateSim(MESH_CUT_SEED, case=case)
    res = sim.run(drain_max_s=10.0)  # (without the failure, done about 8 s in)
    assert res.violations == [], res.summary()


def test_planted_epochs_not_passed_on_take_a_neighbours_new_incarnation_for_the_old_one(monkeypatch):
    """The test above with the epochs kept to first hand (as before: learned only from a link's
    HELLO): b never hears a's epoch from c, and reads a's new incarnation as the old one."""
    monkeypatch.setattr(sr.SiteGateway, "_tell_epochs", lambda self, site: None)
    monkeypatch.setattr(sr.SiteGateway, "_pass_on_epoch", lambda self, site, epoch: None)
    case = sites_sim.case_for_seed(MESH_CUT_SEED)
    case.cut_site = case.cut_after_s = case.heal_after_s = case.recut_after_s = None
    case.rep_crash_after_s = case.restart_name = case.merge_kill_after_s = case.second_kill_after_s = None
    case.cut_for_good = (0, 1)
    case.site_kill, case.site_kill_after_s, case.site_restart_after_s = 0, 0.5, 0.5
    res = _LinkUpLateSim(MESH_CUT_SEED, case=case).run(drain_max_s=10.0)
    # (the new incarnation's messages dropped as the old one's: a loss. FIFO is checked per
    # incarnation since branch s13-seeds, so the old and the new a1 are two senders there)
    assert sites_sim.LOSS in res.kinds(), res.summary()


@pytest.mark.xfail(strict=True, reason="open (s22-s301158): a new incarnation's HELLO before the "
                   "epoch heard from a neighbour; README issue-10 log, seed 301158")
def test_a_new_incarnations_hello_before_the_epoch_heard_of_the_old_one():
    """Seed 301158, the race left in the 1432 hole: c1 died 26 ms in, before its site learned
    site a's epoch; c2 took over alone. Site a died whole at 0.29 s and came back at 1.34 s
    (epoch 4, its streams afresh). b1 told c2 a's epoch 1 as c2's link to it started (1.25 s),
    but the record crossed a slow, lossy link and came at 1.40 s; a1's HELLO came first (1.39
    s), and c2, with no epoch of site a on record, took epoch 4 first hand (the heard one is
    never taken over it). c2 then read the new incarnation's FRONTIERs as old site a's, its
    site's ARU passed the old stream, and b1 delivered old a's SAFE 11 at 2.06 s while c2 never
    held it; no view changed for 30 s (b refused a's new incarnation, reaching it round through
    c2). Expected to fail until c2 learns the view's epoch of a before a HELLO can give it one."""
    res = sites_sim.SitesSim(301158).run()
    assert res.violations == [], res.summary()


def test_epoch_records_as_heard_and_frontiers_with_epochs_cross_the_wire():
    """EPOCH's flag (EPOCH_FROM_HELLO written as nothing: an older daemon's record reads the
    same), a FRONTIER's and an UNRELIABLE's epoch (not said: 0, as an older daemon wrote)."""
    body = sr.encode_message_body(sr.DaemonMessage(sr.DATA, "a1", "#u#a1", sr.UNRELIABLE_MESS, ["g"], data=b"x"))
    for r in (sr.SiteRecord(sr.SITE_EPOCH, 2, 0, 7), sr.SiteRecord(sr.SITE_EPOCH, 2, 0, 7, sr.EPOCH_AS_HEARD),
              sr.SiteRecord(sr.SITE_FRONTIER, 1, 5), sr.SiteRecord(sr.SITE_FRONTIER, 1, 5, 0, epoch=9),
              sr.SiteRecord(sr.SITE_FRONTIER, 1, 5, 3, epoch=2 ** 40),
              sr.SiteRecord(sr.SITE_UNRELIABLE, 1, 5, 3, sr.UNRELIABLE_MESS, "a1", body),
              sr.SiteRecord(sr.SITE_UNRELIABLE, 1, 5, 3, sr.UNRELIABLE_MESS, "a1", body, 2 ** 44)):
        assert sr.decode_site_records(sr.encode_site_record(r)) == [r]
    assert sr.encode_site_record(sr.SiteRecord(sr.SITE_EPOCH, 2, 0, 7)) == b"\x04\x0a\x02\x00\x07"


# ---- pruning: a SKIP (the message's place, no body) where no site reached can owe it ----------

def test_pruning_sends_skips_and_every_guarantee_holds():
    for seed in (2, 7, 8):
        res = sites_sim.SitesSim(seed, case=_case_as_before(seed), groups=True).run()
        assert res.violations == [], res.summary()
        assert res.stats.get("skips_sent", 0) > 0, res.summary()


def test_pruning_resumes_after_a_partition_heals():
    """Seeds 176, 901, 986 (a cut link healed: the views merge): each side saw only its own
    side's joins and leaves; a joined site's members come from its STATE of the merged view
    (and its joins and leaves since), and SKIPs go again after the merge. (These seeds once
    "lost" messages by the simulator's stale table of members, not the daemons': see
    SitesSim.interest.)"""
    for seed in (176, 901, 986):
        res = sites_sim.run_seed(seed, groups=True)
        assert res.stats.get("heals") and res.violations == [], res.summary()
        assert res.stats.get("interest_states", 0) > 0 and res.stats.get("skips_after_merge", 0) > 0, res.summary()


def test_planted_stale_members_of_a_joined_site_is_a_loss_violation(monkeypatch):
    """The rule before the STATE: a joined site's members as we last saw them, before the
    partition. A client of the other side that joined a group meanwhile (seed 36: b2 in g1)
    misses its messages; the simulator's table, put right at the merge, sees it. (Run with a
    takeover's whole HELLO wait, as when it was planted: with SITE_TAKEOVER_HELLO_S seed 36's
    views are apart 0.17 s instead of 0.45 s (merged at 4.21 s, not 4.99 s), and the planted
    fault loses nothing there.)"""
    def from_merge(self, site, view_seq):
        self.interest_pending[site] = (view_seq, [])  # (the old table kept)

    def may_owe(self, site, groups, lts):
        if site not in self.live_sites or (site not in self.interest_known and site not in self.interest_pending):
            return True
        if lts > self.streams[site].frontier_lts + sr.PRUNE_HORIZON_LTS:
            return True
        members, left = self.interest_members[site], self.interest_left[site]
        return any(members.get(g) or left.get(g, -1) >= lts for g in groups)
    monkeypatch.setattr(sr.SiteGateway, "_interest_from_merge", from_merge)
    monkeypatch.setattr(sr.SiteGateway, "_may_owe", may_owe)
    monkeypatch.setattr(sr, "SITE_TAKEOVER_HELLO_S", sr.SITE_HELLO_WAIT_S)
    # (and a site whose HELLO leaves us out suspected at the end of its HELLO wait, as when it
    # was planted: suspected at once since s21-tail, seed 36's views are apart too briefly)
    monkeypatch.setattr(sr.SiteGateway, "_suspect_now_it_left_us_out", lambda self, site, now: None)
    res = sites_sim.run_seed(36, groups=True)
    assert sites_sim.LOSS in res.kinds(), res.summary()


def test_the_simulators_members_are_put_right_where_views_merge():
    """SitesSim.interest: at the merged view, the joined site's members are those its own
    daemons had there (seed 176: c's client c2 left g2 during the partition, which site a
    never delivered; a's stale table still had it in g2)."""
    sim = sites_sim.SitesSim(176, groups=True)
    sim.run()
    interest = sim.interest()
    late_g2 = [s for s, sub in sim.submitted.items() if sub[6] == sr.DATA and sub[7] == ("g2",)
               and sub[4] > sim.healed_at and s in interest]
    assert late_g2 and all(2 not in interest[s] for s in late_g2), [(s, interest[s]) for s in late_g2]


def _view(kind, seq, sites, before):
    return (kind, seq, sites, before, 0.0)


def test_a_message_only_a_restarted_daemon_delivered_is_owed_by_the_sites_with_a_member():
    """SitesSim.interest for what only a daemon restarted into a running ring delivered (seed 89
    --groups, planted here by hand: c3 restarted, its site's only daemon left; merged back
    with sites a and b at view 2, it sends 2 to g2, which nobody joined, and 3 to g1, which
    a1 joined). Its own site's members are not whole (it missed the JOINs before it came in),
    so its site may owe both; sites a and b are known from the merge on, by their own
    daemons' tables where they installed it: a owes 3 only, b neither. (Before: neither had
    any interest, so every site "owed" both, and a SKIP to a and b was a loss.)"""
    sim = sites_sim.SitesSim(89, groups=True)  # (a1 a2 | b1 | c1 c2 c3; never run)
    merged = (0, 1, 2)
    sim.submitted = {1: (sr.AGREED_MESS, b"", "a1", 0, 0.5, "a1", sr.JOIN, ("g1",)),
                     2: (sr.AGREED_MESS, b"", "c3", 0, 7.0, "c3", sr.DATA, ("g2",)),
                     3: (sr.AGREED_MESS, b"", "c3", 0, 7.1, "c3", sr.DATA, ("g1",))}
    for name in ("a1", "b1"):  # (ran from the start: JOIN 1, then view 1 without c, view 2 with it)
        node = sim.nodes[name]
        node.delivered = [1]
        node.views = [_view(sr.CONF_REGULAR, 1, (0, 1), 1), _view(sr.CONF_REGULAR, 2, merged, 1)]
    c3 = sim.nodes["c3"]
    c3.restarted = True
    c3.delivered = [2, 3]
    c3.views = [_view("joined", 0, (), 0), _view(sr.CONF_REGULAR, 1, (2,), 0),
                _view(sr.CONF_REGULAR, 2, merged, 0)]
    for name in ("a2", "c1", "c2"):
        del sim.nodes[name]
    assert not sim.saw_every_join(c3)
    interest = sim.interest()
    assert interest.get(2) == frozenset({2}), interest
    assert interest.get(3) == frozenset({0, 2}), interest
    assert not sim.site_owes(0, 2, interest) and not sim.site_owes(1, 2, interest)
    assert sim.site_owes(0, 3, interest) and not sim.site_owes(1, 3, interest)


def _planted_pruning(monkeypatch, seed, name, fault):
    monkeypatch.setattr(sr.SiteGateway, name, fault)
    res = sites_sim.run_seed(seed, groups=True)
    assert res.stats.get("skips_sent", 0) > 0 and sites_sim.LOSS in res.kinds(), res.summary()


def test_planted_join_without_its_lts_step_is_a_loss_violation(monkeypatch):
    """A JOIN that does not go PRUNE_HORIZON_LTS above its stream: a site that has not seen
    it yet prunes a message ordered after it."""
    _planted_pruning(monkeypatch, 1, "_lts_step", staticmethod(lambda msg: 1))


def test_planted_interest_without_the_members_that_left_after_the_message_is_a_loss_violation(monkeypatch):
    """A member that left after the message's place (seen before the SKIP is decided) still
    owed it."""
    def may_owe(self, site, groups, lts):
        if site not in self.live_sites or site not in self.interest_known \
                or lts > self.streams[site].frontier_lts + sr.PRUNE_HORIZON_LTS:
            return True
        return any(self.interest_members[site].get(g) for g in groups)
    # (seed 4 showed it until its HOP links at b's start were asked again at once: _ask_again;
    # seed 37 is the first of 1-39 that does now)
    _planted_pruning(monkeypatch, 37, "_may_owe", may_owe)


def test_planted_skip_decided_on_the_tree_of_today_is_a_loss_violation(monkeypatch):
    """A SKIP sent where the sites below the child in today's tree have no member: after a
    link dies or a representative takes over, a site that holds only the SKIP may have to
    send the message on to one that owes it."""
    def reach(self, child, source):
        tree = self.trees[source]
        seen, todo = {child}, [child]
        while todo:
            for b in tree.children(todo.pop()):
                seen.add(b)
                todo.append(b)
        return frozenset(seen)
    _planted_pruning(monkeypatch, 8, "_reach_without", reach)


# ---- a site split in two rings: the checkers' rule for an incarnation still catches faults -----
#: a site of three whose representative a1 is split off alone for 2.4 s: its ring has no quorum
#: and goes on as a new incarnation of site 0 (a fork); a2, a3 keep the epoch and take over; when
#: the LAN heals, a1 takes their state (it rejoined)
FORK_SEED = 7


def _run_fork(filter_factory=None, on_start=None):
    sim_ref = [None]
    flt = filter_factory(sim_ref) if filter_factory else None
    sim = sites_sim.SitesSim(FORK_SEED, on_start=on_start, delivery_filter=flt, lan_splits=True)
    sim_ref[0] = sim
    return sim, sim.run(drain_max_s=5.0)


def test_the_fork_seed_forks_and_rejoins_and_keeps_every_guarantee():
    sim, res = _run_fork()
    assert res.violations == [], res.summary()
    a1, a2 = sim.nodes["a1"], sim.nodes["a2"]
    assert a1.rejoined and a1.gateway.counters["site_forks"] == 1 and a2.gateway.counters["site_forks"] == 0
    assert a1.gateway.epoch == a2.gateway.epoch  # (it took the kept state, epoch and all)
    assert any("new incarnation of the site" in line for line in res.log_lines)
    assert res.stats["submitted"] > 0


def test_planted_safe_without_the_global_aru_in_a_split_site_is_a_safe_violation():
    """SAFE counts only the daemons of its view's incarnations: with the sites' ARU ignored it
    still sees a message delivered before the daemons of the kept incarnation held it."""
    def ignore_aru(name, gateway):
        for stream in gateway.streams.values():
            stream.stable_aru = 1 << 60
    _, res = _run_fork(on_start=ignore_aru)
    assert sites_sim.SAFE in res.kinds(), res.summary()


def test_planted_loss_in_the_kept_incarnation_of_a_split_site_is_a_loss_violation():
    """A daemon of the incarnation that kept the epoch drops a message the other daemons of
    its incarnation delivered during the split: the incarnation rule does not excuse it."""
    dropped = []

    def drop_one(ref):
        def flt(name, outputs):
            sim = ref[0]
            i = _first_deliver(outputs)
            if name == "a2" and i is not None and not dropped and sim.lan_split:
                dropped.append(outputs.pop(i))
            return outputs
        return flt
    _, res = _run_fork(drop_one)
    assert dropped and sites_sim.LOSS in res.kinds(), res.summary()



#: site a (three daemons) split a1 | a2 a3, and site c killed: a1 forks alone, delivers the
#: other sites' messages in its fork's views, then takes a2's state and delivers on with them
#: (seed 65: a1 split off 0.04 s in for 1.5 s, c killed 0.57 s in. It was seed 26 while
#: SITE_GRACE_S was 1.0 s; at 0.6 s its timings moved and neither planted fault below
#: shows there)
REJOIN_SEED = 65


def test_planted_rejoined_daemon_that_delivers_again_what_it_delivered_in_its_fork_is_caught():
    """The state a fork's daemon takes holds messages it delivered already in the fork's view
    (the other sites' streams both rings read): without the rule that keeps their place
    without their body, it delivers them twice."""
    def no_filter(name, gateway):
        gateway._delivered_here = lambda r: False
    res = sites_sim.SitesSim(REJOIN_SEED, on_start=no_filter, lan_splits=True).run()
    assert sites_sim.DUPLICATE in res.kinds(), res.summary()


def test_planted_reorder_at_a_rejoined_daemon_after_it_rejoined_is_an_agreed_order_violation():
    """A rejoined daemon is two histories for the agreed order (the fork's view, the kept
    one's): a reordering in the second is still caught."""
    sim_ref, held = [None], []

    def flt(name, outputs):
        if name != "a1" or not sim_ref[0].nodes["a1"].rejoined:
            return outputs
        out = []
        for o in outputs:
            if isinstance(o, sr.Deliver) and not held:
                held.append(o)
                continue
            out.append(o)
            if isinstance(o, sr.Deliver) and held and held[0] is not True:
                out.append(held[0])
                held[0] = True
        return out
    sim = sites_sim.SitesSim(REJOIN_SEED, delivery_filter=flt, lan_splits=True)
    sim_ref[0] = sim
    res = sim.run()
    assert held == [True] and sites_sim.AGREED in res.kinds(), res.summary()


# ---- a fork and the epoch it left: the kept side's messages after it, the fork's HELLO ---------
#: site a (three daemons) split a1 | a2 a3 in a mesh of three sites: a1 forks; the kept side's
#: representative suspects sites b and c (their links died) and its SUSPECT, made after the
#: fork under the old epoch, is ordered where the rings meet, before the status round
KEPT_SUSPECT_SEED = 194


def _gateway_lines(res, name):
    return [line for line in res.log_lines if line.split(" ", 2)[1:2] == [name]]


def test_the_kept_sides_suspect_made_after_the_fork_is_not_the_forks(monkeypatch):
    """Defect 1 of issue 10's notes, in the simulator: a SITES message of the kept side made
    after the fork names the old epoch, which the fork's lineage holds (made before the fork).
    Taken, a1 (the fork) proposed and decided a view without sites 1 and 2 on a2's SUSPECT
    (the kept incarnation's suspicion, not its own) just before it took the kept state. Now the
    message also names the rings that kept the epoch (kept_rings: the ring without a1 is one
    more than a1 left the epoch at), and a1 refuses it. The seed's timing may move; the core
    test of the rule is test_a_kept_side_sites_message_made_after_the_fork_... in
    test_sites_core.py.
    Pinned at SITE_GRACE_S 1.0 s: the case needs the fork's own suspicion of b and c (its
    links died with the split) to come after the rings meet, so only the kept side's SUSPECT
    could move a1. At 0.6 s a1 suspects them itself first, and decides a view without them
    on its own SUSPECT, as it should. Of seeds 1-4000 --lan-splits at 0.6 s (a1 split off
    alone, a mesh of three), those where a1 refuses a kept side's message (702, 2824, 3254)
    all have a1 suspect b and c itself first. The rule (kept_rings) is not the grace's.
    Since seed 461's fix a fork's daemon holds what the ring where the rings meet delivers
    before the point, and drops it when it takes the kept state: a1 never reads that SUSPECT
    at all. With that hold off, the kept_rings rule refuses it, as before."""
    monkeypatch.setattr(sr, "SITE_GRACE_S", 1.0)
    for hold in (True, False):
        if not hold:
            monkeypatch.setattr(sr.SitesOrderer, "_may_meet_another_ring", lambda self, *_: False)
        sim = sites_sim.SitesSim(KEPT_SUSPECT_SEED, lan_splits=True)
        res = sim.run()
        assert res.violations == [], res.summary()
        lines = _gateway_lines(res, "a1")
        ends = next(i for i, line in enumerate(lines) if "'s fork (epoch" in line and "ends" in line)
        # (a view a1 proposes on its own suspicion is its own; since session 17 took back the
        # hold's skip for fresh daemons, a1's silence rule fires in the instant the rings meet)
        own = next((i for i, line in enumerate(lines[:ends]) if "suspected gone" in line), ends)
        assert not any("decided" in line or "proposes" in line for line in lines[:own]), lines[:ends]
        a1 = sim.nodes["a1"].gateway
        assert a1.counters["site_forks"] == 1
        # with the hold (branches s15-exploreA/B) the kept side's SUSPECT never reaches a1's
        # gateway: dropped at the point, as a1 takes the kept state, which holds it
        assert (a1.counters["sites_messages_made_after_our_fork"] >= 1) == (not hold)
        assert (a1.counters["ring_outputs_dropped_at_the_point"] >= 1) == hold


class _ForkHelloFirstSim(sites_sim.SitesSim):
    """Site a (a1 a2 a3) and site b (b1). The a - b wire is down from the start, so b has no
    epoch of a on record; a1 is split off a's LAN 0.05 s in and forks (1.2 s in); the wire
    comes up at heal_at_s, and the kept side's HOP packets are lost until hold_until_s, so the
    first HELLO of site a that b1 could take is the fork's. The silence rule is 4 s (nobody
    suspects anybody before the rings meet)."""

    split_at_s, heal_at_s, hold_until_s = 0.05, 1.3, 1.6

    def hop_settings(self, site):
        settings = super().hop_settings(site)
        settings.peer_silence_s = 4.0
        return settings

    def step(self):
        super().step()
        if not self.lan_windows and self.now >= self.split_at_s:
            self.lan_split = True  # (by hand: the case's split comes after the rings formed)
            self.lan_windows.append((self.now, float("inf")))
        if self.case.cut_for_good is not None and self.now >= self.heal_at_s:
            self.case.cut_for_good = None
            self.cut_pairs -= {(0, 1), (1, 0)}

    def hop_send(self, src, dest, raw):
        if src in ("a2", "a3") and self.now < self.hold_until_s:
            self.stats["hop_lost"] += 1
            return
        super().hop_send(src, dest, raw)


def _run_fork_hello_first():
    wire = sites_sim.WireSpec(loss=0.0, delay_s=0.02, jitter_s=0.002, bits_s=10e6)
    case = sites_sim.SitesCase(sites=[["a1", "a2", "a3"], ["b1"]], costs=[[0, 1], [1, 0]],
                               wires={(0, 1): wire, (1, 0): wire}, lan=sites_sim.LanSpec(),
                               rate_per_s=20.0, traffic_s=1.0, lan_split_after_s=3.0,
                               lan_split_apart=("a1",), cut_for_good=(0, 1))
    sim = _ForkHelloFirstSim(5, case=case, lan_splits=True)
    return sim, sim.run(drain_max_s=15.0)


def test_a_site_with_no_epoch_on_record_never_takes_a_fork_for_the_site():
    """Defect 2 of issue 10's notes: b1 had no epoch of site a on record and took the fork's
    (a1's HELLO came first), then refused the kept incarnation (a2 a3) as a new one: when the
    rings of a met, a1 took the kept state and b1 refused site a altogether, left it out
    (view 1) and merged it back (view 2), about 8.8 s in. Now a fork starts no link with the
    sites of its view until a merge makes them read its epoch (fork_unread): b1 links with
    a2 and never changes its view."""
    sim, res = _run_fork_hello_first()
    assert res.violations == [], res.summary()
    a1, a2, b1 = (sim.nodes[n].gateway for n in ("a1", "a2", "b1"))
    assert sim.nodes["b1"].views == [], sim.nodes["b1"].views
    assert b1.site_epochs == {0: a2.epoch} and b1.counters["hellos_new_incarnation"] == 0
    assert a1.counters["site_forks"] == 1 and a1.counters["hellos_to_an_unread_fork"] >= 1
    assert any("b1 HOP link to a2" in line for line in res.log_lines)
    assert a1.epoch == a2.epoch and not a1.fork_unread  # (a1 took the kept state)


class _StalledPeerAtTheSplitSim(sites_sim.SitesSim):
    """Site a (a1 a2 a3) and site b (b1). a1 is split off a's LAN 1 s in (it forks: its ring
    alone holds no quorum), and the split heals at heal_at_s. Around the moment both rings of
    a form (about 1.1 s after the split), b1 hears and says nothing on its HOP links for
    `stall` (a daemon stopped, as CI's loaded machine did to b1 for about 0.9 s): both rings
    of a leave b out and b leaves a out; then the fork and the kept ring both ask b1 back."""

    split_at_s, heal_at_s = 1.0, 6.0
    stall = (1.9, 2.8)
    before_heal = None

    def step(self):
        super().step()
        if not self.lan_windows and self.now >= self.split_at_s:
            self.lan_split = True  # (by hand: the case's split comes after the rings formed)
            self.lan_windows.append((self.now, float("inf")))
        if self.lan_split and self.now >= self.heal_at_s:
            self.lan_split = False
            self.lan_windows[-1] = (self.lan_windows[-1][0], self.now)
        if self.before_heal is None and self.now >= self.heal_at_s - 0.05:
            a1, a2, b1 = (self.nodes[n].gateway for n in ("a1", "a2", "b1"))
            self.before_heal = {"b1 reads the kept epoch": b1.site_epochs.get(0) == a2.epoch,
                                "b1": list(b1.live_sites), "a1": list(a1.live_sites), "a2": list(a2.live_sites)}

    def hop_send(self, src, dest, raw):
        if "b1" in (src, dest) and self.stall[0] <= self.now < self.stall[1]:
            self.stats["hop_lost"] += 1
            return
        super().hop_send(src, dest, raw)


@pytest.mark.parametrize("seed,stall", [(1, (1.9, 2.8)), (1, (2.1, 3.3)), (2, (1.9, 2.8)), (3, (2.1, 3.3))])
def test_a_stalled_site_goes_back_to_the_kept_ring_of_a_split_site_not_to_its_fork(seed, stall, monkeypatch):
    """CI's flake of test_a_site_of_three_split_the_two_keep_the_site_and_the_first_daemon_
    rejoins, in the simulator: b1, slow at the split, answered neither ring of site a in
    time, so all left each other out; then whichever asked b1 first got it, and the fork's
    ring forms first (a ring of one decides at once): b1 went with a1, and a2 a3, the site's
    majority, stayed alone until the heal. Every guarantee held (it is a legal view), but the
    site's kept state lost its other site. Now b1 lets the incarnation it read (the kept
    one, still saying HELLO) go first: it never reads the fork's epoch while a is split.
    Each of these four went with the fork without _kept_goes_first (SITE_FORK_WAIT_S 0).
    Pinned to the HELLO wait of before for a site whose HELLO leaves us out (s21-tail suspects
    it at once): with that, seed 2's b1 leaves a out as soon as the kept ring's probe says so
    and merges with the kept ring 0.4 s later, never meeting the fork's HELLO first (the same
    end, by another path; the other three go as before)."""
    monkeypatch.setattr(sr.SiteGateway, "_suspect_now_it_left_us_out", lambda self, site, now: None)
    wire = sites_sim.WireSpec(loss=0.0, delay_s=0.02, jitter_s=0.002, bits_s=10e6)
    case = sites_sim.SitesCase(sites=[["a1", "a2", "a3"], ["b1"]], costs=[[0, 1], [1, 0]],
                               wires={(0, 1): wire, (1, 0): wire}, lan=sites_sim.LanSpec(),
                               rate_per_s=20.0, traffic_s=8.0, lan_split_after_s=30.0,
                               lan_split_apart=("a1",))
    sim = _StalledPeerAtTheSplitSim(seed, case=case, lan_splits=True)
    sim.stall = stall
    res = sim.run(drain_max_s=15.0)
    assert res.violations == [], res.summary()
    seen = sim.before_heal
    assert seen == {"b1 reads the kept epoch": True, "b1": [0, 1], "a1": [0], "a2": [0, 1]}, seen
    assert sim.nodes["b1"].gateway.counters["hellos_of_a_fork_wait_for_the_kept_ring"] >= 1


@pytest.mark.parametrize("seed", [26, 43])
def test_lan_split_seeds_of_a_shorter_grace_keep_every_guarantee(seed, monkeypatch):
    """(issue 10) With SITE_GRACE_S 0.6 s (branch s13-tail-grace06) two --lan-splits seeds
    failed: 26, a PROPOSE made past a transitional view carried LOST_SITE_ARU (2**62) and
    a late daemon stopped on the state holding it; 43, a chain of views (a survivor died
    after the first's decision, which it never had) named it in the first's transitional
    view, so what was delivered there counted as owed at it; and then b1, which never had
    c1's PROPOSE for view 1, delivered in view 0 a message of its own that c1 delivered in
    view 1 (a site's messages now wait while a view it proposed is undecided: core test
    test_our_messages_wait_for_the_view_we_proposed_and_go_in_the_one_we_decide). (0.6 s
    is the default since branch s14-g06; pinned so these seeds stay at 0.6 s if it moves.)"""
    monkeypatch.setattr(sr, "SITE_GRACE_S", 0.6)
    res = sites_sim.run_seed(seed, lan_splits=True)
    assert res.violations == [], "%s\nreplay (grace 0.6 s): %s" % (
        res.summary(), sites_sim.replay_command(seed, lan_splits=True))
    assert res.stats["lan_splits"] >= 1 and res.stats["site_forks"] >= 1
    if seed == 43:
        assert any("is installed first" in line for line in res.log_lines)
