"""Opening the node's SQLite databases (domain chain, public registry) the
same way: WAL journal, FULL sync (a receipt is only sent after its block
survives a power cut), a busy timeout, and read-only connections through a
`mode=ro` URI so inspection tools read while the node writes.
`rollback(db, error)` ends a failed write transaction without hiding its
cause."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Self


def connect(path: Path, schema: str, *, readonly: bool = False,
            busy_ms: int = 5000) -> sqlite3.Connection:
    """An autocommit connection (the caller opens its own transactions).
    Read-only: the file must exist (FileNotFoundError otherwise)."""
    if readonly:
        if not path.exists():
            raise FileNotFoundError(str(path))
        db = sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True,
                             isolation_level=None, check_same_thread=False)
        db.execute(f"PRAGMA busy_timeout = {int(busy_ms)}")
        return db
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    db.execute(f"PRAGMA busy_timeout = {int(busy_ms)}")
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = FULL")
    db.executescript(schema)
    return db


def rollback(db: sqlite3.Connection, error: BaseException) -> None:
    """Roll back the open transaction after `error`, if SQLite has not done
    so itself (it rolls back on a full disk or an I/O error: a second
    ROLLBACK would raise "no transaction is active" over the real cause). A
    ROLLBACK that fails is noted on `error`, which the caller re-raises."""
    if not db.in_transaction:
        return
    try:
        db.execute("ROLLBACK")
    except sqlite3.Error as e:
        error.add_note(f"rollback failed too: {e}")


class Closing:
    """`with` support for the owners of a connection: close() at the end."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
