"""State proofs: check an account's (or a stored value's) state against a
block header's state_root, on a board (MicroPython) or a host.

The state commitment (docs/PROTOCOL.md, "State commitment") is a sparse
Merkle tree over 256-bit keys with single-leaf subtrees collapsed:
- key hash: SHA-256(b"A" || account id) for a principal,
  SHA-256(b"K" || kv key) for a stored value;
- value hash: SHA-256(leaf bytes), the leaf the ledger encodes for the entry
  (a principal: cbor([id, pubkey, last_seq, balance, ...]));
- a subtree with no entry hashes to EMPTY (32 zero bytes), one with exactly
  one entry to SHA-256(0x00 || key hash || value hash) wherever it sits, one
  with two or more to SHA-256(0x01 || left || right); bit d of the key hash
  (most significant first) picks the side at depth d.
So a tree of n random keys is about log2(n) deep and a proof carries that
many sibling hashes.

Proof (what a full node sends): [siblings, terminal]
- siblings: the sibling hashes from the root down, b"" for an EMPTY one;
- terminal: None when the key's own entry ends the path (inclusion), [] when
  the path ends in an empty subtree, [key hash, value hash] of the one other
  entry the path ends at (both: the key is absent).
`check` never raises on a malformed proof: it returns False.
"""
from hashlib import sha256

EMPTY = bytes(32)
MAX_DEPTH = 256


def account_key(device_id):
    return sha256(b"A" + device_id).digest()


def kv_key(key):
    return sha256(b"K" + key).digest()


def value_hash(leaf):
    return sha256(leaf).digest()


def leaf_node(kh, vh):
    return sha256(b"\x00" + kh + vh).digest()


def inner_node(left, right):
    return sha256(b"\x01" + left + right).digest()


def bit(kh, depth):
    return (kh[depth >> 3] >> (7 - (depth & 7))) & 1


def _fold(kh, node, sibs):
    """The root above `node` at depth len(sibs) on the path of `kh`."""
    d = len(sibs)
    while d:
        d -= 1
        s = sibs[d]
        if not isinstance(s, (bytes, bytearray)):
            return None
        if not s:
            s = EMPTY
        elif len(s) != 32:
            return None
        node = inner_node(s, node) if bit(kh, d) else inner_node(node, s)
    return node


def _same_prefix(a, b, depth):
    full = depth >> 3
    if a[:full] != b[:full]:
        return False
    rest = depth & 7
    if not rest:
        return True
    mask = (0xFF << (8 - rest)) & 0xFF
    return (a[full] & mask) == (b[full] & mask)


def check(root, kh, vh, proof):
    """True if `proof` shows that key hash `kh` holds value hash `vh` in the
    tree of `root` (vh None: that `kh` holds nothing)."""
    if not isinstance(proof, (list, tuple)) or len(proof) != 2:
        return False
    sibs, term = proof
    if not isinstance(sibs, (list, tuple)) or len(sibs) > MAX_DEPTH:
        return False
    if vh is not None:
        if term is not None:
            return False
        node = leaf_node(kh, vh)
    elif term is None:
        return False
    elif not isinstance(term, (list, tuple)):
        return False
    elif len(term) == 0:
        node = EMPTY
    elif len(term) == 2:
        okh, ovh = term
        if not (isinstance(okh, bytes) and isinstance(ovh, bytes)) or len(okh) != 32 \
                or len(ovh) != 32 or okh == kh or not _same_prefix(okh, kh, len(sibs)):
            return False
        node = leaf_node(okh, ovh)
    else:
        return False
    return _fold(kh, node, sibs) == root


def check_account(root, device_id, leaf, proof):
    """True if `leaf` (the account's leaf bytes; None: no such account) is
    the state of `device_id` under `root`."""
    return check(root, account_key(device_id), None if leaf is None else value_hash(leaf),
                 proof)


def account_balance(root, device_id, leaf, proof):
    """A board's own balance and last seq, proven: (balance, last_seq) from
    `leaf` if the proof holds for `device_id`, else None."""
    if leaf is None or not check_account(root, device_id, leaf, proof):
        return None
    from shared import cbor
    rec = cbor.loads(leaf)
    if not isinstance(rec, list) or len(rec) < 4 or rec[0] != device_id:
        return None
    return rec[3], rec[2]
