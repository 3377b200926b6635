"""A seeded simulator of several sites (thesis 7.3): each site a ring of 1-3 daemons (real
RingOrderer cores on a simulated LAN, as in tests/ring_sim.py), each daemon's SiteGateway above
its ring, and the sites' representatives joined by HopLinks over hop_sim's wire: a bandwidth,
tens of milliseconds of delay with reordering jitter, 1-10 % loss. One Random decides
everything, so a failing seed replays exactly:

    python3 tests/sites_sim.py 123 [--log]

The rings form, clients send messages of every ordered service type (RELIABLE .. SAFE;
with --unreliable, UNRELIABLE too: best effort, at every site), and in some seeds (each decided by its own Random, so the
rest of the case stays the same) a site's representative is killed (its ring re-forms, the next
daemon takes over the links) and/or every daemon of one site is killed (the others agree on a
view without it: TRANSITIONAL, then REGULAR) and/or, with two sites or a line, a WAN link is
cut (each side goes on in a view of the sites it can reach; in a mesh of three, the two ends
reach each other through the third and stay in one view), and in most of those seeds the
link comes back 0.2-6 s later: before its silence rule, during the view change or after it
(then the views merge: TRANSITIONAL, then REGULAR with every site), and/or a daemon of a site
of several (a representative killed above, or another daemon killed for this) is started again
later as a new incarnation: its ring takes it in and it is brought up to date through the ring
(SitesOrderer: the state of the sites at one point of the ring's order), and/or every daemon
of the killed site is started again 0.3-5 s after the kill, before or after the others left it
out (a new epoch of its streams: it comes back by a merge, and the clients send again after
it), and/or every daemon of a site is killed 0-1.2 s after a heal, about when the healed views
decide their merge (the next view leaves it out, chained after the merge), or (a mesh of three
with no other cut or kill) one link is cut for good from the start and one of its ends is cut
off and healed to the third site only: the views merge through that site (a MERGE parked behind
it, then taken round the dead link). The run goes on until
every living daemon has delivered what it must and installed the view of the sites it can reach, or the time is up.

The checkers look only at what the simulated clients submitted and what every daemon delivered
(and when each message reached each daemon's merge), never at the cores' state. Each kind has
a planted fault in tests/test_sites_sim.py that it must catch:
  foreign      a delivered message that nobody submitted, or altered
  duplicate    delivered twice at one daemon
  agreed order two daemons deliver two messages in different orders
  FIFO         a sender's messages out of the order it sent them
  causal order a message delivered before one its sender had delivered before sending it
               (and that this daemon delivers too)
  safe         a SAFE message delivered at a daemon before every daemon of every site held it
  no loss      at the end, a living daemon that never crashed has not delivered a message
               its clients submitted, or a living daemon has not delivered a message that
               another living daemon delivered in a view it shared with it and left with it
               (the regular part of a view whose next TRANSITIONAL names its site, or that is
               still the view; or a transitional part naming its site)
  view         a living daemon does not end in the view of the sites it can reach (after a
               partition heals: the merged view), or two daemons install the same view seq
               with sites that differ but overlap (two sides of a partition may share a seq),
               or a daemon stops (SitesOrderer.late: a state it cannot be brought up to)
  virtual synchrony  two daemons that install the same view from the same transitional
               view delivered different messages in the old view's regular part, or in the
               transitional part
  one view     a message delivered in two different views (the last REGULAR before it):
               a message of one side of a partition delivered on the other side after the heal
With --groups (SitesSim(groups=True)) the clients join and leave three groups during the
traffic (JOIN / LEAVE messages in the one order, drawn from a Random of their own) and send to
one of them; then a site owes another site's message only if it has a member of its group at
the message's place in the order (no loss and virtual synchrony look at those only): what
pruning by group interest may leave out, and nothing more (a planted fault of a site that drops
a group it has a member in must be caught; one that drops only where it has none, not). The
sites prune (HopSettings.prune) only with --groups: without, nobody joins and every daemon
owes every message. The interest is that of one daemon that saw every JOIN and LEAVE in its
view; after a partition heals it is stale (each side saw only its own side's), and the
daemons prune no more after a merge.
SAFE is checked against the daemons of the view it was delivered in (its transitional part:
the survivors), that had not crashed by then, and were up to date by then (a restarted daemon
holds back what its ring delivers until its state comes). A restarted daemon is a new Node
(the old one stays on the record as "name~1"); it owes what the others delivered from the
point where it came in (from its first delivery, or after it was up to date), in the view it
came in (a pseudo view "joined", never compared with the others' views).
"""
from __future__ import annotations

import argparse
import heapq
import os
import random
import sys
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

import spread_mini as sr  # noqa: E402
from hop_sim import WireSpec  # noqa: E402
import ring_sim  # noqa: E402

SERVICES = [sr.RELIABLE_MESS, sr.FIFO_MESS, sr.CAUSAL_MESS, sr.AGREED_MESS, sr.SAFE_MESS]

FOREIGN = "foreign"
DUPLICATE = "duplicate"
AGREED = "agreed order"
FIFO = "FIFO"
CAUSAL = "causal order"
SAFE = "safe"
LOSS = "no loss"
VIEW = "view"  # a living daemon's last view is not the sites it can reach, or views disagree
VIRTUAL_SYNCHRONY = "virtual synchrony"
ONE_VIEW = "one view"  # a message delivered in two different views (it crossed a partition)
KINDS = (FOREIGN, DUPLICATE, AGREED, FIFO, CAUSAL, SAFE, LOSS, VIEW, VIRTUAL_SYNCHRONY, ONE_VIEW)


#: the run's end is looked for at most this often (simulated seconds)
CHECK_EVERY_S = 0.01
#: after a heal, the clients send again this long after it, for a second (seconds)
HEAL_TRAFFIC_AFTER_S = 3.0


#: after a whole site is started again, the clients send again this long after it, for a second
#: (the others' suspicion of the old incarnation, the new one's view alone, the probes, the merge)
SITE_RESTART_TRAFFIC_AFTER_S = 5.0


#: with groups (SitesSim(groups=True), --groups): the groups the clients join, leave and send to
GROUPS = ("g1", "g2", "g3")
#: ... and how many joins or leaves a second, at random daemons, during the traffic
GROUP_CHANGES_PER_S = 4.0


#: a restarted daemon that delivered nothing owes what its site delivered this long after its
#: state came (simulated seconds: far above a ring's rotation)
RESTART_SLACK_S = 0.5


def kind_of(violation: str) -> str:
    return violation.split(" ", 1)[1].split(":", 1)[0]


@dataclass
class LanSpec:
    """The network inside a site (a LAN): small delay, a little loss."""
    loss: float = 0.01
    delay_s: float = 0.0003
    jitter_s: float = 0.0005


