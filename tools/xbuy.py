"""A buyer in domain B who buys a supplier's readings in domain A
(docs/CROSSDOMAIN.md, "Cross-domain service purchase"), host side:
`thingledger xdomain buy` and the demo drive it.

1. offers: A's retained offer directory (tl/<A>/offers on A's broker, or
   as a relayer A -> B running with --bridge republishes it on B's broker,
   tools/relay.Bridge: `via` = that relayer's id); the
   chosen offer is proven in A's state against a header of A that B's
   light client trusts (the buyer sends that header to B's client itself
   when B does not trust it yet: anyone may);
2. payment: a SEND packet in B to the buyer's own id in A (its key is
   registered in A too) for price x quantity; a relayer B -> A carries it;
3. purchase: a DEMAND in A, its receipt (the `match` event) proven in B;
4. readings: the agreement's stream on A's data topic, read from A's broker
   or, with `via`, from B's broker where the relayer republishes it;
   each batch the supplier commits in A (the commit call's receipt) is
   proven in B and the readings of the batch checked against its root
   (gateway/xdomain/purchase.py);
5. records: the agreement and each delivery commitment are recorded in B's
   state (XPURCHASE, gateway/xdomain/recorded.py), B's gateways checking
   the same proofs, so anyone in B can rely on them.

The buyer's subscriptions (the offer directory, the agreement's stream)
and its transactions go over its one MQTT connection to each domain, under
its login there (Side.connection, shared with whatever else the process does
under that login: the reseller's supplier side).

Proofs and receipts of A are read from A's chain database read-only, as
the relayer reads them (tools/relay.py): the buyer runs where it can read a
full node's data folder of each domain. What it believes of A is only what
B's light client of A, in B's state, lets it prove.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from gateway.ledger import keys
from gateway.market.ledger import directory
from gateway.market.ledger import rules as market
from gateway.xdomain import client as lc
from gateway.xdomain import purchase, recorded, relayer
from shared import errors, messages, stream, topics, txdecode
from shared import tx as txm
from tools.keys import KeyPair
from tools.mqtt_ask import Line, Silent
from tools.relay import Seq, Side, ensure_registered, submitter


class BuyError(RuntimeError):
    """A step of the purchase failed (the message says which and why)."""


MAX_STASH = 256  # readings kept until a key they verify under is proven


@dataclass
class Delivery:
    agreement: purchase.ProvenAgreement
    keys: list[purchase.ProvenKey]  # the supplier's keys, proven in A's state (in order)
    # index -> {key -> COSE bytes}: readings that verify under a proven key
    readings: dict[int, dict[bytes, bytes]] = field(default_factory=dict)
    stash: list[bytes] = field(default_factory=list)  # not (yet) under a proven key
    verified: list[tuple[int, int, int]] = field(default_factory=list)  # (index, value, scale)
    batches: set[int] = field(default_factory=set)
    recorded: set[bytes] = field(default_factory=set)  # commit txs of A recorded in B
    lock: threading.Lock = field(default_factory=threading.Lock)  # the MQTT thread's too

    def take(self, payload: bytes) -> bool:
        """Keep a reading of this agreement that verifies under one of the
        supplier's proven keys (one per index and key); False if none."""
        for k in {k.key for k in self.keys}:
            try:
                aid, index, _, _ = stream.open_reading(payload, k)
            except errors.TLError:
                continue
            if aid == self.agreement.id and 0 <= index < self.agreement.quantity:
                self.readings.setdefault(index, {}).setdefault(k, payload)
                return True
        return False

    def receive(self, payload: bytes) -> None:
        """A message on the agreement's stream: kept if it verifies under a
        proven key, else stashed (a key not proven yet: a rotation?) while
        the stash has room."""
        with self.lock:
            if not self.take(payload) and len(self.stash) < MAX_STASH:
                self.stash.append(payload)

    def add_key(self, key: purchase.ProvenKey) -> None:
        """A key proven later (the supplier rotated): readings signed by it
        that arrived before are taken from the stash."""
        with self.lock:
            new = all(k.key != key.key for k in self.keys)
            self.keys.append(key)
            if new:
                self.stash = [r for r in self.stash if not self.take(r)]

    def batch(self, c: purchase.ProvenCommitment
              ) -> tuple[purchase.ProvenKey, list[bytes]] | None:
        """The readings of batch `c` under the first key proven at or after
        its commit (the key A's state held then) that signed them all; None
        while some are missing."""
        with self.lock:
            for k in self.keys:
                if k.height < c.height:
                    continue
                got = [self.readings.get(i, {}).get(k.key, b"")
                       for i in range(c.first, c.first + c.count)]
                if b"" not in got:
                    return k, got
        return None


