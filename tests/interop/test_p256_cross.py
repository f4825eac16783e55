"""shared.p256 against the `cryptography` package (OpenSSL), CPython only."""

import hashlib
import random

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    Prehashed,
    decode_dss_signature,
    encode_dss_signature,
)

from shared import p256

N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
ES256 = ec.ECDSA(hashes.SHA256())
RNG = random.Random(6979)


def _der(sig):
    return encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))


def _raw(der):
    r, s = decode_dss_signature(der)
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def _rs(r, s):
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def _their_pub(pub):
    return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), pub)


def _encoded(key, fmt):
    return key.public_key().public_bytes(serialization.Encoding.X962, fmt)


def _messages():
    return [RNG.randbytes(RNG.randrange(0, 300)) for _ in range(4)]


def test_our_signatures_verify_with_cryptography():
    for _ in range(4):
        priv, pub = p256.keygen()
        theirs = _their_pub(pub)
        for msg in _messages():
            sig = p256.sign(priv, msg)
            theirs.verify(_der(sig), msg, ES256)
            with pytest.raises(InvalidSignature):
                theirs.verify(_der(sig), msg + b"!", ES256)
            bad = bytearray(sig)
            bad[RNG.randrange(64)] ^= 1 << RNG.randrange(8)
            if int.from_bytes(bad[:32], "big") < N and int.from_bytes(bad[32:], "big") < N:
                with pytest.raises(InvalidSignature):
                    theirs.verify(_der(bytes(bad)), msg, ES256)
            assert not p256.verify(pub, msg, bytes(bad))


def test_cryptography_signatures_verify_with_ours():
    for _ in range(4):
        key = ec.generate_private_key(ec.SECP256R1())
        pubs = [_encoded(key, f) for f in (serialization.PublicFormat.CompressedPoint,
                                           serialization.PublicFormat.UncompressedPoint)]
        for msg in _messages():
            sig = _raw(key.sign(msg, ES256))
            for pub in pubs:
                assert p256.verify(pub, msg, sig)
                assert not p256.verify(pub, msg + b"!", sig)
                assert not p256.verify(pub, msg, sig[:63] + bytes((sig[63] ^ 1,)))


def test_rfc6979_matches_openssl_deterministic_signing():
    det = ec.ECDSA(hashes.SHA256(), deterministic_signing=True)
    for _ in range(4):
        d = RNG.randrange(1, N)
        key = ec.derive_private_key(d, ec.SECP256R1())
        for msg in _messages():
            try:
                theirs = _raw(key.sign(msg, det))
            except Exception as e:  # OpenSSL < 3.2 has no RFC 6979
                pytest.skip("no deterministic ECDSA in this OpenSSL: %s" % e)
            # the same RFC 6979 k (r), and our s is the low one of OpenSSL's s and n - s
            r, s = int.from_bytes(theirs[:32], "big"), int.from_bytes(theirs[32:], "big")
            assert p256.sign(d.to_bytes(32, "big"), msg) == _rs(r, min(s, N - s))


def test_public_keys_match():
    # Random scalars plus edge ones: every comb tooth alone and together, n-1, n-2, ...
    teeth = [1 << (43 * t) for t in range(6)]
    scalars = [1, 2, 3, N - 1, N - 2, N // 2, 1 << 255, sum(teeth), sum(teeth) * 0x7FF,
               (1 << 256) - 1 - (1 << 255) - 1, *teeth]
    scalars += [RNG.randrange(1, N) for _ in range(8)]
    for d in scalars:
        key = ec.derive_private_key(d, ec.SECP256R1())
        priv = d.to_bytes(32, "big")
        c = _encoded(key, serialization.PublicFormat.CompressedPoint)
        u = _encoded(key, serialization.PublicFormat.UncompressedPoint)
        assert p256.public_key(priv) == c
        assert p256.public_key(priv, compressed=False) == u
        assert p256.decompress(c) == u and p256.compress(u) == c


def test_digest_api_with_prehashed():
    key = ec.generate_private_key(ec.SECP256R1())
    priv = key.private_numbers().private_value.to_bytes(32, "big")
    pub = _encoded(key, serialization.PublicFormat.CompressedPoint)
    for digest in (bytes(32), N.to_bytes(32, "big"), b"\xff" * 32, hashlib.sha256(b"x").digest()):
        _their_pub(pub).verify(_der(p256.sign_digest(priv, digest)), digest,
                               ec.ECDSA(Prehashed(hashes.SHA256())))
        theirs = _raw(key.sign(digest, ec.ECDSA(Prehashed(hashes.SHA256()))))
        assert p256.verify_digest(pub, digest, theirs)


def test_keygen_rejects_out_of_range_scalars(monkeypatch):
    draws = [bytes(32), N.to_bytes(32, "big"), b"\xff" * 32, b"\x01" * 32]
    monkeypatch.setattr(p256.os, "urandom", lambda n: draws.pop(0))
    priv, pub = p256.keygen()
    assert priv == b"\x01" * 32 and not draws
    assert pub == p256.public_key(priv)
