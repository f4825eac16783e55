"""The embedded broker keeps retained messages to the sessions that subscribed
to them (gateway/broker.RetainSafeBroker): amqtt 0.12.1 alone sends a newly
connected client the retained messages of every filter any session holds."""

from __future__ import annotations


def test_retained_messages_reach_only_their_subscribers(amqtt_broker, paho_client):
    pub = paho_client(amqtt_broker)
    for topic, body in (("tl/d/offers", b"OFFERS"), ("tl/d/dev/aa/rx", b"BALANCE-A")):
        pub.publish(topic, body, retain=True)
    a = paho_client(amqtt_broker, ["tl/d/dev/aa/rx"])  # its own rx: its retained balance
    assert a.wait_count(1, timeout=5)[0].payload == b"BALANCE-A"
    o = paho_client(amqtt_broker, ["tl/d/offers"])
    assert o.wait_count(1, timeout=5)[0].payload == b"OFFERS"
    # a third client, subscribed elsewhere, gets neither; a marker published
    # after its subscription bounds the wait
    b = paho_client(amqtt_broker, ["tl/d/dev/bb/rx"])
    pub.publish("tl/d/dev/bb/rx", b"MARKER")
    assert b.wait_count(1, timeout=5)[0].payload == b"MARKER"
    assert [c.payloads() for c in (a, o, b)] == [[b"BALANCE-A"], [b"OFFERS"], [b"MARKER"]]
