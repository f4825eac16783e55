"""A supplier's reading (docs/MARKET.md, firmware/market.py): the first pass
of a supplier's step, loaded by the market's run and dropped after it
(firmware/supply.py, the rest of the supplier's pass, is not loaded while
this one runs: a reading is the signature a supplier makes most often).

For the first agreement as supplier whose next reading is due: read, and
handed to the market's run to be signed once this code is dropped (a job,
firmware/market.py); at the next pass the signed reading is published on
the data topic at QoS 1, counted only once the publish went out, and
folded into the batch's stack (shared/streamroot.py). At most _BATCH
readings wait for their commit.
"""
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
_JOB = const(1)  # a job's kind (firmware/supply.py: 2 and 3)


def step(mk):
    """One reading for Market `mk`: its signature as a job (what, function,
    args) for the market's run; at the next call, True once it went out
    (more may be due), False if the link refused it (a new one at the next
    second). None if none was due, or a job of firmware/supply.py's waits
    (its pass runs)."""
    nd = mk.node
    o = mk.out
    if o:
        if o[0][0] != _JOB:
            return None  # firmware/supply.py's
        mk.out = None
        _, i, a, n, v = o[0]
        s = mk.slots[i]
        if s is None or s[_A] != a or s[_N] != n:  # ended meanwhile: dropped
            return True
        if not nd._send(s[_T], o[1], False):  # counted only once it went out
            return False
        from shared import streamroot

        streamroot.fold(s[_B], o[1])
        nd.log("stream agreement=%s index=%s value=%s" % (s[_H], n, v))
        s[_N] = n + 1
        s[_DUE] = mk.t + s[_IV]
        return True
    for i in range(_SLOTS):
        s = mk.slots[i]
        if s is None or s[_R] != _SUPPLY:
            continue
        n = s[_N]
        c = 0
        for e in s[_B]:
            c += e[1]  # the readings folded into the batch
        if c < _BATCH and n < s[_Q] and mk.t >= s[_DUE] and nd.client.is_connected():
            v, sc, _ = nd.board.read_sensor()
            return (_JOB, i, s[_A], n, v), nd.wallet.sign_reading, (s[_A], n, v, sc)
    return None
