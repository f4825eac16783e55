"""The dashboard's pure parts: input checks, rates, payment events, the SVG
charts, and HTML escaping of values that come from the chain."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import pytest

from gateway.errors import BAD_QUERY, WebError
from gateway.web import charts, pages, views
from gateway.web.reader import BlockRow, prefix_range


@pytest.mark.parametrize("text", ["", "xyz", "12 34", "0x12", "a" * 65, "' OR 1=1", "é"])
def test_hex_arg_refuses(text: str) -> None:
    with pytest.raises(WebError) as e:
        views.hex_arg(text, "q", 64)
    assert e.value.reason == BAD_QUERY and e.value.http_status == 400 and "hex" in e.value.detail


def test_id_and_int_args() -> None:
    assert views.id_arg("AB" * 16, "device id", 16) == bytes.fromhex("ab" * 16)
    with pytest.raises(WebError):
        views.id_arg("ab" * 15, "device id", 16)
    assert views.int_arg(None, "limit", 1, 500, 50) == 50
    assert views.int_arg("7", "limit", 1, 500) == 7
    for bad in ("0", "501", "1e3", "7 ", "-", "9" * 30):
        with pytest.raises(WebError):
            views.int_arg(bad, "limit", 1, 500)


def test_prefix_range() -> None:
    assert prefix_range("ab", 2) == (b"\xab\x00", b"\xab\xff")
    assert prefix_range("abc", 2) == (b"\xab\xc0", b"\xab\xcf")


def test_rates_over_the_last_minute() -> None:
    rows = [BlockRow(h, b"", 1000 + h * 10, 6) for h in range(10)]  # times 1000 .. 1090
    tps, bpm = views.rates(rows, now=1090.5)
    assert bpm == 6 and tps == pytest.approx(36 / 60)  # blocks after 1030.5: 1040 .. 1090


def test_payment_events_of_contracts_and_of_the_ledger() -> None:
    addr, aid, sup, buyer = b"\x01" * 16, b"\x02" * 16, b"\x03" * 16, b"\x04" * 16
    rows = [(5, 1000, b"\x09" * 32, [["call", addr, "verdict", True, 380],
                                     [addr, "delivery-paid", aid, 0, sup, 114, 6],
                                     [addr, "agreement-closed", aid, buyer, sup, 0]]),
            (4, 990, b"\x08" * 32, [["demand-closed", aid, buyer, 80], ["match", aid]])]
    p = views.payments(rows)
    assert [x["event"] for x in p] == ["delivery-paid", "agreement-closed", "demand-closed"]
    assert p[0]["text"] == f"agreement {aid.hex()[:12]} batch 0: 114 paid to {sup.hex()[:12]} " \
                           "(operator fee 6)"
    assert p[2]["text"] == f"demand {aid.hex()[:12]} closed: 80 back to the buyer " \
                           f"{buyer.hex()[:12]}"


def test_line_chart_has_its_points_and_escapes_its_title() -> None:
    svg = charts.line("<script>x</script>", [(1000, 21.5), (1010, 22.0), (1020, 21.0)], " °C")
    root = ET.fromstring(svg)  # well-formed XML
    ns = {"s": "http://www.w3.org/2000/svg"}
    assert root.get("data-points") == "3"
    circles = root.findall("s:circle", ns)
    assert len(circles) == 3
    ys = [float(c.get("cy")) for c in circles]
    assert ys[1] < ys[0] < ys[2]  # higher values are drawn higher
    assert "<script>" not in svg
    empty = ET.fromstring(charts.line("none", []))
    assert empty.get("data-points") == "0" and "no data yet" in charts.line("none", [])


def test_bars_chart() -> None:
    root = ET.fromstring(charts.bars("txs", [(1, 3), (2, 0), (3, 6)]))
    rects = root.findall("{http://www.w3.org/2000/svg}rect")
    heights = [float(r.get("height")) for r in rects]
    assert len(rects) == 3 and heights[1] == 0 and heights[2] == pytest.approx(2 * heights[0])


def test_pages_escape_chain_values() -> None:
    evil = "<img src=x onerror=alert(1)>"
    t = {"id": "ab" * 32, "height": 1, "index": 0, "sender": "cd" * 16, "seq": 1,
         "type": "reading", "status": "failed", "reason": evil, "fee": 0, "body": {"1": evil},
         "body_text": evil, "size_bytes": 10, "block_hash": "ee" * 32, "time": 0,
         "receipt": {"status": "failed", "reason": evil, "events": [[evil]]},
         "proof": {"leaf": "00", "index": 0, "size": 1, "path": [], "receipts_root": "11" * 32,
                   "verified_by_node": False}}
    html = pages.tx("demo", t)
    assert evil not in html and "&lt;img" in html
    assert re.search(r'id="proof-node">NO<', html)
