"""Contract runtime: determinism, fuel, reverts, nested-call atomicity, lifecycle, lint."""

import hashlib

import pytest

from gateway.contracts import (
    Contract,
    Reverted,
    Runtime,
    World,
    contract_address,
    deploy,
    disable,
    entry,
    upgrade,
)
from gateway.contracts import (
    ContractBlock as Block,
)
from gateway.contracts import (
    ContractRegistry as Registry,
)
from gateway.contracts import errors as ce
from gateway.contracts import runtime as rtm
from gateway.contracts.builtin import REGISTRY as BUILTIN


def acct(n: int) -> bytes:
    return hashlib.sha256(b"acct%d" % n).digest()[:16]


ADMIN, ALICE, BOB = acct(0), acct(1), acct(2)
B = Block(time=1000, height=7)

LOCAL = Registry()


@LOCAL.register
class Counter(Contract):
    NAME = "counter"
    VERSION = 1

    @entry
    def inc(self, ctx, n):
        ctx.put("n", ctx.get("n", 0) + n)
        ctx.emit("inc", n)
        return ctx.get("n")

    @entry
    def boom(self, ctx):
        ctx.put("n", 999)
        ctx.emit("never")
        raise ValueError("boom")

    @entry
    def pay(self, ctx, to, amount):
        ctx.transfer(to, amount)

    @entry
    def clock(self, ctx):
        return [ctx.time, ctx.height, ctx.caller, ctx.value]

    @entry
    def give_float(self, ctx):
        return 3 / 2

    @entry
    def loop(self, ctx, n):
        total = 0
        for i in ctx.range(n):
            total += i
        return total


@LOCAL.register
class CounterV2(Contract):
    NAME = "counter"
    VERSION = 2

    def migrate(self, ctx, old_version):
        ctx.put("migrated-from", old_version)

    @entry
    def inc(self, ctx, n):
        ctx.put("n", ctx.get("n", 0) + 2 * n)
        return ctx.get("n")


@LOCAL.register
class Caller(Contract):
    NAME = "caller"
    VERSION = 1

    @entry
    def inc_then(self, ctx, target, fail):
        ctx.put("mine", 1)
        ctx.call(target, "inc", 5)
        if fail:
            ctx.revert("after-inner")
        return 1

    @entry
    def catch_inner(self, ctx, target):
        try:
            ctx.call(target, "boom")
        except Reverted as e:
            ctx.put("caught", e.detail)
        return ctx.call(target, "inc", 1)

    @entry
    def forward(self, ctx, target, to):
        ctx.call(target, "pay", to, ctx.value, value=ctx.value)

    @entry
    def spin_inner(self, ctx, target, cap):
        try:
            ctx.call(target, "spin", fuel=cap)
        except ce.OutOfFuel:
            ctx.put("inner-ran-out", True)
        return ctx.get("inner-ran-out")

    @entry
    def recurse(self, ctx):
        return ctx.call(ctx.address, "recurse")


@LOCAL.register(metered_loops=False)
class Looper(Contract):
    NAME = "looper"
    VERSION = 1

    @entry
    def spin(self, ctx):
        ctx.put("started", True)
        x = 0
        while True:
            x += 1

    @entry
    def spin_and_catch(self, ctx):
        ctx.put("started", True)
        try:
            while True:
                pass
        except Exception:
            ctx.put("escaped", True)
            while True:
                pass

    @entry
    def spin_helper(self, ctx):
        return Looper._forever()

    @staticmethod
    def _forever():
        n = 0
        while n >= 0:
            n += 1
        return n


REG = BUILTIN.merged(LOCAL)


def setup(**hooks):
    rt = Runtime(REG, hooks)
    w = World({("bal", ALICE): 1000, ("bal", BOB): 500})
    addr = {}
    for label, name in (("c", "counter"), ("k", "caller"), ("l", "looper")):
        r = deploy(rt, w, sender=ADMIN, admin=ADMIN, label=label, name=name, version=1, block=B)
        assert r.ok, r
        addr[label] = r.value
    return rt, w, addr


def call(rt, w, caller, address, method, *args, value=0, fuel=rtm.DEFAULT_FUEL):
    return rt.call(w, caller=caller, address=address, method=method, args=list(args),
                   value=value, fuel=fuel, block=B)


