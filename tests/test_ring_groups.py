from __future__ import annotations

"""Group membership across daemons (RingGroupCore), sans-I/O: whole spread_mini Daemon cores
with RingOrderers, wired through an in-memory network with a fake clock, and clients speaking
the real client protocol to them. Deterministic: no sockets, no threads, no real time."""

import heapq

import spread_mini as sp

NAMES = ["d1", "d2", "d3"]
IPS = {"d1": "127.0.0.1", "d2": "127.0.0.2", "d3": "127.0.0.3"}


class Lab:
    def __init__(self):
        self.now = 0.0
        self.queue = []
        self.counter = 0
        self.side = {}  # name -> partition side (missing: together)
        self.daemons = {}
        for i, name in enumerate(NAMES, 1):
            orderer = sp.RingOrderer(name, i, NAMES, now=0.0)
            daemon = sp.Daemon(name, orderer=orderer, daemon_order=NAMES)
            daemon.core = sp.RingGroupCore(name, orderer, IPS, daemon_order=NAMES)
            self.daemons[name] = daemon
        self.next_tick = 0.0

    def pump(self, name):
        for action in self.daemons[name].poll():
            if isinstance(action, sp.SendDatagram):
                self.counter += 1
                heapq.heappush(self.queue, (self.now + 0.001, self.counter, action.dest, name,
                                            action.packet))

    def run(self, seconds):
        end = self.now + seconds
        while True:
            t_net = self.queue[0][0] if self.queue else float("inf")
            t = min(t_net, self.next_tick)
            if t > end:
                self.now = end
                return
            self.now = t
            if t == t_net:
                _, _, dest, src, packet = heapq.heappop(self.queue)
                if self.side.get(dest, 0) == self.side.get(src, 0):
                    self.daemons[dest].datagram(packet, src, self.now)
                    self.pump(dest)
            else:
                for name in NAMES:
                    self.daemons[name].tick(self.now)
                    self.pump(name)
                self.next_tick += 0.01


class Client:
    """One session speaking the client protocol to a Daemon core."""

    def __init__(self, lab, daemon_name, user, conn_id):
        self.lab, self.daemon, self.conn = lab, lab.daemons[daemon_name], conn_id
        self.daemon.connection_opened(conn_id, lab.now)
        self.daemon.connection_data(conn_id, sp.encode_connect(user, True))
        self._take()
        self.daemon.connection_data(conn_id, sp.encode_auth_choice())
        reply = self._take()
        assert reply[0] == sp.ACCEPT_SESSION
        self.private_group = reply[5:5 + reply[4]].decode()
        self.buf = reply[5 + reply[4]:]
        self.messages = []

    def _take(self):
        data = b""
        while True:
            part = self.daemon.pending_output(self.conn)
            if not part:
                return data
            self.daemon.output_written(self.conn, len(part))
            data += part

    def send(self, raw):
        self.daemon.connection_data(self.conn, raw)
        self.lab.pump(self.daemon.name)

    def join(self, group):
        self.send(sp.HEADER.pack(sp.JOIN_MESS | sp.MY_ENDIAN_MARKER, sp.pad_name(self.private_group),
                                 1, sp.MY_ENDIAN_MARKER, 0) + sp.pad_name(group))

    def multicast(self, service, group, data):
        self.send(sp.encode_message(service, self.private_group, [group], sp.make_hint(0), data))

    def receive_all(self):
        self.buf += self._take()
        while True:
            n = sp.message_length(self.buf)
            if not n or len(self.buf) < n:
                break
            self.messages.append(sp.decode_message(self.buf[:n], 0, self.private_group))
            self.buf = self.buf[n:]
        return self.messages


def memberships(client):
    return [m for m in client.receive_all() if m.is_membership]


def describe(m):
    if m.is_membership:
        return ("TRANS",) if m.is_transitional else ("REG", m.caused_by, tuple(sorted(m.members)))
    return ("DATA", m.data)


def started_lab():
    lab = Lab()
    lab.run(1.5)
    rings = {d.orderer.ring.ring_id for d in lab.daemons.values()}
    assert len(rings) == 1 and all(d.orderer.state == sp.OPERATIONAL for d in lab.daemons.values())
    a, b, c = Client(lab, "d1", "a", 1), Client(lab, "d2", "b", 1), Client(lab, "d3", "c", 1)
    for client in (a, b, c):
        client.join("g")
        lab.run(0.2)
    return lab, a, b, c


def test_a_group_spans_three_daemons_with_one_group_id():
    lab, a, b, c = started_lab()
    last = [memberships(x)[-1] for x in (a, b, c)]
    assert all(sorted(m.members) == ["#a#d1", "#b#d2", "#c#d3"] for m in last)
    assert sp.equal_group_ids(last[0].group_id, last[1].group_id)
    assert sp.equal_group_ids(last[1].group_id, last[2].group_id)


def test_partition_transition_then_network_membership_then_merge_with_two_vs_sets():
    lab, a, b, c = started_lab()
    for x in (a, b, c):
        x.messages = []
        x.receive_all()
        x.messages = []
    lab.side = {"d3": 1}  # d3 is cut from d1 and d2
    for i in range(20):
        a.multicast(sp.AGREED_MESS, "g", b"a%02d" % i)
        c.multicast(sp.SAFE_MESS, "g", b"c%02d" % i)
        lab.run(0.01)
    lab.run(3.0)
    seen_a = [describe(m) for m in a.receive_all()]
    seen_b = [describe(m) for m in b.receive_all()]
    seen_c = [describe(m) for m in c.receive_all()]
    two = ("REG", "NETWORK", ("#a#d1", "#b#d2"))
    assert two in seen_a and seen_a.count(("TRANS",)) == 1
    assert seen_a.index(("TRANS",)) < seen_a.index(two)
    # sent after the cut, so in the new configuration: after its REG_MEMB
    assert seen_a.index(two) < seen_a.index(("DATA", b"a00"))
    assert seen_c.index(("REG", "NETWORK", ("#c#d3",))) < seen_c.index(("DATA", b"c00"))
    assert ("REG", "NETWORK", ("#c#d3",)) in seen_c
    # virtual synchrony for the clients of d1 and d2: same messages, same order, same cut
    assert seen_a == seen_b
    m = [x for x in a.messages if x.is_membership and x.is_regular][-1]
    assert m.vs_sets == [["#a#d1", "#b#d2"]]
    lab.side = {}
    lab.run(3.0)
    merged = [x for x in a.receive_all() if x.is_membership and x.is_regular][-1]
    assert sorted(merged.members) == ["#a#d1", "#b#d2", "#c#d3"] and merged.caused_by == "NETWORK"
    assert sorted(sorted(s) for s in merged.vs_sets) == [["#a#d1", "#b#d2"], ["#c#d3"]]
    merged_c = [x for x in c.receive_all() if x.is_membership and x.is_regular][-1]
    assert sp.equal_group_ids(merged.group_id, merged_c.group_id)


def test_joins_during_the_state_exchange_are_applied_after_it_everywhere():
    lab, a, b, c = started_lab()
    lab.side = {"d3": 1}
    lab.run(2.5)
    lab.side = {}
    lab.run(0.9)  # the merge is under way
    late = Client(lab, "d2", "late", 2)
    late.join("g")
    lab.run(3.0)
    final = [[m for m in x.receive_all() if m.is_membership and m.is_regular][-1] for x in (a, b, c, late)]
    for m in final:
        assert sorted(m.members) == ["#a#d1", "#b#d2", "#c#d3", "#late#d2"]
    assert all(sp.equal_group_ids(final[0].group_id, m.group_id) for m in final)
