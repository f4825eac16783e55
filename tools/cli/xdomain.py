"""`thingledger` commands for cross-domain exchange (docs/CROSSDOMAIN.md).

    thingledger xdomain clients [--data-dir D]          the light clients this domain keeps
    thingledger xdomain client DOMAIN [--data-dir D]    one client: set, trusted headers, evidence
    thingledger xdomain packets [--data-dir D]          open packets sent, receipts of packets received
    thingledger xdomain purchases [--data-dir D]        purchases in other domains recorded here
    thingledger xdomain create --of-dir DIR --key FILE [--period S] [network options]
        the domain owner creates (or reinstates) the client of the domain whose
        data folder is DIR, trusting its head header and validator set
    thingledger xdomain send --to DOMAIN --recipient ID --amount N
        [--timeout-height H] [--timeout-s S] [--memo TEXT] --key FILE [network options]
    thingledger xdomain buy (--of-dir DIR_A | --of A) --of-broker URL_A --service S --quantity N
        [--max-price P] [--via RELAYER_ID] [--wait S] [--genesis FILE] [--of-genesis FILE]
        --key FILE [network options]
        buy readings in A's market, paid with a packet from here, checked and recorded here
        (without a data folder of a domain, its gateways are asked over its broker;
        here: --domain B and no genesis in --data-dir)
    thingledger xdomain resell (--of-dir DIR | --of A) --of-broker URL_A --service S
        [--as S_HERE] --price P [--max-price P_A] [--interval S] [--via RELAYER_ID]
        [--genesis FILE] [--of-genesis FILE] --key FILE [network options]
        offer S here; for each agreement, buy as many readings in A, proven here,
        and stream each one checked to the buyer here as its own (a buyer board)
    thingledger xdomain demo [--dir DIR]                two live domains and transfers (make run-xdomain)
    thingledger relay (--from-dir DIR_A | --from A) (--to-dir DIR_B | --to B) --key FILE
        [--from-broker URL[,URL...]] [--to-broker URL[,URL...]] [--once] [--interval S]
        [--seconds S] [--from-genesis FILE] [--to-genesis FILE]
        (a genesis file pins that domain's authority and validator keys: a
        gateway stating another genesis is refused, genesis-mismatch)
        [--bridge]   also republish A's offers and market streams in B

Readers open the database read-only and work while the gateway writes.
"""

from __future__ import annotations

import argparse
import hashlib
import time
from pathlib import Path
from typing import Any

from tools.cli.common import (
    DEFAULT_BROKER,
    EXIT_FAILED,
    EXIT_OK,
    Subparsers,
    UsageError,
    data_dir,
    key_parent,
    load_key_file,
    network_parent,
    non_negative_int,
    open_store,
    parse_id,
    positive_float,
    send_tx,
)


def _clients(store: Any) -> list[Any]:
    from gateway.xdomain import client as lc
    from shared import xpacket as xp

    out = []
    for k, v in store.kv_range(xp.CLIENT):
        out.append(lc.Client.decode(k[len(xp.CLIENT):].decode(), v))
    return out


def _trusted(store: Any, domain: str) -> list[Any]:
    from gateway.xdomain import client as lc
    from shared import xpacket as xp

    n = len(xp.headers_of(domain))
    return [lc.Trusted.decode(int.from_bytes(k[n:], "big"), v)
            for k, v in store.kv_range(xp.headers_of(domain))]


def cmd_clients(args: argparse.Namespace) -> int:
    with open_store(args) as store:
        rows = [(c, _trusted(store, c.domain)) for c in _clients(store)]
    now = int(time.time())
    print("%-20s  %-8s  %-6s  %-10s  %-8s  %s" % ("domain", "latest", "k/n", "state",
                                                   "period", "set hash"))
    for c, ts in rows:
        latest = next((t for t in ts if t.height == c.latest), None)
        state = "frozen" if c.frozen else (
            "expired" if latest is None or now > latest.time + c.period else "active")
        print("%-20s  %-8d  %d/%-4d  %-10s  %-8d  %s" % (c.domain, c.latest, c.threshold,
                                                         len(c.pubkeys), state, c.period,
                                                         c.set_hash.hex()[:16]))
    print("%d client(s)" % len(rows))
    return EXIT_OK


