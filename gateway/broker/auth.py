"""Broker-side enforcement of a domain's identities (docs/IDENTITY.md §3).

Credential (the same for a device, a person and the gateway itself):
    username = principal id, 32 lowercase hex characters
    password = hex (128 lowercase characters) of the ES256 signature r||s by the
               principal's CURRENT key over canonical CBOR ["mqtt", domain, id],
               with RFC 6979 nonces: deterministic, so a board recomputes it at
               every boot and stores nothing (firmware/wallet.py mqtt_password).
               Low s only (s <= n/2, as every signature on the wire): the
               high-s twin of a password is refused, and a credential store
               written before the rule is exported in its low-s form.
It is a bearer credential: anyone who sees it on the LAN can replay it. Keep
the broker on a trusted network or behind TLS. A key rotation changes it.

Rules, shared by the embedded broker (amqtt plugins below) and the mosquitto
export (`thingledger broker export`):
  - the gateway (username = authority id, password signed by the authority key)
    may publish and subscribe anywhere under tl/<d>/ and may hold several
    connections (a restarting gateway takes its own session over);
  - any other principal must be known and active on chain (Access.is_active),
    connects at most once at a time (a second CONNECT presenting an id that is
    online is refused: the fake-id case), with client id `<id>` or `<id>-...`;
    it may publish to tl/<d>/tx, tl/<d>/dev/<id>/status (its retained status and
    last will) and its own data streams tl/<d>/data/<id>/#; it may subscribe to
    tl/<d>/dev/<id>/#, tl/<d>/blocks, tl/<d>/offers and tl/<d>/data/<x>/# for
    every device x it may read (Access.readable) and itself, and to
    tl/<d>/data/<supplier>/<agreement> of every open agreement it buys
    (Access.bought, docs/MARKET.md).
  Everything else is refused: a refused PUBLISH is acknowledged and dropped (MQTT
  3.1.1 has no way to say no), a refused SUBSCRIBE gets return code 0x80. The
  embedded broker also checks each delivery, so a right revoked on chain stops
  the flow at once, and the last will topic at CONNECT.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import os
import secrets
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from amqtt.contexts import Action
from amqtt.plugins.base import BaseAuthPlugin, BaseTopicPlugin
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from gateway.errors import FileAccessError
from gateway.identity import roles
from gateway.ledger.state import KIND_DEVICE
from shared import es256_cryptography, p256, statements, topics
from shared import tx as txm

log = logging.getLogger("thingledger.broker")

CREDENTIALS_FILE = "credentials.json"  # the owner's local store: {"<id hex>": "<password hex>"}
PASSWD_FILE = "passwd"
ACL_FILE = "acl"
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


# --------------------------------------------------------------------------- credentials
def credential_message(domain: str, principal_id: bytes) -> bytes:
    """The bytes a principal signs to make its broker password (shared/statements.py)."""
    return statements.credential_message(domain, principal_id)


def mqtt_password(private_key: bytes, domain: str, principal_id: bytes) -> str:
    """The broker password of the principal whose current private key this is."""
    return p256.sign(private_key, credential_message(domain, principal_id)).hex()


def gateway_credentials(authority_priv: bytes, domain: str) -> tuple[str, str]:
    """(username, password) the gateway connects with: the authority's credential."""
    aid = txm.device_id(p256.public_key(authority_priv))
    return aid.hex(), mqtt_password(authority_priv, domain, aid)


def _hex_exact(text: object, n_bytes: int) -> bytes | None:
    if isinstance(text, bytes | bytearray):
        try:
            text = bytes(text).decode("ascii")
        except UnicodeDecodeError:
            return None
    if not isinstance(text, str) or len(text) != 2 * n_bytes:
        return None
    if any(c not in "0123456789abcdef" for c in text):  # lowercase only: one spelling
        return None
    return bytes.fromhex(text)


def parse_principal(username: object) -> bytes | None:
    """The 16-byte principal id of a username, None unless 32 lowercase hex."""
    return _hex_exact(username, 16)


