"""The market operator of a replicated domain (docs/CONSENSUS.md, "Market
operator"): exactly one gateway at a time makes the operator's transactions
(verdicts, CLOSE of what expired, grants, the agreement contract's
deployment), all signed by the domain's authority key with its per-sender
seq, and no two different ones ever share a seq.

- Who issues: a lease in a JetStream key-value bucket (`TL_OP_<domain>`, key
  `issuer`, value: the holder's validator id in hex), replicated like the streams.
  The holder renews it every RENEW_S by compare-and-set on the entry's
  revision; it counts itself the issuer only while its last renewal is less
  than HOLD_S old. Another gateway that has seen the same revision for
  LEASE_S (> HOLD_S), or whose holder is not live (its last will, or
  silence: gateway/cluster/liveness.py), takes the lease by the same compare-and-set: of
  several trying, one wins. A gateway that stops cleanly hands the lease
  back (an empty value, taken at once by the next).
- How its transactions enter: into the domain's intake stream like every
  transaction, but on the operator subject (`tlc.<domain>.op`), each append
  carrying Nats-Expected-Last-Subject-Sequence: the last sequence of that
  subject this gateway has read. So a second issuer (a lease that lapsed
  while its holder was paused, two holders during a take-over) cannot append
  after entries it has not seen: its append fails, it drops what it had
  signed and not appended, re-reads the subject and signs again from there.
  Every operator transaction in the stream was signed by a gateway that had
  read every earlier one, so their seqs strictly increase.
- Its next seq: the highest of the chain's last seq of the authority, the
  authority's seq pending in the mempool (every gateway reads the intake),
  and the seq of the last transaction on the operator subject; read again on
  taking the lease and after any append that failed or may have failed.

A transaction the market signed before that re-read (a non-issuer's, or one
dropped after a failed append) is never appended (its seq is not the one
expected next); the market signs it again once it is due (verdicts and
closes are kept until the chain shows them).

- What may still land: at each read of the subject the issuer also reads the
  operator transactions on it whose seq is above the chain's last seq of the
  authority (`in_flight`: a gallop back from the subject's last entry, then
  forward; a few direct reads, however long the stream). Some of them may not
  be in this gateway's mempool yet (its intake consumer behind, or a restart:
  its unacknowledged deliveries come again only after the ack wait). The
  market counts the grants among them as made (`MarketNode.grants_pending`), so
  a grant the former issuer appended is never signed a second time.
- Derived readings (the operator's derived services): made by the issuer's
  loop (`supply`), each claimed in the cluster before it is kept and
  published (gateway/cluster/derived.py); on taking the lease, every open
  derived stream is first continued from its claimed tail."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import nats.errors
import nats.js.errors
from nats.js import JetStreamContext, api

from gateway.cluster import link
from gateway.cluster.derived import DerivedTails
from gateway.cluster.log import RETRYABLE, append_cas, retry
from gateway.errors import ClusterError
from shared import errors
from shared import tx as txm

log = logging.getLogger("thingledger.cluster")

LEASE_KEY = "issuer"
RENEW_S = 1.0  # s between the holder's renewals (and the others' reads of the lease)
HOLD_S = 3.0  # s the holder counts itself the issuer after its last renewal
LEASE_S = 4.0  # s another gateway waits on one unchanged revision before taking the lease
RECENT_S = 10.0  # s an appended tx counts as pending before the mempool shows it
APPEND_TIMEOUT = 5.0  # s one append waits for its acknowledgement
IN_FLIGHT_MAX = 4096  # operator txs read back from the subject at most
# a cluster request that failed (nats.js.errors.APIError is a nats.errors.Error)
FAILED = (*RETRYABLE, nats.errors.Error)


class IssuerLease:
    """The lease of the issuer in a KV bucket (compare-and-set on its revision)."""

    def __init__(self, js: JetStreamContext, domain: str, me: str, replicas: int = 3,
                 lease_s: float = LEASE_S, hold_s: float = HOLD_S,
                 offline: Callable[[str], bool] | None = None) -> None:
        self.js = js
        self.offline = offline  # holder -> not live (last will or silence: liveness.py)
        self.bucket = link.operator_bucket(domain)
        self.me = me.encode()
        self.replicas = replicas
        self.lease_s = lease_s
        self.hold_s = hold_s
        self.kv: Any = None
        self.revision = 0  # of the entry as this gateway last wrote or read it
        self.renewed = -1e9  # monotonic time of this gateway's last successful write
        self.seen_at = 0.0  # when the current revision was first seen (held by another)
        self.holder = b""
        self.closed = False  # released at stop: never taken again

    async def ensure(self, timeout: float = 30.0) -> None:
        async def once() -> Any:
            try:
                return await self.js.key_value(self.bucket)
            except nats.js.errors.BucketNotFoundError:
                return await self.js.create_key_value(
                    bucket=self.bucket, history=1, replicas=self.replicas,
                    storage=api.StorageType.FILE)
        self.kv = await retry(once, timeout, "create the operator lease")

    @property
    def holding(self) -> bool:
        return time.monotonic() - self.renewed < self.hold_s

    async def step(self) -> bool:
        """Read the lease; renew it if held, take it if free or lapsed. Whether
        this gateway is the issuer now."""
        if self.closed:
            return False
        now = time.monotonic()
        try:
            try:
                e = await self.kv.get(LEASE_KEY)
                value, rev = bytes(e.value or b""), int(e.revision)
            except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError):
                value, rev = b"", 0
            if rev != self.revision or value != self.holder:
                self.revision, self.holder, self.seen_at = rev, value, now
            mine = value == self.me
            if value and not mine:
                self.renewed = -1e9  # another gateway holds it: stop at once
            gone = self.offline is not None and bool(value) \
                and self.offline(value.decode(errors="replace"))
            if mine or not value or gone or now - self.seen_at >= self.lease_s:
                # renew (ours: also one held before a restart), or take (free, lapsed)
                sent = time.monotonic()
                self.revision = await self.kv.update(LEASE_KEY, self.me, last=rev)
                self.holder, self.renewed, self.seen_at = self.me, sent, sent
        except nats.js.errors.KeyWrongLastSequenceError:
            self.renewed = -1e9  # another gateway wrote it first
        except FAILED as ex:
            log.info("operator lease: %r", ex)  # holding runs out by itself
        return self.holding

    async def release(self) -> None:
        """Hand the lease back (a clean stop): the next gateway takes it at once."""
        held = self.holding
        self.closed, self.renewed = True, -1e9
        if self.kv is None or not held:
            return
        try:  # bounded: a stop does not wait for a cluster that is gone
            await asyncio.wait_for(self.kv.update(LEASE_KEY, b"", last=self.revision), 2.0)
        except FAILED as ex:
            log.info("operator lease not released: %r", ex)


class OperatorIssuer:
    """Appends the market operator's transactions to the intake's operator
    subject while this gateway holds the lease (see the module's text).

    `market`: the gateway's MarketNode (its `op` signs; `issuing` and
    `take_over` switch its operator work on); `state`: the head state;
    `pending_seq(id)`: the mempool's highest pending seq of a sender;
    `pending(tx id)`: whether the mempool holds that tx; `queued()`: the
    mempool's pending txs."""

    def __init__(self, js: JetStreamContext, domain: str, lease: IssuerLease | None,
                 market: Any, state: Callable[[], Any],
                 pending_seq: Callable[[bytes], int | None], pending: Callable[[bytes], bool],
                 queued: Callable[[], Any], on_event: Callable[[str], None],
                 tails: DerivedTails | None = None) -> None:
        self.js = js
        self.tails = tails  # the derived readings claimed (gateway/cluster/derived.py)
        self.revisions: dict[bytes, int] = {}  # agreement -> its tail's revision known here
        self.stream = link.intake_stream(domain)
        self.subject = link.operator_subject(domain)
        self.lease = lease
        self.market = market
        self.op = market.op
        self.state = state
        self.pending_seq = pending_seq
        self.pending = pending
        self.queued = queued
        self.on_event = on_event
        self.holding = False
        self.synced = False  # the subject and seqs were read since the last doubt
        self.last = 0  # the operator subject's last stream sequence, as read / appended
        self.next = 0  # the seq the next transaction must carry
        self.queue: deque[bytes] = deque()
        self.recent: dict[bytes, float] = {}  # tx id -> when queued
        self.appended = 0
        self.conflicts = 0  # appends refused: another issuer appended first
        self.wake = asyncio.Event()
        self.in_flight: list[txm.Tx] = []  # on the subject, above the chain's seq (last read)

    # -- the market's side (synchronous) ----------------------------------------------
    def submit(self, msg: bytes) -> bytes | None:
        """Queue an operator tx for the intake: its id while it is pending (queued,
        appended recently, or in the mempool), None when not taken (this gateway
        does not issue, or `msg` was signed before the last re-read)."""
        tid = txm.tx_id(msg)
        now = time.monotonic()
        if self.pending(tid) or now - self.recent.get(tid, -RECENT_S) < RECENT_S:
            return tid
        if not (self.holding and self.synced):
            return None
        try:
            seq = txm.decode(msg).seq
        except errors.TLError:
            return None
        if seq != self.next:
            return None  # not signed from the seq read last: never appended
        self.next += 1
        self.queue.append(msg)
        if len(self.recent) > 4096:
            self.recent = {k: t for k, t in self.recent.items() if now - t < RECENT_S}
        self.recent[tid] = now
        self.wake.set()
        return tid

    # -- the stream's side ------------------------------------------------------------
    async def sync(self) -> None:
        """Read the operator subject's last entry and the seqs known here; the
        market's operator signs from there."""
        try:
            m = await self.js.get_last_msg(self.stream, self.subject)
            last, data = int(m.seq), bytes(m.data or b"")
        except nats.js.errors.NotFoundError:
            last, data = 0, b""
        seq = 0
        if data:
            try:
                t = txm.decode(data)
                seq = t.seq if t.sender == self.op.id else 0
            except errors.TLError:
                pass
        rec = self.state().get(self.op.id)
        committed = rec.last_seq if rec is not None else 0
        # (the last entry may be another's: what lies before it counts too)
        self.in_flight = await self.read_in_flight(last, committed) if last else []
        floor = max(seq, committed, self.pending_seq(self.op.id) or 0,
                    max((t.seq for t in self.in_flight), default=0))
        self._forget_queue()
        self.last, self.next, self.op.seq = last, floor + 1, floor
        self.synced = True
        self.market.grants_pending(self.in_flight)

    async def _op_at(self, stream_seq: int) -> tuple[int, txm.Tx | None] | None:
        """The first entry of the operator subject at or after `stream_seq`:
        (its stream sequence, the authority's tx or None for another's);
        None past the last."""
        try:
            m = await self.js.get_msg(self.stream, stream_seq, subject=self.subject, next=True)
        except nats.js.errors.NotFoundError:
            return None
        try:
            t = txm.decode(bytes(m.data or b""))
        except errors.TLError:
            return int(m.seq), None
        return int(m.seq), t if t.sender == self.op.id else None

    async def read_in_flight(self, last: int, committed: int) -> list[txm.Tx]:
        """The authority's txs on the subject up to stream sequence `last`
        whose seq is above `committed` (the chain's), in order. The subject's
        seqs increase with the stream sequence, so: gallop back from `last`
        to an entry at or below `committed` (or the stream's start), then read
        forward from there."""
        start, step = last, 1
        while start > 1:
            start = max(1, last - step)
            e = await self._op_at(start)
            while e is not None and e[1] is None and e[0] < last:  # another's: the next
                e = await self._op_at(e[0] + 1)
            if e is not None and e[1] is not None and e[1].seq <= committed:
                break
            step *= 2
        out: list[txm.Tx] = []
        at = start
        while at <= last and len(out) < IN_FLIGHT_MAX:
            e = await self._op_at(at)
            if e is None or e[0] > last:
                break
            if e[1] is not None and e[1].seq > committed:
                out.append(e[1])
            at = e[0] + 1
        return out

    async def flush(self) -> None:
        """Append the queued txs in order, each after the last one read or
        appended; on a refusal (another issuer appended first) or a doubt
        (no acknowledgement) drop the rest and read the subject again."""
        while self.queue and self.holding and self.synced:
            msg = self.queue[0]
            try:  # one try: a doubt is settled by reading the subject again
                a = await append_cas(self.js, self.stream, self.subject, msg, self.last,
                                     msg_id=txm.tx_id(msg).hex(), per_subject=True,
                                     timeout=APPEND_TIMEOUT, attempt_timeout=APPEND_TIMEOUT)
            except ClusterError as e:
                if e.reason == ClusterError.WRONG_LAST_SEQ:
                    self.conflicts += 1
                    self._doubt(f"operator: another gateway appended operator transactions "
                                f"after {self.last}: dropped {len(self.queue)} unsent, "
                                "reading them again")
                elif e.reason == ClusterError.UNAVAILABLE:
                    self._doubt(f"operator: append not acknowledged ({e.detail})")
                else:
                    self._doubt(f"operator: append refused ({e.detail})")
                raise
            except FAILED as e:  # (a connection error append_cas does not retry)
                self._doubt(f"operator: append not acknowledged ({e!r})")
                raise ClusterError(ClusterError.UNAVAILABLE, repr(e)) from None
            self.queue.popleft()
            self.last = a.seq
            self.appended += 1

    def _pending_ops(self) -> list[txm.Tx]:
        """The operator's txs that may still land: in the mempool, read on the
        subject, queued here."""
        out = [t for t in self.queued() if t.sender == self.op.id] + list(self.in_flight)
        for m in self.queue:
            try:
                out.append(txm.decode(m))
            except errors.TLError:
                pass
        return out

    def _issuing(self) -> bool:
        return self.holding and self.synced and self.market.issuing \
            and (self.lease is None or self.lease.holding)

    async def supply(self) -> None:
        """The derived readings due (MarketNode.claims): each one claimed in the
        cluster (gateway/cluster/derived.py) before it is kept and published;
        a stream not continued since this gateway began issuing is first
        adopted from the chain, the pending commits and the claimed tail.
        Nothing is published once the lease is lost, even mid-way."""
        assert self.tails is not None
        m = self.market
        live = set()
        for s in m.supplies():
            live.add(s.aid)
            if not self._issuing():
                return
            now = time.time()
            if s.adopted:
                m.stalled(s, self.state())
            if not s.adopted or s.aid not in self.revisions:
                try:
                    t = await self.tails.read(s.aid)
                except ClusterError as e:  # (garbage) this stream waits; the others go on
                    self.on_event(f"operator: derived tail {s.aid.hex()[:8]} unreadable "
                                  f"({e.reason}: {e.detail}): its readings wait")
                    continue
                if not self._issuing():
                    return
                self.revisions[s.aid] = t.revision
                m.adopt(s.aid, self.state(), t.first, t.batch, t.readings, self._pending_ops(),
                        now)
                continue
            if s.index >= s.quantity or now < s.next_at:
                continue
            msg = m.next_derived(s, now)
            if msg is None:
                continue
            first, batch, held = m.tail(s, self.state())
            try:
                rev = await self.tails.write(s.aid, first, batch, [*held, msg],
                                             self.revisions[s.aid])
            except ClusterError as e:
                if e.reason != ClusterError.TOO_LARGE:  # another wrote: read again
                    self.revisions.pop(s.aid, None)
                self.on_event(f"operator: derived reading {s.aid.hex()[:8]} index {s.index} "
                              f"not claimed ({e.reason}): " + (
                                  "waiting for its commits" if e.reason == ClusterError.TOO_LARGE
                                  else "reading the tail again"))
                continue
            except FAILED as e:  # maybe written: read again
                self.revisions.pop(s.aid, None)
                self.on_event(f"operator: derived reading {s.aid.hex()[:8]} index {s.index} "
                              f"not claimed ({e!r}): reading the tail again")
                continue
            if not self._issuing():
                return  # the lease was lost meanwhile: the next issuer sends it
            self.revisions[s.aid] = rev
            m.emit(s, msg, self.state(), now)
        for aid in [a for a in self.revisions if a not in live]:  # closed
            del self.revisions[aid]
            await self.tails.forget(aid)

    def _doubt(self, why: str) -> None:
        self._forget_queue()
        self.synced = False
        self.on_event(why)

    def _forget_queue(self) -> None:
        """Drop what was signed and not appended (never pending, never sent)."""
        for m in self.queue:
            self.recent.pop(txm.tx_id(m), None)
        self.queue.clear()

    async def take(self) -> None:
        """This gateway becomes the issuer: read the subject, then the market
        sends what is due (what the former issuer had pending is in the mempool)."""
        await self.sync()  # (a failure: taken again at the next round)
        self.holding = True
        self.revisions.clear()  # every derived stream adopted again (supply)
        self.market.issuing = True
        pending = {t.id: t for t in self.queued() if t.sender == self.op.id}
        for t in self.in_flight:  # appended, maybe not read into the mempool yet
            pending.setdefault(t.id, t)
        self.market.take_over(self.state(), sorted(pending.values(), key=lambda t: t.seq))
        self.on_event(f"operator: this gateway issues the market operator's transactions "
                      f"(next seq {self.next})")

    def drop(self) -> None:
        self.holding = False
        self.synced = False
        self.market.issuing = False
        self.revisions.clear()
        self._forget_queue()
        self.on_event("operator: another gateway issues the market operator's transactions")

    async def run(self) -> None:
        """The lease and the appends, for ever (cancelled at stop)."""
        assert self.lease is not None
        self.market.issuing = False
        next_step = 0.0
        while True:
            if self.lease.closed:  # stopping: the lease was handed back
                self.holding = self.market.issuing = False
                return
            now = time.monotonic()
            if now >= next_step:
                held = await self.lease.step()
                next_step = now + RENEW_S
                if held and not self.holding:
                    await self._try(self.take())
                elif not held and self.holding:
                    self.drop()
            if self.holding and not self.synced:
                await self._try(self.sync())
            if self.holding and self.synced and self.queue:
                await self._try(self.flush())
            if self.tails is not None and self.market.claims and self._issuing():
                await self._try(self.supply())
            self.wake.clear()
            if not self.queue or not self.synced:
                try:
                    await asyncio.wait_for(self.wake.wait(),
                                           max(0.05, next_step - time.monotonic()))
                except TimeoutError:
                    pass

    async def _try(self, step: Any) -> None:
        try:
            await step
        except ClusterError:
            pass  # said in on_event; read again at the next round
        except FAILED as e:
            self.synced = False
            log.info("operator: %r", e)
            await asyncio.sleep(0.2)

    async def stop(self) -> None:
        if self.lease is not None:
            await self.lease.release()
