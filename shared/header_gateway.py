"""Making block headers (the gateway's side of shared/header.py, also
reachable as header.VERSION, header.encode, header.block_hash, header.sign)."""
from hashlib import sha256

from shared import cbor, cose

VERSION = 1
VERSION_SETS = 2  # headers naming the validator sets (shared/header.py)


def encode(fields):
    return cbor.dumps(fields)


def block_hash(header_bytes):
    return sha256(header_bytes).digest()


def sign(private_key, proposer_id, fields):
    """COSE_Sign1 of the header, signed by the proposer (the domain authority)."""
    return cose.sign1(private_key, encode(fields), proposer_id)
