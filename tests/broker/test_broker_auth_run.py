"""`thingledger run`'s embedded broker: anonymous for an open domain,
enforcing for a claimed one, reading the identities from a real Gateway's
committed state (tools.run.embedded_broker)."""

from __future__ import annotations

import asyncio

from gateway import broker as broker_auth
from gateway.db import genesis_files as genesis
from gateway.node.config import GatewayConfig
from gateway.node.mqtt_link import MqttLink
from gateway.node.service import Gateway
from tests.support.ba_world import DOMAIN, Principal, connack
from tests.support.brokers import HOST, free_port
from tools import run


def _connack(*args):
    return asyncio.get_running_loop().run_in_executor(None, connack, *args)


async def _scenario(data, owner: Principal, stranger: Principal) -> dict[str, object]:
    cfg = GatewayConfig(domain=DOMAIN, data_dir=data)
    gw: Gateway | None = None
    broker = run.embedded_broker(cfg, HOST, free_port(), lambda: gw)
    await broker.start()
    out: dict[str, object] = {"enforcing": broker.enforcing}
    try:
        out["before"] = await _connack(HOST, broker.port, owner.hex, owner.hex, owner.password())
        gw = Gateway(cfg)
        try:
            p = broker.port
            out["owner"] = await _connack(HOST, p, owner.hex, owner.hex, owner.password())
            out["stranger"] = await _connack(HOST, p, stranger.hex, stranger.hex,
                                             stranger.password())
            out["anonymous"] = await _connack(HOST, p, "anyone")
            user, pw = broker_auth.gateway_credentials(gw.led.authority_priv, DOMAIN)
            link = MqttLink(broker.url, f"thingledger-gateway-{DOMAIN}", [f"tl/{DOMAIN}/tx"],
                            asyncio.get_running_loop(), username=user, password=pw)
            link.start()
            try:
                await link.wait_connected(5)
                out["gateway"] = 0
            finally:
                link.stop()
        finally:
            await gw.stop()
    finally:
        await broker.stop()
    return out


def test_claimed_domain_gets_an_enforcing_broker(tmp_path):
    owner, stranger = Principal("owner"), Principal("stranger")
    data = tmp_path / "gw"
    genesis.create_domain(data, DOMAIN, admission="claimed", owner=owner.pub)
    out = asyncio.run(_scenario(data, owner, stranger))
    assert out == {"enforcing": True, "before": broker_auth.SERVER_UNAVAILABLE, "owner": 0,
                   "stranger": 5, "anonymous": 4, "gateway": 0}


def test_open_domain_keeps_the_anonymous_broker(tmp_path):
    owner, stranger = Principal("owner"), Principal("stranger")
    out = asyncio.run(_scenario(tmp_path / "gw", owner, stranger))  # created open
    assert out == {"enforcing": False, "before": 0, "owner": 0, "stranger": 0,
                   "anonymous": 0, "gateway": 0}
