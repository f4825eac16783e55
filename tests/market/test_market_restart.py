"""What the market side of the gateway (gateway/market/node/service.py) tells a
device about its state: MATCHes sealed with the (height, order) a board
orders them by (two of one block told apart), and, when a device says
`online`, its ACCOUNT and open agreements again, sealed above every earlier
MATCH, at most once per ANNOUNCE_S per device."""

from __future__ import annotations

from gateway.market.node.service import ANNOUNCE_S, RESUME_ORDER, MarketNode
from shared import messages, notice, p256, topics
from shared.messages_gateway import (
    M_AGREEMENT,
    M_BALANCE,
    M_EXPIRY,
    M_LEFT,
    M_NEXT,
    M_ORDER,
    M_ROLE,
)
from tests.support.gwtest import DOMAIN
from tests.support.mktest import Market, event


class Notices:
    """The notices a MarketNode publishes, opened under the authority key."""

    def __init__(self, m: Market) -> None:
        self.authority = p256.public_key(m.node.ledger.authority_priv)
        self.sent: list[tuple[str, dict, bool]] = []

    def publish(self, topic: str, payload: bytes, retain: bool) -> None:
        if topic.endswith("/rx"):
            self.sent.append((topic, notice.open_notice(payload, self.authority), retain))

    def to(self, device: bytes, kind: int) -> list[dict]:
        rx = topics.rx(DOMAIN, device.hex())
        return [n for t, n, _ in self.sent if t == rx and n[messages.M_KIND] == kind]


def market_node(m: Market, tmp_path, out: Notices) -> MarketNode:
    node = MarketNode(DOMAIN, tmp_path / "streams", m.node.ledger.authority_priv, out.publish,
                      lambda msg: None, lambda line: None)
    node.start(m.node.state)
    return node


def test_matches_of_one_block_are_ordered(tmp_path):
    m = Market(tmp_path / "gw", {"supplier": 1000, "b1": 1000, "b2": 1000})
    m.run(m.demand("b1", wait=600), m.demand("b2", wait=600))  # nothing offered: both wait
    (tmp_path / "streams").mkdir()
    out = Notices(m)
    node = market_node(m, tmp_path, out)
    m.run(m.offer("supplier", interval=2))  # one OFFER matches both waiting demands
    node.on_block(m.block, m.node.state, [])
    h = m.block.height
    sup = out.to(m["supplier"].id, messages.KIND_MATCH)
    assert [(n[messages.M_HEIGHT], n[M_ORDER]) for n in sup] == [(h, 0), (h, 1)]
    for buyer, order in (("b1", 0), ("b2", 1)):
        (n,) = out.to(m[buyer].id, messages.KIND_MATCH)
        assert (n[messages.M_HEIGHT], n[M_ORDER], n[M_ROLE]) == (h, order, "buyer")
        assert M_NEXT not in n and n[M_LEFT] == n[M_EXPIRY] - m.block.time > 0


def test_an_online_device_is_told_its_state_again_once_per_interval(tmp_path):
    m = Market(tmp_path / "gw", {"supplier": 1000, "buyer": 1000})
    m.run(m.offer("supplier", interval=2))
    aid = event(m.run(m.demand("buyer", max_price=5, quantity=8)), "match")[1]
    (tmp_path / "streams").mkdir()
    out = Notices(m)
    node = market_node(m, tmp_path, out)
    head = m.node.ledger.head
    buyer, sup = m["buyer"].id, m["supplier"].id

    def online(dev: bytes, at: float, payload: bytes = b"online") -> None:
        node.on_status(topics.status(DOMAIN, dev.hex()), payload, m.node.state, head,
                       now=head.time + at)

    online(buyer, 1)
    (acc,) = out.to(buyer, messages.KIND_ACCOUNT)
    assert (acc[M_BALANCE], acc[messages.M_HEIGHT]) == (m.balance("buyer"), head.height)
    assert [r for _, n, r in out.sent if n is acc] == [True]  # retained
    (told,) = out.to(buyer, messages.KIND_MATCH)
    assert (told[M_AGREEMENT], told[M_ROLE], told[M_NEXT]) == (aid, "buyer", 0)
    assert (told[messages.M_HEIGHT], told[M_ORDER]) == (head.height, RESUME_ORDER + 64)
    assert told[M_LEFT] == told[M_EXPIRY] - (head.time + 1)  # what is left of it

    online(buyer, 1 + ANNOUNCE_S - 0.5)  # again too soon (anyone may say it): nothing
    online(sup, 2, b"offline")
    online(b"\x99" * 16, 2)  # not a device of the chain
    node.on_status(topics.status(DOMAIN, "zz"), b"online", m.node.state, head)
    assert len(out.sent) == 2

    online(buyer, 1 + ANNOUNCE_S)  # later: told again, above the last one
    again = out.to(buyer, messages.KIND_MATCH)[-1]
    assert again[M_ORDER] > told[M_ORDER] and again[M_AGREEMENT] == aid
    online(sup, 2)
    (s,) = out.to(sup, messages.KIND_MATCH)
    assert (s[M_ROLE], s[M_NEXT]) == ("supplier", 0)
