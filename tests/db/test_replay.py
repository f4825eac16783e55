"""`verify_chain` passes on a good chain and fails, with the height, on any
tampered row or misbehaving proposer."""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Callable

import pytest

from gateway.db import genesis_files as gen
from gateway.db import verify as replay
from gateway.db.store import LOW_S_FROM, Store
from gateway.ledger import blocks
from shared import cbor, commit_gateway, cose, header, p256
from shared import tx as txm
from tests.support.gwtest import DOMAIN, Device, Node, key


@pytest.fixture
def chain(node: Node, alice: Device, bob: Device) -> Node:
    """Blocks 1..4 with registers, readings, transfers (ok and failed), fees."""
    carol = Device("carol")
    node.submit_all([carol.register(), alice.reading(1), bob.transfer(carol, 20, fee=1)])
    node.produce()
    node.submit_all([carol.reading(2), carol.transfer(alice, 5), alice.transfer(bob, 10**5)])
    node.produce()
    node.produce()  # empty block
    node.submit_all([alice.transfer(carol, 100, fee=3), carol.reading(), bob.reading(9)])
    node.produce()
    return node


def verify(node: Node, g: gen.Genesis | None = None) -> replay.Report:
    with Store(node.store.path, readonly=True) as s:
        return replay.verify_chain(s, g or node.genesis)


def test_good_chain_verifies(chain: Node) -> None:
    rep = verify(chain)
    assert rep.ok and rep.error is None
    assert (rep.blocks, rep.txs, rep.head_height) == (5, 9, 4)
    assert rep.head_hash == chain.store.head().hash
    assert rep.state_root == chain.state.root() == chain.store.head().fields["state_root"]
    assert rep.devices == 4


def tamper(node: Node, sql: str, *args: object) -> None:
    db = sqlite3.connect(node.store.path)
    with db:
        cur = db.execute(sql, args)
        assert cur.rowcount >= 1
    db.close()


def failed(node: Node, height: int, reason: str, g: gen.Genesis | None = None) -> replay.ChainError:
    rep = verify(node, g)
    assert not rep.ok
    e = rep.error
    assert e is not None
    assert (e.height, e.reason) == (height, reason), str(e)
    return e


def _tx_at(node: Node, height: int, idx: int) -> bytes:
    return node.store.block_txs(height)[idx].id


def test_balance_edited(chain: Node, alice: Device) -> None:
    tamper(chain, "UPDATE devices SET balance = balance + 1 WHERE id = ?", alice.id)
    e = failed(chain, 4, replay.STATE_MISMATCH)
    assert alice.id.hex() in e.detail


def test_seq_edited(chain: Node, bob: Device) -> None:
    tamper(chain, "UPDATE devices SET last_seq = 0 WHERE id = ?", bob.id)
    failed(chain, 4, replay.STATE_MISMATCH)


def test_device_inserted(chain: Node) -> None:
    mallory = Device("mallory")
    tamper(chain, "INSERT INTO devices VALUES (?, ?, 0, 1000000, 'device', 'active', x'', 0, "
           "'', x'')", mallory.id, mallory.pub)
    failed(chain, 4, replay.STATE_MISMATCH)


def test_tx_bytes_altered(chain: Node) -> None:
    tid = _tx_at(chain, 2, 1)
    msg = chain.store.get_tx(tid).message
    bad = msg[:-1] + bytes([msg[-1] ^ 1])
    tamper(chain, "UPDATE txs SET message = ? WHERE id = ?", bad, tid)
    failed(chain, 2, replay.TX_ID_MISMATCH)
    # also rewrite the id: now the signature is what fails
    tamper(chain, "UPDATE txs SET id = ? WHERE id = ?", txm.tx_id(bad), tid)
    e = failed(chain, 2, replay.BAD_TX)
    assert "bad-signature" in e.detail


def test_receipt_status_edited(chain: Node) -> None:
    tamper(chain, "UPDATE txs SET status = 0, reason = '' WHERE id = ?", _tx_at(chain, 2, 2))
    failed(chain, 2, replay.RECEIPT_MISMATCH)


def test_tx_row_fields_edited(chain: Node) -> None:
    tamper(chain, "UPDATE txs SET seq = seq + 1 WHERE id = ?", _tx_at(chain, 4, 1))
    failed(chain, 4, replay.TX_ROW_MISMATCH)


