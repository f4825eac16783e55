"""Chain storage in SQLite: blocks, transactions with receipts, device state.

Schema (SCHEMA below):
    meta(key TEXT PK, value BLOB)      schema, domain, genesis digest, authority
    blocks(height PK, hash UNIQUE, time, n_txs, header, signed)
    txs(rowid, id UNIQUE, height, idx, sender, seq, type, status, reason,
        events (CBOR), message (COSE bytes)), UNIQUE(height, idx)
    devices(id PK, pubkey, last_seq, balance, kind, status, owner, claimant,
            node, assigned)            the state after the head block: every
                                       principal (state.DeviceRecord)
    rights(device, principal, right) PK(all three)
                                       rights held on owned devices (the
                                       owner's own rights are implicit)
    kv(key BLOB PK, value BLOB)        the stored values of the state tree
                                       (market offers and demands, contract
                                       deployments and storage: State.kv)
    state_nodes(pos PK, hash, key)     the state tree (ledger/commitment.py)
                                       after the head block, one row per
                                       position (big-endian heap number): an
                                       inner node (hash, key NULL) or a
                                       collapsed entry (value hash, key hash)
    receipt_trees(height PK, nodes)    each block's receipts tree above the
                                       leaves (level 1 first, root last) as
                                       32-byte hashes end to end: a receipt's
                                       audit path is read from it, not rebuilt
    certificates(height PK, cert)      commit certificates (CBOR) of the blocks
                                       of a chain with a consensus section
                                       (docs/CONSENSUS.md); a block with
                                       none is not final
    equivocations(validator, height PK, first, second)
                                       votes of one validator on two headers
                                       of one height (CBOR [header, sig]
                                       each): consensus.Equivocation

Durability: WAL mode, `synchronous=FULL`. `commit_block` writes a block, its
txs + receipts and its state diff in ONE transaction (BEGIN IMMEDIATE ...
COMMIT), so after a crash the database is at the last whole block. FULL
fsyncs the WAL at each commit: receipts are published only after the commit,
and a receipt must survive a power cut, not only a process crash (NORMAL
may lose the last commits on power loss). The cost is one fsync per block,
not per transaction. Transactions are appended with executemany, the diff is
one upsert executemany: no per-tx round trips. A commit SQLite cannot
write (disk full, I/O error) is rolled back whole and raised as
StoreError(commit-failed) with SQLite's own message.

Readers (the CLI, also while the gateway runs) open with `readonly=True`: a
`mode=ro` URI connection; WAL lets them read the last committed block while
the writer appends. One Store object is used by one thread at a time
(check_same_thread is off so the service may commit from a worker thread);
if the service answers resends (`get_receipt`) on another thread while a
commit runs, it opens a second, read-only Store for that.

`get_receipt(tx_id)` answers a device re-sending a tx that is already in the
chain with its receipt reply and proof. The block's receipts tree is stored
at commit (receipt_trees, written with the block's txs; ~32 bytes per tx:
the leaves are not stored, a leaf is recomputed from its tx row), so a
lookup is the tx row, the block row, the sibling's row for the first hash of
the audit path and the other ~log2(n) hashes read from the stored tree (blob
I/O): the same small cost for any block, nothing rebuilt. Blocks committed before receipt trees were stored (an older
database of the same schema) have no row there: their tree is rebuilt from
the tx rows once and the last LEVELS_CACHE such trees are cached.

State commitment (docs/PROTOCOL.md, "State commitment"): meta
`state_tree_from` is the first height whose header carries the sparse Merkle
tree root; below it (and in a chain without the key) the root is the older
sorted-leaves one (state.SORTED). A new chain has 0. The first time a node of
this version opens an older chain it builds the tree once, writes its rows
and `state_tree_from` = head + 1 in one transaction; the chain continues
with the tree and verifies with both (db/verify.py). `commit_block` writes
the block's node diff (Block.nodes) in the block's transaction, so the
stored tree is always the head's.

`open_ledger(config, registry=)` is the node's start-up: genesis file +
authority key, create the database with block 0 on first start (or check
that it belongs to this genesis and has this schema version: a database of
an older schema is refused with schema-mismatch, start a new chain), load the
state and the head block, and check that state against the head's
state_root (a state changed outside the node is refused with
state-root-mismatch, naming the height). With the tree, the stored tree's
root is compared with the header and every entry's leaf hash with the
tree's stored leaf (one leaf encode and hash per principal and stored
value; the inner nodes are read, not rebuilt); a SORTED state is hashed
whole (hashes its first block would compute anyway). `registry` is the registry lookup used for claims
(Ledger.registry, settable later; None: claims refused).
"""

