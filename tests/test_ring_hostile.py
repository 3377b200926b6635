"""The ring on a hostile LAN: the key's tag, the configuration stamp, and datagrams that must not
cut a daemon off (forged, replayed, with counters at the wire's limit).

Tier 1 (cores with a fake clock) and tier 2 (tests/ring_sim.py with hostile packets, with and
without a key); the real processes are in tests/test_ring_real_keys.py.
"""
from __future__ import annotations

import os
import stat

import pytest

import spread_mini as sr
import ring_sim
from ring_sim import Sim, CALM, all_in_one_ring, assert_guarantees, calm_sim, delivered

PEERS = ["d1", "d2", "d3"]
KEY = b"k" * 32


def keyed(key, daemons=(), settings=None):
    return sr.RingSeal(key, sr.configuration_stamp(daemons, settings) if daemons else None)


def a_join(sender=("d2", 7), seal=None):
    return sr.encode_ring_join(sr.RingJoin(sender, 0, [sender], []), seal)


# ------------------------------------------------------------------ the key's tag

def test_a_keyed_packet_round_trips_and_carries_a_16_byte_tag_instead_of_the_crc():
    seal = keyed(KEY)
    raw = a_join(seal=seal)
    assert len(raw) == len(a_join()) - 4 + sr.RING_TAG_BYTES
    assert sr.decode_ring_packet(raw, seal).sender == ("d2", 7)


@pytest.mark.parametrize("sender_seal, receiver_seal, reason", [
    (keyed(b"x" * 32), keyed(KEY), "bad_tag"),      # another key
    (None, keyed(KEY), "no_tag"),                    # no key at all
    (keyed(KEY), None, "unexpected_tag"),            # we have no key, it has one
])
def test_packets_without_a_valid_tag_are_refused_with_their_reason(sender_seal, receiver_seal,
                                                                   reason):
    with pytest.raises(sr.RingWireError) as info:
        sr.decode_ring_packet(a_join(seal=sender_seal), receiver_seal)
    assert info.value.reason == reason


def test_an_altered_keyed_packet_fails_its_tag_even_with_its_checksum_recomputed():
    seal = keyed(KEY)
    raw = bytearray(a_join(seal=seal))
    raw[20] ^= 1
    with pytest.raises(sr.RingWireError) as info:
        sr.decode_ring_packet(bytes(raw), seal)
    assert info.value.reason == "bad_tag"


def test_a_keyed_orderer_counts_refused_packets_by_reason_and_stays_in_its_ring():
    o = sr.RingOrderer("d1", 1, PEERS, seal=keyed(KEY))
    o.receive(a_join(), "d2", 0.1)
    o.receive(a_join(seal=keyed(b"y" * 32)), "d2", 0.1)
    o.receive(b"junk", "d2", 0.1)
    assert (o.counters["dropped_no_tag"], o.counters["dropped_bad_tag"],
            o.counters["dropped_garbage"]) == (1, 1, 1)
    assert o.joins == {} and o.counters["joins_received"] == 0
    rows = dict(sr.ring_status_rows(o.snapshot()))
    assert rows["dropped: no / wrong / unexpected tag"] == "1 / 1 / 0"
    assert rows["daemon key"].startswith("HMAC-SHA256")


def test_a_ring_of_keyed_daemons_forms_and_delivers_in_the_simulator():
    sim = Sim(4, daemons=3, faults=CALM, key=KEY)
    assert sim.run_until(3.0, stop=lambda: all_in_one_ring(sim))
    serial = sim.submit("d1", sr.SAFE_MESS)
    sim.run_until(sim.now + 0.5)
    assert all(serial in delivered(sim, n) for n in PEERS)
    assert_guarantees(sim)


def test_keygen_writes_a_random_key_for_its_owner_only_and_never_overwrites(tmp_path):
    path = str(tmp_path / "ring.key")
    assert sr.main(["keygen", path]) == 0
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    key = sr.read_key_file(path)
    assert len(key) == sr.RING_KEY_BYTES
    assert sr.main(["keygen", path]) == 2
    assert sr.read_key_file(path) == key
    other = str(tmp_path / "other.key")
    sr.write_key_file(other)
    assert sr.read_key_file(other) != key


def test_a_short_or_missing_key_file_is_refused_with_the_way_to_make_one(tmp_path):
    short = tmp_path / "short.key"
    short.write_bytes(b"abc")
    with pytest.raises(ValueError, match="keygen"):
        sr.read_key_file(str(short))
    with pytest.raises(ValueError, match="cannot read"):
        sr.read_key_file(str(tmp_path / "none.key"))


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


# ------------------------------------------------------------------ single datagrams

def membership_changes(sim):
    return sum(len(sim.regular_configs(n)) for n in sim.nodes)


