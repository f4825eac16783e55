"""Edge analytics: the derived services a full node sells, computed from the
streams it holds (e.g. a rolling mean of a purchased temperature stream,
offered as "temperature-mean").

`RollingMean` is pure integer arithmetic, so every gateway computes the same
value from the same readings: no floats and no rescaling (a value whose
scale differs from the first value's is refused, not converted).
`DerivedService` is the plain configuration of one derived service, checked
on construction against the market's field rules (docs/MARKET.md); a wrong
field raises `DerivedServiceError`, whose `key` names it.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from gateway.errors import DerivedServiceError
from gateway.market.ledger import directory

MAX_WINDOW = 10_000  # a window never needs more readings than one demand buys


def _is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


class RollingMean:
    """Floor mean of the last `window` values, all at one scale."""

    def __init__(self, window: int) -> None:
        if not _is_int(window) or window < 1:
            raise ValueError("window must be an int >= 1")
        self.window = window
        self._values: deque[int] = deque()
        self._sum = 0
        self._scale: int | None = None

    @property
    def count(self) -> int:
        """How many values the window holds now (at most `window`)."""
        return len(self._values)

    @property
    def scale(self) -> int | None:
        """The scale of every value (set by the first one), None before."""
        return self._scale

    def add(self, value: int, scale: int) -> None:
        """Add a value; the oldest drops out once the window is full.
        ValueError: not ints, or a scale other than the first value's."""
        if not _is_int(value) or not _is_int(scale):
            raise ValueError("value and scale must be ints")
        if self._scale is None:
            self._scale = scale
        elif scale != self._scale:
            raise ValueError(f"scale {scale} differs from the stream's scale {self._scale}")
        self._values.append(value)
        self._sum += value
        if len(self._values) > self.window:
            self._sum -= self._values.popleft()

    def mean(self) -> int | None:
        """floor(sum / count) of the values in the window; None when empty."""
        if not self._values:
            return None
        return self._sum // len(self._values)


@dataclass(frozen=True)
class DerivedService:
    """One derived service: `name` (what the node offers) computed over the
    last `window` readings of `source`, sold at `price` per reading every
    `interval_s` seconds, in `unit`."""

    name: str
    source: str
    window: int
    unit: str
    price: int
    interval_s: int

    def __post_init__(self) -> None:
        for key in ("name", "source"):
            if not directory.valid_service(getattr(self, key)):
                raise DerivedServiceError(key, "must be 1-24 characters of a-z, 0-9 and '-'")
        if self.name == self.source:
            raise DerivedServiceError("name", "must differ from source")
        if not _is_int(self.window) or not 1 <= self.window <= MAX_WINDOW:
            raise DerivedServiceError("window", f"must be an int in 1 .. {MAX_WINDOW}")
        if not directory.valid_unit(self.unit):
            raise DerivedServiceError("unit", "must be 0-12 printable ASCII characters")
        if not _is_int(self.price) or not 1 <= self.price <= directory.MAX_PRICE:
            raise DerivedServiceError("price", f"must be an int in 1 .. {directory.MAX_PRICE}")
        if not _is_int(self.interval_s) or not 1 <= self.interval_s <= directory.MAX_INTERVAL:
            raise DerivedServiceError(
                "interval_s", f"must be an int in 1 .. {directory.MAX_INTERVAL}")

    def rolling(self) -> RollingMean:
        """A fresh RollingMean over this service's window."""
        return RollingMean(self.window)
