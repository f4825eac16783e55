"""The embedded MQTT broker (amqtt) that `thingledger run` starts by default.

A gateway operator with a real broker (Debian's mosquitto on the Raspberry Pi)
passes `--broker mqtt://host:port` instead; see docs/mosquitto.conf.

Two modes (docs/IDENTITY.md §3):
- anonymous (no `access`): anyone may connect and use any topic. For open
  domains (devices self-register) and `make run`'s demo.
- enforcing (`access` = a provider of the domain's gateway.identity.access.Access, plus
  `domain` and the `authority` public key): CONNECT credentials and topic
  rights are checked against the chain by gateway.broker.policy, in a
  GuardedBroker.

Both run with the limits of BrokerLimits (what docs/mosquitto.conf gives
mosquitto): a maximum packet size, a CONNECT timeout, a connection limit
below the process's file limit, bounded retained storage per client and in
total, and a bounded queue per session (BoundedBroker)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import socket
import struct
import threading
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

from amqtt.adapters import ReaderAdapter, StreamWriterAdapter
from amqtt.broker import Broker
from amqtt.contexts import Action
from amqtt.errors import AMQTTError, MQTTError, NoDataError
from amqtt.mqtt.connack import ConnackPacket
from amqtt.mqtt.constants import QOS_0, QOS_1, QOS_2
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.mqtt.publish import PublishPacket
from amqtt.session import OutgoingApplicationMessage

from gateway.broker.plugins import amqtt_plugins
from gateway.broker.policy import NOT_AUTHORIZED, Guard, Verdict

DEFAULT_URL = "mqtt://127.0.0.1:1883"


def parse_url(url: str) -> tuple[str, int]:
    """(host, port) of an mqtt:// URL; ValueError naming what is wrong."""
    u = urlparse(url)
    if u.scheme != "mqtt" or not u.hostname:
        raise ValueError(f"broker URL must look like mqtt://host:port, got {url!r}")
    return u.hostname, u.port or 1883


