"""The namespace lab itself: hosts reach each other by multicast, and a cut host does not."""
from __future__ import annotations

import subprocess
import sys

import pytest

RECEIVER = r'''
import socket, struct, sys
group, port, iface = "239.255.9.9", 47002, sys.argv[1]
r = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
r.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
r.bind((group, port))
r.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
             struct.pack("4s4s", socket.inet_aton(group), socket.inet_aton(iface)))
print("ready", flush=True)
r.settimeout(1.5)
n = 0
try:
    while True:
        r.recvfrom(100); n += 1
except socket.timeout:
    pass
print(n)
'''

SENDER = r'''
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(sys.argv[1]))
for _ in range(200):
    s.sendto(b"x", ("239.255.9.9", 47002)); time.sleep(0.001)
'''


@pytest.mark.netns
def test_multicast_crosses_the_bridge_but_not_a_cut(labnet):
    lab = labnet(3)
    lab.cut(3)
    receivers = [lab.popen(h, [sys.executable, "-c", RECEIVER, lab.ip(h)], stdout=subprocess.PIPE,
                           text=True) for h in (2, 3)]
    for r in receivers:
        assert r.stdout.readline().strip() == "ready"
    lab.run(1, [sys.executable, "-c", SENDER, lab.ip(1)], check=True)
    got = [int(r.communicate(timeout=10)[0].strip()) for r in receivers]
    # host 2 hears the datagrams on the bridge: UDP promises none of them, and a loaded machine
    # may drop a few from a full socket buffer, so "most", not "all 200"
    assert 100 <= got[0] <= 200, got
    assert got[1] == 0         # host 3's port is down: a partition, nothing gets through


@pytest.mark.netns(needs=["nft"])
def test_drop_from_splits_the_lan_between_two_hosts_and_undrop_heals_it(labnet):
    """drop_from(2, [1]): host 2 hears nothing from host 1 while host 3 still does (the switch
    carries it: a split LAN, not a cut port); undrop(2) and host 2 hears host 1 again."""

    def heard(hosts):
        receivers = [lab.popen(h, [sys.executable, "-c", RECEIVER, lab.ip(h)], stdout=subprocess.PIPE,
                               text=True) for h in hosts]
        for r in receivers:
            assert r.stdout.readline().strip() == "ready"
        lab.run(1, [sys.executable, "-c", SENDER, lab.ip(1)], check=True)
        return [int(r.communicate(timeout=10)[0].strip()) for r in receivers]

    lab = labnet(3)
    lab.drop_from(2, [1])
    split = heard([2, 3])
    assert split[0] == 0 and split[1] >= 100, split
    lab.undrop(2)
    assert heard([2])[0] >= 100


def test_a_missing_command_is_a_reason_to_skip(monkeypatch):
    """Without nftables a test that needs packet loss is skipped, not failed (and says why)."""
    import shutil

    import labnet
    monkeypatch.setattr(labnet.os, "geteuid", lambda: 0)
    real_which = shutil.which
    monkeypatch.setattr(labnet.shutil, "which", lambda cmd: None if cmd == "nft" else real_which(cmd) or "/bin/" + cmd)
    monkeypatch.setattr(labnet.subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(a, 0, b"", b""))
    assert labnet.available(["nft"]) == "needs nftables (the `nft` command)"
    assert labnet.available() is None


@pytest.mark.netns(needs=["a-command-nobody-has"])
def test_the_fixture_skips_for_a_missing_command(labnet):
    pytest.fail("the labnet fixture should have skipped this test")


@pytest.mark.netns
def test_up_twice_is_a_clear_message_not_a_traceback(labnet):
    """`labnet.py up 3` run twice gave a traceback (`File exists`)."""
    import os
    import labnet as _labnet
    root = os.path.dirname(os.path.abspath(_labnet.__file__))
    names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    if "swdemo" in names:
        pytest.skip("somebody's demo lab is up on this machine: not ours to take down")
    run = lambda *argv: subprocess.run([sys.executable, "labnet.py", *argv], cwd=root, capture_output=True,
                                       text=True, timeout=120)
    try:
        assert run("up", "2").returncode == 0
        again = run("up", "2")
        assert again.returncode == 1 and "already up" in again.stderr and "labnet.py down" in again.stderr
        assert "Traceback" not in again.stderr
    finally:
        down = run("down")
    assert down.returncode == 0 and "3 namespaces removed" in down.stdout
    assert "demo" not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