def test_the_forged_join_naming_d1_with_incarnation_2_to_the_53_costs_at_most_one_change():
    """The issue's datagram: a JOIN sent to d1 from d2's address, naming d1 with incarnation
    2**53. d1 took an incarnation that its peers' decoders refuse, and was cut off for good."""
    for sender in (("d2", 1000), ("d1", 2 ** 53)):
        sim = calm_sim()
        before = membership_changes(sim)
        d1 = sim.nodes["d1"][0]
        forged = sr.encode_ring_join(sr.RingJoin(sender, 0, [("d1", 2 ** 53)], []))
        d1.receive(forged, "d2", sim.now)
        sim.drain("d1")
        assert sim.run_until(sim.now + 5.0, stop=lambda: all_in_one_ring(sim) and sim.settled())
        assert d1.me == ("d1", 1000)
        assert membership_changes(sim) - before <= len(sim.nodes), "more than one change each"
        serial = sim.submit("d1", sr.AGREED_MESS)
        sim.run_until(sim.now + 0.5)
        assert all(serial in delivered(sim, n) for n in PEERS)
        assert_guarantees(sim)


def test_a_forged_newer_incarnation_of_a_live_daemon_never_leaves_it_out_for_good():
    """A join that claims to come from d1 with an incarnation d1 cannot outgrow: d3 takes it
    as d1's restart and ignores the real d1; the real d1 keeps sending, the forged one is
    never heard again, so d3 forgets it (INCARNATION_FORGET_S) and the ring is whole again."""
    sim = calm_sim()
    d3 = sim.nodes["d3"][0]
    ghost = ("d1", sr.MAX_WIRE_COUNTER)
    d3.receive(sr.encode_ring_join(sr.RingJoin(ghost, 0, [ghost], [])), "d1", sim.now)
    sim.drain("d3")
    assert sim.run_until(sim.now + 3 * sr.INCARNATION_FORGET_S,
                         stop=lambda: all_in_one_ring(sim) and sim.settled())
    assert sim.nodes["d1"][0].me == ("d1", 1000)
    assert d3.counters["incarnations_forgotten"] == 1
    assert_guarantees(sim)


def test_a_token_replayed_to_a_daemon_it_was_not_sent_to_is_dropped():
    """A sniffer copies every token d1 passes to d2 to d3 at once: d3 has not seen that token
    id yet, and taking it would make two tokens in the ring (two packets with one link_seq)."""
    sim = calm_sim()
    copies = []

    def copy_tokens_to_d3(src, dest, raw):
        if raw[5] == sr.PT_TOKEN and (src, dest) == ("d1", "d2") and len(copies) < 20:
            copies.append(raw)
            sim.push("d3", "d1", raw)
        return False

    sim.drop_rule = copy_tokens_to_d3
    serials = [sim.submit(n, sr.AGREED_MESS) for n in PEERS for _ in range(5)]
    sim.run_until(sim.now + 1.0)
    d3 = sim.nodes["d3"][0]
    assert len(copies) == 20 and d3.counters["dropped_tokens_not_for_us"] == 20
    assert all(set(serials) <= set(delivered(sim, n)) for n in PEERS)
    assert all(len(sim.regular_configs(n)) == 1 for n in PEERS)
    assert_guarantees(sim)


@pytest.mark.parametrize("field", ["token_id", "link_seq", "site_lts"])
def test_a_token_far_ahead_of_the_ring_is_dropped_not_followed(field):
    sim = calm_sim()
    d2 = sim.nodes["d2"][0]
    ring = d2.ring
    values = {"token_id": ring.last_token_id + 1, "link_seq": ring.last_token_seq,
              "site_lts": d2.transport.max_lts_seen}
    values[field] = sr.MAX_WIRE_COUNTER
    tok = sr.RingToken(ring.ring_id, sim.nodes["d1"][0].me, values["token_id"],
                       link_seq=values["link_seq"], link_aru=0, site_lts=values["site_lts"])
    d2.receive(sr.encode_ring_token(tok), "d1", sim.now)
    assert d2.counters["dropped_tokens_far_ahead"] == 1
    serial = sim.submit("d1", sr.AGREED_MESS)
    sim.run_until(sim.now + 1.0)
    assert all(serial in delivered(sim, n) for n in PEERS)
    assert all(len(sim.regular_configs(n)) == 1 for n in PEERS)
    assert_guarantees(sim)


def test_a_join_or_commit_token_with_a_ring_seq_near_the_wire_limit_is_dropped():
    sim = calm_sim()
    d2 = sim.nodes["d2"][0]
    d1 = sim.nodes["d1"][0].me
    join = sr.RingJoin(d1, sr.MAX_WIRE_COUNTER - 1, [d1, d2.me], [])
    d2.receive(sr.encode_ring_join(join), "d1", sim.now)
    assert d2.counters["dropped_ring_seq_far_ahead"] == 1 and d2.state == sr.OPERATIONAL


# ------------------------------------------------------------------ the simulator's hostile packets

@pytest.mark.parametrize("key", [False, True], ids=["without key", "with key"])
def test_replayed_and_forged_packets_keep_every_guarantee(key):
    failures = []
    totals = {}
    for seed in range(1, 13):
        result = ring_sim.run_seed(seed, hostile=0.1, key=key)
        for name, value in result.stats.items():
            totals[name] = totals.get(name, 0) + value
        if result.violations:
            failures.append("%s\n  %s" % (result.summary(),
                                          ring_sim.replay_command(seed, hostile=0.1, key=key)))
    assert not failures, "\n".join(failures)
    assert totals["hostile_replayed"] > 100 and totals["hostile_forged"] > 100
    if key:  # forged ones are refused by their tag (some reach a daemon that is down, or cut off)
        assert totals["dropped_bad_tag"] >= 0.8 * totals["hostile_forged"]
