"""The gateway's MQTT connection (gateway/node/mqtt_link.py) takes a refused
SUBSCRIBE (SUBACK 0x80) for what it is, not a subscription: NATS's MQTT
listener refuses a QoS 1 SUBSCRIBE it cannot back with a JetStream consumer in
time, for a while after a node of the cluster died. The link subscribes to
the refused filters again, and then gets their messages. A real broker
(amqtt, in this process) refuses the first SUBSCRIBE of one filter."""

from __future__ import annotations

import asyncio

import paho.mqtt.client as mqtt

from gateway.node.mqtt_link import MqttLink
from tests.support.brokers import refusing_amqtt
from tests.support.nats import run


def test_link_subscribes_again_to_a_refused_filter():
    broker, state = refusing_amqtt("/status")
    broker.start()

    async def body():
        said: list[str] = []
        link = MqttLink(broker.url, "link-suback", ["t/d/dev/+/status", "t/d/blocks"],
                        asyncio.get_running_loop(), on_event=said.append)
        link.start()
        pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="link-pub",
                          protocol=mqtt.MQTTv311)
        try:
            await link.wait_connected(10)
            pub.connect(broker.host, broker.port, 30)
            pub.loop_start()
            # published until the link has it: before its second SUBSCRIBE is
            # granted a message on the refused filter reaches nobody
            got: list = []

            async def until_received() -> None:
                while not got:
                    pub.publish("t/d/dev/ab/status", b"online", qos=1)
                    try:
                        got.extend(await asyncio.wait_for(link.receive(), 0.5))
                    except TimeoutError:
                        pass
            await asyncio.wait_for(until_received(), 10)
            assert got[0].topic == "t/d/dev/ab/status" and got[0].payload == b"online"
            assert link.refused == 1 and state["asked"] == 2  # refused once, then granted
            # said on the console once, and once more when granted
            assert said == ["broker refused the subscription to t/d/dev/+/status: asking "
                            "again every 0.5 s", "broker granted t/d/dev/+/status at last"]
        finally:
            pub.disconnect()
            pub.loop_stop()
            link.stop()
    try:
        run(body, 30)
    finally:
        broker.close()
