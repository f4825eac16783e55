"""Block building: roots recomputed independently, every receipt proof checks
against the signed header with the authority key (as the firmware does)."""

from __future__ import annotations

import pytest

from gateway.db import genesis_files as genesis
from gateway.ledger import blocks
from gateway.ledger import state as st
from shared import errors, header, merkle, messages
from shared import tx as txm
from tests.support.gwtest import DOMAIN, T0, Device, Node, key


def check_block(node: Node, b: blocks.Block, prev_state: dict) -> None:
    g = node.genesis
    fields, hbytes = header.open_signed(g.authority, b.signed_header)
    assert fields == b.fields and hbytes == b.header_bytes
    assert b.hash == header.block_hash(hbytes)
    assert fields["proposer"] == g.authority_id and fields["domain"] == DOMAIN
    # independent recomputation
    assert fields["tx_root"] == merkle.root([t.message for t in b.txs])
    leaves = [messages.receipt_leaf(r.tx_id, r.status, r.reason, r.events) for r in b.receipts]
    assert fields["receipts_root"] == merkle.root(leaves)
    kv = {**g.state().kv, **b.kv_diff}  # the genesis validator set (no market values here)
    assert fields["state_root"] == st.tree_root({**prev_state, **b.diff}, kv)
    assert [r.tx_id for r in b.receipts] == [txm.tx_id(t.message) for t in b.txs]
    for i, t in enumerate(b.txs):
        m = messages.parse(b.receipt_message(i))
        assert m[messages.M_TX] == t.id and m[messages.M_SEQ] == t.seq
        assert messages.check_receipt(m, g.authority)["height"] == b.height
        other = key("not-the-authority")[1]
        with pytest.raises(errors.TLError):
            messages.check_receipt(m, other)


def test_block_roots_and_every_receipt_proof(node: Node, alice: Device, bob: Device) -> None:
    devs = [Device("b%d" % i) for i in range(6)]
    msgs = [d.register() for d in devs] + [alice.transfer(d, 10) for d in devs]
    msgs += [d.reading(i) for i, d in enumerate(devs)] + [bob.transfer(alice, 10**6)]
    node.submit_all(msgs)
    prev = dict(node.state.devices)
    b = node.produce()
    assert len(b.txs) == len(msgs) and not b.dropped
    assert b.receipts[-1].status == messages.STATUS_FAILED
    assert b.receipts[-1].reason == errors.INSUFFICIENT_FUNDS
    check_block(node, b, prev)
    assert b.height == 1 and b.fields["prev_hash"] == node.store.get_block(0).hash


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8, 13, 17, 33])
def test_proofs_for_many_block_sizes(node: Node, n: int) -> None:
    devs = [Device("s%d" % i) for i in range(n)]
    node.submit_all(d.register() for d in devs)
    prev = dict(node.state.devices)
    b = node.produce()
    assert len(b.receipts) == n
    check_block(node, b, prev)


def test_empty_block(node: Node) -> None:
    prev = dict(node.state.devices)
    b = node.produce()
    assert b.txs == [] and b.diff == {}
    assert b.fields["tx_root"] == b.fields["receipts_root"] == merkle.EMPTY_ROOT
    check_block(node, b, prev)


def test_dropped_at_execution_and_state_untouched(node: Node, alice: Device, bob: Device) -> None:
    led = node.ledger
    # both pass ingress separately, but the second's fee is no longer covered
    t1 = txm.decode(bob.transfer(alice, 500))
    t2 = txm.decode(bob.reading(fee=1))
    t3 = txm.decode(alice.reading())
    t4 = txm.decode(alice.reading(seq=1))
    before = dict(led.state.devices)
    b = blocks.build_block(led.head, [t1, t2, t3, t4], led.state, T0 + 5, led.authority_priv,
                           led.genesis.authority_id, domain=DOMAIN, rules=led.rules)
    assert led.state.devices == before
    assert b.txs == [t1, t3]
    assert [(t, e.reason) for t, e in b.dropped] == [(t2, errors.INSUFFICIENT_FUNDS),
                                                     (t4, errors.REPLAY)]


def test_time_never_goes_backwards(node: Node) -> None:
    led = node.ledger
    b = blocks.build_block(led.head, [], led.state, T0 - 100, led.authority_priv,
                           led.genesis.authority_id, domain=DOMAIN)
    assert b.time == T0


def test_genesis_block_is_deterministic(node: Node) -> None:
    g = node.genesis
    priv = genesis.load_authority_key(node.cfg.key_file, g)
    b1, b2 = blocks.genesis_block(g, priv), blocks.genesis_block(g, priv)
    assert b1.signed_header == b2.signed_header
    stored = node.store.get_block(0)
    assert stored is not None and stored.signed_header == b1.signed_header
    f = b1.fields
    assert f["height"] == 0 and f["prev_hash"] == bytes(32) and f["time"] == T0
    assert f["state_root"] == st.tree_root(g.state().devices, g.state().kv)
    assert header.open_signed(g.authority, b1.signed_header)[0] == f