def test_happy_call_events_and_clock():
    rt, w, a = setup()
    r = call(rt, w, ALICE, a["c"], "inc", 3)
    assert r.ok and r.value == 3 and r.events == [[a["c"], "inc", 3]]
    assert r.fuel_used > rtm.CALL_COST
    r = call(rt, w, ALICE, a["c"], "clock", value=7)
    assert r.value == [1000, 7, ALICE, 7]
    assert w.balance(a["c"]) == 7 and w.balance(ALICE) == 993


def test_determinism_same_inputs_same_results_and_digest():
    outs = []
    for _ in range(2):
        rt, w, a = setup()
        rs = [call(rt, w, ALICE, a["c"], "inc", i) for i in range(5)]
        rs.append(call(rt, w, ALICE, a["k"], "catch_inner", a["c"]))
        rs.append(call(rt, w, BOB, a["c"], "clock", value=3))
        outs.append(([(r.ok, r.value, r.reason, r.events, r.fuel_used) for r in rs], w.digest()))
    assert outs[0] == outs[1]


def test_infinite_loop_runs_out_of_fuel_and_changes_nothing():
    rt, w, a = setup()
    before = w.digest()
    r = call(rt, w, ALICE, a["l"], "spin", value=10, fuel=5000)
    assert not r.ok and r.reason == "out-of-fuel" and r.fuel_used == 5000
    assert w.digest() == before and w.balance(ALICE) == 1000


def test_catching_the_fuel_signal_is_impossible():
    rt, w, a = setup()
    before = w.digest()
    for m in ("spin_and_catch", "spin_helper"):
        r = call(rt, w, ALICE, a["l"], m, fuel=3000)
        assert (r.ok, r.reason) == (False, "out-of-fuel")
    assert w.digest() == before


def test_tracer_restored_after_call():
    import sys
    prev = sys.gettrace()
    rt, w, a = setup()
    call(rt, w, ALICE, a["l"], "spin", fuel=1000)
    assert sys.gettrace() is prev


def test_raising_contract_reverts():
    rt, w, a = setup()
    call(rt, w, ALICE, a["c"], "inc", 1)
    before = w.digest()
    r = call(rt, w, ALICE, a["c"], "boom", value=50)
    assert (r.ok, r.reason, r.detail, r.events) == (False, "reverted", "exception:ValueError", [])
    assert w.digest() == before


def test_bad_values_refused():
    rt, w, a = setup()
    assert call(rt, w, ALICE, a["c"], "give_float").reason == "bad-value"
    assert call(rt, w, ALICE, a["c"], "inc", 0.5).reason == "bad-value"
    r = rt.call(w, caller=ALICE, address=a["c"], method="inc", args=[(1, 2)], block=B)
    assert (r.reason, r.detail) == ("bad-value", "type:tuple")
    assert call(rt, w, ALICE, a["c"], "pay", BOB, 1.0).reason == "bad-value"
    with pytest.raises(ce.BadValue):
        rtm.encode({1.5: 1})
    with pytest.raises(ce.BadValue):
        rtm.encode(2**64)


def test_nested_call_atomic_as_a_whole():
    rt, w, a = setup()
    before = w.digest()
    r = call(rt, w, ALICE, a["k"], "inc_then", a["c"], True)
    assert (r.ok, r.reason, r.detail) == (False, "reverted", "after-inner")
    assert w.digest() == before
    r = call(rt, w, ALICE, a["k"], "inc_then", a["c"], False)
    assert r.ok and r.events == [[a["c"], "inc", 5]]
    assert call(rt, w, ALICE, a["c"], "inc", 0).value == 5


def test_caught_inner_failure_reverts_inner_only():
    rt, w, a = setup()
    r = call(rt, w, ALICE, a["k"], "catch_inner", a["c"])
    assert r.ok and r.value == 1  # boom's n=999 rolled back, then inc(1)
    assert r.events == [[a["c"], "inc", 1]]


def test_inner_fuel_cap_caught_by_outer():
    rt, w, a = setup()
    r = call(rt, w, ALICE, a["k"], "spin_inner", a["l"], 2000, fuel=20000)
    assert r.ok and r.value is True
    assert 2000 < r.fuel_used < 20000
    # without a cap the inner exhausts the whole tx: outer fails too
    r = call(rt, w, ALICE, a["k"], "spin_inner", a["l"], None, fuel=5000)
    assert (r.ok, r.reason) == (False, "out-of-fuel")


