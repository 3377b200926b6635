"""A whole site killed in a mesh of three: how long until the last survivor installs the view
without it, in the deterministic simulator (simulated time: the figures do not depend on the
machine). Runs every seed of tests/sites_sim.py in the range whose case is three sites in a
mesh with a site killed, with this spread_mini and, with --against, another one (say main's)
in the same run, and prints median, 90th percentile and max of each, split as the issue's
target reads: one site killed (3 s), and a second site killed about when the first's loss is
decided (from that second kill), plus the seeds whose figure changed most. One site killed is
split by the killed site's size (one daemon: nobody can take over; several) and shown for the
thesis's topology too (every site one daemon). --all-topologies takes every seed that kills a
site (two sites, a line of three, a mesh of three).

    python3 bench/sites_kill_view.py --seeds 1000 --against /tmp/main_spread_mini.py
    python3 bench/sites_kill_view.py --only 1575,1834 --against /tmp/main_spread_mini.py

--only takes chosen seeds (the soak lists those above 3 s) and prints each one's figure.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def mesh_kill_seeds(first: int, count: int, every_topology: bool = False) -> dict:
    """seed -> what the killed site and the topology are ("lone": the killed site has one
    daemon; "thesis": every site has one)."""
    sys.path.insert(0, os.path.join(ROOT, "tests"))
    sys.path.insert(0, ROOT)
    import sites_sim
    seeds = {}
    for seed in range(first, first + count):
        case = sites_sim.case_for_seed(seed)
        n = len(case.sites)
        mesh = all(case.costs[i][j] > 0 or case.costs[j][i] > 0 for i in range(n) for j in range(n) if i != j)
        if (every_topology or (n == 3 and mesh)) and case.site_kill_after_s is not None:
            seeds[seed] = {"lone": len(case.sites[case.site_kill]) == 1,
                           "thesis": all(len(s) == 1 for s in case.sites)}
    return seeds


def child(module_dir: str, seeds: list) -> None:
    """Runs in a process of its own, with `module_dir`'s spread_mini first on the path: prints
    one JSON line per seed."""
    # loaded by hand: sites_sim puts this tree first on the path, and finds it in sys.modules
    spec = importlib.util.spec_from_file_location("spread_mini", os.path.join(module_dir, "spread_mini.py"))
    module = sys.modules["spread_mini"] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sys.path.insert(0, os.path.join(ROOT, "tests"))
    import sites_sim
    assert sites_sim.sr is module
    for seed in seeds:
        res = sites_sim.run_seed(seed)
        case = sites_sim.case_for_seed(seed)
        print(json.dumps({"seed": seed, "view_s": res.stats.get("view_after_kill_s"),
                          "second_s": case.second_kill_after_s, "violations": len(res.violations)}),
              flush=True)


def start(module_dir: str, seeds: list) -> subprocess.Popen:
    """A child that runs the seeds with `module_dir`'s spread_mini (both run at once: the
    figures are simulated time, so they do not depend on the machine's load)."""
    return subprocess.Popen([sys.executable, os.path.abspath(__file__), "--child", module_dir,
                             "--seed-list", ",".join(map(str, seeds))],
                            stdout=subprocess.PIPE, universal_newlines=True)


def collect(child_process: subprocess.Popen) -> dict:
    out, _ = child_process.communicate()
    if child_process.returncode:
        raise SystemExit("a child run failed (exit %d)" % child_process.returncode)
    return {r["seed"]: r for r in map(json.loads, out.splitlines())}


