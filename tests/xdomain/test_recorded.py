"""Purchases recorded in the buyer's domain (gateway/xdomain/recorded.py,
XPURCHASE): bob, a buyer in dom-b, records in dom-b's state the agreement
he made in dom-a's market and each batch the supplier committed there, every
step proven by dom-b's gateway against headers of dom-a its light client
trusts. The record is in dom-b's state root (a board proves it with a state
proof). Each forgery or misuse is refused at ingress with its reason and
changes nothing: a receipt from a height dom-b does not trust, a swapped
header, changed events, another buyer, a second agree, a batch recorded
twice, a delivery of an unrecorded purchase, another or an unknown domain,
a frozen client; an expired client fails the included tx."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.contracts import runtime as crt
from gateway.db import verify
from gateway.market.ledger import rules as market
from gateway.xdomain import recorded
from shared import (
    cbor,
    commit_gateway,
    errors,
    header,
    merkle,
    messages,
    reasons,
    stateproof,
    stream,
    txdecode,
)
from shared import tx as txm
from shared import xpacket as xp
from tests.support.gwtest import Device, key
from tests.support.xdtest import Domain, create_client, relayer_of

A, B = "dom-a", "dom-b"
PRICE, QTY = 5, 4


class World:
    def __init__(self, tmp: Path) -> None:
        self.a = Domain(tmp / "a", A, {Device("sam", A).pub: 10, Device("bob", A).pub: 100})
        self.b = Domain(tmp / "b", B, {Device("bob", B).pub: 500,
                                       Device("mallory", B).pub: 500})
        create_client(self.b, self.a)
        a = self.a
        op = txm.device_id(a.authority.pub)
        assert a.run(a.authority.make(txm.TYPE_CONTRACT_ADMIN, {
            1: "deploy", 2: market.AGREEMENT_LABEL, 3: "agreement",
            4: market.AGREEMENT_VERSION, 5: {"operator": op, "fee_bps": 500}}))[0] == 0
        self.sam = a.device("sam")
        assert a.run(self.sam.make(txm.TYPE_OFFER, {1: "temperature", 2: "cC", 3: PRICE, 4: 1,
                                                    5: "", 6: 600, 7: 1}))[0] == 0
        demand = a.device("bob").make(txm.TYPE_DEMAND, {1: "temperature", 2: PRICE, 3: QTY,
                                                        4: 60, 5: "cheapest"})
        status, _, events = a.run(demand)
        assert status == 0
        self.aid = next(e[1] for e in events if e[0] == "match")
        self.demand = self.receipt(demand)
        self.roots: dict[int, bytes] = {}

    def receipt(self, message: bytes) -> bytes:
        r = self.a.store.get_receipt(txm.tx_id(message))
        assert r is not None
        return r

    def trust_head(self) -> None:
        """dom-b's client of dom-a takes dom-a's head (anyone may send it)."""
        h = self.a.store.head()
        assert h is not None
        r = relayer_of(self.a, self.b, "updater-%d" % h.height)
        blk = self.a.store.get_block(h.height)
        assert blk is not None and r.update(r.b, r.a, blk)

    def commit(self, batch: int, first: int, count: int) -> bytes:
        """sam streams `count` readings and commits their root in dom-a: the
        commit's receipt."""
        rs = [stream.reading(self.sam.priv, self.sam.id, self.aid, i, 2100 + i, -2)
              for i in range(first, first + count)]
        msg = self.sam.make(txm.TYPE_CONTRACT_CALL, {1: market.AGREEMENT, 2: "commit",
                                                     3: [self.aid, batch, first, count,
                                                         merkle.root(rs)], 4: 0, 5: 50_000})
        assert self.a.run(msg)[0] == 0
        self.roots[batch] = merkle.root(rs)
        return self.receipt(msg)

    def xpurchase(self, who: str, kind: str, rec: bytes, domain: str = A,
                  agreement: bytes | None = None) -> bytes:
        body: dict[int, Any] = {1: domain, 2: kind, 3: rec}
        if kind == recorded.DELIVER:
            body[4] = self.aid if agreement is None else agreement
        return self.b.device(who).make(txdecode.TYPE_XPURCHASE, body)

    def refused(self, message: bytes) -> tuple[str, str]:
        """The reason and detail of a refusal at dom-b's ingress; nothing changed."""
        root, height = self.b.state.root(), self.b.store.head().height  # type: ignore[union-attr]
        with pytest.raises(errors.TLError) as e:
            self.b.run(message)
        assert self.b.state.root() == root
        assert self.b.store.head().height == height  # type: ignore[union-attr]
        return e.value.reason, e.value.detail


