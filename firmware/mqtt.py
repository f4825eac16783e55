"""Compact MQTT 3.1.1 client for the light node (MicroPython: ESP32, Pico W, Unix port).

After micropython-lib's umqtt.simple + umqtt.robust in one class, with their known
pains fixed, and written for a 64 KiB heap (few methods, few names: every function
and every distinct name costs heap once the module is loaded).

- QoS 0 and 1, clean session, optional user name and password. Every blocking
  socket call is bounded by `timeout` (int, seconds); each packet goes out in one
  write (TCP_NODELAY where the port has it).
- keepalive: PINGREQ after keepalive/2 without outbound traffic (or without inbound
  traffic); the connection is declared dead (OSError) after keepalive*1.5 without
  any inbound packet.
- QoS 1 publishes do not block: they wait in a bounded table (packet id -> packet)
  for their PUBACK; `pending()` counts them. When the table is full, publish()
  handles inbound packets for up to `timeout` seconds, then raises
  MQTTError(0x102).
- an inbound PUBLISH larger than `max_packet` is read and dropped 64 bytes at a
  time (never allocated), still PUBACKed, and counted in `dropped_oversize`.
- a lost connection (OSError) or a misbehaving broker (MQTTError) never raises out
  of publish(), subscribe() or check_msg(): the client goes offline and
  check_msg() / ensure_connected() reconnect once the backoff delay has passed
  (exponential from backoff_base_ms to backoff_max_ms, jittered down to half by
  os.urandom). Every (re)connect re-subscribes every subscription (even if the
  broker kept the session), then resends the unacked QoS 1 messages, lowest packet
  id first, with the same packet id and the DUP flag. Offline, QoS 1 publishes
  wait in the table; QoS 0 publishes are dropped.
- subscribe() remembers the filter, and when online sends it and waits (bounded)
  for its SUBACK: it returns the SUBACK code (granted QoS, or 0x80: refused), None
  when offline. A refused filter is kept: 3 s after a refusal check_msg()
  subscribes every filter again (until granted or unsubscribed): NATS's MQTT
  listener refuses QoS 1 SUBSCRIBEs for a while after a node of its cluster died,
  also those a reconnect restores. unsubscribe() forgets the filter at once (a
  reconnect no longer restores it) and when online sends UNSUBSCRIBE and waits
  (bounded) for its UNSUBACK. SUBSCRIBE and UNSUBSCRIBE always use packet id
  0xFFFF (one at a time); PUBLISH uses 1..0xFFFE.
- check_msg(ms=0) (alias wait_msg) handles the packets already there, or waits up
  to ms for some; the callback runs inside it. disconnect() sends DISCONNECT (the
  broker discards the will); a later check_msg() would connect again.
- untrusted input is checked with explicit tests, never `assert`.
- several brokers: `servers` is a list of (host, port), the one given first;
  each failed connect attempt moves to the next (round robin), so a board
  whose broker died reaches another one of its list at the next attempt,
  keeping its subscriptions and unacked QoS 1 messages (resent as after any
  reconnect) and everything the node keeps (outbox, seq).

Errors: MQTTError is an OSError whose code (args[0], errno) is the CONNACK return
code 1..5, 0x101 for a malformed or unexpected packet from the broker, or 0x102 when
the unacked table is full. connect() makes one attempt and raises on failure.
check_msg() never raises OSError or MemoryError: out of heap while a packet is
read or handled, the connection is dropped (the stream may be cut mid-packet) and
made again; the QoS 1 message that was not acknowledged is lost with a clean
session, and the node's resend of its transaction gets the receipt again.
Hooks: on_connect(session_present) after every (re)connect and restore;
on_disconnect(exc) when a connection that got its CONNACK is lost (exc is None
after disconnect()). Counters: reconnects (-1 before the first connect), failures
(failed connect attempts), resent, dropped_oversize, pongs (PINGRESPs).
"""

import os
import select
import socket
import sys
from time import sleep_ms, ticks_add, ticks_diff, ticks_ms

from micropython import const

