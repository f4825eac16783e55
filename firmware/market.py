"""The service economy on a light node (docs/MARKET.md): the supplier and
buyer roles, a part of the Node (firmware/node.py) built by
firmware/startup.py only for a board whose config.json has an "offer" or a
"need", so a plain board never loads this module.

Supplier ("offer": service, unit, price, interval_s, location, valid_s,
schema): once registered it submits an OFFER and offers again every
valid_s/2. On a MATCH as supplier it reads the board's sensor every
interval_s (the first reading at least interval_s + 1 s after the MATCH,
so the buyer has subscribed by then), publishes each signed reading (shared/stream.py) on
tl/<domain>/data/<own id hex>/<agreement hex> at QoS 1 and counts it only once the
publish went out; every 4 readings, and for the last partial batch, it
submits CONTRACT_CALL commit(agreement, batch, first, count, root). It stops
after `quantity` readings or on ENDED. A stream waits while its commit
cannot be queued (outbox full).

Buyer ("need": service, max_price, quantity, policy, wait_s, location?): it
remembers the balance of every ACCOUNT notice; with no open demand and no
agreement as buyer, once that balance covers max_price x quantity + the
fee, it submits a DEMAND (whose first 16 bytes of tx id are the demand and
agreement id) and counts the amount as spent until the next ACCOUNT. On a
MATCH as buyer it subscribes to the data topic (in step(), outside the MQTT
callback; a refused subscription is asked again by the MQTT client,
firmware/mqtt.py: a NATS node admits the purchase once it has reloaded its
rights) and checks each reading: signed by the supplier key of the MATCH,
for this agreement, index not below the next expected one (a lost reading
leaves a gap; a replayed or repeated one is refused) and below quantity.
After `quantity` readings, on ENDED, or once the agreement's expiry has
passed by its local clock (the seconds left, from the MATCH: an ENDED sent
while it was offline is lost), it unsubscribes and may demand again.
An ENDED or a rejection of its DEMAND ends a waiting demand.

Agreements (at most _SLOTS at a time, either role) live in a fixed table of
small lists indexed by the consts below; a supplier closes (CLOSE) a MATCH
it has no room for, so its buyer is refunded at once. After a restart the
gateway tells a board again of its open agreements (a MATCH with the first
index not yet committed, logged `resume`): a buyer that no longer holds it
listens again from that index; a supplier that no longer holds it has lost
its uncommitted readings with its RAM and closes it (`reason=restarted`),
so the buyer is refunded and demands again. A MATCH whose (height, order)
is not above the newest one acted on is a replay and is refused
(`reason=replay`); that mark is kept in flash only (file `match`, with the
authority it belongs to), so a reboot does not reopen the door. Times are whole
seconds of a local clock kept from ticks_ms (a ticks delay cannot hold a
15-day re-offer).
Notices are acted on only once sealed by the domain authority
(shared/notice.py's format; firmware/sealed.py checks it with shared/cose.py,
which the node has loaded anyway), and read defensively: a malformed or unsealed one is logged
(`bad-notice`), never raised into the MQTT loop. What a notice does
(ACCOUNT, ENDED, MATCH) is firmware/notices.py, loaded for the notice and
dropped after it.

Frugal (64 KiB heap): a board keeps only this module between calls: the
market's state and the entry points the node calls. A board has one
market, so the part is this module itself (Market() sets its state as the
module's globals and returns the module: a class and its instance cost
~0.4 KB more). The code that acts is loaded for one call and dropped after
it (run), with shared/stream.py, shared/streamroot.py and
shared/streamsign.py: firmware/reading.py (a supplier's reading, the first
part of its pass), firmware/supply.py (the rest of it: commits, OFFERs),
firmware/buy.py (the buyer's pass: REPORTs, listen, unsubscribe, DEMANDs),
firmware/bought.py (a message on another topic than the rx one: a bought
reading's check), firmware/sealed.py (a notice's seal), firmware/matched.py
(a MATCH) and firmware/notices.py (the other notices, a rejection). Every
signature such a call makes or checks (but the CLOSE of a MATCH it has no
room for, signed by firmware/matched.py) is a job: the call returns it, run
makes it once the call's code is dropped and calls again to finish (see
run), so a signature, like a receipt's check, runs with no market code in
the heap but this module. A supplier never loads the buyer's code and the
other way round. The passes run when the local clock reaches a new second,
after a notice or a reading, and again at the next pass of the node after a
pass signed something (one signature per pass); what the link or a full
outbox refused waits for the next second, so a refusal does not load the
code at every pass of the node. A supplier's batch is kept as
shared/streamroot.py's fold() stack (a list), so no stream code stays
loaded between readings. Const literals instead of the names of
shared/messages_gateway.py (which a board never imports); the OFFER and
DEMAND bodies come ready-made from firmware/startup.py (code freed after
boot). No string here is longer than 10 characters: a longer literal is a
str object of the module (~50 B each), a shorter one an interned name, so
the modules are named without their package ("supply" for
firmware/supply.py). Its heap, before and after: bench/README.md,
"Round 4" and "Round 6".
"""
import gc
import sys
import time

from micropython import const

from shared import errors

