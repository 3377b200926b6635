"""The HOP link core (thesis 7.3.2.1), one rule per test, with a fake clock (times are plain
floats): DATA/ACK/NACK on the wire, non-blocking delivery, the retransmit list and its NACK
timer, Pkt_cnt_linkack against Max_pkt_btw_ack, the window and the token bucket, the
dead-peer rule, and bad input dropped and counted."""
from __future__ import annotations

import pytest

import spread_mini as sr

A, B = ("a", 1), ("b", 1)


def pair(**settings):
    s = sr.HopSettings(**settings)
    return sr.HopLink(A, B, s), sr.HopLink(B, A, s)


def sent_data(link, payloads, now=0.0):
    """Submit payloads; the DATA datagrams that went out (ACKs left aside)."""
    out = []
    for p in payloads:
        out += [d for d in link.submit(p, now).send if isinstance(sr.decode_hop_packet(d), sr.HopData)]
    return out


def kinds(datagrams):
    return [type(sr.decode_hop_packet(d)).__name__ for d in datagrams]


def test_the_three_packets_round_trip_and_a_ring_packet_is_not_one():
    d = sr.decode_hop_packet(sr.encode_hop_data(A, 7, b"xyz"))
    assert (d.sender, d.seq, d.payload) == (A, 7, b"xyz")
    k = sr.decode_hop_packet(sr.encode_hop_ack(A, 5, 9))
    assert (k.sender, k.link_aru, k.highest_linkseq) == (A, 5, 9)
    n = sr.decode_hop_packet(sr.encode_hop_nack(A, 3, [4, 6, 9]))
    assert (n.link_aru, n.missing) == (3, [4, 6, 9])
    with pytest.raises(sr.RingWireError, match="not a HOP packet"):
        sr.decode_hop_packet(sr.encode_ring_join(sr.RingJoin(A, 0, [A], [])))
    with pytest.raises(sr.RingWireError, match="truncated"):
        raw = sr.encode_hop_nack(A, 3, [4, 6])
        sr.decode_hop_packet(sr.OPEN_SEAL.seal(raw[:-4][:-8]))


def test_each_packet_is_delivered_when_it_first_arrives_not_in_order():
    a, b = pair()
    d1, d2, d3 = sent_data(a, [b"1", b"2", b"3"])
    assert b.datagram(d3, 0.01).deliver == [(3, b"3")]  # 1 and 2 are late: 3 goes up anyway
    assert b.retransmit_list == {1: 0, 2: 0} and b.r_highest_seq == 3 and b.r_link_aru == 0
    assert b.datagram(d1, 0.011).deliver == [(1, b"1")] and b.r_link_aru == 1
    assert b.datagram(d1, 0.012).deliver == [] and b.counters["duplicates"] == 1
    assert b.datagram(d2, 0.013).deliver == [(2, b"2")] and b.r_link_aru == 3 and not b.retransmit_list


def test_a_gap_waits_the_short_timer_then_nacks_every_missing_seq_until_filled():
    a, b = pair(keepalive_s=10, ack_delay_s=10)
    data = sent_data(a, [b"%d" % i for i in range(6)])
    b.datagram(data[0], 0.0)
    b.datagram(data[3], 0.0)
    b.datagram(data[5], 0.0)
    wait, again = b.settings.nack_wait_s, b.settings.nack_interval_s
    assert b.tick(wait * 0.9).send == []  # maybe only reordered: wait
    nacks = b.tick(wait).send
    assert kinds(nacks) == ["HopNack"] and sr.decode_hop_packet(nacks[0]).missing == [2, 3, 5]
    assert sr.decode_hop_packet(nacks[0]).link_aru == 1
    assert b.tick(wait + again * 0.9).send == []
    b.datagram(data[1], wait + again * 0.95)
    assert sr.decode_hop_packet(b.tick(wait + again).send[0]).missing == [3, 5]  # the current list
    b.datagram(data[2], 0.3)
    b.datagram(data[4], 0.3)
    assert b.tick(1.0).send == [] and b.r_link_aru == 6  # filled: no more NACKs