def parse_password(password: object) -> bytes | None:
    """The 64-byte signature of a password, None unless 128 lowercase hex."""
    return _hex_exact(password, 64)


_ECDSA = ec.ECDSA(hashes.SHA256())


def verify_password(public_key: bytes, domain: str, principal_id: bytes,
                    password: object) -> bool:
    """True iff `password` is the principal's credential under `public_key`."""
    sig = parse_password(password)
    if sig is None or not public_key or not es256_cryptography.is_low_s(sig):
        return False
    try:
        key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), bytes(public_key))
        der = encode_dss_signature(int.from_bytes(sig[:32], "big"),
                                   int.from_bytes(sig[32:], "big"))
        key.verify(der, credential_message(domain, principal_id), _ECDSA)
        return True
    except (InvalidSignature, ValueError, TypeError):
        return False


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
    """Topic filters a (non-gateway) principal may publish to; `me` = its id hex."""
    return [f"tl/{domain}/tx", f"tl/{domain}/dev/{me}/status", f"tl/{domain}/data/{me}/#"]


def subscribe_filters(domain: str, me: str, readable: Iterable[str],
                      owned: Iterable[str] = ()) -> list[str]:
    """Topic filters a (non-gateway) principal may subscribe to (and receive
    from): its own device topics, headers, offers, the data of devices it may
    read, and the gateway's replies to the devices it owns (an owner submits
    transactions its devices signed, e.g. a key rotation, and reads the answer)."""
    own = [f"tl/{domain}/dev/{me}/#", f"tl/{domain}/blocks", f"tl/{domain}/offers"]
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


def owned_by(access: Any, pid: bytes) -> set[str]:
    """Ids (hex) of the devices `pid` owns."""
    return {x.hex() for x in access.principals() if access.owner_of(x) == pid}


def gateway_filter(domain: str) -> str:
    return f"tl/{domain}/#"


def _allowed(topic: str, filters: Iterable[str]) -> bool:
    return any(filter_within(topic, f) for f in filters)


def client_id_ok(client_id: str | None, me: str) -> bool:
    """A principal's client ids are `<id hex>` or `<id hex>-<anything>`: no
    principal can take over (or wipe) another principal's MQTT session."""
    return bool(client_id) and (client_id == me or client_id.startswith(me + "-"))


# --------------------------------------------------------------------------- the guard
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
            if not access.is_active(pid):
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


# --------------------------------------------------------------------------- amqtt plugins
class ChainAuthPlugin(BaseAuthPlugin):
    """amqtt auth plugin: CONNECT credentials against the chain (see Guard.admit).
    Config: {"guard": Guard}. Use it with gateway.broker.embedded.GuardedBroker, which runs
    it before amqtt touches any session (plain amqtt 0.12 takes an existing
    connection with the same client id over before it looks at the verdict)."""

    @dataclass
    class Config:
        guard: Any = None

    async def authenticate(self, *, session: Any) -> bool:
        guard: Guard = self.config.guard
        will = session.will_topic if session.will_flag else None
        v = guard.admit(session.username, session.password, session.client_id, will)
        session.tl_verdict = v
        return v.ok


class ChainTopicPlugin(BaseTopicPlugin):
    """amqtt topic plugin: publish / subscribe / receive per the rules above.
    Config: {"guard": Guard}."""

    @dataclass
    class Config:
        guard: Any = None

    async def topic_filtering(self, *, session: Any = None, topic: str | None = None,
                              action: Action | None = None) -> bool:
        if session is None or topic is None or action is None:
            return False
        guard: Guard = self.config.guard
        return guard.may(session.username, topic, str(action))


def amqtt_plugins(guard: Guard) -> dict[str, dict[str, Any]]:
    """The `plugins` section of an amqtt 0.12 broker config that enforces `guard`."""
    return {f"{__name__}.ChainAuthPlugin": {"guard": guard},
            f"{__name__}.ChainTopicPlugin": {"guard": guard}}


# --------------------------------------------------------------------------- mosquitto
MOSQUITTO_ITERATIONS = 101  # mosquitto_passwd's default
MOSQUITTO_SALT_LEN = 12


