"""Per-sender rate limit (gateway/node/ratelimit.py) and how the service's ingress
uses it (Gateway.handle, no broker: replies are captured from _publish)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.node import ratelimit
from gateway.node.config import GatewayConfig
from gateway.node.ratelimit import RateLimited, SenderLimit
from gateway.node.service import Gateway
from shared import errors, messages, replies_host
from shared import tx as txm
from shared.reasons import RATE_LIMITED, RETRYABLE
from tests.support.gwtest import Device


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def spend(lim: SenderLimit, sender: bytes, n: int) -> int:
    """Take up to n tokens the way the service does; how many were allowed."""
    ok = 0
    for _ in range(n):
        try:
            lim.check(sender)
        except RateLimited:
            continue
        lim.take(sender)
        ok += 1
    return ok


def test_bucket_burst_then_rate() -> None:
    clock = Clock()
    lim = SenderLimit(rate=10, burst=5, clock=clock)
    a, b = b"a" * 16, b"b" * 16
    assert spend(lim, a, 20) == 5
    assert lim.refused == 15
    with pytest.raises(RateLimited) as ei:
        lim.check(a)
    assert ei.value.reason == RATE_LIMITED and RATE_LIMITED in RETRYABLE
    assert spend(lim, b, 3) == 3  # another sender has its own bucket
    clock.now += 0.35  # 3.5 tokens refilled
    assert spend(lim, a, 10) == 3
    clock.now += 60  # never more than the burst
    assert spend(lim, a, 10) == 5


def test_off_and_exempt() -> None:
    clock = Clock()
    assert spend(SenderLimit(0, 1, clock=clock), b"a" * 16, 1000) == 1000
    lim = SenderLimit(1, 1, exempt=[b"x" * 16], clock=clock)
    assert spend(lim, b"x" * 16, 1000) == 1000
    assert spend(lim, b"a" * 16, 1000) == 1


def test_table_drops_refilled_senders(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ratelimit, "PRUNE_AT", 8)
    clock = Clock()
    lim = SenderLimit(rate=1, burst=2, clock=clock)
    for i in range(7):
        lim.take(bytes([i]) * 16)
    clock.now += 5  # all refilled
    lim.take(b"\xff" * 16)
    assert len(lim) == 1


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[tuple[Gateway, Clock, list[bytes]]]:
    """A Gateway (not started: no broker) limited to 1 tx/s, burst 3, on a
    fake clock; the replies it would publish are collected."""
    cfg = GatewayConfig(domain="demo", data_dir=tmp_path / "gw", rate_limit_tps=1,
                        rate_limit_burst=3)
    gw = Gateway(cfg, freeze_gc=False)
    clock = Clock()
    gw.limit.clock = clock
    out: list[dict] = []  # the replies as a device reads them (sealed rejections opened)
    key = gw.led.genesis.authority
    gw._publish = lambda topic, payload, retain=False: out.append(  # type: ignore
        replies_host.open_reply(payload, key))
    try:
        yield gw, clock, out
    finally:
        gw._writer.shutdown()
        gw.market.close()
        gw.reader.close()
        gw.led.store.close()


def reasons(out: list[dict]) -> list[str]:
    return [m[messages.M_REASON] for m in out]


def test_service_refuses_a_sender_over_its_limit(gateway) -> None:
    gw, clock, out = gateway
    flood, other = Device("flood"), Device("other")
    msgs = [flood.register()] + [flood.reading(i) for i in range(5)]
    admitted = [gw.handle(m) for m in msgs]
    assert admitted[:3] == [txm.tx_id(m) for m in msgs[:3]]  # the burst
    assert admitted[3:] == [None, None, None]
    assert reasons(out) == [RATE_LIMITED] * 3
    assert gw.handle(msgs[1]) == txm.tx_id(msgs[1])  # a pending copy is no new work
    assert gw.handle(other.register()) is not None  # others are not affected
    clock.now += 1.0
    assert gw.handle(msgs[3]) == txm.tx_id(msgs[3])  # retried after a second: admitted
    assert gw.handle(msgs[4]) is None and reasons(out)[-1] == RATE_LIMITED


def test_forged_messages_do_not_drain_a_bucket(gateway) -> None:
    """Messages under a device's id that fail the signature check take no
    token: the device keeps its whole burst."""
    gw, clock, out = gateway
    victim, forger = Device("victim"), Device("forger")
    assert gw.handle(victim.register()) is not None  # 1 of 3 tokens
    for i in range(20):
        forged = txm.make(forger.priv, victim.id, txm.TYPE_READING, "demo", 100 + i, 0,
                          {1: i, 2: 0})
        assert gw.handle(forged) is None
    assert set(reasons(out)) == {errors.SignatureError.reason}
    assert gw.handle(victim.reading(1)) is not None
    assert gw.handle(victim.reading(2)) is not None



def test_a_rate_limited_seq_keeps_its_place(gateway) -> None:
    """A seq refused as rate-limited holds the sender's later seqs (retryable,
    detail `held`) until it is admitted: sent again after them, it would
    otherwise come back as a replay, lost."""
    gw, clock, out = gateway
    dev = Device("board")
    msgs = [dev.register()] + [dev.reading(i) for i in range(4)]
    assert all(gw.handle(m) is not None for m in msgs[:3])  # the burst
    assert gw.handle(msgs[3]) is None and reasons(out)[-1] == RATE_LIMITED
    clock.now += 1.0  # a token again
    assert gw.handle(msgs[4]) is None  # the later seq waits for the refused one
    last = out[-1]
    assert (last[messages.M_REASON], last[messages.M_DETAIL]) == (RATE_LIMITED, "held")
    assert gw.handle(msgs[3]) == txm.tx_id(msgs[3])
    clock.now += 1.0
    assert gw.handle(msgs[4]) == txm.tx_id(msgs[4])
