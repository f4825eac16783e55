"""Ledger state and the pure state-transition function.

State = principals keyed by 16-byte id -> DeviceRecord (a device, a person, a
node, or the domain authority): current public key, last_seq, balance, and
the identity fields (kind, status, owner, rights on it, node role).
`apply()` executes one (already signature-checked) transaction on a
copy-on-write `StateOverlay`; the overlay's `changed` dict is the block's
state diff, which the store writes and `State.apply_diff()` folds into the
committed state once the block is on disk.

Value rules:
- register: adds the sender with the body's pubkey, last_seq = tx seq,
  balance 0. Only devices listed in genesis start with a balance (the one mint).
  Proof of possession: the sender id is SHA-256(pubkey)[:16] and the message is
  signed by that key (checked by gateway/ledger/validate.py). Admission "closed"
  and "claimed" refuse every register with not-authorized.
- reading: updates last_seq only (and pays the fee).
- transfer {1: to, 2: amount}: moves `amount` from sender to `to`. If the
  sender cannot cover it, or `to` is unknown, the tx is still included with
  status failed (reason insufficient-funds / unknown-device): its seq is
  consumed and its fee charged, like Ethereum, so a resend of the same signed
  tx stays idempotent and the failure is on the chain for the device to see.
- fee: every tx pays `fee` (>= Rules.min_fee, 0 by default: fee-less domains
  are allowed) from the sender to the authority account (the id of the
  authority key, always present in the state). A tx whose sender cannot pay
  its fee is *not* includable (refused with insufficient-funds, seq not
  consumed).
- Conservation: the sum of all balances is fixed at genesis; fees and
  transfers only move value.

Identity rules (docs/IDENTITY.md §2, §4; statement formats in
shared/statements.py). The sender, seq and fee rules are this module's; the
per-type checks and effects are gateway/identity/rules.py's, run through the
tx-type registry (gateway/ledger/txtypes.py). Every check below is an
includability check: a refused tx changes nothing (RuleError with the reason
in parentheses).
- Every sender must be known (unknown-device) and active: a revoked or
  decommissioned device's txs are refused (revoked, detail = its status).
- An *owned* device (one that was claimed) needs the `submit` right on
  itself for every tx except ROTATE_KEY (not-authorized, no-submit-right).
  Ownerless principals (genesis accounts, devices self-registered under
  admission "open", people, nodes, the authority) are not restricted.
- CLAIM (4) {1: device pubkey, 2: statement}: admission not "closed"
  (not-authorized); the sender is a claimant person (not-authorized,
  not-claimant): the genesis owner, or anyone who became the owner of a
  device by OWNER_TRANSFER; the device id is new (already-owned if owned,
  revoked if decommissioned, already-registered if known otherwise); the
  statement {1:"claim", 2: domain, 3: sender} verifies under the device key
  (bad-signature, statement / bad-tx, statement-mismatch); the registry
  knows the key (not-in-registry; no registry configured: not-in-registry,
  no-registry). Creates the device: owner = sender, status active,
  last_seq 0, balance 0, rights {device: submit}.
- OWNER_TRANSFER (5) {1: device, 2: new owner pubkey}: by the device's owner
  (unknown-device / not-owner / revoked if decommissioned); the new owner is
  another person (bad-tx same-owner; not-authorized new-owner-not-a-person).
  The new owner becomes a claimant person (created if unknown). The
  device's rights are reset to those of a fresh claim: the previous owner
  loses everything and every grant made on the device is dropped.
- GRANT (6) {1: principal, 2: right, 3: device, 4?: principal pubkey} /
  REVOKE_RIGHT (7) {1, 2, 3}: by the device's owner; rights submit, read,
  buy. The principal must be known, or introduced by key 4 (a new person);
  the owner always holds every right (bad-tx principal-is-owner). Granting
  a held right or revoking a missing one is accepted and changes nothing.
- ROTATE_KEY (8) {1: new pubkey, 2: approval}: sent by an owned device,
  signed by its current key; approval {1:"rotate", 2: device, 3: new key}
  signed by the current owner (bad-signature owner-approval / bad-tx
  approval-mismatch). Only the new key verifies afterwards; seq continues.
- RETIRE (9) {1: device, 2: "revoke" | "decommission"}: by the owner; sets
  the status. A decommissioned device is gone for good (later identity txs
  on it: revoked).
- RECOVER (10) {1: device, 2: new pubkey, 3: statement by the new key
  {1:"recover", 2: domain, 3: device}}: by the owner; new key, status
  active, last_seq 0 (a re-provisioned board starts its seqs again; old
  messages cannot verify under the new key).
- A rotated or recovered key can never be the device's birth key
  (bad-tx reused-key) and must differ from the current one (bad-tx
  same-key): see "signatures at execution" below.
- NODE_JOIN (11) {1: label, 2: hardware, 3?: certificate, 4?: pubkey}: the
  label must be roles.label_of(hardware) (checked statelessly); a full node
  needs the genesis owner's certificate {1:"full-node", 2: domain, 3: node}
  (not-authorized no-owner; bad-signature certificate / bad-tx
  certificate-mismatch). The sender is a known principal, or (full nodes
  only) introduces itself with key 4 (a new principal of kind node). Sets
  the node label; joining again updates it (an assignment survives only if
  the label stays light).
- NODE_ASSIGN (12) {1: light, 2: full}: sent by an active coordination node
  (not-authorized not-coordination); light/full must have joined with those
  labels (unknown-device light-node / full-node) and be active (revoked).
  Reassigning is allowed at any time: the coordination node watches the
  full nodes' MQTT status and decides; the chain only records it.

Signatures at execution: blocks trust ingress (gateway/ledger/validate.py) for the
sender's signature, except when the sender's current key is not its birth
key (a rotated or recovered device): then apply() verifies again, so a tx
admitted under a key that was replaced before its block is dropped
(bad-signature). Statements are verified in precheck, so again at execution.

Not-includable transactions make `precheck()` / `apply()` raise `RuleError`
before anything is written.

Events in receipts (canonical CBOR arrays): ["fee", amount] when fee > 0,
["transfer", to_id, amount] for a successful transfer, and ["claim", device,
owner], ["owner", device, new owner], ["grant", principal, right, device],
["revoke-right", principal, right, device], ["rotate", device], ["retire",
device, mode], ["recover", device], ["node", id, label], ["assign", light,
full].

state_root: the root of the sparse Merkle tree over every principal's leaf
(see `leaf`) and every stored value's leaf (`kv_leaf`), keyed by
SHA-256("A" || id) / SHA-256("K" || key) (gateway/ledger/commitment.py,
hashes and proofs in shared/stateproof.py; empty state: 32 zero bytes). The
tree lives in `State.tree`, node by node: a block's root re-hashes only the
paths of the entries it changed (O(changed x log n)), `root_with` remembers
the node diff it computed and `apply_diff` folds that same diff in, so a
block's tree work is done once. `State(..., commitment=SORTED)` is the
commitment of chains begun before the tree (RFC 6962 Merkle root over the
leaves sorted by id, then the stored values sorted by key: `state_root`),
kept to verify their old blocks (docs/PROTOCOL.md, "State commitment").
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from gateway.errors import RuleError
from gateway.ledger import txtypes
from gateway.ledger.commitment import NodeDiff, SparseMerkleTree
from shared import cbor, errors, merkle, stateproof
from shared import tx as txm
from shared.messages import STATUS_FAILED, STATUS_OK

SMT = "smt-1"  # state commitment: sparse Merkle tree (commitment.py)
SORTED = "rfc6962-sorted"  # state commitment of older chains: sorted leaves (state_root)
COMMITMENTS = (SMT, SORTED)

ADMISSION_OPEN = "open"
ADMISSION_CLOSED = "closed"
ADMISSION_CLAIMED = "claimed"
ADMISSIONS = (ADMISSION_OPEN, ADMISSION_CLOSED, ADMISSION_CLAIMED)
FEE_TOO_LOW = "fee-too-low"

KIND_DEVICE = "device"
KIND_PERSON = "person"
KIND_NODE = "node"
KIND_AUTHORITY = "authority"
KIND_CONTRACT = "contract"  # a contract's or the market escrow's account (no key)
KINDS = (KIND_AUTHORITY, KIND_CONTRACT, KIND_DEVICE, KIND_NODE, KIND_PERSON)

ACTIVE = "active"
REVOKED = "revoked"
DECOMMISSIONED = "decommissioned"
STATUSES = (ACTIVE, DECOMMISSIONED, REVOKED)

RIGHT_SUBMIT = "submit"
RIGHT_READ = "read"
RIGHT_BUY = "buy"
RIGHTS = (RIGHT_BUY, RIGHT_READ, RIGHT_SUBMIT)

RETIRE_REVOKE = "revoke"
RETIRE_DECOMMISSION = "decommission"
RETIRE_MODES = (RETIRE_DECOMMISSION, RETIRE_REVOKE)

# rights held on one device: ((principal id, (right, ...)), ...) sorted, no empties
Acl = tuple[tuple[bytes, tuple[str, ...]], ...]
# registry lookup: device pubkey -> its registry record, or None
Registry = Callable[[bytes], object]


def acl_get(acl: Acl, principal: bytes) -> tuple[str, ...]:
    for p, r in acl:
        if p == principal:
            return r
    return ()


def acl_set(acl: Acl, principal: bytes, rights: Any) -> Acl:
    """`acl` with `principal`'s rights replaced by `rights` (removed if empty)."""
    d = dict(acl)
    rs = tuple(sorted(set(rights)))
    if rs:
        d[principal] = rs
    else:
        d.pop(principal, None)
    return tuple(sorted(d.items()))


