"""Consensus per domain (gateway/ledger/consensus.py, docs/CONSENSUS.md): the
genesis section, version-2 headers naming the current and next validator set,
commit certificates (authority mode: the builder's one vote; quorum: k votes
gathered), VALSET by the domain owner only and only for a later height, and
equivocation evidence. Chains without a consensus section keep version-1
headers and format-1 receipts."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from gateway.db import genesis_files as gen
from gateway.db import verify as replay
from gateway.db.store import Store
from gateway.errors import GenesisError, RuleError
from gateway.ledger import blocks, consensus
from gateway.ledger.state import StateOverlay
from shared import cbor, commit, commit_gateway, errors, header, messages, p256
from shared import tx as txm
from tests.support.gwtest import DOMAIN, T0, Device, Node, key

VALIDATORS = [key("gw-%d" % i) for i in range(3)]  # (priv, pub)
PUBS = sorted(p for _, p in VALIDATORS)
PRIV_OF = {p: k for k, p in VALIDATORS}


def valset_tx(node: Node, signer: Device, start: int, k: int, pubs: list[bytes]) -> bytes:
    return signer.make(txm.TYPE_VALSET, {1: start, 2: k, 3: sorted(pubs)})


class AuthorityDevice(Device):
    """The node's authority key as a signing device."""

    def __init__(self, node: Node) -> None:
        super().__init__("authority")
        self.priv = node.ledger.authority_priv
        self.pub = p256.public_key(self.priv)
        self.id = txm.device_id(self.pub)


def votes(b: blocks.Block, signers: list[bytes]) -> list[consensus.Vote]:
    return [consensus.Vote(p, b.height, b.header_bytes,
                           commit_gateway.vote(PRIV_OF[p], p, b.hash)) for p in signers]


def verify(node: Node) -> replay.Report:
    with Store(node.store.path, readonly=True) as s:
        return replay.verify_chain(s, node.genesis)


# ---- genesis ---------------------------------------------------------------------

def test_genesis_section_round_trips_and_defaults_to_a_majority(tmp_path: Path) -> None:
    gpath, _ = gen.create_domain(tmp_path, DOMAIN, time=T0, consensus="quorum",
                                 validators=[p for _, p in VALIDATORS])
    text = gpath.read_text()
    assert "[consensus]" in text and 'mode = "quorum"' in text
    g = gen.load(gpath)
    vs = g.validator_set()
    assert vs is not None and vs.threshold == 2 and list(vs.pubkeys) == PUBS
    assert gen.from_dict(gen.read_toml(gpath, ValueError)) == g
    fields = g.header_fields()
    assert fields["version"] == 2
    assert fields["validators"] == fields["next_validators"] == commit.valset_hash(2, PUBS)
    assert vs.hash == hashlib.sha256(vs.encode()).digest()


@pytest.mark.parametrize("section, where", [
    ({"mode": "pow"}, "consensus.mode"),
    ({"mode": "quorum", "validators": []}, "consensus"),
    ({"mode": "quorum", "validators": [PUBS[0].hex()] * 2}, "consensus"),
    ({"mode": "quorum", "validators": [p.hex() for p in PUBS], "threshold": 1}, "consensus"),
    ({"mode": "quorum", "validators": [p.hex() for p in PUBS], "threshold": 4}, "consensus"),
    ({"mode": "authority", "validators": [PUBS[0].hex()]}, "consensus.validators"),
    ({"mode": "quorum", "validators": ["zz"]}, "consensus.validators[0]"),
    ({"mode": "quorum", "extra": 1}, "consensus.extra"),
])
def test_a_bad_consensus_section_is_refused_naming_the_key(section: dict, where: str) -> None:
    d = {"domain": DOMAIN, "authority": key("a")[1].hex(), "time": T0, "consensus": section}
    with pytest.raises(GenesisError) as ei:
        gen.from_dict(d)
    assert ei.value.key == where


# ---- authority mode ---------------------------------------------------------------

