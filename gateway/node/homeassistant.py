"""Home Assistant MQTT discovery: verified values only (docs/API.md, "Home Assistant").

With `ha_discovery` on (`thingledger run --ha-discovery`, or `ha_discovery =
true` in the gateway config) the gateway announces, as Home Assistant's MQTT
integration expects, one `sensor` entity per

- device and channel of its on-chain readings (READING txs committed OK in a
  block), and
- supplier and service of each market stream it verifies (a reading on
  tl/<d>/data/<supplier>/<agreement> kept only once it verifies under the
  agreement's supplier key: MarketNode.on_data),

plus one for the gateway itself (its chain height), the device every other
entity names as `via_device`.

    homeassistant/sensor/<node_id>/<object_id>/config   retained JSON (discovery)
    tl/<d>/ha/<device hex>/<object_id>/state             retained value (decimal text)

node_id = tl_<domain>_<device hex>; object_id = ch<channel> (on-chain) or
s_<service> (market stream, '-' -> '_'). A value reaches a state topic only
from a committed block or a verified stream reading: what the gateway refuses
never appears. Availability: the device's own status topic
(tl/<d>/dev/<id>/status, `online`/`offline`, retained by boards) and the
gateway's status topic (its retained `online` and `offline` last will), both
required (availability_mode all). Home Assistant saying `online` on
homeassistant/status makes the gateway publish every config and the last
values again (at most once per ANNOUNCE_S: a later `online` within it is
answered when it ends); a device retired by an identity RETIRE tx (status no longer
active) has its configs and values cleared (empty retained payloads: Home
Assistant removes the entities).

Units by service type: a reading is value x 10^scale; the service's unit
picks Home Assistant's device class and unit (UNITS: `cC`, the boards'
hundredths of a degree with scale -2, is °C; `%` humidity; `hPa` pressure;
...), else the service name (SERVICES), else a plain number. Channel 0 of an on-chain reading is the primary sensor, a
temperature in every shipped board profile (boards/profiles.py); other
channels are plain numbers without a device class.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from gateway.ledger.blocks import Block
from gateway.ledger.state import ACTIVE, State
from shared import topics
from shared import tx as txm

PREFIX = "homeassistant"
HA_STATUS = PREFIX + "/status"
MANUFACTURER = "ThingLedger"
ANNOUNCE_S = 5.0  # announce everything again at most this often
STATUS_OK = 0  # receipt status of a tx that took effect (shared.messages STATUS_OK)

Publish = Callable[[str, bytes, bool], None]
RegistryLookup = Callable[[bytes], object]


@dataclass(frozen=True)
class Kind:
    """How a service type shows in Home Assistant."""

    device_class: str | None
    unit: str | None


# service unit (as offered, lower case) -> Home Assistant kind. A reading is
# value x 10^scale of the base unit; a sub-unit names the integer's step
# (the boards' temperature: value in hundredths of a degree, unit "cC",
# scale -2), so cC and mC readings are °C once scaled, mV ones V.
UNITS: dict[str, Kind] = {
    "cc": Kind("temperature", "°C"),
    "c": Kind("temperature", "°C"),
    "°c": Kind("temperature", "°C"),
    "mc": Kind("temperature", "°C"),
    "%": Kind("humidity", "%"),
    "pct": Kind("humidity", "%"),
    "hpa": Kind("pressure", "hPa"),
    "pa": Kind("pressure", "Pa"),
    "ppm": Kind("carbon_dioxide", "ppm"),
    "lx": Kind("illuminance", "lx"),
    "w": Kind("power", "W"),
    "kwh": Kind("energy", "kWh"),
    "wh": Kind("energy", "Wh"),
    "v": Kind("voltage", "V"),
    "mv": Kind("voltage", "V"),
    "a": Kind("current", "A"),
}
# service name -> kind, when the unit says nothing (e.g. an empty unit)
SERVICES: dict[str, Kind] = {
    "temperature": Kind("temperature", "°C"),
    "humidity": Kind("humidity", "%"),
    "pressure": Kind("pressure", "hPa"),
    "co2": Kind("carbon_dioxide", "ppm"),
}
CHANNEL_KINDS: dict[int, Kind] = {0: Kind("temperature", "°C")}  # boards/profiles.py
PLAIN = Kind(None, None)


def kind_of(service: str, unit: str) -> Kind:
    return UNITS.get(unit.strip().lower()) or SERVICES.get(service) or PLAIN


def scaled(value: int, scale: int) -> str:
    """value x 10^scale, exact, as decimal text ("21.5")."""
    d = Decimal(value).scaleb(scale)
    text = format(d.normalize(), "f")
    return "0" if text in ("-0", "") else text


@dataclass
class Entity:
    device: bytes
    object_id: str
    name: str
    kind: Kind
    value: str | None = None  # last verified value, decimal text


class HomeAssistant:
    """Discovery configs and verified values for Home Assistant (module docstring)."""

    def __init__(self, domain: str, gateway_id: bytes, publish: Publish,
                 registry: RegistryLookup | None = None, log: Callable[[str], None] | None = None,
                 prefix: str = PREFIX) -> None:
        self.domain = domain
        self.gateway_id = gateway_id
        self.publish = publish
        self.registry = registry
        self.log = log or (lambda line: None)
        self.prefix = prefix
        self.status_topic = prefix + "/status"
        self.entities: dict[tuple[bytes, str], Entity] = {}
        self._gw_status = topics.status(domain, gateway_id.hex())
        self._height: int | None = None
        self._device_info: dict[bytes, dict[str, Any]] = {}
        self._announced = float("-inf")  # monotonic time of the last announcement
        self._deferred: asyncio.TimerHandle | None = None

    @property
    def subscriptions(self) -> list[str]:
        return [self.status_topic]

    # -- names ------------------------------------------------------------------
    def node_id(self, device: bytes) -> str:
        return f"tl_{self.domain}_{device.hex()}"

    def config_topic(self, device: bytes, object_id: str) -> str:
        return f"{self.prefix}/sensor/{self.node_id(device)}/{object_id}/config"

    def state_topic(self, device: bytes, object_id: str) -> str:
        return f"tl/{self.domain}/ha/{device.hex()}/{object_id}/state"

    def _gateway_block(self) -> dict[str, Any]:
        return {"identifiers": [self.node_id(self.gateway_id)],
                "name": f"ThingLedger gateway {self.domain}",
                "manufacturer": MANUFACTURER, "model": "gateway"}

    def _device_block(self, device: bytes, state: State | None) -> dict[str, Any]:
        info = self._device_info.get(device)
        if info is None:
            info = {"identifiers": [self.node_id(device)],
                    "name": f"ThingLedger {device.hex()[:8]}",
                    "via_device": self.node_id(self.gateway_id)}
            rec = state.get(device) if state is not None else None
            found = self.registry(rec.pubkey) if self.registry and rec is not None else None
            if found is not None:
                for key, attr in (("model", "model"), ("manufacturer", "manufacturer_name"),
                                  ("serial_number", "serial")):
                    v = _field(found, attr)
                    if v:
                        info[key] = v
                if "model" in info:
                    info["name"] = f"{info['model']} {device.hex()[:8]}"
            self._device_info[device] = info
        return info

    def config(self, e: Entity, state: State | None = None) -> dict[str, Any]:
        """The discovery config of one entity (Home Assistant's MQTT sensor keys)."""
        gw = e.device == self.gateway_id
        avail = [{"topic": self._gw_status, "payload_available": "online",
                  "payload_not_available": "offline"}]
        if not gw:
            avail.insert(0, {"topic": topics.status(self.domain, e.device.hex()),
                             "payload_available": "online", "payload_not_available": "offline"})
        c: dict[str, Any] = {
            "name": e.name,
            "unique_id": f"{self.node_id(e.device)}_{e.object_id}",
            "object_id": f"{self.node_id(e.device)}_{e.object_id}",
            "state_topic": self.state_topic(e.device, e.object_id),
            "availability": avail,
            "availability_mode": "all",
            "state_class": "measurement",
            "device": self._gateway_block() if gw else self._device_block(e.device, state),
        }
        if e.kind.device_class:
            c["device_class"] = e.kind.device_class
        if e.kind.unit:
            c["unit_of_measurement"] = e.kind.unit
        if gw:
            c["state_class"] = "total_increasing"
        return c

    # -- publishing -----------------------------------------------------------------
    def _announce(self, e: Entity, state: State | None) -> None:
        self.publish(self.config_topic(e.device, e.object_id),
                     json.dumps(self.config(e, state), separators=(",", ":"),
                                ensure_ascii=False).encode(), True)

    def _value(self, e: Entity, value: str) -> None:
        e.value = value
        self.publish(self.state_topic(e.device, e.object_id), value.encode(), True)

    def _entity(self, device: bytes, object_id: str, name: str, kind: Kind,
                state: State | None) -> Entity:
        key = (device, object_id)
        e = self.entities.get(key)
        if e is None:
            e = self.entities[key] = Entity(device, object_id, name, kind)
            self._announce(e, state)
        return e

    def start(self, state: State, head: Block, readings: Iterable[txm.Tx] = ()) -> None:
        """Announce the gateway and the entities of readings already on chain
        (`readings`: committed READING txs in chain order, e.g. each
        device's latest; the last per device and channel is its value)."""
        gw = self._entity(self.gateway_id, "height", "Chain height", PLAIN, state)
        self._value(gw, str(head.height))
        last: dict[tuple[bytes, int], txm.Tx] = {}
        for t in readings:
            last[(t.sender, _channel(t))] = t
        for (dev, ch), t in last.items():
            rec = state.get(dev)
            if rec is not None and rec.status == ACTIVE:
                self._reading(t, state)
            else:  # retired while this node was down: clear what an earlier run announced
                self.publish(self.config_topic(dev, f"ch{ch}"), b"", True)
                self.publish(self.state_topic(dev, f"ch{ch}"), b"", True)
        self.log(f"ha discovery on: {len(self.entities)} entities under {self.prefix}/sensor")

    def on_block(self, b: Block, state: State) -> None:
        """After a committed block: its OK readings become values (the last
        of each device and channel in the block: one publish each); devices
        it retired lose their entities."""
        last: dict[tuple[bytes, int], txm.Tx] = {}
        for t, r in zip(b.txs, b.receipts, strict=True):
            if t.type == txm.TYPE_READING and r.status == STATUS_OK:
                last[(t.sender, _channel(t))] = t
        for t in last.values():
            self._reading(t, state)
        for dev, rec in b.diff.items():
            if rec.status != ACTIVE:
                self.remove(dev)
        gw = self.entities.get((self.gateway_id, "height"))
        if gw is not None:
            self._value(gw, str(b.height))

    def _reading(self, t: txm.Tx, state: State) -> None:
        rec = state.get(t.sender)
        if rec is None or rec.status != ACTIVE:
            return
        ch = _channel(t)
        kind = CHANNEL_KINDS.get(ch, PLAIN)
        name = "Temperature" if kind.device_class == "temperature" else f"Channel {ch}"
        e = self._entity(t.sender, f"ch{ch}", name, kind, state)
        self._value(e, scaled(t.body[1], t.body[2]))

    def on_stream(self, supplier: bytes, service: str, unit: str, value: int, scale: int,
                  state: State) -> None:
        """A market stream reading that verified under its supplier's key."""
        rec = state.get(supplier)
        if rec is None or rec.status != ACTIVE:
            return
        kind = kind_of(service, unit)
        e = self._entity(supplier, "s_" + service.replace("-", "_"),
                         service.replace("-", " ").capitalize() + " (market)", kind, state)
        self._value(e, scaled(value, scale))

    def remove(self, device: bytes) -> None:
        """Clear a device's configs and values (Home Assistant deletes the entities)."""
        for key in [k for k in self.entities if k[0] == device]:
            e = self.entities.pop(key)
            self.publish(self.config_topic(device, e.object_id), b"", True)
            self.publish(self.state_topic(device, e.object_id), b"", True)
            self.log(f"ha removed {device.hex()[:8]} {e.object_id}")
        self._device_info.pop(device, None)

    def on_ha_status(self, payload: bytes, state: State, now: float | None = None) -> None:
        """Home Assistant (re)started: every config and last value again. At
        most once per ANNOUNCE_S (anyone may publish `online` on that topic):
        an `online` sooner than that is answered once the interval is over."""
        if payload.strip() != b"online":
            return
        if self._deferred is not None:
            return  # an announcement is due already
        now = time.monotonic() if now is None else now
        wait = self._announced + ANNOUNCE_S - now
        if wait <= 0:
            self._announce_all(state)
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (a direct call): the next `online` does it
            return
        self._deferred = loop.call_later(wait, self._announce_all, state)

    def _announce_all(self, state: State) -> None:
        self._deferred = None
        self._announced = time.monotonic()
        for e in self.entities.values():
            self._announce(e, state)
            if e.value is not None:
                self.publish(self.state_topic(e.device, e.object_id), e.value.encode(), True)
        self.log(f"ha announced {len(self.entities)} entities again (Home Assistant online)")

    def close(self) -> None:
        if self._deferred is not None:
            self._deferred.cancel()
            self._deferred = None


def _field(record: object, name: str) -> str:
    """A text field of a registry record (RegistryRecord, or a mapping)."""
    v = record.get(name) if isinstance(record, dict) else getattr(record, name, None)
    return v if isinstance(v, str) else ""


def _channel(t: txm.Tx) -> int:
    ch = t.body.get(3, 0)
    return ch if isinstance(ch, int) else 0
