"""The broker connections gauge for an external broker: a small MQTT client
(clean session, QoS 0, its own connection, apart from the gateway's
persistent one) that follows mosquitto's `$SYS/broker/clients/connected`
and sets `Metrics.broker_connections` from it (docs/API.md, "Metrics").

mosquitto publishes its $SYS topics every `sys_interval` seconds (10 by
default); a broker whose ACL does not let this client's user read
$SYS/broker/clients/connected sends nothing and the gauge stays 0. It logs
in as the gateway's $SYS reader (gateway/broker/mosquitto.py sys_user), a
user `thingledger broker export` grants exactly that topic.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import paho.mqtt.client as mqtt

from gateway.broker.embedded import parse_url
from gateway.broker.mosquitto import SYS_CLIENTS_TOPIC

TOPIC = SYS_CLIENTS_TOPIC


class SysClients:
    def __init__(self, url: str, client_id: str, on_value: Callable[[float], None],
                 loop: asyncio.AbstractEventLoop, username: str | None = None,
                 password: str | None = None) -> None:
        self.host, self.port = parse_url(url)
        self.on_value = on_value
        self.loop = loop
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                        clean_session=True, protocol=mqtt.MQTTv311)
        if username is not None:
            c.username_pw_set(username, password)
        c.reconnect_delay_set(min_delay=1, max_delay=30)
        c.on_connect = self._on_connect
        c.on_message = self._on_message
        self.client = c

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if not reason_code.is_failure:
            client.subscribe(TOPIC, 0)

    def _on_message(self, client, userdata, msg: mqtt.MQTTMessage) -> None:
        try:
            n = int(msg.payload.decode("ascii").strip())
        except (UnicodeDecodeError, ValueError):
            return  # not a count: ignored
        self.loop.call_soon_threadsafe(self.on_value, float(n))

    def start(self) -> None:
        self.client.connect_async(self.host, self.port, keepalive=60)
        self.client.loop_start()

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
