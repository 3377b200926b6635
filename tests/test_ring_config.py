"""The ring's configuration: a lab's spread.conf in Spread 4 syntax (one clear error naming
the line for a bad file), the settings it carries, the command line's one-line errors, and the
configuration stamp that keeps daemons of different files from disturbing each other's ring;
the warning for a configuration beyond loopback without a key."""
from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import spread_mini as sr
from ring_helpers import run_daemon_cli

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "data")
PEERS = ["d1", "d2", "d3"]


def a_join(sender=("d2", 7), seal=None):
    return sr.encode_ring_join(sr.RingJoin(sender, 0, [sender], []), seal)


# ---- spread.conf: the syntax of Spread 4 -----------------------------------------------------------

def test_the_spread4_sample_layout_is_accepted_and_its_settings_sorted():
    conf = sr.load_spread_conf(os.path.join(DATA, "spread4_sample.conf"))
    assert conf.daemon_order() == ["d1", "d2", "d3"]
    assert [(d.ip, d.port) for d in conf.daemons] == [("127.0.0.%d" % i, 4803) for i in (1, 2, 3)]
    assert conf.used == {"MaxSessionMessages": 5000, "Window": 200, "PersonalWindow": 40,
                         "AcceleratedRing": 0, "AcceleratedWindow": 20}
    expected_ignored = [s for s in sr.SPREAD4_SETTINGS if s not in sr.USED_SETTINGS and s != "VirtualID"]
    assert sorted(conf.ignored) == sorted(expected_ignored)  # every keyword of Spread 4's grammar
    assert conf.unknown == []
    lines = conf.summary_lines()
    assert len(lines) == 2 and "Window = 200" in lines[0] and "DaemonUser" in lines[1]
    assert "AcceleratedRing = false, AcceleratedWindow = 20" in lines[0]


def test_interface_blocks_several_segments_and_address_only_daemons():
    conf = sr.load_spread_conf(os.path.join(DATA, "spread4_lab.conf"))
    assert conf.daemon_order() == ["d1", "d2", "d3", "10.99.0.4", "d5", "d6"]
    d2 = conf.find("d2")
    assert d2.interfaces == [("D", "127.0.0.2"), ("C", "127.0.0.12"), ("M", "127.0.0.22")]
    assert d2.client_addresses() == ["127.0.0.12"] and d2.port == 4903
    assert conf.find("d3").interfaces == [("DC", "127.0.0.3")]  # `D C addr`: two letters, one address
    assert conf.find("10.99.0.4").ip == "10.99.0.4" and conf.find("d6").port == 4803
    assert [s.address for s in conf.segments] == ["127.0.0.255", "10.99.0.255"]


def test_quotes_protect_braces_and_hashes_and_comments_follow_anything():
    conf = sr.parse_spread_conf(
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
    ("Spread_Segment 127.0.0.255:4803 {\n d1 127.0.0.1\n}\nAcceleratedRing = maybe\n",
     r"line 4: AcceleratedRing = maybe: give true or false"),
    ("Spread_Segment 127.0.0.255:4803 {\n d1 127.0.0.1\n}\nAcceleratedWindow = -1\n",
     r"line 4: AcceleratedWindow = -1: give a whole number of 0 or more"),
    ("Spread_Segment 127.0.0.255:4803 {\n d1 127.0.0.1\n}\nPersonalWindow = 20\nAcceleratedWindow = 21\n",
     r"AcceleratedWindow \(21\) is larger than the personal window \(20 packets"),
    ("Spread_Segment 127.0.0.255:4803 {\n d1 127.0.0.1\n}\nWindow = 30\nAcceleratedWindow = 31\n",
     r"AcceleratedWindow \(31\) is larger than the personal window \(30 packets"),
    ("Spread_Segment 127.0.0.255:4803 {\n d1 127.0.0.1\n\n", r"line 3 \(end of file\): expected '}'"),
    ("Spread_Segment 127.0.0.255:4803\n d1 127.0.0.1\n}\n", r"line 2: expected '\{' after the segment address, got 'd1'"),
])
def test_a_bad_file_is_one_error_that_names_the_line(text, message):
    with pytest.raises(sr.ConfigError, match=message):
        sr.parse_spread_conf(text)


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
    conf = sr.parse_spread_conf("Spread_Segment 127.0.0.255:4803 {\n d1 127.0.0.1\n d2 127.0.0.2\n}\n"
                                "Window = 90\nPersonalWindow = 30\n")
    settings = sr.ring_settings_of(conf, sr.LAN_PACKET_BYTES)
    assert (settings.global_window_packets, settings.personal_window_packets) == (90, 30)
    only_window = sr.parse_spread_conf("Spread_Segment 127.0.0.255:4803 { d1 127.0.0.1 }\nWindow = 60\n")
    settings = sr.ring_settings_of(only_window, sr.LAN_PACKET_BYTES)  # the default personal window (200) would exceed it
    assert (settings.global_window_packets, settings.personal_window_packets) == (60, 60)
    default = sr.ring_settings_of(sr.parse_spread_conf("Spread_Segment 127.0.0.255:4803 { d1 127.0.0.1 }"),
                                  sr.LAN_PACKET_BYTES)
    assert (default.global_window_packets, default.personal_window_packets) == (
        sr.RingSettings().global_window_packets, sr.RingSettings().personal_window_packets)



