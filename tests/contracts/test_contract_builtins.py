"""Built-in contracts: escrow, service agreement, oracle; conservation under random trades."""

import hashlib

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.contracts import Block, Runtime, World, deploy
from gateway.contracts.builtin import REGISTRY


def acct(n: int) -> bytes:
    return hashlib.sha256(b"b-acct%d" % n).digest()[:16]


ADMIN, BUYER, SUPPLIER, OPERATOR, OTHER = (acct(i) for i in range(5))
ATT = [acct(10 + i) for i in range(4)]


def world():
    return World({("bal", BUYER): 10_000, ("bal", SUPPLIER): 100, ("bal", OTHER): 50})


def setup(verify=lambda aid, seq, count, commitment: True):
    rt = Runtime(REGISTRY, {"verify-delivery": verify})
    w = world()
    b = Block(1000, 1)
    addr = {}
    for label, name, params in (
            ("escrow", "escrow", None),
            ("agreement", "agreement", {"operator": OPERATOR, "fee_bps": 500}),
            ("oracle", "oracle", {"attestors": ATT, "m": 2, "tolerance": 10})):
        r = deploy(rt, w, sender=ADMIN, admin=ADMIN, label=label, name=name, version=1,
                   params=params, block=b)
        assert r.ok, r
        addr[label] = r.value
    return rt, w, addr


