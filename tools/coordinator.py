"""The coordination node (docs/IDENTITY.md §4, issue 4 item 5): a long-lived,
low-compute process that assigns a full node to every light node of the
domain and reassigns a light node when its full node goes offline.

What it knows:
- the committed state (read-only, from the gateway's data dir:
  `Store(readonly=True).load_state()` -> `Access`): which principals joined as
  `light` / `full` / `coordination`, their status, and each light node's
  assigned full node (the last committed NODE_ASSIGN);
- who is online: the retained `tl/<d>/dev/+/status` topics ("online" /
  "offline"; a node sets a last will "offline", so a crashed full node turns
  offline when the broker drops its connection). A full node whose status it
  has never seen counts as offline.

What it does (`Coordinator.step`, also the unit the tests drive):
- a light node keeps its assignment while that node is an active full node
  and online;
- every other committed, active light node (never assigned, or assigned to a
  full node that is offline, revoked or no longer full) gets the online full
  node serving the fewest light nodes, ties broken by the lowest id
  (`plan`, a pure function); light nodes are taken in id order, so two
  coordinators with the same view decide the same;
- each assignment is a NODE_ASSIGN signed with the coordinator's key and
  submitted with tools.submit (logged in as the coordinator); one printed
  line per assignment, with the gateway's answer. A refused or unanswered
  assignment is retried after `retry_s`.
- nothing moves back when a full node returns (no churn); with no full node
  online the light nodes wait (one line says so).

Several machines (docs/CONSENSUS.md, "Three machines"): one coordinator per
machine, each reading its own gateway's data dir and given every NATS node's
MQTT listener (`--broker` repeated); all of them decide the same.
- Brokers: it holds one connection (tools/mqtt_ask.Line) to the first
  broker that answers; when that one is lost it moves to the next (round
  robin, as a board does), subscribes again, says "online" again there and
  decides only once the new broker's retained statuses are in. A submission
  whose broker gives no answer within the timeout moves it on too.
- A node on a machine that dies with its broker leaves no last will (the
  broker holding its connection is gone; nats-server 2.15 publishes none),
  so its retained status stays "online". Liveness is the gateways' one rule
  (gateway/cluster/liveness.py): the gateways of a quorum domain (the
  genesis validators) announce "online" again every STATUS_S, and one of
  them silent for `max_age` seconds (COORDINATOR_SILENCE_S, 25: after the
  gateways themselves decide it) counts as offline. Other nodes are judged
  by their last will.
- Two coordinators: each waits `stagger_s` times its rank among the active
  coordination nodes (by id) after it first sees a light node to move, then
  reads the chain again and submits only what is still to do, so the
  first-ranked live one makes the assignment and the others find it made.
  If two submit the same assignment anyway (their chains a block apart),
  both are committed and the second changes nothing: the same full node,
  and neither coordinator moves the light node again.

The coordinator itself announces `tl/<d>/dev/<its id>/status` retained
"online", with the last will "offline", and publishes "offline" on a clean
stop.

One connection under its login: its status (retained "online", last will
"offline"), the status subscriptions and its NODE_ASSIGN submissions (each
answered on its rx topic) all go over it. A mosquitto loaded with the
`thingledger broker export` files sets `use_username_as_clientid`, so a
second connection under the login would take the first one's session over.
On an enforcing broker (claimed domains, docs/IDENTITY.md §3) coordination
nodes may read every `tl/<d>/dev/+/status`. Gateways announce their own
status under their authority id, so a gateway that joined as a full node is
followed too. The chain itself it reads from its gateway's data dir (no
chain queries over the broker).
"""

from __future__ import annotations

import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.cluster.liveness import COORDINATOR_SILENCE_S, Liveness
from gateway.identity import roles
from gateway.identity.access import Access
from gateway.ledger.state import ACTIVE
from shared import messages, topics
from shared import tx as txm

ONLINE = b"online"
OFFLINE = b"offline"
RETRY_S = 5.0
POLL_S = 0.5
FAILOVER_S = 3.0  # s without a broker before it says so (the Line moves on at once)
# a quorum gateway silent this long is offline: later than the gateways decide it
# (gateway/cluster/liveness.py), so that when the move is committed they no longer
# count the dead one among those answering devices
MAX_AGE_S = COORDINATOR_SILENCE_S
STAGGER_S = 2.0  # s per rank among the coordination nodes before acting

