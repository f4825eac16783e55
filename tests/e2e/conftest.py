"""Fixtures of the gateway end-to-end tests (helpers: e2e_devices.py;
brokers: tests/support/brokers.py, imported by tests/conftest.py)."""

from __future__ import annotations

import pytest

from tests.support.e2e_devices import shipped_mosquitto_options


@pytest.fixture(params=["amqtt", "mosquitto"])
def any_broker(request):
    """The embedded broker (amqtt, in this process) or Debian's mosquitto
    started with the settings of docs/mosquitto.conf, on a free loopback port."""
    if request.param == "amqtt":
        return request.getfixturevalue("amqtt_broker")
    return request.getfixturevalue("mosquitto_factory")(**shipped_mosquitto_options())


@pytest.fixture
def shipped_mosquitto(mosquitto_factory):
    """mosquitto with the settings of docs/mosquitto.conf."""
    return mosquitto_factory(**shipped_mosquitto_options())


@pytest.fixture(params=[0, 2], ids=["inline", "workers"])
def workers(request, monkeypatch):
    """The gateway's `workers` setting: 0 (every check in the gateway's
    process) or 2 worker processes (gateway/node/verifier.py) taking every
    batch, however small (MIN_BATCH 1), so each message goes through them."""
    if request.param:
        from gateway.node import verifier

        monkeypatch.setattr(verifier, "MIN_BATCH", 1)
    return request.param
