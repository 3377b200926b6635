"""Tier 3: a site whose LAN splits in two rings, with real daemons in network namespaces.

Site a (two or three daemons) and site b (one daemon) on one lab bridge; nftables inside the
namespaces of site a drops what its two halves send each other (the LAN split), and removing
the rules heals it. The half with a quorum of the site's last ring keeps the site's epoch and
goes on with site b; the other half forks (a new incarnation, a view of its own). When the
halves meet again, the fork's daemon takes the kept state and its client comes back: every
client gets TRANSITION, then REG_MEMB CAUSED_BY_NETWORK with everyone in two vs_sets (one per
side), and the messages sent after the heal reach every client once, in one order."""
from __future__ import annotations

import os
import signal
import time

import psutil
import pytest

import labnet
from netns_daemons import daemon_argv, json_lines, network_views, start_client, start_logged, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.netns(needs=["nft"])]

#: a client: joins g, prints every membership and message as a JSON line; once the file
#: argv[4] + ".apart" exists it sends 5 AGREED messages, once argv[4] + ".after" exists 6 more
#: (AGREED and SAFE by turns)
CLIENT = r"""
import os, sys
sys.path[:0] = [sys.argv[1], os.path.join(sys.argv[1], "tests")]
import spread_mini as sp
from netns_daemons import serve_client
m = sp.connect(sys.argv[2], sys.argv[3], group_membership=True)
m.join("g")
phases = {"apart": (5, False), "after": (6, True)}
done = set()

def tick():
    for phase, (count, safe_too) in phases.items():
        if phase not in done and os.path.exists(sys.argv[4] + "." + phase):
            for i in range(count):
                service = sp.SAFE_MESS if safe_too and i % 2 else sp.AGREED_MESS
                m.multicast(service, "g", ("%s %s %d" % (sys.argv[3], phase, i)).encode())
            done.add(phase)

serve_client(m, float(sys.argv[5]), tick, 0.1)
"""

SEGMENT_A = "239.255.77.1:4803"
SEGMENT_B = "239.255.77.2:4813"


def data(path, phase):
    return [x[1] for x in json_lines(path) if x[0] == "DATA" and x[1].split()[1] == phase]


def stall(proc, after_s: float, for_s: float) -> None:
    """SIGSTOP the daemon `proc` (and what it runs under) after_s from now, for for_s: a lab
    machine too busy to run it for a moment."""
    pids = [proc.pid] + [c.pid for c in psutil.Process(proc.pid).children(recursive=True)]
    time.sleep(after_s)
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    time.sleep(for_s)
    for pid in pids:
        os.kill(pid, signal.SIGCONT)


def run_split(tmp_path, site_a, fork, extra, stall_b1=False):
    """Daemons site_a + ["b1"], a client cN at each; the LAN of site a split into [fork] and
    the rest, then healed. Returns the clients' logs {daemon: lines} and the daemons' logs.
    stall_b1: b1 stopped for 0.9 s about when the rings of the split form (0.9 s after it)."""
    reason = labnet.available(["nft"])
    if reason:
        pytest.skip("network namespaces: " + reason)
    names = site_a + ["b1"]
    host = {n: i for i, n in enumerate(names, 1)}
    (tmp_path / "client.py").write_text(CLIENT)
    go = str(tmp_path / "go")
    kept = [n for n in site_a if n != fork]
    # (namespace names with this test's tag, unique per run)
    with labnet.LabNet(len(names), tag="s12sd%d" % (os.getpid() % 100000)) as lab:
        conf = tmp_path / "sites.conf"
        conf.write_text("Spread_Segment %s {\n%s\n}\nSpread_Segment %s {\n    b1 %s\n}\nLinkProtocol = Hop\n" % (
            SEGMENT_A, "\n".join("    %s %s" % (n, lab.ip(host[n])) for n in site_a), SEGMENT_B,
            lab.ip(host["b1"])))
        # site a's ring first, then b1: started together, a1 could form a ring alone for a moment,
        # tell b1 that ring's epoch and join a2's ring, which goes on with a2's epoch; at the split
        # neither incarnation is the one b1 read, and b1 may take the fork first (a startup race
        # of its own, open: README issue-10 log, session 22's CI run of 8e825a4)
        procs = {}
        for n in site_a + ["b1"]:
            if n == "b1":
                time.sleep(1.5)
            procs[n] = start_logged(lab, (host[n],), daemon_argv(conf, n, extra=extra), tmp_path / ("%s.log" % n))
        procs = [procs[n] for n in names]
        time.sleep(1.0)
        port = {n: (4813 if n == "b1" else 4803) for n in names}
        logs = {n: tmp_path / ("c%s.log" % n) for n in names}
        for n in names:
            start_client(lab, (host[n],), tmp_path / "client.py", "%d@%s" % (port[n], lab.ip(host[n])), "c" + n,
                         [go, 45], logs[n])
        everyone = sorted("#c%s#%s" % (n, n) for n in names)
        wait_until(lambda: all(any(x[0] == "REG" and x[1] == everyone for x in json_lines(p)) for p in logs.values()),
                   20, "every client in the group of all", tmp_path)
        for n in site_a:
            lab.drop_from(host[n], [host[fork]] if n != fork else [host[k] for k in kept])
        if stall_b1:
            stall(procs[names.index("b1")], 0.9, 0.9)
        them = sorted("#c%s#%s" % (n, n) for n in names if n != fork)
        alone = ["#c%s#%s" % (fork, fork)]

        def apart():
            return all(network_views(logs[n]) and network_views(logs[n])[-1][0] == (alone if n == fork else them)
                       for n in names)
        wait_until(apart, 20, "the views of the split", tmp_path)
        open(go + ".apart", "w").close()
        wait_until(lambda: all(len(data(logs[n], "apart")) >= (5 if n == fork else 5 * len(them)) for n in names),
                   15, "the messages sent apart", tmp_path)
        for n in site_a:
            lab.undrop(host[n])
        wait_until(lambda: all(network_views(logs[n])[-1][0] == everyone for n in names), 25,
                   "the views after the heal", tmp_path)
        open(go + ".after", "w").close()
        wait_until(lambda: all(len(data(logs[n], "after")) >= 6 * len(names) for n in names), 15,
                   "the messages sent after the heal", tmp_path)
        time.sleep(0.5)
        exited = [n for n, p in zip(names, procs) if p.poll() is not None]
        assert not exited, "daemons exited: %s" % exited
    return ({n: json_lines(logs[n]) for n in names},
            {n: (tmp_path / ("%s.log" % n)).read_text() for n in names}, them, alone, everyone)


