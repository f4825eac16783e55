"""The gateway's Prometheus metrics (docs/API.md, "Metrics").

One `Metrics` per Gateway, each with its own CollectorRegistry (never the
process-wide default one: two gateways in one process, as in the tests, keep
apart). The pipeline stages of gateway/node/service.py call the `on_*` hooks;
each is a few attribute lookups and a counter or histogram update, and the
label children (reason, type) are cached so a hot path never builds a label
set (bench/metrics.py measures the cost per transaction).

Gauges whose value the node already holds (mempool depth, chain height, open
market agreements) are read when the exposition is made, not kept up to date
per transaction. `text()` must run on the gateway's event loop (it reads the
node's state).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from shared import txnames

PREFIX = "thingledger_"

# seconds; a block's build + commit is ms on a PC and tens of ms on a Pi
COMMIT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
# seconds from admission to the receipt: up to one block interval plus the commit
RECEIPT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0)


class Metrics:
    """The metrics of one gateway. `mempool_depth`, `height` and
    `agreements_open` are called at exposition time."""

    def __init__(self, mempool_depth: Callable[[], int], height: Callable[[], int],
                 agreements_open: Callable[[], int],
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.registry = r = CollectorRegistry(auto_describe=True)
        self.clock = clock
        p = PREFIX
        self.received = Counter(p + "txs_received", "Transaction messages received "
                                "(on tl/<d>/dev/<id>/tx and from the node's own operator)",
                                registry=r)
        self.admitted = Counter(p + "txs_admitted", "Transactions admitted to the mempool",
                                registry=r)
        self.rejected = Counter(p + "txs_rejected", "Messages refused, by wire reason code "
                                "(shared/reasons.py); includes txs dropped when a block is cut",
                                ["reason"], registry=r)
        self.resent = Counter(p + "txs_resent_receipts", "Resends of a committed "
                              "transaction answered with its receipt again", registry=r)
        self.committed = Counter(p + "txs_committed", "Transactions committed in a block, by "
                                 "type name (shared/txnames.py)", ["type"], registry=r)
        self.blocks = Counter(p + "blocks", "Blocks committed", registry=r)
        self.commit_time = Histogram(p + "block_commit_seconds", "Time to build a block and "
                                     "commit it to the store (one SQLite transaction)",
                                     buckets=COMMIT_BUCKETS, registry=r)
        self.receipt_latency = Histogram(p + "receipt_latency_seconds", "Time from a "
                                         "transaction's admission to its receipt being sent",
                                         buckets=RECEIPT_BUCKETS, registry=r)
        self.devices_online = Gauge(p + "devices_online", "Devices whose last status "
                                    "message (tl/<d>/dev/<id>/status) says online",
                                    registry=r)
        Gauge(p + "mempool_txs", "Transactions pending in the mempool",
              registry=r).set_function(mempool_depth)
        Gauge(p + "chain_height", "Height of the chain's head",
              registry=r).set_function(height)
        Gauge(p + "market_agreements_open", "Market agreements in state open",
              registry=r).set_function(agreements_open)
        self.broker_connections = Gauge(p + "broker_connections", "Connections open at the "
                                        "MQTT broker: the embedded broker's live count, or an "
                                        "external broker's $SYS/broker/clients/connected",
                                        registry=r)
        self._by_reason: dict[str, Counter] = {}
        self._by_type: dict[int, Counter] = {}
        self._admitted_at: dict[bytes, float] = {}
        self._online: set[str] = set()

    # -- hooks of the pipeline stages ------------------------------------------------
    def on_received(self) -> None:
        self.received.inc()

    def on_admitted(self, tx_id: bytes) -> None:
        self.admitted.inc()
        self._admitted_at[tx_id] = self.clock()

    def on_rejected(self, reason: str) -> None:
        c = self._by_reason.get(reason)
        if c is None:
            c = self._by_reason[reason] = self.rejected.labels(reason=reason)
        c.inc()

    def on_resent(self) -> None:
        self.resent.inc()

    def on_block(self, commit_s: float, committed: list[tuple[bytes, int]],
                 taken: list[bytes]) -> None:
        """A block is on disk and its receipts are sent: `committed` holds its
        (tx id, type) pairs, `taken` the ids of every tx the cut took out of
        the mempool (committed or dropped)."""
        self.blocks.inc()
        self.commit_time.observe(commit_s)
        now = self.clock()
        at, observe = self._admitted_at, self.receipt_latency.observe
        n_by_type: dict[int, int] = {}
        for tx_id, type_ in committed:
            n_by_type[type_] = n_by_type.get(type_, 0) + 1
            t0 = at.get(tx_id)
            if t0 is not None:
                observe(now - t0)
        for type_, n in n_by_type.items():  # one increment per type and block
            c = self._by_type.get(type_)
            if c is None:
                c = self._by_type[type_] = self.committed.labels(type=txnames.name(type_))
            c.inc(n)
        pop = at.pop
        for tx_id in taken:
            pop(tx_id, None)

    def on_status(self, device: str, online: bool) -> None:
        """A device's status message: `device` is the id (hex) in its topic."""
        if online:
            self._online.add(device)
        else:
            self._online.discard(device)
        self.devices_online.set(len(self._online))

    def online(self) -> frozenset[str]:
        """The ids (hex) of the devices whose last status says online."""
        return frozenset(self._online)

    def count_broker_connections(self, read: Callable[[], float]) -> None:
        """Read the broker connections gauge from `read()` at exposition time
        (the embedded broker's live count)."""
        self.broker_connections.set_function(read)

    def on_broker_clients(self, n: float) -> None:
        """An external broker's $SYS/broker/clients/connected value."""
        self.broker_connections.set(n)

    def text(self) -> bytes:
        """The Prometheus text exposition (format 0.0.4)."""
        return generate_latest(self.registry)
