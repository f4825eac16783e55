"""Registry chain rules: records, validation, state transitions, headers (pure).

Transactions (docs/IDENTITY.md §1), domain "registry", fee always 0 (the
registry has no currency; work, not fees, pays for blocks):

    20 MFR_REGISTER   signed by the manufacturer key itself
                      body {1: pubkey33 (SHA-256(pubkey)[:16] == sender),
                            2: name (text)}
    21 DEVICE_RECORD  signed by a registered manufacturer
                      body {1: device pubkey33 (a point on P-256),
                            2: model (text), 3: serial (text),
                            4: manufactured (unix s),
                            5: warranty_end (unix s, >= manufactured)}

Texts are 1..64 characters, printable, without leading/trailing spaces (a
serial " 123" must not pass as another serial than "123"). Times are
0 .. 253402300799 (year 9999), so every date prints.

Refusals (not includable; typed TLError, `reason` the wire code, `detail`
finer), in the order they are checked:
    too-large / bad-cbor / bad-cose / bad-tx   envelope (shared/tx.decode)
    wrong-domain        the payload names another chain than "registry"
    bad-tx              body schema (bad-type, bad-body, bad-pubkey,
                        sender-mismatch, bad-name, bad-model, bad-serial,
                        bad-manufactured, bad-warranty) or fee-not-zero
    unknown-device      DEVICE_RECORD from a sender that is not a registered
                        manufacturer (detail not-manufacturer)
    bad-signature       not signed by the key it must be signed by: its own
                        body key (MFR_REGISTER) or the registered key of the
                        manufacturer it names as sender (DEVICE_RECORD)
    replay              seq <= the signer's last seq (committed or pending)
    already-registered  MFR_REGISTER of a registered manufacturer
Included but failed (receipt status failed, reason already-registered,
visible on chain, state unchanged except the signer's seq): a DEVICE_RECORD
whose device key or serial is already registered, by any manufacturer. Its
receipt events are [["conflict", <registered device id>, "key"|"serial"]]
and the store lists it as an `Attempt` of both device ids.

State: manufacturers (id -> pubkey, name, last_seq, height, tx_id) and
devices (id -> pubkey, manufacturer, model, serial, manufactured,
warranty_end, height, tx_id); serials are unique over all devices.
state_root: RFC 6962 root over the leaves, sorted by key,
    manufacturer  key 0x00||id  leaf cbor([0, id, pubkey, name, last_seq, height, tx_id])
    device        key 0x01||id  leaf cbor([1, id, pubkey, manufacturer, model, serial,
                                           manufactured, warranty_end, height, tx_id])
so a light node proves a record with an audit path against a header whose
work it checked (`check_record_proof`).

Header: the domain header fields (shared/header.FIELDS) plus `target` and
`nonce`, canonical CBOR, not signed; `proposer` is the miner's id.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any, Protocol

from gateway.ledger import validate
from gateway.ledger.blocks import HeaderFields, Receipt, receipts_levels
from gateway.ledger.state import RuleError
from gateway.ledger.validate import valid_public_key
from gateway.registry import pow as pw
from shared import cbor, errors, header, merkle, messages, regproof
from shared import tx as txm

DOMAIN = "registry"
TEXT_MAX = 64
TIME_MAX = 253_402_300_799  # 9999-12-31T23:59:59Z
MINER_ID_LEN = txm.ID_LEN
ANONYMOUS_MINER = bytes(MINER_ID_LEN)
ZERO_HASH = bytes(32)
HEADER_FIELDS = (*header.FIELDS, "target", "nonce")

# details (reasons are the shared/errors wire codes)
NOT_MANUFACTURER = "not-manufacturer"
FEE_NOT_ZERO = "fee-not-zero"
CONFLICT_KEY = "key"
CONFLICT_SERIAL = "serial"
MFR_TAG = 0
DEVICE_TAG = 1


# ---- records -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Manufacturer:
    pubkey: bytes
    name: str
    last_seq: int
    height: int
    tx_id: bytes


@dataclass(frozen=True, slots=True)
class DeviceEntry:
    pubkey: bytes
    manufacturer: bytes
    model: str
    serial: str
    manufactured: int
    warranty_end: int
    height: int
    tx_id: bytes


@dataclass(frozen=True, slots=True)
class RegistryRecord:
    """A device as the registry knows it (what `lookup` returns)."""

    device_id: bytes
    device_pubkey: bytes
    manufacturer_id: bytes
    manufacturer_name: str
    model: str
    serial: str
    manufactured: int
    warranty_end: int
    height: int
    tx_id: bytes

    def warranty_valid(self, now: int) -> bool:
        """True while `now` (unix s) is not after the warranty end."""
        return now <= self.warranty_end


@dataclass(frozen=True, slots=True)
class Attempt:
    """A refused duplicate DEVICE_RECORD, included with status failed."""

    tx_id: bytes
    height: int
    idx: int
    manufacturer_id: bytes
    manufacturer_name: str
    device_id: bytes
    device_pubkey: bytes
    model: str
    serial: str
    conflict_id: bytes  # the registered device it collided with
    conflict: str  # "key" or "serial"
    reason: str = errors.ALREADY_REGISTERED


@dataclass(frozen=True, slots=True)
class RegistryOutcome:
    status: int
    reason: str
    events: list[Any]
    attempt: Attempt | None = None


def mfr_leaf(mid: bytes, m: Manufacturer) -> bytes:
    return cbor.dumps([MFR_TAG, mid, m.pubkey, m.name, m.last_seq, m.height, m.tx_id])


def device_leaf(did: bytes, d: DeviceEntry) -> bytes:
    return cbor.dumps([DEVICE_TAG, did, d.pubkey, d.manufacturer, d.model, d.serial,
                       d.manufactured, d.warranty_end, d.height, d.tx_id])


def record(did: bytes, d: DeviceEntry, mfr_name: str) -> RegistryRecord:
    return RegistryRecord(did, d.pubkey, d.manufacturer, mfr_name, d.model, d.serial,
                          d.manufactured, d.warranty_end, d.height, d.tx_id)


# ---- state ---------------------------------------------------------------------


class View(Protocol):
    def manufacturer(self, mid: bytes) -> Manufacturer | None: ...


class RegistryState:
    """Committed registry state with cached leaf hashes (a block's root
    re-encodes only what the block changed)."""

    __slots__ = ("mfrs", "devices", "serials", "_hashes", "_keys")

    def __init__(self, mfrs: Mapping[bytes, Manufacturer] | None = None,
                 devices: Mapping[bytes, DeviceEntry] | None = None) -> None:
        self.mfrs: dict[bytes, Manufacturer] = dict(mfrs or {})
        self.devices: dict[bytes, DeviceEntry] = dict(devices or {})
        self.serials: dict[str, bytes] = {d.serial: i for i, d in self.devices.items()}
        self._hashes: dict[bytes, bytes] = {}
        self._keys: list[bytes] | None = None

    def manufacturer(self, mid: bytes) -> Manufacturer | None:
        return self.mfrs.get(mid)

    def device(self, did: bytes) -> DeviceEntry | None:
        return self.devices.get(did)

    def serial_owner(self, serial: str) -> bytes | None:
        return self.serials.get(serial)

    def _sorted_keys(self) -> list[bytes]:
        if self._keys is None:
            self._keys = sorted([b"\x00" + i for i in self.mfrs]
                                + [b"\x01" + i for i in self.devices])
        return self._keys

    def _leaf(self, key: bytes) -> bytes:
        i = key[1:]
        if key[0] == MFR_TAG:
            return mfr_leaf(i, self.mfrs[i])
        return device_leaf(i, self.devices[i])

    def _hash(self, key: bytes) -> bytes:
        h = self._hashes.get(key)
        if h is None:
            h = self._hashes[key] = merkle.leaf_hash(self._leaf(key))
        return h

    def leaf_hashes(self, changes: Mapping[bytes, bytes] | None = None) -> list[bytes]:
        """Leaf hashes sorted by key, `changes` (key -> leaf bytes) applied."""
        keys = self._sorted_keys()
        changes = changes or {}
        new = [k for k in changes if not self._known(k)]
        if new:
            keys = sorted([*keys, *new])
        return [merkle.leaf_hash(changes[k]) if k in changes else self._hash(k) for k in keys]

    def _known(self, key: bytes) -> bool:
        return key[1:] in (self.mfrs if key[0] == MFR_TAG else self.devices)

    def root(self) -> bytes:
        return merkle.root_of(merkle.levels(self.leaf_hashes()))

    def leaves(self) -> Iterator[tuple[bytes, bytes]]:
        """(key, leaf bytes) sorted by key."""
        for k in self._sorted_keys():
            yield k, self._leaf(k)

    def apply(self, ov: Overlay) -> None:
        """Fold a committed block's overlay into the state."""
        for i, m in ov.mfrs.items():
            self._put(b"\x00" + i, self.mfrs, i, m)
        for i, d in ov.devices.items():
            self._put(b"\x01" + i, self.devices, i, d)
            self.serials[d.serial] = i

    def _put(self, key: bytes, table: dict[bytes, Any], i: bytes, v: Any) -> None:
        if i not in table and self._keys is not None:
            bisect.insort(self._keys, key)
        table[i] = v
        self._hashes.pop(key, None)