_SLOTS = const(2)  # agreements at a time
_MATCH = const(3)  # notice kind (shared/messages.py KIND_MATCH)
# an agreement: a list indexed by these (firmware/notices.py builds it;
# firmware/supply.py and firmware/buy.py use it)
_A = const(0)  # agreement id (16 bytes)
_T = const(1)  # data topic (bytes, as the MQTT callback gives it)
_H = const(2)  # the id's first 8 hex digits (log lines)
_Q = const(3)  # quantity (0 once ended)
_N = const(4)  # readings published / bought so far = the next index
_K = const(5)  # supplier: the contract address; buyer: the supplier's key
_R = const(6)  # role: _SUPPLY, _BUY (not subscribed yet) or _BUYING
_IV = const(7)  # supplier: interval_s; buyer: the second it expires (ENDED may go missing)
_DUE = const(8)  # supplier only: second of the next reading
_B = const(9)  # supplier only: the batch being filled (shared/streamroot.py fold()'s stack)
_BN = const(10)  # supplier only: its batch number
_SUPPLY = const(0)
_BUY = const(1)
_BUYING = const(2)

MARK = "match"  # flash file: authority, height and order of the newest MATCH acted on
# (firmware/matched.py)
# the state (the per-call modules read and set these as the part's
# attributes), set by Market()
node = None
offer = None  # the OFFER body (its CBOR bytes, decoded on use), or None
need = None  # the DEMAND body (its CBOR bytes), or None
slots = None  # [None] * _SLOTS: the agreements
t = 0  # local clock, whole seconds
tk = 0  # ticks of second t
due = 0  # second of the next OFFER
bal = None  # balance of the last ACCOUNT (None: none seen yet)
hgt = -1  # height of the last ACCOUNT: an older one is a replay
rp = None  # (agreement, REPORT body or None once submitted): one REPORT per agreement
dem = None  # the open DEMAND: (id, seq)
go = True  # run the passes at the next step (see the module's notes)
out = None  # (what, result) of the signature the last pass asked for (run)
reg = False  # the node's registered as the passes last saw it


def Market(nd, of, nee):
    """The market part of node `nd`: this module, its state (re)set. `of`:
    the OFFER body, or None; `nee`: the DEMAND body, or None."""
    global node, offer, need, slots, t, tk, due, bal, hgt, rp, dem, go, reg, out
    node, offer, need, slots, out = nd, of, nee, [None] * _SLOTS, None
    t, tk, due, bal, hgt, rp, dem, go, reg = 0, time.ticks_ms(), 0, None, -1, None, None, True, False
    return sys.modules[__name__]


def run(name, fn, *args):
    """`fn`(this module, *args) of firmware/<name>.py (reading, supply, buy,
    bought, sealed, matched, notices), loaded for this call and dropped
    after it with shared/stream.py, shared/streamroot.py and
    shared/streamsign.py: the loop keeps no heap for their code. The passes
    run at the next step. A call that has a signature to make or check
    returns it as a job (what, function, args): made here once the call's
    code is dropped, so no market code but this module is in the heap
    during it; (what, its result or the TLError it raised) is kept in `out`
    and the call made again at once to finish the work (a pass's before the
    node sends its outbox: a DEMAND's receipt may come back at its next
    pass, and the DEMAND's id is read from the outbox)."""
    global go, out
    gc.collect()  # its code lands low, in the holes the last one left
    try:
        j = getattr(__import__("firmware." + name, None, None, (fn,)), fn)(
            sys.modules[__name__], *args)
    finally:
        go = True
        for p, m in (("firmware", name), ("shared", "stream"), ("shared", "streamroot"),
                     ("shared", "streamsign")):
            # out of sys.modules and off its package (firmware/main.py's
            # _forget, which a plain board keeps without this caller)
            if sys.modules.pop(p + "." + m, None):
                sys.modules[p].__dict__.pop(m, None)
    if type(j) is tuple:  # a signature to make or check, then the call again to finish it
        gc.collect()  # its big ints fill the small holes first
        try:
            r = j[1](*j[2])
        except errors.TLError as e:  # a check's refusal: the caller's to tell
            r = e
        out = (j[0], r)
        j = r = None
        return run(name, fn, *args)
    return j


# -- from the node's MQTT callback ---------------------------------------
def sealed(msg):
    """A market notice as received: handled (notice) only if the domain
    authority sealed it, checked by firmware/sealed.py (no other market code
    in the heap during the check, nor the notice's parsed fields); else
    logged as bad-notice."""
    m = run("sealed", "check", msg)
    if m:
        notice(m)


def notice(m):
    """Every reply the gateway sends this device, parsed: True for a market
    notice (MATCH, ACCOUNT, ENDED); a rejection of the open DEMAND frees the
    buyer; the rest is the node's (firmware/matched.py for a MATCH,
    firmware/notices.py for the rest)."""
    return run("matched" if m[0] == _MATCH else "notices", "handle", m)


def data(topic, msg):
    """Every message this device receives: False for one on its rx topic
    (the node's); on a data topic, a reading bought from a supplier
    (firmware/bought.py; only a buyer subscribes to one)."""
    return run("bought", "check", topic, msg)


# -- every pass of the node loop -----------------------------------------
def step(now):
    """The clock; the role passes when due (a new second, a change: a
    notice, a reading, the registration; or a supplier's pass that signed)."""
    global tk, t, go, reg
    while time.ticks_diff(now, tk) >= 1000:
        tk = time.ticks_add(tk, 1000)
        t += 1
        go = True
    r = node.registered
    if r != reg:
        reg = r
        go = True
    if not go:
        return
    go = again = False
    sup = offer is not None
    buy = need is not None
    for s in slots:
        if s:
            sup = sup or s[_R] == _SUPPLY
            buy = buy or s[_R] != _SUPPLY
    if sup:  # a reading (firmware/reading.py), else the rest (firmware/supply.py)
        again = run("reading", "step")
        if again is None:
            again = run("supply", "step")
    if buy:
        again = run("buy", "step") or again
    go = again
