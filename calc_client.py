#!/usr/bin/env python3
"""calc_client.py: ask the calculator cluster (calc_server.py) to evaluate expressions.

    python3 calc_client.py                    # a prompt: type 3+5-4/3*4 and Enter
    python3 calc_client.py -e "7/2"           # one expression
    printf '1+2\\n7/2\\n' | python3 calc_client.py --json     # one per line, from a pipe

The expression goes to the client group by multicast; the lowest fit server answers by
unicast. The client retries with the same request id every --timeout seconds until
--deadline, and shows each expression's answer once even when two servers answer it during a
failover. With --key (the servers' key file) it believes only answers tagged with that key and
shows the ones it refused. Exit status: 0 all results, 1 an error answer, 2 an expression
without an answer; with -e or from a pipe the client stops at the first expression left
without an answer (the cluster is down or out of reach: the rest would wait as long).

Module map: CalcClientCore (request ids, retries, which answers to believe) -> CalcClient (the
socket) -> format_reply / reply_json -> main.
"""
from __future__ import annotations

import argparse
import collections
import json
import random
import selectors
import sys
import time
from typing import Dict, List, NamedTuple, Optional, Tuple

import calc_server as wire
from calc_server import (Answer, Request, WireError, add_common_options, decode, encode_request,
                         multicast_sender)

# ============================================================================================
# Constants
# ============================================================================================

DEFAULT_TIMEOUT_S = 0.5        # retry after this long without an answer
DEFAULT_DEADLINE_S = 10.0      # give up on an expression after this long
MAX_ATTEMPTS = 255             # the attempt number is one byte on the wire
MAX_PENDING = 10000            # expressions in flight at once (the benchmark streams)
MAX_REMEMBERED_DONE = 20000    # finished request ids kept to recognise late duplicates
MAX_REFUSED_SHOWN = 10         # refused answers listed per expression (a flood is counted)
MAX_EXPR_SHOWN = 60            # characters of an expression echoed back in a line for people

EXIT_OK = 0
EXIT_ERROR_ANSWER = 1
EXIT_NO_ANSWER = 2


# ============================================================================================
# Wire format
# ============================================================================================
# The wire format is calc_server's (one definition for both sides): encode_request, decode.
# A request id is the client's random 32 bits followed by its 32-bit sequence number, so the
# answers meant for an earlier client on the same port are never taken for ours.

def make_rid(nonce: int, seq: int) -> int:
    return (nonce << 32) | (seq & 0xFFFFFFFF)


# ============================================================================================
# Protocol core
# ============================================================================================

class Refusal(NamedTuple):
    """An answer datagram the client did not believe, and why (shown with the reply)."""
    source: str                 # "address:port" it came from
    reason: str                 # as counted: bad-tag, no-tag, attempt-not-sent, ...
    server: Optional[int]       # what it claimed; None when unreadable
    text: Optional[str]


#: What each refusal reason means, for the client's output.
REFUSAL_WHY = {
    "bad-tag": "bad tag: another key, or forged",
    "no-tag": "no tag: the sender has no --key",
    "unexpected-tag": "tagged: the servers use --key, give it to this client too",
    "attempt-not-sent": "it answers an attempt this client never sent",
    "impossible-server": f"no server has that index (1..{wire.MAX_SERVERS_LIMIT})",
}


class Reply(NamedTuple):
    """The one answer shown for an expression (or the lack of one)."""
    expr: str
    rid: int
    ok: Optional[bool]          # None: no answer by the deadline
    text: str                   # result, error message, or why there is no answer
    server: Optional[int]       # the index that answered; None when local or no answer
    rtt_ms: Optional[float]     # from the send of the attempt answered to its answer
    attempts: int
    asked_at: float
    answered_at: float
    refused: Tuple[Refusal, ...] = ()     # answers for it that were not believed


class _Pending:
    """An expression sent and not answered yet."""

    def __init__(self, expr: str, rid: int, now: float, timeout_s: float, deadline_s: float):
        self.expr = expr
        self.rid = rid
        self.asked_at = now
        self.deadline_at = now + deadline_s
        self.sent_at: Dict[int, float] = {1: now}     # attempt -> when sent, for the RTT
        self.attempts = 1
        self.retry_at = now + timeout_s
        self.refused: List[Refusal] = []


