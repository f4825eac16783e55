"""A cross-domain purchase checked in the buyer's domain (docs/CROSSDOMAIN.md,
"Cross-domain service purchase"): what a buyer in domain B learns of domain
A's market is believed only as far as it is proven against a header of A
that B's light client of A trusts (kept in B's state, gateway/xdomain/client.py).

- an offer of A: its entry in A's state (shared/stateproof membership proof
  against the trusted header's state_root);
- an agreement of A: the receipt of the buyer's DEMAND (its `match` event),
  an RFC 6962 leaf of the trusted header's receipts_root;
- a delivery commitment: the receipt of the supplier's `commit` call (its
  `delivery-committed` event: batch, first index, count, root), likewise;
- the supplier's key: its principal record in A's state (keyed by its birth
  id, holding its current key, which a rotation or recovery replaced)
  proven against the trusted header's state_root, at a height at or after
  the batch's commit;
- the readings themselves (off chain, from A's data topic): each signed by
  that key, indexed in order, and hashing to the committed root. Readings
  signed by a key the supplier retired before the proven height fail.

Pure functions over a state view of B (anything with `kv_get`; `StoreKv`
adapts a read-only chain store): a Trust checks B's client of A once and
proves against the headers it trusts; B's gateways run it on XPURCHASE
(gateway/xdomain/recorded.py), the buyer through the module's functions. Refusals are ProofError (bad-proof) with a
detail: untrusted-height, header-mismatch, receipt-proof, not-committed,
not-matched, offer-proof, key-proof, wrong-supplier-key, stale-key,
missing-reading, bad-reading, not-in-root; and the light client's own
reasons (unknown-domain, client-frozen, client-expired).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from gateway.errors import RuleError
from gateway.ledger import keys
from gateway.market.ledger import rules as market
from gateway.xdomain import client as lc
from shared import cbor, errors, header, merkle, messages, stateproof, stream

COMMITTED = "delivery-committed"


class KvRanges(Protocol):
    def kv_range(self, prefix: bytes, limit: int = 1000) -> list[tuple[bytes, bytes]]: ...


class StoreKv:
    """`kv_get` over a chain store (read-only readers of B's data folder)."""

    def __init__(self, store: KvRanges) -> None:
        self.store = store

    def kv_get(self, key: bytes) -> bytes | None:
        rows = self.store.kv_range(key, 1)
        return rows[0][1] if rows and rows[0][0] == key else None


@dataclass(frozen=True)
class ProvenAgreement:
    id: bytes
    buyer: bytes
    supplier: bytes
    price: int
    quantity: int
    service: str
    height: int = 0  # A's height of the DEMAND's receipt


@dataclass(frozen=True)
class ProvenKey:
    """The key A's state holds for `supplier` (its birth id) at `height`."""

    supplier: bytes
    key: bytes
    height: int


@dataclass(frozen=True)
class ProvenCommitment:
    batch: int
    first: int
    count: int
    root: bytes
    height: int


class Trust:
    """What B's light client of `domain`, `client`, lets B believe: each
    proof checked against a header it trusts. The client is checked once,
    by whoever builds the Trust: `Trust.of` (lc.usable: RuleError
    unknown-domain, client-frozen, or at `now`, client-expired); the
    module's functions below build one per proof and refuse with
    ProofError; XPURCHASE (gateway/xdomain/recorded.py) one per check of
    a tx."""

    def __init__(self, view: Any, domain: str, client: lc.Client) -> None:
        self.view, self.domain, self.client = view, domain, client

    @classmethod
    def of(cls, view: Any, domain: str, now: int | None = None) -> Trust:
        """B's client of `domain` if it may prove anything (at `now`;
        None: no expiry check); RuleError with its reason otherwise."""
        return cls(view, domain, lc.usable(view, domain, now))

    def header(self, height: int) -> lc.Trusted:
        t = lc.trusted(self.view, self.domain, height)
        if t is None:
            raise errors.ProofError("untrusted-height")
        return t

    def receipt(self, receipt: bytes) -> tuple[int, dict[int, Any]]:
        """A receipt reply of the domain (shared/messages.receipt) proven
        against the header B's client trusts at its height: (height, the
        parsed reply). The header in the reply must BE that header (same
        hash), and the receipt's leaf must be in its receipts_root."""
        m = messages.parse(receipt)
        if m.get(messages.M_KIND) != messages.KIND_RECEIPT:
            raise errors.ProofError("not-receipt")
        height = m.get(messages.M_HEIGHT)
        if not isinstance(height, int) or isinstance(height, bool) or not 0 <= height < 1 << 63:
            raise errors.ProofError("not-receipt")  # (a state key holds 8 bytes of height)
        t = self.header(height)
        hb = m.get(messages.M_HEADER)
        if not isinstance(hb, bytes) or header.block_hash(hb) != t.hash:
            raise errors.ProofError("header-mismatch")
        leaf = messages.receipt_leaf(m[messages.M_TX], m.get(messages.M_STATUS),
                                     m[messages.M_REASON], m.get(messages.M_EVENTS))
        if not merkle.verify(leaf, m.get(messages.M_INDEX), m.get(messages.M_SIZE),
                             m.get(messages.M_PROOF), t.receipts_root):
            raise errors.ProofError("receipt-proof")
        return height, m

    def agreement(self, demand_receipt: bytes) -> ProvenAgreement:
        """The agreement a DEMAND of the domain opened, from its proven receipt."""
        height, m = self.receipt(demand_receipt)
        for e in _ok_events(m):
            if len(e) >= 8 and e[0] == "match":
                return ProvenAgreement(e[1], e[2], e[3], e[4], e[5], e[7], height)
        raise errors.ProofError("not-matched")

    def commitments(self, commit_receipt: bytes, agreement_id: bytes
                    ) -> list[ProvenCommitment]:
        """The delivery commitments of `agreement_id` a proven receipt holds."""
        height, m = self.receipt(commit_receipt)
        out = [ProvenCommitment(e[3], e[4], e[5], e[6], height) for e in _ok_events(m)
               if len(e) == 7 and e[0] == market.AGREEMENT and e[1] == COMMITTED
               and e[2] == agreement_id]  # emitted by the agreement contract, no other
        if not out:
            raise errors.ProofError("not-committed")
        return out

    def offer(self, height: int, service: str, supplier: bytes, stored: bytes,
              proof: list[Any]) -> market.Offer:
        """An offer of the domain (its stored value) proven to be in its
        state at the trusted header of `height`."""
        t = self.header(height)
        key = keys.offer(service, supplier)
        vh = stateproof.value_hash(cbor.dumps([key, stored]))
        if not stateproof.check(t.state_root, stateproof.kv_key(key), vh, proof):
            raise errors.ProofError("offer-proof")
        return market.offer_of(stored)

    def supplier_key(self, height: int, supplier: bytes, leaf: bytes | None,
                     proof: list[Any]) -> ProvenKey:
        """The current key of principal `supplier` of the domain: its state
        leaf (shared/stateproof account leaf, cbor([id, pubkey, ...]))
        proven against the trusted header of `height`. The id is the hash of
        the birth key; the leaf holds the key that signs now (after any
        rotation)."""
        t = self.header(height)
        if leaf is None or not stateproof.check_account(t.state_root, supplier, leaf, proof):
            raise errors.ProofError("key-proof")
        try:
            rec = cbor.loads(leaf)
        except errors.TLError:
            raise errors.ProofError("key-proof") from None
        if not isinstance(rec, list) or len(rec) < 2 or rec[0] != supplier \
                or not isinstance(rec[1], bytes):
            raise errors.ProofError("key-proof")
        return ProvenKey(supplier, rec[1], height)


def _ok_events(m: dict[int, Any]) -> list[Any]:
    ev = m.get(messages.M_EVENTS)
    if m.get(messages.M_STATUS) != messages.STATUS_OK or not isinstance(ev, list):
        return []
    return [e for e in ev if isinstance(e, list)]


def trust(view: Any, domain: str, now: int | None = None) -> Trust:
    """Trust.of(view, domain, now), its client's refusal as a ProofError whose
    detail is the client's reason (unknown-domain, client-frozen,
    client-expired)."""
    try:
        return Trust.of(view, domain, now)
    except RuleError as e:
        raise errors.ProofError(e.reason) from None


def proven_receipt(view: Any, domain: str, receipt: bytes, now: int | None = None
                   ) -> tuple[int, dict[int, Any]]:
    return trust(view, domain, now).receipt(receipt)


def agreement(view: Any, domain: str, demand_receipt: bytes, now: int | None = None
              ) -> ProvenAgreement:
    return trust(view, domain, now).agreement(demand_receipt)


def commitments(view: Any, domain: str, commit_receipt: bytes, agreement_id: bytes,
                now: int | None = None) -> list[ProvenCommitment]:
    return trust(view, domain, now).commitments(commit_receipt, agreement_id)


def offer(view: Any, domain: str, height: int, service: str, supplier: bytes,
          stored: bytes, proof: list[Any], now: int | None = None) -> market.Offer:
    return trust(view, domain, now).offer(height, service, supplier, stored, proof)


def supplier_key(view: Any, domain: str, height: int, supplier: bytes, leaf: bytes | None,
                 proof: list[Any], now: int | None = None) -> ProvenKey:
    return trust(view, domain, now).supplier_key(height, supplier, leaf, proof)


def check_batch(a: ProvenAgreement, c: ProvenCommitment, key: ProvenKey, readings: list[bytes]
                ) -> list[tuple[int, int, int]]:
    """The readings of batch `c` (in index order), checked: signed by the
    key A's state holds for the agreement's supplier at a height at or after
    the commit (`supplier_key`: a key proven earlier may have been retired
    by then), for this agreement, indexed c.first.., and their RFC 6962 root
    the committed one. Returns (index, value, scale) each."""
    if key.supplier != a.supplier:
        raise errors.ProofError("wrong-supplier-key")
    if key.height < c.height:
        raise errors.ProofError("stale-key")
    supplier_pub = key.key
    if len(readings) != c.count:
        raise errors.ProofError("missing-reading")
    out = []
    for i, r in enumerate(readings):
        try:
            aid, index, value, scale = stream.open_reading(r, supplier_pub)
        except errors.TLError:
            raise errors.ProofError("bad-reading") from None
        if aid != a.id or index != c.first + i:
            raise errors.ProofError("bad-reading")
        out.append((index, value, scale))
    if merkle.root(readings) != c.root:
        raise errors.ProofError("not-in-root")
    return out
