"""Fixtures of the identity lifecycle tests (helpers:
tests/support/idtest.py, built on the ledger helpers of tests/support/gwtest.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.idtest import World


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    """A claimed domain owned by `owner`, a fake registry knowing devices
    sensor, plug and cam."""
    w = World(tmp_path / "gw")
    yield w
    w.close()