def test_settings_change_only_by_name_and_a_misspelt_one_is_an_error():
    settings = sr.RingSettings(token_timeout_s=1.5)
    assert settings.override(max_rtr_entries=7) is settings
    assert (settings.token_timeout_s, settings.max_rtr_entries) == (1.5, 7)
    with pytest.raises(TypeError, match="unknown ring setting 'windw'"):
        sr.RingSettings(windw=3)
    with pytest.raises(TypeError, match="unknown ring setting 'override'"):
        settings.override(override=None)     # a method is not a setting
    with pytest.raises(TypeError, match="unknown HOP setting 'token_timeout_s'"):
        sr.HopSettings().override(token_timeout_s=1.0)
    # every setting spread.conf may set is a ring setting
    defaults = vars(sr.RingSettings())
    assert all(name in defaults for name, _kind in sr.RING_SETTINGS_OF_FILE.values())


def test_max_session_messages_from_the_command_line_else_the_file_else_the_default():
    conf = sr.parse_spread_conf("Spread_Segment 127.0.0.255:4803 { d1 127.0.0.1 }\nMaxSessionMessages = 7\n")
    plain = sr.parse_spread_conf("Spread_Segment 127.0.0.255:4803 { d1 127.0.0.1 }")

    def limit(argv, config):
        args = sr.build_parser().parse_args(["daemon", *argv])
        return sr.client_limits_of(args, config).max_session_messages
    assert limit(["--max-session-messages", "50"], conf) == 50
    assert limit([], conf) == 7
    assert limit([], plain) == limit([], None) == sr.DEFAULT_MAX_SESSION_MESSAGES

def test_the_ring_protocol_comes_from_the_file_as_in_spread5():
    segment = "Spread_Segment 127.0.0.255:4803 {\n d1 127.0.0.1\n d2 127.0.0.2\n}\n"
    default = sr.ring_settings_of(sr.parse_spread_conf(segment), sr.LAN_PACKET_BYTES)
    assert (default.accelerated_ring, default.accelerated_window_packets) == (
        sr.RingSettings().accelerated_ring, sr.RingSettings().accelerated_window_packets)
    off = sr.ring_settings_of(sr.parse_spread_conf(segment + "AcceleratedRing = NO\n"), sr.LAN_PACKET_BYTES)
    assert off.accelerated_ring is False
    on = sr.ring_settings_of(sr.parse_spread_conf(segment + "AcceleratedRing = yes\nAcceleratedWindow = 0\n"),
                         sr.LAN_PACKET_BYTES)
    assert (on.accelerated_ring, on.accelerated_window_packets) == (True, 0)
    # a window larger than the personal one is refused only when the ring is accelerated
    sr.parse_spread_conf(segment + "AcceleratedRing = false\nPersonalWindow = 5\nAcceleratedWindow = 9\n")
    # the default window stays within a smaller PersonalWindow of the file
    small = sr.ring_settings_of(sr.parse_spread_conf(segment + "PersonalWindow = 3\n"), sr.LAN_PACKET_BYTES)
    assert small.accelerated_window_packets == 3


