"""The release manifest and chunks (shared/ota.py), dual: CPython and
MicroPython. A board refuses every malformed manifest or chunk with a typed
error naming why; the signature is checked under the pinned key its kid names."""
from mpcompat import expect_error, unhex

from shared import cbor, cose, errors, ota, p256, tx

PRIV = unhex("C9AFA9D845BA75166B5C215767B1D6934E50C3DB36E89B127B8A622B120F6721")
PRIV2 = unhex("0000000000000000000000000000000000000000000000000000000000000007")
_KEYS = []


def _pub(i=0):
    if not _KEYS:
        _KEYS.append(p256.public_key(PRIV))
        _KEYS.append(p256.public_key(PRIV2))
    return _KEYS[i]


def _manifest(**change):
    m = {ota.M_BOARD: "unix", ota.M_ABI: "6.3", ota.M_VERSION: 2, ota.M_PROTOCOL: 1,
         ota.M_FILES: ["firmware/node.mpy", 5, bytes(32), "shared/cbor.mpy", 0, bytes(32)],
         ota.M_CHUNK: 1024}
    for k, v in change.items():
        m[getattr(ota, k)] = v
    return m


def _signed(m, priv=PRIV, i=0):
    return cose.sign1(priv, cbor.dumps(m), tx.device_id(_pub(i)))


def test_a_signed_manifest_opens_under_its_pinned_key():
    m = ota.open_release(_signed(_manifest()), [_pub(1), _pub(0)])
    assert m[ota.M_VERSION] == 2 and m[ota.M_FILES][0] == "firmware/node.mpy"
    ota.check_fit(m, "unix", "6.3", 1)


def test_unknown_key_and_forged_signature_are_refused():
    s = _signed(_manifest(), PRIV2, 1)
    assert expect_error(ota.FirmwareError, ota.open_release, s, [_pub(0)]).detail == "unknown-key"
    forged = cbor.loads(_signed(_manifest()))
    forged.value[3] = bytes(63) + b"\x01"
    e = expect_error(errors.SignatureError, ota.open_release, cbor.dumps(forged), [_pub(0)])
    assert e.reason == errors.BAD_SIGNATURE


def test_fit_refusals():
    m = _manifest()
    for args, detail in ((("esp32", "6.3", 0), "wrong-board"), (("unix", "6.2", 0), "wrong-abi"),
                         (("unix", "6.3", 2), "downgrade"), (("unix", "6.3", 5), "downgrade")):
        assert expect_error(ota.FirmwareError, ota.check_fit, m, *args).detail == detail
    e = expect_error(ota.FirmwareError, ota.check_fit, _manifest(M_PROTOCOL=9), "unix", "6.3", 0)
    assert e.detail == "protocol" and e.reason == "bad-firmware"


def test_bad_manifests_are_refused():
    cases = [
        (_manifest(M_VERSION=0), "bad-manifest"),
        (_manifest(M_CHUNK=10), "bad-manifest"),
        (_manifest(M_FILES=[]), "bad-manifest"),
        (_manifest(M_FILES=["firmware/a.mpy", 1]), "bad-manifest"),
        (_manifest(M_FILES=["firmware/a.mpy", 1, bytes(31)]), "bad-manifest"),
        (_manifest(M_NEXT_KEY=bytes(5)), "bad-next-key"),
        ({99: 1}, "bad-manifest"),
    ]
    for p in ("../main.mpy", "firmware/../../x.mpy", "/firmware/a.mpy", "firmware/a.py",
              "main.mpy", "firmware//a.mpy", "firmware/.a.mpy", "Firmware/a.mpy",
              "firmware/a b.mpy"):
        cases.append((_manifest(M_FILES=[p, 1, bytes(32)]), "bad-path"))
    cases.append((_manifest(M_FILES=["shared/a.mpy", 1, bytes(32), "shared/a.mpy", 1,
                                     bytes(32)]), "bad-path"))
    for m, detail in cases:
        assert expect_error(ota.FirmwareError, ota.check_manifest, m).detail == detail, m


def test_chunks():
    rid = ota.release_id(b"manifest")
    other = ota.release_id(b"another")
    good = cbor.dumps([rid, 1, 2, b"abcd"])
    assert bytes(ota.open_chunk(good, rid, 1, 2, 4)) == b"abcd"
    for msg, detail in ((cbor.dumps([rid, 1, 2, b"abc"]), "truncated"),
                        (cbor.dumps([rid, 1, 2, b"abcde"]), "oversized"),
                        (cbor.dumps([other, 1, 2, b"abcd"]), "other-release"),
                        (cbor.dumps([rid, 1, 3, b"abcd"]), "bad-chunk"),
                        (cbor.dumps([rid, 0, 2, b"abcd"]), "bad-chunk"),
                        (cbor.dumps([rid, 1, 2]), "bad-chunk"),
                        (cbor.dumps({1: 2}), "bad-chunk")):
        assert expect_error(ota.FirmwareError, ota.open_chunk, msg, rid, 1, 2, 4).detail == detail
    expect_error(errors.DecodeError, ota.open_chunk, good[:-1], rid, 1, 2, 4)


def test_topics_and_abi():
    rid = bytes(range(8))
    assert ota.manifest_topic("tl/d/fw/unix", rid) == "tl/d/fw/unix/0001020304050607"
    assert ota.chunk_topic("tl/d/fw/unix", rid, 3, 17) == "tl/d/fw/unix/0001020304050607/3/17"
    assert ota.abi_of(0xB06) == "6.3"
