"""The systemd units shipped in systemd/ (docs/RASPBERRY_PI.md): each passes
`systemd-analyze verify` with no warning at all (verify exits 0 on unknown
keys and unparsable values, and says so on stderr only), carries the
sandbox and restart settings the Pi service relies on, and runs a
`thingledger` command line that the CLI accepts.

verify needs ExecStart's binary to exist: the test verifies copies of the
units whose only change is the shipped /opt/thingledger/bin/thingledger
replaced by this virtualenv's thingledger."""

from __future__ import annotations

import configparser
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from tools.build import tool
from tools.cli import app

ROOT = Path(__file__).resolve().parent.parent.parent
UNITS = sorted((ROOT / "systemd").glob("*.service"))
SHIPPED_EXE = "/opt/thingledger/bin/thingledger"
NAMES = ["thingledger-broker-export.service", "thingledger-coordinator.service",
         "thingledger-gateway.service", "thingledger-registry.service"]


def service(unit: Path) -> dict[str, str]:
    cp = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    cp.optionxform = str  # type: ignore[assignment,method-assign]
    cp.read_string(unit.read_text())
    return dict(cp["Service"])


def test_the_units_are_shipped() -> None:
    assert [u.name for u in UNITS] == NAMES


@pytest.mark.parametrize("unit", UNITS, ids=lambda u: u.name)
def test_systemd_analyze_verify(unit: Path, tmp_path: Path) -> None:
    exe = shutil.which("systemd-analyze")
    if exe is None:
        pytest.skip("systemd-analyze is not installed (Debian package systemd)")
    text = unit.read_text()
    assert text.count(f"ExecStart={SHIPPED_EXE} ") == 1
    copy = tmp_path / unit.name
    copy.write_text(text.replace(f"ExecStart={SHIPPED_EXE} ", f"ExecStart={tool('thingledger')} "))
    p = subprocess.run([exe, "verify", "--man=no", str(copy)], capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 0 and p.stderr.strip() == "" and p.stdout.strip() == "", (
        p.stdout + p.stderr)


def test_verify_catches_a_broken_unit(tmp_path: Path) -> None:
    """The check above fails on what verify only warns about."""
    exe = shutil.which("systemd-analyze")
    if exe is None:
        pytest.skip("systemd-analyze is not installed (Debian package systemd)")
    bad = tmp_path / "bad.service"
    bad.write_text((ROOT / "systemd" / NAMES[2]).read_text()
                   .replace(SHIPPED_EXE, tool("thingledger"))
                   .replace("ProtectSystem=strict", "ProtectSystem=stric"))
    p = subprocess.run([exe, "verify", "--man=no", str(bad)], capture_output=True, text=True,
                       timeout=60)
    assert "protect system" in p.stderr


@pytest.mark.parametrize("unit", UNITS, ids=lambda u: u.name)
def test_unit_settings(unit: Path) -> None:
    s = service(unit)
    assert s["User"] == "thingledger" and s["Group"] == "thingledger"
    assert s["StateDirectory"] == "thingledger"
    assert s["ProtectSystem"] == "strict"
    assert s["Restart"] == "on-failure"
    assert s["NoNewPrivileges"] == "yes" and s["ProtectHome"] == "yes"
    assert "PYTHONUNBUFFERED=1" in s["Environment"]  # lines reach journald as they happen


@pytest.mark.parametrize("unit", UNITS, ids=lambda u: u.name)
def test_exec_start_is_a_valid_command_line(unit: Path) -> None:
    argv = shlex.split(service(unit)["ExecStart"])
    assert argv[0] == SHIPPED_EXE
    args = app.build_parser().parse_args(argv[1:])  # SystemExit(2) on a bad option
    if args.command == "run":
        assert args.config == "/etc/thingledger/gateway.toml" and args.no_boards
    elif args.command == "registry":
        assert args.registry_dir == "/var/lib/thingledger/registry" and args.mine
    else:
        assert args.data_dir == "/var/lib/thingledger"
    if args.command == "broker":
        assert args.watch and args.group == "mosquitto" and args.reload_pid_file
