"""Tier 3: a partition between sites that heals, with real processes: three one-daemon sites
in network namespaces joined by labnet.WanLab's emulated WAN, a client at each that joins a
group; site 3 is cut off the WAN, then healed. Every client ends with the membership of all
three (the group state exchange after the sites' views merged), and a message sent after the
heal reaches every client in one order."""
from __future__ import annotations

import os
import sys

import pytest

import labnet
from conftest import ROOT
from netns_daemons import json_lines, network_views, one_daemon_sites, wait_until, wan_lab_missing

pytestmark = [pytest.mark.slow, pytest.mark.netns]

#: a client: joins g, prints every membership and message as a JSON line; sends its name once
#: the file named by argv[4] exists (the test creates it after the heal)
CLIENT = r"""
import os, sys
sys.path[:0] = [sys.argv[1], os.path.join(sys.argv[1], "tests")]
import spread_mini as sp
from netns_daemons import serve_client
m = sp.connect(sys.argv[2], sys.argv[3], group_membership=True)
m.join("g")
sent = []

def tick():
    if not sent and os.path.exists(sys.argv[4]):
        m.multicast(sp.AGREED_MESS, "g", sys.argv[3].encode())
        sent.append(True)

serve_client(m, float(sys.argv[5]), tick, 0.2)
"""


def test_after_a_cut_site_heals_every_client_sees_all_three_and_one_order(tmp_path):
    reason = wan_lab_missing()
    if reason:
        pytest.skip(reason)
    go = tmp_path / "send-now"
    with one_daemon_sites(tmp_path, 3, CLIENT, [go, 40], labnet.WanSettings(rate_mbit=10, delay_ms=10)) as (wan, logs):
        wan.cut_site(3)
        wait_until(lambda: all(network_views(p) for p in logs), 10, "the views of the partition", tmp_path)
        wan.heal_site(3)
        wait_until(lambda: all(len(network_views(p)) >= 2 for p in logs), 20, "the views after the heal",
                   tmp_path)
        go.write_text("")
        wait_until(lambda: all(sum(x[0] == "DATA" for x in json_lines(p)) >= 3 for p in logs), 10,
                   "the three messages sent after the heal", tmp_path)
    everyone = ["#c1#d1", "#c2#d2", "#c3#d3"]
    logs = {s: json_lines(tmp_path / ("c%d.log" % s)) for s in (1, 2, 3)}
    daemon_logs = "".join((tmp_path / ("d%d.log" % s)).read_text()[-3000:] for s in (1, 2, 3))
    for s, seen in logs.items():
        # (the clients end one by one: the last views are DISCONNECT ones)
        views = [x[1:3] for x in seen if x[0] == "REG" and x[3] == "NETWORK"]
        apart = [["#c3#d3"], [["#c3#d3"]]] if s == 3 else [["#c1#d1", "#c2#d2"], [["#c1#d1", "#c2#d2"]]]
        assert views[-2:] == [apart, [everyone, [["#c1#d1", "#c2#d2"], ["#c3#d3"]]]], (s, seen, daemon_logs)
    orders = [[x[1] for x in seen if x[0] == "DATA"] for seen in logs.values()]
    assert sorted(orders[0]) == ["c1", "c2", "c3"] and orders[0] == orders[1] == orders[2], orders


def test_after_a_heal_pruning_resumes_and_a_join_of_the_partition_is_honoured():
    """Two one-daemon sites; site 2 cut off, its client joins "late" meanwhile, the cut heals
    (bench/sites_prune_heal.py, 30 messages per group): site 1 learns that JOIN from site 2's
    STATE, so every message to "late" reaches c2, and messages to "near" (no member at site 2)
    cross d1's link as SKIPs again."""
    reason = wan_lab_missing()
    if reason:
        pytest.skip(reason)
    sys.path.insert(0, os.path.join(ROOT, "bench"))
    import sites_prune_heal
    r = sites_prune_heal.measure(30, 900)
    assert r["c2_got"] == {"near": 0, "late": 30, "both": 30}, r
    assert r["c2_late_members"] == ["#c2#d2"] and r["skips"]["near"] == 30, r
    assert r["skips"]["late"] == r["skips"]["both"] == 0, r
    assert r["bytes_per_message"]["near"] < r["bytes_per_message"]["both"] / 5, r