def cmd_client(args: argparse.Namespace) -> int:
    from shared import cbor
    from shared import xpacket as xp

    with open_store(args) as store:
        c = next((x for x in _clients(store) if x.domain == args.domain), None)
        if c is None:
            print("no client of %s" % args.domain)
            return EXIT_FAILED
        ts = _trusted(store, c.domain)
        fk = xp.frozen_key(c.domain)
        ev = [v for k, v in store.kv_range(fk) if k == fk]
    print("domain      %s" % c.domain)
    print("validators  %d of %d, set hash %s" % (c.threshold, len(c.pubkeys), c.set_hash.hex()))
    for p in c.pubkeys:
        print("  %s" % p.hex())
    print("period      %d s" % c.period)
    print("latest      %d" % c.latest)
    print("frozen      %s" % ("yes" if c.frozen else "no"))
    print("trusted headers")
    for t in ts:
        print("  height %-8d time %-10d hash %s state_root %s" % (t.height, t.time,
                                                                 t.hash.hex()[:16],
                                                                 t.state_root.hex()[:16]))
    if ev:
        h, trusted_hash, other, _cert = cbor.loads(ev[0])
        print("evidence    height %d: trusted %s, conflicting %s" % (
            h, trusted_hash.hex()[:16], hashlib.sha256(other).hexdigest()[:16]))
    return EXIT_OK


def cmd_packets(args: argparse.Namespace) -> int:
    from shared import cbor
    from shared import xpacket as xp

    with open_store(args) as store:
        sent = [xp.decode(v) for _, v in store.kv_range(xp.PACKET)]
        got = [(k, cbor.loads(v)) for k, v in store.kv_range(xp.RECEIPT)]
    print("open packets sent (escrowed, waiting for ack or timeout)")
    for p in sent:
        print("  to %-16s seq %-6d %s -> %s amount %-8d timeout height %d time %d"
              % (p[2], p[3], p[4].hex(), p[5].hex(), p[6], p[7], p[8]))
    print("packets received (receipts)")
    for k, (status, reason) in got:
        src, seq = k[len(xp.RECEIPT):-9].decode(), int.from_bytes(k[-8:], "big")
        print("  from %-14s seq %-6d %s" % (src, seq, "ok" if status == xp.ACK_OK
                                             else "failed: " + reason))
    print("%d open, %d received" % (len(sent), len(got)))
    return EXIT_OK


def cmd_purchases(args: argparse.Namespace) -> int:
    from gateway.xdomain import recorded

    with open_store(args) as store:
        rows = [(p, recorded.batches(store, p)) for p in recorded.purchases(store)]
    print("purchases in other domains' markets, recorded here (XPURCHASE)")
    for p, bs in rows:
        print("  in %s agreement %s buyer %s supplier %s %s: %d at %d, committed %d of %d "
              "(height %d)" % (p.domain, p.id.hex(), p.buyer.hex(), p.supplier.hex(), p.service,
                               p.quantity, p.price, p.readings, p.quantity, p.height))
        if p.serves is not None:
            print("    serves agreement %s here (linked)" % p.serves.hex())
        for x in bs:
            print("    batch %-4d readings %d..%d root %s (%s height %d)"
                  % (x.batch, x.first, x.first + x.count - 1, x.root.hex()[:16], p.domain,
                     x.height))
    print("%d purchase(s)" % len(rows))
    return EXIT_OK


