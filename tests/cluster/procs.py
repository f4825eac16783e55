"""Gateways of a quorum domain as separate processes (`thingledger run
--config <gw>/gateway.toml`, as `thingledger run --gateways 3` starts them),
so a test can SIGKILL one; a load generator putting transactions into the
domain's intake; a receipt listener checking every receipt against the
validator set; readers of the gateways' stores (read-only, also while they run).
"""

from __future__ import annotations

import asyncio
import re
import signal
from collections.abc import Callable
from pathlib import Path

import nats.errors

from gateway.cluster import link
from gateway.cluster.intake import TxIntake
from gateway.db.store import Store
from gateway.ledger import consensus
from gateway.node.config import DB_FILE
from shared import errors, messages
from shared import tx as txm
from tests.cluster.quorum import DOMAIN, VALIDATORS
from tests.support.gwtest import Device
from tools.build import tool
from tools.run_cluster import write_gateway_config

FINAL = re.compile(r"final height=(\d+) votes=(\d+)/(\d+)")


class GatewayProc:
    """One gateway process; its console lines kept, its highest final height tracked."""

    def __init__(self, data_dir: Path, i: int, nats, interval: float = 0.2) -> None:
        self.name = f"gw{i + 1}"
        self.data_dir = data_dir
        self.toml = write_gateway_config(data_dir, i, DOMAIN, nats, interval)
        self.lines: list[str] = []
        self.final_height = 0
        self.changed = asyncio.Event()
        self.proc: asyncio.subprocess.Process | None = None
        self._pump: asyncio.Task | None = None

    async def start(self) -> GatewayProc:
        self.final_height = 0  # of this run
        self.lines.append(f"<start {self.name}>")
        self.proc = await asyncio.create_subprocess_exec(
            tool("thingledger"), "run", "--config", str(self.toml), "--no-boards", "--no-http",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        self._pump = asyncio.create_task(self._read())
        n = len(self.lines)
        await until(lambda: any("following the log from" in x for x in self.lines[n:]),
                    [self], 60, f"{self.name} following the log")
        return self

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        async for raw in self.proc.stdout:
            line = raw.decode(errors="replace").rstrip()
            self.lines.append(line)
            m = FINAL.search(line)
            if m:
                self.final_height = max(self.final_height, int(m.group(1)))
            self.changed.set()
            self.changed.clear()
        self.lines.append("<exit>")
        self.changed.set()

    def tail(self, n: int = 12) -> str:
        return f"{self.name}:\n  " + "\n  ".join(self.lines[-n:])

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)

    async def stop(self, timeout: float = 30.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), timeout)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        if self._pump is not None:
            await asyncio.gather(self._pump, return_exceptions=True)
        return self.proc.returncode

    def store(self) -> Store:
        return Store(self.data_dir / DB_FILE, readonly=True)

    def chain(self) -> tuple[list[bytes], bytes, bytes, bool]:
        """(the tx ids of the chain in order, head hash, head state root,
        whether the head holds a certificate), read from the store."""
        s = self.store()
        try:
            ids = [t.id for b in s.iter_blocks(1) for t in s.block_txs(b.height)]
            head = s.head()
            return (ids, head.hash, head.fields["state_root"],
                    head.height == 0 or s.certificate(head.height) is not None)
        finally:
            s.close()


