"""Built-in contract implementations (the domain's contract "code base").

Each is a singleton service per deployment: the admin deploys it once under
a label (with its parameters) and every device uses it through calls keyed by
its own ids (escrow id, agreement id, oracle round).

- escrow v1: open(eid, supplier, expiry) +value by the buyer;
  release(eid) by the buyer pays the supplier; refund(eid) returns the
  funds to the buyer: by the supplier at any time, by the buyer at/after
  expiry. get(eid) -> record or None.
- agreement v1 (params {"operator": id, "fee_bps": 0..10000, "verifier"?:
  id (default the operator), "plausibility"?: {service: [oracle address,
  tolerance]}}): open(aid, supplier, price, quantity, expiry, service)
  +value == price*quantity by the buyer (the market opens it on a match);
  commit(aid, batch, first, count, root) by the supplier: batch must be the
  next one (replay / gap refused), first the next reading index, count
  within the quantity; verdict(aid, batch, ok, mean, round) by the
  verifier: paid (ok, and plausible where the service has an oracle:
  |mean - oracle result(round)| <= tolerance) moves min(price*count,
  remaining), the operator's fee_bps/10000 of it (floor) to the operator and
  the rest to the supplier; otherwise nothing is paid and the failure is
  counted in the agreement and in the supplier's record (record(supplier)
  -> {"paid", "failed"} batches): the call succeeds so the failure stays on
  chain. When every reading is committed and judged the agreement closes
  itself; close(aid): by the supplier at any time, by the buyer or the
  operator at/after expiry. Closing returns unspent escrow to the buyer.
- agreement v2: v1 whose open is the market's alone: only the ledger's
  matching step may open an agreement (ctx.by_ledger); a CONTRACT_CALL
  open, by anyone, fails with not-authorized / market-only. In v1 anyone
  could open an agreement under a waiting demand's id (the first 16 bytes
  of its public tx id) for 1 unit, and that demand could never match.
  Everything else is v1's; upgrading a v1 deployment keeps its storage.
- oracle v1 (params {"attestors": [id...], "m": int, "tolerance": int >= 0}):
  attest(round, value) by an attestor (others: not-authorized), once per
  round; the round is final as soon as m attestations lie within
  `tolerance` of each other (max - min <= tolerance): result = the lower
  median of the lowest such window of m sorted values. result(round) ->
  int or None.

Amounts are ints; ids are 16-byte account ids; times are block times.
"""

from __future__ import annotations

from typing import Any

from gateway.contracts.errors import BadValue, ContractError, NotAuthorized
from gateway.contracts.runtime import Context, Contract, ContractRegistry, entry, lint

REGISTRY = ContractRegistry()
register = REGISTRY.register

OPEN = "open"
RELEASED = "released"
REFUNDED = "refunded"
CLOSED = "closed"
BPS = 10000
MAX_PENDING = 16  # committed batches awaiting a verdict, per agreement


class _Records(Contract):
    """Base of the contracts that keep one record per caller-chosen id (1-32
    bytes) in storage under PREFIX + id; an open record has state OPEN."""

    PREFIX = b""
    MISSING = ""  # the revert detail of an unknown id

    def _id(self, ctx: Context, x: Any) -> bytes:
        ctx.require(type(x) is bytes and 0 < len(x) <= 32, "id", BadValue)
        return self.PREFIX + x

    def _load(self, ctx: Context, x: bytes) -> dict:
        r = ctx.get(self._id(ctx, x))
        ctx.require(r is not None, self.MISSING)
        ctx.require(r["state"] == OPEN, "not-open")
        return r


lint(_Records)  # registration lints the registered classes, not their base


