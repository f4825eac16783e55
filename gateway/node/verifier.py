"""Parallel validation: stateless checks and signatures in worker processes.

The gateway hands each batch of transaction payloads it receives in one
`MqttLink.receive()` to a process pool (`Verifier.check`); the workers run
what needs no state, per payload:
- `validate.check_stateless` (size, CBOR, COSE, payload and body schema,
  domain), and on failure the typed error itself (same class, reason code
  and detail as the inline path raises);
- the signature, under the key the gateway's state (plus the mempool's
  pending registrations) held for the message's kid when the batch was handed
  over (`validate.signing_key` with that key: a register is checked under
  the key it carries, a node introducing itself under its key 4). An
  unknown sender is not checked: the gateway decides inline.
The gateway then runs the stateful part (rate limit, trust, mempool
admission, precheck) in arrival order, in its own process, exactly as
without workers: one deterministic block producer. The mempool skips the
signature check only for a tx verified under the very key the state holds
for its sender at admission (`validate.check_stateful`'s `checked`); a key
rotated between hand-off and admission is checked inline again.

A worker that dies (killed, out of memory) breaks the pool: the payloads of
its batch come back as None and the gateway checks them inline, and the next
batch starts new workers. Nothing is lost or accepted twice: the messages
stay in the gateway's order either way.

Small batches stay inline (`min_batch`): below ~8 payloads the hand-off
(pickling both ways, the pool's wake-ups) costs the gateway's process more
CPU than the checks themselves; from 16 on it saves it half or more
(`python -m bench.verifier`, bench/README.md "Parallel validation").
Workers start with "spawn", never "fork": the gateway process has threads
(paho's, the store's writer) whose locks a forked child could inherit held.
A spawned worker imports the program's main module again (as multiprocessing
does), so a program that runs a Gateway needs the usual
`if __name__ == "__main__":` guard (the `thingledger` command has it).

The pool is the standard library's ProcessPoolExecutor, as in
gateway/db/verify.py (`chain verify`), which checks stored signatures the
same way.
"""

from __future__ import annotations

import asyncio
import ctypes
import multiprocessing
import os
import signal
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from gateway.ledger.validate import SigCheck, check_stateless, signing_key
from shared import errors
from shared import tx as txm

MIN_BATCH = 16  # payloads; fewer are checked inline (see the module doc)

# The canonical COSE_Sign1 head of a transaction: tag 18, array(4), a 21-byte
# protected header {1: -7, 4: h'<16-byte kid>'}; the kid follows it. Any other
# head (non-canonical, another kid size) is handed over without a key.
_HEAD = b"\xd2\x84\x55\xa2\x01\x26\x04\x50"
_KID = slice(len(_HEAD), len(_HEAD) + txm.ID_LEN)

# What a worker returns per payload: (tx, error, key)
#   (None, error, None)   check_stateless refused it
#   (tx, None, key)       stateless ok, signature verified under key
#   (tx, error, key)      stateless ok, the signature does not verify under key
#   (tx, None, None)      stateless ok, signature not checked (sender unknown)
# An error travels as (class, args, attributes) and is rebuilt with the same
# class, message, reason and detail.
_Packed = tuple[type, tuple, dict[str, Any]]
_Result = tuple["txm.Tx | None", "_Packed | None", "bytes | None"]


class Checked:
    """A worker's verdict on one payload (see `Verifier.check`)."""

    __slots__ = ("tx", "error", "key")

    def __init__(self, tx: txm.Tx | None, error: errors.TLError | None,
                 key: bytes | None) -> None:
        self.tx = tx
        self.error = error
        self.key = key

    def stateless(self) -> txm.Tx:
        """The tx check_stateless returned, or the error it raised."""
        if self.tx is None:
            assert self.error is not None
            raise self.error
        return self.tx

    @property
    def signature(self) -> SigCheck | None:
        """(key, error or None) for check_stateful; None: not checked."""
        return None if self.key is None else (self.key, self.error)


class _HandedKey:
    """The one-entry state view a worker gives validate.signing_key."""

    __slots__ = ("sender", "pubkey")

    def __init__(self, sender: bytes, pubkey: bytes | None) -> None:
        self.sender = sender
        self.pubkey = pubkey

    def get(self, device_id: bytes) -> _HandedKey | None:
        return self if self.pubkey is not None and device_id == self.sender else None


def kid_of(payload: bytes) -> bytes | None:
    """The kid of a canonically encoded transaction, read without decoding."""
    return payload[_KID] if payload[:len(_HEAD)] == _HEAD else None


def _pack(e: errors.TLError) -> _Packed:
    return type(e), e.args, dict(e.__dict__)


def _unpack(p: _Packed) -> errors.TLError:
    cls, args, attrs = p
    e = cls.__new__(cls, *args)
    e.args = args
    e.__dict__.update(attrs)
    return e


def verdicts(results: list[_Result]) -> list[Checked]:
    """check_batch's results (as they arrive from a worker) as Checked verdicts."""
    return [Checked(t, None if e is None else _unpack(e), k) for t, e, k in results]


def check_batch(domain: str, jobs: list[tuple[bytes, bytes | None]]
                ) -> tuple[int, list[_Result]]:
    """A worker's task: each (payload, key handed over) -> (tx, error, key).
    Returns (this process's id, the results in order)."""
    out: list[_Result] = []
    for message, key in jobs:
        try:
            t = check_stateless(message, domain)
        except errors.TLError as e:
            out.append((None, _pack(e), None))
            continue
        try:
            k = signing_key(t, _HandedKey(t.sender, key))
        except errors.TLError:  # unknown at hand-off: the gateway looks again
            out.append((t, None, None))
            continue
        try:
            t.verify(k)
        except errors.TLError as e:
            out.append((t, _pack(e), k))
            continue
        out.append((t, None, k))
    return os.getpid(), out


