"""Low s (test_low_s.py) for what the domain authority and suppliers sign:
block headers, market notices, sold readings (dual: CPython and MicroPython;
apart from test_low_s.py to keep each module's heap margin)."""
from mpcompat import expect_error, unhex

from shared import p256  # isort: skip  (compiled first: its compile is the heap peak)
from shared import cbor, errors, header, messages, notice, stream, tx

N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
AUTH = unhex("0000000000000000000000000000000000000000000000000000000000000005")


def _twin(message):
    """The same COSE_Sign1 (ending with its bstr(64) r||s) with s replaced by n - s."""
    return message[:-32] + (N - int.from_bytes(message[-32:], "big")).to_bytes(32, "big")


def test_high_s_header_notice_and_reading_are_refused():
    pub = p256.public_key(AUTH)
    aid = tx.device_id(pub)
    fields = {"version": 1, "domain": "demo", "height": 3, "prev_hash": b"\x01" * 32,
              "time": 1700000000, "tx_root": b"\x02" * 32, "receipts_root": b"\x03" * 32,
              "state_root": b"\x04" * 32, "proposer": aid}
    signed = header.sign(AUTH, aid, fields)
    assert header.open_signed(pub, signed)[0]["height"] == 3
    e = expect_error(errors.SignatureError, header.open_signed, pub, _twin(signed))
    assert e.detail == "high-s"

    sealed = notice.seal(AUTH, aid, cbor.dumps({messages.M_KIND: messages.KIND_ACCOUNT, 31: 5,
                                                messages.M_HEIGHT: 3}))
    assert notice.open_notice(sealed, pub)[31] == 5
    for copy in (True, False):  # False: a board's views into the message
        e = expect_error(errors.SignatureError, notice.open_notice, _twin(sealed), pub, copy)
        assert e.detail == "high-s"

    r = stream.reading(AUTH, aid, b"\x05" * 16, 0, 2150, -2)
    assert stream.open_reading(r, pub)[2] == 2150
    e = expect_error(errors.SignatureError, stream.open_reading, _twin(r), pub)
    assert e.detail == "high-s"
