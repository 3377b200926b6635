"""Tier 3: spread_mini daemons joined by the RING protocol, as real processes on loopback
(127.0.0.1, 127.0.0.2, 127.0.0.3), with real clients on each; and in network namespaces with
10% packet loss (nftables)."""
from __future__ import annotations

import signal
import socket
import sys
import threading
import time

import pytest

import spread_mini as sp
from conftest import ROOT, wait_for
from ring_helpers import (connect, data_of, last_ring_line, members_are, receive_until,
                          run_daemon_cli, start_ring, start_ring_daemon, write_conf)

pytestmark = pytest.mark.slow


def join_all(mboxes, group, names):
    for m in mboxes:
        m.join(group)
    for m in mboxes:
        receive_until(m, members_are(names))


def send_many(port, ip, user, group, count, service, errors):
    try:
        with connect(port, ip, user, membership=False) as mbox:
            for i in range(count):
                mbox.multicast(service, group, b"%s %05d" % (user.encode(), i))
    except Exception as exc:  # reported by the test
        errors.append(repr(exc))


def test_three_daemons_one_group_one_order_for_concurrent_senders(procs, tmp_path):
    conf, port, ips, daemons = start_ring(procs, tmp_path)
    receivers = [connect(port, ip, "r%d" % i) for i, ip in enumerate(ips, 1)]
    names = [m.private_group for m in receivers]
    join_all(receivers, "demo", names)
    errors = []
    senders = [threading.Thread(target=send_many, args=(port, ip, "s%d" % i, "demo", 150,
                                                         sp.AGREED_MESS if i != 2 else sp.SAFE_MESS,
                                                         errors))
               for i, ip in enumerate(ips, 1)]
    for t in senders:
        t.start()
    for t in senders:
        t.join(60)
    assert not errors
    orders = []
    for m in receivers:
        got = []
        while len(got) < 450:
            msg = m.receive(timeout=20)
            assert msg is not None, "only %d of 450 messages at %s" % (len(got), m.private_group)
            if not msg.is_membership:
                got.append(msg.data)
        orders.append(got)
    assert orders[0] == orders[1] == orders[2], "the daemons delivered different orders"
    for sender in (b"s1", b"s2", b"s3"):
        mine = [d for d in orders[0] if d.startswith(sender)]
        assert mine == sorted(mine) and len(mine) == 150, "FIFO per sender"
    for m in receivers:
        m.disconnect()


def test_unreliable_messages_reach_the_other_daemons_once_and_reliable_ones_keep_their_order(
        procs, tmp_path):
    # UNRELIABLE goes outside the reliable link (7.3.3): each arrives at most once, and may be
    # lost (a full socket buffer on a busy machine); AGREED ones all arrive, in order
    conf, port, ips, daemons = start_ring(procs, tmp_path)
    receivers = [connect(port, ip, "r%d" % i) for i, ip in enumerate(ips, 1)]
    join_all(receivers, "demo", [m.private_group for m in receivers])
    with connect(port, ips[0], "mixed", membership=False) as mbox:
        for i in range(40):
            service = sp.UNRELIABLE_MESS if i % 2 else sp.AGREED_MESS
            mbox.multicast(service, "demo", b"%s %02d" % (b"u" if i % 2 else b"a", i))
        mbox.disconnect()
    sent_unreliable = {b"u %02d" % i for i in range(1, 40, 2)}
    for m in receivers[1:]:
        unreliable, agreed = [], []
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and len(unreliable) + len(agreed) < 40:
            # once every AGREED one is in, a quiet half second ends the wait for the rest
            msg = m.receive(timeout=2 if len(agreed) < 20 else 0.5)
            if msg is None:
                if len(agreed) == 20:
                    break
            elif not msg.is_membership:
                (unreliable if msg.service_type & sp.UNRELIABLE_MESS else agreed).append(msg.data)
        assert agreed == [b"a %02d" % i for i in range(0, 40, 2)], "AGREED: all, in order"
        assert len(unreliable) == len(set(unreliable)) and set(unreliable) <= sent_unreliable, \
            "UNRELIABLE: each at most once, none made up (at %s: %s)" % (m.private_group,
                                                                        unreliable)
        assert unreliable, "not one UNRELIABLE message reached %s" % m.private_group
    for m in receivers:
        m.disconnect()


