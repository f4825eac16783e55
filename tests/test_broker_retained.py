"""The embedded broker keeps retained messages to the sessions that subscribed
to them (gateway/broker.RetainSafeBroker): amqtt 0.12.1 alone sends a newly
connected client the retained messages of every filter any session holds."""

from __future__ import annotations

import queue
import threading

import paho.mqtt.client as mqtt
from brokers import unique


def _client(broker, topic: str) -> tuple[mqtt.Client, queue.Queue]:
    """A client subscribed to `topic` (returns once the SUBACK is in)."""
    got: queue.Queue = queue.Queue()
    subscribed = threading.Event()
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=unique("r"),
                    protocol=mqtt.MQTTv311)
    c.on_message = lambda _c, _u, m: got.put((m.topic, bytes(m.payload)))
    c.on_connect = lambda cl, *a: cl.subscribe(topic, qos=1)
    c.on_subscribe = lambda *a: subscribed.set()
    c.connect(broker.host, broker.port, keepalive=30)
    c.loop_start()
    assert subscribed.wait(5), "no SUBACK"
    return c, got


def test_retained_messages_reach_only_their_subscribers(amqtt_broker):
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=unique("p"),
                      protocol=mqtt.MQTTv311)
    pub.connect(amqtt_broker.host, amqtt_broker.port)
    pub.loop_start()
    try:
        for topic, body in (("tl/d/offers", b"OFFERS"), ("tl/d/dev/aa/rx", b"BALANCE-A")):
            pub.publish(topic, body, qos=1, retain=True).wait_for_publish(5)
        a, got_a = _client(amqtt_broker, "tl/d/dev/aa/rx")  # its own rx: its retained balance
        assert got_a.get(timeout=5) == ("tl/d/dev/aa/rx", b"BALANCE-A")
        o, got_o = _client(amqtt_broker, "tl/d/offers")
        assert got_o.get(timeout=5) == ("tl/d/offers", b"OFFERS")
        # a third client, subscribed elsewhere, gets neither; a marker published
        # after its subscription bounds the wait
        b, got_b = _client(amqtt_broker, "tl/d/dev/bb/rx")
        pub.publish("tl/d/dev/bb/rx", b"MARKER", qos=1).wait_for_publish(5)
        assert got_b.get(timeout=5) == ("tl/d/dev/bb/rx", b"MARKER")
        assert got_b.empty() and got_a.empty() and got_o.empty()
        for c in (a, o, b):
            c.loop_stop()
            c.disconnect()
    finally:
        pub.loop_stop()
        pub.disconnect()