def test_authority_mode_certificate_of_one_in_blocks_and_receipts(tmp_path: Path,
                                                                   alice: Device) -> None:
    n = Node(tmp_path, {alice.pub: 100})
    g = n.genesis
    assert g.consensus == "authority"
    n.submit(alice.reading())
    b = n.produce()
    assert b.fields["version"] == 2 and b.cert is not None and len(b.cert) == 1
    assert b.fields["validators"] == commit.valset_hash(1, [g.authority])
    consensus.check_certificate(b.cert, b.header_bytes, b.fields,
                                consensus.ValidatorSet(1, (g.authority,)))
    for raw in (b.receipt_message(0), n.store.get_receipt(b.txs[0].id)):
        m = messages.parse(raw)
        assert m[messages.M_CERT] == b.cert and m[messages.M_HEADER] == b.header_bytes
        assert messages.check_receipt(m, g.authority)["height"] == 1
        with pytest.raises(errors.TLError):  # another authority key does not finalise it
            messages.check_receipt(m, key("mallory")[1])
    ann = cbor.loads(b.announcement())
    assert ann == {1: b.header_bytes, 2: b.cert}
    from gateway.db.render import block_detail

    text = block_detail(n.store.get_block(1), n.store.block_txs(1))
    assert "validators     " + b.fields["validators"].hex() in text
    assert verify(n).ok
    n.close()


def test_a_chain_without_consensus_section_keeps_version_1(tmp_path: Path,
                                                            alice: Device) -> None:
    n = Node(tmp_path, {alice.pub: 100}, consensus="")
    n.submit(alice.reading())
    b = n.produce()
    assert b.fields["version"] == 1 and "validators" not in b.fields and b.cert is None
    m = messages.parse(b.receipt_message(0))
    assert messages.M_CERT not in m
    assert header.open_signed(n.genesis.authority, m[messages.M_HEADER])[0] == b.fields
    assert messages.check_receipt(m, n.genesis.authority)["height"] == 1
    assert b.announcement() == b.signed_header
    with pytest.raises(RuleError) as ei:  # no set to change
        n.submit(valset_tx(n, AuthorityDevice(n), 5, 1, [PUBS[0]]))
    assert (ei.value.reason, ei.value.detail) == (errors.BAD_TX, "no-consensus")
    assert verify(n).ok
    n.close()


# ---- VALSET -------------------------------------------------------------------------

def test_valset_by_the_owner_takes_effect_at_its_height(tmp_path: Path, alice: Device) -> None:
    owner = Device("owner")
    n = Node(tmp_path, {alice.pub: 100, owner.pub: 10}, owner=owner.pub)
    g = n.genesis
    one = commit.valset_hash(1, [g.authority])
    n.submit(valset_tx(n, owner, 4, 2, PUBS))  # included at height 1, from height 4
    b1 = n.produce()
    assert b1.receipts[0].status == 0 and b1.receipts[0].events[-1][0] == "valset"
    three = commit.valset_hash(2, PUBS)
    b2 = n.produce()
    assert (b1.fields["validators"], b1.fields["next_validators"]) == (one, one)
    b3 = n.produce()
    assert (b2.fields["validators"], b2.fields["next_validators"]) == (one, one)
    assert (b3.fields["validators"], b3.fields["next_validators"]) == (one, three)
    assert b3.cert is not None  # still the authority's block
    b4 = n.produce()
    assert (b4.fields["validators"], b4.fields["next_validators"]) == (three, three)
    assert b4.cert is None  # k = 2 of the new set: the builder alone cannot finalise
    with pytest.raises(ValueError):  # not final: nothing to announce yet
        b4.announcement()
    tally = consensus.Tally(consensus.ValidatorSet(2, tuple(PUBS)), 4)
    for v in votes(b4, PUBS[:2]):
        assert tally.add(v) == ""
    cert = tally.certificate(b4.header_bytes)
    assert cert is not None and [i for i, _ in cert] == [0, 1]
    n.store.set_certificate(4, cert)
    rep = verify(n)
    assert rep.ok, rep.error
    n.close()


def test_valset_refusals(tmp_path: Path, alice: Device) -> None:
    owner = Device("owner")
    n = Node(tmp_path, {alice.pub: 100, owner.pub: 10}, owner=owner.pub)
    with pytest.raises(RuleError) as ei:  # the authority is not the owner where one is named
        n.submit(valset_tx(n, AuthorityDevice(n), 5, 2, PUBS))
    assert (ei.value.reason, ei.value.detail) == (errors.NOT_AUTHORIZED, "not-domain-owner")
    with pytest.raises(RuleError) as ei:
        n.submit(valset_tx(n, alice, 5, 2, PUBS))
    assert ei.value.reason == errors.NOT_AUTHORIZED
    for k, pubs, detail in ((1, PUBS, "valset-threshold"), (4, PUBS, "valset-threshold"),
                            (1, [PUBS[0], PUBS[0]], "valset-keys"),
                            (1, [b"\x05" + bytes(32)], "valset-keys")):
        with pytest.raises(errors.TLError) as ei:
            n.submit(owner.make(txm.TYPE_VALSET, {1: 5, 2: k, 3: pubs}))
        assert (ei.value.reason, ei.value.detail) == (errors.BAD_TX, detail)
    with pytest.raises(errors.TLError) as ei:  # not sorted: one encoding per set
        n.submit(owner.make(txm.TYPE_VALSET, {1: 5, 2: 2, 3: PUBS[::-1]}))
    assert ei.value.detail == "valset-order"
    n.submit(valset_tx(n, owner, 1, 2, PUBS))  # height 1 is the block that would include it
    b = n.produce()
    assert not b.txs and b.dropped[0][1].detail == "valset-height"
    assert b.fields["next_validators"] == b.fields["validators"]
    n.close()


