#!/usr/bin/env python3
"""spread_mini's ring against the real Spread 4.4, side by side in one run, with the same client.

Three daemons on a small lab LAN of network namespaces (labnet.LabNet: hosts 10.99.0.1-3 on one
bridge, Spread_Segment 239.255.77.1:4803, the same spread.conf for both kinds). A sender on d1
floods one group; a receiver on d2 and one on d3 count. The client is bench/spread_flooder.c,
compiled against the real libspread, for both daemons: spread_mini speaks the Spread 4 client
protocol, so the only thing that changes between two runs is the daemon.

Runs alternate real / spread_mini for --pairs pairs (the order flips every pair, so a machine
that gets busier does not favour one side). Each run starts fresh daemons (never both kinds at
once: an idle ring costs CPU too), sends an untimed warm-up batch that waits until the group
holds both receivers (so the ring holds all three daemons), then the timed batch. Per run:
msgs/s at the slower receiver (first to last message), msgs/s at the sender, and the daemons'
CPU (utime + stime from /proc, summed over the three) per message. At the end: the medians and
the median of the per-pair ratios spread_mini / real. The sender keeps at most 200 of its own
messages undelivered, so no session meets a daemon's per-session limit.

    sudo python3 bench/side_by_side.py                          # 3 pairs, 50,000 x 1000 B AGREED
    sudo python3 bench/side_by_side.py --service SAFE --pairs 5
    sudo python3 bench/side_by_side.py --count 20000 --size 100
    sudo python3 bench/side_by_side.py --packet-bytes 8900      # spread_mini's packets as on one machine
    sudo python3 bench/side_by_side.py --packet-bytes 8900 --mtu 9000    # ... on a LAN of jumbo frames
    git show main:spread_mini.py > /tmp/main_spread_mini.py    # and another version, in the same run:
    sudo python3 bench/side_by_side.py --against /tmp/main_spread_mini.py

Needs root (namespaces), iproute2, unshare and gcc; the real Spread build comes from
tests/real_spread.py (SPREAD_BIN, its cache folder, or ../shared/spread-real/build.sh: ~50 s
once). Every packet stays inside the namespaces made here, which go at the end, also on Ctrl-C.
The real daemon gets a private /tmp (for its /tmp/4803 socket and its RuntimeDir). Exit 0 with
the summary; 2 with one line saying why it could not measure.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]

import labnet  # noqa: E402
from real_spread import client_tools_reason, find_or_build  # noqa: E402

DAEMONS = 3
SEGMENT = "239.255.77.1:4803"  # only ever inside the namespaces' bridge
CLIENT_PORT = 4803
WINDOW = 200  # the sender's own messages in flight (as the stock spflooder)
WARMUP = 2000  # messages of the untimed batch that opens every run
RECEIVER_IDLE_S = 8  # a receiver gives up this long after its last message
FLOODER_SOURCE = os.path.join(HERE, "spread_flooder.c")
KINDS = ("real", "mini")


class CantMeasure(Exception):
    """Why there is no figure: the one line printed before exit 2."""


class Interrupted(BaseException):
    """SIGINT, SIGTERM or SIGHUP: clean up and exit 2."""


@dataclass
class Run:
    kind: str
    rate: int  #: msgs/s at the slower receiver
    sender_rate: int
    cpu_s: List[float]  #: each daemon's CPU seconds during the timed batch

    def cpu_us_per_message(self, count: int) -> float:
        return sum(self.cpu_s) / count * 1e6


# ---------------------------------------------------------------------------------------------
# Preparing: the real build, the client, the configuration
# ---------------------------------------------------------------------------------------------

def check_machine() -> None:
    if os.geteuid() != 0:
        raise CantMeasure("needs root, for the network namespaces")
    missing = [tool for tool in ("ip", "unshare", "gcc") if shutil.which(tool) is None]
    if missing:
        raise CantMeasure("not found: " + " ".join(missing))


def prepare(work: str) -> Tuple[str, str, str]:
    """(the real daemon's binary, the compiled flooder, spread.conf), all in the work folder:
    the real daemon's private /tmp hides everything under the real /tmp."""
    folder, why = find_or_build()
    if folder is None:
        raise CantMeasure(why)
    why = client_tools_reason(folder)
    if why:
        raise CantMeasure(why)
    daemon = os.path.join(work, "spread")
    shutil.copy(str(folder / "spread"), daemon)
    flooder = os.path.join(work, "spread_flooder")
    done = subprocess.run(["gcc", "-O2", "-I", str(folder / "include"), "-o", flooder, FLOODER_SOURCE,
                           str(folder / "libspread-core.a"), "-lm", "-ldl", "-lpthread"], capture_output=True, text=True)
    if done.returncode != 0:
        raise CantMeasure("compiling spread_flooder.c failed: " + (done.stderr.strip().splitlines() or ["?"])[-1])
    conf = os.path.join(work, "spread.conf")
    with open(conf, "w") as f:  # both kinds read the same file
        f.write("Spread_Segment %s {\n" % SEGMENT)
        for host in range(1, DAEMONS + 1):
            f.write("    d%d %s%d\n" % (host, labnet.SUBNET_PREFIX, host))
        f.write("}\nRuntimeDir = /tmp/rt\nDaemonUser = root\nDaemonGroup = root\n")
    return daemon, flooder, conf


# ---------------------------------------------------------------------------------------------
# Running: daemons, a batch, the CPU they spent
# ---------------------------------------------------------------------------------------------

#: with --against: the other spread_mini.py, run as a third kind ("base") in every pair
AGAINST: List[str] = []
#: with --packet-bytes: spread_mini's daemons get `--packet-bytes N` (ours, and the --against
#: version's if it has that option; the real daemon's never)
MINI_OPTIONS: List[str] = []
AGAINST_TAKES_OPTIONS = False  #: the --against version knows --packet-bytes


def daemon_argv(kind: str, host: int, real_daemon: str, conf: str) -> List[str]:
    if kind == "base":
        return [sys.executable, AGAINST[0], "daemon", "-c", conf, "--name", "d%d" % host,
                "--no-unix", "--status-every", "0"] + (MINI_OPTIONS if AGAINST_TAKES_OPTIONS else [])
    if kind == "real":
        # a private /tmp, made inside: the daemon's /tmp/4803 and RuntimeDir never meet another's
        inner = 'mount -t tmpfs none /tmp && mkdir /tmp/rt && exec "$0" -c "$1" -n "$2"'
        return ["unshare", "--mount", "--propagation", "private", "sh", "-c", inner, real_daemon, conf, "d%d" % host]
    return [sys.executable, os.path.join(ROOT, "spread_mini.py"), "daemon", "-c", conf, "--name", "d%d" % host,
            "--no-unix", "--status-every", "0"] + MINI_OPTIONS


def start_daemons(lab: labnet.LabNet, kind: str, real_daemon: str, conf: str, work: str) -> List[subprocess.Popen]:
    procs = []
    for host in range(1, DAEMONS + 1):
        log = open(os.path.join(work, "%s_d%d.log" % (kind, host)), "w")
        procs.append(lab.popen(host, daemon_argv(kind, host, real_daemon, conf), stdout=log,
                               stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL))
    return procs


def stop_daemons(procs: List[subprocess.Popen]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)


def cpu_seconds(procs: List[subprocess.Popen], kind: str, work: str) -> List[float]:
    """utime + stime of each daemon (the process `ip netns exec` became, after its execs)."""
    ticks = os.sysconf("SC_CLK_TCK")
    out = []
    for host, proc in enumerate(procs, 1):
        if proc.poll() is not None:
            with open(os.path.join(work, "%s_d%d.log" % (kind, host))) as f:
                last = (f.read().strip().splitlines() or ["no output"])[-1][-150:]
            raise CantMeasure("%s daemon d%d exited (%s): %s" % (kind, host, proc.returncode, last))
        with open("/proc/%d/stat" % proc.pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        out.append((int(fields[11]) + int(fields[12])) / ticks)
    return out


def spread_name(host: int) -> str:
    return "%d@%s%d" % (CLIENT_PORT, labnet.SUBNET_PREFIX, host)


def batch(lab, flooder: str, daemons, kind: str, work: str, count: int, size: int, service: str,
          tag: str) -> Run:
    """Receivers on d2 and d3, then the sender on d1, which starts when told."""
    group, receivers = "g" + tag, []
    for host in (2, 3):
        proc = lab.popen(host, [flooder, "recv", spread_name(host), "r%s%d" % (tag, host), group, str(count),
                                str(RECEIVER_IDLE_S)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         stdin=subprocess.DEVNULL, text=True)
        line = proc.stdout.readline()
        if not line.startswith("joined"):
            cpu_seconds(daemons, kind, work)  # a daemon that died says why
            raise CantMeasure("%s: the receiver on d%d: %s" % (kind, host, line.strip() or "no answer"))
        receivers.append(proc)
    sender = lab.popen(1, [flooder, "send", spread_name(1), "s" + tag, group, str(count), str(size), service,
                           str(DAEMONS), str(WINDOW)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True)
    line = sender.stdout.readline()
    if not line.startswith("ready"):
        raise CantMeasure("%s: the sender on d1: %s" % (kind, line.strip() or "no answer"))
    before = cpu_seconds(daemons, kind, work)
    said = sender.communicate("go\n")[0]
    sent = re.search(r"rate=(\d+)", said)
    if sender.returncode != 0 or not sent:
        raise CantMeasure("%s: the sender: %s" % (kind, said.strip()[-150:] or "exit %d" % sender.returncode))
    rates = []
    for proc in receivers:
        got = re.search(r"received=(\d+) rate=(\d+)", proc.communicate()[0])
        if not got or int(got.group(1)) != count:
            raise CantMeasure("%s: a receiver got %s of %d messages" % (kind, got.group(1) if got else "?", count))
        rates.append(int(got.group(2)))
    after = cpu_seconds(daemons, kind, work)
    return Run(kind, min(rates), int(sent.group(1)), [b - a for a, b in zip(before, after)])


def one_run(lab, kind: str, tools, work: str, args, pair: int) -> Tuple[Run, float]:
    """Fresh daemons of one kind, the warm-up, the timed batch. Returns the run and its seconds."""
    real_daemon, flooder, conf = tools
    daemons = start_daemons(lab, kind, real_daemon, conf, work)
    try:
        signal.alarm(60 + args.count // 500)  # a ring that stops delivering ends the run
        batch(lab, flooder, daemons, kind, work, WARMUP, args.size, args.service, "w%d%s" % (pair, kind[0]))
        started = time.monotonic()
        run = batch(lab, flooder, daemons, kind, work, args.count, args.size, args.service, "t%d%s" % (pair, kind[0]))
        return run, time.monotonic() - started
    except TimeoutError:
        raise CantMeasure("%s: pair %d not done in time (logs in %s)" % (kind, pair, work)) from None
    finally:
        signal.alarm(0)
        stop_daemons(daemons)


# ---------------------------------------------------------------------------------------------
# Reporting
# ---------------------------------------------------------------------------------------------

def summary(runs: Dict[str, List[Run]], count: int, what: str) -> str:
    def median(kind, key):
        return statistics.median(key(r) for r in runs[kind])

    def ratios(kind, other):
        """Medians of the per-pair ratios; CPU time comes in clock ticks (10 ms): a short run
        of the C daemon can read as 0, and such a pair has no CPU ratio (None if none has)."""
        pairs = list(zip(runs[kind], runs[other]))
        rate = statistics.median(m.rate / r.rate for m, r in pairs)
        cpu = [m.cpu_us_per_message(count) / r.cpu_us_per_message(count) for m, r in pairs
               if r.cpu_us_per_message(count) > 0]
        return rate, (statistics.median(cpu) if cpu else None)

    def cpu_text(value):
        return ("ratio %.2f" % value if value is not None
                else "ratio n/a (the real daemons' CPU time was below the 10 ms the kernel counts: raise --count)")
    kinds = [k for k in runs if runs[k]]
    rate = {k: median(k, lambda r: r.rate) for k in kinds}
    cpu = {k: median(k, lambda r: r.cpu_us_per_message(count)) for k in kinds}
    ratio, cpu_ratio = ratios("mini", "real")
    line = ("%s: spread_mini %d msgs/s, real Spread %d msgs/s, ratio %.2f (median of %d pairs); "
            "daemon CPU per message (3 daemons summed) spread_mini %.0f us, real %.0f us, %s"
            % (what, rate["mini"], rate["real"], ratio, len(runs["mini"]), cpu["mini"], cpu["real"],
               cpu_text(cpu_ratio)))
    if "base" in kinds:
        base_ratio, base_cpu_ratio = ratios("mini", "base")
        line += ("\nagainst %s: %d msgs/s, %.0f us CPU per message; spread_mini / it: rate %.2f, CPU %s"
                 " (medians of the per-pair ratios)" % (AGAINST[0], rate["base"], cpu["base"], base_ratio,
                                                         cpu_text(base_cpu_ratio)))
    return line


def set_mtu(lab: labnet.LabNet, mtu: int) -> None:
    """Frames of up to `mtu` bytes on the whole lab LAN (the bridge, its ports, the hosts'
    interfaces), as on a LAN with jumbo frames: for both kinds of daemon alike."""
    links = [(lab.switch, "br0")] + [(lab.switch, lab._port(h)) for h in range(1, DAEMONS + 1)] \
        + [(lab.ns(h), "eth0") for h in range(1, DAEMONS + 1)]
    for ns, dev in links:
        subprocess.run(["ip", "-n", ns, "link", "set", "dev", dev, "mtu", str(mtu)], check=True,
                       capture_output=True)


def measure(args, work: str) -> str:
    check_machine()
    tools = prepare(work)
    what = "%d daemons, %d B %s" % (DAEMONS, args.size, args.service)
    print("%s, %d messages a run, %d pairs; spread_mini %s (Python %s%s) vs real Spread 4.4; "
          "LAN frames up to %d bytes; load average %.2f"
          % (what, args.count, args.pairs, os.path.join(ROOT, "spread_mini.py"), sys.version.split()[0],
             ", " + " ".join(MINI_OPTIONS) if MINI_OPTIONS else "", args.mtu or 1500, os.getloadavg()[0]),
          flush=True)
    kinds = KINDS + (("base",) if AGAINST else ())
    runs: Dict[str, List[Run]] = {k: [] for k in kinds}
    with labnet.LabNet(DAEMONS, tag="sbs%d" % (os.getpid() % 10000)) as lab:
        # The bridge floods multicast to every port, as a plain lab switch does: with IGMP
        # snooping and no querier on the bridge, the real daemons' ring does not form reliably.
        subprocess.run(["ip", "-n", lab.switch, "link", "set", "br0", "type", "bridge", "mcast_snooping", "0"],
                       check=True, capture_output=True)
        if args.mtu is not None:
            set_mtu(lab, args.mtu)
        for pair in range(1, args.pairs + 1):
            for kind in (kinds if pair % 2 else kinds[::-1]):
                run, seconds = one_run(lab, kind, tools, work, args, pair)
                runs[kind].append(run)
                print("pair %d %-4s: %6d msgs/s at the slower receiver (sender %d), daemon CPU %s s = %.0f us/msg, "
                      "%.1f s" % (pair, kind, run.rate, run.sender_rate, " + ".join("%.2f" % c for c in run.cpu_s),
                                  run.cpu_us_per_message(args.count), seconds), flush=True)
    print("load average at the end %.2f" % os.getloadavg()[0])
    return summary(runs, args.count, what)


def parse_args(argv: Optional[List[str]] = None):
    global AGAINST_TAKES_OPTIONS
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=50000, help="messages in each timed batch (default 50000)")
    parser.add_argument("--pairs", type=int, default=3, help="real / spread_mini pairs (default 3)")
    parser.add_argument("--size", type=int, default=1000, help="bytes per message (default 1000)")
    parser.add_argument("--service", type=str.upper, choices=["AGREED", "SAFE"], default="AGREED")
    parser.add_argument("--against", metavar="SPREAD_MINI_PY",
                        help="also run the daemons of this spread_mini.py in every pair (a third kind, "
                             "'base'), and print spread_mini / it")
    parser.add_argument("--packet-bytes", type=int, metavar="N",
                        help="spread_mini's ring packets of up to N bytes (its --packet-bytes; default "
                             "its own for a LAN, 1400). The lab LAN here has 1500-byte frames: a "
                             "bigger packet goes as IP fragments")
    parser.add_argument("--mtu", type=int, metavar="BYTES",
                        help="frames of up to BYTES on the lab LAN, 1280..9000 (default 1500; 9000: jumbo "
                             "frames, where an 8900-byte packet goes whole)")
    args = parser.parse_args(argv)
    if args.mtu is not None and not 1280 <= args.mtu <= 9000:
        parser.error("--mtu must be 1280..9000")
    if args.packet_bytes is not None:
        MINI_OPTIONS[:] = ["--packet-bytes", str(args.packet_bytes)]
    if args.against:
        if not os.path.isfile(args.against):
            parser.error("--against %s: no such file" % args.against)
        AGAINST[:] = [os.path.abspath(args.against)]
        with open(args.against, encoding="utf-8", errors="replace") as f:
            AGAINST_TAKES_OPTIONS = '"--packet-bytes"' in f.read()
    if args.count < 2 or args.pairs < 1 or not 1 <= args.size <= 100000:
        parser.error("needs --count >= 2, --pairs >= 1 and 1 <= --size <= 100000")
    return args


def on_signal(signum, _frame):
    raise TimeoutError() if signum == signal.SIGALRM else Interrupted()


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT, signal.SIGALRM):
        signal.signal(signum, on_signal)
    work = tempfile.mkdtemp(prefix="side_by_side_", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    code, line = 2, "could not measure: interrupted"
    try:
        line, code = measure(args, work), 0
    except Interrupted:
        pass
    except CantMeasure as exc:
        line = "could not measure: %s" % exc
    finally:
        for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
            signal.signal(signum, signal.SIG_IGN)  # let LabNet's clean-up finish
        signal.alarm(0)
        if code == 0:
            shutil.rmtree(work, ignore_errors=True)
    print(line)
    print("rerun: sudo python3 bench/side_by_side.py --count %d --pairs %d --size %d --service %s%s%s"
          % (args.count, args.pairs, args.size, args.service, " --against %s" % args.against if args.against else "",
             (" --packet-bytes %d" % args.packet_bytes if args.packet_bytes is not None else "")
             + (" --mtu %d" % args.mtu if args.mtu is not None else "")))
    return code


if __name__ == "__main__":
    sys.exit(main())
