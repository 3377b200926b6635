from __future__ import annotations

"""Soak the RING protocol in the deterministic simulator: many seeds with faults, count the
violations of the guarantees. Every seed replays exactly with the command printed for it.

    python3 bench/ring_soak.py --seeds 1000            # seeds 1..1000
    python3 bench/ring_soak.py --seeds 200 --first 5000
"""

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
    args = parser.parse_args(argv)
    if args.seeds < 1:
        parser.error("--seeds must be at least 1")
    started = time.monotonic()
    totals = collections.Counter()
    failing = []
    for seed in range(args.first, args.first + args.seeds):
        result = ring_sim.run_seed(seed)
        totals.update(result.stats)
        totals["violations"] += len(result.violations)
        if result.violations:
            failing.append(seed)
            print(result.summary())
            print("  " + ring_sim.replay_command(seed))
        if not args.quiet and (seed - args.first + 1) % 50 == 0:
            print("... %d seeds, %d violations, %.0f s" % (
                seed - args.first + 1, totals["violations"], time.monotonic() - started),
                file=sys.stderr)
    elapsed = time.monotonic() - started
    print("ring soak: seeds %d..%d (%d), violations %d, failing seeds %d%s" % (
        args.first, args.first + args.seeds - 1, args.seeds, totals["violations"], len(failing),
        (" " + str(failing[:20])) if failing else ""))
    print("faults injected: crashes %d, restarts %d, partitions %d, packets lost %d of %d, "
          "garbage packets %d; configurations installed %d; messages submitted %d; "
          "delivered in transitional configurations %d; %.0f s" % (
              totals["crashes"], totals["restarts"], totals["partitions"], totals["lost"],
              totals["packets"], totals["garbage_sent"], totals["configurations"],
              totals["submitted"], totals["trans_deliveries"], elapsed))
    print("restarts with the clock set back (a smaller incarnation) %d; incarnations taken "
          "anew when the others named a newer one %d" % (totals["clock_back_restarts"],
                                                totals["incarnation_bumps"]))
    print("rerun: python3 bench/ring_soak.py --seeds %d --first %d" % (args.seeds, args.first))
    return 1 if failing else 0


if __name__ == "__main__":
    sys.exit(main())
