"""A gateway cut short, run in a subprocess by test_intake.py (`python -m
tests.cluster.intake_worker URLS ACK_WAIT`): gateway "a" takes 10
transactions from the intake, appends a block of the first 5 to the proposal
log, says so, and waits to be SIGKILLed: none of its deliveries is acknowledged."""

from __future__ import annotations

import asyncio
import sys

from gateway.cluster import link
from shared import cbor
from tests.cluster.minigw import MiniGateway


async def main(urls: str, ack_wait: float) -> None:
    nc = await link.connect(urls.split(","))
    gw = MiniGateway(nc, "a", ack_wait)
    await gw.plog.ensure()
    got = []
    while len(got) < 10:
        got += await gw.intake.fetch(10 - len(got), timeout=5.0)
    a = await gw.plog.append(cbor.dumps([d.data for d in got[:5]]), 0)
    print(f"FETCHED {len(got)} PROPOSED 5 AT {a.seq}", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until killed


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], float(sys.argv[2])))
