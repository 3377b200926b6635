"""Helpers for the labctl real-process tests: agents, the roll call as the daemon sees it, asks."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import List, Optional, Sequence

import labctl as lc
import spread_mini as sp
from conftest import wait_for

ROOT = Path(__file__).resolve().parent.parent


def start_agent(procs, daemon: str, name: str, *extra: str, prefix: Sequence[str] = ()) -> subprocess.Popen:
    """`labctl.py agent` as a real process (prefix: e.g. `ip netns exec NS`); killed at the end."""
    log = open(procs.tmp_path / f"proc{len(procs.started)}.out", "w+")
    proc = subprocess.Popen([*prefix, sys.executable, "labctl.py", "agent", "--daemon", daemon, "--name", name, *extra],
                            cwd=ROOT, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    proc.log_path = log.name  # type: ignore[attr-defined]
    procs.started.append(proc)
    return proc


def roll_call(daemon: str, group: str = lc.DEFAULT_GROUP) -> List[str]:
    """The agents' names in the roll call now (a throw-away asker session reads it)."""
    with sp.connect(daemon, "$probe%03d" % (time.monotonic_ns() % 1000), group_membership=True) as mbox:
        mbox.join(lc.roster_group(group))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            msg = mbox.receive(timeout=1)
            if isinstance(msg, sp.MembershipMessage) and msg.is_regular and mbox.private_group in msg.members:
                return sorted(lc.member_name(m) for m in msg.members if not lc.is_asker(m))
    raise AssertionError("no membership of the roll call within 10 s")


def wait_roll_call(daemon: str, names, group: str = lc.DEFAULT_GROUP, timeout_s: float = 60) -> None:
    wanted = sorted(names)

    def all_in():
        return roll_call(daemon, group) == wanted
    wait_for(all_in, timeout_s, every_s=0.3)


class Asked:
    def __init__(self, done: subprocess.CompletedProcess):
        self.code = done.returncode
        self.stdout, self.stderr = done.stdout, done.stderr
        lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
        self.rows = {r["machine"]: r for r in lines if "machine" in r}
        self.summary = next((r for r in lines if "asked" in r), None)


def ask(daemon: str, *argv: str, json_out: bool = True, prefix: Sequence[str] = (), stdin: Optional[str] = None,
        timeout_s: float = 120) -> Asked:
    extra = ["--json"] if json_out else []
    done = subprocess.run([*prefix, sys.executable, "labctl.py", "ask", *argv, "--daemon", daemon, *extra],
                          cwd=ROOT, capture_output=True, text=True, timeout=timeout_s, input=stdin)
    return Asked(done)