class CalcClientCore:
    """Request ids, retries and duplicate suppression, sans I/O.

    ask() returns a datagram for the client group; datagram() returns the first answer for a
    request and counts any later one as a duplicate; tick() returns the retries due and the
    expressions whose deadline passed. An answer is believed only for a pending request and
    an attempt sent, from an index that exists, and with a key only with the right tag; a
    refused one is attached to the reply of the request it claims.
    """

    def __init__(self, cluster: str = wire.DEFAULT_CLUSTER, timeout_s: float = DEFAULT_TIMEOUT_S,
                 deadline_s: float = DEFAULT_DEADLINE_S, rng: Optional[random.Random] = None,
                 key: Optional[bytes] = None):
        self.cluster = cluster
        self.key = key
        self.timeout_s = timeout_s
        self.deadline_s = deadline_s
        self.nonce = (rng or random.Random()).getrandbits(32)
        self.seq = 0
        self.pending: Dict[int, _Pending] = {}
        self.done: "collections.OrderedDict[int, Optional[int]]" = collections.OrderedDict()
        self.duplicates = 0           # second answers for a request (dropped, never shown)
        self.duplicates_by_server = collections.Counter()
        self.dropped = collections.Counter()
        self.refused_elsewhere = collections.Counter()   # refusals claiming no pending request
        self.sent = 0

    def ask(self, expr: str, now: float) -> Tuple[int, Optional[bytes], Optional[Reply]]:
        """(request id, datagram to send, None) or (id, None, local error reply)."""
        self.seq += 1
        rid = make_rid(self.nonce, self.seq)
        if len(expr) > wire.MAX_EXPR_CHARS:      # too long to send: the server's own message
            ok, text = wire.calculate(expr)
            return rid, None, Reply(expr, rid, ok, text, None, None, 0, now, now)
        if len(self.pending) >= MAX_PENDING:
            raise RuntimeError(f"more than {MAX_PENDING} expressions in flight")
        self.pending[rid] = _Pending(expr, rid, now, self.timeout_s, self.deadline_s)
        self.sent += 1
        return rid, encode_request(self.cluster, Request(rid, 1, expr), self.key), None

    def datagram(self, data: bytes, src: Tuple[str, int], now: float) -> List[Reply]:
        try:
            msg = decode(data, self.cluster, self.key)
        except WireError as exc:
            self.dropped[exc.reason] += 1
            if isinstance(exc.claimed, Answer):
                self._refuse(exc.claimed, src, exc.reason)
            return []
        if not isinstance(msg, Answer):
            self.dropped["not-an-answer"] += 1
            return []
        pending = self.pending.get(msg.rid)
        if pending is not None and msg.attempt not in pending.sent_at:
            return self._refuse(msg, src, "attempt-not-sent")
        if pending is not None and not 1 <= msg.server <= wire.MAX_SERVERS_LIMIT:
            return self._refuse(msg, src, "impossible-server")
        self.pending.pop(msg.rid, None)
        if pending is None:
            if msg.rid in self.done:
                self.duplicates += 1
                self.duplicates_by_server[msg.server] += 1
            else:
                self.dropped["unknown-request"] += 1
            return []
        self._remember(msg.rid, msg.server)
        sent_at = pending.sent_at.get(msg.attempt)
        rtt_ms = None if sent_at is None else (now - sent_at) * 1000.0
        return [Reply(pending.expr, msg.rid, msg.ok, msg.text, msg.server, rtt_ms,
                      pending.attempts, pending.asked_at, now, tuple(pending.refused))]

    def _refuse(self, claimed: Answer, src: Tuple[str, int], reason: str) -> List[Reply]:
        pending = self.pending.get(claimed.rid)
        if pending is None:
            self.refused_elsewhere[reason] += 1
        elif len(pending.refused) < MAX_REFUSED_SHOWN:
            pending.refused.append(Refusal(f"{src[0]}:{src[1]}", reason, claimed.server,
                                           claimed.text))
        return []

    def tick(self, now: float) -> Tuple[List[bytes], List[Reply]]:
        """(retries to send now, replies for expressions that reached their deadline)."""
        resend, expired = [], []
        for rid, p in list(self.pending.items()):
            if now >= p.deadline_at:
                del self.pending[rid]
                self._remember(rid, None)
                expired.append(Reply(p.expr, rid, None, f"no answer within {self.deadline_s:g} s",
                                     None, None, p.attempts, p.asked_at, now, tuple(p.refused)))
            elif now >= p.retry_at and p.attempts < MAX_ATTEMPTS:
                p.attempts += 1
                p.sent_at[p.attempts] = now
                p.retry_at = now + self.timeout_s
                self.sent += 1
                resend.append(encode_request(self.cluster, Request(rid, p.attempts, p.expr),
                                             self.key))
        return resend, expired

    def next_deadline(self) -> Optional[float]:
        times = [min(p.retry_at, p.deadline_at) for p in self.pending.values()]
        return min(times) if times else None

    def _remember(self, rid: int, server: Optional[int]) -> None:
        self.done[rid] = server
        while len(self.done) > MAX_REMEMBERED_DONE:
            self.done.popitem(last=False)


