"""Every refusal of gateway/ledger/validate.py, by reason code and detail."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.ledger import validate
from gateway.ledger.state import DeviceRecord, Rules, State
from shared import cbor, cose, errors
from shared import tx as txm
from tests.support.gwtest import DOMAIN, Device, Node

N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551  # P-256 group order


def reason_of(fn: Any, *args: Any) -> tuple[str, str]:
    with pytest.raises(errors.TLError) as ei:
        fn(*args)
    return ei.value.reason, ei.value.detail


def stateless(message: Any) -> tuple[str, str]:
    return reason_of(validate.check_stateless, message, DOMAIN)


# ---- stateless -----------------------------------------------------------------

def test_valid_message_parses(alice: Device) -> None:
    m = alice.reading(2150, -2)
    t = validate.check_stateless(m, DOMAIN)
    assert (t.sender, t.seq, t.type, t.body) == (alice.id, 1, txm.TYPE_READING, {1: 2150, 2: -2})
    assert validate.check_stateless(bytearray(m), DOMAIN).id == t.id
    assert validate.check_stateless(memoryview(m), DOMAIN).id == t.id


@pytest.mark.parametrize("garbage", [b"", b"\xff", b"hello world", bytes(range(256)),
                                     b"\x1f", b"\xd2"])
def test_garbage_is_bad_cbor(garbage: bytes) -> None:
    assert stateless(garbage)[0] == errors.BAD_CBOR


def test_truncated(alice: Device) -> None:
    m = alice.reading()
    for cut in (1, 5, 40, len(m) - 1):
        reason, detail = stateless(m[:cut])
        # a length longer than what remains is refused before reading: too-large
        assert reason == errors.BAD_CBOR and detail in ("truncated", "too-large")


def test_trailing_bytes(alice: Device) -> None:
    assert stateless(alice.reading() + b"\x00") == (errors.BAD_CBOR, "trailing")


def test_non_canonical_outer(alice: Device) -> None:
    m = alice.reading()
    assert m[:2] == b"\xd2\x84"
    # the same array with a one-byte length argument: valid CBOR, not canonical
    assert stateless(b"\xd2\x98\x04" + m[2:]) == (errors.BAD_CBOR, "non-canonical")


def test_non_canonical_signed_payload(alice: Device) -> None:
    """Correctly signed, but the payload map keys are not in canonical order."""
    good = txm.payload(txm.TYPE_READING, DOMAIN, 1, 0, {1: 5, 2: 0})
    assert good[0] == 0xA5 and good[1] == 0x01
    items = cbor.loads(good)
    body = b"".join(cbor.dumps(k) + cbor.dumps(items[k]) for k in (2, 1, 3, 4, 5))
    m = cose.sign1(alice.priv, b"\xa5" + body, alice.id)
    assert stateless(m) == (errors.BAD_CBOR, "non-canonical")


def test_too_large_1mib_refused_unread() -> None:
    class Huge:
        """1 MiB that explodes if anyone reads it."""

        def __len__(self) -> int:
            return 1 << 20

        def __getitem__(self, i: Any) -> Any:
            raise AssertionError("read")

        def __bytes__(self) -> bytes:
            raise AssertionError("read")

    assert stateless(Huge()) == (errors.TOO_LARGE, "too-large")
    assert stateless(bytes(1 << 20))[0] == errors.TOO_LARGE
    assert stateless(b"\x00" * 4097)[0] == errors.TOO_LARGE


@pytest.mark.parametrize("obj", [
    [1, 2, 3, 4],
    cbor.Tag(18, [cbor.dumps(5), {}, b"", bytes(64)]),
    cbor.Tag(18, [cose.protected_header(bytes(16)), {}, b"x"]),
    cbor.Tag(18, [cose.protected_header(bytes(16)), {1: 2}, b"x", bytes(64)]),
    cbor.Tag(18, [cose.protected_header(bytes(16)), {}, b"x", bytes(63)]),
    cbor.Tag(18, [cbor.dumps({1: -35, 4: bytes(16)}), {}, b"x", bytes(64)]),
    cbor.Tag(18, [cbor.dumps({1: -7}), {}, b"x", bytes(64)]),
    {"not": "cose"},
])
def test_bad_cose(obj: Any) -> None:
    assert stateless(cbor.dumps(obj))[0] == errors.BAD_COSE


def test_wrong_domain(alice: Device) -> None:
    assert stateless(alice.reading(domain="other")) == (errors.WRONG_DOMAIN, "wrong-domain")


def _signed(dev: Device, type_: int, body: Any, *, seq: Any = 1, fee: Any = 0,
            fields: dict[int, Any] | None = None) -> bytes:
    f = fields if fields is not None else {1: type_, 2: DOMAIN, 3: seq, 4: fee, 5: body}
    return cose.sign1(dev.priv, cbor.dumps(f), dev.id)


@pytest.mark.parametrize("type_,body,detail", [
    (txm.TYPE_REGISTER, {}, "bad-body"),
    (txm.TYPE_REGISTER, {1: b"\x02" + bytes(32), 2: 1}, "bad-body"),
    (txm.TYPE_REGISTER, {1: b"\x02" + b"\xff" * 32}, "bad-pubkey"),
    (txm.TYPE_REGISTER, {1: b"\x04" + bytes(32)}, "bad-pubkey"),
    (txm.TYPE_REGISTER, {1: "02ab"}, "bad-pubkey"),
    (txm.TYPE_READING, {1: 1}, "bad-body"),
    (txm.TYPE_READING, {2: 1}, "bad-body"),
    (txm.TYPE_READING, {1: 1, 2: 0, 4: 1}, "bad-body"),
    (txm.TYPE_READING, {1: 1, 2: 0, 3: 1, 4: 1}, "bad-body"),
    (txm.TYPE_READING, {1: "21.5", 2: 0}, "bad-value"),
    (txm.TYPE_READING, {1: True, 2: 0}, "bad-value"),
    (txm.TYPE_READING, {1: 1 << 63, 2: 0}, "bad-value"),
    (txm.TYPE_READING, {1: 1, 2: 21}, "bad-scale"),
    (txm.TYPE_READING, {1: 1, 2: -21}, "bad-scale"),
    (txm.TYPE_READING, {1: 1, 2: 0, 3: 256}, "bad-channel"),
    (txm.TYPE_READING, {1: 1, 2: 0, 3: -1}, "bad-channel"),
    (txm.TYPE_TRANSFER, {1: bytes(16)}, "bad-body"),
    (txm.TYPE_TRANSFER, {1: bytes(16), 2: 1, 3: 0}, "bad-body"),
    (txm.TYPE_TRANSFER, {1: bytes(15), 2: 1}, "bad-to"),
    (txm.TYPE_TRANSFER, {1: "x" * 16, 2: 1}, "bad-to"),
    (txm.TYPE_TRANSFER, {1: bytes(16), 2: 0}, "bad-amount"),
    (txm.TYPE_TRANSFER, {1: bytes(16), 2: -5}, "bad-amount"),
    (txm.TYPE_TRANSFER, {1: bytes(16), 2: 1 << 63}, "bad-amount"),
    (99, {}, "bad-type"),
    (0, {}, "bad-type"),
])
def test_bad_bodies(alice: Device, type_: int, body: Any, detail: str) -> None:
    assert stateless(_signed(alice, type_, body)) == (errors.BAD_TX, detail)


def test_valid_bodies(alice: Device) -> None:
    for type_, body in [(txm.TYPE_READING, {1: -(1 << 63), 2: -20, 3: 0}),
                        (txm.TYPE_READING, {1: (1 << 63) - 1, 2: 20, 3: 255}),
                        (txm.TYPE_TRANSFER, {1: bytes(16), 2: (1 << 63) - 1}),
                        (txm.TYPE_REGISTER, {1: alice.pub})]:
        validate.check_stateless(_signed(alice, type_, body), DOMAIN)


@pytest.mark.parametrize("fields,detail", [
    ({1: 2, 2: DOMAIN, 3: 1, 4: 0}, "bad-fields"),
    ({1: 2, 2: DOMAIN, 3: 1, 4: 0, 5: {1: 1, 2: 0}, 6: 0}, "bad-fields"),
    ({1: 2, 2: DOMAIN, 3: 0, 4: 0, 5: {1: 1, 2: 0}}, "bad-seq"),
    ({1: 2, 2: DOMAIN, 3: 1, 4: -1, 5: {1: 1, 2: 0}}, "bad-fee"),
    ({1: 2, 2: "Demo!", 3: 1, 4: 0, 5: {1: 1, 2: 0}}, "bad-domain"),
    ({1: 2, 2: DOMAIN, 3: 1, 4: 0, 5: [1]}, "bad-body"),
])
def test_bad_payload_fields(alice: Device, fields: dict[int, Any], detail: str) -> None:
    assert stateless(_signed(alice, 0, None, fields=fields)) == (errors.BAD_TX, detail)


def test_register_sender_must_be_hash_of_key(alice: Device, bob: Device) -> None:
    m = cose.sign1(alice.priv, txm.payload(txm.TYPE_REGISTER, DOMAIN, 1, 0, {1: alice.pub}),
                   bob.id)
    assert stateless(m) == (errors.BAD_TX, "sender-mismatch")


# ---- stateful ------------------------------------------------------------------

def stateful(node: Node, message: bytes) -> tuple[str, str]:
    return reason_of(node.submit, message)


def test_bad_signature_signed_by_another_key(node: Node, alice: Device, bob: Device) -> None:
    forged = cose.sign1(bob.priv, txm.payload(txm.TYPE_READING, DOMAIN, 1, 0, {1: 1, 2: 0}),
                        alice.id)
    assert stateful(node, forged) == (errors.BAD_SIGNATURE, "bad-signature")
    # one flipped signature bit
    m = bytearray(alice.reading())
    m[-1] ^= 1
    assert stateful(node, bytes(m))[0] == errors.BAD_SIGNATURE


def test_high_s_twin_refused_original_accepted(node: Node, alice: Device) -> None:
    """(r, n - s) of a signed tx verifies as plain ECDSA under another tx id;
    sent first, it would take the device's seq from its own message."""
    m = alice.reading()
    s = int.from_bytes(m[-32:], "big")
    twin = m[:-32] + (N - s).to_bytes(32, "big")
    assert txm.tx_id(twin) != txm.tx_id(m)
    assert stateful(node, twin) == (errors.BAD_SIGNATURE, "high-s")
    assert node.submit(m) is True
    assert [t.id for t in node.pool.take(10)] == [txm.tx_id(m)]


