"""The gateway says it is up like a device does: retained `online` on its
status topic (tl/<d>/dev/<authority id>/status) while connected, `offline`
when it stops; coordination nodes follow it to reassign light nodes."""

from __future__ import annotations

import queue

import paho.mqtt.client as mqtt
from brokers import unique, wait_until
from e2e_devices import GatewayThread, authority_of

from shared import topics, tx


def retained(broker, topic: str, timeout: float = 5.0) -> bytes | None:
    got: queue.Queue[bytes] = queue.Queue()
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=unique("peek"),
                    protocol=mqtt.MQTTv311)
    c.on_message = lambda _c, _u, m: got.put(bytes(m.payload))
    c.on_connect = lambda cl, *a: cl.subscribe(topic, qos=1)
    c.connect(broker.host, broker.port, keepalive=30)
    c.loop_start()
    try:
        return got.get(timeout=timeout)
    except queue.Empty:
        return None
    finally:
        c.loop_stop()
        c.disconnect()


def test_gateway_status_online_then_offline(tmp_path, mosquitto_broker):
    gw = GatewayThread(tmp_path / "gw", mosquitto_broker.url).start()
    topic = topics.status("demo", tx.device_id(authority_of(tmp_path / "gw")).hex())
    try:
        wait_until(lambda: retained(mosquitto_broker, topic) == b"online", 10,
                   what="gateway online")
    finally:
        gw.stop()
    wait_until(lambda: retained(mosquitto_broker, topic) == b"offline", 10,
               what="gateway offline after stop")
