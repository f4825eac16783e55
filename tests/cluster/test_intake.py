"""Transactions exactly once and none lost across gateways
(gateway/cluster/intake.py with the proposal log) on a real 3-node NATS
cluster: devices publish signed transactions with paho over a node's MQTT
listener (QoS 1); gateway "a", in a process of its own, takes a batch,
proposes a block of half of it and is SIGKILLed before acknowledging
anything; gateway "b", which reads every transaction too, commits the rest;
"a" restarted gets its unacknowledged batch again and drops all of it, by
(sender, seq), as the chain already holds it."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from types import SimpleNamespace

import nats.errors
import nats.js.errors

from gateway.cluster import link
from gateway.cluster.log import retry
from shared import tx as txm
from tests.cluster.minigw import DOMAIN, MiniGateway
from tests.support.brokers import ROOT, PahoClient
from tests.support.gwtest import Device
from tests.support.nats import run
from tests.support.waits import lines, wait_line

ACK_WAIT = 2.0  # s: short, so the redelivery comes soon


async def routed_to_the_stream(url: str, timeout: float = 30.0) -> None:
    """Wait until the node at `url` routes the intake subject to the stream,
    by a probe published there, then deleted. A node's MQTT listener
    acknowledges a QoS 1 publish whether or not anything listens: until the
    new stream's leader has told the other nodes of its interest, the devices'
    transactions published there are lost (the test saw all 32 lost)."""
    nc = await link.connect([url])
    try:
        intake = MiniGateway(nc, "probe", ACK_WAIT).intake
        deadline = time.monotonic() + timeout
        while True:
            try:
                seq = await intake.submit(b"probe", timeout=1.0)
                break
            except (nats.errors.NoRespondersError, nats.errors.TimeoutError,
                    nats.js.errors.NoStreamResponseError):
                assert time.monotonic() < deadline, "the stream never reachable from " + url
                await asyncio.sleep(0.05)

        async def delete_probe() -> None:
            try:
                await intake.js.delete_msg(intake.stream, seq)
            except nats.js.errors.NotFoundError:
                pass  # deleted by a try whose answer did not come in time

        # a JetStream request can time out while the new stream settles (seen
        # once in a fresh-clone run): asked again, as the gateways do
        await retry(delete_probe, timeout, "delete the probe")
    finally:
        await nc.close()


def test_gateway_killed_mid_batch_every_tx_once(nats_cluster):
    devices = [Device(f"intake-{i}") for i in range(3)]
    txs = [txm.make(d.priv, d.id, txm.TYPE_READING, DOMAIN, seq, 0, {1: seq, 2: 0})
           for d in devices for seq in range(1, 11)]

    async def setup():
        nc = await link.connect(nats_cluster.urls)
        for name in ("a", "b"):  # the stream and both gateways' consumers exist first
            await MiniGateway(nc, name, ACK_WAIT).intake.ensure()
        await MiniGateway(nc, "a", ACK_WAIT).plog.ensure()
        await nc.close()
        await routed_to_the_stream(nats_cluster.urls[1])

    run(setup)
    node = nats_cluster.nodes[1]
    dev = PahoClient(SimpleNamespace(host=node.host, port=node.mqtt_port),
                     client_id="intake-device")
    try:
        for t in txs:
            dev.publish(f"tl/{DOMAIN}/tx", t, qos=1)  # waits for the PUBACK
        dev.publish(f"tl/{DOMAIN}/tx", txs[4], qos=1)  # a device resending
        dev.publish(f"tl/{DOMAIN}/tx", b"\x00 not a transaction", qos=1)
    finally:
        dev.close()

    async def stored():
        nc = await link.connect(nats_cluster.urls)
        intake = MiniGateway(nc, "b", ACK_WAIT).intake
        deadline = time.monotonic() + 20
        while (n := await intake.stored()) < len(txs) + 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)  # bounded poll of the stream's count
        await nc.close()
        return n

    assert run(stored) == len(txs) + 2

    worker = subprocess.Popen(
        [sys.executable, "-m", "tests.cluster.intake_worker", ",".join(nats_cluster.urls),
         str(ACK_WAIT)], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True)
    seen: list[str] = []
    try:
        wait_line(lines(worker), r"FETCHED 10 PROPOSED 5 AT 1", 30, seen)
    finally:
        worker.kill()
        worker.wait(10)

    async def until_settled(gw: MiniGateway, deadline: float) -> None:
        while len(gw.committed) < len(txs) or gw.mempool or await gw.intake.backlog():
            assert time.monotonic() < deadline, (gw.name, len(gw.committed), gw.mempool)
            await gw.step()

    async def gateways():
        nc_b = await link.connect(nats_cluster.urls[::-1])
        b = MiniGateway(nc_b, "b", ACK_WAIT)
        await b.start()
        nc_a = await link.connect(nats_cluster.urls)
        a = MiniGateway(nc_a, "a", ACK_WAIT)  # "a" restarted
        try:
            await until_settled(b, time.monotonic() + 60)
            await a.start()
            await until_settled(a, time.monotonic() + 60)
            return a, b
        finally:
            await a.stop()
            await b.stop()
            await nc_a.close()
            await nc_b.close()

    a, b = run(gateways)
    assert sorted(b.committed) == sorted(txs)  # each once, none lost
    assert a.committed == b.committed  # one chain
    assert b.committed[:5] == txs[:5]  # a's block, proposed before it died
    assert b.dropped >= 6  # a's five (in its block) and the device's resend
    assert a.redelivered >= 10 and a.proposed == 0  # its batch came back: all committed
    assert a.follower.refused == b.follower.refused == []
    assert sum(a.intake.refused.values()) == sum(b.intake.refused.values()) == 1  # garbage
