"""A reading a buyer receives on an agreement's data topic (docs/MARKET.md,
firmware/market.py): loaded by Market.run for one message and dropped after
it, alone with shared/stream.py, so the signature check runs with no other
market code loaded than the resident part.
"""
import gc

from micropython import const

from shared import errors, stream

_REPORT = const(24)  # transaction type REPORT (docs/TRUST.md)
_A = const(0)  # firmware/market.py: a slot's indices
_T = const(1)
_H = const(2)
_Q = const(3)
_N = const(4)
_K = const(5)
_R = const(6)
_BUYING = const(2)


def check(mk, topic, msg):
    """A message on a data topic: for a current agreement, a reading checked
    under the supplier's key of the MATCH, for this agreement, at an index
    not below the next expected one and below quantity (a forged one is
    reported once per agreement: REPORT forged-message); else dropped."""
    for s in mk.slots:
        if s and s[_R] == _BUYING and s[_T] == topic and s[_N] < s[_Q]:
            break
    else:
        return
    gc.collect()  # the signature check's big ints fill the small holes first
    try:
        a, i, v, sc = stream.open_reading(msg, s[_K])
        r = "agreement" if a != s[_A] else "index" if i < s[_N] or i >= s[_Q] else None
    except errors.TLError as e:
        r = e.reason
    if r:
        mk._log("bad-reading", "agreement", s[_H], "reason", r)
        if r == "bad-signature" and mk.rp != s[_A]:  # a forged reading: told once
            mk.rp = s[_A]
            sup = bytes.fromhex(topic.split(b"/")[3])  # tl/<d>/data/<supplier>/<agreement>
            mk.node.submit(_REPORT, {1: sup, 2: "forged-message", 3: bytes(msg[:1024])})
    else:
        s[_N] = i + 1
        mk._log("bought", "agreement", s[_H], "index", i, "value", v, "scale", sc)
