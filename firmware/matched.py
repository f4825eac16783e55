"""A MATCH notice (docs/MARKET.md), already checked as sealed by the domain
authority: a new agreement in a free slot. Loaded by Market's notice
(firmware/market.py) for one MATCH and dropped after it, without the code
of the other notices (firmware/notices.py): a MATCH is the largest notice a
board parses, and its agreement's slot is built while it is held.

A MATCH whose (height, order) is not above the newest one acted on is a
replay and is refused. That mark lives in flash only (file Market.MARK,
"<authority> <height> <order>", read at each MATCH), so a reboot does not
reopen the door and the loop keeps nothing for it. A supplier closes
(CLOSE) a MATCH it has no room for, or one told again after its restart.
Read defensively: a malformed notice is logged (`bad-notice`), never raised
into the MQTT loop. Cut in small functions: each one's code is a block of
its own, found more easily in a fragmented heap.
"""
from micropython import const

from firmware import flash

_CLOSE = const(16)  # transaction type (shared/txdecode.py)
# notice keys (shared/messages.py, shared/messages_gateway.py)
_HEIGHT = const(6)
_AGREEMENT = const(20)
_SUPPLIER = const(22)
_SUPPLIER_KEY = const(23)
_PRICE = const(25)
_QUANTITY = const(26)
_INTERVAL = const(27)
_CONTRACT = const(29)
_ROLE = const(30)
_ORDER = const(33)
_NEXT = const(34)
_LEFT = const(35)
_SLOTS = const(2)  # firmware/market.py: agreements at a time, and a slot's indices
_A = const(0)
_R = const(6)
_SUPPLY = const(0)
_BUY = const(1)


def handle(mk, m):
    """MATCH `m` (parsed) for Market `mk`; True."""
    lg = mk.node.log
    try:
        a = _b(m[_AGREEMENT], 16)
        if mk.dem and mk.dem[0] == a:
            mk.dem = None  # it became this agreement
        i = _match(mk, m, a, lg)
        if i is not None:
            mk.slots[i] = _slot(mk, m, a)
    except Exception as e:  # a malformed notice must not stop the node
        lg("bad-notice error=%s" % repr(e))
    return True


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


def _match(mk, m, a, lg):
    # the slot a MATCH goes in, or None (a replay, told twice, refused)
    r, h = m[_ROLE], a.hex()[:8]
    q, iv = m[_QUANTITY], m[_INTERVAL]
    o = (m[_HEIGHT] + 0, m[_ORDER] + 0)
    nx = m.get(_NEXT)  # told again after a restart: the first index not committed
    # the fields checked before the mark moves (TypeError, ValueError: bad-notice)
    _b(m[_CONTRACT], 16) if r == "supplier" else _b(m[_SUPPLIER_KEY], 33)
    if nx is not None:
        nx += 0
    if q < 1 or iv < 1 or r not in ("supplier", "buyer"):
        raise ValueError("match")
    if o <= _mark(mk):  # sealed, but not newer than one acted on: a replay
        lg("match-refused agreement=%s reason=replay height=%s" % (h, o[0]))
        return None
    flash.write(mk.MARK, ("%s %d %d" % (mk.node.authority[1:9].hex(), o[0], o[1])).encode())
    lg("%s role=%s agreement=%s price=%s quantity=%s" % (
        "match" if nx is None else "resume", r, h, m[_PRICE] + 0, q))
    free = None
    for i in range(_SLOTS):
        s = mk.slots[i]
        if s is None:
            free = i
        elif s[_A] == a:
            return None  # told twice
    if free is None or nx is not None and r == "supplier":
        # busy, or told again after its own restart (the readings it had not
        # committed are gone with the RAM): a supplier closes it, so the
        # buyer's escrow comes back now
        seq = mk.node.submit(_CLOSE, {1: a}) if r == "supplier" else None
        lg("match-refused agreement=%s reason=%s close=%s" % (
            h, "busy" if free is None else "restarted", seq))
        return None
    return free


def _slot(mk, m, a):
    # a MATCH's agreement. Its data topic: tl/<domain>/data/<supplier hex>/<agreement
    # hex> (shared/topics.py, dropped after start-up: tl/<domain>/ from the
    # node's tl/<domain>/tx); a device publishes data only under its own id
    h = a.hex()
    sup = m[_ROLE] == "supplier"
    s = [a, (mk.node.tx_topic[:-2] + "data/" + (mk.node.wallet.hex if sup else _b(
        m[_SUPPLIER], 16).hex()) + "/" + h).encode(), h[:8], m[_QUANTITY],
        m.get(_NEXT, 0) + 0, _b(m[_CONTRACT], 16) if sup else _b(m[_SUPPLIER_KEY], 33), _BUY]
    if sup:
        s[_R] = _SUPPLY
        iv = m[_INTERVAL]
        s += (iv, mk.t + iv + 1, [], 0)  # []: shared/streamroot.py fold()'s stack
    else:
        s.append(mk.t + m[_LEFT])
    return s
