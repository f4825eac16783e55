"""Which gateway of a quorum domain answers a device (gateway/cluster/replica.py
Replica.serves): exactly one of the gateways a replica believes live; the
full node a coordinator assigned the device (NODE_ASSIGN, in its record)
while that gateway is live; a live one at once when the device's gateway
goes offline (its last will), and the assigned one again when it is back;
after a validator-set change, the gateways of the new set.
The gateways are built, not started: nothing connects."""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

from gateway.cluster.liveness import SILENCE_S
from gateway.ledger import consensus, keys
from shared import commit_gateway, topics
from shared import tx as txm
from tests.cluster.quorum import DOMAIN, SPARE, VALIDATORS, Running, config, make_dirs
from tests.support.gwtest import Device

IDS = [txm.device_id(pub) for _, pub in VALIDATORS]
# addresses only: the gateways are not started
NATS = SimpleNamespace(nodes=[SimpleNamespace(mqtt_port=1883 + i) for i in range(3)],
                       urls=["nats://127.0.0.1:4222"])


def servers(gws: list[Running], device: bytes) -> list[int]:
    return [i for i, r in enumerate(gws) if r.rep.serves(device)]


def mark(gws: list[Running], who: int, status: bytes) -> None:
    """Every other gateway sees gateway `who`'s status message."""
    for i, r in enumerate(gws):
        if i != who:
            assert r.rep.on_status(topics.status(DOMAIN, IDS[who].hex()), status)


def test_one_live_gateway_answers_each_device_assigned_one_first(tmp_path):
    devices = [Device(f"serve-{i}", DOMAIN) for i in range(12)]
    gws = [Running(config(d, i, NATS)) for i, d in enumerate(make_dirs(tmp_path, devices))]
    try:
        owner = {d.id: servers(gws, d.id) for d in devices}
        assert all(len(s) == 1 for s in owner.values())  # exactly one each
        assert len({s[0] for s in owner.values()}) > 1  # spread over the gateways
        # gw0 dies (its last will): the two others split all devices, one each
        mark(gws, 0, b"offline")
        for d in devices:
            s = servers(gws[1:], d.id)
            assert len(s) == 1, d.name
        mark(gws, 0, b"online")
        # a device the rule gives to gw0 or gw1 is assigned to gw2 by the coordinator
        d = next(x for x in devices if owner[x.id] != [2])
        for r in gws:
            st = r.gw.led.state
            rec = st.get(d.id)
            assert rec is not None
            st.apply_diff({d.id: replace(rec, assigned=IDS[2])}, {})
        assert servers(gws, d.id) == [2]
        mark(gws, 2, b"offline")  # its assigned gateway goes away: a live one answers
        assert len(servers(gws[:2], d.id)) == 1
        mark(gws, 2, b"online")
        assert servers(gws, d.id) == [2]
        # a status message of a device is not a gateway's
        assert not gws[0].rep.on_status(topics.status(DOMAIN, d.id.hex()), b"offline")
    finally:
        for r in gws:
            r.gw.led.store.close()


def test_the_set_of_the_next_height_answers_after_a_change(tmp_path):
    """A VALSET in force from the next height (gw2 out, gw3 in): the new set
    splits the devices, exactly one each; gw2, removed, answers none, and
    gw3, added, its share."""
    devices = [Device(f"change-{i}", DOMAIN) for i in range(16)]
    gws = [Running(config(d, i, NATS)) for i, d in enumerate(make_dirs(tmp_path, devices, n=4))]
    try:
        new = consensus.ValidatorSet.of([VALIDATORS[0][1], VALIDATORS[1][1], SPARE[1]], 2)
        for r in gws:
            st = r.gw.led.state
            old = consensus.schedule(st)
            assert old is not None and r.gw.led.head.height == 0
            st.apply_diff({}, {keys.VALSETS: consensus.encode_schedule([old[0], (1, new)])})
        owner = {d.id: servers(gws, d.id) for d in devices}
        assert all(len(s) == 1 for s in owner.values()), owner
        assert {s[0] for s in owner.values()} == {0, 1, 3}
    finally:
        for r in gws:
            r.gw.led.store.close()


def test_silence_is_offline_for_turns_serving_and_the_lease(tmp_path):
    """The one rule (gateway/cluster/liveness.py), on a clock of the test's: a
    gateway heard of last SILENCE_S ago is still live; past it, with no last
    will, it is offline for the turns to propose (proposers_at), for serving
    devices (serves) and for the issuer's lease (the `offline` callback the
    lease is given); a valid vote of it is a sign of life again."""
    devices = [Device(f"quiet-{i}", DOMAIN) for i in range(12)]
    gws = [Running(config(d, i, NATS)) for i, d in enumerate(make_dirs(tmp_path, devices))]
    try:
        now = [100.0]
        for r in gws:
            r.rep.liveness.clock = lambda: now[0]
            r.rep.liveness.since = now[0]
        for who in range(3):
            mark(gws, who, b"online")
        r1 = gws[1].rep
        h = next(h for h in range(1, 10) if r1.proposers_at(h)[0] == IDS[0])
        now[0] += SILENCE_S
        assert r1.proposers_at(h)[0] == IDS[0] and not r1._offline(IDS[0].hex())
        # gw1 and gw2 go on announcing themselves; gw0 is silent, no will
        now[0] += 1.0
        mark(gws, 1, b"online")
        mark(gws, 2, b"online")
        for r in gws[1:]:
            assert IDS[0] not in r.rep.proposers_at(h)
            assert r.rep.proposers_at(h) == sorted(IDS[1:])[h % 2:] + sorted(IDS[1:])[:h % 2]
            assert r.rep._offline(IDS[0].hex())  # the lease's callback: take it over
        for d in devices:
            assert len(servers(gws[1:], d.id)) == 1, d.name
        assert any("offline (silent for 17 s)" in x for x in gws[1].lines), gws[1].lines
        # a vote of gw0 (checked) is a sign of life: live again, its turn back
        vh = bytes(32)
        vote = commit_gateway.vote(VALIDATORS[0][0], VALIDATORS[0][1], vh)
        assert r1._verify(1, vh, VALIDATORS[0][1], vote)
        assert r1.proposers_at(h)[0] == IDS[0] and not r1._offline(IDS[0].hex())
        # a forged vote is not
        now[0] += SILENCE_S + 1
        mark(gws, 1, b"online")
        mark(gws, 2, b"online")
        assert not r1._verify(1, vh, VALIDATORS[0][1], bytes(64))
        assert r1._offline(IDS[0].hex())
    finally:
        for r in gws:
            r.gw.led.store.close()
