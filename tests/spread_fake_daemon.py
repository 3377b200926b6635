"""Two scripted peers that replay the real Spread transcript over real loopback sockets.

`FakeDaemon` plays the REAL DAEMON's side of a transcript run: it listens on 127.0.0.1 (random
port) or on the unix socket /tmp/<port>, accepts one connection per traced client in capture
order, reads each C->D unit and checks it against the transcript (after masking the fields that
may legitimately differ), and writes the D->C bytes exactly as the real daemon did, including the
accept reply one byte per send().  It is what our client library is tested against.

`ClientReplayer` plays the REAL CLIENTS' side: it connects to a daemon, writes each C->D unit of
the transcript in one write, in the capture order across clients, reads each D->C unit by its
structure and compares it with what the real daemon answered.  It is what our daemon is tested
with.  (The two are also tested against each other, which checks both harnesses.)

Both report `Problem`s (unit, expected, got, words) instead of raising, so that one run lists
every difference; the tests assert there are none and print them all.
"""
from __future__ import annotations

import os
import random
import select
import socket
import threading
import time
from dataclasses import dataclass, replace
from typing import Callable, Dict, List, Optional, Tuple

import spread_transcript as st

LOOPBACK = "127.0.0.1"   # the network rule: nothing here ever leaves loopback


@dataclass
class Problem:
    unit: Optional[st.Unit]     #: the transcript unit concerned (None: after the script)
    what: str                   #: words: what differs and how
    expected: bytes = b""
    got: bytes = b""

    def __str__(self) -> str:
        where = repr(self.unit) if self.unit is not None else "<after the script>"
        return f"{where}: {self.what}"


class _Stream:
    """One connection with a receive buffer; reads whole protocol units by their structure."""

    def __init__(self, sock: socket.socket, name: str):
        self.sock, self.name = sock, name
        self.buf = bytearray()
        self.eof = False
        self.reads = 0

    def _fill(self, deadline: float) -> bool:
        """Wait for more bytes until deadline; False on timeout or EOF."""
        if self.eof:
            return False
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        ready, _, _ = select.select([self.sock], [], [], remaining)
        if not ready:
            return False
        try:
            chunk = self.sock.recv(65536)
        except OSError:
            chunk = b""
        self.reads += 1
        if not chunk:
            self.eof = True
            return False
        self.buf.extend(chunk)
        return True

    def read_unit(self, kind: str, timeout_s: float, accept_patch: bool = True) -> Tuple[bytes, str]:
        """(bytes of one unit, "" ) or (partial bytes, reason) on timeout / EOF / garbage."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                need = st.unit_size(kind, bytes(self.buf), accept_patch)
            except ValueError as exc:
                got = bytes(self.buf)
                self.buf.clear()
                return got, f"cannot frame a {kind}: {exc}"
            if need is not None and len(self.buf) >= need:
                got = bytes(self.buf[:need])
                del self.buf[:need]
                return got, ""
            if not self._fill(deadline):
                got = bytes(self.buf)
                self.buf.clear()
                why = "connection closed" if self.eof else f"nothing more within {timeout_s} s"
                return got, f"{why} while reading a {kind} ({len(got)} bytes so far)"

    def extra_bytes(self, wait_s: float) -> bytes:
        """Whatever arrives within wait_s (stops early at EOF)."""
        deadline = time.monotonic() + wait_s
        while self._fill(deadline):
            pass
        extra = bytes(self.buf)
        self.buf.clear()
        return extra

    def wait_eof(self, timeout_s: float) -> Tuple[bool, bytes]:
        deadline = time.monotonic() + timeout_s
        while not self.eof and self._fill(deadline):
            pass
        extra = bytes(self.buf)
        self.buf.clear()
        return self.eof, extra

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def _last_unit_of_each_client(units: List[st.Unit]) -> Dict[str, st.Unit]:
    last: Dict[str, st.Unit] = {}
    for u in units:
        last[u.section] = u
    return last


def _accept_patch_for(units: List[st.Unit]) -> Dict[str, bool]:
    """Per client: does the daemon's accept carry a patch byte (depends on the lib version sent)?"""
    out = {}
    for u in units:
        if u.kind == st.CONNECT:
            v = st.decode_unit(u)["lib_version"]
            out[u.section] = v[2] is not None and st.accept_has_patch(v)
    return out


# ====================================================================================================
# The fake daemon
# ====================================================================================================

