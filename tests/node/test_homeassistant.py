"""Home Assistant MQTT discovery (gateway/node/homeassistant.py) against a
real gateway on the in-process amqtt broker: a subscriber, as Home Assistant
would be, checks every discovery config against the keys Home Assistant's
MQTT sensor requires (state_topic) plus what the gateway promises (unique_id
unique, device identifiers, via_device = the gateway, availability), that the
values follow the committed readings only (refused readings never appear),
that `online` on homeassistant/status brings every config again, and that a
retired device's entities are removed (empty retained configs)."""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from gateway.db import genesis_files as genesis
from gateway.identity import statements as itx
from gateway.node import homeassistant as ha
from gateway.node import service
from shared import stream, topics
from shared import tx as txm
from tests.support.e2e_devices import (
    DOMAIN,
    GatewayProcess,
    GatewayThread,
    SimDevice,
    authority_of,
    chain_txs,
)
from tests.support.gwtest import Node
from tests.support.idtest import FakeRegistry, Person
from tests.support.waits import wait_on

CONFIG_TOPIC = re.compile(r"^homeassistant/sensor/[A-Za-z0-9_-]+/[A-Za-z0-9_-]+/config$")


class HaWatcher:
    """Subscribed to homeassistant/# and tl/<d>/ha/#: every message, in order."""

    def __init__(self, host: str, port: int) -> None:
        self.msgs: list[tuple[str, bytes]] = []
        self.last: dict[str, bytes] = {}
        self._cond = threading.Condition()
        self._subscribed = threading.Event()
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"ha-{uuid.uuid4().hex[:8]}",
                        clean_session=True, protocol=mqtt.MQTTv311)
        c.on_connect = lambda cl, *a: cl.subscribe([("homeassistant/#", 1),
                                                    (f"tl/{DOMAIN}/ha/#", 1)])
        c.on_subscribe = lambda *a: self._subscribed.set()
        c.on_message = self._on_message
        c.connect(host, port)
        c.loop_start()
        self.client = c
        assert self._subscribed.wait(10), "watcher not subscribed"

    def _on_message(self, client, userdata, msg) -> None:
        with self._cond:
            self.msgs.append((msg.topic, msg.payload))
            self.last[msg.topic] = msg.payload
            self._cond.notify_all()

    def wait(self, predicate, what: str, timeout: float = 15.0) -> Any:
        return wait_on(self._cond, predicate, timeout,
                       lambda: f"{what}: not seen; last={self.last}")

    def count(self, topic: str) -> int:
        with self._cond:
            return sum(1 for t, _ in self.msgs if t == topic)

    def values(self, topic: str) -> list[bytes]:
        with self._cond:
            return [p for t, p in self.msgs if t == topic]

    def configs(self) -> dict[str, dict[str, Any]]:
        """The current (last, non-empty) discovery configs by topic."""
        with self._cond:
            return {t: json.loads(p) for t, p in self.last.items()
                    if t.startswith("homeassistant/sensor/") and p}

    def announce_online(self) -> None:
        self.client.publish(ha.HA_STATUS, b"online", qos=1).wait_for_publish(10)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def check_configs(configs: dict[str, dict[str, Any]], gateway_hex: str) -> None:
    """Home Assistant's required key for an MQTT sensor (state_topic) and the
    keys the gateway publishes (docs/API.md, Home Assistant)."""
    uids = [c.get("unique_id") for c in configs.values()]
    assert len(set(uids)) == len(uids), f"unique_id not unique: {uids}"
    gw_ident = f"tl_{DOMAIN}_{gateway_hex}"
    gw_status = topics.status(DOMAIN, gateway_hex)
    for topic, c in configs.items():
        assert CONFIG_TOPIC.match(topic), topic
        assert isinstance(c["state_topic"], str) and c["state_topic"].startswith(f"tl/{DOMAIN}/ha/")
        assert isinstance(c["unique_id"], str) and c["unique_id"]
        dev = c["device"]
        assert dev["identifiers"] and all(isinstance(i, str) for i in dev["identifiers"])
        assert dev["name"]
        assert c["state_class"] in ("measurement", "total", "total_increasing")
        assert c["availability_mode"] == "all"
        avail = [a["topic"] for a in c["availability"]]
        assert gw_status in avail, f"{topic}: gateway will not in availability"
        for a in c["availability"]:
            assert (a["payload_available"], a["payload_not_available"]) == ("online", "offline")
        if dev["identifiers"] != [gw_ident]:
            assert dev["via_device"] == gw_ident
            device_hex = topic.split("/")[2].rsplit("_", 1)[1]
            assert topics.status(DOMAIN, device_hex) in avail
        if "unit_of_measurement" in c:
            assert c.get("device_class"), f"{topic}: a unit without a device class"
    assert any(c["device"]["identifiers"] == [gw_ident] for c in configs.values()), \
        "no entity for the gateway (the via_device)"


