"""A seeded two-ended HOP link simulator: one Random decides every loss, delay and reordering,
so a failing seed replays exactly (`run_link(seed, ...)`). Each direction of the wire has a
bandwidth (a datagram occupies it for its bytes x 8 / bits_s), a base delay plus jitter (jitter
larger than a packet's time on the wire reorders), loss, and may be cut at a given time.

The checkers look only at what crosses the wire and what comes out, never at the links' own
state: every packet delivered exactly once at the other end, nothing invented, no DATA beyond
the window of the acknowledgements the sender has been shown, the DATA bytes of each end within
an independent token bucket, and the dead-peer event: on a cut wire within its bound, never on
a healthy one."""
from __future__ import annotations

import heapq
import random
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import spread_mini as sr

A, B = ("a", 1), ("b", 1)


#: after the workload's duration the link runs on until both ends are idle, at most this
#: many durations in all (a link that never drains is then reported as missing packets)
DRAIN_FACTOR = 4


@dataclass
class WireSpec:
    loss: float = 0.05
    delay_s: float = 0.02
    jitter_s: float = 0.004
    bits_s: float = 2000000.0
    cut_at_s: Optional[float] = None  # from then on every datagram is lost, both ways


@dataclass
class LinkRun:
    seed: int
    violations: List[str] = field(default_factory=list)
    delivered: Dict[str, List[Tuple[int, bytes]]] = field(default_factory=dict)
    dead: Dict[str, Optional[sr.HopPeerDead]] = field(default_factory=dict)
    last_arrival_s: Dict[str, float] = field(default_factory=dict)  # the last datagram each end got
    end_s: float = 0.0
    counters: Dict[str, Dict[str, int]] = field(default_factory=dict)


def run_link(seed: int, wire: WireSpec, messages: int = 150, duration_s: float = 4.0,
             settings: Optional[sr.HopSettings] = None, link_class=sr.HopLink) -> LinkRun:
    rng = random.Random(seed)
    settings = settings or sr.HopSettings(rate_bytes_s=wire.bits_s / 8 * 0.9, burst_bytes=16000)
    ends = {"a": link_class(A, B, settings), "b": link_class(B, A, settings)}
    other = {"a": "b", "b": "a"}
    run = LinkRun(seed, delivered={"a": [], "b": []}, dead={"a": None, "b": None},
                  last_arrival_s={"a": 0.0, "b": 0.0})
    submitted: Dict[str, List[bytes]] = {"a": [], "b": []}
    wire_free = {"a": 0.0, "b": 0.0}  # when the wire out of each end is free again
    acked_seen = {"a": 0, "b": 0}  # the highest link_aru each end has been shown by the other
    bucket = {name: [float(settings.burst_bytes), 0.0] for name in ends}  # tokens, at
    events: List[tuple] = []
    counter = [0]

    def push(at, kind, name, data=b""):
        counter[0] += 1
        heapq.heappush(events, (at, counter[0], kind, name, data))

    for name in ends:  # the workload: messages at random times within the first 60 %
        for i in range(messages):
            size = rng.choice([10, 200, 1000, ends[name].max_payload_bytes])
            payload = ("%s-%d-" % (name, i)).encode() + bytes(rng.randrange(256) for _ in range(4))
            push(rng.uniform(0, duration_s * 0.6), "submit", name, payload.ljust(size, b"."))
        push(0.0, "tick", name)

    def check_send(name, datagram, now):
        packet = sr.decode_hop_packet(datagram)
        if isinstance(packet, sr.HopData):
            if packet.seq > acked_seen[name] + settings.window_packets:
                run.violations.append("%.4f %s sent seq %d beyond the window (acked %d)"
                                      % (now, name, packet.seq, acked_seen[name]))
            tokens, at = bucket[name]
            tokens = (min(settings.burst_bytes, tokens + (now - at) * settings.rate_bytes_s) - len(datagram)
                      - settings.datagram_overhead_bytes)  # the network's headers count too
            if tokens < -1e-6:
                run.violations.append("%.4f %s sent beyond its token bucket (%.0f bytes)" % (now, name, tokens))
            bucket[name] = [tokens, now]

    def transmit(name, datagram, now):
        check_send(name, datagram, now)
        start = max(now, wire_free[name])
        wire_free[name] = start + len(datagram) * 8 / wire.bits_s
        if wire.cut_at_s is not None and now >= wire.cut_at_s:
            return
        if rng.random() < wire.loss:
            return
        push(wire_free[name] + wire.delay_s + rng.uniform(0, wire.jitter_s), "arrive", other[name], datagram)

    def perform(name, out, now):
        for datagram in out.send:
            transmit(name, datagram, now)
        run.delivered[name] += out.deliver
        for event in out.events:
            if run.dead[name] is None:
                run.dead[name] = event
        push(ends[name].next_deadline_s(), "tick", name)

    now = 0.0
    while events:
        now, _, kind, name, data = heapq.heappop(events)
        if now > duration_s and (all(end.idle() and not end.retransmit_list for end in ends.values())
                                 or now > duration_s * DRAIN_FACTOR or all(run.dead.values())):
            break
        link = ends[name]
        if kind == "submit":
            submitted[name].append(data)
            perform(name, link.submit(data, now), now)
        elif kind == "arrive":
            run.last_arrival_s[name] = now
            packet = sr.decode_hop_packet(data)
            if isinstance(packet, (sr.HopAck, sr.HopNack, sr.HopData)):  # (DATA carries one too)
                acked_seen[name] = max(acked_seen[name], packet.link_aru)
            perform(name, link.datagram(data, now), now)
        elif now >= link.next_deadline_s():
            perform(name, link.tick(now), now)
    run.end_s = now
    run.counters = {name: dict(link.counters) for name, link in ends.items()}
    check_delivery(run, submitted, wire)
    check_dead_peer(run, wire, settings)
    return run


