"""Helpers for the gateway ledger tests: deterministic devices and a small
in-process node (genesis in a temp dir, mempool, block producer, store)."""

from __future__ import annotations

from collections.abc import Iterable
from hashlib import sha256
from pathlib import Path
from typing import Any

from gateway.db import store
from gateway.db.genesis_files import create_domain
from gateway.ledger import blocks, validate
from gateway.node import config, mempool
from shared import cbor, cose, p256
from shared import tx as txm

DOMAIN = "demo"
T0 = 1_700_000_000


def key(name: str) -> tuple[bytes, bytes]:
    """Deterministic test key pair from a name."""
    priv = sha256(b"thingledger-test-" + name.encode()).digest()
    return priv, p256.public_key(priv)


class Device:
    def __init__(self, name: str, domain: str = DOMAIN) -> None:
        self.name = name
        self.priv, self.pub = key(name)
        self.id = txm.device_id(self.pub)
        self.domain = domain
        self.seq = 0

    def make(self, type_: int, body: dict[int, Any], *, seq: int | None = None, fee: int = 0,
             domain: str | None = None) -> bytes:
        if seq is None:
            self.seq += 1
            seq = self.seq
        return txm.make(self.priv, self.id, type_, domain or self.domain, seq, fee, body)

    def register(self, **kw: Any) -> bytes:
        return self.make(txm.TYPE_REGISTER, {1: self.pub}, **kw)

    def reading(self, value: int = 2150, scale: int = -2, **kw: Any) -> bytes:
        return self.make(txm.TYPE_READING, {1: value, 2: scale}, **kw)

    def transfer(self, to: Device | bytes, amount: int, **kw: Any) -> bytes:
        to_id = to.id if isinstance(to, Device) else to
        return self.make(txm.TYPE_TRANSFER, {1: to_id, 2: amount}, **kw)


def unsigned(sender: bytes, type_: int, seq: int, body: dict[int, Any], fee: int = 0,
             domain: str = DOMAIN) -> txm.Tx:
    """A structurally valid Tx with a dummy signature (for state tests that
    never verify signatures: fast)."""
    payload = txm.payload(type_, domain, seq, fee, body)
    prot = cose.protected_header(sender)
    return txm.decode(cbor.dumps(cbor.Tag(cose.TAG_SIGN1, [prot, {}, payload, bytes(64)])))


class Node:
    """Ledger core wired like the service, minus MQTT."""

    def __init__(self, data_dir: Path, accounts: dict[bytes, int] | None = None, *,
                 min_fee: int = 0, admission: str = "open", create: bool = True,
                 owner: bytes = b"", registry: Any = None,
                 authority_key: bytes | None = None, **genesis: Any) -> None:
        self.data_dir = Path(data_dir)
        if create:
            create_domain(self.data_dir, DOMAIN, accounts or {}, time=T0, min_fee=min_fee,
                          admission=admission, owner=owner, authority_key=authority_key,
                          **genesis)
        self.cfg = config.GatewayConfig(domain=DOMAIN, data_dir=self.data_dir)
        self.ledger = store.open_ledger(self.cfg, create=False, registry=registry)
        self.pool = mempool.Mempool()
        self.time = T0

    @property
    def store(self) -> store.Store:
        return self.ledger.store

    @property
    def state(self):  # -> State
        return self.ledger.state

    @property
    def genesis(self):  # -> Genesis
        return self.ledger.genesis

    def submit(self, message: bytes) -> bool:
        """Ingress: raises TLError on refusal; False for a pending duplicate."""
        t = validate.check_stateless(message, DOMAIN)
        return self.pool.admit(t, self.state, self.ledger.rules)

    def submit_all(self, messages: Iterable[bytes]) -> None:
        for m in messages:
            assert self.submit(m)

    def produce(self, max_n: int = 2000, step: int = 1) -> blocks.Block:
        txs = self.pool.take(max_n)
        self.time += step
        led = self.ledger
        b = blocks.build_block(led.head, txs, led.state, self.time, led.authority_priv,
                               led.genesis.authority_id, domain=DOMAIN, rules=led.rules)
        self.store.commit_block(b)
        led.state.apply_diff(b.diff, b.kv_diff)
        led.head = self.store.head()  # type: ignore[assignment]
        self.pool.done(txs)
        return b

    def close(self) -> None:
        self.store.close()
