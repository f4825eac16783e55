"""The permission-less public registry chain (docs/IDENTITY.md §1).

Manufacturers register themselves (MFR_REGISTER) and their devices
(DEVICE_RECORD); blocks are sealed by proof of work, anyone may read and
mine. Modules: chain (records, validation, state transitions: pure), pow
(target, retarget, mining loop), params (registry.toml genesis), store
(SQLite WAL, registry.db), view (read-only lookups), replay (verify),
core (the PublicRegistry node). The network: forks (fork choice by
cumulative work, reorganisation), node (`registry serve` on MQTT), wire
(topics and payloads), client (submit through nodes, proof-checked light
lookups; RemoteRegistry for a domain's claim check).

    from gateway.registry import open_registry, RegistryView, RegistryRecord
"""

from gateway.registry.chain import (
    ANONYMOUS_MINER,
    DOMAIN,
    Attempt,
    Manufacturer,
    RecordProof,
    RegistryRecord,
    check_record_proof,
)
from gateway.registry.core import PublicRegistry, open_registry
from gateway.registry.params import DB_FILE, GENESIS_FILE, RegistryError, RegistryGenesis
from gateway.registry.replay import RegistryReport
from gateway.registry.view import RegistryView

__all__ = [
    "ANONYMOUS_MINER", "DB_FILE", "DOMAIN", "GENESIS_FILE", "Attempt", "Manufacturer",
    "RecordProof", "PublicRegistry", "RegistryError", "RegistryGenesis", "RegistryRecord",
    "RegistryReport", "RegistryView", "check_record_proof", "open_registry",
]
