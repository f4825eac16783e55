"""The registry node on disk: submit/mine/lookup API, duplicates visible as
attempts, persistence across reopen, read-only views while a writer works,
two miners on one data dir, genesis checks, verify against tampered tables."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from gateway.node.mempool import MEMPOOL_FULL
from gateway.registry import (
    GENESIS_FILE,
    RegistryError,
    RegistryRecord,
    RegistryView,
    check_record_proof,
    open_registry,
)
from gateway.registry import (
    PublicRegistry as Registry,
)
from gateway.registry import pow as pw
from gateway.registry.params import load_genesis
from shared import errors, merkle, messages
from shared import tx as txm
from tests.support.registry_support import T0, YEAR, FakeClock, Mfr, device_pub


def did(name: str) -> bytes:
    return txm.device_id(device_pub(name))


def test_record_lifecycle(makers: Registry, acme: Mfr) -> None:
    tid = makers.submit(acme.record("d1", "SN-1", warranty_end=T0 + YEAR))
    assert makers.is_pending(tid) and makers.lookup(device_pub("d1")) is None
    assert makers.mine() == [2] and makers.mine() == []
    rec = makers.lookup(device_pub("d1"))
    assert rec == RegistryRecord(did("d1"), device_pub("d1"), acme.id, "Acme Sensors", "TH-1",
                                 "SN-1", T0, T0 + YEAR, 2, tid)
    assert makers.lookup_id(did("d1")) == rec
    assert rec.warranty_valid(T0 + 10) and not rec.warranty_valid(T0 + 2 * YEAR)
    assert makers.manufacturer(acme.id) == (acme.pub, "Acme Sensors")
    assert makers.manufacturer(did("d1")) is None
    t = makers.tx(tid)
    assert (t.height, t.status, t.reason) == (2, messages.STATUS_OK, "")
    assert not makers.is_pending(tid)


def test_submit_refusals(makers: Registry, acme: Mfr) -> None:
    def reason(msg: bytes) -> str:
        with pytest.raises(errors.TLError) as ei:
            makers.submit(msg)
        return ei.value.reason

    assert reason(b"\x00garbage") == errors.BAD_CBOR
    assert reason(acme.record("d1", "SN-1", domain="demo")) == errors.WRONG_DOMAIN
    assert reason(Mfr("rogue").record("d1", "SN-1")) == errors.UNKNOWN_DEVICE
    assert reason(Mfr("forger").record("d1", "SN-1", sender=acme.id)) == errors.BAD_SIGNATURE
    assert reason(acme.record("d1", "SN-1", seq=1)) == errors.REPLAY
    assert reason(acme.register()) == errors.ALREADY_REGISTERED
    assert reason(acme.record("d1", "SN-1", fee=3)) == errors.BAD_TX
    assert makers.pending_count() == 0


def test_idempotent_resend_and_pending_seq(makers: Registry, acme: Mfr) -> None:
    msg = acme.record("d1", "SN-1")
    tid = makers.submit(msg)
    assert makers.submit(msg) == tid and makers.pending_count() == 1
    # another message with the pending seq is a replay
    with pytest.raises(errors.TLError) as ei:
        makers.submit(acme.record("d2", "SN-2", seq=acme.seq))
    assert ei.value.reason == errors.REPLAY
    assert makers.last_seq(acme.id) == acme.seq
    makers.mine()
    assert makers.submit(msg) == tid and makers.pending_count() == 0


def test_records_right_after_a_pending_manufacturer(reg: Registry) -> None:
    m = Mfr("newco")
    reg.submit(m.register())
    reg.submit(m.record("d1", "SN-1"))
    assert reg.mine() == [1]
    assert reg.lookup_id(did("d1")).manufacturer_name == "newco"


@pytest.mark.parametrize("same_maker", [True, False])
def test_duplicate_key_visible_and_refused(makers: Registry, acme: Mfr, globex: Mfr,
                                           same_maker: bool) -> None:
    makers.submit(acme.record("d1", "SN-1"))
    makers.mine()
    original = makers.lookup_id(did("d1"))
    other = acme if same_maker else globex
    dup = makers.submit(other.record("d1", "SN-77", model="CLONE"))
    assert makers.mine() == [3]
    t = makers.tx(dup)
    assert (t.height, t.status, t.reason) == (3, messages.STATUS_FAILED,
                                              errors.ALREADY_REGISTERED)
    assert t.events == [["conflict", did("d1"), "key"]]
    assert makers.lookup_id(did("d1")) == original
    (a,) = makers.attempts(did("d1"))
    assert (a.tx_id, a.manufacturer_id, a.model, a.serial, a.conflict, a.reason) == (
        dup, other.id, "CLONE", "SN-77", "key", errors.ALREADY_REGISTERED)
    assert a.manufacturer_name == ("Acme Sensors" if same_maker else "Globex")
    assert makers.verify().ok


def test_duplicate_serial_visible_under_both_ids(makers: Registry, acme: Mfr,
                                                 globex: Mfr) -> None:
    makers.submit(acme.record("d1", "SN-1"))
    makers.submit(globex.record("d2", "SN-1"))
    makers.mine()
    assert makers.lookup_id(did("d2")) is None
    (a,) = makers.attempts(did("d1"))
    assert makers.attempts(did("d2")) == [a]
    assert (a.device_id, a.conflict_id, a.conflict) == (did("d2"), did("d1"), "serial")
    assert makers.attempts(did("nobody")) == []


def test_survives_reopen_with_pending_pool(tmp_path: Path, acme: Mfr) -> None:
    d = tmp_path / "r"
    clock = FakeClock(step=1)
    with open_registry(d, create=True, difficulty_bits=4, clock=clock) as reg:
        reg.submit(acme.register())
        reg.mine()
        reg.submit(acme.record("d1", "SN-1"))
        head = reg.head()
    with open_registry(d, clock=clock) as reg:  # create=False: must exist
        assert reg.head() == head and reg.pending_count() == 1
        assert reg.mine() == [2]
        rec = reg.lookup(device_pub("d1"))
        assert rec is not None and rec.height == 2
        assert reg.verify().ok
    with open_registry(d, create=True, difficulty_bits=0, clock=clock) as reg:
        assert reg.genesis.difficulty_bits == 4  # the stored genesis wins
        assert reg.lookup(device_pub("d1")) == rec


def test_view_reads_while_writer_open(makers: Registry, acme: Mfr) -> None:
    with RegistryView(makers.data_dir) as view:
        assert view.lookup(device_pub("d1")) is None
        makers.submit(acme.record("d1", "SN-1"))
        assert view.pending_count() == 1
        makers.mine()
        rec = view.lookup(device_pub("d1"))
        assert rec == makers.lookup(device_pub("d1")) and rec is not None
        assert view.lookup_id(did("d1")) == rec
        assert view.manufacturer(acme.id) == (acme.pub, "Acme Sensors")
        assert view.head() == makers.head()
        with pytest.raises(sqlite3.OperationalError):  # mode=ro really is read-only
            view._store._db.execute("DELETE FROM devices")


def test_view_needs_a_registry(tmp_path: Path) -> None:
    with pytest.raises(RegistryError) as ei:
        RegistryView(tmp_path)
    assert ei.value.reason == "not-initialized"
    with pytest.raises(RegistryError) as ei:
        open_registry(tmp_path)
    assert ei.value.reason == "not-initialized"


def test_genesis_mismatch_and_bad_genesis(tmp_path: Path) -> None:
    d = tmp_path / "r"
    open_registry(d, create=True, difficulty_bits=0).close()
    text = (d / GENESIS_FILE).read_text().replace("difficulty_bits = 0", "difficulty_bits = 1")
    (d / GENESIS_FILE).write_text(text)
    with pytest.raises(RegistryError) as ei:
        open_registry(d)
    assert ei.value.reason == "genesis-mismatch"
    (d / GENESIS_FILE).write_text(text.replace("retarget_blocks = 8", "retarget_blocks = -1"))
    with pytest.raises(RegistryError) as ei:
        load_genesis(d)
    assert ei.value.reason == "bad-genesis" and "retarget_blocks" in ei.value.detail
    (d / GENESIS_FILE).write_text(text + "mystery = 1\n")
    with pytest.raises(RegistryError, match="mystery"):
        load_genesis(d)


def test_two_miners_on_one_data_dir(makers: Registry, acme: Mfr, globex: Mfr) -> None:
    """A second process (here: a second Registry object) mines; the first
    catches up instead of forking, and a block built on a stale head is
    thrown away and mined again."""
    other = open_registry(makers.data_dir, clock=FakeClock(T0 + 100, step=1))
    try:
        makers.submit(acme.record("d1", "SN-1"))
        assert other.mine() == [2]
        assert makers.lookup_id(did("d1")) is not None
        # a race: `other` has built and mined block 3 when another process
        # commits its own block 3 first; `other`'s block is thrown away
        d3 = other.submit(acme.record("d3", "SN-3"))
        real_commit = other._store.commit_block
        raced: list[int] = []

        def racing_commit(b, remove=(), meta=None):  # type: ignore[no-untyped-def]
            if not raced:
                raced.append(b.height)
                makers.submit(globex.record("d4", "SN-4"))
                assert makers.mine() == [3]  # takes d3 from the shared pool as well
            return real_commit(b, remove, meta)

        other._store.commit_block = racing_commit  # type: ignore[method-assign]
        assert other.mine() == [] and raced == [3]
        assert other.tx(d3).height == 3 and other.head() == makers.head()
        assert makers.verify().ok and other.verify().ok
        assert [b.height for b in makers._store.iter_blocks()] == [0, 1, 2, 3]
    finally:
        other.close()


def test_mempool_full(tmp_path: Path, acme: Mfr) -> None:
    with open_registry(tmp_path / "r", create=True, difficulty_bits=0,
                       mempool_capacity=2) as reg:
        reg.submit(acme.register())
        reg.submit(acme.record("d1", "SN-1"))
        with pytest.raises(errors.TLError) as ei:
            reg.submit(acme.record("d2", "SN-2"))
        assert ei.value.reason == MEMPOOL_FULL
        assert reg.mine() == [1] and reg.pending_count() == 0


def test_block_size_limit_splits_blocks(tmp_path: Path, acme: Mfr) -> None:
    with open_registry(tmp_path / "r", create=True, difficulty_bits=0,
                       block_max_txs=3) as reg:
        reg.submit(acme.register())
        for i in range(6):
            reg.submit(acme.record("d%d" % i, "S%d" % i))
        assert reg.mine(max_blocks=1) == [1] and reg.pending_count() == 4
        assert reg.mine() == [2, 3]
        assert [b.n_txs for b in reg._store.iter_blocks(1)] == [3, 3, 1]
        assert reg.verify().ok


def test_stale_pending_tx_is_dropped(makers: Registry, acme: Mfr) -> None:
    """A pending tx that stopped being includable (here: its row was
    copied into the pool behind the validator's back) is dropped at mining."""
    good = makers.submit(acme.record("d1", "SN-1"))
    makers.mine()
    bad = acme.record("d2", "SN-2", seq=acme.seq)  # same seq as the committed one
    makers._store.add_pending(txm.tx_id(bad), acme.id, acme.seq, txm.TYPE_DEVICE_RECORD, bad,
                              T0, 100)
    assert makers.mine() == []
    assert [(i, e.reason) for i, e in makers.last_dropped] == [(txm.tx_id(bad),
                                                                errors.REPLAY)]
    assert makers.pending_count() == 0 and makers.tx(good) is not None


def test_proofs_for_light_nodes(makers: Registry, acme: Mfr) -> None:
    makers.submit(acme.record("d1", "SN-1"))
    tid = makers.submit(acme.record("d2", "SN-2"))
    makers.mine()
    h, got, entry = check_record_proof(makers.prove(did("d2")), did("d2"))
    assert got == did("d2") and entry.serial == "SN-2" and h["height"] == 2
    assert makers.prove(did("nobody")) is None
    hb, idx, size, path = makers.tx_proof(tid)
    root = makers.head().fields["receipts_root"]
    assert merkle.verify(messages.receipt_leaf(tid, 0, "", []), idx, size, path, root)
    assert pw.meets(makers.head().hash, makers.head().target)
    assert makers.tx_proof(bytes(32)) is None


def test_verify_catches_tampered_tables(makers: Registry, acme: Mfr, globex: Mfr) -> None:
    makers.submit(acme.record("d1", "SN-1"))
    makers.submit(globex.record("d1", "SN-2"))
    makers.mine()
    assert makers.verify().ok

    def sql(stmt: str, *params: object) -> None:
        db = sqlite3.connect(makers._store.path)
        with db:
            db.execute(stmt, params)
        db.close()

    sql("UPDATE devices SET warranty_end = warranty_end + 1")
    rep = makers.verify()
    assert (rep.error.height, rep.error.reason) == (2, "state-mismatch")
    sql("UPDATE devices SET warranty_end = warranty_end - 1")
    sql("DELETE FROM attempts")
    assert makers.verify().error.reason == "attempts-mismatch"
    sql("UPDATE txs SET status = 0, reason = '' WHERE height = 2 AND idx = 1")
    assert makers.verify().error.reason == "receipt-mismatch"


def test_view_not_blocked_by_an_open_write(makers: Registry, acme: Mfr) -> None:
    """A writer holding the database lock (mid-commit) does not block readers:
    they see the last committed block."""
    makers.submit(acme.record("d1", "SN-1"))
    makers.mine()
    writer = sqlite3.connect(makers._store.path, isolation_level=None)
    try:
        writer.execute("BEGIN IMMEDIATE")
        writer.execute("DELETE FROM devices")
        with RegistryView(makers.data_dir) as view:
            assert view.lookup(device_pub("d1")) is not None
    finally:
        writer.execute("ROLLBACK")
        writer.close()


def test_another_process_mines_while_view_open(makers: Registry, acme: Mfr) -> None:
    import subprocess
    import sys

    msg = acme.record("d1", "SN-1")
    root = Path(__file__).resolve().parents[2]
    code = ("import sys; from gateway.registry import open_registry\n"
            "r = open_registry(sys.argv[1]); r.submit(bytes.fromhex(sys.argv[2]))\n"
            "print(r.mine()); r.close()\n")
    with RegistryView(makers.data_dir) as view:
        assert view.lookup(device_pub("d1")) is None
        out = subprocess.run([sys.executable, "-c", code, str(makers.data_dir), msg.hex()],
                             cwd=root, capture_output=True, text=True, timeout=60, check=True)
        assert out.stdout.strip() == "[2]"
        assert view.lookup(device_pub("d1")).height == 2
    assert makers.lookup(device_pub("d1")) is not None
    assert makers.last_seq(acme.id) == acme.seq  # the writer catches up too