class Overlay:
    """Copy-on-write view over a RegistryState; its dicts are a block's diff."""

    __slots__ = ("base", "mfrs", "devices", "serials")

    def __init__(self, base: RegistryState) -> None:
        self.base = base
        self.mfrs: dict[bytes, Manufacturer] = {}
        self.devices: dict[bytes, DeviceEntry] = {}
        self.serials: dict[str, bytes] = {}

    def manufacturer(self, mid: bytes) -> Manufacturer | None:
        m = self.mfrs.get(mid)
        return m if m is not None else self.base.mfrs.get(mid)

    def device(self, did: bytes) -> DeviceEntry | None:
        d = self.devices.get(did)
        return d if d is not None else self.base.devices.get(did)

    def serial_owner(self, serial: str) -> bytes | None:
        i = self.serials.get(serial)
        return i if i is not None else self.base.serials.get(serial)

    def changes(self) -> dict[bytes, bytes]:
        out = {b"\x00" + i: mfr_leaf(i, m) for i, m in self.mfrs.items()}
        out.update({b"\x01" + i: device_leaf(i, d) for i, d in self.devices.items()})
        return out

    def root(self) -> bytes:
        return merkle.root_of(merkle.levels(self.base.leaf_hashes(self.changes())))


# ---- validation ----------------------------------------------------------------


