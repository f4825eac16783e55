"""The gateway's ingress enforces trust (gateway/trust/node.py): probation's
stricter rate, banned senders refused, equivocation filed as a proof by the
gateway itself."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.node.config import GatewayConfig
from gateway.node.service import Gateway
from gateway.trust import standing as st
from shared import errors, messages, reasons, replies_host
from shared import tx as txm
from tests.support.gwtest import Device


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make_gateway(tmp_path: Path, trust: bool) -> tuple[Gateway, Clock, list[dict]]:
    cfg = GatewayConfig(domain="demo", data_dir=tmp_path / ("gw-trust" if trust else "gw"),
                        trust=trust, probation_rate_tps=1, probation_rate_burst=3)
    gw = Gateway(cfg, freeze_gc=False)
    clock = Clock()
    gw.limit.clock = clock
    gw.trust.probation.clock = clock
    out: list[dict] = []
    key = gw.led.genesis.authority

    def publish(topic: str, payload: bytes, retain: bool = False) -> None:
        if "/rx" in topic:  # the replies as a device reads them (rejections opened)
            out.append(replies_host.open_reply(payload, key))

    gw._publish = publish  # type: ignore[method-assign]
    return gw, clock, out


def close(gw: Gateway) -> None:
    gw._writer.shutdown()
    gw.market.close()
    gw.reader.close()
    gw.led.store.close()


@pytest.fixture
def trusted_gw(tmp_path: Path) -> Iterator[tuple[Gateway, Clock, list[dict]]]:
    g = make_gateway(tmp_path, True)
    yield g
    close(g[0])


def rejections(out: list[dict]) -> list[str]:
    return [m[messages.M_REASON] for m in out if messages.M_REASON in m]


def cut(gw: Gateway) -> None:
    asyncio.run(gw._cut_block())


@pytest.mark.parametrize("trust", [True, False])
def test_probation_gets_the_stricter_rate(tmp_path: Path, trust: bool) -> None:
    gw, clock, out = make_gateway(tmp_path, trust)
    try:
        d = Device("fresh")
        msgs = [d.register()] + [d.reading(i) for i in range(5)]
        admitted = [gw.handle(m) is not None for m in msgs]
        if trust:  # a new id: probation's burst of 3, then rate-limited (retryable)
            assert admitted == [True] * 3 + [False] * 3
            assert rejections(out) == [reasons.RATE_LIMITED] * 3
            clock.now += 1.0
            assert gw.handle(msgs[3]) is not None
        else:  # without trust the normal limit (burst 300) lets all in
            assert admitted == [True] * 6
    finally:
        close(gw)


def test_gateway_files_equivocation_and_bans_the_key(trusted_gw) -> None:
    gw, clock, out = trusted_gw
    liar, honest = Device("liar"), Device("honest")
    for m in (liar.register(), honest.register(), liar.reading(100)):
        assert gw.handle(m) is not None
    cut(gw)
    second = liar.reading(200, seq=liar.seq)  # the same seq, another reading
    assert gw.handle(second) is None
    assert rejections(out)[-1] == errors.REPLAY
    pending = list(gw.pool.queued())
    assert [t.type for t in pending] == [txm.TYPE_PROOF]
    assert pending[0].sender == gw.led.genesis.authority_id
    assert gw.handle(second) is None  # seen again: filed once only
    assert len(list(gw.pool.queued())) == 1
    clock.now += 10
    cut(gw)
    assert st.level_of(gw.led.state, liar.id) == st.BANNED
    assert st.level_of(gw.led.state, honest.id) == st.PROBATION
    clock.now += 10
    assert gw.handle(liar.reading(300)) is None
    assert rejections(out)[-1] == reasons.BANNED
    assert gw.handle(honest.reading(1)) is not None


def test_two_different_pending_txs_with_one_seq(trusted_gw) -> None:
    gw, clock, out = trusted_gw
    liar = Device("liar2")
    assert gw.handle(liar.register()) is not None
    cut(gw)
    a = liar.reading(1)
    b = liar.reading(2, seq=liar.seq)
    assert gw.handle(a) is not None
    assert gw.handle(b) is None
    assert [t.type for t in gw.pool.queued()] == [txm.TYPE_READING, txm.TYPE_PROOF]
    cut(gw)
    assert st.level_of(gw.led.state, liar.id) == st.BANNED


def test_a_banned_device_may_still_rotate_its_key(tmp_path: Path) -> None:
    """The ingress refuses everything of a banned sender but its ROTATE_KEY
    (owner-approved: the way back, docs/TRUST.md)."""
    from gateway.node.ratelimit import SenderLimit
    from gateway.trust.node import Banned, TrustGate
    from tests.support.gwtest import Node, unsigned

    liar, honest = Device("liar3"), Device("honest3")
    n = Node(tmp_path / "n", {liar.pub: 5, honest.pub: 5}, trust=True)
    try:
        a, b = liar.reading(1), liar.reading(2, seq=1)
        n.submit_all([a])
        n.produce()
        n.submit_all([honest.make(txm.TYPE_PROOF, {1: "tx-equivocation", 2: a, 3: b})])
        n.produce()
        gate = TrustGate(SenderLimit(100, 300), 1, 3, enabled=True)
        with pytest.raises(Banned):
            gate.admit(unsigned(liar.id, txm.TYPE_READING, 5, {1: 1, 2: 0}), n.state)
        rotate = unsigned(liar.id, txm.TYPE_ROTATE_KEY, 5, {1: honest.pub, 2: b"x"})
        assert gate.admit(rotate, n.state) is gate.normal
        assert gate.admit(unsigned(honest.id, txm.TYPE_READING, 9, {1: 1, 2: 0}),
                          n.state) is gate.probation
        assert not TrustGate(SenderLimit(100, 300), 1, 3, enabled=False).admit(
            unsigned(liar.id, txm.TYPE_READING, 5, {1: 1, 2: 0}), n.state).rate < 100
    finally:
        n.close()


def test_refused_claims_become_a_fake_id_report(tmp_path: Path) -> None:
    """A claimant presenting a device that is not its own, again and again:
    at the FAKE_ID_CLAIMS-th refused claim the gateway files a REPORT
    fake-id-attempt against it, once."""
    from gateway.db.genesis_files import create_domain
    from gateway.identity import statements as itx
    from gateway.trust.node import FAKE_ID_CLAIMS
    from tests.support.idtest import Person

    owner, victim = Person("claimant"), Device("victim")
    create_domain(tmp_path / "gw-trust", "demo", owner=owner.pub, trust=True)
    gw, clock, out = make_gateway(tmp_path, True)
    try:
        assert gw.handle(victim.register()) is not None
        cut(gw)
        forged = itx.claim_statement(owner.private, victim.pub, "demo", owner.id)
        for i in range(FAKE_ID_CLAIMS + 2):
            claim = itx.build_claim(owner, "demo", victim.pub, forged, owner.seq + 1)
            assert gw.handle(claim) is None
            assert rejections(out)[-1] == errors.ALREADY_REGISTERED
            filed = [t for t in gw.pool.queued() if t.type == txm.TYPE_REPORT]
            assert len(filed) == (1 if i + 1 >= FAKE_ID_CLAIMS else 0)
        assert filed[0].body[1] == owner.id and filed[0].body[2] == "fake-id-attempt"
        cut(gw)
        rec = st.get(gw.led.state, owner.id)
        assert rec is not None and rec.reports_received == 1
        assert st.history(gw.led.state, owner.id)[-1][3] == "report:fake-id-attempt:w100"
    finally:
        close(gw)