def stop_d3_during_traffic(procs, tmp_path, stop_d3, traffic_before_s):
    """Three daemons, a client on each in group demo, a sender flooding from d1; then
    stop_d3(process). Returns the ring, the clients, what the survivors a and b received until
    their new membership (checked: REG_MEMB CAUSED_BY_NETWORK with one vs_set, one TRANSITION
    before it), the index of that TRANSITION in each, and how long a waited."""
    conf, port, ips, daemons = start_ring(procs, tmp_path)
    a, b, c = (connect(port, ip, user) for ip, user in zip(ips, ("alice", "bob", "carol")))
    join_all([a, b, c], "demo", [a.private_group, b.private_group, c.private_group])
    stop = threading.Event()
    errors = []

    def traffic():
        try:
            with connect(port, ips[0], "flood", membership=False) as mbox:
                i = 0
                while not stop.is_set():
                    mbox.multicast(sp.SAFE_MESS if i % 3 == 0 else sp.AGREED_MESS, "demo",
                                   b"m%06d" % i)
                    i += 1
                    time.sleep(0.002)
        except Exception as exc:
            errors.append(repr(exc))

    sender = threading.Thread(target=traffic)
    sender.start()
    time.sleep(traffic_before_s)
    stopped_at = time.monotonic()
    stop_d3(daemons[2])
    survivors = [a.private_group, b.private_group]
    got_a = receive_until(a, members_are(survivors), 20)
    took_s = time.monotonic() - stopped_at
    got_b = receive_until(b, members_are(survivors), 20)
    stop.set()
    sender.join(10)
    assert not errors
    cuts = []
    for got in (got_a, got_b):
        network = got[-1]
        assert network.caused_by == "NETWORK"
        assert network.vs_sets == [survivors]  # both survivors came from the same ring
        trans = [i for i, m in enumerate(got) if getattr(m, "is_membership", False) and m.is_transitional]
        assert len(trans) == 1, "one TRANSITION, before the REG_MEMB"
        cuts.append(trans[0])
    return conf, port, ips, daemons, (a, b, c), (got_a, got_b), cuts, took_s


def test_kill_9_of_a_daemon_during_traffic_then_its_restart(procs, tmp_path):
    conf, port, ips, daemons, (a, b, c), (got_a, got_b), cuts, took_s = stop_d3_during_traffic(
        procs, tmp_path, lambda d3: d3.kill(), 1.0)  # SIGKILL: no goodbye
    # virtual synchrony: a and b delivered the same messages before the TRANSITION, and the
    # same ones between it and the new regular membership
    assert data_of(got_a[:cuts[0]]) == data_of(got_b[:cuts[1]]) and len(data_of(got_a)) > 10
    assert data_of(got_a[cuts[0]:]) == data_of(got_b[cuts[1]:])
    print("kill -9 -> new membership at a client of another daemon after %.2f s" % took_s)
    assert took_s < 10  # generous (the machine is shared); the target of 2 s is in the README
    # restart: the new incarnation joins the ring; its client joins the group
    daemons[2] = start_ring_daemon(procs, conf, "d3", ips[2], port)
    wait_for(lambda: procs.output(daemons[0]).count("installed ring") >= 3, 20)
    time.sleep(0.5)
    c2 = connect(port, ips[2], "carol2")
    c2.join("demo")
    names = [a.private_group, b.private_group, c2.private_group]
    receive_until(a, members_are(names), 20)
    receive_until(c2, members_are(names), 20)
    c2.multicast(sp.AGREED_MESS, "demo", b"back again")
    assert b"back again" in data_of(receive_until(b, lambda m: getattr(m, "data", b"") == b"back again"))
    for m in (a, b, c, c2):
        try:
            m.disconnect()
        except sp.SpreadError:
            pass


