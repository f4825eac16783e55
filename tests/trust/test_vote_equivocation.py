"""A quorum validator's double vote as a PROOF on chain (kind
"vote-equivocation", gateway/trust/evidence.py vote_equivocation and
gateway/trust/rules.py): two real headers of one height, the validator's
votes on their hashes and its key; checked by the chain without trusting the
filer, refused with reason codes otherwise."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pycose.algorithms import Es256
from pycose.headers import KID, Algorithm
from pycose.keys import EC2Key
from pycose.keys.curves import P256
from pycose.messages import Sign1Message

from gateway.db.verify import verify_chain
from gateway.ledger import blocks, consensus
from gateway.trust import evidence
from gateway.trust import standing as st
from gateway.trust.rules import NOT_A_VALIDATOR, VOTE_EQUIVOCATION
from shared import commit, commit_gateway, errors, es256_cryptography, header, messages, reasons
from shared import tx as txm
from tests.support.gwtest import DOMAIN, Device, Node, key
from tests.support.pycose_keys import pycose_key

VALIDATORS = [key(f"vote-validator-{i}") for i in range(3)]
OUTSIDER = key("vote-outsider")


@pytest.fixture
def qnode(tmp_path: Path, alice: Device, bob: Device) -> Iterator[Node]:
    n = Node(tmp_path / "gw", {alice.pub: 1000, bob.pub: 1000}, trust=True,
             consensus="quorum", validators=[p for _, p in VALIDATORS], threshold=2)
    yield n
    n.close()


def produce(n: Node) -> blocks.Block:
    """The next block, final with two of the three validators' votes."""
    b = n.produce()
    pubs = sorted(p for _, p in VALIDATORS)
    votes = {pubs.index(p): commit_gateway.vote(k, p, b.hash) for k, p in VALIDATORS[:2]}
    n.store.set_certificate(b.height, commit_gateway.certificate(votes))
    return b


def two_headers(n: Node, alice: Device, bob: Device) -> tuple[bytes, bytes]:
    """Header bytes of block 1 (committed) and of a real sibling at height 1
    (other txs on the same parent), both built by the ledger code."""
    led = n.ledger
    genesis_head, genesis_state = led.head, n.store.load_state()
    n.submit(alice.reading(1))
    a = produce(n)
    sib = blocks.build_block(genesis_head, [txm.decode(bob.reading(2))], genesis_state,
                             n.time, led.authority_priv, led.genesis.authority_id,
                             domain=DOMAIN, rules=led.rules)
    assert sib.height == a.height == 1 and sib.hash != a.hash
    return a.header_bytes, sib.header_bytes


def vote(k: tuple[bytes, bytes], hb: bytes) -> bytes:
    priv, pub = k
    return evidence.encode_vote(pub, hb, commit_gateway.vote(priv, pub, header.block_hash(hb)))


def pycose_vote(k: tuple[bytes, bytes], hb: bytes) -> bytes:
    """The same vote, signed by pycose (an independent COSE implementation)."""
    priv, pub = k
    pk = pycose_key(pub)
    signer = EC2Key(crv=P256, d=priv, x=pk.x, y=pk.y)
    msg = Sign1Message(phdr={Algorithm: Es256, KID: txm.device_id(pub)}, uhdr={},
                       payload=commit.statement(header.block_hash(hb)), key=signer)
    sig = es256_cryptography.low_s(msg.encode(tag=True)[-64:])
    return evidence.encode_vote(pub, hb, sig)


def proof(by: Device, a: bytes, b: bytes) -> bytes:
    return by.make(txm.TYPE_PROOF, {1: VOTE_EQUIVOCATION, 2: a, 3: b})


def test_a_validators_double_vote_is_proved_and_bans_its_id(qnode: Node, alice: Device,
                                                            bob: Device) -> None:
    ha, hb = two_headers(qnode, alice, bob)
    v = VALIDATORS[1]
    a, b = vote(v, ha), pycose_vote(v, hb)
    # the vote we made verifies under pycose too
    _, _, sig = evidence.decode_vote(a)
    check = Sign1Message(phdr={Algorithm: Es256, KID: txm.device_id(v[1])}, uhdr={},
                         payload=commit.statement(header.block_hash(ha)))
    check.key = pycose_key(v[1])
    check._signature = sig
    assert check.verify_signature()
    pub, height, domain = evidence.vote_equivocation(a, b)
    assert (pub, height, domain) == (v[1], 1, DOMAIN)
    vid = txm.device_id(v[1])
    assert qnode.state.get(vid) is None  # a validator need not hold an account
    total = qnode.state.total_balance()
    qnode.submit(proof(bob, a, b))
    blk = produce(qnode)
    assert not blk.dropped and blk.receipts[0].status == messages.STATUS_OK
    assert st.level_of(qnode.state, vid) == st.BANNED
    rec = st.get(qnode.state, vid)
    assert rec is not None and rec.penalty == st.PROOF_POINTS and rec.banned_key == v[1]
    h = st.history(qnode.state, vid)[-1]
    assert h[2] == blk.txs[0].id and h[3] == "proof:" + VOTE_EQUIVOCATION
    assert qnode.state.total_balance() == total
    # once per offence, in either order
    for x, y in ((a, b), (b, a)):
        with pytest.raises(errors.TLError) as e:
            qnode.submit(proof(alice, x, y))
        assert (e.value.reason, e.value.detail) == (reasons.DUPLICATE, "offence")
        alice.seq -= 1
    rep = verify_chain(qnode.store, qnode.genesis)  # the replay gives the same state root
    assert rep.ok, rep