def test_a_nacked_packet_is_resent_at_once_ahead_of_new_ones():
    a, b = pair(window_packets=3, keepalive_s=10)
    data = sent_data(a, [b"1", b"2", b"3", b"4"])  # the window holds 4 back
    assert len(data) == 3
    out = a.datagram(sr.encode_hop_nack(B, 0, [2]), 0.01)
    assert out.send == [data[1]] and a.counters["retransmitted"] == 1  # the very same datagram
    out = a.datagram(sr.encode_hop_ack(B, 3, 0), 0.02)
    assert [sr.decode_hop_packet(d).seq for d in out.send if kinds([d]) == ["HopData"]] == [4]


def test_a_link_ack_goes_every_max_pkt_btw_ack_packets_or_after_ack_delay():
    a, b = pair(max_pkt_btw_ack=4, keepalive_s=10)
    data = sent_data(a, [b"%d" % i for i in range(5)])
    outs = [b.datagram(d, 0.0).send for d in data[:4]]
    assert outs[:3] == [[], [], []] and kinds(outs[3]) == ["HopAck"]
    ack = sr.decode_hop_packet(outs[3][0])
    assert (ack.link_aru, ack.highest_linkseq) == (4, 0)  # b has sent nothing itself
    assert b.datagram(data[4], 0.0).send == []
    assert b.tick(b.settings.ack_delay_s * 0.9).send == []
    assert sr.decode_hop_packet(b.tick(b.settings.ack_delay_s).send[0]).link_aru == 5
    a.datagram(sr.encode_hop_ack(B, 5, 0), 0.01)
    assert a.s_other_end_aru == 5 and a.idle()


def test_data_both_ways_carries_the_acks_and_no_ack_packet_goes():
    """Each DATA holds its sender's R_link_aru: while both ends send, neither sends an ACK of
    its own (on a WAN it would cost the link's bytes), and each end's window moves on."""
    a, b = pair(max_pkt_btw_ack=4, keepalive_s=10)
    now, sent = 0.0, {"a": [], "b": []}
    for i in range(40):
        now = round(now + 0.002, 3)
        for name, me, peer in (("a", a, b), ("b", b, a)):
            out = me.submit(b"%s%d" % (name.encode(), i), now)
            sent[name] += out.send
            for d in out.send:
                sent[name] += peer.datagram(d, now).send
        for me in (a, b):
            assert me.tick(now).send == []
    assert set(kinds(sent["a"] + sent["b"])) == {"HopData"}
    assert a.s_other_end_aru >= 39 and b.s_other_end_aru >= 39
    later = now + a.settings.ack_delay_s
    assert kinds(a.tick(later).send) == ["HopAck"], "after the last DATA, an ACK for its tail"


def test_an_ack_naming_our_peers_highest_seq_reveals_a_lost_tail():
    a, b = pair(keepalive_s=10)
    data = sent_data(a, [b"1", b"2", b"3"])
    b.datagram(data[0], 0.0)  # 2 and 3 lost, nothing after them
    b.datagram(sr.encode_hop_ack(A, 0, 3), 0.001)
    assert b.retransmit_list == {2: 0, 3: 0}
    assert sr.decode_hop_packet(b.tick(0.01).send[0]).missing == [2, 3]


def test_the_window_bounds_packets_outstanding():
    a, _ = pair(window_packets=5)
    assert len(sent_data(a, [b"x"] * 9)) == 5 and a.outstanding_packets() == 5
    out = a.datagram(sr.encode_hop_ack(B, 2, 0), 0.01)
    assert kinds(out.send).count("HopData") == 2 and a.outstanding_packets() == 5


def test_the_token_bucket_bounds_bytes_and_retransmissions_draw_from_it():
    a, _ = pair(rate_bytes_s=10000, burst_bytes=2000, keepalive_s=10, ack_delay_s=10)
    data = sent_data(a, [bytes(900)] * 6)
    size = len(data[0])
    assert len(data) == 2000 // size  # the burst
    assert kinds(a.tick(0.05).send) == []  # 500 bytes earned: not a packet yet
    assert kinds(a.tick(size / 10000.0 + 0.001).send) == ["HopData"]
    # a NACK: the resend waits its turn in the bucket too
    assert a.datagram(sr.encode_hop_nack(B, 0, [1]), 0.1).send == []
    t = a.next_deadline_s()
    assert a.tick(t).send == [data[0]]


