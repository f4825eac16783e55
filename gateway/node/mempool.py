"""Mempool: admitted transactions waiting for a block (bounded FIFO).

A transaction is pending from `admit()`/`add()` until `done()`: first queued,
then, after `take()`, in flight (being built into a block and committed).
While pending it
- dedupes: a second copy (same tx id) is ignored (`admit`/`add` -> False);
  the caller answers it when the block commits, or re-sends a stored receipt;
- raises the sender's seq floor (`pending_seq`), so a replay of a pending seq
  is refused before it reaches a block;
- makes a principal created by a pending tx visible to `view()`: a register
  (or a node introducing itself) makes its sender known, a claim makes the
  claimed device known (owned, with `submit`), so a device may publish
  readings right after its register / claim, before that block commits, and
  a second claim of the same device is refused (already-owned) at once.
  Other identity changes (rotation, rights, retirement) take effect for
  admission only once their block is committed.
Call `done(txs)` once the block holding them is committed *and* the state has
absorbed its diff (also for dropped txs), never earlier.

Full queue: `MempoolFull` (reason "mempool-full", a gateway-only reason code:
the device should retry later with the same signed message).

Order of a refused sender (`hold`): once a sender's seq N has been refused
as full, its higher seqs are refused too (the same reason, detail "held")
until N itself is admitted, so a device that sends N, N+1, ... back to back
never sees N+1 admitted while N waits: N would then be a `replay`, lost. A
hold ends when N is admitted, or HOLD_S after N was last refused (a sender
that gave N up, e.g. signed it again under a new seq). The domain authority
(the market's operator, in process) is never held. Another retryable refusal
(rate-limited) may hold a sender the same way, for a transaction whose
signature it has checked.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable

from gateway.errors import MempoolFull
from gateway.ledger.state import DeviceRecord, Rules, StateView, claimed_device, introduces_sender
from gateway.ledger.validate import SigCheck, check_stateful
from shared import errors
from shared import tx as txm
from shared.reasons import MEMPOOL_FULL

DEFAULT_CAPACITY = 100_000
HOLD_S = 30.0  # a hold's life after the last refusal of its seq (> a board's longest backoff)
MAX_HOLDS = 100_000


class PendingView:
    """Committed state plus the principals created by pending txs."""

    __slots__ = ("_state", "_created")

    def __init__(self, state: StateView,
                 created: dict[bytes, tuple[DeviceRecord, bytes]]) -> None:
        self._state = state
        self._created = created

    def get(self, device_id: bytes) -> DeviceRecord | None:
        rec = self._state.get(device_id)
        if rec is None:
            c = self._created.get(device_id)
            if c is not None:
                rec = c[0]
        return rec

    def kv_get(self, key: bytes) -> bytes | None:
        return self._state.kv_get(key)


def _creates(t: txm.Tx) -> tuple[bytes, DeviceRecord] | None:
    """(id, record as seen while pending) of the principal `t` creates."""
    if introduces_sender(t):
        pub = t.body[1] if t.type == txm.TYPE_REGISTER else t.body[4]
        return t.sender, DeviceRecord(pub, 0, 0)
    if t.type == txm.TYPE_CLAIM:
        pub = t.body[1]
        return txm.device_id(pub), claimed_device(pub, t.sender)
    return None


class Mempool:
    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        self.capacity = capacity
        self._queue: deque[txm.Tx] = deque()
        self._ids: set[bytes] = set()
        self._seq: dict[bytes, int] = {}
        # id -> (record, id of the pending tx that creates it)
        self._created: dict[bytes, tuple[DeviceRecord, bytes]] = {}
        # sender -> (refused seq, its reason, monotonic time the hold ends)
        self._held: dict[bytes, tuple[int, str, float]] = {}
        # id -> (the tx, the key admit() verified its signature under) (see verified())
        self._verified: dict[bytes, tuple[txm.Tx, bytes]] = {}

    def __len__(self) -> int:
        """Queued (not yet taken) transactions."""
        return len(self._queue)

    def __contains__(self, tx_id: object) -> bool:
        """True while the tx is queued or in flight."""
        return tx_id in self._ids

    @property
    def pending(self) -> int:
        """Queued plus in-flight transactions."""
        return len(self._ids)

    def pending_seq(self, sender: bytes) -> int | None:
        return self._seq.get(sender)

    def view(self, state: StateView) -> PendingView:
        return PendingView(state, self._created)

    def hold(self, sender: bytes, seq: int, reason: str, now: float | None = None) -> None:
        """Refuse `sender`'s seqs above `seq` with `reason` (retryable) until
        `seq` is admitted or HOLD_S pass without it being refused again."""
        now = time.monotonic() if now is None else now
        h = self._held.get(sender)
        if h is not None and h[0] < seq and h[2] > now:
            return  # held at a lower seq already
        if h is None and len(self._held) >= MAX_HOLDS:
            self._held = {k: v for k, v in self._held.items() if v[2] > now}
            if len(self._held) >= MAX_HOLDS:
                return  # (order no longer guaranteed for new senders)
        self._held[sender] = (seq, reason, now + HOLD_S)

    def check_held(self, t: txm.Tx, now: float | None = None) -> None:
        """Raise the hold's retryable refusal if `t` is above its sender's held seq."""
        h = self._held.get(t.sender)
        if h is None or t.seq <= h[0]:
            return
        if h[2] <= (time.monotonic() if now is None else now):
            del self._held[t.sender]
            return
        raise errors.TLError("held", reason=h[1])

    def verified(self, tx_id: bytes) -> tuple[txm.Tx, bytes] | None:
        """(the pending tx, the key its signature verified under at admit())
        for a tx this mempool checked itself; None otherwise (not pending, or
        queued by add() unchecked). A replica re-executing another gateway's
        block skips the signature check of its txs only when the bytes are
        these and the key is the one they must be signed by there
        (blocks.execute's `verified`, gateway/cluster/replica.py)."""
        return self._verified.get(tx_id)

    def queued(self) -> Iterable[txm.Tx]:
        """The pending txs in arrival order (not yet taken into a block)."""
        return iter(self._queue)

    def add(self, t: txm.Tx) -> bool:
        """Queue a transaction that passed validate.check_stateful. False if
        already pending; raises MempoolFull (and holds the sender's order)."""
        if t.id in self._ids:
            return False
        if len(self._queue) >= self.capacity:
            self.hold(t.sender, t.seq, MEMPOOL_FULL)
            raise MempoolFull(MEMPOOL_FULL)
        h = self._held.get(t.sender)
        if h is not None and t.seq >= h[0]:
            del self._held[t.sender]
        self._queue.append(t)
        self._ids.add(t.id)
        self._seq[t.sender] = t.seq
        c = _creates(t)
        if c is not None:
            self._created.setdefault(c[0], (c[1], t.id))
        return True

    def admit(self, t: txm.Tx, state: StateView, rules: Rules | None = None,
              checked: SigCheck | None = None) -> bool:
        """Stateful check (signature included) against `state` and the pending
        txs, the sender's hold, then add. False if the same tx is already
        pending; raises TLError (see gateway/ledger/validate.py; the hold's reason)
        or MempoolFull. `checked`: the signature's verdict from a worker
        process (gateway/node/verifier.py), used only if it was checked under
        the key the sender holds now."""
        if t.id in self._ids:
            return False
        key = check_stateful(t, self.view(state), self._seq.get(t.sender), rules, checked)
        if rules is None or t.sender != rules.authority_id:
            self.check_held(t)
        added = self.add(t)
        if added:
            self._verified[t.id] = (t, key)
        return added

    def take(self, max_n: int) -> list[txm.Tx]:
        """Up to `max_n` queued txs in arrival order; they stay pending."""
        q = self._queue
        n = min(max_n, len(q))
        return [q.popleft() for _ in range(n)]

    def remove(self, txs: Iterable[txm.Tx]) -> None:
        """Forget txs a block built elsewhere holds, queued or not (a
        replicated domain: gateway/cluster/replica.py)."""
        txs = list(txs)
        gone = {t.id for t in txs if t.id in self._ids}
        if not gone:
            return
        self._queue = deque(t for t in self._queue if t.id not in gone)
        self.done(t for t in txs if t.id in gone)

    def done(self, txs: Iterable[txm.Tx]) -> None:
        """Forget txs whose block is committed (or that were dropped)."""
        for t in txs:
            self._ids.discard(t.id)
            self._verified.pop(t.id, None)
            s = self._seq.get(t.sender)
            if s is not None and s <= t.seq:
                del self._seq[t.sender]
            c = _creates(t)
            if c is not None:
                got = self._created.get(c[0])
                if got is not None and got[1] == t.id:
                    del self._created[c[0]]