def figures(values: list) -> str:
    values = sorted(values)
    if not values:
        return "no seeds"
    return "median %.2f s, 90th percentile %.2f s, max %.2f s" % (
        values[len(values) // 2], values[int(len(values) * 0.9)], values[-1])


def seconds(value) -> str:
    return "no view" if value is None else "%.2f s" % value


def report(label: str, rows: dict, kinds: dict) -> None:
    alone = [r["view_s"] for r in rows.values() if r["view_s"] is not None and r["second_s"] is None]
    by_kind = {what: [r["view_s"] for s, r in rows.items()
                      if r["view_s"] is not None and r["second_s"] is None and test(kinds[s])]
               for what, test in (("a site of one daemon killed", lambda k: k["lone"]),
                                  ("a site of several daemons killed", lambda k: not k["lone"]),
                                  ("every site one daemon (the thesis's)", lambda k: k["thesis"]))}
    # a second site killed: from that second kill (a view before it counts as 0: in time)
    second = [max(0.0, r["view_s"] - r["second_s"]) for r in rows.values()
              if r["view_s"] is not None and r["second_s"] is not None]
    every = [r["view_s"] for r in rows.values() if r["view_s"] is not None]
    failing = sorted(s for s, r in rows.items() if r["violations"])
    print("%s:" % label)
    print("  one site killed, and no other (%d seeds): %s" % (len(alone), figures(alone)))
    for what, values in by_kind.items():
        print("    %s (%d seeds): %s" % (what, len(values), figures(values)))
    print("  a second site killed about when the first's loss is decided, from that second kill "
          "(%d seeds): %s" % (len(second), figures(second)))
    print("  every seed, from the first kill (%d seeds): %s" % (len(every), figures(every)))
    late = sorted(s for s, r in rows.items() if r["second_s"] is None and (r["view_s"] or 0) > 3.0)
    print("  one site killed, above 3 s: %s" % (", ".join(
        "%d (%.2f s)" % (s, rows[s]["view_s"]) for s in late) or "none"))
    print("  seeds with violations: %s" % (failing or "none"))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Kill -> view of a whole site in a mesh of three sites "
                                     "(simulated time), against another spread_mini in the same run.")
    parser.add_argument("--seeds", type=int, default=1000, help="how many seeds to draw from (default 1000)")
    parser.add_argument("--first", type=int, default=1)
    parser.add_argument("--all-topologies", action="store_true",
                        help="every seed that kills a site (two sites, a line), not only a mesh of three")
    parser.add_argument("--only", metavar="SEEDS",
                        help="these seeds only (comma-separated, say the soak's above 3 s), of any topology: "
                             "each seed's figure is printed")
    parser.add_argument("--against", help="another spread_mini.py (say main's), run on the same seeds")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--seed-list", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child, [int(s) for s in args.seed_list.split(",") if s])
        return 0
    if args.against and not os.path.isfile(args.against):
        parser.error("--against: no file %s" % args.against)
    if args.only:
        try:
            chosen = sorted({int(x) for x in args.only.split(",") if x.strip()})
        except ValueError:
            parser.error("--only: seeds are numbers, comma-separated")
        kinds = {}
        for seed in chosen:
            kinds.update(mesh_kill_seeds(seed, 1, every_topology=True))
        seeds = sorted(kinds)
        print("seeds %s: %d kill a site%s" % (",".join(map(str, chosen)), len(seeds), (
            " (not %s)" % ",".join(str(s) for s in chosen if s not in kinds)) if len(seeds) < len(chosen) else ""))
    else:
        kinds = mesh_kill_seeds(args.first, args.seeds, args.all_topologies)
        seeds = sorted(kinds)
        print("seeds %d..%d: %d are %s with a site killed" % (
            args.first, args.first + args.seeds - 1, len(seeds),
            "of any topology" if args.all_topologies else "a mesh of three"))
    other_dir = None
    if args.against:
        other_dir = tempfile.mkdtemp(prefix="kill_view_")
    try:
        if other_dir:
            shutil.copy(args.against, os.path.join(other_dir, "spread_mini.py"))
            theirs_run = start(other_dir, seeds)
        ours = collect(start(ROOT, seeds))
        theirs = collect(theirs_run) if other_dir else None
    finally:
        if other_dir:
            shutil.rmtree(other_dir)
    report("this spread_mini", ours, kinds)
    if args.only:  # (a few seeds: each one's figure, from the first kill)
        for seed in seeds:
            print("  seed %d: %s%s" % (seed, seconds(ours[seed]["view_s"]), (
                " (%s: %s)" % (args.against, seconds(theirs[seed]["view_s"]))) if args.against else ""))
    if args.against:
        report(args.against, theirs, kinds)
        changed = sorted(((theirs[s]["view_s"] or 0) - (ours[s]["view_s"] or 0), s) for s in seeds)
        print("  most changed (theirs -> ours): %s" % ", ".join(
            "%d %.2f -> %.2f" % (s, theirs[s]["view_s"] or -1, ours[s]["view_s"] or -1)
            for d, s in reversed(changed[-8:]) if d > 0.05))
        # (a second kill's moment is drawn from SITE_GRACE_S: with another grace, another case)
        for what, second in (("one site killed", False), ("a second site killed too", True)):
            later = [(d, s) for d, s in changed if d < -0.005 and (ours[s]["second_s"] is not None) == second]
            print("  later with ours, %s (theirs -> ours; %d of %d seeds changed at all): %s" % (
                what, sum(1 for d, s in changed if d), len(changed), ", ".join(
                    "%d %.2f -> %.2f" % (s, theirs[s]["view_s"] or -1, ours[s]["view_s"] or -1)
                    for d, s in later[:8]) + (" (%d in all)" % len(later) if len(later) > 8 else "") or "none"))
    which = ("--only " + ",".join(map(str, seeds))) if args.only else "--seeds %d --first %d%s" % (
        args.seeds, args.first, " --all-topologies" if args.all_topologies else "")
    print("rerun: python3 bench/sites_kill_view.py %s%s" % (
        which, " --against " + args.against if args.against else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
