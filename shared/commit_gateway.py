"""Making and checking single votes and building commit certificates (the
gateway's side of shared/commit.py; a board never loads it)."""
from shared import cbor, cose
from shared import tx as txm
from shared.commit import statement


def vote(private_key, public_key, block_hash):
    """This validator's 64-byte signature on block `block_hash`."""
    signed = cose.sign1(private_key, statement(block_hash), txm.device_id(public_key))
    return bytes(cose.parse1(signed).signature)


def check_vote(public_key, block_hash, signature):
    """SignatureError / CoseError unless `signature` is the vote of
    `public_key` on `block_hash`."""
    kid = txm.device_id(public_key)
    cose.check1(public_key, cose.Sign1(cose.protected_header(kid), kid, statement(block_hash),
                                       signature))


def certificate(votes):
    """The certificate list of `votes` ({index in the sorted set: signature})."""
    return [[i, votes[i]] for i in sorted(votes)]


def encode(cert):
    return cbor.dumps(cert)
