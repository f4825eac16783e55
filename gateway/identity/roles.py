"""Node roles (docs/IDENTITY.md §4): a pure labelling function.

A node declares its hardware and how long its network connection lives; the
label follows from them, so every node of the domain computes the same one:

    full          mains power AND >= 512 MiB RAM AND a long-lived connection
                  (a Raspberry Pi 3/4/5 on a wall plug: validates, stores,
                  serves light nodes)
    coordination  long-lived connection but not full (low compute, or not on
                  mains): assigns a full node to each light node
    light         everything else (a sensor board that sleeps, reconnects,
                  runs on a battery): signs and submits, validation offloaded

Hardware map (the body of NODE_JOIN, key 2), text keys, integers only:

    "power"     "mains" | "usb" | "battery"     required
    "ram_kib"   int >= 0, RAM in KiB            required (ESP32: 520)
    "lifetime"  "long" | "short"                required: connection lifetime
                ("long": stays connected for days, e.g. Ethernet / Wi-Fi on
                mains; "short": connects to publish, then sleeps or drops)
    "cpu_mhz"   int >= 0                        optional, informative
    "flash_kib" int >= 0                        optional, informative
    "board"     text, 1-32 chars                optional, informative

USB power counts as not-mains (a laptop port or a power bank: may vanish).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

LIGHT = "light"
FULL = "full"
COORDINATION = "coordination"
LABELS = (COORDINATION, FULL, LIGHT)

POWER_MAINS = "mains"
POWERS = ("battery", "mains", "usb")
LIFETIME_LONG = "long"
LIFETIME_SHORT = "short"
LIFETIMES = (LIFETIME_LONG, LIFETIME_SHORT)
FULL_MIN_RAM_KIB = 512 * 1024  # 512 MiB

_REQUIRED = ("lifetime", "power", "ram_kib")
_OPTIONAL_INT = ("cpu_mhz", "flash_kib")
_MAX_INT = (1 << 63) - 1


def label(hardware: Mapping[str, Any], lifetime: str) -> str:
    """The role of a node with this hardware and connection lifetime.
    Pure and total: missing or odd values never make a node `full`."""
    if lifetime != LIFETIME_LONG:
        return LIGHT
    ram = hardware.get("ram_kib", 0)
    big = isinstance(ram, int) and not isinstance(ram, bool) and ram >= FULL_MIN_RAM_KIB
    if hardware.get("power") == POWER_MAINS and big:
        return FULL
    return COORDINATION


def label_of(hardware: Mapping[str, Any]) -> str:
    """label() of a NODE_JOIN hardware map (lifetime inside the map)."""
    return label(hardware, hardware.get("lifetime", LIFETIME_SHORT))


def _int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= _MAX_INT


def check_hardware(hw: object) -> str:
    """'' if `hw` is a well-formed hardware map, else a detail code."""
    if not isinstance(hw, dict):
        return "bad-hardware"
    for k in hw:
        if k not in _REQUIRED and k not in _OPTIONAL_INT and k != "board":
            return "bad-hardware"
    for k in _REQUIRED:
        if k not in hw:
            return "bad-hardware"
    if hw["power"] not in POWERS or hw["lifetime"] not in LIFETIMES or not _int(hw["ram_kib"]):
        return "bad-hardware"
    for k in _OPTIONAL_INT:
        if k in hw and not _int(hw[k]):
            return "bad-hardware"
    if "board" in hw and not (isinstance(hw["board"], str) and 0 < len(hw["board"]) <= 32):
        return "bad-hardware"
    return ""
