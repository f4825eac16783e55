"""The light node loop: read a sensor through the board, sign a transaction,
publish it, and check the gateway's receipt against a signed block header.

Parts are injected (board, wallet, MQTT client, config), so the loop runs the
same on the unix virtual board, an ESP32 or a Pico W. Log lines go through
`log` and have the form `<event> key=value ...`; `make run` shows them live.

A board whose config has an "offer" or a "need" also gets a `market` part
(firmware/market.py, built by firmware/startup.py; a plain board never loads
it): it sells or buys readings off-chain (docs/MARKET.md) instead of putting
its own readings on chain. The node shows it every message first (it keeps
the data-topic readings and the market notices, and watches for a rejected
DEMAND) and runs its step every pass.

Replies (docs/PROTOCOL.md): a receipt carries its own proof (format 2: the
header with its commit certificate, k votes of the domain's validator set,
docs/CONSENSUS.md; format 1, older chains: a header signed by the domain
authority); config "validators" (public keys, hex) and "threshold" name the
set, else the authority alone is the set (k = 1). A rejection is a COSE_Sign1
by the authority, and
the node acts on one only once its signature checks, so nobody else who can
write the rx topic makes it drop a transaction (an unsigned or forged
rejection is logged and changes nothing). A rejection that carries a retry
hint (mempool-full, rate-limited) is not final: the transaction stays in the
outbox and nothing is sent for a while (bounded exponential backoff, at least
the hint), then the outbox goes out again oldest first, so a newer seq never
overtakes the refused one.

Heap (64 KiB): a reply is decoded as views into the received message (no copy
of the signed header), the signature is checked only for a reply about a
transaction in the outbox, and the heap is collected just before the check,
so its big ints fill the small free holes first and the larger allocations
still find room.
"""
import gc
import time

from micropython import const

from firmware import flash
from firmware.flash import Outbox, SeqStore
from firmware.mqtt import MQTTError
from shared import cose, errors, messages, tx

REGISTERED_FILE = "registered"
RESEND_MS = const(5000)
# QoS 1 transactions awaiting their PUBACK at a time: the client holds each
# (~250 B); a whole outbox in flight after an outage (32) would leave a
# receipt check, run in the client's wait for PUBACKs, no heap
_IN_FLIGHT = const(4)
CONNECT_WAIT_MS = const(10000)
_NOTICE_BYTE = const(0xD2)  # shared/notice.py NOTICE_BYTE: sealed by the authority
_M_RETRY = const(12)  # shared/messages_gateway.py M_RETRY: retry after (ms), not final
_BACKOFF_MIN_MS = const(500)
_BACKOFF_MAX_MS = const(16000)
_OTA_VERIFIED = const(-1)  # Node.unconfirmed: a receipt verified on a new version
_OTA_CONFIRMED = const(-2)  # Node.unconfirmed: the new version confirmed, to report


