"""A buyer's check of one reading against the supplier's on-chain commitment
(docs/MARKET.md): the commit call's receipt event names the batch (first
index, count, RFC 6962 root); the reading's audit path in that batch,
rebuilt from the batch's readings, must lead to the committed root, and the
reading must be signed by the supplier. Read-only over the chain store and
the stream store; `thingledger market check` prints the result."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.db.store import Store
from gateway.market.ledger.rules import AGREEMENT
from gateway.market.node.streams import StreamStore
from shared import errors, merkle, stream
from shared import tx as txm


@dataclass(frozen=True)
class Commitment:
    batch: int
    first: int
    count: int
    root: bytes
    height: int
    tx_id: bytes


@dataclass(frozen=True)
class Check:
    ok: bool
    reason: str  # "" | no-commitment | missing-reading | bad-signature | not-in-root
    commitment: Commitment | None
    value: int = 0
    scale: int = 0


def commitment(store: Store, agreement: bytes, index: int) -> Commitment | None:
    """The committed batch of `agreement` holding reading `index`, if any."""
    for t in store.txs_of_type(txm.TYPE_CONTRACT_CALL):
        for e in t.events:
            if len(e) == 7 and e[0] == AGREEMENT and e[1] == "delivery-committed" \
                    and e[2] == agreement:  # the agreement contract's, not a look-alike's
                _, _, _, batch, first, count, root = e
                if first <= index < first + count:
                    return Commitment(batch, first, count, root, t.height, t.id)
    return None


def check_reading(store: Store, streams: StreamStore, supplier_key: bytes, agreement: bytes,
                  index: int) -> Check:
    c = commitment(store, agreement, index)
    if c is None:
        return Check(False, "no-commitment", None)
    batch = streams.messages(agreement, c.first, c.count)
    if len(batch) != c.count:
        return Check(False, "missing-reading", c)
    leaf = batch[index - c.first]
    try:
        _, _, value, scale = stream.open_reading(leaf, supplier_key)
    except errors.TLError:
        return Check(False, "bad-signature", c)
    path = merkle.proof(merkle.levels([merkle.leaf_hash(m) for m in batch]), index - c.first)
    if not merkle.verify(leaf, index - c.first, c.count, path, c.root):
        return Check(False, "not-in-root", c)
    return Check(True, "", c, value, scale)
