"""Property tests (tier 2): random connects, joins, leaves, sends, disconnects and slow readers
through the sans-I/O daemon core, against a small reference model of membership and delivery
(thesis 7.2 and 7.3.3; PROTOCOL.md section 4).  A failing case prints its op list: rerun with it."""
from __future__ import annotations

import random

from hypothesis import event, given, settings
from hypothesis import strategies as st

import spread_mini as sp
from daemon_driver import driven
from spread_helpers import be_message

NAMES = ["a", "b", "c", "d", "e"]
GROUPS = ["g1", "g2", "g3"]
SERVICES = list(sp.SERVICE_BITS)
LIMIT = 6


class Model:
    """What the daemon should do, written as plainly as possible."""

    def __init__(self):
        self.sessions = {}  # conn id -> dict(name, pg, memb, queue, delivered)
        self.names = {}
        self.groups = {}  # group -> list of pgs
        self.index = {}

    def pg_of(self, cid):
        return self.sessions[cid]["pg"]

    def by_pg(self, pg):
        for cid, s in self.sessions.items():
            if s["pg"] == pg:
                return cid
        return None

    def put(self, cid, item):
        self.sessions[cid]["queue"].append(item)

    def notify(self, group, cause, changed):
        members = tuple(sorted(self.groups[group], key=lambda pg: pg.encode()))
        for pg in members:
            cid = self.by_pg(pg)
            if self.sessions[cid]["memb"]:
                self.put(cid, ("memb", group, cause, members, self.index[group], (changed,)))

    def connect(self, cid, name, memb, big_endian=False):
        if name in self.names:
            return False
        self.names[name] = cid
        self.sessions[cid] = dict(name=name, pg="#%s#localhost" % name, memb=memb, queue=[], delivered=[],
                                  big_endian=big_endian)
        return True

    def join(self, cid, group):
        pg = self.pg_of(cid)
        members = self.groups.setdefault(group, [])
        if pg in members:
            return
        if not members:
            self.index[group] = 0
        members.append(pg)
        self.index[group] += 1
        self.notify(group, "JOIN", pg)

    def _remove(self, pg, group, cause):
        self.groups[group].remove(pg)
        self.index[group] += 1
        self.notify(group, cause, pg)
        if not self.groups[group]:
            del self.groups[group]

    def leave(self, cid, group):
        pg = self.pg_of(cid)
        if pg not in self.groups.get(group, []):
            return
        if self.sessions[cid]["memb"]:
            self.put(cid, ("self_leave", group))
        self._remove(pg, group, "LEAVE")

    def send(self, cid, groups, service, payload):
        pg = self.pg_of(cid)
        targets = []
        for group in groups:
            found = [self.by_pg(group)] if group.startswith("#") else [self.by_pg(m) for m in self.groups.get(group, [])]
            for t in found:
                if t is not None and t not in targets:
                    targets.append(t)
        for t in targets:
            if t == cid and service & sp.SELF_DISCARD:
                continue
            self.put(t, ("data", pg, tuple(groups), payload, service, self.sessions[cid]["big_endian"]))

    def kill(self, cid):
        pg = self.pg_of(cid)
        for group in sorted(g for g, members in self.groups.items() if pg in members):
            self._remove(pg, group, "DISCONNECT")
        session = self.sessions.pop(cid)
        del self.names[session["name"]]
        return session

    def pump(self, cid):
        s = self.sessions[cid]
        s["delivered"] += s["queue"]
        s["queue"] = []

    def enforce(self):
        killed = []
        while True:
            over = sorted(cid for cid, s in self.sessions.items() if len(s["queue"]) > LIMIT)
            if not over:
                return killed
            for cid in over:
                killed.append((cid, self.kill(cid)))


def as_tuple(msg):
    if not msg.is_membership:
        return ("data", msg.sender, tuple(msg.groups), msg.data, msg.service_type, msg.endian_mismatch)
    if msg.is_self_leave:
        return ("self_leave", msg.group)
    return ("memb", msg.group, msg.caused_by, tuple(msg.members), msg.group_id.index, tuple(msg.changed_members))


