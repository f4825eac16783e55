"""Ledger state and the pure state-transition function.

State = device registry keyed by 16-byte device id -> DeviceRecord(pubkey,
last_seq, balance). `apply()` executes one (already signature-checked)
transaction on a copy-on-write `StateOverlay`; the overlay's `changed` dict is
the block's state diff, which the store writes and `State.apply_diff()` folds
into the committed state once the block is on disk.

Rules:
- register: adds the sender with the body's pubkey, last_seq = tx seq,
  balance 0. Only devices listed in genesis start with a balance (the one mint).
  Proof of possession: the sender id is SHA-256(pubkey)[:16] and the message is
  signed by that key (checked by gateway/validate.py). Admission "closed"
  refuses every register with not-authorized.
- reading: updates last_seq only (and pays the fee).
- transfer {1: to, 2: amount}: moves `amount` from sender to `to`. If the
  sender cannot cover it, or `to` is unknown, the tx is still included with
  status failed (reason insufficient-funds / unknown-device): its seq is
  consumed and its fee charged, like Ethereum, so a resend of the same signed
  tx stays idempotent and the failure is on the chain for the device to see.
- fee: every tx pays `fee` (>= Rules.min_fee, 0 by default: fee-less domains
  are allowed) from the sender to the authority account (the device id of the
  authority key, always present in the state). A tx whose sender cannot pay
  its fee is *not* includable (refused with insufficient-funds, seq not
  consumed).
- Conservation: the sum of all balances is fixed at genesis; fees and
  transfers only move value.

Not-includable transactions make `precheck()` / `apply()` raise `RuleError`
(reason unknown-device, replay, already-registered, insufficient-funds,
not-authorized, or bad-tx/fee-too-low) before anything is written.

Events in receipts (canonical CBOR arrays): ["fee", amount] when fee > 0,
["transfer", to_id, amount] for a successful transfer.

state_root: RFC 6962 Merkle root over leaves cbor([id, pubkey, last_seq,
balance]) sorted by id (empty state: merkle.EMPTY_ROOT).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from shared import cbor, errors, merkle
from shared import tx as txm
from shared.messages import STATUS_FAILED, STATUS_OK

ADMISSION_OPEN = "open"
ADMISSION_CLOSED = "closed"
ADMISSIONS = (ADMISSION_OPEN, ADMISSION_CLOSED)
FEE_TOO_LOW = "fee-too-low"


@dataclass(frozen=True, slots=True)
class DeviceRecord:
    pubkey: bytes
    last_seq: int
    balance: int


class StateView(Protocol):
    """Anything that maps a device id to its record (State, StateOverlay,
    mempool.PendingView)."""

    def get(self, device_id: bytes) -> DeviceRecord | None: ...


@dataclass(frozen=True)
class Rules:
    """Domain policy from genesis."""

    authority_id: bytes
    admission: str = ADMISSION_OPEN
    min_fee: int = 0


class RuleError(errors.TLError):
    """A transaction that cannot be included in the current state."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(detail or reason, reason)


@dataclass(frozen=True, slots=True)
class Outcome:
    """Result of an included transaction (goes into its receipt)."""

    status: int
    reason: str
    events: list[Any]


def leaf(device_id: bytes, rec: DeviceRecord) -> bytes:
    """State tree leaf of one device."""
    return cbor.dumps([device_id, rec.pubkey, rec.last_seq, rec.balance])


def state_root(devices: Mapping[bytes, DeviceRecord]) -> bytes:
    """Merkle root of a device mapping, computed from scratch (reference)."""
    return merkle.root([leaf(i, devices[i]) for i in sorted(devices)])


class State:
    """Committed state: devices by id, with cached leaf hashes so the root of
    a block's state costs one leaf encode per *changed* device."""

    __slots__ = ("devices", "_hashes", "_ids")

    def __init__(self, devices: Mapping[bytes, DeviceRecord] | None = None) -> None:
        self.devices: dict[bytes, DeviceRecord] = dict(devices or {})
        self._hashes: dict[bytes, bytes] = {}
        self._ids: list[bytes] | None = None

    def get(self, device_id: bytes) -> DeviceRecord | None:
        return self.devices.get(device_id)

    def __len__(self) -> int:
        return len(self.devices)

    def __contains__(self, device_id: object) -> bool:
        return device_id in self.devices

    def items(self) -> Iterator[tuple[bytes, DeviceRecord]]:
        """(id, record) sorted by id."""
        for i in self.sorted_ids():
            yield i, self.devices[i]

    def sorted_ids(self) -> list[bytes]:
        if self._ids is None:
            self._ids = sorted(self.devices)
        return self._ids

    def total_balance(self) -> int:
        return sum(r.balance for r in self.devices.values())

    def _hash(self, device_id: bytes) -> bytes:
        h = self._hashes.get(device_id)
        if h is None:
            h = merkle.leaf_hash(leaf(device_id, self.devices[device_id]))
            self._hashes[device_id] = h
        return h

    def root(self) -> bytes:
        return self.root_with({})

    def root_with(self, changes: Mapping[bytes, DeviceRecord]) -> bytes:
        """State root of this state with `changes` applied (not stored)."""
        ids = self.sorted_ids()
        new = [i for i in changes if i not in self.devices]
        if new:
            ids = sorted([*ids, *new])
        hashes = [merkle.leaf_hash(leaf(i, changes[i])) if i in changes else self._hash(i)
                  for i in ids]
        return merkle.root_of(merkle.levels(hashes))

    def apply_diff(self, diff: Mapping[bytes, DeviceRecord]) -> None:
        """Fold a committed block's diff into the state."""
        for i, rec in diff.items():
            if i not in self.devices and self._ids is not None:
                bisect.insort(self._ids, i)
            self.devices[i] = rec
            self._hashes.pop(i, None)

    def copy(self) -> State:
        s = State(self.devices)
        s._hashes = dict(self._hashes)
        return s


