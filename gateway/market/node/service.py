"""The market side of a running gateway: everything the full node does for
the service economy beyond executing transactions (docs/MARKET.md).

- notices: MATCH to both parties, ACCOUNT (retained) to devices whose
  balance a block changed, ENDED when an agreement or a waiting demand closes (rx topics),
  each sealed by the authority (shared/notice.py); a MATCH carries the height
  and order it was sealed at, so a board refuses a replayed one;
- a device that says it is online (tl/<d>/dev/<id>/status: a board's
  retained `online`, published on every (re)connect) is told again what it
  may have missed while either side was down: ACCOUNT, and a MATCH with the
  first index not committed for each of its open agreements that still
  has readings to come (a restarted supplier board closes it: docs/MARKET.md);
- the retained offers directory on tl/<d>/offers, republished when offers
  change or one expires;
- streams: every reading on tl/<d>/data/<supplier>/<agreement> is verified
  under the agreement's supplier key and kept in the StreamStore;
- the operator (the authority key) acts through ordinary signed txs:
  verdicts on committed batches (checked against the stream store, after a
  grace period for readings still in flight, once no feature holds the
  batch's payment: ledger.payment_hold; each kept pending and sent
  again with backoff until the chain shows the batch judged), CLOSE of expired agreements
  and demands, an optional grant to newly registered devices (owed from the
  block of the REGISTER until the chain shows it: grants.py), and the
  optional deployment of the agreement contract at start;
- edge analytics: each configured DerivedService buys its source stream,
  keeps a rolling mean of it, offers the derived service and, once matched,
  streams and commits the derived readings like any supplier. In a
  replicated domain (`claims`) every gateway folds the source and keeps the
  derived readings, and the issuer makes each reading only through the
  cluster's claim (gateway/cluster/derived.py: next_derived, tail, emit),
  continuing a stream another issuer began from its claimed tail (adopt).
The pure rules live in ledger.py / matching.py; this module only reacts to
committed blocks, devices' statuses and the clock, so a restart rebuilds it
from the state: open agreements and waiting demands, the verdicts owed on
committed batches, and the derived streams the operator supplies (resumed
from the readings it holds).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.contracts import binding as chain
from gateway.ledger import keys
from gateway.ledger.blocks import Block
from gateway.ledger.state import KIND_CONTRACT, State
from gateway.market.ledger import directory
from gateway.market.ledger import rules as ledger
from gateway.market.node.analytics import DerivedService, RollingMean
from gateway.market.node.grants import GRANTS_FILE, ChainTxs, GrantBook
from gateway.market.node.streams import StreamStore
from gateway.node.config import STREAMS_FILE
from shared import cbor, errors, messages, p256, stream, streamroot, topics, txnames
from shared import tx as txm
from shared.notice import seal as seal_notice

VERDICT_GRACE_S = 3.0  # wait this long for readings still in flight
# a verdict stays pending until the chain shows the batch judged (or the
# agreement gone): sent again after VERDICT_RETRY_S, doubling up to the max
VERDICT_RETRY_S = 2.0
VERDICT_RETRY_MAX_S = 120.0
RETRY_S = 10.0  # resend a keeper tx that did not land
GRANTS_PER_TICK = 256  # fresh grants signed per tick at most
BATCH = 4  # derived readings per commitment
PLAUSIBILITY_ROUND_S = 60  # oracle rounds are minutes of block time
FUEL = 50_000
ANNOUNCE_S = 5.0  # tell a device its state again at most this often (it says `online`)
RESUME_ORDER = 1 << 16  # the orders of MATCHes told again: above those of any block

Publish = Callable[[str, bytes, bool], None]


@dataclass
class _Pending:
    """A committed batch awaiting the operator's verdict on chain."""

    aid: bytes
    batch: int
    first: int
    count: int
    root: bytes
    deadline: float
    verdict: tuple[bool, int, int] | None = None  # (ok, mean, round) once decided
    tx: bytes = b""  # the last verdict tx signed for it
    tries: int = 0
    next_try: float = 0.0
    held: str = ""  # the detail of the hold it waits on (ledger.payment_hold), said once


@dataclass
class _Supply:
    """A derived stream the operator supplies under one agreement."""

    aid: bytes
    service: DerivedService
    quantity: int
    interval_s: int
    next_at: float
    index: int = 0
    batch_no: int = 0
    batch: streamroot.Batch = field(default_factory=streamroot.Batch)
    first: int = 0
    # replicated (MarketNode.claims): taken over from the chain and the cluster's
    # claimed tail (adopt) since this gateway began issuing
    adopted: bool = False
    commit_seq: int = 0  # the operator's seq of the last commit made


@dataclass
class _Grant:
    """The last grant tx signed (or found pending) for one owed device."""

    tx: bytes
    seq: int
    next_try: float
    tries: int = 0


