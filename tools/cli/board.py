"""`thingledger board ...`: provision a board over its serial port (docs/IDENTITY.md §5).

    thingledger board flash  --port PORT --board esp32|esp32s3|rp2040|rp2350|unix
                             [--config key=value ...] [--domain D] [--broker-host H]
                             [--broker-port P] [--authority HEX] [--ota-key HEX ...]
    thingledger board keygen --port PORT
    thingledger board register --port PORT --mfr-key K --model M --serial S
                             [--warranty-years N] [--registry-dir DIR]
    thingledger board claim  --port PORT --owner-key K --domain D [--broker URL] [--data-dir D]
    thingledger board rotate --port PORT --owner-key K --domain D [--broker URL] [--data-dir D]
    thingledger board recover --port PORT --owner-key K --device ID [--domain D] [--broker URL]
                             [--data-dir D] [--force]

Every command takes -v/--verbose (show each mpremote call and its output on
stderr). Exit codes: 0 done, 1 refused by the chain or the board, 2 usage or
connection problem.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path

from tools import board as tb
from tools.cli.common import DEFAULT_BROKER, Subparsers, default_registry_dir, parse_pubkey


def _log(args: argparse.Namespace):
    return (lambda line: print(line, file=sys.stderr)) if args.verbose else None


def _board(args: argparse.Namespace) -> tb.Board:
    return tb.Board(args.port, _log(args))


def _key(path: str, what: str):
    from tools.keys import KeyFileError, load_key

    try:
        return load_key(Path(path))
    except KeyFileError as e:
        raise tb.BoardError(f"{what} key: {e}") from None


def _date(t: int) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d")


def _admission_settings(data_dir: Path, domain: str) -> dict:
    """Devices self-register only in open domains; a claimed domain admits a
    device by its owner's claim (docs/IDENTITY.md)."""
    from gateway.db import genesis_files as genesis
    from gateway.node.config import GENESIS_FILE

    try:
        g = genesis.load(data_dir / GENESIS_FILE)
    except genesis.GenesisError:
        return {}
    return {"self_register": g.admission == "open"} if g.domain == domain else {}


def cmd_flash(args: argparse.Namespace) -> int:
    settings = tb.parse_config(args.config or [])
    for key, value in (("domain", args.domain), ("broker_host", args.broker_host),
                       ("broker_port", args.broker_port), ("authority", args.authority)):
        if value is not None:
            settings[key] = value
    if "authority" not in settings and settings.get("domain"):
        try:
            settings["authority"] = tb.authority_of(Path(args.data_dir),
                                                    settings["domain"]).hex()
            print(f"authority key from {args.data_dir} (domain {settings['domain']})")
        except tb.BoardError:
            pass
    if "self_register" not in settings and settings.get("domain"):
        settings.update(_admission_settings(Path(args.data_dir), settings["domain"]))
    if "validators" not in settings and settings.get("domain"):  # a quorum domain's set
        settings.update(tb.validators_of(Path(args.data_dir), settings["domain"]))
    if "authority" in settings:
        try:
            tb.pubkey_from_hex(str(settings["authority"]))
        except tb.BoardError:
            raise tb.BoardError("--authority: not a SEC1 public key in hex") from None
    keys = [parse_pubkey(k, "--ota-key") for k in args.ota_key or []]
    r = tb.flash(args.port, args.board, settings, _log(args), ota_keys=keys)
    print(f"flashed {args.port} ({r.board}, via {r.link}): {r.files} .mpy files, main.py, "
          f"{tb.CONFIG_FILE}" + (f", {len(keys)} pinned release key(s)" if keys else ""))
    if r.kept:
        print(f"kept from the board's {tb.CONFIG_FILE}: {', '.join(r.kept)}")
    if r.missing:
        print(f"warning: {tb.CONFIG_FILE} has no {', '.join(r.missing)}: the node will not "
              "start until set (board flash --config key=value)")
    if args.board != "unix":
        print(f"reset the board to start the node (mpremote connect {args.port} reset)")
    return 0


