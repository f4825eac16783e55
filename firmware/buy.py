"""The buyer's pass of the market (docs/MARKET.md, firmware/market.py):
loaded by Market.run for one pass and dropped after it, so a board keeps no
heap for this code between passes and a supplier never loads it (a bought
reading is checked by firmware/bought.py).

For each agreement as buyer: subscribe to its data topic once (here,
outside the MQTT callback; a refused one is asked again by the MQTT
client), and unsubscribe and free the slot once bought,
ended or expired by the local clock (its ENDED may have gone missing); then
a DEMAND once the balance of the last ACCOUNT covers max_price x quantity +
the fee. First of all, the REPORT of a forged reading firmware/bought.py
found. One signature per pass, made by the market's run once this code is
dropped (a job, firmware/market.py); the next pass finishes it.
"""
import gc

from micropython import const

from shared import cbor, tx

_DEMAND = const(15)  # transaction types (shared/txdecode.py)
_REPORT = const(24)  # REPORT (docs/TRUST.md)
_SLOTS = const(2)  # firmware/market.py: agreements at a time, and a slot's indices
_T = const(1)
_H = const(2)
_Q = const(3)
_N = const(4)
_R = const(6)
_IV = const(7)
_SUPPLY = const(0)
_BUY = const(1)
_BUYING = const(2)
_REPORTED = const(4)  # a job's kind (firmware/reading.py, firmware/supply.py: 1 to 3)
_DEMANDED = const(5)


def step(mk):
    """One pass for Market `mk`: a REPORT or a DEMAND to sign as a job (what,
    function, args) for the market's run, which signs it once this code is
    dropped; at the next call, what it gave (True after a REPORT: the rest
    at the next pass). Else False: nothing more before the next second (a
    DEMAND the full outbox refused waits for it; a supplier's job waits for
    firmware/supply.py)."""
    nd = mk.node
    o = mk.out
    if o:
        w, i = o
        if w[0] != _REPORTED and w[0] != _DEMANDED:
            return False  # firmware/supply.py's
        mk.out = None
        if w[0] == _REPORTED:
            if i is not None:  # the agreement stays reported: once per agreement
                mk.rp = (mk.rp[0], None)
            return True
        if i is None:
            return False
        a = tx.tx_id(nd.outbox.get(i))[:16]
        mk.dem = (a, i)
        mk.bal -= w[1]  # spent until the next ACCOUNT says otherwise
        nd.log("demand service=%s agreement=%s quantity=%s seq=%s" % (w[2], a.hex()[:8], w[3], i))
        return False
    r = mk.rp
    if r and r[1]:  # a forged reading (firmware/bought.py)
        return (_REPORTED,), nd.submit, (_REPORT, r[1])
    r = None
    for i in range(_SLOTS):
        s = mk.slots[i]
        if s is None or s[_R] == _SUPPLY:
            continue
        n = s[_N]
        if n < s[_Q] and mk.t < s[_IV]:
            if s[_R] == _BUY:
                s[_R] = _BUYING  # restored by the client after a reconnect
                # a refused filter (0x80: a NATS node admits the purchase once it has
                # reloaded its rights after the block) is kept and asked again by the
                # client itself (firmware/mqtt.py): the readings count once it is granted
                nd.log("listen agreement=%s granted=%s" % (s[_H], nd.client.subscribe(s[_T], 1)))
            continue
        # bought, ended, or expired by the local clock (its ENDED went missing)
        nd.client.unsubscribe(s[_T])
        mk.slots[i] = None
        gc.collect()
        nd.log("done agreement=%s readings=%s free=%s" % (s[_H], n, gc.mem_free()))
    o = mk.need
    if not nd.registered or not o or mk.dem or mk.bal is None:
        return False
    o = cbor.loads(o)
    c = o[2] * o[3] + nd.fee
    if mk.bal < c:
        return False
    for s in mk.slots:
        if s and s[_R] != _SUPPLY:
            return False  # buying already
    return (_DEMANDED, c, o[1], o[3]), nd.submit, (_DEMAND, o)
