"""Canonical CBOR (shared/cbor.py): every refusal and its detail, and the
4 KiB message limit. Dual module: runs under pytest and tests/mpy_runner.py."""

# A receive buffer allocated first, as firmware does at boot: once modules are
# compiled from source, a 64 KiB heap has few 4 KiB holes left.
RX = bytearray(4097)

from mpcompat import expect_error, unhex  # noqa: E402

from shared import cbor, errors  # noqa: E402

# RFC 8949 Appendix A examples outside the subset, one "hex detail" a line
# (a string, not a tuple of tuples: cheaper to compile in a 64 KiB heap).
APPENDIX_A_REFUSED = """
c249010000000000000000 unsupported
c349010000000000000000 unsupported
f90000 unsupported
f98000 unsupported
f93c00 unsupported
fb3ff199999999999a unsupported
f93e00 unsupported
f97bff unsupported
fa47c35000 unsupported
fa7f7fffff unsupported
fb7e37e43c8800759c unsupported
f90001 unsupported
f90400 unsupported
f9c400 unsupported
fbc010666666666666 unsupported
f97c00 unsupported
f97e00 unsupported
f9fc00 unsupported
fa7f800000 unsupported
fa7fc00000 unsupported
faff800000 unsupported
fb7ff0000000000000 unsupported
fb7ff8000000000000 unsupported
fbfff0000000000000 unsupported
f7 unsupported
f0 unsupported
f8ff unsupported
c074323031332d30332d32315432303a30343a30305a unsupported
c11a514b67b0 unsupported
c1fb41d452d9ec200000 unsupported
d74401020304 unsupported
d818456449455446 unsupported
d82076687474703a2f2f7777772e6578616d706c652e636f6d unsupported
5f42010243030405ff indefinite
7f657374726561646d696e67ff indefinite
9fff indefinite
9f018202039f0405ffff indefinite
9f01820203820405ff indefinite
83018202039f0405ff indefinite
83019f0203ff820405 indefinite
9f0102030405060708090a0b0c0d0e0f101112131415161718181819ff indefinite
bf61610161629f0203ffff indefinite
826161bf61626163ff indefinite
bf6346756ef563416d7421ff indefinite
"""


def refused(hexstr, detail, **kw):
    e = expect_error(errors.DecodeError, cbor.loads, unhex(hexstr), **kw)
    assert e.detail == detail, (hexstr, e.detail, detail)
    return e


def test_appendix_a_outside_subset_refused():
    n = 0
    for line in APPENDIX_A_REFUSED.split("\n"):
        if line:
            h, detail = line.split()
            refused(h, detail)
            n += 1
    assert n == 44


def test_refuse_truncated():
    for h in ("", "18", "1901", "1a000000", "1b00000000000000", "d2",
              "82 190100", "a1 190100", "a2 01 02 03 1a00"):
        refused(h, "truncated")


def test_refuse_trailing():
    refused("0000", "trailing")
    refused("8001", "trailing")


def test_refuse_non_canonical_heads():
    for h in ("1800", "1817", "190017", "1900ff", "1a0000ffff", "1b00000000ffffffff",
              "3817", "5800", "780161", "9800", "b800", "d80012"):
        refused(h, "non-canonical")


def test_refuse_non_canonical_key_order():
    refused("a2 02 00 01 00", "non-canonical")
    # length-first order (RFC 7049 canonical, cbor2 canonical=True) is not ours
    refused("a2 20 00 1864 00", "non-canonical")
    refused("a2 6161 00 41 00", "non-canonical")


def test_refuse_indefinite():
    for h in ("5fff", "7fff", "9fff", "bfff", "ff", "1f", "3f", "df00"):
        refused(h, "indefinite")


def test_refuse_too_deep():
    ok = unhex("81" * cbor.MAX_DEPTH + "00")
    assert cbor.loads(ok) is not None
    refused("81" * (cbor.MAX_DEPTH + 1) + "00", "too-deep")
    refused("a1 01" * (cbor.MAX_DEPTH + 1) + "00", "too-deep")
    refused("d2" * (cbor.MAX_DEPTH + 1) + "00", "too-deep")
    refused("8100", "too-deep", max_depth=0)
    assert cbor.loads(b"\x00", max_depth=0) == 0


def test_refuse_duplicate_key():
    refused("a2 01 00 01 00", "duplicate-key")
    refused("a3 01 00 02 00 01 00", "duplicate-key")
    refused("a2 6161 00 6161 01", "duplicate-key")


