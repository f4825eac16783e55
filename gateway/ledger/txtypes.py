"""The transaction-type registry: how the ledger core runs a tx type it does not
know itself. The core handles register, reading and transfer (and every tx's
seq and fee, gateway/ledger/state.py); each feature package registers its own
types here with a body schema (stateless, gateway/ledger/validate.py), a
precheck (stateful, raises RuleError, writes nothing) and an apply (writes its
effects on the overlay, returns (status, reason, events)).

Features plug in at import of the `gateway` package (gateway/plugins.py): the
ledger itself never imports a feature package. tests/ledger/test_txtypes.py
checks that the registry covers exactly the TYPE_* codes of shared/tx.py.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from shared import tx as txm

Schema = Callable[[txm.Tx], None]
Precheck = Callable[[Any, txm.Tx, Any, Any], None]  # (view, tx, rules, sender record)
Apply = Callable[[Any, txm.Tx, Any, Any], tuple[int, str, list[Any]]]  # (overlay, tx, rules, block)


@dataclass(frozen=True)
class TxType:
    """One registered tx type. `isolated`: apply runs under a savepoint and a
    failed outcome keeps nothing but the fee and the seq (market, contracts)."""

    code: int
    owner: str  # the package that registered it: "ledger", "identity", "market"
    schema: Schema
    precheck: Precheck | None = None
    apply: Apply | None = None
    isolated: bool = False


_TYPES: dict[int, TxType] = {}


def register(*types: TxType) -> None:
    """Add tx types; registering a code twice with another definition is a bug."""
    for t in types:
        old = _TYPES.get(t.code)
        if old is not None and old != t:
            raise ValueError("tx type %d registered twice (%s, %s)" % (t.code, old.owner, t.owner))
        _TYPES[t.code] = t


# Called after every included tx (its fee and seq taken, its own effects
# written), with (overlay, tx, rules, block): a feature that keeps per-principal
# figures of all txs (trust: committed activity) registers one here.
Observer = Callable[[Any, txm.Tx, Any, Any], None]
_OBSERVERS: list[Observer] = []


def observe(fn: Observer) -> None:
    """Add an observer of every included tx (once per function)."""
    if fn not in _OBSERVERS:
        _OBSERVERS.append(fn)


def observers() -> tuple[Observer, ...]:
    return tuple(_OBSERVERS)


def lookup(code: int) -> TxType | None:
    return _TYPES.get(code)


def codes(owner: str | None = None) -> frozenset[int]:
    """The registered codes (of one owner package if given)."""
    return frozenset(c for c, t in _TYPES.items() if owner is None or t.owner == owner)
