"""Signed over-the-air updates on virtual boards running the real firmware
under `micropython -X heapsize=64k` (docs/OTA.md): a release published over
a real broker (amqtt in-process) is fetched in chunks, checked, swapped in
and confirmed after a verified receipt, and recorded on chain; bad releases
are refused while the board keeps running its version; an update that cannot
reach the gateway is rolled back after the boot file's TRIES boots."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gateway.db.store import Store
from gateway.firmware import rules as fw_rules
from shared import cbor, cose, topics
from shared import ota as fw
from tests.support.brokers import wait_until
from tests.support.e2e_devices import GatewayThread
from tests.support.mpyrun import firmware_build
from tests.support.ota_world import PoweredBoard, flash_usage, released
from tests.support.waits import wait_line
from tools import ota
from tools.cli.app import main as cli
from tools.keys import new_key
from tools.vboard import VirtualBoard

DOMAIN = "demo"


@pytest.fixture
def world(tmp_path, amqtt_broker):
    gw = GatewayThread(tmp_path / "gateway", amqtt_broker.url, block_interval=0.3).start()
    mfr = new_key(tmp_path / "mfr.key")
    yield gw, amqtt_broker, mfr
    gw.stop()


@pytest.fixture
def mosquitto_world(tmp_path, shipped_mosquitto):
    """The same on Debian's mosquitto with the settings of docs/mosquitto.conf."""
    gw = GatewayThread(tmp_path / "gateway", shipped_mosquitto.url, block_interval=0.3).start()
    mfr = new_key(tmp_path / "mfr.key")
    yield gw, shipped_mosquitto, mfr
    gw.stop()


def _board(tmp_path: Path, gw, broker, keys, name: str = "b", **cfg) -> PoweredBoard:
    vb = VirtualBoard(name, tmp_path / name)
    vb.configure(domain=DOMAIN, authority_hex=gw.gw.led.genesis.authority.hex(),
                 host=broker.host, port=broker.port, interval_ms=300, **cfg)
    vb.pin_keys(keys)
    return PoweredBoard(vb, firmware_build())


def _publish(broker, rel: ota.Release) -> None:
    ota.publish(broker.url, DOMAIN, rel)


def _state(flash: Path) -> list[str]:
    return (flash / "ota" / "state").read_text().split()


def _device_firmware(gw) -> dict[bytes, dict[str, int]]:
    with Store(gw.cfg.data_dir / "chain.db", readonly=True) as store:
        return fw_rules.versions(store.load_state())


@pytest.mark.micropython
@pytest.mark.parametrize("broker_world", ["world", "mosquitto_world"])
def test_good_update_is_applied_confirmed_and_recorded(request, broker_world, tmp_path, capsys):
    gw, broker, mfr = request.getfixturevalue(broker_world)
    rel = released(mfr, 2, tmp_path / "rel2", patch={
        "firmware/startup.py": lambda s: s.replace('def make_node(log):\n',
                                                   'def make_node(log):\n    log("startup-v2")\n')})
    board = _board(tmp_path, gw, broker, [mfr.public]).start()
    seen: list[str] = []
    try:
        wait_line(board.q, r"^boot version=0", 60, seen)
        wait_line(board.q, r"^receipt-verified", 60, seen)
        auth = gw.gw.led.genesis.authority.hex()
        assert cli(["firmware", "publish", "--dir", str(tmp_path / "rel2"), "--key",
                    str(tmp_path / "mfr.key"), "--broker", broker.url, "--domain", DOMAIN,
                    "--authority", auth, "--data-dir", str(tmp_path / "gateway")]) == 0
        wait_line(board.q, r"^ota-offer rid=" + rel.rid.hex(), 60, seen)
        wait_line(board.q, r"^ota-phase 1 ", 60, seen)  # fetch the manifest
        wait_line(board.q, r"^ota-checked version=2", 60, seen)  # signature, board, ...
        wait_line(board.q, r"^ota-phase 3 version=2", 60, seen)  # fetch the files
        wait_line(board.q, r"^ota-swapped version=2 previous=0", 90, seen)
        wait_line(board.q, r"^boot version=2", 60, seen)
        wait_line(board.q, r"^startup-v2", 60, seen)  # the new code runs
        wait_line(board.q, r"^ota-confirmed version=2", 60, seen)  # by a verified receipt
        wait_line(board.q, r"^receipt-verified", 60, seen)
        assert _state(board.vb.flash) == ["2", "0", "c", "0"]
        # every file installed is the one the manifest signed
        for (path, _, _), data in zip(ota.entries(rel.manifest), rel.files, strict=True):
            assert (board.vb.flash / "fw" / "2" / path).read_bytes() == data
        # the chain records the release and the board's installed version
        dev = bytes.fromhex(re.search(r"online id=([0-9a-f]{32})", "\n".join(seen)).group(1))
        wait_until(lambda: _device_firmware(gw).get(dev, {}).get("version") == 2, 30,
                   what="the FIRMWARE installed tx committed")
        with Store(gw.cfg.data_dir / "chain.db", readonly=True) as store:
            state = store.load_state()
            rec = state.kv_get(fw_rules.release_key(rel.digest))
            assert rec is not None and cbor.loads(rec)[1] == 2
        capsys.readouterr()
        assert cli(["devices", "--data-dir", str(tmp_path / "gateway")]) == 0
        out = capsys.readouterr().out
        assert re.search(dev.hex() + r".*\bv2\b", out), out

        # a release replayed from before (v1, signed by the same key): ignored
        old = released(mfr, 1, tmp_path / "rel1")
        _publish(broker, old)
        wait_line(board.q, r"^ota-ignored reason=downgrade version=1", 60, seen)
        # the same with an announcement that lies about its version: the
        # updater finds v1 in the signed manifest and refuses it
        _publish_raw(broker, ANNOUNCE, fw.announcement(old.rid, 9, mfr.id))
        wait_line(board.q, r"^ota-refused reason=downgrade rid=" + old.rid.hex(), 90, seen)
        wait_line(board.q, r"^boot version=2", 60, seen)  # reset, back to the node
        wait_line(board.q, r"^receipt-verified", 60, seen)
        assert _state(board.vb.flash) == ["2", "0", "c", "0"]
    finally:
        board.stop()
        print(board.tail())
    assert not [ln for ln in seen if "Traceback" in ln], "\n".join(seen)


