"""Daemons of several sites (LinkProtocol = Hop), sans-I/O: whole Daemon cores from
build_daemon(sites=...), each site's ring on an in-memory LAN and the HOP ports on an in-memory
WAN (10 ms), a fake clock, and clients speaking the real client protocol. Also the
configuration's rules (which files run sites, the HOP port) and the status table's rows."""
from __future__ import annotations

import heapq
import json
import random

import pytest

import spread_mini as sp
from daemon_driver import Driver
from test_ring_groups import Client, describe, memberships

LAYOUT = [["a1", "a2"], ["b1"]]
IPS = {"a1": "127.0.40.11", "a2": "127.0.40.12", "b1": "127.0.41.11"}
PORTS = [4803, 4813]
WAN_DELAY_S = 0.01

CONF = """
Spread_Segment 239.255.40.1:4803 {
    a1 127.0.40.11
    a2 127.0.40.12
}
Spread_Segment 239.255.41.1:4813 {
    b1 127.0.41.11
}
LinkProtocol = Hop
"""


def plan():
    return sp.sites_plan(sp.parse_spread_conf(CONF))


class SitesLab:
    """The daemons of LAYOUT; ring datagrams inside a site (1 ms), HOP datagrams between
    sites (WAN_DELAY_S); a crashed daemon neither sends nor receives."""

    def __init__(self, layout=None, ips=None, conf=None, hop_settings=None):
        self.now = 0.0
        self.queue = []
        self.counter = 0
        self.crashed = set()
        self.wan_cut = False  #: every HOP datagram is lost
        self.ring_cut = False  #: every ring datagram is lost (each daemon a ring of its own)
        #: daemons cut off from the rest of their site's LAN (a split: two rings of one site)
        self.lan_apart = set()
        self.layout, self.ips = layout or LAYOUT, ips or IPS
        self.plan = sp.sites_plan(sp.parse_spread_conf(conf or CONF), hop_settings)
        self.site_of = {d: s for s, names in enumerate(self.layout) for d in names}
        self.daemons = {}
        for i, name in enumerate(self.ips, 1):
            self.daemons[name] = Driver(sp.build_daemon(name, self.ips, incarnation=i, sites=self.plan))
        self.next_tick = 0.0

    def restart(self, name, incarnation=9):
        """kill -9 happened before (name in crashed): a new process of the same daemon."""
        self.crashed.discard(name)
        self.daemons[name] = Driver(sp.build_daemon(name, self.ips, incarnation=incarnation,
                                                    sites=self.plan, now=self.now))

    def pump(self, name):
        for action in self.daemons[name].take_actions():
            if isinstance(action, sp.HopDatagram):
                self._push(WAN_DELAY_S, "hop", action.dest, name, action.packet)
            elif isinstance(action, (sp.SendDatagram, sp.MulticastDatagram)):
                dests = action.dests if isinstance(action, sp.MulticastDatagram) else (action.dest,)
                for dest in dests:
                    assert self.site_of[dest] == self.site_of[name], "a ring datagram left its site"
                    self._push(0.001, "ring", dest, name, action.packet)

    def _push(self, delay_s, kind, dest, src, packet):
        self.counter += 1
        heapq.heappush(self.queue, (self.now + delay_s, self.counter, kind, dest, src, packet))

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
                _, _, kind, dest, src, packet = heapq.heappop(self.queue)
                if dest in self.crashed or src in self.crashed or (kind == "hop" and self.wan_cut) \
                        or (kind == "ring" and (self.ring_cut or (dest in self.lan_apart) != (src in self.lan_apart))):
                    continue
                d = self.daemons[dest]
                if kind == "hop":
                    d.perform(d.d.hop_datagram(packet, self.plan.hop_addresses[src], self.now))
                else:
                    d.datagram(packet, (self.ips[src], PORTS[self.site_of[src]]), self.now)
                self.pump(dest)
            else:
                for name in self.ips:
                    if name not in self.crashed:
                        self.daemons[name].tick(self.now)
                        self.pump(name)
                self.next_tick += 0.01


def started_lab():
    lab = SitesLab()
    lab.run(2.5)
    assert all(d.orderer.gateway.wide for n, d in lab.daemons.items() if n in ("a1", "b1"))
    clients = [Client(lab, name, "u" + name, 1) for name in IPS]
    for c in clients:
        c.join("g")
        lab.run(0.3)
    return lab, clients


def test_a_group_spans_two_sites_with_one_group_id_and_one_order():
    lab, clients = started_lab()
    last = [memberships(c)[-1] for c in clients]
    assert all(sorted(m.members) == ["#ua1#a1", "#ua2#a2", "#ub1#b1"] for m in last)
    assert all(sp.equal_group_ids(last[0].group_id, m.group_id) for m in last)
    for i in range(10):
        for c in clients:
            c.multicast(sp.AGREED_MESS if i % 2 else sp.SAFE_MESS, "g", b"%s %d" % (c.private_group.encode(), i))
        lab.run(0.005)
    lab.run(1.0)
    orders = [[describe(m) for m in c.receive_all() if not m.is_membership] for c in clients]
    assert len(orders[0]) == 30 and orders[0] == orders[1] == orders[2]


def test_a_representative_crash_is_a_network_change_at_one_point_everywhere():
    lab, (ua1, ua2, ub1) = started_lab()
    for c in (ua2, ub1):
        c.messages = []
        c.receive_all()
        c.messages = []
    lab.crashed.add("a1")
    ua2.multicast(sp.AGREED_MESS, "g", b"during")
    lab.run(4.0)
    ub1.multicast(sp.AGREED_MESS, "g", b"after")
    lab.run(1.0)
    survivors = ("REG", "NETWORK", ("#ua2#a2", "#ub1#b1"))
    seen = [[describe(m) for m in c.receive_all()] for c in (ua2, ub1)]
    for s in seen:
        assert ("TRANS",) in s and survivors in s, s
        assert s.index(("TRANS",)) < s.index(survivors) < s.index(("DATA", b"after"))
        assert ("DATA", b"during") in s
    assert seen[0] == seen[1], "the two sites saw the change at different points"
    ids = [m.group_id for c in (ua2, ub1) for m in c.messages if m.is_membership and m.is_regular]
    assert sp.equal_group_ids(ids[0], ids[1])
    old = [m.group_id for c in (ua2, ub1) for m in c.messages if m.is_membership and m.is_transitional]
    assert len(old) == 2 and sp.equal_group_ids(old[0], old[1])
    assert not sp.equal_group_ids(old[0], ids[0]), "TRANSITION must carry the id before the change"
    core = lab.daemons["a2"].core
    assert core.rosters_sent == 1 and lab.daemons["b1"].core.gone == {"a1"}


def test_a_hop_datagram_from_an_address_that_is_no_daemons_hop_port_is_dropped():
    lab = SitesLab()
    lab.run(2.5)
    b1 = lab.daemons["b1"]
    before = b1.orderer.gateway.counters.copy()
    b1.perform(b1.d.hop_datagram(b"\x00" * 40, ("127.0.41.99", 4815), lab.now))
    assert b1.orderer.hop_strangers == 1 and b1.orderer.gateway.counters == before


class FakeOrderer(sp.Orderer):
    def __init__(self):
        self.submitted = []

    def submit(self, msg, urgent=False):
        self.submitted.append(msg)
        return True


