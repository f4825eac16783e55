"""`thingledger run --config FILE`: the gateway as a service runs it (systemd/,
docs/RASPBERRY_PI.md): settings from the TOML file (gateway/node/config.py),
the file's external broker, event lines on stderr, one plain line each."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from tests.support.brokers import AmqttBroker
from tools.build import tool

LINE = re.compile(r"^\d\d:\d\d:\d\d \S+ +\S.*$")


def write_config(path: Path, url: str, **extra: str) -> Path:
    lines = ['domain = "pi-home"', 'data_dir = "state"', f'broker_url = "{url}"',
             "block_interval_s = 0.2"] + [f"{k} = {v}" for k, v in extra.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def thingledger_run(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([tool("thingledger"), "run", "--no-http", *args], cwd=cwd,
                          capture_output=True,
                          text=True, timeout=120)


def test_run_from_a_config_file(tmp_path: Path, amqtt_broker: AmqttBroker) -> None:
    cfg = write_config(tmp_path / "gateway.toml", amqtt_broker.url)
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    p = thingledger_run(elsewhere, "--config", str(cfg), "--no-boards", "--seconds", "3")
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stdout == ""  # a service's lines go to stderr (journald)
    lines = p.stderr.splitlines()
    assert lines and all(LINE.match(s) for s in lines), p.stderr
    assert "\x1b" not in p.stderr  # not a terminal: no colour
    # the file's domain and data_dir (relative to the file), not the defaults
    assert (tmp_path / "state" / "chain.db").exists()
    assert not (elsewhere / "var").exists()
    assert "pi-home" in (tmp_path / "state" / "genesis.toml").read_text()
    assert "embedded amqtt broker" not in p.stderr  # the file's broker, no embedded one
    end = re.search(r"stopped at height (\d+)", p.stderr)
    assert end, p.stderr
    v = subprocess.run([tool("thingledger"), "chain", "verify", "--data-dir",
                        str(tmp_path / "state")], capture_output=True, text=True, timeout=60)
    assert v.returncode == 0, v.stdout + v.stderr


def test_workers_from_the_file_or_the_command_line(tmp_path: Path,
                                                   amqtt_broker: AmqttBroker) -> None:
    """`workers = N` in the file, or `--workers N` without one, starts N
    validation worker processes (gateway/node/verifier.py); 0 starts none."""
    cfg = write_config(tmp_path / "gateway.toml", amqtt_broker.url, workers="2")
    p = thingledger_run(tmp_path, "--config", str(cfg), "--no-boards", "--seconds", "1")
    assert p.returncode == 0 and "2 validation worker processes" in p.stderr, p.stderr
    p = thingledger_run(tmp_path, "--config", str(cfg), "--workers", "1")
    assert p.returncode == 1 and "--config cannot be combined with --workers" in p.stderr
    base = ["--no-boards", "--seconds", "1", "--broker", amqtt_broker.url, "--data-dir",
            str(tmp_path / "cli")]
    p = thingledger_run(tmp_path, *base, "--workers", "1")
    assert p.returncode == 0 and "1 validation worker process " in p.stdout, p.stdout + p.stderr
    p = thingledger_run(tmp_path, *base, "--workers", "0")
    assert p.returncode == 0 and "validation worker" not in p.stdout, p.stdout + p.stderr


def test_bad_config_files_are_refused(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('domain = "Pi Home"\n')
    p = thingledger_run(tmp_path, "--config", str(bad), "--no-boards")
    assert p.returncode == 1 and "config key 'domain'" in p.stderr, p.stderr
    p = thingledger_run(tmp_path, "--config", str(tmp_path / "missing.toml"))
    assert p.returncode == 1 and "cannot read" in p.stderr, p.stderr
    ok = write_config(tmp_path / "ok.toml", "mqtt://127.0.0.1:1")
    p = thingledger_run(tmp_path, "--config", str(ok), "--broker", "mqtt://127.0.0.1:2")
    assert p.returncode == 1 and "--config cannot be combined with --broker" in p.stderr
    assert not (tmp_path / "state").exists()  # refused before anything is created
