"""Retained offers directory: canonical encoding, order, the 4 KiB bound,
strict decoding (gateway/market/ledger/directory.py)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.market.ledger import directory as d
from shared import cbor, errors
from tests.support.mutations import mutate

# the only exceptions decode may raise on any input (TooLarge is a DecodeError)
EXPECTED = (errors.DecodeError, errors.TxError)

FUZZ = settings(max_examples=300, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def offer(supplier: int = 1, service: str = "temperature", *, price: int = 5,
          published: tuple[int, int] = (10, 0), location: str = "u0yjj",
          **over: Any) -> dict:
    m = {1: bytes([supplier]) * 16, 2: service, 3: "cC", 4: price, 5: 60, 6: location,
         7: 1_700_000_000, 8: 1, 9: list(published)}
    m.update(over)
    return m


def test_round_trip_and_order() -> None:
    offers = [offer(2, "temperature", published=(3, 1)), offer(9, "humidity", price=2),
              offer(1, "temperature", published=(4, 0), location=""),
              offer(1, "co2", price=2**32)]
    data = d.encode(offers)
    assert data == cbor.dumps(d.decode(data))
    got = d.decode(data)
    assert [(m[2], m[1][0]) for m in got] == [
        ("co2", 1), ("humidity", 9), ("temperature", 1), ("temperature", 2)]
    assert sorted(map(cbor.dumps, got)) == sorted(map(cbor.dumps, offers))
    assert d.encode(list(reversed(offers))) == data  # input order does not matter
    assert d.encode([]) == b"\x80" and d.decode(b"\x80") == []


def test_unsorted_or_duplicate_refused() -> None:
    a, b = offer(1, "co2"), offer(1, "temperature")
    for bad in ([b, a], [a, a], [offer(2), offer(1)]):
        with pytest.raises(errors.TxError) as e:
            d.decode(cbor.dumps(bad))
        assert (e.value.reason, e.value.detail) == ("bad-tx", "bad-order")
    with pytest.raises(errors.TxError) as e:
        d.encode([a, offer(1, "co2", price=9)])
    assert e.value.detail == "bad-order"


def test_size_bound_keeps_the_newest() -> None:
    offers = [offer(i % 250, f"svc-{i:04d}", published=(i // 3, i % 3)) for i in range(400)]
    data = d.encode(offers)
    assert len(data) <= cbor.MAX_SIZE
    got = d.decode(data)
    n = len(got)
    assert 30 < n < 400
    newest = sorted(offers, key=lambda m: m[9], reverse=True)[:n]
    assert sorted(m[2] for m in got) == sorted(m[2] for m in newest)
    assert [m[2] for m in got] == sorted(m[2] for m in got)
    # one more offer would not have fitted
    assert len(cbor.dumps(got + [sorted(offers, key=lambda m: m[9])[-n - 1]])) > cbor.MAX_SIZE


def test_everything_fits_is_not_truncated() -> None:
    offers = [offer(i, "temperature") for i in range(20)]
    assert len(d.decode(d.encode(offers))) == 20


@pytest.mark.parametrize(("field", "value"), [
    (1, b"\x01" * 15), (1, "x" * 16),
    (2, ""), (2, "Temp"), (2, "t" * 25), (2, b"temp"),
    (3, "u" * 13), (3, "°C"), (3, 1),
    (4, 0), (4, 2**32 + 1), (4, True), (4, -1),
    (5, 0), (5, 86_401),
    (6, "a"), (6, "u0yjjiiiiiii"), (6, "u" * 13), (6, None),
    (7, -1), (7, False),
    (8, 0), (8, 65_536),
    (9, [1]), (9, [1, 2, 3]), (9, [1, -1]), (9, [True, 0]), (9, 5),
])
def test_bad_field_named(field: int, value: Any) -> None:
    names = {1: "bad-supplier", 2: "bad-service", 3: "bad-unit", 4: "bad-price",
             5: "bad-interval", 6: "bad-location", 7: "bad-expires", 8: "bad-schema",
             9: "bad-published"}
    bad = offer()
    bad[field] = value
    with pytest.raises(errors.TxError) as e:
        d.decode(cbor.dumps([bad]))
    assert e.value.detail == names[field]
    with pytest.raises(errors.TxError) as e:
        d.encode([bad])
    assert e.value.detail == names[field]


@pytest.mark.parametrize("bad", [
    {k: v for k, v in offer().items() if k != 9},
    {**offer(), 10: 0},
    {**{k: v for k, v in offer().items() if k != 9}, "9": [10, 0]},
    [offer()],
    "offer",
])
def test_bad_offer_shape(bad: Any) -> None:
    with pytest.raises(errors.TxError) as e:
        d.decode(cbor.dumps([bad]))
    assert e.value.detail == "bad-offer"


@pytest.mark.parametrize("top", [{}, offer(), 0, b"", None])
def test_not_a_list(top: Any) -> None:
    with pytest.raises(errors.TxError) as e:
        d.decode(cbor.dumps(top))
    assert e.value.detail == "bad-directory"


def test_bad_cbor() -> None:
    for data, exc, reason in [
        (b"", errors.DecodeError, "bad-cbor"),
        (b"\x80\x00", errors.DecodeError, "bad-cbor"),     # trailing
        (b"\x9f\xff", errors.DecodeError, "bad-cbor"),     # indefinite
        (b"\x80" + bytes(cbor.MAX_SIZE), errors.TooLarge, "too-large"),
    ]:
        with pytest.raises(exc) as e:
            d.decode(data)
        assert e.value.reason == reason
    with pytest.raises(errors.DecodeError) as e:
        d.decode("not bytes")  # type: ignore[arg-type]
    assert e.value.detail == "bad-type"


# -- fuzz ----------------------------------------------------------------

GOOD = {
    1: st.binary(min_size=16, max_size=16),
    2: st.text("abz09-", min_size=1, max_size=24),
    3: st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7e), max_size=12),
    4: st.integers(1, 2**32),
    5: st.integers(1, 86_400),
    6: st.text(d.GEOHASH_ALPHABET, max_size=12),
    7: st.integers(0, 2**64 - 1),
    8: st.integers(1, 65_535),
    9: st.lists(st.integers(0, 2**64 - 1), min_size=2, max_size=2),
}
JUNK = st.one_of(st.none(), st.booleans(), st.integers(-(2**64), 2**64 - 1),
                 st.binary(max_size=20), st.text(max_size=26),
                 st.lists(st.integers(-3, 3), max_size=3))


def _field(k: int) -> st.SearchStrategy[Any]:
    return st.one_of(GOOD[k], GOOD[k], GOOD[k], JUNK)


good_maps = st.fixed_dictionaries(GOOD)
maps = st.fixed_dictionaries({k: _field(k) for k in range(1, 10)})
shaky = st.one_of(maps, maps, maps,
                  st.dictionaries(st.integers(0, 11), st.integers(0, 3), max_size=10))
valid = st.lists(good_maps, max_size=6, unique_by=lambda m: (m[2], m[1])).map(
    lambda ms: sorted(ms, key=lambda m: (m[2], m[1])))
directories = st.one_of(valid, st.lists(shaky, max_size=6))


def check_decode(b: bytes) -> list[dict] | None:
    """decode either refuses with an expected error or accepts canonical,
    re-encodable bytes."""
    try:
        offers = d.decode(b)
    except EXPECTED:
        return None
    assert cbor.dumps(offers) == b
    assert d.encode(offers) == b
    return offers


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    return mutate(draw, cbor.dumps(draw(directories)), ("flip", "truncate", "insert", "delete"))


@FUZZ
@given(st.binary(max_size=64))
def test_fuzz_random_bytes(b: bytes) -> None:
    check_decode(b)


@FUZZ
@given(directories)
def test_fuzz_structured(offers: list[Any]) -> None:
    check_decode(cbor.dumps(offers))


@FUZZ
@given(mutated())
def test_fuzz_mutated(b: bytes) -> None:
    check_decode(b)


@FUZZ
@given(st.lists(good_maps, max_size=8))
def test_fuzz_encode_accepts_valid_sets(offers: list[dict]) -> None:
    unique = list({(m[2], m[1]): m for m in offers}.values())
    data = d.encode(unique)
    assert len(data) <= cbor.MAX_SIZE
    assert d.decode(data) == sorted(unique, key=lambda m: (m[2], m[1]))
