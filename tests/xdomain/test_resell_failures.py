"""The reseller's failure paths (tools/resell.py; docs/CROSSDOMAIN.md, "A
buyer board in B: the reseller"), each ending the same way: the agreement in
B CLOSEd by the reseller, the buyer there refunded in full, the reason
printed. A host buyer in B (bob) stands for the board (the board's side of
a CLOSE is tests/xdomain/test_xdomain_board.py's). rex holds funds in A, so
no payment packet (and no relayer) is needed.

- a timeout: sam's offer in A is bought, linked in B, but sam never streams:
  no readings within --wait;
- a refused proof: B's client of A is frozen (two headers of A at one
  height), so the proof of A's offer is refused.

And the reseller's wait for B's verdicts reads B's contract calls from the
agreement's height on (`resell.judged`), not from height 0."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from gateway.market.ledger import rules as market
from gateway.node.config import KEY_FILE
from gateway.xdomain import recorded
from shared import commit_gateway, header, txdecode
from shared import tx as txm
from tests.support.gwtest import Device
from tests.support.waits import lines, wait_line
from tests.xdomain.test_xdomain_board import (
    PRICE,
    QUANTITY,
    agreement_in,
    deploy_agreement,
    start_reseller,
)
from tests.xdomain.test_xdomain_e2e import A, B, Gateway, cli
from tools import resell
from tools.xdomain_demo import interrupt

BOB = 500


@pytest.fixture
def domains(tmp_path: Path) -> Iterator[tuple[Gateway, Gateway]]:
    """dom-a (rex holds 100, sam offers temperature at 3) and dom-b (bob
    holds 500, rex 100), each with its agreement contract."""
    gws: list[Gateway] = []
    try:
        gws.append(Gateway(tmp_path, A, {Device("rex", A).pub: 100}))
        gws.append(Gateway(tmp_path, B, {Device("bob", B).pub: BOB,
                                         Device("rex", B).pub: 100}))
        for g in gws:
            deploy_agreement(g)
        a = gws[0]
        sam = Device("sam", A)
        assert a.send(sam.register()).status == 0
        rep = a.send(sam.make(txm.TYPE_OFFER, {1: "temperature", 2: "cC", 3: 3, 4: 1, 5: "",
                                               6: 600, 7: 1}))
        assert rep.ok and rep.status == 0, rep
        yield gws[0], gws[1]
    finally:
        for g in gws:
            g.stop()


def client_of_a(a: Gateway, b: Gateway, *extra: str) -> None:
    r = cli("xdomain", "create", "--data-dir", str(b.dir), "--broker", b.url,
            "--of-dir", str(a.dir), "--key", str(b.dir / KEY_FILE), *extra)
    assert r.returncode == 0, r.stdout + r.stderr


def bob_buys(tmp: Path, a: Gateway, b: Gateway, *extra: str
             ) -> tuple[Any, list[str], list[Any], bytes]:
    """The reseller started (rex); once it offers in B, bob demands 4
    readings of it there: the agreement's id."""
    rp = start_reseller(tmp, a, b, *extra)
    rq, rseen = lines(rp), []
    wait_line(rq, r"^resell: offers temperature in dom-b at 5", 60, rseen)
    demand = Device("bob", B).make(txm.TYPE_DEMAND, {1: "temperature", 2: PRICE,
                                                     3: QUANTITY, 4: 60, 5: "cheapest"},
                                   seq=1 << 31)
    rep = b.send(demand)
    assert rep.ok and rep.status == 0, rep
    return rq, rseen, [rp], txm.tx_id(demand)[:16]


def closed_and_refunded(b: Gateway, rq: Any, rseen: list[str], aid: bytes, why: str) -> None:
    wait_line(rq, r"^resell: agreement %s in dom-b: the purchase in dom-a failed: %s"
              % (aid.hex(), why), 90, rseen)
    wait_line(rq, r"^resell: closed agreement %s in dom-b" % aid.hex(), 30, rseen)
    ag = agreement_in(b, aid)
    assert (ag["state"], ag["paid"], ag["remaining"], ag["next_index"]) == (
        "closed", 0, 0, 0), ag
    assert b.balance(Device("bob", B).id) == BOB  # the whole escrow back
    assert b.balance(Device("rex", B).id) == 100  # paid nothing


