"""The Merkle commitment of a batch of off-chain readings (docs/MARKET.md,
shared/stream.py): the RFC 6962 root over the batch's readings, each leaf
being the whole COSE bytes of one reading, computed as they are produced.

`fold` keeps only the stack of perfect subtrees (at most log2(n) hashes): a
board never holds the readings of a batch to commit them, only that list
(`Batch` wraps it for the host). `stack_root` of it equals
merkle.root(readings). A module of its own, apart from shared/stream.py:
a supplier board loads it for a moment after each reading, a buyer never.
"""
from shared import merkle


def fold(stack, leaf):
    """Fold `leaf` into a batch kept as its stack of perfect subtrees, a list
    [(hash, size)] with sizes strictly decreasing powers of two (at most
    log2(n) hashes; a board keeps only this list between readings)."""
    h, size = merkle.leaf_hash(leaf), 1
    while stack and stack[-1][1] == size:
        h = merkle.node_hash(stack.pop()[0], h)
        size += size
    stack.append((h, size))


def stack_root(stack):
    """The RFC 6962 root of the leaves folded into `stack`."""
    if not stack:
        return merkle.EMPTY_ROOT
    h = stack[-1][0]
    for i in range(len(stack) - 2, -1, -1):
        h = merkle.node_hash(stack[i][0], h)
    return h


class Batch:
    """Incremental RFC 6962 root of a sequence of leaves."""

    def __init__(self):
        self._stack = []  # fold()'s stack
        self.count = 0

    def add(self, leaf):
        fold(self._stack, leaf)
        self.count += 1

    def root(self):
        return stack_root(self._stack)
