"""Tier 3: the ring's data by IP multicast on the segment, as real processes on loopback
(daemons on 127.0.0.x, the segment joined on 127.0.0.1, TTL 1): one send per packet, the
fallback to unicast, and two configurations on one multicast address and port."""
from __future__ import annotations

import re
import socket

import pytest

import spread_mini as sp
from conftest import wait_for
from ring_helpers import (connect, free_ring_port, members_are, receive_until, start_ring,
                          start_ring_daemon, write_conf)

pytestmark = pytest.mark.slow

SEGMENT = "239.255.4.3"  # ring_helpers.write_conf's


def flood_and_collect(port, sender_ip, receiver_ips, group, count, tag=b"m"):
    """`count` AGREED messages from a client of the first address; what each receiver got."""
    receivers = [connect(port, ip, "r%d" % i) for i, ip in enumerate(receiver_ips, 1)]
    for m in receivers:
        m.join(group)
    for m in receivers:
        receive_until(m, members_are([r.private_group for r in receivers]))
    with connect(port, sender_ip, "s", membership=False) as mbox:
        for i in range(count):
            mbox.multicast(sp.AGREED_MESS, group, b"%s %04d" % (tag, i))
    got = []
    for m in receivers:
        data = []
        while len(data) < count:
            msg = m.receive(timeout=20)
            assert msg is not None, "%d of %d messages at %s" % (len(data), count, m.private_group)
            if not msg.is_membership:
                data.append(msg.data)
        got.append(data)
        m.disconnect()
    return got


