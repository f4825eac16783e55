"""Error types with reason codes, shared by both interpreters.

Every refusal in ThingLedger is a `TLError` subclass carrying
- `reason`: the wire reason code sent back to a device in a rejection
  (one of the constants below), and
- `detail`: a finer, stable sub-code (e.g. "non-canonical") for logs and tests.
Tests compare these attributes, never message strings.
"""

# Wire reason codes (sent in rejections on tl/<domain>/dev/<id>/rx).
TOO_LARGE = "too-large"
BAD_CBOR = "bad-cbor"
BAD_COSE = "bad-cose"
BAD_SIGNATURE = "bad-signature"
BAD_TX = "bad-tx"
WRONG_DOMAIN = "wrong-domain"
UNKNOWN_DEVICE = "unknown-device"
REPLAY = "replay"
INSUFFICIENT_FUNDS = "insufficient-funds"
ALREADY_REGISTERED = "already-registered"
NOT_AUTHORIZED = "not-authorized"
BAD_PROOF = "bad-proof"
BAD_KEY = "bad-key"
# Identity lifecycle (docs/IDENTITY.md)
REVOKED = "revoked"
NOT_OWNER = "not-owner"
NOT_IN_REGISTRY = "not-in-registry"
ALREADY_OWNED = "already-owned"


class TLError(Exception):
    """Base of every ThingLedger refusal."""

    reason = "error"

    def __init__(self, detail="", reason=None):
        if reason is not None:
            self.reason = reason
        self.detail = detail
        super().__init__(self.reason + (": " + detail if detail else ""))


class DecodeError(TLError):
    """CBOR input refused. detail: truncated, trailing, non-canonical,
    indefinite, too-deep, duplicate-key, too-large, unsupported, bad-utf8, bad-type."""

    reason = BAD_CBOR


class TooLarge(DecodeError):
    """Input over the message limit, refused unread."""

    reason = TOO_LARGE


class EncodeError(TLError):
    """A value that has no canonical CBOR form here (float, too-large int, ...)."""

    reason = BAD_CBOR


class CoseError(TLError):
    """COSE_Sign1 structure malformed (wrong tag, headers, alg, sizes)."""

    reason = BAD_COSE


class SignatureError(CoseError):
    """Well-formed COSE_Sign1 whose signature does not verify."""

    reason = BAD_SIGNATURE


class TxError(TLError):
    """Transaction payload does not follow the schema."""

    reason = BAD_TX


class ProofError(TLError):
    """Merkle proof or block header does not check."""

    reason = BAD_PROOF


class KeyFormatError(TLError):
    """Malformed key material (not on the curve, wrong length)."""

    reason = BAD_KEY