def roster(origin, ring_seq, members):
    return sp.DaemonMessage(sp.STATE, origin, "#roster#%s" % origin, sp.AGREED_MESS, [sp.ROSTER_GROUP],
                            data="\n".join([str(ring_seq)] + members).encode())


def test_only_the_new_representative_of_a_ring_that_lost_daemons_sends_a_roster():
    cores = {n: sp.SitesGroupCore(n, FakeOrderer(), [["a1", "a2", "a3"], ["b1"]]) for n in ("a2", "a3")}
    for core in cores.values():
        core.configuration_change(sp.ConfigurationChange(sp.CONF_REGULAR, ["a1", "a2", "a3"], [], (4, "a1", 1)), 1)
        core.configuration_change(sp.ConfigurationChange(sp.CONF_REGULAR, ["a2", "a3"], [], (8, "a2", 1)), 2)
    assert [m.groups for m in cores["a2"].orderer.submitted] == [[sp.ROSTER_GROUP]]
    assert cores["a3"].orderer.submitted == []
    body = cores["a2"].orderer.submitted[0].data.decode().split("\n")
    assert body == ["8", "a2", "a3"]


def test_a_roster_of_an_older_ring_than_one_applied_changes_nothing():
    core = sp.SitesGroupCore("b1", FakeOrderer(), [["a1", "a2", "a3"], ["b1"]])
    core.deliver(roster("a2", 8, ["a2", "a3"]))
    assert core.gone == {"a1"} and core.network_changes == 1
    core.deliver(roster("a1", 4, ["a1", "a2", "a3"]))  # submitted before the crash, came late
    assert core.gone == {"a1"} and core.network_changes == 1
    core.deliver(roster("a3", 12, ["a3"]))
    assert core.gone == {"a1", "a2"}


def _merged_exchange(cores):
    """a2 and b1 (a1 represents site 0 until it crashes) come from two views and merge."""
    for name, core in cores.items():
        ring = ["a1", "a2"] if name != "b1" else ["b1"]
        core.configuration_change(sp.ConfigurationChange(sp.CONF_REGULAR, ring, [], (4, ring[0], 1)), 1)
        site = 0 if name != "b1" else 1
        core.site_view_change(sp.SiteViewChange(sp.CONF_TRANSITIONAL, 1, [site], "cut"))
        core.site_view_change(sp.SiteViewChange(sp.CONF_REGULAR, 1, [site], "cut"))
    for core in cores.values():
        core.site_view_change(sp.SiteViewChange(sp.CONF_TRANSITIONAL, 2, [0] if core is not cores["b1"] else [1], "heal"))
        core.site_view_change(sp.SiteViewChange(sp.CONF_REGULAR, 2, [0, 1], "sites joined"))


def _deliver_everywhere(cores, msgs):
    for msg in msgs:
        for core in cores.values():
            core.deliver(msg)


def test_a_representative_that_crashes_during_the_state_exchange_is_replaced_by_the_next():
    """After a merge each site's representative sends its site's STATE; a1 crashes before
    its STATE got into the order: the next representative of site 0 (a2) sends it when its
    ring re-forms, and the exchange ends everywhere, then what was held meanwhile."""
    cores = {n: sp.SitesGroupCore(n, FakeOrderer(), [["a1", "a2"], ["b1"]]) for n in ("a2", "b1")}
    _merged_exchange(cores)
    assert cores["a2"].orderer.submitted == [] and cores["a2"].exchange is not None
    _deliver_everywhere(cores, cores["b1"].orderer.submitted)
    data = sp.DaemonMessage(sp.DATA, "b1", "#u#b1", sp.AGREED_MESS, ["g"], data=b"held")
    _deliver_everywhere(cores, [data])
    assert all(len(c.exchange.held) == 1 and c.exchange.waiting == {0} for c in cores.values())
    cores["a2"].configuration_change(sp.ConfigurationChange(sp.CONF_REGULAR, ["a2"], [], (8, "a2", 1)), 2)
    sent = cores["a2"].orderer.submitted
    assert [m.groups[0] for m in sent] == [sp.SITES_STATE_GROUP, sp.ROSTER_GROUP]
    assert cores["a2"].states_resent == 1
    assert sent[0].data.decode().split("\n")[0].split("\t")[3] == "a2"  # its ring now
    _deliver_everywhere(cores, sent)
    for name, core in cores.items():
        assert core.exchange is None and core.exchanges_done == 1, name
        assert core.gone == {"a1"}, name
        assert any("group state exchange done" in line for line in core.log), name


def test_a_new_representatives_state_voids_the_parts_its_crashed_predecessor_sent():
    cores = {n: sp.SitesGroupCore(n, FakeOrderer(), [["a1", "a2"], ["b1"]]) for n in ("a2", "b1")}
    _merged_exchange(cores)
    _deliver_everywhere(cores, cores["b1"].orderer.submitted)
    # a1's first part of two got into the order before it crashed
    part = sp.DaemonMessage(sp.STATE, "a1", "#sitestate#a1", sp.AGREED_MESS, [sp.SITES_STATE_GROUP, "2"],
                            0 << 16 | 2, data=b"4\t0\t1\ta1 a2\ng\tua1\ta1")
    _deliver_everywhere(cores, [part])
    cores["a2"].configuration_change(sp.ConfigurationChange(sp.CONF_REGULAR, ["a2"], [], (8, "a2", 1)), 2)
    _deliver_everywhere(cores, cores["a2"].orderer.submitted)
    for core in cores.values():
        assert core.exchange is None and "g" not in core.groups  # ua1 was at the crashed a1


def test_what_the_state_exchange_holds_has_a_limit_over_which_clients_are_not_read():
    cores = {n: sp.SitesGroupCore(n, FakeOrderer(), [["a1", "a2"], ["b1"]]) for n in ("a2", "b1")}
    core = cores["a2"]
    assert core.held_limit_bytes == sp.HELD_LIMIT_ROTATIONS * sp.RingSettings().global_window_packets \
        * sp.RingSettings().max_packet_bytes
    core.held_limit_bytes = 1000
    _merged_exchange(cores)
    big = sp.DaemonMessage(sp.DATA, "b1", "#u#b1", sp.AGREED_MESS, ["g"], data=b"x" * 600)
    core.deliver(big)
    assert not core.held_over_limit
    core.deliver(big)
    assert core.held_over_limit and core.held_limit_exceeded == 1
    assert any("more than the limit of 0 KB" in line for line in core.log)
    _deliver_everywhere(cores, cores["b1"].orderer.submitted)
    cores["a2"].configuration_change(sp.ConfigurationChange(sp.CONF_REGULAR, ["a2"], [], (8, "a2", 1)), 2)
    _deliver_everywhere(cores, cores["a2"].orderer.submitted)
    assert core.exchange is None and not core.held_over_limit and core.held_peak_bytes == 1200


def test_several_segments_run_sites_only_with_link_protocol():
    config = sp.parse_spread_conf(CONF)
    assert sp.uses_sites(config)
    p = sp.sites_plan(config)
    assert p.sites == LAYOUT and p.costs == [[0, 1], [1, 0]]
    assert p.hop_addresses == {"a1": ("127.0.40.11", 4805), "a2": ("127.0.40.12", 4805),
                               "b1": ("127.0.41.11", 4815)}
    assert not sp.uses_sites(sp.parse_spread_conf(CONF.replace("LinkProtocol = Hop", "")))
    one = "Spread_Segment 239.255.40.1:4803 {\n a1 127.0.0.1\n a2 127.0.0.2\n}\nLinkProtocol = Hop\n"
    assert not sp.uses_sites(sp.parse_spread_conf(one))


