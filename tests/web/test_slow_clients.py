"""Slow and hostile HTTP clients cannot stall the gateway: with many idle
and slowloris connections open (headers sent a byte at a time), blocks keep
being cut, the server holds at most its connection limit, quiet sockets
are closed after idle_s, a newcomer still gets its page, and event streams
are capped apart (503 beyond). Also the live event stream itself: a block
event after each block."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import httpx
import pytest

from tests.support.brokers import wait_until
from tests.support.webtest import Feeder, WebGateway, ok, wait_height_above

LIMIT, IDLE_S, ATTACKERS = 8, 1.0, 40


@pytest.fixture
def web(amqtt_broker, tmp_path: Path):
    w = WebGateway(tmp_path / "gw", amqtt_broker, max_connections=LIMIT, idle_s=IDLE_S)
    try:
        yield w
    finally:
        w.close()


def test_idle_and_slowloris_connections_do_not_stall_blocks(web: WebGateway) -> None:
    dev = web.device("sensor")
    ok(dev, dev.reading_tx())
    feeder = Feeder(dev, every=0.1)
    socks: list[socket.socket] = []
    try:
        feeder.start()
        h0 = web.height()
        host, port = "127.0.0.1", web.server.port
        for i in range(ATTACKERS):  # half idle, half slowloris
            s = socket.create_connection((host, port), timeout=5)
            if i % 2:
                s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
            socks.append(s)
        most = 0
        h = h0
        for _ in range(3):  # three rounds of the slowloris trickling on while blocks come
            for s in socks[1::2]:
                try:
                    s.sendall(b"X")
                except OSError:
                    pass  # closed by the server: as it should be
            most = max(most, web.call(_count(web)))
            h = wait_height_above(web, h)
        assert h >= h0 + 3
        assert most <= LIMIT
        assert web.server.open_connections <= LIMIT
        # a newcomer gets its page: it takes a quiet socket's place
        r = httpx.get(web.url + "/api/v1/overview", timeout=10)
        assert r.status_code == 200 and r.json()["height"] >= h
        # those over the limit were refused or took a quiet one's place, and
        # quiet sockets are closed after IDLE_S: the server keeps none of them
        assert web.server.refused + web.server.closed_idle >= ATTACKERS - LIMIT
        wait_until(lambda: web.server.open_connections == 0, 10, 0.1, "no socket left open")
    finally:
        feeder.stop()
        for s in socks:
            s.close()


async def _count(web: WebGateway) -> int:
    """The server's open connections, read on the gateway's loop."""
    return web.server.open_connections


def test_event_stream_sends_blocks_and_is_capped(web: WebGateway) -> None:
    dev = web.device("sensor")
    ok(dev, dev.reading_tx())
    web.server.dashboard.hub.max_streams = 2
    feeder = Feeder(dev, every=0.2)
    feeder.start()
    try:
        with httpx.Client(base_url=web.url, timeout=20) as c:
            with c.stream("GET", "/api/v1/events") as s1, c.stream("GET", "/api/v1/events"):
                assert s1.headers["content-type"].startswith("text/event-stream")
                # a third stream is refused while two are open
                third = httpx.get(web.url + "/api/v1/events", timeout=10)
                assert third.status_code == 503
                heights = []
                event = None
                deadline = time.monotonic() + 20
                for line in s1.iter_lines():
                    if line.startswith("event: "):
                        event = line[7:]
                    elif line.startswith("data: ") and event == "block":
                        heights.append(json.loads(line[6:])["height"])
                        if len(heights) >= 3 and heights[-1] > heights[0]:
                            break
                    assert time.monotonic() < deadline, heights
        assert heights == sorted(heights) and heights[-1] > heights[0]
    finally:
        feeder.stop()
