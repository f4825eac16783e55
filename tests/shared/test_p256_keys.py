"""P-256 key encodings: SEC1 compress/decompress, KeyFormatError details
(dual: CPython and MicroPython)."""
from mpcompat import expect_error, unhex

from shared import p256  # isort: skip  (compiled first: its compile is the heap peak)
from shared import errors

G = unhex("04 6B17D1F2E12C4247F8BCE6E563A440F277037D812DEB33A0F4A13945D898C296"
          "4FE342E2FE1A7F9B8EE7EB4A7C0F9E162BCE33576B315ECECBB6406837BF51F5")
P = unhex("FFFFFFFF00000001000000000000000000000000FFFFFFFFFFFFFFFFFFFFFFFF")
N = unhex("FFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551")


def test_compress_decompress_round_trip():
    for pub in (G, p256.public_key(b"\x07" * 32, False), p256.decompress(p256.keygen()[1])):
        c = p256.compress(pub)
        assert len(c) == 33 and c[1:] == pub[1:33] and c[0] == 2 + (pub[64] & 1)
        assert p256.decompress(c) == pub
        assert p256.compress(c) == c and p256.decompress(pub) == pub
        assert p256.compress(bytearray(pub)) == c


def test_edge_private_keys():
    one = bytes(31) + b"\x01"
    assert p256.public_key(one, False) == G
    # (n-1)G = -G = (Gx, p - Gy): even y, so prefix 02.
    assert p256.public_key(N[:31] + bytes((N[31] - 1,))) == b"\x02" + G[1:33]


def test_public_key_errors():
    cases = (
        ("text", "type"), (None, "type"), (G[:64], "length"), (b"", "length"),
        (b"\x00", "length"),  # SEC1 point at infinity
        (b"\x04" + G[1:33], "prefix"), (b"\x02" + G[1:], "prefix"),
        (b"\x05" + G[1:33], "prefix"), (b"\x00" + G[1:], "prefix"),
        (b"\x02" + P, "range"), (b"\x04" + P + G[33:], "range"), (G[:33] + P, "range"),
        (b"\x02" + bytes(31) + b"\x01", "not-on-curve"),  # x = 1: x^3 - 3x + b not a square
        (G[:64] + bytes((G[64] ^ 1,)), "not-on-curve"),
        (b"\x04" + bytes(64), "not-on-curve"),
    )
    for bad, detail in cases:
        for fn in (p256.compress, p256.decompress):
            e = expect_error(errors.KeyFormatError, fn, bad)
            assert e.detail == detail and e.reason == errors.BAD_KEY


def test_private_key_errors():
    for bad, detail in ((bytes(32), "range"), (N, "range"), (b"\xff" * 32, "range"),
                        (N[:31], "length"), (N + b"\x00", "length"), ("x" * 32, "type"),
                        (None, "type")):
        assert expect_error(errors.KeyFormatError, p256.public_key, bad).detail == detail
        assert expect_error(errors.KeyFormatError, p256.sign, bad, b"m").detail == detail
