"""Drives a spread_mini Daemon core the way its I/O loop does, with no sockets: every input's
batch of actions is performed in order. A connection's socket takes everything (a fast reader)
unless the test stalls it (a client that does not read: its socket takes nothing)."""
from __future__ import annotations

import collections

import spread_mini as sp


class Driver:
    def __init__(self, daemon: sp.Daemon):
        self.d = daemon
        self.received = collections.defaultdict(bytearray)  #: conn id -> bytes the client got
        self.stalled: set = set()
        self.actions: list = []  #: closes, datagrams, pauses, log lines, not yet taken
        self.closed: list = []

    def __getattr__(self, name):  # the core's queries and attributes (tests look inside)
        return getattr(self.d, name)

    # -- inputs, as the I/O loop gives them --------------------------------------------------------
    def connection_opened(self, conn_id, now=None, address=""):
        return self.perform(self.d.connection_opened(conn_id, now, address))

    def connection_data(self, conn_id, data):
        return self.perform(self.d.connection_data(conn_id, data))

    def connection_closed(self, conn_id):
        return self.perform(self.d.connection_closed(conn_id))

    def datagram(self, packet, src, now):
        return self.perform(self.d.datagram(packet, src, now))

    def tick(self, now):
        return self.perform(self.d.tick(now))

    def leave(self, reason, now):
        return self.perform(self.d.leave(reason, now))

    def stall(self, conn_id):
        """The client stops reading: its socket takes nothing more."""
        self.stalled.add(conn_id)

    def unstall(self, conn_id):
        self.stalled.discard(conn_id)
        return self.perform(self.d.writable(conn_id))

    # -- performing ----------------------------------------------------------------------------
    def perform(self, actions):
        """Write actions go to the connections' buffers (and back to the core as written);
        the others are kept for the test. Returns the non-write actions of this input."""
        queue = collections.deque(actions)
        others = []
        while queue:
            action = queue.popleft()
            if isinstance(action, sp.Write):
                taken = 0 if action.conn_id in self.stalled else len(action.data)
                self.received[action.conn_id] += action.data[:taken]
                queue.extend(self.d.written(action.conn_id, taken))
            else:
                if isinstance(action, sp.CloseConnection):
                    self.closed.append(action.conn_id)
                others.append(action)
        self.actions.extend(others)
        return others

    def take_output(self, conn_id) -> bytes:
        data = bytes(self.received.pop(conn_id, b""))
        return data

    def take_actions(self) -> list:
        out, self.actions = self.actions, []
        return out

    def closes(self) -> list:
        return [a for a in self.take_actions() if isinstance(a, sp.CloseConnection)]


LIMIT_NAMES = ("max_session_messages", "max_sessions", "max_session_bytes", "max_total_bytes",
               "handshake_timeout_s", "max_handshakes_per_address")


def driven(name: str = "localhost", ring=None, **kwargs) -> Driver:
    """A Driver around sp.build_daemon(name, ring, ...): the limits by their names."""
    limits = sp.ClientLimits(**{k: kwargs.pop(k) for k in LIMIT_NAMES if k in kwargs})
    return Driver(sp.build_daemon(name, ring, limits=limits, **kwargs))
