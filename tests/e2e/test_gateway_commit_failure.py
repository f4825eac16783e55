"""A block that cannot be written (disk full, I/O error) loses nothing
(issue 9 item 1).

When SQLite fails to commit a block, the node must not answer, acknowledge
or build on anything that is not on disk: the failed block's transactions
and those queued behind it stay pending (no receipt, no PUBACK), ingest
pauses, the node reports SQLite's own error and stops. Once space is back,
the next start gets every unacknowledged message again from the broker's
persistent session (mosquitto, docs/mosquitto.conf settings) and commits
each transaction exactly once. Before the fix, `Gateway.stop()` committed
the transactions queued behind the failed block, so the failed block's ones
came back as `replay` and were lost, and the ROLLBACK error ("no transaction
is active") hid the real one.

Both tests fail SQLite for real:
- in-process: `PRAGMA max_page_count` caps the writer's database, so the
  block's commit fails with SQLITE_FULL ("database or disk is full");
- as deployed: `thingledger run` under a file-size limit (RLIMIT_FSIZE,
  SIGXFSZ ignored): a 400-tx block fits, a 2,000-tx block gets EFBIG from
  write(2) and SQLite fails the commit with a disk I/O error.
"""

from __future__ import annotations

import resource
import signal
import threading

from gateway.db import store
from gateway.db.store import Store
from gateway.node.config import DB_FILE
from tests.support.brokers import wait_until
from tests.support.e2e_devices import (
    GatewayProcess,
    GatewayThread,
    SimDevice,
    chain_txs,
    new_domain,
    thingledger,
)

UNLIMITED = 1 << 30


def check_exactly_once(data, devices: list[SimDevice]) -> int:
    """Every tx the devices sent is in the chain once, answered with a
    receipt at its height; the chain re-validates. Returns the chain's txs."""
    verify = thingledger("chain", "verify", "--data-dir", str(data))
    assert verify.returncode == 0, verify.stdout + verify.stderr
    chain = chain_txs(data)
    ids = [t.id for t in chain]
    assert len(ids) == len(set(ids)), "a transaction is in the chain twice"
    where = {t.id: t for t in chain}
    for d in devices:
        assert not d.bad_replies, d.bad_replies
        refused = [(r.seq, r.reason) for r in d.rejections]
        assert not refused, f"{d.name}: {len(refused)} refused, e.g. {refused[:5]}"
        missing = [i for i in d.sent if i not in where]
        assert not missing, f"{d.name}: {len(missing)} of {len(d.sent)} txs not in the chain"
        for tx_id, r in d.receipts.items():
            assert where[tx_id].height == r.height
        assert set(d.receipts) == set(d.sent)
    assert len(chain) == sum(len(d.sent) for d in devices)
    return len(chain)


def test_failed_commit_is_not_acknowledged_nor_built_upon(shipped_mosquitto, tmp_path):
    """In-process gateway; the writer's database is capped (max_page_count)
    just before a 100-tx block commits, with 100 more txs queued behind it."""
    broker = shipped_mosquitto
    data = tmp_path / "gw"
    authority = new_domain(data)
    # blocks only at 100 txs: the first one is cut while the test holds the writer
    gw = GatewayThread(data, broker.url, block_interval=3600.0, block_max_txs=100).start()
    devices = [SimDevice(broker.host, broker.port, authority, name=f"dev{i}").connect()
               for i in range(4)]
    try:
        for d in devices:
            d.submit(d.register_tx())
        node = gw.gw
        wait_until(lambda: node.counters.admitted >= 4, 10, what="registrations admitted")
        gw._loop.call_soon_threadsafe(node._full.set)  # cut them now
        for d in devices:
            d.wait_confirmed(10)
        registered = sum(len(d.receipts) for d in devices)

        go = threading.Event()

        def hold_then_cap() -> None:  # runs on the writer thread, before the next commit
            assert go.wait(20)
            db = node.led.store._db
            pages = db.execute("PRAGMA page_count").fetchone()[0]
            db.execute("PRAGMA max_page_count = %d" % pages)  # no room for a new page

        held = node._writer.submit(hold_then_cap)
        for i in range(50):
            for d in devices:
                d.submit(d.reading_tx(3000 + i))
        # all 200 admitted: block 2 (100 txs) waits for the writer, 100 queued behind it
        wait_until(lambda: node.counters.admitted >= 4 + 200, 20, what="200 readings admitted")
        go.set()
        held.result(20)
        wait_until(node.dead.is_set, 20, what="the node giving up after the failed commit")
        assert isinstance(node.failed, store.StoreError), repr(node.failed)
        assert node.failed.reason == store.COMMIT_FAILED
        said = "\n".join(gw.events)
        assert "database or disk is full" in said, said
        assert "cannot rollback" not in said
        # space is back before the operator stops the node: stop() must still
        # commit nothing (a block after the failed one would make it a replay)
        node._writer.submit(lambda: node.led.store._db.execute(
            "PRAGMA max_page_count = %d" % UNLIMITED)).result(10)
        gw.stop()
        assert sum(len(d.receipts) for d in devices) == registered, "receipt for an uncommitted tx"
        assert [t.height for t in chain_txs(data)] == [1] * 4, "a block followed the failed one"

        gw = GatewayThread(data, broker.url, block_interval=0.2).start()  # the broker redelivers
        for d in devices:
            d.wait_confirmed(30, resend_after=3.0)
        gw.stop()
    finally:
        for d in devices:
            d.close()
        gw.stop()
    assert check_exactly_once(data, devices) == 4 + 200


