"""Fixtures for the gateway ledger tests (no broker)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from gwtest import Device, Node


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
