"""Helpers for the registry network tests: `thingledger registry serve`
processes, a TCP proxy whose cut() splits one node from the broker, and
blocks built by hand (good and bad) for a node to refuse."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from gateway.registry import chain, open_registry
from gateway.registry import pow as pw
from gateway.registry.forks import BlockTree, NetBlock, make_block
from gateway.registry.params import GENESIS_FILE
from gateway.registry.view import RegistryView
from shared import cbor
from tests.support.brokers import HOST, free_port, unique, wait_until
from tests.support.waits import drain, lines, wait_line
from tools.build import tool

T0 = int(time.time()) - 3600


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([tool("thingledger"), *args], capture_output=True, text=True,
                          timeout=timeout)


def init_genesis(d: Path, bits: int = 4) -> Path:
    """A registry in `d` with `bits` of difficulty, no retarget; its genesis file."""
    open_registry(d, create=True, difficulty_bits=bits, retarget_blocks=0, time=T0).close()
    return d / GENESIS_FILE


def join(d: Path, genesis: Path) -> None:
    r = cli("registry", "init", "--registry-dir", str(d), "--genesis", str(genesis))
    assert r.returncode == 0, r.stderr


def head(d: Path) -> tuple[int, bytes]:
    with RegistryView(d) as v:
        h = v.head()
        return h.height, h.hash


def tx_height(d: Path, tx_id: bytes) -> int | None:
    with RegistryView(d) as v:
        t = v.tx(tx_id)
        return t.height if t else None


def same_head(*dirs: Path) -> tuple[int, bytes] | None:
    heads = {head(d) for d in dirs}
    return heads.pop() if len(heads) == 1 else None


class NodeProc:
    """`thingledger registry serve` in a subprocess; its log lines in `seen`."""

    def __init__(self, d: Path, url: str, name: str, *extra: str, mine: bool = False) -> None:
        self.dir, self.url, self.name = d, url, name
        self.args = ["registry", "serve", "--registry-dir", str(d), "--broker", url,
                     "--node-id", name, *extra] + (["--mine"] if mine else [])
        self.seen: list[str] = []
        self.start()

    def start(self) -> NodeProc:
        self.proc = subprocess.Popen([tool("thingledger"), *self.args], stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        self.q = lines(self.proc)
        self.expect(r"^connected$", 20)
        return self

    def expect(self, pattern: str, timeout: float = 20) -> str:
        return wait_line(self.q, pattern, timeout, self.seen)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        drain(self.q, self.seen, 1)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None


def wait_same_head(*nodes: NodeProc, height: int | None = None, timeout: float = 30
                   ) -> tuple[int, bytes]:
    def ok():
        h = same_head(*(n.dir for n in nodes))
        return h if h and (height is None or h[0] >= height) else None
    return wait_until(ok, timeout, 0.1, "same head%s on %s: %s" % (
        "" if height is None else " >= %d" % height, [n.name for n in nodes],
        [head(n.dir) for n in nodes]))


def tx_of(out: str) -> bytes:
    m = re.search(r"^tx\s+([0-9a-f]{64})$", out, re.M)
    assert m, out
    return bytes.fromhex(m.group(1))


class TcpProxy:
    """127.0.0.1:port -> target port, byte for byte. cut() closes the
    listener and every connection (the node behind it loses its broker);
    restore() listens again on the same port."""

    def __init__(self, target_port: int) -> None:
        self.target = target_port
        self.port = free_port()
        self.url = "mqtt://%s:%d" % (HOST, self.port)
        self._lock = threading.Lock()
        self._socks: list[socket.socket] = []
        self._server: socket.socket | None = None
        self.restore()

    def restore(self) -> None:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((HOST, self.port))
        s.listen(8)
        self._server = s
        threading.Thread(target=self._accept, args=(s,), daemon=True).start()

    def cut(self) -> None:
        with self._lock:
            socks, self._socks = self._socks, []
            server, self._server = self._server, None
        for s in [*socks, *([server] if server else [])]:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def _accept(self, server: socket.socket) -> None:
        while True:
            try:
                c, _ = server.accept()
            except OSError:
                return
            try:
                u = socket.create_connection((HOST, self.target), timeout=5)
            except OSError:
                c.close()
                continue
            with self._lock:
                self._socks += [c, u]
            for a, b in ((c, u), (u, c)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a: socket.socket, b: socket.socket) -> None:
        try:
            while True:
                data = a.recv(65536)
                if not data:
                    break
                b.sendall(data)
        except OSError:
            pass
        for s in (a, b):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class Publisher:
    """A paho client publishing raw payloads (what a hostile peer sends)."""

    def __init__(self, port: int) -> None:
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=unique("evil"),
                             protocol=mqtt.MQTTv311)
        self.c.connect(HOST, port, keepalive=30)
        self.c.loop_start()

    def send(self, topic: str, payload: bytes) -> None:
        self.c.publish(topic, payload, qos=1).wait_for_publish(10)

    def close(self) -> None:
        self.c.loop_stop()
        self.c.disconnect()


def announce(block: NetBlock | bytes, genesis: bytes, peer: str = "evil") -> bytes:
    raw = block.encode() if isinstance(block, NetBlock) else block
    return cbor.dumps({"from": peer, "genesis": genesis, "block": raw, "node": peer})


class Forge:
    """Builds blocks on a private copy of a registry (same genesis) that a
    node is then fed: good ones (mined on the forge's head) and variants."""

    def __init__(self, d: Path, genesis_file: Path, clock=time.time,
                 miner: bytes = chain.ANONYMOUS_MINER) -> None:
        self.miner = miner
        d.mkdir(parents=True)
        (d / GENESIS_FILE).write_bytes(genesis_file.read_bytes())
        self.reg = open_registry(d)
        self.tree = BlockTree(self.reg, clock=clock)
        self.digest = self.reg.genesis.digest()

    def fields(self, txs: list[bytes], **over: Any) -> dict[str, Any]:
        """Header fields of a block on the head with `txs` (roots computed
        from what they do on the head's state), `over` replacing fields."""
        ex = chain.execute(txs, self.reg.state, self.tree.height + 1)
        f = chain.header_fields(height=self.tree.height + 1, prev_hash=self.tree.head_hash,
                                time=max(int(time.time()), self.tree.times[-1]),
                                tx_root=ex.tx_root, receipts_root=ex.receipts_root,
                                state_root=ex.overlay.root(), proposer=self.miner,
                                target=self.tree.targets[-1])
        f.update(over)
        return f

    def seal(self, f: dict[str, Any], txs: list[bytes], good_pow: bool = True) -> NetBlock:
        """Mine `f` (good_pow) or find a nonce whose hash misses the target."""
        if good_pow:
            found = pw.solve(f, f["target"])
            assert found is not None
            hb = found[1]
        else:
            n = 0
            while True:
                hb = cbor.dumps(dict(f, nonce=n))
                if not pw.meets(pw.header_hash(hb), f["target"]):
                    break
                n += 1
        return make_block(hb, txs)

    def good(self, txs: list[bytes]) -> NetBlock:
        """A valid block on the forge's head, which the forge then adopts."""
        b = self.seal(self.fields(txs), txs)
        out = self.tree.receive([b])
        assert out.switched, out.refused
        return b

    def close(self) -> None:
        self.reg.close()
