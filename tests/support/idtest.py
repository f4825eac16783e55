"""Helpers for the identity tests: people with key pairs, a fake public
registry, and a claimed domain (`World`) built on tests/support/gwtest.Node."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gateway.identity import roles
from gateway.identity import statements as itx
from gateway.ledger.state import ADMISSION_CLAIMED
from shared import errors, messages
from shared import tx as txm
from tests.support.gwtest import DOMAIN, Device, Node, key
from tools.keys import KeyPair


class Person:
    """A person's key pair (like a tools/keys.py key file) and seq counter."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.private, self.public = key(name)
        self.pub = self.public
        self.id = txm.device_id(self.public)
        self.seq = 0

    @property
    def keypair(self) -> KeyPair:
        return KeyPair(self.private, self.public)

    def next(self) -> int:
        self.seq += 1
        return self.seq


def signer(d: Device) -> KeyPair:
    """A device's current key as a builder signer."""
    return KeyPair(d.priv, d.pub)


class FakeRegistry:
    """registry lookup: device pubkey -> record (here a dict) or None."""

    def __init__(self, *devices: Device) -> None:
        self.records: dict[bytes, dict[str, Any]] = {}
        self.calls = 0
        for d in devices:
            self.add(d)

    def add(self, d: Device) -> None:
        self.records[d.pub] = {"model": "test", "serial": d.name}

    def __call__(self, pub: bytes) -> object:
        self.calls += 1
        return self.records.get(pub)


FULL_HW = {"power": "mains", "ram_kib": 4 * 1024 * 1024, "lifetime": "long",
           "board": "rpi4"}
COORD_HW = {"power": "usb", "ram_kib": 512, "lifetime": "long", "board": "pico2w"}
LIGHT_HW = {"power": "battery", "ram_kib": 264, "lifetime": "short", "board": "esp32"}


class World:
    def __init__(self, data_dir: Path, *, registry: Any = "fake",
                 admission: str = ADMISSION_CLAIMED, trust: bool = False,
                 authority_key: bytes | None = None) -> None:
        self.owner = Person("owner")
        self.bob = Person("bob")
        self.carol = Person("carol")
        self.sensor = Device("sensor")
        self.plug = Device("plug")
        self.cam = Device("cam")
        self.stranger = Device("stranger")  # not in the registry
        self.registry = FakeRegistry(self.sensor, self.plug, self.cam) if registry == "fake" \
            else registry
        self.node = Node(data_dir, admission=admission, owner=self.owner.pub,
                         registry=self.registry, trust=trust, authority_key=authority_key)

    def close(self) -> None:
        self.node.close()

    # ---- building txs ----------------------------------------------------------
    def claim(self, dev: Device, by: Person | None = None, *,
              statement: bytes | None = None) -> bytes:
        by = by or self.owner
        st = statement if statement is not None else itx.claim_statement(
            dev.priv, dev.pub, DOMAIN, by.id)
        return itx.build_claim(by, DOMAIN, dev.pub, st, by.next())

    def transfer(self, dev: Device, to: Person, by: Person | None = None) -> bytes:
        by = by or self.owner
        return itx.build_owner_transfer(by, DOMAIN, dev.id, to.pub, by.next())

    def grant(self, dev: Device, who: Any, right: str, by: Person | None = None,
              with_key: bool = True) -> bytes:
        by = by or self.owner
        return itx.build_grant(by, DOMAIN, dev.id, who.id, right, by.next(),
                               who.pub if with_key else None)

    def revoke(self, dev: Device, who: Any, right: str, by: Person | None = None) -> bytes:
        by = by or self.owner
        return itx.build_revoke_right(by, DOMAIN, dev.id, who.id, right, by.next())

    def retire(self, dev: Device, mode: str, by: Person | None = None) -> bytes:
        by = by or self.owner
        return itx.build_retire(by, DOMAIN, dev.id, mode, by.next())

    def rotate(self, dev: Device, new: Device, approver: Person | None = None) -> bytes:
        approval = itx.rotate_approval(approver or self.owner, dev.id, new.pub)
        dev.seq += 1
        return itx.build_rotate(signer(dev), DOMAIN, new.pub, approval, dev.seq,
                                device_id=dev.id)

    def recover(self, dev: Device, new: Device, by: Person | None = None,
                statement: bytes | None = None) -> bytes:
        by = by or self.owner
        st = statement if statement is not None else itx.recover_statement(
            new.priv, dev.id, DOMAIN)
        return itx.build_recover(by, DOMAIN, dev.id, new.pub, st, by.next())

    def join(self, who: Any, hw: dict[str, Any], *, cert: bytes | None = None,
             introduce: bool = False, label: str | None = None) -> bytes:
        seq = who.next() if isinstance(who, Person) else _bump(who)
        s = who if isinstance(who, Person) else signer(who)
        return itx.build_node_join(s, DOMAIN, label or roles.label_of(hw), hw, seq, cert,
                                   introduce, sender=who.id)

    def assign(self, coordinator: Any, light: Any, full: Any) -> bytes:
        seq = coordinator.next() if isinstance(coordinator, Person) else _bump(coordinator)
        s = coordinator if isinstance(coordinator, Person) else signer(coordinator)
        return itx.build_node_assign(s, DOMAIN, light.id, full.id, seq, sender=coordinator.id)

    # ---- running ---------------------------------------------------------------
    def commit(self, *msgs: bytes) -> list[Any]:
        """Submit, cut a block; every tx must be included with status ok.
        Returns the receipts' events."""
        for m in msgs:
            assert self.node.submit(m)
        b = self.node.produce()
        assert not b.dropped, [(e.reason, e.detail) for _, e in b.dropped]
        assert len(b.txs) == len(msgs)
        for r in b.receipts:
            assert r.status == messages.STATUS_OK, r.reason
        return [r.events for r in b.receipts]

    def refused(self, msg: bytes) -> tuple[str, str]:
        """The reason a message is refused at ingress; asserts nothing changed."""
        root = self.node.state.root()
        with pytest.raises(errors.TLError) as ei:
            self.node.submit(msg)
        assert self.node.state.root() == root
        assert self.node.pool.pending == 0
        return ei.value.reason, ei.value.detail

    def rec(self, who: Any):  # -> DeviceRecord | None
        return self.node.state.get(who.id)


def _bump(d: Device) -> int:
    d.seq += 1
    return d.seq
