from __future__ import annotations

"""Issue 5 as an instructor and students use it: a lab's existing spread.conf (Spread 4 syntax),
clear one-line errors for bad files and bad starts, the 20 s status table of the ring, and
other teams' datagrams on the ring port."""

import os
import socket
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import spread_mini as sp
from conftest import wait_for
from ring_helpers import start_ring_daemon, write_conf

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
DATA = os.path.join(HERE, "data")


# ---- spread.conf: the syntax of Spread 4 -----------------------------------------------------------

def test_the_spread4_sample_layout_is_accepted_and_its_settings_sorted():
    conf = sp.load_spread_conf(os.path.join(DATA, "spread4_sample.conf"))
    assert conf.daemon_order() == ["d1", "d2", "d3"]
    assert [(d.ip, d.port) for d in conf.daemons] == [("127.0.0.%d" % i, 4803) for i in (1, 2, 3)]
    assert conf.used == {"MaxSessionMessages": 5000, "Window": 200, "PersonalWindow": 40}
    expected_ignored = [s for s in sp.SPREAD4_SETTINGS if s not in sp.USED_SETTINGS and s != "VirtualID"]
    assert sorted(conf.ignored) == sorted(expected_ignored)  # every keyword of Spread 4's grammar
    assert conf.unknown == []
    lines = conf.summary_lines()
    assert len(lines) == 2 and "Window = 200" in lines[0] and "DaemonUser" in lines[1]


def test_interface_blocks_several_segments_and_address_only_daemons():
    conf = sp.load_spread_conf(os.path.join(DATA, "spread4_lab.conf"))
    assert conf.daemon_order() == ["d1", "d2", "d3", "10.99.0.4", "d5", "d6"]
    d2 = conf.find("d2")
    assert d2.interfaces == [("D", "127.0.0.2"), ("C", "127.0.0.12"), ("M", "127.0.0.22")]
    assert d2.client_addresses() == ["127.0.0.12"] and d2.port == 4903
    assert conf.find("d3").interfaces == [("DC", "127.0.0.3")]  # `D C addr`: two letters, one address
    assert conf.find("10.99.0.4").ip == "10.99.0.4" and conf.find("d6").port == 4803
    assert [s.address for s in conf.segments] == ["127.0.0.255", "10.99.0.255"]


def test_quotes_protect_braces_and_hashes_and_comments_follow_anything():
    conf = sp.parse_spread_conf(
        'Spread_Segment 127.0.0.255:4803 { d1 127.0.0.1 } # a comment after the brace\n'
        'EventTimeStamp = "{%H#%M}"   # a quoted value with a brace and a hash\n'
        "RuntimeDir = '/var/run/my spread'\n"
        "Windw = 10\n")
    assert conf.daemon_order() == ["d1"] and conf.ignored == ["EventTimeStamp", "RuntimeDir"]
    assert conf.unknown == ["Windw"] and "a typo?" in conf.summary_lines()[-1]


@pytest.mark.parametrize("text, message", [
    ("Spread_Segment 127.0.0.255:4803 {\n d1 127.0.0.1\n}\n// a C comment\n", r"line 4: .*start with '#'"),
    ("Spread_Segment 127.0.0.255:4803 {\n d1 lab1\n}\n", r"line 2: daemon 'd1' has no address"),
    ("Spread_Segment 127.0.0.255:4803 {\n d1 127.0.0.1\n d2 127.0.0.1\n}\n",
     r"line 3: daemon 'd2' has the address 127.0.0.1:4803 of daemon 'd1' \(line 2\)"),
    ("Spread_Segment 127.0.0.255:4803 {\n d1 127.0.0.1\n d1 127.0.0.2\n}\n", r"line 3: .*twice \(first on line 2\)"),
    ("Spread_Segment 127.0.0.255:4803 {\n d1 127.0.0.1:4803\n}\n", r"line 2: .*has no port"),
    ("Spread_Segment 127.0.0.255:4803 {\n d1 127.0.0.1 { }\n}\n", r"line 2: .*empty interface block"),
    ("Spread_Segment 127.0.0.255:4803 {\n d1 127.0.0.1 { C }\n}\n", r"line 2: expected an interface address"),
    ("Spread_Segment 127.0.0.255:4803 {\n d1 ::1\n}\n", r"line 2: .*IPv4 only"),
    ("Spread_Segment 127.0.0.255:4803 {\n d1 127.0.0.1\n}\nActiveIPVersion = IPv6\n", r"line 4: .*IPv4 only"),
    ("Spread_Segment 127.0.0.255:4803 {\n d1 127.0.0.1\n}\nEventLogFile = \"x.log\n", r"line 4: .*quote"),
    ("Spread_Segment 127.0.0.255:4803 {\n d1 127.0.0.1\n}\nEventLogFile =\n", r"line 4: .*needs a value"),
    ("Spread_Segment 127.0.0.255:4803 {\n d1 127.0.0.1\n}\nDaemonUser\n", r"line 4: 'DaemonUser' needs `= value`"),
    ("Spread_Segment 127.0.0.255:4803 {\n d1 127.0.0.1\n}\nWindow = lots\n", r"line 4: Window = lots"),
    ("Spread_Segment 127.0.0.255:4803 {\n d1 127.0.0.1\n}\nWindow = 10\nPersonalWindow = 20\n",
     r"PersonalWindow \(20\) is larger than Window \(10\)"),
    ("Spread_Segment 127.0.0.255:4803 {\n d1 127.0.0.1\n\n", r"line 3 \(end of file\): expected '}'"),
    ("Spread_Segment 127.0.0.255:4803\n d1 127.0.0.1\n}\n", r"line 2: expected '\{' after the segment address, got 'd1'"),
])
def test_a_bad_file_is_one_error_that_names_the_line(text, message):
    with pytest.raises(sp.ConfigError, match=message):
        sp.parse_spread_conf(text)


