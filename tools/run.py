"""`thingledger run` (and `make run`): the whole system on one machine.

ESPHome-style chain, each step stopping the run on failure:
  1. compile   the firmware with mpy-cross (tools/build.py)
  2. provision a flash folder per virtual board (config.json; wallet on first boot)
  3. start     the embedded amqtt broker (unless --broker), the gateway, and the
               boards: real firmware under `micropython -X heapsize=64k`
               (market boards: tools/vboard.MARKET_HEAP)
  4. serve     the web dashboard (gateway/web/, http://127.0.0.1:8080/ unless
               --http / --no-http / the config file's http), in this event loop
  5. show      what happens, as it happens, until Ctrl-C (or --seconds)

Trust (docs/TRUST.md): a chain made here keeps trust levels; the gateway
shows each change of level. With --liars N (`make run` starts one), N more
boards equivocate (firmware/liar.py): the gateway files the proof and the
chain bans them, live.

The market (docs/MARKET.md), with the virtual boards unless --no-market: the gateway
deploys the agreement contract with an operator fee, grants each newly
registered board some value from its genesis supply, and sells a rolling
mean of the temperature it buys (edge analytics); the first boards take the
roles in MARKET_ROLES: two temperature suppliers at different prices and
places, a buyer that wants the nearest one, and a buyer of the gateway's
derived mean. Further boards send plain readings.
Ctrl-C stops the boards, commits what the gateway holds, and closes the store:
the chain on disk stays whole and the next run continues it. A run killed
outright (SIGKILL, a power cut) takes its boards with it (tools/vboard.py,
die_with_parent), and a run refuses to start while a board process of another
run still holds one of its flash folders (vboard.FlashLock)."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from gateway import broker as broker_auth
from gateway.broker.embedded import DEFAULT_URL, EmbeddedBroker, parse_url
from gateway.db import genesis_files as genesis
from gateway.db.store import StoreError
from gateway.errors import ConfigError
from gateway.market.node.analytics import DerivedService
from gateway.node import config as gateway_config
from gateway.node.config import DEFAULT_RATE_LIMIT_TPS, GatewayConfig
from gateway.node.service import Gateway
from gateway.node.sysclients import SysClients
from tools.build import BuildError, build
from tools.console import Console
from tools.vboard import (
    FlashInUse,
    FlashLock,
    VirtualBoard,
    run_board,
    terminate_all,
)

if TYPE_CHECKING:
    from gateway.web.app import WebServer


class RunError(RuntimeError):
    pass


# the virtual boards' market roles, in board order (vboard.configure offer= / need=)
MARKET_ROLES: list[dict[str, dict]] = [
    {"offer": {"service": "temperature", "unit": "cC", "price": 20, "interval_s": 2,
               "location": "u4pruydq", "valid_s": 600, "schema": 1}},
    {"offer": {"service": "temperature", "unit": "cC", "price": 30, "interval_s": 2,
               "location": "u0yjjd6j", "valid_s": 600, "schema": 1}},
    {"need": {"service": "temperature", "max_price": 30, "quantity": 8, "policy": "nearest",
              "wait_s": 120, "location": "u0yjjd"}},
    {"need": {"service": "temperature-mean", "max_price": 25, "quantity": 4,
              "policy": "latest", "wait_s": 120}},
]
MARKET_FEE_BPS = 500
MARKET_GRANT = 2_000
GENESIS_SUPPLY = 1_000_000
DERIVED = DerivedService("temperature-mean", "temperature", window=4, unit="cC", price=20,
                         interval_s=3)


async def run(args: argparse.Namespace, console: Console) -> int:
    data_dir = Path(args.data_dir).resolve()
    boards_dir = Path(args.boards_dir) if args.boards_dir else data_dir.parent / "boards"
    n = 0 if args.no_boards else args.boards
    boards = [VirtualBoard(f"board-{i}", boards_dir / f"board-{i}") for i in range(1, n + 1)]
    if not args.no_boards:  # boards that misbehave on purpose (firmware/liar.py)
        boards += [VirtualBoard(f"liar-{i}", boards_dir / f"liar-{i}")
                   for i in range(1, getattr(args, "liars", 0) + 1)]
    # every board's flash folder is locked before anything starts: while a board
    # process (of another run, or one it left) holds a folder, this run is refused
    locks: list[FlashLock] = []
    try:
        try:
            for vb in boards:
                locks.append(vb.lock())
        except FlashInUse as e:
            raise RunError(f"{e.flash.name}: {e}") from None
        return await _run(args, console, data_dir, boards, locks)
    finally:
        for lock in locks:
            lock.release()  # those not handed over to a board process


async def _run(args: argparse.Namespace, console: Console, data_dir: Path,
               boards: list[VirtualBoard], locks: list[FlashLock]) -> int:
    build_dir = data_dir.parent / "build" / "unix"
    n_boards = len(boards)
    url = args.broker or getattr(args, "listen", None) or DEFAULT_URL
    host, port = parse_url(url)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    if n_boards:
        console.line("run", f"compiling firmware with mpy-cross into {build_dir}")
        try:
            files = build(build_dir, "unix")
        except BuildError as e:
            raise RunError(str(e)) from None
        console.line("run", f"{len(files)} modules compiled")

    # the demo market comes with the virtual boards; a bare gateway (--no-boards)
    # sets nothing up: its admin deploys contracts with `thingledger contract deploy`
    file_cfg: GatewayConfig | None = getattr(args, "config_loaded", None)
    market = n_boards > 0 and not getattr(args, "no_market", False) and file_cfg is None
    roles = MARKET_ROLES[:n_boards] if market else []  # board i+1 takes roles[i]
    cfg = file_cfg or GatewayConfig(
        domain=args.domain, data_dir=data_dir, broker_url=url,
        block_interval_s=args.block_interval,
        rate_limit_tps=DEFAULT_RATE_LIMIT_TPS if args.rate_limit is None else args.rate_limit,
        registry_dir=Path(args.registry_dir) if args.registry_dir else None,
        genesis_supply=GENESIS_SUPPLY if market else 0,
        market_fee_bps=MARKET_FEE_BPS if market else None,
        market_grant=MARKET_GRANT if market else 0,
        derived=(DERIVED,) if market else (),
        ha_discovery=bool(getattr(args, "ha_discovery", False)),
        workers=getattr(args, "workers", None),
        trust=True)  # a new chain keeps trust levels (docs/TRUST.md)
    gw: Gateway | None = None  # the enforcing broker reads the chain through it, lazily
    broker = None
    if args.broker is None:
        broker = embedded_broker(cfg, host, port, lambda: gw)
        try:
            await broker.start()
        except OSError as e:
            raise RunError(f"cannot start the embedded broker on {host}:{port}: {e}; "
                           "is another broker running? use --broker mqtt://host:port") from None
        mode = "enforcing the chain's identities" if broker.enforcing else "anonymous"
        console.line("broker", f"embedded amqtt broker on {url} ({mode})")

    try:
        gw = Gateway(cfg, on_event=lambda line: console.line("gateway", line),
                     log_txs=not getattr(args, "quiet", False))
    except StoreError as e:  # e.g. a state changed outside the node: refuse to start
        if broker is not None:
            await broker.stop()
        raise RunError(f"the gateway refuses to start: {e}") from None
    procs: dict[str, asyncio.subprocess.Process] = {}
    pumps: list[asyncio.Task] = []
    dashboard: WebServer | None = None
    sys_clients: SysClients | None = None
    halt = asyncio.Event()
    try:
        try:
            await gw.start()
        except TimeoutError:
            raise RunError(f"gateway could not connect to the broker at {url}") from None
        if broker is not None:
            gw.metrics.count_broker_connections(lambda: broker.connections)
        elif gw.replica is None:  # an external broker: its $SYS count, where it lets the
            # gateway read it (not NATS: no $SYS topics, and the gateways of a
            # replicated domain share the authority key, so its client id)
            user, password = broker_auth.gateway_credentials(gw.led.authority_priv, cfg.domain)
            sys_clients = SysClients(url, broker_auth.sys_user(user), gw.metrics.on_broker_clients,
                                     loop, username=broker_auth.sys_user(user), password=password)
            sys_clients.start()
        dashboard = await start_dashboard(args, cfg, gw, console)
        authority = gw.led.genesis.authority.hex()
        if roles:
            _warn_if_the_operator_cannot_grant(gw, cfg, len(roles), console)
        release_key = _release_key(data_dir, console) if n_boards else None
        for i, (vb, lock) in enumerate(zip(boards, locks, strict=True), 1):
            role: dict = roles[i - 1] if i <= len(roles) else {}
            if vb.name.startswith("liar-"):
                role = {"equivocate": True}
            vb.configure(domain=args.domain, authority_hex=authority, host=host, port=port,
                         interval_ms=args.interval_ms, sim_start=2000 + 75 * i, **role)
            if release_key is not None:
                vb.pin_keys([release_key], replace=False)  # an update may have rotated it
            pumps.append(asyncio.create_task(run_board(vb, lock, build_dir, procs, console,
                                                        halt)))
        if n_boards:
            console.line("run", f"{n_boards} virtual boards started, {len(roles)} in the market "
                         "(Ctrl-C to stop)")
        waits = [asyncio.create_task(stop.wait()), asyncio.create_task(gw.dead.wait())]
        await asyncio.wait(waits, timeout=args.seconds, return_when=asyncio.FIRST_COMPLETED)
        for w in waits:
            w.cancel()
        console.line("run", "stopping" if gw.failed is None
                     else f"stopping: the gateway failed: {gw.failed}")
    finally:
        halt.set()  # no board is powered on again from here
        await terminate_all(procs.values())
        await asyncio.gather(*pumps, return_exceptions=True)
        if dashboard is not None:
            await dashboard.stop()
        if sys_clients is not None:
            sys_clients.stop()
        await gw.stop()
        h = gw.led.head
        console.line("gateway", f"stopped at height {h.height} hash {h.hash.hex()[:16]}; "
                     f"{gw.counters.committed} txs committed, {gw.counters.rejected} rejected "
                     "this run")
        if broker is not None:
            await broker.stop()
    return 1 if gw.failed is not None else 0


async def start_dashboard(args: argparse.Namespace, cfg: GatewayConfig, gw: Gateway,
                          console: Console) -> WebServer | None:
    """The web dashboard on --http (else the config's http), unless --no-http.
    A port it cannot bind is said and the gateway runs on without it."""
    if getattr(args, "no_http", False):
        return None
    listen = getattr(args, "http", None) or cfg.http
    if not listen:
        return None
    # imported only when served: a gateway without a dashboard does not load aiohttp
    from gateway.web.app import WebServer, parse_listen

    try:
        host, port = parse_listen(listen)
    except ValueError as e:
        raise RunError(f"--http: {e}") from None
    server = WebServer(gw, host, port)
    try:
        await server.start()
    except OSError as e:
        console.line("web", f"warning: no dashboard: cannot listen on {listen}: {e.strerror}; "
                     "choose another with --http HOST:PORT")
        return None
    console.line("web", f"dashboard {server.url} (read-only; Prometheus metrics at "
                 f"{server.url}metrics)")
    return server


RELEASE_KEY = "firmware.key"  # beside the data dir: the demo's firmware release key


def _release_key(data_dir: Path, console: Console) -> bytes:
    """The public key the virtual boards pin for firmware releases
    (docs/OTA.md): var/firmware.key, made on the first run (0600). Sign and
    publish an update with it while the run goes on (README)."""
    from tools.keys import load_key, new_key

    path = data_dir.parent / RELEASE_KEY
    if not path.exists():
        key = new_key(path)
        console.line("run", f"new firmware release key {path} (the boards pin it)")
        return key.public
    return load_key(path).public


def _warn_if_the_operator_cannot_grant(gw: Gateway, cfg: GatewayConfig, boards: int,
                                       console: Console) -> None:
    """A chain made without the market's genesis supply (by an older version,
    or by `--no-market`) leaves the operator nothing to grant the market
    boards: buyers never buy. Say so once, and how to start afresh."""
    me = gw.led.state.get(gw.led.genesis.authority_id)
    held = me.balance if me is not None else 0
    if held < MARKET_GRANT * boards:
        console.line("run", f"warning: the operator holds {held}, too little to grant the "
                     f"market boards {MARKET_GRANT} each (this chain was made without the "
                     f"market's supply): buyers cannot buy. For a fresh demo chain, stop "
                     f"and remove {cfg.data_dir}")


def embedded_broker(cfg: GatewayConfig, host: str, port: int,
                    gateway: Callable[[], Gateway | None]) -> EmbeddedBroker:
    """The embedded broker for this domain: anonymous for open domains; for
    claimed ones enforcing the chain's identities (docs/IDENTITY.md §3), read
    from the gateway's committed state once `gateway()` returns it (until
    then logins are refused with CONNACK 3)."""
    if not broker_auth.enforced(_admission(cfg)):
        return EmbeddedBroker(host, port)
    return EmbeddedBroker(
        host, port, domain=cfg.domain,
        access=broker_auth.chain_access(cfg.domain, lambda: gateway().led.state,
                                        lambda: gateway().led.head.hash),
        authority=lambda: gateway().led.genesis.authority)


def _admission(cfg: GatewayConfig) -> str:
    """The domain's genesis admission ("open" if the gateway will create it)."""
    try:
        return genesis.load(cfg.genesis_file).admission
    except (OSError, genesis.GenesisError):
        return "open"


