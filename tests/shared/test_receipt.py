"""Signed headers and receipt proofs a light node checks (dual)."""
from mpcompat import expect_error, unhex

from shared import (
    errors,
    header,
    header_gateway,
    merkle,
    merkletree,
    messages,
    messages_gateway,
    p256,
    tx,
)

# The gateway's companions (a board never loads them) are loaded here, while
# the heap is whole: loaded after a signature, a module's globals need
# contiguous blocks that the signature's big ints have split.
_GATEWAY_SIDE = (header_gateway, merkletree, messages_gateway)

AUTH = unhex("0000000000000000000000000000000000000000000000000000000000000005")
OTHER = unhex("0000000000000000000000000000000000000000000000000000000000000009")


def _block(n=5):
    leaves = [messages.receipt_leaf(bytes([i]) * 32, 0, "", []) for i in range(n)]
    lv = merkle.levels([merkle.leaf_hash(x) for x in leaves])
    pub = p256.public_key(AUTH)
    fields = {"version": 1, "domain": "demo", "height": 7, "prev_hash": bytes(32), "time": 1700000000,
              "tx_root": bytes(32), "receipts_root": merkle.root_of(lv), "state_root": bytes(32),
              "proposer": tx.device_id(pub)}
    signed = header.sign(AUTH, fields["proposer"], fields)
    return lv, signed, pub


def _receipt(lv, signed, i, n, height=7):
    return messages.parse(messages.receipt(bytes([i]) * 32, i + 1, 0, "", [], height, signed, i,
                                           n, merkle.proof(lv, i)))


def test_receipt_checks_against_signed_header():
    lv, signed, pub = _block()
    for i in range(5):
        fields = messages.check_receipt(_receipt(lv, signed, i, 5), pub)
        assert fields["height"] == 7


def test_receipt_from_wrong_authority_refused():
    lv, signed, _ = _block()
    e = expect_error(errors.SignatureError, messages.check_receipt, _receipt(lv, signed, 0, 5),
                     p256.public_key(OTHER))
    assert e.reason == errors.SignatureError.reason  # (errors.BAD_SIGNATURE would load the gateway's table)


def test_tampered_receipt_refused():
    lv, signed, pub = _block()
    m = _receipt(lv, signed, 2, 5)
    m[messages.M_STATUS] = 1
    assert expect_error(errors.ProofError, messages.check_receipt, m, pub).detail == "bad-proof"
    m = _receipt(lv, signed, 2, 5, height=8)
    assert expect_error(errors.ProofError, messages.check_receipt, m, pub).detail == "height-mismatch"


def test_rejection_parses():
    # ALREADY_REGISTERED: the one code a light node compares, so no reasons table is loaded
    m = messages.parse(messages.rejection(b"\x01" * 32, 4, errors.ALREADY_REGISTERED, "seq"))
    assert m[messages.M_KIND] == messages.KIND_REJECT and m[messages.M_REASON] == errors.ALREADY_REGISTERED
    expect_error(errors.ProofError, messages.parse, b"\xa0")
