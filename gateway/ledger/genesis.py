"""Genesis: the domain's founding file (parsed and checked, written as text) and the
genesis header. Pure: reading and writing the files and the authority key, and
creating a domain, are gateway/db/genesis_files.py's.

Genesis file (TOML, like the gateway config: comments allowed, hand-editable):

    domain = "demo"              # chain id, 1-32 chars [a-z0-9-]
    authority = "02ab..."        # authority public key, SEC1 compressed, hex
    admission = "open"           # "open": devices self-register (TYPE_REGISTER
                                 #  signed by the key it registers, sender id =
                                 #  SHA-256(pubkey)[:16]); "closed": only the
                                 #  accounts below exist; "claimed": devices
                                 #  enter only by CLAIM from the owner
                                 #  (docs/IDENTITY.md), register refused
    owner = "02ef..."            # optional (required for "claimed"): the
                                 #  domain owner, a person's public key; may
                                 #  claim devices and certify full nodes
    time = 1700000000            # chain time of genesis (unix seconds)
    min_fee = 0                  # smallest fee a tx may carry (0: fee-less)

    [consensus]                  # optional (docs/CONSENSUS.md); absent in
                                 #  chains created before it: version-1 headers
    mode = "quorum"              # "authority": the authority key alone, k = 1
    validators = ["02..", ...]   # quorum: the gateways' public keys
    threshold = 2                # quorum: k, 2k > n (default n // 2 + 1)

    [accounts.<device id hex>]   # the one mint: balances that exist at genesis
    pubkey = "03cd..."           # must hash to the id
    balance = 1000

The authority account (id = SHA-256(authority)[:16]) always exists in the
genesis state (kind authority, balance 0 unless listed); fees are paid to it.
The owner, if named, is a person record (kind person, claimant; balance from
`accounts` if listed there too); it must not be the authority key.
Accounts are ownerless devices (kind device, no rights restriction). The total supply
is at most 2^63-1, so no balance can overflow SQLite's INTEGER.

The genesis block is height 0, prev_hash = 32 zero bytes, empty tx/receipts
roots, the genesis state root, proposer = authority id, signed by the
authority key. ES256 with RFC 6979 nonces is deterministic, so the genesis
header is a pure function of the file and the key.

The authority private key is stored as 64 hex characters in a file created
with mode 0600 (`write_key`); `load_authority_key` refuses a key that does
not match the genesis `authority`, and (as ssh) a key file its group or
others may read or write.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from hashlib import sha256
from typing import Any

from gateway.errors import GenesisError, RuleError
from gateway.ledger import consensus, keys
from gateway.ledger.state import (
    ADMISSION_CLAIMED,
    ADMISSIONS,
    KIND_AUTHORITY,
    SMT,
    DeviceRecord,
    Registry,
    Rules,
    State,
    person,
)
from gateway.ledger.validate import valid_public_key
from shared import cbor, header, merkle, topics
from shared import tx as txm

ZERO_HASH = bytes(32)


@dataclass(frozen=True)
class Account:
    pubkey: bytes
    balance: int


@dataclass(frozen=True)
class Genesis:
    domain: str
    authority: bytes
    time: int
    admission: str = "open"
    min_fee: int = 0
    accounts: Mapping[bytes, Account] = field(default_factory=dict)
    owner: bytes = b""  # the domain owner's public key (a person), b"" if none
    trust: bool = False  # trust levels kept on chain (docs/TRUST.md); off for older genesis files
    consensus: str = ""  # "", "authority" or "quorum" (gateway/ledger/consensus.py)
    validators: tuple[bytes, ...] = ()  # quorum: the gateways' keys
    threshold: int = 0  # quorum: k (0: the majority)

    def __post_init__(self) -> None:
        _check(self)

    @property
    def authority_id(self) -> bytes:
        return txm.device_id(self.authority)

    @property
    def owner_id(self) -> bytes:
        return txm.device_id(self.owner) if self.owner else b""

    def rules(self, registry: Registry | None = None) -> Rules:
        """Domain rules; `registry` is the node's registry lookup (claims)."""
        return Rules(authority_id=self.authority_id, admission=self.admission,
                     min_fee=self.min_fee, owner_id=self.owner_id, registry=registry,
                     trust=self.trust)

    def validator_set(self) -> consensus.ValidatorSet | None:
        """The set of height 0 (None: a chain without a consensus section)."""
        if self.consensus == consensus.AUTHORITY:
            return consensus.ValidatorSet(1, (self.authority,))
        if self.consensus == consensus.QUORUM:
            return consensus.ValidatorSet.of(self.validators, self.threshold or None)
        return None

    def state(self, commitment: str = SMT) -> State:
        """The genesis state (accounts, the authority account, the owner, and
        the validator set where the genesis has a consensus section);
        `commitment`: the chain's state commitment at height 0 (state.SMT,
        or state.SORTED for a chain begun before the tree)."""
        devices = {i: DeviceRecord(a.pubkey, 0, a.balance) for i, a in self.accounts.items()}
        aid = self.authority_id
        a = devices.get(aid)
        devices[aid] = DeviceRecord(self.authority, 0, a.balance if a else 0, KIND_AUTHORITY)
        if self.owner:
            o = devices.get(self.owner_id)
            devices[self.owner_id] = person(self.owner, claimant=True,
                                            balance=o.balance if o else 0)
        vs = self.validator_set()
        kv = {} if vs is None else {keys.VALSETS: consensus.encode_schedule([(0, vs)])}
        return State(devices, kv, commitment=commitment)

    def supply(self) -> int:
        return sum(a.balance for a in self.accounts.values())

    def header_fields(self, commitment: str = SMT) -> dict[str, Any]:
        fields = {
            "version": header.VERSION, "domain": self.domain, "height": 0,
            "prev_hash": ZERO_HASH, "time": self.time, "tx_root": merkle.EMPTY_ROOT,
            "receipts_root": merkle.EMPTY_ROOT, "state_root": self.state(commitment).root(),
            "proposer": self.authority_id,
        }
        vs = self.validator_set()
        consensus.header_sets(fields, None if vs is None else (vs, vs))
        return fields

    def digest(self) -> bytes:
        """SHA-256 of the canonical CBOR of every genesis field (stored in the
        chain database so a data dir is never opened with another genesis)."""
        accounts = [[i, a.pubkey, a.balance] for i, a in sorted(self.accounts.items())]
        fields = [self.domain, self.authority, self.time, self.admission, self.min_fee, accounts]
        if self.owner:  # appended only when set: owner-less digests are unchanged
            fields.append(self.owner)
        if self.trust:  # likewise: digests of genesis files without trust are unchanged
            fields.append("trust")
        if self.consensus:  # likewise: chains without a consensus section keep theirs
            fields.append([self.consensus, list(self.validators), self.threshold])
        return sha256(cbor.dumps(fields)).digest()


