"""Byte-level mutations of valid encodings, for the decoders' fuzz tests
(tests/interop/test_cbor_fuzz.py, tests/market/test_directory.py)."""

from __future__ import annotations

from hypothesis import strategies as st

OPS = ("flip", "truncate", "insert", "delete", "set")


def mutate(draw: st.DrawFn, data: bytes, ops: tuple[str, ...] = OPS) -> bytes:
    """1-3 random edits of `data`: flip a bit, truncate, insert 1-4 bytes,
    delete a byte, set a byte."""
    b = bytearray(data)
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(ops))
        if op == "truncate":
            b = b[:draw(st.integers(0, len(b)))]
        elif op == "insert":
            pos = draw(st.integers(0, len(b)))
            b[pos:pos] = draw(st.binary(min_size=1, max_size=4))
        elif b:
            pos = draw(st.integers(0, len(b) - 1))
            if op == "flip":
                b[pos] ^= 1 << draw(st.integers(0, 7))
            elif op == "delete":
                del b[pos]
            else:
                b[pos] = draw(st.integers(0, 255))
    return bytes(b)