from __future__ import annotations

import sqlite3
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from gateway.db import genesis_files as gen
from gateway.db import sqlite_db
from gateway.db.chain_tables import (
    BLOCKS_TABLE,
    META_TABLE,
    TX_COLS,
    TXS_TABLE,
    ChainTables,
    StoredBlock,
    TxRecord,
    tx_record,
)
from gateway.errors import COMMIT_FAILED, STATE_ROOT_MISMATCH, StoreError
from gateway.ledger import commitment
from gateway.ledger.blocks import Block, genesis_block, receipts_levels
from gateway.ledger.commitment import Entry, NodeDiff, SparseMerkleTree
from gateway.ledger.consensus import Equivocation, Vote
from gateway.ledger.state import SMT, SORTED, DeviceRecord, Registry, Rules, State, leaf
from gateway.node.config import GatewayConfig
from shared import cbor, header, merkle, messages, stateproof

SCHEMA_VERSION = 2
# meta key: the first height whose signatures all have low s (docs/PROTOCOL.md,
# "Low s"); 0 for a chain begun under the rule, head + 1 when a node that has
# the rule first opens an older chain. Replay accepts high s only below it.
LOW_S_FROM = "low_s_from"
# meta key: the first height whose state_root is the state tree's (above)
STATE_TREE_FROM = "state_tree_from"
# meta key: a replicated domain's last proposal-log sequence applied (the
# block's commit or a refused entry writes it in the same transaction)
LOG_SEQ = "log_seq"
SCHEMA = ("\n" + META_TABLE + BLOCKS_TABLE + ",\n    signed BLOB NOT NULL\n);\n" + TXS_TABLE + """\
CREATE TABLE IF NOT EXISTS devices (
    id BLOB PRIMARY KEY,
    pubkey BLOB NOT NULL,
    last_seq INTEGER NOT NULL,
    balance INTEGER NOT NULL,
    kind TEXT NOT NULL,
    status TEXT NOT NULL,
    owner BLOB NOT NULL,
    claimant INTEGER NOT NULL,
    node TEXT NOT NULL,
    assigned BLOB NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS kv (
    key BLOB PRIMARY KEY,
    value BLOB NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS state_nodes (
    pos BLOB PRIMARY KEY,
    hash BLOB NOT NULL,
    key BLOB
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS receipt_trees (
    height INTEGER PRIMARY KEY,
    nodes BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS certificates (
    height INTEGER PRIMARY KEY,
    cert BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS equivocations (
    validator BLOB NOT NULL,
    height INTEGER NOT NULL,
    first BLOB NOT NULL,
    second BLOB NOT NULL,
    PRIMARY KEY (validator, height)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS refused_entries (
    seq INTEGER PRIMARY KEY,
    proposer BLOB NOT NULL,
    reason TEXT NOT NULL,
    entry BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS rights (
    device BLOB NOT NULL,
    principal BLOB NOT NULL,
    "right" TEXT NOT NULL,
    PRIMARY KEY (device, principal, "right")
) WITHOUT ROWID;
""")
_NO_EVENTS = cbor.dumps([])
_DEV_COLS = "id, pubkey, last_seq, balance, kind, status, owner, claimant, node, assigned"
_UPSERT = ("INSERT INTO devices (%s) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
           "ON CONFLICT (id) DO UPDATE SET pubkey = excluded.pubkey, "
           "last_seq = excluded.last_seq, balance = excluded.balance, "
           "kind = excluded.kind, status = excluded.status, owner = excluded.owner, "
           "claimant = excluded.claimant, node = excluded.node, "
           "assigned = excluded.assigned" % _DEV_COLS)
LEVELS_CACHE = 16  # rebuilt receipts trees of pre-receipt_trees blocks kept for get_receipt


