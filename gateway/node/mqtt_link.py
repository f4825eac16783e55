"""The gateway's MQTT connection (paho-mqtt, MQTT 3.1.1).

Ingress: a persistent session (clean session off, fixed client id, QoS 1
subscription) so the broker keeps transactions for the gateway while it
restarts; paho's network thread hands each message to the asyncio loop.
Egress: receipts, rejections and headers published at QoS 1.

Acknowledgement (manual PUBACK): the service calls `ack(msg)` only once a
transaction is committed in a block on disk, or refused. A transaction the
gateway had received but not committed when it died (SIGKILL, power cut) has
no PUBACK, so the broker delivers it again to the persistent session after
the restart, in order. (With paho's automatic PUBACK, sent as soon as the
message is handed over, such a transaction was lost; the device's resend then
came after later seqs of the same device were committed and was refused as a
replay.) The broker's in-flight window (mosquitto `max_inflight_messages`,
see docs/mosquitto.conf) is therefore the gateway's received-but-uncommitted
budget. A PUBACK belongs to one connection: what was not acknowledged
before a reconnect, the broker delivers again, and it is answered again.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import deque
from collections.abc import Callable, Iterable

import paho.mqtt.client as mqtt

from gateway.broker.embedded import parse_url

RESUBSCRIBE_S = 0.5  # s before subscribing again to filters the broker refused


class Incoming:
    """One message from the broker; hand it back to MqttLink.ack() when done."""

    __slots__ = ("topic", "payload", "mid", "qos", "epoch")

    def __init__(self, topic: str, payload: bytes, mid: int, qos: int, epoch: int) -> None:
        self.topic = topic
        self.payload = payload
        self.mid = mid
        self.qos = qos
        self.epoch = epoch


class MqttLink:
    def __init__(self, url: str, client_id: str, subscriptions: Iterable[str],
                 loop: asyncio.AbstractEventLoop, username: str | None = None,
                 password: str | None = None, status_topic: str | None = None,
                 on_event: Callable[[str], None] | None = None) -> None:
        """username/password: the gateway's broker login on an enforcing broker
        (gateway.broker.credentials.gateway_credentials: the authority's credential).
        status_topic: where the node says it is up (retained "online" on every
        connect, "offline" as its last will and on a clean stop), as devices do:
        coordination nodes follow it to reassign light nodes."""
        self.status_topic = status_topic
        self.host, self.port = parse_url(url)
        self.subscriptions = list(subscriptions)
        self._loop = loop
        self._inbox: deque[Incoming] = deque()
        self._ready = asyncio.Event()
        self.connected = asyncio.Event()
        self._lock = threading.Lock()
        self._epoch = 0  # connection number: packet ids are per connection
        self._asked: dict[int, list[str]] = {}  # SUBSCRIBE packet id -> its filters
        self.refused = 0  # filters the broker refused (SUBACK 0x80), subscribed again
        self._said: set[str] = set()  # refused filters said on the console, until granted
        self.on_event = on_event or (lambda line: None)
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                        clean_session=False, protocol=mqtt.MQTTv311, manual_ack=True)
        if username is not None:
            c.username_pw_set(username, password)
        # No client-side in-flight limit for receipts and headers: with a limit,
        # paho scans its whole outgoing-message dict on every PUBACK
        # (Client._update_inflight), O(n^2) in the receipts of a block: it was
        # the gateway's largest cost at 2,000-tx blocks. The broker takes QoS 1
        # publishes as fast as they come (mosquitto has no inbound window for
        # MQTT 3.1.1 clients).
        c.max_inflight_messages_set(0)
        c.max_queued_messages_set(0)
        c.reconnect_delay_set(min_delay=1, max_delay=8)
        if status_topic:
            c.will_set(status_topic, b"offline", qos=1, retain=True)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        c.on_subscribe = self._on_subscribe
        self.client = c

    # -- paho thread callbacks --------------------------------------------
    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            return
        self._epoch += 1
        if self.status_topic:
            client.publish(self.status_topic, b"online", qos=1, retain=True)
        # again on every reconnect; `connected` is set once the broker SUBACKs
        self._subscribe(client, self.subscriptions)

    def _subscribe(self, client: mqtt.Client, filters: list[str]) -> None:
        with self._lock:  # (the SUBACK's callback looks the packet id up)
            _, mid = client.subscribe([(topic, 1) for topic in filters])
            self._asked[mid] = filters

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        with self._lock:
            filters = self._asked.pop(mid, [])
        refused = [f for f, rc in zip(filters, reason_codes, strict=False) if rc.is_failure]
        granted = [f for f in filters if f not in refused and f in self._said]
        for f in granted:
            self._said.discard(f)
            self._loop.call_soon_threadsafe(self.on_event, f"broker granted {f} at last")
        for f in refused:  # said once until granted: a filter refused for good (an ACL)
            if f not in self._said:  # shows on the console, not only in the counter
                self._said.add(f)
                self._loop.call_soon_threadsafe(
                    self.on_event, f"broker refused the subscription to {f}: asking again "
                                   f"every {RESUBSCRIBE_S} s")
        if refused:
            # NATS's MQTT listener refuses a QoS 1 SUBSCRIBE whose JetStream consumer
            # it cannot make in time (for a while after a node of the cluster died):
            # not a subscription. Subscribe to those again, after a pause.
            self.refused += len(refused)
            t = threading.Timer(RESUBSCRIBE_S, self._again, (client, self._epoch, refused))
            t.daemon = True
            t.start()
        self._loop.call_soon_threadsafe(self.connected.set)

    def _again(self, client: mqtt.Client, epoch: int, filters: list[str]) -> None:
        """Subscribe again to refused filters (a reconnect meanwhile did already)."""
        if epoch == self._epoch and client.is_connected():
            self._subscribe(client, filters)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self._loop.call_soon_threadsafe(self.connected.clear)

    def _on_message(self, client, userdata, msg: mqtt.MQTTMessage) -> None:
        m = Incoming(msg.topic, msg.payload, msg.mid, msg.qos, self._epoch)
        with self._lock:
            wake = not self._inbox
            self._inbox.append(m)
        if wake:
            self._loop.call_soon_threadsafe(self._ready.set)

    # -- asyncio side -------------------------------------------------------
    def start(self) -> None:
        self.client.connect_async(self.host, self.port, keepalive=30)
        self.client.loop_start()

    async def wait_connected(self, timeout: float) -> None:
        await asyncio.wait_for(self.connected.wait(), timeout)

    async def receive(self, max_n: int = 512) -> list[Incoming]:
        """Wait for incoming messages; returns up to max_n of them."""
        while True:
            with self._lock:
                if self._inbox:
                    n = min(max_n, len(self._inbox))
                    return [self._inbox.popleft() for _ in range(n)]
                self._ready.clear()
            await self._ready.wait()

    def waiting(self) -> int:
        """Messages received and not yet taken by receive()."""
        with self._lock:
            return len(self._inbox)

    def ack(self, m: Incoming) -> None:
        """PUBACK a QoS 1 message (a no-op if it came on an earlier connection:
        the broker delivers it again, and it is answered again)."""
        if m.qos and m.epoch == self._epoch:
            self.client.ack(m.mid, m.qos)

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos=qos, retain=retain)

    def stop(self) -> None:
        if self.status_topic and self.client.is_connected():
            # a clean disconnect sends no last will: say it ourselves
            info = self.client.publish(self.status_topic, b"offline", qos=1, retain=True)
            with contextlib.suppress(RuntimeError, ValueError):
                info.wait_for_publish(2)
        self.client.disconnect()
        self.client.loop_stop()
