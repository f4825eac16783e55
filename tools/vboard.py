"""Virtual boards: the real firmware under the MicroPython Unix port.

A virtual board is a flash folder (its wallet, seq reservation, outbox and
config.json live there) and a `micropython -X heapsize=64k` process started in
it with the compiled firmware (tools/build.py) on sys.path. The folder is
private to its user (0700) and the board process runs with umask 077, so the
wallet it writes (wallet.key, wallet.new) is 0600: the Unix port has no
chmod (configure() also tightens a folder and wallet from an older run). A board given an
"offer" or a "need" (docs/MARKET.md) also runs firmware/market.py and starts
with MARKET_HEAP unless told otherwise: on the 64-bit Unix port the market
roles do not fit in 64 KiB yet (bench/README.md, "Market boards").

Lifetime: a board process dies with the process that starts it (Linux
parent-death signal, `die_with_parent`), so a runner killed without warning
(SIGKILL to it or to its process group) leaves no board running on; and one
flash folder holds one board process at a time (`FlashLock`): two processes
on one folder would sign with one key from one seq store."""

from __future__ import annotations

import asyncio
import ctypes
import errno
import fcntl
import json
import os
import re
import signal
import subprocess
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tools.build import tool

if TYPE_CHECKING:
    from tools.console import Console

BOARD_HEAP = "64k"
# the market roles do not run reliably at 64 KiB on the 64-bit Unix port (a
# supplier's second MATCH, a buyer's reading checks find no free run of a few
# hundred bytes: fragmentation); 66 KiB passed tests/e2e/test_firmware_market.py
# in 5 runs of 5 per role, ~5.7 KB free at the lowest, but a supplier resuming
# its agreement after a restart ran out of heap on the next notice
# (tests/e2e/test_run_restart.py, RESTART_SEED=424950431), which passes at
# 68 KiB (bench/README.md, "Round 6" and "Round 7")
MARKET_HEAP = "68k"
BOARD_UMASK = 0o077  # what a board process writes is its user's only
KEY_FILES = ("wallet.key", "wallet.new")  # firmware/wallet.py, firmware/provision.py

# the flash root's main.py (tools/board.py MAIN_PY; firmware/otaboot.py), with a step count
BOOT_MAIN = """import otaboot
otaboot.boot()
del otaboot
try:
    from firmware.main import main
    main(%s)
except Exception as e:
    import otaboot
    otaboot.failed(e)
"""
RESET_EXIT = 75  # boards/unix.py: the firmware asked for a reset (an update): start it again
OTA_KEYS = "ota/keys"  # firmware/ota.py: the pinned release keys, 33 bytes each
PR_SET_PDEATHSIG = 1  # linux/prctl.h
ROM_LINK = ".rom"  # in the flash folder: a link to the firmware build (command())
LOCK_FILE = ".board.lock"  # in the flash folder; the firmware never lists the folder's root


async def pump_lines(name: str, proc: asyncio.subprocess.Process, console: Console,
                     strip: re.Pattern[str] | None = None) -> int:
    """Show each line `proc` prints as `name`'s (without what `strip`
    matches: a child's own time stamp and name), until it ends; its exit
    code, said when it is not an ordinary end."""
    assert proc.stdout is not None
    async for raw in proc.stdout:
        text = raw.decode(errors="replace").rstrip()
        console.line(name, strip.sub("", text) if strip else text)
    rc = await proc.wait()
    if rc not in (0, RESET_EXIT, -signal.SIGTERM, -signal.SIGKILL):
        console.line(name, f"exited with code {rc}")
    return rc


