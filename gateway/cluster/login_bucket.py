"""The devices' broker logins shared through a domain's NATS cluster
(docs/CONSENSUS.md, "Admission on several machines").

NATS checks MQTT logins against the bcrypt hashes of its configuration, so
each machine's `broker export --nats --watch` needs every device's password,
not only those in its own credential store. The logins travel in a JetStream
key-value bucket of the domain, `TL_LOGINS_<domain>` (replicated like the
domain's streams, fsynced on every write by the nodes' `sync_interval:
always`): key = principal id (32 lowercase hex), value = its password (128
lowercase hex, the principal's signature over the credential message). Only
the gateways' NATS user reaches it: no MQTT user has a right under `$KV.` or
`$JS.` (gateway/broker/nats_export.py writes allow lists of `tl.<domain>.`
subjects only).

Nothing read from the bucket is trusted: the watch verifies each login
against the principal's current key on its own chain before it exports it
(gateway/broker/shared_logins.py). The bucket only saves copying files.

SharedLogins runs the bucket's client in a thread of its own (the watch is a
synchronous loop): it connects (again and again until the cluster answers),
creates the bucket if nobody has, follows every change (KV watch) into a
dictionary, and writes the logins the watch asks it to publish."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Sequence

import nats.errors
import nats.js.errors
from nats.js import api
from nats.js.kv import KV_DEL, KV_PURGE

from gateway.cluster import link
from gateway.cluster.log import RETRYABLE, retry

log = logging.getLogger("thingledger.cluster")

MAX_VALUE = 256  # bytes of one value (a password is 128)
MAX_BYTES = 64 << 20  # the bucket's bound: ~200,000 logins
CONNECT_RETRY_S = 1.0  # s before the bucket is opened again after a failure
PUT_RETRY_S = 1.0  # s before a failed write is tried again
FAILED = (*RETRYABLE, nats.errors.Error, OSError)


class SharedLogins:
    """The bucket as a dictionary kept up to date by a thread. `servers`: the
    cluster's client URLs; `login`: the gateways' NATS user and password (the
    domain's authority credential). `entries()` is a snapshot (key -> value as
    stored, malformed ones included: the caller checks them); `version` grows
    on every change seen, and `wake` is set with it."""

    def __init__(self, servers: Sequence[str], domain: str, login: tuple[str, str],
                 replicas: int | None = None, say: Callable[[str], None] | None = None,
                 wake: threading.Event | None = None) -> None:
        if not servers:
            raise ValueError("no NATS server to reach the login bucket on")
        self.servers = list(servers)
        self.domain = domain
        self.bucket = link.logins_bucket(domain)
        self.login = login
        self.replicas = replicas if replicas is not None else min(3, len(self.servers))
        self.say = say or log.info
        self.wake = wake or threading.Event()
        self.loaded = threading.Event()  # the bucket's content has been read once
        self.settled = threading.Event()  # loaded, or every server has failed once
        self.failures = 0  # failed connection attempts
        self.version = 0
        self._lock = threading.Lock()
        self._entries: dict[str, bytes] = {}
        self._wanted: dict[str, str] = {}  # key -> value still to write
        self._stop = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._kick: asyncio.Event | None = None  # publish() asked for a write
        self._halt: asyncio.Event | None = None  # stop() was called
        self._thread: threading.Thread | None = None

    # -- the caller's side (any thread) --------------------------------------
    def start(self) -> SharedLogins:
        self._thread = threading.Thread(target=asyncio.run, args=(self._main(),),
                                        name="login-bucket", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._call(lambda: self._halt)
        if self._thread is not None:
            self._thread.join(timeout)

    def wait_loaded(self, timeout: float) -> bool:
        """Wait (bounded) for the bucket's content; False at once when every
        server has refused or failed a connection (e.g. a first start, before
        any node has this machine's export with the gateways' user)."""
        self.settled.wait(timeout)
        return self.loaded.is_set()

    def entries(self) -> dict[str, bytes]:
        with self._lock:
            return dict(self._entries)

    def publish(self, logins: dict[bytes, str]) -> None:
        """Write these logins into the bucket, in the background (a write that
        fails is tried again every PUT_RETRY_S until it lands or a later
        publish() no longer asks for it)."""
        with self._lock:
            self._wanted = {pid.hex(): pw for pid, pw in logins.items()}
        self._call(lambda: self._kick)

    def flush(self, timeout: float) -> bool:
        """Wait (bounded) until every login asked for has been written."""
        end = time.monotonic() + timeout
        while True:
            with self._lock:
                if not self._wanted:
                    return True
            if time.monotonic() >= end or self._stop.wait(0.05):
                return False

    def _call(self, event: Callable[[], asyncio.Event | None]) -> None:
        loop, ev = self._loop, event()
        if loop is not None and ev is not None:
            with contextlib.suppress(RuntimeError):  # the loop has just closed
                loop.call_soon_threadsafe(ev.set)

    # -- the thread ----------------------------------------------------------
    async def _main(self) -> None:
        self._kick, self._halt = asyncio.Event(), asyncio.Event()
        self._loop = asyncio.get_running_loop()
        while not self._stop.is_set():
            try:
                await self._session()
            except Exception as e:  # noqa: BLE001 - a daemon's helper: say it, start again
                self.say(f"login bucket: {e!r}; connecting again in {CONNECT_RETRY_S:g} s")
            await self._pause(CONNECT_RETRY_S)

    async def _session(self) -> None:
        """Connect, open the bucket, follow it and write into it until stop()
        (or until the follower or the writer fails: raised)."""
        assert self._halt is not None
        nc = await self._connect()
        if nc is None:
            return
        tasks: list[asyncio.Task] = []
        watcher = None
        try:
            kv = await self._ensure(nc.jetstream())
            if kv is None:
                return
            watcher = await kv.watchall()
            tasks = [asyncio.create_task(self._follow(watcher)),
                     asyncio.create_task(self._write(kv))]
            halt = asyncio.create_task(self._halt.wait())
            done, _ = await asyncio.wait([halt, *tasks], return_when=asyncio.FIRST_COMPLETED)
            halt.cancel()
            for t in tasks:
                if t in done and t.exception() is not None:
                    raise t.exception()  # type: ignore[misc]
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            with contextlib.suppress(Exception):
                if watcher is not None:
                    await asyncio.wait_for(watcher.stop(), 2.0)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(nc.close(), 2.0)

    async def _pause(self, seconds: float) -> None:
        """`seconds`, or less if stop() comes first."""
        assert self._halt is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._halt.wait(), seconds)

    def _failed(self, e: Exception) -> None:
        self.failures += 1
        if self.failures == len(self.servers):
            self.say(f"login bucket: no node of the cluster lets this machine in yet ({e!r}); "
                     "trying on")
            self.settled.set()

    async def _connect(self):  # -> nats Client | None (stopped)
        """Connected (the client tries the servers for ever), or None at stop()."""
        assert self._halt is not None
        job = asyncio.ensure_future(link.connect(
            self.servers, name="thingledger-admission", user=self.login[0],
            password=self.login[1], errors=self._failed))
        halt = asyncio.ensure_future(self._halt.wait())
        try:
            await asyncio.wait([job, halt], return_when=asyncio.FIRST_COMPLETED)
        finally:
            halt.cancel()
        if job.done() and job.exception() is None:
            return job.result()
        job.cancel()
        await asyncio.gather(job, return_exceptions=True)
        if job.done() and not job.cancelled() and job.exception() is not None:
            self.say(f"login bucket: {job.exception()!r}")
        return None

    async def _ensure(self, js):  # -> KeyValue | None (stopped)
        async def once():
            try:
                return await js.key_value(self.bucket)
            except nats.js.errors.BucketNotFoundError:
                return await js.create_key_value(
                    bucket=self.bucket, history=1, replicas=self.replicas,
                    storage=api.StorageType.FILE, max_value_size=MAX_VALUE,
                    max_bytes=MAX_BYTES,
                    description=f"broker logins of domain {self.domain}")
        while not self._stop.is_set():
            try:
                return await retry(once, 10.0, "open the login bucket")
            except Exception as e:  # noqa: BLE001 - a cluster still electing: say it, go on
                self.say(f"login bucket: {e!r}; trying again")
                await self._pause(CONNECT_RETRY_S)
        return None

    async def _follow(self, watcher) -> None:
        """The bucket's content into `_entries`: the first read into a fresh
        dictionary (a session started again replaces the last one's view whole,
        keys deleted meanwhile included), then every change as it comes."""
        fresh: dict[str, bytes] | None = {}
        while True:
            e = await watcher.updates(timeout=None)
            if e is None:  # what the bucket held at the start has been delivered
                if fresh is not None:
                    with self._lock:
                        self._entries, fresh = fresh, None
                        n = len(self._entries)
                    self.say(f"login bucket {self.bucket}: {n} logins read, following it")
                self.loaded.set()
                self.settled.set()
                self._changed()
                continue
            if not hasattr(e, "key"):  # the watcher stopped
                return
            with self._lock:
                into = fresh if fresh is not None else self._entries
                if e.operation in (KV_DEL, KV_PURGE):
                    into.pop(e.key, None)
                else:
                    into[e.key] = bytes(e.value or b"")
            if fresh is None:
                self._changed()

    def _changed(self) -> None:
        with self._lock:
            self.version += 1
        self.wake.set()

    async def _write(self, kv) -> None:
        assert self._kick is not None
        while not self.loaded.is_set():  # compare with what the bucket holds, not less
            await asyncio.sleep(0.02)  # (a session started again: loaded already)
        while True:
            with self._lock:
                todo = {k: v for k, v in self._wanted.items()
                        if self._entries.get(k) != v.encode()}
                for k in set(self._wanted) - set(todo):
                    del self._wanted[k]  # there already
            failed = False
            for key, value in todo.items():
                try:
                    await kv.put(key, value.encode())
                except FAILED as e:
                    failed = True
                    self.say(f"login bucket: {key} not written ({e!r}); trying again")
                    continue
                with self._lock:
                    if self._wanted.get(key) == value:
                        del self._wanted[key]
            if failed:
                await self._pause(PUT_RETRY_S)
            else:
                await self._kick.wait()
            self._kick.clear()