def test_a_hop_port_that_is_another_daemons_port_is_refused_with_both_named():
    clash = CONF.replace("4813", "4805").replace("b1 127.0.41.11", "b1 127.0.40.11")
    with pytest.raises(sp.ConfigError, match=r"a1: its HOP port 127.0.40.11:4805 .* segment port of b1"):
        sp.sites_plan(sp.parse_spread_conf(clash))


def test_the_sites_table_shows_sites_representatives_links_and_trees(monkeypatch):
    lab, clients = started_lab()
    snap = lab.daemons["a1"].ring_snapshot(lab.now)
    rows = dict(sp.sites_status_rows(dict(snap["sites"], name="a1")))
    assert rows["site 0"] == "a1, a2; representative a1"
    assert rows["site 1"].startswith("b1; representative b1#")
    link = rows["HOP link to site 1"]
    assert link.startswith("peer b1#") and "RTT " in link and "window 0/512" in link
    assert "retransmitted 0" in link and "NACKs out/in 0/0" in link
    assert rows["tree of site 0"] == "0->1" and rows["tree of site 1"] == "1->0"
    a2 = lab.daemons["a2"].ring_snapshot(lab.now)
    assert "not its site's representative" in dict(sp.sites_status_rows(dict(a2["sites"], name="a2")))["HOP links"]
    monkeypatch.setattr(sp, "Table", None)
    text = sp.render_sites_status(snap)
    assert text.startswith("SITES a1") and "HOP link to site 1" in text


def test_a_site_killed_is_gone_in_the_table_and_its_members_leave_with_a_network_change():
    lab, (ua1, ua2, ub1) = started_lab()
    lab.crashed.add("b1")
    lab.run(4.0)
    for c in (ua1, ua2):
        seen = [describe(m) for m in c.receive_all()]
        assert ("REG", "NETWORK", ("#ua1#a1", "#ua2#a2")) in seen and ("TRANS",) in seen
    rows = dict(sp.sites_status_rows(dict(lab.daemons["a1"].ring_snapshot(lab.now)["sites"], name="a1")))
    assert rows["view of the sites"] == "1: sites 0" and rows["site 1 (gone)"] == "b1"
    assert rows["HOP links"] == "none (no other site in the view)"
    assert any("network change: view 1 of the sites: [0] (sites [1] gone)" in line
               for line in lab.daemons["a2"].log)


def lab_with_a_late_daemon(late, lab=None):
    """The sites start without `late`; a client at each other daemon joins and sends; then
    `late` starts (a new process: incarnation 9)."""
    lab = lab or SitesLab()
    lab.crashed.add(late)
    lab.run(2.5)
    clients = [Client(lab, name, "u" + name, 1) for name in lab.ips if name != late]
    for c in clients:
        c.join("g")
        lab.run(0.3)
    clients[0].multicast(sp.AGREED_MESS, "g", b"before")
    lab.run(0.5)
    lab.restart(late)
    lab.run(2.0)
    return lab, clients


def burst_everywhere(lab, clients, count=6):
    """Every client sends `count` messages, AGREED and SAFE by turns; each client's data
    (what the clients had before is dropped first)."""
    for c in clients:
        c.receive_all()
        c.messages = []
    for i in range(count):
        for c in clients:
            c.multicast(sp.SAFE_MESS if i % 2 else sp.AGREED_MESS, "g", b"%s %d" % (c.private_group.encode(), i))
        lab.run(0.003)
    lab.run(1.5)
    return [[describe(m) for m in c.receive_all() if not m.is_membership] for c in clients]


def table_of(daemon):
    core = daemon.d.core
    return {name: (dict(g.members), core.group_id(g)) for name, g in core.groups.items()}


@pytest.mark.parametrize("late", ["a2", "a1"])
def test_a_daemon_that_joins_its_site_after_the_traffic_began_is_brought_up_to_date(late):
    # a1 late is the hard case: first in spread.conf, it would be the representative at once
    lab, clients = lab_with_a_late_daemon(late)
    d = lab.daemons[late]
    assert d.fatal is None
    assert any("waits for the sites' state from" in line for line in d.log)
    other = "a1" if late == "a2" else "a2"
    assert any("sends the sites' state to %s" % late in line for line in lab.daemons[other].log)
    assert table_of(d) == table_of(lab.daemons[other]) == table_of(lab.daemons["b1"])
    rows = dict(sp.sites_status_rows(dict(d.ring_snapshot(lab.now)["sites"], name=late)))
    assert rows["up to date"] == "yes (states sent 0, received 1)"
    newcomer = Client(lab, late, "u" + late, 1)
    newcomer.join("g")
    lab.run(0.5)
    everyone = clients + [newcomer]
    last = [memberships(c)[-1] for c in everyone]
    assert all(sorted(m.members) == ["#ua1#a1", "#ua2#a2", "#ub1#b1"] for m in last)
    assert all(sp.equal_group_ids(last[0].group_id, m.group_id) for m in last)
    orders = burst_everywhere(lab, everyone)
    assert len(orders[0]) == 18 and orders[0] == orders[1] == orders[2]
    # the representative is the first daemon of spread.conf again, and b1's link goes to it
    assert all(lab.daemons[n].orderer.gateway.representative == "a1" for n in ("a1", "a2"))
    assert lab.daemons["b1"].orderer.gateway.links[0].peer[0] == "a1"


def test_a_late_daemon_never_takes_the_links_before_it_is_up_to_date():
    lab = SitesLab()
    lab.crashed.add("a1")
    lab.run(2.5)
    Client(lab, "a2", "ua2", 1).join("g")
    lab.run(0.3)
    lab.restart("a1")
    seen = []
    while lab.now < 5.0:  # every step: is a1 the representative, and is it up to date?
        lab.run(0.001)
        o = lab.daemons["a1"].orderer
        seen.append((o.gateway.representative == "a1", o.synced))
    assert (True, True) in seen and (True, False) not in seen
    assert lab.daemons["a1"].orderer.gateway.wide


def test_a_client_of_a_late_daemon_waits_and_then_joins_with_everything_in_order():
    """Its session is accepted at once; its join and its messages wait until the daemon is
    up to date, then go into the one order."""
    lab = SitesLab()
    lab.crashed.add("a2")
    lab.run(2.5)
    ua1, ub1 = Client(lab, "a1", "ua1", 1), Client(lab, "b1", "ub1", 1)
    for c in (ua1, ub1):
        c.join("g")
        lab.run(0.3)
    lab.restart("a2")
    ua2 = Client(lab, "a2", "ua2", 1)  # at once, before a2 is in the ring
    ua2.join("g")
    ua2.multicast(sp.AGREED_MESS, "g", b"early")
    assert lab.daemons["a2"].orderer.waiting  # (queued: a2 is not up to date)
    rows = dict(sp.sites_status_rows(dict(lab.daemons["a2"].ring_snapshot(lab.now)["sites"], name="a2")))
    assert rows["up to date"].startswith("not yet: its ring is agreeing who sends it (0 messages "
                                         "held back, 2 of its clients' waiting)")
    lab.run(2.0)
    everyone = [ua1, ua2, ub1]
    seen = [[describe(m) for m in c.receive_all()] for c in everyone]
    assert all(("DATA", b"early") in s for s in seen)
    assert [m for m in seen[0] if m[0] == "DATA"] == [m for m in seen[1] if m[0] == "DATA"] \
        == [m for m in seen[2] if m[0] == "DATA"]
    assert all(("REG", "JOIN", ("#ua1#a1", "#ua2#a2", "#ub1#b1")) in s for s in seen)


