"""COSE_Sign1 transactions (dual: CPython and MicroPython)."""
from mpcompat import expect_error, unhex

from shared import cbor, cose, errors, p256, tx

PRIV = unhex("C9AFA9D845BA75166B5C215767B1D6934E50C3DB36E89B127B8A622B120F6721")
PRIV2 = unhex("0000000000000000000000000000000000000000000000000000000000000007")
_PUB = []


def _pub():
    if not _PUB:
        _PUB.append(p256.public_key(PRIV))
    return _PUB[0]


def _reading(seq=1, domain="demo", priv=PRIV, kid=None):
    kid = kid or tx.device_id(_pub())
    return tx.make(priv, kid, tx.TYPE_READING, domain, seq, 0, {1: 2150, 2: -2, 3: 0})


def test_signed_reading_fits_budget_and_round_trips():
    m = _reading(seq=70000)
    assert len(m) <= 120, len(m)
    t = tx.decode(m)
    assert t.type == tx.TYPE_READING and t.domain == "demo" and t.seq == 70000
    assert t.sender == tx.device_id(_pub()) and t.body == {1: 2150, 2: -2, 3: 0}
    t.verify(_pub())
    assert t.id == tx.tx_id(m) and len(t.id) == 32


def test_signing_is_deterministic():
    assert _reading(seq=3) == _reading(seq=3)


def test_wrong_key_is_bad_signature():
    m = _reading(priv=PRIV2)
    e = expect_error(errors.SignatureError, tx.decode(m).verify, _pub())
    assert e.reason == errors.BAD_SIGNATURE


def test_tampered_payload_is_bad_signature():
    m = bytearray(_reading())
    i = bytes(m).find(b"demo")
    m[i] = ord("x")
    t = tx.decode(bytes(m))
    assert t.domain == "xemo"
    e = expect_error(errors.SignatureError, t.verify, _pub())
    assert e.reason == errors.BAD_SIGNATURE


def test_structure_errors_have_reason_codes():
    s = cbor.loads(_reading())
    prot, unprot, payload, sig = s.value
    cases = [
        (cbor.dumps([prot, unprot, payload, sig]), "not-sign1"),
        (cbor.dumps(cbor.Tag(18, [prot, unprot, payload])), "bad-structure"),
        (cbor.dumps(cbor.Tag(18, [prot, {4: b"x"}, payload, sig])), "bad-headers"),
        (cbor.dumps(cbor.Tag(18, [prot, unprot, payload, sig[:63]])), "bad-signature-size"),
        (cbor.dumps(cbor.Tag(18, [cbor.dumps({1: -35, 4: b"k"}), unprot, payload, sig])), "bad-alg"),
        (cbor.dumps(cbor.Tag(18, [cbor.dumps({1: -7, 4: ""}), unprot, payload, sig])), "bad-kid"),
    ]
    for msg, detail in cases:
        e = expect_error(errors.CoseError, tx.decode, msg)
        assert e.reason == errors.BAD_COSE and e.detail == detail, (detail, e.detail)


def test_payload_schema_errors():
    kid = tx.device_id(_pub())
    good = {1: 2, 2: "demo", 3: 1, 4: 0, 5: {}}
    cases = [
        ({1: 2, 2: "demo", 3: 1, 4: 0}, "bad-fields"),
        ({1: 2, 2: "demo", 3: 1, 4: 0, 6: {}}, "missing-field"),
        (dict(good, **{}) if False else {1: True, 2: "demo", 3: 1, 4: 0, 5: {}}, "bad-type"),
        ({1: 2, 2: "De/mo", 3: 1, 4: 0, 5: {}}, "bad-domain"),
        ({1: 2, 2: "demo", 3: 0, 4: 0, 5: {}}, "bad-seq"),
        ({1: 2, 2: "demo", 3: 1, 4: -1, 5: {}}, "bad-fee"),
        ({1: 2, 2: "demo", 3: 1, 4: 0, 5: []}, "bad-body"),
    ]
    for fields, detail in cases:
        m = cose.sign1(PRIV, cbor.dumps(fields), kid)
        e = expect_error(errors.TxError, tx.decode, m)
        assert e.reason == errors.BAD_TX and e.detail == detail, (detail, e.detail)
    m = cose.sign1(PRIV, cbor.dumps(good), b"short-kid")
    assert expect_error(errors.TxError, tx.decode, m).detail == "bad-sender"


def test_garbage_and_oversize():
    assert expect_error(errors.DecodeError, tx.decode, b"\xff\x00garbage").reason == errors.BAD_CBOR
    e = expect_error(errors.TooLarge, tx.decode, bytes(4097))
    assert e.reason == errors.TOO_LARGE


def test_sig_digest_is_hash_of_sig_structure():
    from hashlib import sha256

    for payload in (b"", b"x" * 23, b"y" * 24, b"z" * 300):
        prot = cose.protected_header(b"k" * 16)
        assert cose.sig_digest(prot, payload) == sha256(cose.sig_structure(prot, payload)).digest()