def test_values_follow_committed_readings_only(tmp_path: Path, amqtt_broker) -> None:
    data = tmp_path / "gw"
    genesis.create_domain(data, DOMAIN)
    auth = authority_of(data)
    gw_hex = txm.device_id(auth).hex()
    gw = GatewayThread(data, amqtt_broker.url, ha_discovery=True).start()
    w = HaWatcher(amqtt_broker.host, amqtt_broker.port)
    dev = SimDevice(amqtt_broker.host, amqtt_broker.port, auth).connect()
    node_id = f"tl_{DOMAIN}_{dev.hex}"
    cfg_topic = f"homeassistant/sensor/{node_id}/ch0/config"
    state_topic = f"tl/{DOMAIN}/ha/{dev.hex}/ch0/state"
    try:
        dev.submit(dev.register_tx())
        dev.submit(dev.reading_tx(2150, -2))
        dev.wait_confirmed()
        w.wait(lambda: w.last.get(state_topic) == b"21.5", "first reading as 21.5 °C")
        # refused, each for its own reason: none may reach the state topic
        stranger = SimDevice(amqtt_broker.host, amqtt_broker.port, auth)
        refused = [
            dev.sign(txm.TYPE_READING, {1: 9999, 2: 99}, seq=dev.seq + 1),  # bad-scale
            dev.sign(txm.TYPE_READING, {1: 7777, 2: -2}, seq=dev.seq),  # replay of seq 2
            txm.make(stranger.priv, dev.id, txm.TYPE_READING, DOMAIN, dev.seq + 1, 0,
                     {1: 5555, 2: -2}),  # not signed by the device's key
        ]
        for m in refused:
            dev.publish_raw(m)
        dev.wait(lambda: len(dev.rejections) >= 3, 15, "three rejections")
        dev.submit(dev.reading_tx(2200, -2))
        dev.wait_confirmed()
        w.wait(lambda: w.last.get(state_topic) == b"22", "second reading as 22 °C")
        assert w.values(state_topic) == [b"21.5", b"22"]

        configs = w.wait(lambda: (c := w.configs()) and cfg_topic in c and len(c) >= 2 and c,
                         "the device's and the gateway's configs")
        check_configs(configs, gw_hex)
        c = configs[cfg_topic]
        assert c["state_topic"] == state_topic
        assert (c["device_class"], c["unit_of_measurement"]) == ("temperature", "°C")
        assert c["device"]["identifiers"] == [node_id]
        # the values are the chain's: every committed reading of the device, scaled
        on_chain = [txm.decode(r.message).body for r in chain_txs(data)
                    if r.type == txm.TYPE_READING and r.sender == dev.id and r.status == 0]
        assert [Decimal(b[1]).scaleb(b[2]) for b in on_chain] == \
            [Decimal(v.decode()) for v in w.values(state_topic)]

        # Home Assistant restarts: it says `online`, the gateway announces again
        before = {t: w.count(t) for t in configs}
        n_state = w.count(state_topic)
        w.announce_online()
        w.wait(lambda: all(w.count(t) > n for t, n in before.items()),
               "every config published again")
        w.wait(lambda: w.count(state_topic) > n_state, "the last value published again")
        assert w.last[state_topic] == b"22"
        check_configs(w.configs(), gw_hex)
        # anything but `online` is not a restart
        n = w.count(cfg_topic)
        w.client.publish(ha.HA_STATUS, b"offline", qos=1).wait_for_publish(10)
        dev.submit(dev.reading_tx(2300, -2))
        dev.wait_confirmed()
        w.wait(lambda: w.last.get(state_topic) == b"23", "third reading")
        assert w.count(cfg_topic) == n
    finally:
        dev.close()
        w.close()
        gw.stop()
    # a new start on a broker that lost its retained messages: the entities
    # and last values come back from the chain
    amqtt_broker.restart()
    w = HaWatcher(amqtt_broker.host, amqtt_broker.port)
    gw = GatewayThread(data, amqtt_broker.url, ha_discovery=True).start()
    try:
        w.wait(lambda: w.last.get(state_topic) == b"23", "the last committed value after a restart")
        assert w.values(state_topic) == [b"23"]
        check_configs(w.wait(lambda: (c := w.configs()) and cfg_topic in c and c,
                             "the device's config after a restart"), gw_hex)
    finally:
        w.close()
        gw.stop()


