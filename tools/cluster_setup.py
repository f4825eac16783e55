"""The set-up `thingledger run --gateways N` (tools/run_cluster.py) does on the
chain and on the NATS cluster's admission (docs/CONSENSUS.md, "One machine:
thingledger run --gateways 3"):

- keys beside the gateways' folders: var/owner.key (the domain owner, in a
  new domain's genesis: it certifies the gateways as full nodes) and
  var/coordinator.key (the coordination node); each board's wallet is made
  here if its flash has none (firmware/wallet.py's layout: id || private key),
  so the run knows every board's MQTT login before the board first boots;
- the admission file var/nats/auth.conf (`broker export --nats`'s format,
  gateway/broker/nats_export.py), which every NATS node includes: exported
  from the chain before the nodes start (from the genesis on the first run),
  again after the set-up transactions, and kept in step by a
  tools.broker_sync.Watch that re-exports on every new head and SIGHUPs
  every node when what NATS enforces changed. The logins it admits are those
  of var/gw1/credentials.json (the coordinator's and the boards', computed
  from their keys here), so `thingledger broker export --nats` by hand writes
  the same file;
- the set-up transactions, submitted under the gateways' own login (the
  only user a NATS node admits before the chain knows anyone else): with
  the market, the owner's deployment of the agreement contract; each
  gateway's NODE_JOIN as a full node (introducing its validator key, with
  the owner's certificate); the coordinator's REGISTER and NODE_JOIN as a
  coordination node; each board's REGISTER and NODE_JOIN as a light node,
  signed with the board's key at the seqs above its flash's seq reservation,
  which is then raised past them (firmware/flash.py SeqStore). Only what the
  chain does not show yet is submitted, so a second run submits nothing.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from gateway import broker as broker_auth
from gateway.broker.embedded import parse_url
from gateway.broker.nats_export import export_nats
from gateway.db.store import Store
from gateway.identity import roles
from gateway.identity import statements as itx
from gateway.node.config import DB_FILE
from shared import errors, messages, p256, replies_host, topics
from shared import tx as txm
from tools.keys import KeyPair, load_key, new_key
from tools.submit import Reply

OWNER_KEY = "owner.key"
COORDINATOR_KEY = "coordinator.key"
AUTH_FILE = "auth.conf"  # in the NATS cluster's folder (var/nats)
WALLET_FILE = "wallet.key"  # firmware/wallet.py KEY_FILE
SEQ_FILE = "seq"  # firmware/flash.py SEQ_FILE

# what each role declares in its NODE_JOIN (gateway/identity/roles.py labels them)
FULL_HARDWARE = {"power": "mains", "ram_kib": 4 << 20, "lifetime": "long"}  # a Raspberry Pi 4
COORDINATOR_HARDWARE = {"power": "usb", "ram_kib": 512, "lifetime": "long"}
BOARD_HARDWARE = {"power": "usb", "ram_kib": 520, "lifetime": "short", "board": "unix"}


class SetupError(RuntimeError):
    pass


def ensure_key(path: Path) -> KeyPair:
    """The key in `path`, made (0600) if there is none."""
    return load_key(path) if path.exists() else new_key(path)


@dataclass(frozen=True)
class BoardKey:
    name: str
    flash: Path
    id: bytes
    key: KeyPair


def board_wallet(name: str, flash: Path) -> BoardKey:
    """The board's wallet from its flash (made here, 0600, on a board that has
    none yet, as its first boot would: firmware/wallet.py load_or_create)."""
    path = flash / WALLET_FILE
    flash.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not path.exists():
        priv, pub = p256.keygen()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(txm.device_id(pub) + priv)
    data = path.read_bytes()
    if len(data) != 48:
        raise SetupError(f"{path}: not a wallet (48 bytes: id and private key)")
    priv = data[16:]
    return BoardKey(name, flash, data[:16], KeyPair(priv, p256.public_key(priv)))


def flash_seq(flash: Path) -> int:
    """The board's seq reservation ceiling (0: none yet)."""
    try:
        return int((flash / SEQ_FILE).read_text() or 0)
    except (OSError, ValueError):
        return 0


def raise_flash_seq(flash: Path, seq: int) -> None:
    """Make the board's next seq greater than `seq` (atomic, as firmware/flash.py writes)."""
    if flash_seq(flash) < seq:
        tmp = flash / (SEQ_FILE + ".tmp")
        tmp.write_text(str(seq))
        os.replace(tmp, flash / SEQ_FILE)


