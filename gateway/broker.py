"""The embedded MQTT broker (amqtt) that `thingledger run` starts by default.

A gateway operator with a real broker (Debian's mosquitto on the Raspberry Pi)
passes `--broker mqtt://host:port` instead; see docs/mosquitto.conf.

Two modes (docs/IDENTITY.md §3):
- anonymous (no `access`): anyone may connect and use any topic. For open
  domains (devices self-register) and `make run`'s demo.
- enforcing (`access` = a provider of the domain's gateway.access.Access, plus
  `domain` and the `authority` public key): CONNECT credentials and topic
  rights are checked against the chain by gateway.broker_auth, in a
  GuardedBroker."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

from amqtt.broker import Broker
from amqtt.contexts import Action
from amqtt.errors import AMQTTError, MQTTError, NoDataError
from amqtt.mqtt.connack import ConnackPacket
from amqtt.mqtt.constants import QOS_1, QOS_2
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler

from gateway.broker_auth import NOT_AUTHORIZED, Guard, Verdict, amqtt_plugins

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


class RetainSafeBroker(Broker):
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
    that moment (tests/test_broker_broadcast.py). Here the walk is over copies,
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
                    running_tasks.append(asyncio.ensure_future(
                        handler.mqtt_publish(topic, broadcast["data"], qos, retain=False)))

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
                await handler.mqtt_publish(retained.topic, retained.data,
                                           min(qos, retained.qos or qos), retain=True)


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

    def __init__(self, config: dict, guard: Guard, **kw: Any) -> None:
        super().__init__(config, **kw)
        self.guard = guard

    async def _initialize_client_session(self, reader, writer, remote_address, remote_port):
        try:
            handler, client_session = await BrokerProtocolHandler.init_from_connect(
                reader, writer, self.plugins_manager)
        except MQTTError as exc:
            await writer.close()
            raise MQTTError(exc) from exc
        except (AMQTTError, NoDataError) as exc:
            raise AMQTTError(exc) from exc

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
            client_session.keep_alive += delay
        return client_session

    async def _authenticate(self, session, listener) -> bool:
        if getattr(session, "tl_preauth", False):
            session.tl_preauth = False
            return True
        return await super()._authenticate(session, listener)

    async def _handle_client_session(self, reader, writer, client_session, handler, server,
                                     listener_name) -> None:
        try:
            await super()._handle_client_session(reader, writer, client_session, handler,
                                                 server, listener_name)
        finally:
            self.guard.release(getattr(handler, "tl_verdict", None))


AccessFactory = Callable[[], Any]  # () -> gateway.access.Access


@dataclass
class EmbeddedBroker:
    """amqtt running in the caller's asyncio loop; enforcing when `access` is given."""

    host: str = "127.0.0.1"
    port: int = 1883
    access: AccessFactory | None = None
    domain: str | None = None
    authority: bytes | Callable[[], bytes | None] | None = None  # the gateway's login key
    guard: Guard | None = field(default=None, repr=False)
    _broker: Broker | None = field(default=None, repr=False)

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

    async def start(self) -> None:
        for name in ("amqtt", "transitions"):
            logging.getLogger(name).setLevel(logging.WARNING)
        config = amqtt_config(self.host, self.port, self.guard)
        if self.guard is not None:
            self._broker = GuardedBroker(config, self.guard)
        else:
            self._broker = RetainSafeBroker(config)
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
    to EmbeddedBroker (access, domain, authority)."""

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

    def stop(self, timeout: float = 10.0) -> None:
        if self._loop and self._thread:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout)
            self._thread = None
