"""`thingledger firmware release` and its refusals (docs/OTA.md): the
release folder holds the mpy-cross build and a manifest signed by --key that
names every file with its size and hash; a folder changed afterwards is
refused by `publish` before anything goes out."""

from __future__ import annotations

import hashlib

import pytest

from shared import cose, ota
from tests.support.brokers import free_port
from tools import ota as release
from tools.build import mpy_abi
from tools.cli.app import main as cli
from tools.keys import new_key


def run(capsys, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = cli(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.mark.micropython  # mpy-cross
def test_release_writes_a_signed_build(tmp_path, capsys):
    key = new_key(tmp_path / "mfr.key")
    rc, out, err = run(capsys, "firmware", "release", "--key", str(tmp_path / "mfr.key"),
                       "--board", "rp2040", "--version", "4", "--out", str(tmp_path / "rel"))
    assert rc == 0, err
    assert "release rp2040 v4" in out
    signed = (tmp_path / "rel" / release.MANIFEST).read_bytes()
    m = ota.open_release(signed, [key.public])
    assert m[ota.M_BOARD] == "rp2040" and m[ota.M_VERSION] == 4 and m[ota.M_ABI] == mpy_abi()
    entries = release.entries(m)
    paths = {p for p, _, _ in entries}
    assert {"firmware/node.mpy", "firmware/ota.mpy", "boards/rp2040.mpy", "boards/wlan.mpy",
            "boards/profile.mpy"} <= paths
    assert not [p for p in paths if "otaboot" in p or "/" not in p]  # never the boot file
    for path, size, digest in entries:
        data = (tmp_path / "rel" / "files" / path).read_bytes()
        assert len(data) == size and hashlib.sha256(data).digest() == digest
    assert cose.parse1(signed).kid == key.id

    # a file changed after signing: publish refuses the folder, nothing is sent
    (tmp_path / "rel" / "files" / "firmware" / "node.mpy").write_bytes(b"changed")
    url = f"mqtt://127.0.0.1:{free_port()}"  # nothing listens: it must not get that far
    rc, out, err = run(capsys, "firmware", "publish", "--dir", str(tmp_path / "rel"), "--key",
                       str(tmp_path / "mfr.key"), "--broker", url, "--domain", "demo")
    assert rc == 1 and "firmware/node.mpy differs from the signed manifest" in err


def test_release_refusals(tmp_path, capsys):
    new_key(tmp_path / "mfr.key")
    base = ["firmware", "release", "--key", str(tmp_path / "mfr.key"), "--out",
            str(tmp_path / "rel")]
    rc, _, err = run(capsys, *base, "--board", "unix", "--version", "0")
    assert rc == 2 and "--version" in err
    with pytest.raises(SystemExit):  # argparse: not a board a release is built for
        cli([*base, "--board", "esp8266", "--version", "1"])
    rc, _, err = run(capsys, *base, "--board", "unix", "--version", "1", "--next-key", "00" * 33)
    assert rc == 2 and "--next-key" in err
    rc, _, err = run(capsys, "firmware", "publish", "--dir", str(tmp_path / "nothing"), "--key",
                     str(tmp_path / "mfr.key"), "--domain", "demo")
    assert rc == 1 and "no release here" in err
