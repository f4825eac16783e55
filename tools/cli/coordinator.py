"""`thingledger coordinator`: run a coordination node (docs/IDENTITY.md §4,
tools/coordinator.py).

    thingledger coordinator --key coord.key [--broker URL ...] [--data-dir D] [--domain D]
                            [--node ID] [--seconds S] [--max-age S] [--stagger S]

It reads the committed chain in --data-dir (read-only), follows the retained
`tl/<d>/dev/+/status` topics, and submits a NODE_ASSIGN for every light node
that has no online full node; one line per assignment. Several --broker (or
one comma-separated list): every node of a NATS cluster, the first that
answers is used, the next one when it dies. Runs until Ctrl-C / SIGTERM (or
--seconds). Exit codes: 0 stopped, 2 cannot start (no chain, no broker, bad
key).
"""

from __future__ import annotations

import argparse
import signal
import sys

from tools.cli.common import (
    DEFAULT_BROKER,
    EXIT_OK,
    EXIT_USAGE,
    Subparsers,
    UsageError,
    load_key_file,
    non_negative_float,
    positive_float,
)


def cmd_coordinator(args: argparse.Namespace) -> int:
    from tools import coordinator as co

    key = load_key_file(args.key)
    node = None
    if args.node:
        try:
            node = bytes.fromhex(args.node)
        except ValueError:
            node = b""
        if len(node) != 16:
            raise UsageError("--node must be a principal id (32 hex chars)")

    def say(line: str) -> None:
        print(line, flush=True)

    brokers = [u.strip() for b in (args.broker or [DEFAULT_BROKER]) for u in b.split(",")
               if u.strip()]
    try:
        c = co.Coordinator(key, brokers, args.data_dir, args.domain, node_id=node,
                           timeout=args.timeout, out=say, max_age=args.max_age or co.MAX_AGE_S,
                           stagger_s=co.STAGGER_S if args.stagger is None else args.stagger)
        c.start()
    except co.CoordinatorError as e:
        print(f"thingledger coordinator: {e}", file=sys.stderr)
        return EXIT_USAGE
    old = {s: signal.signal(s, lambda *_: c.request_stop())
           for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        lights, fulls = c.view()
        say(f"coordinator {c.id.hex()} on {c.broker_url}, domain {c.domain}: "
            f"{len(lights)} light node(s), {len(fulls)} full node(s)")
        c.run(seconds=args.seconds)
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        c.close()
    say(f"coordinator stopped ({len([r for r in c.assignments if r.ok])} assignment(s) "
        "committed)")
    return EXIT_OK


def register(sub: Subparsers, data: argparse.ArgumentParser) -> None:
    """Add this area's subcommands; `data` is the parent parser with --data-dir."""
    c = sub.add_parser("coordinator", parents=[data],
                       help="run a coordination node: assign full nodes to light nodes")
    c.add_argument("--key", required=True, metavar="FILE",
                   help="the coordination node's key file")
    c.add_argument("--broker", metavar="URL", action="append",
                   help="MQTT broker (default %s); repeat it (or separate with commas) "
                        "for every node of a cluster: the next is used when one dies"
                   % DEFAULT_BROKER)
    c.add_argument("--domain", metavar="NAME", help="domain (default: from DIR/genesis.toml)")
    c.add_argument("--node", metavar="ID", help="its principal id (default: id of --key)")
    c.add_argument("--timeout", type=positive_float, default=15.0, metavar="S",
                   help="seconds to wait for each assignment's receipt (default 15)")
    c.add_argument("--max-age", type=positive_float, metavar="S",
                   help="a quorum gateway whose 'online' status was not repeated for S "
                        "seconds is offline (default 25: it repeats it every 5)")
    c.add_argument("--stagger", type=non_negative_float, metavar="S",
                   help="seconds per rank among the coordination nodes before moving a "
                        "light node (default 2)")
    c.add_argument("--seconds", type=positive_float, default=None, metavar="S",
                   help="stop by itself after S seconds (default: until Ctrl-C)")
    c.set_defaults(func=cmd_coordinator)
