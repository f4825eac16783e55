"""The registry node: submit, mine, look up, verify (one data dir).

    reg = open_registry(data_dir, create=True, block_time_s=2.0)
    tx_id = reg.submit(message)   # full validation, then the persisted mempool
    reg.mine()                    # PoW blocks until the mempool is empty
    reg.lookup(device_pubkey) / reg.lookup_id(device_id) / reg.attempts(device_id)
    reg.verify()                  # replay from genesis

Anyone holding the data dir may submit and mine, also from several
processes at once: the mempool is a table, each call first catches up with
blocks other processes committed, and a block that lost the race to the
same height is thrown away and mined again on the new head.

submit() is idempotent: the same signed message again returns its tx id
(whether still pending or already in a block); a *different* message with a
used seq is `replay`. Transactions that stopped being includable while
pending (e.g. another process included a conflicting one) are dropped from
the mempool when a block is built; `last_dropped` lists them.
"""

from __future__ import annotations

import bisect
import time as _time
from collections.abc import Callable
from pathlib import Path

from gateway.db.sqlite_db import Closing
from gateway.registry import chain
from gateway.registry import pow as pw
from gateway.registry.params import (
    DB_FILE,
    DEFAULT_BITS,
    DEFAULT_BLOCK_TIME,
    DEFAULT_MAX_TXS,
    DEFAULT_RETARGET,
    GENESIS_FILE,
    RegistryError,
    RegistryGenesis,
    create_genesis,
    load_genesis,
)
from gateway.registry.replay import RegistryReport, verify_registry
from gateway.registry.store import STALE, RegistryBlockRecord, RegistryStore
from gateway.registry.view import Lookups
from shared import errors, merkle, messages
from shared import tx as txm

DEFAULT_MEMPOOL = 10_000
Clock = Callable[[], float]


class _PendingView:
    """Committed manufacturers plus those whose MFR_REGISTER is pending, so a
    manufacturer can submit records right after registering."""

    def __init__(self, state: chain.RegistryState, store: RegistryStore) -> None:
        self._state = state
        self._store = store

    def manufacturer(self, mid: bytes) -> chain.Manufacturer | None:
        m = self._state.manufacturer(mid)
        if m is not None:
            return m
        for msg in self._store.pending_messages(mid, txm.TYPE_MFR_REGISTER):
            try:
                t = txm.decode(msg)
            except errors.TLError:
                continue
            return chain.Manufacturer(t.body[1], t.body[2], 0, -1, t.id)
        return None


