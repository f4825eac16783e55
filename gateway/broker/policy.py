"""The broker's access policy (docs/IDENTITY.md §3), shared by the embedded
broker and the mosquitto export: who may connect (Guard.admit), publish and
subscribe where (Guard.may), as topic filters built from shared/topics.py, over
a view of the chain's identities (AccessView)."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from gateway.broker.credentials import parse_principal, verify_password
from gateway.identity import roles
from gateway.ledger.state import KIND_DEVICE
from shared import chainquery, topics
from shared import tx as txm

log = logging.getLogger("thingledger.broker")

ENFORCED_ADMISSIONS = ("claimed",)  # "open" (and "closed") domains keep anonymous access

# CONNACK return codes (MQTT 3.1.1 §3.2.2.3)
IDENTIFIER_REJECTED = 2
SERVER_UNAVAILABLE = 3
BAD_USERNAME_PASSWORD = 4
NOT_AUTHORIZED = 5


class AccessView(Protocol):
    """What the broker needs of gateway.identity.access.Access (the domain's identity state)."""

    def key_of(self, principal_id: bytes) -> bytes | None: ...
    def is_active(self, principal_id: bytes) -> bool: ...
    def readable(self, principal_id: bytes) -> set[bytes]: ...
    def bought(self, principal_id: bytes) -> set[tuple[bytes, bytes]]: ...
    def principals(self) -> list[bytes]: ...


def bought_topics(domain: str, access: AccessView, pid: bytes) -> list[str]:
    """The data topics of the open agreements `pid` buys (docs/MARKET.md)."""
    return sorted(f"tl/{domain}/data/{s.hex()}/{a.hex()}" for s, a in access.bought(pid))


AccessProvider = Callable[[], AccessView]


# --------------------------------------------------------------------------- topic rules
# Topic names as in shared/topics.py (docs/PROTOCOL.md), as filters; data
# streams are keyed by the publishing device: tl/<d>/data/<device id>/<service>.
def filter_within(requested: str, allowed: str) -> bool:
    """True iff every topic the filter `requested` matches is matched by the
    filter `allowed` (MQTT 3.1.1 §4.7 wildcards; a topic name has none, so this
    is also "does `allowed` match the topic `requested`")."""
    r, a = requested.split("/"), allowed.split("/")
    for i, al in enumerate(a):
        if al == "#":
            return True  # covers the rest, and the parent level itself
        if i >= len(r):
            return False
        rl = r[i]
        if rl == "#":
            return False
        if al == "+":
            continue
        if rl != al:  # literal against another literal, or a '+' against a literal
            return False
    return len(r) == len(a)


def publish_topics(domain: str, me: str) -> list[str]:
    """Topic filters a (non-gateway) principal may publish to; `me` = its id hex
    (its chain queries: its own request topic only, shared/chainquery.py)."""
    return [f"tl/{domain}/tx", f"tl/{domain}/dev/{me}/status", f"tl/{domain}/data/{me}/#",
            chainquery.request_topic(domain, me)]


def subscribe_filters(domain: str, me: str, readable: Iterable[str],
                      owned: Iterable[str] = ()) -> list[str]:
    """Topic filters a (non-gateway) principal may subscribe to (and receive
    from): its own device topics, headers, offers, firmware releases, the data
    of devices it may read, and the gateway's replies to the devices it owns (an owner submits
    transactions its devices signed, e.g. a key rotation, and reads the answer)."""
    own = [f"tl/{domain}/dev/{me}/#", f"tl/{domain}/blocks", f"tl/{domain}/offers",
           f"tl/{domain}/fw/#",  # firmware releases (docs/OTA.md): the authority publishes
           chainquery.answer_topic(domain, me)]  # answers to its own chain queries
    return (own + [f"tl/{domain}/data/{x}/#" for x in sorted(set(readable) | {me})]
            + [f"tl/{domain}/dev/{x}/rx" for x in sorted(owned)])


def single_session(access: Any, pid: bytes) -> bool:
    """Devices hold one connection at a time: a second one presenting an
    online device's id is the seeds' fake-id case. People and coordination
    nodes may hold several (a CLI beside a dashboard; a coordinator submitting
    beside its status subscription), each under its own `<id>-...` client id."""
    rec = access.record(pid) if hasattr(access, "record") else None
    return rec is None or (rec.kind == KIND_DEVICE and rec.node != roles.COORDINATION)


def is_coordinator(access: Any, pid: bytes) -> bool:
    """Coordination nodes follow every node's status to reassign light nodes."""
    rec = access.record(pid) if hasattr(access, "record") else None
    return rec is not None and rec.node == roles.COORDINATION


def is_banned(access: Any, pid: bytes) -> bool:
    """Banned by the domain's trust levels (docs/TRUST.md)."""
    return bool(access.is_banned(pid)) if hasattr(access, "is_banned") else False


def owned_by(access: Any, pid: bytes) -> set[str]:
    """Ids (hex) of the devices `pid` owns."""
    return {x.hex() for x in access.principals() if access.owner_of(x) == pid}


@dataclass(frozen=True)
class Admitted:
    """A principal an exported broker configuration lets in, with its rights."""

    id: str  # hex
    password: str
    readable: list[str]  # device ids hex whose data it may read
    owned: list[str]  # device ids hex it owns
    coordinator: bool
    bought: list[str]  # data topics of the agreements it buys


def admitted(domain: str, access: AccessView, credentials: Mapping[bytes, str],
             gateway_id: str | None) -> tuple[list[Admitted], dict[str, str]]:
    """Who an export lets in, besides the gateway: every active principal with a
    credential that verifies under its current key, sorted by id; and the rest
    of the credential store with why it was left out (inactive ones silently).
    Shared by the mosquitto and the NATS export."""
    out: list[Admitted] = []
    skipped: dict[str, str] = {}
    known = set()
    for pid in sorted(access.principals()):
        me = pid.hex()
        known.add(pid)
        if me == gateway_id or not access.is_active(pid):
            continue
        if is_banned(access, pid):
            skipped[me] = "banned (docs/TRUST.md)"
            continue
        pw = credentials.get(pid)
        if pw is None:
            skipped[me] = "no credential in the store"
            continue
        key = access.key_of(pid)
        if key is None or not verify_password(key, domain, pid, pw):
            skipped[me] = "stored credential does not match its current key (re-read it)"
            continue
        out.append(Admitted(me, pw, sorted(x.hex() for x in access.readable(pid)),
                            sorted(owned_by(access, pid)), is_coordinator(access, pid),
                            bought_topics(domain, access, pid)))
    for pid in sorted(set(credentials) - known):
        if pid.hex() != gateway_id:
            skipped[pid.hex()] = "not a principal of the domain"
    return out, skipped


def gateway_filter(domain: str) -> str:
    return f"tl/{domain}/#"


def _allowed(topic: str, filters: Iterable[str]) -> bool:
    return any(filter_within(topic, f) for f in filters)


def client_id_ok(client_id: str | None, me: str) -> bool:
    """A principal's client ids are `<id hex>` or `<id hex>-<anything>`: no
    principal can take over (or wipe) another principal's MQTT session."""
    return bool(client_id) and (client_id == me or client_id.startswith(me + "-"))


@dataclass
class Verdict:
    ok: bool
    code: int = 0  # CONNACK return code when refused
    reason: str = ""
    principal: bytes | None = None
    gateway: bool = False
    token: object | None = None  # the claim on the principal's one connection


class Guard:
    """The enforcement state shared by the auth plugin, the topic plugin and
    gateway.broker.embedded.GuardedBroker: where identities come from (a provider of
    the domain's Access, the authority public key) and which principals are
    connected now.

    `access` is called for every decision, so it must be cheap: see
    chain_access() for one rebuilt only when the chain moves. `authority` is
    the authority public key (SEC1) or a callable returning it (the broker
    starts before the gateway has opened its ledger)."""

    def __init__(self, domain: str, access: AccessProvider,
                 authority: bytes | Callable[[], bytes | None] | None = None) -> None:
        if not topics.is_domain_name(domain):
            raise ValueError(f"bad domain name {domain!r}")
        self.domain = domain
        self._access = access
        self._authority = authority
        self._online: dict[bytes, object] = {}
        self.refused: Counter[str] = Counter()  # reason -> count (tests, diagnostics)
        self.dropped: Counter[str] = Counter()  # action -> refused topic operations

    # -- sources --------------------------------------------------------------
    def access(self) -> AccessView:
        return self._access()

    def authority_key(self) -> bytes | None:
        a = self._authority
        return a() if callable(a) else a

    def authority_id(self) -> bytes | None:
        key = self.authority_key()
        return txm.device_id(key) if key else None

    def online(self) -> set[bytes]:
        return set(self._online)

    # -- CONNECT --------------------------------------------------------------
    def admit(self, username: object, password: object, client_id: str | None,
              will_topic: str | None = None) -> Verdict:
        """Check a CONNECT; when it is accepted, the principal is marked online
        (check and mark with no await in between) until release(verdict.token)."""
        v = self._check(username, password, client_id, will_topic)
        if not v.ok:
            self.refused[v.reason] += 1
            log.info("broker refused %s (client id %r): %s",
                     username if isinstance(username, str) else "?", client_id, v.reason)
        return v

    def _check(self, username: object, password: object, client_id: str | None,
               will_topic: str | None) -> Verdict:
        pid = parse_principal(username)
        if pid is None:
            return Verdict(False, BAD_USERNAME_PASSWORD, "bad-username")
        try:
            auth_key = self.authority_key()
            access = None if auth_key and txm.device_id(auth_key) == pid else self.access()
        except Exception as e:  # noqa: BLE001 - no chain yet (or a bug): refuse, never crash
            log.warning("broker: identities unavailable: %r", e)
            return Verdict(False, SERVER_UNAVAILABLE, "no-identities", pid)
        if access is None:  # the gateway itself
            if not verify_password(auth_key, self.domain, pid, password):
                return Verdict(False, BAD_USERNAME_PASSWORD, "bad-password", pid, True)
            return Verdict(True, principal=pid, gateway=True)
        key = access.key_of(pid)
        if key is None:
            return Verdict(False, NOT_AUTHORIZED, "unknown-principal", pid)
        if not access.is_active(pid):
            return Verdict(False, NOT_AUTHORIZED, "inactive-principal", pid)
        if is_banned(access, pid):
            return Verdict(False, NOT_AUTHORIZED, "banned", pid)
        if not verify_password(key, self.domain, pid, password):
            return Verdict(False, BAD_USERNAME_PASSWORD, "bad-password", pid)
        me = pid.hex()
        if not client_id_ok(client_id, me):
            return Verdict(False, IDENTIFIER_REJECTED, "client-id-not-own", pid)
        if will_topic is not None and not _allowed(will_topic, publish_topics(self.domain, me)):
            return Verdict(False, NOT_AUTHORIZED, "will-topic-not-own", pid)
        if not single_session(access, pid):
            return Verdict(True, principal=pid)
        if pid in self._online:
            return Verdict(False, NOT_AUTHORIZED, "already-connected", pid)
        token = object()
        self._online[pid] = token
        return Verdict(True, principal=pid, token=token)

    def release(self, verdict: Verdict | None) -> None:
        """The connection admitted with this verdict has ended."""
        if verdict is not None and verdict.principal is not None and verdict.token is not None:
            if self._online.get(verdict.principal) is verdict.token:
                del self._online[verdict.principal]

    # -- topics ---------------------------------------------------------------
    def may(self, username: object, topic: str, action: str) -> bool:
        """May the (authenticated) `username` do `action` ("publish",
        "subscribe" with a filter, "receive" a message on a topic name)?"""
        ok = self._may(username, topic, action)
        if not ok:
            self.dropped[action] += 1
            log.info("broker refused %s %s by %s", action, topic, username)
        return ok

    def _may(self, username: object, topic: str, action: str) -> bool:
        pid = parse_principal(username)
        if pid is None or not topic:
            return False
        d = self.domain
        try:
            if pid == self.authority_id():
                return filter_within(topic, gateway_filter(d))
            access = self.access()
            if not access.is_active(pid) or is_banned(access, pid):
                return False
            me = pid.hex()
            if action == "publish":
                return _allowed(topic, publish_topics(d, me))
            fixed = subscribe_filters(d, me, ())
            if _allowed(topic, fixed):
                return True
            if action != "publish" and filter_within(topic, f"tl/{d}/dev/+/status") \
                    and is_coordinator(access, pid):
                return True
            if filter_within(topic, f"tl/{d}/dev/+/rx"):
                return _allowed(topic, subscribe_filters(d, me, (), owned_by(access, pid)))
            if not filter_within(topic, f"tl/{d}/data/+/#"):
                return False  # only data topics depend on grants and purchases
            readable = {x.hex() for x in access.readable(pid)}
            if _allowed(topic, subscribe_filters(d, me, readable)):
                return True
            return _allowed(topic, bought_topics(d, access, pid))  # streams it bought
        except Exception as e:  # noqa: BLE001 - refuse, never crash the broker
            log.warning("broker: topic check failed: %r", e)
            return False


def chain_access(domain: str, state: Callable[[], Any],
                 version: Callable[[], object]) -> AccessProvider:
    """An access provider over a live chain: Access.from_state(state(), domain),
    rebuilt only when version() (e.g. the head block hash) changes.
    For `thingledger run`: chain_access(d, lambda: gw.led.state, lambda: gw.led.head.hash)."""
    cache: list[Any] = [object(), None]

    def provider() -> AccessView:
        v = version()
        if cache[0] != v or cache[1] is None:
            from gateway.identity.access import Access

            cache[1] = Access.from_state(state(), domain)
            cache[0] = v
        return cache[1]

    return provider


def enforced(admission: str) -> bool:
    """Does a domain with this genesis admission get an enforcing broker?"""
    return admission in ENFORCED_ADMISSIONS