# ============================================================================================
# I/O loop
# ============================================================================================

class CalcClient:
    """The client library: a CalcClientCore over a real socket.

    ask() for one expression at a time; send() and poll() to stream many (the benchmark).
    """

    def __init__(self, iface: str = wire.DEFAULT_IFACE, cluster: str = wire.DEFAULT_CLUSTER,
                 client_group: Tuple[str, int] = wire.parse_group(wire.DEFAULT_CLIENT_GROUP),
                 timeout_s: float = DEFAULT_TIMEOUT_S, deadline_s: float = DEFAULT_DEADLINE_S,
                 answer_port: int = 0, key: Optional[bytes] = None):
        self.core = CalcClientCore(cluster, timeout_s, deadline_s, key=key)
        self.group = client_group
        # One socket: it sends the requests, so its address is where the answers come back.
        self.sock = multicast_sender(iface, answer_port)
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.sock, selectors.EVENT_READ)

    def close(self) -> None:
        self.sel.close()
        self.sock.close()

    def __enter__(self) -> "CalcClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def send(self, expr: str) -> Tuple[int, Optional[Reply]]:
        rid, data, local = self.core.ask(expr, time.monotonic())
        if data is not None:
            self._sendto(data)
        return rid, local

    def poll(self, timeout_s: float) -> List[Reply]:
        """Wait up to timeout_s (less if a retry or deadline is due); return replies."""
        due = self.core.next_deadline()
        if due is not None:
            timeout_s = min(timeout_s, max(0.0, due - time.monotonic()))
        replies = []
        if self.sel.select(timeout_s):
            for data, src in wire.drain(self.sock):
                replies += self.core.datagram(data, src, time.monotonic())
        resend, expired = self.core.tick(time.monotonic())
        for data in resend:
            self._sendto(data)
        return replies + expired

    def ask(self, expr: str) -> Reply:
        rid, local = self.send(expr)
        if local is not None:
            return local
        while True:
            for reply in self.poll(1.0):
                if reply.rid == rid:
                    return reply

    def _sendto(self, data: bytes) -> None:
        try:
            self.sock.sendto(data, self.group)
        except OSError:
            pass      # e.g. no multicast route: the retry and the deadline report it


# ============================================================================================
# Terminal rendering
# ============================================================================================

def shown_expr(expr: str) -> str:
    """The expression as echoed in a line for people: a long one is cut, with its length."""
    if len(expr) <= MAX_EXPR_SHOWN:
        return expr
    return f"{expr[:MAX_EXPR_SHOWN - 20]}... ({len(expr)} characters)"


def _printable(text: str) -> str:
    """Text from the network, safe for a terminal: no escape sequences from a forger."""
    return text if text.isprintable() else repr(text)


def format_refusal(refusal: Refusal) -> str:
    claim = ("" if refusal.server is None else
             f" (claiming server {refusal.server}: {_printable(repr(refusal.text))})")
    return (f"  refused an answer from {refusal.source}{claim}: "
            f"{REFUSAL_WHY.get(refusal.reason, refusal.reason)}")


def format_reply(reply: Reply) -> str:
    """A line for a person: the result or error, who answered, how long it took; then a line
    per answer refused for it."""
    expr = shown_expr(reply.expr)
    if reply.ok is None:
        tries = f"{reply.attempts} attempt{'' if reply.attempts == 1 else 's'}"
        line = (f"{expr}: {reply.text} ({tries}): is a server running with the same "
                f"--cluster, --client-group, --key and a reachable --iface?")
    else:
        where = "checked here" if reply.server is None else f"server {reply.server}"
        if reply.rtt_ms is not None:
            where += f", {reply.rtt_ms:.1f} ms"
        if reply.attempts > 1:
            where += f", attempt {reply.attempts}"
        text = _printable(reply.text)
        line = (f"{expr} = {text}    [{where}]" if reply.ok else
                f"{expr}: error: {text}    [{where}]")
    return "\n".join([line] + [format_refusal(r) for r in reply.refused])


def reply_json(reply: Reply) -> str:
    """One JSON object per answer: expr, result or error, server, rtt_ms, attempts, and the
    answers refused for it (from, reason, and what they claimed: server, text)."""
    obj = {"expr": reply.expr}
    obj["result" if reply.ok else "error"] = reply.text
    obj.update(server=reply.server,
               rtt_ms=None if reply.rtt_ms is None else round(reply.rtt_ms, 3),
               attempts=reply.attempts,
               refused=[{"from": r.source, "reason": r.reason, "server": r.server,
                         "text": r.text} for r in reply.refused])
    return json.dumps(obj)


