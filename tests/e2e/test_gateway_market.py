"""The market through a running gateway and a real broker (issue 5): offers
in the retained directory, a demand matched, MATCH notices to both devices,
signed readings streamed off-chain, batch commitments judged by the
operator against the stream it holds (a tampered reading refused, a batch
with a missing reading not paid and recorded against the supplier),
ACCOUNT and ENDED notices, value conserved, and the chain replays."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.db import genesis_files as genesis
from gateway.db import verify as replay
from gateway.db.store import Store
from gateway.market.ledger import directory
from gateway.market.ledger import rules as ledger
from gateway.market.node.analytics import DerivedService
from gateway.market.node.service import RESUME_ORDER
from gateway.node.config import DB_FILE, GENESIS_FILE
from shared import merkle, messages, stream, topics
from shared import tx as txm
from shared.messages_gateway import (
    M_AGREEMENT,
    M_BALANCE,
    M_CONTRACT,
    M_NEXT,
    M_ORDER,
    M_PRICE,
    M_REFUND,
    M_ROLE,
    M_SUPPLIER,
    M_SUPPLIER_KEY,
)
from tests.support.e2e_devices import DOMAIN, GatewayThread, SimDevice, authority_of, thingledger
from tests.support.waits import retained

SUPPLY, GRANT, FEE_BPS = 100_000, 1_000, 500


def notice(dev: SimDevice, kind: int, pred=lambda m: True, timeout: float = 10.0) -> dict:
    return dev.wait(lambda: next((m for m in dev.notices
                                  if m[messages.M_KIND] == kind and pred(m)), None),
                    timeout, f"notice kind {kind}")


def ok(dev: SimDevice, msg: bytes) -> list:
    r = dev.receipt_for(dev.submit(msg), 10)
    assert r.status == messages.STATUS_OK, (r.reason, r.events)
    return r.events


@pytest.fixture
def market(amqtt_broker, tmp_path: Path):
    data = tmp_path / "gw"
    genesis.create_domain(data, DOMAIN, authority_balance=SUPPLY)
    gws: list[GatewayThread] = []
    devs = []

    def gateway(*derived: DerivedService) -> GatewayThread:
        gw = GatewayThread(data, amqtt_broker.url, market_fee_bps=FEE_BPS,
                           market_grant=GRANT, derived=derived)
        gws.append(gw)
        return gw.start()

    def device(name: str) -> SimDevice:
        d = SimDevice(amqtt_broker.host, amqtt_broker.port, authority_of(data),
                      name=name).connect()
        devs.append(d)
        ok(d, d.register_tx())
        assert notice(d, messages.KIND_ACCOUNT)[M_BALANCE] == GRANT
        return d

    yield gateway, device, data, amqtt_broker
    for d in devs:
        d.close()
    for gw in gws:
        if gw.running:
            gw.stop()


def test_a_purchase_end_to_end(market) -> None:
    gateway, device, data, broker = market
    gw = gateway()
    sup, buyer = device("supplier"), device("buyer")
    ok(sup, sup.sign(txm.TYPE_OFFER, {1: "temperature", 2: "cC", 3: 5, 4: 1, 5: "u4pruy",
                                      6: 600, 7: 1}))
    listed = directory.decode(retained(broker, topics.offers(DOMAIN)))
    assert [(o[1], o[2], o[4]) for o in listed] == [(sup.id, "temperature", 5)]

    ev = ok(buyer, buyer.sign(txm.TYPE_DEMAND, {1: "temperature", 2: 6, 3: 8, 4: 60,
                                                5: "cheapest"}))
    aid = next(e for e in ev if e[0] == "match")[1]
    for d, role in ((sup, "supplier"), (buyer, "buyer")):
        m = notice(d, messages.KIND_MATCH, lambda m: m[M_AGREEMENT] == aid)
        assert (m[M_ROLE], m[M_SUPPLIER], m[M_SUPPLIER_KEY], m[M_PRICE]) == (
            role, sup.id, sup.pub, 5)
        assert m[M_CONTRACT] == ledger.AGREEMENT

    data_topic = topics.data(DOMAIN, sup.hex + "/" + aid.hex())
    readings = [stream.reading(sup.priv, sup.id, aid, i, 2100 + i, -2) for i in range(8)]
    for r in readings[:4]:
        sup.client.publish(data_topic, r, qos=1).wait_for_publish(5)
    # a tampered reading and one signed by another key are refused, not stored
    bad = bytearray(readings[4])
    bad[-1] ^= 1
    sup.client.publish(data_topic, bytes(bad), qos=1).wait_for_publish(5)
    gw.wait_event(r"market reading refused .* reason=bad-signature")
    forged = stream.reading(buyer.priv, sup.id, aid, 4, 9999, -2)
    sup.client.publish(data_topic, forged, qos=1).wait_for_publish(5)
    gw.wait_event(r"market reading refused .* reason=bad-signature", start=1)

    def commit(batch: int, first: int, leaves: list[bytes]) -> None:
        ok(sup, sup.sign(txm.TYPE_CONTRACT_CALL, {
            1: ledger.AGREEMENT, 2: "commit", 3: [aid, batch, first, len(leaves),
                                                  merkle.root(leaves)], 4: 0, 5: 50_000}))

    commit(0, 0, readings[:4])
    gw.wait_event(r"market paid agreement=%s batch=0 .* amount=19 fee=1" % aid.hex()[:8])
    # batch 1 commits readings 4..7 but reading 6 never reaches the gateway
    for r in (readings[4], readings[5], readings[7]):
        sup.client.publish(data_topic, r, qos=1).wait_for_publish(5)
    commit(1, 4, readings[4:8])
    gw.wait_event(r"market delivery-failed agreement=%s batch=1 .* reason=stream"
                  % aid.hex()[:8], timeout=15)
    ended = notice(buyer, messages.KIND_ENDED, lambda m: m[M_AGREEMENT] == aid)
    assert ended[M_REFUND] == 20  # the unpaid batch goes back
    notice(sup, messages.KIND_ENDED, lambda m: m[M_AGREEMENT] == aid)
    # each party is told its new balance (the wait fails if that notice never comes)
    for d, balance in ((sup, GRANT + 19), (buyer, GRANT - 20)):
        notice(d, messages.KIND_ACCOUNT, lambda m, b=balance: m[M_BALANCE] == b)
    gw.stop()

    with Store(data / DB_FILE, readonly=True) as st:
        g = genesis.load(data / GENESIS_FILE)
        state = st.load_state()
        assert state.total_balance() == SUPPLY
        assert ledger.supplier_record(state, sup.id) == {"paid": 1, "failed": 1}
        assert replay.verify_chain(st, g).head_height == st.head().height

    # the command line: agreements, the supplier's record, a buyer's check of
    # readings against the on-chain commitment (reading 6 never arrived)
    dd = ["--data-dir", str(data)]
    out = thingledger("market", "agreements", "--all", *dd)
    assert out.returncode == 0 and f"{aid.hex()}  closed temperature" in out.stdout
    assert "paid=1 failed=1" in thingledger("market", "record", sup.hex, *dd).stdout
    out = thingledger("market", "check", "--agreement", aid.hex(), "--index", "2", *dd)
    assert out.returncode == 0 and "value=2102e-2 verified" in out.stdout, out
    out = thingledger("market", "check", "--agreement", aid.hex(), "--index", "5", *dd)
    assert out.returncode == 1 and "missing-reading" in out.stdout
    out = thingledger("contract", "list", *dd)
    assert f"{ledger.AGREEMENT.hex()}  agreement agreement v{ledger.AGREEMENT_VERSION} active" in out.stdout
    assert "fee_bps: %d" % FEE_BPS in out.stdout


def test_edge_analytics_sells_a_rolling_mean(market) -> None:
    """The gateway buys the temperature stream, keeps a rolling mean of the
    last 2 readings and sells it as temperature-mean, signed by its key."""
    gateway, device, data, broker = market
    gateway(DerivedService("temperature-mean", "temperature", 2, "cC", 1, 1))
    sup, buyer = device("supplier"), device("buyer")
    key = data.parent / "supplier.key"
    key.write_text(sup.priv.hex())
    key.chmod(0o600)
    out = thingledger("market", "offer", "--key", str(key), "--service", "temperature",
                      "--price", "1", "--unit", "cC", "--interval", "1",
                      "--broker", broker.url, "--data-dir", str(data))
    assert out.returncode == 0 and "committed" in out.stdout, out
    # the operator's demand for its source is matched with the supplier
    m = notice(sup, messages.KIND_MATCH, timeout=15)
    aid = m[M_AGREEMENT]
    topic = topics.data(DOMAIN, sup.hex + "/" + aid.hex())
    for i, v in enumerate((2000, 2010, 2030)):
        sup.client.publish(topic, stream.reading(sup.priv, sup.id, aid, i, v, -2),
                           qos=1).wait_for_publish(5)
    ev = ok(buyer, buyer.sign(txm.TYPE_DEMAND, {1: "temperature-mean", 2: 1, 3: 2, 4: 60,
                                                5: "latest"}))
    match = next(e for e in ev if e[0] == "match")
    authority = authority_of(data)
    assert match[3] == txm.device_id(authority)
    got = notice(buyer, messages.KIND_MATCH, lambda m: m[M_AGREEMENT] == match[1])
    assert got[M_SUPPLIER_KEY] == authority
    sub = buyer.client
    seen: list[bytes] = []
    derived_topic = topics.data(DOMAIN, match[3].hex() + "/" + match[1].hex())
    sub.message_callback_add(derived_topic, lambda c, u, msg: seen.append(bytes(msg.payload)))
    sub.subscribe(derived_topic, qos=1)
    buyer.wait(lambda: len(seen) >= 1, 10, "a derived reading")
    a, index, value, scale = stream.open_reading(seen[0], authority)
    assert (a, scale) == (match[1], -2) and value == (2010 + 2030) // 2


def test_the_keeper_returns_a_waiting_demands_funds(market) -> None:
    """Nothing is offered: the demand waits, its funds locked; once it stops
    waiting the operator closes it and the buyer gets everything back."""
    gateway, device, data, broker = market
    gateway()
    buyer = device("buyer")
    ev = ok(buyer, buyer.sign(txm.TYPE_DEMAND, {1: "humidity", 2: 10, 3: 5, 4: 2,
                                                5: "latest"}))
    did = next(e for e in ev if e[0] == "wait")[1]
    notice(buyer, messages.KIND_ACCOUNT, lambda m: m[M_BALANCE] == GRANT - 50)  # locked
    ended = notice(buyer, messages.KIND_ENDED, lambda m: m[M_AGREEMENT] == did, timeout=15)
    assert ended[M_REFUND] == 50
    notice(buyer, messages.KIND_ACCOUNT, lambda m: m[M_BALANCE] == GRANT)


def test_after_a_restart_an_online_device_is_told_its_state_and_owed_verdicts_come(
        market) -> None:
    """The gateway sends ACCOUNT only when a balance changes and a restarted
    broker keeps no retained one; a board keeps its agreements in RAM. So a
    device that says `online` on its status topic (a board does on every
    (re)connect; retained, so a gateway that starts reads it) is told its
    balance and each open agreement again: a MATCH sealed at the head,
    ordered above every earlier one, with the first index not yet committed.
    A verdict owed at the stop is sent after the restart."""
    gateway, device, data, broker = market
    gw = gateway()
    sup, buyer = device("supplier"), device("buyer")
    ok(sup, sup.sign(txm.TYPE_OFFER, {1: "temperature", 2: "cC", 3: 5, 4: 1, 5: "", 6: 600,
                                      7: 1}))
    ev = ok(buyer, buyer.sign(txm.TYPE_DEMAND, {1: "temperature", 2: 5, 3: 8, 4: 60,
                                                5: "cheapest"}))
    aid = next(e for e in ev if e[0] == "match")[1]
    first = notice(buyer, messages.KIND_MATCH, lambda m: m[M_AGREEMENT] == aid)
    for d in (buyer, sup):  # online (told again at once: the same agreement)
        d.client.publish(topics.status(DOMAIN, d.hex), b"online", qos=1, retain=True)
        notice(d, messages.KIND_MATCH, lambda m: M_NEXT in m)
    data_topic = topics.data(DOMAIN, sup.hex + "/" + aid.hex())
    readings = [stream.reading(sup.priv, sup.id, aid, i, 2100 + i, -2) for i in range(4)]
    for r in readings[:3]:  # the fourth is still on its way at the stop
        sup.client.publish(data_topic, r, qos=1).wait_for_publish(5)
    ok(sup, sup.sign(txm.TYPE_CONTRACT_CALL, {1: ledger.AGREEMENT, 2: "commit",
                                              3: [aid, 0, 0, 4, merkle.root(readings)], 4: 0,
                                              5: 50_000}))
    gw.stop()  # within the verdict's grace: the verdict is owed
    before = {d.hex: [n for n in d.notices if n[messages.M_KIND] == messages.KIND_MATCH][-1]
              for d in (buyer, sup)}
    for d in (buyer, sup):
        d.notices.clear()

    gw = gateway()  # reads the devices' retained `online`
    sup.client.publish(data_topic, readings[3], qos=1).wait_for_publish(5)
    gw.wait_event(r"market paid agreement=%s batch=0 " % aid.hex()[:8])
    with Store(data / DB_FILE, readonly=True) as st:
        head = st.head().height
    for d, role in ((buyer, "buyer"), (sup, "supplier")):
        acc = notice(d, messages.KIND_ACCOUNT, lambda m: M_BALANCE in m)
        if role == "buyer":  # (the supplier's balance changes when it is paid)
            assert acc[M_BALANCE] == GRANT - 40 and acc[messages.M_HEIGHT] <= head
        m = notice(d, messages.KIND_MATCH, lambda m: m[M_AGREEMENT] == aid)
        assert (m[M_ROLE], m[M_NEXT]) == (role, 4) and m[messages.M_HEIGHT] <= head
        assert m[M_ORDER] >= RESUME_ORDER
        key = (m[messages.M_HEIGHT], m[M_ORDER])
        assert key > (first[messages.M_HEIGHT], first[M_ORDER])
        assert key > (before[d.hex][messages.M_HEIGHT], before[d.hex][M_ORDER])
