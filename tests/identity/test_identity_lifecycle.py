"""The domain chain's identity state machine (docs/IDENTITY.md §2): every
lifecycle step and every refusal, through ingress (validate + mempool) and
block production, with a fake registry. No broker."""

from __future__ import annotations

import pytest

from gateway.identity import statements as itx
from gateway.ledger.state import (
    ACTIVE,
    DECOMMISSIONED,
    KIND_AUTHORITY,
    KIND_DEVICE,
    KIND_PERSON,
    REVOKED,
    RIGHT_SUBMIT,
)
from shared import cose, errors
from shared import tx as txm
from tests.support.gwtest import DOMAIN, Device, Node
from tests.support.idtest import Person, World, signer


def test_genesis_owner_is_a_claimant_person(world: World) -> None:
    o = world.rec(world.owner)
    assert (o.kind, o.status, o.claimant, o.pubkey) == (KIND_PERSON, ACTIVE, True,
                                                        world.owner.pub)
    auth = world.node.state.get(world.node.genesis.authority_id)
    assert auth.kind == KIND_AUTHORITY
    assert world.node.ledger.rules.owner_id == world.owner.id


def test_register_refused_under_claimed_admission(world: World) -> None:
    assert world.refused(world.sensor.register()) == (errors.NOT_AUTHORIZED,
                                                      "admission-claimed")


def test_claim_creates_an_owned_device_that_may_submit(world: World) -> None:
    s = world.sensor
    assert world.refused(s.reading()) == (errors.UNKNOWN_DEVICE, errors.UNKNOWN_DEVICE)
    s.seq = 0
    events = world.commit(world.claim(s))
    assert events == [[["claim", s.id, world.owner.id]]]
    r = world.rec(s)
    assert (r.pubkey, r.last_seq, r.balance, r.kind, r.status, r.owner) == (
        s.pub, 0, 0, KIND_DEVICE, ACTIVE, world.owner.id)
    assert r.acl == ((s.id, (RIGHT_SUBMIT,)),)
    world.commit(s.reading(), s.reading(seq=7))  # any seq >= 1
    assert world.rec(s).last_seq == 7


def test_device_may_submit_right_after_its_pending_claim(world: World) -> None:
    s = world.sensor
    world.node.submit_all([world.claim(s), s.reading(), s.reading()])
    b = world.node.produce()
    assert len(b.txs) == 3 and not b.dropped


def test_claim_without_a_valid_device_signature(world: World) -> None:
    s = world.sensor
    # statement signed by another key
    forged = itx.claim_statement(world.plug.priv, world.plug.pub, DOMAIN, world.owner.id)
    assert world.refused(world.claim(s, statement=forged)) == (errors.BAD_SIGNATURE,
                                                               "statement")
    # one flipped signature bit
    good = bytearray(itx.claim_statement(s.priv, s.pub, DOMAIN, world.owner.id))
    good[-1] ^= 1
    assert world.refused(world.claim(s, statement=bytes(good)))[0] == errors.BAD_SIGNATURE
    # not a COSE_Sign1 at all
    assert world.refused(world.claim(s, statement=b"\x01\x02")) == (errors.BAD_TX,
                                                                    "bad-statement")
    # signed by the device, but for another claimant / another domain / another action
    for payload in (itx.claim_payload(DOMAIN, world.bob.id), itx.claim_payload("other", world.owner.id),
                    itx.recover_payload(DOMAIN, s.id)):
        st = cose.sign1(s.priv, payload, s.id)
        assert world.refused(world.claim(s, statement=st)) == (errors.BAD_TX,
                                                               "statement-mismatch")
    assert world.rec(s) is None


def test_claim_of_a_device_not_in_the_registry(world: World, tmp_path) -> None:
    assert world.refused(world.claim(world.stranger)) == (errors.NOT_IN_REGISTRY,
                                                          errors.NOT_IN_REGISTRY)
    assert world.rec(world.stranger) is None
    w2 = World(tmp_path / "noreg", registry=None)
    try:
        assert w2.refused(w2.claim(w2.sensor)) == (errors.NOT_IN_REGISTRY, "no-registry")
    finally:
        w2.close()


def test_registry_that_fails_admits_nothing(tmp_path) -> None:
    def broken(pub: bytes) -> object:
        raise OSError("database is locked")

    w = World(tmp_path / "broken", registry=broken)
    try:
        assert w.refused(w.claim(w.sensor)) == (errors.NOT_IN_REGISTRY, "registry-unavailable")
    finally:
        w.close()


