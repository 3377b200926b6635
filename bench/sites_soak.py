"""Soak several sites joined by HOP links in the deterministic simulator (tests/sites_sim.py):
many seeds, each its own topology (2-3 sites of 1-3 daemons, a mesh or a line), lossy WAN
links and traffic; count the violations of the guarantees. Every failing seed is printed with
the command that replays it. The daemons run with the daemon's defaults: dynamic voting in a
site split in two rings (HopSettings.split_quorum) on in sites of 3 daemons or more (2 with
--lan-splits); --no-split-quorum turns it off, as every soak without --lan-splits ran before.

    python3 bench/sites_soak.py --seeds 1000            # seeds 1..1000
    python3 bench/sites_soak.py --seeds 200 --first 5000
    python3 bench/sites_soak.py --seeds 500 --hostile 0.1 [--key]   # a hostile LAN (see sites_sim)
    python3 bench/sites_soak.py --seeds 9000 --merge-kills-only     # the seeds killing during a merge
    python3 bench/sites_soak.py --seeds 300 --no-split-quorum       # the old setting, to compare
    python3 bench/sites_soak.py --seeds 200 --site-grace-s 1.0      # another SITE_GRACE_S (1.0: the old default), to compare
    python3 bench/sites_soak.py --seeds 200 --cut-after-merge       # a link cut while or after healed views merge
    python3 bench/sites_soak.py --seeds 2000 --cut-after-merge-only  # ... only the seeds that draw it
"""
from __future__ import annotations

import argparse
import collections
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))
sys.path.insert(0, os.path.dirname(HERE))

