"""Compact MQTT 3.1.1 client for the light node (MicroPython: ESP32, Pico W, Unix port).

Protocol only: no retry policy here (see firmware/mqtt_robust.py).

Design (after micropython-lib's umqtt.simple, with its known pains fixed):
- reused buffers: each outbound packet is assembled in one bytearray and sent with
  one write (no Nagle stall between its pieces; TCP_NODELAY where available),
  PUBACK is a template, reads of small fields go to a 64-byte scratch buffer;
- every blocking socket call is bounded by `socket.settimeout(timeout)`, and
  `check_msg()` polls with a zero timeout, so a hung network never blocks forever;
- keepalive is enforced: PINGREQ after keepalive/2 without outbound traffic (or
  without inbound traffic), connection declared dead (OSError ETIMEDOUT) after
  keepalive*1.5 without any inbound packet;
- QoS 1 publishes are not blocking: they sit in a bounded table (packet id ->
  message) until their PUBACK arrives; `pending()` counts them;
- an inbound PUBLISH larger than `max_packet` is skipped in small chunks without
  being allocated (still PUBACKed), counted in `dropped_oversize`;
- untrusted input is checked with explicit tests, never `assert`.

Errors: socket/connection problems raise OSError; protocol-level refusals raise
MQTTError(code): CONNACK return codes 1..5, ERR_SUBACK (0x80) for a refused
subscription, ERR_PROTOCOL for a malformed or unexpected packet, ERR_FULL when the
unacked table is full.
"""

import errno
import select
import socket
import struct
import sys
import time

try:
    from micropython import const
except ImportError:  # CPython (tools may import the constants)

    def const(x):
        return x


try:
    ticks_ms = time.ticks_ms
    ticks_diff = time.ticks_diff
    ticks_add = time.ticks_add
    sleep_ms = time.sleep_ms
except AttributeError:  # CPython

    def ticks_ms():
        return int(time.monotonic() * 1000)

    def ticks_diff(a, b):
        return a - b

    def ticks_add(a, b):
        return a + b

    def sleep_ms(ms):
        time.sleep(ms / 1000)


_ETIMEDOUT = errno.ETIMEDOUT
_ECONNRESET = errno.ECONNRESET
_ENOTCONN = errno.ENOTCONN

# MQTTError codes besides the CONNACK return codes 1..5
ERR_SUBACK = const(0x80)  # subscription refused by the broker
ERR_PROTOCOL = const(0x101)  # malformed / unexpected packet from the broker
ERR_FULL = const(0x102)  # unacked QoS 1 table is full

_SKIP_CHUNK = const(64)
_MAX_RL = const(268435455)  # largest remaining length 4 bytes can encode

_PINGREQ = b"\xc0\x00"
_DISCONNECT = b"\xe0\x00"


def _nodelay(sock):
    """TCP_NODELAY where the port has it (ESP32; Linux for the Unix port, which
    lacks the constants); lwip ports without it keep Nagle."""
    opt = getattr(socket, "TCP_NODELAY", 1 if sys.platform == "linux" else 0)
    if opt:
        try:
            sock.setsockopt(getattr(socket, "IPPROTO_TCP", 6), opt, 1)
        except (OSError, TypeError, ValueError):
            pass


class MQTTError(Exception):
    """MQTT protocol error; `code` is numeric (CONNACK code, ERR_SUBACK, ...)."""

    def __init__(self, code, msg=None):
        if msg:
            super().__init__(code, msg)
        else:
            super().__init__(code)
        self.code = code


def _b(s):
    return s.encode() if isinstance(s, str) else s


