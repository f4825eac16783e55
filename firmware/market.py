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
(shared/notice.py's format; sealed() checks it with shared/cose.py, which
the node has loaded anyway), and read defensively: a malformed or unsealed one is logged
(`bad-notice`), never raised into the MQTT loop. What a notice does
(ACCOUNT, ENDED, MATCH) is firmware/notices.py, loaded for the notice and
dropped after it.

Frugal (64 KiB heap): this module keeps only the market's state and the
entry points the node calls; the code that acts is loaded for one call and
dropped after it (Market.run), with shared/stream.py and
shared/streamroot.py: firmware/supply.py (the supplier's pass: readings,
commits, OFFERs), firmware/buy.py (the buyer's pass: listen, unsubscribe,
DEMANDs), firmware/bought.py (a bought reading's check) and
firmware/notices.py (a notice). A supplier never loads the buyer's code and
the other way round. The passes run when the local clock reaches a new
second, after a notice or a reading, and again at the next pass of the node
after a supplier's pass signed something (one signature per pass); what
the link or a full outbox refused waits for the next second, so a
refusal does not load the code at every pass of the node. A supplier's
batch is kept as shared/streamroot.py's fold() stack (a list), so no stream
code stays loaded between readings. Const literals instead of the names of
shared/messages_gateway.py (which a board never imports); the OFFER and
DEMAND bodies come ready-made from firmware/startup.py (code freed after
boot); every log line is put together by _log from short words (interned
names) rather than from format strings (each one a str object of the
module's). Its heap, before and after: bench/README.md, "Round 4".
"""
import gc
import sys
import time

from micropython import const

from shared import cose, errors, messages

_SLOTS = const(2)  # agreements at a time
# reply kind and key (shared/messages.py)
_REJECT = const(2)
_SEQ = const(2)
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


class Market:
    MARK = "match"  # flash file: authority, height and order of the newest MATCH acted on
    # (firmware/notices.py)

    def __init__(self, node, offer, need):
        self.node = node
        self.offer = offer  # the OFFER body (its CBOR bytes, decoded on use), or None
        self.need = need  # the DEMAND body (its CBOR bytes), or None
        self.slots = [None] * _SLOTS
        self.t = 0  # local clock, whole seconds
        self.tk = time.ticks_ms()  # ticks of second self.t
        self.due = 0  # second of the next OFFER
        self.bal = None  # balance of the last ACCOUNT (None: none seen yet)
        self.hgt = -1  # height of the last ACCOUNT: an older one is a replay
        self.rp = None  # the agreement last reported (one REPORT per agreement)
        self.dem = None  # the open DEMAND: (id, seq)
        self.go = True  # run the passes at the next step (see the module's notes)
        self.reg = False  # the node's registered as the passes last saw it

    def _log(self, ev, *kv):
        # "ev k=v k=v ..."
        for i in range(0, len(kv), 2):
            ev += " %s=%s" % (kv[i], kv[i + 1])
        self.node.log(ev)

    def run(self, name, fn, *args):
        """`fn`(self, *args) of module `name` (firmware.supply, firmware.buy,
        firmware.bought, firmware.notices), loaded for this call and dropped
        after it with shared/stream.py and shared/streamroot.py: the loop
        keeps no heap for their code. The passes run at the next step."""
        gc.collect()  # its code lands low, in the holes the last one left
        try:
            return getattr(__import__(name, None, None, (fn,)), fn)(self, *args)
        finally:
            self.go = True
            for m in (name, "shared.stream", "shared.streamroot"):
                # out of sys.modules and off its package (firmware/main.py's
                # _forget, which a plain board keeps without this caller)
                if sys.modules.pop(m, None):
                    p, _, a = m.partition(".")
                    sys.modules[p].__dict__.pop(a, None)

    # -- from the node's MQTT callback -----------------------------------
    def sealed(self, msg):
        """A market notice as received: handled (notice) only if the domain
        authority sealed it, checked as shared/notice.py's open_notice checks
        it (that module, with the gateway's `seal`, stays off the board);
        else logged as bad-notice."""
        try:
            s1 = cose.parse1(msg, False)  # views into msg
            m = messages.parse(s1.payload, False)
            gc.collect()  # the check's big ints fill the small holes first
            cose.check1(self.node.authority, s1)
        except errors.TLError as e:
            self._log("bad-notice", "reason", e.reason)
            return
        s1 = None
        self.notice(m)

    def notice(self, m):
        """Every reply the gateway sends this device: True for a market
        notice (MATCH, ACCOUNT, ENDED), handled by firmware/notices.py; a
        rejection of the open DEMAND frees the buyer; the rest is the node's."""
        k = m[0]
        if k <= _REJECT:
            if k == _REJECT and self.dem and self.dem[1] == m.get(_SEQ):
                self.dem = None  # refused: demand again once the balance covers it
                self.go = True
            return False
        self.run("firmware.notices", "handle", m, k)
        return True

    def data(self, topic, msg):
        """Every message this device receives: False for one on its rx
        topic (the node's); on a data topic, a reading bought from a
        supplier, firmware/bought.py's (only a buyer subscribes to one)."""
        if topic.endswith(b"/rx"):
            return False
        if self.need:
            self.run("firmware.bought", "check", topic, msg)
        return True

    # -- every pass of the node loop -------------------------------------
    def step(self, now):
        """The clock; the role passes when due (a new second, a change: a
        notice, a reading, the registration; or a supplier's pass that signed)."""
        while time.ticks_diff(now, self.tk) >= 1000:
            self.tk = time.ticks_add(self.tk, 1000)
            self.t += 1
            self.go = True
        r = self.node.registered
        if r != self.reg:
            self.reg = r
            self.go = True
        if not self.go:
            return
        self.go = again = False
        sup = self.offer is not None
        buy = self.need is not None
        for s in self.slots:
            if s:
                sup = sup or s[_R] == _SUPPLY
                buy = buy or s[_R] != _SUPPLY
        if sup:
            again = self.run("firmware.supply", "step")
        if buy:
            again = self.run("firmware.buy", "step") or again
        self.go = again
