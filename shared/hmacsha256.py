"""HMAC-SHA-256 (RFC 2104) on hashlib.sha256, for CPython and MicroPython.

MicroPython has no `hmac` module, so this is the one HMAC both sides use
(RFC 6979 nonces in shared/p256.py). The pads are XORed as one big integer:
on MicroPython that is much cheaper than a 64-step byte loop.
"""
from hashlib import sha256

_BLOCK = 64
_IPAD = int.from_bytes(b"\x36" * _BLOCK, "big")
_OPAD = int.from_bytes(b"\x5c" * _BLOCK, "big")


def hmac_sha256(key, msg):
    """HMAC-SHA-256 of `msg` under `key` (both bytes-like); 32 bytes."""
    if len(key) > _BLOCK:
        key = sha256(key).digest()
    k = int.from_bytes(bytes(key) + bytes(_BLOCK - len(key)), "big")
    inner = sha256((k ^ _IPAD).to_bytes(_BLOCK, "big"))
    inner.update(msg)
    outer = sha256((k ^ _OPAD).to_bytes(_BLOCK, "big"))
    outer.update(inner.digest())
    return outer.digest()
