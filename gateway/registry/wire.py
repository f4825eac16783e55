"""The registry network's MQTT wire (docs/IDENTITY.md §1, "Registry nodes").

Public topics (spelled in shared/regproof.py), on any broker the nodes share:

    tl/registry/blocks       {"from": node, "genesis": digest, "block": block}
    tl/registry/tx           a signed registry transaction (COSE_Sign1 bytes)
    tl/registry/req          a request every node answers
    tl/registry/req/<node>   a request for one node
    tl/registry/rsp/<client> replies, to the topic the request names

`block` is CBOR [header bytes, [tx message, ...]] (gateway/registry/forks.py).
Every payload is a canonical CBOR map with text keys; `genesis` is the
RegistryGenesis digest, so nodes of another registry are told apart.
Requests carry {"op", "id" (bytes, echoed), "reply" (topic), "genesis"}:

    head                              -> {"height", "hash", "work" (bytes, big-endian)}
    blocks  {"locator": [hash, ...]}  -> {"blocks": [block, ...], "more": bool}
    submit  {"tx": message}           -> {"tx": id} | {"refused": reason, "detail"}
    status  {"tx": id}                -> {"height": h | null, "pending": bool,
                                          "confirmations": n, "status", "reason"}
    lookup  {"key": id | pubkey, "since": height}
                                      -> {"headers": [header, ...] (since+1 .. head),
                                          "record": [leaf, index, size, path] | null,
                                          "maker": [leaf, index, size, path] | null}

Every reply also has "id", "node" and "genesis". A message over its limit is
refused unread; a malformed one is dropped with a logged reason.
`Link` is the paho-mqtt connection both a node and a client use.
"""

from __future__ import annotations

import queue
import threading
from typing import Any

import paho.mqtt.client as mqtt

from gateway.broker.embedded import parse_url
from gateway.errors import RegistryError
from gateway.registry.params import MAX_BLOCK_BYTES
from shared import cbor, errors, regproof

TOPIC_BLOCKS, TOPIC_TX, TOPIC_REQ = regproof.TOPIC_BLOCKS, regproof.TOPIC_TX, regproof.TOPIC_REQ
RSP_PREFIX = regproof.RSP_PREFIX
req_topic, rsp_topic = regproof.req_topic, regproof.rsp_topic
MAX_REQUEST = 64 * 1024
MAX_ANNOUNCE = MAX_BLOCK_BYTES + 1024
MAX_REPLY = 64 * 1024 * 1024
BAD_MESSAGE = "bad-message"
OPS = ("head", "blocks", "submit", "status", "lookup")


def work_bytes(w: int) -> bytes:
    return w.to_bytes((w.bit_length() + 7) // 8 or 1, "big")


def work_int(b: object) -> int:
    if not isinstance(b, bytes) or len(b) > 32:
        raise RegistryError(BAD_MESSAGE, "work")
    return int.from_bytes(b, "big")


def decode(payload: bytes, limit: int) -> dict[str, Any]:
    """A CBOR map with text keys, at most `limit` bytes; RegistryError
    too-large (unread) or bad-message."""
    if len(payload) > limit:
        raise RegistryError("too-large", "%d bytes, at most %d" % (len(payload), limit))
    try:
        v = cbor.loads(bytes(payload), max_size=limit)
    except errors.TLError as e:
        raise RegistryError(BAD_MESSAGE, e.detail or e.reason) from None
    if not isinstance(v, dict) or not all(isinstance(k, str) for k in v):
        raise RegistryError(BAD_MESSAGE, "not a map")
    return v


class Link:
    """A paho-mqtt connection (MQTT 3.1.1, clean session) whose messages land
    in `inbox` as (topic, payload); reconnects by itself. `events` gets
    ("connected",) after each (re)connection's subscription."""

    def __init__(self, url: str, client_id: str, topics: list[str],
                 inbox: queue.Queue[tuple[str, bytes]] | None = None) -> None:
        self.host, self.port = parse_url(url)
        self.topics = topics
        self.inbox: queue.Queue[tuple[str, bytes]] = inbox or queue.Queue()
        self.connected = threading.Event()
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                        clean_session=True, protocol=mqtt.MQTTv311)
        c.max_inflight_messages_set(0)
        c.max_queued_messages_set(0)
        c.reconnect_delay_set(min_delay=1, max_delay=2)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_subscribe = self._on_subscribe
        c.on_message = self._on_message
        self.client = c

    def start(self) -> None:
        self.client.connect_async(self.host, self.port, keepalive=10)
        self.client.loop_start()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def publish(self, topic: str, payload: bytes, qos: int = 1) -> None:
        self.client.publish(topic, payload, qos=qos)

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            return
        client.subscribe([(t, 1) for t in self.topics])

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        self.connected.set()
        self.inbox.put(("", b"connected"))

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        if self.connected.is_set():
            self.inbox.put(("", b"disconnected"))
        self.connected.clear()

    def _on_message(self, client, userdata, msg: mqtt.MQTTMessage) -> None:
        self.inbox.put((msg.topic, msg.payload))
