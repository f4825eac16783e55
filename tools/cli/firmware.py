"""`thingledger firmware ...`: signed over-the-air updates (docs/OTA.md).

    thingledger firmware release --key mfr.key --board esp32|rp2040|unix --version N
                                 --out DIR [--next-key HEX]
        build the firmware with mpy-cross, write DIR/files/ and the signed
        DIR/manifest.cose (COSE_Sign1 by --key)
    thingledger firmware publish --dir DIR --key K [--broker URL] [--domain D]
                                 [--broker-key FILE] [--no-record]
        put the release, retained, on the domain's broker (announcement and
        chunks) and record it on chain (a FIRMWARE release tx signed by --key;
        on an open domain a key the chain does not know registers first)
    thingledger firmware releases [--data-dir D]
        the releases recorded on chain
Each device's installed version: `thingledger devices`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from shared import messages
from shared import tx as txm
from tools.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    Subparsers,
    UsageError,
    authority_of,
    domain_of,
    key_parent,
    load_key_file,
    load_state,
    network_parent,
    parse_pubkey,
    seq_of,
)


def cmd_release(args: argparse.Namespace) -> int:
    from tools import ota

    key = load_key_file(args.key)
    if args.version < 1:
        raise UsageError("--version must be at least 1")
    nk = parse_pubkey(args.next_key, "--next-key") if args.next_key else None
    try:
        rel = ota.release(key, args.board, args.version, Path(args.out), next_key=nk)
    except ota.ReleaseError as e:
        print(f"firmware release: {e}", file=sys.stderr)
        return EXIT_FAILED
    total = sum(len(f) for f in rel.files)
    print(f"release {rel.board} v{rel.version}: {len(rel.files)} files, {total} bytes, "
          f"manifest {len(rel.signed)} bytes signed by {key.id.hex()}, id {rel.rid.hex()} "
          f"-> {args.out}")
    return EXIT_OK


def _record(args: argparse.Namespace, rel) -> int:
    """The FIRMWARE release tx, after a REGISTER if the chain does not know --key."""
    from gateway.firmware import rules
    from tools.submit import SubmitError, login_for, submit

    key = load_key_file(args.key)
    domain, authority = domain_of(args), authority_of(args)
    login = login_for(key, domain)
    body = {1: rules.RELEASE, 2: rel.version, 3: rel.board, 4: rel.digest}
    for attempt in range(2):
        msg = key.sign_tx(txm.TYPE_FIRMWARE, domain, seq_of(args) + attempt, body)
        try:
            reply = submit(args.broker, domain, msg, authority, timeout=args.timeout,
                           login=login)
            if reply.reason == "unknown-device" and not reply.ok and attempt == 0:
                reg = key.sign_tx(txm.TYPE_REGISTER, domain, seq_of(args), {1: key.public})
                r = submit(args.broker, domain, reg, authority, timeout=args.timeout, login=login)
                print(f"register {key.id.hex()}: {r.describe()}")
                continue
        except SubmitError as e:
            print(f"firmware record: {e}", file=sys.stderr)
            return EXIT_FAILED
        print(f"firmware record: {reply.describe()}")
        return EXIT_OK if reply.ok and reply.status == messages.STATUS_OK else EXIT_FAILED
    return EXIT_FAILED


def cmd_publish(args: argparse.Namespace) -> int:
    from tools import ota
    from tools.submit import login_for

    try:
        rel = ota.load(Path(args.dir))
    except ota.ReleaseError as e:
        print(f"firmware publish: {e}", file=sys.stderr)
        return EXIT_FAILED
    domain = domain_of(args)
    login = login_for(load_key_file(args.broker_key or args.key), domain)
    try:
        n = ota.publish(args.broker, domain, rel, login=login, timeout=max(args.timeout, 60))
    except ota.ReleaseError as e:
        print(f"firmware publish: {e}", file=sys.stderr)
        return EXIT_FAILED
    print(f"published {rel.board} v{rel.version} (id {rel.rid.hex()}) on {args.broker}: "
          f"{n} retained messages under tl/{domain}/fw/{rel.board}")
    return EXIT_OK if args.no_record else _record(args, rel)


def cmd_releases(args: argparse.Namespace) -> int:
    from gateway.db.render import table
    from gateway.firmware import rules

    rows = [(r["board"], "v%d" % r["version"], r["manifest"][:16], r["publisher"], r["height"])
            for r in rules.releases(load_state(args))]
    print(table(("board", "version", "manifest", "publisher", "height"), rows)
          if rows else "no releases recorded")
    return EXIT_OK


def register(sub: Subparsers, data: argparse.ArgumentParser) -> None:
    """Add `firmware`; `data` is the parent parser with --data-dir."""
    from tools.ota import BOARDS

    net = network_parent(data)
    key = key_parent()
    f = sub.add_parser("firmware", help="signed over-the-air updates (docs/OTA.md)")
    fs = f.add_subparsers(dest="firmware_command", required=True, metavar="ACTION")
    p = fs.add_parser("release", parents=[data, key], help="build and sign a release")
    p.add_argument("--board", required=True, choices=BOARDS)
    p.add_argument("--version", required=True, type=int, metavar="N")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--next-key", metavar="HEX",
                   help="public key that signs the releases after this one (key rotation)")
    p.set_defaults(func=cmd_release)
    p = fs.add_parser("publish", parents=[net, key],
                      help="offer a release to the domain's boards and record it on chain")
    p.add_argument("--dir", required=True, metavar="DIR", help="a folder made by `release`")
    p.add_argument("--broker-key", metavar="FILE",
                   help="key file of the broker login (default --key; an enforcing broker "
                        "lets only the domain authority publish firmware)")
    p.add_argument("--no-record", action="store_true", help="publish only, no FIRMWARE tx")
    p.set_defaults(func=cmd_publish)
    p = fs.add_parser("releases", parents=[data], help="releases recorded on chain")
    p.set_defaults(func=cmd_releases)
