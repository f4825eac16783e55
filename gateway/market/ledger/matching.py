"""Matching policies: which live offer a demand takes (pure functions).

Each policy is a sort key over the candidate offers; the smallest key wins.
Every tie falls through to the next field and finally to the supplier id, so
the choice is a function of the offers (read from the chain) alone and a
replay makes the same one:

    latest    most recently published (block height, position in block)
    cheapest  lowest price, then latest
    trusted   best delivery record (paid batches - 4 x failed ones), then
              cheapest, then latest
    nearest   longest geohash prefix shared with the demand's location, then
              cheapest, then latest
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

LATEST = "latest"
CHEAPEST = "cheapest"
TRUSTED = "trusted"
NEAREST = "nearest"
POLICIES = (CHEAPEST, LATEST, NEAREST, TRUSTED)
FAILURE_WEIGHT = 4


@dataclass(frozen=True, slots=True)
class Offer:
    """One offer as stored in the state (and listed in the directory):
    published = (block height, position of the OFFER tx in its block)."""

    supplier: bytes
    service: str
    unit: str
    price: int
    interval_s: int
    location: str
    expires: int
    schema: int
    published: tuple[int, int]

    def to_map(self) -> dict[int, Any]:
        return {1: self.supplier, 2: self.service, 3: self.unit, 4: self.price,
                5: self.interval_s, 6: self.location, 7: self.expires, 8: self.schema,
                9: list(self.published)}

    @classmethod
    def from_map(cls, m: Mapping[int, Any]) -> Offer:
        return cls(m[1], m[2], m[3], m[4], m[5], m[6], m[7], m[8], (m[9][0], m[9][1]))


def trust_score(record: Mapping[str, int] | None) -> int:
    """Delivery record {"paid": batches, "failed": batches} -> score."""
    if not record:
        return 0
    return record.get("paid", 0) - FAILURE_WEIGHT * record.get("failed", 0)


def shared_prefix(a: str, b: str) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def _latest(o: Offer) -> tuple[int, int]:
    return (-o.published[0], -o.published[1])


def sort_key(policy: str, o: Offer, location: str, trust: Mapping[bytes, int]) -> tuple:
    if policy == LATEST:
        return (*_latest(o), o.supplier)
    if policy == CHEAPEST:
        return (o.price, *_latest(o), o.supplier)
    if policy == TRUSTED:
        return (-trust.get(o.supplier, 0), o.price, *_latest(o), o.supplier)
    if policy == NEAREST:
        return (-shared_prefix(location, o.location), o.price, *_latest(o), o.supplier)
    raise ValueError("unknown policy %r" % policy)


def choose(policy: str, offers: Sequence[Offer], *, location: str = "",
           trust: Mapping[bytes, int] | Callable[[bytes], int] | None = None) -> Offer | None:
    """The offer `policy` picks among `offers` (already filtered to what the
    demand may take), or None. `trust` maps a supplier to its trust_score."""
    if not offers:
        return None
    if callable(trust):
        t = {o.supplier: trust(o.supplier) for o in offers} if policy == TRUSTED else {}
    else:
        t = dict(trust or {})
    return min(offers, key=lambda o: sort_key(policy, o, location, t))
