"""`thingledger doctor`: is this machine ready to run (or running) a gateway?

Each check returns a `Check`: its name, ok or not, what it saw, and when it
fails a hint saying what to fix. `run_checks` runs them all, in order:

- broker      an MQTT CONNECT to the broker URL is answered by a CONNACK
              within the timeout (any return code: a broker that wants a
              login still answers)
- data-dir    the data directory exists, is a directory and a file can be
              created in it
- key-files   every *.key file in the data directory is 0600 (no group or
              other bits)
- chain       the chain in the data directory verifies (gateway/db/verify.py)
- clock       the system clock is not before the head block's time (a Pi
              without a real-time clock boots in the past until NTP syncs)
- disk        free space under the data directory is at least `min_free` bytes

A check that cannot run because an earlier one failed (no data dir: no
chain) fails with the same hint rather than being skipped: exit 0 means
everything was checked and passed.
"""

from __future__ import annotations

import shutil
import stat
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from gateway.broker.embedded import parse_url
from gateway.db.genesis_files import key_too_open
from gateway.node.config import DB_FILE, GENESIS_FILE

DEFAULT_MIN_FREE = 200 * 1024 * 1024  # bytes: weeks of blocks at a board's pace
DEFAULT_TIMEOUT = 3.0  # seconds for the broker's CONNACK
CLIENT_ID = "thingledger-doctor"


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    hint: str = ""

    def line(self) -> str:
        s = f"{'ok' if self.ok else 'FAIL':<4} {self.name:<9} {self.detail}"
        return s if self.ok or not self.hint else f"{s}: {self.hint}"


def check_broker(url: str, timeout: float = DEFAULT_TIMEOUT) -> Check:
    hint = ("start the broker (sudo systemctl start mosquitto; config: docs/mosquitto.conf) "
            "or pass the right --broker URL")
    try:
        host, port = parse_url(url)
    except ValueError as e:
        return Check("broker", False, f"bad URL {url!r}: {e}", "use mqtt://host:port")
    import paho.mqtt.client as mqtt

    answered = threading.Event()
    codes: list = []

    def on_connect(client, userdata, flags, reason_code, properties) -> None:
        codes.append(reason_code)
        answered.set()

    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=CLIENT_ID,
                    protocol=mqtt.MQTTv311)
    c.connect_timeout = timeout
    c.on_connect = on_connect
    try:
        c.connect(host, port, keepalive=10)
    except OSError as e:
        return Check("broker", False, f"{url}: {e.strerror or e}", hint)
    c.loop_start()
    try:
        got = answered.wait(timeout)
    finally:
        c.disconnect()
        c.loop_stop()
    if not got:
        return Check("broker", False, f"{url}: no CONNACK in {timeout:g} s",
                     "is this port an MQTT broker?")
    rc = codes[0]
    return Check("broker", True, f"{url} answers" + ("" if not rc.is_failure else
                 f" (anonymous login refused: {rc}; devices log in)"))


def check_data_dir(data_dir: Path) -> Check:
    hint = (f"create it and give it to the gateway's user (sudo install -d -o thingledger "
            f"-m 0750 {data_dir}; the systemd unit's StateDirectory= does this)")
    if not data_dir.is_dir():
        return Check("data-dir", False, f"{data_dir} does not exist", hint)
    try:
        with tempfile.NamedTemporaryFile(dir=data_dir, prefix=".doctor-"):
            pass
    except OSError as e:
        return Check("data-dir", False, f"{data_dir} is not writable: {e.strerror}",
                     f"run as the gateway's user, or sudo chown -R thingledger {data_dir}; "
                     "is the file system mounted read-only?")
    return Check("data-dir", True, f"{data_dir} writable")


