"""The market's and the contracts' state transitions (docs/MARKET.md), pure
functions on a StateOverlay, registered with the ledger for tx types 13-18 (gateway/plugins.py).

`precheck(view, tx, rules, sender_record)` raises RuleError for a tx that
cannot be included (nothing written). `apply(view, tx, rules, block)` runs an
includable one after state.apply has consumed its seq and charged its fee,
and returns (status, reason, events) for its receipt.

- OFFER stores/replaces ("offer", service, supplier) with expiry block time +
  valid_s, then matches the service's waiting demands against the live
  offers, oldest demand first: it looks at up to SCAN_LIMIT of them, skips
  those it cannot serve (too low a price, no longer waiting) and opens at
  most MATCH_SCAN agreements, so old unservable demands cannot starve the
  newer ones.
- DEMAND: refused (insufficient-funds, escrow) unless the sender holds
  max_price * quantity after its fee, or (unknown-contract, agreement) when
  the domain has no active agreement contract. Matched at once if a live
  offer fits (matching.choose under the demand's policy); otherwise the
  amount is locked in the market escrow account and the demand waits until
  block time + wait_s.
- A match opens the agreement (contract "agreement" at AGREEMENT) as the
  buyer with value price * quantity, a call the ledger makes itself
  (by_ledger: agreement v2 refuses an open from a CONTRACT_CALL);
  agreement id = demand id = first 16 bytes of the DEMAND's tx id;
  expiry = block time + quantity * interval_s * EXPIRY_FACTOR +
  EXPIRY_GRACE_S.
- Who may take an offer: anyone, unless the supplier is an owned device:
  then its owner, devices of the same owner, and principals holding `buy`
  on it.
- CLOSE {1: id}: a waiting demand (its buyer at any time, the operator =
  the authority once it stopped waiting): the locked amount goes back; an
  agreement: the contract's close(id) called as the sender.
- WITHDRAW removes the sender's offer (unknown-offer if none).
- Trust (domains whose genesis keeps it, docs/TRUST.md): a sender on
  probation may escrow at most PROBATION_ESCROW_CAP in one DEMAND and offer
  at most PROBATION_OFFER_CAP per reading (over-cap, probation-escrow /
  probation-offer); the `trusted` policy ranks suppliers by their trust
  score (gateway/trust/standing.py) instead of the delivery record alone.
  Once the agreement deployment names a plausibility oracle for any service,
  a supplier on probation is matched only for a service that has one
  (attested_only), so each of its batches is paid only if the oracle's
  result for the round exists and the mean lies within its tolerance (the
  contract's verdict; no result: the batch fails with `no-attestation`).
- Holds on payment: a feature may hold a committed batch from being paid
  (guard_payment; gateway/plugins.py registers the features' guards). A
  verdict call that would pay a held batch (ok = true) is refused
  (RuleError with the hold's reason); the operator's judge waits for it,
  or, when the hold is final, fails the batch
  (gateway/market/node/service.py). The market names no feature: it only
  asks the registered guards.
- CONTRACT_CALL / CONTRACT_ADMIN: gateway/contracts/binding.py. A failed call
  is included with status failed and reason the contract error; its events
  then are [["revert", detail, fuel used]].

Receipt events (a DEMAND's say only what the tx does not: a board checks
its receipt in a small heap): ["offer", service, price, expires],
["withdraw", service], ["wait", id, until],
["match", agreement, buyer, supplier, price, quantity, expiry, service,
interval_s, policy], ["demand-closed", id, buyer, refund], ["call", address,
method, result, fuel], then the contract's own events ([address, name, ...]).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from itertools import islice
from typing import Any

from gateway.contracts import binding as chain
from gateway.contracts import runtime as crt
from gateway.ledger import keys
from gateway.ledger.state import (
    ACTIVE,
    KIND_CONTRACT,
    RIGHT_BUY,
    BlockInfo,
    DeviceRecord,
    RuleError,
    Rules,
    StateOverlay,
    StateView,
)
from gateway.market.ledger.matching import Offer, choose, trust_score
from gateway.trust import standing
from shared import cbor, errors
from shared import tx as txm
from shared.messages_gateway import STATUS_FAILED, STATUS_OK

AGREEMENT_LABEL = "agreement"
# the version the operator deploys (and upgrades a v1 deployment to): in v2
# only the matching step below may open an agreement (contracts/builtin.py)
AGREEMENT_VERSION = 2
AGREEMENT = crt.contract_address(AGREEMENT_LABEL)
# key prefix of every agreement record: storage key cbor(b"a" + 16-byte id)
AGREEMENTS = keys.storage(AGREEMENT, cbor.dumps(b"a" + bytes(16))[:2])
ESCROW_LABEL = "market-escrow"
ESCROW = crt.contract_address(ESCROW_LABEL)  # account of waiting demands' funds
MATCH_SCAN = 16  # agreements one OFFER may open
SCAN_LIMIT = 1024  # waiting demands one OFFER looks at (oldest first)
EXPIRY_FACTOR = 2
EXPIRY_GRACE_S = 120
MARKET_FUEL = 50_000

UNKNOWN_OFFER = errors.UNKNOWN_OFFER
UNKNOWN_AGREEMENT = errors.UNKNOWN_AGREEMENT


# demand record fields
D_BUYER, D_SERVICE, D_MAX, D_QTY, D_UNTIL, D_POLICY, D_LOCATION, D_LOCKED = range(1, 9)


def demand_id(t: txm.Tx) -> bytes:
    return t.id[:16]


def _load(view: StateView, key: bytes) -> Any:
    b = view.kv_get(key)
    return None if b is None else cbor.loads(b)


def agreement_active(view: StateView) -> bool:
    dep = chain.deployment(view, AGREEMENT)
    return dep is not None and dep["status"] == crt.ACTIVE


def agreement(view: StateView, aid: bytes) -> dict | None:
    """An agreement's record in the agreement contract (None if unknown)."""
    return chain.storage(view, AGREEMENT, b"a" + aid)


