"""One MQTT connection per login: `Line`, the connection a host tool holds
to one domain's brokers under one login, shared by everything the tool
does there (docs/CROSSDOMAIN.md, "One connection per login"): its
subscriptions, each with its handlers (the supplier's rx listener, the
buyer's stream), its publishes with their acknowledgement (a supplier's
readings), and request / answer exchanges over it (tools/submit.py: a
transaction and its receipt on the sender's rx topic;
tools/remote_store.QueryClient: chain queries).

Why one: an exported mosquitto sets `use_username_as_clientid` (the client
id is the login's username), so a second connection under a login takes
the first one's session over (the broker drops the older). The embedded
broker lets a person hold several; one is enough for all of it.

The connection moves along the tool's list of the domain's brokers
(tools/failover.Brokers): when its broker cannot be reached, refuses the
connection (said at once, e.g. a login it does not admit), or drops it, the
next one is connected, and every subscription is asked for again there
with its handlers kept. A request whose answer does not come within the
timeout (a broker where no gateway answers), or whose answer topic the
broker does not grant, passes the broker over too: the connection moves on
and the same request is asked through the next, until each broker failed
once for it (Unanswered). A subscription the broker refuses (SUBACK 0x80:
NATS's MQTT listener for a minute or so after a node of its cluster died,
docs/CONSENSUS.md, "A light node after a machine died") is asked for again,
and a request goes out only once its answer topic is granted.

What an answer is, is the caller's: `pick` turns a message on the answer
topic into the answer, None for a message that is not one (anyone may
write to an open broker's topics: skipped), or raises for a refusal, which
is final (not asked elsewhere).

A kept session (`keep`, docs/CROSSDOMAIN.md, "A restarted reseller"): the
connection is made with clean_session False and the login's username as its
client id (what an exported mosquitto forces anyway), so the broker keeps
its subscriptions while the tool is down and queues what comes on them at
QoS 1, delivered when the tool connects again, before the tool has asked
for anything: those messages are held (the latest UNCLAIMED) until a
handler subscribes to a filter they match. Two processes of one login with
kept sessions take that one session from each other: one at a time.

Hooks: `will` (a retained status the broker publishes when the connection
is lost), `when_up` (called on each new connection: e.g. a retained
"online" said again).

paho-mqtt does the protocol; its own reconnection (to the same broker) is
off: a supervisor thread per connection chooses the broker, connects with
paho and starts paho's network thread for each session.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import paho.mqtt.client as mqtt

from gateway.broker.embedded import parse_url
from tools.failover import AllFailed, Brokers, as_brokers, first

T = TypeVar("T")
SUBSCRIBE_AGAIN_S = 0.2  # s before asking again for a subscription the broker refused
PAUSE_S = 0.5  # s between two rounds of the broker list when none could be connected
MAX_PAUSE_S = 5.0
KEEPALIVE_S = 30
UNCLAIMED = 1024  # a kept session's messages held until a handler of theirs comes

log = logging.getLogger("thingledger.mqtt")

Handler = Callable[[str, bytes], None]  # (topic, payload), called in paho's thread


class Silent(Exception):
    """No answer through this broker: unreachable, no subscription
    confirmed, the connection dropped, or nothing within the timeout."""


class Closed(Exception):
    """The connection was closed (by its last user)."""


class Unanswered(Exception):
    """No broker answered: `failed` holds "url: why" of each."""

    def __init__(self, failed: list[str]) -> None:
        self.failed = failed
        super().__init__("; ".join(failed))


@dataclass
class Sub:
    """One topic filter subscribed on a Line and its handlers."""

    filter: str
    qos: int
    handlers: list[Handler] = field(default_factory=list)
    granted: bool = False  # on the connection of now
    refused: int = 0  # SUBACK 0x80s since it was last granted


class Line:
    """One login's one connection to one domain's brokers (see the module);
    thread-safe. `login`: (username, password), None for an anonymous
    broker. Starts connecting at once, in the background; `hold` / `release`
    count its users (it closes when the last one releases it)."""

    def __init__(self, brokers: str | Sequence[str] | Brokers, client_id: str, *,
                 login: tuple[str, str] | None = None, timeout: float = 15.0,
                 will: tuple[str, bytes] | None = None, keep: bool = False) -> None:
        self.brokers = as_brokers(brokers)
        self.keep = keep  # a persistent session (clean_session False): see the module
        self.timeout = timeout
        self.login = login
        self.url = ""  # the broker connected now ("" while there is none)
        self.connects = 0  # connections made (CONNACK accepted), for tests and logs
        self.closed = False
        self._gen = 0  # counts the connections: a request knows the one it used
        self._users = 1
        self._cond = threading.Condition()
        self._subs: dict[str, Sub] = {}
        self._mids: dict[int, str] = {}  # SUBSCRIBE packet id -> its filter
        self._early: dict[int, bool] = {}  # SUBACKs that came before their mid was noted
        self._waiting: set[queue.Queue[bytes | None]] = set()  # requests' answer queues
        self._failed: list[tuple[int, str]] = []  # (number, "url: why"), the latest 64
        self._fails = 0
        self._events: queue.Queue[tuple[str, Any]] = queue.Queue()  # for the supervisor
        self._on_up: list[Callable[[str], None]] = []
        # a kept session's messages that came before a handler of theirs (queued
        # by the broker while the tool was down, delivered at its CONNACK)
        self._unclaimed: deque[tuple[str, bytes]] = deque(maxlen=UNCLAIMED)
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                        clean_session=not keep, protocol=mqtt.MQTTv311,
                        reconnect_on_failure=False)
        if login:
            c.username_pw_set(*login)
        if will is not None:  # retained, QoS 1: a status the broker says for it
            c.will_set(will[0], will[1], qos=1, retain=True)
        c.connect_timeout = min(5.0, timeout)
        c.on_connect = lambda _c, _u, _f, rc, _p: self._events.put(("connack", rc))
        c.on_disconnect = lambda *_a: self._events.put(("down", None))
        c.on_subscribe = self._suback
        c.on_message = self._message
        self._c = c
        self._thread = threading.Thread(target=self._supervise, daemon=True,
                                        name="mqtt-line-%s" % client_id)
        self._thread.start()

    # -- users -------------------------------------------------------------------
    def hold(self) -> Line:
        """One more user (released with `release`); Closed if it is closed."""
        with self._cond:
            if self.closed:
                raise Closed("the connection is closed")
            self._users += 1
        return self

    def release(self) -> None:
        """One user less: the connection closes when none is left."""
        with self._cond:
            self._users -= 1
            if self._users > 0 or not self._closing():
                return
        self._stop()

    def close(self) -> None:
        """Disconnect and stop (whoever still holds it)."""
        with self._cond:
            if not self._closing():
                return
        self._stop()

    def _closing(self) -> bool:
        """Mark it closed (under the lock, so no `hold` comes after); False
        if it was already."""
        if self.closed:
            return False
        self.closed = True
        self._cond.notify_all()
        for q in self._waiting:
            q.put(None)
        return True

    def _stop(self) -> None:
        self._events.put(("close", None))
        if threading.current_thread() is not self._thread:
            self._thread.join(10)

    # -- the connection (the supervisor's thread) -----------------------------------
    def _supervise(self) -> None:
        start: str | None = None  # the broker to try first: the one after the last used
        pause = PAUSE_S
        while not self.closed:
            try:
                url = first(self.brokers, self._connect, Silent, start=start)
            except Closed:
                break
            except AllFailed:
                if self.closed:
                    break
                try:  # none could be connected: a pause, then the list again
                    if self._events.get(timeout=pause)[0] == "close":
                        break
                except queue.Empty:
                    pass
                pause = min(pause * 2, MAX_PAUSE_S)
                start = None
                continue
            pause = PAUSE_S
            why = self._stay()
            if self.closed:
                break
            if why:
                self._fail(url, why)
            i = self.brokers.urls.index(url)
            start = self.brokers.urls[(i + 1) % len(self.brokers.urls)]

    def _note(self, url: str, why: str) -> None:
        with self._cond:
            self._fails += 1
            self._failed.append((self._fails, "%s: %s" % (url, why)))
            del self._failed[:-64]
            self._cond.notify_all()

    def _fail(self, url: str, why: str) -> None:
        """`url` failed: passed over (tools/failover.Brokers) and noted."""
        self.brokers.pass_over(url, why)
        self._note(url, why)

    def _connect(self, url: str) -> str:
        """Connect to `url`: its CONNACK received, the subscriptions asked
        for again. Silent (noted; `first` passes it over) if it fails."""
        c = self._c
        try:
            c.connect(*parse_url(url), keepalive=KEEPALIVE_S)
        except OSError as e:
            return self._refused(url, "cannot reach it: %s" % e)
        c.loop_start()
        deadline = time.monotonic() + self.timeout
        kind, rc = "timeout", None
        while (left := deadline - time.monotonic()) > 0:
            try:
                kind, rc = self._events.get(timeout=left)
            except queue.Empty:
                kind, rc = "timeout", None
                break
            if kind != "move":  # (a request's, about a connection before this one)
                break
        if kind != "connack" or rc.is_failure:
            self._end()
            if kind == "close":
                raise Closed("closed while connecting")
            if kind == "connack":  # said at once (e.g. a login it does not admit)
                return self._refused(url, "refused the connection: %s" % rc)
            if kind == "down":
                return self._refused(url, "the connection dropped before its CONNACK")
            return self._refused(url, "no connection within %.0f s" % self.timeout)
        with self._cond:
            self._gen += 1
            self.url = url
            self.connects += 1
            self._mids.clear()
            self._early.clear()
            subs = list(self._subs.values())
            for s in subs:
                s.granted, s.refused = False, 0
            self._cond.notify_all()
        for s in subs:  # asked again on each connection, handlers kept
            self._subscribe_now(s)
        for fn in list(self._on_up):
            try:
                fn(url)
            except Exception:  # noqa: BLE001 - a user's bug must not stop the connection
                log.exception("on a connection to %s", url)
        return url

    def when_up(self, fn: Callable[[str], None]) -> None:
        """Call `fn(url)` (in the supervisor's thread, so without waiting on
        the broker: e.g. `publish(..., timeout=0)`) each time a connection is
        made, once its subscriptions are asked for again; at once if it is
        connected now."""
        with self._cond:
            self._on_up.append(fn)
            url = self.url
        if url:
            fn(url)

    @property
    def held(self) -> int:
        """Messages of a kept session held for a handler to come."""
        with self._cond:
            return len(self._unclaimed)

    def granted_now(self, topic: str) -> bool:
        """Is the subscription to `topic` granted on the connection of now?"""
        with self._cond:
            s = self._subs.get(topic)
            return bool(self.url) and s is not None and s.granted

    def _refused(self, url: str, why: str) -> str:
        self._note(url, why)
        raise Silent(why)

    def _stay(self) -> str:
        """Stay on the connection until it drops, a request moves it on or
        the line closes: why it failed ("" if it did not)."""
        while True:
            kind, arg = self._events.get()
            if kind in ("down", "close") or (kind == "move" and arg == self._gen):
                break  # (a move about an earlier connection, a second CONNACK: skipped)
        self._end()
        if kind == "down":
            return "the connection dropped"
        if kind == "close":
            self._events.put((kind, None))
        return ""  # moved on by a request (which said why) or closed

    def _end(self) -> None:
        """Leave the session: down for every user, paho's thread stopped."""
        with self._cond:
            self.url = ""
            for s in self._subs.values():
                s.granted = False
            for q in self._waiting:
                q.put(None)  # wakes the requests waiting on this connection
            self._cond.notify_all()
        self._c.disconnect()
        self._c.loop_stop()
        keep = []
        while True:  # callbacks of the session just ended: done with
            try:
                ev = self._events.get_nowait()
            except queue.Empty:
                break
            if ev[0] == "close":
                keep.append(ev)
        for ev in keep:
            self._events.put(ev)

    def move_on(self, gen: int) -> None:
        """Leave connection number `gen` (if it is still the one in use) for
        the next broker: a request passed its broker over."""
        self._events.put(("move", gen))

    def up(self, timeout: float | None = None, since: int | None = None) -> tuple[str, int]:
        """Wait until connected: (url, connection number). Unanswered when
        each broker failed once since failure number `since` (default: now)
        or none was connected within `timeout`."""
        timeout = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        with self._cond:
            start = self._fails if since is None else since
            while True:
                if self.closed:
                    raise Unanswered(self.failures(start) or ["the connection is closed"])
                if self.url:
                    return self.url, self._gen
                failed = {f.split(": ", 1)[0] for f in self.failures(start)}
                left = deadline - time.monotonic()
                if failed >= set(self.brokers.urls) or left <= 0:
                    raise Unanswered(self.failures(start) or
                                     ["no connection within %.0f s" % timeout])
                self._cond.wait(left)

    def failures(self, since: int) -> list[str]:
        """The "url: why" of each failure after number `since` (the latest 64)."""
        with self._cond:
            return [f for n, f in self._failed if n > since]

    @property
    def fails(self) -> int:
        with self._cond:
            return self._fails

    # -- subscriptions ------------------------------------------------------------------
    def _subscribe_now(self, s: Sub) -> None:
        """Send a SUBSCRIBE for `s` (its SUBACK: _suback)."""
        with self._cond:
            if self.closed or not self.url or self._subs.get(s.filter) is not s:
                return
        rc, mid = self._c.subscribe(s.filter, qos=s.qos)
        if rc != mqtt.MQTT_ERR_SUCCESS or mid is None:
            return  # not connected any more: asked again on the next connection
        with self._cond:
            verdict = self._early.pop(mid, None)
            if verdict is None:
                self._mids[mid] = s.filter
        if verdict is not None:
            self._verdict(s.filter, verdict)

    def _suback(self, _c: Any, _u: Any, mid: int, codes: Any, _p: Any) -> None:  # paho's thread
        granted = not any(rc.is_failure for rc in codes)
        with self._cond:
            f = self._mids.pop(mid, None)
            if f is None:
                self._early[mid] = granted
                return
        self._verdict(f, granted)

    def _verdict(self, f: str, granted: bool) -> None:
        with self._cond:
            s = self._subs.get(f)
            if s is None:
                return
            if granted:
                s.granted, s.refused = True, 0
                self._cond.notify_all()
                return
            s.refused += 1
            if not s.handlers:  # nobody waits for it: not asked again
                del self._subs[f]
                self._cond.notify_all()
                return
            self._cond.notify_all()
        t = threading.Timer(SUBSCRIBE_AGAIN_S, self._subscribe_now, (s,))
        t.daemon = True
        t.start()

    def _add(self, topic: str, qos: int, handler: Handler) -> tuple[Sub, bool]:
        """`handler` added to the subscription of `topic` (made if there is
        none: then True, it is not asked for yet)."""
        with self._cond:  # (an RLock: also called under it)
            s = self._subs.get(topic)
            new = s is None
            if s is None:
                s = self._subs[topic] = Sub(topic, qos)
            s.handlers.append(handler)
        return s, new

    def subscribe(self, topic: str, handler: Handler, *, qos: int = 1,
                  timeout: float | None = None) -> Callable[[], None]:
        """Call `handler(topic, payload)` (in paho's thread) for each message
        on the filter `topic`, on this connection and each next one; returns
        once the broker granted the subscription (asked again while it
        refuses). Silent, the handler removed, when it is not granted
        within `timeout`; `timeout` 0: returns at once (granted when the
        broker grants it). The topic's retained message comes again (to
        every handler of the filter). Returns the call that removes the
        handler (and the subscription with the last one)."""
        timeout = self.timeout if timeout is None else timeout
        with self._cond:
            s, _ = self._add(topic, qos, handler)
            early = [m for m in self._unclaimed if mqtt.topic_matches_sub(topic, m[0])]
            for m in early:
                self._unclaimed.remove(m)
        for t, p in early:  # a kept session's, queued while the tool was down
            try:
                handler(t, p)
            except Exception:  # noqa: BLE001 - as in _message
                log.exception("handler of %s", t)
        # (again if another user has it: the broker sends its retained message again)
        self._subscribe_now(s)

        def remove() -> None:  # the last handler gone: unsubscribed
            with self._cond:
                if handler in s.handlers:
                    s.handlers.remove(handler)
                if s.handlers or self._subs.get(topic) is not s:
                    return
                del self._subs[topic]
                if self.url:
                    self._c.unsubscribe(topic)
        if timeout <= 0:
            return remove
        try:
            self.granted(topic, timeout)
        except Silent:
            remove()
            raise
        return remove

    def granted(self, topic: str, timeout: float, gen: int | None = None) -> None:
        """Wait until the subscription to `topic` is granted (on connection
        number `gen`, if given: Silent once that one dropped)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                s = self._subs.get(topic)
                if s is not None and s.granted and (gen is None or gen == self._gen):
                    return
                if self.closed or (gen is not None and (gen != self._gen or not self.url)):
                    raise Silent("the connection dropped before the subscription to %s" % topic)
                left = deadline - time.monotonic()
                if left <= 0:
                    if s is not None and s.refused:
                        raise Silent("refused the subscription to %s %d time(s) within %.0f s"
                                     % (topic, s.refused, timeout))
                    raise Silent("no subscription to %s confirmed within %.0f s"
                                 % (topic, timeout))
                self._cond.wait(left)

    def _message(self, _c: Any, _u: Any, m: mqtt.MQTTMessage) -> None:  # paho's thread
        payload = bytes(m.payload)
        with self._cond:
            handlers = [h for f, s in self._subs.items()
                        if mqtt.topic_matches_sub(f, m.topic) for h in s.handlers]
            if not handlers and self.keep:
                self._unclaimed.append((m.topic, payload))
        for h in handlers:
            try:
                h(m.topic, payload)
            except Exception:  # noqa: BLE001 - one handler's bug must not stop the others
                log.exception("handler of %s", m.topic)

    # -- publishing ---------------------------------------------------------------------
    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False,
                timeout: float | None = None) -> None:
        """Publish once connected and, at QoS 1, wait for the broker's
        acknowledgement: Silent when there is no connection or no
        acknowledgement within `timeout`. `timeout` 0: sent if connected
        now (Silent if not), not waited for."""
        timeout = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        with self._cond:
            now = bool(self.url)
        if not now:
            if timeout <= 0:
                raise Silent("no connection")
            try:
                self.up(timeout)
            except Unanswered as e:
                raise Silent("no connection: %s" % e) from None
        self._publish(topic, payload, qos, retain, deadline, wait=timeout > 0)

    def _publish(self, topic: str, payload: bytes, qos: int, retain: bool,
                 deadline: float, wait: bool = True) -> None:
        try:
            info = self._c.publish(topic, payload, qos=qos, retain=retain)
            if qos and wait:
                info.wait_for_publish(max(0.0, deadline - time.monotonic()))
        except (RuntimeError, ValueError) as e:  # paho: not connected (any more), queue full
            raise Silent("cannot publish: %s" % e) from None
        if qos and wait and not info.is_published():
            raise Silent("not acknowledged within the timeout")

    # -- request and answer -------------------------------------------------------------
    def ask(self, topic: str, payload: bytes, answers: str, pick: Callable[[bytes], T | None],
            *, qos: int = 0, what: str, timeout: float | None = None,
            remark: Callable[[], str] | None = None, since: int | None = None) -> T:
        """Publish `payload` on `topic` once `answers` is subscribed and
        return the first message on it that `pick` takes, asked again through
        the next broker when this one is silent (nothing `pick` takes within
        `timeout`: it is passed over, the connection moves on) or its
        connection drops; what `pick` raises propagates. Unanswered when each
        broker failed once for it. `remark`: what to add to a silence (e.g.
        answers that did not check); `since`: the failure number from which
        brokers count as failed for it (0 for a line made for it)."""
        timeout = self.timeout if timeout is None else timeout
        since = self.fails if since is None else since
        got: queue.Queue[bytes | None] = queue.Queue()
        tried: set[str] = set()
        with self._cond:
            self._waiting.add(got)
        remove: Callable[[], None] | None = None
        try:
            while True:
                url, gen = self.up(timeout, since)
                if url in tried:
                    raise Unanswered(self.failures(since))
                tried.add(url)
                try:
                    if remove is None:
                        remove = self._keep_answers(answers, qos, got)
                    return self._attempt(topic, payload, pick, qos, what, timeout, remark,
                                         answers, gen, got)
                except Silent as e:
                    with self._cond:
                        dropped = gen != self._gen or not self.url
                    if not dropped:  # (a dropped connection: the line said so)
                        self._fail(url, str(e))
                        self.move_on(gen)
                    with self._cond:  # until that connection is left
                        end = time.monotonic() + timeout
                        while (gen == self._gen and self.url and not self.closed
                               and (left := end - time.monotonic()) > 0):
                            self._cond.wait(left)
        finally:
            with self._cond:
                self._waiting.discard(got)
            if remove is not None:
                remove()

    def _keep_answers(self, answers: str, qos: int, got: queue.Queue[bytes | None]
                      ) -> Callable[[], None]:
        """Put each message on `answers` in `got` (the subscription stays for
        the next request once this one is done)."""
        h: Handler = lambda _t, p: got.put(p)  # noqa: E731
        s, new = self._add(answers, qos, h)
        if new:
            self._subscribe_now(s)

        def remove() -> None:
            with self._cond:
                if h in s.handlers:
                    s.handlers.remove(h)
        return remove

    def _attempt(self, topic: str, payload: bytes, pick: Callable[[bytes], T | None],
                 qos: int, what: str, timeout: float, remark: Callable[[], str] | None,
                 answers: str, gen: int, got: queue.Queue[bytes | None]) -> T:
        deadline = time.monotonic() + timeout  # one bound for the subscription, publish, answer
        self.granted(answers, timeout, gen)
        while not got.empty():  # late copies of earlier answers
            got.get_nowait()
        self._publish(topic, payload, qos, False, deadline)
        while (left := deadline - time.monotonic()) > 0:
            try:
                m = got.get(timeout=left)
            except queue.Empty:
                break
            with self._cond:
                down = gen != self._gen or not self.url
            if m is None or down:
                if down:
                    raise Silent("the connection dropped during %s" % what)
                continue
            answer = pick(m)
            if answer is not None:
                return answer
        extra = remark() if remark is not None else ""
        raise Silent("no answer to %s within %.0f s%s" % (what, timeout,
                                                          ": " + extra if extra else ""))


_ids = itertools.count(1)
_lines: dict[tuple[str, str], Line] = {}  # (username, broker list) -> its open connection
_lines_lock = threading.Lock()


def connection(brokers: Brokers, login: tuple[str, str], timeout: float = 15.0,
               keep: bool = False) -> Line:
    """The process's one connection of `login` to `brokers`, held for the
    caller (`release` it): made on first use, shared by every user of the
    login in the process, closed once its last user released it (the next
    use makes a new one). `keep`: made with a persistent session whose
    client id is the login's username (see the module); a connection made
    already stays as it was made."""
    k = (login[0], str(brokers))
    with _lines_lock:
        got = _lines.get(k)
        if got is not None:
            try:
                return got.hold()
            except Closed:
                pass  # its last user released it: a new one
        got = _lines[k] = Line(brokers, login[0] if keep else client_id(login[0], "tool"),
                               login=login, timeout=timeout, keep=keep)
        return got


def client_id(user: str, role: str) -> str:
    """A client id `<user>-<role>-<n>`: unique in the process, and of the
    login's form for the embedded broker (`<id>` or `<id>-...`)."""
    return "%s-%s-%d-%d" % (user, role, time.time_ns() % 10**6, next(_ids))
