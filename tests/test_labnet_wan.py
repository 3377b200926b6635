"""The WAN lab: sites joined by emulated wide-area links (labnet.WanEmulator, WanLab).

The kernel here has no `tc netem`, so delay, rate and loss between sites come from a relay that
reads the router namespace's TUN device. The core is tested with a fake clock; the lab itself
with real packets between namespaces (root only)."""
from __future__ import annotations

import os
import socket
import struct
import subprocess
import sys
import time

import pytest

import labnet
from labnet import WanEmulator, WanSettings


def ip_packet(src: str, dst: str, size: int = 100) -> bytes:
    """An IPv4 header (enough of one for the emulator) padded to `size` bytes."""
    header = struct.pack(">BBHHHBBH4s4s", 0x45, 0, size, 0, 0, 64, 17, 0,
                         socket.inet_aton(src), socket.inet_aton(dst))
    return header + bytes(size - len(header))


# ---------------------------------------------------------------- the core, with a fake clock

def test_a_packet_between_sites_waits_for_the_wire_at_the_rate_then_the_delay():
    wan = WanEmulator(WanSettings(rate_mbit=1, delay_ms=10))
    wan.packet_in(ip_packet("10.98.1.1", "10.98.2.1", 1250), 0.0)   # 1250 B at 1 Mbit/s: 10 ms
    assert wan.packets_out(0.0199) == []
    assert len(wan.packets_out(0.0201)) == 1


def test_packets_on_one_link_queue_behind_each_other_and_other_links_do_not_wait():
    wan = WanEmulator(WanSettings(rate_mbit=1, delay_ms=0))
    for _ in range(3):
        wan.packet_in(ip_packet("10.98.1.1", "10.98.2.1", 1250), 0.0)
    wan.packet_in(ip_packet("10.98.1.1", "10.98.3.1", 1250), 0.0)    # another link: its own wire
    assert len(wan.packets_out(0.0101)) == 2                          # one per link
    assert len(wan.packets_out(0.0301)) == 2                          # the queue drains at the rate
    assert wan.links[(1, 2)].packets == 3 and wan.links[(1, 3)].packets == 1


def test_a_full_queue_drops_what_comes_faster_than_the_rate():
    wan = WanEmulator(WanSettings(rate_mbit=1, delay_ms=0, queue_kb=4))
    for _ in range(10):
        wan.packet_in(ip_packet("10.98.1.1", "10.98.2.1", 1000), 0.0)
    link = wan.links[(1, 2)]
    assert link.overflowed > 0 and link.packets + link.overflowed == 10
    assert link.packets * 1000 <= 4 * 1024 + 1000


def test_losses_are_about_the_share_asked_and_replay_with_the_seed():
    def lost(seed):
        wan = WanEmulator(WanSettings(rate_mbit=1000, delay_ms=0, loss_percent=10, seed=seed))
        for i in range(2000):
            wan.packet_in(ip_packet("10.98.2.7", "10.98.1.1"), i * 0.01)
        return wan.links[(2, 1)].lost
    assert 120 < lost(5) < 280
    assert lost(5) == lost(5) and lost(5) != lost(6)


def test_packets_inside_a_site_or_not_of_the_lab_pass_at_once():
    wan = WanEmulator(WanSettings(rate_mbit=0.001, delay_ms=500, loss_percent=99))
    wan.packet_in(ip_packet("10.98.1.1", "10.98.1.2"), 1.0)
    wan.packet_in(ip_packet("192.0.2.1", "10.98.1.2"), 1.0)
    wan.packet_in(b"\x60" + bytes(50), 1.0)                           # IPv6: not ours to shape
    assert len(wan.packets_out(1.0)) == 3 and wan.links == {}


def test_a_cut_site_loses_every_wan_packet_until_healed():
    wan = WanEmulator(WanSettings(rate_mbit=100, delay_ms=0))
    wan.cut_sites = {2}
    wan.packet_in(ip_packet("10.98.1.1", "10.98.2.1"), 0.0)
    wan.packet_in(ip_packet("10.98.2.1", "10.98.3.1"), 0.0)
    assert wan.packets_out(1.0) == []
    assert wan.links[(1, 2)].cut == 1 and wan.links[(2, 3)].cut == 1
    wan.cut_sites = set()
    wan.packet_in(ip_packet("10.98.1.1", "10.98.2.1"), 2.0)
    assert len(wan.packets_out(3.0)) == 1


def test_a_cut_link_loses_its_packets_both_ways_and_the_other_links_work():
    wan = WanEmulator(WanSettings(rate_mbit=100, delay_ms=0))
    wan.cut_links = {(1, 2), (2, 1)}
    wan.packet_in(ip_packet("10.98.1.1", "10.98.2.1"), 0.0)
    wan.packet_in(ip_packet("10.98.2.1", "10.98.1.1"), 0.0)
    wan.packet_in(ip_packet("10.98.1.1", "10.98.3.1"), 0.0)
    wan.packet_in(ip_packet("10.98.3.1", "10.98.2.1"), 0.0)
    assert len(wan.packets_out(1.0)) == 2
    assert wan.links[(1, 2)].cut == 1 and wan.links[(2, 1)].cut == 1 and wan.links[(1, 3)].cut == 0