def amqtt_config(host: str, port: int, guard: Guard | None = None) -> dict:
    plugins = amqtt_plugins(guard) if guard is not None else {
        "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}}
    return {
        "listeners": {"default": {"type": "tcp", "bind": f"{host}:{port}"}},
        # no $SYS publishing, no packet logging: quiet and fast
        "plugins": plugins,
    }


KIB = 1024
MIB = 1024 * KIB
FILE_RESERVE = 128  # files kept for the rest of the process (database, boards, logs)
MESSAGE_OVERHEAD = 512  # bytes charged per message besides topic and payload (its objects: ~370 B measured)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BrokerLimits:
    """What one client may cost the embedded broker (the amqtt twin of
    docs/mosquitto.conf's message_size_limit, max_queued_bytes, ...).
    A message is charged len(topic) + len(payload) + MESSAGE_OVERHEAD."""

    # bytes of one MQTT packet, fixed header included; a bigger one closes the
    # connection as soon as its fixed header is read (its body is never read)
    max_packet_size: int = 16 * KIB
    # seconds a new connection has to deliver its whole CONNECT packet
    connect_timeout: float = 10.0
    # open client sockets (with or without a CONNECT); capped at the soft file
    # limit minus FILE_RESERVE; at the limit a new one takes the place of the
    # oldest socket that has sent no CONNECT for a second, else it is reset
    max_connections: int = 900
    # retained messages stored for one client (its username, else its client
    # id) and for everyone together; a retained message over either is
    # delivered to current subscribers but not stored
    retained_per_client: int = 2 * MIB
    retained_total: int = 16 * MIB
    # per session: queued QoS 0 messages beyond this are dropped, oldest first
    queue_qos0_bytes: int = 1 * MIB
    # per session: everything queued or in flight (QoS 1 sent, PUBACK awaited);
    # a connected client over it is disconnected; an offline persistent
    # session keeps what fits and drops the rest
    queue_bytes: int = 16 * MIB
    # QoS 1 messages sent to one client and not yet acknowledged
    max_inflight: int = 20000

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if not value > 0:
                raise ValueError(f"BrokerLimits.{name} must be positive, got {value!r}")

    def connection_limit(self) -> int:
        """max_connections, below the process's file limit."""
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft == resource.RLIM_INFINITY:
            return self.max_connections
        return max(1, min(self.max_connections, soft - FILE_RESERVE))


def charge(topic: str | None, data: bytes | bytearray | None) -> int:
    """Bytes a stored or queued message counts against a budget."""
    return len(topic or "") + len(data or b"") + MESSAGE_OVERHEAD


def _reset(transport: asyncio.BaseTransport) -> None:
    """Close a connection now with a TCP reset: what the kernel still holds
    for the peer is dropped too (a plain close would keep sending it to a
    client that does not read, from an orphaned socket)."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


def _abort(writer: Any) -> None:
    """_reset a client's connection (amqtt's StreamWriterAdapter or asyncio's)."""
    w = getattr(writer, "_writer", writer)
    transport = getattr(w, "transport", None)
    if transport is not None:
        _reset(transport)


class _LimitedReader(ReaderAdapter):
    """amqtt's reader over a socket, one whole MQTT packet at a time: the
    remaining length in a packet's fixed header is checked against
    max_packet_size before a byte of its body is read (a bigger packet
    closes the connection: it never reaches memory); the first packet (the
    CONNECT) must be complete within connect_timeout. amqtt reads a packet
    in pieces (header, topic, payload), all served from the buffered packet.
    A read that amqtt cancels (its keepalive timer) leaves the fetch of the
    packet running, so no byte is lost."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 broker: BoundedBroker) -> None:
        self._r = reader
        self._w = writer
        self._broker = broker
        self._buf = b""
        self._pos = 0
        self._first = True
        self._fetch: asyncio.Future[bytes] | None = None

    async def read(self, n: int = -1) -> bytes:
        if self._pos >= len(self._buf):
            if self._fetch is None:
                self._fetch = asyncio.ensure_future(self._next_packet())
            fetch = self._fetch
            await asyncio.shield(fetch)
            self._fetch = None
            self._buf, self._pos = fetch.result(), 0
            if not self._buf:
                return b""  # EOF, or the connection was refused
        end = len(self._buf) if n < 0 else min(len(self._buf), self._pos + n)
        out = self._buf[self._pos:end]
        self._pos = end
        return out

    def feed_eof(self) -> None:
        self._r.feed_eof()

    async def _next_packet(self) -> bytes:
        limits = self._broker.limits
        peer = self._w.get_extra_info("peername")
        try:
            if self._first:
                packet = await asyncio.wait_for(self._packet(), limits.connect_timeout)
                self._first = False
                self._broker.pending.pop(self._w.transport, None)
                return packet
            return await self._packet()
        except TimeoutError:
            self._broker.stats["connect_timeout"] += 1
            log.info("broker: no CONNECT from %s within %g s: closed", peer, limits.connect_timeout)
        except _TooLarge as e:
            self._broker.stats["packet_too_large"] += 1
            log.warning("broker: %s sent a %d-byte packet (limit %d): disconnected", peer,
                        e.size, limits.max_packet_size)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        except Exception as e:  # noqa: BLE001 - any other read failure ends the connection
            log.warning("broker: reading from %s failed (%r): closed", peer, e)
        _abort(self._w)
        return b""

    async def _packet(self) -> bytes:
        head = await self._r.readexactly(1)
        length, shift, size_bytes = 0, 0, bytearray()
        while True:
            b = (await self._r.readexactly(1))[0]
            size_bytes.append(b)
            length |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                break
            if len(size_bytes) == 4:
                raise _TooLarge(1 << 28)  # no MQTT length takes more than 4 bytes
        size = 1 + len(size_bytes) + length
        if size > self._broker.limits.max_packet_size:
            raise _TooLarge(size)
        body = await self._r.readexactly(length) if length else b""
        return head + bytes(size_bytes) + body


class _TooLarge(Exception):
    def __init__(self, size: int) -> None:
        super().__init__(size)
        self.size = size


class _Out:
    """One queued outgoing message (or a barrier: `done`)."""

    __slots__ = ("topic", "data", "qos", "retain", "cost", "dropped", "done")

    def __init__(self, topic: str, data: bytes | bytearray, qos: int, retain: bool,
                 done: asyncio.Future[None] | None = None) -> None:
        self.topic, self.data, self.qos, self.retain = topic, data, qos, retain
        self.cost = charge(topic, data) if done is None else 0
        self.dropped = False
        self.done = done


class Outbox:
    """A connected client's outgoing messages: one sender writes them in
    order, QoS 1 ones stay in flight until their PUBACK (at most
    max_inflight). `size` counts what is queued and in flight. QoS 0
    beyond queue_qos0_bytes is dropped oldest first; when queue_bytes would
    be exceeded, the client is disconnected (it does not read, or does not
    acknowledge, as fast as it is sent to)."""

    def __init__(self, handler: BoundedHandler, broker: BoundedBroker) -> None:
        self.handler = handler
        self.broker = broker
        self.limits = broker.limits
        self.queue: deque[_Out] = deque()
        self.qos0: deque[_Out] = deque()  # the queued, not dropped QoS 0 ones, in order
        self.size = 0
        self.qos0_size = 0
        self.inflight = 0
        self.closed = False
        self._wake = asyncio.Event()
        self._window = asyncio.Event()
        self._task = asyncio.ensure_future(self._run())

    def put(self, topic: str, data: bytes | bytearray, qos: int, retain: bool = False) -> bool:
        """Queue a message; False if it was dropped (or the client disconnected)."""
        if self.closed:
            return False
        m = _Out(topic, data, min(qos, QOS_1), retain)
        lim = self.limits
        if m.qos == QOS_0:
            while self.qos0 and (self.qos0_size + m.cost > lim.queue_qos0_bytes
                                 or self.size + m.cost > lim.queue_bytes):
                self._drop(self.qos0.popleft())
            if self.qos0_size + m.cost > lim.queue_qos0_bytes or self.size + m.cost > lim.queue_bytes:
                self.broker.stats["qos0_dropped"] += 1
                return False
            self.qos0.append(m)
            self.qos0_size += m.cost
        else:
            while self.qos0 and self.size + m.cost > lim.queue_bytes:
                self._drop(self.qos0.popleft())
            if self.size + m.cost > lim.queue_bytes:
                self.overflow()
                return False
        self.size += m.cost
        self.queue.append(m)
        self._wake.set()
        return True

    def _drop(self, m: _Out) -> None:
        m.dropped = True
        self.qos0_size -= m.cost
        self.size -= m.cost
        self.broker.stats["qos0_dropped"] += 1

    def overflow(self) -> None:
        session = self.handler.session
        self.broker.stats["slow_disconnected"] += 1
        log.warning("broker: client %s does not keep up (%d bytes queued or in flight, limit %d): "
                    "disconnected", session.client_id if session else "?", self.size,
                    self.limits.queue_bytes)
        self.close()
        _abort(self.handler.writer)

    async def barrier(self) -> None:
        """Return once every message queued so far has been written (or the
        outbox closed)."""
        if self.closed:
            return
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.queue.append(_Out("", b"", QOS_0, False, done))
        self._wake.set()
        await done

    def close(self) -> None:
        """The connection ended: stop sending; QoS 1 messages not yet sent
        go to a persistent session's offline queue (within its budget)."""
        if self.closed:
            return
        self.closed = True
        self._task.cancel()
        session = self.handler.session
        keep = session is not None and not session.clean_session and not session.is_anonymous
        for m in self.queue:
            if m.done is not None:
                if not m.done.done():
                    m.done.set_result(None)
            elif keep and not m.dropped and m.qos == QOS_1:
                self.broker.queue_offline(session, m.topic, m.data, m.qos)
        self.queue.clear()
        self.qos0.clear()

    async def _run(self) -> None:
        h = self.handler
        try:
            while True:
                while not self.queue:
                    self._wake.clear()
                    await self._wake.wait()
                m = self.queue.popleft()
                if m.done is not None:
                    if not m.done.done():
                        m.done.set_result(None)
                    continue
                if m.dropped:
                    continue
                if m.qos == QOS_0:
                    self.qos0.popleft()  # it is m: both in order, dropped ones gone from qos0
                    self.qos0_size -= m.cost
                    try:
                        await h._send_packet(PublishPacket.build(m.topic, m.data, None, False,
                                                                 QOS_0, m.retain))
                    finally:
                        self.size -= m.cost
                    continue
                while self.inflight >= self.limits.max_inflight:
                    self._window.clear()
                    await self._window.wait()
                await self._send_qos1(m)
        except asyncio.CancelledError:
            pass
        except Exception as e:  # noqa: BLE001 - a broken connection: amqtt ends the session
            log.debug("broker: sending to a client failed: %r", e)
            self.close()

    async def _send_qos1(self, m: _Out) -> None:
        h = self.handler
        session = h.session
        if session is None:
            return
        packet_id = session.next_packet_id
        msg = OutgoingApplicationMessage(packet_id, m.topic, QOS_1, m.data, m.retain)
        session.inflight_out[packet_id] = msg
        # the waiter is in place before the PUBLISH leaves: a fast PUBACK finds it
        waiter: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        h._puback_waiters[packet_id] = waiter
        self.inflight += 1
        cost = m.cost
        msg.publish_packet = msg.build_publish_packet()

        def acked(fut: asyncio.Future[Any]) -> None:
            if h._puback_waiters.get(packet_id) is fut:
                del h._puback_waiters[packet_id]
            if not fut.cancelled() and fut.exception() is None:
                msg.puback_packet = fut.result()
                session.inflight_out.pop(packet_id, None)
            # else the connection ended: a persistent session keeps it in
            # inflight_out, and amqtt sends it again on reconnection
            self.inflight -= 1
            self.size -= cost
            self._window.set()

        waiter.add_done_callback(acked)
        await h._send_packet(msg.publish_packet)


class BoundedHandler(BrokerProtocolHandler):
    """amqtt's broker-side protocol handler with an Outbox."""

    tl_broker: BoundedBroker | None = None
    outbox: Outbox | None = None

    def attach(self, session: Any, reader: Any, writer: Any) -> None:
        super().attach(session, reader, writer)
        if self.tl_broker is not None and self.outbox is None:
            self.outbox = Outbox(self, self.tl_broker)

    async def stop(self) -> None:
        if self.outbox is not None:
            self.outbox.close()
        await super().stop()

    def handle_read_timeout(self) -> None:
        # amqtt 0.12's broker handler ignores it; the session's keep_alive is
        # 1.5 x the client's (BoundedBroker._resolve_session): it is gone
        if self.tl_broker is not None:
            self.tl_broker.stats["keepalive_timeout"] += 1
        log.info("broker: client %s silent for 1.5 x its keepalive: disconnected",
                 self.session.client_id if self.session else "?")
        _abort(self.writer)


class BoundedBroker(Broker):
    """amqtt 0.12.1 Broker with BrokerLimits: packets are read whole and
    refused over max_packet_size (_LimitedReader), a CONNECT must come within
    connect_timeout, connections beyond the limit are closed on accept,
    retained messages are stored within a per-client and a total budget, and
    every session's outgoing messages go through a bounded Outbox (offline
    persistent sessions: a bounded queue). `stats` counts what the limits
    refused."""

    def __init__(self, config: dict, limits: BrokerLimits | None = None, **kw: Any) -> None:
        super().__init__(config, **kw)
        self.limits = limits or BrokerLimits()
        self.stats: Counter[str] = Counter()
        self.open_connections = 0
        # connections that have not delivered their CONNECT yet -> accept time
        # (in order: the oldest first)
        self.pending: dict[asyncio.BaseTransport, float] = {}
        self.retained_size = 0
        self._retained_cost: dict[str, tuple[str, int]] = {}  # topic -> (owner, cost)
        self._retained_by: Counter[str] = Counter()  # owner -> bytes
        self._max_connections = self.limits.connection_limit()

    # -- connections ----------------------------------------------------------
    async def stream_connected(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                               listener_name: str) -> None:
        if self.open_connections >= self._max_connections and self._evict_idle():
            pass  # a socket that never sent its CONNECT made room
        elif self.open_connections >= self._max_connections:
            self.stats["connections_refused"] += 1
            if self.stats["connections_refused"] in (1, 10, 100) or \
                    self.stats["connections_refused"] % 1000 == 0:
                log.warning("broker: %d connections open (limit %d): refusing new ones "
                            "(%d so far)", self.open_connections, self._max_connections,
                            self.stats["connections_refused"])
            _reset(writer.transport)
            return
        self.open_connections += 1
        self.pending[writer.transport] = asyncio.get_running_loop().time()
        try:
            await self._client_connected(listener_name, _LimitedReader(reader, writer, self),
                                         StreamWriterAdapter(writer))
        finally:
            self.open_connections -= 1
            self.pending.pop(writer.transport, None)
            if not writer.transport.is_closing():
                writer.transport.close()

    async def shutdown(self) -> None:
        for transport in list(self.pending):  # amqtt knows no session for them
            _reset(transport)
        self.pending.clear()
        await super().shutdown()

    def _evict_idle(self) -> bool:
        """At the connection limit: close the oldest connection still without
        a CONNECT if it has waited over a second (a device sends its CONNECT
        at once), so sockets left idle cannot keep devices out."""
        if not self.pending:
            return False
        transport, since = next(iter(self.pending.items()))
        if asyncio.get_running_loop().time() - since < min(1.0, self.limits.connect_timeout):
            return False
        del self.pending[transport]
        _reset(transport)
        self.stats["idle_evicted"] += 1
        return True

    async def _client_connected(self, listener_name: str, reader: Any, writer: Any) -> None:
        # amqtt 0.12.1's Broker._client_connected, quiet about connections
        # that end before their CONNECT (timeouts, port scans)
        server = self._servers.get(listener_name)
        if server is None:
            raise AMQTTError(f"Invalid listener name '{listener_name}'")
        await server.acquire_connection()
        try:
            peer = writer.get_peer_info()
            if peer is None:
                return
            try:
                handler, client_session = await self._initialize_client_session(
                    reader, writer, peer[0], peer[1])
            except (AMQTTError, MQTTError, NoDataError) as exc:
                log.debug("broker: no session for %s:%s: %s", peer[0], peer[1], exc)
                return
            try:
                await self._handle_client_session(reader, writer, client_session, handler,
                                                  server, listener_name)
            except (AMQTTError, MQTTError, NoDataError) as exc:
                log.info("broker: session of %s ended: %s", client_session.client_id, exc)
        finally:
            server.release_connection()

    async def _read_connect(self, reader: Any, writer: Any) -> tuple[BoundedHandler, Any]:
        try:
            handler, client_session = await BoundedHandler.init_from_connect(
                reader, writer, self.plugins_manager)
        except MQTTError as exc:
            await writer.close()
            raise MQTTError(exc) from exc
        except (AMQTTError, NoDataError) as exc:
            raise AMQTTError(exc) from exc
        handler.tl_broker = self
        return handler, client_session

    async def _initialize_client_session(self, reader, writer, remote_address, remote_port):
        handler, client_session = await self._read_connect(reader, writer)
        return handler, await self._resolve_session(client_session)

    async def _resolve_session(self, client_session):
        # amqtt 0.12.1 Broker._initialize_client_session, after the CONNECT is read
        from amqtt.utils import gen_client_id

        if client_session.clean_session:
            if client_session.client_id is not None and client_session.client_id != "":
                await self._delete_session(client_session.client_id)
            else:
                client_session.client_id = gen_client_id()
            client_session.parent = 0
        elif client_session.client_id in self._sessions:
            existing, _ = self._sessions[client_session.client_id]
            existing.will_flag = client_session.will_flag
            existing.will_message = client_session.will_message
            existing.will_topic = client_session.will_topic
            existing.will_qos = client_session.will_qos
            existing.keep_alive = client_session.keep_alive
            existing.username = client_session.username
            existing.password = client_session.password
            client_session = existing
            client_session.parent = 1
        else:
            client_session.parent = 0
        delay = self.config.get("timeout-disconnect-delay", 0)
        if client_session.keep_alive > 0 and isinstance(delay, int):
            # a client silent for 1.5 x its keepalive is disconnected [MQTT-3.1.2-24]
            client_session.keep_alive += (client_session.keep_alive + 1) // 2 + delay
        return client_session

    async def _handle_client_session(self, reader, writer, client_session, handler, server,
                                     listener_name) -> None:
        try:
            await super()._handle_client_session(reader, writer, client_session, handler,
                                                 server, listener_name)
        finally:
            self._session_ended(handler)

    def _session_ended(self, handler) -> None:
        """A client's connection is over, however it ended (subclasses add
        their own clean-up, calling this one)."""
        if isinstance(handler, BoundedHandler) and handler.outbox is not None:
            handler.outbox.close()  # e.g. refused after attach: no stop() came

    # -- delivery ---------------------------------------------------------------
    def deliver(self, session: Any, handler: Any, topic: str, data: bytes | bytearray, qos: int,
                retain: bool = False) -> None:
        """Queue a message to a connected session (its Outbox)."""
        outbox = getattr(handler, "outbox", None)
        if outbox is not None:
            outbox.put(topic, data, qos, retain)
        else:  # not one of ours (cannot happen for our listeners): amqtt's way
            self._tasks_queue.append(asyncio.ensure_future(
                handler.mqtt_publish(topic, data, min(qos, QOS_1), retain=retain)))

    def queue_offline(self, session: Any, topic: str, data: bytes | bytearray, qos: int) -> bool:
        """Keep a QoS 1 message for an offline persistent session, within queue_bytes."""
        cost = charge(topic, data)
        used = getattr(session, "tl_offline_bytes", 0)
        if used + cost > self.limits.queue_bytes:
            self.stats["offline_dropped"] += 1
            if self.stats["offline_dropped"] in (1, 10, 100) or self.stats["offline_dropped"] % 1000 == 0:
                log.warning("broker: offline session %s has %d bytes queued (limit %d): "
                            "dropping new messages (%d so far)", session.client_id, used,
                            self.limits.queue_bytes, self.stats["offline_dropped"])
            return False
        session.tl_offline_bytes = used + cost
        from amqtt.broker import RetainedApplicationMessage

        session.retained_messages.put_nowait(RetainedApplicationMessage(None, topic, data, qos))
        return True

    async def _retain_broadcast_message(self, broadcast: dict[str, Any], qos: int,
                                        target_session: Any) -> None:
        self.queue_offline(target_session, broadcast["topic"], broadcast["data"], min(qos, QOS_1))

    async def _publish_session_retained_messages(self, session: Any) -> None:
        # what was queued while the session was offline, through its Outbox
        handler = self._get_handler(session)
        while not session.retained_messages.empty():
            m = session.retained_messages.get_nowait()
            session.tl_offline_bytes = max(0, getattr(session, "tl_offline_bytes", 0)
                                           - charge(m.topic, m.data))
            if handler is not None:
                self.deliver(session, handler, m.topic, m.data, m.qos or QOS_0, retain=True)

    # -- retained messages ------------------------------------------------------
    @staticmethod
    def retain_owner(session: Any) -> str:
        """Whose retained budget a session's messages count against."""
        if session is None:
            return ""  # the broker itself
        return session.username or session.client_id or ""

    async def retain_message(self, source_session: Any, topic_name: str | None,
                             data: bytes | bytearray | None, qos: int | None = None) -> None:
        if topic_name is None:
            return
        old_owner, old_cost = self._retained_cost.get(topic_name, ("", 0))
        if data:
            owner = self.retain_owner(source_session)
            cost = charge(topic_name, data)
            mine = self._retained_by[owner] - (old_cost if old_owner == owner else 0) + cost
            total = self.retained_size - old_cost + cost
            if (source_session is not None and mine > self.limits.retained_per_client) \
                    or total > self.limits.retained_total:
                self.stats["retained_refused"] += 1
                log.warning("broker: retained message on %s from %s not stored (%d bytes; "
                            "client %d/%d, all %d/%d)", topic_name, owner or "the broker", cost,
                            mine, self.limits.retained_per_client, total,
                            self.limits.retained_total)
                return
            self._release_retained(topic_name)
            self._retained_cost[topic_name] = (owner, cost)
            self._retained_by[owner] += cost
            self.retained_size += cost
        else:
            self._release_retained(topic_name)
        await super().retain_message(source_session, topic_name, data, qos)

    def _release_retained(self, topic: str) -> None:
        owner, cost = self._retained_cost.pop(topic, ("", 0))
        if cost:
            self._retained_by[owner] -= cost
            if self._retained_by[owner] <= 0:
                del self._retained_by[owner]
            self.retained_size -= cost

    def retained_of(self, owner: str) -> int:
        """Bytes of retained messages stored for `owner` (retain_owner)."""
        return self._retained_by.get(owner, 0)

    def outbox_of(self, client_id: str) -> Outbox | None:
        entry = self._sessions.get(client_id)
        return getattr(entry[1], "outbox", None) if entry else None


class RetainSafeBroker(BoundedBroker):
    """amqtt 0.12.1 Broker whose messages go only where they belong, to every
    subscriber they belong to.

    Retained messages: amqtt 0.12.1 sends, to every client that connects, the
    retained messages of every topic filter *any* session subscribed to
    (Broker._handle_client_session loops over the broker-wide `_subscriptions`),
    without the receive check: a board got the retained offers directory and
    other devices' retained ACCOUNT notices on connect. Here a retained message
    is delivered only for a filter the session itself holds, and (enforcing
    mode) only if the session may receive that topic.

    Broadcast: amqtt 0.12.1 walks the live subscription table and, with topic
    plugins (enforcing mode), awaits each subscriber's receive check inside
    the walk. A client that unsubscribes or disconnects meanwhile is popped
    from the list being walked, so the next subscriber is skipped: a receipt
    never reached the owner's CLI when the device's own connection ended at
    that moment (tests/broker/test_broker_broadcast.py). Here the walk is over copies,
    and a subscription gone during the check is not served."""

    def _holds(self, session: Any, topic_filter: str) -> bool:
        """Does `session` (itself, not another with its client id) hold `topic_filter`?"""
        return any(s is session for s, _ in self._subscriptions.get(topic_filter, ()))

    async def _run_broadcast(self, running_tasks: Any) -> None:
        # amqtt 0.12.1's Broker._run_broadcast, walking copies of the table
        broadcast = await self._broadcast_queue.get()
        topic = broadcast["topic"]
        for topic_filter, subscriptions in list(self._subscriptions.items()):
            if not self._matches(topic, topic_filter):
                continue
            for session, sub_qos in list(subscriptions):
                qos = broadcast.get("qos", sub_qos)
                if not await self._topic_filtering(session, topic=topic, action=Action.RECEIVE):
                    continue
                if not self._holds(session, topic_filter):
                    continue  # unsubscribed, or its session ended, during the check
                connected = session.transitions.state == "connected"
                if (not connected and not session.clean_session and qos in (QOS_1, QOS_2)
                        and not session.is_anonymous):  # kept for its return [MQTT 3.1.2.4]
                    await self._retain_broadcast_message(broadcast, qos, session)
                    continue
                handler = self._get_handler(session) if connected else None
                if handler:
                    self.deliver(session, handler, topic, broadcast["data"], qos)

    async def _publish_retained_messages_for_subscription(self, subscription: tuple[str, int],
                                                          session: Any) -> None:
        topic_filter, qos = subscription
        if not self._holds(session, topic_filter):
            return  # the connect-time loop over every session's filters
        handler = self._get_handler(session)
        if handler is None:
            return
        for topic, retained in list(self._retained_messages.items()):
            if self._matches(topic, topic_filter) and await self._topic_filtering(
                    session, topic=topic, action=Action.RECEIVE):
                self.deliver(session, handler, retained.topic, retained.data,
                             min(qos, retained.qos or qos), retain=True)
        outbox = getattr(handler, "outbox", None)
        if outbox is not None:  # written before amqtt answers the next SUBSCRIBE
            await outbox.barrier()


class GuardedBroker(RetainSafeBroker):
    """amqtt 0.12 Broker that authenticates a CONNECT before it touches any
    session, and frees the principal's one connection when it ends.

    Plain amqtt 0.12 first deletes the session of the presented client id
    (clean session) or takes the connected client with that id over
    (persistent session), and only then sends the plugins' verdict: a refused
    impostor would still knock the real device off. Here the auth plugins run
    right after the CONNECT is read; a refused client gets its CONNACK code
    (4 bad credentials, 5 not authorized, 2 client id) and is closed; the
    session handling that follows is amqtt 0.12.1's own
    (Broker._initialize_client_session)."""

    def __init__(self, config: dict, guard: Guard, limits: BrokerLimits | None = None,
                 **kw: Any) -> None:
        super().__init__(config, limits, **kw)
        self.guard = guard

    async def _initialize_client_session(self, reader, writer, remote_address, remote_port):
        handler, client_session = await self._read_connect(reader, writer)
        authorized = await super()._authenticate(client_session, None)
        verdict: Verdict | None = getattr(client_session, "tl_verdict", None)
        if not authorized:
            self.guard.release(verdict)
            code = verdict.code if verdict is not None and verdict.code else NOT_AUTHORIZED
            with contextlib.suppress(Exception):  # the client may be gone already
                await ConnackPacket.build(0, code).to_stream(writer)
                await writer.close()
            reason = verdict.reason if verdict is not None else "refused"
            raise MQTTError(f"CONNECT from {remote_address}:{remote_port} refused: {reason}")
        try:
            client_session = await self._resolve_session(client_session)
        except BaseException:
            self.guard.release(verdict)
            raise
        client_session.tl_preauth = True  # _handle_client_session's own check passes
        handler.tl_verdict = verdict
        return handler, client_session

    async def _authenticate(self, session, listener) -> bool:
        if getattr(session, "tl_preauth", False):
            session.tl_preauth = False
            return True
        return await super()._authenticate(session, listener)

    def _session_ended(self, handler) -> None:
        super()._session_ended(handler)
        self.guard.release(getattr(handler, "tl_verdict", None))


AccessFactory = Callable[[], Any]  # () -> gateway.identity.access.Access


@dataclass
class EmbeddedBroker:
    """amqtt running in the caller's asyncio loop; enforcing when `access` is given."""

    host: str = "127.0.0.1"
    port: int = 1883
    access: AccessFactory | None = None
    domain: str | None = None
    authority: bytes | Callable[[], bytes | None] | None = None  # the gateway's login key
    guard: Guard | None = field(default=None, repr=False)
    limits: BrokerLimits = field(default_factory=BrokerLimits)
    _broker: BoundedBroker | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.access is not None and self.guard is None:
            if not self.domain:
                raise ValueError("an enforcing broker needs the domain name")
            self.guard = Guard(self.domain, self.access, self.authority)

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    @property
    def enforcing(self) -> bool:
        return self.guard is not None

    @property
    def connections(self) -> int:
        """Client connections open now (0 when not running): the gateway's
        broker connections gauge (docs/API.md, "Metrics")."""
        return self._broker.open_connections if self._broker is not None else 0

    async def start(self) -> None:
        for name in ("amqtt", "transitions"):
            logging.getLogger(name).setLevel(logging.WARNING)
        config = amqtt_config(self.host, self.port, self.guard)
        if self.guard is not None:
            self._broker = GuardedBroker(config, self.guard, self.limits)
        else:
            self._broker = RetainSafeBroker(config, self.limits)
        await self._broker.start()

    async def stop(self) -> None:
        if self._broker is not None:
            # amqtt's shutdown closes every session first; the wills that fires
            # are queued for subscribers already gone and counted as "N
            # messages not broadcasted": nothing is lost, so not a warning
            log = logging.getLogger("amqtt.broker")
            level = log.level
            log.setLevel(logging.ERROR)
            try:
                await self._broker.shutdown()
            finally:
                log.setLevel(level)
            self._broker = None


class ThreadedBroker:
    """An EmbeddedBroker with its own event loop in a background thread
    (tests and tools that are not asyncio themselves). Keyword arguments go
    to EmbeddedBroker (access, domain, authority, limits)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 1883, **kw: Any) -> None:
        self.broker = EmbeddedBroker(host, port, **kw)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return self.broker.url

    def start(self, timeout: float = 10.0) -> None:
        ready = threading.Event()
        errors: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self.broker.start())
            except BaseException as e:  # reported to the starting thread
                errors.append(e)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self.broker.stop())
            loop.close()

        self._thread = threading.Thread(target=run, name="amqtt", daemon=True)
        self._thread.start()
        if not ready.wait(timeout):
            raise TimeoutError("embedded broker did not start")
        if errors:
            raise errors[0]

    def call(self, fn: Callable[[BoundedBroker], Any], timeout: float = 10.0) -> Any:
        """fn(the running amqtt broker) in the broker's own loop thread; its result."""
        async def run() -> Any:
            assert self.broker._broker is not None, "broker not started"
            return fn(self.broker._broker)

        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(timeout)

    def stop(self, timeout: float = 10.0) -> None:
        if self._loop and self._thread:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout)
            self._thread = None
