"""Cross-domain purchases recorded in the buyer's domain (docs/CROSSDOMAIN.md,
"Purchases recorded in B"): the tx type XPURCHASE (30), by which a buyer in
domain B records in B's state what it bought in domain A's market, each
step proven against a header of A that B's light client of A trusts. B's
gateways check the proofs with gateway/xdomain/purchase.py (pure functions
of B's state, the tx and the block's time), so the record is B's, not the
buyer's: anyone in B (a board, through its own gateway's receipts and state
proofs) can rely on it.

XPURCHASE (30) {1: A (the market's domain), 2: "agree" | "deliver",
    3: A's receipt reply (shared/messages.receipt: the receipt, its header,
    its RFC 6962 path), 4: agreement id (deliver only), 5?: an agreement id
    of this domain the purchase serves (agree only: the link, below)}, by
    the buyer:
  agree    the receipt of the buyer's DEMAND in A, its `match` event naming
           the agreement. Stored under xq<A> 00 <agreement id> as
           cbor([buyer, supplier, price, quantity, service, height of A,
           batches recorded, readings committed]); event
           ["xpurchase", A, agreement id, supplier, price, quantity(, the
           agreement of this domain it serves, if linked)].
  deliver  the receipt of the supplier's `commit` call in A, its
           `delivery-committed` events of this agreement. Each batch is
           stored under xd<A> 00 <agreement id> <batch:8> as
           cbor([first index, count, root, height of A]) and counted in the
           purchase; event ["xdelivery", A, agreement id, batch, first,
           count, root] per batch.
Refusals (reason, detail), nothing changed: unknown-domain, client-frozen,
client-expired (no usable client of A); wrong-domain (own-domain);
bad-proof (untrusted-height, header-mismatch, receipt-proof, not-receipt,
not-matched, not-committed); not-authorized (wrong-buyer: the agreement's
buyer is another id; ids are the same in both domains); duplicate
(purchase: agreed already; batch: a batch recorded already, or twice in one
receipt); unknown-agreement (deliver before agree). An expired client is
known only at the block's time: the tx is then included as failed
(client-expired), its fee and seq taken.

The link (agree with 5: an agreement id of THIS domain, B): the purchase
serves that agreement, in which the buyer in A is the supplier (a reseller,
tools/resell.py). B's gateways check that the agreement exists
(unknown-agreement, link-unknown), is open (bad-link, closed), the sender is
its supplier (not-authorized, not-supplier), the quantities are equal
(bad-link, quantity), it has no batch committed yet (bad-link, delivering:
B's batch k must be A's batch k), and no purchase is linked to it yet
(duplicate, linked). Stored both ways: the purchase record's 9th field,
and xl<agreement> -> cbor([A, agreement in A]). Then B's market pays batch k
of the linked agreement only once B holds the deliver record of A's batch k
with the same first index and count (`payment_hold`, registered with the
market by gateway/plugins.py): until then a paying verdict is refused
(unproven, delivery-not-recorded) and the operator waits; a record with
another first index or count never lets it be paid (unproven,
delivery-mismatch: the operator fails the batch). An unproven batch at the
agreement's end is not paid: its escrow goes back to the buyer.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from gateway.errors import RuleError
from gateway.ledger import txtypes
from gateway.ledger.validate import body_keys, need_id
from gateway.market.ledger import rules as market
from gateway.xdomain import client as lc
from gateway.xdomain import purchase
from shared import cbor, errors, reasons, txdecode
from shared import tx as txm
from shared import xpacket as xp
from shared.messages_gateway import STATUS_FAILED, STATUS_OK
from shared.topics_gateway import is_domain_name

AGREE, DELIVER = "agree", "deliver"
MAX_RECEIPT = 3072  # bytes of A's receipt reply (a tx is at most 4 KiB)


@dataclass(frozen=True)
class Purchase:
    """A purchase recorded in this domain's state."""

    domain: str  # the market's domain (A)
    id: bytes  # the agreement id in A
    buyer: bytes
    supplier: bytes
    price: int
    quantity: int
    service: str
    height: int  # A's height of the agreement's receipt
    batches: int = 0
    readings: int = 0
    serves: bytes | None = None  # the agreement of this domain it serves (the link)

    def encode(self) -> bytes:
        fields = [self.buyer, self.supplier, self.price, self.quantity, self.service,
                  self.height, self.batches, self.readings]
        if self.serves is not None:  # an unlinked record keeps its 8 fields
            fields.append(self.serves)
        return cbor.dumps(fields)

    @classmethod
    def decode(cls, domain: str, agreement: bytes, raw: bytes) -> Purchase:
        return cls(domain, agreement, *cbor.loads(raw))


