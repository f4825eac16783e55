"""Run code under the MicroPython Unix port from pytest (subprocess helpers)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from hashlib import sha256
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "build"
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


def short_build() -> Path:
    """BUILD reached through a link whose path has the same length wherever the
    checkout is (in the temporary folder, named by a hash of ROOT): MicroPython
    interns the path of every module it imports, so with the plain path a dual
    test had a few hundred bytes less heap in a deeper checkout (a CI runner's)
    than here."""
    link = Path(tempfile.gettempdir()) / ("tl-" + sha256(str(ROOT).encode()).hexdigest()[:8])
    if not (link.is_symlink() and Path(os.readlink(link)) == BUILD):
        BUILD.mkdir(exist_ok=True)
        tmp = link.with_name(f"{link.name}.{os.getpid()}.tmp")
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(BUILD)
        os.replace(tmp, link)
    return link


def firmware_build() -> Path:
    """shared/, firmware/ and boards/ compiled by mpy-cross (cached per source mtime)."""
    from tools.build import build

    out = ROOT / "build" / "test-fw"
    build(out, "unix")
    return out


def compiled_tests(folder: Path) -> Path:
    """The modules of a test folder (tests and helpers, not conftest.py)
    compiled by mpy-cross into build/test-mpy/<folder>, without -O (asserts
    kept), cached per source mtime. A firmware test imports most of the
    firmware: what is left of 64 KiB is too fragmented to compile a test
    module from source on the device."""
    from tools.build import compile_stale

    out = ROOT / "build" / "test-mpy" / folder.relative_to(ROOT)
    out.mkdir(parents=True, exist_ok=True)
    sources = {src.stem: src for src in folder.glob("*.py") if src.name != "conftest.py"}
    for stale in out.glob("*.mpy"):  # a module since removed
        if stale.stem not in sources:
            stale.unlink()
    for stem, src in sources.items():
        compile_stale(src, out / (stem + ".mpy"), src.name)
    return out


def dual_module_run(rel_path: str, heap: str = HEAP,
                    optimize: bool = False) -> tuple[bool, int, str]:
    """Run a dual test module under MicroPython, with the firmware compiled as
    on a board: (it exited 0 with no test failed, the tests that passed, the
    output). Modules of tests/firmware run compiled too (compiled_tests)."""
    module = ROOT / rel_path
    if module.parent == TESTS / "firmware":
        # the runner imports the module by name from the module path's folder:
        # name it in the compiled folder, which holds only .mpy files
        module = compiled_tests(module.parent) / module.name
    build = firmware_build()
    if module.is_relative_to(BUILD):  # compiled: reached through the short link too
        module = short_build() / module.relative_to(BUILD)
    proc = run_micropython([str(TESTS / "mpy_runner.py"), "-p",
                            str(short_build() / build.relative_to(BUILD)), str(module)],
                           heap=heap, optimize=optimize)
    out = proc.stdout + proc.stderr
    last = [ln.split() for ln in out.splitlines() if ln.endswith(" failed")]  # "N passed, N failed"
    if not last:
        return False, 0, out
    return proc.returncode == 0 and last[-1][2] == "0", int(last[-1][0]), out


def run_dual_module(rel_path: str, heap: str = HEAP, optimize: bool = False) -> str:
    """dual_module_run, failing the pytest test if a test failed or none ran."""
    ok, passed, out = dual_module_run(rel_path, heap, optimize)
    assert ok, out
    assert passed > 0, "no test ran under MicroPython:\n" + out
    return out
