"""labctl.py without sockets: the request and answer formats (thesis 8.1.1), the agent's core with
the machine facts injected (every function, the limits, signing, replay, age), the bounded file
walk, the asker's core (roll call, answers, time-out), the rendering and the command line's
refusals. Real processes are in test_labctl_procs.py."""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import labctl as lc

ROOT = Path(__file__).resolve().parent.parent
KEY = bytes(range(32))
T0 = 1_800_000_000.0            # a wall clock the tests own
NONCE = bytes(16)


class FakeFacts(lc.MachineFacts):
    """Facts the test decides; it records what the core asked."""

    def __init__(self, users=(), processes=None, files=lc.FileCount(0, 0, False)):
        self.users = list(users)
        self.processes = dict(processes or {})
        self.files = files
        self.asked = []

    def logins(self):
        self.asked.append("logins")
        return list(self.users)

    def processes_named(self, name):
        self.asked.append(("processes", name))
        return self.processes.get(name, 0)

    def count_files(self, ext):
        self.asked.append(("files", ext))
        return self.files


def signed(code, text="", wall_s=T0, nonce=NONCE, key=KEY) -> bytes:
    return lc.encode_request(lc.sign_request(key, code, text, wall_s, nonce))


def replies(actions):
    return [a for a in actions if isinstance(a, lc.Reply)]


def logs(actions):
    return [a.line for a in actions if isinstance(a, lc.Log)]


# ---- wire format: the thesis's message (8.1.1) ----------------------------------------------

def test_an_unsigned_request_is_exactly_the_thesis_message_code_then_content():
    assert lc.encode_request(lc.Request("3", "firefox")) == b"3firefox"
    assert lc.encode_request(lc.Request("2")) == b"2"
    assert lc.decode_request(b"4mp3") == lc.Request("4", "mp3")
    assert lc.decode_request(b"Z") == lc.Request("Z")


def test_a_signed_request_round_trips_and_its_trailer_is_readable():
    data = signed("1", "Lab closes at 22h")
    assert data.startswith(b"1Lab closes at 22h\0v1 t=1800000000000 n=" + b"0" * 32 + b" h=")
    req = lc.decode_request(data)
    assert (req.code, req.text, req.auth.time_ms) == ("1", "Lab closes at 22h", 1_800_000_000_000)
    assert lc.tag_is_right(KEY, req)


def test_content_holds_400_bytes_and_not_one_more():
    assert lc.check_text("1", "x" * 400)
    assert lc.decode_request(b"1" + b"x" * 400).text == "x" * 400
    with pytest.raises(ValueError, match="400"):
        lc.check_text("1", "x" * 401)
    with pytest.raises(ValueError, match="400"):
        lc.check_text("1", "\u00e9" * 201)          # 402 bytes of UTF-8
    with pytest.raises(lc.MalformedRequest, match="400"):
        lc.decode_request(b"1" + b"x" * 401)


@pytest.mark.parametrize("data, why", [
    (b"", "empty"), (b"7hello", "unknown function"), (b"1\xff\xfe", "UTF-8"),
    (b"1hi\0v1 t=1 n=00 h=00", "signature"), (b"4a/b", "extension"), (b"2extra", "no argument"),
    (b"3", "NAME"), (b"5bad\x1blogin", "control"), (b"Zplease", "no argument"),
])
def test_malformed_requests_are_refused_with_a_reason(data, why):
    with pytest.raises(lc.MalformedRequest, match=why):
        lc.decode_request(data)


def test_answers_round_trip_and_read_as_one_line():
    answer = lc.make_answer("4", files=12, kbytes=3400, truncated=False)
    assert lc.encode_answer(answer) == b"4 files=12 kbytes=3400 truncated=no"
    assert lc.decode_answer(b"4 files=12 kbytes=3400 truncated=no", "4") == answer
    assert lc.decode_answer(b"5 logged_in=yes machine=lab07", "5").get("machine") == "lab07"


