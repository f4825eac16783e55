"""Admission checks for incoming transaction messages (pure functions).

Two stages, each raising a `shared.errors.TLError` subclass whose `reason` is
the wire reason code of the rejection and whose `detail` is a finer sub-code:

check_stateless(message, domain) -> Tx        no state needed, cheap
    too-large     TooLarge: over 4 KiB, refused unread (checked first)
    bad-cbor      DecodeError: garbage, truncated, non-canonical, trailing, ...
    bad-cose      CoseError: not a COSE_Sign1 / ES256 with a protected kid
    bad-tx        TxError: payload schema (tx.decode) or body schema below
    wrong-domain  DomainError: payload domain is not this gateway's domain
  Body schema per type (unknown keys refused, detail in parentheses):
    register {1: pubkey}          33-byte SEC1 compressed point on P-256
                                   (bad-pubkey); sender == SHA-256(pubkey)[:16]
                                   (sender-mismatch)
    reading  {1: value, 2: scale, 3?: channel}   value int64 (bad-value),
                                   scale -20..20 (bad-scale), channel 0..255
                                   (bad-channel)
    transfer {1: to, 2: amount}    to 16 bytes (bad-to), 1 <= amount <= 2^63-1
                                   (bad-amount)
    claim    {1: device pubkey, 2: statement}            (bad-pubkey, bad-statement)
    owner-transfer {1: device, 2: new owner pubkey}      (bad-device, bad-pubkey)
    grant    {1: principal, 2: right, 3: device, 4?: principal pubkey}
                                   (bad-principal, bad-right, bad-device,
                                   bad-pubkey; key 4 must hash to the
                                   principal: pubkey-mismatch)
    revoke-right {1: principal, 2: right, 3: device}
    rotate-key {1: new pubkey, 2: owner approval}        (bad-pubkey, bad-statement)
    retire   {1: device, 2: "revoke" | "decommission"}   (bad-device, bad-mode)
    recover  {1: device, 2: new pubkey, 3: statement}
    node-join {1: label, 2: hardware, 3?: certificate, 4?: pubkey}
                                   label in light/full/coordination (bad-label);
                                   hardware per gateway/identity/roles.py (bad-hardware);
                                   label == roles.label_of(hardware)
                                   (label-mismatch); full needs 3
                                   (certificate-required), others must not
                                   carry 3 or 4 (bad-body); 4 hashes to the
                                   sender (sender-mismatch)
    node-assign {1: light id, 2: full id}                (bad-node)
    offer, withdraw, demand, close, contract-call, contract-admin (13-18):
                                   gateway/market/ledger/schema.py (docs/MARKET.md)
    statements/certificates: bytes of a well-formed COSE_Sign1 (bad-statement)
    other types: bad-type; missing or extra body keys: bad-body

check_stateful(tx, view, pending_seq, rules) -> the key it verified under
    unknown-device      RuleError: sender unknown and the tx does not
                        introduce it (register, node-join with key 4)
    bad-signature       SignatureError: not signed by the sender's current key
                        (for a register / introducing node-join: by the key
                        it introduces)
    then state.precheck() (RuleError): replay (seq <= max(last committed seq, pending seq)),
    revoked, already-registered, insufficient-funds (fee), not-authorized
    (admission, missing right), bad-tx/fee-too-low, and the identity rules
    of gateway/ledger/state.py (statements verified there).
  This is the only place signatures are verified on the ingress path (or
  its `checked` verdict taken: a worker process of gateway/node/verifier.py
  verified the signature under the very key this check finds); the block
  builder trusts transactions that passed it. A `replay` may be a resend
  of a committed transaction: the service looks up store.get_receipt(tx.id)
  and answers with the stored receipt when it exists.
"""

from __future__ import annotations

from collections.abc import Callable

try:  # the fast point check; without the package (an interpreter that lacks it) shared/p256
    from cryptography.hazmat.primitives.asymmetric import ec
except ImportError:
    ec = None

from gateway.errors import DomainError
from gateway.ledger import txtypes
from gateway.ledger.state import (
    RuleError,
    Rules,
    StateView,
    introduces_sender,
    precheck,
)
from shared import cbor, errors, p256
from shared import tx as txm

MAX_MESSAGE = cbor.MAX_SIZE
PUBKEY_LEN = 33
INT64_MIN = -(1 << 63)
INT64_MAX = (1 << 63) - 1
SCALE_MIN, SCALE_MAX = -20, 20
CHANNEL_MAX = 255
_OPEN = Rules(authority_id=b"")


def valid_public_key(pub: object) -> bool:
    """True for a 33-byte SEC1 compressed point on P-256."""
    if not isinstance(pub, bytes) or len(pub) != PUBKEY_LEN or pub[0] not in (2, 3):
        return False
    try:
        if ec is None:
            p256.decompress(pub)
        else:
            ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), pub)
    except (ValueError, errors.TLError):
        return False
    return True


