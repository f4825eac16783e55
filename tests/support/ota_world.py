"""Helpers of the over-the-air update tests (tests/e2e/test_ota*.py): a
virtual board that is powered on again after each reset it asks for (as a
board's reset would), and releases built from the real firmware, optionally
with a changed source file."""

from __future__ import annotations

import queue
import shutil
import signal
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

from shared.ota import CHUNK
from tools import ota
from tools.build import ROOT, compile_stale
from tools.keys import KeyPair
from tools.vboard import RESET_EXIT, VirtualBoard

EXIT = "\x00exit"


class PoweredBoard:
    """A VirtualBoard whose process is started again after each exit with
    RESET_EXIT; every output line of every boot goes to one queue, and each
    process end adds a line "<exit rc>"."""

    def __init__(self, vb: VirtualBoard, build: Path, heap: str = "64k") -> None:
        self.vb = vb
        self.build = build
        self.heap = heap
        self.q: queue.Queue[str] = queue.Queue()
        self.proc: subprocess.Popen | None = None
        self.boots = 0
        self.output: list[str] = []  # every line of every boot, for a failure's message
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> PoweredBoard:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.proc = self.vb.start(self.build, heap=self.heap)
            self.boots += 1
            assert self.proc.stdout is not None
            for line in self.proc.stdout:
                self.output.append(line.rstrip())
                self.q.put(line.rstrip())
            rc = self.proc.wait()
            self.q.put(f"<exit {rc}>")
            if rc != RESET_EXIT:
                break
        self.q.put(EXIT)

    def tail(self, n: int = 40) -> str:
        """The last lines of output other than readings and receipts."""
        return "\n".join([ln for ln in self.output
                          if not ln.startswith(("reading", "receipt-verified"))][-n:])

    def kill(self) -> None:
        """Power cut: SIGKILL, no restart."""
        self._stop.set()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        if self._thread is not None:
            self._thread.join(15)

    stop = kill


def released(key: KeyPair, version: int, out: Path, *, board: str = "unix",
             patch: dict[str, Callable[[str], str]] | None = None,
             next_key: bytes | None = None, chunk: int = CHUNK) -> ota.Release:
    """A signed release of the real firmware for `board` (built by
    tools/ota.py); `patch` maps a source path (e.g. "firmware/startup.py") to
    a change of its text, compiled with mpy-cross into the release instead."""
    base = out.parent / f"{out.name}-base"
    rel = ota.release(key, board, version, base, next_key=next_key)
    if not patch and chunk == CHUNK:
        shutil.rmtree(out, ignore_errors=True)
        shutil.copytree(base, out)
        return ota.load(out)
    files = base / ota.FILES
    for rel_path, change in (patch or {}).items():
        src = out.parent / f"{out.name}-src" / rel_path
        src.parent.mkdir(parents=True, exist_ok=True)
        src.write_text(change((ROOT / rel_path).read_text()))
        compile_stale(src, files / Path(rel_path).with_suffix(".mpy"), rel_path, ("-O3",),
                      force=True)
    del rel
    return ota.write_release(out, files, key, board, version, next_key=next_key, chunk=chunk)


def flash_usage(folder: Path) -> int:
    """What the firmware's files take in a flash folder (the board's quota counts the same)."""
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
