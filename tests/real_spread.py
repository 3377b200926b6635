"""The real Spread daemon for interoperability tests: found, or built once into a cache folder
outside the repository, or the test is skipped with the reason.

Where it looks, in order:
  1. $SPREAD_BIN: a folder holding a built `spread` (e.g. from ../shared/spread-real/build.sh);
  2. the cache folder <system temp>/gc-lab-spread-real-4.4.0, built by an earlier run;
  3. ../shared/spread-real/build.sh beside the repository (or $SPREAD_REAL_SRC/build.sh): it
     builds the cache folder (about 40 s with gcc; under a lock, so parallel runs build once).

The daemon runs in a network namespace of its own (only `lo` inside) with a private /tmp, so it
never meets another daemon's port 4803 or its /tmp/4803 socket. That needs root and iproute2.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import List, Optional, Tuple

ROOT = Path(__file__).resolve().parent.parent
VERSION = "4.4.0"
CACHE = Path(tempfile.gettempdir()) / f"gc-lab-spread-real-{VERSION}"
BUILD_TIMEOUT_S = 600


def _built(folder: Path) -> bool:
    return (folder / "spread").is_file() and os.access(folder / "spread", os.X_OK)


def find_or_build() -> Tuple[Optional[Path], str]:
    """(folder holding `spread`, "") or (None, why it is not available)."""
    given = os.environ.get("SPREAD_BIN")
    if given:
        return (Path(given), "") if _built(Path(given)) else (None, f"SPREAD_BIN={given} holds no executable `spread`")
    if _built(CACHE):
        return CACHE, ""
    source = Path(os.environ.get("SPREAD_REAL_SRC", ROOT.parent / "shared" / "spread-real"))
    script = source / "build.sh"
    if not script.is_file():
        return None, f"no real Spread daemon: set SPREAD_BIN, or put build.sh at {script}"
    missing = [tool for tool in ("gcc", "make", "bash") if shutil.which(tool) is None]
    if missing:
        return None, f"cannot build the real Spread daemon: {', '.join(missing)} missing"
    import fcntl
    CACHE.parent.mkdir(parents=True, exist_ok=True)
    with open(str(CACHE) + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)          # another run may be building it right now
        if _built(CACHE):
            return CACHE, ""
        try:
            done = subprocess.run(["bash", str(script), str(CACHE), VERSION], capture_output=True, text=True,
                                  timeout=BUILD_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            return None, f"building the real Spread daemon took more than {BUILD_TIMEOUT_S} s"
        if done.returncode != 0 or not _built(CACHE):
            tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            shutil.rmtree(CACHE, ignore_errors=True)
            return None, "building the real Spread daemon failed: " + " | ".join(tail)
    return CACHE, ""


def namespace_reason() -> Optional[str]:
    if os.geteuid() != 0:
        return "the real daemon runs in its own network namespace: needs root"
    for tool in ("ip", "unshare", "mount"):
        if shutil.which(tool) is None:
            return f"the real daemon's namespace needs `{tool}`"
    return None


class RealSpread:
    """One real Spread daemon on 127.0.0.1:4803 inside namespace `ns`, with a private /tmp."""

    #: As root the daemon drops privileges to a user `spread` unless told otherwise, and chroots
    #: to its RuntimeDir: both are kept inside the private /tmp.
    CONF = ("Spread_Segment 127.0.0.255:4803 {\n    localhost 127.0.0.1\n}\n"
            "RuntimeDir = /tmp/rt\nDaemonUser = root\nDaemonGroup = root\n")

    def __init__(self, folder: Path, workdir: Path):
        self.folder = folder
        self.workdir = workdir
        self.ns = f"lcsp{os.getpid() % 100000}x{int(time.monotonic() * 1000) % 1000}"
        self.proc: Optional[subprocess.Popen] = None
        self.log_path = workdir / "spread.log"

    def prefix(self) -> List[str]:
        return ["ip", "netns", "exec", self.ns]

    def start(self) -> None:
        subprocess.run(["ip", "netns", "add", self.ns], check=True, capture_output=True)
        subprocess.run([*self.prefix(), "ip", "link", "set", "lo", "up"], check=True, capture_output=True)
        # The binary and its configuration go in the work folder: /tmp is covered by the private
        # one inside, and the work folder is under /tmp; the daemon runs from it as cwd.
        shutil.copy(self.folder / "spread", self.workdir / "spread")
        (self.workdir / "spread.conf").write_text(self.CONF)
        (self.workdir / "private-tmp" / "rt").mkdir(parents=True, exist_ok=True)
        inner = "mount --bind private-tmp /tmp && exec ./spread -n localhost -c spread.conf"
        log = open(self.log_path, "w")
        self.proc = subprocess.Popen([*self.prefix(), "unshare", "--mount", "--propagation", "private",
                                      "sh", "-c", inner], cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)

    def wait_ready(self, timeout_s: float = 30.0) -> None:
        """Until the daemon takes TCP connections inside its namespace (it first forms its ring)."""
        probe = "import socket; socket.create_connection(('127.0.0.1', 4803), timeout=1).close()"
        deadline = time.monotonic() + timeout_s
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError("the real Spread daemon stopped:\n" + self.log())
            if subprocess.run([*self.prefix(), sys.executable, "-c", probe], capture_output=True).returncode == 0:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"the real Spread daemon took no connection within {timeout_s:g} s:\n" + self.log())
            time.sleep(0.3)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        subprocess.run(["ip", "netns", "del", self.ns], capture_output=True)
