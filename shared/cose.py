"""COSE_Sign1 (RFC 9052, CBOR tag 18) with ES256 (ECDSA P-256 / SHA-256).

Message layout (see docs/PROTOCOL.md):
    18([protected: bstr .cbor {1: -7, 4: kid}, unprotected: {}, payload: bstr,
        signature: bstr(64) r||s])
The kid (device id) sits in the *protected* header, so it is covered by the
signature and names the sender; any COSE library verifies these messages.

Backends, probed at import: on CPython with the `cryptography` package,
verification and signing use it (shared/es256_cryptography.py: fast,
constant-time; signatures with RFC 6979 nonces); otherwise (MicroPython,
boards) shared/p256.py. RFC 6979 deterministic nonces on every side.

Low s: a signature is accepted only with s <= n/2 (check1, before any curve
arithmetic, whatever the backend); (r, n - s) would verify too and give the
same message another id. Both signers produce low s.
"""
import gc
from hashlib import sha256

from shared import cbor, errors

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


TAG_SIGN1 = 18
_ALG_ES256 = const(-7)
_HDR_ALG = const(1)
_HDR_KID = const(4)
_MAX_KID = const(32)

try:  # CPython gateway: fast verification and signing (shared/es256_cryptography.py)
    # probed by the package first: on a board (or a test run beside the
    # sources) the wrapper would otherwise be compiled from source in the
    # small heap just to fail, leaving it fragmented
    import cryptography  # noqa: F401

    from shared.es256_cryptography import sign as _sign
    from shared.es256_cryptography import verify as _verify

    BACKEND = "cryptography"
except ImportError:  # MicroPython, boards: shared/p256.py
    _verify = _sign = None
    BACKEND = "p256"


class Sign1:
    """A parsed (not yet verified) COSE_Sign1."""

    __slots__ = ("protected", "kid", "payload", "signature")

    def __init__(self, protected, kid, payload, signature):
        self.protected = protected
        self.kid = kid
        self.payload = payload
        self.signature = signature

    def to_be_signed(self):
        return sig_structure(self.protected, self.payload)


def sig_structure(protected, payload):
    """The bytes ES256 signs: Sig_structure of RFC 9052 §4.4, no external aad."""
    return cbor.dumps(["Signature1", protected, b"", payload])


def sig_digest(protected, payload):
    """SHA-256 of sig_structure(protected, payload), hashed piecewise: a board
    never holds a second copy of the payload (tests check it equals hashing
    sig_structure)."""
    h = sha256(b"\x84\x6aSignature1")  # array(4), text(10) "Signature1"
    h.update(cbor.bstr_head(len(protected)))
    h.update(protected)
    h.update(b"\x40")
    h.update(cbor.bstr_head(len(payload)))
    h.update(payload)
    return h.digest()


def protected_header(kid):
    return cbor.dumps({_HDR_ALG: _ALG_ES256, _HDR_KID: kid})


def sign1(private_key, payload, kid):
    """COSE_Sign1 bytes of `payload` signed with `private_key`, naming `kid`."""
    prot = protected_header(kid)
    if _sign is not None:
        sig = _sign(private_key, sig_structure(prot, payload))
    else:
        from shared import p256

        sig = p256.sign_digest(private_key, sig_digest(prot, payload))
    return cbor.dumps(cbor.Tag(TAG_SIGN1, [prot, {}, payload, sig]))


def parse1(message, copy=True):
    """Check the structure of a COSE_Sign1 and return a Sign1 (unverified).
    copy=False: its protected, payload and signature are memoryview slices of
    `message` (see verify1). Raises errors.DecodeError/TooLarge for bad CBOR,
    errors.CoseError otherwise."""
    obj = cbor.loads(message, copy=copy)
    if not isinstance(obj, cbor.Tag) or obj.tag != TAG_SIGN1:
        raise errors.CoseError("not-sign1")
    v = obj.value
    if not isinstance(v, list) or len(v) != 4:
        raise errors.CoseError("bad-structure")
    prot, unprot, payload, sig = v
    bstr = (bytes, memoryview)  # memoryview: only what loads(copy=False) returns
    if not isinstance(prot, bstr) or not isinstance(unprot, dict) or unprot:
        raise errors.CoseError("bad-headers")
    if not isinstance(payload, bstr):
        raise errors.CoseError("bad-payload")
    if not isinstance(sig, bstr) or len(sig) != 64:
        raise errors.CoseError("bad-signature-size")
    hdr = cbor.loads(prot)
    if not isinstance(hdr, dict) or len(hdr) != 2:
        raise errors.CoseError("bad-headers")
    alg = hdr.get(_HDR_ALG)
    if isinstance(alg, bool) or alg != _ALG_ES256:
        raise errors.CoseError("bad-alg")
    kid = hdr.get(_HDR_KID)
    if not isinstance(kid, bytes) or not 0 < len(kid) <= _MAX_KID:
        raise errors.CoseError("bad-kid")
    return Sign1(prot, kid, payload, sig)


# True only while gateway/db/verify.py replays blocks a chain stored before it
# took the low-s rule (meta `low_s_from`): those signatures are history, valid
# ECDSA, and their tx ids are fixed by the blocks' tx roots. Nothing else sets it.
legacy_high_s = False


def check1(public_key, parsed):
    """Verify a parsed Sign1 against `public_key` (SEC1 bytes); raises
    SignatureError (detail "high-s" for s > n/2, refused unverified). Returns
    parsed.payload."""
    # s > n/2, n the P-256 order: 32-byte big-endian strings compare as their
    # numbers (a bytes literal costs a board half the heap of the int)
    if not legacy_high_s and bytes(parsed.signature[32:]) > (b"\x7f\xff\xff\xff\x80\x00\x00\x00\x7f\xff\xff\xff"
                                       b"\xff\xff\xff\xff\xde\x73\x7d\x56\xd3\x8b\xcf\x42"
                                       b"\x79\xdc\xe5\x61\x7e\x31\x92\xa8"):
        raise errors.SignatureError("high-s")
    if _verify is not None:
        ok = _verify(public_key, parsed.to_be_signed(), parsed.signature)
    else:  # a board: collected first, so the check's big ints fill the small holes
        from shared import p256

        d = sig_digest(parsed.protected, parsed.payload)
        gc.collect()
        ok = p256.verify_digest(public_key, d, parsed.signature)
    if not ok:
        raise errors.SignatureError("bad-signature")
    return parsed.payload


def verify1(public_key, message):
    """Payload (bytes) of `message` if it is a well-formed COSE_Sign1 signed by
    `public_key`; raises a typed error (CoseError, SignatureError, DecodeError).
    The signature is checked on views into `message`: on a board no copy of
    the payload exists until it has been verified (the heap's peak)."""
    return bytes(check1(public_key, parse1(message, False)))
