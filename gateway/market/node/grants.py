"""The grants the market operator owes (docs/MARKET.md, "Grants to new
devices"), derived from the chain rather than from having seen an event.

A device is owed its grant from the block that commits its REGISTER (status
ok) until a block commits a TRANSFER from the operator to it (status ok).
`fold` moves that set along one block; every gateway folds every block it
applies, whether it issues the operator's transactions or not, so the
gateway that takes the issuer's lease over (gateway/cluster/issuer.py), or
a lone gateway restarted between a REGISTER's block and its grant, finds
what is owed without a scan of the chain.

`GrantBook` keeps the set and the height it was folded to (the cursor) in
its own SQLite file (`grants.db` in the data directory). The chain is the
source of truth: the file needs consistency, not durability (the set and
its cursor are written in one transaction, with `synchronous = NORMAL`);
whatever a crash loses is folded again at the next start from the chain
store, from the cursor on (`catch_up`: two range reads of the txs table
above the cursor). The file is written when the set changes, and otherwise
every SAVE_EVERY blocks. A book without a cursor (a new file next to an
existing chain) folds the whole chain once.

Which device is owed is the same on every gateway (a function of the
chain); the amount is the issuing gateway's `market_grant`."""

from __future__ import annotations

import heapq
import logging
import sqlite3
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Protocol

from gateway.db import sqlite_db
from gateway.db.chain_tables import TxRecord
from shared import messages
from shared import tx as txm

log = logging.getLogger("thingledger.market")

GRANTS_FILE = "grants.db"
SAVE_EVERY = 64  # blocks folded between writes of the cursor alone

SCHEMA = """
CREATE TABLE IF NOT EXISTS owed (
    device BLOB PRIMARY KEY,
    height INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS cursor (
    one INTEGER PRIMARY KEY CHECK (one = 1),
    height INTEGER NOT NULL
);
"""

# (sender, tx type, receipt status, receipt events) of one committed tx
Item = tuple[bytes, int, int, list[Any]]


class ChainTxs(Protocol):
    """What catching up reads of the chain store (gateway/db/store.Store)."""

    def txs_of_type(self, type_: int, since_height: int = 0) -> Iterator[TxRecord]: ...


def fold(owed: dict[bytes, int], height: int, items: Iterable[Item], operator: bytes
         ) -> set[bytes]:
    """Move `owed` (device -> height of its REGISTER) along the committed txs
    of block `height`, in block order; the devices whose entry changed."""
    changed: set[bytes] = set()
    for sender, type_, status, events in items:
        if status != messages.STATUS_OK:
            continue
        if type_ == txm.TYPE_REGISTER and sender != operator:
            owed[sender] = height
            changed.add(sender)
        elif type_ == txm.TYPE_TRANSFER and sender == operator:
            for e in events:
                if e and e[0] == "transfer" and owed.pop(e[1], None) is not None:
                    changed.add(e[1])
    return changed


def chain_items(chain: ChainTxs, since: int, operator: bytes
                ) -> Iterator[tuple[int, Item]]:
    """(height, item) of the REGISTERs and the operator's TRANSFERs committed
    at `since` and above, in chain order."""
    regs = chain.txs_of_type(txm.TYPE_REGISTER, since)
    grants = (r for r in chain.txs_of_type(txm.TYPE_TRANSFER, since) if r.sender == operator)
    for r in heapq.merge(regs, grants, key=lambda r: (r.height, r.idx)):
        yield r.height, (r.sender, r.type, r.status, r.events)


class GrantBook:
    """The devices owed their grant, and the height folded to (module text)."""

    def __init__(self, path: Path, operator: bytes) -> None:
        self.operator = operator
        self._db = sqlite_db.connect(path, SCHEMA)
        self._db.execute("PRAGMA synchronous = NORMAL")
        self.owed: dict[bytes, int] = {bytes(d): h for d, h in
                                       self._db.execute("SELECT device, height FROM owed")}
        row = self._db.execute("SELECT height FROM cursor").fetchone()
        self.height: int | None = None if row is None else int(row[0])
        self._saved = self.height
        self._dirty: set[bytes] = set()  # devices whose row is to be written

    def close(self) -> None:
        self._db.close()

    def fold_block(self, height: int, items: Iterable[Item]) -> None:
        """One applied block (each once, in chain order; an older one is ignored)."""
        if self.height is not None and height <= self.height:
            return
        changed = fold(self.owed, height, items, self.operator)
        self.height = height
        self._dirty |= changed
        if changed or self._saved is None or height - self._saved >= SAVE_EVERY:
            self.save()

    def catch_up(self, chain: ChainTxs, head: int) -> int:
        """Fold what the chain holds above the cursor, up to `head`; the
        number of txs read."""
        since = 0 if self.height is None else self.height + 1
        n = 0
        for h, item in chain_items(chain, since, self.operator):
            if h > head:
                break
            self._dirty |= fold(self.owed, h, [item], self.operator)
            n += 1
        if self.height is None or head > self.height:
            self.height = head
        self.save()
        return n

    def save(self) -> None:
        db = self._db
        try:
            db.execute("BEGIN IMMEDIATE")  # may fail too: another writer holds the file
            for d in self._dirty:
                h = self.owed.get(d)
                if h is None:
                    db.execute("DELETE FROM owed WHERE device = ?", (d,))
                else:
                    db.execute("INSERT OR REPLACE INTO owed (device, height) VALUES (?, ?)",
                               (d, h))
            if self.height is not None:
                db.execute("INSERT OR REPLACE INTO cursor (one, height) VALUES (1, ?)",
                           (self.height,))
            db.execute("COMMIT")
        except BaseException as e:
            sqlite_db.rollback(db, e)
            if isinstance(e, sqlite3.Error):  # kept in memory; the next start folds it again
                log.warning("grants owed not saved (%s): kept in memory, folded again from"
                            " the chain at the next start", e)
                return
            raise
        self._dirty.clear()
        self._saved = self.height
