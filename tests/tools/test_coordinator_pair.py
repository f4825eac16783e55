"""Two coordinators of one domain (tools/coordinator.py, docs/IDENTITY.md §4):
they decide the same, so what two of them submitting the same assignment
does must be harmless, and normally only one submits.

1. Both decide before either submits (a barrier in their submit): both
   NODE_ASSIGNs are committed, both name the same full node, the state is
   that assignment, and neither moves the light node again.
2. With the stagger, when a full node drops off: the first-ranked
   coordinator moves its light node, the second one sees it done in the
   chain before its turn and submits nothing: one NODE_ASSIGN.

Real broker (amqtt) and an in-process gateway; every wait is bounded."""

from __future__ import annotations

import re
import threading
from pathlib import Path

from gateway.db import genesis_files as genesis
from gateway.db.store import Store
from gateway.node.config import DB_FILE
from shared import tx as txm
from tests.support.brokers import wait_until
from tests.support.e2e_devices import GatewayThread
from tests.tools.test_coordination_node import DOMAIN, StatusStandIn, new_keys, run
from tools.coordinator import Coordinator
from tools.submit import submit


def assigns(data: Path, light: bytes) -> list[tuple[bytes, bytes]]:
    """(coordinator, full node) of every committed NODE_ASSIGN of `light`, in order."""
    with Store(data / DB_FILE, readonly=True) as s:
        return [(t.sender, ev[2]) for b in s.iter_blocks(1) for t in s.block_txs(b.height)
                if t.type == txm.TYPE_NODE_ASSIGN and t.status == 0
                for ev in t.events if ev[0] == "assign" and ev[1] == light]


def test_two_coordinators_same_assignment_is_harmless(tmp_path: Path, amqtt_broker,
                                                      capsys) -> None:
    keys, data = tmp_path / "keys", tmp_path / "gw"
    ids, k = new_keys(capsys, keys, ("owner", "c1", "c2", "full-a", "full-b", "light"))
    genesis.create_domain(data, DOMAIN, {k[n].public: 0 for n in ("c1", "c2", "light")},
                          admission="open", owner=k["owner"].public)
    gw = GatewayThread(data, amqtt_broker.url, DOMAIN, block_interval=0.1).start()
    net = ["--broker", amqtt_broker.url, "--data-dir", str(data)]
    stand_ins: list[StatusStandIn] = []
    coords: list[Coordinator] = []
    threads: list[threading.Thread] = []

    def join(name: str, *hw: str) -> None:
        rc, out = run(capsys, "node", "join", "--key", str(keys / f"{name}.key"), *hw, *net)
        assert rc == 0 and "(ok)" in out, out

    try:
        for n in ("c1", "c2"):
            join(n, "--power", "usb", "--ram-kib", "512", "--lifetime", "long")
        for n in ("full-a", "full-b"):
            rc, cert = run(capsys, "owner", "certify-node", "--key", str(keys / "owner.key"),
                           "--node", ids[n], "--data-dir", str(data))
            assert rc == 0, cert
            join(n, "--power", "mains", "--ram-kib", str(4 << 20), "--lifetime", "long",
                 "--certificate", cert.strip(), "--introduce")
        join("light", "--power", "battery", "--ram-kib", "264", "--lifetime", "short")
        full_a, full_b = sorted((ids["full-a"], ids["full-b"]))
        stand_ins = [StatusStandIn(amqtt_broker, full_a), StatusStandIn(amqtt_broker, full_b)]
        light = bytes.fromhex(ids["light"])
        first, second = sorted(("c1", "c2"), key=lambda n: ids[n])  # rank 0, rank 1
        lines: dict[str, list[str]] = {first: [], second: []}

        # 1. both decide, then both submit: two NODE_ASSIGNs, one assignment
        barrier = threading.Barrier(2, timeout=15)

        def together(*a, **kw):
            barrier.wait()
            return submit(*a, **kw)

        coords = [Coordinator(k[n], amqtt_broker.url, data, out=lines[n].append, timeout=10,
                              stagger_s=0, submit_fn=together).start() for n in (first, second)]
        results: dict[str, list] = {}

        def step(c: Coordinator, n: str) -> None:
            results[n] = c.step()
        threads = [threading.Thread(target=step, args=(c, n), daemon=True)
                   for c, n in zip(coords, (first, second), strict=True)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert not any(t.is_alive() for t in threads)
        for n in (first, second):
            assert [(r.assignment.light, r.assignment.full, r.ok) for r in results[n]] == [
                (light, bytes.fromhex(full_a), True)], lines[n]
        assert assigns(data, light) in (
            [(bytes.fromhex(ids[a]), bytes.fromhex(full_a)) for a in order]
            for order in ((first, second), (second, first)))
        with Store(data / DB_FILE, readonly=True) as s:
            assert s.load_state().get(light).assigned == bytes.fromhex(full_a)
        # neither moves it again: both see it done (their own assignment or the other's)
        for c in coords:  # (a receipt means committed: the store has both)
            assert c.step() == []
        for c in coords:
            c.close()

        # 2. staggered (the second waits 3 s): full node a drops off, its light node
        # moves to b once, by the first-ranked coordinator
        before = len(lines[second])
        coords = [Coordinator(k[n], amqtt_broker.url, data, out=lines[n].append, timeout=10,
                              stagger_s=3).start() for n in (first, second)]
        threads = [threading.Thread(target=c.run, kwargs={"poll_s": 0.1}, daemon=True)
                   for c in coords]
        for t in threads:
            t.start()
        stand_ins[0].crash()
        moved = rf"^assign light node {ids['light']} -> full node {full_b} \(was {full_a}: offline\)"
        seen = f"^light node {ids['light']}: assigned by another coordinator meanwhile"
        wait_until(lambda: any(re.search(moved, x) for x in lines[first])
                   and any(re.search(seen, x) for x in lines[second]), 20,
                   what=f"one move, seen by the other: {lines}")
        assert assigns(data, light)[2:] == [(bytes.fromhex(ids[first]), bytes.fromhex(full_b))]
        assert not any(x.startswith("assign ") for x in lines[second][before:]), lines[second]
    finally:
        for c in coords:
            c.request_stop()
        for t in threads:
            t.join(15)
        for c in coords:
            c.close()
        for s in stand_ins:
            s.close()
        gw.stop()