def dead_bound_s(settings: sr.HopSettings, wire: WireSpec) -> float:
    """The latest a cut link's ends may declare the peer dead, after the cut: the silence rule
    counts from the last datagram that got through, which left at the cut at the latest and
    then waited behind at most a bucket's burst on the wire, and the delay and jitter."""
    queue_s = (settings.burst_bytes + settings.max_packet_bytes) * 8 / wire.bits_s
    return settings.peer_silence_s + queue_s + wire.delay_s + wire.jitter_s


def check_dead_peer(run: LinkRun, wire: WireSpec, settings: sr.HopSettings) -> None:
    for name, dead in run.dead.items():
        if wire.cut_at_s is None:
            if dead is not None:
                run.violations.append("%s declared a healthy peer dead (%s at %.3f)" % (name, dead.reason, dead.at_s))
        elif dead is None:
            run.violations.append("%s never noticed the cut at %.3f" % (name, wire.cut_at_s))
        elif not wire.cut_at_s <= dead.at_s <= wire.cut_at_s + dead_bound_s(settings, wire) + 1e-9:
            run.violations.append("%s declared the peer dead at %.3f, the cut was at %.3f (bound %.3f s)"
                                  % (name, dead.at_s, wire.cut_at_s, dead_bound_s(settings, wire)))
        elif dead.at_s > run.last_arrival_s[name] + settings.peer_silence_s + 1e-9:
            run.violations.append("%s declared the peer dead at %.3f, %.3f s after the last datagram"
                                  % (name, dead.at_s, dead.at_s - run.last_arrival_s[name]))


def random_wire(rng: random.Random, cut: bool) -> Tuple[WireSpec, int]:
    """A lossy WAN link as the issue asks: 1-10 % loss, tens of ms of delay with reordering
    jitter, 1-10 Mbit/s; and a workload of 50..600 packets each way (up to about two thirds
    of the slowest link)."""
    wire = WireSpec(loss=rng.uniform(0.01, 0.10), delay_s=rng.uniform(0.01, 0.05),
                    jitter_s=rng.uniform(0.0, 0.01), bits_s=rng.choice([1e6, 2e6, 5e6, 10e6]),
                    cut_at_s=rng.uniform(0.5, 2.5) if cut else None)
    return wire, rng.randint(50, 600)


def run_seed(seed: int, cut: bool = False, link_class=sr.HopLink, **overrides) -> LinkRun:
    """One seed, everything drawn from it: replay a failure with run_seed(seed, cut)."""
    wire, messages = random_wire(random.Random(seed * 2 + int(cut)), cut)
    settings = sr.HopSettings(rate_bytes_s=wire.bits_s / 8 * 0.9, burst_bytes=16000, **overrides)
    return run_link(seed, wire, messages, duration_s=5.0, settings=settings, link_class=link_class)


def check_delivery(run: LinkRun, submitted: Dict[str, List[bytes]], wire: WireSpec) -> None:
    for name, peer in (("a", "b"), ("b", "a")):
        got = [payload for _, payload in run.delivered[peer]]
        seqs = [seq for seq, _ in run.delivered[peer]]
        if len(set(seqs)) != len(seqs) or len(set(got)) != len(got):
            run.violations.append("%s delivered a packet twice" % peer)
        invented = set(got) - set(submitted[name])
        if invented:
            run.violations.append("%s delivered %d packets %s never sent" % (peer, len(invented), name))
        if wire.cut_at_s is None and sorted(got) != sorted(submitted[name]):
            run.violations.append("%s missed %d of %s's packets" % (peer, len(set(submitted[name]) - set(got)), name))