def _awaits_verdict(state: State, p: _Pending) -> bool:
    """The batch is committed and not yet judged in an open agreement."""
    a = ledger.agreement(state, p.aid)
    return a is not None and a["state"] == "open" and p.batch in a["pending"]


def _brief(t: txm.Tx) -> str:
    b = t.body
    kind = txnames.name(t.type)
    if t.type == txm.TYPE_OFFER:
        return f"{kind} {b[1]} price={b[3]}"
    return f"{kind} {b[1]} max_price={b[2]} quantity={b[3]} policy={b[5]}"


class Operator:
    """The gateway's own account: signs txs with the authority key and hands
    them to the ingress path (`submit`)."""

    def __init__(self, priv: bytes, domain: str, submit: Callable[[bytes], Any]) -> None:
        self.priv = priv
        self.pub = p256.public_key(priv)
        self.id = txm.device_id(self.pub)
        self.domain = domain
        self.submit = submit
        self.seq = 0
        self.taken = False  # the last tx sent was taken (admitted, pending or queued)

    def send(self, state: State, type_: int, body: dict[int, Any]) -> bytes:
        rec = state.get(self.id)
        self.seq = max(self.seq, rec.last_seq if rec else 0) + 1
        msg = txm.make(self.priv, self.id, type_, self.domain, self.seq, 0, body)
        self.taken = self.submit(msg) is not None
        return msg

    def call(self, state: State, method: str, *args: Any) -> bytes:
        return self.send(state, txm.TYPE_CONTRACT_CALL,
                         {1: ledger.AGREEMENT, 2: method, 3: list(args), 4: 0, 5: FUEL})


