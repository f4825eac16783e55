"""Provisioning boards over their serial line (docs/IDENTITY.md §5).

The host drives a board with mpremote (`mpremote connect PORT resume ...`,
several commands chained with `+` in one invocation); `resume` skips the soft
reset, which the MicroPython Unix port (the virtual board behind socat) does
not have. When mpremote cannot connect and adafruit-ampy is installed, the same
operations go through ampy instead.

What runs on the board is firmware/provision.py: each call prints one line
`TL key=value ...` with public values only; the private key never crosses the
wire (`Board.call` refuses any other output).

- `flash`: compile the firmware for the board (tools/build.py, mpy-cross), copy
  every .mpy keeping its folder (shared/, firmware/, boards/), a root `main.py`
  that starts the node, and `config.json` (merged into the one on the board).
- `keygen`: the board makes (or loads) its key pair; returns pubkey + id.
- `register`: a manufacturer's DEVICE_RECORD for the board's key on the public
  registry chain (gateway.registry), mined until included.
- `claim`: the board's claim statement, the owner's CLAIM (identity builder),
  submitted to the domain's gateway (tools/submit.py); the board's MQTT
  password goes to the owner's credential store (`credentials.json`, 0600).
- `rotate`: a new key made on the board, approved by the owner, announced by
  a ROTATE_KEY signed with the old key, then switched to on the board.
- `recover`: a board whose key was lost (or revoked) gets a new key under its
  original id, signs the recover statement with it, and the owner's RECOVER
  gives the chain the new key; the credential store gets its new password.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from shared import cbor, cose, errors, p256, statements, tx
from tools.build import ROOT, BuildError, build, tool

FLASH_DIRS = ("shared", "firmware", "boards")
# the boot file (firmware/otaboot.py, compiled to the root): picks the firmware
# version to run (docs/OTA.md); never replaced by an update
MAIN_PY = """import otaboot
otaboot.boot()
del otaboot
try:
    from firmware.main import main
    main()
except Exception as e:
    import otaboot
    otaboot.failed(e)
