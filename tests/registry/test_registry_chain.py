"""Registry rules as pure functions: every refusal reason, duplicates,
forged manufacturer records, state roots, light-node record proofs."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from gateway.registry import chain
from gateway.registry.chain import Overlay, RegistryState
from shared import cbor, errors, merkle, messages
from shared import tx as txm
from tests.support.registry_support import T0, YEAR, Mfr, device_pub


def run(state: RegistryState, *msgs: bytes, height: int = 1) -> chain.Executed:
    """Execute a block's worth of messages and fold it into `state`."""
    ex = chain.execute(list(msgs), state, height)
    state.apply(ex.overlay)
    return ex


def refusal(msg: bytes, view: Any = None, pending_seq: int | None = None) -> errors.TLError:
    with pytest.raises(errors.TLError) as ei:
        t = chain.check_stateless(msg)
        chain.check_stateful(t, view if view is not None else RegistryState(), pending_seq)
    return ei.value


@pytest.fixture
def acme() -> Mfr:
    return Mfr("acme")


@pytest.fixture
def globex() -> Mfr:
    return Mfr("globex")


@pytest.fixture
def state(acme: Mfr, globex: Mfr) -> RegistryState:
    s = RegistryState()
    ex = run(s, acme.register("Acme"), globex.register("Globex"))
    assert not ex.dropped and [r.status for r in ex.receipts] == [0, 0]
    return s


# ---- stateless ------------------------------------------------------------------


def test_envelope_refusals(acme: Mfr) -> None:
    assert refusal(b"\xff\x00").reason == errors.BAD_CBOR
    assert refusal(bytes(5000)).reason == errors.TOO_LARGE
    assert refusal(cbor.dumps([1, 2, 3])).reason == errors.BAD_COSE
    e = refusal(acme.register(domain="demo"))
    assert (e.reason, e.detail) == (errors.WRONG_DOMAIN, "wrong-domain")


@pytest.mark.parametrize("body,detail", [
    ({1: device_pub("d")}, "bad-body"),
    ({1: device_pub("d"), 2: "m", 3: "s", 4: T0, 5: T0, 6: 0}, "bad-body"),
    ({1: b"\x02" + b"\xff" * 32, 2: "m", 3: "s", 4: T0, 5: T0}, "bad-pubkey"),
    ({1: device_pub("d")[1:], 2: "m", 3: "s", 4: T0, 5: T0}, "bad-pubkey"),
    ({1: device_pub("d"), 2: "", 3: "s", 4: T0, 5: T0}, "bad-model"),
    ({1: device_pub("d"), 2: "x" * 65, 3: "s", 4: T0, 5: T0}, "bad-model"),
    ({1: device_pub("d"), 2: 7, 3: "s", 4: T0, 5: T0}, "bad-model"),
    ({1: device_pub("d"), 2: "m", 3: " s1", 4: T0, 5: T0}, "bad-serial"),
    ({1: device_pub("d"), 2: "m", 3: "s\n1", 4: T0, 5: T0}, "bad-serial"),
    ({1: device_pub("d"), 2: "m", 3: "s", 4: -1, 5: T0}, "bad-manufactured"),
    ({1: device_pub("d"), 2: "m", 3: "s", 4: True, 5: T0}, "bad-manufactured"),
    ({1: device_pub("d"), 2: "m", 3: "s", 4: T0, 5: T0 - 1}, "bad-warranty"),
    ({1: device_pub("d"), 2: "m", 3: "s", 4: T0, 5: chain.TIME_MAX + 1}, "bad-warranty"),
])
def test_device_record_schema(acme: Mfr, body: dict[int, Any], detail: str) -> None:
    e = refusal(acme.make(txm.TYPE_DEVICE_RECORD, body))
    assert (e.reason, e.detail) == (errors.BAD_TX, detail)