class Inbox:
    """The messages of a stream subscribed to before its agreement is
    proven: held (bounded) until a delivery takes them, then passed on."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.held: list[bytes] = []
        self.to: Delivery | None = None

    def put(self, payload: bytes) -> None:  # paho's thread
        with self.lock:
            to = self.to
            if to is None:
                if len(self.held) < MAX_STASH:
                    self.held.append(payload)
                return
        to.receive(payload)

    def deliver_to(self, d: Delivery) -> None:
        with self.lock:
            self.to, held, self.held = d, self.held, []
        for p in held:
            d.receive(p)


def _wait(cond: Callable[[], bool], timeout: float, what: str, step: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() >= deadline:
            raise BuyError("timed out waiting for %s (%.0f s)" % (what, timeout))
        time.sleep(step)


class CrossBuyer:
    def __init__(self, key: KeyPair, home: Side, market_side: Side, *, timeout: float = 20.0,
                 via: bytes | None = None, line: Callable[[str], None] = print,
                 seq: Seq | None = None, keep: bool = False) -> None:
        """`seq`: the key's seqs, when something else signs with it too (the
        reseller's supplier side, tools/resell.py). `keep`: its connection
        to A keeps its session (an MQTT persistent session: the broker
        queues the stream's readings while the process is down, delivered
        when it connects again; docs/CROSSDOMAIN.md, "A restarted
        reseller")."""
        self.key = key
        self.keep = keep
        self.via = via
        self.b, self.a = home, market_side
        self.timeout = timeout
        self.line = line
        self.seq = seq or Seq()
        self.view = purchase.StoreKv(home.store)
        self._submit = submitter({home.domain: home, market_side.domain: market_side},
                                 timeout, key)
        self._rel = relayer.Relayer(
            relayer.Chain(market_side.domain, market_side.store),
            relayer.Chain(home.domain, home.store),
            relayer.RelayKey(key.private, key.id, self.seq), self._send)
        self._lines: dict[str, Line] = {}  # held until `close`, by domain
        self._lock = threading.Lock()
        self._unsubscribe: Callable[[], None] | None = None  # the stream's

    def connection(self, side: Side) -> Line:
        """The buyer's connection to `side`'s domain (held until `close`)."""
        with self._lock:
            got = self._lines.get(side.domain)
            if got is None:
                got = self._lines[side.domain] = side.connection(
                    self.key, self.timeout, keep=self.keep and side is self.a)
            return got

    def _send(self, domain: str, msg: bytes) -> tuple[bool, str]:
        self.connection(self.b if domain == self.b.domain else self.a)  # held: sent over it
        return self._submit(domain, msg)

    # -- B's light client of A ------------------------------------------------------
    def trust(self, height: int) -> None:
        """Make B's client of A trust A's header at `height` (a CLIENT_UPDATE
        in B by the buyer, unless it trusts it already)."""
        if lc.trusted(self.view, self.a.domain, height) is not None:
            return
        blk = self.a.store.get_block(height)
        if blk is None:
            raise BuyError("%s has no block %d" % (self.a.domain, height))
        out = relayer.Pass()
        if not self._rel.update(self._rel.b, self._rel.a, blk, out):
            why = out.actions[-1].reason if out.actions else "not final"
            raise BuyError("%s's client of %s refused header %d: %s"
                           % (self.b.domain, self.a.domain, height, why))

    # -- 1. offers --------------------------------------------------------------------
    def offers(self, service: str) -> list[dict]:
        """The live offers for `service` in A's retained directory."""
        got: queue.Queue[bytes] = queue.Queue()
        side, topic = self._where("offers")
        deadline = time.monotonic() + self.timeout
        try:  # (the retained directory comes with each new subscription)
            stop = self.connection(side).subscribe(topic, lambda _t, p: got.put(p), qos=1)
        except Silent as e:
            raise BuyError("the offer directory's subscription: %s" % e) from None
        try:
            while (left := deadline - time.monotonic()) > 0:
                try:
                    listed = [o for o in directory.decode(got.get(timeout=left))
                              if o.get(2) == service]
                except queue.Empty:
                    break
                except errors.TLError:
                    continue  # not a directory (anyone may write a bridged topic)
                if listed:
                    return listed
            raise BuyError("no offer of %s in %s's directory on %s"
                           % (service, self.a.domain, topic))
        finally:
            stop()

    def _where(self, rest: str) -> tuple[Side, str]:
        """Where A's topic `rest` ("offers" or "data/...") is read: on A's
        broker, or bridged on B's by the relayer `via`."""
        if self.via is None:
            a = self.a.domain
            return self.a, (topics.offers(a) if rest == "offers" else
                            topics.data(a, rest[len("data/"):]))
        return self.b, topics.bridged(self.b.domain, self.via.hex(), self.a.domain, rest)

    def prove_offer(self, service: str, supplier: bytes) -> market.Offer:
        got = self.a.store.prove_kv(keys.offer(service, supplier))
        if got is None or got[1] is None:
            raise BuyError("the offer is not in %s's state" % self.a.domain)
        head, stored, proof = got
        self.trust(head.height)
        try:
            return purchase.offer(self.view, self.a.domain, head.height, service, supplier,
                                  stored, proof)
        except errors.TLError as e:
            raise BuyError("offer refused: %s" % e) from None

    # -- 2. payment -------------------------------------------------------------------
    def balance_in_market(self) -> int:
        rec = dict(self.a.store.devices()).get(self.key.id)
        return 0 if rec is None else rec.balance

    def pay(self, amount: int, timeout_s: int = 600) -> None:
        """Send `amount` from B to the buyer's own id in A and wait until A
        credited it (a relayer B -> A must run)."""
        problem = ensure_registered(self.a, self.key, self.seq, self.timeout)
        if problem:
            raise BuyError("cannot register in %s: %s" % (self.a.domain, problem))
        before = self.balance_in_market()
        head = self.b.store.head()
        assert head is not None
        body = {1: self.a.domain, 2: self.key.id, 3: amount, 4: 0, 5: head.time + timeout_s}
        msg = txm.make(self.key.private, self.key.id, txdecode.TYPE_SEND, self.b.domain,
                       self.seq(), 0, body)
        ok, reason = self._send(self.b.domain, msg)
        if not ok:
            raise BuyError("payment refused in %s: %s" % (self.b.domain, reason))
        _wait(lambda: self.balance_in_market() >= before + amount, self.timeout * 4,
              "the payment to reach %s (is a relayer %s -> %s running?)"
              % (self.a.domain, self.b.domain, self.a.domain))

    # -- 3. purchase ------------------------------------------------------------------
    def demand(self, service: str, max_price: int, quantity: int,
               supplier: bytes | None = None, serves: bytes | None = None) -> Delivery:
        """DEMAND in A, the agreement proven in B and recorded there (linked
        to B's agreement `serves`, if given: a reseller's). With
        `supplier` (the offer proven), its stream is listened to before the
        DEMAND goes (the agreement id is the first 16 bytes of its tx id), so
        a supplier that streams as soon as it is matched loses nothing."""
        msg = txm.make(self.key.private, self.key.id, txm.TYPE_DEMAND, self.a.domain,
                       self.seq(), 0, {1: service, 2: max_price, 3: quantity, 4: 120,
                                       5: "cheapest"})
        early = None if supplier is None else self._subscribe(supplier, txm.tx_id(msg)[:16])
        ok, reason = self._send(self.a.domain, msg)
        if not ok:
            raise BuyError("demand refused in %s: %s" % (self.a.domain, reason))
        rec = self._receipt(txm.tx_id(msg))
        self.trust(messages.parse(rec)[messages.M_HEIGHT])
        try:
            ag = purchase.agreement(self.view, self.a.domain, rec)
        except errors.TLError as e:
            raise BuyError("agreement not proven: %s" % e) from None
        self.record(recorded.AGREE, rec, serves=serves)
        d = Delivery(ag, [self.prove_key(ag.supplier)])
        if early is None or ag.supplier != supplier:  # matched with another supplier
            early = self._subscribe(ag.supplier, ag.id)
        early.deliver_to(d)
        return d

    def record(self, kind: str, receipt: bytes, agreement: bytes | None = None,
               serves: bytes | None = None) -> None:
        """Record in B's state (XPURCHASE) the agreement (linked to B's
        agreement `serves`, if given) or a delivery commitment, by A's
        receipt: B's gateways check its proof against the header of A that
        B's client trusts (trusted before: `trust`)."""
        body: dict[int, object] = {1: self.a.domain, 2: kind, 3: receipt}
        if agreement is not None:
            body[4] = agreement
        if serves is not None:
            body[5] = serves
        msg = txm.make(self.key.private, self.key.id, txdecode.TYPE_XPURCHASE, self.b.domain,
                       self.seq(), 0, body)
        ok, reason = self._send(self.b.domain, msg)
        if not ok:
            raise BuyError("%s not recorded in %s: %s" % (kind, self.b.domain, reason))
        height = messages.parse(receipt)[messages.M_HEIGHT]
        self.line("%s recorded in %s (XPURCHASE, proven against %s height %d)"
                  % ("agreement" if kind == recorded.AGREE else "delivery commitment",
                     self.b.domain, self.a.domain, height))

    def prove_key(self, supplier: bytes) -> purchase.ProvenKey:
        """The supplier's current key: its record in A's state (keyed by its
        birth id; a rotation changed the key, not the id) proven against a
        header of A that B's client trusts."""
        got = self.a.store.prove_account(supplier)
        if got is None or got[1] is None:
            raise BuyError("supplier unknown in %s" % self.a.domain)
        head, leaf, proof = got
        self.trust(head.height)
        try:
            return purchase.supplier_key(self.view, self.a.domain, head.height, supplier, leaf,
                                         proof)
        except errors.TLError as e:
            raise BuyError("supplier key refused: %s" % e) from None

    def _receipt(self, tx_id: bytes) -> bytes:
        out: list[bytes] = []

        def have() -> bool:
            r = self.a.store.get_receipt(tx_id)
            if r is not None:
                out.append(r)
            return r is not None
        _wait(have, self.timeout, "a final receipt in %s" % self.a.domain)
        return out[0]

    # -- 4. readings ------------------------------------------------------------------
    def _subscribe(self, supplier: bytes, agreement: bytes) -> Inbox:
        """Listen to the agreement's stream (one at a time): what comes is
        held in the inbox until it is handed a delivery."""
        inbox = Inbox()
        side, topic = self._where("data/" + supplier.hex() + "/" + agreement.hex())
        self.unsubscribe()
        try:  # a refused SUBSCRIBE (NATS after a node died) is asked again
            self._unsubscribe = self.connection(side).subscribe(
                topic, lambda _t, p: inbox.put(p), qos=1)
        except Silent as e:
            raise BuyError("the data topic subscription: %s" % e) from None
        return inbox

    def listen(self, d: Delivery) -> None:
        """Listen to `d`'s stream (a purchase taken up again: a restarted
        reseller, tools/resell.py)."""
        self._subscribe(d.agreement.supplier, d.agreement.id).deliver_to(d)

    def unsubscribe(self) -> None:
        """Stop listening to the stream."""
        stop, self._unsubscribe = self._unsubscribe, None
        if stop is not None:
            stop()

    def stream_topic(self, d: Delivery) -> str:
        return self._where("data/" + d.agreement.supplier.hex() + "/" + d.agreement.id.hex())[1]

    def check(self, d: Delivery) -> list[tuple[purchase.ProvenCommitment,
                                                list[tuple[int, int, int]]]]:
        """One look at A's chain: each batch of the agreement committed there
        (final) and not checked yet is recorded in B (XPURCHASE), its commit
        proven in B and, once its readings are all here, checked against its
        root: those batches with their (index, value, scale), in the order
        checked. BuyError if a delivery is refused."""
        out = []
        # from the DEMAND's height: no commitment of the agreement is older
        for t in self.a.store.txs_of_type(txm.TYPE_CONTRACT_CALL, d.agreement.height):
            if not any(len(e) == 7 and e[0] == market.AGREEMENT and e[1] == purchase.COMMITTED
                       and e[2] == d.agreement.id and e[3] not in d.batches
                       for e in t.events):  # (another contract's look-alike: not ours)
                continue
            rec = self.a.store.get_receipt(t.id)
            if rec is None:
                continue  # not final yet
            self.trust(t.height)
            if t.id not in d.recorded:
                self.record(recorded.DELIVER, rec, d.agreement.id)
                d.recorded.add(t.id)
            try:
                for c in purchase.commitments(self.view, self.a.domain, rec, d.agreement.id):
                    if c.batch in d.batches:
                        continue
                    if d.keys[-1].height < c.height:
                        d.add_key(self.prove_key(d.agreement.supplier))
                    got = d.batch(c)
                    if got is None:
                        continue  # readings still on their way
                    key, batch = got
                    checked = purchase.check_batch(d.agreement, c, key, batch)
                    d.verified += checked
                    d.batches.add(c.batch)
                    out.append((c, checked))
                    self.line("batch %d: readings %d..%d in the root committed at %s "
                              "height %d, proven in %s"
                              % (c.batch, c.first, c.first + c.count - 1, self.a.domain,
                                 c.height, self.b.domain))
            except errors.TLError as e:
                raise BuyError("delivery refused: %s" % e) from None
        return out

    def verify(self, d: Delivery, timeout: float) -> list[tuple[int, int, int]]:
        """Wait until every reading bought is committed in A, proven in B and
        checked; returns (index, value, scale) of each."""
        deadline = time.monotonic() + timeout
        while len(d.verified) < d.agreement.quantity:
            self.check(d)
            if len(d.verified) >= d.agreement.quantity:
                break
            if time.monotonic() >= deadline:
                raise BuyError("timed out: %d of %d readings verified"
                               % (len(d.verified), d.agreement.quantity))
            time.sleep(0.2)
        return sorted(d.verified)

    def close(self) -> None:
        """Stop listening; the connections released."""
        self.unsubscribe()
        with self._lock:
            lines, self._lines = list(self._lines.values()), {}
        for line in lines:
            line.release()

