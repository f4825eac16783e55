"""Faults under load in a quorum domain (3 validators, k = 2) on a real
3-node NATS cluster, the gateways as processes (`thingledger run --config`):

- SIGKILL of one gateway while a load generator sends transactions: the
  other two keep finalising blocks, every device keeps getting quorum-signed
  receipts (a live gateway answers the devices of the dead one, on its last
  will); the killed gateway, started again, catches up from the stream;
- SIGKILL of the NATS node leading the proposal stream: the gateways keep
  finalising once JetStream elected another leader;

and after each: every transaction the cluster acknowledged is in the chain
exactly once (every one that got a receipt among them), the three gateways
hold the same head hash and state root, and `thingledger chain verify`
accepts each data directory."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
from pathlib import Path

from gateway.cluster import link
from tests.cluster.procs import GatewayProc, Load, Receipts, log_stream, until
from tests.cluster.quorum import AUTHORITY, make_dirs
from tests.support.gwtest import Device
from tests.support.nats import run, stream_leader
from tools.build import tool

RATE = 40.0  # tx/s offered by the load generator
TIMEOUT = 300.0


async def start_gateways(tmp_path: Path, nats_cluster, devices: list[Device]
                         ) -> list[GatewayProc]:
    dirs = make_dirs(tmp_path, devices)
    gws = [GatewayProc(d, i, nats_cluster) for i, d in enumerate(dirs)]
    await asyncio.gather(*(g.start() for g in gws))
    return gws


@contextlib.asynccontextmanager
async def under_load(tmp_path: Path, nats_cluster, devices: list[Device]):
    """(gateways, NATS connection, receipt checker, load generator) of a
    started quorum domain under RATE tx/s; all stopped at the end."""
    gws = await start_gateways(tmp_path, nats_cluster, devices)
    nc = await link.connect(nats_cluster.urls)
    receipts = Receipts(AUTHORITY[1])
    await receipts.listen(nc)
    load = Load(nc, devices, RATE).start()
    try:
        yield gws, nc, receipts, load
    finally:
        await load.stop()
        await nc.close()
        for g in gws:
            await g.stop()


async def advance(gws: list[GatewayProc], blocks: int, timeout: float, what: str) -> None:
    """Each of `gws` finalises `blocks` more blocks."""
    want = {g.name: g.final_height + blocks for g in gws}
    await until(lambda: all(g.final_height >= want[g.name] for g in gws), gws, timeout, what)


async def converge(gws: list[GatewayProc], load: Load, timeout: float) -> None:
    """Wait until every gateway's store holds every acknowledged tx, all on one
    final head."""
    want = set(load.sent)

    def done() -> bool:
        chains = [g.chain() for g in gws]
        return all(want <= set(c[0]) and c[3] for c in chains) \
            and len({(c[1], c[2]) for c in chains}) == 1
    await until(done, gws, timeout, f"{len(want)} txs on one final head on all", poll=0.5)


def check_after(gws: list[GatewayProc], load: Load, receipts: Receipts) -> None:
    chains = [g.chain() for g in gws]
    for g, (ids, _, _, final) in zip(gws, chains, strict=True):
        assert len(ids) == len(set(ids)), f"{g.name}: a tx twice in the chain"
        assert set(load.sent) <= set(ids), f"{g.name}: an acknowledged tx missing"
        assert set(receipts.ok) <= set(ids), f"{g.name}: a receipted tx not in the chain"
        assert final
    assert len({(c[1], c[2]) for c in chains}) == 1, "gateways on different heads"
    assert receipts.bad == 0, receipts.why[:5]
    for g in gws:
        v = subprocess.run([tool("thingledger"), "chain", "verify", "--data-dir",
                            str(g.data_dir)], capture_output=True, text=True, timeout=120)
        assert v.returncode == 0, v.stdout + v.stderr


def test_sigkill_of_a_gateway_under_load(tmp_path, nats_cluster):
    devices = [Device(f"kill-{i}", "quorum-test") for i in range(6)]

    async def body():
        async with under_load(tmp_path, nats_cluster, devices) as (gws, nc, receipts, load):
            await advance(gws, 5, 60, "5 blocks final on all three")
            victim, rest = gws[0], gws[1:]
            victim.kill()
            await victim.stop()
            at_kill = len(load.sent)
            before = dict(receipts.by_device)
            await advance(rest, 5, 60, "5 more blocks final on the two left")
            # every device is answered after the kill, those of gw1 too
            await until(lambda: all(receipts.by_device.get(d.id.hex(), 0)
                                    > before.get(d.id.hex(), 0) for d in devices),
                        rest, 60, "a receipt for every device after the kill")
            assert len(load.sent) > at_kill
            await victim.start()  # catches up from the stream
            await until(lambda: victim.final_height >= max(g.final_height for g in rest),
                        gws, 90, "the restarted gateway caught up")
            await advance(gws, 2, 60, "2 more blocks final on all three")
            await load.stop()
            await converge(gws, load, 90)
        check_after(gws, load, receipts)
        assert len(receipts.ok) > 0
    run(body, TIMEOUT)


def test_sigkill_of_the_stream_leader_under_load(tmp_path, nats_cluster):
    devices = [Device(f"lead-{i}", "quorum-test") for i in range(4)]

    async def body():
        async with under_load(tmp_path, nats_cluster, devices) as (gws, nc, receipts, load):
            await advance(gws, 5, 60, "5 blocks final on all three")
            leader = await stream_leader(nc.jetstream(), log_stream())
            node = nats_cluster.node(leader)
            node.kill()
            # the gateways go on with the two NATS nodes left
            await advance(gws, 5, 90, "5 more blocks final after the leader's death")
            assert await stream_leader(nc.jetstream(), log_stream()) != leader
            node.start()
            await advance(gws, 2, 90, "2 more blocks final with the node back")
            await load.stop()
            await converge(gws, load, 90)
        check_after(gws, load, receipts)
    run(body, TIMEOUT)
