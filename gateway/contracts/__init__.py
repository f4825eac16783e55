"""Deterministic contract runtime for the gateway (issue 5, item 3).

Language: contracts are Python classes (`runtime.Contract`) written against
one small restricted API, the `Context`, and registered in a versioned
registry (`builtin.REGISTRY`). Nothing is uploaded: executing arbitrary
uploaded Python cannot be made safe, and a stack VM would be a second
language to write, audit and meter. "Deploying" a contract is an admin state
change that selects a registered implementation (name, version), gives the
deployment a label (address = SHA-256(cbor(["tl-contract", label]))[:16])
and records its parameters; `upgrade` moves a deployment to a newer
registered version of the same name (storage, balance, address kept;
`migrate()` runs); `disable` / `set_status` freezes or re-enables it. Only
the domain admin may do any of these (not-authorized / not-admin).
Registration lints the class source (runtime.lint): no imports,
introspection, try/finally, with, bare except or BaseException handlers,
floats; loops must iterate ctx.range()/ctx.iter() or call ctx.step().

Determinism: a call sees only ctx.time / ctx.height (the block's), its
caller, origin, value, params and storage, and whether the ledger itself
made the call (ctx.by_ledger: the market's matching step, never a
transaction or a nested call). No clock, randomness or I/O is
reachable through the API, and only canonical-CBOR values cross the
boundary (ints within 64 bits, bytes, str, bool, None, lists, dicts with
int/str/bytes keys; floats, tuples, sets, objects: bad-value). Arguments,
storage reads and results are fresh decoded copies, so nothing is shared by
reference. Host hooks (Runtime(hooks=...), e.g. "verify-delivery") must be
deterministic functions of their CBOR arguments.

Fuel: every Context operation has a price (runtime.*_COST) and, as the hard
limit no contract can escape, every statement of registered contract code
costs STMT_COST and every item a comprehension draws ITEM_COST. The charges
are written into the contract's code at registration (runtime.meter: each
block of statements starts with a charge of its statement count), so fuel is
a function of the contract's syntax tree and of its inputs only: the same on
CPython 3.11, 3.12 and 3.13 (tests/contracts/test_fuel_versions.py), which
lets gateways on different interpreters re-execute each other's blocks.
Chains without a consensus section (created before it) recorded fuel from
sys.settrace line events, which their receipts carry: the ledger binding
replays them with that meter (runtime.METER_LINES, binding.runtime_for).
Running out raises an internal BaseException that lint forbids contracts to
catch, so an infinite loop that never touches ctx is still stopped; the call
fails with out-of-fuel. Code outside the contract classes (module-level
helpers a contract calls) is not metered: keep loops in the class, where
lint checks them.

Atomicity (Ethereum-like): a call runs in a World savepoint; any failure
(ContractError, out-of-fuel, any other exception -> reverted
"exception:<Type>") rolls back every balance, storage write and event of the
call, nested calls included. ctx.call(addr, method, *args, value=, fuel=)
runs the callee in its own savepoint: on failure the callee's effects are
rolled back and its ContractError is raised in the caller, which may catch
it and continue (only the callee reverted) or let it propagate (everything
reverts). A nested call may get a lower fuel cap; fuel it uses counts
against the whole transaction. Depth is limited to MAX_DEPTH (reverted
"call-depth").

Value: balances live under ("bal", account); value moves only by the call's
`value` (caller -> callee, before the body runs) and ctx.transfer (from the
contract's own account). Nothing mints or burns: sum of balances is
conserved.

Not wired into the chain yet: the World is self-contained (see world.py).
"""

from gateway.contracts.errors import (
    BadValue,
    ContractError,
    InsufficientFunds,
    NotAuthorized,
    OutOfFuel,
    Reverted,
    UnknownContract,
)
from gateway.contracts.runtime import (
    Context,
    Contract,
    ContractBlock,
    ContractRegistry,
    Result,
    Runtime,
    contract_address,
    deploy,
    disable,
    entry,
    set_status,
    upgrade,
)
from gateway.contracts.world import World

__all__ = [
    "BadValue", "ContractBlock", "Context", "Contract", "ContractError", "InsufficientFunds",
    "NotAuthorized", "OutOfFuel", "ContractRegistry", "Result", "Reverted", "Runtime", "UnknownContract",
    "World", "contract_address", "deploy", "disable", "entry", "set_status", "upgrade",
]