Out = Callable[[str], None]


class CoordinatorError(RuntimeError):
    """The coordinator cannot start (no chain, no broker, bad key); the
    message says what to do."""


# --------------------------------------------------------------------------- planning
@dataclass(frozen=True)
class Assignment:
    light: bytes
    full: bytes
    previous: bytes  # the full node it had (b"" if none)
    why: str  # "unassigned" | "offline" | "not-full"

    def describe(self) -> str:
        if not self.previous:
            return "light node %s -> full node %s (unassigned)" % (self.light.hex(),
                                                                   self.full.hex())
        return "light node %s -> full node %s (was %s: %s)" % (
            self.light.hex(), self.full.hex(), self.previous.hex(), self.why)


def plan(lights: Mapping[bytes, bytes], fulls: Iterable[bytes],
         online: Iterable[bytes]) -> tuple[list[Assignment], list[bytes]]:
    """Assignments to make, and the light nodes left waiting (no full node online).

    `lights`: active light node id -> assigned full node id (b"" if none);
    `fulls`: ids of the active full nodes; `online`: ids whose status is online.
    A light node keeps a full node that is active and online; the others go,
    in id order, to the online full node with the fewest light nodes
    (counting this plan's assignments), ties to the lowest id."""
    full_set = set(fulls)
    up = sorted(full_set & set(online))
    load = {f: 0 for f in up}
    todo: list[tuple[bytes, bytes, str]] = []
    for light in sorted(lights):
        cur = lights[light]
        if cur in load:
            load[cur] += 1
        elif not cur:
            todo.append((light, cur, "unassigned"))
        else:
            todo.append((light, cur, "offline" if cur in full_set else "not-full"))
    if not up:
        return [], [light for light, _, _ in todo]
    out = []
    for light, cur, why in todo:
        best = min(up, key=lambda f: (load[f], f))
        load[best] += 1
        out.append(Assignment(light, best, cur, why))
    return out, []


# --------------------------------------------------------------------------- the process
@dataclass
class AssignmentResult:
    """One assignment submitted: committed (ok) or not, and why."""

    assignment: Assignment
    ok: bool
    text: str  # the gateway's answer (Reply.describe()) or the error


