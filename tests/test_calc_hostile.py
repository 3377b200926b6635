"""Tier 3: real calculator processes on a hostile LAN (issue 14), over loopback.

The forger is the lab guide's own (section 1.7), taken from lab_guide.md, so that the guide's
exercise stays true. Short heartbeats (0.2 s); generous waits; no timing assertions.
"""
from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import threading
import time

import pytest

import calc_server
from calc_helpers import Cluster
from calc_server import WireError, decode, encode_answer
from conftest import ROOT, Procs, wait_for

pytestmark = pytest.mark.slow


def guide_forger(tmp_path) -> str:
    """forge.py as printed in lab_guide.md 1.7, written to a file."""
    guide = (ROOT / "lab_guide.md").read_text()
    code = re.search(r"```python\n(# forge\.py:.*?)```", guide, re.S).group(1)
    path = tmp_path / "forge.py"
    path.write_text(code)
    return str(path)


def output_matches(proc, pattern: str):
    def matches():
        return re.search(pattern, Procs.output(proc), re.M)
    matches.__name__ = f"output matches {pattern!r}"
    return matches


def new_key(tmp_path, name="calc.key") -> str:
    path = str(tmp_path / name)
    done = subprocess.run([sys.executable, "calc_server.py", "--new-key", path], cwd=ROOT,
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0 and "fingerprint" in done.stdout, done.stderr
    return path


class Recorder:
    """Records the server group's datagrams, then replays them all, every 0.1 s."""

    def __init__(self, cluster: Cluster):
        self.group = calc_server.parse_group(cluster.server_group)
        self.sock = calc_server.multicast_receiver(self.group, "127.0.0.1")
        self.out = calc_server.multicast_sender("127.0.0.1")
        self.recorded = []
        self.stop = threading.Event()

    def record(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            time.sleep(0.05)
            self.recorded += [data for data, _ in calc_server.drain(self.sock)]
        self.sock.close()

    def replay_in_background(self) -> None:
        def replay():
            while not self.stop.wait(0.1):
                for data in self.recorded:
                    self.out.sendto(data, self.group)
        threading.Thread(target=replay, daemon=True).start()

    def replay_paced_in_background(self, interval_s: float) -> None:
        """One recorded datagram every interval_s, in the order recorded, round and round: a
        dead server's heartbeats at its own pace, with sequence numbers that keep growing
        (for one pass of the recording)."""
        def replay():
            k = 0
            while not self.stop.wait(interval_s):
                self.out.sendto(self.recorded[k % len(self.recorded)], self.group)
                k += 1
        threading.Thread(target=replay, daemon=True).start()

    def close(self) -> None:
        self.stop.set()
        time.sleep(0.15)
        self.out.close()


def test_without_a_key_the_guides_forger_stops_the_failover(procs, tmp_path):
    cluster = Cluster(procs)
    s1 = cluster.start(1)
    s2 = cluster.start(2)
    wait_for(cluster.answered_by(1), 20)
    # (server 2 may still be starting when server 1 answers: on a loaded machine it printed nothing yet)
    wait_for(output_matches(s2, r"no --key: anyone on this LAN can stop or fake"), 20)
    assert Procs.output(s2).count("no --key: anyone on this LAN can stop or fake") == 1
    procs.start(guide_forger(tmp_path), cluster.name, cluster.server_group)
    # While server 1 lives, its heartbeats and the forger's alternate: reported, once.
    line = wait_for(output_matches(s2, r"two processes claim index 1 .*"), 10).group(0)
    assert re.search(r"127\.0\.0\.1:\d+ \(incarnation [0-9a-f]{8}\) and 127\.0\.0\.1:\d+ "
                     r"\(incarnation [0-9a-f]{8}\)", line)
    wait_for(output_matches(s1, r"two processes claim index 1 "), 10)   # server 1 too
    s1.send_signal(signal.SIGKILL)
    s1.wait()
    time.sleep(2.0)                                   # 10 ticks: a failover would be done
    reply = cluster.ask()
    assert reply.ok is None, f"the forgery did not stop the service: {reply}"
    assert "now answering" not in Procs.output(s2)
    assert Procs.output(s2).count("two processes claim index 1") == 1


def test_with_a_key_forged_and_replayed_heartbeats_do_not_stop_the_failover(procs, tmp_path):
    cluster = Cluster(procs, key_path=new_key(tmp_path))
    s1 = cluster.start(1)
    s2 = cluster.start(2, "--status-every", "0.5")
    wait_for(cluster.answered_by(1), 20)
    wait_for(output_matches(s2, r"; key [0-9a-f]{8}; pid \d+"), 20)   # its banner (it may start late)
    assert "no --key" not in Procs.output(s2)
    recorder = Recorder(cluster)
    recorder.record(1.0)                              # genuine heartbeats of 1 and 2
    assert recorder.recorded
    procs.start(guide_forger(tmp_path), cluster.name, cluster.server_group)
    other_key = Cluster(procs, name=cluster.name, server_group=cluster.server_group,
                        client_group=cluster.client_group,
                        key_path=new_key(tmp_path, "other.key"))
    other_key.start(1)                                # a server 1 with the wrong key
    s1.send_signal(signal.SIGKILL)
    s1.wait()
    recorder.replay_in_background()
    try:
        reply = wait_for(cluster.answered_by(2), 20)
        assert (reply.ok, reply.text) == (True, "42")
        wait_for(output_matches(s2, r"index 1: AWAITING_CONFIRMATION -> UNRESPONSIVE"), 10)

        def all_counted():
            counts = re.findall(r"dropped packets \d+ \((.*)\)", Procs.output(s2))
            return counts and all(re.search(rf"{reason} \d+", counts[-1]) for reason in
                                  ("bad-tag", "no-tag", "replayed-heartbeat"))
        wait_for(all_counted, 10)
        out = Procs.output(s2)
        assert "two processes claim" not in out
        assert out.count("index 1: ") == 3      # -> ACTIVE, -> AWAITING, -> UNRESPONSIVE only
        assert cluster.ask().server == 2
    finally:
        recorder.close()


def test_with_a_key_a_recording_replayed_to_a_server_started_later_is_refused(procs, tmp_path):
    """The hole the newer-seq rule left: server 2 starts after server 1 died, so it never
    heard the heartbeats a forger recorded from server 1, replayed at server 1's own pace
    (before the echo rule it kept index 1 ACTIVE there for a pass of the recording). Server 2
    still takes over: the recording does not echo its incarnation."""
    cluster = Cluster(procs, key_path=new_key(tmp_path))
    s1 = cluster.start(1)
    wait_for(cluster.answered_by(1), 20)
    recorder = Recorder(cluster)
    recorder.record(3.0)                              # server 1's heartbeats only
    assert len(recorder.recorded) >= 5
    s1.send_signal(signal.SIGKILL)
    s1.wait()
    recorder.replay_paced_in_background(cluster.heartbeat_s / 2)
    try:
        time.sleep(0.3)                               # the replay runs before server 2 starts
        s2 = cluster.start(2, "--status-every", "0.5")
        reply = wait_for(cluster.answered_by(2), 20)
        assert (reply.ok, reply.text) == (True, "42")

        assert "index 1: DISCONNECTED -> ACTIVE" not in Procs.output(s2)

        def replays_counted():
            counts = re.findall(r"unconfirmed-heartbeat (\d+)", Procs.output(s2))
            return counts and int(counts[-1]) >= len(recorder.recorded)
        wait_for(replays_counted, 20)
        out = Procs.output(s2)
        assert "index 1: DISCONNECTED -> ACTIVE" not in out, out
        assert "now answering requests" in out and "stopped answering" not in out
        assert out.count("do not echo ours") == 1, out
        assert re.search(r"index 1: heartbeats from 127\.0\.0\.1:\d+ \(incarnation "
                         r"[0-9a-f]{8}\) do not echo ours", out)
    finally:
        recorder.close()


def forger_answering(cluster: Cluster, text: str):
    """A thread that answers every request on the client group with `text`, once without a
    tag and once with a tag of another key; returns its stop event and its address."""
    sock = calc_server.multicast_receiver(calc_server.parse_group(cluster.client_group),
                                          "127.0.0.1")
    out = calc_server.multicast_sender("127.0.0.1")
    stop = threading.Event()

    def answer():
        while not stop.wait(0.01):
            for data, src in calc_server.drain(sock):
                try:
                    req = decode(data, cluster.name)
                except WireError as exc:    # tagged: it cannot check it, but can read it
                    req = exc.claimed
                for key in (None, b"k" * 32):
                    forged = calc_server.Answer(req.rid, req.attempt, 1, True, text)
                    out.sendto(encode_answer(cluster.name, forged, key), src)
        sock.close()
        out.close()
    threading.Thread(target=answer, daemon=True).start()
    return stop, out.getsockname()


def test_a_forged_answer_fools_a_client_without_a_key_and_is_refused_with_one(procs, tmp_path):
    plain = Cluster(procs)                          # no servers at all: only the forger answers
    stop, (host, port) = forger_answering(plain, "5")
    try:
        done = subprocess.run(plain.client_argv("-e", "2+2"), capture_output=True, text=True,
                              timeout=60, cwd=ROOT)
        assert done.returncode == 0 and done.stdout.startswith("2+2 = 5    [server 1")
    finally:
        stop.set()
    keyed = Cluster(procs, key_path=new_key(tmp_path))
    stop, (host, port) = forger_answering(keyed, "5")
    try:
        done = subprocess.run(keyed.client_argv("--json", "--deadline", "1", "-e", "2+2"),
                              capture_output=True, text=True, timeout=60, cwd=ROOT)
        assert done.returncode == 2, done.stderr
        reply = json.loads(done.stdout)
        assert reply["error"] == "no answer within 1 s"
        assert {(r["from"], r["reason"], r["server"], r["text"]) for r in reply["refused"]} == {
            (f"{host}:{port}", "no-tag", 1, "5"), (f"{host}:{port}", "bad-tag", 1, "5")}
        done = subprocess.run(keyed.client_argv("--deadline", "1", "-e", "2+2"),
                              capture_output=True, text=True, timeout=60, cwd=ROOT)
        assert f"  refused an answer from {host}:{port} (claiming server 1: '5'): no tag: " \
               f"the sender has no --key" in done.stdout
    finally:
        stop.set()


def test_two_processes_claiming_one_index_are_reported_once(procs):
    cluster = Cluster(procs)
    first = cluster.start(1)
    second = procs.start(*cluster.server_argv(1))
    observer = cluster.start(2, "--status-every", "0.5")
    for proc in (first, second, observer):
        wait_for(output_matches(proc, r"two processes claim index 1 in cluster "), 10)
    wait_for(output_matches(observer, r"^index 1 is claimed by two processes: "
                                      r"127\.0\.0\.1:\d+ and 127\.0\.0\.1:\d+"), 10)
    time.sleep(1.0)                                    # five more ticks of both
    assert Procs.output(observer).count("two processes claim index 1") == 1


def test_the_demo_passes_the_key_on_and_says_how_to_ask(procs, tmp_path):
    cluster = Cluster(procs, key_path=new_key(tmp_path))
    demo = procs.start("calc_server.py", "--demo", "2", "--cluster", cluster.name,
                       "--server-group", cluster.server_group,
                       "--client-group", cluster.client_group, "--heartbeat", "0.2",
                       "--key", cluster.key_path, start_new_session=True)
    wait_for(output_matches(demo, rf"ask the cluster:\s+python3 calc_client.py .*--key "
                                  rf"{re.escape(cluster.key_path)}"), 20)
    assert wait_for(cluster.answered_by(1), 20).text == "42"
    assert "no --key" not in Procs.output(demo)
    demo.send_signal(signal.SIGINT)
    assert demo.wait(timeout=20) == 0