def exit_status(replies: List[Reply]) -> int:
    if any(r.ok is None for r in replies):
        return EXIT_NO_ANSWER
    if any(r.ok is False for r in replies):
        return EXIT_ERROR_ANSWER
    return EXIT_OK


# ============================================================================================
# Command line
# ============================================================================================

_seconds = wire.number_in(float, 0.01, 3600, "a number of seconds")
_port = wire.number_in(int, 0, 65535, "a port number")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Ask the calculator cluster to evaluate arithmetic expressions: numbers, "
                    "+ - * /, parentheses, unary minus; results as Python computes them.")
    parser.add_argument("-e", "--expr", action="append", metavar="EXPR",
                        help="evaluate EXPR and exit (may be given several times)")
    add_common_options(parser)
    parser.add_argument("--timeout", type=_seconds, default=DEFAULT_TIMEOUT_S, metavar="SECONDS",
                        help="retry after this long without an answer (default %(default)s)")
    parser.add_argument("--deadline", type=_seconds, default=DEFAULT_DEADLINE_S,
                        metavar="SECONDS", help="give up on an expression after this long "
                                                "(default %(default)s)")
    parser.add_argument("--answer-port", type=_port, default=0, metavar="PORT",
                        help="UDP port answers come back to (default: any free port; fix it "
                             "when a firewall must let the answers in)")
    parser.add_argument("--json", action="store_true",
                        help="one JSON object per answer, one per line")
    return parser


def expr_values_kept(argv: List[str]) -> List[str]:
    """argv with every `-e VALUE` written `--expr=VALUE`: argparse takes a value that starts
    with '-' (`-e -3*2`, `-e -(1+2)`) for an option of its own and refuses it."""
    out = []
    args = iter(argv)
    for arg in args:
        if arg == "--":
            out.append(arg)
            out.extend(args)
            break
        if arg in ("-e", "--expr"):
            value = next(args, None)
            out.append(arg if value is None else f"--expr={value}")
        else:
            out.append(arg)
    return out


def _expressions(args):
    """The expressions to ask: -e, else a prompt on a terminal, else one per line of stdin."""
    if args.expr:
        yield from args.expr
        return
    interactive = sys.stdin.isatty()
    try:      # a stray byte that is not UTF-8 becomes an error answer, not a traceback
        sys.stdin.reconfigure(errors="replace")
    except (AttributeError, ValueError):
        pass
    if interactive:
        print("Type an arithmetic expression (e.g. 3+5-4/3*4) and Enter; Ctrl-D to quit.")
    while True:
        try:
            line = input("expression> ") if interactive else sys.stdin.readline()
        except EOFError:
            return
        if not interactive and line == "":
            return
        line = line.strip()
        if interactive and line in ("quit", "exit"):
            return
        if line and not line.startswith("#"):
            yield line


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(expr_values_kept(sys.argv[1:] if argv is None else argv))
    key = wire.key_option(parser, args.key)
    replies = []
    interactive = not args.expr and sys.stdin.isatty()
    try:
        client = CalcClient(args.iface, args.cluster, args.client_group, args.timeout,
                            args.deadline, args.answer_port, key)
    except OSError as exc:
        print(f"calc_client: cannot use --iface {args.iface}"
              f"{' --answer-port %d' % args.answer_port if args.answer_port else ''}: {exc}",
              file=sys.stderr)
        return EXIT_NO_ANSWER
    try:
        with client:
            for expr in _expressions(args):
                reply = client.ask(expr)
                replies.append(reply)
                print(reply_json(reply) if args.json else format_reply(reply), flush=True)
                if reply.ok is None and not interactive:
                    print(f"calc_client: stopped at the first expression without an answer "
                          f"(exit status {EXIT_NO_ANSWER})", file=sys.stderr)
                    break
            _report_refused_elsewhere(client.core)
    except KeyboardInterrupt:
        print(file=sys.stderr)
    except BrokenPipeError:       # e.g. piped into `head`: the reader has seen enough
        sys.stderr.close()
    return exit_status(replies)


def _report_refused_elsewhere(core: CalcClientCore) -> None:
    """Refused answers that claimed no pending request (e.g. forged after the real one)."""
    if core.refused_elsewhere:
        counts = ", ".join(f"{REFUSAL_WHY.get(k, k)}: {v}"
                           for k, v in sorted(core.refused_elsewhere.items()))
        print(f"calc_client: also refused answers for no pending expression ({counts})",
              file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
