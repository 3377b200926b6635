"""Real spread_mini daemons and clients in labnet's namespaces, for the tier-3 tests
(test_sites_split_real, test_sites_heal_real, test_sites_route_real) and the bench that runs
one of them (bench/sites_prune_heal.py): each starts its processes with a log, waits on what
the logs say (failing with their tails), and stops them gently. No pytest here: the bench
imports it too.

A client script (a string the caller writes to a file) is run as
`python3 client.py ROOT server name ...`; it may import this module to print what it gets:
    sys.path[:0] = [sys.argv[1], os.path.join(sys.argv[1], "tests")]
    from netns_daemons import serve_client
"""
from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import floodtools as ft  # noqa: E402
import labnet  # noqa: E402


class WaitedTooLong(AssertionError):
    """What a test or bench waited for did not come (the message has the logs' tails)."""


# ---- in a client process ------------------------------------------------------------------

def print_event(msg) -> None:
    """One message as a JSON line: ["TRANS" | "REG", members, vs_sets, caused_by] for a
    membership, ["DATA", text] for a message (flushed: the test reads the file as it grows)."""
    if msg.is_membership:
        kind = "TRANS" if msg.is_transitional else "REG"
        print(json.dumps([kind, sorted(msg.members), sorted(sorted(v) for v in msg.vs_sets or []),
                          str(msg.caused_by)]), flush=True)
    else:
        print(json.dumps(["DATA", msg.data.decode()]), flush=True)


def serve_client(mbox, life_s: float, tick, receive_timeout_s: float) -> None:
    """A test client's loop for life_s: tick() (it sends what the test asked for by now), then
    print_event of the next message, if one comes within receive_timeout_s."""
    end = time.time() + life_s
    while time.time() < end:
        tick()
        msg = mbox.receive(timeout=receive_timeout_s)
        if msg is not None:
            print_event(msg)


# ---- starting and stopping -----------------------------------------------------------------

def daemon_argv(conf, name: str, status_every_s: int = 0, extra=()) -> list:
    """spread_mini's daemon `name` of spread.conf `conf`, TCP clients only (no Unix socket)."""
    return [sys.executable, os.path.join(ROOT, "spread_mini.py"), "daemon", "-c", str(conf), "--name", name,
            "--no-unix", "--status-every", str(status_every_s), *extra]


def start_logged(lab, where, argv, log_path, **popen_kwargs) -> subprocess.Popen:
    """argv in the lab host `where` (LabNet: (host,); WanLab: (site, host)), stdout and stderr
    into log_path. The lab kills it on close if nobody stopped it before."""
    with open(log_path, "w") as log:  # (the child has its own copy of the descriptor)
        return lab.popen(*where, argv, stdout=log, stderr=subprocess.STDOUT, **popen_kwargs)


def start_client(lab, where, script, server: str, name: str, args, log_path) -> subprocess.Popen:
    """A client script (see the module's doc) run as `script ROOT server name *args`."""
    return start_logged(lab, where, [sys.executable, str(script), ROOT, server, name, *map(str, args)], log_path)


def stop_gently(procs, timeout_s: float = 10) -> None:
    """SIGTERM to every process, then SIGKILL to those still there after timeout_s (a daemon
    ends its links and a client its session on SIGTERM; the lab's close only kills)."""
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            p.kill()


def wan_lab_missing():
    """Why a WanLab cannot be made here (None if it can): namespaces, and the relay's TUN."""
    reason = labnet.available()
    if reason:
        return "network namespaces: " + reason
    if not os.path.exists("/dev/net/tun"):
        return "the WAN relay needs a TUN device (/dev/net/tun)"
    return None


@contextlib.contextmanager
def one_daemon_sites(folder, sites: int, client_script: str, client_args, settings, port: int = 4803):
    """A WanLab of `sites` one-daemon sites (dS at site S, LinkProtocol Hop) and at each a
    client cS of client_script (run with *client_args after its name), all in group g once this
    yields (wan, client logs); everything stopped gently on the way out."""
    folder = Path(folder)
    (folder / "client.py").write_text(client_script)
    logs = [folder / ("c%d.log" % s) for s in range(1, sites + 1)]
    with labnet.WanLab([1] * sites, settings) as wan:
        ips = [wan.ip(s, 1) for s in range(1, sites + 1)]
        conf = folder / "sites.conf"
        conf.write_text(ft.render_spread_conf(ips, port, True))
        daemons, clients = [], []
        try:
            for s in range(1, sites + 1):
                daemons.append(start_logged(wan, (s, 1), daemon_argv(conf, "d%d" % s), folder / ("d%d.log" % s)))
            time.sleep(3)  # (the sites find each other; a client connects to a daemon in its view)
            for s in range(1, sites + 1):
                clients.append(start_client(wan, (s, 1), folder / "client.py", "%d@%s" % (port, ips[s - 1]),
                                            "c%d" % s, client_args, logs[s - 1]))
            wait_until(lambda: all(any(x[0] == "REG" and len(x[1]) == sites for x in json_lines(p)) for p in logs),
                       20, "every client in a group of %d" % sites, folder)
            yield wan, logs
        finally:
            stop_gently(clients + daemons)


# ---- reading the logs ----------------------------------------------------------------------

def json_lines(path) -> list:
    """The whole JSON lines a client printed so far (none if it has not started)."""
    try:
        with open(path) as f:
            return [json.loads(line) for line in f if line.startswith("[") and line.endswith("]\n")]
    except FileNotFoundError:
        return []


def network_views(path) -> list:
    """(members, vs_sets) of each REG_MEMB caused by the network, in order."""
    return [x[1:3] for x in json_lines(path) if x[0] == "REG" and x[3] == "NETWORK"]


def log_tails(folder, pattern: str = "*.log", chars: int = 3000) -> str:
    return "".join("\n== %s\n%s" % (p.name, p.read_text(errors="replace")[-chars:])
                   for p in sorted(Path(folder).glob(pattern)))


def wait_until(check, timeout_s: float, what: str, folder, pattern: str = "*.log") -> None:
    """Poll check() every 0.2 s; WaitedTooLong with the tails of the logs if it never holds."""
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if check():
            return
        time.sleep(0.2)
    raise WaitedTooLong("waited %.0f s for %s%s" % (timeout_s, what, log_tails(folder, pattern)))
