"""A quorum domain (3 validators, k = 2; each block final by the votes of two)
sending to an authority domain through the relayer, in-process: the client in
B follows A's validator-set change (VALSET) through the next-set hash in A's
headers, the relayer putting the header that announces the change first; a
header finalised by the new set without that announcement is refused."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.ledger import consensus
from gateway.xdomain import client as lc
from gateway.xdomain import relayer as rl
from gateway.xdomain import rules
from shared import errors, txdecode
from tests.support.gwtest import Device, key
from tests.support.xdtest import Domain, create_client, relayer_of

A, B = "dom-q", "dom-b"
OLD = ["v1", "v2", "v3"]
NEW = ["v2", "v4", "v5"]
NEWER = ["v4", "v6", "v7", "v8"]
NEWEST = ["v6", "v7", "v9"]


def pubs(names: list[str]) -> list[bytes]:
    return sorted(key(n)[1] for n in names)


@pytest.fixture
def doms(tmp_path: Path) -> Iterator[tuple[Domain, Domain]]:
    a = Domain(tmp_path / "a", A, {Device("alice", A).pub: 1000}, voters=OLD + NEW + NEWER + NEWEST,
               consensus="quorum", validators=pubs(OLD), threshold=2)
    b = Domain(tmp_path / "b", B, {Device("bob", B).pub: 500})
    a.produce()  # block 0 of a quorum chain has no certificate: start from block 1
    yield a, b
    a.close()
    b.close()


def quorum_client(b: Domain, a: Domain) -> None:
    hb, cert = a.head_entry()
    status, _, _ = b.run(b.authority.make(txdecode.TYPE_CLIENT_CREATE, {
        1: A, 2: 2, 3: pubs(OLD), 4: 3600, 5: hb, 6: cert}))
    assert status == 0


def test_the_client_follows_a_validator_set_change(doms) -> None:
    a, b = doms
    quorum_client(b, a)
    create_client(a, b)
    r = relayer_of(a, b)
    # A's owner (its authority) schedules the new set two blocks ahead
    start = a.store.head().height + 2  # type: ignore[union-attr]
    status, _, _ = a.run(a.authority.make(consensus.TYPE_VALSET, {1: start, 2: 2,
                                                                  3: pubs(NEW)}))
    assert status == 0
    for _ in range(3):
        a.produce()
    new_hash = consensus.ValidatorSet(2, tuple(pubs(NEW))).hash
    assert a.store.head().fields["validators"] == new_hash  # type: ignore[union-attr]
    bob = b.device("bob")
    a.run(a.device("alice").make(txdecode.TYPE_SEND, {1: B, 2: bob.id, 3: 25, 4: 0,
                                                      5: a.time + 1000}))
    # a header of the new set alone is not trusted: the change was not seen
    c = lc.get(b.state, A)
    assert c is not None
    head = a.store.head()
    assert head is not None
    lone = [head.header_bytes, a.store.certificate(head.height), [2, pubs(NEW)]]
    with pytest.raises(errors.TLError) as e:
        b.run(b.device("bob").make(txdecode.TYPE_CLIENT_UPDATE, {1: A, 2: [lone]}))
    assert e.value.detail == "untrusted-validator-set"
    entries = rl.update_entries(a.store, head, c)
    assert entries is not None and len(entries) == 2 and entries[1][2] == [2, pubs(NEW)]
    out = r.run_once()
    assert [x.what for x in out.actions if x.ok] == ["update", "recv"], out.actions
    c = lc.get(b.state, A)
    assert c is not None and c.set_hash == new_hash and c.latest == head.height
    assert b.balance(bob.id) == 525
    r.run_once()  # the ack
    assert a.balance(rules.ESCROW) == 0 and a.total() + b.total() == 1500


def test_the_relayer_follows_three_set_changes_between_its_passes(doms) -> None:
    """A changes its set three times while no relayer runs: the relayer
    sends, in order, each announcing header and each new set's first header
    (more entries than one CLIENT_UPDATE holds: two updates); the last new
    set's first header is the head."""
    a, b = doms
    quorum_client(b, a)
    create_client(a, b)
    r = relayer_of(a, b)
    for names, k in ((NEW, 2), (NEWER, 3), (NEWEST, 2)):
        start = a.store.head().height + 2  # type: ignore[union-attr]
        assert a.run(a.authority.make(consensus.TYPE_VALSET, {1: start, 2: k,
                                                              3: pubs(names)}))[0] == 0
        for _ in range(3):
            a.produce()
    newest = consensus.ValidatorSet(2, tuple(pubs(NEWEST))).hash
    assert a.store.head().fields["validators"] == newest  # type: ignore[union-attr]
    bob = b.device("bob")
    a.run(a.device("alice").make(txdecode.TYPE_SEND, {1: B, 2: bob.id, 3: 40, 4: 0,
                                                      5: a.time + 1000}))
    c = lc.get(b.state, A)
    head = a.store.head()
    assert c is not None and head is not None
    entries = rl.update_entries(a.store, head, c)
    assert entries is not None
    assert [e[2] for e in entries] == [None, [2, pubs(NEW)], None, [3, pubs(NEWER)], None,
                                       [2, pubs(NEWEST)]]
    assert entries[-1][0] == head.header_bytes
    out = r.run_once()
    assert [x.what for x in out.actions if x.ok] == ["update", "update", "recv"], out.actions
    c = lc.get(b.state, A)
    assert c is not None and c.set_hash == newest and c.latest == head.height
    assert b.balance(bob.id) == 540
