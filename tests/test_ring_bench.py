"""bench/ring_throughput.py tells a row that measured the ring from one that did not.

A receiver that got fewer messages than were sent is either a fault of the ring or of the
benchmark: the receiver's report names the missing sequence numbers and the membership messages
it saw, and every case has its own ready file and group (a ready file shared by two cases on the
same daemons started the second case's sender before its receiver had joined: its first
messages went to a group with nobody in it). Tier 1 for the pure parts; one short real run of
--key-compare (two starts of three daemons on 127.0.0.1-3) is marked slow like the other
real-process ring tests."""
import importlib.util
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_spec = importlib.util.spec_from_file_location("ring_throughput", os.path.join(ROOT, "bench", "ring_throughput.py"))
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def test_every_case_has_its_own_ready_file_and_group(tmp_path):
    group1, ready1 = bench.case_names(str(tmp_path), 1000)
    open(ready1, "w").close()  # the first case's receiver is ready
    group2, ready2 = bench.case_names(str(tmp_path), 1000)  # same daemons, service and size
    assert ready2 != ready1 and not os.path.exists(ready2)  # the second waits for its own receiver
    assert group2 != group1
    assert len(group2) < 32  # MAX_GROUP_NAME


def test_missing_ranges_are_runs_of_sequence_numbers():
    seen = bytearray(10)
    for seq in (3, 4, 6, 7, 8):
        seen[seq] = 1
    assert bench.missing_ranges(seen) == [[0, 2], [5, 5], [9, 9]]
    assert bench.missing_ranges(bytearray(b"\x01" * 5)) == []
    alternate = bytearray(b"\x00\x01" * 30)
    runs = bench.missing_ranges(alternate, limit=3)
    assert runs == [[0, 0], [2, 2], [4, 4], ["27 more runs"]]


def test_tally_counts_duplicates_and_wrong_order():
    tally = bench.ReceiverTally()
    seen = bytearray(5)
    for seq in (0, 2, 1, 2, 4, 99):
        tally.note(seq, seen)
    detail = tally.detail(seen, "all")
    assert detail["duplicates"] == 1
    assert detail["out_of_order"] == 2  # 1 after 2; and 99, not one of this case's numbers
    assert detail["missing"] == [[3, 3]]


def test_shortfall_names_what_went_wrong():
    whole = (10, 1.0, 10000, 0.001, 0.002, {"sent": 10, "missing": [], "memberships": []})
    assert bench.shortfall_text(10, whole) == ""
    short = (8, 1.0, 8000, 0.001, 0.002, {
        "sent": 10, "missing": [[0, 1]], "ended": "30 s without a message", "memberships": [
            "MembershipMessage(TRANSITIONAL None of bench1000_2 members=[] id=None)"]})
    text = bench.shortfall_text(10, short)
    assert "receiver got 8 of 10" in text and "0..1" in text and "30 s without a message" in text
    assert "1 membership messages" in text and "TRANSITIONAL" in text
    unsent = (5, 1.0, 5000, 0.001, 0.002, {"sent": 5, "missing": [[5, 9]], "memberships": []})
    assert "the sender sent only 5" in bench.shortfall_text(10, unsent)


def test_rows_with_a_shortfall_are_marked_and_explained():
    notes = []
    whole = (10, 1.0, 10000, 0.001, 0.002, {"sent": 10, "missing": [], "memberships": []})
    assert bench.footnote(notes, 3, "AGREED", 1000, 10, whole) == "" and notes == []
    short = (9, 1.0, 9000, 0.001, 0.002, {"sent": 10, "missing": [[0, 0]], "ended": "x",
                                          "memberships": []})
    assert bench.footnote(notes, 3, "SAFE", 1000, 10, short) == " (1)"
    assert notes[0].startswith("(1) 3 daemons, SAFE, 1000 B: receiver got 9 of 10")