def test_a_ring_on_one_machine_sends_bigger_packets_with_windows_of_as_many_bytes():
    """All daemons on 127.0.0.0/8: loopback packets; any other address: LAN packets; the option
    wins. Window and PersonalWindow count LAN packets: bigger ones make fewer of them."""
    local = sr.parse_spread_conf("Spread_Segment 127.0.0.255:4803 {\n d1 127.0.0.1\n d2 127.0.0.2\n}\n"
                                 "Window = 160\nPersonalWindow = 40\n")
    lan = sr.parse_spread_conf("Spread_Segment 10.0.0.255:4803 {\n d1 127.0.0.1\n d2 10.0.0.2\n}\n")
    assert sr.ring_packet_bytes(local) == sr.LOOPBACK_PACKET_BYTES > sr.LAN_PACKET_BYTES
    assert sr.ring_packet_bytes(lan) == sr.LAN_PACKET_BYTES
    assert sr.ring_packet_bytes(lan, 5000) == 5000
    big = sr.ring_settings_of(local)
    assert big.max_packet_bytes == sr.LOOPBACK_PACKET_BYTES
    for packets, lan_packets in ((big.global_window_packets, 160), (big.personal_window_packets, 40)):
        assert packets * big.max_packet_bytes <= lan_packets * sr.LAN_PACKET_BYTES
        assert (packets + 1) * big.max_packet_bytes > lan_packets * sr.LAN_PACKET_BYTES
    assert big.accelerated_window_packets <= big.personal_window_packets
    assert sr.ring_settings_of(lan).max_packet_bytes == sr.RingSettings().max_packet_bytes
    # the most a file allows still leaves a window of one packet
    tiny = sr.ring_settings_of(sr.parse_spread_conf("Spread_Segment 127.0.0.255:4803 { d1 127.0.0.1 }\n"
                                                    "Window = 1\n"), sr.PACKET_BYTES_MAX)
    assert (tiny.global_window_packets, tiny.personal_window_packets) == (1, 1)
    # the size is in the configuration stamp: daemons of two sizes refuse each other
    daemons = [("d1", "127.0.0.1", 4803), ("d2", "127.0.0.2", 4803)]
    assert sr.configuration_stamp(daemons, big) != sr.configuration_stamp(
        daemons, sr.ring_settings_of(local, sr.LAN_PACKET_BYTES))


@pytest.mark.parametrize("value", ["1399", "65001", "big"])
def test_packet_bytes_out_of_range_is_refused_with_one_line(value, tmp_path):
    path = tmp_path / "spread.conf"
    path.write_text("Spread_Segment 127.0.0.255:4803 {\n d1 127.0.0.1\n d2 127.0.0.2\n}\n")
    out = run_daemon_cli("-c", str(path), "--name", "d1", "--no-unix", "--packet-bytes", value)
    assert out.returncode == 2 and "--packet-bytes" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr + out.stdout


def test_daemons_of_the_two_ring_protocols_refuse_each_other():
    """Spread 5: "daemons can only communicate with daemons that run the same protocol". The
    settings are in the configuration stamp: a packet of the other protocol is dropped."""
    daemons = [("d1", "127.0.0.1", 4803), ("d2", "127.0.0.2", 4803)]
    accelerated = sr.RingSeal(None, sr.configuration_stamp(daemons, sr.RingSettings(accelerated_ring=True)))
    original = sr.RingSeal(None, sr.configuration_stamp(daemons, sr.RingSettings(accelerated_ring=False)))
    assert accelerated.stamp != original.stamp
    with pytest.raises(sr.RingConfigurationError):
        sr.decode_ring_packet(a_join(seal=original), accelerated)


