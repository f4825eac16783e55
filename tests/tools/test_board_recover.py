"""`thingledger board recover` (issue 4 item 4): the owner re-provisions a
board whose key was lost, on a claimed domain (real public registry, real
broker, in-process gateway). The virtual board is the MicroPython Unix port
behind a socat pty (vboard_pty.py), driven with mpremote.

The device is made, registered, claimed, revoked by its owner, then its key
is lost (wallet.key gone); a board holding another id's wallet is refused;
`board recover` gives the board a new key under the device's original id,
the owner's RECOVER puts it on chain, and a transaction the board signs
afterwards under that id is committed, while one signed by the old key is
refused."""

from __future__ import annotations

import json
import re
from pathlib import Path

from gateway.db import genesis_files as genesis
from gateway.db.store import Store
from gateway.node.config import DB_FILE
from shared import cbor, messages, p256
from shared import tx as txm
from tests.support.vboard_pty import PtyBoard
from tools import board as tb
from tools.cli import main as cli
from tools.keys import load_key
from tools.submit import submit

ROOT = Path(__file__).resolve().parents[2]
DOMAIN = "home"

SIGN_READING = """from firmware import wallet
from firmware.flash import SeqStore
from shared import tx
w = wallet.load_or_create()
print('TL tx=' + w.sign_tx(tx.TYPE_READING, %r, SeqStore().next(), 0, {1: 2150, 2: -2}).hex())
"""


def run(capsys, *argv: str) -> tuple[int, str]:
    capsys.readouterr()
    rc = cli(list(argv))
    out, err = capsys.readouterr()
    return rc, out + err


def ok(capsys, *argv: str) -> str:
    rc, out = run(capsys, *argv)
    assert rc == 0, f"thingledger {' '.join(argv)}:\n{out}"
    return out


def signed_on_board(b: tb.Board) -> bytes:
    """A READING signed by the board's wallet (its current key), seq from its seq store."""
    out = b.exec(SIGN_READING % DOMAIN)
    lines = [ln for ln in out.splitlines() if ln.startswith("TL tx=")]
    assert len(lines) == 1, out
    return bytes.fromhex(lines[0][len("TL tx="):])


def record(data: Path, dev: bytes):
    with Store(data / DB_FILE, readonly=True) as s:
        return s.load_state().get(dev)


