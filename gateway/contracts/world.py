"""Contract-visible state: a copy-on-write key/value overlay with nested
savepoints (one per call frame).

Keys are tuples of CBOR-able atoms:
- ("bal", account)          -> int balance (devices and contract accounts)
- ("dep", address)          -> deployment record {name, version, params,
                               admin, status, label}
- ("st", address, key)      -> canonical CBOR bytes of a contract storage value

`begin()` opens a savepoint, `commit()` folds it into the enclosing one (or
into `changed` at the top), `rollback()` undoes everything since the matching
`begin()`. `changed` is the diff the chain would persist (deletions are
`DELETED`). `digest()` is SHA-256 over the canonical CBOR of every live entry
sorted by encoded key: two nodes that ran the same calls agree on it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from typing import Any

from shared import cbor

DELETED = object()  # tombstone in `changed`
_UNSET = object()  # journal: key was not in `changed`


class World:
    __slots__ = ("base", "changed", "_journals")

    def __init__(self, base: Mapping[tuple, Any] | None = None) -> None:
        self.base: dict[tuple, Any] = dict(base or {})
        self.changed: dict[tuple, Any] = {}
        self._journals: list[dict[tuple, Any]] = []

    # ---- raw access -------------------------------------------------------
    def get(self, key: tuple, default: Any = None) -> Any:
        v = self.changed.get(key, _UNSET)
        if v is _UNSET:
            return self.base.get(key, default)
        return default if v is DELETED else v

    def put(self, key: tuple, value: Any) -> None:
        self._note(key)
        self.changed[key] = value

    def delete(self, key: tuple) -> None:
        self._note(key)
        self.changed[key] = DELETED

    def _note(self, key: tuple) -> None:
        if self._journals:
            j = self._journals[-1]
            if key not in j:
                j[key] = self.changed.get(key, _UNSET)

    # ---- savepoints -------------------------------------------------------
    @property
    def depth(self) -> int:
        return len(self._journals)

    def begin(self) -> None:
        self._journals.append({})

    def commit(self) -> None:
        j = self._journals.pop()
        if self._journals:
            parent = self._journals[-1]
            for k, old in j.items():
                parent.setdefault(k, old)

    def rollback(self) -> None:
        j = self._journals.pop()
        for k, old in j.items():
            if old is _UNSET:
                del self.changed[k]
            else:
                self.changed[k] = old

    # ---- balances ---------------------------------------------------------
    def balance(self, account: bytes) -> int:
        return self.get(("bal", account), 0)

    def set_balance(self, account: bytes, amount: int) -> None:
        self.put(("bal", account), amount)

    def total_balance(self) -> int:
        return sum(v for k, v in self.items() if k[0] == "bal")

    # ---- whole-state views --------------------------------------------------
    def items(self) -> Iterator[tuple[tuple, Any]]:
        """Live (key, value) pairs sorted by the canonical encoding of the key."""
        merged = dict(self.base)
        merged.update(self.changed)
        live = [(cbor.dumps(list(k)), k, v) for k, v in merged.items() if v is not DELETED]
        live.sort(key=lambda t: t[0])
        for _, k, v in live:
            yield k, v

    def digest(self) -> bytes:
        return hashlib.sha256(cbor.dumps([[list(k), v] for k, v in self.items()])).digest()

    def snapshot(self) -> dict[tuple, Any]:
        return dict(self.items())
