"""HOP links through the seeded simulator (tests/hop_sim.py): 1-10 % loss, 10-50 ms of delay
with reordering, 1-10 Mbit/s, optional cuts. Every packet delivered exactly once, nothing
invented, the window and the bucket never exceeded, the dead-peer rule on a cut link within
its bound and never on a healthy one. A failing seed replays: hop_sim.run_seed(seed, cut)."""
from __future__ import annotations

import pytest

import spread_mini as sr
import hop_sim


@pytest.mark.parametrize("seed", range(150))
def test_a_lossy_healthy_link_delivers_everything_once_within_its_limits(seed):
    run = hop_sim.run_seed(seed)
    assert run.violations == [], "replay: hop_sim.run_seed(%d)" % seed


@pytest.mark.parametrize("seed", range(30))
def test_a_small_window_is_the_limit_and_is_never_exceeded(seed):
    run = hop_sim.run_seed(seed, window_packets=8, max_pkt_btw_ack=2)
    assert run.violations == [], "replay: hop_sim.run_seed(%d, window_packets=8, max_pkt_btw_ack=2)" % seed


@pytest.mark.parametrize("seed", range(80))
def test_a_cut_link_is_declared_dead_at_both_ends_within_the_bound(seed):
    run = hop_sim.run_seed(seed, cut=True)
    assert run.violations == [], "replay: hop_sim.run_seed(%d, cut=True)" % seed
    assert all(dead is not None for dead in run.dead.values())


def test_the_seeds_exercise_loss_retransmission_and_the_bucket():
    """Not a vacuous pass: over a few seeds the links lose, NACK, resend and wait for tokens."""
    totals = {"retransmitted": 0, "nacks_sent": 0, "duplicates": 0}
    for seed in range(10):
        for counters in hop_sim.run_seed(seed).counters.values():
            for key in totals:
                totals[key] += counters.get(key, 0)
    assert all(v > 0 for v in totals.values()), totals


def test_a_failing_seed_replays_exactly():
    first, again = hop_sim.run_seed(7), hop_sim.run_seed(7)
    assert first.delivered == again.delivered and first.counters == again.counters


# ---- the checkers catch what they are for (planted faults) -------------------------------------

class DeliversTwice(sr.HopLink):
    def _on_data(self, p, now):
        super()._on_data(p, now)
        if self._out.deliver and p.seq % 50 == 0:
            self._out.deliver.append(self._out.deliver[-1])


class IgnoresTheWindow(sr.HopLink):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.s_cur_window = 10 ** 6


class IgnoresTheBucket(sr.HopLink):
    def _refill(self, now):
        self._tokens_bytes = float(self.settings.burst_bytes)


class Forgets(sr.HopLink):
    def _on_nack(self, p, now):
        p.missing = p.missing[1:]  # never resends the first packet asked for
        super()._on_nack(p, now)


@pytest.mark.parametrize("link_class, overrides, expected", [
    (DeliversTwice, {}, "delivered a packet twice"),
    (IgnoresTheWindow, {"window_packets": 4}, "beyond the window"),
    (IgnoresTheBucket, {}, "beyond its token bucket"),
    (Forgets, {}, "declared a healthy peer dead"),
    (sr.HopLink, {"peer_silence_s": 0.03}, "declared a healthy peer dead"),
])
def test_each_checker_catches_its_planted_fault(link_class, overrides, expected):
    found = [v for seed in range(5) for v in hop_sim.run_seed(seed, link_class=link_class, **overrides).violations]
    assert any(expected in v for v in found), found[:5]