def test_registry_device_block_and_removal_on_retire(tmp_path: Path, amqtt_broker,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    owner = Person("owner")
    data = tmp_path / "gw"
    genesis.create_domain(data, DOMAIN, owner=owner.pub)
    auth = authority_of(data)
    host, port = amqtt_broker.host, amqtt_broker.port
    dev = SimDevice(host, port, auth)
    fake = FakeRegistry()
    fake.records[dev.pub] = {"model": "TL-T1", "manufacturer_name": "Acme Sensors",
                             "serial": "SN-0042"}
    # the public registry the claim is checked against (and the device block is read from)
    monkeypatch.setattr(service, "registry_lookup", lambda _dir: fake)
    gw = GatewayThread(data, amqtt_broker.url, ha_discovery=True,
                       registry_dir=tmp_path / "registry").start()
    w = HaWatcher(host, port)
    dev.connect()
    person = SimDevice(host, port, auth, priv=owner.private, pub=owner.public).connect()
    node_id = f"tl_{DOMAIN}_{dev.hex}"
    cfg_topic = f"homeassistant/sensor/{node_id}/ch0/config"
    state_topic = f"tl/{DOMAIN}/ha/{dev.hex}/ch0/state"
    try:
        st = itx.claim_statement(dev.priv, dev.pub, DOMAIN, owner.id)
        claim = person.submit(itx.build_claim(owner.keypair, DOMAIN, dev.pub, st, owner.next()))
        assert person.receipt_for(claim, 15).status == 0
        dev.submit(dev.reading_tx(1875, -2))
        dev.wait_confirmed()
        w.wait(lambda: w.last.get(state_topic) == b"18.75", "the claimed device's reading")
        c = w.wait(lambda: w.configs().get(cfg_topic), "its config")
        assert c["device"]["model"] == "TL-T1"
        assert c["device"]["manufacturer"] == "Acme Sensors"
        assert c["device"]["serial_number"] == "SN-0042"
        check_configs(w.configs(), txm.device_id(auth).hex())

        retire = person.submit(itx.build_retire(owner.keypair, DOMAIN, dev.id, "decommission",
                                                owner.next()))
        assert person.receipt_for(retire, 15).status == 0
        w.wait(lambda: w.last.get(cfg_topic) == b"" and w.last.get(state_topic) == b"",
               "empty retained config and value")
        assert cfg_topic not in w.configs()
        # a retired device's reading is refused: no value, no config again
        m = dev.reading_tx(3000, -2)
        dev.publish_raw(m)
        dev.wait(lambda: any(r.tx_id == txm.tx_id(m) for r in dev.rejections)
                 or txm.tx_id(m) in dev.receipts, 15, "answer to the retired device")
        announced = w.count(cfg_topic)
        gw_cfg = f"homeassistant/sensor/tl_{DOMAIN}_{txm.device_id(auth).hex()}/height/config"
        n_gw = w.count(gw_cfg)
        w.announce_online()
        w.wait(lambda: w.count(gw_cfg) > n_gw, "the gateway's config again")
        assert w.count(cfg_topic) == announced and w.last[cfg_topic] == b""
    finally:
        dev.close()
        person.close()
        w.close()
        gw.stop()


def test_service_kinds_and_scaling() -> None:
    """Service types to Home Assistant kinds; values exact in the HA unit."""
    assert ha.kind_of("temperature", "cC") == ha.Kind("temperature", "°C")
    assert ha.kind_of("x", "%") == ha.Kind("humidity", "%")
    assert ha.kind_of("humidity", "") == ha.Kind("humidity", "%")
    assert ha.kind_of("vibration", "g") == ha.PLAIN
    assert ha.scaled(2150, -2) == "21.5"
    assert ha.scaled(-5, -2) == "-0.05"
    assert ha.scaled(1013, 0) == "1013"
    assert ha.scaled(12, 3) == "12000"
    assert ha.scaled(0, -2) == "0"


def test_market_stream_values_are_verified_readings(tmp_path: Path, amqtt_broker) -> None:
    """A supplier's stream: each reading that verifies under its key becomes
    the value of the supplier's `s_<service>` entity; a tampered and a forged
    reading never do."""
    data = tmp_path / "gw"
    genesis.create_domain(data, DOMAIN, authority_balance=100_000)
    auth = authority_of(data)
    host, port = amqtt_broker.host, amqtt_broker.port
    gw = GatewayThread(data, amqtt_broker.url, ha_discovery=True, market_fee_bps=500,
                       market_grant=1_000).start()
    w = HaWatcher(host, port)
    sup = SimDevice(host, port, auth, name="supplier").connect()
    buyer = SimDevice(host, port, auth, name="buyer").connect()
    try:
        for d in (sup, buyer):
            assert d.receipt_for(d.submit(d.register_tx()), 10).status == 0
        offer = sup.sign(txm.TYPE_OFFER, {1: "temperature", 2: "cC", 3: 5, 4: 1, 5: "u4pruy",
                                          6: 600, 7: 1})
        assert sup.receipt_for(sup.submit(offer), 10).status == 0
        demand = buyer.sign(txm.TYPE_DEMAND, {1: "temperature", 2: 6, 3: 8, 4: 60,
                                              5: "cheapest"})
        r = buyer.receipt_for(buyer.submit(demand), 10)
        assert r.status == 0, r.reason
        aid = next(e for e in r.events if e[0] == "match")[1]
        data_topic = topics.data(DOMAIN, sup.hex + "/" + aid.hex())
        state_topic = f"tl/{DOMAIN}/ha/{sup.hex}/s_temperature/state"
        cfg_topic = f"homeassistant/sensor/tl_{DOMAIN}_{sup.hex}/s_temperature/config"

        good = [stream.reading(sup.priv, sup.id, aid, i, 2100 + i, -2) for i in range(3)]
        tampered = bytearray(stream.reading(sup.priv, sup.id, aid, 3, 8888, -2))
        tampered[-1] ^= 1
        forged = stream.reading(buyer.priv, sup.id, aid, 3, 9999, -2)
        for m in (good[0], good[1], bytes(tampered), forged, good[2]):
            sup.client.publish(data_topic, m, qos=1).wait_for_publish(5)
        w.wait(lambda: w.last.get(state_topic) == b"21.02", "the third verified reading")
        assert w.values(state_topic) == [b"21", b"21.01", b"21.02"]
        assert len(gw.wait_event(r"market reading refused .* reason=bad-signature").group(0))
        c = w.configs()[cfg_topic]
        assert (c["device_class"], c["unit_of_measurement"]) == ("temperature", "°C")
        assert c["state_topic"] == state_topic
        check_configs(w.configs(), txm.device_id(auth).hex())
    finally:
        sup.close()
        buyer.close()
        w.close()
        gw.stop()


def test_thingledger_run_ha_discovery_flag(tmp_path: Path, amqtt_broker) -> None:
    """`thingledger run --ha-discovery` announces the gateway's own entity."""
    w = HaWatcher(amqtt_broker.host, amqtt_broker.port)
    gw = GatewayProcess(tmp_path / "gw", amqtt_broker.url, extra=("--ha-discovery",)).start()
    try:
        gw.expect(r"ha discovery on: 1 entities under homeassistant/sensor")
        gw_hex = txm.device_id(authority_of(tmp_path / "gw")).hex()
        topic = f"homeassistant/sensor/tl_{DOMAIN}_{gw_hex}/height/config"
        w.wait(lambda: topic in w.configs(), "the gateway's config")
        check_configs(w.configs(), gw_hex)
    finally:
        w.close()
        assert gw.interrupt() == 0


def test_online_flood_announces_at_most_once_per_interval(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Anyone may publish `online` on homeassistant/status: a burst gets one
    announcement at once and one more when the interval ends, no more."""
    monkeypatch.setattr(ha, "ANNOUNCE_S", 0.5)
    node = Node(tmp_path)
    published: list[tuple[str, float]] = []
    done = asyncio.Event()

    def publish(topic: str, payload: bytes, retain: bool) -> None:
        assert retain
        if topic.endswith("/config"):
            published.append((topic, time.monotonic()))
            if len(published) >= 3:
                done.set()

    async def main() -> None:
        h = ha.HomeAssistant(DOMAIN, node.genesis.authority_id, publish)
        h.start(node.state, node.ledger.head)  # announces the gateway's entity: 1
        t0 = time.monotonic()
        for _ in range(20):
            h.on_ha_status(b"online", node.state)  # one at once (2), one deferred (3)
        assert len(published) == 2
        await asyncio.wait_for(done.wait(), 5)
        assert published[2][1] - t0 >= 0.4
        h.on_ha_status(b"offline", node.state)
        h.close()

    asyncio.run(main())
    assert len(published) == 3
