"""The original ring against the Accelerated Ring on an emulated lab LAN, in one run.

On loopback the daemons are CPU-bound and a packet costs no wire time; on the lab's LAN the
holder's burst takes wire time (200 packets of 1400 B, to two peers, are 45 ms at 100 Mbit/s),
which is what the Accelerated Ring (AcceleratedRing, AcceleratedWindow in spread.conf) was made
for. This script builds three namespace hosts on one bridge (labnet.LabNet, 10.99.0.1-3),
limits every host's link to --mbit in both directions (a tc token bucket on the host's eth0
and on its switch port), and runs spread_mini daemons there, one sender on d1 and one receiver on d3
(bench/ring_throughput.py's roles; --senders 3: one on each daemon), with each ring protocol in turn, --repeat rounds, the order
turned each round. Every packet stays inside the namespaces made here, removed at the end.

    sudo python3 bench/ring_lan.py                                   # off,15 at 100 Mbit/s
    sudo python3 bench/ring_lan.py --variants off,15,100 --mbit 100 --repeat 3 --count 10000

Needs root, iproute2 (ip, tc). Exit 2 with one line when it cannot run here.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path[:0] = [ROOT, HERE]

import labnet  # noqa: E402
import ring_throughput as rt  # noqa: E402

DAEMONS = 3
PORT = 4803
THROUGHPUT = os.path.join(HERE, "ring_throughput.py")


def limit_links(lab, mbit):
    """Every host's link at `mbit` each way: its eth0 (up) and its switch port (down)."""
    # a token bucket (tbf): a queue of 3 MB holds a visit's burst, as a switch's and a NIC's
    # buffers do, so the holder's packets wait for the wire instead of being dropped
    shaper = ["root", "tbf", "rate", "%dmbit" % mbit, "burst", "32kb", "limit", "3mb"]
    for host in range(1, DAEMONS + 1):
        lab.run(host, ["tc", "qdisc", "add", "dev", "eth0", *shaper], check=True, capture_output=True)
        subprocess.run(["ip", "netns", "exec", lab.switch, "tc", "qdisc", "add", "dev",
                        lab._port(host), *shaper], check=True, capture_output=True)


def start_daemons(lab, tmpdir, lines, tag):
    conf = os.path.join(tmpdir, "spread_%s.conf" % tag)
    with open(conf, "w") as f:
        f.write("Spread_Segment 239.255.77.1:%d {\n" % PORT)
        for host in range(1, DAEMONS + 1):
            f.write("    d%d %s\n" % (host, lab.ip(host)))
        f.write("}\n" + "".join(line + "\n" for line in lines))
    procs = []
    for host in range(1, DAEMONS + 1):
        log = open(os.path.join(tmpdir, "%s_d%d.log" % (tag, host)), "w")
        procs.append(lab.popen(host, [sys.executable, os.path.join(ROOT, "spread_mini.py"), "daemon",
                                      "-c", conf, "--name", "d%d" % host, "--status-every", "0",
                                      "--no-unix", "--max-session-messages", "1000000"],
                               stdout=log, stderr=subprocess.STDOUT))
    deadline = time.monotonic() + 20
    while not all(lab.run(h, [sys.executable, "-c", "import socket; socket.create_connection("
                              "('%s', %d), 0.5)" % (lab.ip(h), PORT)], capture_output=True).returncode == 0
                  for h in range(1, DAEMONS + 1)):
        if time.monotonic() > deadline:
            raise SystemExit("daemons did not start; see %s" % tmpdir)
        time.sleep(0.2)
    time.sleep(1.5)  # the ring forms
    return procs


def stop(procs):
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            p.kill()


