"""A reading a buyer receives on an agreement's data topic (docs/MARKET.md,
firmware/market.py): loaded by the market's run for one message and dropped
after it. The reading's signature is checked with shared/cose.py (which
every board loads) before shared/stream.py decodes its fields, so the check
runs with no other market code loaded than this module and the resident
part.
"""
import gc

from micropython import const

from shared import cose, errors

_A = const(0)  # firmware/market.py: a slot's indices
_T = const(1)
_H = const(2)
_Q = const(3)
_N = const(4)
_K = const(5)
_R = const(6)
_BUYING = const(2)


def check(mk, topic, msg):
    """A message not on the rx topic (False for one on it: the node's): on
    a buyer, for a current agreement, a reading checked under the supplier's
    key of the MATCH, for this agreement, at an index not below the next
    expected one and below quantity (a forged one is reported once per
    agreement: a REPORT forged-message, which the buyer's next pass
    submits); else dropped."""
    if topic.endswith(b"/rx"):
        return False
    if not mk.need:
        return True
    for s in mk.slots:
        if s and s[_R] == _BUYING and s[_T] == topic and s[_N] < s[_Q]:
            break
    else:
        return True
    try:
        a = cose.parse1(msg, False)  # views into msg, as shared/stream.py's open_reading
        gc.collect()  # the signature check's big ints fill the small holes first
        cose.check1(s[_K], a)
        from shared import stream  # only now: not loaded during the check

        a, i, v, sc = stream.fields(a.payload)
        r = "agreement" if a != s[_A] else "index" if i < s[_N] or i >= s[_Q] else None
    except errors.TLError as e:
        r = e.reason
    if r:
        mk.node.log("bad-reading agreement=%s reason=%s" % (s[_H], r))
        if r == "bad-signature" and (not mk.rp or mk.rp[0] != s[_A]):  # forged: told once,
            # by the buyer's next pass (firmware/buy.py): signed here, the REPORT
            # would need the heap with this check's code and shared/stream.py loaded
            sup = bytes.fromhex(topic.split(b"/")[3])  # tl/<d>/data/<supplier>/<agreement>
            mk.rp = (s[_A], {1: sup, 2: "forged-message", 3: bytes(msg[:1024])})
    else:
        s[_N] = i + 1
        mk.node.log("bought agreement=%s index=%s value=%s scale=%s" % (s[_H], i, v, sc))
    return True
