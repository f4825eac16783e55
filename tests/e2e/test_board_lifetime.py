"""Virtual boards live and die with the process that starts them, one board
process per flash folder (tools/vboard.py: die_with_parent, FlashLock).

A `thingledger run` killed outright (SIGKILL to the runner, or to its whole
process group as a power cut or a killed terminal does) must not leave its
boards running on: they sit in their own sessions, out of the group's reach,
and a board left over would sign next to the next run's board with the same
key and seq store. And a second launch on a flash folder whose board still
runs is refused while the first goes on."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.brokers import free_port
from tests.support.mpyrun import firmware_build
from tests.support.waits import drain, lines, wait_line
from tools.build import tool
from tools.vboard import FlashInUse, VirtualBoard

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="process lifetime through Linux prctl and /proc")

GONE_TIMEOUT = 15.0


def procs_in(folder: Path) -> set[int]:
    """Live processes whose working directory is `folder` (a board runs in its
    flash folder, whoever started it)."""
    want = str(folder.resolve())
    found = set()
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if os.readlink(d / "cwd") == want and alive(int(d.name)):
                    found.add(int(d.name))
            except OSError:
                pass
    return found


def alive(pid: int) -> bool:
    """pid exists and is not a zombie (an exited board reparented to an init
    that has not reaped it yet is gone for this test)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def wait_gone(pids: set[int], timeout: float = GONE_TIMEOUT) -> set[int]:
    """Poll until none of `pids` is alive; the ones still alive at the timeout."""
    deadline = time.monotonic() + timeout
    while True:
        left = {p for p in pids if alive(p)}
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.05)


def wait_procs_in(folder: Path, n: int, timeout: float = GONE_TIMEOUT) -> set[int]:
    """Poll until `n` live processes run in `folder` (socat forks the
    MicroPython behind its pty just after making the link); those found."""
    deadline = time.monotonic() + timeout
    while True:
        found = procs_in(folder)
        if len(found) >= n or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def kill_all(pids: set[int]) -> None:
    for p in pids:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass


def start_run(cwd: Path, *extra: str) -> subprocess.Popen:
    """`thingledger run` with the given boards, no market, in its own process group."""
    return subprocess.Popen(
        [tool("thingledger"), "run", "--no-http", "--listen", f"mqtt://127.0.0.1:{free_port()}",
         "--no-market", "--interval-ms", "500", "--block-interval", "0.3", *extra],
        cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
        start_new_session=True)


def board_pids(flashes: list[Path], seen: list[str]) -> dict[Path, int]:
    """The one board process running in each flash folder."""
    got = {f: procs_in(f) for f in flashes}
    assert all(len(p) == 1 for p in got.values()), (got, seen[-30:])
    return {f: next(iter(p)) for f, p in got.items()}


@pytest.mark.micropython
@pytest.mark.parametrize("kill", ["runner", "group"])
def test_killed_run_takes_its_boards_with_it(tmp_path, kill):
    flashes = [tmp_path / "var" / "boards" / f"board-{i}" for i in (1, 2)]
    run = start_run(tmp_path, "--boards", "2")
    q, seen = lines(run), []
    pids: dict[Path, int] = {}
    try:
        for _ in flashes:
            wait_line(q, r"board-\d +online id=", 60, seen)
        pids = board_pids(flashes, seen)
        if kill == "runner":
            os.kill(run.pid, signal.SIGKILL)
        else:
            os.killpg(run.pid, signal.SIGKILL)
        run.wait(10)
        left = wait_gone(set(pids.values()))
        assert not left, f"board processes {sorted(left)} outlived their runner (killed: {kill})"
        assert not any(procs_in(f) for f in flashes)
    finally:
        if run.poll() is None:
            run.kill()
            run.wait(10)
        kill_all(set(pids.values()) | {p for f in flashes for p in procs_in(f)})


@pytest.mark.micropython
def test_a_second_run_on_a_board_folder_in_use_is_refused(tmp_path):
    """A second `thingledger run` (here with its own gateway data, the boards
    of the first) is refused with a message and a non-zero exit; the first
    run's board keeps running, alone on its folder, and Ctrl-C still stops
    the first run cleanly."""
    boards = tmp_path / "var" / "boards"
    flash = boards / "board-1"
    first = start_run(tmp_path, "--boards", "1")
    q, seen = lines(first), []
    pids: dict[Path, int] = {}
    try:
        wait_line(q, r"board-1 +online id=", 60, seen)
        pids = board_pids([flash], seen)
        second = subprocess.run(
            [tool("thingledger"), "run", "--no-http", "--listen",
             f"mqtt://127.0.0.1:{free_port()}", "--no-market", "--boards", "1", "--data-dir", str(tmp_path / "other" / "gateway"),
             "--boards-dir", str(boards), "--seconds", "5"],
            cwd=tmp_path, capture_output=True, text=True, timeout=60)
        out = second.stdout + second.stderr
        assert second.returncode != 0, out
        assert re.search(rf"board-1: flash folder \S*board-1 is in use by another board "
                         rf"process \(board pid {pids[flash]}, started by pid {first.pid}\)",
                         out), out
        assert "chain demo" not in out, out  # refused before its gateway started
        assert procs_in(flash) == {pids[flash]}  # the first board runs on, alone
        wait_line(q, r"board-1 +receipt-verified", 30, seen)  # and still works

        first.send_signal(signal.SIGINT)  # Ctrl-C
        assert first.wait(30) == 0, "\n".join(drain(q, seen)[-30:])
        drain(q, seen)
        assert any(re.search(r"gateway +stopped at height \d+", s) for s in seen), seen[-30:]
        assert not wait_gone({pids[flash]})
    finally:
        if first.poll() is None:
            first.kill()
            first.wait(10)
        kill_all(set(pids.values()) | procs_in(flash))