@pytest.mark.parametrize("data", [b"2 free=yes", b"2 free=maybe users=0", b"3 free=yes users=0",
                                  b"2 users=0 free=yes", b"2 free=yes users=-1", b"\xff", b"2 " + b"x" * 500,
                                  b"2 free=yes users=0 extra=1"])
def test_malformed_answers_are_refused(data):
    with pytest.raises(lc.MalformedAnswer):
        lc.decode_answer(data, "2")


# ---- the agent: every function, with the facts injected --------------------------------------

def test_function_2_free_means_nobody_logged_in():
    assert lc.AgentCore("lab01", FakeFacts()).answer(lc.Request("2")) == lc.make_answer("2", free=True, users=0)
    busy = lc.AgentCore("lab01", FakeFacts(users=["ana", "bia"]))
    assert busy.answer(lc.Request("2")) == lc.make_answer("2", free=False, users=2)


def test_function_3_running_counts_processes_of_that_name():
    core = lc.AgentCore("lab01", FakeFacts(processes={"firefox": 3}))
    assert core.answer(lc.Request("3", "firefox")) == lc.make_answer("3", running=True, processes=3)
    assert core.answer(lc.Request("3", "word")) == lc.make_answer("3", running=False, processes=0)


def test_function_4_files_in_kbytes_rounded_up_and_says_when_cut_short():
    facts = FakeFacts(files=lc.FileCount(files=3, total_bytes=2049, truncated=True))
    core = lc.AgentCore("lab01", facts)
    assert core.answer(lc.Request("4", ".MP3")) == lc.make_answer("4", files=3, kbytes=3, truncated=True)
    assert facts.asked == [("files", "MP3")]      # the leading dot is not part of the extension


def test_function_5_answers_with_the_machine_name_where_the_login_is():
    core = lc.AgentCore("lab07", FakeFacts(users=["ana"]))
    assert core.answer(lc.Request("5", "ana")) == lc.make_answer("5", logged_in=True, machine="lab07")
    assert core.answer(lc.Request("5", "bia")) == lc.make_answer("5", logged_in=False, machine="-")


def test_a_question_is_answered_to_the_askers_private_group_with_the_request_id():
    core = lc.AgentCore("lab01", FakeFacts())
    actions = core.on_request(b"2", "#$ask00001#d1", 4242, T0)
    assert actions == [lc.Reply("#$ask00001#d1", 4242, b"2 free=yes users=0")]


# ---- who may do what -------------------------------------------------------------------------

def test_an_agent_without_a_key_refuses_message_and_quit_outright_and_answers_questions():
    core = lc.AgentCore("lab01", FakeFacts())
    for data in (b"1hello", b"Z", signed("1", "hello"), signed("Z")):
        actions = core.on_request(data, "#$ask1#d1", 1, T0)
        assert not any(isinstance(a, (lc.Popup, lc.Stop, lc.Reply)) for a in actions)
        assert "no key" in logs(actions)[0]
    assert core.refused == {"no key": 4}
    assert replies(core.on_request(b"2", "#$ask1#d1", 1, T0))
    assert replies(core.on_request(signed("2"), "#$ask1#d1", 1, T0))   # a signed question is fine too


def test_a_keyed_agent_obeys_a_well_signed_message_and_quit():
    core = lc.AgentCore("lab01", FakeFacts(), KEY)
    assert core.on_request(signed("1", "hi", nonce=b"a" * 16), "#$ask1#d1", 1, T0 + 1) == [lc.Popup("#$ask1#d1", "hi")]
    actions = core.on_request(signed("Z", nonce=b"b" * 16), "#$ask1#d1", 1, T0 + 1)
    assert lc.Stop("#$ask1#d1") in actions
    assert core.obeyed == {"message": 1, "quit": 1} and core.refused_total == 0


