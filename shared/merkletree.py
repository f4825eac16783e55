"""Building RFC 6962 Merkle trees and audit paths (the full node's side).

Building level by level (pair left to right, carry an odd last node up
unchanged) gives exactly the RFC's left-complete tree, so a gateway builds
all proofs of a block in O(n log n). Hashes and proof checking live in
shared/merkle.py, which light nodes use."""
from shared.merkle import EMPTY_ROOT, leaf_hash, node_hash


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
