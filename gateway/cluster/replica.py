"""One gateway of a quorum domain replicated over NATS JetStream
(docs/CONSENSUS.md, "The replicated gateway"): the wiring of the node's
pipeline (gateway/node/service.py) onto the cluster's proposal log, signature
channel and transaction intake.

- ingress: every gateway reads every transaction from the intake
  (TxIntake); those whose seq the chain has passed are dropped, the others
  go through the node's usual validation into its mempool;
- validator sets follow the schedule in the state (VALSET): whether this
  gateway proposes and votes at height h, which signers count there and how
  many (k) make a certificate, are those of the set in force at h. A gateway
  outside the set follows the log; once a change puts it in, it proposes and
  votes from the change height on, and one taken out stops there (its votes
  after it are refused, not-in-set);
- block: a validator whose head is final and whose mempool holds
  transactions builds a block on its head and appends the proposal to the log
  after the last entry it has followed (compare-and-set). Rule: the first
  valid proposal for a height, in log order, wins; a gateway that lost the
  race follows the winner and builds again on it. The validators take turns
  (proposers_at, turn_wait): an order of precedence that spares the others a
  block that would lose the race, not a validity rule;
- follow: every gateway applies the log's entries in order: it re-executes
  each proposal with the ledger code (blocks.rebuild_block; a tx whose bytes
  its mempool verified at intake is not verified again); one that does not
  validate (garbage, a proposer outside the validator set, a bad proposer
  vote, a wrong or unfinalised parent, a bad transaction or signature, a
  header the re-execution does not give) is skipped by every honest gateway
  alike and kept in the store as evidence (Store.record_refused). A valid one
  is committed to the store with the log sequence it came from, and becomes
  the head;
- vote: each validator signs the header of every block it validated and
  publishes the vote on the signature subject (again every RESEND_S while the
  block is not final); the block is final when the Collector holds k votes of
  the set; the certificate goes into the store (the 'final' marker: a block
  without one is applied but not final) and into the receipts and the header
  on tl/<d>/blocks, which the gateway that proposed the block publishes;
- settle: a delivery from the intake is acknowledged once a final block holds
  its transaction, or it was refused.
- operator: the market operator's transactions are made by one gateway at a
  time, the holder of a lease, and appended to the intake by compare-and-set
  (gateway/cluster/issuer.py); its derived readings are claimed in the
  cluster before they are published (gateway/cluster/derived.py).

Proposal (a log entry), canonical CBOR: {1: the header signed with the
domain's authority key (as every header of the chain, which `chain verify`
checks), 2: [transaction messages], 3: the proposer's validator key, 4: the
proposer's vote on the header, 5: the certificate of the parent block (absent
for block 1)}. The certificate of the parent in each proposal lets a gateway
that was away learn the finality of the blocks it catches up on.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from itertools import islice
from typing import TYPE_CHECKING, Any

import nats.errors
from prometheus_client import Counter

from gateway.broker.credentials import gateway_credentials
from gateway.cluster import link
from gateway.cluster.derived import DerivedTails
from gateway.cluster.intake import Delivery, IntakeCopies, TxIntake, split_committed
from gateway.cluster.issuer import IssuerLease, OperatorIssuer
from gateway.cluster.liveness import STATUS_S, Liveness
from gateway.cluster.log import Entry, ProposalLog
from gateway.cluster.sigs import Certificate, Collector, HeaderSig, SigChannel
from gateway.cluster.votebook import UNKNOWN_HEADER, VoteBook
from gateway.db.genesis_files import load_authority_key
from gateway.db.store import LOG_SEQ, StoreError
from gateway.errors import ClusterError, ConfigError
from gateway.ledger import blocks, consensus
from gateway.ledger.validate import check_decoded, check_stateless
from gateway.node.verifier import Checked
from gateway.trust import evidence
from gateway.trust.rules import VOTE_EQUIVOCATION
from shared import cbor, commit_gateway, errors, header, p256, topics
from shared import tx as txm

if TYPE_CHECKING:
    from gateway.node.config import GatewayConfig

log = logging.getLogger("thingledger.cluster")

RESEND_S = 0.5  # s between resends of this gateway's votes on blocks not yet final
KNOWN_HASHES = 4096  # recent block hashes kept to spot replayed votes
APPLY_TIMEOUT = 30.0  # s a proposer waits for its own appended entry to be followed
K_HEADER, K_TXS, K_PROPOSER, K_VOTE, K_PARENT = 1, 2, 3, 4, 5
BAD_PROPOSAL = "bad-proposal"  # reason of a proposal refused by the consensus checks


@dataclass(frozen=True)
class Proposal:
    signed_header: bytes
    txs: list[bytes]
    proposer: bytes
    vote: bytes
    parent_cert: list[Any] | None

    def encode(self) -> bytes:
        m: dict[int, Any] = {K_HEADER: self.signed_header, K_TXS: self.txs,
                             K_PROPOSER: self.proposer, K_VOTE: self.vote}
        if self.parent_cert is not None:
            m[K_PARENT] = self.parent_cert
        return cbor.dumps(m)

    @classmethod
    def decode(cls, data: bytes) -> Proposal:
        """ClusterError(garbage) unless the structure of a proposal."""
        try:
            m = cbor.loads(bytes(data), max_size=len(data) + 1)
        except errors.TLError as e:
            raise ClusterError(ClusterError.GARBAGE, f"not canonical CBOR ({e.reason})") from None
        if not isinstance(m, dict) or not {K_HEADER, K_TXS, K_PROPOSER, K_VOTE} <= set(m) \
                or not set(m) <= {K_HEADER, K_TXS, K_PROPOSER, K_VOTE, K_PARENT}:
            raise ClusterError(ClusterError.GARBAGE, "want {1: header, 2: txs, 3: proposer, "
                                                     "4: vote, 5: parent certificate}")
        hb, txs, who, vote, parent = (m[K_HEADER], m[K_TXS], m[K_PROPOSER], m[K_VOTE],
                                      m.get(K_PARENT))
        if not isinstance(hb, bytes) or not isinstance(who, bytes) or len(who) != 33 \
                or not isinstance(vote, bytes) or len(vote) != 64:
            raise ClusterError(ClusterError.GARBAGE, "header, proposer or vote")
        if not isinstance(txs, list) or not all(isinstance(t, bytes) for t in txs):
            raise ClusterError(ClusterError.GARBAGE, "txs")
        if parent is not None and not isinstance(parent, list):
            raise ClusterError(ClusterError.GARBAGE, "parent certificate")
        return cls(hb, txs, who, vote, parent)


def evidence_header(vote_message: bytes) -> bytes:
    """The header bytes inside a vote-equivocation proof's message."""
    return evidence.decode_vote(vote_message)[1]