def open_agreements(state: Any) -> list[dict]:
    """Every open agreement record of a State (with its "id")."""
    out = []
    for k, v in state.kv_range(AGREEMENTS):
        a = cbor.loads(v)
        if a["state"] == "open":
            a["id"] = k[-16:]
            out.append(a)
    return out


def supplier_record(view: StateView, supplier: bytes) -> dict | None:
    return chain.storage(view, AGREEMENT, b"r" + supplier)


def waiting_demand(view: StateView, did: bytes) -> tuple[bytes, dict] | None:
    k = view.kv_get(keys.demand_index(did))
    if k is None:
        return None
    return k, _load(view, k)


# ---- holds on payment --------------------------------------------------------------
@dataclass(frozen=True)
class Hold:
    """Why a committed batch may not be paid now: `final` if it never may
    (the operator then fails it), else it waits (judged once the hold is gone)."""

    reason: str
    detail: str
    final: bool = False


# (view, agreement id, batch, first index, count) -> a Hold, or None: payable
PayGuard = Callable[[StateView, bytes, int, int, int], "Hold | None"]
_GUARDS: list[PayGuard] = []


def guard_payment(fn: PayGuard) -> None:
    """Add a guard asked before a committed batch is paid (once per function)."""
    if fn not in _GUARDS:
        _GUARDS.append(fn)


def payment_hold(view: StateView, aid: bytes, batch: int) -> Hold | None:
    """The first guard's hold on paying `batch` of agreement `aid` (None:
    nothing holds it, or it is no committed batch of an agreement)."""
    if not _GUARDS:
        return None
    a = agreement(view, aid)
    p = None if a is None else a["pending"].get(batch)
    if p is None:
        return None
    for g in _GUARDS:
        h = g(view, aid, batch, p[0], p[1])
        if h is not None:
            return h
    return None