CONF_WORDS = st.sampled_from([
    "Spread_Segment", "127.0.0.255:4803", "239.1.1.1", "{", "}", ";", "=", "d1", "d2", "127.0.0.1",
    "127.0.0.2", "127.0.0.1:4803", "::1", "D", "C", "M", "DC", "#", "//", "\n", '"', "'", '"a b"',
    "'{x}'", "Window", "PersonalWindow", "MaxSessionMessages", "0", "60", "15", "-3", "EventTimeStamp",
    "ActiveIPVersion", "IPv6", "DebugFlags", "!ALL", "Windw", "300.1.1.1", "x" * 25, "\0", "é",
    "RouteMatrix", "LinkProtocol", "Hop", "250", "1 1", "AcceleratedRing", "AcceleratedWindow",
    "true", "no", "400"])


@settings(max_examples=400, deadline=None)
@given(st.lists(CONF_WORDS, max_size=40))
def test_any_word_soup_gives_a_config_or_one_config_error(words):
    try:
        conf = sr.parse_spread_conf(" ".join(words))
    except sr.ConfigError as exc:
        assert str(exc) and "\n" not in str(exc)
    else:
        assert conf.daemons and len(set(conf.daemon_order())) == len(conf.daemons)
        assert len({(d.ip, d.port) for d in conf.daemons}) == len(conf.daemons)
        sr.ring_settings_of(conf)
        conf.summary_lines()
        assert [len(row) for row in conf.site_costs()] == [len(conf.segments)] * len(conf.segments)


def test_a_configuration_beyond_loopback_without_a_key_is_warned_about_once():
    lan = sr.parse_spread_conf("Spread_Segment 239.255.4.3:4803 {\n d1 10.99.0.1\n d2 10.99.0.2\n}\n")
    local = sr.parse_spread_conf("Spread_Segment 239.255.4.3:4803 {\n d1 127.0.0.1\n d2 127.0.0.2\n}\n")
    lines = sr.unkeyed_lan_warning(lan)
    assert "10.99.0.1, 10.99.0.2" in lines[0] and "anyone on the LAN" in lines[0]
    assert "keygen" in lines[1] and "--key" in lines[1]
    assert sr.unkeyed_lan_warning(local) == []


# ------------------------------------------------------------------ the configuration stamp

THREE = [("d1", "127.0.0.1", 4803), ("d2", "127.0.0.2", 4803), ("d3", "127.0.0.3", 4803)]


def test_what_differs_between_two_configurations_is_said():
    ours = sr.configuration_stamp(THREE)
    assert sr.stamp_difference(sr.configuration_stamp(THREE[:2]), ours) == \
        "it lists 2 daemons, we list 3"
    moved = THREE[:2] + [("d3", "127.0.0.9", 4803)]
    assert "addresses" in sr.stamp_difference(sr.configuration_stamp(moved), ours)
    tuned = sr.configuration_stamp(THREE, sr.RingSettings(personal_window_packets=7))
    assert sr.stamp_difference(tuned, ours).startswith("other ring settings")
    assert sr.configuration_stamp(list(reversed(THREE))) == ours  # the order of the file is not it


def test_packets_of_another_configuration_never_change_membership_and_are_logged_once_a_minute():
    ours = sr.RingSeal(None, sr.configuration_stamp(THREE))
    theirs = sr.RingSeal(None, sr.configuration_stamp(THREE[:2]))
    o = sr.RingOrderer("d1", 1, PEERS, seal=ours)
    for i in range(2600):  # a join every 50 ms for 130 s
        t = i * 0.05
        o.receive(a_join(("d2", 7), theirs), ("127.0.0.2", 4803), t)
        o.tick(t)
    lines = [line for line in o.log if "different configuration" in line]
    assert len(lines) == 3, lines  # at once, after a minute, after two
    assert "d2 at 127.0.0.2:4803" in lines[0] and "it lists 2 daemons, we list 3" in lines[0]
    assert o.counters["dropped_different_configuration"] == 2600
    assert o.counters["joins_received"] == 0 and ("d2", 7) not in o.proc_set


# ---- sites: RouteMatrix and LinkProtocol (each Spread_Segment is a site) -------------------------

