"""Error types with reason codes, shared by both interpreters.

Every refusal in ThingLedger is a `TLError` subclass carrying
- `reason`: the wire reason code sent back to a device in a rejection
  (every code is listed in shared/reasons.py), and
- `detail`: a finer, stable sub-code (e.g. "non-canonical") for logs and tests.
Tests compare these attributes, never message strings.

Frugality: light nodes load this module, so it holds the error classes (each
with its code) and ALREADY_REGISTERED, the one code the node compares against.
The other codes are the gateway's: `errors.REPLAY` and the like still work,
served from shared/reasons.py on first use (module __getattr__), so a board
never spends heap on them.
"""

from shared import lazy

ALREADY_REGISTERED = "already-registered"


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

    reason = "bad-cbor"


class TooLarge(DecodeError):
    """Input over the message limit, refused unread."""

    reason = "too-large"


class EncodeError(TLError):
    """A value that has no canonical CBOR form here (float, too-large int, ...)."""

    reason = "bad-cbor"


class CoseError(TLError):
    """COSE_Sign1 structure malformed (wrong tag, headers, alg, sizes)."""

    reason = "bad-cose"


class SignatureError(CoseError):
    """Well-formed COSE_Sign1 whose signature does not verify."""

    reason = "bad-signature"


class TxError(TLError):
    """Transaction payload does not follow the schema."""

    reason = "bad-tx"


class ProofError(TLError):
    """Merkle proof or block header does not check."""

    reason = "bad-proof"


class KeyFormatError(TLError):
    """Malformed key material (not on the curve, wrong length)."""

    reason = "bad-key"


__getattr__ = lazy("shared.reasons", globals())