def _int_in(v: object, lo: int, hi: int) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi


def valid_text(v: object) -> bool:
    return (isinstance(v, str) and 1 <= len(v) <= TEXT_MAX and v.isprintable()
            and v.strip() == v)


# the public registry chain's tx types (the domain chain's are in gateway/ledger/txtypes.py)
REGISTRY_TYPES = (txm.TYPE_MFR_REGISTER, txm.TYPE_DEVICE_RECORD)


def check_body(t: txm.Tx) -> None:
    """Body schema per type; raises TxError (reason bad-tx)."""
    b = t.body
    if t.type == txm.TYPE_MFR_REGISTER:
        if len(b) != 2 or 1 not in b or 2 not in b:
            raise errors.TxError("bad-body")
        if not valid_public_key(b[1]):
            raise errors.TxError("bad-pubkey")
        if txm.device_id(b[1]) != t.sender:
            raise errors.TxError("sender-mismatch")
        if not valid_text(b[2]):
            raise errors.TxError("bad-name")
    elif t.type == txm.TYPE_DEVICE_RECORD:
        if len(b) != 5 or any(k not in b for k in (1, 2, 3, 4, 5)):
            raise errors.TxError("bad-body")
        if not valid_public_key(b[1]):
            raise errors.TxError("bad-pubkey")
        if not valid_text(b[2]):
            raise errors.TxError("bad-model")
        if not valid_text(b[3]):
            raise errors.TxError("bad-serial")
        if not _int_in(b[4], 0, TIME_MAX):
            raise errors.TxError("bad-manufactured")
        if not _int_in(b[5], b[4], TIME_MAX):
            raise errors.TxError("bad-warranty")
    else:
        raise errors.TxError("bad-type")
    if t.fee != 0:
        raise errors.TxError(FEE_NOT_ZERO)