@dataclass(frozen=True, slots=True)
class DeviceRecord:
    """One principal. The first three fields are the value ledger; the rest
    is identity (defaults = a plain ownerless device)."""

    pubkey: bytes  # current key (the id is SHA-256 of the birth key)
    last_seq: int
    balance: int
    kind: str = KIND_DEVICE
    status: str = ACTIVE
    owner: bytes = b""  # owning person's id (devices claimed into the domain)
    acl: Acl = ()  # rights other principals hold on this device (owner: implicit, all)
    claimant: bool = False  # a person who may CLAIM devices
    node: str = ""  # node label after NODE_JOIN (roles.LABELS), "" if none
    assigned: bytes = b""  # light nodes: the full node assigned by NODE_ASSIGN

    def rights_of(self, principal: bytes) -> tuple[str, ...]:
        return acl_get(self.acl, principal)

    def may_submit(self, sender: bytes) -> bool:
        """An owned device needs `submit` on itself; ownerless ones are free."""
        return not self.owner or RIGHT_SUBMIT in acl_get(self.acl, sender)

    def with_seq_balance(self, last_seq: int, balance: int) -> DeviceRecord:
        return DeviceRecord(self.pubkey, last_seq, balance, self.kind, self.status, self.owner,
                            self.acl, self.claimant, self.node, self.assigned)


