"""The state commitment: a sparse Merkle tree kept node by node, so a block's
root costs O(changed entries x log n) hashes instead of a pass over the state.

The tree (hashes, proof format and checking: shared/stateproof.py) is keyed
by 256-bit key hashes; a subtree with one entry collapses to that entry's
leaf node, so n random keys give a tree about log2(n) deep with about 1.44 n
inner nodes. Positions are numbered as in a binary heap: the root is 1, the
children of p are 2p (bit 0) and 2p + 1 (bit 1); a position at depth d on
the path of key k is (1 << d) | (k >> (256 - d)).

`nodes` maps a position to what sits there: an inner node's hash (bytes), or
the one entry of a subtree as (key hash, value hash) (a tuple). A position
with no entry under it has no row; nothing below a collapsed entry has one.
That map is the whole tree: gateway/db/store.py persists it row by row
(table state_nodes) in the block's SQLite transaction, so a node starts
without rebuilding it.

`update(changes)` computes the new root and the node diff (position -> new
content, None = row deleted) without touching the tree; `apply(diff)` folds
a diff in. Only the positions on the changed keys' paths are read or
written. Written here by hand: no maintained Python library keeps a
persistable sparse Merkle tree with this shape (the shape a board checks).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from shared.stateproof import EMPTY, inner_node, leaf_node

Entry = bytes | tuple[bytes, bytes]  # inner hash, or (key hash, value hash)
NodeDiff = dict[int, Entry | None]
_Change = tuple[int, bytes, bytes | None]  # (key as int, key hash, value hash or None)

ROOT = 1


def entry_hash(e: Entry | None) -> bytes:
    if e is None:
        return EMPTY
    if isinstance(e, tuple):
        return leaf_node(e[0], e[1])
    return e


def position(kh: bytes, depth: int) -> int:
    return (1 << depth) | (int.from_bytes(kh, "big") >> (256 - depth))


class SparseMerkleTree:
    __slots__ = ("nodes",)

    def __init__(self, nodes: dict[int, Entry] | None = None) -> None:
        self.nodes: dict[int, Entry] = nodes if nodes is not None else {}

    @classmethod
    def build(cls, items: Iterable[tuple[bytes, bytes]]) -> SparseMerkleTree:
        """The tree of (key hash, value hash) pairs, from scratch."""
        t = cls()
        t.apply(t.update({kh: vh for kh, vh in items})[1])
        return t

    def root(self) -> bytes:
        return entry_hash(self.nodes.get(ROOT))

    def __len__(self) -> int:
        return len(self.nodes)

    def leaves(self) -> dict[bytes, bytes]:
        """key hash -> value hash of every entry."""
        return dict(e for e in self.nodes.values() if isinstance(e, tuple))

    # ---- update ---------------------------------------------------------------

    def update(self, changes: Mapping[bytes, bytes | None]) -> tuple[bytes, NodeDiff]:
        """(root, node diff) of this tree with `changes` (key hash -> value
        hash, None = removed) applied; the tree itself is not changed."""
        diff: NodeDiff = {}
        if not changes:
            return self.root(), diff
        ch = sorted((int.from_bytes(kh, "big"), kh, vh) for kh, vh in changes.items())
        top = self._update(ROOT, 0, ch, 0, len(ch), diff)
        if top != self.nodes.get(ROOT):
            diff[ROOT] = top
        return entry_hash(top), diff

    def apply(self, diff: NodeDiff) -> None:
        nodes = self.nodes
        for pos, e in diff.items():
            if e is None:
                nodes.pop(pos, None)
            else:
                nodes[pos] = e

    def _update(self, pos: int, depth: int, ch: list[_Change], lo: int, hi: int,
                diff: NodeDiff) -> Entry | None:
        """New content of the subtree at `pos` (depth `depth`) after the
        changes ch[lo:hi] (all on its paths, sorted by key). Rows strictly
        below `pos` are written to `diff`; the row at `pos` is the caller's.
        Each position is visited once and only rows below a visited position
        are written, so reading `nodes` (not the diff) gives the old content."""
        nodes = self.nodes
        cur = nodes.get(pos)
        if cur.__class__ is not bytes:  # empty or one entry: nothing below, build afresh
            items: dict[bytes, tuple[int, bytes | None]] = {}
            if cur is not None:
                items[cur[0]] = (int.from_bytes(cur[0], "big"), cur[1])
            for k, kh, vh in ch[lo:hi]:
                items[kh] = (k, vh)
            return self._build(pos, depth, sorted(
                (k, kh, vh) for kh, (k, vh) in items.items() if vh is not None), diff)
        shift = 255 - depth
        a, b = lo, hi  # first change whose bit at this depth is 1
        while a < b:
            m = (a + b) >> 1
            if (ch[m][0] >> shift) & 1:
                b = m
            else:
                a = m + 1
        lpos = pos << 1
        rpos = lpos | 1
        old_l = nodes.get(lpos)
        old_r = nodes.get(rpos)
        left = self._update(lpos, depth + 1, ch, lo, a, diff) if a > lo else old_l
        right = self._update(rpos, depth + 1, ch, a, hi, diff) if a < hi else old_r
        if right is None:
            if left.__class__ is not bytes:  # one entry (or none) moves up
                if old_l is not None:
                    diff[lpos] = None
                if old_r is not None:
                    diff[rpos] = None
                return left
            rh = EMPTY
        elif right.__class__ is bytes:
            rh = right
        else:
            if left is None:  # one entry moves up
                if old_l is not None:
                    diff[lpos] = None
                if old_r is not None:
                    diff[rpos] = None
                return right
            rh = leaf_node(right[0], right[1])
        if left is None:
            lh = EMPTY
        elif left.__class__ is bytes:
            lh = left
        else:
            lh = leaf_node(left[0], left[1])
        if left != old_l:
            diff[lpos] = left
        if right != old_r:
            diff[rpos] = right
        return inner_node(lh, rh)

    def _build(self, pos: int, depth: int, items: list[tuple[int, bytes, bytes]],
               diff: NodeDiff) -> Entry | None:
        """A subtree from scratch where nothing is stored below `pos`."""
        if not items:
            return None
        if len(items) == 1:
            return items[0][1], items[0][2]
        split = _split(items, 255 - depth)
        lpos = pos << 1
        left = self._build(lpos, depth + 1, items[:split], diff)
        right = self._build(lpos | 1, depth + 1, items[split:], diff)
        if left is not None:
            diff[lpos] = left
        if right is not None:
            diff[lpos | 1] = right
        return inner_node(entry_hash(left), entry_hash(right))

    # ---- proofs ---------------------------------------------------------------

    def prove(self, kh: bytes) -> list:
        """The proof for key hash `kh` (shared/stateproof.py's format):
        [siblings from the root down (b"" for EMPTY), terminal]."""
        return prove(self.nodes.get, kh)


def prove(get: Callable[[int], Entry | None], kh: bytes) -> list:
    """The proof for `kh` from a tree read position by position through
    `get` (a dict's get, or the store's rows: only the path is read)."""
    k = int.from_bytes(kh, "big")
    pos, depth, sibs = ROOT, 0, []
    e = get(ROOT)
    while isinstance(e, bytes):
        b = (k >> (255 - depth)) & 1
        sib = get((pos << 1) | (1 - b))
        sibs.append(b"" if sib is None else entry_hash(sib))
        pos = (pos << 1) | b
        depth += 1
        e = get(pos)
    if e is None:
        return [sibs, []]
    if e[0] == kh:
        return [sibs, None]
    return [sibs, [e[0], e[1]]]


def _split(ch: list, shift: int) -> int:
    """Index of the first item (sorted by key int) whose bit at `shift` is 1."""
    lo, hi = 0, len(ch)
    while lo < hi:
        mid = (lo + hi) // 2
        if (ch[mid][0] >> shift) & 1:
            hi = mid
        else:
            lo = mid + 1
    return lo
