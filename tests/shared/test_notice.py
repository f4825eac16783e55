"""Market notices sealed by the domain authority (shared/notice.py) (dual:
also under MicroPython, where a market board opens them)."""
from mpcompat import expect_error, unhex

from shared import cbor, errors, messages, notice, p256, tx

AUTH = unhex("0000000000000000000000000000000000000000000000000000000000000005")
OTHER = unhex("0000000000000000000000000000000000000000000000000000000000000009")


def _account():
    """An ACCOUNT notice (balance 1234 at height 7), as shared/messages_gateway.py builds it."""
    return cbor.dumps({messages.M_KIND: messages.KIND_ACCOUNT, 31: 1234, messages.M_HEIGHT: 7})


def _auth():
    pub = p256.public_key(AUTH)
    return pub, tx.device_id(pub)


def test_a_sealed_notice_opens_under_the_authority_key():
    pub, aid = _auth()
    sealed = notice.seal(AUTH, aid, _account())
    assert sealed[0] == notice.NOTICE_BYTE
    m = notice.open_notice(sealed, pub)
    assert m[messages.M_KIND] == messages.KIND_ACCOUNT and m[31] == 1234 and m[6] == 7
    m = notice.open_notice(sealed, pub, False)  # a board's views into the message
    assert m[31] == 1234


def test_a_notice_sealed_by_another_key_or_altered_is_refused():
    pub, aid = _auth()
    forged = notice.seal(OTHER, aid, _account())  # names the authority, signed by another
    expect_error(errors.SignatureError, notice.open_notice, forged, pub)
    altered = bytearray(notice.seal(AUTH, aid, _account()))
    altered[-70] ^= 1  # inside the payload: the balance (64-byte signature and its 2-byte head after)
    expect_error(errors.SignatureError, notice.open_notice, bytes(altered), pub)


def test_only_notices_open():
    pub, aid = _auth()
    receipt_like = cbor.dumps({messages.M_KIND: messages.KIND_REJECT, 1: b"x", 4: "replay"})
    e = expect_error(errors.ProofError, notice.open_notice, notice.seal(AUTH, aid, receipt_like),
                     pub)
    assert e.detail == "not-notice"
    expect_error(errors.CoseError, notice.open_notice, _account(), pub)  # unsealed