Principal = DeviceRecord


def person(pubkey: bytes, *, claimant: bool = False, balance: int = 0) -> DeviceRecord:
    return DeviceRecord(pubkey, 0, balance, KIND_PERSON, claimant=claimant)


def claimed_device(pubkey: bytes, owner: bytes) -> DeviceRecord:
    dev = txm.device_id(pubkey)
    return DeviceRecord(pubkey, 0, 0, KIND_DEVICE, ACTIVE, owner, ((dev, (RIGHT_SUBMIT,)),))


class StateView(Protocol):
    """Anything that maps an id to its record and a key to its stored value
    (State, StateOverlay, mempool.PendingView)."""

    def get(self, device_id: bytes) -> DeviceRecord | None: ...

    def kv_get(self, key: bytes) -> bytes | None: ...


@dataclass(slots=True)
class BlockInfo:
    """The block a transaction executes in: the only clock the market and the
    contracts see. `index` is the tx's position among the block's included
    txs (set by the block builder and by replay)."""

    height: int
    time: int
    index: int = 0


@dataclass(frozen=True)
class Rules:
    """Domain policy from genesis, plus the registry lookup the node uses
    for claims (None: no registry configured, every claim is refused)."""

    authority_id: bytes
    admission: str = ADMISSION_OPEN
    min_fee: int = 0
    owner_id: bytes = b""  # genesis owner (person) id, b"" if none
    trust: bool = False  # genesis `trust = true`: the trust feature keeps its figures (docs/TRUST.md)
    registry: Registry | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class Outcome:
    """Result of an included transaction (goes into its receipt)."""

    status: int
    reason: str
    events: list[Any]


