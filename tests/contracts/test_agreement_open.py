"""agreement v2: only the ledger's matching step opens an agreement (issue 9,
item 6). In v1 anyone could open one under any id, e.g. a waiting demand's
(its public tx id), and that demand could then never match."""

from gateway.contracts import Contract, Runtime, deploy, entry
from gateway.contracts import ContractBlock as Block
from gateway.contracts.builtin import REGISTRY
from gateway.contracts.runtime import ContractRegistry as Registry
from shared import reasons
from tests.contracts.test_contract_builtins import BUYER, OPERATOR, OTHER, SUPPLIER, world

PARAMS = {"operator": OPERATOR, "fee_bps": 500}
ADMIN = OPERATOR


def _deployed(version: int, rt: Runtime | None = None):
    rt = rt or Runtime(REGISTRY)
    w = world()
    r = deploy(rt, w, sender=ADMIN, admin=ADMIN, label="agreement", name="agreement",
               version=version, params=PARAMS, block=Block(1000, 1))
    assert r.ok, r
    return rt, w, r.value


def _open(rt, w, who, addr, aid, *, by_ledger=False, value=20):
    return rt.call(w, caller=who, address=addr, method="open",
                   args=[aid, SUPPLIER, 5, 4, 5000, "temperature"], value=value,
                   block=Block(1000, 100), by_ledger=by_ledger)


def test_v2_open_is_the_ledgers_alone():
    rt, w, g = _deployed(2)
    r = _open(rt, w, OTHER, g, b"demand-id")
    assert (r.ok, r.reason, r.detail) == (False, reasons.NOT_AUTHORIZED, "market-only")
    assert w.balance(OTHER) == 50  # the value moved in is rolled back
    assert rt.call(w, caller=OTHER, address=g, method="get", args=[b"demand-id"],
                   block=Block(1000, 100)).value is None
    r = _open(rt, w, BUYER, g, b"demand-id", by_ledger=True)
    assert r.ok, r
    got = rt.call(w, caller=OTHER, address=g, method="get", args=[b"demand-id"],
                  block=Block(1000, 100)).value
    assert (got["buyer"], got["supplier"], got["remaining"]) == (BUYER, SUPPLIER, 20)


def test_v1_keeps_its_rule_for_old_chains():
    """v1's open is unchanged (an old chain replays as it ran)."""
    rt, w, g = _deployed(1)
    assert _open(rt, w, OTHER, g, b"demand-id").ok


class _Proxy(Contract):
    """Forwards open to the agreement: a nested call is never by the ledger."""

    NAME = "proxy"
    VERSION = 1

    @entry
    def open(self, ctx, target, aid):
        return ctx.call(target, "open", aid, SUPPLIER, 5, 4, 5000, "temperature", value=20)


def test_a_nested_call_is_not_the_ledger():
    reg = Registry()
    reg.register(_Proxy)
    rt, w, g = _deployed(2, Runtime(REGISTRY.merged(reg)))
    r = deploy(rt, w, sender=ADMIN, admin=ADMIN, label="proxy", name="proxy", version=1,
               block=Block(1000, 1))
    w.set_balance(r.value, 100)
    r = rt.call(w, caller=OTHER, address=r.value, method="open", args=[g, b"demand-id"],
                block=Block(1000, 100), by_ledger=True)
    assert (r.ok, r.reason, r.detail) == (False, reasons.NOT_AUTHORIZED, "market-only")