def check_stateless(message: bytes | bytearray | memoryview) -> txm.Tx:
    """Size, envelope, domain, body schema and fee (the domain chain's
    check_stateless with this chain's body schema). Returns the parsed, not
    yet signature-checked Tx."""
    return validate.check_stateless(message, DOMAIN, check_body)


def precheck(view: View, t: txm.Tx, pending_seq: int | None = None) -> Manufacturer | None:
    """Sender and seq rules (no signature); returns the sender's committed
    (or pending) manufacturer record. Raises RuleError."""
    m = view.manufacturer(t.sender)
    floor = m.last_seq if m is not None else 0
    if pending_seq is not None and pending_seq > floor:
        floor = pending_seq
    if t.type == txm.TYPE_MFR_REGISTER:
        if m is not None or pending_seq is not None:
            if t.seq <= floor:
                raise RuleError(errors.REPLAY)
            raise RuleError(errors.ALREADY_REGISTERED, "manufacturer")
    else:
        if m is None:
            raise RuleError(errors.UNKNOWN_DEVICE, NOT_MANUFACTURER)
        if t.seq <= floor:
            raise RuleError(errors.REPLAY)
    return m


def check_stateful(t: txm.Tx, view: View, pending_seq: int | None = None) -> None:
    """Registered manufacturer, signature, then precheck(). Raises TLError."""
    if t.type == txm.TYPE_MFR_REGISTER:
        key = t.body[1]
    else:
        m = view.manufacturer(t.sender)
        if m is None:
            raise RuleError(errors.UNKNOWN_DEVICE, NOT_MANUFACTURER)
        key = m.pubkey
    t.verify(key)
    precheck(view, t, pending_seq)


def apply(view: Overlay, t: txm.Tx, height: int, idx: int) -> RegistryOutcome:
    """Execute a signature-checked tx as tx `idx` of block `height`.
    Raises RuleError (nothing written) if it is not includable."""
    m = precheck(view, t)
    b = t.body
    if t.type == txm.TYPE_MFR_REGISTER:
        view.mfrs[t.sender] = Manufacturer(b[1], b[2], t.seq, height, t.id)
        return RegistryOutcome(messages.STATUS_OK, "", [])
    assert m is not None
    view.mfrs[t.sender] = replace(m, last_seq=t.seq)
    did = txm.device_id(b[1])
    conflict_id, kind = did, CONFLICT_KEY
    if view.device(did) is None:
        owner = view.serial_owner(b[3])
        if owner is None:
            d = DeviceEntry(b[1], t.sender, b[2], b[3], b[4], b[5], height, t.id)
            view.devices[did] = d
            view.serials[d.serial] = did
            return RegistryOutcome(messages.STATUS_OK, "", [])
        conflict_id, kind = owner, CONFLICT_SERIAL
    attempt = Attempt(t.id, height, idx, t.sender, m.name, did, b[1], b[2], b[3], conflict_id,
                      kind)
    return RegistryOutcome(messages.STATUS_FAILED, errors.ALREADY_REGISTERED,
                   [["conflict", conflict_id, kind]], attempt)


# ---- blocks --------------------------------------------------------------------


@dataclass
class Executed:
    """Transactions run on an overlay: what a block holds (or, when
    replaying, what it must hold)."""

    txs: list[txm.Tx]
    receipts: list[Receipt]
    attempts: list[Attempt]
    overlay: Overlay
    dropped: list[tuple[bytes, errors.TLError]] = field(default_factory=list)

    @cached_property
    def levels(self) -> list[list[bytes]]:
        return receipts_levels([r.leaf for r in self.receipts])

    @property
    def tx_root(self) -> bytes:
        return merkle.root([t.message for t in self.txs])

    @property
    def receipts_root(self) -> bytes:
        return merkle.root_of(self.levels)