# --------------------------------------------------------------------------- admission
@dataclass
class Admission:
    """The cluster's admission file, exported from the chain in `data_dir`
    (a gateway's folder; its genesis state while it has no chain yet)."""

    path: Path
    data_dir: Path
    genesis: Any  # gateway.ledger.genesis.Genesis
    authority_priv: bytes
    digest: str | None = None  # of the file as written last
    logins: dict[bytes, str] = field(default_factory=dict)

    @property
    def credentials_file(self) -> Path:
        return self.data_dir / broker_auth.CREDENTIALS_FILE

    @property
    def gateway_login(self) -> tuple[str, str]:
        return broker_auth.gateway_credentials(self.authority_priv, self.genesis.domain)

    def add_login(self, principal: bytes, key: KeyPair) -> None:
        """Keep `principal`'s MQTT password (signed by its key) in the credential store."""
        pw = broker_auth.mqtt_password(key.private, self.genesis.domain, principal)
        if broker_auth.load_credentials(self.credentials_file).get(principal) != pw:
            broker_auth.add_credential(self.credentials_file, principal, pw)
        self.logins[principal] = pw

    def _store(self) -> Store | None:
        db = self.data_dir / DB_FILE
        return Store(db, readonly=True) if db.exists() else None

    def state(self) -> Any:
        store = self._store()
        if store is None:
            return self.genesis.state()
        with store:
            return store.load_state()

    def _head(self) -> Any:
        """The chain's head block (None before the gateway made its chain)."""
        store = self._store()
        if store is None:
            return None
        with store:
            return store.head()

    def head(self) -> bytes | None:
        """The chain's head hash (None before the gateway made its chain)."""
        h = self._head()
        return h.hash if h is not None else None

    def height(self) -> int:
        h = self._head()
        return h.height if h is not None else 0

    def export(self) -> tuple[Any, int]:
        """Write the file if what NATS would enforce changed: (Export, height)."""
        from gateway.identity.access import Access

        store = self._store()
        if store is None:
            state, height = self.genesis.state(), 0
        else:
            with store:
                state, head = store.load_state(), store.head()
            height = head.height if head is not None else 0
        creds = broker_auth.load_credentials(self.credentials_file)
        ex = export_nats(self.path, self.genesis.domain, Access.from_state(state, self.genesis.domain),
                         creds, self.gateway_login, unchanged=self.digest)
        self.digest = ex.digest
        return ex, height


# --------------------------------------------------------------------------- transactions
@dataclass(frozen=True)
class SetupTx:
    what: str  # e.g. "board-1 joins as a light node"
    message: bytes


def full_node_joins(state: Any, domain: str, owner: KeyPair | None,
                    validators: Iterable[KeyPair]) -> tuple[list[SetupTx], list[str]]:
    """NODE_JOINs of the gateways not yet full nodes; and why none could be
    made (a domain without an owner)."""
    todo = [v for v in validators if _label(state, v.id) != roles.FULL]
    if todo and owner is None:
        return [], ["the domain has no owner: the gateways cannot join as full nodes "
                    "(the coordinator has none to assign)"]
    out = []
    for v in todo:
        assert owner is not None
        cert = itx.node_certificate(owner, domain, v.id)
        seq = _seq(state, v.id)
        out.append(SetupTx(f"gateway {v.id.hex()[:8]} joins as a full node",
                           itx.build_node_join(v, domain, roles.FULL, FULL_HARDWARE, seq, cert,
                                               introduce=state.get(v.id) is None)))
    return out, []


def agreement_deploy(state: Any, domain: str, owner: KeyPair, operator: bytes,
                     fee_bps: int) -> list[SetupTx]:
    """The market's agreement contract deployed by the domain owner (in a domain
    with an owner the owner is the contract admin, docs/MARKET.md), naming the
    operator (the domain's authority) and its fee; nothing if one is deployed."""
    from gateway.contracts.binding import deployment
    from gateway.market.ledger import rules as market

    if deployment(state, market.AGREEMENT) is not None:
        return []
    body = {1: "deploy", 2: market.AGREEMENT_LABEL, 3: "agreement",
            4: market.AGREEMENT_VERSION, 5: {"operator": operator, "fee_bps": fee_bps}}
    return [SetupTx("the owner deploys the agreement contract", txm.make(
        owner.private, owner.id, txm.TYPE_CONTRACT_ADMIN, domain, _seq(state, owner.id), 0,
        body))]


def register_and_join(state: Any, domain: str, who: str, key: KeyPair, principal: bytes,
                      hardware: dict, first_seq: int | None = None
                      ) -> tuple[list[SetupTx], list[SetupTx], int]:
    """([REGISTER] if the chain does not know `principal`, [NODE_JOIN] if it is not
    labelled as `hardware` says, the last seq used). Seqs from `first_seq` (a
    board's: above its flash reservation) or, for a person-like signer, the
    clock's (tools.submit.next_seq)."""
    label = roles.label_of(hardware)
    rec = state.get(principal)
    seq = max(first_seq or _seq(state, principal), (rec.last_seq + 1) if rec else 1)
    first: list[SetupTx] = []
    second: list[SetupTx] = []
    if rec is None:
        first.append(SetupTx(f"{who} registers", txm.make(
            key.private, principal, txm.TYPE_REGISTER, domain, seq, 0, {1: key.public})))
        seq += 1
    if rec is None or rec.node != label:
        second.append(SetupTx(f"{who} joins as a {label} node", itx.build_node_join(
            key, domain, label, hardware, seq, sender=None if principal == key.id else principal)))
        seq += 1
    return first, second, seq - 1


def _label(state: Any, principal: bytes) -> str:
    rec = state.get(principal)
    return rec.node if rec is not None else ""