def cmd_keygen(args: argparse.Namespace) -> int:
    key = tb.keygen(_board(args))
    print(f"device id:  {key.hex}")
    print(f"public key: {key.public_key.hex()}")
    return 0


def cmd_register(args: argparse.Namespace) -> int:
    mfr = _key(args.mfr_key, "manufacturer")
    reg_dir = Path(args.registry_dir) if args.registry_dir else default_registry_dir()
    r = tb.register(_board(args), mfr, args.model, args.serial, args.warranty_years, reg_dir,
                    mfr_name=args.mfr_name)
    if r.mfr_registered:
        print(f"registered manufacturer {mfr.id.hex()} ({args.mfr_name})")
    print(f"registered device {r.key.hex} (public key {r.key.public_key.hex()})")
    print(f"  model {args.model}, serial {args.serial}, manufacturer {mfr.id.hex()}, "
          f"warranty until {_date(r.warranty_end)}")
    print(f"  DEVICE_RECORD {r.tx_id.hex()} at height {r.height} of the registry in {reg_dir}")
    return 0


def cmd_claim(args: argparse.Namespace) -> int:
    owner = _key(args.owner_key, "owner")
    r = tb.claim(_board(args), owner, args.domain, args.broker, Path(args.data_dir))
    print(f"claim of device {r.key.hex} by owner {owner.id.hex()} in {args.domain}: "
          f"tx {r.tx_id.hex()} {r.reply.describe()}")
    if r.credentials is None:
        return 1
    print(f"MQTT password of {r.key.hex} stored in {r.credentials}")
    return 0


def cmd_rotate(args: argparse.Namespace) -> int:
    owner = _key(args.owner_key, "owner")
    r = tb.rotate(_board(args), owner, args.domain, args.broker, Path(args.data_dir))
    print(f"ROTATE_KEY of device {r.key.hex}: tx {r.tx_id.hex()} {r.reply.describe()}")
    if not r.committed:
        print("the board keeps its current key (the new one waits for a retry)")
        return 1
    print(f"board switched to public key {r.key.public_key.hex()}")
    if r.credentials:
        print(f"new MQTT password stored in {r.credentials}")
    return 0


def cmd_recover(args: argparse.Namespace) -> int:
    owner = _key(args.owner_key, "owner")
    try:
        dev = bytes.fromhex(args.device.strip())
    except ValueError:
        raise tb.BoardError("--device must be the device id in hex") from None
    data_dir = Path(args.data_dir)
    domain = args.domain or _genesis_domain(data_dir)
    r = tb.recover(_board(args), owner, dev, domain, args.broker, data_dir, force=args.force)
    print(f"RECOVER of device {dev.hex()} by owner {owner.id.hex()} in {domain}: "
          f"tx {r.tx_id.hex()} {r.reply.describe()}")
    print(f"the board holds a new key under id {dev.hex()}: public key "
          f"{r.key.public_key.hex()}")
    if not r.committed:
        print("the chain still has the device's previous key: run board recover again "
              "(the board makes another key)")
        return 1
    print(f"new MQTT password of {dev.hex()} stored in {r.credentials}")
    return 0


def _genesis_domain(data_dir: Path) -> str:
    from gateway.db import genesis_files as genesis
    from gateway.node.config import GENESIS_FILE

    try:
        return genesis.load(data_dir / GENESIS_FILE).domain
    except genesis.GenesisError as e:
        raise tb.BoardError(f"--domain is needed (no domain genesis in {data_dir}: {e})"
                            ) from None


def _run(func):
    def wrapped(args: argparse.Namespace) -> int:
        try:
            return func(args)
        except tb.BoardError as e:
            print(f"thingledger board: {e}", file=sys.stderr)
            return 2 if isinstance(e, tb.NoConnection) or "cannot connect" in str(e) else 1
        except Exception as e:  # submit errors, registry errors: say what, no traceback
            from tools.submit import SubmitError

            if isinstance(e, SubmitError):
                print(f"thingledger board: {e}", file=sys.stderr)
                return 1
            raise
    return wrapped