def test_value_forwarding_and_insufficient_funds():
    rt, w, a = setup()
    r = call(rt, w, ALICE, a["k"], "forward", a["c"], BOB, value=100)
    assert r.ok and w.balance(BOB) == 600 and w.balance(ALICE) == 900
    r = call(rt, w, ALICE, a["c"], "pay", BOB, 1)
    assert r.reason == "insufficient-funds"
    r = call(rt, w, ALICE, a["c"], "inc", 1, value=10**6)
    assert r.reason == "insufficient-funds"
    assert w.total_balance() == 1500


def test_call_depth_and_unknowns():
    rt, w, a = setup()
    r = call(rt, w, ALICE, a["k"], "recurse")
    assert (r.reason, r.detail) == ("reverted", "call-depth")
    assert (call(rt, w, ALICE, acct(9), "x").detail) == "address"
    assert call(rt, w, ALICE, a["c"], "migrate", 1).detail == "method"
    assert call(rt, w, ALICE, a["c"], "_id").detail == "method"
    assert call(rt, w, ALICE, a["c"], "nope").reason == "unknown-contract"


def test_lifecycle_admin_only_upgrade_disable():
    rt, w, a = setup()
    r = deploy(rt, w, sender=ALICE, admin=ADMIN, label="x", name="counter", version=1, block=B)
    assert (r.reason, r.detail) == ("not-authorized", "not-admin")
    r = deploy(rt, w, sender=ADMIN, admin=ADMIN, label="c", name="counter", version=1, block=B)
    assert (r.reason, r.detail) == ("unknown-contract", "exists")
    r = deploy(rt, w, sender=ADMIN, admin=ADMIN, label="z", name="nope", version=1, block=B)
    assert r.reason == "unknown-contract"
    assert a["c"] == contract_address("c")
    call(rt, w, ALICE, a["c"], "inc", 3)
    assert not upgrade(rt, w, sender=BOB, admin=ADMIN, address=a["c"], version=2, block=B).ok
    r = upgrade(rt, w, sender=ADMIN, admin=ADMIN, address=a["c"], version=2, block=B)
    assert r.ok
    assert call(rt, w, ALICE, a["c"], "inc", 1).value == 5  # v2 doubles, storage kept
    assert call(rt, w, ALICE, a["c"], "boom").detail == "method"  # v2 has no boom
    assert upgrade(rt, w, sender=ADMIN, admin=ADMIN, address=a["c"], version=2,
                   block=B).detail == "version"
    assert not disable(rt, w, sender=BOB, admin=ADMIN, address=a["c"], block=B).ok
    assert disable(rt, w, sender=ADMIN, admin=ADMIN, address=a["c"], block=B).ok
    assert call(rt, w, ALICE, a["c"], "inc", 1).detail == "disabled"


def test_deploy_init_failure_leaves_nothing():
    rt, w, _ = setup()
    before = w.digest()
    r = deploy(rt, w, sender=ADMIN, admin=ADMIN, label="ag", name="agreement", version=1,
               params={"operator": ADMIN, "fee_bps": 20000}, block=B)
    assert (r.reason, r.detail) == ("bad-value", "fee_bps")
    assert w.digest() == before


def test_metered_loop():
    rt, w, a = setup()
    r1 = call(rt, w, ALICE, a["c"], "loop", 10)
    r2 = call(rt, w, ALICE, a["c"], "loop", 100)
    assert r1.value == 45 and r2.value == 4950 and r2.fuel_used > r1.fuel_used + 90


def test_lint_refuses_escapes():
    reg = Registry()

    class Unmetered(Contract):
        NAME, VERSION = "u", 1

        @entry
        def f(self, ctx):
            for _ in range(3):
                pass

    class Catches(Contract):
        NAME, VERSION = "c", 1

        @entry
        def f(self, ctx):
            try:
                ctx.step()
            except BaseException:
                pass

    class Finally(Contract):
        NAME, VERSION = "f", 1

        @entry
        def f(self, ctx):
            try:
                ctx.step()
            finally:
                ctx.step()

    class Imports(Contract):
        NAME, VERSION = "i", 1

        @entry
        def f(self, ctx):
            import time
            return time.time_ns()

    for cls, why in ((Unmetered, "unmetered-for"), (Catches, "name-BaseException"),
                     (Finally, "finally"), (Imports, "import")):
        with pytest.raises(ce.LintError) as ei:
            reg.register(cls)
        assert ei.value.detail.startswith(why), ei.value.detail
