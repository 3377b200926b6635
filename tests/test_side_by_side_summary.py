"""bench/side_by_side.py's summary line, from runs made up here (tier 1: no daemon runs).

CPU time is read in clock ticks of 10 ms: a short run of the C daemon can show 0 s, which once
divided by zero in CI instead of printing the rates it had measured."""
import importlib.util
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_spec = importlib.util.spec_from_file_location("side_by_side", os.path.join(ROOT, "bench", "side_by_side.py"))
bench = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = bench  # its dataclasses look their module up
_spec.loader.exec_module(bench)


def runs(real_cpu_s, mini_cpu_s):
    return {"real": [bench.Run("real", 2000, 2100, real_cpu_s)],
            "mini": [bench.Run("mini", 1000, 1100, mini_cpu_s)]}


def test_summary_gives_rates_and_cpu_ratio():
    line = bench.summary(runs([0.01, 0.01, 0.01], [0.02, 0.02, 0.02]), 1000, "AGREED")
    assert "spread_mini 1000 msgs/s, real Spread 2000 msgs/s, ratio 0.50" in line
    assert "spread_mini 60 us, real 30 us, ratio 2.00" in line


def test_cpu_below_one_clock_tick_says_so_instead_of_dividing_by_zero():
    line = bench.summary(runs([0.0, 0.0, 0.0], [0.01, 0.0, 0.0]), 500, "AGREED")
    assert "ratio 0.50 (median of 1 pairs)" in line
    assert "ratio n/a" in line and "raise --count" in line


def test_with_against_the_summary_also_compares_with_the_other_spread_mini(monkeypatch):
    monkeypatch.setattr(bench, "AGAINST", ["/tmp/main_spread_mini.py"])
    made = runs([0.01, 0.01, 0.01], [0.02, 0.02, 0.02])
    made["base"] = [bench.Run("base", 500, 550, [0.04, 0.04, 0.04])]
    line = bench.summary(made, 1000, "AGREED")
    assert "ratio 0.50 (median of 1 pairs)" in line and "spread_mini 60 us, real 30 us, ratio 2.00" in line
    assert "against /tmp/main_spread_mini.py: 500 msgs/s, 120 us CPU per message; spread_mini / it: " \
           "rate 2.00, CPU ratio 0.50" in line