def register(sub: Subparsers, data: argparse.ArgumentParser) -> None:
    """Add this area's subcommands; `data` is the parent parser with --data-dir."""
    from boards.profiles import PROFILES

    port = argparse.ArgumentParser(add_help=False)
    port.add_argument("--port", required=True, metavar="PORT",
                      help="serial port of the board (/dev/ttyUSB0, or a virtual board's pty)")
    port.add_argument("-v", "--verbose", action="store_true",
                      help="show each mpremote call and its output on stderr")

    b = sub.add_parser("board", help="provision a board: flash, keygen, register, claim, rotate, "
                                     "recover")
    bs = b.add_subparsers(dest="board_command", required=True, metavar="ACTION")

    f = bs.add_parser("flash", parents=[port, data],
                      help="compile the firmware (mpy-cross) and copy it with config.json")
    f.add_argument("--board", required=True, choices=sorted(PROFILES))
    f.add_argument("--config", action="append", metavar="KEY=VALUE",
                   help="a config.json setting (JSON value or text; wifi.ssid=... nests); "
                        "repeatable")
    f.add_argument("--ota-key", action="append", metavar="HEX",
                   help="public key whose signed firmware releases the board accepts "
                        "(docs/OTA.md; repeatable; replaces the keys pinned before)")
    f.add_argument("--domain", help="domain (chain id) the node joins")
    f.add_argument("--broker-host", help="MQTT broker host as the board sees it")
    f.add_argument("--broker-port", type=int, help="MQTT broker port")
    f.add_argument("--authority", metavar="HEX",
                   help="the domain's authority public key (default: from the genesis in "
                        "--data-dir when it is the same domain)")
    f.set_defaults(func=_run(cmd_flash))

    k = bs.add_parser("keygen", parents=[port, data],
                      help="make the board generate its key pair; print its public key and id")
    k.set_defaults(func=_run(cmd_keygen))

    r = bs.add_parser("register", parents=[port, data],
                      help="manufacturer: record the board on the public registry chain")
    r.add_argument("--mfr-key", required=True, metavar="FILE", help="manufacturer key file")
    r.add_argument("--model", required=True)
    r.add_argument("--serial", required=True)
    r.add_argument("--warranty-years", type=int, default=2, metavar="N", help="default 2")
    r.add_argument("--mfr-name", metavar="NAME",
                   help="register the manufacturer under this name first if it is not yet")
    r.add_argument("--registry-dir", metavar="DIR",
                   help="public registry data directory (default $THINGLEDGER_REGISTRY, "
                        "else var/registry)")
    r.set_defaults(func=_run(cmd_register))

    for name, helptext, func in (
            ("claim", "owner: claim the board into a domain; store its MQTT password", cmd_claim),
            ("rotate", "owner: give the board a new key (same id)", cmd_rotate)):
        c = bs.add_parser(name, parents=[port, data], help=helptext)
        c.add_argument("--owner-key", required=True, metavar="FILE", help="owner key file")
        c.add_argument("--domain", required=True)
        c.add_argument("--broker", default=DEFAULT_BROKER, metavar="URL",
                       help=f"broker of the domain's gateway (default {DEFAULT_BROKER})")
        c.set_defaults(func=_run(func))

    rc = bs.add_parser("recover", parents=[port, data],
                       help="owner: re-provision a board whose key was lost or revoked "
                            "(new key, same id)")
    rc.add_argument("--owner-key", required=True, metavar="FILE", help="owner key file")
    rc.add_argument("--device", required=True, metavar="ID", help="the device's id (hex)")
    rc.add_argument("--domain", help="domain (default: from the genesis in --data-dir)")
    rc.add_argument("--broker", default=DEFAULT_BROKER, metavar="URL",
                    help=f"broker of the domain's gateway (default {DEFAULT_BROKER})")
    rc.add_argument("--force", action="store_true",
                    help="replace a wallet on the board that holds another device id")
    rc.set_defaults(func=_run(cmd_recover))