def test_a_later_change_replaces_a_pending_one(tmp_path: Path) -> None:
    owner = Device("owner")
    n = Node(tmp_path, {owner.pub: 10}, owner=owner.pub)
    n.submit(valset_tx(n, owner, 10, 2, PUBS))
    n.produce()
    n.submit(valset_tx(n, owner, 3, 1, PUBS[:1]))
    n.produce()
    s = consensus.schedule(n.state)
    assert s is not None and [h for h, _ in s] == [0, 3]
    assert consensus.set_at(s, 3).pubkeys == (PUBS[0],)
    n.close()


# ---- quorum certificates ----------------------------------------------------------

@pytest.fixture
def quorum(tmp_path: Path, alice: Device):
    n = Node(tmp_path, {alice.pub: 100}, consensus="quorum",
             validators=[p for _, p in VALIDATORS])
    n.submit(alice.reading())
    b = n.produce()
    yield n, b, consensus.ValidatorSet(2, tuple(PUBS))
    n.close()


def test_quorum_block_is_final_with_k_votes_of_the_set(quorum) -> None:
    n, b, vs = quorum
    assert b.cert is None
    rep = verify(n)  # the head may wait for its certificate
    assert rep.ok, rep.error
    cert = commit_gateway.certificate({0: votes(b, [PUBS[0]])[0].signature,
                               2: votes(b, [PUBS[2]])[0].signature})
    consensus.check_certificate(cert, b.header_bytes, b.fields, vs)
    n.store.set_certificate(b.height, cert)
    m = messages.parse(n.store.get_receipt(b.txs[0].id))
    assert messages.check_receipt(m, b"", (2, PUBS, None))["height"] == 1
    n.produce()  # block 2 without certificate: block 1 has one, so the chain verifies
    assert verify(n).ok


def test_quorum_refusals(quorum) -> None:
    n, b, vs = quorum
    good = {i: votes(b, [p])[0].signature for i, p in enumerate(PUBS)}
    h = b.hash
    outsider_priv, outsider_pub = key("outsider")

    def refused(cert: list, detail: str, set_hash: bytes | None = None) -> None:
        with pytest.raises(errors.TLError) as ei:
            commit.check(cert, h, set_hash or b.fields["validators"], PUBS, 2)
        assert ei.value.detail == detail, ei.value

    refused(commit_gateway.certificate({0: good[0]}), "too-few-signatures")
    refused([[1, good[1]], [1, good[1]]], "duplicate-signer")
    refused([[1, good[1]], [0, good[0]]], "duplicate-signer")  # not increasing
    refused([[0, good[0]], [3, good[1]]], "signer-outside-set")
    # an outsider's vote placed at a member's index: a bad signature
    refused([[0, good[0]], [1, commit_gateway.vote(outsider_priv, outsider_pub, h)]], "bad-signature")
    # a member's vote on another header (height 0) replayed for this one
    g0 = n.store.get_block(0)
    old = commit_gateway.vote(PRIV_OF[PUBS[1]], PUBS[1], g0.hash)
    refused([[0, good[0]], [1, old]], "bad-signature")
    # a vote signed over the header's bytes as a COSE payload is not a vote
    raw = commit_gateway.vote(PRIV_OF[PUBS[1]], PUBS[1], header.block_hash(b"x" + b.header_bytes))
    refused([[0, good[0]], [1, raw]], "bad-signature")
    refused(commit_gateway.certificate({0: good[0], 1: good[1]}), "wrong-validator-set", bytes(32))
    # a certificate of the set with a lower threshold does not pass as this one
    with pytest.raises(errors.TLError):
        consensus.check_certificate(commit_gateway.certificate({0: good[0]}), b.header_bytes, b.fields,
                                    consensus.ValidatorSet(1, tuple(PUBS)))
    # stored, a bad certificate below the head fails chain verify
    n.store.set_certificate(b.height, commit_gateway.certificate({0: good[0]}))
    n.produce()
    rep = verify(n)
    assert not rep.ok and rep.error.reason == replay.BAD_CERTIFICATE