def test_mfr_register_schema(acme: Mfr, globex: Mfr) -> None:
    def detail(body: dict[int, Any], **kw: Any) -> str:
        e = refusal(acme.make(txm.TYPE_MFR_REGISTER, body, **kw))
        assert e.reason == errors.BAD_TX
        return e.detail

    assert detail({1: acme.pub}) == "bad-body"
    assert detail({1: acme.pub, 2: ""}) == "bad-name"
    assert detail({1: acme.pub, 2: "A" * 65}) == "bad-name"
    assert detail({1: acme.pub, 2: "Acme\x1b[31m"}) == "bad-name"
    assert detail({1: globex.pub, 2: "Acme"}) == "sender-mismatch"
    assert detail({1: acme.pub, 2: "Acme"}, fee=1) == chain.FEE_NOT_ZERO
    assert detail({1: acme.pub, 2: "Acme"}, seq=0) == "bad-seq"
    e = refusal(acme.make(txm.TYPE_READING, {1: 1, 2: 0}))
    assert (e.reason, e.detail) == (errors.BAD_TX, "bad-type")
    # the longest name and unicode pass
    t = chain.check_stateless(acme.make(txm.TYPE_MFR_REGISTER, {1: acme.pub, 2: "Ä" * 64}))
    assert t.body[2] == "Ä" * 64


# ---- stateful -------------------------------------------------------------------


def test_unregistered_manufacturer_is_unknown_device(state: RegistryState) -> None:
    rogue = Mfr("rogue")
    e = refusal(rogue.record("d1", "SN-1"), state)
    assert (e.reason, e.detail) == (errors.UNKNOWN_DEVICE, chain.NOT_MANUFACTURER)


def test_forged_sender_is_bad_signature(state: RegistryState, acme: Mfr) -> None:
    """Key A signs a record that names registered manufacturer B as sender."""
    forger = Mfr("forger")
    e = refusal(forger.record("d1", "SN-1", sender=acme.id), state)
    assert e.reason == errors.BAD_SIGNATURE
    # and a self-registration whose body key is not the signing key
    victim = Mfr("victim")
    msg = txm.make(forger.priv, victim.id, txm.TYPE_MFR_REGISTER, chain.DOMAIN, 1, 0,
                   {1: victim.pub, 2: "Victim"})
    assert refusal(msg, state).reason == errors.BAD_SIGNATURE


def test_replay_and_manufacturer_twice(state: RegistryState, acme: Mfr) -> None:
    assert refusal(acme.record("d1", "SN-1", seq=1), state).reason == errors.REPLAY
    e = refusal(acme.register("Acme again"), state)
    assert (e.reason, e.detail) == (errors.ALREADY_REGISTERED, "manufacturer")
    assert refusal(acme.register(seq=1), state).reason == errors.REPLAY
    # pending seq raises the floor
    assert refusal(acme.record("d1", "SN-1", seq=5), state, pending_seq=5).reason \
        == errors.REPLAY
    chain.check_stateful(chain.check_stateless(acme.record("d1", "SN-1", seq=6)), state, 5)


# ---- execution ------------------------------------------------------------------


def test_record_and_lookup_fields(state: RegistryState, acme: Mfr) -> None:
    msg = acme.record("d1", "SN-1", model="TH-2", warranty_end=T0 + YEAR)
    ex = run(state, msg, height=2)
    assert ex.receipts[0].status == messages.STATUS_OK and not ex.attempts
    did = txm.device_id(device_pub("d1"))
    d = state.device(did)
    assert d == chain.DeviceEntry(device_pub("d1"), acme.id, "TH-2", "SN-1", T0, T0 + YEAR, 2,
                                  txm.tx_id(msg))
    rec = chain.record(did, d, "Acme")
    assert rec.warranty_valid(T0 + YEAR) and not rec.warranty_valid(T0 + YEAR + 1)
    assert state.manufacturer(acme.id).last_seq == acme.seq
    assert state.root() == merkle.root([leaf for _, leaf in state.leaves()])


@pytest.mark.parametrize("who,dev,serial,conflict", [
    ("acme", "d1", "SN-2", "key"),       # same key, same manufacturer
    ("globex", "d1", "SN-2", "key"),     # same key, other manufacturer
    ("globex", "d2", "SN-1", "serial"),  # same serial, other manufacturer
    ("acme", "d2", "SN-1", "serial"),    # same serial, same manufacturer
    ("globex", "d1", "SN-1", "key"),     # both: the key is reported
])
def test_duplicates_are_included_failed(state: RegistryState, acme: Mfr, globex: Mfr,
                                        who: str, dev: str, serial: str,
                                        conflict: str) -> None:
    run(state, acme.record("d1", "SN-1"), height=2)
    original = dict(state.devices)
    root_before = state.root()
    m = acme if who == "acme" else globex
    msg = m.record(dev, serial, model="FAKE")
    ex = run(state, msg, height=3)
    r = ex.receipts[0]
    d1 = txm.device_id(device_pub("d1"))
    assert (r.status, r.reason) == (messages.STATUS_FAILED, errors.ALREADY_REGISTERED)
    assert r.events == [["conflict", d1, conflict]]
    assert r.leaf == messages.receipt_leaf(txm.tx_id(msg), r.status, r.reason, r.events)
    (a,) = ex.attempts
    assert (a.tx_id, a.height, a.idx, a.manufacturer_id, a.device_id, a.serial, a.conflict_id,
            a.conflict) == (txm.tx_id(msg), 3, 0, m.id, txm.device_id(device_pub(dev)),
                            serial, d1, conflict)
    assert state.devices == original  # nothing changed but the signer's seq
    assert state.manufacturer(m.id).last_seq == m.seq
    assert state.root() != root_before
    # the consumed seq cannot be replayed
    assert refusal(m.record("d9", "SN-9", seq=m.seq), state).reason == errors.REPLAY


