"""Retry policy on top of the protocol client (firmware/mqtt.py).

RobustClient never blocks for long and never dies on a lost connection:
- a connection error (OSError, or MQTTError from a misbehaving broker) only marks
  the client offline; the next check_msg()/wait_msg()/ensure_connected() tries to
  reconnect when the backoff delay has elapsed (exponential, base..max, optional
  jitter from os.urandom);
- after every (re)connect it re-subscribes every subscription (even when the
  broker says session_present, which costs one SUBACK each and covers a broker
  that lost its state), then resends the unacked QoS 1 messages, oldest first,
  with the same packet id and the DUP flag;
- while offline, QoS 1 publishes go to the unacked table (bounded: MQTTError
  ERR_FULL when full) and are sent on reconnect; QoS 0 publishes are dropped and
  counted in `dropped_offline`.

One reconnect attempt blocks for at most `timeout` seconds per network step
(TCP connect, CONNACK, each SUBACK); DNS resolution is the port's own business.
Hooks: on_connect(session_present) after every restore, on_disconnect(exc) when
an established connection is lost. Counters: reconnects, failures (failed
attempts in total), resent, dropped_offline (plus the protocol client's).
"""

import os

from firmware.mqtt import (
    ERR_SUBACK,
    MQTTClient,
    MQTTError,
    _b,
    sleep_ms,
    ticks_add,
    ticks_diff,
    ticks_ms,
)


