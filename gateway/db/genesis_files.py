"""The domain's founding files on disk: the genesis file (TOML), the authority
key file (mode 0600), and `create_domain` (a new key pair and genesis in a data
dir, timed by the clock). The genesis itself (parsing, checks, header) is the
ledger's, gateway/ledger/genesis.py; its names are re-exported here so callers
need one module."""

from __future__ import annotations

import os
import shutil
import time as _time
import tomllib
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from gateway.errors import GenesisError as GenesisError
from gateway.ledger.genesis import ZERO_HASH as ZERO_HASH  # re-exported: one module for callers
from gateway.ledger.genesis import Account as Account
from gateway.ledger.genesis import Genesis as Genesis
from gateway.ledger.genesis import dumps as dumps
from gateway.ledger.genesis import from_dict as from_dict
from gateway.ledger.genesis import genesis_header as genesis_header
from gateway.node.config import GENESIS_FILE as GENESIS_FILE
from gateway.node.config import KEY_FILE as KEY_FILE
from gateway.node.config import VALIDATOR_KEY_FILE
from shared import p256
from shared import tx as txm


def read_toml(p: Path, fail: Callable[[str], Exception]) -> dict[str, Any]:
    """The table of a TOML file; `fail(message)` is raised for a file that
    cannot be read or parsed (a missing one: FileNotFoundError's message)."""
    try:
        with p.open("rb") as f:
            return tomllib.load(f)
    except OSError as e:
        raise fail(f"cannot read {p}: {e.strerror}") from e
    except tomllib.TOMLDecodeError as e:
        raise fail(f"{p} is not valid TOML: {e}") from e


def load(path: Path | str) -> Genesis:
    return from_dict(read_toml(Path(path), lambda m: GenesisError("<file>", m)))


# a private key file its group or others may read or write is refused, as ssh
# does (the authority key here, people's keys in tools/keys.py, `thingledger doctor`)
KEY_OPEN_BITS = 0o077


def key_too_open(mode: int) -> bool:
    """Whether a key file's st_mode lets its group or others in."""
    return bool(mode & KEY_OPEN_BITS)


def write_key(path: Path, priv: bytes) -> None:
    """Create `path` (mode 0600, never overwriting) holding the key as hex."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(priv.hex() + "\n")


def load_authority_key(path: Path | str, g: Genesis | None = None) -> bytes:
    """The authority private key; checked against `g.authority` if given."""
    p = Path(path)
    try:
        with p.open() as f:
            mode = os.fstat(f.fileno()).st_mode & 0o777
            if key_too_open(mode):
                raise GenesisError("<authority key>", f"{p}: unprotected private key file: "
                                   f"permissions {mode:04o} are too open; fix with: chmod 600 {p}")
            priv = bytes.fromhex(f.read().strip())
    except OSError as e:
        raise GenesisError("<authority key>", f"cannot read {p}: {e.strerror}") from e
    except GenesisError:
        raise
    except ValueError:
        raise GenesisError("<authority key>", f"{p} is not hex") from None
    if len(priv) != 32:
        raise GenesisError("<authority key>", f"{p} must hold 32 bytes")
    if g is not None and p256.public_key(priv) != g.authority:
        raise GenesisError("authority", f"does not match the key in {p}")
    return priv


def create_domain(data_dir: Path | str, domain: str,
                  accounts: Mapping[bytes, int] | Iterable[tuple[bytes, int]] = (),
                  *, time: int | None = None, admission: str = "open",
                  min_fee: int = 0, owner: bytes = b"",
                  authority_balance: int = 0, trust: bool = False,
                  authority_key: bytes | None = None, consensus: str = "authority",
                  validators: Iterable[bytes] = (), threshold: int = 0) -> tuple[Path, Path]:
    """New domain in `data_dir`: a fresh authority key pair (p256.keygen,
    file mode 0600) and a genesis file. `accounts` maps device public keys
    (33 bytes) to genesis balances; `owner` is the owner's public key
    (required for admission "claimed"); `authority_balance` gives the new
    authority account (the operator) a genesis balance; `authority_key` is the
    authority's private key when it is not to be generated here. `consensus`
    (docs/CONSENSUS.md): "authority" (the default: the authority key alone
    finalises each block), "quorum" (`validators`' public keys, `threshold`,
    0: a majority) or "" (no consensus section: version-1 headers, as chains
    created before it). Refuses to overwrite either file.
    Returns (genesis_path, authority_key_path)."""
    d = Path(data_dir)
    d.mkdir(parents=True, exist_ok=True)
    gpath, kpath = d / GENESIS_FILE, d / KEY_FILE
    if gpath.exists():
        raise FileExistsError(str(gpath))
    items = accounts.items() if isinstance(accounts, Mapping) else accounts
    accts = {txm.device_id(pub): Account(pub, bal) for pub, bal in items}
    if authority_key is None:
        priv, pub = p256.keygen()
    else:
        priv, pub = authority_key, p256.public_key(authority_key)
    if authority_balance:
        accts[txm.device_id(pub)] = Account(pub, authority_balance)
    g = Genesis(domain=domain, authority=pub,
                time=int(_time.time()) if time is None else time,
                admission=admission, min_fee=min_fee, accounts=accts, owner=owner,
                trust=trust, consensus=consensus, validators=tuple(validators),
                threshold=threshold)
    write_key(kpath, priv)
    tmp = gpath.with_suffix(".tmp")
    tmp.write_text(dumps(g))
    os.replace(tmp, gpath)
    return gpath, kpath


def create_replicated_domain(dirs: list[Path], domain: str, keys: list[bytes],
                             accounts: Mapping[bytes, int] | Iterable[tuple[bytes, int]] = (),
                             **genesis: Any) -> None:
    """The data folders of a quorum domain's gateways (docs/CONSENSUS.md): a
    new domain made in dirs[0] (create_domain with consensus "quorum";
    `genesis`: its other arguments, validators= and threshold= among them),
    its genesis file and domain key copied into every other folder, and
    keys[i] (a private key) written as folder i's validator key."""
    first = Path(dirs[0])
    create_domain(first, domain, accounts, consensus="quorum", **genesis)
    for i, (d, k) in enumerate(zip(map(Path, dirs), keys, strict=True)):
        if i:
            d.mkdir(parents=True)
            for name in (GENESIS_FILE, KEY_FILE):
                shutil.copy2(first / name, d / name)
        write_key(d / VALIDATOR_KEY_FILE, k)
