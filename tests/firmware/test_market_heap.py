"""What a market board keeps for its market part (MicroPython only;
tests/test_under_micropython.py runs it under a market board's heap).

A market board's part (firmware/market.py, the module itself: a board has
one market) keeps the market's state and the entry points the node calls;
the code that acts is loaded for one call and dropped after it (run): the
supplier's pass, the buyer's pass, a bought reading's check, a notice's
seal check, what a notice does, with shared/stream.py and
shared/streamroot.py. Between calls the loop holds no other market module,
a supplier never loads the buyer's code nor a buyer the supplier's, and a
notice's seal is checked with no other market code loaded. Before (a
Market class whose module also checked the seals and wrote the log lines)
the part kept ~2.7 KB with its state, and a market board ran out of heap
checking its receipts at 64 KiB (bench/README.md, "Round 4", "Round 6")."""
import gc
import sys

gc.threshold(2048)  # what a board has loaded before its market part (firmware/main.py)
from firmware import main, wallet  # noqa: E402, F401
from shared import cbor, cose, errors, merkle, messages, p256, tx  # noqa: E402, F401

gc.threshold(-1)
# what the part may keep, its state included, on this 64-bit port (its
# names interned too): a plain board checks a receipt with ~1.2 KB to
# spare at 64 KiB (bench/README.md, "Round 5"); the part kept ~2.7 KB
# before round 6
BUDGET = 2048
OFFER = {1: "temperature", 2: "cC", 3: 5, 4: 1, 5: "", 6: 100, 7: 1}
_offer = cbor.dumps(OFFER)
gc.collect()
_free = gc.mem_free()
from firmware import market  # noqa: E402

market.Market(None, _offer, None)  # the state, with an OFFER body (built by start-up)
_offer = None
gc.collect()
KEPT = _free - gc.mem_free()  # the market part's code and state, kept for good
from marketfakes import Node, account, ended, key, match, stream  # noqa: E402
from marketfakes import teardown_module  # noqa: E402, F401 (the runner calls it)

ON_USE = ("firmware.reading", "firmware.supply", "firmware.buy", "firmware.bought", "firmware.sealed",
          "firmware.notices", "firmware.matched", "shared.stream", "shared.streamroot",
          "shared.streamsign")
NEED = {1: "temperature", 2: 5, 3: 2, 4: 600, 5: "cheapest"}
A1 = b"\x11" * 16
A2 = b"\x22" * 16


def _spied():
    # the modules Market.run loads, in order
    loads = []
    run = market.run

    def spy(name, fn, *args):
        loads.append(name)
        return run(name, fn, *args)

    market.run = spy  # the part's functions call it through the module's globals
    return loads, run


def _loaded():
    return [m for m in ON_USE if m in sys.modules]


def test_the_market_part_keeps_little_with_its_state():
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
        market.run = run
    assert len(n.logged("stream agreement=11111111")) == 5 and len(n.of_type(17)) == 2
    assert n.logged("done agreement=11111111 readings=5")
    assert set(loads) == {"reading", "supply", "matched", "notices"}, loads


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
        market.run = run
    assert n.logged("done agreement=%s readings=2" % a.hex()[:8]), n.lines
    assert set(loads) == {"buy", "bought", "matched", "notices"}, loads
