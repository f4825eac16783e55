"""Run code under the MicroPython Unix port from pytest (subprocess helpers)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TESTS = ROOT / "tests"
HEAP = "64k"


def micropython_exe() -> str:
    """The `micropython` executable installed in this virtualenv (or on PATH)."""
    beside = Path(sys.executable).with_name("micropython")
    if beside.exists():
        return str(beside)
    found = shutil.which("micropython")
    if not found:
        raise RuntimeError("micropython not installed: run `make test`")
    return found


def run_micropython(args: list[str], heap: str = HEAP, timeout: float = 120,
                    cwd: Path | None = None, optimize: bool = False) -> subprocess.CompletedProcess:
    cmd = [micropython_exe(), "-X", "heapsize=" + heap]
    if optimize:
        cmd.append("-O")
    return subprocess.run(cmd + args, cwd=cwd or ROOT, capture_output=True, text=True,
                          timeout=timeout)


def firmware_build() -> Path:
    """shared/, firmware/ and boards/ compiled by mpy-cross (cached per source mtime)."""
    from tools.build import build

    out = ROOT / "build" / "test-fw"
    build(out, "unix")
    return out


def run_dual_module(rel_path: str, heap: str = HEAP, optimize: bool = False) -> str:
    """Run a dual test module under MicroPython, with the firmware compiled as
    on a board; fail the pytest test if any test failed."""
    proc = run_micropython([str(TESTS / "mpy_runner.py"), "-p", str(firmware_build()),
                            str(ROOT / rel_path)], heap=heap, optimize=optimize)
    out = proc.stdout + proc.stderr
    last = [ln for ln in out.splitlines() if ln.endswith(" failed")]
    assert proc.returncode == 0 and last and last[-1].split()[2] == "0", out
    assert int(last[-1].split()[0]) > 0, "no test ran under MicroPython:\n" + out
    return out
