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
  offers, demands, contract deployments and storage), and the recomputed
  state tree equals the stored `state_nodes` rows (what start-up loads and
  proofs are read from).
State roots: blocks below the store's `state_tree_from` (all blocks of a
chain without it) carry the older sorted-leaves root (state.SORTED); from
that height on, the state tree's root (docs/PROTOCOL.md, "State
commitment"). The replay switches scheme at that height.

Signatures in parallel: `verify_chain(..., workers=N)` with N > 1 hands the
transactions' signature checks to N worker processes in batches while the
replay goes on in this process with everything else (decoding, the sender's
key at that point of the chain, precheck, apply, roots): the replay finds
the key each tx must be signed by (validate.signing_key) and sends (message,
key, the block's low-s rule) to the pool. The verdict is the sequential
one: a failed signature is reported if it comes at or before the position
(height, tx) the replay stopped at, with the same reason and detail (a
sequential replay checks a tx's signature before its precheck). Signatures
checked at execution (a rotated key) stay in the replay. If a worker
process dies, the batches it leaves unchecked are checked in this process:
same verdicts, nothing skipped.

Claims depend on the public registry: pass the same `registry` lookup the
node uses (state.Rules.registry). Without one (None) every claim in the
chain fails to replay (bad-tx ... not-in-registry/no-registry): a chain with
claims can only be verified next to its registry.
"""

from __future__ import annotations

import os
import sqlite3
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from hashlib import sha256
from typing import Any

from gateway.db.store import LOW_S_FROM, STATE_TREE_FROM, Store
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
from gateway.ledger.state import (
    SMT,
    SORTED,
    BlockInfo,
    Registry,
    State,
    StateOverlay,
    apply,
    precheck,
)
from gateway.ledger.validate import check_stateful, check_stateless, signing_key
from shared import cose, errors, header, merkle, messages
from shared import tx as txm

SIG_BATCH = 256  # signatures per job sent to a worker process
_AFTER_TXS = 1 << 62  # position of a block's checks after its txs

# (height, tx index, message, key, legacy high s)
_SigJob = tuple[int, int, bytes, bytes, bool]
_SigFailure = tuple[int, int, str, str]  # (height, tx index, reason, detail)


def check_signatures(jobs: list[_SigJob]) -> _SigFailure | None:
    """The first of `jobs` whose signature does not verify (a worker's task)."""
    try:
        for h, idx, message, key, legacy in jobs:
            cose.legacy_high_s = legacy
            try:
                txm.decode(message).verify(key)
            except errors.TLError as e:
                return h, idx, e.reason, e.detail
        return None
    finally:
        cose.legacy_high_s = False


class _Signatures:
    """Signature checks handed to a process pool in batches, in chain order."""

    def __init__(self, workers: int) -> None:
        self.pool = ProcessPoolExecutor(max_workers=workers)
        self.batch: list[_SigJob] = []
        self.futures: list[tuple[list[_SigJob], Future[_SigFailure | None]]] = []

    def add(self, h: int, idx: int, message: bytes, key: bytes) -> None:
        self.batch.append((h, idx, message, key, cose.legacy_high_s))
        if len(self.batch) >= SIG_BATCH:
            self.flush()

    def flush(self) -> None:
        if self.batch:
            try:
                f = self.pool.submit(check_signatures, self.batch)
            except BrokenProcessPool:  # a worker died: first_failure checks it here
                f = Future()
                f.set_exception(BrokenProcessPool("pool broken"))
            self.futures.append((self.batch, f))
            self.batch = []

    def first_failure(self) -> _SigFailure | None:
        self.flush()
        for batch, f in self.futures:  # in chain order: the first failed batch has the first
            try:
                bad = f.result()
            except BrokenProcessPool:  # a worker process died: this batch checked here
                bad = check_signatures(batch)
            if bad is not None:
                return bad
        return None

    def close(self) -> None:
        self.pool.shutdown(cancel_futures=True)


def _sig_error(f: _SigFailure, txid: bytes | None = None) -> ChainError:
    h, idx, reason, detail = f
    return ChainError(h, BAD_TX, "tx %d %s: %s/%s" % (idx, (txid or b"").hex(), reason, detail))


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


def default_workers() -> int:
    return os.cpu_count() or 1


def verify_chain(store: Store, g: Genesis, registry: Registry | None = None,
                 workers: int = 1) -> Report:
    """Replay and check the whole chain; never raises ChainError (it is in
    the Report). `registry`: the registry lookup for claims; `workers` > 1:
    signatures checked by that many processes (same verdicts)."""
    rep = Report(ok=False)
    sigs = _Signatures(workers) if workers > 1 else None
    at = [0, -1]  # the replay's position: (height, tx index)
    try:
        problems = store.integrity_problems()
        if problems:
            raise ChainError(FILE, DATABASE_CORRUPT, "SQLite integrity_check: "
                             + "; ".join(problems))
        try:
            try:
                state = _replay(store, g, rep, registry, sigs, at)
                at[:] = [_AFTER_TXS, 0]
                _compare_state(store, state, rep.head_height or 0)
            except sqlite3.DatabaseError as e:
                raise ChainError(rep.blocks, DATABASE_CORRUPT, str(e)) from None
            finally:
                cose.legacy_high_s = False
        except ChainError:
            bad = sigs.first_failure() if sigs is not None else None
            if bad is not None and (bad[0], bad[1]) <= (at[0], at[1]):
                raise _sig_error(bad, _tx_id(store, bad)) from None
            raise
        bad = sigs.first_failure() if sigs is not None else None
        if bad is not None:
            raise _sig_error(bad, _tx_id(store, bad))
    except ChainError as e:
        rep.error = e
        return rep
    finally:
        if sigs is not None:
            sigs.close()
    rep.ok = True
    rep.state_root = state.root()
    rep.devices = len(state)
    return rep


def _tx_id(store: Store, f: _SigFailure) -> bytes | None:
    rows = [r for r in store.block_txs(f[0]) if r.idx == f[1]]
    return rows[0].id if rows else None


def _replay(store: Store, g: Genesis, rep: Report, registry: Registry | None,
            sigs: _Signatures | None = None, at: list[int] | None = None) -> State:
    authority, aid, rules, domain = g.authority, g.authority_id, g.rules(registry), g.domain
    stored_digest = store.meta("genesis")
    if stored_digest is not None and stored_digest != g.digest():
        raise ChainError(0, GENESIS_MISMATCH, "genesis file differs from the one in the store")
    tree_from = store.meta(STATE_TREE_FROM)  # None: the whole chain is SORTED
    state = g.state(SMT if tree_from == 0 else SORTED)
    prev_hash = b""
    prev_time = 0
    expected = 0
    low_s_from = store.meta(LOW_S_FROM)  # None: no node with the rule has opened it
    at = at if at is not None else [0, -1]
    version = header.VERSION if not g.consensus else header.VERSION_SETS
    top = store.head() if g.consensus else None
    last = -1 if top is None else top.height
    for blk in store.iter_blocks():
        h = expected
        at[:] = [h, -1]
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
            if rows or hbytes != header.encode(g.header_fields(state.commitment)):
                raise ChainError(0, GENESIS_MISMATCH, "block 0 is not the genesis header")
        else:
            if fields["prev_hash"] != prev_hash:
                raise ChainError(h, BAD_PREV_HASH)
            if fields["time"] < prev_time:
                raise ChainError(h, TIME_BACKWARDS)
            if h == tree_from:
                state.use_tree()
            view = StateOverlay(state)
            info = BlockInfo(h, fields["time"])
            leaves = []
            for r in rows:
                info.index = at[1] = r.idx
                where = "tx %d %s" % (r.idx, r.id.hex())
                if sha256(r.message).digest() != r.id:
                    raise ChainError(h, TX_ID_MISMATCH, where)
                try:
                    t = check_stateless(r.message, domain)
                    if sigs is None:
                        check_stateful(t, view, None, rules)
                    else:  # the same checks, the signature in a worker
                        sigs.add(h, r.idx, r.message, signing_key(t, view))
                        precheck(view, t, rules)
                    out = apply(view, t, rules, info)
                except errors.TLError as e:
                    raise ChainError(h, BAD_TX, "%s: %s/%s" % (where, e.reason, e.detail)
                                     ) from None
                if (t.sender, t.seq, t.type) != (r.sender, r.seq, r.type):
                    raise ChainError(h, TX_ROW_MISMATCH, where)
                if (out.status, out.reason, out.events) != (r.status, r.reason, r.events):
                    raise ChainError(h, RECEIPT_MISMATCH, where)
                leaves.append(messages.receipt_leaf(r.id, out.status, out.reason, out.events))
            at[1] = _AFTER_TXS
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
    if state.tree is not None:
        stored_nodes = store.state_nodes()
        if stored_nodes != state.tree.nodes:
            bad = min(set(stored_nodes) ^ set(state.tree.nodes)
                      or {p for p in stored_nodes if stored_nodes[p] != state.tree.nodes[p]})
            raise ChainError(height, STATE_MISMATCH, "stored state tree differs at position %x"
                             % bad)
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