@pytest.mark.parametrize("victim", ["a2", "a1"])
def test_a_daemon_restarted_before_its_ring_noticed_loses_its_earlier_members_at_every_site(victim):
    """kill -9 and a new process at once: the ring goes from the old incarnation to the new
    one with no ring between, so no ROSTER of a loss; the ROSTER of the new ring names it
    restarted, and every daemon of both sites drops what its earlier incarnation had."""
    lab, clients = started_lab()
    lab.run(0.5)
    lab.crashed.add(victim)
    lab.run(0.05)
    lab.restart(victim)
    lab.run(3.0)
    assert not any(d.fatal for d in lab.daemons.values())
    rings = [l for l in lab.daemons["a1" if victim == "a2" else "a2"].log if "installed ring" in l]
    assert "%s#9" % victim in rings[-1] and len(rings) == 2  # (startup, then the new one)
    tables = [table_of(lab.daemons[n]) for n in ("a1", "a2", "b1")]
    assert tables[0] == tables[1] == tables[2]
    stayed = [c for c in clients if not c.private_group.endswith("#" + victim)]
    assert sorted(tables[0]["g"][0]) == sorted(c.private_group for c in stayed)
    for c in stayed:
        seen = [describe(m) for m in c.receive_all()]
        assert seen[-2:] == [("TRANS",), ("REG", "NETWORK", tuple(sorted(x.private_group for x in stayed)))]
    again = Client(lab, victim, "u" + victim, 1)  # the same private name as before
    again.join("g")
    lab.run(0.5)
    everyone = stayed + [again]
    last = [memberships(c)[-1] for c in everyone]
    assert all(sorted(m.members) == ["#ua1#a1", "#ua2#a2", "#ub1#b1"] for m in last)
    assert all(sp.equal_group_ids(last[0].group_id, m.group_id) for m in last)
    orders = burst_everywhere(lab, everyone, 4)
    assert len(orders[0]) == 12 and orders[0] == orders[1] == orders[2]


@pytest.mark.parametrize("busy", [None, "a1", "a2"])
def test_daemons_of_a_site_that_formed_rings_of_their_own_at_the_start_go_on_as_one(busy):
    """a1 and a2 cannot hear each other for 2 s at the start: each makes a ring of its own and
    represents it (links to b1); a client joins at `busy` meanwhile. When they hear each
    other, a daemon that holds nothing worth keeping takes the other's state (standing down
    meanwhile), or, if neither holds anything, both start afresh; nobody stops."""
    lab = SitesLab()
    lab.ring_cut = True
    lab.run(2.0)
    assert lab.daemons["a2"].orderer.gateway.wide and lab.daemons["a1"].orderer.gateway.wide
    clients = [Client(lab, busy, "u" + busy, 1)] if busy else []
    for c in clients:
        c.join("g")
    lab.run(0.5)
    lab.ring_cut = False
    lab.run(3.0)
    assert not any(d.fatal for d in lab.daemons.values())
    if busy:
        idle = "a2" if busy == "a1" else "a1"
        assert any("stands down as the representative of site 0" in l for l in lab.daemons[idle].log)
        assert any("sends the sites' state to %s" % idle in l for l in lab.daemons[busy].log)
    else:
        assert all(any("starts with the sites' state afresh (no daemon of the ring holds" in l
                       for l in lab.daemons[n].log) for n in ("a1", "a2"))
    assert all(lab.daemons[n].orderer.gateway.representative == "a1" for n in ("a1", "a2"))
    clients += [Client(lab, name, "u" + name, 2) for name in IPS if name != busy]
    for c in clients[1 if busy else 0:]:
        c.join("g")
        lab.run(0.3)
    orders = burst_everywhere(lab, clients, 4)
    assert len(orders[0]) == 12 and all(o == orders[0] for o in orders)


def test_two_rings_of_one_site_split_after_the_start_both_with_traffic_the_one_not_kept_stops():
    """A site of two (no split_quorum): its ring formed, then split; both rings went on under
    the site's one epoch, with traffic: two streams of one epoch, which nothing merges."""
    lab = SitesLab()
    lab.run(1.0)
    lab.ring_cut = True
    lab.run(2.0)
    for name in ("a1", "a2"):
        Client(lab, name, "u" + name, 1).join("g")
    lab.run(0.5)
    lab.ring_cut = False
    lab.run(3.0)
    assert lab.daemons["a1"].fatal is None
    fatal = lab.daemons["a2"].fatal
    assert fatal and "the site was split in two rings, both with traffic" in fatal


def test_two_rings_of_one_site_that_started_apart_both_with_traffic_go_on_as_one():
    """a1 and a2 cannot hear each other at the start and each starts afresh, as its own epoch
    (its start time), with a client that joins: where they meet, the older epoch's state is
    kept and the other daemon takes it (the others refused the newer epoch's HELLO while the
    older lived), closing its own view first: nobody stops (until branch s13-seeds, one did)."""
    lab = SitesLab()
    lab.ring_cut = True
    lab.run(2.0)
    clients = [Client(lab, name, "u" + name, 1) for name in ("a1", "a2")]
    for c in clients:
        c.join("g")
    lab.run(0.5)
    epochs = {n: lab.daemons[n].orderer.gateway.epoch for n in ("a1", "a2")}
    assert epochs["a1"] != epochs["a2"]
    lab.ring_cut = False
    lab.run(3.0)
    assert not any(d.fatal for d in lab.daemons.values())
    kept = min(epochs, key=epochs.get)
    other = "a2" if kept == "a1" else "a1"
    assert any("sends the sites' state to %s" % other in l for l in lab.daemons[kept].log)
    assert lab.daemons[other].orderer.gateway.epoch == epochs[kept]
    orders = burst_everywhere(lab, clients, 4)  # (both clients, one order)
    assert len(orders[0]) == 8 and orders[0] == orders[1]


THREE = """
Spread_Segment 239.255.40.1:4803 {
    a1 127.0.40.11
    a2 127.0.40.12
    a3 127.0.40.13
}
Spread_Segment 239.255.41.1:4813 {
    b1 127.0.41.11
}
LinkProtocol = Hop
"""
THREE_IPS = {"a1": "127.0.40.11", "a2": "127.0.40.12", "a3": "127.0.40.13", "b1": "127.0.41.11"}


def three_lab():
    return SitesLab([["a1", "a2", "a3"], ["b1"]], THREE_IPS, THREE)



def three_lab_in_group_g():
    """three_lab with its ring formed and a client of each daemon in group g."""
    lab = three_lab()
    lab.run(2.5)
    clients = {n: Client(lab, n, "u" + n, 1) for n in THREE_IPS}
    for c in clients.values():
        c.join("g")
        lab.run(0.3)
    return lab, clients

