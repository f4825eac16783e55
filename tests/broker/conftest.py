"""Fixtures of the broker enforcement tests (helpers: ba_world.py)."""

from __future__ import annotations

import logging

import pytest

from gateway.broker.embedded import ThreadedBroker
from tests.support.ba_world import DOMAIN, FakeAccess, Principal
from tests.support.brokers import HOST, free_port


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
