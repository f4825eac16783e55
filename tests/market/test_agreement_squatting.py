"""Agreement-id squatting (issue 9, item 6): a waiting demand's agreement id
is the first 16 bytes of its public tx id. With agreement v1 anyone could
open an agreement under it for 1 unit, and the demand never matched (the
buyer's funds locked until it stopped waiting). v2 refuses an open that does
not come from the ledger's matching step; a v1 chain still replays, and the
operator upgrades a v1 deployment it administers."""

from __future__ import annotations

from pathlib import Path

from gateway.contracts import binding as chain
from gateway.db import verify as replay
from gateway.market.ledger import rules as ledger
from gateway.market.node.service import MarketNode
from shared import errors, messages
from tests.support.mktest import FEE_BPS, Market, event

OK, FAILED = messages.STATUS_OK, messages.STATUS_FAILED
BALANCES = {"sup": 100, "buyer": 1000, "squatter": 100}


def _squat(m: Market, did: bytes) -> bytes:
    """The squatter's CONTRACT_CALL: agreement.open under the demand's id."""
    expiry = m.node.time + 3600
    return m.call("squatter", "open", did, m["sup"].id, 1, 1, expiry, "temperature", value=1)


def test_an_outsider_cannot_open_a_waiting_demands_agreement(tmp_path: Path) -> None:
    m = Market(tmp_path / "gw", BALANCES)
    assert m.deployment()["version"] == ledger.AGREEMENT_VERSION == 2
    did = event(m.run(m.demand("buyer", max_price=10, quantity=4)), "wait")[1]
    r = m.run(_squat(m, did))
    assert (r.status, r.reason, r.events[0][:2]) == (FAILED, errors.NOT_AUTHORIZED,
                                                     ["revert", "market-only"])
    assert m.agreement(did) is None and m.balance("squatter") == 100
    # the demand still matches when an offer comes
    match = event(m.run(m.offer("sup", price=5)), "match")
    assert match[1:4] == [did, m["buyer"].id, m["sup"].id]
    a = m.agreement(did)
    assert (a["buyer"], a["state"], a["remaining"]) == (m["buyer"].id, "open", 20)
    assert m.balance("buyer") == 1000 - 20 and m.balance(ledger.ESCROW) == 0
    assert replay.verify_chain(m.node.store, m.node.genesis).ok
    m.node.close()


def test_a_v1_chain_replays_and_the_operator_upgrades_it(tmp_path: Path) -> None:
    """A chain that ran v1 (the squat succeeded then) verifies as it ran; at
    its next start the operator upgrades the deployment to v2, and from that
    block on a squat fails while the chain keeps verifying."""
    m = Market(tmp_path / "gw", BALANCES, deploy=False)
    m.run(m.admin("deploy", "agreement", "agreement", 1,
                  {"operator": m.op.id, "fee_bps": FEE_BPS}))
    did = event(m.run(m.demand("buyer", max_price=10, quantity=4)), "wait")[1]
    assert m.run(_squat(m, did)).status == OK  # v1: the squat takes the id
    assert event(m.run(m.offer("sup", price=5)), "offer") and m.agreement(did)["buyer"] == \
        m["squatter"].id  # and the demand cannot match
    assert replay.verify_chain(m.node.store, m.node.genesis).ok

    logs: list[str] = []
    node = MarketNode("demo", tmp_path / "gw", m.node.ledger.authority_priv,
                      lambda *a: None, m.node.submit, logs.append)
    node.start(m.node.state)
    m.run()  # the block with the operator's upgrade
    node.close()
    assert chain.deployment(m.node.state, ledger.AGREEMENT)["version"] == 2
    assert any("upgrading the agreement contract to v2" in x for x in logs)
    m.op.seq = m.node.state.get(m.op.id).last_seq  # the node signed as the operator
    did2 = event(m.run(m.demand("buyer", service="humidity", max_price=10, quantity=4)),
                 "wait")[1]
    r = m.run(_squat(m, did2))
    assert (r.status, r.reason) == (FAILED, errors.NOT_AUTHORIZED)
    assert replay.verify_chain(m.node.store, m.node.genesis).ok
    m.node.close()
