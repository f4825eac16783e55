"""One device's whole life, every step through the command line a
manufacturer, a maker and an owner would use (issue 4): made and registered on
the public registry by its manufacturer, claimed by its owner on a
permissioned domain, a right granted to another person, reading, re-keyed,
sold (ownership transfer), revoked. Run on the embedded amqtt broker (which
enforces the chain's identities itself) and on Debian's mosquitto (passwd and
acl exported from the chain, reloaded with SIGHUP).

The device is the real firmware on a virtual board: provisioned over a pty
with mpremote (`board flash|keygen|register|claim|rotate`), and run as
`micropython -X heapsize=64k` in its flash folder."""

from __future__ import annotations

import re
import signal
import subprocess
from pathlib import Path

import pytest

from tests.support.brokers import free_port
from tests.support.vboard_pty import PtyBoard
from tests.support.waits import drain, lines, wait_line
from tools.build import tool

DOMAIN = "home"


def tl(*args: str, timeout: float = 90) -> subprocess.CompletedProcess:
    return subprocess.run([tool("thingledger"), *args], capture_output=True, text=True,
                          timeout=timeout)


def ok(*args: str) -> str:
    p = tl(*args)
    assert p.returncode == 0, f"thingledger {' '.join(args)}:\n{p.stdout}{p.stderr}"
    return p.stdout


def refused(*args: str) -> str:
    p = tl(*args)
    assert p.returncode == 1, f"thingledger {' '.join(args)}:\n{p.stdout}{p.stderr}"
    return p.stdout + p.stderr


