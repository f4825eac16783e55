"""`thingledger` console script (entry point tools.cli:main).

    thingledger chain verify [--data-dir D] [--genesis FILE]
    thingledger chain show [--height H] [--last N] [--data-dir D]
    thingledger tx <id-hex or unique prefix> [--data-dir D]
    thingledger devices [--data-dir D]
    thingledger run [--broker URL] [--boards N] [--data-dir D] [--domain NAME]
                    [--block-interval S] [--no-boards] [--no-market]

--data-dir defaults to $THINGLEDGER_DATA, else var/gateway (relative to the
current directory). Readers open the database read-only and work while the
gateway writes. `run` hands over to gateway.service.main(args).

Exit codes: 0 ok, 1 verification failed / not found, 2 usage error (bad
arguments, no chain in the data dir, unreadable genesis).
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
from collections.abc import Sequence
from pathlib import Path

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
ENV_DATA = "THINGLEDGER_DATA"


class UsageError(Exception):
    pass


def default_data_dir() -> Path:
    return Path(os.environ.get(ENV_DATA) or "var/gateway")


def _data_dir(args: argparse.Namespace) -> Path:
    return Path(args.data_dir) if args.data_dir else default_data_dir()


def _open_store(args: argparse.Namespace):  # -> gateway.store.Store
    from gateway.db.store import Store
    from gateway.node.config import DB_FILE

    db = _data_dir(args) / DB_FILE
    if not db.exists():
        raise UsageError("no chain database at %s (use --data-dir or $%s)" % (db, ENV_DATA))
    return Store(db, readonly=True)


def cmd_chain_verify(args: argparse.Namespace) -> int:
    from gateway.db import genesis_files as genesis
    from gateway.db import render as inspect
    from gateway.db import verify as replay
    from gateway.node.config import GENESIS_FILE

    gpath = Path(args.genesis) if args.genesis else _data_dir(args) / GENESIS_FILE
    try:
        g = genesis.load(gpath)
    except genesis.GenesisError as e:
        raise UsageError(str(e)) from None
    from gateway.registry.view import registry_lookup

    registry = registry_lookup(args.registry) if args.registry else None
    with _open_store(args) as store:
        rep = replay.verify_chain(store, g, registry)
    print(inspect.report_text(rep))
    return EXIT_OK if rep.ok else EXIT_FAILED


def cmd_domain_init(args: argparse.Namespace) -> int:
    """Create a domain: a new authority key and genesis file in the data dir."""
    from gateway.db import genesis_files as genesis

    owner = b""
    if args.owner_key:
        from tools.keys import KeyFileError, load_key

        try:
            owner = load_key(Path(args.owner_key)).public
        except KeyFileError as e:
            raise UsageError(str(e)) from None
    elif args.owner_pubkey:
        try:
            owner = bytes.fromhex(args.owner_pubkey)
        except ValueError:
            raise UsageError("--owner-pubkey must be hex") from None
    try:
        gpath, kpath = genesis.create_domain(_data_dir(args), args.domain,
                                             admission=args.admission, owner=owner,
                                             min_fee=args.min_fee)
    except (genesis.GenesisError, FileExistsError, ValueError) as e:
        raise UsageError(str(e)) from None
    from gateway.db.store import open_ledger
    from gateway.node.config import GatewayConfig

    open_ledger(GatewayConfig(domain=args.domain, data_dir=_data_dir(args)),
                create=False).store.close()  # block 0 on disk: broker export works now
    g = genesis.load(gpath)
    print(f"domain {g.domain} created: genesis {gpath}, authority key {kpath} (mode 0600)")
    print(f"authority public key {g.authority.hex()}  admission {g.admission}")
    return EXIT_OK


def cmd_chain_show(args: argparse.Namespace) -> int:
    from gateway.db import render as inspect

    with _open_store(args) as store:
        if args.height is None:
            print(inspect.chain_summary(store, args.last))
            return EXIT_OK
        blk = store.get_block(args.height)
        if blk is None:
            print("no block at height %d" % args.height, file=sys.stderr)
            return EXIT_FAILED
        print(inspect.block_detail(blk, store.block_txs(args.height)))
    return EXIT_OK


def cmd_tx(args: argparse.Namespace) -> int:
    from gateway.db import render as inspect

    text = args.id.strip().lower()
    try:
        prefix = bytes.fromhex(text)
    except ValueError:
        raise UsageError("tx id must be hex, got %r" % args.id) from None
    if not 4 <= len(prefix) <= 32:
        raise UsageError("tx id: give 8 to 64 hex characters")
    with _open_store(args) as store:
        found = store.find_tx(prefix)
        if not found:
            print("tx %s not found" % text, file=sys.stderr)
            return EXIT_FAILED
        if len(found) > 1:
            raise UsageError("tx id prefix %s is ambiguous" % text)
        t = found[0]
        print(inspect.tx_detail(t, store.get_block(t.height)))
    return EXIT_OK


def cmd_devices(args: argparse.Namespace) -> int:
    from gateway.db import render as inspect

    with _open_store(args) as store:
        print(inspect.devices_table(store.devices()))
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    from tools import run

    return run.main(args)


def _positive_int(s: str) -> int:
    v = int(s)
    if v < 0:
        raise argparse.ArgumentTypeError("must be >= 0")
    return v


def _positive_float(s: str) -> float:
    v = float(s)
    if not v > 0:
        raise argparse.ArgumentTypeError("must be > 0")
    return v


def build_parser() -> argparse.ArgumentParser:
    data = argparse.ArgumentParser(add_help=False)
    data.add_argument("--data-dir", metavar="DIR",
                      help="gateway data directory (default $%s or var/gateway)" % ENV_DATA)

    p = argparse.ArgumentParser(prog="thingledger",
                                description="ThingLedger: IoT ledger gateway and tools")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    dom = sub.add_parser("domain", help="create a domain (genesis and authority key)")
    dom_sub = dom.add_subparsers(dest="domain_command", required=True, metavar="ACTION")
    di = dom_sub.add_parser("init", parents=[data], help="new genesis and authority key")
    di.add_argument("--domain", required=True, help="domain name (chain id), [a-z0-9-]")
    di.add_argument("--admission", choices=("open", "closed", "claimed"), default="open",
                    help="open: devices self-register; claimed: only devices the owner claims")
    own = di.add_mutually_exclusive_group()
    own.add_argument("--owner-key", metavar="FILE", help="the owner's key file")
    own.add_argument("--owner-pubkey", metavar="HEX", help="the owner's public key")
    di.add_argument("--min-fee", type=_positive_int, default=0, help="smallest fee (default 0)")
    di.set_defaults(func=cmd_domain_init)

    chain = sub.add_parser("chain", help="inspect and verify the stored chain")
    chain_sub = chain.add_subparsers(dest="chain_command", required=True, metavar="ACTION")
    v = chain_sub.add_parser("verify", parents=[data],
                             help="re-validate every block from genesis")
    v.add_argument("--genesis", metavar="FILE", help="genesis file (default DIR/genesis.toml)")
    v.add_argument("--registry", metavar="DIR", default=os.environ.get("THINGLEDGER_REGISTRY"),
                   help="public registry the domain's claims were checked against")
    v.set_defaults(func=cmd_chain_verify)
    s = chain_sub.add_parser("show", parents=[data], help="show the chain or one block")
    s.add_argument("--height", type=_positive_int, metavar="H", help="show block H in full")
    s.add_argument("--last", type=_positive_int, default=20, metavar="N",
                   help="blocks listed in the summary (default 20)")
    s.set_defaults(func=cmd_chain_show)

    t = sub.add_parser("tx", parents=[data], help="show a transaction and its receipt")
    t.add_argument("id", help="transaction id (hex, or a unique prefix of 8+ chars)")
    t.set_defaults(func=cmd_tx)

    d = sub.add_parser("devices", parents=[data],
                       help="registered devices: id, public key, last seq, balance")
    d.set_defaults(func=cmd_devices)

    r = sub.add_parser("run", parents=[data],
                       help="run the gateway (embedded broker and virtual boards by default)")
    r.add_argument("--quiet", action="store_true",
                   help="no line per transaction (blocks and errors only)")
    r.add_argument("--listen", metavar="URL", default=None,
                   help="address of the embedded broker (default mqtt://127.0.0.1:1883)")
    r.add_argument("--broker", metavar="URL", default=None,
                   help="external broker mqtt://host:port (default: start an embedded one)")
    r.add_argument("--boards", type=_positive_int, default=4, metavar="N",
                   help="virtual boards to start (default 4: the market's roles)")
    r.add_argument("--no-market", action="store_true",
                   help="plain boards only: no offers, demands or market set-up")
    r.add_argument("--no-boards", action="store_true", help="start no virtual boards")
    r.add_argument("--domain", default="demo", help="domain (chain id), default demo")
    r.add_argument("--block-interval", type=_positive_float, default=1.0, metavar="S",
                   help="seconds between blocks (default 1.0)")
    r.add_argument("--rate-limit", type=float, default=None, metavar="TPS",
                   help="per-sender limit, transactions/s (default: GatewayConfig's; 0: none)")
    r.add_argument("--registry-dir", metavar="DIR",
                   default=os.environ.get("THINGLEDGER_REGISTRY"),
                   help="public registry that claims are checked against")
    r.add_argument("--boards-dir", metavar="DIR", default=None,
                   help="flash folders of the virtual boards (default: DATA_DIR/../boards)")
    r.add_argument("--interval-ms", type=_positive_int, default=3000, metavar="MS",
                   help="virtual boards' reading interval (default 3000)")
    r.add_argument("--seconds", type=_positive_float, default=None, metavar="S",
                   help="stop by itself after S seconds (default: run until Ctrl-C)")
    r.set_defaults(func=cmd_run)
    for group in _command_groups():
        group.register(sub, data)
    return p


def _command_groups() -> tuple:
    """Command groups that live in their own modules, each exposing
    register(subparsers, data_parent). Imported here, not at the top: they
    import this module for its exit codes and errors."""
    from tools import (
        cli_board,
        cli_broker,
        cli_coordinator,
        cli_identity,
        cli_market,
        cli_registry,
    )

    return (cli_registry, cli_board, cli_identity, cli_broker, cli_coordinator, cli_market)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.data_dir is None:
        args.data_dir = str(default_data_dir())
    try:
        return args.func(args)
    except UsageError as e:
        print("thingledger: %s" % e, file=sys.stderr)
        return EXIT_USAGE
    except sqlite3.DatabaseError as e:
        print("thingledger: database error: %s" % e, file=sys.stderr)
        return EXIT_FAILED
    except BrokenPipeError:
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
