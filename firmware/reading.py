"""A supplier's reading (docs/MARKET.md, firmware/market.py): the first pass
of a supplier's step, loaded by the market's run and dropped after it
(firmware/supply.py, the rest of the supplier's pass, is not loaded while
this one signs: a reading is the signature a supplier makes most often).

For the first agreement as supplier whose next reading is due: read,
signed, published on the data topic at QoS 1, counted only once the publish
went out, folded into the batch's stack (shared/streamroot.py, loaded only
after the signature). At most _BATCH readings wait for their commit.
"""
import gc

from micropython import const

_BATCH = const(4)  # readings per commitment (firmware/supply.py)
_SLOTS = const(2)  # firmware/market.py: agreements at a time, and a slot's indices
_A = const(0)
_T = const(1)
_H = const(2)
_Q = const(3)
_N = const(4)
_R = const(6)
_IV = const(7)
_DUE = const(8)
_B = const(9)
_SUPPLY = const(0)


def step(mk):
    """One reading for Market `mk`: True if it went out (more may be due:
    again at the next pass), False if the link refused it (at the next
    second), None if none was due (firmware/supply.py's pass runs)."""
    nd = mk.node
    for s in mk.slots:
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

            streamroot.fold(s[_B], r)
            nd.log("stream agreement=%s index=%s value=%s" % (s[_H], n, v))
            s[_N] = n + 1
            s[_DUE] = mk.t + s[_IV]
            return True
    return None
