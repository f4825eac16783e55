"""A virtual board reaches its firmware build through a short link in its
flash folder (tools/vboard.py ROM_LINK), never by the build's absolute path:
MicroPython interns every imported module's path, so a board started from a
deep folder (a test's temporary folder) had ~1 KB less heap than the same
board in `make run`, and ran out of it checking receipts (bench/README.md,
"Lowest free heap during a receipt check")."""

from __future__ import annotations

import re
import subprocess

import pytest

from tests.support.mpyrun import firmware_build, micropython_exe
from tools.vboard import ROM_LINK, VirtualBoard


def test_the_boot_line_names_the_link_not_the_build(tmp_path):
    build = tmp_path / ("deep" * 20) / "build"
    build.mkdir(parents=True)
    vb = VirtualBoard("b", tmp_path / "b")
    cmd = vb.command(build)
    boot = cmd[cmd.index("-c") + 1]
    assert str(build) not in boot
    assert re.search(r"sys\.path\.append\('%s'\)" % re.escape(ROM_LINK), boot)
    assert (vb.flash / ROM_LINK).resolve() == build.resolve()
    other = tmp_path / "other"
    other.mkdir()
    vb.command(other)  # another build: the link follows
    assert (vb.flash / ROM_LINK).resolve() == other.resolve()


@pytest.mark.micropython
def test_modules_load_by_the_short_path(tmp_path):
    vb = VirtualBoard("b", tmp_path / ("deep" * 20) / "b")
    vb.link_build(firmware_build())
    out = subprocess.run([micropython_exe(), "-X", "heapsize=64k", "-c",
                          "import sys\nsys.path.append(%r)\nfrom shared import cbor\n"
                          "print(cbor.__file__)" % ROM_LINK],
                         cwd=vb.flash, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ROM_LINK + "/shared/cbor.mpy"