def _paying_verdict(b: dict) -> tuple[bytes, int] | None:
    """(agreement, batch) of a CONTRACT_CALL body that would pay a batch:
    verdict(aid, batch, true, ...) on the agreement contract."""
    args = b[3]
    if b[1] != AGREEMENT or b[2] != "verdict" or not isinstance(args, list) or len(args) < 3:
        return None
    aid, batch, ok = args[0], args[1], args[2]
    if ok is not True or not isinstance(aid, bytes) or type(batch) is not int:
        return None
    return aid, batch


# ---- admission --------------------------------------------------------------------
PROBATION_ESCROW_CAP = 500  # docs/TRUST.md
PROBATION_OFFER_CAP = 100


def _probation_caps(view: StateView, t: txm.Tx) -> None:
    if standing.level_of(view, t.sender) != standing.PROBATION:
        return
    b = t.body
    if t.type == txm.TYPE_DEMAND and b[2] * b[3] > PROBATION_ESCROW_CAP:
        raise RuleError(errors.OVER_CAP, "probation-escrow")
    if t.type == txm.TYPE_OFFER and b[3] > PROBATION_OFFER_CAP:
        raise RuleError(errors.OVER_CAP, "probation-offer")


def precheck(view: StateView, t: txm.Tx, rules: Rules, rec: DeviceRecord) -> None:
    b, spendable = t.body, rec.balance - t.fee
    if rules.trust:
        _probation_caps(view, t)
    if t.type == txm.TYPE_WITHDRAW:
        if view.kv_get(keys.offer(b[1], t.sender)) is None:
            raise RuleError(UNKNOWN_OFFER)
    elif t.type == txm.TYPE_DEMAND:
        if not agreement_active(view):
            raise RuleError(errors.UNKNOWN_CONTRACT, AGREEMENT_LABEL)
        if spendable < b[2] * b[3]:
            raise RuleError(errors.INSUFFICIENT_FUNDS, "escrow")
    elif t.type == txm.TYPE_CLOSE:
        if waiting_demand(view, b[1]) is None and agreement(view, b[1]) is None:
            raise RuleError(UNKNOWN_AGREEMENT)
    elif t.type == txm.TYPE_CONTRACT_CALL:
        if spendable < b[4]:
            raise RuleError(errors.INSUFFICIENT_FUNDS, "value")
        paying = _paying_verdict(b)
        hold = None if paying is None else payment_hold(view, *paying)
        if hold is not None:
            raise RuleError(hold.reason, hold.detail)
    elif t.type == txm.TYPE_CONTRACT_ADMIN:
        if t.sender != chain.admin_of(rules):
            raise RuleError(errors.NOT_AUTHORIZED, "not-admin")


# ---- execution --------------------------------------------------------------------
def apply(view: StateOverlay, t: txm.Tx, rules: Rules, block: BlockInfo
          ) -> tuple[int, str, list[Any]]:
    type_ = t.type
    if type_ == txm.TYPE_OFFER:
        return _offer(view, t, rules, block)
    if type_ == txm.TYPE_WITHDRAW:
        view.kv_put(keys.offer(t.body[1], t.sender), None)
        return STATUS_OK, "", [["withdraw", t.body[1]]]
    if type_ == txm.TYPE_DEMAND:
        return _demand(view, t, rules, block)
    if type_ == txm.TYPE_CLOSE:
        return _close(view, t, rules, block)
    if type_ == txm.TYPE_CONTRACT_CALL:
        b = t.body
        return _result(chain.call(view, block, caller=t.sender, address=b[1], method=b[2],
                                  args=b[3], value=b[4], fuel=b[5]), b[1], b[2])
    return _result(chain.admin(view, block, rules, t.sender, t.body), b"", t.body[1])


