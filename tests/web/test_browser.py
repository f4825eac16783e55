"""The dashboard in a real browser: headless Chromium (Debian's chromium and
chromium-driver, driven by selenium) against a running gateway (amqtt, the
market on, a device sending readings). Each page shows what a person reads:
the head height rising through server-sent events, a known transaction found
by search and its Merkle proof verified in the page (Web Crypto), plots with
points, the devices and the market; a screenshot of the overview is saved;
and with JavaScript off every page still shows its content.

Skipped only when Chromium is absent and not on CI (CI=true: a failure)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.brokers import AmqttBroker
from tests.support.webtest import Feeder, WebGateway, chromium, market, need_chromium

WAIT_S = 20


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    """A gateway with its dashboard, a market, and a device sending readings."""
    need_chromium()
    broker = AmqttBroker().start()
    web = WebGateway(tmp_path_factory.mktemp("gw") / "gw", broker)
    feeder = None
    try:
        sup, buyer, aid = market(web)
        dev = web.device("thermometer")
        known = dev.submit(dev.reading_tx(2150, -2))
        dev.receipt_for(known, 10)
        feeder = Feeder(dev, every=0.3)
        feeder.start()
        yield {"web": web, "tx": known.hex(), "dev": dev.hex, "sup": sup.hex,
               "buyer": buyer.hex, "agreement": aid.hex()}
    finally:
        if feeder is not None:
            feeder.stop()
        web.close()
        broker.close()


@pytest.fixture
def browser(tmp_path: Path):
    d = chromium(tmp_path / "profile")
    try:
        yield d
    finally:
        d.quit()


@pytest.fixture
def browser_nojs(tmp_path: Path):
    d = chromium(tmp_path / "profile-nojs", javascript=False)
    try:
        yield d
    finally:
        d.quit()


def wait(driver, predicate, what: str):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, WAIT_S, poll_frequency=0.2).until(
        lambda d: predicate(d), message=what)


def text(driver, css: str) -> str:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.CSS_SELECTOR, css).text


def test_overview_height_rises_live_and_screenshot(live, browser, tmp_path: Path) -> None:
    web = live["web"]
    browser.get(web.url + "/")
    assert "Overview" in browser.title and "demo" in browser.title
    first = int(text(browser, "#head-height"))
    # the page is not reloaded: the number changes through /api/v1/events
    wait(browser, lambda d: text(d, "#live-state") == "live", "the event stream to open")
    wait(browser, lambda d: int(text(d, "#head-height")) > first, "the head height to rise")
    assert int(text(browser, "#head-height")) <= web.height()
    assert float(text(browser, "#stat-tx_per_s")) > 0
    shot = tmp_path / "overview.png"
    assert browser.save_screenshot(str(shot))
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 5000


def test_search_finds_a_known_tx_and_the_page_verifies_its_proof(live, browser) -> None:
    from selenium.webdriver.common.by import By

    web = live["web"]
    browser.get(web.url + "/blocks")
    box = browser.find_element(By.NAME, "q")
    box.send_keys(live["tx"][:14])
    box.submit()
    wait(browser, lambda d: "/tx/" in d.current_url, "the search to open the transaction")
    assert text(browser, "#tx-id") == live["tx"]
    assert text(browser, "#tx-type") == "reading"
    assert "21.50" in text(browser, "#tx-body")
    assert text(browser, "#receipt-status") == "ok"
    wait(browser, lambda d: d.find_element(By.ID, "proof-result").get_attribute(
        "data-verified") is not None, "the proof check in the page")
    assert browser.find_element(By.ID, "proof-result").get_attribute("data-verified") == "yes"
    assert "proof verified in this browser" in text(browser, "#proof-result")


def test_a_tampered_proof_does_not_verify_in_the_page(live, browser) -> None:
    """The page's check is real: the same page with one path hash changed says NOT."""
    from selenium.webdriver.common.by import By

    web = live["web"]
    browser.get(f"{web.url}/tx/{live['tx']}")
    wait(browser, lambda d: d.find_element(By.ID, "proof-result").get_attribute(
        "data-verified") == "yes", "the proof check")
    browser.execute_script("""
        var el = document.getElementById('proof');
        var r = el.dataset.root; el.dataset.root = (r[0] === '0' ? '1' : '0') + r.slice(1);
        document.getElementById('proof-result').removeAttribute('data-verified');
        document.dispatchEvent(new Event('DOMContentLoaded'));""")
    wait(browser, lambda d: d.find_element(By.ID, "proof-result").get_attribute(
        "data-verified") == "no", "the tampered proof to fail")
    assert "NOT verified" in text(browser, "#proof-result")


def cells(driver, table: str) -> list[list[str]]:
    """The text of a table's cells, read at once (live sections are replaced
    under the page as blocks come: no element is held across reads)."""
    return driver.execute_script(
        "return Array.from(document.querySelectorAll(arguments[0] + ' tbody tr')).map("
        "r => Array.from(r.cells).map(c => c.innerText));", table)


def test_plots_devices_market_and_blocks_pages(live, browser) -> None:
    web = live["web"]
    browser.get(web.url + "/plots")
    charts = dict(browser.execute_script(
        "return Array.from(document.querySelectorAll('svg.chart')).map(s => "
        "[s.getAttribute('aria-label'), s.querySelectorAll('.pt').length]);"))
    assert charts["transactions per block"] >= 2 and "block interval" in charts
    dev_points = [n for label, n in charts.items() if live["dev"][:12] in label]
    assert dev_points and dev_points[0] >= 2

    browser.get(web.url + "/devices")
    shown = {r[0].rstrip("…") for r in cells(browser, "#devices")}
    for dev in (live["dev"], live["sup"], live["buyer"]):
        assert dev[:12] in shown
    browser.get(f"{web.url}/device/{live['dev']}")
    assert len(cells(browser, "#readings")) >= 2
    assert "Device" in browser.title

    browser.get(web.url + "/market")
    offers = cells(browser, "#offers")
    assert any(r[1] == "temperature" and live["sup"][:12] in r[0] for r in offers)
    agreements = cells(browser, "#agreements")
    assert any(r[0] == live["agreement"] and r[1] == "open" for r in agreements)

    browser.get(web.url + "/blocks")
    height = cells(browser, "#blocks")[0][0]
    browser.get(f"{web.url}/block/{height}")
    assert f"Block {height}" in browser.title
    assert len(cells(browser, "#txs")) >= 1


def test_pages_read_fine_without_javascript(live, browser_nojs) -> None:
    from selenium.webdriver.common.by import By

    web, d = live["web"], browser_nojs
    d.get(web.url + "/")
    assert int(text(d, "#head-height")) >= 1
    assert text(d, "#live-state").startswith("static")  # no script ran
    assert len(d.find_elements(By.CSS_SELECTOR, "#blocks tbody tr")) >= 1
    d.get(f"{web.url}/tx/{live['tx']}")
    assert text(d, "#tx-type") == "reading" and "21.50" in text(d, "#tx-body")
    assert text(d, "#proof-node") == "yes"
    assert text(d, "#proof-result") == "needs JavaScript"
    d.get(f"{web.url}/search?q={live['tx'][:14]}")  # the search form works as a plain GET
    assert text(d, "#tx-id") == live["tx"]
    d.get(web.url + "/market")
    assert "temperature" in text(d, "#offers")
    d.get(web.url + "/plots")
    points = d.find_elements(By.CSS_SELECTOR, "svg.chart circle.pt, svg.chart rect.pt")
    assert len(points) >= 2
    d.get(web.url + "/devices")
    assert live["dev"][:12] in text(d, "#devices")

