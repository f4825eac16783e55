"""Fork choice of a networked registry node (docs/IDENTITY.md §1, "Registry nodes").

`BlockTree(reg)` wraps a PublicRegistry (its store holds the main chain and
the state after its head) with what a node learns from the network:

- main: hash, cumulative work, time and target of every stored block, by
  height (loaded from the store at start);
- side: blocks of other branches, in memory, with their cumulative work;
- orphans: blocks whose parent is unknown (the node asks peers for the
  blocks between), a bounded FIFO pool;
- bad: hashes of blocks found invalid (and their descendants), bounded.

`receive(blocks)` checks each block's header against its parent (height,
time not before the parent's and not beyond `max_drift_s` in the future,
the retarget rule's target, proof of work, at most block_max_txs txs,
tx_root), keeps it as a side block or an orphan, and then follows the chain
with the most cumulative work (Nakamoto); on equal work the lower block hash
wins, so every node picks the same tip. Switching executes the new branch's
blocks fully (signatures, state transitions, receipts and state roots) on the
state at the fork point and writes the switch in one SQLite transaction
(RegistryStore.switch); the transactions of the abandoned blocks that the new
branch lacks go back into the mempool (and are mined again if still valid).
A branch with an invalid block is refused from that block on; if its valid
prefix is not heavier, the node keeps its chain.

Bounded memory: a side block whose cumulative work is not above the main
chain's work `reorg_window` blocks below the head is refused (low-work) or
pruned; at most `max_side` side blocks and `max_side_bytes` bytes (the
lightest go first); at most `max_orphans` orphans. Side blocks live in
memory only: after a restart a node asks its peers again.
"""

from __future__ import annotations

import time as _time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from gateway.errors import BlockRefused
from gateway.registry import chain
from gateway.registry import pow as pw
from gateway.registry.core import PublicRegistry
from gateway.registry.params import MAX_BLOCK_BYTES
from gateway.registry.replay import MAX_FUTURE_S
from gateway.registry.store import RegistryBlockRecord
from shared import cbor, errors, merkle

REORG_WINDOW = 1000
MAX_SIDE = 4000
MAX_SIDE_BYTES = 64 * 1024 * 1024
MAX_ORPHANS = 256
MAX_BAD = 10_000

# refusal reasons (BlockRefused.reason)
TOO_LARGE = "too-large"
BAD_BLOCK = "bad-block"
KNOWN = "known-block"
INVALID = "invalid-block"
INVALID_ANCESTOR = "invalid-ancestor"
GENESIS_MISMATCH = "genesis-mismatch"
LOW_WORK = "low-work"
TIME_FUTURE = "time-in-future"
TIME_BACKWARDS = "time-backwards"
BAD_TARGET = "bad-target"
BAD_POW = "bad-pow"
TOO_MANY_TXS = "too-many-txs"
BAD_TX = "bad-tx"
TX_ROOT = "tx-root-mismatch"
RECEIPTS_ROOT = "receipts-root-mismatch"
STATE_ROOT = "state-root-mismatch"


@dataclass
class NetBlock:
    """A block as it travels: header bytes and its transactions."""

    header_bytes: bytes
    txs: list[bytes]
    hash: bytes
    fields: dict[str, Any]

    @property
    def height(self) -> int:
        return self.fields["height"]

    @property
    def prev(self) -> bytes:
        return self.fields["prev_hash"]

    @property
    def size(self) -> int:
        return len(self.header_bytes) + sum(len(t) for t in self.txs)

    def encode(self) -> bytes:
        return cbor.dumps([self.header_bytes, self.txs])


def make_block(header_bytes: bytes, txs: list[bytes]) -> NetBlock:
    try:
        f = chain.decode_header(header_bytes)
    except errors.TLError as e:
        raise BlockRefused(BAD_BLOCK, e.detail or e.reason) from None
    return NetBlock(header_bytes, txs, pw.header_hash(header_bytes), f)


