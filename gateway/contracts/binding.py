"""Contracts on the domain chain: the contract World backed by the ledger
state, and the two contract transactions (CONTRACT_CALL, CONTRACT_ADMIN).

`ChainWorld` is a contract `World` whose base is a `StateOverlay`:
- ("bal", account) is the principal's balance (DeviceRecord.balance); a
  contract account is a principal of kind "contract" created at deploy, and
  value can only move to a principal that exists (bad-value unknown-account),
- ("dep", address) and ("st", address, key) are stored values of the state
  tree under market.keys.deployment / market.keys.storage.
A call runs on its own ChainWorld; only when it succeeds are its changes
folded into the overlay (`fold`), so a reverted call leaves the block's state
untouched. Everything a contract did is therefore in the state root.

The domain admin is the genesis owner, or the authority where there is none.
"""

from __future__ import annotations

from typing import Any

from gateway.contracts import errors as ce
from gateway.contracts import runtime
from gateway.contracts.builtin import REGISTRY
from gateway.contracts.world import DELETED, World
from gateway.ledger import keys
from gateway.ledger.state import (
    KIND_CONTRACT,
    BlockInfo,
    DeviceRecord,
    Rules,
    StateOverlay,
    StateView,
)
from shared import cbor

MAX_FUEL = 1_000_000
RUNTIME = runtime.Runtime(REGISTRY)
# chains without a consensus section (created before it) were recorded with
# fuel from line events, and their receipts carry those counts: they replay
# with the line meter; chains with one meter on the syntax tree (runtime.meter)
LINE_RUNTIME = runtime.Runtime(REGISTRY, metering=runtime.METER_LINES)


def runtime_for(view: StateView) -> runtime.Runtime:
    return RUNTIME if view.kv_get(keys.VALSETS) is not None else LINE_RUNTIME

_UNSET = object()


class ChainWorld(World):
    """A contract World reading through to the ledger state (see module doc)."""

    __slots__ = ("view",)

    def __init__(self, view: StateOverlay) -> None:
        super().__init__()
        self.view = view

    def get(self, key: tuple, default: Any = None) -> Any:
        v = self.changed.get(key, _UNSET)
        if v is _UNSET:
            v = self._read(key)
            return default if v is None else v
        return default if v is DELETED else v

    def _read(self, key: tuple) -> Any:
        kind = key[0]
        if kind == "bal":
            r = self.view.get(key[1])
            return None if r is None else r.balance
        b = self.view.kv_get(_kv_key(key))
        if b is None or kind == "st":
            return b
        return cbor.loads(b)

    def set_balance(self, account: bytes, amount: int) -> None:
        if self.view.get(account) is None:
            raise ce.BadValue("unknown-account")
        super().set_balance(account, amount)

    def fold(self) -> None:
        """Write this (successful) world's changes into the overlay."""
        view = self.view
        for key, v in self.changed.items():
            if key[0] == "bal":
                r = view.get(key[1])
                assert r is not None  # set_balance refused unknown accounts
                view.put(key[1], r.with_seq_balance(r.last_seq, v))
            elif v is DELETED:
                view.kv_put(_kv_key(key), None)
            else:
                view.kv_put(_kv_key(key), v if key[0] == "st" else cbor.dumps(v))
        self.changed = {}


def _kv_key(key: tuple) -> bytes:
    if key[0] == "dep":
        return keys.deployment(key[1])
    if key[0] == "st":
        return keys.storage(key[1], cbor.dumps(key[2]))
    raise ValueError("not a stored key: %r" % (key,))


def admin_of(rules: Rules) -> bytes:
    return rules.owner_id or rules.authority_id


def deployment(view: StateView, address: bytes) -> dict | None:
    b = view.kv_get(keys.deployment(address))
    return None if b is None else cbor.loads(b)


def storage(view: StateView, address: bytes, key: Any) -> Any:
    """A contract's stored value (decoded), read by the host (the market)."""
    b = view.kv_get(keys.storage(address, cbor.dumps(key)))
    return None if b is None else cbor.loads(b)


def call(view: StateOverlay, block: BlockInfo, *, caller: bytes, address: bytes, method: str,
         args: list[Any], value: int = 0, fuel: int = runtime.DEFAULT_FUEL,
         by_ledger: bool = False) -> runtime.Result:
    """One contract call on the ledger; folded into `view` only if it succeeds.
    `by_ledger`: made by the ledger itself (the market's matching step), not
    by a CONTRACT_CALL (see Context.by_ledger)."""
    w = ChainWorld(view)
    r = runtime_for(view).call(w, caller=caller, address=address, method=method, args=args, value=value,
                     fuel=fuel, block=runtime.ContractBlock(block.time, block.height),
                     by_ledger=by_ledger)
    if r.ok:
        w.fold()
    return r


def admin(view: StateOverlay, block: BlockInfo, rules: Rules, sender: bytes,
          body: dict) -> runtime.Result:
    """A CONTRACT_ADMIN body (validated by gateway/ledger/validate.py) on the ledger."""
    w = ChainWorld(view)
    b = runtime.ContractBlock(block.time, block.height)
    op, adm = body[1], admin_of(rules)
    if op == "deploy":
        addr = runtime.contract_address(body[2])
        if sender == adm and view.get(addr) is None:
            # the contract's account: a principal without a key (it never signs)
            view.put(addr, DeviceRecord(b"", 0, 0, KIND_CONTRACT))
        r = runtime.deploy(runtime_for(view), w, sender=sender, admin=adm, label=body[2], name=body[3],
                           version=body[4], params=body.get(5), block=b)
    elif op == "upgrade":
        r = runtime.upgrade(runtime_for(view), w, sender=sender, admin=adm, address=body[2],
                            version=body[3], block=b)
    else:
        r = runtime.set_status(runtime_for(view), w, sender=sender, admin=adm, address=body[2],
                               status=runtime.ACTIVE if op == "enable" else runtime.DISABLED,
                               block=b)
    if r.ok:
        w.fold()
    return r
