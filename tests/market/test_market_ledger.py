"""The market on the chain: offers, demands, agreements, deliveries and
verdicts through real signed transactions, blocks, the store and replay."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.contracts import runtime as crt
from gateway.db import verify as replay
from gateway.identity.access import Access
from gateway.market.ledger import rules as ledger
from shared import errors, merkle, messages
from tests.support.mktest import FEE_BPS, Market, event

OK, FAILED = messages.STATUS_OK, messages.STATUS_FAILED


@pytest.fixture
def mk(tmp_path: Path) -> Market:
    m = Market(tmp_path / "gw", {"sup": 100, "buyer": 1000, "other": 100})
    yield m
    m.node.close()


def test_only_the_admin_deploys(tmp_path: Path) -> None:
    m = Market(tmp_path / "gw", {"sup": 10}, deploy=False)
    e = m.refused(m.admin("deploy", "agreement", "agreement", 1,
                          {"operator": m.op.id, "fee_bps": 0}, sender=m["sup"]))
    assert (e.reason, e.detail) == (errors.NOT_AUTHORIZED, "not-admin")
    # a deploy whose init refuses its params keeps nothing, not even the account
    r = m.run(m.admin("deploy", "agreement", "agreement", 1, {"operator": m.op.id,
                                                               "fee_bps": 10_001}))
    assert (r.status, r.reason, r.events[-1][1]) == (FAILED, "bad-value", "fee_bps")
    assert m.node.state.get(ledger.AGREEMENT) is None and m.deployment() is None
    r = m.run(m.admin("deploy", "agreement", "agreement", 1, {"operator": m.op.id,
                                                               "fee_bps": 0}))
    assert r.status == OK and m.deployment()["name"] == "agreement"
    assert m.node.state.get(ledger.AGREEMENT).kind == "contract"
    # a second deploy under the same label is a failed (included) call
    r = m.run(m.admin("deploy", "agreement", "agreement", 1, {"operator": m.op.id,
                                                               "fee_bps": 0}))
    assert (r.status, r.reason) == (FAILED, "unknown-contract")
    r = m.run(m.admin("disable", ledger.AGREEMENT))
    assert r.status == OK
    e = m.refused(m.demand("sup"))
    assert (e.reason, e.detail) == ("unknown-contract", "agreement")


def test_offer_demand_delivery_payment_and_replay(mk: Market) -> None:
    total = mk.total()
    r = mk.run(mk.offer("sup", price=5))
    assert r.status == OK and event(r, "offer")[1:3] == ["temperature", 5]
    r = mk.run(mk.demand("buyer", max_price=8, quantity=4))
    m = event(r, "match")
    aid = m[1]
    assert aid == r.tx_id[:16] and m[2:6] == [mk["buyer"].id, mk["sup"].id, 5, 4]
    assert mk.balance("buyer") == 1000 - 20 and mk.balance(ledger.AGREEMENT) == 20
    # while it is open the buyer may read the agreement's stream (broker rules)
    acc = Access.from_state(mk.node.state, "demo")
    assert acc.bought(mk["buyer"].id) == {(mk["sup"].id, aid)} and not acc.bought(mk["sup"].id)
    leaves = [b"reading-%d" % i for i in range(4)]
    r = mk.run(mk.call("sup", "commit", aid, 0, 0, 4, merkle.root(leaves)))
    assert r.status == OK and event(r, "delivery-committed")
    r = mk.run(mk.call(mk.op, "verdict", aid, 0, True, 2150, 0))
    assert r.status == OK, r
    fee = 20 * FEE_BPS // 10000
    assert mk.balance("sup") == 100 + 20 - fee and mk.balance(mk.op.id) == fee
    assert event(r, "agreement-closed")[-1] == 0  # nothing left to refund
    assert mk.agreement(aid)["state"] == "closed"
    assert not Access.from_state(mk.node.state, "demo").bought(mk["buyer"].id)
    assert mk.total() == total
    rep = replay.verify_chain(mk.node.store, mk.node.genesis)
    assert rep.head_height == mk.node.store.head().height


def test_failures_are_recorded_and_refunded_at_expiry(mk: Market) -> None:
    mk.run(mk.offer("sup", price=5, interval=10))
    r = mk.run(mk.demand("buyer", max_price=5, quantity=8))
    aid, expiry = event(r, "match")[1], event(r, "match")[6]
    # a delivery from a party not in the agreement
    r = mk.run(mk.call("other", "commit", aid, 0, 0, 4, bytes(32)))
    assert (r.status, r.reason, r.events[-1][:2]) == (FAILED, "not-authorized",
                                                       ["revert", "not-supplier"])
    mk.run(mk.call("sup", "commit", aid, 0, 0, 4, bytes(32)))
    # a replayed delivery (same batch again)
    r = mk.run(mk.call("sup", "commit", aid, 0, 0, 4, bytes(32)))
    assert (r.status, r.events[-1][1]) == (FAILED, "replay")
    r = mk.run(mk.call(mk.op, "verdict", aid, 0, False, 0, 0))
    assert r.status == OK and event(r, "delivery-failed")[-1] == "stream"
    assert ledger.supplier_record(mk.node.state, mk["sup"].id) == {"paid": 0, "failed": 1}
    assert mk.balance("sup") == 100
    # the buyer cannot close before expiry; the operator can after it
    r = mk.run(mk.close("buyer", aid))
    assert (r.status, r.events[-1][1]) == (FAILED, "not-expired")
    mk.node.time = expiry
    r = mk.run(mk.close(mk.op, aid))
    assert r.status == OK and event(r, "agreement-closed")[-1] == 40
    assert mk.balance("buyer") == 1000


def test_a_busy_supplier_closes_a_fresh_agreement_and_the_buyer_is_refunded(mk: Market
                                                                            ) -> None:
    """What a supplier board does with a MATCH it has no room for
    (firmware/market.py): the supplier may close at any time, before expiry."""
    mk.run(mk.offer("sup", price=5, interval=10))
    r = mk.run(mk.demand("buyer", max_price=5, quantity=8))
    aid = event(r, "match")[1]
    assert mk.balance("buyer") == 1000 - 40
    r = mk.run(mk.close("sup", aid))
    assert r.status == OK and event(r, "agreement-closed")[-1] == 40
    assert mk.balance("buyer") == 1000 and mk.agreement(aid)["state"] == "closed"
    r = mk.run(mk.close("sup", aid))  # a second close (a replayed MATCH) changes nothing
    assert r.status == FAILED and mk.balance("buyer") == 1000


def test_demand_refused_without_funds_and_waiting_demand(mk: Market) -> None:
    e = mk.refused(mk.demand("buyer", max_price=300, quantity=4))
    assert (e.reason, e.detail) == (errors.INSUFFICIENT_FUNDS, "escrow")
    mk["buyer"].seq -= 1  # the refused tx consumed nothing
    r = mk.run(mk.demand("buyer", max_price=10, quantity=5))
    did = event(r, "wait")[1]
    assert mk.balance("buyer") == 950 and mk.balance(ledger.ESCROW) == 50
    # a too expensive offer does not match; a fitting one does
    r = mk.run(mk.offer("other", price=11))
    assert not [e for e in r.events if e[0] == "match"]
    r = mk.run(mk.offer("sup", price=7))
    m = event(r, "match")
    assert m[1] == did and m[3] == mk["sup"].id
    assert mk.balance("buyer") == 1000 - 35 and mk.balance(ledger.ESCROW) == 0
    # closing an unknown id is refused; a second waiting demand can be cancelled
    e = mk.refused(mk.close("buyer", bytes(16)))
    assert e.reason == ledger.UNKNOWN_AGREEMENT
    mk["buyer"].seq -= 1
    r = mk.run(mk.demand("buyer", service="humidity", max_price=2, quantity=3))
    did2 = event(r, "wait")[1]
    r = mk.run(mk.close("other", did2))
    assert (r.status, r.reason) == (FAILED, errors.NOT_AUTHORIZED)
    r = mk.run(mk.close("buyer", did2))
    assert r.status == OK and event(r, "demand-closed")[-1] == 6
    assert mk.balance("buyer") == 965


def test_contract_calls_revert_and_charge_fuel(mk: Market) -> None:
    before = mk.total()
    # unknown method, out of fuel and value it cannot cover
    r = mk.run(mk.call("buyer", "nope"))
    assert (r.status, r.reason) == (FAILED, "unknown-contract")
    r = mk.run(mk.call("buyer", "record", mk["sup"].id, fuel=5))
    assert (r.status, r.reason) == (FAILED, "out-of-fuel")
    e = mk.refused(mk.call("buyer", "record", mk["sup"].id, value=10_000))
    assert (e.reason, e.detail) == (errors.INSUFFICIENT_FUNDS, "value")
    mk["buyer"].seq -= 1
    r = mk.run(mk.call("buyer", "record", mk["sup"].id))
    assert r.status == OK and r.events[0][:4] == ["call", ledger.AGREEMENT, "record",
                                                   {"paid": 0, "failed": 0}]
    assert mk.total() == before
    r = mk.run(mk.call("buyer", "record", address=crt.contract_address("nothing-here")))
    assert (r.status, r.events[-1][1]) == (FAILED, "address")


def test_plausibility_attested_by_neighbours(tmp_path: Path) -> None:
    """Two neighbours attest their own temperature through the oracle
    contract; a batch whose mean is far from theirs is not paid."""
    m = Market(tmp_path / "gw", {"sup": 0, "buyer": 1000, "n1": 10, "n2": 10}, deploy=False)
    r = m.run(m.admin("deploy", "neighbours", "oracle", 1,
                      {"attestors": [m["n1"].id, m["n2"].id], "m": 2, "tolerance": 30}))
    oracle = r.events[0][3]
    r = m.run(m.admin("deploy", "agreement", "agreement", 1, {
        "operator": m.op.id, "fee_bps": 0, "plausibility": {"temperature": [oracle, 100]}}))
    assert r.status == OK
    m.run(m.offer("sup", price=10))
    aid = event(m.run(m.demand("buyer", max_price=10, quantity=2)), "match")[1]
    m.run(m.call("sup", "commit", aid, 0, 0, 1, bytes(32)),
          m.call("sup", "commit", aid, 1, 1, 1, bytes(32)))
    r = m.run(m.call("n1", "attest", 42, 2100, address=oracle),
              m.call("n2", "attest", 42, 2120, address=oracle))
    assert event(r, "oracle-result")[-1] == 2100
    r = m.run(m.call(m.op, "verdict", aid, 0, True, 2150, 42))  # within 100 of 2100
    assert event(r, "delivery-paid")
    r = m.run(m.call(m.op, "verdict", aid, 1, True, 2500, 42))  # 400 off
    assert event(r, "delivery-failed")[-1] == "implausible"
    assert m.balance("sup") == 10 and m.balance("buyer") == 990
    assert ledger.supplier_record(m.node.state, m["sup"].id) == {"paid": 1, "failed": 1}
    # a neighbour that is not an attestor cannot sway the oracle
    r = m.run(m.call("buyer", "attest", 43, 0, address=oracle))
    assert (r.status, r.reason) == (FAILED, "not-authorized")
    m.node.close()


def test_unservable_old_demands_do_not_starve_a_new_one(tmp_path: Path) -> None:
    m = Market(tmp_path / "gw", {"sup": 0, "cheap": 10_000, "buyer": 1000})
    cheap = [m.demand("cheap", max_price=1, quantity=1) for _ in range(ledger.MATCH_SCAN + 4)]
    m.run(*cheap)
    r = m.run(m.demand("buyer", max_price=9, quantity=2))
    assert event(r, "wait")
    r = m.run(m.offer("sup", price=5))
    assert event(r, "match")[2] == m["buyer"].id
    m.node.close()