"""
CONFIG_FILE = "config.json"
OTA_KEYS = "ota/keys"  # firmware/ota.py: pinned release keys, 33 bytes each
REQUIRED_CONFIG = ("domain", "authority", "broker_host", "broker_port")
CREDENTIALS_FILE = "credentials.json"
REGISTRY_DOMAIN = "registry"
YEAR_S = 365 * 24 * 3600
EXEC_TIMEOUT = 30.0
FLASH_TIMEOUT = 180.0
_NO_CONNECTION = ("failed to access", "could not enter raw repl", "no device found",
                  "could not open port", "could not exec command")

Log = Callable[[str], None]


class BoardError(RuntimeError):
    """A board operation failed; the message says what to do."""


class NoConnection(BoardError):
    pass


def build_dir(board: str) -> Path:
    """Where `flash` compiles the firmware for `board` (kept between runs)."""
    return ROOT / "build" / f"flash-{board}"


# --------------------------------------------------------------------------- links
def _run_logged(argv: list[str], timeout: float, log: Log | None,
                timeout_message: str) -> subprocess.CompletedProcess:
    """Run a board tool (mpremote, ampy); with `log`, show the call and what it
    printed. BoardError(timeout_message) if it does not finish in time."""
    if log:
        log("$ " + " ".join(argv[1:]))
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                           stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise BoardError(timeout_message) from None
    if log:
        for line in (p.stdout + p.stderr).splitlines():
            log("  " + line)
    return p


class MpremoteLink:
    """`mpremote connect PORT resume CMD [+ CMD ...]`, one process per call."""

    name = "mpremote"

    def __init__(self, port: str, log: Log | None = None) -> None:
        self.port = port
        self.log = log
        self.exe = tool("mpremote")

    def run(self, commands: Sequence[Sequence[str]], timeout: float = EXEC_TIMEOUT) -> str:
        argv = [self.exe, "connect", self.port, "resume"]
        for i, c in enumerate(commands):
            argv += (["+"] if i else []) + list(c)
        p = _run_logged(argv, timeout, self.log,
                        f"{self.port}: no answer from the board within {timeout:.0f} s "
                        "(is another program using the port? is MicroPython running?)")
        if p.returncode != 0:
            err = (p.stderr.strip() or p.stdout.strip() or f"exit code {p.returncode}")
            if any(s in err.lower() for s in _NO_CONNECTION):
                raise NoConnection(f"mpremote cannot connect to {self.port}: {err}")
            raise BoardError(f"{self.port}: {err.splitlines()[-1]}\n{p.stdout.strip()}".strip())
        return p.stdout

    def exec(self, code: str, timeout: float = EXEC_TIMEOUT) -> str:
        return self.run([["exec", code]], timeout)

    def put(self, dirs: Iterable[str], files: Sequence[tuple[Path, str]], prepare: str,
            timeout: float = FLASH_TIMEOUT) -> str:
        """Run `prepare` (Python on the board), then copy each (local, remote)
        file, all in one mpremote invocation."""
        cmds: list[list[str]] = [["exec", prepare]]
        by_dir: dict[str, list[str]] = {}
        for local, remote in files:
            folder, _, _ = remote.rpartition("/")
            if folder:
                by_dir.setdefault(folder, []).append(str(local))
        for folder, locals_ in by_dir.items():
            cmds.append(["fs", "cp", *locals_, f":{folder}/"])
        for local, remote in files:  # at the root: one by one, by name (":" alone is
            if "/" not in remote:    # the filesystem root, not the flash folder, on unix)
                cmds.append(["fs", "cp", str(local), f":{remote}"])
        return self.run(cmds, timeout)


class AmpyLink:
    """Fallback for boards mpremote cannot talk to (adafruit-ampy)."""

    name = "ampy"

    def __init__(self, port: str, exe: str, log: Log | None = None) -> None:
        self.port = port
        self.exe = exe
        self.log = log

    def _ampy(self, args: list[str], timeout: float) -> str:
        argv = [self.exe, "--port", self.port, *args]
        p = _run_logged(argv, timeout, self.log,
                        f"{self.port}: ampy got no answer within {timeout:.0f} s")
        if p.returncode != 0:
            raise BoardError(f"ampy on {self.port}: {(p.stderr or p.stdout).strip()}")
        return p.stdout

    def exec(self, code: str, timeout: float = EXEC_TIMEOUT) -> str:
        with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
            f.write(code)
        try:
            return self._ampy(["run", f.name], timeout)
        finally:
            os.unlink(f.name)

    def put(self, dirs: Iterable[str], files: Sequence[tuple[Path, str]], prepare: str,
            timeout: float = FLASH_TIMEOUT) -> str:
        out = self.exec(prepare, timeout)
        for local, remote in files:
            out += self._ampy(["put", str(local), remote], timeout)
        return out


class Board:
    """A board on a serial port. The first operation picks the link: mpremote,
    else ampy if installed, else a clear error."""

    def __init__(self, port: str, log: Log | None = None) -> None:
        self.port = port
        self.log = log
        self._link: MpremoteLink | AmpyLink | None = None

    @property
    def link_name(self) -> str:
        return self._link.name if self._link else "mpremote"

    def _do(self, op: str, *args, **kw):
        if self._link is not None:
            return getattr(self._link, op)(*args, **kw)
        link: MpremoteLink | AmpyLink = MpremoteLink(self.port, self.log)
        try:
            out = getattr(link, op)(*args, **kw)
        except NoConnection as e:
            ampy = shutil.which("ampy")
            if ampy is None:
                raise BoardError(f"{e}\nThe ampy fallback is not installed either "
                                 "(pip install adafruit-ampy); check the port name "
                                 "and that no other program (a serial console) holds it"
                                 ) from None
            if self.log:
                self.log(f"{e}; trying ampy")
            link = AmpyLink(self.port, ampy, self.log)
            out = getattr(link, op)(*args, **kw)
        self._link = link
        return out

    def exec(self, code: str, timeout: float = EXEC_TIMEOUT) -> str:
        return self._do("exec", code, timeout)

    def put(self, dirs: Iterable[str], files: Sequence[tuple[Path, str]], prepare: str,
            timeout: float = FLASH_TIMEOUT) -> str:
        return self._do("put", list(dirs), files, prepare, timeout)

    def call(self, func: str, *args: object, timeout: float = EXEC_TIMEOUT) -> dict[str, str]:
        """Run firmware.provision.<func>(*args) on the board; its `TL k=v` line
        as a dict. Any other output is an error (and is not echoed back)."""
        code = ("from firmware import provision\n"
                f"provision.{func}({', '.join(repr(a) for a in args)})")
        try:
            out = self.exec(code, timeout)
        except BoardError as e:
            if "ImportError" in str(e) or "no module named" in str(e).lower():
                last = str(e).strip().splitlines()[-1]
                raise BoardError(f"{self.port}: no ThingLedger firmware on the board ({last}); "
                                 "run `thingledger board flash` first") from None
            raise
        lines = [ln for ln in out.splitlines() if ln.strip()]
        if len(lines) != 1 or not lines[0].startswith("TL "):
            raise BoardError(f"{self.port}: unexpected answer from provision.{func} "
                             f"({len(lines)} lines)")
        return dict(kv.split("=", 1) for kv in lines[0][3:].split())


# --------------------------------------------------------------------------- flash
def parse_config(items: Iterable[str]) -> dict:
    """`key=value` settings; the value is JSON when it parses (numbers, lists,
    true/false), else text; `a.b=v` sets a nested key (wifi.ssid=Home)."""
    cfg: dict = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise BoardError(f"--config {item!r}: expected key=value")
        try:
            value = json.loads(raw)
        except ValueError:
            value = raw
        *parents, leaf = key.strip().split(".")
        node = cfg
        for p in parents:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise BoardError(f"--config {item!r}: {p} is not a group")
        node[leaf] = value
    return cfg


def merge_config(old: Mapping, new: Mapping) -> dict:
    out = dict(old)
    for k, v in new.items():
        out[k] = merge_config(out[k], v) if isinstance(v, dict) and isinstance(
            out.get(k), dict) else v
    return out


_PREPARE = """import os
def _tl(d):
    try:
        os.mkdir(d)
    except OSError:
        pass
    for n in os.listdir(d):
        if n.endswith('.py'):
            os.remove(d + '/' + n)
