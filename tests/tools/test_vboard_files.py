"""A virtual board's flash folder is its user's only (0700) and the wallet the
board writes in it is 0600, whatever the umask of whoever starts it
(tools/vboard.py: the MicroPython Unix port has no chmod)."""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.support.brokers import free_port
from tests.support.mpyrun import firmware_build
from tests.support.waits import drain, lines, wait_line
from tools.vboard import KEY_FILES, VirtualBoard


def mode(path) -> int:
    return path.stat().st_mode & 0o777


@pytest.mark.micropython
def test_a_started_board_writes_its_wallet_0600(tmp_path):
    vb = VirtualBoard("b", tmp_path / "b")
    vb.configure(domain="demo", authority_hex="02" + "11" * 32, host="127.0.0.1",
                 port=free_port())  # nobody listens: the board makes its wallet, then waits
    old = os.umask(0o022)  # a usual login umask: files 0644 unless the launcher says otherwise
    try:
        proc = vb.start(firmware_build())
    finally:
        os.umask(old)
    q, seen = lines(proc), []
    try:
        wait_line(q, r"broker unreachable", 30, seen)
        assert mode(vb.flash / "wallet.key") == 0o600
        assert mode(vb.flash) == 0o700
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        drain(q, seen, 1)


def test_configure_tightens_a_flash_folder_from_an_older_run(tmp_path):
    flash = tmp_path / "b"
    flash.mkdir(mode=0o755)
    flash.chmod(0o755)
    for name in KEY_FILES:
        (flash / name).write_bytes(bytes(48))
        (flash / name).chmod(0o644)
    VirtualBoard("b", flash).configure(domain="demo", authority_hex="02" + "11" * 32,
                                       host="127.0.0.1", port=1883)
    assert mode(flash) == 0o700
    assert [mode(flash / n) for n in KEY_FILES] == [0o600, 0o600]