def cmd_create(args: argparse.Namespace) -> int:
    from gateway.db import genesis_files
    from gateway.db.store import Store
    from gateway.ledger import consensus, keys
    from gateway.node.config import DB_FILE, GENESIS_FILE
    from shared import cbor, txdecode

    of = Path(args.of_dir)
    try:
        g = genesis_files.load(of / GENESIS_FILE)
    except (OSError, genesis_files.GenesisError) as e:
        raise UsageError("no domain in %s: %s" % (of, e)) from None
    with Store(of / DB_FILE, readonly=True) as st:
        head = st.head()
        cert = None if head is None else st.certificate(head.height)
        sched = [v for k, v in st.kv_range(keys.VALSETS, 1) if k == keys.VALSETS]
    if head is None or cert is None or not sched:
        print("create: %s has no final version-2 head yet" % g.domain)
        return EXIT_FAILED
    s = [(h, consensus.ValidatorSet(k, tuple(p))) for h, k, p in cbor.loads(sched[0])]
    vs = consensus.set_at(s, head.height)
    return send_tx(args, "client-create", txdecode.TYPE_CLIENT_CREATE, {
        1: g.domain, 2: vs.threshold, 3: list(vs.pubkeys), 4: args.period,
        5: head.header_bytes, 6: cert})


def cmd_send(args: argparse.Namespace) -> int:
    from shared import txdecode

    if not args.timeout_height and not args.timeout_s:
        raise UsageError("give --timeout-height and/or --timeout-s")
    body: dict[int, Any] = {1: args.to, 2: parse_id(args.recipient, "--recipient"),
                            3: args.amount, 4: args.timeout_height,
                            5: int(time.time()) + args.timeout_s if args.timeout_s else 0}
    if args.memo:
        body[6] = args.memo.encode()
    return send_tx(args, "xdomain-send", txdecode.TYPE_SEND, body)


def _pinned(path: str | None, domain: str | None, option: str) -> Any:
    """The genesis file given with `option` (None without), of `domain` if named."""
    if not path:
        return None
    from gateway.db import genesis_files

    try:
        g = genesis_files.load(path)
    except (OSError, genesis_files.GenesisError) as e:
        raise UsageError("%s %s: %s" % (option, path, e)) from None
    if domain and g.domain != domain:
        raise UsageError("%s %s is the genesis of %s, not %s" % (option, path, g.domain, domain))
    return g


def _side(key: Any, folder: str | None, domain: str | None, broker: str, timeout: float,
          what: str, genesis: str | None = None, genesis_option: str = "",
          keep: bool = False) -> Any:
    """A domain read from its data folder, or over its broker (chain queries);
    `genesis`: the domain's genesis file, pinned (its authority and
    validator keys, not the ones a gateway states)."""
    from tools import relay
    from tools.failover import Brokers
    from tools.remote_store import RemoteError

    try:
        Brokers(broker)
    except ValueError as e:
        raise UsageError("bad broker list %r: %s" % (broker, e)) from None
    pinned = _pinned(genesis, domain, genesis_option)
    domain = domain or (pinned.domain if pinned is not None else None)
    try:
        if folder:
            side = relay.open_side(Path(folder), broker, pinned)
            if domain and domain != side.domain:
                raise UsageError("%s holds domain %s, not %s" % (folder, side.domain, domain))
            return side
        if not domain:
            raise UsageError("give %s-dir DIR, or %s DOMAIN to read the domain over its broker"
                             % (what, what))
        return relay.remote_side(domain, broker, key, timeout, pinned, keep)
    except RemoteError as e:
        raise UsageError("cannot read %s over %s: %s" % (domain or folder, broker, e)) from None


def cmd_relay(args: argparse.Namespace) -> int:
    from tools import relay

    key = load_key_file(args.key)
    a = _side(key, args.from_dir, args.from_domain, args.from_broker, args.timeout, "--from",
              args.from_genesis, "--from-genesis")
    b = _side(key, args.to_dir, args.to_domain, args.to_broker, args.timeout, "--to",
              args.to_genesis, "--to-genesis")
    return relay.run(a, b, key, interval=args.interval, once=args.once, timeout=args.timeout,
                     seconds=args.seconds, bridge=args.bridge,
                     line=lambda s: print(s, flush=True))


