"""The embedded MQTT broker (amqtt) that `thingledger run` starts by default.

A gateway operator with a real broker (Debian's mosquitto on the Raspberry Pi)
passes `--broker mqtt://host:port` instead; see docs/mosquitto.conf."""

from __future__ import annotations

import asyncio
import logging
import threading
from dataclasses import dataclass, field
from urllib.parse import urlparse

from amqtt.broker import Broker

DEFAULT_URL = "mqtt://127.0.0.1:1883"


def parse_url(url: str) -> tuple[str, int]:
    """(host, port) of an mqtt:// URL; ValueError naming what is wrong."""
    u = urlparse(url)
    if u.scheme != "mqtt" or not u.hostname:
        raise ValueError(f"broker URL must look like mqtt://host:port, got {url!r}")
    return u.hostname, u.port or 1883


def amqtt_config(host: str, port: int) -> dict:
    return {
        "listeners": {"default": {"type": "tcp", "bind": f"{host}:{port}"}},
        # no $SYS publishing, no packet logging: quiet and fast
        "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
    }


@dataclass
class EmbeddedBroker:
    """amqtt running in the caller's asyncio loop."""

    host: str = "127.0.0.1"
    port: int = 1883
    _broker: Broker | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    async def start(self) -> None:
        for name in ("amqtt", "transitions"):
            logging.getLogger(name).setLevel(logging.WARNING)
        self._broker = Broker(amqtt_config(self.host, self.port))
        await self._broker.start()

    async def stop(self) -> None:
        if self._broker is not None:
            await self._broker.shutdown()
            self._broker = None


class ThreadedBroker:
    """An EmbeddedBroker with its own event loop in a background thread
    (tests and tools that are not asyncio themselves)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 1883) -> None:
        self.broker = EmbeddedBroker(host, port)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return self.broker.url

    def start(self, timeout: float = 10.0) -> None:
        ready = threading.Event()
        errors: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self.broker.start())
            except BaseException as e:  # reported to the starting thread
                errors.append(e)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self.broker.stop())
            loop.close()

        self._thread = threading.Thread(target=run, name="amqtt", daemon=True)
        self._thread.start()
        if not ready.wait(timeout):
            raise TimeoutError("embedded broker did not start")
        if errors:
            raise errors[0]

    def stop(self, timeout: float = 10.0) -> None:
        if self._loop and self._thread:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout)
            self._thread = None
