"""Trust standing of a principal: its stored figures, its score and its level
(docs/TRUST.md), as kv entries of the ledger state, so the state commitment
covers them. Pure: reads and writes a StateView / StateOverlay only, no clock
(every time is a block time passed in). The market reads levels from here
(escrow and offer caps, the `trusted` matching policy); gateway/trust/rules.py
writes them.

Keys (one byte `T` names the feature, the next one the kind):

    T r <id>                    the principal's record (cbor map, RECORD_* keys)
    T h <id> <n:4>              its n-th history entry: [height, time, tx id,
                                reason, score, level]
    T o <offence id:32>         a proved offence: [height, tx id] (accepted once)
    T x <report id:32>          a report taken: [height, tx id] (no replay)
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from gateway.ledger.state import KIND_AUTHORITY, StateOverlay, StateView
from shared import cbor

PREFIX = b"T"
RECORDS = PREFIX + b"r"
HISTORY = PREFIX + b"h"
OFFENCES = PREFIX + b"o"
REPORTS = PREFIX + b"x"

TRUSTED = "trusted"
NORMAL = "normal"
PROBATION = "probation"
BANNED = "banned"
LEVELS = (TRUSTED, NORMAL, PROBATION, BANNED)

DAY_S = 86_400
HOUR_S = 3_600
# ---- the numbers (docs/TRUST.md, "The numbers")
AGE_PER_DAY = 10  # points per whole day since the id's first committed tx ...
AGE_MAX = 200  # ... up to this
ACTIVITY_MAX = 300  # one point per committed tx, up to this
PAID_WEIGHT = 10  # points per paid delivery batch (market verdicts) ...
PAID_MAX = 300  # ... up to this
FAILED_WEIGHT = 50  # points off per failed delivery batch (market verdicts)
PROOF_POINTS = 500  # penalty of one proved offence
REPORT_POINTS = 20  # penalty of one report by a fully weighted reporter
DECAY_PER_HOUR = 2  # penalty points forgiven per hour of block time
PROBATION_TXS = 50  # committed txs an id needs before it can leave probation ...
PROBATION_S = DAY_S  # ... and the time since its first one
PROBATION_SCORE = 50  # below this score: probation
TRUSTED_SCORE = 400  # from this score: trusted
BAN_SCORE = -500  # at or below this score: banned
# a report's weight (percent) by the reporter's level; the domain's gateway
# (the authority) weighs fully
WEIGHT = {TRUSTED: 100, NORMAL: 50, PROBATION: 0, BANNED: 0}
REPORTER_DAY_CAP = 10  # reports one reporter may file per day
TARGET_DAY_CAP = 20  # reports one target may receive per day
TARGET_DAY_POINTS = 40  # penalty points reports may add to one target per day


@dataclass(frozen=True, slots=True)
class Record:
    since: int  # block time of the first committed tx (or first trust event)
    activity: int = 0  # committed txs
    penalty: int = 0  # proof and report points, after decay up to `penalty_t`
    penalty_t: int = 0  # block time `penalty` was last decayed to
    banned_key: bytes = b""  # a key proved to equivocate: banned while current
    history: int = 0  # history entries
    score: int = 0
    level: str = PROBATION
    reporter_day: int = -1  # day of `reports_filed`
    reports_filed: int = 0
    target_day: int = -1  # day of `reports_received` and `report_points`
    reports_received: int = 0
    report_points: int = 0

    def scored(self, score: int, level: str) -> Record:
        """This record with `score` and `level` (faster than dataclasses.replace:
        once per tx)."""
        return Record(self.since, self.activity, self.penalty, self.penalty_t, self.banned_key,
                      self.history, score, level, self.reporter_day, self.reports_filed,
                      self.target_day, self.reports_received, self.report_points)

    def touched(self, now: int, activity: int) -> Record:
        """This record at block time `now`: its penalty decayed up to `now`,
        `activity` more committed txs."""
        return Record(self.since, self.activity + activity, decayed(self, now), now,
                      self.banned_key, self.history, self.score, self.level,
                      self.reporter_day, self.reports_filed, self.target_day,
                      self.reports_received, self.report_points)

    def to_bytes(self) -> bytes:
        return cbor.dumps([self.since, self.activity, self.penalty, self.penalty_t,
                           self.banned_key, self.history, self.score, self.level,
                           self.reporter_day, self.reports_filed, self.target_day,
                           self.reports_received, self.report_points])

    @classmethod
    def from_bytes(cls, b: bytes) -> Record:
        return cls(*cbor.loads(b))


def record_key(pid: bytes) -> bytes:
    return RECORDS + pid


def history_key(pid: bytes, n: int) -> bytes:
    return HISTORY + pid + n.to_bytes(4, "big")


def offence_key(offence: bytes) -> bytes:
    return OFFENCES + offence


def report_key(report: bytes) -> bytes:
    return REPORTS + report


def get(view: StateView, pid: bytes) -> Record | None:
    b = view.kv_get(record_key(pid))
    return None if b is None else Record.from_bytes(b)


def decayed(rec: Record, now: int) -> int:
    """The record's penalty at block time `now`."""
    hours = max(0, now - rec.penalty_t) // HOUR_S
    return max(0, rec.penalty - hours * DECAY_PER_HOUR)


