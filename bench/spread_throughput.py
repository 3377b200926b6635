"""Throughput of one spread_mini daemon: one sender, N receivers, each service type, 100 B and
1000 B messages; and, in the same run, a raw Python TCP relay with the same framing and no
groups (the ceiling of this design), with the ratio.

    python3 bench/spread_throughput.py [--receivers 1] [--count 50000] [--sizes 100,1000] [--repeat 3]

Every process is on loopback. Each spread_mini run is paired with a relay run just before it
and "vs relay" is the ratio within the pair (median over --repeat pairs): the machine is shared.
Flow control is the application's, as in a real Spread program: each receiver multicasts a
small acknowledgement to the sender's private group every ACK_EVERY messages and the sender
keeps at most WINDOW messages unacknowledged, below the daemon's per-session queue limit (so no
receiver is disconnected for being slow). Rows in the style of corosync's cpgbench: one per case.
"""
from __future__ import annotations

import argparse
import json
import os
import selectors
import socket
import struct
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

import labnet  # noqa: E402
import spread_mini as sp  # noqa: E402

ACK_EVERY = 100
WINDOW = 600  # below the daemon's default --max-session-messages 1000
GROUP = "bench"
CASES = [0]  # a case number, so names are never reused while the daemon forgets the last case
ACK_TYPE = 1
DATA_TYPE = 2


# ---- roles (run as child processes) ------------------------------------------------------------

def open_mailbox(mode: str, target: str, name: str, role: str):
    if mode == "spread":
        return sp.connect(target, name, group_membership=False)
    host, port = target.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.sendall(b"S" if role == "sender" else b"R")
    return sp.Mailbox(sock, "#%s#relay" % name, (4, 4, 0), False)


def run_receiver(args) -> None:
    mbox = open_mailbox(args.mode, args.target, args.name, "receiver")
    if args.mode == "spread":
        mbox.join(GROUP)
    sender_pg = "#%s#%s" % (args.sender_name, args.daemon_name)
    print("ready", flush=True)
    count = 0
    first = last = 0.0
    nbytes = 0
    while count < args.count:
        msg = mbox.receive()
        if msg.is_membership or msg.mess_type != DATA_TYPE:
            continue
        count += 1
        nbytes += len(msg.data)
        if count == 1:
            first = time.time()
        if count % ACK_EVERY == 0:
            mbox.multicast(sp.FIFO_MESS, sender_pg, struct.pack("!I", count), mess_type=ACK_TYPE)
    last = time.time()
    print(json.dumps({"count": count, "bytes": nbytes, "first": first, "last": last}), flush=True)
    mbox.disconnect()


def run_sender(args) -> None:
    mbox = open_mailbox(args.mode, args.target, args.name, "sender")
    receivers = args.receivers
    acked = {}
    payload = b"x" * args.size
    service = sp.SERVICE_BY_NAME[args.service]
    start = time.time()
    sent = 0
    while sent < args.count:
        low = min(acked.values()) if len(acked) == receivers else 0
        if sent - low >= WINDOW:
            msg = mbox.receive()
            if not msg.is_membership and msg.mess_type == ACK_TYPE:
                acked[msg.sender] = struct.unpack("!I", msg.data)[0]
            continue
        mbox.multicast(service, GROUP, payload, mess_type=DATA_TYPE)
        sent += 1
    print(json.dumps({"start": start, "sent": sent}), flush=True)
    mbox.disconnect()


def run_relay(args) -> None:
    """The ceiling: a raw TCP relay with the same framing: sender's messages to every receiver,
    receivers' messages to the sender; big reads, message boundaries parsed, coalesced writes."""
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", args.port))
    listener.listen(64)
    print("ready", flush=True)
    sel = selectors.DefaultSelector()
    sel.register(listener, selectors.EVENT_READ, None)
    conns = {}  # sock -> [role, inbuf, outlist]
    sender = None
    unpack = sp.HEADER.unpack_from
    while True:
        for key, mask in sel.select(1.0):
            if key.data is None:
                sock, _ = listener.accept()
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                conns[sock] = [None, b"", []]
                sel.register(sock, selectors.EVENT_READ, sock)
                continue
            sock = key.data
            state = conns.get(sock)
            if state is None:
                continue
            if mask & selectors.EVENT_WRITE and not flush(sel, sock, state):
                data = b""
            elif not mask & selectors.EVENT_READ:
                continue
            else:
                try:
                    data = sock.recv(sp.RECV_CHUNK)
                except OSError:
                    data = b""
            if not data:
                drop(sel, conns, sock)
                if sock is sender:
                    sender = None
                continue
            if state[0] is None:
                state[0], data = data[:1], data[1:]
                if state[0] == b"S":
                    sender = sock
            buf = state[1] + data if state[1] else data
            off = 0
            while len(buf) - off >= sp.HEADER_LEN:
                _t, _s, ng, _h, dl = unpack(buf, off)
                end = off + sp.HEADER_LEN + 32 * ng + dl
                if end > len(buf):
                    break
                raw = buf[off:end]
                targets = [s for s, st in conns.items() if st[0] == b"R"] if sock is sender else [sender]
                for target in targets:
                    if target is not None:
                        conns[target][2].append(raw)
                off = end
            state[1] = buf[off:]
        for sock, state in list(conns.items()):
            if state[2] and not flush(sel, sock, state):
                drop(sel, conns, sock)
                if sock is sender:
                    sender = None


