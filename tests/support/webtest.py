"""Helpers of the dashboard's tests (tests/web/): a gateway with its web
server in the gateway's own event loop, devices that keep it busy, HTTP
waits, and headless Chromium (Debian's chromium + chromium-driver, driven by
selenium; never a downloaded browser)."""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.db import genesis_files as genesis
from gateway.web.app import WebServer
from shared import messages
from shared import tx as txm
from tests.support.brokers import wait_until
from tests.support.e2e_devices import DOMAIN, GatewayThread, SimDevice, authority_of

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
# the flags that work on a headless build machine (no GPU, no sandbox as root, no network)
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--window-size=1280,1000")
SUPPLY, GRANT, FEE_BPS = 100_000, 1_000, 500
OFFER = {1: "temperature", 2: "cC", 3: 5, 4: 1, 5: "u4pruy", 6: 600, 7: 1}


class WebGateway:
    """A GatewayThread (market on) with a WebServer started on its loop."""

    def __init__(self, data_dir: Path, broker: Any, *, trust: bool = False,
                 **server_kw: Any) -> None:
        genesis.create_domain(data_dir, DOMAIN, authority_balance=SUPPLY, trust=trust)
        self.data_dir = data_dir
        self.broker = broker
        self.gwt = GatewayThread(data_dir, broker.url, market_fee_bps=FEE_BPS,
                                 market_grant=GRANT).start()
        self.loop: asyncio.AbstractEventLoop = self.gwt.on_loop(
            lambda g: asyncio.get_running_loop())
        self.server = WebServer(self.gwt.gw, "127.0.0.1", 0, **server_kw)
        self.call(self.server.start())
        self.url = self.server.url.rstrip("/")
        self.http = httpx.Client(base_url=self.url, timeout=10, follow_redirects=False)
        self.devices: list[SimDevice] = []

    def call(self, coro: Any, timeout: float = 15.0) -> Any:
        """Run a coroutine on the gateway's loop; its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def device(self, name: str) -> SimDevice:
        d = SimDevice(self.broker.host, self.broker.port, authority_of(self.data_dir),
                      name=name).connect()
        self.devices.append(d)
        ok(d, d.register_tx())
        return d

    def height(self) -> int:
        """The head height the API reports, asked on a connection of its own: a
        kept-alive one is a quiet socket the server may close for a newcomer at
        its connection limit (tests/web/test_slow_clients.py), and a request
        sent on it just then is reset."""
        return httpx.get(self.url + "/api/v1/overview", timeout=10).json()["height"]

    def close(self) -> None:
        for d in self.devices:
            d.close()
        self.http.close()
        try:
            self.call(self.server.stop())
        finally:
            self.gwt.stop()


def ok(dev: SimDevice, msg: bytes) -> list:
    """Submit and wait for a receipt with status ok; its events."""
    r = dev.receipt_for(dev.submit(msg), 10)
    assert r.status == messages.STATUS_OK, (r.reason, r.events)
    return r.events


def market(web: WebGateway) -> tuple[SimDevice, SimDevice, bytes]:
    """A supplier's offer and a buyer's matching demand: (supplier, buyer, agreement id)."""
    sup, buyer = web.device("supplier"), web.device("buyer")
    ok(sup, sup.sign(txm.TYPE_OFFER, OFFER))
    ev = ok(buyer, buyer.sign(txm.TYPE_DEMAND, {1: "temperature", 2: 6, 3: 8, 4: 60,
                                                5: "cheapest"}))
    return sup, buyer, next(e for e in ev if e[0] == "match")[1]


class Feeder(threading.Thread):
    """A device sending a reading every `every` seconds (values rising and
    falling) until stop(): keeps blocks coming while a test watches."""

    def __init__(self, dev: SimDevice, every: float = 0.3) -> None:
        super().__init__(name="feeder", daemon=True)
        self.dev = dev
        self.every = every
        self.halt = threading.Event()
        self.sent: list[bytes] = []

    def run(self) -> None:
        i = 0
        while not self.halt.is_set():
            self.sent.append(self.dev.submit(self.dev.reading_tx(2000 + (i % 10) * 25, -2)))
            i += 1
            self.halt.wait(self.every)

    def stop(self) -> None:
        self.halt.set()
        self.join(10)


def wait_height_above(web: WebGateway, h: int, timeout: float = 20.0) -> int:
    def above() -> int:
        now = web.height()
        return now if now > h else 0
    return wait_until(above, timeout, 0.1, f"a block above height {h}")


# -- the browser ----------------------------------------------------------------------
def need_chromium() -> None:
    """Skip when Chromium is absent, unless on CI (CI=true), where it must be there."""
    if os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER):
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"{CHROMIUM} / {CHROMEDRIVER} missing on CI: `make sysdeps` installs "
                    "Debian's chromium and chromium-driver")
    pytest.skip("Debian's chromium and chromium-driver are not installed (make sysdeps)")


def chromium(profile: Path, javascript: bool = True) -> Any:
    """A headless Chromium driven over Debian's chromedriver, with a fresh profile."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    need_chromium()
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for f in CHROMIUM_FLAGS:
        opts.add_argument(f)
    opts.add_argument(f"--user-data-dir={profile}")
    if not javascript:
        opts.add_experimental_option(
            "prefs", {"profile.managed_default_content_settings.javascript": 2})
    driver = webdriver.Chrome(options=opts, service=Service(CHROMEDRIVER))
    driver.set_page_load_timeout(30)
    return driver
