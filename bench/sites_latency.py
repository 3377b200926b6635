"""AGREED latency across sites at low load, in the deterministic simulator (simulated time, so
the figures do not depend on the machine): two sites of two daemons each, one WAN link of
--delay-ms each way (no loss, 10 Mbit/s), a few messages a second. Prints the latency from
submit to delivery, at the sender's site and at the other site, next to the issue's target
(link delay + one ring rotation + 5 ms). --against runs the same case with another
spread_mini.py (say an older commit's) in a child process and prints its figures after ours
(simulated time: the machine's load does not move them).

    python3 bench/sites_latency.py [--delay-ms 20] [--seconds 10] [--service agreed|safe]
    python3 bench/sites_latency.py --delay-ms 20 --seconds 20 --against /tmp/old_spread_mini.py
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))
sys.path.insert(0, os.path.dirname(HERE))


def _load_spread_mini(path: str) -> None:
    """Another spread_mini.py, in place of this tree's (loaded by hand before sites_sim, which
    puts this tree first on the path and finds the module in sys.modules)."""
    spec = importlib.util.spec_from_file_location("spread_mini", path)
    module = sys.modules["spread_mini"] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)


if "--module" in sys.argv[:-1]:  # (a child of --against: before sites_sim's import)
    _load_spread_mini(sys.argv[sys.argv.index("--module") + 1])

import spread_mini as sr  # noqa: E402
import sites_sim  # noqa: E402
from hop_sim import WireSpec  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description="AGREED/SAFE latency across two sites in the simulator.")
    parser.add_argument("--delay-ms", type=float, default=20.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=5.0, help="messages per second (default 5)")
    parser.add_argument("--service", choices=("agreed", "safe"), default="agreed")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--against", help="another spread_mini.py (say an older commit's), run on the same case")
    parser.add_argument("--module", help=argparse.SUPPRESS)  # (the child's spread_mini.py)
    args = parser.parse_args(argv)
    if args.against and not os.path.isfile(args.against):
        parser.error("--against: no file %s" % args.against)
    status = measure(args, "this spread_mini" if not args.module else args.module)
    if args.against:
        sys.stdout.flush()
        child = [a for a in (argv if argv is not None else sys.argv[1:])]
        i = child.index("--against")
        child[i:i + 2] = ["--module", os.path.abspath(args.against)]
        status = subprocess.call([sys.executable, os.path.abspath(__file__)] + child) or status
    if not args.module:
        print("rerun: python3 bench/sites_latency.py --delay-ms %g --seconds %g --rate %g --service %s%s"
              % (args.delay_ms, args.seconds, args.rate, args.service,
                 " --against " + args.against if args.against else ""))
    return status


def measure(args, label: str) -> int:
    wire = WireSpec(loss=0.0, delay_s=args.delay_ms / 1000, jitter_s=0.0, bits_s=10e6)
    case = sites_sim.SitesCase(sites=[["a1", "a2"], ["b1", "b2"]], costs=[[0, 1], [1, 0]],
                               wires={(0, 1): wire, (1, 0): wire}, lan=sites_sim.LanSpec(loss=0.0),
                               rate_per_s=args.rate, traffic_s=args.seconds)
    service = sr.AGREED_MESS if args.service == "agreed" else sr.SAFE_MESS
    sim = sites_sim.SitesSim(args.seed, case=case, services=[service])
    res = sim.run()
    if res.violations:
        print(res.summary())
        return 1
    same, other = [], []
    by_sender: dict = {}  # the sender's daemon -> latencies at the other site
    for name, node in sim.nodes.items():
        for serial, at in node.delivered_at.items():
            sub = sim.submitted[serial]
            (same if sim.site_of[sub[2]] == sim.site_of[name] else other).append(at - sub[4])
            if sim.site_of[sub[2]] != sim.site_of[name]:
                by_sender.setdefault(sub[2], []).append(at - sub[4])
    rotation = sim.nodes["a1"].orderer.cfg.token_hold_s
    print("%s:" % label)
    print("%s, %d messages, WAN delay %.0f ms each way, rings of 2 daemons (an idle ring's token "
          "is held %.0f ms per rotation)" % (args.service.upper(), len(sim.submitted), args.delay_ms,
                                             rotation * 1000))
    for label, values in (("at the sender's site", same), ("at the other site", other)):
        values.sort()
        print("  %-22s median %.1f ms, 90th percentile %.1f ms, max %.1f ms" % (
            label, statistics.median(values) * 1000, values[int(len(values) * 0.9)] * 1000, values[-1] * 1000))
    print("  at the other site, by the sender's daemon (the first of a ring holds its idle token; "
          "a message sent at another daemon waits for it, up to one rotation):")
    for name, values in sorted(by_sender.items()):
        values.sort()
        print("    from %-4s %3d deliveries, median %.1f ms, max %.1f ms" % (
            name, len(values), statistics.median(values) * 1000, values[-1] * 1000))
    print("  the issue's target: delay + one rotation + 5 ms = %.1f ms" % (args.delay_ms + rotation * 1000 + 5))
    return 0


if __name__ == "__main__":
    sys.exit(main())
