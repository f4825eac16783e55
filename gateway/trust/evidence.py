"""Checks of misbehaviour proofs that need no trust in whoever submits them
(pure: signatures and structure only). Each returns the offence id (the same
offence always gives the same id, so a proof is accepted once per offence)
or raises ProofError (bad-proof) with the detail of what is wrong, or
SignatureError when a message does not verify under the offender's key.

- tx equivocation: two different transactions signed by one key with one seq.
- header equivocation: two different block headers signed by one gateway key
  at one height. `header_equivocation(pubkey, a, b)` takes the signed
  headers as they travel (COSE_Sign1 by the proposer); a quorum domain's
  validators sign header hashes with the same key, so their two signatures
  fit the same check once decoded to (header bytes, signature).
"""

from __future__ import annotations

from hashlib import sha256

from shared import cose, errors, header
from shared import tx as txm

EQUAL = "equal-messages"
DIFFERENT_KEYS = "different-keys"
DIFFERENT_SEQS = "different-seqs"
DIFFERENT_HEIGHTS = "different-heights"
DIFFERENT_DOMAINS = "different-domains"


def tx_equivocation(pubkey: bytes, a: bytes, b: bytes) -> tuple[bytes, int]:
    """(offender id, seq) of two txs that prove `pubkey`'s holder signed two
    different messages with one seq."""
    if a == b:
        raise errors.ProofError(EQUAL)
    ta, tb = txm.decode(a), txm.decode(b)
    if ta.sender != tb.sender:
        raise errors.ProofError(DIFFERENT_KEYS)
    if ta.seq != tb.seq:
        raise errors.ProofError(DIFFERENT_SEQS)
    if ta.domain != tb.domain:
        raise errors.ProofError(DIFFERENT_DOMAINS)
    ta.verify(pubkey)
    tb.verify(pubkey)
    return ta.sender, ta.seq


def header_equivocation(pubkey: bytes, a: bytes, b: bytes) -> tuple[bytes, int]:
    """(signer id, height) of two different headers signed by `pubkey` at one
    height."""
    if a == b:
        raise errors.ProofError(EQUAL)
    sa, sb = cose.parse1(a), cose.parse1(b)
    if sa.kid != sb.kid:
        raise errors.ProofError(DIFFERENT_KEYS)
    fa, ba = header.open_signed(pubkey, a)
    fb, bb = header.open_signed(pubkey, b)
    if fa["height"] != fb["height"]:
        raise errors.ProofError(DIFFERENT_HEIGHTS)
    if fa["domain"] != fb["domain"]:
        raise errors.ProofError(DIFFERENT_DOMAINS)
    if ba == bb:  # one header, signed twice (ES256 signatures may differ)
        raise errors.ProofError(EQUAL)
    return sa.kid, fa["height"]


def offence_id(kind: str, offender: bytes, at: int) -> bytes:
    """One id per offence: kind, offender, seq or height."""
    return sha256(kind.encode() + b"\x00" + offender + at.to_bytes(8, "big")).digest()
