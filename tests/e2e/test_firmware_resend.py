"""The firmware keeps what has no receipt and resends it after a reconnect
(issue 3): the gateway and its embedded broker are SIGKILLed while a virtual
board (real firmware, 64 KiB heap) is sending readings; the board keeps
signing into its flash outbox while offline, reconnects with backoff when
they are back, and resends the same bytes (same seq, same tx id). Every
reading it logged is then in the chain exactly once, and the chain verifies."""

from __future__ import annotations

import re
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from gateway.db.genesis_files import load as load_genesis
from tests.support.brokers import free_port
from tests.support.mpyrun import firmware_build
from tests.support.waits import lines, wait_line
from tools.build import tool
from tools.vboard import VirtualBoard


def start_gateway(data: Path, url: str) -> tuple[subprocess.Popen, object, list[str]]:
    gw = subprocess.Popen([tool("thingledger"), "run", "--no-boards", "--no-http", "--quiet",
                           "--listen", url,
                           "--data-dir", str(data), "--block-interval", "0.3"],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    q, seen = lines(gw), []
    wait_line(q, r"chain demo at height", 30, seen)
    return gw, q, seen


@pytest.mark.micropython
def test_board_resends_after_gateway_crash(tmp_path):
    data = tmp_path / "gateway"
    url = f"mqtt://127.0.0.1:{free_port()}"
    gw, _, _ = start_gateway(data, url)
    board = VirtualBoard("crash", tmp_path / "board")
    board.configure(domain="demo", authority_hex=load_genesis(data / "genesis.toml").authority.hex(),
                    host="127.0.0.1", port=int(url.rsplit(":", 1)[1]), interval_ms=300)
    proc = board.start(firmware_build(), heap="64k")
    q, seen = lines(proc), []
    try:
        for _ in range(3):
            wait_line(q, r"^receipt-verified", 30, seen)
        gw.send_signal(signal.SIGKILL)  # gateway and broker die mid-flow
        gw.wait(10)
        for _ in range(3):  # the board goes on signing into its outbox
            wait_line(q, r"^reading seq=", 30, seen)
        gw, _, _ = start_gateway(data, url)
        last = max(int(s) for s in re.findall(r"^reading seq=(\d+)", "\n".join(seen), re.M))
        deadline = time.monotonic() + 60
        while True:  # every reading logged so far gets its receipt
            got = {int(s) for s in re.findall(r"^receipt-verified seq=(\d+)", "\n".join(seen),
                                              re.M)}
            logged = {int(s) for s in re.findall(r"^reading seq=(\d+)", "\n".join(seen), re.M)}
            if {s for s in logged if s <= last} <= got:
                break
            assert time.monotonic() < deadline, "\n".join(seen[-40:])
            wait_line(q, r"^receipt-verified", max(1.0, deadline - time.monotonic()), seen)
    finally:
        proc.terminate()
        proc.wait(10)
        gw.send_signal(signal.SIGINT)
        gw.wait(30)

    with sqlite3.connect(f"file:{data / 'chain.db'}?mode=ro", uri=True) as db:
        seqs = [s for (s,) in db.execute("SELECT seq FROM txs WHERE type = 2 ORDER BY seq")]
    assert len(seqs) == len(set(seqs)), "a reading was applied twice"
    assert set(range(2, last + 1)) <= set(seqs)
    p = subprocess.run([tool("thingledger"), "chain", "verify", "--data-dir", str(data)],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr
