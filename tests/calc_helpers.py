"""Helpers for the calculator tests: a seeded in-memory network, and real-process clusters."""
from __future__ import annotations

import heapq
import random
import subprocess
import sys
from typing import Dict, List, Optional, Tuple

import calc_client
import calc_server
from calc_server import TO_SERVER_GROUP, CalcServer, Settings
from conftest import ROOT, unique_group, unique_name

CLIENT_ADDR = ("10.0.0.100", 5000)
CLIENT_GROUP = "client-group"


def own_tick(server: CalcServer, now: float):
    """Tick a server core and let it hear its own heartbeat, as the real loop does over
    multicast loopback (IP_MULTICAST_LOOP)."""
    out = server.tick(now)
    for send in out.sends:
        if send.to == TO_SERVER_GROUP:
            out.extend(server.datagram(send.data, ("127.0.0.1", 40000 + server.index), now))
    return out


class SimNet:
    """Servers and one client wired through a network that drops and delays under a seed.

    Everything is decided by `seed`: a failing run replays exactly. Time is virtual.
    """

    def __init__(self, seed: int, servers: int = 3, settings: Settings = Settings(),
                 drop: float = 0.0, delay_s: Tuple[float, float] = (0.0005, 0.005),
                 timeout_s: float = 0.5, deadline_s: float = 30.0):
        self.seed = seed
        self.rng = random.Random(seed)
        self.settings = settings
        self.drop, self.delay_s = drop, delay_s
        self.now = 0.0
        self.queue: List[tuple] = []
        self.seq = 0
        self.servers: Dict[int, CalcServer] = {}
        self.start_at: Dict[int, float] = {}
        self.alive: Dict[int, bool] = {}
        for i in range(1, servers + 1):
            # Random phases: servers on different machines tick at different moments.
            self.start(i, at=self.rng.uniform(0, settings.heartbeat_s))
        self.client = calc_client.CalcClientCore("sim", timeout_s, deadline_s,
                                                 random.Random(self.rng.random()))
        self.asks: List[Tuple[float, str]] = []
        self.asked: Dict[int, str] = {}
        self.replies: List[calc_client.Reply] = []
        self.events: List[tuple] = []
        self.side: Dict[object, int] = {}      # node -> side of a partition (default 0)

    # ---- topology -----------------------------------------------------------------------
    def addr(self, index: int) -> Tuple[str, int]:
        return (f"10.0.0.{index}", 4000)

    def start(self, index: int, at: Optional[float] = None) -> None:
        self.servers[index] = CalcServer(index, "sim", self.settings,
                                         rng=random.Random(self.rng.random()))
        self.start_at[index] = self.now if at is None else at
        self.alive[index] = True

    def crash(self, index: int) -> None:
        self.alive[index] = False

    def partition(self, *sides) -> None:
        """Split the network: each argument is a set of nodes (server indexes, "client") that
        still reach each other; nodes not named stay on side 0. A node always hears itself."""
        self.side = {node: k + 1 for k, nodes in enumerate(sides) for node in nodes}

    def heal(self) -> None:
        self.side = {}

    def _node(self, addr) -> object:
        return "client" if addr == CLIENT_ADDR else int(addr[0].rsplit(".", 1)[1])

    def _reaches(self, src, dest) -> bool:
        a, b = self._node(src), dest
        return a == b or self.side.get(a, 0) == self.side.get(b, 0)

    def ask(self, at: float, expr: str) -> None:
        self.asks.append((at, expr))
        self.asks.sort()

    # ---- datagrams ----------------------------------------------------------------------
    def _post(self, dest, data: bytes, src) -> None:
        if self.rng.random() < self.drop:
            return
        self.seq += 1
        heapq.heappush(self.queue, (self.now + self.rng.uniform(*self.delay_s), self.seq, dest,
                                    data, src))

    def _multicast(self, data: bytes, src) -> None:
        for i in self.servers:
            self._post(i, data, src)       # every server, the sender included (it hears itself)

    def _emit(self, index: int, out: calc_server.Output) -> None:
        self.events.extend((self.now, index, e) for e in out.events)
        for send in out.sends:
            if send.to == TO_SERVER_GROUP:
                self._multicast(send.data, self.addr(index))
            else:
                assert send.to == CLIENT_ADDR, f"answer to {send.to} (seed {self.seed})"
                self._post("client", send.data, self.addr(index))

    # ---- time ---------------------------------------------------------------------------
    def _next_time(self, until: float) -> float:
        times = [until]
        if self.queue:
            times.append(self.queue[0][0])
        for i, server in self.servers.items():
            if self.alive[i]:
                times.append(max(self.start_at[i], server.next_deadline()))
        due = self.client.next_deadline()
        if due is not None:
            times.append(due)
        if self.asks:
            times.append(self.asks[0][0])
        return max(self.now, min(times))

    def run_until(self, until: float, check=None) -> None:
        while True:
            self.now = self._next_time(until)
            if self.now >= until:
                self.now = until
                return
            self._step()
            if check:
                check(self)

    def _step(self) -> None:
        while self.queue and self.queue[0][0] <= self.now:
            _, _, dest, data, src = heapq.heappop(self.queue)
            if not self._reaches(src, dest):
                continue                   # cut off by a partition (also if sent before it)
            if dest == "client":
                self.replies += self.client.datagram(data, src, self.now)
            elif self.alive[dest]:
                self._emit(dest, self.servers[dest].datagram(data, src, self.now))
        for i, server in self.servers.items():
            if self.alive[i] and self.now >= max(self.start_at[i], server.next_deadline()):
                self._emit(i, server.tick(self.now))
        while self.asks and self.asks[0][0] <= self.now:
            _, expr = self.asks.pop(0)
            rid, data, local = self.client.ask(expr, self.now)
            self.asked[rid] = expr
            if data is not None:
                self._multicast(data, CLIENT_ADDR)
        resend, expired = self.client.tick(self.now)
        for data in resend:
            self._multicast(data, CLIENT_ADDR)
        self.replies += expired

    # ---- checkers -----------------------------------------------------------------------
    def answerers(self) -> List[int]:
        return [i for i, s in self.servers.items() if self.alive[i] and s.answering]

    def check_exactly_one_answer_each(self) -> None:
        """Every expression asked got exactly one reply, a real answer, Python's value."""
        got: Dict[int, int] = {}
        for r in self.replies:
            got[r.rid] = got.get(r.rid, 0) + 1
            assert r.ok is not None, f"no answer for {r.expr!r} (seed {self.seed})"
            assert (r.ok, r.text) == calc_server.calculate(r.expr), \
                f"wrong answer {r} (seed {self.seed})"
        missing = [self.asked[rid] for rid in self.asked if rid not in got]
        assert not missing, f"no reply for {missing[:5]} (seed {self.seed})"
        doubled = [rid for rid, n in got.items() if n > 1]
        assert not doubled, f"{len(doubled)} expressions answered twice (seed {self.seed})"


