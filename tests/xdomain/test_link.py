"""The link between an agreement in dom-b and the purchase in dom-a that
serves it (gateway/xdomain/recorded.py: XPURCHASE agree naming dom-b's
agreement; docs/CROSSDOMAIN.md, "A buyer board in B: the reseller").

bob resells in dom-b: mallory (a buyer there, as a board would be) buys 4
readings of him; bob buys 4 of sam in dom-a and records that purchase in
dom-b linked to mallory's agreement. dom-b's gateways refuse a link to an
unknown, closed or already linked agreement, to one bob does not supply, of
another quantity or with a batch committed already, each with its reason and
nothing changed; the link is stored both ways. Then dom-b's market pays
bob's batch k only once dom-b holds dom-a's batch k with the same first
index and count: a paying verdict before is refused, the operator's judge
(MarketNode) waits and pays after the deliver record; a record of another
layout fails the batch; what is never proven goes back to mallory at the
agreement's end."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from gateway.market.ledger import rules as market
from gateway.market.node import service
from gateway.market.node.service import MarketNode
from gateway.xdomain import recorded
from shared import cbor, errors, merkle, reasons, stream, topics, txdecode
from shared import tx as txm
from shared import xpacket as xp
from tests.xdomain.test_recorded import PRICE, QTY, A, B, World

B_PRICE = 6


class Resale(World):
    """World (sam sells in dom-a, bob bought 4 there) plus dom-b's market:
    the agreement contract deployed, bob offering temperature, mallory's
    agreement with him for 4 readings."""

    def __init__(self, tmp: Path) -> None:
        super().__init__(tmp)
        b = self.b
        self.b_op = txm.device_id(b.authority.pub)
        assert b.run(b.authority.make(txm.TYPE_CONTRACT_ADMIN, {
            1: "deploy", 2: market.AGREEMENT_LABEL, 3: "agreement",
            4: market.AGREEMENT_VERSION, 5: {"operator": self.b_op, "fee_bps": 0}}))[0] == 0
        self.bob, self.mallory = b.device("bob"), b.device("mallory")
        self.bid = self.b_agreement("mallory", "bob", QTY)

    def b_agreement(self, buyer: str, supplier: str, qty: int,
                    service: str = "temperature") -> bytes:
        """`buyer` demands `qty` readings of `supplier`'s offer in dom-b."""
        b = self.b
        assert b.run(b.device(supplier).make(txm.TYPE_OFFER, {
            1: service, 2: "cC", 3: B_PRICE, 4: 1, 5: "", 6: 600, 7: 1}))[0] == 0
        status, _, events = b.run(b.device(buyer).make(txm.TYPE_DEMAND, {
            1: service, 2: B_PRICE, 3: qty, 4: 60, 5: "cheapest"}))
        assert status == 0
        return next(e[1] for e in events if e[0] == "match")

    def agree(self, serves: bytes, who: str = "bob", rec: bytes | None = None) -> bytes:
        return self.b.device(who).make(txdecode.TYPE_XPURCHASE, {
            1: A, 2: "agree", 3: self.demand if rec is None else rec, 5: serves})

    def deliver(self, rec: bytes) -> bytes:
        return self.xpurchase("bob", "deliver", rec)

    def b_commit(self, batch: int, first: int, count: int, node: MarketNode | None = None,
                 aid: bytes | None = None) -> bytes:
        """bob streams `count` readings of an agreement in dom-b (mallory's by
        default; the operator's stream store takes them) and commits their
        root there."""
        aid = self.bid if aid is None else aid
        rs = [stream.reading(self.bob.priv, self.bob.id, aid, i, 2100 + i, -2)
              for i in range(first, first + count)]
        if node is not None:
            topic = topics.data(B, self.bob.id.hex() + "/" + aid.hex())
            for r in rs:
                node.on_data(topic, r, self.b.state)
        return self.bob.make(txm.TYPE_CONTRACT_CALL, {
            1: market.AGREEMENT, 2: "commit", 3: [aid, batch, first, count, merkle.root(rs)],
            4: 0, 5: 50_000})

    def b_agreement_record(self) -> dict:
        a = market.agreement(self.b.state, self.bid)
        assert a is not None
        return a


@pytest.fixture
def w(tmp_path: Path) -> Iterator[Resale]:
    world = Resale(tmp_path)
    yield world
    world.a.close()
    world.b.close()


