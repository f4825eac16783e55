"""`thingledger registry ...` end to end through tools.cli.main in temp dirs."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import pytest

from gateway.registry import DB_FILE
from shared import tx as txm
from tools import cli
from tools.keys import KeyPair, new_key

Run = tuple[int, str, str]


@pytest.fixture
def rdir(tmp_path: Path) -> str:
    return str(tmp_path / "registry")


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, tuple[str, KeyPair]]:
    out = {}
    for name in ("acme", "globex", "rogue", "dev1", "dev2"):
        p = tmp_path / (name + ".key")
        out[name] = (str(p), new_key(p))
    return out


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> Run:
    rc = cli.main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture
def reg(capsys: pytest.CaptureFixture[str], rdir: str,
        keys: dict[str, tuple[str, KeyPair]]) -> str:
    """An initialized registry with manufacturers Acme and Globex."""
    rc, out, _ = run(capsys, "registry", "init", "--registry-dir", rdir,
                     "--difficulty-bits", "4", "--block-time", "1")
    assert rc == 0 and "registry created" in out and "4 bits" in out
    for who, name in (("acme", "Acme Sensors"), ("globex", "Globex")):
        rc, out, _ = run(capsys, "registry", "manufacturer", "--registry-dir", rdir,
                         "--key", keys[who][0], "--name", name)
        assert rc == 0 and "status        ok" in out and keys[who][1].id.hex() in out
    return rdir


def record(capsys: pytest.CaptureFixture[str], rdir: str, key: str, pub: bytes, serial: str,
           *extra: str, warranty: str = "2099-12-31", made: str = "2024-03-01") -> Run:
    return run(capsys, "registry", "record", "--registry-dir", rdir, "--key", key,
               "--pubkey", pub.hex(), "--model", "Thermo 1", "--serial", serial,
               "--manufactured", made, "--warranty-end", warranty, *extra)


def test_register_show_and_refused_duplicates(capsys: pytest.CaptureFixture[str], reg: str,
                                              keys: dict[str, tuple[str, KeyPair]]) -> None:
    acme, globex = keys["acme"], keys["globex"]
    dev = keys["dev1"][1]
    rc, out, _ = record(capsys, reg, acme[0], dev.public, "SN-0001")
    assert rc == 0 and "status        ok" in out and dev.id.hex() in out
    height = int(re.search(r"height\s+(\d+)", out).group(1))

    # the same device key claimed by another manufacturer: included, failed
    rc, out, _ = record(capsys, reg, globex[0], dev.public, "GX-9")
    assert rc == 1 and "failed: already-registered" in out
    assert "same key as registered device %s" % dev.id.hex() in out
    # another key with Acme's serial, by Globex
    other = keys["dev2"][1]
    rc, out, _ = record(capsys, reg, globex[0], other.public, "SN-0001")
    assert rc == 1 and "failed: already-registered" in out and "same serial" in out

    rc, out, _ = run(capsys, "registry", "show", "--registry-dir", reg, dev.id.hex())
    assert rc == 0
    assert "device        %s" % dev.id.hex() in out
    assert "serial        SN-0001" in out and "model         Thermo 1" in out
    assert "manufactured  2024-03-01" in out
    assert "manufacturer  %s (Acme Sensors)" % acme[1].id.hex() in out
    assert "registered    height %d" % height in out
    assert "warranty: valid until 2099-12-31" in out
    assert "refused duplicate attempts: 2" in out
    assert out.count("by %s (Globex)" % globex[1].id.hex()) == 2
    assert "same key as device" in out and "same serial as device" in out

    # by public key too; the refused device id is not registered but its attempt shows
    rc, out2, _ = run(capsys, "registry", "show", "--registry-dir", reg, dev.public.hex())
    assert rc == 0 and out2 == out
    rc, out, err = run(capsys, "registry", "show", "--registry-dir", reg, other.id.hex())
    assert rc == 1 and "not in the registry" in err and "refused duplicate attempts: 1" in out

    rc, out, _ = run(capsys, "registry", "verify", "--registry-dir", reg)
    assert rc == 0 and "registry OK" in out and "refused dups   2" in out


def test_warranty_expired_and_at(capsys: pytest.CaptureFixture[str], reg: str,
                                 keys: dict[str, tuple[str, KeyPair]]) -> None:
    dev = keys["dev1"][1]
    rc, _, _ = record(capsys, reg, keys["acme"][0], dev.public, "OLD-1", warranty="2020-01-01",
                      made="1514764800")
    assert rc == 0
    rc, out, _ = run(capsys, "registry", "show", "--registry-dir", reg, dev.id.hex())
    assert rc == 0 and "warranty: expired on 2020-01-01" in out
    assert "refused duplicate" not in out
    rc, out, _ = run(capsys, "registry", "show", "--registry-dir", reg, dev.id.hex(),
                     "--at", "2019-06-01")
    assert rc == 0 and "warranty: valid until 2020-01-01" in out


def test_no_mine_then_anyone_mines(capsys: pytest.CaptureFixture[str], reg: str,
                                   keys: dict[str, tuple[str, KeyPair]]) -> None:
    dev = keys["dev1"][1]
    rc, out, _ = record(capsys, reg, keys["acme"][0], dev.public, "Q-1", "--no-mine")
    assert rc == 0 and "pending" in out
    rc, out, _ = run(capsys, "registry", "show", "--registry-dir", reg, dev.id.hex())
    assert rc == 1
    rc, out, _ = run(capsys, "registry", "mine", "--registry-dir", reg, "--miner",
                     keys["rogue"][1].id.hex())
    assert rc == 0 and "mined 1 block (height 3..3)" in out
    rc, out, _ = run(capsys, "registry", "mine", "--registry-dir", reg)
    assert rc == 0 and "nothing to mine" in out
    rc, out, _ = run(capsys, "registry", "show", "--registry-dir", reg, dev.id.hex())
    assert rc == 0 and "registered    height 3" in out
    db = sqlite3.connect(Path(reg) / DB_FILE)
    (hb,) = db.execute("SELECT header FROM blocks WHERE height = 3").fetchone()
    db.close()
    assert keys["rogue"][1].id in hb  # the miner's id is the proposer


def test_refusals(capsys: pytest.CaptureFixture[str], reg: str,
                  keys: dict[str, tuple[str, KeyPair]]) -> None:
    dev = keys["dev1"][1]
    rc, out, _ = record(capsys, reg, keys["rogue"][0], dev.public, "R-1")
    assert rc == 1 and "refused: unknown-device (not-manufacturer)" in out
    rc, out, _ = record(capsys, reg, keys["acme"][0], b"\x02" + b"\xff" * 32, "R-1")
    assert rc == 1 and "refused: bad-tx (bad-pubkey)" in out
    rc, out, _ = run(capsys, "registry", "manufacturer", "--registry-dir", reg,
                     "--key", keys["acme"][0], "--name", "Acme again")
    assert rc == 1 and "refused: already-registered" in out
    rc, out, _ = run(capsys, "registry", "record", "--registry-dir", reg, "--key",
                     keys["acme"][0], "--pubkey", dev.public.hex(), "--model", "M",
                     "--serial", "S", "--manufactured", "2024-01-01",
                     "--warranty-end", "2023-01-01")
    assert rc == 1 and "refused: bad-tx (bad-warranty)" in out


def test_submit_a_signed_file(capsys: pytest.CaptureFixture[str], reg: str, tmp_path: Path,
                              keys: dict[str, tuple[str, KeyPair]]) -> None:
    acme, dev = keys["acme"][1], keys["dev2"][1]
    msg = acme.sign_tx(txm.TYPE_DEVICE_RECORD, "registry", 1 << 60,
                       {1: dev.public, 2: "Board", 3: "B-1", 4: 1_700_000_000,
                        5: 1_800_000_000})
    f = tmp_path / "tx.hex"
    f.write_text(msg.hex() + "\n")
    rc, out, _ = run(capsys, "registry", "submit", "--registry-dir", reg, str(f))
    assert rc == 0 and txm.tx_id(msg).hex() in out and "status        ok" in out
    f.write_bytes(msg)  # binary: same tx, answered idempotently
    rc, out, _ = run(capsys, "registry", "submit", "--registry-dir", reg, str(f))
    assert rc == 0 and "status        ok" in out


def test_verify_detects_tampering(capsys: pytest.CaptureFixture[str], reg: str,
                                  keys: dict[str, tuple[str, KeyPair]]) -> None:
    record(capsys, reg, keys["acme"][0], keys["dev1"][1].public, "T-1")
    db = sqlite3.connect(Path(reg) / DB_FILE)
    with db:
        db.execute("UPDATE devices SET serial = 'T-2'")
    db.close()
    rc, out, _ = run(capsys, "registry", "verify", "--registry-dir", reg)
    assert rc == 1 and "FAILED at height 3: state-mismatch" in out


def test_usage_errors_and_env(capsys: pytest.CaptureFixture[str], rdir: str, tmp_path: Path,
                              monkeypatch: pytest.MonkeyPatch) -> None:
    rc, _, err = run(capsys, "registry", "show", "--registry-dir", rdir, "00" * 16)
    assert rc == 2 and "not-initialized" in err
    rc, _, err = run(capsys, "registry", "mine", "--registry-dir", rdir)
    assert rc == 2 and "registry init" in err
    monkeypatch.setenv("THINGLEDGER_REGISTRY", rdir)
    rc, out, _ = run(capsys, "registry", "init", "--difficulty-bits", "0")
    assert rc == 0 and (Path(rdir) / "registry.toml").exists()
    rc, _, err = run(capsys, "registry", "init")
    assert rc == 2 and "already exists" in err
    rc, _, err = run(capsys, "registry", "show", "xyz")
    assert rc == 2 and "hex" in err
    rc, _, err = run(capsys, "registry", "show", "abcd")
    assert rc == 2
    rc, out, err = run(capsys, "registry", "show", "00" * 16)
    assert rc == 1 and "not in the registry" in err
    rc, _, err = run(capsys, "registry", "manufacturer", "--key", str(tmp_path / "none.key"),
                     "--name", "X")
    assert rc == 2 and "cannot read key file" in err
    with pytest.raises(SystemExit):
        run(capsys, "registry", "init", "--difficulty-bits", "99")
    rc, out, _ = run(capsys, "registry", "verify")
    assert rc == 0 and "blocks         1 (height 0..0)" in out


def test_init_with_a_genesis_file_joins_that_registry(capsys, reg: str, tmp_path: Path):
    other = str(tmp_path / "joined")
    rc, out, _ = run(capsys, "registry", "init", "--registry-dir", other, "--genesis",
                     str(Path(reg) / "registry.toml"), "--difficulty-bits", "20")
    assert rc == 0
    block0 = re.search(r"block 0\s+([0-9a-f]{64})", out).group(1)
    rc, out, _ = run(capsys, "registry", "verify", "--registry-dir", reg)
    with sqlite3.connect(Path(reg) / DB_FILE) as db:
        assert db.execute("SELECT hash FROM blocks WHERE height = 0").fetchone()[0].hex() == block0
    assert (Path(other) / "registry.toml").read_text() == (Path(reg) / "registry.toml").read_text()
    bad = tmp_path / "bad.toml"
    bad.write_text('domain = "registry"\ntime = "soon"\n')
    rc, _, err = run(capsys, "registry", "init", "--registry-dir", str(tmp_path / "x"),
                     "--genesis", str(bad))
    assert rc == 2 and "bad-genesis" in err


def test_remote_commands_need_a_genesis_and_a_node(capsys, keys, tmp_path: Path):
    from tests.support.brokers import free_port

    url = "mqtt://127.0.0.1:%d" % free_port()  # nobody listens
    rc, _, err = run(capsys, "registry", "manufacturer", "--registry-dir", str(tmp_path / "no"),
                     "--key", keys["acme"][0], "--name", "Acme", "--to", url)
    assert rc == 2 and "--genesis" in err
    reg = str(tmp_path / "r")
    assert run(capsys, "registry", "init", "--registry-dir", reg)[0] == 0
    rc, _, err = run(capsys, "registry", "show", keys["dev1"][1].public.hex(), "--registry-dir",
                     reg, "--from", url, "--timeout", "0.5")
    assert rc == 1 and "registry-unavailable" in err
