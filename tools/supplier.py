"""A supplier in one domain's market, host side (docs/MARKET.md): what a
supplier board does, for a process that is not a board: it offers, learns
of its agreements from the MATCH notices on its rx topic (sealed by the
domain's authority, checked with shared/notice.py), streams signed readings
(shared/stream.py) on tl/<d>/data/<own id>/<agreement> and commits them in
batches with CONTRACT_CALL commit(agreement, batch, first, count, root), so
the domain's operator judges them and pays it, as it pays a board.

`Supplier.serve` supplies every agreement it is matched in from a value
function (the cross-domain demo's sam); the cross-domain reseller
(tools/resell.py) uses the same pieces, `Stream` for each agreement it
serves, with readings it bought in another domain.

Transactions go through tools/relay.submitter (the domain's brokers in
turn, each receipt checked against the authority or the domain's set).
The rx listener, the streams' readings and the transactions share the
supplier's one MQTT connection to its domain (Side.connection: one per login; it
moves to the next of the domain's brokers when its broker dies, the rx
subscription with it).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from gateway.market.ledger import rules as market
from shared import errors, messages, notice, stream, streamroot, topics, txnames
from shared import messages_gateway as mg
from shared import tx as txm
from tools.keys import KeyPair
from tools.mqtt_ask import Line, Silent
from tools.relay import Seq, Side, ensure_registered, submitter

FUEL = 50_000  # of a commit call


class SupplyError(RuntimeError):
    """A transaction of the supplier was refused (the message says which and why)."""


@dataclass(frozen=True)
class Match:
    """A MATCH notice as the supplier received it (docs/MARKET.md)."""

    id: bytes
    buyer: bytes
    service: str
    price: int
    quantity: int
    interval_s: int
    expiry: int  # block time
    left: int  # seconds from its sealing to the expiry
    next_index: int | None  # told again after a restart: the first index not committed

    @classmethod
    def of(cls, m: dict) -> Match:
        return cls(bytes(m[mg.M_AGREEMENT]), bytes(m[mg.M_BUYER]), m[mg.M_SERVICE],
                   m[mg.M_PRICE], m[mg.M_QUANTITY], m[mg.M_INTERVAL], m[mg.M_EXPIRY],
                   m[mg.M_LEFT], m.get(mg.M_NEXT))


class Supplier:
    def __init__(self, key: KeyPair, side: Side, *, seq: Seq | None = None,
                 timeout: float = 15.0, line: Callable[[str], None] = print) -> None:
        self.key = key
        self.side = side
        self.domain = side.domain
        self.seq = seq or Seq()
        self.timeout = timeout
        self.line = line
        self._submit = submitter({side.domain: side}, timeout, key)
        self.matches: queue.Queue[Match] = queue.Queue()
        self.ended: set[bytes] = set()  # agreements an ENDED notice closed
        self._seen: set[bytes] = set()
        self._line: Line | None = None
        self._unlisten: Callable[[], None] | None = None
        self._lock = threading.Lock()

    @property
    def connection(self) -> Line:
        """The supplier's connection to its domain (held until `stop`)."""
        with self._lock:
            if self._line is None:
                self._line = self.side.connection(self.key, self.timeout)
            return self._line

    def _send(self, domain: str, msg: bytes) -> tuple[bool, str]:
        _ = self.connection  # held: the submissions go over it
        return self._submit(domain, msg)

    # -- transactions ---------------------------------------------------------------
    def register(self) -> None:
        _ = self.connection
        problem = ensure_registered(self.side, self.key, self.seq, self.timeout)
        if problem:
            raise SupplyError("cannot register in %s: %s" % (self.domain, problem))

    def tx(self, type_: int, body: dict) -> None:
        """Sign and submit one transaction; SupplyError unless committed ok."""
        with self._lock:  # one seq after the other (the stream's and the main thread's)
            msg = txm.make(self.key.private, self.key.id, type_, self.domain, self.seq(), 0,
                           body)
        ok, reason = self._send(self.domain, msg)
        if not ok:
            raise SupplyError("%s refused in %s: %s" % (txnames.name(type_), self.domain,
                                                        reason))

    def offer(self, service: str, price: int, interval_s: int = 1, *, unit: str = "cC",
              valid_s: int = 600, location: str = "", schema: int = 1) -> None:
        self.tx(txm.TYPE_OFFER, {1: service, 2: unit, 3: price, 4: interval_s, 5: location,
                                 6: valid_s, 7: schema})

    def withdraw(self, service: str) -> None:
        self.tx(txm.TYPE_WITHDRAW, {1: service})

    def close(self, agreement: bytes) -> None:
        """CLOSE the agreement (a supplier may at any time): the buyer's
        unspent escrow goes back to it."""
        self.tx(txm.TYPE_CLOSE, {1: agreement})

    # -- notices ----------------------------------------------------------------------
    def listen(self) -> None:
        """Subscribe to the rx topic: each MATCH as supplier (sealed by the
        authority) goes to `matches`, once per agreement. The subscription
        is the supplier's connection's (asked again while the broker refuses
        it, and on each next connection)."""
        if self._unlisten is not None:
            return
        rx = topics.rx(self.domain, self.key.id.hex())
        try:
            self._unlisten = self.connection.subscribe(rx, lambda _t, p: self._notice(p), qos=1)
        except Silent as e:
            raise SupplyError("the rx subscription in %s: %s" % (self.domain, e)) from None

    def _notice(self, payload: bytes) -> None:  # paho's thread
        if payload[:1] != bytes([notice.NOTICE_BYTE]):
            return  # a receipt: the submitter's
        try:
            m = notice.open_notice(payload, self.side.authority)
        except errors.TLError:
            return  # unsealed, forged, or a rejection: not a notice to act on
        kind = m[messages.M_KIND]
        if kind == messages.KIND_MATCH and m.get(mg.M_ROLE) == "supplier":
            got = Match.of(m)
            with self._lock:
                if got.id in self._seen:
                    return  # told twice
                self._seen.add(got.id)
            self.matches.put(got)
        elif kind == messages.KIND_ENDED:
            self.ended.add(bytes(m[mg.M_AGREEMENT]))

    def stop(self) -> None:
        """No more listening; the connection released."""
        with self._lock:
            unlisten, line, self._unlisten, self._line = self._unlisten, self._line, None, None
        if unlisten is not None:
            unlisten()
        if line is not None:
            line.release()

    # -- readings -------------------------------------------------------------------
    def stream(self, agreement: bytes) -> Stream:
        return Stream(self, agreement)

    def supply(self, m: Match, values: Callable[[int], tuple[int, int]], batch: int = 2,
               pace: float | None = None) -> None:
        """Stream the agreement's readings (`values(index)`: value, scale),
        committing every `batch` of them; the first one `pace` seconds
        after the start (default the offer's interval + 1 s, as a board:
        the buyer subscribes meanwhile)."""
        s = self.stream(m.id)
        time.sleep(m.interval_s + 1 if pace is None else pace)
        first = m.next_index or 0
        s.first = s.next = first
        try:
            for i in range(first, m.quantity):
                if m.id in self.ended:
                    return
                s.reading(i, *values(i))
                if i + 1 - s.first >= batch or i + 1 == m.quantity:
                    s.commit()
        finally:
            s.close()

    def serve(self, values: Callable[[int], tuple[int, int]], stop: threading.Event,
              batch: int = 2, pace: float | None = None) -> None:
        """Supply each agreement this supplier is matched in, one after
        the other, until `stop` is set; a refusal is said, not raised."""
        while not stop.is_set():
            try:
                m = self.matches.get(timeout=0.2)
            except queue.Empty:
                continue
            try:
                self.supply(m, values, batch, pace)
            except SupplyError as e:
                self.line("supplier %s: %s" % (self.key.id.hex()[:8], e))