async def run_board(vb: VirtualBoard, lock: FlashLock, build_dir: Path,
                    procs: dict[str, asyncio.subprocess.Process], console: Console,
                    halt: asyncio.Event, heap: str | None = None) -> None:
    """Run a virtual board (`thingledger run`); a reset it asks for (an
    update, docs/OTA.md: exit code RESET_EXIT) powers it on again, as a real
    board's reset would. In its own session (the terminal's Ctrl-C reaches
    the run, which stops the boards in order), holding its folder's lock,
    dying with the run however it dies."""
    while True:
        proc = await asyncio.create_subprocess_exec(
            *vb.command(build_dir, heap=heap), cwd=vb.flash, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT, umask=BOARD_UMASK, **lock.popen_options())
        lock.handed_over(proc.pid)
        procs[vb.name] = proc
        if halt.is_set():  # the run ended while it started
            proc.terminate()
        if await pump_lines(vb.name, proc, console) != RESET_EXIT or halt.is_set():
            return
        lock = vb.lock()  # released when the process ended


async def terminate_all(procs: Iterable[asyncio.subprocess.Process],
                        grace: float = 5.0) -> None:
    """SIGTERM every process still running, then SIGKILL (and reap) those that
    have not ended `grace` seconds later (boards, gateways and the
    coordinator of `thingledger run`)."""
    procs = list(procs)
    for p in procs:
        if p.returncode is None:
            p.terminate()
    for p in procs:
        try:
            await asyncio.wait_for(p.wait(), grace)
        except TimeoutError:
            p.kill()
            await p.wait()


def die_with_parent(sig: int = signal.SIGKILL) -> Callable[[], None] | None:
    """A Popen preexec_fn that has the kernel send the child `sig` when the
    thread that starts it dies, however it dies (PR_SET_PDEATHSIG; kept across
    exec). If that parent is already gone when the child gets there, the child
    sends itself `sig`. None where prctl is missing (not Linux): the child then
    outlives a killed parent, but FlashLock still keeps a second board off its
    folder. Start boards from a thread that lives as long as they should (the
    main thread, or the event loop's)."""
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec() -> None:  # runs in the child between fork and exec: keep it small
        prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0)
        if os.getppid() != parent:
            os.kill(os.getpid(), sig)

    return preexec


class FlashInUse(RuntimeError):
    """A board process already runs on this flash folder."""

    def __init__(self, flash: Path, holder: str) -> None:
        self.flash = flash
        self.holder = holder
        super().__init__(f"flash folder {flash} is in use by another board process"
                         f"{f' ({holder})' if holder else ''}: stop it first")


class FlashLock:
    """An exclusive flock on the flash folder's LOCK_FILE. The host process
    that launches a board takes it before the start and hands it to the board
    process (an inherited descriptor: the MicroPython Unix port has no fcntl,
    it only keeps the descriptor open), so the lock lasts exactly as long as
    the board process (and any wrapper, e.g. socat, and its children) lives.
    The kernel drops it when they die, however they die: no stale lock. The
    file itself only notes who holds it, for the refusal's message."""

    def __init__(self, flash: Path) -> None:
        self.flash = Path(flash)
        self.path = self.flash / LOCK_FILE
        self.fd: int | None = None

    def acquire(self) -> FlashLock:
        """Take the lock, or FlashInUse while a board process holds it."""
        self.flash.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip()
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EACCES):
                raise FlashInUse(self.flash, holder) from None
            raise
        self.fd = fd
        self.note(f"launcher pid {os.getpid()}")
        return self

    def note(self, holder: str) -> None:
        """Record who holds the lock (shown to whoever is refused)."""
        assert self.fd is not None
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, holder.encode() + b"\n", 0)

    def handed_over(self, pid: int) -> None:
        """The board process `pid` now holds the lock: note it and close this
        process's descriptor, so the lock ends with the board."""
        self.note(f"board pid {pid}, started by pid {os.getpid()}")
        self.release()

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def popen_options(self, sig: int = signal.SIGKILL) -> dict:
        """Popen/create_subprocess_exec keywords that start a board holding
        this lock, in its own session (the terminal's Ctrl-C reaches the
        launcher, which stops its boards in order), dying with its launcher."""
        assert self.fd is not None, "acquire() first"
        return {"pass_fds": (self.fd,), "start_new_session": True,
                "preexec_fn": die_with_parent(sig)}


