"""Helpers for the broker enforcement tests: principals with deterministic
keys, a fake of gateway.identity.access.Access, and MQTT clients with credentials.

Every wait is bounded; nothing sleeps hoping something happened."""

from __future__ import annotations

import socket
import threading
import uuid
from dataclasses import dataclass, field
from hashlib import sha256

import paho.mqtt.client as mqtt

from gateway import broker as broker_auth
from shared import p256
from shared import tx as txm
from tests.support.waits import wait_on

DOMAIN = "demo"


@dataclass
class Principal:
    name: str
    priv: bytes = b""
    pub: bytes = b""
    id: bytes = b""

    def __post_init__(self) -> None:
        self.priv = sha256(b"thingledger-broker-test-" + self.name.encode()).digest()
        self.pub = p256.public_key(self.priv)
        self.id = txm.device_id(self.pub)

    @property
    def hex(self) -> str:
        return self.id.hex()

    def password(self, domain: str = DOMAIN) -> str:
        return broker_auth.mqtt_password(self.priv, domain, self.id)

    def topic(self, kind: str, domain: str = DOMAIN) -> str:
        return f"tl/{domain}/dev/{self.hex}/{kind}"


@dataclass
class FakeAccess:
    """The protocol of gateway.identity.access.Access, from plain dicts (mutable: a test
    revokes a principal by adding it to `inactive`)."""

    keys: dict[bytes, bytes] = field(default_factory=dict)  # id -> current key
    inactive: set[bytes] = field(default_factory=set)
    reads: dict[bytes, set[bytes]] = field(default_factory=dict)  # principal -> device ids
    owners: dict[bytes, bytes] = field(default_factory=dict)  # device -> owner
    purchases: dict[bytes, set[tuple[bytes, bytes]]] = field(default_factory=dict)

    @classmethod
    def of(cls, *principals: Principal) -> FakeAccess:
        return cls(keys={p.id: p.pub for p in principals})

    def grant_read(self, who: Principal, device: Principal) -> None:
        self.reads.setdefault(who.id, set()).add(device.id)

    # -- the Access protocol --------------------------------------------------
    def key_of(self, principal_id: bytes) -> bytes | None:
        return self.keys.get(principal_id)

    def is_active(self, principal_id: bytes) -> bool:
        return principal_id in self.keys and principal_id not in self.inactive

    def can(self, principal_id: bytes, right: str, device_id: bytes) -> bool:
        if not self.is_active(principal_id):
            return False
        if self.owners.get(device_id) == principal_id:
            return True
        if right == "read":
            return device_id in self.reads.get(principal_id, set())
        return right == "submit" and principal_id == device_id

    def readable(self, principal_id: bytes) -> set[bytes]:
        return set(self.reads.get(principal_id, set())) if self.is_active(principal_id) else set()

    def bought(self, principal_id: bytes) -> set[tuple[bytes, bytes]]:
        if not self.is_active(principal_id):
            return set()
        return set(self.purchases.get(principal_id, set()))

    def owner_of(self, device_id: bytes) -> bytes | None:
        return self.owners.get(device_id)

    def principals(self) -> list[bytes]:
        return sorted(self.keys)


# --------------------------------------------------------------------------- raw CONNECT
def _mqtt_str(b: bytes) -> bytes:
    return len(b).to_bytes(2, "big") + b


def connack(host: str, port: int, client_id: str, username: str | None = None,
            password: str | None = None, *, clean: bool = True,
            will_topic: str | None = None, timeout: float = 5.0) -> int | None:
    """One CONNECT on a fresh socket: the CONNACK return code (0 accepted), or
    None if the broker closed the connection without one. Disconnects after."""
    flags = 0x02 if clean else 0
    payload = _mqtt_str(client_id.encode())
    if will_topic is not None:
        flags |= 0x04 | 0x08  # will, QoS 1
        payload += _mqtt_str(will_topic.encode()) + _mqtt_str(b"offline")
    if username is not None:
        flags |= 0x80
        payload += _mqtt_str(username.encode())
        if password is not None:
            flags |= 0x40
            payload += _mqtt_str(password.encode())
    body = b"\x00\x04MQTT\x04" + bytes([flags]) + (30).to_bytes(2, "big") + payload
    n, rl = len(body), bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        rl.append(b | (0x80 if n else 0))
        if not n:
            break
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.settimeout(timeout)
        s.sendall(b"\x10" + bytes(rl) + body)
        got = b""
        try:
            while len(got) < 4:
                chunk = s.recv(4 - len(got))
                if not chunk:
                    return None
                got += chunk
        except (ConnectionResetError, TimeoutError):
            return None
        if got[0] != 0x20:
            return None
        if got[3] == 0:
            s.sendall(b"\xe0\x00")  # DISCONNECT
        return got[3]