@pytest.fixture
def w(tmp_path: Path) -> Iterator[World]:
    world = World(tmp_path)
    yield world
    world.a.close()
    world.b.close()


def test_a_purchase_and_its_deliveries_are_recorded_in_b(w: World) -> None:
    b, bob_id = w.b, w.b.device("bob").id
    assert w.refused(w.xpurchase("bob", "agree", w.demand)) == (errors.BAD_PROOF,
                                                                 "untrusted-height")
    w.trust_head()
    status, reason, events = b.run(w.xpurchase("bob", "agree", w.demand))
    assert (status, reason) == (0, "")
    assert events == [["xpurchase", A, w.aid, w.sam.id, PRICE, QTY]]
    (p,) = recorded.purchases(b.state)
    assert (p.domain, p.id, p.buyer, p.supplier, p.price, p.quantity, p.service) == (
        A, w.aid, bob_id, w.sam.id, PRICE, QTY, "temperature")
    assert (p.batches, p.readings) == (0, 0)
    # two batches committed in A, recorded one receipt at a time
    r0 = w.commit(0, 0, 2)
    r1 = w.commit(1, 2, 2)
    w.trust_head()
    assert w.refused(w.xpurchase("bob", "deliver", r0)) == (errors.BAD_PROOF,
                                                             "untrusted-height")
    for h in sorted({messages.parse(r)[messages.M_HEIGHT] for r in (r0, r1)}):
        blk = w.a.store.get_block(h)
        assert blk is not None
        r = relayer_of(w.a, b, "past-%d" % h)
        assert r.update(r.b, r.a, blk)
    status, _, events = b.run(w.xpurchase("bob", "deliver", r0))
    assert status == 0 and [e[:6] for e in events] == [["xdelivery", A, w.aid, 0, 0, 2]]
    assert b.run(w.xpurchase("bob", "deliver", r1))[0] == 0
    p = recorded.get(b.state, A, w.aid)
    assert p is not None and (p.batches, p.readings) == (2, 4)
    got = recorded.batches(b.state, p)
    assert [(x.batch, x.first, x.count) for x in got] == [(0, 0, 2), (1, 2, 2)]
    assert [x.root for x in got] == [w.roots[0], w.roots[1]]
    assert [x.height for x in got] == [messages.parse(r)[messages.M_HEIGHT] for r in (r0, r1)]
    # anyone in B proves the record against B's header (a board through its gateway)
    head, stored, proof = b.store.prove_kv(xp.purchase_key(A, w.aid))  # type: ignore[misc]
    assert stored == p.encode()
    vh = stateproof.value_hash(cbor.dumps([xp.purchase_key(A, w.aid), stored]))
    assert stateproof.check(head.fields["state_root"], stateproof.kv_key(
        xp.purchase_key(A, w.aid)), vh, proof)
    # replaying B's chain from genesis runs the same checks to the same state
    assert verify.verify_chain(b.store, b.ledger.genesis).ok


