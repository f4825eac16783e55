"""The market notices a board acts on (docs/MARKET.md): ACCOUNT and ENDED,
already checked as sealed by the domain authority, and a final rejection of
its open DEMAND; a MATCH is firmware/matched.py's. Loaded by Market's
notice (firmware/market.py) for one notice and dropped after it: a market
board gets a few notices per agreement, so the loop keeps no heap for this
code.

ACCOUNT: the balance and the height it was told at (an older one is stale).
ENDED: the agreement stops (a supplier's slot is freed, a buyer
unsubscribes at its next step). Read defensively: a malformed notice is
logged (`bad-notice`), never raised into the MQTT loop.
"""
from micropython import const

# reply and notice kinds and keys (shared/messages.py, shared/messages_gateway.py)
_REJECT = const(2)
_SEQ = const(2)
_ACCOUNT = const(4)
_ENDED = const(5)
_HEIGHT = const(6)
_AGREEMENT = const(20)
_BALANCE = const(31)
_REFUND = const(32)
_SLOTS = const(2)  # firmware/market.py: agreements at a time, and a slot's indices
_A = const(0)
_Q = const(3)
_R = const(6)
_SUPPLY = const(0)


def handle(mk, m):
    """Reply `m` (parsed; not a MATCH) for Market `mk`: True for a market
    notice, acted on; a rejection of the open DEMAND frees the buyer; False
    for the rest (the node's)."""
    k = m[0]
    if k <= _REJECT:
        if k == _REJECT and mk.dem and mk.dem[1] == m.get(_SEQ):
            mk.dem = None  # refused: demand again once the balance covers it
        return False
    lg = mk.node.log
    try:
        if k == _ACCOUNT:
            b, g = m[_BALANCE], m[_HEIGHT] + 0
            if g < mk.hgt:  # sealed, but older than one already read
                lg("bad-notice reason=stale height=%s" % g)
            else:
                lg("balance=%d height=%s" % (b, g))
                mk.bal, mk.hgt = b, g
        elif k == _ENDED:
            a = m[_AGREEMENT]
            if not isinstance(a, (bytes, memoryview)) or len(a) != 16:
                raise ValueError("field")
            a = bytes(a)
            if mk.dem and mk.dem[0] == a:
                mk.dem = None  # a waiting demand expired
            lg("ended agreement=%s refund=%s" % (a.hex()[:8], m[_REFUND] + 0))
            for i in range(_SLOTS):
                s = mk.slots[i]
                if s and s[_A] == a:
                    s[_Q] = 0  # the supplier stops, the buyer unsubscribes
                    if s[_R] == _SUPPLY:
                        mk.slots[i] = None
    except Exception as e:  # a malformed notice must not stop the node
        lg("bad-notice error=%s" % repr(e))
    return True
