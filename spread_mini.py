"""spread_mini: a small group communication daemon, its client library and a `user` tool.

It speaks the client protocol of the real Spread 4.4 toolkit (see PROTOCOL.md of the project's
spread-wire notes), so real Spread programs can connect to it and this library can connect to a
real Spread daemon.  Thesis (seed 003) sections 7.2, 7.3.3 and 7.4 describe the model:

* a daemon serves client *sessions*; each session has a private group ``#name#daemon``;
* sessions join and leave *groups*; anybody may send to any group (open groups);
* a message goes to one or more groups with one of six service types
  (UNRELIABLE, RELIABLE, FIFO, CAUSAL, AGREED, SAFE) and an optional SELF_DISCARD flag;
* members that asked for it get *membership messages* when a group changes.

Module map. Sections in this order: Constants, Wire format, Protocol core, I/O loop, Client
library, Terminal rendering, Command line. Everything but the I/O loop is sans-I/O. A datagram
from another daemon meets, in order (thesis 7.3.1 names the levels):

  DaemonServer          I/O loop: recvfrom() on the segment's multicast socket (data) and
                        the daemon's own UDP socket (tokens...), a burst per wake-up, and
                        on the HOP port (several sites: the segment port + HOP_PORT_OFFSET);
                        performs actions
  Daemon.datagrams_in_burst  the core's input, a socket's burst in one call; a source
                        outside the configuration is a stranger (end_of_burst: the
                        burst's writes to clients);
                        Daemon.hop_datagram for the HOP port
  SitesOrderer          several sites (LinkProtocol = Hop): the Orderer that holds the site's
                        RingOrderer and the SiteGateway above it; a HOP datagram's source
                        address names its daemon (or it is a stranger); a daemon that joins
                        its site's ring late (or restarted) is brought up to date through the
                        ring: each daemon's STATUS, a SyncRound, the sender's state in parts
                        (SiteGateway.export_state / import_state, and SiteSync events for the
                        group core), what it held meanwhile replayed
  RingSeal, decode_ring_packet   wire (a data packet or a token of our configuration read in
                        one pass, anything else by the general decoder, which says why):
                        header, configuration stamp, CRC or the key's tag ->
                        RingData / RingToken / RingJoin / RingCommit / RingMerge /
                        RingUnreliable / RingLeave (with RingChunk, RingCommitEntry); a bad
                        one is a RingWireError (a RingPeerError: dropped and counted), a
                        caller's mistake a RingUsageError
  RingOrderer.receive   membership (Totem's GATHER, COMMIT, RECOVERY, OPERATIONAL, LEFT): the
                        DISPATCH table (state, packet type) -> handler; one _enter_* per
                        state, every change logged with its reason; its records Recovery
                        (the commit token's plan), HeldToken, SentToken; ConfigurationChange out
  Link, RingLink, _Ring LINK level (7.3.2.2): the Link interface that RingLink implements and a
                        HopLink will; token, link_seq, link_aru, rtr, flow control, packing,
                        the Accelerated Ring (packets after the token); one _Ring per ring
                        (its packet store)
  Routing               which links a packet goes on to (with one ring: none)
  HopLink               LINK level between sites (7.3.2.1): one point-to-point link's core
                        (one session of each end), decode_hop_packet -> HopData / HopAck /
                        HopNack, the HOP_DISPATCH table; window, token bucket, NACKs, the
                        dead-peer rule (HopPeerDead); HopSettings. Beside it, pure functions of
                        the sites (one per Spread_Segment): site_representative and
                        dissemination_tree -> SiteTree over SpreadConfig.site_costs()
                        (merged_view_trees after a merge)
  SiteGateway           WIDE AREA (7.3.1-7.3.3; in the daemon under SitesOrderer, and in
                        tests/sites_sim.py):
                        a datagram on the HOP port is a SiteHello (decode_site_hello: starts a
                        HopLink between two sites' representatives) or the link's; the link's
                        payloads are a stream of SiteRecord (MSG / FRONTIER / ARU / SUSPECT /
                        PROPOSE / LINKS / EPOCH: first hand into its own ring, as heard on
                        links; and UNRELIABLE outside the streams; SiteRecordReader) that the representative
                        submits to its ring
                        as a message of kind SITES; what the ring delivers goes into a second
                        Transport (`merge`, one stream per site) and, once the ring made it
                        safe, on to the next sites (SendHop). SiteProposal and ViewClosing
                        agree on a view without a lost site -> SiteViewChange; after a
                        partition heals, SiteMerge (JOIN / MERGE records) and ViewClosing
                        merge two views -> SiteViewChange; pruning: a data message goes
                        as a SKIP (a MSG without its body) down a link through which no
                        site with a member of its groups can be reached (_may_owe_below;
                        after a merge, a joined site's from its STATE: _interest_state)
  Transport, SiteStream TRANSPORT level (7.3.3): streams keyed by site id; pieces into
                        _Message (a _GapMarker for a packet lost with a configuration), order
                        by {lts, site} and service type, Deliver (a whole message the merge
                        would deliver next: at once, link_chunk_at_once); MessageInProgress on
                        the way down
  RingGroupCore         groups across daemons (GroupCore, Group: one daemon's table;
                        StateExchange after every ring change); SitesGroupCore across
                        sites instead (the merge's one order; ROSTER and SiteViewChange
                        are its network changes; a StateExchange of the sites' STATE after
                        two views merge; site_sync gives or takes a late daemon's table)
  ClientSession.out     an Outbox per client; Daemon returns Write actions
  DaemonServer          send() to the client's socket

A client's message meets: DaemonServer (recv) -> Daemon.connection_data -> ClientSession
(handshake, parse: DaemonMessage / Multicast / Join / Leave / Kill) -> Orderer (RingOrderer,
or LocalOrderer alone) -> Transport (encode_message_body: the client's own bytes, encoded
once) -> RingLink -> SendToAll / Send -> MulticastDatagram / SendDatagram actions ->
DaemonServer (one IP multicast, or a unicast to each), and back up as above. build_daemon()
makes a Daemon alone, in a ring, or in a ring of one site among several (SitesPlan from
sites_plan(spread.conf)). Every input of Daemon returns one batch of actions: Write,
CloseConnection, SendDatagram, MulticastDatagram (the ring's data: one IP multicast on the
segment, or a unicast to each), HopDatagram (to another site's HOP port), LogLine,
PauseReading, ResumeReading. The client library
(connect -> Mailbox; a refused session is a SpreadError that says why) and the `user` tool
(stdin -> LineReader -> UserTool) come after the loop.

Tunable numbers are Settings (RingSettings, HopSettings), changed only by Settings.override:
ring_settings_of() takes spread.conf's (RING_SETTINGS_OF_FILE).

Usage:
    python3 spread_mini.py daemon [--port 4803] [--listen 127.0.0.1] [--name NAME] [-c spread.conf]
                                  [--key ring.key] [--hop-rate-mbit 2]
        (several Spread_Segment blocks and LinkProtocol = Hop in spread.conf: a ring per site,
        HOP links between the sites on each daemon's segment port + 2)
    python3 spread_mini.py user [-s 4803@127.0.0.1] [-u NAME]
    python3 spread_mini.py keygen ring.key      # a key for --key (signed daemon-daemon packets)
"""
from __future__ import annotations

import abc
import argparse
import base64
import collections
import errno
import hashlib
import heapq
import hmac
import ipaddress
import json
import os
import random
import re
import select
import selectors
import signal
import socket
import struct
import sys
import threading
import time
import zlib
from dataclasses import dataclass, field
from typing import Callable, Container, Dict, Iterable, List, Optional, Sequence, Set, Tuple, Union

try:
    import rich
    from rich.console import Console
    from rich.table import Table
except ImportError:  # plain-text fallback everywhere
    rich = None
    Console = None
    Table = None


# =============================================================================================
# Constants
# =============================================================================================

#: Version this daemon reports and this library announces (Spread 4.4.0).
SP_MAJOR_VERSION = 4
SP_MINOR_VERSION = 4
SP_PATCH_VERSION = 0

DEFAULT_SPREAD_PORT = 4803
#: with LinkProtocol = Hop, a daemon's HOP links use the UDP port of its segment plus this (the
#: segment port carries the ring and the clients' TCP; Spread keeps port + 1 for its tokens)
HOP_PORT_OFFSET = 2
DEFAULT_LISTEN = "127.0.0.1"
DEFAULT_MAX_SESSION_MESSAGES = 1000  # Spread's MaxSessionMessages (thesis 8.2.1 saw it bite)
DEFAULT_STATUS_EVERY_S = 20.0

# Service and control bits (include/sp.h, daemon/sess_types.h)
UNRELIABLE_MESS = 0x00000001
RELIABLE_MESS = 0x00000002
FIFO_MESS = 0x00000004
CAUSAL_MESS = 0x00000008
AGREED_MESS = 0x00000010
SAFE_MESS = 0x00000020
REGULAR_MESS = 0x0000003F
SELF_DISCARD = 0x00000040
DROP_RECV = 0x01000000  # client-side receive flag only

REG_MEMB_MESS = 0x00001000
TRANSITION_MESS = 0x00002000
CAUSED_BY_JOIN = 0x00000100
CAUSED_BY_LEAVE = 0x00000200
CAUSED_BY_DISCONNECT = 0x00000400
CAUSED_BY_NETWORK = 0x00000800
MEMBERSHIP_MESS = 0x00003F00

RETRANSMIT_MESS = 0x00004000
LATENCY_MESS = 0x00008000
JOIN_MESS = 0x00010000
LEAVE_MESS = 0x00020000
KILL_MESS = 0x00040000
GROUPS_MESS = 0x00080000
DUMMY_MESS = 0x00100000
STATETRANS_MESS = 0x00200000
REJECT_MESS = 0x00400000
RESERVED = 0x003FC000

ENDIAN_TYPE = 0x80000080  # set in type/hint by little-endian writers, clear by big-endian ones

# Return codes; only ACCEPT_SESSION and the REJECT_* travel on the wire (as one signed byte).
ACCEPT_SESSION = 1
ILLEGAL_SPREAD = -1
COULD_NOT_CONNECT = -2
REJECT_QUOTA = -3
REJECT_NO_NAME = -4
REJECT_ILLEGAL_NAME = -5
REJECT_NOT_UNIQUE = -6
REJECT_VERSION = -7
CONNECTION_CLOSED = -8
REJECT_AUTH = -9
ILLEGAL_SESSION = -11
ILLEGAL_SERVICE = -12
ILLEGAL_MESSAGE = -13
ILLEGAL_GROUP = -14
BUFFER_TOO_SHORT = -15
GROUPS_TOO_SHORT = -16
MESSAGE_TOO_LONG = -17
NET_ERROR_ON_SESSION = -18
SP_BUG = -19

# Sizes (spread_params.h, sess_types.h, acm.h)
MAX_PRIVATE_NAME = 10
MAX_PROC_NAME = 20  # including the NUL: a daemon name has at most 19 characters
MAX_GROUP_NAME = 32  # including the NUL: a group name has 1..31 characters
MAX_GROUPS_PER_MESSAGE = 100
MAX_AUTH_NAME = 30
MAX_AUTH_METHODS = 3
MAX_CLIENT_SCATTER_ELEMENTS = 100
MAX_SESSIONS = (2000 - 5) // 2  # 997, as the real daemon computes it from its fd limit
MAX_MESSAGE_BODY_LEN = 144000  # the real nominal limit (100 * (1472 - 32))
#: Our limit on data_len + 32 * num_groups.  The real daemon nominally accepts up to 143952 but
#: aborts above 143152 (PROTOCOL.md section 5), so 143152 is the largest size that works on both;
#: ours accepts every size up to it and closes a session that sends anything larger.
MAX_MESSAGE_LEN = 143152
#: What the library sends at most: one byte less. A message that fills the real daemon's 100
#: packets exactly (48 + 143152 = 100 x 1432 bytes) is delivered, but can make a real 4.4 daemon
#: abort on a later message (memory.c:557, dispose: Assertion `Mem_valid_objtype'); seen by
#: tests/test_interop_real.py with one and with two groups, never one byte below.
MAX_SEND_LEN = MAX_MESSAGE_LEN - 1

HEADER_LEN = 48
#: the library refuses a message longer than this (a membership message lists every member of a
#: group, so it can be longer than any data message; this only stops a broken peer's garbage)
MAX_INCOMING_MESSAGE = 32 * 1024 * 1024
AUTH_BLOCK_LEN = MAX_AUTH_NAME * MAX_AUTH_METHODS  # 90 bytes
AUTH_METHODS_ALLOWED = ("NULL",)
LIB_VERSION_MIN = 30100  # libs older than 3.01 get REJECT_VERSION
LIB_VERSION_SENDS_PATCH = 31400  # lib sends its patch byte when major*10000+minor*100 > this
LIB_VERSION_GETS_PATCH = 31500  # accept reply carries the daemon's patch byte from this lib on
LIB_VERSION_AUTH = 31600  # the auth exchange exists from lib 3.16 on

#: Group names on join/leave: 1..31 bytes, each '$'..'~' (sp.c:960-967).  '#' marks private groups.
GROUP_NAME_MIN_CHAR = 0x24
PRIVATE_NAME_MIN_CHAR = 0x24  # > '#'
NAME_MAX_CHAR = 0x7E

MESS_TYPE_MIN = -32768  # mess_type is an int16 (sp.h): receivers see -32768..32767
MESS_TYPE_MAX = 32767
MESS_TYPE_WIRE_MAX = 0xFFFF  # the library also takes the unsigned spelling of the same 16 bits
RECV_CHUNK = 256 * 1024  # bytes per recv(): many messages per system call
WRITE_CHUNK = 1024 * 1024  # bytes joined per send()
MAX_SESSION_QUEUE_BYTES = 64 * 1024 * 1024  # a second bound on one session's output queue
MAX_TOTAL_QUEUE_BYTES = 512 * 1024 * 1024  # all sessions together: beyond it the biggest queue goes
MAX_GROUPS_TOTAL = 20000  # groups in the daemon's table; a join beyond it gets REJECT_MESS
MAX_GROUPS_PER_MEMBER = 2000  # groups one session may be in
MAX_GROUP_MEMBERS = 10000  # members of one group
TICK_EVERY_S = 0.1
ACCEPT_PAUSE_S = 1.0  # after accept() fails (out of file descriptors), before trying again
#: a connection that has not finished the handshake after this long is closed (a real client
#: finishes in milliseconds; idle connections must not hold a place for long)
DEFAULT_HANDSHAKE_TIMEOUT_S = 5.0
#: unfinished handshakes from one address at once; one more closes the oldest of them. On
#: loopback every client comes from 127.0.0.1, so it is a bound on idle connections, and
#: closing the OLDEST keeps it from ever keeping out the newest (a real client)
DEFAULT_MAX_HANDSHAKES_PER_ADDRESS = 100
LISTEN_BACKLOG = 1024  # connections the kernel queues for accept(): a burst of idle ones fits
MAX_LOG_LINES = 10000  # the core's log buffer, drained by the I/O loop
#: flow control towards clients: above this many messages waiting for the token the daemon stops
#: reading its client connections (TCP pushes back on the senders); it reads again below LOW
RING_BACKLOG_HIGH_MESSAGES = 4000
RING_BACKLOG_LOW_MESSAGES = 1000
#: ... and the same in bytes, so that big messages (up to 143 KB each) cannot make 4000 waiting
#: messages cost half a gigabyte: a flood of 100 KB messages had one daemon at 1.27 GB without it
RING_BACKLOG_HIGH_BYTES = 16 * 1024 * 1024
RING_BACKLOG_LOW_BYTES = 4 * 1024 * 1024
#: at most this many "dropped a packet" lines per status period or RING_GARBAGE_PERIOD_S (the
#: rest are counted only)
RING_GARBAGE_LINES_PER_PERIOD = 20
RING_GARBAGE_PERIOD_S = 20.0
RING_GARBAGE_MARK = " dropped a packet from "
#: addresses outside the configuration whose datagrams are logged (once each)
RING_STRANGERS_LOGGED = 16

SERVICE_NAMES = {
    UNRELIABLE_MESS: "UNRELIABLE",
    RELIABLE_MESS: "RELIABLE",
    FIFO_MESS: "FIFO",
    CAUSAL_MESS: "CAUSAL",
    AGREED_MESS: "AGREED",
    SAFE_MESS: "SAFE",
}
SERVICE_BY_NAME = {v.lower(): k for k, v in SERVICE_NAMES.items()}
CAUSE_NAMES = {
    CAUSED_BY_JOIN: "JOIN",
    CAUSED_BY_LEAVE: "LEAVE",
    CAUSED_BY_DISCONNECT: "DISCONNECT",
    CAUSED_BY_NETWORK: "NETWORK",
}
ERROR_NAMES = {
    ACCEPT_SESSION: "ACCEPT_SESSION",
    ILLEGAL_SPREAD: "ILLEGAL_SPREAD",
    COULD_NOT_CONNECT: "COULD_NOT_CONNECT",
    REJECT_QUOTA: "REJECT_QUOTA",
    REJECT_NO_NAME: "REJECT_NO_NAME",
    REJECT_ILLEGAL_NAME: "REJECT_ILLEGAL_NAME",
    REJECT_NOT_UNIQUE: "REJECT_NOT_UNIQUE",
    REJECT_VERSION: "REJECT_VERSION",
    CONNECTION_CLOSED: "CONNECTION_CLOSED",
    REJECT_AUTH: "REJECT_AUTH",
    ILLEGAL_SESSION: "ILLEGAL_SESSION",
    ILLEGAL_SERVICE: "ILLEGAL_SERVICE",
    ILLEGAL_MESSAGE: "ILLEGAL_MESSAGE",
    ILLEGAL_GROUP: "ILLEGAL_GROUP",
    BUFFER_TOO_SHORT: "BUFFER_TOO_SHORT",
    GROUPS_TOO_SHORT: "GROUPS_TOO_SHORT",
    MESSAGE_TOO_LONG: "MESSAGE_TOO_LONG",
    NET_ERROR_ON_SESSION: "NET_ERROR_ON_SESSION",
    SP_BUG: "SP_BUG",
}
#: Why a daemon refuses a session, in the words a person needs (the wire carries only the code).
#: "{name}" is the private name asked for.
REFUSAL_REASONS = {
    REJECT_QUOTA: "the daemon already serves as many sessions as it allows (spread_mini: "
                  "--max-sessions, default %d); try again when some have left" % MAX_SESSIONS,
    REJECT_NO_NAME: "the daemon wants a private name: give one",
    REJECT_ILLEGAL_NAME: "the private name {name!r} is not allowed: up to %d characters from "
                         "'$'..'~', no '#'" % MAX_PRIVATE_NAME,
    REJECT_NOT_UNIQUE: "the private name {name!r} is already in use on this daemon: choose another "
                       "(or wait until that session has ended)",
    REJECT_VERSION: "the daemon does not accept this library's version (%d.%d.%d)"
                    % (SP_MAJOR_VERSION, SP_MINOR_VERSION, SP_PATCH_VERSION),
    REJECT_AUTH: "the daemon refused the authentication (this library offers only NULL)",
}



# ---- Ring protocol between daemons ---------------------------------------------------------
#: Membership states (Totem's names; one enter function each in RingOrderer).
OPERATIONAL = "OPERATIONAL"
GATHER = "GATHER"
COMMIT = "COMMIT"
RECOVERY = "RECOVERY"
LEFT = "LEFT"  # this daemon was stopped (Ctrl-C, SIGTERM) and told the others: it sends no more

#: The legal state changes (anything else is a bug in this file, not a network event).
TRANSITIONS = {
    None: {GATHER},
    GATHER: {COMMIT, LEFT},  # consensus reached: commit token created or accepted
    COMMIT: {RECOVERY, GATHER, LEFT},  # commit token came round / commit token lost
    RECOVERY: {OPERATIONAL, GATHER, LEFT},  # old messages recovered / token lost
    OPERATIONAL: {GATHER, LEFT},  # token lost, join from a newcomer, another ring seen, a member leaves
    LEFT: set(),  # the end (from any state: stopped by its operator, leave()): the process exits
}

#: Kinds of configuration change delivered to the layer above.
CONF_REGULAR = "regular"  # the values spread_mini's ConfigurationChange uses
CONF_TRANSITIONAL = "transitional"

#: Kinds of daemon message (what the transport orders and delivers; thesis 7.3.3). A client's
#: data, its joins and leaves, a disconnect, and a daemon's STATE: the groups of its clients,
#: exchanged after every ring change. RING_KINDS gives each its byte in the ring's messages.
DATA = "DATA"
JOIN = "JOIN"
LEAVE = "LEAVE"
KILL = "KILL"
STATE = "STATE"
#: ... and, with several sites, what a representative brings into its ring from the other
#: sites (their messages, "update" frontiers, All-Received-Upto values: site records)
SITES = "SITES"
RING_KINDS = {DATA: 0, JOIN: 1, LEAVE: 2, KILL: 3, STATE: 4, SITES: 5}
RING_KIND_NAMES = {v: k for k, v in RING_KINDS.items()}
#: what a daemon's clients send (a STATE or SITES message is the daemon's own)
CLIENT_MESSAGE_KINDS = frozenset({DATA, JOIN, LEAVE, KILL})

#: Kinds of daemon-daemon packet (the LINK level and membership; one byte in every header:
#: Wire format says what each carries)
RING_MAGIC = b"SMRG"  # spread_mini ring: every daemon-daemon datagram starts with it
RING_VERSION = 2  # 2: the configuration stamp in the header, and the key's tag
PT_DATA, PT_TOKEN, PT_JOIN, PT_COMMIT, PT_MERGE, PT_UNRELIABLE, PT_LEAVE = 1, 2, 3, 4, 5, 6, 7
#: HOP links between sites (thesis 7.3.2.1), sealed as the ring's packets
PT_HOP_DATA, PT_HOP_ACK, PT_HOP_NACK = 8, 9, 10
#: a site's representative announces itself to a neighbour site (the HOP link's start)
PT_SITE_HELLO = 11
PACKET_TYPE_NAMES = {PT_DATA: "data", PT_TOKEN: "token", PT_JOIN: "join",
                     PT_COMMIT: "commit", PT_MERGE: "merge", PT_UNRELIABLE: "unreliable",
                     PT_LEAVE: "leave"}
TOKEN_REGULAR = 1  # the thesis's token Type: "regular except during membership changes"

MAX_NAME_BYTES = MAX_PROC_NAME  # daemon names
MAX_SET_MEMBERS = 128  # members in a join / commit token / ring: a limit on everything
MAX_CHUNKS_PER_PACKET = 1024
#: largest counter accepted on the wire (incarnations, sequences, lts, token ids). Real ones are
#: far below (an incarnation is a time in ms: 2**41 in 2039; a ring sending a million packets a
#: second reaches 2**53 in 285 years), and the daemon adds to them: a u64 near its end would make
#: the next packet unencodable (struct.error), so a datagram carrying one is refused
MAX_WIRE_COUNTER = 2 ** 53
MAX_MESSAGE_BODY_BYTES = 144000 + 100 * 33 + 64  # data + group names + our small header
MAX_GROUPS = MAX_GROUPS_PER_MESSAGE
#: sites (Spread_Segments) a configuration may have: a site record names its site in a u16
MAX_SITES = 256
#: room kept free in every data packet so that it still fits max_packet_bytes when a daemon
#: wraps it for recovery (outer header with the longest names, length and a key's tag: 111 bytes)
RECOVERY_WRAP_BYTES = 120
#: a token without its rtr list, with the longest names (the rtr list fills the rest of a packet)
TOKEN_FIXED_BYTES = 200
#: the ring's largest packet on a LAN: a 1500-byte Ethernet frame less the IP and UDP headers,
#: with room to spare (RingSettings.max_packet_bytes). Window and PersonalWindow count packets
#: of this size (ring_settings_of)
LAN_PACKET_BYTES = 1400
#: ... when every daemon of the configuration is on this machine (127.0.0.0/8): loopback carries
#: a 64 KB datagram whole, and a fuller packet pays the per-packet work (header, seal, sendto,
#: recvfrom, decoding, the token's bookkeeping) once for more messages: a 1000-byte message
#: fills a LAN packet alone, 8 share one of these. It is a 9000-byte jumbo frame's payload, so
#: `--packet-bytes 8900` serves a LAN with jumbo frames too
LOOPBACK_PACKET_BYTES = 8900
#: --packet-bytes: at least a LAN packet (the token's rtr list and the commit token's entries
#: are sized for it), at most what one UDP datagram carries, less room
PACKET_BYTES_MIN = LAN_PACKET_BYTES
PACKET_BYTES_MAX = 65000
#: --key: every daemon-daemon packet carries HMAC-SHA256(key, packet) cut to its first 16 bytes
#: (128 bits, as IPsec's HMAC-SHA-256-128, RFC 4868: a forger still needs about 2**128 tries;
#: the full 32 bytes would cost 16 more bytes in every packet for nothing a LAN can use)
RING_TAG_BYTES = 16
#: keygen: random bytes in a new key file; a key file shorter than RING_KEY_MIN_BYTES is refused
RING_KEY_BYTES = 32
RING_KEY_MIN_BYTES = 16
#: "different configuration" lines: the first per peer at once, then at most one per peer this
#: often (all such packets are counted); peers remembered for that, at most
OTHER_CONFIGURATION_LOG_EVERY_S = 60.0
OTHER_CONFIGURATION_PEERS_MAX = 64
#: A daemon's incarnation is its start time in ms; the others ignore a smaller one of the same name.
#: A daemon restarted after its clock went back learns from the others that they know its name
#: with a higher incarnation and takes one above it: once or twice (one per higher incarnation
#: the others remember). More changes than this mean two daemons run under ONE name and keep
#: overtaking each other: the daemon stops changing and says so in the log.
INCARNATION_BUMPS_MAX = 5
#: a daemon answers the packets of an older incarnation of a daemon with an "incarnation notice"
#: (a merge packet whose ring seq 0 names no ring: "I know you as name#N"), per name at most this
#: often
INCARNATION_NOTICE_EVERY_S = 0.2
#: the new incarnation is 1..this many ms above the one the others know, at random: two restarts
#: that learn of the same old incarnation must not become the same process to the others
INCARNATION_BUMP_SPREAD_MS = 1000
#: A newer incarnation of a daemon that has sent nothing for this long, while an older one of
#: the same name has kept sending for at least half of it, was never a process: a forged or
#: mangled packet named it. The older one is taken as current again (without this, one such
#: packet would leave the older one out for good once it cannot take a higher incarnation).
#: A crashed process's late packets linger milliseconds, not seconds.
INCARNATION_FORGET_S = 3.0
#: Counters that a packet may move far ahead of ours, refused beyond this: a ring seq grows by
#: one per membership change (a million changes do not happen), an lts by one per message (a
#: token rotation carries at most the global window of packets of at most 1024 pieces). One
#: forged packet at the wire's limit (2**53) would otherwise make the next ring, or the next
#: message, a counter that every decoder refuses: the ring cut off for good.
RING_SEQ_AHEAD_MAX = 2 ** 20
LTS_AHEAD_MAX = 2 ** 32
#: A token, or a data packet, of the ring we are in can be at most this many token rotations'
#: worth of packets (the global window) ahead of the token we passed last: the token goes
#: through every member once a rotation, and flow control lets the ring send at most the global
#: window in one. Beyond it, the packet is not one of our ring's (a confused or forged sender):
#: dropped, so that a far link_seq cannot make the ring wait for packets nobody will ever send.
RING_AHEAD_ROTATIONS = 2
#: The group state exchange after a ring change holds every message delivered before the last
#: STATE. STATE goes first in each daemon's queue, so that is what the ring carries in about one
#: or two token rotations. More than this many rotations of the global window (packets x bytes)
#: means something is wrong: logged, counted, and this daemon's clients are not read until the
#: exchange is done (a held message is never dropped).
HELD_LIMIT_ROTATIONS = 4
#: group memberships in one STATE message, in bytes of "group<TAB>member" lines; more go in
#: further parts (the largest message is about 147 KB; a daemon may hold 997 sessions x 2000
#: groups)
STATE_PART_BYTES = 100000  # (at most 65535 parts: the part's index and count share its hint)
#: A daemon stopped cleanly (Ctrl-C, SIGTERM) sends a LEAVE packet this many times, this far
#: apart (a datagram can be lost; a burst of loss, a full receive buffer, would take copies sent
#: back to back together), then nothing more. If every copy is lost the others still notice by
#: token loss, as for a crash: slower, never wrong.
LEAVE_COPIES = 3
LEAVE_COPY_GAP_S = 0.02
#: the reason a leaving daemon gives ("stopped by its operator"): printable UTF-8, this long at most
LEAVE_REASON_MAX_BYTES = 80
#: after a LEAVE, what else comes from that process (a join sent before it, arriving late) is
#: dropped for this long: far longer than a datagram lingers in a LAN, and short enough that a
#: LEAVE naming a daemon that is in fact alive (a confused or forged sender) costs a few ring
#: changes, not a livelock (it would be left out here and taken in by the others, for ever)
LEAVE_REMEMBER_S = 2.0


class Settings:
    """Tunable values: each kind sets its defaults in __init__ and ends with override(), the one
    way to change them (keywords in code, spread.conf, the command line): a name that is not
    one of its settings is an error, never a new attribute that nothing reads."""

    KIND = ""  #: the kind's name in the error, "ring" or "HOP"

    def override(self, **values) -> "Settings":
        for key, value in values.items():
            if key not in vars(self):
                raise TypeError("unknown %s setting %r" % (self.KIND, key))
            setattr(self, key, value)
        return self


class RingSettings(Settings):
    """Tunable values. The defaults install a new configuration well within 2 s of a crash:
    token loss is noticed after token_timeout_s (0.6 s), then the survivors wait at most
    consensus_timeout_s (0.5 s) for the dead daemon's join before they leave it out; the commit
    token and the recovery take a few token rotations (milliseconds on a LAN)."""

    KIND = "ring"

    def __init__(self, **overrides):
        #: no token for this long while OPERATIONAL/RECOVERY: the ring is broken (Totem "token loss")
        self.token_timeout_s = 0.6
        #: the holder that passed the token sends it again after this long without a sign of life
        self.token_retransmit_s = 0.08
        #: at most this many token retransmissions per pass (token_timeout_s catches the rest)
        self.token_retransmits_max = 6
        #: an idle ring (nothing sent, nothing missing) is held this long by the representative,
        #: so an idle ring does not burn the CPU; a submit() releases it at once
        self.token_hold_s = 0.02
        #: GATHER: a join message is sent to every configured daemon this often
        self.join_interval_s = 0.05
        #: GATHER: daemons whose join does not agree with ours within this time are left out
        self.consensus_timeout_s = 0.5
        #: OPERATIONAL: the representative announces the ring to the daemons outside it this often
        #: (Totem's merge detection), so that partitions heal
        self.merge_detect_s = 0.5
        #: largest daemon-daemon datagram (fits a 1500-byte Ethernet MTU with IP and UDP headers;
        #: a ring on one machine uses LOOPBACK_PACKET_BYTES: ring_settings_of)
        self.max_packet_bytes = LAN_PACKET_BYTES
        #: flow control: packets (new and retransmitted) in the whole ring per token rotation
        #: (800 x 1400 bytes: about 90 ms of a 100 Mbit LAN)
        self.global_window_packets = 800
        #: flow control: packets one daemon may send per token visit. A visit's burst is up to
        #: 280 KB: the daemon asks for 4 MB socket buffers, which Linux caps at net.core.rmem_max
        #: (4 MB on this machine; 208 KB by default elsewhere, where a burst may overflow and is
        #: then repaired by retransmission). 60 gave about half the throughput here.
        self.personal_window_packets = 200
        #: the Accelerated Ring (Babay and Amir, ICDCS 2016; Spread 5's AcceleratedRing): the
        #: holder passes the token before the last accelerated_window_packets new packets of
        #: its visit, so that the next daemon sends while they are on their way; the token's
        #: link_seq counts them, and a daemon asks again only for packets the previous
        #: rotation should have brought. OPERATIONAL only: RECOVERY sends in order, as
        #: Spread 5 does in its EVS state
        self.accelerated_ring = True
        #: ... at most this many packets of a visit go after the token (0: none, but the
        #: retransmission requests still wait a rotation). Spread 5's default is 15 of 20
        self.accelerated_window_packets = 15
        #: longest retransmission request list on the token (keeps the token within one packet)
        self.max_rtr_entries = 100
        #: submitted messages waiting for the token; beyond this submit() refuses
        self.max_pending_messages = 20000
        #: an UNRELIABLE message whose pieces are not all here this long after its first piece
        #: is dropped, every piece of it (7.3.3: no retransmission for it)
        self.unreliable_timeout_s = 1.0
        #: UNRELIABLE messages being assembled per site; beyond this the oldest is dropped
        self.max_unreliable_partial = 1000
        #: lines kept in the protocol log
        self.max_log_lines = 2000
        self.override(**overrides)


class HopSettings(Settings):
    """Tunable values of one HOP link (thesis 7.3.2.1 leaves every number open; lab_guide.md,
    "HOP links: the numbers we chose", says why each). Both ends of a link need the same."""

    KIND = "HOP"

    def __init__(self, **overrides):
        #: Max_pkt_btw_ack: a link ACK goes after this many data packets sent or received since
        #: the last one; a sixteenth of the window, so the sender's window moves on long before
        #: it fills, at one small ACK per 32 packets of up to 1400 bytes
        self.max_pkt_btw_ack = 32
        #: ... or this long after the first of them: a trickle is acknowledged too, and the
        #: tail of a burst lost on the way is noticed by the peer this soon. On a WAN of tens
        #: of ms what the peer needs (its window, its tail) moves at the round trip's pace;
        #: at 5 ms a site that answers each of our packets with a small FRONTIER had us send
        #: an ACK for nearly every one of them: 2 % of a 2 Mbit/s link
        self.ack_delay_s = 0.02
        #: a gap waits this long before the first NACK: a packet the network only reordered
        #: arrives within a millisecond or two, a lost one never does
        self.nack_wait_s = 0.005
        #: the NACK goes again this often while the gap stays: above a WAN round trip (tens
        #: of ms), so that a retransmission on its way is not asked for twice
        self.nack_interval_s = 0.1
        #: dead-peer rule: a packet asked for this many times and still missing. At 10 % loss
        #: a request and its answer both get through 81 % of the time: ten failures in a row
        #: happen once in 6 x 10**7; a dead peer is found within 0.005 + 10 x 0.1 s
        self.nack_requests_max = 10
        #: dead-peer rule: nothing from the peer for this long. Each end sends a keep-alive
        #: ACK when it has sent nothing for keepalive_s: ten lost in a row at 10 % loss is
        #: 10**-10; one second leaves two for the membership change in the issue's 3 s
        self.peer_silence_s = 1.0
        self.keepalive_s = 0.1
        #: S_cur_window: data packets sent and not yet acknowledged, at most. 512 x 1400 bytes
        #: covers 100 Mbit/s x 57 ms (a WAN round trip at the lab's speed), and bounds how far
        #: ahead a packet may be and how long a NACK list gets
        self.window_packets = 512
        #: the token bucket: data bytes per second, and the largest burst. 100 Mbit/s, the
        #: lab's LAN (set it to the WAN's speed, e.g. 250000 for 2 Mbit/s); a burst of 64 KB
        #: is what a 2 Mbit/s router queue of a quarter second holds
        self.rate_bytes_s = 12500000
        self.burst_bytes = 65536
        #: largest datagram: with the network's 28 bytes it fills a 1500-byte Ethernet MTU
        #: (every byte of header a WAN packet carries is paid for at the link's rate)
        self.max_packet_bytes = 1472
        #: what the network adds to each datagram on the link (IPv4 20 + UDP 8 bytes): the
        #: bucket counts it too, so that rate_bytes_s is the link's own rate, as a router
        #: (or labnet's WAN emulator) counts it
        self.datagram_overhead_bytes = 28
        #: payloads waiting for the window or the bucket, at most (submit refuses beyond): a
        #: link to a slow site holds its own queue and never blocks the other links
        self.max_queued_packets = 20000
        #: pruning by group interest: a data message goes in full only down links through
        #: which a site may be reached that may have a member of its groups, elsewhere as a
        #: SKIP (its place in its site's order). False (--no-prune): in full everywhere, as
        #: the thesis's sites without pruning (a bench compares the two)
        self.prune = True
        #: a site split in two rings (dynamic voting): a ring without a quorum of the last
        #: ring that kept its site's epoch goes on as a new incarnation, and where the two
        #: rings meet the fork's daemons take the kept state (SiteGateway._fork) and their
        #: clients get the merge's view change (SitesGroupCore's REJOIN). Off (--no-split-quorum):
        #: the daemons of the ring not kept stop with an ERROR when the rings meet
        self.split_quorum = True
        #: ... only in sites of at least this many daemons: in a site of two, voting makes a
        #: crash of the first daemon a fork and a merge (two views instead of one, and the
        #: other side misses most of what the crashed side sent meanwhile; lab_guide.md)
        self.split_quorum_min_daemons = 3
        self.override(**overrides)


# =============================================================================================
# Wire format
# =============================================================================================
# Every int in a header or membership body is in the WRITER's byte order; the endian marker
# 0x80000080 in `type` tells which.  We write in our native order, with the marker set iff we
# are little-endian, exactly like the real daemon and library (daemon/arch.h ARCH_ENDIAN).

LITTLE_HOST = sys.byteorder == "little"
MY_ENDIAN_MARKER = ENDIAN_TYPE if LITTLE_HOST else 0
#: 48-byte header: type, private_group_name[32], num_groups, hint, data_len
HEADER = struct.Struct("=I32siIi")
HEADER_SWAPPED = struct.Struct((">" if LITTLE_HOST else "<") + "I32siIi")
INT32 = struct.Struct("=i")
UINT32 = struct.Struct("=I")
UINT32_SWAPPED = struct.Struct((">" if LITTLE_HOST else "<") + "I")
GROUP_ID = struct.Struct("=Iii")  # memb_id.proc_id, memb_id.time, index
GROUP_ID_SWAPPED = struct.Struct((">" if LITTLE_HOST else "<") + "Iii")
VS_HEAD = struct.Struct("=II")  # num_vs_sets, local_vs_set_offset

SERVICE_BITS = (UNRELIABLE_MESS, RELIABLE_MESS, FIFO_MESS, CAUSAL_MESS, AGREED_MESS, SAFE_MESS)
#: the only legal `type` values of a client multicast (marker stripped)
DATA_TYPES = frozenset(s | d for s in SERVICE_BITS for d in (0, SELF_DISCARD))
CONTROL_TYPES = frozenset((JOIN_MESS, LEAVE_MESS, KILL_MESS))
HINT_ALLOWED = 0x80FFFF80  # hint bits a client may set: mess_type and the endian marker
HINT_FORBIDDEN = 0x7F00007F


def bswap32(value: int) -> int:
    """Reverse the 4 bytes of a 32-bit value (for a peer of the other byte order)."""
    return int.from_bytes((value & 0xFFFFFFFF).to_bytes(4, "little"), "big")


def make_hint(mess_type: int) -> int:
    """hint = ((mess_type << 8) & 0x00ffff00) | endian marker (sp.c:1116-1117)."""
    return ((mess_type << 8) & 0x00FFFF00) | MY_ENDIAN_MARKER


def hint_mess_type(hint: int) -> Tuple[int, bool]:
    """(mess_type as a signed 16-bit int, endian_mismatch) from a hint read in our order."""
    mismatch = (hint & ENDIAN_TYPE) != MY_ENDIAN_MARKER
    if mismatch:
        hint = bswap32(hint)
    value = ((hint & ~ENDIAN_TYPE & 0xFFFFFFFF) >> 8) & 0xFFFF
    if value >= 0x8000:
        value -= 0x10000
    return value, mismatch


def pad_name(name: Union[str, bytes]) -> bytes:
    """A group or private group name as 32 NUL-padded bytes."""
    raw = name.encode("latin-1") if isinstance(name, str) else bytes(name)
    return raw[:MAX_GROUP_NAME].ljust(MAX_GROUP_NAME, b"\0")


_NAME_CACHE: Dict[bytes, str] = {}
_NAME_CACHE_MAX = 8192


def unpad_name(raw: bytes) -> str:
    """The name in a 32-byte field: up to the first NUL (bytes after it may be garbage)."""
    name = _NAME_CACHE.get(raw)
    if name is None:
        name = raw.split(b"\0", 1)[0].decode("latin-1")
        if len(_NAME_CACHE) >= _NAME_CACHE_MAX:
            _NAME_CACHE.clear()
        _NAME_CACHE[raw] = name
    return name


def name_is_legal(name: str, min_char: int = GROUP_NAME_MIN_CHAR,
                  max_len: int = MAX_GROUP_NAME - 1) -> bool:
    """1..max_len characters, each between min_char and '~'."""
    return 0 < len(name) <= max_len and all(min_char <= ord(c) <= NAME_MAX_CHAR for c in name)


def encode_message(type_bits: int, sender: Union[str, bytes], groups: Sequence[Union[str, bytes]],
                   hint: int, data: bytes) -> bytes:
    """One message (header, group names, data) in our byte order, marker stamped into `type`."""
    head = HEADER.pack((type_bits & ~ENDIAN_TYPE & 0xFFFFFFFF) | MY_ENDIAN_MARKER, pad_name(sender),
                       len(groups), hint, len(data))
    return head + b"".join(pad_name(g) for g in groups) + data


def encode_group_id(group_id: Tuple[int, int, int]) -> bytes:
    proc_id, memb_time, index = group_id
    return GROUP_ID.pack(proc_id & 0xFFFFFFFF, memb_time, index)


def encode_vs_sets(vs_sets: Sequence[Sequence[str]], local_index: int) -> bytes:
    """num_vs_sets, local_vs_set_offset (bytes from body+20 to MY set), then the sets."""
    parts = []
    offset = 0
    local_offset = 0
    for i, members in enumerate(vs_sets):
        if i == local_index:
            local_offset = offset
        part = UINT32.pack(len(members)) + b"".join(pad_name(m) for m in members)
        parts.append(part)
        offset += len(part)
    return VS_HEAD.pack(len(vs_sets), local_offset) + b"".join(parts)


def encode_reg_memb(group: str, cause: int, members_blob: bytes, num_members: int,
                    group_id: Tuple[int, int, int], vs_sets: Sequence[Sequence[str]],
                    local_vs_index: int = 0) -> bytes:
    """REG_MEMB_MESS | cause: sender = the group, groups = all members, body = id + vs_sets."""
    body = encode_group_id(group_id) + encode_vs_sets(vs_sets, local_vs_index)
    head = HEADER.pack(REG_MEMB_MESS | cause | MY_ENDIAN_MARKER, pad_name(group), num_members,
                       MY_ENDIAN_MARKER, len(body))
    return head + members_blob + body


def set_joiners_apart(vs_sets: Sequence[Sequence[str]], local_index: int, joiners: Container[str]
                      ) -> Tuple[List[List[str]], int, Dict[str, int]]:
    """The vs_sets with each joiner taken out of its set into one of its own, after the others
    (a set left empty goes), the receiver's index moved with its set, and each joiner's index."""
    kept: List[List[str]] = []
    moved_index = 0
    alone: List[str] = []
    for i, members in enumerate(vs_sets):
        rest = [m for m in members if m not in joiners]
        alone.extend(m for m in members if m in joiners)
        if i == local_index:
            moved_index = len(kept) if rest else 0
        if rest:
            kept.append(rest)
    joiner_index = {}
    for member in alone:
        joiner_index[member] = len(kept)
        kept.append([member])
    return kept, moved_index, joiner_index


def encode_transition(group: str, group_id: Tuple[int, int, int]) -> bytes:
    """TRANSITION_MESS: sender = the group, no groups, body = the old group id only."""
    body = encode_group_id(group_id)
    return HEADER.pack(TRANSITION_MESS | MY_ENDIAN_MARKER, pad_name(group), 0, MY_ENDIAN_MARKER,
                       len(body)) + body


def encode_self_leave(group: str) -> bytes:
    """The reply to one's own leave: CAUSED_BY_LEAVE alone, no groups, no body."""
    return HEADER.pack(CAUSED_BY_LEAVE | MY_ENDIAN_MARKER, pad_name(group), 0, MY_ENDIAN_MARKER, 0)


def encode_connect(private_name: str, group_membership: bool, priority: int = 0,
                   version: Tuple[int, int, int] = (SP_MAJOR_VERSION, SP_MINOR_VERSION, SP_PATCH_VERSION)) -> bytes:
    """The client's connect message: version, flags, name length, name (sp.c:686-705)."""
    raw = private_name.encode("latin-1")
    flags = (1 if group_membership else 0) | ((priority & 0x0F) << 4)
    return bytes((version[0], version[1], version[2], flags, len(raw))) + raw


def encode_auth_choice(methods: Sequence[str] = ("NULL",)) -> bytes:
    """MAX_AUTH_METHODS slots of MAX_AUTH_NAME NUL-padded bytes: 90 bytes in all."""
    slots = [m.encode("latin-1")[:MAX_AUTH_NAME].ljust(MAX_AUTH_NAME, b"\0") for m in methods[:MAX_AUTH_METHODS]]
    return b"".join(slots).ljust(AUTH_BLOCK_LEN, b"\0")


def encode_auth_list(methods: Sequence[str] = AUTH_METHODS_ALLOWED) -> bytes:
    """Length byte, then every allowed method name followed by one space (acm.c:282-300)."""
    text = "".join(m + " " for m in methods).encode("latin-1")
    return bytes((len(text),)) + text


def encode_accept(private_group: str, lib_version: int) -> bytes:
    """ACCEPT_SESSION, daemon version (patch only for libs >= 3.15), name length, name."""
    version = bytes((SP_MAJOR_VERSION, SP_MINOR_VERSION))
    if lib_version >= LIB_VERSION_GETS_PATCH:
        version += bytes((SP_PATCH_VERSION,))
    raw = private_group.encode("latin-1")
    return bytes((ACCEPT_SESSION,)) + version + bytes((len(raw),)) + raw


def reject_byte(code: int) -> bytes:
    return struct.pack("b", code)


@dataclass
class GroupId:
    """A group's id: the daemon membership id (proc_id, time) and a per-group change index."""

    proc_id: int
    time: int
    index: int

    def __iter__(self):
        return iter((self.proc_id, self.time, self.index))


def equal_group_ids(a, b) -> bool:
    """SP_equal_group_ids: the same three numbers."""
    return tuple(a) == tuple(b)



# ---- Ring: daemon-daemon packets ---------------------------------------------------------
# Every datagram: magic "SMRG" (4 bytes), version (u8), packet type (u8), flags (u8: 1 = it
# ends with a key's tag), then the configuration stamp (9 bytes: how many daemons the sender's
# configuration lists, u8, and 4 bytes each of SHA-256 of its daemons and of its ring settings,
# so that daemons started from different files never take each other's packets), then the body,
# then the trailer: without a key a CRC-32 of everything before it (u32), so that a mangled or
# foreign datagram is recognised and dropped rather than delivered with wrong contents; with a
# key (--key) the first RING_TAG_BYTES of HMAC-SHA256(key, everything before it), so that only
# a daemon holding the key can make a packet that the others take (RingSeal).
# All integers are big-endian. A daemon id ("pid") is the daemon's name (u8 length + UTF-8,
# at most 20 bytes) and its incarnation (u64; a restarted daemon gets a new one, so its old
# packets can never be taken for new ones). A ring id is (u64 ring seq, representative pid).
#
#   DATA   ring_id, sender, link_seq u64, flags u8, then either chunks (u16 count, each:
#          origin_counter u64, lts u64, site_seq u64, frag_index u16, frag_count u16,
#          service u32, length u32, bytes) or, with flag RECOVERED, one old-ring DATA packet
#          (u32 length + its encoding) that a daemon retransmits for the members of its old ring.
#   TOKEN  ring_id, sender, token_id u64, type u8, link_seq u64, link_aru u64, flow_control u32,
#          rtr (u16 count + u64 each), site_seq u64, site_lts u64, site_aru u64,
#          site_aru_modifier (u8 present + pid), retrans_flg u8
#   JOIN   sender, ring_seq u64, proc_set (u16 + pids), fail_set (u16 + pids)
#   COMMIT ring_id, sender, token_id u64, rotation u8, members (u16 + pids),
#          entries (u16 count, each: pid, old ring_id, old_aru u64, old_high u64,
#          old_safe_lts u64, site_lts u64)
#   MERGE  sender, ring_id   (the representative's "a ring is here"; from a member of the
#          same ring to its first member, a wake: "pass the idle token, I have something")
#   UNRELIABLE  ring_id, sender, chunks as in DATA (origin_counter is the sender's separate
#          unreliable sequence): pieces of UNRELIABLE messages, no link_seq, never resent (7.3.3)
#   LEAVE  sender, ring_id (the ring it was in), reason (u8 length + printable UTF-8): "I stop
#          now, do not wait for me" (a daemon stopped by Ctrl-C or SIGTERM; sent a few times)

FLAG_RECOVERED = 0x01

#: names of the ring's plain values, for the annotations (they are tuples on the wire's terms)
Pid = Tuple[str, int]  #: a daemon: (name, incarnation)
RingId = Tuple[int, str, int]  #: a ring: (ring seq, representative's name, its incarnation)
Stamp = Tuple[int, bytes, bytes]  #: a configuration stamp (configuration_stamp)


class RingUsageError(ValueError):
    """The ring core's caller made a mistake (h11's LocalProtocolError): a daemon name, a
    message or a leave reason that the ring cannot carry. A bug in the daemon or a wrong
    argument, never the network's doing: it is raised to the caller."""


class RingPeerError(ValueError):
    """Another daemon, or whoever sends to our ring port, misbehaved (h11's
    RemoteProtocolError). Never raised to the ring core's caller: the packet is dropped and
    counted, and the ring goes on."""


class RingWireError(RingPeerError):
    """A datagram that is not a well-formed ring packet of our version and configuration
    (dropped, and counted as dropped_<reason>)."""

    def __init__(self, text: str, reason: str = "garbage") -> None:
        super().__init__(text)
        #: the counter's name: garbage, no_tag, bad_tag, unexpected_tag, different_configuration
        self.reason = reason


class RingConfigurationError(RingWireError):
    """A well-formed packet of another configuration: what its stamp says, and who sent it."""

    def __init__(self, text: str, stamp: Stamp, sender: Pid) -> None:
        super().__init__(text, "different_configuration")
        self.stamp = stamp  #: (daemons, daemons hash, settings hash) of the sender's file
        self.sender = sender  #: (name, incarnation) from its body


def configuration_stamp(daemons: Sequence[Tuple[str, str, int]] = (),
                        settings: Optional[RingSettings] = None) -> Stamp:
    """What a daemon's configuration says that must be the same at every daemon of a ring:
    (how many daemons, 4 bytes of SHA-256 of their names, addresses and ports, 4 bytes of
    SHA-256 of the ring settings). daemons: (name, ip, port) each. Without daemons (the tests'
    and the simulator's orderers): the zero stamp, which every such orderer shares."""
    if not daemons:
        return (0, bytes(4), bytes(4))
    listed = "\n".join("%s %s %d" % d for d in sorted(daemons)).encode("utf-8")
    values = sorted((k, v) for k, v in vars(settings or RingSettings()).items()
                    if k != "max_log_lines")  # how much log a daemon keeps is its own affair
    tuned = repr(values).encode("utf-8")
    return (min(len(daemons), 255), hashlib.sha256(listed).digest()[:4],
            hashlib.sha256(tuned).digest()[:4])


def stamp_difference(theirs: Stamp, ours: Stamp) -> str:
    """What differs between two configuration stamps, for people."""
    if theirs[0] != ours[0]:
        return "it lists %d daemons, we list %d" % (theirs[0], ours[0])
    what = []
    if theirs[1] != ours[1]:
        what.append("other daemon names, addresses or ports (%d daemons, as we list)" % ours[0])
    if theirs[2] != ours[2]:
        what.append("other ring settings (Window, PersonalWindow or the timeouts)")
    return "; ".join(what) or "nothing we can tell"


FLAG_TAGGED = 0x01
_RING_HEADER = struct.Struct(">4sBBBB4s4s")  # magic, version, type, flags, daemons, two hashes
RING_HEADER_BYTES = _RING_HEADER.size


class RingSeal:
    """The header and trailer of every daemon-daemon datagram of one daemon: its configuration
    stamp, and its key (bytes) or None. seal() finishes an encoded packet; open() checks one
    that came in and says why it is refused (RingWireError.reason). Without a key and a
    configuration (OPEN_SEAL) the packets are those of the tests and the simulator."""

    def __init__(self, key: Optional[bytes] = None, stamp: Optional[Stamp] = None) -> None:
        self.key = key
        self._pads = _hmac_sha256_pads(key) if key else None
        self.stamp = stamp or configuration_stamp()
        self.flags = FLAG_TAGGED if key else 0
        self.trailer_bytes = RING_TAG_BYTES if key else 4
        self._stamp_bytes = struct.pack(">B", self.stamp[0]) + self.stamp[1] + self.stamp[2]
        #: how every data packet sealed by us (or by a daemon of our configuration) begins
        self.data_header = self.header(PT_DATA)
        self.token_header = self.header(PT_TOKEN)

    def header(self, ptype: int) -> bytes:
        return _RING_HEADER.pack(RING_MAGIC, RING_VERSION, ptype, self.flags, self.stamp[0],
                                 self.stamp[1], self.stamp[2])

    def seal(self, raw: bytes) -> bytes:
        if self.key:
            return raw + self._tag(raw)
        return raw + struct.pack(">I", zlib.crc32(raw) & 0xFFFFFFFF)

    def open(self, data: bytes) -> Tuple[int, bytes]:
        """(packet type, body without the trailer) of a datagram that passes the header and
        the trailer, else RingWireError with its reason. The stamp is checked by the caller
        (after the body, which names the sender)."""
        if len(data) < RING_HEADER_BYTES + 4 or data[:4] != RING_MAGIC:
            raise RingWireError("not a spread_mini ring packet (no magic)")
        version, ptype, flags = data[4], data[5], data[6]
        if version != RING_VERSION:
            raise RingWireError("ring protocol version %d, we speak %d" % (version, RING_VERSION))
        if flags & ~FLAG_TAGGED:
            raise RingWireError("unknown header flags 0x%x" % flags)
        if not self.key:
            if flags & FLAG_TAGGED:
                raise RingWireError("a packet signed with a key, and this daemon has none "
                                    "(start it with --key)", "unexpected_tag")
            body, crc = data[:-4], struct.unpack(">I", data[-4:])[0]
            if zlib.crc32(body) & 0xFFFFFFFF != crc:
                raise RingWireError("checksum mismatch (a mangled packet)")
            return ptype, body
        if not flags & FLAG_TAGGED:
            raise RingWireError("a packet without the key's tag", "no_tag")
        body, tag = data[:-RING_TAG_BYTES], data[-RING_TAG_BYTES:]
        if len(body) < RING_HEADER_BYTES or not hmac.compare_digest(
                self._tag(body), tag):
            raise RingWireError("the key's tag does not match (another key, or an altered "
                                "packet)", "bad_tag")
        return ptype, body

    def _tag(self, raw: bytes) -> bytes:
        """HMAC-SHA256 of raw under the key (RFC 2104), cut to RING_TAG_BYTES. The key's two
        padded blocks were hashed once, when the seal was made: each packet then costs two
        hash copies, about 40 % less than hmac.digest(), which hashes them again every time
        (that difference is most of what a key costs the ring)."""
        inner, outer = self._pads[0].copy(), self._pads[1].copy()
        inner.update(raw)
        outer.update(inner.digest())
        return outer.digest()[:RING_TAG_BYTES]

    def same_configuration(self, data: bytes) -> bool:
        return data[7:RING_HEADER_BYTES] == self._stamp_bytes


def _hmac_sha256_pads(key: bytes) -> Tuple["hashlib._Hash", "hashlib._Hash"]:
    """The inner and outer SHA-256 states of HMAC (RFC 2104) for one key, hashed once: a key
    longer than a block is hashed first, then padded with zeros to the block and XORed with
    0x36 (inner) and 0x5c (outer). hmac.digest(key, m, "sha256") equals
    sha256(outer || sha256(inner || m)); the tests hold RingSeal to that."""
    block = hashlib.sha256().block_size
    if len(key) > block:
        key = hashlib.sha256(key).digest()
    key = key.ljust(block, b"\0")
    return (hashlib.sha256(bytes(b ^ 0x36 for b in key)),
            hashlib.sha256(bytes(b ^ 0x5C for b in key)))


#: the seal of orderers made without a key or a configuration (tests, the simulator)
OPEN_SEAL = RingSeal()


def read_key_file(path: str) -> bytes:
    """The key bytes of a key file made by `keygen`, or ValueError saying what is wrong."""
    try:
        with open(path, "rb") as f:
            key = f.read(4096)
    except OSError as exc:
        raise ValueError("cannot read the key file %s: %s" % (path, exc.strerror or exc))
    if len(key) < RING_KEY_MIN_BYTES:
        raise ValueError("the key file %s has %d bytes, fewer than %d: make one with "
                         "`python3 spread_mini.py keygen %s`" % (path, len(key), RING_KEY_MIN_BYTES, path))
    return key


def write_key_file(path: str, nbytes: int = RING_KEY_BYTES) -> None:
    """A new key file of random bytes, readable by its owner only (mode 0600), as
    corosync-keygen makes one. An existing file is never overwritten (daemons that hold the
    old key would be cut off): FileExistsError."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchmod(fd, 0o600)  # whatever the umask
        os.write(fd, os.urandom(nbytes))
    finally:
        os.close(fd)


_RING_STRUCTS = {}
_U8, _U16, _U32, _U64 = (struct.Struct(">B"), struct.Struct(">H"), struct.Struct(">I"),
                         struct.Struct(">Q"))


class _RingReader:
    """Strict reader: running past the end or leaving bytes behind is a RingWireError.
    (Precompiled structs and unpack_from: this is the hot path of every datagram.)"""

    __slots__ = ("data", "pos", "size")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0
        self.size = len(data)

    def take(self, n: int) -> bytes:
        pos = self.pos
        if n < 0 or pos + n > self.size:
            raise RingWireError("truncated packet")
        self.pos = pos + n
        return self.data[pos:pos + n]

    def _fixed(self, st: struct.Struct) -> tuple:
        pos = self.pos
        if pos + st.size > self.size:
            raise RingWireError("truncated packet")
        self.pos = pos + st.size
        return st.unpack_from(self.data, pos)

    def unpack(self, fmt: str) -> tuple:
        st = _RING_STRUCTS.get(fmt)
        if st is None:
            st = _RING_STRUCTS[fmt] = struct.Struct(fmt)
        return self._fixed(st)

    def u8(self) -> int:
        return self._fixed(_U8)[0]

    def u16(self) -> int:
        return self._fixed(_U16)[0]

    def u32(self) -> int:
        return self._fixed(_U32)[0]

    def u64(self) -> int:
        return self._fixed(_U64)[0]

    def counter(self) -> int:
        return _counters(self._fixed(_U64))[0]

    def varint(self) -> int:
        """read_varint's number (at most MAX_WIRE_COUNTER)."""
        try:
            value, self.pos = read_varint(self.data, self.pos)
        except IndexError:
            raise RingWireError("truncated packet")
        if self.pos > self.size:
            raise RingWireError("truncated packet")
        return value

    def pid(self) -> Pid:
        n = self.u8()
        if n == 0 or n > MAX_NAME_BYTES:
            raise RingWireError("bad daemon name length %d" % n)
        raw = self.take(n)
        name = _RING_NAMES.get(raw)
        if name is None:
            try:
                name = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise RingWireError("daemon name is not UTF-8")
            if len(_RING_NAMES) < 1024:
                _RING_NAMES[raw] = name
        return (name, self.counter())

    def ring_id(self) -> RingId:
        seq = self.counter()
        rep = self.pid()
        return (seq, rep[0], rep[1])

    def pid_list(self) -> List[Pid]:
        n = self.u16()
        if n > MAX_SET_MEMBERS:
            raise RingWireError("too many members (%d)" % n)
        return [self.pid() for _ in range(n)]

    def end(self) -> None:
        if self.pos != self.size:
            raise RingWireError("%d unexpected bytes after the packet" % (self.size - self.pos))


_RING_NAMES = {}  # daemon name bytes -> str (a handful of daemons: decode each once)


def _counters(values: Sequence[int]) -> Sequence[int]:
    """values, if every one is at most MAX_WIRE_COUNTER (the daemon adds to them), else
    RingWireError."""
    for v in values:
        if v > MAX_WIRE_COUNTER:
            raise RingWireError("counter %d beyond %d" % (v, MAX_WIRE_COUNTER))
    return values


def _pid_bytes(pid: Pid) -> bytes:
    raw = pid[0].encode("utf-8")
    return struct.pack(">B", len(raw)) + raw + struct.pack(">Q", pid[1])


def _ring_id_bytes(ring_id: RingId) -> bytes:
    return struct.pack(">Q", ring_id[0]) + _pid_bytes((ring_id[1], ring_id[2]))


def _pid_list_bytes(pids: Iterable[Pid]) -> bytes:
    return struct.pack(">H", len(pids)) + b"".join(_pid_bytes(p) for p in pids)


def _ring_header(ptype: int, seal: Optional[RingSeal] = None) -> bytes:
    return (seal or OPEN_SEAL).header(ptype)


def _ring_seal(raw: bytes, seal: Optional[RingSeal] = None) -> bytes:
    return (seal or OPEN_SEAL).seal(raw)


_RING_CHUNK = struct.Struct(">QQQHHII")
CHUNK_HEADER_BYTES = _RING_CHUNK.size


class RingChunk:
    """A piece of one message inside a data packet (small messages are packed several to a
    packet; a big one is fragmented over several packets)."""
    __slots__ = ("origin_counter", "lts", "site_seq", "frag_index", "frag_count", "service", "body")

    def __init__(self, origin_counter: int, lts: int, site_seq: int, frag_index: int,
                 frag_count: int, service: int, body: bytes) -> None:
        self.origin_counter = origin_counter
        self.lts = lts
        self.site_seq = site_seq
        self.frag_index = frag_index
        self.frag_count = frag_count
        self.service = service
        self.body = body


class RingData:
    ptype = PT_DATA  #: its packet type on the wire (the key of the orderer's dispatch)
    __slots__ = ("ring_id", "sender", "link_seq", "chunks", "inner", "_raw")

    def __init__(self, ring_id: RingId, sender: Pid, link_seq: int,
                 chunks: Sequence[RingChunk] = (), inner: Optional[RingData] = None) -> None:
        self.ring_id = ring_id
        self.sender = sender
        self.link_seq = link_seq
        self.chunks = list(chunks)
        self.inner = inner  # an old-ring RingData retransmitted in RECOVERY, or None
        self._raw = None


class RingToken:
    """The ring token. Thesis field -> Totem field:
    link_seq = seq (highest packet sequence sent on the ring), link_aru = aru,
    site_aru_modifier = aru_id (who last lowered the aru), flow_control = fcc,
    rtr = rtr list, retrans_flg = retrans_flg (recovery still has old messages to resend).
    site_seq, site_lts and site_aru are the message-level counterparts the thesis adds
    (message count, Lamport time stamp, all-received-up-to in LTS units)."""
    ptype = PT_TOKEN  #: its packet type on the wire (the key of the orderer's dispatch)
    __slots__ = ("ring_id", "sender", "token_id", "type", "link_seq", "link_aru", "flow_control",
                 "rtr", "site_seq", "site_lts", "site_aru", "site_aru_modifier", "retrans_flg")

    def __init__(self, ring_id: RingId, sender: Pid, token_id: int = 0, type: int = TOKEN_REGULAR,
                 link_seq: int = 0, link_aru: int = 0, flow_control: int = 0,
                 rtr: Sequence[int] = (), site_seq: int = 0, site_lts: int = 0, site_aru: int = 0,
                 site_aru_modifier: Optional[Pid] = None, retrans_flg: int = 0) -> None:
        self.ring_id = ring_id
        self.sender = sender
        self.token_id = token_id
        self.type = type
        self.link_seq = link_seq
        self.link_aru = link_aru
        self.flow_control = flow_control
        self.rtr = list(rtr)
        self.site_seq = site_seq
        self.site_lts = site_lts
        self.site_aru = site_aru
        self.site_aru_modifier = site_aru_modifier
        self.retrans_flg = retrans_flg


class RingJoin:
    ptype = PT_JOIN  #: its packet type on the wire (the key of the orderer's dispatch)
    __slots__ = ("sender", "ring_seq", "proc_set", "fail_set")

    def __init__(self, sender: Pid, ring_seq: int, proc_set: Iterable[Pid],
                 fail_set: Iterable[Pid]) -> None:
        self.sender = sender
        self.ring_seq = ring_seq
        self.proc_set = sorted(proc_set)
        self.fail_set = sorted(fail_set)


class RingCommitEntry:
    """What one member tells the others, on the commit token, about its old ring."""
    __slots__ = ("old_ring_id", "old_aru", "old_high", "old_safe_lts", "site_lts")

    def __init__(self, old_ring_id: RingId, old_aru: int, old_high: int, old_safe_lts: int,
                 site_lts: int) -> None:
        self.old_ring_id = old_ring_id
        self.old_aru = old_aru
        self.old_high = old_high
        self.old_safe_lts = old_safe_lts
        self.site_lts = site_lts


class RingCommit:
    ptype = PT_COMMIT  #: its packet type on the wire (the key of the orderer's dispatch)
    __slots__ = ("ring_id", "sender", "token_id", "rotation", "members", "entries")

    def __init__(self, ring_id: RingId, sender: Pid, token_id: int, rotation: int,
                 members: Sequence[Pid], entries: Dict[Pid, RingCommitEntry]) -> None:
        self.ring_id = ring_id
        self.sender = sender
        self.token_id = token_id
        self.rotation = rotation
        self.members = list(members)
        self.entries = dict(entries)


class RingMerge:
    ptype = PT_MERGE  #: its packet type on the wire (the key of the orderer's dispatch)
    __slots__ = ("sender", "ring_id")

    def __init__(self, sender: Pid, ring_id: RingId) -> None:
        self.sender = sender
        self.ring_id = ring_id


class RingUnreliable:
    """Pieces of UNRELIABLE messages (7.3.3): sent by the token holder, outside the reliable
    link (no link_seq, no retransmission), for the members of one ring only."""
    ptype = PT_UNRELIABLE  #: its packet type on the wire (the key of the orderer's dispatch)
    __slots__ = ("ring_id", "sender", "chunks")

    def __init__(self, ring_id: RingId, sender: Pid, chunks: Sequence[RingChunk] = ()) -> None:
        self.ring_id = ring_id
        self.sender = sender
        self.chunks = list(chunks)


class RingLeave:
    """A daemon that stops cleanly says so: the others leave it out at once, without waiting
    for token loss. Its own packet type (not a join naming its sender as failed) so that no
    daemon can take it for a join, and an old daemon drops it as an unknown type."""
    ptype = PT_LEAVE  #: its packet type on the wire (the key of the orderer's dispatch)
    __slots__ = ("sender", "ring_id", "reason")

    def __init__(self, sender: Pid, ring_id: RingId, reason: str) -> None:
        self.sender = sender
        self.ring_id = ring_id
        self.reason = reason


def leave_reason_error(reason: str) -> Optional[str]:
    """Why `reason` cannot travel in a LEAVE packet, or None (it ends up in other daemons'
    logs: printable text only, so no terminal escape codes)."""
    raw = reason.encode("utf-8", "replace")
    if len(raw) > LEAVE_REASON_MAX_BYTES:
        return "leave reason longer than %d bytes" % LEAVE_REASON_MAX_BYTES
    if not reason.isprintable():
        return "leave reason with control characters"
    return None


#: (packet type, seal, ring id, sender) -> the bytes that start each of its data packets and
#: tokens (header, ring id, sender): the same in every one a daemon sends in one ring
_DATA_PREFIXES: Dict[Tuple[int, object, RingId, Pid], bytes] = {}


def _data_prefix(seal: Optional[RingSeal], ring_id: RingId, sender: Pid) -> bytes:
    return _packet_prefix(PT_DATA, seal, ring_id, sender)


def _packet_prefix(ptype: int, seal: Optional[RingSeal], ring_id: RingId, sender: Pid) -> bytes:
    """The header, ring id and sender that begin every data packet and token of one sender in
    one ring: encoded once (bounded)."""
    key = (ptype, seal, ring_id, sender)
    prefix = _DATA_PREFIXES.get(key)
    if prefix is None:
        prefix = _ring_header(ptype, seal) + _ring_id_bytes(ring_id) + _pid_bytes(sender)
        if len(_DATA_PREFIXES) >= _DATA_HEADS_MAX:
            _DATA_PREFIXES.clear()
        _DATA_PREFIXES[key] = prefix
    return prefix


def encode_ring_data(p: RingData, seal: Optional[RingSeal] = None) -> bytes:
    if p._raw is not None:
        return p._raw
    parts = [_data_prefix(seal, p.ring_id, p.sender), _U64.pack(p.link_seq)]
    if p.inner is not None:
        inner = encode_ring_data(p.inner, seal)
        parts.append(struct.pack(">BI", FLAG_RECOVERED, len(inner)))
        parts.append(inner)
    else:
        parts.append(struct.pack(">BH", 0, len(p.chunks)))
        for c in p.chunks:
            parts.append(_RING_CHUNK.pack(c.origin_counter, c.lts, c.site_seq, c.frag_index,
                                     c.frag_count, c.service, len(c.body)))
            parts.append(c.body)
    p._raw = _ring_seal(b"".join(parts), seal)
    return p._raw


def encode_ring_token(t: RingToken, seal: Optional[RingSeal] = None) -> bytes:
    mod = b"\x00" if t.site_aru_modifier is None else b"\x01" + _pid_bytes(t.site_aru_modifier)
    rtr = t.rtr
    return _ring_seal(b"".join([
        _packet_prefix(PT_TOKEN, seal, t.ring_id, t.sender),
        _TOKEN_FIXED.pack(t.token_id, t.type, t.link_seq, t.link_aru, t.flow_control, len(rtr)),
        struct.pack(">%dQ" % len(rtr), *rtr) if rtr else b"",
        _TOKEN_SITE.pack(t.site_seq, t.site_lts, t.site_aru), mod,
        _U8.pack(t.retrans_flg)]), seal)


def encode_ring_join(j: RingJoin, seal: Optional[RingSeal] = None) -> bytes:
    return _ring_seal(b"".join([_ring_header(PT_JOIN, seal), _pid_bytes(j.sender),
                                struct.pack(">Q", j.ring_seq), _pid_list_bytes(j.proc_set),
                                _pid_list_bytes(j.fail_set)]), seal)


def encode_ring_commit(c: RingCommit, seal: Optional[RingSeal] = None) -> bytes:
    parts = [_ring_header(PT_COMMIT, seal), _ring_id_bytes(c.ring_id), _pid_bytes(c.sender),
             struct.pack(">QB", c.token_id, c.rotation), _pid_list_bytes(c.members),
             struct.pack(">H", len(c.entries))]
    for pid in sorted(c.entries):
        e = c.entries[pid]
        parts += [_pid_bytes(pid), _ring_id_bytes(e.old_ring_id),
                  struct.pack(">QQQQ", e.old_aru, e.old_high, e.old_safe_lts, e.site_lts)]
    return _ring_seal(b"".join(parts), seal)


def encode_ring_merge(m: RingMerge, seal: Optional[RingSeal] = None) -> bytes:
    return _ring_seal(_ring_header(PT_MERGE, seal) + _pid_bytes(m.sender)
                      + _ring_id_bytes(m.ring_id), seal)


def encode_ring_leave(p: RingLeave, seal: Optional[RingSeal] = None) -> bytes:
    raw = p.reason.encode("utf-8")
    return _ring_seal(_ring_header(PT_LEAVE, seal) + _pid_bytes(p.sender)
                      + _ring_id_bytes(p.ring_id) + struct.pack(">B", len(raw)) + raw, seal)


def encode_ring_unreliable(p: RingUnreliable, seal: Optional[RingSeal] = None) -> bytes:
    parts = [_ring_header(PT_UNRELIABLE, seal), _ring_id_bytes(p.ring_id), _pid_bytes(p.sender),
             struct.pack(">H", len(p.chunks))]
    for c in p.chunks:
        parts.append(_RING_CHUNK.pack(c.origin_counter, c.lts, c.site_seq, c.frag_index,
                                      c.frag_count, c.service, len(c.body)))
        parts.append(c.body)
    return _ring_seal(b"".join(parts), seal)


#: the bytes of (ring id, sender) at the start of a data packet -> their decoded values: the
#: same in every packet one daemon sends in one ring, so each is decoded once (bounded: forged
#: packets can only make it start over)
_DATA_HEADS: Dict[bytes, Tuple[RingId, Pid]] = {}
_DATA_HEADS_MAX = 256
_SEQ_FLAGS = struct.Struct(">QB")


def _data_head(r: _RingReader) -> Tuple[RingId, Pid]:
    """The ring id and the sender of a data packet (the hot path: cached by their bytes)."""
    data, pos = r.data, r.pos
    try:
        end = pos + 17 + data[pos + 8]  # ring seq, name length and name, incarnation
        end += 9 + data[end]  # the sender: name length and name, incarnation
    except IndexError:
        raise RingWireError("truncated packet") from None
    key = data[pos:end]
    head = _DATA_HEADS.get(key)
    if head is not None and end <= r.size:
        r.pos = end
        return head
    head = (r.ring_id(), r.pid())
    if r.pos == end:
        if len(_DATA_HEADS) >= _DATA_HEADS_MAX:
            _DATA_HEADS.clear()
        _DATA_HEADS[key] = head
    return head


def _decode_data_body(r: _RingReader, seal: Optional[RingSeal]) -> RingData:
    ring_id, sender = _data_head(r)
    link_seq, flags = r._fixed(_SEQ_FLAGS)
    _counters((link_seq,))
    if flags == FLAG_RECOVERED:
        inner = decode_ring_packet(r.take(r.u32()), seal)
        if not isinstance(inner, RingData) or inner.inner is not None:
            raise RingWireError("a recovered packet must hold one plain data packet")
        return RingData(ring_id, sender, link_seq, inner=inner)
    if flags != 0:
        raise RingWireError("unknown data flags 0x%x" % flags)
    chunks = _decode_chunks(r)
    return RingData(ring_id, sender, link_seq, chunks)


def _decode_chunks(r: _RingReader) -> List[RingChunk]:
    """The pieces of messages in a data or UNRELIABLE packet."""
    n = r.u16()
    if n > MAX_CHUNKS_PER_PACKET:
        raise RingWireError("too many chunks (%d)" % n)
    chunks = []
    data, pos, size = r.data, r.pos, r.size
    unpack = _RING_CHUNK.unpack_from
    for _ in range(n):
        if pos + CHUNK_HEADER_BYTES > size:
            raise RingWireError("truncated packet")
        counter, lts, site_seq, index, count, service, length = unpack(data, pos)
        if counter > MAX_WIRE_COUNTER or lts > MAX_WIRE_COUNTER or site_seq > MAX_WIRE_COUNTER:
            _counters((counter, lts, site_seq))
        if count == 0 or index >= count:
            raise RingWireError("bad fragment %d of %d" % (index, count))
        pos += CHUNK_HEADER_BYTES
        end = pos + length
        if end > size:
            raise RingWireError("truncated packet")
        chunks.append(RingChunk(counter, lts, site_seq, index, count, service, data[pos:end]))
        pos = end
    r.pos = pos
    return chunks


_TOKEN_FIXED = struct.Struct(">QBQQIH")  # token id, type, link_seq, link_aru, fcc, rtr count
_TOKEN_SITE = struct.Struct(">QQQ")  # site_seq, site_lts, site_aru


def _decode_token_body(r: _RingReader, _seal: RingSeal) -> RingToken:
    ring_id, sender = _data_head(r)  # laid out as a data packet's: cached alike
    token_id, ttype, link_seq, link_aru, fcc, n = r._fixed(_TOKEN_FIXED)
    _counters((token_id, link_seq))
    if n > 10000:
        raise RingWireError("rtr list too long")
    rtr = list(struct.unpack(">%dQ" % n, r.take(8 * n))) if n else []
    site_seq, site_lts, site_aru = _counters(r._fixed(_TOKEN_SITE))
    present = r.u8()
    if present not in (0, 1):
        raise RingWireError("bad site_aru_modifier flag")
    modifier = r.pid() if present else None
    retrans_flg = r.u8()
    if ttype != TOKEN_REGULAR or retrans_flg not in (0, 1) or link_aru > link_seq:
        raise RingWireError("inconsistent token")
    return RingToken(ring_id, sender, token_id, ttype, link_seq, link_aru, fcc, rtr,
                 site_seq, site_lts, site_aru, modifier, retrans_flg)


def _decode_join_body(r: _RingReader, _seal: RingSeal) -> RingJoin:
    sender = r.pid()
    ring_seq = r.counter()
    return RingJoin(sender, ring_seq, r.pid_list(), r.pid_list())


def _decode_commit_body(r: _RingReader, _seal: RingSeal) -> RingCommit:
    ring_id = r.ring_id()
    sender = r.pid()
    token_id, rotation = r.unpack(">QB")
    _counters((token_id,))
    if rotation not in (1, 2):
        raise RingWireError("bad commit rotation %d" % rotation)
    members = r.pid_list()
    n = r.u16()
    if n > len(members):
        raise RingWireError("more commit entries than members")
    entries = {}
    for _ in range(n):
        pid = r.pid()
        old_ring = r.ring_id()
        entries[pid] = RingCommitEntry(old_ring, *_counters(r.unpack(">QQQQ")))
    if not members or any(p not in members for p in entries):
        raise RingWireError("commit entries for non-members")
    return RingCommit(ring_id, sender, token_id, rotation, members, entries)


def _decode_merge_body(r: _RingReader, _seal: RingSeal) -> RingMerge:
    sender = r.pid()
    return RingMerge(sender, r.ring_id())


def _decode_unreliable_body(r: _RingReader, _seal: RingSeal) -> RingUnreliable:
    ring_id = r.ring_id()
    sender = r.pid()
    chunks = _decode_chunks(r)
    return RingUnreliable(ring_id, sender, chunks)


def _decode_leave_body(r: _RingReader, _seal: RingSeal) -> RingLeave:
    sender = r.pid()
    ring_id = r.ring_id()
    raw = r.take(r.u8())
    try:
        reason = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise RingWireError("leave reason is not UTF-8")
    error = leave_reason_error(reason)
    if error is not None:
        raise RingWireError(error)
    return RingLeave(sender, ring_id, reason)


_RING_DECODERS = {PT_DATA: _decode_data_body, PT_TOKEN: _decode_token_body,
             PT_JOIN: _decode_join_body, PT_COMMIT: _decode_commit_body,
             PT_MERGE: _decode_merge_body, PT_UNRELIABLE: _decode_unreliable_body,
             PT_LEAVE: _decode_leave_body}


def _open_plain(data: bytes, seal: RingSeal, header: bytes) -> Optional[Tuple[bytes, int]]:
    """The fast decoders' first step: the header (magic, version, type, flags, stamp) compared
    in one piece, then the key's tag or the CRC -> (the bytes to read, where the body ends), or
    None for the general path."""
    if data[:RING_HEADER_BYTES] != header:
        return None
    if seal.key:
        buf = seal.open(data)[1]  # its refusal is the general path's first word too
        return buf, len(buf)
    end = len(data) - 4
    if zlib.crc32(data[:end]) != _U32.unpack_from(data, end)[0]:
        return None
    return data, end


def _decode_plain_data(data: bytes, seal: RingSeal) -> Optional[RingData]:
    """decode_ring_packet's hot path: a data packet that is not a recovery resend, of a ring
    and sender whose bytes were decoded before (_DATA_HEADS), in one pass over the datagram
    without copying it (its chunks' bodies are the only copies). Anything else, or anything
    wrong with it, is None: the general path then decodes it or says what is wrong, so both
    paths accept exactly the same packets."""
    opened = _open_plain(data, seal, seal.data_header)
    if opened is None:
        return None
    buf, end = opened
    pos = RING_HEADER_BYTES
    try:
        head_end = pos + 17 + buf[pos + 8]  # as _data_head
        head_end += 9 + buf[head_end]
    except IndexError:
        return None
    head = _DATA_HEADS.get(buf[pos:head_end])
    if head is None or head_end + 11 > end:
        return None
    link_seq, flags = _SEQ_FLAGS.unpack_from(buf, head_end)
    count = _U16.unpack_from(buf, head_end + 9)[0]
    if flags or link_seq > MAX_WIRE_COUNTER or count > MAX_CHUNKS_PER_PACKET:
        return None
    pos = head_end + 11
    chunks = []
    unpack = _RING_CHUNK.unpack_from
    for _ in range(count):
        if pos + CHUNK_HEADER_BYTES > end:
            return None
        counter, lts, site_seq, index, frags, service, length = unpack(buf, pos)
        pos += CHUNK_HEADER_BYTES
        if counter > MAX_WIRE_COUNTER or lts > MAX_WIRE_COUNTER or site_seq > MAX_WIRE_COUNTER \
                or index >= frags or pos + length > end:
            return None
        chunks.append(RingChunk(counter, lts, site_seq, index, frags, service, buf[pos:pos + length]))
        pos += length
    if pos != end:
        return None
    packet = RingData(head[0], head[1], link_seq, chunks)
    packet._raw = data if data.__class__ is bytes else bytes(data)
    return packet


def decode_ring_packet(data: bytes, seal: Optional[RingSeal] = None) -> RingPacket:
    """bytes -> RingData / RingToken / RingJoin / RingCommit / RingMerge / RingUnreliable /
    RingLeave, or RingWireError (its reason says why: RingSeal.open; a packet of another
    configuration is a RingConfigurationError, which names its sender)."""
    seal = seal or OPEN_SEAL
    if len(data) > RING_HEADER_BYTES:
        ptype = data[5]
        packet = _decode_plain_data(data, seal) if ptype == PT_DATA else \
            _decode_plain_token(data, seal) if ptype == PT_TOKEN else None
        if packet is not None:
            return packet
    return _decode_any_packet(data, seal)


def _decode_plain_token(data: bytes, seal: RingSeal) -> Optional[RingToken]:
    """decode_ring_packet's path for a token of our configuration: the header compared in one
    piece, the body read in place. Anything wrong with it is None: the general path then says
    what (as _decode_plain_data)."""
    opened = _open_plain(data, seal, seal.token_header)
    if opened is None:
        return None
    buf, end = opened
    r = _RingReader(buf)
    r.pos, r.size = RING_HEADER_BYTES, end
    try:
        token = _decode_token_body(r, seal)
    except RingWireError:
        return None
    return token if r.pos == end else None


def _decode_any_packet(data: bytes, seal: RingSeal) -> RingPacket:
    """decode_ring_packet's general path: every type, every check, the reasons."""
    ptype, body = seal.open(data)
    decoder = _RING_DECODERS.get(ptype)
    if decoder is None:
        raise RingWireError("unknown packet type %d" % ptype)
    r = _RingReader(body)
    r.pos = RING_HEADER_BYTES
    packet = decoder(r, seal)
    r.end()
    if not seal.same_configuration(data):
        stamp = (data[7], bytes(data[8:12]), bytes(data[12:16]))
        raise RingConfigurationError("a packet of another configuration: %s"
                                     % stamp_difference(stamp, seal.stamp), stamp, packet.sender)
    if isinstance(packet, RingData) and packet.inner is None:
        packet._raw = bytes(data)
    return packet


#: any decoded daemon-daemon packet
RingPacket = Union["RingData", "RingToken", "RingJoin", "RingCommit", "RingMerge",
                   "RingUnreliable", "RingLeave"]


def encode_ring_packet(p: RingPacket, seal: Optional[RingSeal] = None) -> bytes:
    if isinstance(p, RingData):
        return encode_ring_data(p, seal)
    if isinstance(p, RingToken):
        return encode_ring_token(p, seal)
    if isinstance(p, RingJoin):
        return encode_ring_join(p, seal)
    if isinstance(p, RingCommit):
        return encode_ring_commit(p, seal)
    if isinstance(p, RingUnreliable):
        return encode_ring_unreliable(p, seal)
    if isinstance(p, RingLeave):
        return encode_ring_leave(p, seal)
    return encode_ring_merge(p, seal)

# ---- HOP: the packets of a link between two sites (thesis 7.3.2.1) --------------------------------
# Sealed as the ring's (RingSeal: magic, version, type, configuration stamp; CRC or the key's
# tag). After the header, the sender pid and the sender's session of the link (u32: a new
# one each time its end starts afresh, so that a packet of an old end is never read as part of
# the new stream), then:
#   DATA  link seq, its R_link_aru (every DATA carries an ACK's news, so that a link busy
#         both ways sends no ACK of its own), both varints (read_varint: 2-3 bytes where a
#         u64 took 8, on every packet of a WAN link), payload (the rest: site records)
#   ACK   its R_link_aru (u64), its S_highest_linkseq (u64): "I hold all up to link_aru of
#         yours; I have sent up to highest_linkseq" (the second lets the peer see that the
#         tail of a burst was lost), its control seq (u32)
#   NACK  its R_link_aru (u64), its control seq (u32), count (u16), that many missing link
#         seqs (u64)
# The control seq grows by one with every ACK and NACK an end sends: an idle link's keep-alive
# ACKs are otherwise all alike, and a copy of the last one, replayed (it passes any key: the
# peer signed it), must not keep a dead peer alive (the silence rule hears only what is new)

class HopData:
    __slots__ = ("sender", "seq", "payload", "session", "link_aru")

    def __init__(self, sender: Pid, seq: int, payload: bytes, session: int = 0, link_aru: int = 0) -> None:
        self.sender, self.seq, self.payload, self.session = sender, seq, payload, session
        self.link_aru = link_aru


class HopAck:
    __slots__ = ("sender", "link_aru", "highest_linkseq", "session", "control_seq")

    def __init__(self, sender: Pid, link_aru: int, highest_linkseq: int, session: int = 0,
                 control_seq: int = 0) -> None:
        self.sender, self.link_aru, self.highest_linkseq = sender, link_aru, highest_linkseq
        self.session, self.control_seq = session, control_seq


class HopNack:
    __slots__ = ("sender", "link_aru", "missing", "session", "control_seq")

    def __init__(self, sender: Pid, link_aru: int, missing: List[int], session: int = 0,
                 control_seq: int = 0) -> None:
        self.sender, self.link_aru, self.missing, self.session = sender, link_aru, missing, session
        self.control_seq = control_seq


HopPacket = Union[HopData, HopAck, HopNack]


def encode_hop_data(sender: Pid, seq: int, payload: bytes, seal: Optional[RingSeal] = None,
                    session: int = 0, link_aru: int = 0) -> bytes:
    seal = seal or OPEN_SEAL
    return seal.seal(seal.header(PT_HOP_DATA) + _pid_bytes(sender) + _U32.pack(session)
                     + encode_varint(seq) + encode_varint(link_aru) + payload)


def encode_hop_ack(sender: Pid, link_aru: int, highest_linkseq: int,
                   seal: Optional[RingSeal] = None, session: int = 0, control_seq: int = 0) -> bytes:
    seal = seal or OPEN_SEAL
    return seal.seal(seal.header(PT_HOP_ACK) + _pid_bytes(sender) + _U32.pack(session)
                     + _U64.pack(link_aru) + _U64.pack(highest_linkseq) + _U32.pack(control_seq))


def encode_hop_nack(sender: Pid, link_aru: int, missing: Sequence[int],
                    seal: Optional[RingSeal] = None, session: int = 0, control_seq: int = 0) -> bytes:
    seal = seal or OPEN_SEAL
    return seal.seal(seal.header(PT_HOP_NACK) + _pid_bytes(sender) + _U32.pack(session)
                     + _U64.pack(link_aru) + _U32.pack(control_seq) + _U16.pack(len(missing))
                     + b"".join(_U64.pack(s) for s in missing))


def decode_hop_packet(data: bytes, seal: Optional[RingSeal] = None) -> HopPacket:
    """bytes -> HopData / HopAck / HopNack, or RingWireError saying why not (a ring packet
    here is one too: "not a HOP packet")."""
    seal = seal or OPEN_SEAL
    ptype, body = seal.open(data)
    if ptype not in (PT_HOP_DATA, PT_HOP_ACK, PT_HOP_NACK):
        raise RingWireError("not a HOP packet (type %d)" % ptype)
    r = _RingReader(body)
    r.pos = RING_HEADER_BYTES
    sender = r.pid()
    session = r.u32()
    if ptype == PT_HOP_DATA:
        seq, aru = r.varint(), r.varint()
        packet = HopData(sender, seq, r.take(r.size - r.pos), session, aru)  # type: HopPacket
    elif ptype == PT_HOP_ACK:
        aru, highest = r.counter(), r.counter()
        packet = HopAck(sender, aru, highest, session, r.u32())
    else:
        aru, control_seq, count = r.counter(), r.u32(), r.u16()
        packet = HopNack(sender, aru, [r.counter() for _ in range(count)], session, control_seq)
    r.end()
    if ptype == PT_HOP_DATA and packet.seq == 0:
        raise RingWireError("HOP data with link seq 0 (they start at 1)")
    if not seal.same_configuration(data):
        stamp = (data[7], bytes(data[8:12]), bytes(data[12:16]))
        raise RingConfigurationError("a HOP packet of another configuration: %s"
                                     % stamp_difference(stamp, seal.stamp), stamp, sender)
    return packet


# ---- Sites: the records that cross between sites (thesis 7.3.3) -----------------------------
# A site's representative sends its site's messages and control to the other sites as site
# records, and brings theirs into its ring (one message of kind SITES holds several; its first
# group name, if any, is the epoch of our site it was made under, in decimal: a fork's is not
# taken where the kept state is read, SiteGateway._other_incarnation; a second, if any, the
# rings that had kept that epoch then, kept_rings: a fork refuses the kept side's made after
# it. A daemon of before the count reads two names as none). On a HOP
# link the records of one direction are a byte stream cut into DATA payloads; the receiver
# reads them back in link seq order (SiteRecordReader). The records are lean, since a WAN link
# of 2 Mbit/s is the scarce thing: every number is a varint (7 bits a byte, low first, the
# shortest form only). Each record: length (varint, at most 3 bytes), kind (u8), site, lts, then
#   MSG       site_seq, service, origin daemon name (u8 length + UTF-8), the message: a
#             client-format body (RING_WIRE_DATA) crosses as RING_WIRE_LEAN (lean_message_body:
#             names without their padding), anything else as the ring carries it; an
#             empty one is a SKIP: the message's place without its body (pruning)
#   FRONTIER  then, if not 0, the site_seq of the site's last message before it: the site
#             sends nothing more with an lts <= this (7.3.3's "update"). A receiver holds it
#             until it has that message: after a tree changes, a FRONTIER that came the
#             short way must not pass a message still on the long one. Then, if known, the
#             epoch of the site's streams (the site_seq is written then even if 0): a
#             FRONTIER of another incarnation than the one we read is refused
#   ARU       view seq: every daemon of the site holds every message, of any site, up
#             to lts, of the streams of that view (after a merge, an older view's ARU says
#             nothing of the sites that joined)
#   SUSPECT   view seq, then a view body: the representative found sites gone (inside
#             its own site only: its ring orders the suspicion for every daemon there)
#   PROPOSE   view seq, then a view body: the site's proposal for the next view of
#             several sites; lts is the site's own frontier when it proposed (SiteGateway)
#   JOIN      view seq, then a view body whose "lost" list is the merged view's sites:
#             the representative heard a HELLO from a site outside its view (inside its own
#             site only, like SUSPECT); no sites: give up that merge
#   MERGE     view seq, then a view body as JOIN's: the site's proposal to merge two
#             views after a partition healed; lts is the site's frontier when it proposed
#   READY     view seq, then a view body as JOIN's: the site decided that merge (it had
#             every MERGE; lts is the limit) and will never give it up; a merge is
#             installed only with the READY of every site of the new view
#   GIVEUP    view seq, then a view body as JOIN's: the site gave that merge up before it
#             decided it, so it never sends READY for it: nobody installs that merge
#             (MERGE, READY and GIVEUP: the view body's third part, a PROPOSE's merge bases,
#             holds (site, epoch) pairs: the epochs of the sender's site and of its view's
#             sites in a MERGE, of every site of the new view as the decision took them in a
#             READY, of the sender's site in a GIVEUP (an incarnation of it that ended, in
#             one its successor sends: _end_incarnations_merge); a daemon of before reads none there)
#   LINKS     version, then a view body whose "lost" list is the neighbour sites whose
#             direct link is down past its grace, and whose entries (zeros) those whose
#             link died and may come back yet: link state, flooded to every site like
#             PROPOSE; every site's trees are Dijkstra's over the links no end says are down
#   UNRELIABLE as MSG, outside every order: its lts and site_seq (>= 1) are the lts it went
#             out with and its origin's UNRELIABLE sequence, its name against copies; a
#             service with bit 32 set (SITE_SERVICE_EPOCH) has the epoch of its site's
#             streams after it (varint): a restarted site's sequence 1 is not the old one's
#   EPOCH     the epoch of that site's streams (varint), then a flag (varint) if not 0:
#             EPOCH_FROM_HELLO (0, written as nothing) our representative had it from that
#             site's own HELLO (inside our site only: our ring), EPOCH_AS_HEARD from a
#             third site: sent on a link as it starts, for every site whose epoch we know,
#             and passed on where a site learns one it did not know
# What a daemon of before the epochs wrote (a FRONTIER or UNRELIABLE without one, an EPOCH
# without a flag) still reads: an epoch not said is not known, never a difference
# A view body: count (u16) and that many lost site ids (u16); count (u16) and that many
# (site u16, the highest site_seq of it held u64, its last ARU known u64, its frontier u64);
# then, in a PROPOSE made while a merge is installed or just after, may come count (u16) and
# that many (site u16, base u64): the site's last message at or below the merge's limit,
# where the proposer knows it (the sites of its old view; a joined site whose first message
# of the merged view it has): a site of the other view that dies before the merge is
# installed has its stream cut in a numbering the survivors of our view never saw
SITE_MSG, SITE_FRONTIER, SITE_ARU, SITE_SUSPECT, SITE_PROPOSE, SITE_JOIN, SITE_MERGE = 1, 2, 3, 4, 5, 6, 7
SITE_READY, SITE_GIVEUP = 8, 9
#: the epoch of another site's streams (in site_seq; the flag in service: EPOCH_FROM_HELLO,
#: EPOCH_AS_HEARD), from that site's HELLO to our representative, or passed on by a third site
SITE_EPOCH = 10
#: an EPOCH record's flag: first hand (the site's own HELLO to our representative: only ever
#: into our own ring), or heard from a third site (never overrides an epoch on record)
EPOCH_FROM_HELLO, EPOCH_AS_HEARD = 0, 1
#: no epoch is above this: a fork's is 48 bits of a hash, a ring's the highest incarnation of
#: its daemons (milliseconds since 1970: below it until the year 10889). A higher one is a
#: forger's (without a key): taken, it would refuse the site's real HELLOs for good
EPOCH_MAX = 2 ** 48
#: an UNRELIABLE record's service word with this bit: its site's epoch follows (varint)
SITE_SERVICE_EPOCH = 1 << 32


def _sites_message_name(msg: "DaemonMessage") -> Tuple[int, int]:
    """The epoch a SITES message of our ring was made under and the rings that had kept it
    then (SiteGateway.kept_rings): its first group name and its second (none: 0), in decimal
    (SiteGateway._flush_ring); (0, 0) if it names none (an older daemon's) or not that."""
    if not 1 <= len(msg.groups) <= 2:
        return 0, 0
    numbers = []
    for name in msg.groups:
        if not name.isdigit() or not name.isascii() or len(name) > 15 or int(name) > EPOCH_MAX:
            return 0, 0
        numbers.append(int(name))
    epoch, rings = numbers[0], (numbers[1:] or [0])[0]
    return (epoch, rings) if epoch else (0, 0)


def _sites_message_epoch(msg: "DaemonMessage") -> int:
    """The epoch a SITES message of our ring was made under (0: none, see _sites_message_name)."""
    return _sites_message_name(msg)[0]


SITE_LINKS = 11
SITE_UNRELIABLE = 12
SITE_RECORD_KINDS = {SITE_MSG: "MSG", SITE_FRONTIER: "FRONTIER", SITE_ARU: "ARU",
                     SITE_SUSPECT: "SUSPECT", SITE_PROPOSE: "PROPOSE", SITE_JOIN: "JOIN",
                     SITE_MERGE: "MERGE", SITE_READY: "READY", SITE_GIVEUP: "GIVEUP",
                     SITE_EPOCH: "EPOCH", SITE_LINKS: "LINKS",
                     SITE_UNRELIABLE: "UNRELIABLE"}
#: the records that carry a message (site_seq, service, origin, body)
SITE_MESSAGE_KINDS = (SITE_MSG, SITE_UNRELIABLE)
#: the records that carry a view seq and a view body
SITE_VIEW_KINDS = (SITE_SUSPECT, SITE_PROPOSE, SITE_JOIN, SITE_MERGE, SITE_READY, SITE_GIVEUP)
#: the records that carry a number and a view body (LINKS: a version and the links down)
SITE_BODY_KINDS = SITE_VIEW_KINDS + (SITE_LINKS,)
#: the control records flooded to every site (a copy that comes twice is dropped)
SITE_FLOODED_KINDS = (SITE_PROPOSE, SITE_MERGE, SITE_READY, SITE_GIVEUP, SITE_LINKS)
#: the longest record: the longest message, its header and the origin's name
MAX_SITE_RECORD_BYTES = MAX_MESSAGE_BODY_BYTES + 1 + 3 * 10 + 1 + MAX_NAME_BYTES
#: a record's length prefix: 3 varint bytes hold up to 2 MB, above MAX_SITE_RECORD_BYTES
SITE_LENGTH_VARINT_MAX = 3
#: first byte of a lean message body: type (4 raw bytes), hint (4 raw bytes), sender (u8
#: length + bytes), count of groups (u8), each group (u8 length + bytes), the data. It stands
#: for the RING_WIRE_DATA body with the same header words and the names NUL-padded to 32 bytes
RING_WIRE_LEAN = 0x81


def encode_varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def read_varint(data, pos: int, limit: int = 8) -> Tuple[int, int]:
    """(value, position after it) from data[pos:], at most `limit` bytes long; a varint cut
    short is IndexError (the caller may wait for more), one too long, above MAX_WIRE_COUNTER
    or not in its shortest form a RingWireError."""
    value = shift = 0
    for i in range(limit):
        byte = data[pos + i]
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            if byte == 0 and i:
                raise RingWireError("a varint not in its shortest form")
            if value > MAX_WIRE_COUNTER:
                raise RingWireError("a varint beyond %d" % MAX_WIRE_COUNTER)
            return value, pos + i + 1
        shift += 7
    raise RingWireError("a varint longer than %d bytes" % limit)


def _byte_order_of(type_raw: bytes) -> str:
    """The struct byte order of a client header whose type field is these 4 bytes: its
    writer's (little-endian writers set ENDIAN_TYPE in it, big-endian ones clear it)."""
    return "<" if (_LE_U32.unpack(type_raw)[0] & ENDIAN_TYPE) == ENDIAN_TYPE else ">"


_LE_U32 = struct.Struct("<I")
_LEAN_NAMES_CACHE: Dict[bytes, bytes] = {}


def lean_message_body(body: bytes) -> bytes:
    """A RING_WIRE_DATA body as RING_WIRE_LEAN (81 bytes less for one group), or the body as it
    is when full_message_body would not give these very bytes back (garbage after a name's NUL,
    a header that does not add up, another kind of body)."""
    if len(body) < 1 + HEADER_LEN or body[0] != RING_WIRE_DATA:
        return body
    order = _byte_order_of(body[1:5])
    num_groups, = struct.unpack_from(order + "i", body, 37)
    data_len, = struct.unpack_from(order + "i", body, 45)
    groups_end = 1 + HEADER_LEN + MAX_GROUP_NAME * num_groups
    if not 0 <= num_groups <= MAX_GROUPS or groups_end + data_len != len(body):
        return body
    names = bytes(body[5:37]) + bytes(body[1 + HEADER_LEN:groups_end])
    head = _LEAN_NAMES_CACHE.get(names)
    if head is None:
        parts = []
        for i in range(0, len(names), MAX_GROUP_NAME):
            field = names[i:i + MAX_GROUP_NAME]
            name = field.split(b"\0", 1)[0]
            if name.ljust(MAX_GROUP_NAME, b"\0") != field:
                return body  # no NUL at all, or bytes after it: only the padded form says that
            parts.append(_U8.pack(len(name)) + name)
        head = parts[0] + _U8.pack(num_groups) + b"".join(parts[1:])
        if len(_LEAN_NAMES_CACHE) >= _NAME_CACHE_MAX:
            _LEAN_NAMES_CACHE.clear()
        _LEAN_NAMES_CACHE[names] = head
    return b"".join((b"\x81", body[1:5], body[41:45], head, body[groups_end:]))


def full_message_body(lean: bytes) -> bytes:
    """RING_WIRE_LEAN -> the RING_WIRE_DATA body it stands for; a RingWireError if it is not
    one (a name longer than 31 bytes or holding a NUL, too many groups, cut short)."""
    r = _RingReader(lean)
    if r.u8() != RING_WIRE_LEAN:
        raise RingWireError("not a lean message body")
    type_raw, hint_raw = r.take(4), r.take(4)
    names = []
    count = 1
    i = 0
    while i < count:
        name = r.take(r.u8())
        if len(name) >= MAX_GROUP_NAME or b"\0" in name:
            raise RingWireError("a lean message with a name of %d bytes or a NUL in it" % len(name))
        names.append(name.ljust(MAX_GROUP_NAME, b"\0"))
        if i == 0:
            count = 1 + r.u8()
            if count - 1 > MAX_GROUPS:
                raise RingWireError("a lean message to %d groups" % (count - 1))
        i += 1
    data = r.take(r.size - r.pos)
    order = _byte_order_of(type_raw)
    return b"".join((b"\x80", type_raw, names[0], struct.pack(order + "i", count - 1), hint_raw,
                     struct.pack(order + "i", len(data)), b"".join(names[1:]), data))


def _site_record_head(r: "SiteRecord") -> bytes:
    return bytes([r.kind]) + encode_varint(r.site) + encode_varint(r.lts)


@dataclass(frozen=True)
class SiteRecord:
    """One record of a site's stream as it crosses to the other sites (see above)."""
    kind: int  #: one of SITE_RECORD_KINDS
    site: int  #: the site whose stream it belongs to (UNRELIABLE: the site it comes from)
    lts: int
    site_seq: int = 0  #: MSG: its place in its site's order; view records, ARU: a view seq;
    #: FRONTIER: its site's last message before it; LINKS: a version
    service: int = 0  #: MSG, UNRELIABLE: the service bits (SAFE waits for the global ARU)
    origin: str = ""  #: MSG, UNRELIABLE: the daemon its client is connected to
    body: bytes = b""  #: MSG, UNRELIABLE: encode_message_body of the message
    #: FRONTIER, UNRELIABLE: the epoch of its site's streams (0: not said)
    epoch: int = 0


def encode_site_record(r: SiteRecord) -> bytes:
    parts = [_site_record_head(r)]
    if r.kind in SITE_MESSAGE_KINDS:
        epoch = r.epoch if r.kind == SITE_UNRELIABLE else 0
        parts += [encode_varint(r.site_seq),
                  encode_varint((r.service & 0xFFFFFFFF) | (SITE_SERVICE_EPOCH if epoch else 0))]
        if epoch:
            parts.append(encode_varint(epoch))
        parts += [_ring_name_bytes(r.origin), lean_message_body(r.body)]
    elif r.kind in SITE_BODY_KINDS:
        parts += [encode_varint(r.site_seq), r.body]
    elif r.kind == SITE_FRONTIER and r.epoch:
        parts += [encode_varint(r.site_seq), encode_varint(r.epoch)]
    elif r.kind in (SITE_ARU, SITE_EPOCH) or (r.kind == SITE_FRONTIER and r.site_seq):
        parts.append(encode_varint(r.site_seq))
        if r.kind == SITE_EPOCH and r.service:
            parts.append(encode_varint(r.service))
    raw = b"".join(parts)
    return encode_varint(len(raw)) + raw


def encode_site_records(records: Iterable[SiteRecord]) -> bytes:
    return b"".join(encode_site_record(r) for r in records)


def _decode_site_record(raw: bytes) -> SiteRecord:
    try:
        kind = raw[0]
        site, pos = read_varint(raw, 1)
        lts, pos = read_varint(raw, pos)
        if kind not in SITE_RECORD_KINDS or site > MAX_SITES:
            raise RingWireError("bad site record (kind %d, site %d)" % (kind, site))
        if kind == SITE_FRONTIER and pos == len(raw):
            return SiteRecord(kind, site, lts)
        seq, pos = read_varint(raw, pos)
        if kind == SITE_FRONTIER:
            epoch = -1  # (not written)
            if pos != len(raw):
                epoch, pos = read_varint(raw, pos)
            # (a site_seq of 0 is written as nothing, unless an epoch follows; an epoch of 0
            # is never written)
            if pos != len(raw) or epoch == 0 or (seq == 0 and epoch < 0):
                raise RingWireError("%d unexpected bytes after a FRONTIER record" % (len(raw) - pos + 1))
            return SiteRecord(kind, site, lts, seq, epoch=max(epoch, 0))
        if kind in SITE_BODY_KINDS:
            body = raw[pos:]
            decode_site_view_body(body)  # refused here if it does not decode
            return SiteRecord(kind, site, lts, seq, body=body)
        flag = 0
        if kind == SITE_EPOCH and pos != len(raw):
            flag, pos = read_varint(raw, pos)  # (EPOCH_FROM_HELLO is written as nothing)
            if flag != EPOCH_AS_HEARD:
                raise RingWireError("an EPOCH record with flag %d" % flag)
        if kind in (SITE_ARU, SITE_EPOCH):
            if pos != len(raw):
                raise RingWireError("%d unexpected bytes after an %s record" % (
                    len(raw) - pos, SITE_RECORD_KINDS[kind]))
            return SiteRecord(kind, site, lts, seq, flag)
        service, pos = read_varint(raw, pos, 5)
        epoch = 0
        if kind == SITE_UNRELIABLE and service & SITE_SERVICE_EPOCH:
            epoch, pos = read_varint(raw, pos)
            service &= ~SITE_SERVICE_EPOCH
            if epoch == 0:
                raise RingWireError("an UNRELIABLE site record with epoch 0 written")
    except IndexError:
        raise RingWireError("a site record cut short")
    r = _RingReader(raw)
    r.pos = pos
    name = r.take(r.u8())
    if not name or service > 0xFFFFFFFF:
        raise RingWireError("bad site message record")
    if kind == SITE_MSG and seq == 0:
        raise RingWireError("bad site message record (site_seq 0)")
    if kind == SITE_UNRELIABLE and (seq == 0 or not _is_unreliable(service)):
        # (its seq and lts: the origin's UNRELIABLE sequence and the lts it went out with, the
        # message's name for the duplicates a tree change brings; never a place in an order)
        raise RingWireError("an UNRELIABLE site record without its origin's sequence (site_seq %d) "
                            "or of service 0x%x" % (seq, service))
    try:
        origin = name.decode("utf-8")
    except UnicodeDecodeError:
        raise RingWireError("site record: origin name is not UTF-8")
    body = r.take(r.size - r.pos)
    if body[:1] == b"\x81":
        body = full_message_body(body)
    return SiteRecord(kind, site, lts, seq, service, origin, body, epoch)


def encode_site_view_body(lost: Iterable[int], entries: Dict[int, Tuple[int, int, int]],
                          bases: Optional[Dict[int, int]] = None) -> bytes:
    """SUSPECT / PROPOSE: the sites gone, and per site (highest site_seq held, last ARU,
    frontier); a PROPOSE made around a merge may add `bases` (see the record kinds)."""
    lost = sorted(lost)
    parts = [_U16.pack(len(lost))] + [_U16.pack(x) for x in lost] + [_U16.pack(len(entries))]
    parts += [_U16.pack(site) + _U64.pack(seq) + _U64.pack(aru) + _U64.pack(frontier)
              for site, (seq, aru, frontier) in sorted(entries.items())]
    if bases:
        parts.append(_U16.pack(len(bases)))
        parts += [_U16.pack(site) + _U64.pack(seq) for site, seq in sorted(bases.items())]
    return b"".join(parts)


def _decode_view_body(body: bytes) -> Tuple[frozenset, Dict[int, Tuple[int, int, int]], Dict[int, int]]:
    r = _RingReader(body)
    count = r.u16()
    if count > MAX_SITES:
        raise RingWireError("a view naming %d lost sites" % count)
    lost = frozenset(r.u16() for _ in range(count))
    count = r.u16()
    if count > MAX_SITES:
        raise RingWireError("a view naming %d sites" % count)
    entries = {}
    for _ in range(count):
        site = r.u16()
        entries[site] = (r.counter(), r.counter(), r.counter())
    bases = {}
    if r.pos < r.size:
        count = r.u16()
        if count > MAX_SITES:
            raise RingWireError("a view naming %d merge bases" % count)
        for _ in range(count):
            site = r.u16()
            bases[site] = r.counter()
    r.end()
    return lost, entries, bases


def decode_site_view_body(body: bytes) -> Tuple[frozenset, Dict[int, Tuple[int, int, int]]]:
    return _decode_view_body(body)[:2]


def decode_site_view_bases(body: bytes) -> Dict[int, int]:
    """A PROPOSE's merge bases (empty if it has none)."""
    return _decode_view_body(body)[2]


class SiteRecordReader:
    """Reads site records back from a byte stream given in pieces, in order (the payloads of
    one HOP link, or one SITES message at once). A length beyond MAX_SITE_RECORD_BYTES or a
    record that does not decode is a RingWireError: the stream cannot be trusted after it."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> List[SiteRecord]:
        self._buf += data
        out = []
        pos = 0
        buf = self._buf
        end = len(buf)
        while pos < end:
            try:
                size, start = read_varint(buf, pos, SITE_LENGTH_VARINT_MAX)
            except IndexError:
                break  # the length itself is cut: wait for the rest
            if size > MAX_SITE_RECORD_BYTES or size < 3:
                raise RingWireError("a site record of %d bytes" % size)
            if end - start < size:
                break
            out.append(_decode_site_record(bytes(buf[start:start + size])))
            pos = start + size
        del buf[:pos]
        return out

    def pending_bytes(self) -> int:
        return len(self._buf)


def decode_site_records(data: bytes) -> List[SiteRecord]:
    """Every record of one SITES message (a record cut short is an error)."""
    reader = SiteRecordReader()
    records = reader.feed(data)
    if reader.pending_bytes():
        raise RingWireError("a site record cut short")
    return records


# ---- Sites: HELLO, how a HOP link between two representatives starts ----------------------------
# A new representative sends it to every daemon of each neighbour site until that site's
# representative answers with its own (request flag clear); each side then starts a fresh
# HopLink to the other (its sender pid: name and incarnation) and sends the other site every
# record it lacks, by the positions the HELLO carries. After the header: sender pid, site
# (u16), request (u8), count (u16), that many (site u16, the highest site_seq of that site
# that this site's ring holds, u64); then the sender's view of several sites: its seq (u64),
# count (u16) and that many site ids (u16); then the session (u32) of the sender's end of the
# link. A request whose session is not the one our link has from the peer means the peer's
# end started over: ours starts over too. A HELLO between sites of two views (a partition
# that healed) starts their merge.

@dataclass
class SiteHello:
    sender: Pid
    site: int
    request: bool
    positions: Dict[int, int]
    view_seq: int = 0
    view_sites: Tuple[int, ...] = ()
    #: the session of the sender's end of the link (a request: the one its next end takes)
    session: int = 0
    #: the incarnation of the sender's site's streams (SiteGateway.epoch; 0: not known)
    epoch: int = 0


def encode_site_hello(h: SiteHello, seal: Optional[RingSeal] = None) -> bytes:
    seal = seal or OPEN_SEAL
    parts = [seal.header(PT_SITE_HELLO), _pid_bytes(h.sender), _U16.pack(h.site),
             _U8.pack(1 if h.request else 0), _U16.pack(len(h.positions))]
    parts += [_U16.pack(site) + _U64.pack(seq) for site, seq in sorted(h.positions.items())]
    parts += [_U64.pack(h.view_seq), _U16.pack(len(h.view_sites))]
    parts += [_U16.pack(site) for site in h.view_sites]
    parts += [_U32.pack(h.session), _U64.pack(h.epoch)]
    return seal.seal(b"".join(parts))


def decode_site_hello(data: bytes, seal: Optional[RingSeal] = None) -> SiteHello:
    seal = seal or OPEN_SEAL
    ptype, body = seal.open(data)
    if ptype != PT_SITE_HELLO:
        raise RingWireError("not a site HELLO (type %d)" % ptype)
    r = _RingReader(body)
    r.pos = RING_HEADER_BYTES
    sender, site, request, count = r.pid(), r.u16(), r.u8(), r.u16()
    if count > MAX_SITES or site > MAX_SITES:
        raise RingWireError("a site HELLO naming %d sites" % count)
    positions = {}
    for _ in range(count):
        other = r.u16()
        positions[other] = r.counter()
    view_seq, count = r.counter(), r.u16()
    if count > MAX_SITES:
        raise RingWireError("a site HELLO naming %d sites in its view" % count)
    view_sites = tuple(r.u16() for _ in range(count))
    session, epoch = r.u32(), r.counter()
    r.end()
    if not seal.same_configuration(data):
        raise RingConfigurationError("a site HELLO of another configuration",
                                     (data[7], bytes(data[8:12]), bytes(data[12:16])), sender)
    return SiteHello(sender, site, bool(request), positions, view_seq, view_sites, session, epoch)


#: a HOP link end's session names the site at the other end: session = count * HOP_SESSION_SITES
#: + that site. A representative's links to two sites would otherwise both start at session 1,
#: and a packet of one (captured on the LAN) would pass the other's session check, key or no
#: key: its seq taken, the real packet of that seq dropped as a duplicate, the stream broken
HOP_SESSION_SITES = MAX_SITES + 1


def hop_session(count: int, peer_site: int) -> int:
    """The session of the `count`th end of our link to `peer_site` (as our packets carry it)."""
    return count * HOP_SESSION_SITES + peer_site


def hop_session_site(session: int) -> int:
    """The site a HOP session was made for (the receiver of its packets and HELLOs)."""
    return session % HOP_SESSION_SITES


def hop_packet_type(data: bytes) -> Optional[int]:
    """The packet type of a datagram on the HOP port (None: not ours at all), before it is
    opened: a HELLO goes to the gateway, DATA / ACK / NACK to the link."""
    if len(data) < RING_HEADER_BYTES or data[:4] != RING_MAGIC:
        return None
    return data[5]


# ---- Ring: daemon messages as the ring carries them ---------------------------------------
# Data goes in the clients' own format (RING_WIRE_DATA, then the 48-byte header, the groups and
# the data, in the origin daemon's byte order): encoded once where it enters, and every
# daemon hands those same bytes to its clients. Group operations, STATE and data whose names
# do not fit the client format (a simulator's) go field by field (_RING_MSG_HEAD).
_RING_MSG_HEAD = struct.Struct(">BIIH")  # kind, service bits, hint (raw 32 bits), groups count
RING_WIRE_DATA = 0x80  # first byte of a body that is a client-format DATA message


def _ring_name_bytes(name: str) -> bytes:
    raw = name.encode("latin-1", "replace")[:255]
    return struct.pack(">B", len(raw)) + raw


def encode_message_body(m: DaemonMessage) -> bytes:
    """A DaemonMessage as bytes for the ring: DATA as the client-format bytes (m.wire()), the
    rest kind, service, hint, sender, groups, reason, data."""
    if m.kind is DATA and (m.raw is not None or _fits_client_format(m)):
        return b"\x80" + m.wire()
    parts = [_RING_MSG_HEAD.pack(RING_KINDS[m.kind], m.service_type & 0xFFFFFFFF,
                                 m.hint & 0xFFFFFFFF, len(m.groups))]
    for name in [m.sender] + list(m.groups) + [m.reason or ""]:
        parts.append(_ring_name_bytes(name))
    parts.append(m.data)
    return b"".join(parts)


_GROUP_OP_KINDS = frozenset(RING_KINDS[k] for k in (JOIN, LEAVE, KILL))


def _changes_groups(body: bytes) -> bool:
    """A ring body that is a group operation (JOIN, LEAVE, KILL): it changes the group table."""
    return bool(body) and body[0] != RING_WIRE_DATA and body[0] in _GROUP_OP_KINDS


def _fits_client_format(m: DaemonMessage) -> bool:
    """Every name 1..31 latin-1 characters without NUL, as a client's always are."""
    for name in (m.sender, *m.groups):
        if not 0 < len(name) < MAX_GROUP_NAME or "\0" in name:
            return False
        try:
            name.encode("latin-1")
        except UnicodeEncodeError:
            return False
    return len(m.groups) <= MAX_GROUPS and not m.reason


#: the hot path of _decode_wire_data: the first 81 bytes of a one-group message from a daemon of
#: our byte order (marker, header with the data's length, the group) -> (its size, service,
#: sender, group, hint). A flood repeats them message after message (bounded: forged ones can
#: only make it start over)
_WIRE_HEADS: Dict[bytes, Tuple[int, int, str, str, int]] = {}
_WIRE_HEADS_MAX = 1024
_WIRE_HEAD_BYTES = 1 + HEADER_LEN + MAX_GROUP_NAME


def _decode_wire_data(body: bytes, origin: str) -> DaemonMessage:
    """A RING_WIRE_DATA body: the message keeps these bytes (less the first) as its raw, for
    its clients; from a daemon of the other byte order it is re-encoded in ours."""
    size = len(body)
    known = _WIRE_HEADS.get(body[:_WIRE_HEAD_BYTES])
    if known is not None and known[0] == size:
        return DaemonMessage(DATA, origin, known[2], known[1], [known[3]], known[4], raw=body[1:])
    if size < 1 + HEADER_LEN:
        raise RingWireError("bad message header")
    type_raw, sender, num_groups, hint, data_len = HEADER.unpack_from(body, 1)
    flipped = (type_raw & ENDIAN_TYPE) != MY_ENDIAN_MARKER
    if flipped:  # the hint stays as read: raw bits, as the client sent them (ClientSession)
        type_raw, sender, num_groups, _, data_len = HEADER_SWAPPED.unpack_from(body, 1)
    service = type_raw & ~ENDIAN_TYPE & 0xFFFFFFFF
    groups_end = 1 + HEADER_LEN + MAX_GROUP_NAME * num_groups
    if not 0 <= num_groups <= MAX_GROUPS or service not in DATA_TYPES or data_len < 0 \
            or groups_end + data_len != size:
        raise RingWireError("bad client-format message")
    if num_groups == 1:
        groups = [unpad_name(body[1 + HEADER_LEN:groups_end])]
    else:
        groups = [unpad_name(body[i:i + MAX_GROUP_NAME]) for i in range(1 + HEADER_LEN, groups_end, MAX_GROUP_NAME)]
    if flipped:
        return DaemonMessage(DATA, origin, unpad_name(sender), service, groups, hint,
                             data=body[groups_end:])
    sender_name = unpad_name(sender)
    if num_groups == 1:
        if len(_WIRE_HEADS) >= _WIRE_HEADS_MAX:
            _WIRE_HEADS.clear()
        _WIRE_HEADS[body[:_WIRE_HEAD_BYTES]] = (size, service, sender_name, groups[0], hint)
    return DaemonMessage(DATA, origin, sender_name, service, groups, hint, raw=body[1:])


def decode_message_body(body: bytes, origin: str) -> DaemonMessage:
    size = len(body)
    known = _WIRE_HEADS.get(body[:_WIRE_HEAD_BYTES])  # _decode_wire_data's hot path, a call less
    if known is not None and known[0] == size:
        return DaemonMessage(DATA, origin, known[2], known[1], [known[3]], known[4], raw=body[1:])
    if size and body[0] == RING_WIRE_DATA:
        return _decode_wire_data(body, origin)
    if size < _RING_MSG_HEAD.size:
        raise RingWireError("bad message header")
    kind, service, hint, ngroups = _RING_MSG_HEAD.unpack_from(body, 0)
    if ngroups > MAX_GROUPS or kind not in RING_KIND_NAMES:
        raise RingWireError("bad message header")
    if ngroups == 0 and RING_KIND_NAMES[kind] in (JOIN, LEAVE, STATE):
        # the group core reads groups[0] of these: one such message, delivered at every
        # daemon in agreed order, would stop them all (IndexError)
        raise RingWireError("a %s message names no group" % RING_KIND_NAMES[kind])
    pos = _RING_MSG_HEAD.size
    names = []
    for _ in range(ngroups + 2):
        if pos >= size:
            raise RingWireError("truncated message")
        n = body[pos]
        end = pos + 1 + n
        if end > size:
            raise RingWireError("truncated message")
        names.append(body[pos + 1:end].decode("latin-1"))
        pos = end
    return DaemonMessage(RING_KIND_NAMES[kind], origin, names[0], service, names[1:-1], hint,
                         data=body[pos:], reason=names[-1])


# =============================================================================================
# Protocol core
# =============================================================================================
# ---- Daemon messages: what travels through the orderer (thesis 7.3.3) -----------------------
# (their kinds, DATA .. STATE, are defined with the ring's packet types in Constants)


class DaemonMessage:
    """One client request as the daemons order it: data, or a group operation (join/leave/kill).

    Group operations travel through the orderer like data (Spread's GROUPS messages) so that
    every daemon sees the same sequence and computes the same membership.  `raw` is the client
    message re-stamped in our byte order; local delivery forwards it unchanged.
    """

    __slots__ = ("kind", "origin", "sender", "service_type", "groups", "hint", "raw", "_data",
                 "site_id", "seq", "lts", "reason", "again")

    def __init__(self, kind: str, origin: str, sender: str, service_type: int = 0,
                 groups: Sequence[str] = (), hint: int = MY_ENDIAN_MARKER, data: Optional[bytes] = None,
                 raw: Optional[bytes] = None, reason: str = ""):
        self.kind = kind  #: DATA / JOIN / LEAVE / KILL
        self.origin = origin  #: name of the daemon the sender is connected to
        self.sender = sender  #: the sender's private group "#name#daemon"
        self.service_type = service_type  #: service bits incl. SELF_DISCARD (no endian marker)
        self.groups = groups  #: destination groups (the group joined/left for JOIN/LEAVE)
        self.hint = hint  #: raw int32 as the client sent it, read in our order (marker kept)
        self.raw = raw
        self._data = data
        self.site_id = 0  #: ordering fields, assigned by the orderer
        self.seq = 0
        self.lts = 0
        self.reason = reason  #: for KILL: why the session ended
        #: a group operation this daemon delivered before, in its site's fork's view, handed
        #: again to the table it took from the kept side (SitesGateway._merge_body): its
        #: second delivery in the daemon's history, the kept incarnation's first
        self.again = False

    @property
    def data(self) -> bytes:
        if self._data is None:
            if self.raw is None:
                return b""
            self._data = self.raw[HEADER_LEN + MAX_GROUP_NAME * len(self.groups):]
        return self._data

    def wire(self) -> bytes:
        """The client-format bytes to deliver (built once when the message came from elsewhere)."""
        if self.raw is None:
            self.raw = encode_message(self.service_type, self.sender, self.groups, self.hint, self.data)
        return self.raw

    def __repr__(self) -> str:
        return "DaemonMessage(%s from %s service=0x%x groups=%r len=%d)" % (
            self.kind, self.sender, self.service_type, list(self.groups), len(self.data))


class Multicast(DaemonMessage):
    """Session event: a client multicast (it IS the daemon message, to avoid a copy per message)."""

    __slots__ = ()


class Join(DaemonMessage):
    __slots__ = ()


class Leave(DaemonMessage):
    __slots__ = ()


class Kill(DaemonMessage):
    __slots__ = ()


# ---- Session events other than requests ------------------------------------------------------

@dataclass
class Accepted:
    private_group: str


@dataclass
class Rejected:
    code: int
    reason: str


@dataclass
class ProtocolViolation:
    reason: str


class Outbox:
    """A session's output queue: whole messages, counted, written in coalesced chunks."""

    __slots__ = ("chunks", "ends", "appended_bytes", "written_bytes")

    def __init__(self):
        self.chunks: List[bytes] = []
        self.ends = collections.deque()  # cumulative end offset of every queued message
        self.appended_bytes = 0
        self.written_bytes = 0

    def append(self, data: bytes) -> None:
        self.chunks.append(data)
        self.appended_bytes += len(data)
        self.ends.append(self.appended_bytes)

    @property
    def messages(self) -> int:
        """Messages not yet completely handed to the connection (undelivered)."""
        return len(self.ends)

    @property
    def queued_bytes(self) -> int:
        return self.appended_bytes - self.written_bytes

    def peek(self, max_bytes: int = WRITE_CHUNK) -> bytes:
        """The next bytes to write: several queued messages joined into one chunk."""
        chunks = self.chunks
        if len(chunks) > 1:
            size = 0
            count = 0
            for chunk in chunks:
                size += len(chunk)
                count += 1
                if size >= max_bytes:
                    break
            if count > 1:
                chunks[:count] = [b"".join(chunks[:count])]
        return chunks[0] if chunks else b""

    def consumed(self, count: int) -> None:
        """`count` bytes of peek() were written."""
        self.written_bytes += count
        first = self.chunks[0]
        if count >= len(first):
            del self.chunks[0]
        else:
            self.chunks[0] = first[count:]
        ends = self.ends
        written = self.written_bytes
        while ends and ends[0] <= written:
            ends.popleft()

    def clear(self) -> None:
        self.chunks = []
        self.ends.clear()
        self.written_bytes = self.appended_bytes


# ---- ClientSession: one connection ------------------------------------------------------------

AWAIT_CONNECT = "AWAIT_CONNECT"
AWAIT_AUTH = "AWAIT_AUTH"
OPEN = "OPEN"
CLOSED = "CLOSED"


class ClientSession:
    """One client connection: the handshake, then a stream of 48-byte-header messages.

    receive_data(bytes) -> events: Accepted, Rejected, ProtocolViolation, Multicast, Join,
    Leave, Kill.  Replies (auth list, accept, reject byte) go into `self.out`; the daemon puts
    deliveries there too.  A session that breaks the protocol is CLOSED; nothing else is harmed.
    """

    def __init__(self, conn_id: int, daemon_name: str, reserve_name, rng: random.Random,
                 on_transition=None):
        self.conn_id = conn_id
        self.daemon_name = daemon_name
        self._reserve_name = reserve_name  # callable(name) -> bool; False when the name is taken
        self._on_transition = on_transition  # callable(session, old, new, reason): log and count
        self._rng = rng
        self.state = AWAIT_CONNECT
        self.close_reason = ""
        self._buf = bytearray()
        self.out = Outbox()
        self.lib_version = 0
        self.group_membership = False
        self.priority = 0
        self.private_name = ""
        self.private_group = ""
        self._pg_padded = b""
        self.groups = set()  # names of the groups this session is a member of
        self.msgs_in = 0
        self.msgs_out = 0
        self.opened_at = None

    # -- states: AWAIT_CONNECT -> AWAIT_AUTH -> OPEN -> CLOSED (or CLOSED from any) ----------------
    def _change(self, new: str, reason: str) -> None:
        old, self.state = self.state, new
        if self._on_transition is not None:
            self._on_transition(self, old, new, reason)

    def _enter_await_auth(self, reason: str) -> None:
        self._change(AWAIT_AUTH, reason)

    def _enter_open(self, reason: str) -> None:
        self._change(OPEN, reason)

    def _enter_closed(self, reason: str) -> None:
        if self.state == CLOSED:
            return
        self.close_reason = reason
        self._buf = bytearray()
        self._change(CLOSED, reason)

    def describe(self) -> str:
        return "session %s" % self.private_group if self.private_group else "connection %d" % self.conn_id

    # -- input -------------------------------------------------------------------------------
    def receive_data(self, data: bytes) -> list:
        """Bytes from the connection, any split; returns the events they complete."""
        events: list = []
        if self.state == CLOSED or not data:
            return events
        if self.state == OPEN and not self._buf:
            self._parse_messages(data, events)
            return events
        self._buf += data
        while self.state in (AWAIT_CONNECT, AWAIT_AUTH):
            before = self.state
            if before == AWAIT_CONNECT:
                self._parse_connect(events)
            else:
                self._parse_auth(events)
            if self.state == before:
                return events  # need more bytes
        if self.state == OPEN and self._buf:
            buf, self._buf = self._buf, bytearray()
            self._parse_messages(bytes(buf), events)
        return events

    def _reject(self, code: int, reason: str, events: list) -> None:
        self.out.append(reject_byte(code))
        events.append(Rejected(code, reason))
        self._enter_closed("rejected: %s (%s)" % (ERROR_NAMES.get(code, code), reason))

    def _parse_connect(self, events: list) -> None:
        buf = self._buf
        if len(buf) < 2:
            return
        major, minor = buf[0], buf[1]
        version = major * 10000 + minor * 100
        head_len = 5 if version > LIB_VERSION_SENDS_PATCH else 4
        if len(buf) < head_len:
            return
        patch = buf[2] if head_len == 5 else 0
        flags = buf[head_len - 2]
        name_len = buf[head_len - 1]
        if version < LIB_VERSION_MIN:
            self._reject(REJECT_VERSION, "client library %d.%d is older than 3.01" % (major, minor), events)
            return
        if name_len > MAX_PRIVATE_NAME:
            self._reject(REJECT_ILLEGAL_NAME, "private name of %d bytes (at most %d)" % (name_len, MAX_PRIVATE_NAME), events)
            return
        if len(buf) < head_len + name_len:
            return
        raw_name = bytes(buf[head_len:head_len + name_len])
        del buf[:head_len + name_len]
        self.lib_version = version + patch
        self.group_membership = bool(flags % 2)
        self.priority = flags // 16
        if any(ch < PRIVATE_NAME_MIN_CHAR or ch > NAME_MAX_CHAR for ch in raw_name):
            self._reject(REJECT_ILLEGAL_NAME, "private name %r has a character outside '$'..'~'" % raw_name, events)
            return
        if raw_name:
            name = raw_name.decode("latin-1")
            if not self._reserve_name(name):
                self._reject(REJECT_NOT_UNIQUE, "private name %r is in use on this daemon" % name, events)
                return
        else:  # an empty name: the daemon invents one, and an invented name must not be refused
            for _ in range(1000):
                name = self._invent_name()
                if self._reserve_name(name):
                    break
            else:
                self._reject(REJECT_NOT_UNIQUE, "could not invent a free private name", events)
                return
        self.private_name = name
        self.private_group = "#%s#%s" % (name, self.daemon_name)
        self._pg_padded = pad_name(self.private_group)
        connect = "connect message from library %d.%d.%d, name %r, membership=%d, priority=%d" % (
            major, minor, patch, name, self.group_membership, self.priority)
        if self.lib_version >= LIB_VERSION_AUTH:
            self.out.append(encode_auth_list())
            self._enter_await_auth(connect + "; offered authentication: " + " ".join(AUTH_METHODS_ALLOWED))
        else:  # libs older than 3.16 have no authentication exchange
            self._accept(events, connect + "; no authentication before library 3.16")

    def _invent_name(self) -> str:
        """Like the real daemon's r<rand>-<fd> for an empty private name (at most 10 chars)."""
        for _ in range(100):
            name = "r%d-%d" % (self._rng.randrange(10000), self.conn_id % 1000)
            if len(name) <= MAX_PRIVATE_NAME:
                return name
        return "r%d" % self._rng.randrange(10 ** 8)

    def _parse_auth(self, events: list) -> None:
        if len(self._buf) < AUTH_BLOCK_LEN:
            return
        block = bytes(self._buf[:AUTH_BLOCK_LEN])
        del self._buf[:AUTH_BLOCK_LEN]
        methods = [unpad_name(block[i:i + MAX_AUTH_NAME]) for i in range(0, AUTH_BLOCK_LEN, MAX_AUTH_NAME)]
        named = [m for m in methods if m]
        if not named or any(m not in AUTH_METHODS_ALLOWED for m in named):
            self._reject(REJECT_AUTH, "authentication methods %r (allowed: %s)" % (named, " ".join(AUTH_METHODS_ALLOWED)), events)
            return
        self._accept(events, "%s authentication" % "+".join(named))

    def _accept(self, events: list, reason: str) -> None:
        self.out.append(encode_accept(self.private_group, self.lib_version))
        events.append(Accepted(self.private_group))
        self._enter_open("accepted as %s (%s)" % (self.private_group, reason))

    def _violation(self, reason: str, events: list) -> None:
        events.append(ProtocolViolation(reason))
        self._enter_closed("protocol violation: " + reason)

    def _parse_messages(self, buf: bytes, events: list) -> None:
        """The hot path: parse every complete message in buf; keep an incomplete tail."""
        off = 0
        size = len(buf)
        unpack = HEADER.unpack_from
        pg_padded = self._pg_padded
        pg_bare = pg_padded.rstrip(b"\0")
        origin = self.daemon_name
        sender_name = self.private_group
        append = events.append
        while size - off >= HEADER_LEN:
            type_raw, sender, num_groups, hint, data_len = unpack(buf, off)
            flipped = (type_raw & ENDIAN_TYPE) != MY_ENDIAN_MARKER
            if flipped:  # a peer of the other byte order: flip type, num_groups, data_len (not hint)
                type_raw, sender, num_groups, _, data_len = HEADER_SWAPPED.unpack_from(buf, off)
            bits = type_raw & 0x7FFFFF7F
            reason = None
            if sender != pg_padded and sender.split(b"\0", 1)[0] != pg_bare:
                reason = "sender %r is not this session's private group %r" % (unpad_name(sender), sender_name)
            elif not 0 <= num_groups <= MAX_GROUPS_PER_MESSAGE:
                reason = "num_groups %d outside 0..%d" % (num_groups, MAX_GROUPS_PER_MESSAGE)
            elif hint & HINT_FORBIDDEN:
                reason = "hint 0x%08x has bits outside 0x%08x" % (hint & 0xFFFFFFFF, HINT_ALLOWED)
            elif data_len < 0 or data_len + MAX_GROUP_NAME * num_groups > MAX_MESSAGE_LEN:
                reason = "message of %d data bytes to %d groups is over the limit data_len + 32*num_groups <= %d" % (
                    data_len, num_groups, MAX_MESSAGE_LEN)
            elif bits not in DATA_TYPES and bits not in CONTROL_TYPES:
                reason = "type 0x%08x is neither one service type nor one of JOIN/LEAVE/KILL" % type_raw
            if reason is not None:
                self._violation(reason, events)
                return
            groups_end = off + HEADER_LEN + MAX_GROUP_NAME * num_groups
            end = groups_end + data_len
            if end > size:
                break
            if num_groups == 1:
                groups = [unpad_name(buf[off + HEADER_LEN:groups_end])]
            else:
                groups = [unpad_name(buf[i:i + MAX_GROUP_NAME]) for i in range(off + HEADER_LEN, groups_end, MAX_GROUP_NAME)]
            if bits in DATA_TYPES:
                if flipped:
                    raw = HEADER.pack(bits | MY_ENDIAN_MARKER, sender, num_groups, hint, data_len) + buf[off + HEADER_LEN:end]
                else:
                    raw = buf[off:end]
                append(Multicast(DATA, origin, sender_name, bits, groups, hint, None, raw))
                self.msgs_in += 1
            elif bits == KILL_MESS:
                append(Kill(KILL, origin, sender_name, reason="client disconnect (KILL)"))
                self._enter_closed("client disconnect (KILL)")
                return
            else:
                if num_groups != 1 or not name_is_legal(groups[0]):
                    self._violation("%s needs exactly one legal group name, got %r" % (
                        "JOIN" if bits == JOIN_MESS else "LEAVE", groups), events)
                    return
                cls, kind = (Join, JOIN) if bits == JOIN_MESS else (Leave, LEAVE)
                append(cls(kind, origin, sender_name, 0, groups))
            off = end
        if off < size:
            self._buf = bytearray(buf[off:])


# ---- Orderer: the transport level (thesis 7.3.3) ---------------------------------------------

@dataclass
class Send:
    """A datagram to another daemon (ring orderers only)."""

    packet: bytes
    dest: object


@dataclass
class SendToAll:
    """One datagram for every daemon named in `dests` (never ourselves): the ring's data. The
    I/O loop sends it once by IP multicast on the segment where it has one, else once to each."""

    packet: bytes
    dests: Tuple[str, ...]


class Deliver:
    """A message in delivery order."""

    __slots__ = ("msg",)

    def __init__(self, msg: DaemonMessage):
        self.msg = msg


@dataclass
class ConfigurationChange:
    """The set of daemons changed (ring orderers only)."""

    kind: str  # "transitional" or "regular"
    members: List[str]
    transitional_members: List[str]
    ring_id: Tuple[int, int]


@dataclass
class Backlog:
    """What waits in an orderer for the network: the daemon stops reading clients above a
    limit (its flow control)."""

    messages: int = 0
    bytes: int = 0
    refused: int = 0  #: messages refused so far because the queue was full
    max_messages: int = 0  #: the queue's hard limit


class Orderer:
    """Interface: takes this daemon's messages, returns them (and others') in delivery order."""

    def backlog(self) -> Backlog:
        return Backlog()  # a ring of one delivers at once: nothing waits

    def submit(self, msg: DaemonMessage) -> None:
        raise NotImplementedError

    def receive(self, packet: bytes, src, now: float) -> None:
        raise NotImplementedError

    def tick(self, now: float) -> None:
        raise NotImplementedError

    def poll(self) -> list:
        raise NotImplementedError

    #: True while leave() still has announcements to send (tick() sends them, LEAVE_COPY_GAP_S
    #: apart); the I/O loop keeps ticking until it is False, then exits
    leaving = False

    def leave(self, reason: str, now: float) -> None:
        """The daemon is being stopped cleanly (Ctrl-C, SIGTERM): tell the other daemons, if
        there are any (one daemon alone has nobody to tell)."""


class LocalOrderer(Orderer):
    """The ring of one daemon: every message is delivered at once, in submission order.

    With one daemon the submission order is already FIFO per session, causal, agreed (one
    total order, {LTS, site id} with one site) and safe (every daemon, i.e. this one, has it),
    so all six service types come out of poll() in the order they went in.  They still pass
    through here so that the ring orderer can take this one's place without other changes.
    """

    def __init__(self, daemon_name: str = "", site_id: int = 0):
        self.daemon_name = daemon_name
        self.site_id = site_id
        self.seq = 0  #: site sequence of the last message
        self.lts = 0  #: Lamport time stamp of the last message
        self.ignored_datagrams = 0
        self._out: list = []

    def submit(self, msg: DaemonMessage) -> None:
        self.seq += 1
        self.lts += 1
        msg.site_id = self.site_id
        msg.seq = self.seq
        msg.lts = self.lts
        self._out.append(Deliver(msg))

    def receive(self, packet: bytes, src, now: float) -> None:
        self.ignored_datagrams += 1  # a ring of one has no peers

    def tick(self, now: float) -> None:
        pass

    def poll(self) -> list:
        out, self._out = self._out, []
        return out


# ---- GroupCore: groups, members and deliveries (like Spread's groups.c) -----------------------

class Group:
    __slots__ = ("name", "members", "ordered", "index", "local", "blob")

    def __init__(self, name: str):
        self.name = name
        self.members: Dict[str, str] = {}  # private group -> daemon name
        self.ordered: List[str] = []  # members in daemon order of the configuration, then name
        self.index = 0  # incremented on every change: group ids change on every change
        self.local: list = []  # sessions of this daemon that are members (delivery targets)
        self.blob = b""  # the members as 32-byte names (the groups[] of membership messages)


class GroupCore:
    """Consumes Deliver / ConfigurationChange in order; produces per-session deliveries."""

    def __init__(self, daemon_name: str, proc_id: int = 0x7F000001, memb_time: int = 0,
                 daemon_order: Optional[Sequence[str]] = None, max_session_messages: int = DEFAULT_MAX_SESSION_MESSAGES,
                 max_session_bytes: int = MAX_SESSION_QUEUE_BYTES):
        self.daemon_name = daemon_name
        self.proc_id = proc_id
        self.memb_time = memb_time
        self.daemon_rank = {name: i for i, name in enumerate(daemon_order or [daemon_name])}
        self.max_session_messages = max_session_messages
        self.max_session_bytes = max_session_bytes
        self.groups: Dict[str, Group] = {}
        self.local: Dict[str, ClientSession] = {}  # private group -> session on this daemon
        self.member_groups: Dict[str, set] = {}  # private group (any daemon) -> group names
        self.overflowed: List[ClientSession] = []  # sessions to disconnect for not reading
        self.over_limit: set = set()  # sessions with more queued messages than the limit, to judge
        self.out_by_service = collections.Counter()
        self.log: List[str] = []
        self.dirty: set = set()  # conn ids with new output

    # -- sessions -----------------------------------------------------------------------------
    def add_session(self, session: ClientSession) -> None:
        self.local[session.private_group] = session

    def _enqueue(self, session: ClientSession, data: bytes) -> None:
        if session.state == CLOSED:
            return
        out = session.out
        out.append(data)
        session.msgs_out += 1
        self.dirty.add(session.conn_id)
        if out.messages > self.max_session_messages:
            # judged later, after the I/O loop has offered the queue to the socket: only what the
            # socket did not take counts (like the real daemon's Sess_write), see Daemon._enforce_queue_limits
            self.over_limit.add(session)
        if out.queued_bytes > self.max_session_bytes:  # a hard bound on memory, at once
            out.clear()
            session._enter_closed("not reading: more than %d queued bytes" % self.max_session_bytes)
            self.overflowed.append(session)

    # -- deliveries -----------------------------------------------------------------------------
    def deliver(self, msg: DaemonMessage) -> None:
        kind = msg.kind
        if kind is DATA or kind == DATA:
            self._deliver_data(msg)
        elif kind == JOIN:
            self._join(msg.sender, msg.origin, msg.groups[0])
        elif kind == LEAVE:
            self._leave(msg.sender, msg.groups[0])
        elif kind == KILL:
            self._kill(msg.sender, msg.reason)

    #: a state exchange under way holds deliveries (RingGroupCore, SitesGroupCore); data goes
    #: straight to the sessions only while there is none
    exchange = None

    def deliver_all(self, msgs: list) -> list:
        """Several deliveries in order (a burst's): as deliver() for each, with the data to one
        group, the flood's case, done here in one loop. The group's sessions are looked up
        once per run of messages to it: only a join, leave or disconnect changes them, and
        those go through deliver(). Returns those others (rare), for the daemon's books."""
        deliver = self.deliver
        append = self._append_to_sessions
        me = self.daemon_name
        counts = self.out_by_service
        last_group = targets = None
        others = []
        for msg in msgs:
            groups = msg.groups
            if msg.kind is not DATA or self.exchange is not None or len(groups) != 1:
                deliver(msg)
                if msg.kind is not DATA:
                    others.append(msg)
                last_group = None
                continue
            if groups[0] != last_group:
                last_group = groups[0]
                targets = self._targets(last_group)
            if not targets:
                continue
            skip = msg.sender if (msg.service_type & SELF_DISCARD) and msg.origin == me else None
            count = append(targets, msg.raw if msg.raw is not None else msg.wire(), skip)
            if count:
                counts[msg.service_type & REGULAR_MESS] += count
        return others

    def _targets(self, name: str):
        if name[:1] == "#":
            session = self.local.get(name)
            return (session,) if session is not None else ()
        group = self.groups.get(name)
        return group.local if group is not None else ()

    def _deliver_data(self, msg: DaemonMessage) -> None:
        groups = msg.groups
        if len(groups) == 1:
            targets = self._targets(groups[0])
        else:  # one copy per receiving session, whatever the number of its groups
            seen = {}
            for name in groups:
                for session in self._targets(name):
                    seen[session.conn_id] = session
            targets = list(seen.values())
        if not targets:
            return
        skip = msg.sender if (msg.service_type & SELF_DISCARD) and msg.origin == self.daemon_name else None
        count = self._append_to_sessions(targets, msg.raw if msg.raw is not None else msg.wire(), skip)
        if count:
            self.out_by_service[msg.service_type & REGULAR_MESS] += count

    def _append_to_sessions(self, targets, raw: bytes, skip) -> int:
        """A message's client bytes onto each target session's outbox but skip's (SELF_DISCARD):
        the hot path, Outbox.append and the checks of _enqueue inlined. Returns how many took it."""
        size = len(raw)
        limit = self.max_session_messages
        max_bytes = self.max_session_bytes
        dirty = self.dirty
        count = 0
        for session in targets:
            if session.private_group == skip:
                continue
            out = session.out
            if session.state == CLOSED or out.appended_bytes - out.written_bytes + size > max_bytes:
                self._enqueue(session, raw)  # the rare cases, spelled out there
                continue
            out.chunks.append(raw)
            out.appended_bytes += size
            out.ends.append(out.appended_bytes)
            session.msgs_out += 1
            dirty.add(session.conn_id)
            if len(out.ends) > limit:
                self.over_limit.add(session)
            count += 1
        return count

    def group_id(self, group: Group) -> Tuple[int, int, int]:
        return (self.proc_id, self.memb_time, group.index)

    def _reorder(self, group: Group) -> None:
        rank = self.daemon_rank
        big = len(rank)
        group.ordered = sorted(group.members, key=lambda pg: (rank.get(group.members[pg], big), pg.encode("latin-1")))
        group.blob = b"".join(pad_name(m) for m in group.ordered)
        group.local = [self.local[pg] for pg in group.ordered if pg in self.local]

    def _notify(self, group: Group, cause: int, changed: str) -> None:
        """Lightweight membership (JOIN/LEAVE/DISCONNECT): one vs_set holding the changed member."""
        message = None
        for session in group.local:
            if session.group_membership:
                if message is None:
                    message = encode_reg_memb(group.name, cause, group.blob, len(group.ordered),
                                              self.group_id(group), [[changed]], 0)
                self._enqueue(session, message)

    def _join(self, member: str, daemon: str, name: str) -> None:
        group = self.groups.get(name)
        if group is not None and member in group.members:
            self.log.append("%s joined %s again: ignored" % (member, name))
            return
        refusal = self._join_refusal(member, group)
        if refusal:
            self._reject_join(member, name, refusal)
            return
        if group is None:
            group = self.groups[name] = Group(name)
        group.members[member] = daemon
        group.index += 1
        self.member_groups.setdefault(member, set()).add(name)
        session = self.local.get(member)
        if session is not None:
            session.groups.add(name)
        self._reorder(group)
        self.log.append("%s joined %s (%d members)" % (member, name, len(group.members)))
        self._notify(group, CAUSED_BY_JOIN, member)

    def _join_refusal(self, member: str, group: Optional[Group]) -> str:
        """Limits on the group table (every daemon applies them to the same agreed sequence)."""
        if group is None and len(self.groups) >= MAX_GROUPS_TOTAL:
            return "the daemon has %d groups already" % MAX_GROUPS_TOTAL
        if len(self.member_groups.get(member, ())) >= MAX_GROUPS_PER_MEMBER:
            return "%s is in %d groups already" % (member, MAX_GROUPS_PER_MEMBER)
        if group is not None and len(group.members) >= MAX_GROUP_MEMBERS:
            return "the group has %d members already" % MAX_GROUP_MEMBERS
        return ""

    def _reject_join(self, member: str, name: str, why: str) -> None:
        """As the real daemon does when a join exceeds its limits: the join comes back to its
        sender as REJECT_MESS, with the old type inserted after the header (session.c:1508)."""
        self.log.append("%s may not join %s: %s (REJECT_MESS)" % (member, name, why))
        session = self.local.get(member)
        if session is not None:
            head = HEADER.pack(REJECT_MESS | MY_ENDIAN_MARKER, pad_name(member), 1, MY_ENDIAN_MARKER, 0)
            self._enqueue(session, head + UINT32.pack(JOIN_MESS | MY_ENDIAN_MARKER) + pad_name(name))

    def _remove(self, member: str, group: Group) -> None:
        del group.members[member]
        group.index += 1
        names = self.member_groups.get(member)
        if names is not None:
            names.discard(group.name)
            if not names:
                del self.member_groups[member]
        session = self.local.get(member)
        if session is not None:
            session.groups.discard(group.name)
        self._reorder(group)

    def _drop_if_empty(self, group: Group) -> None:
        if not group.members:
            del self.groups[group.name]

    def _leave(self, member: str, name: str) -> None:
        group = self.groups.get(name)
        if group is None or member not in group.members:
            self.log.append("%s left %s without being a member: ignored" % (member, name))
            return
        self._remove(member, group)
        self.log.append("%s left %s (%d members)" % (member, name, len(group.members)))
        session = self.local.get(member)
        if session is not None and session.group_membership:
            self._enqueue(session, encode_self_leave(name))
        self._notify(group, CAUSED_BY_LEAVE, member)
        self._drop_if_empty(group)

    def _kill(self, member: str, reason: str) -> None:
        for name in sorted(self.member_groups.get(member, ())):
            group = self.groups[name]
            self._remove(member, group)
            self.log.append("%s left %s by disconnect (%d members)" % (member, name, len(group.members)))
            self._notify(group, CAUSED_BY_DISCONNECT, member)
            self._drop_if_empty(group)
        self.local.pop(member, None)

    # -- configuration changes (several daemons) -------------------------------------------------
    def configuration_change(self, change: ConfigurationChange, memb_time: int) -> None:
        """Daemons left or came: members of departed daemons go; every changed group with
        local members gets TRANSITION (old id) then REG_MEMB CAUSED_BY_NETWORK (new id)."""
        if change.kind != "regular":
            return
        self.daemon_rank = {name: i for i, name in enumerate(change.members)}
        self._drop_daemons(set(change.members), {}, memb_time)

    def _drop_daemons(self, alive: set, transition_sent: Dict[str, tuple], memb_time: int,
                      hold: Iterable[str] = ()) -> Dict[str, tuple]:
        """Members at daemons not in `alive` go; each changed group's local members get
        TRANSITION (its id before the change; not again for a group in transition_sent) then
        REG_MEMB CAUSED_BY_NETWORK (the id of memb_time) with the survivors as one vs_set.
        A changed group that keeps members at daemons in `hold` (SitesGroupCore: at sites our
        next regular view of the sites drops, _lost_at_next_view) gets its TRANSITION only: a
        REG_MEMB now would name members of a site we no longer share a view with (a fork's
        ROSTER, item 2 of issue 10); it comes with that view. The table changes alike
        everywhere; only what our clients are told waits. Returns those groups, with the id
        their TRANSITION ended."""
        hold = set(hold)
        held: Dict[str, tuple] = {}
        old_ids = {name: self.group_id(group) for name, group in self.groups.items()}
        self.memb_time = memb_time
        for name in sorted(self.groups):
            group = self.groups[name]
            gone = [m for m, d in group.members.items() if d not in alive]
            if not gone:
                continue
            old_id = old_ids[name]
            for member in gone:
                self._remove(member, group)
            group.index = 1
            self.log.append("%s lost %d members by a network change" % (name, len(gone)))
            waits = any(d in hold for d in group.members.values())
            if waits:
                held[name] = transition_sent.get(name, old_id)
                self.log.append("%s: its REG_MEMB waits for the sites' next view (members at "
                                "sites it leaves out)" % name)
            if name not in transition_sent:
                for session in group.local:
                    if session.group_membership:
                        self._enqueue(session, encode_transition(name, old_id))
            if not waits:
                vs_sets, local_index = self._network_vs_sets(group)
                self._send_network_memb(group, vs_sets, local_index, self._take_joiners(group))
            self._drop_if_empty(group)
        return held

    def _network_vs_sets(self, group: Group) -> Tuple[List[List[str]], int]:
        """The vs_sets of a network change's REG_MEMB and the index of ours: the members left
        came through the change together (SitesGroupCore: not those a held REJOIN brought back)."""
        return [list(group.ordered)], 0

    def _take_joiners(self, group: Group) -> Set[str]:
        """The group's members that joined since its clients' TRANSITION, silently (they had
        no view of it before the REG_MEMB that ends the wait), forgotten as that REG_MEMB goes.
        None here: SitesGroupCore keeps them."""
        return set()

    def _send_network_memb(self, group: Group, vs_sets: List[List[str]], local_index: int,
                           joiners: Container[str] = (),
                           old_id: Optional[Tuple[int, int, int]] = None) -> None:
        """REG_MEMB CAUSED_BY_NETWORK to the group's local clients (after a TRANSITION of
        old_id, if given). A joiner came from no view, so it is in no one's vs_set but a set of
        its own, after the others (as the real Spread gives a join in its transitional state,
        groups.c G_build_memb_vs_buf); a local joiner's own index is that set's."""
        vs_sets, local_index, joiner_index = set_joiners_apart(vs_sets, local_index, joiners)
        messages: Dict[int, bytes] = {}
        for session in group.local:
            if not session.group_membership:
                continue
            index = joiner_index.get(session.private_group, local_index)
            if index not in messages:
                messages[index] = encode_reg_memb(group.name, CAUSED_BY_NETWORK, group.blob, len(group.ordered),
                                                  self.group_id(group), vs_sets, index)
            if old_id is not None:
                self._enqueue(session, encode_transition(group.name, old_id))
            self._enqueue(session, messages[index])

    # -- state exchanges (a ring's, the sites') ----------------------------------------------------
    def _rebuild(self, table: Dict[str, Dict[str, str]]) -> None:
        for name in list(self.groups):
            if name not in table:
                del self.groups[name]
        self.member_groups = {}
        for name, members in table.items():
            group = self.groups.get(name)
            if group is None:
                group = self.groups[name] = Group(name)
            group.members = dict(members)
            group.index = 1
            for member in members:
                self.member_groups.setdefault(member, set()).add(name)
            self._reorder(group)

    def _announce_network_change(self, group: Group, old_id: Optional[Tuple[int, int, int]],
                                 old_ring_of: Dict[str, str], my_ring: str,
                                 joiners: Container[str] = ()) -> None:
        sets = collections.OrderedDict()
        for member in group.ordered:
            sets.setdefault(old_ring_of.get(group.members[member], ""), []).append(member)
        keys = sorted(sets)
        vs_sets = [sets[k] for k in keys]
        local_index = keys.index(my_ring) if my_ring in keys else 0
        self._send_network_memb(group, vs_sets, local_index, joiners, old_id)
        vs_sets = set_joiners_apart(vs_sets, local_index, joiners)[0]
        self.log.append("%s: network change, %d members in %d vs_sets" % (
            group.name, len(group.ordered), len(vs_sets)))


# ---- Daemon: sessions + orderer + group core ----------------------------------------------------
# Every input (a connection opened, bytes from a client, the socket took bytes, a datagram, a
# tick) returns ONE batch of actions, in the order the I/O loop must perform them (raft's Ready):

@dataclass
class Write:
    """Send `data` on the connection, then tell the core how much the socket took:
    Daemon.written(conn_id, count). Until then the core offers that connection nothing more."""

    conn_id: int
    data: bytes


@dataclass
class CloseConnection:
    """Close the connection (any Write before it in the batch went first). The core has
    already forgotten it: the loop does not report the close back."""

    conn_id: int
    flush_first: bool
    reason: str


@dataclass
class SendDatagram:
    """A datagram to the daemon named `dest` (the loop knows its address)."""

    packet: bytes
    dest: object


@dataclass
class MulticastDatagram:
    """A datagram for every daemon named in `dests`: one IP multicast on the segment if the
    loop has one, else a unicast to each (the loop knows their addresses)."""

    packet: bytes
    dests: Tuple[str, ...]


@dataclass
class HopDatagram:
    """A datagram on the HOP port of the daemon named `dest`, another site's (the loop knows
    its address: the segment port + HOP_PORT_OFFSET)."""

    packet: bytes
    dest: str


@dataclass
class LogLine:
    text: str


@dataclass
class PauseReading:
    """Do not read this client until ResumeReading: the ring's backlog is high, and TCP pushes
    back on the senders."""

    conn_id: int


@dataclass
class ResumeReading:
    conn_id: int


@dataclass
class SessionRow:
    private_group: str
    membership: bool
    groups: int
    msgs_in: int
    msgs_out: int
    queued_msgs: int
    queued_bytes: int


@dataclass
class StatusSnapshot:
    """Everything the status table shows, captured at one moment (pure data)."""

    daemon_name: str
    address: str
    uptime_s: float
    sessions: List[SessionRow] = field(default_factory=list)
    groups: List[Tuple[str, List[str]]] = field(default_factory=list)
    msgs_in: Dict[str, int] = field(default_factory=dict)
    msgs_out: Dict[str, int] = field(default_factory=dict)
    queued_bytes: int = 0
    disconnections: Dict[str, int] = field(default_factory=dict)
    rejections: Dict[str, int] = field(default_factory=dict)
    state_changes: Dict[str, int] = field(default_factory=dict)  # session states entered


@dataclass
class ClientLimits:
    """What one client, or one address, may hold of the daemon (command-line settings)."""

    max_session_messages: int = DEFAULT_MAX_SESSION_MESSAGES
    max_sessions: int = MAX_SESSIONS
    max_session_bytes: int = MAX_SESSION_QUEUE_BYTES
    max_total_bytes: int = MAX_TOTAL_QUEUE_BYTES
    #: a connection that has not finished the handshake after this long is closed
    handshake_timeout_s: float = DEFAULT_HANDSHAKE_TIMEOUT_S
    #: unfinished handshakes from one address; one more closes the OLDEST of them, so idle
    #: connections can never keep out the newest one (a real client finishes in milliseconds)
    max_handshakes_per_address: int = DEFAULT_MAX_HANDSHAKES_PER_ADDRESS


class Daemon:
    """The daemon core: client sessions, the orderer and the group core. Never touches a socket
    or the clock. Inputs, each returning a list of actions (Write, CloseConnection,
    SendDatagram, LogLine, PauseReading, ResumeReading):

        connection_opened(conn_id, now, address)   connection_data(conn_id, data)
        written(conn_id, count)    writable(conn_id)    connection_closed(conn_id)
        datagram(packet, src, now)    tick(now)    leave(reason, now)
        datagram_in_burst(packet, src, now) ... end_of_burst()   (several read at one wake-up)
        datagrams_in_burst([(packet, src), ...], now) ... end_of_burst()   (the same, in one call)

    Built by build_daemon(): alone, or one daemon of a ring."""

    def __init__(self, name: str, proc_id: int = 0x7F000001, memb_time: int = 0,
                 orderer: Optional[Orderer] = None, daemon_order: Optional[Sequence[str]] = None,
                 limits: Optional[ClientLimits] = None, rng: Optional[random.Random] = None,
                 core: Optional[GroupCore] = None, peer_ips: Optional[Sequence[str]] = None):
        self.name = name
        self.limits = limits = limits or ClientLimits()
        self.rng = rng or random.Random(0)
        self.orderer = orderer if orderer is not None else LocalOrderer(name)
        self.core = core if core is not None else GroupCore(
            name, proc_id, memb_time, daemon_order, limits.max_session_messages, limits.max_session_bytes)
        self.sessions: Dict[int, ClientSession] = {}
        self.names: Dict[str, int] = {}  # private names in use -> conn id
        self.actions: list = []
        self.in_by_service = collections.Counter()
        self.disconnections = collections.Counter()
        self.rejections = collections.Counter()
        self.log: collections.deque = collections.deque(maxlen=MAX_LOG_LINES)  #: recent lines
        self.state_changes = collections.Counter()  # session states entered
        self._close_log: List[str] = []
        self.now = 0.0
        self._orphans: Dict[int, ClientSession] = {}  # rejected before a session existed (quota)
        #: conn id -> (address, opened at), oldest first: connections still in the handshake
        self.handshaking: "collections.OrderedDict[int, Tuple[str, float]]" = collections.OrderedDict()
        self.handshakes_from = collections.Counter()  #: address -> unfinished handshakes
        self.offered: Dict[int, int] = {}  #: conn id -> bytes of the Write not yet reported
        self.blocked: set = set()  #: conn ids whose socket took less than offered (full)
        self.paused_reads: set = set()
        self.reading_paused = False  #: the ring's backlog is high: clients are not read
        self.pauses = 0
        self.refused_reported = 0
        #: the configured daemons' addresses (a ring): datagrams from others are strangers
        self.peer_ips = frozenset(peer_ips) if peer_ips is not None else None
        self.datagrams_in = 0
        self.datagrams_foreign = 0
        self.strangers_logged: set = set()
        self.garbage_lines = 0  #: "dropped a packet" lines of the ring log in this period
        self.garbage_lines_hidden = 0
        self.garbage_period_start = 0.0
        self.last_rotations = (0.0, 0)  #: (time, rotations) of the last ring status
        #: why this daemon must stop (the I/O loop stops when it is set), or None
        self.fatal: Optional[str] = None

    # -- inputs --------------------------------------------------------------------------------
    def connection_opened(self, conn_id: int, now: Optional[float] = None,
                          address: str = "") -> list:
        if now is not None:
            self.now = now
        if self.handshakes_from[address] >= self.limits.max_handshakes_per_address:
            self._close_oldest_handshake(address, "more than %d unfinished handshakes from %s"
                                         % (self.limits.max_handshakes_per_address, address or "one address"))
        if len(self.sessions) >= self.limits.max_sessions and self.handshaking:
            self._close_oldest_handshake(None, "%d connections: the oldest unfinished handshake makes room"
                                         % len(self.sessions))
        if len(self.sessions) >= self.limits.max_sessions:
            # REJECT_QUOTA right after accept(), before reading anything (session.c:576)
            self.rejections["REJECT_QUOTA"] += 1
            session = ClientSession(conn_id, self.name, lambda n: False, self.rng, self._transition)
            session.out.append(reject_byte(REJECT_QUOTA))
            session._enter_closed("rejected: REJECT_QUOTA (%d sessions)" % len(self.sessions))
            self._orphans[conn_id] = session
            self._close(conn_id, True, "REJECT_QUOTA")
            return self._finish()
        session = ClientSession(conn_id, self.name, lambda n, c=conn_id: self._reserve(n, c), self.rng,
                                self._transition)
        session.opened_at = self.now
        self.sessions[conn_id] = session
        self.handshaking[conn_id] = (address, self.now)
        self.handshakes_from[address] += 1
        if self.reading_paused:
            self._pause(conn_id)
        return self._finish()

    def connection_data(self, conn_id: int, data: bytes) -> list:
        session = self.sessions.get(conn_id)
        if session is None:
            return self._finish()
        was_open = session.state == OPEN
        events = session.receive_data(data)
        if not was_open and session.out.chunks:
            self.core.dirty.add(conn_id)  # handshake replies
        if events:
            self._handle_events(session, events)
            self._run_orderer()
        return self._finish()

    def written(self, conn_id: int, count: int) -> list:
        """The socket took `count` bytes of the connection's last Write. Less than offered: the
        socket is full; the core offers more after writable(conn_id). Only what a socket did not
        take counts against --max-session-messages (like the real daemon's Sess_write)."""
        offered = self.offered.pop(conn_id, None)
        out = self._outbox(conn_id)
        if offered is None or out is None:  # the connection was closed meanwhile
            return self._finish()
        if count:
            out.consumed(count)
        if count < offered:
            self.blocked.add(conn_id)
        elif out.chunks:
            self.core.dirty.add(conn_id)
        return self._finish()

    def writable(self, conn_id: int) -> list:
        """A socket that was full can take more."""
        self.blocked.discard(conn_id)
        self.core.dirty.add(conn_id)
        return self._finish()

    def connection_closed(self, conn_id: int) -> list:
        """The peer closed (or the connection broke): like a disconnect (Sess_kill)."""
        self._forget_connection(conn_id)
        session = self.sessions.get(conn_id)
        if session is None:
            self._orphans.pop(conn_id, None)
            return self._finish()
        if session.state == OPEN:
            session._enter_closed("connection closed by the client")
            self._end_session(session, "connection closed by the client", close=False)
            self._run_orderer()
        else:
            session._enter_closed("connection closed during the handshake")  # no-op if already closed
            self._forget(session, session.close_reason)
        return self._finish()

    def datagram(self, packet: bytes, src, now: float) -> list:
        self._take_datagram(packet, src, now)
        return self._finish()

    def datagram_in_burst(self, packet: bytes, src, now: float) -> list:
        """One datagram of several read at one wake-up: only what goes to other daemons now
        (SendDatagram, MulticastDatagram: the token must not wait); the rest of the batch
        (writes to clients, log lines...) comes from end_of_burst(), so that the work done
        after every input is done once per burst and many deliveries leave in one write."""
        self._take_datagram(packet, src, now)
        return self._datagrams_now()

    def datagrams_in_burst(self, datagrams: list, now: float) -> list:
        """Several (packet, src) of one socket read at one wake-up, in one call: as many calls
        of datagram_in_burst, with the work done after an input (the orderer's outputs to the
        group core) done once for all of them. Returns what goes to other daemons now; the
        rest comes from end_of_burst(). For the segment's data, whose packets ask no answer of
        a receiver: a token that must leave at once goes in alone, or last."""
        receive = self.orderer.receive
        peers = self.peer_ips
        self.now = now
        for packet, src in datagrams:
            if peers is not None and src[0] not in peers:
                self.datagrams_foreign += 1
                self._log_stranger(src)
                continue
            self.datagrams_in += 1
            receive(packet, src, now)
        self._run_orderer()
        return self._datagrams_now()

    def _datagrams_now(self) -> list:
        """The batch's datagrams to other daemons, taken out of it (the token must not wait)."""
        actions = self.actions
        if not actions:
            return actions[:0]
        now_out = [a for a in actions if a.__class__ is SendDatagram or a.__class__ is MulticastDatagram]
        if now_out:
            self.actions = [a for a in actions if a.__class__ is not SendDatagram
                            and a.__class__ is not MulticastDatagram]
        return now_out

    def end_of_burst(self) -> list:
        """The rest of a burst's actions (see datagram_in_burst)."""
        return self._finish()

    def _take_datagram(self, packet: bytes, src, now: float) -> None:
        self.now = now
        if self.peer_ips is not None and src[0] not in self.peer_ips:
            self.datagrams_foreign += 1
            self._log_stranger(src)
            return
        self.datagrams_in += 1
        self.orderer.receive(packet, src, now)
        self._run_orderer()

    def hop_datagram(self, packet: bytes, src, now: float) -> list:
        """A datagram on the HOP port (several sites): for the gateway; the orderer knows
        which daemon's port it came from, and drops it if none."""
        self.now = now
        self.orderer.hop_receive(packet, src, now)
        self._run_orderer()
        return self._finish()

    def leave(self, reason: str, now: float) -> list:
        """Stopped by the operator: the orderer tells the other daemons (SendDatagram actions);
        the I/O loop ticks while leaving(), then closes the connections and exits."""
        self.now = now
        self.orderer.leave(reason, now)
        self._run_orderer()
        return self._finish()

    def tick(self, now: float) -> list:
        self.now = now
        self._close_late_handshakes(now)
        self._bound_total_queues()
        self.orderer.tick(now)
        self._run_orderer()
        return self._finish()

    # -- queries -------------------------------------------------------------------------------
    def leaving(self) -> bool:
        """leave() still has announcements to send (tick() sends them)."""
        return self.orderer.leaving

    def snapshot(self, address: str = "", uptime_s: float = 0.0) -> StatusSnapshot:
        rows = []
        for session in sorted(self.sessions.values(), key=lambda s: s.private_group):
            if session.state != OPEN:
                continue
            rows.append(SessionRow(session.private_group, session.group_membership, len(session.groups),
                                   session.msgs_in, session.msgs_out, session.out.messages, session.out.queued_bytes))
        groups = [(name, list(self.core.groups[name].ordered)) for name in sorted(self.core.groups)]
        return StatusSnapshot(
            daemon_name=self.name, address=address, uptime_s=uptime_s, sessions=rows, groups=groups,
            msgs_in={SERVICE_NAMES[k]: v for k, v in sorted(self.in_by_service.items()) if k in SERVICE_NAMES},
            msgs_out={SERVICE_NAMES[k]: v for k, v in sorted(self.core.out_by_service.items()) if k in SERVICE_NAMES},
            queued_bytes=sum(r.queued_bytes for r in rows),
            disconnections=dict(self.disconnections), rejections=dict(self.rejections),
            state_changes=dict(self.state_changes))

    def ring_snapshot(self, now: float, datagrams_sent: int = 0) -> Optional[dict]:
        """Plain data for the ring's status table (None for a daemon alone); the rotation rate
        is since the previous call."""
        orderer = self.orderer
        if isinstance(orderer, SitesOrderer):
            snap = orderer.ring_orderer.snapshot()
            snap["sites"] = sites_snapshot(orderer, now)
        elif isinstance(orderer, RingOrderer):
            snap = orderer.snapshot()
        else:
            return None
        then, rotations = self.last_rotations
        snap["rotations_per_s"] = (snap["rotations"] - rotations) / max(1e-6, now - then)
        self.last_rotations = (now, snap["rotations"])
        snap["datagrams"] = (self.datagrams_in, datagrams_sent, self.datagrams_foreign)
        core = self.core
        if isinstance(core, (RingGroupCore, SitesGroupCore)):
            snap["held_peak"] = (core.held_peak_messages, core.held_peak_bytes,
                                 core.held_limit_bytes, core.held_limit_exceeded)
        return snap

    # -- sessions ------------------------------------------------------------------------------
    def _transition(self, session: ClientSession, old: str, new: str, reason: str) -> None:
        """Every session state change: logged with its reason and counted (a student reading
        the log sees the handshake and every end of a session)."""
        self.state_changes[new] += 1
        if new in (OPEN, CLOSED):
            self._handshake_over(session.conn_id)
        if new == CLOSED and old == OPEN:
            # logged by _end_session, after the session's earlier requests (same read) took effect
            self._close_log.append("%s closed: %s (%s -> CLOSED)" % (session.describe(), reason, old))
        elif new == CLOSED:
            self._say("%s closed: %s (%s -> CLOSED)" % (session.describe(), reason, old))
        else:
            self._say("%s: %s -> %s: %s" % (session.describe() if new == OPEN else "connection %d" % session.conn_id,
                                            old, new, reason))

    def _handshake_over(self, conn_id: int) -> None:
        entry = self.handshaking.pop(conn_id, None)
        if entry is not None:
            self.handshakes_from[entry[0]] -= 1
            if not self.handshakes_from[entry[0]]:
                del self.handshakes_from[entry[0]]

    def _close_oldest_handshake(self, address: Optional[str], why: str) -> None:
        """Fair to the newest: idle connections from one address (on loopback: every client)
        make room for a new one instead of keeping it out."""
        for conn_id, (addr, _opened) in self.handshaking.items():
            if address is None or addr == address:
                self._close_handshake(conn_id, why, "handshake: made room for a newer connection")
                return

    def _close_late_handshakes(self, now: float) -> None:
        timeout_s = self.limits.handshake_timeout_s
        while self.handshaking:
            conn_id, (_addr, opened) = next(iter(self.handshaking.items()))
            if now - opened <= timeout_s:
                break  # oldest first: the rest are younger
            self._close_handshake(conn_id, "handshake not finished within %g s" % timeout_s, "handshake timeout")

    def _close_handshake(self, conn_id: int, reason: str, counted_as: str) -> None:
        session = self.sessions.get(conn_id)
        self._handshake_over(conn_id)
        if session is None:
            return
        session._enter_closed(reason)
        self.disconnections[counted_as] += 1
        self._close(conn_id, False, counted_as)

    def _reserve(self, name: str, conn_id: int) -> bool:
        if name in self.names:
            return False
        self.names[name] = conn_id
        return True

    def _handle_events(self, session: ClientSession, events: list) -> None:
        submit = self.orderer.submit
        in_by_service = self.in_by_service
        for event in events:
            cls = event.__class__
            if cls is Multicast:
                in_by_service[event.service_type & REGULAR_MESS] += 1
                if submit(event) is False:
                    # The ring's hard queue limit (the daemon's flow control keeps far below it):
                    # end the session rather than lose its message without a word.
                    self._end_session(session, "daemon overloaded: the ring's queue is full", close=True)
                    return
            elif cls is Join or cls is Leave:
                submit(event)
            elif cls is Kill:
                self._run_orderer()  # what the session asked for before its KILL comes first
                self._end_session(session, event.reason, close=True, kill=event)
            elif cls is Accepted:
                self.core.add_session(session)
            elif cls is Rejected:
                name = ERROR_NAMES.get(event.code, str(event.code))
                self.rejections[name] += 1
                self._close(session.conn_id, True, name)
            elif cls is ProtocolViolation:
                self._run_orderer()
                if session.private_group in self.core.local:
                    self._end_session(session, "protocol violation", close=True)
                else:
                    self.disconnections["protocol violation"] += 1
                    self._close(session.conn_id, False, "protocol violation")
        if session.out.chunks:
            self.core.dirty.add(session.conn_id)

    def _end_session(self, session: ClientSession, reason: str, close: bool,
                     kill: Optional[Kill] = None) -> None:
        """The session is over: its KILL goes through the orderer (others see DISCONNECT)."""
        self.disconnections[reason] += 1
        session._enter_closed(reason)  # unless the session had closed itself already
        for line in self._close_log:
            self._say(line)
        self._close_log.clear()
        session.out.clear()
        self.sessions.pop(session.conn_id, None)
        if close:
            self._close(session.conn_id, False, reason)
        if kill is None:
            kill = Kill(KILL, self.name, session.private_group, reason=reason)
        self.orderer.submit(kill)

    def _close(self, conn_id: int, flush_first: bool, reason: str) -> None:
        """Ask the loop to close a connection, and forget it here at once."""
        out = self._outbox(conn_id)
        if flush_first and out is not None and out.chunks and conn_id not in self.offered:
            self.actions.append(Write(conn_id, out.peek()))
        self.actions.append(CloseConnection(conn_id, flush_first, reason))
        self._forget_connection(conn_id)
        self._orphans.pop(conn_id, None)
        session = self.sessions.get(conn_id)
        if session is not None:  # still in the handshake (an OPEN one was ended before)
            session._enter_closed(reason)
            self._forget(session, reason)

    def _forget_connection(self, conn_id: int) -> None:
        self.offered.pop(conn_id, None)
        self.blocked.discard(conn_id)
        self.paused_reads.discard(conn_id)
        self._handshake_over(conn_id)

    def _forget(self, session: ClientSession, reason: str) -> None:
        self.sessions.pop(session.conn_id, None)
        if session.private_name and self.names.get(session.private_name) == session.conn_id:
            del self.names[session.private_name]

    def _release_name(self, private_group: str) -> None:
        name = private_group[1:].split("#", 1)[0]
        conn_id = self.names.get(name)
        if conn_id is not None and conn_id not in self.sessions:
            del self.names[name]

    def _outbox(self, conn_id: int) -> Optional[Outbox]:
        session = self.sessions.get(conn_id) or self._orphans.get(conn_id)
        return session.out if session is not None else None

    # -- the orderer's fixed point -------------------------------------------------------------
    def _run_orderer(self) -> None:
        core = self.core
        while True:
            outputs = self.orderer.poll()
            if not outputs:
                break
            # the deliveries go to the core in runs (deliver_all), in order; the datagrams do not
            # touch the core and leave as they come; a change of configuration or of the sites'
            # view reaches the core after the deliveries before it
            run: list = []
            for item in outputs:
                cls = item.__class__
                if cls is Deliver:
                    run.append(item.msg)
                elif cls is SendToAll:
                    self.actions.append(MulticastDatagram(item.packet, item.dests))
                elif isinstance(item, Send):
                    self.actions.append(SendDatagram(item.packet, item.dest))
                elif cls is SendHop:
                    self.actions.append(HopDatagram(item.packet, item.dest))
                else:
                    if run:
                        self._deliver_run(core, run)
                        run = []
                    if isinstance(item, ConfigurationChange):
                        core.configuration_change(item, core.memb_time + 1)
                    elif cls is SiteViewChange:
                        core.site_view_change(item)
                    elif cls is SiteSync:
                        self._site_sync(core, item)
            if run:
                self._deliver_run(core, run)
            self._kill_overflowed()
        late = getattr(self.orderer, "late", None)
        if late and self.fatal is None:
            self.fatal = late
            self._say("ERROR: " + late)
        if core.log:
            self._take_ring_log()  # the ring's reasons first: the groups' changes follow from them
            for line in core.log:
                self._say(line)
            core.log.clear()

    def _deliver_run(self, core: GroupCore, msgs: list) -> None:
        for msg in core.deliver_all(msgs):  # a name of ours is free again once its KILL is delivered
            if msg.kind == KILL and msg.origin == self.name:
                self._release_name(msg.sender)

    def _site_sync(self, core: GroupCore, event: "SiteSync") -> None:
        """A late daemon's state, at its point of the order (SitesOrderer): the core gives or
        takes its table; one that does not read is a state we cannot run with."""
        try:
            answer = core.site_sync(event)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            self.orderer.late = ("the group table sent with the sites' state does not decode "
                                 "(%s): this daemon stops rather than run with a wrong state" % exc)
            return
        if event.export:
            self.orderer.send_state(event, answer)

    def _finish(self) -> list:
        """The end of every input: offer output to the sockets, judge the queues, decide about
        reading clients, hand over the log; the batch of actions."""
        for _ in range(100):  # a cut session's DISCONNECT is more output for the others
            self._offer_writes()
            if not self._enforce_queue_limits():
                break
        self._client_flow_control()
        self._take_ring_log()
        actions, self.actions = self.actions, []
        return actions

    def _offer_writes(self) -> None:
        core = self.core
        if not core.dirty:
            return
        dirty, core.dirty = core.dirty, set()
        offered, blocked = self.offered, self.blocked
        for conn_id in sorted(dirty):
            if conn_id in offered or conn_id in blocked:
                continue
            out = self._outbox(conn_id)
            if out is not None and out.chunks:
                data = out.peek()
                offered[conn_id] = len(data)
                self.actions.append(Write(conn_id, data))

    # -- queue limits (thesis 8.2.1) --------------------------------------------------------------
    def _enforce_queue_limits(self) -> bool:
        """Disconnect every session whose socket is full and that still has more than
        --max-session-messages undelivered messages: one whose socket took the burst is fine,
        and only one that does not read is cut; others go on. True if any was cut."""
        core = self.core
        if not core.over_limit:
            return False
        undecided = set()
        for session in sorted(core.over_limit, key=lambda s: s.conn_id):
            if session.state == CLOSED or session.out.messages <= core.max_session_messages:
                continue
            if session.conn_id in self.blocked:
                session._enter_closed("not reading (more than %d queued messages)" % core.max_session_messages)
                core.overflowed.append(session)
            else:
                undecided.add(session)  # its socket has not yet said whether it takes the lot
        core.over_limit = undecided
        if not core.overflowed:
            return False
        self._kill_overflowed()
        self._run_orderer()
        return True

    def _bound_total_queues(self) -> None:
        """Memory stays bounded with many slow sessions too: over max_total_bytes queued in all,
        the sessions with the longest queues are disconnected until the total fits."""
        limit = self.limits.max_total_bytes
        queued = [(s.out.queued_bytes, s.conn_id, s) for s in self.sessions.values() if s.state == OPEN]
        total = sum(q[0] for q in queued)
        if total <= limit:
            return
        for size, _cid, session in sorted(queued, key=lambda q: (-q[0], q[1])):
            if total <= limit:
                break
            total -= size
            session._enter_closed("not reading (the longest queue while all sessions hold more than %d bytes)"
                                  % limit)
            self.core.overflowed.append(session)
        self._kill_overflowed()

    def _kill_overflowed(self) -> None:
        core = self.core
        while core.overflowed:
            session = core.overflowed.pop(0)  # in the order they were judged
            self._end_session(session, session.close_reason, close=True)

    # -- flow control towards clients --------------------------------------------------------------
    def _client_flow_control(self) -> None:
        backlog = self.orderer.backlog()
        if backlog.refused != self.refused_reported:
            self._say("ring: %d client messages refused, the ring's queue was full (%d)" % (
                backlog.refused - self.refused_reported, backlog.max_messages))
            self.refused_reported = backlog.refused
        held_over = getattr(self.core, "held_over_limit", False)
        if not self.reading_paused:
            if (backlog.messages > RING_BACKLOG_HIGH_MESSAGES or backlog.bytes > RING_BACKLOG_HIGH_BYTES
                    or held_over):
                self._pause_all(backlog, held_over)
        elif (backlog.messages < RING_BACKLOG_LOW_MESSAGES and backlog.bytes < RING_BACKLOG_LOW_BYTES
              and not held_over):
            self.reading_paused = False
            for conn_id in sorted(self.paused_reads):
                self.actions.append(ResumeReading(conn_id))
            self.paused_reads.clear()

    def _pause_all(self, backlog, held_over: bool) -> None:
        self.reading_paused = True
        self.pauses += 1
        # (over the state exchange's limit: the group core has logged why)
        if not held_over and (self.pauses <= 10 or self.pauses % 100 == 0):
            self._say("ring: %d messages (%d KB) wait for the token: clients are not read "
                      "until fewer than %d (%d KB) wait (pause %d)" % (
                          backlog.messages, backlog.bytes // 1024,
                          RING_BACKLOG_LOW_MESSAGES, RING_BACKLOG_LOW_BYTES // 1024, self.pauses))
        for conn_id in sorted(set(self.sessions) | set(self._orphans)):
            self._pause(conn_id)

    def _pause(self, conn_id: int) -> None:
        if conn_id not in self.paused_reads:
            self.paused_reads.add(conn_id)
            self.actions.append(PauseReading(conn_id))

    # -- log -----------------------------------------------------------------------------------------
    def _say(self, text: str) -> None:
        self.log.append(text)
        self.actions.append(LogLine(text))

    def _log_stranger(self, src) -> None:
        """Another team's traffic on our port: said once per address (a few), counted always."""
        if src[0] in self.strangers_logged or len(self.strangers_logged) >= RING_STRANGERS_LOGGED:
            return
        self.strangers_logged.add(src[0])
        self._say("ring: datagrams from %s:%d, which is not a daemon of the configuration: dropped "
                  "(counted in the status table, logged once per address)" % tuple(src[:2]))

    def _take_ring_log(self) -> None:
        ring_log = getattr(self.orderer, "log", None)
        while ring_log:
            self._ring_line(ring_log.popleft())
        gateway = getattr(self.orderer, "gateway", None)
        while gateway is not None and gateway.log:
            self._say("sites: " + gateway.log.popleft())
        if self.garbage_lines and self.now - self.garbage_period_start >= RING_GARBAGE_PERIOD_S:
            self._say_hidden_garbage()

    def _ring_line(self, line: str) -> None:
        """The ring's log, with its lines about garbage datagrams limited per period, so that a
        flood of another team's packets cannot flood the terminal (all are counted)."""
        if RING_GARBAGE_MARK in line:
            if self.now - self.garbage_period_start >= RING_GARBAGE_PERIOD_S:
                self._say_hidden_garbage()
            self.garbage_lines += 1
            if self.garbage_lines > RING_GARBAGE_LINES_PER_PERIOD:
                self.garbage_lines_hidden += 1
                return
        self._say("ring: " + line)

    def _say_hidden_garbage(self) -> None:
        if self.garbage_lines_hidden:
            self._say("ring: %d more lines about dropped packets not shown (all are counted: "
                      "garbage dropped)" % self.garbage_lines_hidden)
        self.garbage_lines = self.garbage_lines_hidden = 0
        self.garbage_period_start = self.now


def build_daemon(name: str, ring: Optional[Dict[str, str]] = None, *, incarnation: int = 1,
                 settings: Optional[RingSettings] = None, proc_id: int = 0x7F000001, memb_time: int = 0,
                 daemon_order: Optional[Sequence[str]] = None, limits: Optional[ClientLimits] = None,
                 rng: Optional[random.Random] = None, ring_rng: Optional[random.Random] = None,
                 now: float = 0.0, seal: Optional[RingSeal] = None,
                 sites: Optional["SitesPlan"] = None) -> Daemon:
    """The one way to make a daemon core: alone (ring None: the LocalOrderer), or one daemon of a
    ring (ring: daemon name -> IPv4 address for every daemon of the configuration, this one
    included, in configuration order), or, with `sites` (LinkProtocol = Hop), one daemon of
    several sites: a ring of its own site's daemons, a SiteGateway above it and HOP links
    between the sites' representatives. The command line, the tests and the benchmarks use it."""
    limits = limits or ClientLimits()
    if not ring:
        return Daemon(name, proc_id=proc_id, memb_time=memb_time, daemon_order=daemon_order,
                      limits=limits, rng=rng)
    if name not in ring:
        raise ValueError("daemon %r is not one of the ring's daemons (%s)" % (name, ", ".join(ring)))
    order = list(daemon_order or ring)
    if sites is not None:
        return _build_site_daemon(name, ring, sites, incarnation, settings, order, limits, rng,
                                  ring_rng, now, seal)
    orderer = RingOrderer(name, incarnation, list(ring), ring_rng, settings, now=now, seal=seal)
    core = RingGroupCore(name, orderer, ring, proc_id=proc_id, memb_time=memb_time, daemon_order=order,
                         max_session_messages=limits.max_session_messages,
                         max_session_bytes=limits.max_session_bytes)
    return Daemon(name, proc_id=proc_id, memb_time=memb_time, orderer=orderer, daemon_order=order,
                  limits=limits, rng=rng, core=core, peer_ips=list(ring.values()))


def _build_site_daemon(name, ring, sites, incarnation, settings, order, limits, rng, ring_rng,
                       now, seal) -> Daemon:
    own = next((list(s) for s in sites.sites if name in s), None)
    if own is None:
        raise ValueError("daemon %r is in no site" % name)
    orderer = RingOrderer(name, incarnation, own, ring_rng, settings, now=now, seal=seal)
    gateway = SiteGateway(name, sites.sites, sites.costs, orderer, sites.hop_settings, seal, now)
    hop_names = {tuple(addr): d for d, addr in sites.hop_addresses.items() if d != name}
    wide = SitesOrderer(orderer, gateway, hop_names, now)
    # group ids must be the same at every daemon of every site: the first daemon's address,
    # and the count of network changes (0 at the start)
    first_ip = proc_id_of(ring[order[0]])
    core = SitesGroupCore(name, wide, sites.sites, proc_id=first_ip, memb_time=0, daemon_order=order,
                          max_session_messages=limits.max_session_messages,
                          max_session_bytes=limits.max_session_bytes)
    return Daemon(name, proc_id=first_ip, memb_time=0, orderer=wide, daemon_order=order,
                  limits=limits, rng=rng, core=core, peer_ips=[ring[d] for d in own])


@dataclass
class SitesPlan:
    """What a daemon of several sites needs of spread.conf (LinkProtocol = Hop): the daemons of
    each site (one site per Spread_Segment, in file order), the RouteMatrix costs, and every
    daemon's HOP address (its IP and its segment's port + HOP_PORT_OFFSET)."""
    sites: List[List[str]]
    costs: List[List[int]]
    hop_addresses: Dict[str, Tuple[str, int]]
    hop_settings: HopSettings = field(default_factory=HopSettings)


# ---- Configuration file (spread.conf) ------------------------------------------------------------

class ConfigError(ValueError):
    """A spread.conf that cannot be used; the message names the line."""


@dataclass
class DaemonEntry:
    name: str
    ip: str
    port: int
    segment: int  # index of its Spread_Segment
    interfaces: List[Tuple[str, str]] = field(default_factory=list)  # (kinds "D"/"C"/"M"/"", address)

    def client_addresses(self) -> List[str]:
        """Where clients connect: interfaces marked C (or unmarked), else the daemon address."""
        found = [ip for kinds, ip in self.interfaces if not kinds or "C" in kinds.upper()]
        return found or [self.ip]


@dataclass
class Segment:
    address: str
    port: int
    daemons: List[DaemonEntry] = field(default_factory=list)


@dataclass
class SpreadConfig:
    segments: List[Segment] = field(default_factory=list)
    ignored: List[str] = field(default_factory=list)  # Spread 4 settings accepted and not used
    used: Dict[str, int] = field(default_factory=dict)  # settings spread_mini uses (USED_SETTINGS)
    unknown: List[str] = field(default_factory=list)  # `Key = value` that Spread 4 does not know
    #: RouteMatrix rows as written (clamped to ROUTE_COST_MAX), one per segment; None: none given
    route_matrix: Optional[List[List[int]]] = None
    link_protocol: Optional[str] = None  # LinkProtocol = Hop / TcpHop (Spread 4 reads it, never uses it)
    warnings: List[str] = field(default_factory=list)  # said once at start (a clamped cost)

    @property
    def daemons(self) -> List[DaemonEntry]:
        return [d for seg in self.segments for d in seg.daemons]

    def daemon_order(self) -> List[str]:
        return [d.name for d in self.daemons]

    def find(self, name: str) -> Optional[DaemonEntry]:
        for entry in self.daemons:
            if entry.name == name:
                return entry
        return None

    def site_costs(self) -> List[List[int]]:
        """The cost of the direct link from site i to site j (0: none), one site per segment:
        the RouteMatrix, or without one a direct link of cost 1 between every pair of sites.
        The diagonal is 0 (a site does not link to itself)."""
        count = len(self.segments)
        rows = self.route_matrix or [[1] * count for _ in range(count)]
        return [[0 if i == j else rows[i][j] for j in range(count)] for i in range(count)]

    def summary_lines(self) -> List[str]:
        """What a user should know about the file, said once: what is used, what is not."""
        lines = ["configuration: WARNING: %s" % text for text in self.warnings]
        if self.used:
            lines.append("configuration: using %s" % ", ".join(
                "%s = %s" % (key, ("false", "true")[value] if key in BOOLEAN_SETTINGS else value)
                for key, value in self.used.items()))
        if self.ignored:
            lines.append("configuration: spread_mini accepts and ignores %s (logging, users, "
                         "directories, authentication, timeouts and tuning of the real daemon)"
                         % ", ".join(self.ignored))
        if self.unknown:
            lines.append("configuration: WARNING: %s %s not a Spread 4 setting (a typo?); ignored"
                         % (", ".join(self.unknown), "is" if len(self.unknown) == 1 else "are"))
        return lines


MAX_CONFIG_DAEMONS = 128
MAX_CONFIG_BYTES = 1 << 20  # a spread.conf is a few KB; a bigger file is the wrong file
#: the settings of Spread 4's configuration grammar (daemon/config_gram.l); all are accepted
SPREAD4_SETTINGS = (
    "EventLogFile", "EventTimeStamp", "EventPreciseTimeStamp", "EventPriority", "DebugFlags",
    "DangerousMonitor", "SocketPortReuse", "RuntimeDir", "DaemonUser", "DaemonGroup",
    "RequiredAuthMethods", "AllowedAuthMethods", "AccessControlPolicy", "MaxSessionMessages",
    "ActiveIPVersion", "Window", "PersonalWindow", "AcceleratedRing", "AcceleratedWindow",
    "TokenTimeout", "HurryTimeout", "AliveTimeout", "JoinTimeout", "RepTimeout", "SegTimeout",
    "GatherTimeout", "FormTimeout", "LookupTimeout", "WideAreaNetwork", "ExcludeSegAddrsFromHash",
    "IgnoreMulticastJoinErrors", "VirtualID")
_SPREAD4_BY_LOWER = {name.lower(): name for name in SPREAD4_SETTINGS}
#: RouteMatrix costs above this are clamped to it with a warning, as Spread 4's lexer does
#: (daemon/config_gram.l). A cost of 0 between two different sites means "no direct link":
#: negative costs are refused, so 0 is the one way to write a topology that is not a full mesh
ROUTE_COST_MAX = 100
#: LinkProtocol's values in Spread 4's grammar (it reads them and never uses them)
LINK_PROTOCOLS = ("Hop", "TcpHop")
#: settings that may stand alone, without "= value"
BARE_SETTINGS = ("EventTimeStamp", "EventPreciseTimeStamp")
#: settings spread_mini uses: the ring's flow control windows (packets per token rotation, as in
#: Spread), its protocol (Spread 5's AcceleratedRing and AcceleratedWindow) and the per-session
#: queue limit. Everything else is accepted and ignored.
USED_SETTINGS = ("Window", "PersonalWindow", "MaxSessionMessages", "AcceleratedRing",
                 "AcceleratedWindow")
#: yes/no settings, written as Spread's lexer reads them (kept in SpreadConfig.used as 1 or 0)
BOOLEAN_SETTINGS = ("AcceleratedRing",)
BOOLEAN_WORDS = {"true": 1, "yes": 1, "false": 0, "no": 0}
#: settings that may be 0 (AcceleratedWindow = 0: no packet after the token)
ZERO_SETTINGS = ("AcceleratedWindow",)
#: one token: a brace, '=', ';', a quoted string, or a word; '#' outside quotes starts a comment
_CONF_TOKEN = re.compile(r"""\s+|(#.*)|("[^"]*"|'[^']*')|([{}=;])|([^\s{}=;#"']+)|(["'])""")


@dataclass
class _Token:
    text: str
    line: int
    quoted: bool = False


def _conf_tokens(text: str) -> List[_Token]:
    tokens = []
    for lineno, line in enumerate(text.splitlines(), 1):
        for match in _CONF_TOKEN.finditer(line):
            _comment, quoted, punct, word, stray_quote = match.groups()
            if stray_quote:
                raise ConfigError("line %d: a %s quote that is not closed on the same line" % (lineno, stray_quote))
            if quoted:
                tokens.append(_Token(quoted[1:-1], lineno, True))
            elif punct or word:
                tokens.append(_Token(punct or word, lineno))
    return tokens


def _is_ipv4(text: str) -> bool:
    try:
        ipaddress.IPv4Address(text)
        return True
    except ValueError:
        return False


def _parse_ip(text: str, lineno: int) -> str:
    try:
        return str(ipaddress.IPv4Address(text))
    except ValueError:
        pass
    if ":" in text and not text.count(".") == 3:
        raise ConfigError("line %d: %r: spread_mini speaks IPv4 only" % (lineno, text))
    raise ConfigError("line %d: %r is not an IPv4 address" % (lineno, text))


def _parse_segment_address(text: str, lineno: int) -> Tuple[str, int]:
    addr, _, port_text = text.partition(":")
    port = DEFAULT_SPREAD_PORT
    if port_text:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise ConfigError("line %d: bad port in %r (1..65535)" % (lineno, text))
        port = int(port_text)
    return _parse_ip(addr, lineno), port


class _ConfParser:
    """A recursive-descent reader of Spread 4's spread.conf over tokens; every error names its line."""

    def __init__(self, text: str):
        self.tokens = _conf_tokens(text)
        self.last_line = len(text.splitlines())
        self.pos = 0
        self.config = SpreadConfig()
        self.names: Dict[str, int] = {}  # daemon name -> line
        self.addresses: Dict[Tuple[str, int], Tuple[str, int]] = {}  # (ip, port) -> (name, line)
        self.route_matrix_line = 0  # where RouteMatrix starts, and the line of each of its rows
        self.route_rows_lines: List[int] = []

    def peek(self, ahead: int = 0) -> Optional[_Token]:
        index = self.pos + ahead
        return self.tokens[index] if index < len(self.tokens) else None

    def peek_is(self, text: str) -> bool:
        token = self.peek()
        return token is not None and not token.quoted and token.text == text

    def where(self) -> str:
        token = self.peek()
        return "line %d" % token.line if token else "line %d (end of file)" % self.last_line

    def take(self, what: str) -> _Token:
        token = self.peek()
        if token is None:
            raise ConfigError("%s: expected %s" % (self.where(), what))
        self.pos += 1
        return token

    def expect(self, what: str) -> None:
        if not self.peek_is(what):
            token = self.peek()
            raise ConfigError("%s: expected %r, got %r" % (self.where(), what, token.text if token else "nothing"))
        self.pos += 1

    def parse(self) -> SpreadConfig:
        while self.peek() is not None:
            token = self.peek()
            if token.text.lower() == "spread_segment" and not token.quoted:
                self.segment()
            elif token.text.lower() == "routematrix" and not token.quoted:
                self.route_matrix()
            elif token.text.lower() == "linkprotocol" and not token.quoted:
                self.link_protocol()
            elif self.peek(1) is not None and self.peek(1).text == "=" or token.text.lower() in _SPREAD4_BY_LOWER:
                self.setting()
            elif token.text.startswith("//") or token.text.startswith("/*"):
                raise ConfigError("line %d: unexpected %r: comments in spread.conf start with '#'" % (token.line, token.text))
            else:
                raise ConfigError("line %d: unexpected %r (expected Spread_Segment or a `Key = value` setting)"
                                  % (token.line, token.text))
        if not self.config.daemons:
            raise ConfigError("no daemons: the file needs a Spread_Segment with at least one daemon")
        self._check_route_matrix()
        used = self.config.used
        if used.get("PersonalWindow", 0) > used.get("Window", used.get("PersonalWindow", 0)):
            raise ConfigError("PersonalWindow (%d) is larger than Window (%d)" % (used["PersonalWindow"], used["Window"]))
        self._check_accelerated_window()
        return self.config

    def _check_accelerated_window(self) -> None:
        """Spread 5's rule: the packets a visit sends after the token are some of its personal
        window (a larger AcceleratedWindow is a mistake, unless the ring is not accelerated)."""
        used = self.config.used
        # the ring's settings as this file makes them, its windows in LAN packets as written
        settings = ring_settings_of(self.config, LAN_PACKET_BYTES)
        if not settings.accelerated_ring or "AcceleratedWindow" not in used:
            return
        personal = settings.personal_window_packets
        if used["AcceleratedWindow"] > personal:
            raise ConfigError("AcceleratedWindow (%d) is larger than the personal window (%d "
                              "packets: PersonalWindow, at most Window)"
                              % (used["AcceleratedWindow"], personal))

    def segment(self) -> None:
        """Spread_Segment ADDR[:PORT] [ADDR ...] { daemon ... }"""
        keyword = self.take("Spread_Segment")
        token = self.take("a segment address after Spread_Segment (line %d)" % keyword.line)
        address, port = _parse_segment_address(token.text, token.line)
        while self.peek() is not None and not self.peek_is("{"):  # more segment addresses
            extra = self.take("a segment address")
            if not _is_ipv4(extra.text):
                raise ConfigError("line %d: expected '{' after the segment address, got %r" % (extra.line, extra.text))
        self.expect("{")
        segment = Segment(address, port)
        while self.peek() is not None and not self.peek_is("}"):
            segment.daemons.append(self.daemon(port))
        self.expect("}")
        self.config.segments.append(segment)

    def daemon(self, port: int) -> DaemonEntry:
        """NAME IP [{ [D] [C] [M] IP ... }] [;] or IP alone (its name is the address)"""
        first = self.take("a daemon name")
        if _is_ipv4(first.text):
            name, ip_token = first.text, first
        else:
            name = first.text
            ip_token = self.peek()
            if ip_token is None or not (":" in ip_token.text or re.fullmatch(r"[0-9.]+", ip_token.text)):
                raise ConfigError("line %d: daemon %r has no address: write its IPv4 address after the name "
                                  "(spread_mini does not look names up)" % (first.line, name))
            self.pos += 1
        self._check_name(name, first.line)
        if ":" in ip_token.text and ip_token.text.count(".") == 3:
            raise ConfigError("line %d: %r: a daemon's address has no port (the segment gives it)"
                              % (ip_token.line, ip_token.text))
        entry = DaemonEntry(name, _parse_ip(ip_token.text, ip_token.line), port, len(self.config.segments))
        self._check_address(entry, first.line)
        if self.peek_is("{"):
            open_line = self.take("{").line
            while self.peek() is not None and not self.peek_is("}"):
                entry.interfaces.append(self.interface())
            self.expect("}")
            if not entry.interfaces:
                raise ConfigError("line %d: daemon %r has an empty interface block" % (open_line, name))
        if self.peek_is(";"):
            self.pos += 1
        return entry

    def _check_name(self, name: str, line: int) -> None:
        if not name_is_legal(name, PRIVATE_NAME_MIN_CHAR, MAX_PROC_NAME - 1):
            raise ConfigError("line %d: daemon name %r: 1..%d characters from '$'..'~'" % (line, name, MAX_PROC_NAME - 1))
        if name in self.names:
            raise ConfigError("line %d: daemon name %r appears twice (first on line %d)" % (line, name, self.names[name]))
        self.names[name] = line
        if len(self.names) > MAX_CONFIG_DAEMONS:
            raise ConfigError("line %d: more than %d daemons" % (line, MAX_CONFIG_DAEMONS))

    def _check_address(self, entry: DaemonEntry, line: int) -> None:
        key = (entry.ip, entry.port)
        if key in self.addresses:
            other, other_line = self.addresses[key]
            raise ConfigError("line %d: daemon %r has the address %s:%d of daemon %r (line %d): "
                              "every daemon needs its own" % (line, entry.name, entry.ip, entry.port, other, other_line))
        self.addresses[key] = (entry.name, line)

    def interface(self) -> Tuple[str, str]:
        """[D] [C] [M] IP: an interface of the daemon, for daemons (D), clients (C), monitor (M)."""
        token = self.take("an interface address")
        kinds = ""
        while re.fullmatch(r"[DCMdcm]+", token.text):
            kinds += token.text.upper()
            token = self.take("an interface address after %r (line %d)" % (kinds, token.line))
        if token.text in ("{", "}", ";", "=") and not token.quoted:
            raise ConfigError("line %d: expected an interface address%s, got %r"
                              % (token.line, " after %r" % kinds if kinds else "", token.text))
        return "".join(sorted(set(kinds), key=kinds.index)), _parse_ip(token.text, token.line)

    def route_matrix(self) -> None:
        """RouteMatrix { COST COST ... (one row per line, one row per segment) }, as Spread 4:
        row i gives the cost of the link from segment i to each segment, in file order."""
        keyword = self.take("RouteMatrix")
        if self.config.route_matrix is not None:
            raise ConfigError("line %d: a second RouteMatrix (the first is on line %d)"
                              % (keyword.line, self.route_matrix_line))
        self.route_matrix_line = keyword.line
        self.expect("{")
        rows: List[List[int]] = []
        while self.peek() is not None and not self.peek_is("}"):
            token = self.take("a cost")
            if not self.route_rows_lines or self.route_rows_lines[-1] != token.line:
                rows.append([])
                self.route_rows_lines.append(token.line)
            rows[-1].append(self._route_cost(token))
        self.expect("}")
        self.config.route_matrix = rows

    def _route_cost(self, token: _Token) -> int:
        if not re.fullmatch(r"-?[0-9]+", token.text) or token.quoted:
            raise ConfigError("line %d: RouteMatrix: %r is not a whole number (one row of costs per "
                              "line, one row per Spread_Segment)" % (token.line, token.text))
        cost = int(token.text)
        if cost < 0:
            raise ConfigError("line %d: RouteMatrix: negative cost %d (costs are 0..%d; 0 means "
                              "no direct link)" % (token.line, cost, ROUTE_COST_MAX))
        if cost > ROUTE_COST_MAX:
            self.config.warnings.append("line %d: RouteMatrix cost %d clamped to %d"
                                        % (token.line, cost, ROUTE_COST_MAX))
            cost = ROUTE_COST_MAX
        return cost

    def _check_route_matrix(self) -> None:
        """One row per segment, one cost per segment in each row (checked at the end: the
        segments may follow the matrix in the file)."""
        rows = self.config.route_matrix
        if rows is None:
            return
        count = len(self.config.segments)
        if len(rows) != count:
            raise ConfigError("line %d: RouteMatrix has %d rows for %d segments (one row per "
                              "Spread_Segment, in file order)" % (self.route_matrix_line, len(rows), count))
        for row, line in zip(rows, self.route_rows_lines):
            if len(row) != count:
                raise ConfigError("line %d: RouteMatrix row has %d costs for %d segments"
                                  % (line, len(row), count))

    def link_protocol(self) -> None:
        """LinkProtocol = Hop | TcpHop (Spread 4's grammar; what links spread_mini uses
        between sites is its own choice: HOP over UDP)."""
        key_token = self.take("LinkProtocol")
        self.expect("=")
        value = self.take("Hop or TcpHop after LinkProtocol = (line %d)" % key_token.line)
        if value.text not in LINK_PROTOCOLS:
            raise ConfigError("line %d: LinkProtocol = %s: Spread 4 knows %s"
                              % (value.line, value.text, " and ".join(LINK_PROTOCOLS)))
        self.config.link_protocol = value.text

    def setting(self) -> None:
        """Key = value (the rest of the line), Key = { ... }, or a bare EventTimeStamp."""
        key_token = self.take("a setting")
        key = _SPREAD4_BY_LOWER.get(key_token.text.lower())
        if self.peek_is("="):
            self.pos += 1
            values = self._setting_value(key_token)
        elif key in BARE_SETTINGS:
            values = []
        else:
            raise ConfigError("line %d: %r needs `= value`" % (key_token.line, key_token.text))
        if key is None:
            if key_token.text not in self.config.unknown:
                self.config.unknown.append(key_token.text)
        elif key in BOOLEAN_SETTINGS:
            self.config.used[key] = self._boolean(key, values, key_token.line)
        elif key in USED_SETTINGS:
            self.config.used[key] = self._positive_number(key, values, key_token.line,
                                                          zero=key in ZERO_SETTINGS)
        elif key == "ActiveIPVersion" and values and values[0].lower() != "ipv4":
            raise ConfigError("line %d: ActiveIPVersion %s: spread_mini speaks IPv4 only" % (key_token.line, values[0]))
        elif key not in self.config.ignored:
            self.config.ignored.append(key)

    def _setting_value(self, key_token: _Token) -> List[str]:
        if self.peek_is("{"):
            self.pos += 1
            values = []
            while self.peek() is not None and not self.peek_is("}"):
                values.append(self.take("}").text)
            self.expect("}")
            return values
        values = []
        while self.peek() is not None and self.peek().line == key_token.line and not self.peek_is("}"):
            values.append(self.take("a value").text)
        if not values:
            raise ConfigError("line %d: %s = needs a value on the same line" % (key_token.line, key_token.text))
        return values

    @staticmethod
    def _positive_number(key: str, values: List[str], line: int, zero: bool = False) -> int:
        low = 0 if zero else 1
        if len(values) != 1 or not values[0].isdigit() or not low <= int(values[0]) < 10 ** 9:
            raise ConfigError("line %d: %s = %s: give a whole number of %d or more"
                              % (line, key, " ".join(values), low))
        return int(values[0])

    @staticmethod
    def _boolean(key: str, values: List[str], line: int) -> int:
        if len(values) != 1 or values[0].lower() not in BOOLEAN_WORDS:
            raise ConfigError("line %d: %s = %s: give true or false (yes or no)"
                              % (line, key, " ".join(values)))
        return BOOLEAN_WORDS[values[0].lower()]


def parse_spread_conf(text: str) -> SpreadConfig:
    """Parse Spread 4's spread.conf: Spread_Segment ADDR[:PORT] { NAME IP [{ [D] [C] [M] IP ... }] ... },
    '#' comments, quoted values, RouteMatrix { costs }, LinkProtocol = Hop and the `Key = value`
    settings (Window, PersonalWindow, AcceleratedRing, AcceleratedWindow and MaxSessionMessages
    are used; the others are accepted and listed in .ignored). Each Spread_Segment is a site."""
    return _ConfParser(text).parse()


def load_spread_conf(path: str) -> SpreadConfig:
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError("cannot read %s: %s" % (path, exc.strerror or exc)) from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError("%s is larger than %d bytes: not a spread.conf" % (path, MAX_CONFIG_BYTES))
    if b"\0" in raw:
        raise ConfigError("%s is a binary file, not a spread.conf" % path)
    return parse_spread_conf(raw.decode("utf-8", "replace"))


def choose_daemon(config: SpreadConfig, name: Optional[str]) -> DaemonEntry:
    """This daemon's entry: the one named by --name, or the only one."""
    if name:
        entry = config.find(name)
        if entry is None:
            raise ConfigError("daemon %r is not in the configuration (it has: %s)" % (name, ", ".join(config.daemon_order())))
        return entry
    if len(config.daemons) == 1:
        return config.daemons[0]
    raise ConfigError("the configuration has several daemons (%s): say which one this is with --name"
                      % ", ".join(config.daemon_order()))


def uses_sites(config: SpreadConfig) -> bool:
    """Several Spread_Segment blocks and LinkProtocol = Hop: a ring per site and HOP links
    between the sites. Without LinkProtocol, one ring spans every segment, as Spread 4 runs."""
    return len(config.segments) > 1 and config.link_protocol is not None


def sites_plan(config: SpreadConfig, hop_settings: Optional[HopSettings] = None) -> SitesPlan:
    """The sites of the file; a ConfigError if a daemon's HOP port (its segment port +
    HOP_PORT_OFFSET) is another daemon's segment or HOP port at the same address."""
    for i, segment in enumerate(config.segments):
        if not segment.daemons:
            raise ConfigError("Spread_Segment %d (%s:%d) has no daemon: a site needs one at least"
                              % (i, segment.address, segment.port))
    taken: Dict[Tuple[str, int], str] = {(d.ip, d.port): "the segment port of %s" % d.name
                                         for d in config.daemons}
    hop = {}
    for d in config.daemons:
        address = (d.ip, d.port + HOP_PORT_OFFSET)
        if d.port + HOP_PORT_OFFSET > 65535:
            raise ConfigError("daemon %s: its HOP port would be %d (the segment port %d + %d): "
                              "give its segment a lower port" % (d.name, address[1], d.port, HOP_PORT_OFFSET))
        if address in taken:
            raise ConfigError("daemon %s: its HOP port %s:%d (segment port + %d) is %s; give the "
                              "segments ports at least 3 apart" % (d.name, address[0], address[1],
                                                                  HOP_PORT_OFFSET, taken[address]))
        taken[address] = "the HOP port of %s" % d.name
        hop[d.name] = address
    sites = [[d.name for d in seg.daemons] for seg in config.segments]
    return SitesPlan(sites, config.site_costs(), hop, hop_settings or HopSettings())


def proc_id_of(ip: str) -> int:
    """The 4.4 daemon's proc_id: its IPv4 address as an integer (seen 0x7f000001)."""
    return int(ipaddress.IPv4Address(ip))



# ---- Ring: the RING protocol core (thesis 7.3.2.2 and 7.3.3, Totem's membership) ------------

def _configuration_change(kind: str, member_ids: List[Pid], transitional_ids: List[Pid],
                          ring_id: RingId, old_ring_id: RingId, reason: str) -> ConfigurationChange:
    """spread_mini's ConfigurationChange, plus what the ring knows: members with incarnations
    (member_ids, transitional_ids), the previous regular ring (old_ring_id) and why."""
    change = ConfigurationChange(kind, [p[0] for p in member_ids],
                                 [p[0] for p in transitional_ids], ring_id)
    change.member_ids = list(member_ids)
    change.transitional_ids = list(transitional_ids)
    change.old_ring_id = old_ring_id
    change.reason = reason
    return change

LOCAL_SITE = 0  #: the site id of this daemon's own ring (HOP links to other sites come later)
#: per sender, an UNRELIABLE sequence this far below the highest seen counts as already seen
UNRELIABLE_DUP_WINDOW = 4096


def _is_unreliable(service: int) -> bool:
    return service & UNRELIABLE_MESS and not service & (RELIABLE_MESS | FIFO_MESS | CAUSAL_MESS
                                                       | AGREED_MESS | SAFE_MESS)


# ---- Ring: typed records of the ring's state -------------------------------------------------

@dataclass
class MessageInProgress:
    """A message whose pieces the link is packing (transport level): the rest of it goes on
    the next token visits, before any other message."""
    msg: "DaemonMessage"
    body: bytes
    counter: int  #: the origin's counter (or, for UNRELIABLE, its own sequence)
    lts: int
    site_seq: int  #: 0 for UNRELIABLE: it takes no place in the site's order
    next_frag: int
    frag_count: int
    piece_bytes: int

    def next_piece_bytes(self) -> int:
        return min(self.piece_bytes, len(self.body) - self.next_frag * self.piece_bytes)


@dataclass
class SentToken:
    """The token (or commit token) we passed, kept to send again until a sign of life."""
    raw: bytes
    dest: "Pid"
    retransmit_at: float
    retransmits_left: int
    link_seq: Optional[int]  #: a data packet above this shows the token got through (None: a commit token)


@dataclass
class HeldToken:
    """The token an idle representative keeps (token_hold_s), or that a ring of one gives
    itself at the next chance."""
    ring: "_Ring"
    token: "RingToken"
    next: "Pid"
    until: float


@dataclass(frozen=True)
class JoinSeen:
    """The last join of a peer in GATHER: the sets it proposes, and its ring seq."""
    proc_set: frozenset
    fail_set: frozenset
    ring_seq: int

    def agrees(self, sets: "Tuple[frozenset, frozenset]") -> bool:
        return (self.proc_set, self.fail_set) == sets


@dataclass
class Recovery:
    """RECOVERY of one new ring (thesis 7.3.2.2, Totem's): what the commit token told about
    every member's old ring, and how far the resending of old packets has got."""
    trans: "List[Pid]"  #: the members that come from our old ring: the transitional configuration
    low: int  #: every member of trans has the old ring's packets up to here
    high: int  #: the highest old packet any of them has
    safe_lts: int  #: SAFE messages up to this lts were stable in the old ring
    queue: "collections.deque[int]"  #: old link_seqs this daemon still has to resend
    reason: str  #: why the membership changed (for the configuration change)
    members: "List[Pid]"  #: the new ring
    flag_owner: bool = False  #: we set the token's retrans_flg and are the one to clear it
    clean: int = 0  #: visits in a row with retrans_flg clear
    recovery_high: Optional[int] = None  #: the token's link_seq at the first clean visit


class _Message:
    """A message of one site's stream, being assembled (transport level). Its place in the total
    order is key = (lts, site id), thesis 7.3.3; inside its site's stream it keeps the order in
    which the site's link handed up its first fragment (for the ring: link_seq, and the lts
    grows in that same order because both are taken from the token)."""
    __slots__ = ("key", "site", "origin", "counter", "lts", "site_seq", "service", "frag_count",
                 "frags", "complete", "gap")

    def __init__(self, site: int, origin: Pid, chunk: RingChunk) -> None:
        self.key = (chunk.lts, site)
        self.site = site
        self.origin = origin
        self.counter = chunk.origin_counter
        self.lts = chunk.lts
        self.site_seq = chunk.site_seq
        self.service = chunk.service
        self.frag_count = chunk.frag_count
        self.frags = {}
        self.complete = False
        self.gap = False


class _GapMarker:
    """Stands in a site's stream for a packet nobody in the transitional configuration has. Gaps
    exist only while a configuration is closed (Transport.drain), never in the merge."""
    __slots__ = ("link_seq",)
    complete = False
    gap = True
    key = None

    def __init__(self, link_seq: int) -> None:
        self.link_seq = link_seq


class _Ring:
    """LINK-level state of one ring (the current one, or in RECOVERY the new one beside the old):
    the packet store, what we have of it (my_aru, high_seq), how far it was handed up (fed_upto),
    the token's aru values at our last visit and what they make stable.

    Levels (thesis 7.3.1): the LINK level is this class and RingLink (packets, link_seq,
    link_aru, rtr, flow control, packing: how packets reach every daemon of the site); the
    TRANSPORT level is the class Transport (the send queue, site_seq and lts, message assembly,
    the merge of the sites' streams by {lts, site id}, service types, SAFE stability). `stream`
    is the transport's stream that this ring feeds; the link never looks inside it, it only
    gives it back to the transport (link_chunk, link_gap, site_aru)."""

    def __init__(self, ring_id: RingId, members: List[Pid], start_lts: int,
                 stream: Optional[SiteStream] = None) -> None:
        self.ring_id = ring_id
        self.members = list(members)
        self.start_lts = start_lts
        self.stream = stream
        self.packets = {}  # link_seq -> RingData (kept until stable everywhere)
        self.my_aru = 0  # all packets up to here received (Totem my_aru)
        self.high_seq = 0  # highest link_seq seen
        self.fed_upto = 0  # packets handed up to the transport, in order
        self.safe_link = 0  # packets up to here are held by every member: can be discarded
        #: the site-wide All-Received-Upto (7.3.3): messages with lts <= this are held by every
        #: member of the ring (the smaller token site_aru of this visit and of the last one)
        self.safe_lts = start_lts
        self.prev_link_aru = 0  # token values after our update, at our previous visit
        self.prev_site_aru = start_lts
        self.last_token_id = -1
        self.last_token_seq = 0  # the token's link_seq when we passed it last
        self.my_last_sent = 0  # our contribution to flow_control on the last visit
        self.gc_upto = 0
        self.safe_seen_lts = start_lts  # the highest lts of a SAFE message handed up (feed)
        self.safe_lts_last_visit = start_lts  # safe_lts when we passed the token last
        self.payload_limit_bytes = 0  #: RingLink.payload_limit, once worked out (0: not yet)

    def store(self, packet: RingData) -> bool:
        """Keep a packet; True if it is new."""
        seq = packet.link_seq
        if seq <= self.gc_upto or seq in self.packets:
            return False
        self.packets[seq] = packet
        if seq > self.high_seq:
            self.high_seq = seq
        while (self.my_aru + 1) in self.packets:
            self.my_aru += 1
        return True

    def missing(self, upto: int, limit: int) -> List[int]:
        out = []
        seq = self.my_aru + 1
        while seq <= upto and len(out) < limit:
            if seq not in self.packets:
                out.append(seq)
            seq += 1
        return out


class SiteStream:
    """TRANSPORT-level state of one site's stream of messages in one configuration (7.3.3).
    A site's messages arrive in its own order, which is also its lts order; the stream's
    frontier says how far that order has got: no message with lts <= frontier_lts can still
    come from this site. A message, or a pseudo "update" message (advance_frontier), moves it."""
    __slots__ = ("site_id", "ordered", "partial", "delivered_lts", "frontier_lts", "stable_aru",
                 "unrel_partial", "unrel_expiry", "unrel_done")

    def __init__(self, site_id: int, start_lts: int) -> None:
        self.site_id = site_id
        self.ordered = collections.deque()  # undelivered _Message / _GapMarker in site order
        self.partial = {}  # (origin, counter) -> _Message still missing fragments
        self.delivered_lts = start_lts
        self.frontier_lts = start_lts
        self.stable_aru = start_lts  # the site's All-Received-Upto: every daemon there has these
        # UNRELIABLE messages of this configuration (7.3.3): outside the order and the link
        self.unrel_partial = {}  # (origin, unreliable seq) -> _Message being assembled
        self.unrel_expiry = collections.deque()  # (drop_at, key) in arrival order
        self.unrel_done = {}  # origin -> [highest seq, recent seqs] delivered or given up

    def passed(self, key: Tuple[int, int]) -> bool:
        """True if no message with a {lts, site id} at or below key can still come from here."""
        return key < (self.frontier_lts + 1, self.site_id)


class Transport:
    """TRANSPORT level of one daemon (thesis 7.3.3): ordering, stability and delivery over
    SEVERAL SITES. Sans-I/O and independent of how the sites' packets travel:

        t = Transport("d1", settings, counters, deliver=callback)   # callback(DaemonMessage)
        t.submit(msg, urgent=False)            # the send queue (the link pulls from it)
        s = t.open_stream(site_id, start_lts)  # a site's stream for one configuration
        t.install(s)                           # ... which takes part in the merge from now on
        t.link_chunk(s, sender, chunk)         # a link hands up a piece of a message, in order
        t.advance_frontier(s, lts)             # pseudo "update": the site sends nothing <= lts
        t.site_stable(s, lts)                  # the site's All-Received-Upto (for SAFE)
        t.deliver_ready()                      # deliver what the merge allows

    Every message carries its site id, site_seq, lts (Lamport) and its origin's counter. The
    merge delivers in the lexicographic order {lts, site id}: the smallest head among the
    sites' streams goes when every site with nothing waiting has passed it (its frontier), so
    every daemon that sees the same streams delivers the same sequence, however the streams'
    packets interleave. That one order is FIFO and causal too, so RELIABLE..AGREED all use it
    (as before the split); SAFE waits until its lts <= the minimum over sites of their stable
    All-Received-Upto. With one site (the local ring) this is exactly the ring's order.
    UNRELIABLE data stays outside all that (7.3.3): its own queue and sequence, delivered as
    soon as complete, never twice, dropped when incomplete after unreliable_timeout_s.

    What the LINK asks of the transport (the interface, in both directions):
      downward: next_piece_bytes(piece_bytes) -> size of the next piece to send or None;
                take_piece(stamp, piece_bytes) -> a RingChunk (starts the next message with a
                site_seq and lts taken from the token, `stamp`, if none is in progress);
                next_unreliable_piece_bytes / take_unreliable_piece: the same for UNRELIABLE;
      upward:   link_chunk(stream, sender, chunk), link_gap(stream, link_seq) in link order,
                site_aru(stream) -> the lts up to which every message handed up is complete
                (the link puts it on the token as site_aru).
    The coordinator (RingOrderer) adds: install / site_stable / advance_frontier for the local
    stream, drain at the end of a configuration, unreliable_chunk for UNRELIABLE pieces of the
    current configuration, expire_unreliable(now) on its ticks."""

    def __init__(self, name: str, settings: RingSettings, counters: collections.Counter,
                 deliver: Callable[[DaemonMessage], None], site_id: int = LOCAL_SITE) -> None:
        self.name = name
        self.site_id = site_id
        self.cfg = settings
        self.counters = counters
        self.deliver_to = deliver
        self.streams = {}  # site id -> the SiteStream of the current configuration
        self._merge = []  # the same streams, as a list for the merge
        self._lone: Optional[SiteStream] = None  #: the merge's only stream, if it has one
        self.pending = collections.deque()  # (DaemonMessage, body) waiting for the token
        self.pending_bytes = 0  #: bodies waiting for the token: the daemon's flow control reads it
        self.front = 0  # entries at the head of pending that an urgent message stays behind
        self.in_progress: Optional[MessageInProgress] = None  #: the message being packed
        self.origin_counter = 0
        #: (origin counter, message, body) of our own data sent, oldest first: delivered here
        #: from the object we hold instead of decoding its body back (see _own_message)
        self.own_sent = collections.deque()
        self.safe_taken = 0  #: SAFE messages started into packets (the ring's holder reads it)
        self.max_lts_seen = 0  # the Lamport clock: highest lts seen here, of any site
        self.unreliable = collections.deque()  # UNRELIABLE (msg, body): outside `pending`
        self.unrel_in_progress: Optional[MessageInProgress] = None  #: UNRELIABLE's (site_seq 0)
        self.unrel_seq = 0  # the separate session sequence of UNRELIABLE messages (7.3.3)
        self.trace_completed = None  # tests set a list: msg ids as they are complete here
        self.trace_delivered = None  # tests set a list: msg ids in delivery order
        #: closing a view of several sites (SiteGateway): nothing above this lts is delivered
        #: until the next view is installed (None: no limit)
        self.deliver_limit_lts: Optional[int] = None
        #: ... and, in the old view's regular part, nothing at or above this {lts, site id}
        #: (SiteGateway._hole_free_key; None: no such bound)
        self.deliver_below_key: Optional[Tuple[int, int]] = None

    def lift_delivery_bounds(self) -> None:
        """The view being closed is installed or given up: no lts limit, no regular-part bound."""
        self.deliver_limit_lts = None
        self.deliver_below_key = None

    # ---------------------------------------------------------------- the send queue

    def submit(self, msg: DaemonMessage, urgent: bool = False) -> bool:
        """Queue a message; False if the queue is full. Only data is ever refused: a join, leave
        or disconnect is small and must reach every daemon, or they would disagree about the
        groups. An urgent message goes to the front, behind only the message whose fragments
        are being sent and earlier urgent ones (FIFO among themselves)."""
        unreliable = msg.kind == DATA and _is_unreliable(msg.service_type)
        if len(self.pending) >= self.cfg.max_pending_messages and msg.kind == DATA \
                and not unreliable:
            self.counters["submit_refused_queue_full"] += 1
            return False
        body = encode_message_body(msg)
        if len(body) > MAX_MESSAGE_BODY_BYTES:
            raise RingUsageError("message too long (%d bytes)" % len(body))
        if unreliable:
            return self._submit_unreliable(msg, body)
        if urgent:
            self.pending.insert(self.front, (msg, body))
            self.front += 1
            self.counters["submitted_urgent"] += 1
        else:
            self.pending.append((msg, body))
        self.pending_bytes += len(body)
        self.counters["submitted"] += 1
        return True

    def _submit_unreliable(self, msg: DaemonMessage, body: bytes) -> bool:
        """UNRELIABLE data waits in its own queue; a full queue loses it (its service allows
        that) rather than ending the client's session."""
        if len(self.unreliable) >= self.cfg.max_pending_messages:
            self.counters["unreliable_dropped_queue_full"] += 1
            return True
        self.unreliable.append((msg, body))
        self.pending_bytes += len(body)
        self.counters["submitted"] += 1
        self.counters["submitted_unreliable"] += 1
        return True

    def has_outgoing(self) -> bool:
        return bool(self.pending) or self.in_progress is not None or self.has_unreliable()

    def withdraw(self, kinds: Container[str]) -> List[DaemonMessage]:
        """Take back, in their order, the queued messages of these kinds that no packet
        carries yet (not the one being packed: its first pieces went out)."""
        kept, taken, front = collections.deque(), [], 0
        for index, (msg, body) in enumerate(self.pending):
            if msg.kind in kinds:
                taken.append(msg)
                self.pending_bytes -= len(body)
            else:
                kept.append((msg, body))
                front += index < self.front
        self.pending, self.front = kept, front
        return taken

    def has_unreliable(self) -> bool:
        return bool(self.unreliable) or self.unrel_in_progress is not None

    def requeue_partial(self) -> None:
        """A message cut by a ring change is incomplete in the old ring, so nobody delivers it
        there; it goes again, whole and first, in the next ring."""
        if self.in_progress is not None:
            msg, body = self.in_progress.msg, self.in_progress.body
            self.pending.appendleft((msg, body))
            self.front += 1
            self.pending_bytes += len(body)
            self.in_progress = None
            self.counters["messages_resent_after_change"] += 1
        if self.unrel_in_progress is not None:
            # an UNRELIABLE message is never delivered outside the configuration it was sent
            # in, and its pieces are never sent again: the rest of it is dropped
            self.unrel_in_progress = None
            self.counters["unreliable_cut_by_change"] += 1

    def next_piece_bytes(self, piece_bytes: int) -> Optional[int]:
        """Size of the next piece take_piece would give (None: nothing to send)."""
        return _next_piece_bytes(self.in_progress, self.pending, piece_bytes)

    def take_piece(self, stamp: RingToken, piece_bytes: int) -> RingChunk:
        """The next piece of the message in progress, starting the next one if needed. A message
        gets its site_seq and lts only now, when its first piece goes into a packet that is sent
        at once (`stamp` is the token: site_seq and site_lts grow in the ring's order)."""
        if self.in_progress is None:
            self._start_message(stamp, piece_bytes)
        ip = self.in_progress
        chunk = _cut_piece(ip)
        if ip.next_frag >= ip.frag_count:
            self.in_progress = None
        return chunk

    def take_whole(self, stamp: RingToken, piece_bytes: int, room: int, chunks: List[RingChunk],
                   max_chunks: int) -> int:
        """fill_packet's hot path: the queued messages that go whole (one piece each), while
        they fit `room`, appended to chunks; for each, what take_piece does, without a
        MessageInProgress. Returns the room left."""
        if self.in_progress is not None:
            return room
        pending = self.pending
        counters = self.counters
        while pending and len(chunks) < max_chunks:
            msg, body = pending[0]
            size = len(body)
            if size > piece_bytes or (chunks and CHUNK_HEADER_BYTES + size > room):
                break
            pending.popleft()
            if self.front:
                self.front -= 1
            self.pending_bytes -= size
            self.origin_counter += 1
            # Lamport, as _start_message
            stamp.site_lts = max(stamp.site_lts, self.max_lts_seen) + 1
            stamp.site_seq += 1
            self.max_lts_seen = stamp.site_lts
            service = msg.service_type
            chunks.append(RingChunk(self.origin_counter, stamp.site_lts, stamp.site_seq, 0, 1,
                                    service, body))
            if msg.kind is DATA:
                self._keep_own(msg, body)
            if service & SAFE_MESS:
                self.safe_taken += 1
            counters["messages_sent"] += 1
            room -= CHUNK_HEADER_BYTES + size
            if room <= CHUNK_HEADER_BYTES:
                break
        return room

    def next_unreliable_piece_bytes(self, piece_bytes: int) -> Optional[int]:
        return _next_piece_bytes(self.unrel_in_progress, self.unreliable, piece_bytes)

    def take_unreliable_piece(self, stamp: RingToken, piece_bytes: int) -> RingChunk:
        """The next piece of UNRELIABLE data: its own sequence, no site_seq, the token's lts
        as it is (it takes no place in the order)."""
        if self.unrel_in_progress is None:
            msg, body = self.unreliable.popleft()
            self.pending_bytes -= len(body)
            self.unrel_seq += 1
            frag_count = max(1, -(-len(body) // piece_bytes))
            self.unrel_in_progress = MessageInProgress(msg, body, self.unrel_seq, stamp.site_lts,
                                                       0, 0, frag_count, piece_bytes)
            self.counters["unreliable_sent"] += 1
        ip = self.unrel_in_progress
        chunk = _cut_piece(ip)
        if ip.next_frag >= ip.frag_count:
            self.unrel_in_progress = None
        return chunk

    def _start_message(self, stamp: RingToken, piece_bytes: int) -> None:
        msg, body = self.pending.popleft()
        if self.front:
            self.front -= 1
        self.pending_bytes -= len(body)
        self.origin_counter += 1
        # Lamport: after everything seen here, of any site (a no-op inside one ring, where the
        # token's site_lts is already the highest)
        stamp.site_lts = max(stamp.site_lts, self.max_lts_seen) + 1
        stamp.site_seq += 1
        self.max_lts_seen = stamp.site_lts
        frag_count = max(1, -(-len(body) // piece_bytes))
        self.in_progress = MessageInProgress(msg, body, self.origin_counter, stamp.site_lts,
                                             stamp.site_seq, 0, frag_count, piece_bytes)
        if msg.kind is DATA:
            self._keep_own(msg, body)
        if msg.service_type & SAFE_MESS:
            self.safe_taken += 1
        self.counters["messages_sent"] += 1

    def _keep_own(self, msg: DaemonMessage, body: bytes) -> None:
        own = self.own_sent
        own.append((self.origin_counter, msg, body))
        if len(own) > self.cfg.max_pending_messages:
            own.popleft()  # a bound: what is never delivered here (cut by a change) goes too

    def _own_message(self, counter: int, body: bytes) -> Optional[DaemonMessage]:
        """The message we sent as `counter`, if we still hold it and it is these very bytes
        (then decoding them would give the same message). Our messages are delivered here in
        the order of their counters, so the older ones held are never delivered any more (cut
        by a configuration change, sent again under a new counter)."""
        own = self.own_sent
        while own:
            kept_counter, msg, kept_body = own[0]
            if kept_counter > counter:
                return None
            own.popleft()
            if kept_counter == counter:
                return msg if kept_body == body else None
        return None

    def saw_lts(self, lts: int) -> None:
        if lts > self.max_lts_seen:
            self.max_lts_seen = lts

    # ---------------------------------------------------------------- the sites' streams

    def open_stream(self, site_id: int, start_lts: int) -> SiteStream:
        return SiteStream(site_id, start_lts)

    def install(self, stream: SiteStream) -> None:
        """From now on this stream is its site's in the merge (a new configuration)."""
        self.streams[stream.site_id] = stream
        self._set_merge()

    def uninstall(self, site_id: int) -> None:
        """A site that left the view of several sites takes no more part in the merge."""
        self.streams.pop(site_id, None)
        self._set_merge()

    def _set_merge(self) -> None:
        self._merge = list(self.streams.values())
        self._lone = self._merge[0] if len(self._merge) == 1 else None

    def link_chunk(self, stream: SiteStream, sender: Pid, chunk: RingChunk) -> None:
        """A piece of a message, handed up by the site's link in the site's order."""
        key = (sender, chunk.origin_counter)
        if chunk.frag_count == 1:  # a whole message (the common case): complete at once
            self._link_whole(stream, sender, chunk, key)
            return
        if chunk.frag_index == 0:
            m = _Message(stream.site_id, sender, chunk)
            stream.ordered.append(m)
            stream.partial[key] = m
            if chunk.lts > stream.frontier_lts:
                stream.frontier_lts = chunk.lts
            if stream.site_id != self.site_id and chunk.lts > self.max_lts_seen:
                self.max_lts_seen = chunk.lts
        m = stream.partial.get(key)
        if m is None:  # its first fragment is lost for good (only in recovery)
            return
        if not self._fits(m, chunk):
            return
        m.frags[chunk.frag_index] = chunk.body
        if len(m.frags) == m.frag_count:
            m.complete = True
            del stream.partial[key]
            if self.trace_completed is not None:
                self.trace_completed.append((m.origin[0], m.origin[1], m.counter))

    def link_chunk_at_once(self, stream: SiteStream, sender: Pid, chunk: RingChunk) -> None:
        """link_chunk for a link whose caller runs deliver_ready() next (the ring's
        OPERATIONAL path): a whole message that deliver_ready would deliver first (the merge's
        only stream, nothing before it, not a SAFE one that is not yet stable, no delivery
        limit) is delivered now, without its _Message. The same deliveries in the same order,
        fewer objects."""
        if chunk.frag_count != 1 or stream is not self._lone or stream.ordered or stream.partial \
                or (chunk.service & SAFE_MESS and chunk.lts > stream.stable_aru) \
                or self.deliver_limit_lts is not None:
            self.link_chunk(stream, sender, chunk)
            return
        lts = chunk.lts
        if lts > stream.frontier_lts:
            stream.frontier_lts = lts
        if stream.site_id != self.site_id and lts > self.max_lts_seen:
            self.max_lts_seen = lts
        if self.trace_completed is not None:
            self.trace_completed.append((sender[0], sender[1], chunk.origin_counter))
        stream.delivered_lts = lts
        self._hand_over_body(chunk.body, stream.site_id, sender, chunk.origin_counter,
                             chunk.site_seq, lts, "")

    def _link_whole(self, stream: SiteStream, sender: Pid, chunk: RingChunk,
                    key: Tuple[Pid, int]) -> None:
        """link_chunk for a message in one piece: what the general path does, without the
        round trip through stream.partial (a partial message of the same key is replaced)."""
        m = _Message(stream.site_id, sender, chunk)
        m.frags[0] = chunk.body
        m.complete = True
        stream.ordered.append(m)
        if stream.partial:
            stream.partial.pop(key, None)
        if chunk.lts > stream.frontier_lts:
            stream.frontier_lts = chunk.lts
        if stream.site_id != self.site_id and chunk.lts > self.max_lts_seen:
            self.max_lts_seen = chunk.lts
        if self.trace_completed is not None:
            self.trace_completed.append((sender[0], sender[1], chunk.origin_counter))

    def _fits(self, m: _Message, chunk: RingChunk) -> bool:
        """A fragment must agree with its message's first on the count: otherwise frags could
        reach frag_count with a hole, and joining them would fail in the delivery (KeyError).
        Our daemons never send such a thing; a confused or hostile one might."""
        if chunk.frag_count == m.frag_count:
            return True
        self.counters["inconsistent_fragments"] += 1
        return False

    def link_gap(self, stream: SiteStream, link_seq: int) -> None:
        stream.ordered.append(_GapMarker(link_seq))

    def advance_frontier(self, stream: SiteStream, lts: int) -> None:
        """A pseudo "update" message (7.3.3): the site will send nothing with lts <= this."""
        if lts > stream.frontier_lts:
            stream.frontier_lts = lts
            if stream.site_id != self.site_id:
                self.saw_lts(lts)

    def site_stable(self, stream: SiteStream, lts: int) -> None:
        """The site's All-Received-Upto: every daemon of the site has the messages up to lts."""
        if lts > stream.stable_aru:
            stream.stable_aru = lts

    def site_aru(self, stream: SiteStream) -> int:
        """The lts up to which every message handed up is complete: the same function at every
        member of a ring (it depends only on the packets), so the member that sets the token's
        link_aru can set site_aru with it."""
        lts = stream.delivered_lts
        for m in stream.ordered:
            if not m.complete:
                break
            lts = m.lts
        return lts

    # ---------------------------------------------------------------- UNRELIABLE (7.3.3)

    def unreliable_chunk(self, stream: SiteStream, sender: Pid, chunk: RingChunk,
                         now: float) -> None:
        """A piece of an UNRELIABLE message of this configuration: delivered as soon as the
        message is complete, never twice; dropped if incomplete unreliable_timeout_s after its
        first piece."""
        key = (sender, chunk.origin_counter)
        if self._unreliable_seen(stream, key):
            self.counters["unreliable_duplicates"] += 1
            return
        m = stream.unrel_partial.get(key)
        if m is None:
            if chunk.frag_count == 1:
                m = _Message(stream.site_id, sender, chunk)
                m.frags[0] = chunk.body
                self._unreliable_done(stream, key)
                self._hand_over(m, "u")
                return
            if len(stream.unrel_partial) >= self.cfg.max_unreliable_partial:
                self._give_up(stream, next(iter(stream.unrel_partial)))
            m = _Message(stream.site_id, sender, chunk)
            stream.unrel_partial[key] = m
            stream.unrel_expiry.append((now + self.cfg.unreliable_timeout_s, key))
        elif not self._fits(m, chunk):
            return
        m.frags[chunk.frag_index] = chunk.body
        if len(m.frags) == m.frag_count:
            del stream.unrel_partial[key]
            self._unreliable_done(stream, key)
            self._hand_over(m, "u")

    def expire_unreliable(self, now: float) -> None:
        for stream in self._merge:
            expiry = stream.unrel_expiry
            while expiry and expiry[0][0] <= now:
                key = expiry.popleft()[1]
                if key in stream.unrel_partial:
                    self._give_up(stream, key)

    def _give_up(self, stream: SiteStream, key: Tuple[Pid, int]) -> None:
        del stream.unrel_partial[key]
        self._unreliable_done(stream, key)  # late pieces must not start it again
        self.counters["unreliable_dropped_incomplete"] += 1

    @staticmethod
    def _unreliable_seen(stream: SiteStream, key: Tuple[Pid, int]) -> bool:
        done = stream.unrel_done.get(key[0])
        return done is not None and (key[1] in done[1] or key[1] <= done[0] - UNRELIABLE_DUP_WINDOW)

    @staticmethod
    def _unreliable_done(stream: SiteStream, key: Tuple[Pid, int]) -> None:
        done = stream.unrel_done.setdefault(key[0], [0, set()])
        done[1].add(key[1])
        if key[1] > done[0]:
            done[0] = key[1]
        if len(done[1]) > 2 * UNRELIABLE_DUP_WINDOW:
            done[1] = {s for s in done[1] if s > done[0] - UNRELIABLE_DUP_WINDOW}

    # ---------------------------------------------------------------- delivery

    def deliver_ready(self) -> None:
        """Thesis 7.3.3: deliver in {lts, site id} order while the merge allows it."""
        streams = self._merge
        # one site (one ring): its head is the smallest, and no other site must pass it
        one = streams[0] if len(streams) == 1 else None
        while True:
            if one is not None:
                best, m = one, (one.ordered[0] if one.ordered else None)
            else:
                best = m = None
                for s in streams:  # the smallest head
                    if s.ordered:
                        head = s.ordered[0]
                        if m is None or head.key < m.key:
                            best, m = s, head
            if m is None or not m.complete:
                return
            if self.deliver_limit_lts is not None and (m.lts > self.deliver_limit_lts or (
                    self.deliver_below_key is not None and m.key >= self.deliver_below_key)):
                return
            if one is None:
                for s in streams:  # every other site must have passed m (its frontier)
                    if not s.ordered and not s.passed(m.key):
                        return
            if m.service & SAFE_MESS and m.lts > min(s.stable_aru for s in streams):
                return
            best.ordered.popleft()
            self._deliver(m, best)

    def drain(self, stream: SiteStream, trans: List[Pid], safe_lts: int,
              transitional: Callable[[], bool]) -> bool:
        """Close a configuration of the local site (EVS, at the end of RECOVERY): deliver what is
        left of its stream in order; the first message that cannot go in the regular
        configuration (a gap before it, or a SAFE message not known stable there) is preceded
        by transitional(), which returns True if it emitted the TRANSITIONAL configuration.
        After a gap, only the messages of daemons in the transitional configuration go: the
        others may depend on the missing one (their sender could have seen it). Returns True
        if the transitional configuration was emitted. Only the local site's stream is drained:
        with HOP links (a later issue) a site's configuration change must also be ordered
        against the other sites' streams, which that issue's membership has to define."""
        emitted = False
        after_gap = False
        # by name: a daemon that took a newer incarnation inside the ring (its clock had gone
        # back) is the same process, with the same packets, as the sender of its older messages
        trans_names = {pid[0] for pid in trans}
        while stream.ordered:
            m = stream.ordered.popleft()
            if not m.complete and not m.gap and m.origin[0] in trans_names:
                # cut by the ring change: its sender moves with us, holds every packet it sent
                # (all recovered), so the rest was never sent and nobody anywhere has it; it
                # goes again whole in the next ring (requeue_partial). It hides nothing a later
                # message could depend on: not a gap, and the ones after it are not discarded
                self.counters["messages_cut_by_change"] += 1
                continue
            regular_ok = not after_gap and not emitted and m.complete and not (
                m.service & SAFE_MESS and m.lts > safe_lts)
            if not regular_ok and not emitted:
                emitted = transitional()
            if not m.complete:  # a gap: nobody here has it all
                after_gap = True
                self.counters["messages_lost_in_gaps"] += 0 if m.gap else 1
                continue
            if after_gap and m.origin[0] not in trans_names:
                self.counters["discarded_after_gap"] += 1
                continue
            self._deliver(m, stream)
        stream.partial.clear()  # what never completed in that configuration never will
        stream.unrel_partial.clear()
        return emitted

    def _deliver(self, m: _Message, stream: SiteStream) -> None:
        stream.delivered_lts = m.lts
        if m.frag_count == 1 and m.frags[0] == SITE_SKIP_BODY:
            self.counters["site_skips_ordered"] += 1  # a place without a body: for nobody here
            return
        self._hand_over(m, "")

    def _hand_over(self, m: _Message, tag: str) -> None:
        if m.frag_count == 1:
            body = m.frags[0]
        else:
            body = b"".join(m.frags[i] for i in range(m.frag_count))
        self._hand_over_body(body, m.site, m.origin, m.counter, m.site_seq, m.lts, tag)

    def _hand_over_body(self, body: bytes, site: int, origin: Pid, counter: int, site_seq: int,
                        lts: int, tag: str) -> None:
        msg = None
        if origin[0] == self.name and not tag and self.own_sent:
            msg = self._own_message(counter, body)
        if msg is None:
            try:
                msg = decode_message_body(body, origin[0])
            except (RingWireError, UnicodeDecodeError):
                self.counters["undecodable_messages"] += 1
                return
        msg.site_id = site
        msg.seq = counter if tag else site_seq  # UNRELIABLE: its own sequence
        msg.lts = lts
        if self.trace_delivered is not None:
            self.trace_delivered.append((origin[0], origin[1], tag + str(counter) if tag
                                         else counter))
        self.counters["unreliable_delivered" if tag else "messages_delivered"] += 1
        self.deliver_to(msg)


class Link(abc.ABC):
    """The LINK level's interface (thesis 7.3.1): reliability and flow control for packets
    between daemons. Spread has two link protocols, RING for a multicast domain (one site:
    RingLink) and HOP for point-to-point connections between sites (HopLink, to come); both
    sit between the same Transport above and Routing beside them. What the layers around a
    link use, and every link implements:

      upper            the Transport: the link pulls pieces of messages from it when it may
                       send (next_piece_bytes / take_piece, packed by fill_packet) and hands
                       their chunks up into the site stream it feeds, in the link's own order
                       (link_chunk, link_gap)
      routing          the Routing that names the links a packet it carried goes on to
      feed(state, upto, allow_gaps)   hand packets up to the transport in link order (and
                       give them to the links Routing names)
      garbage_collect(state)          forget packets every receiver holds
      retransmit_if_due(now)          the link's own timer: send again what may be lost
      evidence(link_seq)              a sign of life from the peers
      forward(packet)                 carry a packet another link brought in (Routing)

    `state` is the link's record of one configuration of its peers (for the ring: a _Ring).
    How a link decides when it may send (the ring: the token) is its own affair."""

    upper: "Transport"
    routing: "Optional[Routing]" = None

    @abc.abstractmethod
    def feed(self, state: object, upto: int, allow_gaps: bool = False) -> None:
        """Hand packets up to the transport in link order, up to `upto`."""

    @abc.abstractmethod
    def garbage_collect(self, state: object) -> None:
        """Forget the packets that every receiver holds."""

    @abc.abstractmethod
    def retransmit_if_due(self, now: float) -> None:
        """Send again what may have been lost, when the link's timer says so."""

    @abc.abstractmethod
    def evidence(self, link_seq: int) -> None:
        """A packet from the peers with this link_seq came in: a sign of life."""

    @abc.abstractmethod
    def forward(self, packet: "RingData") -> None:
        """Carry a packet that came in on another link (Routing.onward named this one)."""

    def fill_packet(self, stamp: RingToken, limit: int,
                    next_piece_bytes: Callable[[int], Optional[int]],
                    take_piece: Callable[[RingToken, int], RingChunk],
                    take_whole: Optional[Callable] = None) -> List[RingChunk]:
        """Chunks for one packet of at most `limit` payload bytes, from the transport's queue
        (next_piece_bytes, take_piece; `stamp` gives a new message its site_seq and lts). A
        small message is never split: if it does not fit what is left, it starts the next
        packet. take_whole (Transport.take_whole), if given, takes the run of messages that
        go whole in one call: the same chunks, fewer calls per message."""
        piece_bytes = max(1, limit - CHUNK_HEADER_BYTES)
        chunks = []
        room = limit
        while len(chunks) < MAX_CHUNKS_PER_PACKET:
            if take_whole is not None:
                before = len(chunks)
                room = take_whole(stamp, piece_bytes, room, chunks, MAX_CHUNKS_PER_PACKET)
                if len(chunks) > before and (room <= CHUNK_HEADER_BYTES
                                             or len(chunks) >= MAX_CHUNKS_PER_PACKET):
                    break
            size = next_piece_bytes(piece_bytes)
            if size is None or (chunks and CHUNK_HEADER_BYTES + size > room):
                break
            chunk = take_piece(stamp, piece_bytes)
            chunks.append(chunk)
            room -= CHUNK_HEADER_BYTES + len(chunk.body)
            if room <= CHUNK_HEADER_BYTES:
                break
        return chunks



class Routing:
    """ROUTING (thesis 7.3.1): which links a packet goes out on. Each site builds its own
    dissemination tree over its links (7.3.2: shortest paths over static weights, pruned to
    the sites with interested members), and a packet never goes back on the link it came in
    on. With one ring and no HOP link the answer is trivial: a packet of our site that came
    in on the ring goes nowhere else. But every packet the ring hands up asks (Link.feed), so
    a HopLink added beside the ring (add_link) gets the packets its sites need."""

    def __init__(self, site_id: int = 0) -> None:
        self.site_id = site_id  #: our own site
        self._links: "List[Tuple[Link, frozenset]]" = []  #: (link, the sites it leads to)
        self._onward: "Dict[int, Tuple[Link, ...]]" = {}  #: id(link) -> onward links (cached)

    def add_link(self, link: Link, sites: Iterable[int]) -> None:
        """A link, and the sites it leads to (a ring: our own; a HOP link: the sites behind it)."""
        self._links.append((link, frozenset(sites)))
        link.routing = self
        self._onward = {}

    def links(self) -> "List[Link]":
        return [link for link, _ in self._links]

    def link_to(self, site_id: int) -> "Optional[Link]":
        """The link that leads to a site (None: no route to it)."""
        for link, sites in self._links:
            if site_id in sites:
                return link
        return None

    def onward(self, came_on: Link) -> "Tuple[Link, ...]":
        """The links a packet that came in on `came_on` goes on to: every other link that
        leads to a site `came_on` does not (with one ring: none)."""
        key = id(came_on)
        links = self._onward.get(key)
        if links is None:
            behind = next((sites for link, sites in self._links if link is came_on), frozenset())
            links = self._onward[key] = tuple(
                link for link, sites in self._links if link is not came_on and sites - behind)
        return links


class RingLink(Link):
    """LINK level of the ring (thesis 7.3.2.2): how packets reach every daemon of the site
    reliably, in one order. It knows packets, link_seq, link_aru, the rtr list, flow control,
    packing and the token's passing; it knows nothing of service types or delivery. Above it
    is the Transport (`upper`), which it asks for pieces of messages to pack (next_piece_bytes,
    take_piece) and to which it hands packets' chunks in link_seq order (link_chunk, link_gap),
    and whose site_aru it puts on the token. The packets of several messages share one packet;
    a big message is cut into pieces (7.3.1: the link carries abstract objects in packets).
    Membership (which ring, RECOVERY) is the RingOrderer's: it gives the ring to every call.
    It implements the Link interface; the rest (the token's passing and holding, rtr, the
    aru rule, flow control) is the ring's own and only the RingOrderer calls it."""

    def __init__(self, me: Pid, settings: RingSettings, counters: collections.Counter,
                 send: Callable[[bytes, Pid], None], upper: Transport,
                 seal: Optional[RingSeal] = None,
                 send_all: Optional[Callable[[bytes, List[Pid]], None]] = None) -> None:
        self.me = me
        self.cfg = settings
        self.seal = seal or OPEN_SEAL  #: header and trailer of our packets (key, configuration)
        self.counters = counters
        self.send = send  # send(raw, dest_pid)
        self.send_all = send_all  # send_all(raw, members): one packet for all (IP multicast)
        self.upper = upper
        self.held_token: Optional[HeldToken] = None
        self.last_sent_token: Optional[SentToken] = None
        #: the last token we passed looked idle, so its first member may hold it (wake_holder)
        self.passed_idle = False
        self.wake_sent = False  #: we asked the holder for the token since our last visit
        self.wake_pending = False  #: the holder: a member asked; do not hold the next token
        #: this token visit runs the Accelerated Ring (begin_visit)
        self.accelerated = False
        #: new packets of this visit that go out after the token, at most trailing_max; empty
        #: between two inputs (pass_token sends them)
        self.trailing: "collections.deque[Tuple[bytes, List[Pid]]]" = collections.deque()
        self.trailing_max = 0

    def begin_visit(self, operational: bool) -> None:
        """A token visit starts. The Accelerated Ring runs in OPERATIONAL only (RingSettings):
        a RECOVERY visit sends its packets before the token, as the original ring does."""
        self.accelerated = operational and self.cfg.accelerated_ring
        self.trailing_max = self.cfg.accelerated_window_packets if self.accelerated else 0

    def broadcast_new(self, raw: bytes, members: List[Pid]) -> None:
        """A new packet of this visit: out now, or (accelerated) held back among the visit's
        last trailing_max, and the oldest held one goes out in its place."""
        if self.trailing_max <= 0:
            self.multicast(raw, members)
            return
        self.trailing.append((raw, members))
        if len(self.trailing) > self.trailing_max:
            self.multicast(*self.trailing.popleft())

    def send_trailing(self) -> None:
        """After the token: the visit's packets that waited for it, in link_seq order."""
        while self.trailing:
            self.multicast(*self.trailing.popleft())

    def multicast(self, raw: bytes, members: List[Pid]) -> None:
        # one output for all: the I/O loop sends it once by IP multicast where it can
        if self.send_all is not None:
            self.send_all(raw, members)
            return
        for pid in members:
            self.send(raw, pid)

    def answer_retransmissions(self, ring: _Ring, tok: RingToken) -> int:
        sent = 0
        still = []
        for seq in tok.rtr:
            p = ring.packets.get(seq)
            if p is None:
                still.append(seq)
                continue
            self.multicast(encode_ring_data(p, self.seal), ring.members)
            sent += 1
            self.counters["retransmissions_sent"] += 1
        tok.rtr = still
        return sent

    def flow_allowance(self, ring: _Ring, tok: RingToken, already_sent: int) -> int:
        """Send at most our personal window, and at most what the global window leaves after
        what the others sent in the last rotation (flow_control minus our own share)."""
        others = max(0, tok.flow_control - ring.my_last_sent)
        return max(0, min(self.cfg.personal_window_packets - already_sent,
                          self.cfg.global_window_packets - others - already_sent))

    def account_flow(self, ring: _Ring, tok: RingToken, sent: int) -> None:
        tok.flow_control = max(0, tok.flow_control - ring.my_last_sent) + sent
        ring.my_last_sent = sent

    def new_packet(self, ring: _Ring, tok: RingToken, chunks: Sequence[RingChunk] = (),
                   inner: Optional[RingData] = None) -> RingData:
        tok.link_seq += 1
        p = RingData(ring.ring_id, self.me, tok.link_seq, chunks, inner)
        ring.store(p)
        self.broadcast_new(encode_ring_data(p, self.seal), ring.members)
        self.counters["packets_sent"] += 1
        return p

    def send_new_packets(self, ring: _Ring, tok: RingToken, allowed: int) -> int:
        """Pack small messages several to a packet, fragment big ones (thesis 7.3.2)."""
        limit = self.payload_limit(ring)
        upper = self.upper
        sent = 0
        while sent < allowed:
            chunks = self.fill_packet(tok, limit, upper.next_piece_bytes, upper.take_piece,
                                      getattr(upper, "take_whole", None))
            if not chunks:
                break
            self.new_packet(ring, tok, chunks)
            sent += 1
        return sent

    def send_unreliable(self, ring: _Ring, tok: RingToken, allowed: int) -> List[RingUnreliable]:
        """UNRELIABLE pieces (7.3.3): packed like the others and sent by the token holder (so
        that flow control counts them), but outside the reliable link: no link_seq, not kept,
        never resent. Returns the packets, for our own delivery."""
        limit = self.payload_limit(ring)
        upper = self.upper
        packets = []
        while len(packets) < allowed:
            chunks = self.fill_packet(tok, limit, upper.next_unreliable_piece_bytes,
                                      upper.take_unreliable_piece)
            if not chunks:
                break
            p = RingUnreliable(ring.ring_id, self.me, chunks)
            self.multicast(encode_ring_unreliable(p, self.seal), ring.members)
            self.counters["unreliable_packets_sent"] += 1
            packets.append(p)
        return packets

    def payload_limit(self, ring: _Ring) -> int:
        """Chunk bytes (headers included) that fit one packet of at most max_packet_bytes, with
        room for the wrapping of a recovery resend. Worked out once per ring: it is asked at
        every token, and with a key encoding the empty packet costs a tag each time."""
        if not ring.payload_limit_bytes:
            dummy = RingData(ring.ring_id, self.me, 0, [])
            ring.payload_limit_bytes = (self.cfg.max_packet_bytes - RECOVERY_WRAP_BYTES
                                        - len(encode_ring_data(dummy, self.seal)))
        return ring.payload_limit_bytes

    def request_missing(self, ring: _Ring, tok: RingToken) -> None:
        """Ask for the packets we lack. Accelerated, only up to the token's link_seq when we
        passed it last: the packets after it were sent in this rotation and may still be on
        their way (the holders before us sent their last ones after the token)."""
        fits = (self.cfg.max_packet_bytes - TOKEN_FIXED_BYTES) // 8
        room = min(self.cfg.max_rtr_entries, fits) - len(tok.rtr)
        if room <= 0:
            return
        upto = min(ring.last_token_seq, tok.link_seq) if self.accelerated else tok.link_seq
        have = set(tok.rtr)
        for seq in ring.missing(upto, room):
            if seq not in have:
                tok.rtr.append(seq)
                self.counters["retransmissions_requested"] += 1

    def update_aru(self, ring: _Ring, tok: RingToken, my_site_aru: int) -> None:
        """The aru rule of 7.3.2.2 (Totem's): lower the token's aru to ours and sign it with
        site_aru_modifier; raise it only if we were the last to lower it (or nobody was). The
        link_aru and the site_aru (my_site_aru: what the transport has complete) move together."""
        if ring.my_aru < tok.link_aru:
            tok.link_aru, tok.site_aru, tok.site_aru_modifier = ring.my_aru, my_site_aru, self.me
        elif tok.site_aru_modifier in (None, self.me):
            tok.link_aru, tok.site_aru = ring.my_aru, my_site_aru
            tok.site_aru_modifier = None if ring.my_aru >= tok.link_seq else self.me
        # stable = what the token said on this visit and the last one (a full rotation)
        safe_link = min(tok.link_aru, ring.prev_link_aru)
        safe_lts = min(tok.site_aru, ring.prev_site_aru)
        ring.safe_link = max(ring.safe_link, safe_link)
        ring.safe_lts = max(ring.safe_lts, safe_lts)
        ring.prev_link_aru, ring.prev_site_aru = tok.link_aru, tok.site_aru

    def pass_token(self, ring: _Ring, tok: RingToken, now: float, may_hold: bool) -> None:
        """Pass the token to our successor, then send the visit's trailing packets (the
        Accelerated Ring); an idle representative (may_hold: nothing waits to be sent here)
        keeps it token_hold_s, and a ring of one keeps it until the next chance."""
        self._pass_or_hold(ring, tok, now, may_hold)
        self.send_trailing()

    def _pass_or_hold(self, ring: _Ring, tok: RingToken, now: float, may_hold: bool) -> None:
        tok.sender = self.me
        tok.token_id += 1
        ring.last_token_id = tok.token_id
        ring.last_token_seq = tok.link_seq
        nxt = _successor(ring.members, self.me)
        # idle: nothing sent in the last rotation, nothing missing, and no SAFE message that
        # was not stable here at our last visit already (so at every member by now): a SAFE
        # message waits for the aru of two visits at each daemon, and a held token would make
        # it, and a sender waiting for it, wait token_hold_s
        safe_waiting = ring.safe_seen_lts > ring.safe_lts_last_visit
        ring.safe_lts_last_visit = ring.safe_lts
        quiet = tok.flow_control == 0 and not tok.rtr and tok.link_aru == tok.link_seq
        idle = may_hold and quiet and not safe_waiting and not self.wake_pending
        self.wake_pending = False
        self.passed_idle = quiet
        self.wake_sent = False
        if idle and ring.members[0] == self.me:
            self.held_token = HeldToken(ring, tok, nxt, now + self.cfg.token_hold_s)
            return
        if nxt == self.me:  # a ring of one: the token comes straight back at the next chance
            self.held_token = HeldToken(ring, tok, nxt, now)
            return
        self.pass_raw(encode_ring_token(tok, self.seal), nxt, tok.link_seq, now)

    def pass_raw(self, raw: bytes, nxt: Pid, link_seq: int, now: float) -> None:
        """Send a token (or commit token) and keep it to resend until a sign of life."""
        self.send(raw, nxt)
        self.last_sent_token = SentToken(raw, nxt, now + self.cfg.token_retransmit_s,
                                         self.cfg.token_retransmits_max, link_seq)

    def retransmit_if_due(self, now: float) -> None:
        """The token we passed, again, until a sign of life (or token_retransmits_max)."""
        last = self.last_sent_token
        if last is None or now < last.retransmit_at:
            return
        if last.retransmits_left <= 0:
            self.last_sent_token = None
            return
        self.send(last.raw, last.dest)
        last.retransmit_at = now + self.cfg.token_retransmit_s
        last.retransmits_left -= 1
        self.counters["token_retransmissions"] += 1

    def evidence(self, link_seq: int) -> None:
        """A packet sent after we passed the token shows that the token got through."""
        last = self.last_sent_token
        if last is not None and last.link_seq is not None and link_seq > last.link_seq:
            self.last_sent_token = None

    def garbage_collect(self, ring: _Ring) -> None:
        upto = min(ring.safe_link, ring.fed_upto)
        for seq in range(ring.gc_upto + 1, upto + 1):
            ring.packets.pop(seq, None)
        ring.gc_upto = max(ring.gc_upto, upto)

    def forward(self, packet: RingData) -> None:
        # A ring's packets are sent only by its token holder, each with the next link_seq:
        # another link's packet would reach the ring through the transport, as a message
        raise RingUsageError("the ring does not carry other links' packets; Routing.onward "
                             "never names the ring for them")

    def feed(self, ring: _Ring, upto: int, allow_gaps: bool = False, at_once: bool = True) -> None:
        """Hand packets' chunks up to the transport in link_seq order (the site's order); with
        allow_gaps (closing a configuration) a run of missing packets is handed up as ONE gap:
        drain treats everything after a gap alike, and one marker per missing link_seq would
        loop for ever on a far link_seq (a stray packet's, or a commit entry's old_high).
        at_once: the caller runs deliver_ready() right after (a whole message may be delivered
        as it is handed up); not so for the closing feed, nor for the holder's own packets
        handed up before it passes the token."""
        upper = self.upper
        stream = ring.stream
        onward = self.routing.onward(self) if self.routing is not None else ()
        hand_up = upper.link_chunk if allow_gaps or not at_once else getattr(
            upper, "link_chunk_at_once", upper.link_chunk)
        seq = ring.fed_upto + 1
        while seq <= upto:
            p = ring.packets.get(seq)
            if p is None:
                if not allow_gaps:
                    break
                upper.link_gap(stream, seq)
                seq = min([s for s in ring.packets if seq < s <= upto] or [upto + 1])
                ring.fed_upto = seq - 1
                continue
            elif p.inner is None:
                for c in p.chunks:
                    hand_up(stream, p.sender, c)
                    if c.service & SAFE_MESS and c.lts > ring.safe_seen_lts:
                        ring.safe_seen_lts = c.lts
                for link in onward:
                    link.forward(p)
            ring.fed_upto = seq
            seq += 1


def _successor(members: List[Pid], me: Pid) -> Pid:
    i = members.index(me)
    return members[(i + 1) % len(members)]


def _predecessor(members: List[Pid], me: Pid) -> Pid:
    i = members.index(me)
    return members[i - 1]


def _next_piece_bytes(in_progress: Optional[MessageInProgress], queue: collections.deque,
                      piece_bytes: int) -> Optional[int]:
    """Size of the next piece: the rest of the message in progress (a piece at most), else the
    first piece of the next queued message; None when there is nothing to send."""
    if in_progress is not None:
        return in_progress.next_piece_bytes()
    if queue:
        return min(len(queue[0][1]), piece_bytes)
    return None


def _cut_piece(ip: MessageInProgress) -> RingChunk:
    """The next fragment of a message in progress, as a RingChunk; moves next_frag on."""
    offset = ip.next_frag * ip.piece_bytes
    chunk = RingChunk(ip.counter, ip.lts, ip.site_seq, ip.next_frag, ip.frag_count,
                      ip.msg.service_type, ip.body[offset:offset + ip.piece_bytes])
    ip.next_frag += 1
    return chunk


class RingOrderer:
    """One daemon's RING protocol engine (sans-I/O), an Orderer for several daemons:

        orderer = RingOrderer("d1", incarnation, ["d1", "d2", "d3"], random.Random(7))
        orderer.submit(msg)                  # a DaemonMessage from this daemon's sessions
        orderer.receive(datagram, src, now)  # a daemon-daemon datagram
        orderer.tick(now)                    # time passes (timers are deadlines against now)
        orderer.poll()                       # Send / SendToAll / Deliver / ConfigurationChange

    Thesis 7.3.2.2 (the RING, a descendant of Totem: Amir, Moser, Melliar-Smith, Agarwal,
    Ciarfella, ACM TOCS 1995): a token circulates on a logical ring of the daemons that are up
    and only its holder sends; the token's link_seq gives every packet its place in one total
    order, link_aru/site_aru tell what everybody has, rtr asks for lost packets, flow_control
    limits each rotation. Thesis 7.3.3: messages are delivered in that order by service type.
    Membership (Totem's): OPERATIONAL -> GATHER (join messages until the daemons agree on who
    is up) -> COMMIT (a commit token collects what every member has of its old ring) ->
    RECOVERY (the new ring resends old messages that members lack) -> OPERATIONAL, giving
    extended virtual synchrony (Moser et al. 1994): a TRANSITIONAL configuration, then the
    REGULAR one. tests/ring_sim.py runs it under a deterministic simulator with checkers.

    The orderer is the coordinator of the network layer's parts (thesis 7.3.1): membership
    (here: GATHER, COMMIT, RECOVERY, OPERATIONAL, the commit token, merges; a decoded packet
    goes to the handler that DISPATCH names for the state and the packet type), one LINK
    (`self.link`, a RingLink with a _Ring per ring: packets, token, rtr, flow control,
    packing), ROUTING (`self.routing`: which links a packet goes on to) and the TRANSPORT
    (`self.transport`: send queue, lts, assembly, merge of the sites' streams, delivery by
    service type, SAFE). On a token visit it calls the link, which pulls pieces of messages
    from the transport; on new packets the link hands chunks up to the transport. Callers
    read the queue and the Lamport clock on `orderer.transport`, the token on `orderer.link`."""

    def __init__(self, name: str, incarnation: int, peers: Iterable[str],
                 rng: Optional[random.Random] = None, settings: Optional[RingSettings] = None,
                 now: float = 0.0, seal: Optional[RingSeal] = None) -> None:
        if not name or len(name.encode("utf-8")) > MAX_NAME_BYTES:
            raise RingUsageError("daemon name must be 1..%d bytes" % MAX_NAME_BYTES)
        self.me = (name, int(incarnation))
        self.peers = [p for p in peers if p != name]
        #: the daemons spread.conf names, us included (a packet "from us" is another process
        #: with our name: _newer_incarnation_of_me)
        self.configured_names = frozenset(self.peers) | {name}
        self.rng = rng or random.Random(0)
        self.cfg = settings or RingSettings()
        #: our key and configuration stamp: what our packets carry, what theirs must carry
        self.seal = seal or OPEN_SEAL
        #: peer (sender name, or source address) -> when its "different configuration" line
        #: may be logged again
        self.other_configuration_log_at = {}
        self.now = now
        self.outputs = []
        #: _send_all's last (members list, me, daemon names but ours): a ring's packets reuse it
        self._dests_of: Tuple[object, object, Tuple[str, ...]] = (None, None, ())
        self.log = collections.deque(maxlen=self.cfg.max_log_lines)
        self.counters = collections.Counter()
        self.state = None
        self.state_since = now
        #: when we last left OPERATIONAL (our ring broke, or a join came): every message of
        #: that ring was sent by then, though the next ring's recovery delivers what is left
        #: of it up to token_timeout_s + consensus_timeout_s later (the sites' gateway dates
        #: the records in it by this: SiteGateway._delivered_at_s)
        self.left_ring_s: Optional[float] = None
        self.known_incarnation = {name: self.me[1]}
        #: daemon name -> when a packet of its current incarnation last came in
        self.heard_at = {}
        #: daemon name -> (older incarnation, since when its packets are dropped as superseded)
        self.superseded_since = {}
        self.ring_seq = 0  # highest ring seq this daemon has committed to
        self.transport = Transport(name, self.cfg, self.counters, self._output_delivery)
        self.link = RingLink(self.me, self.cfg, self.counters, self._send, self.transport, self.seal,
                             self._send_all)
        #: which links a packet goes out on: today the ring alone (HOP links come beside it)
        self.routing = Routing(LOCAL_SITE)
        self.routing.add_link(self.link, (LOCAL_SITE,))
        # the "old ring" of a fresh daemon: just itself, no messages
        self.ring = self._open_ring((0, name, self.me[1]), [self.me], 0)
        self.transport.install(self.ring.stream)
        self.had_regular = False
        self.new_ring = None
        self.recovery = None
        self.token_deadline = None
        self.proc_set = set()
        self.fail_set = set()
        self.joins: Dict[Pid, JoinSeen] = {}  #: GATHER: each peer's last join
        self.consensus_deadline = None
        self.next_join_at = None
        self.commit = None
        self.commit_token_id = -1
        self.next_merge_detect = None
        self.change_reason = "startup"
        self.rotations = 0
        self.recent_changes = collections.deque(maxlen=5)  # (time, ring, members, reason)
        self.startup_alone_after = now + self.cfg.consensus_timeout_s
        self.incarnation_bumps = 0  #: times we took a newer incarnation (clock went back)
        self.unreliable_turn = False  #: a visit allowed one packet: UNRELIABLE's turn (alternates)
        self.incarnation_notice_at = {}  # daemon name -> when we last told it its incarnation
        self.bump_refused_log_at = None  # next time the "same name twice" error may be logged
        #: daemon name -> (incarnation that announced it leaves, until when): that process sends
        #: nothing more, so whatever still comes from it is late (a delayed join must not bring
        #: it back); forgotten after LEAVE_REMEMBER_S
        self.departed = {}
        self.leave_packet = None  #: our own LEAVE, once leave() was called
        self.leave_copies_left = 0
        self.next_leave_copy_at = None
        self._enter_gather("startup", extra=())

    # ---------------------------------------------------------------- public interface

    def withdraw_queued(self, kinds: Container[str]) -> List[DaemonMessage]:
        """The queued messages of these kinds that no packet carries yet, taken back in their
        order (Transport.withdraw)."""
        taken = self.transport.withdraw(kinds)
        self.counters["messages_withdrawn"] += len(taken)
        return taken

    def submit(self, msg: DaemonMessage, urgent: bool = False) -> bool:
        """Queue a message from this daemon's sessions; False if the queue is full (only data
        is ever refused: Transport.submit). An urgent message goes to the front of the queue,
        behind only a message whose fragments are already being sent (and earlier urgent ones):
        the group state exchange sends its STATE message so."""
        if self.state == LEFT:
            self.counters["submit_refused_after_leave"] += 1
            return False
        if not self.transport.submit(msg, urgent):
            return False
        if self.link.held_token is not None:
            self._release_held_token()
        else:
            self._wake_holder()
        return True

    def _wake_holder(self) -> None:
        """An idle ring's token rests token_hold_s at its first member, and a message
        submitted at another daemon would wait for it (at a site, the wide-area latency's
        tail). So when the last token we passed looked idle, one MERGE of our own ring goes
        to the first member per token visit: it passes the token at once (_on_merge)."""
        ring, link = self.ring, self.link
        if (self.state != OPERATIONAL or ring is None or not link.passed_idle or link.wake_sent
                or ring.members[0] == self.me):
            return
        link.wake_sent = True
        self.outputs.append(Send(encode_ring_merge(RingMerge(self.me, ring.ring_id), self.seal),
                                 ring.members[0][0]))
        self.counters["token_wakes_sent"] += 1

    def receive(self, packet: bytes, src: object, now: float) -> None:
        self.now = now
        if self.state == LEFT:  # we said we leave: nothing the others send concerns us now
            self.counters["dropped_after_we_left"] += 1
            return
        try:
            p = decode_ring_packet(packet, self.seal)
        except RingConfigurationError as e:
            # started from another spread.conf: never a member of our ring, whatever it sends
            self.counters["dropped_different_configuration"] += 1
            self._log_other_configuration(src, e)
            return
        except RingWireError as e:
            self.counters["dropped_" + e.reason] += 1
            self._log("dropped a packet from %s: %s" % (_src_str(src), e))
            return
        sender = p.sender
        if sender[0] not in self.configured_names:
            # a daemon that spread.conf does not name (another team's, at a configured address):
            # we could not even send to it, and its joins would make our ring gather again
            self.counters["dropped_unknown_daemon"] += 1
            return
        known = self.known_incarnation.get(sender[0])
        if known is not None and sender[1] < known and not self._newer_was_never_there(sender):
            self.counters["dropped_old_incarnation"] += 1
            self._send_incarnation_notice(sender)
            return
        self.heard_at[sender[0]] = now  # a current incarnation (or current again)
        # a data packet can name us only as its sender or its ring's representative
        if p.__class__ is not RingData or sender[0] == self.me[0] or p.ring_id[1] == self.me[0]:
            newer = self._newer_incarnation_of_me(p)
            if newer is not None and self._take_newer_incarnation(*newer):
                return  # the packet was for our old incarnation
        if sender[0] == self.me[0]:
            # another process with our name (its incarnation is newer, and we stopped changing
            # ours: two daemons run as one name). Taken as a peer's, its packets would supersede
            # our own incarnation and leave us out of our own ring
            self.counters["dropped_other_process_with_our_name"] += 1
            return
        if sender[0] in self.departed and self._departed(sender) and not isinstance(p, RingData):
            # sent before its LEAVE, arriving after it (a late join would bring it back into a
            # gather). Its data packets still help the recovery of the old ring, like a crashed
            # daemon's late ones; they cannot start a membership change.
            self.counters["duplicate_leaves" if isinstance(p, RingLeave)
                          else "dropped_late_from_departed"] += 1
            return
        self.DISPATCH[self.state, p.ptype](self, p)

    def tick(self, now: float) -> None:
        self.now = now
        if self.state == LEFT:
            if self.leave_copies_left and now >= self.next_leave_copy_at:
                self._send_leave_copy()
            return
        held = self.link.held_token
        if held is not None and now >= held.until:
            self._release_held_token()
        self.link.retransmit_if_due(now)
        self.transport.expire_unreliable(now)
        if self.state in (OPERATIONAL, RECOVERY, COMMIT) and self.token_deadline is not None \
                and now >= self.token_deadline:
            what = "commit token" if self.state == COMMIT else "token"
            self.counters["token_loss"] += 1
            self._enter_gather("%s lost (nothing for %.2f s)" % (what, self.cfg.token_timeout_s))
        if self.state == GATHER:
            self._gather_timers()
        if self.state == OPERATIONAL and self.ring.members[0] == self.me \
                and now >= self.next_merge_detect:
            self._send_merge_detect()

    def poll(self) -> list:
        out, self.outputs = self.outputs, []
        return out

    def leave(self, reason: str, now: float) -> None:
        """This daemon is being stopped cleanly (its operator pressed Ctrl-C): tell the others,
        so that they form a new ring at once instead of waiting for token loss (token_timeout_s)
        and a consensus timeout; then send nothing more (state LEFT). The others treat us as
        crashed in every other respect: we are not in their transitional configuration, and
        what we sent and they have is delivered or not exactly as after a crash (EVS). The
        first LEAVE goes now, LEAVE_COPIES - 1 more on later ticks (see `leaving`)."""
        self.now = now
        if self.state == LEFT:
            return
        error = leave_reason_error(reason)
        if error is not None:
            raise RingUsageError(error)
        self.leave_packet = encode_ring_leave(RingLeave(self.me, self.ring.ring_id, reason), self.seal)
        self.leave_copies_left = LEAVE_COPIES
        self._enter_left(reason)
        self._send_leave_copy()

    @property
    def leaving(self) -> bool:
        return self.state == LEFT and self.leave_copies_left > 0

    def backlog(self) -> Backlog:
        """What waits for the token (the daemon's flow control towards its clients)."""
        t = self.transport
        return Backlog(len(t.pending), t.pending_bytes, self.counters["submit_refused_queue_full"],
                       self.cfg.max_pending_messages)

    def snapshot(self) -> dict:
        """Plain data for the status table."""
        ring = self.ring
        return {
            "name": self.me[0], "incarnation": self.me[1], "state": self.state,
            "ring_id": ring.ring_id, "members": [p[0] for p in ring.members],
            "my_aru": ring.my_aru, "high_seq": ring.high_seq,
            "pending": len(self.transport.pending),
            "rotations": self.rotations, "counters": dict(self.counters),
            "global_window_packets": self.cfg.global_window_packets,
            "personal_window_packets": self.cfg.personal_window_packets,
            "accelerated_window_packets": (self.cfg.accelerated_window_packets
                                           if self.cfg.accelerated_ring else None),
            "max_packet_bytes": self.cfg.max_packet_bytes,
            "last_change_reason": self.change_reason,
            "recent_changes": list(self.recent_changes), "now": self.now,
            "keyed": bool(self.seal.key),
        }

    # ---------------------------------------------------------------- helpers

    def _log_other_configuration(self, src: object, e: RingConfigurationError) -> None:
        """Once per peer at once, then at most once a minute: the operator must fix a file, and
        a line a second would drown everything else."""
        peer = e.sender[0]
        when = self.other_configuration_log_at.get(peer)
        if when is not None and self.now < when:
            return
        if when is None and len(self.other_configuration_log_at) >= OTHER_CONFIGURATION_PEERS_MAX:
            return  # (a flood of forged names: counted, not logged)
        self.other_configuration_log_at[peer] = self.now + OTHER_CONFIGURATION_LOG_EVERY_S
        self._log("packets from %s at %s come from a different configuration: %s. Dropped: they "
                  "never change our ring (%d so far; the spread.conf files must be the same on "
                  "every daemon)" % (peer, _src_str(src), stamp_difference(e.stamp, self.seal.stamp),
                                     self.counters["dropped_different_configuration"]))

    def _log(self, text: str) -> None:
        self.log.append("%.3f %s %s" % (self.now, self.me[0], text))

    def _send(self, raw: bytes, dest_pid: Pid) -> None:
        if dest_pid == self.me:
            return
        self.outputs.append(Send(raw, dest_pid[0]))

    def _send_all(self, raw: bytes, members: List[Pid]) -> None:
        cached = self._dests_of
        if cached[0] is members and cached[1] == self.me:  # the same ring's packets, one by one
            dests = cached[2]
        else:
            me = self.me
            dests = tuple(pid[0] for pid in members if pid != me)
            self._dests_of = (members, me, dests)
        if dests:
            self.outputs.append(SendToAll(raw, dests))

    def _output_delivery(self, msg: DaemonMessage) -> None:
        self.outputs.append(Deliver(msg))

    def _open_ring(self, ring_id: RingId, members: List[Pid], start_lts: int) -> _Ring:
        """A ring's link state, feeding a new stream of the local site in the transport."""
        stream = self.transport.open_stream(LOCAL_SITE, start_lts)
        return _Ring(ring_id, members, start_lts, stream)

    def _superseded(self, pid: Pid) -> bool:
        known = self.known_incarnation.get(pid[0])
        return known is not None and pid[1] < known

    def _newer_was_never_there(self, older: Pid) -> bool:
        """True (and `older` is current again) if the newer incarnation that supersedes it has
        been silent for INCARNATION_FORGET_S while `older` kept sending (see there)."""
        name = older[0]
        if name == self.me[0]:
            return False  # our own: we know which incarnation is current
        since = self.superseded_since.get(name)
        if since is None or since[0] != older[1]:
            self.superseded_since[name] = (older[1], self.now)
            return False
        silent_s = self.now - self.heard_at.get(name, self.state_since)
        if silent_s < INCARNATION_FORGET_S or self.now - since[1] < INCARNATION_FORGET_S / 2:
            return False
        newer = self.known_incarnation[name]
        self.known_incarnation[name] = older[1]
        del self.superseded_since[name]
        self.counters["incarnations_forgotten"] += 1
        self._log("%s#%d has sent nothing for %.1f s while %s keeps sending: it was never a "
                  "process (a forged or mangled packet named it); %s is current again"
                  % (name, newer % 10000, silent_s, _pid_str(older), _pid_str(older)))
        return True

    def _note_incarnation(self, pid: Pid) -> Optional[Pid]:
        """A daemon with a newer incarnation restarted: its old incarnation is gone."""
        known = self.known_incarnation.get(pid[0])
        if known is None or pid[1] > known:
            self.known_incarnation[pid[0]] = pid[1]
            if known is not None:
                return (pid[0], known)
        return None

    # ---------------------------------------------------------------- our own incarnation

    def _send_incarnation_notice(self, stale: Pid) -> None:
        """A packet from an incarnation older than the one we know: perhaps a daemon restarted
        after its clock went back, which would be ignored forever. Tell it which incarnation we
        know (even when OPERATIONAL: nothing else we send it names it). Harmless to the current
        incarnation: a merge with ring seq 0 names no ring, and it knows its own incarnation."""
        name = stale[0]
        if name == self.me[0] or name not in self.peers:
            return
        last = self.incarnation_notice_at.get(name)
        if last is not None and self.now < last + INCARNATION_NOTICE_EVERY_S:
            return
        self.incarnation_notice_at[name] = self.now
        known = self.known_incarnation[name]
        self.outputs.append(Send(encode_ring_merge(RingMerge(self.me, (0, name, known)), self.seal),
                                 name))
        self.counters["incarnation_notices_sent"] += 1
        if self.counters["incarnation_notices_sent"] % 50 == 1:
            self._log("packets from %s#%d, older than the incarnation we know (%d): told it"
                      % (name, stale[1], known))

    def _newer_incarnation_of_me(self, p: RingPacket) -> Optional[Tuple[int, str]]:
        """(incarnation, why) if packet p shows that its sender knows our name with a higher
        incarnation than ours, else None. Data packets and tokens only name a ring and their
        sender; joins and commit tokens name every member."""
        name, mine = self.me
        found = []
        if p.sender[0] == name and p.sender[1] > mine:
            found.append((p.sender[1], "a daemon sends as %s" % _pid_str(p.sender)))
        ring_id = getattr(p, "ring_id", None)
        if ring_id is not None and ring_id[1] == name and ring_id[2] > mine:
            what = "an incarnation notice" if ring_id[0] == 0 else "ring %s" % _ring_str(ring_id)
            found.append((ring_id[2], "%s from %s names %s#%d" % (what, p.sender[0], name, ring_id[2])))
        if isinstance(p, (RingJoin, RingCommit)):
            named = list(p.proc_set) + list(p.fail_set) if isinstance(p, RingJoin) else p.members
            kind = "join" if isinstance(p, RingJoin) else "commit token"
            for pid in named:
                if pid[0] == name and pid[1] > mine:
                    found.append((pid[1], "the %s of %s names %s#%d" % (kind, p.sender[0], name, pid[1])))
        elif isinstance(p, RingToken):
            mod = p.site_aru_modifier
            if mod is not None and mod[0] == name and mod[1] > mine:
                found.append((mod[1], "the token of %s names %s#%d" % (p.sender[0], name, mod[1])))
        return max(found) if found else None

    def _take_newer_incarnation(self, seen: int, why: str) -> bool:
        """The others know our name with incarnation `seen` > ours (our start time in ms: the
        clock went back since that daemon ran) and ignore us. Take an incarnation above it and
        gather again, like a restart. The old ring stays as it is, so the daemons that move with
        us from it still recover its messages together. True if we changed."""
        name, old = self.me
        if seen + 1 + INCARNATION_BUMP_SPREAD_MS > MAX_WIRE_COUNTER:
            # the others' decoders would refuse every packet of ours: we would be cut off for
            # good (a forged join naming us with 2**53 did that). No daemon started that late.
            self.counters["newer_incarnation_beyond_wire_limit"] += 1
            if self.counters["newer_incarnation_beyond_wire_limit"] % 100 == 1:
                self._log("%s: beyond what the wire carries (%d); not a daemon's start time, "
                          "ignored (keeping incarnation %d)" % (why, MAX_WIRE_COUNTER, old))
            return False
        if self.incarnation_bumps >= INCARNATION_BUMPS_MAX:
            self.counters["newer_incarnation_ignored"] += 1
            if self.bump_refused_log_at is None or self.now >= self.bump_refused_log_at:
                self.bump_refused_log_at = self.now + 10.0
                self._log("ERROR: %s; we changed our incarnation %d times already: two daemons "
                          "are probably running with the same name %s (check --name and the "
                          "configuration on every machine). Keeping incarnation %d"
                          % (why, self.incarnation_bumps, name, old))
            return False
        self.incarnation_bumps += 1
        self.counters["incarnation_bumps"] += 1
        self.me = (name, seen + 1 + self.rng.randrange(INCARNATION_BUMP_SPREAD_MS))
        self.link.me = self.me  # the link signs tokens and packets with it
        self.known_incarnation[name] = self.me[1]
        if self.ring.ring_id[0] == 0:  # never in a ring: the pseudo-ring of a fresh daemon
            self.ring = self._open_ring((0, name, self.me[1]), [self.me], 0)
            self.transport.install(self.ring.stream)
        self.startup_alone_after = self.now + self.cfg.consensus_timeout_s
        self._log("incarnation %d is older than what the others know (%s): was the clock set "
                  "back? Taking incarnation %d (change %d of at most %d)"
                  % (old, why, self.me[1], self.incarnation_bumps, INCARNATION_BUMPS_MAX))
        self._enter_gather("new incarnation %s: ours was older than the others knew"
                           % _pid_str(self.me))
        return True

    def _set_state(self, state: str, reason: str) -> None:
        if state not in TRANSITIONS[self.state]:
            raise AssertionError("illegal state change %s -> %s (%s)" % (self.state, state, reason))
        if self.state != state:
            self.counters["enter_" + state.lower()] += 1
        self._log("%s -> %s: %s" % (self.state or "(new daemon)", state, reason))
        if self.state == OPERATIONAL and state != OPERATIONAL:
            self.left_ring_s = self.now
        self.state = state
        self.state_since = self.now

    def _successor(self, members: List[Pid]) -> Pid:
        return _successor(members, self.me)

    # ---------------------------------------------------------------- state: GATHER

    def _enter_gather(self, reason: str, extra: Iterable[Pid] = (),
                      failed: Iterable[Pid] = ()) -> None:
        """Start (or restart) forming a ring: propose the members we know, wait for agreement.
        `failed`: daemons known to be gone (they said they leave): in the fail set from the
        start, so nobody waits a consensus timeout for them."""
        if self.state == GATHER:  # gathering again from scratch (our incarnation changed)
            self._log("GATHER again: %s" % reason)
        else:
            self._set_state(GATHER, reason)
        self.change_reason = reason
        self.counters["membership_changes_started"] += 1
        self.proc_set = set(self.ring.members) | {self.me} | set(extra)
        self.proc_set = {p for p in self.proc_set if not self._superseded(p)}
        self.fail_set = set(failed)
        self.proc_set |= self.fail_set  # (Totem: the fail set is part of the proc set)
        self.joins = {}
        self.commit = None
        self.new_ring = None
        self.recovery = None
        self.link.held_token = None
        self.link.last_sent_token = None
        self.token_deadline = None
        self.consensus_deadline = self.now + self.cfg.consensus_timeout_s
        self._requeue_partial_message()
        self._send_join()
        self._check_consensus()

    def _requeue_partial_message(self) -> None:
        self.transport.requeue_partial()

    def _send_join(self) -> None:
        self.next_join_at = self.now + self.cfg.join_interval_s
        j = RingJoin(self.me, self.ring_seq, self.proc_set, self.fail_set)
        raw = encode_ring_join(j, self.seal)
        for name in self.peers:  # every configured daemon: that is how newcomers find us
            self.outputs.append(Send(raw, name))
        self.counters["joins_sent"] += 1

    def _gather_timers(self) -> None:
        if self.now >= self.consensus_deadline:
            active = self.proc_set - self.fail_set
            mine = (frozenset(self.proc_set), frozenset(self.fail_set))
            silent = {p for p in active if p != self.me and not self._agrees(p, mine)}
            if silent:
                self.fail_set |= silent
                self.counters["consensus_timeouts"] += 1
                self._log("consensus timeout: leaving out %s" % _ring_names(silent))
            self.joins = {}  # peers must show again that they are alive
            self.consensus_deadline = self.now + self.cfg.consensus_timeout_s
            self._send_join()
            self._check_consensus()
        elif self.now >= self.next_join_at:
            self._send_join()

    def _join_is_stale(self, j: RingJoin, ring: _Ring) -> bool:
        # a member of `ring` committed to it, so its ring_seq is at least ring's seq; a join with
        # a smaller ring_seq was sent before and arrives late
        return j.sender in ring.members and j.ring_seq < ring.ring_id[0]

    def _join_admitted(self, j: RingJoin) -> bool:
        """Every join is counted; one naming a ring seq far beyond ours is refused (it would
        make every later ring seq jump there)."""
        self.counters["joins_received"] += 1
        if j.ring_seq > self.ring_seq + RING_SEQ_AHEAD_MAX:
            self.counters["dropped_ring_seq_far_ahead"] += 1
            return False
        return True

    def _join_in_operational(self, j: RingJoin) -> None:
        if not self._join_admitted(j):
            return
        old = self._note_incarnation(j.sender)
        if self._join_is_stale(j, self.ring):
            self.counters["stale_joins"] += 1
            return
        if j.sender not in self.ring.members and set(j.fail_set) & set(self.ring.members):
            # a daemon from outside that leaves some of us out (stale knowledge of an earlier
            # gather): taking its fail set would break our ring and exclusions would chase
            # each other round the daemons forever. It forms its own ring; the merge
            # detection joins the rings later with fresh fail sets.
            self.counters["joins_ignored_excluding_us"] += 1
            return
        self._enter_gather("join from %s" % j.sender[0], extra=(j.sender,))
        self._gather_join(j, old)

    def _join_while_forming(self, j: RingJoin) -> None:
        """COMMIT and RECOVERY: a member of the ring being formed that gathers again, or one
        that restarted, sends us back to GATHER; any other join waits for the new ring."""
        if not self._join_admitted(j):
            return
        old = self._note_incarnation(j.sender)
        target = self.new_ring if self.state == RECOVERY else self.commit
        members = target.members
        if j.sender in members and j.ring_seq >= target.ring_id[0]:
            self._enter_gather("%s went back to gather" % j.sender[0], extra=(j.sender,))
        elif old is not None and (old in members):
            self._enter_gather("%s restarted" % j.sender[0], extra=(j.sender,))
        else:
            return
        self._gather_join(j, old)

    def _join_in_gather(self, j: RingJoin) -> None:
        if not self._join_admitted(j):
            return
        self._gather_join(j, self._note_incarnation(j.sender))

    def _gather_join(self, j: RingJoin, old: "Optional[Pid]") -> None:
        """GATHER (Totem): merge the join's sets into ours; consensus when every active
        daemon proposes the same sets. `old`: the sender's previous incarnation, if it
        restarted."""
        if old is not None:
            self.fail_set.add(old)
        if j.sender in self.fail_set or self._join_is_stale(j, self.ring):
            return
        self._merge_sets(j)
        self.joins[j.sender] = JoinSeen(frozenset(j.proc_set), frozenset(j.fail_set), j.ring_seq)
        self._check_consensus()

    def _merge_sets(self, j: RingJoin) -> None:
        before = (set(self.proc_set), set(self.fail_set))
        if self.me in j.fail_set:
            self.fail_set.add(j.sender)  # it cannot hear us: we cannot be in one ring
        else:
            self.proc_set |= {p for p in j.proc_set if not self._superseded(p)}
            self.proc_set.add(j.sender)
            self.fail_set |= set(j.fail_set)
        for p in list(self.proc_set):
            if self._superseded(p):
                self.fail_set.add(p)
        self.proc_set |= self.fail_set
        if (self.proc_set, self.fail_set) != before:
            self._send_join()

    def _agrees(self, pid: Pid, sets: "Tuple[frozenset, frozenset]") -> bool:
        """Did daemon pid's last join propose exactly these (proc set, fail set)?"""
        seen = self.joins.get(pid)
        return seen is not None and seen.agrees(sets)

    def _check_consensus(self) -> None:
        active = self.proc_set - self.fail_set
        if active == {self.me} and self.ring.ring_id[0] == 0 and self.now < self.startup_alone_after:
            return  # just started: give the other daemons one consensus timeout to answer
        mine = (frozenset(self.proc_set), frozenset(self.fail_set))
        for p in active:
            if p != self.me and not self._agrees(p, mine):
                return
        if min(active) == self.me:
            self._create_commit_token(sorted(active))

    # ---------------------------------------------------------------- state: COMMIT

    def _my_commit_entry(self) -> RingCommitEntry:
        ring = self.ring
        return RingCommitEntry(ring.ring_id, ring.my_aru, ring.high_seq, ring.safe_lts,
                               self.transport.max_lts_seen)

    def _create_commit_token(self, members: List[Pid]) -> None:
        seqs = [self.ring_seq] + [v.ring_seq for p, v in self.joins.items() if p in members]
        ring_id = (max(seqs) + 1, self.me[0], self.me[1])
        c = RingCommit(ring_id, self.me, 0, 1, members, {})
        self.counters["commit_tokens_created"] += 1
        self._log("consensus on %s: new ring %s" % (_ring_names(members), _ring_str(ring_id)))
        self._enter_commit(c)

    def _enter_commit(self, c: RingCommit) -> None:
        """First rotation: add what we know of our old ring; from now on the old ring's store
        only grows through recovery, so every member decides from the same packets."""
        self.ring_seq = max(self.ring_seq, c.ring_id[0])
        c.entries[self.me] = self._my_commit_entry()
        self.commit = c
        self._set_state(COMMIT, "commit token for %s" % _ring_str(c.ring_id))
        self.token_deadline = self.now + self.cfg.token_timeout_s
        if c.members == [self.me]:  # a ring of one: the token is already full
            c.rotation = 2
            self._enter_recovery(c)
            self._start_new_ring_token()
            return
        self._forward_commit(c)

    def _forward_commit(self, c: RingCommit) -> None:
        c.sender = self.me
        c.token_id += 1
        self.commit_token_id = c.token_id
        nxt = self._successor(c.members)
        self._pass(encode_ring_commit(c, self.seal), nxt, link_seq=None)

    def _commit_admitted(self, c: RingCommit) -> bool:
        """A commit token for us, from our predecessor in it, with believable counters."""
        if self.me not in c.members:
            return False
        if c.sender != _predecessor(c.members, self.me):
            # it goes round the members in order: one from elsewhere is a copy (replayed)
            self.counters["dropped_commit_tokens_not_for_us"] += 1
            return False
        if c.ring_id[0] > self.ring_seq + RING_SEQ_AHEAD_MAX + 1 or any(
                e.site_lts > self.transport.max_lts_seen + LTS_AHEAD_MAX for e in c.entries.values()):
            self.counters["dropped_ring_seq_far_ahead"] += 1
            return False
        return True

    def _commit_in_gather(self, c: RingCommit) -> None:
        """The first rotation of a commit token for exactly the members we agreed on."""
        if not self._commit_admitted(c) or c.rotation != 1:
            return  # (a second rotation is for daemons that took part in the first)
        active = sorted(self.proc_set - self.fail_set)
        if c.members == active and c.ring_id[0] > self.ring_seq and self.me not in c.entries:
            self.commit_token_id = c.token_id
            self._enter_commit(c)

    def _on_commit(self, c: RingCommit) -> None:
        """COMMIT, RECOVERY (and OPERATIONAL: a late copy of the last commit token)."""
        if not self._commit_admitted(c):
            return
        if self.commit is None or c.ring_id != self.commit.ring_id or c.token_id <= self.commit_token_id:
            return  # a duplicate or another attempt's token
        self.commit_token_id = c.token_id
        self.link.last_sent_token = None
        self.token_deadline = self.now + self.cfg.token_timeout_s
        rep = c.members[0] == self.me
        if c.rotation == 1 and rep and self.state == COMMIT and len(c.entries) == len(c.members):
            c.rotation = 2
            self.commit = c
            self._enter_recovery(c)
            self._forward_commit(c)
        elif c.rotation == 2 and self.state == COMMIT and not rep:
            self.commit = c
            self._enter_recovery(c)
            self._forward_commit(c)
        elif c.rotation == 2 and self.state == RECOVERY and rep:
            self._start_new_ring_token()

    # ---------------------------------------------------------------- state: RECOVERY

    def _enter_recovery(self, c: RingCommit) -> None:
        """Everybody knows everybody's old-ring state: plan which old packets to resend."""
        start_lts = max([e.site_lts for e in c.entries.values()] + [self.transport.max_lts_seen])
        self.new_ring = self._open_ring(c.ring_id, c.members, start_lts)
        old_id = self.ring.ring_id
        trans = [p for p in c.members if c.entries[p].old_ring_id == old_id]
        entries = [c.entries[p] for p in trans]
        low = min(e.old_aru for e in entries)
        high = max(e.old_high for e in entries)
        best_aru = max(e.old_aru for e in entries)
        resender = min(p for p in trans if c.entries[p].old_aru == best_aru)
        first = low + 1 if resender == self.me else best_aru + 1
        # the packets we hold in (first, high], not range(first, high + 1): a far link_seq
        # (a stray packet's) must not make this loop run for ever
        queue = collections.deque(sorted(s for s in self.ring.packets if first <= s <= high))
        self.recovery = Recovery(trans, low, high, max(e.old_safe_lts for e in entries), queue,
                                 self.change_reason, c.members)
        self.counters["recovery_packets_planned"] += len(queue)
        self._set_state(RECOVERY, "ring %s: %d old packets to resend, old ring %s had (%d, %d]"
                        % (_ring_str(c.ring_id), len(queue), _ring_str(old_id), low, high))
        self.token_deadline = self.now + self.cfg.token_timeout_s

    def _start_new_ring_token(self) -> None:
        """The representative turns the commit token into the first regular token."""
        ring = self.new_ring
        tok = RingToken(ring.ring_id, self.me, 0, TOKEN_REGULAR, 0, 0, 0, (), 0, ring.start_lts,
                    ring.start_lts, None, 0)
        self.commit = None
        self._handle_token(tok)

    def _recovery_flags(self, tok: RingToken, had_work: bool) -> bool:
        """Totem's retrans_flg: set while somebody still has old packets to resend; after two
        rotations with it clear (and every recovered packet here) the new ring is installed."""
        rec = self.recovery
        # "had work" counts too: the packets sent on this visit must be before everybody's
        # first clean visit, or a daemon could install without them
        if had_work or rec.queue:
            if not tok.retrans_flg:
                tok.retrans_flg = 1
                rec.flag_owner = True
        elif tok.retrans_flg and rec.flag_owner:
            tok.retrans_flg = 0
            rec.flag_owner = False
        if tok.retrans_flg:
            rec.clean = 0
            rec.recovery_high = None
            return False
        rec.clean += 1
        if rec.recovery_high is None:
            rec.recovery_high = tok.link_seq  # every resent packet has a seq <= this
        return rec.clean >= 2 and self.new_ring.my_aru >= rec.recovery_high

    def _enter_operational(self) -> None:
        """Deliver what is left of the old ring (regular, then transitional), then the new ring."""
        rec = self.recovery
        old = self.ring
        self.link.feed(old, upto=rec.high, allow_gaps=True)
        trans = rec.trans
        new_id = self.new_ring.ring_id

        def transitional():
            if not self.had_regular:  # a fresh daemon has no regular configuration to close
                return False
            self._emit_transitional(trans, new_id, old.ring_id)
            return True

        if not self.transport.drain(old.stream, trans, rec.safe_lts, transitional):
            transitional()
        self.ring = self.new_ring
        self.transport.install(self.ring.stream)
        self.new_ring = None
        self.recovery = None
        self.had_regular = True
        self.counters["configurations_installed"] += 1
        self.recent_changes.append((self.now, _ring_str(new_id), [p[0] for p in self.ring.members],
                                    rec.reason))
        self.outputs.append(_configuration_change(CONF_REGULAR, self.ring.members, trans, new_id,
                                                  old.ring_id, rec.reason))
        self._set_state(OPERATIONAL, "installed ring %s %s (%s)" % (
            _ring_str(new_id), _ring_names(self.ring.members), rec.reason))
        self.change_reason = rec.reason
        self.next_merge_detect = self.now + self.cfg.merge_detect_s
        self.link.feed(self.ring, upto=self.ring.my_aru)
        self.transport.deliver_ready()

    def _emit_transitional(self, trans: List[Pid], new_id: RingId, old_id: RingId) -> None:
        self.outputs.append(_configuration_change(CONF_TRANSITIONAL, trans, trans, new_id, old_id,
                                                  self.recovery.reason))

    # ---------------------------------------------------------------- data packets

    def _on_data(self, p: RingData) -> None:
        """OPERATIONAL and RECOVERY: a packet of the ring that carries the token now."""
        ring = self.new_ring if self.state == RECOVERY else self.ring
        if p.ring_id == ring.ring_id:
            self._on_ring_data(ring, p)
            return
        self._drop_data(p)

    def _data_in_gather(self, p: RingData) -> None:
        if p.ring_id == self.ring.ring_id and p.inner is None:
            # late packets of the old ring still help recovery (not once we reported on it)
            if self._beyond_token(self.ring, p.link_seq, "data"):
                return
            if self.ring.store(p):
                self.counters["late_old_ring_packets"] += 1
            return
        self._drop_data(p)

    def _drop_data(self, _p: RingData) -> None:
        self.counters["dropped_foreign_data"] += 1

    def _beyond_token(self, ring: _Ring, link_seq: int, what: str) -> bool:
        """A link_seq that our ring cannot have reached yet (RING_AHEAD_ROTATIONS): counted."""
        if link_seq <= ring.last_token_seq + RING_AHEAD_ROTATIONS * self.cfg.global_window_packets:
            return False
        self.counters["dropped_%s_beyond_the_token" % what] += 1
        return True

    def _on_ring_data(self, ring: _Ring, p: RingData) -> None:
        if self._beyond_token(ring, p.link_seq, "data"):
            return
        self.link.evidence(p.link_seq)
        if not ring.store(p):
            self.counters["duplicate_packets"] += 1
            return
        self.counters["packets_received"] += 1
        if p.inner is not None and self.recovery is not None:
            self._store_recovered(p.inner)
        if self.state == OPERATIONAL:
            self.link.feed(ring, upto=ring.my_aru)
            self.transport.deliver_ready()

    def _store_recovered(self, inner: Optional[RingData]) -> None:
        rec = self.recovery
        if inner.ring_id == self.ring.ring_id and inner.link_seq <= rec.high:
            if self.ring.store(inner):
                self.counters["recovered_packets"] += 1

    # ---------------------------------------------------------------- the token

    def _on_token(self, tok: RingToken) -> None:
        """OPERATIONAL and RECOVERY: the token of the ring we are in."""
        ring = self.new_ring if self.state == RECOVERY else self.ring
        if tok.ring_id != ring.ring_id:
            self._drop_token(tok)
            return
        if tok.token_id <= ring.last_token_id:
            self.counters["duplicate_tokens"] += 1
            return
        if tok.sender != _predecessor(ring.members, self.me):
            # the token goes from each member to the next: one from elsewhere is a copy of
            # another member's (replayed) or forged, and taking it would make two tokens
            self.counters["dropped_tokens_not_for_us"] += 1
            return
        ahead = ring.last_token_seq + RING_AHEAD_ROTATIONS * self.cfg.global_window_packets
        if tok.token_id > ring.last_token_id + 2 * len(ring.members) + 2 or tok.link_seq > ahead \
                or tok.site_lts > self.transport.max_lts_seen + LTS_AHEAD_MAX or tok.site_seq > tok.site_lts:
            # one rotation adds len(members) to the token id: a far one would make every
            # true token after it a "duplicate"; a far link_seq, every daemon wait for packets
            # that nobody sent
            self.counters["dropped_tokens_far_ahead"] += 1
            return
        self._handle_token(tok)

    def _handle_token(self, tok: RingToken) -> None:
        """Thesis 7.3.2.2: answer the retransmission requests of the previous holder, send new
        packets within the flow-control limits, update the token, pass it, then deliver. The
        link does the packets and the token; the transport gives the messages and delivers."""
        ring = self.new_ring if self.state == RECOVERY else self.ring
        link = self.link
        ring.last_token_id = tok.token_id
        link.last_sent_token = None
        self.token_deadline = self.now + self.cfg.token_timeout_s
        self.rotations += 1  # every token visit here is one rotation of the ring
        link.begin_visit(self.state == OPERATIONAL)
        sent = link.answer_retransmissions(ring, tok)
        safe_taken = self.transport.safe_taken
        allowed = link.flow_allowance(ring, tok, sent)
        had_recovery_work = self.state == RECOVERY and bool(self.recovery.queue)
        if self.state == RECOVERY:
            sent += self._send_recovery_packets(ring, tok, allowed)
        elif self.transport.has_unreliable():
            sent += self._send_with_unreliable(ring, tok, allowed)
        else:
            sent += link.send_new_packets(ring, tok, allowed)
        link.request_missing(ring, tok)
        if self.transport.safe_taken != safe_taken and self.state == OPERATIONAL:
            self._hasten_safe(ring)
        self._update_aru(ring, tok)
        link.account_flow(ring, tok, sent)
        install = self.state == RECOVERY and self._recovery_flags(tok, had_recovery_work)
        if install:
            self._enter_operational()
            ring = self.ring
        may_hold = self.state == OPERATIONAL and not self.transport.has_outgoing()
        link.pass_token(ring, tok, self.now, may_hold)
        if self.state == OPERATIONAL:
            link.feed(ring, upto=ring.my_aru)
            if ring.fed_upto >= tok.link_seq:
                # every packet sent on the ring so far is handed up: the site's later messages
                # all get a larger lts (the local site's pseudo "update", 7.3.3)
                self.transport.advance_frontier(ring.stream, tok.site_lts)
            link.garbage_collect(ring)
            self.transport.deliver_ready()

    def _hasten_safe(self, ring: _Ring) -> None:
        """A visit that sent SAFE messages: they are stable once the aru of two visits covers
        them here, and a sender waiting for them (a flooder's window) waits that long.
        - The visit's packets go before the token, none after it (the Accelerated Ring's
          trailing ones): the next daemon would find them missing, lower the token's aru
          below them and, as its modifier, raise it only a rotation later (a visit of the
          original ring, which every member handles alike).
        - They are handed up before the aru rule, so that the site_aru we put on the token
          covers what the link_aru does (the other members hand packets up as they arrive);
          delivered after the token has gone, with the rest.
        Each is worth a rotation to the sender of SAFE messages; AGREED traffic is untouched."""
        self.link.send_trailing()
        self.link.feed(ring, upto=ring.my_aru, at_once=False)

    def _drop_token(self, _tok: RingToken) -> None:
        """GATHER and COMMIT have no ring that a token could go round (yet)."""
        self.counters["dropped_foreign_tokens"] += 1

    def _send_with_unreliable(self, ring: _Ring, tok: RingToken, allowed: int) -> int:
        """UNRELIABLE data gets a quarter of the visit's allowance first (so that a flood of
        reliable messages cannot starve it, nor it them), then reliable, then what is left.
        A visit allowed ONE packet (a personal window of 1, or a visit that answered
        retransmissions) gives it to UNRELIABLE every other time: "at least one" would give
        them all to a steady UNRELIABLE stream, and reliable messages would never go."""
        if allowed == 1:
            self.unreliable_turn = not self.unreliable_turn
            share = 1 if self.unreliable_turn else 0
        else:
            share = min(allowed, max(1, allowed // 4))
        own = self.link.send_unreliable(ring, tok, share)
        reliable = self.link.send_new_packets(ring, tok, allowed - len(own))
        own += self.link.send_unreliable(ring, tok, allowed - len(own) - reliable)
        for p in own:  # our own clients get it too, in this configuration
            self._on_unreliable(p)
        return len(own) + reliable

    def _on_unreliable(self, p: RingUnreliable) -> None:
        """UNRELIABLE pieces count only in the regular configuration they were sent in."""
        if self.state == OPERATIONAL and p.ring_id == self.ring.ring_id \
                and p.sender in self.ring.members:
            for c in p.chunks:
                self.transport.unreliable_chunk(self.ring.stream, p.sender, c, self.now)
        else:
            self._drop_unreliable(p)

    def _drop_unreliable(self, _p: RingUnreliable) -> None:
        """Outside OPERATIONAL there is no regular configuration for UNRELIABLE pieces."""
        self.counters["unreliable_dropped_other_configuration"] += 1

    def _update_aru(self, ring: _Ring, tok: RingToken) -> None:
        """The link's aru rule with the transport's site_aru; the site's stable All-Received-Upto
        that comes out of it goes to the transport (SAFE), the token's lts to the Lamport clock."""
        self.link.update_aru(ring, tok, self.transport.site_aru(ring.stream))
        self.transport.site_stable(ring.stream, ring.safe_lts)
        self.transport.saw_lts(tok.site_lts)

    def _send_recovery_packets(self, ring: _Ring, tok: RingToken, allowed: int) -> int:
        queue = self.recovery.queue
        sent = 0
        while queue and sent < allowed:
            old_packet = self.ring.packets.get(queue.popleft())
            if old_packet is None:
                continue
            self.link.new_packet(ring, tok, inner=old_packet)
            sent += 1
            self.counters["recovery_packets_sent"] += 1
        return sent

    def _release_held_token(self) -> None:
        held = self.link.held_token
        ring, tok, nxt = held.ring, held.token, held.next
        self.link.held_token = None
        current = self.new_ring if self.state == RECOVERY else self.ring
        if current is not ring or self.state not in (OPERATIONAL, RECOVERY):
            return
        if nxt == self.me:
            self._handle_token(tok)
        else:
            self._pass(encode_ring_token(tok, self.seal), nxt, link_seq=tok.link_seq)

    def _pass(self, raw: bytes, nxt: Pid, link_seq: int) -> None:
        self.link.pass_raw(raw, nxt, link_seq, self.now)

    # ---------------------------------------------------------------- a clean stop: LEAVE

    def _enter_left(self, reason: str) -> None:
        """The end of this daemon: whatever it held (the token, a commit token, messages not
        yet sent) is dropped, as in a crash; the others recover without it."""
        others = sorted(self.peers)
        self._set_state(LEFT, "%s: telling %s (%d copies), then sending nothing more" % (
            reason, ", ".join(others) or "nobody", LEAVE_COPIES))
        self.change_reason = reason
        self.commit = None
        self.new_ring = None
        self.recovery = None
        self.link.held_token = None
        self.link.last_sent_token = None
        self.token_deadline = None
        self.consensus_deadline = None
        self.next_join_at = None

    def _send_leave_copy(self) -> None:
        """To every configured daemon, as joins go: one that gathers with us but is not in our
        ring (it saw our join) waits for us too. The others drop it (_on_leave)."""
        for name in self.peers:
            self.outputs.append(Send(self.leave_packet, name))
        self.leave_copies_left -= 1
        self.next_leave_copy_at = self.now + LEAVE_COPY_GAP_S
        self.counters["leaves_sent"] += 1

    def _departed(self, pid: Pid) -> bool:
        gone = self.departed.get(pid[0])
        if gone is not None and self.now >= gone[1]:
            del self.departed[pid[0]]
            return False
        return gone is not None and gone[0] == pid[1]

    def _counts_on(self, pid: Pid) -> bool:
        """Does the ring we are in, or the one we are forming, wait for daemon `pid`?"""
        if self.state == OPERATIONAL:
            return pid in self.ring.members
        if self.state == GATHER:
            return pid in self.proc_set and pid not in self.fail_set
        if self.state == COMMIT:
            return self.commit is not None and pid in self.commit.members
        if self.state == RECOVERY:
            return self.new_ring is not None and pid in self.new_ring.members
        return False

    def _on_leave(self, p: RingLeave) -> None:
        """A daemon says it stops: leave it out now (in any state) instead of waiting for token
        loss. Only the process that sent it: an older incarnation never gets here (dropped as
        superseded in receive), a newer one is another process. Its later copies, and anything
        else it sent before, arriving late, are dropped (self.departed)."""
        pid = p.sender
        self.departed[pid[0]] = (pid[1], self.now + LEAVE_REMEMBER_S)
        why = "%s is leaving (%s)" % (pid[0], p.reason or "no reason given")
        if not self._counts_on(pid):
            # not in our ring nor in the one we form (another partition's daemon, or one we
            # already left out): nothing to change
            self.counters["leaves_ignored_not_member"] += 1
            self._log("%s: not a member of our ring, nothing to change" % why)
            return
        self.counters["leaves_received"] += 1
        if self.state == GATHER:
            self.fail_set.add(pid)
            self._log("GATHER: %s: left out" % why)
            self._send_join()
            self._check_consensus()
        else:
            self._enter_gather(why, failed=(pid,))

    # ---------------------------------------------------------------- merge detection

    def _send_merge_detect(self) -> None:
        self.next_merge_detect = self.now + self.cfg.merge_detect_s
        raw = encode_ring_merge(RingMerge(self.me, self.ring.ring_id), self.seal)
        inside = {p[0] for p in self.ring.members}
        for name in self.peers:
            if name not in inside:
                self.outputs.append(Send(raw, name))

    def _on_merge(self, m: RingMerge) -> None:
        self._note_incarnation(m.sender)
        if m.ring_id[0] == 0:  # an incarnation notice (no ring has seq 0): ours is current
            self.counters["incarnation_notices_received"] += 1
            return
        if self.state == OPERATIONAL and m.ring_id == self.ring.ring_id and m.sender in self.ring.members:
            # a wake (_wake_holder): a member has something to send
            self.counters["token_wakes_received"] += 1
            if self.link.held_token is not None:
                self._release_held_token()
            else:  # (the token may still be on its way here)
                self.link.wake_pending = True
            return
        if self.state == OPERATIONAL and m.sender not in self.ring.members \
                and m.ring_id != self.ring.ring_id:
            self.counters["foreign_rings_seen"] += 1
            self._enter_gather("ring %s of %s is reachable: merge" % (
                _ring_str(m.ring_id), m.sender[0]), extra=(m.sender,))


    #: (membership state, packet type) -> handler (totemsrp's dispatch table): what each state
    #: does with each kind of packet. LEFT takes nothing (receive drops it before decoding).
    DISPATCH = {
        (GATHER, PT_JOIN): _join_in_gather,
        (GATHER, PT_COMMIT): _commit_in_gather,
        (GATHER, PT_DATA): _data_in_gather,
        (GATHER, PT_TOKEN): _drop_token,
        (GATHER, PT_UNRELIABLE): _drop_unreliable,
        (GATHER, PT_MERGE): _on_merge,
        (GATHER, PT_LEAVE): _on_leave,
        (COMMIT, PT_JOIN): _join_while_forming,
        (COMMIT, PT_COMMIT): _on_commit,
        (COMMIT, PT_DATA): _drop_data,
        (COMMIT, PT_TOKEN): _drop_token,
        (COMMIT, PT_UNRELIABLE): _drop_unreliable,
        (COMMIT, PT_MERGE): _on_merge,
        (COMMIT, PT_LEAVE): _on_leave,
        (RECOVERY, PT_JOIN): _join_while_forming,
        (RECOVERY, PT_COMMIT): _on_commit,
        (RECOVERY, PT_DATA): _on_data,
        (RECOVERY, PT_TOKEN): _on_token,
        (RECOVERY, PT_UNRELIABLE): _drop_unreliable,
        (RECOVERY, PT_MERGE): _on_merge,
        (RECOVERY, PT_LEAVE): _on_leave,
        (OPERATIONAL, PT_JOIN): _join_in_operational,
        (OPERATIONAL, PT_COMMIT): _on_commit,
        (OPERATIONAL, PT_DATA): _on_data,
        (OPERATIONAL, PT_TOKEN): _on_token,
        (OPERATIONAL, PT_UNRELIABLE): _on_unreliable,
        (OPERATIONAL, PT_MERGE): _on_merge,
        (OPERATIONAL, PT_LEAVE): _on_leave,
    }

def _src_str(src: object) -> str:
    """A datagram's source for the log: ip:port from a socket, or the simulator's name."""
    if isinstance(src, tuple) and len(src) == 2:
        return "%s:%s" % src
    return str(src)


def _ring_names(pids: Iterable[Pid]) -> str:
    return "{" + ",".join(_pid_str(p) for p in sorted(pids)) + "}"


def _pid_str(pid: Pid) -> str:
    """name#incarnation for people: the last 4 digits of the incarnation are enough to tell a
    restarted daemon from its predecessor in a log."""
    return "%s#%d" % (pid[0], pid[1] % 10000)


def _ring_str(ring_id: RingId) -> str:
    return "%d/%s" % (ring_id[0], _pid_str((ring_id[1], ring_id[2])))


# ---- Ring: group membership across daemons ------------------------------------------------



@dataclass
class StateExchange:
    """The group state exchange after one REGULAR configuration: whose STATE is still awaited,
    what came in, and the messages held until it is done."""
    ring_id: "RingId"
    members: "List[str]"  #: daemon names of the configuration
    waiting: "set"  #: daemons whose STATE is not complete yet
    before: "Dict[str, tuple]"  #: group -> (members, group id) before the change
    states: "Dict[str, List[Tuple[str, str]]]" = field(default_factory=dict)  #: daemon -> (group, member)
    old_ring: "Dict[str, str]" = field(default_factory=dict)  #: daemon -> the ring it came from
    parts: "Dict[str, set]" = field(default_factory=dict)  #: daemon -> STATE parts received
    held: "List[DaemonMessage]" = field(default_factory=list)  #: delivered meanwhile, held
    held_bytes: int = 0
    #: the sites' exchange: site -> (its ring's seq, its count of network changes, its daemons)
    rings: "Dict[int, tuple]" = field(default_factory=dict)
    #: (a ring's exchange) the ring our table came from, as our STATE names it
    came_from: str = ""


class RingGroupCore(GroupCore):
    """Groups whose members are on several daemons (Spread's groups.c after a daemon membership
    change). After every REGULAR configuration, every daemon sends one STATE message (agreed
    order, through the ring) listing the group memberships of its OWN clients, and the ring it
    came from. When the STATE of every daemon of the configuration has been delivered, all of
    them rebuild the same table from those messages alone, and tell their clients, for every
    group that changed: TRANSITION (old group id) then REG_MEMB CAUSED_BY_NETWORK with the
    vs_sets (one set per group of members whose daemons came from the same ring). Messages
    delivered during the exchange (data, joins, leaves, disconnects) belong to the new
    configuration: they are held and delivered after it, in order, so clients see them after
    the REG_MEMB and every daemon applies the group operations to the same table. (The messages
    of the transitional configuration come before: between TRANSITION and REG_MEMB.) STATE goes
    to the FRONT of the orderer's queue, so that what is held is only what the ring carries
    until every STATE is delivered (a rotation or two of the global window), not the megabytes
    of client data waiting at each daemon; the peak is counted and a limit watches it. Group ids
    after a change are
    (IPv4 address of the ring's representative daemon, ring sequence, index)."""

    def __init__(self, daemon_name: str, orderer: Orderer, daemon_ips: Dict[str, str],
                 **kwargs) -> None:
        super().__init__(daemon_name, **kwargs)
        self.orderer = orderer
        self.daemon_ips = dict(daemon_ips)  #: daemon name -> IPv4 (for group ids)
        self.exchange: Optional[StateExchange] = None
        self.exchanges_done = 0
        self.transition_sent = {}  #: group -> old id, TRANSITION already given to clients
        #: the daemons of the transitional configuration we are in (None: we are in a regular one)
        self.transitional_daemons: Optional[frozenset] = None
        cfg = getattr(orderer, "cfg", None) or RingSettings()
        #: bytes (message data) held during one exchange beyond which it is reported and this
        #: daemon's clients are not read until it is done: HELD_LIMIT_ROTATIONS rotations' worth
        self.held_limit_bytes = HELD_LIMIT_ROTATIONS * cfg.global_window_packets * cfg.max_packet_bytes
        self.held_peak_messages = 0  #: most messages held at once, over all exchanges
        self.held_peak_bytes = 0  #: most message data held at once, over all exchanges
        self.held_limit_exceeded = 0  #: exchanges that went over held_limit_bytes
        self.held_over_limit = False  #: now: the exchange under way is over the limit
        self.state_parts_sent = 0  #: STATE messages sent (several per exchange for big tables)

    def deliver(self, msg: DaemonMessage) -> None:
        ex = self.exchange
        if ex is None and msg.kind is DATA:  # the hot path: what GroupCore.deliver does for it
            self._deliver_data(msg)
            return
        if msg.kind == STATE:
            if ex is not None and msg.groups and msg.groups[0] == repr(ex.ring_id):
                self._state_arrived(ex, msg)
            return
        if ex is not None:
            ex.held.append(msg)  # it belongs to the new configuration: after its REG_MEMB
            ex.held_bytes += len(msg.data)
            self._note_held(ex)
            return
        super().deliver(msg)

    def _note_held(self, ex: StateExchange) -> None:
        held = len(ex.held)
        if held > self.held_peak_messages:
            self.held_peak_messages = held
        if ex.held_bytes > self.held_peak_bytes:
            self.held_peak_bytes = ex.held_bytes
        if ex.held_bytes > self.held_limit_bytes and not self.held_over_limit:
            # never dropped (every daemon must apply the same messages); what we can do is stop
            # adding: this daemon's clients are not read until the exchange is done
            self.held_over_limit = True
            self.held_limit_exceeded += 1
            self.log.append("group state exchange: %d messages (%d KB) held waiting for the STATE "
                            "of %s, more than the limit of %d KB (%d rotations of the global "
                            "window): clients of this daemon are not read until it is done" % (
                                held, ex.held_bytes // 1024, ", ".join(sorted(ex.waiting)),
                                self.held_limit_bytes // 1024, HELD_LIMIT_ROTATIONS))

    def configuration_change(self, change: ConfigurationChange, memb_time: int) -> None:
        if change.kind == CONF_TRANSITIONAL:
            self._transitional(change)
            return
        if change.kind != CONF_REGULAR:
            return
        came_from = repr(getattr(change, "old_ring_id", None))
        if self.exchange is not None:
            # an interrupted exchange: apply what it held now, so that our STATE includes it;
            # its table never came, so we still come from where that exchange began (the
            # real Spread's vs_sets go by the group's membership id at each daemon, set only
            # where an exchange completes: groups.c, G_compute_and_notify)
            came_from = self.exchange.came_from
            for msg in self.exchange.held:
                super().deliver(msg)
        self.held_over_limit = False
        self.exchange = StateExchange(
            change.ring_id, list(change.members), set(change.members),
            {name: (dict(g.members), self.group_id(g)) for name, g in self.groups.items()},
            came_from=came_from)
        self.log.append("daemons %s (%s): exchanging group state" % (
            ", ".join(change.members), getattr(change, "reason", "")))
        self._send_state(change, came_from)

    def _transitional(self, change: ConfigurationChange) -> None:
        """EVS for clients: the groups that lose members (their daemons did not come with us)
        get TRANSITION (old group id) now, before the messages of the transitional
        configuration; their REG_MEMB follows when the state exchange is done."""
        together = set(change.members)
        self.transitional_daemons = frozenset(together)
        for group in self.groups.values():
            if group.name in self.transition_sent:
                continue
            if any(daemon not in together for daemon in group.members.values()):
                old_id = self.group_id(group)
                self.transition_sent[group.name] = old_id
                for session in group.local:
                    if session.group_membership:
                        self._enqueue(session, encode_transition(group.name, old_id))

    def _notify(self, group: Group, cause: int, changed: str) -> None:
        """A JOIN, LEAVE or disconnect in the transitional configuration, of a group with
        members at daemons outside it, is a network change's view, as the real Spread gives it
        (groups.c, G_handle_join/leave in GTRANS for a changed group; so is one of a group
        that had its TRANSITION, whoever is left): REG_MEMB CAUSED_BY_NETWORK,
        the members at the daemons that go on together in one vs_set, those at each daemon
        outside in one of their own, a joiner alone (it came from no view), then TRANSITION
        (the view is transitional until the exchange's REG_MEMB). Before, the lightweight
        REG_MEMB named the members outside as if together, and the exchange's REG_MEMB that
        dropped them came with no TRANSITION before it."""
        together = self.transitional_daemons
        if together is None or group.name not in self.transition_sent \
                and all(d in together for d in group.members.values()):
            super()._notify(group, cause, changed)
            return
        sets: Dict[tuple, List[str]] = {}
        for member in group.ordered:
            daemon = group.members[member]
            key = (0, "") if daemon in together else (1, daemon)
            sets.setdefault(key, []).append(member)
        keys = sorted(sets)
        joiners = {changed} if cause == CAUSED_BY_JOIN else ()
        self._send_network_memb(group, [sets[k] for k in keys], keys.index((0, "")) if (0, "") in keys else 0,
                                joiners)
        self.transition_sent[group.name] = self.group_id(group)
        for session in group.local:
            if session.group_membership:
                self._enqueue(session, encode_transition(group.name, self.group_id(group)))

    def _send_state(self, change: ConfigurationChange, came_from: Optional[str] = None) -> None:
        """One STATE per daemon, in parts of at most STATE_PART_BYTES (a daemon whose clients
        are in thousands of groups would otherwise exceed the largest message). Each part's hint
        is index << 16 | count: the exchange waits until it has every part, in whatever order
        they come (a ring of one may deliver a part inside submit(), before the next is queued).
        Its reason names the ring our table came from (default: the ring before this one)."""
        if came_from is None:
            came_from = repr(getattr(change, "old_ring_id", None))
        parts, part, size = [], [], 0
        for name in sorted(self.groups):
            for member, daemon in self.groups[name].members.items():
                if daemon == self.daemon_name:
                    line = "%s\t%s" % (name, member)
                    if part and size + len(line) + 1 > STATE_PART_BYTES:
                        parts.append(part)
                        part, size = [], 0
                    part.append(line)
                    size += len(line) + 1
        parts.append(part)
        # urgent: ahead of the client data waiting here, which is then held everywhere until
        # this STATE is delivered
        for index in range(len(parts)):
            msg = DaemonMessage(STATE, self.daemon_name, "#state#%s" % self.daemon_name,
                                AGREED_MESS, [repr(change.ring_id)], index << 16 | len(parts),
                                data="\n".join(parts[index]).encode("latin-1"),
                                reason=came_from)
            self.orderer.submit(msg, urgent=True)
        self.state_parts_sent += len(parts)

    def _state_arrived(self, ex: StateExchange, msg: DaemonMessage) -> None:
        members = ex.states.setdefault(msg.origin, [])
        for line in msg.data.decode("latin-1").split("\n"):
            if "\t" in line:
                members.append(tuple(line.split("\t", 1)))
        ex.old_ring[msg.origin] = msg.reason
        got = ex.parts.setdefault(msg.origin, set())
        got.add(msg.hint >> 16)
        if len(got) >= msg.hint & 0xFFFF:  # every part of its STATE
            ex.waiting.discard(msg.origin)
        if not ex.waiting:
            self._finish_exchange(ex)

    def _finish_exchange(self, ex: StateExchange) -> None:
        self.exchange = None
        self.exchanges_done += 1
        self.held_over_limit = False
        rep = ex.ring_id[1]
        self.proc_id = int(ipaddress.IPv4Address(self.daemon_ips.get(rep, "127.0.0.1")))
        self.memb_time = ex.ring_id[0] & 0x7FFFFFFF
        table = {}
        for daemon in ex.members:
            for group, member in ex.states.get(daemon, ()):
                table.setdefault(group, {})[member] = daemon
        self._rebuild(table)
        my_ring = ex.old_ring.get(self.daemon_name)
        self.transitional_daemons = None
        for name in sorted(set(table) | set(ex.before)):
            old_members, old_id = ex.before.get(name, ({}, None))
            group = self.groups.get(name)
            if group is None or old_members == group.members and name not in self.transition_sent:
                continue  # (one whose clients had their TRANSITION gets the REG_MEMB that ends it)
            if name in self.transition_sent:
                old_id = None  # its TRANSITION went out with the transitional configuration
            self._announce_network_change(group, old_id, ex.old_ring, my_ring)
        self.transition_sent = {}
        self.log.append("group state exchange done: %d groups; %d messages (%d KB) were held "
                        "meanwhile" % (len(self.groups), len(ex.held), ex.held_bytes // 1024))
        held, ex.held = ex.held, []
        for msg in held:
            super().deliver(msg)


# ---- Sites: representatives and dissemination trees (thesis 7.3.1, 7.3.2) -------------------------
# Each Spread_Segment is a site; its daemons form one ring. These are pure functions of the
# configuration and of an agreed membership, so every daemon computes the same answer without
# a message.

def site_quorum(configured: Sequence[str], last: Iterable[str], ring: Iterable[str]) -> bool:
    """Dynamic voting inside a site: whether a ring of the site may keep the epoch of `last`,
    the last ring that kept it: a majority of its daemons, or exactly half of them with the
    first of them in spread.conf order (so two halves of a split never both keep it, and a
    crash of any daemon but the first of a site of two keeps it)."""
    last = frozenset(last)
    held = last & frozenset(ring)
    if 2 * len(held) != len(last):
        return 2 * len(held) > len(last)
    first = next((d for d in configured if d in last), None)
    return first in held


def site_representative(configured: Sequence[str], live: Iterable[str]) -> Optional[str]:
    """The daemon that carries a site's wide-area traffic: the first of the site's daemons, in
    the order of spread.conf, that is in the ring's current membership (None: nobody is).
    Why this rule: every member of the ring knows the file and the agreed membership, so all
    name the same daemon at once, with no election; and a student reading spread.conf can say
    who it is. It changes only when a daemon earlier in the file leaves or comes back."""
    alive = set(live)
    return next((name for name in configured if name in alive), None)


@dataclass
class SiteTree:
    """One site's dissemination tree over the live sites (7.3.2): the parent of each site
    reached (the source has none), its distance from the source (the sum of link costs), and
    the sites that could not be reached over the live sites."""
    source: int
    parent: Dict[int, Optional[int]]
    distance: Dict[int, int]
    unreachable: List[int]

    def children(self, site: int) -> List[int]:
        """The sites a packet of this tree goes on to from `site` (ascending)."""
        return sorted(s for s, p in self.parent.items() if p == site)


def dissemination_tree(costs: Sequence[Sequence[int]], source: int, live: Iterable[int],
                       kept_within: Iterable[int] = (), round_within: bool = False) -> SiteTree:
    """Dijkstra's shortest paths from `source` over the live sites; costs[i][j] is the cost of
    the direct link i -> j (0: none). Ties are broken so that every daemon builds the same
    tree: sites are settled in (distance, site id) order, and between two parents that give
    the same distance the one with the lower site id wins. `kept_within`: sites reached by
    paths through themselves only (no site outside them is the parent of one of them);
    round_within: one of them that no such path reaches (a link between two of them cut) is
    reached through any site, and the sites reached within keep their paths (see
    merged_view_trees)."""
    within = frozenset(kept_within)
    sites = sorted(set(live) | {source})
    distance: Dict[int, int] = {source: 0}
    parent: Dict[int, Optional[int]] = {source: None}
    settled = _settle_paths(costs, sites, distance, parent, set(), [(0, source)], within)
    if within and round_within and len(settled) < len(sites):
        # (the rest, round through any site: the first pass's paths stay as they are)
        _settle_paths(costs, sites, distance, parent, settled, list((distance[s], s) for s in sorted(settled)),
                      frozenset(), fixed=frozenset(settled))
    return SiteTree(source, parent, distance, [s for s in sites if s not in settled])


def _settle_paths(costs: Sequence[Sequence[int]], sites: List[int], distance: Dict[int, int],
                  parent: Dict[int, Optional[int]], settled: set, heap: list, within: frozenset,
                  fixed: frozenset = frozenset()) -> set:
    """Dijkstra's loop of dissemination_tree from `heap`, into distance / parent / settled;
    the `fixed` sites (settled before) are passed through, never given another parent."""
    heapq.heapify(heap)
    done = set()
    while heap:
        dist, site = heapq.heappop(heap)
        if site in done:
            continue
        done.add(site)
        settled.add(site)
        for other in sites:
            cost = costs[site][other]
            if other in settled or other in fixed or other == site or cost <= 0:
                continue
            if other in within and site not in within:
                continue
            candidate = dist + cost
            known = distance.get(other)
            if known is None or candidate < known or (candidate == known and site < parent[other]):
                distance[other], parent[other] = candidate, site
                heapq.heappush(heap, (candidate, other))
    return settled


def dissemination_trees(costs: Sequence[Sequence[int]], live: Iterable[int]) -> Dict[int, SiteTree]:
    """Every live site's own tree (7.3.2: one per site, better than one shared tree)."""
    sites = sorted(set(live))
    return {site: dissemination_tree(costs, site, sites) for site in sites}


def merged_view_trees(costs: Sequence[Sequence[int]], groups: Dict[int, frozenset],
                      round_within: bool = False) -> Dict[int, SiteTree]:
    """The trees of a view that merged views: a site's records reach the sites of the view it
    came from (groups[site]) through those sites only. A site of the other view may never
    install the merged view (it gave the merge up after the others decided it): the sites of
    each side still get each other's last messages of the old view, and leave it out.
    round_within (once every site holds every message up to the merge's limit: the old views'
    messages are all in, SiteGateway._trees_go_round): a site of its old view that no path
    within that view reaches (a link between the two cut after the merge) is reached through
    the other side; kept within, it would get nothing for as long as the merged view lasts,
    with nobody suspected (lab guide, the routing)."""
    sites = sorted(groups)
    return {site: dissemination_tree(costs, site, sites, groups[site], round_within) for site in sites}


# ---- HOP: the link between two sites (thesis 7.3.2.1) --------------------------------------------

@dataclass
class HopPeerDead:
    """The dead-peer rule fired: the link is over and a membership change must start.
    reason: "silence" (nothing from the peer for peer_silence_s) or "requests" (a packet asked
    for nack_requests_max times and still missing); seq: that packet (requests only)."""
    peer: Pid
    reason: str
    at_s: float
    seq: Optional[int] = None


@dataclass
class HopOutput:
    """What one input of a HopLink gives: datagrams for the peer, packets for the layer above
    as (link seq, payload) in the order they first came in (non-blocking forwarding: a packet
    is handed up when it arrives, not when the ones before it have), and dead-peer events."""
    send: List[bytes] = field(default_factory=list)
    deliver: List[Tuple[int, bytes]] = field(default_factory=list)
    events: List[HopPeerDead] = field(default_factory=list)


#: rounding in the bucket's refill: next_deadline_s() names the moment the bytes are there,
#: and tick() at that moment must find them (else the caller ticks for ever at that moment)
BUCKET_SLACK_BYTES = 1e-6


class HopLink:
    """The sans-I/O core of one point-to-point HOP link (thesis 7.3.2.1), both directions of it.
    Fed with submit(payload, now), datagram(bytes, now) and tick(now); each returns a HopOutput.
    It never reads the clock; next_deadline_s() says when tick() has work.

    Sender: S_highest_linkseq (s_highest_linkseq), S_other_end_aru (s_other_end_aru),
    S_cur_window (s_cur_window, packets sent and not yet acknowledged, at most), the packets
    kept until acknowledged, and the token bucket (rate_bytes_s, burst_bytes) that every data
    packet, new or sent again, draws from. Receiver: R_highest_seq (r_highest_seq), R_link_aru
    (r_link_aru) and the retransmit list (retransmit_list: missing seq -> times asked for).
    Both: Pkt_cnt_linkack (pkt_cnt_linkack) against Max_pkt_btw_ack (settings.max_pkt_btw_ack).

    A datagram that does not decode, comes from another daemon or names sequences the link
    never had is dropped and counted (counters["dropped_<reason>"]); it changes nothing."""

    def __init__(self, me: Pid, peer: Pid, settings: Optional[HopSettings] = None,
                 seal: Optional[RingSeal] = None, now: float = 0.0, session: int = 0,
                 peer_session: int = 0, refusals: Optional[collections.Counter] = None) -> None:
        self.me, self.peer = me, peer
        #: the datagrams this link refused, also counted here (the gateway's, across its links)
        self.refusals = refusals
        #: this end's session and the peer's end's (SiteHello tells each to the other): a
        #: packet of another session of the peer is a stranger's
        self.session, self.peer_session = session, peer_session
        #: the highest session above peer_session that a packet of the peer's very daemon (its
        #: name and incarnation) came with, dropped (0: none): its end started again under a
        #: session ours does not read (SiteGateway asks it again: _ask_again)
        self.peer_later_session = 0
        self.settings = settings or HopSettings()
        self.seal = seal or OPEN_SEAL
        self.counters: Dict[str, int] = collections.Counter()
        self.dead: Optional[HopPeerDead] = None
        # sender
        self.s_highest_linkseq = 0
        self.s_other_end_aru = 0
        self.s_cur_window = self.settings.window_packets
        self._queue: "collections.deque[bytes]" = collections.deque()  # payloads not yet sent
        self._unacked: Dict[int, bytes] = {}  # seq -> its datagram, until the peer has it
        self._resend: "collections.deque[int]" = collections.deque()  # NACKed, to go first
        self._tokens_bytes = float(self.settings.burst_bytes)
        self._tokens_at_s = now
        #: the round trip, smoothed (None before the first sample): one new packet at a time
        #: is timed until an ACK covers it, and never one that was asked for again (Karn's rule:
        #: its ACK may answer either copy). It includes the peer's ACK delay (ack_delay_s)
        self.rtt_s: Optional[float] = None
        self._timed: Optional[Tuple[int, float]] = None
        # receiver
        self.r_highest_seq = 0
        self.r_link_aru = 0
        self.retransmit_list: Dict[int, int] = {}
        self._nack_due_s: Optional[float] = None
        # both
        self._control_seq_sent = 0  #: our ACKs and NACKs so far (each carries its number)
        self._control_seq_heard = 0  #: the peer's highest: a control packet not above it is old
        self.pkt_cnt_linkack = 0
        self._ack_due_s: Optional[float] = None
        self._heard_s = now
        self._sent_s = now
        self._out = HopOutput()
        # (the longest header: a link seq and an aru as long as a varint gets)
        overhead = len(encode_hop_data(me, MAX_WIRE_COUNTER, b"", self.seal, session, MAX_WIRE_COUNTER))
        self.max_payload_bytes = self.settings.max_packet_bytes - overhead
        nack_overhead = len(encode_hop_nack(me, 0, [], self.seal, session))
        self._nack_entries_max = (self.settings.max_packet_bytes - nack_overhead) // 8
        if self.max_payload_bytes < 1 or self.settings.burst_bytes < (self.settings.max_packet_bytes
                                                                     + self.settings.datagram_overhead_bytes):
            raise RingUsageError("HopSettings: max_packet_bytes leaves no room for data, or "
                                 "burst_bytes is below one packet")

    # ------------------------------------------------------------ inputs
    def submit(self, payload: bytes, now: float) -> HopOutput:
        """Queue one packet's payload for the peer (at most max_payload_bytes; at most
        max_queued_packets waiting: RingUsageError beyond, the caller keeps it)."""
        if len(payload) > self.max_payload_bytes:
            raise RingUsageError("a HOP payload of %d bytes (at most %d)" % (len(payload), self.max_payload_bytes))
        if len(self._queue) >= self.settings.max_queued_packets:
            raise RingUsageError("HOP link to %s: %d packets already wait" % (self.peer[0], len(self._queue)))
        if self.dead is None:
            self._queue.append(bytes(payload))
            self._pump(now)
        return self._take_output()

    def datagram(self, data: bytes, now: float) -> HopOutput:
        if self.dead is None:
            try:
                packet = decode_hop_packet(data, self.seal)
                self._check_sender(packet)
                news = getattr(self, HOP_DISPATCH[type(packet)])(packet, now)
            except RingPeerError as exc:
                reason = "dropped_" + getattr(exc, "reason", "garbage")
                self.counters[reason] += 1
                if self.refusals is not None:
                    self.refusals[reason] += 1
            else:
                if news is not False:  # (a copy of what we had: a replay, or a late one)
                    self._heard_s = now
                else:
                    self.counters["not_news"] += 1
            self._pump(now)
        return self._take_output()

    def tick(self, now: float) -> HopOutput:
        if self.dead is None:
            self._check_timers(now)
        if self.dead is None:
            self._pump(now)
        return self._take_output()

    def next_deadline_s(self) -> float:
        """The earliest time at which tick() has something to do (inf: the link is over)."""
        if self.dead is not None:
            return float("inf")
        s = self.settings
        times = [self._heard_s + s.peer_silence_s, self._sent_s + s.keepalive_s]
        times += [t for t in (self._nack_due_s, self._ack_due_s) if t is not None]
        waiting = self._next_data_bytes()
        if waiting:
            times.append(self._tokens_at_s + max(0.0, waiting - self._tokens_bytes) / s.rate_bytes_s)
        return min(times)

    def outstanding_packets(self) -> int:
        return self.s_highest_linkseq - self.s_other_end_aru

    def snapshot(self, now: float) -> dict:
        """Plain data for the status table."""
        self._refill(now)
        c = self.counters
        return {"peer": "%s#%d" % (self.peer[0], self.peer[1] % 10000), "rtt_s": self.rtt_s,
                "outstanding": self.outstanding_packets(), "window": self.s_cur_window,
                "bucket_bytes": int(self._tokens_bytes), "burst_bytes": self.settings.burst_bytes,
                "rate_bytes_s": self.settings.rate_bytes_s, "queued": len(self._queue),
                "sent": c["data_sent"], "received": c["data_received"],
                "bytes_sent": c["data_bytes_sent"], "retransmitted": c["retransmitted"], "nacks_sent": c["nacks_sent"],
                "nacks_received": c["nacks_received"]}

    def queued_packets(self) -> int:
        """Payloads submitted and not sent yet (the window or the bucket holds them)."""
        return len(self._queue)

    def idle(self) -> bool:
        """Nothing waits to go and the peer has everything we sent."""
        return not self._queue and not self._unacked

    # ------------------------------------------------------------ receiving
    def _check_sender(self, packet: "HopPacket") -> None:
        if packet.sender != self.peer:
            raise RingWireError("a HOP packet from %s, this link is to %s" % (packet.sender, self.peer), "stranger")
        if packet.session != self.peer_session:
            if packet.session > self.peer_session \
                    and hop_session_site(packet.session) == hop_session_site(self.peer_session):
                # (of its link to us: one of its link to another site, captured and sent to us
                # from its address, passes any key and may name a higher number)
                self.peer_later_session = max(self.peer_later_session, packet.session)
            raise RingWireError("a HOP packet of the peer's session %d, this link is to its %d"
                                % (packet.session, self.peer_session), "old_session")

    def _on_data(self, p: "HopData", now: float) -> Optional[bool]:
        seq = p.seq
        if seq > self.r_link_aru + self.settings.window_packets:
            raise RingWireError("HOP data seq %d beyond the window" % seq, "beyond_window")
        self._check_aru(p.link_aru)
        self._acknowledged(p.link_aru, now)  # (a resent packet's is old: it changes nothing)
        if seq <= self.r_link_aru or (seq <= self.r_highest_seq and seq not in self.retransmit_list):
            self.counters["duplicates"] += 1
            return False
        self._out.deliver.append((seq, p.payload))
        self.counters["data_received"] += 1
        if seq > self.r_highest_seq:
            self._gap_up_to(seq - 1, now)
            self.r_highest_seq = seq
        else:
            del self.retransmit_list[seq]
        self._advance_aru()
        self._count_for_ack(now)

    def _on_ack(self, p: "HopAck", now: float) -> bool:
        self._check_aru(p.link_aru)
        if p.highest_linkseq > self.r_link_aru + self.settings.window_packets:
            raise RingWireError("HOP ack names seq %d beyond the window" % p.highest_linkseq, "beyond_window")
        self._acknowledged(p.link_aru, now)
        self._gap_up_to(p.highest_linkseq, now)  # the tail of a burst may be lost
        self.r_highest_seq = max(self.r_highest_seq, p.highest_linkseq)
        self._advance_aru()
        return self._control_news(p.control_seq)

    def _control_news(self, control_seq: int) -> bool:
        """Whether an ACK or NACK is one the peer sent after the last we had (else a replayed
        copy, or one overtaken on the way: what it says is old, and it is no sign of life)."""
        if control_seq <= self._control_seq_heard:
            return False
        self._control_seq_heard = control_seq
        return True

    def _on_nack(self, p: "HopNack", now: float) -> bool:
        self._check_aru(p.link_aru)
        if any(seq > self.s_highest_linkseq for seq in p.missing):
            raise RingWireError("HOP nack asks for a packet never sent", "never_sent")
        self._acknowledged(p.link_aru, now)
        self.counters["nacks_received"] += 1
        if self._timed is not None and self._timed[0] in p.missing:
            self._timed = None  # it will be sent again: its ACK would not say which copy
        for seq in p.missing:
            if seq in self._unacked and seq not in self._resend:
                self._resend.append(seq)
        return self._control_news(p.control_seq)

    def _check_aru(self, aru: int) -> None:
        if aru > self.s_highest_linkseq:
            raise RingWireError("HOP peer acknowledges seq %d, we sent up to %d" % (aru, self.s_highest_linkseq), "never_sent")

    def _acknowledged(self, aru: int, now: float) -> None:
        if self._timed is not None and aru >= self._timed[0]:
            sample = now - self._timed[1]
            self.rtt_s = sample if self.rtt_s is None else 0.875 * self.rtt_s + 0.125 * sample
            self._timed = None
        while self.s_other_end_aru < aru:
            self.s_other_end_aru += 1
            self._unacked.pop(self.s_other_end_aru, None)

    def _gap_up_to(self, last: int, now: float) -> None:
        """Every seq above R_highest_seq up to `last` is missing: into the retransmit list, and
        the short timer starts (a reordered packet may still come)."""
        for seq in range(self.r_highest_seq + 1, last + 1):
            self.retransmit_list[seq] = 0
        if last > self.r_highest_seq and self._nack_due_s is None:
            self._nack_due_s = now + self.settings.nack_wait_s

    def _advance_aru(self) -> None:
        self.r_link_aru = min(self.retransmit_list) - 1 if self.retransmit_list else self.r_highest_seq
        if not self.retransmit_list:
            self._nack_due_s = None

    def _count_for_ack(self, now: float) -> None:
        """Pkt_cnt_linkack counts data packets sent or received since our last ACK: at
        Max_pkt_btw_ack one goes at once, else ack_delay_s after the first."""
        self.pkt_cnt_linkack += 1
        if self.pkt_cnt_linkack >= self.settings.max_pkt_btw_ack:
            self._send_ack(now)
        elif self._ack_due_s is None:
            self._ack_due_s = now + self.settings.ack_delay_s

    def _acked_by_data(self, now: float) -> None:
        """A new data packet just said what an ACK would (our R_link_aru; its seq is our
        S_highest_linkseq): the count starts again, and an ACK goes ack_delay_s after the last
        data packet, should it be lost (the tail of a burst)."""
        self.pkt_cnt_linkack = 0
        self._ack_due_s = now + self.settings.ack_delay_s

    # ------------------------------------------------------------ timers
    def _check_timers(self, now: float) -> None:
        s = self.settings
        if now >= self._heard_s + s.peer_silence_s:  # the same sum next_deadline_s() gives
            self._declare_dead("silence", now)
            return
        if self._nack_due_s is not None and now >= self._nack_due_s:
            if self._send_nacks(now):
                return
        if self._ack_due_s is not None and now >= self._ack_due_s:
            self._send_ack(now)
        if now >= self._sent_s + s.keepalive_s:
            self._send_ack(now)  # a keep-alive: the peer's silence rule hears us

    def _send_nacks(self, now: float) -> bool:
        """The NACK timer expired with packets still missing: ask for every one of them (in
        as many datagrams as it takes), or declare the peer dead if one was asked for too
        often. True: the peer is dead."""
        for seq in sorted(self.retransmit_list):
            if self.retransmit_list[seq] >= self.settings.nack_requests_max:
                self._declare_dead("requests", now, seq)
                return True
        missing = sorted(self.retransmit_list)
        for start in range(0, len(missing), self._nack_entries_max):
            part = missing[start:start + self._nack_entries_max]
            self._control_seq_sent = min(self._control_seq_sent + 1, 0xFFFFFFFF)
            self._emit_control(encode_hop_nack(self.me, self.r_link_aru, part, self.seal, self.session,
                                               self._control_seq_sent), now)
            self.counters["nacks_sent"] += 1
        for seq in missing:
            self.retransmit_list[seq] += 1
        self._nack_due_s = now + self.settings.nack_interval_s
        return False

    def _send_ack(self, now: float) -> None:
        self._control_seq_sent = min(self._control_seq_sent + 1, 0xFFFFFFFF)
        self._emit_control(encode_hop_ack(self.me, self.r_link_aru, self.s_highest_linkseq, self.seal,
                                          self.session, self._control_seq_sent), now)
        self.counters["acks_sent"] += 1
        self.pkt_cnt_linkack = 0
        self._ack_due_s = None

    def _declare_dead(self, reason: str, now: float, seq: Optional[int] = None) -> None:
        self.dead = HopPeerDead(self.peer, reason, now, seq)
        self._out.events.append(self.dead)

    # ------------------------------------------------------------ sending: window and bucket
    def _refill(self, now: float) -> None:
        s = self.settings
        if now > self._tokens_at_s:
            self._tokens_bytes = min(float(s.burst_bytes),
                                     self._tokens_bytes + (now - self._tokens_at_s) * s.rate_bytes_s)
            self._tokens_at_s = now

    def _next_data_bytes(self) -> int:
        """What the next data datagram that waits costs the bucket: its size and the
        network's headers (0: none may go now)."""
        while self._resend and self._resend[0] not in self._unacked:
            self._resend.popleft()  # acknowledged since it was asked for
        if self._resend:
            return len(self._unacked[self._resend[0]]) + self.settings.datagram_overhead_bytes
        if self._queue and self.outstanding_packets() < self.s_cur_window:
            return self.max_packet_bytes_for(self._queue[0]) + self.settings.datagram_overhead_bytes
        return 0

    def max_packet_bytes_for(self, payload: bytes) -> int:
        return self.settings.max_packet_bytes - self.max_payload_bytes + len(payload)

    def _pump(self, now: float) -> None:
        """Send what the window and the bucket allow: packets asked for again first, at once
        and out of order, then new ones. Both kinds draw from the bucket."""
        self._refill(now)
        while True:
            size = self._next_data_bytes()
            if not size or self._tokens_bytes < size - BUCKET_SLACK_BYTES:
                return
            self._tokens_bytes -= size
            if self._resend:
                self._emit(self._unacked[self._resend.popleft()], now)
                self.counters["retransmitted"] += 1
                continue
            self.s_highest_linkseq += 1
            datagram = encode_hop_data(self.me, self.s_highest_linkseq, self._queue.popleft(), self.seal,
                                       self.session, self.r_link_aru)
            self._unacked[self.s_highest_linkseq] = datagram
            if self._timed is None:
                self._timed = (self.s_highest_linkseq, now)
            self._emit(datagram, now)
            self.counters["data_sent"] += 1
            self.counters["data_bytes_sent"] += len(datagram)
            self._acked_by_data(now)

    def _emit(self, datagram: bytes, now: float) -> None:
        self._out.send.append(datagram)
        self._sent_s = now

    def _emit_control(self, datagram: bytes, now: float) -> None:
        """An ACK or NACK goes at once, whatever the bucket holds, and is paid from it (the
        bucket may go below zero): the link carries it too, and data that kept the bucket's
        rate plus control on top would overrun the link's queue."""
        self._refill(now)
        self._tokens_bytes -= len(datagram) + self.settings.datagram_overhead_bytes
        self._emit(datagram, now)

    def _take_output(self) -> HopOutput:
        out, self._out = self._out, HopOutput()
        return out


#: HOP packet -> the name of HopLink's handler (h11's table: one place says what each packet
#: does; names, so that a subclass's handler is the one called)
HOP_DISPATCH = {HopData: "_on_data", HopAck: "_on_ack", HopNack: "_on_nack"}


# ---- Sites joined: the wide-area coordinator of one daemon (thesis 7.3.1-7.3.3) -------------

@dataclass
class SendHop:
    """A datagram on a HOP link, to the representative of another site (its daemon name)."""
    packet: bytes
    dest: str


#: a representative brings at most this many bytes of site records into its ring in one
#: SITES message (a bigger record goes alone): the ring's own traffic keeps its turn
SITES_BATCH_BYTES = 16000
#: while a SAFE message waits, the representative tells the other sites its site's
#: All-Received-Upto at most this often unless the new value covers every SAFE message seen
SITE_ARU_EVERY_S = 0.01
#: ... and, while it keeps records (kept), at most this often: the records every daemon of
#: every site holds are dropped, so a daemon keeps about this long of the sites' traffic
SITE_ARU_KEPT_EVERY_S = 0.5
#: a neighbour site whose link died is declared gone if no HELLO comes from it within this
#: time: its ring re-forms after a representative's crash in token_timeout_s +
#: consensus_timeout_s (1.1 s) and its new representative says HELLO at once, while the
#: link's silence rule (1 s) fired already, so 0.6 s more covers it (1.6 s > 1.1 s) and keeps
#: a whole site's loss well within the issue's 3 s (silence 1 s + grace 0.6 s + the views'
#: agreement, a few WAN round trips; it was 1.0 s: at 0.6 s the median kill -> view is x0.83)
SITE_GRACE_S = 0.6
#: a representative whose ring does not hold every daemon of its site starts its links only
#: this long after the gateway started: at startup a site's daemons may form two rings for
#: a moment (each with its own representative, each a different stream of the same site);
#: they merge within token_timeout_s + consensus_timeout_s (1.1 s). Not longer: the ring of
#: the survivors of a representative killed right after the start forms 1.1 s after the kill
#: and must say HELLO before the neighbours' suspicion (2 s after the kill) fires
SITE_ALONE_AFTER_S = 1.2


#: a representative whose records of a site wait this long above a message of that site that
#: never came (SiteGateway._restart_holed_links) starts the link they came on again: a link
#: NACKs its own losses within a round trip or two, and a changed tree's long way is a WAN
#: crossing or two, so a hole this old is a packet the link handed up in the real one's place
STREAM_HOLE_WAIT_S = 2.0

#: a lost site's ARU in the transitional part of a view change: it holds nothing back
LOST_SITE_ARU = 1 << 62

#: pruning by group interest. A site's JOIN takes an lts this far above its stream's last one
#: (every daemon of the site computes it alike, where its ring delivers the JOIN), so a site
#: that holds another site's stream up to lts F knows every JOIN of it below F + this: a
#: message with an lts up to there is ordered before any JOIN it has not seen, and a site
#: with no member of its groups then owes it nothing. Far above the lts a site runs ahead of
#: the others' frontiers between two answers (one per message), far below the wire's 2**53
PRUNE_HORIZON_LTS = 1 << 16
#: a MSG record with an empty body is a SKIP: the message's place in its site's stream (site,
#: lts, site_seq, service, origin), without its body, sent where no site can owe the message
SITE_SKIP_BODY = b""
#: after a merge, the JOINs and LEAVEs of a joined site kept until its STATE comes, at most: a
#: site whose STATE never comes (its representatives all died before sending it) stays
#: unknown (it may owe every message) rather than grow this list without end
INTEREST_PENDING_OPS_MAX = 10000


@dataclass
class SiteViewChange:
    """The view of several sites changed (SiteGateway): first a TRANSITIONAL one (the sites
    that go on together), then the REGULAR one, as extended virtual synchrony has it."""
    kind: str  #: CONF_TRANSITIONAL or CONF_REGULAR
    view_seq: int
    sites: List[int]
    reason: str
    #: (SiteGateway.close_fork) the transitional view in which our site's fork ends: no regular
    #: view follows it, the kept state does (SiteSync "install")
    fork_ends: bool = False


@dataclass
class SiteProposal:
    """One site's proposal for the next view (a PROPOSE record): who is gone, its own frontier
    when it proposed, and per site of the old view (highest site_seq held, last ARU, frontier)."""
    lost: frozenset
    frontier: int
    entries: Dict[int, Tuple[int, int, int]]
    #: around a merge: per site, its last message at or below the merge's limit, where known
    bases: Dict[int, int] = field(default_factory=dict)


@dataclass
class ViewClosing:
    """The decision on the next view, being carried out: every survivor delivers the lost
    sites' messages up to `cut` (the most any survivor held; `holder` sends them to those
    that lack them) and everything up to `limit_lts`; then TRANSITIONAL, REGULAR."""
    view_seq: int
    survivors: List[int]
    lost: frozenset
    cut: Dict[int, int]
    holder: Dict[int, int]
    limit_lts: int
    #: per lost site, the highest frontier any survivor knew: with its cut, all it sent up to
    #: there is known (see _close_lost_streams)
    frontier: Dict[int, int] = field(default_factory=dict)
    #: per lost site, the highest ARU any survivor knew (in a chain after a merge, a survivor
    #: of our side: see _presumed_aru)
    aru: Dict[int, int] = field(default_factory=dict)
    transitional: bool = False
    closed: bool = False  #: the lost sites' streams are final
    reason: str = ""
    #: a merge: the sites of the other view, and the new view's sites (else: the survivors)
    joined: frozenset = frozenset()
    sites_next: Optional[List[int]] = None
    #: a lost site that joined us in the merge being installed: its last message at or below
    #: that merge's limit, if a survivor knew it (see _install_view)
    base: Dict[int, int] = field(default_factory=dict)
    #: a site of our old view that died after this merge's decision, whose last messages of
    #: the old view no survivor holds (`_skip_old_view_records_nobody_holds`): the frontier
    #: of it that we held; the old view's regular part ends there (`_hole_free_key`)
    skipped_frontier: Dict[int, int] = field(default_factory=dict)


@dataclass
class SiteMerge:
    """A merge of two views of several sites being agreed (a partition healed): the new
    view's seq and sites, those that come from the other view, our site's frontier when it
    proposed, and every site's MERGE and READY record so far (resent to a link that starts
    again)."""
    view_seq: int
    sites: frozenset
    joined: frozenset
    frontier: int
    proposals: Dict[int, "SiteRecord"] = field(default_factory=dict)
    #: the sites that decided the merge (READY): it is installed once every site has
    ready: Dict[int, "SiteRecord"] = field(default_factory=dict)
    #: the trees' grouping of our view, back if the merge is given up after our decision
    tree_groups: Dict[int, frozenset] = field(default_factory=dict)


#: a representative without a link to a neighbour site sends its HELLO this often (a WAN
#: round trip or two: a lost HELLO costs little, and a new representative is found at once)
SITE_HELLO_EVERY_S = 0.1
#: a representative that takes over waits at least this long for a neighbour site's answer
#: to its HELLO before it suspects the site (when the site was silent longer already): five
#: HELLOs, all five exchanges lost at 10 % loss each way 2.5e-4 of the time; and even then a
#: site another site still reaches is routed around, not suspected
SITE_HELLO_WAIT_S = 5 * SITE_HELLO_EVERY_S
#: ... but when our site's LINKS report said our link to that site was down, our predecessor
#: has said HELLO there since that report: its wait (SITE_HELLO_WAIT_S, or the link's grace)
#: counts from the report, and a takeover waits only this long more, two HELLOs (a round trip
#: of the slowest WAN link with room to spare): a whole site killed just before a takeover was
#: left out half a second later than it needed (seed 1834: 3.06 s from the kill)
SITE_TAKEOVER_HELLO_S = 2 * SITE_HELLO_EVERY_S
#: ... and to a neighbour site outside its view (left out after a partition) this often: a
#: healed link is found within this time, and a cut one costs a HELLO per period
SITE_PROBE_EVERY_S = 0.5
#: a HELLO from outside our view of another incarnation of a site than the one we read waits
#: this long (at most) while the one we read still says HELLO: two of its probes, so the kept
#: ring of a split site, not its fork, takes us back (_kept_goes_first)
SITE_FORK_WAIT_S = 2 * SITE_PROBE_EVERY_S
#: a link between two sites of our old view, down while a merge we decided is being
#: installed, with no other path within that view: the lower id leaves the other out only
#: once the link has been down this long (_cut_within_old_view). Leaving out is a view
#: change and a merge again, and a cut that comes back within it lets the merge finish as
#: it is: at the grace alone, seeds 1467 and 1789 --cut-after-merge (the link back 2 s and
#: 0.5 s after the cut) left a site out whose old-view messages the survivors lacked while
#: the joined site held its merged-view ones, and waited for that hole for ever
SITE_CUT_WITHIN_WAIT_S = 5.0


def _links_record(site: int, version: int, settled: Iterable[int], pending: Iterable[int]) -> SiteRecord:
    """A LINKS record: the view body's "lost" list, the links down past their grace; its
    entries (zeros), the links down still in their grace."""
    return SiteRecord(SITE_LINKS, site, 0, version,
                      body=encode_site_view_body(settled, {s: (0, 0, 0) for s in pending}))


def _trees_text(trees: Dict[int, SiteTree]) -> str:
    """Each tree as its edges: '0: 0>1 1>2; 1: ...'."""
    return "; ".join("%d: %s" % (src, " ".join("%d>%d" % (p, s) for s, p in sorted(t.parent.items())
                                               if p is not None) or "-")
                     for src, t in sorted(trees.items()))


def _records_text(records: Iterable[SiteRecord]) -> str:
    return base64.b64encode(encode_site_records(records)).decode("ascii")


def _gate_records_of(text: object) -> Tuple[List[SiteRecord], List[str]]:
    """A state's gate entry: its records, and why each one that does not decode was refused.
    The records are framed one by one, so a record refused leaves the others readable; a
    record no site can read (a peer's counter beyond the wire's limit) would only break the
    link it went on, so the gate goes on without it rather than stop the daemon."""
    try:
        raw = base64.b64decode(_checked(text, str).encode("ascii"), validate=True)
    except (ValueError, UnicodeEncodeError) as exc:
        raise ValueError("records that are not base64 (%s)" % exc)
    records, refused, pos = [], [], 0
    while pos < len(raw):
        try:
            size, start = read_varint(raw, pos, SITE_LENGTH_VARINT_MAX)
        except (IndexError, RingWireError) as exc:
            raise ValueError("a gate's records cut short (%s)" % exc)
        if size > MAX_SITE_RECORD_BYTES or size < 3 or start + size > len(raw):
            raise ValueError("a gate's record of %d bytes" % size)
        try:
            records.append(_decode_site_record(bytes(raw[start:start + size])))
        except RingWireError as exc:
            refused.append(str(exc))
        pos = start + size
    return records, refused


def _one_record_per_site(table, kind: int, what: str, n: int) -> Dict[int, "SiteRecord"]:
    """A state's {site: one record of `kind`} (GIVEUPs, READYs), each checked as it came."""
    out = {}
    for k, text in _checked(table, dict).items():
        records = _records_of(text, _site_key(k, n))
        if len(records) != 1 or records[0].kind != kind:
            raise ValueError("a %s of %d records or of another kind" % (what, len(records)))
        out[_site_key(k, n)] = records[0]
    return out


def _times_from_ages(table: object, n: int, now: float) -> Dict[int, float]:
    """A state's {site: age} (how long before the export), as {site: time} on our clock
    (the state's time in the ring only makes them look younger, never older)."""
    times = {}
    for k, age in _checked(table, dict).items():
        if type(age) not in (int, float) or not 0 <= age < float("inf"):
            raise ValueError("%r is not an age" % (age,))
        times[_site_key(k, n)] = now - age
    return times


def _records_of(text: object, site: Optional[int] = None) -> List[SiteRecord]:
    """Site records back from _records_text, each checked as a record off the wire (and, with
    `site`, of that site)."""
    try:
        raw = base64.b64decode(_checked(text, str).encode("ascii"), validate=True)
    except (ValueError, UnicodeEncodeError) as exc:
        raise ValueError("records that are not base64 (%s)" % exc)
    try:
        records = decode_site_records(raw)
    except RingWireError as exc:
        raise ValueError("records that do not decode (%s)" % exc)
    if site is not None and any(r.site != site for r in records):
        raise ValueError("a record of another site in site %d's list" % site)
    return records


def _checked(value: object, kind: type) -> object:
    if type(value) is not kind:
        raise ValueError("%s where a %s is expected" % (type(value).__name__, kind.__name__))
    return value


def _counter(value: object) -> int:
    if type(value) is not int or not 0 <= value <= LOST_SITE_ARU:
        raise ValueError("%r is not a counter" % (value,))
    return value


def _site_key(key: object, n: int) -> int:
    if not isinstance(key, str) or not key.isdigit() or int(key) >= n:
        raise ValueError("%r is not a site" % (key,))
    return int(key)


def _int_list(value: object, n: int) -> List[int]:
    out = [_counter(x) for x in _checked(value, list)]
    if any(x >= n for x in out) or len(set(out)) != len(out):
        raise ValueError("%r is not a list of sites" % (value,))
    return out


def _per_site(value: object, n: int, all_sites: bool = False) -> Dict[int, int]:
    out = {_site_key(k, n): _counter(v) for k, v in _checked(value, dict).items()}
    if all_sites and sorted(out) != list(range(n)):
        raise ValueError("%r does not name every site" % (value,))
    return out


class SiteGateway:
    """WIDE-AREA coordinator of one daemon (thesis 7.3.1-7.3.3): it joins the daemon's site
    (its ring, a RingOrderer it is given) to the other sites. Sans-I/O, fed with

        gw.ring_output(out, now)        # every Deliver / ConfigurationChange of the orderer
        gw.hop_datagram(src, data, now) # a datagram on the HOP port from another site's daemon
        gw.tick(now)                    # when now >= gw.next_deadline_s()
        gw.poll()                       # SendHop / Deliver (in the one order of all sites)

    Every daemon keeps a second Transport, `merge`, with one stream per site: its own site's
    messages come from its ring in ring order; the other sites' messages, their "update"
    frontiers and their All-Received-Upto (ARU) values come as site records that the site's
    representative (site_representative) brought into the ring in messages of kind SITES. So
    every daemon of a site sees the same streams in the same order, and the merge delivers
    in {lts, site id} order everywhere (7.3.3); SAFE waits for the minimum of the sites' ARUs.

    The representative alone holds HopLinks, one to each neighbour site (a cost > 0 in the
    RouteMatrix), started by a HELLO exchange (SiteHello) once its ring holds its whole site
    or SITE_ALONE_AFTER_S after the start (two rings of one site would be two streams). It forwards the records of site X
    to its children in X's dissemination tree, its own site's messages down its own tree, in
    its ring's order and only once its ring has made them safe (every daemon of the site holds
    them: ring.safe_lts). That is what lets a new representative take over after a crash: the
    site's ring re-forms (EVS inside the site), the next daemon in spread.conf order becomes
    representative, sends HELLO to the neighbour sites with the positions its ring holds
    (the highest site_seq of each site), and each side resends what the other lacks from the
    records every daemon keeps (`kept`). Nothing the old one forwarded can be missing at the
    new one, since it was safe; a record submitted twice is dropped by its site_seq.
    The rules that keep the order moving without a sequencer:
      frontier  when the ring delivers a SITES message holding another site's message with
                an lts above what the site last answered, the site answers FRONTIER = that
                SITES message's lts (the representative took the Lamport clock past the other
                site's lts before submitting it, so every later message of the site has a
                higher lts): each site answers another's message once, an idle site included
      ARU       every ring delivery is paired with the minimum of the streams' frontiers at
                that point; once the ring says it is held by every member (ring.safe_lts),
                that minimum is the site's ARU. The representative announces it (through its
                own ring first, so every member sets it at the same point) while a SAFE
                message waits for it, and every SITE_ARU_KEPT_EVERY_S while it keeps
                records: what every site holds is dropped from `kept`.
    A site that goes away (killed, or cut off) is left out by a view change that every
    survivor agrees on (SUSPECT, PROPOSE, the decision, TRANSITIONAL, REGULAR: see "the view
    of several sites" below, and lab_guide.md); when the partition heals, the two views merge
    (see "merging views" below). A dead link to a site that another site still reaches is
    routed around, with no view change (LINKS records: see "routing around a dead link"
    below). A daemon that joins its site's ring late gets this state
    through the ring (export_state, import_state: SitesOrderer). A site's streams carry an
    epoch (where its ring started afresh); a HELLO of another epoch than the one we read is a
    whole site restarted, left out and merged back like a healed site, never a takeover
    (_new_incarnation); the epochs we know are passed on to the sites that read a site only
    through us (_tell_epochs, _pass_on_epoch, _epoch_record). Not yet: a site split into two rings after the start (both with
    traffic: two streams of one epoch), and non-blocking
    forwarding. (A death after a loss's or a merge's decision chains the next view:
    _chain_decide; a merge through a third site: _take_parked_around.) Pruning by group
    interest: where a representative passes a data message on (its own site's or another's it
    holds in full), a child link through which no site that may have a member of the message's
    groups at its place could ever be reached gets a SKIP instead (_may_owe_below, _may_owe;
    PRUNE_HORIZON_LTS says why a JOIN cannot be missed; after a merge, a joined site's members
    come from its STATE of the merged view: _interest_state). UNRELIABLE crosses outside the streams: the representative sends its
    site's at once down its tree as an UNRELIABLE record, and a site delivers another's
    where its ring brings that record (_unreliable_record)."""

    def __init__(self, name: str, sites: Sequence[Sequence[str]], costs: Sequence[Sequence[int]],
                 orderer: "RingOrderer", hop_settings: Optional[HopSettings] = None,
                 seal: Optional[RingSeal] = None, now: float = 0.0) -> None:
        self.name = name
        self.alone_after_s = now + SITE_ALONE_AFTER_S
        self.me = orderer.me  #: the link's identity: a restarted daemon is another process
        self.sites = [list(s) for s in sites]
        self.site_of = {d: i for i, s in enumerate(self.sites) for d in s}
        if name not in self.site_of:
            raise RingUsageError("daemon %s is in no site" % name)
        self.site_id = self.site_of[name]
        self.costs = costs
        self.orderer = orderer
        self.hop_settings = hop_settings or HopSettings()
        self.seal = seal
        self.counters: Dict[str, int] = collections.Counter()
        self.log: "collections.deque[str]" = collections.deque(maxlen=orderer.cfg.max_log_lines)
        self.outputs: list = []
        #: the merge of the sites' streams: a Transport of its own (it sends nothing)
        self.merge = Transport(name, orderer.cfg, self.counters, self._deliver, site_id=self.site_id)
        n = len(self.sites)
        self.streams: Dict[int, SiteStream] = {}
        for site in range(n):
            self.streams[site] = self.merge.open_stream(site, 0)
            self.merge.install(self.streams[site])
        self.applied_seq = dict.fromkeys(range(n), 0)  #: the highest site_seq in each stream
        #: every site's messages this daemon holds, for a link that starts to send what its
        #: peer lacks; kept[s][i] has site_seq kept_base[s] + i + 1. What every daemon of
        #: every site holds (lts <= every site's ARU) is dropped: no peer can lack it
        self.kept: Dict[int, "collections.deque[SiteRecord]"] = {s: collections.deque() for s in range(n)}
        self.kept_base = dict.fromkeys(range(n), 0)
        self.live_sites = list(range(n))
        self.neighbours = [s for s in self.live_sites if s != self.site_id
                           and (costs[self.site_id][s] > 0 or costs[s][self.site_id] > 0)]
        self.configured_neighbours = list(self.neighbours)  #: with those outside our view
        #: after a merge, each site's view before it (see merged_view_trees); empty: plain trees
        self.tree_groups: Dict[int, frozenset] = {}
        #: the limit of the merge installed that made tree_groups (None: none installed): once
        #: every site's ARU is above it, the trees may go round a cut within an old view
        self.tree_groups_limit_lts: Optional[int] = None
        self.tree_groups_round_done: Optional[int] = None  #: (the limit _retree_round went round at)
        #: the view that merge installed, and the sites whose ARU, said in it or later, is at
        #: least its limit (they hold every message of their old view); ours said once
        self.tree_groups_view = 0
        self.held_old_views: set = set()
        self.aru_said_for: Optional[int] = None
        #: link state: site -> (version, the neighbour sites its direct link to is down, those
        #: of them past their grace), as its last LINKS record said where our ring delivered it
        #: (the same at every daemon of the site): the trees go over the links that no end says
        #: are down; a view change leaves out only what links past their grace cut off
        self.link_reports: Dict[int, Tuple[int, frozenset, frozenset]] = {}
        self.trees = dissemination_trees(costs, self.live_sites)
        self.representative: Optional[str] = None  #: our site's, by the last regular ring
        self.ring_members: frozenset = frozenset()  #: of the last regular ring
        #: daemons of our ring that joined it late and are not up to date yet: never the
        #: representative (SitesOrderer keeps it, the same at every daemon of the ring)
        self.ineligible: frozenset = frozenset()
        self.wide = False  #: the representative has started its links (_go_wide)
        #: dynamic voting (a site split in two rings): the daemons of the last ring of our site
        #: that kept (or started) our streams' epoch. A ring that holds a majority of them, or
        #: exactly half with the first of them in spread.conf order, keeps the epoch; any other
        #: ring goes on as a new incarnation of the site (_fork). Empty: no rule (a bare core)
        self.wide_ring: frozenset = frozenset()
        #: site -> the lts this daemon had delivered of its stream when it stood down (see
        #: _delivered_here)
        self.delivered_marks: Dict[int, int] = {}
        #: (site, site_seq) -> (lts, body) of a message of our merge that this daemon delivered
        #: already and holds as a SKIP (_merge_body): a daemon that takes our state has not
        #: delivered it, so export_state hands on the body
        self.withheld_bodies: Dict[Tuple[int, int], Tuple[int, bytes]] = {}
        #: (site, site_seq, lts) of a group operation of our merge that this daemon delivered
        #: already but hands over again (_merge_body): its DaemonMessage is marked `again`
        self.group_ops_again: set = set()
        #: site -> the lts this daemon had delivered of its stream when a view left it out
        self.gone_delivered: Dict[int, int] = {}
        #: our own stream's site_seq where this daemon's ring last took a new epoch (a fork):
        #: above it our stream's numbering parts from the kept incarnation's (_delivered_here)
        self.fork_seq: Optional[int] = None
        #: the daemons of the ring that began our incarnation of the site (a fork, or a ring
        #: that started afresh: SitesOrderer), and our own stream's site_seq at the last
        #: regular ring that followed a ring of them alone: what that ring ordered goes up to
        #: there (a later ring holds daemons of the kept side too; what it orders the kept
        #: state holds). Where its daemons take the kept state, they deliver their stream's
        #: messages up to there that the merge still held (close_fork). A daemon brought up
        #: to date from our state joins it (taken_in): what a ring with it orders, only our
        #: incarnation holds
        self.fork_ring: frozenset = frozenset()
        self.own_held_upto = 0
        #: how many of own_held (below) a ring of fork_ring's daemons alone ordered, as
        #: own_held_upto for our stream: close_fork delivers those too
        self.own_held_forked = 0
        #: our incarnation's lineage, (epoch, our stream's site_seq where it began) from the
        #: ring that started afresh (site_seq 0) through each fork (fork_seq); it goes with the
        #: state. Where two rings of our site meet, their streams' numbering is the same up to
        #: where their lineages part (parted_at): a fork's and the kept ring's share what came
        #: before the fork; a ring that started afresh beside the other (a daemon restarted
        #: alone on its side of the split) shares nothing with it
        self.lineage: List[Tuple[int, int]] = []
        #: the messages of our own stream this daemon delivered in close_fork's transitional
        #: view, as (site_seq, lts, body): the kept state holds those of them below the fork,
        #: delivered here already. Not by site_seq alone: the kept side may have numbered
        #: another message so (what our last ring never made safe: each side's transitional
        #: configuration delivered its own set), which we owe
        self.fork_held: frozenset = frozenset()
        #: (_delivered_here) where our stream's numbering parted from the kept state's, once
        #: this daemon took it; None: never, or not known
        self.marks_parted: Optional[int] = None
        #: (_delivered_here) our own stream's messages this daemon still kept when it stood
        #: down, site_seq -> (lts, body): one the state numbers so is the same message only if
        #: it is this one (one no longer kept every site held: made safe, numbered alike)
        self.own_numbered: Dict[int, Tuple[int, bytes]] = {}
        #: how many forks our site's epoch went through (it goes with the state): where two
        #: rings of the site meet, the one of fewer forks is the incarnation the others read
        #: (a fork is refused while the incarnation it left lives)
        self.forks = 0
        #: how many rings of our site kept our epoch since it began (dynamic voting: each
        #: regular ring that holds a quorum of the last). A SITES message names it with the
        #: epoch it was made under, so a fork tells the kept side's messages made after the
        #: fork (a count above the one it left the epoch at: epochs_left) from those made
        #: before it: both name the old epoch. It goes with the state
        self.kept_rings = 0
        #: epoch of our lineage -> kept_rings where our ring left it by a fork (_fork)
        self.epochs_left: Dict[int, int] = {}
        #: our ring forked and no other site reads our new epoch yet (until a merge with them,
        #: or the kept state): we start no link with a site of our view. Those that read our
        #: old epoch refuse our HELLO anyway (a new incarnation); one with no epoch of ours on
        #: record would take the fork for our site and refuse the kept side's records until a
        #: merge (defect 2 of issue 10's notes): it takes the kept side's HELLO instead
        self.fork_unread = False
        # the ring-safe gate, kept at every daemon alike: (ring lts, our stream's lts, records,
        # the streams' minimum frontier)
        self.gate: "collections.deque[Tuple[int, int, List[SiteRecord], int]]" = collections.deque()
        #: the ring whose regular configuration we took last (_regular): the gate's entries
        #: wait for its safe_lts. Once our ring orderer installed the next ring, before that
        #: ring's regular configuration reaches us, the gate waits (_pass_gate): the new
        #: ring's safe_lts counts other packets (it starts above every lts of the old one), and
        #: the regular configuration decides where what is left goes (_regular)
        self.gate_ring: "Optional[_Ring]" = None
        self.passed_seq = dict.fromkeys(range(n), 0)  # MSG records past the gate, per site
        self.passed_frontier = dict.fromkeys(range(n), 0)
        self.passed_aru = dict.fromkeys(range(n), 0)
        self.safe_ring_lts = 0  # our stream's lts at the last delivery past the gate
        #: our site's stream's lts: the ring's, made to grow across ring changes (a new ring
        #: may start below the lts of old messages that only some members had, delivered in
        #: its recovery); the same at every daemon of the site, since they see the same deliveries
        self.own_lts = 0
        #: our site's messages that our ring delivered while a view we proposed (sites lost)
        #: was not decided here yet: they take their place in our stream once it is (see
        #: _holds_own)
        self.own_held: List[DaemonMessage] = []
        self.frontier_answered = 0  #: the frontier rule's last answer (the same at every daemon)
        self.site_aru = 0  #: our site's All-Received-Upto (from the gate)
        self.aru_wanted = 0  #: the highest lts of a SAFE message seen
        # the representative's
        self.links: Dict[int, HopLink] = {}  #: neighbour site -> link
        #: the datagrams our links refused, by reason (HopLink.refusals: across every link)
        self.link_refusals: collections.Counter = collections.Counter()
        self.hello_due_s: Optional[float] = None
        self._readers: Dict[int, SiteRecordReader] = {}
        self._inbox: Dict[int, Dict[int, bytes]] = {}  # site -> link seq -> payload, not in order yet
        self._next_seq: Dict[int, int] = {}
        self._out_bytes: Dict[int, bytearray] = {}  # site -> records for that link, not yet submitted
        #: site -> source site -> (that source's kept records, the highest site_seq of them a
        #: _resend put in our link's stream): on their way while the link is busy (_on_the_way)
        self._resent_upto: Dict[int, Dict[int, Tuple["collections.deque[SiteRecord]", int]]] = {}
        self._session: Dict[int, int] = {}  # site -> the session of our last end of its link
        #: site -> our epoch when we last asked it for a link (a HELLO request): its answer
        #: starts our end only if we are still of that epoch (_answer_of_another_epoch)
        self._asked_epoch: Dict[int, int] = {}
        self.to_ring: "collections.deque[SiteRecord]" = collections.deque()
        #: (every daemon's) site -> (names in arrival order, the same as a set): UNRELIABLE
        #: records our ring brought, bounded (_unreliable_again)
        self.unreliable_seen: Dict[int, tuple] = {}
        #: (kind, site) -> highest seq / lts submitted ((SITE_ARU, site, view) for an ARU)
        self.injected: Dict[Tuple[int, ...], int] = {}
        self.aru_announced = 0
        self.aru_announced_at = -1.0
        self.trace_held = None  # tests set a list: (site, site_seq) as they enter the merge
        # the view of several sites (the same at every daemon of the site: ring order)
        self.view_seq = 0
        self.proposed_view = 0  #: the view seq of our site's last proposal
        self.proposal_lost: frozenset = frozenset()
        self.proposals: Dict[int, SiteProposal] = {}  # site -> its proposal for proposed_view
        self.frozen: Dict[int, List[SiteRecord]] = {}  # lost site -> its records held back
        self.closing: Optional[ViewClosing] = None
        #: the next view, decided while `closing` is still carried out (a survivor of it died
        #: after its decision): installed right after it (see _chain_decide)
        self.closing_next: Optional[ViewClosing] = None
        #: lost sites of `closing` whose last messages were to come from a site the next
        #: proposal leaves out: held back again until the next decision sets their cut
        self.refrozen: frozenset = frozenset()
        self.suspect_at: Dict[int, float] = {}  # the representative's: site -> end of its grace
        self.suspect_sent = 0  # the view seq of the SUSPECT we submitted
        self.suspect_lost: frozenset = frozenset()  # ... and the sites it names
        # merging two views after a partition healed (see "merging views" below)
        self.merging: Optional[SiteMerge] = None
        self.join_hold: Dict[int, List[SiteRecord]] = {}  # joined site -> records until merged
        self.join_after_lts: Dict[int, int] = {}  # its stream starts with a message above this
        self.join_floor: Dict[int, int] = {}  # joined site -> the merge's limit: older is not its
        #: (the representative's) joined site -> (site_seq, lts) of its last message we put into
        #: our ring since the merge began: once above the limit, where its merged view's stream
        #: stands before our ring delivers its first message there (_held_ahead)
        self.join_injected: Dict[int, Tuple[int, int]] = {}
        self.forward_held: set = set()  # joined sites our records wait for (until the decision)
        self.aru_floor_view = 0  #: ARU records of an older view than the last merge say nothing
        self.aru_pending: Dict[int, SiteRecord] = {}  # a newer view's ARU, until we install it
        self.join_sent = 0  # the view seq of the JOIN we submitted
        #: a site that joined us in the last merge -> its last message before the merged view
        #: (where its first one in the merged view came): what our PROPOSE says if it dies
        self.joined_base: Dict[int, int] = {}
        self.merge_offers: Dict[int, SiteRecord] = {}  # site -> its last MERGE we did not take
        self.given_up_view = 0  #: the seq of the last merge we gave up (our HELLOs say it)
        #: site -> its GIVEUP of the last merge it gave up, ours included (resent to a link
        #: that starts: a site that decided that merge waits for one of them)
        self.giveups: Dict[int, SiteRecord] = {}
        #: epoch -> the GIVEUP of a merge that an incarnation of our site proposed and never
        #: decided before it ended, its daemons taking another incarnation's state (resent to a
        #: link that starts, as `giveups`: a site that decided that merge waits for it)
        self.ended_giveups: Dict[int, SiteRecord] = {}
        #: (stand_down -> import_state) the GIVEUP our incarnation's undecided merge gets if
        #: the state we take is of another incarnation: ours then ends here for good
        self.ending_giveup: Optional[SiteRecord] = None
        #: this daemon stood down to take another's state (stand_down) and has taken none
        #: yet: if its ring starts afresh instead, its state is a fresh one (start_over)
        self.stood_down = False
        #: site -> its READY of the last merge we installed, ours included: a site of that
        #: merge may still wait for one (it went with a link or a representative that died
        #: after our install), and a new representative resends them to a link that starts
        self.merged_readies: Dict[int, SiteRecord] = {}
        #: the representative's: site -> its last MERGE that came before our link to a site
        #: it brings in; it goes into our ring once that link starts (see _merge_unreachable)
        self.merge_parked: Dict[int, SiteRecord] = {}
        #: ... since when (a link that does not start within SITE_GRACE_S is routed around)
        self.merge_parked_at: Dict[int, float] = {}
        #: the sites of a MERGE we took with a site it brings in reached only through others
        #: (our link to those is reported down: see _take_parked_around)
        self.merge_around: frozenset = frozenset()
        self.probe_due_s: Optional[float] = None
        #: the incarnation of our site's streams: set where a ring of our site starts with the
        #: sites' state afresh (SitesOrderer), the same at each of its daemons, passed on to a
        #: late daemon with the state; our HELLOs carry it (0: not known, as in a bare core)
        self.epoch = 0
        #: each neighbour site's epoch, from the HELLO that started a link to it (through our
        #: ring: an EPOCH record, so every daemon of our site knows it). A HELLO of another
        #: epoch is a new incarnation of that site (restarted whole): never a takeover of the
        #: old one's stream (see _new_incarnation)
        self.site_epochs: Dict[int, int] = {}
        #: the sites of site_epochs whose epoch came from their own HELLO (EPOCH_FROM_HELLO);
        #: the others' was passed on by a third site (EPOCH_AS_HEARD), which is taken only
        #: where no epoch is on record: a site read only through others (its direct link down
        #: since the start) is known by its epoch too, and its new incarnation is one
        self.epochs_first_hand: set = set()
        self._epoch_refused: Dict[int, int] = {}  # site -> the new epoch we last said we refuse
        self._link_epochs: Dict[int, int] = {}  # site -> the epoch of the HELLO that started our link
        #: site -> when a HELLO of the epoch we read of it came last, and (epoch, since when)
        #: another incarnation of it has asked to merge: _kept_goes_first
        self._epoch_heard_s: Dict[int, float] = {}
        self._other_epoch_since: Dict[int, Tuple[int, float]] = {}
        # routing around a dead link (the representative's)
        self.routed_around: set = set()  #: sites of our view reached through other sites only
        self.dead_links: set = set()  #: neighbour sites whose link died and has not started again
        self.grace_extended: set = set()  #: sites given a grace more (_route_around)
        #: (site, other) -> when our ring delivered the LINKS record of `site` that put its link
        #: to `other` down in its grace (that grace ends a _grace_s(other) after it)
        self.pending_since: Dict[Tuple[int, int], float] = {}
        #: our last LINKS record's links down: (past their grace, in it)
        self.links_down_sent: Tuple[frozenset, frozenset] = (frozenset(), frozenset())
        self.links_version = 0  #: ... and its version
        #: the version of our last LINKS record as representative since we became it (0: none
        #: yet): an older one of our site that our ring delivers has a newer one behind it
        self.links_turn_version = 0
        self.peer_positions: Dict[int, Dict[int, int]] = {}  # site -> the positions of its HELLO
        self._ahead: Dict[int, Dict[int, SiteRecord]] = {}  # site -> site_seq -> MSG come early
        self._frontier_ahead: Dict[int, SiteRecord] = {}  # site -> FRONTIER that waits for a MSG
        #: site -> (since when records of it wait above a hole, the link they came on)
        self._hole_since: Dict[int, Tuple[float, int]] = {}
        self.passed_frontier_seq = dict.fromkeys(range(n), 0)  # the site_seq of passed_frontier
        # pruning by group interest (see _may_owe): per other site, its members of each group
        # (their private groups) by the JOIN / LEAVE / KILL of its stream this daemon applied,
        # and the highest lts at which one of them left; kept by every daemon alike (ring order)
        self.interest_members: Dict[int, Dict[str, set]] = {s: {} for s in range(n)}
        self.interest_left: Dict[int, Dict[str, int]] = {s: {} for s in range(n)}
        #: the sites whose stream this daemon saw from its first message (else: their members
        #: are not known, and they may owe every message)
        self.interest_known = set(range(n)) - {self.site_id}
        #: after a merge: a joined site -> (the merged view's seq, its JOIN / LEAVE / KILL
        #: since that view began, as applied): its members are known again once its STATE of
        #: that view (or a later one) is complete: the STATE's members, then these again
        #: (_interest_state)
        self.interest_pending: Dict[int, Tuple[int, list]] = {}
        #: ... its STATE's parts so far: site -> (view seq, sender, parts seen, (group, member) pairs)
        self.interest_parts: Dict[int, tuple] = {}
        self.merges_installed = 0  #: merged views installed (SKIPs after one are counted apart)
        self._reach_cache: Dict[Tuple[int, int], frozenset] = {}
        self.pruning_to: set = set()  #: links we sent a SKIP on (a log line at the first)
        self.now_s = now  #: the time of the input being handled (for timers set deep inside)
        #: site -> when our ring last delivered a message, FRONTIER, ARU or EPOCH of that site
        #: (_delivered_at_s: a recovered message of a ring that ended, when that ring ended)
        self.heard_s: Dict[int, float] = {}
        #: neighbour site -> when our ring delivered the LINKS record of our site that put our
        #: representative's link to it down (gone when a report says it is up): a takeover's
        #: HELLO wait counts from there (_first_suspicion_s)
        self.link_down_s: Dict[int, float] = {}
        #: (representative) neighbour site -> since when we have said HELLO to it with no link
        #: to it (_send_hellos). Kept when we hand the representation over (a daemon that
        #: joined our ring and comes first in spread.conf order) until the next change: the
        #: state we send it carries them (asked_ages), and its wait counts from there
        self.asked_since_s: Dict[int, float] = {}
        #: ... the asked_ages of the state we took: read where we start our links right after
        #: (choose_representative), then dropped
        self.taken_asked_s: Dict[int, float] = {}
        #: (not the representative) since when our representative has said HELLO to the sites
        #: it has no link with: where it was chosen with our whole site in our ring (it starts
        #: its links at once); None if we do not know. A takeover counts a never-heard site's
        #: silence from there (_take_over_hellos)
        self.rep_hello_since_s: Optional[float] = None
        #: site -> (ring seq, its daemons) by the last ROSTER of that site our merge applied (a
        #: group core's STATE message: its ring lost daemons or took one back): no_successor
        self.site_rings: Dict[int, Tuple[int, frozenset]] = {}

    # ------------------------------------------------------------ inputs
    def ring_output(self, out: object, now: float) -> None:
        self.now_s = now
        if isinstance(out, Deliver):
            self._ring_delivered(out.msg)
        elif isinstance(out, ConfigurationChange) and out.kind == CONF_REGULAR:
            self._regular(out, now)
        self._after(now)

    def hop_datagram(self, src: str, data: bytes, now: float) -> None:
        self.now_s = now
        if hop_packet_type(data) == PT_SITE_HELLO:
            try:
                hello = decode_site_hello(data, self.seal)
            except RingPeerError as exc:
                self.counters["hop_dropped_" + getattr(exc, "reason", "garbage")] += 1
            else:
                self._on_hello(hello, now)
            self._after(now)
            return
        site = self.site_of.get(src, -1)
        link = self.links.get(site)
        if link is None or link.peer[0] != src:
            self.counters["hop_dropped_not_a_link"] += 1
            return
        self._hop_output(site, link.datagram(data, now), now)
        if link.peer_later_session and self.links.get(site) is link:
            # the peer's end speaks under a later session than ours reads: HELLOs crossed at
            # a takeover and the answer that said so was lost (seed 250658)
            self.counters["hop_links_asked_again_on_data"] += 1
            self._ask_again(site, link.peer, now)
        self._after(now)

    def tick(self, now: float) -> None:
        self.now_s = now
        for site, link in list(self.links.items()):
            if now >= link.next_deadline_s():
                self._hop_output(site, link.tick(now), now)
        self._go_wide(now)
        if self.hello_due_s is not None and now >= self.hello_due_s:
            self._send_hellos(now)
        if self.probe_due_s is not None and now >= self.probe_due_s:
            self._probe(now)
        if self.merge_parked and self.is_representative():
            self._take_parked_around(now)
        if self._hole_since:
            self._restart_holed_links(now)
        gone = [site for site, t in self.suspect_at.items() if now >= t]
        for site in gone:
            del self.suspect_at[site]
        self._give_up_unlinked_merge(gone, now)
        gone = [site for site in gone if site not in self.links and site in self._watched_sites()]
        if gone and self.is_representative():
            gone = self._route_around(gone, now)
        if gone and self.is_representative() and not self._suspect(gone, now):
            for site in gone:  # a view is being installed: after it
                self.suspect_at[site] = now + SITE_HELLO_EVERY_S
        self._after(now)

    def next_deadline_s(self) -> float:
        times = [link.next_deadline_s() for link in self.links.values()]
        times += self.suspect_at.values()
        if self.is_representative():  # (tick takes the parked MERGEs only then: a deadline
            # it would not move makes a poll loop spin, seed 61081 --lan-splits)
            times += [t + SITE_GRACE_S for t in self.merge_parked_at.values()]
        times += [t + STREAM_HOLE_WAIT_S for t, _ in self._hole_since.values()]
        for t in (self.hello_due_s, self.probe_due_s):
            if t is not None:
                times.append(t)
        if self.is_representative() and not self.wide:
            times.append(self.alone_after_s)
        return min(times + [float("inf")])

    def poll(self) -> list:
        out, self.outputs = self.outputs, []
        return out

    def is_representative(self) -> bool:
        return self.representative == self.name

    #: the gateway's counters that say a datagram or record from another site was refused
    REFUSAL_PREFIXES = ("hop_dropped_", "hellos_not_", "hellos_old_", "hellos_new_", "hellos_left_out",
                        "hellos_refused_", "hop_stream_broken", "site_records_not_for_us",
                        "site_records_undecodable", "site_records_refused_",
                        "site_records_above_their_message")

    def hop_counters(self) -> Dict[str, int]:
        """What this daemon refused of what came on its HOP port (hostile datagrams, late
        copies, other teams'): the gateway's counts and its links' (link_dropped_<reason>)."""
        out = {k: v for k, v in self.counters.items() if k.startswith(self.REFUSAL_PREFIXES) and v}
        for k, v in self.link_refusals.items():
            out["link_" + k] = v
        return out

    # ------------------------------------------------------------ our ring
    def _regular(self, change: ConfigurationChange, now: float) -> None:
        members = frozenset(change.members)
        forks = bool(self.wide_ring) and self.votes() and not site_quorum(
            self.sites[self.site_id], self.wide_ring, members)
        # what the old ring delivered here and had not made safe, every member that came with
        # us delivered too (EVS), and no other: if our ring keeps the epoch it is as safe as
        # it will get (the new ring's safe_lts counts other packets); if it forks, the kept
        # side may lack it and numbers its own stream on without it (_withhold_gate)
        if forks:
            self._withhold_gate(now)
        else:
            self._pass_gate(everything=True)
        self.gate_ring = self.orderer.ring
        if self.fork_ring and self.ring_members <= self.fork_ring:
            self.own_held_upto = self.applied_seq[self.site_id]  # (see fork_ring)
            self.own_held_forked = len(self.own_held)
        self.ring_members = members
        if self.wide_ring and self.votes():
            if not forks:
                self.wide_ring = self.ring_members
                self.kept_rings += 1
            else:
                self._fork(change, now)
        self.choose_representative(now)

    def _withhold_gate(self, now: float) -> None:
        """Our ring forks (it holds no quorum of the last ring that kept our epoch): what the
        old ring delivered here but never made safe (the rest of its daemons may lack it) goes
        to no other site under the old epoch. The kept side's transitional configuration
        delivered another set, and it numbers its stream on from what it holds: our records
        of those site_seqs would be other messages under the same names, and a site that took
        ours refuses the kept side's stream from there on (seed 125 --lan-splits --groups:
        b1, cut off from b2 and b3, sent a1 its own JOIN as site b's third message; a1 took
        b2's third for a duplicate and refused the rest of site b as out of order, its lts
        below that JOIN's). The fork delivers it in its own view (at the latest in
        close_fork's), as EVS allows for a transitional configuration."""
        withheld = sum(len(records) for _, _, records, _ in self.gate)
        self.gate.clear()
        if withheld:
            self.counters["site_records_withheld_at_fork"] += withheld
            self._log("site %d's ring forks: %d records its last ring never made safe go to no "
                      "other site under epoch %d" % (self.site_id, withheld, self.epoch), now)

    def votes(self) -> bool:
        """Dynamic voting is on for our site (HopSettings.split_quorum, and the site is big
        enough: split_quorum_min_daemons)."""
        settings = self.hop_settings
        return settings.split_quorum and len(self.sites[self.site_id]) >= settings.split_quorum_min_daemons

    def _fork(self, change: ConfigurationChange, now: float) -> None:
        """Our ring holds no quorum of the last ring that kept our epoch: the rest of our site
        may go on under it (a split of the site's LAN), so we go on as a new incarnation of
        the site (a new epoch, the same at each daemon of the ring: from the old one and the
        ring's id). The other sites take our HELLO as a restarted site's (_new_incarnation):
        left out while the old incarnation lives, then merged; our representative starts its
        links afresh under the new epoch."""
        old, before = self.epoch, self.wide_ring
        digest = hashlib.sha256(("%d/%s" % (old, change.ring_id)).encode("utf-8")).digest()
        self.epoch = (int.from_bytes(digest[:6], "big") | 1) or old + 1
        self.wide_ring = self.ring_members
        self.fork_seq = self.applied_seq[self.site_id]
        self.fork_ring, self.own_held_upto = self.ring_members, self.fork_seq
        self.own_held_forked = len(self.own_held)  # (its daemons': _release_own's rule)
        self.lineage.append((self.epoch, self.fork_seq))
        self.epochs_left[old] = self.kept_rings  # (the kept side's rings count on from here)
        self.kept_rings = 0
        self.fork_unread = True
        self.forks += 1
        self.counters["site_forks"] += 1
        self._log("site %d's ring %s holds no quorum of the last ring that kept epoch %d (%s): "
                  "it goes on as a new incarnation of the site, epoch %d" % (
                      self.site_id, sorted(self.ring_members), old, sorted(before),
                      self.epoch), now)
        self.representative = None  # (a representative of the old epoch starts afresh)
        self._fork_ends_merge()

    def _fork_ends_merge(self) -> None:
        """(_fork) A merge of the sites' views that our site was in the middle of, under the
        epoch we left: the other sites take us for a new incarnation now, left out until a
        merge with it (their HELLO answers say so), so they never send us their READY, nor
        their GIVEUP, of that merge. Decided, we would wait for them for ever (seed 772
        --lan-splits --client-views: c1, the representative, was killed after site c decided
        view 3 with site b; b gave it up, its GIVEUP died with c1, and c2, forked alone, held
        the merge for good: no view of the sites, no message delivered from then on). We end
        it as a withdrawn (or given up) merge ends: in our old view, which the fork goes on in."""
        m = self.merging
        if m is None:
            return
        self.counters["merges_ended_by_our_fork"] += 1
        if self.closing is not None and self.closing.view_seq == m.view_seq and self.closing.joined:
            self._withdraw_merge("our ring forks: a new incarnation of our site")
        else:
            self._end_merge()
            self._log("ends merging view %d: our ring forks (a new incarnation of our site)" % m.view_seq, None)

    def began_afresh(self, ring: frozenset) -> None:
        """(SitesOrderer) Our ring starts with the sites' state afresh: a new incarnation of our
        site, its stream numbered from 0 (as a fork's from fork_seq; a restarted daemon alone
        on its side of a split LAN starts so, and later takes the kept state)."""
        self.fork_ring, self.own_held_upto, self.lineage = ring, 0, [(self.epoch, 0)]
        self.own_held_forked = 0
        self.kept_rings, self.epochs_left, self.fork_unread = 0, {}, False

    def close_fork(self, now: float) -> None:
        """Our ring was a fork of our site (or started afresh beside it) and takes the kept
        state now (SitesOrderer, at the point, if this daemon held a state). First the fork's
        view ends, in a transitional view of our site alone (EVS: the fork's daemons leave it
        together, apart from everybody else), in which we deliver what our stream's merge
        still held of what the fork's ring ordered (up to own_held_upto). Each daemon of the
        fork does the same at the same point of the ring's order. Without it a message ordered
        before the fork (the kept side delivered it meanwhile, so it is not in the state
        taken) or after it (the kept side never had it) is never delivered here, not even to
        the client that sent it. The outputs, in this order, for the group core:
        SiteViewChange(CONF_TRANSITIONAL, view_seq, [our site]), a Deliver per message (none
        may follow), and later, when the state has come, SiteSync("install")."""
        stream = self.streams.get(self.site_id)
        if not self.fork_ring or stream is None:
            return
        held = [m for m in stream.ordered if isinstance(m, _Message) and m.complete
                and m.site_seq <= self.own_held_upto]
        unnumbered = self._fork_own_held(self.own_held_upto)
        self._log("site %d's fork (epoch %d) ends: a transitional view of the site alone, %d "
                  "messages of its stream delivered in it, before the kept state is taken" % (
                      self.site_id, self.epoch, len(held) + len(unnumbered)), now)
        self.outputs.append(SiteViewChange(CONF_TRANSITIONAL, self.view_seq, [self.site_id],
                                           "site %d's fork ends" % self.site_id, fork_ends=True))
        for m in held:
            self.merge._hand_over(m, "")
        for msg in unnumbered:
            self.counters["messages_delivered"] += 1
            self._deliver(msg)
        own = self.site_id  # (a SKIP delivered here before: named by its withheld body)
        self.fork_held = frozenset([(m.site_seq, m.lts, self._exported_body(own, m)) for m in held]
                                   + [(msg.seq, msg.lts, encode_message_body(msg)) for msg in unnumbered])
        self.counters["fork_held_delivered"] += len(held) + len(unnumbered)

    def _fork_own_held(self, last_seq: int) -> List[DaemonMessage]:
        """(close_fork) Our site's messages that the fork's ring ordered while a view it had
        proposed was not decided (own_held: never numbered in our stream), numbered on after
        its last one as the fork would have numbered them at the decision (_release_own), its
        own daemons' only. The fork's view ends undecided when its links never came up (a
        fork asks no site until a merge: fork_unread), and nobody else holds them: without
        this they were delivered nowhere, not even to the client that sent them (seed 86093
        --lan-splits --groups --site-grace-s 0.3: b2, forked alone, proposed a view without
        site c; its client's two messages after that waited for the decision, and b2 took
        b1's state)."""
        forked = self.own_held[:self.own_held_forked]
        self.own_held = self.own_held[self.own_held_forked:]
        self.own_held_forked = 0
        out, lts = [], self.own_lts
        for msg in forked:
            if msg.origin not in self.fork_ring:
                continue  # (ordered before the fork: the kept side's daemons take theirs)
            last_seq += 1
            lts = max(msg.lts, lts + self._lts_step(msg))
            msg.site_id, msg.seq, msg.lts = self.site_id, last_seq, lts
            out.append(msg)
            if self.trace_held is not None:  # (held here all along; now in its place)
                self.trace_held.append((self.site_id, last_seq))
        return out

    def taken_in(self, daemons: List[str]) -> None:
        """(SitesOrderer, at a round's point, where our state is the one taken) These daemons
        take our state: they are of our incarnation from here, and what a ring of them and
        us orders only our incarnation holds. So they join fork_ring, here before the state
        goes (they read it from there), as at each of its daemons: where our state is later
        dropped for another ring's, close_fork delivers that too (seed 86048 --lan-splits
        --groups --site-grace-s 0.3: a3 forked alone, a2 restarted into its ring; what the
        two ordered was above own_held_upto, and a3 and a2 took a1's state without it)."""
        if self.fork_ring:
            self.fork_ring = self.fork_ring | frozenset(daemons)

    def choose_representative(self, now: float) -> None:
        """site_representative over the ring's daemons that hold the sites' state: a daemon
        that joined late (`ineligible`, set by SitesOrderer at the same point of the ring's
        order everywhere) takes the links only once it is up to date."""
        self.now_s = now
        rep = site_representative(self.sites[self.site_id], self.ring_members - self.ineligible)
        # (another daemon represents us, chosen with our whole site in our ring: it started
        # its links, and its HELLOs, at once)
        says_hello_now = rep != self.name and not self.fork_unread and set(self.sites[self.site_id]) <= self.ring_members
        if rep == self.representative:
            if says_hello_now and self.rep_hello_since_s is None:
                self.rep_hello_since_s = now
            self._go_wide(now)
            self.taken_asked_s = {}
            return
        predecessor_since = self.rep_hello_since_s if self.representative not in (None, self.name) else None
        self.rep_hello_since_s = now if says_hello_now else None
        if self.representative != self.name:
            self.asked_since_s = {}  # (ours, if any, are of an earlier term: others asked since)
        waiting = sorted(self.ring_members & self.ineligible)
        self._log("%s represents site %d (ring %s%s)" % (
            rep, self.site_id, sorted(self.ring_members),
            "; %s not up to date yet" % ", ".join(waiting) if waiting else ""), now)
        self.representative = rep
        self.links = {}
        self.to_ring.clear()
        self.injected, self.join_injected = {}, {}
        self.merge_parked, self.merge_parked_at = {}, {}
        self.hello_due_s = None
        self.wide = False
        self.suspect_at = {}
        self.suspect_sent, self.suspect_lost = 0, frozenset()  # (a SUSPECT of an old turn may be lost)
        self.join_sent = 0
        self.probe_due_s = None
        # the links our site reported down stay down until they start again: a new
        # representative that forgot them would report them up (no link runs yet) and the
        # other sites would route through us to a site we do not reach
        _, down, settled = self.link_reports.get(self.site_id, (0, frozenset(), frozenset()))
        self.routed_around, self.dead_links, self.grace_extended = set(settled), set(down), set()
        self.links_down_sent = (settled, down - settled)
        self.links_turn_version = 0
        self.peer_positions, self._ahead, self._frontier_ahead, self._hole_since = {}, {}, {}, {}
        if rep == self.name:
            self.aru_announced = 0
            if predecessor_since is not None:
                self._take_over_hellos(predecessor_since)
            self._go_wide(now)
        self.taken_asked_s = {}

    def _take_over_hellos(self, since_s: float) -> None:
        """We take over from a representative that died (or left our ring), which said HELLO
        to every neighbour site it had no link with since `since_s` (rep_hello_since_s). A
        site our ring never delivered a record of (heard_s: a link that starts brings its
        EPOCH in) never answered it: its silence and its HELLO wait count from there, as its
        first unanswered HELLO would after a handover (taken_asked_s), not afresh from now.
        Seed 103339: b killed 6 ms after its start, before any link to it ran; c's
        representative died, and c2, taking over 2.4 s after c's start, gave b a whole silence
        and grace more (3.65 s from the kill). Only sites never heard: of one heard before,
        an idle link may have run all along (its start brings no EPOCH again), so its HELLO
        wait counts from now (SITE_HELLO_WAIT_S), as before."""
        for site in self.neighbours:
            if site not in self.heard_s and site not in self.taken_asked_s:
                self.taken_asked_s[site] = since_s
                self.asked_since_s[site] = since_s  # (and a handover after ours keeps it)
                self.counters["site_hello_waits_from_the_predecessors_start"] += 1

    def _go_wide(self, now: float) -> None:
        """The representative starts its links: with every daemon of its site in its ring, or
        SITE_ALONE_AFTER_S after the start (see there)."""
        if self.wide or not self.is_representative():
            return
        if not set(self.sites[self.site_id]) <= self.ring_members and now < self.alone_after_s:
            return
        self.wide = True
        self._log("starts its links to sites %s" % self.neighbours, now)
        self._send_hellos(now)
        self.probe_due_s = now + SITE_PROBE_EVERY_S
        # a neighbour site that never answers is gone as surely as one whose link died
        for site in self.neighbours:
            self.suspect_at[site] = self._first_suspicion_s(site, now)
        self._watch_joining(now, took_over=True)

    def _first_suspicion_s(self, site: int, now: float) -> float:
        """When a representative that starts its links suspects a neighbour site that has not
        answered its HELLO. A site's silence counts from the last record of it that our ring
        delivered (every daemon of the site sees it, so a takeover keeps it), as its link's
        silence would have; and its HELLO gets SITE_HELLO_WAIT_S from now, or, if our
        predecessor has said HELLO there since a known moment, from that moment, and
        SITE_TAKEOVER_HELLO_S from now. Such a moment: our site's LINKS report of that link
        down (link_down_s: every daemon of our site saw it), or the first unanswered HELLO of
        the representative whose state we just took (its asked_since_s: a representative
        handed over to a daemon that joined our ring, seeds 20768 and 109 --lan-splits
        waited SITE_HELLO_WAIT_S afresh, 0.3-0.5 s). A site never heard of is silent since
        that first HELLO (seed 20596: a site killed before any record of it crossed counted
        its silence afresh at the handover, 1.6 s)."""
        s = self.hop_settings
        heard = self.heard_s.get(site)
        grace = self._grace_s(site)
        asked = self.taken_asked_s.get(site)
        if asked is not None and heard is not None and heard >= asked:
            asked = None  # (a record of it came after: a link ran since, or it came round)
        if heard is None and asked is None:
            return now + s.peer_silence_s + grace
        if asked is not None:
            self.counters["site_hello_waits_handed_over"] += 1  # (a test sees the case ran)
        since = [t for t in (self.link_down_s.get(site), asked) if t is not None]
        if since:  # our predecessor said HELLO since then
            hello_s = max(now + SITE_TAKEOVER_HELLO_S, min(since) + SITE_HELLO_WAIT_S)
        else:
            hello_s = now + SITE_HELLO_WAIT_S
        silent_s = heard if heard is not None else asked
        return max(hello_s, silent_s + s.peer_silence_s + grace)

    def no_successor(self, site: int) -> bool:
        """Nobody can take over from `site`'s representative: spread.conf lists one daemon
        there, or the site's last ROSTER named one (its ring held only its representative).
        Then the grace after its link's death (SITE_GRACE_S, the time a successor takes to
        say HELLO) waits for nobody but that daemon itself (_grace_s). Every daemon of our
        site computes it alike (spread.conf, and ROSTERs at one point of our ring's order;
        a late daemon takes them with the state). Why this cannot split a view: the grace is a
        timeout, never a promise; a HELLO may come after any wait (a slow takeover, a healed
        cut), and the agreement rules hold whenever it comes (a PROPOSE needs every
        survivor's; one that names a site lost makes its sender lost for that site). What
        comes from such a site later is a new incarnation (a restarted daemon starts its
        streams afresh: another epoch, merged back, _new_incarnation) or the same one after
        a cut (merged back like any healed partition)."""
        if len(self.sites[site]) == 1:
            return True
        # its last ROSTER (in our merge, so every daemon of our site reads it at one point)
        # named one daemon: its ring held only its representative. A daemon of it that
        # comes back joins that ring and a ROSTER says so; if the representative dies first
        # (that ROSTER still in its ring), the newcomer starts afresh or, if it took the state
        # in time, takes over after we left the site out: a merge, as after a cut
        ring = self.site_rings.get(site)
        return ring is not None and len(ring[1]) <= 1

    def _grace_s(self, site: int) -> float:
        """How long a representative whose link to `site` died waits for that site's HELLO
        before it suspects it (or routes around it): SITE_GRACE_S while a successor may come.
        A site where nobody can take over (no_successor) gets SITE_HELLO_WAIT_S: its one
        daemon, if it lives, answers our HELLO within a round trip. Not nothing: one end of
        a link may fall silent while the other lives (its packets dropped as an old
        session's after two HELLOs crossed at a takeover; a packet asked for too often),
        and then the HELLO starts both ends afresh (seed 136 split its sites without it)."""
        return SITE_HELLO_WAIT_S if self.no_successor(site) else SITE_GRACE_S

    def _ring_delivered(self, msg: DaemonMessage) -> None:
        if msg.kind == DATA and _is_unreliable(msg.service_type):
            # delivered by the ring outside its order (each daemon at its own moment): it
            # cannot take a place in our site's stream, which every daemon must number alike.
            # It crosses as a record of its own, outside the stream
            self._deliver(msg)
            if msg.origin in self.sites[self.site_id]:  # (never a daemon of another site)
                # (named by its origin's UNRELIABLE sequence and lts: _unreliable_again)
                self._forward_unreliable(SiteRecord(SITE_UNRELIABLE, self.site_id, msg.lts, msg.seq,
                                                    msg.service_type, msg.origin,
                                                    encode_message_body(msg), self.epoch))
            return
        own = self.site_id
        passed = []
        held = msg.kind != SITES and self._holds_own()
        if held:
            self.own_held.append(msg)  # (numbered in our stream when the view is decided)
            lts = self.own_lts
        else:
            lts = self.own_lts = max(msg.lts, self.own_lts + self._lts_step(msg))
        if msg.kind == SITES:
            try:
                records = decode_site_records(msg.data)
            except RingWireError:
                self.counters["site_records_undecodable"] += 1
                records = []
            if records and self._other_incarnation(msg):
                self.counters["sites_messages_of_another_incarnation"] += 1
                records = []
            before_fork = self._made_before_our_fork(msg)
            answer = False
            for r in records:
                if before_fork and r.site != own and r.kind in SITE_VIEW_KINDS:
                    self.counters["site_view_records_before_our_fork"] += 1
                    continue
                if r.site != own and self._above_its_message(r, msg.lts):
                    self.counters["site_records_above_their_message"] += 1
                    continue
                if self._number_far_ahead(r, self._view_ceiling(ring=True)):
                    self.counters["site_records_refused_far_ahead"] += 1
                    continue
                if r.site != own and (r.kind in (SITE_MSG, SITE_FRONTIER, SITE_ARU)
                                      or r.kind == SITE_EPOCH and r.service == EPOCH_FROM_HELLO):
                    # (an EPOCH first hand: our representative's link to that site started) a
                    # takeover's suspicion counts the site's silence from here
                    self.heard_s[r.site] = self._delivered_at_s()
                if r.kind == SITE_EPOCH:
                    self._epoch_record(r)
                elif r.kind in (SITE_SUSPECT, SITE_PROPOSE):
                    self._view_record(r, passed)
                elif r.kind in (SITE_JOIN, SITE_MERGE):
                    self._merge_record(r, passed)
                elif r.kind in (SITE_READY, SITE_GIVEUP):
                    self._merge_end_record(r, passed)
                elif r.kind == SITE_LINKS:
                    self._links_record(r, passed)
                elif r.kind == SITE_UNRELIABLE:
                    self._unreliable_record(r)
                elif self._apply(r):
                    passed.append(r)
                    answer = answer or (r.kind == SITE_MSG and r.site != own
                                        and r.lts > self.frontier_answered)
            self.merge.advance_frontier(self.streams[own], lts)
            if answer:
                self.frontier_answered = lts
                passed.append(SiteRecord(SITE_FRONTIER, own, lts, self.applied_seq[own], epoch=self.epoch))
        elif not held:  # a message of our own site, in its place in our ring's order
            self._own_message(msg, lts, passed)
        if self.own_held and not self._holds_own():
            lts = self._release_own(passed)
        self.merge.deliver_ready()
        if self.closing is not None:
            self._close_step()  # (a lost site that is complete counts with its final frontier)
            if self.closing is None and self.proposal_lost:
                self._maybe_decide(passed)  # (a view proposed while a merge was installed)
        if self.closing is None and self.merging is None and self.merge_offers:
            self._take_offer(passed)  # a merge proposed while we were busy
        self.gate.append((msg.lts, lts, passed, min(s.frontier_lts for s in self.streams.values())))
        ring = self.orderer.ring
        if ring is not None and msg.lts > ring.safe_seen_lts:
            # the gate waits for the ring to make it safe, as a SAFE message does: the ring
            # must not hold its token idle (token_hold_s) meanwhile, or every message would
            # cross to the other sites token_hold_s later
            ring.safe_seen_lts = msg.lts

    def _delivered_at_s(self) -> float:
        """When our ring delivered the message being read, as a site's silence and a link
        report's moment count it (heard_s, link_down_s, pending_since): now; but a message of a
        ring that has ended here (the next ring's recovery delivers what is left of it: our
        ring orderer has moved on, the gate's ring not yet) was sent before that ring ended,
        so its records came to our representative by then (RingOrderer.left_ring_s). Dated
        at the recovery, up to token_timeout_s + consensus_timeout_s (1.1 s) later, a site
        killed just before our representative was counted silent from then: seed 112077, a
        takeover suspected the killed site's neighbour a second late."""
        left = self.orderer.left_ring_s
        if self.gate_ring is not None and self.orderer.ring is not self.gate_ring and left is not None \
                and left < self.now_s:
            self.counters["site_records_dated_at_ring_end"] += 1  # (a test sees the case ran)
            return left
        return self.now_s

    def _made_before_our_fork(self, msg: DaemonMessage) -> bool:
        """A SITES message our ring delivered after our fork, made before it (its epoch is an
        older one of our lineage): the other sites' view records in it (a PROPOSE, a MERGE...)
        were for the incarnation we left, and the other sites refuse ours until a merge. Taken,
        a fork decided a view with a site that never decided it (seed 7123 --lan-splits: a1,
        forked alone, took b1's PROPOSE made for epoch 1, decided view 1 with site b and
        delivered in it what b1 never had). Its messages of the streams are taken as before."""
        epoch = _sites_message_epoch(msg)
        return bool(epoch) and self.forks > 0 and epoch != self.epoch

    def _other_incarnation(self, msg: DaemonMessage) -> bool:
        """A SITES message made under an epoch of our site that is neither ours nor one ours
        went through (lineage): a fork's, that its representative submitted before the
        fork's daemons took the kept state and that the ring they now share with the kept
        side ordered after the rings met. Its records say what the fork's state held (an ARU
        of the fork's view, where the others' streams ended; its PROPOSE...): taken, the kept
        side would tell the other sites it holds what it never had, and they would drop it
        (seed 38 --lan-splits). Refused at every daemon of the ring alike (the lineage goes
        with the state). A message that names no epoch (an older daemon's) is taken."""
        epoch, rings = _sites_message_name(msg)
        if not epoch or not self.lineage or epoch == self.epoch:
            return False
        if all(e != epoch for e, _ in self.lineage):
            return True
        # an epoch we left by a fork: the kept side's after the fork (it counted a ring that
        # kept the epoch without us: defect 1 of issue 10's notes) is another incarnation too
        left = self.epochs_left.get(epoch)
        after_our_fork = left is not None and rings > left
        self.counters["sites_messages_made_after_our_fork"] += after_our_fork
        return after_our_fork

    def _epoch_record(self, r: SiteRecord) -> None:
        """Another site's epoch, where our ring delivered it: first hand (our representative's
        link to it started) it is the one we read from now; heard from a third site, only if
        none is on record (a first-hand one is never overridden, nor one heard before: a late
        or forged copy must not make the incarnation we read a stranger). One we did not know
        is passed on to our other neighbour sites (_pass_on_epoch)."""
        if r.site == self.site_id or r.site >= len(self.sites) or not 0 < r.site_seq <= EPOCH_MAX:
            self.counters["site_epochs_not_for_us"] += 1
            return
        known = self.site_epochs.get(r.site)
        if r.service == EPOCH_AS_HEARD:
            if known is not None:
                self.counters["site_epochs_heard_known"] += 1
                return
            self.counters["site_epochs_heard"] += 1
        else:
            self.epochs_first_hand.add(r.site)
            if known is not None and known != r.site_seq:
                self.site_rings.pop(r.site, None)  # (a new incarnation's ring)
        self.site_epochs[r.site] = r.site_seq
        if known is None:
            self._pass_on_epoch(r.site, r.site_seq)

    def _tell_epochs(self, site: int) -> None:
        """First on a link that starts: the epochs we know of the other sites (as heard). The
        peer may read one of them only through others (its direct link down since the start)
        and would take that site's next incarnation for the one it reads."""
        for other, epoch in sorted(self.site_epochs.items()):
            if other != site:
                self._out_bytes[site] += encode_site_record(
                    SiteRecord(SITE_EPOCH, other, 0, epoch, EPOCH_AS_HEARD))

    def _pass_on_epoch(self, site: int, epoch: int) -> None:
        """Our representative tells its neighbour sites an epoch our ring learned (as heard:
        they take it only if they have none; the site itself knows its own)."""
        raw = None
        for other in self.links:
            if other != site:
                raw = raw or encode_site_record(SiteRecord(SITE_EPOCH, site, 0, epoch, EPOCH_AS_HEARD))
                self._out_bytes[other] += raw
                self.counters["site_epochs_passed_on"] += 1

    def _stale_epoch(self, r: SiteRecord) -> bool:
        """A FRONTIER or UNRELIABLE record that names another epoch of its site than the one we
        read: a stale incarnation's (or the new one's, before it merged back): refused."""
        known = self.site_epochs.get(r.site, 0)
        return bool(r.epoch and known and r.epoch != known)

    def _unreliable_record(self, r: SiteRecord) -> None:
        """Another site's UNRELIABLE message, where our ring delivered it: to our clients at
        once (it takes no place in any order), and on down its site's tree. Only from a site
        of our view whose stream goes on (not a lost one, nor one we are merging with: a side
        of a partition never delivers what the other sent while cut off), and only a data
        message of that service from a daemon of that site: else counted and dropped."""
        if r.site == self.site_id or r.site not in self.live_sites or r.site in self.frozen \
                or r.site in self.join_hold or self.site_of.get(r.origin) != r.site:
            self.counters["site_unreliable_not_for_us"] += 1
            return
        try:
            msg = decode_message_body(r.body, r.origin)
        except (RingWireError, UnicodeDecodeError):
            msg = None
        if msg is None or msg.kind != DATA or not _is_unreliable(msg.service_type):
            self.counters["site_unreliable_undecodable"] += 1
            return
        if self._unreliable_again(r):
            self.counters["site_unreliable_duplicates"] += 1
            return
        self.counters["site_unreliable_delivered"] += 1
        self._deliver(msg)
        self._forward_unreliable(r)

    def _unreliable_again(self, r: SiteRecord) -> bool:
        """True for a copy of an UNRELIABLE record our ring brought before (else noted as
        seen). While the trees change, two sites may each take themselves for our parent in
        the origin's tree (site 0 sends to us directly under its new tree, site 1 still passes
        on under the old one), and a link's resending repeats records too: both copies come
        through our ring, in its order, so every daemon of the site keeps the first. The name:
        origin, its UNRELIABLE sequence (one per message in a daemon's life) and the lts it
        went out with (a restarted origin counts from 1 again, but at a later lts of its
        ring). The last UNRELIABLE_DUP_WINDOW names per site (a forger can only push out its
        own site's)."""
        seen = self.unreliable_seen.get(r.site)
        if seen is None:
            seen = self.unreliable_seen[r.site] = (collections.deque(), set())
        order, names = seen
        name = (r.epoch, r.origin, r.site_seq, r.lts)  # (a restarted site counts afresh)
        if name in names:
            return True
        if len(order) >= UNRELIABLE_DUP_WINDOW:
            names.discard(order.popleft())
        order.append(name)
        names.add(name)
        return False

    def _forward_unreliable(self, r: SiteRecord) -> None:
        """The representative sends an UNRELIABLE record at once to its children in the tree
        of the site it comes from (no gate: it is held by nobody; a new representative never
        sends again what its ring delivered before it took over, so it is never duplicated)."""
        if not self.is_representative():
            return
        tree = self.trees.get(r.site)
        if tree is None:
            return
        raw = None
        for child in tree.children(self.site_id):
            if child in self.links and child not in self.forward_held:
                raw = raw or encode_site_record(r)
                self._out_bytes[child] += raw
                self.counters["site_unreliable_forwarded"] += 1

    def _apply(self, r: SiteRecord) -> bool:
        """A record into the merge. False (and counted) for one already there or that cannot
        be right: an unknown site, a message out of its site's order."""
        if r.site in self.join_hold:  # a site of the view we merge with: after the merge
            self.join_hold[r.site].append(r)
            return True
        stream = self.streams.get(r.site)
        if stream is None:
            self.counters["site_records_unknown_site"] += 1
            return False
        if r.site in self.frozen:
            return self._lost_site_record(r)
        if r.kind == SITE_FRONTIER:
            self.merge.advance_frontier(stream, r.lts)
            return True
        if r.kind == SITE_ARU:
            return self._aru_record(r, stream)
        if r.site in self.join_after_lts:
            if r.lts <= self.join_after_lts[r.site]:
                self.counters["site_records_before_merge"] += 1  # delivered in its own old view
                return False
            del self.join_after_lts[r.site]  # its first message of the merged view
            self.interest_known.discard(r.site)  # (its members of the old view: not seen)
            first = self.joined_base[r.site] = r.site_seq - 1
            self.applied_seq[r.site] = self.kept_base[r.site] = first
            self.passed_seq[r.site] = max(self.passed_seq[r.site], first)
        if r.site_seq <= self.applied_seq[r.site]:
            self.counters["site_records_duplicate"] += 1
            return False
        if r.site_seq != self.applied_seq[r.site] + 1 or r.lts <= stream.frontier_lts:
            self.counters["site_records_out_of_order"] += 1
            return False
        if r.service & SAFE_MESS and r.lts > self.aru_wanted:
            self.aru_wanted = r.lts
        self._merge_message(r, stream)
        return True

    def _aru_record(self, r: SiteRecord, stream: SiteStream) -> bool:
        """A site's ARU, if it counts the streams of our view (an older view's does not)."""
        if r.site_seq < self.aru_floor_view:
            self.counters["site_aru_of_an_older_view"] += 1
            return False
        if r.site_seq > self.view_seq and self.merging is not None:
            pending = self.aru_pending.get(r.site)  # the merged view's, before we install it
            if pending is None or pending.lts < r.lts:
                self.aru_pending[r.site] = r
            return True
        self.merge.site_stable(stream, r.lts)
        self._drop_kept()
        limit = self.tree_groups_limit_lts
        if limit is not None and r.site_seq >= self.tree_groups_view and r.lts >= limit:
            self.held_old_views.add(r.site)
            self._retree_round()
        return True

    def _merge_message(self, r: SiteRecord, stream: SiteStream) -> None:
        """A site's next message, checked by the caller: kept (for a peer that lacks it) and
        handed to the merge of the sites' streams."""
        self.applied_seq[r.site] = r.site_seq
        self.kept[r.site].append(r)
        self.orderer.transport.saw_lts(r.lts)
        if r.site != self.site_id and r.body and r.body[0] != RING_WIRE_DATA:
            self._interest_record(r)
        # (after taking the kept state: one delivered here already in the fork's view keeps
        # its place without its body, as in import_state)
        body = self._merge_body(r) if (self.delivered_marks or self.fork_held) else r.body
        self.merge.link_chunk(stream, (r.origin, 0),
                              RingChunk(r.site_seq, r.lts, r.site_seq, 0, 1, r.service, body))
        if self.trace_held is not None:
            self.trace_held.append((r.site, r.site_seq))

    # ------------------------------------------------------------ pruning by group interest
    def _own_message(self, msg: DaemonMessage, lts: int, passed: List[SiteRecord]) -> None:
        # its site_seq counts our site's messages only (the ring's counts SITES ones too)
        r = SiteRecord(SITE_MSG, self.site_id, lts, self.applied_seq[self.site_id] + 1,
                       msg.service_type, msg.origin, encode_message_body(msg))
        if self._apply(r):
            passed.append(r)

    def _holds_own(self) -> bool:
        """We proposed a view that leaves sites out and have not decided it: our site's
        messages wait. A survivor that decides that view puts our messages above its limit
        in it; if our PROPOSE reached it but its own never reached us, we never decide that
        view, and would have delivered them in the old view (seed 43 --lan-splits at
        SITE_GRACE_S 0.6 s: c1 decided view 1 on b1's PROPOSE; b1, its link to c1 dead,
        decided view 2 alone and delivered in view 0 what c1 delivered after view 1). Held,
        they go into whichever view we decide: the one every survivor that has them decided."""
        if not self.proposal_lost:
            return False
        decided = [c.view_seq for c in (self.closing, self.closing_next) if c is not None]
        return self.proposed_view > max([self.view_seq] + decided)

    def _release_own(self, passed: List[SiteRecord]) -> int:
        """The view we proposed is decided: our held messages take their place in our
        stream, above our frontier at the decision (our stream's lts after them). Only those
        whose daemon is in our ring now: a ring that lost daemons since it ordered them (a
        split of our site's LAN) holds messages that the other side holds too, and the two
        sides decide different views (the fork its own), in which each would deliver them:
        each side takes its own daemons' messages only (seed 328 --lan-splits --groups: b3,
        split off, forked and delivered its own message in the fork's closing view of view
        0; b1 and b2 decided view 1 and delivered it there). One whose daemon crashed is
        delivered nowhere (a crashed daemon's last messages may be lost, everywhere alike)."""
        held, self.own_held, self.own_held_forked = self.own_held, [], 0
        for msg in held:
            if msg.origin not in self.ring_members:
                self.counters["own_held_of_a_daemon_gone"] += 1
                continue
            lts = self.own_lts = max(msg.lts, self.own_lts + self._lts_step(msg))
            self._own_message(msg, lts, passed)
        return self.own_lts

    @staticmethod
    def _lts_step(msg: DaemonMessage) -> int:
        """How far our stream's lts moves at a message of our site: a JOIN (or a REJOIN, joins
        of a fork's clients) goes PRUNE_HORIZON_LTS above the stream's last lts (the promise _may_owe relies on)."""
        joins = msg.kind == JOIN or msg.kind == STATE and list(msg.groups) == [REJOIN_GROUP]
        return PRUNE_HORIZON_LTS + 1 if joins else 1

    def _interest_record(self, r: SiteRecord) -> None:
        """Another site's JOIN, LEAVE, KILL or STATE, where it enters our merge: its members."""
        try:
            msg = decode_message_body(r.body, r.origin)
        except (RingWireError, UnicodeDecodeError):
            self._interest_lost(r.site)  # (its members: no longer sure)
            return
        if msg.kind == STATE:
            if msg.groups and msg.groups[0] == SITES_STATE_GROUP:
                self._interest_state(r.site, msg)
            elif list(msg.groups) == [REJOIN_GROUP]:  # (a fork's clients back: joins)
                for line in msg.data.decode("latin-1").split("\n"):
                    fields = line.split("\t")
                    if len(fields) == 2 or len(fields) == 3 and fields[2] == "j":  # ("j": no view before)
                        self._interest_event(r.site, fields[0], fields[1], r.lts)
            elif list(msg.groups) != [ROSTER_GROUP]:
                self._interest_lost(r.site)  # members we did not see join
            else:  # (a ROSTER: members gone, kept: conservative; who could take over)
                self._roster_record(r.site, msg)
            return
        if msg.kind not in (JOIN, LEAVE, KILL) or not msg.groups and msg.kind != KILL:
            return
        self._interest_event(r.site, msg.groups[0] if msg.groups else "", msg.sender, r.lts, msg.kind)

    def _interest_event(self, site: int, group: str, sender: str, lts: int, kind: str = JOIN) -> None:
        pending = self.interest_pending.get(site)
        if pending is not None:
            pending[1].append((kind, group, sender, lts))
            if len(pending[1]) > INTEREST_PENDING_OPS_MAX:
                self._interest_lost(site)
        self._interest_op(site, kind, group, sender, lts)

    def _interest_op(self, site: int, kind: str, group: str, sender: str, lts: int) -> None:
        """A JOIN, LEAVE or KILL of `site`'s member `sender` into its table (a KILL: every group)."""
        members, left = self.interest_members[site], self.interest_left[site]
        if kind == JOIN:
            members.setdefault(group, set()).add(sender)
            return
        for g in ([group] if kind == LEAVE else list(members)):
            if sender in members.get(g, ()):
                members[g].discard(sender)
                left[g] = max(left.get(g, 0), lts)

    def _interest_lost(self, site: int) -> None:
        self.interest_known.discard(site)
        self.interest_pending.pop(site, None)
        self.interest_parts.pop(site, None)

    def _interest_from_merge(self, site: int, view_seq: int) -> None:
        """`site` joined us in the merged view `view_seq`: what we knew of its members is stale
        (its side's joins and leaves never reached us). Unknown until its STATE of this view."""
        self.interest_members[site], self.interest_left[site] = {}, {}
        self._interest_lost(site)
        self.interest_pending[site] = (view_seq, [])

    def _interest_state(self, site: int, msg: DaemonMessage) -> None:
        """A part of `site`'s STATE after a merge (SitesGroupCore._send_site_state: its
        members at its daemons where the merged view began there, in its own stream, so after
        all its joins and leaves of the old view). Once every part of one sender's STATE of the
        view we wait for (or a later one: an exchange that started again) is in, its members
        are that STATE's, then the JOINs, LEAVEs and KILLs of it applied since the view began
        again (each op sets a member in or out: replayed, the last one of each member wins)."""
        pending = self.interest_pending.get(site)
        if pending is None or len(msg.groups) != 2 or not msg.groups[1].isdigit():
            return  # (a site we know: a STATE of ours to ignore)
        view = int(msg.groups[1])
        if view < pending[0]:
            return  # (an older exchange's, late)
        got = self.interest_parts.get(site)
        if got is None or (got[0], got[1]) != (view, msg.origin):
            if got is not None and got[0] > view:
                return
            got = self.interest_parts[site] = (view, msg.origin, set(), [])
        got[2].add(msg.hint >> 16)
        lines = msg.data.decode("latin-1").split("\n")
        for line in lines[1:]:
            fields = line.split("\t")
            if len(fields) in (3, 4) and self.site_of.get(fields[2]) == site:  # (4: a silent joiner's "j")
                got[3].append((fields[0], fields[1]))
        if len(got[2]) < (msg.hint & 0xFFFF):
            return
        members: Dict[str, set] = {}
        for group, member in got[3]:
            members.setdefault(group, set()).add(member)
        self.interest_members[site], self.interest_left[site] = members, {}
        ops = pending[1]
        self._interest_lost(site)
        for op in ops:
            self._interest_op(site, *op)
        self.interest_known.add(site)
        self.counters["site_interest_states"] += 1
        self._log("knows the members of site %d again: its STATE of view %d (%d members), and %d "
                  "joins and leaves since" % (site, view, len(got[3]), len(ops)), self.now_s)

    def _roster_record(self, site: int, msg: DaemonMessage) -> None:
        """Another site's ROSTER (SitesGroupCore: its ring's seq, then its daemons, "!name" for
        a restarted one), where it enters our merge: which of its daemons could take over from
        its representative (no_successor). A malformed or older one says nothing."""
        lines = msg.data.decode("latin-1").split("\n")
        if not lines[0].isdigit() or self.site_of.get(msg.origin) != site:
            return
        ring_seq = int(lines[0])
        if ring_seq <= self.site_rings.get(site, (-1,))[0]:
            return
        daemons = frozenset(self.sites[site]) & {line.lstrip("!") for line in lines[1:]}
        self.site_rings[site] = (ring_seq, daemons)

    def _data_groups(self, r: SiteRecord) -> Optional[List[str]]:
        """A data message's groups (None: a SKIP already, or a group operation, which every
        site applies)."""
        if not r.body:
            return None
        try:
            msg = decode_message_body(r.body, r.origin)
        except (RingWireError, UnicodeDecodeError):
            return None
        return list(msg.groups) if msg.kind == DATA else None

    def _may_owe_below(self, r: SiteRecord, groups: List[str], child: int) -> bool:
        """Whether a site that may ever be reached through `child` with this message may owe
        it: any site reached from `child` without going through the message's site, in any
        tree, whatever links die later, so whatever a SKIP held there may have to be sent to
        (as a lost site's holder too); we hold the body ourselves."""
        return any(self._may_owe(s, groups, r.lts) for s in self._reach_without(child, r.site)
                   if s != self.site_id)

    def _reach_without(self, child: int, source: int) -> frozenset:
        """The sites reached from `child` over the configured links without `source`."""
        got = self._reach_cache.get((child, source))
        if got is None:
            seen, todo = {child}, [child]
            while todo:
                a = todo.pop()
                for b in range(len(self.sites)):
                    if b not in seen and b != source and (self.costs[a][b] > 0 or self.costs[b][a] > 0):
                        seen.add(b)
                        todo.append(b)
            got = self._reach_cache[(child, source)] = frozenset(seen)
        return got

    def _may_owe(self, site: int, groups: List[str], lts: int) -> bool:
        """False only if `site` surely has no member of `groups` at the place of a message of
        this lts in the one order: we hold its stream up to its frontier F, every JOIN of it
        we have not seen has an lts above F + PRUNE_HORIZON_LTS (so above this one), and of
        those we saw, none left a member in any of the groups or left one at or after lts."""
        if site not in self.live_sites or site not in self.interest_known:
            return True
        if lts > self.streams[site].frontier_lts + PRUNE_HORIZON_LTS:
            return True
        members, left = self.interest_members[site], self.interest_left[site]
        return any(members.get(g) or left.get(g, -1) >= lts for g in groups)

    def _count_pruned(self, child: int, saved_bytes: int) -> None:
        self.counters["site_pruned_to_%d" % child] += 1
        self.counters["site_pruned_bytes_to_%d" % child] += saved_bytes
        if self.merges_installed:
            self.counters["site_pruned_after_merge"] += 1
        if child not in self.pruning_to:
            self.pruning_to.add(child)
            self._log("prunes data for site %d: a SKIP (the message's place, no body) where no "
                      "site reached through it has a member of the message's groups" % child, self.now_s)

    def _pass_gate(self, everything: bool = False) -> None:
        """What the ring has made safe (every daemon of the site holds it) goes on to the other
        sites, and gives the site's ARU. Nothing while the ring that delivered the gate's
        entries has ended and the next one's regular configuration has not reached us (see
        gate_ring; `everything`: _regular's)."""
        ring = self.orderer.ring
        if not everything and self.gate_ring is not None and ring is not self.gate_ring:
            return
        safe = ring.safe_lts
        while self.gate and (everything or self.gate[0][0] <= safe):
            _, lts, records, low = self.gate.popleft()
            self.safe_ring_lts = lts
            self.site_aru = max(self.site_aru, low)
            for r in records:
                if r.kind == SITE_MSG:
                    self.passed_seq[r.site] = r.site_seq
                elif r.kind == SITE_FRONTIER and r.lts > self.passed_frontier[r.site]:
                    self.passed_frontier[r.site] = r.lts
                    self.passed_frontier_seq[r.site] = r.site_seq
                elif r.kind == SITE_ARU and r.site_seq >= self.aru_floor_view:
                    self.passed_aru[r.site] = max(self.passed_aru[r.site], r.lts)
                self._forward(r)

    def _forward(self, r: SiteRecord) -> None:
        """The representative passes a record of site r.site on to our children in that site's
        tree (a child without a link now gets it by the positions of its next HELLO)."""
        if not self.is_representative():
            return
        raw = encode_site_record(r)
        if r.kind in SITE_FLOODED_KINDS:  # control: to every site, flooded (duplicates are dropped)
            for site in self.links:
                self._out_bytes[site] += raw
            return
        source = r.site
        c = self._closing_of(r.site)
        if c is not None:
            source = c.holder[r.site]  # a lost site's last messages come from there
        tree = self.trees.get(source)
        if tree is None:
            return
        groups = self._data_groups(r) if r.kind == SITE_MSG and self.hop_settings.prune else None
        skip = None
        for child in tree.children(self.site_id):
            if child in self.links and child not in self.forward_held:
                if groups is not None and not self._may_owe_below(r, groups, child):
                    skip = skip or encode_site_record(SiteRecord(
                        SITE_MSG, r.site, r.lts, r.site_seq, r.service, r.origin, SITE_SKIP_BODY))
                    self._count_pruned(child, len(raw) - len(skip))
                    self._out_bytes[child] += skip
                else:
                    self._out_bytes[child] += raw
                self.counters["site_records_forwarded"] += 1

    # ------------------------------------------------------------ HELLO and the links
    def _positions(self) -> Dict[int, int]:
        """What our site's ring holds of each site's messages, or will: what it delivered and
        what we submitted to it."""
        return {s: max(self.applied_seq[s], self.injected.get((SITE_MSG, s), 0)) for s in self.live_sites}

    def _send_hellos(self, now: float) -> None:
        """To every daemon of each neighbour site we have no link with: only its
        representative answers."""
        if not self.is_representative():
            self.hello_due_s = None
            return
        waiting = [s for s in self._link_sites() if s not in self.links and not self._fork_unread_by(s)]
        # (only the sites we still ask: one that left our view and comes back by a merge
        # starts afresh)
        self.asked_since_s = {site: self.asked_since_s.get(site, now) for site in waiting}
        for site in waiting:
            hello = self._request_hello(site)
            for daemon in self.sites[site]:
                self.outputs.append(SendHop(hello, daemon))
            self.counters["hellos_sent"] += 1
        self.hello_due_s = now + SITE_HELLO_EVERY_S if waiting else None

    def _on_hello(self, h: SiteHello, now: float) -> None:
        site = self.site_of.get(h.sender[0])
        if not self.is_representative() or not self.wide:
            self.counters["hellos_not_representative"] += 1
            return
        if site is None or site != h.site or site not in self.configured_neighbours:
            self.counters["hellos_not_a_neighbour"] += 1
            return
        if hop_session_site(h.session) != self.site_id:
            # a HELLO to another site (a copy captured on its way there) or a forger's
            self.counters["hellos_refused_other_link"] += 1
            return
        if h.epoch and h.epoch == self.site_epochs.get(site):
            self._epoch_heard_s[site] = now
        if h.view_seq > self._view_ceiling():
            self.counters["hellos_refused_view_ahead"] += 1  # (see _view_ceiling)
            return
        if site not in self._link_sites():
            self._on_probe(site, h, now)
            return
        if self._fork_unread_by(site):
            self.counters["hellos_to_an_unread_fork"] += 1
            return
        if self._new_incarnation(site, h, now):
            return
        joining = self.merging is not None and site in self.merging.joined
        if joining and self._left_out_after_our_merge(h, now):
            return
        if self.site_id not in h.view_sites and not joining and not self._behind_our_merge(site, h):
            self.counters["hellos_left_out"] += 1  # it left us out: so will we
            if site in self.live_sites and h.view_seq >= self.view_seq and site in self.links:
                # (a view at least as new as ours: it went on without us, say after giving
                # up a merge that we decided; its link may live on, so drop it to suspect it)
                self._drop_link(site, "its view %d leaves us out" % h.view_seq, now)
            elif site in self.live_sites and h.view_seq >= self.view_seq:
                self._suspect_now_it_left_us_out(site, now)
            return
        link = self.links.get(site)
        if link is not None and link.peer == h.sender:
            if h.session == link.peer_session:
                if h.request:  # our answer was lost (or this HELLO is a late copy)
                    self._answer_hello(h.sender)
            elif h.request and h.session > link.peer_session:
                # the peer's end died (its dead-peer rule fired first) and a fresh one starts
                # there: ours starts afresh too (a session of its own). (Its sessions only
                # grow: an older one is a replayed HELLO, which must not restart a live link)
                self._log("HOP link to %s (site %d): the peer started over" % (h.sender[0], site), now)
                self._start_link(site, h.sender, h.positions, now, h.session, h.epoch)
                self._answer_hello(h.sender)
            elif h.session > link.peer_session:
                self._ask_again(site, h.sender, now)
            else:
                self.counters["hellos_old_session"] += 1
            return
        if link is not None and link.peer[0] == h.sender[0] and link.peer[1] > h.sender[1]:
            self.counters["hellos_old_incarnation"] += 1
            return
        if self._answer_of_another_epoch(site, h):
            return
        self._start_link(site, h.sender, h.positions, now, h.session, h.epoch)
        self._answer_hello(h.sender)

    def _suspect_now_it_left_us_out(self, site: int, now: float) -> None:
        """A site of our view said HELLO from a view at least as new as ours that leaves us out,
        and we have no link to it: if its suspicion is pending (its HELLO wait), it comes now.
        No HELLO of it will say otherwise (seed 253358: b left c out while c's ring re-formed;
        c1, taking over, heard b's probe say so and waited 0.45 s more for b's answer)."""
        if self.suspect_at.get(site, now) > now:
            self.counters["site_left_us_out_suspected_at_once"] += 1
            self.suspect_at[site] = now

    def _left_out_after_our_merge(self, h: SiteHello, now: float) -> bool:
        """A HELLO from a site that joins us in the merge we decided and have not installed,
        from a view after that merge that leaves us out: it installed the merge and went on
        without us (the lower id of our old view could not reach us within it and left us
        out: _cut_within_old_view), so the merge's sites will never wait for us again. We
        leave out every site of that view, in a view chained after the merge, as if they
        died after its decision: alone, we decide it alone. (A GIVEUP names the merge's own
        view seq: that site never installed it, and _withdraw_merge handles it.)"""
        c = self.closing
        if c is None or not c.joined or self.site_id in h.view_sites or h.view_seq <= c.view_seq:
            return False
        gone = sorted(set(h.view_sites) & set(self._watched_sites()))
        self.counters["hellos_left_out_after_our_merge"] += 1
        if gone and self.is_representative():
            self._log("site %d went on without us after the merge (its view %d is %s)"
                      % (self.site_of[h.sender[0]], h.view_seq, list(h.view_sites)), now)
            self._suspect(gone, now)
        return True

    def _ask_again(self, site: int, peer: Pid, now: float) -> None:
        """An answer from the daemon our link to `site` speaks with, of a later session than
        the one our end reads: its end started afresh in answer to a HELLO of ours that our
        end does not speak for (at a takeover it had answered us, then started again when our
        answer to it came while our link spoke with another daemon of its site). Each end now
        drops the other's packets as an old session's, and the link carried nothing until our
        silence rule fired, a second later (seed 103981: b's view without the killed site c
        1.1 s after its decision). Our end goes, quietly (no report: the peer lives), and we
        ask at once under our next session: the peer's end starts again on that request and
        answers, and ours starts on its answer. Not our end afresh in place: its new session
        would be the peer's to learn from our answer, and two such ends would restart each
        other for ever. Its sessions only grow, so a replayed answer never comes here."""
        self.counters["hop_links_asked_again"] += 1
        self._log("HOP link to %s (site %d): its end started again under a session ours does "
                  "not read; asked again" % (peer[0], site), now)
        self.links.pop(site)
        # (it spoke just now: if it goes silent, it is suspected as if our link had lived on)
        self.suspect_at.setdefault(site, now + self.hop_settings.peer_silence_s + self._grace_s(site))
        self.outputs.append(SendHop(self._request_hello(site), peer[0]))
        if self.hello_due_s is None:
            self.hello_due_s = now + SITE_HELLO_EVERY_S

    def _new_incarnation(self, site: int, h: SiteHello, now: float) -> bool:
        """A HELLO from a site of our view whose streams are of another epoch than the one we
        read: every daemon of that site was restarted and started afresh. Its site_seq 1, 2,
        3... are not the rest of the old stream, so no link to it in this view: the old
        incarnation is suspected as a site gone (its link's silence, SITE_GRACE_S), the new
        one meanwhile leaves us out (our silence), and then it merges like a healed site,
        its stream starting at the merge's limit (_install_joined)."""
        known = self.site_epochs.get(site, 0)
        if not known or not h.epoch or h.epoch == known or self._joiner_started_over(site, h):
            return False
        if self._epoch_refused.get(site) != h.epoch:
            self._epoch_refused[site] = h.epoch
            self._log("site %d answers as a new incarnation (epoch %d, we read epoch %d): "
                      "not in this view; it comes back by a merge" % (site, h.epoch, known), now)
        self.counters["hellos_new_incarnation"] += 1
        # (a link to the old incarnation that still lives is kept: that one is the site we read)
        return True

    def _joiner_started_over(self, site: int, h: SiteHello) -> bool:
        """A HELLO request of a later session from the very daemon our link to `site` speaks
        with, where `site` joins us in the merge being agreed: its end of the link started over
        under another epoch (a fork's representative that took its site's kept state after it
        asked us: _answer_of_another_epoch). A joining site is in no view of ours yet, and the
        merged view reads its epoch from the link it starts with (_install_joined), so this is
        no new incarnation to refuse: the link starts again with that epoch. Not where the
        merge took another incarnation of that site (its MERGE named another epoch:
        _merge_epochs): that one's READY is what the merge waits for, and a daemon speaking
        for another epoch never sends it (_merge_took_another)."""
        link = self.links.get(site)
        return (self.merging is not None and site in self.merging.joined and link is not None
                and link.peer == h.sender and h.request and h.session > link.peer_session
                and not self._merge_took_another(site, h.epoch))

    def _merge_took_another(self, site: int, epoch: int) -> bool:
        """The merge under way took another incarnation of `site` than `epoch` (a MERGE or READY of
        it names its epoch). Seed 190147 --lan-splits: b2, a fork of site b alone, decided view 3
        with site a at the point where its ring met b3's and took b3's state (its READY went out as
        it stood down, with no link left: nowhere); its end of the link to a1 started over under
        b3's epoch and a1 took it for the joiner starting over. a1 read the new epoch while its
        decided merge waited for the fork's READY, with a live link to the site: never suspected,
        never installed, and the kept side's merge waited for a1 for ever. Refused, the link to the
        fork's end goes silent and the merge goes on as with a joined site that dies: given up
        before our decision, left out by the next view (chained) after it."""
        taken = self._merge_epochs(self.merging).get(site) if self.merging is not None else None
        if not taken or taken == epoch:
            return False
        self.counters["hellos_joiner_of_another_incarnation_than_the_merge"] += 1
        return True

    def _answer_of_another_epoch(self, site: int, h: SiteHello) -> bool:
        """A HELLO answer (not a request) that would start our end of a link, to a request we
        made under another epoch than ours now, or never made: the peer reads from it the
        epoch we asked with, while our records say the one we hold now, so it would refuse
        our FRONTIERs as stale for good (seed 1113 --lan-splits --client-views: b1, a fork,
        asked a2; it took b2's kept state, epoch 1, before a2's answer came, and started its
        end from it; a2's merge read b1's fork epoch and never took a FRONTIER of site b
        again, so its site's STATE never went and a1, restarted, never got the sites' state).
        Refused; we ask again at once, under a session the peer never linked to."""
        if h.request or self._asked_epoch.get(site) == self.epoch:
            return False
        self.counters["hellos_answer_of_another_epoch"] += 1
        self.outputs.append(SendHop(self._request_hello(site), h.sender[0]))
        return True

    def _request_hello(self, site: int) -> bytes:
        """Our HELLO request to `site`, encoded. Asked under another epoch than before, it
        takes a session the last request did not name: the peer may hold a link to that one,
        started from our former epoch, and a request of the same session only gets its answer
        again (_on_hello)."""
        if self._asked_epoch.get(site, self.epoch) != self.epoch:
            self._session[site] = self._session.get(site, 0) + 1
        self._asked_epoch[site] = self.epoch
        return encode_site_hello(self._hello(True, site), self.seal)

    def _fork_unread_by(self, site: int) -> bool:
        """We are a fork that `site`, of our view, does not read (fork_unread): no link with
        it, neither asked nor answered; a site we are merging with learns our epoch by the
        merge's link."""
        return self.fork_unread and not (self.merging is not None and site in self.merging.sites)

    def _behind_our_merge(self, site: int, h: SiteHello) -> bool:
        """A HELLO from a site of the merge we installed last, that still speaks from its view
        before that merge: it decided the merge (we hold its READY), and it never gives up a
        merge after its decision, so it is installing it still - not leaving us out. It may
        wait for a READY that went with a link or a representative that died after we
        installed: the link starts, and _resend gives it every READY we hold."""
        ready = self.merged_readies.get(site)
        return ready is not None and site in self.live_sites and h.view_seq < ready.site_seq

    def _answer_hello(self, peer: Pid) -> None:
        site = self.site_of[peer[0]]
        self.outputs.append(SendHop(encode_site_hello(self._hello(False, site), self.seal), peer[0]))

    def _hello(self, request: bool, site: int) -> SiteHello:
        """Our positions, our view (its seq: a merge takes a seq above both sides'; its
        sites), and the session of our end of the link to `site` (a request: of the next)."""
        link = self.links.get(site)
        session = link.session if link is not None else hop_session(self._session.get(site, 0) + 1, site)
        # a merge we gave up counts as a view: a site that decided it sees that we will never
        # install it (it holds a link to us, see _on_hello, and suspects us)
        return SiteHello(self.me, self.site_id, request, self._positions(),
                         max(self.view_seq, self.given_up_view), tuple(sorted(self.live_sites)), session,
                         self.epoch)

    def _link_sites(self) -> List[int]:
        """The neighbour sites we keep a link with: those of our view, and during a merge
        those of the other view."""
        extra = self.merging.sites if self.merging is not None else frozenset()
        return [s for s in self.configured_neighbours if s in self.neighbours or s in extra]

    def _start_link(self, site: int, peer: Pid, positions: Dict[int, int], now: float,
                    peer_session: int, peer_epoch: int = 0) -> None:
        self._session[site] = self._session.get(site, 0) + 1
        session = hop_session(self._session[site], site)
        self._link_epochs[site] = peer_epoch
        if peer_epoch and (peer_epoch != self.site_epochs.get(site) or site not in self.epochs_first_hand):
            if site not in self.site_epochs:  # (our ring will know it already where it delivers it)
                self._pass_on_epoch(site, peer_epoch)
            self.site_epochs[site] = peer_epoch
            self.epochs_first_hand.add(site)
            self.to_ring.append(SiteRecord(SITE_EPOCH, site, 0, peer_epoch, EPOCH_FROM_HELLO))
        self.links[site] = HopLink(self.me, peer, self.hop_settings, self.seal, now, session, peer_session,
                                   self.link_refusals)
        self._readers[site] = SiteRecordReader()
        self._inbox[site] = {}
        self._next_seq[site] = 1
        self._out_bytes[site] = bytearray()
        self._resent_upto[site] = {}
        self.suspect_at.pop(site, None)
        self.asked_since_s.pop(site, None)
        self.peer_positions[site] = dict(positions)
        self._tell_epochs(site)
        self.routed_around.discard(site)
        self.dead_links.discard(site)
        self.grace_extended.discard(site)
        self._report_links()  # (the trees come back to this link where our LINKS comes in order)
        resent = self._resend(site, positions)
        self._log("HOP link to %s#%d (site %d) starts; %d records sent again by its positions"
                  % (peer[0], peer[1], site, resent), now)
        self._unpark_merges()
        if all(s in self.links for s in self._link_sites()):
            self.hello_due_s = None

    def _on_the_way(self, site: int) -> Dict[int, int]:
        """Source site -> the highest site_seq of it that an earlier _resend put in our link to
        `site` and that is still on its way: the link delivers every byte of its stream, in
        order, or dies (and starts afresh, with this forgotten), so a resend does not queue
        those records a second time behind the first. The positions a HELLO, a LINKS change or
        a PROPOSE brings are what the peer's ring holds, and lag a backlog that crosses a slow
        link: each such resend queued the same backlog again, and what came after it (an ARU,
        the view's last records) waited behind every copy (seed 221367: b1 queued 153 of its
        messages for a2 twice, 58 KB each at 0.9 Mbit/s, 57 ms apart; a2 had b's ARU, and its
        view without the killed site, 0.5 s late). Only while the link is busy: once the peer
        has every packet we sent, a resend goes by its positions alone, as before (a record
        it refused, or a stream numbered afresh since, is sent again)."""
        marks = self._resent_upto.setdefault(site, {})
        link = self.links.get(site)
        if link is None or (link.idle() and not self._out_bytes.get(site)):
            marks.clear()
        # (a stream numbered afresh, a joined or a new incarnation's, has a kept deque of its own)
        return {source: upto for source, (kept, upto) in marks.items() if self.kept.get(source) is kept}

    def _resend(self, site: int, positions: Dict[int, int], trees: Optional[Iterable[int]] = None) -> int:
        """What the site lacks (by its positions) of the trees that go through us to it; our
        own PROPOSE too while a view is being agreed (`trees`: of these trees only, after they
        changed). Returns the messages sent again."""
        out = self._out_bytes[site]
        resent = 0
        on_the_way = self._on_the_way(site)
        sources = [(s, s) for s in self.live_sites if s not in self.frozen]
        for c in (self.closing, self.closing_next):
            if c is not None:
                sources += [(x, h) for x, h in c.holder.items()]
        if trees is not None:
            sources = [(x, h) for x, h in sources if h in set(trees)]
        floor = self.join_floor.get(site, 0)  # a site that joined us lacks nothing older
        for source, tree_of in sources:
            tree = self.trees.get(tree_of)
            if tree is None or site not in tree.children(self.site_id) or site in self.forward_held:
                continue
            upto = min(self.passed_seq[source], self.applied_seq[source])
            c = self._closing_of(source)
            if c is not None:
                upto = min(upto, c.cut[source])
            base = self.kept_base[source]
            upto = min(upto, base + len(self.kept[source]))
            start = max(positions.get(source, 0), on_the_way.get(source, 0), base)
            if start > positions.get(source, 0):
                self.counters["site_records_on_their_way"] += max(0, min(start, upto) - max(
                    positions.get(source, 0), base))
            for i in range(start - base, upto - base):
                if self.kept[source][i].lts > floor:
                    out += encode_site_record(self.kept[source][i])
                    resent += 1
            if upto > on_the_way.get(source, 0):
                self._resent_upto[site][source] = (self.kept[source], upto)
            if source in self.frozen:
                continue
            if source == self.site_id:
                frontier, seq = self.safe_ring_lts, self.passed_seq[source]
            else:
                frontier, seq = self.passed_frontier[source], self.passed_frontier_seq[source]
            if frontier:
                epoch = self.epoch if source == self.site_id else self.site_epochs.get(source, 0)
                out += encode_site_record(SiteRecord(SITE_FRONTIER, source, frontier, seq, epoch=epoch))
            if self.passed_aru[source]:  # (what passed the gate since the last merge)
                out += encode_site_record(SiteRecord(SITE_ARU, source, self.passed_aru[source],
                                                     max(self.aru_floor_view, self.view_seq)))
        if trees is not None:
            self.counters["site_records_resent"] += resent
            return resent
        # the link state we know (a LINKS record in flight may have died with a link or a
        # representative: a new link carries it all again; older versions are dropped)
        for about, (version, down, settled) in sorted(self.link_reports.items()):
            out += encode_site_record(_links_record(about, version, settled, down - settled))
        mine = self.proposals.get(self.site_id)
        if mine is not None:
            # (after our decision too: a survivor may still lack it, as when the representative
            # that flooded it stood down for a daemon that came back, and its links went with it)
            out += encode_site_record(self._proposal_record(mine))
        if self.merging is not None:  # (until it is installed: a site may lack a MERGE or a READY)
            for r in list(self.merging.proposals.values()) + list(self.merging.ready.values()):
                out += encode_site_record(r)
        for r in self.giveups.values():  # a site that decided that merge waits for it
            out += encode_site_record(r)
        for r in self.ended_giveups.values():  # (the same, of an incarnation of ours that ended)
            out += encode_site_record(r)
        # (a site of our last merge may still wait for a READY, while we merge the next one
        # too: seed 1191 --cut-after-merge, b's READY of view 3 lost on a cut b - c link, b
        # merging view 4 with a when the link came back; a merge that is not its own ignores it)
        for r in self.merged_readies.values():
            out += encode_site_record(r)
        self.counters["site_records_resent"] += resent
        return resent

    def _merge_unreachable(self, r: SiteRecord) -> bool:
        """A MERGE that brings in a neighbour site we have no link with (its HELLO has not
        come: the link to it is still cut, though another site reaches it, or the heal's
        HELLOs are still on their way) does not go into our ring yet: the merged view could
        not hold (a merge needs a direct link to each site it brings in). It is parked, and taken when that
        link starts (its sender flooded it once, and the others' decision needs ours), or after
        a grace round that link if it stays down (_take_parked_around)."""
        try:
            sites, _ = decode_site_view_body(r.body)
        except RingWireError:
            return False  # (counted where the ring delivers it)
        return any(s in self.configured_neighbours and s not in self.links
                   for s in sites - set(self.live_sites))

    def _merge_taken_around(self, r: SiteRecord) -> bool:
        """A MERGE of the merge whose sites we took round our dead links already (another
        site's MERGE of it, or one sent again on a link that started): our link state says so,
        and parking it for another grace only delays the decision by that grace."""
        try:
            sites, _ = decode_site_view_body(r.body)
        except RingWireError:
            return False
        missing = {s for s in sites - set(self.live_sites)
                   if s in self.configured_neighbours and s not in self.links}
        return bool(self.merge_around) and frozenset(sites) == self.merge_around \
            and missing <= self.routed_around

    def _take_parked_around(self, now: float) -> None:
        """A MERGE parked for SITE_GRACE_S: the direct link to a site it brings in did not
        start (HELLO every SITE_HELLO_EVERY_S meanwhile), so it is down, as a dead link past
        its grace. If every such site is reachable through the sites we have links with (over
        the links nobody reported down), we route around it: our link to it is reported down
        (LINKS, flooded: every site's trees of the merged view go round it) and the MERGE goes
        into our ring. Else it stays parked, and is looked at again a grace later."""
        for site in sorted(self.merge_parked):
            r = self.merge_parked[site]
            if now < self.merge_parked_at.get(site, now) + SITE_GRACE_S and not self._merge_taken_around(r):
                continue  # (one of a merge taken round already goes with it)
            sites, _ = decode_site_view_body(r.body)  # (it decoded when it was parked)
            missing = {s for s in sites - set(self.live_sites)
                       if s in self.configured_neighbours and s not in self.links}
            costs = self._live_costs()
            for s in range(len(self.sites)):
                if s != self.site_id and s not in self.links:
                    costs[self.site_id][s] = costs[s][self.site_id] = 0
            if set(dissemination_tree(costs, self.site_id, sites).unreachable) & missing:
                self.merge_parked_at[site] = now
                continue
            del self.merge_parked[site]
            waited_s = now - self.merge_parked_at.pop(site, now)
            self._log("MERGE of site %d waited %.1f s for links to sites %s: reached through "
                      "others, routed around" % (site, waited_s, sorted(missing)), now)
            self.counters["site_merges_routed_around"] += 1
            self.merge_around = frozenset(sites)
            self.routed_around |= missing
            self.dead_links |= missing
            self._report_links()
            if r.site_seq > self.view_seq:
                self._from_link(site, r, around=True)

    def _unpark_merges(self) -> None:
        """The parked MERGEs that a new link makes reachable go into our ring now (one of a
        view we are past already says nothing)."""
        for site, r in sorted(self.merge_parked.items()):
            del self.merge_parked[site]
            self.merge_parked_at.pop(site, None)
            if r.site_seq > self.view_seq:
                self._from_link(site, r)  # (parked again if still unreachable)

    def _hop_output(self, site: int, out: HopOutput, now: float) -> None:
        link = self.links[site]
        for datagram in out.send:
            self.outputs.append(SendHop(datagram, link.peer[0]))
        inbox = self._inbox[site]
        for seq, payload in out.deliver:
            inbox[seq] = payload
        while self._next_seq[site] in inbox:
            payload = inbox.pop(self._next_seq[site])
            self._next_seq[site] += 1
            try:
                records = self._readers[site].feed(payload)
            except RingWireError as exc:
                self.counters["hop_stream_broken"] += 1
                self._drop_link(site, "its stream does not decode (%s)" % exc, now)
                return
            for r in records:
                self._from_link(site, r)
        for event in out.events:
            self.counters["hop_peer_dead_" + event.reason] += 1
            self._drop_link(site, "peer dead (%s)" % event.reason, event.at_s)
            return

    def _from_link(self, site: int, r: SiteRecord, around: bool = False) -> None:
        """A record from the link to `site`: into our ring, once (a HELLO's resending may
        repeat what the ring already has). `around`: a parked MERGE taken (see
        _take_parked_around)."""
        if r.kind == SITE_EPOCH:
            self._epoch_from_link(site, r)
            return
        if r.kind in (SITE_FRONTIER, SITE_UNRELIABLE) and self._stale_epoch(r):
            self.counters["site_epochs_refused"] += 1
            return
        known = r.site in self.streams or (self.merging is not None and r.site in self.merging.sites)
        if (r.site == self.site_id or r.kind in (SITE_SUSPECT, SITE_JOIN)
                or not (known or (r.kind == SITE_MERGE and r.site < len(self.sites)))):
            self.counters["site_records_not_for_us"] += 1
            return
        if r.kind == SITE_UNRELIABLE:  # outside the stream: no place to check it by
            self.to_ring.append(r)
            return
        if self._far_ahead(r):
            self.counters["site_records_refused_far_ahead"] += 1
            return
        if r.kind == SITE_MERGE and not around and self._merge_unreachable(r) \
                and not self._merge_taken_around(r):
            self.counters["site_merges_unreachable"] += 1
            parked = self.merge_parked.get(r.site)
            if parked is None or parked.site_seq <= r.site_seq:
                self.merge_parked[r.site] = r
                self.merge_parked_at.setdefault(r.site, self.now_s)
            return
        key: Tuple[int, ...] = (r.kind, r.site)
        if r.kind in (SITE_MERGE, SITE_READY, SITE_GIVEUP):
            # (two incarnations of a site, forks both answering a heal, each send theirs: the
            # one that came first must not hide the other's, which may be the one we merge)
            key = (r.kind, r.site, self._record_epochs(r).get(r.site, 0))
        if r.kind == SITE_ARU:
            # an ARU counts only in its own view (_aru_record): one of the view before a merge,
            # refused after we installed it, must not hide the same lts announced again in the
            # merged view (seed 3163 --hostile 0.1 --key: c1 waited for ever for b1's ARU)
            key = (r.kind, r.site, r.site_seq)
        mark = r.site_seq if r.kind in (SITE_MSG,) + SITE_FLOODED_KINDS else r.lts
        # a joined site's stream is numbered afresh from its first message above the merge's
        # limit (a restarted site's from 1): what we applied of its old stream says nothing
        rebased = r.site in self.join_hold or r.site in self.join_after_lts
        if mark <= max(self.injected.get(key, 0),
                       self.applied_seq[r.site] if r.kind == SITE_MSG and not rebased else 0):
            self.counters["site_records_duplicate"] += 1
            return
        if self._held_ahead(r):
            self._hole_since.setdefault(r.site, (self.now_s, site))
            return
        self.injected[key] = mark
        if r.kind == SITE_MSG and rebased:
            self.join_injected[r.site] = (r.site_seq, r.lts)
        self.orderer.transport.saw_lts(r.lts)  # our site's next message comes after it
        self.to_ring.append(r)
        if r.kind == SITE_MSG and (r.site in self._ahead or r.site in self._frontier_ahead):
            self._release_ahead(site, r.site)

    def _epoch_from_link(self, site: int, r: SiteRecord) -> None:
        """An EPOCH from a neighbour site: only as heard (a first-hand one is our own
        representative's, from a HELLO), of a third site, and not beyond EPOCH_MAX; into our
        ring if we have none on record (_epoch_record decides, at one point of our order)."""
        if (r.service != EPOCH_AS_HEARD or r.site in (self.site_id, site)
                or r.site >= len(self.sites) or r.site_seq == 0):
            self.counters["site_records_not_for_us"] += 1
            return
        if r.site_seq > EPOCH_MAX:
            self.counters["site_epochs_refused_far_ahead"] += 1
            return
        if r.site in self.site_epochs:
            return  # (known: ours stands)
        self.to_ring.append(r)

    @staticmethod
    def _above_its_message(r: SiteRecord, message_lts: int) -> bool:
        """A record of a SITES message our ring delivered whose lts is above that message's own:
        not one our representative brought in. It takes the Lamport clock past each record's lts
        before it submits it (_from_link: saw_lts), and the ring gives the message an lts above
        that clock, so another site's record is below its message's lts. (Not our own site's: an
        ARU says our site_aru, of our own_lts, which a ring that started lower after a split may
        not have reached: seed 7 --lan-splits --groups --unreliable.) Without a key a student on
        our LAN can forge a ring packet holding a SITES message (ring_sim's forger,
        bench/sites_hostile.py's `sites_ring`); the ring bounds the message's own lts
        (LTS_AHEAD_MAX) but nothing bounded the records in it: one at the wire's limit put
        our clock where our next message no decoder takes, a
        FRONTIER at 2**40 made every real message of its site "out of order" here for good, a
        MERGE at 2**40 decided a merge whose limit the other site's messages never reach and
        whose READY it refuses as far ahead (the sites never merged again). Refused here, every
        record's lts is within the ring's own bound. (UNRELIABLE and EPOCH records are exempt:
        an UNRELIABLE one keeps its origin's lts as its name only, an EPOCH's lts says nothing;
        neither moves a clock, a stream or a view.) The same at every daemon of the site: the
        message's lts is."""
        return r.lts > message_lts and r.kind not in (SITE_UNRELIABLE, SITE_EPOCH)

    def _view_ceiling(self, ring: bool = False) -> int:
        """The highest view seq a HELLO or a view record may name: a view seq grows by one per
        change, so more than RING_SEQ_AHEAD_MAX above ours is no daemon's (a forger's, without
        a key: taken, it would make our next view a number the wire refuses). `ring`: for a
        record our ring delivered, from what every daemon of the site holds alike at that point
        (not join_sent, the representative's own)."""
        views = [self.view_seq, self.proposed_view, self.given_up_view] + ([] if ring else [self.join_sent])
        if self.merging is not None:
            views.append(self.merging.view_seq)
        return max(views) + RING_SEQ_AHEAD_MAX

    def _far_ahead(self, r: SiteRecord) -> bool:
        """A record whose lts is more than LTS_AHEAD_MAX above every lts we saw (an lts grows by
        one per message), or a view record whose view seq is past _view_ceiling: no daemon's.
        Taken, one forged at the wire's limit (2**53) would make our site's next lts one that
        every decoder refuses: our ring and our stream cut off for good."""
        lts_seen = max(self.own_lts, self.orderer.transport.max_lts_seen)
        return r.lts > lts_seen + LTS_AHEAD_MAX or self._number_far_ahead(r, self._view_ceiling())

    def _number_far_ahead(self, r: SiteRecord, view_ceiling: int) -> bool:
        """A view record whose view seq is past `view_ceiling`, or a LINKS record whose version
        is more than RING_SEQ_AHEAD_MAX above its site's last report here (a version grows by
        one per report). Taken, a forged LINKS at 2**40 stood for ever (the site's real reports
        all "older"; one within the bound still stands until its site makes that many reports:
        only a key stops it), and one of our own site at the wire's limit made our next report a
        number no decoder takes; a view record there, our next view."""
        if r.kind == SITE_LINKS:
            return r.site_seq > self.link_reports.get(r.site, (0,))[0] + RING_SEQ_AHEAD_MAX
        return r.kind in SITE_VIEW_KINDS and r.site_seq > view_ceiling

    def _held_ahead(self, r: SiteRecord) -> bool:
        """True: r came before what precedes it in its site's order (a message above the next
        one, a FRONTIER above a message we lack), which a tree that changed brings the long
        way; it waits for it. Only for the streams of our view that go on as they are."""
        if (r.kind not in (SITE_MSG, SITE_FRONTIER) or r.site not in self.live_sites
                or r.site in self.frozen or r.site in self.join_hold
                or self.closing is not None or self.merging is not None):
            return False
        have = self._stream_have(r.site)
        if have is None or (r.site in self.join_after_lts and r.lts <= self.join_after_lts[r.site]):
            return False
        if r.kind == SITE_MSG and r.site_seq > have + 1:
            self._ahead.setdefault(r.site, {})[r.site_seq] = r
        elif r.kind == SITE_FRONTIER and r.site_seq > have:
            held = self._frontier_ahead.get(r.site)
            if held is None or held.lts < r.lts:
                self._frontier_ahead[r.site] = r
        else:
            return False
        self.counters["site_records_held_ahead"] += 1
        return True

    def _stream_have(self, site: int) -> Optional[int]:
        """The last message of `site`'s stream that our ring holds or will. A site that joined
        us in the last merge, whose first message of the merged view our ring has not delivered
        yet: the last we put into our ring above the merge's limit (None: none yet, where its
        stream starts is not known here). Seed 2761 --lan-splits --groups --client-views: b1
        took c's records 79..98 from c1, then 108.. the short way round through a1 (the trees
        had changed), before c1's 99..107; with no hold for a joined site 108 went into b's
        ring, was dropped there out of order and made 99..107 duplicates: b never delivered
        c's later messages, and a1 delivered c's SAFE ones on b's ARU."""
        if site in self.join_after_lts:
            last = self.join_injected.get(site)
            return last[0] if last is not None and last[1] > self.join_after_lts[site] else None
        return max(self.injected.get((SITE_MSG, site), 0), self.applied_seq[site])

    def _release_ahead(self, link_site: int, site: int) -> None:
        """What waited for the message of `site` that just went into our ring."""
        have = self._stream_have(site)
        ahead = self._ahead.pop(site, {})
        for seq in sorted(ahead):
            if have is None or seq > have:
                self._from_link(link_site, ahead[seq])  # (held again if still early)
        frontier = self._frontier_ahead.pop(site, None)
        if frontier is not None:
            self._from_link(link_site, frontier)
        if site not in self._ahead and site not in self._frontier_ahead:
            self._hole_since.pop(site, None)

    def _restart_holed_links(self, now: float) -> None:
        """Records of a site that waited STREAM_HOLE_WAIT_S above a message that never came:
        the link they came on handed up a packet in its place (without a key, one forged in
        the link's sniffed session and seq: the real packet of that seq was then dropped as a
        duplicate, and the link will never ask for it). That link starts again: our HELLO
        names what our ring holds and the peer sends the rest (a link's own loss is NACKed
        within a round trip or two, and a tree's long way is a WAN crossing or two)."""
        for site, (since, link_site) in sorted(self._hole_since.items()):
            if site not in self._ahead and site not in self._frontier_ahead:
                del self._hole_since[site]
            elif now >= since + STREAM_HOLE_WAIT_S:
                del self._hole_since[site]
                link = self.links.pop(link_site, None)
                if link is None:
                    continue
                self.counters["hop_links_restarted_for_a_hole"] += 1
                self._log("HOP link to %s (site %d) starts again: site %d's records waited %.1f s "
                          "above a message it never brought" % (link.peer[0], link_site, site, now - since), now)
                self.suspect_at[link_site] = now + self.hop_settings.peer_silence_s + SITE_GRACE_S
                self._send_hellos(now)

    def _drop_link(self, site: int, why: str, now: float) -> None:
        link = self.links.pop(site, None)
        if link is None:
            return
        grace = self._grace_s(site)
        self._log("HOP link to %s (site %d) is over: %s; HELLO until it answers again, "
                  "for %.1f s%s" % (link.peer[0], site, why, grace,
                                    " (nobody there can take over)" if grace < SITE_GRACE_S else ""), now)
        self.suspect_at[site] = now + grace
        if self.hello_due_s is None:
            self.hello_due_s = now
        # reported at once: the other sites' reports are in by the end of the grace (a whole
        # site gone is then suspected as soon as before), and a cut link's traffic goes
        # round it a grace sooner
        self.dead_links.add(site)
        self._report_links()
        m = self.merging
        if m is not None and site in m.joined and self.closing is None and self.is_representative():
            self.to_ring.append(SiteRecord(SITE_JOIN, self.site_id, 0, m.view_seq,
                                           body=encode_site_view_body((), {})))  # give it up

    # ------------------------------------------------------------ the view of several sites
    # The recovery across sites (the thesis leaves it open; lab_guide.md, "Sites: when one
    # goes away"). 1. A representative whose link to a neighbour died and that heard no HELLO
    # from that site within SITE_GRACE_S submits SUSPECT to its ring. 2. Where its ring
    # delivers it (or another site's PROPOSE for a newer view), every daemon of the site
    # freezes the lost sites' streams there (their later records are held back) and makes the
    # site's PROPOSE: the lost sites, its own frontier, and per site what it holds; the
    # representative floods it to every site. 3. When a site has the PROPOSE of every
    # survivor for the same lost sites (survivors: the others that it can still reach), it
    # decides, the same everywhere: each lost site's stream ends at the most any survivor
    # held (`cut`; the lowest such site sends it to those that lack it, down its own tree),
    # and the old view ends at limit_lts, the highest frontier proposed. 4. Every daemon
    # delivers up to limit_lts; the first message that cannot go in the old view (a SAFE one
    # the lost sites never said they held, or one a lost site's decided frontier has not
    # passed: a hole may be before it, _hole_free_key) starts the TRANSITIONAL view; when
    # nothing up to limit_lts is left, the REGULAR view goes, without the lost sites. A
    # PROPOSE that names other lost sites starts the next view seq with both sets.

    def _suspect(self, sites: Iterable[int], now: float) -> bool:
        """False: not now (a view is being installed; come back after it)."""
        if self.closing is not None and not self._chainable():
            return False
        view = max(self.view_seq, self.proposed_view) + 1
        if not frozenset(sites) - self.proposal_lost:
            return True
        if self.suspect_sent >= view:
            # our SUSPECT for this view is still on its way through the ring: a site it does
            # not name waits for it (then the next view seq names both), else it is forgotten
            waiting = frozenset(sites) - self.suspect_lost
            if waiting:
                self.counters["site_suspects_waiting"] += 1  # (polls: a test sees the race ran)
            return not waiting
        lost = frozenset(sites) | self.proposal_lost
        self.suspect_sent, self.suspect_lost = view, lost
        self._log("sites %s silent after their link died: suspected gone (view %d)"
                  % (sorted(lost), view), now)
        self.to_ring.append(SiteRecord(SITE_SUSPECT, self.site_id, 0, view,
                                       body=encode_site_view_body(lost, {})))
        return True

    def _view_record(self, r: SiteRecord, passed: List[SiteRecord]) -> None:
        """A SUSPECT of our site or another site's PROPOSE, where our ring delivered it."""
        try:
            lost, entries = decode_site_view_body(r.body)
        except RingWireError:
            self.counters["site_records_undecodable"] += 1
            return
        view = r.site_seq
        if r.kind == SITE_SUSPECT and r.site == self.site_id and self.closing is not None \
                and not (self._chainable() and lost & set(self._current_sites())):
            self.suspect_sent = 0  # a view is being installed: the suspicion comes back after it
            for x in lost:
                self.suspect_at.setdefault(x, 0.0)
            return
        if self.merging is not None and self.closing is None and (
                r.kind == SITE_SUSPECT or (r.site in self.live_sites and view > self.view_seq)):
            self._abandon_merge("a site is gone (%s of site %d)" % (SITE_RECORD_KINDS[r.kind], r.site), passed)
            if r.kind == SITE_SUSPECT:
                view = max(view, self.proposed_view + 1)
        if r.kind == SITE_SUSPECT:
            if r.site == self.site_id and view > max(self.proposed_view, self.view_seq):
                self._propose(view, lost, passed)
            return
        if r.site == self.site_id or r.site not in self._watched_sites() or view <= self.view_seq:
            return
        if self.site_id in lost:  # it cannot reach us: then it is gone for us too
            lost = (lost - {self.site_id}) | {r.site}
        if r.site in self.proposal_lost and lost == self.proposal_lost:
            return  # from a site we leave out already: not a survivor's proposal
        if view > self.proposed_view and (self.closing is None or self._chainable()):
            self._propose(view, lost, passed)
        if view != self.proposed_view or r.site in self.proposals or r.site in self.proposal_lost:
            return
        if lost != self.proposal_lost:
            if self.closing is None or self._chainable():
                self._propose(view + 1, lost | self.proposal_lost, passed)
            return
        self.proposals[r.site] = SiteProposal(lost, r.lts, entries, decode_site_view_bases(r.body))
        passed.append(r)  # the representative floods it on
        self._maybe_decide(passed)

    def _chainable(self) -> bool:
        """A view without lost sites is being installed (decided, not installed yet: after a
        loss, or a merge), and no next one is decided: a site of it that dies now is left out
        by the next view, agreed meanwhile and installed right after it (else we would wait
        for it for ever: its frontier, or its READY)."""
        c = self.closing
        return c is not None and self.closing_next is None

    def _watched_sites(self) -> List[int]:
        """The sites whose loss we watch for: those of our view, and while a merge we decided
        is being installed, those of the merged view (a joined site may die before it)."""
        c = self.closing
        return list(c.sites_next) if c is not None and c.joined else list(self.live_sites)

    def _current_sites(self) -> List[int]:
        """The sites of our view, or of the view being installed: a next proposal's."""
        c = self.closing
        return list(self.live_sites) if c is None else list(c.sites_next or c.survivors)

    def _closing_of(self, site: int) -> Optional[ViewClosing]:
        """The decided view change that leaves `site` out, if any."""
        for c in (self.closing, self.closing_next):
            if c is not None and site in c.cut:
                return c
        return None

    def _propose(self, view: int, lost: Iterable[int], passed: List[SiteRecord]) -> None:
        sites = self._current_sites()
        lost = (frozenset(lost) - {self.site_id}) & set(sites)
        reach = dissemination_tree(self._live_costs(settled_only=True), self.site_id, set(sites) - lost)
        lost |= frozenset(reach.unreachable)
        self.proposed_view, self.proposal_lost = view, lost
        if self.closing is not None:  # (a chained proposal: see _chain_decide)
            self.refrozen = frozenset(x for x, h in self.closing.holder.items() if h in lost)
        for x in lost:
            self.frozen.setdefault(x, [])
        entries = {s: (self.applied_seq[s], self._proposed_aru(s), self.streams[s].frontier_lts)
                   for s in self.live_sites}
        mine = SiteProposal(lost, self.own_lts, entries, self._merge_bases())
        self.proposals = {self.site_id: mine}
        passed.append(self._proposal_record(mine))
        self._log("proposes view %d without sites %s" % (view, sorted(lost)), None)
        self._maybe_decide(passed)

    def _proposed_aru(self, site: int) -> int:
        """A site's ARU as a PROPOSE says it. A site being left out (the view change is past
        its transitional view) holds nothing back here (LOST_SITE_ARU, beyond the wire's
        2**53): a proposal made meanwhile says the ARU decided for it instead, the last one
        the survivors agreed on (0 if none was: a lower ARU never makes a message SAFE;
        nobody decides on it anyway, the next view leaves out only sites of the current one)."""
        aru = self.streams[site].stable_aru
        if aru != LOST_SITE_ARU:
            return aru
        c = self._closing_of(site)
        return min(c.aru.get(site, 0) if c is not None else 0, MAX_WIRE_COUNTER)

    def _presumed_aru(self, proposer: int, site: int, aru: int, chained: bool) -> bool:
        """A chain after a merge not installed here: a joined site's PROPOSE says the ARU of a
        site of our old view as its stream of it opened, at the merge's limit (open_stream),
        which that site never said: every message of our old view below the limit would pass
        it, held there or not. Only the sites of our old view know what it held of them. (One
        above the limit that site said in the merged view: it counts, as at the joined site,
        which delivers that view's SAFE messages on it; below the limit the two decisions may
        differ, for the joined site has none of our old view's messages.) Seed 1430 --groups
        --client-views --cut-after-merge: the a - c link died after merge view 2 was decided;
        b's PROPOSE of view 3 (c left out) said c's ARU 458857, the limit, and a1 delivered
        its own SAFE of lts 458855, which c never had, in view 1's regular part {a, c} (c's
        last ARU was 458840)."""
        c = self.closing
        return chained and c is not None and proposer in c.joined and site not in c.joined \
            and aru <= c.limit_lts

    def _proposal_record(self, p: SiteProposal) -> SiteRecord:
        return SiteRecord(SITE_PROPOSE, self.site_id, p.frontier, self.proposed_view,
                          body=encode_site_view_body(p.lost, p.entries, p.bases))

    def _merge_bases(self) -> Dict[int, int]:
        """Per site, its last message at or below the limit of the merge being installed (or
        just installed), where we know it: the sites of our old view (`kept` is not trimmed
        during a merge), and the joined sites whose first message above it we had."""
        c = self.closing
        bases = dict(self.joined_base)
        if c is not None and c.joined:
            for s in self.live_sites:
                below = sum(1 for r in self.kept[s] if r.lts <= c.limit_lts)
                bases[s] = self.kept_base[s] + below
        return bases

    def _maybe_decide(self, passed: List[SiteRecord]) -> None:
        survivors = sorted(set(self._current_sites()) - self.proposal_lost)
        chained = self.closing is not None and self.proposed_view > self.closing.view_seq
        if (self.closing is not None and not (chained and self._chainable())) \
                or any(s not in self.proposals for s in survivors):
            return
        props = self.proposals
        cut, holder, frontier = {}, {}, {}
        for x in sorted(self.proposal_lost):
            cut[x] = max(p.entries.get(x, (0, 0, 0))[0] for p in props.values())
            holder[x] = min(s for s, p in props.items() if p.entries.get(x, (0, 0, 0))[0] == cut[x])
            said = {s: p.entries.get(x, (0, 0, 0))[1] for s, p in props.items()}
            aru = max(a for s, a in said.items() if not self._presumed_aru(s, x, a, chained))
            if max(said.values()) > aru:
                self.counters["site_arus_presumed_by_a_joined_site"] += 1
            frontier[x] = max(p.entries.get(x, (0, 0, 0))[2] for p in props.values())
            if x in self.streams:  # (a joined site's stream opens where the merge is installed)
                self.merge.site_stable(self.streams[x], aru)
        for s, p in sorted(props.items()):
            # each survivor's own ARU when it proposed: what it delivered as SAFE before then
            # counted on it, and the others need it if it dies before it says it again
            if s in self.streams and s in p.entries:
                self.merge.site_stable(self.streams[s], p.entries[s][1])
        limit = max(p.frontier for p in props.values())
        reason = "sites %s gone" % sorted(self.proposal_lost)
        base = {x: max(p.bases[x] for p in props.values() if x in p.bases)
                for x in self.proposal_lost if any(x in p.bases for p in props.values())}
        decided = ViewClosing(self.proposed_view, survivors, self.proposal_lost, cut, holder,
                              limit, frontier, reason=reason,
                              aru={x: self.streams[x].stable_aru for x in self.proposal_lost
                                   if x in self.streams}, base=base)
        self._log("view %d decided: sites %s, %s; messages up to lts %d in the old view"
                  % (self.proposed_view, survivors, reason, limit), None)
        if chained:
            self._chain_decide(decided)
        else:
            self.closing = decided
            self.merge.deliver_limit_lts = limit
            self._rebase_lost_joined(decided)
        if chained and self.closing.joined:
            # (the merge's trees without the dead sites: our old view's messages still reach
            # the sites of our old view through those sites only, until the merge is installed)
            self.tree_groups = {s: g - self.proposal_lost for s, g in self.tree_groups.items() if s in survivors}
            self.trees = merged_view_trees(self._live_costs(), self.tree_groups)
        else:
            self.tree_groups, self.tree_groups_limit_lts = {}, None
            self.trees = dissemination_trees(self._live_costs(), survivors)
        self.neighbours = [s for s in self.neighbours if s in survivors]
        for x in self.proposal_lost:
            self.links.pop(x, None)
            self.suspect_at.pop(x, None)
            self.routed_around.discard(x)
            self.dead_links.discard(x)
            self.grace_extended.discard(x)
        for x in sorted(self.frozen):
            held, self.frozen[x] = self.frozen[x], []
            for r in held:
                self._lost_site_record(r)
        if self.is_representative():
            for site in list(self.links):
                entries = props[site].entries if site in props else {}
                self._resend(site, {s: e[0] for s, e in entries.items()})
        # our frontier now (above every proposed one), once our ring has made this point safe:
        # the old view can end everywhere
        passed.append(SiteRecord(SITE_FRONTIER, self.site_id, self.own_lts, self.applied_seq[self.site_id],
                                 epoch=self.epoch))

    def _chain_decide(self, decided: ViewClosing) -> None:
        """The next view is decided while the one before it is still carried out: a survivor
        of that one died after its decision, and would never bring its stream up to its
        limit. Both are installed in turn, the same at every daemon that did not install the
        first yet; one that did goes from it to the next as usual. The dead sites' streams end
        at the next decision's cut, and so do those of the first's lost sites whose last
        messages were to come from a dead site (`holder`): any message of theirs that no
        survivor holds was delivered by no survivor."""
        c = self.closing
        self.closing_next = decided
        for x in sorted(self.refrozen):
            held = {s: p.entries.get(x, (0, 0, 0))[0] for s, p in self.proposals.items()}
            c.cut[x] = min(c.cut[x], max(held.values()))
            c.holder[x] = min(s for s, seq in held.items() if seq >= c.cut[x])
        self.refrozen = frozenset()
        self._skip_old_view_records_nobody_holds(c, decided)
        self._log("view %d is installed first: sites %s of it died after its decision; view %d follows"
                  % (c.view_seq, sorted(decided.lost), decided.view_seq), None)

    def _skip_old_view_records_nobody_holds(self, c: ViewClosing, decided: ViewClosing) -> None:
        """A dead site x of our old view, in a chain after a merge (c): its last messages of
        the old view, up to its merge base (its last at or below c's limit), reach the joined
        sites never (their stream of x starts just above the base) and the sites of our old
        view only from x. If every survivor of our old view holds x's stream up to the same
        point below the base (a link to x cut before those messages crossed it), nobody holds
        what lies between, and nobody ever will: each of those survivors goes on from the base
        alike (as `_rebase_lost_joined` does for a joined site), or it would wait for ever for
        a message that no survivor delivered. (Equal holdings only: a survivor that lacks what
        another of our old view holds gets it as before.)"""
        for x in sorted(decided.lost):
            base = decided.base.get(x)
            if x in c.joined or x not in self.streams or base is None:
                continue
            ours = [p.entries.get(x, (0, 0, 0)) for s, p in self.proposals.items() if s not in c.joined]
            held = [e[0] for e in ours]
            if not held or min(held) != max(held) or self.applied_seq[x] != held[0] or held[0] >= base:
                continue
            # (each of us holds x's messages up to the highest of our frontiers of it: past
            # it lies the hole, so the old view's regular part ends there)
            c.skipped_frontier[x] = max(e[2] for e in ours)
            self.counters["old_view_records_held_by_no_survivor"] += base - held[0]
            self._log("site %d's old-view messages %d..%d: held by no survivor, skipped"
                      % (x, held[0] + 1, base), None)
            self.applied_seq[x] = self.kept_base[x] = base
            self.passed_seq[x] = max(self.passed_seq[x], base)
            self.kept[x] = collections.deque()

    def _rebase_lost_joined(self, c: ViewClosing) -> None:
        """A lost site that joined us in the last merge and whose first message of the merged
        view we have not had: its stream goes on from its last message at or below the
        merge's limit, as a survivor that knew it proposed (then what it sent in the merged
        view comes from `holder`); if none knew it, no survivor had such a message, and its
        stream ends at its cut."""
        for x in sorted(c.lost):
            if x in self.join_after_lts and x in self.streams:
                del self.join_after_lts[x]
                first = max(self.applied_seq[x], c.base.get(x, c.cut[x]))
                self.applied_seq[x] = self.kept_base[x] = first
                self.passed_seq[x] = max(self.passed_seq[x], first)
                self.kept[x] = collections.deque()

    def _lost_site_record(self, r: SiteRecord) -> bool:
        """A record of a site being left out: held back until the decision, then applied up to
        its cut; its frontier and ARU are what the decision says."""
        if r.kind != SITE_MSG or r.site_seq <= self.applied_seq[r.site]:
            return False
        c = self._closing_of(r.site)
        if c is None or r.site in self.refrozen:
            held = self.frozen[r.site]
            if not held or held[-1].site_seq < r.site_seq:
                held.append(r)
            return False
        if r.site_seq > c.cut.get(r.site, 0) or r.site_seq != self.applied_seq[r.site] + 1:
            self.counters["site_records_after_cut"] += 1
            return False
        self._merge_message(r, self.streams[r.site])
        return True

    def _close_step(self) -> None:
        c, after = self.closing, self.closing_next
        if any(self.applied_seq[x] < c.cut[x] for x in c.lost) or self.refrozen:
            return
        # (a dead site that joined us in the merge being installed has no stream here yet:
        # its cut is reached after the merge is installed, see _install_view)
        if after is not None and any(self.applied_seq[x] < after.cut[x] for x in after.lost
                                     if x not in c.joined):
            return
        if not c.closed:
            self._close_lost_streams(c)
        if after is not None and not after.closed:
            # (the dead survivors' streams reach this view's limit too: they end at their cut)
            here = after.lost - c.joined
            self._close_lost_streams(after, c.limit_lts, None if here == after.lost else here)
        hole_free_key = self._hole_free_key(c, after)
        if not c.transitional:  # (the lost streams' frontiers now stand at the limit: see below)
            self.merge.deliver_below_key = hole_free_key
        self.merge.deliver_ready()
        while True:
            if any(self.streams[s].frontier_lts < c.limit_lts for s in c.survivors):
                return
            head = min((s.ordered[0] for s in self.streams.values() if s.ordered),
                       key=lambda m: m.key, default=None)
            if head is None or head.lts > c.limit_lts:
                dead = after.lost if after is not None else frozenset()
                if c.joined and not set(c.sites_next) - dead <= set(self.merging.ready):
                    return  # a site of the merge may still give it up: its READY or GIVEUP comes
                self._install_view()
                return
            if not c.transitional and hole_free_key is not None and head.key >= hole_free_key:
                # everything the lost sites' decided frontiers passed is delivered (the
                # survivors' frontiers passed the limit): what is left may follow a hole
                self._emit_view(CONF_TRANSITIONAL)
                self.merge.deliver_ready()
                continue
            blocked_by_lost = head.complete and head.service & SAFE_MESS and head.lts <= min(
                self.streams[s].stable_aru for s in c.survivors)
            if after is not None and head.complete and head.service & SAFE_MESS and head.lts <= min(
                    self.streams[s].stable_aru for s in c.survivors if s not in after.lost):
                # only the ARU of a survivor that died keeps it out (what it said last before
                # it died): in this view's transitional part, SAFE counts the living survivors
                if not c.transitional:
                    self._emit_view(CONF_TRANSITIONAL)
                for y in after.lost:
                    if y in self.streams:
                        self.streams[y].stable_aru = LOST_SITE_ARU
                self.merge.deliver_ready()
                continue
            if c.transitional or not blocked_by_lost:
                return  # the survivors' ARUs will come
            self._emit_view(CONF_TRANSITIONAL)
            self.merge.deliver_ready()

    @staticmethod
    def _hole_free_key(c: ViewClosing, after: Optional[ViewClosing]) -> Optional[Tuple[int, int]]:
        """Below which {lts, site id} the old view's regular part may deliver once the lost
        sites' streams end (None: no lost site, no bound): the lowest key that the decided
        frontier of a site whose stream this close ends does not pass (SiteStream.passed: a
        site with frontier F may still send lts F + 1, which goes after a lower site's
        message of lts F + 1). The same at every survivor: the decided frontiers are agreed,
        and no survivor delivered beyond them before (its own frontier of the lost site, at
        most the decided one, had to pass what it delivered). Up to its frontier a lost site's
        messages are all within its cut; past it, it may have sent one that no survivor has,
        which the other side's order puts before ours. EVS allows no hole in a regular
        configuration (the real Spread delivers what follows the first hole in the
        transitional one): what is past it goes after TRANSITIONAL. Seed 86400 --lan-splits
        --groups --client-views at SITE_GRACE_S 0.3 s: c1, c2, c3, cut off from a and b (site
        a's frontier 196629 at c), delivered their own messages from lts 196632 on in view 0's
        regular part; a and b delivered a1's LEAVE (lts 196630) there, before them. A key,
        not an lts: a bound of lts F (s18-cv86400's) put site a's message of lts 3 after
        TRANSITIONAL at a2 (seed 160032: b's decided frontier 2), where c1 had delivered it
        in the regular part long before the cut, b's frontier 2 passing (3, 0) there."""
        ends = [(c.frontier.get(x, 0) + 1, x) for x in c.lost]
        if after is not None:  # (a chain: the survivors that died since end here too)
            ends += [(after.frontier.get(x, 0) + 1, x) for x in after.lost - c.joined]
        ends += [(f + 1, x) for x, f in c.skipped_frontier.items()]
        return min(ends, default=None)

    def _close_lost_streams(self, c: ViewClosing, at_least_lts: int = 0,
                            sites: Optional[frozenset] = None) -> None:
        """Every lost site's stream now ends at its cut. A lost site's message may depend on
        another lost site's message that no survivor has (it was delivered there, and it is
        beyond that site's cut): everything of a lost site above the lowest final frontier of
        the other lost sites is dropped, at every survivor alike (final frontier: the highest
        of the cut message's lts and the frontiers proposed; every message of the site up to it
        is within the cut). A survivor's messages never depend on one beyond a cut: it had
        every message it delivered, and the cut is the most any survivor had. `sites`: only
        these lost sites now (those of a merge not installed yet have no stream here: they
        are closed with the rest once it is; a joined site's stream starts at that merge's
        limit, above every message of the others this drops before)."""
        lost = c.lost if sites is None else sites
        final = {x: max(self.streams[x].frontier_lts, c.frontier.get(x, 0)) for x in lost}
        for y in lost:
            others = [final[x] for x in lost if x != y]
            ordered = self.streams[y].ordered
            while others and ordered and ordered[-1].lts > min(others):
                ordered.pop()
                self.counters["messages_discarded_after_a_lost_gap"] += 1
        for x in lost:  # nothing more comes from it
            self.merge.advance_frontier(self.streams[x], max(c.limit_lts, at_least_lts))
        c.closed = sites is None

    def _emit_view(self, kind: str) -> None:
        c = self.closing
        if kind == CONF_TRANSITIONAL:
            c.transitional = True
            self.merge.deliver_below_key = None  # (_hole_free_key: the regular part is over)
            for x in c.lost:  # SAFE counts the survivors only from now on
                self.streams[x].stable_aru = LOST_SITE_ARU
        sites = c.survivors if kind == CONF_TRANSITIONAL or c.sites_next is None else c.sites_next
        if kind == CONF_TRANSITIONAL and self.closing_next is not None:
            # (a chain: a survivor died after this view's decision) it may never have decided
            # this view, and then it left us out with everything of ours above the lost
            # sites' frontiers: what we deliver in this transitional part is not owed there
            # (SAFE counts the living survivors only too, _close_step)
            sites = [s for s in sites if s not in self.closing_next.lost]
        if kind == CONF_REGULAR:  # (what a fork's view delivered is of views before this one)
            self.delivered_marks, self.fork_held, self.marks_parted = {}, frozenset(), None
            self.own_numbered = {}
            self._forget_withheld_bodies()
        self.outputs.append(SiteViewChange(kind, c.view_seq, list(sites), c.reason))
        self._log("%s view %d: sites %s (%s)" % (kind, c.view_seq, sites, c.reason), None)

    def _install_view(self) -> None:
        c = self.closing
        if not c.transitional:
            self._emit_view(CONF_TRANSITIONAL)
        self._emit_view(CONF_REGULAR)
        for x in c.lost:
            self.merge.uninstall(x)
            self.gone_delivered[x] = self.streams[x].delivered_lts  # (see stand_down)
            del self.streams[x]
            self.kept[x] = collections.deque()
            self._forget_link_report(x)
        self.live_sites = list(c.survivors if c.sites_next is None else c.sites_next)
        self.view_seq = c.view_seq
        self.giveups = {s: g for s, g in self.giveups.items() if g.site_seq > self.view_seq}
        self._drop_ended_giveups()
        self.merge.lift_delivery_bounds()
        self.closing = None
        self.frozen = {}
        after, self.closing_next = self.closing_next, None
        if after is not None:  # decided meanwhile: it goes on from here
            self.closing = after
            self.frozen = {x: [] for x in after.lost}
            if c.joined:  # (the merge first: the joined sites' streams open, the dead ones' too)
                self._install_joined(c)
                self.neighbours = [s for s in self.neighbours if s not in after.lost]
                self.tree_groups = {s: g - after.lost for s, g in self.tree_groups.items() if s not in after.lost}
                self.trees = merged_view_trees(self._live_costs(), self.tree_groups)
            for y in after.lost:  # (its ARU as decided, up to the next transitional view)
                if y in after.aru:
                    self.streams[y].stable_aru = after.aru[y]
            self.merge.deliver_limit_lts = after.limit_lts
            # (the next view's regular part is bounded from the start: a dead site of it that
            # was no joined site of ours had its stream closed at the next limit by the first's
            # close (_close_lost_streams), its frontier past the decided one, and nothing else
            # keeps what follows the hole out of the regular part; _close_step sets the same
            # bound. Seed 280561 --hostile 0.1 --key: b1 and b2 delivered site 1's messages of
            # lts 144.. in view 2's regular part, above site 2's decided frontier 132; a1, to
            # which site 2 had joined by that merge, after view 3's TRANSITIONAL)
            self.merge.deliver_below_key = self._hole_free_key(after, None)
            self.merge.deliver_ready()
            self._close_step()
            return
        pending = self.proposal_lost if self.proposed_view > c.view_seq else frozenset()
        if not pending:
            self.proposals = {}
            self.proposal_lost = frozenset()
        if c.joined:
            self._install_joined(c)
        if pending:
            # a view chained after the merge was proposed, not decided yet, and the merge could
            # be installed after all (the site it leaves out came back in time): that proposal
            # is the next view's, as if made now (the others may decide it with ours already:
            # _ring_delivered decides it)
            self.frozen = {x: [] for x in pending}
        self.merge.deliver_ready()

    # ------------------------------------------------------------ merging views
    # A partition that healed (lab_guide.md, "Sites: when a partition heals"). 1. A
    # representative HELLOs the neighbour sites outside its view every SITE_PROBE_EVERY_S;
    # HELLO carries the sender's view. One from a site of a view disjoint from ours starts a
    # link and submits JOIN to our ring: the merged view's seq (above both sides') and sites.
    # 2. Where the ring delivers JOIN, or another site's MERGE for a view we can join, every
    # daemon of the site proposes MERGE (its frontier, the view's seq and sites), flooded to
    # every site. Records of the other view's sites are held back, and ours do not go to them.
    # 3. With the MERGE of every site of the new view: the old views end at limit = the highest
    # frontier proposed (each side delivers its own messages up to it, as a view change without
    # lost sites; from our proposal to the decision, nothing above our own frontier is
    # delivered), ours go to the joined sites from the first above limit (`kept` is not
    # trimmed during a merge); then TRANSITIONAL (the sites we came with), REGULAR (all). The
    # joined sites' streams start at limit, each with its first message above it. ARU records
    # carry their view: one from before the merge says nothing of the joined streams.
    # 4. The decision is final: the site floods READY, and installs the merge only with the
    # READY of every site of the new view. A loss before the decision gives the merge up (the
    # next probe starts another); so does a conflicting MERGE of a site of the new view, or
    # the death of a link to a joined site. Giving up floods GIVEUP, never sent with READY:
    # a site that decided and gets one withdraws its decision (nobody installs that merge).
    # 5. A site of the new view that dies after our decision is left out by the next view,
    # agreed meanwhile and installed right after the merge (_chain_decide; its PROPOSE carries
    # the merge bases: _merge_bases, _rebase_lost_joined).

    def _probe(self, now: float) -> None:
        self.probe_due_s = now + SITE_PROBE_EVERY_S
        if not self.is_representative() or not self.wide or self.closing is not None or self.merging is not None:
            return
        absent = [s for s in self.configured_neighbours if s not in self.live_sites]
        for site in absent:
            hello = self._request_hello(site)
            for daemon in self.sites[site]:
                self.outputs.append(SendHop(hello, daemon))
            self.counters["probes_sent"] += 1

    def _on_probe(self, site: int, h: SiteHello, now: float) -> None:
        """A HELLO from a neighbour site outside our view: a partition healed (or the other
        side has not left us out yet: then nothing)."""
        theirs = frozenset(h.view_sites)
        if site not in theirs or theirs & set(self.live_sites) or not theirs <= set(range(len(self.sites))):
            self.counters["hellos_views_overlap"] += 1
            return
        if self._kept_goes_first(site, h, now):
            return
        link = self.links.get(site)
        if link is not None and link.peer[0] == h.sender[0] and link.peer[1] > h.sender[1]:
            self.counters["hellos_old_incarnation"] += 1
            return
        if link is not None and link.peer == h.sender and h.session < link.peer_session:
            self.counters["hellos_old_session"] += 1  # (a replayed HELLO)
            return
        if link is not None and link.peer != h.sender and h.epoch and \
                self._link_epochs.get(site) not in (0, None, h.epoch):
            # another incarnation of the site than the one our live link speaks with (a fork
            # beside its kept ring, both answering the heal): no takeover, as in our view
            # (_new_incarnation). Taken, it made our merge read the fork's epoch while the
            # others read the kept one's: seed 71257 --lan-splits --groups --hostile 0.1 --key,
            # c1 linked with b1 then with b3 (a fork); when b3 took b1's state, c1 refused
            # site b's records for ever (reached round through a, never suspected)
            self.counters["hellos_other_incarnation_than_our_link"] += 1
            return
        if link is None or link.peer != h.sender or link.peer_session != h.session:
            if self._answer_of_another_epoch(site, h):
                return
            self._start_link(site, h.sender, h.positions, now, h.session, h.epoch)
        if h.request:
            self._answer_hello(h.sender)
        self._request_merge(h.view_seq, theirs, now)

    def _kept_goes_first(self, site: int, h: SiteHello, now: float) -> bool:
        """A HELLO from outside our view, of another incarnation of `site` than the one we
        read, while that one said HELLO too within SITE_FORK_WAIT_S: a site whose LAN split
        has a fork (the half without a quorum, a new epoch) beside its kept ring, and both
        left us out (we were slow to answer the kept ring's takeover: a daemon stopped for
        0.9 s at the split). Whichever of the two asked first got the merge, and the fork's
        ring forms first (alone, its consensus is quick): we went with the fork, and the kept
        ring, the site's majority, stayed alone until the split healed (CI's
        test_a_site_of_three_split...: b1 with a1). The incarnation we read goes first; the
        other waits SITE_FORK_WAIT_S at most from its first such HELLO (a site restarted
        whole merges then, whatever replays of the old one's HELLOs say)."""
        known = self.site_epochs.get(site)
        if not known or not h.epoch or h.epoch == known:
            return False
        heard = self._epoch_heard_s.get(site)
        if heard is None or now - heard >= SITE_FORK_WAIT_S:
            return False
        since = self._other_epoch_since.get(site)
        if since is None or since[0] != h.epoch:
            since = self._other_epoch_since[site] = (h.epoch, now)
        if now - since[1] >= SITE_FORK_WAIT_S:
            return False
        self.counters["hellos_of_a_fork_wait_for_the_kept_ring"] += 1
        return True

    def _request_merge(self, their_view: int, theirs: frozenset, now: float) -> None:
        if self.closing is not None or self.merging is not None or self.proposal_lost:
            return  # after the view being installed: the next probe
        view = max(self.view_seq, self.proposed_view, their_view) + 1
        if self.join_sent >= view:
            return
        self.join_sent = view
        sites = frozenset(self.live_sites) | theirs
        self._log("sites %s answer from another view: merge them into view %d" % (sorted(theirs), view), now)
        self.to_ring.append(SiteRecord(SITE_JOIN, self.site_id, 0, view, body=encode_site_view_body(sites, {})))

    def _merge_record(self, r: SiteRecord, passed: List[SiteRecord]) -> None:
        """Our site's JOIN, or another site's MERGE, where our ring delivered it."""
        try:
            sites, _ = decode_site_view_body(r.body)
        except RingWireError:
            self.counters["site_records_undecodable"] += 1
            return
        view, m = r.site_seq, self.merging
        if (r.kind == SITE_MERGE and r.site in self.live_sites and r.site != self.site_id
                and view > self.view_seq and self._went_on_without_us(r, passed)):
            return
        if r.kind == SITE_JOIN:
            if r.site != self.site_id:
                return
            if not sites:  # give it up
                if m is not None and m.view_seq == view and self.closing is None:
                    self._abandon_merge("a link to a joining site died", passed)
                return
            self._start_merge(view, sites, passed)
            return
        if r.site == self.site_id:
            return
        if m is not None and (view, sites) == (m.view_seq, m.sites):
            self._merge_proposal(r, passed)
            return
        if m is not None and self.closing is None and r.site in m.sites and view >= m.view_seq:
            self._abandon_merge("site %d proposes view %d with sites %s" % (r.site, view, sorted(sites)), passed)
        offer = self.merge_offers.get(r.site)
        if offer is None or offer.site_seq < view:
            self.merge_offers[r.site] = r  # taken now, or when the view being installed is
        if r.site in sites:
            self._start_merge(view, sites, passed)

    def _came_from_elsewhere(self, r: SiteRecord) -> bool:
        """A MERGE of a site of our view, for a newer view, made in another view than ours
        (the body names the view it comes from): that site never installed ours. It gave up
        the merge that made our view, which we decided (its link to a joined site died just
        before its decision), or it left us out."""
        if r.site not in self.live_sites or r.site == self.site_id or r.site_seq <= self.view_seq:
            return False
        try:
            _, came_from = decode_site_view_body(r.body)
        except RingWireError:
            return False
        if not came_from:
            return False
        return set(came_from) != set(self.live_sites) or {e[0] for e in came_from.values()} != {self.view_seq}

    def _went_on_without_us(self, r: SiteRecord, passed: List[SiteRecord]) -> bool:
        """Such a MERGE (see _came_from_elsewhere): its site would never send in our view, and
        we would wait for it for ever; it is lost for us, as when its PROPOSE names us. Its
        MERGE is an offer, taken (or not) after that view change."""
        if not self._came_from_elsewhere(r):
            return False
        offer = self.merge_offers.get(r.site)
        if offer is None or offer.site_seq < r.site_seq:
            self.merge_offers[r.site] = r
        if self.closing is None:
            self._leave_out_elsewhere(passed)
        return True

    def _leave_out_elsewhere(self, passed: List[SiteRecord]) -> None:
        gone = {s for s, r in self.merge_offers.items() if self._came_from_elsewhere(r)}
        if not gone - self.proposal_lost:
            return
        if self.merging is not None:
            self._abandon_merge("sites %s went on in another view" % sorted(gone), passed)
        self._log("sites %s propose a merge from a view other than ours: they are lost for us"
                  % sorted(gone), None)
        self._propose(max(self.view_seq, self.proposed_view) + 1, self.proposal_lost | gone, passed)

    def _take_offer(self, passed: List[SiteRecord]) -> None:
        if any(self._came_from_elsewhere(r) for r in self.merge_offers.values()):
            self._leave_out_elsewhere(passed)
            return
        for site, r in sorted(self.merge_offers.items(), key=lambda kv: -kv[1].site_seq):
            if r.site_seq <= self.view_seq:
                del self.merge_offers[site]
                continue
            sites, _ = decode_site_view_body(r.body)
            if r.site in sites and self._start_merge(r.site_seq, sites, passed):
                return

    def _start_merge(self, view: int, sites: frozenset, passed: List[SiteRecord]) -> bool:
        live = frozenset(self.live_sites)
        if (self.closing is not None or self.merging is not None or self.proposal_lost
                or view <= max(self.view_seq, self.proposed_view) or not live < sites
                or not sites <= set(range(len(self.sites))) or self._given_up(view, sites)):
            self.counters["site_merges_refused"] += 1
            return False
        joined = sites - live
        self.proposed_view = view
        m = self.merging = SiteMerge(view, sites, joined, self.own_lts, tree_groups=self.tree_groups)
        # nothing above our frontier goes in the old view until the limit is known (at
        # least this): a site alone in its view would deliver its next message at once
        self.merge.deliver_limit_lts = self.own_lts
        for x in joined:
            self.join_hold[x] = []
            self.injected.pop((SITE_MSG, x), None)  # (its old stream's numbers)
            self.join_injected.pop(x, None)
        # each side applied only its own side's joins and leaves: a joined site may owe
        # every message until its STATE of the merged view says its members (_install_joined,
        # _interest_state); the sites of our view stay known (we saw all of theirs)
        self.interest_known -= joined
        # (the trees stay those of our view until the decision: a tree of the merged view
        # may reach a site of our view through a joined one, which gets nothing of ours yet)
        self.forward_held = set(joined)
        # (the body names the new view's sites, and, as entries, the sites of the view we
        # come from: a site of a view that holds us learns from it that we went on without it)
        came_from = {s: (self.view_seq, 0, 0) for s in self.live_sites}
        mine = SiteRecord(SITE_MERGE, self.site_id, self.own_lts, view,
                          body=encode_site_view_body(sites, came_from, self._view_epochs()))
        m.proposals[self.site_id] = mine
        passed.append(mine)
        self._log("proposes to merge view %d: sites %s join us" % (view, sorted(joined)), None)
        if self.is_representative() and self.hello_due_s is None:
            # the new view's sites we have no link with yet (their HELLO may never come: they
            # stopped probing once they started merging) are asked, as after a link's death
            self.hello_due_s = self.now_s
        self._watch_joining(self.now_s)
        for site, r in sorted(self.merge_offers.items()):
            if self.merging is not m:
                break  # (an offer of another incarnation's merge gave it up)
            if r.site_seq == view and decode_site_view_body(r.body)[0] == sites:
                self._merge_proposal(r, passed)  # (it floods them on: they came before ours)
        self._maybe_merge(passed)
        return True

    def _watch_joining(self, now: float, took_over: bool = False) -> None:
        """(representative, merging) A joining neighbour site we have no link with is watched
        as our view's neighbours are: HELLO, then the silence rule (_go_wide); if it is still
        silent then, a decided merge's next view leaves it out (chained after the merge), and
        a merge not decided yet is given up (_give_up_unlinked_merge), as when a link to a
        joining site dies. Nothing did: a representative that takes over during a merge
        watched its view's neighbours only, and a MERGE taken from its offer after a view
        change may be the site's last word. Seed 35 (bench/sites_merge_kill_scan.py 35): a1
        killed around a's READY, a2 took over and b died, nobody suspected b; a1 killed 1.3 s
        after the heal, a2 took b's MERGE after b died. a2 waited for b for ever."""
        m = self.merging
        if m is None or not self.is_representative():
            return
        for site in sorted(m.joined):
            if site in self.configured_neighbours and site not in self.links:
                wait_s = self._first_suspicion_s(site, now) if took_over else \
                    now + self.hop_settings.peer_silence_s + SITE_GRACE_S
                self.suspect_at.setdefault(site, wait_s)

    def _give_up_unlinked_merge(self, due: List[int], now: float) -> None:
        """A joining neighbour site whose wait ran out with no link, before our decision:
        our merge is given up, as when a link to a joining site dies (_drop_link)."""
        m = self.merging
        if m is None or self.closing is not None or not self.is_representative():
            return
        silent = [s for s in due if s in m.joined and s not in self.links]
        if silent:
            self.counters["site_merges_given_up_unlinked"] += 1
            self._log("sites %s joining view %d never started a link: the merge is given up"
                      % (silent, m.view_seq), now)
            self.to_ring.append(SiteRecord(SITE_JOIN, self.site_id, 0, m.view_seq,
                                           body=encode_site_view_body((), {})))  # give it up

    def _merge_proposal(self, r: SiteRecord, passed: List[SiteRecord]) -> None:
        m = self.merging
        if r.site not in m.sites or r.site in m.proposals:
            return
        if self._other_incarnations_record(r, passed):
            return
        self.merge_offers.pop(r.site, None)
        m.proposals[r.site] = r
        passed.append(r)  # the representative floods it on
        self._maybe_merge(passed)

    # One incarnation of each site per merge (issue 10, seed 61081 --lan-splits). Every MERGE
    # names the epoch of its own site and of the sites of its view (the view body's third
    # part, a PROPOSE's merge bases: a daemon of before reads and ignores it there), and every
    # READY the epochs its decision took (every site's, from the MERGEs). A merge takes, per
    # site, one incarnation: a MERGE or READY of another one is not that site's (counted,
    # flooded on for the sites that read it), and a MERGE or READY that names another
    # incarnation of a third site than ours is another merge: given up before our decision,
    # withdrawn after it. Withdrawn is safe: each of the two READYs names every site, so no
    # site holds both and installs. Before, two forks of site b answered the heal, a1 linked
    # with b3 and c1 with b2, and both installed view 2: a1 with b3's MERGE and b2's READY,
    # reading b3's epoch, c1 reading b2's; b3 then took b2's state, and a1, reaching site b
    # round through c1, refused b2's HELLOs and FRONTIERs for ever and lost its messages.

    def _view_epochs(self) -> Dict[int, int]:
        """Our site's epoch and those we read of our view's sites (a MERGE names them)."""
        epochs = {s: self.site_epochs[s] for s in self.live_sites if self.site_epochs.get(s)}
        if self.epoch:
            epochs[self.site_id] = self.epoch
        return epochs

    def _record_epochs(self, r: SiteRecord) -> Dict[int, int]:
        """The epochs a MERGE or READY names (none: a daemon of before; sites and epochs out of
        range are not read)."""
        try:
            named = decode_site_view_bases(r.body)
        except RingWireError:
            return {}
        return {s: e for s, e in named.items() if s < len(self.sites) and 0 < e <= EPOCH_MAX}

    def _merge_epochs(self, m: SiteMerge) -> Dict[int, int]:
        """The incarnation of each site that the merge took: the epochs its MERGEs and READYs
        name (they agree: a record that does not is refused or ends the merge)."""
        epochs: Dict[int, int] = {}
        for r in list(m.proposals.values()) + list(m.ready.values()):
            for s, e in self._record_epochs(r).items():
                epochs.setdefault(s, e)
        return epochs

    @staticmethod
    def _epoch_clash(named: Dict[int, int], taken: Dict[int, int]) -> Optional[int]:
        """The first site named at another epoch than the one taken (None: they agree)."""
        return next((s for s in sorted(named) if taken.get(s, named[s]) != named[s]), None)

    def _other_incarnations_record(self, r: SiteRecord, passed: List[SiteRecord]) -> bool:
        """A MERGE or READY of our merge that is not of the incarnations it took: of another
        incarnation of its own site (not its site's record for us: flooded on, nothing more),
        or naming another of a third site (another merge: ours ends). True if refused."""
        named, taken = self._record_epochs(r), self._merge_epochs(self.merging)
        if self._epoch_clash({r.site: named[r.site]} if r.site in named else {}, taken) is not None:
            self.counters["site_merge_records_of_another_incarnation"] += 1
            passed.append(r)
            return True
        clash = self._epoch_clash(named, taken)
        if clash is None:
            return False
        passed.append(r)
        after = self.closing_next
        chained = self.closing is not None and self.proposed_view > self.closing.view_seq
        if (after is not None and r.site in after.lost) or (after is None and chained and r.site in self.proposal_lost):
            # (its site died after our decision and the next view leaves it out: the others
            # may install without its READY, as with a dead site's GIVEUP: so do we)
            self.counters["site_merge_records_of_a_dead_site"] += 1
            return True
        self.counters["site_merges_of_two_incarnations"] += 1
        why = "site %d %s it with site %d at epoch %d, we with epoch %d" % (
            r.site, "proposes" if r.kind == SITE_MERGE else "decided", clash, named[clash], taken[clash])
        if self.closing is None:
            self._abandon_merge(why, passed)
        else:
            self._withdraw_merge(why)
        return True

    def _maybe_merge(self, passed: List[SiteRecord]) -> None:
        m = self.merging
        if m is None or self.closing is not None or any(s not in m.proposals for s in m.sites):
            return
        epochs = self._merge_epochs(m)  # (the READYs held agree with it: _other_incarnations_record)
        limit = max(r.lts for r in m.proposals.values())
        reason = "sites %s joined" % sorted(m.joined)
        self.closing = ViewClosing(m.view_seq, sorted(self.live_sites), frozenset(), {}, {}, limit,
                                   reason=reason, joined=m.joined, sites_next=sorted(m.sites))
        self._log("view %d decided: sites %s, %s; messages up to lts %d in the old view"
                  % (m.view_seq, sorted(m.sites), reason, limit), None)
        for x in m.joined:
            self.join_after_lts[x] = self.join_floor[x] = limit
        self.merge.deliver_limit_lts = limit
        self.forward_held = set()
        self.tree_groups = self._merge_groups(m)
        self.trees = merged_view_trees(self._live_costs(), self.tree_groups)
        if self.is_representative():
            for site in list(self.links):
                if site in m.joined:
                    self._resend(site, {})
            self._forward_joined_passed(m.joined, limit, passed)
        passed.append(SiteRecord(SITE_FRONTIER, self.site_id, self.own_lts, self.applied_seq[self.site_id],
                                 epoch=self.epoch))
        # from here on we never give it up (a site that gave it up before its decision sends
        # GIVEUP instead, and then nobody installs it): every site waits for every READY
        ready = SiteRecord(SITE_READY, self.site_id, limit, m.view_seq,
                           body=encode_site_view_body(m.sites, {}, epochs))
        m.ready[self.site_id] = ready
        passed.append(ready)

    def _forward_joined_passed(self, joined: Iterable[int], limit: int, passed: List[SiteRecord]) -> None:
        """The trees are the merged view's now: the records of the joined sites above the
        limit that our gate passed before (a joined site decided first and sent us its
        messages of the merged view; with no tree of it in our view, they went to no one) go
        on to our children in their trees, ahead of the rest. A child takes the first above
        the limit that comes as the start of that site's stream (_apply, join_after_lts):
        without them, seed 81225 --unreliable --groups, b1 (reached through a1) took c1's
        seq 136 for the start, where a1 and c delivered from 130, and a1 delivered c1's SAFE
        seq 130 on b1's ARU though b1 never held it. Those our gate still holds (and this
        ring message's) go on when it passes them, as before."""
        waiting = {id(r) for _, _, records, _ in self.gate for r in records}
        waiting.update(id(r) for r in passed)
        for x in sorted(joined):
            for r in self.join_hold.get(x, ()):
                if id(r) not in waiting and (r.kind != SITE_MSG or r.lts > limit):
                    self._forward(r)
                    self.counters["site_records_forwarded_at_a_merge_decision"] += 1

    def _merge_end_record(self, r: SiteRecord, passed: List[SiteRecord]) -> None:
        """Another site's READY or GIVEUP of a merge, where our ring delivered it."""
        m = self.merging
        try:
            sites, _ = decode_site_view_body(r.body)
        except RingWireError:
            self.counters["site_records_undecodable"] += 1
            return
        if r.site == self.site_id:
            if r.kind == SITE_GIVEUP:
                self._ended_incarnations_giveup(r, passed)
            return
        if r.kind == SITE_GIVEUP:  # (kept: its MERGE may come later, parked on the way)
            old = self.giveups.get(r.site)
            if old is None or old.site_seq <= r.site_seq:
                self.giveups[r.site] = r
        if m is None or (r.site_seq, sites) != (m.view_seq, m.sites) or r.site not in m.sites \
                or r.site in m.ready:
            return  # (a merge we are not in, or gave up: nobody installs it then)
        if r.kind == SITE_READY and self._other_incarnations_record(r, passed):
            return
        if r.kind == SITE_GIVEUP and self._epoch_clash(
                {k: e for k, e in self._record_epochs(r).items() if k == r.site}, self._merge_epochs(m)) is not None:
            # (another incarnation of that site gave up its own merge: the one we took may
            # have sent READY, and a site that installs with it must not find us gone)
            self.counters["site_merge_records_of_another_incarnation"] += 1
            passed.append(r)
            return
        passed.append(r)  # the representative floods it on
        if r.kind == SITE_READY:
            m.ready[r.site] = r
            return
        why = "site %d gave it up before its decision" % r.site
        after = self.closing_next
        chained = self.closing is not None and self.proposed_view > self.closing.view_seq
        if self.closing is None:
            self._abandon_merge(why, passed)
        elif (after is not None and r.site in after.lost) or (
                after is None and chained and r.site in self.proposal_lost):
            # a site that died after our decision, and gave the merge up before its own: the
            # next view leaves it out after the merge, as every survivor agreed in its
            # proposal (it flooded its GIVEUP before it died: seconds before its silence
            # is noticed, every survivor it reached has it by then and withdrew instead).
            # From our proposal on, not only from the decision: the others may have decided
            # with it already (the simulator's recut: a GIVEUP between the two withdrew the
            # merge under a proposal for a site no longer in our view, and the daemon stopped)
            self.counters["site_giveups_of_a_dead_site"] += 1
        else:
            self._withdraw_merge(why)

    def _given_up(self, view: int, sites: frozenset) -> bool:
        """A site of that merge gave it up already: nobody will install it."""
        return any(g.site_seq == view and g.site in sites for g in self.giveups.values()
                   if g.site != self.site_id)

    def _abandon_merge(self, why: str, passed: List[SiteRecord]) -> None:
        """We give the merge up before our decision: GIVEUP tells the sites that decided it
        (they wait for our READY) that nobody will install it."""
        m = self.merging
        giveup = SiteRecord(SITE_GIVEUP, self.site_id, 0, m.view_seq,
                            body=encode_site_view_body(m.sites, {}, {self.site_id: self.epoch} if self.epoch else None))
        self.giveups[self.site_id] = giveup
        passed.append(giveup)
        self._end_merge()
        self._log("gives up merging view %d: %s" % (m.view_seq, why), None)

    def _withdraw_merge(self, why: str) -> None:
        """A site gave up the merge that we decided: it never sends READY, so no site installs
        it. We delivered only messages up to the limit, in our old view: we go on in it."""
        c = self.closing
        self.closing = None
        for x in c.joined:
            self.join_after_lts.pop(x, None)
            self.join_floor.pop(x, None)
        self._end_merge()
        self._log("withdraws its decision of view %d: %s; it stays in view %d"
                  % (c.view_seq, why, self.view_seq), None)
        after, self.closing_next = self.closing_next, None
        if after is not None:  # the next view was agreed after the merge: it goes too
            self._unchain(after.lost, after.view_seq)
        elif self.proposed_view > c.view_seq and self.proposal_lost:
            # (proposed only: its sites may be sites of the merge only, with no stream here)
            self._unchain(self.proposal_lost, self.proposed_view)

    def _unchain(self, lost: frozenset, view_seq: int) -> None:
        """The view chained after a merge that is withdrawn (decided, or proposed): its dead
        sites of our old view are suspected again from it (the next view seq); what we held
        back of them goes on."""
        self.proposals, self.proposal_lost, self.refrozen = {}, frozenset(), frozenset()
        held, self.frozen = self.frozen, {}
        self.neighbours = [s for s in self.configured_neighbours if s in self.live_sites]
        for x in sorted(held):
            for r in held[x]:
                self._apply(r)
        for x in sorted(lost & set(self.live_sites)):
            if self.is_representative():
                self.suspect_at[x] = self.now_s
        self._log("view %d (after the merge) is dropped with it" % view_seq, None)

    def _end_merge(self) -> None:
        m, self.merging = self.merging, None
        self.merge_around = frozenset()
        self.given_up_view = max(self.given_up_view, m.view_seq)
        self.merge.lift_delivery_bounds()
        self.join_hold = {}  # (their records come again, from their `kept`, at the next merge)
        self.aru_pending = {}
        self.forward_held = set()
        self.tree_groups = m.tree_groups
        for x in sorted(m.sites - set(self.live_sites)):  # (the sites that stay apart)
            self._forget_link_report(x)
        self.trees = self._view_trees()

    def _merge_groups(self, m: SiteMerge) -> Dict[int, frozenset]:
        """Each site of the merged view -> the sites of the view it came from, as its MERGE
        names them (the same records at every daemon of every site)."""
        groups = {}
        for site in sorted(m.sites):
            came_from: Iterable[int] = ()
            r = m.proposals.get(site)
            if r is not None:
                try:
                    came_from = decode_site_view_body(r.body)[1]
                except RingWireError:
                    pass
            side = self.live_sites if site in self.live_sites else m.joined
            groups[site] = (frozenset(came_from) & m.sites) | {site} if came_from else frozenset(side)
        return groups

    def _view_trees(self) -> Dict[int, SiteTree]:
        if self.tree_groups and set(self.tree_groups) == set(self.live_sites):
            return merged_view_trees(self._live_costs(), self.tree_groups, self._trees_go_round())
        return dissemination_trees(self._live_costs(), self.live_sites)

    def _trees_go_round(self) -> bool:
        """The merged view's trees may take a site of the source's old view through the other
        side (a cut within that view): the merge is installed here, no view is being agreed,
        and every site said an ARU of at least the merge's limit in the merged view (it
        installed the merge: it holds every message of its old view), so no site lacks one.
        Before that, a site of the other side that relays would relay only what it holds (a
        joined stream starts at the limit) and the FRONTIER records above it: a site
        still short of the old view's last messages would take that frontier over the gap
        (seed 1789 --cut-after-merge: a and b delivered different old-view messages)."""
        limit = self.tree_groups_limit_lts
        return (limit is not None and self.closing is None and self.merging is None
                and all(s in self.held_old_views for s in self.live_sites))

    def _retree_round(self) -> None:
        """Every site's ARU came above the merge's limit: the trees go round a cut within an
        old view if one is cut (_trees_go_round)."""
        if not self.tree_groups or self.tree_groups_round_done == self.tree_groups_limit_lts \
                or not self._trees_go_round():
            return
        self.tree_groups_round_done = self.tree_groups_limit_lts
        old, self.trees = self.trees, self._view_trees()
        if old != self.trees:
            self._log("every site holds the merge's old views: trees now %s" % _trees_text(self.trees), self.now_s)
            self._resend_new_children(old)

    # ------------------------------------------------------------ routing around a dead link
    # A representative whose link to a site of our view died and that heard no HELLO from it
    # within SITE_GRACE_S asks whether the site is still reachable through others (over the
    # links that no end reported down). If so it reports its link down (a LINKS record, into
    # its ring first, then flooded to every site) instead of suspecting the site; every daemon
    # of every site recomputes its trees where its ring delivers the record, and a site that
    # becomes a new child of ours in some tree gets again what it may lack of that tree (by
    # its last HELLO's positions; duplicates are dropped by site_seq, early ones wait:
    # _held_ahead). It keeps sending HELLO; when the link starts again, a LINKS record says
    # so and the trees come back to it. A site that no path reaches any more is suspected.

    def _live_costs(self, settled_only: bool = False) -> List[List[int]]:
        """The RouteMatrix without the links that one of their ends reported down (past
        their grace only: what a view change goes by)."""
        down = set()
        for site, (_, everything, settled) in self.link_reports.items():
            for other in (settled if settled_only else everything):
                down |= {(site, other), (other, site)}
        return [[0 if (i, j) in down else c for j, c in enumerate(row)] for i, row in enumerate(self.costs)]

    def _trees_now(self) -> Dict[int, SiteTree]:
        c = self.closing
        if c is not None and c.joined:
            return merged_view_trees(self._live_costs(), self.tree_groups)
        if c is not None:
            return dissemination_trees(self._live_costs(), c.survivors)
        return self._view_trees()

    def _reach(self, settled_only: bool = False) -> SiteTree:
        """What our site reaches: over our own links that run or are in their grace (a
        representative that took over says HELLO within it), and the other sites' links that
        no end reported down (settled_only: down past their grace; one in its grace may come
        back)."""
        return dissemination_tree(self._reach_costs(settled_only), self.site_id, self._watched_sites())

    def _reach_costs(self, settled_only: bool = False) -> List[List[int]]:
        """The costs _reach goes by."""
        costs = self._live_costs(settled_only)
        for s in range(len(self.sites)):
            if s == self.site_id:
                continue
            up = s in self.links or (s in self.suspect_at and s not in self.routed_around)
            cost = self.costs[self.site_id][s] if up else 0
            costs[self.site_id][s], costs[s][self.site_id] = cost, self.costs[s][self.site_id] if up else 0
        return costs

    def _cut_within_old_view(self, now: float) -> set:
        """While a merge we decided is being installed: the sites of our old view, of a higher id
        than ours, that no path within that view reaches, our link to it down for
        SITE_CUT_WITHIN_WAIT_S (one not yet: suspect_at then, to look again). The merged view's
        trees keep our old view's records within it until the merge is installed, and a joined site
        relays none of them (its stream of ours starts at the limit): a link between two sites of
        our old view cut for good there leaves each short of the other's last messages of it, each
        "reached" through the joined site, nobody suspected, and the merge is never installed (seed
        4 --cut-after-merge: a - c cut 0.9 s after the heal, b joined). So the lower id of the two
        leaves the other out, in a view chained after the merge, as a site dead after the decision;
        the higher id learns it from a HELLO that leaves it out (_left_out_after_our_merge). One end
        only: both suspecting, the joined site sided with one and the other was stuck
        (s18-during). The same once the merge is installed here while such a site has not said
        an ARU of at least its limit in the merged view (it lacks our last messages of the old
        view, and the trees cannot go round, _trees_go_round): it never installs the merge else
        (seed 1819 --cut-after-merge: a - b cut 0.2 s after the heal, a and c installed, b
        waited for a's last old-view messages for ever)."""
        c = self.closing
        group = self.tree_groups.get(self.site_id)
        installing = c is not None and c.joined and self.merging is not None
        installed = c is None and self.merging is None and self.tree_groups_limit_lts is not None
        if not group or not (installing or installed):
            return set()
        tree = dissemination_tree(self._reach_costs(), self.site_id, group)
        cut = {s for s in tree.unreachable if s > self.site_id and s in self.link_down_s}
        if installed:  # (one that holds the old views is routed round: _retree_round)
            cut -= self.held_old_views
        # (one deadline per site, both to test and to wait for: "now - down >= wait" can be false
        # in floating point at the very deadline "down + wait", which then came due again at once,
        # for ever: seed 2094 --cut-after-merge spun at one instant)
        deadline_s = {s: self.link_down_s[s] + SITE_CUT_WITHIN_WAIT_S for s in cut}
        due = {s for s in cut if now >= deadline_s[s]}
        for s in cut - due:  # (looked at again then: _route_around)
            self.suspect_at[s] = min(self.suspect_at.get(s, float("inf")), deadline_s[s])
        return due

    def _route_around(self, gone: List[int], now: float) -> List[int]:
        """Of the sites whose link is down and that said no HELLO in time: those reached
        through others are routed around (reported); returned, those no path reaches (with
        the ones routed around before that no path reaches any more)."""
        cut_within = self._cut_within_old_view(now)
        strict = set(self._reach().unreachable) | cut_within
        settled = set(self._reach(settled_only=True).unreachable) | cut_within
        # a path that only a link in its grace cuts (reported by another site, maybe before
        # a representative took over there) is waited for until that grace is over
        # (_pending_grace_end_s), if it is not yet
        wait = {s for s in (set(gone) | self.routed_around) & strict
                if s not in settled and s not in self.grace_extended and s not in self.suspect_at}
        until = self._pending_grace_end_s(now)
        if until <= now:
            wait = set()
        for site in wait:
            self.grace_extended.add(site)
            self.suspect_at[site] = until
        around = [s for s in gone if s not in strict or s in wait]
        if around:
            self._log("no link to sites %s, reached through others: routed around" % around, now)
            self.routed_around |= set(around)
            self._report_links()
        return sorted(((set(gone) | self.routed_around) & strict) - set(self.suspect_at))

    def _pending_grace_end_s(self, now: float) -> float:
        """When every other site's link down in its grace has had that grace, from where our
        ring delivered its report (one we do not know the moment of, as in a state a late
        daemon took: from now): a successor at its far end says HELLO within it, and the
        reporter then reports it back up, or past its grace. Not a whole grace from now:
        that cost a second when both links to a dead site died together."""
        ends = [now]
        for site, (_, down, settled) in self.link_reports.items():
            if site != self.site_id:
                ends += [self.pending_since.get((site, other), now) + self._grace_s(other)
                         for other in down - settled]
        return max(ends)

    def _report_links(self) -> None:
        """Our links down (to the sites we route around), into our ring as a LINKS record
        when that changed."""
        if not self.is_representative():
            return
        ours = set(self.live_sites) | self.merge_around
        if self.merging is not None:  # (a site of the merge we reach through others only)
            ours |= self.merging.sites
        settled = frozenset(s for s in self.routed_around if s not in self.links and s in ours)
        pending = frozenset(s for s in self.dead_links if s not in self.links and s in ours) - settled
        if (settled, pending) == self.links_down_sent:
            return
        self.links_down_sent = (settled, pending)
        self.links_version = max(self.links_version, self.link_reports.get(self.site_id, (0,))[0]) + 1
        self.links_turn_version = self.links_version
        self.to_ring.append(_links_record(self.site_id, self.links_version, settled, pending))

    def _own_report_delivered(self, settled: frozenset, pending: frozenset) -> None:
        """Our site's LINKS record, where our ring delivered it at its representative, with no
        newer one of ours behind it, that says other than we last reported: one submitted
        before we became representative (the ring changed with it in the orderer's queue, as
        a fork's ring does), delivered after choose_representative read our site's links.
        Every site reads it now, so we take it as choose_representative would have (its links
        down stay down until they start: those that run already we report up at once). Left
        as it was, it said for ever that a link that started again later was down, and no
        tree crossed it (seed 184 --lan-splits: b1's link to a, reported down in the ring
        before b1's fork, delivered in the fork's)."""
        if (settled, pending) == self.links_down_sent:
            return
        self.counters["site_links_report_taken_over"] += 1
        self.routed_around |= {s for s in settled if s not in self.links}
        self.dead_links |= {s for s in settled | pending if s not in self.links}
        self.links_down_sent = (settled, pending)
        self._report_links()

    def _forget_link_report(self, site: int) -> None:
        """A site our view leaves out (or a merge given up leaves apart) takes its LINKS report
        with it: that report was made in
        the view it left (the link to us it lost, maybe), and its later ones are records not
        for us. Kept, it said for ever that links run down which had come back, and a MERGE
        that brings the site in through a third one found no path to it (seed 711: c parked
        b's MERGE for good, b's report of its cut to a standing). When it comes back, its
        links count as up until it reports again (our own report covers a link to us)."""
        self.link_reports.pop(site, None)
        for key in [k for k in self.pending_since if k[0] == site]:
            del self.pending_since[key]

    def _links_record(self, r: SiteRecord, passed: List[SiteRecord]) -> None:
        """A site's link state, where our ring delivered it: the trees follow it."""
        try:
            settled, pending = decode_site_view_body(r.body)
        except RingWireError:
            self.counters["site_records_undecodable"] += 1
            return
        if r.site not in self.streams and not (self.merging is not None and r.site in self.merging.sites):
            # (let in while that site was of our view or merging with us: apart now, its
            # report would stand for ever, as in _forget_link_report)
            self.counters["site_links_of_a_site_apart"] += 1
            return
        known = self.link_reports.get(r.site)
        if known is not None and known[0] >= r.site_seq:
            return
        down = frozenset(settled) | frozenset(pending)
        if r.site == self.site_id:
            # our representative's link to each newly down site had heard nothing for its
            # silence time: the site's silence counts from then at the latest (a takeover too)
            before = known[1] if known is not None else frozenset()
            delivered_s = self._delivered_at_s()
            for site in down - before:
                self.heard_s[site] = max(self.heard_s.get(site, float("-inf")),
                                         delivered_s - self.hop_settings.peer_silence_s)
                self.link_down_s.setdefault(site, delivered_s)
            for site in [x for x in self.link_down_s if x not in down]:
                del self.link_down_s[site]
        self.link_reports[r.site] = (r.site_seq, down, frozenset(settled))
        pending = down - frozenset(settled)
        for key in [k for k in self.pending_since if k[0] == r.site and k[1] not in pending]:
            del self.pending_since[key]
        for other in pending:
            self.pending_since.setdefault((r.site, other), self._delivered_at_s())
        passed.append(r)  # the representative floods it on
        old, self.trees = self.trees, self._trees_now()
        self._log("site %d: its links to sites %s are down; trees now %s"
                  % (r.site, sorted(down), _trees_text(self.trees)), self.now_s)
        if not self.is_representative():
            return
        if r.site == self.site_id and r.site_seq >= self.links_turn_version:
            self._own_report_delivered(frozenset(settled), pending)
        self._resend_new_children(old)
        cut_within = self._cut_within_old_view(self.now_s)
        unreachable = (set(self._reach().unreachable) | cut_within) & self.routed_around
        settled = set(self._reach(settled_only=True).unreachable) | cut_within
        for site in unreachable:
            if site in settled:  # no path left: the grace is over already
                self.suspect_at[site] = min(self.suspect_at.get(site, self.now_s), self.now_s)
            elif site not in self.grace_extended:  # the last path is a link in its grace
                self.grace_extended.add(site)
                self.suspect_at.setdefault(site, self._pending_grace_end_s(self.now_s))

    def _resend_new_children(self, old: Dict[int, SiteTree]) -> None:
        """The trees changed: a site that is our child in a tree now and was not before gets
        what it lacks of that tree, by its last HELLO's positions (the representative)."""
        if not self.is_representative():
            return
        for source, tree in sorted(self.trees.items()):
            before = old.get(source)
            was = set(before.children(self.site_id)) if before is not None else set()
            for child in tree.children(self.site_id):
                if child not in was and child in self.links:
                    self._resend(child, self.peer_positions.get(child, {}), [source])
                    self._resend_joined_held(child, source)

    def _resend_joined_held(self, child: int, source: int) -> None:
        """A new child in the tree of a site that joined us, between our decision of the merge
        and its install here: what our gate passed of that site above the limit waits in
        join_hold, not in `kept` (_resend sends it none), and the child takes the first record
        above the limit that comes as the start of that site's stream (_apply, join_after_lts):
        it gets them ahead of the rest, as the children at the decision did
        (_forward_joined_passed). Seed 6061 --groups --client-views --cut-after-merge: c's link
        to a died after b decided, b became c's parent in a's tree holding a's seq 77..96; c
        took seq 97 for the start of a's stream, and a1 delivered a's SAFE seq 85 on c's ARU
        though c never held it."""
        c, held = self.closing, self.join_hold.get(source)
        if c is None or not held or source not in c.joined:
            return
        # only the messages that passed our gate: the rest go on in order as they pass, and
        # one of the ring message being read now is in no gate entry yet (seed 920
        # --cut-after-merge: sent ahead of the gate's, seq 89 became the start at b, not 80);
        # FRONTIER and ARU go with _resend's own
        passed = self.passed_seq[source]
        for r in held:
            if r.kind == SITE_MSG and c.limit_lts < r.lts and r.site_seq <= passed:
                self._out_bytes[child] += encode_site_record(r)
                self.counters["site_records_resent_from_a_merge_hold"] += 1

    def _install_joined(self, c: ViewClosing) -> None:
        """The merged view: the joined sites' streams start at the limit; what every site's
        ARU said of the old view's streams says nothing of theirs."""
        taken, other_incarnation = {}, []
        if self.merging is not None:  # (a site may still lack one of these: see _resend)
            self.merged_readies = dict(self.merging.ready)
            taken = self._merge_epochs(self.merging)
        self.merging = None
        self.merge_around = frozenset()
        self.merges_installed += 1
        self.fork_unread = False  # (the sites of the merged view read our epoch now)
        for x in sorted(c.joined):
            self.site_rings.pop(x, None)  # (its ROSTERs while apart went to its own side)
            # (it may be a new incarnation: its epoch is learned again, from its HELLO or
            # as heard from a site that has it)
            self.site_epochs.pop(x, None)
            self.epochs_first_hand.discard(x)
            if taken.get(x):
                # the incarnation whose MERGE and READY we took (every daemon of our site alike,
                # at this point of our order); a link to another one is not a link to it
                self.site_epochs[x] = taken[x]
                self.epochs_first_hand.add(x)
                if self.is_representative() and x in self.links and self._link_epochs.get(x, 0) not in (0, taken[x]):
                    other_incarnation.append(x)  # (dropped below, once the view is ours)
            if x in self.links and self._link_epochs.get(x) and self.is_representative() \
                    and x not in other_incarnation:
                # (our link to it started during the merge: that HELLO's epoch is the new one)
                self.to_ring.append(SiteRecord(SITE_EPOCH, x, 0, self._link_epochs[x], EPOCH_FROM_HELLO))
            stream = self.streams[x] = self.merge.open_stream(x, c.limit_lts)
            self.merge.install(stream)
            self._interest_from_merge(x, c.view_seq)
            self.kept[x] = collections.deque()
            self.kept_base[x] = self.applied_seq[x]  # (until its first message: see _apply)
            self.passed_frontier[x] = self.passed_aru[x] = 0
        for stream in self.streams.values():
            stream.stable_aru = min(stream.stable_aru, c.limit_lts)
        for site in self.passed_aru:
            self.passed_aru[site] = min(self.passed_aru[site], c.limit_lts)
        self.site_aru = min(self.site_aru, c.limit_lts)
        self.aru_announced = min(self.aru_announced, c.limit_lts)
        self.gate = collections.deque((a, b, rs, min(low, c.limit_lts)) for a, b, rs, low in self.gate)
        self.aru_floor_view = c.view_seq
        for key in [k for k in self.injected if k[0] == SITE_ARU]:
            del self.injected[key]
        self.neighbours = [s for s in self.configured_neighbours if s in self.live_sites]
        self.tree_groups_limit_lts = c.limit_lts  # (every stable_aru is at most it now)
        self.tree_groups_view, self.held_old_views = c.view_seq, set()
        self.trees = self._view_trees()
        for x in other_incarnation:  # (its HELLOs are refused now: _new_incarnation)
            self._drop_link(x, "it speaks for epoch %d, the merge took epoch %d"
                            % (self._link_epochs[x], self.site_epochs[x]), self.now_s)
        # a joined site we have no link with (it died, or the other side gave the merge up
        # after we decided) is suspected as at the start: HELLO, then the silence rule
        for site in self.neighbours:
            if self.is_representative() and site not in self.links and site not in self.suspect_at:
                self.suspect_at[site] = self.now_s + self.hop_settings.peer_silence_s + SITE_GRACE_S
                self.hello_due_s = self.now_s
        self.joined_base = {}
        if self.closing is not None:  # the next view, decided meanwhile: sites of it died
            self._rebase_lost_joined(self.closing)
        held, self.join_hold = self.join_hold, {}
        for x in sorted(held):
            for r in held[x]:
                self._apply(r)
        pending, self.aru_pending = self.aru_pending, {}
        for r in pending.values():
            self._aru_record(r, self.streams[r.site])

    # ------------------------------------------------------------ a late daemon's state
    # A daemon that joins its site's ring late gets, through the ring, what every daemon
    # already there holds at one point of the ring's order (SitesOrderer: the point, who
    # sends, the holding back): the sites' streams in the merge, the positions, the kept
    # records, the gate and the view. Only in a quiet moment: no view being agreed or installed.

    def quiescent(self) -> bool:
        """No view change or merge under way: the state is the few plain values below."""
        return (self.closing is None and self.closing_next is None and self.merging is None and not self.proposals
                and not self.proposal_lost and not self.frozen and not self.join_hold
                and not self.aru_pending and self.merge.deliver_limit_lts is None and not self.own_held)

    def holds_nothing(self) -> bool:
        """No message of any site applied here, and the first view: a state not worth keeping
        (a daemon that formed a ring alone at the start, beside the rest of its site)."""
        return not any(self.applied_seq.values()) and self.view_seq == 0 and self.quiescent()

    def stand_down(self) -> None:
        """This daemon's state is to be replaced by another's (SitesOrderer): no links, and
        nothing more into the ring, until then."""
        if self.representative == self.name:
            self._log("stands down as the representative of site %d: it takes another "
                      "daemon's state" % self.site_id, self.now_s)
        self.representative = None
        self.stood_down = True
        self.ending_giveup = self._undecided_merge_giveup()
        self.links, self.wide = {}, False
        # (the MERGEs parked for the links we had: a later term parks its own; kept, they made
        # next_deadline_s stay in the past at a daemon that was not representative then)
        self.merge_parked, self.merge_parked_at = {}, {}
        self.to_ring.clear()
        self.hello_due_s = self.probe_due_s = None
        self.suspect_at = {}
        self.asked_since_s = {}  # (a fork's asking: the state we take has the kept side's)
        # what this daemon delivered already (in a fork's view): the state it takes holds the
        # same messages of the streams the two rings shared, which it must not deliver twice
        self.delivered_marks = dict(self.gone_delivered)  # (a site our view left out: as far as we went)
        self.delivered_marks.update((site, stream.delivered_lts) for site, stream in self.streams.items())
        self.own_numbered = {r.site_seq: (r.lts, r.body) for r in self.kept[self.site_id]}

    def start_over(self, epoch: int, now: float) -> None:
        """(SitesOrderer) We stood down to take another daemon's state, and our ring starts
        the sites' state afresh instead (nobody in it holds one: the state we waited for went
        with a daemon that died). Our state becomes a freshly started daemon's, as the others
        of the ring have it: built by __init__, so that nothing of the old one stays by
        oversight (seed 86307 --site-grace-s 0.3 --lan-splits --groups: b2 kept its fork's
        view 1 of site b alone, no neighbours, while the restarted b3 had view 0 of sites a
        and b; b2 represented b and opened no link, so dead site a was never suspected in
        b3's view and b3 delivered none of its messages). Kept: what belongs to the daemon's
        life (counters, log lines, its links' refusals, its start's SITE_ALONE_AFTER_S), and
        the GIVEUPs of our incarnations that ended with a merge undecided (their sites may
        wait for one), which go into the ring, under the new `epoch`, so every daemon of it
        keeps them alike."""
        counters, log, refusals, trace = self.counters, self.log, self.link_refusals, self.trace_held
        alone_after_s = self.alone_after_s
        ended = list(self.ended_giveups.values()) + ([self.ending_giveup] if self.ending_giveup else [])
        SiteGateway.__init__(self, self.name, self.sites, self.costs, self.orderer, self.hop_settings,
                             self.seal, now)
        self.counters.update(counters)  # (the new merge Transport counts into this one)
        self.log, self.link_refusals, self.trace_held = log, refusals, trace
        self.alone_after_s = min(self.alone_after_s, alone_after_s)
        self.epoch = epoch
        self.counters["sites_state_started_over"] += 1
        self._log("site %d: this daemon's sites' state starts over with its ring's (it stood "
                  "down, and no state came)" % self.site_id, now)
        if ended:
            self._submit_records(ended)  # (read where our ring delivers them: _ended_incarnations_giveup)

    # An incarnation that ends with an undecided merge (seed 1037 --lan-splits --groups
    # --client-views). c1, a fork of site c alone (a new epoch), proposed view 2 to a and b;
    # they took its MERGE and decided, and wait for c's READY naming that epoch. Then c1's
    # ring met c2 c3's (epoch 1), c1 took their state and the fork's merge went with its own
    # (import_state): nobody ever sent its READY or its GIVEUP. Site c, now epoch 1, gave up
    # its own view 2 (b's READY named the fork's epoch); a and b read that GIVEUP as another
    # incarnation's and waited for good, refusing every later merge: the sites stayed apart.
    # Our ring is the only one that can go on with our epoch (it held a quorum of the last
    # ring that kept it, or it would have forked: _fork_ends_merge), and each daemon of it
    # that holds the epoch takes the other state at the same point: the incarnation ends with
    # the merge undecided, so it never sends READY, and a GIVEUP naming its epoch tells the
    # sites that wait for it so. (A merge it decided may be installed with its READY: kept.)

    def _undecided_merge_giveup(self) -> Optional[SiteRecord]:
        """(stand_down) The GIVEUP of the merge our incarnation proposed and has not decided
        (no READY of ours), naming our epoch: sent if the state we take is another epoch's."""
        m = self.merging
        if m is None or not self.epoch or self.site_id not in m.proposals or self.site_id in m.ready:
            return None
        return SiteRecord(SITE_GIVEUP, self.site_id, 0, m.view_seq,
                          body=encode_site_view_body(m.sites, {}, {self.site_id: self.epoch}))

    def _end_incarnations_merge(self, now: float) -> None:
        """(import_state) The state taken is of another epoch than ours: our incarnation's
        undecided merge is given up under its epoch, into our ring (every daemon of the site
        keeps it; the representative floods it and resends it to each link that starts)."""
        giveup, self.ending_giveup = self.ending_giveup, None
        if giveup is None:
            return
        ended = self._record_epochs(giveup).get(self.site_id, 0)
        if not ended or ended == self.epoch:
            return  # (the same incarnation goes on: its merge is the others' to end)
        self.counters["merges_given_up_as_our_incarnation_ended"] += 1
        self._log("site %d's incarnation of epoch %d ends with view %d undecided: it gives it up"
                  % (self.site_id, ended, giveup.site_seq), now)
        self._submit_records([giveup])  # (from any daemon: to_ring is the representative's)

    def _ended_incarnations_giveup(self, r: SiteRecord, passed: List[SiteRecord]) -> None:
        """Our site's GIVEUP of an incarnation that ended (_end_incarnations_merge), where our
        ring delivered it: kept until a merge brings its sites into our view, and flooded on."""
        ended = self._record_epochs(r).get(self.site_id, 0)
        if not ended or ended == self.epoch or ended in self.ended_giveups:
            return
        while len(self.ended_giveups) >= ENDED_GIVEUPS_MAX:
            del self.ended_giveups[next(iter(self.ended_giveups))]  # (the oldest)
        self.ended_giveups[ended] = r
        passed.append(r)

    def _drop_ended_giveups(self) -> None:
        """(a view installed) A site in our view installed it with us: it waits for no merge
        of an ended incarnation of ours any more."""
        live = set(self.live_sites)
        for epoch, r in list(self.ended_giveups.items()):
            try:
                sites, _ = decode_site_view_body(r.body)
            except RingWireError:
                sites = frozenset()
            if set(sites) <= live:
                del self.ended_giveups[epoch]

    def _ended_giveups_of(self, text: object) -> Dict[int, SiteRecord]:
        """A state's ended_giveups (none: a daemon of before sends none), checked: GIVEUPs of
        our site, each naming an epoch of it."""
        out: Dict[int, SiteRecord] = {}
        for r in (_records_of(text, self.site_id) if text else [])[:ENDED_GIVEUPS_MAX]:
            ended = self._record_epochs(r).get(self.site_id, 0) if r.kind == SITE_GIVEUP else 0
            if not ended:
                raise ValueError("an ended incarnation's GIVEUP that is no GIVEUP of an epoch of ours")
            out[ended] = r
        return out

    def _delivered_here(self, r: SiteRecord) -> bool:
        """(import_state, and a record that reaches the merge after it: the kept side may not
        have had it yet) A message of the state this daemon delivered already, in its fork's
        view: of another site's stream, up to what it delivered (both rings read the same
        incarnation of it); of our own, only below where the two rings' numbering parted (the
        earlier fork of either: marks_parted), and only the very message we numbered so
        (fork_held, own_numbered)."""
        below = self.marks_parted is None or r.site_seq <= self.marks_parted
        if r.site == self.site_id and (r.lts, r.body) in {(lts, body) for _, lts, body in self.fork_held}:
            # (close_fork delivered it). Not by its site_seq: the two sides' transitional
            # configurations of the ring they shared may have delivered different sets, so
            # the kept side may have numbered it higher, even above the fork (seed 840
            # --lan-splits: b2 lacked b3's last packets of that ring and numbered its own
            # message 35, b3 41: delivered twice). Its lts is its place in that ring, the same
            # on both sides, and no other message of our stream has it
            return True
        mark = self.delivered_marks.get(r.site)
        if mark is None or r.lts > mark:
            return False
        if r.site != self.site_id:
            return True
        # (below the fork the kept side numbered what our last ring never made safe apart
        # from us: another message of that site_seq is owed here, see _withhold_gate)
        mine = self.own_numbered.get(r.site_seq)
        return below and (mine is None or mine == (r.lts, r.body))

    def _merge_body(self, r: SiteRecord) -> bytes:
        """The body a message of the state goes into our merge with: a SKIP if this daemon
        delivered it already (_delivered_here), its real body kept aside for export_state.
        Not another daemon's client's group operation (JOIN, LEAVE, KILL): the table we take is
        the kept side's at the point, which that message follows, so ours must apply it again
        there, as every daemon of the kept side does (seed 914 --lan-splits --client-views: c3
        delivered c2's JOIN in its fork's closing view, took c2's table without it, and named
        c3 alone in the group that c2 saw with both). Our own clients' are the REJOIN's: it
        names their memberships as the fork left them, and the kept side's ROSTER drops what
        its table holds of them (applied again here, a client's JOIN gave it views that
        ROSTER then ended with no TRANSITION)."""
        if not self._delivered_here(r):
            return r.body
        if r.origin != self.name and _changes_groups(r.body):
            self.group_ops_again.add((r.site, r.site_seq, r.lts))
            return r.body
        self.withheld_bodies[r.site, r.site_seq] = (r.lts, r.body)
        return SITE_SKIP_BODY

    def _forget_withheld_bodies(self) -> None:
        """Keep the withheld bodies of the messages still in our merge only."""
        still = {(site, m.site_seq, m.lts) for site, stream in self.streams.items() for m in stream.ordered}
        self.withheld_bodies = {k: v for k, v in self.withheld_bodies.items() if k + (v[0],) in still}

    def _exported_body(self, site: int, m) -> bytes:
        """A message of our merge as the state hands it on: one this daemon delivered already
        (a SKIP here) with its body, which the daemon that takes the state owes (seed 208
        --lan-splits: a restarted daemon took a rejoined fork daemon's state and never
        delivered what the rest of its ring delivered in the same view)."""
        body = m.frags[0]
        withheld = self.withheld_bodies.get((site, m.site_seq))
        if body == SITE_SKIP_BODY and withheld is not None and withheld[0] == m.lts:
            return withheld[1]
        return body

    def export_state(self) -> dict:
        """This daemon's sites-level state, as plain data (JSON), at a quiet moment."""
        if not self.quiescent():
            raise RingUsageError("the sites' state is exported only between view changes")
        def per_site(values: Dict[int, int]) -> Dict[str, int]:
            return {str(k): v for k, v in values.items()}
        streams = {}
        for site, stream in self.streams.items():
            msgs = [SiteRecord(SITE_MSG, site, m.lts, m.site_seq, m.service, m.origin[0],
                               self._exported_body(site, m)) for m in stream.ordered]
            streams[str(site)] = [stream.delivered_lts, stream.frontier_lts, stream.stable_aru,
                                  _records_text(msgs)]
        return {
            "sites": len(self.sites), "streams": streams,
            "applied_seq": per_site(self.applied_seq), "kept_base": per_site(self.kept_base),
            "kept": {str(k): _records_text(v) for k, v in self.kept.items()},
            "live_sites": list(self.live_sites), "neighbours": list(self.neighbours),
            "gate": [[a, b, _records_text(rs), low] for a, b, rs, low in self.gate],
            "passed_seq": per_site(self.passed_seq), "passed_frontier": per_site(self.passed_frontier),
            "passed_aru": per_site(self.passed_aru), "join_after_lts": per_site(self.join_after_lts),
            "join_floor": per_site(self.join_floor), "joined_base": per_site(self.joined_base),
            "merge_offers": {str(k): _records_text([r]) for k, r in self.merge_offers.items()},
            "tree_groups": {str(k): sorted(v) for k, v in self.tree_groups.items()},
            "tree_groups_limit": self.tree_groups_limit_lts,
            "numbers": [self.safe_ring_lts, self.own_lts, self.frontier_answered, self.site_aru,
                        self.aru_wanted, self.view_seq, self.proposed_view, self.aru_floor_view,
                        self.orderer.transport.max_lts_seen],
            "representative": self.representative, "ineligible": sorted(self.ineligible),
            "epoch": self.epoch, "site_epochs": per_site(self.site_epochs),
            "epochs_first_hand": sorted(self.epochs_first_hand),
            "wide_ring": sorted(self.wide_ring), "fork_seq": self.fork_seq, "forks": self.forks,
            "lineage": [list(x) for x in self.lineage[-LINEAGE_MAX:]],
            "kept_rings": self.kept_rings, "fork_unread": self.fork_unread,
            "fork_ring": sorted(self.fork_ring), "own_held_upto": self.own_held_upto,
            "epochs_left": [[e, self.epochs_left[e]] for e, _ in self.lineage[-LINEAGE_MAX:]
                            if e in self.epochs_left],
            "link_reports": {str(k): [v, sorted(d), sorted(x)] for k, (v, d, x) in self.link_reports.items()},
            # how long ago each site was last heard (ages: the daemons' clocks are their own;
            # the state's time in the ring only makes them look younger, never older)
            # a merge given up: a site that decided it waits for our GIVEUP, which a new
            # representative resends to a link that starts (it may be this daemon)
            "given_up_view": self.given_up_view,
            "giveups": {str(k): _records_text([r]) for k, r in self.giveups.items()},
            "ended_giveups": _records_text(self.ended_giveups.values()),
            # the READYs of our last merge: a site of it may still wait for one, which a new
            # representative resends (it may be this daemon)
            "merged_readies": {str(k): _records_text([r]) for k, r in self.merged_readies.items()},
            "heard_ages": {str(k): max(0.0, self.now_s - t) for k, t in self.heard_s.items()},
            "link_down_ages": {str(k): max(0.0, self.now_s - t) for k, t in self.link_down_s.items()},
            # our unanswered HELLOs, if we represent our site or handed it over last (the
            # daemon that takes this state may represent it next: _first_suspicion_s)
            "asked_ages": {str(k): max(0.0, self.now_s - t) for k, t in self.asked_since_s.items()},
            # pruning: the members of the sites we know (a site whose STATE after a merge is
            # still awaited is left out: the late daemon takes it as unknown, conservatively)
            "interest": {str(k): [{g: sorted(m) for g, m in self.interest_members[k].items()},
                                  dict(self.interest_left[k])] for k in sorted(self.interest_known)},
            "site_rings": {str(k): [seq, sorted(d)] for k, (seq, d) in self.site_rings.items()},
        }

    def import_state(self, state: dict, now: float) -> None:
        """The state another daemon of our ring exported at the point where we joined its
        order; anything malformed is a ValueError (the daemon stops: it would run wrong)."""
        n = len(self.sites)
        if _checked(state, dict).get("sites") != n:
            raise ValueError("the state is of another configuration (%r sites)" % state.get("sites"))
        sites = range(n)
        streams = {_site_key(k, n): _checked(v, list) for k, v in _checked(state["streams"], dict).items()}
        live = _int_list(state["live_sites"], n)
        neighbours = _int_list(state["neighbours"], n)
        if sorted(streams) != sorted(live) or not set(neighbours) <= set(self.configured_neighbours):
            raise ValueError("its streams %s are not its view's sites %s" % (sorted(streams), live))
        numbers = [_counter(x) for x in _checked(state["numbers"], list)]
        if len(numbers) != 9:
            raise ValueError("%d numbers where 9 are expected" % len(numbers))
        rep = state["representative"]
        if rep is not None and rep not in self.sites[self.site_id]:
            raise ValueError("representative %r is not a daemon of our site" % (rep,))
        ineligible = frozenset(_checked(x, str) for x in _checked(state["ineligible"], list))
        kept_text = _checked(state["kept"], dict)
        kept = {s: collections.deque(_records_of(kept_text.get(str(s), ""), s)) for s in sites}
        gate = collections.deque()
        for entry in _checked(state["gate"], list):
            a, b, recs, low = _checked(entry, list)
            records, refused = _gate_records_of(recs)
            for why in refused:
                self.counters["state_records_refused"] += 1
                self._log("a record of the sites' state does not decode (%s): refused" % why, now)
            gate.append((_counter(a), _counter(b), records, _counter(low)))
        offers = {}
        for k, text in _checked(state["merge_offers"], dict).items():
            records = _records_of(text)
            if len(records) != 1:
                raise ValueError("a merge offer of %d records" % len(records))
            offers[_site_key(k, n)] = records[0]
        lineage = [(_counter(e), _counter(q)) for e, q in (_checked(x, list) for x in _checked(
            state.get("lineage", []), list)[:LINEAGE_MAX])]
        self.marks_parted = parted_at(self.lineage, lineage)
        self.withheld_bodies, self.group_ops_again = {}, set()
        self.own_held, self.own_held_forked = [], 0  # (what our ring delivered before the point is in the state)
        self.merge.streams, self.merge._merge = {}, []
        self.streams = {}
        for site in sorted(streams):
            entry = streams[site]
            if len(entry) != 4:
                raise ValueError("stream %d: %d fields" % (site, len(entry)))
            stream = self.streams[site] = self.merge.open_stream(site, 0)
            self.merge.install(stream)
            for r in _records_of(entry[3], site):
                if r.kind != SITE_MSG:
                    raise ValueError("stream %d holds a record of kind %d" % (site, r.kind))
                # (one this daemon delivered already keeps its place, without its body: the
                # order, SAFE and the views wait for it here as they do at the others)
                body = self._merge_body(r)
                self.merge.link_chunk(stream, (r.origin, 0),
                                      RingChunk(r.site_seq, r.lts, r.site_seq, 0, 1, r.service, body))
                if self.trace_held is not None:
                    self.trace_held.append((r.site, r.site_seq))
            stream.delivered_lts, stream.frontier_lts = _counter(entry[0]), _counter(entry[1])
            stream.stable_aru = _counter(entry[2])
        self.applied_seq = _per_site(state["applied_seq"], n, all_sites=True)
        self.kept_base = _per_site(state["kept_base"], n, all_sites=True)
        self.kept = kept
        self.live_sites, self.neighbours = live, neighbours
        reports = {}
        for k, v in _checked(state.get("link_reports", {}), dict).items():
            version, down, settled = _checked(v, list)
            reports[_site_key(k, n)] = (_counter(version), frozenset(_int_list(down, n)),
                                        frozenset(_int_list(settled, n)))
        self.link_reports = reports
        self.giveups = _one_record_per_site(state.get("giveups", {}), SITE_GIVEUP, "GIVEUP", n)
        self.ended_giveups = self._ended_giveups_of(state.get("ended_giveups", ""))
        self.merged_readies = _one_record_per_site(state.get("merged_readies", {}), SITE_READY, "READY", n)
        self.given_up_view = _counter(state.get("given_up_view", 0))
        # the ring that sent the state is our site's, formed already (not two rings of a
        # start): if we represent it, our links start at once (a takeover, not a start)
        self.alone_after_s = min(self.alone_after_s, now)
        self.heard_s = _times_from_ages(state.get("heard_ages", {}), n, now)
        self.link_down_s = _times_from_ages(state.get("link_down_ages", {}), n, now)
        self.taken_asked_s = _times_from_ages(state.get("asked_ages", {}), n, now)
        self.rep_hello_since_s = None  # (of the ring we came from, if any: not of this state's)
        self.asked_since_s = {}
        rings = {}
        for k, v in _checked(state.get("site_rings", {}), dict).items():
            site = _site_key(k, n)
            seq, daemons = _checked(v, list)
            names = frozenset(_checked(d, str) for d in _checked(daemons, list))
            if not names <= set(self.sites[site]):
                raise ValueError("site %d's ring %s holds daemons of no such site" % (site, sorted(names)))
            rings[site] = (_counter(seq), names)
        self.site_rings = rings
        groups = _checked(state.get("tree_groups", {}), dict)
        self.tree_groups = {_site_key(k, n): frozenset(_int_list(v, n)) for k, v in groups.items()}
        self.tree_groups_limit_lts = self.tree_groups_round_done = None
        self.held_old_views, self.tree_groups_view = set(), 0  # (what our ring says next counts)
        self.trees = self._view_trees()
        # (after the trees: they go round, if they may, at the next ARU record, _retree_round)
        limit = state.get("tree_groups_limit")
        self.tree_groups_limit_lts = None if limit is None else _counter(limit)
        self.gate, self.gate_ring = gate, self.orderer.ring  # (taken at a point of this ring's order)
        self.passed_seq = _per_site(state["passed_seq"], n, all_sites=True)
        self.passed_frontier = _per_site(state["passed_frontier"], n, all_sites=True)
        self.passed_aru = _per_site(state["passed_aru"], n, all_sites=True)
        self.join_after_lts = _per_site(state["join_after_lts"], n)
        self.join_floor = _per_site(state["join_floor"], n)
        self.joined_base = _per_site(state.get("joined_base", {}), n)
        self.merge_offers = offers
        (self.safe_ring_lts, self.own_lts, self.frontier_answered, self.site_aru, self.aru_wanted,
         self.view_seq, self.proposed_view, self.aru_floor_view, max_lts) = numbers
        self.orderer.transport.saw_lts(max_lts)
        self.representative, self.ineligible = rep, ineligible
        self.epoch = _counter(state["epoch"])
        self.site_epochs = _per_site(state["site_epochs"], n)
        first_hand = (_checked(x, int) for x in _checked(state.get("epochs_first_hand", []), list))
        self.epochs_first_hand = {x for x in first_hand if x in self.site_epochs}
        wide_ring = frozenset(_checked(x, str) for x in _checked(state.get("wide_ring", []), list))
        if not wide_ring <= set(self.sites[self.site_id]):
            raise ValueError("its last ring %s is not of our site" % sorted(wide_ring))
        # (delivered_marks and fork_held stay until our next regular view: a record of the
        # kept side's streams that reaches our merge later may be one we delivered already)
        self.wide_ring, self.fork_seq = wide_ring, None
        # a daemon brought up to date inside a fork's ring is a daemon of that fork: where the
        # fork meets the kept ring it ends the fork's view as the others do (close_fork, the
        # same messages). Without it, seed 73027 --lan-splits --groups --client-views: a3,
        # restarted into a2's fork, never delivered what a2 delivered in the fork's last view
        fork_ring = frozenset(_checked(x, str) for x in _checked(state.get("fork_ring", []), list))
        if not fork_ring <= set(self.sites[self.site_id]):
            raise ValueError("its fork's ring %s is not of our site" % sorted(fork_ring))
        self.fork_ring, self.own_held_upto = fork_ring, _counter(state.get("own_held_upto", 0))
        self.lineage = lineage
        self.forks = _counter(state.get("forks", 0))
        # (a daemon of before the counts sends neither: a message of an epoch we left is then
        # taken, as before)
        self.kept_rings = _counter(state.get("kept_rings", 0))
        self.fork_unread = _checked(state.get("fork_unread", False), bool)
        self.epochs_left = {}
        for entry in _checked(state.get("epochs_left", []), list)[:LINEAGE_MAX]:
            e, n_left = _checked(entry, list)
            self.epochs_left[_counter(e)] = _counter(n_left)
        # (a fork's daemon may have been changing its own view: that is over; the state sent
        # is quiet, so is ours now)
        self.proposals, self.proposal_lost, self.refrozen = {}, frozenset(), frozenset()
        self.frozen, self.closing, self.closing_next, self.merging = {}, None, None, None
        self.join_hold, self.aru_pending, self.forward_held = {}, {}, set()
        self.suspect_sent, self.suspect_lost, self.join_sent = 0, frozenset(), 0
        self.merge.lift_delivery_bounds()
        self.wide, self.links = False, {}
        self.stood_down = False
        self._import_interest(_checked(state.get("interest", {}), dict), n)
        self._end_incarnations_merge(now)
        self._log("up to date: view %d of the sites %s, %d messages waiting in the merge, "
                  "positions %s" % (self.view_seq, live, sum(len(s.ordered) for s in self.streams.values()),
                                    self.applied_seq), now)

    def _import_interest(self, interest: dict, n: int) -> None:
        """The members of the sites the exporter knew, at the state's point of the order (a
        state without them, or a site not in them: unknown, it may owe every message)."""
        members: Dict[int, Dict[str, set]] = {s: {} for s in range(n)}
        left: Dict[int, Dict[str, int]] = {s: {} for s in range(n)}
        for k, entry in interest.items():
            site = _site_key(k, n)
            if len(_checked(entry, list)) != 2 or site == self.site_id:
                raise ValueError("interest of site %r: %r" % (k, entry))
            groups, gone = entry
            for g, names in _checked(groups, dict).items():
                members[site][g] = {_checked(x, str) for x in _checked(names, list)}
            left[site] = {_checked(g, str): _counter(v) for g, v in _checked(gone, dict).items()}
        self.interest_members, self.interest_left = members, left
        self.interest_known = {_site_key(k, n) for k in interest}
        self.interest_pending, self.interest_parts = {}, {}

    # ------------------------------------------------------------ after every input
    def _after(self, now: float) -> None:
        """The gate, the ARU rule, then what waits goes to the links and the ring."""
        self._pass_gate()
        if self.is_representative():
            self._announce_aru(now)
            self._flush_links(now)
            self._flush_ring()

    def _announce_aru(self, now: float) -> None:
        """While a SAFE message waits for it; and now and then while records are kept, so
        that they can be dropped (none is: then nothing more to say). Once after a merge if a
        tree of the merged view cannot reach a site (a cut within an old view): the others
        go round it only when every site said its ARU in the merged view (_trees_go_round),
        and ours may stay at the limit (what is just above it was lost on the cut link)."""
        limit = self.tree_groups_limit_lts
        if (limit is not None and self.aru_said_for != limit and self.closing is None and self.merging is None
                and self.site_aru >= limit and any(t.unreachable for t in self.trees.values())):
            self.aru_said_for = limit
            self.aru_announced, self.aru_announced_at = self.site_aru, now
            self.to_ring.append(SiteRecord(SITE_ARU, self.site_id, self.site_aru, self.view_seq))
            return
        if self.site_aru <= self.aru_announced:
            return
        waits = self.aru_wanted > self.aru_announced and (
            self.site_aru >= self.aru_wanted or now >= self.aru_announced_at + SITE_ARU_EVERY_S)
        collect = now >= self.aru_announced_at + SITE_ARU_KEPT_EVERY_S and any(self.kept.values())
        if waits or collect:
            self.aru_announced, self.aru_announced_at = self.site_aru, now
            self.to_ring.append(SiteRecord(SITE_ARU, self.site_id, self.site_aru, self.view_seq))

    def _drop_kept(self) -> None:
        """Messages every daemon of every site holds (lts <= the global ARU) are never sent
        again: forget them."""
        if self.merging is not None:
            return  # the other view's sites may lack any of it (see "merging views")
        held = min(s.stable_aru for s in self.streams.values())
        for site, kept in self.kept.items():
            while kept and kept[0].lts <= held:
                kept.popleft()
                self.kept_base[site] += 1

    def _flush_links(self, now: float) -> None:
        """The records for each site go to its link as a byte stream cut into full payloads.
        A last, partial payload goes only when nothing waits in the link's queue: behind
        queued packets it would wait anyway, and kept here it fills up with the next records
        (a flood of small messages crosses in full packets, not one packet per delivery)."""
        for site, link in list(self.links.items()):
            data = self._out_bytes[site]
            step = link.max_payload_bytes
            sent = 0
            try:
                while sent < len(data) and site in self.links:
                    if len(data) - sent < step and link.queued_packets():
                        break
                    self._hop_output(site, link.submit(bytes(data[sent:sent + step]), now), now)
                    sent += step
            except RingUsageError:
                self.counters["hop_queue_full"] += 1  # the rest waits here
            del data[:sent]

    def _flush_ring(self) -> None:
        while self.to_ring:
            batch = [self.to_ring.popleft()]
            size = len(encode_site_record(batch[0]))
            while self.to_ring and size + len(encode_site_record(self.to_ring[0])) <= SITES_BATCH_BYTES:
                size += len(encode_site_record(self.to_ring[0]))
                batch.append(self.to_ring.popleft())
            self._submit_records(batch)

    def _submit_records(self, batch: List[SiteRecord]) -> None:
        """One SITES message of these records into our ring."""
        # (named by our epoch: a fork's records must not count where the kept side reads
        # them, see _other_incarnation)
        # and by the rings that kept it since it began, if any: a fork of ours tells ours
        # made after it from those made before, _other_incarnation)
        tag = [str(self.epoch)] if self.epoch else []
        if tag and self.kept_rings:
            tag.append(str(self.kept_rings))
        msg = DaemonMessage(SITES, self.name, "", AGREED_MESS, tag, data=encode_site_records(batch))
        self.orderer.submit(msg)  # never refused: only DATA is
        self.counters["sites_messages_submitted"] += 1

    # ------------------------------------------------------------ output
    def _deliver(self, msg: DaemonMessage) -> None:
        key = (msg.site_id, msg.seq, msg.lts)
        if key in self.group_ops_again:
            self.group_ops_again.discard(key)
            msg.again = True
            self.counters["group_ops_delivered_again"] += 1
        self.outputs.append(Deliver(msg))

    def _log(self, text: str, now: Optional[float]) -> None:
        self.log.append("%s %s %s" % ("%.3f" % now if now is not None else "-", self.name, text))


# ---- A daemon of several sites: its ring, its gateway and its groups (LinkProtocol = Hop) ------

#: the group a ROSTER message names (a STATE message; no client group starts with '#roster')
ROSTER_GROUP = "#roster#"
#: the group of a site's STATE in the exchange after the sites' views merged (a partition
#: healed): its representative names the members at its site's daemons
SITES_STATE_GROUP = "#sitestate#"


#: the group of a REJOIN (a STATE message): a daemon of a site's fork that took the kept ring's
#: state names its clients' memberships of the fork, which the kept state lacks; where it is
#: delivered every daemon adds them back (a network change with two vs_sets)
REJOIN_GROUP = "#rejoin#"


#: the group of the messages that bring a late daemon of a site up to date (STATE messages,
#: like ROSTER): each daemon's STATUS, the sender's AGAIN, the state's parts
SYNC_GROUP = "#sync#"
#: the state goes through the ring in parts of at most this many bytes (compressed JSON)
SYNC_PART_BYTES = 100000
#: the largest state (compressed) a daemon sends or takes: above it, the late daemon stops
SYNC_MAX_BYTES = 64 * 1024 * 1024
#: what a late daemon holds back (the ring's deliveries after the point of its state) while
#: the state crosses the ring: above either bound it stops rather than grow without end
SYNC_MAX_HELD_MESSAGES = 500000
SYNC_MAX_HELD_BYTES = 256 * 1024 * 1024
#: a sender whose state is busy (a view of the sites being changed) tries again this often
SYNC_RETRY_EVERY_S = 0.05


#: the most entries of a site's lineage sent with its state (one per fork; a site forks only
#: when its LAN splits). Beyond it the oldest go, and two lineages may seem to part at their
#: start: then what a fork's daemon delivered of its own stream before the fork would be
#: delivered again
LINEAGE_MAX = 64
ENDED_GIVEUPS_MAX = 8  # the GIVEUPs of ended incarnations of our site a daemon keeps (oldest go)


def parted_at(mine: List[Tuple[int, int]], theirs: List[Tuple[int, int]]) -> Optional[int]:
    """Where the streams of two rings of one site, of these lineages (SiteGateway.lineage),
    part: the site_seq where the first entry not common to both began (the lower of the
    two); None if neither has one (the same incarnation)."""
    i = 0
    while i < len(mine) and i < len(theirs) and mine[i] == theirs[i]:
        i += 1
    seqs = [x[1] for x in mine[i:i + 1] + theirs[i:i + 1]]
    return min(seqs) if seqs else None


@dataclass
class SiteSync:
    """A point of the ring's order where the sites' state passes to late daemons (SitesOrderer),
    for the group core: `point`: the members a late daemon's name had (an older incarnation's)
    are gone, and, with `export`, the core answers with its groups (SitesOrderer.send_state);
    `install`: a late daemon takes `groups`, another core's state at that point."""
    kind: str  #: "point" or "install"
    late: List[str]
    export: bool = False
    gateway_state: Optional[dict] = None  #: the sender's gateway at the point (with export)
    groups: Optional[dict] = None  #: install: the sender's core
    members: List[str] = field(default_factory=list)  #: install: our ring's daemons
    member_ids: List[Pid] = field(default_factory=list)  #: ... with their incarnations
    ring_seq: int = 0
    #: install: the daemons that take the state with us and came from the ring we came from
    #: (we included): our transitional configuration, as the ring's would be (empty: us alone)
    together: List[str] = field(default_factory=list)
    #: install: the view of the sites the state holds (view seq, its sites), where the daemon
    #: takes it (the gateway may go on into another view in the same poll)
    view: Optional[Tuple[int, List[int]]] = None


@dataclass
class SyncRound:
    """Bringing late daemons of our ring up to date: every daemon said whether it holds the
    sites' state (STATUS), the first in spread.conf order that does sends it, as it is where
    the last STATUS (or its AGAIN number `attempt`) is delivered."""
    ring_id: RingId
    attempt: int
    sender: str
    late: List[str]
    parts: Dict[int, bytes] = field(default_factory=dict)
    parts_bytes: int = 0


class SitesOrderer(Orderer):
    """The Orderer of a daemon whose spread.conf has several sites joined by HOP links: its
    site's ring (a RingOrderer over the site's daemons) below, the SiteGateway above it. What
    the ring delivers goes to the gateway, never straight to the clients; poll() returns, in
    order, the ring's datagrams (Send / SendToAll), its ConfigurationChanges (the group core
    needs them for ROSTER), and the gateway's SendHop, Deliver (in the one order of all
    sites) and SiteViewChange. A datagram on the HOP port comes in by hop_receive(); its
    source address names the daemon (hop_names), and one from an address that is no
    daemon's HOP port is a stranger: counted and dropped.

    A daemon that joins its site's ring late (started after the others, or restarted after a
    crash: a new incarnation) is brought up to date through the ring, at one point of its
    order (lab_guide.md, "A daemon that comes late"):
      1. at a regular ring with a newcomer (by incarnation), and at every ring of a daemon not
         up to date, each daemon submits a STATUS: does it hold the sites' state, and which
         ring it came from. Seeing another's STATUS for our ring, one answers with its own.
      2. Where the ring delivers the last member's STATUS (the same point everywhere), the
         first daemon in spread.conf order that holds the state sends it: its gateway as it is
         there, and its group core's table once the core has reached that point (SiteSync),
         in parts. If nobody holds any state (the daemons start together), all start afresh
         from that point. Where two rings of the site meet, each with a state, one state is
         kept (_point, _kept_rank) and the other ring's daemons take it (a fork's, or one
         started afresh beside it: close_fork first); without split_quorum a daemon holding
         a state of the kept one's epoch stops: nothing merges two streams of one epoch.
      3. A late daemon holds back everything its ring delivers after that point and queues
         its clients' messages (their sessions are accepted; joins and sends wait); its
         gateway takes the state where the last part is delivered, replays what it held, and
         sends what its clients queued. Until then it is never the representative
         (SiteGateway.ineligible); the daemons already there name it one at that same point.
    A view of the sites being changed when the state is due makes the sender wait for a
    quiet moment and say AGAIN (a new point); a ring change before the last part starts the
    round again (its sender may be gone)."""

    def __init__(self, ring: "RingOrderer", gateway: "SiteGateway",
                 hop_names: Dict[Tuple[str, int], str], now: float = 0.0) -> None:
        self.ring_orderer = ring
        self.gateway = gateway
        self.name = gateway.name
        self.hop_names = dict(hop_names)
        self.log = ring.log  #: the ring's lines (the gateway's are gateway.log)
        self.now = now
        self.hop_datagrams_in = 0
        self.hop_strangers = 0
        #: why this daemon must stop (its state cannot be brought up to date), or None
        self.late: Optional[str] = None
        self.synced = False  #: this daemon's gateway holds the sites' state
        self.ring_id: Optional[RingId] = None
        self.prev_ring_id: Optional[RingId] = None
        self.members: List[str] = []
        self.member_ids: frozenset = frozenset([gateway.me])
        self.status_sent: Optional[RingId] = None
        self.status_in: Dict[str, Tuple[bool, str]] = {}
        self.round: Optional[SyncRound] = None
        self.held: list = []  #: a daemon not up to date: the ring's outputs, not yet applied
        self.held_bytes = 0
        #: a daemon up to date in a ring where daemons of another ring of our site may meet
        #: ours: the ring's outputs until the round's point says whose state is kept (None:
        #: no such round). Applied then if ours is; if another's, dropped: they are in it
        self.undecided: Optional[list] = None
        self.undecided_since = 0.0  #: when the hold began (its length goes to the log)
        self.waiting: "collections.deque[Tuple[DaemonMessage, bool]]" = collections.deque()
        self.retry_at: Optional[float] = None  #: the sender's AGAIN, once its state is quiet
        self.syncs_sent = 0
        self.syncs_installed = 0
        #: how often our ring started afresh while this daemon had stood down for a state
        #: (SiteGateway.start_over): it left its views as one that takes a state does
        self.starts_over = 0

    @property
    def leaving(self) -> bool:
        return self.ring_orderer.leaving

    def backlog(self) -> Backlog:
        """The ring's backlog, and the messages the merge holds: a site's own messages wait
        there until the other sites answer them (a WAN round trip, and the HOP link's rate),
        so the daemon stops reading its clients while the WAN lags far behind them (every
        daemon of the site holds the same, so all of them stop alike). A daemon not up to date
        counts its clients' messages that wait for it."""
        ring = self.ring_orderer.backlog()
        held = sum(len(stream.ordered) for stream in self.gateway.streams.values())
        return Backlog(ring.messages + held + len(self.waiting), ring.bytes, ring.refused,
                       ring.max_messages)

    def submit(self, msg: DaemonMessage, urgent: bool = False) -> bool:
        if not self.synced or (self.undecided is not None and msg.kind in CLIENT_MESSAGE_KINDS):
            # its place in the sites' order comes once we are up to date (and a client's,
            # where another ring of our site may meet ours, once the point says whose state
            # is kept: _withdraw_clients_queue)
            if msg.kind == DATA and len(self.waiting) >= self.ring_orderer.cfg.max_pending_messages:
                return False
            self.waiting.append((msg, urgent))
            return True
        return self.ring_orderer.submit(msg, urgent)

    def receive(self, packet: bytes, src, now: float) -> None:
        self.now = now
        self.ring_orderer.receive(packet, src, now)

    def hop_receive(self, packet: bytes, src, now: float) -> None:
        self.now = now
        name = self.hop_names.get(tuple(src[:2]))
        if name is None:
            self.hop_strangers += 1
            return
        self.hop_datagrams_in += 1
        self.gateway.hop_datagram(name, packet, now)

    def tick(self, now: float) -> None:
        self.now = now
        self.ring_orderer.tick(now)
        if now >= self.gateway.next_deadline_s():
            self.gateway.tick(now)
        if self.retry_at is not None and now >= self.retry_at:
            self._again(now)
        if self.synced and self.waiting:
            self._flush_waiting()

    def leave(self, reason: str, now: float) -> None:
        self.now = now
        self.ring_orderer.leave(reason, now)

    def poll(self) -> list:
        out = []
        gateway = self.gateway
        while True:  # the gateway submits to the ring, which may answer at once (a ring of one)
            ring_out = self.ring_orderer.poll()
            for item in ring_out:
                if item.__class__ is Deliver:
                    msg = item.msg
                    if msg.kind == STATE and msg.groups and msg.groups[0] == SYNC_GROUP:
                        self._sync_message(msg, out)  # (never in the sites' streams)
                    elif self.undecided is not None:
                        self.undecided.append(item)
                    elif self.synced:
                        gateway.ring_output(item, self.now)
                    else:
                        self._hold(item)
                elif isinstance(item, ConfigurationChange):
                    self._ring_change(item, out)
                else:
                    out.append(item)
            site_out = gateway.poll()
            out.extend(site_out)
            if not ring_out and not site_out:
                return out

    # -- bringing a late daemon up to date ------------------------------------------------------
    def _ring_change(self, change: ConfigurationChange, out: list) -> None:
        if change.kind != CONF_REGULAR:
            self._apply_or_hold(change, out)
            return
        ids = frozenset(getattr(change, "member_ids", ()) or [(n, 0) for n in change.members])
        newcomers = sorted({pid[0] for pid in ids - self.member_ids} - {self.name})
        # daemons that came from another ring than ours (a ring of our site may meet ours)
        others = set(change.members) - set(change.transitional_members)
        self._settle_undecided(True, out)  # (that ring's round never came to its point)
        self.prev_ring_id, self.ring_id = self.ring_id, change.ring_id
        self.member_ids, self.members = ids, list(change.members)
        self.status_in = {}
        self.round = None
        self.retry_at = None
        if self.synced and newcomers:
            # not the representative before they are up to date: the same at each of us
            self.gateway.ineligible = self.gateway.ineligible | frozenset(newcomers)
        self._apply_or_hold(change, out)
        if not self.synced and self.members == [self.name]:
            self._start_afresh(out, "alone in its ring")
            return
        if self._may_meet_another_ring(newcomers, others):
            self.undecided, self.undecided_since = [], self.now
            self._withdraw_clients_queue()
        if newcomers or not self.synced or self.undecided is not None:
            self._send_status()

    def _may_meet_another_ring(self, newcomers: List[str], others: Set[str]) -> bool:
        """Our ring holds daemons that were not in our last one (newcomers) or came from
        another ring than ours (others): another ring of our site may meet ours there (a fork,
        a fresh start), and our state may be the one not kept at the point. What this ring
        delivers before the point is then in the kept state, and applied here too it would be
        delivered twice (seed 71302 --lan-splits --groups: c3's fork delivered c1's messages
        of the ring where they met, then again from c1's state, in another view; seed 461
        --lan-splits: c2 alone in its fork's view delivered c1's message and again after it
        took c1's state). So a daemon up to date holds the ring's outputs until the point
        (`undecided`, _settle_undecided)."""
        return self.synced and bool(newcomers or others)

    def _apply_or_hold(self, item: object, out: list) -> None:
        self._settle_undecided(True, out)  # (a ring change: that ring's round is over)
        if self.synced:
            self.gateway.ring_output(item, self.now)
            if isinstance(item, ConfigurationChange):
                out.append(item)
        else:
            self._hold(item)

    def _hold(self, item: object) -> None:
        self.held.append(item)
        if item.__class__ is Deliver:
            self.held_bytes += len(item.msg.data)
        if self.late is None and (len(self.held) > SYNC_MAX_HELD_MESSAGES
                                  or self.held_bytes > SYNC_MAX_HELD_BYTES):
            self.late = ("this daemon joined site %d's ring late and holds back %d messages "
                         "(%d bytes) while it waits for the sites' state, above its limits "
                         "(%d messages, %d bytes): it stops; start it again when the traffic "
                         "is lower" % (self.gateway.site_id, len(self.held), self.held_bytes,
                                       SYNC_MAX_HELD_MESSAGES, SYNC_MAX_HELD_BYTES))

    def _tag(self) -> str:
        return _ring_str(self.ring_id) if self.ring_id is not None else ""

    def _send_status(self) -> None:
        if self.status_sent == self.ring_id:
            return
        self.status_sent = self.ring_id
        came_from = _ring_str(self.prev_ring_id) if self.prev_ring_id is not None else "-"
        holds = self.synced and not self.gateway.holds_nothing()
        # and the number of sites in its view: where two rings of our site meet, the state
        # kept is the one the wide area holds (the other ring's is a fork the others refused);
        # and how many rings kept its epoch (of one epoch, the later state: _point)
        body = "%d\n%s\n%d\n%d\n%d\n%d" % (int(holds), came_from, self.gateway.epoch if self.synced else 0,
                                           len(self.gateway.live_sites) if holds else 0, self.gateway.forks,
                                           self.gateway.kept_rings if holds else 0)
        self.ring_orderer.submit(DaemonMessage(
            STATE, self.name, "#sync#%s" % self.name, AGREED_MESS, [SYNC_GROUP, "status", self._tag()],
            data=body.encode("latin-1")), urgent=True)

    def _sync_message(self, msg: DaemonMessage, out: list) -> None:
        groups = msg.groups
        if len(groups) < 3 or groups[2] != self._tag() or msg.origin not in self.members:
            return  # another ring's: its round is over
        kind = groups[1]
        if kind == "status":
            lines = msg.data.decode("latin-1").split("\n")
            if msg.origin in self.status_in or len(lines) not in (5, 6) or lines[0] not in ("0", "1") \
                    or not all(x.isdigit() for x in lines[2:]):
                return  # (5 lines: a daemon of before kept_rings, read as 0)
            self.status_in[msg.origin] = (lines[0] == "1", lines[1], int(lines[2]), int(lines[3]),
                                          int(lines[4]), int(lines[5]) if len(lines) == 6 else 0)
            self._send_status()  # a round another daemon started: we take part
            if all(name in self.status_in for name in self.members):
                self._point(0, out)
            return
        r = self.round
        if r is None or msg.origin != r.sender:
            return
        if kind == "again" and msg.hint == r.attempt + 1:
            self._point(msg.hint, out)
        elif kind == "state" and len(groups) == 4 and groups[3] == str(r.attempt):
            self._state_part(r, msg, out)
        elif kind == "refused" and self.name in r.late:
            self.late = msg.data.decode("latin-1")

    def _point(self, attempt: int, out: list) -> None:
        """Where the round's state is taken (the same delivery at every daemon of the ring)."""
        if attempt == 0:
            configured = self.gateway.sites[self.gateway.site_id]
            holders = [n for n in configured if n in self.status_in and self.status_in[n][0]]
            if not holders:
                self._settle_undecided(True, out)  # (as before the point: nothing is kept)
                kept = max(self.status_in[n][2] for n in self.members)
                self._start_afresh(out, "no daemon of the ring holds the sites' state", kept)
                return
            # two rings of our site meet (its LAN was split, each went on): the state kept is
            # that of the ring whose epoch went through fewer forks (the others refused the
            # fork while the incarnation it left lived), then the one whose view holds the
            # most sites, then (neither forked: one started afresh beside the other, a
            # restarted daemon alone in its ring) the older epoch, the one the others read
            # (a fresh start's epoch is its daemons' latest start, in ms: seed 7158
            # --lan-splits, a1 restarted lost its commit token, started afresh alone and was
            # kept over a2 and a3 by the file's order), then the first in the file's; the
            # daemons of the other ring are brought up to date from it like late ones.
            # Without dynamic voting (no forks) a daemon of the other ring stops if its state
            # is of the kept one's epoch (two streams of one epoch: nothing merges them); one
            # that started afresh beside it (another epoch: the others refused its HELLO
            # while the kept one lived) takes the kept state (seed 4408 --hostile 0.1 --key:
            # a1, restarted in a site of two, lost its commit token, started afresh alone,
            # and a2 stopped)
            split_quorum = self.gateway.votes()
            sender = self._kept_sender(holders, configured)
            apart = [n for n in holders if self.status_in[n][1] != self.status_in[sender][1]]
            if self.name in apart and not split_quorum and self.status_in[self.name][2] == self.status_in[sender][2]:
                self.late = ("this daemon holds a state of site %d's streams that another ring of "
                             "the site went on without (the site was split in two rings, both "
                             "with traffic): spread_mini cannot merge the two, so this daemon "
                             "stops; start it again and it is brought up to date" % self.gateway.site_id)
                self.undecided = None
                return
            late = [n for n in self.members if not self.status_in[n][0] or n in apart]
            self.round = SyncRound(self.ring_id, 0, sender, late)
            self._settle_undecided(self.name not in late, out, self.status_in[sender][2])
            if apart:
                self.gateway.ineligible = self.gateway.ineligible | frozenset(apart)
                self.gateway._log("two rings of site %d meet: %s keep the state of %s (%d sites "
                                  "in its view, %d rings kept its epoch); %s take it" % (
                                      self.gateway.site_id, ", ".join(n for n in holders if n not in apart),
                                      sender, self.status_in[sender][3], self.status_in[sender][5],
                                      ", ".join(apart)), self.now)
        r = self.round
        r.attempt, r.parts, r.parts_bytes = attempt, {}, 0
        if not r.late:
            self.round = None
            return
        if self.synced and self.name in r.late:  # (it holds nothing worth keeping, or a fork's)
            # a fork's daemon first ends the fork's view: TRANSITIONAL of our site alone and
            # the fork's messages its merge still held (SiteGateway.close_fork), before any
            # later output; SiteSync("install") follows when the state has come
            if self.status_in.get(self.name, (False,))[0]:
                self.gateway.close_fork(self.now)
                out.extend(self.gateway.poll())
            self.synced = False
            self.gateway.stand_down()
        if not self.synced:  # late: the state will be as it is here; what came before is in it
            self.held, self.held_bytes = [], 0
            self.gateway._log("not up to date: waits for the sites' state from %s" % r.sender, self.now)
            return
        self.gateway.ineligible = self.gateway.ineligible | frozenset(r.late)
        self.gateway.taken_in(r.late)
        out.extend(self.gateway.poll())  # the core reaches the point with what came before it
        event = SiteSync("point", list(r.late), export=(r.sender == self.name))
        if event.export:
            if self.gateway.quiescent():
                event.gateway_state = self.gateway.export_state()
            else:
                event.export = False
                self._retry_later()
        out.append(event)

    def _withdraw_clients_queue(self) -> None:
        """(a ring where another ring of our site may meet ours: `undecided`) Our clients'
        messages that the ring has not sent yet wait with those that come until the point
        (`waiting`, as a late daemon's do): then they go into the order if our state is kept,
        or once we have taken the kept one. Sent before the point, they were in the order
        that the kept side applies and we drop (the kept state holds them as delivered), so
        we, their sender, never delivered them (seed 840 --lan-splits --client-views: b3, a
        fork, queued 10 of its clients' messages while its ring re-formed; they went round
        the ring where it met b2's fork before the status round's point, b2 delivered them in
        its view and b3 dropped them with what it held there). Nothing of the new ring has
        gone yet when its regular configuration is read: the install ends a token visit."""
        taken = self.ring_orderer.withdraw_queued(CLIENT_MESSAGE_KINDS)
        self.waiting.extendleft((msg, False) for msg in reversed(taken))

    def _settle_undecided(self, ours_kept: bool, out: list, kept_epoch: int = 0) -> None:
        """The ring's outputs held since a ring where another ring of our site might meet
        ours (`undecided`): applied if our state is kept (or no round decided it), dropped if
        we take another's (what its daemons applied before the point is in that state)."""
        held, self.undecided = self.undecided, None
        if ours_kept and self.synced:  # (else they wait for the state we take)
            self._flush_waiting()
        if held is None:
            return
        # (the price of the hold, one line per ring with newcomers or daemons of another ring)
        self.gateway._log("held %d ring outputs for %.1f ms from the ring's regular configuration (%s)" % (
            len(held), 1000 * (self.now - self.undecided_since), "applied" if ours_kept else "another's state kept"),
            self.now)
        if not held:
            return
        if not ours_kept:
            # but our own representative's SITES messages of our epoch, where the kept state
            # is another incarnation's, are ours alone (the kept side refuses them): they may
            # end a view change of ours, which the fork's view must end with before close_fork
            # (seed 74011 --lan-splits: a1's fork, its view 1 half installed, closed in view
            # 0). Not where the kept state is of our own epoch (two rings of one incarnation:
            # kept_rings): the kept side took them too, so its state holds them already
            epoch = self.gateway.epoch
            own = [item for item in held if item.__class__ is Deliver and item.msg.kind == SITES
                   and item.msg.groups[:1] == [str(epoch)] and kept_epoch != epoch]
            self.gateway.counters["ring_outputs_dropped_at_the_point"] += len(held) - len(own)
            held = own
        for item in held:
            self.gateway.ring_output(item, self.now)
            if isinstance(item, ConfigurationChange):
                out.append(item)

    def _kept_rank(self, name: str, configured: List[str]) -> tuple:
        """Where two rings of our site meet: the lowest is the state kept (see _point)."""
        _, _, epoch, sites, forks, _ = self.status_in[name]
        return forks, -sites, epoch if forks == 0 else 0, configured.index(name)

    def _kept_sender(self, holders: List[str], configured: List[str]) -> str:
        """The daemon whose state is kept: the best by _kept_rank, and of the holders of its
        epoch, the one whose epoch more rings kept (kept_rings), whatever its view. Two
        states of one epoch are one incarnation at two points: a daemon that sat out rings
        (its token lost, its commit token lost, while the rest of its ring went on with a
        quorum: dynamic voting) holds the older one, and the others read the stream the
        later ring went on with (seed 9599 --key: a1 sat in GATHER while a3 and the
        restarted a2 went on; the file's order kept a1's state, whose site_seqs 4..6 were
        a1's clients' messages where a3's had delivered its own, and a3 took them for its
        own and never delivered them)."""
        best = min(holders, key=lambda n: self._kept_rank(n, configured))
        same_epoch = [n for n in holders if self.status_in[n][2] == self.status_in[best][2]]
        return min(same_epoch, key=lambda n: (-self.status_in[n][5], self._kept_rank(n, configured)))

    def send_state(self, event: SiteSync, groups: Optional[dict]) -> None:
        """The group core's answer to a `point` with export (None: busy, try again): the state
        goes through the ring in parts."""
        r = self.round
        if r is None or r.sender != self.name:
            return
        if groups is None:
            self._retry_later()
            return
        blob = zlib.compress(json.dumps({"gateway": event.gateway_state, "groups": groups},
                                        separators=(",", ":")).encode("utf-8"), 6)
        tag = self._tag()
        if len(blob) > SYNC_MAX_BYTES:
            why = ("the sites' state is %d bytes compressed, above the limit of %d: daemons %s "
                   "of site %d cannot be brought up to date and stop" % (
                       len(blob), SYNC_MAX_BYTES, ", ".join(r.late), self.gateway.site_id))
            self.gateway._log("ERROR: " + why, self.now)
            self.ring_orderer.submit(DaemonMessage(
                STATE, self.name, "#sync#%s" % self.name, AGREED_MESS, [SYNC_GROUP, "refused", tag],
                data=why.encode("latin-1")), urgent=True)
            return
        parts = [blob[i:i + SYNC_PART_BYTES] for i in range(0, len(blob), SYNC_PART_BYTES)]
        for index, part in enumerate(parts):
            self.ring_orderer.submit(DaemonMessage(
                STATE, self.name, "#sync#%s" % self.name, AGREED_MESS,
                [SYNC_GROUP, "state", tag, str(r.attempt)], index << 16 | len(parts), data=part), urgent=True)
        self.syncs_sent += 1
        self.gateway._log("sends the sites' state to %s: %d bytes in %d parts" % (
            ", ".join(r.late), len(blob), len(parts)), self.now)

    def _retry_later(self) -> None:
        self.retry_at = self.now + SYNC_RETRY_EVERY_S

    def _again(self, now: float) -> None:
        """The sender's state was busy at the point: a new point, once it is quiet."""
        r = self.round
        if r is None or r.sender != self.name:
            self.retry_at = None
            return
        if not self.gateway.quiescent():
            self.retry_at = now + SYNC_RETRY_EVERY_S
            return
        self.retry_at = None
        self.ring_orderer.submit(DaemonMessage(
            STATE, self.name, "#sync#%s" % self.name, AGREED_MESS, [SYNC_GROUP, "again", self._tag()],
            r.attempt + 1), urgent=True)

    def _state_part(self, r: SyncRound, msg: DaemonMessage, out: list) -> None:
        index, count = msg.hint >> 16, msg.hint & 0xFFFF
        if index >= count or index in r.parts:
            return
        r.parts[index] = msg.data
        r.parts_bytes += len(msg.data)
        if r.parts_bytes > SYNC_MAX_BYTES and self.name in r.late:
            self.late = "the sites' state sent by %s is above %d bytes: this daemon stops" % (
                r.sender, SYNC_MAX_BYTES)
            return
        if len(r.parts) < count:
            return
        self.round = None
        if self.synced:
            self.gateway.ineligible = self.gateway.ineligible - frozenset(r.late)
            self.gateway._log("daemons %s are up to date (the sites' state of %s)" % (
                ", ".join(r.late), r.sender), self.now)
            self.gateway.choose_representative(self.now)
            return
        if self.name not in r.late:
            return
        try:
            state = self._decode_state(b"".join(r.parts[i] for i in range(count)))
            self.gateway.import_state(state["gateway"], self.now)
        except (ValueError, KeyError, TypeError, AttributeError, zlib.error) as exc:
            self.late = ("the sites' state sent by %s does not decode (%s): this daemon stops "
                         "rather than run with a wrong state" % (r.sender, exc))
            return
        self.gateway.ring_members = frozenset(self.members)
        out.append(SiteSync("install", list(r.late), groups=state["groups"], members=list(self.members),
                            member_ids=sorted(self.member_ids), ring_seq=self.ring_id[0],
                            together=self._came_with_us(r.late),
                            view=(self.gateway.view_seq, list(self.gateway.live_sites))))
        self.synced = True
        self.syncs_installed += 1
        self._replay(self.held)
        self.gateway.ineligible = self.gateway.ineligible - frozenset(r.late)
        self.gateway.choose_representative(self.now)
        self._flush_waiting()

    def _came_with_us(self, late: List[str]) -> List[str]:
        """Of the late daemons, those that held a state and came from the ring we came from
        (their STATUS says so): the daemons whose clients keep their views with ours."""
        mine = self.status_in.get(self.name)
        if mine is None:
            return [self.name]
        return sorted(n for n in late if n in self.status_in and self.status_in[n][0]
                      and self.status_in[n][1] == mine[1]) or [self.name]

    @staticmethod
    def _decode_state(blob: bytes) -> dict:
        unzip = zlib.decompressobj()
        raw = unzip.decompress(blob, SYNC_MAX_BYTES * 8)
        if unzip.unconsumed_tail or not unzip.eof:
            raise ValueError("it does not end where it should, or is too big")
        state = json.loads(raw.decode("utf-8"))
        if type(state) is not dict or type(state.get("gateway")) is not dict \
                or type(state.get("groups")) is not dict:
            raise ValueError("not the expected parts")
        return state

    def _start_afresh(self, out: list, why: str, kept_epoch: int = 0) -> None:
        """Nobody in our ring holds the sites' state (they started together, or we are alone):
        each starts with its empty state, from our ring's regular configuration on."""
        self.synced = True
        self.round = None
        self.gateway.ineligible = frozenset()
        held = self.held
        starts = [i for i, item in enumerate(held) if isinstance(item, ConfigurationChange)
                  and item.kind == CONF_REGULAR]
        self.held, self.held_bytes = [], 0
        # a new incarnation of the site's streams, the same number at each daemon of the ring
        # (a restarted daemon's incarnation is above its earlier one's)
        epoch = kept_epoch or max(pid[1] for pid in self.member_ids)
        if self.gateway.stood_down:  # (it waited for a state that never came)
            self.gateway.start_over(epoch, self.now)
            self.starts_over += 1
        self.gateway.epoch = epoch
        self.gateway.wide_ring = frozenset(self.members)  # (dynamic voting counts from here)
        self.gateway.began_afresh(frozenset(self.members))
        self.gateway._log("site %d's ring %s starts with the sites' state afresh (%s; epoch %d)" % (
            self.gateway.site_id, self._tag(), why, self.gateway.epoch), self.now)
        for item in held[starts[-1] if starts else 0:]:
            self.gateway.ring_output(item, self.now)
            if isinstance(item, ConfigurationChange):
                out.append(item)
        self.gateway.choose_representative(self.now)
        self._flush_waiting()

    def _replay(self, held: list) -> None:
        self.held, self.held_bytes = [], 0
        for item in held:  # (deliveries only: a ring change would have ended the round)
            self.gateway.ring_output(item, self.now)

    def _flush_waiting(self) -> None:
        if self.undecided is not None:
            return  # (until the point: _withdraw_clients_queue)
        while self.waiting:
            msg, urgent = self.waiting[0]
            if not self.ring_orderer.submit(msg, urgent):
                return  # the ring's queue is full: the rest at the next tick
            self.waiting.popleft()


def _sync_text(orderer: SitesOrderer) -> str:
    """This daemon and the sites' state: up to date, or what it waits for (with how much)."""
    r = orderer.round
    if not orderer.synced:
        if r is None:
            return "not yet: its ring is agreeing who sends it (%d messages held back, %d of its clients' waiting)" % (
                len(orderer.held), len(orderer.waiting))
        return "not yet: waits for the state from %s (%d messages held back, %d of its clients' waiting)" % (
            r.sender, len(orderer.held), len(orderer.waiting))
    text = "yes (states sent %d, received %d)" % (orderer.syncs_sent, orderer.syncs_installed)
    if r is not None:
        text += "; %s brings %s up to date" % (r.sender, ", ".join(r.late))
    return text


def sites_snapshot(orderer: SitesOrderer, now: float) -> dict:
    """Plain data for the status table's sites part: the sites and their daemons, the view of
    the sites, the representatives we know (ours; the peers of our links), the links and the
    dissemination trees."""
    gw = orderer.gateway
    links = []
    for site in sorted(gw.links):
        link = gw.links[site]
        row = link.snapshot(now)
        row["site"] = site
        links.append(row)
    reps = {gw.site_id: gw.representative}
    for row in links:
        reps[row["site"]] = row["peer"]
    trees = {source: {s: p for s, p in tree.parent.items() if p is not None}
             for source, tree in gw.trees.items()}
    return {"site_id": gw.site_id, "sites": [list(s) for s in gw.sites],
            "live_sites": list(gw.live_sites), "view_seq": gw.view_seq,
            "representatives": reps, "wide": gw.wide, "links": links, "trees": trees,
            "closing": gw.closing is not None, "sync": _sync_text(orderer),
            "links_down": sorted(sorted((site, other)) for site, (_, down, _) in gw.link_reports.items()
                                 for other in down),
            "routed_around": sorted(gw.routed_around), "prune": gw.hop_settings.prune,
            "counters": dict(gw.counters), "hop_in": orderer.hop_datagrams_in,
            "hop_strangers": orderer.hop_strangers, "refused": gw.hop_counters()}


class SitesGroupCore(GroupCore):
    """Groups whose members are at daemons of several sites. Every daemon of every site
    applies the same messages (joins, leaves, disconnects) in the one order of all sites (the
    gateway's merge), so their tables agree without a state exchange. A network change
    happens at one point of that order too, the same at every daemon:

    * a site's ring lost daemons (a crash inside the site, its representative's included),
      or took in a restarted one: the representative of the new ring sends a ROSTER, a STATE
      message to ROSTER_GROUP holding the ring's seq and its daemons ("!name": restarted);
      where the order delivers it, every daemon of every site drops the members at that
      site's daemons not named, and at the restarted ones (their earlier incarnation's)
      (TRANSITION, REG_MEMB CAUSED_BY_NETWORK). A ROSTER of an older ring than one applied is
      stale: ignored.
    * sites are gone (SiteViewChange): TRANSITION for the groups that lose members with the
      TRANSITIONAL view (the messages of the transitional part come after it), REG_MEMB with
      the REGULAR one.
    * sites joined (a partition healed: the two views merged): each side's table knows only
      its own side's members, so there is a state exchange as a ring has after a merge
      (RingGroupCore): the representative of every site of the new view sends one STATE to
      SITES_STATE_GROUP naming its ring's daemons and the members at them, and the view it
      came from; what the order delivers meanwhile is held. Where the order delivers the last
      site's STATE, every daemon rebuilds the same table from those alone and tells its
      clients, for each group that changed, TRANSITION then REG_MEMB CAUSED_BY_NETWORK with one
      vs_set per view the members came from; then the held messages. A representative that
      crashes before its site's STATE is complete is replaced: the next one sends it when its
      ring re-forms (its parts void the old one's). What is held has a limit (held_limit_bytes):
      over it, this daemon's clients are not read until the exchange is done.

    Group ids are (the first daemon's address, the count of network changes, index): the same
    at every daemon, since all count the same changes."""

    def __init__(self, daemon_name: str, orderer: Orderer, sites: Sequence[Sequence[str]],
                 **kwargs) -> None:
        super().__init__(daemon_name, **kwargs)
        self.orderer = orderer
        self.sites = [list(s) for s in sites]
        self.site_of = {d: i for i, s in enumerate(self.sites) for d in s}
        self.site_id = self.site_of[daemon_name]
        self.ring_members: frozenset = frozenset()  #: our site's last regular ring
        self.ring_ids: frozenset = frozenset()  #: ... its daemons with their incarnations
        self.gone: set = set()  #: daemons left out by a ROSTER or a view of the sites
        self.roster_ring_seq: Dict[int, int] = {}  #: site -> ring seq of its last ROSTER applied
        self.transition_sent: Dict[str, tuple] = {}  #: group -> old id, TRANSITION given
        self.rosters_sent = 0
        self.network_changes = 0
        self.ring_seq = 0  #: our site's last regular ring's seq
        self.view_sites: frozenset = frozenset(range(len(self.sites)))  #: the sites' view we are in
        self.exchange: Optional[StateExchange] = None  #: after a merge: waiting for sites' STATE
        self.exchanges_done = 0
        self.state_parts_sent = 0
        #: the exchange under way: the view we came from (our STATE says it), and per site the
        #: daemon whose STATE parts are being collected (a new representative sends them again)
        self.exchange_came_from = ""
        self.exchange_senders: Dict[int, str] = {}
        self.states_resent = 0  #: our site's STATE sent again by a new representative
        #: exchanges whose last STATE came in a transitional view that lost sites of it (ended
        #: with the regular view instead: _exchange_loses_sites)
        self.exchanges_ended_by_the_regular_view = 0
        self.rejoins_sent = 0  #: REJOINs of our clients' memberships after a fork (site_sync)
        #: our site's fork ended (site_view_change, fork_ends) and the kept state is not taken
        #: yet: what is delivered meanwhile belongs to the fork's transitional view
        self.fork_ending = False
        #: this incarnation of the daemon had a group table already (it delivered, or took a
        #: state): a state taken before that is a restarted (or new) daemon's first table
        self.table_known = False
        #: members at our daemon's name in the first table we took (_install_groups): an
        #: earlier incarnation's, not our sessions' whatever their names, until a ROSTER drops them
        self.predecessor_members: set = set()
        #: (group, member) of our clients that joined in our fork's transitional view: no view
        #: of the group was given to them there, so none ends at the install (no TRANSITION)
        self.fork_end_joins: set = set()
        #: groups whose clients here had their TRANSITION when we took the kept state, and that
        #: it still held them in: their REG_MEMB comes where our REJOIN is delivered
        self.rejoin_waiting: set = set()
        #: the gateway's count of our site's forks at our last regular view of the sites: more
        #: now, and our ring is a fork the sites' view has not caught up with (_lost_at_next_view)
        self.forks_at_view = 0
        #: the daemons of the sites our transitional view of the sites lost (until the regular one)
        self.transitional_lost: set = set()
        #: group -> the daemons whose clients a REJOIN brought back while the group's REG_MEMB
        #: waited (_rejoin): they come from another view, so that REG_MEMB gives them vs_sets
        #: of their own (_network_vs_sets)
        self.came_back: Dict[str, set] = {}
        #: group -> its members that joined after its clients' TRANSITION (_notify: silently,
        #: the same at every daemon of our view): the REG_MEMB that ends the wait gives each a
        #: vs_set of its own (_take_joiners), as they come from no view of the group
        self.silent_joins: Dict[str, set] = {}
        ring = getattr(orderer, "ring_orderer", orderer)
        cfg = getattr(ring, "cfg", None) or RingSettings()
        #: bytes (message data) held during one exchange beyond which it is reported and this
        #: daemon's clients are not read until it is done (as RingGroupCore's): what is held is
        #: never dropped, since every daemon must apply the same messages, but no more is added
        #: here; the other daemons stop alike at the same limit, so the total stays near it
        self.held_limit_bytes = HELD_LIMIT_ROTATIONS * cfg.global_window_packets * cfg.max_packet_bytes
        self.held_peak_messages = 0
        self.held_peak_bytes = 0
        self.held_limit_exceeded = 0
        self.held_over_limit = False  #: now: the exchange under way is over the limit (Daemon reads it)

    def configuration_change(self, change: ConfigurationChange, memb_time: int) -> None:
        """Our site's ring changed (the gateway has it too). A ring that lost daemons matters to
        the groups, and only its representative says so (one ROSTER per ring). So does a ring
        in which a daemon came back: restarted (a new incarnation of a name in the old ring: its
        earlier members are gone; "!name" in the ROSTER), or one the sites count as gone. A
        daemon that joined late gets its table at one point of the order (site_sync)."""
        if change.kind != CONF_REGULAR:
            return
        old, self.ring_members = self.ring_members, frozenset(change.members)
        old_ids, self.ring_ids = self.ring_ids, frozenset(getattr(change, "member_ids", ()))
        self.ring_seq = change.ring_id[0]
        lost = old - self.ring_members
        restarted = {pid[0] for pid in self.ring_ids - old_ids} & {pid[0] for pid in old_ids}
        back = (self.ring_members - old) & self.gone
        mine = self._representative() == self.daemon_name
        if old and lost and mine:
            self._resend_site_state()
        if old and (lost or restarted or back) and mine:
            names = sorted(("!" if d in restarted else "") + d for d in change.members)
            body = "\n".join([str(change.ring_id[0])] + names).encode("latin-1")
            self.orderer.submit(DaemonMessage(STATE, self.daemon_name, "#roster#%s" % self.daemon_name,
                                              AGREED_MESS, [ROSTER_GROUP], data=body), urgent=True)
            self.rosters_sent += 1
            why = ["lost daemons %s" % ", ".join(sorted(lost))] if lost else []
            why += ["daemons %s restarted" % ", ".join(sorted(restarted))] if restarted else []
            why += ["daemons %s came back" % ", ".join(sorted(back))] if back else []
            self.log.append("site %d %s: ROSTER %s sent to every site" % (
                self.site_id, "; ".join(why), ", ".join(names)))

    def _site_forks(self) -> int:
        gateway = getattr(self.orderer, "gateway", None)
        return gateway.counters["site_forks"] if gateway is not None else 0

    def _forked_since_view(self) -> bool:
        """Our ring is a fork of our site (a new incarnation) made since our last regular view
        of the sites: that view still names sites that refuse the fork (their next view leaves
        our site out, ours leaves them out)."""
        return self._site_forks() > self.forks_at_view and bool(self.view_sites - {self.site_id})

    def _representative(self) -> Optional[str]:
        """Our site's representative: the gateway's (it skips a daemon not up to date)."""
        gateway = getattr(self.orderer, "gateway", None)
        if gateway is not None:
            return gateway.representative
        return site_representative(self.sites[self.site_id], self.ring_members)

    # -- a daemon that joined its site's ring late (SitesOrderer) -------------------------------
    def site_sync(self, event: "SiteSync") -> Optional[dict]:
        """`point`: with export, our table for the late daemons (None: busy). `install`: we are
        the late daemon and take the table. (What a restarted daemon's earlier incarnation had
        goes by the ROSTER of the ring that took it in, at every site: configuration_change.)"""
        if event.kind == "install":
            before = self._local_memberships()
            given = set(self.transition_sent)  # (the kept table brings its own)
            # (the fork's silent joiners had no view of their group either: their REJOIN says so)
            self.fork_end_joins |= {(n, m) for n, joiners in self.silent_joins.items() for m in joiners}
            together = set(event.together) | {self.daemon_name}
            shared = {name for name, group in self.groups.items()
                      if any(d not in together for d in group.members.values())}
            self.fork_ending = False
            self._install_groups(event)
            # (and by the kept table: one that holds our clients with members elsewhere shows
            # them that group's changes until its ROSTER of the split drops them here, and the
            # REJOIN's REG_MEMB then puts them alone: seed 478 --lan-splits --groups
            # --client-views, a2's client, joined in the fork's closing view, got a view of g3
            # with cb2 from cb1's LEAVE, then the REJOIN's vs_set of its own, no TRANSITION)
            shared |= {name for name, group in self.groups.items()
                       if any(d not in together for d in group.members.values())}
            self._rejoin_after_install(before, given, shared)
            self.fork_end_joins = set()
            self.forks_at_view = self._site_forks()
            self.transitional_lost = set()
            return None
        if not event.export or self.exchange is not None:
            return None
        return {"groups": [[name, g.index, sorted(g.members.items())] for name, g in sorted(self.groups.items())],
                "memb_time": self.memb_time, "network_changes": self.network_changes,
                "gone": sorted(self.gone), "roster_ring_seq": {str(k): v for k, v in self.roster_ring_seq.items()},
                "transition_sent": {k: list(v) for k, v in self.transition_sent.items()},
                "silent_joins": {k: sorted(v) for k, v in sorted(self.silent_joins.items()) if v},
                "view_sites": sorted(self.view_sites)}

    def _local_memberships(self) -> Dict[str, Tuple[List[str], Tuple[int, int, int]]]:
        """Per group with members at this daemon: those members, and the group's id."""
        out = {}
        for name, group in self.groups.items():
            mine = sorted(m for m, d in group.members.items()
                          if d == self.daemon_name and m not in self.predecessor_members)
            if mine:
                out[name] = (mine, self.group_id(group))
        return out

    def _rejoin_after_install(self, before: Dict[str, Tuple[List[str], Tuple[int, int, int]]],
                              given: Iterable[str] = (), shared: Iterable[str] = ()) -> None:
        """We took the kept ring's table (SitesOrderer: our ring was a fork of our site, or a
        daemon that held a state no one kept). Our clients' memberships of the fork are not in
        it (the kept side dropped them by the ROSTER of the split): their view ends here
        (TRANSITION), and a REJOIN names them to every daemon, where the order delivers it
        they are members again, with everyone's REG_MEMB (_rejoin). Nothing for a daemon that
        held no members (a late one). Not again for a group in `given`: its clients had their
        TRANSITION since their last REG_MEMB (the transitional view in which the fork ended
        lost members of other sites); two in a row would end one view twice.
        Our clients' memberships the kept table still holds (the kept side's ROSTER of the
        split is ordered after the point where we took it) are named too: that ROSTER drops
        them, and the REJOIN, ordered after it, brings them back. Where none was dropped, the
        clients of a group in `given` get the REG_MEMB that ends their wait when the REJOIN
        is delivered (rejoin_waiting), unless a network change ends it first.
        A group in `shared` (it had members at daemons that did not come with us: our
        transitional configuration left them out) whose clients here the kept table still
        holds gets its TRANSITION now as well, and waits alike: the kept side's ROSTER that
        drops them comes later, silently for them here, and the REJOIN's REG_MEMB puts them
        in a vs_set of their own. Without it that REG_MEMB ended, with no TRANSITION, a view
        they had shared with members that went through another (the h9599 doubt: a daemon
        that sat out a ring; the real Spread gives every group with a member at a daemon
        outside our transitional configuration its TRANSITION, groups.c G_handle_trans_memb).
        A client of ours that joined in the fork's closing view and that the kept table holds
        already had no view of the group: its REJOIN changes nothing, so the group waits
        for it in every case (its other clients here get their TRANSITION if they had none),
        and whatever REG_MEMB ends the wait gives the joiner a vs_set of its own (seed 2403
        --lan-splits --groups --client-views: c2's client, in g2's vs_set of cb1; without
        a member elsewhere it got no view of g2 at all)."""
        lost, still = [], []
        shared = set(shared)
        self.rejoin_waiting = set()
        for name, (mine, old_id) in sorted(before.items()):
            group = self.groups.get(name)
            missing = [m for m in mine if m in self.local and (group is None or m not in group.members)]
            present = [m for m in mine if m in self.local and m not in missing]
            still.extend("%s\t%s%s" % (name, m, "\tj" if (name, m) in self.fork_end_joins else "")
                         for m in present)
            joiners = {m for m in present if (name, m) in self.fork_end_joins}
            if present and name not in given and (name in shared or joiners):
                for member in present:
                    session = self.local[member]
                    if session.group_membership and member not in joiners:
                        self._enqueue(session, encode_transition(name, old_id))
                given = set(given) | {name}
                if name in shared:
                    # (whatever REG_MEMB ends the wait, ours come from the fork's view, not
                    # the kept table's)
                    self.came_back.setdefault(name, set()).add(self.daemon_name)
            if joiners:
                # (one that joined in the fork's closing view comes from no view at all)
                self.silent_joins.setdefault(name, set()).update(joiners)
            if present and name in given:
                self.rejoin_waiting.add(name)
                # (their TRANSITION is given: a network change before the REJOIN ends the
                # wait with its REG_MEMB alone, as in the kept table's groups that had one)
                self.transition_sent.setdefault(name, old_id)
            if not missing:
                continue
            # ("j": it joined in our fork's closing transitional view, with no view of the
            # group there: the REJOIN's REG_MEMB gives it a vs_set of its own)
            lost.extend("%s\t%s%s" % (name, m, "\tj" if (name, m) in self.fork_end_joins else "")
                        for m in missing)
            for member in missing:
                session = self.local[member]
                if session.group_membership and name not in given and (name, member) not in self.fork_end_joins:
                    self._enqueue(session, encode_transition(name, old_id))
        if not lost and not still:
            return
        # urgent: ahead of the messages our clients queued while we were not up to date (a
        # LEAVE among them must come after the REJOIN it undoes). It names our ring (the
        # merged one): a ROSTER of a later ring applied before it tells whether we are gone
        body = "\n".join(["%d" % self.ring_seq] + lost + still).encode("latin-1")
        self.orderer.submit(DaemonMessage(STATE, self.daemon_name, "#rejoin#%s" % self.daemon_name,
                                          AGREED_MESS, [REJOIN_GROUP], data=body), urgent=True)
        self.rejoins_sent += 1
        self.log.append("took the kept state of site %d: %d memberships of this daemon's clients "
                        "in the fork are sent again (REJOIN)" % (self.site_id, len(lost)))

    def _rejoin(self, msg: DaemonMessage) -> None:
        """A REJOIN (_rejoin_after_install) where the order delivers it, the same at every
        daemon: its members come back, each changed group's local members get TRANSITION
        (not again at the daemon that sent it: it gave it at its install) and REG_MEMB
        CAUSED_BY_NETWORK with two vs_sets, the members that were here and the ones back. One
        of a daemon that a ROSTER of its ring or a later one counts gone is stale (its members
        would never leave); one that comes before the ROSTER of its ring (which names the
        daemon back) is taken: the daemon is in that ring."""
        origin = msg.origin
        lines = msg.data.decode("latin-1").split("\n")
        if origin not in self.site_of or not lines[0].isdigit():
            self.log.append("a REJOIN from %s that names no ring: ignored" % origin)
            return
        if origin in self.gone:
            if int(lines[0]) <= self.roster_ring_seq.get(self.site_of[origin], -1):
                self.log.append("a REJOIN of %s, a daemon gone since: ignored" % origin)
                return
            self.gone.discard(origin)
        added: Dict[str, List[str]] = {}
        joined: Dict[str, set] = {}  # (of those, the ones with no view of the group before)
        for line in lines[1:]:
            fields = line.split("\t")
            if len(fields) not in (2, 3) or fields[2:] not in ([], ["j"]) or not name_is_legal(fields[0]) \
                    or not fields[1].endswith("#" + origin):
                continue
            group = self.groups.get(fields[0])
            if group is None or fields[1] not in group.members:
                added.setdefault(fields[0], []).append(fields[1])
                if fields[2:]:
                    joined.setdefault(fields[0], set()).add(fields[1])
        hold = self._lost_at_next_view()
        if origin == self.daemon_name:
            waiting, self.rejoin_waiting = self.rejoin_waiting, set()
            for name in sorted((waiting & set(self.transition_sent)) - set(added)):
                group = self.groups.get(name)
                if group is not None and self._waits_for_view(group, hold):
                    continue  # (its REG_MEMB comes with the regular view: _network_change)
                del self.transition_sent[name]
                if group is not None:
                    self._end_transition(group)
        if not added:
            return
        old_ids = {name: self.group_id(self.groups[name]) for name in added if name in self.groups}
        self.network_changes += 1
        self.memb_time = self.network_changes
        for name, members in sorted(added.items()):
            group = self.groups.get(name)
            if group is None:
                group = self.groups[name] = Group(name)
            for member in members:
                group.members[member] = origin
                self.member_groups.setdefault(member, set()).add(name)
                session = self.local.get(member)
                if session is not None:
                    session.groups.add(name)
            group.index = 1
            self._reorder(group)
        for name in sorted(added):
            group, old_id = self.groups[name], old_ids.get(name)
            given = self.transition_sent.pop(name, None) is not None or origin == self.daemon_name
            self.came_back.setdefault(name, set()).add(origin)
            if name in joined:
                self.silent_joins.setdefault(name, set()).update(joined[name])
            if self._waits_for_view(group, hold):
                self._hold_rejoin(group, old_id, given)
                continue
            if given:
                old_id = None
            came_from = {d: self._came_from_key(name, d) for d in self.site_of}
            self._announce_network_change(group, old_id, came_from, self._came_from_key(name, self.daemon_name),
                                          self._take_joiners(group))
            self.came_back.pop(name, None)
        self.log.append("network change: %s's clients are back from its site's fork (REJOIN): "
                        "%d members in %d groups" % (origin, sum(map(len, added.values())), len(added)))

    def _waits_for_view(self, group: Group, hold: set) -> bool:
        """The group keeps members at daemons our next regular view of the sites leaves out
        (_lost_at_next_view): a REG_MEMB now would name them in a view they never share."""
        return any(d in hold for d in group.members.values())

    def _take_joiners(self, group: Group) -> Set[str]:
        return self.silent_joins.pop(group.name, set()) & set(group.members)

    def _remove(self, member: str, group: Group) -> None:
        super()._remove(member, group)
        joiners = self.silent_joins.get(group.name)
        if joiners is not None:
            joiners.discard(member)  # (one that joins again comes from no view either)
        if member not in self.member_groups:
            self.predecessor_members.discard(member)  # (a session of that name is ours now)

    def _reorder(self, group: Group) -> None:
        super()._reorder(group)
        if self.predecessor_members:  # (an earlier incarnation's member: no session of ours)
            group.local = [s for s in group.local if s.private_group not in self.predecessor_members]

    def _hold_rejoin(self, group: Group, old_id: Optional[Tuple[int, int, int]], given: bool) -> None:
        """A REJOIN delivered while the group's REG_MEMB waits for the sites' regular view
        (seed 6 --lan-splits --client-views: delivered in the transitional view that lost site
        a, its REG_MEMB named a1's member in b3's own vs_set). Its members are in the table;
        our clients get TRANSITION now (unless they had it) and the REG_MEMB with that view
        (_network_change), which gives the members back their own vs_set (came_back)."""
        if not given and old_id is not None:
            for session in group.local:
                if session.group_membership:
                    self._enqueue(session, encode_transition(group.name, old_id))
        self.transition_sent[group.name] = old_id or self.group_id(group)
        self.log.append("%s: members back from a fork (REJOIN); its REG_MEMB waits for the sites' "
                        "next view (members at sites it leaves out)" % group.name)

    def _came_from_key(self, name: str, daemon: str) -> str:
        """The view a daemon's members of a group came from, as a sortable key: "0" the
        group's view here, "1 <daemon>" the fork a REJOIN brought them back from."""
        return "1 " + daemon if daemon in self.came_back.get(name, ()) else "0"

    def _network_vs_sets(self, group: Group) -> Tuple[List[List[str]], int]:
        came_from = {d: self._came_from_key(group.name, d) for d in set(group.members.values())}
        sets: Dict[str, List[str]] = {}
        for member in group.ordered:
            sets.setdefault(came_from[group.members[member]], []).append(member)
        keys = sorted(sets)
        mine = self._came_from_key(group.name, self.daemon_name)
        return [sets[k] for k in keys], keys.index(mine) if mine in keys else 0

    def _install_groups(self, event: "SiteSync") -> None:
        state = event.groups
        n = len(self.sites)
        daemons = set(self.site_of)
        table = {}
        for entry in _checked(state["groups"], list):
            name, index, members = _checked(entry, list)
            if not isinstance(name, str) or not name_is_legal(name) or name in table:
                raise ValueError("group %r" % (name,))
            pairs = {}
            for pair in _checked(members, list):
                member, daemon = _checked(pair, list)
                if not isinstance(member, str) or daemon not in daemons:
                    raise ValueError("member %r at %r" % (member, daemon))
                pairs[member] = daemon
            table[name] = (_counter(index), pairs)
        gone = {_checked(d, str) for d in _checked(state["gone"], list)}
        transition = {}
        for name, gid in _checked(state["transition_sent"], dict).items():
            if len(_checked(gid, list)) != 3:
                raise ValueError("group id %r" % (gid,))
            transition[name] = tuple(_counter(x) for x in gid)
        joiners = {}
        for name, members in _checked(state.get("silent_joins", {}), dict).items():
            if name not in table or not set(_checked(members, list)) <= set(table[name][1]):
                raise ValueError("silent joins %r of %r" % (members, name))
            joiners[name] = set(members)
        view_sites = frozenset(_int_list(state["view_sites"], n))
        roster = _per_site(state["roster_ring_seq"], n)
        memb_time, changes = _counter(state["memb_time"]), _counter(state["network_changes"])
        if not gone <= daemons:
            raise ValueError("gone daemons %s" % sorted(gone - daemons))
        if not self.table_known:
            # (a restarted daemon: what its name had is its predecessor's, as at every daemon
            # until the ROSTER of the ring that took it in; a new session of the same private
            # name is not that member: seed 958 --lan-splits --client-views, b2's new client got
            # a REG_MEMB of a group its predecessor had joined)
            self.predecessor_members = {m for _, members in table.values()
                                        for m, d in members.items() if d == self.daemon_name}
        self.table_known = True
        self.groups, self.member_groups = {}, {}
        self.exchange, self.held_over_limit = None, False  # (a fork's, of a view not kept)
        for session in self.local.values():  # (a fork's daemon: its table's groups are gone)
            session.groups = set()
        for name, (index, members) in table.items():
            group = self.groups[name] = Group(name)
            group.members, group.index = members, index
            for member in members:
                self.member_groups.setdefault(member, set()).add(name)
                session = self.local.get(member)
                if session is not None and member not in self.predecessor_members:
                    session.groups.add(name)
            self._reorder(group)
        self.gone, self.transition_sent, self.view_sites = gone, transition, view_sites
        self.came_back = {}  # (the kept table's groups: no REJOIN of ours held in them)
        self.silent_joins = joiners
        self.roster_ring_seq, self.memb_time, self.network_changes = roster, memb_time, changes
        self.ring_members, self.ring_seq = frozenset(event.members), event.ring_seq
        self.ring_ids = frozenset(event.member_ids)
        self.log.append("up to date: %d groups, %d members" % (
            len(self.groups), sum(len(g.members) for g in self.groups.values())))

    def deliver(self, msg: DaemonMessage) -> None:
        self.table_known = True
        ex = self.exchange
        if msg.kind == STATE and msg.groups and msg.groups[0] == SITES_STATE_GROUP:
            if ex is not None and msg.groups[1:] == [str(ex.ring_id)]:
                self._site_state_arrived(ex, msg)
            return  # (an older exchange's: stale)
        if ex is not None:
            ex.held.append(msg)  # it belongs to the merged view: after its REG_MEMB
            ex.held_bytes += len(msg.data)
            self._note_held(ex)
            return
        if msg.kind == STATE:
            if msg.groups and msg.groups[0] == ROSTER_GROUP:
                self._roster(msg)
            elif msg.groups and msg.groups[0] == REJOIN_GROUP:
                self._rejoin(msg)
            return
        if self.fork_ending and msg.kind == JOIN and msg.groups:
            self.fork_end_joins.add((msg.groups[0], msg.sender))
        super().deliver(msg)

    def _targets(self, name: str):
        """As GroupCore's, but a client that joined the group in our fork's transitional view
        gets none of its messages there: it has no view of the group before the REJOIN's."""
        targets = super()._targets(name)
        if self.fork_end_joins:
            targets = [t for t in targets if (name, t.private_group) not in self.fork_end_joins]
        return targets

    def _notify(self, group: Group, cause: int, changed: str) -> None:
        """A JOIN, LEAVE or disconnect delivered in our fork's transitional view (close_fork)
        changes the fork's table, but its clients get no REG_MEMB there: EVS gives a
        transitional view messages only. Its effect shows in the next regular view, the
        REG_MEMB of our REJOIN (_rejoin_after_install names who is a member when the kept
        state is taken: a joiner included, a leaver left out). A leaver still gets its own
        self-leave: it is its answer, not a view of the group."""
        if self.fork_ending:
            self.log.append("%s %s %s in our fork's transitional view: no REG_MEMB before the "
                            "REJOIN's" % (changed, {CAUSED_BY_JOIN: "joined"}.get(cause, "left"), group.name))
            return
        lost = self._lost_at_next_view()
        if group.name not in self.transition_sent and any(d in lost for d in group.members.values()):
            # (a member of a site the next regular view drops joined in the transitional view:
            # the group's view is transitional from here, as if it had had them before)
            self._give_transition(group)
        if group.name in self.transition_sent:
            # its clients had their TRANSITION: the view they are in is transitional until the
            # REG_MEMB of the network change, which names the members as they are then, a
            # joiner in a vs_set of its own (it had no view of the group to come from)
            if cause == CAUSED_BY_JOIN:
                self.silent_joins.setdefault(group.name, set()).add(changed)
            self.log.append("%s %s %s after its TRANSITION: shown in its next REG_MEMB" % (
                changed, {CAUSED_BY_JOIN: "joined"}.get(cause, "left"), group.name))
            return
        super()._notify(group, cause, changed)

    def _lost_at_next_view(self) -> set:
        """The daemons our next regular view of the sites leaves out, as far as we know now:
        those of the sites our transitional view lost, and, once our ring is a fork of our
        site that our view has not caught up with, those of every other site (they refuse it)."""
        lost = set(self.transitional_lost)
        if self._forked_since_view():
            lost |= {d for d, site in self.site_of.items() if site != self.site_id}
        return lost

    def _give_transition(self, group: Group) -> None:
        old_id = self.group_id(group)
        self.transition_sent[group.name] = old_id
        for session in group.local:
            if session.group_membership:
                self._enqueue(session, encode_transition(group.name, old_id))

    def _roster(self, msg: DaemonMessage) -> None:
        if self.fork_ending:
            # the fork's own ROSTER, held in its stream: its clients are in the fork's
            # transitional view, which ends with the kept table (site_sync), not with a view
            # of the fork's ring (a REG_MEMB still naming the sites it has just lost)
            self.log.append("a ROSTER from %s as our site's fork ends: the kept state replaces it" % msg.origin)
            return
        site = self.site_of.get(msg.origin)
        lines = msg.data.decode("latin-1").split("\n")
        if site is None or not lines[0].isdigit():
            self.log.append("a ROSTER from %s that names no ring: ignored" % msg.origin)
            return
        ring_seq = int(lines[0])
        if ring_seq <= self.roster_ring_seq.get(site, -1):
            return  # an older ring's, delivered after a newer one's
        self.roster_ring_seq[site] = ring_seq
        daemons = set(self.sites[site])
        restarted = daemons & {line[1:] for line in lines[1:] if line.startswith("!")}
        alive = daemons & {line.lstrip("!") for line in lines[1:]}
        self.gone = (self.gone - daemons) | (daemons - alive)
        self._network_change("site %d's ring is now %s%s" % (
            site, ", ".join(sorted(alive)),
            " (%s restarted)" % ", ".join(sorted(restarted)) if restarted else ""), restarted)

    def site_view_change(self, change: "SiteViewChange") -> None:
        self.fork_ending = change.fork_ends
        if change.kind == CONF_REGULAR:
            self.forks_at_view = self._site_forks()
        self.transitional_lost = set() if change.kind == CONF_REGULAR or change.fork_ends else {
            d for d, site in self.site_of.items() if site not in change.sites}
        if self.exchange is not None:
            self._view_change_in_exchange(change)
            return
        lost = [d for s, names in enumerate(self.sites) if s not in change.sites for d in names]
        if change.kind == CONF_REGULAR and set(change.sites) - self.view_sites:
            self._start_exchange(change)
            return
        if change.kind == CONF_TRANSITIONAL:
            lost = set(lost)
            for group in self.groups.values():
                if group.name in self.transition_sent:
                    continue
                if any(daemon in lost for daemon in group.members.values()):
                    old_id = self.group_id(group)
                    self.transition_sent[group.name] = old_id
                    for session in group.local:
                        if session.group_membership:
                            self._enqueue(session, encode_transition(group.name, old_id))
            return
        self.gone |= set(lost)
        self.view_sites = frozenset(change.sites)
        self._network_change("view %d of the sites: %s (%s)" % (change.view_seq, change.sites, change.reason))

    # -- the state exchange after a merge ---------------------------------------------------------
    def _note_held(self, ex: StateExchange) -> None:
        self.held_peak_messages = max(self.held_peak_messages, len(ex.held))
        self.held_peak_bytes = max(self.held_peak_bytes, ex.held_bytes)
        if ex.held_bytes > self.held_limit_bytes and not self.held_over_limit:
            self.held_over_limit = True
            self.held_limit_exceeded += 1
            self.log.append("group state exchange of view %d: %d messages (%d KB) held waiting for "
                            "the STATE of sites %s, more than the limit of %d KB: clients of this "
                            "daemon are not read until it is done" % (
                                ex.ring_id, len(ex.held), ex.held_bytes // 1024, sorted(ex.waiting),
                                self.held_limit_bytes // 1024))

    def _start_exchange(self, change: "SiteViewChange", came_from: Optional[str] = None) -> None:
        """Every daemon of the merged view starts it at the same point of the order (its
        REGULAR view); only each site's representative speaks, for all of its site. Our
        STATE names the view our table came from: our view of the sites, or the one given
        (where an earlier exchange never ended: _view_change_in_exchange)."""
        if came_from is None:
            came_from = ",".join(str(x) for x in sorted(self.view_sites))
        self.view_sites = frozenset(change.sites)
        self.exchange = StateExchange(
            change.view_seq, sorted(change.sites), set(change.sites),
            {name: (dict(g.members), self.group_id(g)) for name, g in self.groups.items()})
        self.log.append("view %d of the sites: %s (%s): exchanging group state" % (
            change.view_seq, change.sites, change.reason))
        self.exchange_came_from, self.exchange_senders = came_from, {}
        self.exchange_senders[self.site_id] = self._representative() or ""
        if self._representative() == self.daemon_name:
            self._send_site_state(change.view_seq, came_from)

    def _resend_site_state(self) -> None:
        """Our ring changed during the exchange and we are its new representative, while our
        site's STATE is still awaited: the one that was to send it crashed (its parts that got
        into the order are dropped where ours come: _site_state_arrived)."""
        ex = self.exchange
        if ex is None or self.site_id not in ex.waiting or self._representative() != self.daemon_name \
                or self.exchange_senders.get(self.site_id) == self.daemon_name:
            return
        self.exchange_senders[self.site_id] = self.daemon_name
        self.states_resent += 1
        self.log.append("group state exchange of view %d: site %d's STATE sent again by its new "
                        "representative %s" % (ex.ring_id, self.site_id, self.daemon_name))
        self._send_site_state(ex.ring_id, self.exchange_came_from)

    def _send_site_state(self, view_seq: int, came_from: str) -> None:
        """Our site's STATE, in parts as RingGroupCore's (hint: index << 16 | count). Each part
        starts with a line: our ring's seq, the view we came from, the count of network
        changes we applied, our ring's daemons; then "group TAB member TAB daemon" lines, with
        TAB "j" after a member that joined silently since its group's TRANSITION (silent_joins:
        every daemon's REG_MEMB of the merged view gives it a vs_set of its own)."""
        alive = sorted(self.ring_members)
        head = "%d\t%s\t%d\t%s" % (self.ring_seq, came_from, self.network_changes, " ".join(alive))
        parts, part, size = [], [], 0
        for name in sorted(self.groups):
            for member, daemon in sorted(self.groups[name].members.items()):
                if daemon in self.ring_members:
                    line = "%s\t%s\t%s" % (name, member, daemon)
                    if member in self.silent_joins.get(name, ()):
                        line += "\tj"
                    if part and size + len(line) + 1 > STATE_PART_BYTES:
                        parts.append(part)
                        part, size = [], 0
                    part.append(line)
                    size += len(line) + 1
        parts.append(part)
        for index, lines in enumerate(parts):
            msg = DaemonMessage(STATE, self.daemon_name, "#sitestate#%s" % self.daemon_name,
                                AGREED_MESS, [SITES_STATE_GROUP, str(view_seq)], index << 16 | len(parts),
                                data="\n".join([head] + lines).encode("latin-1"))
            self.orderer.submit(msg, urgent=True)
        self.state_parts_sent += len(parts)

    def _site_state_arrived(self, ex: StateExchange, msg: DaemonMessage) -> None:
        site = self.site_of.get(msg.origin)
        lines = msg.data.decode("latin-1").split("\n")
        head = lines[0].split("\t")
        if site is None or site not in ex.waiting or len(head) != 4 or not head[0].isdigit() \
                or not head[2].isdigit():
            self.log.append("a site STATE from %s that is not awaited or not well formed: ignored" % msg.origin)
            return
        ring_seq, came_from, changes, alive = int(head[0]), head[1], int(head[2]), head[3].split()
        ex.old_ring[str(site)] = came_from
        if ex.parts.get(str(site)) and self.exchange_senders.get(site) != msg.origin:
            ex.parts[str(site)] = set()  # a new representative's: the old one's parts are void
        self.exchange_senders[site] = msg.origin
        got = ex.parts.setdefault(str(site), set())
        if not got:
            ex.states[str(site)] = []
            ex.rings[site] = (ring_seq, changes, alive)
        for line in lines[1:]:
            fields = line.split("\t")
            if len(fields) in (3, 4) and self.site_of.get(fields[2]) == site:
                ex.states[str(site)].append((fields[0], fields[1], fields[2], fields[3:] == ["j"]))
        got.add(msg.hint >> 16)
        if len(got) >= msg.hint & 0xFFFF:
            ex.waiting.discard(site)
        if not ex.waiting and self._exchange_loses_sites(ex):
            self.exchanges_ended_by_the_regular_view += 1
            self.log.append("group state exchange of view %d: every STATE came in the transitional "
                            "view that lost sites of it: it ends with the regular view" % ex.ring_id)
        elif not ex.waiting:
            self._finish_exchange(ex)

    def _exchange_loses_sites(self, ex: StateExchange) -> bool:
        """We are in the sites' transitional view, and it lost sites of the exchange: the
        exchange ends with the regular view, without them (_view_change_in_exchange), the
        same at every daemon of it. Ended here, its REG_MEMB would name the lost sites'
        members in a view they never install (seed 80022 --hostile 0.2 --key --client-views:
        a1 killed just after the merge, its STATE delivered in the transitional part of the
        view that lost it; b1's and c1's clients got a1's member back, then lost it again).
        The real Spread ends such an exchange there, then gives the TRANSITION at once
        (groups.c, G_handle_groups in GGT); a REG_MEMB waits for the regular view here, as a
        REJOIN's and a ROSTER's do, so the clients see one network change, and no view with
        a member the sites have already lost."""
        return any(self.site_of.get(d) in ex.members for d in self.transitional_lost)

    def _view_change_in_exchange(self, change: "SiteViewChange") -> None:
        """A view change before every STATE came (every daemon of the view sees it at the same
        point). Sites lost: the exchange goes on without them. Sites joined again: the held
        messages are applied to our table, and a new exchange starts. Our table is still our
        side's (this exchange's never came), so our STATE in the new one names the view we
        came from before this exchange, not this exchange's sites (seed 1409 --lan-splits
        --groups --client-views: b and c merged, site a joined before c's STATE came; b's
        and c's STATEs of the new view both said "1,2", and their clients got one vs_set, a
        view they never shared). The real Spread's vs_sets group the members by the group's
        membership id at their daemon, which changes only where an exchange completes
        (groups.c: G_compare_daemon_vs_set; grp_id.memb_id set in G_compute_and_notify)."""
        ex = self.exchange
        if change.kind != CONF_REGULAR:
            return  # the TRANSITION of the changed groups goes with the exchange's end
        if set(change.sites) - set(ex.members):
            self.exchange = None
            self.held_over_limit = False
            for msg in ex.held:
                self.deliver(msg)
            self._start_exchange(change, came_from=self.exchange_came_from)
            return
        for site in set(ex.members) - set(change.sites):
            ex.members.remove(site)
            ex.waiting.discard(site)
        self.view_sites = frozenset(change.sites)
        if not ex.waiting:
            self._finish_exchange(ex)

    def _finish_exchange(self, ex: StateExchange) -> None:
        self.exchange = None
        self.held_over_limit = False
        self.exchanges_done += 1
        alive_of = ex.rings
        table: Dict[str, Dict[str, str]] = {}
        joiners: Dict[str, set] = {}
        for site in ex.members:
            ring_seq, changes, alive = alive_of[site]
            daemons = set(self.sites[site])
            self.gone = (self.gone - daemons) | (daemons - set(alive))
            self.roster_ring_seq[site] = max(ring_seq, self.roster_ring_seq.get(site, -1))
            for group, member, daemon, joined in ex.states.get(str(site), ()):
                if daemon in alive:
                    table.setdefault(group, {})[member] = daemon
                    if joined:
                        joiners.setdefault(group, set()).add(member)
        for site in set(range(len(self.sites))) - set(ex.members):
            self.gone |= set(self.sites[site])
        # the same count at every daemon, whatever each side counted while apart: group ids agree
        self.network_changes = max(c for _, c, _ in alive_of.values()) + 1 if alive_of else self.network_changes + 1
        self.memb_time = self.network_changes
        self._rebuild(table)
        self.silent_joins = joiners  # (each side's, as its STATE says: _end_transition reads it)
        came_from = {d: ex.old_ring.get(str(self.site_of[d]), "") for d in self.site_of}
        my_view = ex.old_ring.get(str(self.site_id), "")
        for name in sorted(set(table) | set(ex.before)):
            old_members, old_id = ex.before.get(name, ({}, None))
            group = self.groups.get(name)
            if group is None or old_members == group.members:
                if group is not None and name in self.transition_sent:
                    self._end_transition(group)
                continue
            if name in self.transition_sent:
                old_id = None
            self._announce_network_change(group, old_id, came_from, my_view, self._take_joiners(group))
        self.transition_sent, self.came_back, self.silent_joins = {}, {}, {}  # (every group had its view)
        self.log.append("network change: view %d of the sites, group state exchange done: %d groups; "
                        "%d messages were held meanwhile" % (ex.ring_id, len(self.groups), len(ex.held)))
        held, ex.held = ex.held, []
        for msg in held:
            self.deliver(msg)

    def _network_change(self, why: str, restarted: Iterable[str] = ()) -> None:
        """Members at daemons gone (and at restarted daemons: an earlier incarnation's) go."""
        self.network_changes += 1
        self.log.append("network change: %s" % why)
        alive = set(self.site_of) - self.gone - set(restarted)
        # a group whose clients had their TRANSITION and that lost nobody here (who it lost
        # left by a LEAVE in the transitional view, taken silently: _notify) still owes them
        # the REG_MEMB that ends the wait
        hold = self._lost_at_next_view() & alive
        waiting = [g for name, g in sorted(self.groups.items()) if name in self.transition_sent
                   and all(d in alive for d in g.members.values())]
        if self.daemon_name not in alive:
            self._end_own_views()
        held = self._drop_daemons(alive, self.transition_sent, self.network_changes, hold)
        for group in waiting:
            if any(d in hold for d in group.members.values()):
                held[group.name] = self.transition_sent[group.name]
            else:
                self._end_transition(group)
        self.transition_sent = held
        self.came_back = {name: d for name, d in self.came_back.items() if name in held}
        self.silent_joins = {name: j for name, j in self.silent_joins.items() if name in held}

    def _end_own_views(self) -> None:
        """A network change drops the members at our own daemon while we live: the kept side's
        ROSTER of our site's split, ordered after the point where our fork took the kept
        table that still held our clients. Their view of each group ends here (TRANSITION,
        unless they had it): the others go on without them, and our REJOIN, ordered later,
        brings them back with a REG_MEMB that gives them a vs_set of their own and, at its
        sender, no TRANSITION (_rejoin). Before, they were dropped silently, and a view they
        had been given since the install (a network change that ended their wait) ended
        with no TRANSITION. (An earlier incarnation's members are no session of ours:
        _reorder leaves them out of group.local.)"""
        for name, group in sorted(self.groups.items()):
            if name in self.transition_sent or self.daemon_name not in group.members.values():
                continue
            old_id = self.group_id(group)
            for session in group.local:
                if session.group_membership and group.members.get(session.private_group) == self.daemon_name:
                    self._enqueue(session, encode_transition(name, old_id))

    def _end_transition(self, group: Group) -> None:
        """The REG_MEMB CAUSED_BY_NETWORK after a TRANSITION, for a group the network change
        did not change (only the local clients are told: the table is as everywhere)."""
        vs_sets, local_index = self._network_vs_sets(group)
        self.came_back.pop(group.name, None)
        self._send_network_memb(group, vs_sets, local_index, self._take_joiners(group))


# =============================================================================================
# I/O loop
# =============================================================================================

RING_TICK_EVERY_S = 0.01  # the ring's timers (token hold 20 ms, retransmission 80 ms) need this
RING_RCVBUF_BYTES = 4 * 1024 * 1024
RING_MAX_DATAGRAMS_PER_WAKEUP = 512


def segment_interface(own_ip: str) -> str:
    """The interface (by its address) the segment's multicast goes out on and is joined on:
    a daemon's own address, or 127.0.0.1 for one on loopback (lo holds all of 127.0.0.0/8 but
    has only 127.0.0.1 as its address). Never the default interface."""
    try:
        loopback = ipaddress.ip_address(own_ip).is_loopback
    except ValueError:
        loopback = False
    return "127.0.0.1" if loopback else own_ip


def _daemon_udp_socket(addr: Tuple[str, int]) -> socket.socket:
    """A non-blocking UDP socket of the daemon's own (never a wildcard) address, with buffers
    for a visit's burst; OSError, with nothing left open, if it cannot be bound."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RING_RCVBUF_BYTES)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, RING_RCVBUF_BYTES)
        sock.bind(addr)
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


class DaemonServer:
    """Sockets, time and signals around a Daemon core, and nothing else: a TCP listener and the
    unix socket /tmp/<port> for clients; with `ring` (this daemon's UDP address and every
    daemon's, by name) the ring's UDP socket. Each input goes to the core and the batch of
    actions it returns is performed in order (_perform). Tokens, joins and the like go by
    UNICAST; the ring's data (MulticastDatagram) goes once by IP MULTICAST to the segment
    (`segment`: its group address and port) as in the thesis and the real Spread, on the
    interface of the daemon's own address (127.0.0.1 for a daemon on loopback, TTL 1): one
    send per packet instead of one per member. Where the segment cannot be joined, or there
    is none, the data goes by unicast to each member. Nothing is ever sent with the default
    interface."""

    def __init__(self, daemon: Daemon, listen: str, port: int, unix_path: Optional[str] = None,
                 status_every_s: float = DEFAULT_STATUS_EVERY_S, out=None,
                 ring: Optional[Tuple[Tuple[str, int], Dict[str, Tuple[str, int]]]] = None,
                 segment: Optional[Tuple[str, int]] = None,
                 hop: Optional[Tuple[Tuple[str, int], Dict[str, Tuple[str, int]]]] = None):
        self.daemon = daemon
        self.listen = listen
        self.port = port
        self.unix_path = unix_path
        self.status_every_s = status_every_s
        self.out = out or sys.stdout
        self.sel = selectors.DefaultSelector()
        self.conns: Dict[int, socket.socket] = {}
        self.registered: Dict[int, int] = {}  #: conn id -> selector events now registered
        self.paused: set = set()  #: conn ids the core asked not to read
        self.blocked: set = set()  #: conn ids whose socket was full: waiting to be writable
        self.next_conn_id = 1
        self.started = time.monotonic()
        self.stopping = False
        self.listeners: List[socket.socket] = []
        self.accept_paused: list = []  # (resume time, listener) after accept() failed
        self.ring_addr, self.peers = ring if ring is not None else (None, {})
        self.udp: Optional[socket.socket] = None
        self.segment = segment  #: the segment's multicast (address, port), if it has one
        self.mcast: Optional[socket.socket] = None  #: joined to the segment: the others' data
        self.mcast_dest: Optional[Tuple[str, int]] = None  #: where data goes when multicast works
        self.segment_problem = "" if segment else "no segment multicast address"
        self.join_failed = False  #: the file names a multicast group and this machine could not join it
        self.own_copies = 0  #: our own multicast data, back on the segment socket (dropped)
        self.datagrams_out = 0
        self.send_errors = 0
        #: how often the core's timers are looked at (the ring's need it finer)
        self.tick_every_s = RING_TICK_EVERY_S if ring is not None else TICK_EVERY_S
        self.unix_wanted = unix_path
        self.unix_problem = ""  #: why there is no unix socket, said in the banner
        #: several sites: our HOP address and every other daemon's, by name
        self.hop_addr, self.hop_peers = hop if hop is not None else (None, {})
        self.hop_sock: Optional[socket.socket] = None
        self.hop_datagrams_out = 0

    # -- sockets ----------------------------------------------------------------------------------
    def open(self) -> None:
        if self.ring_addr is not None:  # first: its error names the daemon (ring_open_error)
            self.udp = _daemon_udp_socket(self.ring_addr)
            if self.segment is not None:
                self._join_segment()
        if self.hop_addr is not None:
            # the HOP port: one socket for every link to the other sites' representatives
            self.hop_sock = _daemon_udp_socket(self.hop_addr)
        # the unix socket first: whoever sees the TCP port accept may use /tmp/PORT at once (tests
        # under load connected to a stale /tmp/PORT the daemon had not yet replaced)
        if self.unix_path and hasattr(socket, "AF_UNIX"):
            self._open_unix()
        tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            tcp.bind((self.listen, self.port))
        except OSError:
            tcp.close()
            raise
        tcp.listen(LISTEN_BACKLOG)
        tcp.setblocking(False)
        self.listeners.append(tcp)
        for sock in self.listeners:
            self.sel.register(sock, selectors.EVENT_READ, "listen")
        if self.udp is not None:
            self.sel.register(self.udp, selectors.EVENT_READ, "ring")
        if self.mcast is not None:
            self.sel.register(self.mcast, selectors.EVENT_READ, "ring")
        if self.hop_sock is not None:
            self.sel.register(self.hop_sock, selectors.EVENT_READ, "hop")

    def _join_segment(self) -> None:
        """The segment's multicast group, joined on the interface of our own address (on
        loopback 127.0.0.1: every 127.x address is on lo). Any failure: unicast, and why."""
        group, port = self.segment
        interface = segment_interface(self.ring_addr[0])
        try:
            if not ipaddress.ip_address(group).is_multicast:
                raise OSError("%s is not a multicast address" % group)
            mcast = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        except (OSError, ValueError) as exc:
            self.segment_problem = str(exc)
            return
        try:
            # several daemons of one machine bind the same group and port; each gets every packet
            mcast.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            mcast.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RING_RCVBUF_BYTES)
            mcast.bind((group, port))
            mcast.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
                             socket.inet_aton(group) + socket.inet_aton(interface))
            udp = self.udp
            udp.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(interface))
            udp.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
            # a copy for this machine only if another daemon of the file is here (on loopback
            # every daemon gets it whatever this says; our own copy is dropped on arrival)
            udp.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1 if self._peer_on_this_machine() else 0)
        except OSError as exc:
            mcast.close()
            self.segment_problem = "joining %s on %s failed: %s" % (group, interface, exc.strerror or exc)
            self.join_failed = True
            return
        mcast.setblocking(False)
        self.mcast = mcast
        self.mcast_dest = (group, port)
        self.segment_problem = ""

    def _peer_on_this_machine(self) -> bool:
        """Another configured daemon has an address of this machine (one we can bind)."""
        for ip, _port in self.peers.values():
            if ip == self.ring_addr[0]:
                continue
            probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                probe.bind((ip, 0))
                return True
            except OSError:
                continue
            finally:
                probe.close()
        return False

    def segment_text(self) -> str:
        """How the ring's data goes out, for the start line and the status table."""
        if self.mcast_dest is not None:
            return "IP multicast to %s:%d on %s" % (self.mcast_dest[0], self.mcast_dest[1],
                                                   segment_interface(self.ring_addr[0]))
        return "unicast to each member (%s)" % (self.segment_problem or "no multicast")

    def _open_unix(self) -> None:
        path = self.unix_path
        self.unix_path = None  # until we listen there: close() must not remove another's socket
        if os.path.exists(path):
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                probe.connect(path)
                probe.close()
                self.unix_problem = "it is in use by another daemon"
                return
            except OSError as exc:
                probe.close()
                refused = exc.errno == errno.ECONNREFUSED
                try:
                    os.unlink(path)  # a stale socket from a killed daemon
                except OSError as unlink_exc:
                    self.unix_problem = "it is %s, and we may not remove it (%s)" % (
                        "stale" if refused else "another user's (%s)" % (exc.strerror or exc),
                        unlink_exc.strerror or unlink_exc)
                    return
        unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            unix.bind(path)
        except OSError as exc:
            self.unix_problem = exc.strerror or str(exc)
            unix.close()
            return
        unix.listen(LISTEN_BACKLOG)
        unix.setblocking(False)
        self.listeners.append(unix)
        self.unix_path = path

    def where_listening(self, tcp: str) -> str:
        """For the banner: the TCP address, and the unix socket or why not (short form clients
        such as `user -s 4803` fall back to TCP then)."""
        if self.unix_path:
            return "%s and %s" % (tcp, self.unix_path)
        if self.unix_problem:
            return "%s (not on the unix socket %s: %s; clients given just \"%d\" use TCP)" % (
                tcp, self.unix_wanted, self.unix_problem, self.port)
        return tcp

    def log(self, text: str) -> None:
        stamp = time.strftime("%H:%M:%S")
        print("%s %s" % (stamp, text), file=self.out, flush=True)

    def close(self) -> None:
        # listeners first: a client that sees its connection close and then finds the port
        # refused knows the daemon is gone (Mailbox._closed_error), not that it was cut off
        for sock in self.listeners + list(self.conns.values()) + [
                s for s in (self.udp, self.mcast, self.hop_sock) if s]:
            try:
                sock.close()
            except OSError:
                pass
        if self.unix_path:
            try:
                os.unlink(self.unix_path)
            except OSError:
                pass

    # -- the loop ---------------------------------------------------------------------------------
    def serve_forever(self) -> None:
        daemon = self.daemon
        next_tick = time.monotonic() + self.tick_every_s
        next_status = time.monotonic() + self.status_every_s if self.status_every_s > 0 else None
        while not self.stopping and daemon.fatal is None:
            now = time.monotonic()
            wait = next_tick - now
            if next_status is not None:
                wait = min(wait, next_status - now)
            ring_ready = False
            for key, mask in self.sel.select(max(0.0, wait)):
                data = key.data
                if data == "listen":
                    self._accept(key.fileobj)
                elif data == "ring":
                    ring_ready = True  # both ring sockets are read together, below
                elif data == "hop":
                    self._read_hop()
                else:
                    if mask & selectors.EVENT_WRITE and data in self.blocked:
                        self.blocked.discard(data)
                        self._update_registration(data)
                        self._perform(daemon.writable(data))
                    if mask & selectors.EVENT_READ and data in self.conns and data not in self.paused:
                        self._read(data)
            if ring_ready:
                self._read_datagrams()
            now = time.monotonic()
            if now >= next_tick:
                self._perform(daemon.tick(now))
                next_tick = now + self.tick_every_s
                self._resume_accepting(now)
            if next_status is not None and now >= next_status:
                self.print_status()
                next_status = now + self.status_every_s

    def _accept(self, listener: socket.socket) -> None:
        for _ in range(64):
            try:
                sock, addr = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # e.g. out of file descriptors: keep serving the others
                self.log("accept failed: %s; not accepting for %.0f s" % (exc, ACCEPT_PAUSE_S))
                self.sel.unregister(listener)  # else the pending connection wakes us forever
                self.accept_paused.append((time.monotonic() + ACCEPT_PAUSE_S, listener))
                return
            sock.setblocking(False)
            address = ""
            if sock.family == socket.AF_INET:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                address = addr[0]
            conn_id = self.next_conn_id
            self.next_conn_id += 1
            self.conns[conn_id] = sock
            self._update_registration(conn_id)
            self._perform(self.daemon.connection_opened(conn_id, time.monotonic(), address))

    def _resume_accepting(self, now: float) -> None:
        for item in list(self.accept_paused):
            if now >= item[0]:
                self.accept_paused.remove(item)
                self.sel.register(item[1], selectors.EVENT_READ, "listen")

    def _read(self, conn_id: int) -> None:
        sock = self.conns[conn_id]
        try:
            data = sock.recv(RECV_CHUNK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._drop(conn_id)
            self._perform(self.daemon.connection_closed(conn_id))
            return
        try:
            actions = self.daemon.connection_data(conn_id, data)
        except Exception as exc:  # a bug must cost one session, never the daemon and the others
            self.log("internal error on connection %d (%s: %s): closing that session" % (conn_id, type(exc).__name__, exc))
            self._drop(conn_id)
            try:
                actions = self.daemon.connection_closed(conn_id)
            except Exception as again:
                self.log("internal error closing connection %d: %s" % (conn_id, again))
                return
        self._perform(actions)

    def _read_datagrams(self) -> None:
        """Up to RING_MAX_DATAGRAMS_PER_WAKEUP datagrams from both ring sockets; the ring's own
        datagrams go out at once, the rest of the burst (mostly writes to clients) after it,
        so that many deliveries to one client leave in one send(). The segment's data is read
        before each unicast datagram: a token that names packets sent before it would
        otherwise be taken while they still wait in the other socket, and they would be asked
        for again."""
        budget = RING_MAX_DATAGRAMS_PER_WAKEUP
        mcast, udp = self.mcast, self.udp
        while budget > 0:
            if mcast is not None:
                budget -= self._take_datagrams(mcast, budget, self.ring_addr)
            if budget <= 0 or not self._take_datagrams(udp, 1, None):
                break
            budget -= 1
        self._perform(self.daemon.end_of_burst())

    def _read_hop(self) -> None:
        """Up to RING_MAX_DATAGRAMS_PER_WAKEUP datagrams of the HOP port, each to the core."""
        daemon = self.daemon
        for _ in range(RING_MAX_DATAGRAMS_PER_WAKEUP):
            try:
                data, src = self.hop_sock.recvfrom(65536)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            self._perform(daemon.hop_datagram(data, src, time.monotonic()))

    def _take_datagrams(self, sock: socket.socket, limit: int, own: Optional[Tuple[str, int]]) -> int:
        """Read and hand to the core up to `limit` datagrams of one socket: how many were read.
        Our own multicast data comes back on the segment socket on loopback: dropped unread."""
        recvfrom = sock.recvfrom
        count = 0
        taken = []
        while count < limit:
            try:
                data, src = recvfrom(65536)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                break
            count += 1
            if src == own:
                self.own_copies += 1
                continue
            taken.append((data, src))
        if taken:
            for action in self.daemon.datagrams_in_burst(taken, time.monotonic()):
                if action.__class__ is SendDatagram:
                    self._send_datagram(action)
                else:
                    self._multicast_datagram(action)
        return count

    def _perform(self, actions: list) -> None:
        """Do what the core asked, in order; what the socket took goes back to the core, and
        the actions that answer brings come after the rest (first in, first done)."""
        queue = collections.deque(actions)
        daemon = self.daemon
        while queue:
            action = queue.popleft()
            cls = action.__class__
            if cls is Write:
                sent = self._send(action.conn_id, action.data)
                if sent is None:  # the connection broke
                    self._drop(action.conn_id)
                    queue.extend(daemon.connection_closed(action.conn_id))
                else:
                    queue.extend(daemon.written(action.conn_id, sent))
            elif cls is SendDatagram:
                self._send_datagram(action)
            elif cls is MulticastDatagram:
                self._multicast_datagram(action)
            elif cls is HopDatagram:
                self._hop_datagram(action)
            elif cls is LogLine:
                self.log(action.text)
            elif cls is CloseConnection:
                self._drop(action.conn_id)
            elif cls is PauseReading:
                self.paused.add(action.conn_id)
                self._update_registration(action.conn_id)
            elif cls is ResumeReading:
                self.paused.discard(action.conn_id)
                self._update_registration(action.conn_id)

    def _send(self, conn_id: int, data: bytes) -> Optional[int]:
        """Bytes the socket took (fewer than offered: wait until it is writable); None if the
        connection broke."""
        sock = self.conns.get(conn_id)
        if sock is None:
            return 0
        try:
            sent = sock.send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            return None
        if sent < len(data):
            self.blocked.add(conn_id)
            self._update_registration(conn_id)
        return sent

    def _send_datagram(self, action: SendDatagram) -> None:
        dest = self.peers.get(action.dest)
        if dest is None or self.udp is None:
            return
        try:
            self.udp.sendto(action.packet, dest)
            self.datagrams_out += 1
        except OSError:
            self.send_errors += 1  # the ring retransmits what is lost

    def _hop_datagram(self, action: HopDatagram) -> None:
        dest = self.hop_peers.get(action.dest)
        if dest is None or self.hop_sock is None:
            return
        try:
            self.hop_sock.sendto(action.packet, dest)
            self.hop_datagrams_out += 1
        except OSError:
            self.send_errors += 1  # the HOP link resends what is lost

    def _multicast_datagram(self, action: MulticastDatagram) -> None:
        dest = self.mcast_dest
        if dest is None:
            for name in action.dests:
                self._send_datagram(SendDatagram(action.packet, name))
            return
        try:
            self.udp.sendto(action.packet, dest)
            self.datagrams_out += 1
        except OSError:
            self.send_errors += 1  # the ring retransmits what is lost

    def _update_registration(self, conn_id: int) -> None:
        sock = self.conns.get(conn_id)
        if sock is None:
            return
        events = (0 if conn_id in self.paused else selectors.EVENT_READ) | \
            (selectors.EVENT_WRITE if conn_id in self.blocked else 0)
        now = self.registered.get(conn_id, 0)
        if events == now:
            return
        if not now:
            self.sel.register(sock, events, conn_id)
        elif not events:
            self.sel.unregister(sock)
        else:
            self.sel.modify(sock, events, conn_id)
        self.registered[conn_id] = events

    def _drop(self, conn_id: int) -> None:
        sock = self.conns.pop(conn_id, None)
        self.paused.discard(conn_id)
        self.blocked.discard(conn_id)
        if self.registered.pop(conn_id, 0) and sock is not None:
            try:
                self.sel.unregister(sock)
            except (KeyError, ValueError):
                pass
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass

    # -- stopping and status ------------------------------------------------------------------------
    def leave_ring(self, reason: str) -> None:
        """Ctrl-C / SIGTERM: the core's LEAVE copies go out (LEAVE_COPY_GAP_S apart), so that
        the other daemons form a new ring at once; then the caller closes the connections.
        Clients and ring datagrams are not read any more: we are going."""
        daemon = self.daemon
        now = time.monotonic()
        self._perform(daemon.leave(reason, now))
        deadline = now + LEAVE_COPIES * LEAVE_COPY_GAP_S + 0.5  # a bound, whatever the clock does
        while daemon.leaving() and time.monotonic() < deadline:
            time.sleep(self.tick_every_s)
            self._perform(daemon.tick(time.monotonic()))

    def print_status(self) -> None:
        address = "%s:%d" % (self.listen, self.port) + (" + %s" % self.unix_path if self.unix_path else "")
        now = time.monotonic()
        snap = self.daemon.snapshot(address, now - self.started)
        self._print(render_status(snap) if rich is not None else render_status_text(snap))
        ring = self.daemon.ring_snapshot(now, self.datagrams_out)
        if ring is not None:
            ring["segment"] = self.segment_text()
            self._print(render_ring_status(ring))
            if "sites" in ring:
                self._print(render_sites_status(ring))

    def _print(self, renderable) -> None:
        if rich is not None:
            Console(file=self.out, width=120).print(renderable)
        else:
            print(renderable, file=self.out, flush=True)


# =============================================================================================
# Client library
# =============================================================================================

class SpreadError(Exception):
    """An error with the real Spread code (negative int) and its name."""

    code = SP_BUG

    def __init__(self, detail: str = "", code: Optional[int] = None):
        if code is not None:
            self.code = code
        self.name = ERROR_NAMES.get(self.code, str(self.code))
        super().__init__("%s (%d)%s" % (self.name, self.code, ": " + detail if detail else ""))


class IllegalSpread(SpreadError):
    code = ILLEGAL_SPREAD


class CouldNotConnect(SpreadError):
    code = COULD_NOT_CONNECT


class RejectQuota(SpreadError):
    code = REJECT_QUOTA


class RejectNoName(SpreadError):
    code = REJECT_NO_NAME


class RejectIllegalName(SpreadError):
    code = REJECT_ILLEGAL_NAME


class RejectNotUnique(SpreadError):
    code = REJECT_NOT_UNIQUE


class RejectVersion(SpreadError):
    code = REJECT_VERSION


class ConnectionClosed(SpreadError):
    code = CONNECTION_CLOSED
    #: why the session ended, when the library could tell (Mailbox._closed_error): CUT_OFF (the
    #: daemon is still there: it ended this session), DAEMON_GONE (nothing accepts at its address
    #: any more) or UNKNOWN_CAUSE (the probe got no answer in time)
    cause = None


class RejectAuth(SpreadError):
    code = REJECT_AUTH


class IllegalSession(SpreadError):
    code = ILLEGAL_SESSION


class IllegalService(SpreadError):
    code = ILLEGAL_SERVICE


class IllegalMessage(SpreadError):
    code = ILLEGAL_MESSAGE


class IllegalGroup(SpreadError):
    code = ILLEGAL_GROUP


class MessageTooLong(SpreadError):
    code = MESSAGE_TOO_LONG


class NetErrorOnSession(SpreadError):
    code = NET_ERROR_ON_SESSION


class _TooShort(SpreadError):
    """The waiting message does not fit; it stays queued for the next receive (thesis 7.4.1)."""

    def __init__(self, detail: str, service_type: int, mess_type: int, needed_len: int,
                 needed_groups: int):
        self.service_type = service_type
        self.mess_type = mess_type
        self.needed_len = needed_len  #: data bytes the message has
        self.needed_groups = needed_groups  #: groups the message has
        super().__init__(detail)


class BufferTooShort(_TooShort):
    code = BUFFER_TOO_SHORT


class GroupsTooShort(_TooShort):
    code = GROUPS_TOO_SHORT


_ERROR_CLASSES = {cls.code: cls for cls in (
    IllegalSpread, CouldNotConnect, RejectQuota, RejectNoName, RejectIllegalName, RejectNotUnique,
    RejectVersion, ConnectionClosed, RejectAuth, IllegalSession, IllegalService, IllegalMessage,
    IllegalGroup, MessageTooLong, NetErrorOnSession)}


def error_for_code(code: int, detail: str = "") -> SpreadError:
    cls = _ERROR_CLASSES.get(code)
    return cls(detail) if cls is not None else SpreadError(detail, code)


class RegularMessage:
    """A data message: service_type, sender, groups, mess_type, endian_mismatch, data."""

    __slots__ = ("service_type", "sender", "groups", "mess_type", "endian_mismatch", "data", "truncated")
    is_membership = False

    def __init__(self, service_type, sender, groups, mess_type, endian_mismatch, data,
                 truncated=False):
        self.service_type = service_type
        self.sender = sender
        self.groups = groups
        self.mess_type = mess_type
        self.endian_mismatch = endian_mismatch
        self.data = data
        self.truncated = truncated  #: True when drop_recv cut data or groups to fit

    def __repr__(self) -> str:
        return "RegularMessage(%s from %s to %r mess_type=%d len=%d)" % (
            service_name(self.service_type), self.sender, self.groups, self.mess_type, len(self.data))


class MembershipMessage:
    """A membership message: regular (REG_MEMB), transitional, or the self-leave notice."""

    __slots__ = ("service_type", "group", "members", "group_id", "my_index", "changed_members", "vs_sets",
                 "truncated")
    is_membership = True

    def __init__(self, service_type, group, members, group_id, my_index, changed_members, vs_sets,
                 truncated=False):
        self.service_type = service_type
        self.group = group
        self.members = members
        self.group_id = group_id
        self.my_index = my_index
        self.changed_members = changed_members
        self.vs_sets = vs_sets
        self.truncated = truncated

    @property
    def is_regular(self) -> bool:
        return bool(self.service_type & REG_MEMB_MESS)

    @property
    def is_transitional(self) -> bool:
        return bool(self.service_type & TRANSITION_MESS)

    @property
    def is_self_leave(self) -> bool:
        return bool(self.service_type & CAUSED_BY_LEAVE) and not self.service_type & (REG_MEMB_MESS | TRANSITION_MESS)

    @property
    def caused_by(self) -> Optional[str]:
        for bit, name in CAUSE_NAMES.items():
            if self.service_type & bit:
                return name
        return None

    @property
    def mess_type(self) -> int:
        return self.my_index

    def __repr__(self) -> str:
        kind = "REGULAR" if self.is_regular else "TRANSITIONAL" if self.is_transitional else "SELF-LEAVE"
        return "MembershipMessage(%s %s of %s members=%r id=%r)" % (kind, self.caused_by, self.group, self.members,
                                                                    tuple(self.group_id) if self.group_id else None)


def service_name(service_type: int) -> str:
    if service_type & REJECT_MESS:  # a request the daemon refused, sent back to its sender
        old = service_type & ~REJECT_MESS
        control = {JOIN_MESS: "JOIN", LEAVE_MESS: "LEAVE", KILL_MESS: "KILL"}.get(old)
        return "REJECTED " + (control or service_name(old))
    for bit, name in SERVICE_NAMES.items():
        if service_type & bit:
            return name + ("|SELF_DISCARD" if service_type & SELF_DISCARD else "")
    return "0x%x" % service_type


def message_length(buf, off: int = 0) -> int:
    """Total length of the message starting at off, or 0 when even its header is incomplete."""
    if len(buf) - off < HEADER_LEN:
        return 0
    type_raw, _s, num_groups, _h, data_len = HEADER.unpack_from(buf, off)
    if (type_raw & ENDIAN_TYPE) != MY_ENDIAN_MARKER:
        type_raw, _s, num_groups, _h, data_len = HEADER_SWAPPED.unpack_from(buf, off)
    total = HEADER_LEN + (4 if type_raw & REJECT_MESS else 0) + MAX_GROUP_NAME * num_groups + data_len
    if num_groups < 0 or data_len < 0 or total > MAX_INCOMING_MESSAGE:
        raise IllegalMessage("header with num_groups %d, data_len %d" % (num_groups, data_len))
    return total


def _names(buf, start: int, count: int) -> List[str]:
    return [unpad_name(bytes(buf[i:i + MAX_GROUP_NAME])) for i in range(start, start + MAX_GROUP_NAME * count, MAX_GROUP_NAME)]


def decode_message(buf, off: int = 0, my_private_group: str = "",
                   max_mess_len: Optional[int] = None, max_groups: Optional[int] = None,
                   drop_recv: bool = False):
    """Decode one complete message (see message_length) as the real library does (sp.c:1400-1600).

    Raises BufferTooShort / GroupsTooShort when it does not fit and drop_recv is False."""
    type_raw, sender, num_groups, hint, data_len = HEADER.unpack_from(buf, off)
    flipped = (type_raw & ENDIAN_TYPE) != MY_ENDIAN_MARKER
    if flipped:
        type_raw, sender, num_groups, _h, data_len = HEADER_SWAPPED.unpack_from(buf, off)
    service_type = type_raw & ~ENDIAN_TYPE & 0xFFFFFFFF
    pos = off + HEADER_LEN
    if service_type & REJECT_MESS:
        old_type = (UINT32_SWAPPED if flipped else UINT32).unpack_from(buf, pos)[0]
        service_type = (old_type & ~ENDIAN_TYPE & 0xFFFFFFFF) | REJECT_MESS
        pos += 4
    membership = bool(service_type & MEMBERSHIP_MESS) and not service_type & REJECT_MESS
    if membership:
        mess_type, mismatch = 0, False
    else:
        mess_type, mismatch = hint_mess_type(hint)
    truncated = False
    groups_count = num_groups
    data_count = data_len
    too_short_groups = max_groups is not None and num_groups > max_groups
    too_short_len = max_mess_len is not None and data_len > max_mess_len
    if too_short_groups or too_short_len:
        if not drop_recv:
            cls = BufferTooShort if too_short_len else GroupsTooShort
            raise cls("message needs %d data bytes and %d groups (given %s and %s)" % (
                data_len, num_groups, max_mess_len, max_groups), service_type, mess_type, data_len, num_groups)
        truncated = True
        if too_short_groups:
            groups_count = max(0, max_groups)
        if too_short_len:
            data_count = max(0, max_mess_len)
    groups = _names(buf, pos, groups_count)
    body_start = pos + MAX_GROUP_NAME * num_groups
    body = bytes(buf[body_start:body_start + data_len])
    sender_name = unpad_name(bytes(sender))
    if not membership:
        return RegularMessage(service_type, sender_name, groups, mess_type, mismatch, body[:data_count], truncated)
    return _decode_membership(service_type, sender_name, groups, body, flipped, my_private_group, truncated)


def _decode_membership(service_type, group, members, body, flipped, me,
                       truncated) -> MembershipMessage:
    group_id = None
    vs_sets: List[List[str]] = []
    changed: List[str] = []
    uint32 = UINT32_SWAPPED if flipped else UINT32
    if len(body) >= 12:
        group_id = GroupId(*(GROUP_ID_SWAPPED if flipped else GROUP_ID).unpack_from(body, 0))
    local_set: List[str] = []
    if service_type & REG_MEMB_MESS and len(body) >= 20:
        num_sets = uint32.unpack_from(body, 12)[0]
        local_offset = uint32.unpack_from(body, 16)[0]
        pos = 20
        for _ in range(min(num_sets, 1000)):
            if pos + 4 > len(body):
                break
            if pos - 20 == local_offset:
                local_index = len(vs_sets)
            else:
                local_index = None
            count = uint32.unpack_from(body, pos)[0]
            pos += 4
            count = min(count, (len(body) - pos) // MAX_GROUP_NAME)
            names = _names(body, pos, count)
            pos += MAX_GROUP_NAME * count
            vs_sets.append(names)
            if local_index is not None:
                local_set = names
        changed = list(local_set)
    my_index = members.index(me) if me in members else -1
    return MembershipMessage(service_type, group, members, group_id, my_index, changed, vs_sets, truncated)


def parse_spread_name(spread_name: str) -> Tuple[str, object]:
    """'4803' -> ('unix', '/tmp/4803') where that socket is there, else TCP 127.0.0.1 (connect()
    falls back to TCP too when the socket turns out stale or not ours);
    '4803@host' / '4803@a.b.c.d' -> ('tcp', (host, 4803))."""
    text = str(spread_name).strip()
    port_text, _, host = text.partition("@")
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise IllegalSpread("spread name %r: expected PORT, PORT@HOST or PORT@A.B.C.D" % spread_name)
    port = int(port_text)
    if not _:
        unix_path = "/tmp/%d" % port
        if hasattr(socket, "AF_UNIX") and os.path.exists(unix_path):
            return "unix", unix_path
        return "tcp", ("127.0.0.1", port)
    if not host:
        raise IllegalSpread("spread name %r has no host after '@'" % spread_name)
    return "tcp", (host, port)


#: ConnectionClosed.cause values (see Mailbox._closed_error)
CUT_OFF = "cut-off"
DAEMON_GONE = "daemon-gone"
UNKNOWN_CAUSE = "unknown"
CLOSED_CAUSE_TEXT = {
    CUT_OFF: "the daemon %(daemon)s is still there, so it ended this session: a daemon does that to a "
             "session that does not read while more than its limit of messages (MaxSessionMessages, "
             "--max-session-messages) wait for it",
    DAEMON_GONE: "the daemon %(daemon)s is gone (connection refused): it was stopped or it died",
    UNKNOWN_CAUSE: "no answer from %(daemon)s to say whether the daemon is still there",
}
PROBE_TIMEOUT_S = 1.0  # a dead host does not refuse: give up on the probe after this long
PROBE_SETTLE_S = 0.05  # a listener that is being closed accepts, then resets at once


def probe_daemon(spread_name: str, timeout_s: float = PROBE_TIMEOUT_S) -> str:
    """Is a daemon accepting connections at spread_name? CUT_OFF when one is (so the session that
    just ended was ended by it), DAEMON_GONE when the connection is refused, UNKNOWN_CAUSE when
    nothing answers in time.  The daemon sees a connection that closes before its handshake."""
    try:
        sock, _where, _note = _open_socket(spread_name, timeout_s)
    except CouldNotConnect as exc:
        return UNKNOWN_CAUSE if "timed out" in str(exc) else DAEMON_GONE
    except (IllegalSpread, OSError):
        return UNKNOWN_CAUSE
    try:
        # a dying daemon's listener may take the connection and reset it a moment later
        readable, _, _ = select.select([sock], [], [], PROBE_SETTLE_S)
        if readable:
            return DAEMON_GONE
        return CUT_OFF
    finally:
        sock.close()


def _check_group(name: str, for_join: bool) -> bytes:
    if not isinstance(name, str):
        raise IllegalGroup("group name must be a str, got %r" % (name,))
    lowest = GROUP_NAME_MIN_CHAR if for_join else 0x21
    if not name_is_legal(name, lowest):
        raise IllegalGroup("group name %r: 1..%d characters from %r..'~'%s" % (
            name, MAX_GROUP_NAME - 1, chr(lowest), " (no '#': private groups cannot be joined)" if for_join else ""))
    return pad_name(name)


class Mailbox:
    """A connection to a Spread daemon (ours or a real one)."""

    def __init__(self, sock: socket.socket, private_group: str, daemon_version: Tuple[int, ...],
                 group_membership: bool):
        self._sock = sock
        self.private_group = private_group  #: '#name#daemon'
        self.daemon_version = daemon_version
        self.group_membership = group_membership
        self._pg_padded = pad_name(private_group)
        self._rbuf = bytearray()
        self._rpos = 0
        self._send_lock = threading.Lock()
        self._recv_lock = threading.Lock()
        self._closed = False
        self._eof = False
        self._closed_by: Optional[ConnectionClosed] = None  #: the first end-of-session error, said once
        self.spread_name = ""  #: what connect() was given: where to probe when the session ends
        self._padded: Dict[str, bytes] = {}
        self._poller = select.poll() if hasattr(select, "poll") else None
        if self._poller is not None:
            self._poller.register(sock.fileno(), select.POLLIN)

    # -- sending -----------------------------------------------------------------------------
    def _send(self, data: bytes) -> None:
        if self._closed:
            raise IllegalSession("mailbox is disconnected")
        with self._send_lock:
            try:
                self._sock.sendall(data)
            except OSError as exc:
                raise self._closed_error("send failed: %s" % (exc.strerror or exc)) from None

    def _control(self, type_bits: int, group: str, check_join: bool = True) -> None:
        padded = _check_group(group, check_join) if check_join else pad_name(group)
        self._send(HEADER.pack(type_bits | MY_ENDIAN_MARKER, self._pg_padded, 1, MY_ENDIAN_MARKER, 0) + padded)

    def join(self, group: str) -> int:
        """Join a group (created if nobody is in it).  Membership arrives as a message."""
        self._control(JOIN_MESS, group)
        return 0

    def leave(self, group: str) -> int:
        self._control(LEAVE_MESS, group)
        return 0

    def multicast(self, service_type: int, groups, data, mess_type: int = 0) -> int:
        """Send data (bytes, str, or a list of parts: a scatter) to one group or a list of groups.
        Returns the number of data bytes sent."""
        frame, size = self._frame(service_type, groups, data, mess_type)
        self._send(frame)
        return size

    def multicast_many(self, service_type: int, groups, datas: Sequence, mess_type: int = 0) -> int:
        """Several messages to the same groups with one system call (a flooding sender's
        messages then cost the daemon one read for many, too). Each is checked as multicast()
        checks it, and nothing is sent if one is refused. Returns the data bytes sent."""
        frames = [self._frame(service_type, groups, data, mess_type) for data in datas]
        if frames:
            self._send(b"".join(frame for frame, _ in frames))
        return sum(size for _, size in frames)

    def _frame(self, service_type: int, groups, data, mess_type: int) -> Tuple[bytes, int]:
        """One message's bytes, and its data bytes; SpreadError if it cannot be sent."""
        if service_type & ~(REGULAR_MESS | SELF_DISCARD) or (service_type & REGULAR_MESS) not in SERVICE_NAMES:
            raise IllegalService("service type 0x%x: exactly one of UNRELIABLE..SAFE, optionally | SELF_DISCARD" % service_type)
        if isinstance(groups, str):
            groups = (groups,)
        if not 0 < len(groups) <= MAX_GROUPS_PER_MESSAGE:
            raise IllegalGroup("%d groups: a message goes to 1..%d groups" % (len(groups), MAX_GROUPS_PER_MESSAGE))
        padded_cache = self._padded
        parts = []
        for name in groups:
            padded = padded_cache.get(name)
            if padded is None:
                padded = _check_group(name, False)
                if len(padded_cache) < 10000:
                    padded_cache[name] = padded
            parts.append(padded)
        if isinstance(data, str):
            data = data.encode("utf-8")
        elif isinstance(data, (list, tuple)):
            if len(data) > MAX_CLIENT_SCATTER_ELEMENTS:
                raise IllegalMessage("scatter of %d parts (at most %d)" % (len(data), MAX_CLIENT_SCATTER_ELEMENTS))
            data = b"".join(p.encode("utf-8") if isinstance(p, str) else bytes(p) for p in data)
        elif not isinstance(data, bytes):
            data = bytes(data)
        if not MESS_TYPE_MIN <= mess_type <= MESS_TYPE_WIRE_MAX:
            # the real library keeps the low 16 bits without a word: 70000 would arrive as 4464
            raise IllegalMessage("mess_type %r: 16 bits, %d..%d (or 0..%d)" % (mess_type, MESS_TYPE_MIN, MESS_TYPE_MAX, MESS_TYPE_WIRE_MAX))
        size = len(data) + MAX_GROUP_NAME * len(groups)
        if size > MAX_SEND_LEN:
            raise MessageTooLong("%d data bytes + 32 x %d groups = %d > %d" % (len(data), len(groups), size, MAX_SEND_LEN))
        head = HEADER.pack(service_type | MY_ENDIAN_MARKER, self._pg_padded, len(groups),
                           ((mess_type << 8) & 0x00FFFF00) | MY_ENDIAN_MARKER, len(data))
        return head + b"".join(parts) + data, len(data)

    # -- receiving ---------------------------------------------------------------------------
    def _wait_readable(self, timeout: Optional[float]) -> bool:
        if timeout is None:
            return True
        if self._poller is not None:
            return bool(self._poller.poll(max(0, int(timeout * 1000 + 0.999))))
        readable, _, _ = select.select([self._sock], [], [], max(0.0, timeout))
        return bool(readable)

    def _closed_error(self, detail: str) -> ConnectionClosed:
        """The session is over: one ConnectionClosed that says why, the same on every later call.

        The socket cannot tell a daemon that ended this session (a slow reader over its queue
        limit, MaxSessionMessages) from one that died: both just close. A new connection to the
        daemon's address can: refused means the daemon is gone (probe_daemon)."""
        if self._closed_by is None:
            self._eof = True
            cause = probe_daemon(self.spread_name) if self.spread_name else UNKNOWN_CAUSE
            error = ConnectionClosed("%s; %s" % (detail, CLOSED_CAUSE_TEXT[cause] % {"daemon": self.spread_name}))
            error.cause = cause
            self._closed_by = error
        return self._closed_by

    def _fill(self, deadline: Optional[float]) -> bool:
        """Read more bytes; False on timeout.  Raises ConnectionClosed at end of stream."""
        if self._eof:
            raise self._closed_error("the daemon closed the connection")
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        if not self._wait_readable(timeout):
            return False
        try:
            data = self._sock.recv(RECV_CHUNK)
        except (BlockingIOError, InterruptedError):
            return True
        except OSError as exc:
            raise self._closed_error("receive failed: %s" % (exc.strerror or exc)) from None
        if not data:
            raise self._closed_error("the daemon closed the connection")
        if self._rpos:
            if self._rpos == len(self._rbuf):
                self._rbuf = bytearray()
                self._rpos = 0
            elif self._rpos > RECV_CHUNK:
                del self._rbuf[:self._rpos]
                self._rpos = 0
        self._rbuf += data
        return True

    def _complete(self) -> int:
        try:
            total = message_length(self._rbuf, self._rpos)
        except IllegalMessage:
            self._eof = True
            raise
        if total and len(self._rbuf) - self._rpos >= total:
            return total
        return 0

    def receive(self, timeout: Optional[float] = None, max_mess_len: Optional[int] = None,
                max_groups: Optional[int] = None, drop_recv: bool = False):
        """The next RegularMessage or MembershipMessage; None when nothing came within `timeout`
        seconds (timeout=None blocks).  With max_mess_len / max_groups set, a message that does
        not fit raises BufferTooShort / GroupsTooShort and stays queued, unless drop_recv=True
        (then it is returned cut to fit, with .truncated = True)."""
        if self._closed:
            raise IllegalSession("mailbox is disconnected")
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._recv_lock:
            while True:
                total = self._complete()
                if total:
                    break
                if not self._fill(deadline):
                    return None
            msg = decode_message(self._rbuf, self._rpos, self.private_group, max_mess_len, max_groups, drop_recv)
            self._rpos += total  # only now: a *_TOO_SHORT above keeps the message for the next call
            return msg

    def poll(self) -> int:
        """Bytes waiting to be received (buffered here plus in the socket); 0 when none.

        Raises ConnectionClosed when the daemon has closed the session and nothing is left to
        read: a socket at its end is readable with 0 bytes, and a caller that receives only
        while poll() is above 0 would otherwise wait for it for ever (SP_poll returns 0 there)."""
        if self._closed:
            raise IllegalSession("mailbox is disconnected")
        waiting = len(self._rbuf) - self._rpos
        if self._eof:
            if waiting:
                return waiting
            raise self._closed_error("the daemon closed the connection")
        try:
            import fcntl
            import termios
            raw = fcntl.ioctl(self._sock.fileno(), termios.FIONREAD, b"\0\0\0\0")
            in_socket = struct.unpack("i", raw)[0]
        except (ImportError, OSError):
            return waiting + (1 if self._wait_readable(0) else 0)
        if in_socket == 0 and self._wait_readable(0):
            self._fill(time.monotonic())  # readable with nothing in it: the end (raises)
            return len(self._rbuf) - self._rpos  # (or bytes that came in just now)
        return waiting + in_socket

    def fileno(self) -> int:
        return self._sock.fileno()

    def buffered(self) -> bool:
        """True when a complete message is already buffered (select() on fileno() won't show it)."""
        return bool(self._complete())

    # -- closing -----------------------------------------------------------------------------
    def disconnect(self, linger_s: float = 2.0) -> int:
        """SP_disconnect: a KILL message with our own private group, then close.

        Unlike the real library we wait (up to linger_s) for the daemon to close its side: a
        close() with unread input makes the kernel send a reset, and a reset makes the daemon's
        kernel drop our last messages before the daemon has read them (PROTOCOL.md section 3)."""
        if self._closed:
            return 0
        try:
            self._control(KILL_MESS, self.private_group, check_join=False)
            self._sock.shutdown(socket.SHUT_WR)
            deadline = time.monotonic() + linger_s
            while self._wait_readable(max(0.0, deadline - time.monotonic())):
                if not self._sock.recv(RECV_CHUNK):
                    break
                if time.monotonic() >= deadline:
                    break
        except (SpreadError, OSError):
            pass
        self.close()
        return 0

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            try:
                self._sock.close()
            except OSError:
                pass

    def __enter__(self) -> "Mailbox":
        return self

    def __exit__(self, *exc) -> None:
        self.disconnect()


def _read_exact(sock: socket.socket, count: int) -> bytes:
    data = b""
    while len(data) < count:
        try:
            part = sock.recv(count - len(data))
        except socket.timeout:
            raise ConnectionClosed("the daemon did not answer the handshake in time") from None
        except OSError as exc:
            raise ConnectionClosed("handshake failed: %s" % exc) from None
        if not part:
            raise ConnectionClosed("the daemon closed the connection during the handshake")
        data += part
    return data


def connect(spread_name: str = str(DEFAULT_SPREAD_PORT), private_name: str = "", priority: int = 0,
            group_membership: bool = True, timeout: Optional[float] = 10.0) -> Mailbox:
    """SP_connect: open a session with the daemon; returns a Mailbox (.private_group is set)."""
    if not isinstance(private_name, str) or len(private_name) > MAX_PRIVATE_NAME or \
            (private_name and not name_is_legal(private_name, PRIVATE_NAME_MIN_CHAR, MAX_PRIVATE_NAME)):
        raise RejectIllegalName("private name %r: up to %d characters from '$'..'~' (no '#')" % (private_name, MAX_PRIVATE_NAME))
    sock, _where, note = _open_socket(spread_name, timeout)
    if note and note not in _FALLBACKS_SAID:  # once per process: a script connects again and again
        _FALLBACKS_SAID.add(note)
        print("spread_mini: %s" % note, file=sys.stderr, flush=True)
    try:
        mailbox = _handshake(sock, private_name, priority, group_membership)
    except BaseException:
        sock.close()
        raise
    sock.settimeout(None)
    mailbox.spread_name = str(spread_name)
    return mailbox


_FALLBACKS_SAID: set = set()


def _unix_socket_usable(path: str) -> Optional[str]:
    """None when the unix socket `path` is one to use, else why not (it belongs to another user:
    their daemon, or one that died and left it where we may not remove it)."""
    try:
        owner = os.stat(path).st_uid
    except OSError as exc:
        return "cannot read %s (%s)" % (path, exc.strerror)
    if hasattr(os, "getuid") and owner != os.getuid():
        return "%s belongs to another user" % path
    return None


def _open_socket(spread_name: str, timeout: Optional[float]) -> Tuple[socket.socket, object, str]:
    """(connected socket, address, a note to say or "").  The short form PORT means the unix
    socket /tmp/PORT, as in Spread; when that file is stale (its daemon died), refuses us or is
    another user's, this is the daemon on TCP 127.0.0.1:PORT, and the note says so."""
    kind, address = parse_spread_name(spread_name)
    note = ""
    if kind == "unix":
        why_not = _unix_socket_usable(address)
        if why_not is None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(timeout)
            try:
                sock.connect(address)
                return sock, address, ""
            except OSError as exc:
                sock.close()
                why_not = "%s: %s" % (address, exc.strerror or exc)
        kind, address = "tcp", ("127.0.0.1", int(str(spread_name).strip()))
        note = "%s; using TCP 127.0.0.1:%d instead" % (why_not, address[1])
    try:
        infos = socket.getaddrinfo(address[0], address[1], socket.AF_INET, socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise IllegalSpread("cannot resolve %r: %s" % (address[0], exc)) from None
    address = infos[0][4]
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    sock.settimeout(timeout)
    try:
        sock.connect(address)
    except OSError as exc:
        sock.close()
        raise CouldNotConnect("%s: %s%s" % (spread_name, exc, " (%s)" % note if note else "")) from None
    return sock, address, note


def refusal(code: int, private_name: str) -> SpreadError:
    """The error for a session the daemon refused with `code`, saying why in one line."""
    why = REFUSAL_REASONS.get(code, "code %d" % code).format(name=private_name)
    return error_for_code(code, "the daemon refused the session: %s" % why)


def _send_handshake(sock: socket.socket, unit: bytes, private_name: str) -> None:
    try:
        sock.sendall(unit)
    except OSError as exc:
        # A daemon that refuses at once (REJECT_QUOTA right after accept) may have closed before
        # our write: its refusal may still be waiting to be read, and it says more.
        try:
            code = struct.unpack("b", sock.recv(1))[0]
        except (OSError, struct.error):
            code = 0
        if code < 0:
            raise refusal(code, private_name) from None
        raise ConnectionClosed("the daemon closed the connection during the handshake (%s)"
                               % (exc.strerror or exc)) from None


def _handshake(sock: socket.socket, private_name: str, priority: int,
               group_membership: bool) -> Mailbox:
    # each unit in ONE write, and no pipelining: the real daemon reads them with single recv()s
    _send_handshake(sock, encode_connect(private_name, group_membership, priority), private_name)
    code = struct.unpack("b", _read_exact(sock, 1))[0]
    if code < 0:
        raise refusal(code, private_name)
    methods = _read_exact(sock, code).decode("latin-1").split() if code else []
    if "NULL" not in methods:
        raise RejectAuth("the daemon offers %r; this library speaks only NULL" % methods)
    _send_handshake(sock, encode_auth_choice(("NULL",)), private_name)
    code = struct.unpack("b", _read_exact(sock, 1))[0]
    if code != ACCEPT_SESSION:
        raise refusal(code, private_name)
    version = tuple(_read_exact(sock, 3))
    if version[0] * 10000 + version[1] * 100 < LIB_VERSION_MIN:
        raise RejectVersion("daemon version %d.%d.%d is older than 3.01" % version)
    name_len = _read_exact(sock, 1)[0]
    private_group = _read_exact(sock, name_len).decode("latin-1")
    return Mailbox(sock, private_group, version, group_membership)


# ---- the `user` tool ---------------------------------------------------------------------------

USER_HELP = """commands:
  j GROUP                 join GROUP
  l GROUP                 leave GROUP
  s GROUP[,GROUP...] TEXT multicast TEXT with the current service type and mess_type
                          (without TEXT the next line is the text, as in Spread's spuser)
  b GROUP COUNT [SIZE [RATE]]
                          send a burst of COUNT messages of SIZE bytes (default 100), at
                          most RATE messages per second (default: as fast as it can)
  t SERVICE               service type: unreliable reliable fifo causal agreed safe
                          (append +self to add SELF_DISCARD, e.g. "t safe+self")
  m MESS_TYPE             mess_type (16 bits) for the next messages
  r [SECONDS]             wait for one message (default: block until one comes)
  w SECONDS               print whatever arrives during SECONDS
  p                       poll: bytes waiting to be received
  v                       verbose on/off: off prints only a count every 1000 data messages
  q                       quit (disconnect)
  ?                       this help"""


def burst_arguments(text: str) -> Tuple[int, int, float]:
    """`COUNT [SIZE [RATE]]` of the b command -> (count, size, rate_per_s); ValueError if bad."""
    words = text.split()
    if len(words) > 3:
        raise ValueError(text)
    count = int(words[0]) if words else 10
    size = int(words[1]) if len(words) > 1 else 100
    rate_per_s = float(words[2]) if len(words) > 2 else 0.0
    if count < 0 or not 0 <= size <= MAX_SEND_LEN - MAX_GROUP_NAME or not 0 <= rate_per_s < float("inf"):
        raise ValueError(text)
    return count, size, rate_per_s


class LineReader:
    """Whole lines from a file descriptor, read with os.read: nothing waits unseen in a buffer
    while select() says the descriptor is empty."""

    def __init__(self, fd: int, chunk_bytes: int = 65536):
        self.fd = fd
        self.chunk_bytes = chunk_bytes
        self.pending = b""
        self.eof = False     # os.read said the input has ended
        self.at_end = False  # ... and every line has been handed out

    def fill(self) -> None:
        """One os.read (it may block): append what came; b"" is the end of the input."""
        data = os.read(self.fd, self.chunk_bytes)
        if data:
            self.pending += data
        else:
            self.eof = True

    def next_line(self) -> Optional[str]:
        """The next complete line (at the end, what is left without its newline), or None."""
        cut = self.pending.find(b"\n")
        if cut < 0 and self.eof and self.pending:
            cut = len(self.pending) - 1
        if cut < 0:
            self.at_end = self.eof
            return None
        line, self.pending = self.pending[:cut + 1], self.pending[cut + 1:]
        return line.decode("utf-8", "replace")


class UserTool:
    """The spuser-like loop: commands from stdin (a terminal or a script), messages as they come."""

    def __init__(self, mbox: Mailbox, out=None, interactive: bool = False):
        self.mbox = mbox
        self.out = out or sys.stdout
        self.interactive = interactive
        self.service = SAFE_MESS
        self.mess_type = 0
        self.sent = 0
        self.verbose = True
        self.received = 0  # data messages
        self.at_prompt = False  # "User> " is the last thing on the terminal
        self.text_for: Optional[List[str]] = None  # `s GROUP` without text: the next line goes there

    def say(self, text: str) -> None:
        if self.at_prompt:  # off the prompt's line first
            print("", file=self.out)
            self.at_prompt = False
        print(text, file=self.out, flush=True)

    def prompt(self) -> None:
        """Shown again only after something was printed: a prompt per arriving message was a
        line per message on the terminal, and a terminal that cannot keep up slows the reader
        until the daemon cuts it off (with `v`, a burst must cost nothing but the counting)."""
        if self.interactive and not self.at_prompt:
            print("User> ", end="", file=self.out, flush=True)
            self.at_prompt = True

    def show(self, msg) -> None:
        if not msg.is_membership:
            self.received += 1
            if not self.verbose:
                if self.received % 1000 == 0:
                    self.say("received %d data messages" % self.received)
                return
        self.say(format_message(msg))

    def show_waiting(self) -> None:
        """Print every message that can be received without waiting."""
        while self.mbox.buffered() or self.mbox.poll():
            msg = self.mbox.receive(timeout=0)
            if msg is None:
                break
            self.show(msg)

    def wait(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            msg = self.mbox.receive(timeout=left)
            if msg is None:
                return
            self.show(msg)

    def burst(self, groups: List[str], count: int, size: int, rate_per_s: float) -> None:
        """COUNT messages; with a rate, paced by the clock, printing what arrives meanwhile (a
        paced burst gives every receiver, and the daemon, time to keep up)."""
        start = time.monotonic()
        sent = 0
        while sent < count:
            allowed = count if not rate_per_s else \
                min(count, int((time.monotonic() - start) * rate_per_s) + 1)
            for i in range(sent, allowed):
                self.mbox.multicast(self.service, groups, (b"burst %d " % i).ljust(size, b"."), self.mess_type)
            self.sent += allowed - sent
            sent = allowed
            if sent < count:
                self.wait(start + sent / rate_per_s - time.monotonic())
        seconds = time.monotonic() - start
        self.say("sent %d messages of %d bytes in %.2f s%s" % (
            count, size, seconds, " (at most %g per second)" % rate_per_s if rate_per_s else ""))

    def command(self, line: str) -> bool:
        """Run one command; False to quit."""
        if self.text_for is not None:
            groups, self.text_for = self.text_for, None
            return self._send_text(groups, line)
        words = line.split(None, 2)
        if not words or words[0].startswith("#"):
            return True
        cmd, args = words[0].lower(), words[1:]
        try:
            return self._dispatch(cmd, args, line)
        except (ValueError, IndexError):
            self.say("bad arguments for %r (type ? for help)" % cmd)
        except SpreadError as exc:
            if isinstance(exc, ConnectionClosed):
                raise
            self.say("error: %s" % exc)
        return True

    def _send_text(self, groups: List[str], text: str) -> bool:
        try:
            self.mbox.multicast(self.service, groups, text.encode("utf-8"), self.mess_type)
            self.sent += 1
        except SpreadError as exc:
            if isinstance(exc, ConnectionClosed):
                raise
            self.say("error: %s" % exc)
        return True

    def _dispatch(self, cmd: str, args: List[str], line: str) -> bool:
        if cmd == "q":
            return False
        if cmd == "?":
            self.say(USER_HELP)
        elif cmd == "j":
            self.mbox.join(args[0])
        elif cmd == "l":
            self.mbox.leave(args[0])
        elif cmd == "s":
            if len(args) > 1:
                return self._send_text(args[0].split(","), args[1])
            self.text_for = args[0].split(",")
            if self.interactive:
                print("enter message: ", end="", file=self.out, flush=True)
                self.at_prompt = True
        elif cmd == "b":
            self.burst(args[0].split(","), *burst_arguments(args[1] if len(args) > 1 else ""))
        elif cmd == "t":
            name = args[0].lower()
            base, _, flag = name.partition("+")
            if base not in SERVICE_BY_NAME or flag not in ("", "self", "self_discard"):
                raise ValueError(name)
            self.service = SERVICE_BY_NAME[base] | (SELF_DISCARD if flag else 0)
            self.say("service type is now %s" % service_name(self.service))
        elif cmd == "m":
            value = int(args[0])
            if not MESS_TYPE_MIN <= value <= MESS_TYPE_MAX:
                self.say("mess_type %d is out of range: it is 16 bits, %d..%d (still %d)" % (
                    value, MESS_TYPE_MIN, MESS_TYPE_MAX, self.mess_type))
            else:
                self.mess_type = value
                self.say("mess_type is now %d" % value)
        elif cmd == "r":
            msg = self.mbox.receive(timeout=float(args[0]) if args else None)
            if msg is None:
                self.say("nothing received")
            else:
                self.show(msg)
        elif cmd == "w":
            self.wait(float(args[0]))
        elif cmd == "p":
            self.say("%d bytes waiting" % self.mbox.poll())
        elif cmd == "v":
            self.verbose = not self.verbose
            self.say("verbose %s (%d data messages so far)" % ("on" if self.verbose else "off", self.received))
        else:
            self.say("unknown command %r (type ? for help)" % cmd)
        return True

    def run(self, stdin, linger_s: float = 0.5) -> int:
        """Interleave commands and incoming messages until q or end of input. `stdin` is a file
        descriptor (or has fileno()): it is read with os.read, because a buffered reader takes
        several piped lines at once and select() then sees the descriptor empty, leaving the
        rest unrun until more input came."""
        lines = LineReader(stdin if isinstance(stdin, int) else stdin.fileno())
        sel = selectors.DefaultSelector()
        sel.register(self.mbox.fileno(), selectors.EVENT_READ, "mbox")
        stdin_registered = True
        try:
            sel.register(lines.fd, selectors.EVENT_READ, "stdin")
        except (ValueError, OSError, PermissionError):
            stdin_registered = False  # e.g. a regular file: always readable, read it as it comes
        if self.interactive:
            self.say("connected as %s; type ? for help" % self.mbox.private_group)
        try:
            while True:
                self.show_waiting()
                line = lines.next_line()
                if line is None and lines.at_end:
                    self.wait(linger_s)
                    return 0
                if line is None:
                    self.prompt()
                    ready = [key.data for key, _ in sel.select()] if stdin_registered else ["stdin"]
                    if "stdin" in ready:
                        lines.fill()
                    continue
                self.at_prompt = False  # the person's Enter ended the prompt's line
                if not self.command(line.strip()):
                    self.show_waiting()
                    return 0
        except ConnectionClosed as exc:
            if self.at_prompt:
                print("", file=self.out, flush=True)  # off the prompt's line
            print("spread_mini user: the session ended: %s" % exc, file=sys.stderr, flush=True)
            return 1
        finally:
            sel.close()


# =============================================================================================
# Terminal rendering
# =============================================================================================

def format_message(msg) -> str:
    """A readable rendering of a received message (regular or membership), like spuser's."""
    if not msg.is_membership:
        text = msg.data.decode("utf-8", "replace")
        return ("received %s message from %s, mess_type %d, endian_mismatch %s, to %d group(s) %s\n"
                "  (%d bytes): %s%s" % (service_name(msg.service_type), msg.sender, msg.mess_type, msg.endian_mismatch,
                                       len(msg.groups), ", ".join(msg.groups), len(msg.data), text,
                                       " [truncated]" if msg.truncated else ""))
    if msg.is_self_leave:
        return "SELF-LEAVE: you left group %s" % msg.group
    if msg.is_transitional:
        return "TRANSITIONAL membership for group %s (group id %s)" % (msg.group, _fmt_gid(msg.group_id))
    lines = ["REGULAR membership for group %s with %d member(s), where I am member %d:" % (
        msg.group, len(msg.members), msg.my_index)]
    lines += ["    %s" % m for m in msg.members]
    lines.append("  group id %s" % _fmt_gid(msg.group_id))
    cause = msg.caused_by or "?"
    if cause in ("JOIN", "LEAVE", "DISCONNECT"):
        lines.append("  due to the %s of %s" % (cause, ", ".join(msg.changed_members)))
    else:
        lines.append("  due to a %s change" % cause)
    for i, vs in enumerate(msg.vs_sets):
        lines.append("  vs_set %d (%d): %s" % (i, len(vs), ", ".join(vs)))
    return "\n".join(lines)


def _fmt_gid(gid) -> str:
    return "%d %d %d" % tuple(gid) if gid is not None else "-"


def _status_rows(snap: StatusSnapshot) -> List[Tuple[str, str, str]]:
    rows: List[Tuple[str, str, str]] = []
    for s in snap.sessions:
        rows.append(("session", s.private_group, "membership=%s groups=%d in=%d out=%d queued=%d msgs/%d B" % (
            "yes" if s.membership else "no", s.groups, s.msgs_in, s.msgs_out, s.queued_msgs, s.queued_bytes)))
    for name, members in snap.groups:
        rows.append(("group", name, "%d: %s" % (len(members), " ".join(members))))
    for service in SERVICE_NAMES.values():
        if service in snap.msgs_in or service in snap.msgs_out:
            rows.append(("messages", service, "in %d, out %d" % (snap.msgs_in.get(service, 0), snap.msgs_out.get(service, 0))))
    rows.append(("queued", "all sessions", "%d bytes" % snap.queued_bytes))
    if snap.state_changes:
        rows.append(("states", "sessions entered", ", ".join("%s %d" % (state, snap.state_changes[state])
                                                            for state in (AWAIT_AUTH, OPEN, CLOSED)
                                                            if state in snap.state_changes)))
    for reason, count in sorted(snap.disconnections.items()):
        rows.append(("disconnected", reason, str(count)))
    for reason, count in sorted(snap.rejections.items()):
        rows.append(("rejected", reason, str(count)))
    return rows


def _status_title(snap: StatusSnapshot) -> str:
    return "spread_mini daemon %s on %s, up %.0f s: %d sessions, %d groups" % (
        snap.daemon_name, snap.address, snap.uptime_s, len(snap.sessions), len(snap.groups))


def render_status(snap: StatusSnapshot):
    """A rich Table of the snapshot (or the plain text where rich is missing)."""
    if Table is None:
        return render_status_text(snap)
    title = _status_title(snap)
    table = Table(title=title, title_justify="left", min_width=min(len(title) + 4, 120))
    table.add_column("what")
    table.add_column("name")
    table.add_column("detail", overflow="fold")
    for row in _status_rows(snap):
        table.add_row(*row)
    return table


def render_status_text(snap: StatusSnapshot) -> str:
    lines = [_status_title(snap)]
    lines += ["  %-12s %-32s %s" % row for row in _status_rows(snap)]
    return "\n".join(lines)



# ---- Ring status ----------------------------------------------------------------------------
def ring_status_rows(snap):
    """(label, value) rows for the status table: the ring as a student sees it."""
    c = snap["counters"]
    return [
        ("daemon", "%s (incarnation %d)" % (snap["name"], snap["incarnation"] % 10000)),
        ("state", snap["state"]),
        ("ring", "%s: %s" % (_ring_str(snap["ring_id"]), ", ".join(snap["members"]))),
        ("token rotations", "%d (%.0f per second)" % (snap["rotations"], snap.get("rotations_per_s", 0.0))),
        ("packets sent / received", "%d / %d" % (c.get("packets_sent", 0), c.get("packets_received", 0))),
        ("retransmissions asked / sent", "%d / %d" % (c.get("retransmissions_requested", 0),
                                                      c.get("retransmissions_sent", 0))),
        ("windows global / personal", "%d / %d packets" % (snap["global_window_packets"],
                                                            snap["personal_window_packets"])),
        ("ring protocol", _ring_protocol_text(snap.get("accelerated_window_packets"))),
        ("ring packets", "up to %d bytes" % snap.get("max_packet_bytes", LAN_PACKET_BYTES)),
        ("membership changes", "%d (last: %s)" % (c.get("configurations_installed", 0),
                                                   snap["last_change_reason"])),
        ("token losses / retransmitted tokens", "%d / %d" % (c.get("token_loss", 0),
                                                             c.get("token_retransmissions", 0))),
        ("garbage dropped", str(c.get("dropped_garbage", 0))),
    ] + _refused_rows(snap) + _held_rows(snap) + _datagram_rows(snap) + [
        ("change %.0f s ago" % max(0.0, snap.get("now", t) - t),
         "ring %s {%s}: %s" % (ring, ",".join(members), reason))
        for t, ring, members, reason in snap.get("recent_changes", ())]


def _ring_protocol_text(accelerated_window: Optional[int]) -> str:
    if accelerated_window is None:
        return "original (a visit's packets all go before the token)"
    return "accelerated (up to %d packets of a visit go after the token)" % accelerated_window


def _refused_rows(snap):
    """Packets refused by the key, the configuration stamp and the ring's own checks."""
    c = snap["counters"]
    return [
        ("daemon key", "HMAC-SHA256 tag on every packet" if snap.get("keyed")
         else "none (anyone on the LAN can send packets to the ring)"),
        ("dropped: no / wrong / unexpected tag", "%d / %d / %d" % (
            c.get("dropped_no_tag", 0), c.get("dropped_bad_tag", 0),
            c.get("dropped_unexpected_tag", 0))),
        ("dropped: different configuration", str(c.get("dropped_different_configuration", 0))),
        ("dropped: tokens out of turn, ahead", str(
            c.get("dropped_tokens_not_for_us", 0) + c.get("dropped_commit_tokens_not_for_us", 0)
            + c.get("dropped_tokens_far_ahead", 0) + c.get("dropped_data_beyond_the_token", 0))),
    ]


def _held_rows(snap):
    """The peak of what the group state exchange held (the daemon's snapshot has it)."""
    if "held_peak" not in snap:
        return []
    messages, held_bytes, limit_bytes, exceeded = snap["held_peak"]
    return [("held in state exchange (peak)", "%d messages, %d KB (limit %d KB; exceeded %d)" % (
        messages, held_bytes // 1024, limit_bytes // 1024, exceeded))]


def _datagram_rows(snap):
    if "datagrams" not in snap:
        return []
    received, sent, strangers = snap["datagrams"]
    return ([("ring data sent by", snap["segment"])] if "segment" in snap else []) + [
            ("datagrams in / out", "%d / %d" % (received, sent)),
            ("datagrams from strangers", "%d (not from a daemon of the file: dropped)" % strangers)]


def render_ring_status(snap):
    rows = ring_status_rows(snap)
    if Table is None:  # plain text: the same title as the rich table, so both are found alike
        return "\n".join(["RING %s" % snap["name"]] + ["  %-36s %s" % r for r in rows])
    table = Table(title="RING %s" % snap["name"])
    table.add_column("what")
    table.add_column("value")
    for label, value in rows:
        table.add_row(label, value)
    return table


def sites_status_rows(sites: dict) -> List[Tuple[str, str]]:
    """(label, value) rows of the sites part: what a student looks at when a site goes away."""
    reps = sites["representatives"]
    rows = [("site (this daemon's)", str(sites["site_id"]))]
    if "sync" in sites:
        rows.append(("up to date", sites["sync"]))
    rows.append(("view of the sites", "%d: sites %s%s" % (
        sites["view_seq"], ", ".join(map(str, sites["live_sites"])),
        " (a change is being agreed)" if sites["closing"] else "")))
    for i, daemons in enumerate(sites["sites"]):
        if i not in sites["live_sites"]:
            rows.append(("site %d (gone)" % i, ", ".join(daemons)))
            continue
        rows.append(("site %d" % i, "%s; representative %s" % (
            ", ".join(daemons), reps.get(i) or "(known to its neighbours' representatives)")))
    if not sites["links"]:
        if reps.get(sites["site_id"]) != sites.get("name"):
            why = "none here (this daemon is not its site's representative)"
        elif sites["live_sites"] == [sites["site_id"]]:
            why = "none (no other site in the view)"
        else:
            why = "none yet (HELLO to the neighbour sites until one answers)"
        rows.append(("HOP links", why))
    for link in sites["links"]:
        rtt = "-" if link["rtt_s"] is None else "%.1f ms" % (link["rtt_s"] * 1000)
        rows.append(("HOP link to site %d" % link["site"], (
            "peer %s, RTT %s, window %d/%d, bucket %d/%d B at %.0f KB/s, queued %d, "
            "packets out/in %d/%d, bytes out %d, retransmitted %d, NACKs out/in %d/%d") % (
            link["peer"], rtt, link["outstanding"], link["window"], link["bucket_bytes"],
            link["burst_bytes"], link["rate_bytes_s"] / 1000, link["queued"], link["sent"],
            link["received"], link.get("bytes_sent", 0), link["retransmitted"], link["nacks_sent"],
            link["nacks_received"])))
    down = sorted({tuple(pair) for pair in sites.get("links_down", [])})
    if down or sites.get("routed_around"):
        around = sites.get("routed_around") or []
        rows.append(("links down (routed around)", "%s%s" % (
            ", ".join("%d-%d" % pair for pair in down) or "none reported yet",
            "; reached through others: sites %s" % ", ".join(map(str, around)) if around else "")))
    for source in sorted(sites["trees"]):
        edges = sites["trees"][source]
        rows.append(("tree of site %d" % source, ", ".join(
            "%d->%d" % (edges[s], s) for s in sorted(edges)) or "(alone)"))
    c = sites["counters"]
    rows.append(("HOP datagrams in / strangers", "%d / %d" % (sites["hop_in"], sites["hop_strangers"])))
    for reason, count in sorted(sites.get("refused", {}).items()):  # (forged, replayed, late, other teams')
        rows.append(("HOP refused: %s" % reason, str(count)))
    rows.append(("records forwarded / resent", "%d / %d" % (
        c.get("site_records_forwarded", 0), c.get("site_records_resent", 0))))
    pruned = sorted(int(k[len("site_pruned_to_"):]) for k in c if k.startswith("site_pruned_to_"))
    rows.append(("data pruned (SKIPs) per link", "; ".join(
        "to site %d: %d messages, %d B not sent" % (site, c["site_pruned_to_%d" % site],
                                                     c.get("site_pruned_bytes_to_%d" % site, 0))
        for site in pruned) or ("none (every site reached has a member, or may have one)"
                                if sites.get("prune", True) else "off (--no-prune: data in full to every site)")))
    return rows


def render_sites_status(snap):
    rows = sites_status_rows(dict(snap["sites"], name=snap["name"]))
    if Table is None:
        return "\n".join(["SITES %s" % snap["name"]] + ["  %-36s %s" % r for r in rows])
    table = Table(title="SITES %s" % snap["name"])
    table.add_column("what")
    table.add_column("value")
    for label, value in rows:
        table.add_row(label, value)
    return table


# =============================================================================================
# Command line
# =============================================================================================

def _valid_daemon_name(text: str) -> str:
    if not name_is_legal(text, PRIVATE_NAME_MIN_CHAR, MAX_PROC_NAME - 1):
        raise argparse.ArgumentTypeError("daemon name %r: 1..%d characters from '$'..'~'" % (text, MAX_PROC_NAME - 1))
    return text


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("%r is not a whole number" % text) from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _packet_bytes(text: str) -> int:
    value = _positive_int(text)
    if not PACKET_BYTES_MIN <= value <= PACKET_BYTES_MAX:
        raise argparse.ArgumentTypeError("a ring packet is %d..%d bytes" % (PACKET_BYTES_MIN, PACKET_BYTES_MAX))
    return value


def _port(text: str) -> int:
    value = _positive_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError("a port is 1..65535")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError("%r is not a number of seconds" % text) from None
    if value < 0:
        raise argparse.ArgumentTypeError("must not be negative")
    return value


def _mbit(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError("%r is not a number of Mbit/s" % text) from None
    if not 0.01 <= value <= 100000:
        raise argparse.ArgumentTypeError("give 0.01 to 100000 Mbit/s")
    return value


def _spread_name(text: str) -> str:
    try:
        parse_spread_name(text)
    except IllegalSpread as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _private_name(text: str) -> str:
    if text and not name_is_legal(text, PRIVATE_NAME_MIN_CHAR, MAX_PRIVATE_NAME):
        raise argparse.ArgumentTypeError("private name %r: up to %d characters from '$'..'~' (no '#')"
                                         % (text, MAX_PRIVATE_NAME))
    return text


def default_daemon_name() -> str:
    """With no configuration the real daemon is named after the host (at most 19 chars)."""
    name = "".join(c for c in socket.gethostname().split(".")[0] if PRIVATE_NAME_MIN_CHAR <= ord(c) <= NAME_MAX_CHAR)
    return name[:MAX_PROC_NAME - 1] or "localhost"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="spread_mini.py", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command")
    d = sub.add_parser("daemon", help="run the daemon")
    d.add_argument("--port", type=_port, help="client port (default 4803, or the configuration's)")
    d.add_argument("--listen", help="address to listen on (default 127.0.0.1, or the configuration's)")
    d.add_argument("--name", type=_valid_daemon_name, help="daemon name (default: host name, or pick it from -c)")
    d.add_argument("-c", "--config", help="spread.conf file (Spread_Segment format)")
    d.add_argument("--max-session-messages", type=_positive_int, default=None,
                   help="disconnect a session with more undelivered messages than this "
                        "(default: MaxSessionMessages of the -c file, else %d)" % DEFAULT_MAX_SESSION_MESSAGES)
    d.add_argument("--max-sessions", type=_positive_int, default=MAX_SESSIONS,
                   help="sessions allowed at once; more get REJECT_QUOTA (default %d)" % MAX_SESSIONS)
    d.add_argument("--handshake-timeout", type=_seconds, default=DEFAULT_HANDSHAKE_TIMEOUT_S,
                   help="close a connection that has not finished the client handshake after this "
                        "many seconds (default %g)" % DEFAULT_HANDSHAKE_TIMEOUT_S)
    d.add_argument("--max-handshakes-per-address", type=_positive_int, default=DEFAULT_MAX_HANDSHAKES_PER_ADDRESS,
                   help="unfinished handshakes from one address; one more closes the oldest of them "
                        "(default %d)" % DEFAULT_MAX_HANDSHAKES_PER_ADDRESS)
    d.add_argument("--status-every", type=_seconds, default=DEFAULT_STATUS_EVERY_S,
                   help="seconds between status tables (0: never; default 20)")
    d.add_argument("--no-unix", action="store_true", help="do not listen on the unix socket /tmp/PORT")
    d.add_argument("--no-multicast", action="store_true",
                   help="send the ring's data by unicast to each daemon instead of one IP multicast to "
                        "the segment's address (for a network that drops multicast)")
    d.add_argument("--pid-file", help="write the daemon's process id to this file (removed at a clean stop): "
                                      "`kill -9 $(cat FILE)` crashes this daemon and no other")
    d.add_argument("--key", metavar="FILE",
                   help="a key made by `keygen`: every packet to the other daemons carries an "
                        "HMAC-SHA256 tag, and packets without a valid one are dropped (give every "
                        "daemon of the configuration the same file)")
    d.add_argument("--packet-bytes", type=_packet_bytes, metavar="N",
                   help="the ring's largest packet (default %d when every daemon of the file is on "
                        "127.0.0.0/8, else %d; give every daemon the same: on a LAN of 1500-byte "
                        "frames a larger packet goes as several IP fragments, and losing one loses "
                        "it all; %d fits a jumbo frame)" % (LOOPBACK_PACKET_BYTES, LAN_PACKET_BYTES,
                                                             LOOPBACK_PACKET_BYTES))
    # for tests: a ring daemon's incarnation instead of its start time in ms (a clock set back)
    d.add_argument("--hop-rate-mbit", type=_mbit, metavar="MBIT",
                   help="several sites (LinkProtocol = Hop): the HOP links' token bucket rate, "
                        "new and resent packets alike (default 100, the lab LAN; give the WAN's "
                        "speed, e.g. 2); every daemon of the file needs the same")
    d.add_argument("--no-prune", action="store_true",
                   help="several sites: every data message goes in full to every site, even to "
                        "one without a member of its groups (default: a SKIP there, its place in "
                        "the order without its body)")
    d.add_argument("--split-quorum-min-daemons", type=_positive_int, default=3, metavar="N",
                   help="several sites: in a site of at least N daemons (default 3) whose LAN splits "
                        "in two rings, the ring with a quorum of the site's last ring goes on and "
                        "the other forks (a new incarnation of the site); where the rings meet again "
                        "the fork's daemons take the kept state and their clients get TRANSITION, "
                        "then REG_MEMB with two vs_sets. In a smaller site the ring without the "
                        "first daemon stops instead when they meet (give every daemon the same N)")
    d.add_argument("--no-split-quorum", action="store_true",
                   help="several sites: no voting in any site (the ring not kept stops when the "
                        "two rings of a split site meet)")
    d.add_argument("--incarnation", type=_positive_int, help=argparse.SUPPRESS)
    k = sub.add_parser("keygen", help="write a random key for --key (mode 0600)")
    k.add_argument("file", help="the key file to create (never overwritten)")
    u = sub.add_parser("user", help="interactive or scripted client, like Spread's spuser")
    u.add_argument("-s", "--spread", type=_spread_name, default=str(DEFAULT_SPREAD_PORT),
                   help="daemon: PORT (unix socket /tmp/PORT), PORT@HOST or PORT@A.B.C.D (default 4803)")
    u.add_argument("-u", "--user", type=_private_name, default="",
                   help="private name, at most 10 characters (default: the daemon invents one)")
    u.add_argument("--no-membership", action="store_true", help="do not receive membership messages")
    u.add_argument("--linger", type=_seconds, default=0.5, help="seconds to keep printing after end of input")
    return parser


def client_limits_of(args, config=None) -> ClientLimits:
    """The command line's limits; where it gives no --max-session-messages, the -c file's
    MaxSessionMessages; where neither does, the default."""
    max_session_messages = args.max_session_messages
    if max_session_messages is None and config is not None:
        max_session_messages = config.used.get("MaxSessionMessages")
    return ClientLimits(max_session_messages=max_session_messages or DEFAULT_MAX_SESSION_MESSAGES,
                        max_sessions=args.max_sessions,
                        handshake_timeout_s=args.handshake_timeout,
                        max_handshakes_per_address=args.max_handshakes_per_address)


def run_daemon(args, parser) -> int:
    name = args.name
    listen = args.listen
    daemon_ip = None  # the daemon's own address (its proc_id in group ids), from -c
    port = args.port
    daemon_order = None
    config = None
    if args.config:
        try:
            config = load_spread_conf(args.config)
            entry = choose_daemon(config, name)
        except ConfigError as exc:  # one line, no usage: the file is wrong, not the command
            print("spread_mini.py daemon: error: -c %s: %s" % (args.config, exc), file=sys.stderr)
            return 2
        name = entry.name
        listen = listen or entry.client_addresses()[0]
        port = port or entry.port
        daemon_order = config.daemon_order()
        daemon_ip = entry.ip
        for line in config.summary_lines():
            print(line, flush=True)
        if len(config.daemons) > 1:  # several daemons: the RING protocol
            return run_ring_daemon(args, parser, config, entry, listen, port)
    limits = client_limits_of(args, config)
    if args.key:
        print("--key: this daemon has no other daemons (a configuration with one daemon, or "
              "none): nothing to sign", flush=True)
    name = name or default_daemon_name()
    listen = listen or DEFAULT_LISTEN
    port = port or DEFAULT_SPREAD_PORT
    try:
        proc_id = proc_id_of(daemon_ip or listen)
    except ValueError:
        parser.error("--listen %r: give an IPv4 address" % listen)
    if listen == "0.0.0.0":  # never every interface at once: name the lab interface's address
        parser.error("--listen 0.0.0.0 would listen on every interface; give one address (default 127.0.0.1)")
    daemon = build_daemon(name, proc_id=proc_id, memb_time=int(time.time()), daemon_order=daemon_order,
                          limits=limits, rng=random.Random())
    server = DaemonServer(daemon, listen, port, None if args.no_unix else "/tmp/%d" % port, args.status_every)
    try:
        server.open()
    except OSError as exc:
        print("spread_mini: cannot listen on %s:%d: %s" % (listen, port, exc.strerror), file=sys.stderr)
        server.close()
        return 1

    def stop(_signum, _frame):
        server.stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    write_pid_file(args.pid_file)
    server.log("spread_mini daemon %s (pid %d) listening on %s; max message %d bytes (data + 32 per group), "
               "max %d queued messages per session" % (
                   name, os.getpid(), server.where_listening("%s:%d" % (listen, port)), MAX_MESSAGE_LEN,
                   limits.max_session_messages))
    try:
        server.serve_forever()
    finally:
        server.close()
        remove_pid_file(args.pid_file)
        server.log("daemon %s stopped" % name)
    return 0


def write_pid_file(path: Optional[str]) -> None:
    if path:
        with open(path, "w") as f:
            f.write("%d\n" % os.getpid())


def remove_pid_file(path: Optional[str]) -> None:
    """Only our own: a daemon started later with the same file must keep its pid there."""
    try:
        if path and open(path).read().strip() == str(os.getpid()):
            os.unlink(path)
    except OSError:
        pass


#: spread.conf's ring settings (Spread's names): the RingSettings each one sets, and its type
RING_SETTINGS_OF_FILE = {"Window": ("global_window_packets", int),
                         "PersonalWindow": ("personal_window_packets", int),
                         "AcceleratedRing": ("accelerated_ring", bool),
                         "AcceleratedWindow": ("accelerated_window_packets", int)}


def ring_packet_bytes(config, requested: Optional[int] = None) -> int:
    """The ring's largest packet: --packet-bytes if given, else LOOPBACK_PACKET_BYTES when every
    daemon of the file is on this machine, else LAN_PACKET_BYTES. A function of the file and the
    option only, so every daemon started alike picks the same (it is in the configuration
    stamp: daemons with different sizes refuse each other, and say so)."""
    if requested is not None:
        return requested
    if all(ipaddress.ip_address(d.ip).is_loopback for d in config.daemons):
        return LOOPBACK_PACKET_BYTES
    return LAN_PACKET_BYTES


def ring_settings_of(config, packet_bytes: Optional[int] = None) -> RingSettings:
    """The ring's settings, with the flow control windows of the file (Spread's Window and
    PersonalWindow: packets per token rotation, in the ring and per daemon) and its protocol
    (Spread 5's AcceleratedRing and AcceleratedWindow), for packets of ring_packet_bytes. The
    windows count LAN-sized packets: with bigger ones they hold fewer, so that a visit's burst
    stays as many bytes (it must fit the receivers' socket buffers)."""
    settings = RingSettings(max_packet_bytes=ring_packet_bytes(config, packet_bytes),
                            **{name: kind(config.used[key]) for key, (name, kind) in RING_SETTINGS_OF_FILE.items()
                               if key in config.used})
    # one window from the file and the other a default: the personal window within the ring's
    personal = min(settings.personal_window_packets, settings.global_window_packets)
    ring_window = _windows_in_packets(settings.global_window_packets, settings)
    personal = _windows_in_packets(personal, settings)
    # the default accelerated window within a smaller personal one (a larger one from the file
    # is refused by the parser, as Spread 5 does)
    return settings.override(global_window_packets=ring_window, personal_window_packets=personal,
                             accelerated_window_packets=min(settings.accelerated_window_packets, personal))


def hop_settings_of(args) -> HopSettings:
    """The HOP links' settings: the defaults, with the bucket's rate from --hop-rate-mbit,
    no pruning with --no-prune, and a site split in two rings per --split-quorum-min-daemons
    and --no-split-quorum."""
    settings = HopSettings(prune=not getattr(args, "no_prune", False),
                           split_quorum=not getattr(args, "no_split_quorum", False),
                           split_quorum_min_daemons=getattr(args, "split_quorum_min_daemons", None) or 3)
    if args.hop_rate_mbit is not None:
        settings.override(rate_bytes_s=args.hop_rate_mbit * 1e6 / 8)
    return settings


def _windows_in_packets(lan_packets: int, settings: RingSettings) -> int:
    """A window of lan_packets LAN-sized packets, in packets of settings.max_packet_bytes."""
    return max(1, lan_packets * LAN_PACKET_BYTES // settings.max_packet_bytes)


def ring_open_error(exc: OSError, server, entry, listen: str, port: int) -> str:
    """One line that says which socket could not be opened, and the likely reason."""
    ring = "%s:%d/udp" % (entry.ip, entry.port)
    if server.udp is not None and server.hop_addr is not None and server.hop_sock is None:
        hop = "%s:%d/udp" % server.hop_addr
        if exc.errno == errno.EADDRINUSE:
            return ("cannot open the HOP socket %s (the segment port + %d): it is in use; is "
                    "daemon %s already running?" % (hop, HOP_PORT_OFFSET, entry.name))
        return "cannot open the HOP socket %s: %s" % (hop, exc.strerror or exc)
    if server.udp is None:  # the ring's socket is opened first
        if exc.errno == errno.EADDRINUSE:
            return ("cannot open the ring socket %s: it is in use; is daemon %s already running "
                    "(or another program on that port)?" % (ring, entry.name))
        if exc.errno == errno.EADDRNOTAVAIL:
            return ("cannot open the ring socket %s: %s is not an address of this machine (check "
                    "--name and the file; in a namespace, run the daemon inside it)" % (ring, entry.ip))
        return "cannot open the ring socket %s: %s" % (ring, exc.strerror or exc)
    return "cannot listen for clients on %s:%d/tcp: %s" % (listen, port, exc.strerror or exc)


def run_ring_daemon(args, parser, config, entry, listen, port) -> int:
    """One daemon of a configuration with several: the ring between them."""
    key = None
    if args.key:
        try:
            key = read_key_file(args.key)
        except ValueError as exc:
            print("spread_mini.py daemon: error: --key: %s" % exc, file=sys.stderr)
            return 2
    else:
        for line in unkeyed_lan_warning(config):
            print(line, flush=True)
    settings = ring_settings_of(config, args.packet_bytes)
    seal = RingSeal(key, configuration_stamp([(d.name, d.ip, d.port) for d in config.daemons],
                                             settings))
    plan = None
    if uses_sites(config):
        try:
            plan = sites_plan(config, hop_settings_of(args))
        except ConfigError as exc:
            print("spread_mini.py daemon: error: -c %s: %s" % (args.config, exc), file=sys.stderr)
            return 2
        print("configuration: %d sites (one per Spread_Segment), LinkProtocol = %s: a ring in "
              "each site, HOP links over UDP between the sites' representatives (the segment "
              "port + %d, at most %g Mbit/s each%s)%s" % (
                  len(config.segments), config.link_protocol, HOP_PORT_OFFSET,
                  plan.hop_settings.rate_bytes_s * 8 / 1e6,
                  "" if plan.hop_settings.prune else "; no pruning: data in full to every site",
                  " (TcpHop runs as Hop)" if config.link_protocol == "TcpHop" else ""), flush=True)
    if plan is None and args.hop_rate_mbit is not None:
        print("--hop-rate-mbit: this configuration has no sites joined by HOP links (several "
              "Spread_Segment blocks and LinkProtocol = Hop): ignored", flush=True)
    if plan is None and len(config.segments) > 1:
        print("configuration: %d segments; spread_mini runs ONE ring over all their daemons, "
              "as Spread 4 does (LinkProtocol = Hop: a ring per site and HOP links between "
              "them)" % len(config.segments), flush=True)
    # a restarted daemon is a new process to the others (if its clock went back, the others
    # tell it, and it takes a higher incarnation: RingOrderer._take_newer_incarnation)
    incarnation = args.incarnation or int(time.time() * 1000)
    try:
        proc_id = proc_id_of(listen)
    except ValueError:
        parser.error("--listen %r: give an IPv4 address" % listen)
    daemon = build_daemon(entry.name, {d.name: d.ip for d in config.daemons}, incarnation=incarnation,
                          settings=settings, seal=seal, proc_id=proc_id, memb_time=int(time.time()),
                          daemon_order=config.daemon_order(), limits=client_limits_of(args, config),
                          rng=random.Random(), ring_rng=random.Random(), now=time.monotonic(),
                          sites=plan)
    peers = {d.name: (d.ip, d.port) for d in config.daemons}
    hop = None
    if plan is not None:  # the ring holds our site's daemons; the other sites are HOP peers
        peers = {d.name: (d.ip, d.port) for d in config.segments[entry.segment].daemons}
        hop = (plan.hop_addresses[entry.name],
               {d: a for d, a in plan.hop_addresses.items() if d not in peers})
    segment, no_segment = segment_of(config, args.no_multicast, entry.segment if plan else None)
    server = DaemonServer(daemon, listen, port, None if args.no_unix else "/tmp/%d" % port,
                          args.status_every, ring=((entry.ip, entry.port), peers),
                          segment=segment, hop=hop)
    if segment is None:
        server.segment_problem = no_segment
    try:
        server.open()
    except OSError as exc:
        print("spread_mini: %s" % ring_open_error(exc, server, entry, listen, port), file=sys.stderr)
        server.close()
        return 1

    if server.join_failed:  # another machine may have joined: then the two cannot talk
        print("WARNING: the ring's data goes by unicast (%s); the daemons that did join the segment "
              "send theirs by multicast, which this one does not get: start every daemon of the file "
              "with --no-multicast" % server.segment_problem, flush=True)

    stopped_by = []

    def stop(signum, _frame):
        stopped_by.append(signum)
        server.stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    write_pid_file(args.pid_file)
    server.log("spread_mini daemon %s (incarnation %d, pid %d) listening on %s; ring on %s:%d/udp "
               "with %s; data by %s%s" % (entry.name, incarnation, os.getpid(),
                                         server.where_listening("%s:%d" % (listen, port)), entry.ip,
                                         entry.port, ", ".join(sorted(peers)), server.segment_text(),
                                              "; packets signed with the key %s" % args.key if key else ""))
    if plan is not None:
        server.log("site %d of %d; HOP port %s:%d/udp; sites: %s" % (
            entry.segment, len(plan.sites), hop[0][0], hop[0][1],
            "; ".join("%d: %s" % (i, ", ".join(s)) for i, s in enumerate(plan.sites))))
    server.log("ring protocol: %s; packets up to %d bytes, windows %d / %d packets" % (
        _ring_protocol_text(settings.accelerated_window_packets if settings.accelerated_ring else None),
        settings.max_packet_bytes, settings.global_window_packets, settings.personal_window_packets))
    try:
        server.serve_forever()
        # a clean stop: the others form a new ring at once, and say why (kill -9 cannot do
        # this: they notice by token loss)
        if daemon.fatal is not None:
            server.log("leaving the ring: joined its site too late")
            server.leave_ring("joined its site too late")
            return 1
        server.log("%s: leaving the ring" % ("SIGINT (Ctrl-C)" if stopped_by[:1] == [signal.SIGINT]
                                             else "SIGTERM"))
        server.leave_ring("stopped by its operator")
    finally:
        server.close()
        remove_pid_file(args.pid_file)
        server.log("daemon %s stopped" % entry.name)
    return 0


def segment_of(config, no_multicast: bool = False,
               site: Optional[int] = None) -> Tuple[Optional[Tuple[str, int]], str]:
    """(the multicast group and port the ring's data goes to, or None; why not): the segment's,
    when there is exactly one (one ring over several segments has no common group), or the
    daemon's own site's (several sites: a ring per segment)."""
    if no_multicast:
        return None, "--no-multicast"
    if site is not None:
        return (config.segments[site].address, config.segments[site].port), ""
    if len(config.segments) != 1:
        return None, "%d segments" % len(config.segments)
    return (config.segments[0].address, config.segments[0].port), ""


def unkeyed_lan_warning(config) -> List[str]:
    """Said once at the start of a daemon without a key whose configuration reaches beyond
    this machine (an address outside 127.0.0.0/8): on a shared LAN anyone can forge packets."""
    outside = sorted({d.ip for d in config.daemons if not ipaddress.ip_address(d.ip).is_loopback})
    if not outside:
        return []
    return ["WARNING: the configuration names %s, outside 127.0.0.0/8, and this daemon runs "
            "without a key: anyone on the LAN can send packets that disturb the ring." % ", ".join(outside),
            "  Make a key once (python3 spread_mini.py keygen ring.key), copy it to every daemon's "
            "machine and start every daemon with --key ring.key."]


def run_keygen(args) -> int:
    try:
        write_key_file(args.file)
    except FileExistsError:
        print("spread_mini.py keygen: error: %s exists; it is never overwritten (the daemons "
              "that hold it would no longer accept this one's packets). Remove it first to "
              "make a new key." % args.file, file=sys.stderr)
        return 2
    except OSError as exc:
        print("spread_mini.py keygen: error: %s: %s" % (args.file, exc.strerror or exc),
              file=sys.stderr)
        return 2
    print("wrote a random %d-byte key to %s (mode 0600, readable by you only). Copy it to the "
          "machine of every daemon of the configuration and start each with --key %s"
          % (RING_KEY_BYTES, args.file, args.file))
    return 0


def run_user(args) -> int:
    try:
        mbox = connect(args.spread, args.user, 0, not args.no_membership)
    except SpreadError as exc:
        print("spread_mini user: cannot connect to %s: %s" % (args.spread, exc), file=sys.stderr)
        return 1
    interactive = sys.stdin.isatty()
    tool = UserTool(mbox, interactive=interactive)
    if not interactive:
        tool.say("connected as %s" % mbox.private_group)
    try:
        return tool.run(sys.stdin, args.linger)
    except KeyboardInterrupt:
        return 0
    finally:
        mbox.disconnect()


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "daemon":
        return run_daemon(args, parser)
    if args.command == "user":
        return run_user(args)
    if args.command == "keygen":
        return run_keygen(args)
    parser.print_help()
    return 2


if __name__ == "__main__":
    sys.exit(main())