@pytest.mark.parametrize("data, reason", [
    (b"Z", "unsigned"),
    (b"2", "unsigned"),                                   # questions need the key on a keyed agent
    (signed("Z", key=bytes(32)), "bad signature"),        # another key
    (signed("1", "hi").replace(b"1hi", b"1ho", 1), "bad signature"),   # the text altered
    (b"Z" + signed("2")[1:], "bad signature"),            # a signed question turned into a quit
    (signed("Z", wall_s=T0 - 61), "too old"),
    (signed("Z", wall_s=T0 + 61), "from the future"),
])
def test_a_keyed_agent_refuses_and_counts_and_logs(data, reason):
    core = lc.AgentCore("lab01", FakeFacts(), KEY)
    actions = core.on_request(data, "#$ask1#d1", 1, T0)
    assert not any(isinstance(a, (lc.Popup, lc.Stop, lc.Reply)) for a in actions)
    assert core.refused == {reason: 1}
    assert len(logs(actions)) == 1 and "REFUSED" in logs(actions)[0] and reason in logs(actions)[0]


def test_age_limit_is_60_s_either_way():
    core = lc.AgentCore("lab01", FakeFacts(), KEY)
    assert replies(core.on_request(signed("2", wall_s=T0 - 59, nonce=b"1" * 16), "#a#d", 1, T0))
    assert replies(core.on_request(signed("2", wall_s=T0 + 59, nonce=b"2" * 16), "#a#d", 1, T0))


def test_a_replayed_request_is_refused_for_as_long_as_it_could_pass_the_age_check():
    core = lc.AgentCore("lab01", FakeFacts(), KEY)
    message = signed("1", "hi")
    assert core.on_request(message, "#a#d", 1, T0) == [lc.Popup("#a#d", "hi")]
    for later_s in (0.001, 30, 59.9):
        assert core.on_request(message, "#evil#d", 1, T0 + later_s) and core.refused.get("replay")
    assert core.refused == {"replay": 3}
    core.on_request(message, "#evil#d", 1, T0 + 61)       # the nonce is forgotten: age catches it
    assert core.refused == {"replay": 3, "too old": 1}
    assert len(core.nonces) == 0


def test_a_request_signed_before_the_agent_started_is_refused():
    """All agents that saw a quit stopped; a restarted agent has an empty nonce book, and a
    recorded quit played again within 60 s must not stop it."""
    recorded = signed("Z", wall_s=T0)
    restarted = lc.AgentCore("lab01", FakeFacts(), KEY, started_wall_s=T0 + 5)
    actions = restarted.on_request(recorded, "#evil#d", 1, T0 + 10)
    assert lc.Stop("#evil#d") not in actions and restarted.refused == {"before start": 1}


def test_nonce_book_forgets_at_expiry_and_has_a_limit():
    book = lc.NonceBook(max_age_s=60, capacity=2)
    book.add("a", 1_000)
    book.add("b", 5_000)
    assert book.seen("a", 61_000) and book.full(61_000)
    assert not book.seen("a", 61_001) and not book.full(61_001) and book.seen("b", 61_001)


def test_a_full_nonce_book_refuses_instead_of_forgetting_a_live_nonce():
    core = lc.AgentCore("lab01", FakeFacts(), KEY)
    core.nonces.capacity = 2
    for i in range(2):
        assert replies(core.on_request(signed("2", nonce=bytes([i]) * 16), "#a#d", 1, T0))
    assert not replies(core.on_request(signed("2", nonce=b"\x09" * 16), "#a#d", 1, T0))
    assert core.refused == {"nonce book full": 1}


def test_refusals_are_all_counted_but_logged_at_most_30_a_minute():
    core = lc.AgentCore("lab01", FakeFacts(), KEY)
    lines = []
    for i in range(100):
        lines += logs(core.on_request(b"Z", "#evil#d", 1, T0 + i * 0.1))     # 10 s of forgeries
    assert core.refused == {"unsigned": 100} and len(lines) == lc.MAX_LOGGED_REFUSALS_PER_MIN
    lines = logs(core.on_request(b"Z", "#evil#d", 1, T0 + 120))
    assert lines[0].startswith("70 more refusals") and "REFUSED" in lines[1]


