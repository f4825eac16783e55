"""The off-chain stream store: every supplier reading the gateway can verify,
kept so that a delivery commitment (a batch's Merkle root, docs/MARKET.md)
can be checked against the readings themselves.

Schema (its own SQLite file, e.g. <data_dir>/streams.db, WAL, FULL sync via
gateway/db/sqlite_db.py: a verdict must not fail an honest supplier because a
power cut lost readings the gateway had acknowledged):

    readings(agreement BLOB, idx INTEGER, value INTEGER, scale INTEGER,
             message BLOB, received REAL, PRIMARY KEY(agreement, idx))

Rules
- `add` stores a reading only if it verifies under the supplier's key
  (shared.stream.open_reading) and names the agreement it is filed under.
  Decoding and signature failures propagate as the shared.errors types
  (bad-cbor, too-large, bad-cose, bad-signature, bad-tx); the store's own
  refusals are `StreamError` with reason wrong-agreement, conflict,
  stream-full or value-range.
- History is append-only: a second reading with the same index is accepted
  only if it is the same bytes (idempotent); otherwise `conflict`, and the
  first one stays.
- Bounded: an agreement holds the indices 0 .. max_per_agreement-1 only (an
  index beyond is refused with stream-full), hence at most
  `max_per_agreement` readings, with no count query per reading.
- Values must fit SQLite's 64-bit INTEGER (value-range otherwise; the CBOR
  wire allows -2^64 .. 2^64-1).
- `check_batch` is deterministic: the same readings give the same StreamVerdict
  on every gateway (integer floor mean, Python `//` semantics).

One StreamStore is used by one thread at a time.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

from gateway.db import sqlite_db
from gateway.errors import StreamError
from shared import cbor, errors, merkle, stream

MAX_PER_AGREEMENT = 100_000
READINGS_PAGE = 1000
_INT64_MIN, _INT64_MAX = -(2 ** 63), 2 ** 63 - 1

# StreamError reasons
WRONG_AGREEMENT = "wrong-agreement"
CONFLICT = "conflict"
STREAM_FULL = "stream-full"
VALUE_RANGE = "value-range"
BAD_BATCH = "bad-batch"
# StreamVerdict reasons
MISSING_READINGS = "missing-readings"
MIXED_SCALE = "mixed-scale"
ROOT_MISMATCH = "root-mismatch"

SCHEMA = """
CREATE TABLE IF NOT EXISTS readings (
    agreement BLOB NOT NULL,
    idx INTEGER NOT NULL,
    value INTEGER NOT NULL,
    scale INTEGER NOT NULL,
    message BLOB NOT NULL,
    received REAL NOT NULL,
    PRIMARY KEY (agreement, idx)
) WITHOUT ROWID;
"""


@dataclass(frozen=True)
class StreamVerdict:
    """The outcome of checking one committed batch. ok: reason is "" and
    mean/scale describe the batch; otherwise reason is missing-readings,
    mixed-scale or root-mismatch and mean = scale = 0."""

    ok: bool
    reason: str
    mean: int
    scale: int


def _fail(reason: str) -> StreamVerdict:
    return StreamVerdict(False, reason, 0, 0)


class StreamStore:
    """Readings per agreement, verified on arrival (see the module docstring)."""

    def __init__(self, path: Path | str | None = None, *,
                 max_per_agreement: int = MAX_PER_AGREEMENT) -> None:
        if max_per_agreement < 1:
            raise ValueError("max_per_agreement must be >= 1")
        self.max_per_agreement = max_per_agreement
        if path is None or str(path) == ":memory:":
            self._db = sqlite3.connect(":memory:", isolation_level=None,
                                       check_same_thread=False)
            self._db.executescript(SCHEMA)
        else:
            self._db = sqlite_db.connect(Path(path), SCHEMA)

    def close(self) -> None:
        self._db.close()

    def add(self, agreement: bytes, supplier_key: bytes, message: bytes,
            received: float) -> int:
        """Verify `message` under `supplier_key` and store it under
        `agreement`; returns its index."""
        if isinstance(message, (bytes, bytearray, memoryview)) and len(message) > cbor.MAX_SIZE:
            raise errors.TooLarge("too-large")
        a, idx, value, scale = stream.open_reading(message, supplier_key)
        message = bytes(message)
        if a != agreement:
            raise StreamError(reason=WRONG_AGREEMENT, detail="payload names another agreement")
        if idx >= self.max_per_agreement:
            raise StreamError(reason=STREAM_FULL,
                              detail=f"index {idx} >= {self.max_per_agreement}")
        if not _INT64_MIN <= value <= _INT64_MAX:
            raise StreamError(reason=VALUE_RANGE, detail=f"index {idx}")
        cur = self._db.execute(
            "INSERT OR IGNORE INTO readings(agreement, idx, value, scale, message, received)"
            " VALUES (?, ?, ?, ?, ?, ?)", (agreement, idx, value, scale, message, received))
        if cur.rowcount == 0:
            (held,) = self._db.execute(
                "SELECT message FROM readings WHERE agreement = ? AND idx = ?",
                (agreement, idx)).fetchone()
            if held != message:
                raise StreamError(reason=CONFLICT, detail=f"index {idx}")
        return idx

    def count(self, agreement: bytes) -> int:
        """How many readings the store holds for `agreement`."""
        (n,) = self._db.execute(
            "SELECT COUNT(*) FROM readings WHERE agreement = ?", (agreement,)).fetchone()
        return n

    def _span(self, agreement: bytes, first: int, count: int, cols: str) -> list[tuple]:
        """Rows of the indices first .. first+count-1 held, in order."""
        if (not isinstance(first, int) or not isinstance(count, int)
                or isinstance(first, bool) or isinstance(count, bool)
                or first < 0 or count < 1):
            raise StreamError(reason=BAD_BATCH, detail=f"first {first!r}, count {count!r}")
        last = min(first + count, self.max_per_agreement) - 1
        if last < first:
            return []
        return self._db.execute(
            f"SELECT {cols} FROM readings WHERE agreement = ? AND idx BETWEEN ? AND ?"
            " ORDER BY idx", (agreement, first, last)).fetchall()

    def check_batch(self, agreement: bytes, first: int, count: int, root: bytes) -> StreamVerdict:
        """Check the committed batch first .. first+count-1 (count >= 1, else
        StreamError bad-batch) against the readings held."""
        rows = self._span(agreement, first, count, "value, scale, message")
        if len(rows) != count:
            return _fail(MISSING_READINGS)
        scale = rows[0][1]
        if any(r[1] != scale for r in rows):
            return _fail(MIXED_SCALE)
        if merkle.root([r[2] for r in rows]) != root:
            return _fail(ROOT_MISMATCH)
        return StreamVerdict(True, "", sum(r[0] for r in rows) // count, scale)

    def readings(self, agreement: bytes, start: int = 0,
                 limit: int = READINGS_PAGE) -> list[tuple[int, int, int]]:
        """(idx, value, scale) of the readings with idx >= start, in order,
        at most `limit` of them."""
        return [tuple(r) for r in self._db.execute(
            "SELECT idx, value, scale FROM readings WHERE agreement = ? AND idx >= ?"
            " ORDER BY idx LIMIT ?", (agreement, min(max(start, 0), self.max_per_agreement),
                                      min(max(limit, 0), self.max_per_agreement)))]

    def messages(self, agreement: bytes, first: int, count: int) -> list[bytes]:
        """The signed bytes of the readings first .. first+count-1 that are
        held, in index order (fewer than `count` when some are missing);
        merkle.root of a whole batch's list is its commitment."""
        return [r[0] for r in self._span(agreement, first, count, "message")]

    def forget(self, agreement: bytes) -> int:
        """Drop a closed agreement's readings; returns how many were held."""
        return self._db.execute(
            "DELETE FROM readings WHERE agreement = ?", (agreement,)).rowcount
