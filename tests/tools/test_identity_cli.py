"""The identity CLI (tools/cli/identity.py) end to end: `thingledger key new`,
`claim`, `owner grant|revoke|transfer|retire|recover|approve-rotation`,
`device rotate`, `node join`, `nodes`, `principals`, each submitting over a
real broker to an in-process gateway (with a fake registry) and printing the
checked receipt."""

from __future__ import annotations

import asyncio
import inspect as pyinspect
import re
import threading
from pathlib import Path

import pytest

from gateway.db import genesis_files as genesis
from gateway.db import verify as replay
from gateway.db.store import Store
from gateway.node.config import GENESIS_FILE, GatewayConfig
from tests.support.idtest import FakeRegistry
from tools import cli


class GatewayInThread:
    """gateway.node.service.Gateway on its own asyncio loop; `registry` is set on
    its ledger before it starts (the service has no registry option yet)."""

    def __init__(self, data_dir: Path, url: str, registry: object) -> None:
        self.cfg = GatewayConfig(domain="demo", data_dir=data_dir, broker_url=url,
                                 block_interval_s=0.1)
        self.registry = registry
        self.ready = threading.Event()
        self.error: BaseException | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.stop_ev: asyncio.Event | None = None
        self.thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    async def _main(self) -> None:
        from gateway.node.service import Gateway

        self.loop = asyncio.get_running_loop()
        self.stop_ev = asyncio.Event()
        kw = {"freeze_gc": False} if "freeze_gc" in pyinspect.signature(Gateway).parameters \
            else {}
        try:
            gw = Gateway(self.cfg, **kw)
            gw.led.registry = self.registry
            await gw.start()
        except BaseException as e:
            self.error = e
            self.ready.set()
            raise
        self.ready.set()
        try:
            await self.stop_ev.wait()
        finally:
            await gw.stop()

    def start(self) -> GatewayInThread:
        self.thread.start()
        assert self.ready.wait(20), "gateway did not start"
        if self.error:
            raise self.error
        return self

    def stop(self) -> None:
        if self.loop and self.stop_ev:
            self.loop.call_soon_threadsafe(self.stop_ev.set)
        self.thread.join(20)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    rc = cli.main(list(argv))
    out, err = capsys.readouterr()
    return rc, out + err


def new_key(capsys, path: Path) -> tuple[str, str]:
    rc, out = run(capsys, "key", "new", "--out", str(path))
    assert rc == 0, out
    m = re.search(r"id\s+([0-9a-f]{32})\s+pubkey\s+([0-9a-f]{66})", out)
    assert m, out
    assert path.stat().st_mode & 0o777 == 0o600
    return m.group(1), m.group(2)


@pytest.fixture(params=["amqtt", "mosquitto"])
def broker(request):
    return request.getfixturevalue("amqtt_broker" if request.param == "amqtt"
                                   else "mosquitto_broker")