_ECONNRESET = const(104)  # errno of our own OSErrors (Linux numbers)
_ENOTCONN = const(107)
_ETIMEDOUT = const(110)
_ERR_PROTOCOL = const(0x101)
_ERR_FULL = const(0x102)
_AGAIN_MS = const(3000)  # the filters are subscribed again this long after a refusal


class MQTTError(OSError):
    pass


def _s(x):
    # MQTT string: 2-byte length, then the UTF-8 bytes (x: str or bytes)
    if isinstance(x, str):
        x = x.encode()
    return len(x).to_bytes(2, "big") + x


class MQTTClient:
    _again = None  # ticks of the last refused SUBSCRIBE (None: none since); class-level
    # until one: an instance attribute more would grow every client's attribute table
    def __init__(self, client_id, server, port=1883, user=None, password=None,
                 keepalive=60, timeout=5, max_packet=4096, max_unacked=16,
                 backoff_base_ms=500, backoff_max_ms=30000):
        f, a = 0, b""  # CONNECT flags and fields for user name and password
        if user is not None:
            f, a = 0x80, _s(user)
            if password is not None:
                f, a = 0xC0, a + _s(password)
        self._id = (f, _s(client_id), a)
        self.servers = [(server, port)]
        self._srv = 0  # index in servers of the next connect attempt
        self.keepalive = keepalive
        self.timeout = timeout
        self.max_packet = max_packet
        self.max_unacked = max_unacked
        self.backoff_base_ms = backoff_base_ms
        self.backoff_max_ms = backoff_max_ms
        self.sock = self._poll = self.cb = self.on_connect = self.on_disconnect = None
        self._will = (0, b"")  # (CONNECT flags, will topic + message)
        self._subs = {}  # topic filter (MQTT string) -> qos
        self._unacked = {}  # packet id -> (first byte, rest of the PUBLISH)
        self._next = ticks_ms()  # next reconnect attempt
        self._pid = self._delay = self._rx = self._ping = self._suback = 0
        self.failures = self.resent = self.dropped_oversize = self.pongs = 0
        self.reconnects = -1

    def set_callback(self, cb):
        # cb(topic: bytes, msg: bytes, retained: 0/1) for every inbound PUBLISH
        self.cb = cb

    def set_last_will(self, topic, msg, retain=False, qos=0):
        if qos not in (0, 1, 2):
            raise ValueError("qos")
        self._will = (4 | qos << 3 | retain << 5, _s(topic) + _s(msg))

    def pending(self):
        return len(self._unacked)

    def is_connected(self):
        return self.sock is not None

    def _send(self, b0, body=b""):
        # One packet in one write: type byte, remaining length, body
        if not self.sock:
            raise OSError(_ENOTCONN)
        n = len(body)
        p = bytearray((b0,))
        while n > 0x7F:
            p.append(n & 0x7F | 0x80)
            n >>= 7
        p.append(n)
        p += body
        if self.sock.write(p) != len(p):
            raise OSError(_ETIMEDOUT)
        self._tx = ticks_ms()

    def _rd(self, n, skip=False):
        # Exactly n bytes, else OSError; skip: read them 64 at a time, keep none
        d = b""
        while n:
            k = min(n, 64) if skip else n
            d = self.sock.read(k)
            if not d or len(d) < k:  # None: timed out; b"": closed
                raise OSError(_ECONNRESET if d == b"" else _ETIMEDOUT)
            n -= k
        return d

    def connect(self):
        # One attempt: CONNECT/CONNACK, re-subscribe, resend the unacked QoS 1
        # messages. Returns session_present; on failure backs off and raises.
        if self.sock:
            self._lost(None)
        try:
            s = self.sock = socket.socket()
            s.settimeout(self.timeout)
            if getattr(socket, "TCP_NODELAY", sys.platform == "linux"):
                s.setsockopt(6, 1, 1)  # IPPROTO_TCP, TCP_NODELAY (Linux and lwIP)
            s.connect(socket.getaddrinfo(*self.servers[self._srv])[0][-1])
            ka = self.keepalive
            f, cid, a = self._id
            wf, w = self._will
            self._send(0x10, b"\x00\x04MQTT\x04" + bytes((2 | f | wf, ka >> 8, ka & 255))
                       + cid + w + a)
            r = self._rd(4)  # CONNACK
            if r[0] != 0x20 or r[1] != 2 or r[2] > 1:
                raise MQTTError(_ERR_PROTOCOL)
            if r[3]:
                raise MQTTError(r[3])
            self._poll = select.poll()
            self._poll.register(s, select.POLLIN)
            self._rx = ticks_ms()
            self._ping = 0
            for t, q in list(self._subs.items()):
                self._sub(t, q)
            u = self._unacked
            for pid in sorted(u):
                self._send(u[pid][0] | 8, u[pid][1])  # DUP
                self.resent += 1
        except Exception as e:
            self.failures += 1
            self._srv = (self._srv + 1) % len(self.servers)
            self._lost(e)
            raise
        self.reconnects += 1
        self._delay = 0
        if self.on_connect:
            self.on_connect(r[2])
        return r[2]

    def _lost(self, e):
        # Close, back off, and tell on_disconnect if the connection had been up
        up = self._poll
        try:
            self.sock.close()
        except Exception:
            pass
        self.sock = self._poll = None
        d = self._delay = min(self._delay * 2 or self.backoff_base_ms, self.backoff_max_ms)
        self._next = ticks_add(ticks_ms(), d - os.urandom(1)[0] * d // 512)
        if up and self.on_disconnect:
            self.on_disconnect(e)

    def disconnect(self):
        # Clean DISCONNECT (the broker discards the will), then close
        try:
            self._send(0xE0)
        except Exception:
            pass
        self._lost(None)

    def publish(self, topic, msg, qos=0, retain=False):
        # Returns the packet id (0 for QoS 0); never raises OSError (see above)
        if qos not in (0, 1):
            raise ValueError("qos")
        if not topic:
            raise ValueError("topic")
        if isinstance(msg, str):
            msg = msg.encode()
        body = _s(topic)
        pid = 0
        u = self._unacked
        if qos:
            t = ticks_add(ticks_ms(), self.timeout * 1000)
            while self.sock and len(u) >= self.max_unacked and ticks_diff(t, ticks_ms()) > 0:
                self.check_msg(100)  # PUBACKs free slots
            if len(u) >= self.max_unacked:
                raise MQTTError(_ERR_FULL)
            pid = self._pid
            while True:
                pid = pid % 0xFFFE + 1
                if pid not in u:
                    break
            self._pid = pid
            body += pid.to_bytes(2, "big")
        b0 = 0x30 | qos << 1 | retain
        body += msg
        if qos:
            u[pid] = (b0, body)
        if self.sock:
            try:
                self._send(b0, body)
            except OSError as e:
                self._lost(e)
        return pid

    def _sub(self, t, qos):
        # SUBSCRIBE one filter (MQTT string), or UNSUBSCRIBE it (qos None); wait
        # (bounded) for the SUBACK / UNSUBACK
        self._suback = None
        if qos is None:
            self._send(0xA2, b"\xff\xff" + t)
        else:
            self._send(0x82, b"\xff\xff" + t + bytes((qos,)))
        d = ticks_add(ticks_ms(), self.timeout * 1000)
        while self._suback is None:
            w = ticks_diff(d, ticks_ms())
            if w <= 0:
                raise OSError(_ETIMEDOUT)
            self._wait(w)
        if self._suback > 2 and qos is not None:  # refused: kept, all sent again later
            self._again = ticks_ms()
        return self._suback

    def subscribe(self, topic, qos=1):
        # Kept and restored on every reconnect; sent now if online. Returns the
        # SUBACK code (granted QoS, or 0x80: refused, asked again later), None offline.
        if qos not in (0, 1):
            raise ValueError("qos")
        t = _s(topic)
        self._subs[t] = qos
        if self.sock:
            try:
                return self._sub(t, qos)
            except OSError as e:
                self._lost(e)

    def unsubscribe(self, topic):
        # Forgotten at once (no longer restored on reconnect); sent now if online
        t = _s(topic)
        self._subs.pop(t, None)
        if self.sock:
            try:
                self._sub(t, None)
            except OSError as e:
                self._lost(e)

    def _wait(self, ms):
        # Handle inbound packets (up to 16, returning once some came), PINGREQ when
        # due, for up to ms. Raises OSError / MQTTError.
        t = ticks_add(ticks_ms(), ms)
        n = 0
        while n < 16 and self._poll:  # (the callback may have disconnected)
            now = ticks_ms()
            h = self.keepalive * 500  # half the keepalive, ms (0: none)
            rx = ticks_diff(now, self._rx)
            if h and (ticks_diff(now, self._tx) >= h or rx >= h and not self._ping):
                self._send(0xC0)  # PINGREQ
                self._ping = 1
            w = 0 if n else ticks_diff(t, now)
            if not self._poll.poll(min(max(w, 0), 200)):
                if h and rx >= 3 * h:  # nothing in for keepalive*1.5 (and nothing queued)
                    raise OSError(_ETIMEDOUT)
                if w <= 0:
                    break
                continue
            b0 = self._rd(1)[0]
            rl = sh = 0
            while True:  # remaining length: at most 4 bytes
                b = self._rd(1)[0]
                rl |= (b & 0x7F) << sh
                if b < 0x80:
                    break
                sh += 7
                if sh > 21:
                    raise MQTTError(_ERR_PROTOCOL)
            self._rx = ticks_ms()
            if b0 & 0xF0 == 0x30:  # PUBLISH
                qos = b0 >> 1 & 3
                big = rl > self.max_packet
                tl = int.from_bytes(self._rd(2), "big")
                rl -= 2 + tl + 2 * qos  # length of the message
                if qos > 1 or not tl or rl < 0:
                    raise MQTTError(_ERR_PROTOCOL)
                topic = self._rd(tl, big)
                pid = self._rd(2 * qos)
                msg = self._rd(rl, big)
                if big:
                    self.dropped_oversize += 1
                elif self.cb:
                    # acked once the callback took it (if it raises: no PUBACK)
                    self.cb(topic, msg, b0 & 1)
                if qos:
                    self._send(0x40, pid)  # PUBACK
            elif b0 == 0x40 and rl == 2:  # PUBACK
                self._unacked.pop(int.from_bytes(self._rd(2), "big"), None)
            elif b0 == 0x90 and rl == 3:  # SUBACK (one filter per SUBSCRIBE)
                self._suback = self._rd(3)[2]
            elif b0 == 0xB0 and rl == 2:  # UNSUBACK
                self._rd(2)
                self._suback = 0
            elif b0 == 0xD0 and not rl:  # PINGRESP
                self._ping = 0
                self.pongs += 1
            else:  # CONNACK again, QoS 2 flow, bad length...: not valid here
                raise MQTTError(_ERR_PROTOCOL)
            n += 1
        return n

    def check_msg(self, ms=0):
        # Handle inbound packets for up to ms (returns once some came). Offline:
        # reconnect when the backoff delay has passed, else sleep within ms.
        # Returns the number of packets handled.
        t = ticks_add(ticks_ms(), ms)
        while not self.sock:
            d = ticks_diff(self._next, ticks_ms())
            if d <= 0:
                try:
                    self.connect()
                    return 0
                except OSError:
                    pass
            else:
                w = ticks_diff(t, ticks_ms())
                if w <= 0:
                    return 0
                sleep_ms(min(d, w))
        try:
            a = self._again
            if a is not None and ticks_diff(ticks_ms(), a) >= _AGAIN_MS:
                self._again = None
                for s, q in list(self._subs.items()):
                    self._sub(s, q)
            return self._wait(ticks_diff(t, ticks_ms()))
        except (OSError, MemoryError) as e:  # out of heap mid-packet: the stream is cut too
            self._lost(e)
            return 0

    wait_msg = check_msg

    def ensure_connected(self, timeout_ms):
        # Retry (with backoff) until connected or timeout_ms elapsed
        t = ticks_add(ticks_ms(), timeout_ms)
        while not self.sock:
            w = ticks_diff(t, ticks_ms())
            if w <= 0:
                return False
            self.check_msg(w)
        return True