@pytest.mark.micropython
def test_bad_releases_are_refused_and_the_board_keeps_running(world, tmp_path):
    gw, broker, mfr = world
    other = new_key(tmp_path / "other.key")
    board = _board(tmp_path, gw, broker, [mfr.public], ota_hold_s=0).start()
    seen: list[str] = []
    good = released(mfr, 3, tmp_path / "rel3")
    try:
        wait_line(board.q, r"^receipt-verified", 60, seen)

        # signed by a key the board does not pin: ignored by the node
        stranger = released(other, 4, tmp_path / "stranger")
        _publish(broker, stranger)
        wait_line(board.q, r"^ota-ignored reason=bad-signature detail=unknown-key", 60, seen)

        # the pinned key's id but a forged signature: refused by the updater
        s1 = cbor.loads(good.signed)
        s1.value[3] = bytes(63) + b"\x01"
        _offer(broker, cbor.dumps(s1), 4, mfr.id)
        wait_line(board.q, r"^ota-refused reason=bad-signature", 90, seen)

        # a release for another board, on this board's topic
        esp = released(mfr, 5, tmp_path / "esp", board="esp32")
        _offer(broker, esp.signed, 5, mfr.id)
        wait_line(board.q, r"^ota-refused reason=wrong-board", 90, seen)

        # a release for another .mpy ABI
        _offer(broker, _resigned(mfr, good, {fw.M_ABI: "5.1", fw.M_VERSION: 6}), 6, mfr.id)
        wait_line(board.q, r"^ota-refused reason=wrong-abi", 90, seen)

        # an announcement whose manifest is another release's
        rid = bytes(8)
        _publish_raw(broker, fw.manifest_topic(ANNOUNCE, rid), good.signed)
        _publish_raw(broker, ANNOUNCE, fw.announcement(rid, 7, mfr.id))
        wait_line(board.q, r"^ota-refused reason=other-release", 90, seen)

        # a file whose bytes differ from the signed manifest: refused after download
        bad = released(mfr, 8, tmp_path / "rel8")
        bad.files[3] = bytes(len(bad.files[3]))  # same size, other bytes
        _publish(broker, bad)
        wait_line(board.q, r"^ota-refused reason=bad-hash", 90, seen)

        # after each refusal the board still runs version 0 and gets receipts
        wait_line(board.q, r"^boot version=0", 60, seen)
        wait_line(board.q, r"^receipt-verified", 60, seen)
        assert not (board.vb.flash / "ota" / "state").exists()
        assert not (board.vb.flash / "fw").exists() or {
            p.name for p in (board.vb.flash / "fw").iterdir()} <= {"stage"}
    finally:
        board.stop()
        print(board.tail())
    assert not [ln for ln in seen if "Traceback" in ln], "\n".join(seen)


ANNOUNCE = topics.firmware(DOMAIN, "unix")