def _int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check(g: Genesis) -> None:
    if not topics.is_domain_name(g.domain):
        raise GenesisError("domain", "must be 1-32 characters of a-z, 0-9 and '-'")
    if not valid_public_key(g.authority):
        raise GenesisError("authority", "not a SEC1 compressed P-256 public key")
    if not _int(g.time) or g.time < 0:
        raise GenesisError("time", "must be an integer >= 0")
    if g.admission not in ADMISSIONS:
        raise GenesisError("admission", "must be one of " + ", ".join(ADMISSIONS))
    if g.owner:
        if not valid_public_key(g.owner):
            raise GenesisError("owner", "not a SEC1 compressed P-256 public key")
        if g.owner == g.authority:
            raise GenesisError("owner", "must be a person's key, not the authority key")
    elif g.admission == ADMISSION_CLAIMED:
        raise GenesisError("owner", "admission \"claimed\" needs an owner")
    if not _int(g.min_fee) or not 0 <= g.min_fee <= txm.MAX_AMOUNT:
        raise GenesisError("min_fee", "must be an integer >= 0")
    for i, a in g.accounts.items():
        where = "accounts." + i.hex()
        if not valid_public_key(a.pubkey):
            raise GenesisError(where + ".pubkey", "not a SEC1 compressed P-256 public key")
        if txm.device_id(a.pubkey) != i:
            raise GenesisError(where, "id is not SHA-256(pubkey)[:16]")
        if not _int(a.balance) or a.balance < 0:
            raise GenesisError(where + ".balance", "must be an integer >= 0")
    if g.supply() > txm.MAX_AMOUNT:
        raise GenesisError("accounts", "total balance over 2^63-1")
    if g.consensus not in ("", *consensus.MODES):
        raise GenesisError("consensus.mode", "must be one of " + ", ".join(consensus.MODES))
    if g.consensus != consensus.QUORUM and (g.validators or g.threshold):
        raise GenesisError("consensus.validators", "only in mode \"quorum\"")
    if g.consensus == consensus.QUORUM:
        if not _int(g.threshold):
            raise GenesisError("consensus.threshold", "must be an integer")
        try:
            g.validator_set()
        except RuleError as e:
            raise GenesisError("consensus", e.detail) from None


def _hex(values: Mapping[str, Any], key: str, where: str) -> bytes:
    v = values.get(key)
    if not isinstance(v, str):
        raise GenesisError(where, "missing or not a hex string")
    try:
        return bytes.fromhex(v)
    except ValueError:
        raise GenesisError(where, "not a hex string") from None