def run_board(flash: Path, pattern: str, count: int, timeout: float = 40) -> list[str]:
    """Boot the flashed firmware on a 64 KiB heap until `count` lines match."""
    proc = subprocess.Popen([tool("micropython"), "-X", "heapsize=64k", "-c",
                             "from firmware.main import main\nmain()\n"], cwd=flash,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    q, seen = lines(proc), []
    try:
        for _ in range(count):
            wait_line(q, pattern, timeout, seen)
    finally:
        proc.terminate()
        proc.wait(10)
    return seen


class Mosquitto:
    """mosquitto reading the passwd/acl that `broker export` writes."""

    def __init__(self, factory, acl_dir: Path) -> None:
        self.dir = acl_dir
        self.broker = factory(password_file=str(acl_dir / "passwd"),
                              acl_file=str(acl_dir / "acl"), allow_anonymous="false",
                              use_username_as_clientid="true")

    def reload(self) -> None:
        self.broker.proc.send_signal(signal.SIGHUP)


@pytest.mark.micropython
@pytest.mark.parametrize("broker_kind", ["amqtt", "mosquitto"])
def test_device_whole_life(broker_kind, tmp_path, mosquitto_factory):
    keys, reg, data, acl = (tmp_path / n for n in ("keys", "registry", "gateway", "acl"))
    keys.mkdir()
    k = {name: str(keys / f"{name}.key") for name in ("acme", "owner", "buyer")}
    ids = {}
    for name, path in k.items():
        m = re.search(r"id\s+(\w{32})\s+pubkey\s+(\w{66})", ok("key", "new", "--out", path))
        ids[name] = (m.group(1), m.group(2))

    # the manufacturer on the public registry; the owner's domain
    ok("registry", "init", "--registry-dir", str(reg), "--difficulty-bits", "4")
    ok("registry", "manufacturer", "--registry-dir", str(reg), "--key", k["acme"],
       "--name", "Acme Sensors")
    ok("domain", "init", "--data-dir", str(data), "--domain", DOMAIN, "--admission", "claimed",
       "--owner-key", k["owner"])
    net = ["--data-dir", str(data), "--domain", DOMAIN]

    def export() -> None:
        ok("broker", "export", "--out", str(acl), "--data-dir", str(data),
           "--key", k["owner"], "--key", k["buyer"])

    mosq = None
    if broker_kind == "mosquitto":
        export()
        mosq = Mosquitto(mosquitto_factory, acl)
        url = mosq.broker.url
        where = ["--broker", url]
    else:
        url = f"mqtt://127.0.0.1:{free_port()}"
        where = ["--listen", url]
    port = url.rsplit(":", 1)[1]
    gw = subprocess.Popen([tool("thingledger"), "run", "--no-boards", "--no-http", *where,
                           "--data-dir",
                           str(data), "--domain", DOMAIN, "--registry-dir", str(reg),
                           "--block-interval", "0.2"], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
    gq, gseen = lines(gw), []
    board = PtyBoard(tmp_path / "flash", tmp_path / "ttyVB")
    failure = None
    try:
        wait_line(gq, rf"chain {DOMAIN} at height", 30, gseen)
        # made: flashed, key born on the board, registered by its manufacturer
        board.start()
        ok("board", "flash", "--port", board.port, "--board", "unix", *net, "--broker-host",
           "127.0.0.1", "--broker-port", port)
        dev = re.search(r"\b([0-9a-f]{32})\b", ok("board", "keygen", "--port", board.port))[1]
        ok("board", "register", "--port", board.port, "--mfr-key", k["acme"], "--model",
           "TL-T1", "--serial", "SN-0001", "--registry-dir", str(reg))
        shown = ok("registry", "show", dev, "--registry-dir", str(reg))
        assert "Acme Sensors" in shown and "warranty: valid" in shown
        # sold and claimed: device statement from the board + owner signature
        out = ok("board", "claim", "--port", board.port, "--owner-key", k["owner"],
                 "--broker", url, *net)
        assert "committed at height" in out
        # admitted: the owner lets the buyer-to-be read the device's data
        ok("owner", "grant", "--key", k["owner"], "--device", dev, "--principal",
           ids["buyer"][0], "--pubkey", ids["buyer"][1], "--right", "read", "--broker", url,
           *net)
        board.stop()
        if mosq:
            export()
            mosq.reload()
        # reading: the firmware logs in with its key and its receipts verify
        run_board(tmp_path / "flash", r"^receipt-verified .*status=0", 2)
        # re-keyed: new key born on the board, approved by the owner, signed by the old key
        board.start()
        out = ok("board", "rotate", "--port", board.port, "--owner-key", k["owner"],
                 "--broker", url, *net)
        assert "committed at height" in out
        board.stop()
        if mosq:
            export()
            mosq.reload()
        run_board(tmp_path / "flash", r"^receipt-verified .*status=0", 2)
        # resold: the previous owner loses every right
        ok("owner", "transfer", "--key", k["owner"], "--device", dev, "--to-pubkey",
           ids["buyer"][1], "--broker", url, *net)
        assert "not-owner" in refused("owner", "retire", "--key", k["owner"], "--device", dev,
                                      "--mode", "revoke", "--broker", url, *net)
        # revoked by its new owner: nothing it sends is accepted any more
        ok("owner", "retire", "--key", k["buyer"], "--device", dev, "--mode", "revoke",
           "--broker", url, *net)
        if mosq:  # the old export still lets it in: the gateway refuses its transactions
            run_board(tmp_path / "flash", r"^rejected .*reason=revoked", 1)
            export()
            mosq.reload()
    except AssertionError as e:
        failure = e
        raise
    finally:
        board.stop()
        gw.send_signal(signal.SIGINT)
        gw.wait(30)
        if failure is not None:  # what the gateway said, for the report
            failure.args = (f"{failure}\n-- gateway:\n" + "\n".join(drain(gq, gseen)[-40:]),)

    assert gw.returncode == 0, "\n".join(gseen[-20:])
    ok("chain", "verify", "--data-dir", str(data), "--registry", str(reg))
    principals = ok("principals", "--data-dir", str(data))
    row = next(line for line in principals.splitlines() if line.startswith(dev))
    assert row.split()[1:4] == ["device", "revoked", ids["buyer"][0]]