def test_a_block_below_the_head_without_certificate_fails_verify(quorum) -> None:
    n, b, vs = quorum
    n.produce()
    rep = verify(n)
    assert not rep.ok and (rep.error.height, rep.error.reason) == (1, replay.NO_CERTIFICATE)
    assert n.store.get_receipt(b.txs[0].id) is None  # not final: no receipt to give


def test_tally_counts_members_once_and_keeps_equivocations(quorum) -> None:
    n, b, vs = quorum
    t = consensus.Tally(vs, b.height)
    v0, v1 = votes(b, PUBS[:2])
    outsider_priv, outsider_pub = key("outsider")
    stranger = consensus.Vote(outsider_pub, b.height, b.header_bytes,
                              commit_gateway.vote(outsider_priv, outsider_pub, b.hash))
    assert t.add(stranger) == "signer-outside-set"
    assert t.add(v0) == "" and t.add(v0) == "duplicate"
    assert t.certificate(b.header_bytes) is None
    forged = consensus.Vote(PUBS[1], b.height, b.header_bytes, v0.signature)
    assert t.add(forged) == "bad-vote"
    # PUBS[1] votes for another header of the same height: after its first vote, evidence
    other_fields = dict(b.fields, time=b.fields["time"] + 1)
    other = header.encode(other_fields)
    w = consensus.Vote(PUBS[1], b.height, other,
                       commit_gateway.vote(PRIV_OF[PUBS[1]], PUBS[1], header.block_hash(other)))
    assert t.add(v1) == ""
    assert t.add(w) == "equivocation"
    assert t.certificate(b.header_bytes) is not None
    e = t.evidence[0]
    assert consensus.check_equivocation(e) and e.pubkey == PUBS[1] and e.height == b.height
    assert n.store.record_equivocation(e) and not n.store.record_equivocation(e)
    assert n.store.equivocations() == [e]


def test_equivocation_needs_two_valid_votes_of_one_height(quorum) -> None:
    n, b, vs = quorum
    v0, v1 = votes(b, PUBS[:2])
    assert consensus.equivocation(v0, v0) is None  # one header
    assert consensus.equivocation(v0, v1) is None  # two validators
    g0 = n.store.get_block(0)
    at0 = consensus.Vote(PUBS[0], 0, g0.header_bytes,
                         commit_gateway.vote(PRIV_OF[PUBS[0]], PUBS[0], g0.hash))
    assert consensus.equivocation(v0, at0) is None  # two heights
    other = header.encode(dict(b.fields, time=b.fields["time"] + 1))
    fake = consensus.Vote(PUBS[0], b.height, other, v0.signature)  # not its signature
    assert consensus.equivocation(v0, fake) is None


def test_a_gateway_alone_refuses_a_quorum_domain(tmp_path: Path) -> None:
    """It could not finalise a block: a typed error at start, not a crash at
    the first receipt."""
    from gateway.errors import ConfigError
    from gateway.node.config import GatewayConfig
    from gateway.node.service import Gateway

    gen.create_domain(tmp_path, DOMAIN, consensus="quorum",
                      validators=[p for _, p in VALIDATORS])
    with pytest.raises(ConfigError) as ei:
        Gateway(GatewayConfig(domain=DOMAIN, data_dir=tmp_path))
    assert ei.value.key == "consensus"


def test_a_version_2_header_with_other_fields_is_refused(quorum) -> None:
    """The set hashes replaced by two other keys: refused with a reason, not a
    KeyError (a board checks them in shared/commit.final_header)."""
    n, b, vs = quorum
    f = {k: v for k, v in b.fields.items() if k not in ("validators", "next_validators")}
    f.update(x=1, y=2)
    hb = header.encode(f)
    cert = commit_gateway.certificate({i: commit_gateway.vote(PRIV_OF[p], p, header.block_hash(hb))
                                       for i, p in enumerate(PUBS[:2])})
    for bad, detail in ((hb, "wrong-validator-set"),
                        (header.encode(dict(b.fields, next_validators=b"x")), "bad-header")):
        if bad is not hb:
            cert = commit_gateway.certificate(
                {i: commit_gateway.vote(PRIV_OF[p], p, header.block_hash(bad))
                 for i, p in enumerate(PUBS[:2])})
        with pytest.raises(errors.ProofError) as ei:
            commit.final_header(bad, cert, (2, PUBS, None))
        assert ei.value.detail == detail