@pytest.mark.slow
def test_key_compare_runs_both_rounds_and_counts_every_message():
    """Both starts (without and with the key) run the same case on the same tmpdir: the second
    case must wait for its own receiver, and every message must come (a row with a shortfall
    would carry a note)."""
    out = subprocess.run([sys.executable, "bench/ring_throughput.py", "--key-compare", "--repeat", "1",
                          "--count", "300", "--services", "AGREED"], capture_output=True, text=True,
                         timeout=240, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    rows = [line for line in out.stdout.splitlines() if line.startswith("| 3 | AGREED | 1000 |")]
    assert [row.split("|")[4].strip() for row in rows] == ["no", "yes"], out.stdout
    assert all(row.split("|")[6].strip() == "300" for row in rows), out.stdout
    assert "ratio" in out.stdout and "(1)" not in out.stdout


def test_a_new_ring_or_a_cut_client_in_the_daemons_logs_is_reported(tmp_path):
    """The receiver hears of a ring change only if its group changed (the sender is no member):
    the daemons' logs say it in any case."""
    log = tmp_path / "s1_d3_2.log"
    log.write_text("18:54:40 ring: 7.1 d2 RECOVERY -> OPERATIONAL: installed ring 2/d1#1 {d1#1,d2#2} (startup)\n")
    marks = {str(log): bench.log_size(str(log))}  # the case starts here
    with open(log, "a") as f:
        f.write("18:54:48 ring: 7562.687 d2 OPERATIONAL -> GATHER: token lost (nothing for 0.60 s)\n"
                "18:54:49 ring: 7562.960 d2 RECOVERY -> OPERATIONAL: installed ring 3/d1#6865 "
                "{d1#6865,d2#6734,d3#6789} (token lost (nothing for 0.60 s))\n"
                "18:54:50 session #rcv#d3 closed: not reading (more than 1000 queued messages)\n")
    events = bench.daemon_events(marks)
    assert len(events) == 2 and "startup" not in " ".join(events)
    whole = (10, 1.0, 10000, 0.001, 0.002, {"sent": 10, "missing": [], "memberships": [],
                                            "daemon_events": events})
    text = bench.shortfall_text(10, whole)
    assert "the ring changed during the case (1 new rings installed" in text
    assert "token lost" in text and "closed: not reading" in text
    assert bench.daemon_events({str(tmp_path / "gone.log"): 0}) == []


def test_side_by_side_summary_when_the_real_daemons_cpu_time_rounds_to_zero():
    """A short run of the real daemons took less than the kernel's 10 ms tick: 0 s of CPU, and the
    summary divided by it (seen once in the full suite under load)."""
    spec = importlib.util.spec_from_file_location("side_by_side", os.path.join(ROOT, "bench", "side_by_side.py"))
    sbs = importlib.util.module_from_spec(spec)
    sys.modules["side_by_side"] = sbs   # its dataclasses look their module up there
    spec.loader.exec_module(sbs)
    mini = sbs.Run("mini", 4483, 4905, [0.02, 0.02, 0.02])
    text = sbs.summary({"mini": [mini], "real": [sbs.Run("real", 7477, 7398, [0.0, 0.0, 0.0])]}, 500, "case")
    assert "ratio 0.60" in text and "CPU per message" in text and "ratio n/a" in text, text
    text = sbs.summary({"mini": [mini], "real": [sbs.Run("real", 7477, 7398, [0.01, 0.0, 0.0])]}, 500, "case")
    assert text.endswith("real 20 us, ratio 6.00"), text
def test_accelerated_variants_are_spread_conf_lines():
    variants = bench.accelerated_variants("off, 15,300")
    assert [label for label, _ in variants] == ["off", "window 15", "window 300"]
    assert variants[0][1] == ["AcceleratedRing = false"]
    assert variants[1][1] == ["AcceleratedRing = true", "AcceleratedWindow = 15"]
    assert "PersonalWindow = 300" in variants[2][1]  # Spread refuses a window above the personal one
    for lines in (lines for _, lines in variants):  # each one a file the daemon accepts
        bench.sp.parse_spread_conf("Spread_Segment 127.0.0.255:4803 { d1 127.0.0.1 }\n" + "\n".join(lines))
    for bad in ("off", "off,fast", "15,-2"):
        with pytest.raises(ValueError):
            bench.accelerated_variants(bad)


@pytest.mark.slow
def test_ring_lan_measures_both_protocols_on_shaped_namespace_links():
    """bench/ring_lan.py: both ring protocols on three namespace hosts whose links are limited
    to 20 Mbit/s; every message comes (the namespaces' removal is labnet's, tested there)."""
    import labnet
    reason = labnet.available(("tc",))
    if reason:
        pytest.skip("network namespaces: %s" % reason)
    out = subprocess.run([sys.executable, "bench/ring_lan.py", "--count", "300", "--repeat", "1",
                          "--services", "AGREED", "--mbit", "20"], capture_output=True, text=True,
                         timeout=240, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    rows = [line.split("|") for line in out.stdout.splitlines() if line.startswith("| AGREED |")]
    assert [row[2].strip() for row in rows] == ["off", "window 15"], out.stdout
    assert all(row[4].strip() == "300" for row in rows), out.stdout
    assert "ratio" in out.stdout and "links 20 Mbit/s" in out.stdout
def test_ring_cores_counts_every_message_through_three_cores_and_prints_its_figure():
    """bench/ring_cores.py: the in-process ring delivers every message to both receivers (it
    exits 2 otherwise), once for ours and once against another copy of the same file."""
    out = subprocess.run([sys.executable, "bench/ring_cores.py", "--count", "400", "--repeat", "1",
                          "--against", "spread_mini.py"], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "us CPU per message, a receiving core" in out.stdout and "this / against" in out.stdout
    assert "rerun: python3 bench/ring_cores.py" in out.stdout


def test_ring_cores_with_a_lans_packets_splits_the_cpu_by_core_and_profiles_a_receiver():
    """--packet-bytes 1400 (one 1000-byte message a packet): every message still reaches both
    receivers, each core's CPU is printed and the rerun line keeps the option; --profile d2
    profiles the receiver's inputs alone (its decoding is there, and the profiler's cost is on
    d2, not on d3, which does the same work)."""
    out = subprocess.run([sys.executable, "bench/ring_cores.py", "--count", "400", "--repeat", "1",
                          "--packet-bytes", "1400"], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stdout + out.stderr
    run = next(line for line in out.stdout.splitlines() if line.startswith("run 1 this"))
    figures = [float(x) for x in re.findall(r"d[123] ([0-9.]+)", run)]
    assert len(figures) == 3 and all(f > 0 for f in figures), run
    assert "--packet-bytes 1400" in out.stdout.splitlines()[-1]
    profiled = subprocess.run([sys.executable, "bench/ring_cores.py", "--count", "400", "--profile", "d2",
                               "--packet-bytes", "1400"], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert profiled.returncode == 0, profiled.stdout + profiled.stderr
    assert "(_decode_plain_data)" in profiled.stdout, profiled.stdout
    # the profiler's cost lands on d2 alone: d3 does the same work unprofiled
    cores = dict(re.findall(r"(d[123]) ([0-9.]+)", profiled.stdout.splitlines()[-1]))
    assert float(cores["d2"]) > 1.5 * float(cores["d3"]), profiled.stdout.splitlines()[-1]


def test_ring_cores_key_compare_delivers_everything_with_a_key_and_prints_the_cost():
    """--key-compare runs the cores with a ring key too (every packet tagged and checked): a
    wrong tag would lose messages, and the bench exits 2 when a receiver is short."""
    out = subprocess.run([sys.executable, "bench/ring_cores.py", "--count", "400", "--repeat", "1",
                          "--key-compare"], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "run 1 key" in out.stdout and "key / no key" in out.stdout, out.stdout
    assert "--key-compare" in out.stdout.splitlines()[-1]


@pytest.mark.slow
def test_ring_hostile_benchmark_runs_and_the_key_keeps_the_ring_whole():
    """bench/ring_hostile.py once broke silently when start_daemons changed its signature (its
    daemons took the key file for spread_mini.py): a short keyed run against real daemons on
    127.0.0.1-3. With the key no hostile datagram may change a membership or lose a message."""
    if os.geteuid() != 0:
        pytest.skip("ring_hostile.py captures the ring's datagrams on lo with a raw socket: needs root")
    done = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "ring_hostile.py"), "--count", "2000",
                           "--modes", "key", "--capture-s", "1", "--settle-s", "2", "--seed", "3"],
                          capture_output=True, text=True, timeout=180, cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    row = next(line for line in done.stdout.splitlines() if line.startswith("| yes |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[4:8] == ["0", "0", "0", "0"], row  # changes, lost, altered, transitional then data
    assert cells[8] == "3 of 3", row
