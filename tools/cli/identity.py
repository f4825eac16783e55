"""`thingledger` commands for the identity area (docs/IDENTITY.md §2, §4).

People's keys (files of 64 hex chars, mode 0600, tools/keys.py):
    thingledger key new --out FILE                  prints the id and public key

Transactions, signed with a key file, submitted over MQTT, answered with the
gateway's checked receipt (tools/submit.py). Each prints one result line
("... committed at height H (ok)" or "... rejected: REASON (DETAIL)") and
exits 0 only when committed with status ok:
    thingledger claim --key OWNER.key --pubkey HEX --statement HEX
    thingledger owner transfer --key K --device ID --to-pubkey HEX
    thingledger owner grant  --key K --device ID --principal ID [--pubkey HEX] --right R
    thingledger owner revoke --key K --device ID --principal ID --right R
    thingledger owner retire --key K --device ID --mode revoke|decommission
    thingledger owner recover --key K --device ID --pubkey NEWHEX --statement HEX
    thingledger device rotate --key CURRENT.key [--device ID] --new-pubkey HEX --approval HEX
    thingledger node join --key K --power P --ram-kib N --lifetime L [--certificate HEX]
                          [--introduce] [--label L]
    thingledger node assign --key K --light ID --full ID
Statements (print hex, nothing submitted):
    thingledger owner approve-rotation --key OWNER.key --device ID --new-pubkey HEX
    thingledger owner certify-node --key OWNER.key --node ID
    thingledger statement claim --key DEVICE.key --claimant ID     (key-file devices)
    thingledger statement recover --key NEW.key --device ID
Reading the chain (read-only, --data-dir):
    thingledger nodes                               id, label, status, assigned full node
    thingledger principals                          id, kind, status, owner, rights

Common options: --broker URL (default mqtt://127.0.0.1:1883), --domain NAME and
--authority HEX (default: from DIR/genesis.toml; the authority key checks the
receipt), --data-dir DIR, --timeout S. People's seqs are milliseconds since the
epoch (tools.submit.next_seq). Transaction builders: gateway/identity_tx.py; the
options and the submit step every group shares: tools/cli/common.py.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from gateway.identity import roles
from gateway.identity import statements as itx
from gateway.ledger.state import RETIRE_MODES, RIGHTS
from shared import tx as txm
from tools.cli.common import (
    Subparsers,
    UsageError,
    domain_of,
    key_parent,
    load_key_file,
    network_parent,
    non_negative_int,
    open_store,
    parse_hex,
    parse_id,
    parse_pubkey,
    seq_of,
    submit_tx,
)

# ---- commands -------------------------------------------------------------------

def cmd_key_new(args: argparse.Namespace) -> int:
    from tools.keys import new_key

    try:
        k = new_key(Path(args.out))
    except FileExistsError:
        raise UsageError("%s exists: not overwriting a key file" % args.out) from None
    except OSError as e:
        raise UsageError("cannot write %s: %s" % (args.out, e.strerror)) from None
    print("id      %s" % k.id.hex())
    print("pubkey  %s" % k.public.hex())
    return 0


def cmd_claim(args: argparse.Namespace) -> int:
    k = load_key_file(args.key)
    pub = parse_pubkey(args.pubkey, "--pubkey")
    m = itx.build_claim(k, domain_of(args), pub, parse_hex(args.statement, "--statement"), seq_of(args))
    return submit_tx(args, "claim of device %s" % txm.device_id(pub).hex(), m)


def cmd_owner_transfer(args: argparse.Namespace) -> int:
    k = load_key_file(args.key)
    dev, to = parse_id(args.device, "--device"), parse_pubkey(args.to_pubkey, "--to-pubkey")
    m = itx.build_owner_transfer(k, domain_of(args), dev, to, seq_of(args))
    return submit_tx(args, "transfer of device %s to %s" % (dev.hex(), txm.device_id(to).hex()), m)


def cmd_owner_grant(args: argparse.Namespace) -> int:
    k = load_key_file(args.key)
    dev, p = parse_id(args.device, "--device"), parse_id(args.principal, "--principal")
    pub = parse_pubkey(args.pubkey, "--pubkey") if args.pubkey else None
    if pub is not None and txm.device_id(pub) != p:
        raise UsageError("--pubkey does not belong to --principal (id = SHA-256(pubkey)[:16])")
    m = itx.build_grant(k, domain_of(args), dev, p, args.right, seq_of(args), pub)
    return submit_tx(args, "grant %s to %s on %s" % (args.right, p.hex(), dev.hex()), m)


def cmd_owner_revoke(args: argparse.Namespace) -> int:
    k = load_key_file(args.key)
    dev, p = parse_id(args.device, "--device"), parse_id(args.principal, "--principal")
    m = itx.build_revoke_right(k, domain_of(args), dev, p, args.right, seq_of(args))
    return submit_tx(args, "revoke %s from %s on %s" % (args.right, p.hex(), dev.hex()), m)


def cmd_owner_retire(args: argparse.Namespace) -> int:
    k = load_key_file(args.key)
    dev = parse_id(args.device, "--device")
    m = itx.build_retire(k, domain_of(args), dev, args.mode, seq_of(args))
    return submit_tx(args, "%s of device %s" % (args.mode, dev.hex()), m)


def cmd_owner_recover(args: argparse.Namespace) -> int:
    k = load_key_file(args.key)
    dev, pub = parse_id(args.device, "--device"), parse_pubkey(args.pubkey, "--pubkey")
    m = itx.build_recover(k, domain_of(args), dev, pub, parse_hex(args.statement, "--statement"),
                          seq_of(args))
    return submit_tx(args, "recovery of device %s" % dev.hex(), m)


def cmd_owner_approve(args: argparse.Namespace) -> int:
    k = load_key_file(args.key)
    print(itx.rotate_approval(k, parse_id(args.device, "--device"),
                              parse_pubkey(args.new_pubkey, "--new-pubkey")).hex())
    return 0


def cmd_owner_certify(args: argparse.Namespace) -> int:
    k = load_key_file(args.key)
    print(itx.node_certificate(k, domain_of(args), parse_id(args.node, "--node")).hex())
    return 0


def cmd_statement_claim(args: argparse.Namespace) -> int:
    k = load_key_file(args.key)
    print(itx.claim_statement(k.private, k.public, domain_of(args),
                              parse_id(args.claimant, "--claimant")).hex())
    return 0


def cmd_statement_recover(args: argparse.Namespace) -> int:
    k = load_key_file(args.key)
    print(itx.recover_statement(k.private, parse_id(args.device, "--device"), domain_of(args)).hex())
    return 0


def cmd_device_rotate(args: argparse.Namespace) -> int:
    k = load_key_file(args.key)
    dev = parse_id(args.device, "--device") if args.device else k.id
    m = itx.build_rotate(k, domain_of(args), parse_pubkey(args.new_pubkey, "--new-pubkey"),
                         parse_hex(args.approval, "--approval"), seq_of(args), device_id=dev)
    return submit_tx(args, "key rotation of device %s" % dev.hex(), m)


def _hardware(args: argparse.Namespace) -> dict[str, Any]:
    hw: dict[str, Any] = {"power": args.power, "ram_kib": args.ram_kib,
                          "lifetime": args.lifetime}
    if args.cpu_mhz is not None:
        hw["cpu_mhz"] = args.cpu_mhz
    if args.board:
        hw["board"] = args.board
    return hw


def cmd_node_join(args: argparse.Namespace) -> int:
    k = load_key_file(args.key)
    hw = _hardware(args)
    label = args.label or roles.label_of(hw)
    cert = parse_hex(args.certificate, "--certificate") if args.certificate else None
    sender = parse_id(args.node, "--node") if args.node else None
    m = itx.build_node_join(k, domain_of(args), label, hw, seq_of(args), cert, args.introduce,
                            sender)
    who = (sender or k.id).hex()
    return submit_tx(args, "join of %s node %s" % (label, who), m)


def cmd_node_assign(args: argparse.Namespace) -> int:
    k = load_key_file(args.key)
    light, full = parse_id(args.light, "--light"), parse_id(args.full, "--full")
    sender = parse_id(args.node, "--node") if args.node else None
    m = itx.build_node_assign(k, domain_of(args), light, full, seq_of(args), sender)
    return submit_tx(args, "assignment of light node %s to %s" % (light.hex(), full.hex()), m)


def cmd_nodes(args: argparse.Namespace) -> int:
    from gateway.db import render as inspect

    with open_store(args) as store:
        print(inspect.nodes_table(store.devices()))
    return 0


def cmd_principals(args: argparse.Namespace) -> int:
    from gateway.db import render as inspect

    with open_store(args) as store:
        print(inspect.principals_table(store.devices()))
    return 0


# ---- parser -------------------------------------------------------------------

def register(sub: Subparsers, data: argparse.ArgumentParser) -> None:
    """Add this area's subcommands; `data` is the parent parser with --data-dir."""
    net = network_parent(data)
    stmt = argparse.ArgumentParser(add_help=False, parents=[data])
    stmt.add_argument("--domain", metavar="NAME", help="domain (default: from DIR/genesis.toml)")
    key = key_parent()

    k = sub.add_parser("key", help="people's key files")
    ks = k.add_subparsers(dest="key_command", required=True, metavar="ACTION")
    kn = ks.add_parser("new", parents=[data],
                       help="create a key file, print its id and public key")
    kn.add_argument("--out", required=True, metavar="FILE")
    kn.set_defaults(func=cmd_key_new)

    c = sub.add_parser("claim", parents=[net, key],
                       help="claim a device into the domain (owner key + device statement)")
    c.add_argument("--pubkey", required=True, metavar="HEX", help="device public key")
    c.add_argument("--statement", required=True, metavar="HEX",
                   help="the device's signed claim statement")
    c.set_defaults(func=cmd_claim)

    o = sub.add_parser("owner", help="owner actions on a device")
    os_ = o.add_subparsers(dest="owner_command", required=True, metavar="ACTION")
    t = os_.add_parser("transfer", parents=[net, key], help="give the device to another person")
    t.add_argument("--device", required=True, metavar="ID")
    t.add_argument("--to-pubkey", required=True, metavar="HEX", help="new owner's public key")
    t.set_defaults(func=cmd_owner_transfer)
    for name, fn, helptext in (("grant", cmd_owner_grant, "grant a right on the device"),
                               ("revoke", cmd_owner_revoke, "revoke a right on the device")):
        g = os_.add_parser(name, parents=[net, key], help=helptext)
        g.add_argument("--device", required=True, metavar="ID")
        g.add_argument("--principal", required=True, metavar="ID")
        g.add_argument("--right", required=True, choices=RIGHTS)
        if name == "grant":
            g.add_argument("--pubkey", metavar="HEX",
                           help="the principal's public key (needed if new to the domain)")
        g.set_defaults(func=fn)
    r = os_.add_parser("retire", parents=[net, key], help="revoke or decommission the device")
    r.add_argument("--device", required=True, metavar="ID")
    r.add_argument("--mode", required=True, choices=sorted(RETIRE_MODES))
    r.set_defaults(func=cmd_owner_retire)
    rc = os_.add_parser("recover", parents=[net, key],
                        help="give the device a new key (statement made by the new key)")
    rc.add_argument("--device", required=True, metavar="ID")
    rc.add_argument("--pubkey", required=True, metavar="HEX", help="the device's new public key")
    rc.add_argument("--statement", required=True, metavar="HEX",
                    help="recover statement signed by the new key (from the board)")
    rc.set_defaults(func=cmd_owner_recover)
    a = os_.add_parser("approve-rotation", parents=[data, key],
                       help="print the owner's approval of a device key rotation (hex)")
    a.add_argument("--device", required=True, metavar="ID")
    a.add_argument("--new-pubkey", required=True, metavar="HEX")
    a.set_defaults(func=cmd_owner_approve)
    cn = os_.add_parser("certify-node", parents=[stmt, key],
                        help="print a full-node certificate (hex)")
    cn.add_argument("--node", required=True, metavar="ID")
    cn.set_defaults(func=cmd_owner_certify)

    s = sub.add_parser("statement", help="device statements made with a key file (hex)")
    ss = s.add_subparsers(dest="statement_command", required=True, metavar="KIND")
    sc = ss.add_parser("claim", parents=[stmt, key], help="a device's claim statement")
    sc.add_argument("--claimant", required=True, metavar="ID", help="id of the claiming owner")
    sc.set_defaults(func=cmd_statement_claim)
    sr = ss.add_parser("recover", parents=[stmt, key], help="a new key's recover statement")
    sr.add_argument("--device", required=True, metavar="ID")
    sr.set_defaults(func=cmd_statement_recover)

    d = sub.add_parser("device", help="device-side transactions from a key file")
    ds = d.add_subparsers(dest="device_command", required=True, metavar="ACTION")
    ro = ds.add_parser("rotate", parents=[net, key],
                       help="rotate the device key (signed by the current key)")
    ro.add_argument("--device", metavar="ID", help="device id (default: id of --key)")
    ro.add_argument("--new-pubkey", required=True, metavar="HEX")
    ro.add_argument("--approval", required=True, metavar="HEX",
                    help="owner approval (thingledger owner approve-rotation)")
    ro.set_defaults(func=cmd_device_rotate)

    n = sub.add_parser("node", help="node roles: join, assign")
    ns = n.add_subparsers(dest="node_command", required=True, metavar="ACTION")
    j = ns.add_parser("join", parents=[net, key], help="join the domain as a node")
    j.add_argument("--power", required=True, choices=roles.POWERS)
    j.add_argument("--ram-kib", required=True, type=non_negative_int, metavar="KIB")
    j.add_argument("--lifetime", required=True, choices=roles.LIFETIMES,
                   help="connection lifetime")
    j.add_argument("--cpu-mhz", type=non_negative_int, metavar="MHZ")
    j.add_argument("--board", metavar="NAME")
    j.add_argument("--label", choices=roles.LABELS,
                   help="declared label (default: computed from the hardware)")
    j.add_argument("--certificate", metavar="HEX", help="owner certificate (full nodes)")
    j.add_argument("--introduce", action="store_true",
                   help="carry the node's public key (a full node new to the domain)")
    j.add_argument("--node", metavar="ID", help="sender id (default: id of --key)")
    j.set_defaults(func=cmd_node_join)
    asg = ns.add_parser("assign", parents=[net, key],
                        help="assign a full node to a light node (coordination nodes)")
    asg.add_argument("--light", required=True, metavar="ID")
    asg.add_argument("--full", required=True, metavar="ID")
    asg.add_argument("--node", metavar="ID", help="sender id (default: id of --key)")
    asg.set_defaults(func=cmd_node_assign)

    nl = sub.add_parser("nodes", parents=[data],
                        help="nodes of the domain: id, label, status, assigned full node")
    nl.set_defaults(func=cmd_nodes)
    pl = sub.add_parser("principals", parents=[data],
                        help="principals: id, kind, status, owner, rights held on it")
    pl.set_defaults(func=cmd_principals)
