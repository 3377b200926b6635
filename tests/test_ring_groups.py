"""Group membership across daemons (RingGroupCore), sans-I/O: whole spread_mini Daemon cores
with RingOrderers, wired through an in-memory network with a fake clock, and clients speaking
the real client protocol to them. Deterministic: no sockets, no threads, no real time."""
from __future__ import annotations

import heapq

import spread_mini as sp
from daemon_driver import Driver

NAMES = ["d1", "d2", "d3"]
IPS = {"d1": "127.0.0.1", "d2": "127.0.0.2", "d3": "127.0.0.3"}


class Lab:
    def __init__(self):
        self.now = 0.0
        self.queue = []
        self.counter = 0
        self.side = {}  # name -> partition side (missing: together)
        self.daemons = {}
        self.others = {name: [] for name in NAMES}  #: actions other than datagrams, per daemon
        for i, name in enumerate(NAMES, 1):
            self.daemons[name] = Driver(sp.build_daemon(name, IPS, incarnation=i))
        self.next_tick = 0.0

    def pump(self, name):
        for action in self.daemons[name].take_actions():
            if isinstance(action, (sp.SendDatagram, sp.MulticastDatagram)):
                dests = action.dests if isinstance(action, sp.MulticastDatagram) else (action.dest,)
                for dest in dests:
                    self.counter += 1
                    heapq.heappush(self.queue, (self.now + 0.001, self.counter, dest, name,
                                                action.packet))
            else:
                self.others[name].append(action)

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
                    self.daemons[dest].datagram(packet, (IPS[src], 4803), self.now)
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
        return self.daemon.take_output(self.conn)

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


# ------------------------------------------------------------------------ what the exchange holds
# After a ring change every daemon sends STATE and holds every message delivered until all the
# STATEs are in. STATE goes to the front of the queue, so megabytes of client data waiting at
# the daemons are not held: only what the ring carries before the last STATE, about a rotation
# of the global window (tests/ring_sim.py with a RingGroupCore above each orderer).

import random  # noqa: E402

from ring_sim import Faults, Sim  # noqa: E402

CALM = Faults(loss=0.0, dup=0.0, delay_s=0.001, jitter_s=0.0, crashes=False, partitions=False,
              garbage=0.0)
QUEUED_PER_DAEMON_BYTES = 3 * 1024 * 1024
MESSAGE_BYTES = 10000


def one_ring(sim):
    rings = {o.ring.ring_id for o, _ in sim.nodes.values()}
    return len(rings) == 1 and all(o.state == sp.OPERATIONAL and len(o.ring.members) == len(sim.nodes)
                                   for o, _ in sim.nodes.values())


