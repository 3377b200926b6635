"""floodtools.py and logbm.py as real processes against spread_mini's daemon on loopback
(section 8.2: FLOOENV, FLOOREC, LOGBM; 8.1.3: the connection log)."""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT, Procs, free_tcp_port, unique_name, wait_for

import floodtools as ft

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not (ROOT / "spread_mini.py").exists(), reason="spread_mini.py not merged yet")]


@pytest.fixture
def daemon(procs):
    """A spread_mini daemon on a random loopback port; returns its spread_name."""
    started = []

    def start(*extra: str) -> str:
        port = free_tcp_port()
        proc = procs.start("spread_mini.py", "daemon", "--port", str(port), *extra)
        name = f"{port}@127.0.0.1"

        def up():
            assert proc.poll() is None, Procs.output(proc)
            try:
                ft._spread().connect(name, unique_name("p")[:10], group_membership=False).disconnect()
                return True
            except Exception:
                return False
        wait_for(up, 20)
        started.append(proc)
        return name
    yield start
    for proc in started:      # SIGTERM first, so the daemon removes its unix socket /tmp/<port>
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass


def log_records(path: Path):
    out = []
    if path.exists():
        for line in path.read_text().splitlines():
            out.append(ft.parse_record(line))   # every line written is whole and parses
    return out


def start_recv(procs, daemon_name, name, *extra):
    proc = procs.start("floodtools.py", "recv", "--name", name, "--daemon", daemon_name, *extra)
    # "member of": its join has taken effect, so a batch sent now reaches it from its start marker
    wait_for(lambda: "member of 'flood'" in Procs.output(proc) or proc.poll() is not None, 20)
    assert proc.poll() is None, Procs.output(proc)
    return proc


def start_logbm(procs, daemon_name, out: Path):
    proc = procs.start("logbm.py", "record", "--plain", "--daemon", daemon_name, "--out", str(out))
    wait_for(lambda: "joined" in Procs.output(proc) or proc.poll() is not None, 20)
    assert proc.poll() is None, Procs.output(proc)
    return proc


