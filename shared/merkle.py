"""Merkle trees as RFC 6962 §2.1 / RFC 9162 §2.1 (Certificate Transparency).

Leaf hash SHA-256(0x00 || leaf), node hash SHA-256(0x01 || left || right),
split at the largest power of two below n, no duplicated last node; the empty
tree's root is SHA-256(""). Inclusion proofs are the RFC's audit paths.

Light nodes need only the hashes and `verify` (this module). Building trees
and proofs is the full node's work, in shared/merkletree.py; its names
(levels, root_of, root, proof) are also reachable here, loaded on first use,
so a board never pays heap for them.
"""
from hashlib import sha256

from shared import lazy

EMPTY_ROOT = sha256(b"").digest()


def leaf_hash(leaf):
    h = sha256(b"\x00")
    h.update(leaf)
    return h.digest()


def node_hash(left, right):
    h = sha256(b"\x01")
    h.update(left)
    h.update(right)
    return h.digest()


def verify(leaf, index, size, path, root_hash):
    """True if `leaf` (raw data) is at `index` of a tree of `size` leaves with
    root `root_hash` (RFC 9162 §2.1.3.2). Never raises on malformed proofs."""
    if not (isinstance(index, int) and isinstance(size, int)) or index < 0 or index >= size:
        return False
    if not isinstance(path, (list, tuple)) or len(path) > 64:
        return False
    fn = index
    sn = size - 1
    r = leaf_hash(leaf)
    for p in path:
        if sn == 0 or not isinstance(p, (bytes, bytearray, memoryview)) or len(p) != 32:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root_hash


__getattr__ = lazy("shared.merkletree", globals())