def test_claim_of_a_device_already_owned(world: World) -> None:
    s = world.sensor
    first = world.claim(s)
    assert world.node.submit(first)
    # while the first claim is pending
    with pytest.raises(errors.TLError) as ei:
        world.node.submit(world.claim(s))
    assert ei.value.reason == errors.ALREADY_OWNED
    world.node.produce()
    assert world.refused(world.claim(s)) == (errors.ALREADY_OWNED, errors.ALREADY_OWNED)
    # by another person who became a claimant
    world.commit(world.claim(world.plug), world.transfer(world.plug, world.bob))
    assert world.refused(world.claim(s, world.bob))[0] == errors.ALREADY_OWNED
    assert world.rec(s).owner == world.owner.id


def test_claim_by_someone_who_is_not_a_claimant(world: World) -> None:
    # unknown person
    assert world.refused(world.claim(world.sensor, world.carol))[0] == errors.UNKNOWN_DEVICE
    # a person known only as a grantee
    world.commit(world.claim(world.plug), world.grant(world.plug, world.carol, "read"))
    assert world.rec(world.carol).kind == KIND_PERSON and not world.rec(world.carol).claimant
    assert world.refused(world.claim(world.sensor, world.carol)) == (errors.NOT_AUTHORIZED,
                                                                     "not-claimant")
    # a claimed device cannot claim either
    st = itx.claim_statement(world.sensor.priv, world.sensor.pub, DOMAIN, world.plug.id)
    world.plug.seq += 1
    m = itx.build_claim(signer(world.plug), DOMAIN, world.sensor.pub, st, world.plug.seq)
    assert world.refused(m) == (errors.NOT_AUTHORIZED, "not-claimant")


def test_claim_refused_under_closed_admission(tmp_path) -> None:
    w = World(tmp_path / "closed", admission="closed")
    try:
        assert w.refused(w.claim(w.sensor)) == (errors.NOT_AUTHORIZED, "admission-closed")
    finally:
        w.close()


def test_claims_work_in_an_open_domain_with_an_owner(tmp_path) -> None:
    w = World(tmp_path / "open", admission="open")
    try:
        w.commit(w.claim(w.sensor), w.stranger.register())
        assert w.rec(w.sensor).owner == w.owner.id
        assert w.rec(w.stranger).owner == b""
        # a self-registered device is not claimable: it is known, unowned
        w.registry.add(w.stranger)
        assert w.refused(w.claim(w.stranger))[0] == errors.ALREADY_REGISTERED
    finally:
        w.close()


def test_transfer_not_signed_by_the_owner(world: World) -> None:
    s = world.sensor
    world.commit(world.claim(s))
    root = world.node.state.root()
    # a known claimant person who does not own it
    world.commit(world.claim(world.plug), world.transfer(world.plug, world.bob))
    assert world.refused(world.transfer(s, world.carol, by=world.bob)) == (
        errors.NOT_OWNER, errors.NOT_OWNER)
    # the device itself
    s.seq += 1
    m = itx.build_owner_transfer(signer(s), DOMAIN, s.id, world.carol.pub, s.seq)
    assert world.refused(m)[0] == errors.NOT_OWNER
    # signed by bob's key but naming the owner as sender: bad signature
    forged = cose.sign1(world.bob.private, txm.payload(
        txm.TYPE_OWNER_TRANSFER, DOMAIN, 99, 0, {1: s.id, 2: world.bob.pub}), world.owner.id)
    assert world.refused(forged)[0] == errors.BAD_SIGNATURE
    assert world.rec(s).owner == world.owner.id
    assert root != world.node.state.root()  # (the plug moved, the sensor did not)
    # unknown device, a person instead of a device, transfer to oneself
    assert world.refused(world.transfer(world.cam, world.bob))[0] == errors.UNKNOWN_DEVICE
    m = itx.build_owner_transfer(world.owner, DOMAIN, world.bob.id, world.carol.pub,
                                 world.owner.next())
    assert world.refused(m)[0] == errors.UNKNOWN_DEVICE
    assert world.refused(world.transfer(s, world.owner)) == (errors.BAD_TX, "same-owner")
    # the new owner must be a person
    m = itx.build_owner_transfer(world.owner, DOMAIN, s.id, world.plug.pub, world.owner.next())
    assert world.refused(m) == (errors.NOT_AUTHORIZED, "new-owner-not-a-person")


