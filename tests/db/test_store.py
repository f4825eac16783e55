"""SQLite store: atomic block commits, restart, crash safety, read-only readers."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gateway.db import store
from gateway.db import verify as replay
from gateway.db.store import Store, StoreError
from gateway.ledger import blocks
from gateway.ledger.genesis import GenesisError
from gateway.node import config
from shared import tx as txm
from tests.support.gwtest import DOMAIN, Device, Node
from tests.support.spies import count_rebuilds

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent


def fill(node: Node, alice: Device, bob: Device, n: int = 3) -> list[blocks.Block]:
    out = []
    for i in range(n):
        node.submit_all([alice.reading(i), bob.transfer(alice, 5), alice.transfer(bob, 1)])
        out.append(node.produce())
    return out


def test_schema_and_pragmas(node: Node) -> None:
    db = node.store._db
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"meta", "blocks", "txs", "devices"} <= tables
    assert node.store.meta("domain") == DOMAIN
    assert node.store.meta("genesis") == node.genesis.digest()


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8, 13, 64, 100])
def test_receipt_proof_read_from_the_stored_tree(monkeypatch: pytest.MonkeyPatch, node: Node,
                                                 n: int) -> None:
    """A resend's receipt (proof included) is read from the receipts tree
    stored at commit, for any tree shape, by a reader that never saw the
    block: byte for byte the receipt sent at commit, no tree rebuilt."""
    devs = [Device(f"d{i}") for i in range(n)]
    node.submit_all([d.register() for d in devs])
    b = node.produce()
    rebuilds = count_rebuilds(monkeypatch)
    with Store(node.cfg.db_path, readonly=True) as reader:
        got = [reader.get_receipt(t.id) for t in b.txs]
    assert got == [b.receipt_message(i) for i in range(n)]
    assert rebuilds[0] == 0


def test_receipt_of_a_block_without_stored_tree(monkeypatch: pytest.MonkeyPatch, node: Node,
                                                alice: Device, bob: Device) -> None:
    """A block committed before receipt trees were stored (no row) gets its
    tree rebuilt from the tx rows, once (cached), with the same receipts."""
    bs = fill(node, alice, bob)
    node.store._db.execute("DELETE FROM receipt_trees WHERE height = 2")
    rebuilds = count_rebuilds(monkeypatch)
    with Store(node.cfg.db_path, readonly=True) as reader:
        for b in bs:
            assert [reader.get_receipt(t.id) for t in b.txs] == [
                b.receipt_message(i) for i in range(len(b.txs))]
    assert rebuilds[0] == 1


def test_commit_then_reopen(tmp_path: Path, node: Node, alice: Device, bob: Device) -> None:
    bs = fill(node, alice, bob)
    head = node.store.head()
    st = node.store.load_state()
    assert head is not None and head.height == 3 and head.hash == bs[-1].hash
    assert st.devices == node.state.devices
    assert st.root() == bs[-1].fields["state_root"]
    for b in bs:  # receipts come from the stored receipts trees
        assert [node.store.get_receipt(t.id) for t in b.txs] == [
            b.receipt_message(i) for i in range(len(b.txs))]
    node.close()
    led = store.open_ledger(node.cfg, create=False)
    try:
        assert led.head == head
        assert led.state.devices == st.devices
        b = bs[1]
        rec = led.store.get_block(2)
        assert rec is not None and rec.signed_header == b.signed_header and rec.n_txs == 3
        assert rec.fields == b.fields
        for i, t in enumerate(b.txs):
            tr = led.store.get_tx(t.id)
            assert tr is not None
            assert (tr.height, tr.idx, tr.sender, tr.seq, tr.type) == (2, i, t.sender, t.seq,
                                                                        t.type)
            assert (tr.status, tr.reason, tr.events) == (b.receipts[i].status,
                                                         b.receipts[i].reason,
                                                         b.receipts[i].events)
            assert tr.message == t.message
            assert led.store.get_receipt(t.id) == b.receipt_message(i)  # stored tree
        assert [r.id for r in led.store.block_txs(2)] == [t.id for t in b.txs]
        assert led.store.get_tx(bytes(32)) is None and led.store.get_receipt(bytes(32)) is None
        assert [r.id for r in led.store.find_tx(b.txs[0].id[:4])] == [b.txs[0].id]
        assert led.store.block_count() == 4 and led.store.tx_count() == 9
    finally:
        led.store.close()
    node.ledger = store.open_ledger(node.cfg, create=False)  # for the fixture's close


def test_commit_refuses_non_successors(node: Node, alice: Device, bob: Device) -> None:
    led = node.ledger
    b1 = blocks.build_block(led.head, [], led.state, 0, led.authority_priv,
                            led.genesis.authority_id, domain=DOMAIN)
    node.store.commit_block(b1)
    with pytest.raises(StoreError) as ei:
        node.store.commit_block(b1)
    assert ei.value.reason == "not-next"
    forked = blocks.build_block(b1, [], led.state, 0, led.authority_priv,
                                led.genesis.authority_id, domain=DOMAIN)
    forked.fields["prev_hash"] = bytes(32)
    with pytest.raises(StoreError) as ei:
        node.store.commit_block(forked)
    assert ei.value.reason == "bad-prev"
    assert node.store.head().height == 1


def test_exception_mid_commit_leaves_last_whole_block(node: Node, alice: Device, bob: Device,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    fill(node, alice, bob, 1)
    head, devices = node.store.head(), node.store.devices()
    txs_before = node.store.tx_count()

    def boom(self: Store, diff: object) -> None:
        raise OSError("disk on fire")

    node.submit_all([alice.reading(), bob.transfer(alice, 7)])
    monkeypatch.setattr(Store, "_write_diff", boom)
    with pytest.raises(OSError):
        node.produce()
    # blocks row and txs rows were written before the failure: all rolled back
    assert node.store.head() == head
    assert node.store.devices() == devices
    assert node.store.tx_count() == txs_before
    monkeypatch.undo()
    # the node goes on: same txs, next block
    node.ledger.state = node.store.load_state()
    b = blocks.build_block(head, [txm.decode(m) for m in (alice.reading(seq=50),)],
                           node.state, 0, node.ledger.authority_priv,
                           node.genesis.authority_id, domain=DOMAIN, rules=node.ledger.rules)
    node.store.commit_block(b)
    assert replay.verify_chain(node.store, node.genesis).ok


CHILD = r"""
import sys, time
sys.path.insert(0, {root!r})
from pathlib import Path
from tests.support.gwtest import Node, DOMAIN
from gateway.ledger import blocks
from shared import tx as txm
node = Node(Path({data!r}), create=False)
msgs = [bytes.fromhex(l) for l in Path({msgs!r}).read_text().split()]
led = node.ledger
start = led.head.height  # resume after the blocks already there
per = {per}
for k in range(start * per, len(msgs), per):
    txs = [txm.decode(m) for m in msgs[k:k + per]]
    b = blocks.build_block(led.head, txs, led.state, int(time.time()), led.authority_priv,
                           led.genesis.authority_id, domain=DOMAIN, rules=led.rules)
    assert not b.dropped, b.dropped
    node.store.commit_block(b)
    led.state.apply_diff(b.diff, b.kv_diff)
    led.head = b
    print(b.height, flush=True)