async def until(pred: Callable[[], object], gws: list[GatewayProc], timeout: float,
                what: str, poll: float = 0.25) -> None:
    """Wait until pred() holds, woken by any gateway's console line (`poll`
    bounds the wait for a change read elsewhere, a store); AssertionError at
    the timeout with each gateway's last lines."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not pred():
        left = deadline - loop.time()
        if left <= 0:
            raise AssertionError(f"timed out waiting for {what}\n"
                                 + "\n".join(g.tail() for g in gws))
        waits = [asyncio.ensure_future(g.changed.wait()) for g in gws]
        await asyncio.wait(waits, timeout=min(left, poll), return_when=asyncio.FIRST_COMPLETED)
        for w in waits:
            w.cancel()


class Load:
    """Readings from `devices`, round robin, about `rate` per second, put
    into the intake through JetStream (what a device's MQTT publish becomes);
    a publish not acknowledged (a NATS node going away) is sent again, the
    same bytes, until the cluster takes it. `sent`: the ids acknowledged."""

    def __init__(self, nc, devices: list[Device], rate: float) -> None:
        self.intake = TxIntake(nc.jetstream(), DOMAIN, "load")
        self.devices = devices
        self.rate = rate
        self.sent: list[bytes] = []
        self.retried = 0
        self.halt = asyncio.Event()
        self.task: asyncio.Task | None = None

    def start(self) -> Load:
        self.task = asyncio.create_task(self._run())
        return self

    async def _run(self) -> None:
        n = 0
        while not self.halt.is_set():
            d = self.devices[n % len(self.devices)]
            m = d.reading(2000 + n)
            while True:
                try:
                    await self.intake.submit(m, timeout=2.0)
                    break
                except (TimeoutError, nats.errors.Error):
                    self.retried += 1
                    await asyncio.sleep(0.2)  # the cluster elects a new leader meanwhile
            self.sent.append(txm.decode(m).id)
            n += 1
            await asyncio.sleep(1 / self.rate)  # the pace of the load, not a wait

    async def stop(self) -> None:
        self.halt.set()
        if self.task is not None:
            await self.task


class Receipts:
    """Every receipt the gateways publish on tl/<d>/dev/+/rx, checked as a
    board checks it (k valid votes of the set on the header, the Merkle proof):
    `ok` maps tx id -> receipt count; `bad` counts the ones that do not check."""

    def __init__(self, authority: bytes) -> None:
        vs = consensus.ValidatorSet.of([p for _, p in VALIDATORS], 2)
        self.validators = (vs.threshold, list(vs.pubkeys), vs.hash)
        self.authority = authority
        self.ok: dict[bytes, int] = {}
        self.by_device: dict[str, int] = {}
        self.bad = 0
        self.why: list[str] = []  # the reason of each bad one

    async def listen(self, nc) -> None:
        await nc.subscribe(f"tl.{DOMAIN}.dev.*.rx", cb=self._on)

    async def _on(self, msg) -> None:
        try:
            m = messages.parse(msg.data)
            if m[messages.M_KIND] != messages.KIND_RECEIPT:
                return
            messages.check_receipt(m, self.authority, self.validators)
        except errors.TLError as e:
            self.bad += 1
            self.why.append(f"{msg.subject}: {e.reason} {e.detail}")
            return
        tid = bytes(m[messages.M_TX])
        self.ok[tid] = self.ok.get(tid, 0) + 1
        dev = msg.subject.split(".")[-2]
        self.by_device[dev] = self.by_device.get(dev, 0) + 1


ISSUES = "operator: this gateway issues"  # gateway/cluster/issuer.py's line on taking the lease


def issuers(among: list[GatewayProc]) -> list[GatewayProc]:
    """Those of `among` whose last operator line says they issue the
    operator's transactions (hold the lease)."""
    out = []
    for g in among:
        said = [x for x in g.lines if "operator: " in x and "issues" in x]
        if said and ISSUES in said[-1]:
            out.append(g)
    return out


def log_stream() -> str:
    return link.log_stream(DOMAIN)


async def cli(*argv: str, timeout: float = 60.0) -> str:
    """`thingledger ARGV`, its output; AssertionError unless it exits 0."""
    p = await asyncio.create_subprocess_exec(tool("thingledger"), *argv,
                                             stdout=asyncio.subprocess.PIPE,
                                             stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(p.communicate(), timeout)
    text = out.decode()
    assert p.returncode == 0, f"thingledger {' '.join(argv)}:\n{text}"
    return text


async def join_full_nodes(dirs: list[Path], ids: list[str], owner_key: Path,
                          net: list[str]) -> None:
    """Every gateway of `dirs` (node id `ids[i]`, its validator.key) joins as a full
    node certified by the domain owner (`owner_key`), introducing itself over `net`."""
    for i, d in enumerate(dirs):
        cert = (await cli("owner", "certify-node", "--key", str(owner_key),
                          "--node", ids[i], "--data-dir", str(d))).strip()
        out = await cli("node", "join", "--key", str(d / "validator.key"), "--power",
                        "mains", "--ram-kib", str(4 << 20), "--lifetime", "long",
                        "--certificate", cert, "--introduce", *net)
        assert "(ok)" in out, out