@dataclass(frozen=True)
class BlockRecord(StoredBlock):
    signed_header: bytes

    @cached_property
    def fields(self) -> dict[str, Any]:
        return header.decode(self.header_bytes)


class Store(ChainTables[BlockRecord], block_cols="height, hash, time, n_txs, header, signed",
            record=BlockRecord, error=StoreError):
    def __init__(self, path: Path | str, *, readonly: bool = False) -> None:
        super().__init__(path, readonly)
        self._levels: OrderedDict[int, list[list[bytes]]] = OrderedDict()
        self._db = sqlite_db.connect(self.path, SCHEMA, readonly=readonly)

    # ---- writing -------------------------------------------------------------

    def init_chain(self, g: gen.Genesis, block0: Block) -> None:
        """Write meta + block 0 into an empty database, in one transaction."""
        self._check_writable()
        meta = {"schema": SCHEMA_VERSION, "domain": g.domain, "genesis": g.digest(),
                "authority": g.authority, LOW_S_FROM: 0, STATE_TREE_FROM: 0}
        self.commit_block(block0, meta)

    def set_meta(self, key: str, value: Any) -> None:
        self._check_writable()
        with self._db:
            self._db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                             (key, value))

    def commit_block(self, block: Block, meta: dict[str, Any] | None = None) -> None:
        """Write the block, its txs/receipts and its state diff atomically.
        Raises StoreError(not-next / bad-prev) if it does not extend the head."""
        self._check_writable()
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            head = self._head_before(block.height)
            if head is not None and block.height != head.height + 1:
                raise StoreError("not-next", "height %d after head %d" % (block.height,
                                                                          head.height))
            if head is not None and block.fields["prev_hash"] != head.hash:
                raise StoreError("bad-prev", "height %d" % block.height)
            self._write_meta(meta)
            db.execute("INSERT INTO blocks (height, hash, time, n_txs, header, signed) "
                       "VALUES (?, ?, ?, ?, ?, ?)",
                       (block.height, block.hash, block.time, len(block.txs),
                        block.header_bytes, block.signed_header))
            self._write_txs(block)
            if block.cert is not None:
                db.execute("INSERT INTO certificates (height, cert) VALUES (?, ?)",
                           (block.height, cbor.dumps(block.cert)))
            self._write_diff(block.diff)
            self._write_kv(block.kv_diff)
            if block.nodes:
                self._write_nodes(block.nodes)
            db.execute("COMMIT")
        except BaseException as e:
            sqlite_db.rollback(db, e)  # keeps SQLite's own error (disk full, I/O) visible
            if isinstance(e, sqlite3.Error):
                raise StoreError(COMMIT_FAILED, "block %d not written: %s"
                                 % (block.height, e)) from e
            raise
        if block.levels and block.levels[0]:
            self._remember_levels(block.height, block.levels)

    def _remember_levels(self, height: int, levels: list[list[bytes]]) -> None:
        cache = self._levels
        cache[height] = levels
        cache.move_to_end(height)
        while len(cache) > LEVELS_CACHE:
            cache.popitem(last=False)

    def _write_txs(self, block: Block) -> None:
        h = block.height
        rows = [(t.id, h, i, t.sender, t.seq, t.type, r.status, r.reason,
                 cbor.dumps(r.events) if r.events else _NO_EVENTS, t.message)
                for i, (t, r) in enumerate(zip(block.txs, block.receipts, strict=True))]
        self._db.executemany("INSERT INTO txs (%s) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                             % TX_COLS, rows)
        if len(block.levels) > 1:  # the receipts tree above the leaves, for get_receipt
            self._db.execute("INSERT INTO receipt_trees (height, nodes) VALUES (?, ?)",
                             (h, b"".join(x for level in block.levels[1:] for x in level)))

    def _write_diff(self, diff: dict[bytes, DeviceRecord]) -> None:
        db = self._db
        db.executemany(_UPSERT, [(i, r.pubkey, r.last_seq, r.balance, r.kind, r.status,
                                  r.owner, int(r.claimant), r.node, r.assigned)
                                 for i, r in diff.items()])
        # rights exist only on owned devices (and an owner is never removed),
        # so ownerless records (all of an open domain's readings) cost nothing
        owned = [(i, r) for i, r in diff.items() if r.owner]
        if owned:
            db.executemany("DELETE FROM rights WHERE device = ?", [(i,) for i, _ in owned])
            db.executemany('INSERT INTO rights (device, principal, "right") VALUES (?, ?, ?)',
                           [(i, p, right) for i, r in owned for p, rs in r.acl for right in rs])

    def _write_kv(self, kv_diff: dict[bytes, bytes | None]) -> None:
        if not kv_diff:
            return
        self._db.executemany("DELETE FROM kv WHERE key = ?",
                             [(k,) for k, v in kv_diff.items() if v is None])
        self._db.executemany("INSERT OR REPLACE INTO kv (key, value) VALUES (?, ?)",
                             [(k, v) for k, v in kv_diff.items() if v is not None])

    def _write_nodes(self, nodes: NodeDiff) -> None:
        gone = [(_pos_bytes(p),) for p, e in nodes.items() if e is None]
        if gone:
            self._db.executemany("DELETE FROM state_nodes WHERE pos = ?", gone)
        self._db.executemany(
            "INSERT OR REPLACE INTO state_nodes (pos, hash, key) VALUES (?, ?, ?)",
            [(_pos_bytes(p), e, None) if isinstance(e, bytes) else (_pos_bytes(p), e[1], e[0])
             for p, e in nodes.items() if e is not None])

    def start_state_tree(self, state: State, height: int) -> None:
        """Move an older (SORTED) chain to the state tree from block
        `height` on: the tree's rows and the meta key in one transaction."""
        self._check_writable()
        state.use_tree()
        tree = state.state_tree()
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute("DELETE FROM state_nodes")
            self._write_nodes(dict(tree.nodes))
            self._write_meta({STATE_TREE_FROM: height})
            db.execute("COMMIT")
        except BaseException as e:
            sqlite_db.rollback(db, e)
            if isinstance(e, sqlite3.Error):
                raise StoreError(COMMIT_FAILED, "state tree not written: %s" % e) from e
            raise

    # ---- reading -------------------------------------------------------------

    def block_count(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM blocks").fetchone()[0]

    def tx_count(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM txs").fetchone()[0]

    def txs_of_type(self, type_: int, since_height: int = 0) -> Iterator[TxRecord]:
        """Committed txs of one type in chain order (e.g. the market's calls)."""
        cur = self._db.execute("SELECT %s FROM txs WHERE type = ? AND height >= ? "
                               "ORDER BY height, idx" % TX_COLS, (type_, since_height))
        for r in cur:
            yield tx_record(r)

    def latest_of_type(self, type_: int, status: int) -> list[TxRecord]:
        """The last committed tx of one type and receipt status from each
        sender, in chain order (e.g. each device's latest reading). One pass
        over the txs table in SQLite; nothing decoded but the rows returned."""
        cur = self._db.execute("SELECT %s, MAX(height * 4294967296 + idx) FROM txs "
                               "WHERE type = ? AND status = ? GROUP BY sender" % TX_COLS,
                               (type_, status))
        rows = [tx_record(r[:-1]) for r in cur]
        rows.sort(key=lambda r: (r.height, r.idx))
        return rows

    def find_tx(self, prefix: bytes) -> list[TxRecord]:
        """Txs whose id starts with `prefix` (at most 2: enough to tell unique)."""
        hi = prefix + b"\xff" * (32 - len(prefix))
        cur = self._db.execute("SELECT %s FROM txs WHERE id >= ? AND id <= ? LIMIT 2"
                               % TX_COLS, (prefix, hi))
        return [tx_record(r) for r in cur]

    def message_at_seq(self, sender: bytes, seq: int) -> bytes | None:
        """The latest committed tx message of `sender` with `seq` (a scan of
        the txs table: the gateway asks only when a signed message reuses a
        seq, gateway/trust/node.py)."""
        row = self._db.execute("SELECT message FROM txs WHERE sender = ? AND seq = ? "
                               "ORDER BY height DESC LIMIT 1", (sender, seq)).fetchone()
        return bytes(row[0]) if row else None

    def get_receipt(self, tx_id: bytes) -> bytes | None:
        """The receipt reply (messages.receipt) of a committed tx, its proof
        read from the block's stored receipts tree, or None if not in the chain."""
        t = self.get_tx(tx_id)
        if t is None:
            return None
        blk = self.get_block(t.height)
        assert blk is not None
        path = self._stored_path(t.height, blk.n_txs, t.idx)
        if path is None:  # a block committed before receipt trees were stored
            path = merkle.proof(self._rebuilt_levels(t.height), t.idx)
        if "validators" not in blk.fields:  # receipt format 1
            return messages.receipt(t.id, t.seq, t.status, t.reason, t.events, t.height,
                                    blk.signed_header, t.idx, blk.n_txs, path)
        cert = self.certificate(t.height)
        if cert is None:  # not final yet
            return None
        return messages.receipt(t.id, t.seq, t.status, t.reason, t.events, t.height,
                                blk.header_bytes, t.idx, blk.n_txs, path, cert)

    # ---- certificates and evidence (docs/CONSENSUS.md) -------------------------

    def certificate(self, height: int) -> list[Any] | None:
        row = self._db.execute("SELECT cert FROM certificates WHERE height = ?",
                               (height,)).fetchone()
        return None if row is None else cbor.loads(row[0], max_size=1 << 16)

    def set_certificate(self, height: int, cert: list[Any]) -> None:
        """Store the certificate gathered for a committed block (once: a
        block keeps the first certificate stored for it)."""
        self._check_writable()
        with self._db:
            self._db.execute("INSERT OR IGNORE INTO certificates (height, cert) VALUES (?, ?)",
                             (height, cbor.dumps(cert)))

    def record_equivocation(self, e: Equivocation) -> bool:
        """Keep evidence (the first per validator and height); True if new."""
        self._check_writable()
        with self._db:
            cur = self._db.execute(
                "INSERT OR IGNORE INTO equivocations (validator, height, first, second) "
                "VALUES (?, ?, ?, ?)",
                (e.pubkey, e.height, cbor.dumps([e.first.header_bytes, e.first.signature]),
                 cbor.dumps([e.second.header_bytes, e.second.signature])))
        return cur.rowcount == 1

    def equivocations(self) -> list[Equivocation]:
        out = []
        for pub, h, a, b in self._db.execute(
                "SELECT validator, height, first, second FROM equivocations "
                "ORDER BY height, validator"):
            (ha, sa), (hb, sb) = cbor.loads(a, max_size=1 << 16), cbor.loads(b, max_size=1 << 16)
            out.append(Equivocation(pub, h, Vote(pub, h, ha, sa), Vote(pub, h, hb, sb)))
        return out

    # ---- a replicated domain's proposal log (gateway/cluster/replica.py) ------------

    def record_refused(self, seq: int, proposer: bytes, reason: str, entry: bytes) -> None:
        """Keep a log entry every honest gateway skipped (evidence against
        its proposer: b"" when unreadable) and move the applied log sequence
        past it, in one transaction."""
        self._check_writable()
        with self._db:
            self._db.execute("INSERT OR IGNORE INTO refused_entries (seq, proposer, reason, "
                             "entry) VALUES (?, ?, ?, ?)", (seq, proposer, reason, entry))
            self._write_meta({LOG_SEQ: seq})

    def refused_entries(self) -> list[tuple[int, bytes, str, bytes]]:
        """(log seq, proposer, reason, entry) of every refused proposal, by seq."""
        return [(s, bytes(p), r, bytes(e)) for s, p, r, e in self._db.execute(
            "SELECT seq, proposer, reason, entry FROM refused_entries ORDER BY seq")]

    def _stored_path(self, height: int, n: int, idx: int) -> list[bytes] | None:
        """Audit path of leaf `idx` of the `n`-leaf receipts tree of block
        `height` (what shared.merkletree.proof gives): the sibling leaf from
        its tx row, the rest read hash by hash from the stored levels; None
        if the block has no stored tree."""
        if n == 1:
            return []
        try:
            blob = self._db.blobopen("receipt_trees", "nodes", height, readonly=True)
        except sqlite3.OperationalError:  # no such row (or table)
            return None
        path = [self._leaf_hash(height, idx ^ 1)] if idx ^ 1 < n else []
        with blob:
            start, size, idx = 0, (n + 1) // 2, idx >> 1
            while size > 1:
                sib = idx ^ 1
                if sib < size:
                    blob.seek((start + sib) * 32)
                    path.append(blob.read(32))
                start += size
                size = (size + 1) // 2
                idx >>= 1
        return path

    def _leaf_hash(self, height: int, idx: int) -> bytes:
        row = self._db.execute("SELECT id, status, reason, events FROM txs "
                               "WHERE height = ? AND idx = ?", (height, idx)).fetchone()
        i, st, r, e = row
        return merkle.leaf_hash(messages.receipt_leaf(i, st, r, cbor.loads(e)))

    def receipt_tree(self, height: int) -> bytes | None:
        """The stored receipts tree of block `height` (the hashes of every
        level above the leaves, end to end), None if it has none (fewer than
        2 txs, or committed before receipt trees were stored)."""
        try:
            row = self._db.execute("SELECT nodes FROM receipt_trees WHERE height = ?",
                                   (height,)).fetchone()
        except sqlite3.OperationalError as e:  # a database no node of this version opened
            if "no such table" not in str(e):
                raise
            return None
        return row[0] if row else None

    def _rebuilt_levels(self, height: int) -> list[list[bytes]]:
        levels = self._levels.get(height)
        if levels is None:
            rows = self._db.execute("SELECT id, status, reason, events FROM txs "
                                    "WHERE height = ? ORDER BY idx", (height,)).fetchall()
            levels = receipts_levels([messages.receipt_leaf(i, s, r, cbor.loads(e))
                                      for i, s, r, e in rows])
            self._remember_levels(height, levels)
        return levels

    def devices(self, after: bytes | None = None,
                limit: int | None = None) -> list[tuple[bytes, DeviceRecord]]:
        """(id, record) sorted by id: every principal, rights included; or a
        page of `limit` principals whose id is above `after` (chain queries:
        only that page's rows and rights are read)."""
        if after is not None or limit is not None:
            return self._devices_page(after or b"", -1 if limit is None else limit)
        acl: dict[bytes, dict[bytes, list[str]]] = {}
        for dev, p, right in self._db.execute(
                'SELECT device, principal, "right" FROM rights '
                'ORDER BY device, principal, "right"'):
            acl.setdefault(dev, {}).setdefault(p, []).append(right)
        cur = self._db.execute("SELECT %s FROM devices ORDER BY id" % _DEV_COLS)
        out = [(row[0], _device_record(row, acl.pop(row[0], {}))) for row in cur]
        if acl:  # rights on a device that has no row: keep them visible to verify
            out.append((min(acl), DeviceRecord(b"", -1, -1, "orphan-rights")))
            out.sort(key=lambda x: x[0])
        return out

    def _devices_page(self, after: bytes, limit: int) -> list[tuple[bytes, DeviceRecord]]:
        db = self._db
        db.execute("BEGIN")  # the rows and their rights from one snapshot
        try:
            rows = db.execute("SELECT %s FROM devices WHERE id > ? ORDER BY id LIMIT ?"
                              % _DEV_COLS, (after, limit)).fetchall()
            acl: dict[bytes, dict[bytes, list[str]]] = {}
            if rows:
                for dev, p, right in db.execute(
                        'SELECT device, principal, "right" FROM rights WHERE device > ? AND '
                        'device <= ? ORDER BY device, principal, "right"', (after, rows[-1][0])):
                    acl.setdefault(dev, {}).setdefault(p, []).append(right)
        finally:
            db.execute("COMMIT")
        return [(row[0], _device_record(row, acl.get(row[0], {}))) for row in rows]

    def kv(self) -> dict[bytes, bytes]:
        """Every stored value of the state tree (State.kv)."""
        return dict(self._db.execute("SELECT key, value FROM kv"))

    def state_nodes(self) -> dict[int, Entry]:
        """The stored state tree's rows (position -> inner hash or (key hash,
        value hash)); {} for a database that has none."""
        try:
            cur = self._db.execute("SELECT pos, hash, key FROM state_nodes")
            return {int.from_bytes(p, "big"): h if k is None else (k, h) for p, h, k in cur}
        except sqlite3.OperationalError as e:  # a database no node of this version opened
            if "no such table" not in str(e):
                raise
            return {}

    def _tree_node(self, pos: int) -> Entry | None:
        """The stored state-tree node at `pos` (commitment.prove's reader)."""
        r = self._db.execute("SELECT hash, key FROM state_nodes WHERE pos = ?",
                             (_pos_bytes(pos),)).fetchone()
        if r is None:
            return None
        return r[0] if r[1] is None else (r[1], r[0])

    def prove_account(self, device_id: bytes) -> tuple[BlockRecord, bytes | None, list] | None:
        """(head block, the principal's leaf bytes or None if unknown, its
        proof against the head's state_root: shared/stateproof.py), read in
        one read transaction (the gateway may be writing): the principal's
        rows and the ~log2(n) tree rows on its path, nothing else. None if
        the head's root is not the state tree's (an older chain)."""
        db = self._db
        db.execute("BEGIN")
        try:
            head = self.head()
            if head is None or self.commitment_at(head.height) != SMT:
                return None
            row = db.execute("SELECT %s FROM devices WHERE id = ?" % _DEV_COLS,
                             (device_id,)).fetchone()
            leaf_bytes = None
            if row is not None:
                acl: dict[bytes, list[str]] = {}
                for p, right in db.execute('SELECT principal, "right" FROM rights WHERE '
                                           'device = ? ORDER BY principal, "right"',
                                           (device_id,)):
                    acl.setdefault(p, []).append(right)
                leaf_bytes = leaf(row[0], _device_record(row, acl))

            return head, leaf_bytes, commitment.prove(self._tree_node,
                                                      stateproof.account_key(device_id))
        finally:
            db.execute("COMMIT")

    def prove_kv(self, key: bytes) -> tuple[BlockRecord, bytes | None, list] | None:
        """(head block, the stored value under `key` or None, its proof
        against the head's state_root: the kv leaf cbor([key, value]),
        shared/stateproof.py), read in one read transaction like
        prove_account. None on an older chain (no state tree)."""
        db = self._db
        db.execute("BEGIN")
        try:
            head = self.head()
            if head is None or self.commitment_at(head.height) != SMT:
                return None
            row = db.execute("SELECT value FROM kv WHERE key = ?", (key,)).fetchone()

            return head, None if row is None else row[0], commitment.prove(
                self._tree_node, stateproof.kv_key(key))
        finally:
            db.execute("COMMIT")

    def kv_range(self, prefix: bytes, limit: int = 1000,
                 start: bytes = b"") -> list[tuple[bytes, bytes]]:
        """Up to `limit` stored (key, value) whose key starts with `prefix`,
        in key order, from key `start` on (a page after another: the last key
        + 00); `prefix` must not end in 0xff."""
        hi = prefix[:-1] + bytes([prefix[-1] + 1])
        return list(self._db.execute("SELECT key, value FROM kv WHERE key >= ? AND key < ? "
                                     "ORDER BY key LIMIT ?", (max(prefix, start), hi, limit)))

    def commitment_at(self, height: int) -> str:
        """The state commitment of block `height`'s state_root."""
        since = self.meta(STATE_TREE_FROM)
        return SMT if since is not None and height >= since else SORTED

    def load_state(self) -> State:
        """The state after the head block, with its stored tree (if the head
        is under the tree commitment)."""
        head = self.head()
        if head is None or self.commitment_at(head.height) == SORTED:
            return State(dict(self.devices()), self.kv(), commitment=SORTED)
        return State(dict(self.devices()), self.kv(),
                     tree=SparseMerkleTree(self.state_nodes()))

    def integrity_problems(self, limit: int = 10) -> list[str]:
        """SQLite's own check of the file (PRAGMA integrity_check: every
        page, every index against its table): [] when sound, else up to
        `limit` of SQLite's messages."""
        try:
            rows = self._db.execute("PRAGMA integrity_check(%d)" % int(limit)).fetchall()
        except sqlite3.DatabaseError as e:  # too damaged to check
            return [str(e)]
        msgs = [r[0] for r in rows]
        return [] if msgs == ["ok"] else msgs


def check_state(state: State, head: BlockRecord, where: Path | str = "") -> None:
    """Refuse a stored state that is not the one the head block commits to
    (its state_root): the devices/rights/kv tables were changed outside the
    node (a balance raised by hand, a row deleted). Raises StoreError
    (STATE_ROOT_MISMATCH) naming the height. The leaf hashes computed here
    stay cached in `state`, so the first block after start-up does not
    compute them again (a tree state: its stored root and every leaf)."""
    root = state.root()
    want = head.fields["state_root"]
    got = "stored state " + root.hex()[:16]
    if root == want and state.tree is not None:  # the stored tree's root: now its leaves
        problems = state.leaf_problems()
        if not problems:
            return
        got = "stored tree's leaf differs: " + problems[0]
    elif root == want:
        return
    raise StoreError(STATE_ROOT_MISMATCH,
                     "%sthe stored state (%d principals, %d stored values) does not match "
                     "the state root of the head block at height %d (%s, %s): "
                     "the database was changed outside the node; `thingledger chain verify` "
                     "names the first difference" % ("%s: " % where if where else "",
                                                     len(state), len(state.kv), head.height,
                                                     want.hex()[:16], got))


@dataclass
class Ledger:
    """What a running node needs at start-up (see open_ledger)."""

    store: Store
    genesis: gen.Genesis
    authority_priv: bytes
    state: State
    head: BlockRecord
    registry: Registry | None = None

    @property
    def rules(self) -> Rules:
        return self.genesis.rules(self.registry)


def open_ledger(cfg: GatewayConfig, *, create: bool = True,
                registry: Registry | None = None) -> Ledger:
    """Open (and on first start create) the node's chain in cfg.data_dir.
    With `create`, a data dir without genesis gets a new domain
    (genesis.create_domain, no accounts). `registry` is the registry lookup
    for claims (device pubkey -> record or None). Raises GenesisError /
    StoreError."""
    gpath = cfg.genesis_file
    if create and not gpath.exists() and cfg.genesis_path is None:
        gen.create_domain(cfg.data_dir, cfg.domain, authority_balance=cfg.genesis_supply,
                          trust=cfg.trust)
    g = gen.load(gpath)
    if g.domain != cfg.domain:
        raise gen.GenesisError("domain", "genesis names %r, config %r" % (g.domain, cfg.domain))
    priv = gen.load_authority_key(cfg.key_file, g)
    cfg.data_dir.mkdir(parents=True, exist_ok=True)
    store = Store(cfg.db_path)
    try:
        if store.head() is None:
            store.init_chain(g, genesis_block(g, priv))
        elif store.meta("schema") != SCHEMA_VERSION:
            raise StoreError("schema-mismatch", "%s has schema %s, this node writes %d: "
                             "start a new chain" % (cfg.db_path, store.meta("schema"),
                                                    SCHEMA_VERSION))
        elif store.meta("genesis") != g.digest():
            raise StoreError("genesis-mismatch", str(cfg.db_path))
        head = store.head()
        assert head is not None
        if store.meta(LOW_S_FROM) is None:  # a chain from before the low-s rule
            store.set_meta(LOW_S_FROM, head.height + 1)
        state = store.load_state()
        check_state(state, head, cfg.db_path)
        if state.commitment == SORTED:  # an older chain: the tree from the next block on
            store.start_state_tree(state, head.height + 1)
        return Ledger(store, g, priv, state, head, registry)
    except BaseException:
        store.close()
        raise


def _device_record(row: tuple, acl: Mapping[bytes, list[str]]) -> DeviceRecord:
    """A principal's record from its `_DEV_COLS` row and its rights
    (principal -> rights, in order)."""
    _, pub, seq, bal, kind, status, owner, claimant, node, assigned = row
    return DeviceRecord(pub, seq, bal, kind, status, owner,
                        tuple((p, tuple(rs)) for p, rs in acl.items()), bool(claimant),
                        node, assigned)


def _pos_bytes(pos: int) -> bytes:
    return pos.to_bytes((pos.bit_length() + 7) // 8, "big")
