"""What our code signs verifies with pycose (an independent COSE library) and
with `cryptography`; what pycose signs verifies with ours."""

import cbor2
from pycose.algorithms import Es256
from pycose.headers import KID, Algorithm
from pycose.keys import EC2Key
from pycose.keys.curves import P256
from pycose.messages import Sign1Message
from pycose_keys import pycose_key

from shared import cose, errors, p256, tx


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
    key = EC2Key.generate_key(crv=P256)
    priv = key.d
    pub = p256.public_key(priv)
    m = Sign1Message(phdr={Algorithm: Es256, KID: b"k" * 16}, uhdr={}, payload=b"hello")
    m.key = key
    encoded = m.encode()
    assert cose.verify1(pub, encoded) == b"hello"
    other = p256.public_key(p256.keygen()[0])
    try:
        cose.verify1(other, encoded)
    except errors.SignatureError:
        pass
    else:
        raise AssertionError("verified under the wrong key")
