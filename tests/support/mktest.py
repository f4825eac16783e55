"""A small market on the in-process ledger (tests/support/gwtest.Node): the
authority as operator and admin, suppliers and buyers as signing devices."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gateway.contracts import binding as chain
from gateway.market.ledger import rules as ledger
from shared import errors, messages, p256
from shared import tx as txm
from tests.support.gwtest import Device, Node

FEE_BPS = 500


class Operator(Device):
    """The gateway's authority key as a signing device."""

    def __init__(self, node: Node) -> None:
        super().__init__("operator")
        self.priv = node.ledger.authority_priv
        self.pub = p256.public_key(self.priv)
        self.id = txm.device_id(self.pub)


class Market:
    def __init__(self, data_dir: Path, balances: dict[str, int], *,
                 params: dict[str, Any] | None = None, deploy: bool = True,
                 trust: bool = False, authority_key: bytes | None = None) -> None:
        self.devices = {n: Device(n) for n in balances}
        self.node = Node(data_dir, {d.pub: balances[n] for n, d in self.devices.items()},
                         trust=trust, authority_key=authority_key)
        self.op = Operator(self.node)
        self.block: Any = None
        if deploy:
            p = {"operator": self.op.id, "fee_bps": FEE_BPS, **(params or {})}
            r = self.run(self.admin("deploy", "agreement", "agreement",
                                    ledger.AGREEMENT_VERSION, p))
            assert r.status == messages.STATUS_OK, r

    def __getitem__(self, name: str) -> Device:
        return self.devices[name]

    # -- tx builders --
    def admin(self, op: str, *args: Any, sender: Device | None = None) -> bytes:
        body = {1: op}
        for i, a in enumerate(args):
            body[2 + i] = a
        return (sender or self.op).make(txm.TYPE_CONTRACT_ADMIN, body)

    def offer(self, who: str, service: str = "temperature", price: int = 5, *,
              location: str = "", interval: int = 10, valid: int = 3600) -> bytes:
        return self[who].make(txm.TYPE_OFFER, {1: service, 2: "cC", 3: price, 4: interval,
                                               5: location, 6: valid, 7: 1})

    def demand(self, who: str, service: str = "temperature", max_price: int = 10,
               quantity: int = 4, policy: str = "cheapest", *, location: str | None = None,
               wait: int = 600) -> bytes:
        body = {1: service, 2: max_price, 3: quantity, 4: wait, 5: policy}
        if location is not None:
            body[6] = location
        return self[who].make(txm.TYPE_DEMAND, body)

    def call(self, who: Device | str, method: str, *args: Any, address: bytes | None = None,
             value: int = 0, fuel: int = 50_000) -> bytes:
        d = self[who] if isinstance(who, str) else who
        return d.make(txm.TYPE_CONTRACT_CALL, {1: address or ledger.AGREEMENT, 2: method,
                                                3: list(args), 4: value, 5: fuel})

    def close(self, who: Device | str, ident: bytes) -> bytes:
        d = self[who] if isinstance(who, str) else who
        return d.make(txm.TYPE_CLOSE, {1: ident})

    # -- running --
    def run(self, *msgs: bytes, time_step: int = 1) -> Any:
        """Submit and commit one block; returns the last tx's receipt."""
        self.node.time += time_step - 1
        for m in msgs:
            self.node.submit(m)
        self.block = self.node.produce()
        assert not self.block.dropped, self.block.dropped
        return self.block.receipts[-1]

    def refused(self, msg: bytes) -> errors.TLError:
        try:
            self.node.submit(msg)
        except errors.TLError as e:
            return e
        raise AssertionError("admitted")

    def balance(self, who: str | bytes) -> int:
        i = self[who].id if isinstance(who, str) else who
        r = self.node.state.get(i)
        return 0 if r is None else r.balance

    def total(self) -> int:
        return self.node.state.total_balance()

    def agreement(self, aid: bytes) -> dict | None:
        return ledger.agreement(self.node.state, aid)

    def deployment(self) -> dict | None:
        return chain.deployment(self.node.state, ledger.AGREEMENT)


def event(receipt: Any, name: str) -> list[Any]:
    """The first event of a receipt named `name` (plain or a contract's)."""
    for e in receipt.events:
        if e[0] == name or (len(e) > 1 and e[1] == name):
            return e
    raise AssertionError("no %s event in %r" % (name, receipt.events))
