"""A reading a buyer receives on an agreement's data topic (docs/MARKET.md,
firmware/market.py): loaded by the market's run for one message and dropped
after it. The reading's signature is checked as a job (firmware/market.py's
run): with shared/cose.py (which every board loads) once this code is
dropped, so no market code but the resident part is in the heap during the
check; the run then calls this module again, which decodes the reading's
fields with shared/stream.py and counts it.
"""
from micropython import const

from shared import cose, errors

_SLOTS = const(2)  # firmware/market.py: agreements at a time, and a slot's indices
_A = const(0)
_T = const(1)
_H = const(2)
_Q = const(3)
_N = const(4)
_K = const(5)
_R = const(6)
_BUYING = const(2)
_CHECKED = const(6)  # a job's kind (firmware/reading.py, supply.py, buy.py: 1 to 5)


def check(mk, topic, msg):
    """A message not on the rx topic (False for one on it: the node's): on
    a buyer, for a current agreement, a reading checked under the supplier's
    key of the MATCH (a job: (what, cose.check1, its arguments)), for this
    agreement, at an index not below the next expected one and below
    quantity (a forged one is reported once per agreement: a REPORT
    forged-message, which the buyer's next pass submits); else dropped."""
    if topic.endswith(b"/rx"):
        return False
    if not mk.need:
        return True
    o = mk.out
    if o and o[0][0] == _CHECKED:  # checked: the payload, or the check's refusal
        mk.out = None
        s, r = mk.slots[o[0][1]], o[1]
        if isinstance(r, errors.TLError):
            _bad(mk, s, r.reason, topic, msg)
            return True
        from shared import stream  # only now: not loaded during the check

        try:
            a, i, v, sc = stream.fields(r)
        except errors.TLError as e:
            _bad(mk, s, e.reason, topic, msg)
            return True
        r = "agreement" if a != s[_A] else "index" if i < s[_N] or i >= s[_Q] else None
        if r:
            _bad(mk, s, r, topic, msg)
        else:
            s[_N] = i + 1
            mk.node.log("bought agreement=%s index=%s value=%s scale=%s" % (s[_H], i, v, sc))
        return True
    for i in range(_SLOTS):
        s = mk.slots[i]
        if s and s[_R] == _BUYING and s[_T] == topic and s[_N] < s[_Q]:
            break
    else:
        return True
    try:
        o = cose.parse1(msg, False)  # views into msg, as shared/stream.py's open_reading
    except errors.TLError as e:
        _bad(mk, s, e.reason, topic, msg)
        return True
    return (_CHECKED, i), cose.check1, (s[_K], o)


def _bad(mk, s, r, topic, msg):
    mk.node.log("bad-reading agreement=%s reason=%s" % (s[_H], r))
    if r == "bad-signature" and (not mk.rp or mk.rp[0] != s[_A]):  # forged: told once,
        # by the buyer's next pass (firmware/buy.py): signed in this check, the
        # REPORT would need the heap with this check's code loaded
        sup = bytes.fromhex(topic.split(b"/")[3])  # tl/<d>/data/<supplier>/<agreement>
        mk.rp = (s[_A], {1: sup, 2: "forged-message", 3: bytes(msg[:1024])})
