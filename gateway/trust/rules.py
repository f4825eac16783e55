"""Trust's consensus rules (docs/TRUST.md): the PROOF (23) and REPORT (24) tx
types (schema, precheck, apply) and the observer of every included tx that
keeps each principal's committed activity, score and level. Registered with
the ledger's tx-type registry by gateway/plugins.py. Active on domains whose
genesis says `trust = true` (Rules.trust); elsewhere PROOF and REPORT are
refused (not-authorized, trust-off) and nothing is kept.

PROOF {1: kind, 2: message A, 3: message B}
    kind "tx-equivocation": A and B are two txs of one sender with one seq
    (gateway/trust/evidence.py); "header-equivocation": two signed block
    headers of one signer at one height. The offender must be known
    (unknown-device); each offence is accepted once (duplicate). Effect:
    PROOF_POINTS of penalty and a ban of the offending key.
    "vote-equivocation": A and B are two votes ([validator key, header
    bytes, signature]) of one validator on two different headers of this
    domain at one height; the key must be in the validator set in force at
    that height (bad-proof not-a-validator). The offender is the validator's
    id (an account or not); the same effect.
    Whatever the kind, a banned key that is in a validator set after the
    proof's height leaves it from the next height on (consensus.remove_member:
    as a VALSET from height + 1 would, with the event ["valset", from, set
    hash]): a validator's double vote, or two txs with one seq of an account
    that uses its validator key.
REPORT {1: target id, 2: kind, 3?: evidence bytes}
    refused: about oneself (bad-tx self-report), about an unknown id
    (unknown-device), by a banned reporter (banned), the same reporter,
    target and kind twice in one day (duplicate), over the reporter's or the
    target's daily cap (over-cap reporter / target). Effect: REPORT_POINTS x
    the reporter's weight, within the target's daily points cap.
Every change of score by a proof or report, and every change of level,
appends a history entry naming the reason and the tx.
"""

from __future__ import annotations

from dataclasses import replace
from hashlib import sha256
from typing import Any

from gateway.errors import RuleError
from gateway.ledger import consensus
from gateway.ledger.state import (
    KIND_AUTHORITY,
    BlockInfo,
    DeviceRecord,
    Rules,
    StateOverlay,
    StateView,
)
from gateway.ledger.txtypes import TxType
from gateway.ledger.validate import body_keys, need_id
from gateway.market.ledger.rules import AGREEMENT, agreement, supplier_record
from gateway.trust import evidence
from gateway.trust import standing as st
from shared import cbor, cose, errors, reasons
from shared import tx as txm
from shared.messages_gateway import STATUS_FAILED, STATUS_OK

TX_EQUIVOCATION = "tx-equivocation"
HEADER_EQUIVOCATION = "header-equivocation"
VOTE_EQUIVOCATION = "vote-equivocation"
PROOF_KINDS = (HEADER_EQUIVOCATION, TX_EQUIVOCATION, VOTE_EQUIVOCATION)
NOT_A_VALIDATOR = "not-a-validator"
REPORT_KINDS = ("fake-id-attempt", "flooding", "forged-message", "implausible-reading",
                "unanswered-agreement")
MAX_EVIDENCE = 1024
TRUST_OFF = "trust-off"


# ---- body schemas (stateless, raise TxError) -----------------------------------

def check_body(t: txm.Tx) -> None:
    b = t.body
    if t.type == txm.TYPE_PROOF:
        body_keys(b, (1, 2, 3))
        if b[1] not in PROOF_KINDS:
            raise errors.TxError("bad-kind")
        for k in (2, 3):
            if not isinstance(b[k], bytes) or not b[k]:
                raise errors.TxError("bad-evidence")
    else:
        body_keys(b, (1, 2), (3,))
        need_id(b[1], "bad-target")
        if b[2] not in REPORT_KINDS:
            raise errors.TxError("bad-kind")
        if 3 in b and (not isinstance(b[3], bytes) or len(b[3]) > MAX_EVIDENCE):
            raise errors.TxError("bad-evidence")


# ---- stateful checks (raise RuleError, write nothing) ----------------------------

def _proved(view: StateView, t: txm.Tx) -> tuple[bytes, bytes]:
    """(offender id, offence id) of a valid proof; raises RuleError."""
    kind, a, b = t.body[1], t.body[2], t.body[3]
    if kind == VOTE_EQUIVOCATION:
        who, at = _double_vote(view, t)
        return _first_time(view, kind, who, at)
    try:
        kid = _kid(a)
        off = view.get(kid)
        if off is None:
            raise RuleError(errors.UNKNOWN_DEVICE, "offender")
        if kind == TX_EQUIVOCATION:
            who, at = evidence.tx_equivocation(off.pubkey, a, b)
        else:
            who, at = evidence.header_equivocation(off.pubkey, a, b)
    except RuleError:
        raise
    except errors.TLError as e:
        raise RuleError(e.reason, e.detail) from None
    return _first_time(view, kind, who, at)


