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
decide their merge (the next view leaves it out, chained after the merge; in a seed whose
representative crashed, a site's representative instead: the next daemon takes the merge over;
forced_merge_kill_case and bench/sites_merge_kill_scan.py place it at each step), or (a mesh of three
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
views, its deliveries replayed; where the views merged, each joined site's members become those
a daemon of that site had where it installed the merged view (each side saw only its own
side's joins and leaves: read as they were, the table is stale; seeds 176, 901, 986 "lost"
messages by that stale table, not by the daemons). A message that only a daemon restarted
into a running ring delivered (a fork's own, pruned everywhere else: seed 89) takes that
daemon's replay, its own site counted as a site that may owe it. The representative of each site of a
merged view sends its site's STATE (SITES_STATE_GROUP, as SitesGroupCore's exchange does;
there is no group core here), from which the gateways learn the joined sites' members.
With --client-views (SitesSim(client_views=True); implies --groups) there is: each daemon runs
its SitesGroupCore, fed as the daemon feeds it (its ROSTERs, REJOINs and the sites' STATE go
into the order; the simulator sends no STATE of its own), with one client #c#<name>, and
check_client_views reads that client's membership messages. A message's interest is then, per
site, the core's table where a daemon delivered it in a view holding that site (its sender's
first; core_interest).
With --hostile P (SitesSim(hostile=P), SitesHostile) a student on the LAN sends, per packet a
daemon sends on a HOP link or its LAN while the clients send, one hostile datagram with chance
P (mangled, replayed, forged HELLOs, forged records in well-formed DATA, forged ACKs and NACKs,
another team's; its own Random: the seed's other draws stay as they were); --key signs the
daemons' packets (the forger has no key), --forge-in-session lets a keyless forger use a
link's sniffed session and seq (what only a key stops). The checkers stay as they are: they
look at what the honest daemons deliver.
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
import struct
import sys
from dataclasses import dataclass, field
from typing import Container, Dict, List, Optional, Tuple

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
CLIENT_VIEW = "client view"  # (--client-views) a client's group membership messages are wrong
KINDS = (FOREIGN, DUPLICATE, AGREED, FIFO, CAUSAL, SAFE, LOSS, VIEW, VIRTUAL_SYNCHRONY, ONE_VIEW, CLIENT_VIEW)


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
    #: (with merge_kill_after_s) only the daemon that represents site merge_kill then is
    #: killed, not every daemon of it: the next of its ring takes the merge over
    merge_kill_rep: bool = False
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
    #: (--cut-after-merge) the link between these two sites of a mesh of three is cut this
    #: long after the heal (the views {x} and {y, z} merging, or merged), and comes back
    #: merge_cut_for_s later (None: never); the two reach each other through the third site
    merge_cut_after_s: Optional[float] = None
    merge_cut_pair: Tuple[int, int] = (0, 1)
    merge_cut_for_s: Optional[float] = None


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
    began_afresh: bool = False  #: its ring started the sites' state afresh (it took none)
    #: (time, members) of each regular ring it installed (RingOrderer.recent_changes)
    rings: List[tuple] = field(default_factory=list)
    #: with groups: group -> the daemons whose client is a member, by the JOIN / LEAVE this
    #: daemon delivered so far (the one order's table at that point)
    members: Dict[str, set] = field(default_factory=dict)
    #: the incarnations it read: (time, site -> epoch, its own site's included; 0: not known
    #: yet), a row at each change; see SitesSim.same_incarnation
    incarnations: List[tuple] = field(default_factory=list)
    #: the incarnation of each site as this daemon named it at each of its views (parallel
    #: to views): views of other incarnations of a site are other views
    view_tags: List[dict] = field(default_factory=list)
    #: (drain) while the outputs a poll made before it took a state are read: its epoch then
    epoch_before_install: Optional[int] = None
    #: (time, deliveries before) where it took the state of another ring of its site (its
    #: ring was a fork of the site: it left that view and joined the kept one)
    rejoined: List[Tuple[float, int]] = field(default_factory=list)
    syncs_seen: int = 0  #: SitesOrderer.syncs_installed when last looked at
    #: (stood down at, took a state at) for each time it stood down to take another ring's
    #: state (SiteGateway.stand_down), and when the wait going on began (None: none)
    waited: List[Tuple[float, float]] = field(default_factory=list)
    waiting_since: Optional[float] = None
    #: stood down at -> the ring whose round's point it stood down at (one per wait)
    stood_down_in: Dict[float, object] = field(default_factory=dict)
    #: (time, ring, late daemons) of each round's point it passed holding the state
    #: (SiteSync("point")): the late ones stood down there, at that point of the ring's order
    points: List[tuple] = field(default_factory=list)
    starts_over_seen: int = 0  #: SitesOrderer.starts_over when last looked at
    #: (deliveries before, index in views of its JOINED) where its ring started the sites'
    #: state afresh after it stood down for a state that never came (SiteGateway.start_over):
    #: it left its views and began view 0 as a fresh daemon, its table of the other sites too
    started_over: List[Tuple[int, int]] = field(default_factory=list)
    #: (--client-views) the daemon's SitesGroupCore, fed what the daemon's core is fed, with
    #: one client session "#c#<name>"; what that client got: (time, MembershipMessage, the
    #: sites of the regular view then (none in a transitional one), the sites of the
    #: transitional view then (none in a regular one), in the fork's closing transitional
    #: view, forked since the last regular view of the sites)
    core: Optional[sr.SitesGroupCore] = None
    client_log: List[tuple] = field(default_factory=list)
    fork_ending: bool = False  #: between close_fork's transitional view and the install
    #: data serial -> the sites with a member of its groups in the core's table where it was
    #: delivered here (ROSTERs, REJOINs and the sites' exchange change members too)
    core_sites: Dict[int, frozenset] = field(default_factory=dict)
    forks_at_view: int = 0  #: the gateway's site_forks at its last regular view of the sites
    #: (view seq, sites) of the last SiteSync("install") not yet read by joined_view
    install_view: Optional[Tuple[int, List[int]]] = None


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


def case_for_seed(seed: int, lan_splits: bool = False, cut_after_merge: bool = False) -> SitesCase:
    """2-3 sites of 1-3 daemons; between them a full mesh or a line (so that some packets go
    through a middle site), each link 1-10 % loss, 10-50 ms, 1-10 Mbit/s. With lan_splits, a
    site of several daemons is also split in two for a while (a site split in two rings: the
    known hole, so never in the default draws). With cut_after_merge, a mesh of three with a
    site cut off and healed (drawn now if the seed has no cut or kill) has a link cut after
    the heal, while or after the views merge (_draw_cut_after_merge)."""
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
    elif (case.heal_after_s is not None and case.site_kill_after_s is None
          and case.rep_crash_after_s is not None and late.random() < 0.5):
        # ... and in seeds whose representative crashed (the draw above never fires there, so
        # its seeds keep their cases): a representative dies then, in a site that keeps a
        # daemon alive (the one whose representative crashed earlier if it has three, or if
        # that one comes back; SitesSim.crash_representative never kills a site's last daemon)
        back = case.restart_name == sites[case.rep_crash_site][0]
        spare = [i for i in several if i != case.rep_crash_site or back or len(sites[i]) > 2]
        if spare:
            case.merge_kill = late.choice(spare)
            case.merge_kill_after_s = late.uniform(0.0, 1.2)
            case.merge_kill_rep = True
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
    if cut_after_merge:  # (its own stream, drawn last: without the flag no seed moves)
        _draw_cut_after_merge(case, random.Random(seed * 7919 + 24))
    return case


def _draw_cut_after_merge(case: SitesCase, rng: random.Random) -> None:
    """(--cut-after-merge) In a mesh of three: a site cut off and healed after the others
    suspected it (drawn here in a seed with no cut, kill or merge kill of its own; a seed's
    own cut-off site is kept), so that the views {x} and {y, z} merge; then, 0-4 s after the
    heal (half of them within 1 s: the merge is agreed 0.3-1 s after it; before the decision,
    between it and the install, or after), a link is cut: mostly y - z, two sites of one old view, whose records
    a merged view's trees keep within that view (merged_view_trees), else x and one of them.
    The two ends reach each other through the third: routed around, no view change. Half
    the time the link comes back 0.5-4 s later."""
    n = len(case.sites)
    if n != 3 or any(case.costs[i][j] <= 0 for i in range(n) for j in range(n) if i != j):
        return  # (a line: a cut link splits the sites)
    if case.cut_for_good is not None or case.recut_after_s is not None or case.merge_kill_after_s is not None:
        return
    if case.cut_site is None:
        if case.cut_after_s is not None or case.site_kill_after_s is not None:
            return
        suspected_s = sr.HopSettings().peer_silence_s + sr.SITE_GRACE_S
        case.cut_site = rng.randrange(n)
        case.cut_after_s = rng.uniform(0.0, case.traffic_s)
        case.heal_after_s = rng.uniform(suspected_s + 0.3, suspected_s + 2.0)
    elif case.heal_after_s is None:
        return
    x = case.cut_site
    y, z = [s for s in range(n) if s != x]
    case.merge_cut_pair = (y, z) if rng.random() < 0.7 else tuple(sorted((x, rng.choice([y, z]))))
    # (half within the first second: the merge is agreed then, 0.3-1 s after the heal)
    case.merge_cut_after_s = rng.uniform(0.0, 1.0) if rng.random() < 0.5 else rng.uniform(1.0, 4.0)
    if rng.random() < 0.5:
        case.merge_cut_for_s = rng.uniform(0.5, 4.0)


def forced_merge_kill_case(seed: int, after_s: float, site: Optional[int] = None, rep: bool = True,
                           lan_splits: bool = False) -> SitesCase:
    """The seed's case with its merge kill forced: after_s after the heal, the representative
    of `site` (rep) or every daemon of it dies (bench/sites_merge_kill_scan.py sweeps after_s).
    site None: the seed's own merge kill's site if it draws one (rep: of several daemons), else
    (rep) the first site of several daemons, (not rep) site 0. ValueError if the seed's cut never heals (no merge), or
    (rep) the site has one daemon."""
    case = case_for_seed(seed, lan_splits)
    if case.heal_after_s is None:
        raise ValueError("seed %d: no cut that heals, so no merge to kill in" % seed)
    if site is None and case.merge_kill_after_s is not None and (not rep or len(case.sites[case.merge_kill]) > 1):
        site = case.merge_kill
    elif site is None:
        site = next((i for i, s in enumerate(case.sites) if len(s) > 1), None) if rep else 0
    if site is None or not 0 <= site < len(case.sites) or (rep and len(case.sites[site]) < 2):
        raise ValueError("seed %d: no site of several daemons to kill the representative of "
                         "(sites %s)" % (seed, case.sites))
    case.merge_kill, case.merge_kill_after_s, case.merge_kill_rep = site, after_s, rep
    return case


