"""TxIntake.settle acknowledges a whole batch with one round trip: one ack
message per delivery written at once, then one flush, not a confirmed
request per ack (a gateway waited a round trip per transaction, 256 per
fetched batch, and its intake fell behind the proposal log). Once settle()
returns the server holds every ack: nothing of the batch is pending or
delivered again. A real NATS server (JetStream) on a free loopback port."""

from __future__ import annotations

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
            assert await intake.backlog() == 0  # every ack held by the server
            assert await intake.fetch(N, timeout=3.0) == []  # none delivered again
            await intake.close()
        finally:
            await nc.close()
    run(body)
