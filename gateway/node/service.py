"""The gateway full node as an asyncio service.

Pipeline, one stage per method:

    ingress   _ingest(): MqttLink (paho, persistent session, QoS 1) -> batches of payloads;
              with `workers`, a batch's stateless checks and signatures first run in
              worker processes (_prevalidate, gateway/node/verifier.py)
    validate  handle(): check_stateless + per-sender rate limit (gateway/node/ratelimit.py)
              + Mempool.admit (stateful, signature)  -> reject()
    mempool   Mempool (gateway/node/mempool.py): pending txs, per-sender seq
    block     _produce() -> _cut_block() -> _build_block(): every block_interval_s
              (fixed schedule), or at block_max_txs
    store     _store_block(): commit in a worker thread (one SQLite transaction per block)
    notify    _notify(): receipts (with Merkle proof) to each sender, header on tl/<d>/blocks;
              the market's notices, directory, verdicts and keeper
              (gateway/market/node/service.py), which also takes the off-chain
              readings on tl/<d>/data/+ and tells a device that comes
              online (tl/<d>/dev/+/status) its balance and open agreements;
              with ha_discovery, Home Assistant's discovery configs and the
              verified values (gateway/node/homeassistant.py)

Replicated (a quorum domain with `cluster` set: gateway/cluster/replica.py):
ingress is the cluster's transaction stream instead of the MQTT tx topic,
and block -> store -> notify is split: a block becomes the head when this
gateway built or re-executed it from the proposal log (_advance), and is
answered once k validators' votes finalise it (_announce).

Rejections go to the sender's rx topic, sealed by the authority, when its
id can be read from the message, otherwise to tl/<domain>/rejects. A resend
of a committed transaction is answered with its receipt again (nothing is
applied twice).

Each message is acknowledged to the broker (PUBACK) in arrival order once it
is settled: refused, answered, or committed in a block on disk. Until then the
persistent session keeps it, so a crash loses nothing the broker accepted.
A block SQLite cannot write (disk full, I/O error) halts the node
(_commit_failed): nothing of it or behind it is answered, acknowledged or
built upon, and the next start gets it all again from the broker.
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gateway import broker as broker_auth
from gateway.db.store import Store, StoreError, open_ledger
from gateway.errors import ConfigError
from gateway.ledger import blocks
from gateway.ledger.validate import check_stateless
from gateway.market.ledger.rules import open_agreements
from gateway.market.node.service import MarketNode
from gateway.node.config import GatewayConfig
from gateway.node.homeassistant import HomeAssistant
from gateway.node.mempool import Mempool
from gateway.node.metrics import Metrics
from gateway.node.mqtt_link import Incoming, MqttLink
from gateway.node.queries import QueryServer
from gateway.node.ratelimit import SenderLimit
from gateway.node.verifier import Checked, Verifier, default_workers
from gateway.registry.view import registry_lookup
from gateway.trust.node import TrustGate
from shared import cose, errors, messages, notice, reasons, topics, txnames
from shared import tx as txm

if TYPE_CHECKING:
    from gateway.cluster.replica import Replica

EventSink = Callable[[str], None]


@dataclass
class Counters:
    received: int = 0
    admitted: int = 0
    rejected: int = 0
    resent_receipts: int = 0
    committed: int = 0
    blocks: int = 0


class Gateway:
    def __init__(self, cfg: GatewayConfig, on_event: EventSink | None = None,
                 log_txs: bool = True, freeze_gc: bool = True) -> None:
        self.cfg = cfg
        self.on_event = on_event or (lambda line: None)
        self.log_txs = log_txs
        self.freeze_gc = freeze_gc
        self.counters = Counters()
        registry = None
        if cfg.registry_url:  # registry nodes over MQTT, proof-checked (docs/IDENTITY.md §1)
            registry = registry_lookup(cfg.registry_dir, cfg.registry_url,
                                       cfg.registry_confirmations)
        elif cfg.registry_dir:
            registry = registry_lookup(cfg.registry_dir)
        self.led = open_ledger(cfg, registry=registry)
        self.replica: Replica | None = None
        if cfg.cluster_urls:  # one of several gateways of a domain (docs/CONSENSUS.md)
            # imported here: nats-py brings aiohttp, which a lone gateway never loads
            from gateway.cluster.replica import Replica

            try:
                self.replica = Replica(self, cfg)
            except BaseException:
                self.led.store.close()
                raise
        elif self.led.genesis.consensus == "quorum":  # final by k gateways' votes
            self.led.store.close()
            raise ConfigError("consensus", "a quorum domain's blocks are final only with the "
                              "validators' votes: set `cluster` (its NATS servers) and "
                              "`validator_key_path`; this gateway produces and signs alone")
        self._muted = False  # a replica publishes nothing for blocks another gateway answers
        self.reader = Store(cfg.db_path, readonly=True)
        self.pool = Mempool(cfg.mempool_capacity)
        # the authority's own txs (market verdicts, grants) are never limited
        self.limit = SenderLimit(cfg.rate_limit_tps, cfg.rate_limit_burst,
                                 exempt=(self.led.genesis.authority_id,))
        # banned senders refused, probation's stricter limit, equivocation filed as a
        # proof (gateway/trust/node.py; on domains whose genesis keeps trust)
        self.trust = TrustGate(self.limit, cfg.probation_rate_tps, cfg.probation_rate_burst,
                               enabled=self.led.rules.trust)
        self.committed = asyncio.Event()
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="store")
        self._full = asyncio.Event()
        self._stopping = False
        self.failed: BaseException | None = None  # set if a pipeline stage died
        self.dead = asyncio.Event()  # set with `failed`: whoever runs the node stops it
        self._halted = False  # a block was not committed: no block may follow it
        self._tasks: list[asyncio.Task] = []
        self.link: MqttLink | None = None
        # received messages in arrival order, with the id of the pending tx
        # that settles them (None: settled already); PUBACKed from the left
        self._unacked: deque[tuple[Incoming, bytes | None]] = deque()
        d = cfg.domain
        self._topic_blocks = topics.blocks(d)
        self._topic_rejects = topics.rejects(d)
        # read-only chain queries on tl/<d>/q/+/req, answered in a thread of their
        # own from a read-only store (docs/PROTOCOL.md, "Chain queries")
        self.queries = QueryServer(d, lambda: Store(cfg.db_path, readonly=True),
                                   lambda t, p: self.link.publish(t, p, qos=0) if self.link
                                   else None, genesis=cfg.genesis_file.read_bytes()
                                   if cfg.genesis_file.exists() else b"")
        self.market = MarketNode(d, cfg.data_dir, self.led.authority_priv, self._publish,
                                 self.handle if self.replica is None
                                 else self.replica.operator_submit,
                                 self.on_event, grant=cfg.market_grant,
                                 fee_bps=cfg.market_fee_bps, derived=cfg.derived,
                                 admin=self.led.rules.owner_id or self.led.rules.authority_id)
        self.market.issuing = self.replica is None  # replicated: while it holds the lease
        self.market.claims = self.replica is not None  # derived readings: gateway/cluster/derived.py
        self.ha: HomeAssistant | None = None
        if cfg.ha_discovery:
            self.ha = HomeAssistant(d, self.led.genesis.authority_id, self._publish,
                                    registry=registry, log=self.on_event)
            self.market.on_reading = self.ha.on_stream
        self.metrics = Metrics(mempool_depth=lambda: len(self.pool),
                               height=lambda: self.led.head.height,
                               agreements_open=lambda: len(open_agreements(self.led.state)))
        self._self_status = topics.status(d, self._client_name())
        # stateless checks and signatures of received batches in worker
        # processes (gateway/node/verifier.py); None: all inline (a replica's
        # txs come from the cluster's stream, not in MQTT batches)
        workers = default_workers() if cfg.workers is None else cfg.workers
        self.verifier = Verifier(workers, d, on_event=self.on_event) \
            if workers and self.replica is None else None

    def _client_name(self) -> str:
        """This gateway's MQTT identity: the authority's user, and in a
        replicated domain its validator id (each gateway its own session and
        last will, which the coordinator watches)."""
        user = broker_auth.gateway_credentials(self.led.authority_priv, self.cfg.domain)[0]
        return user if self.replica is None else self.replica.validator_id.hex()

    def metrics_text(self) -> bytes:
        """The Prometheus exposition of this gateway's metrics (docs/API.md,
        "Metrics"). Call it on the gateway's event loop."""
        return self.metrics.text()

    # -- lifecycle ------------------------------------------------------------
    async def start(self, connect_timeout: float = 15.0) -> None:
        loop = asyncio.get_running_loop()
        # logs in with the authority key; anonymous brokers ignore it (docs/IDENTITY.md §3)
        user, password = broker_auth.gateway_credentials(self.led.authority_priv, self.cfg.domain)
        subs = [*self.market.subscriptions, self.queries.subscription]
        if self.replica is None:  # a replica reads txs from the cluster's stream
            subs.insert(0, topics.tx(self.cfg.domain))
        if self.ha is not None:
            subs += self.ha.subscriptions
        me = self._client_name()
        self.link = MqttLink(self.cfg.broker_url, f"{me}-gateway", subs,
                             loop, username=user, password=password,
                             status_topic=topics.status(self.cfg.domain, me),
                             on_event=self.on_event)
        if self.verifier is not None:
            await self.verifier.start()
            n = self.verifier.workers
            self.on_event(f"{n} validation worker process{'es' if n > 1 else ''} "
                          "(stateless checks and signatures of received batches)")
        self.queries.start()
        self.link.start()
        await self.link.wait_connected(connect_timeout)
        h = self.led.head
        self.on_event(f"chain {self.cfg.domain} at height {h.height} hash {h.hash.hex()[:16]} "
                      f"({len(self.led.state.devices)} devices) broker {self.cfg.broker_url}")
        if self.freeze_gc:
            # Everything alive now (modules, the loaded state) lives as long as
            # the process: keep it out of the cyclic collector's full passes,
            # which otherwise pause the loop for tens of ms under load (bench:
            # 37 ms -> 2 ms; a latency spike for a whole block of receipts).
            gc.freeze()
        self.market.start(self.led.state, self.reader, self.led.head.height)
        if self.ha is not None:
            self.ha.start(self.led.state, self.led.head, self._committed_readings())
        if self.replica is not None:
            self._tasks = [asyncio.create_task(self._ingest(), name="ingest"),
                           *await self.replica.start(connect_timeout)]
        else:
            self._tasks = [asyncio.create_task(self._ingest(), name="ingest"),
                           asyncio.create_task(self._produce(), name="produce")]
        # (replicated: the issuer's operator work, gateway/cluster/issuer.py)
        self._tasks.append(asyncio.create_task(self._market_clock(), name="market"))
        for t in self._tasks:
            t.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task) -> None:
        """A pipeline stage died (an exception): report it and keep it in
        `failed`. The node then commits nothing more (what it took stays
        unacknowledged at the broker); whoever runs it should stop it."""
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None and task.get_name() == "produce":
            self._halted = True  # txs it took may be in no block: build nothing after them
        if self._stopping or self.failed is not None:  # (a failed commit is reported already)
            return
        self.failed = exc or RuntimeError(f"{task.get_name()} stopped")
        self.on_event(f"error: {task.get_name()} stopped: {self.failed!r}")
        self.dead.set()

    async def stop(self) -> None:
        """Stop taking messages, commit what is pending, close the store.
        After a failed commit (`_halted`) nothing more is committed: what is
        pending stays unacknowledged at the broker, delivered again to the
        next start, in order."""
        self._stopping = True
        if self.replica is not None:  # what is pending stays in the cluster's stream
            await self.replica.stop()
        # Ingest is cancelled; the producer is woken and returns once a block
        # it is cutting is committed and answered (cancelling it while the
        # writer thread commits would skip the state update and the receipts,
        # and the next cut would clash with the block just written).
        for t in self._tasks:
            if t.get_name() != "produce":
                t.cancel()
        self._full.set()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        while len(self.pool) and not self._halted and self.replica is None:
            try:
                await self._cut_block()
            except StoreError:
                break  # reported by _cut_block; nothing more is committed
        self._ack_settled()
        if self.link:
            self.link.stop()
        self.queries.stop()
        self._writer.shutdown(wait=True)
        if self.verifier is not None:
            self.verifier.close()
        self.market.close()
        if self.ha is not None:
            self.ha.close()
        self.reader.close()
        self.led.store.close()

    # -- ingress -> validate -> mempool ---------------------------------------
    async def _ingest(self) -> None:
        assert self.link is not None
        link = self.link
        data = self.market.data_prefix
        # with workers: the next batch, handed to them while this one is handled
        # (dropped unacknowledged if the node stops: the broker delivers it again)
        ahead: tuple[list[Incoming], asyncio.Future | None] | None = None
        while True:
            if ahead is None:
                batch = await link.receive()
                checking = self._prevalidate(batch)
            else:
                batch, checking = ahead
                ahead = None
            checked = iter(() if checking is None else await checking)
            if self.verifier is not None and link.waiting():
                nxt = await link.receive()  # (returns at once)
                ahead = nxt, self._prevalidate(nxt)
            for m in batch:
                if self._is_tx(m):
                    self._unacked.append((m, self.handle(m.payload, next(checked, None))))
                elif m.topic.startswith(data):  # off-chain readings: kept or dropped at once
                    self.market.on_data(m.topic, m.payload, self.led.state)
                    self._unacked.append((m, None))
                elif self.market.is_status(m.topic):  # a device (re)connected: its state
                    dev = m.topic.rsplit("/", 2)[-2]
                    peer = self.replica is not None and self.replica.on_status(m.topic, m.payload)
                    self._muted = not peer and not self._serves_hex(dev)
                    try:
                        self.market.on_status(m.topic, m.payload, self.led.state, self.led.head)
                    finally:
                        self._muted = False
                    if m.topic != self._self_status and not peer:
                        self.metrics.on_status(dev, m.payload == b"online")
                        self._check_session(dev, m.payload == b"online")
                    self._unacked.append((m, None))
                elif self.queries.is_query(m.topic):  # answered in the queries' thread
                    self.queries.offer(m.topic, m.payload)
                    self._unacked.append((m, None))
                elif self.ha is not None:  # Home Assistant's status (the rest of _is_tx)
                    self.ha.on_ha_status(m.payload, self.led.state)
                    self._unacked.append((m, None))
            self._ack_settled()
            if len(self.pool) >= self.cfg.block_max_txs:
                self._full.set()

    def _is_tx(self, m: Incoming) -> bool:
        """A message for handle(): not an off-chain reading, a device's status
        or Home Assistant's status."""
        return not (m.topic.startswith(self.market.data_prefix) or self.market.is_status(m.topic)
                    or self.queries.is_query(m.topic)
                    or (self.ha is not None and m.topic == self.ha.status_topic))

    def _prevalidate(self, batch: list[Incoming]) -> asyncio.Future | None:
        """Hand the batch's transactions to the workers: the future of their
        verdicts in order, or None (no workers, a small batch: handle()
        checks them inline). Keys are the senders' as the state and the
        mempool's pending registrations hold them now."""
        if self.verifier is None:
            return None
        payloads = [m.payload for m in batch if self._is_tx(m)]
        view = self.pool.view(self.led.state)

        def key_of(kid: bytes) -> bytes | None:
            rec = view.get(kid)
            return None if rec is None else rec.pubkey

        return self.verifier.begin(payloads, key_of)

    def _ack_settled(self) -> None:
        """PUBACK, in arrival order, every message settled so far: refused or
        answered at once, or its transaction out of the mempool (committed)."""
        q, pool, link = self._unacked, self.pool, self.link
        while q and (q[0][1] is None or q[0][1] not in pool):
            m = q.popleft()[0]
            if link is not None:
                link.ack(m)

    def handle(self, payload: bytes, checked: Checked | None = None) -> bytes | None:
        """Validate one incoming transaction; admit it or answer with a reason.
        Returns the tx id while the tx is pending in the mempool (admitted now
        or earlier), None when the message is settled (refused, answered).
        `checked`: a worker's stateless result and signature (_prevalidate)."""
        self.counters.received += 1
        self.metrics.on_received()
        t: txm.Tx | None = None
        try:
            t = check_stateless(payload, self.cfg.domain) if checked is None else checked.stateless()
            if t.id in self.pool:
                return t.id  # the same tx already pending: answered at its commit
            limit = self.trust.admit(t, self.led.state)  # banned: refused
            try:
                limit.check(t.sender)  # an empty bucket: refused before the signature check
            except errors.TLError:
                # keep the sender's order, as for mempool-full: its later seqs wait for
                # this one, else one admitted first would make this one a replay, lost
                self.pool.hold(t.sender, t.seq, errors.RATE_LIMITED)
                raise
            if self.pool.admit(t, self.led.state, self.led.rules,
                               None if checked is None else checked.signature):
                limit.take(t.sender)
                self.counters.admitted += 1
                self.metrics.on_admitted(t.id)
                if self.log_txs:
                    self.on_event(f"accepted {_describe(t)}")
            return t.id  # admitted, or the same tx already pending
        except errors.TLError as e:
            if t is not None and e.reason == errors.REPLAY:
                if self.resend_receipt(t.id, t.sender):
                    self.limit.take(t.sender)  # signature verified: a resend counts too
                    return None
                self._file_equivocation(t)
            if t is not None:
                fake = self.trust.fake_id_attempt(t, e)
                if fake is not None:
                    self.on_event(f"fake-id attempts by {t.sender.hex()[:8]}: report filed")
                    self.market.op.send(self.led.state, txm.TYPE_REPORT, fake)
            self.reject(payload, t, e)
            return None

    def resend_receipt(self, tx_id: bytes, sender: bytes) -> bool:
        """Answer a transaction sent again after the chain took it with its
        stored receipt (to its sender, if this gateway answers it). False when
        the chain holds no receipt of it (not in the chain, or in a block not
        final here yet)."""
        receipt = self.reader.get_receipt(tx_id)
        if receipt is None:
            return False
        self.counters.resent_receipts += 1
        self.metrics.on_resent()
        if self._serves(sender):
            self._publish(topics.rx(self.cfg.domain, sender.hex()), receipt)
        return True

    def _check_session(self, dev: str, online: bool) -> None:
        """A device's status: warn of a possible second session under its id
        (gateway/trust/node.py, SESSION_S)."""
        try:
            pid = bytes.fromhex(dev)
        except ValueError:
            return
        if self.trust.on_status(pid, online, time.monotonic()):
            self.on_event(f"possible second session for {dev[:8]}: online again within "
                          "seconds (a faked id taking the session over?)")

    def _file_equivocation(self, t: txm.Tx) -> None:
        """`t` (signature checked) reuses a seq of its sender with another
        body: the gateway files the two messages as a PROOF (once)."""
        other = self.trust.equivocation(t, self.pool.queued(), self.reader.message_at_seq)
        if other is not None:
            self.on_event(f"equivocation by {t.sender.hex()[:8]} at seq {t.seq}: proof filed")
            self.market.op.send(self.led.state, txm.TYPE_PROOF,
                                self.trust.proof_body(other, t.message))

    def reject(self, payload: bytes, t: txm.Tx | None, e: errors.TLError) -> None:
        """Answer a refused message. To the sender's rx topic the rejection
        goes sealed by the authority (a device acts only on a rejection that
        verifies); to tl/<d>/rejects (sender unreadable) plain. A retryable
        reason (reasons.RETRYABLE) carries a retry hint: the error's
        `retry_ms` if it has one, else one block interval (what a full
        mempool needs to drain)."""
        self.counters.rejected += 1
        self.metrics.on_rejected(e.reason)
        sender = t.sender if t is not None else _readable_sender(payload)
        if sender is not None and not self._serves(sender):
            return  # another gateway of the domain answers this sender
        tx_id = hashlib.sha256(payload).digest() if e.reason != errors.TOO_LARGE else b""
        retry = None
        if e.reason in reasons.RETRYABLE:
            retry = getattr(e, "retry_ms", None) or max(1, int(self.cfg.block_interval_s * 1000))
        msg = messages.rejection(tx_id, t.seq if t is not None else 0, e.reason, e.detail, retry)
        if sender is not None:
            topic = topics.rx(self.cfg.domain, sender.hex())
            msg = notice.seal(self.led.authority_priv, self.led.genesis.authority_id, msg)
        else:
            topic = self._topic_rejects
        self._publish(topic, msg)
        if self.log_txs:
            who = sender.hex()[:8] if sender else "?"
            kind = txnames.name(t.type) if t is not None else "message"
            self.on_event(f"rejected {kind} from={who} reason={e.reason} detail={e.detail}")

    # -- block -> store -> notify ----------------------------------------------
    async def _produce(self) -> None:
        """Cut a block at fixed times (every block_interval_s from start, so
        the time a cut takes does not stretch the period: a transaction waits
        at most one interval for its block), and early when the mempool holds
        block_max_txs. Behind schedule, blocks follow each other at once."""
        interval = self.cfg.block_interval_s
        loop = asyncio.get_running_loop()
        next_cut = loop.time() + interval
        while not self._stopping:
            delay = next_cut - loop.time()
            if delay > 0:
                try:
                    await asyncio.wait_for(self._full.wait(), delay)
                except TimeoutError:
                    pass
            if self._stopping:
                return  # stop() commits what is left
            self._full.clear()
            now = loop.time()
            if now >= next_cut:
                next_cut = max(next_cut + interval, now)
            if len(self.pool):
                await self._cut_block()

    async def _cut_block(self) -> None:
        """One block: the stages block -> store -> notify."""
        if self._halted:
            raise RuntimeError("a block was not committed: no block may follow it")
        txs = self.pool.take(self.cfg.block_max_txs)
        t0 = time.perf_counter()
        b = self._build_block(txs)
        receipts = await self._store_block(b)
        commit_s = time.perf_counter() - t0
        accounts = self._advance(b)
        self.pool.done(txs)
        self._announce(b, receipts, accounts, commit_s, [t.id for t in txs])

    def _advance(self, b: blocks.Block) -> list[tuple[bytes, int]]:
        """A block on disk becomes the head: the state moves on; returns the
        market's account notices (computed on the state before it)."""
        led = self.led
        accounts = self.market.account_notices(b, led.state)
        self.market.applied(b)  # the grants owed move along every block
        moved = self.trust.level_changes(led.state, b.kv_diff)
        led.state.apply_diff(b.diff, b.kv_diff)
        for pid, old, new, why in moved:
            self.on_event(f"trust {pid.hex()[:8]} {old} -> {new} ({why})")
        led.head = b
        self.counters.blocks += 1
        self.counters.committed += len(b.txs)
        return accounts

    def _announce(self, b: blocks.Block, receipts: list[bytes | None],
                  accounts: list[tuple[bytes, int]], commit_s: float,
                  taken: list[bytes], announce: bool = True) -> None:
        """A final block is answered: receipts and header (see _notify),
        metrics, the market's notices (by the gateway that announces),
        PUBACKs."""
        led = self.led
        self._notify(b, receipts, announce)
        self._muted = not announce
        try:
            self.metrics.on_block(commit_s, [(t.id, t.type) for t in b.txs], taken)
            self.market.on_block(b, led.state, accounts)
        finally:
            self._muted = False
        self._ack_settled()
        self.committed.set()
        self.committed.clear()

    def _build_block(self, txs: list[txm.Tx]) -> blocks.Block:
        """block: execute the mempool's txs on the state (gateway/ledger/blocks.py)."""
        led = self.led
        return blocks.build_block(led.head, txs, led.state, int(time.time()), led.authority_priv,
                                  led.genesis.authority_id, domain=self.cfg.domain,
                                  rules=led.rules)

    async def _store_block(self, b: blocks.Block) -> list[bytes]:
        """store: commit `b` in the writer thread (one SQLite transaction);
        returns its receipt messages, encoded while the writer waits on fsync
        (published only after it)."""
        commit = asyncio.get_running_loop().run_in_executor(self._writer,
                                                            self.led.store.commit_block, b)
        receipts = [b.receipt_message(i) for i in range(len(b.txs))]
        try:
            await commit
        except StoreError as e:
            self._commit_failed(b, e)
            raise
        return receipts

    def _commit_failed(self, b: blocks.Block, e: StoreError) -> None:
        """Block `b` is not on disk (disk full, I/O error; SQLite rolled it
        back). Its txs stay pending: no receipt, no PUBACK, no state change,
        and no later block (it would commit the senders' later seqs and turn
        these into replays). Ingest pauses and the node reports the real
        error and is `dead`: whoever runs it stops it; the next start gets
        everything unacknowledged again from the broker (devices resend)."""
        self._halted = True
        self.failed = e
        for t in self._tasks:
            if t.get_name() == "ingest":
                t.cancel()
        h = self.led.head.height
        cause = e.__cause__ or e.detail  # SQLite's own message
        self.on_event(f"error: block {b.height} ({len(b.txs)} txs) not committed: {cause}; "
                      f"the chain stays at height {h}, nothing after it is acknowledged; "
                      "stopping (free space and start again: the rest is delivered again)")
        self.dead.set()

    def _serves(self, device: bytes) -> bool:
        """This gateway answers `device` (always, unless replicated: then one
        live gateway of the domain does, gateway/cluster/replica.py)."""
        return self.replica is None or self.replica.serves(device)

    def _serves_hex(self, dev: str) -> bool:
        try:
            return self._serves(bytes.fromhex(dev))
        except ValueError:
            return False

    def _notify(self, b: blocks.Block, receipts: list[bytes | None],
                announce: bool = True) -> None:
        """Receipts (None: another gateway answers that sender), rejections of
        the dropped txs, the header on tl/<d>/blocks (unless `announce` is
        False: another gateway of a replicated domain announces it)."""
        d = self.cfg.domain
        for t, r in zip(b.txs, receipts, strict=True):
            if r is not None:
                self._publish(topics.rx(d, t.sender.hex()), r)
        for t, e in b.dropped:
            self.reject(t.message, t, e)
        if not announce:
            return
        self._publish(self._topic_blocks, b.announcement())  # header (+ certificate)
        if self.ha is not None:
            self.ha.on_block(b, self.led.state)
        self.on_event(f"block height={b.height} txs={len(b.txs)} hash={b.hash.hex()[:16]}")

    def _committed_readings(self) -> list[txm.Tx]:
        """Each device's latest READING that took effect, in chain order
        (one query at start, for Home Assistant's entities)."""
        return [txm.decode(r.message)
                for r in self.reader.latest_of_type(txm.TYPE_READING, messages.STATUS_OK)]

    def _publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        if self.link is not None and not self._muted:
            self.link.publish(topic, payload, qos=1, retain=retain)

    async def _market_clock(self) -> None:
        """The market's clock-driven work (verdicts, derived streams), each second."""
        while True:
            await asyncio.sleep(1.0)
            self.market.tick(self.led.state, time.time())


def _readable_sender(payload: bytes) -> bytes | None:
    """The kid of a message that failed validation, if its structure shows one."""
    if len(payload) > 4096:
        return None
    try:
        kid = cose.parse1(payload).kid
    except errors.TLError:
        return None
    return kid if len(kid) == txm.ID_LEN else None


def _describe(t: txm.Tx) -> str:
    kind = txnames.name(t.type)
    text = f"{kind} from={t.sender.hex()[:8]} seq={t.seq}"
    if t.type == txm.TYPE_READING:
        v, s = t.body[1], t.body[2]
        text += f" value={v}e{s}"
    return text
