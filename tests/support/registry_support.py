"""Helpers for the registry tests: deterministic keys, manufacturers that
build signed registry transactions, a fake clock."""

from __future__ import annotations

from hashlib import sha256
from typing import Any

from gateway.registry.chain import DOMAIN
from shared import p256
from shared import tx as txm

T0 = 1_700_000_000
YEAR = 365 * 86400


def key(name: str) -> tuple[bytes, bytes]:
    """Deterministic test key pair from a name."""
    priv = sha256(b"thingledger-registry-test-" + name.encode()).digest()
    return priv, p256.public_key(priv)


def device_pub(name: str) -> bytes:
    return key("device-" + name)[1]


class Mfr:
    """A manufacturer (or anyone with a key) building signed registry txs."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.priv, self.pub = key("mfr-" + name)
        self.id = txm.device_id(self.pub)
        self.seq = 0

    def make(self, type_: int, body: dict[int, Any], *, seq: int | None = None, fee: int = 0,
             domain: str = DOMAIN, sender: bytes | None = None) -> bytes:
        if seq is None:
            self.seq += 1
            seq = self.seq
        return txm.make(self.priv, sender or self.id, type_, domain, seq, fee, body)

    def register(self, name: str | None = None, **kw: Any) -> bytes:
        return self.make(txm.TYPE_MFR_REGISTER, {1: self.pub, 2: name or self.name}, **kw)

    def record(self, dev: bytes | str, serial: str, *, model: str = "TH-1",
               manufactured: int = T0, warranty_end: int = T0 + 2 * YEAR,
               **kw: Any) -> bytes:
        pub = device_pub(dev) if isinstance(dev, str) else dev
        body = {1: pub, 2: model, 3: serial, 4: manufactured, 5: warranty_end}
        return self.make(txm.TYPE_DEVICE_RECORD, body, **kw)


class FakeClock:
    """Deterministic clock: each call returns the current time; `step`
    seconds are added after every call (0: frozen)."""

    def __init__(self, t: float = T0, step: float = 0.0) -> None:
        self.t = t
        self.step = step

    def __call__(self) -> float:
        t = self.t
        self.t += self.step
        return t
