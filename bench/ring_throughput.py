"""Throughput and latency of spread_mini daemons joined by the RING protocol, on loopback.

For 1, 3 and 5 daemons (127.0.0.1 ... 127.0.0.5, one machine), AGREED and SAFE, 100 and 1000
byte messages: one sender connected to the first daemon floods a group, one receiver connected
to the last daemon counts and times what it gets. Rows: messages/s and Mbit/s at the receiver,
delivery latency (median and 99th percentile, sender and receiver share the machine's clock).
The 1-daemon row is the same daemon without the ring (its LocalOrderer): the figure beside it.

    python3 bench/ring_throughput.py                    # the full table
    python3 bench/ring_throughput.py --daemons 3 --sizes 1000 --services AGREED --count 20000
    python3 bench/ring_throughput.py --rate 1000 --count 5000   # latency at a moderate load
    git show HEAD~1:spread_mini.py > /tmp/old_spread_mini.py   # another version, in the same run:
    python3 bench/ring_throughput.py --daemons 3 --against /tmp/old_spread_mini.py --repeat 3
    python3 bench/ring_throughput.py --key-compare              # what --key costs, as a ratio
    python3 bench/ring_throughput.py --accelerated-compare off,15 --repeat 3   # the Accelerated
                                         # Ring (its AcceleratedWindow) against the original ring
    python3 bench/ring_throughput.py --daemons 3 --keep-logs /tmp/ringlogs   # keep the daemons' logs

A row whose receiver missed messages, got some twice or out of order, or during which a daemon
logged a new ring or cut a client off, is marked (k) and note k under the table says what
happened: such a row measures more than the ring.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import struct
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

import labnet  # noqa: E402
import spread_mini as sp  # noqa: E402
from labnet import port_open  # noqa: E402

STAMP = struct.Struct(">dI")  # send time (monotonic), sequence number


def free_port(n=5):
    """A port free for TCP and UDP on 127.0.0.1..n (labnet.free_port says where it is taken)."""
    return labnet.free_port(["127.0.0.%d" % i for i in range(1, n + 1)])


CASES = itertools.count(1)  # numbers each case: its group and its receiver's ready file
STARTS = itertools.count(1)  # numbers each start of the daemons: kept logs do not overwrite each other


def start_daemons(n, tmpdir, spread=os.path.join(ROOT, "spread_mini.py"), key=None, logdir=None,
                  settings=()):
    """n daemons in one ring: (processes, port, log paths); the logs go to logdir (or tmpdir)
    as s<start>_d<n>_<i>.log. settings: more lines of spread.conf ("AcceleratedRing = false")."""
    port = free_port(n)
    start_no = next(STARTS)
    conf = os.path.join(tmpdir, "spread%d.conf" % n)
    with open(conf, "w") as f:
        f.write("Spread_Segment 239.255.4.3:%d {\n" % port)
        for i in range(1, n + 1):
            f.write("    d%d 127.0.0.%d\n" % (i, i))
        f.write("}\n")
        f.writelines(line + "\n" for line in settings)
    procs = []
    logs = [os.path.join(logdir or tmpdir, "s%d_d%d_%d.log" % (start_no, n, i)) for i in range(1, n + 1)]
    for i, path in enumerate(logs, 1):
        log = open(path, "w")
        procs.append(subprocess.Popen(
            [sys.executable, spread, "daemon", "-c", conf, "--name",
             "d%d" % i, "--status-every", "5" if logdir else "0", "--no-unix", "--max-session-messages", "1000000"]
            + (["--key", key] if key else []),
            stdout=log, stderr=subprocess.STDOUT, cwd=ROOT))
    deadline = time.monotonic() + 20
    while not all(port_open("127.0.0.%d" % i, port) for i in range(1, n + 1)):
        if time.monotonic() > deadline:
            stop_daemons(procs)  # never leave daemons behind
            raise SystemExit("daemons did not start; see %s" % tmpdir)
        time.sleep(0.1)
    time.sleep(1.5 if n > 1 else 0.2)  # the ring forms (startup waits one consensus timeout)
    return procs, port, logs


def stop_daemons(procs):
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            p.kill()


def machine_line():
    """Where the figures come from: they mean little without the machine and its load."""
    try:
        load = "%.1f %.1f %.1f" % os.getloadavg()
    except OSError:
        load = "?"
    return "%s, %d CPU cores, load average %s (1, 5, 15 min) at the start" % (
        time.strftime("%Y-%m-%d %H:%M %Z"), os.cpu_count() or 0, load)


def ratio_text(rate, one_daemon_rate):
    """msgs/s as a fraction of the 1-daemon figure of the same service and size."""
    if not one_daemon_rate:
        return ""
    return "%.2f" % (rate / one_daemon_rate)


def receiver(port, ip, count, group, ready_path, wait_s=30.0):
    mbox = sp.connect("%d@%s" % (port, ip), "rcv", 0, True)
    mbox.join(group)
    while True:
        msg = mbox.receive(timeout=10)
        if msg is not None and msg.is_membership:
            break
    open(ready_path, "w").close()
    latencies = []
    got = 0
    first = last = None
    nbytes = 0
    seen = bytearray(count)  # which of the sender's sequence numbers came
    tally = ReceiverTally()
    ended = "all"
    while got < count:
        try:
            msg = mbox.receive(timeout=wait_s)
        except sp.SpreadError as exc:  # the daemon closed us (a slow client cut off?) or died
            ended = "daemon closed the connection: %s" % exc
            break
        if msg is None:
            ended = "%.0f s without a message" % wait_s
            break
        if msg.is_membership:
            tally.memberships.append(repr(msg))
            continue
        now = time.monotonic()
        sent, seq = STAMP.unpack_from(msg.data)
        tally.note(seq, seen)
        latencies.append(now - sent)
        if first is None:
            first = now
        last = now
        got += 1
        nbytes += len(msg.data)
    mbox.disconnect()
    elapsed = (last - first) if got > 1 else 0.0
    latencies.sort()
    p50 = latencies[len(latencies) // 2] if latencies else 0.0
    p99 = latencies[int(len(latencies) * 0.99)] if latencies else 0.0
    print("RESULT %d %.6f %d %.6f %.6f" % (got, elapsed, nbytes, p50, p99), flush=True)
    print("DETAIL " + json.dumps(tally.detail(seen, ended)), flush=True)


class ReceiverTally:
    """What a receiver saw besides the count: sequence numbers out of order or twice, and
    membership messages (only a change of its group: a new ring that leaves that group as it
    was is seen in the daemons' logs, DAEMON_EVENTS)."""

    def __init__(self):
        self.memberships = []  # repr of each membership message after the receiver's own join
        self.duplicates = 0
        self.out_of_order = 0  # sequence numbers below one already seen (one sender: FIFO broken)
        self.highest = -1

    def note(self, seq, seen):
        if not 0 <= seq < len(seen):
            self.out_of_order += 1  # not one of this case's numbers: counted as wrong order
            return
        if seen[seq]:
            self.duplicates += 1
        seen[seq] = 1
        if seq < self.highest:
            self.out_of_order += 1
        self.highest = max(self.highest, seq)

    def detail(self, seen, ended):
        return {"ended": ended, "missing": missing_ranges(seen), "duplicates": self.duplicates,
                "out_of_order": self.out_of_order, "memberships": self.memberships}


def missing_ranges(seen, limit=20):
    """[first, last] runs of sequence numbers not seen; at most `limit` runs, then the count."""
    runs = []
    start = None
    for i, flag in enumerate(bytes(seen) + b"\x01"):
        if not flag and start is None:
            start = i
        elif flag and start is not None:
            runs.append([start, i - 1])
            start = None
    return runs[:limit] + ([["%d more runs" % (len(runs) - limit)]] if len(runs) > limit else [])


def sender(port, ip, count, size, service, group, rate):
    mbox = sp.connect("%d@%s" % (port, ip), "snd", 0, False)
    pad = b"x" * max(0, size - STAMP.size)
    start = time.monotonic()
    sent = 0
    try:
        for i in range(count):
            if rate:  # paced: the latency of a message, not of a queue
                delay = start + i / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            mbox.multicast(service, group, STAMP.pack(time.monotonic(), i) + pad)
            sent += 1
    finally:
        print("SENT %d" % sent, flush=True)  # the library took them; the daemon may not have yet
    time.sleep(2)
    mbox.disconnect()


def case_names(tmpdir, size):
    """(group, ready file) of a new case. Every case has its own: with names shared by the
    cases of the same daemons (--repeat, --against, --key-compare), an earlier case's ready file
    would start the sender before this receiver has joined (the first messages would go to a
    group with nobody in it, and the receiver would wait for them in vain), and a late message
    of an earlier case would count in this one."""
    case_no = next(CASES)
    return "bench%d_%d" % (size, case_no), os.path.join(tmpdir, "ready_%d" % case_no)


def cpu_seconds(pids):
    """utime + stime of these processes, summed (0 where /proc cannot tell)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            with open("/proc/%d/stat" % pid) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            pass
    return total / ticks


def run_case(n, port, service_name, size, count, tmpdir, rate=0, logs=(), pids=()):
    """(got, seconds, bytes, p50 s, p99 s, detail) or None; detail says what the receiver
    missed and saw (missing sequence numbers, membership messages), what the sender sent, the
    daemons' CPU seconds (`pids`: summed, from the receiver's join to its last message), and
    what the daemons' logs say happened meanwhile (a new ring, a client cut off)."""
    group, ready = case_names(tmpdir, size)
    log_marks = {path: log_size(path) for path in logs}
    rcv = subprocess.Popen([sys.executable, __file__, "--role", "receiver", "--port", str(port),
                            "--ip", "127.0.0.%d" % n, "--count", str(count), "--group", group,
                            "--ready", ready], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    deadline = time.monotonic() + 20
    while not os.path.exists(ready):
        if time.monotonic() > deadline or rcv.poll() is not None:
            rcv.kill()
            return None
        time.sleep(0.05)
    cpu_before = cpu_seconds(pids)
    snd = subprocess.Popen([sys.executable, __file__, "--role", "sender", "--port", str(port),
                            "--ip", "127.0.0.1", "--count", str(count), "--size", str(size),
                            "--service", service_name, "--group", group, "--rate", str(rate)],
                           stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        out, _ = rcv.communicate(timeout=180)
    except subprocess.TimeoutExpired:
        rcv.kill()
        out = ""
    cpu_used = cpu_seconds(pids) - cpu_before
    try:
        snd_out, _ = snd.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        snd.kill()
        snd_out = ""
    result, detail = None, {}
    for line in out.splitlines():
        if line.startswith("RESULT"):
            got, elapsed, nbytes, p50, p99 = line.split()[1:]
            result = [int(got), float(elapsed), int(nbytes), float(p50), float(p99)]
        elif line.startswith("DETAIL"):
            detail = json.loads(line[len("DETAIL"):])
    for line in snd_out.splitlines():
        if line.startswith("SENT"):
            detail["sent"] = int(line.split()[1])
    detail["daemon_events"] = daemon_events(log_marks)
    detail["daemon_cpu_s"] = cpu_used
    return tuple(result + [detail]) if result else None


#: lines of a daemon's log that change what a receiver is owed: a new ring (messages sent in the
#: old configuration reach only the daemons of the receiver's transitional configuration; the
#: receiver hears of it only if its group's membership changed, and the bench's sender is no
#: member) and a client cut off for not reading
DAEMON_EVENTS = ("-> OPERATIONAL: installed ring", "closed: not reading")


def log_size(path):
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def daemon_events(log_marks):
    """The DAEMON_EVENTS lines written to each log since its mark (path -> size then)."""
    events = []
    for path, start in log_marks.items():
        try:
            with open(path, "rb") as f:
                f.seek(start)
                text = f.read().decode("utf-8", "replace")
        except OSError:
            continue
        events += [line.strip() for line in text.splitlines() if any(e in line for e in DAEMON_EVENTS)]
    return events


def shortfall_text(count, r):
    """'' when the receiver got every message once, in order, in one configuration; else what
    went wrong, in words: the figures of such a row do not measure the ring alone."""
    got, detail = r[0], r[5]
    notes = []
    if detail.get("sent", count) < count:
        notes.append("the sender sent only %d" % detail["sent"])
    if got < count:
        missing = detail.get("missing", [])
        notes.append("receiver got %d of %d (missing sequence numbers %s; %s)" % (
            got, count, ", ".join("%s..%s" % tuple(m) if len(m) == 2 else m[0] for m in missing),
            detail.get("ended", "?")))
    for key in ("duplicates", "out_of_order"):
        if detail.get(key):
            notes.append("%d %s" % (detail[key], key.replace("_", " ")))
    changes = detail.get("memberships", [])
    if changes:
        notes.append("the receiver got %d membership messages: %s" % (len(changes), "; ".join(changes[:4])))
    events = detail.get("daemon_events", [])
    rings = [e for e in events if DAEMON_EVENTS[0] in e]
    if rings:
        notes.append("the ring changed during the case (%d new rings installed, counting each "
                     "daemon's: %s)" % (len(rings), "; ".join(rings[:3])))
    notes += [e for e in events if DAEMON_EVENTS[1] in e][:3]
    return "; ".join(notes)


def main(argv=None):
    parser = argparse.ArgumentParser(description="Throughput and latency of spread_mini rings on loopback.")
    parser.add_argument("--daemons", default="1,3,5", help="ring sizes, comma separated (default 1,3,5)")
    parser.add_argument("--services", default="AGREED,SAFE", help="default AGREED,SAFE")
    parser.add_argument("--sizes", default="100,1000", help="message sizes in bytes (default 100,1000)")
    parser.add_argument("--count", type=int, default=20000, help="messages per case (default 20000)")
    parser.add_argument("--rate", type=float, default=0.0,
                        help="messages per second of the sender (default 0: as fast as it can)")
    parser.add_argument("--against", metavar="SPREAD_MINI_PY",
                        help="also run the daemons of this spread_mini.py, alternating with ours, and "
                             "print the ratio of the medians (the machine is shared: one run, two versions)")
    parser.add_argument("--key-compare", action="store_true",
                        help="each case without and with a key (--key), alternately --repeat "
                             "times, and the ratio keyed/unkeyed (default 3 daemons, AGREED, 1000 B)")
    parser.add_argument("--accelerated-compare", metavar="WINDOWS",
                        help="the original ring ('off') and the Accelerated Ring with each "
                             "AcceleratedWindow given (e.g. off,15,100), alternately --repeat "
                             "times, and each one's ratio to the first (default 3 daemons, "
                             "AGREED and SAFE, 1000 B)")
    parser.add_argument("--repeat", type=int, default=None,
                        help="runs of each case per version (default 1), or --key-compare rounds (default 3)")
    parser.add_argument("--keep-logs", metavar="DIR",
                        help="write the daemons' logs into DIR and keep them (s<start>_d<N>_<i>.log: one set "
                             "per start of the daemons, with their status every 5 s)")
    parser.add_argument("--role", choices=["receiver", "sender"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--ip", help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, default=100, help=argparse.SUPPRESS)
    parser.add_argument("--service", default="AGREED", help=argparse.SUPPRESS)
    parser.add_argument("--group", default="bench", help=argparse.SUPPRESS)
    parser.add_argument("--ready", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.keep_logs:
        os.makedirs(args.keep_logs, exist_ok=True)
    if args.role == "receiver":
        receiver(args.port, args.ip, args.count, args.group, args.ready)
        return 0
    if args.role == "sender":
        service = {"AGREED": sp.AGREED_MESS, "SAFE": sp.SAFE_MESS}[args.service]
        sender(args.port, args.ip, args.count, args.size, service, args.group, args.rate)
        return 0
    try:
        sizes = [int(s) for s in args.sizes.split(",")]
        rings = [int(s) for s in args.daemons.split(",")]
    except ValueError:
        parser.error("--sizes and --daemons are comma-separated numbers")
    services = args.services.split(",")
    if any(s not in ("AGREED", "SAFE") for s in services) or any(not 1 <= n <= 9 for n in rings) \
            or any(not STAMP.size <= s <= 100000 for s in sizes) or args.count < 10 or args.rate < 0:
        parser.error("services AGREED/SAFE, 1..9 daemons, sizes %d..100000, count >= 10" % STAMP.size)
    versions = [("this", os.path.join(ROOT, "spread_mini.py"))]
    if args.against:
        if not os.path.isfile(args.against):
            parser.error("--against %s: no such file" % args.against)
        versions.append(("against", os.path.abspath(args.against)))
    print(machine_line())
    if args.key_compare:
        if args.repeat is None:
            args.repeat = 3
        return key_compare(args, rings if args.daemons != "1,3,5" else [3], services, sizes
                           if args.sizes != "100,1000" else [1000])
    if args.accelerated_compare:
        try:
            variants = accelerated_variants(args.accelerated_compare)
        except ValueError as exc:
            parser.error("--accelerated-compare: %s" % exc)
        if args.repeat is None:
            args.repeat = 3
        return settings_compare(args, rings if args.daemons != "1,3,5" else [3], services, sizes
                                if args.sizes != "100,1000" else [1000], variants)
    if args.repeat is None:
        args.repeat = 1
    print("| daemons | service | size B | messages | msgs/s | x 1 daemon | Mbit/s | latency p50 ms | p99 ms "
          "| daemon CPU us/msg |" + (" version |" if args.against else ""))
    print("|---|---|---|---|---|---|---|---|---|---|" + ("---|" if args.against else ""), flush=True)
    one_daemon = {}  # (version, service, size) -> msgs/s of the 1-daemon row: the figure beside each row
    rates = {}  # (n, service, size, version) -> [(msgs/s, daemon CPU us/msg, p99 ms) of each run]
    notes = []  # what went wrong in a row, printed under the table
    with tempfile.TemporaryDirectory() as tmpdir:
        for n in rings:
            for run in range(max(1, args.repeat)):
                # alternating, and in turn first: both see the same load, drifts cancel
                for version, spread in (versions if run % 2 == 0 else versions[::-1]):
                    procs, port, logs = start_daemons(n, tmpdir, spread, logdir=args.keep_logs)
                    try:
                        for service in services:
                            for size in sizes:
                                rate = print_case(n, port, service, size, args, tmpdir, one_daemon,
                                                  version if args.against else "", notes, logs,
                                                  [p.pid for p in procs])
                                rates.setdefault((n, service, size, version), []).append(rate)
                    finally:
                        stop_daemons(procs)
    print_notes(notes)
    if args.against:
        print_comparison(rates, rings, services, sizes, args.against)
    print("rerun: python3 bench/ring_throughput.py --daemons %s --services %s --sizes %s --count %d%s%s%s"
          % (args.daemons, args.services, args.sizes, args.count,
             " --rate %g" % args.rate if args.rate else "",
             " --against %s" % args.against if args.against else "",
             " --repeat %d" % args.repeat if args.repeat > 1 else ""))
    return 0


def footnote(notes, n, service, size, count, r):
    """' (k)' after the row's message count when the case went wrong (note k, printed under
    the table), else ''."""
    text = shortfall_text(count, r)
    if not text:
        return ""
    notes.append("(%d) %d daemons, %s, %d B: %s" % (len(notes) + 1, n, service, size, text))
    return " (%d)" % len(notes)


def print_notes(notes):
    """What went wrong in the rows marked (k): their figures are not the ring's alone."""
    if notes:
        print()
        print("\n".join(notes), flush=True)


def print_case(n, port, service, size, args, tmpdir, one_daemon, version, notes, logs=(), pids=()):
    """One row; (msgs/s, the daemons' CPU per message in us, summed, p99 latency in ms) (zeros
    if it failed)."""
    tail = " %s |" % version if version else ""
    r = run_case(n, port, service, size, args.count, tmpdir, args.rate, logs, pids)
    if r is None or r[0] < 2:
        print("| %d | %s | %d | failed | | | | | | |%s" % (n, service, size, tail), flush=True)
        return 0.0, 0.0, 0.0
    got, elapsed, nbytes, p50, p99, _detail = r
    mark = footnote(notes, n, service, size, args.count, r)
    rate = got / elapsed if elapsed > 0 else 0.0
    if n == 1:
        one_daemon[(version, service, size)] = rate
    cpu_us = _detail.get("daemon_cpu_s", 0.0) / got * 1e6
    print("| %d | %s | %d | %d%s | %.0f | %s | %.1f | %.1f | %.1f | %.0f |%s" % (
        n, service, size, got, mark, rate, ratio_text(rate, one_daemon.get((version, service, size))),
        rate * size * 8 / 1e6, p50 * 1000, p99 * 1000, cpu_us, tail), flush=True)
    return rate, cpu_us, p99 * 1000


def median(values):
    values = sorted(values)
    return values[len(values) // 2] if values else 0.0


def print_comparison(rates, rings, services, sizes, against):
    print()
    print("this spread_mini.py against %s (medians of the runs above; CPU: the daemons', summed):" % against)
    print("| daemons | service | size B | msgs/s this | against | this / against "
          "| CPU us/msg this | against | this / against | p99 ms this | against |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for n in rings:
        for service in services:
            for size in sizes:
                mine = [median([r[k] for r in rates.get((n, service, size, "this"), [])]) for k in (0, 1, 2)]
                theirs = [median([r[k] for r in rates.get((n, service, size, "against"), [])]) for k in (0, 1, 2)]
                print("| %d | %s | %d | %.0f | %.0f | %s | %.0f | %.0f | %s | %.1f | %.1f |" % (
                    n, service, size, mine[0], theirs[0], "%.2f" % (mine[0] / theirs[0]) if theirs[0] else "-",
                    mine[1], theirs[1], "%.2f" % (mine[1] / theirs[1]) if theirs[1] else "-",
                    mine[2], theirs[2]), flush=True)


def key_compare(args, rings, services, sizes):
    """Without and with a key, alternately (the machine's load changes under both alike):
    rows per run, then the total rate of each and their ratio."""
    print("| daemons | service | size B | key | round | messages | msgs/s |")
    print("|---|---|---|---|---|---|---|", flush=True)
    totals = {}  # (n, service, size, keyed) -> [messages, seconds]
    notes = []  # what went wrong in a row, printed under the table
    with tempfile.TemporaryDirectory() as tmpdir:
        key = os.path.join(tmpdir, "ring.key")
        sp.write_key_file(key)
        for n in rings:
            for round_no in range(1, args.repeat + 1):
                for keyed in (False, True):
                    procs, port, logs = start_daemons(n, tmpdir, key=key if keyed else None,
                                                      logdir=args.keep_logs)
                    try:
                        for service in services:
                            for size in sizes:
                                r = run_case(n, port, service, size, args.count, tmpdir, logs=logs)
                                if r is None or r[0] < 2 or r[1] <= 0:
                                    print("| %d | %s | %d | %s | %d | failed | |" % (
                                        n, service, size, "yes" if keyed else "no", round_no), flush=True)
                                    continue
                                mark = footnote(notes, n, service, size, args.count, r)
                                t = totals.setdefault((n, service, size, keyed), [0, 0.0])
                                t[0] += r[0]
                                t[1] += r[1]
                                print("| %d | %s | %d | %s | %d | %d%s | %.0f |" % (
                                    n, service, size, "yes" if keyed else "no", round_no, r[0],
                                    mark, r[0] / r[1]), flush=True)
                    finally:
                        stop_daemons(procs)
    print_notes(notes)
    for (n, service, size, keyed), (count, seconds) in sorted(totals.items()):
        if keyed and (n, service, size, False) in totals:
            plain = totals[(n, service, size, False)]
            with_key, without = count / seconds, plain[0] / plain[1]
            print("%d daemons, %s, %d B: %.0f msgs/s with the key, %.0f without: ratio %.2f "
                  "(cost %.0f%%)" % (n, service, size, with_key, without, with_key / without,
                                     100 * (1 - with_key / without)))
    print("rerun: python3 bench/ring_throughput.py --key-compare --repeat %d --count %d%s%s%s" % (
        args.repeat, args.count, " --daemons %s" % args.daemons if args.daemons != "1,3,5" else "",
        " --services %s" % args.services if args.services != "AGREED,SAFE" else "",
        " --sizes %s" % args.sizes if args.sizes != "100,1000" else ""), flush=True)
    return 0


def accelerated_variants(text):
    """'off,15,100' -> [(label, spread.conf lines)]: the original ring, the Accelerated Ring
    with AcceleratedWindow 15, then 100 (PersonalWindow raised to it where it is larger)."""
    variants = []
    for word in text.split(","):
        word = word.strip().lower()
        if word == "off":
            variants.append(("off", ["AcceleratedRing = false"]))
        elif word.isdigit():
            window = int(word)
            personal = sp.RingSettings().personal_window_packets
            lines = ["AcceleratedRing = true", "AcceleratedWindow = %d" % window]
            if window > personal:
                lines.append("PersonalWindow = %d" % window)
            variants.append(("window %d" % window, lines))
        else:
            raise ValueError("%r is neither 'off' nor a window in packets" % word)
    if len(variants) < 2:
        raise ValueError("give at least two, e.g. off,15")
    return variants


def daemons_cpu_s(procs):
    """utime + stime of the daemons, summed (seconds): the CPU a case cost moves less with the
    machine's load than its rate does."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for proc in procs:
        try:
            with open("/proc/%d/stat" % proc.pid) as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / ticks


def settings_compare(args, rings, services, sizes, variants):
    """Each variant (label, spread.conf lines) in turn, --repeat rounds, each round in
    another order (the machine's load changes under all alike): rows per run (with the
    daemons' CPU per message, summed over them), then the total rate and CPU of each variant
    and its ratio to the first."""
    print("| daemons | service | size B | ring | round | messages | msgs/s | p50 ms | p99 ms | CPU us/msg |")
    print("|---|---|---|---|---|---|---|---|---|---|", flush=True)
    totals = {}  # (n, service, size, label) -> [messages, seconds, daemon CPU seconds]
    notes = []
    with tempfile.TemporaryDirectory() as tmpdir:
        for n in rings:
            for round_no in range(1, args.repeat + 1):
                shift = (round_no - 1) % len(variants)
                for label, lines in variants[shift:] + variants[:shift]:
                    procs, port, logs = start_daemons(n, tmpdir, logdir=args.keep_logs, settings=lines)
                    try:
                        for service in services:
                            for size in sizes:
                                cpu_before = daemons_cpu_s(procs)
                                r = run_case(n, port, service, size, args.count, tmpdir, args.rate, logs)
                                cpu = daemons_cpu_s(procs) - cpu_before
                                if r is None or r[0] < 2 or r[1] <= 0:
                                    print("| %d | %s | %d | %s | %d | failed | | | | |" % (
                                        n, service, size, label, round_no), flush=True)
                                    continue
                                mark = footnote(notes, n, service, size, args.count, r)
                                t = totals.setdefault((n, service, size, label), [0, 0.0, 0.0])
                                t[0] += r[0]
                                t[1] += r[1]
                                t[2] += cpu
                                print("| %d | %s | %d | %s | %d | %d%s | %.0f | %.1f | %.1f | %.0f |" % (
                                    n, service, size, label, round_no, r[0], mark, r[0] / r[1],
                                    r[3] * 1000, r[4] * 1000, cpu / r[0] * 1e6), flush=True)
                    finally:
                        stop_daemons(procs)
    print_notes(notes)
    first = variants[0][0]
    for n in rings:
        for service in services:
            for size in sizes:
                base = totals.get((n, service, size, first))
                for label, _ in variants[1:]:
                    t = totals.get((n, service, size, label))
                    if base and t:
                        print("%d daemons, %s, %d B: %s %.0f msgs/s, %s %.0f: ratio %.2f; daemon "
                              "CPU per message %.0f us against %.0f: ratio %.2f" % (
                                  n, service, size, label, t[0] / t[1], first, base[0] / base[1],
                                  (t[0] / t[1]) / (base[0] / base[1]), t[2] / t[0] * 1e6,
                                  base[2] / base[0] * 1e6, (t[2] / t[0]) / (base[2] / base[0])))
    print("rerun: python3 bench/ring_throughput.py --accelerated-compare %s --repeat %d --count %d%s%s%s%s"
          % (args.accelerated_compare, args.repeat, args.count,
             " --daemons %s" % args.daemons if args.daemons != "1,3,5" else "",
             " --services %s" % args.services if args.services != "AGREED,SAFE" else "",
             " --sizes %s" % args.sizes if args.sizes != "100,1000" else "",
             " --rate %g" % args.rate if args.rate else ""), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
