"""`thingledger registry ...`: the public device registry (docs/IDENTITY.md §1).

    thingledger registry init [--block-time S] [--difficulty-bits B] [--retarget-blocks N]
    thingledger registry init --genesis FILE          join a registry: its registry.toml
    thingledger registry serve --broker mqtt://H:P [--mine]   a registry node
    thingledger registry manufacturer --key mfr.key --name NAME [--no-mine | --to URL]
    thingledger registry record --key mfr.key --pubkey HEX --model M --serial S
                                --manufactured T --warranty-end T [--no-mine | --to URL]
    thingledger registry submit FILE [--no-mine | --to URL]   a signed tx (binary or hex)
    thingledger registry mine [--blocks N] [--miner ID]
    thingledger registry show <device-id-hex | device-pubkey-hex> [--at T]
                              [--from URL [--confirmations N]]
    thingledger registry verify
    thingledger registry demo                          two nodes syncing on a local broker

With --to / --from the command talks to the registry nodes behind an MQTT
broker (gateway/registry/client.py) and needs only the registry's genesis:
registry.toml in --registry-dir, or --genesis FILE. `show --from` checks the
header chain's work and the record's Merkle proof itself.

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
    if args.genesis:
        from gateway.registry.params import create_genesis

        create_genesis(d, _genesis_file(args.genesis))
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


def _genesis_file(path: str):  # -> RegistryGenesis
    from gateway.db.genesis_files import read_toml
    from gateway.registry import RegistryError
    from gateway.registry.params import from_dict

    try:
        return from_dict(read_toml(Path(path), lambda m: RegistryError("bad-genesis", m)))
    except (RegistryError, OSError) as e:
        raise UsageError("genesis %s: %s" % (path, e)) from None


def _genesis(args: argparse.Namespace):  # -> RegistryGenesis
    from gateway.registry import RegistryError
    from gateway.registry.params import load_genesis

    if getattr(args, "genesis", None):
        return _genesis_file(args.genesis)
    try:
        return load_genesis(_dir(args))
    except RegistryError as e:
        raise UsageError("%s (give --genesis FILE or --registry-dir)" % e) from None


def _client(args: argparse.Namespace, url: str):  # -> RegistryClient
    from gateway.registry.client import RegistryClient

    try:
        return RegistryClient(url, _genesis(args), timeout_s=args.timeout)
    except ValueError as e:
        raise UsageError(str(e)) from None


def _remote_submit(args: argparse.Namespace, message: bytes) -> int:
    """Submit through the nodes behind --to; wait until the tx is
    --confirmations blocks deep on the heaviest chain (unless --no-mine)."""
    from gateway.registry import RegistryError
    from shared import messages

    with _client(args, args.to) as c:
        try:
            tid = c.submit(message)
        except RegistryError as e:
            print("refused: %s%s" % (e.reason.removeprefix("refused/"),
                                     " (%s)" % e.detail if e.detail else ""))
            return EXIT_FAILED
        print("tx            %s" % tid.hex())
        if args.no_mine:
            print("pending       (a node with --mine includes it)")
            return EXIT_OK
        deadline = time.monotonic() + args.wait
        while True:
            try:
                st = c.status(tid)
            except RegistryError:
                st = {}
            if st.get("height") is not None and st.get("confirmations", 0) >= args.confirmations:
                break
            if time.monotonic() > deadline:
                print("not confirmed after %g s (pending: %s)" % (args.wait, st.get("pending")))
                return EXIT_FAILED
            time.sleep(0.2)
        print("height        %d" % st["height"])
        print("confirmations %d" % st["confirmations"])
        if st.get("status") == messages.STATUS_OK:
            print("status        ok")
            return EXIT_OK
        print("failed: %s" % st.get("reason"))
        return EXIT_FAILED


def _seq_for(args: argparse.Namespace, sender: bytes) -> int:
    from tools.submit import next_seq

    if args.to:
        return next_seq()
    with _open(args) as reg:
        return _seq(reg, sender)


def _send(args: argparse.Namespace, message: bytes) -> int:
    if args.to:
        return _remote_submit(args, message)
    with _open(args) as reg:
        return _submit(reg, message, not args.no_mine)


def cmd_manufacturer(args: argparse.Namespace) -> int:
    from gateway.registry import DOMAIN
    from shared import tx as txm

    kp = load_key_file(args.key)
    print("manufacturer  %s (%s)" % (kp.id.hex(), args.name))
    msg = kp.sign_tx(txm.TYPE_MFR_REGISTER, DOMAIN, _seq_for(args, kp.id),
                     {1: kp.public, 2: args.name})
    return _send(args, msg)


def cmd_record(args: argparse.Namespace) -> int:
    from gateway.registry import DOMAIN
    from shared import tx as txm

    kp = load_key_file(args.key)
    pub = parse_hex(args.pubkey, "--pubkey")
    print("device        %s" % txm.device_id(pub).hex())
    body = {1: pub, 2: args.model, 3: args.serial, 4: args.manufactured,
            5: args.warranty_end}
    msg = kp.sign_tx(txm.TYPE_DEVICE_RECORD, DOMAIN, _seq_for(args, kp.id), body)
    return _send(args, msg)


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
    return _send(args, message)


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
    if args.source:
        return _show_remote(args, key)
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
        confirmations = view.head().height - rec.height + 1
        lines = _record_lines(rec, now) + ["confirmations %d" % confirmations]
        print("\n".join(lines + _attempt_lines(attempts)))
    return EXIT_OK


def _record_lines(rec, now: int) -> list[str]:
    return [
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


def _show_remote(args: argparse.Namespace, key: bytes) -> int:
    """Light lookup: ask the nodes behind --from, check work and proof here."""
    from gateway.registry import RegistryError
    from shared import tx as txm

    checkpoint = None
    if args.checkpoint:
        h, _, hx = args.checkpoint.partition(":")
        if not h.isdigit():
            raise UsageError("--checkpoint: HEIGHT:BLOCK-HASH")
        checkpoint = (int(h), parse_hex(hx, "--checkpoint hash", 32))
    with _client(args, args.source) as c:
        try:
            found = c.lookup(key, checkpoint=checkpoint)
        except RegistryError as e:
            print("lookup failed: %s%s" % (e.reason, " (%s)" % e.detail if e.detail else ""),
                  file=sys.stderr)
            return EXIT_FAILED
    chain_line = "checked       %d headers from %s to height %d (work %d), " \
        "record proof %d bytes, answered by node %s" % (
            found.headers, "checkpoint %d" % checkpoint[0] if checkpoint else "genesis",
            found.height, found.work, found.proof_bytes, found.node)
    if found.record is None:
        did = key if len(key) == txm.ID_LEN else txm.device_id(key)
        print("device %s is not in the registry (as far as the heaviest chain's node "
              "says)" % did.hex(), file=sys.stderr)
        print(chain_line)
        return EXIT_FAILED
    now = args.at if args.at is not None else int(time.time())
    print("\n".join(_record_lines(found.record, now)))
    print(chain_line)
    ok = found.confirmations >= args.confirmations
    print("confirmations %d (%s: %d required)" % (found.confirmations,
                                                  "confirmed" if ok else "NOT confirmed",
                                                  args.confirmations))
    return EXIT_OK if ok else EXIT_FAILED


def cmd_serve(args: argparse.Namespace) -> int:
    import signal
    import threading

    from gateway.registry import ANONYMOUS_MINER, RegistryError
    from gateway.registry.node import RegistryNode

    miner = parse_hex(args.miner, "--miner") if args.miner else ANONYMOUS_MINER
    if len(miner) != len(ANONYMOUS_MINER):
        raise UsageError("--miner must be a 16-byte id (32 hex characters)")
    try:
        node = RegistryNode(_dir(args), args.broker, mine=args.mine, miner=miner,
                            node_id=args.node_id, log=lambda s: print(s, flush=True),
                            max_drift_s=args.max_drift, reorg_window=args.reorg_window)
    except (RegistryError, ValueError) as e:
        raise UsageError("%s (use --registry-dir or $%s)" % (e, ENV_REGISTRY)) from None
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    node.run(stop)
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from tools.registry_demo import demo

    return EXIT_OK if demo(print) else EXIT_FAILED


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
    from gateway.registry.forks import REORG_WINDOW
    from gateway.registry.params import DEFAULT_BITS, DEFAULT_BLOCK_TIME, DEFAULT_RETARGET
    from gateway.registry.replay import MAX_FUTURE_S

    rdir = argparse.ArgumentParser(add_help=False)
    rdir.add_argument("--registry-dir", metavar="DIR",
                      help="registry data directory (default $%s or %s)"
                      % (ENV_REGISTRY, DEFAULT_REGISTRY_DIR))
    mine = argparse.ArgumentParser(add_help=False)
    mine.add_argument("--no-mine", action="store_true",
                      help="only queue the transaction (mine later with `registry mine`)")
    mine.add_argument("--to", metavar="URL", default=None,
                      help="send to the registry nodes behind this broker (mqtt://host:port)")
    mine.add_argument("--confirmations", type=_count, default=1, metavar="N",
                      help="with --to: wait until the tx is N blocks deep (default 1)")
    mine.add_argument("--wait", type=_seconds, default=60.0, metavar="S",
                      help="with --to: give up waiting after S seconds (default 60)")
    remote = argparse.ArgumentParser(add_help=False)
    remote.add_argument("--genesis", metavar="FILE", default=None,
                        help="the registry's registry.toml (default: the one in --registry-dir)")
    remote.add_argument("--timeout", type=_seconds, default=5.0, metavar="S",
                        help="seconds to wait for a node's answer (default 5)")

    reg = sub.add_parser("registry", help="the public device registry chain (proof of work)")
    rs = reg.add_subparsers(dest="registry_command", required=True, metavar="ACTION")

    def action(name: str, func, help_: str, *parents: argparse.ArgumentParser):
        p = rs.add_parser(name, parents=[rdir, *parents], help=help_)
        p.set_defaults(func=func, data_dir=None)
        return p

    p = action("init", cmd_init, "create the registry genesis and database")
    p.add_argument("--genesis", metavar="FILE", default=None,
                   help="join an existing registry: copy its registry.toml (then the "
                   "other options are ignored)")
    p.add_argument("--block-time", type=_seconds, default=DEFAULT_BLOCK_TIME, metavar="S",
                   help="target seconds per block (default %g)" % DEFAULT_BLOCK_TIME)
    p.add_argument("--difficulty-bits", type=_bits, default=DEFAULT_BITS, metavar="B",
                   help="genesis difficulty, about 2^B hashes per block (default %d)"
                   % DEFAULT_BITS)
    p.add_argument("--retarget-blocks", type=int, default=DEFAULT_RETARGET, metavar="N",
                   help="retarget every N blocks, 0 never (default %d)" % DEFAULT_RETARGET)

    p = action("manufacturer", cmd_manufacturer, "register a manufacturer key and name", mine,
               remote)
    p.add_argument("--key", required=True, metavar="FILE", help="manufacturer key file")
    p.add_argument("--name", required=True, help="manufacturer name (1-64 characters)")

    p = action("record", cmd_record, "register a device (signed by its manufacturer)", mine,
               remote)
    p.add_argument("--key", required=True, metavar="FILE", help="manufacturer key file")
    p.add_argument("--pubkey", required=True, metavar="HEX",
                   help="the device's public key (SEC1 compressed, 66 hex characters)")
    p.add_argument("--model", required=True)
    p.add_argument("--serial", required=True)
    p.add_argument("--manufactured", type=_when, required=True, metavar="T",
                   help="manufacture date: unix seconds or YYYY-MM-DD")
    p.add_argument("--warranty-end", type=_when, required=True, metavar="T",
                   help="end of warranty: unix seconds or YYYY-MM-DD")

    p = action("submit", cmd_submit, "submit a signed registry transaction", mine,
               remote)
    p.add_argument("file", help="the COSE_Sign1 bytes, binary or hex ('-' reads stdin)")

    p = action("mine", cmd_mine, "mine pending transactions into blocks (anyone may)")
    p.add_argument("--blocks", type=_count, default=None, metavar="N",
                   help="at most N blocks (default: until nothing is pending)")
    p.add_argument("--miner", metavar="ID", help="miner id recorded in the headers (hex)")

    p = action("show", cmd_show, "a device's record, manufacturer and warranty", remote)
    p.add_argument("--from", dest="source", metavar="URL", default=None,
                   help="light lookup from the registry nodes behind this broker: the "
                   "header chain's work and the record's proof are checked here")
    p.add_argument("--confirmations", type=_count, default=1, metavar="N",
                   help="with --from: blocks on top required to call it confirmed (default 1)")
    p.add_argument("--checkpoint", metavar="HEIGHT:HASH", default=None,
                   help="with --from: check headers from this block, which you trust, "
                   "instead of from genesis")
    p.add_argument("device", help="device id (32 hex characters) or public key (66)")
    p.add_argument("--at", type=_when, default=None, metavar="T",
                   help="judge the warranty at T (default: now)")

    action("verify", cmd_verify, "re-check every block's work, links and state from genesis")

    p = action("serve", cmd_serve, "run a registry node on an MQTT broker (syncs, validates, "
               "follows the heaviest chain)")
    p.add_argument("--broker", required=True, metavar="URL", help="mqtt://host:port")
    p.add_argument("--mine", action="store_true", help="mine pending transactions into blocks")
    p.add_argument("--miner", metavar="ID", help="miner id recorded in the headers (hex)")
    p.add_argument("--node-id", default=None, metavar="NAME",
                   help="this node's name on the wire (default: random)")
    p.add_argument("--max-drift", type=int, default=MAX_FUTURE_S, metavar="S",
                   help="refuse blocks more than S seconds in the future (default %d)"
                   % MAX_FUTURE_S)
    p.add_argument("--reorg-window", type=_count, default=REORG_WINDOW, metavar="N",
                   help="keep side branches only within N blocks' work of the head "
                   "(default %d)" % REORG_WINDOW)

    action("demo", cmd_demo, "two registry nodes syncing on a local broker")