def test_previous_owner_loses_every_right_after_transfer(world: World) -> None:
    s, o, bob, carol = world.sensor, world.owner, world.bob, world.carol
    world.commit(world.claim(s), world.grant(s, carol, "read"), world.grant(s, carol, "buy"),
                 world.revoke(s, s, RIGHT_SUBMIT))
    assert world.rec(s).rights_of(carol.id) == ("buy", "read")
    events = world.commit(world.transfer(s, bob))
    assert events == [[["owner", s.id, bob.id]]]
    r = world.rec(s)
    assert r.owner == bob.id
    # grants made by the previous owner dropped; rights reset to a fresh claim
    assert r.acl == ((s.id, (RIGHT_SUBMIT,)),)
    b = world.rec(bob)
    assert (b.kind, b.claimant, b.pubkey) == (KIND_PERSON, True, bob.pub)
    # the previous owner can no longer manage it
    assert world.refused(world.grant(s, carol, "read", by=o))[0] == errors.NOT_OWNER
    assert world.refused(world.retire(s, "revoke", by=o))[0] == errors.NOT_OWNER
    assert world.refused(world.transfer(s, o, by=o))[0] == errors.NOT_OWNER
    # the new owner can, and the device keeps working
    world.commit(world.grant(s, carol, "read", by=bob), s.reading())
    # bob, now a claimant, claims a device of his own
    world.commit(world.claim(world.cam, bob))
    assert world.rec(world.cam).owner == bob.id


def test_grant_and_revoke_rights(world: World) -> None:
    s, carol = world.sensor, world.carol
    world.commit(world.claim(s))
    # unknown principal without its key
    assert world.refused(world.grant(s, carol, "read", with_key=False)) == (
        errors.UNKNOWN_DEVICE, "principal")
    events = world.commit(world.grant(s, carol, "read"))
    assert events == [[["grant", carol.id, "read", s.id]]]
    assert world.rec(carol).kind == KIND_PERSON
    world.commit(world.grant(s, carol, "buy", with_key=False),  # known now
                 world.grant(s, carol, "read"))  # already held: accepted, no change
    assert world.rec(s).rights_of(carol.id) == ("buy", "read")
    world.commit(world.revoke(s, carol, "read"), world.revoke(s, carol, "submit"))
    assert world.rec(s).rights_of(carol.id) == ("buy",)
    world.commit(world.revoke(s, carol, "buy"))
    assert world.rec(s).acl == ((s.id, (RIGHT_SUBMIT,)),)
    # the owner always holds every right
    m = itx.build_grant(world.owner, DOMAIN, s.id, world.owner.id, "read", world.owner.next())
    assert world.refused(m) == (errors.BAD_TX, "principal-is-owner")
    # schema: unknown right, key not matching the principal
    m = itx.build_grant(world.owner, DOMAIN, s.id, carol.id, "admin", world.owner.next())
    assert world.refused(m) == (errors.BAD_TX, "bad-right")
    m = itx.build_grant(world.owner, DOMAIN, s.id, carol.id, "read", world.owner.next(),
                        world.bob.pub)
    assert world.refused(m) == (errors.BAD_TX, "pubkey-mismatch")
    # not the owner
    world.commit(world.grant(s, world.bob, "read"))
    assert world.refused(world.grant(s, carol, "read", by=world.bob))[0] == errors.NOT_OWNER


def test_device_without_submit_right_is_refused(world: World) -> None:
    s, p = world.sensor, world.plug
    world.commit(world.claim(s), world.claim(p))
    world.commit(world.revoke(s, s, RIGHT_SUBMIT))
    assert world.refused(s.reading()) == (errors.NOT_AUTHORIZED, "no-submit-right")
    assert world.refused(s.transfer(p, 1))[0] == errors.NOT_AUTHORIZED
    world.commit(world.grant(s, s, RIGHT_SUBMIT))
    world.commit(s.reading())


def test_revoked_submit_drops_pending_readings(world: World) -> None:
    s = world.sensor
    world.commit(world.claim(s))
    world.node.submit_all([s.reading(), world.revoke(s, s, RIGHT_SUBMIT), s.reading()])
    b = world.node.produce()
    assert len(b.txs) == 2  # the reading after the revocation is dropped
    assert [(e.reason, e.detail) for _, e in b.dropped] == [(errors.NOT_AUTHORIZED,
                                                             "no-submit-right")]


