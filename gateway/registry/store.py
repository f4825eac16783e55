"""Registry storage: its own SQLite file (`<data dir>/registry.db`, WAL).

Schema (SCHEMA below):
    meta(key PK, value)             schema, domain, genesis digest
    blocks(height PK, hash UNIQUE, time, n_txs, header)
    txs(id UNIQUE, height, idx, sender, seq, type, status, reason, events, message)
    manufacturers(id PK, pubkey, name, last_seq, height, tx_id)      } state after
    devices(id PK, pubkey UNIQUE, manufacturer, model, serial UNIQUE, } the head
            manufactured, warranty_end, height, tx_id)                 } block
    attempts(tx_id PK, height, idx, manufacturer, device_id, device_pubkey,
             model, serial, conflict_id, conflict, reason)   refused duplicates
    mempool(n PK AUTOINCREMENT, id UNIQUE, sender, seq, type, message, received)

`target` and `nonce` are only in the header bytes: they reach 2^64-1, over
SQLite's signed 64-bit INTEGER.

`commit_block` writes a block, its txs and receipts, its state diff and
attempts, and removes its txs (and the dropped ones) from the mempool, in
ONE transaction (BEGIN IMMEDIATE, synchronous=FULL): after a crash the
registry is at the last whole block. It checks that the block extends the
stored head inside that transaction, so several processes may mine on one
data dir: the loser gets RegistryError(stale) and mines again on the new head.

Readers open with `readonly=True` (a mode=ro URI); WAL lets them read the
last committed block while a writer appends. Every lookup is one SELECT
(joins included), so it always sees one consistent block.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from gateway.db import chain_tables as tables
from gateway.db import sqlite_db
from gateway.node.mempool import MempoolFull
from gateway.registry.chain import (
    Attempt,
    DeviceEntry,
    Manufacturer,
    RegistryBlock,
    RegistryRecord,
    RegistryState,
    decode_header,
)
from gateway.registry.params import RegistryError
from shared import cbor

SCHEMA_VERSION = 1
SCHEMA = ("\n" + tables.META_TABLE + tables.BLOCKS_TABLE + "\n);\n" + tables.TXS_TABLE + """\
CREATE TABLE IF NOT EXISTS manufacturers (
    id BLOB PRIMARY KEY,
    pubkey BLOB NOT NULL,
    name TEXT NOT NULL,
    last_seq INTEGER NOT NULL,
    height INTEGER NOT NULL,
    tx_id BLOB NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS devices (
    id BLOB PRIMARY KEY,
    pubkey BLOB NOT NULL UNIQUE,
    manufacturer BLOB NOT NULL,
    model TEXT NOT NULL,
    serial TEXT NOT NULL UNIQUE,
    manufactured INTEGER NOT NULL,
    warranty_end INTEGER NOT NULL,
    height INTEGER NOT NULL,
    tx_id BLOB NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS attempts (
    tx_id BLOB PRIMARY KEY,
    height INTEGER NOT NULL,
    idx INTEGER NOT NULL,
    manufacturer BLOB NOT NULL,
    device_id BLOB NOT NULL,
    device_pubkey BLOB NOT NULL,
    model TEXT NOT NULL,
    serial TEXT NOT NULL,
    conflict_id BLOB NOT NULL,
    conflict TEXT NOT NULL,
    reason TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS attempts_device ON attempts (device_id);
CREATE INDEX IF NOT EXISTS attempts_conflict ON attempts (conflict_id);
CREATE TABLE IF NOT EXISTS mempool (
    n INTEGER PRIMARY KEY AUTOINCREMENT,
    id BLOB NOT NULL UNIQUE,
    sender BLOB NOT NULL,
    seq INTEGER NOT NULL,
    type INTEGER NOT NULL,
    message BLOB NOT NULL,
    received INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS mempool_sender ON mempool (sender, seq);
CREATE INDEX IF NOT EXISTS txs_sender ON txs (sender, seq);
""")
_MFR_UPSERT = ("INSERT INTO manufacturers (id, pubkey, name, last_seq, height, tx_id) "
               "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET "
               "last_seq = excluded.last_seq")
_REC_SELECT = ("SELECT d.id, d.pubkey, d.manufacturer, m.name, d.model, d.serial, "
               "d.manufactured, d.warranty_end, d.height, d.tx_id "
               "FROM devices d JOIN manufacturers m ON m.id = d.manufacturer ")
_ATT_SELECT = ("SELECT a.tx_id, a.height, a.idx, a.manufacturer, m.name, a.device_id, "
               "a.device_pubkey, a.model, a.serial, a.conflict_id, a.conflict, a.reason "
               "FROM attempts a JOIN manufacturers m ON m.id = a.manufacturer ")
STALE = "stale"


@dataclass(frozen=True)
class RegistryBlockRecord(tables.StoredBlock):

    @cached_property
    def fields(self) -> dict[str, Any]:
        return decode_header(self.header_bytes)

    @property
    def target(self) -> int:
        return self.fields["target"]


class RegistryStore(tables.ChainTables[RegistryBlockRecord],
                    block_cols="height, hash, time, n_txs, header",
                    record=RegistryBlockRecord, error=RegistryError):
    def __init__(self, path: Path | str, *, readonly: bool = False) -> None:
        super().__init__(path, readonly)
        try:
            # several miners may share one data dir: writers wait longer for the lock
            self._db = sqlite_db.connect(self.path, SCHEMA, readonly=readonly,
                                         busy_ms=5000 if readonly else 10000)
        except FileNotFoundError:
            raise RegistryError("not-initialized",
                                f"no registry database at {self.path}") from None

    # ---- writing ---------------------------------------------------------------

    def commit_block(self, b: RegistryBlock, remove: Iterable[bytes] = (),
                     meta: dict[str, Any] | None = None) -> None:
        """Write block `b` (extending the head) and drop `remove` from the
        mempool, atomically. RegistryError(stale) if the head moved."""
        self._check_writable()
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            head = self._head_before(b.height)
            if head is not None and (b.height != head.height + 1
                                     or b.fields["prev_hash"] != head.hash):
                raise RegistryError(STALE, "height %d does not extend head %d"
                                    % (b.height, head.height))
            self._write_meta(meta)
            self._insert(b, remove)
            db.execute("COMMIT")
        except BaseException as e:
            sqlite_db.rollback(db, e)
            raise

    def _insert(self, b: RegistryBlock, remove: Iterable[bytes]) -> None:
        """Write block `b`, its txs, receipts, state diff and attempts; drop
        `remove` from the mempool (inside the caller's transaction)."""
        db = self._db
        ex = b.ex
        db.execute("INSERT INTO blocks (height, hash, time, n_txs, header) "
                   "VALUES (?, ?, ?, ?, ?)",
                   (b.height, b.hash, b.time, len(ex.txs), b.header_bytes))
        db.executemany("INSERT INTO txs (%s) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                       % tables.TX_COLS,
                       [(t.id, b.height, i, t.sender, t.seq, t.type, r.status, r.reason,
                         cbor.dumps(r.events), t.message)
                        for i, (t, r) in enumerate(zip(ex.txs, ex.receipts, strict=True))])
        db.executemany(_MFR_UPSERT, [(i, m.pubkey, m.name, m.last_seq, m.height, m.tx_id)
                                     for i, m in ex.overlay.mfrs.items()])
        db.executemany("INSERT INTO devices (id, pubkey, manufacturer, model, serial, "
                       "manufactured, warranty_end, height, tx_id) "
                       "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                       [(i, d.pubkey, d.manufacturer, d.model, d.serial, d.manufactured,
                         d.warranty_end, d.height, d.tx_id)
                        for i, d in ex.overlay.devices.items()])
        db.executemany("INSERT INTO attempts (tx_id, height, idx, manufacturer, device_id, "
                       "device_pubkey, model, serial, conflict_id, conflict, reason) "
                       "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                       [(a.tx_id, a.height, a.idx, a.manufacturer_id, a.device_id,
                         a.device_pubkey, a.model, a.serial, a.conflict_id, a.conflict,
                         a.reason) for a in ex.attempts])
        db.executemany("DELETE FROM mempool WHERE id = ?", [(i,) for i in remove])

    def switch(self, fork: int, blocks: list[RegistryBlock],
               back: Iterable[tuple[bytes, bytes, int, int, bytes]], received: int
               ) -> list[tuple[bytes, list[bytes]]]:
        """Make `blocks` (linked, from height fork+1) the chain after block
        `fork`, in ONE transaction: blocks above `fork` are removed with their
        txs, records and attempts, manufacturers' last_seq recomputed from
        the txs that stay; the new blocks are written, their txs leave the
        mempool, and `back` ((id, sender, seq, type, message) of the removed
        blocks' txs the new ones lack) enter it. Returns the removed blocks as
        (header bytes, tx messages), lowest first. RegistryError(stale) if
        block `fork` is not on the stored chain or the head moved."""
        self._check_writable()
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            head = self.head()
            if head is None or head.height < fork or (
                    blocks and db.execute("SELECT hash FROM blocks WHERE height = ?",
                                          (fork,)).fetchone()[0] != blocks[0].fields["prev_hash"]):
                raise RegistryError(STALE, "block %d is not below the head" % fork)
            removed = []
            for blk in self.iter_blocks(fork + 1):
                removed.append((blk.header_bytes, [r.message for r in self.block_txs(blk.height)]))
            if removed:
                senders = [r[0] for r in db.execute(
                    "SELECT DISTINCT sender FROM txs WHERE height > ?", (fork,))]
                for table in ("blocks", "txs", "attempts", "devices", "manufacturers"):
                    db.execute("DELETE FROM %s WHERE height > ?" % table, (fork,))
                db.executemany("UPDATE manufacturers SET last_seq = (SELECT MAX(seq) FROM txs "
                               "WHERE txs.sender = manufacturers.id) WHERE id = ?",
                               [(i,) for i in senders])
            for b in blocks:
                self._insert(b, [t.id for t in b.ex.txs])
            db.executemany("INSERT OR IGNORE INTO mempool (id, sender, seq, type, message, "
                           "received) VALUES (?, ?, ?, ?, ?, ?)",
                           [(*row, received) for row in back])
            db.execute("COMMIT")
        except BaseException as e:
            sqlite_db.rollback(db, e)
            raise
        return removed

    def add_pending(self, tx_id: bytes, sender: bytes, seq: int, type_: int, message: bytes,
                    received: int, capacity: int) -> bool:
        """Queue a validated tx; False if it is already queued. Raises
        MempoolFull (reason mempool-full) at `capacity`."""
        self._check_writable()
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            if db.execute("SELECT 1 FROM mempool WHERE id = ?", (tx_id,)).fetchone():
                db.execute("COMMIT")
                return False
            if self.pending_count() >= capacity:
                raise MempoolFull("%d transactions pending" % capacity)
            db.execute("INSERT INTO mempool (id, sender, seq, type, message, received) "
                       "VALUES (?, ?, ?, ?, ?, ?)", (tx_id, sender, seq, type_, message,
                                                     received))
            db.execute("COMMIT")
        except BaseException as e:
            sqlite_db.rollback(db, e)
            raise
        return True

    def drop_pending(self, ids: Iterable[bytes]) -> None:
        self._check_writable()
        with self._db:
            self._db.executemany("DELETE FROM mempool WHERE id = ?", [(i,) for i in ids])

    # ---- mempool reads -----------------------------------------------------------

    def pending(self, limit: int) -> list[tuple[bytes, bytes]]:
        """(tx id, message) in arrival order."""
        cur = self._db.execute("SELECT id, message FROM mempool ORDER BY n LIMIT ?", (limit,))
        return [(r[0], r[1]) for r in cur]

    def pending_count(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM mempool").fetchone()[0]

    def is_pending(self, tx_id: bytes) -> bool:
        return self._db.execute("SELECT 1 FROM mempool WHERE id = ?",
                                (tx_id,)).fetchone() is not None

    def pending_seq(self, sender: bytes) -> int | None:
        return self._db.execute("SELECT MAX(seq) FROM mempool WHERE sender = ?",
                                (sender,)).fetchone()[0]

    def pending_messages(self, sender: bytes, type_: int) -> list[bytes]:
        cur = self._db.execute("SELECT message FROM mempool WHERE sender = ? AND type = ? "
                               "ORDER BY n", (sender, type_))
        return [r[0] for r in cur]

    # ---- chain reads -------------------------------------------------------------

    def block_time(self, height: int) -> int:
        row = self._db.execute("SELECT time FROM blocks WHERE height = ?", (height,)).fetchone()
        if row is None:
            raise RegistryError("missing-block", "height %d" % height)
        return row[0]

    def counts(self) -> dict[str, int]:
        q = self._db.execute
        return {t: q("SELECT COUNT(*) FROM %s" % t).fetchone()[0]
                for t in ("blocks", "txs", "manufacturers", "devices", "attempts", "mempool")}

    # ---- state -------------------------------------------------------------------

    def manufacturers(self) -> dict[bytes, Manufacturer]:
        cur = self._db.execute("SELECT id, pubkey, name, last_seq, height, tx_id "
                               "FROM manufacturers")
        return {r[0]: Manufacturer(*r[1:]) for r in cur}

    def devices(self) -> dict[bytes, DeviceEntry]:
        cur = self._db.execute("SELECT id, pubkey, manufacturer, model, serial, manufactured, "
                               "warranty_end, height, tx_id FROM devices")
        return {r[0]: DeviceEntry(*r[1:]) for r in cur}

    def all_attempts(self) -> list[Attempt]:
        cur = self._db.execute(_ATT_SELECT + "ORDER BY a.height, a.idx")
        return [Attempt(*r) for r in cur]

    def load(self) -> tuple[RegistryBlockRecord | None, RegistryState]:
        """The head block and the state after it, read in one snapshot."""
        db = self._db
        db.execute("BEGIN")
        try:
            head = self.head()
            state = RegistryState(self.manufacturers(), self.devices())
        finally:
            db.execute("COMMIT")
        return head, state

    def state_at(self, height: int) -> RegistryState:
        """The state after block `height` of the stored chain (a fork point),
        read in one snapshot: records registered up to it, manufacturers'
        last_seq from their txs up to it."""
        db = self._db
        db.execute("BEGIN")
        try:
            mfrs = {r[0]: Manufacturer(r[1], r[2], r[3], r[4], r[5]) for r in db.execute(
                "SELECT m.id, m.pubkey, m.name, (SELECT MAX(seq) FROM txs t WHERE t.sender = m.id "
                "AND t.height <= ?), m.height, m.tx_id FROM manufacturers m WHERE m.height <= ?",
                (height, height))}
            devs = {r[0]: DeviceEntry(*r[1:]) for r in db.execute(
                "SELECT id, pubkey, manufacturer, model, serial, manufactured, warranty_end, "
                "height, tx_id FROM devices WHERE height <= ?", (height,))}
        finally:
            db.execute("COMMIT")
        return RegistryState(mfrs, devs)

    # ---- lookups -----------------------------------------------------------------

    def record_by_id(self, device_id: bytes) -> RegistryRecord | None:
        row = self._db.execute(_REC_SELECT + "WHERE d.id = ?", (device_id,)).fetchone()
        return RegistryRecord(*row) if row else None

    def record_by_pubkey(self, pubkey: bytes) -> RegistryRecord | None:
        row = self._db.execute(_REC_SELECT + "WHERE d.pubkey = ?", (pubkey,)).fetchone()
        return RegistryRecord(*row) if row else None

    def attempts(self, device_id: bytes) -> list[Attempt]:
        cur = self._db.execute(_ATT_SELECT + "WHERE a.device_id = ? OR a.conflict_id = ? "
                               "ORDER BY a.height, a.idx", (device_id, device_id))
        return [Attempt(*r) for r in cur]

    def manufacturer(self, mfr_id: bytes) -> Manufacturer | None:
        row = self._db.execute("SELECT pubkey, name, last_seq, height, tx_id "
                               "FROM manufacturers WHERE id = ?", (mfr_id,)).fetchone()
        return Manufacturer(*row) if row else None