def test_dead_peer_after_the_same_packet_is_asked_for_too_often():
    a, b = pair(nack_requests_max=3, peer_silence_s=100, keepalive_s=0.05)
    data = sent_data(a, [b"1", b"2"])
    b.datagram(data[1], 0.0)
    events, now = [], 0.0
    while not events and now < 10:
        now += 0.01
        out = b.tick(now)
        events += out.events
        b.datagram(sr.encode_hop_ack(A, 0, 2), now)  # the peer keeps talking, never resends
    assert events == [b.dead] and b.dead.reason == "requests" and b.dead.seq == 1
    assert b.counters["nacks_sent"] == 3
    bound = b.settings.nack_wait_s + 3 * b.settings.nack_interval_s
    assert bound <= now <= bound + 0.021  # two steps of this loop's 10 ms clock
    assert b.tick(now + 1).events == [] and b.next_deadline_s() == float("inf")  # once


def test_dead_peer_after_silence_and_a_keepalive_keeps_a_quiet_link_alive():
    a, b = pair()
    now = 0.0
    while now < 5:
        now = round(now + 0.01, 3)
        for mine, other in ((a, b), (b, a)):
            for d in mine.tick(now).send:
                other.datagram(d, now)
    assert a.dead is None and b.dead is None and a.counters["acks_sent"] >= 40
    events = []
    while now < 8:  # the link is cut
        now = round(now + 0.01, 3)
        events += a.tick(now).events
    assert [e.reason for e in events] == ["silence"]
    assert events[0].at_s - 5 <= a.settings.peer_silence_s + 0.011


@pytest.mark.parametrize("datagram, reason", [
    (b"garbage", "garbage"),
    (sr.encode_hop_data(("c", 1), 1, b"x"), "stranger"),
    (sr.encode_hop_data(("b", 2), 1, b"x"), "stranger"),  # another incarnation of b
    (sr.encode_hop_data(B, 10 ** 6, b"x"), "beyond_window"),
    (sr.encode_hop_data(B, 1, b"x", session=5), "old_session"),  # another end of b's link
    (sr.encode_hop_ack(B, 99, 0), "never_sent"),
    (sr.encode_hop_data(B, 1, b"x", link_aru=99), "never_sent"),  # its ACK's news is forged
    (sr.OPEN_SEAL.seal(sr.OPEN_SEAL.header(sr.PT_HOP_DATA) + sr._pid_bytes(B) + sr._U32.pack(0)
                       + b"\x81\x00\x00x"), "garbage"),  # a seq not in its shortest form
    (sr.OPEN_SEAL.seal(sr.OPEN_SEAL.header(sr.PT_HOP_DATA) + sr._pid_bytes(B) + sr._U32.pack(0)
                       + b"\xff" * 9), "garbage"),  # a varint that never ends
    (sr.OPEN_SEAL.seal(sr.OPEN_SEAL.header(sr.PT_HOP_DATA) + sr._pid_bytes(B) + sr._U32.pack(0)
                       + b"\x01"), "garbage"),  # the aru cut off
    (sr.encode_hop_nack(B, 0, [77]), "never_sent"),
    (sr.RingSeal(b"k" * 16).seal(sr.RingSeal(b"k" * 16).header(sr.PT_HOP_DATA) + b"x"), "unexpected_tag"),
])
def test_bad_input_is_dropped_counted_and_changes_nothing(datagram, reason):
    a, _ = pair()
    sent_data(a, [b"1"])
    before = (a.s_other_end_aru, a.r_link_aru, a.r_highest_seq, dict(a.retransmit_list))
    out = a.datagram(datagram, 0.01)
    assert out.deliver == [] and a.counters["dropped_" + reason] == 1
    assert (a.s_other_end_aru, a.r_link_aru, a.r_highest_seq, dict(a.retransmit_list)) == before