@dataclass
class Unfinal:
    """A block this gateway applied whose certificate it does not hold yet."""

    height: int
    hash: bytes
    block: blocks.Block | None  # None: applied before a restart (only the cert is missing)
    accounts: list[tuple[bytes, int]] = field(default_factory=list)
    mine: bool = False  # proposed by this gateway: it answers it
    applied_at: float = 0.0
    finalising: bool = False  # its certificate is being stored


class Replica:
    """The replication of one Gateway (gateway/node/service.py); `gw` is
    that gateway, whose ledger, mempool and pipeline stages it drives."""

    def __init__(self, gw: Any, cfg: GatewayConfig) -> None:
        self.gw = gw
        self.cfg = cfg
        led = gw.led
        g = led.genesis
        if g.consensus != consensus.QUORUM:
            raise ConfigError("cluster", "a replicated domain needs a quorum consensus section "
                              "in its genesis (docs/CONSENSUS.md)")
        self.priv = load_authority_key(cfg.validator_key_file)
        self.pub = p256.public_key(self.priv)
        self.validator_id = txm.device_id(self.pub)
        self.authority_pub = g.authority
        self.authority_id = g.authority_id
        self.domain = cfg.domain
        self.log_seq = int(led.store.meta(LOG_SEQ) or 0)
        self.unfinal: dict[int, Unfinal] = {}
        self.pending_certs: dict[int, Certificate] = {}
        self.waiting: dict[bytes, list[Delivery]] = {}  # tx id -> deliveries to settle
        self.settle_later: list[Delivery] = []
        self._settling = 0
        self.copies = IntakeCopies()  # which delivery of a committed tx is a resend
        self._ids: tuple[int, list[bytes]] | None = None
        self._schedule: tuple[int, consensus.Schedule] | None = None  # (head height, schedule)
        # the other gateways: live or offline, one rule (gateway/cluster/liveness.py)
        self.liveness = Liveness()
        self._status_sub: Any = None  # the statuses on the cluster (core NATS)
        self.built: blocks.Block | None = None
        self.wake = asyncio.Event()
        self.final_event = asyncio.Event()
        self.lost_races = 0
        self.final_at = 0.0  # monotonic time the head became final here (turn_wait)
        self.proposed = 0
        self.finalised = 0
        self.refused: list[tuple[int, str]] = []
        # heights of recent blocks by hash (a replayed vote names an old hash)
        self.heights: dict[bytes, int] = {}
        self.by_height: dict[int, bytes] = {}
        for r in led.store.iter_blocks(max(0, led.head.height - KNOWN_HASHES)):
            self._known(r.height, r.hash)
        self.last_cert: tuple[int, list[Any]] | None = None
        self.answered: dict[int, float] = {}  # height -> when a late voter was last answered
        # double votes of validators: header bytes and votes seen, filed as PROOFs
        self.book = VoteBook()
        self._proof_seq = 0  # the last seq this gateway's validator key signed a PROOF with
        head = led.head
        if head.height > 0 and led.store.certificate(head.height) is None:
            self.unfinal[head.height] = Unfinal(head.height, head.hash, None)
        self.nc = None
        self.plog: ProposalLog | None = None
        self.intake: TxIntake | None = None
        self.follower = None
        self.collector: Collector | None = None
        self.sigchan: SigChannel | None = None
        self.issuer: OperatorIssuer | None = None  # the market operator's txs

    def _known(self, height: int, block_hash: bytes) -> None:
        self.heights[block_hash] = height
        self.by_height[height] = block_hash
        old = height - KNOWN_HASHES
        if old in self.by_height:
            self.heights.pop(self.by_height.pop(old), None)

    def validator_ids(self) -> list[bytes]:
        """The ids of the set of the next height, sorted (cached per head)."""
        h = self.gw.led.head.height
        if self._ids is None or self._ids[0] != h:
            self._ids = (h, sorted(self.set_at(h + 1).ids()))
        return self._ids[1]

    def on_status(self, status_topic: str, payload: bytes, cluster: bool = False) -> bool:
        """A status message: True if it is one of this domain's gateways (their
        status topic is their validator id), its liveness noted. Once this
        gateway follows the statuses on the cluster (`cluster`: from the core
        NATS subject, at once), those its MQTT session gets are not noted: a
        QoS 1 delivery can be held back for seconds by a JetStream election
        and would count a dead gateway's old "online" as new."""
        for i in self.validator_ids():
            if status_topic == topics.status(self.domain, i.hex()):
                if i != self.validator_id and (cluster or self._status_sub is None):
                    self.liveness.status(i, payload == b"online")
                    self._say_liveness()
                return True
        return False

    def _say_liveness(self) -> None:
        """A console line for each other gateway whose liveness changed."""
        ids = [i for i in self.validator_ids() if i != self.validator_id]
        for i, _, why in self.liveness.changes(ids):
            self.gw.on_event(f"gateway {i.hex()[:8]} {why}")

    async def _on_cluster_status(self, msg: Any) -> None:
        """tl.<d>.dev.<id>.status on core NATS: every status an MQTT client of
        any node publishes (and every last will), as it is published."""
        self.on_status(msg.subject.replace(".", "/"), bytes(msg.data), cluster=True)

    def _offline(self, validator_hex: str) -> bool:
        """Another gateway is not live (its last will, or silence: liveness.py)."""
        try:
            return not self.liveness.live(bytes.fromhex(validator_hex))
        except ValueError:
            return False

    def serves(self, device: bytes) -> bool:
        """Whether this gateway answers `device` (receipts, rejections, its
        state when it comes online): the full node the coordinator assigned
        it (its last committed NODE_ASSIGN, tools/coordinator.py) while that
        gateway is live; otherwise, of the domain's live gateways, the one at
        the device id modulo their number (live: gateway/cluster/liveness.py,
        not offline by its last will nor silent for SILENCE_S). Every gateway
        with the same view picks the same one, and a device whose gateway goes
        offline is answered by a live one at once. The domain's gateways are the set of the next height: a gateway outside
        it (not added yet, or removed by a VALSET) answers no device."""
        ids = self.validator_ids()
        if self.validator_id not in ids:
            return False
        live = self.liveness.live_of(ids, self.validator_id)
        rec = self.gw.led.state.get(device)
        if rec is not None and rec.assigned in live:
            return rec.assigned == self.validator_id
        return live[int.from_bytes(device[:4], "big") % len(live)] == self.validator_id

    # ---- validator sets ------------------------------------------------------------
    def set_at(self, height: int) -> consensus.ValidatorSet:
        """The set in force at `height`, from the schedule in the state (read
        once per head: every vote asks for it)."""
        h = self.gw.led.head.height
        if self._schedule is None or self._schedule[0] != h:
            s = consensus.schedule(self.gw.led.state)
            assert s is not None  # a quorum domain
            self._schedule = (h, s)
        return consensus.set_at(self._schedule[1], height)

    def _is_member(self, height: int, signer: bytes) -> bool:
        return self.set_at(height).index(signer) is not None

    def member_at(self, height: int) -> bool:
        """Whether this gateway proposes and votes at `height` (a height up to
        the head's next one, whose set the state knows)."""
        return self._is_member(height, self.pub)

    def threshold_at(self, height: int) -> int | None:
        """k of the set of `height`; None above the head's next height (a
        block not applied here yet may schedule a change there)."""
        if height > self.gw.led.head.height + 1:
            return None
        return self.set_at(height).threshold

    def _verify(self, height: int, block_hash: bytes, signer: bytes, signature: bytes) -> bool:
        """A vote counts for `height` only on the hash this gateway knows there (a
        vote signs the hash, not the height: an old vote replayed with a new
        height names a block of another height)."""
        known = self.heights.get(block_hash)
        if known is not None and known != height:
            return False
        mine = self.hash_at(height)
        if mine is not None and mine != block_hash:
            self._other_header(HeaderSig(height, block_hash, signer, signature))
            return False
        if not self._vote_ok(block_hash, signer, signature):
            return False
        self.liveness.heard(txm.device_id(signer))  # a vote: a sign of life
        self._seen_vote(HeaderSig(height, block_hash, signer, signature))
        return True

    def hash_at(self, height: int) -> bytes | None:
        if height > self.gw.led.head.height:
            return None
        u = self.unfinal.get(height)
        if u is not None:
            return u.hash
        return self.by_height.get(height)

    @staticmethod
    def _vote_ok(block_hash: bytes, signer: bytes, signature: bytes) -> bool:
        try:
            commit_gateway.check_vote(signer, block_hash, signature)
        except errors.TLError:
            return False
        return True

    def head_final(self) -> bool:
        return self.gw.led.head.height not in self.unfinal

    # ---- lifecycle -----------------------------------------------------------------
    async def start(self, connect_timeout: float = 15.0) -> list[asyncio.Task]:
        urls = self.cfg.cluster_urls
        replicas = min(3, len(urls))
        # the authority's login (docs/IDENTITY.md §3): a cluster whose nodes include
        # the `broker export --nats` file admits the gateways by it; an open one ignores it
        user, password = gateway_credentials(self.gw.led.authority_priv, self.domain)
        self.nc = await asyncio.wait_for(
            link.connect(urls, name=f"thingledger-{self.cfg.gateway_name}", user=user,
                         password=password, notes=self.gw.on_event), connect_timeout)
        js = self.nc.jetstream()
        self.plog = ProposalLog(js, self.domain, replicas=replicas)
        self.intake = TxIntake(js, self.domain, self.cfg.gateway_name, replicas=replicas,
                               operator=self.authority_id, nc=self.nc)
        await self.plog.ensure()
        await self.intake.ensure()
        lease = IssuerLease(js, self.domain, self.validator_id.hex(), replicas=replicas,
                            offline=self._offline)
        await lease.ensure()
        gw = self.gw
        self.issuer = OperatorIssuer(js, self.domain, lease, gw.market, lambda: gw.led.state,
                                     gw.pool.pending_seq, gw.pool.__contains__,
                                     gw.pool.queued, gw.on_event,
                                     tails=DerivedTails(lambda: lease.kv))
        head = self.gw.led.head
        final = head.height - (1 if head.height in self.unfinal else 0)
        self.collector = Collector(self.threshold_at, self._verify,
                                   self._is_member, on_final=self._on_final,
                                   on_evidence=self._on_double_vote, final_height=final)
        metrics = getattr(self.gw, "metrics", None)
        if metrics is not None and self.book.on_count is None:
            counter = Counter("thingledger_double_votes", "Validators' double votes seen, by "
                              "outcome (filed, unknown-header, ...)", ["outcome"],
                              registry=metrics.registry)
            self.book.on_count = lambda outcome: counter.labels(outcome).inc()
        self.sigchan = SigChannel(self.nc, self.domain, self.collector,
                                  on_stale=self._on_late_vote)
        await self.sigchan.start()
        self._status_sub = await self.nc.subscribe(link.status_subject(self.domain),
                                                   cb=self._on_cluster_status)
        self.follower = self.plog.follow(self.log_seq + 1, self._apply)
        self.follower.on_note = self.gw.on_event
        outside = "" if self.member_at(head.height + 1) else " (not in the set: follows only)"
        self.gw.on_event(f"replica {self.cfg.gateway_name} validator "
                         f"{self.validator_id.hex()[:8]}{outside}"
                         f" following the log from {self.log_seq + 1}")
        tasks = [asyncio.create_task(self._intake_loop(), name="intake"),
                 asyncio.create_task(self._propose_loop(), name="propose"),
                 asyncio.create_task(self._resend_loop(), name="votes"),
                 asyncio.create_task(self.issuer.run(), name="operator")]
        assert self.follower._task is not None
        return [*tasks, self.follower._task]

    async def stop(self) -> None:
        if self.issuer is not None:
            await self.issuer.stop()  # the lease handed back: the next gateway issues
        if self.follower is not None:
            await self.follower.stop()
        if self.sigchan is not None:
            try:
                await self.sigchan.stop()
            except nats.errors.Error:
                pass
        if self.intake is not None:
            await self.intake.close()
        if self.nc is not None:
            try:
                await self.nc.drain()
            except (TimeoutError, nats.errors.Error):
                await self.nc.close()

    def operator_submit(self, msg: bytes) -> bytes | None:
        """The market operator's transactions: into the intake by the issuing
        gateway only (gateway/cluster/issuer.py); None when not taken."""
        return None if self.issuer is None else self.issuer.submit(msg)

    # ---- ingress: the intake -------------------------------------------------------
    def _last_seq(self, sender: bytes) -> int:
        rec = self.gw.led.state.get(sender)
        return rec.last_seq if rec is not None else 0

    async def _intake_loop(self) -> None:
        assert self.intake is not None
        while True:
            got = await self.intake.fetch(256, timeout=0.5, known=self.copies.first_copy)
            if not got:
                if self.nc is not None and self.nc.is_closed:
                    # stopping: a fetch on a closed connection fails at once, without
                    # yielding, and this loop would hold the event loop for ever
                    return
                continue
            await self._take(got)

    async def _take(self, got: list[Delivery]) -> None:
        """A fetched batch: into the mempool through the node's validation, or
        settled at once (already in the chain, refused, answered)."""
        gw = self.gw
        settle = [d for d in got if d.committed]  # first copies of committed txs: answered
        if settle:
            got = [d for d in got if not d.committed]
        fresh, already = split_committed(got, self._last_seq)
        settle += already
        for d in already:
            if d.seq > self._last_seq(d.sender):  # a repeat within the batch
                self.copies.read(d.tx_id)
            elif self.copies.is_resend(d) and self.serves(d.sender):
                # a device sending again what the chain holds (its receipt was
                # lost): the gateway serving it answers with the stored receipt,
                # as a lone gateway does; nothing while that block is not final
                # here (its receipts go out when it is). The same bytes are in the
                # chain (the receipt is found by their hash): no signature to check.
                # Not the first copy this gateway's intake brings of a tx the log
                # brought first: its receipt went out when its block was final.
                gw.resend_receipt(d.tx_id, d.sender)
        for d in fresh:
            self.copies.read(d.tx_id)
            tid = gw.handle(d.data, self._decoded(d))
            if tid is None:  # refused, or answered with its stored receipt
                settle.append(d)
            else:
                self.waiting.setdefault(tid, []).append(d)
        await self._settle(settle)
        if len(gw.pool):
            self.wake.set()

    def _decoded(self, d: Delivery) -> Checked | None:
        """The stateless verdict on a delivery from the tx the intake decoded
        (not decoded twice); its signature is checked by the mempool."""
        if d.tx is None:
            return None
        try:
            return Checked(check_decoded(d.tx, self.domain), None, None)
        except errors.TLError as e:
            return Checked(None, e, None)

    async def _settle(self, ds: list[Delivery]) -> None:
        """Acknowledge deliveries once the head is final (what the chain holds is final)."""
        if not ds:
            return
        if not self.head_final():
            self.settle_later.extend(ds)
            return
        assert self.intake is not None
        self._settling += len(ds)
        try:
            left = await self.intake.settle(ds)
        finally:
            self._settling -= len(ds)
        if left:  # not confirmed by the server: tried again after the next final block
            self.settle_later.extend(left)

    async def _settle_later(self) -> None:
        if self.head_final() and self.settle_later:
            later, self.settle_later = self.settle_later, []
            await self._settle(later)

    @property
    def unsettled(self) -> int:
        """Deliveries taken from the intake and not acknowledged yet."""
        return sum(map(len, self.waiting.values())) + len(self.settle_later) + self._settling

    # ---- block: proposing ----------------------------------------------------------
    async def _propose_loop(self) -> None:
        gw = self.gw
        interval = self.cfg.block_interval_s
        wait = interval
        while True:
            try:
                await asyncio.wait_for(self.wake.wait(), wait)
            except TimeoutError:
                pass
            self.wake.clear()
            wait = interval
            if not len(gw.pool) or not self.head_final() \
                    or not self.member_at(gw.led.head.height + 1):
                continue
            height = gw.led.head.height + 1
            left = self.turn_wait(height)
            if left > 0:  # another validator's turn: give it that long first
                wait = left
                continue
            if self.proposers_at(height)[0] != self.validator_id \
                    and await self._log_moved():
                continue  # the one whose turn it was proposed: follow it
            await self._propose()

    async def _log_moved(self) -> bool:
        """Whether the log holds an entry this gateway has not followed yet
        (asked before building a block out of turn: one round trip, against
        a block built and refused by the compare-and-set)."""
        assert self.plog is not None and self.follower is not None
        try:
            return await self.plog.last_seq(timeout=2.0) > self.follower.applied
        except ClusterError:
            return False  # cannot tell: the append's compare-and-set decides

    def proposers_at(self, height: int) -> list[bytes]:
        """The validator ids in their order of precedence to propose `height`:
        of the set of that height, the live members (liveness.py: not offline
        by their last will nor silent for SILENCE_S), sorted by id, rotated to start at height modulo their number.
        An order of precedence only (it saves the others building blocks that
        lose the compare-and-set race): any member may propose, and the first
        valid proposal in the log still wins."""
        ids = sorted(self.set_at(height).ids())
        live = self.liveness.live_of(ids, self.validator_id)
        first = height % len(live)
        return live[first:] + live[:first]

    def turn_wait(self, height: int) -> float:
        """Seconds this validator still waits before proposing `height`: one
        block interval per validator before it in proposers_at(height), from
        the time its head became final (the first proposes at once)."""
        rank = self.proposers_at(height).index(self.validator_id)
        if rank == 0:
            return 0.0
        return self.final_at + rank * self.cfg.block_interval_s - time.monotonic()

    async def _propose(self) -> None:
        gw, led = self.gw, self.gw.led
        assert self.plog is not None and self.follower is not None
        after = self.follower.applied
        txs = list(islice(gw.pool.queued(), self.cfg.block_max_txs))
        b = gw._build_block(txs)
        if b.dropped:  # not includable now: answered and forgotten
            for t, e in b.dropped:
                gw.reject(t.message, t, e)
            gw.pool.remove([t for t, _ in b.dropped])
            self._settle_ids([t.id for t, _ in b.dropped])
        if not b.txs:
            return
        parent = None
        h = led.head.height
        if h > 0:
            parent = self.last_cert[1] if self.last_cert and self.last_cert[0] == h else None
            parent = parent or gw.reader.certificate(h)
            if parent is None:
                return  # not final here yet
        p = Proposal(b.signed_header, [t.message for t in b.txs], self.pub,
                     commit_gateway.vote(self.priv, self.pub, b.hash), parent)
        self.built = b
        try:
            a = await self.plog.append(p.encode(), after)
        except ClusterError as e:
            if e.reason == ClusterError.WRONG_LAST_SEQ:
                self.lost_races += 1  # another proposal is there: follow it
                return
            if e.reason == ClusterError.UNAVAILABLE:
                gw.on_event(f"proposal not appended: {e}")
                return
            raise
        self.proposed += 1
        if a.attempts > 1:
            gw.on_event(f"proposal {a.seq} appended after {a.attempts} tries, {a.seconds:.1f} s")
        await self.follower.wait_applied(a.seq, APPLY_TIMEOUT)

    def _settle_ids(self, ids: list[bytes]) -> None:
        ds = [d for i in ids for d in self.waiting.pop(i, [])]
        if ds:  # counted in `unsettled` until the server confirms their acks
            self.settle_later.extend(ds)
            asyncio.get_running_loop().create_task(self._settle_later())

    # ---- follow: re-execute, store, vote -------------------------------------------
    def _check(self, entry: Entry) -> tuple[blocks.Block, bool]:
        """The block a log entry proposes, re-executed on this gateway's head,
        and whether this gateway built it; TLError with a reason otherwise."""
        led = self.gw.led
        p = Proposal.decode(entry.data)
        head = led.head
        height = head.height + 1
        vs = self.set_at(height)
        if vs.index(p.proposer) is None:
            raise ClusterError(ClusterError.NOT_IN_SET, "proposer " + p.proposer.hex()[:16])
        try:
            _, hbytes = header.open_signed(self.authority_pub, p.signed_header)
        except errors.TLError as e:
            raise errors.TLError("header signature " + e.reason, BAD_PROPOSAL) from None
        if not self._vote_ok(header.block_hash(hbytes), p.proposer, p.vote):
            raise ClusterError(ClusterError.BAD_SIGNATURE, "proposer's vote")
        if head.height > 0:  # the parent must be final: its certificate comes along
            if p.parent_cert is None:
                raise errors.TLError("no parent certificate", BAD_PROPOSAL)
            consensus.check_certificate(p.parent_cert, head.header_bytes, head.fields,
                                        self.set_at(head.height))
        b = self.built
        if b is not None and p.proposer == self.pub and b.signed_header == p.signed_header \
                and [t.message for t in b.txs] == p.txs:
            return b, True
        txs, verified = self._decode_txs(p.txs)
        return blocks.rebuild_block(head, txs, led.state, p.signed_header, self.authority_pub,
                                    self.authority_id, domain=self.domain,
                                    rules=led.rules, verified=verified), False

    def _decode_txs(self, messages: list[bytes]) -> tuple[list[txm.Tx], dict[bytes, bytes]]:
        """A proposal's transactions, and those whose signature this gateway
        verified already (tx id -> key): a message whose bytes are those of a
        tx its mempool checked at intake is that Tx (decoded and verified
        once); rebuild_block skips its signature only if that key is the one
        it must be signed by in the block. Any other message is decoded here
        and verified in rebuild_block."""
        pool = self.gw.pool
        txs: list[txm.Tx] = []
        verified: dict[bytes, bytes] = {}
        for m in messages:
            got = pool.verified(txm.tx_id(m))
            if got is not None and got[0].message == m:
                txs.append(got[0])
                verified[got[0].id] = got[1]
            else:
                txs.append(check_stateless(m, self.domain))
        return txs, verified

    async def _apply(self, entry: Entry) -> None:
        gw, led = self.gw, self.gw.led
        loop = asyncio.get_running_loop()
        try:
            b, mine = self._check(entry)
        except errors.TLError as e:
            proposer = b""
            try:
                refused = Proposal.decode(entry.data)
                proposer = refused.proposer
                h = self.book.keep_signed_header(refused.signed_header)  # evidence
                pair = self.book.unblocked(h) if h is not None else None
                if pair is not None:  # a double vote on this header came first
                    self._on_double_vote(*pair)
            except errors.TLError:
                pass
            await loop.run_in_executor(gw._writer, led.store.record_refused, entry.seq, proposer,
                                       f"{e.reason}: {e.detail}", bytes(entry.data))
            self.refused.append((entry.seq, e.reason))
            gw.on_event(f"proposal {entry.seq} refused: {e.reason} {e.detail} "
                        f"(proposer {proposer.hex()[:8] or '?'})")
            raise
        self.built = None
        head = led.head
        if head.height > 0 and head.height in self.unfinal:  # learnt from the proposal
            p = Proposal.decode(entry.data)
            await self._finalise(head.height, p.parent_cert)
        t0 = time.perf_counter()
        try:
            await loop.run_in_executor(gw._writer, led.store.commit_block, b,
                                       {LOG_SEQ: entry.seq})
        except StoreError as e:  # not a refusal of the entry: the follower stops here
            gw._commit_failed(b, e)
            raise RuntimeError(f"block {b.height} not committed") from e
        accounts = gw._advance(b)
        self.copies.committed([t.id for t in b.txs])
        self._known(b.height, b.hash)
        pair = self.book.unblocked(b.hash)
        if pair is not None:  # a double vote on this header came before it
            self._on_double_vote(*pair)
        gw.pool.remove(list(b.txs) + [t for t, _ in b.dropped])
        self.log_seq = entry.seq
        u = Unfinal(b.height, b.hash, b, accounts, mine, time.perf_counter() - t0)
        self.unfinal[b.height] = u
        if self.member_at(b.height + 1) != self.member_at(b.height):
            gw.on_event(f"validator set of height {b.height + 1}: this gateway "
                        f"{'votes' if self.member_at(b.height + 1) else 'follows only'}")
        await self._vote(u)
        if self.collector is not None:  # votes kept until this block's set was known
            refused = self.collector.revisit()
            if self.sigchan is not None:
                self.sigchan.refused.update(refused)
        cert = self.pending_certs.pop(b.height, None)
        if cert is not None:
            self._on_final(cert)

    async def _vote(self, u: Unfinal) -> None:
        if self.sigchan is None or not self.member_at(u.height):
            return
        sig = commit_gateway.vote(self.priv, self.pub, u.hash)
        try:
            await self.sigchan.publish(HeaderSig(u.height, u.hash, self.pub, sig))
        except nats.errors.Error as e:  # resent by _resend_loop
            log.info("vote not published: %r", e)

    async def _resend_loop(self) -> None:
        """Core NATS delivers at most once: votes on blocks not final go out
        again. Every STATUS_S this gateway's retained "online" status goes out
        again too: NATS's MQTT listener can drop a retained message while its
        retained-message stream is being set up (at the cluster's start), and
        the other gateways and the coordinator follow that status."""
        ticks = 0
        while True:
            await asyncio.sleep(RESEND_S)
            for u in list(self.unfinal.values()):
                await self._vote(u)
            self._say_liveness()  # (a gateway gone silent)
            ticks += 1
            link = self.gw.link
            if ticks * RESEND_S >= STATUS_S and link is not None and link.status_topic:
                ticks = 0
                if link.client.is_connected():
                    link.publish(link.status_topic, b"online", retain=True)

    def _on_late_vote(self, s: HeaderSig) -> None:
        """A vote on a height final here (SigChannel's on_stale): a vote on
        another header of that height goes to the double-vote check; a
        member's vote on the block final here is kept (a vote on another
        header may follow), and answered with this gateway's own vote on it
        (at most every RESEND_S per height). The signature is checked once,
        and only when the vote is new or answered."""
        mine = self.by_height.get(s.height)
        if mine is None:
            return
        seen = self.book.has(s)
        if mine != s.hash:
            if not seen:
                self._other_header(s)
            return
        now = time.monotonic()
        answer = s.signer != self.pub and self.member_at(s.height) \
            and now - self.answered.get(s.height, -RESEND_S) >= RESEND_S
        if seen and not answer:
            return
        if not self._is_member(s.height, s.signer) \
                or not self._vote_ok(s.hash, s.signer, s.signature):
            return
        self.liveness.heard(txm.device_id(s.signer))
        if not seen:
            self._seen_vote(s)
        if answer:
            if len(self.answered) >= KNOWN_HASHES:
                self.answered.clear()
            self.answered[s.height] = now
            asyncio.get_running_loop().create_task(
                self._vote(Unfinal(s.height, s.hash, None)))

    # ---- finality ------------------------------------------------------------------
    def _on_final(self, cert: Certificate) -> None:
        """The Collector holds k votes on one header (called in its callback)."""
        u = self.unfinal.get(cert.height)
        if u is None:
            if cert.height > self.gw.led.head.height:
                self.pending_certs[cert.height] = cert  # the block is still coming
            return
        if u.hash != cert.hash:
            self.gw.on_event(f"error: height {cert.height} final with {cert.hash.hex()[:16]}, "
                             f"this gateway applied {u.hash.hex()[:16]}")
            return
        vs = self.set_at(cert.height)
        votes = {vs.index(s): sig for s, sig in cert.sigs}
        if None in votes or len(votes) < vs.threshold:
            return
        asyncio.get_running_loop().create_task(
            self._finalise(cert.height, commit_gateway.certificate(votes)))

    # ---- double votes filed as proofs (docs/CONSENSUS.md) ----------------------------
    def _seen_vote(self, s: HeaderSig) -> None:
        """A valid vote of a member: kept, and compared with the signer's others."""
        others = self.book.note(s)
        if others:  # prefer a vote whose header is known here
            known = [o for o in others if self._header_of(o.hash) is not None]
            self._on_double_vote((known or others)[0], s)

    def _other_header(self, s: HeaderSig) -> None:
        """A vote on a hash other than the one this gateway holds at that
        height: a double vote if the member also voted for this gateway's
        (seen, or in the height's certificate)."""
        if self.book.is_handled(s):
            return
        if not self._is_member(s.height, s.signer) \
                or not self._vote_ok(s.hash, s.signer, s.signature):
            return
        mine = self.hash_at(s.height)
        cert = self.gw.reader.certificate(s.height) if mine is not None else None
        if cert is not None:
            i = self.set_at(s.height).index(s.signer)
            sig = next((x for j, x in cert if j == i), None)
            if sig is not None:
                self.book.note(HeaderSig(s.height, mine, s.signer, sig))
        self._seen_vote(s)

    def _header_of(self, block_hash: bytes) -> bytes | None:
        hb = self.book.header(block_hash)
        height = self.heights.get(block_hash)
        if hb is None and height is not None:  # a block applied here
            r = self.gw.reader.get_block(height)
            hb = r.header_bytes if r is not None and r.hash == block_hash else None
        return hb

    def _on_double_vote(self, first: HeaderSig, second: HeaderSig) -> None:
        """File the two votes as a PROOF once per offence, if this gateway
        knows both headers; otherwise log and count why not."""
        book = self.book
        if book.is_handled(second):
            return
        who = f"validator {second.signer.hex()[:8]} signed two headers at height {second.height}"
        if second.signer == self.pub:  # not this gateway's doing: its key is known elsewhere
            book.handle(second)
            book.count(second, "own-key")
            self.gw.on_event(f"equivocation: {who} (this gateway's key!): no proof filed")
            return
        try:
            a, b = book.proof(first, second, self._header_of)
        except errors.TLError as e:
            outcome = e.detail if e.detail and e.detail != e.reason else e.reason
            if outcome != UNKNOWN_HEADER:
                book.handle(second)
            book.count(second, outcome)
            self.gw.on_event(f"equivocation: {who}: no proof filed ({e.reason} {outcome})")
            return
        book.handle(second)
        asyncio.get_running_loop().create_task(self._file_proof(first, second, a, b, who))

    async def _file_proof(self, first: HeaderSig, second: HeaderSig, a: bytes, b: bytes,
                          who: str) -> None:
        """Keep the evidence in the store and submit the PROOF, signed with this
        gateway's validator key, into the intake like any transaction (every
        gateway checks it; the offence id takes it once if several file it)."""
        gw, led = self.gw, self.gw.led
        ev = consensus.equivocation(
            consensus.Vote(first.signer, first.height, evidence_header(a), first.signature),
            consensus.Vote(second.signer, second.height, evidence_header(b), second.signature))
        if ev is not None:
            await asyncio.get_running_loop().run_in_executor(
                gw._writer, led.store.record_equivocation, ev)
        outcome = ""
        rec = led.state.get(self.validator_id)
        if not led.rules.trust:
            outcome = "trust-off"
        elif rec is None:
            outcome = "no-account"  # this gateway's validator id holds no account to sign with
        if outcome:
            self.book.count(second, outcome)
            gw.on_event(f"equivocation: {who}: evidence kept, no proof filed ({outcome})")
            return
        assert rec is not None and self.intake is not None
        self._proof_seq = max(self._proof_seq, rec.last_seq) + 1
        msg = txm.make(self.priv, self.validator_id, txm.TYPE_PROOF, self.domain,
                       self._proof_seq, led.rules.min_fee, {1: VOTE_EQUIVOCATION, 2: a, 3: b})
        try:
            await self.intake.submit(msg)
        except (TimeoutError, nats.errors.Error) as e:
            self.book.count(second, "not-submitted")
            gw.on_event(f"equivocation: {who}: proof not submitted ({e!r})")
            return
        self.book.count(second, "filed")
        gw.on_event(f"equivocation: {who}: proof filed")

    async def _finalise(self, height: int, cert: list[Any]) -> None:
        """Store the certificate, then count the block final here: whoever
        sees the head final (settling deliveries, proposing on it) finds its
        certificate in the store."""
        u = self.unfinal.get(height)
        if u is None or u.finalising:
            return  # final already, or being stored
        u.finalising = True
        gw = self.gw
        await asyncio.get_running_loop().run_in_executor(
            gw._writer, gw.led.store.set_certificate, height, cert)
        del self.unfinal[height]
        self.finalised += 1
        self.last_cert = (height, cert)
        vs = self.set_at(height)
        b = u.block
        if b is not None:
            b.cert = cert
            receipts = [b.receipt_message(i) if self.serves(t.sender) else None
                        for i, t in enumerate(b.txs)]
            gw._announce(b, receipts, u.accounts, u.applied_at, [t.id for t in b.txs],
                         announce=u.mine)
            self._settle_ids([t.id for t in b.txs] + [t.id for t, _ in b.dropped])
        gw.on_event(f"final height={height} votes={len(cert)}/{len(vs.pubkeys)} "
                    f"hash={u.hash.hex()[:16]} txs={len(b.txs) if b is not None else '?'}"
                    f"{f' (proposed here; races lost so far {self.lost_races})' if u.mine else ''}")
        await self._settle_later()
        if height == gw.led.head.height:
            self.final_at = time.monotonic()
        self.final_event.set()
        self.final_event.clear()
        self.wake.set()