class Node:
    def __init__(self, board, config, wallet, client, log=print):
        self.board = board
        self.wallet = wallet
        self.client = client
        self.log = log
        self.domain = config["domain"]
        self.authority = bytes.fromhex(config["authority"])
        # loaded here, at start-up, where it packs low (a receipt's check needs
        # it; loaded at the first receipt it would land in a fragmented heap)
        from shared import commit

        v = config.get("validators")  # else the authority alone, k = 1: one code path
        v = sorted(bytes.fromhex(x) for x in v) if v else [self.authority]
        k = int(config.get("threshold", len(v) // 2 + 1))
        self.validators = (k, v, commit.valset_hash(k, v))
        self.interval_ms = int(config.get("interval_ms", 2000))
        self.fee = int(config.get("fee", 0))
        self.seq = SeqStore()
        self.outbox = Outbox()
        # claimed domains admit devices by the owner's claim: no self-registration
        self.registered = flash.exists(REGISTERED_FILE) or not config.get("self_register", True)
        from shared import topics  # here only: firmware/main.py drops it after start-up

        self.tx_topic = topics.tx(self.domain)
        self.rx_topic = topics.rx(self.domain, wallet.hex)
        self._rx = self.rx_topic.encode()  # as the client hands topics over
        self.status_topic = topics.status(self.domain, wallet.hex)
        # firmware updates (docs/OTA.md): the announcements for this board;
        # what the node does with them is firmware/otanode.py, loaded on use
        self._fw = topics.firmware(self.domain, config.get("board", "unix")).encode()
        self.fw_next = time.ticks_ms()  # ticks before which no announcement is looked at
        self.fw_msg = None  # the last announcement, for the next step
        # an unconfirmed new version: confirmed by the first verified receipt,
        # reset if none came in ota_confirm_s (the boot file rolls back). Kept
        # as its deadline alone (a small int, no heap: the state file's fields
        # held here cost a just-updated board ~350 B at its receipt checks);
        # firmware/otanode.py reads the state file again to confirm it
        st = flash.read("ota/state")
        self.unconfirmed = time.ticks_add(time.ticks_ms(), int(
            config.get("ota_confirm_s", 120)) * 1000) if st and b" u " in st else None
        st = None
        self.receipts = 0
        self.rejections = 0
        self._next_reading = time.ticks_ms()
        self._announced = False
        self._backoff = 0  # ms: the last hold after a retryable refusal (0: none since a receipt)
        self._wait = 0  # ms: a hold to start at the next step
        self._hold = None  # ticks until which the outbox sends nothing
        self.market = None  # firmware/market.py on a board with an offer or a need

    # -- lifecycle -------------------------------------------------------
    def start(self):
        c = self.client
        c.set_last_will(self.status_topic, b"offline", retain=True, qos=1)
        c.set_callback(self._on_message)
        while not c.ensure_connected(CONNECT_WAIT_MS):
            self.log("broker unreachable, retrying")
            self._due()
        c.subscribe(self.rx_topic, 1)  # the client re-subscribes after a reconnect
        c.subscribe(self._fw, 1)
        self.log("online id=%s pending=%d" % (self.wallet.hex, len(self.outbox)))
        if not self.registered and not len(self.outbox):
            self.submit(tx.TYPE_REGISTER, {1: self.wallet.public_key})
        if flash.exists("ota/failed") or flash.exists("ota/report"):
            self._ota("report")  # a rollback by the boot file, a confirmation not yet on chain

    def step(self, now=None):
        """One pass: handle incoming messages, announce ourselves after a
        (re)connect, take a reading when due, send what is unconfirmed.
        Returns quickly; never blocks on a dead broker. `now` (ticks_ms;
        tests) defaults to the clock.

        Transactions go out only from the outbox, oldest seq first: the
        gateway refuses a seq below one it has committed (replay), so a newer
        transaction must never overtake an unconfirmed older one. After a
        reconnect everything unconfirmed is due at once (what was in flight
        may have died with the gateway). After a retryable refusal nothing
        goes out until the hold ends."""
        c = self.client
        c.check_msg()
        self._due()
        if not c.is_connected():
            self._announced = False
        elif not self._announced:
            self._announced = self._send(self.status_topic, b"online", True)
            if self._announced:
                self.outbox.unsend()
        if now is None:
            now = time.ticks_ms()
        if self._wait:
            self._hold = time.ticks_add(now, self._wait)
            self._wait = 0
        if self._hold is not None and time.ticks_diff(now, self._hold) >= 0:
            self._hold = None
        if self.market:
            self.market.step(now)
        elif self.registered and time.ticks_diff(now, self._next_reading) >= 0:
            self._next_reading = time.ticks_add(now, self.interval_ms)
            self.take_reading()
        if self._hold is None and c.is_connected():
            for seq in self.outbox.due(now, RESEND_MS, time.ticks_diff):
                if c.pending() >= _IN_FLIGHT:
                    break  # the rest in a later pass, as PUBACKs come back
                msg = self.outbox.get(seq)
                if msg is None:
                    self.outbox.remove(seq)
                elif self._send(self.tx_topic, msg, False):
                    self.outbox.mark_sent(seq, now)
                else:
                    break

    def run(self, steps=None, pause_ms=20):
        self.start()
        n = 0
        while steps is None or n < steps:
            self.step()
            time.sleep_ms(pause_ms)
            n += 1

    # -- transactions ----------------------------------------------------
    def _send(self, topic, msg, retain):
        """Publish at QoS 1 if the link can take it now; False leaves the
        message to a later pass (the outbox keeps transactions in flash)."""
        if not self.client.is_connected():
            return False
        try:
            self.client.publish(topic, msg, qos=1, retain=retain)
            return True
        except (OSError, MQTTError):
            return False

    def submit(self, type_, body):
        """Sign a transaction and queue it in the outbox; step() sends it."""
        if self.outbox.full():
            self.log("outbox-full skipped type=%d" % type_)
            return None
        seq = self.seq.next()
        self.outbox.put(seq, self.wallet.sign_tx(type_, self.domain, seq, self.fee, body))
        return seq

    def take_reading(self):
        value, scale, channel = self.board.read_sensor()
        seq = self.submit(tx.TYPE_READING, {1: value, 2: scale, 3: channel})
        if seq is not None:
            self.log("reading seq=%d value=%d scale=%d" % (seq, value, scale))

    # -- replies from the gateway ----------------------------------------
    def _on_message(self, topic, msg, retained):
        try:
            if topic == self._fw:  # looked at by a later step, outside this callback
                if self.fw_msg:
                    self.log("ota-ignored reason=flood")
                self.fw_msg = (msg, retained) if len(msg) < 128 else (b"", 0)
                return
            if topic != self._rx:  # not a reply to us: a market board's data topic, or
                if self.market:   # a broker's stray retained message (never trusted)
                    self.market.data(topic, msg)
                return
            s1 = None
            if msg[0] == _NOTICE_BYTE:  # sealed by the authority: a rejection or a notice
                s1 = cose.parse1(msg, False)  # views into msg, checked below
                m = messages.parse(s1.payload, False)
                if m[messages.M_KIND] != messages.KIND_REJECT:
                    s1 = m = None
                    if self.market:  # a market notice (a plain board has no use for one)
                        self.market.sealed(msg)
                    return
            else:
                m = messages.parse(msg, False)  # views into msg: no copy of the header
                seq = m[messages.M_KIND]  # (the callback's frame: few locals, heap)
                if seq != messages.KIND_RECEIPT:  # not the authority's: ignored
                    raise errors.ProofError("unsealed-notice" if seq > messages.KIND_REJECT
                                            else "unsigned-rejection")
            seq = m.get(messages.M_SEQ)
            stored = self.outbox.get(seq) if isinstance(seq, int) else None
            if stored is None or tx.tx_id(stored) != m[messages.M_TX]:
                return  # not one of ours (or already confirmed)
            stored = None  # the check below needs the heap more
            gc.collect()  # the check's big ints fill the small holes first
            if s1 is None:
                stored = messages.check_receipt(m, self.authority, self.validators)["height"]
                self.receipts += 1
                self._backoff = 0
                self._confirmed(seq)
                if self.unconfirmed is not None and self.unconfirmed >= 0:
                    # a new version reached the gateway: confirmed by the next
                    # step (not in this callback: heap)
                    self.unconfirmed = _OTA_VERIFIED
                gc.collect()
                self.log("receipt-verified seq=%d height=%d status=%d free=%d" % (
                    seq, stored, m[messages.M_STATUS], gc.mem_free()))
            else:
                cose.check1(self.authority, s1)  # a forged rejection stops here
                s1 = None
                self._rejected(seq, m)
        except errors.TLError as e:
            self.log("bad-reply reason=%s detail=%s" % (e.reason, e.detail))

    def _due(self):
        # unconfirmed: its deadline (ticks, >= 0); _OTA_VERIFIED: a receipt
        # verified, confirm it; _OTA_CONFIRMED: report it on chain
        u = self.unconfirmed
        if u is not None and (u < 0 or time.ticks_diff(time.ticks_ms(), u) >= 0):
            self._ota("due")
        if self.fw_msg and time.ticks_diff(time.ticks_ms(), self.fw_next) >= 0:
            m, self.fw_msg = self.fw_msg, None
            self._ota("offer", *m)

    def _ota(self, what, *args):
        # firmware/otanode.py, loaded for the call and dropped after it
        import firmware

        gc.collect()
        from firmware import otanode

        try:
            getattr(otanode, what)(self, *args)
        finally:
            __import__("sys").modules.pop("firmware.otanode", None)
            firmware.__dict__.pop("otanode", None)

    def _rejected(self, seq, m):
        """A rejection of outbox entry `seq`, signed by the authority."""
        reason = m[messages.M_REASON]
        self.rejections += 1
        after = m.get(_M_RETRY)
        if isinstance(after, int) and after >= 0:  # the gateway is busy: same message later
            if not self._wait and self._hold is None:  # one hold per refused burst
                b = max(self._backoff * 2, after, _BACKOFF_MIN_MS)
                self._backoff = b = min(b, _BACKOFF_MAX_MS)
                self._wait = b + time.ticks_ms() % (b // 4 + 1)  # jitter: boards spread out
            self.outbox.mark_sent(seq, None)  # due again once the hold ends
            gc.collect()
            self.log("retry seq=%d reason=%s after=%d free=%d" % (
                seq, reason, self._wait or self._backoff, gc.mem_free()))
            return
        gc.collect()
        self.log("rejected seq=%d reason=%s free=%d" % (seq, reason, gc.mem_free()))
        if self.market:  # a final refusal of its open DEMAND frees the buyer
            self.market.notice(m)
        if reason == errors.ALREADY_REGISTERED:
            self._confirmed(seq)
        else:
            self.outbox.remove(seq)

    def _confirmed(self, seq):
        # the gateway answers only devices it knows: any receipt means registered
        if not self.registered:
            self.registered = True
            flash.write(REGISTERED_FILE, b"1")
            self._next_reading = time.ticks_ms()
        self.outbox.remove(seq)
