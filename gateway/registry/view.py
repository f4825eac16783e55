"""Read-only lookups in the registry, for the domain gateway and the CLI.

    view = RegistryView(data_dir)        # sqlite mode=ro: never writes, works
    rec = view.lookup(device_pubkey)     # while another process mines
    rec = view.lookup_id(device_id)
    view.attempts(device_id)             # refused duplicates naming this id
    view.manufacturer(mfr_id)            # (pubkey, name) or None
    view.close()

Each lookup is a single SELECT, so it answers from one committed block.
`PublicRegistry` (the writer) offers the same methods.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

from gateway.db.chain_tables import TxRecord
from gateway.db.sqlite_db import Closing
from gateway.errors import RegistryError
from gateway.registry.chain import Attempt, RegistryRecord
from gateway.registry.params import DB_FILE
from gateway.registry.store import RegistryBlockRecord, RegistryStore


class Lookups:
    """Read methods shared by RegistryView and PublicRegistry (over `_store`)."""

    _store: RegistryStore

    def lookup(self, device_pubkey: bytes) -> RegistryRecord | None:
        """The record of the device born with this public key (33 bytes)."""
        return self._store.record_by_pubkey(bytes(device_pubkey))

    def lookup_id(self, device_id: bytes) -> RegistryRecord | None:
        return self._store.record_by_id(bytes(device_id))

    def attempts(self, device_id: bytes) -> list[Attempt]:
        """Refused duplicate DEVICE_RECORDs that tried to register this device
        id, or that collided with the device registered under it (same key
        or same serial), oldest first."""
        return self._store.attempts(bytes(device_id))

    def manufacturer(self, mfr_id: bytes) -> tuple[bytes, str] | None:
        m = self._store.manufacturer(bytes(mfr_id))
        return (m.pubkey, m.name) if m is not None else None

    def head(self) -> RegistryBlockRecord:
        h = self._store.head()
        assert h is not None, "registry database without genesis block"
        return h

    def tx(self, tx_id: bytes) -> TxRecord | None:
        """A committed transaction with its receipt status and reason."""
        return self._store.get_tx(bytes(tx_id))

    def is_pending(self, tx_id: bytes) -> bool:
        return self._store.is_pending(bytes(tx_id))

    def pending_count(self) -> int:
        return self._store.pending_count()


class RegistryView(Lookups, Closing):
    """Read-only access to the registry in `data_dir` (RegistryError
    not-initialized if there is none)."""

    def __init__(self, data_dir: Path | str) -> None:
        self.data_dir = Path(data_dir)
        self._store = RegistryStore(self.data_dir / DB_FILE, readonly=True)

    def close(self) -> None:
        self._store.close()


def registry_lookup(registry_dir: Path | str, url: str | None = None,
                    confirmations: int = 1) -> Callable[[bytes], object] | None:
    """The registry lookup a domain node passes to open_ledger / verify_chain
    (gateway.registry.RegistryView(dir).lookup, read-only), or None when no
    registry has been initialised in `registry_dir`. The view stays open for
    the life of the process.

    With `url` (mqtt://host:port, GatewayConfig.registry_url) the lookup asks
    the registry nodes behind that broker instead and checks their answer
    (gateway/registry/client.RemoteRegistry: header chain from the genesis in
    `registry_dir`'s registry.toml, Merkle proof, `confirmations` deep); the
    folder then needs only registry.toml."""
    if url:
        from gateway.registry.client import RemoteRegistry
        from gateway.registry.params import load_genesis

        try:
            genesis = load_genesis(Path(registry_dir))
        except RegistryError:
            return None
        return RemoteRegistry(url, genesis, confirmations).lookup
    try:
        view = RegistryView(registry_dir)
    except (RegistryError, OSError, sqlite3.Error):
        return None
    return view.lookup