class FakeDaemon:
    """Replays the daemon side of `units` (one section, or several merged with st.merged)."""

    def __init__(self, units: List[st.Unit], mask: Optional[st.Mask] = None, *, unix: bool = False,
                 accept_byte_gap_s: float = 0.001, chunk_seed: Optional[int] = None,
                 coalesce: bool = False, unit_timeout_s: float = 10.0):
        self.units = list(units)
        #: by default our library may claim its own version; everything else is compared
        self.mask = mask if mask is not None else st.Mask(lib_version=True)
        self.accept_byte_gap_s = accept_byte_gap_s     # >0 makes the one-byte sends really arrive apart
        self.rng = random.Random(chunk_seed) if chunk_seed is not None else None
        self.coalesce = coalesce
        self.unit_timeout_s = unit_timeout_s
        self.problems: List[Problem] = []
        self.received: List[Tuple[st.Unit, bytes]] = []   #: every C->D unit as our client sent it
        self.sends: List[Tuple[st.Unit, int]] = []         #: D->C units and how many send() calls each took
        self.log: List[str] = []
        self._done = threading.Event()
        self._streams: Dict[str, _Stream] = {}
        self.unix_path: Optional[str] = None
        if unix:
            self.listener, self.port = self._listen_unix()
        else:
            self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.listener.bind((LOOPBACK, 0))
            self.port = self.listener.getsockname()[1]
        self.listener.listen(8)
        self._thread = threading.Thread(target=self._run, name="fake-spread-daemon", daemon=True)

    def _listen_unix(self):
        """The unix socket form of a spread name "<port>" is /tmp/<port>: pick a port whose
        /tmp/<port> is free and that no TCP listener uses, so a TCP fallback would fail visibly."""
        for _ in range(50):
            probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            probe.bind((LOOPBACK, 0))
            port = probe.getsockname()[1]
            probe.close()
            path = f"/tmp/{port}"
            if not os.path.exists(path):
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.bind(path)
                self.unix_path = path
                return sock, port
        raise RuntimeError("no free /tmp/<port> path for a unix socket")

    # ------------------------------------------------------------------ public
    @property
    def spread_name(self) -> str:
        return str(self.port) if self.unix_path else f"{self.port}@{LOOPBACK}"

    def start(self) -> "FakeDaemon":
        self._thread.start()
        return self

    def wait(self, timeout_s: float = 20.0) -> bool:
        """True when the whole script ran (successfully or not) within timeout_s."""
        return self._done.wait(timeout_s)

    def close(self) -> None:
        for s in list(self._streams.values()):
            s.close()
        try:
            self.listener.close()
        except OSError:
            pass
        if self.unix_path and os.path.exists(self.unix_path):
            os.unlink(self.unix_path)

    def __enter__(self) -> "FakeDaemon":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def report(self) -> str:
        return "\n".join(str(p) for p in self.problems) or "no problems"

    # ------------------------------------------------------------------ the script
    def _run(self) -> None:
        try:
            self._play()
        except Exception as exc:  # a harness bug must show as a problem, not as a silent thread death
            self.problems.append(Problem(None, f"fake daemon crashed: {exc!r}"))
        finally:
            for s in self._streams.values():
                s.close()
            self._done.set()

    def _play(self) -> None:
        last = _last_unit_of_each_client(self.units)
        pending: List[st.Unit] = []      # D->C units waiting to be written together (coalesce mode)
        for n, unit in enumerate(self.units):
            if unit.kind == st.TCP_CLOSE:
                if not self._expect_close(unit):
                    return
            elif unit.direction == "TCP":
                if not self._accept(unit):
                    return
            elif unit.direction == "C->D":
                if not self._check_client_unit(unit):
                    return
            else:
                pending.append(unit)
                nxt = self.units[n + 1] if n + 1 < len(self.units) else None
                joinable = (self.coalesce and nxt is not None and nxt.direction == "D->C"
                            and nxt.section == unit.section and unit.kind == st.MESSAGE
                            and nxt.kind == st.MESSAGE)
                if not joinable:
                    if not self._write(pending):
                        return
                    pending = []
            if last[unit.section] is unit:
                self._end_client(unit)

    def _accept(self, unit: st.Unit) -> bool:
        self.listener.settimeout(self.unit_timeout_s)
        try:
            conn, _ = self.listener.accept()
        except OSError as exc:
            self.problems.append(Problem(unit, f"no client connected within {self.unit_timeout_s} s ({exc})"))
            return False
        conn.settimeout(None)
        if conn.family == socket.AF_INET:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # so one-byte sends stay apart
        self._streams[unit.section] = _Stream(conn, unit.section)
        self.log.append(f"{unit.time} accepted {unit.section}")
        return True

    def _expect_close(self, unit: st.Unit) -> bool:
        stream = self._streams[unit.section]
        eof, extra = stream.wait_eof(self.unit_timeout_s)
        if extra or not eof:
            self.problems.append(Problem(unit, f"expected the client to close; got {len(extra)} bytes"
                                               f"{' and no close' if not eof else ''}", b"", extra))
            return False
        return True

    def _check_client_unit(self, unit: st.Unit) -> bool:
        stream = self._streams[unit.section]
        reads_before = stream.reads
        got, why = stream.read_unit(unit.kind, self.unit_timeout_s)
        pieces = stream.reads - reads_before
        self.received.append((unit, got))
        if why:
            self.problems.append(Problem(unit, f"expected {st.describe(unit.kind, unit.data)}\n"
                                               f"but {why}; got {got.hex(' ')}", unit.data, got))
            return False
        diff = st.compare_units(unit.kind, st.expected_in_order_of(unit, got), got, self.mask)
        if diff:
            self.problems.append(Problem(unit, diff, unit.data, got))
            return False
        if unit.kind == st.CONNECT and self.mask.lib_version:
            ok = self._lib_version_fits(unit, got)
            if not ok:
                return False
        if unit.kind in (st.CONNECT, st.AUTH_CHOICE):
            # The real daemon reads each handshake unit with ONE recv (session.c:656-918): a client
            # that writes it in pieces may be rejected (a loopback write this small is never cut).
            if pieces > 1:
                self.problems.append(Problem(unit, f"the {unit.kind} arrived in {pieces} pieces: the real daemon"
                                                   f" reads it with one recv(), write it with one send()",
                                             unit.data, got))
                return False
            # A client that sends the next unit before our reply would have it read as part of this one.
            early = stream.extra_bytes(0.02)
            if early:
                self.problems.append(Problem(unit, f"client pipelined {len(early)} bytes after the {unit.kind}"
                                                   f" before the daemon's reply: {early[:32].hex(' ')}",
                                             unit.data, got + early))
                return False
        self.log.append(f"{unit.time} read {unit.section} {unit.kind} {len(got)} B")
        return True

    def _lib_version_fits(self, unit: st.Unit, got: bytes) -> bool:
        """We replay the real daemon's accept, which carries a patch byte iff the lib is >= 3.15.0;
        a library claiming another version would get bytes it does not expect."""
        want = st.decode_unit(unit)["lib_version"]
        have = st.decode_unit(st.CONNECT, got)["lib_version"]
        if have[2] is None or st.accept_has_patch(have) != st.accept_has_patch(want):
            self.problems.append(Problem(unit, f"library claims version {have}; the replayed accept"
                                               f" was written for {want}", unit.data, got))
            return False
        return True

    def _write(self, units: List[st.Unit]) -> bool:
        stream = self._streams[units[0].section]
        try:
            if units[0].kind == st.ACCEPT:
                # session.c:1058-1078 writes the accept reply one byte per send()
                for byte in units[0].data:
                    stream.sock.sendall(bytes([byte]))
                    if self.accept_byte_gap_s:
                        time.sleep(self.accept_byte_gap_s)
                calls = len(units[0].data)
            elif self.rng is not None:
                calls = self._send_chunked(stream.sock, b"".join(u.data for u in units))
            else:
                stream.sock.sendall(b"".join(u.data for u in units))
                calls = 1
            self.sends.extend((u, calls) for u in units)
        except OSError as exc:
            self.problems.append(Problem(units[0], f"client went away before this unit: {exc}"))
            return False
        for u in units:
            self.log.append(f"{u.time} wrote {u.section} {u.kind} {len(u.data)} B")
        return True

    def _send_chunked(self, sock: socket.socket, data: bytes) -> int:
        """Split into random pieces with short pauses: the library must buffer partial units."""
        at, calls = 0, 0
        while at < len(data):
            size = self.rng.randint(1, 64)
            sock.sendall(data[at:at + size])
            at, calls = at + size, calls + 1
            time.sleep(self.rng.choice((0, 0, 0.001, 0.003)))
        return calls

    def _end_client(self, unit: st.Unit) -> None:
        """The client's last traced unit.  A reject, or the daemon's death (C2), closes the
        connection from the daemon's side; after a KILL the real daemon ends the session too."""
        stream = self._streams.get(unit.section)
        if stream is None:
            return
        if unit.direction == "C->D":
            extra = bytes(stream.buf)
            if extra:
                self.problems.append(Problem(unit, f"client sent {len(extra)} bytes after its last"
                                                   f" traced unit: {st.describe(st.MESSAGE, extra)}"))
        try:
            stream.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        stream.close()
        self.log.append(f"{unit.time} closed {unit.section}")


