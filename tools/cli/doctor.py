"""`thingledger doctor`: check a machine that runs (or will run) a gateway.

    thingledger doctor [--data-dir DIR] [--broker URL] [--registry DIR]
                       [--min-free-mb MB] [--timeout S]

One line per check (tools/doctor.py): `ok` or `FAIL`, what it saw, and for a
failure what to fix. Exit 0 only when every check passes, 1 otherwise.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from tools.cli.common import (
    DEFAULT_BROKER,
    ENV_REGISTRY,
    EXIT_FAILED,
    EXIT_OK,
    Subparsers,
    data_dir,
    non_negative_int,
    positive_float,
)


def cmd_doctor(args: argparse.Namespace) -> int:
    from tools import doctor

    checks = doctor.run_checks(data_dir(args), args.broker,
                               registry_dir=Path(args.registry) if args.registry else None,
                               min_free=args.min_free_mb * 1024 * 1024, timeout=args.timeout)
    for c in checks:
        print(c.line())
    return EXIT_OK if all(c.ok for c in checks) else EXIT_FAILED


def register(sub: Subparsers, data: argparse.ArgumentParser) -> None:
    from tools.doctor import DEFAULT_MIN_FREE, DEFAULT_TIMEOUT

    d = sub.add_parser("doctor", parents=[data],
                       help="check this machine: broker, data dir, key files, chain, clock, disk")
    d.add_argument("--broker", metavar="URL", default=DEFAULT_BROKER,
                   help="MQTT broker the gateway uses (default %s)" % DEFAULT_BROKER)
    d.add_argument("--registry", metavar="DIR", default=os.environ.get(ENV_REGISTRY),
                   help="public registry the domain's claims were checked against")
    d.add_argument("--min-free-mb", type=non_negative_int,
                   default=DEFAULT_MIN_FREE // (1024 * 1024), metavar="MB",
                   help="disk space the data dir needs free (default %(default)s MiB)")
    d.add_argument("--timeout", type=positive_float, default=DEFAULT_TIMEOUT, metavar="S",
                   help="seconds to wait for the broker's CONNACK (default %(default)s)")
    d.set_defaults(func=cmd_doctor)
