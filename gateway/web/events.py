"""Server-sent events for the pages' live updates (/api/v1/events).

An EventHub fans each event out to the open streams. A stream is a bounded
queue: a client that does not read loses the oldest events, never holds
the gateway up (publish never waits), and a write it leaves unread for
WRITE_TIMEOUT_S closes its stream. At most `max_streams` streams are open;
one more is answered 503.

Wire form (text/event-stream): `event: block` with `data:` one JSON line
(views.overview's document: height, hash, tx_per_s, ...), a `: ping`
comment every PING_S so proxies and the browser keep the stream open.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

from aiohttp import web

QUEUE = 16  # events a slow stream may be behind before the oldest are dropped
PING_S = 15.0
WRITE_TIMEOUT_S = 10.0
MAX_STREAMS = 32


class EventHub:
    def __init__(self, max_streams: int = MAX_STREAMS) -> None:
        self.max_streams = max_streams
        self.streams: set[asyncio.Queue[tuple[str, str]]] = set()
        self.sent = 0
        self.closed = False

    def publish(self, name: str, data: dict[str, Any]) -> None:
        """Queue an event for every open stream (drops a lagging stream's oldest)."""
        item = (name, json.dumps(data, separators=(",", ":")))
        for q in self.streams:
            if q.full():
                with contextlib.suppress(asyncio.QueueEmpty):
                    q.get_nowait()
            q.put_nowait(item)
        self.sent += 1

    def close(self) -> None:
        """End every open stream (the server is stopping)."""
        self.closed = True
        self.publish("", {})

    async def stream(self, request: web.Request, first: dict[str, Any] | None) -> web.StreamResponse:
        """Serve one event stream until the client goes (or the server stops)."""
        if len(self.streams) >= self.max_streams:
            raise web.HTTPServiceUnavailable(text=f"at most {self.max_streams} event streams",
                                             headers={"Retry-After": "10"})
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                           "Cache-Control": "no-cache",
                                           "X-Accel-Buffering": "no"})
        await resp.prepare(request)
        q: asyncio.Queue[tuple[str, str]] = asyncio.Queue(QUEUE)
        self.streams.add(q)
        try:
            await self._write(resp, "retry: 2000\n\n")
            if first is not None:
                await self._write(resp, _frame("block", json.dumps(first)))
            while True:
                try:
                    name, data = await asyncio.wait_for(q.get(), PING_S)
                except TimeoutError:
                    if request.transport is None or request.transport.is_closing():
                        break  # the client went
                    await self._write(resp, ": ping\n\n")
                    continue
                if self.closed:
                    break
                await self._write(resp, _frame(name, data))
        except (ConnectionError, TimeoutError):
            pass  # the client went, or stopped reading
        finally:
            self.streams.discard(q)
        return resp

    @staticmethod
    async def _write(resp: web.StreamResponse, text: str) -> None:
        async with asyncio.timeout(WRITE_TIMEOUT_S):
            await resp.write(text.encode())


def _frame(name: str, data: str) -> str:
    return f"event: {name}\ndata: {data}\n\n"