def run_daemon_cli(*argv, timeout_s=30):
    return subprocess.run([sys.executable, "spread_mini.py", "daemon", *argv], capture_output=True,
                          text=True, timeout=timeout_s, cwd=ROOT)


@pytest.mark.parametrize("content, message", [
    ("Spread_Segment 127.0.0.255:4803 {\n d1 127.0.0.1\n d1 127.0.0.2\n}\n", "line 3: daemon name 'd1' appears twice"),
    ("Spread_Segment 127.0.0.255:4803 {\n d1 127.0.0.1\n d2 127.0.0.1\n}\n", "line 3: daemon 'd2' has the address"),
    (b"\x7fELF\x00\x00garbage", "binary file"),
    ("Spread_Segment 127.0.0.255:4803 {\n d1 127.0.0.1\n d2 127.0.0.2\n}\n", "daemon 'nope' is not in the configuration"),
])
def test_the_command_line_says_one_line_and_exits_2(tmp_path, content, message):
    path = tmp_path / "spread.conf"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    out = run_daemon_cli("-c", str(path), "--name", "nope" if "nope" in message else "d1", "--no-unix")
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and len(lines) == 1 and message in lines[0], out.stderr
    assert "Traceback" not in out.stderr + out.stdout


def test_windows_and_max_session_messages_come_from_the_file():
    conf = sp.parse_spread_conf("Spread_Segment 127.0.0.255:4803 {\n d1 127.0.0.1\n d2 127.0.0.2\n}\n"
                                "Window = 90\nPersonalWindow = 30\n")
    settings = sp.ring_settings_of(conf)
    assert (settings.global_window_packets, settings.personal_window_packets) == (90, 30)
    only_window = sp.parse_spread_conf("Spread_Segment 127.0.0.255:4803 { d1 127.0.0.1 }\nWindow = 60\n")
    settings = sp.ring_settings_of(only_window)  # the default personal window (200) would exceed it
    assert (settings.global_window_packets, settings.personal_window_packets) == (60, 60)
    default = sp.ring_settings_of(sp.parse_spread_conf("Spread_Segment 127.0.0.255:4803 { d1 127.0.0.1 }"))
    assert (default.global_window_packets, default.personal_window_packets) == (
        sp.RingSettings().global_window_packets, sp.RingSettings().personal_window_packets)


# ---- the status table ----------------------------------------------------------------------------------

def ring_snapshot(**extra):
    orderer = sp.RingOrderer("d1", 1234, ["d1", "d2"], __import__("random").Random(1), sp.RingSettings(), now=0.0)
    snap = orderer.snapshot()
    snap.update(extra)
    return snap


def test_ring_status_rows_show_rate_windows_changes_and_strangers():
    snap = ring_snapshot(rotations_per_s=47.6, datagrams=(120, 118, 7))
    rows = dict(sp.ring_status_rows(snap))
    assert rows["token rotations"].endswith("(48 per second)")
    assert rows["windows global / personal"] == "800 / 200 packets"
    assert rows["datagrams in / out"] == "120 / 118"
    assert rows["datagrams from strangers"].startswith("7 ")
    assert "membership changes" in rows and "retransmissions asked / sent" in rows
    plain = sp.ring_status_rows(ring_snapshot())  # a snapshot without the server's additions
    assert "datagrams in / out" not in dict(plain)


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


def test_the_plain_ring_table_has_the_title_and_every_row(monkeypatch):
    monkeypatch.setattr(sp, "Table", None)  # as where rich is missing
    snap = ring_snapshot(rotations_per_s=3.0, datagrams=(1, 2, 3))
    text = sp.render_ring_status(snap)
    lines = text.splitlines()
    assert lines[0] == "RING d1" and len(lines) == 1 + len(sp.ring_status_rows(snap))
    assert "token rotations" in text and "(3 per second)" in text and "datagrams from strangers" in text


CONF_WORDS = st.sampled_from([
    "Spread_Segment", "127.0.0.255:4803", "239.1.1.1", "{", "}", ";", "=", "d1", "d2", "127.0.0.1",
    "127.0.0.2", "127.0.0.1:4803", "::1", "D", "C", "M", "DC", "#", "//", "\n", '"', "'", '"a b"',
    "'{x}'", "Window", "PersonalWindow", "MaxSessionMessages", "0", "60", "15", "-3", "EventTimeStamp",
    "ActiveIPVersion", "IPv6", "DebugFlags", "!ALL", "Windw", "300.1.1.1", "x" * 25, "\0", "é"])


@settings(max_examples=400, deadline=None)
@given(st.lists(CONF_WORDS, max_size=40))
def test_any_word_soup_gives_a_config_or_one_config_error(words):
    try:
        conf = sp.parse_spread_conf(" ".join(words))
    except sp.ConfigError as exc:
        assert str(exc) and "\n" not in str(exc)
    else:
        assert conf.daemons and len(set(conf.daemon_order())) == len(conf.daemons)
        assert len({(d.ip, d.port) for d in conf.daemons}) == len(conf.daemons)
        sp.ring_settings_of(conf)
        conf.summary_lines()


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
