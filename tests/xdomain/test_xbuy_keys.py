"""The cross-domain buyer's readings across a supplier's key rotation
(tools/xbuy.Delivery): readings are kept under every key of the supplier
proven from A's state; those under a key not proven yet wait in a bounded
stash and are taken once the key is proven; a batch is checked under the
first key proven at or after its commit that signed all its readings."""

from __future__ import annotations

from typing import Any

from gateway.xdomain import purchase
from shared import merkle, stream
from shared import tx as txm
from tests.support.gwtest import Device
from tools import relay, xbuy
from tools.keys import KeyPair

AID = bytes(range(16))


def test_readings_under_a_rotated_key_are_stashed_until_it_is_proven() -> None:
    old, new, mallory = Device("sam"), Device("sam-2"), Device("mallory")
    sup = old.id
    ag = purchase.ProvenAgreement(AID, bytes(16), sup, 5, 4, "temperature", 1)

    def reading(who: Device, i: int, aid: bytes = AID) -> bytes:
        return stream.reading(who.priv, sup, aid, i, 2100 + i, -2)

    d = xbuy.Delivery(ag, [purchase.ProvenKey(sup, old.pub, 3)])
    first = [reading(old, 0), reading(old, 1)]
    later = [reading(new, 2), reading(new, 3)]
    forged = reading(mallory, 2)
    for r in [*first, forged, *later, reading(old, 9), reading(old, 1, bytes(16))]:
        d.receive(r)
    assert sorted(d.readings) == [0, 1]  # only the proven key's, in range, of this agreement
    assert set(d.stash) >= {forged, *later}
    c0 = purchase.ProvenCommitment(0, 0, 2, merkle.root(first), 2)
    c1 = purchase.ProvenCommitment(1, 2, 2, merkle.root(later), 7)
    got = d.batch(c0)
    assert got is not None and got[0].key == old.pub and got[1] == first
    assert [i for i, _, _ in purchase.check_batch(ag, c0, *got)] == [0, 1]
    assert d.batch(c1) is None  # committed after the old key's proof: waits for a newer one
    d.add_key(purchase.ProvenKey(sup, new.pub, 8))  # proven after the rotation
    assert forged in d.stash and not set(later) & set(d.stash)
    got = d.batch(c1)
    assert got is not None and got[0].key == new.pub and got[1] == later
    assert [v for _, v, _ in purchase.check_batch(ag, c1, *got)] == [2102, 2103]
    # the stash is bounded: a flood of unverifiable messages is not kept
    for i in range(xbuy.MAX_STASH + 10):
        d.receive(reading(mallory, i % 4))
    assert len(d.stash) == xbuy.MAX_STASH


def test_a_look_for_commitments_reads_a_from_the_agreements_height() -> None:
    """CrossBuyer.check runs every 0.2 s while a purchase is delivered (xdomain
    buy, the reseller): it reads A's contract calls from the height of the
    agreement's DEMAND (no commitment of it is older), not the whole chain
    at each look (chain queries, for A read over its broker)."""
    asked: list[tuple[int, int]] = []

    class AStore:
        def txs_of_type(self, type_: int, since_height: int = 0) -> list[Any]:
            asked.append((type_, since_height))
            return []

    a = relay.Side("dom-a", None, "mqtt://127.0.0.1:1", b"", AStore())
    b = relay.Side("dom-b", None, "mqtt://127.0.0.1:2", b"", None)
    bob = Device("bob")
    buyer = xbuy.CrossBuyer(KeyPair(bob.priv, bob.pub), b, a, line=lambda s: None)
    ag = purchase.ProvenAgreement(AID, bytes(16), Device("sam").id, 5, 4, "temperature", 41)
    assert buyer.check(xbuy.Delivery(ag, [])) == []
    assert asked == [(txm.TYPE_CONTRACT_CALL, 41)]
