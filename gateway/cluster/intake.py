"""Transactions into a replicated domain, each committed exactly once and
none lost (docs/CONSENSUS.md, "Replication over NATS JetStream"): devices
publish on MQTT tl/<domain>/tx to any node's MQTT listener; the stream
TL_TX_<domain> (3 replicas) keeps what the cluster took, and every gateway
reads all of it, in stream order, through its own durable consumer
(`gw-<name>`, 3 replicas).

Every gateway therefore holds every pending transaction in its mempool, and
whichever gateway proposes the next block includes it; the proposal log
orders the blocks, so a transaction is in the chain once: a gateway drops a
delivery whose seq the chain has passed (`split_committed`, by (sender, seq),
the chain's replay protection). A gateway acknowledges a delivery (`settle`)
only once the transaction is committed in a block of the log, by any gateway,
or finally refused. A gateway that dies gets its unacknowledged deliveries
again when it comes back (after `ack_wait`) and settles them against the chain.

(A work queue shared by the gateways was the other choice: it hands a dead
gateway's transactions to another only after `ack_wait`, by when that one may
have committed a later seq of the same sender, and the earlier one would be
refused as a replay: lost.)

Garbage (not a structurally valid transaction) is terminated at once with
its reason code counted in `refused`: it is never delivered again.

The market operator's transactions come into the same stream on a subject of
their own (`tlc.<domain>.op`, gateway/cluster/issuer.py), appended there by
the issuing gateway with a compare-and-set on that subject's last sequence;
every gateway's consumer reads both subjects in stream order. A message on
the operator subject from another sender than `operator` (the authority) is
terminated (not-authorized)."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext, api

from gateway.cluster import link
from gateway.cluster.log import RETRYABLE, retry
from shared import cbor, txdecode
from shared import tx as txm
from shared.errors import TLError
from shared.reasons import NOT_AUTHORIZED

log = logging.getLogger("thingledger.cluster")

REPLICAS = 3
ACK_WAIT = 30.0  # s before an unacknowledged delivery comes again (to the same gateway)
MAX_AGE = 24 * 3600.0  # s a transaction stays in the stream: a gateway down longer
                       # than this misses it, its device's resend brings it back
MAX_ACK_PENDING = 10_000
MAX_TX = cbor.MAX_SIZE  # one message is at most 4 KiB (docs/PROTOCOL.md)
COPIES = 4 * MAX_ACK_PENDING  # tx ids IntakeCopies remembers each way (bounded memory)


@dataclass(frozen=True)
class Delivery:
    data: bytes
    sender: bytes
    seq: int
    deliveries: int  # 1 on the first delivery, more when redelivered
    msg: Msg
    tx: txdecode.Tx | None = None  # the decoded message (structure only, not signature)
    committed: bool = False  # fetch(known=): the first copy of a tx the chain holds, not decoded

    @property
    def key(self) -> tuple[bytes, int]:
        """What the chain deduplicates by: the sender's id and its seq."""
        return self.sender, self.seq

    @property
    def tx_id(self) -> bytes:
        return self.tx.id if self.tx is not None else txm.tx_id(self.data)


