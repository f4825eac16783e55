"""What every `thingledger` verb group shares: exit codes, UsageError, the
data and registry directories, argument types and parent parsers, and the
helpers that read arguments (hex, ids, public keys, key files, the domain's
genesis) and submit a signed transaction with a checked receipt.

Verb modules (tools/cli/<group>.py) import this module and libraries only,
never one another; tools/cli/app.py puts them together.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gateway.db.store import Store
    from gateway.ledger.genesis import Genesis
    from gateway.ledger.state import State
    from tools.keys import KeyPair

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
ENV_DATA = "THINGLEDGER_DATA"
ENV_REGISTRY = "THINGLEDGER_REGISTRY"
DEFAULT_REGISTRY_DIR = "var/registry"
DEFAULT_BROKER = "mqtt://127.0.0.1:1883"

# what `add_subparsers()` returns: every verb group's register(sub, data) adds to it
Subparsers = argparse._SubParsersAction


class UsageError(Exception):
    """Bad arguments or missing input: `thingledger: <message>`, exit 2."""


# ---- directories ------------------------------------------------------------------

def default_data_dir() -> Path:
    return Path(os.environ.get(ENV_DATA) or "var/gateway")


def data_dir(args: argparse.Namespace) -> Path:
    return Path(args.data_dir) if args.data_dir else default_data_dir()


def default_registry_dir() -> Path:
    return Path(os.environ.get(ENV_REGISTRY) or DEFAULT_REGISTRY_DIR)


def open_store(args: argparse.Namespace) -> Store:
    """The chain database in the data dir, read-only (works while the gateway writes)."""
    from gateway.db.store import Store
    from gateway.node.config import DB_FILE

    db = data_dir(args) / DB_FILE
    if not db.exists():
        raise UsageError("no chain database at %s (use --data-dir or $%s)" % (db, ENV_DATA))
    return Store(db, readonly=True)


def load_state(args: argparse.Namespace) -> State:
    """The committed state of the chain in the data dir."""
    with open_store(args) as st:
        return st.load_state()


# ---- argument types ---------------------------------------------------------------

def non_negative_int(s: str) -> int:
    v = int(s)
    if v < 0:
        raise argparse.ArgumentTypeError("must be >= 0")
    return v


def positive_float(s: str) -> float:
    v = float(s)
    if not v > 0:
        raise argparse.ArgumentTypeError("must be > 0")
    return v


def non_negative_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return v


def parse_hex(value: str, what: str, length: int | None = None) -> bytes:
    try:
        b = bytes.fromhex(value.strip())
    except ValueError:
        raise UsageError("%s must be hex, got %r" % (what, value)) from None
    if length is not None and len(b) != length:
        raise UsageError("%s must be %d bytes (%d hex chars)" % (what, length, 2 * length))
    return b


def parse_id(value: str, what: str) -> bytes:
    from shared import tx as txm

    return parse_hex(value, what, txm.ID_LEN)


def parse_pubkey(value: str, what: str) -> bytes:
    from gateway.ledger.validate import valid_public_key

    b = parse_hex(value, what, 33)
    if not valid_public_key(b):
        raise UsageError("%s is not a compressed P-256 public key" % what)
    return b


def load_key_file(path: str) -> KeyPair:
    from tools.keys import KeyFileError, load_key

    try:
        return load_key(Path(path))
    except KeyFileError as e:
        raise UsageError(str(e)) from None


# ---- parent parsers ---------------------------------------------------------------

def data_parent() -> argparse.ArgumentParser:
    """--data-dir, which every command that reads or writes a domain takes."""
    data = argparse.ArgumentParser(add_help=False)
    data.add_argument("--data-dir", metavar="DIR",
                      help="gateway data directory (default $%s or var/gateway)" % ENV_DATA)
    return data


def network_parent(data: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The options every submitting command takes."""
    net = argparse.ArgumentParser(add_help=False, parents=[data])
    net.add_argument("--broker", metavar="URL", default=DEFAULT_BROKER,
                     help="MQTT broker (default %s)" % DEFAULT_BROKER)
    net.add_argument("--domain", metavar="NAME", help="domain (default: from DIR/genesis.toml)")
    net.add_argument("--authority", metavar="HEX",
                     help="authority public key that signs headers (default: from genesis)")
    net.add_argument("--timeout", type=float, default=15.0, metavar="S",
                     help="seconds to wait for the receipt (default 15)")
    net.add_argument("--seq", type=non_negative_int, default=0, help=argparse.SUPPRESS)
    return net


def key_parent() -> argparse.ArgumentParser:
    key = argparse.ArgumentParser(add_help=False)
    key.add_argument("--key", required=True, metavar="FILE", help="key file (64 hex chars)")
    return key


# ---- the domain and submitting ----------------------------------------------------

def genesis_of(args: argparse.Namespace) -> Genesis | None:
    """The genesis in --data-dir, None when there is none."""
    from gateway.db import genesis_files as genesis
    from gateway.node.config import GENESIS_FILE

    p = Path(args.data_dir) / GENESIS_FILE
    if not p.exists():
        return None
    try:
        return genesis.load(p)
    except genesis.GenesisError as e:
        raise UsageError(str(e)) from None


def domain_of(args: argparse.Namespace) -> str:
    if args.domain:
        return args.domain
    g = genesis_of(args)
    if g is None:
        raise UsageError("--domain is needed (no genesis in %s)" % args.data_dir)
    return g.domain


def authority_of(args: argparse.Namespace) -> bytes:
    if args.authority:
        return parse_pubkey(args.authority, "--authority")
    g = genesis_of(args)
    if g is None:
        raise UsageError("--authority HEX is needed (no genesis in %s to read it from)"
                         % args.data_dir)
    return g.authority


def seq_of(args: argparse.Namespace) -> int:
    """--seq, else milliseconds since the epoch (tools.submit.next_seq)."""
    from tools.submit import next_seq

    return args.seq if args.seq else next_seq()


def submit_tx(args: argparse.Namespace, what: str, message: bytes) -> int:
    """Submit a signed transaction, print one result line; EXIT_OK only when
    committed with status ok."""
    from shared import messages
    from shared import tx as txm
    from tools.submit import SubmitError, login_for, submit, validators_of

    authority = authority_of(args)
    domain = domain_of(args)
    login = login_for(load_key_file(args.key), domain, txm.decode(message).sender)
    try:
        reply = submit(args.broker, domain, message, authority, timeout=args.timeout,
                       login=login, validators=validators_of(genesis_of(args)))
    except SubmitError as e:
        print("%s: %s" % (what, e), file=sys.stderr)
        return EXIT_FAILED
    print("%s: %s" % (what, reply.describe()))
    return EXIT_OK if reply.ok and reply.status == messages.STATUS_OK else EXIT_FAILED


def send_tx(args: argparse.Namespace, what: str, type_: int, body: dict[int, Any]) -> int:
    """Sign a transaction of `type_` with --key (seq, fee 0) and submit it."""
    from shared import tx as txm

    kp = load_key_file(args.key)
    msg = txm.make(kp.private, kp.id, type_, domain_of(args), seq_of(args), 0, body)
    return submit_tx(args, what, msg)