# ---- past sets and a member proved to equivocate -----------------------------------

MORE = [key("gw-extra-%d" % i)[1] for i in range(3)]  # public keys of later members


def test_the_schedule_keeps_the_sets_of_past_heights_after_two_changes(tmp_path: Path) -> None:
    owner = Device("owner")
    n = Node(tmp_path, {owner.pub: 10}, owner=owner.pub, consensus="quorum",
             validators=PUBS, threshold=2)
    s0 = consensus.ValidatorSet.of(PUBS, 2)
    s1 = consensus.ValidatorSet.of([PUBS[0], PUBS[1], MORE[0]], 2)
    s2 = consensus.ValidatorSet.of([PUBS[0], MORE[0], MORE[1], MORE[2]], 3)
    n.submit(valset_tx(n, owner, 3, 2, list(s1.pubkeys)))
    n.produce()  # 1
    n.produce()  # 2
    n.produce()  # 3: s1 in force
    n.submit(valset_tx(n, owner, 6, 3, list(s2.pubkeys)))
    n.produce()  # 4: schedules s2 from 6
    for _ in range(3):
        n.produce()  # 5, 6, 7
    s = consensus.schedule(n.state)
    assert s is not None and [(h, vs) for h, vs in s] == [(0, s0), (3, s1), (6, s2)]
    want = {1: s0, 2: s0, 3: s1, 5: s1, 6: s2, 7: s2, 100: s2}
    assert {h: consensus.set_at(s, h) for h in want} == want
    for h in range(1, 8):  # each header names the set of its height, as the schedule says
        b = n.store.get_block(h)
        assert b.fields["validators"] == want.get(h, consensus.set_at(s, h)).hash
    n.close()


def test_threshold_after_a_removal_keeps_k_within_the_members_left() -> None:
    def kept(k: int, n: int) -> tuple[int, int]:
        pubs = [key("thr-%d" % i)[1] for i in range(n)]
        vs = consensus.without(consensus.ValidatorSet.of(pubs, k), pubs[0])
        return vs.threshold, len(vs.pubkeys)

    assert kept(2, 3) == (2, 2)  # k stays (and is a majority of 2)
    assert kept(3, 4) == (3, 3)
    assert kept(3, 5) == (3, 4)
    assert kept(4, 4) == (3, 3)  # k > n': k = n'
    assert kept(5, 7) == (5, 6)
    assert kept(4, 7) == (4, 6)  # a majority of 6 is 4
    assert kept(1, 1) == (1, 1)  # the only member stays: a set is never emptied
    for n in range(2, 10):
        for k in range(consensus.majority(n), n + 1):
            k2, n2 = kept(k, n)
            assert n2 == n - 1 and k2 == min(k, n2) and 2 * k2 > n2
            assert consensus.check_set(k2, [b"\x02" + bytes([i]) * 32 for i in range(n2)]) \
                in ("", "valset-keys")  # (dummy keys: only the threshold is judged here)


def test_removal_starts_at_the_next_height_and_reaches_a_pending_change(tmp_path: Path) -> None:
    owner = Device("owner")
    n = Node(tmp_path, {owner.pub: 10}, owner=owner.pub, consensus="quorum",
             validators=PUBS, threshold=2)
    s0 = consensus.ValidatorSet.of(PUBS, 2)
    pending = consensus.ValidatorSet.of([*PUBS, MORE[0]], 3)
    n.submit(valset_tx(n, owner, 10, 3, list(pending.pubkeys)))
    n.produce()  # 1
    view = StateOverlay(n.state)
    out = consensus.remove_member(view, PUBS[1], 4)  # a proof in block 4
    rest = [PUBS[0], PUBS[2]]
    assert out == (5, consensus.ValidatorSet.of(rest, 2))
    s = consensus.schedule(view)
    assert s == [(0, s0), (5, consensus.ValidatorSet.of(rest, 2)),
                 (10, consensus.ValidatorSet.of([*rest, MORE[0]], 3))]
    # not a member after height 4 any more, or not at all: nothing changes
    assert consensus.remove_member(view, PUBS[1], 6) is None
    assert consensus.remove_member(view, MORE[2], 6) is None
    assert consensus.schedule(view) == s
    # a member only of the pending set leaves that set only (k = 3 stays: 3 of 3)
    view = StateOverlay(n.state)
    left = consensus.ValidatorSet.of(PUBS, 3)
    assert consensus.remove_member(view, MORE[0], 4) == (10, left)
    assert consensus.schedule(view) == [(0, s0), (10, left)]
    n.close()
