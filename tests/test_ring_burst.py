"""Tier 1: three daemon cores on a fake network, fed datagrams the way the I/O loop reads them:
several at one wake-up (Daemon.datagram_in_burst, then end_of_burst). What must leave at once
(datagrams to the other daemons) comes from each datagram; the clients' writes come once, at
the end of the burst; the clients get the same bytes as with one datagram at a time."""
from __future__ import annotations

import collections

import spread_mini as sp
from daemon_driver import Driver

NAMES = ["d1", "d2", "d3"]
IPS = {name: "127.0.0.%d" % i for i, name in enumerate(NAMES, 1)}
DATAGRAMS = (sp.SendDatagram, sp.MulticastDatagram)


class Net:
    """Datagrams in flight; `burst` says how the daemons take them (all that is queued at one
    wake-up, or one at a time)."""

    def __init__(self, burst: bool):
        self.burst = burst
        self.d = {name: Driver(sp.build_daemon(name, IPS, incarnation=i)) for i, name in enumerate(NAMES, 1)}
        self.queue = collections.deque()
        self.now = 0.0
        self.burst_outputs = []  #: (what datagram_in_burst returned, what end_of_burst returned)

    def send(self, src, actions):
        for a in actions:
            if isinstance(a, sp.MulticastDatagram):
                self.queue.extend((dest, src, a.packet) for dest in a.dests)
            elif isinstance(a, sp.SendDatagram):
                self.queue.append((a.dest, src, a.packet))

    def pump(self, name):
        self.send(name, self.d[name].take_actions())

    def run_network(self):
        while self.queue:
            batch = list(self.queue)
            self.queue.clear()
            touched = {}
            if self.burst == "call":
                self.run_bursts(batch)
                continue
            for dest, src, packet in batch:
                if self.burst:
                    now_out = self.d[dest].d.datagram_in_burst(packet, (IPS[src], 4803), self.now)
                    touched.setdefault(dest, []).extend(now_out)
                    self.send(dest, now_out)
                else:
                    self.d[dest].datagram(packet, (IPS[src], 4803), self.now)
                    self.pump(dest)
            for name in sorted(touched):
                rest = self.d[name].d.end_of_burst()
                self.burst_outputs.append((touched[name], rest))
                self.send(name, self.d[name].perform(rest))

    def run_bursts(self, batch):
        """Each daemon's datagrams of the batch in one call (Daemon.datagrams_in_burst)."""
        by_dest = {}
        for dest, src, packet in batch:
            by_dest.setdefault(dest, []).append((packet, (IPS[src], 4803)))
        for name in sorted(by_dest):
            now_out = self.d[name].d.datagrams_in_burst(by_dest[name], self.now)
            self.send(name, now_out)
            rest = self.d[name].d.end_of_burst()
            self.burst_outputs.append((now_out, rest))
            self.send(name, self.d[name].perform(rest))

    def tick(self, steps=1):
        for _ in range(steps):
            self.now += 0.002
            for name in NAMES:
                self.d[name].tick(self.now)
                self.pump(name)
            self.run_network()

    def client(self, name, user, group=None):
        driver = self.d[name]
        driver.connection_opened(1, self.now, "127.0.0.1")
        driver.connection_data(1, sp.encode_connect(user, True) + sp.encode_auth_choice())
        if group:
            driver.connection_data(1, sp.encode_message(sp.JOIN_MESS, "#%s#%s" % (user, name), [group],
                                                        sp.make_hint(0), b""))
        self.pump(name)


def flood(burst: bool, count=300):
    net = Net(burst)
    net.tick(1500)  # the ring forms
    net.client("d1", "snd")
    net.client("d2", "r2", "g")
    net.client("d3", "r3", "g")
    net.tick(300)
    for name in ("d2", "d3"):
        net.d[name].take_output(1)
    messages = [sp.encode_message(sp.AGREED_MESS, "#snd#d1", ["g"], sp.make_hint(i % 7), b"m%04d" % i)
                for i in range(count)]
    for i in range(0, count, 25):
        net.d["d1"].connection_data(1, b"".join(messages[i:i + 25]))
        net.pump("d1")
        net.tick()
    net.tick(200)
    return net, b"".join(messages), {name: net.d[name].take_output(1) for name in ("d2", "d3")}


def test_a_burst_gives_the_clients_the_same_bytes_as_one_datagram_at_a_time():
    _, sent, one_by_one = flood(burst=False)
    _, _, burst = flood(burst=True)
    assert one_by_one == {"d2": sent, "d3": sent}
    assert burst == one_by_one


def test_in_a_burst_only_datagrams_leave_at_once_and_the_writes_come_at_its_end():
    net, sent, got = flood(burst=True)
    assert got == {"d2": sent, "d3": sent}
    assert net.burst_outputs
    writes = 0
    for now_out, rest in net.burst_outputs:
        assert all(isinstance(a, DATAGRAMS) for a in now_out)
        assert not any(isinstance(a, DATAGRAMS) for a in rest)
        writes += sum(isinstance(a, sp.Write) for a in rest)
    assert writes, "no client write came at the end of a burst"
    # the writes are coalesced: far fewer than one per message per receiver
    assert sum(isinstance(a, sp.Write) for _, rest in net.burst_outputs for a in rest) < 300


def test_a_burst_in_one_call_gives_the_clients_the_same_bytes():
    _, sent, one_by_one = flood(burst=False)
    net, _, in_one_call = flood(burst="call")
    assert one_by_one == {"d2": sent, "d3": sent}
    assert in_one_call == one_by_one
    for now_out, rest in net.burst_outputs:
        assert all(isinstance(a, DATAGRAMS) for a in now_out)
        assert not any(isinstance(a, DATAGRAMS) for a in rest)
