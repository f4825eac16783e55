"""Registry genesis: the founding parameters of the public registry chain.

The file `<data dir>/registry.toml` (flat TOML, written by `create_genesis`,
read by `load_genesis`):

    domain = "registry"      # fixed: the chain id of the public registry
    time = 1700000000        # chain time of block 0 (unix seconds)
    difficulty_bits = 16     # genesis target = 2^(64 - bits), see pow.py
    block_time_s = 2.0       # the block time the retarget aims at
    retarget_blocks = 8      # retarget every N blocks (0: never)
    block_max_txs = 500      # at most this many txs in one block

The genesis target is also the *proof-of-work limit*: retargeting never makes
blocks easier than genesis, so a registry that sat idle does not come back
with a trivial difficulty. Tests use `difficulty_bits = 0` (every hash
passes) and mine in microseconds.

Every field is consensus: `digest()` is stored in the database, and a data
dir is never opened with another genesis.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from hashlib import sha256
from pathlib import Path
from typing import Any

from gateway.db.genesis_files import read_toml
from gateway.errors import RegistryError
from gateway.registry import pow as pw
from shared import cbor

DOMAIN = "registry"
GENESIS_FILE = "registry.toml"
DB_FILE = "registry.db"
DEFAULT_BITS = 16
DEFAULT_BLOCK_TIME = 2.0
DEFAULT_RETARGET = 8
DEFAULT_MAX_TXS = 500
MAX_BITS = 63
MAX_BLOCK_TXS = 10_000
MAX_BLOCK_BYTES = 512 * 1024  # a block on the network (header + txs, CBOR)


@dataclass(frozen=True)
class RegistryGenesis:
    time: int
    difficulty_bits: int = DEFAULT_BITS
    block_time_s: float = DEFAULT_BLOCK_TIME
    retarget_blocks: int = DEFAULT_RETARGET
    block_max_txs: int = DEFAULT_MAX_TXS
    domain: str = DOMAIN

    def __post_init__(self) -> None:
        _check(self)

    @property
    def target(self) -> int:
        """Genesis target (also the proof-of-work limit)."""
        return pw.target_from_bits(self.difficulty_bits)

    @property
    def block_time_ms(self) -> int:
        return round(self.block_time_s * 1000)

    def digest(self) -> bytes:
        return sha256(cbor.dumps([self.domain, self.time, self.difficulty_bits,
                                  self.block_time_ms, self.retarget_blocks,
                                  self.block_max_txs])).digest()


def _int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _bad(key: str, problem: str) -> RegistryError:
    return RegistryError("bad-genesis", f"{key}: {problem}")


def _check(g: RegistryGenesis) -> None:
    if g.domain != DOMAIN:
        raise _bad("domain", f"must be {DOMAIN!r}")
    if not _int(g.time) or g.time < 0:
        raise _bad("time", "must be an integer >= 0")
    if not _int(g.difficulty_bits) or not 0 <= g.difficulty_bits <= MAX_BITS:
        raise _bad("difficulty_bits", f"must be an integer 0..{MAX_BITS}")
    bt = g.block_time_s
    if isinstance(bt, bool) or not isinstance(bt, int | float) or not math.isfinite(bt) \
            or not 0.001 <= bt <= 86400:
        raise _bad("block_time_s", "must be a number of seconds, 0.001 .. 86400")
    if not _int(g.retarget_blocks) or not 0 <= g.retarget_blocks <= 100_000:
        raise _bad("retarget_blocks", "must be an integer 0..100000 (0: never)")
    if not _int(g.block_max_txs) or not 1 <= g.block_max_txs <= MAX_BLOCK_TXS:
        raise _bad("block_max_txs", f"must be an integer 1..{MAX_BLOCK_TXS}")


_KEYS = ("domain", "time", "difficulty_bits", "block_time_s", "retarget_blocks",
         "block_max_txs")


def from_dict(d: dict[str, Any]) -> RegistryGenesis:
    for k in d:
        if k not in _KEYS:
            raise _bad(k, "unknown key")
    if "time" not in d:
        raise _bad("time", "missing")
    kw = {k: d[k] for k in _KEYS if k in d}
    if "block_time_s" in kw and _int(kw["block_time_s"]):
        kw["block_time_s"] = float(kw["block_time_s"])
    return RegistryGenesis(**kw)


def dumps(g: RegistryGenesis) -> str:
    return "\n".join([
        "# ThingLedger public registry genesis (every field is consensus: do not edit)",
        "domain = " + json.dumps(g.domain),
        "time = %d" % g.time,
        "difficulty_bits = %d   # genesis target 2^(64-bits); also the easiest allowed"
        % g.difficulty_bits,
        "block_time_s = %r" % float(g.block_time_s),
        "retarget_blocks = %d" % g.retarget_blocks,
        "block_max_txs = %d" % g.block_max_txs,
    ]) + "\n"


def load_genesis(data_dir: Path) -> RegistryGenesis:
    p = Path(data_dir) / GENESIS_FILE
    if not p.exists():
        raise RegistryError("not-initialized", f"no registry genesis at {p}")
    return from_dict(read_toml(p, lambda m: RegistryError("bad-genesis", m)))


def create_genesis(data_dir: Path, g: RegistryGenesis) -> Path:
    """Write `registry.toml` into `data_dir` (created); never overwrites."""
    d = Path(data_dir)
    d.mkdir(parents=True, exist_ok=True)
    p = d / GENESIS_FILE
    tmp = d / (".%s.%d.tmp" % (GENESIS_FILE, os.getpid()))
    tmp.write_text(dumps(g))
    try:
        os.link(tmp, p)  # atomic, and fails if another process won the race
    except FileExistsError:
        raise RegistryError("exists", f"{p} already exists") from None
    except OSError:  # a file system without hard links (e.g. FAT on an SD card)
        if p.exists():
            raise RegistryError("exists", f"{p} already exists") from None
        os.replace(tmp, p)
    finally:
        tmp.unlink(missing_ok=True)
    return p
