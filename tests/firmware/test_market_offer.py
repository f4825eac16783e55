"""The supplier's offers and the reading of notices in firmware/market.py,
against a fake node (MicroPython only; tests/test_under_micropython.py runs
it under a market board's heap)."""
from marketfakes import Node, account, cbor, match
from marketfakes import teardown_module  # noqa: F401 (the runner calls it)

OFFER = {1: "temperature", 2: "cC", 3: 5, 4: 2, 5: "u4pruyd", 6: 100, 7: 1}
A1 = b"\x11" * 16


def test_offers_once_registered_and_again_every_half_validity():
    n = Node(OFFER, name="supplier")
    n.registered = False
    n.at(0)
    assert n.txs == []
    n.registered = True
    n.at(0)
    assert n.of_type(13) == [OFFER]
    assert n.logged("offer service=temperature price=5 valid_s=100")
    for s in range(1, 50):
        n.at(s)
    assert len(n.of_type(13)) == 1
    n.at(50)
    assert len(n.of_type(13)) == 2
    assert n.published == [] and n.board.reads == 0  # no on-chain readings either


def test_malformed_notices_are_logged_not_raised():
    n = Node(OFFER, name="supplier")
    good = cbor.loads(match(A1, 5))
    for k, v in ((20, b"short"), (29, "text"), (30, "owner"), (26, 0), (27, "2")):
        bad = dict(good)
        bad[k] = v
        n.notice(cbor.dumps(bad))
    del good[26]
    n.notice(cbor.dumps(good))
    n.notice(cbor.dumps({0: 4, 31: b"x", 6: 1}))
    assert len(n.logged("bad-notice")) == 7, n.lines
    assert n.market.slots == [None, None] and n.market.bal is None
    n.notice(account(7, 3))
    assert n.lines[-1] == "balance=7 height=3" and n.market.bal == 7, n.lines


def test_an_older_account_notice_is_a_replay():
    n = Node(OFFER, name="supplier")
    n.notice(account(7, 3))
    n.notice(account(100, 2))  # sealed once, but older than the one read
    assert n.lines[-1] == "bad-notice reason=stale height=2" and n.market.bal == 7
    n.notice(account(8, 3))  # the same height again (the retained notice): read
    assert n.lines[-1] == "balance=8 height=3" and n.market.bal == 8
