"""p256.verify never accepts and never raises on malformed input
(dual: CPython and MicroPython)."""
from mpcompat import unhex

from shared import p256  # isort: skip  (compiled first: its compile is the heap peak)

PRIV = b"\x2a" * 32
MSG = b"tx"
N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
P = unhex("FFFFFFFF00000001000000000000000000000000FFFFFFFFFFFFFFFFFFFFFFFF")


def _rs(r, s):
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def test_valid_baseline():
    sig = p256.sign(PRIV, MSG)
    assert p256.verify(p256.public_key(PRIV), MSG, sig)
    assert p256.verify(p256.public_key(PRIV, False), MSG, sig)


def test_malformed_signatures():
    pub = p256.public_key(PRIV)
    sig = p256.sign(PRIV, MSG)
    r = int.from_bytes(sig[:32], "big")
    s = int.from_bytes(sig[32:], "big")
    for bad in (sig[:63], sig + b"\x00", b"", b"\x00" + sig[:63], sig.hex(), None, 5,
                list(sig), _rs(0, s), _rs(r, 0), _rs(N, s), _rs(r, N), _rs(N + 1, s),
                _rs(r, N + 1), b"\xff" * 64, bytes(64), sig[32:] + sig[:32],
                _rs(r, s ^ 1), _rs(r ^ 1, s)):
        assert p256.verify(pub, MSG, bad) is False
        assert p256.verify_digest(pub, bytes(32), bad) is False


def test_malformed_keys():
    pub = p256.public_key(PRIV, False)
    sig = p256.sign(PRIV, MSG)
    for bad in (None, pub.hex(), pub[:64], pub + b"\x00", pub[:34], b"", b"\x00",
                b"\x00" * 65, b"\x00" * 33, b"\x02" + pub[1:], b"\x04" + pub[1:33],
                b"\x06" + pub[1:], b"\x02" + P, b"\x04" + P + pub[33:], pub[:33] + P,
                b"\x02" + bytes(31) + b"\x01", pub[:64] + bytes((pub[64] ^ 1,)),
                b"\x04" + bytes(64), p256.public_key(b"\x2b" * 32)):
        assert p256.verify(bad, MSG, sig) is False


def test_wrong_message_or_digest():
    pub = p256.public_key(PRIV)
    sig = p256.sign(PRIV, MSG)
    for msg in (b"tX", b"", MSG + b"\x00", "tx", None):
        assert p256.verify(pub, msg, sig) is False
    for digest in (bytes(32), bytes(31), None, "x" * 32):
        assert p256.verify_digest(pub, digest, sig) is False


def test_sum_at_infinity():
    # Key Q = G (private key 1), r = -e mod n: u1*G + u2*Q = (e - e)*G = infinity.
    from hashlib import sha256
    e = int.from_bytes(sha256(MSG).digest(), "big")
    g = p256.public_key(bytes(31) + b"\x01")
    for s in (1, 2, N - 1):
        assert p256.verify(g, MSG, _rs((N - e) % N, s)) is False
