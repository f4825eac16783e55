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
