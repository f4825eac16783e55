"""A firmware build names each module's source by its module name (tools/build.py
SOURCE_NAMES): the board interns that name on import anyway, so a file name
("shared/cbor.py") no longer costs it one more interned string per module,
kept for good (bench/README.md, "lowest free heap during a receipt check").
Tracebacks still name the module."""

from __future__ import annotations

import re
from pathlib import Path

from tests.support.mpyrun import run_micropython
from tools.build import build, module_name

LOOP = "from firmware import node, wallet, mqtt\n"


def test_module_names():
    assert module_name(Path("shared/cbor.py")) == "shared.cbor"
    assert module_name(Path("firmware/__init__.py")) == "firmware"
    assert module_name(Path("boards/profile.py")) == "boards.profile"


def test_a_board_interns_no_source_file_names(tmp_path):
    fw = tmp_path / "fw"
    build(fw, "unix")
    flash = tmp_path / "flash"
    flash.mkdir()
    (flash / ".rom").symlink_to(fw)
    code = ("import sys, micropython\nsys.path.append('.rom')\n" + LOOP
            + "micropython.qstr_info(1)\n"
            + "from shared import cbor\ncbor.loads(b'\\x18')\n")  # truncated: DecodeError
    out = run_micropython(["-c", code], cwd=flash)
    names = re.findall(r"^Q\((.*)\)$", out.stdout, re.M)
    assert "shared.cbor" in names and ".rom/shared/cbor.mpy" in names, out.stdout
    assert [n for n in names if n.endswith(".py")] == [], names
    # the traceback of an error raised in a module names that module
    tb = out.stdout + out.stderr
    assert 'File "shared.cbor"' in tb and "DecodeError" in tb, tb
