#!/usr/bin/env python3
"""bench/calc_soak.py: do healthy calculator servers flap on a busy machine? (issue 12, item 5)

Starts busy-loop processes until the load average is 2 or more, then an idle cluster of
--servers servers on loopback, and counts for --minutes every state change after the first
DISCONNECTED -> ACTIVE of each index, and every change of who answers after the first: on an
idle healthy cluster each one is spurious. With --compare a second cluster runs beside it with
--jitter-grace 0 (the seed's plain count of missed ticks), under the same load at the same
time, so the two counts can be compared. --cold-starts N then starts a fresh cluster N times
under the same load and counts the starts in which a server other than 1 answered. It stops
the busy loops and the servers it started (by their pids) at the end, also on Ctrl-C.

    python3 bench/calc_soak.py                          # 10 minutes, 3 servers, load >= 2
    python3 bench/calc_soak.py --minutes 2 --compare --cold-starts 10
"""
from __future__ import annotations

import argparse
import os
import random
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

ROOT = Path(__file__).resolve().parent.parent

# ============================================================================================
# Constants
# ============================================================================================

TARGET_LOAD = 2.0               # the issue: a load average of 2 or more
MAX_LOAD_WAIT_S = 120.0         # the 1-minute average rises slowly
REPORT_EVERY_S = 60.0
CHANGE_RE = re.compile(r"  index (\d+)(?: \(me\))?: (\w+) -> (\w+)  ")
ANSWERING_RE = re.compile(r"server \d+: (now answering|stopped answering)")


# ============================================================================================
# Processes: busy loops and clusters
# ============================================================================================

class Spinners:
    """Busy-loop processes that keep the CPUs busy; stopped by their own pids."""

    def __init__(self, count: int):
        self.procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
                      for _ in range(count)]

    def stop(self) -> None:
        for proc in self.procs:
            proc.kill()
            proc.wait()


class SoakCluster:
    """Idle servers of one cluster on loopback, each logging to its own file."""

    def __init__(self, label: str, servers: int, heartbeat_s: float, extra: List[str],
                 logdir: Path):
        self.label = label
        tag = f"{os.getpid() % 10000}{random.randrange(1000)}"
        self.argv_common = [
            "--plain", "--iface", "127.0.0.1", "--cluster", f"soak{tag}",
            "--server-group", f"239.255.{random.randrange(1, 255)}.{random.randrange(1, 255)}:"
                              f"{random.randrange(20000, 60000)}",
            "--client-group", f"239.255.{random.randrange(1, 255)}.{random.randrange(1, 255)}:"
                              f"{random.randrange(20000, 60000)}",
            "--heartbeat", str(heartbeat_s), "--status-every", "3600", *extra]
        self.logs: Dict[int, Path] = {}
        self.procs: Dict[int, subprocess.Popen] = {}
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        for index in range(1, servers + 1):
            self.logs[index] = logdir / f"{label}-s{index}-{tag}.log"
            with open(self.logs[index], "w") as f:
                self.procs[index] = subprocess.Popen(
                    [sys.executable, str(ROOT / "calc_server.py"), str(index),
                     *self.argv_common], stdout=f, stderr=subprocess.STDOUT, env=env)

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def count(self) -> Dict[str, int]:
        """Spurious state changes and answering changes so far, over all servers."""
        changes = answering = 0
        for log in self.logs.values():
            first_active = set()
            first_answering = False
            for line in log.read_text(errors="replace").splitlines():
                m = CHANGE_RE.search(line)
                if m:
                    index, old, new = m.groups()
                    if (old, new) == ("DISCONNECTED", "ACTIVE") and index not in first_active:
                        first_active.add(index)
                    else:
                        changes += 1
                elif ANSWERING_RE.search(line):
                    if line.find("now answering") >= 0 and not first_answering:
                        first_answering = True
                    else:
                        answering += 1
        return {"changes": changes, "answering": answering}

    def answered_by(self) -> List[int]:
        return [i for i, log in self.logs.items()
                if "now answering requests" in log.read_text(errors="replace")]


# ============================================================================================
# The soak
# ============================================================================================

def load_now() -> float:
    return os.getloadavg()[0]


def wait_for_load(target: float) -> float:
    deadline = time.monotonic() + MAX_LOAD_WAIT_S
    while load_now() < target and time.monotonic() < deadline:
        time.sleep(2)
    return load_now()