def _seq(state: Any, principal: bytes) -> int:
    from tools.submit import next_seq

    rec = state.get(principal)
    return max(next_seq(), (rec.last_seq + 1) if rec else 1)


def submit_many(broker_url: str, domain: str, txs: list[SetupTx], authority: bytes,
                login: tuple[str, str], validators: tuple | None, timeout: float = 60.0,
                resend_s: float = 2.0, log: Callable[[str], None] = print,
                cancel: threading.Event | None = None) -> dict[str, Reply]:
    """Submit `txs` over one MQTT connection and wait for each one's answer on
    its sender's rx topic, checked as tools.submit checks one (a receipt
    with the k votes of `validators`, a rejection by the authority's seal).
    Unanswered ones are published again every `resend_s` (the same bytes:
    a gateway answers a duplicate with its receipt), so a cluster still
    starting (no intake stream yet) loses none. what -> Reply; SetupError if
    some stay unanswered after `timeout`, or once `cancel` is set."""
    if not txs:
        return {}
    decoded = {t.what: txm.decode(t.message) for t in txs}
    pending = {decoded[t.what].id: t for t in txs}
    answers: queue.Queue[bytes] = queue.Queue()
    subscribed: queue.Queue[bool] = queue.Queue()
    host, port = parse_url(broker_url)
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                    client_id=f"{login[0]}-setup-{time.time_ns() % 10**9}",
                    protocol=mqtt.MQTTv311)
    c.username_pw_set(*login)
    rx = sorted({topics.rx(domain, d.sender.hex()) for d in decoded.values()})

    def on_connect(client, userdata, flags, reason_code, properties) -> None:
        if not reason_code.is_failure:  # again after a reconnect (a node still starting)
            client.subscribe([(t, 1) for t in rx])

    c.on_connect = on_connect
    c.on_message = lambda _c, _u, m: answers.put(m.payload)
    c.on_subscribe = lambda *a: subscribed.put(True)
    c.reconnect_delay_set(min_delay=0.2, max_delay=2)
    try:
        c.connect(host, port, keepalive=30)
    except OSError as e:
        raise SetupError(f"cannot reach the broker at {broker_url}: {e}") from None
    c.loop_start()
    out: dict[str, Reply] = {}
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                subscribed.get(timeout=0.2)
                break
            except queue.Empty:
                if (cancel is not None and cancel.is_set()) or time.monotonic() >= deadline:
                    raise SetupError(f"the broker at {broker_url} did not confirm the "
                                     f"subscription within {timeout:.0f} s") from None
        next_send = 0.0
        while pending:
            now = time.monotonic()
            if cancel is not None and cancel.is_set():
                raise SetupError("cancelled")
            if now >= deadline:
                raise SetupError("no answer within %.0f s to: %s" % (
                    timeout, ", ".join(t.what for t in pending.values())))
            if now >= next_send:
                for t in pending.values():
                    c.publish(topics.tx(domain), t.message, qos=1)
                next_send = now + resend_s
            try:
                raw = answers.get(timeout=max(0.0, min(next_send, deadline, now + 0.5) - now))
            except queue.Empty:
                continue
            try:
                m = replies_host.open_reply(raw, authority)
            except errors.TLError:
                continue  # unsigned or forged: not an answer
            if m[messages.M_KIND] > messages.KIND_REJECT:
                continue  # a market notice
            t = pending.get(m[messages.M_TX])
            if t is None:
                continue
            if m[messages.M_KIND] == messages.KIND_RECEIPT:
                try:
                    fields = messages.check_receipt(m, authority, validators)
                except errors.TLError:
                    continue
                reply = Reply(True, m[messages.M_REASON], "", fields["height"],
                              m[messages.M_STATUS])
            elif m.get(messages.M_RETRY) is not None:
                continue  # retryable: the next resend goes again
            else:
                reply = Reply(False, m[messages.M_REASON], m.get(messages.M_DETAIL, ""), None,
                              None)
            del pending[m[messages.M_TX]]
            out[t.what] = reply
            log(f"{t.what}: {reply.describe()}")
    finally:
        c.disconnect()
        c.loop_stop()
    return out


def wait_height(admission: Admission, height: int, timeout: float = 30.0) -> bool:
    """Wait (bounded) until the exporting gateway's chain reaches `height`."""
    deadline = time.monotonic() + timeout
    delay = 0.02
    while admission.height() < height:
        if time.monotonic() >= deadline:
            return False
        time.sleep(delay)
        delay = min(delay * 2, 0.2)
    return True


def wait_assigned(admission: Admission, lights: Iterable[bytes], timeout: float = 30.0) -> bool:
    """Wait (bounded) until the exporting gateway's chain shows every one of
    `lights` assigned to a full node (the coordinator's NODE_ASSIGNs)."""
    want = list(lights)
    deadline = time.monotonic() + timeout
    delay = 0.05
    while True:
        state = admission.state()
        if all((r := state.get(i)) is not None and r.assigned for i in want):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(delay)
        delay = min(delay * 2, 0.25)