def test_rotation_then_old_key_refused_new_key_accepted(world: World) -> None:
    s = world.sensor
    world.commit(world.claim(s), s.reading())
    new = Device("sensor-key-2")
    # approval by someone who is not the owner
    assert world.refused(world.rotate(s, new, approver=world.bob)) == (errors.BAD_SIGNATURE,
                                                                       "owner-approval")
    # approval for another key
    bad = itx.rotate_approval(world.owner, s.id, world.plug.pub)
    s.seq += 1
    m = itx.build_rotate(signer(s), DOMAIN, new.pub, bad, s.seq)
    assert world.refused(m) == (errors.BAD_TX, "owner-approval-mismatch")
    events = world.commit(world.rotate(s, new))
    assert events == [[["rotate", s.id]]]
    r = world.rec(s)
    assert (r.pubkey, r.owner, r.status) == (new.pub, world.owner.id, ACTIVE)
    assert r.last_seq == s.seq  # seq continues
    # the old key no longer verifies
    assert world.refused(s.reading())[0] == errors.BAD_SIGNATURE
    s.seq -= 1
    # the new key, same id
    s.priv, s.pub = new.priv, new.pub
    world.commit(s.reading())
    assert world.node.state.get(txm.device_id(new.pub)) is None
    # rotating back to the birth key, or to the current key, is refused
    birth = Device("sensor")
    assert world.refused(world.rotate(s, birth)) == (errors.BAD_TX, "reused-key")
    assert world.refused(world.rotate(s, new)) == (errors.BAD_TX, "same-key")


def test_txs_signed_with_the_old_key_are_dropped_once_the_rotation_executes(
        world: World) -> None:
    s = world.sensor
    world.commit(world.claim(s))
    new = Device("sensor-key-2")
    world.node.submit_all([world.rotate(s, new), s.reading()])  # reading: old key, admitted
    b = world.node.produce()
    assert len(b.txs) == 1
    assert [(e.reason, e.detail) for _, e in b.dropped] == [(errors.BAD_SIGNATURE,
                                                             "key-changed")]
    # rotated twice: a tx admitted under the second key is dropped after a recover
    s.priv, s.pub = new.priv, new.pub
    third = Device("sensor-key-3")
    world.commit(world.rotate(s, third))
    s.priv, s.pub = third.priv, third.pub
    assert world.node.submit(s.reading())
    world.node.produce()
    # a reading admitted under key 3, executed after a recovery to key 4: dropped
    fourth = Device("sensor-key-4")
    world.node.submit_all([world.recover(s, fourth), s.reading()])
    b = world.node.produce()
    assert len(b.txs) == 1
    assert [(e.reason, e.detail) for _, e in b.dropped] == [(errors.BAD_SIGNATURE,
                                                             "key-changed")]
    # ... and executed before it: included
    s.priv, s.pub, s.seq = fourth.priv, fourth.pub, 0
    fifth = Device("sensor-key-5")
    world.node.submit_all([s.reading(), world.recover(s, fifth)])
    b = world.node.produce()
    assert len(b.txs) == 2 and not b.dropped


def test_revoked_device_is_refused_and_recovered(world: World) -> None:
    s = world.sensor
    world.commit(world.claim(s), s.reading())
    events = world.commit(world.retire(s, "revoke"))
    assert events == [[["retire", s.id, "revoke"]]]
    assert world.rec(s).status == REVOKED
    assert world.refused(s.reading()) == (errors.REVOKED, REVOKED)
    # even a rotation
    assert world.refused(world.rotate(s, Device("k2")))[0] == errors.REVOKED
    # recover: new key by the owner, statement by the new key
    new = Device("sensor-new")
    bad = itx.recover_statement(world.plug.priv, s.id, DOMAIN)  # not the new key
    assert world.refused(world.recover(s, new, statement=bad)) == (errors.BAD_SIGNATURE,
                                                                   "statement")
    other_dom = itx.recover_statement(new.priv, s.id, "other")
    assert world.refused(world.recover(s, new, statement=other_dom)) == (
        errors.BAD_TX, "statement-mismatch")
    assert world.refused(world.recover(s, new, by=world.bob))[0] == errors.UNKNOWN_DEVICE
    events = world.commit(world.recover(s, new))
    assert events == [[["recover", s.id]]]
    r = world.rec(s)
    assert (r.pubkey, r.status, r.last_seq) == (new.pub, ACTIVE, 0)
    # the old key stays refused; the new board starts its seqs again
    assert world.refused(s.reading())[0] == errors.BAD_SIGNATURE
    s.priv, s.pub, s.seq = new.priv, new.pub, 0
    world.commit(s.reading())


