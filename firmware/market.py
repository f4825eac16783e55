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
callback) and checks each reading: signed by the supplier key of the MATCH,
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
(`reason=replay`); that mark is kept in flash (file `match`, with the
authority it belongs to), so a reboot does not reopen the door. Times are whole
seconds of a local clock kept from ticks_ms (a ticks delay cannot hold a
15-day re-offer).
Notices are acted on only once sealed by the domain authority
(shared/notice.py), and read defensively: a malformed or unsealed one is
logged (`bad-notice`), never raised into the MQTT loop.

Frugal (64 KiB heap; the qstr pool is nearly full): one class, const
literals instead of the names of shared/messages_gateway.py (which a board
never imports); the OFFER and DEMAND bodies come ready-made from
firmware/startup.py (code freed after boot); every log line is put together
by _log from short words (interned names) rather than from format strings
(each one a str object of the module's).
"""
import gc
import time

from micropython import const

from firmware import flash
from shared import errors, notice, stream, tx

_OFFER = const(13)  # transaction types (shared/txdecode.py)
_DEMAND = const(15)
_CLOSE = const(16)
_CALL = const(17)  # CONTRACT_CALL
_REPORT = const(24)  # REPORT (docs/TRUST.md)
_BATCH = const(4)  # readings per commitment
_FUEL = const(20000)
_SLOTS = const(2)  # agreements at a time
# notice kinds and keys (shared/messages.py, shared/messages_gateway.py)
_REJECT = const(2)
_MATCH = const(3)
_ACCOUNT = const(4)
_ENDED = const(5)
_SEQ = const(2)
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
# an agreement: a list indexed by these
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


def _b(v, n):
    # a byte string field of a notice, n bytes (n=33: a public key, 33 or 65),
    # copied out of the received message
    if not isinstance(v, (bytes, memoryview)) or len(v) not in (n, 65 if n == 33 else n):
        raise ValueError("field")
    return bytes(v)


class Market:
    MARK = "match"  # flash file: authority, height and order of the newest MATCH acted on

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
        self.au = node.authority[1:9].hex()  # names the chain the mark belongs to
        self.mk = (-1, -1)  # (height, order) of the newest MATCH acted on: not newer is a replay
        self.rp = None  # the agreement last reported (one REPORT per agreement)
        try:  # kept in flash, so a reboot forgets none (a new chain's authority: none)
            a, h, o = flash.read(self.MARK).decode().split()
            if a == self.au:
                self.mk = (int(h), int(o))
        except Exception:
            pass
        self.dem = None  # the open DEMAND: (id, seq)

    def _log(self, ev, *kv):
        # "ev k=v k=v ..."
        for i in range(0, len(kv), 2):
            ev += " %s=%s" % (kv[i], kv[i + 1])
        self.node.log(ev)

    # -- from the node's MQTT callback -----------------------------------
    def sealed(self, msg):
        """A market notice as received: handled (notice) only if the domain
        authority sealed it (shared/notice.py); else logged as bad-notice."""
        gc.collect()  # the check's big ints fill the small holes first
        try:
            m = notice.open_notice(msg, self.node.authority, False)
        except errors.TLError as e:
            self._log("bad-notice", "reason", e.reason)
            return
        self.notice(m)

    def notice(self, m):
        """Every reply the gateway sends this device: True for a market
        notice (MATCH, ACCOUNT, ENDED), handled here; a rejection of the
        open DEMAND frees the buyer; the rest is the node's."""
        k = m[0]
        if k <= _REJECT:
            if k == _REJECT and self.dem and self.dem[1] == m.get(_SEQ):
                self.dem = None  # refused: demand again once the balance covers it
            return False
        try:
            if k == _ACCOUNT:
                b, g = m[_BALANCE], m[_HEIGHT] + 0
                if g < self.hgt:  # sealed, but older than one already read
                    self._log("bad-notice", "reason", "stale", "height", g)
                    return True
                self._log("balance=%d" % b, "height", g)
                self.bal, self.hgt = b, g
                return True
            a = _b(m[_AGREEMENT], 16)
            h = a.hex()
            if self.dem and self.dem[0] == a:
                self.dem = None  # a waiting demand expired, or it became this agreement
            if k == _ENDED:
                self._log("ended", "agreement", h[:8], "refund", m[_REFUND] + 0)
                for i in range(_SLOTS):
                    s = self.slots[i]
                    if s and s[_A] == a:
                        s[_Q] = 0  # the supplier stops, the buyer unsubscribes
                        if s[_R] == _SUPPLY:
                            self.slots[i] = None
                return True
            r = m[_ROLE]
            key = _b(m[_CONTRACT], 16) if r == "supplier" else _b(m[_SUPPLIER_KEY], 33)
            q, iv = m[_QUANTITY], m[_INTERVAL]
            o = (m[_HEIGHT] + 0, m[_ORDER] + 0)
            nx = m.get(_NEXT)  # told again after a restart: the first index not committed
            n0 = 0 if nx is None else nx + 0
            if q < 1 or iv < 1 or r not in ("supplier", "buyer"):
                raise ValueError("match")
            if o <= self.mk:  # sealed, but not newer than one acted on: a replay
                self._log("match-refused", "agreement", h[:8], "reason", "replay",
                          "height", o[0])
                return True
            self.mk = o
            flash.write(self.MARK, ("%s %d %d" % (self.au, o[0], o[1])).encode())
            self._log("match" if nx is None else "resume", "role", r, "agreement", h[:8],
                      "price", m[_PRICE] + 0, "quantity", q)
            free = -1
            for i in range(_SLOTS):
                s = self.slots[i]
                if s is None:
                    free = i
                elif s[_A] == a:
                    return True  # told twice
            if free < 0 or nx is not None and r == "supplier":
                # busy, or told again after its own restart (the readings it had not
                # committed are gone with the RAM): a supplier closes it, so the
                # buyer's escrow comes back now
                seq = self.node.submit(_CLOSE, {1: a}) if r == "supplier" else None
                self._log("match-refused", "agreement", h[:8], "reason",
                          "busy" if free < 0 else "restarted", "close", seq)
                return True
            # tl/<domain>/data/<supplier hex>/<agreement hex> (shared/topics.py,
            # dropped after start-up: tl/<domain>/ from the node's tl/<domain>/tx);
            # a device publishes data only under its own id
            sup = self.node.wallet.hex if r == "supplier" else _b(m[_SUPPLIER], 16).hex()
            s = [a, (self.node.tx_topic[:-2] + "data/" + sup + "/" + h).encode(),
                 h[:8], q, n0, key, _BUY]
            if r == "supplier":
                s[_R] = _SUPPLY
                s += (iv, self.t + iv + 1, stream.Batch(), 0)
            else:
                s.append(self.t + m[_LEFT])
            self.slots[free] = s
        except Exception as e:  # a malformed notice must not stop the node
            self._log("bad-notice", "error", repr(e))
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
                if s[_R] == _BUY:
                    s[_R] = _BUYING  # restored by the client after a reconnect
                    self._log("listen", "agreement", s[_H], "granted",
                              nd.client.subscribe(s[_T], 1))
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
