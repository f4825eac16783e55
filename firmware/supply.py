"""The supplier's pass of the market (docs/MARKET.md, firmware/market.py):
loaded by the market's run for one pass, after firmware/reading.py found no
reading due, and dropped after it, so a board keeps no heap for this code
between passes and a buyer never loads it.

For each agreement as supplier: every _BATCH readings and for the last
partial batch a CONTRACT_CALL commit(agreement, batch, first, count, root),
and the slot freed once `quantity` readings are committed. Then the OFFER,
again every valid_s/2. One signature per pass (a supplier at 68 KiB ran
out of heap signing a commit in the pass that had just signed a reading,
bench/README.md, "Round 4"), made by the market's run once this code is
dropped (a job, firmware/market.py); the next pass logs it.
"""
import gc

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
_COMMITTED = const(2)  # a job's kind (firmware/reading.py: 1)
_OFFERED = const(3)


def step(mk):
    """One pass for Market `mk`: a commit or an OFFER to sign as a job (what,
    function, args) for the market's run, which signs it once this code is
    dropped; at the next call, what it gave (True: more may be due, again at
    the next pass; False: the outbox was full, at the next second). False
    while a buyer's job waits (firmware/buy.py)."""
    nd = mk.node
    o = mk.out
    if o:
        w, r = o
        if w[0] != _COMMITTED and w[0] != _OFFERED:
            return False  # firmware/buy.py's
        mk.out = None
        if r is None:  # the outbox is full: the stream waits
            return False
        if w[0] == _OFFERED:
            mk.due = mk.t + (w[3] // 2 or 1)
            nd.log("offer service=%s price=%s valid_s=%s" % w[1:])
            return False
        _, i, a, h, bn, first, c = w
        nd.log("commit agreement=%s batch=%s first=%s count=%s seq=%s" % (h, bn, first, c, r))
        s = mk.slots[i]
        if s and s[_A] == a:
            s[_B] = []
            s[_BN] = bn + 1
        return True
    for i in range(_SLOTS):
        s = mk.slots[i]
        if s is None or s[_R] != _SUPPLY:
            continue
        n, b = s[_N], s[_B]
        c = 0
        for e in b:
            c += e[1]  # the readings folded into the batch
        if c and (c >= _BATCH or n >= s[_Q]):
            from shared import streamroot  # dropped with this code, before the signature

            r = [s[_A], s[_BN], n - c, c, streamroot.stack_root(b)]
            return ((_COMMITTED, i, s[_A], s[_H], s[_BN], n - c, c), nd.submit,
                    (_CALL, {1: s[_K], 2: "commit", 3: r, 4: 0, 5: _FUEL}))
        if n >= s[_Q]:  # delivered (or ended)
            mk.slots[i] = None
            gc.collect()
            nd.log("done agreement=%s readings=%s free=%s" % (s[_H], n, gc.mem_free()))
    if mk.offer and nd.registered and mk.t >= mk.due:
        o = cbor.loads(mk.offer)
        return (_OFFERED, o[1], o[3], o[6]), nd.submit, (_OFFER, o)
    return False
