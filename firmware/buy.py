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
found (signed here, with only this pass's code loaded; one signature per
pass).
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


def step(mk):
    """One pass for Market `mk`; True after a REPORT went out (the rest at
    the next pass), else False (nothing more to do before the next second: a
    DEMAND the full outbox refused waits for it)."""
    nd = mk.node
    r = mk.rp
    if r and r[1] and nd.submit(_REPORT, r[1]) is not None:  # a forged reading (bought.py)
        mk.rp = (r[0], None)  # the agreement stays reported: once per agreement
        return True  # one signature per pass: the rest at the next one
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
    if mk.bal < o[2] * o[3] + nd.fee:
        return False
    for s in mk.slots:
        if s and s[_R] != _SUPPLY:
            return False  # buying already
    i = nd.submit(_DEMAND, o)
    if i is None:
        return False
    a = tx.tx_id(nd.outbox.get(i))[:16]
    mk.dem = (a, i)
    mk.bal -= o[2] * o[3] + nd.fee  # spent until the next ACCOUNT says otherwise
    nd.log("demand service=%s agreement=%s quantity=%s seq=%s" % (o[1], a.hex()[:8], o[3], i))
    return False