def drop(sel, conns, sock) -> None:
    if conns.pop(sock, None) is not None:
        sel.unregister(sock)
        sock.close()


def flush(sel, sock, state) -> bool:
    data = b"".join(state[2])
    state[2] = []
    try:
        sent = sock.send(data)
    except BlockingIOError:
        sent = 0
    except OSError:
        return False
    if sent < len(data):
        state[2] = [data[sent:]]
        sel.modify(sock, selectors.EVENT_READ | selectors.EVENT_WRITE, sock)
    else:
        sel.modify(sock, selectors.EVENT_READ, sock)
    return True


# ---- the daemon core alone ---------------------------------------------------------------------

def core_only(size: int, seconds: float = 2.0) -> float:
    """Messages per second through the sans-I/O daemon core (no sockets): a sender's 256 KiB reads
    parsed, ordered, delivered to one receiver whose queue is drained as a socket would."""
    daemon = sp.build_daemon("bench", limits=sp.ClientLimits(max_session_messages=10 ** 9))

    def perform(actions):  # as the I/O loop would, with sockets that take everything
        for action in actions:
            if action.__class__ is sp.Write:
                perform(daemon.written(action.conn_id, len(action.data)))

    for conn_id, name in ((1, "rx"), (2, "tx")):
        perform(daemon.connection_opened(conn_id))
        perform(daemon.connection_data(conn_id, sp.encode_connect(name, False)))
        perform(daemon.connection_data(conn_id, sp.encode_auth_choice()))
    perform(daemon.connection_data(1, sp.encode_message(sp.JOIN_MESS, "#rx#bench", [GROUP], sp.make_hint(0), b"")))
    one = sp.encode_message(sp.RELIABLE_MESS, "#tx#bench", [GROUP], sp.make_hint(DATA_TYPE), b"x" * size)
    per_read = sp.RECV_CHUNK // len(one)
    chunk = one * per_read
    count = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        perform(daemon.connection_data(2, chunk))
        count += per_read
    return count / (time.perf_counter() - start)


# ---- the coordinator ------------------------------------------------------------------------------

def free_port() -> int:
    return labnet.free_port(["127.0.0.1"])


def child(*argv: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, os.path.abspath(__file__), *argv], stdout=subprocess.PIPE,
                            text=True, cwd=ROOT)


def wait_line(proc: subprocess.Popen, what: str, timeout_s: float = 30.0) -> str:
    line = proc.stdout.readline()
    if not line:
        raise SystemExit("a %s process ended early (exit %s)" % (what, proc.wait(timeout_s)))
    return line.strip()


def run_case(mode: str, target: str, daemon_name: str, service: str, size: int, args) -> dict:
    CASES[0] += 1
    sender_name = "s%d" % CASES[0]
    common = ["--mode", mode, "--target", target, "--daemon-name", daemon_name, "--count", str(args.count),
              "--sender-name", sender_name]
    receivers = [child("--role", "receiver", "--name", "r%d-%d" % (CASES[0], i), *common) for i in range(args.receivers)]
    for r in receivers:
        wait_line(r, "receiver")
    if mode == "spread":
        time.sleep(0.2)  # the joins are through the daemon already; let them settle
    sender = child("--role", "sender", "--name", sender_name, "--service", service, "--size", str(size),
                   "--receivers", str(args.receivers), *common)
    results = [json.loads(wait_line(r, "receiver")) for r in receivers]
    sent = json.loads(wait_line(sender, "sender"))
    for proc in receivers + [sender]:
        proc.wait(30)
    end = max(r["last"] for r in results)
    seconds = end - sent["start"]
    total = sum(r["count"] for r in results)
    return {"seconds": seconds, "msgs_per_s": args.count / seconds, "delivered": total,
            "mbit_per_s": args.count * size * 8 / seconds / 1e6}


