"""Canonical CBOR (shared/cbor.py): RFC 8949 Appendix A, encoding, canonical
order, round trips. Refusals and size limits: test_cbor_reject.py.
Dual module: runs under pytest and tests/mpy_runner.py."""
from mpcompat import expect_error, unhex

from shared import cbor, errors

# RFC 8949 Appendix A examples inside our subset: (hex, value).
APPENDIX_A = (
    ("00", 0), ("01", 1), ("0a", 10), ("17", 23), ("1818", 24), ("1819", 25),
    ("1864", 100), ("1903e8", 1000), ("1a000f4240", 1000000),
    ("1b000000e8d4a51000", 1000000000000),
    ("1bffffffffffffffff", 18446744073709551615),
    ("3bffffffffffffffff", -18446744073709551616),
    ("20", -1), ("29", -10), ("3863", -100), ("3903e7", -1000),
    ("f4", False), ("f5", True), ("f6", None),
    ("40", b""), ("4401020304", b"\x01\x02\x03\x04"),
    ("60", ""), ("6161", "a"), ("6449455446", "IETF"), ("62225c", "\"\\"),
    ("62c3bc", "\u00fc"), ("63e6b0b4", "\u6c34"), ("64f0908591", "\U00010151"),
    ("80", []), ("83010203", [1, 2, 3]), ("8301820203820405", [1, [2, 3], [4, 5]]),
    ("98190102030405060708090a0b0c0d0e0f101112131415161718181819", list(range(1, 26))),
    ("a0", {}), ("a201020304", {1: 2, 3: 4}),
    ("a26161016162820203", {"a": 1, "b": [2, 3]}),
    ("826161a161626163", ["a", {"b": "c"}]),
    ("a56161614161626142616361436164614461656145",
     {"a": "A", "b": "B", "c": "C", "d": "D", "e": "E"}),
)


def test_appendix_a_decode():
    for h, v in APPENDIX_A:
        got = cbor.loads(unhex(h))
        assert got == v, (h, got)
        assert type(got) is type(v), h


def test_appendix_a_encode():
    for h, v in APPENDIX_A:
        assert cbor.dumps(v).hex() == h, (h, cbor.dumps(v).hex())


def test_floats_refused_by_encoder():
    for v in (1.0, 0.0, [1, 2.5], {"t": 21.5}):
        assert expect_error(errors.EncodeError, cbor.dumps, v).detail == "unsupported"


def test_other_types_refused_by_encoder():
    for v in (set(), object(), cbor.Tag("x", 1), cbor.Tag(1.0, 1)):
        assert expect_error(errors.EncodeError, cbor.dumps, v).detail == "unsupported"
    for v in (2 ** 64, -2 ** 64 - 1, cbor.Tag(-1, 0), cbor.Tag(2 ** 64, 0)):
        assert expect_error(errors.EncodeError, cbor.dumps, v).detail == "int-range"
    for k in (True, None, (1,)):
        assert expect_error(errors.EncodeError, cbor.dumps, {k: 1}).detail == "bad-key"
    # a lone surrogate has no UTF-8 form (MicroPython would write ED A0 80)
    assert expect_error(errors.EncodeError, cbor.dumps, "a\ud800").detail == "bad-utf8"


def test_encode_depth_limit():
    v = 0
    for _ in range(cbor.MAX_DEPTH):
        v = [v]
    assert cbor.loads(cbor.dumps(v)) == v
    assert expect_error(errors.EncodeError, cbor.dumps, [v]).detail == "too-deep"
    assert expect_error(errors.EncodeError, cbor.dumps, {1: v}).detail == "too-deep"
    assert cbor.dumps([v], max_depth=cbor.MAX_DEPTH + 1)[0] == 0x81


def test_tag_18_round_trip():
    t = cbor.Tag(18, [b"\xa1\x01\x26", {4: b"id"}, b"payload", b"\x00" * 64])
    b = cbor.dumps(t)
    assert b[0] == 0xD2
    got = cbor.loads(b)
    assert isinstance(got, cbor.Tag) and got.tag == 18
    assert got == t and not (got != t)
    assert got != cbor.Tag(18, [])
    assert got != [b"\xa1\x01\x26"]
    assert repr(cbor.Tag(18, 1)) == "Tag(18, 1)"
    assert cbor.dumps(cbor.Tag(1, 5)).hex() == "c105"
    assert cbor.dumps(cbor.Tag(256, None)).hex() == "d90100f6"


def test_canonical_key_order():
    m = {10: "a", 100: "b", -1: "c", "z": "d", "aa": "e", b"": "f"}
    # bytewise order of encoded keys: 0a, 1864, 20, 40, 617a, 626161
    want = "a6" "0a6161" "18646162" "206163" "406166" "617a6164" "6261616165"
    assert cbor.dumps(m).hex() == want
    assert cbor.loads(unhex(want)) == m


def test_bool_is_not_int():
    assert cbor.dumps(True) == b"\xf5" and cbor.dumps(1) == b"\x01"
    assert cbor.dumps(False) == b"\xf4" and cbor.dumps(0) == b"\x00"
    assert cbor.loads(b"\xf5") is True and cbor.loads(b"\xf4") is False
    assert type(cbor.loads(b"\x01")) is int
    assert cbor.dumps([True, 1, False, 0]).hex() == "84f501f400"


def test_bytes_like_inputs():
    b = bytearray(b"\x82\x41\x00\x61\x61")
    for d in (b, bytes(b), memoryview(b)):
        v = cbor.loads(d)
        assert v == [b"\x00", "a"] and type(v[0]) is bytes
    assert cbor.dumps(bytearray(b"ab")) == b"\x42ab"
    assert cbor.dumps(memoryview(b"ab")) == b"\x42ab"
    assert cbor.dumps((1, 2)) == b"\x82\x01\x02"
    assert expect_error(errors.DecodeError, cbor.loads, "00").detail == "bad-type"


def test_bytes_map_keys_hashable():
    v = cbor.loads(unhex("a2 41 00 01 42 00 01 02"))
    assert v[b"\x00"] == 1 and v[b"\x00\x01"] == 2


def test_round_trips():
    values = (
        0, 23, 24, 255, 256, 65535, 65536, 2 ** 32 - 1, 2 ** 32, 2 ** 64 - 1,
        -24, -25, -256, -257, -65536, -65537, -2 ** 32, -2 ** 32 - 1, -2 ** 64,
        b"\xff" * 300, "x" * 300, "\u00e9\u20ac\U0001f600",
        [None, [], {}, [[]]], {"type": "tx", "seq": 7, "fee": 1, "body": {"v": 2150, "s": -2}},
        {b"\x01": [1, {2: b""}], -5: None, "": True},
    )
    for v in values:
        b = cbor.dumps(v)
        assert cbor.loads(b) == v, v
        assert cbor.dumps(cbor.loads(b)) == b


def test_shortest_heads():
    for n, h in ((23, "17"), (24, "1818"), (255, "18ff"), (256, "190100"),
                 (65535, "19ffff"), (65536, "1a00010000"),
                 (4294967295, "1affffffff"), (4294967296, "1b0000000100000000")):
        assert cbor.dumps(n).hex() == h
