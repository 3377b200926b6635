"""labctl.py against the real Spread 4.4 daemon (interoperability): agents and asker through
spread_mini's client library, the daemon in a namespace of its own (see real_spread.py)."""
from __future__ import annotations

import pytest

import labctl as lc
from conftest import wait_for
from labctl_helpers import ask, start_agent
from real_spread import RealSpread, usable_build

pytestmark = pytest.mark.slow

DAEMON = "4803@127.0.0.1"


@pytest.fixture
def real_spread(tmp_path):
    daemon = RealSpread(usable_build(), tmp_path)
    daemon.start()
    yield daemon
    daemon.stop()


def test_agents_and_asker_work_against_the_real_spread_daemon(procs, real_spread, tmp_path):
    key = str(tmp_path / "lab.key")
    lc.run_keygen(key, say=lambda _: None)
    root = tmp_path / "home"
    root.mkdir()
    (root / "a.lbq").write_bytes(b"x" * 2048)
    prefix = real_spread.prefix()
    real_spread.wait_ready()
    agents = [start_agent(procs, DAEMON, name, "--files-root", str(root), "--key", key, prefix=prefix)
              for name in ("real1", "real2")]

    def both_in():
        assert all(a.poll() is None for a in agents), "an agent stopped:\n" + procs.output(agents[0])
        result = ask(DAEMON, "free", "--key", key, "--timeout", "3", prefix=prefix)
        return result.summary is not None and result.summary["asked"] == 2

    wait_for(both_in, 60, every_s=0.5)
    files = ask(DAEMON, "files", "lbq", "--key", key, "--timeout", "20", prefix=prefix)
    assert files.code == 0, files.stderr
    assert {m: (r["files"], r["kbytes"]) for m, r in files.rows.items()} == {"real1": (1, 2), "real2": (1, 2)}
    unsigned = ask(DAEMON, "quit", "--timeout", "2", prefix=prefix)
    assert unsigned.code == 3 and all(a.poll() is None for a in agents)
    stop = ask(DAEMON, "quit", "--key", key, "--timeout", "10", prefix=prefix)
    assert stop.code == 0 and sorted(stop.rows) == ["real1", "real2"]
    for agent in agents:
        assert agent.wait(timeout=10) == 0
