"""A virtual board on a serial line (docs/IDENTITY.md §5, and the design brief's MicroPython notes):
the MicroPython Unix port's REPL behind a socat pseudo-terminal, started in a
flash folder, so `mpremote connect <pty> resume ...` talks to it like a USB
board and its files land in that folder.

    socat PTY,link=<tmp>/ttyVB,raw,echo=0 EXEC:"micropython -i -X heapsize=256k",pty,raw,echo=0,stderr

`pty_board` (fixture) yields a started PtyBoard; teardown stops socat (and with
it the MicroPython it runs: both live in their own process group). socat gets
SIGTERM if the process that started it dies (tools/vboard.py die_with_parent),
and takes its MicroPython with it: a killed test run leaves no board behind.
Skips when socat is not installed (Debian package `socat`)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tools.build import tool
from tools.vboard import die_with_parent

START_TIMEOUT = 10.0


class PtyBoard:
    def __init__(self, flash: Path, tty: Path, heap: str = "256k") -> None:
        self.flash = Path(flash)
        self.tty = Path(tty)
        self.heap = heap
        self.proc: subprocess.Popen | None = None
        self.log = self.tty.with_name(self.tty.name + ".log")

    @property
    def port(self) -> str:
        return str(self.tty)

    def start(self) -> PtyBoard:
        socat = shutil.which("socat")
        if socat is None:
            pytest.skip("socat is not installed (Debian package 'socat')")
        mp = tool("micropython")
        for bad in ",:!\"' ":
            assert bad not in mp, f"socat EXEC cannot take {mp!r}"
        self.flash.mkdir(parents=True, exist_ok=True)
        logf = open(self.log, "ab")  # noqa: SIM115 - closed in stop()
        self._logf = logf
        self.proc = subprocess.Popen(
            [socat, f"PTY,link={self.tty},raw,echo=0",
             f"EXEC:{mp} -i -X heapsize={self.heap},pty,raw,echo=0,stderr"],
            cwd=self.flash, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
            start_new_session=True, preexec_fn=die_with_parent(signal.SIGTERM))
        deadline = time.monotonic() + START_TIMEOUT
        while not self.tty.exists():
            if self.proc.poll() is not None:
                raise RuntimeError(f"socat exited ({self.proc.returncode}): "
                                   f"{self.log.read_text(errors='replace')}")
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"socat made no {self.tty} in {START_TIMEOUT} s")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        try:
            os.killpg(proc.pid, signal.SIGTERM)  # socat and its micropython
        except ProcessLookupError:
            pass
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
        self._logf.close()


@pytest.fixture
def pty_board(tmp_path):
    b = PtyBoard(tmp_path / "flash", tmp_path / "ttyVB").start()
    try:
        yield b
    finally:
        b.stop()
