"""The state tree in the store: written with each block, loaded at start-up
without being rebuilt, checked against the head (root and leaves), compared
by `chain verify`; an older chain (sorted-leaves roots) moves to the tree at
its next block and verifies with both commitments."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from gateway.db import store
from gateway.db import verify as replay
from gateway.ledger import blocks, commitment, validate
from gateway.ledger import state as st
from shared import header, stateproof
from tests.support.gwtest import DOMAIN, Device, Node


def _chain(node: Node, alice: Device, bob: Device) -> None:
    carol = Device("carol")
    node.submit_all([carol.register(), alice.reading(2150, -2), bob.transfer(carol, 7)])
    node.produce()
    node.submit_all([alice.transfer(bob, 10), carol.reading()])
    node.produce()


def test_start_up_loads_the_stored_tree_without_rebuilding(node: Node, alice: Device, bob: Device,
                                                           monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    _chain(node, alice, bob)
    want = dict(node.state.state_tree().nodes)
    head_root = node.store.head().fields["state_root"]
    node.close()

    def no_rebuild(*a: object, **k: object) -> None:
        raise AssertionError("the tree was rebuilt at start-up")

    monkeypatch.setattr(commitment.SparseMerkleTree, "build", no_rebuild)
    led = store.open_ledger(node.cfg, create=False)
    try:
        assert led.state.tree is not None and led.state.tree.nodes == want
        assert led.state.root() == head_root
        monkeypatch.undo()
        assert want == commitment.SparseMerkleTree.build(
            st.tree_items(led.state.devices, led.state.kv)).nodes
        assert replay.verify_chain(led.store, led.genesis).ok
    finally:
        led.store.close()


def test_a_balance_proof_checks_against_the_signed_header(node: Node, alice: Device,
                                                          bob: Device) -> None:
    _chain(node, alice, bob)
    fields, _ = header.open_signed(node.genesis.authority, node.store.head().signed_header)
    leaf, proof = node.state.prove(alice.id)
    rec = node.state.get(alice.id)
    assert stateproof.account_balance(fields["state_root"], alice.id, leaf, proof) == (
        rec.balance, rec.last_seq)
    stranger = Device("stranger")
    leaf, proof = node.state.prove(stranger.id)
    assert leaf is None and stateproof.check_account(fields["state_root"], stranger.id, None,
                                                     proof)


def _tamper(path: Path, sql: str, *params: object) -> None:
    db = sqlite3.connect(path)
    with db:
        assert db.execute(sql, params).rowcount == 1
    db.close()


@pytest.mark.parametrize("row", ["leaf", "inner"])
def test_a_tree_row_changed_by_hand_is_refused_and_reported(node: Node, alice: Device,
                                                            bob: Device, row: str) -> None:
    _chain(node, alice, bob)
    g = node.genesis
    node.close()
    path = node.cfg.db_path
    if row == "leaf":  # alice's entry: same key, another value hash (the root row is untouched)
        kh = stateproof.account_key(alice.id)
        _tamper(path, "UPDATE state_nodes SET hash = ? WHERE key = ?", bytes(32), kh)
    else:
        _tamper(path, "UPDATE state_nodes SET hash = ? WHERE pos = ?", bytes(32), b"\x02")
    if row == "leaf":
        with pytest.raises(store.StoreError) as e:
            store.open_ledger(node.cfg, create=False)
        assert e.value.reason == store.STATE_ROOT_MISMATCH and "height 2" in e.value.detail
    with store.Store(path, readonly=True) as s:
        rep = replay.verify_chain(s, g)
    assert not rep.ok and rep.error is not None
    assert rep.error.reason == replay.STATE_MISMATCH and "state tree" in rep.error.detail


def _sorted_chain(data_dir: Path, alice: Device, bob: Device) -> Node:
    """A chain as a node before the state tree wrote it: SORTED roots, no tree rows,
    no state_tree_from, no consensus section (version-1 headers)."""
    node = Node(data_dir, {alice.pub: 1000, bob.pub: 500}, consensus="")
    led = node.ledger
    g = led.genesis
    node.close()
    node.cfg.db_path.unlink()
    s = store.Store(node.cfg.db_path)
    fields = g.header_fields(st.SORTED)
    b0 = blocks.Block(fields, header.encode(fields),
                      header.sign(led.authority_priv, g.authority_id, fields), [], [],
                      dict(g.state(st.SORTED).devices), [], [[]])
    s.init_chain(g, b0)
    db = sqlite3.connect(node.cfg.db_path)
    with db:
        db.execute("DELETE FROM meta WHERE key = ?", (store.STATE_TREE_FROM,))
    db.close()
    state, head = g.state(st.SORTED), s.head()
    carol = Device("carol")
    for msgs in ([carol.register(), alice.transfer(bob, 3)], [bob.reading(), carol.reading()]):
        txs = [validate.check_stateless(m, DOMAIN) for m in msgs]
        b = blocks.build_block(head, txs, state, head.time + 1, led.authority_priv,
                               g.authority_id, domain=DOMAIN, rules=g.rules())
        assert b.nodes is None and b.fields["state_root"] == st.state_root(
            {**state.devices, **b.diff})
        s.commit_block(b)
        state.apply_diff(b.diff, b.kv_diff)
        head = s.head()
    s.close()
    return node


def test_an_older_chain_continues_with_the_tree_and_verifies(tmp_path: Path, alice: Device,
                                                             bob: Device) -> None:
    _sorted_chain(tmp_path, alice, bob)
    with store.Store(tmp_path / "chain.db", readonly=True) as s:
        assert s.meta(store.STATE_TREE_FROM) is None
        before = replay.verify_chain(s, store.gen.load(tmp_path / "genesis.toml"))
    assert before.ok and before.blocks == 3
    node = Node(tmp_path, create=False)  # a node of this version opens it: the tree from 3 on
    assert node.store.meta(store.STATE_TREE_FROM) == 3 and node.state.tree is not None
    alice.seq = bob.seq = 1
    node.submit_all([alice.transfer(bob, 5), bob.reading()])
    b = node.produce()
    assert b.height == 3 and b.fields["state_root"] == st.tree_root(node.state.devices)
    leaf, proof = node.state.prove(bob.id)
    assert stateproof.account_balance(b.fields["state_root"], bob.id, leaf, proof)[0] == 508
    rep = replay.verify_chain(node.store, node.genesis)
    assert rep.ok and rep.blocks == 4 and rep.state_root == b.fields["state_root"], rep.error
    node.close()
    node = Node(tmp_path, create=False)  # and starts again from its stored tree
    assert node.state.root() == b.fields["state_root"]
    node.close()


def test_chain_prove_gives_the_proof_a_board_checks(
        node: Node, alice: Device, bob: Device, capsys: pytest.CaptureFixture[str]) -> None:
    from tools import cli

    _chain(node, alice, bob)
    head = node.store.head()
    with store.Store(node.cfg.db_path, readonly=True) as s:
        h, leaf, proof = s.prove_account(alice.id)
    assert h.height == head.height == 2
    assert (leaf, proof) == node.state.prove(alice.id)
    fields, _ = header.open_signed(node.genesis.authority, h.signed_header)
    assert stateproof.account_balance(fields["state_root"], alice.id, leaf, proof)[0] == 990
    d = str(node.data_dir)
    assert cli.main(["chain", "prove", alice.id.hex(), "--data-dir", d]) == 0
    out = capsys.readouterr().out
    assert "balance     990 (last seq 2)" in out and "check       ok" in out
    assert cli.main(["chain", "prove", Device("nobody").id.hex(), "--data-dir", d]) == 0
    assert "none (no such principal)" in capsys.readouterr().out
