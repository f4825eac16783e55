"""Chain verification: replay the stored chain from genesis.

`verify_chain(store, genesis) -> Report` first runs SQLite's own
`PRAGMA integrity_check` on the file (every page, every index against its
table: one flipped byte in the tx-id index would otherwise leave the replay,
which reads the tables, saying "chain OK" while lookups by id fail), reported
as DATABASE_CORRUPT with SQLite's messages; then it re-validates every block
in height order and stops at the first problem, reported as a `ChainError`
with the block `height`, a stable `reason` (constants below) and a `detail`:
- block 0 equals the header computed from the genesis file (and the stored
  genesis digest matches the file);
- every header: signed by the authority key, stored header bytes / hash /
  time columns consistent with the signed payload, height = position,
  domain, proposer = authority id, version, prev_hash = hash of the previous
  block, time not before the previous block's;
- every tx: stored id = SHA-256(message), full ingress validation
  (validate.check_stateless + check_stateful: signature with the sender's key
  at that point of the chain, seq, registration, fee) and execution with
  state.apply; stored sender/seq/type and receipt (status, reason, events)
  equal the recomputed ones;
- per block: tx_root, receipts_root and state_root recomputed and compared,
  and the stored receipts tree (what resends' proofs are read from) equal to
  the recomputed one;
- at the end, the recomputed state equals the stored `devices`, `rights`
  and `kv` tables (keys, balances, owners, statuses, kinds, rights, nodes;
  offers, demands, contract deployments and storage).

Claims depend on the public registry: pass the same `registry` lookup the
node uses (state.Rules.registry). Without one (None) every claim in the
chain fails to replay (bad-tx ... not-in-registry/no-registry): a chain with
claims can only be verified next to its registry.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from hashlib import sha256
from typing import Any

from gateway.db.store import LOW_S_FROM, Store
from gateway.errors import (
    BAD_CERTIFICATE,
    BAD_HEADER,
    BAD_HEADER_SIGNATURE,
    BAD_PREV_HASH,
    BAD_ROW,
    BAD_TX,
    DATABASE_CORRUPT,
    EMPTY_CHAIN,
    FILE,
    GENESIS_MISMATCH,
    HEADER_MISMATCH,
    MISSING_BLOCK,
    NO_CERTIFICATE,
    RECEIPT_MISMATCH,
    RECEIPT_TREE_MISMATCH,
    RECEIPTS_ROOT_MISMATCH,
    STATE_MISMATCH,
    STATE_ROOT_MISMATCH,
    TIME_BACKWARDS,
    TX_ID_MISMATCH,
    TX_ROOT_MISMATCH,
    TX_ROW_MISMATCH,
    ChainError,
)
from gateway.ledger import consensus
from gateway.ledger.blocks import receipts_levels, tx_root
from gateway.ledger.genesis import Genesis
from gateway.ledger.state import BlockInfo, Registry, State, StateOverlay, apply
from gateway.ledger.validate import check_stateful, check_stateless
from shared import cose, errors, header, merkle, messages


@dataclass
class Report:
    ok: bool
    blocks: int = 0
    txs: int = 0
    head_height: int | None = None
    head_hash: bytes | None = None
    state_root: bytes | None = None
    devices: int = 0
    error: ChainError | None = None


def verify_chain(store: Store, g: Genesis, registry: Registry | None = None) -> Report:
    """Replay and check the whole chain; never raises ChainError (it is in
    the Report). `registry`: the registry lookup for claims."""
    rep = Report(ok=False)
    try:
        problems = store.integrity_problems()
        if problems:
            raise ChainError(FILE, DATABASE_CORRUPT, "SQLite integrity_check: "
                             + "; ".join(problems))
        try:
            state = _replay(store, g, rep, registry)
            _compare_state(store, state, rep.head_height or 0)
        except sqlite3.DatabaseError as e:
            raise ChainError(rep.blocks, DATABASE_CORRUPT, str(e)) from None
        finally:
            cose.legacy_high_s = False
    except ChainError as e:
        rep.error = e
        return rep
    rep.ok = True
    rep.state_root = state.root()
    rep.devices = len(state)
    return rep


def _replay(store: Store, g: Genesis, rep: Report, registry: Registry | None) -> State:
    authority, aid, rules, domain = g.authority, g.authority_id, g.rules(registry), g.domain
    stored_digest = store.meta("genesis")
    if stored_digest is not None and stored_digest != g.digest():
        raise ChainError(0, GENESIS_MISMATCH, "genesis file differs from the one in the store")
    state = g.state()
    prev_hash = b""
    prev_time = 0
    expected = 0
    low_s_from = store.meta(LOW_S_FROM)  # None: no node with the rule has opened it
    version = header.VERSION if not g.consensus else header.VERSION_SETS
    top = store.head() if g.consensus else None
    last = -1 if top is None else top.height
    for blk in store.iter_blocks():
        h = expected
        cose.legacy_high_s = low_s_from is None or h < low_s_from
        if blk.height != h:
            raise ChainError(h, MISSING_BLOCK, "next stored height is %d" % blk.height)
        try:
            fields, hbytes = header.open_signed(authority, blk.signed_header)
        except errors.TLError as e:
            raise ChainError(h, BAD_HEADER_SIGNATURE, e.reason + "/" + e.detail) from None
        if hbytes != blk.header_bytes:
            raise ChainError(h, HEADER_MISMATCH, "header column differs from signed header")
        if header.block_hash(hbytes) != blk.hash:
            raise ChainError(h, HEADER_MISMATCH, "hash column")
        if fields["time"] != blk.time:
            raise ChainError(h, HEADER_MISMATCH, "time column")
        if g.consensus and h > 0:  # block 0 is the genesis file's (checked below)
            _check_certificate(store, state, blk, fields, h == last)
        for key, want in (("height", h), ("domain", domain), ("proposer", aid),
                          ("version", version)):
            if fields[key] != want:
                raise ChainError(h, BAD_HEADER, key)
        try:
            rows = store.block_txs(h)
        except errors.TLError as e:
            raise ChainError(h, BAD_ROW, "events: " + e.detail) from None
        if len(rows) != blk.n_txs:
            raise ChainError(h, BAD_ROW, "n_txs is %d, %d rows" % (blk.n_txs, len(rows)))
        if h == 0:
            if rows or hbytes != header.encode(g.header_fields()):
                raise ChainError(0, GENESIS_MISMATCH, "block 0 is not the genesis header")
        else:
            if fields["prev_hash"] != prev_hash:
                raise ChainError(h, BAD_PREV_HASH)
            if fields["time"] < prev_time:
                raise ChainError(h, TIME_BACKWARDS)
            view = StateOverlay(state)
            info = BlockInfo(h, fields["time"])
            leaves = []
            for r in rows:
                info.index = r.idx
                where = "tx %d %s" % (r.idx, r.id.hex())
                if sha256(r.message).digest() != r.id:
                    raise ChainError(h, TX_ID_MISMATCH, where)
                try:
                    t = check_stateless(r.message, domain)
                    check_stateful(t, view, None, rules)
                    out = apply(view, t, rules, info)
                except errors.TLError as e:
                    raise ChainError(h, BAD_TX, "%s: %s/%s" % (where, e.reason, e.detail)
                                     ) from None
                if (t.sender, t.seq, t.type) != (r.sender, r.seq, r.type):
                    raise ChainError(h, TX_ROW_MISMATCH, where)
                if (out.status, out.reason, out.events) != (r.status, r.reason, r.events):
                    raise ChainError(h, RECEIPT_MISMATCH, where)
                leaves.append(messages.receipt_leaf(r.id, out.status, out.reason, out.events))
            if tx_root([r.message for r in rows]) != fields["tx_root"]:
                raise ChainError(h, TX_ROOT_MISMATCH)
            levels = receipts_levels(leaves)
            if merkle.root_of(levels) != fields["receipts_root"]:
                raise ChainError(h, RECEIPTS_ROOT_MISMATCH)
            tree = store.receipt_tree(h)
            if tree is not None and tree != b"".join(x for level in levels[1:] for x in level):
                raise ChainError(h, RECEIPT_TREE_MISMATCH, "stored receipts tree")
            if view.root() != fields["state_root"]:
                raise ChainError(h, STATE_ROOT_MISMATCH)
            sets = consensus.current_and_next(view, h)
            named = {} if sets is None else {"validators": sets[0].hash,
                                             "next_validators": sets[1].hash}
            if any(fields.get(k) != v for k, v in named.items()):
                raise ChainError(h, BAD_HEADER, "validator sets")
            state.apply_diff(view.changed, view.kv_changed)
        prev_hash, prev_time = blk.hash, fields["time"]
        expected += 1
        rep.blocks += 1
        rep.txs += len(rows)
        rep.head_height, rep.head_hash = h, blk.hash
    if expected == 0:
        raise ChainError(0, EMPTY_CHAIN, "no genesis block in the store")
    return state


def _check_certificate(store: Store, state: State, blk: Any, fields: dict[str, Any],
                       head: bool) -> None:
    """A block of a chain with a consensus section is final by its
    certificate (the head may still wait for one)."""
    h = blk.height
    cert = store.certificate(h)
    if cert is None:
        if head:
            return
        raise ChainError(h, NO_CERTIFICATE)
    sched = consensus.schedule(state)
    if sched is None:
        raise ChainError(h, BAD_CERTIFICATE, "no validator set in the state")
    try:
        consensus.check_certificate(cert, blk.header_bytes, fields, consensus.set_at(sched, h))
    except errors.TLError as e:
        raise ChainError(h, BAD_CERTIFICATE, e.detail) from None


def _compare_state(store: Store, state: State, height: int) -> None:
    kv = store.kv()
    if kv != state.kv:
        for k in sorted(set(kv) | set(state.kv)):
            if kv.get(k) != state.kv.get(k):
                raise ChainError(height, STATE_MISMATCH, "stored value %s differs" % k.hex())
    stored = dict(store.devices())
    if stored == state.devices:
        return
    for i in sorted(set(stored) | set(state.devices)):
        a, b = stored.get(i), state.devices.get(i)
        if a != b:
            raise ChainError(height, STATE_MISMATCH,
                             "device %s: stored %s, replayed %s" % (i.hex(), a, b))
