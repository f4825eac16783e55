"""`thingledger` commands for the service economy (docs/MARKET.md).

Reading the chain (read-only, --data-dir):
    thingledger market offers [--all]            live offers (--all: expired too)
    thingledger market demands                   demands waiting for an offer
    thingledger market agreements [--all]        open agreements (--all: closed too)
    thingledger market record ID                 a supplier's delivery record
    thingledger market check --agreement ID --index N
                                                 a reading held by the gateway,
                                                 checked against the on-chain commitment
Transactions signed with a key file and submitted over MQTT (as in
tools/cli_identity.py: --key, --broker, --domain, --authority, --timeout):
    thingledger market offer --service S --price P [--unit U] [--interval S]
                             [--location GEOHASH] [--valid S] [--schema N]
    thingledger market demand --service S --max-price P --quantity Q
                              [--policy latest|cheapest|trusted|nearest] [--wait S]
                              [--location GEOHASH]
    thingledger market withdraw --service S
    thingledger market close --id ID             an agreement or a waiting demand
    thingledger contract deploy --label L --name N [--version V (newest)] [--params JSON]
    thingledger contract upgrade --address ID --version V
    thingledger contract disable|enable --address ID
    thingledger contract call (--address ID | --label L) --method M [--args JSON]
                              [--value N] [--fuel N]
JSON arguments: strings written "0x<hex>" travel as byte strings (ids,
addresses), everything else as itself; floats are refused.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from gateway.contracts import runtime as crt
from gateway.contracts.binding import MAX_FUEL, RUNTIME, deployment
from gateway.ledger import keys
from gateway.market.ledger import rules as ledger
from gateway.market.ledger.matching import POLICIES, Offer
from shared import cbor
from shared import tx as txm
from tools import cli_identity as ci


def _open(args: argparse.Namespace):  # -> gateway.store.Store
    from tools.cli import _open_store

    return _open_store(args)


def _state(args: argparse.Namespace):  # -> gateway.state.State
    with _open(args) as st:
        return st.load_state()


def _json(text: str, what: str) -> Any:
    def conv(v: Any) -> Any:
        if isinstance(v, str) and v.startswith("0x"):
            try:
                return bytes.fromhex(v[2:])
            except ValueError:
                raise ci._usage("%s: %r is not hex" % (what, v)) from None
        if isinstance(v, float):
            raise ci._usage("%s: floats cannot cross the contract boundary" % what)
        if isinstance(v, list):
            return [conv(x) for x in v]
        if isinstance(v, dict):
            return {k: conv(x) for k, x in v.items()}
        return v

    try:
        return conv(json.loads(text))
    except json.JSONDecodeError as e:
        raise ci._usage("%s is not JSON: %s" % (what, e)) from None


def _show(v: Any) -> str:
    if isinstance(v, bytes):
        return v.hex()
    if isinstance(v, dict):
        return "{" + ", ".join("%s: %s" % (k, _show(x)) for k, x in v.items()) + "}"
    if isinstance(v, list):
        return "[" + ", ".join(_show(x) for x in v) + "]"
    return str(v)


# ---- reading --------------------------------------------------------------------
def cmd_offers(args: argparse.Namespace) -> int:
    now = int(time.time())
    rows = [Offer.from_map(cbor.loads(v)) for _, v in _state(args).kv_range(keys.OFFERS)]
    for o in sorted(rows, key=lambda o: (o.service, o.price, o.supplier)):
        if o.expires <= now and not args.all:
            continue
        print("%s  %-16s price=%d unit=%s interval=%ds location=%s expires=%d%s" % (
            o.supplier.hex(), o.service, o.price, o.unit, o.interval_s, o.location or "-",
            o.expires, "" if o.expires > now else " (expired)"))
    return 0


def cmd_demands(args: argparse.Namespace) -> int:
    for k, v in _state(args).kv_range(keys.DEMANDS):
        d = cbor.loads(v)
        print("%s  buyer=%s %s max_price=%d quantity=%d policy=%s until=%d locked=%d" % (
            k[-16:].hex(), d[ledger.D_BUYER].hex(), d[ledger.D_SERVICE], d[ledger.D_MAX],
            d[ledger.D_QTY], d[ledger.D_POLICY], d[ledger.D_UNTIL], d[ledger.D_LOCKED]))
    return 0


def cmd_agreements(args: argparse.Namespace) -> int:
    for k, v in _state(args).kv_range(ledger.AGREEMENTS):
        a = cbor.loads(v)
        if a["state"] != "open" and not args.all:
            continue
        print("%s  %s %s buyer=%s supplier=%s price=%d quantity=%d committed=%d paid=%d "
              "failed=%d remaining=%d expiry=%d" % (
                  k[-16:].hex(), a["state"], a["service"], a["buyer"].hex(),
                  a["supplier"].hex(), a["price"], a["quantity"], a["next_index"], a["paid"],
                  a["failed"], a["remaining"], a["expiry"]))
    return 0


def cmd_record(args: argparse.Namespace) -> int:
    r = ledger.supplier_record(_state(args), ci._id(args.id, "ID")) or {"paid": 0, "failed": 0}
    print("paid=%d failed=%d (batches)" % (r["paid"], r["failed"]))
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from gateway.market.node.proofs import check_reading
    from gateway.market.node.streams import StreamStore
    from gateway.node.config import STREAMS_FILE
    from tools.cli import EXIT_FAILED, EXIT_OK, _data_dir

    aid = ci._id(args.agreement, "--agreement")
    with _open(args) as st:
        state = st.load_state()
        a = ledger.agreement(state, aid)
        if a is None:
            raise ci._usage("no agreement %s in the chain" % aid.hex())
        key = state.get(a["supplier"]).pubkey
        streams = StreamStore(Path(_data_dir(args)) / STREAMS_FILE)
        try:
            c = check_reading(st, streams, key, aid, args.index)
        finally:
            streams.close()
    if not c.ok:
        print("reading %d: NOT verified (%s)" % (args.index, c.reason))
        return EXIT_FAILED
    m = c.commitment
    assert m is not None
    print("reading %d: value=%de%d verified: signed by the supplier, in batch %d "
          "(readings %d..%d) whose root %s was committed at height %d" % (
              args.index, c.value, c.scale, m.batch, m.first, m.first + m.count - 1,
              m.root.hex()[:16], m.height))
    return EXIT_OK


# ---- transactions -------------------------------------------------------------------
def _send(args: argparse.Namespace, what: str, type_: int, body: dict[int, Any]) -> int:
    kp = ci._key(args.key)
    msg = txm.make(kp.private, kp.id, type_, ci._domain(args), ci._seq(args), 0, body)
    return ci._submit(args, what, msg)


def cmd_offer(args: argparse.Namespace) -> int:
    return _send(args, "offer", txm.TYPE_OFFER, {
        1: args.service, 2: args.unit, 3: args.price, 4: args.interval, 5: args.location,
        6: args.valid, 7: args.schema})


def cmd_demand(args: argparse.Namespace) -> int:
    body = {1: args.service, 2: args.max_price, 3: args.quantity, 4: args.wait,
            5: args.policy}
    if args.location:
        body[6] = args.location
    return _send(args, "demand", txm.TYPE_DEMAND, body)


def cmd_withdraw(args: argparse.Namespace) -> int:
    return _send(args, "withdraw", txm.TYPE_WITHDRAW, {1: args.service})


def cmd_close(args: argparse.Namespace) -> int:
    return _send(args, "close", txm.TYPE_CLOSE, {1: ci._id(args.id, "--id")})


def cmd_deploy(args: argparse.Namespace) -> int:
    version = args.version or max(RUNTIME.registry.versions(args.name), default=1)
    body: dict[int, Any] = {1: "deploy", 2: args.label, 3: args.name, 4: version}
    if args.params:
        body[5] = _json(args.params, "--params")
    print("address %s" % crt.contract_address(args.label).hex())
    return _send(args, "deploy", txm.TYPE_CONTRACT_ADMIN, body)


def cmd_upgrade(args: argparse.Namespace) -> int:
    return _send(args, "upgrade", txm.TYPE_CONTRACT_ADMIN,
                 {1: "upgrade", 2: ci._id(args.address, "--address"), 3: args.version})


def cmd_status(args: argparse.Namespace) -> int:
    return _send(args, args.op, txm.TYPE_CONTRACT_ADMIN,
                 {1: args.op, 2: ci._id(args.address, "--address")})


def cmd_call(args: argparse.Namespace) -> int:
    addr = (ci._id(args.address, "--address") if args.address
            else crt.contract_address(args.label))
    call_args = _json(args.args, "--args") if args.args else []
    if not isinstance(call_args, list):
        raise ci._usage("--args must be a JSON list")
    return _send(args, "call %s" % args.method, txm.TYPE_CONTRACT_CALL,
                 {1: addr, 2: args.method, 3: call_args, 4: args.value, 5: args.fuel})


def cmd_contracts(args: argparse.Namespace) -> int:
    st = _state(args)
    for k, _ in st.kv_range(b"c"):
        d = deployment(st, k[1:])
        assert d is not None
        print("%s  %s %s v%d %s params=%s" % (k[1:].hex(), d["label"], d["name"], d["version"],
                                             d["status"], _show(d["params"])))
    return 0


def register(sub: argparse._SubParsersAction, data: argparse.ArgumentParser) -> None:
    net = ci.network_parent(data)
    key = ci.key_parent()
    pos = ci._positive

    m = sub.add_parser("market", help="offers, demands, agreements (docs/MARKET.md)")
    ms = m.add_subparsers(dest="market_command", required=True, metavar="ACTION")
    p = ms.add_parser("offers", parents=[data], help="live offers")
    p.add_argument("--all", action="store_true", help="expired offers too")
    p.set_defaults(func=cmd_offers)
    ms.add_parser("demands", parents=[data], help="waiting demands").set_defaults(
        func=cmd_demands)
    p = ms.add_parser("agreements", parents=[data], help="open agreements")
    p.add_argument("--all", action="store_true", help="closed agreements too")
    p.set_defaults(func=cmd_agreements)
    p = ms.add_parser("record", parents=[data], help="a supplier's delivery record")
    p.add_argument("id", metavar="ID")
    p.set_defaults(func=cmd_record)
    p = ms.add_parser("check", parents=[data],
                      help="check a held reading against the on-chain commitment")
    p.add_argument("--agreement", required=True, metavar="ID")
    p.add_argument("--index", required=True, type=pos)
    p.set_defaults(func=cmd_check)
    p = ms.add_parser("offer", parents=[net, key], help="offer a service")
    p.add_argument("--service", required=True)
    p.add_argument("--price", required=True, type=pos)
    p.add_argument("--unit", default="")
    p.add_argument("--interval", type=pos, default=10, metavar="S")
    p.add_argument("--location", default="", metavar="GEOHASH")
    p.add_argument("--valid", type=pos, default=3600, metavar="S")
    p.add_argument("--schema", type=pos, default=1)
    p.set_defaults(func=cmd_offer)
    p = ms.add_parser("demand", parents=[net, key], help="buy a service")
    p.add_argument("--service", required=True)
    p.add_argument("--max-price", required=True, type=pos)
    p.add_argument("--quantity", required=True, type=pos)
    p.add_argument("--policy", choices=POLICIES, default="cheapest")
    p.add_argument("--wait", type=pos, default=600, metavar="S")
    p.add_argument("--location", default="", metavar="GEOHASH")
    p.set_defaults(func=cmd_demand)
    p = ms.add_parser("withdraw", parents=[net, key], help="withdraw an offer")
    p.add_argument("--service", required=True)
    p.set_defaults(func=cmd_withdraw)
    p = ms.add_parser("close", parents=[net, key], help="close an agreement or a demand")
    p.add_argument("--id", required=True, metavar="ID")
    p.set_defaults(func=cmd_close)

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