@dataclass(frozen=True)
class Batch:
    """A delivery commitment of a recorded purchase."""

    batch: int
    first: int
    count: int
    root: bytes
    height: int  # A's height of the commit's receipt

    @classmethod
    def decode(cls, batch: int, raw: bytes) -> Batch:
        return cls(batch, *cbor.loads(raw))


def get(view: Any, domain: str, agreement: bytes) -> Purchase | None:
    raw = view.kv_get(xp.purchase_key(domain, agreement))
    return None if raw is None else Purchase.decode(domain, agreement, raw)


def purchases(view: Any) -> list[Purchase]:
    """Every recorded purchase (any object with `kv_range`: a state or a
    read-only store), in key order: by domain, then agreement id."""
    out = []
    for k, v in view.kv_range(xp.PURCHASE):
        name, _, aid = k[len(xp.PURCHASE):].partition(b"\x00")
        out.append(Purchase.decode(name.decode(), aid, v))
    return out


def link(view: Any, agreement: bytes) -> tuple[str, bytes] | None:
    """The purchase (A, agreement id in A) linked to this domain's
    `agreement`, if one is."""
    raw = view.kv_get(xp.link_key(agreement))
    if raw is None:
        return None
    domain, aid = cbor.loads(raw)
    return domain, aid


def delivery(view: Any, domain: str, agreement: bytes, batch: int) -> Batch | None:
    raw = view.kv_get(xp.delivery_key(domain, agreement, batch))
    return None if raw is None else Batch.decode(batch, raw)


def payment_hold(view: Any, agreement: bytes, batch: int, first: int, count: int
                 ) -> market.Hold | None:
    """The market's guard (gateway/plugins.py): batch `batch` (`first`,
    `count`) of this domain's `agreement` may be paid only once the purchase
    linked to it has A's batch `batch` recorded with the same first index
    and count. None for an agreement no purchase is linked to."""
    linked = link(view, agreement)
    if linked is None:
        return None
    d = delivery(view, linked[0], linked[1], batch)
    if d is None:
        return market.Hold(reasons.UNPROVEN, "delivery-not-recorded")
    if (d.first, d.count) != (first, count):
        return market.Hold(reasons.UNPROVEN, "delivery-mismatch", final=True)
    return None


def batches(view: Any, p: Purchase) -> list[Batch]:
    prefix = xp.deliveries_of(p.domain, p.id)
    return [Batch.decode(int.from_bytes(k[len(prefix):], "big"), v)
            for k, v in view.kv_range(prefix)]


# ---- schema (stateless, TxError) ----------------------------------------------------

def check_body(t: txm.Tx) -> None:
    b = t.body
    body_keys(b, (1, 2, 3), (4, 5))
    if not is_domain_name(b[1]):
        raise errors.TxError("bad-domain")
    if b[2] not in (AGREE, DELIVER):
        raise errors.TxError("bad-kind")
    if not isinstance(b[3], bytes) or not b[3]:
        raise errors.TxError("bad-receipt")
    if len(b[3]) > MAX_RECEIPT:
        raise errors.TooLarge("receipt-too-large")
    if (b[2] == DELIVER) != (4 in b):
        raise errors.TxError("bad-agreement")
    if 4 in b:
        need_id(b[4], "bad-agreement")
    if 5 in b:
        if b[2] != AGREE:
            raise errors.TxError("bad-link")
        need_id(b[5], "bad-link")


# ---- checks and effects -------------------------------------------------------------

def _proof(fn: Any, *args: Any) -> Any:
    try:
        return fn(*args)
    except errors.ProofError as e:
        raise RuleError(errors.BAD_PROOF, e.detail) from None
    except errors.TLError as e:  # a malformed reply: its CBOR, its fields
        raise RuleError(errors.BAD_PROOF, e.detail or e.reason) from None


def _trust(view: Any, t: txm.Tx, now: int | None) -> purchase.Trust:
    """B's client of the tx's domain, if usable (at `now`; None: no expiry
    check); RuleError otherwise."""
    a = t.body[1]
    if a == t.domain:
        raise RuleError(reasons.WRONG_DOMAIN, "own-domain")
    return purchase.Trust.of(view, a, now)


