#!/usr/bin/env python3
"""bench/labctl_answer.py: how long until every agent has answered `labctl.py ask running NAME`?

Starts a spread_mini daemon on loopback and N agents (each its own process, as on N lab
machines), waits until all are in the roll call, then asks `running python3` --rounds times and
prints, per agent count: the time from sending the request to the last answer (the asker's own
measure, the largest `ms` of the answers), and the whole `ask` command's wall time (Python's start
and the Spread handshake included). The first count (1 agent by default) is the baseline run in
the same session, so the ratio holds on a noisy shared machine.

    python3 bench/labctl_answer.py                     # 1 and 50 agents, 10 rounds each
    python3 bench/labctl_answer.py --agents 1,10,50,100 --rounds 5

Target (issue 11): 50 agents answer `running` within 1 s.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import List

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import labctl as lc  # noqa: E402
import spread_mini as sp  # noqa: E402

TARGET_S = 1.0                     #: issue 11: 50 agents answer within 1 s
ROLL_CALL_WAIT_S = 180.0           #: agents must all be in the roll call by then
ASK_TIMEOUT_S = 30.0


def free_port() -> int:
    """A loopback port below the kernel's ephemeral range (so no outgoing connection takes it)."""
    for _ in range(200):
        port = random.randrange(10000, 30000)
        try:
            with socket.socket() as s:
                s.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
    raise SystemExit("no free port")


def roll_call(daemon: str) -> int:
    with sp.connect(daemon, "$bench%03d" % random.randrange(1000), group_membership=True) as mbox:
        mbox.join(lc.roster_group(lc.DEFAULT_GROUP))
        while True:
            msg = mbox.receive(timeout=5)
            if msg is None:
                return 0
            if isinstance(msg, sp.MembershipMessage) and msg.is_regular and mbox.private_group in msg.members:
                return sum(1 for m in msg.members if not lc.is_asker(m))


def run_count(count: int, rounds: int, logdir: str) -> dict:
    port = free_port()
    daemon = f"{port}@127.0.0.1"
    procs: List[subprocess.Popen] = []
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    try:
        log = open(os.path.join(logdir, f"daemon{count}.log"), "w")
        procs.append(subprocess.Popen([sys.executable, "spread_mini.py", "daemon", "--port", str(port), "--no-unix",
                                       "--status-every", "0"], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env))
        deadline = time.monotonic() + 15
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit("the daemon did not start")
                time.sleep(0.1)
        for i in range(count):
            out = open(os.path.join(logdir, f"agent{count}-{i}.log"), "w")
            procs.append(subprocess.Popen([sys.executable, "labctl.py", "agent", "--daemon", daemon,
                                           "--name", f"pc{i:03d}", "--files-root", logdir],
                                          cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=env))
        deadline = time.monotonic() + ROLL_CALL_WAIT_S
        while roll_call(daemon) < count:
            if time.monotonic() > deadline:
                raise SystemExit(f"only {roll_call(daemon)} of {count} agents joined within {ROLL_CALL_WAIT_S:g} s")
            time.sleep(0.5)
        last_ms, wall_s, complete = [], [], 0
        for _ in range(rounds):
            started = time.monotonic()
            done = subprocess.run([sys.executable, "labctl.py", "ask", "running", "python3", "--json",
                                   "--daemon", daemon, "--timeout", str(ASK_TIMEOUT_S)],
                                  cwd=ROOT, capture_output=True, text=True, timeout=ASK_TIMEOUT_S + 30)
            wall_s.append(time.monotonic() - started)
            lines = [json.loads(line) for line in done.stdout.splitlines()]
            rows = [r for r in lines if "machine" in r]
            last_ms.append(max(r["ms"] for r in rows) if rows else float("nan"))
            complete += done.returncode == 0 and len(rows) == count
        return {"agents": count, "rounds": rounds, "complete": complete,
                "last_ms_median": statistics.median(last_ms), "last_ms_max": max(last_ms),
                "wall_s_median": statistics.median(wall_s), "wall_s_max": max(wall_s)}
    finally:
        for proc in procs:
            proc.kill()
        for proc in procs:
            proc.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--agents", default="1,50", help="agent counts, comma-separated (the first is the baseline)")
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    counts = [int(c) for c in args.agents.split(",")]
    results = []
    with tempfile.TemporaryDirectory(prefix="labctl-bench-") as logdir:
        for count in counts:
            results.append(run_count(count, args.rounds, logdir))
    print(f"labctl ask running python3: agents on one spread_mini daemon, loopback, {os.cpu_count()} cores")
    print(f"{'agents':>6} {'rounds':>6} {'complete':>8} {'last answer ms (median / max)':>30} "
          f"{'ask command s (median / max)':>30} {'vs first':>9}")
    base = results[0]["last_ms_median"]
    for r in results:
        print(f"{r['agents']:>6} {r['rounds']:>6} {r['complete']:>8} "
              f"{r['last_ms_median']:>14.1f} / {r['last_ms_max']:<13.1f} "
              f"{r['wall_s_median']:>14.2f} / {r['wall_s_max']:<13.2f} {r['last_ms_median'] / base:>8.1f}x")
    for r in results:
        if r["agents"] == 50:
            verdict = "met" if r["last_ms_max"] / 1000 <= TARGET_S and r["complete"] == r["rounds"] else "NOT met"
            print(f"target: 50 agents answer within {TARGET_S:g} s: {verdict} (worst {r['last_ms_max']:.0f} ms)")
    print(f"rerun: python3 bench/labctl_answer.py --agents {args.agents} --rounds {args.rounds}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
