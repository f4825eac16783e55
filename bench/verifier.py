"""Validation workers' round trip: `python -m bench.verifier`.

For batches of 1 to 512 signed readings: the time to check them in the
gateway's process (check_stateless + signature, what handle() does without
workers) against the time a batch takes through gateway/node/verifier.py's
pool (hand-off, the workers' checks, the verdicts back), and the gateway
process's own CPU for that hand-off (what it pays per batch instead of the
checks). Median of REPEATS runs per size; the pool's workers warmed up first.
The gateway's process is what bounds its throughput (bench/README.md,
"Gateway"), so a batch is worth handing over where the hand-off costs it
less CPU than the checks: verifier.MIN_BATCH should be above that size.
The pool's wall time matters less: the gateway handles the batch before
while the workers check the next one.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import sys
import time
from pathlib import Path

from gateway.ledger.validate import check_stateless
from gateway.node import verifier
from shared import p256
from shared import tx as txm

DOMAIN = "demo"
README = Path(__file__).resolve().parent / "README.md"
SIZES = (1, 4, 8, 16, 32, 64, 128, 512)
REPEATS = 15


def signed(n: int) -> tuple[bytes, list[bytes]]:
    priv, pub = p256.keygen()
    sender = txm.device_id(pub)
    return pub, [txm.make(priv, sender, txm.TYPE_READING, DOMAIN, i + 1, 0, {1: i, 2: 0})
                 for i in range(n)]


def inline(msgs: list[bytes], pub: bytes) -> None:
    for m in msgs:
        check_stateless(m, DOMAIN).verify(pub)


async def measure(workers: int) -> list[tuple[int, float, float, float]]:
    pub, msgs = signed(max(SIZES))
    v = verifier.Verifier(workers, DOMAIN, min_batch=1)
    await v.start()
    rows = []
    try:
        await v.check(msgs, lambda kid: pub)  # warm: every worker has imported and run
        for n in SIZES:
            batch = msgs[:n]
            t_in, t_pool, cpu_pool = [], [], []
            for _ in range(REPEATS):
                t0 = time.perf_counter()
                inline(batch, pub)
                t_in.append(time.perf_counter() - t0)
                t0, c0 = time.perf_counter(), time.process_time()
                got = await v.check(batch, lambda kid: pub)
                t_pool.append(time.perf_counter() - t0)
                cpu_pool.append(time.process_time() - c0)
                assert all(c is not None and c.error is None for c in got)
            rows.append((n, statistics.median(t_in), statistics.median(t_pool),
                         statistics.median(cpu_pool)))
    finally:
        v.close()
    return rows


def table(workers: int, rows: list[tuple[int, float, float, float]]) -> str:
    out = [f"{'batch':>6}{'inline ms':>11}{'pool ms':>10}{'gateway CPU ms':>16}"
           f"{'  gateway CPU saved':>19}",
           f"{'-----':>6}{'---------':>11}{'-------':>10}{'--------------':>16}"
           f"{'  -----------------':>19}"]
    for n, a, b, c in rows:
        out.append(f"{n:>6}{a * 1e3:>11.2f}{b * 1e3:>10.2f}{c * 1e3:>16.2f}"
                   f"{(a - c) / a:>18.0%} ")
    out.append(f"({workers} worker process(es); machine: {os.cpu_count()} cores, load average "
               f"{os.getloadavg()[0]:.2f}; verifier.MIN_BATCH = {verifier.MIN_BATCH})")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2], metavar="N")
    ap.add_argument("--readme", action="store_true", help="write the tables to bench/README.md")
    args = ap.parse_args(argv)
    out = "\n\n".join(table(n, asyncio.run(measure(n))) for n in args.workers)
    print(out)
    if args.readme:
        text = README.read_text()
        marker = "<!-- verifier table -->"
        if marker not in text:
            raise SystemExit("bench/README.md has no %s" % marker)
        text = re.sub(r"(?s)<!-- verifier table -->.*?<!-- /verifier table -->",
                      lambda _: marker + "\n```\n" + out + "\n```\n<!-- /verifier table -->",
                      text)
        README.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
