"""`thingledger` commands for the broker area (docs/IDENTITY.md §3).

    thingledger broker export --out DIR [--data-dir D] [--credentials FILE]
                              [--authority-key FILE]

writes DIR/passwd (mosquitto 2 `$7$` PBKDF2-SHA512 hashes) and DIR/acl from the
chain (the domain's identities in the stored state) and the owner's local
credential store (default DATA_DIR/credentials.json, written by `board claim`).
The gateway's own user comes from the authority key. Revoked and
decommissioned principals are left out; the operator then reloads mosquitto
(`kill -HUP <pid>` or `systemctl reload mosquitto`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def access_from_state(state: Any, domain: str) -> Any:
    """The domain's identity state machine over a stored state (tests swap it)."""
    from gateway.access import Access

    return Access.from_state(state, domain)


def cmd_export(args: argparse.Namespace) -> int:
    from gateway import broker_auth, genesis
    from gateway.config import DB_FILE, GENESIS_FILE, KEY_FILE
    from gateway.store import Store
    from tools.cli import EXIT_OK, UsageError

    data = Path(args.data_dir)
    db = data / DB_FILE
    if not db.exists():
        raise UsageError(f"no chain database at {db} (use --data-dir)")
    try:
        g = genesis.load(data / GENESIS_FILE)
        priv = genesis.load_authority_key(Path(args.authority_key or data / KEY_FILE), g)
    except genesis.GenesisError as e:
        raise UsageError(str(e)) from None
    creds_path = Path(args.credentials) if args.credentials else data / broker_auth.CREDENTIALS_FILE
    try:
        creds = broker_auth.load_credentials(creds_path)
    except ValueError as e:
        raise UsageError(str(e)) from None
    for path in args.key or ():  # people's own logins (owner CLI, dashboards)
        from tools.keys import KeyFileError, load_key
        from tools.submit import login_for

        try:
            user, pw = login_for(load_key(Path(path)), g.domain)
        except KeyFileError as e:
            raise UsageError(str(e)) from None
        creds[bytes.fromhex(user)] = pw
    with Store(db, readonly=True) as store:
        state = store.load_state()
        head = store.head()
    access = access_from_state(state, g.domain)
    out = Path(args.out)
    ex = broker_auth.export_mosquitto(out, g.domain, access, creds,
                                      broker_auth.gateway_credentials(priv, g.domain))
    height = head.height if head is not None else 0
    print(f"domain {g.domain} at height {height}: {len(ex.users)} users "
          f"(gateway {ex.users[0]}) -> {out / broker_auth.PASSWD_FILE}, "
          f"{out / broker_auth.ACL_FILE}")
    for pid, why in sorted(ex.skipped.items()):
        print(f"skipped {pid}: {why}", file=sys.stderr)
    print("mosquitto needs: password_file, acl_file, allow_anonymous false, "
          "use_username_as_clientid true; reload it with SIGHUP")
    return EXIT_OK


def register(sub: argparse._SubParsersAction, data: argparse.ArgumentParser) -> None:
    """Add this area's subcommands; `data` is the parent parser with --data-dir."""
    b = sub.add_parser("broker", help="broker access control (mosquitto files)")
    bsub = b.add_subparsers(dest="broker_command", required=True, metavar="ACTION")
    e = bsub.add_parser("export", parents=[data],
                        help="write mosquitto passwd and acl files from the chain")
    e.add_argument("--out", required=True, metavar="DIR", help="folder for passwd and acl")
    e.add_argument("--key", action="append", metavar="FILE",
                   help="a person's key file whose login to include (repeatable)")
    e.add_argument("--credentials", metavar="FILE",
                   help="owner's credential store (default DATA_DIR/credentials.json)")
    e.add_argument("--authority-key", metavar="FILE",
                   help="authority key for the gateway's user (default DATA_DIR/authority.key)")
    e.set_defaults(func=cmd_export)
