"""Tier 3: routing around a dead link, with real processes: three one-daemon sites in network
namespaces joined by labnet.WanLab's emulated WAN, every two sites by a direct link (no
RouteMatrix: a mesh), a client at each in group g. The link between sites 1 and 2 is cut:
the sites stay in one view (no membership change at any client), and a message from site 1
reaches site 2 through site 3, in the one order. The link is healed: the trees come back to
it, and messages still reach everyone in one order."""
from __future__ import annotations

import pytest

import labnet
from netns_daemons import json_lines, one_daemon_sites, wait_until, wan_lab_missing

pytestmark = [pytest.mark.slow, pytest.mark.netns]

#: a client: joins g, prints every membership and message as a JSON line; sends "<name>-<k>"
#: once the file argv[4] + "-<k>" exists (k = 1, 2: the test creates them in turn)
CLIENT = r"""
import os, sys
sys.path[:0] = [sys.argv[1], os.path.join(sys.argv[1], "tests")]
import spread_mini as sp
from netns_daemons import serve_client
m = sp.connect(sys.argv[2], sys.argv[3], group_membership=True)
m.join("g")
sent = [0]

def tick():
    if os.path.exists("%s-%d" % (sys.argv[4], sent[0] + 1)):
        sent[0] += 1
        m.multicast(sp.AGREED_MESS, "g", ("%s-%d" % (sys.argv[3], sent[0])).encode())

serve_client(m, float(sys.argv[5]), tick, 0.1)
"""


def test_a_cut_link_is_routed_around_with_no_view_change_and_one_order(tmp_path):
    reason = wan_lab_missing()
    if reason:
        pytest.skip(reason)
    go = tmp_path / "send"

    def data(path):
        return [x[1] for x in json_lines(path) if x[0] == "DATA"]

    with one_daemon_sites(tmp_path, 3, CLIENT, [go, 40], labnet.WanSettings(rate_mbit=10, delay_ms=10)) as (wan, logs):
        wan.cut_link(1, 2)
        # the silence rule (1 s) and the grace (1 s), then LINKS: routed around
        wait_until(lambda: "routed around" in (tmp_path / "d1.log").read_text()
                   and "routed around" in (tmp_path / "d2.log").read_text(), 10,
                   "both ends of the cut link to route around it", tmp_path)
        (tmp_path / "send-1").write_text("")
        wait_until(lambda: all(len(data(p)) >= 3 for p in logs), 10,
                   "the three messages sent while the link is cut", tmp_path)
        wan.heal_link(1, 2)
        wait_until(lambda: "links to sites [] are down" in (tmp_path / "d1.log").read_text(), 10,
                   "the link to come back", tmp_path)
        (tmp_path / "send-2").write_text("")
        wait_until(lambda: all(len(data(p)) >= 6 for p in logs), 10,
                   "the three messages sent after the heal", tmp_path)
        report = wan.link_report()
    daemon_logs = "".join((tmp_path / ("d%d.log" % s)).read_text()[-3000:] for s in (1, 2, 3))
    orders = [data(p) for p in logs]
    assert sorted(orders[0]) == sorted("c%d-%d" % (s, k) for s in (1, 2, 3) for k in (1, 2)), orders
    assert orders[0] == orders[1] == orders[2], orders
    for p in logs:  # one view all along: no NETWORK membership change at any client
        seen = json_lines(p)
        assert [x for x in seen if x[0] != "DATA" and x[3] == "NETWORK"] == [], (p.name, seen, daemon_logs)
    assert report["1->2"]["cut"] > 0 and report["2->1"]["cut"] > 0, report