def listener_on_segment(port):
    """A socket that sees what the daemons send to the segment (joined on 127.0.0.1 only)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((SEGMENT, port))
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
                    socket.inet_aton(SEGMENT) + socket.inet_aton("127.0.0.1"))
    sock.settimeout(0.2)
    return sock


def data_packets_seen(sock, conf):
    """Ring data packets on the socket (the test's rings have no key; the stamp is the file's)."""
    config = sp.load_spread_conf(conf)
    seal = sp.RingSeal(None, sp.configuration_stamp([(d.name, d.ip, d.port) for d in config.daemons],
                                                    sp.ring_settings_of(config)))
    seen = []
    while True:
        try:
            raw, src = sock.recvfrom(65536)
        except socket.timeout:
            return seen
        try:
            packet = sp.decode_ring_packet(raw, seal)
        except sp.RingPeerError:
            continue
        if isinstance(packet, sp.RingData):
            seen.append((src, packet))


def test_the_ring_data_goes_once_to_the_segment_and_every_daemon_delivers_it(procs, tmp_path):
    conf, port, ips, daemons = start_ring(procs, tmp_path, extra=("--status-every", "1"))
    for proc in daemons:
        assert "data by IP multicast to %s:%d on 127.0.0.1" % (SEGMENT, port) in procs.output(proc)
    watcher = listener_on_segment(port)
    try:
        got = flood_and_collect(port, ips[0], ips[1:], "mc", 300)
        seen = data_packets_seen(watcher, conf)
    finally:
        watcher.close()
    expected = [b"m %04d" % i for i in range(300)]
    assert got == [expected, expected]
    # the sender's daemon sent its packets to the group: each link_seq once (a resend may
    # repeat one, never one copy per member)
    from_d1 = [p.link_seq for src, p in seen if src == (ips[0], port) and p.sender[0] == "d1"]
    assert from_d1, "no ring data from d1 on the segment"
    assert len(from_d1) < 1.5 * len(set(from_d1))
    wait_for(lambda: "IP multicast to %s:%d" % (SEGMENT, port) in
             "".join(line for line in procs.output(daemons[0]).splitlines() if "ring data sent by" in line), 10)


def test_without_multicast_the_data_goes_by_unicast_and_the_daemons_say_so(procs, tmp_path):
    conf, port, ips, daemons = start_ring(procs, tmp_path, extra=("--no-multicast",))
    for proc in daemons:
        assert "data by unicast to each member (--no-multicast)" in procs.output(proc)
        assert "WARNING" not in procs.output(proc)  # asked for: nothing to warn about
    watcher = listener_on_segment(port)
    try:
        got = flood_and_collect(port, ips[0], ips[1:], "uc", 100)
        assert data_packets_seen(watcher, conf) == []  # nothing on the segment
    finally:
        watcher.close()
    assert got == [[b"m %04d" % i for i in range(100)]] * 2


def test_a_segment_address_that_is_not_multicast_means_unicast_and_never_a_broadcast(procs, tmp_path):
    ips = ["127.0.0.1", "127.0.0.2", "127.0.0.3"]
    conf, port = write_conf(tmp_path, ips)
    with open(conf) as f:
        text = f.read().replace(SEGMENT, "127.0.0.255")  # a broadcast address, as Spread allows
    with open(conf, "w") as f:
        f.write(text)
    daemons = [start_ring_daemon(procs, conf, "d%d" % i, ip, port) for i, ip in enumerate(ips, 1)]
    for proc in daemons:
        assert "data by unicast to each member (127.0.0.255 is not a multicast address)" in procs.output(proc)
        assert "WARNING" not in procs.output(proc)  # every daemon of the file does the same
    wait_for(lambda: all(re.search(r"installed ring .*d1#.*d2#.*d3#", procs.output(p)) for p in daemons), 20)
    assert flood_and_collect(port, ips[0], ips[1:], "bc", 50) == [[b"m %04d" % i for i in range(50)]] * 2


def test_a_segment_that_cannot_be_joined_falls_back_to_unicast(procs, tmp_path):
    # another program holds the segment's address and port (without SO_REUSEADDR): no daemon
    # can bind it, each says why and sends by unicast; the ring works as before
    ips = ["127.0.0.1", "127.0.0.2", "127.0.0.3"]
    conf, port = write_conf(tmp_path, ips)
    blocker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    blocker.bind((SEGMENT, port))
    try:
        daemons = [start_ring_daemon(procs, conf, "d%d" % i, ip, port) for i, ip in enumerate(ips, 1)]
        for proc in daemons:
            wait_for(lambda: "data by unicast to each member (joining %s on 127.0.0.1 failed" % SEGMENT
                     in procs.output(proc), 10)
        wait_for(lambda: all(re.search(r"installed ring .*d1#.*d2#.*d3#", procs.output(p)) for p in daemons), 20)
        assert all("WARNING: the ring's data goes by unicast" in procs.output(p) for p in daemons)
        got = flood_and_collect(port, ips[0], ips[1:], "fb", 100)
    finally:
        blocker.close()
    assert got == [[b"m %04d" % i for i in range(100)]] * 2


def test_two_configurations_on_one_multicast_address_and_port_do_not_disturb_each_other(procs, tmp_path):
    # team A: d1..d3 on 127.0.0.1-3. Team B: e1, e2 on 127.0.0.4-5, and its file also names
    # e3 at 127.0.0.3 (not running: A's d3 is there). Both on the same segment address and
    # port: A drops B's packets (not from a daemon of A's file), B drops d3's (a daemon of
    # its file, but another configuration stamp); each ring carries its own messages only.
    ips_a = ["127.0.0.1", "127.0.0.2", "127.0.0.3"]
    port = free_ring_port(ips_a + ["127.0.0.4", "127.0.0.5"])
    conf_a, _ = write_conf(tmp_path, ips_a, port)
    team_b = tmp_path / "b"
    team_b.mkdir()
    conf_b = team_b / "spread.conf"
    conf_b.write_text("Spread_Segment %s:%d {\n    e1 127.0.0.4\n    e2 127.0.0.5\n    e3 127.0.0.3\n}\n"
                      % (SEGMENT, port))
    a = [start_ring_daemon(procs, conf_a, "d%d" % i, ip, port) for i, ip in enumerate(ips_a, 1)]
    b = [start_ring_daemon(procs, str(conf_b), "e%d" % i, "127.0.0.%d" % (i + 3), port) for i in (1, 2)]
    wait_for(lambda: all(re.search(r"installed ring .*d1#.*d2#.*d3#", procs.output(p)) for p in a), 20)
    wait_for(lambda: all(re.search(r"installed ring .*e1#.*e2#", procs.output(p)) for p in b), 30)
    rings_a = [procs.output(p).count("installed ring") for p in a]
    got_a = flood_and_collect(port, ips_a[0], ips_a[1:], "ga", 200, b"a")
    got_b = flood_and_collect(port, "127.0.0.4", ["127.0.0.5"], "gb", 200, b"b")
    assert got_a == [[b"a %04d" % i for i in range(200)]] * 2
    assert got_b == [[b"b %04d" % i for i in range(200)]]
    assert [procs.output(p).count("installed ring") for p in a] == rings_a, "team B changed team A's ring"
    assert all(re.search(r"installed ring .*e1#.*e2#", procs.output(p)) and "d1#" not in procs.output(p)
               for p in b)
    # each side saw the other's traffic and said so
    assert any("not a daemon of the configuration" in procs.output(p) for p in a)
    assert any("come from a different configuration" in procs.output(p) for p in b)


def test_datagrams_to_the_segment_get_the_checks_of_unicast_ones(procs, tmp_path):
    # a keyed ring on the segment; a forger on a configured address (and a stranger) sends to
    # the group: garbage, an unsigned packet, one signed with another key, one of another
    # configuration. Every one is dropped and counted; the ring goes on as if nothing came.
    key = str(tmp_path / "ring.key")
    sp.write_key_file(key)
    conf, port, ips, daemons = start_ring(procs, tmp_path, extra=("--key", key, "--status-every", "1"))
    config = sp.load_spread_conf(conf)
    stamp = sp.configuration_stamp([(d.name, d.ip, d.port) for d in config.daemons], sp.ring_settings_of(config))
    data = sp.RingData((1, "d1", 1), ("d1", 1), 5, [sp.RingChunk(1, 1, 1, 0, 1, sp.AGREED_MESS, b"x")])
    other_key = sp.RingSeal(b"k" * 32, stamp)
    rings = [procs.output(p).count("installed ring") for p in daemons]
    forged = [b"garbage, not a ring packet",
              sp.encode_ring_data(data, sp.RingSeal(None, stamp)),  # no tag
              sp.encode_ring_data(sp.RingData(*(data.ring_id, data.sender, 6, data.chunks)), other_key),
              sp.encode_ring_data(sp.RingData(*(data.ring_id, data.sender, 7, data.chunks)),
                                  sp.RingSeal(sp.read_key_file(key), (9, stamp[1], stamp[2])))]
    for source in ("127.0.0.3", "127.0.0.9"):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((source, 0))
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton("127.0.0.1"))
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
        for packet in forged * 5:
            sock.sendto(packet, (SEGMENT, port))
        sock.close()
    got = flood_and_collect(port, ips[0], ips[1:], "k", 100)
    assert got == [[b"m %04d" % i for i in range(100)]] * 2

    def counted(proc):
        text = procs.output(proc)
        tags = re.findall(r"dropped: no / wrong / unexpected tag\s*\S?\s*(\d+) / (\d+) / (\d+)", text)
        config_drops = re.findall(r"dropped: different configuration\s*\S?\s*(\d+)", text)
        strangers = re.findall(r"datagrams from strangers\s*\S?\s*(\d+)", text)
        return (tags[-1] if tags else None, config_drops[-1] if config_drops else None,
                strangers[-1] if strangers else None)

    for proc in daemons:  # d3 too: the forger's port is not its ring port, so not its own copy
        wait_for(lambda: counted(proc) == (("5", "5", "0"), "5", "20"), 10)
        assert " dropped a packet from 127.0.0.3" in procs.output(proc)  # the garbage, logged
    assert [procs.output(p).count("installed ring") for p in daemons] == rings, "a forged packet changed the ring"

