"""Fixtures shared by the cross-domain tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.gwtest import Device
from tests.xdomain.test_xdomain_e2e import A, B, Gateway


@pytest.fixture
def two(tmp_path: Path) -> Iterator[tuple[Gateway, Gateway]]:
    """Two `thingledger run` gateways: domain A (alice holds 1,000) and
    domain B (bob holds 500), each on its own embedded broker."""
    gws: list[Gateway] = []
    try:
        gws.append(Gateway(tmp_path, A, {Device("alice", A).pub: 1000}))
        gws.append(Gateway(tmp_path, B, {Device("bob", B).pub: 500}))
        yield gws[0], gws[1]
    finally:
        for g in gws:
            g.stop()