class Harness:
    """The daemon core, with fake connections that the I/O loop would own. A client reads only
    when the test pumps it: in between, its socket takes nothing (is full)."""

    def __init__(self, seed: int = 0):
        self.d = driven("localhost", max_session_messages=LIMIT, rng=random.Random(3))
        self.received = {}  # conn id -> decoded tuples
        self.big_endian = set()  # conn ids of clients that write big-endian
        self.split = random.Random(seed)  # where requests are cut into pieces (TCP may cut anywhere)

    def connect(self, cid, name, memb):
        d = self.d
        d.connection_opened(cid, 0.0)
        d.connection_data(cid, sp.encode_connect(name, memb))
        first = d.take_output(cid)
        if first == b"\xfa":
            d.take_actions()  # the core closed it: not a session the model knows
            return False
        d.connection_data(cid, sp.encode_auth_choice())
        d.take_output(cid)
        d.stall(cid)
        self.received[cid] = []
        return True

    def request(self, cid, pg, type_bits, groups, data=b""):
        if cid in self.big_endian:
            raw = be_message(type_bits, pg, groups, 0, data)
        else:
            raw = sp.encode_message(type_bits, pg, groups, sp.make_hint(0), data)
        cuts = sorted(self.split.sample(range(1, len(raw)), min(len(raw) - 1, self.split.randrange(3))))
        for start, end in zip([0] + cuts, cuts + [len(raw)]):
            self.d.connection_data(cid, raw[start:end])

    def pump(self, cid):
        self.d.unstall(cid)
        buf = self.d.take_output(cid)
        self.d.stall(cid)
        off = 0
        while off < len(buf):
            n = sp.message_length(buf, off)
            self.received[cid].append(as_tuple(sp.decode_message(buf, off, "")))
            off += n

    def closed(self):
        """Connections the core closed since the last call."""
        return [a.conn_id for a in self.d.take_actions() if isinstance(a, sp.CloseConnection)]


connect_op = st.tuples(st.just("connect"), st.sampled_from(NAMES), st.booleans(), st.booleans())
op = st.one_of(
    connect_op,
    st.tuples(st.just("join"), st.integers(0, 9), st.sampled_from(GROUPS)),
    st.tuples(st.just("leave"), st.integers(0, 9), st.sampled_from(GROUPS)),
    st.tuples(st.just("send"), st.integers(0, 9), st.lists(st.sampled_from(GROUPS + ["#a#localhost", "#b#localhost"]),
                                                          min_size=1, max_size=3, unique=True),
              st.sampled_from(SERVICES), st.booleans()),
    st.tuples(st.just("kill"), st.integers(0, 9), st.booleans()),
    st.tuples(st.just("pump"), st.integers(0, 9)),
    st.tuples(st.just("pump_all")),
)


scenario = st.builds(lambda first, rest: first + rest, st.lists(connect_op, min_size=1, max_size=5),
                     st.lists(op, min_size=5, max_size=80))


@settings(max_examples=300)
@given(scenario, st.integers(0, 2 ** 16))
def test_daemon_core_matches_reference_model(ops, seed):
    """Clients of both byte orders; every request cut into 1-3 pieces at random places."""
    model, h = Model(), Harness(seed)
    next_cid = 1
    counter = 0
    for step in ops:
        alive = sorted(model.sessions)
        kind = step[0]
        if kind == "connect":
            cid = next_cid
            next_cid += 1
            assert h.connect(cid, step[1], step[2]) == model.connect(cid, step[1], step[2], step[3]), ops
            if step[3]:
                h.big_endian.add(cid)
        elif kind == "pump_all":
            for cid in alive:
                model.pump(cid)
                h.pump(cid)
        elif alive:
            cid = alive[step[1] % len(alive)]
            pg = model.pg_of(cid)
            if kind == "join":
                model.join(cid, step[2])
                h.request(cid, pg, sp.JOIN_MESS, [step[2]])
            elif kind == "leave":
                model.leave(cid, step[2])
                h.request(cid, pg, sp.LEAVE_MESS, [step[2]])
            elif kind == "send":
                counter += 1
                service = step[3] | (sp.SELF_DISCARD if step[4] else 0)
                payload = b"m%d" % counter
                model.send(cid, step[2], service, payload)
                h.request(cid, pg, service, step[2], payload)
            elif kind == "kill":
                model.kill(cid)
                if step[2]:
                    h.request(cid, pg, sp.KILL_MESS, [pg])
                    h.closed()
                else:
                    h.d.connection_closed(cid)
            elif kind == "pump":
                model.pump(cid)
                h.pump(cid)
        killed = model.enforce()
        closed = h.closed()
        assert sorted(closed) == sorted(k for k, _ in killed), (ops, closed, killed)
        for cid, session in killed:
            assert h.received[cid] == session["delivered"], ops
    for cid in sorted(model.sessions):
        model.pump(cid)
        h.pump(cid)
        assert h.received[cid] == model.sessions[cid]["delivered"], (cid, ops)
    # membership agrees with the model at the end
    assert {g: sorted(grp.members) for g, grp in h.d.core.groups.items()} == \
        {g: sorted(m) for g, m in model.groups.items()}, ops


@settings(max_examples=200)
@given(st.booleans(), st.lists(st.binary(max_size=300), max_size=8))
def test_garbage_never_breaks_the_daemon_core(after_handshake, chunks):
    """Any bytes from one connection, before or after a handshake, close at most that session;
    another session keeps working (issue 3: "a session that breaks the protocol is closed")."""
    h = Harness()
    assert h.connect(1, "good", True)
    h.request(1, "#good#localhost", sp.JOIN_MESS, ["g"])
    if after_handshake:
        assert h.connect(2, "bad", True)
    else:
        h.d.connection_opened(2, 0.0)
    for chunk in chunks:
        h.d.connection_data(2, chunk)
        h.closed()
    h.request(1, "#good#localhost", sp.AGREED_MESS, ["g"], b"alive")
    h.pump(1)
    assert h.received[1][-1][:4] == ("data", "#good#localhost", ("g",), b"alive")