class IntakeCopies:
    """Which delivery of a transaction the chain holds is a device's resend,
    to be answered with the stored receipt, and which is only the first copy
    this gateway reads of it, answered already by its block's finality (by
    the gateway serving the device: docs/CONSENSUS.md, "answering devices").

    Every gateway reads the whole stream in order, at its own pace, and
    follows the proposal log at another: a gateway whose intake is behind
    the log (a burst; a proposer faster than it) applies, finalises and
    answers blocks whose transactions its intake has not brought yet. When
    the intake brings them, the chain holds them, yet nobody sent them
    again. So: a transaction committed before this gateway's intake brought
    any copy of it is noted `ahead`; the first copy the intake then brings
    is settled silently, and so is a redelivery of any stream entry (the
    same entry again after ack_wait or a restart: not a resend); every other
    copy of a committed transaction is a later entry in the stream, which a
    device published again: answered.

    Both sides are bounded (oldest forgotten first): a gateway whose intake
    is more than `bound` transactions behind the log answers the first
    copies beyond that once more, as it does after a restart for the
    transactions committed before it and not read by then (a second receipt
    of a committed transaction: harmless to a device, never a second
    commit)."""

    def __init__(self, bound: int = COPIES) -> None:
        self.bound = bound
        self._read: dict[bytes, None] = {}  # brought by the intake, not committed yet
        self._ahead: dict[bytes, None] = {}  # committed before the intake brought them

    def read(self, tx_id: bytes) -> None:
        """The intake brought a copy of a transaction not committed (yet)."""
        self._read[tx_id] = None
        if len(self._read) > self.bound:  # refused ones no block will take
            del self._read[next(iter(self._read))]

    def committed(self, tx_ids: list[bytes]) -> None:
        """A block applied here holds these transactions."""
        for t in tx_ids:
            if t in self._read:
                del self._read[t]
            else:  # its intake has not brought it yet
                self._ahead[t] = None
        while len(self._ahead) > self.bound:
            del self._ahead[next(iter(self._ahead))]

    def first_copy(self, tx_id: bytes) -> bool:
        """Whether a copy the intake brings now is the first of a transaction
        a block committed before (then forgotten: a later copy is a resend).
        TxIntake.fetch asks before decoding: such a copy needs only its
        acknowledgement."""
        if tx_id in self._ahead:
            del self._ahead[tx_id]
            return True
        return False

    def is_resend(self, d: Delivery) -> bool:
        """A delivery of a transaction the chain holds: whether a device sent
        it again (True), or it is this gateway's first copy of it or a
        redelivery (False)."""
        return not self.first_copy(d.tx_id) and d.deliveries == 1


def split_committed(deliveries: list[Delivery], last_seq: Callable[[bytes], int]
                    ) -> tuple[list[Delivery], list[Delivery]]:
    """(fresh, already) of a batch: `already` holds the deliveries whose seq the
    chain has passed (last_seq(sender): the sender's last committed seq, 0 for
    none) and repeats within the batch; settle them without applying them."""
    fresh: list[Delivery] = []
    already: list[Delivery] = []
    seen: set[tuple[bytes, int]] = set()
    for d in deliveries:
        if d.seq <= last_seq(d.sender) or d.key in seen:
            already.append(d)
        else:
            seen.add(d.key)
            fresh.append(d)
    return fresh, already


