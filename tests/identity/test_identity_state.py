"""Identity at the state level: refusals write nothing (also at execution
time), genesis with an owner, store round trip and schema, inspect text."""

from __future__ import annotations

import dataclasses
import sqlite3

import pytest

from gateway.db import genesis_files as gen
from gateway.db import render as inspect
from gateway.db import store
from gateway.identity import statements as itx
from gateway.ledger.state import KIND_PERSON, RuleError, StateOverlay, apply
from gateway.node import config
from shared import errors
from shared import tx as txm
from tests.support.gwtest import DOMAIN, Device, Node
from tests.support.idtest import Person, World


def test_refused_identity_txs_write_nothing_at_execution(world: World) -> None:
    w = world
    s = w.sensor
    w.commit(w.claim(s), w.claim(w.plug), w.transfer(w.plug, w.bob))
    rules = w.node.ledger.rules
    cases = [
        (w.claim(s), errors.ALREADY_OWNED),
        (w.claim(w.stranger), errors.NOT_IN_REGISTRY),
        (w.transfer(s, w.carol, by=w.bob), errors.NOT_OWNER),
        (w.grant(s, w.carol, "read", by=w.bob), errors.NOT_OWNER),
        (w.retire(s, "revoke", by=w.bob), errors.NOT_OWNER),
        (w.rotate(s, Device("k"), approver=w.bob), errors.BAD_SIGNATURE),
        (w.recover(s, Device("k"), statement=itx.recover_statement(Device("z").priv, s.id,
                                                                    DOMAIN)),
         errors.BAD_SIGNATURE),
    ]
    for m, reason in cases:
        view = StateOverlay(w.node.state)
        with pytest.raises(RuleError) as ei:
            apply(view, txm.decode(m), rules)
        assert ei.value.reason == reason
        assert view.changed == {}


def test_genesis_owner_validation(tmp_path) -> None:
    owner = Person("owner")
    with pytest.raises(gen.GenesisError) as ei:
        gen.create_domain(tmp_path / "a", DOMAIN, admission="claimed")
    assert ei.value.key == "owner"
    with pytest.raises(gen.GenesisError) as ei:
        gen.create_domain(tmp_path / "b", DOMAIN, admission="claimed", owner=b"\x02" + b"\xff" * 32)
    assert ei.value.key == "owner"
    gpath, _ = gen.create_domain(tmp_path / "c", DOMAIN, admission="claimed", owner=owner.pub)
    g = gen.load(gpath)
    assert (g.owner, g.owner_id, g.admission) == (owner.pub, owner.id, "claimed")
    assert gen.from_dict({**_toml(g), "owner": owner.pub.hex()}) == g
    with pytest.raises(gen.GenesisError) as ei:
        dataclasses.replace(g, owner=g.authority)
    assert ei.value.key == "owner"
    # the digest of an owner-less genesis is what it was before owners existed
    plain = dataclasses.replace(g, owner=b"", admission="open")
    assert plain.digest() != dataclasses.replace(plain, owner=owner.pub).digest()
    assert gen.load(gpath).state().get(owner.id).kind == KIND_PERSON


def _toml(g: gen.Genesis) -> dict:
    import tomllib

    return tomllib.loads(gen.dumps(g))


def test_owner_listed_in_accounts_keeps_its_balance(tmp_path) -> None:
    owner = Person("owner")
    n = Node(tmp_path / "n", {owner.pub: 50}, admission="claimed", owner=owner.pub)
    try:
        r = n.state.get(owner.id)
        assert (r.kind, r.balance, r.claimant) == (KIND_PERSON, 50, True)
        assert n.state.total_balance() == 50
    finally:
        n.close()


def test_old_schema_database_is_refused(tmp_path) -> None:
    n = Node(tmp_path / "n")
    n.close()
    db = sqlite3.connect(n.store.path)
    with db:
        db.execute("UPDATE meta SET value = 1 WHERE key = 'schema'")
    db.close()
    with pytest.raises(store.StoreError) as ei:
        store.open_ledger(config.GatewayConfig(domain=DOMAIN, data_dir=tmp_path / "n"),
                          create=False)
    assert ei.value.reason == "schema-mismatch"


def test_inspect_texts(world: World) -> None:
    w = world
    s = w.sensor
    w.commit(w.claim(s), w.grant(s, w.carol, "read"))
    w.commit(w.transfer(s, w.bob))
    txt = inspect.principals_table(w.node.store.devices())
    assert "person (claimant)" in txt and "authority" in txt
    w.commit(w.grant(s, w.carol, "read", by=w.bob))
    txt = inspect.principals_table(w.node.store.devices())
    assert "%s:read" % w.carol.id.hex()[:8] in txt
    for t in w.node.store.block_txs(1) + w.node.store.block_txs(2):
        body = inspect.tx_detail(t, None)
        assert "device=" + s.id.hex() in body
    assert inspect.type_name(txm.TYPE_CLAIM) == "claim"
    assert inspect.nodes_table([]) == "no nodes have joined"