def _sides(args: argparse.Namespace, key: Any, keep: bool = False) -> tuple[Any, Any]:
    """This domain (B: --data-dir, or --domain over --broker) and the market's
    (A: --of-dir or --of over --of-broker) of `xdomain buy` and `xdomain
    resell`, each with its genesis file pinned if given (--genesis,
    --of-genesis); `keep`: the connection to A keeps its session (the
    reseller's, docs/CROSSDOMAIN.md, "A restarted reseller")."""
    from gateway.node.config import GENESIS_FILE

    here = data_dir(args)
    home = _side(key, str(here), None, args.broker, args.timeout, "--domain", args.genesis,
                 "--genesis") \
        if (here / GENESIS_FILE).exists() or not args.domain \
        else _side(key, None, args.domain, args.broker, args.timeout, "--domain", args.genesis,
                   "--genesis")
    there = _side(key, args.of_dir, args.of, args.of_broker, args.timeout, "--of",
                  args.of_genesis, "--of-genesis", keep)
    return home, there


def cmd_buy(args: argparse.Namespace) -> int:
    from tools import xbuy

    key = load_key_file(args.key)
    home, there = _sides(args, key)
    via = parse_id(args.via, "--via") if args.via else None

    def say(s: str) -> None:
        print(s, flush=True)

    buyer = xbuy.CrossBuyer(key, home, there, timeout=args.timeout, via=via, line=say)
    try:
        fit = [o for o in buyer.offers(args.service)
               if args.max_price is None or o[4] <= args.max_price]
        if not fit:
            print("buy: no offer of %s in %s at most %s" % (args.service, there.domain,
                                                            args.max_price))
            return EXIT_FAILED
        best = min(fit, key=lambda o: (o[4], o[1]))
        o = buyer.prove_offer(args.service, best[1])
        say("offer %s at %d proven in %s" % (o.supplier.hex(), o.price, home.domain))
        if buyer.balance_in_market() < o.price * args.quantity:
            buyer.pay(o.price * args.quantity - buyer.balance_in_market())
            say("paid with a packet %s -> %s: %d held in %s"
                % (home.domain, there.domain, buyer.balance_in_market(), there.domain))
        d = buyer.demand(args.service, o.price, args.quantity, o.supplier)
        say("agreement %s proven in %s: %d readings at %d"
            % (d.agreement.id.hex(), home.domain, d.agreement.quantity, d.agreement.price))
        say("listening on %s" % buyer.stream_topic(d))
        for index, value, scale in buyer.verify(d, args.wait):
            say("reading %d: %de%d verified" % (index, value, scale))
        return EXIT_OK
    except xbuy.BuyError as e:
        print("buy: %s" % e)
        return EXIT_FAILED
    finally:
        buyer.close()


def cmd_resell(args: argparse.Namespace) -> int:
    from tools import resell
    from tools.supplier import SupplyError

    key = load_key_file(args.key)
    home, there = _sides(args, key, keep=True)
    terms = resell.Terms(args.service, args.sell_as or args.service, args.price,
                         args.price if args.max_price is None else args.max_price,
                         args.interval, args.valid)
    state = Path(args.state) if args.state else \
        data_dir(args) / ("resell-%s.json" % key.id.hex()[:16]) if home.data_dir else None
    r = resell.Reseller(key, home, there, terms,
                        via=parse_id(args.via, "--via") if args.via else None,
                        timeout=args.timeout, wait=args.wait, retry=args.retry,
                        line=lambda s: print(s, flush=True), state=state)
    try:
        return r.run(args.seconds)
    except SupplyError as e:
        print("resell: %s" % e, flush=True)
        return EXIT_FAILED


def cmd_demo(args: argparse.Namespace) -> int:
    from tools import xdomain_demo

    return xdomain_demo.run(Path(args.dir) if args.dir else None,
                            lambda s: print(s, flush=True))


