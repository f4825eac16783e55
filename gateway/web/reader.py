"""The dashboard's reads of the SQLite files: the chain (chain.db) and the
market's verified stream readings (streams.db), both opened read-only.

Every query is parameterised (no value is ever formatted into SQL text) and
bounded by a LIMIT the caller cannot raise past MAX_LIMIT. A ChainReader
is used by one thread at a time: the web server runs its calls in its own
single reader thread, so a slow query delays a page, never the gateway's
event loop (which cuts the blocks).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.db import sqlite_db
from gateway.db.chain_tables import TX_COLS, TxRecord, tx_record
from gateway.db.store import BlockRecord, Store
from shared import cbor, messages
from shared import tx as txm

MAX_LIMIT = 500  # rows one request may ask for
PAYMENT_TYPES = (txm.TYPE_CONTRACT_CALL, txm.TYPE_CLOSE)
TX_ID_LEN = 32
BLOCK_HASH_LEN = 32


def clamp(limit: int) -> int:
    """A requested row count, within 1 .. MAX_LIMIT."""
    return max(1, min(int(limit), MAX_LIMIT))


@dataclass(frozen=True)
class BlockRow:
    height: int
    hash: bytes
    time: int
    n_txs: int


@dataclass(frozen=True)
class ReadingRow:
    """A committed READING: when, and its decoded body (value, scale, channel)."""

    height: int
    time: int
    tx_id: bytes
    value: int
    scale: int
    channel: int


def prefix_range(hex_prefix: str, size: int) -> tuple[bytes, bytes]:
    """The byte range [lo, hi] of the `size`-byte values whose hex starts
    with `hex_prefix` (lowercase hex, 1 .. 2*size characters)."""
    lo_hex = hex_prefix + "0" * (2 * size - len(hex_prefix))
    hi_hex = hex_prefix + "f" * (2 * size - len(hex_prefix))
    return bytes.fromhex(lo_hex), bytes.fromhex(hi_hex)


class ChainReader:
    """Read-only views of one node's chain and stream files."""

    def __init__(self, chain_db: Path, streams_db: Path | None = None) -> None:
        self.store = Store(chain_db, readonly=True)
        # a second read-only connection for the dashboard's own queries
        self.db = sqlite_db.connect(Path(chain_db), "", readonly=True)
        self.streams: sqlite3.Connection | None = None
        if streams_db is not None and Path(streams_db).exists():
            self.streams = sqlite_db.connect(Path(streams_db), "", readonly=True)

    def close(self) -> None:
        self.store.close()
        self.db.close()
        if self.streams is not None:
            self.streams.close()

    # -- blocks ---------------------------------------------------------------
    def head(self) -> BlockRecord | None:
        return self.store.head()

    def blocks(self, before: int | None, limit: int) -> list[BlockRow]:
        """Blocks at heights <= `before` (None: the head), newest first."""
        top = (1 << 62) if before is None else before
        cur = self.db.execute("SELECT height, hash, time, n_txs FROM blocks WHERE height <= ? "
                              "ORDER BY height DESC LIMIT ?", (top, clamp(limit)))
        return [BlockRow(*r) for r in cur]

    def block(self, height: int) -> BlockRecord | None:
        return self.store.get_block(height)

    def block_txs(self, height: int, limit: int) -> list[TxRecord]:
        cur = self.db.execute("SELECT %s FROM txs WHERE height = ? ORDER BY idx LIMIT ?"
                              % TX_COLS, (height, clamp(limit)))
        return [tx_record(r) for r in cur]

    def height_of_hash(self, block_hash: bytes) -> int | None:
        row = self.db.execute("SELECT height FROM blocks WHERE hash = ?",
                              (block_hash,)).fetchone()
        return row[0] if row else None

    # -- transactions ---------------------------------------------------------
    def tx(self, tx_id: bytes) -> TxRecord | None:
        return self.store.get_tx(tx_id)

    def receipt(self, tx_id: bytes) -> dict[int, Any] | None:
        """The receipt reply of a committed tx, parsed (shared/messages.py
        keys: the receipt, its block's signed header, index, size, proof)."""
        raw = self.store.get_receipt(tx_id)
        return None if raw is None else messages.parse(raw)

    # -- search ---------------------------------------------------------------
    def txs_with_prefix(self, hex_prefix: str, limit: int) -> list[tuple[bytes, int, int]]:
        """(id, height, type) of the txs whose id starts with the hex prefix."""
        lo, hi = prefix_range(hex_prefix, TX_ID_LEN)
        cur = self.db.execute("SELECT id, height, type FROM txs WHERE id >= ? AND id <= ? "
                              "ORDER BY id LIMIT ?", (lo, hi, clamp(limit)))
        return [tuple(r) for r in cur]

    def blocks_with_prefix(self, hex_prefix: str, limit: int) -> list[tuple[int, bytes]]:
        """(height, hash) of the blocks whose hash starts with the hex prefix
        (the hash index keeps this a range read)."""
        lo, hi = prefix_range(hex_prefix, BLOCK_HASH_LEN)
        cur = self.db.execute("SELECT height, hash FROM blocks WHERE hash >= ? AND hash <= ? "
                              "ORDER BY hash LIMIT ?", (lo, hi, clamp(limit)))
        return [tuple(r) for r in cur]

    # -- readings and throughput ---------------------------------------------
    def readings(self, sender: bytes, limit: int) -> list[ReadingRow]:
        """The sender's latest committed (status ok) READINGs, oldest first."""
        cur = self.db.execute(
            "SELECT t.height, b.time, t.id, t.message FROM txs t JOIN blocks b "
            "ON b.height = t.height WHERE t.sender = ? AND t.type = ? AND t.status = ? "
            "ORDER BY t.height DESC, t.idx DESC LIMIT ?",
            (sender, txm.TYPE_READING, messages.STATUS_OK, clamp(limit)))
        out = []
        for height, when, tx_id, message in cur:
            body = txm.decode(message).body
            v, s, ch = body.get(1), body.get(2, 0), body.get(3, 0)
            if isinstance(v, int) and isinstance(s, int):
                out.append(ReadingRow(height, when, tx_id, v, s, ch if isinstance(ch, int) else 0))
        out.reverse()
        return out

    def latest_readings(self) -> dict[bytes, ReadingRow]:
        """Each sender's latest committed READING."""
        out = {}
        for r in self.store.latest_of_type(txm.TYPE_READING, messages.STATUS_OK):
            blk = self.store.get_block(r.height)
            body = txm.decode(r.message).body
            v, s = body.get(1), body.get(2, 0)
            if blk is not None and isinstance(v, int) and isinstance(s, int):
                out[r.sender] = ReadingRow(r.height, blk.time, r.id, v, s, body.get(3, 0))
        return out

    def reading_senders(self, limit: int) -> list[bytes]:
        """Senders of committed READINGs (the devices that have a plot)."""
        cur = self.db.execute("SELECT DISTINCT sender FROM txs WHERE type = ? AND status = ? "
                              "LIMIT ?", (txm.TYPE_READING, messages.STATUS_OK, clamp(limit)))
        return [r[0] for r in cur]

    def payments(self, limit: int) -> list[tuple[int, int, bytes, list[Any]]]:
        """(height, time, tx id, events) of the latest market calls and closes,
        newest first: the receipts that carry payments and refunds."""
        cur = self.db.execute(
            "SELECT t.height, b.time, t.id, t.events FROM txs t JOIN blocks b "
            "ON b.height = t.height WHERE t.type IN (?, ?) AND t.status = ? "
            "ORDER BY t.height DESC, t.idx DESC LIMIT ?",
            (*PAYMENT_TYPES, messages.STATUS_OK, clamp(limit)))
        return [(h, t, i, cbor.loads(ev)) for h, t, i, ev in cur]

    # -- the market's off-chain streams --------------------------------------
    def stream_agreements(self, limit: int) -> list[tuple[bytes, int, float]]:
        """(agreement id, readings held, last received) of the verified streams."""
        if self.streams is None:
            return []
        cur = self.streams.execute("SELECT agreement, COUNT(*), MAX(received) FROM readings "
                                   "GROUP BY agreement ORDER BY MAX(received) DESC LIMIT ?",
                                   (clamp(limit),))
        return [tuple(r) for r in cur]

    def stream(self, agreement: bytes, limit: int) -> list[tuple[int, int, int, float]]:
        """(index, value, scale, received) of an agreement's latest verified
        readings, oldest first."""
        if self.streams is None:
            return []
        cur = self.streams.execute("SELECT idx, value, scale, received FROM readings "
                                   "WHERE agreement = ? ORDER BY idx DESC LIMIT ?",
                                   (agreement, clamp(limit)))
        rows = [tuple(r) for r in cur]
        rows.reverse()
        return rows
