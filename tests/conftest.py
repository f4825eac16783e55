"""Fixtures shared by the test folders: the brokers and MicroPython processes of
tests/support/brokers.py, and the in-process ledger (alice, bob, node) of
tests/support/gwtest.py used by tests/ledger, tests/db, tests/node and
tests/tools. Helpers live in the tests.support package."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.brokers import (  # noqa: F401
    amqtt_broker,
    firmware_mpy,
    micropython_proc,
    mosquitto_broker,
    mosquitto_factory,
    paho_client,
)
from tests.support.gwtest import Device, Node
from tests.support.nats import nats_cluster, nats_factory, nats_server  # noqa: F401


@pytest.fixture
def alice() -> Device:
    return Device("alice")


@pytest.fixture
def bob() -> Device:
    return Device("bob")


@pytest.fixture
def node(tmp_path: Path, alice: Device, bob: Device) -> Iterator[Node]:
    """A fresh domain where alice (1000) and bob (500) exist at genesis."""
    n = Node(tmp_path / "gw", {alice.pub: 1000, bob.pub: 500})
    yield n
    n.close()
