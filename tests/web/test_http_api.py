"""The dashboard's JSON API and pages over plain HTTP (httpx), against a
running gateway (amqtt, market on) with devices sending transactions:
what the documents say matches the chain, the Merkle proof a transaction
page carries verifies, bad input is 400 with a message and unknown ids 404,
injection strings reach no SQL as code, list sizes are capped, the server is
read-only, and /metrics is Prometheus text with the broker connections
gauge."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families

from gateway.db.store import Store
from gateway.node.config import DB_FILE
from gateway.web.reader import MAX_LIMIT
from shared import tx as txm
from tests.support.webtest import WebGateway, market, ok

INJECTIONS = ["' OR '1'='1", "1; DROP TABLE txs; --", "%' UNION SELECT * FROM devices --",
              "0 OR 1=1", "\" OR \"\"=\"", "abc'); DELETE FROM blocks; --", "*", "%", "_"]


@pytest.fixture
def web(amqtt_broker, tmp_path: Path):
    w = WebGateway(tmp_path / "gw", amqtt_broker)
    try:
        yield w
    finally:
        w.close()


def rfc9162_root(leaf: bytes, index: int, size: int, path: list[bytes]) -> bytes:
    """The root an audit path gives (RFC 9162 2.1.3.2), written out here with
    hashlib, apart from shared/merkle.py and the page's JavaScript."""
    fn, sn = index, size - 1
    r = hashlib.sha256(b"\x00" + leaf).digest()
    for p in path:
        if fn & 1 or fn == sn:
            r = hashlib.sha256(b"\x01" + p + r).digest()
            while not fn & 1 and fn:
                fn >>= 1
                sn >>= 1
        else:
            r = hashlib.sha256(b"\x01" + r + p).digest()
        fn >>= 1
        sn >>= 1
    assert sn == 0
    return r


def test_documents_match_the_chain(web: WebGateway) -> None:
    dev = web.device("sensor")
    ids = [dev.submit(dev.reading_tx(2100 + i, -2)) for i in range(5)]
    for i in ids:
        dev.receipt_for(i, 10)
    sup, buyer, aid = market(web)
    with Store(web.data_dir / DB_FILE, readonly=True) as st:
        head = st.head()
        t = st.get_tx(ids[2])
    assert head is not None and t is not None

    o = web.http.get("/api/v1/overview").json()
    assert o["domain"] == "demo" and o["consensus"] == "authority"
    assert o["height"] >= head.height and o["devices"] >= 4 and o["agreements_open"] == 1

    blocks = web.http.get("/api/v1/blocks", params={"limit": 3}).json()
    assert len(blocks) == 3 and blocks[0]["height"] > blocks[1]["height"] > blocks[2]["height"]
    b = web.http.get(f"/api/v1/blocks/{t.height}").json()
    assert t.id.hex() in [x["id"] for x in b["transactions"]]
    assert web.http.get(f"/api/v1/blocks/{b['hash']}").json()["height"] == t.height

    doc = web.http.get(f"/api/v1/txs/{t.id.hex()}").json()
    assert doc["type"] == "reading" and doc["sender"] == dev.hex
    assert doc["body"] == {"1": 2102, "2": -2} and "(21.02)" in doc["body_text"]
    assert doc["receipt"]["status"] == "ok"
    p = doc["proof"]
    assert p["verified_by_node"] is True
    root = rfc9162_root(bytes.fromhex(p["leaf"]), p["index"], p["size"],
                        [bytes.fromhex(x) for x in p["path"]])
    assert root.hex() == p["receipts_root"] == b["header"]["receipts_root"]

    readings = web.http.get(f"/api/v1/devices/{dev.hex}/readings").json()
    assert [r["value"] for r in readings] == [2100, 2101, 2102, 2103, 2104]
    devs = {d["id"]: d for d in web.http.get("/api/v1/devices").json()}
    assert devs[dev.hex]["last_reading"]["text"] == "21.04"
    assert devs[dev.hex]["online"] is False  # SimDevices send no status message

    m = web.http.get("/api/v1/market").json()
    assert [(o["supplier"], o["service"]) for o in m["offers"]] == [(sup.hex, "temperature")]
    a = next(x for x in m["agreements"] if x["id"] == aid.hex())
    assert (a["state"], a["buyer"], a["supplier"]) == ("open", buyer.hex, sup.hex)

    # search: a tx prefix, a block height, a device prefix
    hits = web.http.get("/api/v1/search", params={"q": t.id.hex()[:12]}).json()
    assert {"kind": "tx", "id": t.id.hex()} == {k: hits[0][k] for k in ("kind", "id")}
    assert web.http.get("/api/v1/search", params={"q": "1"}).json()[0]["kind"] == "block"
    assert any(h["id"] == dev.hex for h in
               web.http.get("/api/v1/search", params={"q": dev.hex[:10]}).json())
    r = web.http.get("/search", params={"q": t.id.hex()[:16]})
    assert r.status_code == 303 and r.headers["location"] == f"/tx/{t.id.hex()}"

    # every page answers with HTML that names what it shows
    for path, text in [("/", "Overview"), ("/blocks", "Blocks"), (f"/block/{t.height}",
                       t.id.hex()[:16]), (f"/tx/{t.id.hex()}", "21.02"),
                       ("/devices", dev.hex), (f"/device/{dev.hex}", "21.04"),
                       ("/market", sup.hex), ("/plots", "transactions per block")]:
        page = web.http.get(path)
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert text in page.text, path