@dataclass
class VirtualBoard:
    name: str
    flash: Path

    def configure(self, *, domain: str, authority_hex: str, host: str, port: int,
                  interval_ms: int = 2000, offer: dict | None = None,
                  need: dict | None = None, **extra: object) -> None:
        """Write config.json. offer: {"service", "unit", "price", "interval_s",
        "location", "valid_s", "schema"} makes the board a supplier; need:
        {"service", "max_price", "quantity", "policy", "wait_s", "location"?}
        a buyer (docs/MARKET.md, firmware/market.py)."""
        self.flash.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.flash.chmod(0o700)
        for name in KEY_FILES:
            if (self.flash / name).exists():
                (self.flash / name).chmod(0o600)
        cfg = {"name": self.name, "board": "unix", "domain": domain, "authority": authority_hex,
               "broker_host": host, "broker_port": port, "interval_ms": interval_ms, **extra}
        if offer is not None:
            cfg["offer"] = offer
        if need is not None:
            cfg["need"] = need
        (self.flash / "config.json").write_text(json.dumps(cfg, indent=1))

    def pin_keys(self, keys: list[bytes], replace: bool = True) -> None:
        """Pin the keys whose signed releases the board accepts (docs/OTA.md),
        as `thingledger board flash --ota-key` does over USB; `replace=False`
        keeps keys already pinned (a release may have rotated them)."""
        (self.flash / "ota").mkdir(mode=0o700, parents=True, exist_ok=True)
        if replace or not (self.flash / OTA_KEYS).exists():
            (self.flash / OTA_KEYS).write_bytes(b"".join(keys))

    def default_heap(self) -> str:
        """MARKET_HEAP for a board configured with an offer or a need, else BOARD_HEAP."""
        try:
            cfg = json.loads((self.flash / "config.json").read_text())
        except (OSError, ValueError):
            return BOARD_HEAP
        return MARKET_HEAP if "offer" in cfg or "need" in cfg else BOARD_HEAP

    def command(self, build_dir: Path, steps: int | None = None,
                heap: str | None = None) -> list[str]:
        heap = heap or self.default_heap()
        # the build is the board's factory firmware (version 0, like frozen
        # modules): last on sys.path, so the boot file (firmware/otaboot.py)
        # can put an installed update (fw/<version>) before it. It is reached
        # through a short link in the flash folder (the board runs there):
        # MicroPython interns each module's path for good, so a long build
        # path (a test's temporary folder) cost the board ~1 KB of heap
        self.link_build(build_dir)
        boot = (f"import sys\nsys.path.append({ROM_LINK!r})\n"
                + BOOT_MAIN % (repr(steps),))
        return [tool("micropython"), "-X", f"heapsize={heap}", "-c", boot]

    def link_build(self, build_dir: Path) -> None:
        """Point the flash folder's ROM_LINK at `build_dir` (a symbolic link,
        replaced if it points elsewhere)."""
        link, target = self.flash / ROM_LINK, Path(build_dir).resolve()
        if link.is_symlink() and Path(os.readlink(link)) == target:
            return
        self.flash.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = self.flash / f"{ROM_LINK}.{os.getpid()}.tmp"
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(target)
        os.replace(tmp, link)

    def lock(self) -> FlashLock:
        """This board's flash folder, locked (FlashInUse if a board runs on it)."""
        return FlashLock(self.flash).acquire()

    def start(self, build_dir: Path, steps: int | None = None, heap: str | None = None,
              **popen: object) -> subprocess.Popen:
        """Start the board (its output on the returned process's stdout unless
        `popen` says otherwise): FlashInUse if a board process already runs on
        its flash folder; the board dies with the calling thread."""
        lock = self.lock()
        opts = {"stdout": subprocess.PIPE, "stderr": subprocess.STDOUT, "text": True,
                "bufsize": 1, "umask": BOARD_UMASK, **lock.popen_options(), **popen}
        try:
            proc = subprocess.Popen(self.command(build_dir, steps, heap), cwd=self.flash, **opts)
        except BaseException:
            lock.release()
            raise
        lock.handed_over(proc.pid)
        return proc