def mosquitto_hash(password: str, salt: bytes | None = None,
                   iterations: int = MOSQUITTO_ITERATIONS) -> str:
    """A mosquitto 2 password-file hash: $7$<iterations>$<b64 salt>$<b64 PBKDF2-SHA512>."""
    salt = secrets.token_bytes(MOSQUITTO_SALT_LEN) if salt is None else salt
    dk = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    return "$7$%d$%s$%s" % (iterations, base64.b64encode(salt).decode(),
                            base64.b64encode(dk).decode())


def mosquitto_check(password: str, hashed: str) -> bool:
    """Does `password` match a `$7$` hash (as mosquitto checks it)?"""
    try:
        _, kind, it, salt, dk = hashed.split("$")
        if kind != "7":
            return False
        got = hashlib.pbkdf2_hmac("sha512", password.encode(), base64.b64decode(salt), int(it))
        return secrets.compare_digest(got, base64.b64decode(dk))
    except ValueError:
        return False


def load_credentials(path: Path | str) -> dict[bytes, str]:
    """The owner's credential store {"<id hex>": "<password hex>"}; {} if absent."""
    p = Path(path)
    try:
        raw = json.loads(p.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        raise ValueError(f"{p}: not a credential store ({e})") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{p}: not a credential store (expected a JSON object)")
    out: dict[bytes, str] = {}
    for k, v in raw.items():
        pid = parse_principal(k)
        sig = parse_password(v)
        if pid is None or sig is None:
            raise ValueError(f"{p}: entry {k!r}: want 32 and 128 lowercase hex characters")
        out[pid] = es256_cryptography.low_s(sig).hex()  # stores from before the low-s rule
    return out


def add_credential(path: Path | str, principal_id: bytes, password: str) -> None:
    """Add or replace one principal's password in the credential store
    (for `board claim`; file mode 0600, replaced atomically)."""
    if parse_password(password) is None or len(principal_id) != 16:
        raise ValueError("a credential is a 16-byte id and 128 lowercase hex characters")
    creds = {k.hex(): v for k, v in load_credentials(path).items()}
    creds[principal_id.hex()] = password
    _write_private(Path(path), json.dumps(creds, indent=1, sort_keys=True) + "\n")


@dataclass(frozen=True)
class FileAccess:
    """Who may read the exported passwd and acl: mode 0600 for the writer
    alone (the default), or handed to the broker's own user and/or group
    (`broker export --owner mosquitto` / `--group mosquitto`, mode 0640 with
    a group). uid/gid -1 = leave as created."""

    uid: int = -1
    gid: int = -1
    mode: int = 0o600


def file_access(owner: str | None = None, group: str | None = None) -> FileAccess:
    """FileAccess for the named user and group (names or numeric ids);
    FileAccessError naming the one that does not exist."""
    import grp
    import pwd

    uid = gid = -1
    if owner:
        try:
            uid = int(owner) if owner.isdigit() else pwd.getpwnam(owner).pw_uid
        except KeyError:
            raise FileAccessError(f"no user {owner!r} on this system (--owner)") from None
    if group:
        try:
            gid = int(group) if group.isdigit() else grp.getgrnam(group).gr_gid
        except KeyError:
            raise FileAccessError(f"no group {group!r} on this system (--group)") from None
    return FileAccess(uid, gid, 0o640 if group else 0o600)


PRIVATE = FileAccess()  # the writer's own, mode 0600


def _write_private(path: Path, text: str, access: FileAccess = PRIVATE) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            if access.uid != -1 or access.gid != -1:
                try:  # before the first byte: never readable by anyone else
                    os.fchown(f.fileno(), access.uid, access.gid)
                except PermissionError:
                    raise FileAccessError(
                        f"cannot give {path} to uid {access.uid} / gid {access.gid}: "
                        "run as root, or as a member of that group") from None
            os.fchmod(f.fileno(), access.mode)
            f.write(text)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)  # a SIGHUP never reads half a file


@dataclass
class Export:
    users: list[str] = field(default_factory=list)  # id hex, gateway first
    skipped: dict[str, str] = field(default_factory=dict)  # id hex -> reason
    # what mosquitto would enforce: the acl text and every user's password
    # (the passwd file itself differs on each export: fresh salts)
    digest: str = ""


