"""Cost of the gateway's metrics per transaction: `python -m bench.metrics`.

Runs the hooks gateway/node/service.py calls (gateway/node/metrics.py) as a
block of transactions goes through the pipeline: per tx on_received and
on_admitted (its admission time kept), per block on_block (a committed
counter by type and a receipt-latency observation per tx, the commit
histogram once), and on_rejected for a share of refusals. The cost per
committed tx is set against the gateway's ~230 us of CPU per committed tx
(bench/README.md, "Gateway"); target: under 1 % of it. Also: one exposition
(what a scrape costs the event loop).
"""

from __future__ import annotations

import argparse
import os
import time

from gateway.node.metrics import Metrics
from shared import tx as txm

CPU_PER_TX_US = 230.0  # the gateway's CPU per committed tx (bench/README.md, "Gateway")
TARGET_SHARE = 0.01


def per_tx_us(n_blocks: int, block: int, reject_every: int = 10) -> float:
    m = Metrics(mempool_depth=lambda: 0, height=lambda: 0, agreements_open=lambda: 0)
    ids = [os.urandom(32) for _ in range(block)]
    types = [txm.TYPE_READING if i % 4 else txm.TYPE_CONTRACT_CALL for i in range(block)]
    committed = list(zip(ids, types, strict=True))
    t0 = time.perf_counter()
    for _ in range(n_blocks):
        for i, tx_id in enumerate(ids):
            m.on_received()
            m.on_admitted(tx_id)
            if i % reject_every == 0:
                m.on_received()
                m.on_rejected("bad-signature")
        m.on_block(0.012, committed, ids)
    return (time.perf_counter() - t0) / (n_blocks * block) * 1e6


def scrape_ms(n: int = 200) -> float:
    m = Metrics(mempool_depth=lambda: 0, height=lambda: 0, agreements_open=lambda: 0)
    m.on_block(0.01, [(b"x", t) for t in range(1, 19)], [b"x"])
    for r in ("bad-cbor", "replay", "wrong-domain", "mempool-full"):
        m.on_rejected(r)
    t0 = time.perf_counter()
    for _ in range(n):
        m.text()
    return (time.perf_counter() - t0) / n * 1e3


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--blocks", type=int, default=200)
    ap.add_argument("--block", type=int, default=500, help="txs per block")
    a = ap.parse_args(argv)
    us = min(per_tx_us(a.blocks, a.block) for _ in range(3))
    limit = CPU_PER_TX_US * TARGET_SHARE
    ok = us < limit
    print(f"{'measure':44} {'value':>10}  {'target':>10}  verdict")
    print(f"{'metrics hooks per committed tx':44} {us:8.2f} us  {'< %.1f us' % limit:>10}  "
          f"{'ok' if ok else 'MISSED'}")
    print(f"{'share of the gateway CPU per tx (230 us)':44} {us / CPU_PER_TX_US:9.2%}")
    print(f"{'one exposition (metrics_text), 18 types':44} {scrape_ms():8.2f} ms")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