_MISSING = DeviceRecord(b"", -1, -1)


class StateOverlay:
    """Copy-on-write view over a State. `changed` is the diff (id -> new
    record). savepoint()/rollback()/release() undo a failed tx body."""

    __slots__ = ("base", "changed", "_journal")

    def __init__(self, base: State) -> None:
        self.base = base
        self.changed: dict[bytes, DeviceRecord] = {}
        self._journal: dict[bytes, DeviceRecord] | None = None

    def get(self, device_id: bytes) -> DeviceRecord | None:
        rec = self.changed.get(device_id)
        if rec is None:
            rec = self.base.devices.get(device_id)
        return rec

    def put(self, device_id: bytes, rec: DeviceRecord) -> None:
        j = self._journal
        if j is not None and device_id not in j:
            j[device_id] = self.changed.get(device_id, _MISSING)
        self.changed[device_id] = rec

    def savepoint(self) -> None:
        self._journal = {}

    def rollback(self) -> None:
        for i, old in (self._journal or {}).items():
            if old is _MISSING:
                del self.changed[i]
            else:
                self.changed[i] = old
        self._journal = None

    def release(self) -> None:
        self._journal = None

    def root(self) -> bytes:
        return self.base.root_with(self.changed)


def precheck(view: StateView, tx: txm.Tx, rules: Rules,
             pending_seq: int | None = None) -> DeviceRecord | None:
    """Stateful admission rules except the signature; returns the sender's
    current record (None for a register). `pending_seq` is the sender's
    highest seq still in the mempool. Raises RuleError.
    A seq at or below the floor is always `replay` (also for a register of a
    known device), so a resend of a committed tx is recognised by one reason."""
    rec = view.get(tx.sender)
    floor = rec.last_seq if rec is not None else 0
    if pending_seq is not None and pending_seq > floor:
        floor = pending_seq
    if tx.type == txm.TYPE_REGISTER:
        if rules.admission != ADMISSION_OPEN:
            raise RuleError(errors.NOT_AUTHORIZED, "admission-closed")
        if rec is not None or pending_seq is not None:
            if tx.seq <= floor:
                raise RuleError(errors.REPLAY)
            raise RuleError(errors.ALREADY_REGISTERED)
        balance = 0
    else:
        if rec is None:
            raise RuleError(errors.UNKNOWN_DEVICE)
        if tx.seq <= floor:
            raise RuleError(errors.REPLAY)
        balance = rec.balance
    if tx.fee < rules.min_fee:
        raise RuleError(errors.BAD_TX, FEE_TOO_LOW)
    if tx.fee > balance:
        raise RuleError(errors.INSUFFICIENT_FUNDS, "fee")
    return rec


def _credit(view: StateOverlay, device_id: bytes, amount: int) -> None:
    r = view.get(device_id)
    if r is None:
        raise RuntimeError("credit to a missing account")
    view.put(device_id, DeviceRecord(r.pubkey, r.last_seq, r.balance + amount))


def apply(view: StateOverlay, tx: txm.Tx, rules: Rules) -> Outcome:
    """Execute one transaction whose signature was already verified.
    Raises RuleError (nothing written) if it is not includable; otherwise
    writes its effects to `view` and returns the receipt outcome."""
    rec = precheck(view, tx, rules)
    sender = tx.sender
    body = tx.body
    if rec is None:  # register (precheck allows rec None only for register)
        rec = DeviceRecord(body[1], 0, 0)
    view.put(sender, DeviceRecord(rec.pubkey, tx.seq, rec.balance - tx.fee))
    events: list[Any] = []
    if tx.fee:
        _credit(view, rules.authority_id, tx.fee)
        events.append(["fee", tx.fee])
    if tx.type != txm.TYPE_TRANSFER:
        return Outcome(STATUS_OK, "", events)
    to, amount = body[1], body[2]
    src = view.get(sender)
    assert src is not None
    if src.balance < amount:
        return Outcome(STATUS_FAILED, errors.INSUFFICIENT_FUNDS, events)
    if view.get(to) is None:
        return Outcome(STATUS_FAILED, errors.UNKNOWN_DEVICE, events)
    view.savepoint()
    try:
        view.put(sender, DeviceRecord(src.pubkey, src.last_seq, src.balance - amount))
        _credit(view, to, amount)
    except BaseException:
        view.rollback()
        raise
    view.release()
    events.append(["transfer", to, amount])
    return Outcome(STATUS_OK, "", events)
