"""Commit certificates (shared/commit.py, dual): k votes of distinct members
of the set the header names finalise it; too few, a member twice, an index
beyond the set, a vote on another block, a non-member's vote and another set
are refused with their reasons."""
from mpcompat import expect_error

from shared import commit, commit_gateway, errors, p256

# the gateway's side loaded while the heap is whole (see test_receipt.py)
_GATEWAY_SIDE = (commit_gateway,)

KEYS = [bytes([0] * 31 + [i]) for i in (3, 5, 7)]
PUB_OF = {k: p256.public_key(k) for k in KEYS}
SET = sorted(PUB_OF.values())
BY_INDEX = sorted(KEYS, key=lambda k: PUB_OF[k])
H = bytes(range(32))
OTHER = bytes(range(1, 33))
NAMED = commit.valset_hash(2, SET)


def vote(i, block=H, key=None):
    k = key or BY_INDEX[i]
    return [i, commit_gateway.vote(k, p256.public_key(k), block)]


def test_k_votes_of_the_set_finalise():
    commit.check([vote(0), vote(2)], H, NAMED, SET, 2)
    commit.check([vote(0), vote(1), vote(2)], H, NAMED, SET, 2, NAMED)


def test_refusals():
    v0, v1 = vote(0), vote(1)
    cases = (
        ([v0], NAMED, "too-few-signatures"),
        ([v1, v1], NAMED, "duplicate-signer"),
        ([v1, v0], NAMED, "duplicate-signer"),  # not in increasing order
        ([v0, [3, v1[1]]], NAMED, "signer-outside-set"),
        ([v0, [1, b"\x01" * 63]], NAMED, "bad-certificate"),
        ([v0, v1], commit.valset_hash(1, SET), "wrong-validator-set"),
    )
    for cert, named, detail in cases:
        e = expect_error(errors.ProofError, commit.check, cert, H, named, SET, 2)
        assert e.detail == detail, (detail, e.detail)
    for cert in ([v0, vote(1, OTHER)],  # a vote on another block
                 [v0, vote(1, key=bytes([0] * 31 + [11]))]):  # a key outside the set
        e = expect_error(errors.SignatureError, commit.check, cert, H, NAMED, SET, 2)
        assert e.detail == "bad-signature"
