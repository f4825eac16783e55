"""The dashboard's HTML: each page is complete, readable HTML without
JavaScript (tables, definition lists, inline SVG charts); the script
(gateway/web/script.py) only makes it live. Every value goes through
html.escape. Pages are built from the API's documents (gateway/web/views.py);
the sections a page refreshes live are also served alone as fragments
(`section(...)` below, /fragment/<name>).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from html import escape
from typing import Any
from urllib.parse import quote

NAV = (("/", "Overview"), ("/blocks", "Blocks"), ("/devices", "Devices"),
       ("/market", "Market"), ("/plots", "Plots"))

CSS = """
body{font-family:system-ui,sans-serif;margin:0;color:#222}
header{background:#243447;color:#fff;padding:.5em 1em;display:flex;gap:1.2em;align-items:center;flex-wrap:wrap}
header a{color:#fff;text-decoration:none}header b{margin-right:1em}
header form{margin-left:auto}main{padding:1em}
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border-bottom:1px solid #ddd;padding:.2em .6em;text-align:left;font-size:.9em}
code,.mono{font-family:ui-monospace,monospace;font-size:.85em;word-break:break-all}
dl{display:grid;grid-template-columns:max-content auto;gap:.2em 1em}dt{font-weight:bold}
.good{color:#17802e;font-weight:bold}.bad{color:#b00020;font-weight:bold}
.stats{display:flex;gap:1.5em;flex-wrap:wrap}.stat{border:1px solid #ddd;border-radius:4px;padding:.4em .8em}
.stat span{display:block;font-size:1.4em;font-weight:bold}
"""


def e(v: Any) -> str:
    return escape(str(v))


def when(t: int | float | None) -> str:
    if t is None:
        return "-"
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def short(h: str, n: int = 12) -> str:
    return h[:n] + ("…" if len(h) > n else "")


def link(href: str, text: str, cls: str = "") -> str:
    c = f' class="{cls}"' if cls else ""
    return f'<a href="{e(href)}"{c}>{e(text)}</a>'


def tx_link(tx_id: str) -> str:
    return link(f"/tx/{tx_id}", short(tx_id, 16), "mono")


def dev_link(dev: str) -> str:
    return link(f"/device/{dev}", short(dev, 12), "mono") if dev else "-"


def table(headers: Sequence[str], rows: Iterable[Sequence[str]], ident: str = "") -> str:
    """A table; the cells are HTML already (escape them with e())."""
    i = f' id="{ident}"' if ident else ""
    head = "".join(f"<th>{e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table{i}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def section(name: str, html: str) -> str:
    """A section the script reloads from /fragment/<name> on each new block."""
    return f'<div data-refresh="/fragment/{e(name)}">{html}</div>'


def page(title: str, domain: str, body: str) -> str:
    nav = "".join(link(h, t) for h, t in NAV)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{e(title)} · ThingLedger {e(domain)}</title><style>{CSS}</style>
<script src="/static/dashboard.js" defer></script></head>
<body><header><b>ThingLedger · {e(domain)}</b>{nav}
<form action="/search" method="get" role="search"><input name="q" size="28"
 placeholder="tx id, block hash, height, device" aria-label="search">
<button type="submit">Search</button></form></header>
<main><h1>{e(title)}</h1>
{body}</main></body></html>"""


# -- pieces ----------------------------------------------------------------------------
def blocks_table(rows: Sequence[dict[str, Any]]) -> str:
    return table(("height", "time", "txs", "hash"),
                 ((link(f"/block/{b['height']}", str(b["height"])), e(when(b["time"])),
                   e(b["txs"]), f'<span class="mono">{e(b["hash"])}</span>') for b in rows),
                 "blocks")


def txs_table(rows: Sequence[dict[str, Any]]) -> str:
    return table(("idx", "tx id", "type", "sender", "seq", "status"),
                 ((e(t["index"]), tx_link(t["id"]), e(t["type"]), dev_link(t["sender"]),
                   e(t["seq"]), e(t["status"] + (": " + t["reason"] if t["reason"] else "")))
                  for t in rows), "txs")


def stats(o: dict[str, Any]) -> str:
    items = [("height", "head height"), ("tx_per_s", "tx/s (last minute)"),
             ("blocks_per_min", "blocks/min"), ("devices_online", "devices online"),
             ("devices", "principals"), ("agreements_open", "open agreements")]
    cells = "".join(f'<div class="stat">{e(label)}<span data-live="{k}" id="stat-{k}">'
                    f'{e(o[k])}</span></div>' for k, label in items)
    return f'<div class="stats">{cells}</div>'


# -- pages -----------------------------------------------------------------------------
def overview(o: dict[str, Any], recent: Sequence[dict[str, Any]], charts: Sequence[str]) -> str:
    body = f"""<dl>
<dt>domain</dt><dd>{e(o['domain'])}</dd>
<dt>consensus</dt><dd>{e(o['consensus'])}</dd>
<dt>head</dt><dd>height <span data-live="height" id="head-height">{e(o['height'])}</span>,
 hash <span class="mono" data-live="hash">{e(o['hash'])}</span></dd>
<dt>updates</dt><dd id="live-state">static (reload for news; live with JavaScript)</dd>
</dl>
{stats(o)}
{section("overview-charts", "".join(charts))}
<h2>Latest blocks</h2>
{section("recent-blocks", blocks_table(recent))}
<p>{link("/blocks", "all blocks")} · {link("/metrics", "Prometheus metrics")} ·
 {link("/api/v1/overview", "JSON")}</p>"""
    return page("Overview", o["domain"], body)


def blocks(domain: str, rows: Sequence[dict[str, Any]], older: int | None) -> str:
    more = link(f"/blocks?before={older}", "older blocks") if older is not None else ""
    return page("Blocks", domain, section("blocks", blocks_table(rows)) + f"<p>{more}</p>")


def block(domain: str, b: dict[str, Any]) -> str:
    h = b["header"]
    fields = "".join(f"<dt>{e(k)}</dt><dd class=\"mono\">{e(v)}</dd>" for k, v in h.items())
    nav = []
    if b["height"] > 0:
        nav.append(link(f"/block/{b['height'] - 1}", "previous block"))
    nav.append(link(f"/block/{b['height'] + 1}", "next block"))
    shown = len(b["transactions"])
    note = f"<p>showing the first {shown} of {b['txs']}</p>" if shown < b["txs"] else ""
    body = (f"<dl><dt>hash</dt><dd class=\"mono\">{e(b['hash'])}</dd>"
            f"<dt>time</dt><dd>{e(when(b['time']))}</dd>{fields}</dl>"
            f"<h2>Transactions ({e(b['txs'])})</h2>{note}{txs_table(b['transactions'])}"
            f"<p>{' · '.join(nav)}</p>")
    return page(f"Block {b['height']}", domain, body)


def tx(domain: str, t: dict[str, Any]) -> str:
    p = t["proof"]
    r = t["receipt"]
    events = "".join(f"<li><code>{e(json.dumps(ev))}</code></li>"
                     for ev in r["events"]) or "<li>none</li>"
    node_ok = "yes" if p["verified_by_node"] else "NO"
    body = f"""<dl>
<dt>tx id</dt><dd class="mono" id="tx-id">{e(t['id'])}</dd>
<dt>type</dt><dd id="tx-type">{e(t['type'])}</dd>
<dt>block</dt><dd>{link(f"/block/{t['height']}", str(t['height']))} (index {e(t['index'])},
 {e(when(t['time']))})</dd>
<dt>sender</dt><dd>{dev_link(t['sender'])}</dd>
<dt>seq</dt><dd>{e(t['seq'])}</dd><dt>fee</dt><dd>{e(t['fee'])}</dd>
<dt>size</dt><dd>{e(t['size_bytes'])} bytes</dd>
</dl>
<h2>Body ({e(t['type'])})</h2>
<p id="tx-body">{e(t['body_text'])}</p>
<pre class="mono">{e(json.dumps(t['body'], indent=1))}</pre>
<h2>Receipt</h2>
<dl><dt>status</dt><dd id="receipt-status">{e(r['status'])}</dd>
<dt>reason</dt><dd>{e(r['reason'] or '-')}</dd></dl>
<h3>Events</h3><ul>{events}</ul>
<h2>Merkle proof</h2>
<div id="proof" data-leaf="{e(p['leaf'])}" data-index="{e(p['index'])}"
 data-size="{e(p['size'])}" data-path="{e(','.join(p['path']))}"
 data-root="{e(p['receipts_root'])}">
<dl><dt>leaf (receipt)</dt><dd class="mono">{e(p['leaf'])}</dd>
<dt>index / leaves</dt><dd>{e(p['index'])} of {e(p['size'])}</dd>
<dt>audit path</dt><dd class="mono">{'<br>'.join(e(x) for x in p['path']) or '(empty: one leaf)'}</dd>
<dt>receipts_root</dt><dd class="mono">{e(p['receipts_root'])}</dd>
<dt>checked by the node</dt><dd id="proof-node">{node_ok}</dd>
<dt>checked in this browser</dt><dd id="proof-result">needs JavaScript</dd></dl></div>"""
    return page(f"Transaction {short(t['id'], 16)}", domain, body)


def search(domain: str, q: str, hits: Sequence[dict[str, str]], error: str = "") -> str:
    if error:
        body = f'<p class="bad">{e(error)}</p>'
    elif not hits:
        body = f"<p>nothing found for <code>{e(q)}</code></p>"
    else:
        href = {"tx": "/tx/", "block": "/block/", "device": "/device/"}
        body = "<ul id=\"hits\">" + "".join(
            f"<li>{e(h['kind'])} {link(href[h['kind']] + h['id'], h['id'], 'mono')} "
            f"{e(h['label'])}</li>" for h in hits) + "</ul>"
    return page(f"Search: {q}", domain, body)


def devices_table(rows: Sequence[dict[str, Any]]) -> str:
    def reading(d: dict[str, Any]) -> str:
        r = d["last_reading"]
        return f"{e(r['text'])} ({e(when(r['time']))})" if r else "-"

    def trust(d: dict[str, Any]) -> str:
        t = d["trust"] or {}
        cells = []
        if "level" in t:  # the domain keeps trust figures (docs/TRUST.md)
            cells.append(f"{e(t['level'])} ({e(t['score'])})")
        if "deliveries" in t:
            cells.append(f"deliveries {e(t['deliveries']['score'])}")
        return ", ".join(cells) or "-"

    def firmware(d: dict[str, Any]) -> str:
        f = d["firmware"]
        if not f:
            return "-"
        return f"v{e(f['version'])}" + (f" (v{e(f['failed'])} rolled back)" if f["failed"] else "")

    return table(("id", "kind", "role", "status", "online", "owner", "balance", "trust",
                  "firmware", "last reading"),
                 ((dev_link(d["id"]), e(d["kind"]), e(d["role"]), e(d["status"]),
                   "yes" if d["online"] else "no", dev_link(d["owner"]), e(d["balance"]),
                   trust(d), firmware(d), reading(d)) for d in rows), "devices")


def devices(domain: str, rows: Sequence[dict[str, Any]]) -> str:
    return page("Devices", domain, section("devices", devices_table(rows)))


def device(domain: str, d: dict[str, Any], readings: Sequence[dict[str, Any]],
           chart: str, streams: Sequence[tuple[str, str]] = ()) -> str:
    """streams: (fragment name, svg) of the market streams it supplies."""
    rows = table(("height", "time", "value", "tx"),
                 ((link(f"/block/{r['height']}", str(r['height'])), e(when(r["time"])),
                   e(r["text"]), tx_link(r["tx"])) for r in reversed(readings)), "readings")
    body = (devices_table([d]) + "<h2>Readings on chain</h2>"
            + section(f"device-chart/{d['id']}", chart) + rows)
    if streams:
        body += "<h2>Market streams it supplies (verified by the gateway)</h2>" + "".join(
            f"<figure>{section(name, svg)}</figure>" for name, svg in streams)
    return page(f"Device {short(d['id'])}", domain, body)


def market_tables(m: dict[str, Any]) -> str:
    offers = table(("supplier", "service", "unit", "price", "every (s)", "location", "expires"),
                   ((dev_link(o["supplier"]), e(o["service"]), e(o["unit"]), e(o["price"]),
                     e(o["interval_s"]), e(o["location"] or "-"), e(when(o["expires"])))
                    for o in m["offers"]), "offers")
    demands = table(("id", "buyer", "service", "max price", "quantity", "policy", "until"),
                    ((f'<span class="mono">{e(d["id"])}</span>', dev_link(d["buyer"]),
                      e(d["service"]), e(d["max_price"]), e(d["quantity"]), e(d["policy"]),
                      e(when(d["until"]))) for d in m["demands"]), "demands")
    agreements = table(("id", "state", "service", "buyer", "supplier", "price", "delivered",
                        "paid", "expiry"),
                       ((f'<span class="mono">{e(a["id"])}</span>', e(a["state"]),
                         e(a["service"]), dev_link(a["buyer"] or ""),
                         dev_link(a["supplier"] or ""), e(a["price"]),
                         f'{e(a["delivered"])}/{e(a["quantity"])}', e(a["paid"]),
                         e(when(a["expiry"]))) for a in m["agreements"]), "agreements")
    payments = table(("height", "time", "event", "what", "tx"),
                     ((link(f"/block/{p['height']}", str(p["height"])), e(when(p["time"])),
                       e(p["event"]), e(p["text"]), tx_link(p["tx"]))
                      for p in m["payments"]), "payments")
    return (f"<h2>Offers ({len(m['offers'])})</h2>{offers}"
            f"<h2>Waiting demands ({len(m['demands'])})</h2>{demands}"
            f"<h2>Agreements ({len(m['agreements'])})</h2>{agreements}"
            f"<h2>Payments</h2>{payments}")


def market(domain: str, m: dict[str, Any]) -> str:
    return page("Market", domain, section("market", market_tables(m)))


def plots(domain: str, charts: Sequence[tuple[str, str]]) -> str:
    """charts: (fragment name, svg) pairs, each refreshed live."""
    body = "".join(f"<figure>{section(name, svg)}</figure>" for name, svg in charts) \
        or "<p>no readings yet</p>"
    return page("Plots", domain, body)


def error(domain: str, status: int, message: str) -> str:
    return page(f"{status}", domain, f'<p class="bad" id="error">{e(message)}</p>')


def quoted(s: str) -> str:
    return quote(s, safe="")
