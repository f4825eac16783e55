"""The gateway's answers to read-only chain queries over MQTT
(docs/PROTOCOL.md, "Chain queries"; the wire is shared/chainquery.py).

The gateway's own MQTT link subscribes tl/<d>/q/+/req (no second login:
under mosquitto's `use_username_as_clientid` one would take the gateway's
session over) and hands each request to its QueryServer (`offer`, which
never blocks); the server answers on the requester's tl/<d>/q/<requester>/res
from its own read-only Store of the gateway's database, in one worker
thread: the node's pipeline never waits on a query. Replicated gateways each
run one, so a requester may get several answers (any one will do: what it
submits is proven on chain). `QueryLink` serves a QueryServer on a
connection of its own (a data folder with no gateway running, the tests).

Bounds: a request over MAX_REQUEST bytes is refused unread (too-large);
one that is not CBOR (bad-cbor) or not a request (bad-query, with a detail)
gets a reason-coded refusal; each requester has a token bucket
(gateway/node/ratelimit.SenderLimit: `rate` per second, `burst`), a request
over it is refused (rate-limited, retryable); at most QUEUE requests wait,
later ones are dropped (counted); pages hold at most MAX_PAGE items and stay
under MAX_ANSWER bytes, and any other answer over it is refused (too-large). Nothing a requester sends stops the server: every error of a
request is its own refusal.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import paho.mqtt.client as mqtt

from gateway.broker.embedded import parse_url
from gateway.db.store import BlockRecord, Store
from gateway.errors import RateLimited
from gateway.ledger import state as st
from gateway.node.ratelimit import SenderLimit
from gateway.xdomain.relayer import validator_sets
from shared import cbor, errors, reasons
from shared import chainquery as cq

log = logging.getLogger("thingledger.queries")

RATE = 50.0  # requests per second per requester, sustained
BURST = 200  # requests per requester at once
QUEUE = 256  # requests waiting for the worker


def block_row(b: BlockRecord) -> list[Any]:
    return [b.height, b.hash, b.time, b.n_txs, b.header_bytes, b.signed_header]


class Answerer:
    """Answers one request at a time over a read-only store (no MQTT: the
    QueryServer's worker and the tests call `answer`)."""

    def __init__(self, store: Store, genesis: bytes, rate: float = RATE, burst: int = BURST,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.genesis = genesis
        self.limit = SenderLimit(rate, burst, clock=clock)
        self.refused: Counter[str] = Counter()  # reason -> count

    def answer(self, requester: str, payload: bytes) -> bytes:
        """The answer bytes to one request of `requester` (never raises for
        anything the requester sent)."""
        rid = None
        try:
            op, rid, arg, limit, after = cq.parse_request(payload)
            who = requester.encode()
            self.limit.check(who)
            self.limit.take(who)
            out = self._op(op, rid, arg, limit, after)
            if len(out) > cq.MAX_ANSWER:  # the broker would drop it: say so instead
                return self._refuse(rid, reasons.TOO_LARGE,
                                    "answer of %d bytes, at most %d" % (len(out), cq.MAX_ANSWER))
            return out
        except errors.TLError as e:
            return self._refuse(rid, e.reason, e.detail)
        except RateLimited as e:
            return self._refuse(rid, reasons.RATE_LIMITED, e.detail or "per-requester")

    def _refuse(self, rid: bytes | None, reason: str, detail: str) -> bytes:
        self.refused[reason] += 1
        return cq.refusal(rid, reason, detail)

    def _op(self, op: str, rid: bytes, arg: Any, limit: int, after: Any) -> bytes:
        s = self.store
        if op == "genesis":
            return cq.answer(rid, self.genesis)
        if op in ("head", "block"):
            b = s.head() if op == "head" else s.get_block(arg)
            return cq.answer(rid, None if b is None else [block_row(b), s.certificate(b.height)])
        if op in ("prove_kv", "prove_account"):
            got = s.prove_kv(arg) if op == "prove_kv" else s.prove_account(arg)
            return cq.answer(rid, None if got is None else [block_row(got[0]), got[1], got[2]])
        if op == "receipt":
            return cq.answer(rid, s.get_receipt(arg))
        if op == "valsets":
            return cq.answer(rid, list(validator_sets(s).values()))
        if op == "kv_range":
            start = b"" if after is None else after + b"\x00"
            return self._page(rid, ([k, v] for k, v in s.kv_range(arg, limit + 1, start)), limit)
        if op == "txs":
            return self._page(rid, self._txs(arg, after), limit)
        return self._page(rid, self._devices(after, limit), limit)  # devices

    def _txs(self, type_: int, after: list[int] | None) -> Iterator[list[Any]]:
        h0, i0 = (0, -1) if after is None else after
        for t in self.store.txs_of_type(type_, h0):
            if t.height == h0 and t.idx <= i0:
                continue
            yield [t.id, t.height, t.idx, t.sender, t.seq, t.type, t.status, t.reason, t.events,
                   t.message]

    def _devices(self, after: bytes | None, limit: int) -> Iterator[bytes]:
        for i, rec in self.store.devices(after or b"", limit + 1):
            yield st.leaf(i, rec)

    @staticmethod
    def _page(rid: bytes, items: Iterator[Any], limit: int) -> bytes:
        """At most `limit` items that keep the answer under MAX_ANSWER (at
        least one, if one fits), and whether more follow."""
        out: list[Any] = []
        size = 64
        more = False
        for it in items:
            n = len(cbor.dumps(it))
            if len(out) >= limit or size + n > cq.MAX_ANSWER:
                more = True
                break
            out.append(it)
            size += n
        if more and not out:  # one item alone over the limit: not served
            return cq.refusal(rid, reasons.TOO_LARGE, "item over %d bytes" % cq.MAX_ANSWER)
        return cq.answer(rid, out, more)


class QueryServer:
    """Answers the domain's chain queries handed to it (see the module)."""

    def __init__(self, domain: str, open_store: Callable[[], Store],
                 publish: Callable[[str, bytes], None], *, genesis: bytes = b"",
                 rate: float = RATE, burst: int = BURST) -> None:
        self.domain = domain
        self.open_store = open_store
        self.publish = publish
        self.genesis = genesis
        self.rate, self.burst = rate, burst
        self.prefix = cq.subtree(domain)
        self.inbox: queue.Queue[tuple[str, bytes] | None] = queue.Queue(QUEUE)
        self.dropped = 0
        self.answered = 0
        self._worker = threading.Thread(target=self._work, name="queries", daemon=True)

    @property
    def subscription(self) -> str:
        return cq.requests_filter(self.domain)

    def is_query(self, topic: str) -> bool:
        return topic.startswith(self.prefix)

    def start(self) -> None:
        self._worker.start()

    def stop(self) -> None:
        if not self._worker.is_alive():
            return
        while True:
            try:
                self.inbox.put(None, timeout=0.1)
                break
            except queue.Full:  # the worker is busy: make room for the stop
                with contextlib.suppress(queue.Empty):
                    self.inbox.get_nowait()
        self._worker.join(timeout=10)

    def offer(self, topic: str, payload: bytes) -> None:
        """A message on the query topics (from any thread; never blocks):
        queued for the worker, or dropped if the queue is full or the topic
        is not a request."""
        who = cq.requester_of(self.domain, topic)
        if who is None:
            return
        try:
            self.inbox.put_nowait((who, bytes(payload)))
        except queue.Full:
            self.dropped += 1

    def _work(self) -> None:
        store = self.open_store()
        answerer = Answerer(store, self.genesis, self.rate, self.burst)
        try:
            while (item := self.inbox.get()) is not None:
                who, payload = item
                try:
                    out = answerer.answer(who, payload)
                except Exception as e:  # noqa: BLE001 - a store error: refuse, keep serving
                    log.warning("query of %s failed: %r", who, e)
                    out = cq.refusal(None, reasons.QUERY_FAILED, type(e).__name__)
                try:
                    self.publish(cq.answer_topic(self.domain, who), out)
                except Exception as e:  # noqa: BLE001 - not connected now: the answer is lost
                    log.info("answer to %s not sent: %r", who, e)
                self.answered += 1
        finally:
            store.close()


class QueryLink:
    """A QueryServer on an MQTT connection of its own (clean session, QoS 0)."""

    def __init__(self, server: QueryServer, broker_url: str, client_id: str,
                 login: tuple[str, str] | None = None) -> None:
        self.server = server
        self.ready = threading.Event()
        self.host, self.port = parse_url(broker_url)
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                        clean_session=True, protocol=mqtt.MQTTv311)
        if login is not None:
            c.username_pw_set(*login)
        c.on_connect = lambda cl, _u, _f, rc, _p: None if rc.is_failure else cl.subscribe(
            server.subscription, qos=0)
        c.on_subscribe = lambda *_a: self.ready.set()
        c.on_message = lambda _c, _u, m: server.offer(m.topic, m.payload)
        self.client = c
        server.publish = lambda topic, payload: c.publish(topic, payload, qos=0)

    def start(self) -> None:
        self.server.start()
        self.client.connect_async(self.host, self.port, keepalive=30)
        self.client.loop_start()

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
        self.server.stop()
