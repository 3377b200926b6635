"""Tier 1: the group core takes a run of deliveries in one call (GroupCore.deliver_all, what
the daemon hands it after each poll of the orderer), and the sender of a message delivers its
own from the object it holds (Transport._own_message). Both must give exactly what one
deliver() per message, and decoding the message back from its packet, give."""
from __future__ import annotations

import random

import spread_mini as sp
from daemon_driver import Driver

GROUPS = ["g", "h", "k"]


def daemon_with_clients(core_class=None):
    """A daemon alone with four local clients in groups g, h, k (one without membership
    messages); returns the driver and the clients' private groups by conn id."""
    d = Driver(sp.Daemon("d1"))
    members = {1: ["g"], 2: ["g", "h"], 3: ["h", "k"], 4: ["g", "k"]}
    pgs = {}
    for conn_id, groups in members.items():
        user = "u%d" % conn_id
        d.connection_opened(conn_id, 0.0, "127.0.0.1")
        d.connection_data(conn_id, sp.encode_connect(user, conn_id != 4) + sp.encode_auth_choice())
        pgs[conn_id] = "#%s#d1" % user
        for group in groups:
            d.connection_data(conn_id, sp.encode_message(sp.JOIN_MESS, pgs[conn_id], [group],
                                                         sp.make_hint(0), b""))
    for conn_id in members:
        d.take_output(conn_id)
    return d, pgs


def mixed_run(seed: int, pgs: dict) -> list:
    """A run of deliveries as an orderer gives them: data to one group (mostly the same one,
    as in a flood), to several, to a private group, with and without SELF_DISCARD, from local
    and remote senders, and joins, leaves and a disconnect of members local and remote in
    between (they change the sessions a group's data goes to)."""
    rng = random.Random(seed)
    msgs = []
    remote = ["#r%d#d2" % i for i in range(3)]
    for i in range(rng.randrange(20, 60)):
        roll = rng.random()
        sender = rng.choice(list(pgs.values()) + remote)
        origin = "d1" if sender.endswith("#d1") else "d2"
        if roll < 0.08:
            msgs.append(sp.DaemonMessage(sp.JOIN, origin, sender, groups=[rng.choice(GROUPS)]))
        elif roll < 0.14:
            msgs.append(sp.DaemonMessage(sp.LEAVE, origin, sender, groups=[rng.choice(GROUPS)]))
        elif roll < 0.16:
            msgs.append(sp.DaemonMessage(sp.KILL, origin, sender, reason="gone"))
        else:
            if roll < 0.7:
                groups = ["g"]
            elif roll < 0.8:
                groups = rng.sample(GROUPS + [pgs[1]], 2)
            elif roll < 0.9:
                groups = [rng.choice(list(pgs.values()))]
            else:
                groups = [rng.choice(GROUPS + ["nobody"])]
            service = rng.choice(sp.SERVICE_BITS) | (sp.SELF_DISCARD if rng.random() < 0.3 else 0)
            msgs.append(sp.DaemonMessage(sp.DATA, origin, sender, service, groups, sp.make_hint(i),
                                         data=b"m%03d" % i))
    return msgs


def queued(d: Driver) -> dict:
    return {conn_id: (s.state, b"".join(s.out.chunks), s.msgs_out) for conn_id, s in d.d.sessions.items()}


def test_deliver_all_gives_every_session_what_one_deliver_per_message_gives():
    for seed in range(60):
        one, pgs = daemon_with_clients()
        run, _ = daemon_with_clients()
        for msg in mixed_run(seed, pgs):
            one.d.core.deliver(msg)
        msgs = mixed_run(seed, pgs)
        others = run.d.core.deliver_all(msgs)
        assert others == [m for m in msgs if m.kind != sp.DATA], seed  # for the daemon's books
        assert queued(run) == queued(one), seed
        assert run.d.core.out_by_service == one.d.core.out_by_service, seed
        assert {n: g.ordered for n, g in run.d.core.groups.items()} == \
               {n: g.ordered for n, g in one.d.core.groups.items()}, seed
        assert any(out for _, out, _ in queued(one).values()), seed  # the runs deliver something


