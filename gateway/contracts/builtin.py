"""Built-in contract implementations (the domain's contract "code base").

Each is a singleton service per deployment: the admin deploys it once under
a label (with its parameters) and every device uses it through calls keyed by
its own ids (escrow id, agreement id, oracle round).

- escrow v1: open(eid, supplier, expiry) +value by the buyer;
  release(eid) by the buyer pays the supplier; refund(eid) returns the
  funds to the buyer: by the supplier at any time, by the buyer at/after
  expiry. get(eid) -> record or None.
- agreement v1 (params {"operator": id, "fee_bps": 0..10000}):
  open(aid, supplier, price, quantity, expiry) +value == price*quantity by
  the buyer; deliver(aid, seq, count, commitment) by the supplier: seq must
  be the next one (replay / gap refused), the host hook "verify-delivery"
  (aid, seq, count, commitment) -> bool decides; verified: pays
  min(price*count, remaining), operator gets fee_bps/10000 of it (floor),
  supplier the rest; not verified: nothing paid, the failure is recorded
  (failed += 1, event "delivery-failed") and the seq consumed: the call
  succeeds so the record stays on chain. close(aid): by the supplier at
  any time or by the buyer at/after expiry: unspent escrow back to the buyer.
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

from gateway.contracts.errors import BadValue, NotAuthorized
from gateway.contracts.runtime import Context, Contract, Registry, entry

REGISTRY = Registry()
register = REGISTRY.register

OPEN = "open"
RELEASED = "released"
REFUNDED = "refunded"
CLOSED = "closed"
BPS = 10000


@register
class Escrow(Contract):
    NAME = "escrow"
    VERSION = 1

    @staticmethod
    def _id(ctx: Context, x: Any) -> bytes:
        ctx.require(type(x) is bytes and 0 < len(x) <= 32, "id", BadValue)
        return b"e" + x

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

    def _load(self, ctx: Context, eid: bytes) -> dict:
        e = ctx.get(self._id(ctx, eid))
        ctx.require(e is not None, "unknown-escrow")
        ctx.require(e["state"] == OPEN, "not-open")
        return e

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
class Agreement(Contract):
    NAME = "agreement"
    VERSION = 1

    def init(self, ctx: Context, params: Any) -> None:
        ctx.require(type(params) is dict, "params", BadValue)
        op, fee = params.get("operator"), params.get("fee_bps")
        ctx.require(type(op) is bytes and len(op) == 16, "operator", BadValue)
        ctx.require(type(fee) is int and 0 <= fee <= BPS, "fee_bps", BadValue)

    @staticmethod
    def _id(ctx: Context, x: Any) -> bytes:
        ctx.require(type(x) is bytes and 0 < len(x) <= 32, "id", BadValue)
        return b"a" + x

    @entry
    def open(self, ctx: Context, aid: bytes, supplier: bytes, price: int, quantity: int,
             expiry: int) -> None:
        k = self._id(ctx, aid)
        ctx.require(type(supplier) is bytes and len(supplier) == 16, "supplier", BadValue)
        ctx.require(supplier != ctx.caller, "self-dealing", BadValue)
        ctx.require(type(price) is int and price > 0, "price", BadValue)
        ctx.require(type(quantity) is int and quantity > 0, "quantity", BadValue)
        ctx.require(type(expiry) is int and expiry > ctx.time, "expiry", BadValue)
        ctx.require(ctx.value == price * quantity, "escrow-amount", BadValue)
        ctx.require(ctx.get(k) is None, "exists")
        ctx.put(k, {"buyer": ctx.caller, "supplier": supplier, "price": price,
                    "remaining": ctx.value, "expiry": expiry, "next_seq": 0,
                    "delivered": 0, "failed": 0, "state": OPEN})
        ctx.emit("agreement-open", aid, ctx.caller, supplier, price, quantity)

    def _load(self, ctx: Context, aid: bytes) -> dict:
        a = ctx.get(self._id(ctx, aid))
        ctx.require(a is not None, "unknown-agreement")
        ctx.require(a["state"] == OPEN, "not-open")
        return a

    @entry
    def deliver(self, ctx: Context, aid: bytes, seq: int, count: int, commitment: bytes) -> bool:
        a = self._load(ctx, aid)
        ctx.require(ctx.caller == a["supplier"], "not-supplier", NotAuthorized)
        ctx.require(ctx.time < a["expiry"], "expired")
        ctx.require(type(seq) is int and type(count) is int and count > 0, "delivery", BadValue)
        ctx.require(type(commitment) is bytes and len(commitment) == 32, "commitment", BadValue)
        ctx.require(seq >= a["next_seq"], "replay")
        ctx.require(seq == a["next_seq"], "gap")
        a["next_seq"] = seq + 1
        if ctx.host("verify-delivery", aid, seq, count, commitment) is not True:
            a["failed"] += 1
            ctx.put(self._id(ctx, aid), a)
            ctx.emit("delivery-failed", aid, seq, a["supplier"])
            return False
        pay = min(a["price"] * count, a["remaining"])
        ctx.require(pay > 0, "escrow-spent")
        fee = pay * ctx.params["fee_bps"] // BPS
        if fee:
            ctx.transfer(ctx.params["operator"], fee)
        if pay - fee:
            ctx.transfer(a["supplier"], pay - fee)
        a["remaining"] -= pay
        a["delivered"] += count
        ctx.put(self._id(ctx, aid), a)
        ctx.emit("delivery-paid", aid, seq, pay - fee, fee)
        return True

    @entry
    def close(self, ctx: Context, aid: bytes) -> int:
        a = self._load(ctx, aid)
        if ctx.caller == a["buyer"]:
            ctx.require(ctx.time >= a["expiry"], "not-expired")
        else:
            ctx.require(ctx.caller == a["supplier"], "not-party", NotAuthorized)
        back = a["remaining"]
        if back:
            ctx.transfer(a["buyer"], back)
        a["remaining"] = 0
        a["state"] = CLOSED
        ctx.put(self._id(ctx, aid), a)
        ctx.emit("agreement-closed", aid, back)
        return back

    @entry
    def get(self, ctx: Context, aid: bytes) -> Any:
        return ctx.get(self._id(ctx, aid))


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