def mosquitto_acl(domain: str, gateway_user: str | None,
                  principals: Mapping[str, tuple[Iterable[str], Iterable[str], bool]],
                  bought: Mapping[str, Iterable[str]] | None = None) -> str:
    """mosquitto acl_file text: `principals` maps id hex -> (readable device
    ids hex, owned device ids hex, is a coordination node); `bought` id hex ->
    the data topics of the agreements it buys (a snapshot: export again after
    new agreements, or grant `read` on the supplier)."""
    lines = [f"# ThingLedger domain {domain}: generated by `thingledger broker export`;",
             "# do not edit (the next export replaces it). No anonymous access.", ""]
    if gateway_user:
        lines += [f"user {gateway_user}", f"topic readwrite {gateway_filter(domain)}", ""]
    for me in sorted(principals):
        lines.append(f"user {me}")
        lines += [f"topic write {t}" for t in publish_topics(domain, me)]
        readable, owned, coordinator = principals[me]
        lines += [f"topic read {t}" for t in subscribe_filters(domain, me, readable, owned)]
        if coordinator:
            lines.append(f"topic read tl/{domain}/dev/+/status")
        lines += [f"topic read {t}" for t in (bought or {}).get(me, ())]
        lines.append("")
    return "\n".join(lines)


def export_mosquitto(out_dir: Path | str, domain: str, access: AccessView,
                     credentials: Mapping[bytes, str],
                     gateway: tuple[str, str] | None,
                     access_to: FileAccess = PRIVATE) -> Export:
    """Write `passwd` and `acl` for mosquitto into out_dir from the domain's
    identities: every active principal with a credential that verifies under
    its current key; the rest is reported in Export.skipped (inactive ones
    silently). `gateway` = gateway_credentials(...), full access to tl/<d>/#.
    `access_to`: the files' owner, group and mode (file_access(); mosquitto
    reads them as its own user, after dropping root, on start and SIGHUP)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ex = Export()
    gw_id = gateway[0] if gateway else None
    pw_lines: list[str] = []
    if gateway:
        pw_lines.append(f"{gateway[0]}:{mosquitto_hash(gateway[1])}")
        ex.users.append(gateway[0])
    acl: dict[str, tuple[list[str], list[str], bool]] = {}
    bought: dict[str, list[str]] = {}
    known = set()
    for pid in sorted(access.principals()):
        me = pid.hex()
        known.add(pid)
        if me == gw_id or not access.is_active(pid):
            continue
        pw = credentials.get(pid)
        if pw is None:
            ex.skipped[me] = "no credential in the store"
            continue
        key = access.key_of(pid)
        if key is None or not verify_password(key, domain, pid, pw):
            ex.skipped[me] = "stored credential does not match its current key (re-read it)"
            continue
        pw_lines.append(f"{me}:{mosquitto_hash(pw)}")
        acl[me] = (sorted(x.hex() for x in access.readable(pid)), sorted(owned_by(access, pid)),
                   is_coordinator(access, pid))
        bought[me] = bought_topics(domain, access, pid)
        ex.users.append(me)
    for pid in sorted(set(credentials) - known):
        if pid.hex() != gw_id:
            ex.skipped[pid.hex()] = "not a principal of the domain"
    acl_text = mosquitto_acl(domain, gw_id, acl, bought)
    _write_private(out / PASSWD_FILE, "\n".join(pw_lines) + "\n", access_to)
    _write_private(out / ACL_FILE, acl_text, access_to)
    d = hashlib.sha256(acl_text.encode())
    for me in ex.users:
        d.update(f"\n{me}:{gateway[1] if me == gw_id else credentials[bytes.fromhex(me)]}".encode())
    ex.digest = d.hexdigest()
    return ex


MOSQUITTO_OPTIONS = {
    # what an enforcing mosquitto needs besides its listener (docs/IDENTITY.md §3)
    "allow_anonymous": "false",
    "use_username_as_clientid": "true",
}
