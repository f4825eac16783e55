"""The gateway's own MQTT link logs in to an enforcing broker with the
authority's credential (gateway.node.mqtt_link.MqttLink username/password)."""

from __future__ import annotations

import asyncio

import pytest

from gateway import broker as broker_auth
from gateway.node.mqtt_link import MqttLink
from tests.support.ba_world import DOMAIN


async def _link_receives(guarded, world, clients, username, password,
                         timeout: float = 5.0) -> list[bytes]:
    loop = asyncio.get_running_loop()
    link = MqttLink(guarded.broker.url, f"thingledger-gateway-{DOMAIN}", [f"tl/{DOMAIN}/tx"],
                    loop, username=username, password=password)
    link.start()
    try:
        await link.wait_connected(timeout)
        dev = clients(guarded, world.a).connected()
        await loop.run_in_executor(None, dev.publish, f"tl/{DOMAIN}/tx", b"tx-from-a")
        got = await asyncio.wait_for(link.receive(), 5)
        for m in got:
            link.ack(m)
        return [m.payload for m in got]
    finally:
        link.stop()


def test_gateway_link_logs_in_with_the_authority_credential(guarded, world, clients):
    user, pw = broker_auth.gateway_credentials(world.gw.priv, DOMAIN)
    assert asyncio.run(_link_receives(guarded, world, clients, user, pw)) == [b"tx-from-a"]


def test_gateway_link_without_credentials_is_refused(guarded, world, clients):
    with pytest.raises(TimeoutError):
        asyncio.run(_link_receives(guarded, world, clients, None, None, timeout=1.5))
    assert guarded.guard.refused["bad-username"] >= 1