def test_bad_vote_proofs_are_refused_with_reasons(qnode: Node, alice: Device,
                                                  bob: Device) -> None:
    ha, hb = two_headers(qnode, alice, bob)
    v = VALIDATORS[0]
    a = vote(v, ha)
    # a header of height 2 (the next block) and one of another domain
    qnode.submit(alice.reading(3))
    h2 = produce(qnode).header_bytes
    other = header.encode(dict(header.decode(hb), domain="elsewhere"))
    wrong_key = evidence.encode_vote(v[1], hb, commit_gateway.vote(
        VALIDATORS[2][0], VALIDATORS[2][1], header.block_hash(hb)))
    before = qnode.state.root()
    cases = [
        ((a, a), errors.BAD_PROOF, evidence.EQUAL),
        ((a, vote(v, ha)), errors.BAD_PROOF, evidence.EQUAL),  # one header, signed twice
        ((a, vote(VALIDATORS[1], hb)), errors.BAD_PROOF, evidence.DIFFERENT_KEYS),
        ((a, vote(v, h2)), errors.BAD_PROOF, evidence.DIFFERENT_HEIGHTS),
        ((a, vote(v, other)), errors.BAD_PROOF, evidence.DIFFERENT_DOMAINS),
        ((a, wrong_key), errors.BAD_SIGNATURE, ""),  # signed by another key than named
        ((a, b"\x01garbage"), errors.BAD_PROOF, evidence.BAD_VOTE),
        ((vote(OUTSIDER, ha), vote(OUTSIDER, hb)), errors.BAD_PROOF, NOT_A_VALIDATOR),
    ]
    for (x, y), reason, detail in cases:
        with pytest.raises(errors.TLError) as e:
            qnode.submit(proof(bob, x, y))
        assert e.value.reason == reason, (detail, e.value)
        if detail:
            assert e.value.detail == detail
        bob.seq -= 1
    assert qnode.state.root() == before
    for k in (*VALIDATORS, OUTSIDER):
        assert st.get(qnode.state, txm.device_id(k[1])) is None


