"""RFC 6962 Merkle trees (dual: CPython and MicroPython)."""
from hashlib import sha256

from shared import merkle


def _mth(hashes):
    """Reference: RFC 6962 MTH by recursive split at the largest power of two < n."""
    n = len(hashes)
    if n == 0:
        return sha256(b"").digest()
    if n == 1:
        return hashes[0]
    k = 1
    while k * 2 < n:
        k *= 2
    return merkle.node_hash(_mth(hashes[:k]), _mth(hashes[k:]))


def _path(hashes, m):
    """Reference: RFC 6962 PATH(m, D[n])."""
    n = len(hashes)
    if n <= 1:
        return []
    k = 1
    while k * 2 < n:
        k *= 2
    if m < k:
        return _path(hashes[:k], m) + [_mth(hashes[k:])]
    return _path(hashes[k:], m - k) + [_mth(hashes[:k])]


def _leaves(n):
    return [b"leaf-%d" % i for i in range(n)]


def test_empty_root_is_hash_of_empty_string():
    assert merkle.root([]) == sha256(b"").digest()


def test_single_leaf_root_is_leaf_hash():
    assert merkle.root([b"x"]) == sha256(b"\x00x").digest()


def test_roots_and_proofs_match_rfc_definition():
    for n in range(1, 18):
        leaves = _leaves(n)
        hashes = [merkle.leaf_hash(x) for x in leaves]
        lv = merkle.levels(hashes)
        root = merkle.root_of(lv)
        assert root == _mth(hashes), n
        for i in range(n):
            p = merkle.proof(lv, i)
            assert p == _path(hashes, i), (n, i)
            assert merkle.verify(leaves[i], i, n, p, root)


def test_rfc6962_reference_vector():
    # Certificate Transparency's reference test: 8 leaves of "", 0x00, 0x10, 0x2021, 0x3031,
    # 0x40414243, 0x5051525354555657, 0x606162636465666768696a6b6c6d6e6f
    leaves = [b"", b"\x00", b"\x10", b"\x20\x21", b"\x30\x31", b"\x40\x41\x42\x43",
              b"\x50\x51\x52\x53\x54\x55\x56\x57", bytes(range(0x60, 0x70))]
    want = bytes.fromhex("5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328")
    assert merkle.root(leaves) == want


def test_verify_never_accepts_wrong_input():
    leaves = _leaves(7)
    lv = merkle.levels([merkle.leaf_hash(x) for x in leaves])
    root = merkle.root_of(lv)
    p = merkle.proof(lv, 3)
    assert not merkle.verify(b"other", 3, 7, p, root)
    assert not merkle.verify(leaves[3], 4, 7, p, root)
    assert not merkle.verify(leaves[3], 3, 4, p, root)  # path too long for 4 leaves
    assert not merkle.verify(leaves[3], 3, 7, p[:-1], root)
    assert not merkle.verify(leaves[3], 3, 7, p + [root], root)
    assert not merkle.verify(leaves[3], 7, 7, p, root)
    assert not merkle.verify(leaves[3], -1, 7, p, root)
    assert not merkle.verify(leaves[3], 3, 7, [b"short"], root)
    assert not merkle.verify(leaves[3], 3, 7, "notalist", root)
    assert not merkle.verify(leaves[3], "3", 7, p, root)