def test_txs_reordered(chain: Node) -> None:
    a, b = _tx_at(chain, 4, 1), _tx_at(chain, 4, 2)
    tamper(chain, "UPDATE txs SET idx = -1 WHERE id = ?", a)
    tamper(chain, "UPDATE txs SET idx = 1 WHERE id = ?", b)
    tamper(chain, "UPDATE txs SET idx = 2 WHERE id = ?", a)
    failed(chain, 4, replay.TX_ROOT_MISMATCH)


def test_tx_deleted(chain: Node) -> None:
    tamper(chain, "DELETE FROM txs WHERE id = ?", _tx_at(chain, 1, 1))
    failed(chain, 1, replay.BAD_ROW)


def test_block_deleted(chain: Node) -> None:
    tamper(chain, "DELETE FROM blocks WHERE height = 3")
    failed(chain, 3, replay.MISSING_BLOCK)


def test_header_signature_altered(chain: Node) -> None:
    signed = chain.store.get_block(2).signed_header
    tamper(chain, "UPDATE blocks SET signed = ? WHERE height = 2",
           signed[:-1] + bytes([signed[-1] ^ 1]))
    failed(chain, 2, replay.BAD_HEADER_SIGNATURE)


def test_header_column_altered(chain: Node) -> None:
    tamper(chain, "UPDATE blocks SET header = ? WHERE height = 3",
           chain.store.get_block(2).header_bytes)
    failed(chain, 3, replay.HEADER_MISMATCH)


def test_hash_column_altered(chain: Node) -> None:
    tamper(chain, "UPDATE blocks SET hash = ? WHERE height = 3", bytes(32))
    failed(chain, 3, replay.HEADER_MISMATCH)


def _reforge(node: Node, height: int, change: Callable[[dict], None],
             priv: bytes | None = None) -> None:
    """Rewrite a stored header with changed fields, re-signed (by the authority
    unless another key is given)."""
    f = dict(node.store.get_block(height).fields)
    change(f)
    signer = priv or node.ledger.authority_priv
    hb = header.encode(f)
    tamper(node, "UPDATE blocks SET header = ?, signed = ?, hash = ?, time = ? WHERE height = ?",
           hb, header.sign(signer, f["proposer"], f), header.block_hash(hb), f["time"], height)
    # and its certificate: the signer's vote (the authority is the validator set)
    vote = commit_gateway.vote(signer, p256.public_key(signer), header.block_hash(hb))
    tamper(node, "UPDATE certificates SET cert = ? WHERE height = ?",
           cbor.dumps(commit_gateway.certificate({0: vote})), height)


def test_block_signed_by_another_key(chain: Node) -> None:
    _reforge(chain, 2, lambda f: None, key("mallory")[0])
    failed(chain, 2, replay.BAD_HEADER_SIGNATURE)


def test_state_root_forged(chain: Node) -> None:
    _reforge(chain, 2, lambda f: f.update(state_root=bytes(32)))
    failed(chain, 2, replay.STATE_ROOT_MISMATCH)


def test_receipts_root_forged(chain: Node) -> None:
    _reforge(chain, 1, lambda f: f.update(receipts_root=bytes(32)))
    failed(chain, 1, replay.RECEIPTS_ROOT_MISMATCH)


def test_stored_receipt_tree_edited(chain: Node) -> None:
    """Resends' proofs are read from the stored receipts tree: a hash changed
    there is found, and a block without a stored tree (committed before
    they were stored) still verifies."""
    tamper(chain, "DELETE FROM receipt_trees WHERE height = 1")
    assert verify(chain).ok
    tree = chain.store.receipt_tree(2)
    assert tree is not None
    tamper(chain, "UPDATE receipt_trees SET nodes = ? WHERE height = 2", bytes(32) + tree[32:])
    failed(chain, 2, replay.RECEIPT_TREE_MISMATCH)


def test_time_backwards(chain: Node) -> None:
    _reforge(chain, 4, lambda f: f.update(time=f["time"] - 10))
    failed(chain, 4, replay.TIME_BACKWARDS)


def test_broken_prev_link(chain: Node) -> None:
    _reforge(chain, 3, lambda f: f.update(prev_hash=bytes(32)))
    failed(chain, 3, replay.BAD_PREV_HASH)