def int_in(v: object, lo: int, hi: int) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi


def body_keys(b: dict, required: tuple[int, ...], optional: tuple[int, ...] = ()) -> None:
    for k in required:
        if k not in b:
            raise errors.TxError("bad-body")
    for k in b:
        if k not in required and k not in optional:
            raise errors.TxError("bad-body")


def need_id(v: object, detail: str) -> None:
    if not isinstance(v, bytes) or len(v) != txm.ID_LEN:
        raise errors.TxError(detail)


def need_pubkey(v: object) -> None:
    if not valid_public_key(v):
        raise errors.TxError("bad-pubkey")


def check_body(t: txm.Tx) -> None:
    """Schema of the type-specific body; raises TxError."""
    b = t.body
    if t.type == txm.TYPE_REGISTER:
        if len(b) != 1 or 1 not in b:
            raise errors.TxError("bad-body")
        if not valid_public_key(b[1]):
            raise errors.TxError("bad-pubkey")
        if txm.device_id(b[1]) != t.sender:
            raise errors.TxError("sender-mismatch")
    elif t.type == txm.TYPE_READING:
        if 1 not in b or 2 not in b or len(b) != (3 if 3 in b else 2):
            raise errors.TxError("bad-body")
        if not int_in(b[1], INT64_MIN, INT64_MAX):
            raise errors.TxError("bad-value")
        if not int_in(b[2], SCALE_MIN, SCALE_MAX):
            raise errors.TxError("bad-scale")
        if 3 in b and not int_in(b[3], 0, CHANNEL_MAX):
            raise errors.TxError("bad-channel")
    elif t.type == txm.TYPE_TRANSFER:
        if len(b) != 2 or 1 not in b or 2 not in b:
            raise errors.TxError("bad-body")
        to = b[1]
        if not isinstance(to, bytes) or len(to) != txm.ID_LEN:
            raise errors.TxError("bad-to")
        if not int_in(b[2], 1, txm.MAX_AMOUNT):
            raise errors.TxError("bad-amount")
    else:  # identity, market, contracts: their packages' schemas (gateway/plugins.py)
        entry = txtypes.lookup(t.type)
        if entry is None:
            raise errors.TxError("bad-type")
        entry.schema(t)


def check_stateless(message: bytes | bytearray | memoryview, domain: str,
                    body: Callable[[txm.Tx], None] = check_body) -> txm.Tx:
    """Size, canonical CBOR, COSE structure, payload and body schema (`body`:
    the public registry chain passes its own), domain. Returns the parsed (not
    yet signature-checked) Tx."""
    if len(message) > MAX_MESSAGE:
        raise errors.TooLarge("too-large")
    return check_decoded(txm.decode(bytes(message)), domain, body)


def check_decoded(t: txm.Tx, domain: str,
                  body: Callable[[txm.Tx], None] = check_body) -> txm.Tx:
    """check_stateless's checks after the decoding, for a tx decoded
    already (a replica's intake decodes each message for its (sender, seq))."""
    if t.domain != domain:
        raise DomainError("wrong-domain")
    body(t)
    return t


# A signature checked elsewhere (a worker process, gateway/node/verifier.py):
# (the key it was checked under, None if it verified else the error it raised)
SigCheck = tuple[bytes, errors.TLError | None]


def check_stateful(t: txm.Tx, view: StateView, pending_seq: int | None = None,
                   rules: Rules | None = None, checked: SigCheck | None = None) -> bytes:
    """Known sender (or self-registration), signature, then state.precheck().
    `view` is committed state (plus pending registrations, see
    mempool.Mempool.view); `pending_seq` the sender's highest seq in the
    mempool. `checked`: the signature's verdict under a key, taken instead
    of verifying only when that key is the one `t` must be signed by now
    (a key rotated since is checked here). Returns the key the signature
    verified under. Raises TLError subclasses with reason codes."""
    rules = rules or _OPEN
    key = signing_key(t, view)
    if checked is None or checked[0] != key:
        t.verify(key)
    elif checked[1] is not None:
        raise checked[1]
    precheck(view, t, rules, pending_seq)
    return key


def signing_key(t: txm.Tx, view: StateView) -> bytes:
    """The key `t` must be signed by: its sender's current key, or the key a
    register / introducing node-join brings. Raises RuleError(unknown-device)."""
    if t.type == txm.TYPE_REGISTER:
        return t.body[1]
    rec = view.get(t.sender)
    if rec is not None:
        return rec.pubkey
    if introduces_sender(t):
        return t.body[4]
    raise RuleError(errors.UNKNOWN_DEVICE)


# the core's own tx types (their precheck and apply are gateway/ledger/state.py's)
txtypes.register(*(txtypes.TxType(code, "ledger", check_body)
                   for code in (txm.TYPE_REGISTER, txm.TYPE_READING, txm.TYPE_TRANSFER)))
