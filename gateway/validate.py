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
    other types: bad-type; missing or extra body keys: bad-body

check_stateful(tx, view, pending_seq, rules) -> None
    unknown-device      RuleError: sender unknown and the tx is not a register
    bad-signature       SignatureError: not signed by the sender's current key
                        (for a register: by the key it registers)
    then state.precheck() (RuleError): replay (seq <= max(last committed seq, pending seq)),
    already-registered, insufficient-funds (fee), not-authorized (closed
    admission), bad-tx/fee-too-low.
  This is the only place signatures are verified on the ingress path; the
  block builder trusts transactions that passed it. A `replay` may be a resend
  of a committed transaction: the service looks up store.get_receipt(tx.id)
  and answers with the stored receipt when it exists.
"""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric import ec

from gateway.state import RuleError, Rules, StateView, precheck
from shared import cbor, errors
from shared import tx as txm

MAX_MESSAGE = cbor.MAX_SIZE
PUBKEY_LEN = 33
INT64_MIN = -(1 << 63)
INT64_MAX = (1 << 63) - 1
SCALE_MIN, SCALE_MAX = -20, 20
CHANNEL_MAX = 255
_OPEN = Rules(authority_id=b"")


class DomainError(errors.TLError):
    """The transaction names another domain (chain id)."""

    reason = errors.WRONG_DOMAIN


def valid_public_key(pub: object) -> bool:
    """True for a 33-byte SEC1 compressed point on P-256."""
    if not isinstance(pub, bytes) or len(pub) != PUBKEY_LEN or pub[0] not in (2, 3):
        return False
    try:
        ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), pub)
    except ValueError:
        return False
    return True


def _int_in(v: object, lo: int, hi: int) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi


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
        if not _int_in(b[1], INT64_MIN, INT64_MAX):
            raise errors.TxError("bad-value")
        if not _int_in(b[2], SCALE_MIN, SCALE_MAX):
            raise errors.TxError("bad-scale")
        if 3 in b and not _int_in(b[3], 0, CHANNEL_MAX):
            raise errors.TxError("bad-channel")
    elif t.type == txm.TYPE_TRANSFER:
        if len(b) != 2 or 1 not in b or 2 not in b:
            raise errors.TxError("bad-body")
        to = b[1]
        if not isinstance(to, bytes) or len(to) != txm.ID_LEN:
            raise errors.TxError("bad-to")
        if not _int_in(b[2], 1, txm.MAX_AMOUNT):
            raise errors.TxError("bad-amount")
    else:
        raise errors.TxError("bad-type")


def check_stateless(message: bytes | bytearray | memoryview, domain: str) -> txm.Tx:
    """Size, canonical CBOR, COSE structure, payload and body schema, domain.
    Returns the parsed (not yet signature-checked) Tx."""
    if len(message) > MAX_MESSAGE:
        raise errors.TooLarge("too-large")
    t = txm.decode(bytes(message))
    if t.domain != domain:
        raise DomainError("wrong-domain")
    check_body(t)
    return t


def check_stateful(t: txm.Tx, view: StateView, pending_seq: int | None = None,
                   rules: Rules | None = None) -> None:
    """Known sender (or self-registration), signature, then state.precheck().
    `view` is committed state (plus pending registrations, see
    mempool.Mempool.view); `pending_seq` the sender's highest seq in the
    mempool. Raises TLError subclasses with reason codes."""
    rules = rules or _OPEN
    if t.type == txm.TYPE_REGISTER:
        key = t.body[1]
    else:
        rec = view.get(t.sender)
        if rec is None:
            raise RuleError(errors.UNKNOWN_DEVICE)
        key = rec.pubkey
    t.verify(key)
    precheck(view, t, rules, pending_seq)
