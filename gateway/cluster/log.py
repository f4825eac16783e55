"""The proposal log of a domain: one JetStream stream, replicated on 3 nodes,
whose entries are block proposals (opaque bytes to this module).

Ordering is a compare-and-set: `append(data, after=s)` writes only if the
stream's last sequence is still `s` (header Nats-Expected-Last-Sequence), so of
several gateways building on the same entry exactly one wins; the others get
ClusterError(wrong-last-seq). Each append carries a Nats-Msg-Id (default: the
SHA-256 of the data), so an append retried after a timeout or a leader change
is written at most once: the stream answers the retry as a duplicate with the
sequence of the first write.

`follow(from_seq, handler)` hands every entry from a sequence on to `handler`,
strictly in order, each once per Follower; an entry the handler refuses with a
TLError is recorded (on_refused) and skipped, the same way on every gateway."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import nats.errors
import nats.js.errors
from nats.js import JetStreamContext, api

from gateway.cluster import link
from gateway.errors import ClusterError
from shared.errors import TLError

log = logging.getLogger("thingledger.cluster")

REPLICAS = 3
MAX_ENTRY = 1 << 20  # bytes of one proposal (the servers' max_payload is 1 MiB)
DUPLICATE_WINDOW = 120.0  # s during which a retried Nats-Msg-Id is recognised
APPEND_TIMEOUT = 30.0  # s an append keeps retrying through a leader election
ATTEMPT_TIMEOUT = 1.0  # s one publish waits for its acknowledgement (then the same again)
# s one JetStream API request of the follower and of last_seq/get waits for its
# answer before it is sent again: a request that reaches a node while the
# cluster elects a stream or meta leader is dropped, never answered, and the
# client's own timeout (nats-py: 5 s) would then add up to 5 s after the
# election for each such request (a 6-12 s stall after a leader's SIGKILL,
# bench/README.md "The stream leader's SIGKILL")
API_TIMEOUT = 1.0
ERR_WRONG_LAST_SEQ = 10071  # JetStream's JSStreamWrongLastSequenceErrF
ERR_MSG_TOO_LARGE = 10054  # JSStreamMessageExceedsMaximumErr

RETRYABLE = (nats.errors.TimeoutError, nats.errors.NoRespondersError,
             nats.js.errors.NoStreamResponseError, nats.errors.ConnectionClosedError,
             nats.errors.ConnectionReconnectingError, nats.errors.StaleConnectionError,
             nats.js.errors.ServiceUnavailableError, asyncio.TimeoutError)


@dataclass(frozen=True)
class Entry:
    seq: int
    data: bytes
    msg_id: str | None


@dataclass(frozen=True)
class Appended:
    seq: int
    duplicate: bool  # the stream already had this msg id (an earlier try was written)
    attempts: int
    seconds: float  # from the first try to the acknowledgement


def check_entry(data: bytes, max_entry: int = MAX_ENTRY) -> None:
    """The log's own checks of an entry, before the consensus core's."""
    if not isinstance(data, bytes | bytearray | memoryview) or len(data) == 0:
        raise ClusterError(ClusterError.GARBAGE, "empty entry")
    if len(data) > max_entry:
        raise ClusterError(ClusterError.TOO_LARGE, f"{len(data)} > {max_entry} bytes")


class ProposalLog:
    """A domain's proposal stream on a JetStream context."""

    def __init__(self, js: JetStreamContext, domain: str, replicas: int = REPLICAS,
                 max_entry: int = MAX_ENTRY) -> None:
        self.js = js
        self.domain = domain
        self.stream = link.log_stream(domain)
        self.subject = link.log_subject(domain)
        self.replicas = replicas
        self.max_entry = max_entry

    def config(self) -> api.StreamConfig:
        return api.StreamConfig(
            name=self.stream, subjects=[self.subject], retention=api.RetentionPolicy.LIMITS,
            storage=api.StorageType.FILE, num_replicas=self.replicas,
            max_msg_size=self.max_entry, duplicate_window=DUPLICATE_WINDOW,
            discard=api.DiscardPolicy.NEW, allow_direct=True, deny_delete=True,
            deny_purge=True)

    async def ensure(self, timeout: float = APPEND_TIMEOUT) -> None:
        """Create the stream unless it exists (retrying while the cluster elects)."""
        await retry(lambda: self._ensure_once(), timeout, "create the log stream")

    async def _ensure_once(self) -> None:
        try:
            await self.js.stream_info(self.stream)
        except nats.js.errors.NotFoundError:
            await self.js.add_stream(self.config())

    async def last_seq(self, timeout: float = APPEND_TIMEOUT) -> int:
        """The sequence of the stream's last entry (0: empty)."""
        info = await retry(lambda: self.js.stream_info(self.stream), timeout, "read the log",
                           attempt=API_TIMEOUT)
        return int(info.state.last_seq)

    async def get(self, seq: int, timeout: float = APPEND_TIMEOUT) -> Entry:
        """One entry by its sequence."""
        m = await retry(lambda: self.js.get_msg(self.stream, seq, direct=True), timeout,
                         f"read entry {seq}", attempt=API_TIMEOUT)
        hdr = m.headers or {}
        return Entry(seq, bytes(m.data or b""), hdr.get("Nats-Msg-Id"))

    async def append(self, data: bytes, after: int, msg_id: str | None = None,
                     timeout: float = APPEND_TIMEOUT) -> Appended:
        """Write `data` as the entry following sequence `after`; retried with the
        same msg id (at most once written) until acknowledged or `timeout`.
        ClusterError: wrong-last-seq (lost the race), too-large, garbage,
        unavailable, refused."""
        check_entry(data, self.max_entry)
        return await append_cas(self.js, self.stream, self.subject, data, after,
                                msg_id=msg_id, timeout=timeout)

    def follow(self, from_seq: int, handler: Callable[[Entry], Awaitable[None]],
               on_refused: Callable[[Entry, TLError], None] | None = None) -> Follower:
        """Start handing entries from `from_seq` on to `handler` (see Follower)."""
        f = Follower(self, from_seq, handler, on_refused)
        f.start()
        return f


