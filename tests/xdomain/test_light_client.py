"""The light client of another domain kept in the state (gateway/xdomain/client.py,
CLIENT_CREATE / CLIENT_UPDATE): headers of a quorum domain (3 validators,
k = 2) made here with real votes; forged headers refused with their reason
and nothing changed; validator-set changes followed through the next set's
hash; a conflicting header freezes the client; an expired client is refused
until the owner creates it again."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from gateway.xdomain import client as lc
from shared import cbor, commit, commit_gateway, cose, errors, header, reasons, txdecode
from shared import xpacket as xp
from shared.tx import device_id
from tests.support.gwtest import T0, Device, key
from tests.support.xdtest import PERIOD, Domain

QDOMAIN = "dom-q"


class Validators:
    def __init__(self, names: list[str], k: int) -> None:
        pairs = sorted((key(n) for n in names), key=lambda p: p[1])
        self.privs = [p[0] for p in pairs]
        self.pubs = [p[1] for p in pairs]
        self.k = k

    @property
    def hash(self) -> bytes:
        return commit.valset_hash(self.k, self.pubs)

    def cert(self, hb: bytes, signers: list[int]) -> list[Any]:
        h = header.block_hash(hb)
        return [[i, commit_gateway.vote(self.privs[i], self.pubs[i], h)] for i in signers]


def make_header(height: int, time: int, vs: Validators, nxt: Validators | None = None,
                domain: str = QDOMAIN, state_root: bytes = bytes(32)) -> bytes:
    return header.encode({
        "version": 2, "domain": domain, "height": height, "prev_hash": bytes(32),
        "time": time, "tx_root": bytes(32), "receipts_root": bytes(32),
        "state_root": state_root, "proposer": bytes(16),
        "validators": vs.hash, "next_validators": (nxt or vs).hash})


@pytest.fixture
def b_dom(tmp_path: Path) -> Iterator[Domain]:
    d = Domain(tmp_path / "b", "dom-b", {Device("bob", "dom-b").pub: 100})
    yield d
    d.close()


@pytest.fixture
def vals() -> Validators:
    return Validators(["q1", "q2", "q3"], 2)


def _create(b: Domain, vs: Validators, height: int = 1, time: int = T0) -> None:
    hb = make_header(height, time, vs)
    status, _, _ = b.run(b.authority.make(txdecode.TYPE_CLIENT_CREATE, {
        1: QDOMAIN, 2: vs.k, 3: vs.pubs, 4: PERIOD, 5: hb, 6: vs.cert(hb, [0, 1])}))
    assert status == 0


def _update(b: Domain, entries: list[Any], who: Device | None = None) -> tuple[int, str, list]:
    who = who or b.device("bob")
    return b.run(who.make(txdecode.TYPE_CLIENT_UPDATE, {1: QDOMAIN, 2: entries}))


def _refused(b: Domain, entries: list[Any]) -> errors.TLError:
    root = b.state.root()
    with pytest.raises(errors.TLError) as e:
        b.submit(b.device("bob").make(txdecode.TYPE_CLIENT_UPDATE,
                                                  {1: QDOMAIN, 2: entries}))
    assert b.state.root() == root
    return e.value


def test_the_votes_are_ecdsa_signatures_cryptography_verifies(vals: Validators) -> None:
    """A vote in a certificate is a COSE_Sign1 signature over the commit
    statement: checked here by `cryptography`, not by shared/."""
    hb = make_header(1, T0, vals)
    i, sig = vals.cert(hb, [0])[0]
    pub = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), vals.pubs[i])
    to_sign = cbor.dumps(["Signature1", cose.protected_header(device_id(vals.pubs[i])), b"",
                          commit.statement(header.block_hash(hb))])
    der = encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
    pub.verify(der, to_sign, ec.ECDSA(hashes.SHA256()))


def test_create_and_update_follow_the_chain(b_dom: Domain, vals: Validators) -> None:
    _create(b_dom, vals)
    c = lc.get(b_dom.state, QDOMAIN)
    assert c is not None and c.latest == 1 and c.set_hash == vals.hash and not c.frozen
    hb = make_header(5, T0 + 10, vals, state_root=b"\x05" * 32)
    status, _, events = _update(b_dom, [[hb, vals.cert(hb, [1, 2]), None]])
    assert status == 0 and events[-1] == ["client-update", QDOMAIN, 5]
    t = lc.trusted(b_dom.state, QDOMAIN, 5)
    assert t is not None and t.state_root == b"\x05" * 32 and t.hash == header.block_hash(hb)


def test_only_the_domain_owner_creates_a_client(b_dom: Domain, vals: Validators) -> None:
    hb = make_header(1, T0, vals)
    with pytest.raises(errors.TLError) as e:
        b_dom.submit(b_dom.device("bob").make(txdecode.TYPE_CLIENT_CREATE, {
            1: QDOMAIN, 2: vals.k, 3: vals.pubs, 4: PERIOD, 5: hb, 6: vals.cert(hb, [0, 1])}))
    assert (e.value.reason, e.value.detail) == (reasons.NOT_AUTHORIZED, "not-domain-owner")


def test_forged_headers_are_refused_and_change_nothing(b_dom: Domain, vals: Validators) -> None:
    _create(b_dom, vals)
    hb = make_header(2, T0 + 1, vals)
    # too few signatures: one vote where k = 2
    e = _refused(b_dom, [[hb, vals.cert(hb, [0]), None]])
    assert (e.reason, e.detail) == (errors.BAD_PROOF, "too-few-signatures")
    # wrong key: member 1's place holds the vote of a key outside the set
    outsider = Validators(["intruder"], 1)
    forged = [vals.cert(hb, [0])[0], [1, outsider.cert(hb, [0])[0][1]]]
    e = _refused(b_dom, [[hb, forged, None]])
    assert e.reason == errors.BAD_SIGNATURE
    # a whole other set, claiming to be the domain's
    other = Validators(["x1", "x2", "x3"], 2)
    ob = make_header(2, T0 + 1, other)
    e = _refused(b_dom, [[ob, other.cert(ob, [0, 1]), [other.k, other.pubs]]])
    assert (e.reason, e.detail) == (errors.BAD_PROOF, "untrusted-validator-set")
    # the set's own votes on a header of another domain
    wb = make_header(2, T0 + 1, vals, domain="dom-w")
    e = _refused(b_dom, [[wb, vals.cert(wb, [0, 1]), None]])
    assert (e.reason, e.detail) == (reasons.WRONG_DOMAIN, "header-domain")
    c = lc.get(b_dom.state, QDOMAIN)
    assert c is not None and c.latest == 1


def test_validator_set_change_is_followed_through_the_next_hash(b_dom: Domain,
                                                                vals: Validators) -> None:
    _create(b_dom, vals)
    new = Validators(["q2", "q4", "q5", "q6"], 3)
    h3 = make_header(3, T0 + 3, new)
    # skipping the header that announces the change: the new set is not trusted
    e = _refused(b_dom, [[h3, new.cert(h3, [0, 1, 2]), [new.k, new.pubs]]])
    assert e.detail == "untrusted-validator-set"
    h2 = make_header(2, T0 + 2, vals, nxt=new)
    # the new set's keys must hash to the announced one
    fake = Validators(["q2", "q4", "q5", "q7"], 3)
    f3 = make_header(3, T0 + 3, fake)
    e = _refused(b_dom, [[h2, vals.cert(h2, [0, 2]), None],
                         [f3, fake.cert(f3, [0, 1, 2]), [fake.k, fake.pubs]]])
    assert e.detail == "untrusted-validator-set"
    status, _, _ = _update(b_dom, [[h2, vals.cert(h2, [0, 2]), None],
                                   [h3, new.cert(h3, [0, 1, 2]), [new.k, new.pubs]]])
    assert status == 0
    c = lc.get(b_dom.state, QDOMAIN)
    assert c is not None and c.latest == 3 and c.set_hash == new.hash
    # the old set alone no longer finalises anything
    h4 = make_header(4, T0 + 4, vals)
    e = _refused(b_dom, [[h4, vals.cert(h4, [0, 1]), [vals.k, vals.pubs]]])
    assert e.detail == "untrusted-validator-set"


def test_conflicting_headers_freeze_the_client(b_dom: Domain, vals: Validators) -> None:
    _create(b_dom, vals)
    h2 = make_header(2, T0 + 2, vals)
    assert _update(b_dom, [[h2, vals.cert(h2, [0, 1]), None]])[0] == 0
    twin = make_header(2, T0 + 2, vals, state_root=b"\xee" * 32)
    e = _refused(b_dom, [[h2, vals.cert(h2, [1, 2]), None]])  # the same header again
    assert e.reason == reasons.DUPLICATE
    status, _, events = _update(b_dom, [[twin, vals.cert(twin, [1, 2]), None]])
    assert status == 0 and events[-1] == ["client-frozen", QDOMAIN]
    c = lc.get(b_dom.state, QDOMAIN)
    assert c is not None and c.frozen
    evidence = cbor.loads(b_dom.state.kv_get(xp.frozen_key(QDOMAIN)))
    assert evidence[0] == 2 and evidence[1] == header.block_hash(h2) and evidence[2] == twin
    h3 = make_header(3, T0 + 3, vals)
    e = _refused(b_dom, [[h3, vals.cert(h3, [0, 1]), None]])
    assert e.reason == reasons.CLIENT_FROZEN
    # the owner reinstates it; the evidence stays
    _create(b_dom, vals, height=3, time=T0 + 3)
    c = lc.get(b_dom.state, QDOMAIN)
    assert c is not None and not c.frozen and c.latest == 3
    assert lc.heights(b_dom.state, QDOMAIN) == [3]
    assert b_dom.state.kv_get(xp.frozen_key(QDOMAIN)) is not None


def test_an_expired_client_is_refused_until_the_owner_creates_it_again(
        b_dom: Domain, vals: Validators) -> None:
    _create(b_dom, vals)
    b_dom.produce(step=PERIOD + 10)  # B's clock passes the trusting period of header 1
    h2 = make_header(2, b_dom.time, vals)
    b_dom.submit(b_dom.device("bob").make(txdecode.TYPE_CLIENT_UPDATE,
                                                  {1: QDOMAIN, 2: [[h2, vals.cert(h2, [0, 1]),
                                                                    None]]}))
    blk = b_dom.produce()
    assert (blk.receipts[0].status, blk.receipts[0].reason) == (1, reasons.CLIENT_EXPIRED)
    assert lc.get(b_dom.state, QDOMAIN).latest == 1  # type: ignore[union-attr]
    assert b_dom.state.kv_get(xp.header_key(QDOMAIN, 2)) is None
    # a live client cannot be replaced; an expired one can
    _create(b_dom, vals, height=2, time=b_dom.time)
    c = lc.get(b_dom.state, QDOMAIN)
    assert c is not None and c.latest == 2
    hb = make_header(2, b_dom.time, vals)
    status, reason, _ = b_dom.run(b_dom.authority.make(txdecode.TYPE_CLIENT_CREATE, {
        1: QDOMAIN, 2: vals.k, 3: vals.pubs, 4: PERIOD, 5: hb, 6: vals.cert(hb, [0, 1])}))
    assert (status, reason) == (1, reasons.DUPLICATE)
