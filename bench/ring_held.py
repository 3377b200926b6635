"""What the group state exchange holds after a ring change, with real daemons on loopback.

Three daemons (127.0.0.1-3). Clients of d1 and d2 flood 1000-byte AGREED messages as fast as
they can, so megabytes wait in each daemon's ring queue (the daemon stops reading its clients at
16 MB). Then d3 is killed (kill -9) and started again: two ring changes, two group state
exchanges, each holding what is delivered before the last STATE. Each daemon's status table
reports the peak (`held in state exchange (peak)`); this prints it beside the limit.

    python3 bench/ring_held.py
    python3 bench/ring_held.py --flood-s 4
"""
from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

import spread_mini as sp  # noqa: E402
from ring_throughput import ROOT, free_port, port_open  # noqa: E402

HELD_ROW = re.compile(r"held in state exchange \(peak\)\s*\S?\s*(\d+) messages, (\d+) KB "
                      r"\(limit (\d+) KB; exceeded (\d+)\)")


def flood(port, ip, user, stop, sent):
    try:
        with sp.connect("%d@%s" % (port, ip), user, 0, False) as mbox:
            payload = b"x" * 1000
            while not stop.is_set():
                mbox.multicast(sp.AGREED_MESS, "held", payload)
                sent[user] = sent.get(user, 0) + 1
    except sp.SpreadError as exc:
        print("flooder %s: %s" % (user, exc), file=sys.stderr)


def write_conf(tmpdir):
    port = free_port()
    conf = os.path.join(tmpdir, "spread.conf")
    with open(conf, "w") as f:
        f.write("Spread_Segment 239.255.4.3:%d {\n" % port)
        for i in (1, 2, 3):
            f.write("    d%d 127.0.0.%d\n" % (i, i))
        f.write("}\n")
    return conf, port


def start_daemon(conf, port, i, tmpdir):
    log = open(os.path.join(tmpdir, "d%d.log" % i), "a")  # a restart appends
    proc = subprocess.Popen(
        [sys.executable, os.path.join(ROOT, "spread_mini.py"), "daemon", "-c", conf, "--name",
         "d%d" % i, "--status-every", "1", "--no-unix"], stdout=log, stderr=subprocess.STDOUT,
        cwd=ROOT)
    if not wait_for(lambda: port_open("127.0.0.%d" % i, port), 20):
        raise SystemExit("daemon d%d did not start; see %s" % (i, tmpdir))
    return proc


def log_text(tmpdir, i):
    with open(os.path.join(tmpdir, "d%d.log" % i)) as f:
        return f.read()


def wait_for(pred, timeout_s):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.1)
    return False


def main(argv=None):
    parser = argparse.ArgumentParser(description="What the group state exchange holds after a ring change, with real daemons on loopback.")
    parser.add_argument("--flood-s", type=float, default=3.0,
                        help="seconds of flooding before the kill (default 3)")
    args = parser.parse_args(argv)
    if args.flood_s <= 0:
        parser.error("--flood-s must be positive")
    tmpdir = tempfile.mkdtemp(prefix="ring_held_")
    conf, port = write_conf(tmpdir)
    procs = [start_daemon(conf, port, i, tmpdir) for i in (1, 2, 3)]
    if not wait_for(lambda: "d3#" in log_text(tmpdir, 1).split("installed ring")[-1], 20):
        raise SystemExit("the ring did not form; see %s" % tmpdir)
    stop = threading.Event()
    sent = {}
    threads = [threading.Thread(target=flood, args=(port, "127.0.0.%d" % i, "f%d" % i, stop, sent))
               for i in (1, 2)]
    try:
        for t in threads:
            t.start()
        time.sleep(args.flood_s)
        procs[2].send_signal(signal.SIGKILL)
        procs[2].wait()
        wait_for(lambda: log_text(tmpdir, 1).count("installed ring") >= 2, 20)
        procs[2] = start_daemon(conf, port, 3, tmpdir)
        merged = wait_for(lambda: log_text(tmpdir, 1).count("installed ring") >= 3, 20)
        time.sleep(args.flood_s)
    finally:
        stop.set()
        for t in threads:
            t.join(10)
        time.sleep(2.5)  # one more status table
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(10)
    print("three daemons, clients of d1 and d2 flooding 1000 B AGREED (%s messages sent); "
          "d3 killed and restarted%s" % (sum(sent.values()), "" if merged else " (NO MERGE SEEN)"))
    print("| daemon | rings installed | clients paused (backlog high) | held peak msgs | "
          "held peak KB | limit KB | limit exceeded |")
    print("|---|---|---|---|---|---|---|")
    for i in (1, 2, 3):
        text = log_text(tmpdir, i)
        rows = HELD_ROW.findall(text)
        peak = rows[-1] if rows else ("?", "?", "?", "?")
        print("| d%d | %d | %s | %s | %s | %s | %s |" % (
            i, text.count("installed ring"),
            "yes" if "wait for the token: clients are not read" in text else "no",
            peak[0], peak[1], peak[2], peak[3]))
    print("(d3's row is its second process.) logs: %s" % tmpdir)
    print("rerun: python3 bench/ring_held.py --flood-s %g" % args.flood_s)
    return 0


if __name__ == "__main__":
    sys.exit(main())