def test_wrong_height_in_header(chain: Node) -> None:
    _reforge(chain, 3, lambda f: f.update(height=7))
    failed(chain, 3, replay.BAD_HEADER)


def test_proposer_included_a_forged_tx(node: Node, alice: Device, bob: Device) -> None:
    """The builder trusts ingress; replay does not: a forged tx signed by the
    authority's block is still caught, at its height."""
    node.submit_all([alice.reading()])
    node.produce()
    forged = cose.sign1(bob.priv, txm.payload(txm.TYPE_TRANSFER, DOMAIN, 2, 0,
                                              {1: bob.id, 2: 999}), alice.id)
    led = node.ledger
    b = blocks.build_block(led.head, [txm.decode(forged)], led.state, 0, led.authority_priv,
                           led.genesis.authority_id, domain=DOMAIN, rules=led.rules)
    node.store.commit_block(b)
    e = failed(node, 2, replay.BAD_TX)
    assert "bad-signature" in e.detail


def test_other_genesis(chain: Node, alice: Device) -> None:
    g = chain.genesis
    accounts = dict(g.accounts)
    accounts[alice.id] = gen.Account(alice.pub, 10**6)
    other = dataclasses.replace(g, accounts=accounts)
    failed(chain, 0, replay.GENESIS_MISMATCH, other)
    # same file but the store's digest row removed: block 0 itself is compared
    tamper(chain, "DELETE FROM meta WHERE key = 'genesis'")
    failed(chain, 0, replay.GENESIS_MISMATCH, other)
    assert verify(chain).ok


def test_empty_store(node: Node) -> None:
    tamper(node, "DELETE FROM blocks")
    failed(node, 0, replay.EMPTY_CHAIN)


# -- chains stored before the low-s rule (docs/PROTOCOL.md, "Low s") ----------

N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


@pytest.fixture
def high_s_chain(tmp_path, monkeypatch: pytest.MonkeyPatch) -> Node:
    """A chain whose every signature (headers, txs) has high s, as the signers
    before the rule made half of them, stored without the LOW_S_FROM mark."""
    low_signer = p256.sign_digest

    def high_signer(priv: bytes, digest: bytes) -> bytes:
        sig = low_signer(priv, digest)
        return sig[:32] + (N - int.from_bytes(sig[32:], "big")).to_bytes(32, "big")

    monkeypatch.setattr(p256, "sign_digest", high_signer)
    monkeypatch.setattr(cose, "_sign", None)  # sign through p256 on CPython too
    monkeypatch.setattr(cose, "legacy_high_s", True)  # the old admission took them
    node = Node(tmp_path / "old", {Device("alice").pub: 1000})
    alice, carol = Device("alice"), Device("carol")
    node.submit_all([carol.register(), alice.reading(1), alice.transfer(carol, 5)])
    node.produce()
    node.submit_all([carol.reading(2)])
    node.produce()
    tamper(node, "DELETE FROM meta WHERE key = ?", LOW_S_FROM)
    node.close()
    monkeypatch.undo()
    return node


def test_chain_stored_before_the_low_s_rule_verifies(high_s_chain: Node) -> None:
    assert cose.legacy_high_s is False
    rep = verify(high_s_chain)
    assert rep.ok, rep.error
    assert (rep.head_height, rep.txs) == (2, 4)
    assert cose.legacy_high_s is False  # replay leaves the rule on


def test_low_s_mark_makes_replay_refuse_high_s(high_s_chain: Node) -> None:
    tamper(high_s_chain, "INSERT INTO meta (key, value) VALUES (?, 1)", LOW_S_FROM)
    e = failed(high_s_chain, 1, replay.BAD_HEADER_SIGNATURE)
    assert "high-s" in e.detail
    assert cose.legacy_high_s is False


def test_opening_an_old_chain_marks_where_the_rule_starts(high_s_chain: Node,
                                                           tmp_path) -> None:
    reopened = Node(high_s_chain.data_dir, create=False)
    assert reopened.store.meta(LOW_S_FROM) == 3  # head 2 + 1
    dave = Device("dave")
    reopened.submit_all([dave.register()])
    reopened.produce()
    reopened.close()
    rep = verify(reopened)
    assert rep.ok, rep.error
    assert rep.head_height == 3