def test_ctrl_c_of_a_daemon_tells_the_others_who_change_membership_at_once(procs, tmp_path):
    """SIGINT (Ctrl-C) of d3 during traffic: d3 announces that it leaves (LEAVE, a few copies)
    and exits with status 0; d1 and d2 form the new ring without waiting for token loss, and
    their clients get TRANSITION then REG_MEMB CAUSED_BY_NETWORK, as after a crash. No timing
    assertion: the log must give the leave as the reason, never a token loss."""
    conf, port, ips, daemons, (a, b, c), (got_a, got_b), cuts, took_s = stop_d3_during_traffic(
        procs, tmp_path, lambda d3: d3.send_signal(signal.SIGINT), 0.5)
    assert daemons[2].wait(20) == 0, procs.output(daemons[2])
    assert data_of(got_a) == data_of(got_b)  # virtual synchrony, as after a crash
    with pytest.raises(sp.SpreadError):  # d3's clients are cut off, as before
        receive_until(c, lambda m: False, 20)
    for d in daemons[:2]:
        log = procs.output(d)
        assert "d3 is leaving (stopped by its operator)" in log, log[-2000:]
        assert "token lost" not in log, log[-2000:]
    out3 = procs.output(daemons[2])
    assert "SIGINT (Ctrl-C): leaving the ring" in out3 and "-> LEFT: stopped by its operator" in out3
    print("Ctrl-C -> new membership at a client of another daemon after %.4f s" % took_s)
    for m in (a, b):
        m.disconnect()


def test_group_membership_across_daemons_join_leave_disconnect(procs, tmp_path):
    conf, port, ips, daemons = start_ring(procs, tmp_path)
    a = connect(port, ips[0], "ann")
    b = connect(port, ips[1], "ben")
    a.join("g")
    receive_until(a, members_are([a.private_group]))
    b.join("g")
    both = [a.private_group, b.private_group]
    msg = receive_until(a, members_are(both))[-1]
    assert msg.caused_by == "JOIN" and msg.changed_members == [b.private_group]
    assert sp.equal_group_ids(msg.group_id, receive_until(b, members_are(both))[-1].group_id)
    b.disconnect()
    gone = receive_until(a, members_are([a.private_group]))[-1]
    assert gone.caused_by == "DISCONNECT"
    a.disconnect()


@pytest.mark.netns(needs=["nft"])
def test_three_daemons_on_namespace_hosts_with_10_percent_loss(procs, tmp_path, labnet):
    lab = labnet(3)
    hosts = [1, 2, 3]
    ips = [lab.ip(h) for h in hosts]
    conf, port = write_conf(tmp_path, ips)
    daemons = []
    for i, ip in enumerate(ips):
        log = open(str(tmp_path / ("d%d.log" % (i + 1))), "w")
        daemons.append(lab.popen(hosts[i], [sys.executable, "spread_mini.py", "daemon", "-c", conf, "--name",
                                     "d%d" % (i + 1), "--status-every", "0", "--no-unix"],
                                 cwd=str(ROOT), stdout=log, stderr=log))
    for h in hosts:
        lab.set_loss(h, 10)
    time.sleep(3)
    # clients run inside the namespaces too: a small script per host
    script = tmp_path / "client.py"
    script.write_text(CLIENT_SCRIPT % str(ROOT))
    outs = []
    for h in range(3):
        outs.append(lab.popen(hosts[h], [sys.executable, str(script), str(port), ips[h], "u%d" % h,
                                  str(tmp_path / ("out%d.txt" % h))]))
    for p in outs:
        p.wait(120)
    assert all((tmp_path / ("out%d.txt" % h)).exists() for h in range(3)), [
        (tmp_path / ("d%d.log" % (i + 1))).read_text()[-2000:] for i in range(3)]
    results = [(tmp_path / ("out%d.txt" % h)).read_text().split("\n") for h in range(3)]
    for d in daemons:
        d.kill()
    logs = [(tmp_path / ("d%d.log" % (i + 1))).read_text()[-3000:] for i in range(3)]
    assert all(r[0] == "ok" for r in results), (results, logs)
    assert results[0][1:] == results[1][1:] == results[2][1:], "one order at every host"
    assert len(results[0]) - 1 == 3 * 50


# Both client scripts start alike: connect to the daemon at ip, retrying while it starts.
CONNECT_PRELUDE = r'''
import sys, time
sys.path.insert(0, %r)
import spread_mini as sp
port, ip, user, out = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
deadline = time.monotonic() + 60
while True:
    try:
        m = sp.connect("%%d@%%s" %% (port, ip), user, 0, True)
        break
    except sp.SpreadError:
        if time.monotonic() > deadline:
            raise
        time.sleep(0.3)
'''


