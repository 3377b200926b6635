"""What a daemon's join costs the clients of the daemons already running, with real spread_mini
daemons of two sites on loopback (LinkProtocol = Hop): site 0 = a1, a2, a3; site 1 = b1.

A sender at a1 multicasts AGREED messages at a steady rate (--rate) to a group whose members
are clients at a1, a2 and b1. Each round starts the daemons afresh, lets the stream run, kills
a3 with SIGKILL, waits (--down-s), starts a3 again (a new incarnation: its ring re-forms with
a1 and a2, it is brought up to date by the sites' state) and lets the stream run on until a3
is in the ring and --after-s more. a3 has no client, so the join changes no group membership:
what the clients see is the ring's change alone. Since the hold before the status point (lab
guide, *The rings meet*, step 6) a daemon up to date holds the ring's deliveries from a ring
with newcomers until every member's STATUS has been delivered; this measures it.

Printed per round and receiver: the worst latency (send -> delivery) of the messages sent
while the stream ran steady (before the kill), around the kill (from 0.3 s before it to the
restart), and in the join's window (from --before-s before a1's log says it installed the
ring with a3 to --window-s after: the ring's GATHER and COMMIT, the STATUS round, the state's
transfer), and the longest pause between two deliveries in that window; then the medians
over the rounds of the worst receiver, per version, and (with --against) the ratios. The
latencies are in ms; the sender's, the receivers' and the daemons' log clocks are the one
monotonic clock of the machine. A restarted daemon's start (Python's import of spread_mini)
takes a second or more on a loaded machine: the join's window is keyed to the ring, not to
the restart.

    python3 bench/sites_join_gap.py                          # 3 rounds
    python3 bench/sites_join_gap.py --rounds 5 --against /tmp/old_spread_mini.py

With --against, each round runs both daemons (this tree's and the other spread_mini.py), one
after the other, so both meet the same load.
"""
from __future__ import annotations

import argparse
import os
import re
import signal
import statistics
import struct
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)

import spread_mini as sp  # noqa: E402
from ring_throughput import machine_line  # noqa: E402
from sites_failover import spawn, start, stop, wait_members  # noqa: E402

LAYOUT = [["a1", "a2", "a3"], ["b1"]]
SENDER = "a1"
RECEIVERS = ["a1", "a2", "b1"]
RESTARTED = "a3"
GROUP = "jg"
STAMP = struct.Struct("!Id")  #: a message's number and the moment it was sent


def ring_with_all(log_path, names, after_s):
    """The moment (the daemon's monotonic clock, which is ours) a1's log says it installed a
    ring holding every name, at or after `after_s`; None if not yet."""
    pattern = re.compile(r"^\S+ ring: (\d+\.\d+) \S+ .*installed ring")
    for line in open(log_path, errors="replace"):
        m = pattern.match(line)
        if m and float(m.group(1)) >= after_s and all("%s#" % n in line for n in names):
            return float(m.group(1))
    return None


def holds_ms(log_path, after_s):
    """The holds before the status point this daemon logged at or after `after_s` (ms each;
    none from a spread_mini before the hold's log line)."""
    pattern = re.compile(r"^\S+ sites: (\d+\.\d+) \S+ held (\d+) ring outputs for (\d+\.\d+) ms")
    found = []
    for line in open(log_path, errors="replace"):
        m = pattern.match(line)
        if m and float(m.group(1)) >= after_s:
            found.append(float(m.group(3)))
    return found