@dataclass
class SitesCase:
    """Everything a run needs, all drawn from its seed (case_for_seed)."""
    sites: List[List[str]]
    costs: List[List[int]]
    wires: Dict[Tuple[int, int], WireSpec]  # (site, site) -> each direction's wire
    lan: LanSpec
    rate_per_s: float
    traffic_s: float
    #: when, after the rings formed, the representative of a site of several daemons is
    #: killed (kill -9: its ring re-forms and the next daemon takes over its links); None: never
    rep_crash_after_s: Optional[float] = None
    rep_crash_site: int = 0
    #: when every daemon of one site is killed (the others install a view without it)
    site_kill_after_s: Optional[float] = None
    site_kill: int = 0
    #: and another site killed this long after the first: about when the survivors decide
    #: the view without the first, so that it dies after that decision (None: no second kill)
    second_kill_after_s: Optional[float] = None
    second_kill: int = 0
    #: when the WAN link between two sites is cut, both ways, and the cut splits the
    #: sites in two (two sites, or a line): each side goes on in a view of its own
    cut_after_s: Optional[float] = None
    cut_pair: Tuple[int, int] = (0, 1)
    #: or (a mesh of three) every link of this site is cut at cut_after_s: it is alone
    cut_site: Optional[int] = None
    #: how long after the cut the link comes back (None: never): the views merge again
    heal_after_s: Optional[float] = None
    #: a daemon killed (kill -9) at restart_kill_after_s after the rings formed (None: the
    #: representative killed at rep_crash_after_s), started again restart_after_s later as a
    #: new incarnation (None: no restart)
    restart_name: Optional[str] = None
    restart_kill_after_s: Optional[float] = None
    restart_after_s: Optional[float] = None
    #: every daemon of the killed site (site_kill) started again this long after the kill, as
    #: new incarnations: a new incarnation of the site, merged back like a healed site (None: never)
    site_restart_after_s: Optional[float] = None
    #: (only with lan_splits: a site split in two rings) from lan_split_after_s, for
    #: lan_split_for_s, the daemons lan_split_apart of a site hear nothing of the rest of their
    #: site and the rest nothing of them: two rings of one site, each with its clients' traffic
    lan_split_after_s: Optional[float] = None
    lan_split_for_s: float = 0.0
    lan_split_apart: Tuple[str, ...] = ()
    #: every daemon of this site killed this long after the heal: about when the healed
    #: views decide their merge, so that it dies after that decision (None: never)
    merge_kill_after_s: Optional[float] = None
    merge_kill: int = 0
    #: the healed link cut again this long after the first of its two ends decided the merge
    #: (its READY), before the other's decision: that one gives the merge up when the link
    #: dies (GIVEUP), the one that decided leaves it out (a view chained after the merge). The
    #: link comes back recut_for_s later, and the site that gave up dies recut_kill_after_s
    #: after that (None: no recut)
    recut_after_s: Optional[float] = None
    recut_for_s: float = 0.0
    recut_kill_after_s: float = 0.0
    #: (tests only) the WAN link between these two sites is cut from the start and never
    #: healed: in a mesh of three, they reach each other through the third (None: no such link)
    cut_for_good: Optional[Tuple[int, int]] = None


#: a restarted daemon's first view: the one its state came in (SitesOrderer), not installed
JOINED = "joined"


@dataclass
class Node:
    orderer: sr.RingOrderer
    gateway: sr.SiteGateway
    sites: sr.SitesOrderer  #: the orderer of a daemon of several sites (its ring, its gateway)
    delivered: List[int] = field(default_factory=list)
    position: Dict[int, int] = field(default_factory=dict)
    delivered_at: Dict[int, float] = field(default_factory=dict)
    held_at: Dict[Tuple[int, int], float] = field(default_factory=dict)
    key_of: Dict[int, Tuple[int, int]] = field(default_factory=dict)  # serial -> (site, site_seq)
    crashed_at: Optional[float] = None
    #: view changes of several sites: (kind, view seq, sites, messages delivered before, time)
    views: List[tuple] = field(default_factory=list)
    view_sites: Tuple[int, ...] = ()  # the sites of the view (regular or transitional) now
    delivered_in: Dict[int, Tuple[int, ...]] = field(default_factory=dict)  # serial -> view_sites
    unreliable: set = field(default_factory=set)  # UNRELIABLE messages delivered (no order)
    started_at: float = 0.0
    restarted: bool = False  #: a new incarnation of a daemon that was killed
    synced_at: Optional[float] = None  #: when it held the sites' state (afresh, or sent to it)
    #: with groups: group -> the daemons whose client is a member, by the JOIN / LEAVE this
    #: daemon delivered so far (the one order's table at that point)
    members: Dict[str, set] = field(default_factory=dict)
    #: with groups: data serial -> the sites with a member of its group where it was delivered
    interested: Dict[int, frozenset] = field(default_factory=dict)


@dataclass
class SitesResult:
    seed: int
    violations: List[str]
    stats: Dict[str, float]
    log_lines: List[str]

    def kinds(self):
        return {kind_of(v) for v in self.violations}

    def summary(self) -> str:
        head = "seed %d: %d violations; %s" % (self.seed, len(self.violations), ", ".join(
            "%s=%s" % (k, round(v, 4) if isinstance(v, float) else v) for k, v in sorted(self.stats.items())))
        return "\n".join([head] + ["  VIOLATION " + v for v in self.violations[:20]])


