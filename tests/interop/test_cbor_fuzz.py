"""Property tests for shared/cbor.py (CPython only: hypothesis and cbor2).

cbor2 5.x `canonical=True` sorts map keys by (length of encoding, encoding):
the RFC 7049 s3.9 "length-first" order (CBOREncoder.encode_sortable_key
returns `(len(encoded), encoded)`). RFC 8949 s4.2.1, which we follow, sorts
by the encoding alone, bytewise. The two agree exactly when, in every map of
a value, ordering the keys either way gives the same sequence (e.g. all keys
encode to the same length); byte equality with cbor2 is checked only then,
and otherwise our decoder must refuse cbor2's output as "non-canonical".
"""

import cbor2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared import cbor, errors
from tests.support.mutations import mutate

# the only exceptions loads may raise on any input (TooLarge is a DecodeError)
EXPECTED = (errors.DecodeError,)

FUZZ = settings(max_examples=300, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

ints = st.integers(min_value=-(2 ** 64), max_value=2 ** 64 - 1)
small_ints = st.integers(min_value=-300, max_value=70000)
keys = st.one_of(small_ints, ints, st.binary(max_size=6), st.text(max_size=6))
scalars = st.one_of(st.none(), st.booleans(), small_ints, ints,
                    st.binary(max_size=24), st.text(max_size=12))


def _containers(children):
    return st.one_of(
        st.lists(children, max_size=5),
        st.dictionaries(keys, children, max_size=5),
        st.builds(lambda v: cbor.Tag(18, v), children),
    )


def depth(v):
    if isinstance(v, cbor.Tag):
        return 1 + depth(v.value)
    if isinstance(v, list):
        return 1 + max([depth(x) for x in v] or [0])
    if isinstance(v, dict):
        return 1 + max([depth(x) for x in v.values()] or [0])
    return 0


values = st.recursive(scalars, _containers, max_leaves=24).filter(
    lambda v: depth(v) <= cbor.MAX_DEPTH)


def check_decode(b, **kw):
    """loads either refuses with an expected error or accepts canonical bytes."""
    try:
        v = cbor.loads(b, **kw)
    except EXPECTED:
        return None
    assert cbor.dumps(v) == b
    # anything we accept is well-formed CBOR that cbor2 reads the same way
    assert cbor2.loads(b) == to_cbor2(v)
    return v


def to_cbor2(v):
    if isinstance(v, cbor.Tag):
        return cbor2.CBORTag(v.tag, to_cbor2(v.value))
    if isinstance(v, list):
        return [to_cbor2(x) for x in v]
    if isinstance(v, dict):
        return {k: to_cbor2(x) for k, x in v.items()}
    return v


def orders_agree(v):
    """True when cbor2's length-first key order equals ours in every map."""
    if isinstance(v, cbor.Tag):
        return orders_agree(v.value)
    if isinstance(v, list):
        return all(orders_agree(x) for x in v)
    if isinstance(v, dict):
        enc = [cbor.dumps(k) for k in v]
        if sorted(enc) != sorted(enc, key=lambda e: (len(e), e)):
            return False
        return all(orders_agree(x) for x in v.values())
    return True


@st.composite
def mutated(draw):
    return mutate(draw, cbor.dumps(draw(values)))


# Token soup: heads that open containers, tags, breaks, strings, ints, so that
# random inputs reach deep decoder paths more often than uniform bytes do.
TOKENS = [bytes.fromhex(h) for h in (
    "00", "17", "1818", "1817", "190100", "1900ff", "20", "3bffffffffffffffff",
    "40", "4100", "5800", "60", "6161", "62c3a9", "61ff", "63eda080",
    "80", "81", "82", "9f", "a0", "a1", "a2", "bf", "ff", "d2", "c1", "f4", "f5", "f6", "f7",
    "f93c00", "1c", "5a00000004", "9a00000002")]
soup = st.lists(st.sampled_from(TOKENS), max_size=12).map(b"".join)


@FUZZ
@given(st.binary(max_size=64))
def test_random_bytes(b):
    check_decode(b)


@FUZZ
@given(soup)
def test_token_soup(b):
    check_decode(b)


@FUZZ
@given(mutated())
def test_mutated_encodings(b):
    check_decode(b)


@FUZZ
@given(soup, st.integers(0, 4))
def test_small_limits(b, limit):
    try:
        cbor.loads(b, max_size=limit, max_depth=limit)
    except errors.TooLarge:
        assert len(b) > limit
    except EXPECTED:
        pass


@FUZZ
@given(values)
def test_round_trip(v):
    b = cbor.dumps(v)
    assert cbor.loads(b) == v
    assert cbor.dumps(cbor.loads(b)) == b


@FUZZ
@given(values)
def test_cbor2_reads_ours(v):
    assert cbor2.loads(cbor.dumps(v)) == to_cbor2(v)


@FUZZ
@given(values)
def test_cbor2_canonical_where_orders_agree(v):
    theirs = cbor2.dumps(to_cbor2(v), canonical=True)
    if orders_agree(v):
        assert cbor.dumps(v) == theirs
        assert cbor.loads(theirs) == v
    else:
        try:
            cbor.loads(theirs)
        except errors.DecodeError as e:
            assert e.detail == "non-canonical"
        else:
            raise AssertionError("accepted length-first key order")


def test_orders_disagree_example():
    v = {10: 1, 100: 2, -1: 3}
    assert not orders_agree(v)
    assert cbor.dumps(v).hex() == "a30a01186402" "2003"
    assert cbor2.dumps(v, canonical=True).hex() == "a30a01" "2003" "186402"


NEAR_UTF8 = st.lists(st.sampled_from(
    (0x00, 0x41, 0x7F, 0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF, 0xC0, 0xC1, 0xC2, 0xDF,
     0xE0, 0xE1, 0xED, 0xEE, 0xEF, 0xF0, 0xF1, 0xF4, 0xF5, 0xFF)), max_size=10).map(bytes)


def strict_utf8(b):
    try:
        b.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


@settings(max_examples=500, deadline=None)
@given(st.one_of(NEAR_UTF8, st.binary(max_size=12), st.text(max_size=6).map(str.encode)))
def test_hand_utf8_check_matches_cpython(b):
    # the check MicroPython relies on agrees with CPython's strict decoder
    assert cbor.utf8_ok(b, 0, len(b)) == strict_utf8(b)


@settings(max_examples=300, deadline=None)
@given(st.one_of(NEAR_UTF8, st.text(max_size=6).map(str.encode)))
def test_text_decoding_without_strict_interpreter(b):
    # the MicroPython code path (hand check before str()) run under CPython
    item = bytes([0x60 | len(b)]) + b if len(b) < 24 else bytes([0x78, len(b)]) + b
    saved = cbor._STRICT_UTF8
    cbor._STRICT_UTF8 = False
    try:
        try:
            got = cbor.loads(item)
        except errors.DecodeError as e:
            assert e.detail == "bad-utf8" and not strict_utf8(b)
        else:
            assert got == b.decode("utf-8")
    finally:
        cbor._STRICT_UTF8 = saved
