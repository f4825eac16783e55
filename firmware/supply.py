"""The supplier's pass of the market (docs/MARKET.md, firmware/market.py):
loaded by the market's run for one pass, after firmware/reading.py found no
reading due, and dropped after it, so a board keeps no heap for this code
between passes and a buyer never loads it.

For each agreement as supplier: every _BATCH readings and for the last
partial batch a CONTRACT_CALL commit(agreement, batch, first, count, root),
and the slot freed once `quantity` readings are committed. Then the OFFER,
again every valid_s/2. One signature per pass: a supplier at 68 KiB ran
out of heap signing a commit in the pass that had just signed a reading
(bench/README.md, "Round 4"); and shared/streamroot.py, which gives the
batch's root, is dropped before the commit is signed.
"""
import gc
import sys

from micropython import const

from shared import cbor

_OFFER = const(13)  # transaction types (shared/txdecode.py)
_CALL = const(17)  # CONTRACT_CALL
_BATCH = const(4)  # readings per commitment
_FUEL = const(20000)
_SLOTS = const(2)  # firmware/market.py: agreements at a time, and a slot's indices
_A = const(0)
_H = const(2)
_Q = const(3)
_N = const(4)
_K = const(5)
_R = const(6)
_B = const(9)
_BN = const(10)
_SUPPLY = const(0)


def _root(b):
    # the batch's root, with shared/streamroot.py loaded for this call only
    from shared import streamroot

    try:
        return streamroot.stack_root(b)
    finally:
        sys.modules.pop("shared.streamroot", None)
        sys.modules["shared"].__dict__.pop("streamroot", None)


def step(mk):
    """One pass for Market `mk`, at most one signature in it (a commit or an
    OFFER, collected just before); True if one went out (more may be due:
    again at the next pass). A full outbox waits for the next second."""
    nd = mk.node
    for i in range(_SLOTS):
        s = mk.slots[i]
        if s is None or s[_R] != _SUPPLY:
            continue
        n, b = s[_N], s[_B]
        c = 0
        for e in b:
            c += e[1]  # the readings folded into the batch
        if c and (c >= _BATCH or n >= s[_Q]):
            r = [s[_A], s[_BN], n - c, c, _root(b)]
            gc.collect()
            r = nd.submit(_CALL, {1: s[_K], 2: "commit", 3: r, 4: 0, 5: _FUEL})
            if r is None:  # the outbox is full: the stream waits
                return False
            nd.log("commit agreement=%s batch=%s first=%s count=%s seq=%s" % (
                s[_H], s[_BN], n - c, c, r))
            s[_B] = []
            s[_BN] += 1
            return True
        if n >= s[_Q]:  # delivered (or ended)
            mk.slots[i] = None
            gc.collect()
            nd.log("done agreement=%s readings=%s free=%s" % (s[_H], n, gc.mem_free()))
    if mk.offer and nd.registered and mk.t >= mk.due:
        o = cbor.loads(mk.offer)
        gc.collect()
        if nd.submit(_OFFER, o) is None:
            return False
        mk.due = mk.t + (o[6] // 2 or 1)
        nd.log("offer service=%s price=%s valid_s=%s" % (o[1], o[3], o[6]))
    return False