def _first_time(view: StateView, kind: str, who: bytes, at: int) -> tuple[bytes, bytes]:
    oid = evidence.offence_id(kind, who, at)
    if view.kv_get(st.offence_key(oid)) is not None:
        raise RuleError(reasons.DUPLICATE, "offence")
    return who, oid


def _double_vote(view: StateView, t: txm.Tx) -> tuple[bytes, int]:
    """(validator id, height) of a valid vote-equivocation proof: two votes
    checked by evidence.vote_equivocation, on headers of this domain, by a
    member of the set in force at their height."""
    try:
        pub, height, domain = evidence.vote_equivocation(t.body[2], t.body[3])
    except errors.TLError as e:
        raise RuleError(e.reason, e.detail) from None
    if domain != t.domain:
        raise RuleError(errors.BAD_PROOF, evidence.DIFFERENT_DOMAINS)
    sched = consensus.schedule(view)
    if sched is None or consensus.set_at(sched, height).index(pub) is None:
        raise RuleError(errors.BAD_PROOF, NOT_A_VALIDATOR)
    return txm.device_id(pub), height


def _kid(message: bytes) -> bytes:
    return cose.parse1(message).kid


def _report_id(t: txm.Tx, day: int) -> bytes:
    return sha256(t.sender + t.body[1] + t.body[2].encode() + day.to_bytes(8, "big")).digest()


def _day(time: int) -> int:
    return time // st.DAY_S


def precheck(view: StateView, t: txm.Tx, rules: Rules, rec: DeviceRecord) -> None:
    if not rules.trust:
        raise RuleError(errors.NOT_AUTHORIZED, TRUST_OFF)
    if st.level_of(view, t.sender) == st.BANNED:
        raise RuleError(reasons.BANNED)
    if t.type == txm.TYPE_PROOF:
        _proved(view, t)
        return
    target = t.body[1]
    if target == t.sender:
        raise RuleError(errors.BAD_TX, "self-report")
    if view.get(target) is None:
        raise RuleError(errors.UNKNOWN_DEVICE, "target")


def refused_report(view: StateView, t: txm.Tx, time: int) -> str:
    """The reason a REPORT is refused at block time `time` (its day's
    duplicate and caps; "" if none). Known only at execution: the tx is then
    included as failed with this reason, its fee and seq taken, nothing else
    changed."""
    day = _day(time)
    if view.kv_get(st.report_key(_report_id(t, day))) is not None:
        return reasons.DUPLICATE
    r = st.get(view, t.sender)
    if r is not None and r.reporter_day == day and r.reports_filed >= st.REPORTER_DAY_CAP:
        return reasons.OVER_CAP
    g = st.get(view, t.body[1])
    if g is not None and g.target_day == day and g.reports_received >= st.TARGET_DAY_CAP:
        return reasons.OVER_CAP
    return ""


# ---- effects --------------------------------------------------------------------

def _rescore(view: StateView, pid: bytes, rec: st.Record, now: int) -> st.Record:
    dev = view.get(pid)
    sup = supplier_record(view, pid) or {}
    s = st.score(rec, now, sup.get("paid", 0), sup.get("failed", 0))
    # (no account: a validator id, whose only key is the one its record names)
    lv = st.level(rec, s, dev.pubkey if dev else rec.banned_key, now)
    if dev is not None and dev.kind == KIND_AUTHORITY and lv != st.BANNED:
        lv = st.TRUSTED  # the domain's gateway: limited by nothing but a proof (level_of)
    return rec.scored(s, lv)


def _fresh(view: StateView, pid: bytes, now: int, old: st.Record | None = None,
           activity: int = 0) -> st.Record:
    """`pid`'s record (`old` if read already) with its decay folded in up to
    `now`, so later penalties add to the current figure (a new one if none)."""
    rec = old if old is not None else st.get(view, pid)
    if rec is None:
        return st.Record(since=now, activity=activity, penalty_t=now)
    return rec.touched(now, activity)


_UNREAD: Any = object()


def _change(view: StateOverlay, pid: bytes, rec: st.Record, block: BlockInfo, tx_id: bytes,
            reason: str, always: bool, old: Any = _UNREAD) -> st.Record:
    """Rescore `rec` and store it; a history entry if `always` or its level
    moved (`old`: the stored record, if read already)."""
    if old is _UNREAD:
        old = st.get(view, pid)
    new = _rescore(view, pid, rec, block.time)
    if always or old is None or old.level != new.level:
        new = st.add_history(view, pid, new, block.height, block.time, tx_id, reason)
    st.put(view, pid, new)
    return new