class Stream:
    """The sender's thread and the receivers' threads of one round."""

    def __init__(self, ip, port, rate, size):
        self.rate, self.size = rate, size
        self.sender = sp.connect("%d@%s" % (port[SENDER], ip[SENDER]), "snd", 0, False)
        self.clients = {n: sp.connect("%d@%s" % (port[n], ip[n]), "r" + n, 0, True) for n in RECEIVERS}
        for m in self.clients.values():
            m.join(GROUP)
        for m in self.clients.values():
            wait_members(m, len(self.clients), 30)
        self.sent = []  #: moments the messages were sent, by number
        self.got = {n: [] for n in RECEIVERS}  #: (number, sent at, delivered at) per receiver
        self.stopping = False
        self.drain_until = float("inf")
        self.threads = [threading.Thread(target=self._send)] + [
            threading.Thread(target=self._receive, args=(n,)) for n in RECEIVERS]

    def begin(self):
        for t in self.threads:
            t.start()

    def end(self, drain_s=5.0):
        self.drain_until = time.monotonic() + drain_s
        self.stopping = True
        self.threads[0].join()
        for t in self.threads[1:]:
            t.join()
        for m in [self.sender] + list(self.clients.values()):
            try:
                m.disconnect()
            except sp.SpreadError:
                pass

    def _send(self):
        start_s, i = time.monotonic(), 0
        pad = b"x" * max(0, self.size - STAMP.size)
        while not self.stopping:
            time.sleep(max(0.0, start_s + i / self.rate - time.monotonic()))
            now = time.monotonic()
            self.sent.append(now)
            self.sender.multicast(sp.AGREED_MESS, GROUP, STAMP.pack(i, now) + pad)
            i += 1

    def _receive(self, name):
        box, got = self.clients[name], self.got[name]
        while True:
            if self.stopping and not self.threads[0].is_alive() and (
                    len(got) >= len(self.sent) or time.monotonic() > self.drain_until):
                return
            msg = box.receive(timeout=0.2)
            if msg is None or msg.is_membership:
                continue
            number, sent_at = STAMP.unpack_from(msg.data)
            got.append((number, sent_at, time.monotonic()))


def worst_latency_ms(got, since_s, until_s):
    values = [delivered - sent for _, sent, delivered in got if since_s <= sent < until_s]
    return 1000 * max(values) if values else float("nan")


def longest_pause_ms(got, since_s, until_s):
    times = [delivered for _, _, delivered in got if since_s <= delivered < until_s]
    return 1000 * max((b - a for a, b in zip(times, times[1:])), default=float("nan"))


def one_round(tmpdir, round_no, program, args):
    """Figures of one round: per receiver, (steady, kill, join) worst latencies and the join's
    longest pause (ms); and the seconds from the restart to a1's ring with a3."""
    procs, ip, port = start(tmpdir, round_no, LAYOUT, program=program)
    stream = None
    try:
        stream = Stream(ip, port, args.rate, args.size)
        stream.begin()
        began = time.monotonic()
        time.sleep(args.steady_s)
        killed = time.monotonic()
        # (a message sent just before the kill waits for the ring without a3: not steady)
        steady_until = killed - 0.3
        procs[RESTARTED].send_signal(signal.SIGKILL)
        procs[RESTARTED].wait()
        time.sleep(args.down_s)
        restarted = time.monotonic()
        log_a3 = os.path.join(tmpdir, "r%d_%s.log" % (round_no, RESTARTED))
        procs[RESTARTED] = spawn(os.path.join(tmpdir, "sites.conf"), RESTARTED, log_a3, (), program, mode="a")
        log_a1 = os.path.join(tmpdir, "r%d_%s.log" % (round_no, SENDER))
        joined = None
        deadline = restarted + 30
        while joined is None and time.monotonic() < deadline:
            time.sleep(0.1)
            joined = ring_with_all(log_a1, LAYOUT[0], restarted)
        time.sleep(args.after_s)
        stream.end()
        sent = len(stream.sent)
        rows = {}
        # the join's window: from a little before a1 installs the ring with a3 (its GATHER
        # and COMMIT come first) to a while after it (the STATUS round, the state's transfer)
        since, until = (joined - args.before_s, joined + args.window_s) if joined is not None else (0, 0)
        for n, got in stream.got.items():
            rows[n] = {"steady": worst_latency_ms(got, began + 0.5, steady_until),
                       "kill": worst_latency_ms(got, steady_until, restarted),
                       "join": worst_latency_ms(got, since, until),
                       "pause": longest_pause_ms(got, since, until),
                       "missing": sent - len({number for number, _, _ in got})}
            if n in LAYOUT[0]:
                rows[n]["held"] = holds_ms(os.path.join(tmpdir, "r%d_%s.log" % (round_no, n)), restarted)
        return rows, (joined - restarted) if joined is not None else None
    finally:
        stop(procs)


