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
import threading
from dataclasses import dataclass

import pytest
from amqtt.contexts import Action
from amqtt.plugins.base import BaseTopicPlugin

from tests.support.brokers import AmqttBroker, unique

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


def test_a_subscriber_leaving_mid_delivery_does_not_cost_the_next_one_the_message(
        holding_broker, paho_client):
    # subscribed in this order: the leaver's subscription comes first in the list
    leaver = paho_client(holding_broker, [TOPIC, MARKER], client_id=unique("leaver"))
    stayer = paho_client(holding_broker, [TOPIC], client_id=unique("stayer"))
    pub = paho_client(holding_broker)
    pub.publish(TOPIC, b"RECEIPT")
    assert HoldingTopicPlugin.reached.wait(5), "the broker never checked the leaver"
    leaver.client.unsubscribe(TOPIC)  # while its receive check is held
    assert stayer.wait_count(1, TOPIC, 5)[0].payload == b"RECEIPT", "the next one was skipped"
    # the leaver had unsubscribed before the message was sent to it: a
    # marker published afterwards bounds the wait for anything else
    pub.publish(MARKER, b"MARK")
    leaver.wait_count(1, MARKER, 5)
    assert leaver.payloads() == [b"MARK"] and stayer.payloads() == [b"RECEIPT"]