def test_refuse_unsupported():
    for h in ("1c", "3d", "5e", "f9", "fa", "fb", "f7", "f3", "f820", "c000", "d3 00",
              "a1 f4 00", "a1 f6 00", "a1 80 00", "a1 a0 00", "a1 d2 00 00", "a1 f93c00 00"):
        refused(h, "unsupported")


def test_refuse_bad_utf8():
    for h in ("61ff", "6180", "62c080", "62c1bf", "63eda080", "63edbfbf", "64f4908080",
              "64f08f8080", "62e0a0", "63e08080", "62e282", "61c3", "63e282ff", "62c328"):
        refused(h, "bad-utf8")
    assert cbor.loads(unhex("63ed9fbf")) == "\ud7ff"
    assert cbor.loads(unhex("64f48fbfbf")) == "\U0010ffff"


def test_utf8_checker():
    good = ("", "a", "\u00e9", "\u20ac", "\ud7ff", "\ue000", "\U00010000", "\U0010ffff")
    for s in good:
        b = s.encode()
        assert cbor.utf8_ok(b, 0, len(b)), s
    for h in ("80", "bf", "c0af", "c2", "e08080", "e09f80", "eda080", "f08f8080",
              "f4908080", "f5808080", "ff", "e2ff82"):
        b = unhex(h)
        assert not cbor.utf8_ok(b, 0, len(b)), h


def test_refuse_declared_length_beyond_input():
    for h in ("5affffffff00", "5bffffffffffffffff", "7a00010000", "6261",
              "9affffffff", "9b000000010000000000", "83 01 02",
              "baffffffff", "a2 01 02 03"):
        e = refused(h, "truncated")
        assert e.reason == errors.BAD_CBOR  # the input itself was small


# Max-size inputs are assembled in RX and passed as a memoryview, the way
# a board hands its receive buffer to the decoder.
def _put(buf, i, b):
    buf[i:i + len(b)] = b
    return i + len(b)


def test_max_size_cose_message_decodes():
    n = cbor.MAX_SIZE
    tx = cbor.dumps({"type": "data", "domain": "d", "from": b"\x01" * 16, "seq": 1, "fee": 1,
                     "body": {"v": list(range(100)), "scale": -2}, "padding": b""})
    assert tx.endswith(b"\x67padding\x40")  # longest key sorts last
    msg = RX  # COSE_Sign1 [protected, {kid}, payload, signature]
    i = _put(msg, 0, unhex("d2 84 43 a10126 a1 04 50") + b"\x01" * 16)
    plen = n - i - 3 - 66
    start = _put(msg, i, b"\x59" + plen.to_bytes(2, "big"))
    i = _put(msg, start, tx[:-1])
    pad = plen - len(tx) - 2
    i = _put(msg, i, b"\x59" + pad.to_bytes(2, "big")) + pad
    i = _put(msg, i, b"\x58\x40" + b"\x02" * 64)
    assert i == n
    v = cbor.loads(memoryview(msg)[:n])
    assert isinstance(v, cbor.Tag) and v.tag == 18
    assert v.value[:2] == [b"\xa1\x01\x26", {4: b"\x01" * 16}]
    assert v.value[3] == b"\x02" * 64 and len(v.value[2]) == plen
    v = None  # the payload again, from the buffer: one 4 KiB copy alive at a time
    p = cbor.loads(memoryview(msg)[start:start + plen])
    assert p["seq"] == 1 and p["body"]["v"][99] == 99 and len(p["padding"]) == pad


def test_max_size_dense_message_decodes():
    # 500 items: the list alone is one 4000-byte block on a 64-bit port
    msg = RX  # [[-1] * 500, bytes(pad)]
    _put(msg, 0, unhex("82 99 01f4"))
    for i in range(4, 504):
        msg[i] = 0x20
    pad = cbor.MAX_SIZE - 507
    _put(msg, 504, b"\x59" + pad.to_bytes(2, "big"))
    v = cbor.loads(memoryview(msg)[:cbor.MAX_SIZE])
    assert len(v[0]) == 500 and v[0][0] == v[0][499] == -1
    assert len(v[1]) == pad


def test_too_large_refused_unread():
    RX[0] = 0x1F  # would be "indefinite" if it were read
    e = expect_error(errors.TooLarge, cbor.loads, RX)
    assert e.detail == "too-large" and e.reason == errors.TOO_LARGE
    assert isinstance(e, errors.DecodeError)
    expect_error(errors.TooLarge, cbor.loads, b"\x00\x00", max_size=1)
    assert cbor.loads(b"\x41\x00", max_size=2) == b"\x00"