def test_a_third_daemon_joins_a_site_of_two_and_holds_the_same_table_and_order():
    lab, clients = lab_with_a_late_daemon("a3", three_lab())
    d3 = lab.daemons["a3"]
    assert d3.fatal is None
    assert table_of(d3) == table_of(lab.daemons["a1"]) == table_of(lab.daemons["a2"])
    ua3 = Client(lab, "a3", "ua3", 1)
    ua3.join("g")
    lab.run(0.5)
    everyone = clients + [ua3]
    orders = burst_everywhere(lab, everyone, 4)
    assert len(orders[0]) == 16 and all(o == orders[0] for o in orders)


def test_the_state_comes_from_the_next_daemon_when_its_sender_dies_first():
    lab = three_lab()
    lab.crashed.add("a3")
    lab.run(2.5)
    clients = [Client(lab, n, "u" + n, 1) for n in ("a1", "a2", "b1")]
    for c in clients:
        c.join("g")
        lab.run(0.3)
    lab.restart("a3")
    # a1 (first in spread.conf) is the sender: killed as it submits the state, before its
    # packets leave (lab.crashed drops them)
    while not any("sends the sites' state" in line for line in lab.daemons["a1"].log):
        lab.run(0.0005)
        assert lab.now < 6.0
    lab.crashed.add("a1")
    lab.run(4.0)
    d3 = lab.daemons["a3"]
    assert d3.fatal is None
    assert any("sends the sites' state to a3" in line for line in lab.daemons["a2"].log)
    assert sum("waits for the sites' state" in line for line in d3.log) == 2
    assert table_of(d3) == table_of(lab.daemons["a2"]) == table_of(lab.daemons["b1"])
    assert sorted(table_of(d3)["g"][0]) == ["#ua2#a2", "#ub1#b1"]
    ua3 = Client(lab, "a3", "ua3", 1)
    ua3.join("g")
    lab.run(0.5)
    everyone = clients[1:] + [ua3]
    orders = burst_everywhere(lab, everyone, 4)
    assert len(orders[0]) == 12 and all(o == orders[0] for o in orders)


def test_a_state_that_does_not_decode_stops_the_late_daemon_with_a_clear_error():
    lab = SitesLab()
    lab.crashed.add("a2")
    lab.run(2.5)
    Client(lab, "a1", "ua1", 1).join("g")
    lab.run(0.3)
    gateway = lab.daemons["a1"].orderer.gateway
    real = gateway.export_state

    def forged():
        state = real()
        state["streams"]["7"] = state["streams"]["0"]  # a site that is not in spread.conf
        return state
    gateway.export_state = forged
    lab.restart("a2")
    lab.run(2.0)
    d = lab.daemons["a2"]
    assert d.fatal and "does not decode" in d.fatal and "'7' is not a site" in d.fatal
    assert any(line.startswith("ERROR: the sites' state sent by a1 does not decode") for line in d.log)


def test_bad_states_are_refused_field_by_field():
    lab, _ = started_lab()
    gw = lab.daemons["a2"].orderer.gateway
    good = gw.export_state()
    gw.import_state(json.loads(json.dumps(good)), lab.now)  # (what the ring carries: JSON)
    for change in (lambda s: s.update(sites=3), lambda s: s["numbers"].pop(),
                   lambda s: s.update(representative="b1"), lambda s: s["kept"].update({"0": "%%%"}),
                   lambda s: s["applied_seq"].update({"0": -1}), lambda s: s.update(gate=[[1, 2]])):
        bad = json.loads(json.dumps(good))
        change(bad)
        with pytest.raises((ValueError, KeyError, TypeError)):
            gw.import_state(bad, lab.now)


def test_daemons_that_start_together_are_never_late():
    lab, clients = started_lab()
    assert not any(d.fatal for d in lab.daemons.values())


def test_a_segment_without_daemons_is_no_site():
    empty = CONF.replace("LinkProtocol = Hop", "Spread_Segment 239.255.42.1:4823 {\n}\nLinkProtocol = Hop")
    with pytest.raises(sp.ConfigError, match=r"Spread_Segment 2 \(239.255.42.1:4823\) has no daemon"):
        sp.sites_plan(sp.parse_spread_conf(empty))


def test_hop_rate_mbit_sets_the_links_bucket():
    args = sp.build_parser().parse_args(["daemon", "--hop-rate-mbit", "2"])
    assert sp.hop_settings_of(args).rate_bytes_s == 250000
    assert sp.hop_settings_of(sp.build_parser().parse_args(["daemon"])).rate_bytes_s == sp.HopSettings().rate_bytes_s
    with pytest.raises(SystemExit):
        sp.build_parser().parse_args(["daemon", "--hop-rate-mbit", "0"])


def test_messages_the_wan_has_not_answered_count_in_the_backlog_that_stops_reading_clients():
    lab, (ua1, ua2, ub1) = started_lab()
    before = [lab.daemons[n].orderer.backlog().messages for n in ("a1", "a2")]
    lab.wan_cut = True  # (shorter than the dead-peer rule: the link holds)
    for i in range(30):
        ua2.multicast(sp.AGREED_MESS, "g", b"m%d" % i)
    lab.run(0.5)
    held = [lab.daemons[n].orderer.backlog().messages for n in ("a1", "a2")]
    assert held[0] == held[1] >= before[0] + 30, "every daemon of the site holds them alike"
    assert lab.daemons["a1"].orderer.ring_orderer.backlog().messages == 0, "not in the ring's queue"
    lab.wan_cut = False
    lab.run(1.0)
    assert [lab.daemons[n].orderer.backlog().messages for n in ("a1", "a2")] == before
    assert len([m for m in ub1.receive_all() if not m.is_membership]) == 30


def test_forged_hop_datagrams_from_a_daemons_own_address_change_nothing():
    import random as _random
    lab, (ua1, ua2, ub1) = started_lab()
    rng = _random.Random(5)
    captured = []
    original = lab.pump

    def capture(name):  # keep a copy of the HOP datagrams a1 sends
        for action in lab.daemons[name].actions:
            if isinstance(action, sp.HopDatagram) and name == "a1":
                captured.append(action.packet)
        original(name)

    lab.pump = capture
    ua1.multicast(sp.AGREED_MESS, "g", b"before")
    lab.run(0.5)
    b1 = lab.daemons["b1"]
    for i in range(300):
        raw = bytearray(rng.choice(captured)) if captured and i % 3 else bytearray(rng.randbytes(rng.randrange(1, 200)))
        for _ in range(rng.randrange(1, 4)):
            if raw:
                raw[rng.randrange(len(raw))] = rng.randrange(256)
        b1.perform(b1.d.hop_datagram(bytes(raw), lab.plan.hop_addresses["a1"], lab.now))
        lab.pump("b1")
    lab.run(0.5)
    ub1.multicast(sp.AGREED_MESS, "g", b"after")
    lab.run(1.0)
    seen = [[describe(m) for m in c.receive_all() if not m.is_membership] for c in (ua1, ua2, ub1)]
    assert seen[0] == seen[1] == seen[2] and seen[0][-2:] == [("DATA", b"before"), ("DATA", b"after")]
    assert not b1.fatal and b1.orderer.gateway.live_sites == [0, 1]
    gw = b1.orderer.gateway
    dropped = sum(v for k, v in gw.counters.items() if k.startswith("hop_dropped")) + sum(
        v for k, v in gw.links[0].counters.items() if k.startswith("dropped"))
    assert captured and dropped > 100, "the forged datagrams were not seen and dropped"