class SitesSim:
    def __init__(self, seed: int, case: Optional[SitesCase] = None, tick_s: float = 0.01,
                 on_start=None, delivery_filter=None, services=None, lan_splits: bool = False,
                 groups: bool = False, hostile: float = 0.0, key: Optional[bytes] = None,
                 forge_in_session: bool = False, split_quorum: bool = True, client_views: bool = False,
                 cut_after_merge: bool = False):
        self.seed = seed
        #: every daemon runs the group core too (SitesGroupCore: its ROSTERs, REJOINs and the
        #: sites' STATE go into the order) with a client session, and check_client_views reads
        #: what that client got; implies groups (a run's traffic is another than without)
        self.client_views = client_views
        groups = groups or client_views
        #: the daemons' key (--key: every ring and HOP packet carries its tag), or None
        self.key = key
        #: hostile datagrams (--hostile P): per packet sent on a HOP link or a site's LAN while
        #: the clients send, the chance that a hostile one arrives too (SitesHostile); its own
        #: Random, so that a seed's other draws stay as they were
        self.hostile = SitesHostile(random.Random(seed * 7919 + 23), self, hostile, forge_in_session)
        #: clients join and leave GROUPS during the traffic and send to one of them; a site
        #: owes a message only if it has a member of its group where the message is ordered.
        #: Drawn from a Random of their own (a run without groups stays as it was)
        self.groups = groups
        self.lan_splits = lan_splits
        #: HopSettings.split_quorum (dynamic voting, forks): on as the daemon ships it (sites of
        #: at least split_quorum_min_daemons, 3; with lan_splits 2); False (--no-split-quorum):
        #: off, as every run without lan_splits was before the daemon turned it on
        self.split_quorum = split_quorum
        self.group_rng = random.Random(seed * 7919 + 17)
        self.joined: Dict[str, set] = {}  # daemon -> the groups its client asked to join (last)
        self.services = list(services or SERVICES)  #: what the simulated clients send
        self.rng = random.Random(seed)
        self.case = case or case_for_seed(seed, lan_splits, cut_after_merge)
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
        self.lan_windows: List[Tuple[float, float]] = []  #: (from, to) of each such split
        self.late_submits = 0  # submissions after the heal still to come
        self.next_check_s = 0.0
        self.traffic_end_s = float("inf")
        self.gtick_at: Dict[str, float] = {}
        self.latency: List[float] = []
        settings = {}
        self.restarts = 0
        self.merge_killed: Optional[str] = None  #: (merge_kill_rep) the representative killed
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
        seal = sr.RingSeal(self.key) if self.key else None
        orderer = sr.RingOrderer(name, incarnation, names, random.Random(self.rng.random()),
                                 sr.RingSettings(), now=now, seal=seal)
        gateway = sr.SiteGateway(name, self.case.sites, self.case.costs, orderer,
                                 self.hop_settings(site), seal=seal, now=now)
        gateway.trace_held = []
        node = Node(orderer, gateway, sr.SitesOrderer(orderer, gateway, {}, now), started_at=now)
        if self.client_views:
            self.attach_group_core(name, node)
        return node

    def attach_group_core(self, name: str, node: Node) -> None:
        """(--client-views) The daemon's group core, and the session of its client #c#<name>
        (the member name the simulated clients' JOIN and LEAVE carry)."""
        node.core = sr.SitesGroupCore(name, node.sites, self.case.sites)
        session = sr.ClientSession(0, name, lambda _: True, random.Random(0))
        session.private_group = "#c#%s" % name
        session.group_membership = True
        node.core.add_session(session)

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
        # (a site split in two rings: dynamic voting and forks, as the daemon ships them: in
        # sites of three daemons or more, where a crash of the first one is still one takeover
        # in a site of two; the runs that split a LAN vote in sites of two as well, since their
        # split may cut a site of two)
        return sr.HopSettings(rate_bytes_s=bits / 8 * 0.9, burst_bytes=16000, prune=self.groups,
                              split_quorum=self.split_quorum,
                              split_quorum_min_daemons=2 if self.lan_splits else 3)

    # -------------------------------------------------------------- the networks
    def push(self, at: float, kind: str, dest: str, src: str = "", data: bytes = b"") -> None:
        self.counter += 1
        heapq.heappush(self.events, (at, self.counter, kind, dest, src, data))

    def ring_send(self, src: str, dest: str, raw: bytes) -> None:
        self.stats["ring_packets"] += 1
        if self.hostile.share and self.now < self.traffic_end_s:
            self.hostile.on_lan(src, dest, raw)
        if self.lan_split and (src in self.case.lan_split_apart) != (dest in self.case.lan_split_apart):
            return  # (a split inside one site: the rest of the site is another LAN's)
        lan = self.case.lan
        if self.rng.random() < lan.loss:
            return
        self.push(self.now + lan.delay_s + self.rng.random() * lan.jitter_s, "ring", dest, src, raw)

    def hop_send(self, src: str, dest: str, raw: bytes) -> None:
        self.stats["hop_packets"] += 1
        if self.hostile.share and self.now < self.traffic_end_s:
            self.hostile.on_hop(src, dest, raw)
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
            own_epoch = node.gateway.epoch  # (before a state this poll may take)
            outs = node.sites.poll()
            self.note_rings(node)
            gouts = []
            install_at = None
            for out in outs:
                if isinstance(out, sr.SiteSync) and out.kind == "point":
                    node.points.append((self.now, node.sites.ring_id, frozenset(out.late)))
                if isinstance(out, sr.Send):
                    self.ring_send(name, out.dest, out.packet)
                elif isinstance(out, sr.SendToAll):  # IP multicast: each copy may be lost alone
                    for dest in out.dests:
                        self.ring_send(name, dest, out.packet)
                elif isinstance(out, sr.SiteSync) and node.core is not None:
                    if out.kind == "install" and install_at is None:
                        install_at = len(gouts)
                    gouts.append(out)  # (the core answers at its point of the order)
                elif isinstance(out, sr.ConfigurationChange) and node.core is not None:
                    gouts.append(out)
                elif isinstance(out, sr.SiteSync):
                    if out.export:  # (no group table here)
                        node.sites.send_state(out, {})
                    if out.kind == "install" and install_at is None:
                        install_at = len(gouts)
                elif not isinstance(out, sr.ConfigurationChange):
                    gouts.append(out)
                if isinstance(out, sr.SiteSync) and out.kind == "install" and node.install_view is None:
                    node.install_view = out.view
            if install_at:
                # what came before the state was taken, in the same poll (a fork's view ended
                # by close_fork, its deliveries): before the rejoin, where the daemon had it
                # (its views there are of the incarnation it had: seed 981 --lan-splits
                # --client-views, b2's fork installed its own view 1 at the point and took the
                # kept state in that poll; read with the kept epoch, it clashed with a1's view 1)
                node.epoch_before_install = own_epoch
                self.group_outputs(name, node, gouts[:install_at])
                node.epoch_before_install = None
                gouts = gouts[install_at:]
            if node.gateway.stood_down and node.waiting_since is None:
                node.waiting_since = self.now
                node.stood_down_in[self.now] = node.sites.ring_id
            if node.synced_at is None and node.sites.synced:
                self.up_to_date(node)
            elif node.sites.synced and node.sites.syncs_installed > node.syncs_seen:
                self.rejoined(node)
            elif node.sites.synced and getattr(node.sites, "starts_over", 0) > node.starts_over_seen:
                self.began_over(node)
            self.note_incarnation(node)
            if node.sites.late and node.crashed_at is None:  # a real daemon stops on it
                self.fail(VIEW, "%s stops: %s" % (name, node.sites.late))
                self.crash(name)
                return
            self.group_outputs(name, node, gouts)
            if not outs:
                break
        for key in node.gateway.trace_held:
            node.held_at.setdefault(key, self.now)
        del node.gateway.trace_held[:]
        deadline = node.gateway.next_deadline_s()
        if deadline < self.gtick_at[name]:
            self.gtick_at[name] = deadline
            self.push(deadline, "gtick", name)

    def group_outputs(self, name: str, node: Node, gouts: list) -> None:
        """The HOP packets, view changes and deliveries of one poll, in order."""
        if self.delivery_filter is not None and gouts:
            gouts = self.delivery_filter(name, gouts)
        for out in gouts:
            if isinstance(out, sr.SendHop):
                self.hop_send(name, out.dest, out.packet)
            elif isinstance(out, (sr.SiteSync, sr.ConfigurationChange)):
                self.core_input(name, node, out)
            elif isinstance(out, sr.SiteViewChange):
                joined = out.kind == sr.CONF_REGULAR and set(out.sites) - set(self.last_regular(node))
                node.views.append((out.kind, out.view_seq, tuple(out.sites), len(node.delivered), self.now))
                node.view_tags.append(self.tags(node))
                node.view_sites = tuple(out.sites)
                if joined and self.groups and node.core is None:
                    self.send_site_state(name, node, out.view_seq)
                if node.core is not None:
                    node.fork_ending = out.fork_ends
                    if out.kind == sr.CONF_REGULAR:
                        node.forks_at_view = node.gateway.counters["site_forks"]
                    node.core.site_view_change(out)
                    self.take_client_output(name, node)
            else:
                self.record_delivery(name, node, out.msg)
                if node.core is not None:
                    self.note_core_sites(node, out.msg)
                    node.core.deliver(out.msg)
                    self.take_client_output(name, node)

    def note_core_sites(self, node: Node, msg: sr.DaemonMessage) -> None:
        if msg.kind != sr.DATA or len(msg.data) < 8:
            return
        serial = int.from_bytes(msg.data[:8], "big")
        groups = [node.core.groups.get(g) for g in msg.groups]
        node.core_sites[serial] = frozenset(self.site_of[d] for g in groups if g is not None
                                            for d in g.members.values())

    def core_input(self, name: str, node: Node, out) -> None:
        """(--client-views) A ring's configuration change or a state point, to the group core
        as the daemon gives it (Daemon._run_orderer, _site_sync)."""
        core = node.core
        if isinstance(out, sr.ConfigurationChange):
            core.configuration_change(out, core.memb_time + 1)
        else:
            try:
                answer = core.site_sync(out)
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                self.fail(CLIENT_VIEW, "%s: the group table of the sites' state does not decode (%s)" % (name, exc))
                return
            if out.export:
                node.sites.send_state(out, answer)
            if out.kind == "install":
                node.fork_ending = False
                node.forks_at_view = node.gateway.counters["site_forks"]
        self.take_client_output(name, node)

    def take_client_output(self, name: str, node: Node) -> None:
        """(--client-views) The membership messages the core queued for the client, with what
        the checker needs to know of the daemon then."""
        session = node.core.local.get("#c#%s" % name)
        if session is None or not session.out.chunks:
            return
        forked = node.gateway.counters["site_forks"] > node.forks_at_view
        for raw in session.out.chunks:
            msg = sr.decode_message(raw, 0, session.private_group)
            if msg.is_membership:
                regular = not node.views or node.views[-1][0] != sr.CONF_TRANSITIONAL
                node.client_log.append((self.now, msg, tuple(node.view_sites) if regular else (),
                                        () if regular else tuple(node.view_sites), node.fork_ending, forked))
        session.out.clear()

    def up_to_date(self, node: Node) -> None:
        """A restarted daemon's state came: its view is the one it came in."""
        node.synced_at = self.now
        node.syncs_seen = node.sites.syncs_installed
        node.began_afresh = node.sites.syncs_installed == 0
        if not node.restarted:
            return
        self.restart_pending = False
        self.joined_view(node)

    def joined_view(self, node: Node) -> None:
        gw = node.gateway
        # the view where it took the state: its gateway may have gone on into the next one in
        # the same poll (seed 1256 --lan-splits --client-views: b2, restarted, took view 0's
        # state and installed view 1 in that poll; a message of view 0's transitional part
        # counted in view 1)
        view_seq, live = node.install_view or (gw.view_seq, gw.live_sites)
        node.install_view = None
        sites = tuple(live) if view_seq else ()  # (view 0: as the others name it)
        self.note_incarnation(node)
        node.views.append((JOINED, view_seq, sites, len(node.delivered), self.now))
        node.view_tags.append(self.tags(node))
        node.view_sites = sites

    def last_regular(self, node: Node) -> Tuple[int, ...]:
        """The sites of the daemon's last REGULAR view (or of the one it came in), before the
        one being recorded."""
        views = [v for v in node.views if v[0] in (sr.CONF_REGULAR, JOINED) and v[2]]
        return views[-1][2] if views else tuple(range(len(self.case.sites)))

    def send_site_state(self, name: str, node: Node, view_seq: int) -> None:
        """(groups) Views merged: a site's representative sends its STATE, as SitesGroupCore
        does (one part: a head line, then group TAB member TAB daemon), naming the members at
        its site's daemons where the merged view began here. Only by a daemon that saw every
        JOIN and LEAVE of its site (saw_every_join; else nobody learns that site's members, and
        every site sends it everything)."""
        if not self.saw_every_join(node) or node.gateway.representative != name:
            return
        site = self.site_of[name]
        lines = ["0\t-\t0\t%s" % " ".join(self.case.sites[site])]
        for group in sorted(node.members):
            for d in sorted(node.members[group]):
                if self.site_of[d] == site:
                    lines.append("%s\t#c#%s\t%s" % (group, d, d))
        msg = sr.DaemonMessage(sr.STATE, name, "#sitestate#%s" % name, sr.AGREED_MESS,
                               [sr.SITES_STATE_GROUP, str(view_seq)], 1, data="\n".join(lines).encode("latin-1"))
        if node.sites.submit(msg, urgent=True):
            self.stats["site_states_sent"] = self.stats.get("site_states_sent", 0) + 1

    def rejoined(self, node: Node) -> None:
        """A daemon took the state of another ring of its site (SitesOrderer): its ring was a
        fork of the site (a site split in two rings). For the guarantees it left the fork's
        view there and joined the kept incarnation's view, as a restarted daemon does. (A
        daemon that delivered nothing and installed no view also takes another's state, as a
        late daemon: it left no view, but it comes in at the state's point, and what the
        ring it takes the state from delivered before that is not owed to it. Seed 222691:
        b1, the representative, lost ring 1 before it delivered anything; b2, restarted, and
        b3 started afresh (b3 held nothing either), delivered site a's first four messages,
        and b1 took b2's state past them. The checker owed them to b1 from the start.)"""
        node.syncs_seen = node.sites.syncs_installed
        self.wait_ends(node)
        if not node.delivered and not node.views:
            node.rejoined.append((self.now, 0))  # (no view left: none joined, see above)
            return
        node.rejoined.append((self.now, len(node.delivered)))
        self.stats["rejoined"] = self.stats.get("rejoined", 0) + 1
        self.joined_view(node)

    def began_over(self, node: Node) -> None:
        """A daemon stood down to take another ring's state (a fork's), none came, and its
        ring started the sites' state afresh (SiteGateway.start_over): as one that takes a
        state, it left its views there and came into the new incarnation's view 0, with a
        fresh daemon's table of the other sites (node_interest). Seed 86307 --lan-splits
        --groups --site-grace-s 0.3: b2, its fork closed, and b3 restarted."""
        node.starts_over_seen = node.sites.starts_over
        self.wait_ends(node)
        node.began_afresh = True
        node.started_over.append((len(node.delivered), len(node.views)))
        node.rejoined.append((self.now, len(node.delivered)))
        self.stats["began_over"] = self.stats.get("began_over", 0) + 1
        self.joined_view(node)

    def wait_ends(self, node: Node) -> None:
        if node.waiting_since is not None:
            node.waited.append((node.waiting_since, self.now))
            node.waiting_since = None

    @staticmethod
    def waiting_for_state(node: Node, t: float) -> bool:
        """Whether, at t, the daemon had stood down to take another ring's state and had not
        taken it yet (nor started afresh): a late daemon, in no view of the sites (it ended
        its fork's, it joins the kept one's where the state comes), as a restarted one before
        it is up to date."""
        if node.waiting_since is not None and node.waiting_since <= t:
            return True
        return any(start <= t < end for start, end in node.waited)

    def tags(self, node: Node) -> dict:
        """site -> the epoch of its streams as this daemon reads them now (0: not known)."""
        gw = node.gateway
        out = {s: e for s, e in gw.site_epochs.items() if s != gw.site_id}
        out[gw.site_id] = gw.epoch  # (a daemon that stands down keeps its fork's until it takes another)
        if node.epoch_before_install is not None:
            out[gw.site_id] = node.epoch_before_install
        return out

    @staticmethod
    def note_rings(node: Node) -> None:
        for at, ring, members, _ in node.orderer.recent_changes:
            if not any(r[:2] == (at, ring) for r in node.rings[-8:]):
                node.rings.append((at, ring, frozenset(members)))

    def left_out_of_site_ring(self, name: str, t: float) -> bool:
        """`name` was out of its site's ring at t: the last ring that daemons of its site (of
        its incarnation) installed by t does not hold it, and it installed none since. Seed
        111636: b2's token was lost; b1, restarted, and b3 formed ring 2 without it at 1.824;
        a1 delivered SAFE 12 at 2.134 on site b's ARU of that ring; b2 came back at 2.427 and
        took b1's state. EVS: SAFE holds in the configuration that delivers it, and b2 was in
        none of site b's then (as a daemon cut off by a LAN split: apart_at)."""
        node, site, short = self.nodes[name], self.site_of[name], name.split("~")[0]
        latest = None
        for other, o in self.nodes.items():
            if other == name or self.site_of[other] != site or not self.same_incarnation(o, node, t):
                continue
            for at, _, members in o.rings:
                if at <= t and (latest is None or at > latest[0]):
                    latest = (at, members)
        if latest is None or short in latest[1]:
            return False
        return all(at < latest[0] for at, _, _ in node.rings if at <= t)

    def note_incarnation(self, node: Node) -> None:
        tags = self.tags(node)
        if not node.incarnations or node.incarnations[-1][1] != tags:
            node.incarnations.append((self.now, tags))

    def record_delivery(self, name: str, node: Node, msg: sr.DaemonMessage) -> None:
        if msg.kind == sr.STATE and msg.groups and msg.groups[0] in (
                sr.SITES_STATE_GROUP, sr.ROSTER_GROUP, sr.REJOIN_GROUP):
            return  # (a site's STATE after a merge, a ROSTER, a REJOIN: the group cores', not a client's)
        serial = int.from_bytes(msg.data[:8], "big") if len(msg.data) >= 8 else 0
        if getattr(msg, "again", False):  # (an older spread_mini, a bench's --against: none)
            # (a group operation delivered in the fork's view, handed again to the table taken
            # from the kept side, which never had it: the kept incarnation's first delivery)
            if msg.kind not in (sr.JOIN, sr.LEAVE, sr.KILL) or serial not in node.position \
                    or not node.rejoined or node.position[serial] >= node.rejoined[-1][1]:
                self.fail(DUPLICATE, "%s delivered message %d again, not a group operation of its "
                                     "fork's view" % (name, serial))
            return
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

    def representative_of(self, site: int) -> Optional[str]:
        """The live daemon that represents the site now (its ring's choice, as its gateways
        read it); None if the site has no daemon alive."""
        alive = [n for n in self.case.sites[site] if self.nodes[n].crashed_at is None]
        reps = [n for n in alive if self.nodes[n].gateway.is_representative()]
        return (reps or alive or [None])[0]

    def crash_representative(self, site: int) -> None:
        """(merge_kill_rep) kill -9 of the site's representative, unless it is the site's last
        daemon alive (then that is a site killed: another scenario, not drawn)."""
        name = self.representative_of(site)
        alive = [n for n in self.case.sites[site] if self.nodes[n].crashed_at is None]
        if name is None or len(alive) < 2:
            self.stats["merge_kills_skipped"] = 1
            return
        self.crash(name)
        self.merge_killed = name
        self.stats["merge_rep_kills"] = 1
        # (the kill fell in the merge: the representative had proposed it, not installed it)
        self.stats["merge_rep_kills_while_merging"] = int(self.nodes[name].gateway.merging is not None)

    def submit_random(self) -> None:
        if not self.live():
            return  # (every daemon killed: nobody left to send)
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
            # (and when this daemon left with them: the incarnations are the ones then)
            if i and views[i - 1][0] == sr.CONF_TRANSITIONAL:
                out[serial] = views[i - 1][2], self.left_with(views, i - 1)
            elif i < len(views) and views[i][0] == JOINED:
                # it left a fork's view for the kept incarnation's: owed by those that were
                # in the fork with it, just before
                out[serial] = (views[i - 1][2] if i else everyone), views[i][4] - 1e-9
            elif i < len(views):
                out[serial] = views[i][2], self.left_with(views, i)  # the TRANSITIONAL that ends this regular part
            else:
                out[serial] = (views[i - 1][2] if i else everyone), self.now
        return out

    @staticmethod
    def fork_instant(node: Node, serial: int, at: float) -> float:
        """The instant whose incarnation a delivery at `at` is of: a delivery before the daemon
        took the kept state (rejoined) in that same instant is the fork's, just before (as
        left_with reads it). Seed 84502 --lan-splits --unreliable --client-views: b3, a fork
        alone, delivered its own SAFE message in close_fork's view and took the kept state in
        one poll; check_safe read the kept incarnation and asked b2, which never was in the
        fork's configuration, to have held it (seed 86279 --lan-splits --groups --site-grace-s
        0.3 alike: c3's SAFE message and c1)."""
        pos = node.position[serial]
        for rejoined_at, index in node.rejoined:
            if pos < index:
                return min(at, rejoined_at - 1e-9)
        return at

    @staticmethod
    def left_with(views: List[tuple], k: int) -> float:
        """When the daemon left, with its companions, the view that the TRANSITIONAL views[k]
        ends: at that view; but a fork's closing view (close_fork) and the kept state taken
        in one instant (the next view JOINED, no later) it left with the fork's incarnation,
        just before. Seed 981 --lan-splits --client-views: b2's own fork messages, delivered
        in the closing view, were said to be owed by the kept side, which never had them;
        seed 2377 --lan-splits --groups --client-views: c2's, delivered in the fork's regular
        view that closing view ended (EVS owes a message to those in the configuration that
        delivered it, and c1 was never in the fork's)."""
        left = views[k][4]
        if k + 1 < len(views) and views[k + 1][0] == JOINED and views[k + 1][4] <= left:
            left = views[k + 1][4] - 1e-9
        return left

    # -------------------------------------------------------------- incarnations of a site
    # A site split in two rings is two incarnations of the site (its epoch: a ring without
    # the quorum goes on under a new one). The checkers reason by sites; the rule for an
    # incarnation: a view names each of its sites' epochs (its installer's own, and those it
    # read for the others), so two views of different incarnations of a site are different
    # views; SAFE counts the daemons of its view's incarnations; a daemon owes a message only
    # if it was of the incarnation of its site that the view named; a daemon that changes
    # incarnation left one view and joined another (rejoined). An epoch not known (0) is
    # never a difference: where every daemon of a site reads one epoch, as in every seed
    # without a LAN split, nothing changes.
    @staticmethod
    def tags_at(node: Node, t: float) -> dict:
        tags: dict = {}
        for at, row in node.incarnations:
            if at > t:
                break
            tags = row
        return tags

    @staticmethod
    def named_at_views(node: Node) -> List[dict]:
        """The incarnations each of a daemon's views named (view_tags). A site it did not know
        at a view (a merge that joined it forgets its epoch: it may be a new incarnation) is
        the one it learned next, before its next view: its HELLO's, the incarnation the merge
        brought in. Without it a merged view 2 that forgot a site's epoch was taken for the
        same view as a fork of that site's own view 2 (seed 79 --lan-splits)."""
        out = []
        for i, tags in enumerate(node.view_tags):
            begin = node.views[i][4]
            end = node.views[i + 1][4] if i + 1 < len(node.views) else float("inf")
            named = dict(tags)
            for at, row in node.incarnations:
                if at > end:
                    break
                if at >= begin:
                    named.update((s, e) for s, e in row.items() if e and not named.get(s))
            out.append(named)
        return out

    @staticmethod
    def compatible(a: dict, b: dict) -> bool:
        """Two namings of sites' incarnations that differ on no site both know."""
        return all(not a.get(s) or not b.get(s) or a[s] == b[s] for s in a.keys() & b.keys())

    def same_incarnation(self, n: Node, o: Node, t: float) -> bool:
        """Whether daemon n was, at t, of the incarnation of its site that o's view named. A
        daemon that had no state yet at t (restarted: not started, or waiting for the state)
        is of the incarnation whose state it took next: a fork's view that ended before is not
        its own (seeds 7286 and 7238 --lan-splits: a fork's daemon delivered the fork's
        messages as it closed, and a restarted daemon took the kept state after, or at once
        after; nobody else held them, yet it was said to owe them)."""
        site = self.site_of_node(n)
        mine, named = self.tags_at(n, t).get(site, 0), self.tags_at(o, t).get(site, 0)
        if not mine:
            mine = next((row[site] for at, row in n.incarnations if at >= t and row.get(site)), 0)
        return not mine or not named or mine == named

    @staticmethod
    def delivered_before_rejoin(node: Node, serial: int) -> bool:
        return bool(node.rejoined) and node.position.get(serial, 1 << 60) < node.rejoined[-1][1]

    def apart_at(self, a: str, b: str, t: float) -> bool:
        """a and b on the two sides of their site's LAN split at t (a partition inside a site:
        neither holds what the other's side delivers), or b cut off from the rest of its
        site at t by a split after which it went on as another incarnation: like a crashed
        daemon from its crash, it left its site's incarnation from the split on."""
        apart = self.case.lan_split_apart
        for start, end in self.lan_windows:
            if not start <= t < end or self.site_of[b] != self.site_of[self.case.lan_split_apart[0]]:
                continue
            if self.site_of[a] == self.site_of[b] and (a.split("~")[0] in apart) != (b.split("~")[0] in apart):
                return True
            node, site = self.nodes[b], self.site_of[b]
            before = self.tags_at(node, start).get(site, 0)
            if any(start < at and row.get(site, 0) not in (0, before) for at, row in node.incarnations):
                return True
        return False

    def must_deliver(self) -> Dict[str, set]:
        """For each living daemon: what it submitted (if it never crashed: EVS self-delivery),
        and what another living daemon delivered with its site among the companions (a crashed
        daemon's last messages may be lost, but then everywhere)."""
        must = {name: set() for name in self.live()}
        for name, serial in self.owed_pairs(skip=must):
            must[name].add(serial)
        return must

    def owed_undelivered(self) -> bool:
        """Whether a living daemon still owes a message (must_deliver) it has not delivered;
        stops at the first (the drain's stop test: must_deliver whole, on every check of a run
        whose planted loss is never delivered, cost minutes)."""
        live = self.live()
        return any(True for _ in self.owed_pairs(skip={n: live[n].position for n in live}))

    def owed_pairs(self, skip: Dict[str, Container]):
        """(daemon, serial) for each message a living daemon owes (must_deliver's rule), but
        none whose serial is in skip[daemon] (tested first: the rest of the rule costs)."""
        live = self.live()
        for name in live:
            for s, sub in self.submitted.items():
                if sub[5] == name and sub[0] != sr.UNRELIABLE_MESS and s not in skip[name]:
                    yield name, s
        interest = self.interest()
        for node in live.values():
            for serial, (sites, left_s) in self.companions(node).items():
                if serial in interest:  # (groups) only the sites with a member then
                    sites = [x for x in sites if self.site_owes(x, serial, interest)]
                deliverer = node.gateway.name
                for name in live:
                    if serial not in skip[name] and self.site_of[name] in sites \
                            and self.owes(live[name], node, serial, left_s) \
                            and self.same_incarnation(live[name], node, left_s) \
                            and not self.split_off(deliverer, name, node.delivered_at[serial], node):
                        yield name, serial

    def split_off(self, a: str, b: str, t: float, a_node: Optional[Node] = None) -> bool:
        """b was on the other side of its site's LAN split from a at t (or t came after the
        heal, before b's ring re-formed as that fork), and went on after the split as another
        incarnation of the site (a fork): SAFE's rule (apart_at) for no loss.
        Like a crashed daemon from its crash, b left the incarnation a delivers in at the
        split: it could hold nothing a's side ordered from then on (EVS owes a message to
        those that leave its view with the deliverer; b left it earlier, for the fork's), and
        when it takes the kept state, what the kept side delivered meanwhile is not in it (it
        owes what the others deliver from there: owes, rejoined).
        Or a (a_node, the deliverer) is the one that left: it took the kept state after the
        split, and t came before that. What it delivered from the split until then is its own
        side's, whether or not its ring went on under a new epoch (seed 2170 --lan-splits
        --groups --client-views: b3, cut off, lost the token and never formed a ring alone,
        so kept epoch 1; it delivered its own message, which b1 and b2 never had, in its old
        ring's transitional configuration of b3 alone (EVS: those two came from another ring)
        just before it took b1's state)."""
        apart = self.case.lan_split_apart
        if not apart or self.site_of[a] != self.site_of[b] or (a.split("~")[0] in apart) == (b.split("~")[0] in apart):
            return False
        node, site = self.nodes[b], self.site_of[b]
        for start, end in self.lan_windows:
            if t < start:
                continue
            rejoins = [at for at, _ in (a_node.rejoined if a_node is not None else ()) if at > start]
            if rejoins and t < rejoins[0]:
                return True
            before = self.tags_at(node, start).get(site, 0)
            forked = [at for at, row in node.incarnations if start < at and row.get(site, 0) not in (0, before)]
            # up to its fork too, if that came after the heal: b left a's incarnation at the
            # split, and its ring learns it only when it re-forms (token lost, consensus).
            # Seed 73236 --lan-splits --groups --client-views: b1 delivered b1's message,
            # ordered in the ring of before whose last messages b2 never had, 40 ms after the
            # heal and 4 ms before b2 forked; b2 owed nothing of it (EVS: b2 was not in b1's
            # transitional configuration), then took b1's state where it was delivered
            cfg = node.orderer.cfg  # (a fork later than its ring's re-forming is another event's)
            if forked and t < max(end, min(forked[0], end + cfg.token_timeout_s + cfg.consensus_timeout_s)):
                return True
        return False

    def interest(self) -> Dict[int, frozenset]:
        """(groups) data serial -> the sites with a member of its group at its place in the
        one order, by a daemon that saw every JOIN and LEAVE of its views (not a restarted one:
        its table starts empty here), its table put right where the views merged."""
        out: Dict[int, frozenset] = {}
        if not self.groups:
            return out
        if self.client_views:
            return self.core_interest()
        at_merge: Dict[tuple, Optional[Dict[str, set]]] = {}
        # (a daemon that ran from the start first: a new incarnation of a site killed whole
        # knows the other sites' members only from a merge on, and says so for the messages
        # that only its site delivered)
        whole = [(node, self.node_interest(node, at_merge))
                 for node in sorted(self.nodes.values(), key=lambda n: n.restarted) if self.saw_every_join(node)]
        self.read_interest(whole, out)
        # Last, a daemon restarted into a running ring, for the messages that only it
        # delivered (a fork's own, pruned everywhere else: seed 89 --groups, c3 alone in site
        # 2's new incarnation). Its own site's table misses the JOINs before its state came,
        # so its site counts as unknown; the other sites' members it knows from a merge on, by
        # the joined sites' own daemons, as a whole daemon does. Without this, such a message
        # had no interest at all and every site of its view "owed" it.
        late = [(node, self.node_interest(node, at_merge, own_known=False))
                for node in self.nodes.values() if not self.saw_every_join(node)]
        self.read_interest(late, out)
        return out

    def read_interest(self, tables: List[Tuple[Node, Dict[int, frozenset]]], out: Dict[int, frozenset]) -> None:
        """(interest) For each message not in `out` yet: per site, the table of the first
        daemon (of `tables`, in their order) that delivered it in a view holding that site,
        else of the first that has it, as table_for reads the group cores' (seed 86320
        --lan-splits --groups: a2, cut off alone, delivered a1's message 29 before c1's LEAVE
        of its group reached a2's order; b1 had the LEAVE first, in a view with c, and pruned
        29 for c rightly; a2's table, read first, said c1 owed it)."""
        nsites = len(self.case.sites)
        for serial in {serial for _, table in tables for serial in table} - set(out):
            having = [(node, table[serial]) for node, table in tables if serial in table]
            out[serial] = frozenset(
                x for x in range(nsites)
                if x in next((sites for node, sites in having
                              if x in (node.delivered_in.get(serial) or range(nsites))), having[0][1]))

    def core_interest(self) -> Dict[int, frozenset]:
        """(--client-views) data serial -> the sites with a member of its groups, by the group
        core's table where its sender's daemon delivered it (else where another did; per site,
        one that delivered it in a view holding that site first: table_for): the one order's
        table at that point, ROSTERs and REJOINs included, which the replay of JOINs and
        LEAVEs alone (node_interest) does not know."""
        out: Dict[int, frozenset] = {}
        for serial, sub in self.submitted.items():
            if sub[6] != sr.DATA:
                continue
            sender = self.nodes.get(sub[5])
            # a fork's daemon that took the kept state later delivered it in the fork's own
            # order, with the fork's table, which is not the one the other sites were sent it
            # by (seed 908 --lan-splits --client-views: b2, forked, still named c1 in g1 in
            # its transitional view where c was gone; b1's table, the kept side's, had c1 out
            # and pruned it for c, and c1 was said to owe it): the others' first, then its
            deliverers = ([sender] if sender is not None else []) + list(self.nodes.values())
            ranked = [n for forks in (False, True) for n in deliverers if serial in n.core_sites
                      and self.delivered_before_rejoin(n, serial) == forks]
            if ranked:
                out[serial] = frozenset(x for x in range(len(self.case.sites))
                                        if x in self.table_for(x, serial, ranked).core_sites[serial])
        return out

    def table_for(self, site: int, serial: int, ranked: List[Node]) -> Node:
        """The deliverer whose group table says whether `site` had a member at the message's
        place: the first (of `ranked`) that delivered it in a view holding `site`, else the
        first. A daemon that delivered it in a view without `site` had that site's stream cut
        before it, in its own order, and missed the site's later JOINs and LEAVEs (seed 879
        --lan-splits --client-views: c2, cut off from a and b, delivered its own message 85
        still naming a2 in g3; a2's LEAVE came before 85 in the order of a's and b's view, b1
        pruned 85 for a rightly, and a owed nothing of it: EVS owes a message only to members
        of its group in the configuration that delivers it)."""
        return next((n for n in ranked if site in (n.delivered_in.get(serial) or range(len(self.case.sites)))),
                    ranked[0])

    def saw_every_join(self, node: Node) -> bool:
        """Whether a daemon's table of its own site's members is whole: it ran from the start,
        or it is a new incarnation of a site killed whole (its site's members are those of
        the new incarnation). A daemon restarted into a running ring never saw the JOINs
        before its state came."""
        if not node.restarted:
            return True
        kill_at = getattr(self, "kill_at", None)
        return (self.case.site_restart_after_s is not None and kill_at is not None
                and self.site_of[node.gateway.name] == self.case.site_kill and node.started_at >= kill_at)

    def node_interest(self, node: Node, at_merge: Dict[tuple, Optional[Dict[str, set]]],
                      own_known: bool = True) -> Dict[int, frozenset]:
        """A daemon's deliveries replayed with its table of members: at a REGULAR view that
        brings sites in (a merge), each joined site's members become what they were at that
        site where the merged view began there (its own JOINs and LEAVEs of the other side,
        which this daemon never delivered); a site whose table is not known then (no daemon
        of it that saw every one of its JOINs installed that view) may owe every message.
        own_known False: the daemon's own site may owe every message too (a daemon that
        missed its own site's JOINs before it came in)."""
        members: Dict[str, set] = {}
        # (a new incarnation of a site killed whole: the other sites' members are not known
        # to it until a merge brings them in)
        own = self.site_of[node.gateway.name]
        unknown = {x for x in range(len(self.case.sites)) if x != own} if node.restarted else set()
        unknown -= self.shared_view_zero(node)
        if not own_known:
            unknown.add(own)
        marks, prev = [], set(range(len(self.case.sites)))
        over_views = {at for _, at in node.started_over}
        for i, (kind, seq, sites, count, _) in enumerate(node.views):
            if i in over_views:
                prev = set(range(len(self.case.sites)))  # (view 0 anew: every site)
            if kind == sr.CONF_REGULAR:
                joined = set(sites) - prev
                if joined:
                    marks.append((count, seq, tuple(sites), joined))
                prev = set(sites)
        out = {}
        m = o = 0
        for idx, serial in enumerate(node.delivered):
            while o < len(node.started_over) and node.started_over[o][0] <= idx:
                # (its ring began afresh after it stood down: the other sites' members as a
                # fresh daemon knows them, from its view 0 on)
                members = {g: {d for d in ds if self.site_of[d] == own} for g, ds in members.items()}
                unknown = ({x for x in range(len(self.case.sites)) if x != own}
                           - self.shared_from_view_zero(node, node.started_over[o][1])) | (unknown & {own})
                o += 1
            while m < len(marks) and marks[m][0] <= idx:
                _, seq, sites, joined = marks[m]
                for x in joined:
                    key = (x, seq, sites)
                    if key not in at_merge:
                        at_merge[key] = self.members_where_merged(x, seq, sites)
                    for g in members:
                        members[g] = {d for d in members[g] if self.site_of[d] != x}
                    if at_merge[key] is None:
                        unknown.add(x)
                        continue
                    unknown.discard(x)
                    for g, ds in at_merge[key].items():
                        members.setdefault(g, set()).update(ds)
                m += 1
            sub = self.submitted[serial]
            if sub[6] == sr.JOIN:
                members.setdefault(sub[7][0], set()).add(sub[2])
            elif sub[6] == sr.LEAVE:
                members.setdefault(sub[7][0], set()).discard(sub[2])
            elif sub[6] == sr.DATA:
                out[serial] = frozenset(unknown | {self.site_of[d] for g in sub[7] for d in members.get(g, ())})
        return out

    def shared_view_zero(self, node: Node) -> set:
        """(a restarted daemon whose ring began the sites' state afresh, view 0) The other
        sites that came with it from view 0 into its first view change (its first TRANSITIONAL
        view): they were in view 0 with it, so no merge brought them in, and it had their
        streams from their first message, as the gateway's interest_known holds (it forgets a
        site only at a merge). Their members are its replay's from the start. Seed 86522
        --lan-splits --groups --site-grace-s 0.3: site a killed whole and site b's b1
        restarted alone both began afresh and met in view 0; a's daemons pruned a2's messages
        to g1, which nobody was in, for b rightly, and the replay, which took b as unknown
        (no merge ever named it), said b owed every one."""
        if not node.began_afresh:
            return set()
        at = next((i for i, v in enumerate(node.views) if v[0] == JOINED), None)
        return self.shared_from_view_zero(node, at)

    def shared_from_view_zero(self, node: Node, at: Optional[int]) -> set:
        """(shared_view_zero) The other sites of the first TRANSITIONAL view after the JOINED
        view 0 at index `at` of the daemon's views."""
        if at is None or node.views[at][0] != JOINED or node.views[at][1] != 0:
            return set()
        first = next((v for v in node.views[at + 1:] if v[0] in (sr.CONF_TRANSITIONAL, JOINED)), None)
        if first is None or first[0] != sr.CONF_TRANSITIONAL:
            return set()
        return set(first[2]) - {self.site_of[node.gateway.name]}

    def members_where_merged(self, site: int, seq: int, sites: tuple) -> Optional[Dict[str, set]]:
        """Site `site`'s members (its own daemons') where it installed the REGULAR view
        (seq, sites): by a daemon of it that saw every JOIN and LEAVE of its own site (None:
        no such daemon installed that view)."""
        for node in self.nodes.values():
            if not self.saw_every_join(node) or self.site_of[node.gateway.name] != site:
                continue
            view = next((v for v in node.views if v[0] == sr.CONF_REGULAR and v[1] == seq and v[2] == sites), None)
            if view is None:
                continue
            members: Dict[str, set] = {}
            for serial in node.delivered[:view[3]]:
                sub = self.submitted[serial]
                if sub[6] in (sr.JOIN, sr.LEAVE) and self.site_of[sub[2]] == site:
                    (members.setdefault(sub[7][0], set()).add if sub[6] == sr.JOIN
                     else members.setdefault(sub[7][0], set()).discard)(sub[2])
            return members
        return None

    def site_owes(self, site: int, serial: int, interest: Dict[int, frozenset]) -> bool:
        """Whether the daemons of `site` must deliver the message: its own site's always; with
        groups, another site's data only if `site` has a member of its group at its place."""
        return serial not in interest or site in interest[serial] \
            or self.site_of[self.submitted[serial][2]] == site

    def owes(self, n: Node, o: Node, serial: int, left_s: float = float("inf")) -> bool:
        """A restarted daemon owes what `o` delivered from the point it came in: from its first
        delivery on (one order: all that o delivered after it); if it delivered nothing, what
        a daemon of its own site delivered well after its state came (the same point of the
        ring's order, a moment apart; another site delivers the same messages later). A
        daemon that left a fork for the kept incarnation (rejoined) before o left the view
        at left_s owes the same from where it rejoined; so does one that had stood down for
        that state when o delivered the message and took it later (waiting_for_state: a late
        daemon then, in no view; the state holds the message, or it owes it after the
        state's point). Seed 271361: b1 sat out ring 2 (b2 and the restarted b3), which
        ordered b2's messages 125..138; in ring 3 b1 closed its fork's view (3.9999) and
        waited for b2's state; b2 delivered them in its transitional view 1 (4.031), and the
        state b1 took at 4.843 holds them (positions {1: 105}). Its rejoin came after b2 left
        that view: the checker owed them to b1 from the start."""
        cut = left_s
        if serial in o.delivered_at and (self.waiting_for_state(n, o.delivered_at[serial])
                                         or self.past_its_stand_down(n, o, serial)):
            cut = max(cut, min((at for at, _ in n.rejoined if at >= o.delivered_at[serial]),
                               default=left_s))
        at = o.delivered_at.get(serial)
        back = [r for r in n.rejoined if r[0] <= cut or self.closed_its_fork_before(n, r[0], cut, at)]
        if back:
            at, first = back[-1]
            if len(n.delivered) > first and n.delivered[first] in o.position:
                return o.position[serial] >= o.position[n.delivered[first]]
            return self.site_of_node(o) == self.site_of_node(n) and \
                o.delivered_at[serial] >= at + RESTART_SLACK_S
        if not n.restarted or n.synced_at is None:
            return True
        if n.delivered and n.delivered[0] in o.position:
            return o.position[serial] >= o.position[n.delivered[0]]
        return self.site_of_node(o) == self.site_of_node(n) and \
            o.delivered_at[serial] >= n.synced_at + RESTART_SLACK_S

    @staticmethod
    def closed_its_fork_before(n: Node, rejoined_at: float, left_s: float, delivered_at: Optional[float]) -> bool:
        """Whether n closed its fork's view and stood down for the state it took at
        rejoined_at before o left the view at left_s, and o delivered the message after that:
        n had left that view then (its fork's closing view), as it had by a rejoin before
        left_s. Seed 314524: b1 closed its fork's view at 3.0807 and took b2's state at 3.4434;
        a1 left view 0 at 3.32 and delivered a's 197 in its transitional part at 3.7112; b2
        had delivered it at 3.4006, while b1 waited (the state holds it): b1 owes what comes
        after the state's point, not 197."""
        if delivered_at is None:
            return False
        start = next((a for a, b in n.waited if abs(b - rejoined_at) < 1e-9), None)
        return start is not None and start <= left_s and delivered_at >= start

    def past_its_stand_down(self, n: Node, o: Node, serial: int) -> bool:
        """Whether o delivered `serial` at or past the point of the ring's order where n stood
        down for another ring's state (o passed that round's point, naming n late, before the
        delivery), before n took the state: at that same point of the order n was already a
        late daemon, whichever of the two reached it first in the simulator's time. Not for
        a message of n's own site's stream that n held before it stood down: close_fork
        delivers those, in the fork's closing view, so n owes them as before. Seed 297659:
        b1 sat out ring 2 {b2 restarted, b3}, which kept site 1's epoch; at ring 3's point
        b3 applied its held outputs (view 1 decided: a3's 1, 4, 6 of the old view delivered
        in its transitional view) at 1.8932, b1 closed its view and stood down at 1.8937
        (4 and 6 its ring 3 had ordered before the point: dropped there, the state holds
        them; 1 of site 0, a site outside its closing view of site 1 alone: EVS's hole)."""
        t = o.delivered_at[serial]
        waits = list(n.waited) + ([(n.waiting_since, float("inf"))] if n.waiting_since is not None else [])
        for start, end in waits:
            ring = n.stood_down_in.get(start)
            if ring is None or t >= end:
                continue
            if any(at <= t and r == ring and n.gateway.name in late for at, r, late in o.points):
                key = o.key_of.get(serial)
                own_held = key is not None and key[0] == self.site_of_node(n) \
                    and n.held_at.get(key, float("inf")) <= start
                return not own_held
        return False

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
        return not self.owed_undelivered()

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
                if self.case.merge_kill_after_s is not None and self.case.merge_kill_rep:
                    self.push(healed + self.case.merge_kill_after_s, "crash_rep", str(self.case.merge_kill))
                elif self.case.merge_kill_after_s is not None:
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
        """Run the events up to t_end, or until stop() is true (then True). A run stuck at one
        instant (more than SPIN_EVENTS_MAX events there) is a "progress" violation, and ends."""
        last_at, same = None, 0
        while self.events and self.events[0][0] <= t_end:
            if stop is not None and stop():
                return True
            at = self.events[0][0]
            same, last_at = (same + 1 if at == last_at else 0), at
            if same > SPIN_EVENTS_MAX:
                self.fail("progress", "more than %d events at one instant: a deadline that comes due "
                          "again at once, for ever" % SPIN_EVENTS_MAX)
                self.events.clear()
                break
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
        if kind == "crash_rep":
            self.crash_representative(int(dest))
            return
        if kind == "restart":
            self.restart(dest)
            return
        if kind == "cut" and dest == "merge":  # (--cut-after-merge)
            self.cut_after_merge()
            return
        if kind == "heal" and dest == "merge":
            a, b = self.case.merge_cut_pair
            self.cut_pairs -= {(a, b), (b, a)}
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
            if self.lan_split:
                self.lan_windows.append((self.now, float("inf")))
            elif self.lan_windows:
                self.lan_windows[-1] = (self.lan_windows[-1][0], self.now)
            self.stats["lan_splits"] = self.stats.get("lan_splits", 0) + self.lan_split
            return
        if kind == "heal":
            self.cut_pairs = set()
            if self.case.cut_for_good is not None:  # (that one stays cut)
                a, b = self.case.cut_for_good
                self.cut_pairs |= {(a, b), (b, a)}
            self.heal_pending = False
            if dest == "" and self.case.merge_cut_after_s is not None:  # (the first heal only)
                self.push(self.now + self.case.merge_cut_after_s, "cut", "merge")
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

    def cut_after_merge(self) -> None:
        """(case.merge_cut_after_s) The link between merge_cut_pair is cut: what is on its wire
        is lost with it. The clients send for a second from just after the cut (the records
        must go round it), and the stats say where the merge was then."""
        a, b = self.case.merge_cut_pair
        self.cut_pairs |= {(a, b), (b, a)}
        self.events = [e for e in self.events if not (
            e[2] == "hop" and (self.site_of[e[4]], self.site_of[e[3]]) in self.cut_pairs)]
        heapq.heapify(self.events)
        if self.case.merge_cut_for_s is not None:
            self.push(self.now + self.case.merge_cut_for_s, "heal", "merge")
        self.schedule_late_traffic(self.now + 0.2)
        everyone = len(self.case.sites)
        merged = [n.views and n.views[-1][0] == sr.CONF_REGULAR and len(n.views[-1][2]) == everyone
                  and n.views[-1][4] > self.healed_at for n in self.live().values()]
        deciding = [n.gateway.merging is not None for n in self.live().values()]
        self.stats["merge_cuts"] = 1
        self.stats["merge_cuts_installed"] = int(all(merged))  # (every daemon had the merged view)
        self.stats["merge_cuts_merging"] = int(any(deciding) and not all(merged))

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
        self.check_client_views()
        kill_at = getattr(self, "kill_at", None)
        if kill_at is not None:  # how long the survivors took to leave the killed site out
            installs = [self.view_without_killed_site_at(n) for n in self.live().values() if not n.restarted]
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
                                 "hop_links_restarted", "site_merges_routed_around",
                                 "site_giveups_of_a_dead_site", "site_forks",
                                 # (never one of a daemon's own: only a forger's, see _above_its_message)
                                 "site_records_above_their_message", "site_records_refused_far_ahead")):
                    self.stats[k] = self.stats.get(k, 0) + v
                elif k.startswith("site_pruned_to_"):  # SKIPs sent in place of a body (pruning)
                    self.stats["skips_sent"] = self.stats.get("skips_sent", 0) + v
                elif k == "site_pruned_after_merge":  # ... of them, after a merged view
                    self.stats["skips_after_merge"] = self.stats.get("skips_after_merge", 0) + v
                elif k == "site_interest_states":  # a joined site's members learned from its STATE
                    self.stats["interest_states"] = self.stats.get("interest_states", 0) + v
        for kind, count in self.hostile.sent.items():
            self.stats["hostile_" + kind] = count
        if self.hostile.sent:  # what the daemons dropped and counted of it (and of the wire's loss)
            for n in self.nodes.values():
                for k, v in n.gateway.hop_counters().items():
                    self.stats["dropped_" + k] = self.stats.get("dropped_" + k, 0) + v
        logs = [line for n in self.nodes.values() for line in list(n.orderer.log) + list(n.gateway.log)]
        return SitesResult(self.seed, self.violations, self.stats, logs)

    def view_without_killed_site_at(self, node: Node) -> Optional[float]:
        """When the daemon first had a view without the killed site: its first REGULAR view,
        or, if sooner, the view it JOINED without that site (a fork's daemon that took the
        kept side's state when the two rings of its split site met: its clients get that
        view there, by the REJOIN). Counting REGULAR views only, the soak read such a daemon
        as late until the next view change: seeds 61 and 247 --lan-splits --groups
        --client-views, 3.80 and 3.44 s where its view came 2.54 and 2.41 s after the kill."""
        regular = next((v[4] for v in node.views if v[0] == sr.CONF_REGULAR), None)
        joined = next((v[4] for v in node.views if v[0] == JOINED and v[2]
                       and self.case.site_kill not in v[2]), None)
        return min((t for t in (regular, joined) if t is not None), default=None)

    def check_client_views(self) -> None:
        """(--client-views) What each daemon's client got of its groups' memberships: a
        TRANSITION ends one view, so the next membership message of its group is a REG_MEMB
        (or its self-leave), never a second TRANSITION; no REG_MEMB inside the transitional
        view that ends a fork (close_fork, until the kept state is taken: EVS gives it
        messages only); no REG_MEMB names a member at a site the daemon's regular view of the
        sites left out, and none at a daemon whose site forked since its last regular view of
        the sites names a member of another site (they refuse the fork: a view never shared).
        Nor does one in the sites' transitional view name a member of a site that view lost:
        its REG_MEMB waits for the regular view (the real Spread's join in its transitional
        state names the partitioned daemons' members, in vs_sets of their own, then gives a
        TRANSITION; here the one REG_MEMB comes with the regular view: lab guide, *A split
        site rejoins*; seed 6 --lan-splits, b2's REJOIN before _hold_rejoin). A network
        change's own vs_set is checked by check_own_vs_set. A REG_MEMB CAUSED_BY_NETWORK with
        no TRANSITION since the client's last view of the group is a merge only: every member
        of that view is in the client's own vs_set (the real Spread gives a group with members
        at daemons outside our transitional configuration its TRANSITION first; the h9599
        doubt: a daemon that sat out a ring took the kept state, and its client got a vs_set of
        its own with no TRANSITION)."""
        for name, node in self.nodes.items():
            ended: Dict[str, bool] = {}
            #: group -> the members of the client's last regular view of it (None: it has none)
            previous: Dict[str, Optional[frozenset]] = {}
            me = "#c#%s" % name.split("~")[0]
            for t, msg, view_sites, trans_sites, fork_ending, forked in node.client_log:
                where = "t=%.3f %s's client, group %s" % (t, name, msg.group)
                if msg.is_transitional:
                    if ended.get(msg.group):
                        self.fail(CLIENT_VIEW, "%s: a second TRANSITION before a REG_MEMB" % where)
                    ended[msg.group] = True
                    continue
                if msg.is_self_leave:
                    ended[msg.group] = False
                    previous[msg.group] = None
                    continue
                self.check_own_vs_set(where, me, msg, previous.get(msg.group))
                if msg.caused_by == "NETWORK" and not ended.get(msg.group) and previous.get(msg.group):
                    mine = next((set(vs) for vs in msg.vs_sets if me in vs), set())
                    apart = sorted(previous[msg.group] - mine)
                    if apart:
                        self.fail(CLIENT_VIEW, "%s: a REG_MEMB CAUSED_BY_NETWORK with no TRANSITION "
                                               "before it, and %s of the view it ends not in the "
                                               "client's vs_set" % (where, apart))
                ended[msg.group] = False
                previous[msg.group] = frozenset(msg.members)
                if fork_ending:
                    self.fail(CLIENT_VIEW, "%s: a REG_MEMB inside the fork's closing transitional view" % where)
                sites = {self.site_of.get(m.rsplit("#", 1)[-1], -1) for m in msg.members}
                if view_sites and sites - set(view_sites):
                    self.fail(CLIENT_VIEW, "%s: a REG_MEMB %s names a site out of its view %s" % (
                        where, sorted(msg.members), list(view_sites)))
                elif forked and sites - {self.site_of[name]}:
                    self.fail(CLIENT_VIEW, "%s: a fork's REG_MEMB %s names another site's member" % (
                        where, sorted(msg.members)))
                elif trans_sites and sites - set(trans_sites):
                    self.fail(CLIENT_VIEW, "%s: a REG_MEMB %s in the sites' transitional view %s names "
                                           "a site it lost" % (where, sorted(msg.members), list(trans_sites)))

    def check_own_vs_set(self, where: str, me: str, msg, previous: Optional[frozenset]) -> None:
        """A network change's REG_MEMB: the receiver's own vs_set is the members that came
        from its previous regular view of the group together with it, so it holds the
        receiver and no member that was not in that view (a joiner had no view: it comes in a
        vs_set of its own, as the real Spread's join in its transitional state gives it). A
        receiver with no previous view (it joined silently in a transitional view) is alone
        in its set. The other vs_sets may name anyone: they came from other views. (A
        JOIN/LEAVE/DISCONNECT REG_MEMB's one vs_set is the member that changed, not this.)"""
        if not msg.service_type & sr.CAUSED_BY_NETWORK:
            return
        own = set(msg.changed_members)
        if me not in own:
            self.fail(CLIENT_VIEW, "%s: its own vs_set %s of a network change leaves it out" % (where, sorted(own)))
        elif previous is None and own != {me}:
            self.fail(CLIENT_VIEW, "%s: a REG_MEMB puts it, with no view of the group before, in the vs_set "
                                   "%s" % (where, sorted(own)))
        elif previous is not None and own - previous:
            self.fail(CLIENT_VIEW, "%s: its own vs_set %s names %s, not in its previous view %s" % (
                where, sorted(own), sorted(own - previous), sorted(previous)))

    def check_agreed(self) -> None:
        """Any two daemons deliver the messages they both delivered in the same order."""
        # (a daemon that left a fork's view for the kept incarnation's (rejoined) is two
        # histories, as a restarted daemon is two nodes: EVS orders messages delivered in one
        # view, and what it delivered in the fork's view the others delivered in another)
        parts = []
        for name in sorted(self.nodes):
            node = self.nodes[name]
            cuts = [0] + [idx for _, idx in node.rejoined] + [len(node.delivered)]
            for k in range(len(cuts) - 1):
                part = node.delivered[cuts[k]:cuts[k + 1]]
                parts.append((name, part, {s: i for i, s in enumerate(part)}))
        for i, (a, delivered_a, _) in enumerate(parts):
            for b, _, pos_b in parts[i + 1:]:
                if a == b:
                    continue
                common = [s for s in delivered_a if s in pos_b]
                for x, y in zip(common, common[1:]):
                    if pos_b[x] > pos_b[y]:
                        self.fail(AGREED, "%s delivered %d before %d, %s the other way" % (a, x, y, b))
                        break

    def check_fifo(self) -> None:
        """Per sending daemon, in the order its clients submitted (serials grow with time). Per
        incarnation: a restarted daemon's clients are other senders (seed 7158 --lan-splits: a1,
        restarted alone, delivered its own message in its fresh ring's closing view, then took
        the kept state in which a message of the killed a1 still waited)."""
        for name, node in sorted(self.nodes.items()):
            last: Dict[str, int] = {}
            for serial in node.delivered:
                origin = self.submitted[serial][5]  # (the sending daemon's incarnation)
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
                    if o.rejoined and o.rejoined[-1][0] <= at and serial not in o.position:
                        continue  # (the same for a fork's daemon that took the kept state)
                    if self.waiting_for_state(o, at) and serial not in o.position:
                        continue  # (and while it waited for that state: seed 161686; the state holds it)
                    if self.site_of[other] not in members:
                        continue  # not in the view (EVS: SAFE holds in its configuration)
                    if not self.same_incarnation(o, node, self.fork_instant(node, serial, at)) \
                            or self.apart_at(name, other, at) or self.left_out_of_site_ring(other, at):
                        continue  # another incarnation of its site (a fork), or cut off from us
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
        for (kind, view, sites, at, _), tags in zip(node.views, node.view_tags):
            if kind == JOINED:  # (what came before is not its; each came in at its own
                # point, two daemons of a site restarted whole too: never compared)
                old, start = (JOINED, view, sites, id(node)), at
                continue
            if kind == sr.CONF_TRANSITIONAL:
                trans = (view, sites)
                out["regular", old, trans] = frozenset(node.delivered[start:at]), tags
            else:
                out["transitional", trans, (view, sites)] = frozenset(node.delivered[start:at]), tags
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
        installed: Dict[int, List[Tuple[str, tuple, dict]]] = {}
        for name, node in sorted(self.nodes.items()):
            for (kind, view, sites, _, _), tags in zip(node.views, self.named_at_views(node)):
                if kind != sr.CONF_REGULAR:
                    continue
                # (the first of each incarnation: views of other incarnations of a site differ)
                seen = installed.setdefault(view, [])
                like = [x for x in seen if self.compatible(x[2], tags)]
                first = next((x for x in like if x[1] == sites), like[0] if like else None)
                # (a view that names no epoch of a site, a merge having forgotten it, fits
                # the views of each incarnation of it: it differs only if it fits none. Seed
                # 74128 --lan-splits: c1's merged view 2 named no epoch of site 0, and was
                # taken for a1's fork's own view 2, of site 0 alone under the fork's epoch)
                if first is None:
                    seen.append((name, sites, tags))
                elif first[1] != sites and set(first[1]) & set(sites):
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
                    (got_a, tags_a), (got_b, tags_b) = segs[a][key], segs[b][key]
                    if not self.compatible(tags_a, tags_b):
                        continue  # views of two incarnations of a site: not the same view
                    if got_a != got_b:
                        # (what a daemon delivered before it left a fork's view for the kept
                        # one was delivered in another view of its: not owed here)
                        diff = sorted(x for x in got_a ^ got_b
                                      if not self.delivered_before_rejoin(self.nodes[a], x)
                                      and not self.delivered_before_rejoin(self.nodes[b], x)
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


# ---- hostile datagrams (--hostile P) -------------------------------------------------------------

#: counters at the ends of what the wire carries (as ring_sim's), for the forged fields
EXTREMES = ring_sim.EXTREMES
#: the share of hostile datagrams that go to a site's LAN (the ring's port) rather than a HOP port
LAN_SHARE = 0.3
#: (the forger's other configuration: another team's spread.conf, for "other_team")
OTHER_TEAM_STAMP = sr.configuration_stamp([("t1", "10.0.0.1", 4803), ("t2", "10.0.0.2", 4803)])


#: events at one simulated instant past which a run is stuck (a deadline that comes due again
#: at once, for ever: seed 2094 --cut-after-merge on s21-tail's code spun so); a burst of a run
#: is far below it
SPIN_EVENTS_MAX = 200_000


class SitesHostile:
    """What a curious student on the lab LAN sends to the daemons' HOP ports and rings' ports
    while two sites talk: with a sniffer, every packet on the wire is his to read. Per packet
    a daemon sends on a HOP link or its LAN, with the chance `share`, one hostile datagram:
      mangled     a truncated or bit-flipped copy of a real packet (the CRC, or the key's tag,
                  refuses it)
      replayed    a HOP packet seen earlier, to its daemon or to another site's (old sessions,
                  old link seqs, another link's packets, old incarnations' HELLOs)
      hello       a forged HELLO: other epochs, other sessions, a daemon that is not its site's
                  representative, another site's name, extreme positions and views
      data        forged site records (SKIPs, FRONTIER / ARU, PROPOSE / READY / GIVEUP, MERGE,
                  LINKS, SUSPECT / JOIN / EPOCH, STATE, UNRELIABLE, huge lengths) in a well-formed
                  HOP DATA; ack, nack: forged link control with extreme counters
      other_team  a real packet of another configuration (another team's spread.conf)
      lan         on a site's LAN: a mangled or replayed ring packet, one of another team, or (as
                  the in-session ones below) a forged ring packet (ring_sim.Hostile's: extreme
                  values in every field)
    Forged packets are sealed without the key (the forger has none). A forged DATA, ACK or
    NACK names a link's sender and session as sniffed only with a key (they must all be
    refused) or with forge_in_session: without a key, such a packet passes the CRC and the
    link takes it as its peer's (what a key is for: lab_guide.md, "Sites on a hostile LAN");
    else it names another session or another daemon, which the link must refuse. Forged
    HELLOs go with or without a key: a HELLO opens a link, and the gateway must refuse what
    does not fit its links and views; without a key (and without forge_in_session) never with
    an epoch the daemon it goes to would take first hand (_epoch_taken_first_hand)."""

    def __init__(self, rng: random.Random, sim: "SitesSim", share: float, forge_in_session: bool) -> None:
        self.rng = rng
        self.sim = sim
        self.share = share
        self.in_session = forge_in_session or sim.key is not None
        self.seal = sr.RingSeal(sim.key) if sim.key else sr.OPEN_SEAL  #: to read what is sniffed
        self.captured: List[Tuple[str, str, bytes]] = []  #: (src, dest, raw) of HOP packets
        self.captured_lan: Dict[int, List[Tuple[str, bytes]]] = {}  #: site -> (src, raw) on its LAN
        #: (src, dest) -> (sender pid, session, highest link seq seen) of the last HOP packet
        self.sniffed: Dict[Tuple[str, str], Tuple[tuple, int, int]] = {}
        self.sent: Dict[str, int] = {}
        #: forged HELLOs that kept their sender's real epoch (no key: _epoch_taken_first_hand)
        self.epochs_kept = 0

    CAPTURED_MAX = 400

    def _keep(self, store: list, item) -> None:
        if len(store) < self.CAPTURED_MAX:
            store.append(item)
        else:
            store[self.rng.randrange(self.CAPTURED_MAX)] = item

    def _count(self, kind: str) -> None:
        self.sent[kind] = self.sent.get(kind, 0) + 1

    # ------------------------------------------------------------ what the sniffer sees
    def on_hop(self, src: str, dest: str, raw: bytes) -> None:
        self._keep(self.captured, (src, dest, raw))
        self._sniff(src, dest, raw)
        if self.rng.random() < self.share * (1 - LAN_SHARE):
            self.sim.push(self.sim.now + self.rng.uniform(0.0, 0.02), "hop", *self.hop_packet(src, dest, raw))

    def on_lan(self, src: str, dest: str, raw: bytes) -> None:
        site = self.sim.site_of[src]
        self._keep(self.captured_lan.setdefault(site, []), (src, raw))
        if self.rng.random() < self.share * LAN_SHARE / 10:  # (a ring sends ~10x a link's packets)
            self.sim.push(self.sim.now + self.rng.uniform(0.0, 0.005), "ring", *self.lan_packet(site, src, raw))

    def _sniff(self, src: str, dest: str, raw: bytes) -> None:
        try:
            p = sr.decode_hop_packet(raw, self.seal)
        except sr.RingPeerError:
            return
        seq = p.seq if isinstance(p, sr.HopData) else 0
        old = self.sniffed.get((src, dest))
        if old is not None and old[0] == p.sender and old[1] == p.session:
            seq = max(seq, old[2])
        self.sniffed[src, dest] = (p.sender, p.session, seq)

    # ------------------------------------------------------------ HOP port
    def hop_packet(self, src: str, dest: str, raw: bytes) -> Tuple[str, str, bytes]:
        """(dest, src, raw) of one hostile datagram for a HOP port."""
        kind = self.rng.choice(["mangled", "replayed", "replayed", "hello", "hello", "data", "data",
                                "ack", "nack", "other_team"])
        self._count(kind)
        if kind == "mangled":
            return dest, src, self.mangle(raw)
        if kind == "replayed":
            src0, dest0, old = self.rng.choice(self.captured)
            if self.rng.random() < 0.5:  # to another daemon: another link's, another site's
                dest0 = self.rng.choice(sorted(self.sim.nodes))
            return dest0, src0, old
        if kind == "other_team":
            return dest, src, self.other_team(raw)
        if kind == "hello":
            return self.forged_hello()
        return self.forged_link_packet(kind)

    def mangle(self, raw: bytes) -> bytes:
        how = self.rng.randrange(4)
        if how == 0 and raw:
            out = bytearray(raw)
            for _ in range(self.rng.randrange(1, 4)):
                i = self.rng.randrange(len(out))
                out[i] ^= 1 << self.rng.randrange(8)
            return bytes(out)
        if how == 1:
            return raw[:self.rng.randrange(len(raw))]
        if how == 2:
            return raw + bytes(self.rng.getrandbits(8) for _ in range(self.rng.randrange(1, 40)))
        return bytes(self.rng.getrandbits(8) for _ in range(self.rng.randrange(64)))

    def other_team(self, raw: bytes) -> bytes:
        """The packet as a daemon of another spread.conf would send it (its own key, if any)."""
        key = bytes(self.rng.getrandbits(8) for _ in range(32)) if self.sim.key else None
        seal = sr.RingSeal(key, OTHER_TEAM_STAMP)
        trailer = sr.RING_TAG_BYTES if self.sim.key else 4
        if len(raw) < sr.RING_HEADER_BYTES + trailer:
            return raw
        return seal.seal(seal.header(raw[5]) + raw[sr.RING_HEADER_BYTES:-trailer])

    def forger_seal(self) -> sr.RingSeal:
        if self.sim.key is None:
            return sr.OPEN_SEAL
        return sr.RingSeal(bytes(self.rng.getrandbits(8) for _ in range(32)))  # a wrong key

    def n(self) -> int:
        return self.rng.choice(EXTREMES)

    def near(self, value: int) -> int:
        """A value a sniffer would try: the one seen, just past it, or an extreme."""
        r = self.rng.random()
        if r < 0.6:
            return max(0, value + self.rng.randrange(-1, 4))
        return self.n()

    def daemon(self) -> str:
        return self.rng.choice(sorted(self.sim.nodes) + ["x1"])

    def pid_of(self, name: str) -> tuple:
        node = self.sim.nodes.get(name)
        inc = node.orderer.me[1] if node is not None else 1
        return (name, self.rng.choice([inc, inc, inc, inc + 1, max(0, inc - 1), self.n()]))

    def forged_hello(self) -> Tuple[str, str, bytes]:
        sim = self.sim
        nsites = len(sim.case.sites)
        name = self.daemon()
        site = sim.site_of.get(name, 0)
        if self.rng.random() < 0.15:
            site = self.rng.choice([self.rng.randrange(nsites), nsites, sr.MAX_SITES])
        node = sim.nodes.get(name)
        gw = node.gateway if node is not None else None
        dest = self.rng.choice(sorted(sim.nodes))
        seen = self.sniffed.get((name, dest))
        session = seen[1] if seen is not None else 1
        positions = {s: self.near(gw.applied_seq.get(s, 0) if gw else 0)
                     for s in range(nsites) if self.rng.random() < 0.7}
        view = self.near(gw.view_seq if gw else 0)
        sites = tuple(sorted(self.rng.sample(range(nsites), self.rng.randrange(nsites + 1))))
        if gw is not None and self.rng.random() < 0.5:
            sites = tuple(gw.live_sites)
        epoch = gw.epoch if gw else 0
        forged_epoch = self.rng.choice([epoch, epoch, epoch + 1, 0, self.n()])
        if self.in_session or not self._epoch_taken_first_hand(dest, site, forged_epoch, epoch):
            epoch = forged_epoch
        else:
            self.epochs_kept += 1
        # (else, without a key, the real epoch: lab_guide.md, "What a keyless LAN still cannot
        # be protected from". The draw stays, so the seed's other draws do too)
        hello = sr.SiteHello(self.pid_of(name), site, self.rng.random() < 0.6, positions, view,
                             sites, self.rng.choice([session, session, session + 1, 0, 2 ** 32 - 1]),
                             epoch)
        src = name if name in sim.nodes and self.rng.random() < 0.8 else self.rng.choice(sorted(sim.nodes))
        try:
            return dest, src, sr.encode_site_hello(hello, self.forger_seal())
        except struct.error:
            return dest, src, b"SMRG"

    def _epoch_taken_first_hand(self, dest: str, site: int, forged: int, real: int) -> bool:
        """A forged epoch that `dest` would take as `site`'s own: another one below EPOCH_MAX,
        where dest has no epoch of that site on record. It is what a restarted site's HELLO
        says, and nothing without a key tells the two apart."""
        node = self.sim.nodes.get(dest)
        if node is None or node.gateway is None or forged == real or not 0 < forged <= sr.EPOCH_MAX:
            return False
        return site not in node.gateway.site_epochs

    def forged_link_packet(self, kind: str) -> Tuple[str, str, bytes]:
        """A DATA (forged records), ACK or NACK on a link the sniffer saw, in its session (only
        with a key, or forge_in_session) or in another one / under another daemon."""
        if not self.sniffed:
            return self.forged_hello()
        (src, dest), (pid, session, seq) = self.rng.choice(sorted(self.sniffed.items()))
        if not self.in_session:
            if self.rng.random() < 0.5:
                session = self.rng.choice([session + self.rng.randrange(1, 5), max(0, session - 1),
                                           2 ** 32 - 1, 0 if session else 1])
            else:
                pid = (pid[0], self.rng.choice([pid[1] + 1, max(0, pid[1] - 1), self.n()]))
                if self.rng.random() < 0.3:
                    pid = (self.rng.choice(sorted(self.sim.nodes)), pid[1])
                if pid == self.sniffed[src, dest][0]:
                    pid = (pid[0], pid[1] + 1)
        seal = self.forger_seal()
        try:
            if kind == "data":
                return dest, src, sr.encode_hop_data(pid, max(1, self.near(seq + 1)), self.forged_records(),
                                                     seal, session, self.near(seq))
            control = self.rng.choice([0, 1, 1000, 2 ** 32 - 1])  # (the sniffer does not track it)
            if kind == "ack":
                return dest, src, sr.encode_hop_ack(pid, self.near(seq), self.near(seq), seal, session, control)
            missing = sorted({self.near(seq) for _ in range(self.rng.choice([1, 3, 170]))})
            return dest, src, sr.encode_hop_nack(pid, self.near(seq), missing, seal, session, control)
        except struct.error:
            return dest, src, b"SMRG"

    def forged_records(self) -> bytes:
        """A payload of 1-3 forged site records (or a length no record has, or garbage)."""
        r = self.rng.random()
        if r < 0.05:
            return sr.encode_varint(sr.MAX_SITE_RECORD_BYTES + self.rng.randrange(1, 1000)) + b"x" * 10
        if r < 0.1:
            return bytes(self.rng.getrandbits(8) for _ in range(self.rng.randrange(1, 60)))
        out = b""
        for _ in range(self.rng.randrange(1, 4)):
            try:
                out += sr.encode_site_record(self.forged_record())
            except (struct.error, ValueError, OverflowError):
                out += b"\x03\x01\x00\x00"
        return out

    def forged_record(self) -> sr.SiteRecord:
        sim = self.sim
        nsites = len(sim.case.sites)
        rng = self.rng
        site = rng.choice([rng.randrange(nsites)] * 4 + [nsites, sr.MAX_SITES])
        gw = sim.nodes[rng.choice(sorted(sim.nodes))].gateway
        lts = rng.choice([self.near(gw.own_lts), self.n(), 0])
        seq = self.near(gw.applied_seq.get(site, 0))
        kind = rng.choice([sr.SITE_MSG, sr.SITE_MSG, sr.SITE_FRONTIER, sr.SITE_ARU, sr.SITE_PROPOSE,
                           sr.SITE_READY, sr.SITE_GIVEUP, sr.SITE_MERGE, sr.SITE_LINKS, sr.SITE_SUSPECT,
                           sr.SITE_JOIN, sr.SITE_EPOCH, sr.SITE_UNRELIABLE])
        if kind in (sr.SITE_MSG, sr.SITE_UNRELIABLE):
            origin = rng.choice(sim.case.sites[site] if site < nsites else ["x1"])
            what = rng.random()
            if what < 0.3:
                body = sr.SITE_SKIP_BODY
            elif what < 0.8:  # a client's message (no serial anybody submitted)
                kind_of_msg = rng.choice([sr.DATA, sr.DATA, sr.JOIN, sr.LEAVE, sr.KILL, sr.STATE])
                msg = sr.DaemonMessage(kind_of_msg, origin, "#c#%s" % origin,
                                       rng.choice(SERVICES + [sr.UNRELIABLE_MESS]), ["g", "g1"][:rng.randrange(1, 3)],
                                       data=b"\0" * 8 + b"forged")
                body = sr.encode_message_body(msg)
            else:
                body = bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 50)))
            service = rng.choice(SERVICES + [sr.UNRELIABLE_MESS, 0, 0xFFFFFFFF])
            if kind == sr.SITE_UNRELIABLE:  # (named as a real one is: a sequence, an lts)
                return sr.SiteRecord(kind, site, lts, max(1, seq), sr.UNRELIABLE_MESS, origin, body)
            return sr.SiteRecord(kind, site, lts, max(1, seq), service, origin, body)
        if kind in sr.SITE_BODY_KINDS:
            lost = rng.sample(range(nsites), rng.randrange(nsites + 1))
            entries = {s: (self.near(gw.applied_seq.get(s, 0)), self.n(), self.n())
                       for s in range(nsites) if rng.random() < 0.5}
            number = self.near(gw.view_seq if kind != sr.SITE_LINKS else 0)
            return sr.SiteRecord(kind, site, lts, number, body=sr.encode_site_view_body(lost, entries))
        if kind == sr.SITE_FRONTIER:
            return sr.SiteRecord(kind, site, lts, rng.choice([0, seq]))
        return sr.SiteRecord(kind, site, lts, self.near(gw.view_seq) if kind == sr.SITE_ARU else self.n())

    # ------------------------------------------------------------ a site's LAN
    def lan_packet(self, site: int, src: str, raw: bytes) -> Tuple[str, str, bytes]:
        """(dest, src, raw) of one hostile datagram on the LAN of `site` (its ring's port)."""
        names = self.sim.case.sites[site]
        dest = self.rng.choice(names)
        kind = self.rng.choice(["mangled", "replayed", "other_team", "forged"])
        if kind == "forged" and not self.in_session:
            # (without a key a forged ring packet passes the CRC: a JOIN naming a daemon's
            # next incarnation splits its site's ring for a while, which the ring survives
            # (ring_sim --hostile) and the sites layer does not yet: "a site split in two rings")
            kind = "mangled"
        self._count("lan_" + kind)
        if kind == "mangled":
            return dest, src, self.mangle(raw)
        if kind == "replayed":
            src0, old = self.rng.choice(self.captured_lan[site])
            return dest, src0, old
        if kind == "other_team":
            return dest, src, self.other_team(raw)
        shim = _RingForger(names, self.sim.key)
        forger = ring_sim.Hostile(self.rng, shim)
        try:
            return dest, self.rng.choice(names), sr.encode_ring_packet(forger.forged(), forger.forger_seal())
        except struct.error:
            return dest, src, b"SMRG"


