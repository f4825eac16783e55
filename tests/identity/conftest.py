"""Fixtures of the identity lifecycle tests (helpers: idtest.py; the
ledger test helpers of tests/gateway/gwtest.py are reused)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

_HERE = Path(__file__).resolve().parent
for _p in (_HERE, _HERE.parent / "gateway"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

from idtest import World  # noqa: E402


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    """A claimed domain owned by `owner`, a fake registry knowing devices
    sensor, plug and cam."""
    w = World(tmp_path / "gw")
    yield w
    w.close()
