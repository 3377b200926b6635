"""floodtools.py without sockets: the wire format, FLOOREC's and FLOOENV's cores with a fake
clock (section 8.2), and both cores wired through a seeded simulated daemon."""
from __future__ import annotations

import random

import pytest

import floodtools as ft

try:
    from hypothesis import given, strategies as st
except ImportError:  # pragma: no cover
    given = None


# ---- wire format ---------------------------------------------------------------------------

def test_start_marker_carries_batch_count_size_service_sender_and_start_time():
    data = ft.encode_start("b01", 2000, 1000, "safe", "h1", 1_700_000_000.25)
    marker = ft.decode_marker(ft.MESS_START, data)
    assert (marker.kind, marker.batch, marker.count, marker.size, marker.service, marker.sender) == \
        ("start", "b01", 2000, 1000, "safe", "h1")
    assert marker.start == ft.iso_time(1_700_000_000.25)
    assert ft.decode_marker(ft.MESS_END, ft.encode_end("b01", 2000)).sent == 2000


@pytest.mark.parametrize("mess_type,data", [
    (ft.MESS_START, b"hello"),
    (ft.MESS_START, b"FLOOD start batch=b1 count=x size=1 service=safe sender=a"),
    (ft.MESS_START, b"FLOOD start batch=b1 count=1 size=1 service=psychic sender=a"),
    (ft.MESS_START, b"FLOOD start batch=b%1 count=1 size=1 service=safe sender=a"),
    (ft.MESS_END, b"FLOOD start batch=b1 count=1 size=1 service=safe sender=a"),
    (ft.MESS_END, b"FLOOD end batch=b1"),
    (1, b"FLOOD end batch=b1 sent=3"),
    (ft.MESS_START, b"\xff\xfe"),
])
def test_markers_from_other_teams_or_broken_are_refused(mess_type, data):
    with pytest.raises(ft.MalformedMessage):
        ft.decode_marker(mess_type, data)


def test_data_message_has_exactly_the_size_and_names_its_batch():
    for size in (ft.MIN_SIZE_BYTES, 100, 1000):
        data = ft.encode_data("abcdef0123456789", 9_999_999, size)
        assert len(data) == size
        assert ft.decode_data(data) == ("abcdef0123456789", 9_999_999)
    with pytest.raises(ft.MalformedMessage):
        ft.decode_data(b"FLD")


def record(**kw):
    base = dict(rec="end", date="2026-11-20", time="10:00:00.000", machine="pc01", batch="b1", count=10,
                size=100, service="reliable", sender="env", received=9, elapsed_s=0.5, end="marker")
    base.update(kw)
    return ft.LogRecord(**base)


def test_record_round_trip_and_unknown_keys_kept():
    r = record()
    r.extra = {"logbm": "2026-11-20T10:00:00.100"}
    line = ft.format_record(r)
    assert line == ("FLOODLOG rec=end date=2026-11-20 time=10:00:00.000 machine=pc01 batch=b1 count=10 "
                    "size=100 service=reliable sender=env received=9 elapsed_s=0.500000 end=marker "
                    "logbm=2026-11-20T10:00:00.100")
    back = ft.parse_record(line)
    assert back == r and back.msgs_per_s == 18.0


@pytest.mark.parametrize("line", ["", "FLOODLOG", "FLOODLOG rec=end machine=pc01",
                                  "FLOODLOG rec=mid date=d time=t machine=m batch=b count=1 size=1 service=safe sender=s",
                                  "FLOODLOG rec=start date=d time=t machine=m batch=b count=-1 size=1 service=safe sender=s",
                                  "x" * 5000])
def test_bad_records_are_refused_with_a_reason(line):
    with pytest.raises(ft.MalformedMessage):
        ft.parse_record(line)


