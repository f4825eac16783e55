"""The broker connections gauge (docs/API.md, "Metrics"): the embedded
broker's live count of client connections, and an external mosquitto's
$SYS/broker/clients/connected as the gateway's small $SYS client reads it.
Both against real brokers with real MQTT clients on loopback."""

from __future__ import annotations

import asyncio
import time

import paho.mqtt.client as mqtt
import pytest

from gateway.broker.embedded import EmbeddedBroker
from gateway.node.metrics import Metrics
from gateway.node.sysclients import SysClients
from tests.support.brokers import free_port


def clients(host: str, port: int, n: int) -> list[mqtt.Client]:
    out = []
    for i in range(n):
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"gauge-{i}-{time.time()}")
        c.connect(host, port, keepalive=30)
        c.loop_start()
        out.append(c)
    return out


def gauge(m: Metrics) -> float:
    line = next(x for x in m.text().decode().splitlines()
                if x.startswith("thingledger_broker_connections "))
    return float(line.split()[1])


def metrics() -> Metrics:
    return Metrics(mempool_depth=lambda: 0, height=lambda: 0, agreements_open=lambda: 0)


def test_embedded_broker_connections_gauge() -> None:
    async def main() -> tuple[float, float, float]:
        b = EmbeddedBroker("127.0.0.1", free_port())
        m = metrics()
        m.count_broker_connections(lambda: b.connections)
        before_start = gauge(m)
        await b.start()
        cs = await asyncio.to_thread(clients, b.host, b.port, 3)
        try:
            await asyncio.wait_for(_until(lambda: gauge(m) == 3), 10)
            three = gauge(m)
            for c in cs[:2]:
                c.disconnect()
                c.loop_stop()
            await asyncio.wait_for(_until(lambda: gauge(m) == 1), 10)
            one = gauge(m)
        finally:
            for c in cs:
                c.disconnect()
                c.loop_stop()
            await b.stop()
        return before_start, three, one

    before_start, three, one = asyncio.run(main())
    assert (before_start, three, one) == (0, 3, 1)


async def _until(pred) -> None:
    """Wait (the caller bounds it with wait_for) until pred() holds."""
    while not pred():
        await asyncio.sleep(0.05)


@pytest.mark.mosquitto
def test_external_mosquitto_sys_clients_gauge(mosquitto_factory) -> None:
    b = mosquitto_factory(sys_interval=1)
    m = metrics()
    cs = clients(b.host, b.port, 2)

    async def main() -> float:
        loop = asyncio.get_running_loop()
        seen: list[float] = []

        def on_value(n: float) -> None:
            m.on_broker_clients(n)
            seen.append(n)

        sc = SysClients(b.url, "gateway-sys", on_value, loop)
        sc.start()
        try:
            # the two clients and the $SYS client itself. mosquitto counts open
            # sockets, also one that has not sent its CONNECT yet or whose close
            # it has not read yet (its wait_port probe on a loaded machine), and
            # its $SYS value is retained: a first value may be one above, the
            # next tick's is the settled count
            await asyncio.wait_for(_until(lambda: gauge(m) == 3), 15)
        finally:
            sc.stop()
        return gauge(m)

    try:
        assert asyncio.run(main()) == 3
    finally:
        for c in cs:
            c.disconnect()
            c.loop_stop()
