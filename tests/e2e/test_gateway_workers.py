"""Parallel validation in a running gateway (gateway/node/verifier.py): a
worker process SIGKILLed with a batch in flight loses nothing. The batch is
checked in the gateway's process instead, new workers take the next ones,
and every transaction is committed exactly once, in each sender's seq order,
with PUBACKs only after the commit (the devices get every receipt without
resending; the chain verifies). A SIGKILLed gateway leaves no worker."""

from __future__ import annotations

import contextlib
import os
import select
import signal
import time
from pathlib import Path

import pytest

from gateway.node import verifier
from tests.support.e2e_devices import (
    GatewayProcess,
    GatewayThread,
    SimDevice,
    chain_txs,
    new_domain,
    thingledger,
)
from tests.support.workerhold import HeldBatch, hold_first_batch

N_DEVICES = 3
READINGS = 40


def test_worker_killed_mid_batch_loses_nothing(shipped_mosquitto, tmp_path, monkeypatch):
    broker = shipped_mosquitto
    data = tmp_path / "gw"
    authority = new_domain(data)
    held = HeldBatch(tmp_path, monkeypatch)
    monkeypatch.setattr(verifier, "MIN_BATCH", 1)
    # the pool's task: the first batch is held in its worker until killed
    monkeypatch.setattr(verifier, "check_batch", hold_first_batch)
    gw = GatewayThread(data, broker.url, block_interval=0.2, workers=2).start()
    devices: list[SimDevice] = []
    try:
        devices = [SimDevice(broker.host, broker.port, authority, name=f"w{i}").connect()
                   for i in range(N_DEVICES)]
        for d in devices:  # register and readings at once: seq order matters
            d.submit(d.register_tx())
            for i in range(READINGS // 2):
                d.submit(d.reading_tx(i))
        pid = held.pid()
        os.kill(pid, signal.SIGKILL)
        gw.wait_event("validation worker process died")
        for d in devices:  # more after the crash: new workers take them
            for i in range(READINGS // 2):
                d.submit(d.reading_tx(100 + i))
        for d in devices:
            d.wait_confirmed(30)  # no resends: nothing was lost
        v = gw.gw.verifier
        assert v.redone >= 1 and v.checked >= 1 and pid not in v.pids
        assert gw.running and gw.gw.counters.rejected == 0
        assert gw.gw.counters.committed == N_DEVICES * (1 + READINGS)
    finally:
        for d in devices:
            d.close()
        gw.stop()
        held.close()

    chain = chain_txs(data)
    ids = [t.id for t in chain]
    assert len(ids) == len(set(ids)) == N_DEVICES * (1 + READINGS)
    for d in devices:
        assert not d.bad_replies and not d.rejections and d.resends == 0
        assert set(d.receipts) == set(d.sent)
        seqs = [t.seq for t in chain if t.sender == d.id]
        assert seqs == list(range(1, READINGS + 2))
    verify = thingledger("chain", "verify", "--data-dir", str(data))
    assert verify.returncode == 0, verify.stdout + verify.stderr


def children(pid: int) -> list[int]:
    """Live child processes of `pid` (/proc)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def wait_gone(pids: list[int], timeout: float) -> list[int]:
    """Wait (on pidfds: readable when the process ends) until every one of
    `pids` has ended or `timeout` passes; returns those still alive."""
    fds = {}
    for p in pids:
        with contextlib.suppress(ProcessLookupError):
            fds[os.pidfd_open(p)] = p
    deadline = time.monotonic() + timeout
    try:
        while fds and (left := deadline - time.monotonic()) > 0:
            ready, _, _ = select.select(list(fds), [], [], left)
            for fd in ready:
                os.close(fd)
                del fds[fd]
        return list(fds.values())
    finally:
        for fd in fds:
            os.close(fd)


@pytest.mark.skipif(not hasattr(os, "pidfd_open"), reason="Linux pidfds")
def test_sigkilled_gateway_leaves_no_worker_behind(amqtt_broker, tmp_path):
    """The workers die with the gateway however it dies (PR_SET_PDEATHSIG):
    a SIGKILLed gateway leaves no worker process waiting for tasks."""
    new_domain(tmp_path / "gw")
    gwp = GatewayProcess(tmp_path / "gw", amqtt_broker.url, extra=("--workers", "2"))
    kids: list[int] = []
    left: list[int] = []
    try:
        gwp.start()  # (the workers answer before the gateway connects)
        assert any("2 validation worker processes" in line for line in gwp.lines), gwp.lines
        assert gwp.proc is not None
        kids = children(gwp.proc.pid)
        assert len(kids) >= 2, kids  # the workers (+ multiprocessing's resource tracker)
        gwp.proc.send_signal(signal.SIGKILL)
        gwp.proc.wait(10)
        left = wait_gone(kids, 10)
    finally:
        for pid in left if gwp.proc is not None and gwp.proc.poll() is not None else kids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)  # (they hold the gateway's output pipe)
        gwp.close()
    assert left == [], f"workers alive after the gateway's SIGKILL: {left}"
