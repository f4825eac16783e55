"""`thingledger run --gateways N`: a quorum domain replicated over NATS
JetStream on one machine (docs/CONSENSUS.md):

  1. domain    on first run: N validator keys, the owner's and the
               coordinator's keys (var/owner.key, var/coordinator.key), a
               quorum genesis (k = a majority, the owner in it, trust on,
               an account per validator to sign its PROOFs with), each
               gateway's folder var/gw<i> with the genesis, the domain key,
               its validator key and gateway.toml; each board's wallet
  2. admission the NATS users and topic rights exported from the chain into
               var/nats/auth.conf (`broker export --nats`, tools/cluster_setup.py):
               the gateways, the coordinator and the boards; nobody anonymous
  3. nats      an N-node NATS cluster with JetStream (tools/nats_cluster.py),
               each node including auth.conf, its MQTT listeners on
               127.0.0.1:1883, 1884, ... (--mqtt-base)
  4. gateways  one process each: `thingledger run --config var/gw<i>/gateway.toml`
               (gateway/cluster/replica.py), gateway i on NATS node i, logged
               in (NATS and MQTT) as the domain's authority
  5. set-up    what the chain does not show yet: the gateways join as full
               nodes (the owner's certificates), the owner deploys the
               market's agreement contract, the coordinator and the
               boards register and join (coordination, light); then the file
               is exported again and every node reloaded (SIGHUP)
  6. watch     a thread re-exports on every new head and SIGHUPs every node
               when the rights changed (tools/broker_sync.py Watch)
  7. coordinator `thingledger coordinator` (tools/coordinator.py) on node 1,
               reading gw1's chain: light nodes to the live full node serving
               the fewest, again when a gateway's last will says offline
  8. boards    the real firmware under micropython, configured with the
               validator set, the threshold and every node's MQTT listener;
               with the market (unless --no-market), the first boards take
               its roles: a temperature supplier, a buyer of the operator's
               derived mean, a temperature buyer (market_roles), and every
               gateway.toml has the operator's fee, grant and derived mean
  9. show      every process's lines (finalised blocks: `final height=..
               votes=k/n`; boards: `receipt-verified`; the coordinator's
               `assign light node ..`) until Ctrl-C or --seconds

Each process writes var/run/<name>.pid while it runs (nats1.., gw1..,
coordinator; the boards' pids are in their flash locks); the NATS nodes,
the gateways and the coordinator get SIGTERM from the kernel if this process
dies (PR_SET_PDEATHSIG). Ctrl-C stops the boards, the coordinator (before
the gateways: it would take a gateway stopping for one gone offline), the
gateways, then the watch and the NATS nodes."""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import signal
import sys
import threading
from dataclasses import asdict
from pathlib import Path

from gateway.db.genesis_files import create_replicated_domain, load_authority_key
from gateway.db.genesis_files import load as load_genesis
from gateway.ledger.consensus import majority
from shared import p256
from tools import cluster_setup as setup
from tools.broker_sync import Watch
from tools.build import BuildError, build
from tools.cluster_setup import COORDINATOR_KEY, OWNER_KEY, ensure_key
from tools.console import Console
from tools.keys import KeyPair, load_key
from tools.nats_cluster import NatsCluster, NatsError
from tools.run import DERIVED, GENESIS_SUPPLY, MARKET_FEE_BPS, MARKET_GRANT, MARKET_ROLES
from tools.submit import validators_of
from tools.vboard import (
    FlashInUse,
    FlashLock,
    VirtualBoard,
    die_with_parent,
    pump_lines,
    run_board,
    terminate_all,
)

DEFAULT_MQTT_BASE = 1883
_STAMPED = re.compile(r"^\d\d:\d\d:\d\d \S+\s+")  # a child's Console prefix


class ClusterRunError(RuntimeError):
    pass


def gateway_dirs(base: Path, n: int) -> list[Path]:
    return [base / f"gw{i}" for i in range(1, n + 1)]


def market_roles(n_boards: int, market: bool) -> list[dict]:
    """The market roles of the first boards (vboard.configure offer= / need=):
    a temperature supplier (the operator buys its stream for the derived
    mean), a buyer of the operator's derived mean, and a buyer of temperature."""
    if not market:
        return []
    return [MARKET_ROLES[0], MARKET_ROLES[3], MARKET_ROLES[2]][:n_boards]