def test_other_traffic_on_the_group_is_refused_as_malformed_and_nothing_breaks():
    core = lc.AgentCore("lab01", FakeFacts())
    for junk in (b"", b"hello from team 3", b"\x00\x01\x02", os.urandom(2000)):
        assert not replies(core.on_request(junk, "#x#d", 0, T0))
    assert core.refused.get("malformed", 0) >= 3


def test_text_shown_on_a_terminal_has_no_escape_sequences():
    assert lc.printable("hi\x1b[2J\x07there\nline2\x9b") == "hi?[2J?there\nline2?"


# ---- function 4: the bounded walk ------------------------------------------------------------

def make_tree(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "a" / "b").mkdir(parents=True)
    outside.mkdir()
    (root / "one.mp3").write_bytes(b"x" * 1000)
    (root / "a" / "TWO.MP3").write_bytes(b"x" * 2000)
    (root / "a" / "b" / "three.mp3").write_bytes(b"x" * 3000)
    (root / "a" / "b" / "notes.txt").write_bytes(b"x" * 9999)
    (root / "a" / "mp3").write_bytes(b"x")                      # no extension: not counted
    (outside / "secret.mp3").write_bytes(b"x" * 50_000)
    (root / "link-out").symlink_to(outside, target_is_directory=True)
    (root / "link-file.mp3").symlink_to(outside / "secret.mp3")
    (root / "link-in").symlink_to(root / "a", target_is_directory=True)   # would count twice
    return root


def test_count_files_counts_the_extension_in_any_case_and_follows_no_symlink(tmp_path):
    root = make_tree(tmp_path)
    assert lc.count_files([str(root)], "mp3") == lc.FileCount(3, 6000, False)
    assert lc.count_files([str(root)], "txt") == lc.FileCount(1, 9999, False)
    assert lc.count_files([str(root), str(tmp_path / "nope")], "mp3").files == 3


def test_count_files_stops_at_the_entry_limit_and_says_so(tmp_path):
    root = make_tree(tmp_path)
    cut = lc.count_files([str(root)], "mp3", max_entries=2)
    assert cut.truncated and cut.files <= 2


def test_count_files_stops_at_the_time_limit_and_says_so(tmp_path):
    root = tmp_path / "big"
    root.mkdir()
    for i in range(3 * lc.SCAN_CLOCK_EVERY):
        (root / f"f{i}.dat").write_bytes(b"")
    ticks = iter(range(1000))                      # a fake clock: one second per look
    cut = lc.count_files([str(root)], "dat", max_s=1.5, clock=lambda: next(ticks))
    assert cut.truncated and cut.files < 3 * lc.SCAN_CLOCK_EVERY
    assert lc.count_files([str(root)], "dat", clock=lambda: 0.0) == lc.FileCount(3 * lc.SCAN_CLOCK_EVERY, 0, False)


@pytest.mark.parametrize("wanted, name, cmdline, match", [
    ("firefox", "firefox", [], True), ("firefox", "FIREFOX.EXE", [], True), ("Firefox", "firefox", [], True),
    ("quiz.py", "python3", ["python3", "/home/ana/quiz.py"], True), ("fire", "firefox", [], False),
    ("firefox", "bash", ["bash", "-c", "x", "firefox"], False),
])
def test_process_matches_by_name_or_by_its_first_words(wanted, name, cmdline, match):
    assert lc.process_matches(wanted, name, cmdline) is match


# ---- the agent after a daemon restart --------------------------------------------------------

def test_the_agent_tries_again_at_doubling_delays_up_to_its_ceiling_then_gives_up():
    retry = lc.Reconnect(lc.RECONNECT_FIRST_DELAY_S, 2 * lc.RECONNECT_FIRST_DELAY_S, lc.RECONNECT_MAX_DELAY_S, 7)
    assert retry.next_delay_s() is None            # no daemon at the start: not retried
    assert retry.connected(0.0) == ""
    retry.lost(100.0)
    assert [retry.next_delay_s() for _ in range(8)] == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0, 5.0, None]


