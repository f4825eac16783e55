"""End-to-end helpers for the gateway tests: simulated devices (CPython),
the gateway in-process or as a `thingledger run` subprocess, chain queries.

- `SimDevice`: a device's key pair, id and seq counter; signs transactions with
  shared.tx.make; its own paho-mqtt client (MQTT 3.1.1) subscribed to its rx
  topic collects the gateway's replies, checks every receipt with
  messages.check_receipt against the authority key of the gateway's genesis,
  and resends unconfirmed transactions (the same bytes, so the same tx id) on
  reconnect and, when asked (`resend_due`), after a timeout. Like the firmware
  it resends oldest seq first.
- `GatewayThread`: gateway.node.service.Gateway in its own asyncio loop in a thread.
- `GatewayProcess`: `thingledger run --no-boards --broker URL ...` as a
  subprocess (SIGKILL / SIGINT), its output read line by line with timeouts.
- `shipped_mosquitto_options()`: the settings of docs/mosquitto.conf, for
  tests/support/brokers.MosquittoBroker (which supplies listener and persistence path).

Every wait is bounded; nothing sleeps hoping something happened.
"""

from __future__ import annotations

import asyncio
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt

from gateway.db import genesis_files as genesis
from gateway.db.store import Store, TxRecord
from gateway.node.config import DB_FILE, GENESIS_FILE, GatewayConfig
from shared import cbor, cose, errors, messages, p256, replies_host, topics
from shared import tx as txm
from tests.support.waits import wait_on

ROOT = Path(__file__).resolve().parents[2]
DOMAIN = "demo"
SHIPPED_CONF = ROOT / "docs" / "mosquitto.conf"


# --------------------------------------------------------------------------- domain, chain
def new_domain(data_dir: Path, domain: str = DOMAIN) -> bytes:
    """Create a domain (genesis + authority key) in data_dir; returns the
    authority public key the devices check receipts against."""
    genesis.create_domain(data_dir, domain)
    return authority_of(data_dir)


def authority_of(data_dir: Path) -> bytes:
    return genesis.load(Path(data_dir) / GENESIS_FILE).authority


def chain_txs(data_dir: Path) -> list[TxRecord]:
    """Every transaction in the chain, in chain order (height, index);
    the database is opened read-only."""
    with Store(Path(data_dir) / DB_FILE, readonly=True) as st:
        out: list[TxRecord] = []
        for blk in st.iter_blocks(1):
            out.extend(st.block_txs(blk.height))
        return out


