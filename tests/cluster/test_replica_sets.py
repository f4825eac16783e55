"""How a replicated gateway (gateway/cluster/replica.py) judges a vote by the
validator set of its height, from the schedule in its state, without a
cluster: the Replica runs on an in-process ledger (tests.support.gwtest.Node)
and its Collector is wired as Replica.start wires it.

- two set changes: a late vote on a block older than the previous change is
  judged against the set of that block (kept as a member's), not against the
  sets in force now;
- a validator proved to double-vote (a committed vote-equivocation PROOF)
  counts up to the proof's block and is refused `not-in-set` from the next
  height, where k votes of the members left finalise the block."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from gateway.cluster.replica import Replica
from gateway.cluster.sigs import Collector, HeaderSig
from gateway.db.genesis_files import write_key
from gateway.errors import ClusterError
from gateway.ledger import blocks, consensus
from gateway.trust import evidence
from gateway.trust.rules import VOTE_EQUIVOCATION
from shared import commit_gateway, header, messages
from shared import tx as txm
from tests.support.gwtest import DOMAIN, Device, Node, key

KEYS = [key(f"sets-validator-{i}") for i in range(5)]  # (priv, pub)
PRIV = {p: k for k, p in KEYS}
A, B, C, D, E = (p for _, p in KEYS)


def replica(n: Node, own: bytes, tmp_path: Path) -> Replica:
    """A Replica on `n`'s ledger with validator key `own` (nothing started)."""
    kf = tmp_path / f"validator-{own.hex()[:8]}.key"
    write_key(kf, PRIV[own])
    gw = SimpleNamespace(led=n.ledger, reader=n.store, on_event=lambda line: None)
    return Replica(gw, SimpleNamespace(validator_key_file=kf, domain=DOMAIN, derived=()))


def sig(height: int, block_hash: bytes, signer: bytes) -> HeaderSig:
    return HeaderSig(height, block_hash, signer,
                     commit_gateway.vote(PRIV[signer], signer, block_hash))


def test_a_late_vote_is_judged_by_the_set_of_its_height_after_two_changes(
        tmp_path: Path) -> None:
    owner = Device("sets-owner")
    n = Node(tmp_path / "gw", {owner.pub: 10}, owner=owner.pub, consensus="quorum",
             validators=[A, B, C], threshold=2)
    try:
        s0 = consensus.ValidatorSet.of([A, B, C], 2)
        s1 = consensus.ValidatorSet.of([A, B, D], 2)
        s2 = consensus.ValidatorSet.of([A, D, E], 2)
        n.submit(owner.make(txm.TYPE_VALSET, {1: 3, 2: 2, 3: list(s1.pubkeys)}))
        n.produce()  # 1 (set s0)
        n.produce()  # 2
        n.produce()  # 3: s1
        n.submit(owner.make(txm.TYPE_VALSET, {1: 6, 2: 2, 3: list(s2.pubkeys)}))
        for _ in range(4):
            n.produce()  # 4, 5, 6 (s2), 7
        rep = replica(n, E, tmp_path)
        assert [rep.set_at(h) for h in (1, 2, 3, 5, 6, 8)] == [s0, s0, s1, s1, s2, s2]
        assert rep._is_member(1, C) and not rep._is_member(3, C) and not rep._is_member(6, B)
        assert not rep.member_at(1) and rep.member_at(6)
        one = n.store.get_block(1).hash
        by_c = sig(1, one, C)  # C left at height 3: its vote on block 1 is a member's
        rep._on_late_vote(by_c)
        assert rep.book.has(by_c)
        by_d = sig(1, one, D)  # D joined at 3: on block 1 it was no member
        rep._on_late_vote(by_d)
        assert not rep.book.has(by_d)
        four = n.store.get_block(4).hash
        by_b, by_c4 = sig(4, four, B), sig(4, four, C)  # B was a member at 4, C no longer
        rep._on_late_vote(by_b)
        rep._on_late_vote(by_c4)
        assert rep.book.has(by_b) and not rep.book.has(by_c4)
    finally:
        n.close()


def test_a_proved_double_voter_counts_up_to_the_proof_and_is_refused_after(
        tmp_path: Path) -> None:
    alice, bob = Device("sets-alice"), Device("sets-bob")
    n = Node(tmp_path / "gw", {alice.pub: 100, bob.pub: 100, A: 0, B: 0, C: 0}, trust=True,
             consensus="quorum", validators=[A, B, C], threshold=2)
    try:
        led = n.ledger
        parent, state0 = led.head, n.store.load_state()
        n.submit(alice.reading(1))
        one = n.produce()
        sib = blocks.build_block(parent, [txm.decode(bob.reading(2))], state0, n.time,
                                 led.authority_priv, led.genesis.authority_id, domain=DOMAIN,
                                 rules=led.rules)

        def message(hb: bytes) -> bytes:
            return evidence.encode_vote(B, hb, commit_gateway.vote(PRIV[B], B,
                                                                   header.block_hash(hb)))
        # filed as a gateway files it: signed with validator A's key
        n.submit(txm.make(PRIV[A], txm.device_id(A), txm.TYPE_PROOF, DOMAIN, 1, 0,
                          {1: VOTE_EQUIVOCATION, 2: message(one.header_bytes),
                           3: message(sib.header_bytes)}))
        two = n.produce()  # the proof: B out from height 3
        assert two.receipts[0].status == messages.STATUS_OK
        n.submit(alice.reading(3))
        three = n.produce()
        rep = replica(n, A, tmp_path)
        assert rep._is_member(2, B) and not rep._is_member(3, B)
        assert rep.threshold_at(3) == 2 and rep.threshold_at(4) == 2
        assert rep.threshold_at(5) is None  # above the head's next height: not known yet
        col = Collector(rep.threshold_at, rep._verify, rep._is_member, final_height=1)
        assert col.add(sig(2, two.hash, B)) is None  # its vote on the proof's block counts
        cert2 = col.add(sig(2, two.hash, C))
        assert cert2 is not None and {s for s, _ in cert2.sigs} == {B, C}
        with pytest.raises(ClusterError) as e:
            col.add(sig(3, three.hash, B))
        assert e.value.reason == ClusterError.NOT_IN_SET
        assert col.add(sig(3, three.hash, A)) is None
        cert3 = col.add(sig(3, three.hash, C))
        assert cert3 is not None and {s for s, _ in cert3.sigs} == {A, C}
        left = consensus.ValidatorSet.of([A, C], 2)
        votes = {left.index(s): x for s, x in cert3.sigs}
        consensus.check_certificate(commit_gateway.certificate(votes), three.header_bytes,
                                    three.fields, rep.set_at(3))
    finally:
        n.close()
