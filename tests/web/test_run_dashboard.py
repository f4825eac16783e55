"""`thingledger run` (what `make run` starts) prints the dashboard's URL, and
the dashboard shows the live market of the virtual boards: offers, an open
agreement, the boards online, the broker connections gauge; `--no-http`
serves nothing; the config file's `http` key is checked."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from gateway.errors import ConfigError
from gateway.node.config import from_dict
from tests.support.brokers import free_port, wait_until
from tests.support.waits import drain, lines, wait_line
from tools.build import tool


def start_run(cwd: Path, *extra: str, http: str = "127.0.0.1:0") -> subprocess.Popen:
    return subprocess.Popen([tool("thingledger"), "run", "--http", http, "--listen",
                             f"mqtt://127.0.0.1:{free_port()}", "--block-interval", "0.5",
                             *extra], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=dict(os.environ, PYTHONUNBUFFERED="1"),
                            start_new_session=True)


@pytest.mark.micropython
def test_run_prints_the_dashboard_url_and_it_shows_the_live_market(tmp_path: Path) -> None:
    p = start_run(tmp_path, "--seconds", "90")
    q, seen = lines(p), []
    try:
        url = wait_line(q, r"dashboard (http://127\.0\.0\.1:\d+/)", 60, seen)
        url = re.search(r"(http://\S+/)", url)[1]
        c = httpx.Client(base_url=url, timeout=10)

        def live_market():
            m = c.get("/api/v1/market").json()
            services = {o["service"] for o in m["offers"]}
            opened = [a for a in m["agreements"] if a["state"] == "open"]
            return m if {"temperature", "temperature-mean"} <= services and opened else None

        m = wait_until(live_market, 60, 0.5, "the boards' offers and an open agreement")
        page = c.get("/market").text
        for o in m["offers"]:
            assert o["supplier"] in page
        # a supplier's page charts the readings the gateway verified off chain
        m = wait_until(lambda: (x := c.get("/api/v1/market").json())["streams"] and x, 60, 0.5,
                       "a verified stream")
        aid = m["streams"][0]["agreement"]
        sup = next(a["supplier"] for a in m["agreements"] if a["id"] == aid)
        dev_page = c.get(f"/device/{sup}").text
        assert "Market streams it supplies" in dev_page and f"agreement {aid[:12]}" in dev_page
        assert int(re.findall(r'data-points="(\d+)"', dev_page)[-1]) >= 1
        o = wait_until(lambda: (d := c.get("/api/v1/overview").json())["devices_online"] >= 4
                       and d, 30, 0.5, "four boards online")
        assert o["height"] > 0 and o["domain"] == "demo"
        metrics = c.get("/metrics").text
        n = float(re.search(r"^thingledger_broker_connections (\S+)$", metrics, re.M)[1])
        assert n >= 5  # four boards and the gateway
        c.close()
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGINT)
        rc = p.wait(60)
        drain(q, seen)
    assert rc == 0, "\n".join(seen[-30:])


def test_a_port_in_use_is_said_and_the_gateway_runs_on(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        p = subprocess.run([tool("thingledger"), "run", "--no-boards", "--listen",
                            f"mqtt://127.0.0.1:{free_port()}", "--http", f"127.0.0.1:{port}",
                            "--seconds", "1"], cwd=tmp_path, capture_output=True, text=True,
                           timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr
    assert f"warning: no dashboard: cannot listen on 127.0.0.1:{port}" in p.stdout
    assert "stopped at height 0" in p.stdout


def test_no_http_serves_nothing_and_the_config_key(tmp_path: Path) -> None:
    port = free_port()
    p = subprocess.run([tool("thingledger"), "run", "--no-boards", "--listen",
                        f"mqtt://127.0.0.1:{free_port()}", "--no-http", "--http",
                        f"127.0.0.1:{port}", "--seconds", "1"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "dashboard" not in p.stdout and "chain demo at height" in p.stdout
    cfg = from_dict({"domain": "demo", "http": "0.0.0.0:9000"}, tmp_path)
    assert cfg.http == "0.0.0.0:9000"
    assert from_dict({"domain": "demo"}, tmp_path).http == "127.0.0.1:8080"
    assert from_dict({"domain": "demo", "http": ""}, tmp_path).http == ""
    for bad in ("8080", "localhost", "host:port", ":80"):
        with pytest.raises(ConfigError) as e:
            from_dict({"domain": "demo", "http": bad}, tmp_path)
        assert e.value.key == "http"
    assert sys.executable  # the CLI under test is this venv's
