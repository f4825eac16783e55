"""`thingledger run` as `make run` starts it: default relative data folder
(var/gateway under the current directory), embedded broker, virtual boards
running the real firmware. It shows boards' receipts verified and blocks
committed as they happen, stops cleanly, and a second run continues the same
chain with the same board wallets."""

from __future__ import annotations

import re
import subprocess

import pytest
from brokers import free_port

from tools.build import tool


def run_once(cwd, url: str, seconds: float) -> str:
    p = subprocess.run([tool("thingledger"), "run", "--listen", url, "--boards", "2",
                        "--interval-ms", "400", "--block-interval", "0.3", "--seconds",
                        str(seconds)], cwd=cwd, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    return p.stdout


@pytest.mark.micropython
def test_run_twice_continues_the_chain(tmp_path):
    url = f"mqtt://127.0.0.1:{free_port()}"
    first = run_once(tmp_path, url, 10)
    for board in ("board-1", "board-2"):
        assert re.search(rf"{board} +receipt-verified seq=\d+ height=\d+ status=0", first), first
    end = re.search(r"stopped at height (\d+) hash (\w+)", first)
    assert end and int(end[1]) > 0, first
    ids = set(re.findall(r"online id=(\w{32})", first))
    assert len(ids) == 2

    second = run_once(tmp_path, url, 6)
    assert f"chain demo at height {end[1]} hash {end[2]}" in second, second
    assert set(re.findall(r"online id=(\w{32})", second)) == ids  # same wallets
    assert int(re.search(r"stopped at height (\d+)", second)[1]) > int(end[1])
    v = subprocess.run([tool("thingledger"), "chain", "verify"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=60)
    assert v.returncode == 0, v.stdout + v.stderr