def test_lost_key_recovered_by_the_owner(tmp_path, amqtt_broker, capsys):
    from tests.support.e2e_devices import GatewayThread

    keys, reg, data = tmp_path / "keys", tmp_path / "registry", tmp_path / "gw"
    keys.mkdir()
    for name in ("acme", "owner", "stranger"):
        ok(capsys, "key", "new", "--out", str(keys / f"{name}.key"))
    owner = load_key(keys / "owner.key")
    ok(capsys, "registry", "init", "--registry-dir", str(reg), "--difficulty-bits", "4")
    ok(capsys, "registry", "manufacturer", "--registry-dir", str(reg), "--key",
       str(keys / "acme.key"), "--name", "Acme Sensors")
    ok(capsys, "domain", "init", "--data-dir", str(data), "--domain", DOMAIN, "--admission",
       "claimed", "--owner-key", str(keys / "owner.key"))
    gw = GatewayThread(data, amqtt_broker.url, DOMAIN, block_interval=0.1,
                       registry_dir=reg).start()
    board = PtyBoard(tmp_path / "flash", tmp_path / "ttyVB")
    net = ["--broker", amqtt_broker.url, "--data-dir", str(data)]
    authority = tb.authority_of(data, DOMAIN)
    try:
        # made, registered, claimed
        board.start()
        ok(capsys, "board", "flash", "--port", board.port, "--board", "unix", "--domain", DOMAIN,
           "--data-dir", str(data), "--broker-host", amqtt_broker.host, "--broker-port",
           str(amqtt_broker.port))
        dev = bytes.fromhex(re.search(r"device id:\s+([0-9a-f]{32})",
                                      ok(capsys, "board", "keygen", "--port", board.port))[1])
        birth_pub = tb.keygen(tb.Board(board.port)).public_key
        ok(capsys, "board", "register", "--port", board.port, "--mfr-key",
           str(keys / "acme.key"), "--model", "TL-T1", "--serial", "SN-0001", "--registry-dir",
           str(reg))
        assert "committed at height" in ok(capsys, "board", "claim", "--port", board.port,
                                           "--owner-key", str(keys / "owner.key"), "--domain",
                                           DOMAIN, *net)
        b = tb.Board(board.port)
        before = signed_on_board(b)  # signed by the birth key, sent later

        # the owner revokes it: its key is gone (lost, or in a thief's hands)
        ok(capsys, "owner", "retire", "--key", str(keys / "owner.key"), "--device", dev.hex(),
           "--mode", "revoke", *net)
        assert record(data, dev).status == "revoked"
        login = (dev.hex(), "00" * 64)  # anonymous broker: the login is not checked
        r = submit(amqtt_broker.url, DOMAIN, signed_on_board(b), authority, 10, login)
        assert not r.ok and r.reason == "revoked", r.describe()

        # only the owner may recover it (checked before the board is touched)
        rc, out = run(capsys, "board", "recover", "--port", board.port, "--owner-key",
                      str(keys / "stranger.key"), "--device", dev.hex(), *net)
        assert rc == 1 and "only its owner may recover it" in out, out
        assert (board.flash / "wallet.key").read_bytes()[:16] == dev

        # a board holding another device's wallet is not overwritten
        wallet = (board.flash / "wallet.key").read_bytes()
        other = bytes(16) + p256.keygen()[0]
        (board.flash / "wallet.key").write_bytes(other)
        rc, out = run(capsys, "board", "recover", "--port", board.port, "--owner-key",
                      str(keys / "owner.key"), "--device", dev.hex(), *net)
        assert rc == 1 and f"wallet.key holds device {bytes(16).hex()}" in out, out
        assert (board.flash / "wallet.key").read_bytes() == other
        assert record(data, dev).pubkey == birth_pub

        # the key is lost: recovered under the same id with a key born on the board
        (board.flash / "wallet.key").unlink()
        rc, out = run(capsys, "board", "recover", "--port", board.port, "--owner-key",
                      str(keys / "owner.key"), "--device", dev.hex(), *net)
        assert rc == 0, out
        assert f"RECOVER of device {dev.hex()} by owner {owner.id.hex()} in {DOMAIN}" in out
        assert "committed at height" in out and "(ok)" in out
        raw = (board.flash / "wallet.key").read_bytes()
        new_pub = p256.public_key(raw[16:])
        assert raw[:16] == dev and new_pub != birth_pub and raw != wallet
        assert f"public key {new_pub.hex()}" in out
        assert raw[16:].hex() not in out  # the private key never crossed the wire
        rec = record(data, dev)
        assert (rec.pubkey, rec.status, rec.owner, rec.last_seq) == (new_pub, "active",
                                                                     owner.id, 0)
        creds = json.loads((data / tb.CREDENTIALS_FILE).read_text())
        assert p256.verify(new_pub, cbor.dumps(["mqtt", DOMAIN, dev]),
                           bytes.fromhex(creds[dev.hex()]))
        assert tb.keygen(b) == tb.DeviceKey(new_pub, dev)

        # the old key's transaction is refused, the board's new one is committed
        r = submit(amqtt_broker.url, DOMAIN, before, authority, 10, login)
        assert not r.ok and r.reason == "bad-signature", r.describe()
        after = signed_on_board(b)
        t = txm.decode(after)
        assert t.sender == dev
        t.verify(new_pub)
        r = submit(amqtt_broker.url, DOMAIN, after, authority, 10,
                   (dev.hex(), creds[dev.hex()]))
        assert r.ok and r.status == messages.STATUS_OK, r.describe()
        assert record(data, dev).last_seq == t.seq
    finally:
        board.stop()
        gw.stop()


def test_recover_usage(tmp_path, capsys):
    rc, out = run(capsys, "board", "recover", "--port", str(tmp_path / "nope"), "--owner-key",
                  str(tmp_path / "none.key"), "--device", "ab" * 16,
                  "--data-dir", str(tmp_path))
    assert rc == 1 and "owner key" in out and "cannot read key file" in out
    genesis.write_key(tmp_path / "o.key", b"\x11" * 32)  # mode 0600, as key files must be
    rc, out = run(capsys, "board", "recover", "--port", str(tmp_path / "nope"), "--owner-key",
                  str(tmp_path / "o.key"), "--device", "xyz", "--data-dir", str(tmp_path))
    assert rc == 1 and "--device must be the device id in hex" in out
    rc, out = run(capsys, "board", "recover", "--port", str(tmp_path / "nope"), "--owner-key",
                  str(tmp_path / "o.key"), "--device", "ab" * 16, "--data-dir", str(tmp_path))
    assert rc == 1 and "--domain is needed" in out