def send(daemon_name, *argv, timeout=120):
    return subprocess.run([sys.executable, "floodtools.py", "send", "--daemon", daemon_name, *argv],
                          cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def test_safe_batch_of_2000_by_1000_bytes_to_two_receivers_gives_two_start_end_pairs(procs, daemon, tmp_path):
    name = daemon()
    log = tmp_path / "flood.log"
    start_logbm(procs, name, log)
    start_recv(procs, name, "pc01")
    start_recv(procs, name, "pc02")
    done = send(name, "--count", "2000", "--size", "1000", "--service", "safe", "--batch", "b2000", "--name", "env")
    assert done.returncode == 0, done.stderr
    assert "msgs/s" in done.stdout and "Mbit/s" in done.stdout and "sender" in done.stdout
    wait_for(lambda: sum(r.rec == "end" for r in log_records(log)) == 2, 60)
    records = log_records(log)
    for machine in ("pc01", "pc02"):
        mine = [r for r in records if r.machine == machine]
        assert [r.rec for r in mine] == ["start", "end"]
        start, end = mine
        assert (start.batch, start.count, start.size, start.service, start.sender) == ("b2000", 2000, 1000, "safe", "env")
        assert (end.received, end.end) == (2000, "complete") and end.elapsed_s > 0
    report = subprocess.run([sys.executable, "logbm.py", "report", str(log), "--format", "csv"], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert report.stdout.count(",b2000,2000,1000,safe,2000,") == 2


def test_send_json_is_one_object_with_intervals_and_a_sum(daemon):
    import json
    name = daemon()
    done = send(name, "--count", "500", "--size", "100", "--service", "reliable", "--json")
    data = json.loads(done.stdout)
    assert data["end"]["sum"]["messages"] == 500 and data["intervals"]
    assert data["start"]["service"] == "reliable"


def test_killing_the_recorder_mid_batch_loses_no_line_written_before(procs, daemon, tmp_path):
    name = daemon()
    log = tmp_path / "flood.log"
    recorder = start_logbm(procs, name, log)
    for i in range(1, 4):
        start_recv(procs, name, f"pc0{i}")
    sender = subprocess.Popen([sys.executable, "floodtools.py", "send", "--daemon", name, "--count", "200000",
                               "--size", "100", "--service", "agreed", "--batch", "big"], cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: sum(r.rec == "start" for r in log_records(log)) == 3, 60)   # mid-batch
        recorder.send_signal(signal.SIGKILL)
        recorder.wait(timeout=10)
        printed = [line for line in Procs.output(recorder).splitlines() if line.startswith("FLOODLOG")]
        written = log.read_text().splitlines()
        assert len(printed) >= 3
        # Every line the recorder had written (it prints a line after writing and flushing it)
        # is in the file, whole.
        assert written[:len(printed)] == printed
        assert all(ft.parse_record(line) for line in written)
    finally:
        sender.kill()
        sender.wait(timeout=10)
    # A new recorder appends to the same file.
    start_logbm(procs, name, log)
    assert send(name, "--count", "10", "--size", "100", "--batch", "after").returncode == 0
    wait_for(lambda: sum(r.batch == "after" and r.rec == "end" for r in log_records(log)) == 3, 60)
    assert log.read_text().splitlines()[:len(printed)] == printed


def test_connlog_records_c_and_d_for_members_of_gg(procs, daemon, tmp_path):
    sp = ft._spread()
    name = daemon()
    out = tmp_path / "connections.log"
    connlog = procs.start("logbm.py", "connlog", "--daemon", name, "--out", str(out))
    wait_for(lambda: "joined" in Procs.output(connlog), 20)
    a = sp.connect(name, "labA", group_membership=False)
    a.join("GG")
    wait_for(lambda: out.exists() and " C labA" in out.read_text(), 20)
    # A member in another process that is killed: the daemon sees a disconnection.
    member = procs.start("-c", f"import spread_mini as sp, time\nm = sp.connect('{name}', 'labB', group_membership=False)\n"
                               f"m.join('GG')\nprint('in', flush=True)\ntime.sleep(60)")
    wait_for(lambda: " C labB" in out.read_text(), 20)
    a.leave("GG")
    wait_for(lambda: " D labA" in out.read_text(), 20)
    member.kill()
    wait_for(lambda: " D labB" in out.read_text(), 20)
    a.disconnect()
    import logbm
    events = [logbm.parse_conn_line(line) for line in out.read_text().splitlines()]
    assert [(e.state, e.name) for e in events] == [("C", "labA"), ("C", "labB"), ("D", "labA"), ("D", "labB")]


def test_slow_receiver_cut_off_by_the_daemon_says_so_records_and_reconnects(procs, daemon, tmp_path):
    name = daemon()
    log = tmp_path / "flood.log"
    start_logbm(procs, name, log)
    slow = start_recv(procs, name, "slow", "--reconnect", "--reconnect-delay", "0.2")
    slow.send_signal(signal.SIGSTOP)          # a receiver that stops reading, as in 8.2.1
    try:
        # 20 MB: more than the kernel's socket buffers plus the daemon's 1000-message limit.
        done = send(name, "--count", "20000", "--size", "1000", "--service", "reliable", "--batch", "cut")
        assert done.returncode == 0, done.stderr
    finally:
        slow.send_signal(signal.SIGCONT)
    wait_for(lambda: "DISCONNECTED" in Procs.output(slow), 60)
    wait_for(lambda: any(r.machine == "slow" and r.rec == "end" for r in log_records(log)), 60)
    [end] = [r for r in log_records(log) if r.machine == "slow" and r.rec == "end"]
    assert end.end == "disconnected" and end.received < 20000
    # --reconnect: it goes on with the next batch.
    wait_for(lambda: Procs.output(slow).count("connected as") >= 2, 30)
    assert send(name, "--count", "50", "--size", "100", "--batch", "next").returncode == 0
    wait_for(lambda: any(r.machine == "slow" and r.batch == "next" and r.rec == "end" for r in log_records(log)), 60)
    assert [r.received for r in log_records(log) if r.machine == "slow" and r.batch == "next" and r.rec == "end"] == [50]


def test_without_reconnect_a_cut_off_receiver_records_and_exits(procs, daemon, tmp_path):
    name = daemon()
    log = tmp_path / "flood.log"
    start_logbm(procs, name, log)
    slow = start_recv(procs, name, "slow")
    slow.send_signal(signal.SIGSTOP)
    try:
        assert send(name, "--count", "20000", "--size", "1000", "--batch", "cut").returncode == 0
    finally:
        slow.send_signal(signal.SIGCONT)
    assert slow.wait(timeout=60) == 3
    assert "DISCONNECTED" in Procs.output(slow) and "--reconnect" in Procs.output(slow)
    wait_for(lambda: any(r.machine == "slow" and r.end == "disconnected" for r in log_records(log)), 30)


def test_without_a_daemon_each_tool_says_so_in_one_line():
    port = free_tcp_port()
    for argv in (["floodtools.py", "send", "--count", "1"], ["floodtools.py", "recv"],
                 ["logbm.py", "record"], ["logbm.py", "connlog"]):
        done = subprocess.run([sys.executable, *argv, "--daemon", f"{port}@127.0.0.1"], cwd=ROOT,
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 1, (argv, done.stdout, done.stderr)
        assert "cannot connect" in done.stderr and "Traceback" not in done.stderr, argv


# In the two tests below the labnet fixture only skips where namespaces cannot be made: the
# experiment runner makes and removes its own.
@pytest.mark.netns
def test_experiment_runner_in_namespaces_gives_the_report(tmp_path, labnet):
    import csv
    import io
    out = tmp_path / "exp"
    done = subprocess.run([sys.executable, "floodtools.py", "experiment", "--hosts", "2", "--counts", "300",
                           "--sizes", "100", "--services", "reliable,safe", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "network namespaces" in done.stdout
    rows = list(csv.DictReader(io.StringIO((out / "report.csv").read_text())))
    assert sorted((r["machine"], r["batch"], r["received"]) for r in rows) == [
        ("pc01", "r100x300", "300"), ("pc01", "s100x300", "300"), ("pc02", "r100x300", "300"), ("pc02", "s100x300", "300")]
    assert "Reliable against Safe" in (out / "report.md").read_text()


@pytest.mark.netns
def test_experiment_with_three_daemons_in_namespaces_each_on_its_own_host(tmp_path, labnet):
    import labnet as ln
    out = tmp_path / "exp"
    done = subprocess.run([sys.executable, "floodtools.py", "experiment", "--daemons", "3", "--hosts", "4",
                           "--counts", "300", "--sizes", "1000", "--services", "safe", "--batch-timeout", "60",
                           "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "network namespaces" in done.stdout
    conf = (out / "spread.conf").read_text()
    ips = [ln.LabNet(3, tag="x").ip(d) for d in (1, 2, 3)]
    assert all(f"d{d} {ip}" in conf for d, ip in zip((1, 2, 3), ips)), conf
    ends = [r for r in ft_records(out / "flood.log") if r.rec == "end"]
    assert sorted((r.machine, r.received) for r in ends) == [(f"pc0{i}", 300) for i in (1, 2, 3, 4)]
    # pc04 went round to d1 again
    assert f"@{ips[0]}" in (out / "recv-pc04.out").read_text()


def test_experiment_with_three_daemons_on_loopback_gives_every_receiver_its_pairs(tmp_path):
    """The thesis's set-up (8.2): three daemons in a ring on 127.0.0.1..3, the receivers spread
    over them, LOGBM and the sender on the first: every receiver logs a complete start and end
    pair for every batch, whichever daemon it is connected to."""
    out = tmp_path / "exp"
    done = subprocess.run([sys.executable, "floodtools.py", "experiment", "--daemons", "3", "--hosts", "3",
                           "--loopback", "--counts", "500", "--sizes", "100,1000", "--services", "reliable,safe",
                           "--batch-timeout", "60", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    conf = (out / "spread.conf").read_text()
    assert all(f"d{d} 127.0.0.{d}" in conf for d in (1, 2, 3)), conf
    for d in (1, 2, 3):   # one ring of all three, and a receiver connected to each daemon
        # a ring of all three was installed (not necessarily the last: the runner stops the
        # daemons one by one at the end, and a daemon stopped by SIGTERM tells the others, who
        # install a ring without it at once, whichever of them noticed first giving the reason)
        rings = [line for line in (out / f"daemon-d{d}.out").read_text().splitlines()
                 if "installed ring" in line]
        assert any(all(f"d{k}#" in line for k in (1, 2, 3)) for line in rings), (d, rings)
        assert f"@127.0.0.{d}" in (out / f"recv-pc0{d}.out").read_text().split("connected as", 1)[1].split("\n")[0]
    records = ft_records(out / "flood.log")
    batches = ["r100x500", "r1000x500", "s100x500", "s1000x500"]
    for machine in ("pc01", "pc02", "pc03"):
        for batch in batches:
            mine = [r for r in records if r.machine == machine and r.batch == batch]
            assert sorted(r.rec for r in mine) == ["end", "start"], (machine, batch, mine)
            end = next(r for r in mine if r.rec == "end")
            assert end.received == end.count == 500, (machine, batch, end)
    assert "3 daemons in a ring" in (out / "report.md").read_text()


def ft_records(path: Path):
    recs = []
    for line in path.read_text().splitlines():
        if line.strip():
            recs.append(ft.parse_record(line))
    return recs


def test_receiver_with_reconnect_outlives_a_daemon_restart(procs, tmp_path):
    port = free_tcp_port()
    name = f"{port}@127.0.0.1"
    first = procs.start("spread_mini.py", "daemon", "--port", str(port))
    wait_for(lambda: "listening" in Procs.output(first), 20)
    recv = start_recv(procs, name, "pc01", "--reconnect", "--reconnect-delay", "0.2")
    first.terminate()
    first.wait(timeout=10)
    wait_for(lambda: "DISCONNECTED" in Procs.output(recv) and "trying again" in Procs.output(recv), 30)
    second = procs.start("spread_mini.py", "daemon", "--port", str(port))
    wait_for(lambda: Procs.output(recv).count("connected as") >= 2, 60)
    [back] = [line for line in Procs.output(recv).splitlines() if "(back " in line]
    assert back.startswith("FLOOREC pc01: connected as #pc01") and "after the session was lost" in back, back
    log = tmp_path / "flood.log"
    start_logbm(procs, name, log)
    assert send(name, "--count", "100", "--size", "100", "--batch", "again").returncode == 0
    wait_for(lambda: any(r.rec == "end" and r.received == 100 for r in log_records(log)), 30)
    second.terminate()


def test_connlog_with_reconnect_outlives_a_daemon_restart(procs, tmp_path):
    sp = ft._spread()
    port = free_tcp_port()
    name = f"{port}@127.0.0.1"
    first = procs.start("spread_mini.py", "daemon", "--port", str(port))
    wait_for(lambda: "listening" in Procs.output(first), 20)
    out = tmp_path / "connections.log"
    connlog = procs.start("logbm.py", "connlog", "--daemon", name, "--out", str(out), "--reconnect")
    wait_for(lambda: "joined" in Procs.output(connlog), 20)
    a = sp.connect(name, "labA", group_membership=False)
    a.join("GG")
    wait_for(lambda: out.exists() and " C labA" in out.read_text(), 20)
    first.terminate()
    first.wait(timeout=10)
    a.close()
    second = procs.start("spread_mini.py", "daemon", "--port", str(port))
    wait_for(lambda: Procs.output(connlog).count("joined") >= 2, 60)
    [back] = [line for line in Procs.output(connlog).splitlines() if "(back " in line]
    assert back.startswith("connlog: #connlog#") and "after the session was lost" in back, back
    wait_for(lambda: " D labA" in out.read_text(), 20)      # it was gone when the logger came back
    b = sp.connect(name, "labB", group_membership=False)
    b.join("GG")
    wait_for(lambda: " C labB" in out.read_text(), 20)
    b.disconnect()
    second.terminate()


def test_sender_whose_daemon_dies_says_so_in_one_line(procs):
    port = free_tcp_port()
    first = procs.start("spread_mini.py", "daemon", "--port", str(port))
    wait_for(lambda: "listening" in Procs.output(first), 20)
    group = unique_name("dies")
    watcher = ft._spread().connect(f"{port}@127.0.0.1", "watch", group_membership=False)
    watcher.join(group)
    sender = subprocess.Popen([sys.executable, "floodtools.py", "send", "--daemon", f"{port}@127.0.0.1",
                               "--count", "100000", "--rate", "1000", "--batch", "dies",
                               "--group", group], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # the daemon dies while the batch is under way: once the flood reaches the group
    deadline = time.monotonic() + 20
    while watcher.receive(timeout=max(0.0, deadline - time.monotonic())) is None:
        assert time.monotonic() < deadline, "the sender's flood never reached the group"
    first.kill()
    watcher.close()
    out, err = sender.communicate(timeout=60)
    assert sender.returncode == 1, (out, err)
    assert "ended the session during batch dies" in err and "Traceback" not in err


def test_thesis_split_keeps_quadro_4s_proportions_and_a_receiver_at_every_site():
    assert ft.thesis_split(167) == [40, 79, 48]
    assert ft.thesis_split(9) == [2, 4, 3]
    assert ft.thesis_split(3) == [1, 1, 1]
    assert all(sum(ft.thesis_split(n)) == n for n in range(1, 200))


@pytest.mark.netns
def test_experiment_over_the_thesis_topology_over_hop_links_and_over_one_ring(tmp_path, labnet):
    """Quadro 4's three sites, one daemon each, joined by 2 Mbit/s links with 15 ms delay (the
    WAN relay of labnet.WanLab), once with HOP links between the sites and once with one ring
    spanning the WAN (--wan both): every receiver at every site gets every message in both,
    the data crossed the WAN links (the relay counted it), and compare.md puts both side by
    side."""
    if not os.path.exists("/dev/net/tun"):
        pytest.skip("the WAN relay needs a TUN device (/dev/net/tun)")
    out = tmp_path / "exp"
    done = subprocess.run([sys.executable, "floodtools.py", "experiment", "--topology", "thesis", "--wan", "both",
                           "--hosts", "4", "--counts", "200", "--sizes", "1000", "--services", "agreed",
                           "--batch-timeout", "90", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    for wan, how in (("hop", "HOP links between the sites"), ("ring", "one ring spanning the WAN")):
        ends = [r for r in ft_records(out / wan / "flood.log") if r.rec == "end"]
        assert sorted((r.machine, r.received) for r in ends) == [(f"pc0{i}", 200) for i in (1, 2, 3, 4)], wan
        report = (out / wan / "report.md").read_text()
        assert "three sites joined by 2 Mbit/s links with 15 ms delay" in report and how in report
        links = json.loads((out / wan / "wan-links.json").read_text())
        # 200 x 1000 B went from site 1 to each other site over its own WAN link
        assert links["1->2"]["bytes"] >= 200 * 1000 and links["1->3"]["bytes"] >= 200 * 1000, (wan, links)
        # receivers connect to the daemon of their own site (10.98.S.1)
        assert "@10.98.2.1" in (out / wan / "recv-pc02.out").read_text()
    conf = (out / "hop" / "spread.conf").read_text()
    assert conf.count("Spread_Segment") == 3 and "LinkProtocol = Hop" in conf
    compare = (out / "compare.md").read_text()
    row = next(line for line in compare.splitlines() if line.startswith("| a1000x200 "))
    hop_s, ring_s = (float(x) for x in row.split("|")[5:7])
    assert hop_s > 0 and ring_s > 0


@pytest.mark.netns
def test_hop_links_over_a_lossy_wan_still_bring_every_message_to_every_site(tmp_path, labnet):
    """The same three sites over 2 Mbit/s, 20 ms links that lose 1 % of the packets each way
    (the relay's seeded losses): HOP's NACKs fill the gaps, and every receiver gets the whole
    SAFE batch."""
    if not os.path.exists("/dev/net/tun"):
        pytest.skip("the WAN relay needs a TUN device (/dev/net/tun)")
    out = tmp_path / "exp"
    done = subprocess.run([sys.executable, "floodtools.py", "experiment", "--topology", "thesis", "--wan", "hop",
                           "--wan-delay-ms", "20", "--wan-loss", "1", "--wan-seed", "7", "--hosts", "3",
                           "--counts", "300", "--sizes", "1000", "--services", "safe", "--batch-timeout", "90",
                           "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    ends = [r for r in ft_records(out / "flood.log") if r.rec == "end"]
    assert sorted((r.machine, r.received) for r in ends) == [("pc01", 300), ("pc02", 300), ("pc03", 300)]
    links = json.loads((out / "wan-links.json").read_text())
    assert links["1->2"]["lost"] + links["1->3"]["lost"] > 0, links   # the losses did happen
    assert "20 ms delay and 1 % loss" in (out / "report.md").read_text()


def test_the_wan_comparison_times_a_batch_from_the_first_start_to_the_last_end():
    def rec(kind, machine, clock, received=0):
        return ft.LogRecord(kind, "2026-12-05", clock, machine, "s1000x10", 10, 1000, "safe", "pc00",
                            received=received, elapsed_s=0.5 if kind == "end" else 0.0)
    hop = [rec("start", "pc01", "10:00:00.000"), rec("start", "pc02", "10:00:01.000"),
           rec("end", "pc01", "10:00:02.000", 10), rec("end", "pc02", "10:00:04.500", 10)]
    ring = [rec("start", "pc01", "10:00:00.000"), rec("end", "pc01", "10:00:09.000", 10)]
    assert ft.batch_span_s(hop, "s1000x10") == pytest.approx(4.5)
    assert ft.batch_span_s(hop, "other") is None
    args = argparse.Namespace(wan_mbit=2.0, wan_delay_ms=15.0, wan_loss=0.0, argv=["experiment"])
    links = {"hop": {"1->2": {"packets": 30, "overflowed": 1}}, "ring": {"1->2": {"packets": 40, "overflowed": 9}}}
    text = ft.wan_comparison_text({"hop": hop, "ring": ring}, links, args)
    assert "| s1000x10 | safe | 1000 | 10 | 4.50 | 9.00 | 2 | 1 | 2.00 |" in text
    assert "- ring: the WAN links carried 40 packets and dropped 9 at a full queue." in text


def test_the_thesis_topology_says_what_it_needs_when_it_cannot_run(tmp_path):
    done = subprocess.run([sys.executable, "floodtools.py", "experiment", "--topology", "thesis", "--loopback",
                           "--out", str(tmp_path / "x")], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert "--topology thesis runs three sites in network namespaces" in done.stderr + done.stdout
