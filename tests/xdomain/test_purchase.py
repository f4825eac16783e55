"""A cross-domain service purchase, in-process (gateway/xdomain/purchase.py):
bob, a buyer in dom-b, pays with a packet B -> A (credited to his own id in
dom-a), demands temperature readings in dom-a's market, and checks the
agreement, the supplier's delivery commitments and the readings against
headers of dom-a that dom-b's light client trusts. Every forgery is refused
with its detail: a receipt from a height B does not trust, a receipt whose
events were changed, a header swapped, a tampered, reordered, missing or
uncommitted reading, another key posing as the supplier, an offer proof
for another value, a frozen client."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.identity import statements as itx
from gateway.ledger import keys
from gateway.market.ledger import rules as market
from gateway.xdomain import purchase
from shared import cbor, commit_gateway, errors, header, merkle, messages, reasons, stream, txdecode
from shared import tx as txm
from shared import xpacket as xp
from tests.support.gwtest import Device, key
from tests.support.idtest import FakeRegistry, Person
from tests.support.xdtest import Domain, create_client, relayer_of
from tools.keys import KeyPair

A, B = "dom-a", "dom-b"
PRICE, QTY = 5, 4


@pytest.fixture
def doms(tmp_path: Path) -> Iterator[tuple[Domain, Domain]]:
    a = Domain(tmp_path / "a", A, {Device("sam", A).pub: 10})
    b = Domain(tmp_path / "b", B, {Device("bob", B).pub: 500})
    create_client(b, a)
    create_client(a, b)
    op = txm.device_id(a.authority.pub)
    status, reason, _ = a.run(a.authority.make(txm.TYPE_CONTRACT_ADMIN, {
        1: "deploy", 2: market.AGREEMENT_LABEL, 3: "agreement", 4: market.AGREEMENT_VERSION,
        5: {"operator": op, "fee_bps": 500}}))
    assert status == 0, reason
    yield a, b
    a.close()
    b.close()


def receipt(d: Domain, message: bytes) -> bytes:
    r = d.store.get_receipt(txm.tx_id(message))
    assert r is not None
    return r


def trust(b: Domain, a: Domain, height: int) -> None:
    """B's client of A takes A's header at `height` (anyone may send it)."""
    r = relayer_of(a, b, "updater-%d" % height)
    blk = a.store.get_block(height)
    assert blk is not None and r.update(r.b, r.a, blk)


def prove_key(b: Domain, a: Domain, who: bytes) -> purchase.ProvenKey:
    """`who`'s key in A's state at A's head, proven against that header in B."""
    head, leaf, proof = a.store.prove_account(who)  # type: ignore[misc]
    trust(b, a, head.height)
    return purchase.supplier_key(b.state, a.domain, head.height, who, leaf, proof)


def refused(detail: str, fn: Any, *args: Any) -> None:
    with pytest.raises(errors.ProofError) as e:
        fn(*args)
    assert e.value.detail == detail