def thingledger(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
    """Run the `thingledger` CLI (the venv's console script)."""
    exe = Path(sys.executable).with_name("thingledger")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "tools.cli"]
    return subprocess.run([*cmd, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def shipped_mosquitto_options(path: Path = SHIPPED_CONF) -> dict[str, str]:
    """Key/value settings of the shipped mosquitto.conf, minus what a test
    broker sets itself (listener, persistence location, logging, pid, user)."""
    local = {"listener", "persistence_location", "log_dest", "pid_file", "user",
             "include_dir", "log_type"}
    opts: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        key, _, value = line.partition(" ")
        if key not in local:
            opts[key] = value.strip()
    return opts


def noncanonical_tx(priv: bytes, sender: bytes, seq: int, body: dict, domain: str = DOMAIN,
                    type_: int = txm.TYPE_READING) -> bytes:
    """A correctly signed transaction whose payload encodes `seq` (< 24) with a
    one-byte-argument head (0x18 seq) instead of the shortest form: canonical
    CBOR is the only thing wrong with it."""
    assert 0 < seq < 24
    payload = (b"\xa5" + b"\x01" + cbor.dumps(type_) + b"\x02" + cbor.dumps(domain)
               + b"\x03" + bytes([0x18, seq]) + b"\x04\x00" + b"\x05" + cbor.dumps(body))
    return cose.sign1(priv, payload, sender)


# --------------------------------------------------------------------------- devices
@dataclass
class Pending:
    seq: int
    message: bytes
    first_sent: float
    last_sent: float
    sends: int = 1


@dataclass
class Receipt:
    tx_id: bytes
    seq: int
    height: int
    status: int
    reason: str
    arrived: float
    events: list = field(default_factory=list)


@dataclass
class Rejection:
    tx_id: bytes
    seq: int
    reason: str
    detail: str
    topic: str


@dataclass
class SimDevice:
    """A simulated light node (see module docstring). Thread-safe: paho's
    thread delivers replies, the test thread signs and publishes."""

    host: str
    port: int
    authority: bytes
    domain: str = DOMAIN
    name: str = ""
    priv: bytes = b""
    pub: bytes = b""
    seq: int = 0
    receipts: dict[bytes, Receipt] = field(default_factory=dict)
    rejections: list[Rejection] = field(default_factory=list)
    bad_replies: list[str] = field(default_factory=list)
    notices: list[dict] = field(default_factory=list)  # market notices (kinds 3-5)
    duplicate_receipts: int = 0
    outbox: dict[bytes, Pending] = field(default_factory=dict)
    sent: dict[bytes, bytes] = field(default_factory=dict)  # every tracked tx id -> bytes
    resends: int = 0
    connects: int = 0
    resend_on_reconnect: bool = True

    def __post_init__(self) -> None:
        if not self.priv:
            self.priv, self.pub = p256.keygen()
        self.id = txm.device_id(self.pub)
        self.hex = self.id.hex()
        self.name = self.name or self.hex[:8]
        self.tx_topic = topics.tx(self.domain)
        self.rx_topic = topics.rx(self.domain, self.hex)
        self._cond = threading.Condition()
        self._subscribed = 0
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                        client_id=f"dev-{self.hex[:12]}-{uuid.uuid4().hex[:6]}",
                        clean_session=True, protocol=mqtt.MQTTv311)
        c.max_inflight_messages_set(100)
        c.max_queued_messages_set(0)
        c.reconnect_delay_set(min_delay=0.1, max_delay=0.5)
        c.on_connect = self._on_connect
        c.on_subscribe = self._on_subscribe
        c.on_message = self._on_message
        self.client = c

    # -- connection ----------------------------------------------------------
    def connect(self, timeout: float = 10.0) -> SimDevice:
        self.client.connect(self.host, self.port, keepalive=30)
        self.client.loop_start()
        self.wait(lambda: self._subscribed >= 1, timeout, "rx subscription")
        return self

    def close(self) -> None:
        try:
            self.client.disconnect()
        finally:
            self.client.loop_stop()

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            return
        client.subscribe(self.rx_topic, qos=1)
        with self._cond:
            self.connects += 1
            again = self.connects > 1 and self.resend_on_reconnect
        if again:  # reconnected: resend what has no receipt, oldest first
            self.resend_due(0.0)

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        with self._cond:
            self._subscribed += 1
            self._cond.notify_all()

    def wait_reconnected(self, connects: int, timeout: float = 10.0) -> None:
        """Wait until the device has connected `connects` times in all and is
        subscribed again (after a broker restart)."""
        self.wait(lambda: self.connects >= connects and self._subscribed >= connects, timeout,
                  f"connection #{connects}")

    def _on_message(self, client, userdata, msg) -> None:
        now = time.monotonic()
        try:  # a rejection or a market notice counts only if the authority sealed it
            m = replies_host.open_reply(msg.payload, self.authority)
        except errors.TLError as e:
            with self._cond:
                self.bad_replies.append(f"unparseable reply {e.reason}/{getattr(e, 'detail', '')}")
                self._cond.notify_all()
            return
        if m[messages.M_KIND] > messages.KIND_REJECT:
            with self._cond:
                self.notices.append(m)
                self._cond.notify_all()
            return
        tx_id = m[messages.M_TX]
        with self._cond:
            if m[messages.M_KIND] == messages.KIND_RECEIPT:
                try:
                    fields = messages.check_receipt(m, self.authority)
                except errors.TLError as e:
                    self.bad_replies.append(f"receipt {tx_id.hex()[:12]} fails check: {e!r}")
                else:
                    if tx_id in self.receipts:
                        self.duplicate_receipts += 1
                    else:
                        self.receipts[tx_id] = Receipt(tx_id, m[messages.M_SEQ], fields["height"],
                                                       m[messages.M_STATUS], m[messages.M_REASON],
                                                       now, m[messages.M_EVENTS])
                    self.outbox.pop(tx_id, None)
            else:
                self.rejections.append(Rejection(tx_id, m[messages.M_SEQ], m[messages.M_REASON],
                                                 m.get(messages.M_DETAIL, ""), msg.topic))
                if messages.M_RETRY not in m:  # final; else: retry later
                    self.outbox.pop(tx_id, None)
            self._cond.notify_all()

    # -- transactions --------------------------------------------------------
    def sign(self, type_: int, body: dict, *, seq: int | None = None, domain: str | None = None,
             fee: int = 0) -> bytes:
        """Signed tx bytes; without `seq` the device's next seq is used (and consumed)."""
        if seq is None:
            self.seq += 1
            seq = self.seq
        return txm.make(self.priv, self.id, type_, domain or self.domain, seq, fee, body)

    def register_tx(self) -> bytes:
        return self.sign(txm.TYPE_REGISTER, {1: self.pub})

    def reading_tx(self, value: int = 2150, scale: int = -2, **kw) -> bytes:
        return self.sign(txm.TYPE_READING, {1: value, 2: scale}, **kw)

    def submit(self, message: bytes, wait_ack: float | None = None) -> bytes:
        """Publish a tx (QoS 1) and track it until its receipt; returns its id.
        `wait_ack`: also wait (seconds) for the broker's PUBACK."""
        tx_id = txm.tx_id(message)
        now = time.monotonic()
        seq = txm.decode(message).seq
        with self._cond:
            self.sent[tx_id] = message
            self.outbox[tx_id] = Pending(seq, message, now, now)
        info = self.client.publish(self.tx_topic, message, qos=1)
        if wait_ack is not None:
            info.wait_for_publish(wait_ack)
            assert info.is_published(), f"{self.name}: broker did not PUBACK within {wait_ack} s"
        return tx_id

    def publish_raw(self, payload: bytes, topic: str | None = None,
                    wait_ack: float | None = 10.0) -> None:
        """Publish bytes without tracking them (bad input)."""
        info = self.client.publish(topic or self.tx_topic, payload, qos=1)
        if wait_ack is not None:
            info.wait_for_publish(wait_ack)
            assert info.is_published(), f"{self.name}: broker did not PUBACK within {wait_ack} s"

    def resend_due(self, after_s: float, limit: int | None = None) -> int:
        """Resend (same bytes) every unconfirmed tx last sent `after_s` or more
        seconds ago (the `limit` oldest of them), oldest seq first. Returns
        how many were resent."""
        now = time.monotonic()
        with self._cond:
            due = sorted((p for p in self.outbox.values() if now - p.last_sent >= after_s),
                         key=lambda p: p.seq)[:limit]
            for p in due:
                p.last_sent = now
                p.sends += 1
            self.resends += len(due)
        for p in due:
            self.client.publish(self.tx_topic, p.message, qos=1)
        return len(due)

    # -- waiting -------------------------------------------------------------
    def wait(self, predicate, timeout: float = 10.0, what: str = "condition"):
        return wait_on(self._cond, predicate, timeout, lambda: (
            f"{self.name}: timeout ({timeout} s) waiting for {what}; "
            f"{len(self.receipts)} receipts, outbox {len(self.outbox)}, "
            f"rejections {self.rejections[-5:]}, bad {self.bad_replies[:3]}"))

    def wait_confirmed(self, timeout: float = 15.0, resend_after: float | None = None) -> None:
        """Wait until every tracked tx has a receipt or a rejection; with
        `resend_after`, resend what stays unconfirmed that long."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            step = left if resend_after is None else min(left, resend_after)
            try:
                self.wait(lambda: not self.outbox, max(step, 0.0), "all txs answered")
                return
            except AssertionError:
                if time.monotonic() >= deadline:
                    raise
            if resend_after is not None:
                self.resend_due(resend_after)

    def rejection_for(self, tx_id: bytes, timeout: float = 10.0) -> Rejection:
        def find():
            return next((r for r in self.rejections if r.tx_id == tx_id), None)
        return self.wait(find, timeout, f"rejection of {tx_id.hex()[:12]}")

    def receipt_for(self, tx_id: bytes, timeout: float = 10.0) -> Receipt:
        return self.wait(lambda: self.receipts.get(tx_id), timeout,
                         f"receipt of {tx_id.hex()[:12]}")

    def unconfirmed(self) -> list[bytes]:
        """Ids of the tracked txs that have no answer yet."""
        with self._cond:
            return list(self.outbox)

    def answered(self) -> dict[bytes, str]:
        """tx id -> 'receipt' or the rejection reason, for every tracked tx."""
        with self._cond:
            out = {}
            for r in self.rejections:
                if r.tx_id in self.sent:
                    out[r.tx_id] = r.reason
            for i in self.receipts:
                out[i] = "receipt"
            return out


# --------------------------------------------------------------------------- gateway
class GatewayThread:
    """gateway.node.service.Gateway running in its own asyncio loop in a thread."""

    def __init__(self, data_dir: Path, broker_url: str, domain: str = DOMAIN,
                 block_interval: float = 0.2, **cfg) -> None:
        self.cfg = GatewayConfig(domain=domain, data_dir=Path(data_dir), broker_url=broker_url,
                                 block_interval_s=block_interval, **cfg)
        self.events: list[str] = []
        self._cond = threading.Condition()
        self.gw = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def _event(self, line: str) -> None:
        with self._cond:
            self.events.append(line)
            self._cond.notify_all()

    def start(self, timeout: float = 15.0) -> GatewayThread:
        from gateway.node.service import Gateway

        ready = threading.Event()

        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            try:
                # freeze_gc off: not for a test process (see Gateway.start)
                self.gw = Gateway(self.cfg, on_event=self._event, freeze_gc=False)
                await self.gw.start(connect_timeout=timeout)
            except BaseException as e:
                self._error = e
                ready.set()
                raise
            ready.set()
            try:
                await self._stop.wait()
            finally:
                await self.gw.stop()

        def run() -> None:
            try:
                asyncio.run(main())
            except BaseException as e:  # reported by start()/stop()
                self._error = self._error or e

        self._thread = threading.Thread(target=run, name="gateway", daemon=True)
        self._thread.start()
        if not ready.wait(timeout + 5):
            raise AssertionError("gateway did not start")
        if self._error is not None:
            raise AssertionError(f"gateway failed to start: {self._error!r}")
        return self

    def stop(self, timeout: float = 15.0) -> None:
        if self._thread is None:
            return
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout)
        alive = self._thread.is_alive()
        self._thread = None
        assert not alive, "gateway thread did not stop"
        if self._error is not None:
            raise AssertionError(f"gateway failed: {self._error!r}")

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def on_loop(self, fn, timeout: float = 10.0):
        """fn(gateway) run on the gateway's event loop (what reads the node's
        state, e.g. Gateway.metrics_text); returns its result."""
        assert self._loop is not None and self.gw is not None
        gw = self.gw

        async def call():
            return fn(gw)
        return asyncio.run_coroutine_threadsafe(call(), self._loop).result(timeout)

    def wait_event(self, pattern: str, timeout: float = 10.0, start: int = 0) -> re.Match:
        rx = re.compile(pattern)
        return wait_on(self._cond,
                       lambda: next(filter(None, map(rx.search, self.events[start:])), None),
                       timeout, lambda: f"no gateway event matching {pattern!r} in {timeout} s; "
                                        f"last events: {self.events[-10:]}")


class GatewayProcess:
    """`thingledger run --no-boards` against an external broker, as a subprocess."""

    def __init__(self, data_dir: Path, broker_url: str, domain: str = DOMAIN,
                 block_interval: float = 0.2, extra: tuple[str, ...] = (),
                 preexec_fn: Callable[[], None] | None = None) -> None:
        """preexec_fn: run in the child before exec (e.g. resource limits)."""
        self.preexec_fn = preexec_fn
        exe = Path(sys.executable).with_name("thingledger")
        base = [str(exe)] if exe.exists() else [sys.executable, "-m", "tools.cli"]
        self.cmd = [*base, "run", "--no-boards", "--no-http", "--broker", broker_url, "--data-dir",
                    str(data_dir), "--domain", domain, "--block-interval", str(block_interval),
                    *extra]
        self.lines: list[str] = []
        self.proc: subprocess.Popen | None = None
        self._q: queue.Queue[str | None] = queue.Queue()
        self._reader: threading.Thread | None = None

    def start(self, timeout: float = 20.0) -> GatewayProcess:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self._q = queue.Queue()
        self.proc = subprocess.Popen(self.cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     text=True, bufsize=1, start_new_session=True,
                                     preexec_fn=self.preexec_fn)
        self._reader = threading.Thread(target=self._read, args=(self.proc, self._q),
                                        daemon=True)
        self._reader.start()
        self.expect(r"chain \S+ at height \d+", timeout)
        return self

    @staticmethod
    def _read(proc: subprocess.Popen, q: queue.Queue) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            q.put(line.rstrip("\n"))
        q.put(None)

    def expect(self, pattern: str, timeout: float = 10.0) -> re.Match:
        """Next output line matching `pattern`; fails on timeout or exit."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"gateway: no line matching {pattern!r} in {timeout} s:\n"
                                     + "\n".join(self.lines[-30:]))
            try:
                line = self._q.get(timeout=min(left, 0.5))
            except queue.Empty:
                continue
            if line is None:
                raise AssertionError(f"gateway exited ({self.proc.wait()}) before "
                                     f"{pattern!r}:\n" + "\n".join(self.lines[-30:]))
            self.lines.append(line)
            m = rx.search(line)
            if m:
                return m

    def kill(self) -> None:
        """SIGKILL: no clean-up of any kind (no commit, no DISCONNECT)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self._drain()

    def interrupt(self, timeout: float = 20.0) -> int:
        """SIGINT (Ctrl-C): the gateway commits what it holds and exits."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGINT)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired as e:
            raise AssertionError("gateway did not exit after SIGINT:\n"
                                 + "\n".join(self.lines[-30:])) from e
        self._drain()
        return rc

    def _drain(self) -> None:
        if self._reader is not None:
            self._reader.join(5)
        while True:
            try:
                line = self._q.get_nowait()
            except queue.Empty:
                return
            if line is not None:
                self.lines.append(line)

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        if self.proc is not None and self.proc.stdout:
            self.proc.stdout.close()
