"""logbm.py: the connection log (8.1.3), the usage chart (Figure 48), the report (Quadros 6-13,
Figures 53-55) and the LOGBM recorder core, without sockets. Golden files in tests/data/."""
from __future__ import annotations

import csv
import datetime
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

import floodtools as ft
import logbm

DATA = Path(__file__).parent / "data"
ROOT = Path(__file__).resolve().parent.parent


def run_logbm(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "logbm.py", *argv], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)


# ---- connection log line (8.1.3: AAMMDD HH:MM:SS E NAME) -----------------------------------

def test_conn_line_round_trip_in_the_thesis_format():
    event = logbm.ConnEvent(datetime.datetime(2026, 11, 20, 8, 5, 9), "C", "lab07")
    line = logbm.format_conn_line(event)
    assert line == "261120 08:05:09 C lab07"
    assert logbm.parse_conn_line(line) == event


@pytest.mark.parametrize("bad", ["", "261120 08:05:09 X lab07", "261320 08:05:09 C lab07",
                                 "261120 25:00:00 D lab07", "261120 08:05:09 C", "a b c d e"])
def test_conn_line_rejects_garbage_with_a_reason(bad):
    with pytest.raises(ValueError):
        logbm.parse_conn_line(bad)


def test_member_name_is_the_private_name():
    assert logbm.member_name("#lab07#daemon1") == "lab07"
    assert logbm.member_name("oddname") == "oddname"


def test_connlog_core_writes_c_and_d_from_member_lists():
    core = logbm.ConnLogCore("#connlog#d1")
    t = datetime.datetime(2026, 11, 20, 8, 0, 0)
    first = core.on_membership(["#connlog#d1", "#lab01#d1"], t)
    assert [logbm.format_conn_line(e) for e in first] == ["261120 08:00:00 C lab01"]
    later = t + datetime.timedelta(minutes=5)
    events = core.on_membership(["#connlog#d1", "#lab02#d1"], later)
    assert [logbm.format_conn_line(e) for e in events] == ["261120 08:05:00 C lab02", "261120 08:05:00 D lab01"]
    assert core.on_membership(["#connlog#d1", "#lab02#d1"], later) == []   # nothing changed
    assert core.counts == {"C": 2, "D": 1}


# ---- usage chart (Figure 48) ---------------------------------------------------------------

def conn_events():
    events = []
    for _, line in logbm.read_lines(str(DATA / "connections_known.log")):
        try:
            events.append(logbm.parse_conn_line(line))
        except ValueError:
            pass
    return events


@pytest.mark.parametrize("machine", ["lab07", "lab03"])
def test_usage_chart_of_the_known_log_is_the_known_chart(machine):
    chart = logbm.usage_chart(conn_events(), machine)
    text = logbm.render_usage_text(chart, "tests/data/connections_known.log")
    assert text == (DATA / f"usage_{machine}.txt").read_text()


def test_usage_chart_cells_computed_by_hand():
    chart = logbm.usage_chart(conn_events(), "lab07")
    day1 = chart.rows[0][1]
    # 08:00-12:00 on (cells 32-47), off at 12:00 and on at 12:02 (R in cell 48), on to 17:30.
    assert day1 == "." * 32 + "#" * 16 + "R" + "#" * 21 + "." * 26
    assert chart.rows[1][1] == "." * 96                       # a day it never came on
    assert chart.rows[3][1] == "#" * 5 + "." * 35 + "#" + "." * 55   # on across midnight; a 5 min session
    assert abs(chart.rows[0][2] - (4 + 5 + 28 / 60)) < 1e-9
    assert chart.reboots == 1


def test_usage_chart_reboot_interval_is_a_setting():
    chart = logbm.usage_chart(conn_events(), "lab07", reboot_s=60)   # 120 s gap is no reboot now
    assert "R" not in chart.rows[0][1] and chart.rows[0][1][48] == "#"


def test_usage_first_d_means_on_since_the_log_began_and_last_c_on_until_its_end():
    chart = logbm.usage_chart(conn_events(), "lab03")
    assert chart.rows[0][1] == "." * 26 + "#" * 70            # log began 06:30
    assert chart.rows[3][1] == "." * 68 + "#" * 4 + "." * 24  # on 17:00 until the log ends 18:00


def test_usage_command_prints_the_chart_and_explains_an_unknown_machine():
    done = run_logbm("usage", "tests/data/connections_known.log", "--machine", "lab07")
    assert done.returncode == 0 and done.stdout == (DATA / "usage_lab07.txt").read_text()
    assert "1 malformed" in done.stderr
    missing = run_logbm("usage", "tests/data/connections_known.log", "--machine", "lab99")
    assert missing.returncode == 1 and "lab02, lab03, lab07" in missing.stderr


