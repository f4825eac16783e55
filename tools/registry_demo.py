"""`thingledger registry demo`: two registry nodes syncing (docs/IDENTITY.md §1).

In a temporary folder: an embedded broker on a free loopback port (limits
raised for registry replies), a registry genesis (`registry init`), a second
node's folder made from that genesis file only (`registry init --genesis`),
node "maker" (`registry serve --mine`) and node "retailer" (`registry
serve`). A manufacturer registers itself and a device through the broker
(`registry manufacturer/record --to`); the retailer's node gets the blocks;
then the retailer node is stopped, two more devices are registered, and it
is started again and catches up; last a light lookup (`registry show
--from`) checks the record's proof and the header chain. Every step prints
the command it runs and what the nodes say; each wait is bounded.
"""

from __future__ import annotations

import queue
import re
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from tools.build import tool

STEP_TIMEOUT_S = 60.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Node:
    def __init__(self, name: str, args: list[str], say: Callable[[str], None]) -> None:
        self.name, self.args, self.say = name, args, say
        self.lines: queue.Queue[str] = queue.Queue()
        self.start()

    def start(self) -> None:
        self.proc = subprocess.Popen([tool("thingledger"), *self.args], stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)

        def pump(p: subprocess.Popen) -> None:
            assert p.stdout is not None
            for line in p.stdout:
                line = line.rstrip()
                self.say("  [%s] %s" % (self.name, line))
                self.lines.put(line)
        threading.Thread(target=pump, args=(self.proc,), daemon=True).start()

    def wait(self, pattern: str) -> str:
        rx = re.compile(pattern)
        deadline = time.monotonic() + STEP_TIMEOUT_S
        while True:
            try:
                line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise RuntimeError("node %s: no %r in %g s" % (self.name, pattern,
                                                               STEP_TIMEOUT_S)) from None
            if rx.search(line):
                return line

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def demo(say: Callable[[str], None] = print) -> bool:
    from gateway.broker.embedded import BrokerLimits, ThreadedBroker

    port = _free_port()
    broker = ThreadedBroker("127.0.0.1", port, limits=BrokerLimits(
        max_packet_size=16 * 1024 * 1024, queue_bytes=64 * 1024 * 1024))
    broker.start()
    url = broker.url
    say("broker        embedded, %s" % url)
    nodes: list[_Node] = []
    with tempfile.TemporaryDirectory(prefix="registry-demo-") as tmp:
        d = Path(tmp)

        def run(*args: str) -> str:
            say("$ thingledger " + " ".join(args))
            r = subprocess.run([tool("thingledger"), *args], capture_output=True, text=True,
                               timeout=STEP_TIMEOUT_S)
            for line in (r.stdout + r.stderr).splitlines():
                say("  " + line)
            if r.returncode:
                raise RuntimeError("exit %d" % r.returncode)
            return r.stdout

        try:
            maker, shop = str(d / "maker"), str(d / "retailer")
            run("registry", "init", "--registry-dir", maker, "--difficulty-bits", "12",
                "--block-time", "1")
            genesis = str(d / "maker" / "registry.toml")
            run("registry", "init", "--registry-dir", shop, "--genesis", genesis)
            serve = ["registry", "serve", "--broker", url, "--registry-dir"]
            nodes.append(_Node("maker", serve + [maker, "--node-id", "maker", "--mine"], say))
            nodes.append(_Node("retailer", serve + [shop, "--node-id", "retailer"], say))
            for n in nodes:
                n.wait("^connected$")
            run("key", "new", "--out", str(d / "acme.key"))
            remote = ["--to", url, "--genesis", genesis]
            run("registry", "manufacturer", "--key", str(d / "acme.key"), "--name", "Acme",
                *remote)
            devices = []
            for i in range(3):
                out = run("key", "new", "--out", str(d / ("dev%d.key" % i)))
                devices.append(re.search(r"pubkey\s+([0-9a-f]{66})", out).group(1))  # type: ignore[union-attr]
            record = ["registry", "record", "--key", str(d / "acme.key"), "--model", "TH-1",
                      "--manufactured", "2026-01-01", "--warranty-end", "2028-01-01", *remote]
            out = run(*record, "--pubkey", devices[0], "--serial", "SN-0")
            height = int(re.search(r"height\s+(\d+)", out).group(1))  # type: ignore[union-attr]
            nodes[1].wait(r"^head %d " % height)
            say("retailer node has block %d: the nodes are in sync" % height)
            nodes[1].stop()
            say("retailer node stopped; two more devices registered meanwhile")
            for i in (1, 2):
                out = run(*record, "--pubkey", devices[i], "--serial", "SN-%d" % i)
            height = int(re.search(r"height\s+(\d+)", out).group(1))  # type: ignore[union-attr]
            nodes[1].start()
            nodes[1].wait(r"^head %d " % height)
            say("retailer node restarted and caught up to block %d" % height)
            run("registry", "show", devices[2], "--from", url, "--genesis", genesis)
            run("registry", "show", devices[2], "--registry-dir", shop)
            say("demo OK: two registry nodes synced over MQTT")
            return True
        except RuntimeError as e:
            say("demo FAILED: %s" % e)
            return False
        finally:
            for n in nodes:
                n.stop()
            broker.stop()
