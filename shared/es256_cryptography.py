"""ES256 verification with the `cryptography` package (OpenSSL): the gateway's
fast path, probed by shared/cose.py at import. Raises ImportError where the
package is missing (MicroPython, boards), which selects shared/p256.py.

Also the host's signing with a `cryptography` key (`sign`) and the low-s form
of any r||s (`low_s`): the wire takes only s <= n/2 (shared/cose.py check1),
and OpenSSL returns s > n/2 for about half of its signatures."""
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


def sign(private_key, message, algorithm=_ECDSA):
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