def prepare_domain(base: Path, domain: str, n: int, log,
                   supply: int = GENESIS_SUPPLY) -> list[Path]:
    """The gateways' folders of a quorum domain of `n` validators (made on
    the first run, kept after); the operator (the domain's authority) holds
    `supply` in the genesis, to grant the boards and buy what it derives."""
    dirs = gateway_dirs(base, n)
    if all((d / "genesis.toml").exists() and (d / "validator.key").exists() for d in dirs):
        return dirs
    if any(d.exists() for d in dirs):
        raise ClusterRunError(f"{base}/gw*: an incomplete set of gateway folders; remove them "
                              "to start a new domain")
    keys = [p256.keygen() for _ in dirs]
    owner = ensure_key(base / OWNER_KEY)  # certifies the gateways as full nodes
    # trust on, and each validator an account (balance 0): a gateway that sees a
    # validator's double vote files the PROOF signed with its own validator key
    create_replicated_domain(dirs, domain, [k for k, _ in keys], {p: 0 for _, p in keys},
                             validators=[p for _, p in keys], threshold=majority(n),
                             owner=owner.public, trust=True, authority_balance=supply)
    log(f"quorum domain {domain}: {n} validators, threshold {majority(n)}, trust on, "
        f"in {base}/gw1..gw{n}")
    return dirs


def write_gateway_config(d: Path, i: int, domain: str, nats: NatsCluster,
                         interval: float, market: bool = False) -> Path:
    """Gateway i's gateway.toml; with `market`, the demo market's settings
    (tools/run.py): the operator's fee, the grant to new devices and the
    derived mean, the same on every gateway (one of them issues at a time)."""
    node = nats.nodes[i % len(nats.nodes)]
    text = (f'domain = "{domain}"\ndata_dir = "."\n'
            f'broker_url = "mqtt://{node.host}:{node.mqtt_port}"\n'
            f'cluster = "{",".join(nats.urls)}"\ngateway_name = "gw{i + 1}"\n'
            f'block_interval_s = {interval}\nhttp = ""\nrate_limit_tps = 0\n')
    if market:
        text += (f"market_fee_bps = {MARKET_FEE_BPS}\nmarket_grant = {MARKET_GRANT}\n"
                 "[[derived]]\n" + "".join(f"{k} = {json.dumps(v)}\n"
                                            for k, v in asdict(DERIVED).items()))
    p = d / "gateway.toml"
    p.write_text(text)
    return p


async def _spawn(name: str, cmd: list[str], run_dir: Path, console: Console,
                 procs: dict[str, asyncio.subprocess.Process], pumps: list[asyncio.Task],
                 **kw) -> None:
    proc = await asyncio.create_subprocess_exec(
        *cmd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        preexec_fn=die_with_parent(signal.SIGTERM), **kw)
    (run_dir / f"{name}.pid").write_text(f"{proc.pid}\n")
    procs[name] = proc
    pumps.append(asyncio.create_task(pump_lines(name, proc, console, _STAMPED)))


async def _stop(procs: dict[str, asyncio.subprocess.Process], run_dir: Path,
                timeout: float = 15.0) -> None:
    await terminate_all(procs.values(), timeout)
    for name in procs:
        (run_dir / f"{name}.pid").unlink(missing_ok=True)


async def run(args: argparse.Namespace, console: Console) -> int:
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

    def say(text: str) -> None:
        console.line("run", text)

    # every board's flash is locked before anything is written to it
    locks: list[FlashLock] = []
    try:
        for vb in boards:
            locks.append(vb.lock())
    except FlashInUse as e:
        for lock in locks:
            lock.release()
        raise ClusterRunError(f"{e.flash.name}: {e}") from None
    try:
        return await _run(args, console, say, base, run_dir, boards, locks, stop, halt)
    finally:
        for lock in locks:
            lock.release()  # those not handed over to a board process