def test_register_not_signed_by_registered_key(node: Node, alice: Device) -> None:
    carol = Device("carol")
    m = cose.sign1(alice.priv, txm.payload(txm.TYPE_REGISTER, DOMAIN, 1, 0, {1: carol.pub}),
                   carol.id)
    assert stateful(node, m)[0] == errors.BAD_SIGNATURE


def test_unknown_device(node: Node) -> None:
    stranger = Device("stranger")
    assert stateful(node, stranger.reading()) == (errors.UNKNOWN_DEVICE, errors.UNKNOWN_DEVICE)
    assert stateful(node, stranger.transfer(bytes(16), 1))[0] == errors.UNKNOWN_DEVICE


def test_replay_committed_and_pending(node: Node, alice: Device) -> None:
    first = alice.reading()
    assert node.submit(first)
    assert node.submit(first) is False  # same tx pending: dedupe, not an error
    other = alice.reading(7, seq=1)  # same seq, other content
    assert stateful(node, other) == (errors.REPLAY, errors.REPLAY)  # against the pending seq
    node.produce()
    assert stateful(node, first)[0] == errors.REPLAY  # committed: resend of a committed tx
    assert node.store.get_receipt(txm.tx_id(first)) is not None  # ... answered from the store
    assert stateful(node, other)[0] == errors.REPLAY
    assert node.submit(alice.reading(seq=10))  # gaps allowed
    assert stateful(node, alice.reading(9, seq=9))[0] == errors.REPLAY
    assert node.submit(alice.reading(seq=11))