async def append_cas(js: JetStreamContext, stream: str, subject: str, data: bytes,
                     after: int, *, msg_id: str | None = None, per_subject: bool = False,
                     timeout: float = APPEND_TIMEOUT,
                     attempt_timeout: float = ATTEMPT_TIMEOUT) -> Appended:
    """The JetStream compare-and-set append, the one both the proposal log
    and the market operator's issuer (gateway/cluster/issuer.py) use:
    publish `data` on `subject` of `stream` only if the last sequence is
    still `after`: the stream's (Nats-Expected-Last-Sequence), or with
    `per_subject` that subject's own (Nats-Expected-Last-Subject-Sequence).
    Nats-Msg-Id (default: the SHA-256 of the data) makes a retry written at
    most once: a try after one that was written is answered as a duplicate
    with that write's sequence (a replicated stream; a single server checks
    the expected sequence first and refuses it as wrong-last-seq). Retried through RETRYABLE errors and
    unavailable streams (an election), each try waiting `attempt_timeout`
    for its acknowledgement, until `timeout`. ClusterError: wrong-last-seq
    (another append came first), too-large, unavailable (no acknowledgement
    in time: it may or may not have been written), refused (any other
    refusal of the server)."""
    if after < 0:
        raise ValueError("after: a stream sequence, 0 for an empty stream")
    expect = "Nats-Expected-Last-Subject-Sequence" if per_subject \
        else "Nats-Expected-Last-Sequence"
    headers = {"Nats-Msg-Id": msg_id or hashlib.sha256(data).hexdigest(),
               expect: str(after)}
    start = time.monotonic()
    deadline = start + timeout
    attempts = 0
    delay = 0.02
    while True:
        attempts += 1
        left = deadline - time.monotonic()
        try:
            ack = await js.publish(subject, bytes(data), stream=stream, headers=headers,
                                   timeout=max(0.05, min(attempt_timeout, left)))
            return Appended(int(ack.seq), bool(ack.duplicate), attempts,
                            time.monotonic() - start)
        except nats.js.errors.APIError as e:
            if e.err_code == ERR_WRONG_LAST_SEQ:
                raise ClusterError(ClusterError.WRONG_LAST_SEQ,
                                   f"not after {after}: {e.description}") from None
            if e.err_code == ERR_MSG_TOO_LARGE:
                raise ClusterError(ClusterError.TOO_LARGE, str(e.description)) from None
            if not isinstance(e, nats.js.errors.ServiceUnavailableError):
                raise ClusterError(ClusterError.REFUSED, str(e)) from None
            err: Exception = e
        except RETRYABLE as e:
            err = e
        if time.monotonic() + delay >= deadline:
            raise ClusterError(ClusterError.UNAVAILABLE,
                               f"no acknowledgement in {timeout} s ({attempts} tries, "
                               f"last: {err!r})")
        await asyncio.sleep(delay)  # back-off between tries, bounded
        delay = min(delay * 2, 0.25)


