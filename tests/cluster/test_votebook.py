"""gateway/cluster/votebook.py without network: a member's votes on two hashes
of one height come back as a double vote; the proof's messages are the ones
the chain checks (gateway/trust/evidence.py); a vote on an unknown header
waits for it and is counted once; the caches stay bounded."""

from __future__ import annotations

import pytest

from gateway.cluster.sigs import HeaderSig
from gateway.cluster.votebook import UNKNOWN_HEADER, VoteBook
from gateway.trust import evidence
from shared import commit_gateway, errors, header
from tests.support.gwtest import T0, key

V = key("votebook-validator")
W = key("votebook-other")


def hdr(height: int, tag: int) -> bytes:
    return header.encode({"version": 1, "domain": "vb", "height": height,
                          "prev_hash": bytes(32), "time": T0 + tag, "tx_root": bytes(32),
                          "receipts_root": bytes(32), "state_root": bytes(32),
                          "proposer": bytes(16)})


def sig(k: tuple[bytes, bytes], height: int, hb: bytes) -> HeaderSig:
    h = header.block_hash(hb)
    return HeaderSig(height, h, k[1], commit_gateway.vote(k[0], k[1], h))


def test_two_hashes_of_one_signer_and_height_make_a_proof() -> None:
    book = VoteBook()
    a, b = hdr(5, 0), hdr(5, 1)
    book.keep_header(a)
    book.keep_header(b)
    va, vb = sig(V, 5, a), sig(V, 5, b)
    assert book.note(va) == [] and book.note(va) == []  # a resend is no offence
    assert book.note(sig(W, 5, b)) == []  # another signer
    assert book.note(sig(V, 6, b)) == []  # another height
    others = book.note(vb)
    assert others == [va]
    ma, mb = book.proof(others[0], vb, book.header)
    assert evidence.vote_equivocation(ma, mb) == (V[1], 5, "vb")
    assert book.has(va) and book.has(vb)
    assert not book.is_handled(vb)
    book.handle(vb)
    assert book.is_handled(va)  # one offence: (signer, height)


def test_a_vote_on_an_unknown_header_waits_and_is_counted_once() -> None:
    book = VoteBook()
    a, b = hdr(3, 0), hdr(3, 1)
    book.keep_header(a)
    va, vb = sig(V, 3, a), sig(V, 3, b)
    book.note(va)
    [first] = book.note(vb)
    for _ in range(2):  # resends of the double vote
        with pytest.raises(errors.ProofError) as e:
            book.proof(first, vb, book.header)
        assert e.value.detail == UNKNOWN_HEADER
        book.count(vb, UNKNOWN_HEADER)
    assert book.counts[UNKNOWN_HEADER] == 1
    # the header comes (a proposal refused later in the log): the double vote is back
    h = book.keep_signed_header(header.sign(W[0], bytes(16), header.decode(b)))
    assert h == vb.hash and book.unblocked(h) == (first, vb)
    assert book.unblocked(h) is None
    book.proof(first, vb, book.header)
    # a replayed vote under another height is no double vote the chain would take
    c = hdr(4, 2)
    book.keep_header(c)
    with pytest.raises(errors.ProofError) as e:
        book.proof(va, HeaderSig(3, header.block_hash(c), V[1], sig(V, 4, c).signature),
                   book.header)
    assert e.value.detail == evidence.DIFFERENT_HEIGHTS


def test_the_caches_are_bounded() -> None:
    book = VoteBook(max_headers=4, max_votes=3)
    hs = [hdr(1, i) for i in range(6)]
    for hb in hs:
        book.keep_header(hb)
    assert len(book.headers) == 4 and book.header(header.block_hash(hs[0])) is None
    assert book.header(header.block_hash(hs[-1])) == hs[-1]
    for height in range(1, 6):
        book.note(sig(V, height, hs[0]))
    assert len(book.votes) == 3 and (1, V[1]) not in book.votes
    # at most a few hashes per signer and height are kept
    for hb in hs:
        book.note(sig(W, 9, hb))
    assert len(book.votes[(9, W[1])]) <= 4
    assert book.keep_signed_header(b"\x01not a header") is None
