"""A buyer *board* in domain B buys a supplier's readings in domain A through
a cross-domain reseller (docs/CROSSDOMAIN.md, "A buyer board in B: the
reseller"): two `thingledger run` gateways on their own embedded brokers,
the relayers (A -> B with --bridge, B -> A), sam a host-side supplier in
A (tools/supplier.py, in this process), `thingledger xdomain resell` as a
process, and a virtual buyer board in B running the unchanged market buyer
firmware under the MicroPython Unix port (tools/vboard.MARKET_HEAP).

Delivered: the board accepts `quantity` readings carrying sam's values
(its log), B's chain holds the reseller's XPURCHASE agree and deliver
records of the agreement in A, the agree linked to the board's agreement
in B (stored both ways), B's operator judged the agreement in B
(the reseller paid, the board's escrow spent) and A's operator paid sam.
Refused: with no offer in A at the reseller's price, the reseller CLOSEs
the agreement in B and says why; the board is refunded in full."""

from __future__ import annotations

import re
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.broker.embedded import parse_url
from gateway.db.genesis_files import write_key
from gateway.ledger import keys
from gateway.market.ledger import rules as market
from gateway.node.config import KEY_FILE
from gateway.xdomain import recorded
from shared import tx as txm
from tests.support.gwtest import Device, key
from tests.support.mpyrun import firmware_build
from tests.support.waits import lines, wait_line
from tests.xdomain.test_xdomain_e2e import A, B, Gateway, cli
from tools.build import tool
from tools.keys import KeyPair
from tools.relay import open_side
from tools.supplier import Supplier
from tools.vboard import VirtualBoard
from tools.xdomain_demo import interrupt

SAM_PRICE, PRICE, QUANTITY, REX_FUNDS = 3, 5, 4, 100
NEED = {"service": "temperature", "max_price": PRICE, "quantity": QUANTITY,
        "policy": "cheapest", "wait_s": 600}


@pytest.fixture
def domains(tmp_path: Path) -> Iterator[tuple[Gateway, Gateway]]:
    """dom-a and dom-b (bob holds 500, rex the reseller 100), each with its
    agreement contract (the operator's fee 5 %)."""
    gws: list[Gateway] = []
    try:
        gws.append(Gateway(tmp_path, A, {}))
        gws.append(Gateway(tmp_path, B, {Device("bob", B).pub: 500,
                                         Device("rex", B).pub: REX_FUNDS}))
        for g in gws:
            deploy_agreement(g)
        yield gws[0], gws[1]
    finally:
        for g in gws:
            g.stop()


def deploy_agreement(g: Gateway) -> None:
    """The agreement contract deployed in `g`'s domain (the operator's fee 5 %)."""
    op = txm.device_id(g.auth_pub)
    rep = g.send(txm.make(g.auth_priv, op, txm.TYPE_CONTRACT_ADMIN, g.domain,
                          int(time.time() * 1000), 0, {
                              1: "deploy", 2: market.AGREEMENT_LABEL, 3: "agreement",
                              4: market.AGREEMENT_VERSION,
                              5: {"operator": op, "fee_bps": 500}}))
    assert rep.ok and rep.status == 0, rep


def keyfile(tmp: Path, name: str) -> Path:
    path = tmp / (name + ".key")
    if not path.exists():  # a process started again finds it
        write_key(path, key(name)[0])
    return path


