"""Fixtures of the broker enforcement tests (helpers: ba_world.py)."""

from __future__ import annotations

import logging

import pytest

from gateway import broker as broker_auth
from gateway.broker.embedded import ThreadedBroker
from gateway.db import genesis_files as genesis
from gateway.db.store import open_ledger
from gateway.node.config import GatewayConfig
from tests.support.ba_world import DOMAIN, FakeAccess, Principal
from tests.support.brokers import HOST, free_port
from tools.cli import broker as cli_broker


class World:
    """The authority (gateway), devices a and b (a may read b's data), a
    revoked device r, and a device u the chain does not know."""

    def __init__(self) -> None:
        self.gw = Principal("authority")
        self.a, self.b = Principal("device-a"), Principal("device-b")
        self.r, self.u = Principal("device-revoked"), Principal("device-unknown")
        self.access = FakeAccess.of(self.gw, self.a, self.b, self.r)
        self.access.inactive.add(self.r.id)
        self.access.grant_read(self.a, self.b)


@pytest.fixture
def world() -> World:
    return World()


@pytest.fixture
def guarded(world):
    """The embedded broker enforcing `world` (amqtt in a thread, free port)."""
    logging.getLogger("amqtt").setLevel(logging.ERROR)
    tb = ThreadedBroker(HOST, free_port(), access=lambda: world.access, domain=DOMAIN,
                        authority=world.gw.pub)
    tb.start()
    tb.host, tb.port = tb.broker.host, tb.broker.port
    tb.guard = tb.broker.guard
    yield tb
    tb.stop(5)


@pytest.fixture
def clients():
    """clients(broker, principal_or_None, password=..., **kw) -> AuthClient, closed at teardown."""
    from tests.support.ba_world import AuthClient

    made: list[AuthClient] = []

    def make(broker, who: Principal | None, password: str | None = None, **kw) -> AuthClient:
        if who is None:
            c = AuthClient(broker, None, None, **kw)
        else:
            kw.setdefault("client_id", who.hex)
            c = AuthClient(broker, who.hex, password or who.password(), **kw)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


@pytest.fixture
def chain(tmp_path, world, monkeypatch):
    """A real data dir (genesis, authority key, chain.db) whose identities are
    `world` (the fake Access stands in for gateway.identity.access over the stored
    state); the owner's credential store holds a's, b's and r's passwords."""
    data = tmp_path / "gw"
    led = open_ledger(GatewayConfig(domain=DOMAIN, data_dir=data))
    led.store.close()
    g = genesis.load(data / "genesis.toml")
    world.gw.priv = genesis.load_authority_key(data / "authority.key")
    world.gw.pub = g.authority
    world.gw.id = g.authority_id
    world.access.keys = {world.gw.id: world.gw.pub, world.a.id: world.a.pub,
                         world.b.id: world.b.pub, world.r.id: world.r.pub}
    seen: list[str] = []

    def fake_access(state, domain):
        seen.append(domain)
        return world.access

    monkeypatch.setattr(cli_broker, "access_from_state", fake_access)
    creds = data / broker_auth.CREDENTIALS_FILE
    for p in (world.a, world.b, world.r):
        broker_auth.add_credential(creds, p.id, p.password())
    return data