def test_revoke_drops_pending_txs_of_the_device(world: World) -> None:
    s = world.sensor
    world.commit(world.claim(s))
    world.node.submit_all([world.retire(s, "revoke"), s.reading()])
    b = world.node.produce()
    assert [(e.reason, e.detail) for _, e in b.dropped] == [(errors.REVOKED, REVOKED)]


def test_decommission_is_for_good(world: World) -> None:
    s = world.sensor
    world.commit(world.claim(s))
    world.commit(world.retire(s, "decommission"))
    assert world.rec(s).status == DECOMMISSIONED
    assert world.refused(s.reading()) == (errors.REVOKED, DECOMMISSIONED)
    for m in (world.claim(s), world.recover(s, Device("n")), world.retire(s, "revoke"),
              world.grant(s, world.carol, "read"), world.transfer(s, world.bob)):
        assert world.refused(m) == (errors.REVOKED, DECOMMISSIONED)
    assert world.refused(world.retire(s, "stop")) == (errors.BAD_TX, "bad-mode")


def test_other_owners_devices_cannot_be_retired_or_recovered(world: World) -> None:
    s = world.sensor
    world.commit(world.claim(s), world.claim(world.plug), world.transfer(world.plug, world.bob))
    assert world.refused(world.retire(s, "revoke", by=world.bob))[0] == errors.NOT_OWNER
    assert world.refused(world.recover(s, Device("n"), by=world.bob))[0] == errors.NOT_OWNER


def test_ownerless_devices_cannot_rotate(tmp_path) -> None:
    d = Device("genesis-dev")
    n = Node(tmp_path / "g", {d.pub: 5})
    try:
        approval = itx.rotate_approval(Person("x"), d.id, Device("k").pub)
        m = itx.build_rotate(signer(d), DOMAIN, Device("k").pub, approval, 1)
        with pytest.raises(errors.TLError) as ei:
            n.submit(m)
        assert (ei.value.reason, ei.value.detail) == (errors.NOT_AUTHORIZED, "not-owned")
    finally:
        n.close()


def test_state_root_covers_identity_fields(world: World) -> None:
    """Each identity change moves the committed state root (and the header's)."""
    s = world.sensor
    roots = [world.node.state.root()]
    for m in (world.claim(s), world.grant(s, world.carol, "read"),
              world.revoke(s, world.carol, "read"), world.retire(s, "revoke"),
              world.recover(s, Device("n2")), world.transfer(s, world.bob)):
        world.commit(m)
        roots.append(world.node.state.root())
        assert roots[-1] == world.node.store.head().fields["state_root"]
    assert len(set(roots)) == len(roots)


def test_persons_pay_fees_and_may_transfer_value(tmp_path) -> None:
    owner = Person("owner")
    n = Node(tmp_path / "fees2", {owner.pub: 100}, admission="claimed", owner=owner.pub,
             min_fee=1)
    try:
        rec = n.state.get(owner.id)
        assert (rec.kind, rec.balance, rec.claimant) == (KIND_PERSON, 100, True)
        bob = Person("bob")
        dev = Device("sensor")
        st = itx.claim_statement(dev.priv, dev.pub, DOMAIN, owner.id)
        n.ledger.registry = lambda pub: {} if pub == dev.pub else None
        n.submit(itx.build_claim(owner, DOMAIN, dev.pub, st, 1, fee=1))
        n.submit(itx.build_owner_transfer(owner, DOMAIN, dev.id, bob.pub, 2, fee=1))
        n.submit(txm.make(owner.private, owner.id, txm.TYPE_TRANSFER, DOMAIN, 3, 1,
                          {1: dev.id, 2: 10}))
        b = n.produce()
        assert not b.dropped and all(r.status == 0 for r in b.receipts)
        assert n.state.get(owner.id).balance == 100 - 3 - 10
        assert n.state.get(dev.id).balance == 10
        assert n.state.total_balance() == 100
    finally:
        n.close()
