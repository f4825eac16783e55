"""The embedded broker under three cheap attacks: its memory (RSS) and whether
new devices still get in (`python -m bench.broker_limits`).

The broker runs as `thingledger run` starts it on an open domain (anonymous,
gateway.broker.embedded.EmbeddedBroker with its default limits) in a process of its
own whose file limit is 1024 (the Raspberry Pi's default). Attacks, each on
a fresh broker:

1. retained: one client publishes a 40 MiB retained message and 60 x 1 MiB
   retained messages (QoS 1), then leaves; a later subscriber to `#` counts
   what it receives.
2. slow subscriber: a client subscribes to `tl/bench/#` at QoS 1 and never
   reads its socket; another publishes 15,000 (then 40,000) transactions
   (200 B, QoS 1).
3. idle sockets: 1,100 TCP connections that never send CONNECT; then a
   device tries to connect; then how many of the 1,100 the broker closed.

Prints a table (RSS of the broker process before and after, in MB). No
targets: a record, not a gate (the limits themselves are tested in
tests/broker/test_broker_limits.py).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import resource
import select
import selectors
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
MIB = 1024 * 1024


def serve(port: int) -> None:
    """The broker process: EmbeddedBroker with its defaults, file limit 1024."""
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
    from gateway.broker.embedded import EmbeddedBroker

    async def main() -> None:
        b = EmbeddedBroker(HOST, port)
        await b.start()
        print("ready", flush=True)
        while True:
            await asyncio.sleep(2)
            if os.environ.get("BENCH_DEBUG") and b._broker is not None:
                print(dict(b._broker.stats), b._broker.open_connections,
                      len(b._broker.pending), len(os.listdir("/proc/self/fd")), file=sys.stderr, flush=True)

    asyncio.run(main())


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Broker:
    def __init__(self) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen([sys.executable, "-m", "bench.broker_limits", "--serve",
                                      str(self.port)], cwd=ROOT, stdout=subprocess.PIPE,
                                     stderr=None if os.environ.get("BENCH_DEBUG") else subprocess.DEVNULL, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if line.strip() != "ready":
            raise RuntimeError("broker did not start")

    def rss(self) -> float:
        return rss_mb(self.proc.pid)

    def settle(self, seconds: float = 1.0) -> float:
        """RSS once it stopped moving for a while (bounded wait)."""
        last, deadline = self.rss(), time.monotonic() + 10
        while time.monotonic() < deadline:
            time.sleep(seconds)
            now = self.rss()
            if abs(now - last) < 0.5:
                return now
            last = now
        return last

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait(5)


def paho(port: int, cid: str, inflight: int = 20, **kw):
    import paho.mqtt.client as mqtt

    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=cid, protocol=mqtt.MQTTv311, **kw)
    c.max_inflight_messages_set(inflight)
    connected = threading.Event()
    c.on_connect = lambda *a: connected.set()
    c.connect(HOST, port, keepalive=30)
    c.loop_start()
    ok = connected.wait(5)
    return c, ok


def attack_retained(b: Broker) -> dict:
    c, _ = paho(b.port, "hoarder")
    infos = [c.publish("tl/bench/big", b"x" * (40 * MIB), qos=1, retain=True)]
    infos += [c.publish(f"tl/bench/r{i}", b"y" * MIB, qos=1, retain=True) for i in range(60)]
    deadline = time.monotonic() + 60
    for i in infos:
        with contextlib.suppress(Exception):
            i.wait_for_publish(max(0.1, deadline - time.monotonic()))
    c.loop_stop()
    c.disconnect()
    after = b.settle()
    got: list[int] = []
    s, ok = paho(b.port, "later")
    s.on_message = lambda _c, _u, m: got.append(len(m.payload))
    s.subscribe("#", qos=1)
    time.sleep(3)  # a bench: how much arrives in 3 s is the figure
    s.loop_stop()
    s.disconnect()
    return {"rss_after": after, "note": f"later subscriber got {len(got)} retained, "
            f"{sum(got) / MIB:.1f} MiB"}


def mqtt_connect(cid: str, keepalive: int = 30) -> bytes:
    cid_b = cid.encode()
    var = b"\x00\x04MQTT\x04\x02" + keepalive.to_bytes(2, "big")
    body = var + len(cid_b).to_bytes(2, "big") + cid_b
    return bytes([0x10, len(body)]) + body


def attack_slow_subscriber(b: Broker, n: int = 15000) -> dict:
    slow = socket.create_connection((HOST, b.port))
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow.sendall(mqtt_connect("slow"))
    slow.recv(4)  # CONNACK
    topic = b"tl/bench/#"
    body = b"\x00\x01" + len(topic).to_bytes(2, "big") + topic + b"\x01"
    slow.sendall(bytes([0x82, len(body)]) + body)
    pub, _ = paho(b.port, "flooder", inflight=1000, reconnect_on_failure=False)
    infos = [pub.publish("tl/bench/tx", b"t" * 200, qos=1) for _ in range(n)]
    deadline = time.monotonic() + 120
    for i in infos:
        with contextlib.suppress(Exception):
            i.wait_for_publish(max(0.1, deadline - time.monotonic()))
    after = b.settle()
    # did the broker drop the non-reader? (it reads nothing: EOF or reset shows)
    slow.setblocking(False)
    dropped = False
    try:
        while select.select([slow], [], [], 0.5)[0]:
            if not slow.recv(1 << 20):
                dropped = True
                break
    except ConnectionError:
        dropped = True
    pub.loop_stop()
    slow.close()
    return {"rss_after": after, "note": f"non-reader disconnected: {'yes' if dropped else 'no'}"}


def device_connects(port: int, tries: int = 3) -> bool:
    """A device's CONNECT gets its CONNACK (it retries a refused or silent
    connection, 3 times at most, 5 s each)."""
    for _ in range(tries):
        try:
            with socket.create_connection((HOST, port), timeout=5) as s:
                s.sendall(mqtt_connect("device-after"))
                if s.recv(4)[:1] == b"\x20":
                    return True
        except OSError:
            time.sleep(0.5)
    return False


def attack_idle_sockets(b: Broker) -> dict:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))
    socks = []
    for _ in range(1100):
        try:
            socks.append(socket.create_connection((HOST, b.port), timeout=2))
        except OSError:
            break
    time.sleep(1)
    ok = device_connects(b.port)
    after = b.rss()
    deadline = time.monotonic() + 30
    closed = 0
    sel = selectors.DefaultSelector()
    for s in socks:
        sel.register(s, selectors.EVENT_READ)
    while closed < len(socks) and time.monotonic() < deadline:
        for key, _ in sel.select(1):
            try:
                data = key.fileobj.recv(16)
            except OSError:
                data = b""
            if not data:
                closed += 1
                sel.unregister(key.fileobj)
    sel.close()
    for s in socks:
        s.close()
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    return {"rss_after": after, "note": f"{len(socks)} opened; a new device connects: "
            f"{'yes' if ok else 'NO'}; closed by the broker within 30 s: {closed}"}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.serve:
        serve(args.serve)
        return 0
    print(f"{'attack':<18} {'RSS before':>10} {'RSS after':>10}  result")
    for name, attack in (("retained", attack_retained),
                         ("slow sub, 15k tx", attack_slow_subscriber),
                         ("slow sub, 40k tx", lambda b: attack_slow_subscriber(b, 40000)),
                         ("idle sockets", attack_idle_sockets)):
        b = Broker()
        try:
            before = b.settle(0.3)
            r = attack(b)
        finally:
            b.close()
        print(f"{name:<18} {before:>8.0f}MB {r['rss_after']:>8.0f}MB  {r['note']}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