def test_a_keyed_link_refuses_unsigned_packets_and_reads_its_own():
    seal = sr.RingSeal(b"k" * 32)
    a, b = sr.HopLink(A, B, seal=seal), sr.HopLink(B, A, seal=seal)
    data = a.submit(b"secret", 0.0).send
    assert b.datagram(data[0], 0.0).deliver == [(1, b"secret")]
    assert b.datagram(sr.encode_hop_data(A, 2, b"forged"), 0.0).deliver == []
    assert b.counters["dropped_no_tag"] == 1


def test_the_callers_mistakes_raise():
    a, _ = pair(max_queued_packets=1, window_packets=1)
    with pytest.raises(sr.RingUsageError, match="payload"):
        a.submit(bytes(a.max_payload_bytes + 1), 0.0)
    a.submit(b"1", 0.0)
    a.submit(b"2", 0.0)  # waits for the window
    with pytest.raises(sr.RingUsageError, match="already wait"):
        a.submit(b"3", 0.0)
    with pytest.raises(TypeError, match="unknown HOP setting"):
        sr.HopSettings(windw=3)


def test_the_round_trip_is_timed_on_a_new_packet_and_never_on_one_asked_for_again():
    a, b = pair(keepalive_s=10, ack_delay_s=0.005)
    (d1,) = sent_data(a, [b"1"], now=1.0)
    b.datagram(d1, 1.02)
    ack = b.tick(1.025).send  # the ACK delay: 5 ms after the packet
    assert a.rtt_s is None
    a.datagram(ack[0], 1.045)
    assert a.rtt_s == pytest.approx(0.045)
    # Karn: packet 2 is lost and asked for again; its ACK times nothing
    (d2,) = sent_data(a, [b"2"], now=2.0)
    (d3,) = sent_data(a, [b"3"], now=2.0)
    b.datagram(d3, 2.01)
    nack = b.tick(2.016).send
    a.datagram(nack[0], 2.03)
    b.datagram(d2, 2.5)
    a.datagram(b.tick(2.6).send[0], 2.6)
    assert a.rtt_s == pytest.approx(0.045), "a packet sent twice gave a sample"
    snap = a.snapshot(2.6)
    assert (snap["sent"], snap["retransmitted"], snap["nacks_received"]) == (3, 1, 1)
    assert snap["peer"] == "b#1" and snap["outstanding"] == 0


def test_a_replayed_keep_alive_is_no_sign_of_life():
    """An idle link's keep-alive ACKs said the same every time: a copy of the peer's last one,
    replayed from the LAN (it passes any key: the peer signed it), kept a dead peer alive for
    as long as the replays went on. Each ACK and NACK now carries its end's control seq: only
    a newer one (or new data) counts for the silence rule; a copy of old data neither."""
    a, b = pair()
    silence = a.settings.peer_silence_s
    out = b.tick(b.settings.keepalive_s)  # b's keep-alive, captured on its way
    keepalive = [d for d in out.send if d[5] == sr.PT_HOP_ACK][0]
    data = sent_data(b, [b"x"], 0.15)[0]
    a.datagram(keepalive, 0.1)
    a.datagram(data, 0.15)
    now = 0.15
    while now < 0.15 + silence - 0.05:  # b is dead; the student replays its packets
        now += 0.05
        assert a.datagram(keepalive, now).events == [] and a.datagram(data, now).events == []
        a.tick(now)
    assert a.counters["not_news"] > 10
    assert [e.reason for e in a.tick(0.15 + silence).events] == ["silence"]
    # while a peer that lives is heard: its next keep-alive is news
    c, d = pair()
    for n in range(1, 30):
        now = n * d.settings.keepalive_s
        for datagram in d.tick(now).send:
            assert c.datagram(datagram, now).events == []
        for datagram in c.tick(now).send:
            d.datagram(datagram, now)
    assert c.dead is None and d.dead is None and c.counters["not_news"] == 0
