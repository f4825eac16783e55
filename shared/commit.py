"""Commit certificates: k signatures of a domain's validators on a block header
(docs/CONSENSUS.md). Dual: the gateway makes and checks them, a light node
checks the one inside each receipt.

Validator set: a threshold k and n public keys (SEC1 compressed, sorted by
their bytes); its hash, named by every header of a chain with a consensus
section (fields "validators" and "next_validators", shared/header.py), is
SHA-256(cbor(["tl-valset", k, [pubkey, ...]])).

A validator's vote on block hash H is the ES256 signature of a COSE_Sign1
(shared/cose.py, protected header {1: -7, 4: SHA-256(pubkey)[:16]}) whose
payload is cbor(["tl-commit", H]): only the 64 signature bytes travel. The
payload is a list, and every other signed payload of the protocol a map, so a
vote is never another message's signature; H names domain and height, so a
vote on one header never counts for another.

Certificate: cbor [[i, signature], ...], i the signer's index in the sorted
set, strictly increasing (one vote per member). It finalises the header when
the set is the one the header names and it holds at least k entries, each a
valid vote; any bad entry refuses the whole certificate (a gateway sends only
votes it checked). In authority mode the set is the authority's key, k = 1:
the certificate is its one vote.

Frugality: a board loads `check` (and what it calls) only."""
from hashlib import sha256

from shared import cbor, cose, errors, lazy


def valset_hash(threshold, pubkeys):
    """Hash of a validator set (`pubkeys` sorted, as stored and configured)."""
    return sha256(cbor.dumps(["tl-valset", threshold, pubkeys])).digest()


def statement(block_hash):
    """The payload a validator signs for block `block_hash`."""
    return cbor.dumps(["tl-commit", bytes(block_hash)])


def check_vote(pub, block_hash, sig):
    """SignatureError unless `sig` is the vote of `pub` on `block_hash`."""
    kid = sha256(pub).digest()[:16]
    cose.check1(pub, cose.Sign1(cose.protected_header(kid), kid, statement(block_hash), sig))


def check(cert, block_hash, named_hash, pubkeys, threshold, set_hash=None):
    """Raise ProofError unless `cert` (the decoded list) finalises
    `block_hash` under the set (`threshold`, sorted `pubkeys`) whose hash the
    header names (`named_hash`); `set_hash`: valset_hash of the set, if known
    already (a board computes it once; b"": the caller compares the hashes
    itself). SignatureError for a forged vote."""
    if set_hash != b"" and bytes(named_hash) != (set_hash or valset_hash(threshold, pubkeys)):
        raise errors.ProofError("wrong-validator-set")
    if not isinstance(cert, list) or len(cert) < threshold or threshold < 1:
        raise errors.ProofError("too-few-signatures")
    last = -1
    for e in cert:
        if not isinstance(e, list) or len(e) != 2:
            raise errors.ProofError("bad-certificate")
        i, sig = e
        if not isinstance(i, int) or isinstance(i, bool) or i < 0:
            raise errors.ProofError("bad-certificate")
        if i <= last:
            raise errors.ProofError("duplicate-signer")
        if i >= len(pubkeys):
            raise errors.ProofError("signer-outside-set")
        if not isinstance(sig, (bytes, memoryview)) or len(sig) != 64:
            raise errors.ProofError("bad-certificate")
        check_vote(pubkeys[i], block_hash, sig)
        last = i


__getattr__ = lazy("shared.commit_gateway", globals())
