"""Block headers: canonical CBOR map signed by the proposer as a COSE_Sign1.

Fields (text keys): version, domain, height, prev_hash, time (unix seconds),
tx_root, receipts_root, state_root, proposer (authority device id).
Version 2 (a chain whose genesis has a consensus section, docs/CONSENSUS.md)
adds validators and next_validators: the hashes of the validator set whose
certificate finalises this block and of the set of the next height
(shared/commit.py). Version 1 headers (older chains) have neither.
The block hash is SHA-256 of the header's CBOR bytes (the COSE payload).
Light nodes check receipts against `receipts_root` of a header whose signature
they verified with the domain authority's public key.

Frugality: a light node loads this module, so it holds what the node needs
(decode, open_signed). Making headers (VERSION, encode, block_hash, sign) is
the gateway's work, in shared/header_gateway.py; those names are still
reachable here (header.sign, ...), loaded on first use.
"""
from shared import cbor, cose, errors, lazy

HASH_FIELDS = ("prev_hash", "tx_root", "receipts_root", "state_root")
INT_FIELDS = ("version", "height", "time")
FIELDS = ("version", "domain", "height", "prev_hash", "time", "tx_root", "receipts_root",
          "state_root", "proposer")


def decode(header_bytes):
    """Header fields from CBOR bytes, schema-checked (raises ProofError).
    Version 2's two more fields (the validator-set hashes) are checked by
    whoever compares them with a set: shared/commit.final_header on a board,
    gateway/db/verify.py on a gateway."""
    h = cbor.loads(header_bytes)
    if not isinstance(h, dict) or len(h) != len(FIELDS) + 2 * (h.get("version") == 2):
        raise errors.ProofError("bad-header")
    for k in FIELDS:
        if k not in h:
            raise errors.ProofError("bad-header")
    for k in INT_FIELDS:
        v = h[k]
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise errors.ProofError("bad-header")
    for k in HASH_FIELDS:
        if not isinstance(h[k], bytes) or len(h[k]) != 32:
            raise errors.ProofError("bad-header")
    if not isinstance(h["domain"], str) or not isinstance(h["proposer"], bytes):
        raise errors.ProofError("bad-header")
    return h


def open_signed(authority_public_key, signed):
    """(fields, header_bytes) of a signed header after checking its signature.
    Raises SignatureError / CoseError / DecodeError / ProofError."""
    header_bytes = cose.verify1(authority_public_key, signed)
    return decode(header_bytes), header_bytes


__getattr__ = lazy("shared.header_gateway", globals())