class MQTTClient:
    def __init__(self, client_id, server, port=1883, user=None, password=None,
                 keepalive=60, clean_session=True, max_packet=4096,
                 timeout=5, max_unacked=16, send_buf=384):
        if not 0 <= keepalive <= 65535:
            raise ValueError("keepalive")
        self.client_id = _b(client_id)
        self.server = server
        self.port = port
        self.user = _b(user) if user is not None else None
        self.password = _b(password) if password is not None else None
        self.keepalive = keepalive
        self.clean_session = clean_session
        self.max_packet = max_packet
        self.timeout = timeout  # seconds, bound on every blocking socket call
        self.max_unacked = max_unacked
        self.sock = None
        self._poll = None
        self.cb = None
        self.lw_topic = None
        self.lw_msg = None
        self.lw_qos = 0
        self.lw_retain = False
        self._pid = 0
        self._seq = 0
        self._unacked = {}  # pid -> [seq, topic, msg, retain]
        self._suback = None  # (pid, granted) of the last SUBACK / UNSUBACK
        self._last_tx = 0
        self._last_rx = 0
        self._ping_out = False
        # counters (reported by the node loop / bench)
        self.dropped_oversize = 0
        self.pings = 0
        self.pongs = 0
        # reused buffers
        self._sbuf = bytearray(send_buf if send_buf > 16 else 16)  # packet assembly
        self._sn = 0  # bytes in _sbuf
        self._ack = bytearray(b"\x40\x02\x00\x00")  # PUBACK template
        self._scratch = bytearray(_SKIP_CHUNK)  # small reads, skipping

    # ------------------------------------------------------------ configuration
    def set_callback(self, cb):
        """cb(topic: bytes, msg: bytes, retained: bool) for every inbound PUBLISH."""
        self.cb = cb

    def set_last_will(self, topic, msg, retain=False, qos=0):
        if qos not in (0, 1, 2):
            raise ValueError("qos")
        topic = _b(topic)
        if not topic:
            raise ValueError("topic")
        self.lw_topic = topic
        self.lw_msg = _b(msg)
        self.lw_qos = qos
        self.lw_retain = retain

    def pending(self):
        """Number of QoS 1 messages published but not yet acknowledged."""
        return len(self._unacked)

    def is_connected(self):
        return self.sock is not None

    # ------------------------------------------------------------ low level I/O
    def _write(self, buf, n=-1):
        sock = self.sock
        if sock is None:
            raise OSError(_ENOTCONN)
        if n < 0:
            n = len(buf)
        try:
            w = sock.write(buf if n == len(buf) else memoryview(buf)[:n])
            if w is None:
                w = 0
            if w < n:  # partial write: finish it (each call bounded by the timeout)
                mv = memoryview(buf)
                while w < n:
                    k = sock.write(mv[w:n])
                    if not k:
                        raise OSError(_ETIMEDOUT)
                    w += k
        except OSError:
            self.close()
            raise
        self._last_tx = ticks_ms()

    # A packet is assembled in _sbuf and goes out in one write (no Nagle delay
    # between its pieces); only a payload larger than _sbuf is written apart.
    def _flush(self):
        n = self._sn
        self._sn = 0
        if n:
            self._write(self._sbuf, n)

    def _put(self, data):
        n = len(data)
        i = self._sn
        buf = self._sbuf
        if i + n > len(buf):
            self._flush()
            i = 0
            if n > len(buf):
                self._write(data)
                return
        buf[i:i + n] = data
        self._sn = i + n

    def _put_byte(self, b):
        if self._sn >= len(self._sbuf):
            self._flush()
        self._sbuf[self._sn] = b
        self._sn += 1

    def _put_u16(self, v):
        self._put_byte(v >> 8)
        self._put_byte(v & 0xFF)

    def _put_str(self, s):
        self._put_u16(len(s))
        if s:
            self._put(s)

    def _put_header(self, b0, rl):
        """Start a packet: type byte and remaining length (at most 4 bytes)."""
        if rl > _MAX_RL:
            raise ValueError("packet too large")
        self._sn = 0
        self._put_byte(b0)
        while True:
            d = rl & 0x7F
            rl >>= 7
            self._put_byte(d | 0x80 if rl else d)
            if not rl:
                return

    def _read(self, n):
        """Exactly n bytes (bytes object) or OSError."""
        try:
            data = self.sock.read(n)
            if data is None:
                raise OSError(_ETIMEDOUT)
            if len(data) < n:
                raise OSError(_ECONNRESET if not data else _ETIMEDOUT)
        except OSError:
            self.close()
            raise
        return data

    def _read_into(self, buf, n):
        """Fill buf[:n] exactly or raise OSError."""
        got = 0
        mv = memoryview(buf)
        try:
            while got < n:
                k = self.sock.readinto(mv[got:n], n - got)
                if k is None:
                    raise OSError(_ETIMEDOUT)
                if k == 0:
                    raise OSError(_ECONNRESET)
                got += k
        except OSError:
            self.close()
            raise

    def _read_byte(self):
        self._read_into(self._scratch, 1)
        return self._scratch[0]

    def _read_u16(self):
        self._read_into(self._scratch, 2)
        return (self._scratch[0] << 8) | self._scratch[1]

    def _read_len(self):
        """Remaining length: at most 4 bytes (MQTT-2.2.3), else protocol error."""
        n = 0
        sh = 0
        for _ in range(4):
            b = self._read_byte()
            n |= (b & 0x7F) << sh
            if not b & 0x80:
                return n
            sh += 7
        self._fail(ERR_PROTOCOL)

    def _skip(self, n):
        buf = self._scratch
        while n > 0:
            k = n if n < _SKIP_CHUNK else _SKIP_CHUNK
            self._read_into(buf, k)
            n -= k

    def _fail(self, code):
        """Broker violated the protocol: drop the connection, raise MQTTError."""
        self.close()
        raise MQTTError(code)

    # ------------------------------------------------------------ connection
    def close(self):
        """Drop the socket without DISCONNECT (the broker will publish the will)."""
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
        self.sock = None
        self._poll = None
        self._sn = 0

    def connect(self, clean_session=None):
        """Open the TCP connection and do CONNECT/CONNACK. Returns session_present."""
        self.close()
        if clean_session is None:
            clean_session = self.clean_session
        addr = socket.getaddrinfo(self.server, self.port, 0, socket.SOCK_STREAM)[0][-1]
        sock = socket.socket()
        self.sock = sock
        try:
            sock.settimeout(self.timeout)
            _nodelay(sock)
            sock.connect(addr)
            flags = 0x02 if clean_session else 0
            rl = 10 + 2 + len(self.client_id)
            if self.lw_topic:
                flags |= 0x04 | (self.lw_qos << 3) | (0x20 if self.lw_retain else 0)
                rl += 4 + len(self.lw_topic) + len(self.lw_msg)
            if self.user is not None:
                flags |= 0x80
                rl += 2 + len(self.user)
                if self.password is not None:
                    flags |= 0x40
                    rl += 2 + len(self.password)
            self._put_header(0x10, rl)
            self._put(b"\x00\x04MQTT\x04")
            self._put_byte(flags)
            self._put_u16(self.keepalive)
            self._put_str(self.client_id)
            if self.lw_topic:
                self._put_str(self.lw_topic)
                self._put_str(self.lw_msg)
            if self.user is not None:
                self._put_str(self.user)
                if self.password is not None:
                    self._put_str(self.password)
            self._flush()
            # CONNACK: 0x20 0x02 flags rc (read is bounded by the socket timeout)
            buf = self._scratch
            self._read_into(buf, 4)
            if buf[0] != 0x20 or buf[1] != 0x02 or buf[2] & 0xFE:
                self._fail(ERR_PROTOCOL)
            if buf[3]:
                self._fail(buf[3])
            sp = bool(buf[2] & 1)
        except Exception:
            self.close()
            raise
        p = select.poll()
        p.register(sock, select.POLLIN)
        self._poll = p
        self._last_rx = self._last_tx = ticks_ms()
        self._ping_out = False
        return sp

    def disconnect(self):
        """Clean DISCONNECT (the broker discards the will), then close."""
        if self.sock is not None:
            try:
                self._write(_DISCONNECT)
            except OSError:
                pass
        self.close()

    def ping(self):
        self._write(_PINGREQ)
        self._ping_out = True
        self.pings += 1

    # ------------------------------------------------------------ publish
    def _next_pid(self):
        for _ in range(self.max_unacked + 2):
            self._pid = self._pid + 1 if self._pid < 65535 else 1
            if self._pid not in self._unacked:
                return self._pid
        raise MQTTError(ERR_FULL)

    def _send_publish(self, topic, msg, qos, retain, dup, pid):
        rl = 2 + len(topic) + len(msg) + (2 if qos else 0)
        self._put_header(0x30 | (qos << 1) | (0x08 if dup else 0) | (1 if retain else 0), rl)
        self._put_str(topic)
        if qos:
            self._put_u16(pid)
        if msg:
            self._put(msg)
        self._flush()

    def _store(self, topic, msg, retain):
        """Put a QoS 1 message in the unacked table; returns its packet id."""
        if len(self._unacked) >= self.max_unacked:
            raise MQTTError(ERR_FULL)
        pid = self._next_pid()
        self._seq += 1
        self._unacked[pid] = [self._seq, topic, msg, retain]
        return pid

    def publish(self, topic, msg, qos=0, retain=False):
        """Send a PUBLISH. Returns its packet id (0 for QoS 0).

        QoS 1 does not wait for the PUBACK: the message stays in the unacked table
        until it comes (check_msg / wait_msg). When the table is full this first
        processes inbound packets for up to `timeout` seconds, then raises
        MQTTError(ERR_FULL). If the send fails (OSError) a QoS 1 message stays
        in the table (pending) so a reconnect can resend() it."""
        if qos not in (0, 1):
            raise ValueError("qos")
        topic = _b(topic)
        msg = _b(msg)
        if not topic:
            raise ValueError("topic")
        if qos == 0:
            self._send_publish(topic, msg, 0, retain, False, 0)
            return 0
        if len(self._unacked) >= self.max_unacked and self.sock is not None:
            t0 = ticks_ms()
            while (len(self._unacked) >= self.max_unacked
                   and ticks_diff(ticks_ms(), t0) < self.timeout * 1000):
                self.wait_msg(100)
        pid = self._store(topic, msg, retain)
        self._send_publish(topic, msg, 1, retain, False, pid)
        return pid

    def unacked(self):
        """Packet ids of the unacked QoS 1 messages, oldest first."""
        u = self._unacked
        return sorted(u, key=lambda p: u[p][0])

    def resend(self, pid):
        """Send the unacked message `pid` again, same packet id, DUP flag set."""
        e = self._unacked[pid]
        self._send_publish(e[1], e[2], 1, e[3], True, pid)

    # ------------------------------------------------------------ subscribe
    def _wait_ack(self, pid):
        t0 = ticks_ms()
        lim = self.timeout * 1000
        while True:
            r = self._suback
            if r is not None and r[0] == pid:
                self._suback = None
                return r[1]
            left = lim - ticks_diff(ticks_ms(), t0)
            if left <= 0:
                self.close()
                raise OSError(_ETIMEDOUT)
            self._wait(left)

    def subscribe(self, topic, qos=1):
        """SUBSCRIBE and wait (bounded) for the SUBACK. Returns the granted QoS.

        Inbound PUBLISH packets arriving meanwhile go to the callback."""
        if qos not in (0, 1):
            raise ValueError("qos")
        topic = _b(topic)
        if not topic:
            raise ValueError("topic")
        pid = self._next_pid()
        self._put_header(0x82, 2 + 2 + len(topic) + 1)
        self._put_u16(pid)
        self._put_str(topic)
        self._put_byte(qos)
        self._flush()
        granted = self._wait_ack(pid)
        if granted == 0x80:
            raise MQTTError(ERR_SUBACK)
        if granted > 2:
            self._fail(ERR_PROTOCOL)
        return granted

    def unsubscribe(self, topic):
        topic = _b(topic)
        pid = self._next_pid()
        self._put_header(0xA2, 2 + 2 + len(topic))
        self._put_u16(pid)
        self._put_str(topic)
        self._flush()
        self._wait_ack(pid)

    # ------------------------------------------------------------ receive
    def _keepalive(self):
        """PINGREQ when due; OSError(ETIMEDOUT) when the broker has gone quiet."""
        ka = self.keepalive * 1000
        if not ka or self.sock is None:
            return
        now = ticks_ms()
        rx_idle = ticks_diff(now, self._last_rx)
        if rx_idle >= ka + ka // 2:
            self.close()
            raise OSError(_ETIMEDOUT)
        if (ticks_diff(now, self._last_tx) >= ka // 2
                or (rx_idle >= ka // 2 and not self._ping_out)):
            self.ping()

    def _next_keepalive_ms(self):
        """Milliseconds until _keepalive() may have something to do."""
        ka = self.keepalive * 1000
        if not ka:
            return 60000
        now = ticks_ms()
        t = ka // 2 - ticks_diff(now, self._last_tx)
        rx = ticks_diff(now, self._last_rx)
        t2 = (ka // 2 - rx) if not self._ping_out else (ka + ka // 2 - rx)
        t = t if t < t2 else t2
        return t if t > 0 else 0

    def _process(self):
        """Read and handle one whole packet (poll said readable). Returns its type."""
        b0 = self._read_byte()
        rl = self._read_len()
        t = b0 & 0xF0
        if t == 0x30:
            self._recv_publish(b0, rl)
        elif t == 0x40:  # PUBACK
            if rl != 2:
                self._fail(ERR_PROTOCOL)
            pid = self._read_u16()
            self._unacked.pop(pid, None)
        elif t == 0xD0:  # PINGRESP
            if rl:
                self._fail(ERR_PROTOCOL)
            self._ping_out = False
            self.pongs += 1
        elif t == 0x90 or t == 0xB0:  # SUBACK / UNSUBACK
            if rl < 2 or (t == 0x90 and rl < 3):
                self._fail(ERR_PROTOCOL)
            pid = self._read_u16()
            code = 0
            if t == 0x90:
                code = self._read_byte()
                self._skip(rl - 3)  # we only ever subscribe one filter at a time
            else:
                self._skip(rl - 2)
            self._suback = (pid, code)
        else:  # CONNACK again, QoS 2 flow, reserved: none of them are valid here
            self._fail(ERR_PROTOCOL)
        self._last_rx = ticks_ms()
        return t

    def _recv_publish(self, b0, rl):
        qos = (b0 >> 1) & 3
        if qos > 1:  # we never subscribe with QoS 2; 3 is malformed
            self._fail(ERR_PROTOCOL)
        tl = self._read_u16()
        left = rl - 2 - tl - (2 if qos else 0)
        if left < 0 or tl == 0:
            self._fail(ERR_PROTOCOL)
        if rl > self.max_packet:
            self._skip(tl)
            pid = self._read_u16() if qos else 0
            self._skip(left)
            self.dropped_oversize += 1
            if qos:
                self._puback(pid)
            return
        topic = self._read(tl)
        pid = self._read_u16() if qos else 0
        msg = self._read(left) if left else b""
        if self.cb is not None:
            self.cb(topic, msg, bool(b0 & 1))
        # acknowledged once the callback has taken it: if the callback raises, the
        # message is not acked and the broker resends it (at least once)
        if qos:
            self._puback(pid)

    def _puback(self, pid):
        struct.pack_into("!H", self._ack, 2, pid)
        self._write(self._ack)

    def _drain(self, ms):
        """Process packets while data is there (the first poll waits up to ms)."""
        n = 0
        while n < 16 and self.sock is not None and self._poll.poll(ms if n == 0 else 0):
            self._process()
            n += 1
        return n

    def _wait(self, ms):
        """Process what already arrived, keep the connection alive, then wait up
        to ms for more. Returns the number of packets processed (bounded)."""
        if self.sock is None:
            raise OSError(_ENOTCONN)
        n = self._drain(0)
        self._keepalive()
        if n or ms <= 0 or self.sock is None:
            return n
        nxt = self._next_keepalive_ms()
        return self._drain(ms if ms < nxt else nxt)

    def check_msg(self):
        """Non-blocking: handle every packet already received (bounded), send a
        PINGREQ if due. Returns the number of packets processed."""
        return self._wait(0)

    def wait_msg(self, timeout_ms=None):
        """Block until at least one packet was processed or timeout_ms elapsed
        (None: no limit, but a dead connection still raises OSError)."""
        t0 = ticks_ms()
        while True:
            if timeout_ms is None:
                left = 60000
            else:
                left = timeout_ms - ticks_diff(ticks_ms(), t0)
                if left < 0:
                    left = 0
            n = self._wait(left)
            if n or (timeout_ms is not None and left == 0):
                return n
