"""`thingledger registry ...`: the public device registry (docs/IDENTITY.md §1).

    thingledger registry init [--block-time S] [--difficulty-bits B] [--retarget-blocks N]
    thingledger registry manufacturer --key mfr.key --name NAME [--no-mine]
    thingledger registry record --key mfr.key --pubkey HEX --model M --serial S
                                --manufactured T --warranty-end T [--no-mine]
    thingledger registry submit FILE [--no-mine]      a signed tx (binary or hex; - = stdin)
    thingledger registry mine [--blocks N] [--miner ID]
    thingledger registry show <device-id-hex | device-pubkey-hex> [--at T]
    thingledger registry verify

Every action takes --registry-dir DIR (default $THINGLEDGER_REGISTRY, else
var/registry). Times T are unix seconds or YYYY-MM-DD (UTC). `manufacturer`,
`record` and `submit` mine until their transaction is in a block unless
--no-mine (then `registry mine` later, by anyone). Exit codes: 0 ok,
1 refused / failed / not found / verification failed, 2 usage.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from tools.cli.common import (
    DEFAULT_REGISTRY_DIR,
    ENV_REGISTRY,
    EXIT_FAILED,
    EXIT_OK,
    Subparsers,
    UsageError,
    default_registry_dir,
    load_key_file,
    parse_hex,
)


def _dir(args: argparse.Namespace) -> Path:
    return Path(args.registry_dir) if args.registry_dir else default_registry_dir()


def _date(t: int) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d")


def _when(s: str) -> int:
    """Unix seconds or a YYYY-MM-DD date (midnight UTC)."""
    s = s.strip()
    if s.isdigit():
        return int(s)
    try:
        return int(datetime.strptime(s, "%Y-%m-%d").replace(tzinfo=UTC).timestamp())
    except ValueError:
        raise argparse.ArgumentTypeError("give unix seconds or YYYY-MM-DD, not %r" % s) from None


def _open(args: argparse.Namespace):  # -> gateway.registry.Registry
    from gateway.registry import RegistryError, open_registry

    try:
        return open_registry(_dir(args))
    except RegistryError as e:
        raise UsageError("%s (use --registry-dir or $%s)" % (e, ENV_REGISTRY)) from None


def _seq(reg, sender: bytes) -> int:
    """tools.submit.next_seq(), but always above what the registry has seen
    from this signer (committed or pending): a clock step back or two
    commands in one millisecond never turn into `replay`."""
    from tools.submit import next_seq

    return max(next_seq(), reg.last_seq(sender) + 1)


def _submit(reg, message: bytes, mine: bool) -> int:
    """Submit, mine until included (unless not `mine`), print the outcome."""
    from shared import errors, messages
    from shared import tx as txm

    try:
        tid = reg.submit(message)
    except errors.TLError as e:
        print("refused: %s%s" % (e.reason, " (%s)" % e.detail if e.detail else ""))
        return EXIT_FAILED
    print("tx            %s" % tid.hex())
    if not mine:
        if reg.is_pending(tid):
            print("pending       (mine it with: thingledger registry mine)")
            return EXIT_OK
    while reg.is_pending(tid):
        reg.mine(max_blocks=1)
    t = reg.tx(tid)
    if t is None:
        why = next((e for i, e in reg.last_dropped if i == tid), None)
        print("dropped: %s" % (why.reason if why else "no longer includable"))
        return EXIT_FAILED
    print("height        %d" % t.height)
    if t.status == messages.STATUS_OK:
        print("status        ok")
        return EXIT_OK
    print("failed: %s" % t.reason)
    for ev in t.events:
        if isinstance(ev, list) and len(ev) == 3 and ev[0] == "conflict":
            print("  same %s as registered device %s" % (ev[2], ev[1].hex()))
    if t.type == txm.TYPE_DEVICE_RECORD:
        print("  (the attempt is on the chain: thingledger registry show <device-id>)")
    return EXIT_FAILED


def cmd_init(args: argparse.Namespace) -> int:
    from gateway.registry import GENESIS_FILE, RegistryError, open_registry
    from gateway.registry import pow as pw

    d = _dir(args)
    if (d / GENESIS_FILE).exists():
        raise UsageError("a registry already exists in %s" % d)
    try:
        reg = open_registry(d, create=True, block_time_s=args.block_time,
                            difficulty_bits=args.difficulty_bits,
                            retarget_blocks=args.retarget_blocks)
    except RegistryError as e:
        raise UsageError(str(e)) from None
    with reg:
        g = reg.genesis
        print("registry created in %s" % d)
        print("genesis       %s" % (d / GENESIS_FILE))
        print("block 0       %s" % reg.head().hash.hex())
        print("difficulty    %d bits (about %.0f hashes per block, the easiest allowed)"
              % (g.difficulty_bits, pw.difficulty(g.target)))
        print("block time    %g s, retarget every %d blocks" % (g.block_time_s,
                                                                g.retarget_blocks))
    return EXIT_OK


def cmd_manufacturer(args: argparse.Namespace) -> int:
    from gateway.registry import DOMAIN
    from shared import tx as txm

    kp = load_key_file(args.key)
    with _open(args) as reg:
        print("manufacturer  %s (%s)" % (kp.id.hex(), args.name))
        msg = kp.sign_tx(txm.TYPE_MFR_REGISTER, DOMAIN, _seq(reg, kp.id),
                         {1: kp.public, 2: args.name})
        return _submit(reg, msg, not args.no_mine)


def cmd_record(args: argparse.Namespace) -> int:
    from gateway.registry import DOMAIN
    from shared import tx as txm

    kp = load_key_file(args.key)
    pub = parse_hex(args.pubkey, "--pubkey")
    with _open(args) as reg:
        print("device        %s" % txm.device_id(pub).hex())
        body = {1: pub, 2: args.model, 3: args.serial, 4: args.manufactured,
                5: args.warranty_end}
        msg = kp.sign_tx(txm.TYPE_DEVICE_RECORD, DOMAIN, _seq(reg, kp.id), body)
        return _submit(reg, msg, not args.no_mine)


def cmd_submit(args: argparse.Namespace) -> int:
    if args.file == "-":
        raw = sys.stdin.buffer.read()
    else:
        try:
            raw = Path(args.file).read_bytes()
        except OSError as e:
            raise UsageError("cannot read %s: %s" % (args.file, e.strerror)) from None
    try:  # hex text (what people paste) or the binary COSE_Sign1
        message = bytes.fromhex(raw.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        message = raw
    with _open(args) as reg:
        return _submit(reg, message, not args.no_mine)


def cmd_mine(args: argparse.Namespace) -> int:
    from gateway.registry import ANONYMOUS_MINER
    from gateway.registry import pow as pw

    miner = parse_hex(args.miner, "--miner") if args.miner else ANONYMOUS_MINER
    if len(miner) != len(ANONYMOUS_MINER):
        raise UsageError("--miner must be a 16-byte id (32 hex characters)")
    with _open(args) as reg:
        t0 = time.monotonic()
        heights = reg.mine(max_blocks=args.blocks, miner=miner)
        for i, e in reg.last_dropped:
            print("dropped tx %s: %s" % (i.hex(), e.reason))
        if not heights:
            print("nothing to mine (no pending transactions)")
            return EXIT_OK
        head = reg.head()
        print("mined %d block%s (height %d..%d) in %.2f s" % (
            len(heights), "" if len(heights) == 1 else "s", heights[0], heights[-1],
            time.monotonic() - t0))
        print("head          %s" % head.hash.hex())
        print("difficulty    about %.0f hashes per block" % pw.difficulty(head.target))
        left = reg.pending_count()
        if left:
            print("pending       %d (run mine again)" % left)
    return EXIT_OK


def _attempt_lines(attempts) -> list[str]:
    if not attempts:
        return []
    lines = ["refused duplicate attempts: %d" % len(attempts)]
    for a in attempts:
        lines.append("  height %d  tx %s" % (a.height, a.tx_id.hex()))
        lines.append("    by %s (%s): device %s, model %r, serial %r"
                     % (a.manufacturer_id.hex(), a.manufacturer_name, a.device_id.hex(),
                        a.model, a.serial))
        lines.append("    %s: same %s as device %s" % (a.reason, a.conflict,
                                                      a.conflict_id.hex()))
    return lines


def cmd_show(args: argparse.Namespace) -> int:
    from gateway.registry import RegistryError, RegistryView
    from shared import tx as txm

    key = parse_hex(args.device, "device id")
    if len(key) not in (txm.ID_LEN, 33):
        raise UsageError("give a device id (32 hex characters) or public key (66)")
    try:
        view = RegistryView(_dir(args))
    except RegistryError as e:
        raise UsageError("%s (use --registry-dir or $%s)" % (e, ENV_REGISTRY)) from None
    with view:
        rec = view.lookup_id(key) if len(key) == txm.ID_LEN else view.lookup(key)
        did = rec.device_id if rec else (key if len(key) == txm.ID_LEN else txm.device_id(key))
        attempts = view.attempts(did)
        if rec is None:
            print("device %s is not in the registry" % did.hex(), file=sys.stderr)
            for line in _attempt_lines(attempts):
                print(line)
            return EXIT_FAILED
        now = args.at if args.at is not None else int(time.time())
        lines = [
            "device        %s" % rec.device_id.hex(),
            "public key    %s" % rec.device_pubkey.hex(),
            "model         %s" % rec.model,
            "serial        %s" % rec.serial,
            "manufactured  %s (%d)" % (_date(rec.manufactured), rec.manufactured),
            "manufacturer  %s (%s)" % (rec.manufacturer_id.hex(), rec.manufacturer_name),
            "registered    height %d, tx %s" % (rec.height, rec.tx_id.hex()),
            "warranty: %s %s" % ("valid until" if rec.warranty_valid(now) else "expired on",
                                 _date(rec.warranty_end)),
        ]
        print("\n".join(lines + _attempt_lines(attempts)))
    return EXIT_OK


def cmd_verify(args: argparse.Namespace) -> int:
    from gateway.registry import DB_FILE, RegistryError
    from gateway.registry.params import load_genesis
    from gateway.registry.replay import verify_registry
    from gateway.registry.store import RegistryStore

    d = _dir(args)
    try:
        g = load_genesis(d)
        store = RegistryStore(d / DB_FILE, readonly=True)
    except RegistryError as e:
        raise UsageError("%s (use --registry-dir or $%s)" % (e, ENV_REGISTRY)) from None
    with store:
        rep = verify_registry(store, g, int(time.time()))
    print(rep.text())
    return EXIT_OK if rep.ok else EXIT_FAILED


def _count(s: str) -> int:
    v = int(s)
    if v < 1:
        raise argparse.ArgumentTypeError("must be >= 1")
    return v


def _bits(s: str) -> int:
    v = int(s)
    if not 0 <= v <= 63:
        raise argparse.ArgumentTypeError("must be 0..63")
    return v


def _seconds(s: str) -> float:
    v = float(s)
    if not 0.001 <= v <= 86400:
        raise argparse.ArgumentTypeError("must be 0.001 .. 86400 seconds")
    return v


def register(sub: Subparsers, data: argparse.ArgumentParser) -> None:
    """Add this area's subcommands; `data` is the parent parser with --data-dir."""
    from gateway.registry.params import DEFAULT_BITS, DEFAULT_BLOCK_TIME, DEFAULT_RETARGET

    rdir = argparse.ArgumentParser(add_help=False)
    rdir.add_argument("--registry-dir", metavar="DIR",
                      help="registry data directory (default $%s or %s)"
                      % (ENV_REGISTRY, DEFAULT_REGISTRY_DIR))
    mine = argparse.ArgumentParser(add_help=False)
    mine.add_argument("--no-mine", action="store_true",
                      help="only queue the transaction (mine later with `registry mine`)")

    reg = sub.add_parser("registry", help="the public device registry chain (proof of work)")
    rs = reg.add_subparsers(dest="registry_command", required=True, metavar="ACTION")

    def action(name: str, func, help_: str, *parents: argparse.ArgumentParser):
        p = rs.add_parser(name, parents=[rdir, *parents], help=help_)
        p.set_defaults(func=func, data_dir=None)
        return p

    p = action("init", cmd_init, "create the registry genesis and database")
    p.add_argument("--block-time", type=_seconds, default=DEFAULT_BLOCK_TIME, metavar="S",
                   help="target seconds per block (default %g)" % DEFAULT_BLOCK_TIME)
    p.add_argument("--difficulty-bits", type=_bits, default=DEFAULT_BITS, metavar="B",
                   help="genesis difficulty, about 2^B hashes per block (default %d)"
                   % DEFAULT_BITS)
    p.add_argument("--retarget-blocks", type=int, default=DEFAULT_RETARGET, metavar="N",
                   help="retarget every N blocks, 0 never (default %d)" % DEFAULT_RETARGET)

    p = action("manufacturer", cmd_manufacturer, "register a manufacturer key and name", mine)
    p.add_argument("--key", required=True, metavar="FILE", help="manufacturer key file")
    p.add_argument("--name", required=True, help="manufacturer name (1-64 characters)")

    p = action("record", cmd_record, "register a device (signed by its manufacturer)", mine)
    p.add_argument("--key", required=True, metavar="FILE", help="manufacturer key file")
    p.add_argument("--pubkey", required=True, metavar="HEX",
                   help="the device's public key (SEC1 compressed, 66 hex characters)")
    p.add_argument("--model", required=True)
    p.add_argument("--serial", required=True)
    p.add_argument("--manufactured", type=_when, required=True, metavar="T",
                   help="manufacture date: unix seconds or YYYY-MM-DD")
    p.add_argument("--warranty-end", type=_when, required=True, metavar="T",
                   help="end of warranty: unix seconds or YYYY-MM-DD")

    p = action("submit", cmd_submit, "submit a signed registry transaction", mine)
    p.add_argument("file", help="the COSE_Sign1 bytes, binary or hex ('-' reads stdin)")

    p = action("mine", cmd_mine, "mine pending transactions into blocks (anyone may)")
    p.add_argument("--blocks", type=_count, default=None, metavar="N",
                   help="at most N blocks (default: until nothing is pending)")
    p.add_argument("--miner", metavar="ID", help="miner id recorded in the headers (hex)")

    p = action("show", cmd_show, "a device's record, manufacturer and warranty")
    p.add_argument("device", help="device id (32 hex characters) or public key (66)")
    p.add_argument("--at", type=_when, default=None, metavar="T",
                   help="judge the warranty at T (default: now)")

    action("verify", cmd_verify, "re-check every block's work, links and state from genesis")
