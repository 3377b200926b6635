"""Can idle connections lock a daemon's client port? On loopback: one spread_mini daemon, N
connections that never finish the client handshake (most send nothing, some the first two bytes
of a connect message), then a real client connects, several times; the time each took.

Rows: the daemon's defaults (the limit per address closes the oldest unfinished handshake), and
a limit per address too high to matter (then the session limit makes the oldest unfinished
handshake give way). Every connection comes from 127.0.0.1, the real client's address too.

    python3 bench/idle_connections.py                     # 1000 idle connections, 5 clients
    python3 bench/idle_connections.py --idle 1000 --clients 5
    python3 bench/idle_connections.py --spread OTHER/spread_mini.py   # another version (its defaults)
"""
from __future__ import annotations

import argparse
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

import labnet  # noqa: E402
import spread_mini as sp  # noqa: E402

HALF_HANDSHAKE = b"\x04\x04"  # the first bytes of a connect message, and then nothing


def raise_fd_limit(needed: int) -> int:
    """The idle connections need a file descriptor each, here and in the daemon (which
    inherits the limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def start_daemon(spread: str, port: int, extra, log_path: str) -> subprocess.Popen:
    log = open(log_path, "w")
    proc = subprocess.Popen([sys.executable, spread, "daemon", "--port", str(port), "--name", "bench",
                             "--status-every", "0", "--no-unix", *extra],
                            stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    deadline = time.monotonic() + 20
    while not labnet.port_open("127.0.0.1", port):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise SystemExit("the daemon did not start; see %s" % log_path)
        time.sleep(0.05)
    return proc


def open_idle(port: int, count: int) -> list:
    socks = []
    for i in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        if i % 10 == 0:
            sock.sendall(HALF_HANDSHAKE)
        socks.append(sock)
    return socks


def time_client(port: int, name: str, limit_s: float = 30.0) -> str:
    """Seconds until a real client is connected, or what went wrong within limit_s."""
    start = time.monotonic()
    while True:
        try:
            mbox = sp.connect("%d@127.0.0.1" % port, name, 0, True)
        except sp.SpreadError as exc:
            if time.monotonic() - start > limit_s:
                return "refused for %.0f s (%s)" % (limit_s, type(exc).__name__)
            time.sleep(0.2)
            continue
        took = time.monotonic() - start
        mbox.disconnect()
        return "%.3f" % took


def run_case(spread: str, label: str, extra, idle: int, clients: int, tmpdir: str) -> None:
    port = labnet.free_port(["127.0.0.1"])
    proc = start_daemon(spread, port, extra, os.path.join(tmpdir, "%s.log" % label))
    socks = []
    try:
        socks = open_idle(port, idle)
        times = [time_client(port, "real%d" % i) for i in range(clients)]
        numbers = sorted(float(t) for t in times if t[0].isdigit())
        worst = "%.3f" % numbers[-1] if len(numbers) == len(times) else "failed"
        print("| %s | %d | %s | %s |" % (label, idle, " ".join(times), worst), flush=True)
    finally:
        for sock in socks:
            sock.close()
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Idle connections against a spread_mini daemon's client port.")
    parser.add_argument("--idle", type=int, default=1000, help="idle connections (default 1000)")
    parser.add_argument("--clients", type=int, default=5, help="real clients timed one after another (default 5)")
    parser.add_argument("--spread", default=os.path.join(ROOT, "spread_mini.py"),
                        help="the spread_mini.py to run (another version: only its defaults are tried)")
    args = parser.parse_args(argv)
    if args.idle < 1 or args.clients < 1:
        parser.error("--idle and --clients are at least 1")
    fds = raise_fd_limit(2 * args.idle + 256)
    if fds < args.idle + 64:
        raise SystemExit("only %d file descriptors allowed; ulimit -n is too low for %d connections" % (fds, args.idle))
    print(time.strftime("%Y-%m-%d %H:%M %Z"), "%d CPU cores, load %.1f" % (os.cpu_count() or 0, os.getloadavg()[0]))
    print("| settings | idle connections | seconds for each real client to connect | worst |")
    print("|---|---|---|---|", flush=True)
    cases = [("defaults", [])]
    if os.path.abspath(args.spread) == os.path.join(ROOT, "spread_mini.py"):
        cases.append(("--max-handshakes-per-address 100000", ["--max-handshakes-per-address", "100000"]))
    with tempfile.TemporaryDirectory() as tmpdir:
        for label, extra in cases:
            run_case(args.spread, label, extra, args.idle, args.clients, tmpdir)
    print("rerun: python3 bench/idle_connections.py --idle %d --clients %d%s" % (
        args.idle, args.clients, "" if len(cases) > 1 else " --spread " + args.spread))
    return 0


if __name__ == "__main__":
    sys.exit(main())
