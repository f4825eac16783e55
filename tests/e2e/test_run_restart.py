"""`thingledger run` stopped with Ctrl-C (SIGINT) at random moments of a
trade and started again on the same data, five times: the market trades
again after every restart. Nothing a board needs survives a restart of the
embedded broker (its retained ACCOUNT) or of a board (its agreements, in
RAM): the gateway tells a board its balance and open agreements when the
board says it is online, and every agreement open at a stop is resumed or
unwound (closed, the buyer refunded) in the next run.

Each run: both buyer boards buy a verified reading, and every agreement
the previous run left open streams again (a reading streamed or bought, a
batch paid) or is closed, within a minute of the start; then a random wait
(0-8 s, seed printed: RESTART_SEED=<n> repeats it) and SIGINT."""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import time

import pytest

from gateway.db.store import Store
from gateway.market.ledger import rules as ledger
from gateway.node.config import DB_FILE
from tests.support.brokers import free_port
from tests.support.waits import drain, lines, wait_line
from tools.build import tool

ROUNDS = 5  # restarts
WITHIN_S = 60.0
BUYERS = ("board-3", "board-4")  # tools/run.py MARKET_ROLES: the two buyers


def open_agreements(data):
    with Store(data / DB_FILE, readonly=True) as st:
        return [a["id"].hex()[:8] for a in ledger.open_agreements(st.load_state())]


def resumed_or_unwound(aid: str) -> str:
    """A line that shows the agreement streaming again in this run (a reading
    bought or streamed, a batch paid) or unwound (closed, the buyer refunded)."""
    return rf"(market closed |market paid agreement=|bought agreement=|stream agreement=){aid}"


@pytest.mark.micropython
def test_the_market_trades_again_after_each_restart(tmp_path):
    seed = int(os.environ.get("RESTART_SEED", random.randrange(1 << 30)))
    print(f"RESTART_SEED={seed}")
    rng = random.Random(seed)
    url = f"mqtt://127.0.0.1:{free_port()}"
    data = tmp_path / "var" / "gateway"
    left_open: list[str] = []
    started = time.monotonic()
    for run in range(ROUNDS + 1):
        p = subprocess.Popen([tool("thingledger"), "run", "--no-http", "--listen", url,
                              "--block-interval", "0.3"], cwd=tmp_path, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
        q = lines(p)
        seen: list[str] = []
        try:
            t0 = time.monotonic()
            wait_line(q, r"run +\d+ virtual boards started", WITHIN_S, seen)
            todo = set(BUYERS)
            while todo:  # each buyer board buys a verified reading again
                line = wait_line(q, r"board-\d +bought agreement=", WITHIN_S - (
                    time.monotonic() - t0), seen)
                todo.discard(re.search(r"board-\d", line)[0])
            for aid in left_open:  # what the last stop left open: resumed or unwound
                if not any(re.search(resumed_or_unwound(aid), ln) for ln in seen):
                    wait_line(q, resumed_or_unwound(aid), WITHIN_S - (time.monotonic() - t0),
                              seen)
            print(f"run {run}: trading after {time.monotonic() - t0:.1f} s"
                  f" ({len(left_open)} agreements left open before)")
            if run == ROUNDS:
                break
            end = time.monotonic() + rng.uniform(0, 8)  # a random moment of the trade
            while time.monotonic() < end:
                try:
                    wait_line(q, r"$^", end - time.monotonic(), seen)
                except AssertionError:
                    break
        finally:
            p.send_signal(signal.SIGINT)
            try:
                p.wait(60)
            except subprocess.TimeoutExpired:
                p.kill()
            drain(q, seen)
        assert p.returncode == 0, "\n".join(seen[-40:])
        # nothing legitimate refused as a replay, nothing unsealed, no board out of heap
        assert not [ln for ln in seen if re.search(r"Traceback|MemoryError|reason=replay|"
                                                   r"bad-notice|bad-reading", ln)], seen
        left_open = open_agreements(data)
    print(f"{ROUNDS} restarts in {time.monotonic() - started:.0f} s")
    v = subprocess.run([tool("thingledger"), "chain", "verify"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=60)
    assert v.returncode == 0, v.stdout + v.stderr
