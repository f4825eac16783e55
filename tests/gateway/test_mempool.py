"""Mempool: FIFO, capacity, dedupe, pending seq and pending registrations."""

from __future__ import annotations

import pytest
from gwtest import DOMAIN, Device

from gateway import validate
from gateway.mempool import MEMPOOL_FULL, Mempool, MempoolFull
from gateway.state import DeviceRecord, State
from shared import errors


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
