"""Built-in contracts: escrow, service agreement, oracle; conservation under random trades."""

import hashlib

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.contracts import ContractBlock as Block
from gateway.contracts import Runtime, World, deploy
from gateway.contracts.builtin import REGISTRY


def acct(n: int) -> bytes:
    return hashlib.sha256(b"b-acct%d" % n).digest()[:16]


ADMIN, BUYER, SUPPLIER, OPERATOR, OTHER = (acct(i) for i in range(5))
ATT = [acct(10 + i) for i in range(4)]


def world():
    return World({("bal", BUYER): 10_000, ("bal", SUPPLIER): 100, ("bal", OTHER): 50})


def setup():
    rt = Runtime(REGISTRY)
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


def test_agreement_pays_per_verified_batch_with_fee_and_refunds():
    rt, w, a = setup()
    g = a["agreement"]
    root = bytes(32)
    assert call(rt, w, BUYER, g, "open", b"a1", SUPPLIER, 20, 10, 5000, "t",
                value=199).detail == "escrow-amount"
    assert call(rt, w, BUYER, g, "open", b"a1", SUPPLIER, 20, 10, 5000, "t", value=200).ok
    assert call(rt, w, OTHER, g, "commit", b"a1", 0, 0, 3, root).reason == "not-authorized"
    assert call(rt, w, SUPPLIER, g, "commit", b"a1", 0, 0, 11, root).detail == "count"
    assert call(rt, w, SUPPLIER, g, "commit", b"a1", 0, 0, 3, root).ok
    assert call(rt, w, SUPPLIER, g, "commit", b"a1", 0, 3, 3, root).detail == "replay"
    assert call(rt, w, SUPPLIER, g, "commit", b"a1", 5, 3, 3, root).detail == "gap"
    assert call(rt, w, SUPPLIER, g, "commit", b"a1", 1, 4, 3, root).detail == "first"
    # only the verifier (the operator by default) judges a batch
    assert call(rt, w, SUPPLIER, g, "verdict", b"a1", 0, True, 0, 0).reason == "not-authorized"
    r = call(rt, w, OPERATOR, g, "verdict", b"a1", 0, True, 2150, 0)
    assert r.ok and r.value is True
    assert w.balance(OPERATOR) == 3 and w.balance(SUPPLIER) == 100 + 57  # 60, 5% fee
    assert call(rt, w, OPERATOR, g, "verdict", b"a1", 0, True, 0, 0).detail == "unknown-batch"
    assert call(rt, w, SUPPLIER, g, "commit", b"a1", 1, 3, 3, root).ok
    r = call(rt, w, OPERATOR, g, "verdict", b"a1", 1, False, 0, 0)
    assert r.ok and r.value is False and r.events[0][1:] == [
        "delivery-failed", b"a1", 1, SUPPLIER, "stream"]
    assert w.balance(SUPPLIER) == 157
    rec = call(rt, w, BUYER, g, "get", b"a1").value
    assert (rec["failed"], rec["paid"], rec["next_batch"], rec["remaining"]) == (1, 3, 2, 140)
    assert call(rt, w, BUYER, g, "record", SUPPLIER).value == {"paid": 1, "failed": 1}
    assert call(rt, w, BUYER, g, "close", b"a1").detail == "not-expired"
    assert call(rt, w, SUPPLIER, g, "commit", b"a1", 2, 6, 1, root, time=5000).detail == \
        "expired"
    r = call(rt, w, BUYER, g, "close", b"a1", time=5000)
    assert r.ok and r.value == 140 and w.balance(BUYER) == 10_000 - 60
    assert w.total_balance() == 10_150


def test_agreement_closes_itself_when_every_reading_is_judged():
    rt, w, a = setup()
    g = a["agreement"]
    assert call(rt, w, BUYER, g, "open", b"a2", SUPPLIER, 10, 4, 5000, "t", value=40).ok
    assert call(rt, w, SUPPLIER, g, "commit", b"a2", 0, 0, 4, bytes(32)).ok
    r = call(rt, w, OPERATOR, g, "verdict", b"a2", 0, True, 7, 0)
    assert r.ok and [e[1] for e in r.events] == ["delivery-paid", "agreement-closed"]
    assert call(rt, w, BUYER, g, "get", b"a2").value["state"] == "closed"
    assert call(rt, w, SUPPLIER, g, "commit", b"a2", 1, 4, 1, bytes(32)).detail == "not-open"


def test_agreement_plausibility_through_the_oracle():
    rt, w, a = setup()
    r = deploy(rt, w, sender=ADMIN, admin=ADMIN, label="g2", name="agreement", version=1,
               params={"operator": OPERATOR, "fee_bps": 0,
                       "plausibility": {"t": [a["oracle"], 50]}}, block=Block(1000, 1))
    g = r.value
    assert call(rt, w, BUYER, g, "open", b"p", SUPPLIER, 1, 9, 5000, "t", value=9).ok
    for batch in range(3):
        assert call(rt, w, SUPPLIER, g, "commit", b"p", batch, batch * 3, 3, bytes(32)).ok
    # no attestations for round 7 yet: not paid
    r = call(rt, w, OPERATOR, g, "verdict", b"p", 0, True, 2150, 7)
    assert r.value is False and r.events[0][-1] == "no-attestation"
    assert call(rt, w, ATT[0], a["oracle"], "attest", 7, 2100).ok
    assert call(rt, w, ATT[1], a["oracle"], "attest", 7, 2104).value == 2100
    r = call(rt, w, OPERATOR, g, "verdict", b"p", 1, True, 2400, 7)  # 300 off: implausible
    assert r.value is False and r.events[0][-1] == "implausible"
    r = call(rt, w, OPERATOR, g, "verdict", b"p", 2, True, 2140, 7)
    assert r.value is True and w.balance(SUPPLIER) == 103
    assert call(rt, w, OTHER, g, "record", SUPPLIER).value == {"paid": 1, "failed": 2}


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
op = st.tuples(st.sampled_from(["e-open", "e-release", "e-refund", "g-open", "g-commit",
                                "g-verdict", "g-close"]),
               st.integers(0, 3), st.integers(0, 3), st.integers(0, 2),
               st.integers(-5, 400), st.integers(990, 1100), st.booleans())


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(op, min_size=1, max_size=30))
def test_conservation_under_random_trades(ops):
    rt, w, a = setup()
    total = w.total_balance()
    for kind, p1, p2, ident, amount, time, flag in ops:
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
            call(rt, w, who, a["agreement"], "open", iid, other, amount, q, time + 50, "t",
                 value=max(amount * q, 0), time=time)
        elif kind == "g-commit":
            call(rt, w, who, a["agreement"], "commit", iid, p2, p2, ident + 1, bytes(32),
                 time=time)
        elif kind == "g-verdict":
            call(rt, w, who, a["agreement"], "verdict", iid, p2, flag, amount, 0, time=time)
        else:
            call(rt, w, who, a["agreement"], "close", iid, time=time)
        assert w.total_balance() == total
        assert all(v >= 0 for k, v in w.items() if k[0] == "bal")