def apply(view: StateOverlay, t: txm.Tx, rules: Rules, block: BlockInfo
          ) -> tuple[int, str, list[Any]]:
    now = block.time
    if t.type == txm.TYPE_PROOF:
        who, oid = _proved(view, t)
        view.kv_put(st.offence_key(oid), _marker(block, t))
        dev = view.get(who)
        # the key proved to equivocate: a validator's is the one its votes name
        # (its id may hold no account, or an account whose key was rotated since)
        if t.body[1] == VOTE_EQUIVOCATION:
            key = evidence.decode_vote(t.body[2])[0]
        else:
            assert dev is not None
            key = dev.pubkey
        rec = _fresh(view, who, now)
        rec = replace(rec, penalty=rec.penalty + st.PROOF_POINTS, banned_key=key)
        new = _change(view, who, rec, block, t.id, "proof:" + t.body[1], True)
        events: list[Any] = [["proof", t.body[1], who, new.level]]
        # a banned key that is a validator's (its double vote, or a double tx of an
        # account under the same key) leaves the validator set from the next height
        removed = consensus.remove_member(view, key, block.height)
        if removed is not None:
            events.append(["valset", removed[0], removed[1].hash])
        return STATUS_OK, "", events
    target, kind = t.body[1], t.body[2]
    refused = refused_report(view, t, now)
    if refused:
        return STATUS_FAILED, refused, []
    day = _day(now)
    view.kv_put(st.report_key(_report_id(t, day)), _marker(block, t))
    reporter = view.get(t.sender)
    weight = 100 if reporter is not None and reporter.kind == KIND_AUTHORITY \
        else st.WEIGHT[st.level_of(view, t.sender)]
    r = _fresh(view, t.sender, now)
    filed = r.reports_filed + 1 if r.reporter_day == day else 1
    st.put(view, t.sender, replace(r, reporter_day=day, reports_filed=filed))
    g = _fresh(view, target, now)
    if g.target_day != day:
        g = replace(g, target_day=day, reports_received=0, report_points=0)
    points = min(st.REPORT_POINTS * weight // 100, st.TARGET_DAY_POINTS - g.report_points)
    g = replace(g, reports_received=g.reports_received + 1,
                report_points=g.report_points + points, penalty=g.penalty + points)
    # every report taken is in the target's history, weightless ones too (at most
    # TARGET_DAY_CAP a day): who said what, and what it weighed
    new = _change(view, target, g, block, t.id, "report:%s:w%d" % (kind, weight), True)
    return STATUS_OK, "", [["report", target, kind, points, new.level]]


def _marker(block: BlockInfo, t: txm.Tx) -> bytes:
    return cbor.dumps([block.height, t.id])


def observe(view: StateOverlay, t: txm.Tx, rules: Rules, block: BlockInfo) -> None:
    """After every included tx: the sender's committed activity (and, for a
    recovery, the recovered device's standing: a ban on its old key ends)."""
    if not rules.trust:
        return
    if view.get(t.sender) is None:  # (a tx that removed its sender: none today)
        return
    old = st.get(view, t.sender)
    rec = _fresh(view, t.sender, block.time, old, activity=1)
    reason = "activity" if old is None or old.level != st.BANNED else "key-changed"
    if t.type == txm.TYPE_ROTATE_KEY:
        reason = "key-rotated"
    _change(view, t.sender, rec, block, t.id, reason, False, old)
    if t.type == txm.TYPE_RECOVER:
        dev = t.body[1]
        if st.get(view, dev) is not None:
            _change(view, dev, _fresh(view, dev, block.time), block, t.id, "key-recovered", False)
    supplier = _verdict_supplier(view, t)
    if supplier is not None:  # the market's delivery verdict: the supplier's record moved
        _change(view, supplier, _fresh(view, supplier, block.time), block, t.id,
                "delivery-verdict", True)


def _verdict_supplier(view: StateView, t: txm.Tx) -> bytes | None:
    """The supplier whose delivery record a (successful) verdict call moved."""
    b = t.body
    if t.type != txm.TYPE_CONTRACT_CALL or b[1] != AGREEMENT or b[2] != "verdict" or not b[3]:
        return None
    a = agreement(view, b[3][0]) if isinstance(b[3][0], bytes) else None
    return None if a is None else a["supplier"]


TX_TYPES = (TxType(txm.TYPE_PROOF, "trust", check_body, precheck, apply, isolated=True),
            TxType(txm.TYPE_REPORT, "trust", check_body, precheck, apply, isolated=True))
