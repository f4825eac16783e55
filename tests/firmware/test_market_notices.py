"""Sealed market notices on a board (firmware/market.py Market.sealed,
firmware/notices.py), against a fake node (MicroPython only;
tests/test_under_micropython.py runs it under a market board's heap).

The seal is checked under the authority key with shared/cose.py, which
every board loads anyway; what a notice does is firmware/notices.py, loaded
for that notice and dropped after it. So neither that code nor
shared/notice.py (the format's module, with the gateway's sealing) stays in
the heap a market board needs for its signature checks (bench/README.md,
"Market boards")."""
import gc
import sys

import firmware
from marketfakes import Node, account, key, match
from marketfakes import teardown_module  # noqa: F401 (the runner calls it)
from shared import cbor, cose, tx

AUTH_PRIV, AUTH_PUB = key("authority")
OFFER = {1: "temperature", 2: "cC", 3: 5, 4: 2, 5: "u4pruyd", 6: 100, 7: 1}
A1 = b"\x11" * 16


def seal(priv, notice):
    # as shared/notice.py's seal (not imported: the test checks a board never loads it)
    return cose.sign1(priv, notice, tx.device_id(AUTH_PUB))


def test_a_sealed_notice_is_acted_on_and_its_code_dropped():
    n = Node(OFFER, name="sealed", authority=AUTH_PUB)
    n.market.sealed(seal(AUTH_PRIV, account(7, 3)))
    assert n.lines[-1] == "balance=7 height=3" and n.market.bal == 7, n.lines
    n.market.sealed(seal(AUTH_PRIV, match(A1, 5)))
    assert [s[0] for s in n.market.slots if s] == [A1], n.lines
    for m in ("notices", "matched", "sealed"):  # each dropped after its call
        assert "firmware." + m not in sys.modules and not hasattr(firmware, m), m
    assert "shared.notice" not in sys.modules


def test_handling_a_notice_keeps_no_heap():
    n = Node(OFFER, name="kept", authority=AUTH_PUB)
    n.market.sealed(seal(AUTH_PRIV, account(7, 3)))  # the names of notices.py interned once
    msg = seal(AUTH_PRIV, account(8, 4))
    gc.collect()
    free = gc.mem_free()
    n.market.sealed(msg)
    gc.collect()
    assert n.market.bal == 8
    # notices.py kept would be ~1 KB; a log line and the heap's 32-byte blocks may stay
    assert free - gc.mem_free() < 512, free - gc.mem_free()


def test_a_notice_not_sealed_by_the_authority_changes_nothing():
    n = Node(OFFER, name="forged", authority=AUTH_PUB)
    forger, _ = key("forger")
    n.market.sealed(seal(forger, account(10**6, 2)))
    assert n.lines[-1] == "bad-notice reason=bad-signature", n.lines
    n.market.sealed(account(10**6, 2))  # no seal at all
    assert n.lines[-1] == "bad-notice reason=bad-cose", n.lines
    bad = bytearray(seal(AUTH_PRIV, match(A1, 5)))
    bad[-40] ^= 1
    n.market.sealed(bytes(bad))
    assert n.lines[-1] == "bad-notice reason=bad-signature", n.lines
    assert n.market.bal is None and n.market.slots == [None, None]
    assert cbor.loads(account(1, 1))[31] == 1  # the notices above were well formed
