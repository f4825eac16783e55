"""State transitions (gateway/ledger/state.py): pure, on overlays, balances conserved."""

from __future__ import annotations

import random

import pytest

from gateway.ledger import state as st
from gateway.ledger.state import DeviceRecord, Rules, State, StateOverlay
from shared import errors, merkle, messages
from shared import tx as txm
from tests.support.gwtest import Device, key, unsigned

AUTH = txm.device_id(key("authority")[1])
RULES = Rules(authority_id=AUTH)


def genesis_state(*balances: tuple[Device, int]) -> State:
    s = {d.id: DeviceRecord(d.pub, 0, b) for d, b in balances}
    s[AUTH] = DeviceRecord(key("authority")[1], 0, 0)
    return State(s)


def reading(d: Device, seq: int, fee: int = 0) -> txm.Tx:
    return unsigned(d.id, txm.TYPE_READING, seq, {1: 1, 2: 0}, fee)


def transfer(d: Device, seq: int, to: bytes, amount: int, fee: int = 0) -> txm.Tx:
    return unsigned(d.id, txm.TYPE_TRANSFER, seq, {1: to, 2: amount}, fee)


def test_register_adds_device_with_zero_balance() -> None:
    carol = Device("carol")
    s = genesis_state()
    v = StateOverlay(s)
    out = st.apply(v, unsigned(carol.id, txm.TYPE_REGISTER, 3, {1: carol.pub}), RULES)
    assert (out.status, out.reason, out.events) == (messages.STATUS_OK, "", [])
    assert v.changed == {carol.id: DeviceRecord(carol.pub, 3, 0)}
    assert carol.id not in s  # base untouched


def test_reading_updates_seq_only_and_pays_fee(alice: Device) -> None:
    s = genesis_state((alice, 100))
    v = StateOverlay(s)
    assert st.apply(v, reading(alice, 1), RULES).events == []
    assert v.get(alice.id) == DeviceRecord(alice.pub, 1, 100)
    out = st.apply(v, reading(alice, 5, fee=7), RULES)
    assert out.events == [["fee", 7]]
    assert v.get(alice.id) == DeviceRecord(alice.pub, 5, 93)
    assert v.get(AUTH).balance == 7


def test_transfer_ok(alice: Device, bob: Device) -> None:
    s = genesis_state((alice, 100), (bob, 0))
    v = StateOverlay(s)
    out = st.apply(v, transfer(alice, 1, bob.id, 60, fee=1), RULES)
    assert (out.status, out.events) == (messages.STATUS_OK, [["fee", 1], ["transfer", bob.id, 60]])
    assert v.get(alice.id).balance == 39 and v.get(bob.id).balance == 60
    assert v.get(AUTH).balance == 1
    assert v.get(bob.id).last_seq == 0


def test_transfer_insufficient_funds_consumes_seq_and_fee(alice: Device, bob: Device) -> None:
    s = genesis_state((alice, 10), (bob, 0))
    v = StateOverlay(s)
    out = st.apply(v, transfer(alice, 4, bob.id, 10, fee=1), RULES)
    assert (out.status, out.reason) == (messages.STATUS_FAILED, errors.INSUFFICIENT_FUNDS)
    assert out.events == [["fee", 1]]
    assert v.get(alice.id) == DeviceRecord(alice.pub, 4, 9)
    assert v.get(bob.id).balance == 0
    # the same seq again is a replay
    with pytest.raises(st.RuleError) as ei:
        st.apply(v, transfer(alice, 4, bob.id, 1), RULES)
    assert ei.value.reason == errors.REPLAY


def test_transfer_to_unknown_fails(alice: Device) -> None:
    v = StateOverlay(genesis_state((alice, 10)))
    out = st.apply(v, transfer(alice, 1, bytes(16), 5), RULES)
    assert (out.status, out.reason) == (messages.STATUS_FAILED, errors.UNKNOWN_DEVICE)
    assert v.get(alice.id) == DeviceRecord(alice.pub, 1, 10)
    assert bytes(16) not in v.changed


def test_transfer_to_self_and_authority_paying_fee_to_itself(alice: Device) -> None:
    s = genesis_state((alice, 10))
    v = StateOverlay(s)
    assert st.apply(v, transfer(alice, 1, alice.id, 10, fee=0), RULES).status == 0
    assert v.get(alice.id).balance == 10
    auth = s.get(AUTH)
    assert auth is not None
    s2 = State({AUTH: DeviceRecord(auth.pubkey, 0, 50)})
    v2 = StateOverlay(s2)
    st.apply(v2, unsigned(AUTH, txm.TYPE_READING, 1, {1: 0, 2: 0}, 5), RULES)
    assert v2.get(AUTH) == DeviceRecord(auth.pubkey, 1, 50)