def test_deliver_all_holds_data_during_a_state_exchange_as_deliver_does():
    """A ring's core holds the deliveries of an exchange under way; deliver_all must too."""
    for seed in range(5):
        cores = []
        for batch in (False, True):
            core = sp.build_daemon("d1", {"d1": "127.0.0.1", "d2": "127.0.0.2"}).core
            assert isinstance(core, sp.RingGroupCore)
            core.configuration_change(sp.ConfigurationChange(
                sp.CONF_REGULAR, ["d1", "d2"], ["d1", "d2"], (2, 1)), 1)
            assert core.exchange is not None
            msgs = [sp.DaemonMessage(sp.DATA, "d2", "#r#d2", sp.AGREED_MESS, ["g"], data=b"x%d" % i)
                    for i in range(seed + 3)]
            if batch:
                core.deliver_all(msgs)
            else:
                for msg in msgs:
                    core.deliver(msg)
            cores.append(core)
        assert [m.data for m in cores[1].exchange.held] == [m.data for m in cores[0].exchange.held]
        assert len(cores[1].exchange.held) == seed + 3


def test_the_sender_delivers_its_own_messages_from_the_objects_it_holds():
    """A ring of three: the sender's daemon delivers the very Multicast objects its client's
    messages became (no decoding back), and its client gets the same bytes as the others."""
    from test_ring_burst import Net
    net = Net(burst="call")
    net.tick(1500)  # the ring forms
    net.client("d1", "snd", "g")
    net.client("d2", "r2", "g")
    net.tick(300)
    for name in ("d1", "d2"):
        net.d[name].take_output(1)
    d1 = net.d["d1"].d
    submitted, delivered = [], []
    real_submit, real_deliver_all = d1.orderer.submit, d1.core.deliver_all
    d1.orderer.submit = lambda msg, urgent=False: (submitted.append(msg), real_submit(msg, urgent))[1]
    d1.core.deliver_all = lambda msgs: (delivered.extend(msgs), real_deliver_all(msgs))[1]
    messages = [sp.encode_message(sp.AGREED_MESS if i % 3 else sp.SAFE_MESS, "#snd#d1", ["g"],
                                  sp.make_hint(i), b"m%04d" % i * (1 + i % 400)) for i in range(200)]
    for i in range(0, len(messages), 20):
        net.d["d1"].connection_data(1, b"".join(messages[i:i + 20]))
        net.pump("d1")
        net.tick()
    net.tick(300)
    sent = b"".join(messages)
    assert net.d["d1"].take_output(1) == sent
    assert net.d["d2"].take_output(1) == sent
    data = [m for m in delivered if m.kind == sp.DATA]
    assert len(data) == len(messages)
    assert all(a is b for a, b in zip(data, submitted)), "decoded back instead of the held object"
    assert not d1.orderer.transport.own_sent  # nothing held after its delivery


def test_a_body_that_is_not_the_one_we_sent_is_decoded_not_taken_from_what_we_hold():
    transport = sp.Transport("d1", sp.RingSettings(), __import__("collections").Counter(), lambda m: None)
    ours = sp.Multicast(sp.DATA, "d1", "#a#d1", sp.AGREED_MESS, ["g"], raw=sp.encode_message(
        sp.AGREED_MESS, "#a#d1", ["g"], sp.make_hint(0), b"ours"))
    transport.submit(ours)
    token = sp.RingToken(ring_id=(1, "d1", 1), sender=("d1", 1), token_id=1)
    chunks = []
    transport.take_whole(token, 1400, 1400, chunks, 8)
    (chunk,) = chunks
    other = sp.encode_message_body(sp.DaemonMessage(sp.DATA, "d1", "#a#d1", sp.AGREED_MESS, ["g"],
                                                    data=b"forged"))
    assert transport._own_message(chunk.origin_counter, other) is None
    assert not transport.own_sent  # the entry is spent: a later delivery of it decodes
    transport.submit(ours)
    chunks = []
    transport.take_whole(token, 1400, 1400, chunks, 8)
    assert transport._own_message(chunks[0].origin_counter - 1, chunks[0].body) is None  # older
    assert transport._own_message(chunks[0].origin_counter, chunks[0].body) is ours
