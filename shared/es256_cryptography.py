"""ES256 with the `cryptography` package (OpenSSL): the gateway's fast path,
probed by shared/cose.py at import. Raises ImportError where the package is
missing (MicroPython, boards), which selects shared/p256.py.

Signing always gives s in its low half (s <= n/2), the one form the wire
takes (shared/cose.py check1): a high-s copy of a signature verifies too,
under another message id, and OpenSSL returns s > n/2 for about half of its
signatures.
- `sign` (None where OpenSSL lacks RFC 6979): a 32-byte private scalar,
  deterministic nonces, the same r as shared/p256.py; ~20x faster than
  shared/p256.py on CPython, which counts for the gateway's sealed rejections
  (one per refusal). shared/cose.py sign1 uses it.
- `sign_with_key`: a `cryptography` private key object (the benches' load
  generators, tests).
- `low_s`, `is_low_s`: the low-s form of any r||s, and the test for it."""
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551  # P-256 group order
HALF_N = N // 2
_KEYS = {}
_PRIVATE = {}
_ECDSA = ec.ECDSA(hashes.SHA256())
_MAX_KEYS = 65536


def is_low_s(signature):
    """True iff the 64-byte r||s has s <= n/2 (the one form the wire takes)."""
    return int.from_bytes(signature[32:64], "big") <= HALF_N


def low_s(signature):
    """The low-s form of a 64-byte r||s: s replaced by n - s if s > n/2 (the
    same signature for ECDSA, the one spelling for the wire)."""
    s = int.from_bytes(signature[32:64], "big")
    if not HALF_N < s < N:  # low already, or no signature at all
        return bytes(signature)
    return bytes(signature[:32]) + (N - s).to_bytes(32, "big")


def sign_with_key(private_key, message, algorithm=_ECDSA):
    """r||s (64 bytes, low s) of `message` by a `cryptography` P-256 private
    key; `algorithm` an ec.ECDSA over SHA-256 (e.g. deterministic_signing)."""
    r, s = decode_dss_signature(private_key.sign(message, algorithm))
    return r.to_bytes(32, "big") + min(s, N - s).to_bytes(32, "big")


def _load(public_key):
    key = _KEYS.get(public_key)
    if key is None:
        key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), bytes(public_key))
        if len(_KEYS) >= _MAX_KEYS:
            _KEYS.clear()
        _KEYS[bytes(public_key)] = key
    return key


def verify(public_key, message, signature):
    """True if `signature` (r||s, 64 bytes) signs `message` under the SEC1 key."""
    try:
        key = _load(public_key)
        r = int.from_bytes(signature[:32], "big")
        s = int.from_bytes(signature[32:], "big")
        key.verify(encode_dss_signature(r, s), message, _ECDSA)
        return True
    except (InvalidSignature, ValueError, TypeError):
        return False


def _sign(private_key, message):
    """r||s (64 bytes, low s) of `message` under the 32-byte private scalar."""
    key = _PRIVATE.get(private_key)
    if key is None:
        key = ec.derive_private_key(int.from_bytes(private_key, "big"), ec.SECP256R1())
        if len(_PRIVATE) >= 64:
            _PRIVATE.clear()
        _PRIVATE[bytes(private_key)] = key
    return sign_with_key(key, message, _DETERMINISTIC)


try:
    _DETERMINISTIC = ec.ECDSA(hashes.SHA256(), deterministic_signing=True)
    _sign(b"\x00" * 31 + b"\x01", b"probe")
    sign = _sign
except Exception:  # an OpenSSL without RFC 6979 (before 3.2): shared/p256.py signs
    sign = None