def _publish_raw(broker, topic: str, payload: bytes) -> None:
    import paho.mqtt.publish as pub

    pub.single(topic, payload, qos=1, retain=True, hostname=broker.host, port=broker.port)


def _offer(broker, signed: bytes, version: int, kid: bytes) -> None:
    """A signed manifest and its announcement on this board's topics."""
    rid = fw.release_id(signed)
    _publish_raw(broker, fw.manifest_topic(ANNOUNCE, rid), signed)
    _publish_raw(broker, ANNOUNCE, fw.announcement(rid, version, kid))


def _resigned(key, rel: ota.Release, change: dict) -> bytes:
    m = dict(rel.manifest)
    m.update(change)
    return cose.sign1(key.private, cbor.dumps(m), key.id)


@pytest.mark.micropython
def test_bad_chunks_are_refused_and_asked_for_again(world, tmp_path):
    """Truncated and oversized chunks, and chunks of another release, are
    logged and asked for again; once the right ones are there the update
    completes."""
    gw, broker, mfr = world
    rel = released(mfr, 2, tmp_path / "rel2")
    other = released(mfr, 9, tmp_path / "rel9")
    board = _board(tmp_path, gw, broker, [mfr.public], ota_hold_s=0).start()
    seen: list[str] = []
    try:
        wait_line(board.q, r"^receipt-verified", 60, seen)
        for topic, payload in ota.messages(rel, DOMAIN)[:-1]:  # all but the announcement
            _publish_raw(broker, topic, payload)
        chunk = rel.manifest[fw.M_CHUNK]
        bad = {  # file index -> (what the chunk 0 topic holds, the reason)
            0: (fw.pack_chunk(rel.rid, 0, 0, rel.files[0][:chunk][:-1]), "truncated"),
            1: (fw.pack_chunk(rel.rid, 1, 0, rel.files[1][:chunk] + b"x"), "oversized"),
            2: (fw.pack_chunk(other.rid, 2, 0, other.files[2][:chunk]), "other-release"),
        }
        for i, (payload, _) in bad.items():
            _publish_raw(broker, fw.chunk_topic(ANNOUNCE, rel.rid, i, 0), payload)
        _publish_raw(broker, ANNOUNCE, fw.announcement(rel.rid, 2, mfr.id))
        for i, (_, reason) in bad.items():
            wait_line(board.q, rf"^ota-chunk-refused reason={reason} file={i} chunk=0", 90, seen)
            # the right chunk now: asked for again, taken
            _publish_raw(broker, fw.chunk_topic(ANNOUNCE, rel.rid, i, 0),
                         fw.pack_chunk(rel.rid, i, 0, rel.files[i][:chunk]))
        wait_line(board.q, r"^ota-swapped version=2", 90, seen)
        wait_line(board.q, r"^ota-confirmed version=2", 90, seen)
    finally:
        board.stop()
        print(board.tail())
    assert not [ln for ln in seen if "Traceback" in ln], "\n".join(seen)


@pytest.mark.micropython
def test_a_flood_of_announcements_costs_at_most_one_reset(world, tmp_path):
    """After the updater refused a release the node looks at no announcement
    for ota_hold_s; what comes meanwhile is coalesced (each replaced one
    logged), and only the latest is looked at when the hold ends."""
    gw, broker, mfr = world
    liar = new_key(tmp_path / "liar.key")
    board = _board(tmp_path, gw, broker, [mfr.public], ota_hold_s=3).start()
    seen: list[str] = []
    try:
        wait_line(board.q, r"^receipt-verified", 60, seen)
        esp = released(mfr, 5, tmp_path / "esp", board="esp32")
        _offer(broker, esp.signed, 5, mfr.id)
        wait_line(board.q, r"^ota-refused reason=wrong-board", 90, seen)
        wait_line(board.q, r"^online", 60, seen)
        boots = board.boots
        flood = 30
        import paho.mqtt.publish as pub

        pub.multiple([{"topic": ANNOUNCE, "payload": fw.announcement(bytes([n]) * 8, 10 + n, liar.id),
                       "qos": 1} for n in range(flood)], hostname=broker.host, port=broker.port)
        for _ in range(flood):
            wait_line(board.q, r"^ota-ignored reason=flood", 60, seen)
        wait_line(board.q, r"^ota-ignored reason=bad-signature detail=unknown-key", 60, seen)
        wait_line(board.q, r"^receipt-verified", 60, seen)
        assert board.boots == boots  # no reset for any of them
    finally:
        board.stop()
        print(board.tail())
    assert not [ln for ln in seen if "Traceback" in ln], "\n".join(seen)