if given is not None:
    names = st.from_regex(ft.NAME_RE, fullmatch=True)

    @given(machine=names, sender=names, batch=st.from_regex(ft.BATCH_RE, fullmatch=True),
           count=st.integers(0, ft.MAX_COUNT), received=st.integers(0, ft.MAX_COUNT),
           elapsed=st.floats(0, 1e6, allow_nan=False), service=st.sampled_from(ft.SERVICE_NAMES),
           kind=st.sampled_from(ft.RECORD_KINDS))
    def test_every_record_parses_back_to_itself(machine, sender, batch, count, received, elapsed, service, kind):
        r = record(rec=kind, machine=machine, sender=sender, batch=batch, count=count, service=service)
        if kind == "end":
            r.received, r.elapsed_s = received, round(elapsed, 6)
        else:
            r.received, r.elapsed_s, r.end = 0, 0.0, ""
        assert ft.parse_record(ft.format_record(r)) == r

    @given(st.binary(max_size=300), st.integers(0, 0xFFFF))
    def test_floorec_never_crashes_on_foreign_traffic(data, mess_type):
        core = ft.FlooRecCore("pc01")
        outputs = core.on_message(mess_type, data, 0.0, 0.0)
        assert all(isinstance(o, (ft.Say, ft.SendRecord)) for o in outputs)


# ---- FLOOREC core (8.2: a start record and an end record per batch; counter every 1000) ---

WALL = 1_763_800_000.0


def start(core, batch="b1", count=2500, size=100, service="safe", now=0.0):
    return core.on_message(ft.MESS_START, ft.encode_start(batch, count, size, service, "env", WALL), now, WALL + now)


def data(core, batch="b1", seq=1, now=0.0, size=100):
    return core.on_message(ft.MESS_DATA, ft.encode_data(batch, seq, size), now, WALL + now)


def records(outputs):
    return [ft.parse_record(o.line) for o in outputs if isinstance(o, ft.SendRecord)]


def test_floorec_start_record_then_counter_every_1000_then_end_record_when_complete():
    core = ft.FlooRecCore("pc01")
    out = start(core)
    [rec] = records(out)
    assert (rec.rec, rec.machine, rec.batch, rec.count, rec.size, rec.service, rec.sender) == \
        ("start", "pc01", "b1", 2500, 100, "safe", "env")
    assert (rec.date, rec.time) == ft.clock_fields(WALL)
    says, ends = [], []
    for seq in range(1, 2501):
        out = data(core, seq=seq, now=seq * 0.001)
        says += [o.text for o in out if isinstance(o, ft.Say)]
        ends += records(out)
    assert "1000 messages" in says and "2000 messages" in says
    [end] = ends
    assert (end.rec, end.received, end.end) == ("end", 2500, "complete")
    assert end.elapsed_s == pytest.approx(2.5)
    assert core.open == {}
    assert records(core.on_message(ft.MESS_END, ft.encode_end("b1", 2500), 3.0, WALL + 3)) == []


def test_floorec_end_marker_then_grace_time_records_what_it_had():
    core = ft.FlooRecCore("pc01", end_grace_s=2.0)
    start(core, count=10)
    for seq in range(1, 8):
        data(core, seq=seq, now=0.1 * seq)
    out = core.on_message(ft.MESS_END, ft.encode_end("b1", 10), 1.0, WALL + 1)
    assert records(out) == [] and any("DRAINING" in o.text for o in out)
    assert records(core.tick(2.9, WALL + 2.9)) == []
    [end] = records(core.tick(3.0, WALL + 3))
    assert (end.received, end.end) == (7, "marker")
    assert end.elapsed_s == pytest.approx(0.7)     # start marker to the last data message


def test_floorec_idle_batch_ends_when_the_sender_dies():
    core = ft.FlooRecCore("pc01", idle_timeout_s=30)
    start(core, count=10)
    data(core, seq=1, now=1.0)
    assert records(core.tick(30.9, WALL)) == []
    [end] = records(core.tick(31.0, WALL))
    assert (end.received, end.end) == (1, "idle")


def test_floorec_disconnection_records_every_open_batch():
    core = ft.FlooRecCore("pc01")
    start(core, "b1", count=10)
    start(core, "b2", count=10)
    data(core, "b2", 1, 0.5)
    ends = records(core.on_disconnect(1.0, WALL + 1))
    assert sorted((e.batch, e.received, e.end) for e in ends) == [("b1", 0, "disconnected"), ("b2", 1, "disconnected")]


def test_floorec_ignores_orphans_duplicates_late_and_foreign_and_counts_them():
    core = ft.FlooRecCore("pc01")
    start(core, count=2)
    assert start(core, count=2) == []                                     # duplicate start
    data(core, seq=1)
    data(core, seq=2)                                                     # completes b1
    assert data(core, seq=3) == []                                        # late
    assert core.on_message(7, b"chat message", 0, 0) == []                # another team
    assert core.ignored == {"duplicate start marker": 1, "late": 1, "foreign": 1}


