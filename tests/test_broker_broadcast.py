"""A message reaches every subscriber even when another one leaves while it
is being delivered (gateway/broker.RetainSafeBroker).

amqtt 0.12.1 awaits each subscriber's receive check (enforcing mode: the
chain's topic rules) while it walks the live subscription list; a subscriber
that unsubscribes or disconnects during that await is popped from the list
and the next one is skipped. Seen for real: the owner's CLI never got the
receipt of a key rotation because the device's own connection ended at that
moment. Here a topic plugin holds the first subscriber's receive check until
it has unsubscribed, which makes that moment happen every time."""

from __future__ import annotations

import asyncio
import queue
import threading
from dataclasses import dataclass

import paho.mqtt.client as mqtt
import pytest
from amqtt.contexts import Action
from amqtt.plugins.base import BaseTopicPlugin
from brokers import AmqttBroker, unique

TOPIC = "tl/d/dev/aa/rx"
MARKER = "tl/d/marker"
HOLD_S = 5.0


class HoldingTopicPlugin(BaseTopicPlugin):
    """Allows everything; the receive check of a "leaver-" client on TOPIC
    waits until that client's UNSUBSCRIBE has been handled."""

    reached = threading.Event()  # set when the held check starts (read by the test)

    @dataclass
    class Config:
        pass

    def __init__(self, context) -> None:
        super().__init__(context)
        self.gone = asyncio.Event()

    async def topic_filtering(self, *, session=None, topic=None, action=None) -> bool:
        if action == Action.RECEIVE and topic == TOPIC and session.client_id.startswith("leaver-"):
            HoldingTopicPlugin.reached.set()
            await asyncio.wait_for(self.gone.wait(), HOLD_S)
        return True

    async def on_broker_client_unsubscribed(self, *, client_id: str, topic: str) -> None:
        if client_id.startswith("leaver-"):
            self.gone.set()


@pytest.fixture
def holding_broker():
    broker = AmqttBroker()
    broker.config["plugins"][f"{__name__}.HoldingTopicPlugin"] = {}
    HoldingTopicPlugin.reached.clear()
    try:
        yield broker.start()
    finally:
        broker.close()


def _client(broker, prefix: str, *topics: str) -> tuple[mqtt.Client, queue.Queue]:
    got: queue.Queue = queue.Queue()
    acks: queue.Queue = queue.Queue()
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=unique(prefix),
                    protocol=mqtt.MQTTv311)
    c.on_message = lambda _c, _u, m: got.put((m.topic, bytes(m.payload)))
    c.on_subscribe = lambda *a: acks.put(True)
    c.on_unsubscribe = lambda *a: acks.put(True)
    c.connect(broker.host, broker.port, keepalive=30)
    c.loop_start()
    for t in topics:  # one at a time, in order: the leaver's subscription comes first
        c.subscribe(t, qos=1)
        acks.get(timeout=5)
    c.acks = acks
    return c, got


def _next(q: queue.Queue, timeout: float = 5.0):
    """The next message received, or None if none came in time."""
    try:
        return q.get(timeout=timeout)
    except queue.Empty:
        return None


def test_a_subscriber_leaving_mid_delivery_does_not_cost_the_next_one_the_message(
        holding_broker):
    leaver, got_leaver = _client(holding_broker, "leaver-", TOPIC, MARKER)
    stayer, got_stayer = _client(holding_broker, "stayer-", TOPIC)
    pub, _ = _client(holding_broker, "pub-")
    try:
        pub.publish(TOPIC, b"RECEIPT", qos=1).wait_for_publish(5)
        assert HoldingTopicPlugin.reached.wait(5), "the broker never checked the leaver"
        leaver.unsubscribe(TOPIC)  # while its receive check is held
        leaver.acks.get(timeout=5)
        assert _next(got_stayer) == (TOPIC, b"RECEIPT"), "the next subscriber was skipped"
        # the leaver had unsubscribed before the message was sent to it: a
        # marker published afterwards bounds the wait for anything else
        pub.publish(MARKER, b"MARK", qos=1).wait_for_publish(5)
        assert _next(got_leaver) == (MARKER, b"MARK")
        assert got_leaver.empty() and got_stayer.empty()
    finally:
        for c in (leaver, stayer, pub):
            c.loop_stop()
            c.disconnect()