def test_a_link_is_checked_and_stored_both_ways(w: Resale) -> None:
    w.trust_head()
    # an agreement dom-b does not hold
    assert w.refused(w.agree(b"\x42" * 16)) == (reasons.UNKNOWN_AGREEMENT, "link-unknown")
    # one bob does not supply: bob buys humidity of mallory in dom-b
    theirs = w.b_agreement("bob", "mallory", QTY, "humidity")
    assert w.refused(w.agree(theirs)) == (errors.NOT_AUTHORIZED, "not-supplier")
    # one of another quantity
    three = w.b_agreement("mallory", "bob", QTY - 1)
    assert w.refused(w.agree(three)) == (reasons.BAD_LINK, "quantity")
    # one closed already (a supplier may close at any time)
    assert w.b.run(w.bob.make(txm.TYPE_CLOSE, {1: three}))[0] == 0
    assert w.refused(w.agree(three)) == (reasons.BAD_LINK, "closed")
    # one bob has delivered a batch of already (B's batch k must be A's batch k)
    early = w.b_agreement("mallory", "bob", QTY)
    assert w.b.run(w.b_commit(0, 0, 1, aid=early))[0] == 0
    assert w.refused(w.agree(early)) == (reasons.BAD_LINK, "delivering")
    # a link on a deliver is malformed
    bad = w.bob.make(txdecode.TYPE_XPURCHASE, {1: A, 2: "deliver", 3: w.demand, 4: w.aid,
                                               5: w.bid})
    assert w.refused(bad) == (errors.BAD_TX, "bad-link")
    assert recorded.purchases(w.b.state) == [] and recorded.link(w.b.state, w.bid) is None

    status, _, events = w.b.run(w.agree(w.bid))
    assert status == 0
    assert events == [["xpurchase", A, w.aid, w.sam.id, PRICE, QTY, w.bid]]
    (p,) = recorded.purchases(w.b.state)
    assert (p.id, p.serves) == (w.aid, w.bid)  # purchase -> agreement in dom-b
    assert recorded.link(w.b.state, w.bid) == (A, w.aid)  # agreement in dom-b -> purchase
    assert w.b.state.kv_get(xp.link_key(w.bid)) == cbor.dumps([A, w.aid])

    # a second purchase of bob in dom-a may not serve the same agreement
    demand2 = w.a.device("bob").make(txm.TYPE_DEMAND, {1: "temperature", 2: PRICE, 3: QTY,
                                                       4: 60, 5: "cheapest"})
    assert w.a.run(demand2)[0] == 0
    w.trust_head()
    assert w.refused(w.agree(w.bid, rec=w.receipt(demand2))) == (reasons.DUPLICATE, "linked")
    # nor may it be recorded linked by anyone but its buyer
    assert w.refused(w.agree(w.bid, who="mallory", rec=w.receipt(demand2)))[0] == \
        errors.NOT_AUTHORIZED


