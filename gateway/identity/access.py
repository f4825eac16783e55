"""Read-only access queries over a domain's identity state (docs/IDENTITY.md).

Broker enforcement (gateway/broker/policy.py), `thingledger broker export` and
the CLI code against this; it never changes the state. Build one from the
committed state (`Access.from_state(ledger.state, domain)`, or
`store.load_state()` for a reader) and rebuild it after each block: it is a
snapshot.

Semantics (the same as the gateway's rules in gateway/identity/rules.py):
- key_of(id): the principal's current public key (devices after rotation or
  recovery: the new key), for any known principal (device, person, node,
  authority); None if unknown.
- is_active(id): known and not revoked / decommissioned (people, nodes and
  the authority are always active).
- can(p, right, device): p is active, the device is known and not
  decommissioned, and either p owns the device (the owner holds every right),
  or p was granted `right` on it (the device itself holds `submit` from its
  claim). A device with no owner (genesis account, or self-registered under
  admission "open") governs itself: can(d, any right, d) is True and nobody
  else holds rights on it. Rights: "submit", "read", "buy".
- readable(p): ids of the devices p can "read".
- owner_of(device): the owning person's id, None if not owned / unknown.
- bought(p): (supplier, agreement id) of every open agreement p buys
  (docs/MARKET.md): p may read that agreement's data topic.
- principals(): every known id, sorted.
- is_banned(id): the trust level of the id is banned (docs/TRUST.md).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from gateway.ledger.state import (
    ACTIVE,
    DECOMMISSIONED,
    KIND_DEVICE,
    RIGHT_READ,
    RIGHTS,
    DeviceRecord,
)
from gateway.trust import standing as trust


class Access:
    __slots__ = ("domain", "_recs", "_ids", "_read", "_bought", "_banned")

    def __init__(self, records: Mapping[bytes, DeviceRecord], domain: str,
                 agreements: Iterable[Mapping[str, Any]] = (),
                 banned: Iterable[bytes] = ()) -> None:
        self.domain = domain
        self._banned = frozenset(banned)
        self._bought: dict[bytes, set[tuple[bytes, bytes]]] = {}
        for a in agreements:
            if a["state"] == "open":
                self._bought.setdefault(a["buyer"], set()).add((a["supplier"], a["id"]))
        self._recs: dict[bytes, DeviceRecord] = dict(records)
        self._ids = sorted(self._recs)
        read: dict[bytes, set[bytes]] = {}
        for i, r in self._recs.items():
            if r.kind != KIND_DEVICE or r.status == DECOMMISSIONED:
                continue
            if not r.owner:
                read.setdefault(i, set()).add(i)
                continue
            read.setdefault(r.owner, set()).add(i)
            for p, rights in r.acl:
                if RIGHT_READ in rights:
                    read.setdefault(p, set()).add(i)
        self._read = read

    @classmethod
    def from_state(cls, state: Any, domain: str) -> Access:
        """From a state.State (its `devices` and open agreements), or any id
        -> record mapping."""
        if not hasattr(state, "devices"):
            return cls(state, domain)
        from gateway.market.ledger.rules import open_agreements

        return cls(state.devices, domain, open_agreements(state), trust.banned(state))

    def is_banned(self, principal_id: bytes) -> bool:
        """Banned by the domain's trust levels (docs/TRUST.md): the broker
        refuses it, the mosquitto export leaves it out."""
        return principal_id in self._banned

    def bought(self, principal_id: bytes) -> set[tuple[bytes, bytes]]:
        if not self.is_active(principal_id):
            return set()
        return set(self._bought.get(principal_id, ()))

    def record(self, principal_id: bytes) -> DeviceRecord | None:
        return self._recs.get(principal_id)

    def key_of(self, principal_id: bytes) -> bytes | None:
        r = self._recs.get(principal_id)
        return r.pubkey if r is not None else None

    def is_active(self, principal_id: bytes) -> bool:
        r = self._recs.get(principal_id)
        return r is not None and r.status == ACTIVE

    def can(self, principal_id: bytes, right: str, device_id: bytes) -> bool:
        if right not in RIGHTS or not self.is_active(principal_id):
            return False
        d = self._recs.get(device_id)
        if d is None or d.kind != KIND_DEVICE or d.status == DECOMMISSIONED:
            return False
        if not d.owner:
            return principal_id == device_id
        return principal_id == d.owner or right in d.rights_of(principal_id)

    def readable(self, principal_id: bytes) -> set[bytes]:
        if not self.is_active(principal_id):
            return set()
        return set(self._read.get(principal_id, ()))

    def owner_of(self, device_id: bytes) -> bytes | None:
        r = self._recs.get(device_id)
        return r.owner if r is not None and r.owner else None

    def principals(self) -> list[bytes]:
        return list(self._ids)

    def nodes(self) -> list[tuple[bytes, DeviceRecord]]:
        """(id, record) of every principal that joined as a node, sorted by id."""
        return [(i, self._recs[i]) for i in self._ids if self._recs[i].node]
