"""Cost of answering chain queries (docs/PROTOCOL.md, "Chain queries"):
`python -m bench.chain_queries`.

A domain of N principals (a new chain, as `create_domain` makes it). For
head, prove_kv (the validator-set entry, with its state proof) and a page of
100 principals: the CPU of the direct read-only Store call (what a relayer
with a data folder pays), the CPU of the gateway's answer to the same query
(gateway/node/queries.Answerer: parse, read, encode), and the round trip of
tools/remote_store.RemoteStore through an in-process amqtt broker to a
QueryLink (wall time, both ends in this process). Target: an answer costs
the gateway under 2 ms of CPU, so one core answers ten times the 50
requests per second one requester may send (its rate limit).
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gateway.broker.embedded import ThreadedBroker
from gateway.db.genesis_files import create_domain
from gateway.db.store import Store, open_ledger
from gateway.ledger import keys
from gateway.node.config import DB_FILE, GatewayConfig
from gateway.node.queries import Answerer, QueryLink, QueryServer
from shared import chainquery as cq
from shared import p256
from tests.support.brokers import free_port
from tools.remote_store import QueryClient, RemoteStore

TARGET_ANSWER_MS = 2.0


def cpu_us(fn: Callable[[], Any], n: int) -> float:
    t0 = time.process_time()
    for _ in range(n):
        fn()
    return (time.process_time() - t0) / n * 1e6


def wall_ms(fn: Callable[[], Any], n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n * 1e3


def make_chain(root: Path, n: int) -> Path:
    accounts = {p256.public_key(i.to_bytes(32, "big")): 10 for i in range(1, n + 1)}
    create_domain(root, "bench", accounts)
    open_ledger(GatewayConfig(domain="bench", data_dir=root)).store.close()
    return root / DB_FILE


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", type=int, default=2000)
    ap.add_argument("-n", type=int, default=200, help="calls per measure")
    args = ap.parse_args(argv)
    logging.getLogger("amqtt").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory() as tmp:
        db = make_chain(Path(tmp), args.devices)
        store = Store(db, readonly=True)
        ans = Answerer(store, b"", rate=0, burst=0)
        ops: list[tuple[str, Callable[[], Any], bytes, Callable[[RemoteStore], Any]]] = [
            ("head + certificate", lambda: (store.head(), store.certificate(0)),
             cq.request("head", b"b"), lambda r: r.head()),
            ("prove_kv (valsets)", lambda: store.prove_kv(keys.VALSETS),
             cq.request("prove_kv", b"b", keys.VALSETS), lambda r: r.prove_kv(keys.VALSETS)),
            ("devices, page of 100", lambda: store.devices(b"", 100),
             cq.request("devices", b"b", None, 100), lambda r: r.q.ask("devices", None, 100)),
        ]
        broker = ThreadedBroker("127.0.0.1", free_port())
        broker.start()
        url = broker.url
        link = QueryLink(QueryServer("bench", lambda: Store(db, readonly=True), print,
                                     rate=0, burst=0), url, "bench-q")
        link.start()
        link.ready.wait(10)
        remote = RemoteStore(QueryClient(url, "bench", "bench"))
        rows = []
        worst = 0.0
        try:
            for name, direct, request, over in ops:
                d = cpu_us(direct, args.n)
                a = cpu_us(lambda r=request: ans.answer("r", r), args.n)
                rt = wall_ms(lambda o=over: o(remote), args.n)
                worst = max(worst, a / 1000)
                rows.append((name, d, a, rt))
        finally:
            remote.close()
            link.stop()
            broker.stop(5)
            store.close()
    print("%d principals, %d calls each" % (args.devices, args.n))
    print("%-22s %14s %16s %8s %16s" % ("query", "direct us CPU", "answer us CPU", "ratio",
                                         "round trip ms"))
    for name, d, a, rt in rows:
        print("%-22s %14.0f %16.0f %7.1fx %16.2f" % (name, d, a, a / d, rt))
    ok = worst < TARGET_ANSWER_MS
    print("worst answer %.2f ms CPU, target < %.1f ms: %s" % (worst, TARGET_ANSWER_MS,
                                                           "ok" if ok else "MISSED"))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