def test_floorec_batch_id_used_again_is_a_new_batch():
    core = ft.FlooRecCore("pc01")
    start(core, count=1)
    data(core, seq=1)
    recs = records(start(core, count=2, now=1.0))
    assert [r.rec for r in recs] == ["start"] and core.open["b1"].marker.count == 2


def test_floorec_state_changes_are_said_and_counted():
    core = ft.FlooRecCore("pc01", end_grace_s=1.0)
    said = [o.text for o in start(core, count=3) if isinstance(o, ft.Say)]
    said += [o.text for o in core.on_message(ft.MESS_END, ft.encode_end("b1", 3), 0.1, WALL) if isinstance(o, ft.Say)]
    said += [o.text for o in core.tick(1.2, WALL) if isinstance(o, ft.Say)]
    assert [t.split(":")[1].strip() for t in said] == ["- -> RECEIVING", "RECEIVING -> DRAINING", "DRAINING -> ENDED"]
    assert core.changes == {"-->RECEIVING (start marker from env)": 1, "RECEIVING->DRAINING (end marker)": 1,
                            "DRAINING->ENDED (marker)": 1}


def test_floorec_counts_messages_that_overtook_the_start_marker():
    # RELIABLE promises no order (7.3.3): data and even the end marker may come first.
    core = ft.FlooRecCore("pc01", end_grace_s=1.0)
    data(core, seq=2, now=0.1)
    core.on_message(ft.MESS_END, ft.encode_end("b1", 3), 0.2, WALL)
    recs = records(start(core, count=3, now=0.3))
    assert [r.rec for r in recs] == ["start"] and core.open["b1"].state == ft.DRAINING
    data(core, seq=1, now=0.4)
    [end] = records(data(core, seq=3, now=0.5))
    assert (end.received, end.end) == (3, "complete") and end.elapsed_s == pytest.approx(0.4)


def test_floorec_forgets_orphans_of_batches_it_joined_too_late_for():
    core = ft.FlooRecCore("pc01", max_open=2)
    for batch in ("o1", "o2", "o3"):
        data(core, batch, 5)
    assert list(core.early) == ["o2", "o3"] and core.ignored == {"orphan": 1}


def test_floorec_follows_at_most_max_open_batches():
    core = ft.FlooRecCore("pc01", max_open=2)
    start(core, "b1", now=0)
    start(core, "b2", now=1)
    [superseded] = [r for r in records(start(core, "b3", now=2)) if r.rec == "end"]
    assert (superseded.batch, superseded.end) == ("b1", "superseded")
    assert sorted(core.open) == ["b2", "b3"]


def test_floorec_empty_batch_is_complete_at_once():
    core = ft.FlooRecCore("pc01")
    recs = records(start(core, count=0))
    assert [(r.rec, r.end) for r in recs] == [("start", ""), ("end", "complete")]


def test_floorec_needs_a_proper_machine_name():
    with pytest.raises(ValueError):
        ft.FlooRecCore("two words")


# ---- FLOOENV core (own flow control; iperf3-like intervals) --------------------------------

class FakeDaemon:
    """The daemon as the sender sees it: echoes come back in order after `delay` ticks."""

    def __init__(self):
        self.to_group, self.echo_queue = [], []

    def take(self, outputs):
        for out in outputs:
            if isinstance(out, ft.Multicast):
                (self.echo_queue if out.to_self else self.to_group).append(out)


def test_floenv_never_has_more_than_window_unconfirmed():
    core = ft.FlooEnvCore("b1", 1000, 100, "safe", "env", window=200, echo_every=50)
    daemon = FakeDaemon()
    daemon.take(core.start(0.0, WALL))
    now, worst = 0.0, 0
    while not core.done:
        worst = max(worst, core.sent - core.confirmed)
        assert daemon.echo_queue, "the sender waits for an echo that will never come"
        echo = daemon.echo_queue.pop(0)
        now += 0.01
        daemon.take(core.on_own_message(echo.mess_type, echo.data, now))
        daemon.take(core.tick(now))
        # What the daemon queues for the sender is only echoes, never near a per-session limit.
        assert len(daemon.echo_queue) <= 200 // 50 + 2
    assert worst == 200
    kinds = [m.mess_type for m in daemon.to_group]
    assert kinds[0] == ft.MESS_START and kinds[-1] == ft.MESS_END and kinds.count(ft.MESS_DATA) == 1000
    assert core.state == ft.DONE and core.summary()["messages"] == 1000
    assert core.change_counts == {"NEW->SENDING": 1, "SENDING->CLOSING": 1, "CLOSING->DONE": 1}


