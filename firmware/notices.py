"""The market notices a board acts on (docs/MARKET.md): ACCOUNT, ENDED and
MATCH, already checked as sealed by the domain authority. Loaded by
Market.notice (firmware/market.py) for one notice and dropped after it: a
market board gets a few notices per agreement, so the loop keeps no heap for
this code (~1 KB of a 64 KiB heap on the 64-bit Unix port).

ACCOUNT: the balance and the height it was told at (an older one is stale).
ENDED: the agreement stops (a supplier's slot is freed, a buyer
unsubscribes at its next step). MATCH: a new agreement in a free slot; a
MATCH whose (height, order) is not above the newest one acted on is a
replay and is refused. That mark lives in flash only (file Market.MARK,
"<authority> <height> <order>", read at each MATCH), so a reboot does not
reopen the door and the loop keeps nothing for it. Read defensively: a
malformed notice is logged (`bad-notice`), never raised into the MQTT loop.
"""
from micropython import const

from firmware import flash

_CLOSE = const(16)  # transaction type (shared/txdecode.py)
# notice kinds and keys (shared/messages.py, shared/messages_gateway.py)
_ACCOUNT = const(4)
_ENDED = const(5)
_HEIGHT = const(6)
_AGREEMENT = const(20)
_SUPPLIER = const(22)
_SUPPLIER_KEY = const(23)
_PRICE = const(25)
_QUANTITY = const(26)
_INTERVAL = const(27)
_CONTRACT = const(29)
_ROLE = const(30)
_BALANCE = const(31)
_REFUND = const(32)
_ORDER = const(33)
_NEXT = const(34)
_LEFT = const(35)
_SLOTS = const(2)  # firmware/market.py: agreements at a time, and a slot's indices
_A = const(0)
_Q = const(3)
_R = const(6)
_SUPPLY = const(0)
_BUY = const(1)


def _b(v, n):
    # a byte string field of a notice, n bytes (n=33: a public key, 33 or 65),
    # copied out of the received message
    if not isinstance(v, (bytes, memoryview)) or len(v) not in (n, 65 if n == 33 else n):
        raise ValueError("field")
    return bytes(v)


def _mark(mk):
    # (height, order) of the newest MATCH acted on under this authority; (-1, -1): none
    try:
        a, h, o = flash.read(mk.MARK).decode().split()
        if a == mk.node.authority[1:9].hex():  # a new chain's authority: none
            return int(h), int(o)
    except Exception:
        pass
    return -1, -1


def handle(mk, m, k):
    """Notice `m` of kind `k` (> REJECT) for Market `mk`."""
    try:
        if k == _ACCOUNT:
            b, g = m[_BALANCE], m[_HEIGHT] + 0
            if g < mk.hgt:  # sealed, but older than one already read
                mk._log("bad-notice", "reason", "stale", "height", g)
                return
            mk._log("balance=%d" % b, "height", g)
            mk.bal, mk.hgt = b, g
            return
        a = _b(m[_AGREEMENT], 16)
        h = a.hex()
        if mk.dem and mk.dem[0] == a:
            mk.dem = None  # a waiting demand expired, or it became this agreement
        if k == _ENDED:
            mk._log("ended", "agreement", h[:8], "refund", m[_REFUND] + 0)
            for i in range(_SLOTS):
                s = mk.slots[i]
                if s and s[_A] == a:
                    s[_Q] = 0  # the supplier stops, the buyer unsubscribes
                    if s[_R] == _SUPPLY:
                        mk.slots[i] = None
            return
        r = m[_ROLE]
        key = _b(m[_CONTRACT], 16) if r == "supplier" else _b(m[_SUPPLIER_KEY], 33)
        q, iv = m[_QUANTITY], m[_INTERVAL]
        o = (m[_HEIGHT] + 0, m[_ORDER] + 0)
        nx = m.get(_NEXT)  # told again after a restart: the first index not committed
        n0 = 0 if nx is None else nx + 0
        if q < 1 or iv < 1 or r not in ("supplier", "buyer"):
            raise ValueError("match")
        if o <= _mark(mk):  # sealed, but not newer than one acted on: a replay
            mk._log("match-refused", "agreement", h[:8], "reason", "replay", "height", o[0])
            return
        flash.write(mk.MARK, ("%s %d %d" % (mk.node.authority[1:9].hex(), o[0], o[1])).encode())
        mk._log("match" if nx is None else "resume", "role", r, "agreement", h[:8],
                "price", m[_PRICE] + 0, "quantity", q)
        free = -1
        for i in range(_SLOTS):
            s = mk.slots[i]
            if s is None:
                free = i
            elif s[_A] == a:
                return  # told twice
        if free < 0 or nx is not None and r == "supplier":
            # busy, or told again after its own restart (the readings it had not
            # committed are gone with the RAM): a supplier closes it, so the
            # buyer's escrow comes back now
            seq = mk.node.submit(_CLOSE, {1: a}) if r == "supplier" else None
            mk._log("match-refused", "agreement", h[:8], "reason",
                    "busy" if free < 0 else "restarted", "close", seq)
            return
        # tl/<domain>/data/<supplier hex>/<agreement hex> (shared/topics.py,
        # dropped after start-up: tl/<domain>/ from the node's tl/<domain>/tx);
        # a device publishes data only under its own id
        sup = mk.node.wallet.hex if r == "supplier" else _b(m[_SUPPLIER], 16).hex()
        s = [a, (mk.node.tx_topic[:-2] + "data/" + sup + "/" + h).encode(),
             h[:8], q, n0, key, _BUY]
        if r == "supplier":
            s[_R] = _SUPPLY
            s += (iv, mk.t + iv + 1, [], 0)  # []: shared/streamroot.py fold()'s stack
        else:
            s.append(mk.t + m[_LEFT])
        mk.slots[free] = s
    except Exception as e:  # a malformed notice must not stop the node
        mk._log("bad-notice", "error", repr(e))