def soak(args, logdir: Path) -> List[dict]:
    clusters = [SoakCluster("graced", args.servers, args.heartbeat, [], logdir)]
    if args.compare:
        clusters.append(SoakCluster("plain", args.servers, args.heartbeat,
                                    ["--jitter-grace", "0"], logdir))
    loads = []
    start = time.monotonic()
    end = start + args.minutes * 60
    next_report = start + REPORT_EVERY_S
    print("| minute | load average (1 min) | " +
          " | ".join(f"{c.label}: state changes, answering changes" for c in clusters) + " |")
    print("|---:|---:|" + "---:|" * len(clusters))
    try:
        while time.monotonic() < end:
            time.sleep(min(5.0, max(0.0, end - time.monotonic())))
            loads.append(load_now())
            if time.monotonic() >= next_report or time.monotonic() >= end:
                next_report += REPORT_EVERY_S
                cells = " | ".join(f"{n['changes']}, {n['answering']}" for n in
                                   (c.count() for c in clusters))
                print(f"| {(time.monotonic() - start) / 60:.1f} | {loads[-1]:.2f} | {cells} |",
                      flush=True)
    finally:
        for c in clusters:
            c.stop()
    return [dict(label=c.label, minutes=(time.monotonic() - start) / 60,
                 load_min=min(loads, default=float("nan")),
                 load_mean=sum(loads) / len(loads) if loads else float("nan"), **c.count())
            for c in clusters]


def cold_starts(args, logdir: Path) -> dict:
    """Start a fresh cluster `args.cold_starts` times; count starts where 2.. answered."""
    bad = 0
    for k in range(args.cold_starts):
        cluster = SoakCluster(f"cold{k}", args.servers, args.heartbeat, [], logdir)
        try:
            time.sleep(6 * args.heartbeat)      # the warm-up, the phases, and a margin
            others = [i for i in cluster.answered_by() if i != 1]
        finally:
            cluster.stop()
        bad += bool(others)
        print(f"cold start {k + 1}: answered by {sorted(cluster.answered_by()) or 'nobody'}",
              flush=True)
    return {"starts": args.cold_starts, "others_answered": bad, "load": load_now()}


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="soak length (default 10)")
    parser.add_argument("--servers", type=int, default=3, help="servers per cluster (2..5)")
    parser.add_argument("--heartbeat", type=float, default=1.0, help="seconds (default 1.0)")
    parser.add_argument("--spinners", type=int, default=(os.cpu_count() or 2) + 1,
                        help="busy-loop processes (default: CPUs + 1)")
    parser.add_argument("--compare", action="store_true",
                        help="also a cluster with --jitter-grace 0 (the seed's plain count)")
    parser.add_argument("--cold-starts", type=int, default=0, metavar="N",
                        help="then N cold starts under the same load")
    args = parser.parse_args(argv)
    if not 2 <= args.servers <= 5 or not 0 < args.minutes <= 600 or args.spinners < 0:
        parser.error("--servers 2..5, --minutes up to 600, --spinners 0 or more")
    logdir = ROOT / "bench-out" / f"soak-{os.getpid()}"
    logdir.mkdir(parents=True, exist_ok=True)
    print(f"calc soak: {args.spinners} busy loops, {args.servers} idle servers per cluster, "
          f"heartbeat {args.heartbeat} s, {args.minutes:g} minutes; logs in {logdir}")
    spinners = Spinners(args.spinners)
    try:
        print(f"load average before the servers start: {wait_for_load(TARGET_LOAD):.2f}",
              flush=True)
        results = soak(args, logdir)
        cold = cold_starts(args, logdir) if args.cold_starts else None
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 1
    finally:
        spinners.stop()
    print("\n## summary")
    print("| cluster | minutes | load average (min / mean) | spurious state changes | "
          "spurious answering changes |")
    print("|---|---:|---:|---:|---:|")
    for r in results:
        rule = ("--jitter-grace 0 (the seed's count)" if r["label"] == "plain" else
                "default --jitter-grace")
        print(f"| {rule} | {r['minutes']:.1f} | {r['load_min']:.2f} / {r['load_mean']:.2f} | "
              f"{r['changes']} | {r['answering']} |")
    if cold:
        print(f"\ncold starts: {cold['starts']}, in which a server other than 1 answered: "
              f"{cold['others_answered']} (load average {cold['load']:.2f})")
    print(f"\nrerun: python3 bench/calc_soak.py {' '.join(argv)}".rstrip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
