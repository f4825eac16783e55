"""`thingledger` console script (entry point tools.cli:main): the parser made
of every verb group's `register(subparsers, data_parent)`, and `main`.

    thingledger domain|chain|tx|devices ...    tools/cli/chain.py
    thingledger run ...                        tools/cli/run.py
    thingledger registry ...                   tools/cli/registry.py
    thingledger board ...                      tools/cli/board.py
    thingledger key|claim|owner|statement|device|node|nodes|principals ...
                                               tools/cli/identity.py
    thingledger broker ...                     tools/cli/broker.py
    thingledger coordinator ...                tools/cli/coordinator.py
    thingledger market ...                     tools/cli/market.py
    thingledger contract ...                   tools/cli/contract.py
    thingledger firmware ...                   tools/cli/firmware.py
    thingledger doctor ...                     tools/cli/doctor.py
    thingledger trust|report|proof ...         tools/cli/trust.py
    thingledger xdomain|relay ...              tools/cli/xdomain.py

--data-dir defaults to $THINGLEDGER_DATA, else var/gateway (relative to the
current directory).

Exit codes: 0 ok, 1 verification failed / not found, 2 usage error (bad
arguments, no chain in the data dir, unreadable genesis).
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
from collections.abc import Sequence

from tools.cli import (
    board,
    broker,
    chain,
    contract,
    coordinator,
    doctor,
    firmware,
    identity,
    market,
    registry,
    run,
    trust,
    xdomain,
)
from tools.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    UsageError,
    data_parent,
    default_data_dir,
)

# in the order `thingledger --help` lists them
GROUPS = (chain, run, registry, board, identity, broker, coordinator, market, contract,
          firmware, doctor, trust, xdomain)


def build_parser() -> argparse.ArgumentParser:
    data = data_parent()
    p = argparse.ArgumentParser(prog="thingledger",
                                description="ThingLedger: IoT ledger gateway and tools")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in GROUPS:
        group.register(sub, data)
    return p


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