class _RingForger:
    """What ring_sim.Hostile needs of its simulator to forge a ring packet for one site."""

    def __init__(self, names: List[str], key: Optional[bytes]) -> None:
        self.names = list(names)
        self.key = key


#: the simulated daemons' key with --key (the forger's keys are random)
SIM_KEY = ring_sim.SIM_KEY


def run_seed(seed: int, on_start=None, delivery_filter=None, unreliable: bool = False,
             lan_splits: bool = False, groups: bool = False, hostile: float = 0.0,
             key: bool = False, forge_in_session: bool = False, split_quorum: bool = True,
             client_views: bool = False, cut_after_merge: bool = False) -> SitesResult:
    services = SERVICES + ([sr.UNRELIABLE_MESS] if unreliable else [])
    return SitesSim(seed, on_start=on_start, delivery_filter=delivery_filter, services=services,
                    lan_splits=lan_splits, groups=groups, hostile=hostile,
                    key=SIM_KEY if key else None, forge_in_session=forge_in_session,
                    split_quorum=split_quorum, client_views=client_views,
                    cut_after_merge=cut_after_merge).run()


def replay_command(seed: int, unreliable: bool = False, lan_splits: bool = False,
                   groups: bool = False, hostile: float = 0.0, key: bool = False,
                   forge_in_session: bool = False, split_quorum: bool = True, client_views: bool = False,
                   cut_after_merge: bool = False) -> str:
    return "python3 tests/sites_sim.py %d --log%s" % (seed, mix_options(
        unreliable, lan_splits, groups, hostile, key, forge_in_session, split_quorum, client_views,
        cut_after_merge))