def test_the_agent_says_it_is_back_once_and_a_new_loss_starts_the_delays_again():
    retry = lc.Reconnect(0.5, 1.0, 5.0, lc.MAX_RECONNECT_ATTEMPTS)
    retry.connected(0.0)
    retry.lost(100.0)
    retry.next_delay_s(), retry.next_delay_s()
    assert retry.connected(101.6) == " (back 1.6 s after the session was lost, 2 tries)"
    assert retry.connected(200.0) == ""            # a session without a loss before it
    retry.lost(300.0)
    assert retry.next_delay_s() == 0.5 and retry.attempts == 1


# ---- the asker: roll call, answers, time-out -------------------------------------------------

ME = "#$ask1#d1"
AGENTS = ["#lab01#d1", "#lab02#d1", "#lab10#d1"]


def asking(code="2", text="", timeout_s=60.0, members=AGENTS):
    core = lc.AskCore(lc.Request(code, text), 77, ME, timeout_s)
    core.start(0.0)
    assert core.on_membership(["#lab01#d1"], 0.1) == []             # not us yet: still joining
    sent = core.on_membership(list(members) + [ME, "#$ask2#d1"], 0.2)
    return core, sent


def answer(core, member, data=b"2 free=yes users=0", now_s=1.0, rid=77):
    return core.on_answer(member, rid, data, now_s)


def test_the_request_goes_out_once_the_roll_call_names_us_and_askers_are_not_asked():
    core, sent = asking()
    assert sent == [lc.SendRequest(b"2", 77)]
    assert core.asked == AGENTS and core.state == lc.ASKING


def test_the_asker_stops_as_soon_as_the_last_member_answers():
    core, _ = asking()
    for member in AGENTS:
        assert not core.done
        assert answer(core, member).answer.get("free") is True
    assert core.done and core.ended == "every member answered"
    summary = core.summary()
    assert summary.complete and [r.member for r in summary.rows] == AGENTS and round(summary.rows[0].ms) == 800


def test_answers_that_are_not_for_us_are_ignored_and_counted():
    core, _ = asking()
    assert answer(core, "#lab01#d1", rid=78) is None
    assert answer(core, "#intruder#d1") is None
    assert answer(core, "#lab01#d1", b"3 running=yes processes=1") is None
    assert answer(core, "#lab01#d1") is not None and answer(core, "#lab01#d1") is None
    assert core.ignored == {"another request's id": 1, "from a non-member": 1, "malformed": 1, "a second answer": 1}


def test_a_silent_member_is_named_missing_at_the_time_out():
    core, _ = asking(timeout_s=5)
    answer(core, "#lab01#d1")
    answer(core, "#lab02#d1")
    core.tick(5.1)
    assert not core.done
    core.tick(5.2)
    assert core.done and core.ended == "time-out"
    assert core.summary().missing == {"#lab10#d1": "no answer"} and not core.summary().complete


def test_a_member_that_leaves_is_not_waited_for():
    core, _ = asking()
    answer(core, "#lab01#d1")
    core.on_membership(["#lab01#d1", "#lab10#d1", ME], 1.5)          # lab02 left
    answer(core, "#lab10#d1", now_s=2.0)
    assert core.done and "still present" in core.ended
    assert core.summary().missing == {"#lab02#d1": "left the group"}


def test_quit_counts_members_leaving_and_names_those_that_stay():
    core, sent = asking("Z", timeout_s=10)
    assert sent[0].data == b"Z"
    core.on_membership(["#lab10#d1", ME], 1.0)
    core.tick(10.3)
    summary = core.summary()
    assert [r.member for r in summary.rows] == ["#lab01#d1", "#lab02#d1"] and summary.rows[0].answer is None
    assert summary.missing == {"#lab10#d1": "still in the group"}
    core2, _ = asking("Z")
    core2.on_membership([ME], 1.0)
    assert core2.done and core2.summary().complete


def test_message_is_done_once_sent_and_an_empty_roll_call_is_not_a_success():
    core, sent = asking("1", "hello")
    assert sent == [lc.SendRequest(b"1hello", 77)] and core.done and core.summary().missing == {}
    empty, _ = asking(members=[])
    assert empty.done and empty.ended == "nobody is in the roll call" and not empty.summary().complete


