"""Making votes and commit certificates (the gateway's side of
shared/commit.py, also reachable as commit.vote, commit.certificate)."""
from shared import cbor, cose
from shared import tx as txm
from shared.commit import statement


def vote(private_key, public_key, block_hash):
    """This validator's 64-byte signature on block `block_hash`."""
    signed = cose.sign1(private_key, statement(block_hash), txm.device_id(public_key))
    return bytes(cose.parse1(signed).signature)


def certificate(votes):
    """The certificate list of `votes` ({index in the sorted set: signature})."""
    return [[i, votes[i]] for i in sorted(votes)]


def encode(cert):
    return cbor.dumps(cert)
