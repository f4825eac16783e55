"""Transactions into a replicated domain, each committed exactly once
(docs/CONSENSUS.md, "Replication over NATS JetStream"): devices publish on MQTT
tl/<domain>/tx to any node's MQTT listener; the work-queue stream TL_TX_<domain>
(3 replicas) keeps every transaction the cluster took until a gateway has
committed it; all gateways pull from one durable consumer, so each transaction
goes to one gateway at a time.

A gateway acknowledges a delivery only after the block holding it is on disk
(`settle`). If it dies before that, JetStream hands the same message to
another gateway once `ack_wait` has passed. A message can therefore arrive
again after it was committed (the gateway died between its commit and its
ack): the chain's per-sender seq is the deduplication, by (sender, seq), so it
is never applied twice (`Delivery.key`; a gateway drops a delivery whose seq the
chain already passed and acknowledges it).

Garbage (not a structurally valid transaction) is terminated at once with
its reason code counted in `refused`: it is never delivered again."""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass

import nats.errors
import nats.js.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext, api

from gateway.cluster import link
from gateway.cluster.log import RETRYABLE, retry
from shared import cbor, txdecode
from shared.errors import TLError

log = logging.getLogger("thingledger.cluster")

REPLICAS = 3
ACK_WAIT = 10.0  # s a gateway has to commit and acknowledge a delivery
MAX_ACK_PENDING = 10_000
MAX_TX = cbor.MAX_SIZE  # one message is at most 4 KiB (docs/PROTOCOL.md)


@dataclass(frozen=True)
class Delivery:
    data: bytes
    sender: bytes
    seq: int
    deliveries: int  # 1 on the first delivery, more when redelivered
    msg: Msg

    @property
    def key(self) -> tuple[bytes, int]:
        """What the chain deduplicates by: the sender's id and its seq."""
        return self.sender, self.seq


def tx_key(data: bytes) -> tuple[bytes, int]:
    """(sender, seq) of a structurally valid transaction; TLError with its reason
    code otherwise (the signature is the gateway's check, later)."""
    tx = txdecode.decode(data)
    return bytes(tx.sender), int(tx.seq)


class TxIntake:
    """A gateway's end of the domain's transaction work queue."""

    def __init__(self, js: JetStreamContext, domain: str, replicas: int = REPLICAS,
                 ack_wait: float = ACK_WAIT, consumer: str = link.INTAKE_CONSUMER) -> None:
        self.js = js
        self.domain = domain
        self.stream = link.intake_stream(domain)
        self.subject = link.intake_subject(domain)
        self.replicas = replicas
        self.ack_wait = ack_wait
        self.consumer = consumer
        self.refused: Counter[str] = Counter()  # reason -> garbage terminated
        self._sub: JetStreamContext.PullSubscription | None = None

    def stream_config(self) -> api.StreamConfig:
        return api.StreamConfig(
            name=self.stream, subjects=[self.subject],
            retention=api.RetentionPolicy.WORK_QUEUE, storage=api.StorageType.FILE,
            num_replicas=self.replicas, max_msg_size=MAX_TX, duplicate_window=120.0,
            discard=api.DiscardPolicy.NEW)

    def consumer_config(self) -> api.ConsumerConfig:
        return api.ConsumerConfig(
            durable_name=self.consumer, name=self.consumer, filter_subject=self.subject,
            ack_policy=api.AckPolicy.EXPLICIT, ack_wait=self.ack_wait,
            deliver_policy=api.DeliverPolicy.ALL, max_deliver=-1,
            max_ack_pending=MAX_ACK_PENDING, num_replicas=self.replicas)

    async def ensure(self, timeout: float = 30.0) -> None:
        """Create the stream and the shared durable consumer unless they exist."""
        async def once() -> None:
            try:
                await self.js.stream_info(self.stream)
            except nats.js.errors.NotFoundError:
                await self.js.add_stream(self.stream_config())
            try:
                await self.js.consumer_info(self.stream, self.consumer)
            except nats.js.errors.NotFoundError:
                await self.js.add_consumer(self.stream, self.consumer_config())
        await retry(once, timeout, "create the intake stream")

    async def submit(self, data: bytes, timeout: float = 10.0) -> int:
        """Put a transaction into the queue through JetStream (tools and tests;
        devices publish on MQTT); its stream sequence."""
        ack = await self.js.publish(self.subject, bytes(data), stream=self.stream,
                                    timeout=timeout)
        return int(ack.seq)

    async def pending(self) -> int:
        """Transactions in the queue not yet acknowledged by a gateway."""
        info = await retry(lambda: self.js.stream_info(self.stream), 30.0, "read the intake")
        return int(info.state.messages)

    async def fetch(self, batch: int = 256, timeout: float = 1.0) -> list[Delivery]:
        """Up to `batch` transactions (waiting at most `timeout` for the first);
        [] when none came. Garbage is terminated here and not returned."""
        if self._sub is None:
            self._sub = await self.js.pull_subscribe_bind(self.consumer, self.stream)
        try:
            msgs = await self._sub.fetch(batch, timeout=timeout)
        except RETRYABLE:
            return []
        out: list[Delivery] = []
        for m in msgs:
            try:
                sender, seq = tx_key(bytes(m.data or b""))
            except TLError as e:
                self.refused[e.reason] += 1
                log.info("intake: refused a message: %s", e)
                await m.term()
                continue
            out.append(Delivery(bytes(m.data), sender, seq, int(m.metadata.num_delivered), m))
        return out

    async def settle(self, deliveries: list[Delivery], timeout: float = 5.0) -> None:
        """Acknowledge deliveries whose transactions are committed (or dropped as
        already committed): the stream deletes them. Each ack is confirmed by
        the server, so a settled transaction is not delivered again."""
        for d in deliveries:
            await d.msg.ack_sync(timeout=timeout)

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