def score(rec: Record, now: int, paid: int = 0, failed: int = 0) -> int:
    """Score at block time `now`; `paid` / `failed`: the market's delivery
    verdicts for the principal as a supplier."""
    age = min(max(0, now - rec.since) // DAY_S * AGE_PER_DAY, AGE_MAX)
    return (age + min(rec.activity, ACTIVITY_MAX) + min(paid * PAID_WEIGHT, PAID_MAX)
            - failed * FAILED_WEIGHT - decayed(rec, now))


def level(rec: Record, s: int, current_key: bytes, now: int) -> str:
    """The level of `rec` scored `s` at block time `now`."""
    if (rec.banned_key and rec.banned_key == current_key) or s <= BAN_SCORE:
        return BANNED
    if rec.activity < PROBATION_TXS or now - rec.since < PROBATION_S or s < PROBATION_SCORE:
        return PROBATION
    if s >= TRUSTED_SCORE:
        return TRUSTED
    return NORMAL


def level_of(view: StateView, pid: bytes) -> str:
    """The level the chain gives `pid` now: its stored level, except that a
    ban on a key the principal no longer holds (rotated, recovered) is over.
    An id with no record is new: probation. The domain's authority is never
    limited by its own trust figures (it is the one enforcing them)."""
    dev = view.get(pid)
    if dev is not None and dev.kind == KIND_AUTHORITY:
        rec = get(view, pid)
        return BANNED if rec is not None and rec.banned_key == dev.pubkey else TRUSTED
    rec = get(view, pid)
    if rec is None:
        return PROBATION
    if rec.level == BANNED and dev is not None and rec.banned_key != dev.pubkey \
            and rec.score > BAN_SCORE:
        return level(replace(rec, banned_key=b""), rec.score, dev.pubkey, rec.penalty_t)
    return rec.level


def score_of(view: StateView, pid: bytes) -> int:
    rec = get(view, pid)
    return 0 if rec is None else rec.score


def history(view: Any, pid: bytes) -> list[list[Any]]:
    """The principal's history entries, oldest first."""
    return [cbor.loads(v) for _, v in view.kv_range(HISTORY + pid)]


def records(view: Any) -> list[tuple[bytes, Record]]:
    """(id, record) of every principal with trust figures, by id."""
    return [(k[len(RECORDS):], Record.from_bytes(v)) for k, v in view.kv_range(RECORDS)]


def banned(view: Any) -> list[bytes]:
    """Ids whose level is banned now."""
    return [pid for pid, _ in records(view) if level_of(view, pid) == BANNED]


def put(view: StateOverlay, pid: bytes, rec: Record) -> None:
    view.kv_put(record_key(pid), rec.to_bytes())


def add_history(view: StateOverlay, pid: bytes, rec: Record, height: int, time: int,
                tx_id: bytes, reason: str) -> Record:
    """Append a history entry for `rec` (already rescored); returns the record
    with its history count advanced (not yet stored)."""
    view.kv_put(history_key(pid, rec.history),
                cbor.dumps([height, time, tx_id, reason, rec.score, rec.level]))
    return replace(rec, history=rec.history + 1)
