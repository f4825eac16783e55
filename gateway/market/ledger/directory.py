"""The retained offers directory: the message the gateway publishes, retained,
on tl/<domain>/offers after every block that changes the live offers, and
that a peer subscribing there reads (docs/MARKET.md).

Wire form: canonical CBOR (shared.cbor) of a list of offer maps, sorted by
(service, supplier), no two with the same pair:

    {1: supplier id (16 bytes), 2: service, 3: unit, 4: price,
     5: interval_s, 6: location (geohash, "" for none), 7: expires (block
     time), 8: schema, 9: published [block height, position in block]}

Size: the message stays within shared.cbor.MAX_SIZE (4 KiB), the most a
peer's decoder reads. `encode` keeps the newest offers (by `published`,
ties by service then supplier) that fit, and drops the older rest: a
directory lists at most the ~60 newest offers (a typical offer map is
55-70 bytes, the largest possible 124; at least 33 always fit). The state
remains the authority on live offers.

`decode` is strict: bad CBOR raises shared.errors.DecodeError (TooLarge over
4 KiB); a well-formed message that breaks the layout raises
shared.errors.TxError (bad-tx) whose detail names what is wrong, in the
style of gateway/market/ledger/schema.py: bad-directory (not a list), bad-offer
(not a map of exactly the keys 1-9), bad-supplier, bad-service, bad-unit,
bad-price, bad-interval, bad-location, bad-expires, bad-schema,
bad-published, or bad-order (unsorted, or a duplicate (service, supplier)).
`encode` applies the same checks to its input.

The field rules (also used by gateway/market/node/analytics.py) follow
docs/MARKET.md: `valid_service`, `valid_unit`, `valid_location`.
"""

from __future__ import annotations

from typing import Any

from shared import cbor, errors
from shared.tx import ID_LEN

O_SUPPLIER = 1
O_SERVICE = 2
O_UNIT = 3
O_PRICE = 4
O_INTERVAL = 5
O_LOCATION = 6
O_EXPIRES = 7
O_SCHEMA = 8
O_PUBLISHED = 9
_KEYS = list(range(O_SUPPLIER, O_PUBLISHED + 1))

MAX_PRICE = 2 ** 32
MAX_INTERVAL = 86_400
MAX_SCHEMA = 65_535
MAX_SERVICE_LEN = 24
MAX_UNIT_LEN = 12
MAX_LOCATION_LEN = 12
_UINT_MAX = 2 ** 64 - 1
_SERVICE_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-")
GEOHASH_ALPHABET = "0123456789bcdefghjkmnpqrstuvwxyz"
_GEOHASH_CHARS = frozenset(GEOHASH_ALPHABET)


def valid_service(s: object) -> bool:
    """1-24 characters of a-z, 0-9 and '-'."""
    return (isinstance(s, str) and 0 < len(s) <= MAX_SERVICE_LEN
            and all(c in _SERVICE_CHARS for c in s))


def valid_unit(s: object) -> bool:
    """0-12 printable ASCII characters (space included)."""
    return (isinstance(s, str) and len(s) <= MAX_UNIT_LEN
            and all(" " <= c <= "~" for c in s))


def valid_location(s: object) -> bool:
    """A geohash of 0-12 characters ("" means no location)."""
    return (isinstance(s, str) and len(s) <= MAX_LOCATION_LEN
            and all(c in _GEOHASH_CHARS for c in s))


def int_in(x: object, lo: int, hi: int) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and lo <= x <= hi


def need(ok: bool, detail: str) -> None:
    """Raise errors.TxError(detail) unless ok (the field checks' one refusal)."""
    if not ok:
        raise errors.TxError(detail)


def check_offer(m: Any) -> None:
    """Raise errors.TxError (detail: the field) unless `m` is an offer map."""
    if not isinstance(m, dict) or any(type(k) is not int for k in m) or sorted(m) != _KEYS:
        raise errors.TxError("bad-offer")
    s, p = m[O_SUPPLIER], m[O_PUBLISHED]
    need(isinstance(s, bytes) and len(s) == ID_LEN, "bad-supplier")
    need(valid_service(m[O_SERVICE]), "bad-service")
    need(valid_unit(m[O_UNIT]), "bad-unit")
    need(int_in(m[O_PRICE], 1, MAX_PRICE), "bad-price")
    need(int_in(m[O_INTERVAL], 1, MAX_INTERVAL), "bad-interval")
    need(valid_location(m[O_LOCATION]), "bad-location")
    need(int_in(m[O_EXPIRES], 0, _UINT_MAX), "bad-expires")
    need(int_in(m[O_SCHEMA], 1, MAX_SCHEMA), "bad-schema")
    need(isinstance(p, list) and len(p) == 2 and all(int_in(x, 0, _UINT_MAX) for x in p),
         "bad-published")


def _order_key(m: dict) -> tuple[str, bytes]:
    return m[O_SERVICE], m[O_SUPPLIER]


def _newest_key(m: dict) -> tuple[int, int, str, bytes]:
    height, position = m[O_PUBLISHED]
    return -height, -position, m[O_SERVICE], m[O_SUPPLIER]


def _head_len(n: int) -> int:
    """Bytes of a CBOR head carrying `n` (shortest form)."""
    return 1 if n < 24 else 2 if n < 0x100 else 3 if n < 0x10000 else 5 if n < 2 ** 32 else 9


def encode(offers: list[dict]) -> bytes:
    """The directory message for `offers` (checked as `decode` checks them;
    a duplicate (service, supplier) raises TxError "bad-order"), the newest that
    fit within cbor.MAX_SIZE."""
    seen: set[tuple[str, bytes]] = set()
    for m in offers:
        check_offer(m)
        if _order_key(m) in seen:
            raise errors.TxError("bad-order")
        seen.add(_order_key(m))
    kept: list[dict] = []
    size = 0
    for m in sorted(offers, key=_newest_key):
        n = len(cbor.dumps(m))
        if _head_len(len(kept) + 1) + size + n > cbor.MAX_SIZE:
            break
        kept.append(m)
        size += n
    out = cbor.dumps(sorted(kept, key=_order_key))
    assert len(out) <= cbor.MAX_SIZE
    return out


def decode(data: bytes) -> list[dict]:
    """The offers of a directory message, in (service, supplier) order."""
    offers = cbor.loads(data)
    if not isinstance(offers, list):
        raise errors.TxError("bad-directory")
    prev: tuple[str, bytes] | None = None
    for m in offers:
        check_offer(m)
        k = _order_key(m)
        if prev is not None and not prev < k:
            raise errors.TxError("bad-order")
        prev = k
    return offers