def test_already_registered(node: Node, alice: Device) -> None:
    carol = Device("carol")
    assert node.submit(carol.register())
    # a second register of the same id while the first is pending
    assert stateful(node, carol.register()) == (errors.ALREADY_REGISTERED,
                                                errors.ALREADY_REGISTERED)
    node.produce()
    assert stateful(node, carol.register())[0] == errors.ALREADY_REGISTERED
    assert stateful(node, alice.register())[0] == errors.ALREADY_REGISTERED  # genesis account
    assert stateful(node, carol.register(seq=1))[0] == errors.REPLAY  # the committed one again


def test_readings_right_after_pending_register(node: Node) -> None:
    carol = Device("carol")
    node.submit_all([carol.register(), carol.reading(), carol.reading()])
    b = node.produce()
    assert len(b.txs) == 3 and not b.dropped
    assert node.state.get(carol.id) == DeviceRecord(carol.pub, 3, 0)


def test_fee_insufficient_funds_and_fee_too_low(tmp_path: Any, alice: Device) -> None:
    n = Node(tmp_path / "fee", {alice.pub: 10}, min_fee=2)
    try:
        assert reason_of(n.submit, alice.reading(fee=1)) == (errors.BAD_TX, "fee-too-low")
        assert reason_of(n.submit, alice.reading(fee=11)) == (errors.INSUFFICIENT_FUNDS, "fee")
        carol = Device("carol")
        assert reason_of(n.submit, carol.register(fee=2))[0] == errors.INSUFFICIENT_FUNDS
        assert n.submit(alice.reading(fee=10))
    finally:
        n.close()


def test_closed_admission(tmp_path: Any, alice: Device) -> None:
    n = Node(tmp_path / "closed", {alice.pub: 1}, admission="closed")
    try:
        assert reason_of(n.submit, Device("carol").register())[0] == errors.NOT_AUTHORIZED
        assert n.submit(alice.reading())
    finally:
        n.close()


def test_check_stateful_directly(alice: Device) -> None:
    state = State({alice.id: DeviceRecord(alice.pub, 5, 0)})
    t = validate.check_stateless(alice.reading(seq=6), DOMAIN)
    validate.check_stateful(t, state)
    assert reason_of(validate.check_stateful, t, state, 6)[0] == errors.REPLAY
    validate.check_stateful(t, state, 5, Rules(authority_id=bytes(16)))