def test_the_time_out_covers_a_roll_call_that_never_comes():
    core = lc.AskCore(lc.Request("2"), 1, ME, 3.0)
    core.start(10.0)
    core.tick(13.0)
    assert core.done and "before the roll call" in core.ended


# ---- rendering --------------------------------------------------------------------------------

def files_summary():
    rows = [lc.Row(m, lc.make_answer("4", files=f, kbytes=k, truncated=t), ms)
            for m, f, k, t, ms in (("#lab2#d1", 5, 900, False, 3.0), ("#lab10#d1", 1, 5000, True, 4.0),
                                   ("#lab1#d1", 7, 10, False, 2.0))]
    asked = ["#lab1#d1", "#lab10#d1", "#lab2#d1", "#lab3#d1"]
    return lc.Summary("files", asked, rows, {"#lab3#d1": "no answer"}, "time-out", {})


def test_rows_sort_by_machine_naturally_or_by_any_column():
    summary = files_summary()
    assert [r["machine"] for r in lc.answer_rows(summary)] == ["lab1", "lab2", "lab10"]
    assert [r["machine"] for r in lc.answer_rows(summary, "kbytes", reverse=True)] == ["lab10", "lab2", "lab1"]
    assert [r["machine"] for r in lc.answer_rows(summary, "files")] == ["lab10", "lab2", "lab1"]


def test_json_is_one_object_per_machine_then_the_summary():
    lines = [json.loads(line) for line in lc.render_json(files_summary())]
    assert lines[0] == {"machine": "lab1", "files": 7, "kbytes": 10, "truncated": False, "ms": 2.0}
    assert lines[-1]["asked"] == 4 and lines[-1]["answered"] == 3 and lines[-1]["missing"] == ["lab3"]


def test_csv_is_the_table_and_the_summary_line_names_the_missing():
    assert lc.render_csv(files_summary(), "kbytes").splitlines() == [
        "machine,files,kbytes,truncated,ms", "lab1,7,10,no,2.0", "lab2,5,900,no,3.0", "lab10,1,5000,yes,4.0"]
    assert lc.summary_line(files_summary()) == "files: asked 4, answered 3; not answered: lab3 (no answer) [time-out]"


def test_the_same_name_on_two_daemons_shows_which_daemon():
    assert lc.display_names(["#lab1#d1", "#lab1#d2", "#lab2#d1"]) == {
        "#lab1#d1": "lab1@d1", "#lab1#d2": "lab1@d2", "#lab2#d1": "lab2"}


def test_the_table_renders_with_rich_and_in_plain_text():
    plain = lc.render_table(files_summary(), plain=True)
    assert plain.splitlines()[1].split() == ["machine", "files", "kbytes", "truncated", "ms"]
    assert plain.splitlines()[2].split() == ["lab1", "7", "10", "no", "2.0"]
    if lc.rich is not None:
        from rich.console import Console
        console = Console(record=True, width=100)
        console.print(lc.render_table(files_summary()))
        text = console.export_text()
        assert "files: 3 of 4 answered" in text and "lab10" in text and "5000" in text



def test_the_plain_table_and_the_csv_have_the_same_rows_in_the_same_order():
    for sort, reverse in (("machine", False), ("kbytes", True), ("truncated", False)):
        plain = lc.render_table(files_summary(), sort, reverse, plain=True).splitlines()[1:]
        csv_lines = lc.render_csv(files_summary(), sort, reverse).splitlines()
        assert [line.split() for line in plain] == [line.split(",") for line in csv_lines], sort

# ---- names, keys, command line ----------------------------------------------------------------

@pytest.mark.parametrize("host, name", [("lab07", "lab07"), ("lab07.inf.ufsc.br", "lab07"),
                                        ("lab-pc-0123", "lab-c-0123"), ("$weird#host", "weirdhost"), ("", "agent")])
def test_default_agent_name_fits_spread_and_keeps_the_distinguishing_end(host, name):
    assert lc.default_agent_name(host) == name
    lc.check_agent_name(name)


