"""A deterministic simulated network for RingOrderer, and the checkers of the guarantees.

One seeded random.Random decides everything: packet loss, duplication, delay (and so reordering),
partitions and heals, crashes (some of them clean stops: the daemon announces that it leaves,
as after Ctrl-C, then stops) and restarts (a restarted daemon is a fresh RingOrderer with a new
incarnation: its start time in ms, 1000, 2000, ...; in some seeds a restart's clock went back
and its incarnation is SMALLER than the last one, so it must learn from the others to take a
higher one), and the clients' messages of every service type. There is no real time and no
thread: a fake clock jumps from event to event, so a seed replays exactly:

    python3 tests/ring_sim.py 123 --log

The checkers (run at the end of every run; the cheap ones after every step), each with the
kind of violation it reports (tests/test_ring_sim.py plants a fault for each one):
  agreed order   one order: the union of all daemons' delivery sequences has no cycle
  FIFO           per sender, in the order it sent
  causal order   a message is delivered after those its sender had delivered before sending it
  causal hole    ... and those of its configuration were delivered at all (check_causal states
                 the EVS rule and its transitional exception)
  duplicate      no daemon delivers a message twice
  configuration  every daemon that installs a ring, or a transitional configuration between
                 two rings, sees the same members, itself among them
  transitional   a transitional configuration c -> c' holds exactly the processes that went
                 from c straight to c' (none missing, none extra)
  virtual sync.  daemons that move together from one configuration to the next delivered the
                 same set of messages in it (regular part and transitional part)
  safe           a SAFE message delivered in a regular configuration was complete at every member
  end, no loss   at the end (network healed, everybody restarted, quiet), everybody is in one
                 regular configuration and delivered the same messages in it; every message
                 submitted at a daemon that never crashed was delivered by that daemon
UNRELIABLE messages (thesis 7.3.3: outside the order and the reliable link; lost pieces are
never resent) are left out of all of those except "duplicate"; instead:
  unreliable     delivered only in a regular configuration (never in a transitional one), and
                 everywhere in the same one: the configuration it was sent in
"""
from __future__ import annotations

import argparse
import collections
import heapq
import inspect
import os
import random
import struct
import sys
import textwrap
import types

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import spread_mini as sr  # noqa: E402

SERVICES = [sr.UNRELIABLE_MESS, sr.RELIABLE_MESS, sr.FIFO_MESS, sr.CAUSAL_MESS,
            sr.AGREED_MESS, sr.SAFE_MESS]

# The kinds of violation, one per checker (a violation reads "t=<time> <kind>: <what>");
# tests/test_ring_sim.py plants a fault for each and asserts that its own kind is reported
WIRE = "wire"  # a packet bigger than max_packet_bytes
FOREIGN = "foreign"  # a delivered message that nobody submitted
ALTERED = "altered"  # delivered with other bytes, service or sender than submitted
DUPLICATE = "duplicate"
UNRELIABLE = "unreliable"
CONFIGURATION = "configuration"  # members that disagree between daemons, or no self-inclusion
TRANSITIONAL = "transitional"  # a transitional configuration with a member too few or too many
AGREED = "agreed order"
FIFO = "FIFO"
CAUSAL_ORDER = "causal order"  # a causal predecessor delivered after the message
CAUSAL_HOLE = "causal hole"  # a causal predecessor never delivered where the message was
SAFE = "safe"
VIRTUAL_SYNCHRONY = "virtual synchrony"
END = "end"  # the healed, quiet network did not end in one ring of every live daemon
LOSS = "no loss"
KINDS = (WIRE, FOREIGN, ALTERED, DUPLICATE, UNRELIABLE, CONFIGURATION, TRANSITIONAL, AGREED, FIFO,
         CAUSAL_ORDER, CAUSAL_HOLE, SAFE, VIRTUAL_SYNCHRONY, END, LOSS)


def kind_of(violation):
    """The checker's kind of a violation string ("t=1.234 causal hole: ..." -> "causal hole")."""
    return violation.split(" ", 1)[1].split(":", 1)[0]


def random_payload(rng: random.Random, serial: int) -> bytes:
    """A message's data: its serial (the checkers find it by this) and random bytes, mostly
    small, some of several packets."""
    r = rng.random()
    size = rng.randrange(8, 100) if r < 0.7 else (
        rng.randrange(100, 1200) if r < 0.95 else rng.randrange(1200, 6000))
    data = serial.to_bytes(8, "big") + bytes(rng.getrandbits(8) for _ in range(8))
    return data + b"x" * max(0, size - len(data))


class Faults:
    """How hostile the network is (probabilities per packet, delays in seconds)."""

    def __init__(self, loss=0.02, dup=0.01, delay_s=0.002, jitter_s=0.002, crashes=True,
                 partitions=True, fault_every_s=1.2, garbage=0.005, clock_back=0.0,
                 clean_stop=0.0, hostile=0.0):
        self.loss = loss
        self.dup = dup
        self.delay_s = delay_s
        self.jitter_s = jitter_s
        self.crashes = crashes
        self.partitions = partitions
        self.fault_every_s = fault_every_s
        self.garbage = garbage  # a mangled copy of the packet, or other traffic, arrives too
        self.clock_back = clock_back  # a restart's clock went back: a smaller incarnation
        #: the share of the crashes that are clean stops (Ctrl-C: RingOrderer.leave, its LEAVE
        #: copies, then the process is gone); the others are kill -9
        self.clean_stop = clean_stop
        #: per packet sent while faults last, the chance that a hostile one arrives too: a
        #: replay of a packet sent earlier (to any daemon: old incarnations' and old rings'
        #: included) or a well-formed forged packet with extreme values in every field (Hostile)
        self.hostile = hostile


class Process:
    """The record of one process of one daemon, as the checkers see it. A process restarted
    with its clock set back changes its incarnation while it runs: `pid` is the one it started
    with, `pids` all it had, `current` the one it has now."""

    def __init__(self, pid):
        self.pid = pid
        self.pids = {pid}
        self.current = pid
        self.events = []  # ('conf', ConfigurationChange, t) / ('msg', msg_id, service, t)
        self.delivered = []  # msg ids in delivery order
        self.delivered_set = set()
        self.unreliable = []  # (serial, ring id of the configuration it was delivered in)
        self.completed = {}  # msg_id -> time it was complete here (link level)
        self.crashed = False


class SimResult:
    def __init__(self, seed, violations, log_lines, stats):
        self.seed = seed
        self.violations = violations
        self.log_lines = log_lines
        self.stats = stats

    def kinds(self):
        """The set of violation kinds this run reported."""
        return {kind_of(v) for v in self.violations}

    def summary(self):
        head = "seed %d: %d violations; %s" % (
            self.seed, len(self.violations),
            ", ".join("%s=%s" % kv for kv in sorted(self.stats.items())))
        return "\n".join([head] + ["  VIOLATION " + v for v in self.violations[:20]])