def test_floenv_intervals_every_second_and_a_summary():
    core = ft.FlooEnvCore("b1", 300, 1000, "reliable", "env", window=100, echo_every=100)
    daemon = FakeDaemon()
    daemon.take(core.start(0.0, WALL))
    intervals = []
    for now in (0.5, 1.2, 2.7):                      # one echo back at each of these moments
        echo = daemon.echo_queue.pop(0)
        out = core.on_own_message(echo.mess_type, echo.data, now) + core.tick(now)
        daemon.take(out)
        intervals += [o for o in out if isinstance(o, ft.Interval)]
    assert core.state == ft.DONE
    # Each second gets what was confirmed by the echoes that came within it.
    assert [(i.start_s, i.end_s, i.messages) for i in intervals] == [
        (0.0, 1.0, 100), (1.0, 2.0, 100), (2.0, 2.7, 100)]
    s = core.summary()
    assert (s["messages"], s["bytes"], s["seconds"], s["msgs_per_s"], s["mbit_per_s"]) == \
        (300, 300_000, 2.7, 111.1, 0.889)
    assert "msgs/s" in ft.render_interval("b1", intervals[0]) and "sender" in ft.render_summary(s)


def test_floenv_rate_limit_spreads_the_batch_over_time():
    core = ft.FlooEnvCore("b1", 100, 100, "reliable", "env", window=100, echo_every=10, rate_msgs_per_s=50)
    daemon = FakeDaemon()
    daemon.take(core.start(0.0, WALL))
    assert core.sent == 1                        # one at once, then 50 per second
    daemon.take(core.tick(0.5))
    assert core.sent == 26
    daemon.take(core.tick(1.98))
    assert core.sent == 100 and core.state == ft.CLOSING
    with pytest.raises(ValueError):
        ft.FlooEnvCore("b1", 1, 100, "safe", "env", rate_msgs_per_s=-1)


def test_floenv_gives_up_without_echoes():
    core = ft.FlooEnvCore("b1", 100, 100, "safe", "env", window=10, echo_every=5, stall_timeout_s=30)
    core.start(0.0, WALL)
    core.tick(29.9)
    assert not core.done
    core.tick(30.0)
    assert core.state == ft.FAILED and "no echo" in core.failure


def test_floenv_ignores_echoes_of_other_batches_and_foreign_messages():
    core = ft.FlooEnvCore("b1", 100, 100, "safe", "env", window=10, echo_every=5)
    core.start(0.0, WALL)
    assert core.on_own_message(ft.MESS_ECHO, ft.encode_echo("other", 5), 1.0) == []
    assert core.on_own_message(ft.MESS_ECHO, b"junk", 1.0) == []
    assert core.on_own_message(3, b"hello", 1.0) == []
    assert core.confirmed == 0


@pytest.mark.parametrize("kw", [dict(size=10), dict(count=-1), dict(service="psychic"),
                                dict(window=5, echo_every=10), dict(batch="no spaces")])
def test_floenv_refuses_bad_settings(kw):
    args = dict(batch="b1", count=10, size=100, service="safe", sender="env")
    args.update(kw)
    with pytest.raises(ValueError):
        ft.FlooEnvCore(**args)


def test_batch_matrix_is_sizes_by_services_by_counts():
    matrix = ft.batch_matrix((500, 2000), (100, 1000), ("reliable", "safe"))
    assert len(matrix) == 8 and matrix[0] == ft.BatchSpec("r100x500", 500, 100, "reliable")
    assert len({m.batch for m in ft.batch_matrix((5,), (100,), ("safe",), repeat=3)}) == 3


