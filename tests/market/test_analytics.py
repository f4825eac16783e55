"""Edge analytics: integer rolling mean and derived-service configuration
(gateway/market/node/analytics.py)."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from gateway.market.node.analytics import (
    MAX_WINDOW,
    DerivedService,
    DerivedServiceError,
    RollingMean,
)
from gateway.node.config import FieldError


def test_empty_window() -> None:
    r = RollingMean(3)
    assert (r.mean(), r.count, r.scale, r.window) == (None, 0, None, 3)


def test_mean_is_floor_of_integer_mean() -> None:
    r = RollingMean(10)
    for v, mean in [(2150, 2150), (2151, 2150), (2155, 2152)]:
        r.add(v, -2)
        assert r.mean() == mean
    assert (r.count, r.scale) == (3, -2)


@pytest.mark.parametrize(("values", "mean"), [
    ([-1, -2], -2),          # -1.5 floors to -2, not -1
    ([-1, 0], -1),           # -0.5 floors to -1
    ([-3, -3, -4], -4),      # -3.33 floors to -4
    ([-7], -7),
    ([5, -6], -1),
    ([2**70, 2**70 + 1], 2**70),  # no overflow, no float
])
def test_floor_semantics(values: list[int], mean: int) -> None:
    r = RollingMean(len(values))
    for v in values:
        r.add(v, 0)
    assert r.mean() == mean


def test_window_eviction() -> None:
    r = RollingMean(3)
    for v in (10, 20, 30):
        r.add(v, 0)
    assert (r.mean(), r.count) == (20, 3)
    r.add(100, 0)  # 10 drops out
    assert (r.mean(), r.count) == (50, 3)
    r.add(-200, 0)  # 20 drops out
    assert (r.mean(), r.count) == (-24, 3)  # -70 / 3 = -23.33 -> -24
    one = RollingMean(1)
    for v in (5, -9, 4):
        one.add(v, 1)
        assert one.mean() == v and one.count == 1


def test_scale_mismatch_refused() -> None:
    r = RollingMean(2)
    r.add(2150, -2)
    with pytest.raises(ValueError):
        r.add(215, -1)
    assert (r.mean(), r.count, r.scale) == (2150, 1, -2)  # unchanged
    r.add(2160, -2)
    r.add(2170, -2)  # the first value has left the window; its scale stays the stream's
    with pytest.raises(ValueError):
        r.add(217, -1)


@pytest.mark.parametrize("window", [0, -1, True, 2.0])
def test_bad_window(window: Any) -> None:
    with pytest.raises(ValueError):
        RollingMean(window)


@pytest.mark.parametrize(("value", "scale"), [(1.5, 0), (True, 0), (1, None), (1, False)])
def test_values_must_be_ints(value: Any, scale: Any) -> None:
    r = RollingMean(2)
    with pytest.raises(ValueError):
        r.add(value, scale)
    assert r.count == 0 and r.scale is None


GOOD = DerivedService(name="temperature-mean", source="temperature", window=60, unit="cC",
                      price=3, interval_s=60)


def test_derived_service_ok() -> None:
    assert GOOD.rolling().window == 60
    DerivedService(name="t", source="temperature", window=MAX_WINDOW, unit="",
                   price=2**32, interval_s=86_400)
    DerivedService(name="a" * 24, source="0-9", window=1, unit="~ !" * 4, price=1, interval_s=1)


@pytest.mark.parametrize(("key", "value"), [
    ("name", ""), ("name", "Temperature"), ("name", "a" * 25), ("name", "temp mean"),
    ("name", "temperature"),  # the same as its source
    ("name", 7),
    ("source", ""), ("source", "temp_c"), ("source", None),
    ("window", 0), ("window", MAX_WINDOW + 1), ("window", True), ("window", 60.0),
    ("unit", "a" * 13), ("unit", "°C"), ("unit", "c\n"), ("unit", 1),
    ("price", 0), ("price", 2**32 + 1), ("price", False), ("price", "3"),
    ("interval_s", 0), ("interval_s", 86_401), ("interval_s", 1.5),
])
def test_derived_service_errors_name_the_field(key: str, value: Any) -> None:
    with pytest.raises(DerivedServiceError) as e:
        dataclasses.replace(GOOD, **{key: value})
    assert e.value.key == key
    assert isinstance(e.value, FieldError)
