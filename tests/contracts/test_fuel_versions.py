"""Fuel does not depend on the CPython version: one block of contract calls
(tests/contracts/fuel_block.py: fuel limits swept around what each call
costs, so one statement more or less flips a call between done and
out-of-fuel, and out-of-fuel receipts carry the fuel used) commits to the same
state root and receipts root under CPython 3.11, 3.12 and 3.13.

The script runs with only the standard library and the checkout on its path
(an interpreter of pyenv has no third-party package; shared/p256 verifies the
signatures there). An interpreter that is not installed is skipped, except on
CI (env CI set), where all three must be present."""

from __future__ import annotations

import glob
import os
import subprocess
import sys
from pathlib import Path

import pytest

from shared import cbor

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = Path(__file__).with_name("fuel_block.py")
VERSIONS = ("3.11", "3.12", "3.13")


def interpreter(version: str) -> str | None:
    found = sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/%s.*/bin/python" % version)))
    if found:
        return found[-1]
    if "%d.%d" % sys.version_info[:2] == version:
        return sys.executable
    return None


def run_block(python: str, data_dir: Path) -> dict:
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(ROOT),
           "PYTHONDONTWRITEBYTECODE": "1", "PYTHONNOUSERSITE": "1"}
    out = subprocess.run([python, "-s", str(SCRIPT), str(data_dir)],
                         env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return cbor.loads(bytes.fromhex(out.stdout.strip()), max_size=1 << 20)


def test_same_roots_under_each_cpython(tmp_path: Path) -> None:
    pythons = {v: interpreter(v) for v in VERSIONS}
    missing = [v for v, p in pythons.items() if p is None]
    if missing and os.environ.get("CI"):
        pytest.fail("CPython %s not installed" % ", ".join(missing))
    found = {v: p for v, p in pythons.items() if p is not None}
    if len(found) < 2:
        pytest.skip("fewer than two CPython versions installed")
    results = {v: run_block(p, tmp_path / v) for v, p in found.items()}
    first = results[min(results)]
    statuses = [r[1] for r in first["receipts"]]
    assert "out-of-fuel" in statuses and "" in statuses  # the sweep straddles the cost
    for v, r in results.items():
        assert r["receipts"] == first["receipts"], v
        assert (r["state_root"], r["receipts_root"]) == (first["state_root"],
                                                         first["receipts_root"]), v
