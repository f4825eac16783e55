"""ES256 with the `cryptography` package (OpenSSL): the gateway's fast path,
probed by shared/cose.py at import. Raises ImportError where the package is
missing (MicroPython, boards), which selects shared/p256.py.

Signing (`sign`, None where OpenSSL lacks RFC 6979): deterministic nonces,
the same r as shared/p256.py, and s in its low half (s <= n/2) as every
signer on the wire should give it (a high-S copy of a signature verifies
too, under another message id); ~20x faster than shared/p256.py on CPython,
which counts for the gateway's sealed rejections (one per refusal)."""
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

_KEYS = {}
_ECDSA = ec.ECDSA(hashes.SHA256())
_MAX_KEYS = 65536


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


_N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
_PRIVATE = {}


def _sign(private_key, message):
    """r||s (64 bytes, low S) of `message` under the 32-byte private scalar."""
    key = _PRIVATE.get(private_key)
    if key is None:
        key = ec.derive_private_key(int.from_bytes(private_key, "big"), ec.SECP256R1())
        if len(_PRIVATE) >= 64:
            _PRIVATE.clear()
        _PRIVATE[bytes(private_key)] = key
    r, s = decode_dss_signature(key.sign(message, _DETERMINISTIC))
    if s > _N >> 1:
        s = _N - s
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


try:
    _DETERMINISTIC = ec.ECDSA(hashes.SHA256(), deterministic_signing=True)
    _sign(b"\x00" * 31 + b"\x01", b"probe")
    sign = _sign
except Exception:  # an OpenSSL without RFC 6979 (before 3.2): shared/p256.py signs
    sign = None