class TxIntake:
    """A gateway's reader of the domain's transaction stream."""

    def __init__(self, js: JetStreamContext, domain: str, gateway: str,
                 replicas: int = REPLICAS, ack_wait: float = ACK_WAIT,
                 max_age: float = MAX_AGE, operator: bytes | None = None,
                 nc: Client | None = None) -> None:
        self.js = js
        self.operator = operator  # the only sender allowed on the operator subject
        self.nc = nc  # the connection of `js`: settle() flushes its acks on it
        self.domain = domain
        self.stream = link.intake_stream(domain)
        self.subject = link.intake_subject(domain)
        self.op_subject = link.operator_subject(domain)
        self.replicas = replicas
        self.ack_wait = ack_wait
        self.max_age = max_age
        self.consumer = link.intake_consumer(gateway)
        self.refused: Counter[str] = Counter()  # reason -> garbage terminated
        self._sub: JetStreamContext.PullSubscription | None = None

    def stream_config(self) -> api.StreamConfig:
        return api.StreamConfig(
            name=self.stream, subjects=[self.subject, self.op_subject],
            retention=api.RetentionPolicy.LIMITS, storage=api.StorageType.FILE,
            num_replicas=self.replicas, max_msg_size=MAX_TX, duplicate_window=120.0,
            max_age=self.max_age, discard=api.DiscardPolicy.OLD)

    def consumer_config(self) -> api.ConsumerConfig:
        return api.ConsumerConfig(
            durable_name=self.consumer, name=self.consumer,  # both subjects
            ack_policy=api.AckPolicy.EXPLICIT, ack_wait=self.ack_wait,
            deliver_policy=api.DeliverPolicy.ALL, max_deliver=-1,
            max_ack_pending=MAX_ACK_PENDING, num_replicas=self.replicas)

    async def ensure(self, timeout: float = 30.0) -> None:
        """Create the stream and this gateway's durable consumer unless they exist."""
        async def once() -> None:
            try:
                info = await self.js.stream_info(self.stream)
                if self.op_subject not in (info.config.subjects or []):  # made before it
                    await self.js.update_stream(self.stream_config())
            except nats.js.errors.NotFoundError:
                await self.js.add_stream(self.stream_config())
            try:
                c = await self.js.consumer_info(self.stream, self.consumer)
                if c.config.filter_subject:  # made before the operator subject: widen it
                    await self.js.add_consumer(self.stream, self.consumer_config())
            except nats.js.errors.NotFoundError:
                await self.js.add_consumer(self.stream, self.consumer_config())
        await retry(once, timeout, "create the intake stream")

    async def submit(self, data: bytes, timeout: float = 10.0) -> int:
        """Put a transaction into the queue through JetStream (tools and tests;
        devices publish on MQTT); its stream sequence."""
        ack = await self.js.publish(self.subject, bytes(data), stream=self.stream,
                                    timeout=timeout)
        return int(ack.seq)

    async def stored(self) -> int:
        """Transactions in the stream."""
        info = await retry(lambda: self.js.stream_info(self.stream), 30.0, "read the intake")
        return int(info.state.messages)

    async def backlog(self) -> int:
        """Transactions this gateway has not settled yet: not delivered, or
        delivered and not acknowledged."""
        info = await retry(lambda: self.js.consumer_info(self.stream, self.consumer), 30.0,
                           "read the intake consumer")
        return int(info.num_pending or 0) + int(info.num_ack_pending or 0)

    async def fetch(self, batch: int = 256, timeout: float = 1.0,
                    known: Callable[[bytes], bool] | None = None) -> list[Delivery]:
        """Up to `batch` transactions (waiting at most `timeout` for the first);
        [] when none came. Garbage is terminated here and not returned.
        `known(tx id)` True: a message the caller knows is the first copy of a
        committed transaction (IntakeCopies.first_copy) is returned undecoded,
        `committed` (a gateway whose intake is behind the log gets many: in a
        bench.quorum burst up to 70 % of one gateway's deliveries, each a
        decode saved)."""
        if self._sub is None:
            self._sub = await self.js.pull_subscribe_bind(self.consumer, self.stream)
        try:
            msgs = await self._sub.fetch(batch, timeout=timeout)
        except RETRYABLE:
            return []
        out: list[Delivery] = []
        for m in msgs:
            data = bytes(m.data or b"")
            if known is not None and known(txm.tx_id(data)):
                out.append(Delivery(data, b"", 0, int(m.metadata.num_delivered), m,
                                    committed=True))
                continue
            try:
                tx = txdecode.decode(data)
                if m.subject == self.op_subject and bytes(tx.sender) != self.operator:
                    raise TLError("operator subject", NOT_AUTHORIZED)
            except TLError as e:
                self.refused[e.reason] += 1
                log.info("intake: refused a message: %s", e)
                await m.term()
                continue
            out.append(Delivery(data, bytes(tx.sender), int(tx.seq),
                                int(m.metadata.num_delivered), m, tx))
        return out

    async def settle(self, deliveries: list[Delivery], timeout: float = 5.0) -> list[Delivery]:
        """Acknowledge deliveries whose transactions are committed (or dropped as
        already committed, or finally refused): one ack message per delivery,
        all written at once, then one flush (a PING the server answers after
        it has read them all, and its consumer applies them right after;
        without `nc`, the client's flusher sends them soon). Not one confirmed
        request per ack: a gateway then waited a round trip per transaction
        (256 of them per fetched batch), which held its intake back behind the
        log. Returns the deliveries whose acks could not be written (the
        connection failed), from the first: the caller tries them again. An
        ack written but lost on the way (a node dying) only means a
        redelivery after ack_wait, which the gateway drops as already in the
        chain (split_committed) and settles again."""
        for i, d in enumerate(deliveries):
            try:
                await d.msg.ack()
            except nats.errors.MsgAlreadyAckdError:
                continue  # written before a failed flush: nothing more to do
            except nats.errors.Error as e:
                log.info("intake: %d acknowledgement(s) not written (%r)",
                         len(deliveries) - i, e)
                return deliveries[i:]
        if deliveries and self.nc is not None:
            try:
                await self.nc.flush(timeout)
            except (TimeoutError, nats.errors.Error) as e:  # written: lost ones come again
                log.info("intake: acknowledgements not confirmed (%r)", e)
        return []

    async def release(self, deliveries: list[Delivery]) -> None:
        """Hand deliveries back at once (a gateway shutting down cleanly)."""
        for d in deliveries:
            await d.msg.nak()

    async def close(self) -> None:
        if self._sub is not None:
            try:
                await self._sub.unsubscribe()
            except nats.errors.Error:
                pass
            self._sub = None