CLIENT_SCRIPT = CONNECT_PRELUDE + r'''
m.join("lab")
while True:  # wait until the three users are in the group
    msg = m.receive(timeout=60)
    if msg.is_membership and msg.is_regular and len(msg.members) == 3:
        break
for i in range(50):
    m.multicast(sp.AGREED_MESS, "lab", b"%%s %%03d" %% (user.encode(), i))
got = []
while len(got) < 150:
    msg = m.receive(timeout=60)
    if msg is None:
        break
    if not msg.is_membership:
        got.append(msg.data.decode())
open(out, "w").write("\n".join(["ok" if len(got) == 150 else "only %%d" %% len(got)] + got))
'''


PARTITION_CLIENT = CONNECT_PRELUDE + r'''
m.join("lab")
log = open(out, "w")
end = time.monotonic() + float(sys.argv[5])
while time.monotonic() < end:
    msg = m.receive(timeout=0.5)
    if msg is not None and msg.is_membership:
        kind = "TRANS" if msg.is_transitional else "REG %%s" %% msg.caused_by
        log.write("%%s %%s %%s\n" %% (kind, ",".join(sorted(msg.members)),
                                    "|".join(",".join(sorted(s)) for s in (msg.vs_sets or []))))
        log.flush()
'''


@pytest.mark.netns
def test_partition_and_merge_on_namespace_hosts(procs, tmp_path, labnet):
    lab = labnet(3)
    hosts = [1, 2, 3]
    ips = [lab.ip(h) for h in hosts]
    conf, port = write_conf(tmp_path, ips)
    for i, h in enumerate(hosts):
        log = open(str(tmp_path / ("d%d.log" % h)), "w")
        lab.popen(h, [sys.executable, "spread_mini.py", "daemon", "-c", conf, "--name", "d%d" % h,
                      "--status-every", "0", "--no-unix"], cwd=str(ROOT), stdout=log, stderr=log)
    time.sleep(2.5)
    script = tmp_path / "client.py"
    script.write_text(PARTITION_CLIENT % str(ROOT))
    # the clients run until killed at the end (a fixed lifetime ran out on a loaded machine)
    clients = [lab.popen(h, [sys.executable, str(script), str(port), ips[i], "u%d" % h,
                             str(tmp_path / ("c%d.txt" % h)), "300"])
               for i, h in enumerate(hosts)]
    everyone = "#u1#d1,#u2#d2,#u3#d3"

    def text(h):
        path = tmp_path / ("c%d.txt" % h)
        return path.read_text() if path.exists() else ""

    def files():
        return {h: text(h) for h in hosts}

    wait_for(lambda: all(everyone in text(h) for h in hosts), 30)
    lab.cut(3)
    wait_for(lambda: "REG NETWORK #u1#d1,#u2#d2 " in text(1), 30)
    wait_for(lambda: "REG NETWORK #u3#d3 " in text(3), 30)
    lab.heal(3)
    # Right after the link comes back the hosts re-learn each other's addresses (ARP): a daemon
    # may hear the others before they hear it, and the merge may then take two or three
    # configurations (seen: {d1,d2} -> {d1,d3} + {d2} -> {d1,d2,d3}). Extended virtual synchrony
    # allows that; what must hold is checked below on whatever sequence arrived.
    wait_for(lambda: all(last_regular(text(h)).startswith("REG NETWORK %s " % everyone) for h in hosts),
             30)
    for c in clients:
        c.kill()
    logs = files()
    for h in hosts:
        check_membership_sequence(logs[h].splitlines(), "#u%d#d%d" % (h, h), logs)
    lines = logs[1].splitlines()
    assert lines.index("TRANS  ") < lines.index("REG NETWORK #u1#d1,#u2#d2 #u1#d1,#u2#d2"), logs


def last_regular(text):
    regular = [line for line in text.splitlines() if line.startswith("REG ")]
    return regular[-1] if regular else ""


