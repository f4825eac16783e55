"""What MQTT traffic costs a 3-node NATS cluster, per message:
`python -m bench.nats_mqtt [N]`.

The CPU time of the three nats-server processes (/proc/<pid>/stat) while
paho publishes N messages over one node's MQTT listener:
- a device's transaction, QoS 1, into the domain's intake stream (R3, file
  storage, `sync_interval: always`), as in a quorum domain;
- the same QoS 1 publish on a subject no stream and no subscriber takes;
- a receipt (700 B) to a QoS 1 subscriber on another node, published at
  QoS 1 (NATS keeps it in JetStream for the subscriber's session) and at
  QoS 0.
bench.quorum's CPU budget shows the whole run; this splits the NATS part.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from bench.gateway import cpu_seconds


def _client(port: int, name: str):
    import paho.mqtt.client as mqtt

    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=name, protocol=mqtt.MQTTv311)
    c.max_inflight_messages_set(0)
    c.max_queued_messages_set(0)
    return c


def publish(port: int, topic: Callable[[int], str], n: int, size: int, qos: int) -> None:
    c = _client(port, f"bench-pub-{os.getpid()}-{time.monotonic_ns()}")
    up = threading.Event()
    c.on_connect = lambda *a: up.set()
    c.connect("127.0.0.1", port)
    c.loop_start()
    if not up.wait(30):
        raise SystemExit("publisher: no CONNACK")
    info = None
    for i in range(n):
        info = c.publish(topic(i), b"x" * size, qos=qos)
    if info is not None and qos:
        info.wait_for_publish(120)
    c.disconnect()
    c.loop_stop()


class Subscriber:
    def __init__(self, port: int, topic: str) -> None:
        self.n = 0
        self.cond = threading.Condition()
        self.c = _client(port, f"bench-sub-{os.getpid()}")
        ready = threading.Event()
        self.c.on_connect = lambda cl, *a: cl.subscribe(topic, qos=1)
        self.c.on_subscribe = lambda *a: ready.set()
        self.c.on_message = self._on_message
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()
        if not ready.wait(30):
            raise SystemExit("subscriber: no SUBACK")

    def _on_message(self, *a) -> None:
        with self.cond:
            self.n += 1
            self.cond.notify_all()

    def wait(self, n: int, timeout: float = 120.0) -> None:
        with self.cond:
            if not self.cond.wait_for(lambda: self.n >= n, timeout):
                raise SystemExit(f"subscriber: {self.n} of {n} messages")

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


async def _intake_ready(urls: list[str], domain: str) -> None:
    """The intake stream exists and every node routes its subject to it."""
    from gateway.cluster import link
    from gateway.cluster.intake import TxIntake

    nc = await link.connect(urls)
    try:
        intake = TxIntake(nc.jetstream(), domain, "bench", nc=nc)
        await intake.ensure()
        deadline = time.monotonic() + 30
        while True:
            try:
                seq = await intake.submit(b"probe", timeout=1.0)
                await intake.js.delete_msg(intake.stream, seq)
                return
            except Exception:  # noqa: BLE001 - the stream's interest still spreading
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.1)
    finally:
        await nc.close()


def main(argv: list[str] | None = None) -> int:
    from tools.nats_cluster import NatsCluster

    args = sys.argv[1:] if argv is None else argv
    n = int(args[0]) if args else 3000
    domain = "bench"
    tmp = Path(tempfile.mkdtemp(prefix="tl-bench-nats-mqtt-"))
    cluster = NatsCluster(tmp, 3).start()
    try:
        pids = [node.proc.pid for node in cluster.nodes if node.proc is not None]

        def cpu() -> float:
            return sum(cpu_seconds(p) for p in pids)
        asyncio.run(_intake_ready(cluster.urls, domain))
        port, other = cluster.nodes[0].mqtt_port, cluster.nodes[1].mqtt_port
        rows = []

        def measure(what: str, run: Callable[[], None]) -> None:
            c0 = cpu()
            run()
            rows.append((what, (cpu() - c0) / n * 1e6))
        measure("tx (300 B) QoS 1 -> intake stream R3",
                lambda: publish(port, lambda i: f"tl/{domain}/tx", n, 300, 1))
        measure("QoS 1 publish, no stream, no subscriber",
                lambda: publish(port, lambda i: f"tl/{domain}/none", n, 300, 1))
        sub = Subscriber(port, f"tl/{domain}/dev/+/rx")
        rx = [0]

        def receipts(qos: int) -> None:
            publish(other, lambda i: f"tl/{domain}/dev/{i % 100:032x}/rx", n, 700, qos)
            rx[0] += n
            sub.wait(rx[0])
        measure("receipt (700 B) QoS 1 -> QoS 1 subscriber", lambda: receipts(1))
        measure("receipt (700 B) QoS 0 -> QoS 1 subscriber", lambda: receipts(0))
        sub.close()
    finally:
        cluster.stop()
    print(f"3 NATS nodes, {n:,} messages each, load average {os.getloadavg()[0]:.2f}")
    print(f"{'message':<44}{'us of CPU per message':>24}")
    for what, us in rows:
        print(f"{what:<44}{us:>24,.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