def _result(r: crt.Result, address: bytes, method: str) -> tuple[int, str, list[Any]]:
    if not r.ok:
        return STATUS_FAILED, r.reason, [["revert", r.detail, r.fuel_used]]
    return STATUS_OK, "", [["call", address, method, r.value, r.fuel_used], *r.events]


def _offer(view: StateOverlay, t: txm.Tx, rules: Rules, block: BlockInfo
           ) -> tuple[int, str, list[Any]]:
    b = t.body
    o = Offer(t.sender, b[1], b[2], b[3], b[4], b[5], block.time + b[6], b[7],
              (block.height, block.index))
    view.kv_put(keys.offer(o.service, o.supplier), cbor.dumps(o.to_map()))
    events: list[Any] = [["offer", o.service, o.price, o.expires]]
    # a list: matching changes the demands under the range
    waiting = list(islice(view.kv_range(keys.demands_of(o.service)), SCAN_LIMIT))
    matched = 0
    for k, v in waiting:
        d = cbor.loads(v)
        if d[D_UNTIL] <= block.time or d[D_MAX] < o.price:
            continue  # demands this offer cannot serve do not use up the match budget
        m = _match(view, rules, block, k[-16:], d, locked=True)
        if m is not None:
            events.append(m)
            matched += 1
            if matched == MATCH_SCAN:
                break
    return STATUS_OK, "", events


def _demand(view: StateOverlay, t: txm.Tx, rules: Rules, block: BlockInfo
            ) -> tuple[int, str, list[Any]]:
    b = t.body
    did = demand_id(t)
    d = {D_BUYER: t.sender, D_SERVICE: b[1], D_MAX: b[2], D_QTY: b[3],
         D_UNTIL: block.time + b[4], D_POLICY: b[5], D_LOCATION: b.get(6, ""),
         D_LOCKED: b[2] * b[3]}
    events: list[Any] = []
    m = _match(view, rules, block, did, d, locked=False)
    if m is not None:
        events.append(m)
        return STATUS_OK, "", events
    # nothing fits now: lock the funds and wait
    k = keys.demand(b[1], block.height, block.index, did)
    if view.get(ESCROW) is None:
        view.put(ESCROW, DeviceRecord(b"", 0, 0, KIND_CONTRACT))
    _move(view, t.sender, ESCROW, d[D_LOCKED])
    view.kv_put(k, cbor.dumps(d))
    view.kv_put(keys.demand_index(did), k)
    events.append(["wait", did, d[D_UNTIL]])
    return STATUS_OK, "", events


def _may_take(view: StateView, buyer: bytes, supplier: DeviceRecord) -> bool:
    if not supplier.owner:
        return True
    if buyer == supplier.owner or RIGHT_BUY in supplier.rights_of(buyer):
        return True
    b = view.get(buyer)
    return b is not None and b.owner == supplier.owner


@lru_cache(maxsize=8192)
def offer_of(stored: bytes) -> Offer:
    """A stored offer, decoded (immutable, so decoded once per distinct value)."""
    return Offer.from_map(cbor.loads(stored))


def candidates(view: StateView, service: str, buyer: bytes, max_price: int, now: int
               ) -> list[Offer]:
    """Live offers a buyer may take at `now` for at most `max_price`."""
    out = []
    for _, v in view.kv_range(keys.offers_of(service)):
        o = offer_of(v)
        if o.expires <= now or o.price > max_price or o.supplier == buyer:
            continue
        s = view.get(o.supplier)
        if s is None or s.status != ACTIVE or not _may_take(view, buyer, s):
            continue
        out.append(o)
    return out


def plausibility_checks(view: StateView) -> dict:
    """The agreement deployment's {service: [oracle address, tolerance]}."""
    dep = chain.deployment(view, AGREEMENT)
    params = dep.get("params") if dep is not None else None
    checks = params.get("plausibility") if isinstance(params, dict) else None
    return checks if isinstance(checks, dict) else {}