def test_no_readings_within_the_wait_the_agreement_in_b_is_closed(
        domains: tuple[Gateway, Gateway], tmp_path: Path) -> None:
    a, b = domains
    client_of_a(a, b)
    rq, rseen, procs, aid = bob_buys(tmp_path, a, b, "--wait", "3")
    try:
        wait_line(rq, r"^resell: bought in dom-a: agreement (\w{32}) .* linked to agreement %s"
                  % aid.hex(), 60, rseen)
        closed_and_refunded(b, rq, rseen, aid,
                            r"timed out: 0 of 4 readings checked in dom-a$")
    finally:
        interrupt(procs)
    # the purchase in A is linked to the closed agreement (B's state): nothing was paid under it
    with b.store() as s:
        (p,) = recorded.purchases(s)
        assert p.serves == aid and recorded.link(s.load_state(), aid) == (A, p.id)


def test_a_proof_refused_by_bs_client_of_a_the_agreement_in_b_is_closed(
        domains: tuple[Gateway, Gateway], tmp_path: Path) -> None:
    """B's client of A frozen (two headers of A at the height it trusts, both
    signed by A's authority, sent by bob): the offer's proof is refused."""
    a, b = domains
    client_of_a(a, b)
    with a.store() as s:
        h = s.head()
        assert h is not None
    twin = header.encode(dict(h.fields, state_root=b"\x66" * 32))
    cert = [[0, commit_gateway.vote(a.auth_priv, a.auth_pub, header.block_hash(twin))]]
    bob = Device("bob", B)
    bob.seq = 1 << 30
    rep = b.send(bob.make(txdecode.TYPE_CLIENT_UPDATE, {1: A, 2: [[twin, cert, None]]}))
    assert rep.ok and rep.status == 0, rep
    rq, rseen, procs, aid = bob_buys(tmp_path, a, b)
    try:
        closed_and_refunded(b, rq, rseen, aid, r".*client-frozen")
    finally:
        interrupt(procs)
    with b.store() as s:
        assert recorded.purchases(s) == []  # nothing recorded: nothing proven


class Calls:
    """A store of B whose contract calls are counted by the height asked from."""

    def __init__(self, txs: list[Any]) -> None:
        self.txs, self.asked = txs, []

    def txs_of_type(self, type_: int, since: int = 0) -> Iterator[Any]:
        self.asked.append(since)
        return iter([t for t in self.txs if t.height >= since])


def test_the_verdicts_are_read_from_the_agreements_height() -> None:
    aid, other = b"\x01" * 16, b"\x02" * 16
    paid = [market.AGREEMENT, "delivery-paid", aid, 0, b"s", 9, 0]
    txs = [SimpleNamespace(height=3, events=[[market.AGREEMENT, "delivery-paid", aid, 7]]),
           SimpleNamespace(height=10, events=[paid]),
           SimpleNamespace(height=11, events=[[market.AGREEMENT, "delivery-failed", aid, 1,
                                               b"s", "stream"],
                                              [market.AGREEMENT, "delivery-paid", other, 2]])]
    store = Calls(txs)
    seen: set[int] = set()
    assert resell.judged(store, aid, 10, seen) == {0, 1} and store.asked == [10]
    assert seen == {0, 1}  # added to what was seen
    assert resell.judged(store, aid) == {0, 1, 7}  # from 0: the older call too


def test_the_state_file_is_read_back_and_a_bad_one_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "resell.json"
    book = resell.ResaleBook(path)
    a1, a2 = b"\x01" * 16, b"\x02" * 16
    book.put(a1, {"since": 7, "checked": {"0": [2150, -2]}, "batches": [0]})
    book.put(a2, {"since": 9, "checked": {}, "batches": []})
    again = resell.ResaleBook(path)  # a restarted reseller reads what was written
    assert again.get(a1) == {"since": 7, "checked": {"0": [2150, -2]}, "batches": [0]}
    again.keep_only([a2])  # a1 no longer open in B
    assert resell.ResaleBook(path).get(a1) is None and resell.ResaleBook(path).get(a2)
    assert not (tmp_path / "resell.json.tmp").exists()  # written whole, then renamed
    path.write_text("{not json")
    assert resell.ResaleBook(path).entries == {}  # B's chain alone is taken up
    assert resell.ResaleBook(None).get(a1) is None  # no file: kept in memory only
