"""Mempool: FIFO, capacity, dedupe, pending seq and pending registrations."""

from __future__ import annotations

import pytest

from gateway.ledger import validate
from gateway.ledger.state import DeviceRecord, Rules, State
from gateway.node.mempool import HOLD_S, MEMPOOL_FULL, Mempool, MempoolFull
from shared import errors
from tests.support.gwtest import DOMAIN, Device


def parsed(m: bytes):  # -> Tx
    return validate.check_stateless(m, DOMAIN)


def test_fifo_dedupe_take_done(alice: Device) -> None:
    pool = Mempool(capacity=3)
    txs = [parsed(alice.reading(i)) for i in range(3)]
    for t in txs:
        assert pool.add(t)
    assert pool.add(parsed(txs[0].message)) is False
    with pytest.raises(MempoolFull) as ei:
        pool.add(parsed(alice.reading(9)))
    assert ei.value.reason == MEMPOOL_FULL
    assert len(pool) == 3 and pool.pending_seq(alice.id) == 3
    got = pool.take(2)
    assert got == txs[:2] and len(pool) == 1
    assert txs[0].id in pool and pool.pending == 3  # in flight until done
    assert pool.add(txs[0]) is False
    pool.done(got)
    assert txs[0].id not in pool and pool.pending_seq(alice.id) == 3
    pool.done(pool.take(10))
    assert pool.pending == 0 and pool.pending_seq(alice.id) is None
    assert pool.take(5) == []


def test_admit_uses_pending_state(alice: Device) -> None:
    carol = Device("carol")
    state = State({alice.id: DeviceRecord(alice.pub, 0, 0)})
    pool = Mempool()
    assert pool.admit(parsed(carol.register()), state)
    assert pool.view(state).get(carol.id) == DeviceRecord(carol.pub, 0, 0)
    assert pool.admit(parsed(carol.reading()), state)  # before the register commits
    with pytest.raises(errors.TLError) as ei:
        pool.admit(parsed(carol.reading(5, seq=2)), state)
    assert ei.value.reason == errors.REPLAY
    reg = pool.take(1)
    pool.done(reg)  # register committed (the state would now hold carol)
    assert pool.view(state).get(carol.id) is None
    assert pool.pending_seq(carol.id) == 2  # the reading is still pending
    assert pool.admit(parsed(alice.reading()), state)
    assert pool.admit(parsed(alice.reading(seq=1)), state) is False  # duplicate


def test_a_sender_refused_as_full_keeps_its_order(alice: Device, bob: Device) -> None:
    """Refused N, the sender's N+1 is refused too (retryable) even once there
    is room, until N is admitted: N+1 first would make N a replay, lost."""
    state = State({alice.id: DeviceRecord(alice.pub, 0, 0), bob.id: DeviceRecord(bob.pub, 0, 0)})
    pool = Mempool(capacity=1)
    assert pool.admit(parsed(bob.reading()), state)
    n, n1 = parsed(alice.reading()), parsed(alice.reading())
    with pytest.raises(MempoolFull):
        pool.admit(n, state)
    pool.done(pool.take(1))  # room again
    with pytest.raises(errors.TLError) as ei:
        pool.admit(n1, state)
    assert (ei.value.reason, ei.value.detail) == (MEMPOOL_FULL, "held")
    assert pool.admit(parsed(bob.reading()), state) is True  # others are not held
    pool.done(pool.take(1))
    assert pool.admit(n, state) and pool.pending_seq(alice.id) == n.seq
    pool.done(pool.take(1))
    assert pool.admit(n1, state)


def test_a_hold_ends_when_its_seq_is_given_up(alice: Device) -> None:
    pool = Mempool(capacity=1)
    n, n1 = parsed(alice.reading()), parsed(alice.reading())
    pool.hold(alice.id, n.seq, MEMPOOL_FULL, now=100.0)
    with pytest.raises(errors.TLError):
        pool.check_held(n1, now=100.0 + HOLD_S - 1)
    pool.check_held(n, now=100.0)  # the held seq itself goes through
    pool.hold(alice.id, n.seq, MEMPOOL_FULL, now=150.0)  # refused again: held longer
    with pytest.raises(errors.TLError):
        pool.check_held(n1, now=100.0 + HOLD_S + 1)
    pool.check_held(n1, now=150.0 + HOLD_S)  # not refused since: the sender gave it up
    pool.check_held(n1, now=0.0)  # and the hold is gone


def test_the_authority_is_never_held(alice: Device, bob: Device) -> None:
    state = State({alice.id: DeviceRecord(alice.pub, 0, 0), bob.id: DeviceRecord(bob.pub, 0, 0)})
    rules = Rules(authority_id=alice.id)  # the market's operator signs as the authority
    pool = Mempool(capacity=1)
    assert pool.admit(parsed(bob.reading()), state, rules)
    n, n1 = parsed(alice.reading()), parsed(alice.reading())
    with pytest.raises(MempoolFull):
        pool.admit(n, state, rules)
    pool.done(pool.take(1))
    assert pool.admit(n1, state, rules)  # it signs a refused verdict again, under a new seq