def attested_only(view: StateView, offers: list[Offer], service: str) -> list[Offer]:
    """The offers a trust domain may match for `service`: where the
    agreement names plausibility oracles but none for this service, suppliers
    on probation are left out (their readings are sold only with
    neighbours' attestations). A domain without any oracle keeps them
    (it has no attestations to ask for; the probation caps still hold)."""
    checks = plausibility_checks(view)
    if not checks or service in checks:
        return offers
    return [o for o in offers if standing.level_of(view, o.supplier) != standing.PROBATION]


def _match(view: StateOverlay, rules: Rules, block: BlockInfo, did: bytes, d: dict,
           *, locked: bool) -> list[Any] | None:
    """Open an agreement for demand `d` if an offer fits; returns the match event."""
    buyer = d[D_BUYER]
    offers = candidates(view, d[D_SERVICE], buyer, d[D_MAX], block.time)
    if rules.trust:  # the chain's trust score (it folds the delivery record in)
        offers = attested_only(view, offers, d[D_SERVICE])
        o = choose(d[D_POLICY], offers, location=d[D_LOCATION],
                   trust=lambda s: standing.score_of(view, s))
    else:
        o = choose(d[D_POLICY], offers, location=d[D_LOCATION],
                   trust=lambda s: trust_score(supplier_record(view, s)))
    if o is None:
        return None
    qty = d[D_QTY]
    expiry = block.time + qty * o.interval_s * EXPIRY_FACTOR + EXPIRY_GRACE_S
    view.savepoint()
    if locked:  # release the waiting demand's funds first
        _move(view, ESCROW, buyer, d[D_LOCKED])
        _drop_demand(view, did)
    r = chain.call(view, block, caller=buyer, address=AGREEMENT, method="open",
                   args=[did, o.supplier, o.price, qty, expiry, o.service],
                   value=o.price * qty, fuel=MARKET_FUEL, by_ledger=True)
    if not r.ok:  # e.g. the contract was disabled meanwhile: the demand stays as it was
        view.rollback()
        return None
    view.release()
    return ["match", did, buyer, o.supplier, o.price, qty, expiry, o.service, o.interval_s,
            d[D_POLICY]]


def _drop_demand(view: StateOverlay, did: bytes) -> None:
    k = view.kv_get(keys.demand_index(did))
    if k is not None:
        view.kv_put(k, None)
        view.kv_put(keys.demand_index(did), None)


def _move(view: StateOverlay, src: bytes, dst: bytes, amount: int) -> None:
    s, d = view.get(src), view.get(dst)
    if s is None or d is None or s.balance < amount:
        raise RuntimeError("market move without funds")  # guarded by precheck
    view.put(src, s.with_seq_balance(s.last_seq, s.balance - amount))
    d = view.get(dst)
    assert d is not None
    view.put(dst, d.with_seq_balance(d.last_seq, d.balance + amount))


def _close(view: StateOverlay, t: txm.Tx, rules: Rules, block: BlockInfo
           ) -> tuple[int, str, list[Any]]:
    did = t.body[1]
    w = waiting_demand(view, did)
    if w is None:
        return _result(chain.call(view, block, caller=t.sender, address=AGREEMENT,
                                  method="close", args=[did], fuel=MARKET_FUEL),
                       AGREEMENT, "close")
    d = w[1]
    buyer = d[D_BUYER]
    if t.sender != buyer:
        if t.sender != rules.authority_id:
            return STATUS_FAILED, errors.NOT_AUTHORIZED, [["revert", "not-party", 0]]
        if block.time < d[D_UNTIL]:
            return STATUS_FAILED, errors.BAD_TX, [["revert", "not-expired", 0]]
    _move(view, ESCROW, buyer, d[D_LOCKED])
    _drop_demand(view, did)
    return STATUS_OK, "", [["demand-closed", did, buyer, d[D_LOCKED]]]
