"""The market reads trust (docs/TRUST.md): probation's smaller escrow and
offer caps, and the `trusted` policy ranking suppliers by their trust score."""

from __future__ import annotations

from pathlib import Path

from gateway.db import verify as replay
from gateway.market.ledger import rules as ledger
from gateway.trust import standing as st
from shared import errors
from tests.support.mktest import Market, event


def earn(mk: Market, who: str, n: int, step: int = 1) -> None:
    d = mk[who]
    mk.run(*(d.reading(i) for i in range(n)), time_step=step)


def test_probation_caps_escrow_and_offers(tmp_path: Path) -> None:
    mk = Market(tmp_path / "gw", {"buyer": 10_000, "seller": 10_000}, trust=True)
    assert st.level_of(mk.node.state, mk["buyer"].id) == st.PROBATION
    big = ledger.PROBATION_ESCROW_CAP // 10 + 1  # quantity x 10 > the cap
    e = mk.refused(mk.demand("buyer", max_price=10, quantity=big))
    assert (e.reason, e.detail) == (errors.OVER_CAP, "probation-escrow")
    mk["buyer"].seq -= 1
    e = mk.refused(mk.offer("seller", price=ledger.PROBATION_OFFER_CAP + 1))
    assert (e.reason, e.detail) == (errors.OVER_CAP, "probation-offer")
    mk["seller"].seq -= 1
    mk.run(mk.demand("buyer", max_price=10, quantity=ledger.PROBATION_ESCROW_CAP // 10))
    earn(mk, "buyer", st.PROBATION_TXS, step=st.PROBATION_S)
    assert st.level_of(mk.node.state, mk["buyer"].id) == st.NORMAL
    mk.run(mk.demand("buyer", max_price=10, quantity=big))  # normal: the balance is the cap
    mk.node.close()


def test_probation_loses_to_trusted_at_the_same_price(tmp_path: Path) -> None:
    mk = Market(tmp_path / "gw", {"veteran": 1000, "newcomer": 1000, "buyer": 10_000},
                trust=True)
    earn(mk, "veteran", st.ACTIVITY_MAX)
    earn(mk, "veteran", 1, step=(st.TRUSTED_SCORE - st.ACTIVITY_MAX) // st.AGE_PER_DAY
         * st.DAY_S)
    assert st.level_of(mk.node.state, mk["veteran"].id) == st.TRUSTED
    # the newcomer publishes last: `latest` would pick it, `cheapest` ties on price
    mk.run(mk.offer("veteran", price=5))
    mk.run(mk.offer("newcomer", price=5))
    assert st.level_of(mk.node.state, mk["newcomer"].id) == st.PROBATION
    r = mk.run(mk.demand("buyer", max_price=5, quantity=1, policy="trusted"))
    assert event(r, "match")[3] == mk["veteran"].id
    r = mk.run(mk.demand("buyer", max_price=5, quantity=1, policy="latest"))
    assert event(r, "match")[3] == mk["newcomer"].id
    assert replay.verify_chain(mk.node.store, mk.node.genesis).ok
    mk.node.close()


def test_a_failed_delivery_verdict_is_folded_into_the_score(tmp_path: Path) -> None:
    mk = Market(tmp_path / "gw", {"seller": 1000, "buyer": 10_000}, trust=True)
    mk.run(mk.offer("seller", price=5))
    aid = event(mk.run(mk.demand("buyer", max_price=5, quantity=2)), "match")[1]
    mk.run(mk.call("seller", "commit", aid, 0, 0, 1, bytes(32)))
    before = st.get(mk.node.state, mk["seller"].id)
    r = mk.run(mk.call(mk.op, "verdict", aid, 0, False, 0, 0))
    assert ledger.supplier_record(mk.node.state, mk["seller"].id)["failed"] == 1
    after = st.get(mk.node.state, mk["seller"].id)
    assert after.score == before.score - st.FAILED_WEIGHT
    h = st.history(mk.node.state, mk["seller"].id)[-1]
    assert (h[2], h[3]) == (r.tx_id, "delivery-verdict")
    mk.node.close()


def attested_market(tmp_path: Path, *, trust: bool) -> tuple[Market, bytes]:
    """A market whose agreement checks `temperature` against two neighbours'
    oracle (tolerance 100) and has no oracle for `humidity`."""
    mk = Market(tmp_path, {"sup": 1000, "vet": 1000, "buyer": 10_000, "n1": 10, "n2": 10},
                deploy=False, trust=trust)
    r = mk.run(mk.admin("deploy", "neighbours", "oracle", 1,
                        {"attestors": [mk["n1"].id, mk["n2"].id], "m": 2, "tolerance": 30}))
    oracle = r.events[0][3]
    mk.run(mk.admin("deploy", "agreement", "agreement", ledger.AGREEMENT_VERSION, {
        "operator": mk.op.id, "fee_bps": 0, "plausibility": {"temperature": [oracle, 100]}}))
    mk.run(mk.offer("sup", "humidity", price=5), mk.offer("sup", "temperature", price=5))
    return mk, oracle


def test_probation_supplier_sold_only_with_neighbours_attestations(tmp_path: Path) -> None:
    mk, oracle = attested_market(tmp_path / "gw", trust=True)
    total = mk.total()
    assert st.level_of(mk.node.state, mk["sup"].id) == st.PROBATION
    # no oracle for humidity: a supplier on probation is not matched for it
    mk.run(mk.offer("vet", "humidity", price=4))
    r = mk.run(mk.demand("buyer", "humidity", max_price=5, quantity=2))
    assert event(r, "wait") and not [e for e in r.events if e[0] == "match"]
    # temperature has one: matched, and each batch is paid only on the oracle's word
    aid = event(mk.run(mk.demand("buyer", max_price=5, quantity=3)), "match")[1]
    mk.run(*(mk.call("sup", "commit", aid, i, i, 1, bytes(32)) for i in range(3)))
    r = mk.run(mk.call(mk.op, "verdict", aid, 0, True, 2100, 42))  # round 42 not attested
    assert event(r, "delivery-failed")[-1] == "no-attestation"
    mk.run(mk.call("n1", "attest", 42, 2100, address=oracle),
           mk.call("n2", "attest", 42, 2120, address=oracle))
    r = mk.run(mk.call(mk.op, "verdict", aid, 1, True, 2150, 42))
    assert event(r, "delivery-paid")
    r = mk.run(mk.call(mk.op, "verdict", aid, 2, True, 2500, 42))
    assert event(r, "delivery-failed")[-1] == "implausible"
    assert ledger.supplier_record(mk.node.state, mk["sup"].id) == {"paid": 1, "failed": 2}
    # a supplier off probation sells humidity too
    earn(mk, "vet", st.PROBATION_TXS, step=st.PROBATION_S)
    assert st.level_of(mk.node.state, mk["vet"].id) == st.NORMAL
    mk.run(mk.offer("vet", "humidity", price=4))
    r = mk.run(mk.demand("buyer", "humidity", max_price=5, quantity=2))
    assert event(r, "match")[3] == mk["vet"].id
    assert mk.total() == total
    assert replay.verify_chain(mk.node.store, mk.node.genesis).ok
    mk.node.close()


def test_without_trust_levels_the_oracle_does_not_limit_suppliers(tmp_path: Path) -> None:
    mk, _ = attested_market(tmp_path / "gw", trust=False)
    r = mk.run(mk.demand("buyer", "humidity", max_price=5, quantity=2))
    assert event(r, "match")[3] == mk["sup"].id
    mk.node.close()
