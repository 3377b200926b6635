"""The 20 s status table of a ring daemon (spread_mini: Terminal rendering): pure functions
from a snapshot to rows and to a rich or plain table."""
from __future__ import annotations

import random

import spread_mini as sr
from ring_sim import calm_sim


def test_status_rows_show_the_ring():
    sim = calm_sim()
    rows = dict(sr.ring_status_rows(sim.nodes["d1"][0].snapshot()))
    assert rows["state"] == "OPERATIONAL" and "d1, d2, d3" in rows["ring"]
    assert "packets" in rows["windows global / personal"]
    text = sr.render_ring_status(sim.nodes["d1"][0].snapshot())
    if sr.Table is not None:
        from rich.console import Console
        console = Console(record=True, width=100)
        console.print(text)
        text = console.export_text()
    assert "membership changes" in text


def ring_snapshot(**extra):
    orderer = sr.RingOrderer("d1", 1234, ["d1", "d2"], random.Random(1), sr.RingSettings(), now=0.0)
    snap = orderer.snapshot()
    snap.update(extra)
    return snap


def test_ring_status_rows_show_rate_windows_changes_and_strangers():
    snap = ring_snapshot(rotations_per_s=47.6, datagrams=(120, 118, 7))
    rows = dict(sr.ring_status_rows(snap))
    assert rows["token rotations"].endswith("(48 per second)")
    assert rows["windows global / personal"] == "800 / 200 packets"
    assert rows["datagrams in / out"] == "120 / 118"
    assert rows["datagrams from strangers"].startswith("7 ")
    assert "membership changes" in rows and "retransmissions asked / sent" in rows
    plain = sr.ring_status_rows(ring_snapshot())  # a snapshot without the server's additions
    assert "datagrams in / out" not in dict(plain)


def test_the_plain_ring_table_has_the_title_and_every_row(monkeypatch):
    monkeypatch.setattr(sr, "Table", None)  # as where rich is missing
    snap = ring_snapshot(rotations_per_s=3.0, datagrams=(1, 2, 3))
    text = sr.render_ring_status(snap)
    lines = text.splitlines()
    assert lines[0] == "RING d1" and len(lines) == 1 + len(sr.ring_status_rows(snap))
    assert "token rotations" in text and "(3 per second)" in text and "datagrams from strangers" in text


def test_the_status_says_which_ring_protocol_runs():
    accelerated = dict(sr.ring_status_rows(ring_snapshot(accelerated_window_packets=15)))
    assert accelerated["ring protocol"] == "accelerated (up to 15 packets of a visit go after the token)"
    original = dict(sr.ring_status_rows(ring_snapshot(accelerated_window_packets=None)))
    assert original["ring protocol"].startswith("original")
    orderer = sr.RingOrderer("d1", 1, ["d1", "d2"], settings=sr.RingSettings(accelerated_ring=False))
    assert orderer.snapshot()["accelerated_window_packets"] is None