def test_forged_or_misused_records_are_refused(w: World) -> None:
    w.trust_head()
    # a receipt whose events were changed (another supplier), a header swapped
    m = cbor.loads(w.demand)
    m[messages.M_EVENTS] = [[*e[:3], bytes(16), *e[4:]] if e[0] == "match" else e
                            for e in m[messages.M_EVENTS]]
    assert w.refused(w.xpurchase("bob", "agree", cbor.dumps(m))) == (errors.BAD_PROOF,
                                                                      "receipt-proof")
    r_old = w.a.store.get_block(1)
    assert r_old is not None
    m = cbor.loads(w.demand)
    m[messages.M_HEADER] = r_old.header_bytes
    assert w.refused(w.xpurchase("bob", "agree", cbor.dumps(m)))[1] == "header-mismatch"
    assert w.refused(w.xpurchase("bob", "agree", b"\xa0")) == (errors.BAD_PROOF, "bad-reply")
    # malformed fields of a reply: each a typed refusal, never a crash of the gateway
    for k, v in ((messages.M_HEIGHT, (1 << 64) - 1), (messages.M_HEIGHT, -1), (messages.M_HEIGHT, "1"),
                 (messages.M_HEIGHT, True), (messages.M_HEADER, 7), (messages.M_INDEX, "0"),
                 (messages.M_SIZE, -3), (messages.M_PROOF, [b"x"]), (messages.M_EVENTS, 5),
                 (messages.M_STATUS, None), (messages.M_KIND, 9)):
        m = cbor.loads(w.demand)
        m[k] = v
        assert w.refused(w.xpurchase("bob", "agree", cbor.dumps(m)))[0] == errors.BAD_PROOF, (k, v)
    # mallory records bob's agreement: wrong buyer (ids are the same in both domains)
    assert w.refused(w.xpurchase("mallory", "agree", w.demand)) == (errors.NOT_AUTHORIZED,
                                                                     "wrong-buyer")
    # unknown domain, own domain, a delivery before the agreement
    assert w.refused(w.xpurchase("bob", "agree", w.demand, domain="dom-z"))[0] == \
        reasons.UNKNOWN_DOMAIN
    assert w.refused(w.xpurchase("bob", "agree", w.demand, domain=B)) == (
        reasons.WRONG_DOMAIN, "own-domain")
    r0 = w.commit(0, 0, 2)
    w.trust_head()
    assert w.refused(w.xpurchase("bob", "deliver", r0))[0] == reasons.UNKNOWN_AGREEMENT
    # the demand's receipt holds no commitment; a commit holds no match
    assert w.refused(w.xpurchase("bob", "agree", r0)) == (errors.BAD_PROOF, "not-matched")
    assert w.b.run(w.xpurchase("bob", "agree", w.demand))[0] == 0
    assert w.refused(w.xpurchase("bob", "agree", w.demand)) == (reasons.DUPLICATE, "purchase")
    assert w.refused(w.xpurchase("bob", "deliver", w.demand)) == (errors.BAD_PROOF,
                                                                   "not-committed")
    assert w.refused(w.xpurchase("mallory", "deliver", r0)) == (errors.NOT_AUTHORIZED,
                                                                 "wrong-buyer")
    assert w.b.run(w.xpurchase("bob", "deliver", r0))[0] == 0
    assert w.refused(w.xpurchase("bob", "deliver", r0)) == (reasons.DUPLICATE, "batch")
    # a malformed body: no agreement id on deliver
    bad = w.b.device("bob").make(txdecode.TYPE_XPURCHASE, {1: A, 2: "deliver", 3: r0})
    assert w.refused(bad)[0] == errors.BAD_TX
    p = recorded.get(w.b.state, A, w.aid)
    assert p is not None and (p.batches, p.readings) == (1, 2)


def test_a_frozen_client_records_nothing_and_an_expired_one_fails_the_tx(w: World) -> None:
    w.trust_head()
    agree = w.xpurchase("bob", "agree", w.demand)
    # expired: B's block time past the latest trusted header + the period
    w.b.submit(agree)
    blk = w.b.produce(step=10 * 3600)
    (r,) = blk.receipts
    assert (r.status, r.reason) == (messages.STATUS_FAILED, reasons.CLIENT_EXPIRED)
    assert recorded.purchases(w.b.state) == []
    # the owner reinstates the client; then two conflicting headers freeze it
    assert create_client(w.b, w.a)[0] == 0
    h = w.a.store.head()
    assert h is not None
    twin = header.encode(dict(h.fields, state_root=b"\x66" * 32))
    auth_priv, auth_pub = key("authority-" + A)
    cert = [[0, commit_gateway.vote(auth_priv, auth_pub, header.block_hash(twin))]]
    status, _, events = w.b.run(w.b.device("mallory").make(
        txdecode.TYPE_CLIENT_UPDATE, {1: A, 2: [[twin, cert, None]]}))
    assert status == 0 and events[-1] == ["client-frozen", A]
    assert w.refused(w.xpurchase("bob", "agree", w.demand)) == (reasons.CLIENT_FROZEN, A)


