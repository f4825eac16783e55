"""TxIntake.settle acknowledges a whole batch with one round trip: one ack
message per delivery written at once, then one flush, not a confirmed
request per ack (a gateway waited a round trip per transaction, 256 per
fetched batch, and its intake fell behind the proposal log). Once settle()
returns the server has read every ack: the consumer then holds nothing of
the batch pending and delivers none of it again. A real NATS server (JetStream) on a free loopback port."""

from __future__ import annotations

import asyncio

from gateway.cluster import link
from gateway.cluster.intake import TxIntake
from shared import tx as txm
from tests.support.gwtest import Device
from tests.support.nats import run

DOMAIN = "settle-test"
N = 120


def test_settle_acks_a_batch_in_one_round_trip(nats_server):
    dev = Device("settle-dev", DOMAIN)
    txs = [txm.make(dev.priv, dev.id, txm.TYPE_READING, DOMAIN, seq, 0, {1: seq, 2: 0})
           for seq in range(1, N + 1)]

    async def body() -> None:
        nc = await link.connect(nats_server.urls)
        try:
            intake = TxIntake(nc.jetstream(), DOMAIN, "gw-settle", replicas=1, ack_wait=2.0,
                              nc=nc)
            await intake.ensure()
            for t in txs:
                await intake.submit(t)
            got = []
            while len(got) < N:
                got += await intake.fetch(N, timeout=2.0)
            assert [d.data for d in got] == txs
            assert await intake.backlog() == N  # delivered, none acknowledged
            replies = nc.stats["in_msgs"]
            await intake.settle(got)
            # no reply per ack (a confirmed ack is a request: N replies)
            assert nc.stats["in_msgs"] - replies < N // 4
            # the server has read every ack; its consumer applies them in turn
            # (asked again until then, for at most 10 s)
            deadline = asyncio.get_running_loop().time() + 10.0
            while (left := await intake.backlog()) and \
                    asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.05)
            assert left == 0  # every delivery acknowledged, none pending
            assert await intake.fetch(N, timeout=3.0) == []  # none delivered again
            await intake.close()
        finally:
            await nc.close()
    run(body)