class Follower:
    """Reads the log from a sequence on, in order, through an ephemeral pull
    consumer; when the consumer is lost (its node died) it makes a new one from
    the next sequence, so an entry is handed to `handler` exactly once and none
    is skipped. `applied` is the last sequence handed over (refused ones too)."""

    BATCH = 64
    FETCH_WAIT = 1.0  # s a fetch waits for new entries

    def __init__(self, plog: ProposalLog, from_seq: int,
                 handler: Callable[[Entry], Awaitable[None]],
                 on_refused: Callable[[Entry, TLError], None] | None = None) -> None:
        if from_seq < 1:
            raise ValueError("from_seq: stream sequences start at 1")
        self.log = plog
        self.next = from_seq
        self.handler = handler
        self.on_refused = on_refused
        self.refused: list[tuple[int, str]] = []  # (seq, reason)
        self.resubscribes = 0
        self.on_note: Callable[[str], None] | None = None  # a console line per resubscribe
        self._lost_at: float | None = None  # monotonic time the consumer was found gone
        self._tries = 0  # subscribe attempts since then
        self.changed = asyncio.Event()  # set after each entry handed over
        self._task: asyncio.Task | None = None
        self.error: BaseException | None = None

    @property
    def applied(self) -> int:
        return self.next - 1

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="log-follower")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass

    async def wait_applied(self, seq: int, timeout: float) -> None:
        """Wait until entries up to `seq` were handed over (TimeoutError after `timeout`)."""
        async def until() -> None:
            while self.applied < seq:
                if self.error is not None:
                    raise self.error
                self.changed.clear()
                await self.changed.wait()
        await asyncio.wait_for(until(), timeout)

    async def _subscribe(self) -> JetStreamContext.PullSubscription:
        """A new ephemeral consumer from `next`; asyncio.TimeoutError after
        API_TIMEOUT (the request lost in an election: the caller sends it
        again; a consumer made whose answer was lost goes away unused after
        its inactive_threshold)."""
        cfg = api.ConsumerConfig(deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE,
                                 opt_start_seq=self.next, ack_policy=api.AckPolicy.NONE,
                                 inactive_threshold=10.0, mem_storage=True, num_replicas=1)
        return await asyncio.wait_for(
            self.log.js.pull_subscribe(self.log.subject, durable=None, stream=self.log.stream,
                                       config=cfg), API_TIMEOUT)

    async def _run(self) -> None:
        sub = None
        try:
            while True:
                if sub is None:
                    self._tries += 1
                    try:
                        sub = await self._subscribe()
                    except (RETRYABLE + (nats.js.errors.APIError,)) as e:
                        log.debug("log follower: subscribe failed (%r), again", e)
                        await asyncio.sleep(0.1)
                        continue
                    self._resubscribed()
                try:
                    msgs = await sub.fetch(self.BATCH, timeout=self.FETCH_WAIT)
                except RETRYABLE + (nats.js.errors.APIError,):
                    # nothing new, or the consumer is gone: the stream tells which
                    if await self._behind():
                        sub = await self._resubscribe(sub)
                    continue
                for m in msgs:
                    seq = m.metadata.sequence.stream
                    if seq < self.next:
                        continue  # a redelivery after a resubscribe
                    if seq > self.next:  # a gap: never skip an entry
                        sub = await self._resubscribe(sub)
                        break
                    await self._hand(Entry(seq, bytes(m.data or b""),
                                           (m.headers or {}).get("Nats-Msg-Id")))
        except asyncio.CancelledError:
            raise
        except BaseException as e:  # a handler's bug: stop, and say so in wait_applied
            self.error = e
            self.changed.set()
            log.exception("log follower stopped")
            raise
        finally:
            if sub is not None:
                try:
                    await sub.unsubscribe()
                except Exception:  # noqa: BLE001 - the connection may be gone already
                    pass

    async def _hand(self, entry: Entry) -> None:
        try:
            check_entry(entry.data, self.log.max_entry)
            await self.handler(entry)
        except TLError as e:
            self.refused.append((entry.seq, e.reason))
            if self.on_refused is not None:
                self.on_refused(entry, e)
        self.next = entry.seq + 1
        self.changed.set()

    async def _behind(self) -> bool:
        try:
            info = await asyncio.wait_for(self.log.js.stream_info(self.log.stream), API_TIMEOUT)
        except RETRYABLE + (nats.js.errors.APIError,):
            return True  # cannot tell (an election: no answer): a fresh consumer costs little
        return int(info.state.last_seq) >= self.next

    def _resubscribed(self) -> None:
        """A new consumer after one was lost: a console line (how long, how many tries)."""
        if self._lost_at is not None and self.on_note is not None:
            self.on_note(f"log follower: following again from {self.next}, "
                         f"{time.monotonic() - self._lost_at:.1f} s after its consumer "
                         f"was found gone, {self._tries} subscribe tries")
        self._lost_at = None
        self._tries = 0

    async def _resubscribe(self, sub: JetStreamContext.PullSubscription) -> None:
        self.resubscribes += 1
        self._lost_at = time.monotonic() if self._lost_at is None else self._lost_at
        try:
            await sub.unsubscribe()
        except Exception:  # noqa: BLE001 - the old consumer may be gone with its node
            pass
        return None


NO_SUITABLE_PEERS = 10005  # JetStream's API error code while a replica's node is not current


async def retry(op: Callable[[], Awaitable], timeout: float, what: str,
                attempt: float | None = None):
    """op() until it answers, through the errors of a cluster electing or a
    node starting: RETRYABLE, and a stream that cannot be placed yet ("no
    suitable peers for placement", seen when a gateway creates its streams
    just after the nodes started); ClusterError(unavailable) at the timeout.
    `attempt`: s one op() may take before it is abandoned and tried again
    (None: the op's own request timeout, nats-py's 5 s by default)."""
    deadline = time.monotonic() + timeout
    delay = 0.05
    while True:
        try:
            if attempt is None:
                return await op()
            return await asyncio.wait_for(op(), max(0.05, min(attempt,
                                                              deadline - time.monotonic())))
        except (*RETRYABLE, nats.js.errors.BadRequestError) as e:
            if isinstance(e, nats.js.errors.BadRequestError) \
                    and e.err_code != NO_SUITABLE_PEERS:
                raise
            if time.monotonic() + delay >= deadline:
                raise ClusterError(ClusterError.UNAVAILABLE,
                                   f"could not {what} in {timeout} s: {e!r}") from None
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.5)
