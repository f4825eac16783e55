"""A just-updated board has the heap of a fresh one (MicroPython only;
tests/test_under_micropython.py runs it with a plain board's 64 KiB).

The first boot of an installed update (docs/OTA.md) runs unconfirmed until a
receipt verifies; the node keeps that state, and it must not cost the heap
its receipt checks need: a board that had just booted an updated version
once ran out of heap at its first receipt check (tests/e2e/test_ota_power.py),
its node holding the state file's fields (~350 B more than a fresh board's).
A node is started in a fresh flash and in one whose ota/state names an
unconfirmed version, and the heap each keeps is compared (firmware/mqtt.py
replaced by a fake client, as in test_receipt_heap.py)."""
import gc
import os
import sys
from hashlib import sha256


class _Mqtt:  # firmware/mqtt.py as the node imports it
    class MQTTError(Exception):
        pass


sys.modules["firmware.mqtt"] = _Mqtt
gc.threshold(2048)  # as firmware/main.py at start-up: what the imports keep packed low
from fwtmp import Flash  # noqa: E402

from firmware import node as fwnode  # noqa: E402
from firmware import wallet  # noqa: E402
from shared import p256, tx  # noqa: E402

gc.threshold(-1)


class Client:
    """The part of firmware/mqtt.py's MQTTClient the node's start uses."""

    def set_last_will(self, *a, **k):
        pass

    def set_callback(self, cb):
        pass

    def ensure_connected(self, ms):
        return True

    def subscribe(self, topic, qos):
        return qos


def _write_state(state):
    os.mkdir("ota")
    with open("ota/state", "w") as f:
        f.write(state)


def _kept(state):
    """(heap a started node keeps, the node), in a flash whose ota/state is
    `state` (None: a board that never updated)."""
    priv = sha256(b"board").digest()
    w = wallet.Wallet(tx.device_id(p256.public_key(priv)), priv)
    cfg = {"domain": "demo", "authority": p256.public_key(priv).hex()}
    if state:
        _write_state(state)  # in its own frame: the closed file is not kept here
    gc.collect()
    free = gc.mem_free()
    n = fwnode.Node(None, cfg, w, Client(), [].append)
    n.registered = True  # start() sends no register
    n.start()
    cfg = None
    gc.collect()
    return free - gc.mem_free(), n


def test_an_unconfirmed_update_costs_the_node_no_heap():
    with Flash("updated-boot-fresh"):
        fresh, n = _kept(None)  # the first node loads the modules: measured twice
        n = None
        fresh, n = _kept(None)
        assert n.unconfirmed is None
    n = None
    with Flash("updated-boot-unconfirmed"):
        updated, n = _kept("2 0 u 1")
        assert n.unconfirmed is not None  # it does wait for a receipt
    assert updated <= fresh, (updated, fresh)


def teardown_module():
    sys.modules.pop("firmware.mqtt", None)