class MarketNode:
    def __init__(self, domain: str, data_dir: Path, authority_priv: bytes,
                 publish: Publish, submit: Callable[[bytes], Any],
                 log: Callable[[str], None], *, grant: int = 0, fee_bps: int | None = None,
                 derived: tuple[DerivedService, ...] = (), admin: bytes | None = None) -> None:
        self.domain = domain
        # the domain's contract admin (its owner, else the authority): the
        # operator deploys the agreement contract only if that is itself
        self.admin = admin
        self.publish = publish
        self.log = log
        self.op = Operator(authority_priv, domain, submit)
        self.streams = StreamStore(data_dir / STREAMS_FILE)
        self.grant = grant
        # the devices owed their grant, folded from every applied block (grants.py)
        self.grants = GrantBook(data_dir / GRANTS_FILE, self.op.id) if grant else None
        self._granting: dict[bytes, _Grant] = {}  # owed device -> its grant tx in flight
        self._unfunded = -1  # the operator's balance when it last could not grant
        self.fee_bps = fee_bps
        self.derived = derived
        self.data_prefix = topics.data(domain, "")
        self._pending: dict[tuple[bytes, int], _Pending] = {}
        self._closing: dict[bytes, float] = {}  # id -> when a CLOSE was sent
        self._open: dict[bytes, int] = {}  # agreement / waiting demand id -> expiry
        self._next_expiry: int | None = None
        self._rolling: dict[str, RollingMean] = {}  # source service -> mean
        self._buying: dict[str, bytes] = {}  # source service -> agreement id (or demand)
        self._supplies: dict[bytes, _Supply] = {}
        self._offered: dict[str, float] = {}
        # the derived services' last DEMAND (id) and OFFER made: (id, seq)
        self._made: dict[tuple[str, str], tuple[bytes, int]] = {}
        self._started = False
        self._height = 0  # the block whose notices are being sealed
        self._order = 0  # MATCHes sealed at that height so far
        self._time = 0  # its block time
        self._told: dict[bytes, float] = {}  # device -> when its state was told again
        # this node makes the operator's txs: always on a lone gateway; in a
        # replicated domain only on the issuer (gateway/cluster/issuer.py)
        self.issuing = True
        # replicated: a derived reading is published only once the cluster holds
        # it for its index (gateway/cluster/derived.py); the issuer drives the
        # supply (supplies, next_derived, tail, emit, adopt), not tick
        self.claims = False
        self._status = topics.status(domain, "+")
        # told of each stream reading kept (verified under the supplier's key):
        # (supplier, service, unit, value, scale, state); gateway/node/homeassistant.py
        self.on_reading: Callable[[bytes, str, str, int, int, State], None] | None = None

    @property
    def subscriptions(self) -> list[str]:
        return [self.data_prefix + "+/+", self._status]

    def is_status(self, topic: str) -> bool:
        """A device's status topic (tl/<d>/dev/<id>/status)."""
        head, _, tail = self._status.partition("+")
        return topic.startswith(head) and topic.endswith(tail) and "/" not in \
            topic[len(head):-len(tail)]

    def close(self) -> None:
        self.streams.close()
        if self.grants is not None:
            self.grants.close()

    # -- start: rebuild what is open from the state -------------------------------------
    def start(self, state: State, chain: ChainTxs | None = None, head: int = 0) -> None:
        """`chain` (the chain store, `head` its head height): the grants owed
        are folded from the book's cursor up to `head` (a stop between a
        block and its fold)."""
        if self.grants is not None and chain is not None:
            self.grants.catch_up(chain, head)
        for k, v in state.kv_range(ledger.AGREEMENTS):
            a = cbor.loads(v)
            if a["state"] == "open":
                aid = k[-16:]
                self._open[aid] = a["expiry"]
                if a["buyer"] == self.op.id:
                    self._buying[a["service"]] = aid
        for k, v in state.kv_range(keys.DEMANDS):
            d = cbor.loads(v)
            self._open[k[-16:]] = d[ledger.D_UNTIL]
            if d[ledger.D_BUYER] == self.op.id:
                self._buying[d[ledger.D_SERVICE]] = k[-16:]
        self._resume(state, time.time())
        self._publish_directory(state, int(time.time()))
        if self.issuing:
            self._set_up(state)
        self._started = True

    def _set_up(self, state: State) -> None:
        """The agreement contract deployed (with `fee_bps`) or upgraded."""
        if self.fee_bps is not None and not ledger.agreement_active(state) \
                and self.admin not in (None, self.op.id):
            self.log(f"market the agreement contract is not deployed: its admin "
                     f"{self.admin.hex()[:8]} deploys it (thingledger contract deploy)")
        elif self.fee_bps is not None and not ledger.agreement_active(state):
            self.op.send(state, txm.TYPE_CONTRACT_ADMIN, {
                1: "deploy", 2: ledger.AGREEMENT_LABEL, 3: "agreement",
                4: ledger.AGREEMENT_VERSION,
                5: {"operator": self.op.id, "fee_bps": self.fee_bps}})
            self.log(f"market deploying the agreement contract (fee {self.fee_bps} bps)")
        self._upgrade_agreement(state)

    def take_over(self, state: State, pending: list[txm.Tx], now: float | None = None) -> None:
        """This gateway has become the issuer of a replicated domain
        (gateway/cluster/issuer.py): what the former issuer left pending in
        the mempool or the intake (`pending`: the authority's txs there) is
        not sent again (its verdicts are kept as this node's, its CLOSEs as
        sent, its grants as this node's), what else is due (also the grants
        owed to devices registered since) goes out at the next tick, and the
        contract is set up unless an admin tx is pending."""
        now = time.time() if now is None else now
        self._closing.clear()
        for p in self._pending.values():
            p.tries, p.next_try = 0, 0.0
        self.grants_pending(pending, now)
        for s in self._supplies.values():
            s.adopted = False  # continued from the chain and the cluster's tail (adopt)
        for t in pending:
            if t.type == txm.TYPE_CLOSE:
                self._closing[t.body[1]] = now
            elif t.type == txm.TYPE_DEMAND:  # the former issuer's purchase of a source
                if self._buying.setdefault(t.body[1], b"") == b"":
                    self._made[("demand", t.body[1])] = (t.id[:16], t.seq)
            elif t.type == txm.TYPE_CONTRACT_CALL and t.body[2] == "verdict":
                args = t.body[3]
                p = self._pending.get((args[0], args[1]))
                if p is not None:
                    p.verdict, p.tx = (args[2], args[3], args[4]), t.message
                    p.next_try = now + VERDICT_RETRY_S
        if not any(t.type == txm.TYPE_CONTRACT_ADMIN for t in pending):
            self._set_up(state)

    def grants_pending(self, txs: list[txm.Tx], now: float | None = None) -> None:
        """Operator TRANSFERs that may still land (pending in the mempool, or in
        the intake not read yet): each is its payee's grant, never signed again
        while it may land (`_grants`). Also to a device not owed here yet: this
        gateway may not have applied its REGISTER's block."""
        if self.grants is None:
            return
        now = time.time() if now is None else now
        for t in txs:
            if t.type != txm.TYPE_TRANSFER or t.sender != self.op.id:
                continue
            g = self._granting.get(t.body[1])
            if g is None or g.seq < t.seq:
                self._granting[t.body[1]] = _Grant(t.message, t.seq, now + RETRY_S)

    def applied(self, b: Block) -> None:
        """A block became the head (every block, on every gateway, issuing or
        not): the grants owed move along it."""
        if self.grants is not None:
            self.grants.fold_block(b.height, [(t.sender, t.type, r.status, r.events)
                                              for t, r in zip(b.txs, b.receipts, strict=True)])

    def _upgrade_agreement(self, state: State) -> None:
        """An agreement deployment older than AGREEMENT_VERSION (v1: anyone
        could open an agreement under a waiting demand's id) is upgraded
        when the operator is the domain admin; otherwise the admin is told."""
        dep = chain.deployment(state, ledger.AGREEMENT)
        if dep is None or dep["version"] >= ledger.AGREEMENT_VERSION:
            return
        if dep["admin"] != self.op.id:
            self.log(f"market the agreement contract is v{dep['version']}: its admin should "
                     f"upgrade it to v{ledger.AGREEMENT_VERSION} (thingledger contract upgrade)")
            return
        self.op.send(state, txm.TYPE_CONTRACT_ADMIN, {1: "upgrade", 2: ledger.AGREEMENT,
                                                     3: ledger.AGREEMENT_VERSION})
        self.log(f"market upgrading the agreement contract to v{ledger.AGREEMENT_VERSION}")

    def _resume(self, state: State, now: float) -> None:
        """What a stop left half done: verdicts owed on committed batches (the
        readings are in the stream store), and the derived streams this
        operator supplies, continued from the readings it holds past the
        last committed one (its batch in progress)."""
        self.resume_verdicts(state, now)
        for a in ledger.open_agreements(state):
            aid = a["id"]
            d = next((d for d in self.derived if d.name == a["service"]), None)
            if a["supplier"] != self.op.id or d is None or a["next_index"] >= a["quantity"]:
                continue
            first = a["next_index"]
            s = _Supply(aid, d, a["quantity"], d.interval_s, now + d.interval_s,
                        index=first, batch_no=a["next_batch"], first=first)
            for msg in self.streams.messages(aid, first, a["quantity"] - first):
                self._batched(s, msg, state)  # ours, made in index order: no gaps
            self._supplies[aid] = s
            self.log(f"market resumed supply agreement={aid.hex()[:8]} index={s.index}")

    # -- a device came online: tell it its state again ---------------------------------
    def on_status(self, topic: str, payload: bytes, state: State, head: Block,
                  now: float | None = None) -> None:
        """A device says `online` (its retained status when this node
        subscribes, or again after any reconnect): the ACCOUNT and the open
        agreements it may have missed while it or this node was down (the
        embedded broker keeps no retained message across a restart; a board
        keeps its agreements in RAM). Once per ANNOUNCE_S per device at most:
        anyone may say `online` for a device on an open domain."""
        if payload != b"online":
            return
        head_s, _, tail = self._status.partition("+")
        try:
            dev = bytes.fromhex(topic[len(head_s):-len(tail)])
        except ValueError:
            return
        rec = state.get(dev)
        if dev == self.op.id or rec is None or rec.kind == KIND_CONTRACT:
            return
        now = time.time() if now is None else now
        if now - self._told.get(dev, -ANNOUNCE_S) < ANNOUNCE_S:
            return
        self._told[dev] = now
        self._rx(dev, messages.account(rec.balance, head.height), retain=True)
        # sealed at the head: above the orders of its block's MATCHes, and above
        # those told again earlier at this height (seconds since the block, x 64)
        order = RESUME_ORDER + max(0, int(now) - head.time) * 64
        told = 0
        for aid in list(self._open):
            a = ledger.agreement(state, aid)
            if (a is None or a["state"] != "open" or dev not in (a["buyer"], a["supplier"])
                    or a["next_index"] >= a["quantity"]):
                continue  # a waiting demand, or nothing left to stream (verdicts to come)
            s = state.get(a["supplier"])
            o = state.kv_get(keys.offer(a["service"], a["supplier"]))
            interval = ledger.offer_of(o).interval_s if o is not None else 1
            role = "buyer" if dev == a["buyer"] else "supplier"
            self._rx(dev, messages.match(aid, a["buyer"], a["supplier"], s.pubkey if s else b"",
                                         a["service"], a["price"], a["quantity"], interval,
                                         a["expiry"], ledger.AGREEMENT, role, head.height,
                                         order + told, max(0, a["expiry"] - int(now)),
                                         a["next_index"]))
            told += 1
            if told == 64:
                break
        self.log(f"market told {dev.hex()[:8]} its state again: balance={rec.balance} "
                 f"agreements={told}")

    # -- streams ----------------------------------------------------------------------
    def on_data(self, topic: str, payload: bytes, state: State) -> None:
        """A reading on tl/<d>/data/<supplier hex>/<agreement hex>: keep it
        if it verifies under the agreement's supplier key."""
        try:
            supplier, aid = (bytes.fromhex(x) for x in topic[len(self.data_prefix):].split("/"))
        except ValueError:
            return
        if supplier == self.op.id and not self.claims:
            return  # a derived stream of ours, stored as it was made (_supply)
        a = ledger.agreement(state, aid)
        if a is None or a["supplier"] != supplier:
            return
        # replicated: every gateway keeps the issuer's derived readings too (the
        # one that takes the lease over judges the batches committed before)
        s = state.get(a["supplier"])
        if s is None:
            return
        try:
            idx = self.streams.add(aid, s.pubkey, payload, time.time())
        except errors.TLError as e:
            self.log(f"market reading refused agreement={aid.hex()[:8]} reason={e.reason} "
                     f"detail={e.detail}")
            return
        if supplier == self.op.id:
            return
        if self.on_reading is not None:
            o = state.kv_get(keys.offer(a["service"], supplier))
            unit = ledger.offer_of(o).unit if o is not None else ""
            for _, value, scale in self.streams.readings(aid, idx, 1):
                self.on_reading(supplier, a["service"], unit, value, scale, state)
        if a["buyer"] == self.op.id:  # a stream we bought: feed the analytics
            for _, value, scale in self.streams.readings(aid, idx, 1):
                r = self._rolling.setdefault(a["service"], self._window(a["service"]))
                try:
                    r.add(value, scale)
                except ValueError:
                    pass

    def _window(self, source: str) -> RollingMean:
        for d in self.derived:
            if d.source == source:
                return d.rolling()
        return RollingMean(1)

    # -- after each committed block -----------------------------------------------------
    def account_notices(self, b: Block, before: State) -> list[tuple[bytes, int]]:
        """(device, new balance) for devices whose balance the block changed;
        `before` is the state the block was built on."""
        out = []
        for i, rec in b.diff.items():
            old = before.get(i)
            if rec.kind == KIND_CONTRACT or i == self.op.id:
                continue
            if (old.balance if old else 0) != rec.balance:
                out.append((i, rec.balance))
        return out

    def on_block(self, b: Block, state: State, accounts: list[tuple[bytes, int]]) -> None:
        now = time.time()
        offers_changed = False
        self._height, self._order, self._time = b.height, 0, b.time
        for t, r in zip(b.txs, b.receipts, strict=True):
            if t.type in (txm.TYPE_OFFER, txm.TYPE_DEMAND) and r.status == messages.STATUS_OK:
                self.log(f"market {_brief(t)} from={t.sender.hex()[:8]}")
            for e in r.events:
                offers_changed |= self._event(e, state, now)
        for dev, bal in accounts:  # retained: a board that was away reads it on return
            self._rx(dev, messages.account(bal, b.height), retain=True)
        if offers_changed or (self._next_expiry is not None and b.time >= self._next_expiry):
            self._publish_directory(state, b.time)
        self.tick(state, now)  # the keeper among it

    def _event(self, e: list[Any], state: State, now: float) -> bool:
        if not isinstance(e[0], str) and e[0] != ledger.AGREEMENT:
            return False  # another contract's event, whatever its name (a copy's look-alike)
        name = e[0] if isinstance(e[0], str) else e[1]
        if name in ("offer", "withdraw"):
            return True
        if name == "match":
            _, aid, buyer, supplier, price, qty, expiry, service, interval, policy = e
            s = state.get(supplier)
            for who, role in ((buyer, "buyer"), (supplier, "supplier")):
                self._rx(who, messages.match(aid, buyer, supplier, s.pubkey if s else b"",
                                             service, price, qty, interval, expiry,
                                             ledger.AGREEMENT, role, self._height, self._order,
                                             expiry - self._time))
            self._order += 1
            self._open[aid] = expiry
            self._closing.pop(aid, None)
            self.log(f"market match {service} agreement={aid.hex()[:8]} buyer={buyer.hex()[:8]}"
                     f" supplier={supplier.hex()[:8]} price={price} quantity={qty}"
                     f" policy={policy}")
            if buyer == self.op.id:
                self._buying[service] = aid
            if supplier == self.op.id:
                d = next((d for d in self.derived if d.name == service), None)
                if d is not None:  # first reading once the buyer has subscribed
                    self._supplies[aid] = _Supply(aid, d, qty, interval, now + interval + 1)
            return True
        if name == "wait":
            self._open[e[1]] = e[2]
        elif name == "delivery-committed":
            _, _, aid, batch, first, count, root = e
            self._pending[(aid, batch)] = _Pending(aid, batch, first, count, root,
                                                   now + VERDICT_GRACE_S)
        elif name == "delivery-paid":
            _, _, aid, batch, supplier, paid, fee = e
            self.log(f"market paid agreement={aid.hex()[:8]} batch={batch} "
                     f"supplier={supplier.hex()[:8]} amount={paid} fee={fee}")
        elif name == "delivery-failed":
            _, _, aid, batch, supplier, why = e
            self.log(f"market delivery-failed agreement={aid.hex()[:8]} batch={batch} "
                     f"supplier={supplier.hex()[:8]} reason={why}")
        elif name in ("agreement-closed", "demand-closed"):
            if name == "agreement-closed":
                _, _, aid, buyer, supplier, back = e
                parties = (buyer, supplier)
            else:
                _, aid, buyer, back = e
                parties = (buyer,)
            for who in parties:
                self._rx(who, messages.ended(aid, back, self._height))
            self._open.pop(aid, None)
            self._closing.pop(aid, None)
            self._supplies.pop(aid, None)
            for svc, bought in list(self._buying.items()):
                if bought == aid:
                    del self._buying[svc]
            self.log(f"market closed {aid.hex()[:8]} refund={back}")
        return False

    def _rx(self, device: bytes, notice: bytes, retain: bool = False) -> None:
        """A market notice to `device`, sealed by the authority (shared/notice.py)."""
        self.publish(topics.rx(self.domain, device.hex()),
                     seal_notice(self.op.priv, self.op.id, notice), retain)

    def _publish_directory(self, state: State, now: int) -> None:
        live = [ledger.offer_of(v) for _, v in state.kv_range(keys.OFFERS)]
        live = [o for o in live if o.expires > now]
        self._next_expiry = min((o.expires for o in live), default=None)
        self.publish(topics.offers(self.domain),
                     directory.encode([o.to_map() for o in live]), True)

    # -- the operator's keeper ----------------------------------------------------------
    def _keeper(self, state: State, now: float) -> None:
        """CLOSE what expired (expiry: block time, whole seconds of the same
        clock), again after RETRY_S if the close has not landed."""
        for i, expiry in list(self._open.items()):
            if now >= expiry and now - self._closing.get(i, -RETRY_S) >= RETRY_S:
                self._closing[i] = now
                self.op.send(state, txm.TYPE_CLOSE, {1: i})

    def tick(self, state: State, now: float) -> None:
        """Clock-driven work: verdicts whose readings are in (or whose grace
        ran out), closing what expired (blocks are cut only when txs wait,
        so the keeper cannot wait for one), the derived services' buying,
        offering and streaming. Not issuing: only forgets the batches judged."""
        if not self.issuing:
            for key, p in list(self._pending.items()):
                if not _awaits_verdict(state, p):
                    del self._pending[key]
            return
        self._keeper(state, now)
        self._grants(state, now)
        self._verdicts(state, now)
        for d in self.derived:
            self._derive(d, state, now)
        if self.claims:
            return  # the derived readings: the issuer's supply step (cluster/issuer.py)
        for s in list(self._supplies.values()):
            if now >= s.next_at and s.index < s.quantity:
                self._supply(s, state, now)

    def _grants(self, state: State, now: float) -> None:
        """A grant to each device the chain shows owed (grants.py). Never two:
        a grant tx signed here or found pending (`grants_pending`) may land
        as long as the operator's committed seq is below its seq, so until
        then only that same tx is sent again (with backoff); a fresh one is
        signed only once the chain has passed its seq without it (dropped,
        refused, or failed). Grants in flight count against the operator's
        balance; at most GRANTS_PER_TICK fresh ones per tick."""
        if self.grants is None:
            return
        owed = self.grants.owed
        me = state.get(self.op.id)
        last = me.last_seq if me is not None else 0
        for dev in [d for d, g in self._granting.items() if g.seq <= last and d not in owed]:
            del self._granting[dev]  # landed (the chain shows the grant), or never will
        funds = me.balance if me is not None else 0
        for g in self._granting.values():
            if g.seq > last:  # may still land: the same tx again, never another
                funds -= self.grant
                if now >= g.next_try:
                    g.next_try = now + min(RETRY_S * 2 ** g.tries, VERDICT_RETRY_MAX_S)
                    g.tries += 1
                    self.op.submit(g.tx)
        fresh = 0
        for dev in owed:
            g = self._granting.get(dev)
            if (g is not None and g.seq > last) or state.get(dev) is None:
                continue
            if fresh == GRANTS_PER_TICK:
                break
            if funds < self.grant:
                if self._unfunded != funds:
                    self._unfunded = funds
                    self.log(f"market no grant for {dev.hex()[:8]}: the operator holds "
                             f"{me.balance if me else 0} ({len(owed)} owed)")
                break
            msg = self.op.send(state, txm.TYPE_TRANSFER, {1: dev, 2: self.grant})
            if not self.op.taken:  # not issuing now, or refused: never lands
                break
            self._granting[dev] = _Grant(msg, self.op.seq, now + RETRY_S)
            funds -= self.grant
            fresh += 1
            self.log(f"market grant {self.grant} to {dev.hex()[:8]}")

    def _verdicts(self, state: State, now: float) -> None:
        """Judge each committed batch once its readings are in (or its grace
        ran out) and no guard a feature registered holds its payment
        (ledger.payment_hold: while a hold lasts the batch waits, and its
        readings' grace starts again when it ends; a final hold fails it),
        then keep that verdict pending until the chain shows the batch
        judged or the agreement gone: a verdict refused at ingress
        (mempool-full, rate-limited) or dropped from a block is sent again,
        with backoff. The contract judges a batch once (a second verdict
        fails with unknown-batch), so a resend can never pay twice."""
        for key, p in list(self._pending.items()):
            if not _awaits_verdict(state, p):
                del self._pending[key]  # judged on chain, or the agreement is gone
            elif p.verdict is None:
                hold = ledger.payment_hold(state, p.aid, p.batch)
                if hold is not None and not hold.final:  # not payable yet: judged later
                    if p.held != hold.detail:
                        p.held = hold.detail
                        self.log(f"market verdict waits agreement={p.aid.hex()[:8]} "
                                 f"batch={p.batch} reason={hold.reason} detail={hold.detail}")
                    p.deadline = now + VERDICT_GRACE_S  # readings' grace from the hold's end
                    continue
                v = self.streams.check_batch(p.aid, p.first, p.count, p.root)
                if hold is not None or v.ok or now >= p.deadline:  # a final hold: never paid
                    p.verdict = (v.ok and hold is None, v.mean, int(now) // PLAUSIBILITY_ROUND_S)
                    self._send_verdict(p, state, now)
            elif now >= p.next_try:
                self.log(f"market verdict again agreement={p.aid.hex()[:8]} batch={p.batch} "
                         f"try={p.tries + 1}")
                self._send_verdict(p, state, now)

    def _send_verdict(self, p: _Pending, state: State, now: float) -> None:
        """The same signed verdict while it can still land (pending, or
        admitted now); a fresh one (next seq) once that one was refused."""
        assert p.verdict is not None
        p.next_try = now + min(VERDICT_RETRY_S * 2 ** p.tries, VERDICT_RETRY_MAX_S)
        p.tries += 1
        if p.tx and self.op.submit(p.tx) is not None:
            return
        p.tx = self.op.call(state, "verdict", p.aid, p.batch, *p.verdict)

    def resume_verdicts(self, state: State, now: float) -> None:
        """After a restart: every batch committed on chain but not yet judged
        is pending again (the stream store kept its readings)."""
        for a in ledger.open_agreements(state):
            for batch, (first, count, root) in a["pending"].items():
                self._pending.setdefault((a["id"], batch), _Pending(
                    a["id"], batch, first, count, root, now + VERDICT_GRACE_S))

    def _derive(self, d: DerivedService, state: State, now: float) -> None:
        me = state.get(self.op.id)
        if me is None or not ledger.agreement_active(state):
            return
        qty = d.window
        # a DEMAND or OFFER the chain passed by without taking it (refused by the
        # gateways that validated it on an older head, dropped) is made again
        sent = self._made.get(("demand", d.source))
        if sent is not None and self._buying.get(d.source) == b"" and me.last_seq >= sent[1] \
                and ledger.agreement(state, sent[0]) is None \
                and state.kv_get(keys.demand_index(sent[0])) is None:
            del self._buying[d.source]
        sent = self._made.get(("offer", d.name))
        if sent is not None and me.last_seq >= sent[1] \
                and state.kv_get(keys.offer(d.name, self.op.id)) is None:
            self._offered.pop(d.name, None)
            del self._made[("offer", d.name)]
        if d.source not in self._buying and me.balance >= d.price * qty:
            msg = self.op.send(state, txm.TYPE_DEMAND, {1: d.source, 2: d.price, 3: qty,
                                                        4: 600, 5: "cheapest"})
            if self.op.taken:  # (not taken: a replica re-reading its seqs; next tick)
                self._buying[d.source] = b""  # until its match or wait event
                self._made[("demand", d.source)] = (txm.tx_id(msg)[:16], self.op.seq)
        if now - self._offered.get(d.name, -1e9) >= 1800:
            self.op.send(state, txm.TYPE_OFFER, {1: d.name, 2: d.unit, 3: d.price,
                                                 4: d.interval_s, 5: "", 6: 3600, 7: 1})
            if self.op.taken:
                self._offered[d.name] = now
                self._made[("offer", d.name)] = (b"", self.op.seq)

    def _supply(self, s: _Supply, state: State, now: float) -> None:
        msg = self.next_derived(s, now)
        if msg is not None:
            self.emit(s, msg, state, now)

    # -- derived readings in a replicated domain (driven by gateway/cluster/issuer.py) --
    def supplies(self) -> list[_Supply]:
        """The derived streams this operator supplies (open agreements)."""
        return list(self._supplies.values())

    def next_derived(self, s: _Supply, now: float) -> bytes | None:
        """The reading of index `s.index`, signed, from the rolling mean of the
        purchased source (None: no source reading yet); the next is due one
        interval later."""
        r = self._rolling.get(s.service.source)
        mean = r.mean() if r is not None else None
        s.next_at = now + s.interval_s
        if mean is None or r is None or r.scale is None:
            return None
        return stream.reading(self.op.priv, self.op.id, s.aid, s.index, mean, r.scale)

    def tail(self, s: _Supply, state: State) -> tuple[int, int, list[bytes]]:
        """(first index, its batch, the readings) made for `s` and not yet
        committed on the chain as this gateway holds it: what another issuer
        must send again with the same bytes, never derive anew."""
        a = ledger.agreement(state, s.aid)
        first, batch = (a["next_index"], a["next_batch"]) if a is not None else (s.first,
                                                                                  s.batch_no)
        first, batch = min(first, s.first), min(batch, s.batch_no)

        def held(first: int) -> list[bytes]:  # the readings first .. s.index-1 held
            return self.streams.messages(s.aid, first, s.index - first) \
                if s.index > first else []

        readings = held(first)
        if len(readings) != s.index - first:  # a gap before this batch (a commit in flight
            # that this gateway took over): the tail from this batch on, contiguous
            first, batch = s.first, s.batch_no
            readings = held(first)
        return first, batch, readings

    def stalled(self, s: _Supply, state: State) -> bool:
        """A commit of `s` the chain passed by without taking it (dropped with
        the issuer's queue after a failed append, refused): `s` is adopted
        again, which batches and commits the claimed readings once more."""
        a = ledger.agreement(state, s.aid)
        me = state.get(self.op.id)
        if a is None or me is None or a["next_index"] >= s.first or me.last_seq < s.commit_seq:
            return False
        s.adopted = False
        self.log(f"market commit of agreement={s.aid.hex()[:8]} batch={a['next_batch']} "
                 "did not land: made again")
        return True

    def emit(self, s: _Supply, msg: bytes, state: State, now: float) -> None:
        """Keep, publish and batch the reading of index `s.index` (`msg`);
        commit the batch once full. Not sent if the stream store holds another
        reading at that index (a former issuer's): adopted again first."""
        try:
            self.streams.add(s.aid, self.op.pub, msg, now)  # kept here: on_data skips our own
        except errors.TLError as e:
            s.adopted = False
            self.log(f"market derived reading not sent agreement={s.aid.hex()[:8]} "
                     f"index={s.index} reason={e.reason}")
            return
        self.publish(topics.data(self.domain, self.op.id.hex() + "/" + s.aid.hex()), msg, False)
        self._batched(s, msg, state)

    def adopt(self, aid: bytes, state: State, first: int, batch: int, held: list[bytes],
              pending: list[txm.Tx], now: float) -> None:
        """This gateway issues (again): the derived stream `aid` continues from
        the chain, the commits `pending` (the operator's txs in the mempool or
        the intake) and the tail the cluster holds (`held`, readings `first`..
        of batch `batch`, claimed by an issuer before: gateway/cluster/derived.py).
        A held reading past the committed ones is published again with its
        bytes (the same value for its index), never derived anew."""
        s = self._supplies.get(aid)
        a = ledger.agreement(state, aid)
        if s is None or a is None or a["state"] != "open":
            return
        start, nb = a["next_index"], a["next_batch"]
        for t in pending:  # a commit on its way: its readings are committed
            if t.type == txm.TYPE_CONTRACT_CALL and t.body[2] == "commit" \
                    and t.body[3][0] == aid and t.body[3][2] + t.body[3][3] > start:
                start, nb = t.body[3][2] + t.body[3][3], t.body[3][1] + 1
                s.commit_seq = max(s.commit_seq, t.seq)  # stalled() waits for its block
        if held and first > start:  # its chain is ahead of this one's
            start, nb = first, batch
        s.first = s.index = start
        s.batch_no, s.batch, s.adopted = nb, streamroot.Batch(), True
        topic = topics.data(self.domain, self.op.id.hex() + "/" + aid.hex())
        again = 0
        for i, msg in enumerate(held):
            if first + i != s.index or s.index >= s.quantity:
                continue
            try:
                if self.streams.add(aid, self.op.pub, msg, now) != s.index:
                    raise errors.TLError("index", "bad-tx")
            except errors.TLError as e:  # not ours, another index or value held: not sent
                self.log(f"market held reading refused agreement={aid.hex()[:8]} "
                         f"index={s.index} reason={e.reason}")
                break
            self.publish(topic, msg, False)
            again += 1
            self._batched(s, msg, state)
        s.next_at = min(s.next_at, now + s.interval_s)
        self.log(f"market supply agreement={aid.hex()[:8]} continued at index={s.index} "
                 f"batch={s.batch_no} (sent again {again})")

    def _batched(self, s: _Supply, msg: bytes, state: State) -> None:
        """The reading of index `s.index` (`msg`) joins the batch in progress,
        which is committed once full or at the agreement's last reading."""
        s.batch.add(msg)
        s.index += 1
        if s.batch.count == BATCH or s.index == s.quantity:
            self._commit(s, state)

    def _commit(self, s: _Supply, state: State) -> None:
        self.op.call(state, "commit", s.aid, s.batch_no, s.first, s.batch.count, s.batch.root())
        s.commit_seq = self.op.seq
        if self.claims and not self.op.taken:
            s.adopted = False  # not taken (the issuer re-reads its seqs): adopted again
        s.batch_no += 1
        s.first = s.index
        s.batch = streamroot.Batch()
