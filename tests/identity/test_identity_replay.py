"""`verify_chain` replays a whole identity lifecycle, with the registry
lookup, and catches a tampered owner / rights / status / key row."""

from __future__ import annotations

import sqlite3

import pytest

from gateway.db import verify as replay
from gateway.db.store import Store
from gateway.identity import statements as itx
from gateway.ledger import blocks, consensus
from gateway.ledger.state import RIGHT_SUBMIT, StateOverlay, claimed_device
from shared import errors, header, merkle, messages
from shared import tx as txm
from tests.support.gwtest import Device
from tests.support.idtest import COORD_HW, FULL_HW, LIGHT_HW, World


@pytest.fixture
def life(world: World) -> World:
    """register(registry) -> claim -> admit -> read -> rotate -> transfer ->
    revoke -> recover, plus nodes."""
    w = world
    s, p = w.sensor, w.plug
    w.commit(w.claim(s), w.claim(p))
    w.commit(w.grant(s, w.carol, "read"), s.reading(), p.reading())
    new = Device("sensor-2")
    w.commit(w.rotate(s, new))
    s.priv, s.pub = new.priv, new.pub
    w.commit(s.reading(), w.transfer(s, w.bob))
    w.commit(w.grant(s, w.owner, "read", by=w.bob), w.revoke(p, p, RIGHT_SUBMIT))
    w.commit(w.retire(p, "revoke"))
    w.commit(w.recover(p, Device("plug-2")), w.retire(s, "decommission", by=w.bob))
    cert = itx.node_certificate(w.owner, "demo", w.cam.id)
    w.commit(w.claim(w.cam))
    w.commit(w.join(w.cam, FULL_HW, cert=cert), w.join(w.bob, COORD_HW))
    p.priv, p.pub, p.seq = Device("plug-2").priv, Device("plug-2").pub, 0
    w.commit(w.grant(p, p, RIGHT_SUBMIT, with_key=False))
    w.commit(w.join(p, LIGHT_HW))
    w.commit(w.assign(w.bob, p, w.cam))
    return w


def verify(w: World, registry: object = "same") -> replay.Report:
    reg = w.registry if registry == "same" else registry
    with Store(w.node.store.path, readonly=True) as s:
        return replay.verify_chain(s, w.node.genesis, reg)


def tamper(w: World, sql: str, *args: object) -> None:
    db = sqlite3.connect(w.node.store.path)
    with db:
        assert db.execute(sql, args).rowcount >= 1
    db.close()


def failed(w: World, reason: str, **kw: object) -> replay.ChainError:
    rep = verify(w, **kw)
    assert not rep.ok and rep.error is not None
    assert rep.error.reason == reason, str(rep.error)
    return rep.error


def test_lifecycle_chain_verifies(life: World) -> None:
    rep = verify(life)
    assert rep.ok, str(rep.error)
    head = life.node.store.head()
    assert rep.head_height == head.height == 12
    assert rep.state_root == life.node.state.root() == head.fields["state_root"]
    # the stored state round-trips every identity field
    assert dict(life.node.store.devices()) == life.node.state.devices
    with Store(life.node.store.path, readonly=True) as s:
        assert s.load_state().root() == rep.state_root


def test_verify_needs_the_registry_for_claims(life: World) -> None:
    e = failed(life, replay.BAD_TX, registry=None)
    assert e.height == 1 and "not-in-registry" in e.detail
    e = failed(life, replay.BAD_TX, registry=lambda pub: None)
    assert e.height == 1


def test_tampered_owner_row(life: World) -> None:
    tamper(life, "UPDATE devices SET owner = ? WHERE id = ?", life.carol.id, life.sensor.id)
    e = failed(life, replay.STATE_MISMATCH)
    assert life.sensor.id.hex() in e.detail


def test_tampered_rights_rows(life: World) -> None:
    # a right added
    tamper(life, 'INSERT INTO rights (device, principal, "right") VALUES (?, ?, ?)',
           life.plug.id, life.carol.id, "read")
    failed(life, replay.STATE_MISMATCH)


def test_tampered_rights_row_changed(life: World) -> None:
    tamper(life, 'UPDATE rights SET "right" = ? WHERE device = ? AND principal = ?',
           "buy", life.plug.id, life.plug.id)
    failed(life, replay.STATE_MISMATCH)


def test_tampered_rights_row_deleted(life: World) -> None:
    tamper(life, "DELETE FROM rights WHERE device = ?", life.plug.id)
    failed(life, replay.STATE_MISMATCH)


def test_rights_on_a_device_with_no_row(life: World) -> None:
    tamper(life, 'INSERT INTO rights (device, principal, "right") VALUES (?, ?, ?)',
           bytes(16), life.carol.id, "read")
    failed(life, replay.STATE_MISMATCH)


@pytest.mark.parametrize("column,value", [
    ("status", "active"), ("kind", "person"), ("claimant", 1), ("node", "full"),
    ("assigned", bytes(16)), ("pubkey", Device("x").pub),
])
def test_tampered_identity_columns(life: World, column: str, value: object) -> None:
    tamper(life, "UPDATE devices SET %s = ? WHERE id = ?" % column, value, life.sensor.id)
    failed(life, replay.STATE_MISMATCH)


def test_a_forged_claim_in_a_block_is_caught(world: World) -> None:
    """The builder re-checks statements (not includable); a misbehaving
    proposer that writes the claim anyway is caught by replay at its height."""
    w = world
    forged = itx.claim_statement(w.plug.priv, w.plug.pub, "demo", w.owner.id)
    m = w.claim(w.sensor, statement=forged)
    t = txm.decode(m)
    led = w.node.ledger
    b = blocks.build_block(led.head, [t], led.state, 0, led.authority_priv,
                           led.genesis.authority_id, domain="demo", rules=led.rules)
    assert not b.txs and b.dropped[0][1].reason == errors.BAD_SIGNATURE
    # hand-made block 1 holding the claim and its effects
    view = StateOverlay(led.state)
    view.put(w.sensor.id, claimed_device(w.sensor.pub, w.owner.id))
    events = [["claim", w.sensor.id, w.owner.id]]
    leaf = messages.receipt_leaf(t.id, 0, "", events)
    levels = blocks.receipts_levels([leaf])
    fields = {"version": header.VERSION, "domain": "demo", "height": 1,
              "prev_hash": led.head.hash, "time": led.head.time, "tx_root": blocks.tx_root([m]),
              "receipts_root": merkle.root_of(levels), "state_root": view.root(),
              "proposer": led.genesis.authority_id}
    consensus.header_sets(fields, consensus.current_and_next(view, 1))
    signed = header.sign(led.authority_priv, led.genesis.authority_id, fields)
    hb = header.encode(fields)
    cert = blocks.own_certificate(view, fields, hb, led.authority_priv, led.genesis.authority_id)
    w.node.store.commit_block(blocks.Block(
        fields, hb, signed, [t],
        [blocks.Receipt(t.id, t.seq, 0, "", events, leaf)], view.changed, [], levels, {},
        cert=cert))
    e = failed(w, replay.BAD_TX)
    assert e.height == 1 and "bad-signature" in e.detail