# ---- report (Quadros 6-13, Figures 53-55) --------------------------------------------------

def known_report():
    records, skipped = logbm.read_records([str(DATA / "flood_known.log")])
    return logbm.build_report(records, skipped)


def test_report_of_the_known_log_is_the_known_markdown():
    done = run_logbm("report", "tests/data/flood_known.log")
    assert done.returncode == 0
    assert done.stdout == (DATA / "flood_known.report.md").read_text()


def test_report_csv_has_exactly_the_columns_and_the_known_rows():
    done = run_logbm("report", "tests/data/flood_known.log", "--format", "csv")
    assert done.stdout == (DATA / "flood_known.csv").read_text()
    rows = list(csv.DictReader(io.StringIO(done.stdout)))
    assert list(rows[0].keys()) == ["machine", "batch", "count", "size", "service", "received", "elapsed_s",
                                    "msgs_per_s"]
    # Computed by hand from the fixture: 500 messages in 0.25 s, 400 in 0.8 s.
    assert {"machine": "pc02", "batch": "r100x500", "msgs_per_s": "2000.0"}.items() <= rows[1].items()
    assert rows[5]["received"] == "400" and rows[5]["msgs_per_s"] == "500.0"


def test_report_means_and_comparisons_by_hand():
    report = known_report()
    by_batch = {b.batch: b for b in report.batches}
    assert [b.batch for b in report.batches] == ["r100x500", "s100x500", "r1000x500", "s1000x500"]
    assert by_batch["r1000x500"].machines == 3 and by_batch["r1000x500"].ended == 2   # pc10 never ended
    assert by_batch["s100x500"].complete == 2                                          # pc10 got 400
    assert abs(by_batch["s1000x500"].mean_elapsed_s - (2.5 + 4 + 5) / 3) < 1e-9
    rel_safe = {(c["size"]): c for c in report.reliable_vs_safe}
    assert abs(rel_safe[1000]["time_ratio"] - ((2.5 + 4 + 5) / 3) / 1.625) < 1e-9
    small_large = {c["service"]: c for c in report.small_vs_large}
    assert abs(small_large["safe"]["time_ratio"] - 5.0) < 1e-9
    assert [(r.machine, r.batch) for r in report.incomplete] == [("pc10", "r1000x500")]
    assert report.duplicates == 1 and len(report.skipped) == 2


def test_report_json_and_machines_in_natural_order():
    done = run_logbm("report", "tests/data/flood_known.log", "--format", "json")
    data = json.loads(done.stdout)
    assert [r["machine"] for r in data["rows"][:3]] == ["pc01", "pc02", "pc10"]
    assert data["incomplete"][0]["machine"] == "pc10"
    assert len(data["reliable_vs_safe"]) == 2


def test_report_png_says_when_matplotlib_is_missing(tmp_path):
    done = run_logbm("report", "tests/data/flood_known.log", "--png", str(tmp_path / "c.png"))
    assert done.returncode == 0
    try:
        import matplotlib  # noqa: F401
        assert (tmp_path / "c.png").stat().st_size > 0
    except ImportError:
        assert "matplotlib is not installed" in done.stderr and not (tmp_path / "c.png").exists()


def test_report_of_a_missing_file_is_one_clear_line():
    done = run_logbm("report", "no-such-file.log")
    assert done.returncode == 1 and "No such file" in done.stderr and "Traceback" not in done.stderr


def test_bad_arguments_exit_2():
    assert run_logbm("usage", "x.log").returncode == 2            # --machine missing
    assert run_logbm("report", "x.log", "--format", "xml").returncode == 2


# ---- LOGBM core ----------------------------------------------------------------------------

def test_logbm_core_writes_records_with_its_clock_and_ignores_others():
    core = logbm.LogbmCore()
    rec = ft.LogRecord("start", "2026-11-20", "10:00:00.000", "pc01", "b1", 10, 100, "safe", "env")
    line = core.on_message(ft.format_record(rec).encode(), 1_700_000_000.0)
    assert line.startswith(ft.format_record(rec) + " logbm=")
    assert ft.parse_record(line).extra["logbm"] == ft.iso_time(1_700_000_000.0)
    assert core.on_message(b"hello from another team", 0.0) is None
    assert core.on_message(b"FLOODLOG rec=end machine=pc01", 0.0) is None
    assert core.on_message(b"\xff" * 2000, 0.0) is None
    assert core.written == 1 and sum(core.ignored.values()) == 3
    table = logbm.render_record_table(core.snapshot(), "flood.log", plain=True).splitlines()
    assert table[0] == "LOGBM -> flood.log: 1 records, 1 batches open, ignored 3"
    assert table[2].split() == ["pc01", "1", "start", "10:00:00.000", "b1", "-/10", "-", "-", "-"]
    if logbm.rich is not None:
        from rich.console import Console
        console = Console(record=True, width=120)
        console.print(logbm.render_record_table(core.snapshot(), "flood.log"))
        assert [cell.strip() for cell in console.export_text().splitlines()[4].split("│")[1:-1]] == [
            "pc01", "1", "start 10:00:00.000", "b1", "-/10", "-", "-", "-"]


