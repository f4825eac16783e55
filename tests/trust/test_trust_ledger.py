"""Trust on chain (gateway/trust/): proofs, reports, scores and levels as a
function of the chain, kept in the state root, replayed the same."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.db.verify import verify_chain
from gateway.trust import evidence
from gateway.trust import standing as st
from shared import errors, header, messages, reasons
from shared import tx as txm
from tests.support.gwtest import DOMAIN, Device, Node


@pytest.fixture
def tnode(tmp_path: Path, alice: Device, bob: Device) -> Iterator[Node]:
    n = Node(tmp_path / "gw", {alice.pub: 1000, bob.pub: 1000}, trust=True)
    yield n
    n.close()


def commit(n: Node, *msgs: bytes, step: int = 1) -> list:
    n.submit_all(msgs)
    b = n.produce(step=step)
    assert not b.dropped, b.dropped
    return [r for r in b.receipts]


def proof(by: Device, kind: str, a: bytes, b: bytes) -> bytes:
    return by.make(txm.TYPE_PROOF, {1: kind, 2: a, 3: b})


def report(by: Device, target: bytes, kind: str = "flooding", **kw) -> bytes:
    return by.make(txm.TYPE_REPORT, {1: target, 2: kind}, **kw)


def equivocation(d: Device) -> tuple[bytes, bytes]:
    """A committed-able reading and a second, different one with its seq."""
    a = d.reading(100)
    b = d.reading(200, seq=d.seq)
    return a, b


def snapshot(n: Node) -> tuple[bytes, int]:
    return n.state.root(), n.state.total_balance()


def test_new_ids_start_on_probation_and_activity_lifts_them(tnode: Node, alice: Device) -> None:
    commit(tnode, alice.reading())
    assert st.level_of(tnode.state, alice.id) == st.PROBATION
    rec = st.get(tnode.state, alice.id)
    assert rec is not None and rec.activity == 1 and rec.since == tnode.time
    commit(tnode, *(alice.reading(i) for i in range(st.PROBATION_TXS)))
    assert st.level_of(tnode.state, alice.id) == st.PROBATION  # active, but not a day old
    commit(tnode, alice.reading(), step=st.PROBATION_S)
    assert st.level_of(tnode.state, alice.id) == st.NORMAL
    hist = st.history(tnode.state, alice.id)
    assert [h[5] for h in hist] == [st.PROBATION, st.NORMAL]
    assert hist[-1][3] == "activity"
    # the figures are in the state root: a replay from genesis gives the same one
    rep = verify_chain(tnode.store, tnode.genesis)
    assert rep.ok, rep


def test_tx_equivocation_bans_the_key_once(tnode: Node, alice: Device, bob: Device) -> None:
    a, b = equivocation(alice)
    commit(tnode, a)
    # the ingress sees the second message as a replay of the seq
    with pytest.raises(errors.TLError) as e:
        tnode.submit(b)
    assert e.value.reason == errors.REPLAY
    total = tnode.state.total_balance()
    rs = commit(tnode, proof(bob, "tx-equivocation", a, b))
    assert rs[0].status == messages.STATUS_OK
    assert st.level_of(tnode.state, alice.id) == st.BANNED
    h = st.history(tnode.state, alice.id)[-1]
    assert h[2] == rs[0].tx_id and h[3] == "proof:tx-equivocation" and h[5] == st.BANNED
    assert tnode.state.total_balance() == total
    # the same offence again, in either order: refused, nothing changed
    before = snapshot(tnode)
    for x, y in ((a, b), (b, a)):
        with pytest.raises(errors.TLError) as e:
            tnode.submit(proof(bob, "tx-equivocation", x, y))
        assert (e.value.reason, e.value.detail) == (reasons.DUPLICATE, "offence")
        bob.seq -= 1
    assert snapshot(tnode) == before


def test_bad_proofs_are_refused_and_change_nothing(tnode: Node, alice: Device,
                                                     bob: Device) -> None:
    a, _ = equivocation(alice)
    other_seq = alice.reading(300)
    commit(tnode, a, other_seq)
    by_bob = bob.reading(100, seq=1)
    forged = txm.make(bob.priv, alice.id, txm.TYPE_READING, DOMAIN, 1, 0, {1: 9, 2: 0})
    before = snapshot(tnode)
    cases = [((a, a), errors.BAD_PROOF, evidence.EQUAL),
             ((a, by_bob), errors.BAD_PROOF, evidence.DIFFERENT_KEYS),
             ((a, other_seq), errors.BAD_PROOF, evidence.DIFFERENT_SEQS),
             ((a, forged), errors.BAD_SIGNATURE, "")]
    for (x, y), reason, detail in cases:
        with pytest.raises(errors.TLError) as e:
            tnode.submit(proof(bob, "tx-equivocation", x, y))
        assert e.value.reason == reason
        if detail:
            assert e.value.detail == detail
        bob.seq -= 1
    assert snapshot(tnode) == before
    assert st.level_of(tnode.state, alice.id) == st.PROBATION


def test_header_equivocation_is_a_small_check_and_a_proof(tnode: Node, bob: Device) -> None:
    commit(tnode, bob.reading())
    led = tnode.ledger
    f = dict(tnode.store.head().fields)
    a = header.sign(led.authority_priv, led.genesis.authority_id, f)
    f2 = dict(f, tx_root=bytes(32))
    b = header.sign(led.authority_priv, led.genesis.authority_id, f2)
    who, height = evidence.header_equivocation(led.genesis.authority, a, b)
    assert (who, height) == (led.genesis.authority_id, f["height"])
    with pytest.raises(errors.ProofError):
        evidence.header_equivocation(led.genesis.authority, a, a)
    with pytest.raises(errors.ProofError) as e:
        evidence.header_equivocation(led.genesis.authority, a, header.sign(
            led.authority_priv, led.genesis.authority_id, dict(f, height=f["height"] + 1)))
    assert e.value.detail == evidence.DIFFERENT_HEIGHTS
    with pytest.raises(errors.SignatureError):
        evidence.header_equivocation(bob.pub, a, b)
    rs = commit(tnode, proof(bob, "header-equivocation", a, b))
    assert rs[0].status == messages.STATUS_OK
    assert st.level_of(tnode.state, led.genesis.authority_id) == st.BANNED


def test_reports_refused_with_reasons(tnode: Node, alice: Device, bob: Device) -> None:
    commit(tnode, alice.reading(), bob.reading())
    before = snapshot(tnode)
    for msg, reason in ((report(bob, bob.id), errors.BAD_TX),
                        (report(bob, Device("nobody").id), errors.UNKNOWN_DEVICE)):
        with pytest.raises(errors.TLError) as e:
            tnode.submit(msg)
        assert e.value.reason == reason
        bob.seq -= 1
    with pytest.raises(errors.TLError) as e:
        tnode.submit(bob.make(txm.TYPE_REPORT, {1: alice.id, 2: "it-smells"}))
    assert e.value.detail == "bad-kind"
    bob.seq -= 1
    assert snapshot(tnode) == before


def test_report_weight_caps_and_replay(tnode: Node, alice: Device, bob: Device) -> None:
    # bob earns a normal level; alice stays active
    commit(tnode, bob.reading(), alice.reading())
    commit(tnode, *(bob.reading(i) for i in range(st.PROBATION_TXS)),
           *(alice.reading(i) for i in range(st.PROBATION_TXS)), step=st.PROBATION_S)
    assert st.level_of(tnode.state, bob.id) == st.NORMAL
    s0 = st.score_of(tnode.state, alice.id)
    rs = commit(tnode, report(bob, alice.id, "implausible-reading", ))
    assert rs[0].status == messages.STATUS_OK
    s1 = st.score_of(tnode.state, alice.id)
    assert s1 == s0 - st.REPORT_POINTS * st.WEIGHT[st.NORMAL] // 100
    assert st.history(tnode.state, alice.id)[-1][3] == "report:implausible-reading:w50"
    # the same report again that day: included as failed, nothing changed
    before = st.get(tnode.state, alice.id)
    rs = commit(tnode, report(bob, alice.id, "implausible-reading"))
    assert (rs[0].status, rs[0].reason) == (messages.STATUS_FAILED, reasons.DUPLICATE)
    assert st.get(tnode.state, alice.id) == before
    # a day later the first penalty has decayed and a new report counts again
    rs = commit(tnode, report(bob, alice.id, "implausible-reading"), step=st.DAY_S)
    assert rs[0].status == messages.STATUS_OK
    rec = st.get(tnode.state, alice.id)
    assert (rec.reports_received, rec.report_points) == (1, 10)
    assert rec.penalty == 10  # 10 of the day before decayed away, 10 new


def test_reporter_cap_per_day(tnode: Node, alice: Device, bob: Device) -> None:
    targets = [Device("t%d" % i) for i in range(st.REPORTER_DAY_CAP + 1)]
    commit(tnode, *(t.register() for t in targets))
    rs = commit(tnode, *(report(bob, t.id) for t in targets))
    assert [r.status for r in rs[:-1]] == [messages.STATUS_OK] * st.REPORTER_DAY_CAP
    assert (rs[-1].status, rs[-1].reason) == (messages.STATUS_FAILED, reasons.OVER_CAP)
    assert st.get(tnode.state, targets[-1].id).reports_received == 0


def test_report_storm_of_fresh_ids_does_not_move_an_honest_device(tnode: Node,
                                                                 alice: Device) -> None:
    commit(tnode, alice.reading())
    commit(tnode, *(alice.reading(i) for i in range(st.PROBATION_TXS)), step=st.PROBATION_S)
    level, score = st.level_of(tnode.state, alice.id), st.score_of(tnode.state, alice.id)
    assert level == st.NORMAL
    total = tnode.state.total_balance()
    swarm = [Device("swarm%d" % i) for i in range(1000)]
    commit(tnode, *(d.register() for d in swarm))
    rs = commit(tnode, *(report(d, alice.id, "forged-message") for d in swarm))
    ok = [r for r in rs if r.status == messages.STATUS_OK]
    assert len(ok) == st.TARGET_DAY_CAP
    assert {r.reason for r in rs if r.status != messages.STATUS_OK} == {reasons.OVER_CAP}
    assert st.level_of(tnode.state, alice.id) == level
    assert st.score_of(tnode.state, alice.id) >= score
    assert tnode.state.total_balance() == total


def test_offline_keeps_its_level_while_equivocation_bans(tnode: Node, alice: Device,
                                                         bob: Device) -> None:
    carol = Device("carol")
    commit(tnode, carol.register(), alice.reading(), bob.reading())
    commit(tnode, *(alice.reading(i) for i in range(st.PROBATION_TXS)),
           *(bob.reading(i) for i in range(st.PROBATION_TXS)), step=st.PROBATION_S)
    assert st.level_of(tnode.state, alice.id) == st.NORMAL
    a, b = equivocation(bob)
    commit(tnode, a)
    # alice goes silent for 30 days; blocks go on without her
    for _ in range(30):
        commit(tnode, carol.reading(), step=st.DAY_S)
    commit(tnode, proof(carol, "tx-equivocation", a, b))
    assert st.level_of(tnode.state, alice.id) == st.NORMAL
    assert st.level_of(tnode.state, bob.id) == st.BANNED
    # a banned key reports nothing
    with pytest.raises(errors.TLError) as e:
        tnode.submit(report(bob, alice.id))
    assert e.value.reason == reasons.BANNED


def test_trust_off_refuses_trust_txs(tmp_path: Path, alice: Device, bob: Device) -> None:
    n = Node(tmp_path / "off", {alice.pub: 10, bob.pub: 10})
    try:
        with pytest.raises(errors.TLError) as e:
            n.submit(report(bob, alice.id))
        assert (e.value.reason, e.value.detail) == (errors.NOT_AUTHORIZED, "trust-off")
        commit(n, alice.reading())
        assert st.get(n.state, alice.id) is None
    finally:
        n.close()


def test_broker_refuses_a_banned_principal(tnode: Node, alice: Device, bob: Device,
                                           tmp_path: Path) -> None:
    """The embedded broker's Guard and the mosquitto export read the level
    from the chain: a banned key neither connects nor is exported."""
    from gateway import broker as broker_auth
    from gateway.broker.mosquitto import export_mosquitto
    from gateway.broker.policy import NOT_AUTHORIZED, Guard
    from gateway.identity.access import Access

    a, b = equivocation(alice)
    commit(tnode, a, bob.reading())
    state = tnode.state
    guard = Guard(DOMAIN, lambda: Access.from_state(state, DOMAIN), tnode.genesis.authority)

    def connect(d: Device):  # -> Verdict
        pw = broker_auth.mqtt_password(d.priv, DOMAIN, d.id)
        return guard.admit(d.id.hex(), pw, d.id.hex())

    assert connect(alice).ok
    guard.release(connect(bob))
    guard = Guard(DOMAIN, lambda: Access.from_state(state, DOMAIN), tnode.genesis.authority)
    commit(tnode, proof(bob, "tx-equivocation", a, b))
    v = connect(alice)
    assert (v.ok, v.code, v.reason) == (False, NOT_AUTHORIZED, "banned")
    assert connect(bob).ok
    assert not guard.may(alice.id.hex(), f"tl/{DOMAIN}/tx", "publish")
    creds = {d.id: broker_auth.mqtt_password(d.priv, DOMAIN, d.id) for d in (alice, bob)}
    ex = export_mosquitto(tmp_path / "mq", DOMAIN, Access.from_state(state, DOMAIN), creds,
                          None)
    assert ex.skipped[alice.id.hex()] == "banned (docs/TRUST.md)"
    assert ex.users == [bob.id.hex()]
    assert alice.id.hex() not in (tmp_path / "mq" / "passwd").read_text()


def test_the_owner_restores_a_banned_device_by_recovering_its_key(tmp_path: Path) -> None:
    from tests.support.idtest import World

    w = World(tmp_path / "claimed", trust=True)
    try:
        w.commit(w.claim(w.sensor))
        a, b = equivocation(w.sensor)
        w.commit(a)
        w.commit(_person_tx(w, a, b))
        assert st.level_of(w.node.state, w.sensor.id) == st.BANNED
        new = Device("sensor-new-key")
        w.commit(w.recover(w.sensor, new))
        assert st.level_of(w.node.state, w.sensor.id) == st.PROBATION
        assert st.history(w.node.state, w.sensor.id)[-1][3] == "key-recovered"
        # the old key's messages still prove nothing new: the offence is spent
        with pytest.raises(errors.TLError):
            w.node.submit(_person_tx(w, a, b))
    finally:
        w.close()


def _person_tx(w, a: bytes, b: bytes) -> bytes:
    return txm.make(w.owner.private, w.owner.id, txm.TYPE_PROOF, DOMAIN, w.owner.next(), 0,
                    {1: "tx-equivocation", 2: a, 3: b})
