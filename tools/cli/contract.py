"""`thingledger contract ...`: deploy, manage and call contracts (docs/MARKET.md).

    thingledger contract list                    deployments (read-only, --data-dir)
    thingledger contract deploy --label L --name N [--version V (newest)] [--params JSON]
    thingledger contract upgrade --address ID --version V
    thingledger contract disable|enable --address ID
    thingledger contract call (--address ID | --label L) --method M [--args JSON]
                              [--value N] [--fuel N]

Transactions take the options of tools/cli/common.py (--key, --broker,
--domain, --authority, --timeout). JSON arguments: strings written "0x<hex>"
travel as byte strings (ids, addresses), everything else as itself; floats
are refused.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from gateway.contracts import runtime as crt
from gateway.contracts.binding import MAX_FUEL, RUNTIME, deployment
from shared import tx as txm
from tools.cli.common import (
    Subparsers,
    UsageError,
    key_parent,
    load_state,
    network_parent,
    non_negative_int,
    parse_id,
    send_tx,
)


def _json(text: str, what: str) -> Any:
    def conv(v: Any) -> Any:
        if isinstance(v, str) and v.startswith("0x"):
            try:
                return bytes.fromhex(v[2:])
            except ValueError:
                raise UsageError("%s: %r is not hex" % (what, v)) from None
        if isinstance(v, float):
            raise UsageError("%s: floats cannot cross the contract boundary" % what)
        if isinstance(v, list):
            return [conv(x) for x in v]
        if isinstance(v, dict):
            return {k: conv(x) for k, x in v.items()}
        return v

    try:
        return conv(json.loads(text))
    except json.JSONDecodeError as e:
        raise UsageError("%s is not JSON: %s" % (what, e)) from None


def _show(v: Any) -> str:
    if isinstance(v, bytes):
        return v.hex()
    if isinstance(v, dict):
        return "{" + ", ".join("%s: %s" % (k, _show(x)) for k, x in v.items()) + "}"
    if isinstance(v, list):
        return "[" + ", ".join(_show(x) for x in v) + "]"
    return str(v)


def cmd_deploy(args: argparse.Namespace) -> int:
    version = args.version or max(RUNTIME.registry.versions(args.name), default=1)
    body: dict[int, Any] = {1: "deploy", 2: args.label, 3: args.name, 4: version}
    if args.params:
        body[5] = _json(args.params, "--params")
    print("address %s" % crt.contract_address(args.label).hex())
    return send_tx(args, "deploy", txm.TYPE_CONTRACT_ADMIN, body)


def cmd_upgrade(args: argparse.Namespace) -> int:
    return send_tx(args, "upgrade", txm.TYPE_CONTRACT_ADMIN,
                   {1: "upgrade", 2: parse_id(args.address, "--address"), 3: args.version})


def cmd_status(args: argparse.Namespace) -> int:
    return send_tx(args, args.op, txm.TYPE_CONTRACT_ADMIN,
                   {1: args.op, 2: parse_id(args.address, "--address")})


def cmd_call(args: argparse.Namespace) -> int:
    addr = (parse_id(args.address, "--address") if args.address
            else crt.contract_address(args.label))
    call_args = _json(args.args, "--args") if args.args else []
    if not isinstance(call_args, list):
        raise UsageError("--args must be a JSON list")
    return send_tx(args, "call %s" % args.method, txm.TYPE_CONTRACT_CALL,
                   {1: addr, 2: args.method, 3: call_args, 4: args.value, 5: args.fuel})


def cmd_contracts(args: argparse.Namespace) -> int:
    st = load_state(args)
    for k, _ in st.kv_range(b"c"):
        d = deployment(st, k[1:])
        assert d is not None
        print("%s  %s %s v%d %s params=%s" % (k[1:].hex(), d["label"], d["name"], d["version"],
                                             d["status"], _show(d["params"])))
    return 0


def register(sub: Subparsers, data: argparse.ArgumentParser) -> None:
    """Add `contract`; `data` is the parent parser with --data-dir."""
    net = network_parent(data)
    key = key_parent()
    pos = non_negative_int

    c = sub.add_parser("contract", help="contracts: deploy, upgrade, disable, call, list")
    cs = c.add_subparsers(dest="contract_command", required=True, metavar="ACTION")
    cs.add_parser("list", parents=[data], help="deployments").set_defaults(func=cmd_contracts)
    p = cs.add_parser("deploy", parents=[net, key], help="deploy (the domain admin)")
    p.add_argument("--label", required=True)
    p.add_argument("--name", required=True, help="registered implementation")
    p.add_argument("--version", type=pos, help="default: the newest registered")
    p.add_argument("--params", metavar="JSON")
    p.set_defaults(func=cmd_deploy)
    p = cs.add_parser("upgrade", parents=[net, key], help="move to a newer version")
    p.add_argument("--address", required=True, metavar="ID")
    p.add_argument("--version", required=True, type=pos)
    p.set_defaults(func=cmd_upgrade)
    for op in ("disable", "enable"):
        p = cs.add_parser(op, parents=[net, key], help="%s a deployment" % op)
        p.add_argument("--address", required=True, metavar="ID")
        p.set_defaults(func=cmd_status, op=op)
    p = cs.add_parser("call", parents=[net, key], help="call a contract method")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--address", metavar="ID")
    g.add_argument("--label", metavar="L")
    p.add_argument("--method", required=True)
    p.add_argument("--args", metavar="JSON", help="a JSON list")
    p.add_argument("--value", type=pos, default=0)
    p.add_argument("--fuel", type=pos, default=50_000, help="at most %d" % MAX_FUEL)
    p.set_defaults(func=cmd_call)