def _ready() -> int:
    return os.getpid()


PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _die_with(parent: int) -> None:
    """A worker's initializer: Ctrl-C is the gateway's to handle (it stops
    the pool), and the kernel kills the worker when the gateway's thread that
    started it dies, however it dies (PR_SET_PDEATHSIG), so a SIGKILLed
    gateway leaves no worker behind (a worker holds both ends of its task
    queue and would otherwise wait on it forever). Without prctl (not Linux)
    a worker outlives a killed gateway."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return
    prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # gone already
        os._exit(1)


def default_workers(cpus: int | None = None) -> int:
    """Worker processes when the config does not say: all cores but two
    (the gateway's own process and the broker beside it), at most 4: none
    on 1 or 2 cores, 1 on 3, 2 on a Raspberry Pi 4. On 2 cores one worker
    raised the burst throughput ~20% (bench/README.md, "Parallel
    validation") but takes ~40 MB and a process start per gateway, and the
    broker has no core of its own: there `workers = 1` is the operator's
    choice."""
    n = cpus if cpus is not None else (os.cpu_count() or 1)
    return min(max(n - 2, 0), 4)


Task = Callable[[str, list[tuple[bytes, bytes | None]]], tuple[int, list[_Result]]]


class Verifier:
    """A pool of `workers` processes checking batches of payloads (module doc).
    `min_batch` default MIN_BATCH; `task` the worker function (default
    check_batch; a module-level function, workers import it by name)."""

    def __init__(self, workers: int, domain: str, min_batch: int | None = None,
                 task: Task | None = None, on_event: Callable[[str], None] | None = None
                 ) -> None:
        if workers < 1:
            raise ValueError("workers must be >= 1")
        self.workers = workers
        self.domain = domain
        self.min_batch = max(1, MIN_BATCH if min_batch is None else min_batch)
        self.task = task or check_batch
        self.on_event = on_event or (lambda line: None)
        self.pids: set[int] = set()  # worker processes of the pool seen answering
        self.batches = 0  # batches (chunks) checked by workers
        self.checked = 0  # payloads checked by workers
        self.redone = 0  # payloads checked inline again after a worker died
        self._pool: ProcessPoolExecutor | None = None

    def _new_pool(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_die_with, initargs=(os.getpid(),))

    async def start(self) -> None:
        """Start the worker processes and wait until each has answered once
        (a spawned worker imports the gateway: ~0.3 s, paid here, not by
        the first batch). Workers that cannot start leave every check
        inline (reported through on_event): the node runs without them."""
        self._pool = self._new_pool()
        try:
            futs = [asyncio.wrap_future(self._pool.submit(_ready)) for _ in range(self.workers)]
            self.pids.update(await asyncio.gather(*futs))
        except (BrokenProcessPool, OSError) as e:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
            self.on_event(f"validation workers could not start ({e!r}): every check inline")

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    async def check(self, payloads: list[bytes],
                    key_of: Callable[[bytes], bytes | None]) -> list[Checked | None]:
        """Per payload its Checked verdict, or None: check it inline (a batch
        below min_batch, no pool, or a worker that died). `key_of(kid)` is
        the key the state holds for a sender now (None: unknown)."""
        f = self.begin(payloads, key_of)
        return [None] * len(payloads) if f is None else await f

    def begin(self, payloads: list[bytes], key_of: Callable[[bytes], bytes | None]
              ) -> asyncio.Future[list[Checked | None]] | None:
        """check(), the batch handed to the workers now: the future of its
        verdicts, or None when the whole batch is for the inline check."""
        n = len(payloads)
        if n < self.min_batch or self._pool is None:
            return None
        jobs = []
        for p in payloads:
            kid = kid_of(p)
            jobs.append((p, None if kid is None else key_of(kid)))
        size = -(-n // self.workers)
        chunks = [jobs[i:i + size] for i in range(0, n, size)]
        pool = self._pool
        futs: list[Future | BaseException] = []
        for c in chunks:
            try:
                futs.append(pool.submit(self.task, self.domain, c))
            except BrokenProcessPool as e:
                futs.append(e)
        return asyncio.ensure_future(self._collect(pool, chunks, futs))

    async def _collect(self, pool: ProcessPoolExecutor, chunks: list[list],
                       futs: list[Future | BaseException]) -> list[Checked | None]:
        done = await asyncio.gather(*(asyncio.wrap_future(f) for f in futs
                                      if not isinstance(f, BaseException)),
                                    return_exceptions=True)
        results = iter(done)
        out: list[Checked | None] = []
        broken = False
        for c, f in zip(chunks, futs, strict=True):
            r = f if isinstance(f, BaseException) else next(results)
            if isinstance(r, BaseException):
                # a dead worker (BrokenProcessPool) or a failure the inline
                # check will raise itself: these payloads go inline
                broken = broken or isinstance(r, BrokenProcessPool)
                self.redone += len(c)
                out.extend([None] * len(c))
                continue
            pid, checked = r
            self.pids.add(pid)
            self.batches += 1
            self.checked += len(checked)
            out.extend(verdicts(checked))
        if broken and self._pool is pool:
            self._restart(pool)
        return out

    def _restart(self, pool: ProcessPoolExecutor) -> None:
        """A worker process died: the pool is unusable; a new one takes the
        next batch (its workers spawn on that batch's submit)."""
        self.on_event(f"a validation worker process died: its batch was checked inline; "
                      f"starting {self.workers} new worker(s)")
        pool.shutdown(wait=False, cancel_futures=True)
        self.pids = set()
        self._pool = self._new_pool()