def market_options(p: argparse.ArgumentParser) -> None:
    """The market domain A (--of-dir or --of over --of-broker), its relayer
    (--via) and the genesis files pinned (--genesis, --of-genesis) of
    `xdomain buy` and `xdomain resell` (read by _sides)."""
    p.add_argument("--of-dir", metavar="DIR",
                   help="data folder of the market's domain (read-only: proofs, receipts); "
                        "without it, --of names the domain and its gateways are asked over "
                        "--of-broker")
    p.add_argument("--of", metavar="DOMAIN", help="the market's domain (checked)")
    p.add_argument("--of-broker", default=DEFAULT_BROKER, metavar="URL[,URL...]",
                   help="the market domain's broker (its transactions go there); several, "
                        "comma-separated: the next is asked when one is silent or down")
    p.add_argument("--via", metavar="ID", default=None,
                   help="a relayer bridging the market here (relay --bridge): read its "
                        "offers and streams on this domain's broker")
    p.add_argument("--genesis", metavar="FILE",
                   help="this domain's genesis file: its authority and validator keys are "
                        "pinned, a gateway stating another genesis is refused "
                        "(genesis-mismatch)")
    p.add_argument("--of-genesis", metavar="FILE",
                   help="the market domain's genesis file, pinned as --genesis")