def leaf(device_id: bytes, rec: DeviceRecord) -> bytes:
    """State tree leaf of one principal: cbor([id, pubkey, last_seq, balance,
    kind, status, owner, [[principal, [rights]]...], claimant 0/1, node,
    assigned])."""
    return cbor.dumps([device_id, rec.pubkey, rec.last_seq, rec.balance, rec.kind, rec.status,
                       rec.owner, [[p, list(r)] for p, r in rec.acl], int(rec.claimant),
                       rec.node, rec.assigned])


def kv_leaf(key: bytes, value: bytes) -> bytes:
    """State tree leaf of one stored value (offers, demands, contract
    deployments and storage): cbor([key, value]), a 2-element array where a
    principal's leaf has 11, so the two kinds never collide."""
    return cbor.dumps([key, value])


def state_root(devices: Mapping[bytes, DeviceRecord],
               kv: Mapping[bytes, bytes] | None = None) -> bytes:
    """Merkle root computed from scratch (reference): the principals' leaves
    sorted by id, then the stored values' leaves sorted by key. A state with
    no stored values has the root of its principals alone."""
    kv = kv or {}
    return merkle.root([leaf(i, devices[i]) for i in sorted(devices)]
                       + [kv_leaf(k, kv[k]) for k in sorted(kv)])


def tree_items(devices: Mapping[bytes, DeviceRecord],
               kv: Mapping[bytes, bytes] | None = None) -> Iterator[tuple[bytes, bytes]]:
    """(key hash, value hash) of every entry of the state tree."""
    for i, rec in devices.items():
        yield stateproof.account_key(i), stateproof.value_hash(leaf(i, rec))
    for k, v in (kv or {}).items():
        yield stateproof.kv_key(k), stateproof.value_hash(kv_leaf(k, v))


def tree_root(devices: Mapping[bytes, DeviceRecord],
              kv: Mapping[bytes, bytes] | None = None) -> bytes:
    """Sparse Merkle tree root computed from scratch (reference)."""
    return SparseMerkleTree.build(tree_items(devices, kv)).root()


def tree_changes(changes: Mapping[bytes, DeviceRecord],
                 kv_changes: Mapping[bytes, bytes | None] | None) -> dict[bytes, bytes | None]:
    """A block's diff as the tree's changes: key hash -> value hash (None: deleted)."""
    out: dict[bytes, bytes | None] = {
        stateproof.account_key(i): stateproof.value_hash(leaf(i, rec))
        for i, rec in changes.items()}
    for k, v in (kv_changes or {}).items():
        out[stateproof.kv_key(k)] = None if v is None else stateproof.value_hash(kv_leaf(k, v))
    return out


