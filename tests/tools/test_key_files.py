"""Private key files are 0600 and, as ssh does, a key file its group or
others may read or write is refused (tools/keys.py, the gateway's authority
key): a typed error, and the CLI says how to fix it and exits non-zero."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.db import genesis_files as genesis
from tools import cli
from tools.keys import KeyFileError, UnprotectedKeyError, load_key, new_key


@contextlib.contextmanager
def umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def test_new_keys_are_0600_whatever_the_umask(tmp_path: Path, capsys) -> None:
    with umask(0):
        new_key(tmp_path / "a.key")
        assert cli.main(["key", "new", "--out", str(tmp_path / "b.key")]) == 0
    for name in ("a.key", "b.key"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o600
        load_key(tmp_path / name)


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o620, 0o602, 0o660, 0o666])
def test_group_or_world_access_is_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "owner.key"
    new_key(path)
    path.chmod(mode)
    with pytest.raises(UnprotectedKeyError) as ei:
        load_key(path)
    assert isinstance(ei.value, KeyFileError)
    assert ei.value.mode == mode and ei.value.path == path
    path.chmod(0o600)
    load_key(path)
    path.chmod(0o400)  # read-only for its owner: fine
    load_key(path)


def test_cli_refuses_a_0644_key(tmp_path: Path, capsys) -> None:
    path = tmp_path / "owner.key"
    new_key(path)
    argv = ["owner", "approve-rotation", "--key", str(path), "--device", "ab" * 16,
            "--new-pubkey", new_key(tmp_path / "next.key").public.hex()]
    path.chmod(0o644)
    rc = cli.main(argv)
    out, err = capsys.readouterr()
    assert rc == cli.EXIT_USAGE and not out
    assert "unprotected private key file" in err and f"chmod 600 {path}" in err
    assert "0644" in err
    path.chmod(0o600)  # the fix the message gives
    assert cli.main(argv) == 0
    assert capsys.readouterr().out.strip()  # the approval, in hex


def test_gateway_refuses_an_unprotected_authority_key(tmp_path: Path) -> None:
    path = tmp_path / "authority.key"
    genesis.write_key(path, b"\x11" * 32)
    assert path.stat().st_mode & 0o777 == 0o600
    assert genesis.load_authority_key(path) == b"\x11" * 32
    path.chmod(0o644)
    with pytest.raises(genesis.GenesisError) as ei:
        genesis.load_authority_key(path)
    assert ei.value.key == "<authority key>" and "unprotected private key file" in ei.value.problem
