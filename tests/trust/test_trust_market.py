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