@pytest.mark.parametrize("make,reason", [
    (lambda a, b: reading(Device("nobody"), 1), errors.UNKNOWN_DEVICE),
    (lambda a, b: reading(a, 3), errors.REPLAY),
    (lambda a, b: reading(a, 2), errors.REPLAY),
    (lambda a, b: unsigned(a.id, txm.TYPE_REGISTER, 9, {1: a.pub}), errors.ALREADY_REGISTERED),
    (lambda a, b: unsigned(a.id, txm.TYPE_REGISTER, 3, {1: a.pub}), errors.REPLAY),
    (lambda a, b: reading(a, 4, fee=11), errors.INSUFFICIENT_FUNDS),
    (lambda a, b: transfer(a, 4, b.id, 1, fee=11), errors.INSUFFICIENT_FUNDS),
])
def test_not_includable_writes_nothing(alice: Device, bob: Device, make, reason: str) -> None:
    s = State({alice.id: DeviceRecord(alice.pub, 3, 10), bob.id: DeviceRecord(bob.pub, 0, 0),
               AUTH: DeviceRecord(key("authority")[1], 0, 0)})
    v = StateOverlay(s)
    with pytest.raises(st.RuleError) as ei:
        st.apply(v, make(alice, bob), RULES)
    assert ei.value.reason == reason
    assert v.changed == {}


def test_overlay_rollback(alice: Device, bob: Device) -> None:
    s = genesis_state((alice, 10))
    v = StateOverlay(s)
    v.put(alice.id, DeviceRecord(alice.pub, 1, 9))
    v.savepoint()
    v.put(alice.id, DeviceRecord(alice.pub, 1, 0))
    v.put(bob.id, DeviceRecord(bob.pub, 0, 9))
    v.rollback()
    assert v.changed == {alice.id: DeviceRecord(alice.pub, 1, 9)}
    assert v.get(bob.id) is None


def test_state_root_reference_and_cache() -> None:
    """A chain begun before the state tree (SORTED) keeps its RFC 6962 root."""
    assert State(commitment=st.SORTED).root() == merkle.EMPTY_ROOT == st.state_root({})
    devs = [Device("d%d" % i) for i in range(20)]
    s = State({d.id: DeviceRecord(d.pub, i, 10 * i) for i, d in enumerate(devs)},
              commitment=st.SORTED)
    leaves = [st.leaf(i, s.devices[i]) for i in sorted(s.devices)]
    assert s.root() == merkle.root(leaves) == st.state_root(s.devices)
    v = StateOverlay(s)
    st.apply(v, transfer(devs[3], 99, devs[4].id, 5), RULES)
    carol = Device("carol")
    st.apply(v, unsigned(carol.id, txm.TYPE_REGISTER, 1, {1: carol.pub}), RULES)
    merged = {**s.devices, **v.changed}
    assert v.root() == st.state_root(merged) != s.root()
    assert v.nodes is None
    s.apply_diff(v.changed)
    assert s.devices == merged
    assert s.root() == st.state_root(merged)
    assert [i for i, _ in s.items()] == sorted(merged)


def test_tree_root_follows_blocks() -> None:
    devs = [Device("d%d" % i) for i in range(20)]
    s = State({d.id: DeviceRecord(d.pub, i, 10 * i) for i, d in enumerate(devs)})
    assert s.root() == st.tree_root(s.devices) != st.state_root(s.devices)
    v = StateOverlay(s)
    st.apply(v, transfer(devs[3], 99, devs[4].id, 5), RULES)
    carol = Device("carol")
    st.apply(v, unsigned(carol.id, txm.TYPE_REGISTER, 1, {1: carol.pub}), RULES)
    merged = {**s.devices, **v.changed}
    assert v.root() == st.tree_root(merged) != s.root()
    s.apply_diff(v.changed)
    assert s.root() == st.tree_root(merged)


def test_conservation_over_many_random_transfers() -> None:
    rng = random.Random(1234)
    devs = [Device("r%d" % i) for i in range(30)]
    s = genesis_state(*[(d, rng.randrange(0, 1000)) for d in devs])
    supply = s.total_balance()
    seqs = {d.id: 0 for d in devs}
    failed = ok = 0
    for _block in range(20):
        v = StateOverlay(s)
        for _ in range(100):
            a, b = rng.choice(devs), rng.choice(devs)
            seqs[a.id] += rng.randrange(1, 3)
            fee = rng.choice((0, 0, 1, 2))
            rec = v.get(a.id)
            assert rec is not None
            t = transfer(a, seqs[a.id], b.id, rng.randrange(1, 400), fee=fee)
            try:
                out = st.apply(v, t, RULES)
            except st.RuleError as e:  # fee not covered: not includable
                assert e.reason == errors.INSUFFICIENT_FUNDS and fee > rec.balance
                assert v.get(a.id) == rec
                seqs[a.id] = rec.last_seq
                continue
            assert v.get(a.id).last_seq == seqs[a.id]
            if out.status == messages.STATUS_OK:
                ok += 1
            else:
                failed += 1
            assert sum(v.get(d).balance for d in [*seqs, AUTH]) == supply
        assert v.root() == st.tree_root({**s.devices, **v.changed})
        s.apply_diff(v.changed)
        assert s.total_balance() == supply
        assert all(r.balance >= 0 for r in s.devices.values())
    assert ok > 100 and failed > 10
    assert s.root() == st.tree_root(s.devices)