def case_for_seed(seed: int, lan_splits: bool = False) -> SitesCase:
    """2-3 sites of 1-3 daemons; between them a full mesh or a line (so that some packets go
    through a middle site), each link 1-10 % loss, 10-50 ms, 1-10 Mbit/s. With lan_splits, a
    site of several daemons is also split in two for a while (a site split in two rings: the
    known hole, so never in the default draws)."""
    rng = random.Random(seed * 7919 + 11)
    nsites = rng.choice([2, 3, 3])
    sites = [["%s%d" % ("abc"[s], i + 1) for i in range(rng.choice([1, 2, 3]))] for s in range(nsites)]
    line = nsites == 3 and rng.random() < 0.4
    costs = [[0 if i == j or (line and abs(i - j) == 2) else rng.choice([1, 1, 2, 5])
              for j in range(nsites)] for i in range(nsites)]
    wires = {}
    for i in range(nsites):
        for j in range(i + 1, nsites):
            if costs[i][j] > 0 or costs[j][i] > 0:
                wire = WireSpec(loss=rng.uniform(0.01, 0.10), delay_s=rng.uniform(0.01, 0.05),
                                jitter_s=rng.uniform(0.0, 0.01), bits_s=rng.choice([1e6, 2e6, 5e6, 10e6]))
                wires[i, j] = wires[j, i] = wire
    slowest = min(w.bits_s for w in wires.values())
    # offered load well within the slowest link (a message is 150 bytes on average, about
    # 350 with the records' and packets' overhead): the checks test the protocol, not patience
    rate = min(rng.choice([20.0, 60.0, 150.0]), slowest / 8 / 350 * 0.5)
    case = SitesCase(sites, costs, wires, LanSpec(loss=rng.choice([0.0, 0.01, 0.03])),
                     rate, rng.choice([1.0, 2.0]))
    crash = random.Random(seed * 7919 + 12)  # its own draws: the rest of the case stays as it was
    several = [i for i, s in enumerate(sites) if len(s) > 1]
    if several and crash.random() < 0.5:
        case.rep_crash_site = crash.choice(several)
        case.rep_crash_after_s = crash.uniform(0.0, case.traffic_s)
    kill = random.Random(seed * 7919 + 13)
    if kill.random() < 0.4:
        case.site_kill = kill.randrange(nsites)
        case.site_kill_after_s = kill.uniform(0.0, case.traffic_s)
    cut = random.Random(seed * 7919 + 14)
    if (nsites == 2 or line) and cut.random() < 0.3:
        case.cut_pair = (0, 1) if nsites == 2 or cut.random() < 0.5 else (1, 2)
        case.cut_after_s = cut.uniform(0.0, case.traffic_s)
        heal = random.Random(seed * 7919 + 15)
        if heal.random() < 0.6:  # before the link's silence rule, during the view change, after
            case.heal_after_s = heal.uniform(0.2, 6.0)
    again = random.Random(seed * 7919 + 16)
    killed = case.site_kill if case.site_kill_after_s is not None else None
    if case.rep_crash_after_s is not None and case.rep_crash_site != killed and again.random() < 0.5:
        case.restart_name = sites[case.rep_crash_site][0]  # the representative comes back
        case.restart_after_s = again.uniform(0.3, 3.0)
    elif again.random() < 0.4:
        # another daemon, in a site that keeps one daemon alive meanwhile
        spare = [i for i in several if i != killed and (i != case.rep_crash_site or len(sites[i]) > 2
                                                        or case.rep_crash_after_s is None)]
        if spare:
            site = again.choice(spare)
            case.restart_name = again.choice(sites[site][1:])
            case.restart_kill_after_s = again.uniform(0.0, case.traffic_s)
            case.restart_after_s = again.uniform(0.3, 3.0)
    # (the same stream as the restart's draws above: both scenarios came from parallel work and
    # each kept its seeds; so a cut-off site's seed also restarts a daemon where one can be)
    alone = random.Random(seed * 7919 + 16)
    if (nsites == 3 and not line and case.cut_after_s is None and case.site_kill_after_s is None
            and alone.random() < 0.3):
        # a site cut off the mesh and healed right at its loss: about when the links' silence
        # rule fires, or within 0-300 ms of the suspicion (the silence, then SITE_GRACE_S),
        # while the proposals are on their way (the sides may start merging before the
        # links to every site are back)
        case.cut_site = alone.randrange(nsites)
        case.cut_after_s = alone.uniform(0.0, case.traffic_s)
        suspected_s = sr.HopSettings().peer_silence_s + sr.SITE_GRACE_S
        if alone.random() < 0.3:
            case.heal_after_s = alone.uniform(0.7, 1.3)
        else:
            case.heal_after_s = alone.uniform(suspected_s, suspected_s + 0.3)
    second = random.Random(seed * 7919 + 17)
    if (nsites == 3 and case.site_kill_after_s is not None and case.cut_after_s is None
            and second.random() < 0.3):
        # the decision comes about the links' silence rule + SITE_GRACE_S + a WAN crossing
        # after the first kill; the second dies within 0.5 s around it
        case.second_kill = second.choice([s for s in range(nsites) if s != case.site_kill])
        if case.restart_name is not None and case.restart_name in sites[case.second_kill]:
            case.restart_name = None  # (a whole site restarted is another scenario)
        decided_s = sr.HopSettings().peer_silence_s + sr.SITE_GRACE_S
        case.second_kill_after_s = second.uniform(decided_s - 0.2, decided_s + 0.3)
    # a mesh of three with one link cut: the two sites reach each other through the third
    # (routing around the dead link), and in most of those seeds the link comes back
    mesh = random.Random(seed * 7919 + 17)
    if (nsites == 3 and not line and case.cut_after_s is None and mesh.random() < 0.3
            and case.second_kill_after_s is None):  # (never with a second kill)
        case.cut_pair = tuple(sorted(mesh.sample(range(nsites), 2)))
        case.cut_after_s = mesh.uniform(0.0, case.traffic_s)
        if mesh.random() < 0.7:
            case.heal_after_s = mesh.uniform(0.2, 6.0)
    back = random.Random(seed * 7919 + 19)
    if (case.site_kill_after_s is not None and back.random() < 0.5
            and case.second_kill_after_s is None):  # (a death during the merge back: not yet)
        # before the others suspect it (the silence rule, then SITE_GRACE_S), or after
        case.site_restart_after_s = back.uniform(0.3, 5.0)
    split = random.Random(seed * 7919 + 20)
    if lan_splits and several:
        names = sites[split.choice(several)]
        case.lan_split_apart = tuple(split.sample(names, split.randrange(1, len(names))))
        case.lan_split_after_s = split.uniform(0.0, case.traffic_s)
        case.lan_split_for_s = split.uniform(0.5, 3.0)
    late = random.Random(seed * 7919 + 21)
    if (case.heal_after_s is not None and case.site_kill_after_s is None and case.rep_crash_after_s is None
            and case.restart_name is None and late.random() < 0.5):
        # the merge is decided a probe period and a few WAN crossings after the heal (when
        # the views had split by then): a site dies about then, before or after its decision
        case.merge_kill = late.randrange(nsites)
        case.merge_kill_after_s = late.uniform(0.0, 1.2)
    around = random.Random(seed * 7919 + 22)
    if (nsites == 3 and not line and case.cut_after_s is None and case.site_kill_after_s is None
            and around.random() < 0.4):
        # a MERGE parked behind a site reached only through a third one: in a mesh, the link
        # x - y is cut from the start and for good (the sites route around it), then site x
        # is cut off and its link to the third site comes back: the views {x} and {y, z}
        # merge through z (drawn in mesh seeds with no other cut or kill, of their own stream)
        x, y = around.sample(range(nsites), 2)
        case.cut_for_good = (min(x, y), max(x, y))
        case.cut_site = x
        case.cut_after_s = around.uniform(0.0, case.traffic_s)
        case.heal_after_s = around.uniform(0.5, 6.0)  # before the views split, or after
    race = random.Random(seed * 7919 + 23)
    if ((nsites == 2 or line) and case.cut_after_s is None and case.site_kill_after_s is None
            and case.rep_crash_after_s is None and case.restart_name is None and race.random() < 0.5):
        # the GIVEUP race after a death: a link cut, healed after the views split, and cut
        # again when one end decides the merge, before the other (SitesSim.recut_at_decision):
        # the other gives it up (GIVEUP: its link to a joining site died) while the first
        # leaves it out (a view chained after the merge); the link comes back about then, so
        # the GIVEUP comes around that proposal, and the site that gave up dies just after
        # (drawn in two-site and line seeds with no other cut or death, of their own stream)
        case.cut_pair = (0, 1) if nsites == 2 or race.random() < 0.5 else (1, 2)
        case.cut_after_s = race.uniform(0.0, case.traffic_s)
        case.heal_after_s = race.uniform(2.5, 5.0)
        case.recut_after_s = race.uniform(0.0, 0.03)
        # (back about when the survivors leave it out: the link's silence, then SITE_GRACE_S)
        case.recut_for_s = race.uniform(1.8, 2.6)
        case.recut_kill_after_s = race.uniform(0.0, 0.6)
    return case


