"""Checks of misbehaviour proofs that need no trust in whoever submits them
(pure: signatures and structure only). Each returns the offence id (the same
offence always gives the same id, so a proof is accepted once per offence)
or raises ProofError (bad-proof) with the detail of what is wrong, or
SignatureError when a message does not verify under the offender's key.

- tx equivocation: two different transactions signed by one key with one seq.
- header equivocation: two different block headers signed by one gateway key
  at one height. `header_equivocation(pubkey, a, b)` takes the signed
  headers as they travel (COSE_Sign1 by the proposer, whose payload is the
  header).
- vote equivocation: a quorum domain's validator signed the hashes of two
  different headers of one height (docs/CONSENSUS.md). A vote is not a signed
  header: it signs only cbor(["tl-commit", SHA-256(header)]) (shared/commit.py),
  so the header itself must come along. `vote_equivocation(a, b)` takes two
  vote messages, each the canonical CBOR [validator public key, header bytes,
  signature] (encode_vote); once each is decoded and its signature checked,
  the two headers go through the same check as signed headers (same_slot:
  one height, one domain, different headers). Whether the key belongs to the
  validator set in force at that height is the chain's question
  (gateway/trust/rules.py), not this module's.
"""

from __future__ import annotations

from hashlib import sha256

from shared import cbor, commit_gateway, cose, errors, header
from shared import tx as txm

EQUAL = "equal-messages"
DIFFERENT_KEYS = "different-keys"
DIFFERENT_SEQS = "different-seqs"
DIFFERENT_HEIGHTS = "different-heights"
DIFFERENT_DOMAINS = "different-domains"
BAD_VOTE = "bad-vote"
MAX_VOTE = 2048  # bytes of one vote message (a header is ~300)


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
    same_slot(fa, ba, fb, bb)
    return sa.kid, fa["height"]


def same_slot(fa: dict, ba: bytes, fb: dict, bb: bytes) -> None:
    """ProofError unless the headers (fields, bytes) are two different ones of
    one height and one domain (the part every header-equivocation check shares)."""
    if fa["height"] != fb["height"]:
        raise errors.ProofError(DIFFERENT_HEIGHTS)
    if fa["domain"] != fb["domain"]:
        raise errors.ProofError(DIFFERENT_DOMAINS)
    if ba == bb:  # one header, signed twice (ES256 signatures may differ)
        raise errors.ProofError(EQUAL)


def encode_vote(pubkey: bytes, header_bytes: bytes, signature: bytes) -> bytes:
    """One message of a vote-equivocation proof."""
    return cbor.dumps([pubkey, header_bytes, signature])


def decode_vote(message: bytes) -> tuple[bytes, bytes, bytes]:
    """(public key, header bytes, signature); ProofError(bad-vote) unless the
    shape of encode_vote's message."""
    try:
        if len(message) > MAX_VOTE:
            raise errors.ProofError(BAD_VOTE)
        v = cbor.loads(message, max_size=MAX_VOTE)
    except errors.TLError:
        raise errors.ProofError(BAD_VOTE) from None
    if not isinstance(v, list) or len(v) != 3 or not all(isinstance(x, bytes) for x in v) \
            or len(v[0]) != 33 or len(v[2]) != 64:
        raise errors.ProofError(BAD_VOTE)
    return v[0], v[1], v[2]


def vote_equivocation(a: bytes, b: bytes) -> tuple[bytes, int, str]:
    """(validator public key, height, domain) of two votes of one key on two
    different headers of one height (each signature checked over its
    header's hash: SignatureError if one does not verify)."""
    if a == b:
        raise errors.ProofError(EQUAL)
    pa, ha, siga = decode_vote(a)
    pb, hb, sigb = decode_vote(b)
    if pa != pb:
        raise errors.ProofError(DIFFERENT_KEYS)
    fa, fb = header.decode(ha), header.decode(hb)
    same_slot(fa, ha, fb, hb)
    commit_gateway.check_vote(pa, sha256(ha).digest(), siga)
    commit_gateway.check_vote(pb, sha256(hb).digest(), sigb)
    return pa, fa["height"], fa["domain"]


def offence_id(kind: str, offender: bytes, at: int) -> bytes:
    """One id per offence: kind, offender, seq or height."""
    return sha256(kind.encode() + b"\x00" + offender + at.to_bytes(8, "big")).digest()
