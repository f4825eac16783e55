"""Key pinning at provisioning (docs/OTA.md): `thingledger board flash
--ota-key` writes the keys a board accepts releases from, beside the boot
file (main.py + otaboot.mpy at the flash root, outside every release)."""

from __future__ import annotations

import pytest

from tests.support.vboard_pty import PtyBoard
from tools import board as tb
from tools.cli.app import main as cli
from tools.keys import new_key


@pytest.mark.micropython
def test_flash_pins_the_release_keys(tmp_path, capsys):
    k1, k2 = new_key(tmp_path / "a.key"), new_key(tmp_path / "b.key")
    b = PtyBoard(tmp_path / "flash", tmp_path / "ttyVB").start()
    try:
        base = ["board", "flash", "--port", b.port, "--board", "unix", "--domain", "demo",
                "--data-dir", str(tmp_path / "none"), "--broker-host", "127.0.0.1",
                "--broker-port", "1883"]
        assert cli(base + ["--ota-key", k1.public.hex(), "--ota-key", k2.public.hex()]) == 0
        assert "2 pinned release key(s)" in capsys.readouterr().out
        assert (b.flash / "ota" / "keys").read_bytes() == k1.public + k2.public
        assert (b.flash / "main.py").read_text() == tb.MAIN_PY
        assert (b.flash / "otaboot.mpy").exists()
        # over USB again: the keys given replace the pinned ones (the recovery path)
        assert cli(base + ["--ota-key", k2.public.hex()]) == 0
        assert (b.flash / "ota" / "keys").read_bytes() == k2.public
        # a flash without --ota-key keeps them
        assert cli(base) == 0
        assert (b.flash / "ota" / "keys").read_bytes() == k2.public
        assert cli(base + ["--ota-key", "00" * 33]) == 2
    finally:
        b.stop()
