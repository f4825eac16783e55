"""Light clients of other domains, kept in this domain's state (pure: a
function of the state and the tx; docs/CROSSDOMAIN.md, "Light client").

A client of domain A (kv key xc<A>, shared/xpacket.py) holds A's validator
set (threshold, sorted public keys), the trusting period, the latest trusted
height and the frozen flag; each trusted header of A is kept under
xh<A> 00 <height> (at most MAX_HEADERS, the oldest dropped) as
[block hash, time, state root, receipts root, validators hash, next
validators hash].

A header of A is trusted when its commit certificate (shared/commit.py)
holds k votes of a set whose hash the header names AND that set is one the
client trusts: the client's current set, or the set the latest trusted
header names as the next one (so a validator-set change of A is followed
through the `next_validators` hash: the update carries the new set's keys
and the hash must match). Headers move forward in time; one more than
MAX_DRIFT_S after this block's time is refused.

A second, different header at a trusted height, finalised by the set the
trusted header names, is misbehaviour of A's quorum: the client freezes (no
packets, no updates) and both headers stay in the state as evidence (xf<A>).
A client whose latest trusted header is older than its trusting period is
expired: updates and packets are refused until the domain owner creates it
again (CLIENT_CREATE replaces an expired or frozen client).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from gateway.errors import RuleError
from gateway.ledger import consensus
from shared import cbor, commit, errors, header, reasons
from shared import xpacket as xp

MAX_HEADERS = 64
MAX_DRIFT_S = 300
MIN_PERIOD_S = 60
MAX_PERIOD_S = 10 * 365 * 86400


@dataclass(frozen=True)
class Client:
    domain: str
    threshold: int
    pubkeys: tuple[bytes, ...]
    period: int
    latest: int
    frozen: bool = False

    @property
    def set_hash(self) -> bytes:
        return commit.valset_hash(self.threshold, list(self.pubkeys))

    def encode(self) -> bytes:
        return cbor.dumps([self.threshold, list(self.pubkeys), self.period, self.latest,
                           int(self.frozen)])

    @classmethod
    def decode(cls, domain: str, raw: bytes) -> Client:
        k, pubs, period, latest, frozen = cbor.loads(raw)
        return cls(domain, k, tuple(pubs), period, latest, bool(frozen))


@dataclass(frozen=True)
class Trusted:
    """One trusted header of the counterparty."""

    height: int
    hash: bytes
    time: int
    state_root: bytes
    receipts_root: bytes
    validators: bytes
    next_validators: bytes

    def encode(self) -> bytes:
        return cbor.dumps([self.hash, self.time, self.state_root, self.receipts_root,
                           self.validators, self.next_validators])

    @classmethod
    def decode(cls, height: int, raw: bytes) -> Trusted:
        return cls(height, *cbor.loads(raw))

    @classmethod
    def of(cls, fields: dict[str, Any], header_bytes: bytes) -> Trusted:
        return cls(fields["height"], header.block_hash(header_bytes), fields["time"],
                   fields["state_root"], fields["receipts_root"], fields["validators"],
                   fields["next_validators"])


def get(view: Any, domain: str) -> Client | None:
    raw = view.kv_get(xp.client_key(domain))
    return None if raw is None else Client.decode(domain, raw)


def trusted(view: Any, domain: str, height: int) -> Trusted | None:
    raw = view.kv_get(xp.header_key(domain, height))
    return None if raw is None else Trusted.decode(height, raw)


def heights(view: Any, domain: str) -> list[int]:
    n = len(xp.headers_of(domain))
    return [int.from_bytes(k[n:], "big") for k, _ in view.kv_range(xp.headers_of(domain))]


def expired(view: Any, c: Client, now: int) -> bool:
    t = trusted(view, c.domain, c.latest)
    return t is None or now > t.time + c.period


def usable(view: Any, domain: str, now: int | None) -> Client:
    """The client of `domain` if packets may be proven with it; RuleError
    otherwise (unknown-domain, client-frozen, client-expired). `now` None:
    no expiry check (precheck, which has no block time)."""
    c = get(view, domain)
    if c is None:
        raise RuleError(reasons.UNKNOWN_DOMAIN, domain)
    if c.frozen:
        raise RuleError(reasons.CLIENT_FROZEN, domain)
    if now is not None and expired(view, c, now):
        raise RuleError(reasons.CLIENT_EXPIRED, domain)
    return c


def _final(hb: Any, cert: Any, k: int, pubs: tuple[bytes, ...], domain: str) -> dict[str, Any]:
    """The fields of a header finalised by `cert` under (k, pubs), of `domain`."""
    try:
        fields = commit.final_header(hb, cert, (k, list(pubs), None))
    except errors.TLError as e:
        raise RuleError(e.reason, e.detail) from None
    if fields["domain"] != domain:
        raise RuleError(reasons.WRONG_DOMAIN, "header-domain")
    return fields


def _set_of(entry_set: Any, c: Client | None) -> tuple[int, tuple[bytes, ...]]:
    if entry_set is None:
        assert c is not None
        return c.threshold, c.pubkeys
    k, pubs = entry_set
    problem = consensus.check_set(k, pubs)
    if problem or list(pubs) != sorted(pubs):
        raise RuleError(errors.BAD_TX, problem or "valset-order")
    return k, tuple(pubs)


def check_create(body: dict[int, Any], own_domain: str, now: int | None
                 ) -> tuple[Client, Trusted]:
    """The new client and its first trusted header (CLIENT_CREATE body
    {1: domain, 2: k, 3: [pubkeys], 4: trusting period, 5: header, 6: cert})."""
    domain = body[1]
    if domain == own_domain:
        raise RuleError(reasons.WRONG_DOMAIN, "own-domain")
    k, pubs = _set_of([body[2], body[3]], None)
    fields = _final(body[5], body[6], k, pubs, domain)
    t = Trusted.of(fields, body[5])
    if now is not None and t.time > now + MAX_DRIFT_S:
        raise RuleError(errors.BAD_PROOF, "header-from-future")
    return Client(domain, k, pubs, body[4], t.height), t


@dataclass
class Plan:
    """What an update writes: the client, the new trusted headers, and the
    evidence if it freezes the client."""

    client: Client
    new: list[Trusted]
    evidence: bytes | None = None


def plan_update(view: Any, domain: str, entries: list[Any], now: int | None) -> Plan:
    """Check a CLIENT_UPDATE's entries ([header bytes, certificate, set or
    None]) in order; raises RuleError on the first that is refused."""
    c = get(view, domain)
    if c is None:
        raise RuleError(reasons.UNKNOWN_DOMAIN, domain)
    if c.frozen:
        raise RuleError(reasons.CLIENT_FROZEN, domain)
    plan = Plan(c, [])
    pending: dict[int, Trusted] = {}

    def at(h: int) -> Trusted | None:
        return pending.get(h) or trusted(view, domain, h)

    for hb, cert, vset in entries:
        k, pubs = _set_of(vset, plan.client)
        fields = _final(hb, cert, k, pubs, domain)
        t = Trusted.of(fields, hb)
        old = at(t.height)
        if old is not None:
            if old.hash == t.hash:
                raise RuleError(reasons.DUPLICATE, "header %d" % t.height)
            if t.validators != old.validators:
                raise RuleError(errors.BAD_PROOF, "wrong-validator-set")
            plan.client = replace(plan.client, frozen=True)
            plan.evidence = cbor.dumps([t.height, old.hash, bytes(hb), cert])
            return plan
        latest = at(plan.client.latest)
        assert latest is not None
        if now is not None and expired(view, plan.client, now) and not pending:
            raise RuleError(reasons.CLIENT_EXPIRED, domain)
        if t.validators not in (plan.client.set_hash, latest.next_validators):
            raise RuleError(errors.BAD_PROOF, "untrusted-validator-set")
        if now is not None and t.time > now + MAX_DRIFT_S:
            raise RuleError(errors.BAD_PROOF, "header-from-future")
        if t.height > plan.client.latest:
            if t.time < latest.time:
                raise RuleError(errors.BAD_PROOF, "header-time")
            plan.client = replace(plan.client, threshold=k, pubkeys=pubs, latest=t.height)
        pending[t.height] = t
        plan.new.append(t)
    return plan


def write(view: Any, plan: Plan) -> None:
    d = plan.client.domain
    view.kv_put(xp.client_key(d), plan.client.encode())
    for t in plan.new:
        view.kv_put(xp.header_key(d, t.height), t.encode())
    if plan.evidence is not None:
        view.kv_put(xp.frozen_key(d), plan.evidence)
    hs = heights(view, d)
    for h in hs[:max(0, len(hs) - MAX_HEADERS)]:
        view.kv_put(xp.header_key(d, h), None)


def clear_headers(view: Any, domain: str) -> None:
    for h in heights(view, domain):
        view.kv_put(xp.header_key(domain, h), None)