def test_a_proved_validator_leaves_the_set_from_the_next_height(qnode: Node, alice: Device,
                                                                bob: Device) -> None:
    """The chain acts on the proof: from the height after the proof's block the
    offender is out of the set (k = 2 of the two left), announced by the
    proof block's header; up to that block its vote still counts."""
    ha, hb = two_headers(qnode, alice, bob)
    v = VALIDATORS[1]
    pubs = sorted(p for _, p in VALIDATORS)
    full = consensus.ValidatorSet(2, tuple(pubs))
    left = consensus.ValidatorSet.of([p for p in pubs if p != v[1]], 2)
    qnode.submit(proof(bob, vote(v, ha), vote(v, hb)))
    blk = produce(qnode)  # height 2, certified with the offender's vote among the two
    assert blk.receipts[0].events[-1] == ["valset", 3, left.hash]
    assert (blk.fields["validators"], blk.fields["next_validators"]) == (full.hash, left.hash)
    sched = consensus.schedule(qnode.state)
    assert sched is not None
    assert consensus.set_at(sched, 2) == full and consensus.set_at(sched, 3) == left
    qnode.submit(alice.reading(5))
    b3 = qnode.produce()
    assert (b3.fields["validators"], b3.fields["next_validators"]) == (left.hash, left.hash)
    tally = consensus.Tally(left, 3)
    own = {p: k for k, p in VALIDATORS}
    assert tally.add(consensus.Vote(v[1], 3, b3.header_bytes,
                                    commit_gateway.vote(v[0], v[1], b3.hash))) \
        == "signer-outside-set"
    for p in left.pubkeys:
        assert tally.add(consensus.Vote(p, 3, b3.header_bytes,
                                        commit_gateway.vote(own[p], p, b3.hash))) == ""
    cert = tally.certificate(b3.header_bytes)
    assert cert is not None
    qnode.store.set_certificate(3, cert)
    rep = verify_chain(qnode.store, qnode.genesis)  # each certificate against its height's set
    assert rep.ok, rep
    # its double vote at height 4, where it is no member, proves nothing
    b4 = qnode.produce()
    sib4 = blocks.build_block(qnode.store.get_block(3), [txm.decode(bob.reading(7))],
                              qnode.store.load_state(), qnode.time, qnode.ledger.authority_priv,
                              qnode.genesis.authority_id, domain=DOMAIN,
                              rules=qnode.ledger.rules)
    with pytest.raises(errors.TLError) as e:
        qnode.submit(proof(alice, vote(v, b4.header_bytes), vote(v, sib4.header_bytes)))
    assert (e.value.reason, e.value.detail) == (errors.BAD_PROOF, NOT_A_VALIDATOR)
    alice.seq -= 1
    # another offence of it at height 2, where it was a member: taken, no set changes
    sib2 = blocks.build_block(qnode.store.get_block(1), [txm.decode(bob.reading(8))],
                              qnode.store.load_state(), qnode.time, qnode.ledger.authority_priv,
                              qnode.genesis.authority_id, domain=DOMAIN,
                              rules=qnode.ledger.rules)
    assert sib2.height == 2 and sib2.hash != blk.hash
    qnode.submit(proof(alice, vote(v, blk.header_bytes), vote(v, sib2.header_bytes)))
    b5 = qnode.produce()
    assert b5.receipts[0].status == messages.STATUS_OK
    assert [x[0] for x in b5.receipts[0].events] == ["proof"]
    assert consensus.schedule(qnode.state) == sched


def test_a_validator_alone_in_its_set_stays_when_proved(tmp_path: Path, alice: Device,
                                                        bob: Device) -> None:
    """A set is never emptied (the domain would stop): the ban stands, the set
    stays, and the proof's receipt names no set change."""
    solo = VALIDATORS[0]
    n = Node(tmp_path / "solo", {alice.pub: 1000, bob.pub: 1000}, trust=True,
             consensus="quorum", validators=[solo[1]], threshold=1)
    try:
        genesis_head, genesis_state = n.ledger.head, n.store.load_state()
        n.submit(alice.reading(1))
        a = n.produce()
        sib = blocks.build_block(genesis_head, [txm.decode(bob.reading(2))], genesis_state,
                                 n.time, n.ledger.authority_priv, n.genesis.authority_id,
                                 domain=DOMAIN, rules=n.ledger.rules)
        n.submit(proof(bob, vote(solo, a.header_bytes), vote(solo, sib.header_bytes)))
        b = n.produce()
        assert b.receipts[0].status == messages.STATUS_OK
        assert [e[0] for e in b.receipts[0].events] == ["proof"]
        assert st.level_of(n.state, txm.device_id(solo[1])) == st.BANNED
        assert b.fields["next_validators"] == b.fields["validators"]
    finally:
        n.close()


def test_a_validator_account_proved_to_reuse_a_seq_leaves_the_set(tmp_path: Path, alice: Device,
                                                                  bob: Device) -> None:
    """A validator whose key also holds an account (as in `run --gateways`)
    signs two transactions with one seq: the tx-equivocation proof bans that
    key, and a banned validator key leaves the set from the next height, as
    after a double vote."""
    v = Device("vote-validator-1")  # VALIDATORS[1]'s key, as an account
    assert v.pub == VALIDATORS[1][1]
    n = Node(tmp_path / "gw", {alice.pub: 1000, bob.pub: 1000, v.pub: 0}, trust=True,
             consensus="quorum", validators=[p for _, p in VALIDATORS], threshold=2)
    try:
        a = v.reading(100)
        b = v.reading(200, seq=v.seq)
        n.submit(a)
        produce(n)  # height 1
        n.submit(bob.make(txm.TYPE_PROOF, {1: "tx-equivocation", 2: a, 3: b}))
        blk = produce(n)  # height 2
        assert blk.receipts[0].status == messages.STATUS_OK
        pubs = sorted(p for _, p in VALIDATORS)
        left = consensus.ValidatorSet.of([p for p in pubs if p != v.pub], 2)
        assert blk.receipts[0].events[-1] == ["valset", 3, left.hash]
        assert st.level_of(n.state, v.id) == st.BANNED
        sched = consensus.schedule(n.state)
        assert sched is not None and consensus.set_at(sched, 3) == left
        assert blk.fields["next_validators"] == left.hash
    finally:
        n.close()