for _d in %r:
    _tl(_d)
try:
    print('TL-CONFIG ' + open('config.json').read().replace('\\n', ' '))
except OSError:
    pass
"""


@dataclass
class FlashResult:
    board: str
    files: int
    config: dict
    kept: list[str]
    missing: list[str]
    link: str


def flash(port: str, board: str, settings: Mapping, log: Log | None = None,
          ota_keys: Sequence[bytes] = ()) -> FlashResult:
    """Compile the firmware for `board` and copy it with main.py (the boot
    file, docs/OTA.md) and config.json. The board's existing config.json is
    kept and updated with `settings`; wallet.key, seq and the outbox on the
    board are never touched. `ota_keys` (SEC1 public keys): the keys whose
    signed releases the board accepts, pinned in ota/keys (replacing those
    pinned before: flashing over USB is the recovery path; over the air only
    a release signed by a pinned key changes them)."""
    try:
        compiled = build(build_dir(board), board)
    except BuildError as e:
        raise BoardError(str(e)) from None
    out = build_dir(board)
    files = [(p, p.relative_to(out).as_posix()) for p in compiled]
    b = Board(port, log)
    # 1st round trip: folders, stale sources, the config already on the board.
    old_cfg: dict = {}
    dirs = FLASH_DIRS + (("ota",) if ota_keys else ())
    for line in b.exec(_PREPARE % (dirs,), FLASH_TIMEOUT).splitlines():
        if line.startswith("TL-CONFIG "):
            try:
                old_cfg = json.loads(line[len("TL-CONFIG "):])
            except ValueError:
                old_cfg = {}
    cfg = merge_config(old_cfg if isinstance(old_cfg, dict) else {}, settings)
    cfg["board"] = board
    with tempfile.TemporaryDirectory(prefix="tl-flash-") as tmp:
        (Path(tmp) / "main.py").write_text(MAIN_PY)
        (Path(tmp) / CONFIG_FILE).write_text(json.dumps(cfg, indent=1, sort_keys=True) + "\n")
        extra = [(Path(tmp) / "main.py", "main.py"), (Path(tmp) / CONFIG_FILE, CONFIG_FILE)]
        if ota_keys:
            (Path(tmp) / "keys").write_bytes(b"".join(ota_keys))
            extra.append((Path(tmp) / "keys", OTA_KEYS))
        # 2nd round trip: every file.
        b.put(dirs, files + extra, "pass", FLASH_TIMEOUT)
    kept = sorted(k for k in old_cfg if k not in settings and k != "board")
    missing = [k for k in REQUIRED_CONFIG if k not in cfg]
    return FlashResult(board, len(files), cfg, kept, missing, b.link_name)


# --------------------------------------------------------------------------- keys
@dataclass(frozen=True)
class DeviceKey:
    public_key: bytes
    device_id: bytes

    @property
    def hex(self) -> str:
        return self.device_id.hex()


def pubkey_from_hex(hex_text: str) -> bytes:
    try:
        pub = bytes.fromhex(hex_text)
        p256.decompress(pub)
    except (ValueError, errors.TLError):
        raise BoardError(f"the board answered an invalid public key {hex_text[:20]!r}") from None
    return pub


def keygen(b: Board) -> DeviceKey:
    """The board's key pair (made on the board the first time): public half."""
    r = b.call("keygen")
    pub = pubkey_from_hex(r.get("pubkey", ""))
    try:
        dev_id = bytes.fromhex(r.get("id", ""))
    except ValueError:
        dev_id = b""
    if len(dev_id) != tx.ID_LEN:
        raise BoardError("the board answered an invalid device id")
    return DeviceKey(pub, dev_id)