def test_the_control_file_cuts_sites_and_links(tmp_path):
    from labnet import _read_wan_control
    wan = WanEmulator(WanSettings())
    path = tmp_path / "control"
    path.write_text("cut 3\ncutlink 1 2\ncutlink x 2\n")
    _read_wan_control(str(path), None, wan)
    assert wan.cut_sites == {3} and wan.cut_links == {(1, 2), (2, 1)}


@pytest.mark.parametrize("bad", [dict(rate_mbit=0), dict(delay_ms=-1), dict(loss_percent=100)])
def test_impossible_links_are_refused(bad):
    with pytest.raises(ValueError):
        WanEmulator(WanSettings(**bad))


# ---------------------------------------------------------------- real packets between namespaces

ECHO = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], 9999))
print("ready", flush=True)
while True:
    data, peer = s.recvfrom(65536)
    s.sendto(data, peer)
"""

PROBE = r"""
import socket, sys, time
me, peer, count, size = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((me, 0))
s.settimeout(3)
rtts = []
for i in range(3):                      # round trips, one at a time
    t = time.monotonic(); s.sendto(b"p", (peer, 9999)); s.recvfrom(100)
    rtts.append(time.monotonic() - t)
t = time.monotonic()                    # a burst: it comes back at the link's rate
for i in range(count):
    s.sendto(bytes(size), (peer, 9999))
got = 0
try:
    while got < count:
        s.recvfrom(65536); got += 1
except socket.timeout:
    pass
print(min(rtts), time.monotonic() - t - (3 if got < count else 0), got)
"""


def wan_lab_or_skip(sites, settings):
    reason = labnet.available()
    if reason:
        pytest.skip("network namespaces: " + reason)
    if not os.path.exists("/dev/net/tun"):
        pytest.skip("the WAN relay needs a TUN device (/dev/net/tun)")
    lab = labnet.WanLab(sites, settings)
    try:
        lab.up()
    except BaseException:
        lab.close()
        raise
    return lab


def probe(lab, site, host, peer_ip, count=1, size=100):
    out = lab.run(site, host, [sys.executable, "-c", PROBE, lab.ip(site, host), peer_ip, str(count), str(size)],
                  capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    rtt, burst_s, got = out.stdout.split()
    return float(rtt), float(burst_s), int(got)


def test_between_sites_packets_take_the_delay_and_the_rate_and_inside_a_site_they_do_not():
    lab = wan_lab_or_skip([2, 1], WanSettings(rate_mbit=2, delay_ms=15))
    try:
        lab.popen(2, 1, [sys.executable, "-c", ECHO, lab.ip(2, 1)], stdout=subprocess.DEVNULL)
        lab.popen(1, 2, [sys.executable, "-c", ECHO, lab.ip(1, 2)], stdout=subprocess.DEVNULL)
        time.sleep(0.5)
        rtt_wan, burst_s, got = probe(lab, 1, 1, lab.ip(2, 1), count=50, size=1000)
        rtt_lan, _, _ = probe(lab, 1, 1, lab.ip(1, 2))
        assert rtt_wan >= 0.030                   # 15 ms each way, at least
        assert rtt_lan < 0.030                    # the site's own LAN is not shaped
        # 50 x 1028 B each way at 2 Mbit/s: at least 0.2 s on the wire in each direction
        assert got == 50 and burst_s >= 0.2
        report = lab.link_report()
        assert report["1->2"]["packets"] >= 53 and report["2->1"]["packets"] >= 53
    finally:
        lab.close()


def test_a_cut_site_is_unreachable_over_the_wan_until_healed_and_loss_is_counted():
    lab = wan_lab_or_skip([1, 1], WanSettings(rate_mbit=50, delay_ms=1, loss_percent=20, seed=3))
    try:
        lab.popen(2, 1, [sys.executable, "-c", ECHO, lab.ip(2, 1)], stdout=subprocess.DEVNULL)
        time.sleep(0.5)
        lab.cut_site(2)
        assert burst(lab, 20) == 0
        lab.heal_site(2)
        assert burst(lab, 200) > 100              # 20 % lost each way: about 64 % come back
        report = lab.link_report()
        assert report["1->2"]["cut"] >= 20 and report["1->2"]["lost"] > 10
    finally:
        lab.close()


BURST = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], 0)); s.settimeout(1.5)
for i in range(int(sys.argv[3])):
    s.sendto(b"x", (sys.argv[2], 9999))
got = 0
try:
    while True:
        s.recvfrom(100); got += 1
except socket.timeout:
    pass
print(got)
"""


def burst(lab, count):
    out = lab.run(1, 1, [sys.executable, "-c", BURST, lab.ip(1, 1), lab.ip(2, 1), str(count)],
                  capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return int(out.stdout)
