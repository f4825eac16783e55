"""Packets between two in-process domains (gateway/xdomain/rules.py, relayer.py):
a transfer A -> B escrowed, proven, credited and acknowledged; refunds on
timeout and on a failed ack; every bad packet refused with its reason and
nothing changed; balances over both domains conserved under random transfers
with the relayers stopped, delayed and run out of order."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.xdomain import client as lc
from gateway.xdomain import relayer, rules
from shared import cbor, errors, reasons, stateproof, txdecode
from shared import tx as txm
from shared import xpacket as xp
from tests.support.gwtest import Device
from tests.support.xdtest import PERIOD, Domain, create_client, relayer_of

A, B, C = "dom-a", "dom-b", "dom-c"


@pytest.fixture
def doms(tmp_path: Path) -> Iterator[tuple[Domain, Domain]]:
    a = Domain(tmp_path / "a", A, {Device("alice", A).pub: 1000, Device("ann", A).pub: 300})
    b = Domain(tmp_path / "b", B, {Device("bob", B).pub: 500, Device("bea", B).pub: 200})
    create_client(b, a)
    create_client(a, b)
    yield a, b
    a.close()
    b.close()


def send(a: Domain, who: str, to: str, recipient: bytes, amount: int, timeout_height: int = 0,
         timeout_time: int = 0, memo: bytes = b"") -> bytes:
    body = {1: to, 2: recipient, 3: amount, 4: timeout_height, 5: timeout_time or
            (0 if timeout_height else a.time + 10_000)}
    if memo:
        body[6] = memo
    return a.device(who).make(txdecode.TYPE_SEND, body)


def open_packets(a: Domain, to: str) -> list[bytes]:
    return [v for _, v in a.state.kv_range(xp.PACKET + to.encode() + b"\x00")]


def refused(d: Domain, message: bytes) -> errors.TLError:
    """`message` refused at ingress or dropped at execution, state unchanged."""
    root = d.state.root()
    with pytest.raises(errors.TLError) as e:
        d.run(message)
    assert d.state.root() == root
    return e.value


def test_transfer_is_escrowed_proven_credited_and_acknowledged(doms) -> None:
    a, b = doms
    alice, bob = a.device("alice"), b.device("bob")
    total = a.total() + b.total()
    status, _, events = a.run(send(a, "alice", B, bob.id, 100))
    assert status == 0 and events[-1] == ["xsend", B, 1, 100]
    assert a.balance(alice.id) == 900 and a.balance(rules.ESCROW) == 100
    (packet,) = open_packets(a, B)
    # the packet is committed: its membership proof holds against A's state root
    value, proof = a.state.kv_prove(xp.packet_key(B, 1))
    assert xp.proves_packet(a.state.root(), packet, xp.decode(packet), proof)
    r = relayer_of(a, b)
    first = r.run_once()
    assert [x.what for x in first.done("update")] == ["update"]
    assert [x.seq for x in first.done("recv")] == [1]
    assert b.balance(bob.id) == 600
    ack = b.state.kv_get(xp.receipt_key(A, 1))
    assert cbor.loads(ack) == [xp.ACK_OK, ""]
    second = r.run_once()
    assert [x.seq for x in second.done("ack")] == [1]
    assert open_packets(a, B) == [] and a.balance(rules.ESCROW) == 0
    assert a.total() + b.total() == total
    assert r.run_once().actions == []  # nothing left


def test_double_relay_forged_and_replayed_proofs_are_refused(doms, tmp_path: Path) -> None:
    a, b = doms
    bob = b.device("bob")
    a.run(send(a, "alice", B, bob.id, 70))
    relay = relayer_of(a, b)
    head = lc.get(b.state, A)
    assert head is not None
    # the relayer's first pass trusts A's head in B; take the recv it sent
    relay.run_once()
    recv_tx = b.store.head()
    assert recv_tx is not None
    (packet,) = open_packets(a, B)
    height = lc.get(b.state, A).latest  # type: ignore[union-attr]
    _, proof = a.state.kv_prove(xp.packet_key(B, 1))
    relayer = b.device("relayer")
    relayer.seq = 100

    def recv(pkt: bytes, prf: list, at: Domain = b, h: int = height) -> bytes:
        return at.device("relayer").make(txdecode.TYPE_RELAY, {1: "recv", 2: pkt, 3: h, 4: prf})

    # double relay of one packet
    e = refused(b, recv(packet, proof))
    assert (e.reason, e.detail) == (reasons.DUPLICATE, "received")
    assert b.balance(bob.id) == 570
    # a forged packet (another amount) with the real proof
    p = xp.decode(packet)
    forged = xp.encode(A, B, 2, p[4], p[5], 10_000, p[7], p[8])
    e = refused(b, recv(forged, proof))
    assert (e.reason, e.detail) == (errors.BAD_PROOF, "packet-proof")
    # a forged proof: one sibling changed
    a.run(send(a, "alice", B, bob.id, 5))
    assert relay.update(relay.b, relay.a, a.store.head())
    h2 = lc.get(b.state, A).latest  # type: ignore[union-attr]
    pk2 = open_packets(a, B)[-1]
    _, good = a.state.kv_prove(xp.packet_key(B, 2))
    bad = [list(good[0]), good[1]]
    i = next(j for j, s in enumerate(bad[0]) if s)
    bad[0][i] = bytes(32 - 1) + b"\x01"
    e = refused(b, recv(pk2, bad, h=h2))
    assert (e.reason, e.detail) == (errors.BAD_PROOF, "packet-proof")
    # a height the client does not trust
    e = refused(b, recv(pk2, good, h=h2 + 50))
    assert (e.reason, e.detail) == (errors.BAD_PROOF, "untrusted-height")
    # replayed in another domain C (which also trusts A): the packet names B
    c = Domain(tmp_path / "c", C, {})
    create_client(c, a)
    c.run(Device("relayer", C).register())
    e = refused(c, Device("relayer", C).make(txdecode.TYPE_RELAY,
                                             {1: "recv", 2: pk2, 3: lc.get(c.state, A).latest,
                                              4: good}, seq=5))
    assert (e.reason, e.detail) == (reasons.WRONG_DOMAIN, "packet-destination")
    # the honest relay still goes through once
    b.run(recv(pk2, good, h=h2))
    assert b.balance(bob.id) == 575
    c.close()


def test_bad_sends_are_refused(doms) -> None:
    a, b = doms
    bob = b.device("bob")
    e = refused(a, send(a, "alice", "dom-z", bob.id, 1))
    assert (e.reason, e.detail) == (reasons.UNKNOWN_DOMAIN, "dom-z")
    e = refused(a, send(a, "alice", A, bob.id, 1))
    assert e.reason == reasons.WRONG_DOMAIN
    e = refused(a, send(a, "alice", B, bob.id, 1, memo=b"m" * 500))
    assert (e.reason, e.detail) == (errors.TOO_LARGE, "packet-too-large")
    e = refused(a, send(a, "alice", B, bob.id, 5000))
    assert e.reason == errors.INSUFFICIENT_FUNDS
    e = refused(a, a.device("alice").make(txdecode.TYPE_SEND,
                                          {1: B, 2: bob.id, 3: 1, 4: 0, 5: 0}))
    assert (e.reason, e.detail) == (errors.BAD_TX, "bad-timeout")
    # a packet over the limit handed to B directly is refused unread
    big = b"\xa9" + b"\x00" * 600
    e = refused(b, b.device("bob").make(txdecode.TYPE_RELAY, {1: "recv", 2: big, 3: 1, 4: []}))
    assert e.reason == errors.TOO_LARGE


def test_timeout_refunds_when_the_relayer_was_away(doms) -> None:
    a, b = doms
    alice, bob = a.device("alice"), b.device("bob")
    total = a.total() + b.total()
    r = relayer_of(a, b)
    deadline = b.store.head().height + 3  # type: ignore[union-attr]
    a.run(send(a, "alice", B, bob.id, 40, timeout_height=deadline))
    (packet,) = open_packets(a, B)
    while b.store.head().height < deadline:  # type: ignore[union-attr]
        b.produce()  # B goes on; no relayer meanwhile
    # a recv that comes too late is refused at execution (timed-out)
    assert r.update(r.b, r.a, a.store.head())
    _, proof = a.state.kv_prove(xp.packet_key(B, 1))
    h = lc.get(b.state, A).latest  # type: ignore[union-attr]
    status, reason, _ = b.run(r.signer.make(txdecode.TYPE_RELAY, B,
                                            {1: "recv", 2: packet, 3: h, 4: proof}))
    assert (status, reason) == (1, reasons.TIMED_OUT)
    assert b.balance(bob.id) == 500 and b.state.kv_get(xp.receipt_key(A, 1)) is None
    out = r.run_once()
    assert [x.seq for x in out.done("timeout")] == [1] and not out.done("recv")
    assert a.balance(alice.id) == 1000 and a.balance(rules.ESCROW) == 0
    assert b.balance(bob.id) == 500 and open_packets(a, B) == []
    assert a.total() + b.total() == total


def test_a_timeout_needs_the_deadline_passed_and_the_absence_proven(doms) -> None:
    a, b = doms
    bob = b.device("bob")
    deadline = b.store.head().height + 50  # type: ignore[union-attr]
    a.run(send(a, "alice", B, bob.id, 40, timeout_height=deadline))
    (packet,) = open_packets(a, B)
    r = relayer_of(a, b)
    assert r.update(r.a, r.b, b.store.head())
    h = lc.get(a.state, B).latest  # type: ignore[union-attr]
    _, absent = b.state.kv_prove(xp.receipt_key(A, 1))
    e = refused(a, r.signer.make(txdecode.TYPE_RELAY, A,
                                 {1: "timeout", 2: packet, 3: h, 4: absent}))
    assert e.reason == reasons.NOT_TIMED_OUT
    # received in B, then a timeout claimed with an old absence proof is refused
    # once the ack closed the packet (closed: duplicate)
    r.run_once()
    r.run_once()
    e = refused(a, r.signer.make(txdecode.TYPE_RELAY, A,
                                 {1: "timeout", 2: packet, 3: h, 4: absent}))
    assert (e.reason, e.detail) == (reasons.DUPLICATE, "packet-closed")
    assert b.balance(bob.id) == 540


def test_unknown_recipient_gets_a_failed_ack_and_the_sender_a_refund(doms) -> None:
    a, b = doms
    alice = a.device("alice")
    nobody = Device("nobody", B).id
    a.run(send(a, "alice", B, nobody, 30))
    r = relayer_of(a, b)
    r.run_once()
    assert cbor.loads(b.state.kv_get(xp.receipt_key(A, 1))) == [xp.ACK_FAILED,
                                                                 errors.UNKNOWN_DEVICE]
    r.run_once()
    assert a.balance(alice.id) == 1000 and a.balance(rules.ESCROW) == 0


def test_client_proofs_are_checked_by_stateproof_against_the_trusted_root(doms) -> None:
    """The receipt B commits is provable in A by shared/stateproof alone."""
    a, b = doms
    a.run(send(a, "alice", B, b.device("bob").id, 1))
    relayer_of(a, b).run_once()
    leaf, proof = b.state.kv_prove(xp.receipt_key(A, 1))
    assert leaf is not None
    assert stateproof.check(b.state.root(), stateproof.kv_key(xp.receipt_key(A, 1)),
                            stateproof.value_hash(leaf), proof)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_transfers_conserve_balances_across_both_domains(doms, seed: int) -> None:
    a, b = doms
    rnd = random.Random(seed)
    total = a.total() + b.total()
    ab, ba = relayer_of(a, b, "rel-ab"), relayer_of(b, a, "rel-ba")
    people = {A: ["alice", "ann"], B: ["bob", "bea"]}
    sent = 0
    for _ in range(40):
        op = rnd.random()
        src, dst = (a, b) if rnd.random() < 0.5 else (b, a)
        if op < 0.5:
            who = rnd.choice(people[src.domain])
            bal = src.balance(src.device(who).id)
            if bal == 0:
                continue
            to = dst.device(rnd.choice(people[dst.domain] + ["stranger"])).id
            th = dst.store.head().height + rnd.randint(1, 6)  # type: ignore[union-attr]
            src.run(send(src, who, dst.domain, to, rnd.randint(1, bal), timeout_height=th))
            sent += 1
        elif op < 0.7:
            (ab if rnd.random() < 0.5 else ba).run_once()  # a relayer comes back for a pass
        else:
            rnd.choice((a, b)).produce()  # time passes; relayers away (or crashed)
    for _ in range(6):  # both relayers back until everything is closed
        ab.run_once()
        ba.run_once()
    assert open_packets(a, B) == [] and open_packets(b, A) == []
    assert a.balance(rules.ESCROW) == 0 and b.balance(rules.ESCROW) == 0
    assert a.total() + b.total() == total
    assert sent > 5
    # nothing credited twice: one receipt per packet, never more than were sent
    receipts_b = list(b.state.kv_range(xp.RECEIPT + A.encode() + b"\x00"))
    receipts_a = list(b.state.kv_range(xp.RECEIPT + B.encode() + b"\x00")) + \
        list(a.state.kv_range(xp.RECEIPT + B.encode() + b"\x00"))
    assert len(receipts_b) + len(receipts_a) <= sent


def test_a_relayer_that_reorders_and_drops_packets_credits_nothing_twice(doms) -> None:
    """Packets are received in any order; a dropped one times out and is
    refunded; relaying any of them again is refused."""
    a, b = doms
    alice, bob = a.device("alice"), b.device("bob")
    total = a.total() + b.total()
    r = relayer_of(a, b)
    dead = b.store.head().height + 4  # type: ignore[union-attr]
    for amount in (10, 20, 30):
        a.run(send(a, "alice", B, bob.id, amount, timeout_height=dead))
    packets = {xp.decode(p)[3]: p for p in open_packets(a, B)}
    assert r.update(r.b, r.a, a.store.head())
    h = lc.get(b.state, A).latest  # type: ignore[union-attr]

    def recv(seq: int) -> bytes:
        _, proof = a.state.kv_prove(xp.packet_key(B, seq))
        return r.signer.make(txdecode.TYPE_RELAY, B, {1: "recv", 2: packets[seq], 3: h, 4: proof})

    assert b.run(recv(3))[0] == 0  # 3 before 1; 2 dropped
    assert b.run(recv(1))[0] == 0
    e = refused(b, recv(3))
    assert (e.reason, e.detail) == (reasons.DUPLICATE, "received")
    while b.store.head().height < dead:  # type: ignore[union-attr]
        b.produce()
    out = r.run_once()
    assert sorted(x.seq for x in out.done("ack")) == [1, 3]
    assert [x.seq for x in out.done("timeout")] == [2]
    assert b.balance(bob.id) == 540 and a.balance(alice.id) == 960
    assert a.balance(rules.ESCROW) == 0 and a.total() + b.total() == total
    assert refused(b, recv(2)).reason in (errors.BAD_PROOF, reasons.DUPLICATE)
    assert r.run_once().actions == []


class Crash(Exception):
    """The relayer process dies (after its tx was sent: it never learns the answer)."""


@pytest.mark.parametrize("seed", [4, 5])
def test_relayers_that_crash_and_lose_txs_conserve_balances(doms, seed: int) -> None:
    """Relayers whose txs are lost on the way, and which crash right after a
    tx was committed (a new relayer takes over, knowing nothing), a second,
    slow relayer per direction whose txs arrive late (after the fast one
    delivered the same packets), with time passing in between: every packet
    still ends acknowledged or refunded, nothing is credited twice (the late
    copies are refused), the sum over both domains is what it was."""
    a, b = doms
    rnd = random.Random(seed)
    total = a.total() + b.total()
    base = {A: relayer_of(a, b, "rel-ab"), B: relayer_of(b, a, "rel-ba")}
    lost = crashed = 0

    def flaky(submit):  # type: ignore[no-untyped-def]
        def send(domain: str, message: bytes) -> tuple[bool, str]:
            nonlocal lost, crashed
            r = rnd.random()
            if r < 0.25:
                lost += 1
                return False, "lost"  # never reached the domain
            out = submit(domain, message)
            if r < 0.4:
                crashed += 1
                raise Crash()
            return out
        return send

    def fresh(r: relayer.Relayer) -> relayer.Relayer:  # a restarted relayer process
        return relayer.Relayer(r.a, r.b, r.signer, flaky(base_submit[r.a.domain]))

    base_submit = {d: r.submit for d, r in base.items()}
    rels = {d: fresh(r) for d, r in base.items()}
    in_flight: list[tuple[str, bytes]] = []
    late: list[tuple[str, bool, str]] = []  # (what, ok, reason) of each late tx

    def arrive() -> None:
        for domain, message in in_flight:
            t = txm.decode(message)
            what = t.body[1] if t.type == txdecode.TYPE_RELAY else "update"
            late.append((what, *base_submit[A](domain, message)))
        in_flight.clear()

    def slow_send(domain: str, message: bytes) -> tuple[bool, str]:
        in_flight.append((domain, message))
        return True, ""  # it believes it went through

    slow = [relayer.Relayer(base[A].a, base[A].b, relayer_of(a, b, "slow-ab").signer,
                            slow_send),
            relayer.Relayer(base[B].a, base[B].b, relayer_of(b, a, "slow-ba").signer,
                            slow_send)]
    people = {A: ["alice", "ann"], B: ["bob", "bea"]}
    sent = 0
    for _ in range(60):
        src, dst = (a, b) if rnd.random() < 0.5 else (b, a)
        op = rnd.random()
        if op < 0.4:
            who = rnd.choice(people[src.domain])
            bal = src.balance(src.device(who).id)
            if bal:
                th = dst.store.head().height + rnd.randint(3, 30)  # type: ignore[union-attr]
                src.run(send(src, who, dst.domain, dst.device(rnd.choice(people[dst.domain])).id,
                             rnd.randint(1, bal), timeout_height=th))
                sent += 1
        elif op < 0.7:
            try:
                rels[src.domain].run_once()
            except Crash:
                rels[src.domain] = fresh(rels[src.domain])
        elif op < 0.8:
            rnd.choice(slow).run_once()
        elif op < 0.9:  # the slow relayers' txs arrive
            arrive()
        else:
            rnd.choice((a, b)).produce()
    arrive()
    for _ in range(8):  # honest relayers, until everything is closed
        for r in base.values():
            r.run_once()
    assert open_packets(a, B) == [] and open_packets(b, A) == []
    assert a.balance(rules.ESCROW) == 0 and b.balance(rules.ESCROW) == 0
    assert a.total() + b.total() == total
    assert sent > 5 and lost > 0 and crashed > 0
    # late copies of packets the fast relayer delivered meanwhile: refused
    assert ("recv", False, reasons.DUPLICATE) in late


def test_an_expired_client_proves_no_packet_until_the_owner_reinstates_it(doms) -> None:
    a, b = doms
    alice, bob = a.device("alice"), b.device("bob")
    total = a.total() + b.total()
    r = relayer_of(a, b)
    a.run(send(a, "alice", B, bob.id, 25, timeout_time=a.time + 100_000))
    assert r.update(r.b, r.a, a.store.head())  # B trusts the header committing the packet
    h = lc.get(b.state, A).latest  # type: ignore[union-attr]
    (packet,) = open_packets(a, B)
    _, proof = a.state.kv_prove(xp.packet_key(B, 1))
    for d in (a, b):  # no relayer for longer than the trusting period: both clocks move on
        d.produce(step=PERIOD + 10)
    recv = r.signer.make(txdecode.TYPE_RELAY, B, {1: "recv", 2: packet, 3: h, 4: proof})
    assert b.run(recv)[:2] == (1, reasons.CLIENT_EXPIRED)
    assert b.balance(bob.id) == 500 and b.state.kv_get(xp.receipt_key(A, 1)) is None
    out = r.run_once()  # the relayer's header update is refused as well
    assert not out.done("recv") and not out.done("update")
    assert [x.reason for x in out.actions] == [reasons.CLIENT_EXPIRED]
    assert b.balance(bob.id) == 500
    # B's owner reinstates its client of A at A's head: the packet goes through, once
    assert create_client(b, a)[0] == 0
    assert [x.seq for x in r.run_once().done("recv")] == [1]
    assert b.balance(bob.id) == 525
    out = r.run_once()  # A's client of B has expired too: no ack yet
    assert not out.done("ack") and a.balance(rules.ESCROW) == 25
    assert create_client(a, b)[0] == 0  # A's owner reinstates it
    assert [x.seq for x in r.run_once().done("ack")] == [1]
    assert a.balance(alice.id) == 975 and a.balance(rules.ESCROW) == 0
    assert a.total() + b.total() == total


def test_an_unknown_counterparty_is_refused(doms) -> None:
    """A packet from a domain B keeps no client of, an update of such a
    client, a send to such a domain: each refused with unknown-domain, nothing
    changed."""
    a, b = doms
    bob, alice = b.device("bob"), a.device("alice")
    stray = xp.encode(C, B, 1, alice.id, bob.id, 10, 0, a.time + 1000)
    e = refused(b, bob.make(txdecode.TYPE_RELAY, {1: "recv", 2: stray, 3: 1,
                                                  4: [[bytes(32)] * 3, None]}))
    assert (e.reason, e.detail) == (reasons.UNKNOWN_DOMAIN, C)
    hb, cert = a.head_entry()
    e = refused(b, bob.make(txdecode.TYPE_CLIENT_UPDATE, {1: C, 2: [[hb, cert, None]]}))
    assert (e.reason, e.detail) == (reasons.UNKNOWN_DOMAIN, C)
    e = refused(b, send(b, "bob", C, alice.id, 1))
    assert (e.reason, e.detail) == (reasons.UNKNOWN_DOMAIN, C)
    assert b.balance(bob.id) == 500