def decode_block(payload: bytes, max_bytes: int = MAX_BLOCK_BYTES) -> NetBlock:
    """A NetBlock from its CBOR [header bytes, [tx message, ...]];
    BlockRefused too-large (before reading) or bad-block."""
    if not isinstance(payload, bytes | bytearray | memoryview):
        raise BlockRefused(BAD_BLOCK, "not bytes")
    if len(payload) > max_bytes:
        raise BlockRefused(TOO_LARGE, "%d bytes, at most %d" % (len(payload), max_bytes))
    try:
        v = cbor.loads(bytes(payload), max_size=max_bytes)
    except errors.TLError as e:
        raise BlockRefused(BAD_BLOCK, e.detail or e.reason) from None
    if not (isinstance(v, list) and len(v) == 2 and isinstance(v[0], bytes)
            and isinstance(v[1], list) and all(isinstance(m, bytes) for m in v[1])):
        raise BlockRefused(BAD_BLOCK, "not [header, [txs]]")
    return make_block(v[0], v[1])


@dataclass
class Side:
    blk: NetBlock
    work: int  # cumulative, from genesis


@dataclass
class Received:
    """What receive() did."""

    switched: bool = False  # the head changed
    reorg_depth: int = 0  # blocks of the old chain abandoned
    returned: int = 0  # their txs put back into the mempool
    orphans: bool = False  # some block's parent is unknown: ask peers
    accepted: list[NetBlock] = field(default_factory=list)  # new blocks kept (main or side)
    refused: list[tuple[NetBlock, BlockRefused]] = field(default_factory=list)


