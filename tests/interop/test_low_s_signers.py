"""Every signer in the project gives low s (s <= n/2), the one form the wire
takes (shared/cose.py check1; tests/shared/test_low_s.py): property tests
over keys and messages, CPython only (hypothesis, `cryptography`)."""

from hashlib import sha256

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway import broker as broker_auth
from shared import cbor, cose, es256_cryptography, p256, tx

N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
SCALARS = st.integers(min_value=1, max_value=N - 1)
MESSAGES = st.binary(max_size=300)


def low(sig: bytes) -> bool:
    return len(sig) == 64 and 0 < int.from_bytes(sig[32:], "big") <= N // 2


@settings(max_examples=40, deadline=None)
@given(SCALARS, MESSAGES)
def test_shared_p256_signers_give_low_s(d: int, msg: bytes) -> None:
    priv = d.to_bytes(32, "big")
    pub = p256.public_key(priv)
    sig = p256.sign(priv, msg)
    assert low(sig) and p256.verify(pub, msg, sig)
    assert p256.sign_digest(priv, sha256(msg).digest()) == sig
    # COSE_Sign1: transactions, headers, notices and readings are all cose.sign1
    signed = cose.sign1(priv, msg, b"kid")
    assert low(signed[-64:]) and cose.verify1(pub, signed) == msg
    t = tx.make(priv, tx.device_id(pub), tx.TYPE_READING, "demo", 1 + d % 1000, 0, {1: len(msg)})
    assert low(t[-64:])
    tx.decode(t).verify(pub)
    # broker passwords (the gateway's own, a person's login; a board's is the same p256.sign)
    pw = bytes.fromhex(broker_auth.mqtt_password(priv, "demo", tx.device_id(pub)))
    assert low(pw)
    assert broker_auth.verify_password(pub, "demo", tx.device_id(pub), pw.hex())


DETERMINISTIC = ec.ECDSA(hashes.SHA256(), deterministic_signing=True)
RANDOM = ec.ECDSA(hashes.SHA256())


@settings(max_examples=40, deadline=None)
@given(SCALARS, MESSAGES, st.sampled_from([RANDOM, DETERMINISTIC]))
def test_cryptography_signer_gives_low_s(d: int, msg: bytes, alg: ec.ECDSA) -> None:
    key = ec.derive_private_key(d, ec.SECP256R1())
    pub = p256.public_key(d.to_bytes(32, "big"))
    sig = es256_cryptography.sign_with_key(key, msg, alg)
    assert low(sig) and es256_cryptography.verify(pub, msg, sig)
    if alg is DETERMINISTIC:  # RFC 6979 on both sides: the same bytes
        assert sig == p256.sign(d.to_bytes(32, "big"), msg)
    prot = cose.protected_header(b"kid")
    signed = cbor.dumps(cbor.Tag(cose.TAG_SIGN1, [prot, {}, msg, es256_cryptography.sign_with_key(
        key, cose.sig_structure(prot, msg), alg)]))
    assert cose.verify1(pub, signed) == msg


@settings(max_examples=40, deadline=None)
@given(st.binary(min_size=32, max_size=32),
       st.one_of(st.integers(0, 2**256 - 1), st.sampled_from([N // 2, N // 2 + 1, N - 1, N])))
def test_low_s_form(r: bytes, s: int) -> None:
    sig = r + s.to_bytes(32, "big")
    out = es256_cryptography.low_s(sig)
    assert out[:32] == sig[:32]
    assert int.from_bytes(out[32:], "big") == (N - s if N // 2 < s < N else s)
    assert es256_cryptography.is_low_s(out) == (s < N)
    assert es256_cryptography.is_low_s(sig) == (s <= N // 2)
