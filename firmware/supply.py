"""The supplier's pass of the market (docs/MARKET.md, firmware/market.py):
loaded by Market.run for one pass and dropped after it, so a board keeps no
heap for this code between passes and a buyer never loads it.

For each agreement as supplier: the next reading when it is due (read,
signed, published on the data topic at QoS 1, counted only once the publish
went out, folded into the batch's stack), every _BATCH readings and for the
last partial batch a CONTRACT_CALL commit(agreement, batch, first, count,
root), and the slot freed once `quantity` readings are committed. Then the
OFFER, again every valid_s/2. One signature per pass: a supplier at 68 KiB
ran out of heap signing a commit in the pass that had just signed a reading
(bench/README.md, "Round 4").
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
_T = const(1)
_H = const(2)
_Q = const(3)
_N = const(4)
_K = const(5)
_R = const(6)
_IV = const(7)
_DUE = const(8)
_B = const(9)
_BN = const(10)
_SUPPLY = const(0)


def step(mk):
    """One pass for Market `mk`, at most one signature in it (a reading, a
    commit or an OFFER: each with only this pass's code loaded, collected
    just before); True if one went out (more may be due: again at the next
    pass). What the link or a full outbox refused waits for the next second."""
    nd = mk.node
    for i in range(_SLOTS):
        s = mk.slots[i]
        if s is None or s[_R] != _SUPPLY:
            continue
        n, b = s[_N], s[_B]
        c = 0
        for e in b:
            c += e[1]  # the readings folded into the batch
        if c < _BATCH and n < s[_Q] and mk.t >= s[_DUE] and nd.client.is_connected():
            v, sc, _ = nd.board.read_sensor()
            gc.collect()  # the signature's big ints fill the small holes first
            r = nd.wallet.sign_reading(s[_A], n, v, sc)
            if not nd._send(s[_T], r, False):  # counted only once it went out
                return False
            from shared import streamroot  # here: not loaded while the reading is signed

            streamroot.fold(b, r)
            mk._log("stream", "agreement", s[_H], "index", n, "value", v)
            s[_N] = n + 1
            s[_DUE] = mk.t + s[_IV]
            return True
        if c and (c >= _BATCH or n >= s[_Q]):
            from shared import streamroot

            r = [s[_A], s[_BN], n - c, c, streamroot.stack_root(b)]
            gc.collect()
            r = nd.submit(_CALL, {1: s[_K], 2: "commit", 3: r, 4: 0, 5: _FUEL})
            if r is None:  # the outbox is full: the stream waits
                return False
            mk._log("commit", "agreement", s[_H], "batch", s[_BN], "first", n - c,
                    "count", c, "seq", r)
            s[_B] = []
            s[_BN] += 1
            return True
        if n >= s[_Q]:  # delivered (or ended)
            mk.slots[i] = None
            gc.collect()
            mk._log("done", "agreement", s[_H], "readings", n, "free", gc.mem_free())
    if mk.offer and nd.registered and mk.t >= mk.due:
        o = cbor.loads(mk.offer)
        gc.collect()
        if nd.submit(_OFFER, o) is None:
            return False
        mk.due = mk.t + (o[6] // 2 or 1)
        mk._log("offer", "service", o[1], "price", o[3], "valid_s", o[6])
    return False
