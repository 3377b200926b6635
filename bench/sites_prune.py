"""Bytes saved by pruning on a HOP link to a site with no member of a group, with real
spread_mini daemons on loopback: site 0 = a1, site 1 = b1. A client of a1 is in the groups
"near" and "both"; a client of b1 only in "both". In one run, COUNT messages of SIZE bytes go
to "near" (b1 has no member: the link a1 -> b1 carries SKIPs, the messages' places) and then
COUNT to "both" (the link carries the bodies). Printed: the link's data bytes per message in
each phase (a1's status table: "bytes out" of its HOP link, every record on it: SKIPs or
messages, FRONTIER and ARU) and their ratio.

    python3 bench/sites_prune.py                     # 2000 x 1000 B
    python3 bench/sites_prune.py --count 5000 --size 200
"""
from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

import spread_mini as sp  # noqa: E402
from ring_throughput import machine_line  # noqa: E402
from sites_failover import start, stop  # noqa: E402

#: a1's status table comes every second (--status-every 1); a figure is read once it held
#: still for this long
SETTLE_S = 2.5


def link_figures(log_path):
    """(bytes out, messages pruned) of a1's HOP link to site 1 in its last status table."""
    text = re.sub(r"[\s\u2502|]+", " ", open(log_path).read())  # (a table row may wrap)
    out = re.findall(r"HOP link to site 1 .*?bytes out (\d+)", text)
    pruned = re.findall(r"to site 1: (\d+) messages, \d+ B not sent", text)
    return (int(out[-1]) if out else 0), (int(pruned[-1]) if pruned else 0)


def settled(log_path, timeout_s=60.0):
    """The link's figures once two status tables SETTLE_S apart agree."""
    last, since = None, time.monotonic()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        now = link_figures(log_path)
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= SETTLE_S:
            return now
        time.sleep(0.2)
    raise SystemExit("a1's status table never settled (%s)" % log_path)


def members_of(mbox, count):
    while True:
        msg = mbox.receive(timeout=30)
        if msg is None:
            raise SystemExit("a membership never came")
        if msg.is_membership and len(msg.members) == count:
            return


def data(mbox, count):
    got = 0
    while got < count:
        msg = mbox.receive(timeout=60)
        if msg is None:
            raise SystemExit("only %d of %d messages arrived" % (got, count))
        if not msg.is_membership:
            got += 1


def measure(count, size):
    os.environ["COLUMNS"] = "400"  # the daemons' status tables: one line a row
    with tempfile.TemporaryDirectory() as tmpdir:
        procs, ip, port = start(tmpdir, 1, [["a1"], ["b1"]], ["--status-every", "1"])
        log = os.path.join(tmpdir, "r1_a1.log")
        try:
            sender = sp.connect("%d@%s" % (port["a1"], ip["a1"]), "snd", 0, True)
            receiver = sp.connect("%d@%s" % (port["b1"], ip["b1"]), "rcv", 0, True)
            sender.join("near")
            members_of(sender, 1)
            receiver.join("both")
            members_of(receiver, 1)
            sender.join("both")
            members_of(receiver, 2)
            members_of(sender, 2)
            payload = b"x" * size
            start_bytes, _ = settled(log)
            for _ in range(count):
                sender.multicast(sp.AGREED_MESS, "near", payload)
            data(sender, count)
            near_bytes, pruned = settled(log)
            for _ in range(count):
                sender.multicast(sp.AGREED_MESS, "both", payload)
            data(receiver, count)
            data(sender, count)
            both_bytes, _ = settled(log)
            sender.disconnect()
            receiver.disconnect()
            return (near_bytes - start_bytes) / count, (both_bytes - near_bytes) / count, pruned
        finally:
            stop(procs)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--size", type=int, default=1000)
    args = parser.parse_args(argv)
    if args.count < 1 or args.size < 1:
        parser.error("--count and --size must be at least 1")
    print("sites pruning on loopback: %s" % machine_line())
    pruned_b, full_b, pruned = measure(args.count, args.size)
    print("%d x %d B AGREED from site 0; the HOP link to site 1 carried %.1f B per message to a "
          "group with no member there (%d SKIPs) and %.1f B per message to a group with one: "
          "pruned / unpruned = %.3f" % (args.count, args.size, pruned_b, pruned, full_b, pruned_b / full_b))
    print("rerun: python3 bench/sites_prune.py --count %d --size %d" % (args.count, args.size))
    return 0


if __name__ == "__main__":
    sys.exit(main())
