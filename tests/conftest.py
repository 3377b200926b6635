"""Shared test fixtures. Every test keeps its packets on loopback or inside namespaces it makes."""
from __future__ import annotations

import os
import random
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from labnet import ephemeral_port_range, free_port, port_is_free, port_open  # noqa: E402,F401  (shared with bench/)

try:
    from hypothesis import settings

    # The machine is shared and noisy: never fail a property test on its speed.
    settings.register_profile("lab", deadline=None, print_blob=True)
    settings.load_profile("lab")
except ImportError:  # hypothesis is a test extra; tests that need it import it themselves
    pass


# The README's test command runs the suite in pytest-xdist workers (`-n auto --dist loadgroup`).
# The files below touch no network, start no daemon and read no wall clock for a verdict, so their
# tests spread over every worker. Every other file (real processes, sockets, namespaces, and any
# file added later until it is listed here) runs one test after another in a single worker, as
# before: those tests share fixed ports, unix sockets /tmp/<port>, namespace names and module
# fixtures, and a daemon's timers want a core to themselves, not a sibling's.
PARALLEL_SAFE_FILES = frozenset("""
    test_calc_client.py test_calc_core.py test_calc_keys.py test_calc_parser.py test_calc_sim.py
    test_floodtools.py test_hop_link.py test_hop_sim.py test_hop_sites.py test_labctl.py test_logbm.py
    test_ring_accelerated.py test_ring_config.py test_ring_groups.py test_ring_link.py
    test_ring_membership.py test_ring_sim.py test_ring_status.py test_ring_transport.py test_ring_wire.py
    test_side_by_side_summary.py test_sites_core.py test_sites_daemon.py test_sites_hostile_forger.py
    test_sites_sim.py test_spread_core.py test_spread_props.py
""".split())


def parallel_safe(node) -> bool:
    return node.path.name in PARALLEL_SAFE_FILES


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook, which reads the marks into the test ids
def pytest_collection_modifyitems(config, items):
    if not config.pluginmanager.hasplugin("xdist"):
        return
    for item in items:
        if not parallel_safe(item):
            item.add_marker(pytest.mark.xdist_group("real_processes"))


@pytest.fixture(autouse=True)
def simulations_yield_the_cpu(request):
    """Under xdist, a parallel-safe test (a simulator, a core: no wall clock in its verdict)
    runs at niceness 10, so that the real processes in the other worker, whose timers do read
    the wall clock, get the cores first. Its niceness comes back after it, where the system
    lets us (root); otherwise that worker stays nice, as harmless for the rest."""
    if (not os.environ.get("PYTEST_XDIST_WORKER") or not hasattr(os, "setpriority")
            or not parallel_safe(request.node)):
        yield
        return
    before = os.getpriority(os.PRIO_PROCESS, 0)
    os.setpriority(os.PRIO_PROCESS, 0, max(before, 10))
    try:
        yield
    finally:
        try:
            os.setpriority(os.PRIO_PROCESS, 0, before)
        except OSError:
            pass


def free_tcp_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody is using right now on a loopback address (free for UDP too)."""
    return free_port((host,))


def free_udp_port(host: str = "127.0.0.1") -> int:
    """A UDP port nobody is using right now on a loopback address (free for TCP too)."""
    return free_port((host,))


def unique_name(prefix: str) -> str:
    """A name no other test run on this machine is using (cluster names, group names)."""
    return f"{prefix}{os.getpid() % 10000}{random.randrange(10000)}"


def unique_group(port: int | None = None) -> str:
    """An administratively scoped multicast group and port, ADDR:PORT, unlikely to collide."""
    port = port or free_udp_port()
    return f"239.255.{random.randrange(1, 255)}.{random.randrange(1, 255)}:{port}"


def wait_for(predicate, timeout_s: float = 10.0, every_s: float = 0.05):
    """Poll until predicate() is truthy; return its value, or fail the test with a clear message."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout_s} s: {getattr(predicate, '__name__', predicate)}")
        time.sleep(every_s)


def unix_socket_of(argv) -> str | None:
    """The unix socket /tmp/<port> a spread_mini daemon started with argv makes, if any."""
    argv = [str(a) for a in argv]
    if "daemon" not in argv or "--no-unix" in argv or "--port" not in argv:
        return None
    return "/tmp/%s" % argv[argv.index("--port") + 1]


def remove_if_stale(path: str) -> None:
    """Remove the unix socket `path` when nothing listens on it any more (a daemon killed with
    SIGKILL cannot remove its own): the next first command of the guide must not meet it."""
    if not os.path.exists(path):
        return
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except ConnectionRefusedError:
        try:
            os.unlink(path)
        except OSError:
            pass
    except OSError:
        pass
    finally:
        probe.close()


class Procs:
    """Starts our scripts as real processes and stops whatever is left at the end of the test:
    SIGTERM first (a daemon then removes its unix socket /tmp/<port>), SIGKILL after 5 s, and
    any unix socket a killed daemon of ours left behind is removed."""

    def __init__(self, tmp_path: Path):
        self.tmp_path = tmp_path
        self.started: list[subprocess.Popen] = []
        self.unix_sockets: list[str] = []

    def start(self, *argv: str, stdin=subprocess.DEVNULL, **kwargs) -> subprocess.Popen:
        log = open(self.tmp_path / f"proc{len(self.started)}.out", "w+")
        proc = subprocess.Popen(
            [sys.executable, *argv], cwd=ROOT, stdin=stdin, stdout=log, stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "120"}, **kwargs)
        proc.log_path = log.name  # type: ignore[attr-defined]
        self.started.append(proc)
        path = unix_socket_of(argv)
        if path:
            self.unix_sockets.append(path)
        return proc

    @staticmethod
    def output(proc: subprocess.Popen) -> str:
        return Path(proc.log_path).read_text(errors="replace")  # type: ignore[attr-defined]

    def stop_all(self) -> None:
        for proc in self.started:
            if proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + 5
        for proc in self.started:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    pass
        for path in self.unix_sockets:
            remove_if_stale(path)


@pytest.fixture
def procs(tmp_path):
    p = Procs(tmp_path)
    yield p
    p.stop_all()


@pytest.fixture
def labnet(request):
    """A factory for namespace labs; skips the test when namespaces cannot be made here, or when
    a command the test names is missing: `@pytest.mark.netns(needs=["nft"])`."""
    import labnet as _labnet

    marker = request.node.get_closest_marker("netns")
    needs = tuple(marker.kwargs.get("needs", ())) if marker else ()
    reason = _labnet.available(needs)
    if reason:
        pytest.skip(f"network namespaces: {reason}")
    made = []

    def make(hosts: int):
        lab = _labnet.LabNet(hosts)
        made.append(lab)
        lab.up()
        return lab

    yield make
    for lab in made:
        lab.close()