@register
class Escrow(_Records):
    NAME = "escrow"
    VERSION = 1
    PREFIX = b"e"
    MISSING = "unknown-escrow"

    @entry
    def open(self, ctx: Context, eid: bytes, supplier: bytes, expiry: int) -> None:
        k = self._id(ctx, eid)
        ctx.require(ctx.value > 0, "no-value", BadValue)
        ctx.require(type(supplier) is bytes and len(supplier) == 16, "supplier", BadValue)
        ctx.require(type(expiry) is int and expiry > ctx.time, "expiry", BadValue)
        ctx.require(ctx.get(k) is None, "exists")
        ctx.put(k, {"buyer": ctx.caller, "supplier": supplier, "amount": ctx.value,
                    "expiry": expiry, "state": OPEN})
        ctx.emit("escrow-open", eid, ctx.caller, supplier, ctx.value)

    @entry
    def release(self, ctx: Context, eid: bytes) -> None:
        e = self._load(ctx, eid)
        ctx.require(ctx.caller == e["buyer"], "not-buyer", NotAuthorized)
        ctx.transfer(e["supplier"], e["amount"])
        e["state"] = RELEASED
        ctx.put(self._id(ctx, eid), e)
        ctx.emit("escrow-release", eid, e["amount"])

    @entry
    def refund(self, ctx: Context, eid: bytes) -> None:
        e = self._load(ctx, eid)
        if ctx.caller == e["buyer"]:
            ctx.require(ctx.time >= e["expiry"], "not-expired")
        else:
            ctx.require(ctx.caller == e["supplier"], "not-party", NotAuthorized)
        ctx.transfer(e["buyer"], e["amount"])
        e["state"] = REFUNDED
        ctx.put(self._id(ctx, eid), e)
        ctx.emit("escrow-refund", eid, e["amount"])

    @entry
    def get(self, ctx: Context, eid: bytes) -> Any:
        return ctx.get(self._id(ctx, eid))


