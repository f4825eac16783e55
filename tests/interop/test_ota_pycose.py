"""The signed release manifest (shared/ota.py, tools/ota.py) is a plain
COSE_Sign1: pycose verifies what `thingledger firmware release` writes, and
cbor2 reads its payload as the manifest; what pycose signs (a manifest signed
with another COSE library) opens with the board's code."""

from pathlib import Path

import cbor2
from pycose.algorithms import Es256
from pycose.headers import KID, Algorithm
from pycose.keys import EC2Key
from pycose.keys.curves import P256
from pycose.messages import Sign1Message

from shared import ota, p256, tx
from tests.support.pycose_keys import pycose_key
from tools import ota as release
from tools.keys import new_key


def _files(root: Path) -> Path:
    for path, data in (("firmware/node.mpy", b"M\x06node"), ("shared/cbor.mpy", b"M\x06cbor" * 300),
                       ("boards/unix.mpy", b"")):
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes(data)
    return root


def test_pycose_verifies_a_release_manifest(tmp_path):
    key = new_key(tmp_path / "mfr.key")
    nxt = p256.keygen()[1]
    rel = release.write_release(tmp_path / "rel", _files(tmp_path / "src"), key, "unix", 7,
                                abi="6.3", next_key=nxt)
    signed = (tmp_path / "rel" / release.MANIFEST).read_bytes()
    msg = Sign1Message.decode(signed)
    msg.key = pycose_key(key.public)
    assert msg.verify_signature()
    assert msg.phdr[KID] == key.id
    m = cbor2.loads(msg.payload)
    assert m[ota.M_VERSION] == 7 and m[ota.M_BOARD] == "unix" and m[ota.M_NEXT_KEY] == nxt
    files = m[ota.M_FILES]
    assert files[0::3] == ["boards/unix.mpy", "firmware/node.mpy", "shared/cbor.mpy"]
    assert files[1::3] == [0, 6, 1800]
    assert rel.rid == ota.release_id(signed)
    # a changed byte: pycose refuses it as well as the board
    bad = bytearray(signed)
    bad[-1] ^= 1
    msg = Sign1Message.decode(bytes(bad))
    msg.key = pycose_key(key.public)
    assert not msg.verify_signature()


def test_the_board_opens_a_manifest_pycose_signed():
    key = EC2Key.generate_key(crv=P256)
    pub = bytes([2 + (key.y[-1] & 1)]) + key.x
    m = {ota.M_BOARD: "esp32", ota.M_ABI: "6.3", ota.M_VERSION: 3, ota.M_PROTOCOL: 1,
         ota.M_FILES: ["firmware/main.mpy", 10, bytes(32)], ota.M_CHUNK: 512}
    from shared import cbor, es256_cryptography

    msg = Sign1Message(phdr={Algorithm: Es256, KID: tx.device_id(pub)}, uhdr={},
                       payload=cbor.dumps(m), key=key)
    encoded = msg.encode(tag=True)
    # a high-s signature is refused (shared/cose.py): its low-s twin, which pycose verifies too
    encoded = encoded[:-64] + es256_cryptography.low_s(encoded[-64:])
    twin = Sign1Message.decode(encoded)
    twin.key = pycose_key(pub)
    assert twin.verify_signature()
    assert ota.open_release(encoded, [pub]) == m
