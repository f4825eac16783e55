"""`thingledger` commands for the domain's chain (read-only except `domain init`).

    thingledger domain init --domain NAME [--admission open|closed|claimed]
                            [--owner-key FILE | --owner-pubkey HEX] [--min-fee N] [--trust]
    thingledger chain verify [--data-dir D] [--genesis FILE] [--registry DIR] [--jobs N]
    thingledger chain prove <device id hex> [--data-dir D]
    thingledger chain show [--height H] [--last N] [--data-dir D]
    thingledger tx <id-hex or unique prefix> [--data-dir D]
    thingledger devices [--data-dir D]

Readers open the database read-only and work while the gateway writes.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from tools.cli.common import (
    ENV_REGISTRY,
    EXIT_FAILED,
    EXIT_OK,
    Subparsers,
    UsageError,
    data_dir,
    load_key_file,
    non_negative_int,
    open_store,
)


def cmd_chain_verify(args: argparse.Namespace) -> int:
    from gateway.db import genesis_files as genesis
    from gateway.db import render as inspect
    from gateway.db import verify as replay
    from gateway.node.config import GENESIS_FILE

    gpath = Path(args.genesis) if args.genesis else data_dir(args) / GENESIS_FILE
    try:
        g = genesis.load(gpath)
    except genesis.GenesisError as e:
        raise UsageError(str(e)) from None
    from gateway.registry.view import registry_lookup

    registry = registry_lookup(args.registry) if args.registry else None
    workers = args.jobs if args.jobs else replay.default_workers()
    with open_store(args) as store:
        rep = replay.verify_chain(store, g, registry, workers=workers)
    print(inspect.report_text(rep))
    return EXIT_OK if rep.ok else EXIT_FAILED


def cmd_chain_prove(args: argparse.Namespace) -> int:
    """A principal's state with its proof against the head block's state_root,
    checked here with shared/stateproof.py (what a board runs)."""
    from shared import cbor, stateproof

    try:
        device = bytes.fromhex(args.device)
    except ValueError:
        raise UsageError("device id must be hex") from None
    with open_store(args) as store:
        got = store.prove_account(device)
    if got is None:
        print("no proof: the head block's state_root is not the state tree's "
              "(docs/PROTOCOL.md, \"State commitment\")")
        return EXIT_FAILED
    head, leaf, proof = got
    root = head.fields["state_root"]
    ok = stateproof.check_account(root, device, leaf, proof)
    print("height      %d" % head.height)
    print("state_root  %s" % root.hex())
    print("leaf        %s" % (leaf.hex() if leaf is not None else "none (no such principal)"))
    if leaf is not None:
        rec = cbor.loads(leaf)
        print("balance     %d (last seq %d)" % (rec[3], rec[2]))
    print("proof       %s (%d bytes, %d sibling hashes)" % (
        cbor.dumps(proof).hex(), len(cbor.dumps(proof)), len(proof[0])))
    print("signed      %s" % head.signed_header.hex())
    print("check       %s" % ("ok" if ok else "FAILED"))
    return EXIT_OK if ok else EXIT_FAILED


def cmd_domain_init(args: argparse.Namespace) -> int:
    """Create a domain: a new authority key and genesis file in the data dir."""
    from gateway.db import genesis_files as genesis

    owner = b""
    if args.owner_key:
        owner = load_key_file(args.owner_key).public
    elif args.owner_pubkey:
        try:
            owner = bytes.fromhex(args.owner_pubkey)
        except ValueError:
            raise UsageError("--owner-pubkey must be hex") from None
    validators = []
    for v in args.validator or ():
        try:
            validators.append(bytes.fromhex(v))
        except ValueError:
            raise UsageError("--validator must be a public key in hex") from None
    if args.consensus != "quorum" and (validators or args.threshold):
        raise UsageError("--validator and --threshold need --consensus quorum")
    try:
        gpath, kpath = genesis.create_domain(data_dir(args), args.domain,
                                             admission=args.admission, owner=owner,
                                             min_fee=args.min_fee, trust=args.trust,
                                             consensus=args.consensus,
                                             validators=validators,
                                             threshold=args.threshold or 0)
    except (genesis.GenesisError, FileExistsError, ValueError) as e:
        raise UsageError(str(e)) from None
    from gateway.db.store import open_ledger
    from gateway.node.config import GatewayConfig

    open_ledger(GatewayConfig(domain=args.domain, data_dir=data_dir(args)),
                create=False).store.close()  # block 0 on disk: broker export works now
    g = genesis.load(gpath)
    print(f"domain {g.domain} created: genesis {gpath}, authority key {kpath} (mode 0600)")
    print(f"authority public key {g.authority.hex()}  admission {g.admission}")
    vs = g.validator_set()
    if vs is not None:
        print(f"consensus {g.consensus}: {vs.threshold} of {len(vs.pubkeys)} validators, "
              f"set {vs.hash.hex()}")
    return EXIT_OK


def cmd_chain_show(args: argparse.Namespace) -> int:
    from gateway.db import render as inspect

    with open_store(args) as store:
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
    with open_store(args) as store:
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
    from gateway.firmware import rules as firmware

    with open_store(args) as store:
        fw = {i: firmware.firmware_text(v) for i, v in firmware.versions(store.load_state()).items()}
        print(inspect.devices_table(store.devices(), fw))
    return EXIT_OK


def register(sub: Subparsers, data: argparse.ArgumentParser) -> None:
    """Add `domain`, `chain`, `tx` and `devices`; `data` is the parent parser
    with --data-dir."""
    dom = sub.add_parser("domain", help="create a domain (genesis and authority key)")
    dom_sub = dom.add_subparsers(dest="domain_command", required=True, metavar="ACTION")
    di = dom_sub.add_parser("init", parents=[data], help="new genesis and authority key")
    di.add_argument("--domain", required=True, help="domain name (chain id), [a-z0-9-]")
    di.add_argument("--admission", choices=("open", "closed", "claimed"), default="open",
                    help="open: devices self-register; claimed: only devices the owner claims")
    own = di.add_mutually_exclusive_group()
    own.add_argument("--owner-key", metavar="FILE", help="the owner's key file")
    own.add_argument("--owner-pubkey", metavar="HEX", help="the owner's public key")
    di.add_argument("--min-fee", type=non_negative_int, default=0,
                    help="smallest fee (default 0)")
    di.add_argument("--trust", action="store_true",
                    help="keep trust levels on chain (docs/TRUST.md)")
    di.add_argument("--consensus", choices=("authority", "quorum"), default="authority",
                    help="authority: the authority key finalises each block (default); "
                         "quorum: k of the --validator keys (docs/CONSENSUS.md)")
    di.add_argument("--validator", action="append", metavar="HEX",
                    help="a gateway's public key (quorum; repeat for each)")
    di.add_argument("--threshold", type=non_negative_int, default=0, metavar="K",
                    help="signatures that finalise a block (quorum; default a majority)")
    di.set_defaults(func=cmd_domain_init)

    chain = sub.add_parser("chain", help="inspect and verify the stored chain")
    chain_sub = chain.add_subparsers(dest="chain_command", required=True, metavar="ACTION")
    v = chain_sub.add_parser("verify", parents=[data],
                             help="re-validate every block from genesis")
    v.add_argument("--genesis", metavar="FILE", help="genesis file (default DIR/genesis.toml)")
    v.add_argument("--registry", metavar="DIR", default=os.environ.get(ENV_REGISTRY),
                   help="public registry the domain's claims were checked against")
    v.add_argument("--jobs", type=non_negative_int, default=0, metavar="N",
                   help="processes checking signatures (default: one per core; 1: none, "
                        "all in this process)")
    v.set_defaults(func=cmd_chain_verify)
    pr = chain_sub.add_parser("prove", parents=[data],
                              help="a principal's state and its proof against the head's "
                                   "state_root")
    pr.add_argument("device", metavar="ID", help="principal id (hex)")
    pr.set_defaults(func=cmd_chain_prove)
    s = chain_sub.add_parser("show", parents=[data], help="show the chain or one block")
    s.add_argument("--height", type=non_negative_int, metavar="H", help="show block H in full")
    s.add_argument("--last", type=non_negative_int, default=20, metavar="N",
                   help="blocks listed in the summary (default 20)")
    s.set_defaults(func=cmd_chain_show)

    t = sub.add_parser("tx", parents=[data], help="show a transaction and its receipt")
    t.add_argument("id", help="transaction id (hex, or a unique prefix of 8+ chars)")
    t.set_defaults(func=cmd_tx)

    d = sub.add_parser("devices", parents=[data],
                       help="registered devices: id, public key, firmware, last seq, balance")
    d.set_defaults(func=cmd_devices)
