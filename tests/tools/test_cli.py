"""`thingledger` chain verify / chain show / tx / devices / run on a temp data dir."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.gwtest import Device, Node
from tools import cli

ROOT = Path(__file__).resolve().parent.parent.parent


@pytest.fixture
def data(node: Node, alice: Device, bob: Device) -> Node:
    carol = Device("carol")
    node.submit_all([carol.register(), alice.reading(2150, -2), bob.transfer(carol, 7)])
    node.produce()
    node.submit_all([alice.transfer(bob, 10**6)])
    node.produce()
    return node


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = cli.main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def test_chain_verify_ok_and_tampered(data: Node, alice: Device,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    d = str(data.data_dir)
    rc, out, _ = run(capsys, "chain", "verify", "--data-dir", d)
    assert rc == 0 and "chain OK" in out and "txs         4" in out
    db = sqlite3.connect(data.store.path)
    with db:
        db.execute("UPDATE devices SET balance = 1 WHERE id = ?", (alice.id,))
    db.close()
    rc, out, _ = run(capsys, "chain", "verify", "--data-dir", d)
    assert rc == 1 and "FAILED at height 2: state-mismatch" in out


def test_chain_show(data: Node, capsys: pytest.CaptureFixture[str]) -> None:
    d = str(data.data_dir)
    rc, out, _ = run(capsys, "chain", "show", "--data-dir", d)
    assert rc == 0
    assert "height      2" in out and data.store.head().hash.hex() in out
    lines = out.splitlines()
    assert lines[-3].split()[0] == "0" and lines[-1].split()[0] == "2"
    rc, out, _ = run(capsys, "chain", "show", "--data-dir", d, "--height", "1")
    assert rc == 0 and "txs            3" in out
    for t in data.store.block_txs(1):
        assert t.id.hex() in out
    assert "register" in out and "failed" not in out
    rc, out, err = run(capsys, "chain", "show", "--data-dir", d, "--height", "9")
    assert rc == 1 and "no block at height 9" in err


def test_tx(data: Node, alice: Device, capsys: pytest.CaptureFixture[str]) -> None:
    d = str(data.data_dir)
    reading = data.store.block_txs(1)[1]
    rc, out, _ = run(capsys, "tx", reading.id.hex(), "--data-dir", d)
    assert rc == 0
    assert "value=2150 scale=-2 (21.50)" in out and alice.id.hex() in out
    assert "status    ok" in out and "height    1" in out
    failed = data.store.block_txs(2)[0]
    rc, out, _ = run(capsys, "tx", failed.id.hex()[:12], "--data-dir", d)
    assert rc == 0 and "failed:insufficient-funds" in out
    rc, _, err = run(capsys, "tx", "00" * 32, "--data-dir", d)
    assert rc == 1 and "not found" in err
    rc, _, err = run(capsys, "tx", "xyz", "--data-dir", d)
    assert rc == 2


def test_devices(data: Node, alice: Device, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run(capsys, "devices", "--data-dir", str(data.data_dir))
    assert rc == 0
    lines = out.splitlines()
    assert lines[0].split() == ["id", "public", "key", "firmware", "last", "seq", "balance"]
    assert len(lines) == 1 + 4  # alice, bob, carol, authority
    row = next(line for line in lines if line.startswith(alice.id.hex()))
    # failed transfer; no firmware reported (docs/OTA.md)
    assert row.split() == [alice.id.hex(), alice.pub.hex(), "-", "2", "1000"]
    assert row.index(alice.pub.hex()) == lines[0].index("public key")  # aligned columns
    assert all(len(line) == len(lines[0]) for line in lines)  # numbers right-aligned


def test_data_dir_from_env_and_missing(data: Node, capsys: pytest.CaptureFixture[str],
                                       monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(cli.ENV_DATA, str(data.data_dir))
    rc, out, _ = run(capsys, "devices")
    assert rc == 0 and "balance" in out
    rc, _, err = run(capsys, "devices", "--data-dir", str(tmp_path / "none"))
    assert rc == 2 and "no chain database" in err
    monkeypatch.delenv(cli.ENV_DATA)
    monkeypatch.chdir(tmp_path)
    assert cli.default_data_dir() == Path("var/gateway")
    rc, _, err = run(capsys, "chain", "verify")
    assert rc == 2


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in ([], ["bogus"], ["chain"], ["chain", "show", "--height", "x"],
                 ["run", "--boards", "-1"]):
        with pytest.raises(SystemExit) as ei:
            cli.main(argv)
        assert ei.value.code == 2
    capsys.readouterr()


def test_run_hands_over_to_orchestrator(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    seen = {}
    from tools import run

    def main(args: object) -> int:
        seen["args"] = args
        return 0

    monkeypatch.setattr(run, "main", main)
    assert cli.main(["run", "--broker", "mqtt://127.0.0.1:1999", "--boards", "5",
                     "--domain", "lab", "--block-interval", "0.5", "--no-boards",
                     "--data-dir", str(tmp_path)]) == 0
    a = seen["args"]
    assert (a.broker, a.boards, a.domain, a.block_interval, a.no_boards, a.data_dir) == (
        "mqtt://127.0.0.1:1999", 5, "lab", 0.5, True, str(tmp_path))
    assert cli.main(["run"]) == 0
    a = seen["args"]
    assert (a.broker, a.boards, a.domain, a.block_interval, a.no_boards) == (
        None, 4, "demo", 1.0, False)


def test_console_script_subprocess(data: Node) -> None:
    env = {**os.environ, cli.ENV_DATA: str(data.data_dir)}
    p = subprocess.run([sys.executable, "-m", "tools.cli", "chain", "verify"], cwd=ROOT,
                       env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert "chain OK" in p.stdout