class Judge:
    """dom-b's operator (MarketNode) with its txs caught (each run in dom-b
    when asked) and its clock `ahead` seconds after dom-b's block time."""

    def __init__(self, w: Resale, tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.w, self.ahead = w, 0.0
        monkeypatch.setattr(service, "time", SimpleNamespace(time=self.clock))
        (tmp / "streams").mkdir()
        self.sent: list[bytes] = []
        self.logs: list[str] = []
        self.node = MarketNode(B, tmp / "streams", w.b.ledger.authority_priv,
                               lambda *_: None, self.take, self.logs.append)
        self.node.start(w.b.state)

    def clock(self) -> float:
        return float(self.w.b.time) + self.ahead

    def take(self, msg: bytes) -> Any:
        self.sent.append(msg)
        return True

    def block(self, msg: bytes) -> tuple[int, str, list[Any]]:
        """Run `msg` in dom-b and show the operator its block."""
        b = self.w.b
        b.submit(msg)
        blk = b.produce()
        assert not blk.dropped
        self.node.on_block(blk, b.state, [])
        r = blk.receipts[0]
        return r.status, r.reason, r.events

    def run_sent(self, type_: int, method: str | None = None) -> list[list[Any]]:
        """Run in dom-b the operator's txs sent so far of that type (and
        contract method): their events; forget the others."""
        out = []
        while self.sent:
            t = txm.decode(self.sent.pop(0))
            if t.type == type_ and (method is None or t.body[2] == method):
                out.append(self.block(t.message)[2])
        return out

    def verdicts(self, ahead: float) -> list[list[Any]]:
        """The verdict calls the operator sent (on a block, or at its tick
        `ahead` s after dom-b's block time), each run in dom-b: their events."""
        self.ahead = ahead
        self.node.tick(self.w.b.state, self.clock())
        return self.run_sent(txm.TYPE_CONTRACT_CALL, "verdict")


def _named(events: list[list[Any]], name: str) -> list[list[Any]]:
    return [e for es in events for e in es if len(e) > 1 and e[1] == name]


def test_a_linked_batch_is_paid_only_once_its_delivery_in_a_is_recorded(
        w: Resale, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    w.trust_head()
    assert w.b.run(w.agree(w.bid))[0] == 0
    judge = Judge(w, tmp_path, monkeypatch)
    assert judge.block(w.b_commit(0, 0, 2, judge.node))[0] == 0
    # the operator's paying verdict is refused: dom-b holds no record of dom-a's batch 0
    early = w.b.authority.make(txm.TYPE_CONTRACT_CALL, {
        1: market.AGREEMENT, 2: "verdict", 3: [w.bid, 0, True, 2100, 0], 4: 0, 5: 50_000})
    assert w.refused(early) == (reasons.UNPROVEN, "delivery-not-recorded")
    w.b.authority.seq -= 1  # not used up: the operator signs with it next
    # the judge has the readings but waits (past the grace too), logging why once
    assert judge.verdicts(10) == [] and judge.verdicts(60) == []
    assert [line for line in judge.logs if "verdict waits" in line] == [
        f"market verdict waits agreement={w.bid.hex()[:8]} batch=0 reason=unproven "
        f"detail=delivery-not-recorded"]
    before = w.b.balance(w.bob.id)
    # sam commits dom-a's batch 0 (readings 0, 1); bob records it in dom-b
    r0 = w.commit(0, 0, 2)
    w.trust_head()
    assert w.b.run(w.deliver(r0))[0] == 0
    paid = _named(judge.verdicts(1), "delivery-paid")
    assert [e[2:4] for e in paid] == [[w.bid, 0]]
    assert w.b.balance(w.bob.id) == before + 2 * B_PRICE
    # batch 1: dom-a's has readings 2, 3; bob commits only reading 2 in dom-b
    r1 = w.commit(1, 2, 2)
    w.trust_head()
    assert w.b.run(w.deliver(r1))[0] == 0
    assert judge.block(w.b_commit(1, 2, 1, judge.node))[0] == 0
    failed = _named(judge.verdicts(1), "delivery-failed")
    assert [e[2:4] for e in failed] == [[w.bid, 1]]  # another layout: never paid
    assert w.b_agreement_record()["paid"] == 2


def test_an_unproven_batch_is_not_paid_and_its_escrow_goes_back_at_the_end(
        w: Resale, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    w.trust_head()
    assert w.b.run(w.agree(w.bid))[0] == 0
    judge = Judge(w, tmp_path, monkeypatch)
    assert judge.block(w.b_commit(0, 0, 2, judge.node))[0] == 0
    mallory_before, bob_before = w.b.balance(w.mallory.id), w.b.balance(w.bob.id)
    expiry = w.b_agreement_record()["expiry"]
    assert judge.verdicts(expiry - 1 - w.b.time) == []  # never proven: no verdict
    # the agreement's end: the operator's keeper closes it, the escrow goes back
    w.b.time, judge.ahead = expiry - 1, 1  # dom-b's next block is at the expiry
    judge.node.tick(w.b.state, judge.clock())
    (events,) = judge.run_sent(txm.TYPE_CLOSE)
    assert _named([events], "agreement-closed")
    assert w.b.balance(w.mallory.id) == mallory_before + QTY * B_PRICE
    assert w.b.balance(w.bob.id) == bob_before
    assert w.b_agreement_record()["paid"] == 0


def test_an_unlinked_agreement_is_judged_as_before(w: Resale, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """No purchase linked: the market pays on the stream alone (no hold)."""
    judge = Judge(w, tmp_path, monkeypatch)
    assert judge.block(w.b_commit(0, 0, 2, judge.node))[0] == 0
    assert market.payment_hold(w.b.state, w.bid, 0) is None
    paid = _named(judge.verdicts(1), "delivery-paid")
    assert [e[2:4] for e in paid] == [[w.bid, 0]]