class PublicRegistry(Lookups, Closing):
    def __init__(self, data_dir: Path, genesis: RegistryGenesis, store: RegistryStore, *,
                 clock: Clock = _time.time, mempool_capacity: int = DEFAULT_MEMPOOL) -> None:
        self.data_dir = data_dir
        self.genesis = genesis
        self.mempool_capacity = mempool_capacity
        self._store = store
        self._clock = clock
        head, self._state = store.load()
        assert head is not None
        self._head: RegistryBlockRecord = head
        self.last_dropped: list[tuple[bytes, errors.TLError]] = []

    def close(self) -> None:
        self._store.close()

    def _sync(self) -> None:
        """Catch up with blocks committed by other processes."""
        head = self._store.head()
        if head is not None and head.hash != self._head.hash:
            h, self._state = self._store.load()
            assert h is not None
            self._head = h

    @property
    def state(self) -> chain.RegistryState:
        self._sync()
        return self._state

    @property
    def store(self) -> RegistryStore:
        return self._store

    def set_head(self, head: RegistryBlockRecord, state: chain.RegistryState) -> None:
        """After a fork switch written to the store (gateway/registry/forks.py):
        the new head and the state after it."""
        self._head, self._state = head, state

    # ---- transactions ----------------------------------------------------------

    def last_seq(self, sender: bytes) -> int:
        """Highest seq seen from `sender`, committed or pending (0: none);
        a new transaction of theirs needs a larger one."""
        self._sync()
        m = self._state.manufacturer(sender)
        return max(m.last_seq if m else 0, self._store.pending_seq(sender) or 0)

    def submit(self, message: bytes) -> bytes:
        """Validate fully and queue; returns the tx id. Raises TLError with the
        reason codes of chain.py (and mempool-full)."""
        t = chain.check_stateless(message)
        if self._store.is_pending(t.id) or self._store.get_tx(t.id) is not None:
            return t.id
        self._sync()
        chain.check_stateful(t, _PendingView(self._state, self._store),
                             self._store.pending_seq(t.sender))
        self._store.add_pending(t.id, t.sender, t.seq, t.type, t.message, int(self._clock()),
                                self.mempool_capacity)
        return t.id

    def mine(self, max_blocks: int | None = None, miner: bytes = chain.ANONYMOUS_MINER, *,
             empty: bool = False) -> list[int]:
        """Mine pending txs into blocks (at most `max_blocks`; by default until
        the mempool is empty); returns the new heights. With `empty`, blocks
        are mined even without txs (then `max_blocks` is required)."""
        if not isinstance(miner, bytes) or len(miner) != chain.MINER_ID_LEN:
            raise ValueError("miner id must be %d bytes" % chain.MINER_ID_LEN)
        if empty and max_blocks is None:
            raise ValueError("mining empty blocks needs max_blocks")
        g = self.genesis
        heights: list[int] = []
        self.last_dropped = []
        while max_blocks is None or len(heights) < max_blocks:
            self._sync()
            rows = self._store.pending(g.block_max_txs)
            if not rows and not empty:
                break
            head = self._head
            height = head.height + 1
            ex = chain.execute([m for _, m in rows], self._state, height)
            dropped = [i for i, _ in ex.dropped]
            self.last_dropped.extend(ex.dropped)
            if not ex.txs and not empty:
                self._store.drop_pending(dropped)
                continue
            target = pw.next_target(height, head.target, self._store.block_time,
                                    g.retarget_blocks, g.block_time_ms, g.target)
            fields = chain.header_fields(
                height=height, prev_hash=head.hash, time=max(int(self._clock()), head.time),
                tx_root=ex.tx_root, receipts_root=ex.receipts_root,
                state_root=ex.overlay.root(), proposer=miner, target=target)
            found = pw.solve(fields, target)
            if found is None:  # 2^64 nonces without a hit: not in this universe
                raise RuntimeError("nonce space exhausted at height %d" % height)
            fields["nonce"], hb, bh = found
            block = chain.RegistryBlock(fields, hb, bh, ex)
            try:
                self._store.commit_block(block, [t.id for t in ex.txs] + dropped)
            except RegistryError as e:
                if e.reason == STALE:
                    continue  # another miner extended the chain first
                raise
            self._state.apply(ex.overlay)
            self._head = RegistryBlockRecord(height, bh, fields["time"], len(ex.txs), hb)
            heights.append(height)
        return heights

    # ---- proofs and verification ---------------------------------------------------

    def prove(self, device_id: bytes) -> chain.RecordProof | None:
        """State proof of a device record against the head header."""
        self._sync()
        d = self._state.device(device_id)
        if d is None:
            return None
        return self._prove(b"\x01" + device_id, chain.device_leaf(device_id, d))

    def prove_manufacturer(self, mfr_id: bytes) -> chain.RecordProof | None:
        """State proof of a manufacturer record against the head header."""
        self._sync()
        m = self._state.manufacturer(mfr_id)
        if m is None:
            return None
        return self._prove(b"\x00" + mfr_id, chain.mfr_leaf(mfr_id, m))

    def _prove(self, key: bytes, leaf: bytes) -> chain.RecordProof:
        st = self._state
        keys = st._sorted_keys()
        idx = bisect.bisect_left(keys, key)
        levels = merkle.levels(st.leaf_hashes())
        return chain.RecordProof(self._head.header_bytes, leaf, idx, len(keys),
                                 merkle.proof(levels, idx))

    def tx_proof(self, tx_id: bytes) -> tuple[bytes, int, int, list[bytes]] | None:
        """(header bytes, index, size, audit path) of a committed tx's receipt
        leaf (messages.receipt_leaf) in its block's receipts tree."""
        t = self._store.get_tx(tx_id)
        if t is None:
            return None
        rows = self._store.block_txs(t.height)
        levels = merkle.levels([merkle.leaf_hash(messages.receipt_leaf(r.id, r.status, r.reason,
                                                                       r.events))
                                for r in rows])
        blk = self._store.get_block(t.height)
        assert blk is not None
        return blk.header_bytes, t.idx, len(rows), merkle.proof(levels, t.idx)

    def verify(self, now: int | None = None) -> RegistryReport:
        """Re-check every block's work, links, roots and state from genesis."""
        return verify_registry(self._store, self.genesis,
                               int(self._clock()) if now is None else now)


def open_registry(data_dir: Path | str, create: bool = False, *,
                  block_time_s: float = DEFAULT_BLOCK_TIME,
                  difficulty_bits: int = DEFAULT_BITS,
                  retarget_blocks: int = DEFAULT_RETARGET,
                  block_max_txs: int = DEFAULT_MAX_TXS,
                  time: int | None = None, clock: Clock = _time.time,
                  mempool_capacity: int = DEFAULT_MEMPOOL) -> PublicRegistry:
    """Open the registry in `data_dir`. With `create`, a dir without
    registry.toml gets a new genesis from the keyword parameters (which are
    ignored when a genesis exists: it is the consensus). Raises RegistryError
    (not-initialized, bad-genesis, genesis-mismatch)."""
    d = Path(data_dir)
    if not (d / GENESIS_FILE).exists():
        if not create:
            raise RegistryError("not-initialized", f"no registry in {d} (registry init)")
        g = RegistryGenesis(time=int(clock()) if time is None else time,
                            difficulty_bits=difficulty_bits, block_time_s=float(block_time_s),
                            retarget_blocks=retarget_blocks, block_max_txs=block_max_txs)
        try:
            create_genesis(d, g)
        except RegistryError as e:
            if e.reason != "exists":
                raise
    g = load_genesis(d)
    store = RegistryStore(d / DB_FILE)
    try:
        if store.head() is None:
            meta = {"schema": 1, "domain": chain.DOMAIN, "genesis": g.digest()}
            try:
                store.commit_block(chain.genesis_block(g.time, g.target), meta=meta)
            except RegistryError as e:
                if e.reason != STALE:  # else another process wrote block 0 first
                    raise
        if store.meta("genesis") != g.digest():
            raise RegistryError("genesis-mismatch", f"{d / DB_FILE} belongs to another genesis")
        return PublicRegistry(d, g, store, clock=clock, mempool_capacity=mempool_capacity)
    except BaseException:
        store.close()
        raise
