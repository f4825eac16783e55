"""Merkle trees as RFC 6962 §2.1 / RFC 9162 §2.1 (Certificate Transparency).

Leaf hash SHA-256(0x00 || leaf), node hash SHA-256(0x01 || left || right),
split at the largest power of two below n, no duplicated last node; the empty
tree's root is SHA-256(""). Inclusion proofs are the RFC's audit paths.

Building a tree level by level (pair left to right, carry an odd last node up
unchanged) gives exactly the RFC's left-complete tree, so the gateway builds all
proofs of a block in O(n log n). The firmware only needs `verify`.
"""
from hashlib import sha256

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


def levels(leaf_hashes):
    """All levels of the tree over `leaf_hashes`, leaves first, root last."""
    out = [list(leaf_hashes)]
    while len(out[-1]) > 1:
        cur = out[-1]
        nxt = [node_hash(cur[i], cur[i + 1]) for i in range(0, len(cur) - 1, 2)]
        if len(cur) & 1:
            nxt.append(cur[-1])
        out.append(nxt)
    return out


def root_of(levels_):
    return levels_[-1][0] if levels_[0] else EMPTY_ROOT


def root(leaves):
    """Root over raw leaf data."""
    return root_of(levels([leaf_hash(x) for x in leaves]))


def proof(levels_, index):
    """Audit path for leaf `index` (RFC 6962 PATH), from levels()."""
    if not 0 <= index < len(levels_[0]):
        raise IndexError("leaf index out of range")
    path = []
    for level in levels_[:-1]:
        sib = index ^ 1
        if sib < len(level):
            path.append(level[sib])
        index >>= 1
    return path


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
        if sn == 0 or not isinstance(p, (bytes, bytearray)) or len(p) != 32:
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