def test_duplicate_within_one_block(state: RegistryState, acme: Mfr, globex: Mfr) -> None:
    ex = run(state, acme.record("d1", "SN-1"), globex.record("d1", "SN-1"), height=2)
    assert [r.status for r in ex.receipts] == [0, 1]
    assert state.device(txm.device_id(device_pub("d1"))).manufacturer == acme.id


def test_not_includable_are_dropped(state: RegistryState, acme: Mfr) -> None:
    good = acme.record("d1", "SN-1")
    ex = chain.execute([good, acme.record("d2", "SN-2", seq=1), b"junk"], state, 2)
    assert [t.id for t in ex.txs] == [txm.tx_id(good)]
    assert [e.reason for _, e in ex.dropped] == [errors.REPLAY, errors.BAD_CBOR]


def test_overlay_root_matches_state(state: RegistryState, acme: Mfr) -> None:
    ov = Overlay(state)
    for i in range(5):
        t = chain.check_stateless(acme.record("x%d" % i, "SX-%d" % i))
        chain.apply(ov, t, 2, i)
    root = ov.root()
    state.apply(ov)
    assert root == state.root()
    fresh = RegistryState(state.mfrs, state.devices)
    assert fresh.root() == root
    assert merkle.root([leaf for _, leaf in fresh.leaves()]) == root


def test_record_proof_for_light_nodes(state: RegistryState, acme: Mfr) -> None:
    run(state, acme.record("d1", "SN-1"), acme.record("d2", "SN-2"), height=2)
    keys = [k for k, _ in state.leaves()]
    did = txm.device_id(device_pub("d2"))
    idx = keys.index(b"\x01" + did)
    fields = chain.header_fields(height=2, prev_hash=bytes(32), time=T0, tx_root=bytes(32),
                                 receipts_root=bytes(32), state_root=state.root(),
                                 proposer=chain.ANONYMOUS_MINER, target=(1 << 64) - 1)
    hb = cbor.dumps(fields)
    levels = merkle.levels(state.leaf_hashes())
    p = chain.RecordProof(hb, chain.device_leaf(did, state.device(did)), idx, len(keys),
                          merkle.proof(levels, idx))
    h, got_id, entry = chain.check_record_proof(p, did)
    assert got_id == did and entry == state.device(did) and h["height"] == 2
    with pytest.raises(errors.ProofError, match="other-device"):
        chain.check_record_proof(p, txm.device_id(device_pub("d1")))
    forged = chain.device_leaf(did, replace(entry, warranty_end=entry.warranty_end + YEAR))
    with pytest.raises(errors.ProofError, match="bad-proof"):
        chain.check_record_proof(chain.RecordProof(hb, forged, idx, len(keys), p.path))
    hard = cbor.dumps(dict(fields, target=1))
    with pytest.raises(errors.ProofError, match="bad-pow"):
        chain.check_record_proof(chain.RecordProof(hard, p.leaf, idx, len(keys), p.path))


def test_decode_header_schema() -> None:
    good = chain.genesis_fields(T0, 5)
    assert chain.decode_header(cbor.dumps(good)) == good
    for bad in ({k: v for k, v in good.items() if k != "nonce"},
                dict(good, target=0), dict(good, domain="demo"), dict(good, proposer=b"x"),
                dict(good, prev_hash=b"short"), dict(good, time=-1)):
        with pytest.raises(errors.ProofError):
            chain.decode_header(cbor.dumps(bad))