def test_after_a_heal_every_client_gets_the_merged_membership_with_one_vs_set_per_side():
    lab, clients = started_lab()
    def take(c):
        got, c.messages = list(c.receive_all()), []
        return got

    for c in clients:
        take(c)
    lab.wan_cut = True
    lab.run(8.0)
    apart = {c.private_group: [describe(m) for m in take(c)] for c in clients}
    assert apart["#ua1#a1"][-1] == ("REG", "NETWORK", ("#ua1#a1", "#ua2#a2"))
    assert apart["#ub1#b1"][-1] == ("REG", "NETWORK", ("#ub1#b1",))
    lab.wan_cut = False
    lab.run(8.0)
    everyone = ("#ua1#a1", "#ua2#a2", "#ub1#b1")
    merged = {}
    for c in clients:
        seen = [m for m in take(c) if m.is_membership]
        assert [describe(m) for m in seen] == [("TRANS",), ("REG", "NETWORK", everyone)], c.private_group
        merged[c.private_group] = seen[-1]
    # the same group id and vs_sets everywhere: one set per side of the partition
    ids = [m.group_id for m in merged.values()]
    assert ids[0] == ids[1] == ids[2]
    for m in merged.values():
        assert sorted(sorted(v) for v in m.vs_sets) == [["#ua1#a1", "#ua2#a2"], ["#ub1#b1"]]
    assert all(d.orderer.gateway.view_seq == lab.daemons["a1"].orderer.gateway.view_seq
               for d in lab.daemons.values())
    # and the group goes on in one order at every daemon
    clients[2].multicast(sp.AGREED_MESS, "g", b"after the heal")
    clients[0].multicast(sp.AGREED_MESS, "g", b"and another")
    lab.run(1.0)
    orders = [[m.data for m in take(c) if not m.is_membership] for c in clients]
    assert orders[0] == orders[1] == orders[2] and sorted(orders[0]) == [b"after the heal", b"and another"]


def test_unreliable_reaches_the_members_at_the_other_site_and_no_one_else():
    """From a2 (not its site's representative), UNRELIABLE to g: ua1 and ub1 get it once, a
    client of b1 that is in another group gets nothing, and with SELF_DISCARD the sender does
    not get its own; the AGREED message after them is in one order everywhere."""
    lab, (ua1, ua2, ub1) = started_lab()
    other = Client(lab, "b1", "ob1", 9)
    other.join("elsewhere")
    lab.run(0.3)
    other.receive_all()
    for i in range(5):
        ua2.multicast(sp.UNRELIABLE_MESS, "g", b"u %d" % i)
    ua2.multicast(sp.UNRELIABLE_MESS | sp.SELF_DISCARD, "g", b"not to me")
    lab.run(0.05)
    ua2.multicast(sp.AGREED_MESS, "g", b"agreed")
    lab.run(1.0)
    got = {c.private_group: [m.data for m in c.receive_all() if not m.is_membership] for c in (ua1, ua2, ub1)}
    want = [b"u %d" % i for i in range(5)] + [b"not to me"]
    for name in ("#ua1#a1", "#ub1#b1"):
        assert sorted(d for d in got[name] if d != b"agreed") == sorted(want) and got[name][-1] == b"agreed", name
    assert sorted(got["#ua2#a2"]) == sorted([b"u %d" % i for i in range(5)] + [b"agreed"])
    assert [m for m in other.receive_all() if not m.is_membership] == []
    gw = lab.daemons["b1"].orderer.gateway
    assert gw.counters["site_unreliable_delivered"] == 6
    assert lab.daemons["a1"].orderer.gateway.counters["site_unreliable_forwarded"] == 6


def memberships_seen(client):
    return [("TRANS",) if m.is_transitional else
            ("REG", m.caused_by, tuple(sorted(m.members)), sorted(sorted(v) for v in m.vs_sets or []))
            for m in client.receive_all() if m.is_membership]


@pytest.mark.parametrize("apart", ["a3", "a1"])
def test_a_site_split_in_two_rings_goes_on_on_the_quorum_side_and_the_fork_rejoins(apart):
    """A site of three whose LAN splits (`apart` alone: a3, or a1, the first in spread.conf):
    the two others keep the site's epoch, `apart` forks (a new incarnation, a view of its own).
    When the LAN heals, `apart` takes the kept state and its client comes back: every client
    gets TRANSITION, then REG_MEMB CAUSED_BY_NETWORK with everyone in two vs_sets, and one
    order after."""
    lab, clients = three_lab_in_group_g()
    for c in clients.values():
        memberships_seen(c)
    lab.lan_apart = {apart}
    lab.run(6.0)
    assert not any(d.fatal for d in lab.daemons.values())
    assert any("goes on as a new incarnation" in line for line in lab.daemons[apart].log)
    everyone = tuple(sorted(c.private_group for c in clients.values()))
    kept = tuple(m for m in everyone if not m.endswith("#" + apart))
    for name, c in clients.items():
        seen = memberships_seen(c)
        alone = ("#u%s#%s" % (apart, apart),)
        assert seen[-2:] == [("TRANS",), ("REG", "NETWORK", alone if name == apart else kept,
                                          [list(alone if name == apart else kept)])], (name, seen)
    lab.lan_apart = set()
    lab.run(6.0)
    assert not any(d.fatal for d in lab.daemons.values())
    assert any("REJOIN" in line for line in lab.daemons[apart].log)
    for name, c in clients.items():
        seen = memberships_seen(c)
        assert seen[-2:] == [("TRANS",), ("REG", "NETWORK", everyone,
                                          sorted([list(kept), ["#u%s#%s" % (apart, apart)]]))], (name, seen)
    tables = [table_of(lab.daemons[n]) for n in THREE_IPS]
    assert all(t == tables[0] for t in tables)
    orders = burst_everywhere(lab, list(clients.values()), 4)
    assert len(orders[0]) == 16 and all(o == orders[0] for o in orders)


def test_two_rings_of_a_site_of_two_that_votes_the_second_daemon_rejoins_instead_of_stopping():
    """As above, with --split-quorum-min-daemons 2: a1 (half of the last ring, and its first)
    keeps the site; a2 forked, takes a1's state and its client comes back (REJOIN)."""
    lab = SitesLab(hop_settings=sp.HopSettings(split_quorum_min_daemons=2))
    lab.run(2.5)
    clients = [Client(lab, name, "u" + name, 1) for name in IPS]
    for c in clients:
        c.join("g")
        lab.run(0.3)
    lab.lan_apart = {"a2"}
    lab.run(6.0)
    assert any("goes on as a new incarnation" in line for line in lab.daemons["a2"].log)
    lab.lan_apart = set()
    lab.run(6.0)
    assert not any(d.fatal for d in lab.daemons.values())
    everyone = ("#ua1#a1", "#ua2#a2", "#ub1#b1")
    for c in clients:
        seen = memberships_seen(c)
        assert seen[-2:] == [("TRANS",), ("REG", "NETWORK", everyone, [["#ua1#a1", "#ub1#b1"], ["#ua2#a2"]])], seen
    orders = burst_everywhere(lab, clients, 4)
    assert len(orders[0]) == 12 and all(o == orders[0] for o in orders)


def client_sequence(client):
    """What a client got, memberships and data in one list (REG_MEMB with its vs_sets)."""
    return [("DATA", m.data) if not m.is_membership else ("TRANS",) if m.is_transitional else
            ("REG", m.caused_by, tuple(sorted(m.members)), sorted(sorted(v) for v in m.vs_sets or []))
            for m in client.receive_all()]


