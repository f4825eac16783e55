"""HMAC-SHA-256 (RFC 2104) on hashlib.sha256, for CPython and MicroPython.

MicroPython has no `hmac` module, so ThingLedger has its own. It is defined in
shared/p256.py, its one user on a board (RFC 6979 nonces): one module less
in a board's heap. Importable from here too."""
from shared.p256 import hmac_sha256  # noqa: F401