# ====================================================================================================
# The replayer of the real clients
# ====================================================================================================

class ClientReplayer:
    """Plays the clients of `units` against a daemon at host:port (TCP) and checks its answers."""

    def __init__(self, units: List[st.Unit], port: int, host: str = LOOPBACK,
                 mask: Optional[st.Mask] = None, *, unit_timeout_s: float = 10.0,
                 end_wait_s: float = 0.3, unix_path: Optional[str] = None,
                 chunk_seed: Optional[int] = None, check_ids: bool = True,
                 hosts: Optional[Dict[str, Tuple[str, int]]] = None,
                 actions: Optional[Dict[str, Callable[[], None]]] = None):
        self.units = list(units)
        self.port, self.host = port, host
        self.unix_path = unix_path      #: connect there instead of host:port (the "<port>" spread name)
        self.hosts = hosts or {}        #: per client (section key): its own daemon's (host, port)
        self.actions = actions or {}    #: st.ACTION label -> what to do (e.g. kill a daemon)
        #: with a seed, messages after the handshake go out in random pieces (the handshake cannot:
        #: the real daemon reads each handshake unit with one recv)
        self.rng = random.Random(chunk_seed) if chunk_seed is not None else None
        self.mask = mask if mask is not None else st.Mask()
        self.unit_timeout_s = unit_timeout_s
        self.end_wait_s = end_wait_s
        self.problems: List[Problem] = []
        self.got: List[Tuple[st.Unit, bytes]] = []    #: every D->C unit as the daemon sent it
        self._streams: Dict[str, _Stream] = {}
        self._failed: set = set()
        self._ids_seen: Dict[Tuple[int, int], Tuple[int, int]] = {}
        self._ids_back: Dict[Tuple[int, int], Tuple[int, int]] = {}
        #: equal (proc_id, time) in the transcript must be equal in ours, and different ones different
        self.check_ids = check_ids
        #: clients that connect without a name (st.anonymous): the traced private group -> the one
        #: the daemon gave; our later units are rewritten with it, its answers compared renamed back
        self.assigned: Dict[str, str] = {}

    def report(self) -> str:
        return "\n".join(str(p) for p in self.problems) or "no problems"

    def run(self) -> List[Problem]:
        patch = _accept_patch_for(self.units)
        last = _last_unit_of_each_client([u for u in self.units if u.kind != st.ACTION])
        try:
            for unit in self.units:
                if unit.section in self._failed:
                    continue
                if unit.kind == st.ACTION:
                    self.actions[unit.label]()
                elif unit.kind == st.TCP_CLOSE:
                    self._streams[unit.section].close()
                    self._failed.add(unit.section)    # nothing more to read or check there
                elif unit.direction == "TCP":
                    self._connect(unit)
                elif unit.direction == "C->D":
                    self._send(unit)
                else:
                    self._expect(unit, patch.get(unit.section, True))
            for section, unit in last.items():
                if section not in self._failed:
                    self._check_end(unit)
        finally:
            for s in self._streams.values():
                s.close()
        return self.problems

    def _fail(self, unit: st.Unit, what: str, expected: bytes = b"", got: bytes = b"") -> None:
        self.problems.append(Problem(unit, what, expected, got))
        self._failed.add(unit.section)

    def _connect(self, unit: st.Unit) -> None:
        host, port = self.hosts.get(unit.section, (self.host, self.port))
        where = self.unix_path or f"{host}:{port}"
        try:
            if self.unix_path:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.settimeout(self.unit_timeout_s)
                sock.connect(self.unix_path)
            else:
                sock = socket.create_connection((host, port), timeout=self.unit_timeout_s)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)   # as the real library does
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        except OSError as exc:
            self._fail(unit, f"cannot connect to {where}: {exc}")
            return
        sock.settimeout(None)
        self._streams[unit.section] = _Stream(sock, unit.section)

    def _send(self, unit: st.Unit) -> None:
        sock = self._streams[unit.section].sock
        for traced, given in self.assigned.items():
            if unit.kind == st.MESSAGE:
                unit = replace(unit, data=st.rename_in_unit(st.MESSAGE, unit.data, traced, given))
        try:
            if self.rng is None or unit.kind != st.MESSAGE:
                sock.sendall(unit.data)   # one unit, one write, like libspread
                return
            at = 0
            while at < len(unit.data):
                size = self.rng.randint(1, 40)
                sock.sendall(unit.data[at:at + size])
                at += size
                time.sleep(self.rng.choice((0, 0, 0.001, 0.002)))
        except OSError as exc:
            self._fail(unit, f"daemon refused our bytes: {exc}")

    def _expect(self, unit: st.Unit, accept_patch: bool) -> None:
        stream = self._streams[unit.section]
        kind = st.AUTH_LIST if unit.kind == st.REJECT else unit.kind   # the daemon decides which
        got, why = stream.read_unit(kind, self.unit_timeout_s, accept_patch)
        self.got.append((unit, got))
        if why:
            self._fail(unit, f"expected {st.describe(unit.kind, unit.data)}\nbut {why}; got {got.hex(' ')}",
                       unit.data, got)
            return
        got_kind = unit.kind
        if kind == st.AUTH_LIST and len(got) == 1 and got[0] >= 0x80:
            got_kind = st.REJECT
        if got_kind != unit.kind:
            self._fail(unit, f"expected {st.describe(unit.kind, unit.data)}\ngot {st.describe(got_kind, got)}",
                       unit.data, got)
            return
        if unit.kind == st.ACCEPT:
            self._learn_name(unit, got)
        diff = st.compare_units(unit.kind, st.expected_in_order_of(unit, got), got, self.mask)
        if diff:
            self.problems.append(Problem(unit, diff, unit.data, got))
        elif unit.kind == st.MESSAGE and self.check_ids:
            self._check_ids_consistent(unit, got)

    def _learn_name(self, unit: st.Unit, got: bytes) -> None:
        """A client that sent no name gets one from the daemon: learn it (and check it is legal)."""
        connect = next(u for u in self.units if u.section == unit.section and u.kind == st.CONNECT)
        if st.decode_unit(connect)["name_len"] != 0 or got[:1] != b"\x01":
            return
        traced = st.decode_unit(unit)["private_group"]
        given = st.decode_unit(st.ACCEPT, got)["private_group"]
        parts = given.split("#")
        if len(parts) != 3 or parts[0] or parts[2] != traced.split("#")[2] or not st.legal_private_name(parts[1]):
            self.problems.append(Problem(unit, f"invented private group {given!r} is not '#<legal name>#<daemon>'"))
        self.assigned[traced] = given
        self.mask = replace(self.mask, renames=dict(self.mask.renames, **{given: traced}))

    def _check_ids_consistent(self, unit: st.Unit, got: bytes) -> None:
        """Masking hides proc_id/time, but equal ids in the transcript must stay equal in ours
        (and different ones different): equal_group_ids() depends on it."""
        want = st.decode_message(unit.data).get("group_id")
        have = st.decode_message(got).get("group_id")
        if not want or not have:
            return
        w, h = tuple(want[:2]), tuple(have[:2])
        if self._ids_seen.setdefault(w, h) != h or self._ids_back.setdefault(h, w) != w:
            self.problems.append(Problem(unit, f"group_id (proc_id, time) not consistent: the real daemon"
                                               f" used {w} here and ours {h}, but earlier pairs were"
                                               f" {self._ids_seen}", unit.data, got))

    def _check_end(self, unit: st.Unit) -> None:
        """After the last traced unit: nothing unexpected; a reject or KILL ends with the daemon
        closing the connection (session.c: Sess_kill)."""
        stream = self._streams.get(unit.section)
        if stream is None:
            return
        closes = unit.kind == st.REJECT or (unit.direction == "C->D" and
                                            st.decode_unit(unit).get("service", 0) & st.KILL_MESS)
        if closes:
            eof, extra = stream.wait_eof(self.unit_timeout_s)
        else:
            eof, extra = False, stream.extra_bytes(self.end_wait_s)
        if extra:
            self.problems.append(Problem(unit, f"daemon sent {len(extra)} bytes more than the real one after"
                                               f" this unit: {st.describe(st.MESSAGE, extra)}", b"", extra))
        elif closes and not eof:
            self.problems.append(Problem(unit, f"daemon did not close the connection within"
                                               f" {self.unit_timeout_s} s after this {unit.kind}"))
