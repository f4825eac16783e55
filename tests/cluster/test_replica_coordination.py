"""Coordination in a quorum domain (issue 11 item 6): the three gateways
(processes on a 3-node NATS cluster) join as full nodes with their validator
keys, certified by the domain owner; a coordination node (`thingledger
coordinator`, tools/coordinator.py) assigns a light node to one of them;
that gateway is SIGKILLed, the cluster publishes its last will, the
coordinator reassigns the light node to a live gateway (NODE_ASSIGN,
committed by the quorum), and the light node's next transaction is answered
with a receipt, with no manual step."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from types import SimpleNamespace

from gateway.db import genesis_files as genesis
from gateway.db.store import Store
from gateway.node.config import DB_FILE
from shared import topics
from shared import tx as txm
from tests.cluster.procs import GatewayProc, cli, join_full_nodes
from tests.cluster.quorum import DOMAIN, VALIDATORS, make_dirs
from tests.support.nats import run
from tests.support.waits import retained
from tools.build import tool
from tools.keys import load_key
from tools.submit import next_seq, submit, validators_of

IDS = [txm.device_id(pub).hex() for _, pub in VALIDATORS]


def assigned(data: Path) -> dict[str, str]:
    with Store(data / DB_FILE, readonly=True) as s:
        return {i.hex(): r.assigned.hex() for i, r in s.devices() if r.node == "light"}


def test_coordinator_moves_a_light_node_off_a_dead_gateway(tmp_path, nats_cluster):
    keys = tmp_path / "keys"
    keys.mkdir()

    async def body():
        for n in ("owner", "coord", "light"):
            await cli("key", "new", "--out", str(keys / f"{n}.key"))
        k = {n: load_key(keys / f"{n}.key") for n in ("owner", "coord", "light")}
        dirs = make_dirs(tmp_path, [], accounts={k["coord"].public: 0, k["light"].public: 0},
                         admission="open", owner=k["owner"].public)
        gws = [GatewayProc(d, i, nats_cluster) for i, d in enumerate(dirs)]
        coord = None
        try:
            await asyncio.gather(*(g.start() for g in gws))
            # the assignment goes to the lowest id (all equally loaded): the
            # coordinator reads the chain of, and talks to the node of, the highest
            first = IDS.index(min(IDS))
            last = IDS.index(max(IDS))
            url = f"mqtt://127.0.0.1:{nats_cluster.nodes[last].mqtt_port}"
            net = ["--broker", url, "--data-dir", str(dirs[last])]
            await join_full_nodes(dirs, IDS, keys / "owner.key", net)
            for n, hw in (("coord", ["usb", "512", "long"]), ("light", ["battery", "264",
                                                                       "short"])):
                out = await cli("node", "join", "--key", str(keys / f"{n}.key"), "--power",
                                hw[0], "--ram-kib", hw[1], "--lifetime", hw[2], *net)
                assert "(ok)" in out, out
            light = txm.device_id(k["light"].public).hex()
            # the coordinator starts once each gateway's retained status says online
            node = SimpleNamespace(host="127.0.0.1", port=nats_cluster.nodes[last].mqtt_port)
            loop = asyncio.get_running_loop()

            async def all_online() -> bool:
                got = [await loop.run_in_executor(
                    None, retained, node, topics.status(DOMAIN, i), 2.0) for i in IDS]
                return all(x == b"online" for x in got)
            deadline = loop.time() + 60
            while not await all_online():
                assert loop.time() < deadline, "a gateway's status is not online"
            coord = await asyncio.create_subprocess_exec(
                tool("thingledger"), "coordinator", "--key", str(keys / "coord.key"), *net,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
            lines: list[str] = []

            async def line(pattern: str, timeout: float) -> re.Match:
                rx = re.compile(pattern)

                async def read() -> re.Match:
                    assert coord is not None and coord.stdout is not None
                    while True:
                        raw = await coord.stdout.readline()
                        assert raw, "coordinator ended:\n" + "\n".join(lines)
                        lines.append(raw.decode().rstrip())
                        m = rx.search(lines[-1])
                        if m:
                            return m
                try:
                    return await asyncio.wait_for(read(), timeout)
                except TimeoutError:
                    raise AssertionError(f"no {pattern!r}:\n" + "\n".join(lines)) from None

            await line(rf"assign light node {light} -> full node {IDS[first]} \(unassigned\): "
                       r"committed at height \d+ \(ok\)", 60)
            gws[first].kill()  # its last will: offline
            await gws[first].stop()
            m = await line(rf"assign light node {light} -> full node ([0-9a-f]{{32}}) "
                           rf"\(was {IDS[first]}: offline\): committed at height \d+ \(ok\)", 60)
            assert m.group(1) in IDS and m.group(1) != IDS[first]
            assert assigned(dirs[last])[light] == m.group(1)
            # the light node keeps working: its next transaction gets a receipt
            lk = k["light"]
            reading = txm.make(lk.private, txm.device_id(lk.public), txm.TYPE_READING, DOMAIN,
                               next_seq(), 0, {1: 2150, 2: -2})
            g = genesis.load(dirs[last] / "genesis.toml")
            reply = await asyncio.get_running_loop().run_in_executor(
                None, lambda: submit(url, DOMAIN, reading, g.authority, timeout=30,
                                     validators=validators_of(g)))
            assert reply.ok and reply.status == 0, reply.describe()
        finally:
            if coord is not None and coord.returncode is None:
                coord.terminate()
                await coord.wait()
            for g in gws:
                await g.stop()
    run(body, 240)
