"""A refused SUBSCRIBE is not a subscription (tools/mqtt_ask.py, `Line`):
NATS's MQTT listener refuses a QoS 1 SUBSCRIBE (SUBACK 0x80) when it cannot
make the subscription's JetStream consumer in time, as happens for a minute
or so after a node of the cluster died (docs/CONSENSUS.md, "A light node
after a machine died"). `submit` took that SUBACK for a subscription,
published its transaction and never got the answer. Here a real broker
(amqtt, in this process) refuses the first SUBSCRIBE of the rx topic, like
NATS does: submit subscribes again, sends the transaction once the broker
granted it, and gets the gateway's answer (a responder answers like the
gateway: a sealed rejection on the sender's rx topic). A broker that refuses
for good gets a SubmitError saying so, and no transaction is sent."""

from __future__ import annotations

import queue

import paho.mqtt.client as mqtt
import pytest

from shared import messages, notice, topics
from shared import messages_gateway as mg
from shared import tx as txm
from tests.support.brokers import AmqttBroker, refusing_amqtt, wait_until
from tests.support.gwtest import Device, key
from tools.keys import KeyPair
from tools.relay import Side
from tools.submit import SubmitError, submit
from tools.supplier import Supplier
from tools.xbuy import CrossBuyer

DOMAIN = "suback-test"
AUTHORITY = key("suback-authority")


def shut(c: mqtt.Client) -> None:
    """Close `c`'s connection (its on_disconnect not called) and stop its
    network thread."""
    c.on_disconnect = None
    c.disconnect()  # first: it wakes the network thread, which loop_stop joins
    c.loop_stop()   # (the other way round, loop_stop waits out a ~1 s select)


@pytest.fixture
def refusing():
    b, state = refusing_amqtt("/rx", count_topic=topics.tx(DOMAIN))
    try:
        yield b.start(), state
    finally:
        b.close()


def responder(broker: AmqttBroker) -> mqtt.Client:
    """Answers every transaction on tl/<d>/tx with a sealed rejection, as a gateway does."""
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="responder",
                    protocol=mqtt.MQTTv311)
    ready: queue.Queue[bool] = queue.Queue()

    def on_message(cl, _u, m) -> None:
        t = txm.decode(m.payload)
        msg = messages.rejection(t.id, t.seq, "bad-seq", "answered", None)
        cl.publish(topics.rx(DOMAIN, t.sender.hex()),
                   notice.seal(AUTHORITY[0], txm.device_id(AUTHORITY[1]), msg), qos=1)

    c.on_message = on_message
    c.on_subscribe = lambda *a: ready.put(True)
    c.connect(broker.host, broker.port, 30)
    c.loop_start()
    c.subscribe(topics.tx(DOMAIN), qos=1)
    ready.get(timeout=10)
    return c


def test_submit_subscribes_again_after_a_refused_suback(refusing):
    broker, state = refusing
    gw = responder(broker)
    try:
        d = Device("suback-device", DOMAIN)
        reply = submit(broker.url, DOMAIN, d.reading(2150), AUTHORITY[1], timeout=10)
        assert (reply.ok, reply.reason, reply.detail) == (False, "bad-seq", "answered")
        assert state["asked"] == 2 and state["sent"] == 1  # refused once, then granted
    finally:
        shut(gw)


def test_submit_sends_nothing_while_the_broker_refuses(refusing):
    broker, state = refusing
    state["refuse"] = 10 ** 6
    d = Device("suback-refused", DOMAIN)
    with pytest.raises(SubmitError, match="refused the subscription"):
        submit(broker.url, DOMAIN, d.reading(2150), AUTHORITY[1], timeout=2)
    assert state["asked"] >= 2 and state["sent"] == 0


def test_supplier_listens_again_after_a_refused_suback(refusing):
    """tools/supplier.Supplier.listen (the reseller's MATCH notices) waits for
    a granted subscription of its rx topic: a refused one was taken for a
    subscription and every MATCH was lost."""
    broker, state = refusing
    priv, pub = key("suback-supplier")
    kp = KeyPair(priv, pub)
    sup = Supplier(kp, Side(DOMAIN, None, broker.url, AUTHORITY[1], None), timeout=10,
                   line=lambda s: None)
    try:
        sup.listen()
        agreement = bytes(range(16))
        msg = mg.match(agreement, b"\x01" * 32, kp.id, pub, "temp", 3, 4, 5, 1000, b"c",
                       "supplier", 7, 0, 60)
        pubc = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="authority",
                           protocol=mqtt.MQTTv311)
        pubc.connect(broker.host, broker.port, 30)
        pubc.loop_start()
        try:
            pubc.publish(topics.rx(DOMAIN, kp.id.hex()),
                         notice.seal(AUTHORITY[0], txm.device_id(AUTHORITY[1]), msg),
                         qos=1).wait_for_publish(5)
            got = sup.matches.get(timeout=5)
        finally:
            shut(pubc)
        assert (got.id, got.quantity) == (agreement, 4)
        assert state["asked"] == 2  # refused once, then granted
    finally:
        sup.stop()


def test_cross_buyer_listens_again_after_a_refused_suback():
    """tools/xbuy.CrossBuyer (the reseller's purchase in A) waits for a granted
    subscription of the agreement's data topic: a refused one was taken for a
    subscription and the supplier's readings were lost."""
    agreement, supplier = bytes(range(16)), b"\x02" * 32
    b, state = refusing_amqtt(agreement.hex())
    broker = b.start()
    priv, pub = key("suback-buyer")
    buyer = CrossBuyer(KeyPair(priv, pub), Side("suback-b", None, broker.url, AUTHORITY[1], None),
                       Side(DOMAIN, None, broker.url, AUTHORITY[1], None), timeout=10,
                       line=lambda s: None)
    pubc = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="a-supplier",
                       protocol=mqtt.MQTTv311)
    try:
        inbox = buyer._subscribe(supplier, agreement)
        pubc.connect(broker.host, broker.port, 30)
        pubc.loop_start()
        pubc.publish(topics.data(DOMAIN, supplier.hex() + "/" + agreement.hex()), b"reading",
                     qos=1).wait_for_publish(5)
        wait_until(lambda: inbox.held == [b"reading"], 5, what="the reading held")
        assert state["asked"] == 2  # refused once, then granted
    finally:
        shut(pubc)
        buyer.close()
        b.close()


@pytest.mark.mosquitto
def test_a_refused_login_is_said_at_once(mosquitto_factory):
    """A broker that refuses the connection (CONNACK: not authorized) is
    passed over as soon as it says so, the refusal named (it was waited out
    for the whole timeout and said to have dropped the connection)."""
    broker = mosquitto_factory(allow_anonymous="false")
    d = Device("login-refused", DOMAIN)
    with pytest.raises(SubmitError, match="refused the connection: Not authorized"):
        submit(broker.url, DOMAIN, d.reading(2150), AUTHORITY[1], timeout=30,
               login=("nobody", "wrong"))