def test_experiment_spread_conf_names_each_daemon_at_its_address_and_spread_mini_reads_it():
    import spread_mini
    text = ft.render_spread_conf(["10.99.0.1", "10.99.0.2", "10.99.0.3"], 4803)
    config = spread_mini.parse_spread_conf(text)
    assert [(d.name, d.ip, d.port) for d in config.daemons] == [
        ("d1", "10.99.0.1", 4803), ("d2", "10.99.0.2", 4803), ("d3", "10.99.0.3", 4803)]


def test_experiment_receivers_spread_round_robin_over_the_daemons():
    # the thesis's Quadro 4: every server has its share of the lab machines
    assert ft._receivers_per_daemon(9, 3) == [3, 3, 3]
    assert ft._receivers_per_daemon(167, 3) == [56, 56, 55]
    assert ft._receivers_per_daemon(2, 3) == [1, 1, 0]
    assert ft._receivers_per_daemon(5, 1) == [5]


# ---- both cores through a seeded simulated daemon ------------------------------------------

def simulate(seed: int, receivers: int, count: int, service: str, loss: float = 0.0, window: int = 50):
    """FLOOENV -> daemon -> N FLOORECs. Reliable services may reorder (a ring gives no order to
    RELIABLE); unreliable may lose. Returns the records and the worst window seen."""
    rng = random.Random(seed)
    env = ft.FlooEnvCore("b1", count, 100, service, "env", window=window, echo_every=10)
    recs = [ft.FlooRecCore(f"pc{i:02d}") for i in range(1, receivers + 1)]
    pending = []          # (deliver_at, seq, receiver index or -1 for the sender, multicast)
    order = [0]
    out_records = []

    def submit(outputs, now):
        for out in outputs:
            if isinstance(out, ft.SendRecord):
                out_records.append(ft.parse_record(out.line))
            if not isinstance(out, ft.Multicast):
                continue
            targets = [-1] if out.to_self else range(receivers)
            for t in targets:
                delay = rng.uniform(0, 0.05) if service in ("unreliable", "reliable") else 0.01
                order[0] += 1
                pending.append((now + delay, order[0], t, out))

    now, worst = 0.0, 0
    submit(env.start(now, WALL), now)
    while pending or not env.done:
        assert now < 600, f"seed {seed}: the simulation does not finish"
        pending.sort(key=lambda p: (p[0], p[1]) if service in ("unreliable", "reliable") else p[1])
        if pending:
            at, _, target, msg = pending.pop(0)
            now = max(now, at)
        else:
            now += 1.0
            target = None
        if target == -1:
            submit(env.on_own_message(msg.mess_type, msg.data, now), now)
        elif target is not None:
            if not (service == "unreliable" and msg.mess_type == ft.MESS_DATA and rng.random() < loss):
                for i, r in [(target, recs[target])]:
                    for o in r.on_message(msg.mess_type, msg.data, now, WALL + now):
                        if isinstance(o, ft.SendRecord):
                            out_records.append(ft.parse_record(o.line))
        submit(env.tick(now), now)
        worst = max(worst, env.sent - env.confirmed)
    for r in recs:
        for o in r.tick(now + 100, WALL):
            if isinstance(o, ft.SendRecord):
                out_records.append(ft.parse_record(o.line))
    return out_records, worst, env


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("service", ["reliable", "safe"])
def test_simulated_batch_every_receiver_one_start_and_one_complete_end(seed, service):
    records_, worst, env = simulate(seed, receivers=4, count=300, service=service)
    for machine in ("pc01", "pc02", "pc03", "pc04"):
        mine = [r for r in records_ if r.machine == machine]
        assert [r.rec for r in mine] == ["start", "end"], f"seed {seed}: {mine}"
        assert (mine[1].received, mine[1].end) == (300, "complete"), f"seed {seed}: {mine[1]}"
    assert worst <= 50 and env.state == ft.DONE, f"seed {seed}"


@pytest.mark.parametrize("seed", range(4))
def test_simulated_lossy_unreliable_batch_ends_by_marker_and_counts_what_came(seed):
    records_, _, env = simulate(seed, receivers=3, count=300, service="unreliable", loss=0.1)
    ends = [r for r in records_ if r.rec == "end"]
    assert len(ends) == 3, f"seed {seed}"
    for end in ends:
        assert 200 < end.received < 300 and end.end == "marker", f"seed {seed}: {end}"