# --------------------------------------------------------------------------- paho
@dataclass
class Msg:
    topic: str
    payload: bytes


class AuthClient:
    """paho-mqtt 2.x client (MQTT 3.1.1) logging in with a username/password;
    collects messages, SUBACK codes, and the CONNACK result."""

    def __init__(self, broker, username: str | None, password: str | None,
                 client_id: str | None = None, clean_session: bool = True,
                 will_topic: str | None = None) -> None:
        self.messages: list[Msg] = []
        self.granted: dict[int, list[int]] = {}
        self.rc: int | None = None
        self.disconnected = 0
        self._cond = threading.Condition()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                                  client_id=client_id or f"t-{uuid.uuid4().hex[:8]}",
                                  clean_session=clean_session, protocol=mqtt.MQTTv311)
        if username is not None:
            self.client.username_pw_set(username, password)
        if will_topic:
            self.client.will_set(will_topic, b"offline", qos=1, retain=True)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        self.client.on_disconnect = self._on_disconnect
        self.client.connect(broker.host, broker.port, keepalive=30)
        self.client.loop_start()

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        with self._cond:
            self.rc = reason_code.value
            self._cond.notify_all()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties):
        with self._cond:
            self.disconnected += 1
            self._cond.notify_all()

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties):
        with self._cond:
            self.granted[mid] = [rc.value for rc in reason_codes]
            self._cond.notify_all()

    def _on_message(self, client, userdata, m):
        with self._cond:
            self.messages.append(Msg(m.topic, bytes(m.payload)))
            self._cond.notify_all()

    def wait(self, predicate, timeout: float = 10.0, what: str = "condition"):
        return wait_on(self._cond, lambda: predicate(self), timeout,
                       lambda: f"timeout ({timeout} s) waiting for {what}; "
                               f"rc={self.rc} messages={self.messages}")

    def connected(self, timeout: float = 10.0) -> AuthClient:
        self.wait(lambda c: c.rc is not None, timeout, "CONNACK")
        assert self.rc == 0, f"connection refused with CONNACK {self.rc}"
        return self

    def subscribe(self, topic: str, timeout: float = 10.0) -> int:
        """Subscribe at QoS 1; returns the SUBACK code (1 granted, 0x80 refused)."""
        _, mid = self.client.subscribe(topic, 1)
        codes = self.wait(lambda c: c.granted.get(mid), timeout, f"SUBACK for {topic}")
        return codes[0]

    def publish(self, topic: str, payload: bytes, retain: bool = False,
                timeout: float = 10.0) -> None:
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        info.wait_for_publish(timeout)
        assert info.is_published(), f"no PUBACK for {topic}"

    def got(self, topic: str | None = None, payload: bytes | None = None) -> list[Msg]:
        with self._cond:
            return [m for m in self.messages if (topic is None or m.topic == topic)
                    and (payload is None or m.payload == payload)]

    def wait_message(self, topic: str, payload: bytes, timeout: float = 10.0) -> None:
        self.wait(lambda c: c.got(topic, payload), timeout, f"{payload!r} on {topic}")

    def close(self) -> None:
        try:
            self.client.disconnect()
        finally:
            self.client.loop_stop()


# --------------------------------------------------------------------------- chain
def empty_block(data) -> None:
    """Commit one more block (no transactions) to the chain in `data`: a new head."""
    from gateway.db.store import open_ledger
    from gateway.ledger import blocks
    from gateway.node.config import GatewayConfig

    led = open_ledger(GatewayConfig(domain=DOMAIN, data_dir=data), create=False)
    try:
        b = blocks.build_block(led.head, [], led.state, 0, led.authority_priv,
                               led.genesis.authority_id, domain=DOMAIN)
        led.store.commit_block(b)
    finally:
        led.store.close()
