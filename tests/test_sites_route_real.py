"""Tier 3: routing around a dead link, with real processes: three one-daemon sites in network
namespaces joined by labnet.WanLab's emulated WAN, every two sites by a direct link (no
RouteMatrix: a mesh), a client at each in group g. The link between sites 1 and 2 is cut:
the sites stay in one view (no membership change at any client), and a message from site 1
reaches site 2 through site 3, in the one order. The link is healed: the trees come back to
it, and messages still reach everyone in one order."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

import floodtools as ft
import labnet
from conftest import ROOT

pytestmark = [pytest.mark.slow, pytest.mark.netns]

#: a client: joins g, prints every membership and message as a JSON line; sends "<name>-<k>"
#: once the file argv[4] + "-<k>" exists (k = 1, 2: the test creates them in turn)
CLIENT = r"""
import json, os, sys, time
sys.path.insert(0, sys.argv[1])
import spread_mini as sp
m = sp.connect(sys.argv[2], sys.argv[3], group_membership=True)
m.join("g")
sent = 0
end = time.time() + float(sys.argv[5])
while time.time() < end:
    if os.path.exists("%s-%d" % (sys.argv[4], sent + 1)):
        sent += 1
        m.multicast(sp.AGREED_MESS, "g", ("%s-%d" % (sys.argv[3], sent)).encode())
    msg = m.receive(timeout=0.1)
    if msg is None:
        continue
    if msg.is_membership:
        kind = "TRANS" if msg.is_transitional else "REG"
        print(json.dumps([kind, sorted(msg.members), str(msg.caused_by)]), flush=True)
    else:
        print(json.dumps(["DATA", msg.data.decode()]), flush=True)
"""


def lines(path):
    return [json.loads(line) for line in open(path) if line.startswith("[") and line.endswith("]\n")]


def wait_until(check, timeout_s, what, folder):
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if check():
            return
        time.sleep(0.2)
    tails = "".join("\n== %s\n%s" % (p.name, p.read_text()[-3000:]) for p in sorted(folder.glob("[cd]*.log")))
    pytest.fail("waited %.0f s for %s%s" % (timeout_s, what, tails))


def test_a_cut_link_is_routed_around_with_no_view_change_and_one_order(tmp_path):
    reason = labnet.available()
    if reason:
        pytest.skip("network namespaces: " + reason)
    if not os.path.exists("/dev/net/tun"):
        pytest.skip("the WAN relay needs a TUN device (/dev/net/tun)")
    (tmp_path / "client.py").write_text(CLIENT)
    go = tmp_path / "send"
    logs = [tmp_path / ("c%d.log" % s) for s in (1, 2, 3)]

    def data(path):
        return [x[1] for x in lines(path) if x[0] == "DATA"]

    with labnet.WanLab([1, 1, 1], labnet.WanSettings(rate_mbit=10, delay_ms=10)) as wan:
        ips = [wan.ip(s, 1) for s in (1, 2, 3)]
        conf = tmp_path / "sites.conf"
        conf.write_text(ft.render_spread_conf(ips, 4803, True))
        procs, clients = [], []
        try:
            for s in (1, 2, 3):
                procs.append(wan.popen(s, 1, [sys.executable, os.path.join(ROOT, "spread_mini.py"), "daemon",
                                              "-c", str(conf), "--name", "d%d" % s, "--no-unix",
                                              "--status-every", "0"],
                                       stdout=open(tmp_path / ("d%d.log" % s), "w"), stderr=subprocess.STDOUT))
            time.sleep(3)
            for s in (1, 2, 3):
                clients.append(wan.popen(s, 1, [sys.executable, str(tmp_path / "client.py"), ROOT,
                                                "4803@%s" % ips[s - 1], "c%d" % s, str(go), "40"],
                                         stdout=open(tmp_path / ("c%d.log" % s), "w"), stderr=subprocess.STDOUT))
            wait_until(lambda: all(any(x[0] == "REG" and len(x[1]) == 3 for x in lines(p)) for p in logs),
                       20, "every client in a group of three", tmp_path)
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
        finally:
            for p in clients + procs:
                p.terminate()
            for p in clients + procs:
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()
    daemon_logs = "".join((tmp_path / ("d%d.log" % s)).read_text()[-3000:] for s in (1, 2, 3))
    orders = [data(p) for p in logs]
    assert sorted(orders[0]) == sorted("c%d-%d" % (s, k) for s in (1, 2, 3) for k in (1, 2)), orders
    assert orders[0] == orders[1] == orders[2], orders
    for p in logs:  # one view all along: no NETWORK membership change at any client
        assert [x for x in lines(p) if x[0] != "DATA" and x[2] == "NETWORK"] == [], (p.name, lines(p), daemon_logs)
    assert report["1->2"]["cut"] > 0 and report["2->1"]["cut"] > 0, report