def test_floorec_disconnection_records_say_why_the_session_ended():
    """A killed daemon and a slow receiver both end with end=disconnected; cause= tells them apart."""
    core = ft.FlooRecCore("pc03")
    start(core, "b1", count=10)
    [end] = records(core.on_disconnect(1.0, WALL + 1, "daemon-gone"))
    assert (end.end, end.extra) == ("disconnected", {"cause": "daemon-gone"})
    assert ft.parse_record(ft.format_record(end)).extra == {"cause": "daemon-gone"}
    assert any("disconnected (daemon-gone)" in key for key in core.changes)


def test_recv_daemon_list_is_ours_first_then_the_others():
    assert ft.daemon_list("4803@127.0.0.3, 4803@127.0.0.1,4803@127.0.0.2") == [
        "4803@127.0.0.3", "4803@127.0.0.1", "4803@127.0.0.2"]
    with pytest.raises(ft.ToolError):
        ft.daemon_list(" , ")


def test_floenv_interrupted_still_sends_the_end_marker_with_the_count_sent():
    """Ctrl-C during `send`: the receivers get the end marker, not 30 s of waiting."""
    core = ft.FlooEnvCore("b1", count=1000, size=100, service="reliable", sender="env", window=100, echo_every=10)
    core.start(0.0, WALL)
    out = core.interrupt(0.5, "interrupted (Ctrl-C)")
    [end] = [o for o in out if isinstance(o, ft.Multicast)]
    assert ft.decode_marker(end.mess_type, end.data).kind == "end"
    assert core.state == ft.FAILED and core.done and "after 100 of 1000 planned messages were sent" in core.failure
    assert core.interrupt(0.6, "again") == []     # once


def test_a_receiver_is_a_member_only_after_member_of_in_its_latest_session():
    """The experiment starts a batch only when every receiver's output says so."""
    joined = "FLOOREC pc01: connected as #pc01#d1 to A\nFLOOREC pc01: member of 'flood' at A\n"
    assert ft.is_member_now(joined, "flood")
    assert not ft.is_member_now("FLOOREC pc01: connected as #pc01#d1 to A\n", "flood")
    assert not ft.is_member_now(joined.replace("'flood'", "'other'"), "flood")
    moved = joined + "FLOOREC pc01: moving to B\nFLOOREC pc01: connected as #pc01#d2 to B\n"
    assert not ft.is_member_now(moved, "flood")            # joined at A, not yet at B
    assert ft.is_member_now(moved + "FLOOREC pc01: member of 'flood' at B\n", "flood")


# ---- reconnecting ---------------------------------------------------------------------------

def delays(retry: ft.Reconnect, tries: int):
    return [retry.next_delay_s() for _ in range(tries)]


def test_reconnect_never_retries_a_daemon_that_was_not_there_at_the_start():
    retry = ft.Reconnect(0.2, 0.5, 0.5, 120)
    assert retry.next_delay_s() is None and retry.attempts == 0


def test_reconnect_waits_first_then_later_delay_doubling_to_the_ceiling_then_gives_up():
    retry = ft.Reconnect(0.5, 1.0, 5.0, 7)
    assert retry.connected(0.0) == ""           # the first session says nothing more
    retry.lost(10.0)
    assert delays(retry, 8) == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0, 5.0, None]
    assert retry.attempts == 7


def test_reconnect_with_one_later_delay_waits_it_every_time_after_the_first():
    """FLOOREC's policy: --reconnect-delay, then at least MIN_RETRY_DELAY_S between tries."""
    retry = ft.Reconnect(0.2, 0.5, 0.5, ft.MAX_RECONNECT_ATTEMPTS)
    retry.connected(0.0)
    retry.lost(1.0)
    assert delays(retry, 4) == [0.2, 0.5, 0.5, 0.5]


def test_reconnect_says_it_is_back_in_one_line_and_starts_a_fresh_series():
    retry = ft.Reconnect(0.5, 1.0, 5.0, 3)
    retry.connected(0.0)
    retry.lost(10.0)
    delays(retry, 3)
    assert retry.connected(13.3) == " (back 3.3 s after the session was lost, 3 tries)"
    assert retry.in_session and retry.sessions == 2
    retry.lost(20.0)
    assert delays(retry, 1) == [0.5]               # the series starts again at the first delay
    assert retry.connected(20.5) == " (back 0.5 s after the session was lost)"