def call(rt, w, who, addr, method, *args, value=0, time=1000):
    return rt.call(w, caller=who, address=addr, method=method, args=list(args), value=value,
                   block=Block(time, time // 10))


def test_escrow_release_and_refusals():
    rt, w, a = setup()
    e = a["escrow"]
    assert call(rt, w, BUYER, e, "open", b"e1", SUPPLIER, 2000).reason == "bad-value"  # no value
    assert call(rt, w, BUYER, e, "open", b"e1", SUPPLIER, 999, value=10).detail == "expiry"
    assert call(rt, w, BUYER, e, "open", b"e1", SUPPLIER, 2000, value=300).ok
    assert call(rt, w, BUYER, e, "open", b"e1", SUPPLIER, 2000, value=1).detail == "exists"
    assert w.balance(e) == 300 and w.balance(BUYER) == 9700
    assert call(rt, w, SUPPLIER, e, "release", b"e1").reason == "not-authorized"
    assert call(rt, w, OTHER, e, "refund", b"e1").reason == "not-authorized"
    assert call(rt, w, BUYER, e, "refund", b"e1").detail == "not-expired"
    assert call(rt, w, BUYER, e, "release", b"e1").ok
    assert w.balance(SUPPLIER) == 400 and w.balance(e) == 0
    assert call(rt, w, BUYER, e, "release", b"e1").detail == "not-open"
    assert call(rt, w, BUYER, e, "get", b"e1").value["state"] == "released"


def test_escrow_refund_at_expiry():
    rt, w, a = setup()
    e = a["escrow"]
    assert call(rt, w, BUYER, e, "open", b"e2", SUPPLIER, 2000, value=300).ok
    assert call(rt, w, BUYER, e, "refund", b"e2", time=1999).detail == "not-expired"
    assert call(rt, w, BUYER, e, "refund", b"e2", time=2000).ok
    assert w.balance(BUYER) == 10_000
    # the supplier may refund early
    assert call(rt, w, BUYER, e, "open", b"e3", SUPPLIER, 5000, value=5).ok
    assert call(rt, w, SUPPLIER, e, "refund", b"e3").ok and w.balance(BUYER) == 10_000


def test_agreement_pay_per_verified_delivery_fee_and_refund():
    verdict = {"ok": True}
    rt, w, a = setup(lambda aid, seq, count, c: verdict["ok"])
    g = a["agreement"]
    com = bytes(32)
    assert call(rt, w, BUYER, g, "open", b"a1", SUPPLIER, 20, 10, 5000, value=199).detail == \
        "escrow-amount"
    assert call(rt, w, BUYER, g, "open", b"a1", SUPPLIER, 20, 10, 5000, value=200).ok
    assert call(rt, w, OTHER, g, "deliver", b"a1", 0, 3, com).reason == "not-authorized"
    r = call(rt, w, SUPPLIER, g, "deliver", b"a1", 0, 3, com)
    assert r.ok and r.value is True
    assert w.balance(OPERATOR) == 3 and w.balance(SUPPLIER) == 100 + 57  # 60, 5% fee
    assert call(rt, w, SUPPLIER, g, "deliver", b"a1", 0, 3, com).detail == "replay"
    assert call(rt, w, SUPPLIER, g, "deliver", b"a1", 5, 3, com).detail == "gap"
    verdict["ok"] = False
    r = call(rt, w, SUPPLIER, g, "deliver", b"a1", 1, 3, com)
    assert r.ok and r.value is False and r.events[0][1] == "delivery-failed"
    assert w.balance(SUPPLIER) == 157
    rec = call(rt, w, BUYER, g, "get", b"a1").value
    assert (rec["failed"], rec["delivered"], rec["next_seq"], rec["remaining"]) == (1, 3, 2, 140)
    assert call(rt, w, BUYER, g, "close", b"a1").detail == "not-expired"
    assert call(rt, w, SUPPLIER, g, "deliver", b"a1", 2, 1, com, time=5000).detail == "expired"
    r = call(rt, w, BUYER, g, "close", b"a1", time=5000)
    assert r.ok and r.value == 140 and w.balance(BUYER) == 10_000 - 60
    assert w.total_balance() == 10_150


def test_agreement_without_hook_reverts():
    rt = Runtime(REGISTRY)
    w = world()
    b = Block(1000, 1)
    g = deploy(rt, w, sender=ADMIN, admin=ADMIN, label="g", name="agreement", version=1,
               params={"operator": OPERATOR, "fee_bps": 0}, block=b).value
    assert call(rt, w, BUYER, g, "open", b"x", SUPPLIER, 1, 1, 2000, value=1).ok
    r = call(rt, w, SUPPLIER, g, "deliver", b"x", 0, 1, bytes(32))
    assert (r.reason, r.detail) == ("unknown-contract", "hook")


def test_oracle_m_of_n():
    rt, w, a = setup()
    o = a["oracle"]
    assert call(rt, w, OTHER, o, "attest", 1, 2150).reason == "not-authorized"
    assert call(rt, w, ATT[0], o, "attest", 1, 2150).value is None
    assert call(rt, w, ATT[0], o, "attest", 1, 2150).detail == "duplicate"
    assert call(rt, w, ATT[1], o, "attest", 1, 2300).value is None  # too far apart
    r = call(rt, w, ATT[2], o, "attest", 1, 2158)
    assert r.ok and r.value == 2150 and r.events[-1][1:] == ["oracle-result", 1, 2150]
    assert call(rt, w, ATT[3], o, "attest", 1, 2155).detail == "finalized"
    assert call(rt, w, OTHER, o, "result", 1).value == 2150
    assert call(rt, w, OTHER, o, "result", 2).value is None
    assert call(rt, w, ATT[0], o, "attest", 2, 1.5).reason == "bad-value"


def test_oracle_params_checked():
    rt, w = Runtime(REGISTRY), world()
    for p in ({"attestors": ATT, "m": 5, "tolerance": 0},
              {"attestors": [ATT[0], ATT[0]], "m": 1, "tolerance": 0},
              {"attestors": ATT, "m": 1, "tolerance": -1}):
        r = deploy(rt, w, sender=ADMIN, admin=ADMIN, label="o", name="oracle", version=1,
                   params=p, block=Block(1, 1))
        assert r.reason == "bad-value"


PARTIES = [BUYER, SUPPLIER, OTHER, OPERATOR]
op = st.tuples(st.sampled_from(["e-open", "e-release", "e-refund", "g-open", "g-deliver",
                                "g-close"]),
               st.integers(0, 3), st.integers(0, 3), st.integers(0, 2),
               st.integers(-5, 400), st.integers(990, 1100), st.booleans())


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(op, min_size=1, max_size=30))
def test_conservation_under_random_trades(ops):
    state = {"ok": True}
    rt, w, a = setup(lambda *_: state["ok"])
    total = w.total_balance()
    for kind, p1, p2, ident, amount, time, flag in ops:
        state["ok"] = flag
        who, other = PARTIES[p1], PARTIES[p2]
        iid = b"i%d" % ident
        if kind == "e-open":
            call(rt, w, who, a["escrow"], "open", iid, other, time + 50, value=max(amount, 0),
                 time=time)
        elif kind == "e-release":
            call(rt, w, who, a["escrow"], "release", iid, time=time)
        elif kind == "e-refund":
            call(rt, w, who, a["escrow"], "refund", iid, time=time)
        elif kind == "g-open":
            q = ident + 1
            call(rt, w, who, a["agreement"], "open", iid, other, amount, q, time + 50,
                 value=max(amount * q, 0), time=time)
        elif kind == "g-deliver":
            call(rt, w, who, a["agreement"], "deliver", iid, p2, ident + 1, bytes(32), time=time)
        else:
            call(rt, w, who, a["agreement"], "close", iid, time=time)
        assert w.total_balance() == total
        assert all(v >= 0 for k, v in w.items() if k[0] == "bal")