# options a config file replaces (`--config`): given with it, they are refused
CONFIG_REPLACES = ("broker", "listen", "rate_limit", "registry_dir", "workers")


def apply_config_file(args: argparse.Namespace) -> GatewayConfig:
    """`--config FILE`: the gateway's settings from a TOML file
    (gateway/node/config.py). The file's domain, data_dir, block interval and
    broker_url replace --domain, --data-dir and --block-interval, and the
    broker is the file's (external: no embedded broker is started); the
    demo market is not set up. Raises RunError for an unreadable or invalid
    file, or an option the file replaces."""
    given = [o for o in CONFIG_REPLACES if getattr(args, o, None) is not None]
    if given:
        raise RunError("--config cannot be combined with "
                       + ", ".join("--" + o.replace("_", "-") for o in given)
                       + ": set them in the config file")
    try:
        cfg = gateway_config.load(args.config)
    except ConfigError as e:
        raise RunError(f"config {args.config}: {e}") from None
    args.domain = cfg.domain
    args.data_dir = str(cfg.data_dir)
    args.block_interval = cfg.block_interval_s
    args.broker = cfg.broker_url
    args.config_loaded = cfg
    return cfg


def main(args: argparse.Namespace) -> int:
    # a service (--config) logs to stderr, which journald keeps one entry a line
    service = getattr(args, "config", None) is not None
    console = Console(sys.stderr if service else sys.stdout)
    try:
        if service:
            apply_config_file(args)
        return asyncio.run(run(args, console))
    except RunError as e:
        console.line("run", f"error: {e}")
        return 1
