"""A validator's vote (shared/commit.py) is the signature of a COSE_Sign1 that
pycose, an independent COSE library, verifies once the message is rebuilt
from the protected header, the statement and the 64 signature bytes; and a
vote pycose makes (random k, low s) passes commit.check."""

import cbor2
from pycose.algorithms import Es256
from pycose.headers import KID, Algorithm
from pycose.keys import EC2Key
from pycose.keys.curves import P256
from pycose.messages import Sign1Message

from shared import commit, commit_gateway, cose, es256_cryptography, p256, tx
from tests.support.pycose_keys import pycose_key

BLOCK = bytes(range(32))


def test_pycose_verifies_our_votes() -> None:
    for _ in range(3):
        priv, pub = p256.keygen()
        sig = commit_gateway.vote(priv, pub, BLOCK)
        msg = cbor2.dumps(cbor2.CBORTag(18, [cose.protected_header(tx.device_id(pub)), {},
                                            commit.statement(BLOCK), sig]))
        m = Sign1Message.decode(msg)
        m.key = pycose_key(pub)
        assert m.verify_signature()
        assert cbor2.loads(m.payload) == ["tl-commit", BLOCK]
        assert m.phdr[KID] == tx.device_id(pub)


def test_a_vote_pycose_makes_passes_our_check() -> None:
    key = EC2Key.generate_key(crv=P256)
    pub = p256.public_key(key.d)
    m = Sign1Message(phdr={Algorithm: Es256, KID: tx.device_id(pub)}, uhdr={},
                     payload=commit.statement(BLOCK))
    m.key = key
    sig = es256_cryptography.low_s(m.encode()[-64:])
    set_hash = commit.valset_hash(1, [pub])
    commit.check([[0, sig]], BLOCK, set_hash, [pub], 1)
