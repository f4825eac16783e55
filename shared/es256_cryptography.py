"""ES256 verification with the `cryptography` package (OpenSSL): the gateway's
fast path, probed by shared/cose.py at import. Raises ImportError where the
package is missing (MicroPython, boards), which selects shared/p256.py."""
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

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
