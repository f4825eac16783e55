"""The gateway's MQTT connection (paho-mqtt, MQTT 3.1.1).

Ingress: a persistent session (clean session off, fixed client id, QoS 1
subscription) so the broker keeps transactions for the gateway while it
restarts; paho's network thread hands each message to the asyncio loop.
Egress: receipts, rejections and headers published at QoS 1.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Iterable

import paho.mqtt.client as mqtt

from gateway.broker import parse_url


class MqttLink:
    def __init__(self, url: str, client_id: str, subscriptions: Iterable[str],
                 loop: asyncio.AbstractEventLoop) -> None:
        self.host, self.port = parse_url(url)
        self.subscriptions = list(subscriptions)
        self._loop = loop
        self._inbox: deque[tuple[str, bytes]] = deque()
        self._ready = asyncio.Event()
        self.connected = asyncio.Event()
        self._lock = threading.Lock()
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                        clean_session=False, protocol=mqtt.MQTTv311)
        c.max_inflight_messages_set(1000)
        c.max_queued_messages_set(0)
        c.reconnect_delay_set(min_delay=1, max_delay=8)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        self.client = c

    # -- paho thread callbacks --------------------------------------------
    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            return
        for topic in self.subscriptions:  # again on every reconnect
            client.subscribe(topic, qos=1)
        self._loop.call_soon_threadsafe(self.connected.set)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self._loop.call_soon_threadsafe(self.connected.clear)

    def _on_message(self, client, userdata, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            wake = not self._inbox
            self._inbox.append((msg.topic, msg.payload))
        if wake:
            self._loop.call_soon_threadsafe(self._ready.set)

    # -- asyncio side -------------------------------------------------------
    def start(self) -> None:
        self.client.connect_async(self.host, self.port, keepalive=30)
        self.client.loop_start()

    async def wait_connected(self, timeout: float) -> None:
        await asyncio.wait_for(self.connected.wait(), timeout)

    async def receive(self, max_n: int = 512) -> list[tuple[str, bytes]]:
        """Wait for incoming messages; returns up to max_n of them."""
        while True:
            with self._lock:
                if self._inbox:
                    n = min(max_n, len(self._inbox))
                    return [self._inbox.popleft() for _ in range(n)]
                self._ready.clear()
            await self._ready.wait()

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos=qos, retain=retain)

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
