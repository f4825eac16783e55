"""A connection that keeps its session (tools/mqtt_ask.Line `keep`,
docs/CROSSDOMAIN.md, "A restarted reseller"), on a real mosquitto: what is
published on its subscription while it is closed is queued by the broker
and delivered when the next connection of that login connects, before
anything subscribed in the new process: held until a handler's filter
matches it. A connection that does not keep its session gets none of it."""

from __future__ import annotations

import queue

import paho.mqtt.client as mqtt
import pytest

from tests.support.brokers import unique, wait_until
from tools.failover import Brokers
from tools.mqtt_ask import Line, connection

pytestmark = pytest.mark.mosquitto

TOPIC = "tl/kept/data/sup/ag"
LOGIN = ("ab" * 16, "secret")  # an anonymous mosquitto takes any login


def publish(broker, payloads: list[bytes]) -> None:
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=unique("pub"),
                    protocol=mqtt.MQTTv311)
    c.connect(broker.host, broker.port, keepalive=30)
    c.loop_start()
    try:
        for p in payloads:
            c.publish(TOPIC, p, qos=1).wait_for_publish(5)
    finally:
        c.loop_stop()
        c.disconnect()


def test_a_kept_session_gets_what_came_while_it_was_closed(mosquitto_broker) -> None:
    brokers = Brokers(mosquitto_broker.url)
    first = connection(brokers, LOGIN, 10, keep=True)
    try:
        assert first.keep
        first.subscribe(TOPIC, lambda _t, _p: None, qos=1)
    finally:
        first.release()  # the process's last user: closed, its session kept by the broker
    assert first.closed
    publish(mosquitto_broker, [b"r2", b"r3"])
    again = connection(brokers, LOGIN, 10, keep=True)
    try:
        # delivered at the CONNACK, before the new process subscribed: held
        wait_until(lambda: again.held == 2, 10, what="the queued readings")
        got: queue.Queue[bytes] = queue.Queue()
        again.subscribe(TOPIC, lambda _t, p: got.put(p), qos=1)
        assert [got.get_nowait(), got.get_nowait()] == [b"r2", b"r3"]
        assert again.held == 0
        publish(mosquitto_broker, [b"r4"])  # and the subscription goes on
        assert got.get(timeout=10) == b"r4"
    finally:
        again.release()


def test_a_connection_that_does_not_keep_its_session_gets_none_of_it(mosquitto_broker) -> None:
    first = Line(mosquitto_broker.url, LOGIN[0], login=LOGIN, timeout=10)
    try:
        first.subscribe(TOPIC, lambda _t, _p: None, qos=1)
    finally:
        first.close()
    publish(mosquitto_broker, [b"r2"])
    again = Line(mosquitto_broker.url, LOGIN[0], login=LOGIN, timeout=10)
    try:
        got: queue.Queue[bytes] = queue.Queue()
        again.subscribe(TOPIC, lambda _t, p: got.put(p), qos=1)
        publish(mosquitto_broker, [b"r3"])
        assert got.get(timeout=10) == b"r3"  # what came after it subscribed, not before
        assert got.empty()
    finally:
        again.close()