class RobustClient(MQTTClient):
    def __init__(self, *args, backoff_base_ms=500, backoff_max_ms=30000, jitter=True, **kw):
        super().__init__(*args, **kw)
        self.backoff_base_ms = backoff_base_ms
        self.backoff_max_ms = backoff_max_ms
        self.jitter = jitter
        self._subs = {}  # topic filter (bytes) -> qos
        self._delay = 0  # current backoff (ms); 0: next attempt right away
        self._next_try = ticks_ms()
        self.reconnects = 0  # successful reconnects (not counting the first connect)
        self.failures = 0  # failed connection attempts (in total)
        self.dropped_offline = 0
        self.resent = 0
        self.on_connect = None  # on_connect(session_present) after restore
        self.on_disconnect = None  # on_disconnect(exc) when the connection is lost
        self._ever = False  # connected at least once
        self._up = False  # connected and restored (on_disconnect is due when lost)

    # ------------------------------------------------------------ policy
    def _backoff(self):
        d = self._delay * 2 if self._delay else self.backoff_base_ms
        if d > self.backoff_max_ms:
            d = self.backoff_max_ms
        self._delay = d
        if self.jitter and d > 1:
            r = os.urandom(2)
            d = d // 2 + ((r[0] << 8) | r[1]) % (d // 2 + 1)  # uniform in [d/2, d]
        self._next_try = ticks_add(ticks_ms(), d)
        return d

    def next_retry_ms(self):
        """Milliseconds until the next reconnect attempt (0 when connected/due)."""
        if self.sock is not None:
            return 0
        t = ticks_diff(self._next_try, ticks_ms())
        return t if t > 0 else 0

    def _lost(self, exc):
        was = self._up
        self._up = False
        self.close()
        self._backoff()
        if was and self.on_disconnect is not None:
            self.on_disconnect(exc)

    def connect(self, clean_session=None):
        """One attempt: CONNECT, re-subscribe, resend unacked. Raises on failure
        (use ensure_connected() / check_msg() for the retrying loop)."""
        try:
            sp = super().connect(clean_session)
            for topic in list(self._subs):
                try:
                    MQTTClient.subscribe(self, topic, self._subs[topic])
                except MQTTError as e:
                    if e.code != ERR_SUBACK:
                        raise
                    self._subs.pop(topic)  # refused now: do not retry it forever
            for pid in self.unacked():
                self.resend(pid)
                self.resent += 1
        except (OSError, MQTTError) as e:
            self.failures += 1
            self._lost(e)
            raise
        if self._ever:
            self.reconnects += 1
        self._ever = True
        self._up = True
        self._delay = 0
        if self.on_connect is not None:
            self.on_connect(sp)
        return sp

    def try_reconnect(self):
        """Reconnect if offline and the backoff delay has elapsed. True if online."""
        if self.sock is not None:
            return True
        if ticks_diff(ticks_ms(), self._next_try) < 0:
            return False
        try:
            self.connect()
        except (OSError, MQTTError):
            return False
        return True

    def ensure_connected(self, timeout_ms):
        """Retry (with backoff) until connected or timeout_ms elapsed."""
        t0 = ticks_ms()
        while not self.try_reconnect():
            left = timeout_ms - ticks_diff(ticks_ms(), t0)
            if left <= 0:
                return False
            w = self.next_retry_ms()
            sleep_ms(w if w < left else left)
        return True

    # ------------------------------------------------------------ API overrides
    def subscribe(self, topic, qos=1):
        """Remember the subscription (restored after every reconnect) and send it
        now if online. Returns the granted QoS, or None when offline."""
        if isinstance(topic, str):
            topic = topic.encode()
        self._subs[topic] = qos
        if self.sock is None:
            return None
        try:
            return MQTTClient.subscribe(self, topic, qos)
        except MQTTError as e:
            if e.code == ERR_SUBACK:  # refused: do not retry it forever
                self._subs.pop(topic, None)
                raise
            self._lost(e)
        except OSError as e:
            self._lost(e)
        return None

    def unsubscribe(self, topic):
        if isinstance(topic, str):
            topic = topic.encode()
        self._subs.pop(topic, None)
        if self.sock is not None:
            try:
                MQTTClient.unsubscribe(self, topic)
            except (OSError, MQTTError) as e:
                self._lost(e)

    def publish(self, topic, msg, qos=0, retain=False):
        """Like MQTTClient.publish, but never raises OSError: a QoS 1 message goes
        to the unacked table first and is (re)sent after a reconnect (MQTTError
        ERR_FULL if the table stays full for `timeout`); a QoS 0 message that
        cannot be sent is dropped (counted in dropped_offline)."""
        if qos not in (0, 1):
            raise ValueError("qos")
        topic = _b(topic)
        msg = _b(msg)
        if not topic:
            raise ValueError("topic")
        if qos == 0:
            if self.sock is not None:
                try:
                    return MQTTClient.publish(self, topic, msg, 0, retain)
                except OSError as e:
                    self._lost(e)
            self.dropped_offline += 1
            return 0
        t0 = ticks_ms()
        while (self.sock is not None and len(self._unacked) >= self.max_unacked
               and ticks_diff(ticks_ms(), t0) < self.timeout * 1000):
            self.wait_msg(100)  # PUBACKs free slots
        pid = self._store(topic, msg, retain)
        if self.sock is not None:
            try:
                self._send_publish(topic, msg, 1, retain, False, pid)
            except OSError as e:
                self._lost(e)
        return pid

    def check_msg(self):
        if self.sock is None:
            self.try_reconnect()
            return 0
        try:
            return super().check_msg()
        except (OSError, MQTTError) as e:
            self._lost(e)
            return 0

    def wait_msg(self, timeout_ms=1000):
        """Like MQTTClient.wait_msg (but timeout_ms is always bounded); while
        offline, sleeps until the next reconnect attempt within timeout_ms."""
        if timeout_ms is None:
            timeout_ms = 1000
        t0 = ticks_ms()
        while True:
            left = timeout_ms - ticks_diff(ticks_ms(), t0)
            if self.sock is None:
                if self.try_reconnect():
                    continue
                if left <= 0:
                    return 0
                w = self.next_retry_ms()
                sleep_ms(w if w < left else left)
                continue
            try:
                return super().wait_msg(left if left > 0 else 0)
            except (OSError, MQTTError) as e:
                self._lost(e)
                if left <= 0:
                    return 0
