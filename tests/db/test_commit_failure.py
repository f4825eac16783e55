"""Store.commit_block when SQLite cannot write (issue 9 item 1): the block is
rolled back whole and the error says SQLite's own cause, not the "cannot
rollback - no transaction is active" of a second ROLLBACK."""

from __future__ import annotations

import pytest

from gateway.db import store
from gateway.db.store import StoreError
from gateway.ledger import blocks
from tests.support.gwtest import Device, Node


def test_commit_on_a_full_database_says_why_and_keeps_the_head(node: Node, alice: Device,
                                                                 bob: Device) -> None:
    node.submit_all([alice.reading(1)])
    node.produce()
    head = node.store.head()
    db = node.store._db
    pages = db.execute("PRAGMA page_count").fetchone()[0]
    db.execute("PRAGMA max_page_count = %d" % pages)  # a real SQLITE_FULL on the next page
    big = [alice.reading(i) for i in range(2, 300)]
    node.submit_all(big)
    led = node.ledger
    txs = node.pool.take(1000)
    b = blocks.build_block(led.head, txs, led.state, node.time + 1, led.authority_priv,
                           led.genesis.authority_id, domain="demo", rules=led.rules)
    with pytest.raises(StoreError) as e:
        node.store.commit_block(b)
    assert e.value.reason == store.COMMIT_FAILED
    assert "database or disk is full" in e.value.detail and "block 2" in e.value.detail
    assert "rollback" not in str(e.value)
    assert not db.in_transaction
    assert node.store.head() == head and node.store.tx_count() == 1  # nothing of block 2
    db.execute("PRAGMA max_page_count = %d" % (1 << 30))  # space is back
    node.store.commit_block(b)
    assert node.store.head().height == 2 and node.store.tx_count() == 1 + len(big)