async def _run(args: argparse.Namespace, console: Console, say, base: Path, run_dir: Path,
               boards: list[VirtualBoard], locks: list[FlashLock], stop: asyncio.Event,
               halt: asyncio.Event) -> int:
    n = args.gateways
    loop = asyncio.get_running_loop()
    roles = market_roles(len(boards), not getattr(args, "no_market", False))
    dirs = prepare_domain(base, args.domain, n, say)
    g = load_genesis(dirs[0] / "genesis.toml")
    coord = ensure_key(base / COORDINATOR_KEY)
    owner = _owner(base, g)
    op = g.accounts.get(g.authority_id)
    if roles and (op.balance if op is not None else 0) < MARKET_GRANT * len(roles):
        say(f"warning: the operator's genesis balance is too small to grant the market "
            f"boards {MARKET_GRANT} each (a domain made by an older version): buyers "
            f"cannot buy. For a fresh demo domain, stop and remove {base}/gw*")
    wallets = [setup.board_wallet(vb.name, vb.flash) for vb in boards]
    build_dir = base / "build" / "unix"
    if boards:
        say(f"compiling firmware with mpy-cross into {build_dir}")
        try:
            build(build_dir, "unix")
        except BuildError as e:
            raise ClusterRunError(str(e)) from None
    # admission: the chain's users and rights, before any node starts
    admission = setup.Admission(base / "nats" / setup.AUTH_FILE, dirs[0], g,
                                load_authority_key(dirs[0] / "authority.key", g))
    admission.add_login(coord.id, coord)
    for w in wallets:
        admission.add_login(w.id, w.key)
    ex, _ = await loop.run_in_executor(None, admission.export)
    mqtt_base = args.mqtt_base
    nats = NatsCluster(base / "nats", n, mqtt_base=mqtt_base, pid_dir=run_dir,
                       include=admission.path, die_with_parent=True)
    try:
        nats.start()  # in this (the main) thread: the nodes die with it
    except NatsError as e:
        raise ClusterRunError(f"NATS cluster: {e}") from None
    console.line("nats", f"{n} nodes with JetStream: {', '.join(nats.urls)}; MQTT on "
                 + ", ".join(f"127.0.0.1:{x.mqtt_port}" for x in nats.nodes)
                 + f"; users from the chain ({admission.path.name}: {len(ex.users)}), "
                 "no anonymous access")
    procs: dict[str, asyncio.subprocess.Process] = {}
    boards_procs: dict[str, asyncio.subprocess.Process] = {}
    pumps: list[asyncio.Task] = []
    watch_stop = threading.Event()
    watcher: threading.Thread | None = None
    me = [sys.executable, "-m", "tools.cli"]
    url1 = f"mqtt://{nats.nodes[0].host}:{nats.nodes[0].mqtt_port}"
    try:
        for i, d in enumerate(dirs):
            toml = write_gateway_config(d, i, args.domain, nats, args.block_interval,
                                        market=bool(roles))
            await _spawn(f"gw{i + 1}", [*me, "run", "--config", str(toml), "--no-boards",
                                        "--no-http"] + (["--quiet"] if args.quiet else []),
                         run_dir, console, procs, pumps)
        can_assign = await _set_up_chain(say, dirs, g, owner, coord, wallets, admission, nats,
                                         url1, stop, market=bool(roles))
        if stop.is_set():
            console.line("run", "stopping")
            return 0
        digest = admission.digest

        def reload_all() -> str:
            for node in nats.running():
                node.reload()
            return f"reloaded {len(nats.running())} NATS nodes"

        watch = Watch(admission.export, admission.head, reload_all,
                      lambda t: console.line("admission", t), digest=digest)
        watcher = threading.Thread(target=watch.run, args=(watch_stop, 1.0), name="admission",
                                   daemon=True)
        watcher.start()
        await _spawn("coordinator", [*me, "coordinator", "--key", str(base / COORDINATOR_KEY),
                                     "--broker", ",".join(  # node 1 first, then the others
                                         f"mqtt://{x.host}:{x.mqtt_port}" for x in nats.nodes),
                                     "--data-dir", str(dirs[0])],
                     run_dir, console, procs, pumps)
        # the boards power on once the coordinator has given each its gateway, so
        # each is answered by that gateway from its first transaction on
        if can_assign and wallets and not await loop.run_in_executor(
                None, setup.wait_assigned, admission, [w.id for w in wallets]):
            say("warning: the coordinator has not assigned every board within 30 s")
        vs = [p.hex() for p in sorted(g.validators)]
        endpoints = [[x.host, x.mqtt_port] for x in nats.nodes]
        for i, (vb, lock) in enumerate(zip(boards, locks, strict=True), 1):
            host, port = endpoints[(i - 1) % n]
            others = [e for e in endpoints if e != [host, port]]
            vb.configure(domain=args.domain, authority_hex=g.authority.hex(), host=host,
                         port=port, interval_ms=args.interval_ms, sim_start=2000 + 75 * i,
                         validators=vs, threshold=g.threshold, brokers=others,
                         **(roles[i - 1] if i <= len(roles) else {}))
            pumps.append(asyncio.create_task(run_board(vb, lock, build_dir, boards_procs,
                                                    console, halt, args.board_heap)))
        console.line("run", f"{n} gateways (k={g.threshold}), a coordinator and {len(boards)} "
                     f"virtual boards started, {len(roles)} in the market (Ctrl-C to stop)")
        # a gateway that dies leaves the others running: the domain goes on with k of n
        try:
            await asyncio.wait_for(stop.wait(), args.seconds)
        except TimeoutError:
            pass
        console.line("run", "stopping")
    finally:
        halt.set()
        await terminate_all(boards_procs.values())
        # the coordinator first: a gateway stopping before it would look offline to
        # it, and it would reassign light nodes while the other gateways stop
        await _stop({k: p for k, p in procs.items() if k == "coordinator"}, run_dir)
        await _stop({k: p for k, p in procs.items() if k != "coordinator"}, run_dir)
        await asyncio.gather(*pumps, return_exceptions=True)
        watch_stop.set()
        if watcher is not None:
            await loop.run_in_executor(None, watcher.join, 15)
        nats.stop()
    return 0


