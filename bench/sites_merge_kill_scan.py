"""A representative killed during a merge, at each step of it: for a seed of tests/sites_sim.py
whose cut heals, run it once without a kill and note every step of the healed views' merge as
each daemon's gateway takes it (it proposes the merge, a site's MERGE or READY comes in, it
decides, it installs a view); then run the seed again once per step, with the representative
of a site (or, --whole-site, every daemon of it) killed just after that step (kill -9, 0.5 ms
later), and check the guarantees. With --sweep S, kill points every S seconds from the heal on
too. Prints one row per kill point, the figures, and for every kill point that breaks a
guarantee the command that replays it (simulated time: the figures do not depend on the machine).

    python3 bench/sites_merge_kill_scan.py 423                 # seed 423's own site
    python3 bench/sites_merge_kill_scan.py 423 --site 1 --sweep 0.05
    python3 bench/sites_merge_kill_scan.py 423 --site 1 --at 0.62 --log   # replay one point
    python3 bench/sites_merge_kill_scan.py --seeds 50 --first 1           # the seeds that heal
"""
from __future__ import annotations

import argparse
import collections
import os
import sys
from typing import List, Optional, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))
sys.path.insert(0, os.path.dirname(HERE))

import sites_sim  # noqa: E402

#: a kill point is this long after its step: the step's packets are out, the next tick not yet
AFTER_STEP_S = 0.0005


class StepsSim(sites_sim.SitesSim):
    """The seed run without a merge kill, noting the merge's steps after the heal."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.steps: List[Tuple[float, str]] = []  # (seconds after the heal, what)
        self.seen: dict = {}  # daemon -> (merging?, MERGEs in, READYs in, view seq)

    def step(self) -> None:
        super().step()
        if getattr(self, "healed_at", None) is None:
            return
        for name, node in self.live().items():
            self.note_step(name, node.gateway)

    def note_step(self, name: str, gw) -> None:
        m = gw.merging
        now = (m is not None, tuple(sorted(m.proposals)) if m else (), tuple(sorted(m.ready)) if m else (),
               gw.view_seq)
        before = self.seen.get(name)
        self.seen[name] = now
        if before is None or before == now:
            return
        site = "abc"[gw.site_id]
        if now[3] != before[3]:
            what = "installs view %d %s" % (gw.view_seq, "".join("abc"[s] for s in sorted(gw.live_sites)))
        elif now[0] and not before[0]:
            what = "proposes the merge (its MERGE)"
        elif not now[0]:
            what = "gives the merge up"
        elif now[2] != before[2]:
            new = sorted(set(now[2]) - set(before[2]))
            what = "has the READY of %s" % "".join("abc"[s] for s in new) if new else "READYs withdrawn"
            if gw.site_id in new:
                what = "decides the merge (its READY)"
        else:
            new = sorted(set(now[1]) - set(before[1]))
            what = "has the MERGE of %s" % "".join("abc"[s] for s in new) if new else "MERGEs withdrawn"
        self.steps.append((self.now - self.healed_at, "%s (site %s) %s" % (name, site, what)))


def merge_steps(seed: int, lan_splits: bool = False):
    """The merge's steps in the seed's run without a merge kill, and that run's result."""
    case = sites_sim.case_for_seed(seed, lan_splits)
    case.merge_kill_after_s, case.merge_kill_rep = None, False
    sim = StepsSim(seed, case=case, lan_splits=lan_splits)
    return sim.steps, sim.run()


def run_point(seed: int, at_s: float, site: Optional[int], rep: bool, lan_splits: bool = False):
    case = sites_sim.forced_merge_kill_case(seed, at_s, site, rep, lan_splits)
    sim = sites_sim.SitesSim(seed, case=case, lan_splits=lan_splits)
    res = sim.run()
    killed = sim.merge_killed if rep else "site %s" % "abc"[case.merge_kill]
    return case, res, killed or "nobody (its last daemon)"


def point_command(seed: int, at_s: float, site: int, rep: bool, lan_splits: bool) -> str:
    return "python3 bench/sites_merge_kill_scan.py %d --site %d --at %.4f%s%s --log" % (
        seed, site, at_s, "" if rep else " --whole-site", " --lan-splits" if lan_splits else "")


def kill_points(steps, sweep_s: Optional[float]) -> List[Tuple[float, str]]:
    """Just after each step (one point per moment), and every sweep_s from the heal to a
    half second after the last step."""
    points = {}
    for at_s, what in steps:
        points.setdefault(round(at_s + AFTER_STEP_S, 4), "after: " + what)
    if sweep_s:
        end_s = (steps[-1][0] if steps else 1.2) + 0.5
        for i in range(int(end_s / sweep_s) + 1):
            points.setdefault(round(i * sweep_s, 4), "sweep")
    return sorted(points.items())


def scan_seed(seed: int, site: Optional[int], rep: bool, sweep_s: Optional[float], lan_splits: bool,
              quiet: bool = False) -> dict:
    """Every kill point of one seed: {points, failing: [(at_s, what, kinds, command)], steps,
    base: the kinds of violation of the run without a kill}. If that run fails already, the
    kill points' failures are not the kill's: they are not counted."""
    steps, base = merge_steps(seed, lan_splits)
    if base.violations:
        print("  without a merge kill the seed fails already (%s): its kill points do not count"
              % ", ".join(sorted(base.kinds())))
        if quiet:  # (scanning a range: not worth the runs)
            return {"site": None, "steps": steps, "points": 0, "failing": [], "kinds": {},
                    "base": sorted(base.kinds())}
    site = sites_sim.forced_merge_kill_case(seed, 0.0, site, rep, lan_splits).merge_kill
    points = kill_points(steps, sweep_s if steps else (sweep_s or 0.1))
    failing = []
    kinds = collections.Counter()
    for at_s, what in points:
        _, res, killed = run_point(seed, at_s, site, rep, lan_splits)
        found = sorted(res.kinds())
        kinds.update(sites_sim.kind_of(v) for v in res.violations)
        if not quiet:
            print("  %7.4f s  kill %-22s %-60s %s" % (at_s, killed, what[:60],
                                                     ", ".join(found) if found else "ok"))
        if res.violations and not base.violations:
            failing.append((at_s, what, found, point_command(seed, at_s, site, rep, lan_splits)))
    return {"site": site, "steps": steps, "points": len(points), "failing": failing, "kinds": kinds,
            "base": sorted(base.kinds())}


