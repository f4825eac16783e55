"""Typed contract errors (TLError subclasses: `.reason` is the receipt's
reason code, `.detail` a finer stable sub-code). Tests compare attributes,
never messages."""

from shared.errors import TLError
from shared.reasons import (  # the wire table: every reason code is written once
    BAD_VALUE,
    INSUFFICIENT_FUNDS,
    NOT_AUTHORIZED,
    OUT_OF_FUEL,
    REVERTED,
    UNKNOWN_CONTRACT,
)


class ContractError(TLError):
    """Base of every contract failure; the call's effects are rolled back."""

    reason = REVERTED


class UnknownContract(ContractError):
    """No such deployment / implementation / entry point / host hook, or the
    deployment is disabled. detail: address, implementation, method, disabled,
    exists (deploy over a taken label), version."""

    reason = UNKNOWN_CONTRACT


class OutOfFuel(ContractError):
    """The call (or a nested call's own fuel cap) ran out of fuel."""

    reason = OUT_OF_FUEL


class Reverted(ContractError):
    """Explicit revert (ctx.revert / ctx.require) or an unexpected exception
    inside contract code (detail "exception:<TypeName>")."""

    reason = REVERTED


class NotAuthorized(ContractError):
    reason = NOT_AUTHORIZED


class InsufficientFunds(ContractError):
    reason = INSUFFICIENT_FUNDS


class BadValue(ContractError):
    """A value that cannot cross the contract boundary (float, set, object,
    non-canonical-CBOR, too large) or an argument of the wrong shape."""

    reason = BAD_VALUE


class LintError(ContractError):
    """A contract implementation refused at registration (see runtime.lint)."""

    reason = BAD_VALUE
