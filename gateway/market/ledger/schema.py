"""Body schemas of the market and contract transactions (types 13-18,
docs/MARKET.md), checked statelessly at ingress by gateway/ledger/validate.py.
Every refusal is errors.TxError (reason bad-tx) with a detail naming the
field: bad-service, bad-unit, bad-price, bad-interval, bad-location,
bad-valid, bad-schema, bad-quantity, bad-wait, bad-policy, bad-id,
bad-address, bad-method, bad-args, bad-value, bad-fuel, bad-op, bad-label,
bad-name, bad-version, bad-params; missing or extra keys: bad-body."""

from __future__ import annotations

from typing import Any

from gateway.contracts import binding as chain
from gateway.contracts import runtime as crt
from gateway.market.ledger.directory import int_in, need, valid_location, valid_service, valid_unit
from gateway.market.ledger.matching import POLICIES
from shared import errors
from shared import tx as txm

MAX_PRICE = 1 << 32  # the field checks shared with the directory: gateway/market/ledger/directory.py
MAX_QUANTITY = 10_000
MAX_INTERVAL_S = 86_400
MAX_VALID_S = 30 * 86_400
ADMIN_OPS = ("deploy", "upgrade", "disable", "enable")


def _keys(b: dict, required: tuple[int, ...], optional: tuple[int, ...] = ()) -> None:
    if any(k not in b for k in required) or any(k not in required + optional for k in b):
        raise errors.TxError("bad-body")


def _bytes16(v: Any) -> bool:
    return isinstance(v, bytes) and len(v) == 16


def check(t: txm.Tx) -> None:
    """Raise TxError unless `t`'s body follows its type's schema."""
    b, type_ = t.body, t.type
    if type_ == txm.TYPE_OFFER:
        _keys(b, (1, 2, 3, 4, 5, 6, 7))
        need(valid_service(b[1]), "bad-service")
        need(valid_unit(b[2]), "bad-unit")
        need(int_in(b[3], 1, MAX_PRICE), "bad-price")
        need(int_in(b[4], 1, MAX_INTERVAL_S), "bad-interval")
        need(valid_location(b[5]), "bad-location")
        need(int_in(b[6], 1, MAX_VALID_S), "bad-valid")
        need(int_in(b[7], 1, 0xFFFF), "bad-schema")
    elif type_ == txm.TYPE_WITHDRAW:
        _keys(b, (1,))
        need(valid_service(b[1]), "bad-service")
    elif type_ == txm.TYPE_DEMAND:
        _keys(b, (1, 2, 3, 4, 5), (6,))
        need(valid_service(b[1]), "bad-service")
        need(int_in(b[2], 1, MAX_PRICE), "bad-price")
        need(int_in(b[3], 1, MAX_QUANTITY), "bad-quantity")
        need(int_in(b[4], 1, MAX_VALID_S), "bad-wait")
        need(b[5] in POLICIES, "bad-policy")
        need(6 not in b or valid_location(b[6]), "bad-location")
    elif type_ == txm.TYPE_CLOSE:
        _keys(b, (1,))
        need(_bytes16(b[1]), "bad-id")
    elif type_ == txm.TYPE_CONTRACT_CALL:
        _keys(b, (1, 2, 3, 4, 5))
        need(_bytes16(b[1]), "bad-address")
        need(isinstance(b[2], str) and 0 < len(b[2]) <= 32 and not b[2].startswith("_"),
              "bad-method")
        need(isinstance(b[3], list), "bad-args")
        need(int_in(b[4], 0, txm.MAX_AMOUNT), "bad-value")
        need(int_in(b[5], 1, chain.MAX_FUEL), "bad-fuel")
    elif type_ == txm.TYPE_CONTRACT_ADMIN:
        _check_admin(b)
    else:
        raise errors.TxError("bad-type")


def _check_admin(b: dict) -> None:
    op = b.get(1)
    need(op in ADMIN_OPS, "bad-op")
    if op == "deploy":
        _keys(b, (1, 2, 3, 4), (5,))
        need(isinstance(b[2], str) and 0 < len(b[2]) <= 32, "bad-label")
        need(isinstance(b[3], str) and 0 < len(b[3]) <= 32, "bad-name")
        need(int_in(b[4], 1, 0xFFFF), "bad-version")
        if 5 in b:
            try:
                crt.encode(b[5], "params")
            except errors.TLError:
                raise errors.TxError("bad-params") from None
    elif op == "upgrade":
        _keys(b, (1, 2, 3))
        need(_bytes16(b[2]), "bad-address")
        need(int_in(b[3], 1, 0xFFFF), "bad-version")
    else:
        _keys(b, (1, 2))
        need(_bytes16(b[2]), "bad-address")
