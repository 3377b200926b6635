"""Tier 1: the client core (request ids, retries, duplicates, deadline) and its output, with a
fake clock. Issue 2, part 3: each expression gets exactly one answer shown."""
from __future__ import annotations

import json
import random

import pytest

import calc_client
from calc_client import CalcClientCore, Reply, exit_status, format_reply, reply_json
from calc_server import (MAX_EXPR_CHARS, Answer, Heartbeat, Request, decode, encode_answer,
                         encode_heartbeat)

CLUSTER = "unitc"
SERVER = ("127.0.0.1", 40001)


def core(timeout_s=0.5, deadline_s=10.0):
    return CalcClientCore(CLUSTER, timeout_s, deadline_s, random.Random(3))


def answer(rid, attempt=1, server=1, ok=True, text="3", cluster=CLUSTER):
    return encode_answer(cluster, Answer(rid, attempt, server, ok, text))


def test_a_request_carries_a_unique_id_and_attempt_1():
    c = core()
    rid1, data1, local1 = c.ask("1+2", 0.0)
    rid2, data2, _ = c.ask("1+2", 0.0)
    assert local1 is None and rid1 != rid2
    assert decode(data1, CLUSTER) == Request(rid1, 1, "1+2")
    assert rid1 >> 32 == rid2 >> 32 == c.nonce      # the client's random part


def test_retries_keep_the_request_id_until_the_deadline():
    c = core(timeout_s=0.5, deadline_s=2.0)
    rid, _, _ = c.ask("7/2", 0.0)
    assert c.tick(0.4) == ([], [])
    resent = []
    now = 0.0
    while now < 3.0:
        now += 0.1
        again, expired = c.tick(now)
        resent += [decode(d, CLUSTER) for d in again]
        if expired:
            break
    assert [(r.rid, r.attempt) for r in resent] == [(rid, 2), (rid, 3), (rid, 4)]
    [gone] = expired
    assert (gone.ok, gone.text, gone.attempts) == (None, "no answer within 2 s", 4)
    assert c.pending == {}


def test_the_first_answer_is_shown_and_a_second_is_dropped_and_counted():
    c = core()
    rid, _, _ = c.ask("1+2", 0.0)
    [reply] = c.datagram(answer(rid, server=1), SERVER, 0.002)
    assert (reply.ok, reply.text, reply.server, reply.attempts) == (True, "3", 1, 1)
    assert reply.rtt_ms == pytest.approx(2.0)
    assert c.datagram(answer(rid, server=2), ("127.0.0.1", 40002), 0.003) == []
    assert c.duplicates == 1 and c.duplicates_by_server == {2: 1}
    assert c.tick(5.0) == ([], [])                    # nothing left to retry


def test_the_rtt_is_that_of_the_attempt_answered():
    c = core(timeout_s=0.5)
    rid, _, _ = c.ask("1+2", 0.0)
    c.tick(0.5)                                       # attempt 2 sent at 0.5
    [reply] = c.datagram(answer(rid, attempt=1), SERVER, 0.7)   # a late answer to attempt 1
    assert reply.attempts == 2 and reply.rtt_ms == pytest.approx(700.0)
    c2 = core(timeout_s=0.5)
    rid2, _, _ = c2.ask("1+2", 0.0)
    c2.tick(0.5)
    [reply2] = c2.datagram(answer(rid2, attempt=2), SERVER, 0.501)
    assert reply2.rtt_ms == pytest.approx(1.0)


@pytest.mark.parametrize("data, reason", [
    (b"junk", "foreign"),
    (answer(1, cluster="otherteam"), "other-cluster"),
    (encode_heartbeat(CLUSTER, Heartbeat(1, 1, 1, 0)), "not-an-answer"),
    (answer(12345), "unknown-request"),
])
def test_anything_but_an_answer_to_a_pending_request_is_dropped(data, reason):
    c = core()
    c.ask("1+2", 0.0)
    assert c.datagram(data, SERVER, 0.1) == []
    assert c.dropped == {reason: 1} and len(c.pending) == 1


def test_too_long_an_expression_is_answered_here_with_the_servers_message():
    c = core()
    rid, data, local = c.ask("1" * (MAX_EXPR_CHARS + 1), 0.0)
    assert data is None and c.pending == {}
    assert (local.ok, local.server, local.attempts) == (False, None, 0)
    assert local.text == f"expression of {MAX_EXPR_CHARS + 1} characters is over the limit " \
                         f"of {MAX_EXPR_CHARS}"


def test_pending_is_limited(monkeypatch):
    monkeypatch.setattr(calc_client, "MAX_PENDING", 3)
    c = core()
    for _ in range(3):
        c.ask("1", 0.0)
    with pytest.raises(RuntimeError):
        c.ask("1", 0.0)


def reply(ok, text, server=1, rtt_ms=0.4, attempts=1):
    return Reply("1/x", 1, ok, text, server, rtt_ms, attempts, 0.0, 0.0)


def test_output_lines_and_json():
    assert format_reply(reply(True, "3.5")) == "1/x = 3.5    [server 1, 0.4 ms]"
    assert format_reply(reply(False, "boom", attempts=3)) == \
        "1/x: error: boom    [server 1, 0.4 ms, attempt 3]"
    assert format_reply(reply(None, "no answer within 10 s", None, None, 20)).startswith(
        "1/x: no answer within 10 s (20 attempts): is a server running")
    assert json.loads(reply_json(reply(True, "3.5"))) == \
        {"expr": "1/x", "result": "3.5", "server": 1, "rtt_ms": 0.4, "attempts": 1,
         "refused": []}
    assert json.loads(reply_json(reply(False, "boom"))) == \
        {"expr": "1/x", "error": "boom", "server": 1, "rtt_ms": 0.4, "attempts": 1,
         "refused": []}


def test_exit_status():
    ok, err, none = reply(True, "1"), reply(False, "e"), reply(None, "n")
    assert exit_status([]) == 0 and exit_status([ok, ok]) == 0
    assert exit_status([ok, err]) == 1
    assert exit_status([err, none, ok]) == 2


@pytest.mark.parametrize("tool, argv, said", [
    ("client", ["--timeout", "abc"], "--timeout: 'abc' is not a number of seconds"),
    ("client", ["--deadline", "0"], "--deadline: 0: expected a number of seconds between 0.01 and 3600"),
    ("client", ["--answer-port", "70000"], "expected a port number between 0 and 65535"),
    ("server", ["--heartbeat", "x"], "--heartbeat: 'x' is not a number of seconds"),
    ("server", ["--awaiting-after", "1.5"], "--awaiting-after: '1.5' is not a number of ticks"),
    ("server", ["--unresponsive-after", "1001"], "expected a number of ticks between 1 and 1000"),
    ("server", ["--jitter-grace", "0.9"], "0.9: expected a fraction of a tick between 0 and 0.5"),
])
def test_numbers_on_the_command_line_are_checked_with_one_clear_error(tool, argv, said, capsys):
    import calc_server
    build = calc_server.build_parser if tool == "server" else calc_client.build_parser
    with pytest.raises(SystemExit) as stopped:
        build().parse_args(argv)
    assert stopped.value.code == 2 and said in capsys.readouterr().err


def test_numbers_in_range_are_taken_as_numbers():
    import calc_server
    args = calc_server.build_parser().parse_args(["--heartbeat", "0.5", "--awaiting-after", "3", "--jitter-grace", "0"])
    assert (args.heartbeat, args.awaiting_after, args.jitter_grace) == (0.5, 3, 0.0)
    assert calc_client.build_parser().parse_args(["--answer-port", "0"]).answer_port == 0