def test_devices_show_trust_levels_and_firmware(amqtt_broker, tmp_path: Path) -> None:
    """In a domain keeping trust figures a device's row names its level and
    score; a device that reported its firmware (FIRMWARE installed, then a
    rollback) shows the version it runs and the one that failed."""
    w = WebGateway(tmp_path / "gw", amqtt_broker, trust=True)
    try:
        dev, other = w.device("sensor"), w.device("other")
        ok(dev, dev.sign(txm.TYPE_FIRMWARE, {1: 2, 2: 3}))  # installed v3
        ok(dev, dev.sign(txm.TYPE_FIRMWARE, {1: 3, 2: 3, 3: 4}))  # v4 rolled back to v3
        devs = {d["id"]: d for d in w.http.get("/api/v1/devices").json()}
        assert devs[dev.hex]["firmware"]["version"] == 3
        assert devs[dev.hex]["firmware"]["failed"] == 4
        assert devs[other.hex]["firmware"] is None
        t = devs[dev.hex]["trust"]
        assert t["level"] == "probation" and isinstance(t["score"], int)  # new ids start there
        page = w.http.get(f"/device/{dev.hex}").text
        assert "v3 (v4 rolled back)" in page and "probation (" in page
    finally:
        w.close()


def test_bad_input_400_unknown_404_and_no_sql_injection(web: WebGateway) -> None:
    dev = web.device("sensor")
    ok(dev, dev.reading_tx())
    with Store(web.data_dir / DB_FILE, readonly=True) as st:
        n_txs, n_blocks = st.tx_count(), st.block_count()
    bad = ["/api/v1/txs/zz", "/api/v1/txs/" + "a" * 63, "/api/v1/txs/" + "g" * 64,
           "/api/v1/blocks/abc", "/api/v1/blocks/-1", "/api/v1/blocks/" + "a" * 63,
           "/api/v1/devices/1234", "/api/v1/devices/" + "z" * 32,
           "/api/v1/devices/" + dev.hex + "/readings?limit=0",
           "/api/v1/blocks?limit=100000", "/api/v1/blocks?limit=abc",
           "/api/v1/blocks?before=x", "/api/v1/search", "/api/v1/streams/xyz",
           "/api/v1/blocks/99999999999999999999999"]
    for path in bad:
        r = web.http.get(path)
        assert r.status_code == 400, (path, r.status_code, r.text)
        assert r.json()["error"] == "bad-query" and r.json()["detail"], path
    unknown = ["/api/v1/txs/" + "0" * 64, "/api/v1/blocks/999999", "/api/v1/blocks/" + "f" * 64,
               "/api/v1/devices/" + "0" * 32, "/api/v1/streams/" + "0" * 32]
    for path in unknown:
        r = web.http.get(path)
        assert r.status_code == 404 and r.json()["error"] == "not-found", path
    for q in INJECTIONS:
        for path, params in [("/api/v1/search", {"q": q}), ("/api/v1/blocks", {"limit": q}),
                             ("/api/v1/blocks", {"before": q})]:
            r = web.http.get(path, params=params)
            assert r.status_code == 400, (q, r.status_code, r.text)
        for base in ("/api/v1/txs/", "/api/v1/blocks/", "/api/v1/devices/", "/tx/", "/block/"):
            r = web.http.get(base + q.replace("/", ""))
            assert r.status_code in (400, 404), (base, q, r.status_code)
            assert "Traceback" not in r.text
    page = web.http.get("/block/not-a-block")  # pages answer with HTML, same codes
    assert page.status_code == 400 and "text/html" in page.headers["content-type"]
    assert web.http.get("/device/" + "0" * 32).status_code == 404
    # the chain is as it was, and goes on
    ok(dev, dev.reading_tx())
    with Store(web.data_dir / DB_FILE, readonly=True) as st:
        assert st.tx_count() == n_txs + 1 and st.block_count() > n_blocks


def test_limits_are_capped_and_the_server_is_read_only(web: WebGateway) -> None:
    dev = web.device("sensor")
    ok(dev, dev.reading_tx())
    assert len(web.http.get("/api/v1/blocks", params={"limit": MAX_LIMIT}).json()) >= 2
    assert web.http.get("/api/v1/blocks", params={"limit": MAX_LIMIT + 1}).status_code == 400
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        for path in ("/", "/api/v1/overview", "/api/v1/txs/" + "0" * 64):
            assert web.http.request(method, path).status_code == 405, (method, path)


def test_metrics_endpoint(web: WebGateway) -> None:
    dev = web.device("sensor")
    ok(dev, dev.reading_tx())
    r = web.http.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"] == CONTENT_TYPE_LATEST
    samples = {s.name: s.value for f in text_string_to_metric_families(r.text)
               for s in f.samples if not s.labels}
    assert samples["thingledger_blocks_total"] >= 1
    assert samples["thingledger_txs_received_total"] >= 2
    assert "thingledger_broker_connections" in samples
    committed = {s.labels["type"]: s.value for f in text_string_to_metric_families(r.text)
                 for s in f.samples if s.name == "thingledger_txs_committed_total"}
    assert committed["reading"] == 1 and committed["register"] >= 1
