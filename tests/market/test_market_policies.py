"""Matching policies on one market: each picks a different supplier, and the
choice is the same when the chain is replayed."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from gateway.db import verify as replay
from gateway.market.ledger import rules as ledger
from gateway.market.ledger.matching import POLICIES, Offer, choose, shared_prefix, trust_score
from tests.support.mktest import Market, event


def _market(tmp_path: Path) -> tuple[Market, dict[str, bytes]]:
    """cheap: lowest price; fresh: published last; near: next to the buyer;
    proven: the best delivery record (earned through a paid agreement)."""
    names = ("cheap", "fresh", "near", "proven", "buyer", "helper")
    mk = Market(tmp_path / "gw", {n: 10_000 for n in names})
    # proven earns a record: one agreement, one paid batch
    mk.run(mk.offer("proven", "calibration", 1))
    aid = event(mk.run(mk.demand("helper", "calibration", 1, 1)), "match")[1]
    mk.run(mk.call("proven", "commit", aid, 0, 0, 1, bytes(32)))
    mk.run(mk.call(mk.op, "verdict", aid, 0, True, 0, 0))
    assert ledger.supplier_record(mk.node.state, mk["proven"].id)["paid"] == 1
    mk.run(mk.offer("proven", price=6, location="u0zzzz"))
    mk.run(mk.offer("near", price=7, location="u4pruy"))
    mk.run(mk.offer("cheap", price=3, location="s00000"))
    mk.run(mk.offer("fresh", price=9, location="zzzzzz"))
    return mk, {n: mk[n].id for n in names}


def test_each_policy_picks_a_different_supplier(tmp_path: Path) -> None:
    mk, ids = _market(tmp_path)
    want = {"latest": "fresh", "cheapest": "cheap", "trusted": "proven", "nearest": "near"}
    chosen = {}
    for policy in POLICIES:
        r = mk.run(mk.demand("buyer", max_price=10, quantity=2, policy=policy,
                             location="u4pruydqq"))
        chosen[policy] = event(r, "match")[3]
    assert chosen == {p: ids[n] for p, n in want.items()}
    assert len(set(chosen.values())) == 4
    # replaying the chain from genesis makes the same choices (receipts compared)
    rep = replay.verify_chain(mk.node.store, mk.node.genesis)
    assert rep.head_height == mk.node.store.head().height
    mk.node.close()


def test_price_cap_and_self_offers_are_excluded(tmp_path: Path) -> None:
    mk, ids = _market(tmp_path)
    r = mk.run(mk.demand("buyer", max_price=5, quantity=1, policy="latest"))
    assert event(r, "match")[3] == ids["cheap"]  # the only one at or under 5
    r = mk.run(mk.demand("cheap", max_price=10, quantity=1, policy="cheapest"))
    assert event(r, "match")[3] == ids["proven"]  # not its own offer
    mk.node.close()


def test_expired_offers_do_not_match(tmp_path: Path) -> None:
    mk = Market(tmp_path / "gw", {"a": 100, "b": 100})
    mk.run(mk.offer("a", valid=5))
    mk.node.time += 10
    r = mk.run(mk.demand("b", max_price=10, quantity=1))
    assert event(r, "wait")
    mk.node.close()


offers = st.lists(st.builds(
    Offer, st.binary(min_size=16, max_size=16), st.just("t"), st.just(""),
    st.integers(1, 20), st.integers(1, 5), st.text("0123456789bcdefg", max_size=4),
    st.integers(0, 10), st.just(1),
    st.tuples(st.integers(0, 5), st.integers(0, 5))), max_size=8,
    unique_by=lambda o: o.supplier)  # one offer per supplier and service, as on chain


@given(offers, st.sampled_from(POLICIES), st.text("0123456789bcdefg", max_size=4))
def test_choice_does_not_depend_on_offer_order(os, policy, location) -> None:
    trust = {o.supplier: trust_score({"paid": o.price % 3, "failed": o.interval_s % 2})
             for o in os}
    a = choose(policy, os, location=location, trust=trust)
    b = choose(policy, list(reversed(os)), location=location, trust=trust)
    assert a == b
    if a is not None and policy == "cheapest":
        assert a.price == min(o.price for o in os)
    if a is not None and policy == "nearest":
        assert shared_prefix(location, a.location) == max(
            shared_prefix(location, o.location) for o in os)
