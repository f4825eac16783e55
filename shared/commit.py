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

Frugality: a board keeps this module loaded (~1.5 KB of heap on the 64-bit
Unix port), so it holds only what a board runs; making and checking single
votes is the gateway's, in shared/commit_gateway.py (imported by name)."""
from hashlib import sha256

from shared import cbor, cose, errors, header


def valset_hash(threshold, pubkeys):
    """Hash of a validator set (`pubkeys` sorted, as stored and configured)."""
    return sha256(cbor.dumps(["tl-valset", threshold, pubkeys])).digest()


def statement(block_hash):
    """The payload a validator signs for block `block_hash`."""
    return cbor.dumps(["tl-commit", bytes(block_hash)])


def check(cert, block_hash, named_hash, pubkeys, threshold, set_hash=None):
    """Raise ProofError unless `cert` (the decoded list) finalises
    `block_hash` under the set (`threshold`, sorted `pubkeys`) whose hash the
    header names (`named_hash`); `set_hash`: valset_hash of the set, if known
    already (b"": the caller compares the hashes itself). SignatureError for
    a forged vote (cose.check1). Written compact: a board keeps it loaded."""
    if set_hash != b"" and bytes(named_hash) != (set_hash or valset_hash(threshold, pubkeys)):
        raise errors.ProofError("wrong-validator-set")
    if not isinstance(cert, list) or len(cert) < threshold or threshold < 1:
        raise errors.ProofError("too-few-signatures")
    st = statement(block_hash)
    last = -1
    for e in cert:
        try:
            i, sig = e
            ok = i.__class__ is int and len(sig) == 64
        except (TypeError, ValueError):
            ok = False
        if not ok or i < 0:
            raise errors.ProofError("bad-certificate")
        if i <= last:
            raise errors.ProofError("duplicate-signer")
        if i >= len(pubkeys):
            raise errors.ProofError("signer-outside-set")
        # the kid only inside the protected header: garbage before the check's collection
        cose.check1(pubkeys[i], cose.Sign1(cose.protected_header(
            sha256(pubkeys[i]).digest()[:16]), None, st, sig))
        last = i


def final_header(hb, cert, validators):
    """The fields of header bytes `hb` if `cert` finalises it under
    `validators` ((threshold, sorted pubkeys, their valset_hash or None));
    raises ProofError / SignatureError. The votes are checked first, while
    the heap holds least (a board), then the header's fields are decoded and
    the set they name compared."""
    if not isinstance(hb, (bytes, memoryview)):
        raise errors.ProofError("bad-header")
    k, pubs, h = validators
    check(cert, sha256(hb).digest(), None, pubs, k, b"")
    fields = header.decode(hb)
    if fields["version"] != 2 or fields.get("validators") != (h or valset_hash(k, pubs)):
        raise errors.ProofError("wrong-validator-set")
    n = fields.get("next_validators")
    if not isinstance(n, bytes) or len(n) != 32:
        raise errors.ProofError("bad-header")
    return fields