# ---- real processes -------------------------------------------------------------------------

class Cluster:
    """Options for one test's cluster: a unique name and unique groups and ports."""

    def __init__(self, procs, heartbeat_s: float = 0.2, name: Optional[str] = None,
                 server_group: Optional[str] = None, client_group: Optional[str] = None,
                 iface: str = "127.0.0.1", key_path: Optional[str] = None):
        self.procs = procs
        self.key_path = key_path     # a --new-key file: every server and client uses it
        self.name = name or unique_name("calct")
        self.server_group = server_group or unique_group()
        self.client_group = client_group or unique_group()
        self.heartbeat_s = heartbeat_s
        self.iface = iface
        self.servers: Dict[int, subprocess.Popen] = {}

    def server_argv(self, index: int, *extra: str) -> List[str]:
        return ["calc_server.py", str(index), "--cluster", self.name, "--iface", self.iface,
                "--server-group", self.server_group, "--client-group", self.client_group,
                "--heartbeat", str(self.heartbeat_s), "--plain", *self.key_args(), *extra]

    def key_args(self) -> List[str]:
        return [] if self.key_path is None else ["--key", self.key_path]

    def start(self, index: int, *extra: str) -> subprocess.Popen:
        self.servers[index] = self.procs.start(*self.server_argv(index, *extra))
        return self.servers[index]

    def client(self, timeout_s: float = 0.1, deadline_s: float = 3.0) -> calc_client.CalcClient:
        key = None if self.key_path is None else calc_server.load_key(self.key_path)
        return calc_client.CalcClient(self.iface, self.name,
                                      calc_server.parse_group(self.client_group),
                                      timeout_s, deadline_s, key=key)

    def ask(self, expr: str = "6*7") -> calc_client.Reply:
        with self.client() as client:
            return client.ask(expr)

    def client_argv(self, *extra: str) -> List[str]:
        return [sys.executable, str(ROOT / "calc_client.py"), "--cluster", self.name,
                "--iface", self.iface, "--client-group", self.client_group, *self.key_args(),
                *extra]

    def answered_by(self, index: int, expr: str = "6*7"):
        """A predicate for wait_for: the next answer comes from `index`."""
        def answered_by_index():
            reply = self.ask(expr)
            return reply.server == index and reply
        answered_by_index.__name__ = f"answered_by_server_{index}"
        return answered_by_index
