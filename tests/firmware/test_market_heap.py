"""What a market board keeps for its market part (MicroPython only;
tests/test_under_micropython.py runs it under a market board's heap).

A market board's part (firmware/market.py) keeps the market's state and the
entry points the node calls; the code that acts is loaded for one call and
dropped after it (Market.run): the supplier's pass, the buyer's pass, a
bought reading's check, a notice, with shared/stream.py and
shared/streamroot.py. Between calls the loop holds no other market module,
a supplier never loads the buyer's code nor a buyer the supplier's, and the
part's code costs less than the heap a P-256 signature needs: before this
(one module with all the roles' code, and shared/stream.py, loaded for
good) it kept ~4.6 KB, more than a signature needs, and the market roles
ran out of heap at 64-68 KiB (bench/README.md, "Round 4")."""
import gc
import sys

gc.threshold(2048)  # what a board has loaded before its market part (firmware/main.py)
from firmware import main, wallet  # noqa: E402, F401
from shared import cbor, cose, errors, merkle, messages, p256, tx  # noqa: E402, F401

gc.threshold(-1)
gc.collect()
_free = gc.mem_free()
from firmware.market import Market  # noqa: E402

gc.collect()
KEPT = _free - gc.mem_free()  # the market part's code, and what it imports, kept for good
from marketfakes import Node, account, ended, key, match, stream  # noqa: E402
from marketfakes import teardown_module  # noqa: E402, F401 (the runner calls it)

# the heap a P-256 signature needs on this 64-bit port is ~3.9 KB
# (bench/market_heap.py: free after start-up minus the lowest free while
# signing); here the market part's import keeps ~2.3 KB, 4.6 KB before
BUDGET = 3072
ON_USE = ("firmware.supply", "firmware.buy", "firmware.bought", "firmware.notices",
          "shared.stream", "shared.streamroot")
OFFER = {1: "temperature", 2: "cC", 3: 5, 4: 1, 5: "", 6: 100, 7: 1}
NEED = {1: "temperature", 2: 5, 3: 2, 4: 600, 5: "cheapest"}
A1 = b"\x11" * 16
A2 = b"\x22" * 16


def _spied():
    # the modules Market.run loads, in order
    loads = []
    run = Market.run

    def spy(mk, name, fn, *args):
        loads.append(name)
        return run(mk, name, fn, *args)

    Market.run = spy
    return loads, run


def _loaded():
    return [m for m in ON_USE if m in sys.modules]


def test_the_market_part_keeps_less_than_a_signature_needs():
    assert 0 < KEPT <= BUDGET, KEPT


def test_a_supplier_loads_its_code_per_pass_and_never_the_buyers():
    loads, run = _spied()
    try:
        n = Node(OFFER, name="supplier-heap")
        n.at(0)  # its OFFER
        n.notice(match(A1, 5, interval=1))
        for s in range(2, 12):
            n.at(s)
            assert _loaded() == [], (s, _loaded())
        n.notice(ended(A2, 10))
    finally:
        Market.run = run
    assert len(n.logged("stream agreement=11111111")) == 5 and len(n.of_type(17)) == 2
    assert n.logged("done agreement=11111111 readings=5")
    assert set(loads) == {"firmware.supply", "firmware.notices"}, loads


def test_a_buyer_loads_its_code_per_call_and_never_the_suppliers():
    loads, run = _spied()
    try:
        n = Node(None, NEED, name="buyer-heap", fee=1)
        n.notice(account(11, 2))
        n.at(1)
        assert n.logged("demand service=temperature")
        a = n.market.dem[0]
        priv, pub = key("seller")
        n.notice(match(a, 2, interval=1, role="buyer", supplier_key=pub))
        n.at(2)
        topic = n.client.subs[-1]
        sid = bytes.fromhex(topic.split(b"/")[3].decode())
        for i in range(2):
            n.market.data(topic, stream.reading(priv, sid, a, i, 2150 + i, -2))
            assert _loaded() == [], _loaded()
        n.at(3)
    finally:
        Market.run = run
    assert n.logged("done agreement=%s readings=2" % a.hex()[:8]), n.lines
    assert set(loads) == {"firmware.buy", "firmware.bought", "firmware.notices"}, loads