def healing_seeds(first: int, count: int, rep: bool, lan_splits: bool) -> List[int]:
    """The seeds of the range whose cut heals (and, rep, with a site of several daemons)."""
    found = []
    for seed in range(first, first + count):
        case = sites_sim.case_for_seed(seed, lan_splits)
        if case.heal_after_s is not None and (not rep or any(len(s) > 1 for s in case.sites)):
            found.append(seed)
    return found


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Kill a representative at each step of a healed "
                                     "merge in the deterministic simulator; report the kill "
                                     "points that break a guarantee.")
    parser.add_argument("seed", nargs="?", type=int, help="one seed (its cut must heal)")
    parser.add_argument("--seeds", type=int, help="or scan the seeds of a range whose cut heals")
    parser.add_argument("--first", type=int, default=1, help="first seed of --seeds (default 1)")
    parser.add_argument("--site", type=int, help="the site to kill in (0 = a; default: the seed's "
                        "own merge kill's site, or the first site of several daemons)")
    parser.add_argument("--whole-site", action="store_true",
                        help="kill every daemon of the site, not only its representative")
    parser.add_argument("--sweep", type=float, metavar="S", help="kill points every S seconds too")
    parser.add_argument("--at", type=float, metavar="S", help="one kill point, S seconds after the heal")
    parser.add_argument("--log", action="store_true", help="(with --at) the daemons' protocol logs")
    parser.add_argument("--lan-splits", action="store_true", help="the cases of sites_soak --lan-splits")
    args = parser.parse_args(argv)
    rep = not args.whole_site
    if (args.seed is None) == (args.seeds is None):
        parser.error("give one seed, or --seeds N")
    try:
        if args.at is not None:
            return replay(args.seed, args.at, args.site, rep, args.lan_splits, args.log)
        seeds = [args.seed] if args.seed is not None else healing_seeds(args.first, args.seeds, rep,
                                                                         args.lan_splits)
        return scan(seeds, args, rep)
    except ValueError as err:
        parser.error(str(err))


def replay(seed: int, at_s: float, site: Optional[int], rep: bool, lan_splits: bool, log: bool) -> int:
    case, res, killed = run_point(seed, at_s, site, rep, lan_splits)
    print("sites %s; cut healed %.3f s after it; killed %s %.4f s after the heal" % (
        case.sites, case.heal_after_s, killed, at_s))
    if log:
        print("\n".join(res.log_lines))
    print(res.summary())
    return 1 if res.violations else 0


def scan(seeds: List[int], args, rep: bool) -> int:
    totals = collections.Counter()
    kinds = collections.Counter()
    failing = []
    broken = []  # seeds that fail without a kill
    for seed in seeds:
        case = sites_sim.case_for_seed(seed, args.lan_splits)
        print("seed %d: sites %s, cut healed %.3f s after it" % (seed, case.sites, case.heal_after_s))
        try:
            got = scan_seed(seed, args.site, rep, args.sweep, args.lan_splits, quiet=len(seeds) > 1)
        except ValueError as err:
            if len(seeds) == 1:
                raise
            print("  skipped: %s" % err)  # (--site names a site of one daemon in this seed)
            continue
        totals["seeds"] += 1
        if got["base"]:
            broken.append(seed)
            continue
        totals["points"] += got["points"]
        totals["steps"] += len(got["steps"])
        totals["merges"] += bool(got["steps"])
        kinds.update(got["kinds"])
        if len(seeds) > 1:
            print("  site %s: %d merge steps, %d kill points, %d break a guarantee" % (
                "abc"[got["site"]], len(got["steps"]), got["points"], len(got["failing"])))
        failing += [(seed,) + f for f in got["failing"]]
    print("merge kill scan: %d seeds (%d with a merge after the heal), %d merge steps, %d kill "
          "points (%s), %d break a guarantee" % (
              totals["seeds"], totals["merges"], totals["steps"], totals["points"],
              "every daemon of the site" if not rep else "its representative", len(failing)))
    if broken:
        print("failing without a merge kill already (not counted): %s; replay: python3 "
              "tests/sites_sim.py SEED --log" % broken)
    if kinds:
        print("violations by checker: " + ", ".join("%s %d" % kv for kv in sorted(kinds.items())))
    for seed, at_s, what, found, command in failing:
        print("  seed %d at %.4f s (%s): %s\n    %s" % (seed, at_s, what, ", ".join(found), command))
    print("rerun: python3 bench/sites_merge_kill_scan.py %s%s%s%s%s" % (
        args.seed if args.seed is not None else "--seeds %d --first %d" % (args.seeds, args.first),
        " --site %d" % args.site if args.site is not None else "", " --whole-site" if not rep else "",
        " --sweep %g" % args.sweep if args.sweep else "", " --lan-splits" if args.lan_splits else ""))
    return 1 if failing or broken else 0


if __name__ == "__main__":
    sys.exit(main())
