"""A running gateway (amqtt, the market on) names every transaction type by
name in its log lines and in the CLI's views of the chain (issue 15, item 6),
and its Prometheus metrics (gateway/node/metrics.py, docs/API.md "Metrics")
move as it admits, rejects and commits: counters by reason and by type, the
commit and receipt-latency histograms, the gauges read from the node, and
the exposition parses with prometheus_client's own parser."""

from __future__ import annotations

import re
import threading
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from gateway.db import genesis_files as genesis
from gateway.db.store import Store
from gateway.market.ledger import rules as ledger
from gateway.node.config import DB_FILE
from shared import merkle, messages, topics, txnames
from shared import tx as txm
from tests.support.e2e_devices import DOMAIN, GatewayThread, SimDevice, authority_of, thingledger
from tests.support.waits import wait_on

SUPPLY, GRANT, FEE_BPS = 100_000, 1_000, 500
# a type printed by its number: "accepted 17", "rejected 13 from=", "type      18"
BARE_NUMBER = re.compile(r"\b(?:accepted|rejected|market|type)\s+\d+\b")


def samples(gw: GatewayThread) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """(sample name, sorted labels) -> value, from the parsed exposition."""
    text = gw.on_loop(lambda g: g.metrics_text()).decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def value(m: dict, name: str, **labels: str) -> float:
    return m.get(("thingledger_" + name, tuple(sorted(labels.items()))), 0.0)


def ok(dev: SimDevice, msg: bytes) -> list:
    r = dev.receipt_for(dev.submit(msg), 10)
    assert r.status == messages.STATUS_OK, (r.reason, r.events)
    return r.events


def test_names_in_logs_and_cli_and_metrics_that_move(amqtt_broker, tmp_path: Path) -> None:
    data = tmp_path / "gw"
    genesis.create_domain(data, DOMAIN, authority_balance=SUPPLY)
    gw = GatewayThread(data, amqtt_broker.url, market_fee_bps=FEE_BPS,
                       market_grant=GRANT).start()
    devs: list[SimDevice] = []
    try:
        gw.wait_event(r"accepted contract-admin ")  # the operator deploys the agreement contract
        m0 = samples(gw)
        assert value(m0, "txs_rejected_total", reason="wrong-domain") == 0

        def device(name: str) -> SimDevice:
            d = SimDevice(amqtt_broker.host, amqtt_broker.port, authority_of(data),
                          name=name).connect()
            devs.append(d)
            ok(d, d.register_tx())
            return d

        sup, buyer = device("supplier"), device("buyer")
        ok(sup, sup.sign(txm.TYPE_OFFER, {1: "temperature", 2: "cC", 3: 5, 4: 1, 5: "u4pruy",
                                          6: 600, 7: 1}))
        ev = ok(buyer, buyer.sign(txm.TYPE_DEMAND, {1: "temperature", 2: 6, 3: 8, 4: 60,
                                                    5: "cheapest"}))
        aid = next(e for e in ev if e[0] == "match")[1]
        leaves = [b"r%d" % i for i in range(4)]
        call = sup.sign(txm.TYPE_CONTRACT_CALL, {1: ledger.AGREEMENT, 2: "commit",
                                                 3: [aid, 0, 0, 4, merkle.root(leaves)],
                                                 4: 0, 5: 50_000})
        sup.receipt_for(sup.submit(call), 10)  # ok or failed: committed either way
        # refused: a seq used already, another domain, and bytes that are no CBOR
        sup.rejection_for(sup.submit(sup.sign(txm.TYPE_READING, {1: 1, 2: 0}, seq=1)), 10)
        wrong = sup.sign(txm.TYPE_READING, {1: 1, 2: 0}, domain="elsewhere")
        sup.rejection_for(sup.submit(wrong), 10)
        sup.publish_raw(b"\xff not cbor")
        gw.wait_event(r"rejected message from=\? reason=bad-cbor")
        # a device says it is online, another says so and then goes offline
        for d, states in ((sup, (b"online",)), (buyer, (b"online", b"offline"))):
            for st in states:
                d.client.publish(topics.status(DOMAIN, d.hex), st, qos=1).wait_for_publish(5)

        def settled():
            m = samples(gw)
            done = (value(m, "txs_rejected_total", reason="bad-cbor") == 1
                    and value(m, "devices_online") == 1 and value(m, "mempool_txs") == 0)
            return m if done else None
        # polled (the gateway's thread changes them): bounded by the timeout
        m = wait_on(threading.Condition(), settled, 15, lambda: f"metrics: {samples(gw)}")
    finally:
        for d in devs:
            d.close()
        gw.stop()

    # -- item 6: names, never numbers, in the log ...
    log = "\n".join(gw.events)
    accepted = set(re.findall(r"^accepted (\S+) ", log, re.M))
    assert {"register", "transfer", "contract-admin", "offer", "demand",
            "contract-call"} <= accepted, accepted
    assert accepted <= set(txnames.NAMES.values())
    assert re.search(r"^rejected reading from=\w+ reason=replay", log, re.M)
    assert re.search(r"^rejected message from=\w+ reason=wrong-domain", log, re.M)
    assert re.search(r"^market offer temperature ", log, re.M)
    assert not BARE_NUMBER.search(log), BARE_NUMBER.search(log)

    # ... and in the CLI's views of every block and transaction
    with Store(data / DB_FILE, readonly=True) as st:
        head = st.head().height
        txs = [t for h in range(1, head + 1) for t in st.block_txs(h)]
    shown = ""
    for h in range(1, head + 1):
        out = thingledger("chain", "show", "--data-dir", str(data), "--height", str(h))
        assert out.returncode == 0, out.stderr
        shown += out.stdout
    for t in txs:
        out = thingledger("tx", "--data-dir", str(data), t.id.hex())
        assert out.returncode == 0, out.stderr
        assert re.search(r"^type\s+%s$" % re.escape(txnames.name(t.type)), out.stdout, re.M)
        shown += out.stdout
    types = {txnames.name(t.type) for t in txs}
    assert {"register", "transfer", "contract-admin", "offer", "demand",
            "contract-call"} <= types
    for name in types:
        assert re.search(r"\s%s\s" % re.escape(name), shown)
    assert not BARE_NUMBER.search(shown), BARE_NUMBER.search(shown)

    # -- metrics: moved by what the gateway did, and consistent with the chain
    assert value(m, "txs_rejected_total", reason="wrong-domain") == 1
    assert value(m, "txs_rejected_total", reason="replay") == 1
    assert value(m, "txs_rejected_total", reason="bad-cbor") == 1
    by_type: dict[str, int] = {}
    for t in txs:
        by_type[txnames.name(t.type)] = by_type.get(txnames.name(t.type), 0) + 1
    for name, n in by_type.items():
        assert value(m, "txs_committed_total", type=name) == n, name
    assert value(m, "blocks_total") == head
    assert value(m, "chain_height") == head
    assert value(m, "txs_admitted_total") == len(txs)
    assert value(m, "txs_received_total") >= len(txs) + 3
    assert value(m, "block_commit_seconds_count") == head
    assert value(m, "block_commit_seconds_sum") > 0
    assert value(m, "receipt_latency_seconds_count") == len(txs)
    assert value(m, "receipt_latency_seconds_bucket", le="+Inf") == len(txs)
    assert value(m, "market_agreements_open") == 1
    assert value(m, "devices_online") == 1