def test_a_commitment_emitted_by_another_contract_is_not_recorded(w: World) -> None:
    """A copy of the agreement contract, deployed in A under another label,
    where mallory opens an agreement with bob's agreement id and a
    confederate commits a batch for it: the event has the same shape, but
    not the agreement contract's address, so dom-b records no delivery."""
    a = w.a
    w.trust_head()
    assert w.b.run(w.xpurchase("bob", "agree", w.demand))[0] == 0
    copy = crt.contract_address("agreement-copy")
    assert a.run(a.authority.make(txm.TYPE_CONTRACT_ADMIN, {
        1: "deploy", 2: "agreement-copy", 3: "agreement", 4: 1,  # v1: open to anyone
        5: {"operator": txm.device_id(a.authority.pub), "fee_bps": 0}}))[0] == 0
    mallory, eve = a.device("mallory"), a.device("eve")
    for d in (mallory, eve):
        assert a.run(d.register())[0] == 0
    assert a.run(a.device("bob").transfer(mallory, 10))[0] == 0
    assert a.run(mallory.make(txm.TYPE_CONTRACT_CALL, {
        1: copy, 2: "open", 3: [w.aid, eve.id, 5, 2, a.time + 600, "temperature"], 4: 10,
        5: 50_000}))[0] == 0
    rs = [stream.reading(eve.priv, eve.id, w.aid, i, 0, 0) for i in range(2)]
    fake = eve.make(txm.TYPE_CONTRACT_CALL, {1: copy, 2: "commit",
                                             3: [w.aid, 0, 0, 2, merkle.root(rs)], 4: 0,
                                             5: 50_000})
    status, _, events = a.run(fake)
    assert status == 0 and [e[:3] for e in events if len(e) == 7] == [
        [copy, "delivery-committed", w.aid]]
    w.trust_head()
    assert w.refused(w.xpurchase("bob", "deliver", w.receipt(fake))) == (errors.BAD_PROOF,
                                                                          "not-committed")
    p = recorded.get(w.b.state, A, w.aid)
    assert p is not None and p.batches == 0 and recorded.batches(w.b.state, p) == []


def test_the_client_is_checked_once_per_check_of_a_record(w: World,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """XPURCHASE checks B's client of A once at admission and once at
    execution (known and not frozen: precheck, with no block time), and its
    expiry once, at the block's time (apply), not again inside the proof of
    the receipt nor in apply."""
    from gateway.xdomain import client as lc

    usable: list[int | None] = []
    expired: list[int] = []
    real_usable, real_expired = lc.usable, lc.expired

    def count_usable(view: Any, domain: str, now: int | None) -> Any:
        usable.append(now)
        return real_usable(view, domain, now)

    def count_expired(view: Any, c: Any, now: int) -> bool:
        expired.append(now)
        return real_expired(view, c, now)

    monkeypatch.setattr(lc, "usable", count_usable)
    monkeypatch.setattr(lc, "expired", count_expired)
    w.trust_head()
    r0 = w.commit(0, 0, 2)
    w.trust_head()
    for msg in (w.xpurchase("bob", "agree", w.demand), w.xpurchase("bob", "deliver", r0)):
        usable.clear()
        expired.clear()
        assert w.b.run(msg)[0] == 0
        assert usable == [None, None]  # admission, then execution's precheck
        assert expired == [w.b.time]  # the block's time, once
