"""Stream store: verified readings, append-only history, batch verdicts,
persistence and bounds (gateway/market/node/streams.py)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway.market.node.streams import StreamError, StreamStore
from gateway.market.node.streams import StreamVerdict as Verdict
from shared import cbor, cose, errors, merkle, p256, stream, streamroot
from shared import tx as txm

A = bytes(range(16))  # an agreement id
B = bytes(range(16, 32))  # another one


@dataclass(frozen=True)
class Supplier:
    priv: bytes
    pub: bytes

    @classmethod
    def new(cls) -> Supplier:
        return cls(*p256.keygen())

    @property
    def id(self) -> bytes:
        return txm.device_id(self.pub)

    def reading(self, index: int, value: int, scale: int = -2, agreement: bytes = A) -> bytes:
        return stream.reading(self.priv, self.id, agreement, index, value, scale)


@pytest.fixture(scope="module")
def sup() -> Supplier:
    return Supplier.new()


@pytest.fixture(scope="module")
def other() -> Supplier:
    return Supplier.new()


@pytest.fixture
def store() -> Iterator[StreamStore]:
    s = StreamStore(None)
    yield s
    s.close()


def fill(store: StreamStore, sup: Supplier, values: list[int], first: int = 0,
         scale: int = -2) -> list[bytes]:
    msgs = [sup.reading(first + i, v, scale) for i, v in enumerate(values)]
    for i, m in enumerate(msgs):
        assert store.add(A, sup.pub, m, 1000.0 + i) == first + i
    return msgs


def test_add_and_read_back(store: StreamStore, sup: Supplier) -> None:
    msgs = fill(store, sup, [2150, 2160, 2171])
    assert store.count(A) == 3 and store.count(B) == 0
    assert store.readings(A) == [(0, 2150, -2), (1, 2160, -2), (2, 2171, -2)]
    assert store.readings(A, start=1, limit=1) == [(1, 2160, -2)]
    assert store.readings(B) == []
    assert store.readings(A, start=-5, limit=2) == store.readings(A)[:2]
    assert store.readings(A, start=2**64, limit=2**64) == []
    assert store.messages(A, 0, 3) == msgs
    assert store.messages(A, 1, 10) == msgs[1:]


def test_tampered_reading_refused(store: StreamStore, sup: Supplier) -> None:
    s1 = cose.parse1(sup.reading(0, 2150))
    forged_payload = cbor.dumps({1: A, 2: 0, 3: 9999, 4: -2})
    forged = cbor.dumps(cbor.Tag(18, [s1.protected, {}, forged_payload, s1.signature]))
    with pytest.raises(errors.SignatureError) as e:
        store.add(A, sup.pub, forged, 0.0)
    assert e.value.reason == "bad-signature"
    assert store.count(A) == 0


def test_reading_by_another_key_refused(store: StreamStore, sup: Supplier,
                                        other: Supplier) -> None:
    with pytest.raises(errors.SignatureError) as e:
        store.add(A, sup.pub, other.reading(0, 1), 0.0)
    assert e.value.reason == "bad-signature"
    assert store.count(A) == 0


def test_wrong_agreement_refused(store: StreamStore, sup: Supplier) -> None:
    with pytest.raises(StreamError) as e:
        store.add(A, sup.pub, sup.reading(0, 1, agreement=B), 0.0)
    assert e.value.reason == "wrong-agreement"
    assert isinstance(e.value, errors.TLError)
    assert store.count(A) == store.count(B) == 0


def test_malformed_input_keeps_shared_error_types(store: StreamStore, sup: Supplier) -> None:
    with pytest.raises(errors.DecodeError) as e:
        store.add(A, sup.pub, b"\xff\x00", 0.0)
    assert e.value.reason == "bad-cbor"
    with pytest.raises(errors.CoseError) as e:
        store.add(A, sup.pub, cbor.dumps([1, 2, 3]), 0.0)
    assert e.value.reason == "bad-cose"
    not_a_reading = cose.sign1(sup.priv, cbor.dumps({1: A, 2: 0}), sup.id)
    with pytest.raises(errors.TxError) as e:
        store.add(A, sup.pub, not_a_reading, 0.0)
    assert (e.value.reason, e.value.detail) == ("bad-tx", "bad-reading")
    with pytest.raises(errors.TooLarge) as e:
        store.add(A, sup.pub, bytes(cbor.MAX_SIZE + 1), 0.0)
    assert e.value.reason == "too-large"
    assert store.count(A) == 0


def test_conflict_keeps_the_first(store: StreamStore, sup: Supplier) -> None:
    first = sup.reading(0, 2150)
    assert store.add(A, sup.pub, first, 1.0) == 0
    with pytest.raises(StreamError) as e:
        store.add(A, sup.pub, sup.reading(0, 3000), 2.0)
    assert e.value.reason == "conflict"
    assert store.readings(A) == [(0, 2150, -2)]
    assert store.messages(A, 0, 1) == [first]


def test_duplicate_is_idempotent(store: StreamStore, sup: Supplier) -> None:
    m = sup.reading(5, 42)
    assert store.add(A, sup.pub, m, 1.0) == 5
    assert store.add(A, sup.pub, m, 2.0) == 5
    assert store.readings(A) == [(5, 42, -2)]


def test_check_batch_ok(store: StreamStore, sup: Supplier) -> None:
    msgs = fill(store, sup, [2150, 2160, 2171, 2100, 9, 10])
    batch = streamroot.Batch()  # the root as a board computes it, incrementally
    for m in msgs[:4]:
        batch.add(m)
    assert batch.root() == merkle.root(msgs[:4])
    assert store.check_batch(A, 0, 4, batch.root()) == Verdict(True, "", 2145, -2)
    assert store.check_batch(A, 4, 2, merkle.root(msgs[4:])) == Verdict(True, "", 9, -2)
    assert store.check_batch(A, 2, 1, merkle.root(msgs[2:3])) == Verdict(True, "", 2171, -2)


def test_check_batch_mean_floors_negative_values(store: StreamStore, sup: Supplier) -> None:
    msgs = fill(store, sup, [-1, -2])
    assert store.check_batch(A, 0, 2, merkle.root(msgs)) == Verdict(True, "", -2, -2)


def test_check_batch_missing_readings(store: StreamStore, sup: Supplier) -> None:
    msgs = fill(store, sup, [1, 2, 3])
    store.add(A, sup.pub, sup.reading(4, 5), 0.0)  # index 3 never arrived
    missing = Verdict(False, "missing-readings", 0, 0)
    assert store.check_batch(A, 0, 5, merkle.root(msgs)) == missing
    assert store.check_batch(A, 2, 2, merkle.root(msgs[2:])) == missing
    assert store.check_batch(B, 0, 3, merkle.root(msgs)) == missing
    assert store.check_batch(A, 10**6, 3, merkle.root(msgs)) == missing  # beyond the bound
    assert store.messages(A, 0, 5) == msgs + [sup.reading(4, 5)]


def test_check_batch_mixed_scale(store: StreamStore, sup: Supplier) -> None:
    msgs = fill(store, sup, [1, 2]) + fill(store, sup, [3], first=2, scale=-1)
    assert store.check_batch(A, 0, 3, merkle.root(msgs)) == Verdict(False, "mixed-scale", 0, 0)
    assert store.check_batch(A, 0, 2, merkle.root(msgs[:2])).ok


def test_check_batch_root_mismatch(store: StreamStore, sup: Supplier) -> None:
    msgs = fill(store, sup, [1, 2, 3])
    mismatch = Verdict(False, "root-mismatch", 0, 0)
    assert store.check_batch(A, 0, 3, merkle.root(msgs[::-1])) == mismatch
    assert store.check_batch(A, 0, 3, merkle.root(msgs[:2])) == mismatch
    assert store.check_batch(A, 0, 3, bytes(32)) == mismatch
    assert store.check_batch(A, 0, 3, merkle.root(msgs)).ok


@pytest.mark.parametrize(("first", "count"), [(0, 0), (0, -1), (-1, 2), (True, 1), (0, 1.0)])
def test_check_batch_bad_arguments(store: StreamStore, first: int, count: int) -> None:
    with pytest.raises(StreamError) as e:
        store.check_batch(A, first, count, bytes(32))
    assert e.value.reason == "bad-batch"


def test_value_outside_sqlite_integer_refused(store: StreamStore, sup: Supplier) -> None:
    for v in (2**63, -(2**63) - 1):
        with pytest.raises(StreamError) as e:
            store.add(A, sup.pub, sup.reading(0, v), 0.0)
        assert e.value.reason == "value-range"
    fill(store, sup, [2**63 - 1, -(2**63)])
    assert [r[1] for r in store.readings(A)] == [2**63 - 1, -(2**63)]
    msgs = store.messages(A, 0, 2)
    assert store.check_batch(A, 0, 2, merkle.root(msgs)) == Verdict(True, "", -1, -2)


def test_full_store_refuses_beyond_the_bound(sup: Supplier) -> None:
    s = StreamStore(None, max_per_agreement=3)
    try:
        fill(s, sup, [1, 2, 3])
        for idx in (3, 2**64 - 1):
            with pytest.raises(StreamError) as e:
                s.add(A, sup.pub, sup.reading(idx, 4), 0.0)
            assert e.value.reason == "stream-full"
        assert s.add(A, sup.pub, sup.reading(2, 3), 0.0) == 2  # a duplicate still answers
        assert s.count(A) == 3
        other = sup.reading(0, 7, agreement=B)
        assert s.add(B, sup.pub, other, 0.0) == 0  # the bound is per agreement
    finally:
        s.close()
    with pytest.raises(ValueError):
        StreamStore(None, max_per_agreement=0)


def test_forget(store: StreamStore, sup: Supplier) -> None:
    fill(store, sup, [1, 2, 3])
    store.add(B, sup.pub, sup.reading(0, 9, agreement=B), 0.0)
    assert store.forget(A) == 3
    assert store.forget(A) == 0
    assert store.count(A) == 0 and store.readings(B) == [(0, 9, -2)]


def test_persists_across_reopen(tmp_path: Path, sup: Supplier) -> None:
    path = tmp_path / "streams.db"
    s = StreamStore(path)
    db = s._db
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    msgs = fill(s, sup, [2150, 2160, 2170])
    s.close()
    s = StreamStore(str(path))
    try:
        assert s.readings(A) == [(0, 2150, -2), (1, 2160, -2), (2, 2170, -2)]
        assert s.check_batch(A, 0, 3, merkle.root(msgs)) == Verdict(True, "", 2160, -2)
        with pytest.raises(StreamError) as e:  # history survives the restart too
            s.add(A, sup.pub, sup.reading(1, 0), 0.0)
        assert e.value.reason == "conflict"
    finally:
        s.close()