def check_membership_sequence(lines, me, logs):
    """EVS at one client, from its log lines ("REG CAUSE members vs_sets" / "TRANS"): every
    network change comes after a TRANS; the vs_sets split the new members; my own vs_set is the
    members of my previous configuration that came along with me, so it lies within it."""
    previous = None
    after_trans = False
    for line in lines:
        if line.startswith("TRANS"):
            after_trans = True
            continue
        _, cause, members, vs_sets = (line.split(" ") + [""])[:4]
        members = set(members.split(","))
        sets = [set(s.split(",")) for s in vs_sets.split("|")] if vs_sets else []
        if cause == "NETWORK":
            assert after_trans, ("a NETWORK change without a TRANS before it", me, logs)
            assert set().union(*sets) == members and sum(map(len, sets)) == len(members), (line, logs)
            mine = [s for s in sets if me in s]
            assert len(mine) == 1 and previous is not None and mine[0] <= previous, (me, line, logs)
        previous = members
        after_trans = False


def test_a_flooding_client_is_slowed_down_not_dropped(procs, tmp_path):
    """More messages than the ring's send queue holds (20,000): the daemon stops reading the
    client while the ring catches up (TCP pushes back); nothing is lost. (The receiver, a Python
    thread beside the sender, may fall behind: its daemon lets it queue up to 100,000.)"""
    conf, port, ips, daemons = start_ring(procs, tmp_path, extra=("--max-session-messages", "100000"))
    r = connect(port, ips[2], "rcv")
    r.join("flood")
    receive_until(r, members_are([r.private_group]))
    count = 25000
    got = []

    def receive_all():  # the receiver keeps reading (a slow one would be cut off at 1000)
        while len(got) < count:
            msg = r.receive(timeout=30)
            if msg is None:
                return
            if not msg.is_membership:
                got.append(msg.data)

    reader = threading.Thread(target=receive_all)
    reader.start()
    with connect(port, ips[0], "snd", membership=False) as s:
        for i in range(count):
            s.multicast(sp.AGREED_MESS, "flood", b"%06d" % i)
        reader.join(120)
    assert len(got) == count, "only %d of %d messages arrived" % (len(got), count)
    assert got == [b"%06d" % i for i in range(count)]
    assert "refused" not in procs.output(daemons[0])
    r.disconnect()


def test_a_stopped_daemon_comes_back_and_merges(procs, tmp_path):
    """SIGSTOP d3 longer than the token timeout (like a long pause of a loaded machine): d1 and
    d2 go on without it; after SIGCONT its stale ring is gone, it merges back, its client with
    it."""
    import signal
    conf, port, ips, daemons = start_ring(procs, tmp_path)
    a, c = connect(port, ips[0], "ann"), connect(port, ips[2], "cid")
    join_all([a, c], "g", [a.private_group, c.private_group])
    daemons[2].send_signal(signal.SIGSTOP)
    try:
        receive_until(a, members_are([a.private_group]), 20)
    finally:
        daemons[2].send_signal(signal.SIGCONT)
    receive_until(a, members_are([a.private_group, c.private_group]), 20)
    c.multicast(sp.SAFE_MESS, "g", b"still here")
    assert receive_until(a, lambda m: getattr(m, "data", b"") == b"still here", 20)
    for m in (a, c):
        m.disconnect()


def test_status_table_shows_the_ring(procs, tmp_path):
    conf, port, ips, daemons = start_ring(procs, tmp_path, extra=("--status-every", "1"))
    # d2's first tables may come before d3 is up (the daemons start one after the other, and a
    # loaded machine can take over a second per start): wait for a table of the whole ring
    def whole_ring_table():
        out = procs.output(daemons[1])
        return "RING d2" in out and ": d1, d2, d3" in out.split("RING d2")[-1]

    wait_for(whole_ring_table, 30)
    text = procs.output(daemons[1])
    for needle in ("RING d2", "OPERATIONAL", "d1, d2, d3", "per second", "windows global / personal",
                   "membership changes", "held in state exchange (peak)"):
        assert needle in text, needle


