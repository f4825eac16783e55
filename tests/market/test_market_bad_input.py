"""Bad input to the market: schema refusals with their field, contracts that
loop forever or raise, and conservation of value under many random trades."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.contracts import Context, Contract, entry
from gateway.contracts.builtin import REGISTRY
from gateway.db import verify as replay
from gateway.market.ledger import rules as ledger
from shared import errors, messages
from shared import tx as txm
from tests.support.mktest import Market


class Spinner(Contract):
    """Test-only contracts: one loops forever without touching ctx, one raises."""

    NAME = "test-spinner"
    VERSION = 1

    @entry
    def spin(self, ctx: Context) -> None:
        ctx.put("before", 1)
        n = 0
        while True:
            ctx.step(0)
            n += 1

    @entry
    def boom(self, ctx: Context) -> int:
        ctx.put("before", 1)
        return 1 // 0

    @entry
    def pay(self, ctx: Context, to: bytes) -> None:
        ctx.transfer(to, ctx.value)


if ("test-spinner", 1) not in REGISTRY._impl:
    REGISTRY.register(Spinner)


@pytest.fixture
def mk(tmp_path: Path) -> Market:
    m = Market(tmp_path / "gw", {"a": 1000, "b": 1000})
    yield m
    m.node.close()


@pytest.mark.parametrize("type_,body,detail", [
    (txm.TYPE_OFFER, {1: "Temp!", 2: "cC", 3: 1, 4: 1, 5: "", 6: 60, 7: 1}, "bad-service"),
    (txm.TYPE_OFFER, {1: "t", 2: "cC", 3: 0, 4: 1, 5: "", 6: 60, 7: 1}, "bad-price"),
    (txm.TYPE_OFFER, {1: "t", 2: "cC", 3: 1, 4: 0, 5: "", 6: 60, 7: 1}, "bad-interval"),
    (txm.TYPE_OFFER, {1: "t", 2: "cC", 3: 1, 4: 1, 5: "a", 6: 60, 7: 1}, "bad-location"),
    (txm.TYPE_OFFER, {1: "t", 2: "cC", 3: 1, 4: 1, 5: "", 6: 0, 7: 1}, "bad-valid"),
    (txm.TYPE_OFFER, {1: "t", 2: "cC", 3: 1, 4: 1, 5: ""}, "bad-body"),
    (txm.TYPE_DEMAND, {1: "t", 2: 1, 3: 0, 4: 60, 5: "cheapest"}, "bad-quantity"),
    (txm.TYPE_DEMAND, {1: "t", 2: 1, 3: 1, 4: 60, 5: "random"}, "bad-policy"),
    (txm.TYPE_DEMAND, {1: "t", 2: 1, 3: 1, 4: 60, 5: "latest", 9: 1}, "bad-body"),
    (txm.TYPE_CLOSE, {1: b"short"}, "bad-id"),
    (txm.TYPE_CONTRACT_CALL, {1: bytes(16), 2: "_private", 3: [], 4: 0, 5: 10}, "bad-method"),
    (txm.TYPE_CONTRACT_CALL, {1: bytes(16), 2: "m", 3: [], 4: -1, 5: 10}, "bad-value"),
    (txm.TYPE_CONTRACT_CALL, {1: bytes(16), 2: "m", 3: [], 4: 0, 5: 10**7}, "bad-fuel"),
    (txm.TYPE_CONTRACT_ADMIN, {1: "destroy", 2: bytes(16)}, "bad-op"),
])
def test_schema_refusals_name_the_field(mk: Market, type_: int, body: dict,
                                        detail: str) -> None:
    e = mk.refused(mk["a"].make(type_, body))
    assert (e.reason, e.detail) == (errors.BAD_TX, detail)


def test_contract_that_loops_forever_or_raises_is_reverted(mk: Market) -> None:
    r = mk.run(mk.admin("deploy", "spinner", "test-spinner", 1))
    addr = r.events[0][3]  # ["call", b"", "deploy", address, fuel]
    total, before = mk.total(), dict(mk.node.state.kv)
    r = mk.run(mk.call("a", "spin", address=addr, fuel=5000, value=10))
    assert (r.status, r.reason) == (messages.STATUS_FAILED, "out-of-fuel")
    assert r.events[-1][2] == 5000  # every unit of fuel was spent
    r = mk.run(mk.call("a", "boom", address=addr, value=10))
    assert (r.status, r.reason, r.events[-1][1]) == (messages.STATUS_FAILED, "reverted",
                                                     "exception:ZeroDivisionError")
    assert dict(mk.node.state.kv) == before  # "before" was never stored
    assert mk.balance("a") == 1000 and mk.total() == total
    r = mk.run(mk.call("a", "pay", mk["b"].id, address=addr, value=10))
    assert r.status == messages.STATUS_OK and mk.balance("b") == 1010
    r = mk.run(mk.call("a", "pay", bytes(16), address=addr, value=10))  # nobody there
    assert (r.status, r.events[-1][1]) == (messages.STATUS_FAILED, "unknown-account")
    assert mk.total() == total


NAMES = ["s1", "s2", "b1", "b2"]
trade = st.tuples(
    st.sampled_from(["offer", "demand", "demand", "commit", "commit", "commit", "verdict",
                     "verdict", "verdict", "close", "wait"]),
    st.integers(0, 3), st.integers(1, 12), st.integers(1, 6), st.booleans(),
    st.sampled_from(["latest", "cheapest", "trusted", "nearest"]))


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(st.lists(trade, min_size=10, max_size=40))
def test_balances_conserved_under_random_trades(ops) -> None:
    with tempfile.TemporaryDirectory() as d:
        mk = Market(Path(d) / "gw", {n: 500 for n in NAMES})
        total = mk.total()
        agreements: list[tuple[bytes, str]] = []  # (id, supplier name)
        progress: dict[bytes, int] = {}
        for kind, who_i, price, qty, flag, policy in ops:
            signer = mk[NAMES[who_i]]
            if kind == "offer":
                msg = mk.offer(signer.name, price=price, valid=30 if flag else 5)
            elif kind == "demand":
                msg = mk.demand(signer.name, max_price=price, quantity=qty, policy=policy,
                                wait=20)
            elif kind in ("commit", "verdict", "close") and agreements:
                aid, sup = agreements[price % len(agreements)]
                b = progress.get(aid, 0)
                if kind == "commit":  # flag: by the supplier, else by anyone
                    signer = mk[sup] if flag else signer
                    msg = mk.call(signer, "commit", aid, b, b, 1, bytes(32))
                elif kind == "verdict":
                    signer = mk.op
                    msg = mk.call(signer, "verdict", aid, max(b - 1, 0), flag, 0, 0)
                else:
                    signer = mk.op if flag else signer
                    msg = mk.close(signer, aid)
            else:
                mk.node.time += 7
                continue
            try:
                mk.node.submit(msg)
            except errors.TLError:
                signer.seq -= 1  # refused at ingress: its seq is free again
                continue
            b = mk.node.produce()
            for r in b.receipts:
                for e in r.events:
                    if e[0] == "match":
                        sup = next(n for n in NAMES if mk[n].id == e[3])
                        agreements.append((e[1], sup))
                    if len(e) > 1 and e[1] == "delivery-committed":
                        progress[e[2]] = e[3] + 1
            assert mk.total() == total
            assert all(rec.balance >= 0 for _, rec in mk.node.state.items())
        assert replay.verify_chain(mk.node.store, mk.node.genesis).head_height >= 1
        escrow = mk.node.state.get(ledger.ESCROW)
        waiting = sum(1 for _ in mk.node.state.kv_range(b"d"))
        assert (escrow is None or escrow.balance == 0) == (waiting == 0)
        mk.node.close()