def _owner(base: Path, g) -> KeyPair | None:
    """The domain owner's key (var/owner.key), if it is this genesis's owner."""
    path = base / OWNER_KEY
    if not g.owner or not path.exists():
        return None
    k = load_key(path)
    return k if k.public == g.owner else None


async def _set_up_chain(say, dirs: list[Path], g, owner, coord: KeyPair,
                        wallets: list[setup.BoardKey], admission: setup.Admission,
                        nats: NatsCluster, url: str, stop: asyncio.Event,
                        market: bool = False) -> bool:
    """The set-up transactions the chain still needs (tools/cluster_setup.py),
    then the admission file exported with them and every node reloaded.
    False if the gateways cannot be full nodes (nothing for the coordinator to
    assign them to); returns early once `stop` is set."""
    loop = asyncio.get_running_loop()
    state = await loop.run_in_executor(None, admission.state)
    domain = g.domain
    first, notes = setup.full_node_joins(state, domain, owner,
                                         [load_key(d / "validator.key") for d in dirs])
    for note in notes:
        say(note)
    if market and owner is not None:  # the owner is the contract admin
        first += setup.agreement_deploy(state, domain, owner, g.authority_id, MARKET_FEE_BPS)
    second: list[setup.SetupTx] = []
    a, b, _ = setup.register_and_join(state, domain, "the coordinator", coord, coord.id,
                                      setup.COORDINATOR_HARDWARE)
    first += a
    second += b
    seqs: dict[Path, int] = {}
    for w in wallets:
        a, b, last = setup.register_and_join(state, domain, w.name, w.key, w.id,
                                             setup.BOARD_HARDWARE, setup.flash_seq(w.flash) + 1)
        first += a
        second += b
        if a or b:
            seqs[w.flash] = last
    if not first and not second:
        return not notes
    say(f"set-up on the chain: {len(first) + len(second)} transactions")

    cancel = threading.Event()  # Ctrl-C while the set-up waits

    def submit(txs: list[setup.SetupTx]) -> dict:
        return setup.submit_many(url, domain, txs, g.authority, admission.gateway_login,
                                 validators_of(g), timeout=90, log=say, cancel=cancel)

    async def both() -> dict:
        replies = await loop.run_in_executor(None, submit, first)
        replies.update(await loop.run_in_executor(None, submit, second))
        return replies
    job = asyncio.ensure_future(both())
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait([job, stopped], return_when=asyncio.FIRST_COMPLETED)
        if not job.done():
            cancel.set()
            await asyncio.gather(job, return_exceptions=True)
            return False
        replies = job.result()
    except setup.SetupError as e:
        raise ClusterRunError(f"set-up: {e}") from None
    finally:
        stopped.cancel()
        for flash, last in seqs.items():  # the boards' next seqs above those used here
            setup.raise_flash_seq(flash, last)
    # a board's own REGISTER (its first transaction) is answered already-registered,
    # which it takes as registered: left to it, its heap after the first receipts
    # is as before (4,864 bytes free, 128 more than with its flag written here)
    top = max((r.height or 0 for r in replies.values()), default=0)
    if not await loop.run_in_executor(None, setup.wait_height, admission, top):
        say(f"warning: {dirs[0].name} has not reached height {top}: the admission watch "
            "exports the new users when it has")
    ex, height = await loop.run_in_executor(None, admission.export)
    await loop.run_in_executor(None, nats.reload)
    say(f"admission at height {height}: {len(ex.users)} NATS users; every node reloaded")
    return not notes


def main(args: argparse.Namespace) -> int:
    console = Console(sys.stdout)
    try:
        return asyncio.run(run(args, console))
    except ClusterRunError as e:
        console.line("run", f"error: {e}")
        return 1