def fsize_limit(limit: int):
    def apply() -> None:  # in the child, before exec
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # write(2) gets EFBIG instead of a kill
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


NO_LIMIT = ("--rate-limit", "0")


def test_gateway_under_a_file_size_limit_loses_nothing(shipped_mosquitto, tmp_path):
    """2,404 readings wait at mosquitto while the gateway is down; it starts
    under a 384 KiB file-size limit: the 2,000-tx block fails (its WAL frames
    take about 550 KiB), 404 are queued behind it (a block of them, 130 KiB,
    would fit). The gateway exits with SQLite's error and commits
    nothing; started again without the limit it commits all 2,400 once."""
    broker = shipped_mosquitto
    data = tmp_path / "gw"
    authority = new_domain(data)
    gwp = GatewayProcess(data, broker.url, block_interval=0.2)
    devices: list[SimDevice] = []
    try:
        gwp.start()  # creates the gateway's persistent session at the broker
        devices = [SimDevice(broker.host, broker.port, authority, name=f"dev{i}").connect()
                   for i in range(4)]
        for d in devices:
            d.submit(d.register_tx())
        for d in devices:
            d.wait_confirmed(10)
        assert gwp.interrupt() == 0
        for i in range(600):  # queued for the gateway's session
            for d in devices:
                d.submit(d.reading_tx(2000 + i))
        for d in devices:
            d.submit(d.reading_tx(9999), wait_ack=20)  # the broker holds them all
        receipts = sum(len(d.receipts) for d in devices)

        # blocks at 2,000 txs (the interval is longer than the delivery takes)
        # (no per-sender limit: the backlog of 600 per device is what makes the big block)
        gwp = GatewayProcess(data, broker.url, block_interval=30.0, extra=NO_LIMIT,
                             preexec_fn=fsize_limit(384 * 1024)).start()
        failed = int(gwp.expect(r"error: block (\d+) \(\d+ txs\) not committed", 30)[1])
        rc = gwp.proc.wait(30)
        gwp._drain()
        said = "\n".join(gwp.lines)
        assert rc == 1, said
        assert "disk I/O error" in said or "disk is full" in said, said
        assert "cannot rollback" not in said, said
        assert sum(len(d.receipts) for d in devices) == receipts, "receipt for an uncommitted tx"
        with Store(data / DB_FILE, readonly=True) as st:
            assert st.head().height == failed - 1, "a block was committed after the failed one"

        gwp = GatewayProcess(data, broker.url, block_interval=0.2,
                             extra=NO_LIMIT).start()  # space is back
        for d in devices:
            d.wait_confirmed(60, resend_after=5.0)
        assert gwp.interrupt() == 0, "\n".join(gwp.lines[-20:])
    finally:
        for d in devices:
            d.close()
        gwp.close()
    assert check_exactly_once(data, devices) == 4 + 4 * 601
