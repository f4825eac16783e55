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
callback; a refused subscription is tried again every 2 s: a broker whose
rights come from the chain, a NATS node's reloaded file, may admit the
purchase a moment after the MATCH) and checks each reading: signed by the supplier key of the MATCH,
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

Frugal (64 KiB heap; the qstr pool is nearly full): one class, the code
run per notice in its own module (above), const
literals instead of the names of shared/messages_gateway.py (which a board
never imports); the OFFER and DEMAND bodies come ready-made from
firmware/startup.py (code freed after boot); every log line is put together
by _log from short words (interned names) rather than from format strings
(each one a str object of the module's).
"""
import gc
import time

from micropython import const

from shared import cose, errors, messages, stream, tx

_OFFER = const(13)  # transaction types (shared/txdecode.py)
_DEMAND = const(15)
_CALL = const(17)  # CONTRACT_CALL
_REPORT = const(24)  # REPORT (docs/TRUST.md)
_BATCH = const(4)  # readings per commitment
_FUEL = const(20000)
_SLOTS = const(2)  # agreements at a time
# reply kind and key (shared/messages.py)
_REJECT = const(2)
_SEQ = const(2)
# an agreement: a list indexed by these (firmware/notices.py builds it)
_A = const(0)  # agreement id (16 bytes)
_T = const(1)  # data topic (bytes, as the MQTT callback gives it)
_H = const(2)  # the id's first 8 hex digits (log lines)
_Q = const(3)  # quantity (0 once ended)
_N = const(4)  # readings published / bought so far = the next index
_K = const(5)  # supplier: the contract address; buyer: the supplier's key
_R = const(6)  # role: _SUPPLY, _BUY (not subscribed yet) or _BUYING
_IV = const(7)  # supplier: interval_s; buyer: the second it expires (ENDED may go missing)
_DUE = const(8)  # supplier only: second of the next reading
_B = const(9)  # supplier only: the stream.Batch being filled
_BN = const(10)  # supplier only: its batch number
_SUPPLY = const(0)
_BUY = const(1)
_BUYING = const(2)


class Market:
    MARK = "match"  # flash file: authority, height and order of the newest MATCH acted on
    # (firmware/notices.py)

    def __init__(self, node, offer, need):
        self.node = node
        self.offer = offer  # the OFFER body, or None
        self.need = need  # the DEMAND body, or None
        self.slots = [None] * _SLOTS
        self.t = 0  # local clock, whole seconds
        self.tk = time.ticks_ms()  # ticks of second self.t
        self.due = 0  # second of the next OFFER
        self.bal = None  # balance of the last ACCOUNT (None: none seen yet)
        self.hgt = -1  # height of the last ACCOUNT: an older one is a replay
        self.rp = None  # the agreement last reported (one REPORT per agreement)
        self.dem = None  # the open DEMAND: (id, seq)
        self.rs = 0  # second of the next try of a refused subscription

    def _log(self, ev, *kv):
        # "ev k=v k=v ..."
        for i in range(0, len(kv), 2):
            ev += " %s=%s" % (kv[i], kv[i + 1])
        self.node.log(ev)

    # -- from the node's MQTT callback -----------------------------------
    def sealed(self, msg):
        """A market notice as received: handled (notice) only if the domain
        authority sealed it, checked as shared/notice.py's open_notice checks
        it (that module, with the gateway's seal, stays off the board);
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
        notice (MATCH, ACCOUNT, ENDED), handled by firmware/notices.py (loaded
        for it and dropped after it: the loop keeps no heap for that code); a
        rejection of the open DEMAND frees the buyer; the rest is the node's."""
        k = m[0]
        if k <= _REJECT:
            if k == _REJECT and self.dem and self.dem[1] == m.get(_SEQ):
                self.dem = None  # refused: demand again once the balance covers it
            return False
        import firmware

        gc.collect()  # its code lands low, in the holes the seal check left
        from firmware import notices

        try:
            notices.handle(self, m, k)
        finally:
            __import__("sys").modules.pop("firmware.notices", None)
            firmware.__dict__.pop("notices", None)
        return True

    def data(self, topic, msg):
        """Every message this device receives: False for one on its rx
        topic (the node's); on a data topic, a reading bought from a
        supplier (one for no current agreement is dropped)."""
        if topic.endswith(b"/rx"):
            return False
        for s in self.slots:
            if s and s[_R] == _BUYING and s[_T] == topic and s[_N] < s[_Q]:
                break
        else:
            return True
        gc.collect()  # the signature check's big ints fill the small holes first
        try:
            a, i, v, sc = stream.open_reading(msg, s[_K])
            r = "agreement" if a != s[_A] else "index" if i < s[_N] or i >= s[_Q] else None
        except errors.TLError as e:
            r = e.reason
        if r:
            self._log("bad-reading", "agreement", s[_H], "reason", r)
            if r == "bad-signature" and self.rp != s[_A]:  # a forged reading: told once
                self.rp = s[_A]
                sup = bytes.fromhex(topic.split(b"/")[3])  # tl/<d>/data/<supplier>/<agreement>
                self.node.submit(_REPORT, {1: sup, 2: "forged-message", 3: bytes(msg[:1024])})
        else:
            s[_N] = i + 1
            self._log("bought", "agreement", s[_H], "index", i, "value", v, "scale", sc)
        return True

    # -- every pass of the node loop -------------------------------------
    def step(self, now):
        nd = self.node
        while time.ticks_diff(now, self.tk) >= 1000:
            self.tk = time.ticks_add(self.tk, 1000)
            self.t += 1
        for i in range(_SLOTS):
            s = self.slots[i]
            if s is None:
                continue
            n = s[_N]
            if s[_R] == _SUPPLY:
                b = s[_B]
                if b.count < _BATCH and n < s[_Q] and self.t >= s[_DUE] and nd.client.is_connected():
                    v, sc, _ = nd.board.read_sensor()
                    r = nd.wallet.sign_reading(s[_A], n, v, sc)
                    if nd._send(s[_T], r, False):  # counted only once it went out
                        b.add(r)
                        self._log("stream", "agreement", s[_H], "index", n, "value", v)
                        n = s[_N] = n + 1
                        s[_DUE] = self.t + s[_IV]
                    r = None
                c = b.count
                if c and (c >= _BATCH or n >= s[_Q]):
                    r = nd.submit(_CALL, {1: s[_K], 2: "commit",
                                          3: [s[_A], s[_BN], n - c, c, b.root()], 4: 0, 5: _FUEL})
                    if r is None:
                        continue  # outbox full: again next pass, the stream waits
                    self._log("commit", "agreement", s[_H], "batch", s[_BN], "first", n - c,
                              "count", c, "seq", r)
                    s[_B] = stream.Batch()
                    s[_BN] += 1
                    continue
            elif n < s[_Q] and self.t < s[_IV]:
                if s[_R] == _BUY and self.t >= self.rs:
                    s[_R] = _BUYING  # restored by the client after a reconnect
                    g = nd.client.subscribe(s[_T], 1)
                    self._log("listen", "agreement", s[_H], "granted", g)
                    if g == 0x80:  # refused: the broker may not admit the purchase yet
                        s[_R] = _BUY  # (a NATS node reloads its rights after the block)
                        self.rs = self.t + 2
                continue
            else:  # bought, ended, or expired by the local clock (its ENDED went missing)
                nd.client.unsubscribe(s[_T])
                s[_Q] = n
            if n >= s[_Q]:  # delivered, bought, or ended
                self.slots[i] = None
                gc.collect()
                self._log("done", "agreement", s[_H], "readings", n, "free", gc.mem_free())
        if not nd.registered:
            return
        o = self.offer
        if o and self.t >= self.due and nd.submit(_OFFER, o) is not None:
            self.due = self.t + (o[6] // 2 or 1)
            self._log("offer", "service", o[1], "price", o[3], "valid_s", o[6])
        o = self.need
        if not o or self.dem or self.bal is None or self.bal < o[2] * o[3] + nd.fee:
            return
        for s in self.slots:
            if s and s[_R] != _SUPPLY:
                return  # buying already
        i = nd.submit(_DEMAND, o)
        if i is not None:
            a = tx.tx_id(nd.outbox.get(i))[:16]
            self.dem = (a, i)
            self.bal -= o[2] * o[3] + nd.fee  # spent until the next ACCOUNT says otherwise
            self._log("demand", "service", o[1], "agreement", a.hex()[:8], "quantity", o[3],
                      "seq", i)
