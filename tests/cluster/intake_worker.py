"""A gateway's intake loop cut short, run in a subprocess by test_intake.py
(`python -m tests.cluster.intake_worker URLS DOMAIN DB BATCH COMMIT`): it takes
one batch from the work queue, commits its first COMMIT transactions to the
"chain" (a SQLite table keyed by (sender, seq)), says so, and waits to be
SIGKILLed: none of the batch is acknowledged."""

from __future__ import annotations

import asyncio
import sqlite3
import sys

from gateway.cluster import link
from gateway.cluster.intake import TxIntake


async def main(urls: str, domain: str, db: str, batch: int, commit: int) -> None:
    nc = await link.connect(urls.split(","))
    intake = TxIntake(nc.jetstream(), domain)
    got = []
    while len(got) < batch:
        got += await intake.fetch(batch - len(got), timeout=5.0)
    con = sqlite3.connect(db)
    with con:
        con.executemany("INSERT INTO chain(sender, seq, tx) VALUES (?, ?, ?)",
                        [(d.sender, d.seq, d.data) for d in got[:commit]])
    print(f"FETCHED {len(got)} COMMITTED {commit}", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until killed


if __name__ == "__main__":
    u, d, path, b, c = sys.argv[1:6]
    asyncio.run(main(u, d, path, int(b), int(c)))
