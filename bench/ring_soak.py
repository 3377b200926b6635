"""Soak the RING protocol in the deterministic simulator: many seeds with faults, count the
violations of the guarantees. Every seed replays exactly with the command printed for it.

    python3 bench/ring_soak.py --seeds 1000            # seeds 1..1000
    python3 bench/ring_soak.py --seeds 200 --first 5000
    python3 bench/ring_soak.py --seeds 10000 --hostile 0.1 [--key]   # replayed and forged packets
    python3 bench/ring_soak.py --seeds 2500 --accelerated 15   # every seed on one ring protocol
    python3 bench/ring_soak.py --seeds 2000 --packet-bytes 8900  # every seed with big packets
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

import ring_sim  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description="Soak the RING protocol in the deterministic simulator and count violations.")
    parser.add_argument("--seeds", type=int, default=1000, help="how many seeds (default 1000)")
    parser.add_argument("--first", type=int, default=1, help="first seed (default 1)")
    parser.add_argument("--quiet", action="store_true", help="no progress line")
    parser.add_argument("--unreliable-share", type=float, default=None, metavar="P",
                        help="share of UNRELIABLE among the messages, 0..1 (default: one service "
                             "in six, as every seed always ran)")
    parser.add_argument("--clock-back", type=float, default=None, metavar="P",
                        help="probability that a restart's clock went back, 0..1 (default: 0.7 "
                             "in 40%% of the seeds, 0 in the others)")
    parser.add_argument("--fault-every", type=float, default=None, metavar="S",
                        help="seconds between faults (crashes, restarts, partitions; default: "
                             "the seed's own, 0.4-1.5)")
    parser.add_argument("--clean-stop", type=float, default=None, metavar="P",
                        help="share of the crashes that are clean stops (a LEAVE announcement "
                             "first, as after Ctrl-C), 0..1 (default: one in three)")
    parser.add_argument("--hostile", type=float, default=None, metavar="P",
                        help="per packet sent while the faults last, the chance that a hostile "
                             "one arrives too: a replay of an earlier packet, to any daemon, or a "
                             "forged packet with extreme values in every field, 0..1 (default 0)")
    parser.add_argument("--key", action="store_true",
                        help="the daemons sign their packets (--key); forgers do not have the key")
    ring_sim.add_accelerated_option(parser)
    args = parser.parse_args(argv)
    if args.seeds < 1:
        parser.error("--seeds must be at least 1")
    for name in ("unreliable_share", "clock_back", "clean_stop", "hostile"):
        value = getattr(args, name)
        if value is not None and not 0.0 <= value <= 1.0:
            parser.error("--%s must be between 0 and 1" % name.replace("_", "-"))
    if args.fault_every is not None and args.fault_every <= 0.05:
        parser.error("--fault-every must be more than 0.05 s")
    mix = {"unreliable_share": args.unreliable_share, "clock_back": args.clock_back,
           "fault_every_s": args.fault_every, "clean_stop": args.clean_stop,
           "hostile": args.hostile, "key": args.key, "accelerated": args.accelerated,
           "packet_bytes": args.packet_bytes}
    started = time.monotonic()
    totals = collections.Counter()
    failing = []
    kinds = collections.Counter()  # violations per checker
    for seed in range(args.first, args.first + args.seeds):
        result = ring_sim.run_seed(seed, **mix)
        totals.update(result.stats)
        totals["violations"] += len(result.violations)
        kinds.update(ring_sim.kind_of(v) for v in result.violations)
        if result.violations:
            failing.append(seed)
            print(result.summary())
            print("  " + ring_sim.replay_command(seed, **mix))
        if not args.quiet and (seed - args.first + 1) % 50 == 0:
            print("... %d seeds, %d violations, %.0f s" % (
                seed - args.first + 1, totals["violations"], time.monotonic() - started),
                file=sys.stderr)
    elapsed = time.monotonic() - started
    print("ring soak: seeds %d..%d (%d), violations %d, failing seeds %d%s" % (
        args.first, args.first + args.seeds - 1, args.seeds, totals["violations"], len(failing),
        (" " + str(failing[:20])) if failing else ""))
    if kinds:
        print("violations by checker: " + ", ".join("%s %d" % kv for kv in sorted(kinds.items())))
    print("faults injected: crashes %d, restarts %d, partitions %d, packets lost %d of %d, "
          "garbage packets %d; configurations installed %d; messages submitted %d; "
          "delivered in transitional configurations %d; %.0f s" % (
              totals["crashes"], totals["restarts"], totals["partitions"], totals["lost"],
              totals["packets"], totals["garbage_sent"], totals["configurations"],
              totals["submitted"], totals["trans_deliveries"], elapsed))
    print("restarts with the clock set back (a smaller incarnation) %d; incarnations taken "
          "anew when the others named a newer one %d" % (totals["clock_back_restarts"],
                                                totals["incarnation_bumps"]))
    print("clean stops (LEAVE announced, then the process gone) %d of the crashes; LEAVEs acted "
          "on %d, duplicates dropped %d, from non-members ignored %d" % (
              totals["clean_stops"], totals["leaves_received"], totals["duplicate_leaves"],
              totals["leaves_ignored_not_member"]))
    print("UNRELIABLE messages delivered %d" % totals["unreliable_delivered"])
    if args.hostile:
        print("hostile packets: replayed %d, forged %d%s; refused: wrong or no tag %d, "
              "garbage %d, old incarnations %d, out-of-turn tokens %d, far-ahead counters %d, "
              "strangers %d; forged incarnations forgotten %d" % (
                  totals["hostile_replayed"], totals["hostile_forged"],
                  " (without the key)" if args.key else "",
                  totals["dropped_bad_tag"] + totals["dropped_no_tag"], totals["dropped_garbage"],
                  totals["dropped_old_incarnation"],
                  totals["dropped_tokens_not_for_us"] + totals["dropped_commit_tokens_not_for_us"],
                  totals["dropped_tokens_far_ahead"] + totals["dropped_data_beyond_the_token"]
                  + totals["dropped_ring_seq_far_ahead"], totals["dropped_unknown_daemon"],
                  totals["incarnations_forgotten"]))
    print("rerun: python3 bench/ring_soak.py --seeds %d --first %d%s" % (
        args.seeds, args.first, ring_sim.mix_options(**mix)))
    return 1 if failing else 0


if __name__ == "__main__":
    sys.exit(main())
