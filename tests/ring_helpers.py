"""Helpers for the tests of spread_mini daemons joined by the ring: a spread.conf with daemons
on 127.0.0.1, 127.0.0.2, ... (all loopback), started as real processes."""
from __future__ import annotations

import socket
import subprocess
import sys
import time

import spread_mini as sp
from conftest import ROOT, free_port, wait_for


def free_ring_port(addresses):
    """A port free for TCP (clients) and UDP (ring) on every loopback address of the ring,
    below the kernel's ephemeral range (conftest.free_port says why)."""
    return free_port([ip for ip in addresses if ip.startswith("127.")] or ["127.0.0.1"])


def write_conf(tmp_path, addresses, port=None):
    """A spread.conf naming d1.. at the given addresses; returns (path, port)."""
    port = port or free_ring_port(addresses)
    lines = ["# spread_mini ring test", "Spread_Segment 239.255.4.3:%d {" % port]
    for i, ip in enumerate(addresses, 1):
        lines.append("    d%d %s" % (i, ip))
    lines += ["}", "EventLogFile = /dev/null   # accepted and ignored"]
    path = tmp_path / "spread.conf"
    path.write_text("\n".join(lines) + "\n")
    return str(path), port


def port_open(ip, port):
    try:
        with socket.create_connection((ip, port), timeout=0.5):
            return True
    except OSError:
        return False


def start_ring_daemon(procs, conf, name, ip, port, extra=()):
    proc = procs.start("spread_mini.py", "daemon", "-c", conf, "--name", name, "--status-every", "0",
                       "--no-unix", *extra)

    def listening():
        assert proc.poll() is None, "daemon %s exited early:\n%s" % (name, procs.output(proc))
        return port_open(ip, port)

    wait_for(listening, 15)
    return proc


def start_ring(procs, tmp_path, n=3, extra=()):
    ips = ["127.0.0.%d" % (i + 1) for i in range(n)]
    conf, port = write_conf(tmp_path, ips)
    daemons = [start_ring_daemon(procs, conf, "d%d" % (i + 1), ip, port, extra)
               for i, ip in enumerate(ips)]
    wait_for(lambda: all("installed ring" in procs.output(p) and
                         all("d%d#" % (k + 1) in last_ring_line(procs.output(p)) for k in range(n))
                         for p in daemons), 20)
    return conf, port, ips, daemons


def last_ring_line(text):
    lines = [line for line in text.splitlines() if "installed ring" in line]
    return lines[-1] if lines else ""


def receive_until(mbox, predicate, timeout_s=20.0):
    """Messages received until predicate(msg) is true (that message included)."""
    got = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        msg = mbox.receive(timeout=max(0.05, deadline - time.monotonic()))
        if msg is None:
            continue
        got.append(msg)
        if predicate(msg):
            return got
    raise AssertionError("not received within %.0f s; got %d messages: %r" % (
        timeout_s, len(got), got[-5:]))


def members_are(names):
    def check(msg):
        return getattr(msg, "is_membership", False) and msg.is_regular and \
            sorted(msg.members) == sorted(names)
    return check


def data_of(messages):
    return [m.data for m in messages if not getattr(m, "is_membership", False)]


def connect(port, ip, user, membership=True):
    return sp.connect("%d@%s" % (port, ip), user, 0, membership)


def run_daemon_cli(*argv, timeout_s=30):
    """`python3 spread_mini.py daemon ARGV...` to its end: the command line's answer."""
    return subprocess.run([sys.executable, "spread_mini.py", "daemon", *argv], capture_output=True,
                          text=True, timeout=timeout_s, cwd=ROOT)