def median(values):
    values = sorted(values)
    return values[len(values) // 2]


def paired(relay_target, spread_target, service, size, args):
    """--repeat pairs of runs, relay then spread_mini, back to back: the machine is shared, so
    the ratio of two neighbouring runs is steadier than either figure. Returns the median spread
    run, the median relay run and the median of the pair ratios."""
    spread_runs, relay_runs, ratios = [], [], []
    for _ in range(args.repeat):
        relay = run_case("relay", relay_target, "relay", "reliable", size, args)
        row = run_case("spread", spread_target, "bench", service, size, args)
        relay_runs.append(relay)
        spread_runs.append(row)
        ratios.append(row["msgs_per_s"] / relay["msgs_per_s"])
    pick = lambda runs: sorted(runs, key=lambda r: r["msgs_per_s"])[len(runs) // 2]
    return pick(spread_runs), pick(relay_runs), median(ratios)


def coordinator(args) -> int:
    sizes = [int(s) for s in args.sizes.split(",")]
    services = [s.strip().lower() for s in args.services.split(",")]
    port = free_port()
    daemon = subprocess.Popen([sys.executable, os.path.join(ROOT, "spread_mini.py"), "daemon", "--port", str(port),
                               "--name", "bench", "--status-every", "0", "--no-unix"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    relay_port = free_port()
    relay_proc = child("--role", "relay", "--port", str(relay_port))
    wait_line(relay_proc, "relay")
    deadline = time.time() + 15
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), 1).close()
            break
        except OSError:
            if time.time() > deadline:
                raise SystemExit("the daemon did not start")
            time.sleep(0.1)
    print("spread_mini throughput: 1 daemon, 1 sender, %d receiver(s), %d messages per case, window %d, "
          "median of %d pair(s) of runs" % (args.receivers, args.count, WINDOW, args.repeat))
    print("%-26s %8s %6s %8s %10s %9s %9s" % ("case", "msgs", "bytes", "seconds", "msgs/s", "Mbit/s", "vs relay"))
    fmt = "%-26s %8d %6d %8.2f %10.0f %9.1f %9s"
    try:
        for size in sizes:
            relays = []
            for service in services:
                row, relay, ratio = paired("127.0.0.1:%d" % relay_port, "%d@127.0.0.1" % port, service, size, args)
                relays.append(relay)
                print(fmt % ("spread_mini " + service.upper(), args.count, size, row["seconds"], row["msgs_per_s"],
                             row["mbit_per_s"], "%.2f" % ratio), flush=True)
            relay = sorted(relays, key=lambda r: r["msgs_per_s"])[len(relays) // 2]
            print(fmt % ("raw TCP relay (ceiling)", args.count, size, relay["seconds"], relay["msgs_per_s"],
                         relay["mbit_per_s"], "1.00"), flush=True)
    finally:
        daemon.terminate()
        relay_proc.terminate()
        daemon.wait(10)
        relay_proc.wait(10)
    print("command: python3 bench/spread_throughput.py --receivers %d --count %d --sizes %s --services %s --repeat %d"
          % (args.receivers, args.count, args.sizes, args.services, args.repeat))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--receivers", type=int, default=1)
    parser.add_argument("--count", type=int, default=50000, help="messages per case")
    parser.add_argument("--sizes", default="100,1000")
    parser.add_argument("--repeat", type=int, default=1,
                        help="pairs of runs (relay, spread_mini) per case; medians are shown")
    parser.add_argument("--services", default="unreliable,reliable,fifo,causal,agreed,safe")
    parser.add_argument("--core-only", action="store_true", help="measure the daemon core in-process instead")
    parser.add_argument("--role", choices=("receiver", "sender", "relay"), help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="spread", help=argparse.SUPPRESS)
    parser.add_argument("--target", help=argparse.SUPPRESS)
    parser.add_argument("--name", help=argparse.SUPPRESS)
    parser.add_argument("--sender-name", default="s0", help=argparse.SUPPRESS)
    parser.add_argument("--daemon-name", default="bench", help=argparse.SUPPRESS)
    parser.add_argument("--service", default="reliable", help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, default=1000, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.receivers < 1 or args.count < ACK_EVERY or args.repeat < 1:
        parser.error("need at least 1 receiver, %d messages and 1 repeat" % ACK_EVERY)
    if args.core_only:
        for size in (int(x) for x in args.sizes.split(",")):
            print("daemon core alone (in-process, no sockets), %5d B: %8.0f msgs/s" % (size, core_only(size)))
        print("command: python3 bench/spread_throughput.py --core-only --sizes %s" % args.sizes)
        return 0
    if args.role == "receiver":
        run_receiver(args)
    elif args.role == "sender":
        run_sender(args)
    elif args.role == "relay":
        run_relay(args)
    else:
        return coordinator(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