def check_split(clients, daemons, fork, them, alone, everyone):
    text = "".join("\n== %s\n%s" % (n, t[-3000:]) for n, t in daemons.items())
    assert "goes on as a new incarnation" in daemons[fork], text
    assert "REJOIN" in daemons[fork], text
    assert not any("ERROR" in t for t in daemons.values()), text
    for n, seen in clients.items():
        views = [x for x in seen if x[0] in ("TRANS", "REG")]
        # the view of the split (the fork's may come in two steps: its ring, then its sites),
        # then TRANSITION and the merged view with one vs_set per side
        last = [x[1:3] if x[0] == "REG" else ["TRANS"] for x in views if x[0] == "TRANS" or x[3] == "NETWORK"]
        side = alone if n == fork else them
        # (the view of the split by its members only: on a loaded machine the kept side's new
        # representative may lose b's site for a moment as it takes the links over, and b's
        # return then comes as a view of the same members with two vs_sets)
        assert last[-3][0] == side and last[-2:] == [["TRANS"], [everyone, sorted([alone, them])]], (n, seen)
        assert views[-1][0] == "REG" and views[-2][0] == "TRANS", (n, seen)
        # each TRANSITION ends one view: the next membership message is a REG_MEMB
        assert all(a[0] != "TRANS" or b[0] == "REG" for a, b in zip(views, views[1:])), (n, seen)
        # apart: each side's messages, once, in one order per side; none of the other side's
        got = [x[1] for x in seen if x[0] == "DATA" and x[1].split()[1] == "apart"]
        senders = {m.split()[0] for m in got}
        assert senders == ({"c" + fork} if n == fork else {"c" + x.split("#")[2] for x in them}), (n, got)
        assert len(got) == len(set(got)) == 5 * len(senders), (n, got)
    orders = [[x[1] for x in seen if x[0] == "DATA" and x[1].split()[1] == "after"] for seen in clients.values()]
    assert len(orders[0]) == len(set(orders[0])) == 6 * len(everyone) and all(o == orders[0] for o in orders), orders
    kept_orders = [[x[1] for x in seen if x[0] == "DATA" and x[1].split()[1] == "apart"]
                   for n, seen in clients.items() if n != fork]
    assert all(o == kept_orders[0] for o in kept_orders), kept_orders


def test_a_site_of_two_split_the_first_daemon_keeps_the_site_and_the_other_rejoins(tmp_path):
    """a1 | a2 with --split-quorum-min-daemons 2: a1 holds half of the last ring and is the
    first in spread.conf, so it keeps the site (with b1); a2 forks."""
    clients, daemons, them, alone, everyone = run_split(tmp_path, ["a1", "a2"], "a2",
                                                        ["--split-quorum-min-daemons", "2"])
    check_split(clients, daemons, "a2", them, alone, everyone)


def test_a_site_of_three_split_the_two_keep_the_site_and_the_first_daemon_rejoins(tmp_path):
    """a1 | a2 a3 (the default: voting in sites of three or more): a2 and a3 hold a majority and
    keep the site; a1, the first in spread.conf, forks, and takes their state at the heal."""
    clients, daemons, them, alone, everyone = run_split(tmp_path, ["a1", "a2", "a3"], "a1", [])
    check_split(clients, daemons, "a1", them, alone, everyone)


def test_a_site_of_three_split_while_the_other_site_stalls_the_kept_ring_gets_it_back(tmp_path):
    """As above, with b1 stopped for 0.9 s as the rings of the split form (CI's loaded machine
    did so twice): a1's fork and a2's takeover both left site b out, and b1 went with whichever
    asked first - the fork, whose ring of one forms first - so a2 a3 stayed alone (the test
    above waited 20 s for the views of the split). b1 now lets the incarnation of site a it
    read, still saying HELLO, go first (SiteGateway._kept_goes_first)."""
    clients, daemons, them, alone, everyone = run_split(tmp_path, ["a1", "a2", "a3"], "a1", [], stall_b1=True)
    # (where the machine is slow, the rings may form after b1 is back: then nothing splits b
    # off and this is the test above again; it passes either way only if b1 never takes the fork)
    check_split(clients, daemons, "a1", them, alone, everyone)
