"""The host's fast ES256 signer (shared/es256_cryptography.py, what
shared.cose.sign1 uses on CPython): RFC 6979 nonces as shared/p256.py (the
same r), s in its low half, and signatures both backends verify."""

import hashlib
import random

from shared import cose, es256_cryptography, p256

N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
RNG = random.Random(20261207)


def test_fast_signer_matches_rfc6979_with_low_s():
    assert es256_cryptography.sign is not None, "OpenSSL without deterministic ECDSA"
    assert cose._sign is es256_cryptography.sign
    for _ in range(64):
        priv = RNG.randbytes(32)
        pub = p256.public_key(priv)
        msg = RNG.randbytes(RNG.randrange(1, 200))
        sig = es256_cryptography.sign(priv, msg)
        ref = p256.sign_digest(priv, hashlib.sha256(msg).digest())
        assert int.from_bytes(sig[32:], "big") <= N // 2
        assert sig == ref  # both signers: RFC 6979 nonce, then the low s
        assert p256.verify(pub, msg, sig) and es256_cryptography.verify(pub, msg, sig)


def test_sign1_on_the_host_verifies_on_both_backends():
    priv, pub = p256.keygen()
    m = cose.sign1(priv, b"payload", b"\x01" * 16)
    s1 = cose.parse1(m)
    assert cose.check1(pub, s1) == b"payload"
    assert p256.verify_digest(pub, cose.sig_digest(s1.protected, s1.payload), s1.signature)