def from_dict(d: Mapping[str, Any]) -> Genesis:
    """Genesis from parsed TOML; GenesisError names the wrong key."""
    known = {"domain", "authority", "admission", "time", "min_fee", "accounts", "owner",
             "trust", "consensus"}
    for k in d:
        if k not in known:
            raise GenesisError(k, "unknown key")
    for k in ("domain", "authority", "time"):
        if k not in d:
            raise GenesisError(k, "missing")
    if not isinstance(d["domain"], str):
        raise GenesisError("domain", "must be a string")
    if not isinstance(d.get("admission", "open"), str):
        raise GenesisError("admission", "must be a string")
    accounts: dict[bytes, Account] = {}
    raw = d.get("accounts", {})
    if not isinstance(raw, dict):
        raise GenesisError("accounts", "must be a table")
    for id_hex, a in raw.items():
        where = "accounts." + id_hex
        try:
            i = bytes.fromhex(id_hex)
        except ValueError:
            raise GenesisError(where, "id is not hex") from None
        if len(i) != txm.ID_LEN:
            raise GenesisError(where, "id must be 16 bytes (32 hex chars)")
        if not isinstance(a, dict):
            raise GenesisError(where, "must be a table {pubkey, balance}")
        for k in a:
            if k not in ("pubkey", "balance"):
                raise GenesisError(where + "." + k, "unknown key")
        if "balance" not in a:
            raise GenesisError(where + ".balance", "missing")
        accounts[i] = Account(_hex(a, "pubkey", where + ".pubkey"), a["balance"])
    owner = _hex(d, "owner", "owner") if "owner" in d else b""
    if not isinstance(d.get("trust", False), bool):
        raise GenesisError("trust", "must be true or false")
    mode, validators, threshold = _consensus(d.get("consensus"))
    return Genesis(domain=d["domain"], authority=_hex(d, "authority", "authority"),
                   time=d["time"], admission=d.get("admission", "open"),
                   min_fee=d.get("min_fee", 0), accounts=accounts, owner=owner,
                   trust=d.get("trust", False), consensus=mode, validators=validators,
                   threshold=threshold)


def _consensus(c: Any) -> tuple[str, tuple[bytes, ...], int]:
    if c is None:
        return "", (), 0
    if not isinstance(c, dict):
        raise GenesisError("consensus", "must be a table {mode, validators, threshold}")
    for k in c:
        if k not in ("mode", "validators", "threshold"):
            raise GenesisError("consensus." + k, "unknown key")
    mode = c.get("mode")
    if not isinstance(mode, str):
        raise GenesisError("consensus.mode", "missing or not a string")
    vals = c.get("validators", [])
    if not isinstance(vals, list) or not all(isinstance(v, str) for v in vals):
        raise GenesisError("consensus.validators", "must be a list of hex strings")
    pubs = []
    for i, v in enumerate(vals):
        try:
            pubs.append(bytes.fromhex(v))
        except ValueError:
            raise GenesisError("consensus.validators[%d]" % i, "not a hex string") from None
    return mode, tuple(pubs), c.get("threshold", 0)


def dumps(g: Genesis) -> str:
    """TOML text of a genesis (what `load` reads back)."""
    lines = [
        "# ThingLedger genesis: the founding file of domain " + json.dumps(g.domain),
        "domain = " + json.dumps(g.domain),
        "authority = " + json.dumps(g.authority.hex()),
        "admission = " + json.dumps(g.admission),
        "time = %d" % g.time,
        "min_fee = %d" % g.min_fee,
    ]
    if g.owner:
        lines.append("owner = " + json.dumps(g.owner.hex()))
    if g.trust:
        lines.append("trust = true")
    if g.consensus:
        lines += ["", "[consensus]", "mode = " + json.dumps(g.consensus)]
        if g.consensus == consensus.QUORUM:
            lines.append("validators = [%s]" % ", ".join(json.dumps(v.hex())
                                                         for v in g.validators))
            if g.threshold:
                lines.append("threshold = %d" % g.threshold)
    for i, a in sorted(g.accounts.items()):
        lines += ["", "[accounts.%s]" % i.hex(), "pubkey = " + json.dumps(a.pubkey.hex()),
                  "balance = %d" % a.balance]
    return "\n".join(lines) + "\n"


def genesis_header(g: Genesis, authority_priv: bytes) -> tuple[dict[str, Any], bytes, bytes]:
    """(fields, header_bytes, signed_header) of block 0; deterministic."""
    fields = g.header_fields()
    return fields, header.encode(fields), header.sign(authority_priv, g.authority_id, fields)
