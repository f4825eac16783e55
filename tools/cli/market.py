"""`thingledger market ...`: the service economy (docs/MARKET.md).

Reading the chain (read-only, --data-dir):
    thingledger market offers [--all]            live offers (--all: expired too)
    thingledger market demands                   demands waiting for an offer
    thingledger market agreements [--all]        open agreements (--all: closed too)
    thingledger market record ID                 a supplier's delivery record
    thingledger market check --agreement ID --index N
                                                 a reading held by the gateway,
                                                 checked against the on-chain commitment
Transactions signed with a key file and submitted over MQTT (the options of
tools/cli/common.py: --key, --broker, --domain, --authority, --timeout):
    thingledger market offer --service S --price P [--unit U] [--interval S]
                             [--location GEOHASH] [--valid S] [--schema N]
    thingledger market demand --service S --max-price P --quantity Q
                              [--policy latest|cheapest|trusted|nearest] [--wait S]
                              [--location GEOHASH]
    thingledger market withdraw --service S
    thingledger market close --id ID             an agreement or a waiting demand
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from gateway.ledger import keys
from gateway.market.ledger import rules as ledger
from gateway.market.ledger.matching import POLICIES, Offer
from shared import cbor
from shared import tx as txm
from tools.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    Subparsers,
    UsageError,
    data_dir,
    key_parent,
    load_state,
    network_parent,
    non_negative_int,
    open_store,
    parse_id,
    send_tx,
)


# ---- reading --------------------------------------------------------------------
def cmd_offers(args: argparse.Namespace) -> int:
    now = int(time.time())
    rows = [Offer.from_map(cbor.loads(v)) for _, v in load_state(args).kv_range(keys.OFFERS)]
    for o in sorted(rows, key=lambda o: (o.service, o.price, o.supplier)):
        if o.expires <= now and not args.all:
            continue
        print("%s  %-16s price=%d unit=%s interval=%ds location=%s expires=%d%s" % (
            o.supplier.hex(), o.service, o.price, o.unit, o.interval_s, o.location or "-",
            o.expires, "" if o.expires > now else " (expired)"))
    return 0


def cmd_demands(args: argparse.Namespace) -> int:
    for k, v in load_state(args).kv_range(keys.DEMANDS):
        d = cbor.loads(v)
        print("%s  buyer=%s %s max_price=%d quantity=%d policy=%s until=%d locked=%d" % (
            k[-16:].hex(), d[ledger.D_BUYER].hex(), d[ledger.D_SERVICE], d[ledger.D_MAX],
            d[ledger.D_QTY], d[ledger.D_POLICY], d[ledger.D_UNTIL], d[ledger.D_LOCKED]))
    return 0


def cmd_agreements(args: argparse.Namespace) -> int:
    for k, v in load_state(args).kv_range(ledger.AGREEMENTS):
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
    r = ledger.supplier_record(load_state(args), parse_id(args.id, "ID")) or {"paid": 0,
                                                                             "failed": 0}
    print("paid=%d failed=%d (batches)" % (r["paid"], r["failed"]))
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from gateway.market.node.proofs import check_reading
    from gateway.market.node.streams import StreamStore
    from gateway.node.config import STREAMS_FILE

    aid = parse_id(args.agreement, "--agreement")
    with open_store(args) as st:
        state = st.load_state()
        a = ledger.agreement(state, aid)
        if a is None:
            raise UsageError("no agreement %s in the chain" % aid.hex())
        key = state.get(a["supplier"]).pubkey
        streams = StreamStore(Path(data_dir(args)) / STREAMS_FILE)
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
def cmd_offer(args: argparse.Namespace) -> int:
    return send_tx(args, "offer", txm.TYPE_OFFER, {
        1: args.service, 2: args.unit, 3: args.price, 4: args.interval, 5: args.location,
        6: args.valid, 7: args.schema})


def cmd_demand(args: argparse.Namespace) -> int:
    body = {1: args.service, 2: args.max_price, 3: args.quantity, 4: args.wait,
            5: args.policy}
    if args.location:
        body[6] = args.location
    return send_tx(args, "demand", txm.TYPE_DEMAND, body)


def cmd_withdraw(args: argparse.Namespace) -> int:
    return send_tx(args, "withdraw", txm.TYPE_WITHDRAW, {1: args.service})


def cmd_close(args: argparse.Namespace) -> int:
    return send_tx(args, "close", txm.TYPE_CLOSE, {1: parse_id(args.id, "--id")})


def register(sub: Subparsers, data: argparse.ArgumentParser) -> None:
    """Add `market`; `data` is the parent parser with --data-dir."""
    net = network_parent(data)
    key = key_parent()
    pos = non_negative_int

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