THREE_SITES = ("Spread_Segment 127.0.0.255:4803 {\n a 127.0.0.1\n}\n"
               "Spread_Segment 127.0.1.255:4804 {\n b 127.0.1.1\n}\n"
               "Spread_Segment 127.0.2.255:4805 {\n c 127.0.2.1\n c2 127.0.2.2\n}\n")


def test_route_matrix_rows_are_the_costs_from_each_site_in_file_order():
    conf = sr.parse_spread_conf(THREE_SITES + "LinkProtocol = Hop\nRouteMatrix {\n"
                                " 0 5 20\n 5 0 7   # comments may follow a row\n 20 7 0\n}\n")
    assert conf.site_costs() == [[0, 5, 20], [5, 0, 7], [20, 7, 0]]
    assert conf.link_protocol == "Hop" and conf.warnings == [] and conf.unknown == []


def test_without_a_route_matrix_every_pair_of_sites_has_a_direct_link_of_cost_1():
    conf = sr.parse_spread_conf(THREE_SITES)
    assert conf.route_matrix is None
    assert conf.site_costs() == [[0, 1, 1], [1, 0, 1], [1, 1, 0]]


def test_a_cost_over_100_is_clamped_with_a_warning_that_names_the_line():
    conf = sr.parse_spread_conf(THREE_SITES + "RouteMatrix {\n 0 5 250\n 5 0 7\n 20 7 0\n}\n")
    assert conf.site_costs()[0] == [0, 5, 100]
    assert conf.warnings == ["line 12: RouteMatrix cost 250 clamped to 100"]
    assert conf.summary_lines()[0] == "configuration: WARNING: line 12: RouteMatrix cost 250 clamped to 100"


def test_the_matrix_may_come_before_the_segments_and_the_diagonal_is_ignored():
    conf = sr.parse_spread_conf("RouteMatrix {\n 9 3\n 4 9\n}\n" + THREE_SITES.split("Spread_Segment 127.0.2")[0])
    assert conf.site_costs() == [[0, 3], [4, 0]]


@pytest.mark.parametrize("matrix, message", [
    ("RouteMatrix {\n 0 5 20\n 5 0 -7\n 20 7 0\n}\n", r"line 13: RouteMatrix: negative cost -7"),
    ("RouteMatrix {\n 0 5 20\n 5 0 7\n}\n", r"line 11: RouteMatrix has 2 rows for 3 segments"),
    ("RouteMatrix {\n 0 5 20\n 5 0\n 20 7 0\n}\n", r"line 13: RouteMatrix row has 2 costs for 3 segments"),
    ("RouteMatrix {\n 0 5 x\n 5 0 7\n 20 7 0\n}\n", r"line 12: RouteMatrix: 'x' is not a whole number"),
    ("RouteMatrix {\n 0 5 20\n 5 0 7\n 20 7 0\n", r"line 14 \(end of file\): expected '}'"),
    ("RouteMatrix {\n 0 1 1\n 1 0 1\n 1 1 0\n}\nRouteMatrix {\n}\n", r"line 16: a second RouteMatrix \(the first is on line 11\)"),
    ("LinkProtocol = Ring\n", r"line 11: LinkProtocol = Ring: Spread 4 knows Hop and TcpHop"),
])
def test_a_bad_route_matrix_is_one_error_that_names_the_line(matrix, message):
    with pytest.raises(sr.ConfigError, match=message):
        sr.parse_spread_conf(THREE_SITES + matrix)


def test_the_command_line_warns_about_a_clamped_cost_and_still_starts_parsing(tmp_path):
    """A file the real Spread 4.4 accepts (it warns "Cost clamped to 100" and goes on) is a
    file spread_mini accepts: the same warning, no error."""
    path = tmp_path / "spread.conf"
    path.write_text(THREE_SITES + "LinkProtocol = TcpHop\nRouteMatrix {\n 0 1 1\n 1 0 101\n 1 1 0\n}\n")
    conf = sr.load_spread_conf(str(path))
    assert conf.site_costs()[1] == [1, 0, 100] and conf.link_protocol == "TcpHop"
    assert [d.segment for d in conf.daemons] == [0, 1, 2, 2]