def test_a_fork_that_ends_in_a_view_with_other_sites_gives_its_clients_one_transition():
    """The contract between SiteGateway.close_fork and SitesGroupCore.site_sync. a3 is cut off
    from its site and forks (its client sends all along); the LAN heals 1.3 s later, before a3
    has left b1's site out of its view: the fork ends in a transitional view of site 0 alone,
    whose TRANSITION (b1's member is lost) is the only one its client gets before the REG_MEMB
    of the REJOIN; the fork's messages, with its ring's ROSTER, held until then, are delivered
    in that transitional view (no REG_MEMB of the fork's ring naming ub1 after it). The kept
    side (b1's client too) sees a3's client leave and come back: one REG_MEMB with two vs_sets.
    (On the branch that wrote it, the kept side also left b1's site out for a while, so the
    REJOIN came in a view of site 0 alone; with the takeover rule and the merge-kill watch
    merged, the sites' view keeps b1 and the REJOIN's REG_MEMB names everyone at once.)"""
    lab, clients = three_lab_in_group_g()
    for c in clients.values():
        c.receive_all()
        c.messages = []
    lab.lan_apart = {"a3"}
    sent = []
    for i in range(26):
        sent.append(b"f%d" % i)
        clients["a3"].multicast(sp.AGREED_MESS, "g", sent[-1])
        lab.run(0.05)
    lab.lan_apart = set()
    lab.run(6.0)
    assert not any(d.fatal for d in lab.daemons.values())
    ua1, ua2, ua3, ub1 = "#ua1#a1", "#ua2#a2", "#ua3#a3", "#ub1#b1"
    fork = client_sequence(clients["a3"])
    assert fork == [("TRANS",)] + [("DATA", d) for d in sent] + [
        ("REG", "NETWORK", (ua1, ua2, ua3, ub1), [[ua1, ua2, ub1], [ua3]])], fork
    kept = client_sequence(clients["a1"])
    assert kept == [
        ("TRANS",), ("REG", "NETWORK", (ua1, ua2, ub1), [[ua1, ua2, ub1]]),
        ("TRANS",), ("REG", "NETWORK", (ua1, ua2, ua3, ub1), [[ua1, ua2, ub1], [ua3]])], kept
    assert client_sequence(clients["b1"]) == kept
    assert client_sequence(clients["a2"]) == kept
    log = lab.daemons["a3"].log
    assert any("fork (epoch" in line and "ends: a transitional view" in line for line in log)
    assert any("a ROSTER from a3 as our site's fork ends" in line for line in log)
    orders = burst_everywhere(lab, list(clients.values()), 2)
    assert len(orders[0]) == 8 and all(o == orders[0] for o in orders)


def fork_view_sequence(client):
    """client_sequence with the group of each membership, and the self-leave told apart."""
    return [("DATA", m.data) if not m.is_membership else ("SELF_LEAVE", m.group) if m.is_self_leave
            else ("TRANS", m.group) if m.is_transitional else
            ("REG", m.group, m.caused_by, tuple(sorted(m.members))) for m in client.receive_all()]


def test_a_join_or_leave_held_in_a_forks_stream_shows_in_the_regular_view_after_it_not_inside():
    """As above (a3 forks, its client sends all along, the LAN heals before a3 left b1's site
    out), but during the fork ua3 joins h and then sends to it, and a second client of a3, va3,
    leaves g. The JOIN and LEAVE are held in the fork's stream and delivered in the transitional
    view that ends the fork: EVS gives it messages only, so no REG_MEMB there (neither h's
    CAUSED_BY_JOIN nor g's CAUSED_BY_LEAVE); the leaver gets its self-leave, the joiner no
    TRANSITION of a view of h it never had, and no message of h before its view of h; the
    change shows in the REJOIN's REG_MEMB: ua3 in h, va3 no longer in g."""
    lab, clients = three_lab_in_group_g()
    leaver = Client(lab, "a3", "va3", 2)
    leaver.join("g")
    lab.run(0.3)
    for c in list(clients.values()) + [leaver]:
        c.receive_all()
        c.messages = []
    lab.lan_apart = {"a3"}
    for i in range(26):
        clients["a3"].multicast(sp.AGREED_MESS, "g", b"f%d" % i)
        if i == 18:
            leaver.send(sp.HEADER.pack(sp.LEAVE_MESS | sp.MY_ENDIAN_MARKER, sp.pad_name(leaver.private_group),
                                       1, sp.MY_ENDIAN_MARKER, 0) + sp.pad_name("g"))
        if i == 20:
            clients["a3"].join("h")
        if i == 22:
            clients["a3"].multicast(sp.AGREED_MESS, "h", b"to h")
        lab.run(0.05)
    lab.lan_apart = set()
    lab.run(6.0)
    assert not any(d.fatal for d in lab.daemons.values())
    assert lab.daemons["a3"].orderer.gateway.counters["fork_held_delivered"] > 0
    ua1, ua2, ua3, ub1, va3 = "#ua1#a1", "#ua2#a2", "#ua3#a3", "#ub1#b1", "#va3#a3"
    fork = fork_view_sequence(clients["a3"])
    assert fork == [("TRANS", "g")] + [("DATA", b"f%d" % i) for i in range(26)] + [
        ("REG", "g", "NETWORK", (ua1, ua2, ua3, ub1)), ("REG", "h", "NETWORK", (ua3,))], fork
    gone = fork_view_sequence(leaver)
    assert gone == [("TRANS", "g")] + [("DATA", b"f%d" % i) for i in range(19)] + [("SELF_LEAVE", "g")], gone
    kept = fork_view_sequence(clients["a1"])
    assert kept[-2:] == [("TRANS", "g"), ("REG", "g", "NETWORK", (ua1, ua2, ua3, ub1))], kept
    tables = [table_of(lab.daemons[n]) for n in THREE_IPS]
    assert all(t == tables[0] for t in tables)
    assert sorted(tables[0]["h"][0]) == [ua3] and va3 not in tables[0]["g"][0]


@pytest.mark.parametrize("apart", ["a3", "a1"])
def test_a_forks_clients_never_see_a_member_of_a_site_that_refuses_the_fork(apart):
    """`apart` forks; its ring's ROSTER (a1 and a2's members gone) is ordered while its view of
    the sites still names b1's site, which refuses the fork. Its client gets one view change,
    TRANSITION then REG_MEMB of its own member alone, and never a view naming ub1 (before, it
    got a REG_MEMB {u<apart>, ub1} first, that b1 never shared). Our ring is a fork the view
    has not caught up with, so the ROSTER's REG_MEMB waits for the sites' view of the fork alone
    (SitesGroupCore._drop_daemons, _lost_at_next_view)."""
    lab, clients = three_lab_in_group_g()
    for c in clients.values():
        c.receive_all()
        c.messages = []
    lab.lan_apart = {apart}
    lab.run(6.0)
    assert not any(d.fatal for d in lab.daemons.values())
    alone = ("#u%s#%s" % (apart, apart),)
    assert fork_view_sequence(clients[apart]) == [("TRANS", "g"), ("REG", "g", "NETWORK", alone)]
    assert any("REG_MEMB waits for the sites' next view" in line for line in lab.daemons[apart].log)
    kept = tuple(sorted(c.private_group for n, c in clients.items() if n != apart))
    for name in set(clients) - {apart}:
        assert fork_view_sequence(clients[name]) == [("TRANS", "g"), ("REG", "g", "NETWORK", kept)], name