def _check(view: Any, t: txm.Tx, trust: purchase.Trust
           ) -> tuple[Purchase, list[purchase.ProvenCommitment]]:
    """What the tx records: the purchase (new on agree, updated on deliver)
    and the new batches, proven with `trust` (its client checked by the
    caller); RuleError if refused."""
    b = t.body
    a = trust.domain
    if b[2] == AGREE:
        ag = _proof(trust.agreement, b[3])
        if ag.buyer != t.sender:
            raise RuleError(errors.NOT_AUTHORIZED, "wrong-buyer")
        if get(view, a, ag.id) is not None:
            raise RuleError(reasons.DUPLICATE, "purchase")
        serves = b.get(5)
        if serves is not None:
            _check_link(view, t.sender, serves, ag.quantity)
        return Purchase(a, ag.id, ag.buyer, ag.supplier, ag.price, ag.quantity, ag.service,
                        ag.height, serves=serves), []
    p = get(view, a, b[4])
    if p is None:
        raise RuleError(reasons.UNKNOWN_AGREEMENT, "not-recorded")
    if p.buyer != t.sender:
        raise RuleError(errors.NOT_AUTHORIZED, "wrong-buyer")
    cs = _proof(trust.commitments, b[3], p.id)
    seen: set[int] = set()
    for c in cs:
        if c.batch in seen or view.kv_get(xp.delivery_key(a, p.id, c.batch)) is not None:
            raise RuleError(reasons.DUPLICATE, "batch")
        seen.add(c.batch)
    return p, cs


def _check_link(view: Any, sender: bytes, serves: bytes, quantity: int) -> None:
    """The agreement of this domain a purchase of `quantity` readings is to
    serve: open, supplied by the sender, of that quantity, nothing committed
    yet, no purchase linked to it; RuleError otherwise."""
    g = market.agreement(view, serves)
    if g is None:
        raise RuleError(reasons.UNKNOWN_AGREEMENT, "link-unknown")
    if g["state"] != "open":
        raise RuleError(reasons.BAD_LINK, "closed")
    if g["supplier"] != sender:
        raise RuleError(errors.NOT_AUTHORIZED, "not-supplier")
    if g["quantity"] != quantity:
        raise RuleError(reasons.BAD_LINK, "quantity")
    if g["next_batch"] != 0:
        raise RuleError(reasons.BAD_LINK, "delivering")
    if link(view, serves) is not None:
        raise RuleError(reasons.DUPLICATE, "linked")


def precheck(view: Any, t: txm.Tx, rules: Any, rec: Any) -> None:
    _check(view, t, _trust(view, t, None))


def apply(view: Any, t: txm.Tx, rules: Any, block: Any) -> tuple[int, str, list[Any]]:
    """The effects. The ledger runs `precheck` on this view just before
    (gateway/ledger/state.execute): the client is known, not frozen, and
    the proofs hold; what needs the block's time is checked here, once: an
    expired client makes the tx included as failed with that reason."""
    a = t.body[1]
    c = lc.get(view, a)  # known and not frozen (precheck)
    if c is None or lc.expired(view, c, block.time):
        return STATUS_FAILED, reasons.CLIENT_EXPIRED, []
    try:
        p, cs = _check(view, t, purchase.Trust(view, a, c))
    except RuleError as e:
        return STATUS_FAILED, e.reason, []
    if t.body[2] == AGREE:
        view.kv_put(xp.purchase_key(a, p.id), p.encode())
        event = ["xpurchase", a, p.id, p.supplier, p.price, p.quantity]
        if p.serves is not None:
            view.kv_put(xp.link_key(p.serves), cbor.dumps([a, p.id]))
            event.append(p.serves)
        return STATUS_OK, "", [event]
    events = []
    for c in cs:
        view.kv_put(xp.delivery_key(a, p.id, c.batch),
                    cbor.dumps([c.first, c.count, c.root, c.height]))
        events.append(["xdelivery", a, p.id, c.batch, c.first, c.count, c.root])
    done = replace(p, batches=p.batches + len(cs), readings=p.readings + sum(c.count for c in cs))
    view.kv_put(xp.purchase_key(a, p.id), done.encode())
    return STATUS_OK, "", events


TX_TYPE = txtypes.TxType(txdecode.TYPE_XPURCHASE, "xdomain", check_body, precheck, apply,
                         isolated=True)