def check_key_files(data_dir: Path) -> Check:
    if not data_dir.is_dir():
        return Check("key-files", False, f"{data_dir} does not exist", "see data-dir")
    keys = sorted(data_dir.glob("*.key"))
    loose = [k for k in keys if key_too_open(k.stat().st_mode)]
    if loose:
        modes = ", ".join(f"{k.name} {stat.S_IMODE(k.stat().st_mode):04o}" for k in loose)
        return Check("key-files", False, f"readable by others: {modes}",
                     "chmod 600 " + " ".join(str(k) for k in loose))
    return Check("key-files", True, f"{len(keys)} key file(s), all 0600")


def check_chain(data_dir: Path, registry_dir: Path | None = None,
                writable: bool = True) -> tuple[Check, int | None]:
    """The chain check and the head block's time (None when there is none).
    `writable`: whether the data-dir check passed (SQLite opens a WAL
    database only where it can create its -shm file, even to read it)."""
    from gateway.db import genesis_files as genesis
    from gateway.db.store import Store
    from gateway.db.verify import verify_chain

    db, gpath = data_dir / DB_FILE, data_dir / GENESIS_FILE
    if not db.exists() or not gpath.exists():
        return Check("chain", False, f"no chain in {data_dir} (no {DB_FILE} or {GENESIS_FILE})",
                     "start the gateway once (it creates the chain), or thingledger domain "
                     f"init --data-dir {data_dir}; or point --data-dir at the chain"), None
    try:
        g = genesis.load(gpath)
    except genesis.GenesisError as e:
        return Check("chain", False, f"genesis: {e}", f"restore {gpath} from a backup"), None
    registry = None
    if registry_dir is not None:
        from gateway.registry.view import registry_lookup

        registry = registry_lookup(str(registry_dir))
    try:
        with Store(db, readonly=True) as store:
            rep = verify_chain(store, g, registry)
            head = store.head()
    except Exception as e:  # noqa: BLE001 - an unreadable file is a failed check
        hint = (f"restore {db} from a backup" if writable else
                "SQLite needs a writable data dir to open the chain: see data-dir")
        return Check("chain", False, f"cannot read {db}: {e}", hint), None
    head_time = head.time if head is not None else None
    if not rep.ok:
        return Check("chain", False, f"does not verify: {rep.error}",
                     f"thingledger chain verify --data-dir {data_dir} names the first "
                     "difference; restore the data dir from a backup"), head_time
    return Check("chain", True, f"{rep.blocks} blocks, {rep.txs} txs verify, head "
                 f"{rep.head_height}"), head_time


def check_clock(head_time: int | None, now: float | None = None) -> Check:
    now = time.time() if now is None else now
    if head_time is None:
        return Check("clock", False, "no head block to compare with", "see chain")
    if now < head_time:
        return Check("clock", False, f"now is {int(head_time - now)} s before the head "
                     "block's time", "wait for NTP (timedatectl status; "
                     "sudo systemctl enable --now systemd-timesyncd) before starting the gateway")
    return Check("clock", True, f"{int(now - head_time)} s after the head block")


def check_disk(data_dir: Path, min_free: int = DEFAULT_MIN_FREE) -> Check:
    where = data_dir if data_dir.exists() else data_dir.parent
    try:
        free = shutil.disk_usage(where).free
    except OSError as e:
        return Check("disk", False, f"{where}: {e.strerror}", "see data-dir")
    mib = 1024 * 1024
    if free < min_free:
        return Check("disk", False, f"{free // mib} MiB free, under {min_free // mib} MiB",
                     "free space (journalctl --vacuum-size=100M, apt-get clean) or move the "
                     "data dir to a bigger disk")
    return Check("disk", True, f"{free // mib} MiB free")


def run_checks(data_dir: Path, broker_url: str, *, registry_dir: Path | None = None,
               min_free: int = DEFAULT_MIN_FREE, timeout: float = DEFAULT_TIMEOUT) -> list[Check]:
    writable = check_data_dir(data_dir)
    chain, head_time = check_chain(data_dir, registry_dir, writable.ok)
    return [check_broker(broker_url, timeout), writable, check_key_files(data_dir), chain,
            check_clock(head_time), check_disk(data_dir, min_free)]