def test_a_buyer_in_b_buys_and_checks_readings_of_a(doms) -> None:
    a, b = doms
    sam, bob_a, bob_b = a.device("sam"), a.device("bob"), b.device("bob")
    view = b.state
    total = a.total() + b.total()
    # the offer of A, proven against a header B trusts
    assert a.run(sam.make(txm.TYPE_OFFER, {1: "temperature", 2: "cC", 3: PRICE, 4: 1, 5: "",
                                           6: 600, 7: 1}))[0] == 0
    h_offer = a.store.head().height  # type: ignore[union-attr]
    head, stored, proof = a.store.prove_kv(keys.offer("temperature", sam.id))  # type: ignore[misc]
    assert head.height == h_offer and stored is not None
    refused("untrusted-height", purchase.offer, view, A, h_offer, "temperature", sam.id,
            stored, proof)
    trust(b, a, h_offer)
    o = purchase.offer(view, A, h_offer, "temperature", sam.id, stored, proof)
    assert (o.supplier, o.price) == (sam.id, PRICE)
    cheaper = cbor.dumps({**cbor.loads(stored), 3: 1})
    refused("offer-proof", purchase.offer, view, A, h_offer, "temperature", sam.id, cheaper,
            proof)
    # the payment crosses as a packet: bob in B -> bob's own id in A
    a.run(bob_a.register())
    amount = PRICE * QTY
    assert b.run(bob_b.make(txdecode.TYPE_SEND, {1: A, 2: bob_a.id, 3: amount, 4: 0,
                                                 5: b.time + 600}))[0] == 0
    ba = relayer_of(b, a, "rel-ba")
    ba.run_once()  # recv in A
    ba.run_once()  # ack in B
    assert a.balance(bob_a.id) == amount and b.balance(bob_b.id) == 500 - amount
    assert list(b.state.kv_range(xp.PACKET + A.encode() + b"\x00")) == []  # closed
    # bob demands in A; the agreement is proven in B from the DEMAND's receipt
    demand = bob_a.make(txm.TYPE_DEMAND, {1: "temperature", 2: PRICE, 3: QTY, 4: 60,
                                          5: "cheapest"})
    assert a.run(demand)[0] == 0
    d_rec = receipt(a, demand)
    refused("untrusted-height", purchase.agreement, view, A, d_rec)
    trust(b, a, a.store.head().height)  # type: ignore[union-attr]
    ag = purchase.agreement(view, A, d_rec)
    assert (ag.buyer, ag.supplier, ag.price, ag.quantity) == (bob_a.id, sam.id, PRICE, QTY)
    assert ag.id == txm.tx_id(demand)[:16]
    # the supplier streams off chain and commits the batch's root in A
    readings = [stream.reading(sam.priv, sam.id, ag.id, i, 2100 + i, -2) for i in range(QTY)]
    commit = sam.make(txm.TYPE_CONTRACT_CALL, {1: market.AGREEMENT, 2: "commit",
                                               3: [ag.id, 0, 0, QTY, merkle.root(readings)],
                                               4: 0, 5: 50_000})
    assert a.run(commit)[0] == 0
    c_rec = receipt(a, commit)
    trust(b, a, a.store.head().height)  # type: ignore[union-attr]
    (c,) = purchase.commitments(view, A, c_rec, ag.id)
    assert (c.batch, c.first, c.count, c.root) == (0, 0, QTY, merkle.root(readings))
    sam_key = prove_key(b, a, sam.id)
    assert sam_key.key == sam.pub and sam_key.height >= c.height
    got = purchase.check_batch(ag, c, sam_key, readings)
    assert [v for _, v, _ in got] == [2100, 2101, 2102, 2103]
    # forgeries
    refused("not-committed", purchase.commitments, view, A, c_rec, bytes(16))
    bad = bytearray(readings[2])
    bad[-1] ^= 1
    refused("bad-reading", purchase.check_batch, ag, c, sam_key, [*readings[:2], bytes(bad),
                                                                    readings[3]])
    refused("bad-reading", purchase.check_batch, ag, c, sam_key, [readings[1], readings[0],
                                                                    *readings[2:]])
    refused("missing-reading", purchase.check_batch, ag, c, sam_key, readings[:3])
    other = [stream.reading(sam.priv, sam.id, ag.id, i, 9999, -2) for i in range(QTY)]
    refused("not-in-root", purchase.check_batch, ag, c, sam_key, other)
    mallory = Device("mallory", A)
    faked = [stream.reading(mallory.priv, sam.id, ag.id, i, 2100 + i, -2) for i in range(QTY)]
    refused("bad-reading", purchase.check_batch, ag, c, sam_key, faked)
    assert a.run(mallory.register())[0] == 0
    refused("wrong-supplier-key", purchase.check_batch, ag, c, prove_key(b, a, mallory.id), faked)
    head, leaf, proof = a.store.prove_account(sam.id)  # type: ignore[misc]
    trust(b, a, head.height)
    posing = cbor.loads(leaf)
    posing[1] = mallory.pub  # sam's record with mallory's key: not in A's state
    refused("key-proof", purchase.supplier_key, view, A, head.height, sam.id,
            cbor.dumps(posing), proof)
    m = cbor.loads(c_rec)
    m[messages.M_EVENTS] = [[e[0], e[1], e[2], e[3], e[4], e[5], merkle.root(other)]
                            if len(e) == 7 else e for e in m[messages.M_EVENTS]]
    refused("receipt-proof", purchase.commitments, view, A, cbor.dumps(m), ag.id)
    m = cbor.loads(c_rec)
    m[messages.M_HEADER] = cbor.loads(d_rec)[messages.M_HEADER]
    refused("header-mismatch", purchase.commitments, view, A, cbor.dumps(m), ag.id)
    # value: nothing minted or lost over both domains (the packet closed)
    assert a.total() + b.total() == total


def test_a_frozen_or_unknown_client_proves_no_purchase(doms) -> None:
    """Once two conflicting headers of A froze B's client, nothing of A is
    believed in B, not even what it trusted before; a domain B keeps no
    client of proves nothing."""
    a, b = doms
    sam = a.device("sam")
    a.run(sam.make(txm.TYPE_OFFER, {1: "temperature", 2: "cC", 3: PRICE, 4: 1, 5: "",
                                    6: 600, 7: 1}))
    head, stored, proof = a.store.prove_kv(keys.offer("temperature", sam.id))  # type: ignore[misc]
    h = head.height
    trust(b, a, h)
    assert purchase.offer(b.state, A, h, "temperature", sam.id, stored, proof).price == PRICE
    refused(reasons.UNKNOWN_DOMAIN, purchase.offer, b.state, "dom-z", h, "temperature",
            sam.id, stored, proof)
    blk = a.store.get_block(h)
    assert blk is not None
    twin = header.encode(dict(blk.fields, state_root=b"\x66" * 32))
    auth_priv, auth_pub = key("authority-" + A)
    cert = [[0, commit_gateway.vote(auth_priv, auth_pub, header.block_hash(twin))]]
    status, _, events = b.run(b.device("bob").make(txdecode.TYPE_CLIENT_UPDATE,
                                                   {1: A, 2: [[twin, cert, None]]}))
    assert status == 0 and events[-1] == ["client-frozen", A]
    refused(reasons.CLIENT_FROZEN, purchase.offer, b.state, A, h, "temperature", sam.id,
            stored, proof)


