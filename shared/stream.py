"""Off-chain service data (docs/MARKET.md): the signed readings a supplier
streams on tl/<domain>/data/<supplier hex>/<agreement hex> and the Merkle commitment of a
batch of them.

A reading is a COSE_Sign1 by the supplier (kid = supplier id) whose payload
is the canonical CBOR map {1: agreement id, 2: index, 3: value, 4: scale}.
A batch commitment is the RFC 6962 root over the batch's readings, each
leaf being the whole COSE bytes of one reading.

`fold` folds leaves into the root as they are produced, keeping only the
stack of perfect subtrees (at most log2(n) hashes): a board never holds the
readings of a batch to commit them, only that list (`Batch` wraps it for the
host). `stack_root` of it equals merkle.root(readings).
"""
from shared import cbor, cose, merkle

K_AGREEMENT = 1
K_INDEX = 2
K_VALUE = 3
K_SCALE = 4


def reading(private_key, supplier, agreement, index, value, scale):
    """Signed reading bytes."""
    return cose.sign1(private_key, cbor.dumps(
        {K_AGREEMENT: agreement, K_INDEX: index, K_VALUE: value, K_SCALE: scale}), supplier)


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


def open_reading(message, public_key):
    """Verify a reading under the supplier's key and decode it:
    (agreement, index, value, scale). Raises a TLError (bad-cose,
    bad-signature, bad-cbor, bad-tx) otherwise."""
    from shared import errors

    s1 = cose.parse1(message)
    cose.check1(public_key, s1)
    m = cbor.loads(s1.payload)
    if not isinstance(m, dict) or len(m) != 4:
        raise errors.TxError("bad-reading")
    a, i, v, sc = m.get(K_AGREEMENT), m.get(K_INDEX), m.get(K_VALUE), m.get(K_SCALE)
    if not isinstance(a, bytes) or len(a) != 16:
        raise errors.TxError("bad-reading")
    for x in (i, v, sc):
        if not isinstance(x, int) or isinstance(x, bool):
            raise errors.TxError("bad-reading")
    if i < 0 or not -20 <= sc <= 20:
        raise errors.TxError("bad-reading")
    return a, i, v, sc