def test_a_daemon_restarted_with_its_clock_set_back_joins(procs, tmp_path):
    """d2 restarts with incarnation 1000 (its start time in ms, as if its clock said 1970): far
    below the one d1 and d3 remember. They tell it; it takes a newer one and joins; its
    client's group spans the three daemons again."""
    conf, port, ips, daemons = start_ring(procs, tmp_path)
    a = connect(port, ips[0], "ann")
    daemons[1].kill()
    wait_for(lambda: "d2#" not in last_ring_line(procs.output(daemons[0])) and
             procs.output(daemons[0]).count("installed ring") >= 2, 20)
    daemons[1] = start_ring_daemon(procs, conf, "d2", ips[1], port, ("--incarnation", "1000"))
    wait_for(lambda: "d2#" in last_ring_line(procs.output(daemons[0])), 20)
    out = procs.output(daemons[1])
    assert "incarnation 1000 is older than what the others know" in out
    taken = int(out.split("Taking incarnation ", 1)[1].split()[0])
    assert taken > 1000
    b = connect(port, ips[1], "ben")
    join_all([a, b], "g", [a.private_group, b.private_group])
    b.multicast(sp.AGREED_MESS, "g", b"back from 1970")
    assert receive_until(a, lambda m: getattr(m, "data", b"") == b"back from 1970", 20)
    for m in (a, b):
        m.disconnect()


# ---- bad starts, other teams' traffic, the status table of a real daemon -------------------

def test_status_table_reaches_a_file_with_a_rate_and_the_ring(procs, tmp_path):
    """The status table is printed when stdout is a file (not a terminal), and its rotations per
    second is a rate over the last period, not the total since the start."""
    conf, port = write_conf(tmp_path, ["127.0.0.1", "127.0.0.2"])
    d1 = start_ring_daemon(procs, conf, "d1", "127.0.0.1", port, extra=("--status-every", "1"))
    start_ring_daemon(procs, conf, "d2", "127.0.0.2", port)
    wait_for(lambda: procs.output(d1).count("RING d1") >= 3 and "d1, d2" in procs.output(d1), 40)
    text = procs.output(d1)
    rates = [int(line.split("(")[1].split()[0]) for line in text.splitlines()
             if "token rotations" in line and "per second" in line]
    totals = [int(line.split("│")[2].split()[0]) for line in text.splitlines()
              if "token rotations" in line and "per second" in line]
    assert len(rates) >= 3 and totals[-1] > totals[0]
    assert rates[-1] < totals[-1]  # a rate of about one second, not the running total
    for label in ("ring", "windows global / personal", "membership changes", "retransmissions",
                  "datagrams from strangers", "change "):
        assert label in text, label


# ---- bad starts and other teams' traffic ---------------------------------------------------------

def test_the_same_daemon_started_twice_is_told_so(procs, tmp_path):
    conf, port = write_conf(tmp_path, ["127.0.0.1", "127.0.0.2"])
    start_ring_daemon(procs, conf, "d1", "127.0.0.1", port)
    out = run_daemon_cli("-c", conf, "--name", "d1", "--no-unix", "--status-every", "0")
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert "is daemon d1 already running" in out.stderr and out.stderr.count("\n") == 1, out.stderr


def test_a_client_port_in_use_names_the_tcp_socket(tmp_path):
    conf, port = write_conf(tmp_path, ["127.0.0.1", "127.0.0.2"])
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.2", port))
        squatter.listen(1)
        out = run_daemon_cli("-c", conf, "--name", "d2", "--no-unix", "--status-every", "0")
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert "cannot listen for clients on 127.0.0.2:%d/tcp" % port in out.stderr, out.stderr


def test_other_teams_datagrams_are_counted_and_the_log_stays_short(procs, tmp_path):
    conf, port = write_conf(tmp_path, ["127.0.0.1", "127.0.0.2"])
    d1 = start_ring_daemon(procs, conf, "d1", "127.0.0.1", port, extra=("--status-every", "2"))
    start_ring_daemon(procs, conf, "d2", "127.0.0.2", port)
    wait_for(lambda: "installed ring" in procs.output(d1) and "d2#" in procs.output(d1).split("installed ring")[-1], 30)
    junk = [bytes([i % 251]) * (i % 300) for i in range(300)] + [b"SMRG\x01\x02" + b"\x00" * 40] * 100
    for source in ("127.0.0.9", "127.0.0.2"):  # a stranger, and a wrong port on a daemon's address
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind((source, 0))
            for data in junk:
                s.sendto(data, ("127.0.0.1", port))
    wait_for(lambda: "more lines about dropped packets not shown" in procs.output(d1), 40)
    text = procs.output(d1)
    assert text.count("dropped a packet from") <= sp.RING_GARBAGE_LINES_PER_PERIOD
    assert text.count("which is not a daemon of the configuration") == 1
    wait_for(lambda: "400 (not from a daemon" in procs.output(d1), 30)
    assert d1.poll() is None and "Traceback" not in procs.output(d1)
    # the ring still works: a message from a client of d2 reaches a client of d1
    from ring_helpers import connect
    with connect(port, "127.0.0.1", "a") as a, connect(port, "127.0.0.2", "b") as b:
        a.join("audit")
        wait_for(lambda: a.receive(timeout=0.2) is not None, 20)
        b.multicast(sp.AGREED_MESS, "audit", b"still here")
        got = []
        wait_for(lambda: got.append(a.receive(timeout=0.2)) or any(
            m is not None and not m.is_membership and m.data == b"still here" for m in got), 20)