SERVICE_KINDS = list(sp.SERVICE_BITS) + [
    sp.REG_MEMB_MESS | sp.CAUSED_BY_JOIN, sp.REG_MEMB_MESS | sp.CAUSED_BY_NETWORK,
    sp.TRANSITION_MESS, sp.CAUSED_BY_LEAVE, sp.REJECT_MESS | sp.AGREED_MESS]
group_names = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7e), min_size=1,
                      max_size=31)


@st.composite
def whole_messages(draw):
    """One whole message as a daemon would write it, in either byte order: a header whose
    num_groups and data_len match what follows (so that every example reaches the decoder),
    for a rejected message its old type, the groups, the body. Returns (raw, the groups, the
    body)."""
    swapped = draw(st.booleans())
    service = draw(st.sampled_from(SERVICE_KINDS)) | draw(st.sampled_from([0, 0x04000000, 0x10]))
    marker = sp.MY_ENDIAN_MARKER ^ sp.ENDIAN_TYPE if swapped else sp.MY_ENDIAN_MARKER
    groups = draw(st.lists(group_names, max_size=8))
    body = draw(st.binary(max_size=300))
    header = sp.HEADER_SWAPPED if swapped else sp.HEADER
    raw = header.pack(service | marker, b"#x#y", len(groups), draw(st.integers(0, 2 ** 32 - 1)),
                      len(body))
    if service & sp.REJECT_MESS:  # the type the message had before the daemon rejected it
        raw += (sp.UINT32_SWAPPED if swapped else sp.UINT32).pack(sp.AGREED_MESS | marker)
    raw += b"".join(g.encode("latin-1").ljust(sp.MAX_GROUP_NAME, b"\0") for g in groups)
    return raw + body, groups, body


@settings(max_examples=300)
@given(whole_messages(), st.binary(max_size=40), st.one_of(st.none(), st.integers(0, 100)),
       st.one_of(st.none(), st.integers(0, 5)), st.booleans())
def test_library_decoder_decodes_or_says_what_does_not_fit(message, next_bytes, max_len,
                                                           max_groups, drop):
    """Like the real library (sp.c, SP_receive): a message that does not fit the caller's
    buffers raises BufferTooShort (data) or GroupsTooShort with the sizes needed, unless the
    caller asked to drop (DROP_RECV): then it is truncated and says so."""
    raw, groups, body = message
    assert sp.message_length(raw + next_bytes) == len(raw)
    too_long = max_len is not None and len(body) > max_len
    too_many = max_groups is not None and len(groups) > max_groups
    try:
        msg = sp.decode_message(raw + next_bytes, 0, "#x#y", max_len, max_groups, drop)
    except (sp.BufferTooShort, sp.GroupsTooShort) as exc:
        assert (too_long or too_many) and not drop, exc
        assert isinstance(exc, sp.BufferTooShort if too_long else sp.GroupsTooShort)
        assert exc.code < 0
        event("raised %s" % type(exc).__name__)  # --hypothesis-show-statistics counts them
        return
    event("decoded, truncated" if msg.truncated else "decoded whole")
    assert not ((too_long or too_many) and not drop)
    assert msg.truncated == (too_long or too_many)
    names = msg.members if msg.is_membership else msg.groups
    assert names == groups[:max_groups] if too_many else names == groups
    if not msg.is_membership:
        assert msg.data == (body[:max_len] if too_long else body)


@settings(max_examples=300)
@given(st.binary(min_size=sp.HEADER_LEN, max_size=600), st.one_of(st.none(), st.integers(0, 100)),
       st.one_of(st.none(), st.integers(0, 5)), st.booleans())
def test_library_decoder_raises_only_spread_errors_on_garbage(raw, max_len, max_groups, drop):
    """Bytes that are not a daemon's message: the length check or the decoder refuses them
    with a Spread error (a negative code), never with another exception."""
    try:
        total = sp.message_length(raw)
        if total <= len(raw):
            msg = sp.decode_message(raw, 0, "#x#y", max_len, max_groups, drop)
            assert isinstance(msg, (sp.RegularMessage, sp.MembershipMessage))
    except sp.SpreadError as exc:
        assert exc.code < 0


conf_words = st.sampled_from(["Spread_Segment", "127.0.0.255:4803", "{", "}", "d1", "127.0.0.1", "D", "C", "=",
                              "EventLogFile", "/tmp/x", "#", "\n", "10.0.0.300", "x" * 25, "127.0.0.2"])


@settings(max_examples=300)
@given(st.lists(conf_words, max_size=30))
def test_config_parser_gives_a_config_or_a_config_error(words):
    try:
        conf = sp.parse_spread_conf(" ".join(words))
    except sp.ConfigError as exc:
        assert str(exc)
    else:
        assert conf.daemons and len(set(conf.daemon_order())) == len(conf.daemons)