class SitesSim:
    def __init__(self, seed: int, case: Optional[SitesCase] = None, tick_s: float = 0.01,
                 on_start=None, delivery_filter=None, services=None, lan_splits: bool = False,
                 groups: bool = False):
        self.seed = seed
        #: clients join and leave GROUPS during the traffic and send to one of them; a site
        #: owes a message only if it has a member of its group where the message is ordered.
        #: Drawn from a Random of their own (a run without groups stays as it was)
        self.groups = groups
        self.group_rng = random.Random(seed * 7919 + 17)
        self.joined: Dict[str, set] = {}  # daemon -> the groups its client asked to join (last)
        self.services = list(services or SERVICES)  #: what the simulated clients send
        self.rng = random.Random(seed)
        self.case = case or case_for_seed(seed, lan_splits)
        self.tick_s = tick_s
        #: planted faults: on_start(name, gateway) before the run; delivery_filter(name,
        #: outputs) -> outputs on what one poll() of a gateway returned
        self.delivery_filter = delivery_filter
        self.now = 0.0
        self.events: list = []
        self.counter = 0
        self.nodes: Dict[str, Node] = {}
        self.site_of = {d: i for i, s in enumerate(self.case.sites) for d in s}
        self.submitted: Dict[int, tuple] = {}  # serial -> (service, data, origin, deps)
        self.violations: List[str] = []
        self.stats: Dict[str, float] = {"ring_packets": 0, "hop_packets": 0, "hop_lost": 0,
                                        "submitted": 0}
        self.wire_free: Dict[Tuple[int, int], float] = {}
        self.cut_pairs: set = set()  # (site, site) whose wire is cut, both ways
        if self.case.cut_for_good is not None:
            a, b = self.case.cut_for_good
            self.cut_pairs |= {(a, b), (b, a)}
        self.heal_pending = False
        self.recut_armed = False  #: the healed link is cut again at the first decision of its merge
        self.lan_split = False  #: the LAN of a site split in two now (lan_split_apart)
        self.late_submits = 0  # submissions after the heal still to come
        self.next_check_s = 0.0
        self.traffic_end_s = float("inf")
        self.gtick_at: Dict[str, float] = {}
        self.latency: List[float] = []
        settings = {}
        self.restarts = 0
        self.restart_pending = False  #: a daemon is to start again, or is not up to date yet
        for site, names in enumerate(self.case.sites):
            for name in names:
                self.nodes[name] = self.make_node(name, 1, 0.0)
                self.gtick_at[name] = float("inf")
                if on_start is not None:
                    on_start(name, self.nodes[name].gateway)

    def make_node(self, name: str, incarnation: int, now: float) -> Node:
        site = self.site_of[name]
        names = self.case.sites[site]
        orderer = sr.RingOrderer(name, incarnation, names, random.Random(self.rng.random()),
                                 sr.RingSettings(), now=now)
        gateway = sr.SiteGateway(name, self.case.sites, self.case.costs, orderer,
                                 self.hop_settings(site), now=now)
        gateway.trace_held = []
        return Node(orderer, gateway, sr.SitesOrderer(orderer, gateway, {}, now), started_at=now)

    def restart(self, name: str) -> None:
        """The daemon started again (a new incarnation); the killed one stays on the record."""
        old = self.nodes[name]
        if old.crashed_at is None:
            return
        self.restarts += 1
        key = "%s~%d" % (name, self.restarts)
        self.nodes[key], self.site_of[key] = old, self.site_of[name]
        for serial, sub in self.submitted.items():
            if sub[5] == name:
                self.submitted[serial] = sub[:5] + (key,) + sub[6:]
        node = self.nodes[name] = self.make_node(name, 1 + self.restarts, self.now)
        node.restarted = True
        self.gtick_at[name] = float("inf")
        self.stats["restarts"] = self.stats.get("restarts", 0) + 1
        self.push(self.now, "tick", name)

    def hop_settings(self, site: int) -> sr.HopSettings:
        """Each representative's links draw from a bucket at 90 % of its slowest wire (one
        HopSettings for all of a daemon's links, as spread.conf would give)."""
        bits = min(w.bits_s for (a, _), w in self.case.wires.items() if a == site) \
            if any(a == site for a, _ in self.case.wires) else 1e7
        # without groups the clients join nothing and every daemon owes every message: a
        # site prunes by group interest only in a run that has groups
        return sr.HopSettings(rate_bytes_s=bits / 8 * 0.9, burst_bytes=16000, prune=self.groups)

    # -------------------------------------------------------------- the networks
    def push(self, at: float, kind: str, dest: str, src: str = "", data: bytes = b"") -> None:
        self.counter += 1
        heapq.heappush(self.events, (at, self.counter, kind, dest, src, data))

    def ring_send(self, src: str, dest: str, raw: bytes) -> None:
        self.stats["ring_packets"] += 1
        if self.lan_split and (src in self.case.lan_split_apart) != (dest in self.case.lan_split_apart):
            return  # (a split inside one site: the rest of the site is another LAN's)
        lan = self.case.lan
        if self.rng.random() < lan.loss:
            return
        self.push(self.now + lan.delay_s + self.rng.random() * lan.jitter_s, "ring", dest, src, raw)

    def hop_send(self, src: str, dest: str, raw: bytes) -> None:
        self.stats["hop_packets"] += 1
        pair = (self.site_of[src], self.site_of[dest])
        wire = self.case.wires.get(pair)
        if wire is None:
            self.fail(FOREIGN, "%s sent a HOP packet to %s: no link between their sites" % (src, dest))
            return
        start = max(self.now, self.wire_free.get(pair, 0.0))
        self.wire_free[pair] = start + len(raw) * 8 / wire.bits_s
        if pair in self.cut_pairs:
            self.stats["hop_lost"] += 1
            return
        if self.rng.random() < wire.loss:
            self.stats["hop_lost"] += 1
            return
        self.push(self.wire_free[pair] + wire.delay_s + self.rng.uniform(0, wire.jitter_s), "hop",
                  dest, src, raw)

    # -------------------------------------------------------------- one daemon's outputs
    def drain(self, name: str) -> None:
        node = self.nodes[name]
        while True:
            outs = node.sites.poll()
            gouts = []
            for out in outs:
                if isinstance(out, sr.Send):
                    self.ring_send(name, out.dest, out.packet)
                elif isinstance(out, sr.SendToAll):  # IP multicast: each copy may be lost alone
                    for dest in out.dests:
                        self.ring_send(name, dest, out.packet)
                elif isinstance(out, sr.SiteSync):
                    if out.export:  # (no group table here)
                        node.sites.send_state(out, {})
                elif not isinstance(out, sr.ConfigurationChange):
                    gouts.append(out)
            if node.synced_at is None and node.sites.synced:
                self.up_to_date(node)
            if node.sites.late and node.crashed_at is None:  # a real daemon stops on it
                self.fail(VIEW, "%s stops: %s" % (name, node.sites.late))
                self.crash(name)
                return
            if self.delivery_filter is not None and gouts:
                gouts = self.delivery_filter(name, gouts)
            for out in gouts:
                if isinstance(out, sr.SendHop):
                    self.hop_send(name, out.dest, out.packet)
                elif isinstance(out, sr.SiteViewChange):
                    node.views.append((out.kind, out.view_seq, tuple(out.sites), len(node.delivered), self.now))
                    node.view_sites = tuple(out.sites)
                else:
                    self.record_delivery(name, node, out.msg)
            if not outs:
                break
        for key in node.gateway.trace_held:
            node.held_at.setdefault(key, self.now)
        del node.gateway.trace_held[:]
        deadline = node.gateway.next_deadline_s()
        if deadline < self.gtick_at[name]:
            self.gtick_at[name] = deadline
            self.push(deadline, "gtick", name)

    def up_to_date(self, node: Node) -> None:
        """A restarted daemon's state came: its view is the one it came in."""
        node.synced_at = self.now
        if not node.restarted:
            return
        self.restart_pending = False
        gw = node.gateway
        sites = tuple(gw.live_sites) if gw.view_seq else ()  # (view 0: as the others name it)
        node.views.append((JOINED, gw.view_seq, sites, len(node.delivered), self.now))
        node.view_sites = sites

    def record_delivery(self, name: str, node: Node, msg: sr.DaemonMessage) -> None:
        serial = int.from_bytes(msg.data[:8], "big") if len(msg.data) >= 8 else 0
        sub = self.submitted.get(serial)
        if sub is None or sub[0] != msg.service_type or sub[1] != msg.data or sub[2] != msg.origin \
                or sub[6] != msg.kind or sub[7] != tuple(msg.groups):
            self.fail(FOREIGN, "%s delivered a message nobody submitted so (serial %d)" % (name, serial))
            return
        if serial in node.position or serial in node.unreliable:
            self.fail(DUPLICATE, "%s delivered message %d twice" % (name, serial))
            return
        if msg.service_type == sr.UNRELIABLE_MESS:  # outside every order: on a list of its own
            node.unreliable.add(serial)
            if self.site_of[sub[5]] != self.site_of[name]:
                self.stats["unreliable_other_sites"] = self.stats.get("unreliable_other_sites", 0) + 1
            return
        if msg.kind == sr.JOIN:
            node.members.setdefault(msg.groups[0], set()).add(msg.origin)
        elif msg.kind == sr.LEAVE:
            node.members.setdefault(msg.groups[0], set()).discard(msg.origin)
        elif self.groups:
            node.interested[serial] = frozenset(self.site_of[d] for g in msg.groups
                                                for d in node.members.get(g, ()))
        node.position[serial] = len(node.delivered)
        node.delivered.append(serial)
        node.delivered_at[serial] = self.now
        node.key_of[serial] = (msg.site_id, msg.seq)
        node.delivered_in[serial] = node.view_sites
        self.latency.append(self.now - sub[4])

    # -------------------------------------------------------------- clients
    def live(self) -> Dict[str, Node]:
        return {n: node for n, node in self.nodes.items() if node.crashed_at is None}

    def crash(self, name: str) -> None:
        """kill -9: the daemon does nothing more; what it delivered stays on the record."""
        if self.nodes[name].crashed_at is not None:
            return  # (a representative killed earlier, in a site killed now)
        self.nodes[name].crashed_at = self.now
        self.stats["crashes"] = self.stats.get("crashes", 0) + 1

    def submit_random(self) -> None:
        name = self.rng.choice(sorted(self.live()))
        node = self.nodes[name]
        service = self.rng.choice(self.services)
        serial = len(self.submitted) + 1
        data = ring_sim.random_payload(self.rng, serial)
        group = self.group_rng.choice(GROUPS) if self.groups else "g"
        msg = sr.DaemonMessage(sr.DATA, name, "#c#%s" % name, service, [group], data=data)
        if not node.sites.submit(msg):
            return
        self.stats["submitted"] += 1
        self.submitted[serial] = (service, data, name, len(node.delivered), self.now, name, sr.DATA, (group,))
        self.drain(name)

    def change_group(self) -> None:
        """The client of a random live daemon joins a group it is not in, or leaves one it is
        in (a JOIN or LEAVE message of its daemon, in the one order like data: it carries a
        serial, so the checkers see it as they see data)."""
        rng = self.group_rng
        name = rng.choice(sorted(self.live()))
        group = rng.choice(GROUPS)
        mine = self.joined.setdefault(name, set())
        kind = sr.LEAVE if group in mine else sr.JOIN
        serial = len(self.submitted) + 1
        data = serial.to_bytes(8, "big")
        msg = sr.DaemonMessage(kind, name, "#c#%s" % name, sr.AGREED_MESS, [group], data=data)
        if not self.nodes[name].sites.submit(msg):
            return
        mine.symmetric_difference_update({group})
        self.stats["group_changes"] = self.stats.get("group_changes", 0) + 1
        self.submitted[serial] = (sr.AGREED_MESS, data, name, len(self.nodes[name].delivered), self.now,
                                  name, kind, (group,))
        self.drain(name)

    # -------------------------------------------------------------- the run
    def rings_formed(self) -> bool:
        for name, node in self.nodes.items():
            o = node.orderer
            if o.state != sr.OPERATIONAL or len(o.ring.members) != len(self.case.sites[self.site_of[name]]):
                return False
        return all(n.gateway.representative == self.case.sites[self.site_of[name]][0]
                   for name, n in self.nodes.items())

    def live_sites(self) -> set:
        return {self.site_of[n] for n in self.live()}

    def component(self, site: int) -> frozenset:
        """The live sites that `site` can still reach over the links not cut (its final view)."""
        costs = [[0 if (i, j) in self.cut_pairs else c for j, c in enumerate(row)]
                 for i, row in enumerate(self.case.costs)]
        tree = sr.dissemination_tree(costs, site, self.live_sites())
        return frozenset(tree.parent)

    def companions(self, node: Node) -> Dict[int, Tuple[int, ...]]:
        """serial -> the sites whose daemons must deliver it too, by extended virtual
        synchrony: those that left the view it was delivered in with this daemon (the next
        TRANSITIONAL's sites), or are in that view still; for a delivery in a transitional
        part, that transitional view's sites."""
        everyone = tuple(range(len(self.case.sites)))
        out = {}
        views = node.views
        i = 0  # views[:i] happened before the delivery at hand
        for idx, serial in enumerate(node.delivered):
            while i < len(views) and views[i][3] <= idx:
                i += 1
            if i and views[i - 1][0] == sr.CONF_TRANSITIONAL:
                out[serial] = views[i - 1][2]
            elif i < len(views):
                out[serial] = views[i][2]  # the TRANSITIONAL that ends this regular part
            else:
                out[serial] = views[i - 1][2] if i else everyone
        return out

    def must_deliver(self) -> Dict[str, set]:
        """For each living daemon: what it submitted (if it never crashed: EVS self-delivery),
        and what another living daemon delivered with its site among the companions (a crashed
        daemon's last messages may be lost, but then everywhere)."""
        live = self.live()
        must = {name: {s for s, sub in self.submitted.items()
                       if sub[5] == name and sub[0] != sr.UNRELIABLE_MESS} for name in live}
        interest = self.interest()
        for node in live.values():
            for serial, sites in self.companions(node).items():
                if serial in interest:  # (groups) only the sites with a member then
                    sites = [x for x in sites if self.site_owes(x, serial, interest)]
                for name in live:
                    if self.site_of[name] in sites and self.owes(live[name], node, serial):
                        must[name].add(serial)
        return must

    def interest(self) -> Dict[int, frozenset]:
        """(groups) data serial -> the sites with a member of its group at its place in the
        one order, by a daemon that saw every JOIN and LEAVE (not a restarted one: its table
        starts empty here)."""
        out: Dict[int, frozenset] = {}
        for node in self.nodes.values():
            if not node.restarted:
                for serial, sites in node.interested.items():
                    out.setdefault(serial, sites)
        return out

    def site_owes(self, site: int, serial: int, interest: Dict[int, frozenset]) -> bool:
        """Whether the daemons of `site` must deliver the message: its own site's always; with
        groups, another site's data only if `site` has a member of its group at its place."""
        return serial not in interest or site in interest[serial] \
            or self.site_of[self.submitted[serial][2]] == site

    def owes(self, n: Node, o: Node, serial: int) -> bool:
        """A restarted daemon owes what `o` delivered from the point it came in: from its first
        delivery on (one order: all that o delivered after it); if it delivered nothing, what
        a daemon of its own site delivered well after its state came (the same point of the
        ring's order, a moment apart; another site delivers the same messages later)."""
        if not n.restarted or n.synced_at is None:
            return True
        if n.delivered and n.delivered[0] in o.position:
            return o.position[serial] >= o.position[n.delivered[0]]
        return self.site_of_node(o) == self.site_of_node(n) and \
            o.delivered_at[serial] >= n.synced_at + RESTART_SLACK_S

    def site_of_node(self, node: Node) -> int:
        return self.site_of[node.gateway.name]

    def everything_delivered(self) -> bool:
        if (self.heal_pending or self.lan_split or self.late_submits or self.restart_pending
                or self.now < self.next_check_s):
            return False
        self.next_check_s = self.now + CHECK_EVERY_S  # (the whole check costs: not every event)
        for name, node in self.live().items():
            gw = node.gateway
            if not node.sites.synced or gw.closing is not None or gw.merging is not None or set(gw.live_sites) != self.component(self.site_of[name]):
                return False
        must = self.must_deliver()
        return all(must[name] <= node.position.keys() for name, node in self.live().items())

    def run(self, form_max_s: float = 3.0, drain_max_s: float = 30.0) -> SitesResult:
        for name in self.nodes:
            self.push(0.0, "tick", name)
        self.run_until(form_max_s, self.rings_formed)
        self.stats["formed_at_s"] = self.now
        start = self.now
        self.traffic_end_s = start + self.case.traffic_s
        t = start
        while True:
            t += self.rng.expovariate(self.case.rate_per_s)
            if t > start + self.case.traffic_s:
                break
            self.push(t, "submit", "")
        if self.groups:  # a few members first, then joins and leaves during the traffic
            t = start
            for _ in range(len(self.nodes)):
                self.push(t, "group", "")
            while True:
                t += self.group_rng.expovariate(GROUP_CHANGES_PER_S)
                if t > start + self.case.traffic_s:
                    break
                self.push(t, "group", "")
        if self.case.site_kill_after_s is not None:
            self.kill_at = start + self.case.site_kill_after_s
            for name in self.case.sites[self.case.site_kill]:
                self.push(self.kill_at, "crash", name)
            if self.case.second_kill_after_s is not None:
                for name in self.case.sites[self.case.second_kill]:
                    self.push(self.kill_at + self.case.second_kill_after_s, "crash", name)
            if self.case.site_restart_after_s is not None:
                back = self.kill_at + self.case.site_restart_after_s
                for name in self.case.sites[self.case.site_kill]:
                    self.push(back, "restart", name)
                self.restart_pending = True
                self.schedule_late_traffic(back + SITE_RESTART_TRAFFIC_AFTER_S)
        if self.case.cut_after_s is not None:
            self.push(start + self.case.cut_after_s, "cut", "")
            if self.case.heal_after_s is not None:
                healed = start + self.case.cut_after_s + self.case.heal_after_s
                self.push(healed, "heal", "")
                self.heal_pending = True  # the run goes on until the views merged
                # and the clients send again once the views have merged (about 3 s after
                # the heal: the probes, the merge), for the order across the merged sites
                self.schedule_late_traffic(healed + HEAL_TRAFFIC_AFTER_S)
                if self.case.merge_kill_after_s is not None:
                    for name in self.case.sites[self.case.merge_kill]:
                        self.push(healed + self.case.merge_kill_after_s, "crash", name)
                self.recut_armed = self.case.recut_after_s is not None  # (see recut_at_decision)
        if self.case.lan_split_after_s is not None:
            split_at = start + self.case.lan_split_after_s
            self.push(split_at, "lan", "split")
            self.push(split_at + self.case.lan_split_for_s, "lan", "whole")
        if self.case.rep_crash_after_s is not None:
            names = self.case.sites[self.case.rep_crash_site]
            self.push(start + self.case.rep_crash_after_s, "crash", names[0])
        if self.case.restart_name is not None:
            killed = self.case.restart_kill_after_s
            if killed is None:
                killed = self.case.rep_crash_after_s
            else:
                self.push(start + killed, "crash", self.case.restart_name)
            self.push(start + killed + self.case.restart_after_s, "restart", self.case.restart_name)
            self.restart_pending = True
        self.run_until(start + self.case.traffic_s)
        self.run_until(start + self.case.traffic_s + drain_max_s, self.everything_delivered)
        self.stats["end_s"] = self.now
        return self.check()

    def schedule_late_traffic(self, begin_s: float) -> None:
        """A second of the clients' messages from begin_s on (after a heal or a restart)."""
        t = begin_s
        while True:
            t += self.rng.expovariate(self.case.rate_per_s)
            if t > begin_s + 1.0:
                break
            self.push(t, "submit", "")
            self.late_submits += 1

    def run_until(self, t_end: float, stop=None) -> bool:
        """Run the events up to t_end, or until stop() is true (then True)."""
        while self.events and self.events[0][0] <= t_end:
            if stop is not None and stop():
                return True
            self.step()
        self.now = max(self.now, t_end)
        return bool(stop is not None and stop())

    def step(self) -> None:
        at, _, kind, dest, src, data = heapq.heappop(self.events)
        self.now = at
        if kind == "submit":
            if at > self.traffic_end_s:
                self.late_submits -= 1
            self.submit_random()
            return
        if kind == "group":
            self.change_group()
            return
        if kind == "crash":
            self.crash(dest)
            return
        if kind == "restart":
            self.restart(dest)
            return
        if kind == "cut":
            if self.case.cut_site is not None:
                x = self.case.cut_site
                self.cut_pairs |= {p for p in self.case.wires if x in p}
            else:
                a, b = self.case.cut_pair
                self.cut_pairs |= {(a, b), (b, a)}
            self.stats["cuts"] = self.stats.get("cuts", 0) + 1
            if dest == "again":  # (the recut: what is on the wire then is lost with it)
                self.events = [e for e in self.events if not (
                    e[2] == "hop" and (self.site_of[e[4]], self.site_of[e[3]]) in self.cut_pairs)]
                heapq.heapify(self.events)
            return
        if kind == "lan":
            self.lan_split = dest == "split"
            self.stats["lan_splits"] = self.stats.get("lan_splits", 0) + self.lan_split
            return
        if kind == "heal":
            self.cut_pairs = set()
            if self.case.cut_for_good is not None:  # (that one stays cut)
                a, b = self.case.cut_for_good
                self.cut_pairs |= {(a, b), (b, a)}
            self.heal_pending = False
            self.healed_at = self.now
            self.stats["heals"] = self.stats.get("heals", 0) + 1
            return
        node = self.nodes[dest]
        if node.crashed_at is not None:
            return
        if kind == "ring":
            node.orderer.receive(data, src, at)
        elif kind == "hop":
            node.gateway.hop_datagram(src, data, at)
        elif kind == "tick":
            node.sites.tick(at)
            node.gateway.tick(at)  # the ring's safe_lts moves on tokens that deliver nothing
            self.push(at + self.tick_s, "tick", dest)
        elif kind == "gtick":
            if at != self.gtick_at[dest]:
                return  # superseded by an earlier deadline
            self.gtick_at[dest] = float("inf")
            node.gateway.tick(at)
        self.drain(dest)
        if self.recut_armed:
            self.recut_at_decision(node)

    def recut_at_decision(self, node: Node) -> None:
        """(case.recut_after_s) The first daemon of the cut link's two ends that decides the
        healed views' merge (its READY is in) while the other end has not: the link is cut
        again a moment later, comes back recut_for_s later, and the other end dies just after."""
        g = node.gateway
        if g.site_id not in self.case.cut_pair or g.merging is None or g.site_id not in g.merging.ready:
            return
        other = [s for s in self.case.cut_pair if s != g.site_id][0]
        if any(n.gateway.merging is not None and other in n.gateway.merging.ready
               for name, n in self.live().items() if self.site_of[name] == other):
            return  # (both decided already: no race)
        self.recut_armed = False
        cut_s = self.now + self.case.recut_after_s
        back_s = cut_s + self.case.recut_for_s
        self.push(cut_s, "cut", "again")
        self.push(back_s, "heal", "again")
        self.heal_pending = True  # (until that heal)
        for name in self.case.sites[other]:
            self.push(back_s + self.case.recut_kill_after_s, "crash", name)
        self.schedule_late_traffic(back_s + HEAL_TRAFFIC_AFTER_S)
        self.stats["recuts"] = 1

    def fail(self, kind: str, text: str) -> None:
        self.violations.append("t=%.3f %s: %s" % (self.now, kind, text))

    # -------------------------------------------------------------- checkers
    def check(self) -> SitesResult:
        self.check_agreed()
        self.check_fifo()
        self.check_causal()
        self.check_safe()
        self.check_no_loss()
        self.check_views()
        self.check_one_view()
        kill_at = getattr(self, "kill_at", None)
        if kill_at is not None:  # how long the survivors took to leave the killed site out
            installs = [next((v[4] for v in n.views if v[0] == sr.CONF_REGULAR), None)
                        for n in self.live().values() if not n.restarted]
            if installs and None not in installs:
                self.stats["view_after_kill_s"] = max(installs) - kill_at
        healed_at = getattr(self, "healed_at", None)
        if healed_at is not None:  # how long the views took to merge after the heal
            merged = [n.views[-1][4] for n in self.live().values()
                      if n.views and n.views[-1][4] > healed_at and len(n.views[-1][2]) == len(self.case.sites)]
            if merged and len(merged) == len(self.live()):
                self.stats["view_after_heal_s"] = max(merged) - healed_at
        synced = [n.synced_at - n.started_at for n in self.nodes.values() if n.restarted and n.synced_at]
        if synced:  # how long a restarted daemon took to be up to date (from its start)
            self.stats["sync_after_restart_s"] = max(synced)
        if self.latency:
            lat = sorted(self.latency)
            self.stats["latency_median_s"] = lat[len(lat) // 2]
            self.stats["latency_max_s"] = lat[-1]
        if self.groups:  # (site, message) pairs without a member: what pruning may leave out
            sites = len(self.case.sites)
            self.stats["sites_without_member"] = sum(sites - len(x) for x in self.interest().values())
        for n in self.nodes.values():
            for k, v in n.gateway.counters.items():
                if k.startswith(("site_records_out", "site_records_unknown", "hop_stream", "hop_peer_dead",
                                 "site_merges_routed_around", "site_giveups_of_a_dead_site")):
                    self.stats[k] = self.stats.get(k, 0) + v
                elif k.startswith("site_pruned_to_"):  # SKIPs sent in place of a body (pruning)
                    self.stats["skips_sent"] = self.stats.get("skips_sent", 0) + v
        logs = [line for n in self.nodes.values() for line in list(n.orderer.log) + list(n.gateway.log)]
        return SitesResult(self.seed, self.violations, self.stats, logs)

    def check_agreed(self) -> None:
        """Any two daemons deliver the messages they both delivered in the same order."""
        names = sorted(self.nodes)
        for i, a in enumerate(names):
            for b in names[i + 1:]:
                pos_b = self.nodes[b].position
                common = [s for s in self.nodes[a].delivered if s in pos_b]
                for x, y in zip(common, common[1:]):
                    if pos_b[x] > pos_b[y]:
                        self.fail(AGREED, "%s delivered %d before %d, %s the other way" % (a, x, y, b))
                        break

    def check_fifo(self) -> None:
        """Per sending daemon, in the order its clients submitted (serials grow with time)."""
        for name, node in sorted(self.nodes.items()):
            last: Dict[str, int] = {}
            for serial in node.delivered:
                origin = self.submitted[serial][2]
                if serial < last.get(origin, 0):
                    self.fail(FIFO, "%s delivered %d from %s after its later %d" % (name, serial, origin, last[origin]))
                    break
                last[origin] = serial

    def check_causal(self) -> None:
        """A message comes after every message its sending daemon had delivered before the
        client sent it (what the client could have read), of those this daemon delivers: one
        of another view (the other side of a partition) it never delivers, and one it should
        have is the no-loss checker's."""
        for name, node in sorted(self.nodes.items()):
            for serial in node.delivered:
                origin, prefix = self.submitted[serial][2], self.submitted[serial][3]
                before = self.nodes[self.submitted[serial][5]].delivered[:prefix]
                late = [d for d in before if node.position.get(d, -1) > node.position[serial]]
                if late:
                    self.fail(CAUSAL, "%s delivered %d before %d, which %s had delivered before "
                                      "sending it" % (name, serial, late[0], origin))
                    return

    def check_safe(self) -> None:
        """A SAFE message is delivered only once every daemon of every site holds it."""
        for name, node in sorted(self.nodes.items()):
            for serial in node.delivered:
                if self.submitted[serial][0] != sr.SAFE_MESS:
                    continue
                key, at = node.key_of[serial], node.delivered_at[serial]
                members = node.delivered_in[serial] or tuple(range(len(self.case.sites)))
                for other, o in sorted(self.nodes.items()):
                    if o.crashed_at is not None and o.crashed_at <= at:
                        continue  # not a member any more when it was delivered
                    if o.started_at > at or (o.restarted and (o.synced_at or float("inf")) > at):
                        continue  # not a member yet: not up to date
                    if o.restarted and serial not in o.position:
                        continue  # stable before it came (whether it owes it: no loss)
                    if self.site_of[other] not in members:
                        continue  # not in the view (EVS: SAFE holds in its configuration)
                    if o.held_at.get(key, float("inf")) > at:
                        self.fail(SAFE, "%s delivered SAFE %d at %.4f; %s held it only at %.4f"
                                  % (name, serial, at, other, o.held_at.get(key, float("inf"))))
                        return

    def segments(self, node: Node) -> Dict[tuple, frozenset]:
        """A daemon's deliveries cut by its view changes (a view: its seq and its sites; two
        components of a partition each have a view of the same seq): ("regular", old view,
        transitional view) -> what it delivered in the old view's regular part before the
        TRANSITIONAL; ("transitional", transitional view, new view) -> between TRANSITIONAL and
        REGULAR (in a merge, each side comes with its own transitional view)."""
        out = {}
        start, old, trans = 0, (0, ()), None
        for kind, view, sites, at, _ in node.views:
            if kind == JOINED:  # (what came before is not its; each came in at its own
                # point, two daemons of a site restarted whole too: never compared)
                old, start = (JOINED, view, sites, id(node)), at
                continue
            if kind == sr.CONF_TRANSITIONAL:
                trans = (view, sites)
                out["regular", old, trans] = frozenset(node.delivered[start:at])
            else:
                out["transitional", trans, (view, sites)] = frozenset(node.delivered[start:at])
                old = (view, sites)
            start = at
        return out

    def view_of_delivery(self, node: Node) -> Dict[int, tuple]:
        """serial -> the last REGULAR view (seq, sites) installed before it was delivered."""
        out, view, i = {}, (0, ()), 0
        for idx, serial in enumerate(node.delivered):
            while i < len(node.views) and node.views[i][3] <= idx:
                if node.views[i][0] in (sr.CONF_REGULAR, JOINED):
                    view = node.views[i][1:3]
                i += 1
            out[serial] = view
        return out

    def check_one_view(self) -> None:
        """Extended virtual synchrony: a message is delivered in one view wherever it is."""
        first: Dict[int, Tuple[str, tuple]] = {}
        for name, node in sorted(self.nodes.items()):
            for serial, view in self.view_of_delivery(node).items():
                seen = first.setdefault(serial, (name, view))
                if seen[1] != view:
                    self.fail(ONE_VIEW, "%s delivered %d in view %s, %s in view %s"
                              % (seen[0], serial, seen[1], name, view))
                    return

    def check_views(self) -> None:
        """Every living daemon ends in the view of the sites it can reach; daemons that
        install the same view saw the same sites in it, and delivered the same messages in
        the old view's regular part and in the transitional part (virtual synchrony)."""
        installed: Dict[int, Tuple[str, tuple]] = {}
        for name, node in sorted(self.nodes.items()):
            regular = [v for v in node.views if v[0] == sr.CONF_REGULAR]
            for _, view, sites, _, _ in regular:
                first = installed.setdefault(view, (name, sites))
                if first[1] != sites and set(first[1]) & set(sites):
                    self.fail(VIEW, "%s installed view %d with sites %s, %s with %s" % (name, view, sites, first[0], first[1]))
            if node.crashed_at is None:
                regular = [v for v in node.views if v[0] in (sr.CONF_REGULAR, JOINED)]
                final = set(regular[-1][2]) if regular and regular[-1][2] else set(range(len(self.case.sites)))
                if final != self.component(self.site_of[name]):
                    self.fail(VIEW, "%s ends in a view of sites %s; it can reach %s"
                              % (name, sorted(final), sorted(self.component(self.site_of[name]))))
        segs = {name: self.segments(node) for name, node in self.nodes.items()}
        names = sorted(self.nodes)
        interest = self.interest()
        for i, a in enumerate(names):
            for b in names[i + 1:]:
                for key in segs[a].keys() & segs[b].keys():
                    if segs[a][key] != segs[b][key]:
                        diff = sorted(x for x in segs[a][key] ^ segs[b][key]
                                      if self.site_owes(self.site_of[a], x, interest)
                                      and self.site_owes(self.site_of[b], x, interest))
                        if not diff:
                            continue  # (groups) a site without a member may go without it
                        self.fail(VIRTUAL_SYNCHRONY, "%s and %s delivered different messages in %s "
                                  "(e.g. %d)" % (a, b, key, diff[0]))
                        return

    def check_no_loss(self) -> None:
        must_all = self.must_deliver()
        for name, node in sorted(self.live().items()):
            must = must_all[name]
            missing = sorted(must - node.position.keys())
            if missing:
                self.fail(LOSS, "%s never delivered %d of %d messages (first: %d)"
                          % (name, len(missing), len(must), missing[0]))


def run_seed(seed: int, on_start=None, delivery_filter=None, unreliable: bool = False,
             lan_splits: bool = False, groups: bool = False) -> SitesResult:
    services = SERVICES + ([sr.UNRELIABLE_MESS] if unreliable else [])
    return SitesSim(seed, on_start=on_start, delivery_filter=delivery_filter, services=services,
                    lan_splits=lan_splits, groups=groups).run()


def replay_command(seed: int, unreliable: bool = False, lan_splits: bool = False,
                   groups: bool = False) -> str:
    return "python3 tests/sites_sim.py %d --log%s%s%s" % (
        seed, " --unreliable" if unreliable else "", " --lan-splits" if lan_splits else "",
        " --groups" if groups else "")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Run one seed of several sites joined by HOP links "
                                     "in the deterministic simulator and check the guarantees.")
    parser.add_argument("seed", nargs="?", type=int, default=1)
    parser.add_argument("--log", action="store_true", help="print the daemons' protocol logs")
    parser.add_argument("--unreliable", action="store_true",
                        help="the clients send UNRELIABLE messages too (best effort, to every site)")
    parser.add_argument("--lan-splits", action="store_true",
                        help="split a site's LAN in two for a while (two rings of one site: not handled yet)")
    parser.add_argument("--groups", action="store_true",
                        help="the clients join and leave groups during the traffic; a site owes a "
                        "message only if it has a member of its group then")
    args = parser.parse_args(argv)
    case = case_for_seed(args.seed, args.lan_splits)
    print("sites %s, costs %s, %.0f msg/s for %.0f s" % (case.sites, case.costs, case.rate_per_s, case.traffic_s))
    res = run_seed(args.seed, unreliable=args.unreliable, lan_splits=args.lan_splits, groups=args.groups)
    if args.log:
        print("\n".join(res.log_lines))
    print(res.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