@register
class Agreement(_Records):
    NAME = "agreement"
    VERSION = 1
    PREFIX = b"a"
    MISSING = "unknown-agreement"

    def init(self, ctx: Context, params: Any) -> None:
        ctx.require(type(params) is dict, "params", BadValue)
        op, fee = params.get("operator"), params.get("fee_bps")
        ctx.require(type(op) is bytes and len(op) == 16, "operator", BadValue)
        ctx.require(type(fee) is int and 0 <= fee <= BPS, "fee_bps", BadValue)
        ver = params.get("verifier", op)
        ctx.require(type(ver) is bytes and len(ver) == 16, "verifier", BadValue)
        checks = params.get("plausibility", {})
        ctx.require(type(checks) is dict, "plausibility", BadValue)
        for service in ctx.iter(sorted(checks)):
            c = checks[service]
            ctx.require(type(service) is str and type(c) is list and len(c) == 2
                        and type(c[0]) is bytes and len(c[0]) == 16
                        and type(c[1]) is int and c[1] >= 0, "plausibility", BadValue)

    @entry
    def open(self, ctx: Context, aid: bytes, supplier: bytes, price: int, quantity: int,
             expiry: int, service: str) -> None:
        k = self._id(ctx, aid)
        ctx.require(type(supplier) is bytes and len(supplier) == 16, "supplier", BadValue)
        ctx.require(supplier != ctx.caller, "self-dealing", BadValue)
        ctx.require(type(price) is int and price > 0, "price", BadValue)
        ctx.require(type(quantity) is int and quantity > 0, "quantity", BadValue)
        ctx.require(type(expiry) is int and expiry > ctx.time, "expiry", BadValue)
        ctx.require(type(service) is str and 0 < len(service) <= 24, "service", BadValue)
        ctx.require(ctx.value == price * quantity, "escrow-amount", BadValue)
        ctx.require(ctx.get(k) is None, "exists")
        ctx.put(k, {"buyer": ctx.caller, "supplier": supplier, "price": price,
                    "quantity": quantity, "service": service, "remaining": ctx.value,
                    "expiry": expiry, "next_batch": 0, "next_index": 0, "pending": {},
                    "paid": 0, "failed": 0, "state": OPEN})
        ctx.emit("agreement-open", aid, ctx.caller, supplier, price, quantity)

    @entry
    def commit(self, ctx: Context, aid: bytes, batch: int, first: int, count: int,
               root: bytes) -> None:
        """The supplier commits readings first..first+count-1 (batch `batch`,
        counted from 0) by their RFC 6962 root; paid only after a verdict."""
        a = self._load(ctx, aid)
        ctx.require(ctx.caller == a["supplier"], "not-supplier", NotAuthorized)
        ctx.require(ctx.time < a["expiry"], "expired")
        ctx.require(type(batch) is int and type(first) is int and type(count) is int,
                    "delivery", BadValue)
        ctx.require(type(root) is bytes and len(root) == 32, "root", BadValue)
        ctx.require(batch >= a["next_batch"], "replay")
        ctx.require(batch == a["next_batch"], "gap")
        ctx.require(first == a["next_index"], "first")
        ctx.require(0 < count <= a["quantity"] - first, "count", BadValue)
        ctx.require(len(a["pending"]) < MAX_PENDING, "too-many-pending")
        a["pending"][batch] = [first, count, root]
        a["next_batch"] = batch + 1
        a["next_index"] = first + count
        ctx.put(self._id(ctx, aid), a)
        ctx.emit("delivery-committed", aid, batch, first, count, root)

    @entry
    def verdict(self, ctx: Context, aid: bytes, batch: int, ok: bool, mean: int,
                rnd: Any) -> bool:
        """The verifier's check of a committed batch against the stream it
        holds (`ok`: all readings present, signed, hashing to the root;
        `mean`: their integer mean). Where the service has a plausibility
        oracle, `mean` must also lie within its tolerance of the oracle's
        result for round `rnd`. Paid: price * count from the escrow (the
        operator's fee first). Not paid: the failure is counted in the
        agreement and in the supplier's record. Returns whether it paid."""
        a = self._load(ctx, aid)
        ctx.require(ctx.caller == ctx.params.get("verifier", ctx.params["operator"]),
                    "not-verifier", NotAuthorized)
        ctx.require(type(ok) is bool and type(mean) is int, "verdict", BadValue)
        p = a["pending"].get(batch)
        ctx.require(p is not None, "unknown-batch")
        del a["pending"][batch]
        why = "" if ok else "stream"
        check = ctx.params.get("plausibility", {}).get(a["service"])
        if ok and check is not None:
            try:
                ref = ctx.call(check[0], "result", rnd)
            except ContractError:
                ref = None
            if ref is None:
                why = "no-attestation"
            elif mean - ref > check[1] or ref - mean > check[1]:
                why = "implausible"
        rk = b"r" + a["supplier"]
        rec = ctx.get(rk) or {"paid": 0, "failed": 0}
        if why:
            a["failed"] += 1
            rec["failed"] += 1
            ctx.emit("delivery-failed", aid, batch, a["supplier"], why)
        else:
            pay = min(a["price"] * p[1], a["remaining"])
            fee = pay * ctx.params["fee_bps"] // BPS
            if fee:
                ctx.transfer(ctx.params["operator"], fee)
            if pay - fee:
                ctx.transfer(a["supplier"], pay - fee)
            a["remaining"] -= pay
            a["paid"] += p[1]
            rec["paid"] += 1
            ctx.emit("delivery-paid", aid, batch, a["supplier"], pay - fee, fee)
        ctx.put(rk, rec)
        if a["next_index"] == a["quantity"] and not a["pending"]:
            self._end(ctx, aid, a, CLOSED)
        else:
            ctx.put(self._id(ctx, aid), a)
        return not why

    def _end(self, ctx: Context, aid: bytes, a: dict, state: str) -> int:
        back = a["remaining"]
        if back:
            ctx.transfer(a["buyer"], back)
        a["remaining"] = 0
        a["state"] = state
        a["pending"] = {}
        ctx.put(self._id(ctx, aid), a)
        ctx.emit("agreement-closed", aid, a["buyer"], a["supplier"], back)
        return back

    @entry
    def close(self, ctx: Context, aid: bytes) -> int:
        """By the supplier at any time; by the buyer or the operator once
        expired. Unspent escrow goes back to the buyer."""
        a = self._load(ctx, aid)
        if ctx.caller != a["supplier"]:
            ctx.require(ctx.caller == a["buyer"] or ctx.caller == ctx.params["operator"],
                        "not-party", NotAuthorized)
            ctx.require(ctx.time >= a["expiry"], "not-expired")
        return self._end(ctx, aid, a, CLOSED)

    @entry
    def get(self, ctx: Context, aid: bytes) -> Any:
        return ctx.get(self._id(ctx, aid))

    @entry
    def record(self, ctx: Context, supplier: bytes) -> Any:
        """The supplier's delivery record: {"paid": batches, "failed": batches}."""
        ctx.require(type(supplier) is bytes and len(supplier) == 16, "supplier", BadValue)
        return ctx.get(b"r" + supplier) or {"paid": 0, "failed": 0}