def merge_with_megabytes_queued(seed=1, **settings):
    """d3 cut off, then healed: when the merge starts, 3 MB of AGREED/SAFE messages wait at
    each daemon; returns the simulator after everything is delivered."""
    sim = Sim(seed, daemons=3, faults=CALM, settings=settings, group_cores=True)
    sim.group_of = {"d1": 0, "d2": 0, "d3": 1}
    sim.run_until(3.0)
    assert [p[0] for p in sim.nodes["d1"][0].ring.members] == ["d1", "d2"]
    sim.group_of = None
    assert sim.run_until(sim.now + 3.0, stop=lambda: any(
        o.state == sp.GATHER for o, _ in sim.nodes.values())), "no merge started"
    rng = random.Random(seed)
    for _ in range(QUEUED_PER_DAEMON_BYTES // MESSAGE_BYTES):
        for name in ("d1", "d2", "d3"):
            sim.submit(name, rng.choice([sp.AGREED_MESS, sp.SAFE_MESS]), size=MESSAGE_BYTES)
    assert all(o.transport.pending_bytes >= QUEUED_PER_DAEMON_BYTES * 0.9 for o, _ in sim.nodes.values())
    assert sim.run_until(sim.now + 30.0, stop=lambda: one_ring(sim) and sim.settled() and all(
        c.exchange is None for c in sim.cores.values())), "not settled"
    return sim


def held_bound_bytes(settings, rotations=2):
    """A rotation of the global window, in bytes: the ring carries no more per rotation."""
    cfg = sp.RingSettings(**settings)
    return rotations * cfg.global_window_packets * cfg.max_packet_bytes


def test_state_goes_first_so_the_exchange_holds_about_a_rotation_not_the_queues():
    for settings in ({}, {"global_window_packets": 100, "personal_window_packets": 40}):
        sim = merge_with_megabytes_queued(**settings)
        bound = held_bound_bytes(settings)
        assert 3 * QUEUED_PER_DAEMON_BYTES > 3 * bound  # the queues dwarf the bound
        for name, core in sorted(sim.cores.items()):
            assert core.exchanges_done >= 2, name  # the startup ring, then the merge
            assert 0 < core.held_peak_bytes <= bound, (
                "%s held %d bytes at the peak, more than %d (2 rotations of the global window "
                "%s); seed 1" % (name, core.held_peak_bytes, bound, settings))
            assert core.held_limit_exceeded == 0 and not core.held_over_limit
        result = sim.check()
        assert not result.violations, "\n".join(result.violations[:10])
        assert result.stats["submitted"] == 3 * (QUEUED_PER_DAEMON_BYTES // MESSAGE_BYTES)


def test_with_state_at_the_back_the_exchange_would_hold_the_queues(monkeypatch):
    """The test above can fail: STATE behind the queued data holds megabytes."""
    original = sp.RingOrderer.submit
    monkeypatch.setattr(sp.RingOrderer, "submit", lambda self, msg, urgent=False: original(self, msg))
    settings = {"global_window_packets": 100, "personal_window_packets": 40}
    sim = merge_with_megabytes_queued(**settings)
    assert max(c.held_peak_bytes for c in sim.cores.values()) > 4 * held_bound_bytes(settings)
    assert any(c.held_limit_exceeded for c in sim.cores.values())  # and the limit said so


def test_urgent_submit_goes_first_behind_only_the_message_being_sent():
    o = sp.RingOrderer("d1", 1, ["d1", "d2"])
    msgs = [sp.DaemonMessage(sp.DATA, "d1", "#a#d1", sp.AGREED_MESS, ["g"], data=b"x" * n)
            for n in (10, 20, 30)]
    o.submit(msgs[0])
    o.submit(msgs[1])
    o.transport.in_progress = ["being sent"]  # a message half sent stays first: it is not in pending
    assert o.submit(msgs[2], urgent=True)
    assert [m for m, _ in o.transport.pending] == [msgs[2], msgs[0], msgs[1]]
    assert o.transport.pending_bytes == sum(len(body) for _, body in o.transport.pending)


def test_a_held_limit_exceeded_is_logged_and_stops_reading_clients_until_the_exchange_is_done():
    lab = Lab()
    lab.run(1.5)
    d1 = lab.daemons["d1"]
    core = d1.core
    core.held_limit_bytes = 100  # tiny: the merge's exchange goes over it
    Client(lab, "d1", "quiet", 9)
    lab.side = {"d3": 1}
    lab.run(2.5)
    lab.side = {}
    client = Client(lab, "d2", "bulk", 7)
    for i in range(400):  # a client of d2 keeps sending while the ring merges
        client.multicast(sp.AGREED_MESS, "nobody", b"%04d" % i + b"z" * 200)
        lab.run(0.01)
    lab.run(2.0)
    assert core.held_limit_exceeded >= 1 and core.held_peak_bytes > 100
    reading = [a for a in lab.others["d1"] if isinstance(a, (sp.PauseReading, sp.ResumeReading))]
    # over the limit: d1's clients were not read, and were read again once the exchange was done
    assert reading[:2] == [sp.PauseReading(9), sp.ResumeReading(9)], reading
    assert not core.held_over_limit and core.exchange is None and not d1.reading_paused
    assert any("more than the limit" in line and "clients of this daemon are not read" in line
               for line in d1.log)


def test_the_status_table_shows_the_held_peak_beside_the_limit():
    sim = merge_with_megabytes_queued(global_window_packets=100, personal_window_packets=40)
    core = sim.cores["d1"]
    snap = sim.nodes["d1"][0].snapshot()
    snap["held_peak"] = (core.held_peak_messages, core.held_peak_bytes, core.held_limit_bytes,
                         core.held_limit_exceeded)
    rows = dict(sp.ring_status_rows(snap))
    assert rows["held in state exchange (peak)"] == "%d messages, %d KB (limit %d KB; exceeded 0)" % (
        core.held_peak_messages, core.held_peak_bytes // 1024, 4 * 100 * 1400 // 1024)


# ------------------------------------------------------------------------ STATE in parts
# A daemon's STATE lists its clients' memberships; 997 sessions in 2000 groups each would be far
# beyond the largest message, so it goes in parts and the exchange waits for the last one.

def test_a_state_too_big_for_one_message_goes_in_numbered_parts():
    orderer = sp.RingOrderer("d1", 1, NAMES)
    core = sp.RingGroupCore("d1", orderer, IPS, daemon_order=NAMES)
    for i in range(4000):
        group = core.groups["group-%04d" % i] = sp.Group("group-%04d" % i)
        group.members = {"#student%03d#d1" % (i % 997): "d1", "#other#d2": "d2"}
    change = sp.ConfigurationChange(sp.CONF_REGULAR, NAMES, NAMES, (5, "d1", 1))
    core._send_state(change)  # would raise "message too long" in one message
    states = [msg for msg, _ in orderer.transport.pending if msg.kind == sp.STATE]
    assert len(states) == core.state_parts_sent >= 2
    count = len(states)
    assert sorted(m.hint for m in states) == [i << 16 | count for i in range(count)]
    lines = [line for m in states for line in m.data.decode("latin-1").split("\n")]
    assert len(lines) == 4000 and sorted(lines) == sorted(set(lines))  # every membership, once
    assert all("#other#d2" not in line for line in lines)  # only this daemon's clients
    assert all(len(body) <= sp.MAX_MESSAGE_BODY_BYTES for _, body in orderer.transport.pending)


def test_memberships_survive_a_merge_when_every_state_comes_in_several_parts(monkeypatch):
    monkeypatch.setattr(sp, "STATE_PART_BYTES", 5)  # one membership per part
    lab, a, b, c = started_lab()
    for client, group in ((a, "h"), (b, "h"), (c, "k"), (a, "k")):
        client.join(group)
        lab.run(0.2)
    lab.side = {"d3": 1}
    lab.run(2.5)
    lab.side = {}
    lab.run(4.0)
    cores = [d.core for d in lab.daemons.values()]
    assert all(core.exchange is None for core in cores)
    assert cores[0].state_parts_sent > 2 * cores[0].exchanges_done  # several parts each time
    for core in cores:
        table = {name: sorted(g.members) for name, g in core.groups.items()}
        assert table == {"g": ["#a#d1", "#b#d2", "#c#d3"], "h": ["#a#d1", "#b#d2"],
                         "k": ["#a#d1", "#c#d3"]}, core.daemon_name
    final = [m for m in memberships(a) if m.is_regular and m.group == "k"][-1]
    assert sorted(final.members) == ["#a#d1", "#c#d3"]


# ------------------------------------------------------------------------ a join in the transitional configuration
# A plain RingGroupCore, driven by hand: d3 is gone (d1 and d2 go on together); a client of d1
# joins a group that had a member at d3 in the transitional configuration, before the STATE
# exchange of the regular one.

def _core_client(core, member):
    session = sp.ClientSession(len(core.local) + 1, core.daemon_name, lambda _: True, random.Random(0))
    session.private_group, session.group_membership = member, True
    core.add_session(session)
    return session


def _core_views(session):
    """(kind, cause, members, vs_sets, the client's own vs_set) of each membership message queued."""
    out = []
    for raw in session.out.chunks:
        m = sp.decode_message(raw, 0, session.private_group)
        if m.is_transitional:
            out.append(("TRANS",))
        elif m.is_membership and not m.is_self_leave:
            out.append(("REG", m.caused_by, sorted(m.members), m.vs_sets, m.changed_members))
    session.out.clear()
    return out


def _op(kind, member, group="g"):
    return sp.DaemonMessage(kind, member.rsplit("#", 1)[1], member, sp.AGREED_MESS, [group])


def _d3_gone_then_exchange(core, between):
    """The transitional configuration without d3, `between` delivered in it, then the regular
    one and its STATE exchange (d1's STATE as it sent it, d2's with no members)."""
    core.configuration_change(sp.ConfigurationChange(sp.CONF_TRANSITIONAL, ["d1", "d2"], ["d1", "d2"],
                                                     (6, "d1", 1)), 6)
    for msg in between:
        core.deliver(msg)
    regular = sp.ConfigurationChange(sp.CONF_REGULAR, ["d1", "d2"], ["d1", "d2"], (6, "d1", 1))
    core.configuration_change(regular, 6)
    states = [msg for msg, _ in core.orderer.transport.pending if msg.kind == sp.STATE]
    states.append(sp.DaemonMessage(sp.STATE, "d2", "#state#d2", sp.AGREED_MESS, [repr(regular.ring_id)], 1,
                                   data=b"", reason=states[0].reason))
    for msg in states:
        core.deliver(msg)


def test_a_join_in_the_transitional_configuration_is_a_network_view_with_the_joiner_alone():
    """As the real Spread gives it (groups.c, a join in GTRANS to a changed group): REG_MEMB
    CAUSED_BY_NETWORK, d1's and d2's members in one vs_set, d3's in its own, the joiner alone
    and last (its own set for the joiner), then TRANSITION; the exchange's REG_MEMB ends it.
    Before: a lightweight REG_MEMB CAUSED_BY_JOIN naming d3's member as if it were with us,
    and the exchange's REG_MEMB that dropped it came with no TRANSITION before it."""
    core = sp.RingGroupCore("d1", sp.RingOrderer("d1", 1, NAMES), IPS, daemon_order=NAMES)
    old, joiner = _core_client(core, "#a#d1"), _core_client(core, "#j#d1")
    for member in ("#a#d1", "#c#d3"):
        core.deliver(_op(sp.JOIN, member))
    old.out.clear()
    _d3_gone_then_exchange(core, [_op(sp.JOIN, "#j#d1")])
    three = ["#a#d1", "#c#d3", "#j#d1"]
    sets = [["#a#d1"], ["#c#d3"], ["#j#d1"]]
    ended = ("REG", "NETWORK", ["#a#d1", "#j#d1"], [["#a#d1", "#j#d1"]], ["#a#d1", "#j#d1"])
    assert _core_views(old) == [("TRANS",), ("REG", "NETWORK", three, sets, ["#a#d1"]), ("TRANS",), ended]
    assert _core_views(joiner) == [("REG", "NETWORK", three, sets, ["#j#d1"]), ("TRANS",), ended]


def test_a_leave_in_the_transitional_configuration_still_ends_with_the_exchanges_view():
    """A LEAVE there gives its network view and TRANSITION too; the exchange's REG_MEMB comes
    even though the table it builds is the one the leave left (d3's member left first)."""
    core = sp.RingGroupCore("d1", sp.RingOrderer("d1", 1, NAMES), IPS, daemon_order=NAMES)
    old = _core_client(core, "#a#d1")
    for member in ("#a#d1", "#c#d3"):
        core.deliver(_op(sp.JOIN, member))
    old.out.clear()
    _d3_gone_then_exchange(core, [_op(sp.LEAVE, "#c#d3")])
    alone = ("REG", "NETWORK", ["#a#d1"], [["#a#d1"]], ["#a#d1"])
    assert _core_views(old) == [("TRANS",), alone, ("TRANS",), alone]


def _ring_change(kind, members, came, ring_id, old_ring_id):
    return sp._configuration_change(kind, [(m, 1) for m in members], [(m, 1) for m in came],
                                    ring_id, old_ring_id, "test")


def test_a_ring_change_that_ends_an_unfinished_exchange_keeps_each_sides_vs_set():
    """d1, d2 and d3 each alone, a client of each in g. d1 and d2 formed a ring; before d2's
    STATE came, d3 joined them. d1's and d2's tables never merged (each still had its own
    member), yet their STATEs of the new ring both named the interrupted ring as the one
    they came from: one vs_set {a#d1, b#d2}, a view their clients never shared. The STATE
    now names the ring the daemon's table came from (the same flaw the sites' exchange had:
    seed 1409 --lan-splits --groups --client-views)."""
    class Orderer:
        def __init__(self):
            self.submitted = []

        def submit(self, msg, urgent=False):
            self.submitted.append(msg)

    cores = {n: sp.RingGroupCore(n, Orderer(), IPS, daemon_order=NAMES) for n in NAMES}
    alone = {n: (1, n) for n in NAMES}
    clients = {}
    for n, core in cores.items():  # each alone, its client in g
        core.configuration_change(_ring_change(sp.CONF_REGULAR, [n], [n], alone[n], (0, n)), 1)
        for msg in core.orderer.submitted:
            core.deliver(msg)
        clients[n] = _core_client(core, "#c#" + n)
        core.deliver(_op(sp.JOIN, "#c#" + n))
    pair = ["d1", "d2"]
    for n in pair:  # d1 and d2 merge; d1's STATE comes, d2's not yet
        cores[n].orderer.submitted.clear()
        for kind in (sp.CONF_TRANSITIONAL, sp.CONF_REGULAR):
            cores[n].configuration_change(_ring_change(kind, pair, [n], (2, "d1"), alone[n]), 2)
    first = list(cores["d1"].orderer.submitted)
    for n in pair:
        for msg in first:
            cores[n].deliver(msg)
        assert cores[n].exchange is not None
    for n, core in cores.items():  # d3 joins them before that exchange ended
        core.orderer.submitted.clear()
        came, old = ([n], alone[n]) if n == "d3" else (pair, (2, "d1"))
        for kind in (sp.CONF_TRANSITIONAL, sp.CONF_REGULAR):
            core.configuration_change(_ring_change(kind, NAMES, came, (3, "d1"), old), 3)
    for client in clients.values():
        client.out.clear()
    states = [msg for core in cores.values() for msg in core.orderer.submitted]
    for core in cores.values():
        for msg in states:
            core.deliver(msg)
        assert core.exchange is None
    members = ["#c#d1", "#c#d2", "#c#d3"]
    for n, client in clients.items():
        (trans, (kind, cause, names, vs_sets, mine)), = [_core_views(client)]
        assert trans == ("TRANS",) and (kind, cause, names) == ("REG", "NETWORK", members)
        assert sorted(vs_sets) == [["#c#d1"], ["#c#d2"], ["#c#d3"]] and mine == ["#c#" + n]