class Stream:
    """One agreement's readings as this supplier signs them, and their
    batch commitments (batch numbers from 0, each batch's first index the
    one after the last committed, as the agreement contract requires)."""

    def __init__(self, supplier: Supplier, agreement: bytes) -> None:
        self.s = supplier
        self.agreement = agreement
        self.topic = topics.data(supplier.domain, supplier.key.id.hex() + "/" + agreement.hex())
        self.batch_no = 0
        self.first = 0  # the index of the batch's first reading
        self.next = 0  # the next index to stream
        self._batch = streamroot.Batch()
        self._line: Line | None = None  # the supplier's connection, held until `close`

    def reading(self, index: int, value: int, scale: int) -> bytes:
        """Sign reading `index` and publish it (QoS 1, waited for); it joins
        the batch being filled once the broker acknowledged it (SupplyError
        otherwise: a commit never covers a reading the buyer may not get).
        Indices go up by one."""
        if index != self.next:
            raise SupplyError("reading %d out of order (next %d)" % (index, self.next))
        k = self.s.key
        r = stream.reading(k.private, k.id, self.agreement, index, value, scale)
        if self._line is None:
            self._line = self.s.side.connection(k, self.s.timeout)
        try:
            self._line.publish(self.topic, r, qos=1, timeout=self.s.timeout)
        except Silent as e:  # a batch root never covers what the broker did not take
            raise SupplyError("reading %d not acknowledged by %s within %.0f s (%s)"
                              % (index, self._line.url or self.s.side.broker, self.s.timeout,
                                 e)) from None
        self._batch.add(r)
        self.next = index + 1
        return r

    @property
    def pending(self) -> int:
        """Readings streamed and not committed yet."""
        return self._batch.count

    def commit(self) -> int:
        """Commit the readings streamed since the last commit (their RFC 6962
        root): the batch number committed."""
        count = self._batch.count
        if not count:
            raise SupplyError("nothing to commit")
        self.s.tx(txm.TYPE_CONTRACT_CALL, {
            1: market.AGREEMENT, 2: "commit",
            3: [self.agreement, self.batch_no, self.first, count, self._batch.root()],
            4: 0, 5: FUEL})
        self.s.line("%s commits readings %d..%d of %s in %s (batch %d)"
                    % (self.s.key.id.hex()[:8], self.first, self.first + count - 1,
                       self.agreement.hex()[:8], self.s.domain, self.batch_no))
        done = self.batch_no
        self.batch_no += 1
        self.first += count
        self._batch = streamroot.Batch()
        return done

    def close(self) -> None:
        line, self._line = self._line, None
        if line is not None:
            line.release()