class Coordinator:
    """One coordination node. `start()` connects to the broker, `step()`
    makes the assignments the current view calls for, `run(stop)` loops
    until `stop` is set (or `request_stop()`), `close()` disconnects.

    `key`: the coordinator's signer (tools.keys.KeyPair); `node_id`: its
    principal id when that is not the key's own id (a device whose key was
    rotated). `submit_fn` defaults to tools.submit.submit."""

    def __init__(self, key: Any, broker_url: str | Sequence[str], data_dir: Path | str,
                 domain: str | None = None, *, authority: bytes | None = None,
                 node_id: bytes | None = None, timeout: float = 15.0,
                 retry_s: float = RETRY_S, out: Out = print,
                 submit_fn: Callable[..., Any] | None = None,
                 failover_s: float = FAILOVER_S, max_age: float | None = MAX_AGE_S,
                 stagger_s: float = STAGGER_S) -> None:
        from gateway.db import genesis_files as genesis
        from gateway.node.config import DB_FILE, GENESIS_FILE

        self.key = key
        self.id = node_id or txm.device_id(key.public)
        self.brokers = [broker_url] if isinstance(broker_url, str) else list(broker_url)
        if not self.brokers:
            raise CoordinatorError("no broker URL")
        self.failover_s = failover_s
        self.max_age = max_age
        self.stagger_s = stagger_s
        self.data_dir = Path(data_dir)
        self.db = self.data_dir / DB_FILE
        g = None
        if domain is None or authority is None:
            try:
                g = genesis.load(self.data_dir / GENESIS_FILE)
            except genesis.GenesisError as e:
                raise CoordinatorError(f"{self.data_dir}: no domain genesis here ({e})") from None
            if domain is not None and g.domain != domain:
                raise CoordinatorError(f"{self.data_dir} holds domain {g.domain!r}, "
                                       f"not {domain!r}")
        self.domain = domain or g.domain
        self.authority = authority or g.authority
        if g is None:  # a quorum domain: receipts carry k votes of its set
            try:
                g = genesis.load(self.data_dir / GENESIS_FILE)
            except genesis.GenesisError:
                pass
        from tools.submit import validators_of
        self.validators = validators_of(g)
        # the heartbeat senders: a quorum domain's gateways, by validator id
        self._beats = {txm.device_id(p) for p in (self.validators or (0, ()))[1]}
        self.timeout = timeout
        self.retry_s = retry_s
        self.out = out
        if submit_fn is None:
            from tools.submit import submit as submit_fn
        self._submit = submit_fn
        self._lock = threading.Lock()
        # statuses seen (a node never seen: offline), the quorum gateways' silence
        self._live = Liveness(max_age or MAX_AGE_S, unknown_live=False)
        self._lost_at: float | None = None  # when the broker connection went away
        self._noticed: dict[bytes, float] = {}  # light -> when it was first seen to move
        self._unanswered: dict[bytes, bytes] = {}  # light -> full: submitted, no answer
        self._wake = threading.Event()
        self._stop = threading.Event()
        self.line: Any = None  # its one connection (tools/mqtt_ask.Line), once started
        self._was = ""  # the broker of the connection before
        self._store = None
        self._head = -1
        self._access: Access | None = None
        self._seq = 0
        # light -> (full, height): committed by our NODE_ASSIGN, maybe not read yet
        self._recent: dict[bytes, tuple[bytes, int]] = {}
        self._retry_at: dict[bytes, float] = {}  # light -> monotonic time
        self._said = ""  # last "waiting"/"not coordination" line, said once
        self.assignments: list[AssignmentResult] = []

    # ---- status (paho's thread) ---------------------------------------------------
    def _on_status(self, topic: str, payload: bytes) -> None:
        parts = topic.split("/")  # tl/<d>/dev/<id>/status
        if len(parts) != 5 or parts[2] != "dev" or parts[4] != "status":
            return
        try:
            node = bytes.fromhex(parts[3])
        except ValueError:
            return
        state = payload.strip().lower()
        if len(node) != txm.ID_LEN or state not in (ONLINE, OFFLINE, b""):
            return  # b"": the retained status was cleared (unknown: offline)
        if node == self.id:
            return
        with self._lock:
            changed = self._live.status(node, state == ONLINE)
        if changed:
            self._wake.set()

    def online(self) -> set[bytes]:
        """Nodes whose status is "online", less the quorum's gateways silent
        for more than max_age (gone with their broker, no last will)."""
        with self._lock:
            return {n for n in self._live.known() if self._live.live(
                n, beats=self.max_age is not None and n in self._beats)}

    @property
    def broker_url(self) -> str:
        """The broker in use (the first of the list while there is none)."""
        line = self.line
        return (line.url if line is not None else "") or self.brokers[0]

    # ---- lifecycle ------------------------------------------------------------------
    def start(self, connect_timeout: float = 10.0) -> Coordinator:
        from gateway.broker.embedded import parse_url
        from gateway.db.store import Store
        from tools.mqtt_ask import Line, Silent, Unanswered, client_id

        if not self.db.exists():
            raise CoordinatorError(f"no chain database at {self.db} (use --data-dir)")
        for url in self.brokers:
            try:
                parse_url(url)
            except ValueError as e:
                raise CoordinatorError(str(e)) from None
        self._store = Store(self.db, readonly=True)
        me = self._me
        login = _login(self.key, self.domain, self.id)
        # one connection (tools/mqtt_ask.Line) for all it does: its status, the
        # statuses it follows, its NODE_ASSIGN submissions; on the next broker of
        # its list when this one is lost. Its last will says it is offline.
        self.line = line = Line(self.brokers, client_id(login[0], "coordinator"), login=login,
                                timeout=self.timeout, will=(me, OFFLINE))
        # QoS 0: a status is a state, the next one replaces it; on NATS a QoS 1
        # subscription is served through JetStream and stalls while a killed
        # node's streams elect a leader, which would make live gateways look silent
        line.subscribe(topics.status(self.domain, "+"), self._on_status, qos=0, timeout=0)
        # A broker answers SUBSCRIBEs in order and sends a subscription's retained
        # messages before it handles the next one (mosquitto; amqtt awaits them): once
        # this second subscription (asked for after the first on each connection) is
        # granted, every retained status is in.
        line.subscribe(me, lambda _t, _p: None, qos=1, timeout=0)
        line.when_up(self._announce)
        try:
            line.up(connect_timeout)
        except Unanswered as e:
            self.close()
            raise CoordinatorError("no broker accepted the coordinator %s: %s"
                                   % (self.id.hex(), e)) from None
        # Decide only once the retained statuses are in: a partial view would put
        # every light node on the first full node heard of (step() waits for it too).
        try:
            line.granted(me, connect_timeout)
        except Silent:
            pass
        self.refresh()
        return self

    @property
    def _me(self) -> str:
        return topics.status(self.domain, self.id.hex())

    def _announce(self, url: str) -> None:
        """On each new connection: "online", retained (a last will may have
        said "offline" meanwhile). In the Line's thread: not waited for."""
        from tools.mqtt_ask import Silent

        assert self.line is not None
        try:
            self.line.publish(self._me, ONLINE, qos=1, retain=True, timeout=0)
        except Silent:
            pass  # dropped already: said again on the next connection
        if self._was and self._was != url:
            self.out(f"broker {self._was} gone: now on {url}")
        self._was = url

    def check_broker(self) -> bool:
        """True once connected with the retained statuses read (the Line
        moves along the broker list by itself when its broker is lost)."""
        line = self.line
        if line is not None and line.granted_now(self._me):
            self._lost_at = None
            return True
        now = time.monotonic()
        if self._lost_at is None:
            self._lost_at = now
        elif now - self._lost_at >= self.failover_s:
            self._say_once("no broker: waiting for one of %s" % ", ".join(self.brokers))
        return False

    def close(self) -> None:
        from tools.mqtt_ask import Silent

        line, self.line = self.line, None
        if line is not None:
            if line.url:  # a clean DISCONNECT sends no will: say it
                try:
                    line.publish(self._me, OFFLINE, qos=1, retain=True, timeout=2)
                except Silent:
                    pass
            line.close()
        s, self._store = self._store, None
        if s is not None:
            s.close()

    def request_stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def __enter__(self) -> Coordinator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- the chain ------------------------------------------------------------------
    def refresh(self) -> bool:
        """Re-read the committed state if the head moved; True if it did."""
        assert self._store is not None, "start() first"
        head = self._store.head()
        h = head.height if head is not None else -1
        if h == self._head and self._access is not None:
            return False
        self._access = Access.from_state(self._store.load_state(), self.domain)
        self._head = h
        self._recent = {k: v for k, v in self._recent.items() if v[1] > h}
        return True

    def view(self) -> tuple[dict[bytes, bytes], list[bytes]]:
        """(active light node -> assigned full node, active full nodes), our
        committed assignments included even if not read from the store yet."""
        assert self._access is not None
        lights: dict[bytes, bytes] = {}
        fulls: list[bytes] = []
        for i, r in self._access.nodes():
            if r.status != ACTIVE:
                continue
            if r.node == roles.LIGHT:
                lights[i] = self._recent.get(i, (r.assigned, 0))[0]
            elif r.node == roles.FULL:
                fulls.append(i)
        return lights, fulls

    def _is_coordination(self) -> bool:
        assert self._access is not None
        r = self._access.record(self.id)
        return r is not None and r.node == roles.COORDINATION and r.status == ACTIVE

    def _say_once(self, line: str) -> None:
        if line != self._said:
            self._said = line
            self.out(line)

    def _next_seq(self) -> int:
        from tools.submit import next_seq

        assert self._access is not None
        r = self._access.record(self.id)
        self._seq = max(next_seq(), self._seq + 1, (r.last_seq + 1) if r else 0)
        return self._seq

    # ---- one round ------------------------------------------------------------------
    def step(self) -> list[AssignmentResult]:
        """Make the assignments the current chain + status view calls for."""
        from gateway.identity import statements as itx
        from tools.submit import SubmitError

        if not self.check_broker():
            return []
        self.refresh()
        if not self._is_coordination():
            self._say_once(f"waiting: {self.id.hex()} is not an active coordination node "
                           f"of {self.domain} (thingledger node join)")
            return []
        lights, fulls = self.view()
        todo, waiting = plan(lights, fulls, self.online())
        if waiting:
            self._say_once("waiting: no full node online for %d light node(s)" % len(waiting))
        elif not todo:
            self._said = ""
        now = time.monotonic()
        want = {a.light for a in todo} | set(waiting)
        for x in sorted(self._noticed.keys() - want):  # seen to move, moved meanwhile
            if self._unanswered.pop(x, None) == lights.get(x):
                self.out(f"light node {x.hex()}: full node {lights[x].hex()} in the chain "
                         "(its assignment's answer did not come)")
            else:
                self.out(f"light node {x.hex()}: assigned by another coordinator meanwhile")
        self._noticed = {x: self._noticed.get(x, now) for x in want}
        wait = self.stagger_s * self.rank()
        done: list[AssignmentResult] = []
        for a in todo:
            if self._stop.is_set():
                break
            if self._retry_at.get(a.light, 0) > now or now - self._noticed[a.light] < wait:
                continue
            if not self._still_to_do(a):
                continue  # another coordinator's assignment is in the chain now
            self._said = ""
            m = itx.build_node_assign(self.key, self.domain, a.light, a.full, self._next_seq(),
                                      sender=self.id)
            login = _login(self.key, self.domain, self.id)
            try:
                reply = self._submit(self.brokers, self.domain, m, self.authority,
                                     timeout=self.timeout, login=login, line=self.line,
                                     **({"validators": self.validators}
                                        if self.validators else {}))
            except (SubmitError, OSError, RuntimeError, queue.Empty) as e:
                res = AssignmentResult(a, False, str(e) or type(e).__name__)
                self._unanswered[a.light] = a.full
            else:
                ok = reply.ok and reply.status == messages.STATUS_OK
                res = AssignmentResult(a, ok, reply.describe())
                if ok:
                    self._recent[a.light] = (a.full, reply.height)
            if res.ok:
                self._retry_at.pop(a.light, None)
                self._noticed.pop(a.light, None)
            else:
                self._retry_at[a.light] = time.monotonic() + self.retry_s
            self.out("assign %s: %s" % (a.describe(), res.text))
            done.append(res)
            self.assignments.append(res)
        return done

    def rank(self) -> int:
        """This coordinator's place among the active coordination nodes, by id."""
        assert self._access is not None
        ids = sorted(i for i, r in self._access.nodes()
                     if r.node == roles.COORDINATION and r.status == ACTIVE)
        return ids.index(self.id) if self.id in ids else 0

    def _still_to_do(self, a: Assignment) -> bool:
        """Re-read the chain: does the light node still need this assignment?"""
        if not self.refresh():
            return True
        lights, fulls = self.view()
        return any(x.light == a.light for x in plan(lights, fulls, self.online())[0])

    def run(self, stop: threading.Event | None = None, poll_s: float = POLL_S,
            seconds: float | None = None) -> None:
        """step() whenever a status changes or every `poll_s` (new blocks),
        until request_stop(), `stop` is set, or `seconds` have passed."""
        end = time.monotonic() + seconds if seconds is not None else None
        while not self._stop.is_set() and not (stop is not None and stop.is_set()):
            if end is not None and time.monotonic() >= end:
                break
            self._wake.clear()
            try:
                self.step()
            except sqlite3.Error as e:  # e.g. the gateway's database busy: next round
                self._say_once(f"error reading the chain: {e}")
            wait = poll_s if end is None else max(0.0, min(poll_s, end - time.monotonic()))
            self._wake.wait(wait)


def _login(key: Any, domain: str, node_id: bytes) -> tuple[str, str]:
    from tools.submit import login_for

    return login_for(key, domain, node_id)