def test_everything_works_in_plain_text_without_rich(monkeypatch):
    code = ("import sys, runpy; sys.modules['rich'] = None; sys.argv = sys.argv[1:]; "
            "runpy.run_path(sys.argv[0], run_name='__main__')")
    for argv, golden in ((["logbm.py", "report", "tests/data/flood_known.log"], "flood_known.report.md"),
                         (["logbm.py", "usage", "tests/data/connections_known.log", "--machine", "lab07"],
                          "usage_lab07.txt")):
        done = subprocess.run([sys.executable, "-c", code, *argv], cwd=ROOT, capture_output=True, text=True,
                              timeout=60)
        assert done.stdout == (DATA / golden).read_text(), done.stderr
    monkeypatch.setattr(logbm, "rich", None)
    table = logbm.render_record_table({"written": 1, "ignored": {}, "open": 0, "machines": [
        {"name": "pc01", "records": 1, "rec": "start", "batch": "b1", "count": 5, "size": 100, "service": "safe",
         "received": None, "elapsed_s": None, "end": "", "time": "10:00:00.000"}]})
    assert table.splitlines()[1].split() == ["machine", "records", "last", "batch", "received/count", "elapsed_s",
                                             "msgs/s", "end"]


def test_two_runs_with_the_same_batch_ids_stay_apart(tmp_path):
    for name in ("nine", "many"):
        (tmp_path / f"{name}.log").write_text((DATA / "flood_known.log").read_text())
    runs, skipped = logbm.read_runs([str(tmp_path / "nine.log"), str(tmp_path / "many.log")])
    report = logbm.build_report(runs, skipped)
    assert len(report.rows) == 2 * 11 and len(report.batches) == 8
    assert {b.batch for b in report.batches} >= {"nine:r100x500", "many:s1000x500"}
    assert logbm.run_labels(["a/flood.log", "b/flood.log"]) == ["a", "b"]
    assert logbm.run_labels(["x/flood.log", "x/flood.log"]) == ["run1", "run2"]


def test_a_batch_id_used_again_is_a_new_batch():
    def rec(kind, received=0):
        return ft.LogRecord(kind, "2026-11-20", "10:00:00.000", "pc01", "test", 5, 100, "safe", "env",
                            received=received, elapsed_s=0.1 if kind == "end" else 0.0,
                            end="complete" if kind == "end" else "")
    report = logbm.build_report([rec("start"), rec("end", 5), rec("start"), rec("end", 4), rec("end", 4)])
    assert [(r.batch, r.received) for r in report.rows] == [("test", 5), ("test#2", 4)]
    assert report.duplicates == 1


try:
    from hypothesis import given, strategies as st
except ImportError:  # pragma: no cover
    given = None

if given is not None:
    T0 = datetime.datetime(2026, 11, 20, 0, 0, 0)
    event_lists = st.lists(st.tuples(st.integers(0, 3 * 86400), st.sampled_from("CD"),
                                     st.sampled_from(["lab01", "lab02"])), min_size=1, max_size=30)

    @given(event_lists, st.integers(0, 3600))
    def test_usage_chart_invariants(raw, reboot_s):
        events = [logbm.ConnEvent(T0 + datetime.timedelta(seconds=t), e, n) for t, e, n in sorted(raw)]
        chart = logbm.usage_chart(events, "lab01", reboot_s)
        for _day, cells, hours in chart.rows:
            assert len(cells) == 96 and set(cells) <= {"#", ".", "R"}
            assert 0 <= hours <= 24 + 1e-9
            # every hour on is inside cells drawn on (a cell is 0.25 h)
            assert hours <= 0.25 * sum(c != "." for c in cells) + 1e-9
        assert chart.reboots <= chart.sessions
        for event in events:   # the line format round-trips
            assert logbm.parse_conn_line(logbm.format_conn_line(event)) == event