def mix_options(unreliable: bool = False, lan_splits: bool = False, groups: bool = False,
                hostile: float = 0.0, key: bool = False, forge_in_session: bool = False,
                split_quorum: bool = True, client_views: bool = False, cut_after_merge: bool = False) -> str:
    """The command-line options of a run's mix (for the replay and rerun commands)."""
    return "%s%s%s%s%s%s%s%s%s" % (
        " --unreliable" if unreliable else "", " --lan-splits" if lan_splits else "",
        " --groups" if groups else "", " --hostile %g" % hostile if hostile else "",
        " --key" if key else "", " --forge-in-session" if forge_in_session else "",
        "" if split_quorum else " --no-split-quorum", " --client-views" if client_views else "",
        " --cut-after-merge" if cut_after_merge else "")


def add_cut_after_merge_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cut-after-merge", action="store_true",
                        help="in a mesh of three, a site cut off and healed, then a link cut 0-4 s "
                        "after the heal (mostly between the two sites of the other old view), while "
                        "or after the views merge; routed around (case_for_seed)")


def add_client_views_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--client-views", action="store_true",
                        help="each daemon runs its group core too (ROSTERs, REJOINs, the sites' STATE "
                        "in the order) with one client, whose membership messages are checked "
                        "(check_client_views); implies --groups")