def start_relay(tmp: Path, src: Gateway, dst: Gateway, name: str, *extra: str
                ) -> subprocess.Popen:
    return subprocess.Popen(
        [tool("thingledger"), "relay", "--from", src.domain, "--to", dst.domain, "--from-dir",
         str(src.dir), "--to-dir", str(dst.dir), "--from-broker", src.url, "--to-broker",
         dst.url, "--key", str(keyfile(tmp, name)), "--interval", "0.5", *extra],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def start_reseller(tmp: Path, a: Gateway, b: Gateway, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [tool("thingledger"), "xdomain", "resell", "--data-dir", str(b.dir), "--broker", b.url,
         "--of-dir", str(a.dir), "--of-broker", a.url, "--service", "temperature",
         "--price", str(PRICE), "--max-price", str(SAM_PRICE + 1), "--retry", "600",
         "--timeout", "30", "--key", str(keyfile(tmp, "rex")), *extra],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def start_board(tmp: Path, b: Gateway) -> tuple[subprocess.Popen, object, list[str], bytes]:
    """The buyer board in B, registered and given what its need costs."""
    vb = VirtualBoard("dora", tmp / "dora")
    host, port = parse_url(b.url)
    vb.configure(domain=B, authority_hex=b.auth_pub.hex(), host=host, port=port, need=NEED)
    proc = vb.start(firmware_build())
    q, seen = lines(proc), []
    board = bytes.fromhex(re.search(r"id=(\w{32})", wait_line(q, r"^online id=", 60, seen))[1])
    wait_line(q, r"^receipt-verified seq=1 ", 30, seen)  # registered
    bob = Device("bob", B)
    bob.seq = 1 << 40
    rep = b.send(bob.make(txm.TYPE_TRANSFER, {1: board, 2: PRICE * QUANTITY}))
    assert rep.ok and rep.status == 0, rep
    return proc, q, seen, board


def clients_and_sam(a: Gateway, b: Gateway) -> tuple[KeyPair, Supplier]:
    """Each domain's client of the other, and sam registered and offering
    temperature in A at SAM_PRICE; (sam's key, sam)."""
    for at, of in ((b, a), (a, b)):
        r = cli("xdomain", "create", "--data-dir", str(at.dir), "--broker", at.url,
                "--of-dir", str(of.dir), "--key", str(at.dir / KEY_FILE))
        assert r.returncode == 0, r.stdout + r.stderr
    sam_key = KeyPair(*key("sam"))
    sam = Supplier(sam_key, open_side(a.dir, a.url), timeout=20, line=lambda s: None)
    sam.register()
    sam.listen()
    sam.offer("temperature", SAM_PRICE, 1)
    return sam_key, sam


def clients_and_held_back_sam(a: Gateway, b: Gateway
                              ) -> tuple[KeyPair, Supplier, threading.Event, threading.Event]:
    """Each domain's client of the other, and sam offering in A and streaming
    its readings in batches of 2, readings 2.. only once `go_on` is set;
    (sam's key, sam, stop, go_on)."""
    sam_key, sam = clients_and_sam(a, b)
    stop, go_on = threading.Event(), threading.Event()

    def value(i: int) -> tuple[int, int]:
        if i >= 2:  # the second batch once rex may go on
            go_on.wait(120)
        return 2150 + 7 * i, -2
    threading.Thread(target=sam.serve, args=(value, stop, 2), daemon=True).start()
    return sam_key, sam, stop, go_on


def delivered_after_restart(b: Gateway, aid_b: bytes, bq, bseen: list[str], rq,
                            rseen: list[str]) -> None:
    """After a reseller's restart: the board buys readings 2.. of the
    agreement, the reseller delivers them all, B judges the agreement in full."""
    h = aid_b.hex()[:8]
    for i in range(2, QUANTITY):
        wait_line(bq, r"^bought agreement=%s index=%d value=%d scale=-2$"
                  % (h, i, 2150 + 7 * i), 60, bseen)
    wait_line(bq, r"^done agreement=%s readings=%d " % (h, QUANTITY), 30, bseen)
    wait_line(rq, r"^resell: agreement %s in dom-b: %d of %d readings delivered"
              % (aid_b.hex(), QUANTITY, QUANTITY), 30, rseen)
    assert not [x for x in bseen if x.startswith("bad-")], bseen
    wait_for(lambda: agreement_in(b, aid_b)["state"] == "closed", 60,
             "the agreement in dom-b judged in full")


def board_demands(tmp: Path, b: Gateway, rq, rseen: list[str], procs: list
                  ) -> tuple[subprocess.Popen, object, list[str], bytes, str]:
    """Once the reseller offers in B, a buyer board starts and demands; the
    reseller's line about the agreement in B (its id is the line's third word)."""
    wait_line(rq, r"^resell: offers temperature in dom-b at 5", 60, rseen)
    board, bq, bseen, board_id = start_board(tmp, b)
    procs.append(board)
    h = wait_line(bq, r"^demand service=temperature agreement=", 60, bseen).split(
        "agreement=")[1][:8]
    line = wait_line(rq, r"^resell: agreement %s\w{24} in dom-b: " % h, 30, rseen)
    return board, bq, bseen, board_id, line


def balance(g: Gateway, who: bytes) -> int:
    with g.store() as s:
        rec = dict(s.devices()).get(who)
    return 0 if rec is None else rec.balance


def agreement_in(g: Gateway, aid: bytes) -> dict:
    with g.store() as s:
        a = market.agreement(s.load_state(), aid)
    assert a is not None
    return a


def wait_for(cond, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out waiting for " + what
        time.sleep(0.2)


def test_a_buyer_board_in_b_buys_readings_of_a_through_the_reseller(
        domains: tuple[Gateway, Gateway], tmp_path: Path) -> None:
    a, b = domains
    sam_key, sam = clients_and_sam(a, b)
    stop = threading.Event()
    threading.Thread(target=sam.serve, args=(lambda i: (2150 + 7 * i, -2), stop, 2),
                     daemon=True).start()
    rex = Device("rex", B)
    procs = [start_relay(tmp_path, a, b, "relayer", "--bridge"),
             start_relay(tmp_path, b, a, "relayer-ba")]
    relayer = Device("relayer").id
    rp = start_reseller(tmp_path, a, b, "--via", relayer.hex())
    procs.append(rp)
    rseen: list[str] = []
    rq = lines(rp)
    board = None
    try:
        board, bq, bseen, board_id, line = board_demands(tmp_path, b, rq, rseen, procs)
        assert re.search(r" in dom-b: %s buys 4 readings of temperature at 5$" % board_id.hex(),
                         line), line
        aid_b = bytes.fromhex(line.split()[2])
        h = aid_b.hex()[:8]
        for i in range(QUANTITY):
            wait_line(bq, r"^bought agreement=%s index=%d value=%d scale=-2$"
                      % (h, i, 2150 + 7 * i), 60, bseen)
        wait_line(bq, r"^done agreement=%s readings=%d " % (h, QUANTITY), 30, bseen)
        assert not [x for x in bseen if x.startswith("bad-")], bseen
        line = wait_line(rq, r"^resell: bought in dom-a: agreement \w{32} of %s"
                         % sam_key.id.hex(), 5, rseen)
        aid_a = bytes.fromhex(line.split("agreement ")[1][:32])
        wait_line(rq, r"^resell: agreement %s\w{24} in dom-b: 4 of 4 readings delivered" % h,
                  30, rseen)
        # B's operator judges the agreement in B: rex paid for both batches, the
        # board's escrow spent (the operator's 5 % of 10 a batch rounds down to 0)
        wait_for(lambda: balance(b, rex.id) == REX_FUNDS - SAM_PRICE * QUANTITY
                 + PRICE * QUANTITY, 60, "rex paid in dom-b")
        # A's operator pays sam for the two batches rex bought
        wait_for(lambda: balance(a, sam_key.id) == SAM_PRICE * QUANTITY, 60, "sam paid in dom-a")
    finally:
        stop.set()
        sam.stop()
        if board is not None:
            board.terminate()
            board.wait(10)
        interrupt(procs)
    assert balance(b, board_id) == 0
    # B's chain holds rex's XPURCHASE records of the agreement in A, checked by
    # B's gateway: the agreement and its two batches, as B's batches mirror them
    with b.store() as s:
        (p,) = recorded.purchases(s)
        got = recorded.batches(s, p)
        state = s.load_state()
        committed_b = [e[3:6] for t in s.txs_of_type(txm.TYPE_CONTRACT_CALL) for e in t.events
                       if e[:3] == [market.AGREEMENT, "delivery-committed", aid_b]]
    assert (p.domain, p.id, p.buyer, p.supplier, p.price, p.quantity, p.readings) == (
        A, aid_a, rex.id, sam_key.id, SAM_PRICE, QUANTITY, QUANTITY)
    assert [(x.batch, x.first, x.count) for x in got] == [(0, 0, 2), (1, 2, 2)]
    # the link, on chain both ways: the purchase in A serves the board's agreement in B
    assert p.serves == aid_b and recorded.link(state, aid_b) == (A, aid_a)
    shown = cli("xdomain", "purchases", "--data-dir", str(b.dir))
    assert shown.returncode == 0 and ("in dom-a agreement %s " % aid_a.hex()) in shown.stdout
    assert "serves agreement %s here (linked)" % aid_b.hex() in shown.stdout, shown.stdout
    # rex's batches in B are A's batches (same numbers, first indices and counts)
    assert [tuple(c) for c in committed_b] == [(0, 0, 2), (1, 2, 2)]
    # B's agreement: judged in full by B's operator (4 readings paid), closed
    ag = market.agreement(state, aid_b)
    assert ag is not None and (ag["state"], ag["paid"], ag["failed"], ag["remaining"]) == (
        "closed", QUANTITY, 0, 0), ag
    for g in (a, b):
        v = cli("chain", "verify", "--data-dir", str(g.dir))
        assert v.returncode == 0, v.stdout + v.stderr


def test_a_reseller_killed_mid_delivery_takes_the_agreement_up_again(
        domains: tuple[Gateway, Gateway], tmp_path: Path) -> None:
    """rex is SIGKILLed once the board has bought readings 0 and 1 (batch 0
    committed in B) while sam holds back readings 2 and 3; started again, it
    takes the open agreement in B up from B's state (the link) and its state
    file, listens to A's stream again, and delivers readings 2 and 3: the
    board buys all 4, B's operator pays each batch once."""
    a, b = domains
    sam_key, sam, stop, go_on = clients_and_held_back_sam(a, b)
    rex = Device("rex", B)
    procs = [start_relay(tmp_path, a, b, "relayer", "--bridge"),
             start_relay(tmp_path, b, a, "relayer-ba")]
    via = Device("relayer").id.hex()
    rp = start_reseller(tmp_path, a, b, "--via", via)
    procs.append(rp)
    rseen: list[str] = []
    rq = lines(rp)
    board = None
    try:
        board, bq, bseen, board_id, line = board_demands(tmp_path, b, rq, rseen, procs)
        aid_b = bytes.fromhex(line.split()[2])
        h = aid_b.hex()[:8]
        for i in range(2):
            wait_line(bq, r"^bought agreement=%s index=%d value=%d scale=-2$"
                      % (h, i, 2150 + 7 * i), 60, bseen)
        wait_line(rq, r"^resell: %s commits readings 0..1 of %s in dom-b \(batch 0\)"
                  % (rex.id.hex()[:8], h), 30, rseen)
        rp.kill()
        rp.wait(10)
        assert (b.dir / ("resell-%s.json" % rex.id.hex()[:16])).exists()
        rp = start_reseller(tmp_path, a, b, "--via", via)
        procs.append(rp)
        rq = lines(rp)
        wait_line(rq, r"^resell: agreement %s in dom-b: taken up again, served by agreement "
                  r"\w{32} in dom-a, 2 of 4 readings committed$" % aid_b.hex(), 60, rseen)
        wait_line(rq, r"^resell: agreement %s in dom-b: listening again to agreement \w{32} "
                  r"in dom-a \(2 readings checked before\)$" % aid_b.hex(), 60, rseen)
        go_on.set()
        delivered_after_restart(b, aid_b, bq, bseen, rq, rseen)
    finally:
        go_on.set()
        stop.set()
        sam.stop()
        if board is not None:
            board.terminate()
            board.wait(10)
        interrupt(procs)
    ag = agreement_in(b, aid_b)
    assert (ag["paid"], ag["failed"], ag["remaining"]) == (QUANTITY, 0, 0), ag
    with b.store() as s:
        paid = [e[3] for t in s.txs_of_type(txm.TYPE_CONTRACT_CALL) for e in t.events
                if e[:3] == [market.AGREEMENT, "delivery-paid", aid_b]]
        (p,) = recorded.purchases(s)
        got = [(x.batch, x.first, x.count) for x in recorded.batches(s, p)]
    assert sorted(paid) == [0, 1]  # each batch paid once
    assert p.serves == aid_b and got == [(0, 0, 2), (1, 2, 2)]
    # rex: paid its purchase in A once (a packet of 12), paid in B for 4 readings once
    assert balance(b, rex.id) == REX_FUNDS - SAM_PRICE * QUANTITY + PRICE * QUANTITY
    assert balance(b, board_id) == 0


def test_no_offer_in_a_at_its_price_the_reseller_closes_and_the_board_is_refunded(
        domains: tuple[Gateway, Gateway], tmp_path: Path) -> None:
    """sam offers in A above the reseller's price: the reseller cannot buy,
    CLOSEs the board's agreement in B, says why and withdraws its offer; the
    board is told (ENDED) and refunded in full, the reseller is paid
    nothing and records no purchase."""
    a, b = domains
    sam = Device("sam", A)
    assert a.send(sam.register()).status == 0
    rep = a.send(sam.make(txm.TYPE_OFFER, {1: "temperature", 2: "cC", 3: 9, 4: 1, 5: "",
                                           6: 600, 7: 1}))
    assert rep.ok and rep.status == 0, rep
    rp = start_reseller(tmp_path, a, b)  # A's directory read on A's broker: no relayer
    procs = [rp]
    rseen: list[str] = []
    rq = lines(rp)
    board = None
    try:
        board, bq, bseen, board_id, line = board_demands(tmp_path, b, rq, rseen, procs)
        aid_b = bytes.fromhex(line.split()[2])
        h = aid_b.hex()[:8]
        wait_line(rq, r"^resell: agreement %s in dom-b: the purchase in dom-a failed: no offer "
                  r"of temperature in dom-a at most 4$" % aid_b.hex(), 60, rseen)
        wait_line(rq, r"^resell: closed agreement %s in dom-b" % aid_b.hex(), 30, rseen)
        wait_line(rq, r"^resell: offer of temperature withdrawn in dom-b", 30, rseen)
        wait_line(bq, r"^ended agreement=%s refund=%d$" % (h, PRICE * QUANTITY), 30, bseen)
        wait_line(bq, r"^balance=%d " % (PRICE * QUANTITY), 30, bseen)
        # refunded, the board demands again: no offer now (withdrawn), its demand waits
        wait_line(bq, r"^demand service=temperature agreement=", 30, bseen)
    finally:
        if board is not None:
            board.terminate()
            board.wait(10)
        interrupt(procs)
    assert not [x for x in bseen if x.startswith("bought ")], bseen
    ag = agreement_in(b, aid_b)
    assert (ag["state"], ag["paid"], ag["remaining"]) == ("closed", 0, 0), ag
    assert balance(b, Device("rex", B).id) == REX_FUNDS
    with b.store() as s:
        assert recorded.purchases(s) == []
        assert [r for r in s.kv_range(keys.offer("temperature", Device("rex", B).id), 1)
                if r[0] == keys.offer("temperature", Device("rex", B).id)] == []  # withdrawn