def core_session(core, member):
    session = sp.ClientSession(len(core.local) + 1, core.daemon_name, lambda _: True, random.Random(0))
    session.private_group, session.group_membership = member, True
    core.add_session(session)
    return session


def membership_kinds(session, member):
    """(kind, cause, members) of each membership message queued for the session."""
    out = []
    for raw in session.out.chunks:
        m = sp.decode_message(raw, 0, member)
        if m.is_membership:
            out.append(("TRANS",) if m.is_transitional else ("SELF_LEAVE",) if m.is_self_leave
                       else ("REG", m.caused_by, tuple(sorted(m.members))))
    session.out.clear()
    return out


def group_op(kind, member, group):
    daemon = member.rsplit("#", 1)[1]
    return sp.DaemonMessage(kind, daemon, member, sp.AGREED_MESS, [group])


def test_a_join_or_leave_after_a_groups_transition_shows_in_its_next_reg_memb_only():
    """Site 1 is lost: ua1 gets TRANSITION of g (vb1 is at site 1). In that transitional view
    wa1 joins g and vb1 leaves it: no REG_MEMB before the regular view (one would be a view
    inside a transitional one, naming vb1 of a site already lost); the regular view's
    REG_MEMB names ua1 and wa1, though it drops nobody any more (vb1 left). wa1 gets no
    TRANSITION of a view it never had."""
    core = sp.SitesGroupCore("a1", FakeOrderer(), [["a1"], ["b1"]])
    u, w = core_session(core, "#u#a1"), core_session(core, "#w#a1")
    core.deliver(group_op(sp.JOIN, "#u#a1", "g"))
    core.deliver(group_op(sp.JOIN, "#v#b1", "g"))
    assert [k[0] for k in membership_kinds(u, "#u#a1")] == ["REG", "REG"]
    core.site_view_change(sp.SiteViewChange(sp.CONF_TRANSITIONAL, 1, [0], "site 1 lost"))
    core.deliver(group_op(sp.JOIN, "#w#a1", "g"))
    core.deliver(group_op(sp.LEAVE, "#v#b1", "g"))
    assert membership_kinds(u, "#u#a1") == [("TRANS",)]
    assert membership_kinds(w, "#w#a1") == []
    core.site_view_change(sp.SiteViewChange(sp.CONF_REGULAR, 1, [0], "site 1 lost"))
    both = ("#u#a1", "#w#a1")
    assert membership_kinds(u, "#u#a1") == [("REG", "NETWORK", both)]
    assert membership_kinds(w, "#w#a1") == [("REG", "NETWORK", both)]


def test_split_quorum_options_set_the_hop_settings():
    parse = sp.build_parser().parse_args
    default = sp.hop_settings_of(parse(["daemon"]))
    assert default.split_quorum and default.split_quorum_min_daemons == 3
    two = sp.hop_settings_of(parse(["daemon", "--split-quorum-min-daemons", "2"]))
    assert two.split_quorum and two.split_quorum_min_daemons == 2
    assert not sp.hop_settings_of(parse(["daemon", "--no-split-quorum"])).split_quorum
    with pytest.raises(SystemExit):
        parse(["daemon", "--split-quorum-min-daemons", "0"])


def rejoin(origin, ring_seq, pairs):
    return sp.DaemonMessage(sp.STATE, origin, "#rejoin#%s" % origin, sp.AGREED_MESS, [sp.REJOIN_GROUP],
                            data="\n".join([str(ring_seq)] + ["%s\t%s" % p for p in pairs]).encode())


def test_a_rejoin_of_a_daemon_gone_since_is_stale_and_one_before_its_rings_roster_is_taken():
    """a3 forked (ROSTER of ring 8 without it), its rings met again in ring 12: a REJOIN of
    ring 12 that the order delivers before ring 12's ROSTER still counts (a3 is in that ring);
    one of ring 12 after a ROSTER of ring 16 without a3 (it crashed meanwhile) is stale."""
    core = sp.SitesGroupCore("b1", FakeOrderer(), [["a1", "a2", "a3"], ["b1"]])
    core.deliver(roster("a1", 8, ["a1", "a2"]))
    assert core.gone == {"a3"}
    core.deliver(rejoin("a3", 12, [("g", "#u#a3"), ("g", "#v#a1")]))  # (a1's member: not a3's to name)
    assert core.gone == set() and core.groups["g"].members == {"#u#a3": "a3"}
    assert core.network_changes == 2
    core.deliver(roster("a1", 12, ["a1", "a2", "a3"]))
    assert core.groups["g"].members == {"#u#a3": "a3"}
    core.deliver(roster("a1", 16, ["a1", "a2"]))
    assert "g" not in core.groups
    core.deliver(rejoin("a3", 12, [("h", "#w#a3")]))
    assert "h" not in core.groups and any("gone since: ignored" in line for line in core.log)


def test_a_leave_sent_while_the_fork_waits_for_the_kept_state_comes_after_its_rejoin():
    """a3's client leaves g while a3 waits for the kept state (its LEAVE waits with it): the
    REJOIN goes ahead of it (urgent), so the LEAVE is applied after, and nobody keeps the
    client in g."""
    lab, clients = three_lab_in_group_g()
    lab.lan_apart = {"a3"}
    lab.run(6.0)
    lab.lan_apart = set()
    orderer = lab.daemons["a3"].orderer
    while orderer.synced:
        lab.run(0.001)
        assert lab.now < 20
    leave = sp.HEADER.pack(sp.LEAVE_MESS | sp.MY_ENDIAN_MARKER, sp.pad_name("#ua3#a3"), 1, sp.MY_ENDIAN_MARKER, 0)
    clients["a3"].send(leave + sp.pad_name("g"))
    assert orderer.waiting
    lab.run(4.0)
    assert not any(d.fatal for d in lab.daemons.values())
    tables = [table_of(lab.daemons[n]) for n in THREE_IPS]
    assert all(t == tables[0] for t in tables)
    assert sorted(tables[0]["g"][0]) == ["#ua1#a1", "#ua2#a2", "#ub1#b1"]


def test_two_daemons_of_a_site_of_three_crashing_at_once_are_a_fork_and_a_merge():
    """Dynamic voting cannot tell two crashes from a split: a3 holds one of three and forks;
    b1 sees site 0 leave, then a3's new incarnation merge (one view more than without voting,
    none wrong), and the two clients go on in one order."""
    lab, clients = three_lab_in_group_g()
    for c in clients.values():
        memberships_seen(c)
    lab.crashed |= {"a1", "a2"}
    lab.run(8.0)
    assert not any(d.fatal for d in lab.daemons.values())
    assert any("goes on as a new incarnation" in line for line in lab.daemons["a3"].log)
    both = ("#ua3#a3", "#ub1#b1")
    assert memberships_seen(clients["b1"])[-4:] == [("TRANS",), ("REG", "NETWORK", ("#ub1#b1",), [["#ub1#b1"]]),
                                                    ("TRANS",), ("REG", "NETWORK", both, [["#ua3#a3"], ["#ub1#b1"]])]
    assert memberships_seen(clients["a3"])[-2:] == [("TRANS",), ("REG", "NETWORK", both, [["#ua3#a3"], ["#ub1#b1"]])]
    orders = burst_everywhere(lab, [clients["a3"], clients["b1"]], 4)
    assert len(orders[0]) == 8 and orders[0] == orders[1]