def median(values):
    values = [v for v in values if v == v]
    return statistics.median(values) if values else float("nan")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="rounds per version (default 3)")
    parser.add_argument("--against", help="another spread_mini.py (say an older commit's), run in the same rounds")
    parser.add_argument("--rate", type=float, default=200.0, help="the sender's messages per second (default 200)")
    parser.add_argument("--size", type=int, default=100, help="bytes per message (default 100)")
    parser.add_argument("--steady-s", type=float, default=2.0, help="seconds of stream before the kill (default 2)")
    parser.add_argument("--down-s", type=float, default=3.0, help="seconds a3 stays down (default 3)")
    parser.add_argument("--after-s", type=float, default=2.0,
                        help="seconds of stream after a1's ring holds a3 again (default 2)")
    parser.add_argument("--before-s", type=float, default=0.3,
                        help="the join's window starts this long before a1 installs the ring with a3 (default 0.3)")
    parser.add_argument("--window-s", type=float, default=1.0,
                        help="... and ends this long after it (default 1)")
    parser.add_argument("--keep-logs", metavar="DIR", help="the daemons' logs go into DIR (r<round>_<name>.log)")
    args = parser.parse_args(argv)
    if args.against and not os.path.isfile(args.against):
        parser.error("--against: no file %s" % args.against)
    print("sites join gap on loopback: %s" % machine_line())
    print("%d AGREED/s of %d B from a client at %s to clients at %s; %s killed after %g s, started "
          "again %g s later" % (args.rate, args.size, SENDER, ", ".join(RECEIVERS), RESTARTED, args.steady_s,
                                args.down_s))
    print("per receiver, the worst latency (ms) of the messages sent: steady / around the kill / in the "
          "join's window (%g s before a1's ring with %s to %g s after); the longest pause between deliveries "
          "in the join's window" % (args.before_s, RESTARTED, args.window_s))
    programs = {"this": None}
    if args.against:
        programs[args.against] = os.path.abspath(args.against)
    results = {label: [] for label in programs}
    with tempfile.TemporaryDirectory() as tmpdir:
        if args.keep_logs:
            os.makedirs(args.keep_logs, exist_ok=True)
            tmpdir = args.keep_logs
        round_no = 0
        for _ in range(args.rounds):
            for label, program in programs.items():
                round_no += 1
                rows, joined_s = one_round(tmpdir, round_no, program, args)
                results[label].append((rows, joined_s))
                print("round %d %-8s a1's ring with %s %s after the restart; %s" % (
                    round_no, "this" if program is None else "against", RESTARTED,
                    "%.2f s" % joined_s if joined_s is not None else "NEVER (30 s)",
                    "; ".join("%s %.0f / %.0f / %.0f, pause %.0f%s%s" % (
                        n, r["steady"], r["kill"], r["join"], r["pause"],
                        ", MISSING %d" % r["missing"] if r["missing"] else "",
                        ", held %s ms" % "+".join("%.1f" % h for h in r["held"]) if r.get("held") else "")
                        for n, r in rows.items())),
                    flush=True)
    medians = {}
    for label, runs in results.items():
        worst_join = [max(r["join"] for r in rows.values()) for rows, _ in runs]
        worst_pause = [max(r["pause"] for r in rows.values()) for rows, _ in runs]
        worst_steady = [max(r["steady"] for r in rows.values()) for rows, _ in runs]
        joined = [j for _, j in runs if j is not None]
        held = [h for rows, _ in runs for r in rows.values() for h in r.get("held", ())]
        medians[label] = (median(worst_join), median(worst_pause))
        print("%-40s median over %d rounds of the worst receiver: latency in the join's window %.0f ms "
              "(steady %.0f ms), longest pause %.0f ms; ring with %s %.2f s after the restart; missing %d" % (
                  label, len(runs), median(worst_join), median(worst_steady), median(worst_pause), RESTARTED,
                  median(joined), sum(r["missing"] for rows, _ in runs for r in rows.values())))
        if held:
            print("%-40s the hold before the status point (a1's and a2's logs): median %.1f ms, max %.1f ms "
                  "(%d holds)" % ("", median(held), max(held), len(held)))
    if args.against:
        ours, theirs = medians["this"], medians[args.against]
        print("this / against: join latency %.2f, longest pause %.2f" % (ours[0] / theirs[0], ours[1] / theirs[1]))
    print("after: %s" % machine_line().replace(" at the start", ""))
    print("rerun: python3 bench/sites_join_gap.py --rounds %d --rate %g --size %d --steady-s %g --down-s %g "
          "--after-s %g --before-s %g --window-s %g%s" % (
              args.rounds, args.rate, args.size, args.steady_s, args.down_s, args.after_s, args.before_s,
              args.window_s, " --against " + args.against if args.against else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