def run_case(lab, tmpdir, service, size, count, tag, senders=1):
    """(messages, seconds, p50 s, p99 s) at the receiver on d3, or None. The senders are on
    d1, d2, ... (count // senders messages each): with several, the holders' bursts follow
    each other round the ring, the case the Accelerated Ring overlaps."""
    ready = os.path.join(tmpdir, "ready_%s" % tag)
    group = "lan%s" % tag
    rcv = lab.popen(DAEMONS, [sys.executable, THROUGHPUT, "--role", "receiver", "--port", str(PORT),
                              "--ip", lab.ip(DAEMONS), "--count", str(count), "--group", group,
                              "--ready", ready], stdout=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 20
    while not os.path.exists(ready):
        if time.monotonic() > deadline or rcv.poll() is not None:
            rcv.kill()
            return None
        time.sleep(0.05)
    snds = [lab.popen(host, [sys.executable, THROUGHPUT, "--role", "sender", "--port", str(PORT),
                             "--ip", lab.ip(host), "--count", str(count // senders), "--size",
                             str(size), "--service", service, "--group", group],
                      stdout=subprocess.DEVNULL) for host in range(1, senders + 1)]
    try:
        out, _ = rcv.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        rcv.kill()
        out = ""
    for snd in snds:
        snd.wait(60)
    for line in out.splitlines():
        if line.startswith("RESULT"):
            got, elapsed, _nbytes, p50, p99 = line.split()[1:]
            return int(got), float(elapsed), float(p50), float(p99)
    return None


def main(argv=None):
    parser = argparse.ArgumentParser(description="The original and the Accelerated Ring on an "
                                                 "emulated LAN of namespace hosts.")
    parser.add_argument("--variants", default="off,15", help="ring protocols, as ring_throughput's "
                        "--accelerated-compare (default off,15)")
    parser.add_argument("--mbit", type=int, default=100, help="each host's link, Mbit/s (default 100)")
    parser.add_argument("--services", default="AGREED,SAFE")
    parser.add_argument("--size", type=int, default=1000)
    parser.add_argument("--count", type=int, default=10000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--senders", type=int, default=1, choices=range(1, DAEMONS + 1),
                        help="senders on d1, d2, ... (default 1)")
    args = parser.parse_args(argv)
    try:
        variants = rt.accelerated_variants(args.variants)
    except ValueError as exc:
        parser.error("--variants: %s" % exc)
    services = args.services.split(",")
    if any(s not in ("AGREED", "SAFE") for s in services) or not 1 <= args.mbit <= 10000:
        parser.error("services AGREED/SAFE, --mbit 1..10000")
    reason = labnet.available(("tc",))
    if reason:
        print("ring_lan.py: cannot run here: %s" % reason, file=sys.stderr)
        return 2
    args.count -= args.count % args.senders
    print(rt.machine_line() + "; links %d Mbit/s; %d sender%s" % (
        args.mbit, args.senders, "s" if args.senders > 1 else ""))
    print("| service | ring | round | messages | msgs/s | Mbit/s | p50 ms | p99 ms |")
    print("|---|---|---|---|---|---|---|---|", flush=True)
    totals = {}
    tmpdir = tempfile.mkdtemp(prefix="ring-lan-")
    try:
        with labnet.LabNet(DAEMONS) as lab:
            limit_links(lab, args.mbit)
            case_no = 0
            for round_no in range(1, args.repeat + 1):
                shift = (round_no - 1) % len(variants)
                for label, lines in variants[shift:] + variants[:shift]:
                    procs = start_daemons(lab, tmpdir, lines, "r%d%s" % (round_no, label.replace(" ", "")))
                    try:
                        for service in services:
                            case_no += 1
                            r = run_case(lab, tmpdir, service, args.size, args.count, str(case_no),
                                         args.senders)
                            if r is None or r[0] < 2 or r[1] <= 0:
                                print("| %s | %s | %d | failed | | | | |" % (service, label, round_no), flush=True)
                                continue
                            got, seconds, p50, p99 = r
                            t = totals.setdefault((service, label), [0, 0.0])
                            t[0] += got
                            t[1] += seconds
                            mark = "" if got == args.count else " (short)"
                            print("| %s | %s | %d | %d%s | %.0f | %.1f | %.1f | %.1f |" % (
                                service, label, round_no, got, mark, got / seconds,
                                got / seconds * args.size * 8 / 1e6, p50 * 1000, p99 * 1000), flush=True)
                    finally:
                        stop(procs)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    first = variants[0][0]
    for service in services:
        base = totals.get((service, first))
        for label, _ in variants[1:]:
            t = totals.get((service, label))
            if base and t:
                print("%s, %d B, links %d Mbit/s: %s %.0f msgs/s, %s %.0f: ratio %.2f" % (
                    service, args.size, args.mbit, label, t[0] / t[1], first, base[0] / base[1],
                    (t[0] / t[1]) / (base[0] / base[1])))
    print("rerun: sudo python3 bench/ring_lan.py --variants %s --mbit %d --services %s --size %d "
          "--count %d --repeat %d --senders %d" % (args.variants, args.mbit, args.services, args.size,
                                                   args.count, args.repeat, args.senders), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
