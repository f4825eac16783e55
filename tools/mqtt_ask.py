"""One MQTT request and its answer from a domain's gateways, over the first
of the domain's brokers that answers (tools/failover.py): connect, subscribe
to the answer topic, publish the request, wait for the answer with a
timeout. A subscription the broker refuses (SUBACK 0x80) is asked for
again, and the request goes out only once it is granted. A broker that
cannot be reached, does not grant the subscription, drops the connection or
stays silent is passed over for the next. Used by tools/submit.py (a transaction and its receipt on the
sender's rx topic, one connection per submission) and by
tools/remote_store.QueryClient (chain queries, one connection kept for the
next request).

What an answer is, is the caller's: `pick` turns a message on the answer
topic into the answer, None for a message that is not one (anyone may
write to an open broker's topics: skipped), or raises for a refusal, which
is final (not asked elsewhere).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import paho.mqtt.client as mqtt

from gateway.broker.embedded import parse_url
from tools.failover import AllFailed, Brokers, as_brokers, connect_first, first

T = TypeVar("T")
SUBSCRIBE_AGAIN_S = 0.2  # s before asking again for a subscription the broker refused


class Silent(Exception):
    """No answer through this broker: unreachable, no subscription
    confirmed, the connection dropped, or nothing within the timeout."""


class Unanswered(Exception):
    """No broker answered: `failed` holds "url: why" of each."""

    def __init__(self, failed: list[str]) -> None:
        self.failed = failed
        super().__init__("; ".join(failed))


def shut(c: mqtt.Client) -> None:
    """Close `c`'s connection (its on_disconnect not called) and stop its
    network thread."""
    c.on_disconnect = None
    c.disconnect()  # first: it wakes the network thread, which loop_stop joins
    c.loop_stop()   # (the other way round, loop_stop waits out a ~1 s select)


def verdicts_to(verdicts: queue.Queue[bool]) -> Callable[..., None]:
    """An on_subscribe callback that puts each SUBACK's verdict (granted?)
    in `verdicts`, for `subscribed`."""
    return lambda _c, _u, _mid, codes, _p: verdicts.put(not any(rc.is_failure for rc in codes))


def subscribed(c: mqtt.Client, verdicts: queue.Queue[bool] | queue.Queue[bool | None],
               topic: str, qos: int,
               timeout: float, down: threading.Event | None = None) -> None:
    """Wait until the broker grants the subscription to `topic` that `c`
    asked for (its on_subscribe `verdicts_to(verdicts)`), asking again while
    it refuses (SUBACK 0x80). NATS's MQTT listener refuses a QoS 1 SUBSCRIBE
    when it cannot make the subscription's JetStream consumer in time, as
    for a minute or so after a node of its cluster died: a request sent
    under a refused subscription gets its answer nowhere (docs/CONSENSUS.md,
    "A light node after a machine died"). Silent when not granted within
    `timeout`, or when `down` (the connection dropped) is set."""
    deadline = time.monotonic() + timeout
    refused = 0
    while True:
        try:
            granted: bool | None = verdicts.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            granted = None
        if down is not None and down.is_set():
            raise Silent("the connection dropped before the subscription to %s" % topic)
        if granted:
            return
        left = deadline - time.monotonic()
        if granted is False:
            refused += 1
            if left > 0:
                time.sleep(min(SUBSCRIBE_AGAIN_S, left))
                c.subscribe(topic, qos=qos)
                continue
        if refused:
            raise Silent("refused the subscription to %s %d time(s) within %.0f s"
                         % (topic, refused, timeout))
        raise Silent("no subscription to %s confirmed within %.0f s" % (topic, timeout))


def open_client(brokers: Brokers, client_id: str, login: tuple[str, str],
                timeout: float) -> mqtt.Client:
    """A client connected to the first of `brokers` that accepts a
    connection, its CONNACK received and its network thread running (for a
    publisher, or a subscriber that then subscribes). OSError when no broker
    can be reached (connect_first); Silent when no CONNACK comes within
    `timeout`."""
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                    protocol=mqtt.MQTTv311)
    c.username_pw_set(*login)
    up: queue.Queue[bool] = queue.Queue()
    c.on_connect = lambda *_: up.put(True)
    connect_first(c, brokers)
    c.loop_start()
    try:
        up.get(timeout=timeout)
    except queue.Empty:
        c.loop_stop()
        raise Silent("no connection within %.0f s" % timeout) from None
    return c


class Line:
    """One connection to one broker, subscribed to one answer topic (Silent
    if that fails within `timeout`)."""

    def __init__(self, url: str, client_id: str, answers: str, *, qos: int,
                 login: tuple[str, str] | None, timeout: float) -> None:
        self.url = url
        self._got: queue.Queue[bytes | None] = queue.Queue()
        self.down = threading.Event()
        verdicts: queue.Queue[bool | None] = queue.Queue()  # each SUBACK: granted?
        refusal: list[str] = []  # the broker's CONNACK refusing the connection
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                        clean_session=True, protocol=mqtt.MQTTv311)
        if login:
            c.username_pw_set(*login)

        def connected(cl: mqtt.Client, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
            if rc.is_failure:
                refusal.append(str(rc))  # (paho drops the connection next: dropped)
            else:
                cl.subscribe(answers, qos=qos)
        c.on_connect = connected
        c.on_subscribe = verdicts_to(verdicts)
        c.on_message = lambda _c, _u, m: self._got.put(bytes(m.payload))

        def dropped(*_a: Any) -> None:
            self.down.set()
            self._got.put(None)  # wakes a request waiting on this connection
            verdicts.put(None)  # and the wait for the subscription
        c.on_disconnect = dropped
        try:
            c.connect(*parse_url(url), keepalive=30)
        except OSError as e:
            raise Silent("cannot reach it: %s" % e) from None
        c.loop_start()
        try:
            subscribed(c, verdicts, answers, qos, timeout, self.down)
        except Silent:
            shut(c)
            if refusal:  # said at once (e.g. a login it does not admit): no waiting it out
                raise Silent("refused the connection: %s" % refusal[0]) from None
            raise
        self.client = c

    def ask(self, topic: str, payload: bytes, pick: Callable[[bytes], T | None], *,
            qos: int, what: str, timeout: float,
            remark: Callable[[], str] | None = None) -> T:
        """Publish `payload` on `topic` and wait for the first message `pick`
        takes; Silent if the connection drops or none comes within
        `timeout` (`remark`: what to add then, e.g. answers that did not
        check)."""
        while not self._got.empty():  # late copies of earlier answers
            self._got.get_nowait()
        if self.down.is_set():
            raise Silent("the connection dropped")
        deadline = time.monotonic() + timeout  # one bound for the publish and the answer
        try:
            info = self.client.publish(topic, payload, qos=qos)
            if qos:
                info.wait_for_publish(max(0.0, deadline - time.monotonic()))
        except RuntimeError as e:  # paho: not connected (any more), its queue full
            raise Silent("cannot publish: %s" % e) from None
        while (left := deadline - time.monotonic()) > 0:
            try:
                got = self._got.get(timeout=left)
            except queue.Empty:
                break
            if got is None or self.down.is_set():
                raise Silent("the connection dropped during %s" % what)
            answer = pick(got)
            if answer is not None:
                return answer
        extra = remark() if remark is not None else ""
        raise Silent("no answer to %s within %.0f s%s" % (what, timeout,
                                                          ": " + extra if extra else ""))

    def close(self) -> None:
        shut(self.client)


class Asker:
    """Requests to one domain's gateways with their answers on one topic,
    through the first of `brokers` that answers (one request at a time;
    thread-safe). `keep`: the connection to the broker that answered stays
    open for the next request, else each request has its own."""

    def __init__(self, brokers: str | Sequence[str] | Brokers, answers: str, client_id: str, *,
                 qos: int = 0, login: tuple[str, str] | None = None, timeout: float = 15.0,
                 keep: bool = True) -> None:
        self.brokers = as_brokers(brokers)
        self.answers, self.client_id = answers, client_id
        self.qos, self.login, self.timeout, self.keep = qos, login, timeout, keep
        self.line: Line | None = None
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        """The broker of the connection in use ("" if none)."""
        line = self.line
        return "" if line is None else line.url

    def _line_to(self, url: str) -> Line:
        if self.line is not None and self.line.url == url:
            return self.line  # (if it dropped, asking says so: then the next broker)
        self._drop()
        self.line = Line(url, "%s-%d" % (self.client_id, time.time_ns() % 10**9), self.answers,
                         qos=self.qos, login=self.login, timeout=self.timeout)
        return self.line

    def _drop(self) -> None:
        if self.line is not None:
            self.line.close()
            self.line = None

    def connect(self) -> None:
        """Connect now to the first broker that takes the subscription
        (Unanswered if none does)."""
        with self._lock:
            try:
                first(self.brokers, self._line_to, Silent)
            except AllFailed as e:
                raise Unanswered(e.failed) from None

    def ask(self, topic: str, payload: bytes, pick: Callable[[bytes], T | None], *,
            what: str, remark: Callable[[], str] | None = None) -> T:
        """The answer to `payload` (Line.ask), asked through the broker in
        use and, when it is silent or down, through the next; what `pick`
        raises propagates. Unanswered when no broker answered."""
        def attempt(url: str) -> T:
            line = self._line_to(url)
            try:
                return line.ask(topic, payload, pick, qos=self.qos, what=what,
                                timeout=self.timeout, remark=remark)
            except Silent:
                self._drop()
                raise
        with self._lock:
            try:
                return first(self.brokers, attempt, Silent, start=self.url or None)
            except AllFailed as e:
                raise Unanswered(e.failed) from None
            finally:
                if not self.keep:
                    self._drop()

    def close(self) -> None:
        with self._lock:
            self._drop()
