"""A database changed outside the node: the gateway refuses to start on a
state that is not its head block's (state_root checked at start-up), and
`thingledger chain verify` runs SQLite's integrity check, so damage to an
index the replay never reads is reported too (issue 9 item 8)."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.db import store
from gateway.db import verify as replay
from gateway.db.store import StoreError
from tests.support.gwtest import Device, Node
from tools import cli

ROOT = Path(__file__).resolve().parent.parent.parent


@pytest.fixture
def stopped(node: Node, alice: Device, bob: Device) -> Node:
    """A chain at height 2 whose node is stopped (database closed, WAL merged)."""
    carol = Device("carol")
    node.submit_all([carol.register(), alice.reading(2150, -2), bob.transfer(carol, 7)])
    node.produce()
    node.submit_all([alice.reading(2160, -2), alice.transfer(bob, 10)])
    node.produce()
    node.close()
    return node


def by_hand(path: Path, sql: str, *params: object) -> None:
    db = sqlite3.connect(path)
    with db:
        assert db.execute(sql, params).rowcount == 1
    db.close()


@pytest.mark.parametrize("tamper", ["balance", "deleted-device", "kv"])
def test_start_refuses_a_state_changed_by_hand(stopped: Node, alice: Device, bob: Device,
                                               tamper: str) -> None:
    assert store.open_ledger(stopped.cfg, create=False).store.close() is None  # untouched: starts
    path = stopped.cfg.db_path
    if tamper == "balance":
        by_hand(path, "UPDATE devices SET balance = balance + 1000 WHERE id = ?", alice.id)
    elif tamper == "deleted-device":
        by_hand(path, "DELETE FROM devices WHERE id = ?", bob.id)
    else:
        by_hand(path, "INSERT INTO kv (key, value) VALUES (?, ?)", b"planted", b"\x01")
    with pytest.raises(StoreError) as e:
        store.open_ledger(stopped.cfg, create=False)
    assert e.value.reason == store.STATE_ROOT_MISMATCH
    assert "height 2" in e.value.detail


def test_run_exits_with_the_height_on_a_tampered_state(stopped: Node, alice: Device,
                                                       amqtt_broker) -> None:
    """`thingledger run` on the tampered data dir: no gateway line, exit 1,
    the reason and the height said (without the check it would start and
    sign blocks on top of the raised balance)."""
    by_hand(stopped.cfg.db_path, "UPDATE devices SET balance = balance + 1000 WHERE id = ?",
            alice.id)
    exe = Path(sys.executable).with_name("thingledger")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "tools.cli"]
    p = subprocess.run([*cmd, "run", "--no-boards", "--no-http", "--broker", amqtt_broker.url,
                        "--data-dir", str(stopped.data_dir), "--domain", "demo",
                        "--seconds", "3"],
                       cwd=ROOT, capture_output=True, text=True, timeout=60,
                       stdin=subprocess.DEVNULL)
    out = p.stdout + p.stderr
    assert p.returncode == 1, out
    assert "state-root-mismatch" in out and "height 2" in out, out
    assert "chain demo at height" not in out, out
    assert "Traceback" not in out, out


def test_chain_verify_reports_a_flipped_byte_in_the_tx_id_index(
        stopped: Node, capsys: pytest.CaptureFixture[str]) -> None:
    d = str(stopped.data_dir)
    path = stopped.cfg.db_path
    assert cli.main(["chain", "verify", "--data-dir", d]) == 0
    assert "chain OK" in capsys.readouterr().out
    db = sqlite3.connect(path)
    page_size = db.execute("PRAGMA page_size").fetchone()[0]
    (root,) = db.execute("SELECT rootpage FROM sqlite_master WHERE type = 'index' "
                         "AND tbl_name = 'txs' AND sql IS NULL AND name LIKE '%autoindex%1'"
                         ).fetchone()
    assert db.execute("SELECT 1 FROM pragma_index_info('sqlite_autoindex_txs_1') "
                      "WHERE name = 'id'").fetchone()  # the UNIQUE (id) index
    tx_id = db.execute("SELECT id FROM txs ORDER BY height, idx LIMIT 1").fetchone()[0]
    db.close()
    raw = bytearray(path.read_bytes())
    page = slice((root - 1) * page_size, root * page_size)
    at = bytes(raw[page]).find(tx_id)
    assert at > 0, "the tx id is not in the index's root page"
    raw[page.start + at + 10] ^= 0x01  # one bit of one byte of one key of the index
    path.write_bytes(bytes(raw))

    assert cli.main(["tx", tx_id.hex(), "--data-dir", d]) == 1  # lookups by id fail now
    capsys.readouterr()
    rc = cli.main(["chain", "verify", "--data-dir", d])
    out = capsys.readouterr().out
    assert rc == 1, out
    assert "chain OK" not in out
    assert f"FAILED at database file: {replay.DATABASE_CORRUPT}" in out
    assert "sqlite_autoindex_txs_1" in out  # SQLite names the damaged index