class State:
    """Committed state: principals by id, stored values by key (`kv`:
    canonical-CBOR values of the market and the contracts, keys built by
    gateway/ledger/keys.py), and its commitment: the sparse Merkle tree
    (`tree`, built on first use unless given, e.g. loaded by the store), or
    for a SORTED chain cached leaf hashes so a block's root costs one leaf
    encode per *changed* entry plus a pass over all leaf hashes."""

    __slots__ = ("devices", "kv", "commitment", "tree", "_pending", "_hashes", "_ids",
                 "_kv_hashes", "_keys")

    def __init__(self, devices: Mapping[bytes, DeviceRecord] | None = None,
                 kv: Mapping[bytes, bytes] | None = None, *, commitment: str = SMT,
                 tree: SparseMerkleTree | None = None) -> None:
        if commitment not in COMMITMENTS:
            raise ValueError("unknown state commitment %r" % commitment)
        self.devices: dict[bytes, DeviceRecord] = dict(devices or {})
        self.kv: dict[bytes, bytes] = dict(kv or {})
        self.commitment = commitment
        self.tree: SparseMerkleTree | None = tree if commitment == SMT else None
        # the last root_with: (changes, kv_changes, node diff), reused by apply_diff
        self._pending: tuple[dict, dict, NodeDiff] | None = None
        self._hashes: dict[bytes, bytes] = {}
        self._ids: list[bytes] | None = None
        self._kv_hashes: dict[bytes, bytes] = {}
        self._keys: list[bytes] | None = None

    def state_tree(self) -> SparseMerkleTree:
        """The sparse Merkle tree (built from the entries on first use)."""
        if self.commitment != SMT:
            raise ValueError("a %s state has no tree" % self.commitment)
        if self.tree is None:
            self.tree = SparseMerkleTree.build(tree_items(self.devices, self.kv))
        return self.tree

    def use_tree(self) -> None:
        """Switch to the sparse Merkle tree commitment (a SORTED chain from
        the height it changes scheme on)."""
        self.commitment = SMT
        self._hashes.clear()
        self._kv_hashes.clear()
        self.state_tree()

    def leaf_problems(self, limit: int = 1) -> list[str]:
        """Entries whose stored leaf in the tree differs from the state (a
        table changed outside the node): up to `limit` descriptions."""
        leaves = self.state_tree().leaves()
        out = []
        for kh, vh in tree_items(self.devices, self.kv):
            if leaves.pop(kh, None) != vh:
                out.append("entry %s" % kh.hex()[:16])
                if len(out) >= limit:
                    return out
        if leaves:
            out.append("%d tree entries without a state entry" % len(leaves))
        return out[:limit]

    def prove(self, device_id: bytes) -> tuple[bytes | None, list]:
        """(leaf bytes or None, proof) of a principal against root() (shared/stateproof)."""
        rec = self.devices.get(device_id)
        return (None if rec is None else leaf(device_id, rec),
                self.state_tree().prove(stateproof.account_key(device_id)))

    def kv_prove(self, key: bytes) -> tuple[bytes | None, list]:
        """(leaf bytes or None, proof) of a stored value against root()."""
        v = self.kv.get(key)
        return (None if v is None else kv_leaf(key, v),
                self.state_tree().prove(stateproof.kv_key(key)))

    def get(self, device_id: bytes) -> DeviceRecord | None:
        return self.devices.get(device_id)

    def kv_get(self, key: bytes) -> bytes | None:
        return self.kv.get(key)

    def kv_range(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        """(key, value) of the stored values whose key starts with `prefix`,
        in key order."""
        keys = self.sorted_keys()
        for i in range(bisect.bisect_left(keys, prefix), len(keys)):
            k = keys[i]
            if not k.startswith(prefix):
                break
            yield k, self.kv[k]

    def sorted_keys(self) -> list[bytes]:
        if self._keys is None:
            self._keys = sorted(self.kv)
        return self._keys

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

    def _kv_hash(self, key: bytes) -> bytes:
        h = self._kv_hashes.get(key)
        if h is None:
            h = merkle.leaf_hash(kv_leaf(key, self.kv[key]))
            self._kv_hashes[key] = h
        return h

    def root(self) -> bytes:
        if self.commitment == SMT:
            return self.state_tree().root()
        return self.root_with({})

    def root_with(self, changes: Mapping[bytes, DeviceRecord],
                  kv_changes: Mapping[bytes, bytes | None] | None = None) -> bytes:
        """State root of this state with `changes` (principals) and
        `kv_changes` (stored values, None = deleted) applied (not stored)."""
        return self.commit_with(changes, kv_changes)[0]

    def commit_with(self, changes: Mapping[bytes, DeviceRecord],
                    kv_changes: Mapping[bytes, bytes | None] | None = None
                    ) -> tuple[bytes, NodeDiff | None]:
        """(root_with, the tree's node diff: None for a SORTED state). The
        diff is remembered: apply_diff of the same changes reuses it."""
        if self.commitment == SMT:
            root, nodes = self.state_tree().update(tree_changes(changes, kv_changes))
            self._pending = (dict(changes), dict(kv_changes or {}), nodes)
            return root, nodes
        return self._sorted_root(changes, kv_changes), None

    def _sorted_root(self, changes: Mapping[bytes, DeviceRecord],
                     kv_changes: Mapping[bytes, bytes | None] | None) -> bytes:
        ids = self.sorted_ids()
        new = [i for i in changes if i not in self.devices]
        if new:
            ids = sorted([*ids, *new])
        hashes = [merkle.leaf_hash(leaf(i, changes[i])) if i in changes else self._hash(i)
                  for i in ids]
        kvc = kv_changes or {}
        keys = self.sorted_keys()
        if kvc:
            keys = sorted((set(keys) | set(kvc)) - {k for k, v in kvc.items() if v is None})
        for k in keys:
            v = kvc.get(k)
            hashes.append(merkle.leaf_hash(kv_leaf(k, v)) if v is not None else self._kv_hash(k))
        return merkle.root_of(merkle.levels(hashes))

    def apply_diff(self, diff: Mapping[bytes, DeviceRecord],
                   kv_diff: Mapping[bytes, bytes | None] | None = None) -> None:
        """Fold a committed block's diff into the state."""
        if self.tree is not None:
            p, self._pending = self._pending, None
            if p is not None and p[0] == diff and p[1] == (kv_diff or {}):
                self.tree.apply(p[2])
            else:
                self.tree.apply(self.tree.update(tree_changes(diff, kv_diff))[1])
        for i, rec in diff.items():
            if i not in self.devices and self._ids is not None:
                bisect.insort(self._ids, i)
            self.devices[i] = rec
            self._hashes.pop(i, None)
        for k, v in (kv_diff or {}).items():
            self._kv_hashes.pop(k, None)
            if v is None:
                if self.kv.pop(k, None) is not None and self._keys is not None:
                    del self._keys[bisect.bisect_left(self._keys, k)]
            else:
                if k not in self.kv and self._keys is not None:
                    bisect.insort(self._keys, k)
                self.kv[k] = v

    def copy(self) -> State:
        s = State(self.devices, self.kv, commitment=self.commitment,
                  tree=None if self.tree is None else SparseMerkleTree(dict(self.tree.nodes)))
        s._hashes = dict(self._hashes)
        s._kv_hashes = dict(self._kv_hashes)
        return s


_MISSING = DeviceRecord(b"", -1, -1)


_UNSET: Any = object()  # journal: the key had no entry in kv_changed


class StateOverlay:
    """Copy-on-write view over a State. `changed` is the principals' diff (id
    -> new record), `kv_changed` the stored values' diff (key -> value, None
    = deleted). savepoint()/rollback()/release() nest: each savepoint undoes
    a failed part of a tx (a tx body, a market step)."""

    __slots__ = ("base", "changed", "kv_changed", "nodes", "_journals")

    def __init__(self, base: State) -> None:
        self.base = base
        self.nodes: NodeDiff | None = None  # the tree's node diff of the last root()
        self.changed: dict[bytes, DeviceRecord] = {}
        self.kv_changed: dict[bytes, bytes | None] = {}
        self._journals: list[tuple[dict[bytes, DeviceRecord], dict[bytes, Any]]] = []

    def get(self, device_id: bytes) -> DeviceRecord | None:
        rec = self.changed.get(device_id)
        if rec is None:
            rec = self.base.devices.get(device_id)
        return rec

    def put(self, device_id: bytes, rec: DeviceRecord) -> None:
        if self._journals:
            j = self._journals[-1][0]
            if device_id not in j:
                j[device_id] = self.changed.get(device_id, _MISSING)
        self.changed[device_id] = rec

    def kv_get(self, key: bytes) -> bytes | None:
        if key in self.kv_changed:
            return self.kv_changed[key]
        return self.base.kv.get(key)

    def kv_put(self, key: bytes, value: bytes | None) -> None:
        """Store `value` under `key` (None deletes it)."""
        if self._journals:
            j = self._journals[-1][1]
            if key not in j:
                j[key] = self.kv_changed.get(key, _UNSET)
        if value is None and key not in self.base.kv:
            if key in self.kv_changed:
                del self.kv_changed[key]
            return
        self.kv_changed[key] = value

    def kv_range(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        """Live (key, value) whose key starts with `prefix`, in key order."""
        merged = dict(self.base.kv_range(prefix))
        for k, v in self.kv_changed.items():
            if k.startswith(prefix):
                if v is None:
                    merged.pop(k, None)
                else:
                    merged[k] = v
        for k in sorted(merged):
            yield k, merged[k]

    def savepoint(self) -> None:
        self._journals.append(({}, {}))

    def rollback(self) -> None:
        devs, kv = self._journals.pop()
        for i, old in devs.items():
            if old is _MISSING:
                del self.changed[i]
            else:
                self.changed[i] = old
        for k, oldv in kv.items():
            if oldv is _UNSET:
                self.kv_changed.pop(k, None)
            else:
                self.kv_changed[k] = oldv

    def release(self) -> None:
        devs, kv = self._journals.pop()
        if self._journals:
            pdevs, pkv = self._journals[-1]
            for i, old in devs.items():
                pdevs.setdefault(i, old)
            for k, oldv in kv.items():
                pkv.setdefault(k, oldv)

    def root(self) -> bytes:
        root, self.nodes = self.base.commit_with(self.changed, self.kv_changed)
        return root


def introduces_sender(t: txm.Tx) -> bool:
    """True for the txs that create their own sender (register, a node
    introducing itself with its key)."""
    return t.type == txm.TYPE_REGISTER or (t.type == txm.TYPE_NODE_JOIN and 4 in t.body)


def precheck(view: StateView, tx: txm.Tx, rules: Rules,
             pending_seq: int | None = None) -> DeviceRecord | None:
    """Stateful admission rules except the sender's signature (statements
    inside identity txs are verified here); returns the sender's current
    record (None when the tx creates its sender). `pending_seq` is the
    sender's highest seq still in the mempool. Raises RuleError.
    A seq at or below the floor is always `replay` (also for a register of a
    known device), so a resend of a committed tx is recognised by one reason."""
    rec = view.get(tx.sender)
    floor = rec.last_seq if rec is not None else 0
    if pending_seq is not None and pending_seq > floor:
        floor = pending_seq
    type_ = tx.type
    if type_ == txm.TYPE_REGISTER:
        if rules.admission != ADMISSION_OPEN:
            raise RuleError(errors.NOT_AUTHORIZED, "admission-" + rules.admission)
        if rec is not None or pending_seq is not None:
            if tx.seq <= floor:
                raise RuleError(errors.REPLAY)
            raise RuleError(errors.ALREADY_REGISTERED)
        balance = 0
    elif rec is None and introduces_sender(tx):  # a full node introducing itself
        if pending_seq is not None:
            if tx.seq <= floor:
                raise RuleError(errors.REPLAY)
            raise RuleError(errors.ALREADY_REGISTERED)
        balance = 0
    else:
        if rec is None:
            raise RuleError(errors.UNKNOWN_DEVICE)
        if tx.seq <= floor:
            raise RuleError(errors.REPLAY)
        if rec.status != ACTIVE:
            raise RuleError(errors.REVOKED, rec.status)
        if rec.owner and type_ != txm.TYPE_ROTATE_KEY and not rec.may_submit(tx.sender):
            raise RuleError(errors.NOT_AUTHORIZED, "no-submit-right")
        balance = rec.balance
    if tx.fee < rules.min_fee:
        raise RuleError(errors.BAD_TX, FEE_TOO_LOW)
    if tx.fee > balance:
        raise RuleError(errors.INSUFFICIENT_FUNDS, "fee")
    entry = txtypes.lookup(type_)  # identity, market, contracts: gateway/plugins.py
    if entry is not None and entry.precheck is not None:
        entry.precheck(view, tx, rules, rec if rec is not None else _new_sender(tx))
    return rec


def _new_sender(t: txm.Tx) -> DeviceRecord:
    """The record a self-introducing tx creates for its sender."""
    if t.type == txm.TYPE_REGISTER:
        return DeviceRecord(t.body[1], 0, 0)
    return DeviceRecord(t.body[4], 0, 0, KIND_NODE)


# ---- effects (after precheck, on the overlay) -----------------------------------

def _credit(view: StateOverlay, device_id: bytes, amount: int) -> None:
    r = view.get(device_id)
    if r is None:
        raise RuntimeError("credit to a missing account")
    view.put(device_id, r.with_seq_balance(r.last_seq, r.balance + amount))


NO_BLOCK = BlockInfo(0, 0)


def apply(view: StateOverlay, tx: txm.Tx, rules: Rules, block: BlockInfo = NO_BLOCK) -> Outcome:
    """`execute()`, then the registered observers of every included tx
    (txtypes.observe), which see the outcome's effects on `view`."""
    out = execute(view, tx, rules, block)
    for fn in txtypes.observers():
        fn(view, tx, rules, block)
    return out


def execute(view: StateOverlay, tx: txm.Tx, rules: Rules, block: BlockInfo = NO_BLOCK) -> Outcome:
    """Execute one transaction whose signature was already verified at
    ingress (verified again here if the sender's key is not its birth key)
    in `block` (its time and height are the market's and the contracts'
    clock). Raises RuleError (nothing written) if it is not includable;
    otherwise writes its effects to `view` and returns the receipt outcome."""
    rec = precheck(view, tx, rules)
    sender = tx.sender
    body = tx.body
    if rec is None:  # the tx creates its sender (register, node introducing itself)
        rec = _new_sender(tx)
    elif txm.device_id(rec.pubkey) != sender:
        try:
            tx.verify(rec.pubkey)
        except errors.TLError:
            raise RuleError(errors.BAD_SIGNATURE, "key-changed") from None
    view.put(sender, rec.with_seq_balance(tx.seq, rec.balance - tx.fee))
    events: list[Any] = []
    if tx.fee:
        _credit(view, rules.authority_id, tx.fee)
        events.append(["fee", tx.fee])
    entry = txtypes.lookup(tx.type)
    if entry is not None and entry.apply is not None and not entry.isolated:
        status, reason, more = entry.apply(view, tx, rules, block)  # identity effects
        events.extend(more)
        return Outcome(status, reason, events)
    if entry is not None and entry.apply is not None:
        view.savepoint()
        try:
            status, reason, more = entry.apply(view, tx, rules, block)
        except BaseException:
            view.rollback()
            raise
        if status == STATUS_OK:
            view.release()
        else:  # a failed market tx or call keeps nothing but its fee and seq
            view.rollback()
        events.extend(more)
        return Outcome(status, reason, events)
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
        view.put(sender, src.with_seq_balance(src.last_seq, src.balance - amount))
        _credit(view, to, amount)
    except BaseException:
        view.rollback()
        raise
    view.release()
    events.append(["transfer", to, amount])
    return Outcome(STATUS_OK, "", events)
