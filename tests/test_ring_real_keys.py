"""Tier 3: ring daemons as real processes on loopback, with keys and with configuration files
that differ: a daemon with the wrong key, or started from another file, is kept out and
counted, and the daemons that agree keep their ring (their clients see no membership change).
"""
from __future__ import annotations

import re
import time

import pytest

import spread_mini as sp
from conftest import wait_for
from ring_helpers import (connect, free_ring_port, last_ring_line, members_are, receive_until,
                          start_ring_daemon)

pytestmark = pytest.mark.slow

IPS = ["127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.4"]


def conf_file(tmp_path, name, daemons, port):
    """A spread.conf naming `daemons` (name, ip) on `port`."""
    lines = ["Spread_Segment 239.255.4.3:%d {" % port]
    lines += ["    %s %s" % d for d in daemons] + ["}"]
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def key_file(tmp_path, name):
    path = str(tmp_path / name)
    sp.write_key_file(path)
    return path


def in_ring_of(procs, proc, names):
    """The daemon's last installed ring is exactly `names` ("installed ring 3/d1#7208
    {d1#7208,d2#8117,d3#9188}")."""
    found = re.search(r"installed ring \S+ \{([^}]*)\}", last_ring_line(procs.output(proc)))
    return found is not None and sorted(m.split("#")[0] for m in found.group(1).split(",")) == \
        sorted(names)


def rings_of_the_three_only(procs, daemons, before):
    """Every ring the three installed since `before` (their counts of "installed ring") is the
    three of them, never with d4. A ring formed again with the same three (a token lost on a
    machine loaded by other test runs) is no membership change; one with d4 would be."""
    for proc, seen in zip(daemons, before):
        lines = [l for l in procs.output(proc).splitlines() if "installed ring" in l][seen:]
        for line in lines:
            members = re.search(r"installed ring \S+ \{([^}]*)\}", line).group(1)
            assert sorted(m.split("#")[0] for m in members.split(",")) == ["d1", "d2", "d3"], line
    return True


def no_membership_for(mbox, seconds):
    """Membership messages received within `seconds` (there must be none)."""
    got = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        msg = mbox.receive(timeout=max(0.05, deadline - time.monotonic()))
        if msg is not None and msg.is_membership:
            got.append(msg)
    return got


def three_agreeing_then_a_fourth(procs, tmp_path, extra_three, conf_three, fourth):
    port = int(re.search(r":(\d+) \{", open(conf_three).read()).group(1))
    daemons = [start_ring_daemon(procs, conf_three, "d%d" % i, IPS[i - 1], port, extra_three)
               for i in (1, 2, 3)]
    wait_for(lambda: all(in_ring_of(procs, p, ["d1", "d2", "d3"]) for p in daemons), 20)
    mboxes = [connect(port, ip, "c%d" % i) for i, ip in enumerate(IPS[:3], 1)]
    for m in mboxes:
        m.join("g")
    for m in mboxes:
        receive_until(m, members_are([x.private_group for x in mboxes]))
    changes_before = [procs.output(p).count("installed ring") for p in daemons]
    d4 = fourth(port)
    return port, daemons, mboxes, changes_before, d4


def test_keyed_daemons_form_a_ring_and_one_with_the_wrong_key_is_kept_out_and_counted(
        procs, tmp_path):
    port = free_ring_port(IPS)
    conf = conf_file(tmp_path, "spread.conf", [("d%d" % i, ip) for i, ip in enumerate(IPS, 1)], port)
    good, bad = key_file(tmp_path, "ring.key"), key_file(tmp_path, "other.key")
    _, daemons, mboxes, before, d4 = three_agreeing_then_a_fourth(
        procs, tmp_path, ("--key", good, "--status-every", "1"), conf,
        lambda port: start_ring_daemon(procs, conf, "d4", IPS[3], port, ("--key", bad)))
    assert "packets signed with the key" in procs.output(daemons[0])
    assert no_membership_for(mboxes[0], 3.0) == []
    for m, ip in zip(mboxes, IPS):
        m.multicast(sp.AGREED_MESS, "g", b"from " + ip.encode())
    orders = []
    for m in mboxes:
        data = []
        receive_until(m, lambda msg: (not msg.is_membership and data.append(msg.data)) or len(data) == 3)
        orders.append(data)
    assert sorted(orders[0]) == [b"from 127.0.0.1", b"from 127.0.0.2", b"from 127.0.0.3"]
    assert orders[0] == orders[1] == orders[2]
    assert rings_of_the_three_only(procs, daemons, before)

    def wrong_tags_counted():
        rows = re.findall(r"no / wrong / unexpected tag\W+(\d+) / (\d+) / (\d+)",
                          procs.output(daemons[0]))
        return rows and int(rows[-1][1]) > 0

    wait_for(wrong_tags_counted, 10)
    assert d4.poll() is None and in_ring_of(procs, d4, ["d4"])
    for m in mboxes:
        m.disconnect()


def test_a_daemon_started_from_another_file_never_changes_the_ring_of_the_three_and_is_named(
        procs, tmp_path):
    port = free_ring_port(IPS)
    four = conf_file(tmp_path, "four.conf", [("d%d" % i, ip) for i, ip in enumerate(IPS, 1)], port)
    other = conf_file(tmp_path, "other.conf", [("d1", IPS[0]), ("d2", IPS[1]), ("d4", IPS[3])], port)
    _, daemons, mboxes, before, d4 = three_agreeing_then_a_fourth(
        procs, tmp_path, (), four,
        lambda port: start_ring_daemon(procs, other, "d4", IPS[3], port))
    assert no_membership_for(mboxes[0], 4.0) == []
    assert all(no_membership_for(m, 0.2) == [] for m in mboxes[1:])
    assert rings_of_the_three_only(procs, daemons, before)
    for p in daemons[:2]:  # d4's file does not name d3: it sends d3 nothing
        lines = [l for l in procs.output(p).splitlines() if "different configuration" in l]
        assert len(lines) == 1, lines  # once per peer (then at most once a minute)
        assert "d4 at 127.0.0.4:%d" % port in lines[0]
        assert "it lists 3 daemons, we list 4" in lines[0]
    out4 = procs.output(d4)
    assert "different configuration" in out4 and "it lists 4 daemons, we list 3" in out4
    for m in mboxes:
        m.disconnect()