class BlockTree:
    def __init__(self, reg: PublicRegistry, *, clock: Callable[[], float] = _time.time,
                 max_drift_s: int = MAX_FUTURE_S, reorg_window: int = REORG_WINDOW,
                 max_side: int = MAX_SIDE, max_side_bytes: int = MAX_SIDE_BYTES,
                 max_orphans: int = MAX_ORPHANS) -> None:
        self.reg = reg
        self.store = reg.store
        self.genesis = reg.genesis
        self.clock = clock
        self.max_drift_s = max_drift_s
        self.reorg_window = reorg_window
        self.max_side = max_side
        self.max_side_bytes = max_side_bytes
        self.max_orphans = max_orphans
        self.side: dict[bytes, Side] = {}
        self.orphans: OrderedDict[bytes, NetBlock] = OrderedDict()
        self.bad: OrderedDict[bytes, str] = OrderedDict()
        self.load()

    def load(self) -> None:
        """(Re)read the main chain's index from the store."""
        self.main: list[bytes] = []
        self.works: list[int] = []
        self.times: list[int] = []
        self.targets: list[int] = []
        total = 0
        for rec in self.store.iter_blocks():
            t = rec.target
            total += pw.work(t)
            self.main.append(rec.hash)
            self.works.append(total)
            self.times.append(rec.time)
            self.targets.append(t)
        self.pos: dict[bytes, int] = {h: i for i, h in enumerate(self.main)}
        _ = self.reg.state  # the registry re-reads its head too

    # ---- reading -----------------------------------------------------------------

    @property
    def height(self) -> int:
        return len(self.main) - 1

    @property
    def head_hash(self) -> bytes:
        return self.main[-1]

    @property
    def work(self) -> int:
        return self.works[-1]

    def knows(self, h: bytes) -> bool:
        return h in self.pos or h in self.side or h in self.orphans

    def locator(self) -> list[bytes]:
        """Main-chain hashes from the head back, spaced ever wider, and genesis."""
        out, step, i = [], 1, self.height
        while i > 0:
            out.append(self.main[i])
            if len(out) >= 10:
                step *= 2
            i -= step
        out.append(self.main[0])
        return out

    def blocks_after(self, locator: Iterable[bytes], limit: int, max_bytes: int
                     ) -> tuple[list[bytes], bool]:
        """Encoded main-chain blocks after the first locator hash on the main
        chain (genesis if none), at most `limit` and about `max_bytes`;
        and whether more follow."""
        start = next((self.pos[h] for h in locator if h in self.pos), 0)
        out: list[bytes] = []
        size = 0
        for rec in self.store.iter_blocks(start + 1):
            enc = cbor.dumps([rec.header_bytes, [r.message for r in self.store.block_txs(rec.height)]])
            if out and (len(out) >= limit or size + len(enc) > max_bytes):
                return out, True
            out.append(enc)
            size += len(enc)
        return out, False

    def headers_after(self, height: int) -> list[bytes]:
        return [rec.header_bytes for rec in self.store.iter_blocks(height + 1)]

    def block(self, h: bytes) -> NetBlock | None:
        """A main-chain block by hash (for a peer that asks)."""
        i = self.pos.get(h)
        if i is None:
            s = self.side.get(h)
            return s.blk if s else None
        rec = self.store.get_block(i)
        assert rec is not None
        return make_block(rec.header_bytes, [r.message for r in self.store.block_txs(i)])

    # ---- taking blocks -------------------------------------------------------------

    def receive(self, blocks: Iterable[NetBlock]) -> Received:
        """Check and keep `blocks`, then follow the heaviest chain."""
        out = Received()
        for b in blocks:
            try:
                kept = self._admit(b, out)
            except BlockRefused as e:
                out.refused.append((b, e))
                continue
            if not kept:
                out.orphans = True
        self._choose(out)
        self._prune()
        return out

    def _parent(self, b: NetBlock) -> tuple[int, int, int, int] | None:
        """(height, cumulative work, time, target) of b's parent, None if unknown."""
        p = b.prev
        i = self.pos.get(p)
        if i is not None:
            return i, self.works[i], self.times[i], self.targets[i]
        s = self.side.get(p)
        if s is not None:
            f = s.blk.fields
            return f["height"], s.work, f["time"], f["target"]
        return None

    def _time_at(self, parent: bytes) -> Callable[[int], int]:
        """Header time at a height on the branch ending at `parent`."""
        branch: dict[int, int] = {}
        x = parent
        while x in self.side:
            s = self.side[x]
            branch[s.blk.height] = s.blk.fields["time"]
            x = s.blk.prev
        fork = self.pos[x]
        return lambda h: branch[h] if h > fork else self.times[h]

    def _admit(self, b: NetBlock, out: Received) -> bool:
        """Header checks against the parent; keep b as side block (True) or
        orphan (False). Raises BlockRefused."""
        h, f, g = b.hash, b.fields, self.genesis
        if h in self.pos or h in self.side or h in self.orphans:
            raise BlockRefused(KNOWN, "height %d" % b.height)
        if h in self.bad:
            raise BlockRefused(INVALID, self.bad[h])
        if b.height == 0:
            raise BlockRefused(GENESIS_MISMATCH, "another block 0")
        if b.prev in self.bad:
            self._mark_bad(h, INVALID_ANCESTOR)
            raise BlockRefused(INVALID_ANCESTOR, self.bad[b.prev])
        if len(b.txs) > g.block_max_txs:
            raise BlockRefused(TOO_MANY_TXS, "%d, at most %d" % (len(b.txs), g.block_max_txs))
        parent = self._parent(b)
        if parent is None:
            if len(self.orphans) >= self.max_orphans:
                self.orphans.popitem(last=False)
            self.orphans[h] = b
            return False
        ph, pwork, ptime, ptarget = parent
        if b.height != ph + 1:
            raise BlockRefused(BAD_BLOCK, "height %d after %d" % (b.height, ph))
        if f["time"] < ptime:
            raise BlockRefused(TIME_BACKWARDS, "%d < %d" % (f["time"], ptime))
        now = int(self.clock())
        if f["time"] > now + self.max_drift_s:
            raise BlockRefused(TIME_FUTURE, "%d s ahead, at most %d" % (f["time"] - now,
                                                                      self.max_drift_s))
        want = ptarget
        if pw.is_retarget_height(b.height, g.retarget_blocks):
            want = pw.next_target(b.height, ptarget, self._time_at(b.prev), g.retarget_blocks,
                                  g.block_time_ms, g.target)
        if f["target"] != want:
            raise BlockRefused(BAD_TARGET, "target %d, the rule says %d" % (f["target"], want))
        if not pw.meets(h, want):
            raise BlockRefused(BAD_POW, "hash above target")
        work = pwork + pw.work(want)
        if work <= self._floor():
            raise BlockRefused(LOW_WORK, "height %d, %d blocks below the head" % (
                b.height, self.height - b.height))
        if merkle.root(b.txs) != f["tx_root"]:
            raise BlockRefused(TX_ROOT)
        self.side[h] = Side(b, work)
        out.accepted.append(b)
        # orphans waiting for this block
        for oh in [k for k, o in self.orphans.items() if o.prev == h]:
            o = self.orphans.pop(oh)
            try:
                self._admit(o, out)
            except BlockRefused as e:
                out.refused.append((o, e))
        return True

    def _floor(self) -> int:
        """Cumulative work a side block must exceed to be kept."""
        i = self.height - self.reorg_window
        return self.works[i] if i >= 0 else 0

    def _mark_bad(self, h: bytes, reason: str) -> None:
        self.bad[h] = reason
        while len(self.bad) > MAX_BAD:
            self.bad.popitem(last=False)
        for k in [k for k, s in self.side.items() if s.blk.prev == h]:
            self.side.pop(k, None)
            self._mark_bad(k, INVALID_ANCESTOR)
        self.side.pop(h, None)

    def _prune(self) -> None:
        floor = self._floor()
        for k in [k for k, s in self.side.items() if s.work <= floor]:
            del self.side[k]
        for s in sorted(self.side.values(), key=lambda s: s.blk.height):
            if s.blk.prev not in self.pos and s.blk.prev not in self.side:
                del self.side[s.blk.hash]
        total = sum(s.blk.size for s in self.side.values())
        if len(self.side) > self.max_side or total > self.max_side_bytes:
            parents = {s.blk.prev for s in self.side.values()}
            # least preferred first: less work, then (the tie-break) the higher hash
            for s in sorted(self.side.values(),
                            key=lambda s: (s.work, -int.from_bytes(s.blk.hash, "big"))):
                if len(self.side) <= self.max_side and total <= self.max_side_bytes:
                    break
                # drop the lightest tips first (never a parent of a kept block)
                if s.blk.hash in parents:
                    continue
                del self.side[s.blk.hash]
                total -= s.blk.size

    # ---- fork choice -----------------------------------------------------------------

    def _better(self, work: int, h: bytes, than_work: int, than: bytes) -> bool:
        return work > than_work or (work == than_work and h < than)

    def _choose(self, out: Received) -> None:
        while True:
            best: Side | None = None
            for s in self.side.values():
                if self._better(s.work, s.blk.hash, *(
                        (best.work, best.blk.hash) if best else (self.work, self.head_hash))):
                    best = s
            if best is None or not self._switch(best, out):
                return

    def _switch(self, tip: Side, out: Received) -> bool:
        """Make the branch ending at `tip` the main chain (or its heaviest
        valid prefix if that still beats the head). True if it changed
        anything (the head or the bad set)."""
        path: list[Side] = []
        x = tip.blk.hash
        while x not in self.pos:
            s = self.side[x]
            path.append(s)
            x = s.blk.prev
        path.reverse()
        fork = self.pos[x]
        live = fork == self.height
        state = self.reg.state if live else self.store.state_at(fork)
        done: list[tuple[Side, chain.Executed]] = []
        failed = False
        for s in path:
            try:
                ex = self._execute(s.blk, state)
            except BlockRefused as e:
                out.refused.append((s.blk, e))
                self._mark_bad(s.blk.hash, e.reason)
                failed = True
                break
            state.apply(ex.overlay)
            done.append((s, ex))
        if not done or not self._better(done[-1][0].work, done[-1][0].blk.hash, self.work,
                                        self.head_hash):
            return failed
        self._commit(fork, done, state, out)
        return True

    def _execute(self, b: NetBlock, state: chain.RegistryState) -> chain.Executed:
        f = b.fields
        ex = chain.execute(b.txs, state, b.height)
        if ex.dropped:
            tid, e = ex.dropped[0]
            why = e.reason if e.detail in ("", e.reason) else "%s/%s" % (e.reason, e.detail)
            raise BlockRefused(BAD_TX, "tx %s: %s" % (tid.hex()[:16], why))
        if ex.tx_root != f["tx_root"]:
            raise BlockRefused(TX_ROOT)
        if ex.receipts_root != f["receipts_root"]:
            raise BlockRefused(RECEIPTS_ROOT)
        if ex.overlay.root() != f["state_root"]:
            raise BlockRefused(STATE_ROOT)
        return ex

    def _commit(self, fork: int, done: list[tuple[Side, chain.Executed]],
                state: chain.RegistryState, out: Received) -> None:
        store = self.store
        new_ids = {t.id for _, ex in done for t in ex.txs}
        back = [(r.id, r.sender, r.seq, r.type, r.message)
                for h in range(fork + 1, self.height + 1) for r in store.block_txs(h)
                if r.id not in new_ids]
        blocks = [chain.RegistryBlock(s.blk.fields, s.blk.header_bytes, s.blk.hash, ex)
                  for s, ex in done]
        removed = store.switch(fork, blocks, back, int(self.clock()))
        for i, (hb, txs) in enumerate(removed, start=fork + 1):
            old = make_block(hb, txs)
            self.side[old.hash] = Side(old, self.works[i])
            del self.pos[old.hash]
        del self.main[fork + 1:], self.works[fork + 1:], self.times[fork + 1:], \
            self.targets[fork + 1:]
        for s, _ in done:
            f = s.blk.fields
            self.pos[s.blk.hash] = len(self.main)
            self.main.append(s.blk.hash)
            self.works.append(s.work)
            self.times.append(f["time"])
            self.targets.append(f["target"])
            self.side.pop(s.blk.hash, None)
        last, ex = done[-1]
        self.reg.set_head(RegistryBlockRecord(last.blk.height, last.blk.hash,
                                              last.blk.fields["time"], len(ex.txs),
                                              last.blk.header_bytes), state)
        out.switched = True
        out.reorg_depth += len(removed)
        out.returned += len(back)

    # ---- mining --------------------------------------------------------------------

    def template(self, miner: bytes) -> tuple[dict[str, Any], chain.Executed] | None:
        """Header fields (nonce 0) and executed txs of a block on the head
        from the mempool; None if nothing is includable. Pending txs that
        are no longer includable leave the mempool."""
        g = self.genesis
        rows = self.store.pending(g.block_max_txs)
        if not rows:
            return None
        height = self.height + 1
        ex = chain.execute([m for _, m in rows], self.reg.state, height)
        if ex.dropped:
            self.store.drop_pending([i for i, _ in ex.dropped])
        if not ex.txs:
            return None
        target = self.targets[-1]
        if pw.is_retarget_height(height, g.retarget_blocks):
            target = pw.next_target(height, target, self.times.__getitem__, g.retarget_blocks,
                                    g.block_time_ms, g.target)
        fields = chain.header_fields(
            height=height, prev_hash=self.head_hash,
            time=max(int(self.clock()), self.times[-1]), tx_root=ex.tx_root,
            receipts_root=ex.receipts_root, state_root=ex.overlay.root(), proposer=miner,
            target=target)
        return fields, ex
