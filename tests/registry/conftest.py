"""Fixtures for the registry tests: a fresh registry with a trivial target."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.registry import PublicRegistry as Registry
from gateway.registry import open_registry
from tests.support.registry_support import FakeClock, Mfr


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(step=1.0)


@pytest.fixture
def reg(tmp_path: Path, clock: FakeClock) -> Iterator[Registry]:
    r = open_registry(tmp_path / "registry", create=True, difficulty_bits=0,
                      retarget_blocks=0, clock=clock)
    yield r
    r.close()


@pytest.fixture
def acme() -> Mfr:
    return Mfr("acme")


@pytest.fixture
def globex() -> Mfr:
    return Mfr("globex")


@pytest.fixture
def makers(reg: Registry, acme: Mfr, globex: Mfr) -> Registry:
    """Registry where acme and globex are registered manufacturers."""
    reg.submit(acme.register("Acme Sensors"))
    reg.submit(globex.register("Globex"))
    assert reg.mine() == [1]
    return reg
