"""The state tree (gateway/ledger/commitment.py): incremental updates give
the root of the tree's definition computed from scratch, only the changed
paths are touched, and every proof it gives checks with shared/stateproof.py
(inclusion and non-inclusion), while altered proofs do not."""

from __future__ import annotations

import random
from hashlib import sha256

from gateway.ledger import state as st
from gateway.ledger.commitment import SparseMerkleTree
from shared import stateproof as sp


def _bit(kh: bytes, d: int) -> int:
    return (kh[d // 8] >> (7 - d % 8)) & 1


def reference_root(items: dict[bytes, bytes], depth: int = 0) -> bytes:
    """The definition, by recursion over the set of entries (no positions, no diffs)."""
    if not items:
        return bytes(32)
    if len(items) == 1:
        (kh, vh), = items.items()
        return sha256(b"\x00" + kh + vh).digest()
    left = {k: v for k, v in items.items() if not _bit(k, depth)}
    right = {k: v for k, v in items.items() if _bit(k, depth)}
    return sha256(b"\x01" + reference_root(left, depth + 1)
                  + reference_root(right, depth + 1)).digest()


def _h(x: object) -> bytes:
    return sha256(repr(x).encode()).digest()


def test_incremental_updates_equal_the_definition() -> None:
    rnd = random.Random(14)
    tree = SparseMerkleTree()
    live: dict[bytes, bytes] = {}
    keys = [_h(i) for i in range(300)]
    for block in range(40):
        changes: dict[bytes, bytes | None] = {}
        for _ in range(rnd.randrange(0, 25)):
            k = rnd.choice(keys)
            changes[k] = None if rnd.random() < 0.3 else _h((block, k))
        root, diff = tree.update(changes)
        before = dict(tree.nodes)
        assert tree.nodes == before  # update() alone changes nothing
        tree.apply(diff)
        for k, v in changes.items():
            if v is None:
                live.pop(k, None)
            else:
                live[k] = v
        assert root == tree.root() == reference_root(live), block
        assert tree.nodes == SparseMerkleTree.build(live.items()).nodes
        assert tree.leaves() == live
    assert live and len(tree) < 3 * len(live)


def test_an_update_touches_only_the_changed_paths() -> None:
    tree = SparseMerkleTree.build((_h(i), _h(-i)) for i in range(4096))
    _, diff = tree.update({_h(7): _h("new")})
    # one entry's path: about log2(4096) = 12 inner nodes plus the entry
    assert 5 <= len(diff) <= 30
    _, diff = tree.update({})
    assert diff == {}


def test_empty_and_single_entry_roots() -> None:
    assert SparseMerkleTree().root() == bytes(32) == st.State().root()
    t = SparseMerkleTree.build([(_h(1), _h(2))])
    assert t.root() == sha256(b"\x00" + _h(1) + _h(2)).digest()


def test_proofs_check_for_present_and_absent_keys() -> None:
    items = {_h(i): _h(-i) for i in range(500)}
    tree = SparseMerkleTree.build(items.items())
    root = tree.root()
    for i in range(0, 500, 7):
        kh = _h(i)
        proof = tree.prove(kh)
        assert sp.check(root, kh, items[kh], proof)
        assert not sp.check(root, kh, _h("other"), proof)
        assert not sp.check(root, kh, None, proof)
    kinds = set()
    for i in range(1000, 1200):
        kh = _h(i)
        proof = tree.prove(kh)
        kinds.add(len(proof[1]))
        assert sp.check(root, kh, None, proof)
        assert not sp.check(root, kh, _h(0), proof)
    assert kinds == {0, 2}  # both ways to be absent occur: an empty subtree, another entry


def test_altered_proofs_fail_without_raising() -> None:
    items = {_h(i): _h(-i) for i in range(64)}
    tree = SparseMerkleTree.build(items.items())
    root, kh = tree.root(), _h(5)
    sibs, term = tree.prove(kh)
    bad = [
        [sibs[:-1], term], [[*sibs, b""], term], [[bytes(31)] + sibs[1:], term],
        [[b"\x01" * 32] + sibs[1:], term], [sibs], "x", None, [sibs, [b"", b""]],
        [sibs, [kh, items[kh]]], [[1] + sibs[1:], term], [sibs * 100, term],
    ]
    for p in bad:
        assert not sp.check(root, kh, items[kh], p), p
        assert not sp.check(root, kh, None, p), p


def test_state_root_is_the_tree_over_principals_and_stored_values(alice, bob) -> None:
    devs = {alice.id: st.DeviceRecord(alice.pub, 3, 10), bob.id: st.DeviceRecord(bob.pub, 0, 5)}
    kv = {b"o/1": b"\x01", b"o/2": b"\x02"}
    s = st.State(devs, kv)
    want = reference_root({kh: vh for kh, vh in st.tree_items(devs, kv)})
    assert s.root() == want == st.tree_root(devs, kv)
    leaf, proof = s.prove(alice.id)
    assert sp.account_balance(s.root(), alice.id, leaf, proof) == (10, 3)
    assert sp.account_balance(s.root(), bob.id, leaf, proof) is None
    leaf, proof = s.kv_prove(b"o/2")
    assert sp.check(s.root(), sp.kv_key(b"o/2"), sp.value_hash(leaf), proof)


def test_overlay_root_then_apply_diff_reuses_the_computed_nodes(alice, bob) -> None:
    s = st.State({alice.id: st.DeviceRecord(alice.pub, 0, 10)})
    s.root()
    v = st.StateOverlay(s)
    v.put(bob.id, st.DeviceRecord(bob.pub, 0, 0))
    v.kv_put(b"k", b"v")
    r = v.root()
    assert v.nodes and s.root() != r
    s.apply_diff(v.changed, v.kv_changed)
    assert s.root() == r == st.tree_root(s.devices, s.kv)
    # a diff other than the one last rooted is computed afresh, not taken from the cache
    v2 = st.StateOverlay(s)
    v2.put(alice.id, st.DeviceRecord(alice.pub, 1, 9))
    v2.root()
    s.apply_diff({bob.id: st.DeviceRecord(bob.pub, 4, 0)}, {b"k": None})
    assert s.root() == st.tree_root(s.devices, s.kv)


def test_a_sorted_state_keeps_the_old_root(alice) -> None:
    devs = {alice.id: st.DeviceRecord(alice.pub, 0, 10)}
    s = st.State(devs, commitment=st.SORTED)
    assert s.root() == st.state_root(devs) != st.tree_root(devs)
    s.use_tree()
    assert s.root() == st.tree_root(devs)


def test_the_dual_tests_proof_vectors_are_what_the_gateway_makes() -> None:
    """tests/shared/stateproof_vectors.py (checked under MicroPython) is the
    proof this tree gives for a board's account among 100,000."""
    from pathlib import Path

    from tests.support import stateproof_vectors as gen

    path = Path(__file__).resolve().parent.parent / "shared" / "stateproof_vectors.py"
    assert path.read_text() == gen.module_text()
