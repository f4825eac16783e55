"""`thingledger board ...` against a virtual board: the MicroPython Unix port
behind a socat pseudo-terminal, driven by mpremote (tests/support/vboard_pty.py).

One board is flashed per module (mpremote writes ~40 KB through the raw REPL,
the slow part); tests that change the board's state get a copy of that flash
folder with their own socat + MicroPython."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import time
from pathlib import Path

import pytest

from shared import cbor, cose, errors, p256
from shared import tx as txm
from tests.support.vboard_pty import PtyBoard
from tools import board as tb
from tools.build import tool
from tools.cli import main as cli

ROOT = Path(__file__).resolve().parents[2]
FW_FILES = {"shared", "firmware", "boards", "main.py", "config.json"}


def run(capsys, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = cli(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture(scope="module")
def flashed(tmp_path_factory):
    """A virtual board flashed once through the CLI (no wallet yet): its flash
    folder is the template the other tests copy."""
    tmp = tmp_path_factory.mktemp("vb")
    b = PtyBoard(tmp / "flash", tmp / "ttyVB").start()
    try:
        t0 = time.monotonic()
        rc = cli(["board", "flash", "--port", b.port, "--board", "unix", "--domain", "demo",
                  "--data-dir", str(tmp / "no-gateway-here"),
                  "--broker-host", "127.0.0.1", "--broker-port", "1883",
                  "--config", "interval_ms=300", "--config", "wifi.ssid=Home"])
        b.flash_seconds = time.monotonic() - t0
        assert rc == 0
        yield b
    finally:
        b.stop()


@pytest.fixture
def board_copy(flashed, tmp_path):
    """A fresh virtual board whose flash is a copy of the flashed one (no wallet)."""
    flash = tmp_path / "flash"
    state = {"wallet.key", "wallet.new", "seq", "outbox", "registered"}
    shutil.copytree(flashed.flash, flash,
                    ignore=lambda d, names: [n for n in names if n in state])
    b = PtyBoard(flash, tmp_path / "ttyVB").start()
    try:
        yield b
    finally:
        b.stop()


def wallet_of(flash: Path) -> tuple[bytes, bytes]:
    raw = (flash / "wallet.key").read_bytes()
    assert len(raw) == 48
    return raw[:16], raw[16:]


# --------------------------------------------------------------------------- flash
def test_flash_copies_the_build_and_config(flashed):
    fl = flashed.flash
    assert FW_FILES <= set(os.listdir(fl))
    built = tb.build_dir("unix")
    mpys = sorted(p.relative_to(built) for p in built.rglob("*.mpy"))
    assert len(mpys) >= 20 and Path("firmware/provision.mpy") in mpys
    for rel in mpys:
        assert (fl / rel).read_bytes() == (built / rel).read_bytes(), rel
    assert [p.name for p in fl.rglob("*.py")] == ["main.py"]
    assert (fl / "main.py").read_text() == tb.MAIN_PY
    cfg = json.loads((fl / "config.json").read_text())
    assert cfg == {"board": "unix", "domain": "demo", "broker_host": "127.0.0.1",
                   "broker_port": 1883, "interval_ms": 300, "wifi": {"ssid": "Home"}}
    assert not (fl / "wallet.key").exists()  # flashing never makes or moves a key
    assert flashed.flash_seconds < 30


def test_reflash_keeps_wallet_and_merges_config(board_copy, capsys):
    rc, out, err = run(capsys, "board", "keygen", "--port", board_copy.port)
    assert rc == 0, err
    before = (board_copy.flash / "wallet.key").read_bytes()
    (board_copy.flash / "firmware" / "stale.py").write_text("x = 1\n")
    rc, out, err = run(capsys, "board", "flash", "--port", board_copy.port, "--board", "unix",
                       "--config", "wifi.password=secret", "--config", "interval_ms=500",
                       "--authority", "02" + "11" * 32)
    assert rc == 1 and "--authority" in err  # not a point on the curve: refused, nothing sent
    auth = p256.public_key(b"\x07" * 32).hex()
    rc, out, err = run(capsys, "board", "flash", "--port", board_copy.port, "--board", "unix",
                       "--config", "wifi.password=secret", "--config", "interval_ms=500",
                       "--authority", auth)
    assert rc == 0, err
    assert "kept from the board's config.json: broker_host, broker_port, domain" in out
    assert "warning" not in out
    cfg = json.loads((board_copy.flash / "config.json").read_text())
    assert cfg["wifi"] == {"ssid": "Home", "password": "secret"}
    assert cfg["interval_ms"] == 500 and cfg["domain"] == "demo" and cfg["authority"] == auth
    assert (board_copy.flash / "wallet.key").read_bytes() == before
    assert not (board_copy.flash / "firmware" / "stale.py").exists()  # would shadow the .mpy


def test_flash_unknown_port_says_what_to_do(tmp_path, capsys):
    if shutil.which("ampy"):
        pytest.skip("ampy is installed: the fallback would be tried")
    rc, _, err = run(capsys, "board", "keygen", "--port", str(tmp_path / "nope"))
    assert rc == 2
    assert "mpremote cannot connect" in err and "ampy fallback is not installed" in err


def test_config_parsing():
    assert tb.parse_config(["a=1", "b=text", "c=[1,2]", "w.ssid=x", "w.password=y", "t=true"]) \
        == {"a": 1, "b": "text", "c": [1, 2], "w": {"ssid": "x", "password": "y"}, "t": True}
    with pytest.raises(tb.BoardError):
        tb.parse_config(["novalue"])


# --------------------------------------------------------------------------- keys
def test_keygen_reads_back_only_the_public_key(board_copy, capsys):
    rc, out, err = run(capsys, "board", "keygen", "--port", board_copy.port, "--verbose")
    assert rc == 0, err
    dev_id, priv = wallet_of(board_copy.flash)
    pub = p256.public_key(priv)
    assert f"device id:  {dev_id.hex()}" in out
    assert f"public key: {pub.hex()}" in out
    assert dev_id == txm.device_id(pub)
    # a second keygen returns the same key; every mpremote exchange was logged
    # (--verbose) and the private key never appears in any of it
    rc2, out2, err2 = run(capsys, "board", "keygen", "--port", board_copy.port, "-v")
    assert rc2 == 0 and out2 == out and "$ connect" in err2
    wire = out + err + out2 + err2
    for secret in (priv.hex(), priv.hex().upper(), repr(priv), (dev_id + priv).hex()):
        assert secret not in wire
    assert wallet_of(board_copy.flash) == (dev_id, priv)


def test_statements_and_mqtt_password_verify(board_copy):
    b = tb.Board(board_copy.port)
    key = tb.keygen(b)
    owner = p256.keygen()[1]
    owner_id = txm.device_id(owner)
    for kind, subject in (("claim", owner_id), ("recover", key.device_id)):
        st = bytes.fromhex(b.call("statement", kind, "demo", subject.hex())["statement"])
        parsed = cose.parse1(st)
        assert parsed.kid == key.device_id
        assert cbor.loads(cose.verify1(key.public_key, st)) == {1: kind, 2: "demo", 3: subject}
        with pytest.raises(errors.SignatureError):
            cose.verify1(owner, st)
        assert tb.statement(b, key, kind, "demo", subject) == st  # RFC 6979: deterministic
    with pytest.raises(tb.BoardError):
        b.call("statement", "rotate", "demo", owner_id.hex())  # only claim / recover
    pw = tb.mqtt_password(b, key, "demo")
    assert len(pw) == 128 and pw == tb.mqtt_password(b, key, "demo")
    msg = cbor.dumps(["mqtt", "demo", key.device_id])
    assert p256.verify(key.public_key, msg, bytes.fromhex(pw))
    assert not p256.verify(key.public_key, cbor.dumps(["mqtt", "other", key.device_id]),
                           bytes.fromhex(pw))


def test_rotation_on_the_board(board_copy):
    b = tb.Board(board_copy.port)
    old = tb.keygen(b)
    owner_priv, owner_pub = p256.keygen()

    class Owner:
        private = owner_priv
        public = owner_pub
        id = txm.device_id(owner_pub)

    new_pub = bytes.fromhex(b.call("rotate_begin")["pubkey"])
    assert b.call("rotate_begin")["pubkey"] == new_pub.hex()  # one pending key
    assert new_pub != old.public_key
    bad = tb.rotate_approval(Owner, old.device_id, old.public_key)  # names the wrong key
    with pytest.raises(tb.BoardError):
        b.call("rotate_tx", "demo", bad.hex())
    approval = tb.rotate_approval(Owner, old.device_id, new_pub)
    m = bytes.fromhex(b.call("rotate_tx", "demo", approval.hex())["tx"])
    t = txm.decode(m)
    t.verify(old.public_key)  # signed by the OLD key
    assert t.type == txm.TYPE_ROTATE_KEY and t.sender == old.device_id
    assert t.body == {1: new_pub, 2: approval}
    assert cbor.loads(cose.verify1(owner_pub, approval)) == {1: "rotate", 2: old.device_id,
                                                              3: new_pub}
    assert (board_copy.flash / "wallet.key").read_bytes()[16:] != b""
    r = b.call("rotate_commit")
    assert r == {"pubkey": new_pub.hex(), "id": old.hex}
    dev_id, priv = wallet_of(board_copy.flash)
    assert dev_id == old.device_id and p256.public_key(priv) == new_pub
    assert not (board_copy.flash / "wallet.new").exists()
    new = tb.keygen(b)
    assert new == tb.DeviceKey(new_pub, old.device_id)
    st = tb.statement(b, new, "claim", "demo", Owner.id)
    with pytest.raises(errors.SignatureError):
        cose.verify1(old.public_key, st)
    with pytest.raises(tb.BoardError):
        b.call("rotate_commit")  # nothing pending any more


# --------------------------------------------------------------------------- chain records
def test_register_writes_a_device_record(board_copy, tmp_path, capsys):
    try:
        from gateway.registry import open_registry
    except ImportError:
        pytest.skip("gateway.registry (the public registry) is not in this tree yet")
    from tools.keys import new_key

    mfr = new_key(tmp_path / "mfr.key")
    reg_dir = tmp_path / "registry"
    args = ["board", "register", "--port", board_copy.port, "--mfr-key", str(tmp_path / "mfr.key"),
            "--model", "TL-Temp-1", "--serial", "SN-0001", "--warranty-years", "3",
            "--registry-dir", str(reg_dir)]
    rc, out, err = run(capsys, *args)
    assert rc == 1 and "is not in the registry" in err and "--mfr-name" in err
    rc, out, err = run(capsys, *args, "--mfr-name", "Acme Sensors")
    assert rc == 0, err
    dev_id, priv = wallet_of(board_copy.flash)
    pub = p256.public_key(priv)
    assert f"registered manufacturer {mfr.id.hex()} (Acme Sensors)" in out
    assert f"registered device {dev_id.hex()}" in out and "warranty until" in out
    with open_registry(reg_dir) as reg:
        rec = reg.lookup(pub)
        assert rec is not None and rec.device_id == dev_id and rec.manufacturer_id == mfr.id
        assert (rec.model, rec.serial, rec.manufacturer_name) == ("TL-Temp-1", "SN-0001",
                                                                  "Acme Sensors")
        assert rec.warranty_end - rec.manufactured == 3 * tb.YEAR_S
        assert rec.warranty_valid(int(time.time()))
    # the same board again: included with status failed (visible), and said so
    again = [a if a != "SN-0001" else "SN-0002" for a in args]
    rc, out, err = run(capsys, *again)
    assert rc == 1 and "already-registered" in err
    assert priv.hex() not in out + err


def test_claim_stores_the_mqtt_password(board_copy, tmp_path, capsys, monkeypatch):
    """`board claim`: the device statement from the board, the CLAIM from the
    identity builder, submitted (here: captured), the MQTT password stored 0600."""
    ident = tb._identity_builders()
    if ident is None or not hasattr(ident, "build_claim"):
        pytest.skip("identity_tx.build_claim (domain identity) is not in this tree yet")
    from gateway.db import genesis_files as genesis
    from tools import submit as submit_mod
    from tools.keys import new_key

    data = tmp_path / "gw"
    genesis.create_domain(data, "demo")
    owner = new_key(tmp_path / "owner.key")
    sent: list[bytes] = []

    def fake_submit(url, domain, message, authority, timeout=15.0, login=None):
        sent.append(message)
        return submit_mod.Reply(True, "", "", 7, 0)

    monkeypatch.setattr(submit_mod, "submit", fake_submit)
    rc, out, err = run(capsys, "board", "claim", "--port", board_copy.port, "--owner-key",
                       str(tmp_path / "owner.key"), "--domain", "demo", "--data-dir", str(data))
    assert rc == 0, err
    dev_id, priv = wallet_of(board_copy.flash)
    pub = p256.public_key(priv)
    t = txm.decode(sent[0])
    t.verify(owner.public)
    assert t.type == txm.TYPE_CLAIM and t.sender == owner.id and t.body[1] == pub
    assert cbor.loads(cose.verify1(pub, t.body[2])) == {1: "claim", 2: "demo", 3: owner.id}
    path = data / tb.CREDENTIALS_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    pw = json.loads(path.read_text())[dev_id.hex()]
    assert p256.verify(pub, cbor.dumps(["mqtt", "demo", dev_id]), bytes.fromhex(pw))
    assert "committed at height 7" in out and priv.hex() not in out + err


def test_rotate_command(board_copy, tmp_path, capsys, monkeypatch):
    """`board rotate`: refused by the chain -> the board keeps its key (the new
    one waits); committed -> the board switches, same id, new MQTT password."""
    from gateway.db import genesis_files as genesis
    from tools import submit as submit_mod
    from tools.keys import new_key

    data = tmp_path / "gw"
    genesis.create_domain(data, "demo")
    owner = new_key(tmp_path / "owner.key")
    b = tb.Board(board_copy.port)
    old = tb.keygen(b)
    tb.store_credential(data, old.device_id, tb.mqtt_password(b, old, "demo"))
    sent: list[bytes] = []
    answer = [submit_mod.Reply(False, "not-owner", "test", None, None)]

    def fake_submit(url, domain, message, authority, timeout=15.0, login=None):
        sent.append(message)
        return answer[0]

    monkeypatch.setattr(submit_mod, "submit", fake_submit)
    argv = ["board", "rotate", "--port", board_copy.port, "--owner-key",
            str(tmp_path / "owner.key"), "--domain", "demo", "--data-dir", str(data)]
    rc, out, err = run(capsys, *argv)
    assert rc == 1 and "rejected: not-owner" in out and "keeps its current key" in out
    assert tb.keygen(b) == old and (board_copy.flash / "wallet.new").exists()
    answer[0] = submit_mod.Reply(True, "", "", 9, 0)
    rc, out, err = run(capsys, *argv)
    assert rc == 0, err
    t1, t2 = (txm.decode(m) for m in sent)
    assert t1.body[1] == t2.body[1] and t2.seq > t1.seq  # same pending key, fresh seq
    t2.verify(old.public_key)
    assert t2.sender == old.device_id and t2.type == txm.TYPE_ROTATE_KEY
    new_pub = t2.body[1]
    assert cbor.loads(cose.verify1(owner.public, t2.body[2])) == {1: "rotate",
                                                                   2: old.device_id, 3: new_pub}
    assert tb.keygen(b) == tb.DeviceKey(new_pub, old.device_id)
    assert f"board switched to public key {new_pub.hex()}" in out
    creds = json.loads((data / tb.CREDENTIALS_FILE).read_text())
    assert p256.verify(new_pub, cbor.dumps(["mqtt", "demo", old.device_id]),
                       bytes.fromhex(creds[old.hex]))
    _, priv = wallet_of(board_copy.flash)
    assert priv.hex() not in out + err


# --------------------------------------------------------------------------- boot
def test_flashed_board_boots_and_its_reading_is_committed(board_copy, amqtt_broker, tmp_path,
                                                         capsys):
    from tests.support.e2e_devices import GatewayThread, chain_txs, new_domain

    data = tmp_path / "gw"
    authority = new_domain(data, "demo")
    gw = GatewayThread(data, amqtt_broker.url, "demo", block_interval=0.2).start()
    node = None
    try:
        rc, out, err = run(capsys, "board", "flash", "--port", board_copy.port, "--board", "unix",
                           "--domain", "demo", "--data-dir", str(data),
                           "--broker-host", amqtt_broker.host,
                           "--broker-port", str(amqtt_broker.port))
        assert rc == 0, err
        assert f"authority key from {data}" in out and "warning" not in out
        assert json.loads((board_copy.flash / "config.json").read_text())["authority"] \
            == authority.hex()
        rc, out, _ = run(capsys, "board", "keygen", "--port", board_copy.port)
        dev_id, _priv = wallet_of(board_copy.flash)
        # boot: the flashed main.py's code, with sys.path[0] == '' as on a board (run
        # as `micropython main.py` the absolute folder name would go into every
        # module path: longer qstrs cost the 64 KiB heap several KB)
        boot = (board_copy.flash / "main.py").read_text()
        node = subprocess.Popen([tool("micropython"), "-X", "heapsize=64k", "-c", boot],
                                cwd=board_copy.flash, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, bufsize=1,
                                start_new_session=True)
        lines = _expect_reading_receipt(node, timeout=25)
        assert any(f"online id={dev_id.hex()}" in ln for ln in lines), lines
        readings = [t for t in chain_txs(data)
                    if t.sender == dev_id and txm.decode(t.message).type == txm.TYPE_READING]
        assert readings, "no reading of the board in the chain"
    finally:
        if node is not None:
            node.kill()
            node.wait(5)
            node.stdout.close()
        gw.stop()


def _expect_reading_receipt(node: subprocess.Popen, timeout: float) -> list[str]:
    """Lines of the node until the receipt of its first reading (bounded)."""
    import re
    import selectors

    sel = selectors.DefaultSelector()
    sel.register(node.stdout, selectors.EVENT_READ)
    lines: list[str] = []
    reading_seq = None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not sel.select(timeout=0.2):
            continue
        line = node.stdout.readline()
        if not line:
            raise AssertionError(f"the board stopped ({node.wait()}):\n" + "".join(lines))
        lines.append(line)
        m = re.search(r"^reading seq=(\d+)", line)
        if m and reading_seq is None:
            reading_seq = int(m.group(1))
        m = re.search(r"receipt-verified seq=(\d+) height=\d+ status=0", line)
        if m and reading_seq is not None and int(m.group(1)) == reading_seq:
            return lines
    raise AssertionError(f"no committed reading in {timeout} s:\n" + "".join(lines[-30:]))
