"""What the domain chain's store (gateway/db/store.py) and the public
registry's (gateway/registry/store.py) have in common: the same `meta`,
`blocks` and `txs` tables, read the same way. Each store names its block
columns and its block record."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from gateway.db.sqlite_db import Closing
from shared import cbor

# the DDL of the tables both stores have (their SCHEMA strings are built from it)
META_TABLE = """\
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value BLOB NOT NULL
) WITHOUT ROWID;
"""
BLOCKS_TABLE = """\
CREATE TABLE IF NOT EXISTS blocks (
    height INTEGER PRIMARY KEY,
    hash BLOB NOT NULL UNIQUE,
    time INTEGER NOT NULL,
    n_txs INTEGER NOT NULL,
    header BLOB NOT NULL"""  # the domain chain's adds a column: its SCHEMA closes it
TXS_TABLE = """\
CREATE TABLE IF NOT EXISTS txs (
    id BLOB NOT NULL UNIQUE,
    height INTEGER NOT NULL,
    idx INTEGER NOT NULL,
    sender BLOB NOT NULL,
    seq INTEGER NOT NULL,
    type INTEGER NOT NULL,
    status INTEGER NOT NULL,
    reason TEXT NOT NULL,
    events BLOB NOT NULL,
    message BLOB NOT NULL,
    UNIQUE (height, idx)
);
"""
TX_COLS = "id, height, idx, sender, seq, type, status, reason, events, message"
R = TypeVar("R")


@dataclass(frozen=True)
class StoredBlock:
    """A `blocks` row: the columns of both stores (the domain chain's record
    adds the signed header; each decodes its own header fields)."""

    height: int
    hash: bytes
    time: int
    n_txs: int
    header_bytes: bytes


@dataclass(frozen=True)
class TxRecord:
    id: bytes
    height: int
    idx: int
    sender: bytes
    seq: int
    type: int
    status: int
    reason: str
    events: list[Any]
    message: bytes


def tx_record(row: tuple[Any, ...]) -> TxRecord:
    """A TxRecord from a `txs` row (the same columns in both stores)."""
    r = list(row)
    r[8] = cbor.loads(r[8])
    return TxRecord(*r)


class ChainTables(Closing, Generic[R]):
    """Reads of the meta, blocks and txs tables over the connection `_db`."""

    _db: sqlite3.Connection
    readonly: bool
    BLOCK_COLS: str  # the blocks columns a block record is made of, in order
    block_record: Callable[..., R]
    error: Callable[..., Exception]  # the store's error type: (reason, detail="")

    def __init_subclass__(cls, *, block_cols: str = "", record: Any = None,
                          error: Any = None, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        cls.BLOCK_COLS, cls.block_record, cls.error = block_cols, record, error

    def __init__(self, path: Path | str, readonly: bool) -> None:
        self.path = Path(path)
        self.readonly = readonly

    # ---- writing (inside the caller's transaction) ---------------------------

    def _check_writable(self) -> None:
        if self.readonly:
            raise self.error("read-only")

    def _head_before(self, height: int) -> R | None:
        """The head a new block at `height` goes on (None: the chain is empty
        and `height` must be 0)."""
        head = self.head()
        if head is None and height != 0:
            raise self.error("not-initialized", "block 0 must come first")
        return head

    def _write_meta(self, meta: dict[str, Any] | None) -> None:
        if meta:
            self._db.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                                 list(meta.items()))

    # ---- reading -------------------------------------------------------------

    def close(self) -> None:
        self._db.close()

    def meta(self, key: str) -> Any:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def head(self) -> R | None:
        row = self._db.execute("SELECT %s FROM blocks ORDER BY height DESC LIMIT 1"
                               % self.BLOCK_COLS).fetchone()
        return self.block_record(*row) if row else None

    def get_block(self, height: int) -> R | None:
        row = self._db.execute("SELECT %s FROM blocks WHERE height = ?" % self.BLOCK_COLS,
                               (height,)).fetchone()
        return self.block_record(*row) if row else None

    def iter_blocks(self, start: int = 0) -> Iterator[R]:
        """Blocks in height order from `start`."""
        cur = self._db.execute("SELECT %s FROM blocks WHERE height >= ? ORDER BY height"
                               % self.BLOCK_COLS, (start,))
        for row in cur:
            yield self.block_record(*row)

    def block_txs(self, height: int) -> list[TxRecord]:
        cur = self._db.execute("SELECT %s FROM txs WHERE height = ? ORDER BY idx" % TX_COLS,
                               (height,))
        return [tx_record(r) for r in cur]

    def get_tx(self, tx_id: bytes) -> TxRecord | None:
        row = self._db.execute("SELECT %s FROM txs WHERE id = ?" % TX_COLS,
                               (tx_id,)).fetchone()
        return tx_record(row) if row else None
