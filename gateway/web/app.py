"""The dashboard's aiohttp application and its server (docs/API.md, "Web
dashboard"), running in the gateway's own event loop.

Read-only: GET (and HEAD) only; nothing here writes to the chain. Data comes
from two places: the node's in-memory state (devices, market, online
devices), read on the loop, which is cheap and bounded; and the SQLite
files (blocks, transactions, receipts, readings), read through
gateway/web/reader.ChainReader in one thread of its own, so a slow query
never runs on the loop that cuts blocks.

Bad input: ids, prefixes and numbers are checked (views.hex_arg & co.)
before any query; a malformed one is 400 with a message, an unknown one
404 (JSON {"error": reason, "detail": ...} under /api/, an HTML page
elsewhere). List sizes are capped (reader.MAX_LIMIT).

Slow and hostile clients (WebServer): at most `max_connections` sockets;
a socket with no request running that has been quiet for `idle_s`
(a slowloris sending its headers a byte at a time, an idle keep-alive) is
closed by a sweep every second; at the limit a newcomer takes the place of
the quietest such socket, or is closed at once if every socket is busy.
Event streams are capped apart (events.MAX_STREAMS).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from gateway.errors import BAD_QUERY, WebError
from gateway.market.ledger.rules import agreement, open_agreements
from gateway.node.config import STREAMS_FILE
from gateway.web import charts, pages, views
from gateway.web.events import EventHub
from gateway.web.reader import MAX_LIMIT, ChainReader
from gateway.web.script import JS
from shared import txnames

if TYPE_CHECKING:
    from gateway.node.service import Gateway

T = TypeVar("T")
DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 8080
PAGE = 50  # rows of a list page
CHART_POINTS = 120
PLOTS = 12  # devices / streams on the plots page
MAX_HEIGHT = 1 << 62


def parse_listen(text: str) -> tuple[str, int]:
    """HOST:PORT (port 0: any free port). Raises ValueError."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{text!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