def register(sub: Subparsers, data: argparse.ArgumentParser) -> None:
    x = sub.add_parser("xdomain", help="cross-domain clients and packets (docs/CROSSDOMAIN.md)")
    xs = x.add_subparsers(dest="xdomain_command", required=True, metavar="ACTION")
    xs.add_parser("clients", parents=[data], help="the light clients this domain keeps"
                  ).set_defaults(func=cmd_clients)
    c = xs.add_parser("client", parents=[data], help="one light client in full")
    c.add_argument("domain", help="the counterparty domain")
    c.set_defaults(func=cmd_client)
    xs.add_parser("packets", parents=[data], help="open packets sent and packets received"
                  ).set_defaults(func=cmd_packets)
    xs.add_parser("purchases", parents=[data], help="purchases in other domains' markets "
                  "recorded here, with their delivery commitments").set_defaults(
                      func=cmd_purchases)
    d = xs.add_parser("demo", parents=[data], help="two domains and transfers between them, live "
                      "(make run-xdomain)")
    d.add_argument("--dir", metavar="DIR", help="keep the domains there (default: a "
                   "temporary folder)")
    d.set_defaults(func=cmd_demo)
    net = network_parent(data)
    key = key_parent()
    cr = xs.add_parser("create", parents=[net, key],
                       help="create or reinstate the client of another domain (its owner)")
    cr.add_argument("--of-dir", required=True, metavar="DIR",
                    help="data folder of the other domain (its genesis and chain database)")
    cr.add_argument("--period", type=non_negative_int, default=7 * 86400, metavar="S",
                    help="trusting period in seconds (default a week)")
    cr.set_defaults(func=cmd_create)
    s = xs.add_parser("send", parents=[net, key],
                      help="send an amount to an id in another domain (escrowed here)")
    s.add_argument("--to", required=True, metavar="DOMAIN")
    s.add_argument("--recipient", required=True, metavar="ID", help="id in DOMAIN (32 hex)")
    s.add_argument("--amount", required=True, type=non_negative_int)
    s.add_argument("--timeout-height", type=non_negative_int, default=0, metavar="H",
                   help="refund unless received before DOMAIN's height H")
    s.add_argument("--timeout-s", type=non_negative_int, default=0, metavar="S",
                   help="refund unless received within S seconds (DOMAIN's block time)")
    s.add_argument("--memo", default="", help="a short text carried with the packet")
    s.set_defaults(func=cmd_send)
    b = xs.add_parser("buy", parents=[net, key],
                      help="buy readings in another domain's market, paid from this domain, "
                           "checked against that domain's roots proven here")
    market_options(b)
    b.add_argument("--service", required=True)
    b.add_argument("--quantity", required=True, type=non_negative_int)
    b.add_argument("--max-price", type=non_negative_int, default=None, metavar="P")
    b.add_argument("--wait", type=positive_float, default=300.0, metavar="S",
                   help="seconds to wait for every reading to be committed and checked")
    b.set_defaults(func=cmd_buy)
    rs = xs.add_parser("resell", parents=[net, key],
                       help="resell here a service of another domain's market: offer it here, "
                            "buy it there for each agreement, stream the checked readings here")
    market_options(rs)
    rs.add_argument("--service", required=True, help="the service bought there")
    rs.add_argument("--as", dest="sell_as", default=None, metavar="SERVICE",
                    help="the service offered here (default: the same name)")
    rs.add_argument("--price", required=True, type=non_negative_int,
                    help="price of a reading here")
    rs.add_argument("--max-price", type=non_negative_int, default=None, metavar="P",
                    help="price of a reading there at most (default: --price)")
    rs.add_argument("--interval", type=non_negative_int, default=5, metavar="S",
                    help="the offer's interval here, seconds (default 5)")
    rs.add_argument("--valid", type=non_negative_int, default=600, metavar="S",
                    help="the offer's validity here, seconds (offered again every S/2)")
    rs.add_argument("--wait", type=positive_float, default=300.0, metavar="S",
                    help="seconds for a purchase there to be delivered, checked and streamed")
    rs.add_argument("--retry", type=positive_float, default=60.0, metavar="S",
                    help="after a failed purchase, the offer here is withdrawn this long")
    rs.add_argument("--seconds", type=positive_float, default=None, metavar="S",
                    help="stop after S seconds")
    rs.add_argument("--state", metavar="FILE", default=None,
                    help="the reseller's state file, from which a restart takes up its open "
                         "agreements (default: resell-<its id>.json in --data-dir; none when "
                         "this domain is read over its broker)")
    rs.set_defaults(func=cmd_resell)
    r = sub.add_parser("relay", parents=[data],
                       help="relay packets and headers between two domains (no rights needed)")
    r.add_argument("--from", dest="from_domain", metavar="A", help="source domain (checked)")
    r.add_argument("--to", dest="to_domain", metavar="B", help="destination domain (checked)")
    r.add_argument("--from-dir", metavar="DIR",
                   help="A's data folder (without it: A is read over --from-broker)")
    r.add_argument("--to-dir", metavar="DIR",
                   help="B's data folder (without it: B is read over --to-broker)")
    r.add_argument("--from-broker", default=DEFAULT_BROKER, metavar="URL[,URL...]",
                   help="A's broker; several of A's brokers (its NATS nodes, or two "
                        "gateways' brokers), comma-separated: the next is asked when the one "
                        "in use is silent or down")
    r.add_argument("--to-broker", default=DEFAULT_BROKER, metavar="URL[,URL...]",
                   help="B's broker, or several, as --from-broker")
    r.add_argument("--from-genesis", metavar="FILE",
                   help="A's genesis file: A's authority and validator keys are taken from it, "
                        "not from what A's gateways state, and a gateway (or --from-dir) "
                        "stating another genesis is refused (genesis-mismatch)")
    r.add_argument("--to-genesis", metavar="FILE", help="B's genesis file, as --from-genesis")
    r.add_argument("--key", required=True, metavar="FILE", help="the relayer's key file")
    r.add_argument("--once", action="store_true", help="one pass, then exit")
    r.add_argument("--interval", type=positive_float, default=2.0, metavar="S",
                   help="a pass at least every S seconds (and on every block)")
    r.add_argument("--seconds", type=positive_float, default=None, metavar="S",
                   help="stop after S seconds")
    r.add_argument("--timeout", type=positive_float, default=15.0, metavar="S",
                   help="seconds to wait for each receipt")
    r.add_argument("--bridge", action="store_true",
                   help="also republish A's offers and market streams in B (for buyers in B)")
    r.set_defaults(func=cmd_relay)
