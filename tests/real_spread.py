"""The real Spread daemon for interoperability tests: found, or built once into a cache folder
outside the repository, or the test is skipped with the reason.

Where it looks, in order:
  1. $SPREAD_BIN: a folder holding a built `spread` (e.g. from ../shared/spread-real/build.sh);
  2. the cache folder <system temp>/gc-lab-spread-real-4.4.0, built by an earlier run;
  3. ../shared/spread-real/build.sh beside the repository (or $SPREAD_REAL_SRC/build.sh): it
     builds the cache folder (about 40 s with gcc; under a lock, so parallel runs build once).

The daemon runs in a network namespace of its own (only `lo` inside) with a private /tmp, so it
never meets another daemon's port 4803 or its /tmp/4803 socket. That needs root and iproute2.
A test reaches it from inside the namespace: processes through `prefix()`, spread_mini's library
in the test's own process through `connect()` (in_namespace: a socket opened by a thread that
entered the namespace stays in it).

    python3 tests/real_spread.py --build     # what .ci/run does: build the cache folder now
"""
from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, List, Optional, Tuple, TypeVar

ROOT = Path(__file__).resolve().parent.parent
VERSION = "4.4.0"
CACHE = Path(tempfile.gettempdir()) / f"gc-lab-spread-real-{VERSION}"
BUILD_TIMEOUT_S = 600
#: what build.sh puts beside the daemon: the real clients and the library to link a C client with
CLIENT_FILES = ("spuser", "spflooder", "libspread-core.a", "include/sp.h")
PROBE_SOURCE = Path(__file__).resolve().parent / "sp_probe.c"
CLONE_NEWNET = 0x40000000
T = TypeVar("T")


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


def client_tools_reason(folder: Path) -> Optional[str]:
    """Why the real clients or libspread are missing from a build folder, or None."""
    missing = [name for name in CLIENT_FILES if not (folder / name).is_file()]
    if missing:
        return f"the real Spread build in {folder} lacks {', '.join(missing)} (rebuild it with build.sh)"
    return None


def compile_client(folder: Path, source: Path, out: Path) -> Path:
    """A C client compiled against the real libspread of the build folder; RuntimeError on failure."""
    done = subprocess.run(["gcc", "-O2", "-Wall", "-I", str(folder / "include"), "-o", str(out), str(source),
                           str(folder / "libspread-core.a"), "-lm", "-ldl", "-lpthread"],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"gcc {source.name} failed:\n{done.stderr}")
    return out


def in_namespace(ns: str, action: Callable[[], T]) -> T:
    """action() run by a thread that has entered network namespace `ns`: the sockets it opens
    belong to the namespace for their whole life, whichever thread uses them afterwards. The
    test's own threads stay where they are (setns changes only the calling thread)."""
    result: list = []

    def enter_and_run():
        libc = ctypes.CDLL(None, use_errno=True)
        fd = os.open(f"/var/run/netns/{ns}", os.O_RDONLY)
        try:
            if libc.setns(fd, CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                result.append(OSError(err, f"setns into {ns}: {os.strerror(err)}"))
                return
        finally:
            os.close(fd)
        try:
            result.append((action(),))
        except BaseException as exc:  # handed to the caller's thread below
            result.append(exc)

    thread = threading.Thread(target=enter_and_run, name=f"in-{ns}")
    thread.start()
    thread.join()
    if isinstance(result[0], BaseException):
        raise result[0]
    return result[0][0]


def namespace_reason() -> Optional[str]:
    if os.geteuid() != 0:
        return "the real daemon runs in its own network namespace: needs root"
    for tool in ("ip", "unshare", "mount"):
        if shutil.which(tool) is None:
            return f"the real daemon's namespace needs `{tool}`"
    return None


def usable_build(*, client_tools: bool = False) -> Path:
    """The folder of a built real Spread that a test can run in a namespace of its own; skips
    the calling test with the reason when namespaces, the build or (when asked) the client
    tools are missing. Imports pytest late: this module also runs as a script in .ci/run."""
    import pytest
    why = namespace_reason()
    if why:
        pytest.skip(why)
    folder, why = find_or_build()
    if folder is None:
        pytest.skip(why)
    if client_tools:
        why = client_tools_reason(folder)
        if why:
            pytest.skip(why)
    return folder


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
        deadline = time.monotonic() + timeout_s
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError("the real Spread daemon stopped:\n" + self.log())
            if in_namespace(self.ns, _port_4803_open):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"the real Spread daemon took no connection within {timeout_s:g} s:\n" + self.log())
            time.sleep(0.3)

    def connect(self, private_name: str, group_membership: bool = True):
        """A spread_mini Mailbox connected to this daemon (from inside its namespace)."""
        import spread_mini
        return in_namespace(self.ns, lambda: spread_mini.connect("4803@127.0.0.1", private_name,
                                                                 group_membership=group_membership))

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        subprocess.run(["ip", "netns", "del", self.ns], capture_output=True)


def _port_4803_open() -> bool:
    import socket
    try:
        socket.create_connection(("127.0.0.1", 4803), timeout=1).close()
        return True
    except OSError:
        return False


def main(argv: Optional[List[str]] = None) -> int:
    """--build: find or build the real Spread now (CI does it before the tests). Exit 0 when it is
    there, or when this machine cannot build it (the tests then skip with the same reason); 1 when
    a build was tried and failed."""
    import argparse
    parser = argparse.ArgumentParser(description="The real Spread 4.4 build used by the interoperability tests")
    parser.add_argument("--build", action="store_true", help="build it into the cache folder if it is not there")
    args = parser.parse_args(argv)
    if not args.build:
        parser.print_help()
        return 0
    folder, why = find_or_build()
    if folder is None:
        print(f"real Spread: not available, the interoperability tests will skip: {why}")
        return 1 if why.startswith("building") else 0
    print(f"real Spread {VERSION}: {folder}" + (f" ({client_tools_reason(folder)})" if client_tools_reason(folder) else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