@pytest.mark.micropython
def test_update_that_cannot_reach_the_gateway_is_rolled_back(world, tmp_path):
    gw, broker, mfr = world
    # the new version's node connects to a port where no broker listens
    rel = released(mfr, 2, tmp_path / "rel2", patch={
        "firmware/startup.py": lambda s: s.replace('port=int(cfg["broker_port"])', "port=1")})
    board = _board(tmp_path, gw, broker, [mfr.public], ota_confirm_s=2).start()
    seen: list[str] = []
    try:
        wait_line(board.q, r"^receipt-verified", 60, seen)
        _publish(broker, rel)
        wait_line(board.q, r"^ota-swapped version=2", 90, seen)
        for n in range(1, 4):  # the boot file's TRIES
            wait_line(board.q, r"^boot version=2", 60, seen)
            wait_line(board.q, r"^ota-unconfirmed version=2", 60, seen)
            assert _state(board.vb.flash) == ["2", "0", "u", str(n)]
        wait_line(board.q, r"^boot version=0", 60, seen)
        wait_line(board.q, r"^ota-rolled-back failed=2 running=0", 60, seen)
        assert _state(board.vb.flash) == ["0", "-", "c", "0"]
        wait_line(board.q, r"^receipt-verified", 60, seen)
        dev = bytes.fromhex(re.search(r"online id=([0-9a-f]{32})", "\n".join(seen)).group(1))
        wait_until(lambda: {k: v for k, v in _device_firmware(gw).get(dev, {}).items()
                            if k != "height"} == {"version": 0, "failed": 2},
                   30, what="the FIRMWARE rolled-back tx committed")
        # the failed release is not tried again when announced again (retained)
        board.kill()
        board = PoweredBoard(board.vb, board.build).start()
        wait_line(board.q, r"^receipt-verified", 60, seen)
        assert _state(board.vb.flash) == ["0", "-", "c", "0"]
    finally:
        board.stop()
        print(board.tail())
    assert "ota-offer rid" not in "\n".join(seen[seen.index("ota-rolled-back failed=2 running=0"):])


@pytest.mark.micropython
def test_flash_quota_is_never_overflowed(world, tmp_path):
    gw, broker, mfr = world
    rel = released(mfr, 2, tmp_path / "rel2")
    board = _board(tmp_path, gw, broker, [mfr.public])
    board.start()
    seen: list[str] = []
    try:
        wait_line(board.q, r"^receipt-verified", 60, seen)
    finally:
        board.stop()
        print(board.tail())
    quota = flash_usage(board.vb.flash) + sum(len(f) for f in rel.files) // 2
    board.vb.configure(domain=DOMAIN, authority_hex=gw.gw.led.genesis.authority.hex(),
                       host=broker.host, port=broker.port, interval_ms=300, flash_quota=quota)
    board = PoweredBoard(board.vb, board.build).start()
    try:
        wait_line(board.q, r"^receipt-verified", 60, seen)
        _publish(broker, rel)
        wait_line(board.q, r"^ota-refused reason=no-space", 90, seen)
        wait_line(board.q, r"^receipt-verified", 60, seen)
    finally:
        board.stop()
        print(board.tail())
    assert flash_usage(board.vb.flash) <= quota


@pytest.mark.micropython
def test_key_rotation_only_by_a_release_signed_with_the_current_key(world, tmp_path):
    """Release 2, signed by the pinned key, names the next key; from then on
    the board takes releases signed by the new key only."""
    gw, broker, mfr = world
    new = new_key(tmp_path / "next.key")
    board = _board(tmp_path, gw, broker, [mfr.public], ota_hold_s=0).start()
    seen: list[str] = []
    try:
        wait_line(board.q, r"^receipt-verified", 60, seen)
        _publish(broker, released(mfr, 2, tmp_path / "rel2", next_key=new.public))
        wait_line(board.q, r"^ota-confirmed version=2", 90, seen)
        assert (board.vb.flash / "ota" / "keys").read_bytes() == new.public
        # the old key no longer signs for this board
        _publish(broker, released(mfr, 3, tmp_path / "old3"))
        wait_line(board.q, r"^ota-ignored reason=bad-signature detail=unknown-key", 60, seen)
        _publish(broker, released(new, 3, tmp_path / "new3"))
        wait_line(board.q, r"^ota-confirmed version=3", 90, seen)
        assert _state(board.vb.flash) == ["3", "2", "c", "0"]
    finally:
        board.stop()
        print(board.tail())
    assert not [ln for ln in seen if "Traceback" in ln], "\n".join(seen)