@pytest.mark.micropython
def test_virtual_board_start_refuses_a_busy_flash_folder(tmp_path):
    """VirtualBoard.start, as the firmware tests and benches use it: a second
    start on the same folder raises FlashInUse while the first board runs; once
    it is gone the folder is free again (the lock ends with the board process)."""
    vb = VirtualBoard("one", tmp_path / "flash")
    vb.configure(domain="demo", authority_hex="00" * 65, host="127.0.0.1", port=free_port())
    first = vb.start(firmware_build(), heap="64k")
    try:
        with pytest.raises(FlashInUse) as refused:
            VirtualBoard("two", tmp_path / "flash").start(firmware_build(), heap="64k")
        assert refused.value.flash == tmp_path / "flash"
        assert f"board pid {first.pid}" in refused.value.holder
        assert first.poll() is None and procs_in(tmp_path / "flash") == {first.pid}
    finally:
        first.kill()
        first.wait(10)
        first.stdout.close()
    again = vb.start(firmware_build(), heap="64k")
    again.kill()
    again.wait(10)
    again.stdout.close()


# a host process that starts a board, says its pid, and waits to be killed; the
# board's output goes to /dev/null, so no broken pipe can end it either
DIES_WITH_PARENT = """
import subprocess, sys, time
from pathlib import Path
sys.path.insert(0, {root!r})
from tools.vboard import VirtualBoard
vb = VirtualBoard("orphan", Path({flash!r}))
vb.configure(domain="demo", authority_hex="00" * 65, host="127.0.0.1", port={port})
print(vb.start(Path({build!r}), heap="64k", stdout=subprocess.DEVNULL).pid, flush=True)
time.sleep(120)
"""


@pytest.mark.micropython
def test_virtual_board_dies_with_the_process_that_started_it(tmp_path):
    flash = tmp_path / "flash"
    parent = subprocess.Popen(
        [sys.executable, "-c", DIES_WITH_PARENT.format(
            root=str(Path(__file__).resolve().parents[2]), flash=str(flash), port=free_port(), build=str(firmware_build()))],
        stdout=subprocess.PIPE, text=True)
    pid = 0
    try:
        pid = int(parent.stdout.readline())
        assert alive(pid)
        parent.kill()
        parent.wait(10)
        assert not wait_gone({pid}), "the board outlived the process that started it"
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait(10)
        parent.stdout.close()
        kill_all({pid} | procs_in(flash) if pid else procs_in(flash))


# the same for a serial virtual board: socat and the MicroPython REPL behind it
PTY_DIES_WITH_PARENT = """
import sys, time
from pathlib import Path
sys.path.insert(0, {root!r})
from tests.support.vboard_pty import PtyBoard
b = PtyBoard(Path({flash!r}), Path({tty!r})).start()
print(b.proc.pid, flush=True)
time.sleep(120)
"""


def test_serial_virtual_board_dies_with_the_process_that_started_it(tmp_path):
    if shutil.which("socat") is None:
        pytest.skip("socat is not installed (Debian package 'socat')")
    flash = tmp_path / "flash"
    root = Path(__file__).resolve().parents[2]
    parent = subprocess.Popen(
        [sys.executable, "-c", PTY_DIES_WITH_PARENT.format(
            root=str(root), flash=str(flash),
            tty=str(tmp_path / "ttyVB"))],
        stdout=subprocess.PIPE, text=True)
    board: set[int] = set()
    try:
        socat = int(parent.stdout.readline())
        board = {socat} | wait_procs_in(flash, 2)  # socat and the MicroPython it runs
        assert len(board) == 2 and all(alive(p) for p in board), board
        parent.kill()
        parent.wait(10)
        left = wait_gone(board)
        assert not left, f"{sorted(left)} outlived the process that started the serial board"
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait(10)
        parent.stdout.close()
        kill_all(board | procs_in(flash))
