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
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

from gateway.state import DeviceRecord, Rules, StateView, claimed_device, introduces_sender
from gateway.validate import check_stateful
from shared import errors
from shared import tx as txm
from shared.reasons import MEMPOOL_FULL

DEFAULT_CAPACITY = 100_000


class MempoolFull(errors.TLError):
    reason = MEMPOOL_FULL


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
        c = _creates(t)
        if c is not None:
            self._created.setdefault(c[0], (c[1], t.id))
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
            c = _creates(t)
            if c is not None:
                got = self._created.get(c[0])
                if got is not None and got[1] == t.id:
                    del self._created[c[0]]