def statement(b: Board, key: DeviceKey, kind: str, domain: str, subject: bytes) -> bytes:
    """The device's signed statement, checked here under its key."""
    st = bytes.fromhex(b.call("statement", kind, domain, subject.hex())["statement"])
    try:
        payload = cbor.loads(cose.verify1(key.public_key, st))
    except errors.TLError as e:
        raise BoardError(f"the board's {kind} statement does not verify: {e!r}") from None
    if payload != cbor.loads(statements.statement_payload(kind, domain, subject)):
        raise BoardError(f"the board signed a different {kind} statement")
    return st


def mqtt_password_message(domain: str, device_id: bytes) -> bytes:
    """What a principal's MQTT password signs (docs/IDENTITY.md §3):
    shared/statements.py's credential message, as the broker checks it."""
    return statements.credential_message(domain, device_id)


def mqtt_password(b: Board, key: DeviceKey, domain: str) -> str:
    pw = b.call("mqtt_password", domain)["password"]
    sig = bytes.fromhex(pw)
    if not p256.verify(key.public_key, mqtt_password_message(domain, key.device_id), sig):
        raise BoardError("the board's MQTT password does not verify under its key")
    return pw


# --------------------------------------------------------------------------- credentials
def credentials_path(data_dir: Path) -> Path:
    """The owner's local credential store (gateway/broker/credentials.py reads it for
    `thingledger broker export`): {"<id hex>": "<MQTT password hex>"}, mode 0600."""
    return Path(data_dir) / CREDENTIALS_FILE