def add_hostile_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--hostile", type=float, default=0.0, metavar="P",
                        help="per packet on a HOP link or a LAN while the clients send, the chance "
                        "of a hostile datagram too (mangled, replayed, forged, another team's)")
    parser.add_argument("--key", action="store_true",
                        help="the daemons sign their ring and HOP packets (RingSeal); the forger "
                        "has no key")
    parser.add_argument("--forge-in-session", action="store_true",
                        help="without --key too, forged DATA / ACK / NACK name a link's sender and "
                        "session as sniffed (they pass the CRC: what only a key stops)")


def add_split_quorum_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-split-quorum", action="store_true",
                        help="no dynamic voting in a site split in two rings (HopSettings."
                        "split_quorum off, as the daemon's --no-split-quorum); by default on as "
                        "the daemon ships it: sites of 3 daemons or more (2 with --lan-splits)")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Run one seed of several sites joined by HOP links "
                                     "in the deterministic simulator and check the guarantees.")
    parser.add_argument("seed", nargs="?", type=int, default=1)
    parser.add_argument("--log", action="store_true", help="print the daemons' protocol logs")
    parser.add_argument("--unreliable", action="store_true",
                        help="the clients send UNRELIABLE messages too (best effort, to every site)")
    parser.add_argument("--lan-splits", action="store_true",
                        help="split a site's LAN in two for a while (two rings of one site: dynamic voting, a fork, "
                             "the fork takes the kept state when the rings meet; lab guide)")
    parser.add_argument("--groups", action="store_true",
                        help="the clients join and leave groups during the traffic; a site owes a "
                        "message only if it has a member of its group then")
    add_client_views_option(parser)
    add_hostile_options(parser)
    add_split_quorum_option(parser)
    add_cut_after_merge_option(parser)
    parser.add_argument("--site-grace-s", type=float, default=None,
                        help="SITE_GRACE_S for this run (bench/sites_soak.py's option of the same name: "
                        "a soak's seed replays alike)")
    args = parser.parse_args(argv)
    if args.site_grace_s is not None:
        if args.site_grace_s <= 0:
            parser.error("--site-grace-s must be above 0")
        sr.SITE_GRACE_S = args.site_grace_s  # (read at each use: every daemon sees it)
    case = case_for_seed(args.seed, args.lan_splits, args.cut_after_merge)
    print("sites %s, costs %s, %.0f msg/s for %.0f s" % (case.sites, case.costs, case.rate_per_s, case.traffic_s))
    res = run_seed(args.seed, unreliable=args.unreliable, lan_splits=args.lan_splits, groups=args.groups,
                   hostile=args.hostile, key=args.key, forge_in_session=args.forge_in_session,
                   split_quorum=not args.no_split_quorum, client_views=args.client_views,
                   cut_after_merge=args.cut_after_merge)
    if args.log:
        print("\n".join(res.log_lines))
    print(res.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
