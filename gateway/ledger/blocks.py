"""Block production: execute transactions, build roots, sign the header.

`build_block(prev, txs, state, time, authority_priv, authority_id, domain=,
rules=)` runs `txs` in order through state.apply on a StateOverlay over
`state` (which is not modified), and returns a `Block` with
- `txs` / `receipts`: the included transactions and their receipts (status,
  reason, events; `Receipt.leaf` = messages.receipt_leaf bytes),
- `dropped`: (tx, RuleError) for txs that turned out not includable at
  execution time (e.g. a fee no longer covered): the service sends
  rejections for them; they are not in the block,
- `diff`: device id -> new DeviceRecord, and `kv_diff`: stored key -> new
  value or None (deleted) (what the store writes and what State.apply_diff
  folds in after the commit),
- header fields, header bytes, the authority-signed header, the block hash,
- `cert`: on a chain with a consensus section (gateway/ledger/consensus.py)
  the commit certificate once the block is final: the builder makes it when
  its own vote reaches the threshold (authority mode: k = 1); a quorum's is
  gathered from the validators' votes and set later. None on older chains;
- `proof(i)` / `receipt_message(i)`: the RFC 6962 audit path of receipt i
  and the ready-to-publish receipt reply (shared/messages.receipt: format 2
  with the certificate on a chain with a consensus section, else format 1).
Roots: tx_root over the txs' COSE bytes, receipts_root over receipt leaves
(one merkle.levels pass, proofs read from it: O(n log n) for all), state_root
from the overlay (the state tree re-hashes only the changed entries' paths;
`nodes` is the tree's node diff the store writes with the block).

Signatures are NOT verified here: txs must have passed validate.check_stateful
at ingress (state.apply re-verifies only senders whose key was rotated or
recovered, and the statements inside identity txs, so a key or owner change
between ingress and execution drops the tx instead of including it).
Identity rules and the registry lookup come with `rules` (state.Rules). Block time is max(time, prev.time): times never go backwards.
A block with no transactions is valid; whether to cut empty blocks is the
service's choice.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Protocol

from gateway.ledger import consensus
from gateway.ledger.commitment import NodeDiff
from gateway.ledger.genesis import Genesis, genesis_header
from gateway.ledger.state import (
    BlockInfo,
    DeviceRecord,
    RuleError,
    Rules,
    State,
    StateOverlay,
    apply,
)
from gateway.ledger.validate import signing_key
from shared import cbor, commit_gateway, errors, header, merkle, messages
from shared import tx as txm

BAD_BLOCK = "bad-block"  # a block another node built does not re-execute to its header


class Tip(Protocol):
    """The previous block as the builder needs it (Block or store.BlockRecord)."""

    @property
    def height(self) -> int: ...

    @property
    def hash(self) -> bytes: ...

    @property
    def time(self) -> int: ...


@dataclass(frozen=True, slots=True)
class Receipt:
    tx_id: bytes
    seq: int
    status: int
    reason: str
    events: list[Any]
    leaf: bytes


class HeaderFields:
    """A block's height and time, read from its header fields (the domain
    chain's Block and the public registry's RegistryBlock)."""

    fields: dict[str, Any]

    @property
    def height(self) -> int:
        return self.fields["height"]

    @property
    def time(self) -> int:
        return self.fields["time"]


@dataclass
class Block(HeaderFields):
    fields: dict[str, Any]
    header_bytes: bytes
    signed_header: bytes
    txs: list[txm.Tx]
    receipts: list[Receipt]
    diff: dict[bytes, DeviceRecord]
    dropped: list[tuple[txm.Tx, errors.TLError]] = field(default_factory=list)
    levels: list[list[bytes]] = field(default_factory=list)
    kv_diff: dict[bytes, bytes | None] = field(default_factory=dict)
    nodes: NodeDiff | None = None  # the state tree's node diff (None: a SORTED chain)
    cert: list[Any] | None = None

    @cached_property
    def hash(self) -> bytes:
        return header.block_hash(self.header_bytes)

    @property
    def has_sets(self) -> bool:
        """A version-2 header: final only with a certificate."""
        return "validators" in self.fields

    def announcement(self) -> bytes:
        """What tl/<d>/blocks carries: the signed header (version 1), or
        cbor {1: header bytes, 2: certificate} (version 2, once final)."""
        if not self.has_sets:
            return self.signed_header
        if self.cert is None:
            raise ValueError("block %d is not final" % self.height)
        return announcement(self.header_bytes, self.cert)

    def proof(self, i: int) -> list[bytes]:
        """Audit path of receipt i in the receipts tree."""
        return merkle.proof(self.levels, i)

    def receipt_message(self, i: int) -> bytes:
        """The messages.receipt reply for tx i (published on its rx topic)."""
        r = self.receipts[i]
        if not self.has_sets:
            return messages.receipt(r.tx_id, r.seq, r.status, r.reason, r.events, self.height,
                                    self.signed_header, i, len(self.receipts), self.proof(i))
        if self.cert is None:
            raise ValueError("block %d is not final" % self.height)
        return messages.receipt(r.tx_id, r.seq, r.status, r.reason, r.events, self.height,
                                self.header_bytes, i, len(self.receipts), self.proof(i),
                                self.cert)


def announcement(header_bytes: bytes, cert: list[Any]) -> bytes:
    return cbor.dumps({1: header_bytes, 2: cert})


def own_certificate(view: Any, fields: dict[str, Any], header_bytes: bytes,
                    authority_priv: bytes, authority_id: bytes) -> list[Any] | None:
    """The certificate the builder makes alone: its vote, when the set of
    this height has threshold 1 and the authority key in it."""
    sets = consensus.current_and_next(view, fields["height"])
    if sets is None or sets[0].threshold != 1:
        return None
    rec = view.get(authority_id)
    i = None if rec is None else sets[0].index(rec.pubkey)
    if i is None:
        return None
    sig = commit_gateway.vote(authority_priv, rec.pubkey, header.block_hash(header_bytes))
    return commit_gateway.certificate({i: sig})


def tx_root(tx_messages: Sequence[bytes]) -> bytes:
    return merkle.root(tx_messages)


def receipts_levels(leaves: Sequence[bytes]) -> list[list[bytes]]:
    return merkle.levels([merkle.leaf_hash(x) for x in leaves])


def execute(txs: Sequence[txm.Tx], state: State, rules: Rules,
            block: BlockInfo | None = None, verify: bool = False,
            verified: Mapping[bytes, bytes] | None = None
            ) -> tuple[list[txm.Tx], list[Receipt], StateOverlay,
                       list[tuple[txm.Tx, errors.TLError]]]:
    """Run txs in order on an overlay: (included, receipts, overlay, dropped).
    `block` gives the height and time the txs execute at. `verify`: check each
    tx's signature with the key it must be signed by at its point of the block
    (validate.signing_key; a block proposed by another gateway); a bad one
    raises its TLError. `verified` (tx id -> key): txs whose very object this
    node verified already (its mempool's); one is not verified again only if
    that key is the key it must be signed by here."""
    view = StateOverlay(state)
    included: list[txm.Tx] = []
    receipts: list[Receipt] = []
    dropped: list[tuple[txm.Tx, errors.TLError]] = []
    leaf = messages.receipt_leaf
    info = block or BlockInfo(0, 0)
    for t in txs:
        info.index = len(included)
        if verify:
            key = signing_key(t, view)
            if verified is None or verified.get(t.id) != key:
                t.verify(key)
        try:
            out = apply(view, t, rules, info)
        except RuleError as e:
            dropped.append((t, e))
            continue
        tid = t.id
        included.append(t)
        receipts.append(Receipt(tid, t.seq, out.status, out.reason, out.events,
                                leaf(tid, out.status, out.reason, out.events)))
    return included, receipts, view, dropped


def build_block(prev: Tip, txs: Sequence[txm.Tx], state: State, time: int,
                authority_priv: bytes, authority_id: bytes, *, domain: str,
                rules: Rules | None = None) -> Block:
    """Execute `txs` on top of `state` (left unchanged) and sign block prev+1."""
    rules = rules or Rules(authority_id=authority_id)
    height, time = prev.height + 1, max(int(time), prev.time)
    included, receipts, view, dropped = execute(txs, state, rules, BlockInfo(height, time))
    levels = receipts_levels([r.leaf for r in receipts])
    fields = {
        "version": header.VERSION, "domain": domain, "height": height,
        "prev_hash": prev.hash, "time": time,
        "tx_root": tx_root([t.message for t in included]),
        "receipts_root": merkle.root_of(levels), "state_root": view.root(),
        "proposer": authority_id,
    }
    consensus.header_sets(fields, consensus.current_and_next(view, height))
    hbytes = header.encode(fields)
    return Block(fields, hbytes, header.sign(authority_priv, authority_id, fields),
                 included, receipts, view.changed, dropped, levels, view.kv_changed,
                 nodes=view.nodes,
                 cert=own_certificate(view, fields, hbytes, authority_priv, authority_id))


def rebuild_block(prev: Tip, txs: Sequence[txm.Tx], state: State, signed_header: bytes,
                  authority_pub: bytes, authority_id: bytes, *, domain: str,
                  rules: Rules, verified: Mapping[bytes, bytes] | None = None) -> Block:
    """Re-execute a block another gateway built (a proposal of a replicated
    domain, gateway/cluster/replica.py): its signed header must open with
    the authority key, extend `prev`, and equal the header this node computes
    from `txs` on `state` (every tx signed, none dropped: tx, receipts and
    state roots, validator sets). RuleError(bad-block, detail) otherwise;
    the same verdict on every node with the same chain. `verified`: see
    execute() (the Tx objects of this node's mempool it verified at intake)."""
    try:
        fields, hbytes = header.open_signed(authority_pub, signed_header)
    except errors.TLError as e:
        raise RuleError(BAD_BLOCK, "header-signature " + e.reason) from None
    if fields.get("height") != prev.height + 1 or fields.get("prev_hash") != prev.hash:
        raise RuleError(BAD_BLOCK, "wrong-parent")
    t = fields.get("time")
    if not isinstance(t, int) or t < prev.time:
        raise RuleError(BAD_BLOCK, "time")
    try:
        included, receipts, view, dropped = execute(txs, state, rules,
                                                    BlockInfo(fields["height"], t), verify=True,
                                                    verified=verified)
    except errors.TLError as e:
        raise RuleError(BAD_BLOCK, "tx-signature " + e.reason) from None
    if dropped:
        raise RuleError(BAD_BLOCK, "tx-refused " + dropped[0][1].reason)
    levels = receipts_levels([r.leaf for r in receipts])
    want = {
        "version": header.VERSION, "domain": domain, "height": fields["height"],
        "prev_hash": prev.hash, "time": t,
        "tx_root": tx_root([x.message for x in included]),
        "receipts_root": merkle.root_of(levels), "state_root": view.root(),
        "proposer": authority_id,
    }
    consensus.header_sets(want, consensus.current_and_next(view, fields["height"]))
    if header.encode(want) != hbytes:
        bad = sorted(k for k in want if want[k] != fields.get(k)) or ["fields"]
        raise RuleError(BAD_BLOCK, "header-mismatch " + ",".join(bad))
    return Block(want, hbytes, signed_header, included, receipts, view.changed, [], levels,
                 view.kv_changed, nodes=view.nodes)


def genesis_block(g: Genesis, authority_priv: bytes) -> Block:
    """Block 0: no txs, the whole genesis state (and its whole tree) as its diff."""
    fields, hbytes, signed = genesis_header(g, authority_priv)
    s = g.state()
    nodes: NodeDiff = dict(s.state_tree().nodes)
    cert = own_certificate(s, fields, hbytes, authority_priv, g.authority_id)
    return Block(fields, hbytes, signed, [], [], dict(s.devices), [], [[]], dict(s.kv),
                 nodes=nodes, cert=cert)
