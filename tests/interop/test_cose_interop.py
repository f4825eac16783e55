"""What our code signs verifies with pycose (an independent COSE library) and
with `cryptography`; what pycose signs verifies with ours."""

import cbor2
import pytest
from pycose.algorithms import Es256
from pycose.headers import KID, Algorithm
from pycose.keys import EC2Key
from pycose.keys.curves import P256
from pycose.messages import Sign1Message

from shared import cose, errors, es256_cryptography, p256, tx
from tests.support.pycose_keys import pycose_key


def test_pycose_verifies_our_transactions():
    for _ in range(5):
        priv, pub = p256.keygen()
        msg = tx.make(priv, tx.device_id(pub), tx.TYPE_READING, "demo", 9, 0, {1: -40, 2: 0})
        decoded = Sign1Message.decode(msg)
        decoded.key = pycose_key(pub)
        assert decoded.verify_signature()
        assert decoded.phdr[KID] == tx.device_id(pub)
        assert cbor2.loads(decoded.payload)[3] == 9


def test_pycose_rejects_tampered_signature():
    priv, pub = p256.keygen()
    msg = bytearray(tx.make(priv, tx.device_id(pub), tx.TYPE_READING, "demo", 1, 0, {1: 1, 2: 0}))
    msg[-1] ^= 1
    decoded = Sign1Message.decode(bytes(msg))
    decoded.key = pycose_key(pub)
    assert not decoded.verify_signature()


def test_we_verify_what_pycose_signs():
    """pycose signs through OpenSSL (random k): s > n/2 about half of the time.
    We verify its low-s signatures, refuse a high-s one (bad-signature, high-s)
    and verify its low-s twin, which pycose verifies too."""
    key = EC2Key.generate_key(crv=P256)
    pub = p256.public_key(key.d)
    seen = set()
    for i in range(64):  # both kinds, with probability 1 - 2**-63
        m = Sign1Message(phdr={Algorithm: Es256, KID: b"k" * 16}, uhdr={}, payload=b"hi %d" % i)
        m.key = key
        encoded = m.encode()
        sig = encoded[-64:]  # the last item: bstr(64) r||s
        high = not es256_cryptography.is_low_s(sig)
        seen.add(high)
        if high:
            with pytest.raises(errors.SignatureError) as ei:
                cose.verify1(pub, encoded)
            assert ei.value.reason == errors.BAD_SIGNATURE and ei.value.detail == "high-s"
            encoded = encoded[:-64] + es256_cryptography.low_s(sig)
            assert es256_cryptography.is_low_s(encoded[-64:])
            twin = Sign1Message.decode(encoded)
            twin.key = pycose_key(pub)
            assert twin.verify_signature()
        assert cose.verify1(pub, encoded) == b"hi %d" % i
        if len(seen) == 2:
            break
    assert seen == {True, False}
    other = p256.public_key(p256.keygen()[0])
    with pytest.raises(errors.SignatureError) as ei:
        cose.verify1(other, encoded)
    assert ei.value.detail == "bad-signature"