class Dashboard:
    """The handlers: one Gateway's chain, state and metrics as pages and JSON."""

    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        self.domain = gw.cfg.domain
        self.consensus = str(getattr(gw.led.genesis, "consensus", "authority"))
        self.reader = ChainReader(gw.cfg.db_path, gw.cfg.data_dir / STREAMS_FILE)
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="web-reader")
        self.hub = EventHub()
        self._watch: asyncio.Task | None = None
        self._cache: dict[str, tuple[int, Any]] = {}

    # -- plumbing ---------------------------------------------------------------
    async def db(self, fn: Callable[..., T], *args: Any) -> T:
        """fn(*args) in the reader thread (SQL never runs on the loop)."""
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)

    def start(self) -> None:
        self._watch = asyncio.create_task(self._on_blocks(), name="web-events")

    async def close(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
        await self.db(self.reader.close)
        self.pool.shutdown(wait=True)

    async def _on_blocks(self) -> None:
        """Push an overview event after every block the node commits (while
        anyone listens)."""
        while True:
            await self.gw.committed.wait()
            if not self.hub.streams:
                continue
            try:
                self.hub.publish("block", await self.overview())
            except Exception as e:  # a read failed: the next block tries again
                self.gw.on_event(f"dashboard: cannot read the new block: {e!r}")

    # -- documents ----------------------------------------------------------------
    async def overview(self) -> dict[str, Any]:
        recent = await self.db(self.reader.blocks, None, 200)
        head = await self.db(self.reader.head)
        assert head is not None
        state = self.gw.led.state
        return views.overview(self.domain, self.consensus, head, recent, len(state.devices),
                              len(self.gw.metrics.online()), len(open_agreements(state)),
                              time.time())

    async def block_ref(self, ref: str) -> int:
        """A block height from a height or a full hash."""
        if ref.isdigit():
            return views.int_arg(ref, "height", 0, MAX_HEIGHT)
        h = await self.db(self.reader.height_of_hash, views.id_arg(ref, "block hash", 32))
        if h is None:
            raise views.not_found("block")
        return h

    async def block_doc(self, ref: str) -> dict[str, Any]:
        height = await self.block_ref(ref)
        b = await self.db(self.reader.block, height)
        if b is None:
            raise views.not_found("block")
        return views.block(b, await self.db(self.reader.block_txs, height, MAX_LIMIT))

    async def tx_doc(self, ref: str) -> dict[str, Any]:
        tx_id = views.id_arg(ref, "transaction id", 32)
        t = await self.db(self.reader.tx, tx_id)
        if t is None:
            raise views.not_found("transaction")
        b = await self.db(self.reader.block, t.height)
        receipt = await self.db(self.reader.receipt, tx_id)
        assert b is not None and receipt is not None
        return views.tx(t, b, receipt)

    async def search(self, q: str | None) -> list[dict[str, str]]:
        text = (q or "").strip().lower()
        if not text:
            raise WebError(BAD_QUERY, "q is required: a block height, or hex of a "
                           "transaction id, block hash or device id (a prefix will do)")
        hits: list[dict[str, str]] = []
        if text.isdigit() and len(text) < 19:
            b = await self.db(self.reader.block, int(text))
            if b is not None:
                hits.append(views.search_result("block", str(b.height),
                                                f"block at height {b.height}"))
        h = views.hex_arg(text, "q", 64) if not hits else text
        if not hits:
            for tx_id, height, type_ in await self.db(self.reader.txs_with_prefix, h, 20):
                hits.append(views.search_result("tx", tx_id.hex(),
                                                f"{txnames.name(type_)} at height {height}"))
            for height, bh in await self.db(self.reader.blocks_with_prefix, h, 20):
                hits.append(views.search_result("block", str(height),
                                                f"block {bh.hex()[:16]} at height {height}"))
            if len(h) <= 32:
                for i in self.gw.led.state.devices:
                    if i.hex().startswith(h):
                        hits.append(views.search_result("device", i.hex(), "principal"))
                        if len(hits) >= 60:
                            break
        return hits

    async def per_block(self, name: str, fn: Callable[..., T], *args: Any) -> T:
        """fn(*args) in the reader thread, once per head block: what scans
        many rows (each device's latest reading, the latest payments) is
        read again only when a new block may have changed it."""
        height = self.gw.led.head.height
        hit = self._cache.get(name)
        if hit is not None and hit[0] == height:
            return hit[1]
        value = await self.db(fn, *args)
        self._cache[name] = (height, value)
        return value

    async def devices_doc(self) -> list[dict[str, Any]]:
        latest = await self.per_block("latest", self.reader.latest_readings)
        state = self.gw.led.state
        items = heapq.nsmallest(MAX_LIMIT, state.devices.items())  # the first by id
        return views.devices(items, set(self.gw.metrics.online()), latest, state,
                             self.gw.led.rules.trust)

    async def device_doc(self, ref: str) -> dict[str, Any]:
        i = views.id_arg(ref, "device id", 16)
        state = self.gw.led.state
        r = state.get(i)
        if r is None:
            raise views.not_found("device")
        rows = await self.db(self.reader.readings, i, 1)
        return views.device(i, r, i.hex() in self.gw.metrics.online(), rows[-1] if rows else None,
                            views.trust(state, i, self.gw.led.rules.trust), state)

    async def readings_doc(self, ref: str, limit: int) -> list[dict[str, Any]]:
        i = views.id_arg(ref, "device id", 16)
        if self.gw.led.state.get(i) is None:
            raise views.not_found("device")
        return [views.reading(r) for r in await self.db(self.reader.readings, i, limit)]

    async def market_doc(self, limit: int = MAX_LIMIT) -> dict[str, Any]:
        pay = await self.per_block("payments", self.reader.payments, 200)
        streams = await self.db(self.reader.stream_agreements, 50)
        return views.market_doc(self.gw.led.state, pay, streams, limit)

    async def streams_of(self, supplier_hex: str) -> list[str]:
        """The ids (hex) of the verified streams this device supplies, newest first."""
        sup = bytes.fromhex(supplier_hex)
        out = []
        for aid, _, _ in await self.db(self.reader.stream_agreements, 50):
            a = agreement(self.gw.led.state, aid)
            if a is not None and a.get("supplier") == sup:
                out.append(aid.hex())
        return out[:PLOTS]

    async def stream_doc(self, ref: str, limit: int) -> list[dict[str, Any]]:
        aid = views.id_arg(ref, "agreement id", 16)
        rows = await self.db(self.reader.stream, aid, limit)
        if not rows:
            raise views.not_found("stream")
        return [{"index": i, "value": v, "scale": s, "received": t,
                 "text": views.decimal_text(v, s)} for i, v, s, t in rows]

    # -- charts --------------------------------------------------------------------
    async def chart_throughput(self) -> str:
        rows = list(reversed(await self.db(self.reader.blocks, None, CHART_POINTS)))
        return charts.bars("transactions per block", [(b.time, b.n_txs) for b in rows])

    async def chart_interval(self) -> str:
        rows = list(reversed(await self.db(self.reader.blocks, None, CHART_POINTS + 1)))
        pts = [(b.time, b.time - a.time) for a, b in zip(rows, rows[1:], strict=False)]
        return charts.line("block interval", pts, " s")

    async def chart_device(self, ref: str) -> str:
        i = views.id_arg(ref, "device id", 16)
        rows = await self.db(self.reader.readings, i, CHART_POINTS)
        return charts.line(f"readings of {i.hex()[:12]} (on chain)",
                           [(r.time, float(views.decimal_text(r.value, r.scale)))
                            for r in rows])

    async def chart_stream(self, ref: str) -> str:
        aid = views.id_arg(ref, "agreement id", 16)
        rows = await self.db(self.reader.stream, aid, CHART_POINTS)
        a = agreement(self.gw.led.state, aid) or {}
        who = a.get("supplier")
        what = (f"{a.get('service')} from {who.hex()[:12]}"
                if isinstance(who, bytes) else "stream")
        return charts.line(f"{what} (agreement {aid.hex()[:12]}, verified off chain)",
                           [(t, float(views.decimal_text(v, s))) for _, v, s, t in rows])

    async def plots(self) -> list[tuple[str, str]]:
        out = [("throughput", await self.chart_throughput()),
               ("interval", await self.chart_interval())]
        for dev in await self.db(self.reader.reading_senders, PLOTS):
            out.append((f"device-chart/{dev.hex()}", await self.chart_device(dev.hex())))
        for aid, _, _ in await self.db(self.reader.stream_agreements, PLOTS):
            out.append((f"stream-chart/{aid.hex()}", await self.chart_stream(aid.hex())))
        return out

    async def fragment(self, name: str) -> str:
        """The HTML of one live section (pages.section)."""
        kind, _, arg = name.partition("/")
        if kind == "overview-charts":
            return await self.chart_throughput() + await self.chart_interval()
        if kind == "recent-blocks":
            return pages.blocks_table([views.block_row(b) for b in
                                       await self.db(self.reader.blocks, None, 10)])
        if kind == "blocks":
            return pages.blocks_table([views.block_row(b) for b in
                                       await self.db(self.reader.blocks, None, PAGE)])
        if kind == "devices":
            return pages.devices_table(await self.devices_doc())
        if kind == "market":
            return pages.market_tables(await self.market_doc())
        if kind == "throughput":
            return await self.chart_throughput()
        if kind == "interval":
            return await self.chart_interval()
        if kind == "device-chart":
            return await self.chart_device(arg)
        if kind == "stream-chart":
            return await self.chart_stream(arg)
        raise views.not_found("fragment")


# -- the application ------------------------------------------------------------------
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def make_app(d: Dashboard, on_request: Callable[[web.Request, bool], None] | None = None
             ) -> web.Application:
    """The routes over a Dashboard. `on_request(request, started)` is told of
    each request's start and end (WebServer's idle bookkeeping)."""

    @web.middleware
    async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
        if on_request is not None:
            on_request(request, True)
        try:
            return await handler(request)
        except WebError as e:
            if request.path.startswith("/api/"):
                return web.json_response({"error": e.reason, "detail": e.detail},
                                         status=e.http_status)
            return web.Response(text=pages.error(d.domain, e.http_status, e.detail),
                                status=e.http_status, content_type="text/html")
        finally:
            if on_request is not None:
                on_request(request, False)

    def html(text: str) -> web.Response:
        return web.Response(text=text, content_type="text/html")

    def limit(request: web.Request, default: int = PAGE) -> int:
        return views.int_arg(request.query.get("limit"), "limit", 1, MAX_LIMIT, default)

    def before(request: web.Request) -> int | None:
        b = request.query.get("before")
        return None if b is None else views.int_arg(b, "before", 0, MAX_HEIGHT)

    async def overview_page(request: web.Request) -> web.Response:
        o = await d.overview()
        recent = [views.block_row(b) for b in await d.db(d.reader.blocks, None, 10)]
        return html(pages.overview(o, recent, [await d.chart_throughput(),
                                               await d.chart_interval()]))

    async def blocks_page(request: web.Request) -> web.Response:
        rows = await d.db(d.reader.blocks, before(request), limit(request))
        older = rows[-1].height - 1 if rows and rows[-1].height > 0 else None
        return html(pages.blocks(d.domain, [views.block_row(b) for b in rows], older))

    async def block_page(request: web.Request) -> web.Response:
        return html(pages.block(d.domain, await d.block_doc(request.match_info["ref"])))

    async def tx_page(request: web.Request) -> web.Response:
        ref = request.match_info["id"]
        if len(ref) < 64 and views.HEX.fullmatch(ref.lower()):  # a prefix: search it
            raise web.HTTPSeeOther(f"/search?q={pages.quoted(ref)}")
        return html(pages.tx(d.domain, await d.tx_doc(ref)))

    async def search_page(request: web.Request) -> web.Response:
        q = request.query.get("q", "")
        hits = await d.search(q)
        if len(hits) == 1:  # one hit: go there
            h = hits[0]
            raise web.HTTPSeeOther({"tx": "/tx/", "block": "/block/",
                                    "device": "/device/"}[h["kind"]] + h["id"])
        return html(pages.search(d.domain, q, hits))

    async def devices_page(request: web.Request) -> web.Response:
        return html(pages.devices(d.domain, await d.devices_doc()))

    async def device_page(request: web.Request) -> web.Response:
        ref = request.match_info["id"]
        doc = await d.device_doc(ref)
        readings = await d.readings_doc(ref, PAGE)
        streams = [(f"stream-chart/{aid}", await d.chart_stream(aid))
                   for aid in await d.streams_of(doc["id"])]
        return html(pages.device(d.domain, doc, readings, await d.chart_device(ref), streams))

    async def market_page(request: web.Request) -> web.Response:
        return html(pages.market(d.domain, await d.market_doc()))

    async def plots_page(request: web.Request) -> web.Response:
        return html(pages.plots(d.domain, await d.plots()))

    async def fragment(request: web.Request) -> web.Response:
        return html(await d.fragment(request.match_info["name"]))

    async def script(request: web.Request) -> web.Response:
        return web.Response(text=JS, content_type="application/javascript",
                            headers={"Cache-Control": "max-age=300"})

    async def metrics(request: web.Request) -> web.Response:
        resp = web.Response(body=d.gw.metrics_text())
        resp.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return resp

    # -- /api/v1 -------------------------------------------------------------------
    def j(doc: Any) -> web.Response:
        return web.json_response(doc)

    async def api_overview(request: web.Request) -> web.Response:
        return j(await d.overview())

    async def api_blocks(request: web.Request) -> web.Response:
        rows = await d.db(d.reader.blocks, before(request), limit(request))
        return j([views.block_row(b) for b in rows])

    async def api_block(request: web.Request) -> web.Response:
        return j(await d.block_doc(request.match_info["ref"]))

    async def api_tx(request: web.Request) -> web.Response:
        return j(await d.tx_doc(request.match_info["id"]))

    async def api_search(request: web.Request) -> web.Response:
        return j(await d.search(request.query.get("q")))

    async def api_devices(request: web.Request) -> web.Response:
        return j(await d.devices_doc())

    async def api_device(request: web.Request) -> web.Response:
        return j(await d.device_doc(request.match_info["id"]))

    async def api_readings(request: web.Request) -> web.Response:
        return j(await d.readings_doc(request.match_info["id"], limit(request, 100)))

    async def api_market(request: web.Request) -> web.Response:
        return j(await d.market_doc(limit(request, MAX_LIMIT)))

    async def api_stream(request: web.Request) -> web.Response:
        return j(await d.stream_doc(request.match_info["id"], limit(request, 100)))

    async def api_events(request: web.Request) -> web.StreamResponse:
        return await d.hub.stream(request, await d.overview())

    app = web.Application(middlewares=[errors], client_max_size=1024)
    app.add_routes([
        web.get("/", overview_page), web.get("/blocks", blocks_page),
        web.get("/block/{ref}", block_page), web.get("/tx/{id}", tx_page),
        web.get("/search", search_page), web.get("/devices", devices_page),
        web.get("/device/{id}", device_page), web.get("/market", market_page),
        web.get("/plots", plots_page), web.get("/fragment/{name:.+}", fragment),
        web.get("/static/dashboard.js", script), web.get("/metrics", metrics),
        web.get("/api/v1/overview", api_overview), web.get("/api/v1/blocks", api_blocks),
        web.get("/api/v1/blocks/{ref}", api_block), web.get("/api/v1/txs/{id}", api_tx),
        web.get("/api/v1/search", api_search), web.get("/api/v1/devices", api_devices),
        web.get("/api/v1/devices/{id}", api_device),
        web.get("/api/v1/devices/{id}/readings", api_readings),
        web.get("/api/v1/market", api_market), web.get("/api/v1/streams/{id}", api_stream),
        web.get("/api/v1/events", api_events),
    ])
    return app


class _Refuse(asyncio.Protocol):
    """The protocol of a connection over the limit: closed at once."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.close()


class _Counted(asyncio.Protocol):
    """aiohttp's request handler for one connection, passed every call, so
    that its WebServer knows when the connection ends (aiohttp's handlers
    take no weak references and say nothing when they close)."""

    def __init__(self, owner: WebServer, inner: Any) -> None:
        self.owner, self.inner = owner, inner

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.inner.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.owner.forget(self.inner)
        self.inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()


class WebServer:
    """The dashboard on HOST:PORT in the running event loop (see the module
    docstring for its limits). `port` is the bound port after start()."""

    def __init__(self, gw: Gateway, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, *,
                 max_connections: int = 64, idle_s: float = 10.0) -> None:
        self.dashboard = Dashboard(gw)
        self.host, self.port = host, port
        self.max_connections = max_connections
        self.idle_s = idle_s
        self.refused = 0
        self.closed_idle = 0
        # per open connection's handler: when it last started or ended a request
        # (or connected), and how many requests it is running
        self._quiet_since: dict[Any, float] = {}
        self._busy: dict[Any, int] = {}
        self._closing: set[Any] = set()  # closed by us, connection_lost still to come
        self._runner: web.AppRunner | None = None
        self._server: asyncio.Server | None = None
        self._sweeper: asyncio.Task | None = None

    @property
    def open_connections(self) -> int:
        """HTTP connections open now (accepted, not yet closed or being closed)."""
        return len(self._quiet_since) - len(self._closing)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def forget(self, handler: Any) -> None:
        """A connection ended."""
        self._quiet_since.pop(handler, None)
        self._busy.pop(handler, None)
        self._closing.discard(handler)

    def _on_request(self, request: web.Request, started: bool) -> None:
        p = request.protocol
        if p in self._quiet_since:
            self._busy[p] = self._busy.get(p, 0) + (1 if started else -1)
            self._quiet_since[p] = time.monotonic()

    def _close(self, handler: Any) -> None:
        if handler not in self._closing:
            self._closing.add(handler)
            self.closed_idle += 1
            handler.force_close()

    def _quiet(self) -> list[tuple[float, Any]]:
        """(quiet since, handler) of the open connections with no request
        running, quietest first."""
        return sorted(((t, h) for h, t in self._quiet_since.items()
                       if not self._busy.get(h) and h not in self._closing
                       and h.transport is not None), key=lambda x: x[0])

    def _protocol(self) -> asyncio.Protocol:
        server = self._runner.server if self._runner is not None else None
        assert server is not None
        if self.open_connections >= self.max_connections:
            quiet = self._quiet()
            if not quiet:
                self.refused += 1
                return _Refuse()
            self._close(quiet[0][1])
        h = server()
        self._quiet_since[h] = time.monotonic()
        return _Counted(self, h)

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            for since, h in self._quiet():
                if now - since > self.idle_s:
                    self._close(h)

    async def start(self) -> None:
        app = make_app(self.dashboard, self._on_request)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False,
                                     shutdown_timeout=2.0,
                                     keepalive_timeout=self.idle_s, max_line_size=8190,
                                     max_field_size=8190)
        await self._runner.setup()
        loop = asyncio.get_running_loop()
        try:
            self._server = await loop.create_server(self._protocol, self.host, self.port,
                                                    backlog=128, reuse_address=True)
        except OSError:
            await self._runner.cleanup()
            await self.dashboard.close()
            raise
        self.port = self._server.sockets[0].getsockname()[1]
        self.dashboard.start()
        self._sweeper = asyncio.create_task(self._sweep(), name="web-sweep")

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        self.dashboard.hub.close()
        if self._server is not None:
            self._server.close()
        if self._runner is not None:
            await self._runner.shutdown()
            await self._runner.cleanup()
        await self.dashboard.close()