class Sim:
    def __init__(self, seed, daemons=3, faults=None, settings=None, tick_s=0.01, group_cores=False,
                 delivery_filter=None, on_start=None, key=None):
        self.seed = seed
        self.rng = random.Random(seed)
        #: the daemons' key (--key), or None; a forger never has it
        self.key = key
        #: hostile packets from their own Random, so that a seed's other draws stay as they were
        self.hostile = Hostile(random.Random(seed * 7919 + 5), self)
        self.hostile_until = float("inf")  # run(): hostile packets while the faults last
        self.names = ["d%d" % (i + 1) for i in range(daemons)]
        self.faults = faults or Faults()
        self.settings = settings or {}
        self.tick_s = tick_s
        self.now = 0.0
        self.net = []
        self.net_counter = 0
        self.nodes = {}  # name -> (orderer, Process) for the daemons that are up
        self.incarnation = {n: 0 for n in self.names}  # the highest incarnation of each name
        self.proc_of = {}  # pid (any incarnation a process had) -> Process
        self.processes = []
        self.group_of = None  # partition: name -> side
        self.oneway_cuts = set()  # (src, dest): src's packets do not reach dest
        self.paused_until = {}  # name -> time: a stopped process (SIGSTOP, a long GC pause)
        self.submitted = {}  # msg_id -> (service, data, deps (pid, prefix length), origin pid)
        self.violations = []
        self.unreliable_ring = {}  # serial -> (ring id, pid) of its first delivery
        self.log_lines = []
        self.next_tick = 0.0
        self.drop_rule = None  # scenario tests: drop_rule(src, dest, raw) -> True drops it
        #: clean stops decided by their own Random, so that a seed's other draws stay the same
        #: until its first clean stop
        self.stop_rng = random.Random(seed * 7919 + 3)
        self.leaving = set()  # names of daemons that announced they leave, still sending copies
        #: soaks: the share of UNRELIABLE among the clients' messages (None: one service in six,
        #: drawn exactly as before, so every seed replays as it always did)
        self.unreliable_share = None
        #: scenario tests: a RingGroupCore above each orderer (its group STATE exchange after
        #: every ring change goes through the ring; the checkers skip those STATE messages)
        self.group_cores = group_cores
        self.cores = {}
        #: planted faults (tests/test_ring_sim.py, bench/mutation_check.py), so that the checkers
        #: are shown to catch them without editing the code under test:
        #: delivery_filter(name, outputs) -> outputs, where outputs are what one poll() of daemon
        #: `name` returned, each as (output, trace id of a Deliver or None); the filter may drop,
        #: repeat, reorder or replace them before the application (and the checkers) see them
        self.delivery_filter = delivery_filter
        #: on_start(name, orderer): called with every new process's RingOrderer, before it runs
        self.on_start = on_start
        self.stats = {"packets": 0, "lost": 0, "crashes": 0, "restarts": 0, "partitions": 0,
                      "submitted": 0, "configurations": 0}
        for n in self.names:
            self.start(n)

    # -------------------------------------------------------------- daemons

    def start(self, name, incarnation=None):
        """A new process of daemon `name`: by default with a later start time (the next 1000
        ms) than every earlier one; or with the given, perhaps smaller, incarnation."""
        if incarnation is None:
            incarnation = (self.incarnation[name] // 1000 + 1) * 1000
        self.incarnation[name] = max(self.incarnation[name], incarnation)
        pid = (name, incarnation)
        cfg = sr.RingSettings(**self.settings)
        orderer = sr.RingOrderer(name, pid[1], self.names, random.Random(self.rng.random()),
                                 cfg, now=self.now, seal=sr.RingSeal(self.key) if self.key else None)
        proc = Process(pid)
        self.proc_of[pid] = proc
        orderer.transport.trace_completed = []
        orderer.transport.trace_delivered = []
        if self.on_start is not None:
            self.on_start(name, orderer)
        self.nodes[name] = (orderer, proc)
        self.processes.append(proc)
        if self.group_cores:
            ips = {n: "127.0.0.%d" % (i + 1) for i, n in enumerate(self.names)}
            self.cores[name] = sr.RingGroupCore(name, orderer, ips, daemon_order=self.names)
        self.drain(name)

    def add_counters(self, orderer):
        for key in ("unreliable_dropped_incomplete", "unreliable_dropped_other_configuration",
                    "recovery_packets_sent", "recovered_packets", "discarded_after_gap",
                    "retransmissions_sent", "token_loss", "consensus_timeouts",
                    "messages_resent_after_change", "dropped_garbage", "incarnation_bumps",
                    "incarnation_notices_sent", "leaves_received", "duplicate_leaves",
                    "leaves_ignored_not_member", "dropped_bad_tag", "dropped_no_tag",
                    "incarnations_forgotten", "dropped_old_incarnation",
                    "dropped_tokens_not_for_us", "dropped_commit_tokens_not_for_us",
                    "dropped_tokens_far_ahead", "dropped_data_beyond_the_token",
                    "dropped_ring_seq_far_ahead", "newer_incarnation_beyond_wire_limit",
                    "dropped_unknown_daemon"):
            self.stats[key] = self.stats.get(key, 0) + orderer.counters.get(key, 0)

    def start_clock_back(self, name):
        """Restart `name` with an incarnation below the last one (its clock was set back),
        one that no earlier process of the name had."""
        used = {pid[1] for pid in self.proc_of if pid[0] == name}
        incarnation = None
        for _ in range(100):
            incarnation = self.rng.randrange(1, max(2, self.incarnation[name]))
            if incarnation not in used:
                break
        self.stats["clock_back_restarts"] = self.stats.get("clock_back_restarts", 0) + 1
        self.start(name, incarnation)

    def restart(self, name):
        f = self.faults
        if f.clock_back and self.rng.random() < f.clock_back:
            self.start_clock_back(name)
        else:
            self.start(name)

    def stop_cleanly(self, name, reason="stopped by its operator"):
        """Ctrl-C: the daemon announces that it leaves; it is gone (crash) once it has sent its
        last copy of the announcement (after_tick), or at once if crashed or healed before."""
        orderer = self.nodes[name][0]
        orderer.leave(reason, self.now)
        self.drain(name)
        self.leaving.add(name)
        self.stats["clean_stops"] = self.stats.get("clean_stops", 0) + 1

    def after_tick(self, name):
        if name in self.leaving and not self.nodes[name][0].leaving:
            self.crash(name)

    def crash(self, name):
        self.leaving.discard(name)
        orderer, proc = self.nodes.pop(name)
        self.cores.pop(name, None)
        self.add_counters(orderer)
        proc.crashed = True
        self.collect_log(orderer)
        self.stats["crashes"] += 1

    def collect_log(self, orderer):
        self.log_lines.extend(orderer.log)
        orderer.log.clear()

    # -------------------------------------------------------------- network

    def send(self, src, dest, raw):
        self.stats["packets"] += 1
        limit = self.nodes[src][0].cfg.max_packet_bytes if src in self.nodes else 1400
        if raw[5] in (sr.PT_DATA, sr.PT_TOKEN) and len(raw) > limit:
            self.fail(WIRE, "%s sent a %d-byte packet, more than max_packet_bytes %d"
                      % (src, len(raw), limit))
        f = self.faults
        if f.hostile and self.now < self.hostile_until:
            self.hostile.saw(src, raw)
            if self.hostile.rng.random() < f.hostile:
                self.push(*self.hostile.packet())
        if self.rng.random() < f.loss:
            self.stats["lost"] += 1
            return
        if self.rng.random() < f.garbage:
            self.push(dest, src, self.mangle(raw))
        copies = 2 if self.rng.random() < f.dup else 1
        for _ in range(copies):
            delay = f.delay_s + self.rng.random() * f.jitter_s
            self.net_counter += 1
            heapq.heappush(self.net, (self.now + delay, self.net_counter, dest, src, raw))

    def push(self, dest, src, raw):
        self.net_counter += 1
        heapq.heappush(self.net, (self.now + self.faults.delay_s, self.net_counter, dest, src, raw))

    def mangle(self, raw):
        """Garbage the daemons must drop and count: a flipped byte, a cut packet, random bytes,
        another version of the protocol, or somebody else's traffic on the port."""
        self.stats["garbage_sent"] = self.stats.get("garbage_sent", 0) + 1
        kind = self.rng.randrange(5)
        if kind == 0 and raw:
            i = self.rng.randrange(len(raw))
            return raw[:i] + bytes([raw[i] ^ (1 << self.rng.randrange(8))]) + raw[i + 1:]
        if kind == 1:
            return raw[:self.rng.randrange(len(raw))]
        if kind == 2:
            return bytes(self.rng.getrandbits(8) for _ in range(self.rng.randrange(64)))
        if kind == 3:
            return raw[:4] + bytes([raw[4] + 1]) + raw[5:]
        return b"\x80\x00\x00\x80" + raw[4:]  # looks like a Spread client header

    def reachable(self, a, b):
        if (a, b) in self.oneway_cuts:
            return False
        return self.group_of is None or self.group_of.get(a) == self.group_of.get(b)

    def drain(self, name):
        orderer, proc = self.nodes[name]
        if orderer.me != proc.current:  # it took a newer incarnation (its clock went back)
            proc.current = orderer.me
            proc.pids.add(orderer.me)
            self.proc_of[orderer.me] = proc
            self.incarnation[name] = max(self.incarnation[name], orderer.me[1])
        core = self.cores.get(name)
        outputs = self.polled(name, orderer)
        while outputs:
            for out, msg_id in outputs:
                if isinstance(out, sr.Send):
                    self.send(name, out.dest, out.packet)
                elif isinstance(out, sr.SendToAll):  # IP multicast: each copy may be lost alone
                    for dest in out.dests:
                        self.send(name, dest, out.packet)
                elif isinstance(out, sr.Deliver):
                    if core is not None:
                        core.deliver(out.msg)
                    if out.msg.kind != sr.STATE:
                        self.record_delivery(proc, out.msg, msg_id)
                else:
                    proc.events.append(("conf", out, self.now))
                    if out.kind == sr.CONF_REGULAR:
                        self.stats["configurations"] += 1
                    if core is not None:
                        core.configuration_change(out, 0)  # submits its STATE
            outputs = self.polled(name, orderer)  # what the group core's STATE set going
        for mid in orderer.transport.trace_completed:
            proc.completed.setdefault(mid, self.now)
        del orderer.transport.trace_completed[:]
        if len(orderer.log) > 200:
            self.collect_log(orderer)

    def polled(self, name, orderer):
        """One poll() of the orderer, each Deliver paired with its trace id, through the
        delivery filter if a test planted one."""
        outputs = [(out, orderer.transport.trace_delivered.pop(0) if isinstance(out, sr.Deliver) else None)
                   for out in orderer.poll()]
        if self.delivery_filter is not None and outputs:
            outputs = self.delivery_filter(name, outputs)
        return outputs

    def record_delivery(self, proc, msg, msg_id):
        """Messages are known by the serial number the simulated client puts in their first
        8 bytes (a message cut by a ring change is sent again under a new orderer id)."""
        if len(msg.data) < 8:
            self.fail(FOREIGN, "%s#%d delivered a message without our serial" % proc.pid)
            return
        serial = int.from_bytes(msg.data[:8], "big")
        if serial in proc.delivered_set:
            self.fail(DUPLICATE, "message %d delivered twice at %s#%d" % ((serial,) + proc.pid))
            return
        sub = self.submitted.get(serial)
        if sub is None:
            self.fail(FOREIGN, "%s#%d delivered %s that nobody submitted" % (proc.pid + (serial,)))
            return
        if sub[0] != msg.service_type or sub[1] != msg.data or \
                self.proc_of.get(sub[3]) is not self.proc_of.get(msg_id[:2]):
            self.fail(ALTERED, "message %d delivered altered at %s" % (serial, proc.pid))
        if sr._is_unreliable(sub[0]):
            self.record_unreliable(proc, serial)
            return
        proc.delivered.append(serial)
        proc.delivered_set.add(serial)
        proc.events.append(("msg", serial, msg.service_type, self.now, msg_id))

    def record_unreliable(self, proc, serial):
        """UNRELIABLE: no order, may be lost; only in its own regular configuration, once."""
        proc.delivered_set.add(serial)
        confs = [ev[1] for ev in proc.events if ev[0] == "conf"]
        if not confs or confs[-1].kind != sr.CONF_REGULAR:
            self.fail(UNRELIABLE, "%s#%d delivered %d outside a regular configuration"
                      % (proc.pid + (serial,)))
            return
        ring = confs[-1].ring_id
        first = self.unreliable_ring.setdefault(serial, (ring, proc.pid))
        if first[0] != ring:
            self.fail(UNRELIABLE, "message %d delivered in ring %s at %s#%d but in ring %s at "
                      "%s#%d" % ((serial, ring) + proc.pid + (first[0],) + first[1]))
        proc.unreliable.append((serial, ring))
        self.stats["unreliable_delivered"] = self.stats.get("unreliable_delivered", 0) + 1

    def fail(self, kind, text):
        """A violation: "t=<time> <kind>: <what>" (kind_of reads the kind back)."""
        self.violations.append("t=%.3f %s: %s" % (self.now, kind, text))

    # -------------------------------------------------------------- clients

    def submit_random(self):
        running = [n for n in sorted(self.nodes) if self.paused_until.get(n, 0.0) <= self.now]
        if not running:
            return
        name = self.rng.choice(running)
        orderer, proc = self.nodes[name]
        if self.unreliable_share is None:
            service = self.rng.choice(SERVICES)
        elif self.rng.random() < self.unreliable_share:
            service = sr.UNRELIABLE_MESS
        else:
            service = self.rng.choice(SERVICES[1:])
        serial = len(self.submitted) + 1
        data = random_payload(self.rng, serial)
        msg = sr.DaemonMessage(sr.DATA, name, "#c%d#%s" % (self.rng.randrange(3), name), service, ["g"],
                              data=data)
        if not orderer.submit(msg):
            return
        self.stats["submitted"] += 1
        # deps: what this daemon had delivered before the client sent (causal order)
        self.submitted[serial] = (service, data, (proc.pid, len(proc.delivered)), proc.pid)

    # -------------------------------------------------------------- the run

    def settled(self):
        for orderer, _ in self.nodes.values():
            if orderer.state != sr.OPERATIONAL or orderer.transport.pending or orderer.transport.in_progress \
                    or orderer.ring.stream.ordered or len(orderer.ring.members) != len(self.nodes):
                return False
        arus = {(o.ring.ring_id, o.ring.my_aru, o.ring.high_seq) for o, _ in self.nodes.values()}
        return len(arus) == 1

    def run(self, seconds=8.0, traffic_rate_per_s=150.0, quiet_s=4.0, max_extra_s=60.0):
        """Faults and traffic until seconds - quiet_s; then everything heals and restarts and
        the run goes on until the daemons settle (at least until `seconds`, at most
        max_extra_s more), so that the end checks see a finished run."""
        fault_end = max(0.0, seconds - quiet_s)
        self.hostile_until = fault_end
        hard_end = seconds + max_extra_s
        next_tick = 0.0
        next_submit = self.rng.expovariate(traffic_rate_per_s)
        next_fault = self.rng.uniform(0.3, self.faults.fault_every_s * 2)
        healed = False
        while self.now < seconds or (self.now < hard_end and not self.settled()):
            t_net = self.net[0][0] if self.net else float("inf")
            t = min(t_net, next_tick, next_submit if next_submit < fault_end else float("inf"),
                    next_fault if next_fault < fault_end else float("inf"))
            if not healed and t >= fault_end:
                t = fault_end
            if t > hard_end:
                break
            self.now = t
            if not healed and self.now >= fault_end:
                healed = True
                self.heal_everything()
            elif t == t_net:
                _, _, dest, src, raw = heapq.heappop(self.net)
                if self.paused_until.get(dest, 0.0) > self.now:
                    # a stopped process: the kernel keeps its datagrams until it runs again
                    self.net_counter += 1
                    heapq.heappush(self.net, (self.paused_until[dest], self.net_counter, dest,
                                              src, raw))
                elif dest in self.nodes and self.reachable(src, dest):
                    self.nodes[dest][0].receive(raw, src, self.now)
                    self.drain(dest)
            elif t == next_tick:
                for name in sorted(self.nodes):
                    if self.paused_until.get(name, 0.0) > self.now:
                        continue
                    self.nodes[name][0].tick(self.now)
                    self.drain(name)
                    self.after_tick(name)
                next_tick += self.tick_s
            elif t == next_submit:
                self.submit_random()
                next_submit += self.rng.expovariate(traffic_rate_per_s)
            elif t == next_fault:
                self.random_fault()
                next_fault += self.rng.uniform(0.2, self.faults.fault_every_s * 2)
        for orderer, proc in self.nodes.values():
            self.collect_log(orderer)
            self.add_counters(orderer)
        for what, count in self.hostile.sent.items():
            self.stats["hostile_" + what] = count
        self.stats["trans_deliveries"] = sum(
            1 for p in self.processes for e in self.configurations_of(p) for _ in e[2])
        return self.check()

    def heal_everything(self):
        for name in sorted(self.leaving):  # its last copies are not sent: like kill -9 after ^C
            self.crash(name)
        self.group_of = None
        self.paused_until = {}
        self.oneway_cuts = set()
        for name in self.names:
            if name not in self.nodes:
                self.restart(name)
                self.stats["restarts"] += 1

    def random_fault(self):
        f = self.faults
        choices = []
        up = sorted(self.nodes)
        down = [n for n in self.names if n not in self.nodes]
        if f.crashes and len(up) > 1:
            choices.append("crash")
        if f.crashes and down:
            choices.append("restart")
        if f.partitions and len(self.names) > 1:
            choices.append("partition" if self.group_of is None else "heal")
            choices.append("oneway" if not self.oneway_cuts else "heal")
        if f.crashes and up:
            choices.append("pause")
        if not choices:
            return
        what = self.rng.choice(choices)
        if what == "crash":
            name = self.rng.choice(up)
            if name not in self.leaving and f.clean_stop and self.stop_rng.random() < f.clean_stop:
                self.stop_cleanly(name)
            else:
                self.crash(name)
        elif what == "restart":
            self.restart(self.rng.choice(down))
            self.stats["restarts"] += 1
        elif what == "partition":
            sides = {n: self.rng.randrange(2) for n in self.names}
            self.group_of = sides
            self.stats["partitions"] += 1
        elif what == "pause":
            # stopped for a while, shorter or longer than the token timeout
            name = self.rng.choice(up)
            self.paused_until[name] = self.now + self.rng.choice([0.2, 0.5, 1.0, 2.0])
            self.stats["pauses"] = self.stats.get("pauses", 0) + 1
        elif what == "oneway":
            a, b = self.rng.sample(self.names, 2)
            self.oneway_cuts.add((a, b))
            self.stats["oneway_cuts"] = self.stats.get("oneway_cuts", 0) + 1
        else:
            self.group_of = None
            self.oneway_cuts = set()

    # -------------------------------------------------------------- scenario helpers

    def deliver_one(self):
        _, _, dest, src, raw = heapq.heappop(self.net)
        if dest in self.nodes and self.reachable(src, dest):
            if self.drop_rule is not None and self.drop_rule(src, dest, raw):
                return
            self.nodes[dest][0].receive(raw, src, self.now)
            self.drain(dest)

    def tick_all(self):
        for name in sorted(self.nodes):
            self.nodes[name][0].tick(self.now)
            self.drain(name)
            self.after_tick(name)
        self.next_tick += self.tick_s

    def run_until(self, t_end, stop=None):
        """Scenario tests: let time pass to t_end (no random faults, no random traffic);
        stop early when stop() is true. Returns stop()'s last value."""
        while True:
            t_net = self.net[0][0] if self.net else float("inf")
            t = min(t_net, self.next_tick)
            if t > t_end:
                self.now = t_end
                return stop() if stop else None
            self.now = t
            if t == t_net:
                self.deliver_one()
            else:
                self.tick_all()
            if stop is not None and stop():
                return True

    def submit(self, name, service, size=20):
        """Scenario tests: a client of daemon `name` sends a message; returns its serial."""
        orderer, proc = self.nodes[name]
        serial = len(self.submitted) + 1
        data = serial.to_bytes(8, "big") + b"y" * max(0, size - 8)
        msg = sr.DaemonMessage(sr.DATA, name, "#c#%s" % name, service, ["g"], data=data)
        assert orderer.submit(msg)
        self.submitted[serial] = (service, data, (proc.pid, len(proc.delivered)), proc.pid)
        self.stats["submitted"] += 1
        return serial

    def regular_configs(self, name):
        return [e[1] for e in self.nodes[name][1].events
                if e[0] == "conf" and e[1].kind == sr.CONF_REGULAR]

    # -------------------------------------------------------------- checkers

    def check(self):
        self.check_configurations_agree()
        self.check_transitional()
        self.check_agreed_order()
        self.check_fifo()
        self.check_causal()
        self.check_virtual_synchrony_and_safe()
        self.check_end_state()
        return SimResult(self.seed, self.violations, self.log_lines, self.stats)

    def check_configurations_agree(self):
        """Every daemon that installs a ring sees the same members; a transitional
        configuration between the same two rings has the same members everywhere."""
        seen = {}
        for proc in self.processes:
            for ev in proc.events:
                if ev[0] != "conf":
                    continue
                c = ev[1]
                key = (c.kind, c.ring_id, c.old_ring_id if c.kind == sr.CONF_TRANSITIONAL else None)
                members = tuple(sorted(c.member_ids))
                if c.kind == sr.CONF_REGULAR and not proc.pids & set(c.member_ids):
                    self.fail(CONFIGURATION, "%s#%d installed ring %s without being in it" % (proc.pid + (c.ring_id,)))
                if seen.setdefault(key, members) != members:
                    self.fail(CONFIGURATION, "%s has members %s at %s#%d but %s elsewhere"
                              % ((key, members) + proc.pid + (seen[key],)))

    def check_agreed_order(self):
        """One total order: edges between consecutive deliveries of every process; no cycle."""
        succ = {}
        indeg = {}
        for proc in self.processes:
            for a, b in zip(proc.delivered, proc.delivered[1:]):
                succ.setdefault(a, set())
                if b not in succ[a]:
                    succ[a].add(b)
                    indeg[b] = indeg.get(b, 0) + 1
                indeg.setdefault(a, indeg.get(a, 0))
            for m in proc.delivered:
                indeg.setdefault(m, 0)
        ready = [m for m, d in indeg.items() if d == 0]
        seen = 0
        while ready:
            m = ready.pop()
            seen += 1
            for b in succ.get(m, ()):
                indeg[b] -= 1
                if indeg[b] == 0:
                    ready.append(b)
        if seen != len(indeg):
            stuck = sorted(m for m, d in indeg.items() if d > 0)[:4]
            self.fail(AGREED, "no single order fits all daemons (cycle through %s)" % stuck)

    def check_fifo(self):
        """Per sender, in the order it sent (the client's serials grow with time)."""
        for proc in self.processes:
            last_serial = {}
            for m in proc.delivered:
                origin = self.submitted[m][3]
                if last_serial.get(origin, 0) >= m:
                    self.fail(FIFO, "%s#%d delivered %s after a later message of its sender"
                              % (proc.pid + (m,)))
                last_serial[origin] = m

    @staticmethod
    def rings_of(proc):
        """serial -> the regular ring a process delivered it in: in that ring's regular
        configuration or in the transitional configuration that closes it (EVS delivers a
        message in the configuration it was sent in, or in the transitional one after it)."""
        ring, out = None, {}
        for ev in proc.events:
            if ev[0] == "conf":
                if ev[1].kind == sr.CONF_REGULAR:
                    ring = ev[1].ring_id
            else:
                out[ev[1]] = ring
        return out

    def check_causal(self):
        """Causal delivery, as extended virtual synchrony states it (L. Moser, Y. Amir,
        P. Melliar-Smith, D. Agarwal, "Extended Virtual Synchrony", ICDCS 1994; the thesis,
        ch. 3, causal ordering: a member that sends B after receiving A, every member receives A
        before B (line 2046 of seeds/003); 7.2: Spread provides EVS (line 2548)).

        m1 precedes m2 when the sender of m2 had delivered m1 before its client sent m2, and
        both belong to the same configuration c. The checker knows a message's configuration
        by where it was delivered: the regular ring c whose regular or transitional
        configuration delivered it. The rule: if a daemon p delivers m2 in c, and m2's sender
        O had delivered m1 in c before m2 was sent, then p delivered m1, and before m2.
          causal order  p delivered m1 after m2 (checked over every earlier delivery of O,
                        in any configuration: the one order never goes backwards)
          causal hole   p never delivered m1 although it delivered m2 in c
        The transitional exception, and why it does not excuse a hole: EVS lets p's
        transitional configuration of c miss messages of c (holes: their senders are not in
        p's transitional configuration, so nobody p moves with has them). It does not let p
        deliver a message that may depend on a hole: after the first hole, p delivers only
        messages from daemons in its transitional configuration (Spread's Discard_packets:
        "Due to hole, not delivering"; spread_mini's Transport.drain). Such a daemon O went
        through recovery with p and resent every message of c it had, m1 included, so a
        message of O never lacks a predecessor at p. What the exception does allow is a hole
        that nothing delivered at p depends on: this checker never flags that, and it leaves
        out what EVS leaves out too, predecessors from another configuration (m2 queued in c,
        sent in the next ring: O delivered m1 in c, p delivered m2 in c')."""
        for proc in self.processes:
            pos = {m: i for i, m in enumerate(proc.delivered)}
            ring_here = self.rings_of(proc)
            seen = {}  # origin pid -> (prefix max position, prefix missing count, ring spans)
            for m2 in proc.delivered:
                opid, k = self.submitted[m2][2]
                origin = self.proc_of.get(opid)
                if origin is None or origin is proc:
                    continue
                if opid not in seen:
                    seen[opid] = self.prefixes(origin, pos)
                prefix_max, prefix_missing, spans = seen[opid]
                k = min(k, len(origin.delivered))
                if prefix_max[k] > pos[m2]:
                    self.fail(CAUSAL_ORDER, "%s#%d delivered %s before a message its sender had "
                              "delivered before sending it" % (proc.pid + (m2,)))
                span = spans.get(ring_here[m2])
                if span is None:
                    continue
                first, end = span[0], min(span[1], k)
                if first < end and prefix_missing[end] > prefix_missing[first]:
                    m1 = next(m for m in origin.delivered[first:end] if m not in pos)
                    self.fail(CAUSAL_HOLE, "%s#%d delivered %s in ring %s but never %s, which its "
                              "sender %s#%d had delivered in that ring before sending it"
                              % (proc.pid + (m2, ring_here[m2], m1) + origin.pid))

    def prefixes(self, origin, pos):
        """For origin's deliveries, as seen from a process whose positions are `pos`: the
        prefix maxima of their positions (-1: not delivered), the prefix counts of the ones not
        delivered, and each ring's span [first, end) in origin's delivery sequence."""
        prefix_max, prefix_missing, spans = [-1], [0], {}
        for i, (m1, ring) in enumerate(zip(origin.delivered, self.rings_in_order(origin))):
            prefix_max.append(max(prefix_max[-1], pos.get(m1, -1)))
            prefix_missing.append(prefix_missing[-1] + (m1 not in pos))
            spans[ring] = (spans.get(ring, (i,))[0], i + 1)
        return prefix_max, prefix_missing, spans

    def rings_in_order(self, proc):
        rings = self.rings_of(proc)
        return [rings[m] for m in proc.delivered]

    def transitions_of(self, proc):
        """[(regular ChangeEvent, transitional ChangeEvent or None, next regular ChangeEvent)]"""
        out, current, trans = [], None, None
        for ev in proc.events:
            if ev[0] != "conf":
                continue
            if ev[1].kind == sr.CONF_TRANSITIONAL:
                trans = ev[1]
                continue
            if current is not None:
                out.append((current, trans, ev[1]))
            current, trans = ev[1], None
        return out

    def check_transitional(self):
        """EVS's transitional configuration (Moser et al. 1994): when p goes from regular
        configuration c to c', its transitional configuration holds exactly the members of c'
        that come to c' from c, as p does. So: no member of it outside c or c' (one too many),
        and every process that also went from c straight to c' is in it (one too few: the
        virtual synchrony check would then compare p and q as if they had moved apart)."""
        moved = {}  # (ring c, ring c') -> processes that went from c straight to c'
        found = []
        for proc in self.processes:
            for old, trans, new in self.transitions_of(proc):
                moved.setdefault((old.ring_id, new.ring_id), []).append(proc)
                if trans is not None:
                    found.append((proc, old, trans, new))
        for proc, old, trans, new in found:
            members = set(trans.member_ids)
            both = self.processes_in(old) & self.processes_in(new)
            extra = [m for m in members if self.proc_of.get(m) not in both]
            if extra:
                self.fail(TRANSITIONAL, "%s#%d's transitional configuration %s -> %s has %s, "
                          "not a member of both rings" % (proc.pid + (old.ring_id, new.ring_id,
                                                                      sorted(extra))))
            for other in moved[(old.ring_id, new.ring_id)]:
                if not other.pids & members:
                    self.fail(TRANSITIONAL, "%s#%d's transitional configuration %s -> %s lacks "
                              "%s#%d, which went from the one ring to the other too"
                              % (proc.pid + (old.ring_id, new.ring_id) + other.pid))

    def processes_in(self, conf):
        """The processes (not incarnations: one may take a newer one in a ring) of a
        configuration's members."""
        return {self.proc_of.get(m) for m in conf.member_ids} - {None}

    def configurations_of(self, proc):
        """[(regular ChangeEvent, regular msgs, trans msgs, next regular ChangeEvent or None)]"""
        out = []
        current = None
        regular, trans, in_trans = set(), set(), False
        safe_regular = []
        for ev in proc.events:
            if ev[0] == "conf":
                c = ev[1]
                if c.kind == sr.CONF_TRANSITIONAL:
                    in_trans = True
                    continue
                if current is not None:
                    out.append((current, regular, trans, c, safe_regular))
                current, regular, trans, in_trans, safe_regular = c, set(), set(), False, []
            else:
                if current is None:
                    self.fail(CONFIGURATION, "%s#%d delivered %s before any configuration" % (proc.pid + (ev[1],)))
                    continue
                (trans if in_trans else regular).add(ev[1])
                if not in_trans and ev[2] & sr.SAFE_MESS:
                    safe_regular.append((ev[4], ev[3]))
        if current is not None:
            out.append((current, regular, trans, None, safe_regular))
        return out

    def check_virtual_synchrony_and_safe(self):
        by_pid = self.proc_of
        moves = {}
        for proc in self.processes:
            for conf, regular, trans, nxt, safe_regular in self.configurations_of(proc):
                for mid, t in safe_regular:
                    for member in conf.member_ids:
                        q = by_pid.get(member)
                        got = q.completed.get(mid) if q else None
                        if got is None or got > t:
                            self.fail(SAFE, "%s#%d delivered SAFE %s in ring %s but %s#%d did "
                                      "not have it" % (proc.pid + (mid, conf.ring_id) + member))
                if nxt is None:
                    continue
                key = (conf.ring_id, nxt.ring_id, tuple(sorted(nxt.transitional_ids)))
                moves.setdefault(key, []).append((proc.pid, regular, trans))
        for key, group in moves.items():
            first = group[0]
            for other in group[1:]:
                if other[1] != first[1]:
                    diff = sorted(other[1] ^ first[1])[:3]
                    self.fail(VIRTUAL_SYNCHRONY, "%s and %s moved together from ring %s but "
                              "delivered different messages in it (e.g. %s)"
                              % (first[0], other[0], key[0], diff))
                if other[2] != first[2]:
                    diff = sorted(other[2] ^ first[2])[:3]
                    self.fail(VIRTUAL_SYNCHRONY, "%s and %s delivered different messages in the "
                              "transitional configuration %s -> %s (e.g. %s)"
                              % (first[0], other[0], key[0], key[1], diff))

    def check_end_state(self):
        alive = [self.nodes[n][1] for n in sorted(self.nodes)]
        finals = []
        for proc in alive:
            confs = self.configurations_of(proc)
            finals.append(confs[-1] if confs else None)
        pids = sorted(p.current for p in alive)
        for proc, final in zip(alive, finals):
            if final is None or sorted(final[0].member_ids) != pids:
                got = sorted(final[0].member_ids) if final else None
                self.fail(END, "%s#%d is in ring %s, not in one ring with every live daemon %s"
                          % (proc.current + (got, pids)))
                return
        ring_ids = {f[0].ring_id for f in finals}
        if len(ring_ids) != 1:
            self.fail(END, "live daemons in different rings %s" % sorted(ring_ids))
            return
        sets = [f[1] for f in finals]
        for proc, s in zip(alive, sets):
            if s != sets[0]:
                self.fail(LOSS, "%s#%d and %s#%d delivered different messages in the final ring"
                          % (alive[0].pid + proc.pid))
        for serial, sub in self.submitted.items():
            origin = sub[3]
            proc = self.nodes.get(origin[0], (None, None))[1]
            if sr._is_unreliable(sub[0]):
                continue  # it may be lost
            if proc is not None and origin in proc.pids and serial not in proc.delivered_set:
                orderer = self.nodes[origin[0]][0]
                queued = any(m.data[:8] == sub[1][:8] for m, _ in orderer.transport.pending) or (
                    orderer.transport.in_progress is not None and orderer.transport.in_progress.msg.data[:8] == sub[1][:8])
                self.fail(LOSS, "message %d was submitted at %s#%d (never crashed) and never "
                          "delivered there%s" % ((serial,) + origin + (
                              " (still in its send queue: the run ended first)" if queued else "",)))


# ---- hostile packets --------------------------------------------------------------------------

#: counters at the ends of what the wire carries (1 is left out: a clock-back restart may have
#: incarnation 1, and a forged packet must never be one a daemon really sent)
EXTREMES = [0, sr.MAX_WIRE_COUNTER - 1, sr.MAX_WIRE_COUNTER, 2 ** 63, 2 ** 64 - 1]
U32_EXTREMES = [0, 2 ** 32 - 1]
U16_EXTREMES = [1, 65535]


class Hostile:
    """What a student on the LAN sends to the daemons' port: replays of packets sent earlier,
    to any daemon (captured with a sniffer: packets of old incarnations and old rings among
    them), and forged well-formed packets of every type with extreme values in every field,
    under the daemons' names, older or newer incarnations of them, or strangers'. Forged ones
    are sealed without the key (the forger has none): with --key they must all be refused;
    without a key, they pass the CRC and the protocol must refuse or survive them."""

    def __init__(self, rng, sim):
        self.rng = rng
        self.sim = sim
        self.captured = []  # (src, raw), the last CAPTURED_MAX sent
        self.sent = collections.Counter()

    CAPTURED_MAX = 400

    def saw(self, src, raw):
        if len(self.captured) < self.CAPTURED_MAX:
            self.captured.append((src, raw))
        else:
            self.captured[self.rng.randrange(self.CAPTURED_MAX)] = (src, raw)

    def packet(self):
        """(dest, src, raw) of one hostile datagram."""
        dest = self.rng.choice(self.sim.names)
        if self.captured and self.rng.random() < 0.5:
            src, raw = self.rng.choice(self.captured)
            self.sent["replayed"] += 1
            return dest, src, raw
        self.sent["forged"] += 1
        src = self.rng.choice(self.sim.names)
        try:
            return dest, src, sr.encode_ring_packet(self.forged(), self.forger_seal())
        except struct.error:  # a value beyond its field: our encoder refuses it
            return dest, src, b"SMRG"

    def forger_seal(self):
        if self.sim.key is None:
            return None
        return sr.RingSeal(bytes(self.rng.getrandbits(8) for _ in range(32)))  # a wrong key

    def n(self):
        return self.rng.choice(EXTREMES)

    def pid(self):
        names = self.sim.names + ["x%d" % self.rng.randrange(3)]
        return (self.rng.choice(names), self.n())

    def ring_id(self):
        p = self.pid()
        return (self.n(), p[0], p[1])

    def chunks(self):
        return [sr.RingChunk(self.n(), self.n(), self.n(), 0, self.rng.choice(U16_EXTREMES),
                             self.rng.choice(U32_EXTREMES), b"\x00" * self.rng.randrange(9))
                for _ in range(self.rng.randrange(1, 3))]

    def forged(self):
        kind = self.rng.choice(["data", "token", "join", "commit", "merge", "unreliable", "leave"])
        if kind == "data":
            return sr.RingData(self.ring_id(), self.pid(), self.n(), self.chunks())
        if kind == "token":
            seq = self.n()
            return sr.RingToken(self.ring_id(), self.pid(), self.n(), sr.TOKEN_REGULAR, seq,
                                self.rng.choice([0, seq]), self.rng.choice(U32_EXTREMES),
                                [self.n() for _ in range(self.rng.randrange(3))], self.n(),
                                self.n(), self.n(), self.rng.choice([None, self.pid()]),
                                self.rng.randrange(2))
        if kind == "join":
            return sr.RingJoin(self.pid(), self.n(), [self.pid() for _ in range(self.rng.randrange(1, 4))],
                               [self.pid() for _ in range(self.rng.randrange(3))])
        if kind == "commit":
            members = sorted({self.pid() for _ in range(self.rng.randrange(1, 4))})
            entries = {m: sr.RingCommitEntry(self.ring_id(), *[self.n() for _ in range(4)])
                       for m in members}
            return sr.RingCommit(self.ring_id(), self.pid(), self.n(), self.rng.choice([1, 2]),
                                 members, entries)
        if kind == "merge":
            return sr.RingMerge(self.pid(), self.ring_id())
        if kind == "leave":
            return sr.RingLeave(self.pid(), self.ring_id(), "forged")
        return sr.RingUnreliable(self.ring_id(), self.pid(), self.chunks())


# ---- planted faults (tests/test_ring_sim.py, bench/mutation_check.py) ------------------------

def mutant(cls, method, old, new):
    """Mutation testing without editing the code under test: a copy of cls.method whose
    source has the text `old` replaced by `new`, compiled in the class's module. Install it
    on one instance (install_mutant) or with monkeypatch. `old` must occur exactly once: when
    the code under test changes, this says where the mutation no longer applies."""
    source = textwrap.dedent(inspect.getsource(getattr(cls, method)))
    if source.count(old) != 1:
        raise LookupError("mutation of %s.%s: %r occurs %d times in its source (update the "
                          "planted fault)" % (cls.__name__, method, old, source.count(old)))
    names = {}
    code = compile(source.replace(old, new), "<mutant of %s.%s>" % (cls.__name__, method), "exec")
    exec(code, vars(sys.modules[cls.__module__]), names)  # noqa: S102 (our own source)
    return names[method]


def install_mutant(obj, method, function):
    setattr(obj, method, types.MethodType(function, obj))


# ---- helpers for scenario tests (tests/test_ring_*.py) ----------------------------------------

CALM = Faults(loss=0.0, dup=0.0, delay_s=0.001, jitter_s=0.0, crashes=False, partitions=False,
              garbage=0.0)


def calm_sim(n=3, seed=1, on_start=None, **settings):
    sim = Sim(seed, daemons=n, faults=CALM, settings=settings, on_start=on_start)
    assert sim.run_until(3.0, stop=lambda: all_in_one_ring(sim)), "the ring never formed"
    return sim


def all_in_one_ring(sim):
    rings = set()
    for orderer, _ in sim.nodes.values():
        if orderer.state != sr.OPERATIONAL or len(orderer.ring.members) != len(sim.nodes):
            return False
        rings.add(orderer.ring.ring_id)
    return len(rings) == 1


def assert_guarantees(sim):
    result = sim.check()
    assert not result.violations, "\n".join(result.violations[:10])


def delivered(sim, name):
    return list(sim.nodes[name][1].delivered)


#: the ring protocols a seed may run: the original ring, or the Accelerated Ring with this
#: many packets of a visit after the token (0: none, but requests wait a rotation; 1000: all)
ACCELERATED_WINDOWS = (0, 1, 5, 15, 1000)


def ring_protocol_for_seed(seed):
    """A third of the seeds run the original ring, the others the Accelerated Ring with one of
    ACCELERATED_WINDOWS (its own Random: the seed's other draws stay what they were)."""
    rng = random.Random(seed * 7919 + 4)
    if rng.random() < 1.0 / 3:
        return {"accelerated_ring": False}
    return {"accelerated_ring": True, "accelerated_window_packets": rng.choice(ACCELERATED_WINDOWS)}


def case_for_seed(seed):
    """Everything about a run comes from its seed: size of the ring, hostility of the network,
    settings. The CI seeds, the soak and the replay command all use this one function."""
    rng = random.Random(seed * 7919 + 1)
    settings = {}
    if rng.random() < 0.5:
        settings["max_packet_bytes"] = rng.choice([300, 600])  # more fragmentation
    if rng.random() < 0.3:
        settings["personal_window_packets"] = rng.choice([2, 5, 20])
    if rng.random() < 0.2:
        settings["global_window_packets"] = rng.choice([10, 40])
    faults = Faults(loss=rng.choice([0.0, 0.02, 0.05, 0.15]), dup=rng.choice([0.0, 0.02]),
                    delay_s=rng.choice([0.0005, 0.002, 0.01]),
                    jitter_s=rng.choice([0.0, 0.002, 0.02]),
                    fault_every_s=rng.choice([0.4, 0.8, 1.5]))
    # 40% of the seeds restart daemons with their clock set back, mostly (its own Random: the
    # other parameters of every seed stay what they were)
    if random.Random(seed * 7919 + 2).random() < 0.4:
        faults.clock_back = 0.7
    # a third of the crashes are clean stops (a LEAVE announcement first, as after Ctrl-C)
    faults.clean_stop = 1.0 / 3
    settings.update(ring_protocol_for_seed(seed))
    case = {"daemons": rng.choice([2, 3, 3, 4, 5]), "seconds": rng.choice([6.0, 8.0, 10.0]),
            "faults": faults, "settings": settings, "rate": rng.choice([50.0, 150.0, 400.0])}
    slow = (settings.get("personal_window_packets", 99) <= 5 or faults.loss > 0.1
            or settings.get("global_window_packets", 999) <= 40
            or faults.delay_s + faults.jitter_s >= 0.02)
    if slow:
        # keep the offered load within what such a slow ring carries (with 300-byte packets,
        # window 2 and 15% loss: about 15 messages/s), so that the end checks (everything
        # delivered within a minute of the heal) test the protocol, not patience
        case["rate"] = min(case["rate"], 100.0 if settings.get("max_packet_bytes", 1400) > 300
                           and faults.loss <= 0.1 else 30.0)
    return case


#: the simulated daemons' key in runs with --key (the forger's keys are random)
SIM_KEY = b"simulated ring key, 32 bytes ..."


def run_seed(seed, daemons=None, seconds=None, unreliable_share=None, clock_back=None,
             fault_every_s=None, clean_stop=None, delivery_filter=None, on_start=None,
             hostile=None, key=None, accelerated=None, packet_bytes=None):
    """One seed's run. The mix options (soaks that stress UNRELIABLE and restarts, hostile
    packets, a key, one ring protocol: accelerated = "off" or a window in packets, one packet
    size: packet_bytes) change the seed's case; without them the run is the seed's usual one.
    delivery_filter and on_start plant a fault (see Sim)."""
    case = case_for_seed(seed)
    if accelerated is not None:
        case["settings"].update(ring_protocol_option(accelerated))
    if packet_bytes is not None:
        case["settings"]["max_packet_bytes"] = packet_bytes
    faults = case["faults"]
    if hostile is not None:
        faults.hostile = hostile
    if clock_back is not None:
        faults.clock_back = clock_back
    if fault_every_s is not None:
        faults.fault_every_s = fault_every_s
    if clean_stop is not None:
        faults.clean_stop = clean_stop
    sim = Sim(seed, daemons=daemons or case["daemons"], faults=faults, settings=case["settings"],
              delivery_filter=delivery_filter, on_start=on_start, key=SIM_KEY if key else None)
    sim.unreliable_share = unreliable_share
    return sim.run(seconds=seconds or case["seconds"], traffic_rate_per_s=case["rate"])


def ring_protocol_option(accelerated):
    """--accelerated's value ("off", or a window in packets) -> ring settings."""
    if str(accelerated).lower() == "off":
        return {"accelerated_ring": False}
    window = int(accelerated)
    if window < 0:
        raise ValueError("a window of %d packets" % window)
    return {"accelerated_ring": True, "accelerated_window_packets": window}


def mix_options(unreliable_share=None, clock_back=None, fault_every_s=None, clean_stop=None,
                hostile=None, key=None, accelerated=None, packet_bytes=None):
    """The command-line form of run_seed's mix options (for replay commands)."""
    out = ""
    for flag, value in (("--unreliable-share", unreliable_share), ("--clock-back", clock_back),
                        ("--fault-every", fault_every_s), ("--clean-stop", clean_stop),
                        ("--hostile", hostile)):
        if value is not None:
            out += " %s %g" % (flag, value)
    if accelerated is not None:
        out += " --accelerated %s" % accelerated
    if packet_bytes is not None:
        out += " --packet-bytes %d" % packet_bytes
    return out + (" --key" if key else "")


def accelerated_value(text):
    try:
        ring_protocol_option(text)
    except ValueError:
        raise argparse.ArgumentTypeError("give off or a window in packets (0 or more)")
    return text.lower()


def add_accelerated_option(parser):
    parser.add_argument("--accelerated", type=accelerated_value, default=None, metavar="W",
                        help="run every seed on one ring protocol: 'off' (the original ring) or "
                             "the Accelerated Ring with W packets after the token (default: "
                             "the seed's own, see ring_protocol_for_seed)")
    parser.add_argument("--packet-bytes", type=packet_bytes_value, default=None, metavar="N",
                        help="every seed's ring sends packets of up to N bytes (e.g. 8900, a "
                             "ring on one machine's; default: the seed's own, 300, 600 or 1400)")


def packet_bytes_value(text):
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 300 <= value <= sr.PACKET_BYTES_MAX:
        raise argparse.ArgumentTypeError("give a packet size of 300..%d bytes" % sr.PACKET_BYTES_MAX)
    return value


def replay_command(seed, **mix):
    return "python3 tests/ring_sim.py %d --log%s" % (seed, mix_options(**mix))


def main(argv=None):
    parser = argparse.ArgumentParser(
        description="Run one seed of the RING protocol in the deterministic simulator and check "
                    "the guarantees; the same seed (and options) replays the same run exactly.")
    parser.add_argument("seed", nargs="?", type=int, default=1, help="the seed (default 1)")
    parser.add_argument("--log", action="store_true", help="print every daemon's protocol log")
    for flag, what in (("--unreliable-share", "share of UNRELIABLE among the messages, 0..1"),
                       ("--clock-back", "probability that a restart's clock went back, 0..1"),
                       ("--fault-every", "seconds between faults"),
                       ("--clean-stop", "share of the crashes that are clean stops, 0..1"),
                       ("--hostile", "per packet, the chance of a hostile one too (replayed or "
                                     "forged), 0..1")):
        parser.add_argument(flag, type=float, default=None, metavar="X",
                            help="%s (default: the seed's own)" % what)
    parser.add_argument("--key", action="store_true", help="the daemons sign their packets")
    add_accelerated_option(parser)
    args = parser.parse_args(argv)
    res = run_seed(args.seed, unreliable_share=args.unreliable_share, clock_back=args.clock_back,
                   fault_every_s=args.fault_every, clean_stop=args.clean_stop,
                   hostile=args.hostile, key=args.key, accelerated=args.accelerated,
                   packet_bytes=args.packet_bytes)
    if args.log:
        print("\n".join(sorted(res.log_lines, key=lambda l: float(l.split(" ", 1)[0]))))
    print(res.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
