"""`thingledger run`: the gateway with an embedded broker and virtual boards.

    thingledger run [--broker URL] [--boards N] [--data-dir D] [--domain NAME]
                    [--block-interval S] [--no-boards] [--no-market]
                    [--ha-discovery] [--http HOST:PORT | --no-http] [--workers N]
    thingledger run --config /etc/thingledger/gateway.toml --no-boards   # a service
    thingledger run --gateways 3 [--mqtt-base 1883] [--boards N]        # a quorum domain

With --config the gateway's settings come from the TOML file
(gateway/node/config.py), its broker is the file's broker_url (no embedded
one), and the event lines go to stderr (journald: docs/RASPBERRY_PI.md).

Hands over to the orchestration in tools/run.py (tools.run.main(args)).
"""

from __future__ import annotations

import argparse
import os

from tools.cli.common import (
    ENV_REGISTRY,
    Subparsers,
    UsageError,
    non_negative_int,
    positive_float,
)


def cmd_run(args: argparse.Namespace) -> int:
    if args.gateways > 1:  # a quorum domain on a NATS cluster (docs/CONSENSUS.md)
        from tools import run_cluster

        if args.config or args.broker or args.listen:
            raise UsageError("--gateways runs its own NATS cluster: no --config, --broker "
                             "or --listen")
        return run_cluster.main(args)
    from tools import run

    return run.main(args)


def register(sub: Subparsers, data: argparse.ArgumentParser) -> None:
    """Add `run`; `data` is the parent parser with --data-dir."""
    r = sub.add_parser("run", parents=[data],
                       help="run the gateway (embedded broker and virtual boards by default)")
    r.add_argument("--config", metavar="FILE", default=None,
                   help="gateway settings from a TOML file (gateway/node/config.py): domain, "
                        "data_dir, broker_url (external), ...; lines go to stderr")
    r.add_argument("--quiet", action="store_true",
                   help="no line per transaction (blocks and errors only)")
    r.add_argument("--listen", metavar="URL", default=None,
                   help="address of the embedded broker (default mqtt://127.0.0.1:1883)")
    r.add_argument("--broker", metavar="URL", default=None,
                   help="external broker mqtt://host:port (default: start an embedded one)")
    r.add_argument("--boards", type=non_negative_int, default=4, metavar="N",
                   help="virtual boards to start (default 4: the market's roles)")
    r.add_argument("--no-market", action="store_true",
                   help="plain boards only: no offers, demands or market set-up")
    r.add_argument("--no-boards", action="store_true", help="start no virtual boards")
    r.add_argument("--liars", type=non_negative_int, default=0, metavar="N",
                   help="further virtual boards that equivocate (two readings with one "
                        "seq): banned live by the chain's trust levels (docs/TRUST.md)")
    r.add_argument("--ha-discovery", action="store_true",
                   help="publish Home Assistant MQTT discovery configs and verified values "
                        "(docs/API.md, Home Assistant)")
    r.add_argument("--http", metavar="HOST:PORT", default=None,
                   help="serve the web dashboard there (default 127.0.0.1:8080, or the "
                        "config file's http; port 0: any free port)")
    r.add_argument("--no-http", action="store_true", help="no web dashboard")
    r.add_argument("--domain", default="demo", help="domain (chain id), default demo")
    r.add_argument("--block-interval", type=positive_float, default=1.0, metavar="S",
                   help="seconds between blocks (default 1.0)")
    r.add_argument("--rate-limit", type=float, default=None, metavar="TPS",
                   help="per-sender limit, transactions/s (default: GatewayConfig's; 0: none)")
    r.add_argument("--workers", type=non_negative_int, default=None, metavar="N",
                   help="processes checking received transactions' signatures in parallel "
                        "(0: none; default: cores - 2, 1 to 4, none on 1 core)")
    r.add_argument("--registry-dir", metavar="DIR",
                   default=os.environ.get(ENV_REGISTRY),
                   help="public registry that claims are checked against")
    r.add_argument("--boards-dir", metavar="DIR", default=None,
                   help="flash folders of the virtual boards (default: DATA_DIR/../boards)")
    r.add_argument("--interval-ms", type=non_negative_int, default=3000, metavar="MS",
                   help="virtual boards' reading interval (default 3000)")
    r.add_argument("--seconds", type=positive_float, default=None, metavar="S",
                   help="stop by itself after S seconds (default: run until Ctrl-C)")
    r.add_argument("--gateways", type=non_negative_int, default=1, metavar="N",
                   help="N > 1: a quorum domain of N gateways on an N-node NATS cluster "
                        "with JetStream, its users exported from the chain, and a "
                        "coordinator (docs/CONSENSUS.md); 3 for the demo")
    r.add_argument("--mqtt-base", type=non_negative_int, default=1883, metavar="PORT",
                   help="with --gateways: the NATS nodes' MQTT ports PORT, PORT+1, ... "
                        "(default 1883)")
    r.add_argument("--board-heap", default=None, metavar="SIZE",
                   help="with --gateways: the virtual boards' MicroPython heap (e.g. 64k; "
                        "default: tools/vboard.py's, by role)")
    r.set_defaults(func=cmd_run)