def store_credential(data_dir: Path, device_id: bytes, password: str) -> Path:
    from gateway import broker as broker_auth

    path = credentials_path(data_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        broker_auth.add_credential(path, device_id, password)
    except ValueError as e:
        raise BoardError(str(e)) from None
    return path


def has_credential(data_dir: Path, device_id: bytes) -> bool:
    from gateway import broker as broker_auth

    try:
        return device_id in broker_auth.load_credentials(credentials_path(data_dir))
    except ValueError as e:
        raise BoardError(str(e)) from None


# --------------------------------------------------------------------------- registry
@dataclass
class Registered:
    key: DeviceKey
    tx_id: bytes
    height: int
    record: object  # gateway.registry.RegistryRecord
    warranty_end: int
    mfr_registered: bool  # this call also registered the manufacturer


def device_record_tx(mfr, pubkey: bytes, model: str, serial: str, manufactured: int,
                     warranty_end: int, seq: int) -> bytes:
    body = {1: pubkey, 2: model, 3: serial, 4: manufactured, 5: warranty_end}
    return mfr.sign_tx(tx.TYPE_DEVICE_RECORD, REGISTRY_DOMAIN, seq, body)


def _include(reg, message: bytes, what: str, max_blocks: int = 50):
    """Submit to the registry and mine until the tx is in a block; its TxRecord."""
    try:
        tid = reg.submit(message)
    except errors.TLError as e:
        raise BoardError(f"{what} refused by the registry: {e.reason}"
                         + (f" ({e.detail})" if getattr(e, "detail", "") else "")) from None
    for _ in range(max_blocks):
        if not reg.is_pending(tid):
            break
        reg.mine(max_blocks=1)
    t = reg.tx(tid)
    if t is None:
        why = next((e for i, e in getattr(reg, "last_dropped", []) if i == tid), None)
        raise BoardError(f"{what} {tid.hex()[:16]} was not included"
                         + (f": {why.reason}" if why is not None else ""))
    return t


def register(b: Board, mfr, model: str, serial: str, warranty_years: int,
             registry_dir: Path, mfr_name: str | None = None,
             now: int | None = None) -> Registered:
    """DEVICE_RECORD for the board's key, signed by the manufacturer `mfr`
    (tools.keys.KeyPair), mined into the public registry until included. An
    unregistered manufacturer is registered first when `mfr_name` is given."""
    from gateway.registry import DOMAIN, RegistryError, open_registry
    from shared import messages
    from tools.submit import next_seq

    key = keygen(b)
    now = int(time.time()) if now is None else now
    warranty_end = now + warranty_years * YEAR_S
    try:
        reg = open_registry(Path(registry_dir), create=True)
    except RegistryError as e:
        raise BoardError(f"registry at {registry_dir}: {e}") from None
    with reg:
        used = [0]

        def seq() -> int:  # above anything the registry saw from this signer
            last = getattr(reg, "last_seq", None)
            used[0] = max(next_seq(), used[0] + 1, last(mfr.id) + 1 if last else 0)
            return used[0]

        new_mfr = False
        if reg.manufacturer(mfr.id) is None:
            if not mfr_name:
                raise BoardError(f"manufacturer {mfr.id.hex()} is not in the registry at "
                                 f"{registry_dir}: add --mfr-name NAME, or run `thingledger "
                                 "registry manufacturer --key KEY --name NAME` first")
            m = mfr.sign_tx(tx.TYPE_MFR_REGISTER, DOMAIN, seq(), {1: mfr.public, 2: mfr_name})
            t = _include(reg, m, "MFR_REGISTER")
            if t.status != messages.STATUS_OK:
                raise BoardError(f"MFR_REGISTER failed: {t.reason}")
            new_mfr = True
        msg = device_record_tx(mfr, key.public_key, model, serial, now, warranty_end, seq())
        t = _include(reg, msg, "DEVICE_RECORD")
        if t.status != messages.STATUS_OK:
            raise BoardError(f"DEVICE_RECORD {t.id.hex()} included at height {t.height} with "
                             f"status failed: {t.reason} (the attempt is visible on the "
                             "registry; `thingledger registry show` tells the conflict)")
        return Registered(key, t.id, t.height, reg.lookup(key.public_key), warranty_end,
                          new_mfr)


# --------------------------------------------------------------------------- domain chain
def _identity_builders():  # -> gateway.identity_tx, or None in a tree without it
    try:
        from gateway.identity import statements as identity_tx
    except ImportError:
        return None
    return identity_tx


def validators_of(data_dir: Path, domain: str) -> dict:
    """The config keys of the domain's validator set when its genesis has a
    quorum (docs/CONSENSUS.md): {"validators": [hex...], "threshold": k};
    {} otherwise (the authority key alone checks the receipts)."""
    from gateway.db import genesis_files as genesis
    from gateway.node.config import GENESIS_FILE

    try:
        g = genesis.load(Path(data_dir) / GENESIS_FILE)
    except genesis.GenesisError:
        return {}
    vs = g.validator_set() if g.domain == domain and g.consensus == "quorum" else None
    if vs is None:
        return {}
    return {"validators": [p.hex() for p in vs.pubkeys], "threshold": vs.threshold}


def authority_of(data_dir: Path, domain: str) -> bytes:
    from gateway.db import genesis_files as genesis
    from gateway.node.config import GENESIS_FILE

    try:
        g = genesis.load(Path(data_dir) / GENESIS_FILE)
    except genesis.GenesisError as e:
        raise BoardError(f"{data_dir}: no domain genesis here ({e}); use --data-dir") from None
    if g.domain != domain:
        raise BoardError(f"{data_dir} holds domain {g.domain!r}, not {domain!r}")
    return g.authority


@dataclass
class Claimed:
    key: DeviceKey
    tx_id: bytes
    reply: object  # tools.submit.Reply
    credentials: Path | None


def claim(b: Board, owner, domain: str, broker_url: str, data_dir: Path,
          timeout: float = 15.0) -> Claimed:
    """The owner's CLAIM of the board into `domain`; on success the board's
    MQTT password is stored in the owner's credential store."""
    from shared import messages
    from tools.submit import login_for, next_seq, submit

    ident = _identity_builders()
    if ident is None or not hasattr(ident, "build_claim"):
        raise BoardError("the identity transactions (identity_tx.build_claim) are not "
                         "available in this build")
    authority = authority_of(data_dir, domain)
    key = keygen(b)
    st = statement(b, key, "claim", domain, owner.id)
    msg = ident.build_claim(owner, domain, key.public_key, st, next_seq())
    reply = submit(broker_url, domain, msg, authority, timeout=timeout,
                   login=login_for(owner, domain))
    creds = None
    if reply.ok and reply.status == messages.STATUS_OK:
        creds = store_credential(data_dir, key.device_id, mqtt_password(b, key, domain))
    return Claimed(key, tx.tx_id(msg), reply, creds)


def rotate_approval(owner, device_id: bytes, new_pub: bytes) -> bytes:
    """The owner's approval of a device key rotation (docs/IDENTITY.md §2)."""
    ident = _identity_builders()
    if ident is not None:
        return ident.rotate_approval(owner, device_id, new_pub)
    return cose.sign1(owner.private, cbor.dumps({1: "rotate", 2: device_id, 3: new_pub}),
                      owner.id)


@dataclass
class Rotated:
    key: DeviceKey  # after the rotation (same id)
    old_public_key: bytes
    tx_id: bytes
    reply: object
    committed: bool
    credentials: Path | None


def rotate(b: Board, owner, domain: str, broker_url: str, data_dir: Path,
           timeout: float = 15.0) -> Rotated:
    """Rotate the board's key: new key made on the board, approved by the
    owner, ROTATE_KEY signed by the old key; switched on the board only once
    the ledger has committed it (else the pending key waits for a retry)."""
    from shared import messages
    from tools.submit import login_for, submit

    authority = authority_of(data_dir, domain)
    old = keygen(b)
    new_pub = pubkey_from_hex(b.call("rotate_begin")["pubkey"])
    approval = rotate_approval(owner, old.device_id, new_pub)
    msg = bytes.fromhex(b.call("rotate_tx", domain, approval.hex())["tx"])
    t = tx.decode(msg)
    try:
        t.verify(old.public_key)
    except errors.TLError:
        raise BoardError("the board's ROTATE_KEY does not verify under its current key") from None
    if t.type != tx.TYPE_ROTATE_KEY or t.body.get(1) != new_pub or t.sender != old.device_id:
        raise BoardError("the board signed a different ROTATE_KEY")
    # the owner logs in and reads its device's reply (the board holds the old key)
    reply = submit(broker_url, domain, msg, authority, timeout=timeout,
                   login=login_for(owner, domain))
    if not (reply.ok and reply.status == messages.STATUS_OK):
        return Rotated(old, old.public_key, t.id, reply, False, None)
    r = b.call("rotate_commit")
    new = DeviceKey(pubkey_from_hex(r["pubkey"]), old.device_id)
    if new.public_key != new_pub:
        raise BoardError("the board switched to an unexpected key")
    creds = None
    if has_credential(data_dir, old.device_id):  # the password changes with the key
        creds = store_credential(data_dir, new.device_id, mqtt_password(b, new, domain))
    return Rotated(new, old.public_key, t.id, reply, True, creds)


@dataclass
class Recovered:
    key: DeviceKey  # the board's new key under the device's original id
    tx_id: bytes
    reply: object  # tools.submit.Reply
    committed: bool
    credentials: Path | None


def chain_record(data_dir: Path, device_id: bytes):  # -> DeviceRecord | None | False
    """The device's committed record from the chain in `data_dir` (read-only),
    None if the chain does not know it, False if there is no chain there."""
    from gateway.db.store import Store
    from gateway.node.config import DB_FILE

    db = Path(data_dir) / DB_FILE
    if not db.exists():
        return False
    with Store(db, readonly=True) as s:
        return s.load_state().get(device_id)


def recover(b: Board, owner, device_id: bytes, domain: str, broker_url: str, data_dir: Path,
            timeout: float = 15.0, force: bool = False) -> Recovered:
    """Re-provision a board whose key was lost (or revoked): a new key pair is
    born on the board under the device's original id, the board signs the
    recover statement with it, the owner signs and submits RECOVER; once
    committed ok the owner's credential store gets the new MQTT password.

    When the chain is at hand (DATA_DIR/chain.db) the device must be known,
    owned by `owner` and not decommissioned, checked before the board's key is
    touched. A refused RECOVER leaves the board on its new key: run it again
    (another key is made)."""
    from gateway.ledger.state import DECOMMISSIONED
    from shared import messages
    from tools.submit import login_for, next_seq, submit

    ident = _identity_builders()
    if ident is None or not hasattr(ident, "build_recover"):
        raise BoardError("the identity transactions (identity_tx.build_recover) are not "
                         "available in this build")
    if len(device_id) != tx.ID_LEN:
        raise BoardError(f"a device id is {tx.ID_LEN} bytes ({2 * tx.ID_LEN} hex characters)")
    authority = authority_of(data_dir, domain)
    rec = chain_record(data_dir, device_id)
    if rec is None:
        raise BoardError(f"device {device_id.hex()} is not in the chain at {data_dir}")
    if rec is not False:
        if rec.owner != owner.id:
            raise BoardError(f"device {device_id.hex()} is not owned by {owner.id.hex()} "
                             "(only its owner may recover it)")
        if rec.status == DECOMMISSIONED:
            raise BoardError(f"device {device_id.hex()} is decommissioned: it cannot be "
                             "recovered")
    r = b.call("recover", device_id.hex(), *((True,) if force else ()))
    key = DeviceKey(pubkey_from_hex(r.get("pubkey", "")), device_id)
    st = statement(b, key, "recover", domain, device_id)
    if cose.parse1(st).kid != device_id:
        raise BoardError("the board signs under another id than the one recovered")
    msg = ident.build_recover(owner, domain, device_id, key.public_key, st, next_seq())
    reply = submit(broker_url, domain, msg, authority, timeout=timeout,
                   login=login_for(owner, domain))
    ok = bool(reply.ok and reply.status == messages.STATUS_OK)
    creds = None
    if ok:
        creds = store_credential(data_dir, device_id, mqtt_password(b, key, domain))
    return Recovered(key, tx.tx_id(msg), reply, ok, creds)
