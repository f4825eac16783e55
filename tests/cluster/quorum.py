"""A quorum domain of three validators for the replicated gateway's tests:
one genesis (3 validator keys, k = 2) copied into each gateway's data dir
with the domain key and the gateway's own validator key; Gateway objects
running in the test's event loop against a NATS cluster (the real node
pipeline, gateway/cluster/replica.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gateway.db.genesis_files import create_replicated_domain
from gateway.node.config import GatewayConfig
from gateway.node.service import Gateway
from tests.support.gwtest import T0, Device, key

DOMAIN = "quorum-test"
VALIDATORS = [key(f"validator-{i}") for i in range(3)]
SPARE = key("validator-3")  # a 4th gateway's key, outside the genesis set
AUTHORITY = key("quorum-authority")
OUTSIDER = key("not-a-validator")


def make_dirs(base: Path, devices: list[Device], n: int = 3,
              accounts: dict[bytes, int] | None = None, **genesis: Any) -> list[Path]:
    """Data dirs gw0..gw<n-1> (n <= 4) holding the same genesis and domain
    key, and each its validator key (gw3: SPARE's); `accounts` (public key -> balance) and `genesis`
    (owner=, admission=, ...) go into the genesis too."""
    dirs = [base / f"gw{i}" for i in range(n)]
    create_replicated_domain(dirs, DOMAIN, [k for k, _ in [*VALIDATORS, SPARE][:n]],
                             {d.pub: 1000 for d in devices} | (accounts or {}), time=T0,
                             authority_key=AUTHORITY[0],
                             validators=[p for _, p in VALIDATORS], threshold=2, **genesis)
    return dirs


def config(data_dir: Path, i: int, nats, interval: float = 0.2) -> GatewayConfig:
    node = nats.nodes[i % len(nats.nodes)]
    return GatewayConfig(domain=DOMAIN, data_dir=data_dir,
                         broker_url=f"mqtt://127.0.0.1:{node.mqtt_port}",
                         cluster=",".join(nats.urls), gateway_name=f"gw{i}",
                         block_interval_s=interval, http="", rate_limit_tps=0)


class Running:
    """A gateway started in this loop, with its console lines."""

    def __init__(self, cfg: GatewayConfig) -> None:
        self.lines: list[str] = []
        self.gw = Gateway(cfg, on_event=self.lines.append, log_txs=False, freeze_gc=False)
        self.rep = self.gw.replica
        assert self.rep is not None

    async def start(self) -> Running:
        await self.gw.start()
        return self

    async def stop(self) -> None:
        await self.gw.stop()

    @property
    def store(self):
        return self.gw.led.store

    def final_height(self) -> int:
        """The height of this gateway's head once it is final and the store
        shows it; -1 otherwise. The store's connection is the writer's, so it
        shows a block while the writer thread commits it, before the head
        moves and long before its certificate: a test that read the store's
        head and head_final() apart could see a block with no certificate."""
        h = self.gw.led.head.height
        if not self.rep.head_final() or self.store.head().height != h:
            return -1
        return h


async def until(pred: Callable[[], object], gws: list[Running], timeout: float,
                what: str) -> None:
    """Wait until pred() holds, woken by any gateway's finalised block (the
    0.2 s bound only covers a missed wake-up); AssertionError at the timeout."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not pred():
        left = deadline - loop.time()
        if left <= 0:
            tails = "\n".join(f"{r.gw.cfg.gateway_name}: {r.lines[-5:]}" for r in gws)
            raise AssertionError(f"timed out waiting for {what}\n{tails}")
        waits = [asyncio.ensure_future(r.rep.final_event.wait()) for r in gws]
        await asyncio.wait(waits, timeout=min(left, 0.2), return_when=asyncio.FIRST_COMPLETED)
        for w in waits:
            w.cancel()