def execute(messages_: Sequence[bytes], state: RegistryState, height: int) -> Executed:
    """Fully validate (signatures included) and apply messages in order on an
    overlay over `state` (unchanged). Not includable ones go to `dropped`
    as (tx id, error)."""
    ov = Overlay(state)
    ex = Executed([], [], [], ov)
    for msg in messages_:
        try:
            t = check_stateless(msg)
            check_stateful(t, ov)
            out = apply(ov, t, height, len(ex.txs))
        except errors.TLError as e:
            ex.dropped.append((txm.tx_id(bytes(msg)), e))
            continue
        tid = t.id
        ex.txs.append(t)
        ex.receipts.append(Receipt(tid, t.seq, out.status, out.reason, out.events,
                                   messages.receipt_leaf(tid, out.status, out.reason,
                                                         out.events)))
        if out.attempt is not None:
            ex.attempts.append(out.attempt)
    return ex


def header_fields(*, height: int, prev_hash: bytes, time: int, tx_root: bytes,
                  receipts_root: bytes, state_root: bytes, proposer: bytes, target: int,
                  nonce: int = 0) -> dict[str, Any]:
    return {"version": header.VERSION, "domain": DOMAIN, "height": height,
            "prev_hash": prev_hash, "time": time, "tx_root": tx_root,
            "receipts_root": receipts_root, "state_root": state_root, "proposer": proposer,
            "target": target, "nonce": nonce}


def genesis_fields(time: int, target: int) -> dict[str, Any]:
    return header_fields(height=0, prev_hash=ZERO_HASH, time=time, tx_root=merkle.EMPTY_ROOT,
                         receipts_root=merkle.EMPTY_ROOT, state_root=merkle.EMPTY_ROOT,
                         proposer=ANONYMOUS_MINER, target=target)


def decode_header(header_bytes: bytes) -> dict[str, Any]:
    """Registry header fields from CBOR bytes, schema-checked (ProofError);
    the rule is shared/regproof's, which light nodes run."""
    return regproof.decode_header(header_bytes)


# ---- light-node proofs ---------------------------------------------------------


@dataclass(frozen=True)
class RecordProof:
    """A device's state leaf, its audit path and the header it is under."""

    header_bytes: bytes
    leaf: bytes
    index: int
    size: int
    path: list[bytes]


def check_record_proof(p: RecordProof, device_id: bytes | None = None
                       ) -> tuple[dict[str, Any], bytes, DeviceEntry]:
    """Check a RecordProof without the chain: the header's work meets its own
    target and the leaf is in its state_root. Returns (header fields, device
    id, entry); raises ProofError. Whether the header is on the heaviest
    chain is for the header chain to say: a light lookup checks it from
    genesis or a checkpoint (shared/regproof.check_headers, used by
    gateway/registry/client.py)."""
    h = decode_header(p.header_bytes)
    bh = pw.header_hash(p.header_bytes)
    if not pw.meets(bh, h["target"]) and h["height"] != 0:
        raise errors.ProofError("bad-pow")
    tip = regproof.Tip(h["height"], bh, h["target"], h["state_root"], 0, [h["time"]])
    v = regproof.check_record(tip, p.leaf, p.index, p.size, p.path, device_id)
    return h, v[1], DeviceEntry(*v[2:])


@dataclass
class RegistryBlock(HeaderFields):
    """A mined (or genesis) block: header and its executed transactions."""

    fields: dict[str, Any]
    header_bytes: bytes
    hash: bytes
    ex: Executed

    def proof(self, i: int) -> list[bytes]:
        """Audit path of receipt i in the receipts tree."""
        return merkle.proof(self.ex.levels, i)


def genesis_block(time: int, target: int) -> RegistryBlock:
    fields = genesis_fields(time, target)
    hb = cbor.dumps(fields)
    return RegistryBlock(fields, hb, pw.header_hash(hb), Executed([], [], [], Overlay(RegistryState())))