def test_lifecycle_through_the_cli(tmp_path: Path, broker, capsys) -> None:
    keys = tmp_path / "keys"
    keys.mkdir()
    data = tmp_path / "gw"
    owner_id, owner_pub = new_key(capsys, keys / "owner.key")
    bob_id, bob_pub = new_key(capsys, keys / "bob.key")
    dev_id, dev_pub = new_key(capsys, keys / "dev.key")  # a key-file device
    dev2_id, dev2_pub = new_key(capsys, keys / "dev2.key")
    rc, out = run(capsys, "key", "new", "--out", str(keys / "owner.key"))
    assert rc == 2 and "not overwriting" in out

    genesis.create_domain(data, "demo", admission="claimed", owner=bytes.fromhex(owner_pub))
    registry = FakeRegistry()
    registry.records[bytes.fromhex(dev_pub)] = {"serial": "1"}
    gw = GatewayInThread(data, broker.url, registry).start()
    net = ["--broker", broker.url, "--data-dir", str(data)]
    k = lambda name: str(keys / name)  # noqa: E731

    def tx(*argv: str) -> str:
        rc, out = run(capsys, *argv, *net)
        assert rc == 0, out
        assert "committed at height" in out and "(ok)" in out, out
        return out

    def refused(*argv: str) -> str:
        rc, out = run(capsys, *argv, *net)
        assert rc == 1, out
        return out

    try:
        # claim: statement made by the device key
        rc, st = run(capsys, "statement", "claim", "--key", k("dev.key"), "--claimant", owner_id,
                     "--data-dir", str(data))
        assert rc == 0
        out = tx("claim", "--key", k("owner.key"), "--pubkey", dev_pub, "--statement",
                 st.strip())
        assert out.startswith("claim of device %s: committed at height" % dev_id)
        # a device not in the registry
        rc, st2 = run(capsys, "statement", "claim", "--key", k("dev2.key"), "--claimant",
                      owner_id, "--data-dir", str(data))
        out = refused("claim", "--key", k("owner.key"), "--pubkey", dev2_pub, "--statement",
                      st2.strip())
        assert "rejected: not-in-registry" in out
        # admit: grant bob read (bob is new: his key travels with the grant)
        tx("owner", "grant", "--key", k("owner.key"), "--device", dev_id, "--principal",
           bob_id, "--pubkey", bob_pub, "--right", "read")
        tx("owner", "revoke", "--key", k("owner.key"), "--device", dev_id, "--principal",
           bob_id, "--right", "read")
        # rotate: the owner approves, the device sends it with its current key
        new_id, new_pub = new_key(capsys, keys / "dev-new.key")
        rc, approval = run(capsys, "owner", "approve-rotation", "--key", k("owner.key"),
                           "--device", dev_id, "--new-pubkey", new_pub)
        assert rc == 0
        tx("device", "rotate", "--key", k("dev.key"), "--new-pubkey", new_pub, "--approval",
           approval.strip())
        # the old key is refused now
        out = refused("device", "rotate", "--key", k("dev.key"), "--new-pubkey", bob_pub,
                      "--approval", approval.strip())
        assert "rejected: bad-signature" in out
        # node join with the new key, under the device id
        tx("node", "join", "--key", k("dev-new.key"), "--node", dev_id, "--power", "battery",
           "--ram-kib", "264", "--lifetime", "short")
        # transfer to bob; the previous owner is refused afterwards
        tx("owner", "transfer", "--key", k("owner.key"), "--device", dev_id, "--to-pubkey",
           bob_pub)
        out = refused("owner", "retire", "--key", k("owner.key"), "--device", dev_id,
                      "--mode", "revoke")
        assert "rejected: not-owner" in out
        # bob revokes it, then recovers it with a fresh key
        tx("owner", "retire", "--key", k("bob.key"), "--device", dev_id, "--mode", "revoke")
        out = refused("node", "join", "--key", k("dev-new.key"), "--node", dev_id, "--power",
                      "battery", "--ram-kib", "264", "--lifetime", "short")
        assert "rejected: revoked" in out
        rec_id, rec_pub = new_key(capsys, keys / "dev-rec.key")
        rc, rst = run(capsys, "statement", "recover", "--key", k("dev-rec.key"), "--device",
                      dev_id, "--data-dir", str(data))
        tx("owner", "recover", "--key", k("bob.key"), "--device", dev_id, "--pubkey", rec_pub,
           "--statement", rst.strip())
    finally:
        gw.stop()

    rc, out = run(capsys, "nodes", "--data-dir", str(data))
    assert rc == 0 and re.search(dev_id + r"\s+light\s+active\s+-", out), out
    rc, out = run(capsys, "principals", "--data-dir", str(data))
    assert rc == 0
    row = next(line for line in out.splitlines() if line.startswith(dev_id))
    assert row.split()[1:4] == ["device", "active", bob_id]
    g = genesis.load(data / GENESIS_FILE)
    with Store(data / "chain.db", readonly=True) as s:
        rep = replay.verify_chain(s, g, registry)
        assert rep.ok, str(rep.error)
        assert dict(s.devices())[bytes.fromhex(dev_id)].pubkey == bytes.fromhex(rec_pub)


def test_cli_usage_errors(tmp_path: Path, capsys) -> None:
    rc, out = run(capsys, "claim", "--key", str(tmp_path / "none.key"), "--pubkey", "00",
                  "--statement", "00", "--data-dir", str(tmp_path))
    assert rc == 2 and "cannot read key file" in out
    genesis.write_key(tmp_path / "k", b"\x11" * 32)  # mode 0600, as key files must be
    rc, out = run(capsys, "owner", "retire", "--key", str(tmp_path / "k"), "--device", "abc",
                  "--mode", "revoke", "--data-dir", str(tmp_path))
    assert rc == 2 and "--device must be hex" in out
    rc, out = run(capsys, "owner", "retire", "--key", str(tmp_path / "k"), "--device", "ab" * 16,
                  "--mode", "revoke", "--data-dir", str(tmp_path))
    assert rc == 2 and "--domain is needed" in out
    rc, out = run(capsys, "owner", "retire", "--key", str(tmp_path / "k"), "--device", "ab" * 16,
                  "--mode", "revoke", "--data-dir", str(tmp_path), "--domain", "demo")
    assert rc == 2 and "--authority HEX is needed" in out
    rc, out = run(capsys, "owner", "grant", "--key", str(tmp_path / "k"), "--device", "ab" * 16,
                  "--principal", "cd" * 16, "--pubkey", "02" + "11" * 32, "--right", "read",
                  "--data-dir", str(tmp_path), "--domain", "demo")
    assert rc == 2
    with pytest.raises(SystemExit):
        cli.main(["owner", "grant", "--key", "k", "--device", "x", "--principal", "y",
                  "--right", "admin"])
    capsys.readouterr()