import sites_sim  # noqa: E402
import spread_mini  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description="Soak several sites joined by HOP links in the "
                                     "deterministic simulator and count violations.")
    parser.add_argument("--seeds", type=int, default=1000, help="how many seeds (default 1000)")
    parser.add_argument("--first", type=int, default=1, help="first seed (default 1)")
    parser.add_argument("--quiet", action="store_true", help="no progress line")
    parser.add_argument("--unreliable", action="store_true",
                        help="the clients send UNRELIABLE messages too (best effort, to every site)")
    parser.add_argument("--lan-splits", action="store_true",
                        help="split a site's LAN in two for a while in every seed with a site of "
                             "several daemons (two rings of one site: the known hole, issue 10)")
    parser.add_argument("--groups", action="store_true",
                        help="the clients join and leave groups during the traffic (a site owes a "
                        "message only if it has a member of its group then)")
    parser.add_argument("--merge-kills-only", action="store_true",
                        help="run only the seeds of the range that draw a merge kill (a site, or "
                        "a representative, killed about when healed views merge)")
    parser.add_argument("--cut-after-merge-only", action="store_true",
                        help="--cut-after-merge, and run only the seeds of the range that draw it")
    parser.add_argument("--site-grace-s", type=float, default=None,
                        help="the daemons' SITE_GRACE_S for this soak (default: spread_mini's, "
                        "%.1f s): a shorter grace leaves a killed site out sooner" % spread_mini.SITE_GRACE_S)
    sites_sim.add_client_views_option(parser)
    sites_sim.add_hostile_options(parser)
    sites_sim.add_split_quorum_option(parser)
    sites_sim.add_cut_after_merge_option(parser)
    args = parser.parse_args(argv)
    args.cut_after_merge = args.cut_after_merge or args.cut_after_merge_only
    mix = dict(unreliable=args.unreliable, lan_splits=args.lan_splits, groups=args.groups,
               hostile=args.hostile, key=args.key, forge_in_session=args.forge_in_session,
               split_quorum=not args.no_split_quorum, client_views=args.client_views,
               cut_after_merge=args.cut_after_merge)
    if args.seeds < 1:
        parser.error("--seeds must be at least 1")
    if args.site_grace_s is not None:
        if args.site_grace_s <= 0:
            parser.error("--site-grace-s must be above 0")
        spread_mini.SITE_GRACE_S = args.site_grace_s  # (read at each use: every daemon sees it)
    grace = "" if args.site_grace_s is None else " --site-grace-s %g" % args.site_grace_s
    started = time.monotonic()
    totals = collections.Counter()
    kinds = collections.Counter()
    failing = []
    latencies = []
    view_times = []  # per seed that killed a site: when the last survivor left it out
    alone_times = []  # ... of those that killed no second site (the target: 3 s)
    late_seeds = []  # ... (seed, time) of those above that target
    second_times = []  # ... of those that killed a second one: from that second kill
    merge_times = []  # per seed whose cut healed after the views split: when they merged
    sync_times = []  # per seed with a daemon started again: when it was up to date
    hostile = collections.Counter()  # hostile datagrams sent, and what the daemons dropped
    for seed in range(args.first, args.first + args.seeds):
        case = sites_sim.case_for_seed(seed, args.lan_splits, args.cut_after_merge)
        if args.merge_kills_only and case.merge_kill_after_s is None:
            continue
        if args.cut_after_merge_only and case.merge_cut_after_s is None:
            continue
        if case.merge_kill_after_s is not None:
            totals["merge_kill_rep_seeds" if case.merge_kill_rep else "merge_kill_site_seeds"] += 1
        totals["runs"] += 1
        result = sites_sim.run_seed(seed, **mix)
        for key in ("merge_rep_kills", "merge_rep_kills_while_merging", "merge_kills_skipped"):
            totals[key] += result.stats.get(key, 0)
        for key, value in result.stats.items():
            if key.startswith(("hostile_", "dropped_")):
                hostile[key] += value
        for key in ("submitted", "hop_packets", "hop_lost", "ring_packets", "skips_sent",
                    "sites_without_member", "hop_links_restarted_for_a_hole", "skips_after_merge",
                    "interest_states", "site_states_sent"):
            totals[key] += result.stats.get(key, 0)
        if result.stats.get("site_states_sent"):  # (groups) views merged: the sites' STATE went
            totals["seeds_merged"] += 1
            totals["seeds_pruned_after_merge"] += bool(result.stats.get("skips_after_merge"))
        if "latency_median_s" in result.stats:
            latencies.append(result.stats["latency_median_s"])
        if "view_after_kill_s" in result.stats:
            view_times.append(result.stats["view_after_kill_s"])
            second_s = case.second_kill_after_s
            if second_s is None:
                alone_times.append(result.stats["view_after_kill_s"])
                if result.stats["view_after_kill_s"] > 3.0:
                    late_seeds.append((seed, result.stats["view_after_kill_s"]))
            else:  # (a view before the second death counts as 0: it came in time)
                second_times.append(max(0.0, result.stats["view_after_kill_s"] - second_s))
        if "view_after_heal_s" in result.stats:
            merge_times.append(result.stats["view_after_heal_s"])
        totals["heals"] += result.stats.get("heals", 0)
        # (split_quorum: a ring without a quorum of its site's last one forked, e.g. two
        # daemons of a site of three killed one after the other)
        totals["site_forks"] += result.stats.get("site_forks", 0)
        totals["site_forks_seeds"] += bool(result.stats.get("site_forks", 0))
        for key in ("merge_cuts", "merge_cuts_installed", "merge_cuts_merging"):
            totals[key] += result.stats.get(key, 0)
        for key in ("site_merges_routed_around", "site_giveups_of_a_dead_site"):
            totals[key] += result.stats.get(key, 0)  # (the rare merge races: drawn in some seeds)
            totals[key + "_seeds"] += bool(result.stats.get(key, 0))
        if "sync_after_restart_s" in result.stats:
            sync_times.append(result.stats["sync_after_restart_s"])
        totals["violations"] += len(result.violations)
        kinds.update(sites_sim.kind_of(v) for v in result.violations)
        if result.violations:
            failing.append(seed)
            print(result.summary())
            print("  " + sites_sim.replay_command(seed, **mix) + (
                "  (with SITE_GRACE_S %g s: the soak's%s)" % (spread_mini.SITE_GRACE_S, grace) if grace else ""))
        if not args.quiet and (seed - args.first + 1) % 100 == 0:
            print("... %d seeds, %d violations, %.0f s" % (
                seed - args.first + 1, totals["violations"], time.monotonic() - started),
                file=sys.stderr)
    elapsed = time.monotonic() - started
    print("sites soak: seeds %d..%d (%d run), violations %d, failing seeds %d%s" % (
        args.first, args.first + args.seeds - 1, totals["runs"], totals["violations"], len(failing),
        (" " + str(failing[:20])) if failing else ""))
    if kinds:
        print("violations by checker: " + ", ".join("%s %d" % kv for kv in sorted(kinds.items())))
    latencies.sort()
    print("messages submitted %d; HOP packets %d (lost %d); ring packets %d; median of the seeds' "
          "median delivery latency %.3f s (simulated); %.0f s" % (
              totals["submitted"], totals["hop_packets"], totals["hop_lost"], totals["ring_packets"],
              latencies[len(latencies) // 2] if latencies else 0.0, elapsed))
    if args.groups:  # pruning: SKIPs sent (per link) against the (site, message) pairs it may leave out
        print("pruning: %d SKIPs sent in place of a body; %d (site, message) pairs without a member"
              % (totals["skips_sent"], totals["sites_without_member"]))
        print("pruning after a merge: %d seeds merged views with groups (%d STATEs sent), %d of them "
              "pruned after the merge: %d SKIPs sent after a merge; a joined site's members learned "
              "from its STATE %d times (per daemon)" % (
                  totals["seeds_merged"], totals["site_states_sent"], totals["seeds_pruned_after_merge"],
                  totals["skips_after_merge"], totals["interest_states"]))
    view_times.sort()
    if view_times:
        print("a whole site killed (%d seeds): the last survivor installed the view without it "
              "after %.2f s (median), %.2f s (90th percentile), %.2f s (max; simulated time, "
              "from the kill)" % (len(view_times), view_times[len(view_times) // 2],
                                  view_times[int(len(view_times) * 0.9)], view_times[-1]))
    for times, what in ((alone_times, "one site killed, and no other"),
                        (second_times, "a second site killed about when the first's loss is decided; "
                                       "from that second kill")):
        times.sort()
        if times:
            print("  %s (%d seeds): %.2f s (median), %.2f s (90th percentile), %.2f s (max)" % (
                what, len(times), times[len(times) // 2], times[int(len(times) * 0.9)], times[-1]))
    if view_times:
        print("  one site killed, above 3 s: %s" % (
            ", ".join("%d (%.2f s)" % st for st in late_seeds) or "none"))
        if late_seeds:
            print("    each: python3 bench/sites_kill_view.py --only %s%s" % (
                ",".join(str(st[0]) for st in late_seeds), " (without the soak's options)" if any(mix.values()) else ""))
    merge_times.sort()
    if merge_times:
        print("a cut link healed after the views split (%d of %d seeds that healed): every daemon "
              "had the merged view %.2f s after the heal (median), %.2f s (90th percentile), "
              "%.2f s (max; simulated time)" % (
                  len(merge_times), totals["heals"], merge_times[len(merge_times) // 2],
                  merge_times[int(len(merge_times) * 0.9)], merge_times[-1]))
    print("merge races: a MERGE parked behind a site reached through a third one, taken round it "
          "%d times (%d seeds); a GIVEUP of a dead site that came after the view without it, "
          "ignored %d times (%d seeds)" % (
              totals["site_merges_routed_around"], totals["site_merges_routed_around_seeds"],
              totals["site_giveups_of_a_dead_site"], totals["site_giveups_of_a_dead_site_seeds"]))
    if args.cut_after_merge:
        print("cut after a merge: a link cut 0-4 s after a heal in %d seeds: every daemon had the "
              "merged view then in %d, a merge was being agreed in %d, neither (the views had not "
              "split, or a merge not started yet) in %d" % (
                  totals["merge_cuts"], totals["merge_cuts_installed"], totals["merge_cuts_merging"],
                  totals["merge_cuts"] - totals["merge_cuts_installed"] - totals["merge_cuts_merging"]))
    if not args.no_split_quorum:
        print("split sites (split_quorum, sites of %d daemons or more): a ring without a quorum of "
              "its site's last ring went on as a new incarnation %d times (%d seeds)" % (
                  2 if args.lan_splits else 3, totals["site_forks"], totals["site_forks_seeds"]))
    print("merge kills: a whole site killed about when healed views merge in %d seeds; a "
          "representative killed then, in a run whose representative crashed before, in %d (%d "
          "killed while it was merging; %d not killed: its site's last daemon)" % (
              totals["merge_kill_site_seeds"], totals["merge_kill_rep_seeds"],
              totals["merge_rep_kills_while_merging"], totals["merge_kills_skipped"]))
    sync_times.sort()
    if sync_times:
        print("a daemon killed and started again (%d seeds): up to date %.3f s after its start "
              "(median), %.3f s (max; simulated time: its ring takes it in, the sites' state "
              "crosses the ring)" % (len(sync_times), sync_times[len(sync_times) // 2], sync_times[-1]))
    if totals["hop_links_restarted_for_a_hole"] or args.hostile:
        print("HOP links started again for a hole in a stream (a packet handed up in the real "
              "one's place): %d" % totals["hop_links_restarted_for_a_hole"])
    if args.hostile:
        sent = sorted((k[len("hostile_"):], v) for k, v in hostile.items() if k.startswith("hostile_"))
        dropped = sorted((k[len("dropped_"):], v) for k, v in hostile.items() if k.startswith("dropped_"))
        print("hostile datagrams sent %d: %s" % (sum(v for _, v in sent), ", ".join("%s %d" % kv for kv in sent)))
        print("refused by the daemons (hostile ones and the wire's late copies): %s" % (
            ", ".join("%s %d" % kv for kv in dropped) or "none"))
    print("rerun: python3 bench/sites_soak.py --seeds %d --first %d%s%s%s" % (
        args.seeds, args.first, sites_sim.mix_options(**mix), grace,
        " --merge-kills-only" if args.merge_kills_only else "")
        + (" --cut-after-merge-only" if args.cut_after_merge_only else ""))
    return 1 if failing else 0


if __name__ == "__main__":
    sys.exit(main())