def test_a_supplier_that_rotated_its_key_is_checked_under_its_current_key(tmp_path: Path) -> None:
    """sam, an owned device of A, delivers a batch, rotates its key (same
    id), then delivers another. B proves sam's key from sam's record in A's
    state (keyed by the birth id): the batch before the rotation checks
    under the old key, the one after under the new key; readings of the
    later batch signed with the retired key are refused, and so is a key
    proven before the later commit."""
    owner, sam, sam_new = Person("owner"), Device("sam", A), Device("sam-2", A)
    a = Domain(tmp_path / "a", A, {Device("bob", A).pub: 100}, owner=owner.pub)
    b = Domain(tmp_path / "b", B, {Device("bob", B).pub: 500})
    try:
        a.ledger.registry = FakeRegistry(sam)
        create_client(b, a)
        assert a.run(txm.make(owner.private, owner.id, txm.TYPE_CONTRACT_ADMIN, A, owner.next(),
                              0, {1: "deploy", 2: market.AGREEMENT_LABEL, 3: "agreement",
                                  4: market.AGREEMENT_VERSION,
                                  5: {"operator": owner.id, "fee_bps": 500}}))[0] == 0
        st = itx.claim_statement(sam.priv, sam.pub, A, owner.id)
        assert a.run(itx.build_claim(owner.keypair, A, sam.pub, st, owner.next()))[0] == 0
        assert a.run(sam.make(txm.TYPE_OFFER, {1: "temperature", 2: "cC", 3: PRICE, 4: 1,
                                               5: "", 6: 600, 7: 1}))[0] == 0
        demand = a.device("bob").make(txm.TYPE_DEMAND, {1: "temperature", 2: PRICE, 3: QTY,
                                                        4: 60, 5: "cheapest"})
        bob_a = a.device("bob")
        assert a.run(itx.build_grant(owner.keypair, A, sam.id, bob_a.id, "buy",
                                     owner.next(), bob_a.pub))[0] == 0  # sam is owned
        assert a.run(demand)[0] == 0
        trust(b, a, a.store.head().height)  # type: ignore[union-attr]
        ag = purchase.agreement(b.state, A, receipt(a, demand))

        def deliver(batch: int, signer: Device) -> tuple[purchase.ProvenCommitment, list[bytes]]:
            first = 2 * batch
            rs = [stream.reading(signer.priv, sam.id, ag.id, i, 2000 + i, -2)
                  for i in range(first, first + 2)]
            commit = sam.make(txm.TYPE_CONTRACT_CALL, {1: market.AGREEMENT, 2: "commit",
                                                       3: [ag.id, batch, first, 2,
                                                           merkle.root(rs)], 4: 0, 5: 50_000})
            assert a.run(commit)[0] == 0
            trust(b, a, a.store.head().height)  # type: ignore[union-attr]
            (c,) = purchase.commitments(b.state, A, receipt(a, commit), ag.id)
            return c, rs

        c0, r0 = deliver(0, sam)
        old_key = prove_key(b, a, sam.id)
        assert old_key.key == sam.pub
        assert [i for i, _, _ in purchase.check_batch(ag, c0, old_key, r0)] == [0, 1]
        # the rotation: the owner approves, the device signs with its current key
        approval = itx.rotate_approval(owner.keypair, sam.id, sam_new.pub)
        sam.seq += 1
        assert a.run(itx.build_rotate(KeyPair(sam.priv, sam.pub), A, sam_new.pub, approval,
                                      sam.seq, device_id=sam.id))[0] == 0
        sam.priv, sam.pub = sam_new.priv, sam_new.pub  # same id, new key
        retired = Device("sam", A)  # the birth key, now retired
        c1, r1 = deliver(1, sam)
        new_key = prove_key(b, a, sam.id)
        assert new_key.key == sam_new.pub != retired.pub and txm.device_id(new_key.key) != sam.id
        assert [v for _, v, _ in purchase.check_batch(ag, c1, new_key, r1)] == [2002, 2003]
        refused("stale-key", purchase.check_batch, ag, c1, old_key, r1)
        c1_old = purchase.ProvenCommitment(c1.batch, c1.first, c1.count,
                                           merkle.root(stale := [
                                               stream.reading(retired.priv, sam.id, ag.id, i,
                                                              2000 + i, -2) for i in (2, 3)]),
                                           c1.height)
        refused("bad-reading", purchase.check_batch, ag, c1_old, new_key, stale)
    finally:
        a.close()
        b.close()