def test_a_daemon_whose_address_is_not_here_is_told_so(tmp_path):
    """A file written for the namespace lab (10.99.0.x) run on the host: nothing is bound or
    sent, one line says why."""
    conf, port = write_conf(tmp_path, ["10.99.250.1", "10.99.250.2"])
    out = run_daemon_cli("-c", conf, "--name", "d1", "--no-unix", "--status-every", "0")
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert "10.99.250.1 is not an address of this machine" in out.stderr, out.stderr


def test_max_session_messages_of_the_file_and_the_command_line_that_overrides_it(procs, tmp_path):
    from spread_helpers import port_open
    from ring_helpers import free_ring_port
    port = free_ring_port(["127.0.0.1"])
    conf = tmp_path / "spread.conf"
    conf.write_text("Spread_Segment 127.0.0.255:%d {\n  solo 127.0.0.1\n}\nMaxSessionMessages = 7\n" % port)
    first = procs.start("spread_mini.py", "daemon", "-c", str(conf), "--no-unix", "--status-every", "0")
    wait_for(lambda: "queued messages per session" in procs.output(first), 15)
    assert "max 7 queued messages per session" in procs.output(first)
    assert "configuration: using MaxSessionMessages = 7" in procs.output(first)
    first.terminate()
    first.wait(15)
    wait_for(lambda: not port_open(port), 15)
    second = procs.start("spread_mini.py", "daemon", "-c", str(conf), "--no-unix", "--status-every", "0",
                         "--max-session-messages", "50")
    wait_for(lambda: "queued messages per session" in procs.output(second), 15)
    assert "max 50 queued messages per session" in procs.output(second)


def test_daemons_of_the_original_ring_and_the_accelerated_ring_keep_apart(procs, tmp_path):
    """AcceleratedRing from spread.conf, as in Spread 5: d1 and d2 run the original ring, d3
    (the same file but for that line) the accelerated one. d3 is refused as a daemon of another
    configuration; d1 and d2 carry messages between their clients."""
    ips = ["127.0.0.1", "127.0.0.2", "127.0.0.3"]
    conf, port = write_conf(tmp_path, ips)
    text = open(conf).read()
    with open(conf, "a") as f:
        f.write("AcceleratedRing = false\n")
    other = tmp_path / "accelerated.conf"
    other.write_text(text + "AcceleratedRing = true\nAcceleratedWindow = 10\n")
    d1 = start_ring_daemon(procs, conf, "d1", ips[0], port)
    d2 = start_ring_daemon(procs, conf, "d2", ips[1], port)
    d3 = start_ring_daemon(procs, str(other), "d3", ips[2], port)
    wait_for(lambda: all("installed ring" in procs.output(p) and "d2#" in last_ring_line(procs.output(p))
                         for p in (d1, d2)), 20)
    wait_for(lambda: "packets from d3 at 127.0.0.3" in procs.output(d1)
             and "come from a different configuration" in procs.output(d1), 10)
    assert "ring protocol: original" in procs.output(d1)
    assert "ring protocol: accelerated (up to 10 packets" in procs.output(d3)
    assert "d3#" not in last_ring_line(procs.output(d1))
    with connect(port, ips[1], "rcv") as rcv, connect(port, ips[0], "snd", membership=False) as snd:
        rcv.join("plain")
        receive_until(rcv, members_are([rcv.private_group]))
        for i in range(50):
            snd.multicast(sp.AGREED_MESS, "plain", b"m%02d" % i)
        got = receive_until(rcv, lambda m: getattr(m, "data", b"") == b"m49")
        assert data_of(got) == [b"m%02d" % i for i in range(50)]