@pytest.mark.parametrize("bad", ["", "elevenchars", "$ask", "a#b", "a b"])
def test_agent_names_that_spread_or_the_askers_would_trip_on_are_refused(bad):
    with pytest.raises(ValueError):
        lc.check_agent_name(bad)


def test_keygen_writes_a_private_key_and_never_overwrites(tmp_path):
    path = str(tmp_path / "lab.key")
    assert lc.run_keygen(path, say=lambda _: None) == 0
    assert len(lc.load_key(path)) == lc.KEY_BYTES and (os.stat(path).st_mode & 0o777) == 0o600
    assert lc.key_file_warning(path) is None
    with pytest.raises(lc.ToolError, match="never overwrites"):
        lc.run_keygen(path)
    os.chmod(path, 0o644)
    assert "chmod 600" in lc.key_file_warning(path)
    (tmp_path / "bad.key").write_text("not hex\n")
    (tmp_path / "short.key").write_text("abcd\n")
    with pytest.raises(lc.ToolError, match="not a key file"):
        lc.load_key(str(tmp_path / "bad.key"))
    with pytest.raises(lc.ToolError, match="at least 16"):
        lc.load_key(str(tmp_path / "short.key"))


def run_labctl(*argv, stdin=None):
    return subprocess.run([sys.executable, "labctl.py", *argv], cwd=ROOT, capture_output=True, text=True,
                          timeout=60, input=stdin)


@pytest.mark.parametrize("argv", [["ask", "running"], ["ask", "free", "extra"], ["ask", "files", "a/b"],
                                  ["ask", "free", "--timeout", "-1"], ["ask", "free", "--sort", "kbytes"],
                                  ["ask", "dance"], ["agent", "--name", "$ask"], ["ask", "free", "--group", "a b"],
                                  ["ask", "free", "--json", "--csv"]])
def test_bad_arguments_exit_2_with_one_line_and_no_traceback(argv):
    done = run_labctl(*argv)
    assert done.returncode == 2 and "Traceback" not in done.stderr and "error" in done.stderr


def test_no_daemon_exits_2_with_a_clear_line():
    from conftest import free_port
    port = free_port()
    for argv in (["ask", "free"], ["agent", "--name", "x"]):
        done = run_labctl(*argv, "--daemon", f"{port}@127.0.0.1")
        assert done.returncode == 2 and "cannot reach the daemon" in done.stderr and "Traceback" not in done.stderr


def test_a_bad_key_file_exits_2():
    done = run_labctl("ask", "quit", "--key", "no-such-file.key")
    assert done.returncode == 2 and "cannot read the key file" in done.stderr


def test_the_menu_asks_for_the_function_and_its_argument(monkeypatch):
    asked = []

    def fake_run_ask(args, say):
        asked.append((args.function, args.text))
        return 3
    monkeypatch.setattr(lc, "run_ask", fake_run_ask)
    answers = iter(["4", "mp3", "z", "no", "Z", "yes", "9", "2", "q"])
    shown = []
    args = argparse.Namespace(group="GG", daemon="4803@127.0.0.1", key=None, function=None, text=None)
    code = lc.run_menu(args, say=shown.append, read=lambda prompt: next(answers))
    assert asked == [("files", "mp3"), ("quit", ""), ("free", "")] and code == 3
    assert "1  message to every screen   (needs --key)" in shown[0] and any("choose 1-5" in s for s in shown)


def test_the_menu_ends_at_end_of_input_without_a_traceback():
    done = run_labctl("ask", stdin="")
    assert done.returncode == 0 and "Z  stop the agents" in done.stdout and "Traceback" not in done.stderr


def test_the_cores_and_rendering_work_without_rich():
    code = ("import sys; sys.modules['rich'] = None; import labctl, json; "
            "s = labctl.Summary('free', ['#a#d'], [labctl.Row('#a#d', labctl.make_answer('2', free=True, users=0), 1.0)], "
            "{}, 'every member answered', {}); print(labctl.render_table(s))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[2].split() == ["a", "yes", "0", "1.0"]
