"""Mempool: admitted transactions waiting for a block (bounded FIFO).

A transaction is pending from `admit()`/`add()` until `done()`: first queued,
then, after `take()`, in flight (being built into a block and committed).
While pending it
- dedupes: a second copy (same tx id) is ignored (`admit`/`add` -> False);
  the caller answers it when the block commits, or re-sends a stored receipt;
- raises the sender's seq floor (`pending_seq`), so a replay of a pending seq
  is refused before it reaches a block;
- makes a pending register visible to `view()`, so a device may publish
  readings right after its register, before the register's block commits.
Call `done(txs)` once the block holding them is committed *and* the state has
absorbed its diff (also for dropped txs), never earlier.

Full queue: `MempoolFull` (reason "mempool-full", a gateway-only reason code:
the device should retry later with the same signed message).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

from gateway.state import DeviceRecord, Rules, StateView
from gateway.validate import check_stateful
from shared import errors
from shared import tx as txm

MEMPOOL_FULL = "mempool-full"
DEFAULT_CAPACITY = 100_000


class MempoolFull(errors.TLError):
    reason = MEMPOOL_FULL


class PendingView:
    """Committed state plus the devices whose register is pending."""

    __slots__ = ("_state", "_keys")

    def __init__(self, state: StateView, keys: dict[bytes, bytes]) -> None:
        self._state = state
        self._keys = keys

    def get(self, device_id: bytes) -> DeviceRecord | None:
        rec = self._state.get(device_id)
        if rec is None:
            pub = self._keys.get(device_id)
            if pub is not None:
                rec = DeviceRecord(pub, 0, 0)
        return rec


class Mempool:
    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        self.capacity = capacity
        self._queue: deque[txm.Tx] = deque()
        self._ids: set[bytes] = set()
        self._seq: dict[bytes, int] = {}
        self._keys: dict[bytes, bytes] = {}

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
        return PendingView(state, self._keys)

    def add(self, t: txm.Tx) -> bool:
        """Queue a transaction that passed validate.check_stateful. False if
        already pending; raises MempoolFull."""
        if t.id in self._ids:
            return False
        if len(self._queue) >= self.capacity:
            raise MempoolFull(MEMPOOL_FULL)
        self._queue.append(t)
        self._ids.add(t.id)
        self._seq[t.sender] = t.seq
        if t.type == txm.TYPE_REGISTER:
            self._keys[t.sender] = t.body[1]
        return True

    def admit(self, t: txm.Tx, state: StateView, rules: Rules | None = None) -> bool:
        """Stateful check (signature included) against `state` and the pending
        txs, then add. False if the same tx is already pending; raises TLError
        (see gateway/validate.py) or MempoolFull."""
        if t.id in self._ids:
            return False
        check_stateful(t, self.view(state), self._seq.get(t.sender), rules)
        return self.add(t)

    def take(self, max_n: int) -> list[txm.Tx]:
        """Up to `max_n` queued txs in arrival order; they stay pending."""
        q = self._queue
        n = min(max_n, len(q))
        return [q.popleft() for _ in range(n)]

    def done(self, txs: Iterable[txm.Tx]) -> None:
        """Forget txs whose block is committed (or that were dropped)."""
        for t in txs:
            self._ids.discard(t.id)
            s = self._seq.get(t.sender)
            if s is not None and s <= t.seq:
                del self._seq[t.sender]
                self._keys.pop(t.sender, None)
            elif t.type == txm.TYPE_REGISTER:
                self._keys.pop(t.sender, None)
