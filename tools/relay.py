"""`thingledger relay --from A --to B`: the relayer process (docs/CROSSDOMAIN.md,
"Relayer"). It watches both domains' block topics over MQTT and, on every
block (or every --interval seconds when no block comes), runs one pass of
gateway/xdomain/relayer.py: header updates and packets with their proofs,
submitted over MQTT to each domain's broker and answered by its gateway
(several brokers of a domain may be given: each is tried in turn when the
one in use is silent or down, tools/failover.py).
Proofs are read from each domain's chain database, read-only (the relayer
runs beside a full node of each domain, or on a copy of its data folder),
or, without a data folder, asked of the domain's gateways over its broker
(tools/remote_store.py: chain queries, docs/PROTOCOL.md): what they answer
is not trusted, since every proof submitted is checked by the receiving chain.

The relayer holds no rights: its key is an ordinary principal of both
domains (registered here when it is not known yet) and every tx it sends is
checked by the receiving gateways like anybody's.

It holds one MQTT connection per domain, under its key's login there
(Side.connection, tools/mqtt_ask.Line): the block watch, the bridge, its
submissions and its chain queries share it, so a broker that takes a
login's older session over (mosquitto's `use_username_as_clientid`) keeps
it.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from gateway.db import genesis_files
from gateway.db.store import Store
from gateway.ledger import consensus, keys
from gateway.ledger.genesis import Genesis
from gateway.node.config import DB_FILE, GENESIS_FILE
from gateway.xdomain import relayer
from shared import cbor, errors, messages, topics
from shared import tx as txm
from tools.failover import Brokers
from tools.keys import KeyPair
from tools.mqtt_ask import Line, Silent, connection
from tools.remote_store import QueryClient, RemoteError, RemoteStore, pin
from tools.submit import Reply, SubmitError, login_for, next_seq, submit


@dataclass
class Side:
    domain: str
    data_dir: Path | None  # None: read over the broker (chain queries)
    broker: str  # one URL, or several of the domain's brokers, comma-separated
    authority: bytes
    store: Store | RemoteStore
    quorum: bool = False  # a quorum domain: its receipts carry k votes of its set
    # `broker` as a list, tried in turn (tools/failover.py); shared with the
    # chain queries of a side read over its brokers
    brokers: Brokers = field(init=False)

    def __post_init__(self) -> None:
        q = getattr(self.store, "q", None)
        self.brokers = q.brokers if isinstance(q, QueryClient) else Brokers(self.broker)

    def connection(self, key: KeyPair, timeout: float = 15.0, keep: bool = False) -> Line:
        """The connection of `key`'s login to this domain's brokers, held for
        the caller (`release` it): the process's one connection of that login
        (tools/mqtt_ask.connection; docs/CROSSDOMAIN.md, "One connection per
        login"). `keep`: a persistent session, if the connection is made now
        (docs/CROSSDOMAIN.md, "A restarted reseller")."""
        return connection(self.brokers, login_for(key, self.domain), timeout, keep)


def receipt_set(side: Side) -> tuple | None:
    """What a receipt from `side`'s gateways is checked against
    (tools/submit.submit's `validators`): None for an authority domain; for a
    quorum domain the set that finalises the head of the relayer's copy of
    its chain, so the relayer follows the domain's VALSET changes. One read:
    the schedule with the head it is read at (prove_kv), one chain query
    for a side read over its brokers."""
    if not side.quorum:
        return None
    got = side.store.prove_kv(keys.VALSETS)
    if got is None or got[1] is None:
        return None
    head, raw, _ = got
    sched = [(h, consensus.ValidatorSet(k, tuple(p))) for h, k, p in cbor.loads(raw)]
    vs = consensus.set_at(sched, head.height)
    return (vs.threshold, sorted(vs.pubkeys), None)


def open_side(data_dir: Path, broker: str, pinned: Genesis | None = None) -> Side:
    """A side read from its data folder; `pinned`: a genesis the folder's
    must be (RemoteError genesis-mismatch otherwise)."""
    g = pin(genesis_files.load(Path(data_dir) / GENESIS_FILE), pinned, str(data_dir))
    return Side(g.domain, Path(data_dir), broker, g.authority,
                Store(Path(data_dir) / DB_FILE, readonly=True),
                quorum=getattr(g, "consensus", "") == "quorum")


def remote_side(domain: str, broker: str, key: KeyPair, timeout: float = 15.0,
                pinned: Genesis | None = None, keep: bool = False) -> Side:
    """A side read over `broker` alone: its gateways answer chain queries
    under the key's id (the login of an enforcing broker). The authority key
    and consensus are the genesis its gateway states, or `pinned`, the
    domain's genesis file held by the caller, which the gateway must state
    (RemoteError genesis-mismatch otherwise: a lying gateway cannot feed
    another authority or validator set). They check the receipts the
    relayer reads back, never what the chains accept. `keep`: the side's
    connection keeps its session (Side.connection)."""
    login = login_for(key, domain)
    line = connection(Brokers(broker), login, timeout, keep)
    try:  # the side's one connection of the key's login: its queries, and the rest
        store = RemoteStore(QueryClient(line, domain, key.id.hex(), timeout=timeout))
    finally:
        line.release()  # held by the store now (closed if that failed)
    try:
        g = store.genesis(pinned)
    except RemoteError:
        store.close()
        raise
    if g.domain != domain:
        store.close()
        raise RemoteError("bad-answer", "the gateway on %s serves %s, not %s"
                          % (broker, g.domain, domain))
    return Side(domain, None, broker, g.authority, store,
                quorum=getattr(g, "consensus", "") == "quorum")


class Seq:
    """Strictly increasing seqs for the relayer's txs (ms since the epoch)."""

    def __init__(self) -> None:
        self.last = 0

    def __call__(self) -> int:
        self.last = max(self.last + 1, next_seq())
        return self.last


def submitter(sides: dict[str, Side], timeout: float, key: KeyPair | None = None
              ) -> relayer.Submit:
    """Submit to the sides' domains: with `key`, under its login over the
    side's connection of that login (Side.connection); without, anonymously, a
    connection per submission."""
    def send(domain: str, message: bytes) -> tuple[bool, str]:
        s = sides[domain]
        try:
            r = submit_on(s, key, message, timeout)
        except SubmitError as e:
            return False, str(e)
        return r.ok and r.status == messages.STATUS_OK, r.reason
    return send


def submit_on(side: Side, key: KeyPair | None, message: bytes, timeout: float) -> Reply:
    """tools/submit.submit to `side`'s domain (its receipt checked against
    the side's authority or set), over the side's connection of `key`'s
    login (anonymously, on a connection of its own, without a key)."""
    if key is None:
        return submit(side.brokers, side.domain, message, side.authority, timeout=timeout,
                      validators=receipt_set(side))
    line = side.connection(key, timeout)
    try:
        return submit(side.brokers, side.domain, message, side.authority, timeout=timeout,
                      validators=receipt_set(side), line=line)
    finally:
        line.release()


def ensure_registered(side: Side, key: KeyPair, seq: Seq, timeout: float) -> str:
    """Register the relayer's key in `side` if it is not known there: "" if
    known (or now registered), else the refusal."""
    if isinstance(side.store, RemoteStore):  # one principal asked, not every page
        known = side.store.device(key.id) is not None
    else:
        known = any(i == key.id for i, _ in side.store.devices())
    if known:
        return ""
    msg = txm.make(key.private, key.id, txm.TYPE_REGISTER, side.domain, seq(), 0,
                   {1: key.public})
    try:
        r = submit_on(side, key, msg, timeout)
    except SubmitError as e:
        return str(e)
    return "" if r.ok else r.reason


class Watch:
    """Wakes the relayer when a block of either domain is announced, on the
    relayer's connection to each domain (Side.connection: it moves to the next of
    the domain's brokers when its broker dies, the subscription with it)."""

    def __init__(self, lines: list[tuple[Side, Line]]) -> None:
        self.event = threading.Event()
        self.stops = [line.subscribe(topics.blocks(s.domain), lambda _t, _p: self.event.set(),
                                     qos=0, timeout=0) for s, line in lines]

    def wait(self, timeout: float) -> None:
        self.event.wait(timeout)
        self.event.clear()

    def close(self) -> None:
        for stop in self.stops:
            stop()


class Bridge:
    """Republishes A's offer directory (retained) and A's market streams in
    B, under the relayer's own data subtree (topics.bridged), so a buyer in B
    reads them on B's broker. Forwarded as they are: readings are signed by
    their supplier and checked against roots proven in B
    (gateway/xdomain/purchase.py), so the relayer can drop them, never forge
    them. Read and published over the relayer's connections to A and B
    (Side.connection), which move along each domain's brokers."""

    def __init__(self, a: Side, b: Side, key: KeyPair, into: Line, out: Line) -> None:
        self.a, self.b = a, b
        self.me = key.id.hex()
        self.forwarded = 0
        self.out = out
        self.stops = [into.subscribe(t, self._forward, qos=1, timeout=0)
                      for t in (topics.offers(a.domain), topics.data(a.domain, "+/+"))]

    def _forward(self, topic: str, payload: bytes) -> None:  # A's network thread
        a = self.a.domain
        if topic == topics.offers(a):
            rest, retain = "offers", True
        else:
            rest, retain = "data/" + topic[len(topics.data(a, "")):], False
            if rest.startswith("data/" + self.me + "/"):
                return  # never what a relayer itself republished
        try:  # not waited for (A's network thread): dropped while B's connection is down
            self.out.publish(topics.bridged(self.b.domain, self.me, a, rest), payload, qos=1,
                             retain=retain, timeout=0)
        except Silent:
            return
        self.forwarded += 1

    def close(self) -> None:
        for stop in self.stops:
            stop()


def run(a: Side, b: Side, key: KeyPair, *, interval: float = 2.0, once: bool = False,
        timeout: float = 15.0, seconds: float | None = None, bridge: bool = False,
        line: Callable[[str], None] = print) -> int:
    # one connection per domain (the key's login): the registration, the
    # watch, the bridge, the submissions and the chain queries share it
    la, lb = a.connection(key, timeout), b.connection(key, timeout)
    try:
        return relay(a, b, key, la, lb, interval=interval, once=once, timeout=timeout,
                     seconds=seconds, bridge=bridge, line=line)
    finally:
        la.release()
        lb.release()


def relay(a: Side, b: Side, key: KeyPair, la: Line, lb: Line, *, interval: float,
          once: bool, timeout: float, seconds: float | None, bridge: bool,
          line: Callable[[str], None]) -> int:
    """`run` over the key's connections to A and B."""
    seq = Seq()
    for s in (a, b):
        problem = ensure_registered(s, key, seq, timeout)
        if problem:
            line("relay: cannot register in %s: %s" % (s.domain, problem))
            return 1
    rel = relayer.Relayer(relayer.Chain(a.domain, a.store), relayer.Chain(b.domain, b.store),
                          relayer.RelayKey(key.private, key.id, seq),
                          submitter({a.domain: a, b.domain: b}, timeout, key))
    line("relay: %s -> %s as %s" % (a.domain, b.domain, key.id.hex()))
    watch = None if once else Watch([(a, la), (b, lb)])
    bridged = None
    if bridge and not once:
        bridged = Bridge(a, b, key, la, lb)
        line("relay: bridging %s's offers and market streams into %s under %s"
             % (a.domain, b.domain, topics.bridged(b.domain, key.id.hex(), a.domain, "#")))
    end = None if seconds is None else time.monotonic() + seconds
    # a database busy or being replaced, a gateway not answering or answering
    # nonsense (only a side read over its broker can be lied to): next pass
    skip: tuple[type[BaseException], ...] = (sqlite3.Error, RemoteError)
    if any(isinstance(s.store, RemoteStore) for s in (a, b)):
        skip += (errors.TLError, ValueError, TypeError, KeyError, IndexError)
    passes = {s.domain: s.brokers.passes for s in (a, b)}
    try:
        while True:
            try:
                actions = rel.run_once().actions
            except skip as e:
                line("relay: pass skipped: %s" % (str(e) or type(e).__name__))
                actions = []
            for s in (a, b):  # brokers passed over for the next (tools/failover.py)
                for why in s.brokers.since(passes[s.domain]):
                    line("relay: %s broker passed over: %s" % (s.domain, why))
                passes[s.domain] = s.brokers.passes
            for act in actions:
                line("relay: %-7s in %s packet %d %s" % (act.what, act.domain, act.seq,
                                                         "ok" if act.ok else
                                                         "refused: " + act.reason))
            if once or (end is not None and time.monotonic() >= end):
                return 0
            assert watch is not None
            watch.wait(interval)
    except KeyboardInterrupt:
        return 0
    finally:
        if watch is not None:
            watch.close()
        if bridged is not None:
            bridged.close()
