"""Power cuts during an over-the-air update (docs/OTA.md): the board's
process is killed (SIGKILL) at every step of the swap, and in the middle of
the download; powered on again, it always boots a whole version, and the
update completes on its own (the download resumes where it stopped)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from tests.support.brokers import AmqttBroker
from tests.support.e2e_devices import GatewayThread
from tests.support.mpyrun import firmware_build
from tests.support.ota_world import PoweredBoard, released
from tests.support.waits import wait_line
from tools import ota
from tools.keys import new_key
from tools.vboard import VirtualBoard

DOMAIN = "demo"
SWAP_STEPS = range(1, 8)  # firmware/ota.py Updater._swap


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """One broker, gateway and published release for every cut (each cut has
    its own board)."""
    amqtt = AmqttBroker()
    broker = amqtt.start()
    tmp = tmp_path_factory.mktemp("ota-power")
    gw = GatewayThread(tmp / "gateway", broker.url, block_interval=0.3).start()
    try:
        mfr = new_key(tmp / "mfr.key")
        rel = released(mfr, 2, tmp / "rel2")
        ota.publish(broker.url, DOMAIN, rel)
        yield gw, broker, mfr, rel, tmp
    finally:
        gw.stop()
        amqtt.close()


def _configure(vb: VirtualBoard, gw, broker, **cfg) -> None:
    vb.configure(domain=DOMAIN, authority_hex=gw.gw.led.genesis.authority.hex(),
                 host=broker.host, port=broker.port, interval_ms=300, ota_hold_s=0, **cfg)


def _bootable(flash: Path, rel: ota.Release) -> str:
    """The version the boot file would run, checked whole: every file of the
    release for version 2; the root firmware for 0."""
    state = flash / "ota" / "state"
    active = state.read_text().split()[0] if state.exists() else "0"
    if active == "2":
        for (path, size, digest) in ota.entries(rel.manifest):
            data = (flash / "fw" / "2" / path).read_bytes()
            assert len(data) == size and hashlib.sha256(data).digest() == digest, path
    else:
        assert active == "0", active
    return active


@pytest.mark.micropython
@pytest.mark.parametrize("step", SWAP_STEPS)
def test_killed_at_every_swap_step_boots_a_whole_version(world, step):
    gw, broker, mfr, rel, tmp = world
    vb = VirtualBoard(f"cut-{step}", tmp / f"cut-{step}")
    _configure(vb, gw, broker, ota_pause_step=step)
    vb.pin_keys([mfr.public])
    board = PoweredBoard(vb, firmware_build()).start()
    seen: list[str] = []
    try:
        wait_line(board.q, rf"^ota-step n={step}$", 90, seen)  # held there: the cut comes now
    finally:
        board.kill()
    before = _bootable(vb.flash, rel)
    assert before == ("2" if step >= 5 else "0")  # step 5 wrote the state file
    _configure(vb, gw, broker)  # powered on again, no hold
    board = PoweredBoard(vb, firmware_build()).start()
    try:
        wait_line(board.q, rf"^boot version={before}$", 60, seen)
        wait_line(board.q, r"^ota-confirmed version=2", 90, seen)
        assert _bootable(vb.flash, rel) == "2"
    finally:
        board.stop()
        print(board.tail())
    assert not [ln for ln in seen if "Traceback" in ln], "\n".join(seen)


@pytest.mark.micropython
def test_a_download_cut_in_the_middle_resumes(world):
    gw, broker, mfr, rel, tmp = world
    vb = VirtualBoard("cut-download", tmp / "cut-download")
    _configure(vb, gw, broker)
    vb.pin_keys([mfr.public])
    board = PoweredBoard(vb, firmware_build()).start()
    seen: list[str] = []
    n = len(rel.files)
    try:
        wait_line(board.q, rf"^ota-file {n // 2}/{n} ", 90, seen)
    finally:
        board.kill()
    assert _bootable(vb.flash, rel) == "0"
    board = PoweredBoard(vb, firmware_build()).start()
    try:
        wait_line(board.q, r"^boot version=0$", 60, seen)
        first = ota.entries(rel.manifest)[0]
        # the files fetched before the cut are kept (checked again, not fetched again)
        wait_line(board.q, rf"^ota-resume file=0 offset={first[1]}$", 90, seen)
        wait_line(board.q, r"^ota-confirmed version=2", 90, seen)
        assert _bootable(vb.flash, rel) == "2"
    finally:
        board.stop()
        print(board.tail())
