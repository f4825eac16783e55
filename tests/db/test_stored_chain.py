"""A chain stored by an earlier version (tests/fixtures/demo-chain, made by
`thingledger run` with the market on) verifies and reads the same today: a
change to the ledger's code must not break the chains people already have."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "demo-chain"
HEAD = "6d9d2bc99363e8e8a87881fff393fae4b6060c4e3fb67fef8e12798e43731552"
STATE_ROOT = "76ea3396a1e7c26dc650a17e67475f22445adfa6be22ee32288be9b84b5566e9"


def thingledger(*args: str) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("thingledger")
    base = [str(exe)] if exe.exists() else [sys.executable, "-m", "tools.cli"]
    return subprocess.run([*base, *args], capture_output=True, text=True, timeout=60)


def test_a_chain_stored_before_verifies(tmp_path: Path) -> None:
    data = tmp_path / "gateway"
    shutil.copytree(FIXTURE, data)
    out = thingledger("chain", "verify", "--data-dir", str(data))
    assert out.returncode == 0, out.stdout + out.stderr
    lines = dict(line.split(None, 1) for line in out.stdout.splitlines()[1:] if line.strip())
    assert out.stdout.startswith("chain OK")
    assert lines["blocks"].startswith("27 ") and lines["txs"] == "48"
    assert lines["head"].split()[-1] == HEAD
    assert lines["state"].split()[-1] == STATE_ROOT
