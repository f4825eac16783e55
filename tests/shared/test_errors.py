"""Error types carry reason codes (dual: CPython and MicroPython)."""
from shared import errors


def test_reason_and_detail():
    e = errors.DecodeError("truncated")
    assert e.reason == errors.BAD_CBOR
    assert e.detail == "truncated"
    assert isinstance(e, errors.TLError)


def test_too_large_is_decode_error_with_own_reason():
    e = errors.TooLarge("too-large")
    assert isinstance(e, errors.DecodeError)
    assert e.reason == errors.TOO_LARGE