@register
class AgreementV2(Agreement):
    VERSION = 2

    @entry
    def open(self, ctx: Context, aid: bytes, supplier: bytes, price: int, quantity: int,
             expiry: int, service: str) -> None:
        """Only the ledger's matching step opens an agreement (its id is the
        demand's, which anyone can read): v1's open otherwise."""
        ctx.require(ctx.by_ledger, "market-only", NotAuthorized)
        Agreement.open(self, ctx, aid, supplier, price, quantity, expiry, service)


@register
class Oracle(Contract):
    NAME = "oracle"
    VERSION = 1

    def init(self, ctx: Context, params: Any) -> None:
        ctx.require(type(params) is dict, "params", BadValue)
        att, m, tol = params.get("attestors"), params.get("m"), params.get("tolerance")
        ctx.require(type(att) is list and att, "attestors", BadValue)
        seen = []
        for a in ctx.iter(att):
            ctx.require(type(a) is bytes and len(a) == 16 and a not in seen, "attestors",
                        BadValue)
            seen.append(a)
        ctx.require(type(m) is int and 1 <= m <= len(att), "m", BadValue)
        ctx.require(type(tol) is int and tol >= 0, "tolerance", BadValue)

    @entry
    def attest(self, ctx: Context, rnd: Any, value: int) -> Any:
        p = ctx.params
        ctx.require(ctx.caller in p["attestors"], "not-attestor", NotAuthorized)
        ctx.require(type(value) is int, "value", BadValue)
        sk = self._skey(rnd)
        r = ctx.get(sk) or {"att": {}, "result": None}
        ctx.require(r["result"] is None, "finalized")
        ctx.require(ctx.caller not in r["att"], "duplicate")
        r["att"][ctx.caller] = value
        ctx.emit("attested", rnd, ctx.caller, value)
        vals = sorted(r["att"].values())
        m, tol = p["m"], p["tolerance"]
        for i in ctx.range(len(vals) - m + 1):
            if vals[i + m - 1] - vals[i] <= tol:
                r["result"] = vals[i + (m - 1) // 2]
                ctx.emit("oracle-result", rnd, r["result"])
                break
        ctx.put(sk, r)
        return r["result"]

    @staticmethod
    def _skey(rnd: Any) -> bytes:
        if type(rnd) is int and 0 <= rnd < 2**64:
            return b"i" + rnd.to_bytes(8, "big")
        if type(rnd) is bytes and 0 < len(rnd) <= 32:
            return b"b" + rnd
        raise BadValue("round")

    @entry
    def result(self, ctx: Context, rnd: Any) -> Any:
        r = ctx.get(self._skey(rnd))
        return None if r is None else r["result"]