print("end", flush=True)
"""


def test_sigkill_during_commits_leaves_whole_blocks(tmp_path: Path) -> None:
    devs = [Device("k%d" % i) for i in range(8)]
    node = Node(tmp_path / "gw", {d.pub: 100 for d in devs})
    node.close()
    per = 40
    msgs = []
    for s in range(1, 121):
        for i, d in enumerate(devs):
            msgs.append(d.transfer(devs[(i + 1) % 8], 1) if s % 3 == 0 else d.reading(s))
    (tmp_path / "msgs").write_text("\n".join(m.hex() for m in msgs))
    script = CHILD.format(root=str(ROOT), data=str(tmp_path / "gw"),
                          msgs=str(tmp_path / "msgs"), per=per)
    rng = random.Random(7)
    reported = 0
    kills = 0
    for _round in range(4):
        p = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
        assert p.stdout is not None
        target = rng.randrange(2, 5)
        seen = 0
        line = ""
        while seen < target:
            line = p.stdout.readline()
            if not line or line.strip() == "end":
                break
            reported = max(reported, int(line))
            seen += 1
        if line.strip() != "end" and line:
            time.sleep(rng.random() * 0.02)  # land somewhere inside a later commit
            os.kill(p.pid, signal.SIGKILL)
            kills += 1
        p.wait(timeout=30)
        p.stdout.close()
        with Store(tmp_path / "gw" / config.DB_FILE, readonly=True) as s:
            head = s.head()
            assert head is not None and head.height >= reported  # committed means durable
            rep = replay.verify_chain(s, node.genesis)
            assert rep.ok, rep.error
            assert s.tx_count() == head.height * per  # whole blocks only
    assert kills >= 2


def test_readonly_reader_while_writer_runs(node: Node, alice: Device, bob: Device) -> None:
    reader = Store(node.store.path, readonly=True)
    try:
        assert reader.head().height == 0
        fill(node, alice, bob, 2)
        assert reader.head().height == 2
        assert reader.devices() == node.store.devices()
        # a writer holding its write lock does not block readers
        node.store._db.execute("BEGIN IMMEDIATE")
        node.store._db.execute("UPDATE devices SET balance = 0")
        assert reader.head().height == 2
        assert dict(reader.devices())[alice.id].balance != 0
        node.store._db.execute("ROLLBACK")
        with pytest.raises(StoreError):
            reader.commit_block(blocks.Block({}, b"", b"", [], [], {}))
        with pytest.raises(sqlite3.OperationalError):
            reader._db.execute("DELETE FROM blocks")
    finally:
        reader.close()
    with pytest.raises(FileNotFoundError):
        Store(node.data_dir / "nope.db", readonly=True)


def test_open_ledger_first_start_and_mismatches(tmp_path: Path) -> None:
    cfg = config.GatewayConfig(domain="fresh", data_dir=tmp_path / "d")
    led = store.open_ledger(cfg)  # creates the domain on first start
    assert led.head.height == 0 and led.genesis.domain == "fresh"
    assert (cfg.key_file.stat().st_mode & 0o777) == 0o600
    led.store.close()
    led = store.open_ledger(cfg)  # second start: same chain
    assert led.head.height == 0
    led.store.close()
    with pytest.raises(GenesisError):
        store.open_ledger(config.GatewayConfig(domain="other", data_dir=tmp_path / "d"))
    # another genesis for an existing database
    other = tmp_path / "other"
    Node(other).close()
    os.replace(other / config.GENESIS_FILE, cfg.genesis_file)
    os.replace(other / config.KEY_FILE, cfg.key_file)
    with pytest.raises(GenesisError):  # domain demo != fresh
        store.open_ledger(cfg)
    cfg2 = config.GatewayConfig(domain=DOMAIN, data_dir=tmp_path / "d")
    with pytest.raises(StoreError) as ei:
        store.open_ledger(cfg2)
    assert ei.value.reason == "genesis-mismatch"


def test_latest_of_type_is_each_senders_last(tmp_path: Path) -> None:
    """Each sender's last committed tx of a type, in chain order (Home
    Assistant's entities at start: gateway/node/homeassistant.py)."""
    node = Node(tmp_path, {Device("a").pub: 100})
    a, b = Device("a"), Device("b")
    node.submit_all([b.register()])  # a is in genesis
    node.produce()
    node.submit_all([a.reading(1), b.reading(2), a.transfer(b, 5)])
    node.produce()
    node.submit_all([b.reading(3), a.reading(4)])
    node.produce()
    node.submit_all([b.reading(5), a.transfer(b, 1)])
    node.produce()
    latest = node.store.latest_of_type(txm.TYPE_READING, 0)
    assert [(r.sender, txm.decode(r.message).body[1]) for r in latest] == [(a.id, 4), (b.id, 5)]
    assert [r.height for r in latest] == [3, 4]
    assert node.store.latest_of_type(txm.TYPE_READING, 1) == []
