"""Transactions exactly once across gateways (gateway/cluster/intake.py) on a
real 3-node NATS cluster: devices publish signed transactions with paho over
a node's MQTT listener (QoS 1); a gateway process takes a batch, commits half
of it and is SIGKILLed before acknowledging; another gateway gets the batch
again after ack_wait, drops what the chain already holds by (sender, seq) and
commits the rest: every transaction once, none lost, the queue empty."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from types import SimpleNamespace

from gateway.cluster import link
from gateway.cluster.intake import TxIntake
from shared import tx as txm
from tests.support.brokers import ROOT, PahoClient
from tests.support.gwtest import Device
from tests.support.nats import run
from tests.support.waits import lines, wait_line

DOMAIN = "intake-test"
ACK_WAIT = 2.0  # s: short, so the redelivery comes soon


def _chain(path) -> sqlite3.Connection:
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE IF NOT EXISTS chain(sender BLOB, seq INTEGER, tx BLOB, "
                "PRIMARY KEY (sender, seq))")
    con.commit()
    return con


def test_consumer_killed_mid_batch_every_tx_once(nats_cluster, tmp_path):
    devices = [Device(f"intake-{i}") for i in range(3)]
    txs = [txm.make(d.priv, d.id, txm.TYPE_READING, DOMAIN, seq, 0, {1: seq, 2: 0})
           for d in devices for seq in range(1, 11)]
    db = tmp_path / "chain.sqlite"
    con = _chain(db)

    async def setup():
        nc = await link.connect(nats_cluster.urls)
        intake = TxIntake(nc.jetstream(), DOMAIN, ack_wait=ACK_WAIT)
        await intake.ensure()
        await nc.close()

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

    async def queued():
        nc = await link.connect(nats_cluster.urls)
        intake = TxIntake(nc.jetstream(), DOMAIN, ack_wait=ACK_WAIT)
        deadline = time.monotonic() + 20
        while (n := await intake.pending()) < len(txs) + 2 and time.monotonic() < deadline:
            pass
        await nc.close()
        return n

    assert run(queued) == len(txs) + 2

    worker = subprocess.Popen(
        [sys.executable, "-m", "tests.cluster.intake_worker", ",".join(nats_cluster.urls),
         DOMAIN, str(db), "10", "5"], cwd=ROOT, stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen: list[str] = []
    try:
        wait_line(lines(worker), r"FETCHED 10 COMMITTED 5", 30, seen)
    finally:
        worker.kill()
        worker.wait(10)
    assert con.execute("SELECT COUNT(*) FROM chain").fetchone()[0] == 5

    stats = {"redelivered": 0, "dropped": 0, "committed": 0}

    async def gateway_b():
        nc = await link.connect(nats_cluster.urls[::-1])
        intake = TxIntake(nc.jetstream(), DOMAIN, ack_wait=ACK_WAIT)
        deadline = time.monotonic() + 60
        try:
            while con.execute("SELECT COUNT(*) FROM chain").fetchone()[0] < len(txs):
                assert time.monotonic() < deadline, "not every transaction committed"
                batch = await intake.fetch(8, timeout=1.0)
                fresh = []
                for d in batch:
                    stats["redelivered"] += d.deliveries > 1
                    have = con.execute("SELECT 1 FROM chain WHERE sender=? AND seq=?",
                                       d.key).fetchone()
                    if have or d.key in {x.key for x in fresh}:
                        stats["dropped"] += 1  # already committed: never applied twice
                    else:
                        fresh.append(d)
                with con:  # the "block": committed before any ack
                    con.executemany("INSERT INTO chain(sender, seq, tx) VALUES (?, ?, ?)",
                                    [(d.sender, d.seq, d.data) for d in fresh])
                stats["committed"] += len(fresh)
                await intake.settle(batch)
            # the resent duplicate may still be queued: drain what is left
            while await intake.pending():
                assert time.monotonic() < deadline, "queue not drained"
                batch = await intake.fetch(8, timeout=1.0)
                for d in batch:
                    assert con.execute("SELECT 1 FROM chain WHERE sender=? AND seq=?",
                                       d.key).fetchone()
                    stats["dropped"] += 1
                await intake.settle(batch)
            return dict(intake.refused)
        finally:
            await intake.close()
            await nc.close()

    refused = run(gateway_b)
    rows = con.execute("SELECT sender, seq, tx FROM chain ORDER BY sender, seq").fetchall()
    assert sorted(r[2] for r in rows) == sorted(txs)  # each once, none lost
    assert stats["committed"] == len(txs) - 5
    assert stats["redelivered"] >= 10  # the killed gateway's whole batch came again
    assert stats["dropped"] >= 5 + 1  # its 5 commits and the device's resend
    assert sum(refused.values()) == 1, refused  # the garbage, terminated once
