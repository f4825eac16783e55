"""`make run`'s liar (`thingledger run --liars 1`): a virtual board running
the real firmware, configured to equivocate (firmware/liar.py), is banned
live: the gateway files the proof itself, shows the level change, refuses
the board's later txs, and `thingledger trust` explains why. An honest board
beside it keeps its level."""

from __future__ import annotations

import re
import subprocess

import pytest

from tests.support.brokers import free_port
from tools.build import tool


@pytest.mark.micropython
def test_run_bans_an_equivocating_board_live(tmp_path):
    url = f"mqtt://127.0.0.1:{free_port()}"
    p = subprocess.run([tool("thingledger"), "run", "--no-http", "--listen", url, "--boards", "1",
                        "--no-market", "--liars", "1", "--interval-ms", "500",
                        "--block-interval", "0.3", "--seconds", "12"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=120)
    out = p.stdout
    assert p.returncode == 0, out + p.stderr
    ids = dict(re.findall(r"((?:board|liar)-\d) +online id=(\w{32})", out))
    assert sorted(ids) == ["board-1", "liar-1"], out
    liar, honest = ids["liar-1"], ids["board-1"]
    assert re.search(r"liar-1 +equivocate seq=(\d+)", out), out
    assert f"equivocation by {liar[:8]}" in out, out
    assert re.search(rf"trust {liar[:8]} probation -> banned \(proof:tx-equivocation\)", out), out
    assert re.search(r"liar-1 +rejected seq=\d+ reason=banned", out), out
    assert f"trust {honest[:8]} probation -> banned" not in out
    assert re.search(r"board-1 +receipt-verified seq=\d+", out.split("-> banned")[1]), out
    t = subprocess.run([tool("thingledger"), "trust", liar], cwd=tmp_path, capture_output=True,
                       text=True, timeout=60)
    assert t.returncode == 0 and "level     banned" in t.stdout, t.stdout + t.stderr
    assert "proof:tx-equivocation" in t.stdout
    t = subprocess.run([tool("thingledger"), "trust", "--list"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=60)
    rows = {r.split()[0]: r.split()[1] for r in t.stdout.splitlines()[1:-1]}
    assert rows[liar] == "banned" and rows[honest] == "probation", t.stdout
    v = subprocess.run([tool("thingledger"), "chain", "verify"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=60)
    assert v.returncode == 0, v.stdout + v.stderr
