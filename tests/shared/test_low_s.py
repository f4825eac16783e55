"""Low s on the wire (dual: CPython and MicroPython, where shared/cose.py
verifies with shared/p256.py instead of `cryptography`). For an ECDSA
signature (r, s), (r, n - s) verifies too: its "high-s twin" turns a signed
message into another one with another transaction id. Signers give s <= n/2
and every message verified through shared/cose.py (transactions, headers,
notices, sold readings: test_low_s_messages.py) refuses s > n/2:
bad-signature, detail high-s."""
from mpcompat import expect_error, unhex

from shared import p256  # isort: skip  (compiled first: its compile is the heap peak)
from shared import cose, errors, tx

N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
PRIV = unhex("C9AFA9D845BA75166B5C215767B1D6934E50C3DB36E89B127B8A622B120F6721")  # RFC 6979 A.2.5


def _s(message):
    return int.from_bytes(message[-32:], "big")  # COSE_Sign1 ends with its bstr(64) r||s


def _twin(message):
    """The same COSE_Sign1 with s replaced by n - s."""
    return message[:-32] + (N - _s(message)).to_bytes(32, "big")


def _with_s(message, s):
    return message[:-32] + s.to_bytes(32, "big")


def _reading(seq):
    pub = p256.public_key(PRIV)
    return pub, tx.make(PRIV, tx.device_id(pub), tx.TYPE_READING, "demo", seq, 0, {1: seq, 2: 0})


def test_signers_give_low_s():
    # "sample" under the RFC 6979 key computes s > n/2 (test_p256.py): sign gives n - s
    assert int.from_bytes(p256.sign(PRIV, b"sample")[32:], "big") <= N // 2
    for seq in range(1, 9):
        assert _s(_reading(seq)[1]) <= N // 2
        assert _s(cose.sign1(PRIV, b"x" * seq, b"k")) <= N // 2


def test_high_s_twin_of_a_transaction_is_refused():
    pub, m = _reading(7)
    twin = _twin(m)
    assert _s(twin) > N // 2 and tx.tx_id(twin) != tx.tx_id(m)
    # the twin is a valid plain ECDSA signature of the same payload...
    s1 = cose.parse1(twin)
    assert p256.verify_digest(pub, cose.sig_digest(s1.protected, s1.payload), s1.signature)
    # ...and the wire refuses it, on whichever backend verifies here
    t = tx.decode(twin)
    e = expect_error(errors.SignatureError, t.verify, pub)
    assert e.reason == errors.BAD_SIGNATURE and e.detail == "high-s"
    e = expect_error(errors.SignatureError, cose.verify1, pub, twin)
    assert e.detail == "high-s"
    tx.decode(m).verify(pub)  # the original still verifies


def test_the_bound_is_half_n():
    # s = n // 2 + 1 is refused before any curve arithmetic; s = n // 2 is not
    # high, so it is verified (and fails as an ordinary bad signature)
    pub, m = _reading(1)
    e = expect_error(errors.SignatureError, cose.verify1, pub, _with_s(m, N // 2 + 1))
    assert e.detail == "high-s"
    e = expect_error(errors.SignatureError, cose.verify1, pub, _with_s(m, N // 2))
    assert e.detail == "bad-signature"
