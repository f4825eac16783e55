"""`thingledger broker export` loaded by a real mosquitto: logins, ACL, and a
revocation picked up on SIGHUP (docs/IDENTITY.md §3)."""

from __future__ import annotations

import grp
import json
import os
import pwd
import queue
import shutil
import signal
import stat
import subprocess
import tempfile
import threading
from pathlib import Path

import pytest

from gateway import broker as broker_auth
from tests.support.ba_world import DOMAIN, AuthClient, Principal, connack, empty_block
from tests.support.brokers import HOST, wait_until
from tools import broker_sync, cli
from tools.cli import broker as cli_broker

pytestmark = pytest.mark.mosquitto


def export(data, out) -> int:
    return cli.main(["broker", "export", "--out", str(out), "--data-dir", str(data)])


def start_mosquitto(factory, out):
    return factory(password_file=out / "passwd", acl_file=out / "acl",
                   **broker_auth.MOSQUITTO_OPTIONS)


def test_export_files(chain, world, tmp_path, capsys):
    out = tmp_path / "mq"
    assert export(chain, out) == 0
    printed = capsys.readouterr()
    assert "3 users" in printed.out and world.gw.hex in printed.out
    passwd = (out / "passwd").read_text().splitlines()
    users = [line.split(":", 1)[0] for line in passwd]
    # r is revoked; the gateway's $SYS reader has the gateway's password
    assert users == [world.gw.hex, f"{world.gw.hex}-sys"] + sorted([world.a.hex, world.b.hex])
    assert stat.S_IMODE((out / "passwd").stat().st_mode) == 0o600
    for line in passwd:
        user, hashed = line.split(":", 1)
        assert hashed.startswith("$7$101$")
        p = {world.gw.hex: world.gw, f"{world.gw.hex}-sys": world.gw, world.a.hex: world.a,
             world.b.hex: world.b}[user]
        assert broker_auth.mosquitto_check(p.password(), hashed)
    acl = (out / "acl").read_text()
    a, b = world.a.hex, world.b.hex
    block_a = acl.split(f"user {a}\n")[1].split("\n\n")[0].splitlines()
    assert block_a == ([f"topic write tl/{DOMAIN}/tx", f"topic write tl/{DOMAIN}/dev/{a}/status",
                       f"topic write tl/{DOMAIN}/data/{a}/#", f"topic write tl/{DOMAIN}/q/{a}/req",
                       f"topic read tl/{DOMAIN}/dev/{a}/#",
                       f"topic read tl/{DOMAIN}/blocks", f"topic read tl/{DOMAIN}/offers",
                       f"topic read tl/{DOMAIN}/fw/#", f"topic read tl/{DOMAIN}/q/{a}/res"]
                       + [f"topic read tl/{DOMAIN}/data/{x}/#" for x in sorted([a, b])])
    assert f"user {world.gw.hex}\ntopic readwrite tl/{DOMAIN}/#\n" in acl
    assert (f"user {world.gw.hex}-sys\ntopic read $SYS/broker/clients/connected\n\n"
            in acl)
    assert world.r.hex not in acl


def test_export_skips_stale_and_foreign_credentials(chain, world, tmp_path, capsys):
    creds = chain / broker_auth.CREDENTIALS_FILE
    broker_auth.add_credential(creds, world.b.id, Principal("old-key-of-b").password())
    broker_auth.add_credential(creds, world.u.id, world.u.password())
    out = tmp_path / "mq"
    assert export(chain, out) == 0
    err = capsys.readouterr().err
    assert f"skipped {world.b.hex}: stored credential does not match" in err
    assert f"skipped {world.u.hex}: not a principal" in err
    users = [line.split(":", 1)[0] for line in (out / "passwd").read_text().splitlines()]
    assert users == [world.gw.hex, f"{world.gw.hex}-sys", world.a.hex]


def test_export_refuses_a_broken_credential_store(chain, tmp_path, capsys):
    (chain / broker_auth.CREDENTIALS_FILE).write_text(json.dumps({"zz": "11"}))
    assert export(chain, tmp_path / "mq") == cli.EXIT_USAGE
    assert "credential" in capsys.readouterr().err
    assert cli.main(["broker", "export", "--out", str(tmp_path / "x"),
                     "--data-dir", str(tmp_path / "nothing")]) == cli.EXIT_USAGE


def test_mosquitto_enforces_the_export(chain, world, tmp_path, mosquitto_factory, clients):
    out = tmp_path / "mq"
    assert export(chain, out) == 0
    mq = start_mosquitto(mosquitto_factory, out)
    a, b, r, gwp = world.a, world.b, world.r, world.gw

    # logins
    assert connack(HOST, mq.port, a.hex, a.hex, a.password()) == 0
    user, pw = broker_auth.gateway_credentials(gwp.priv, DOMAIN)
    assert connack(HOST, mq.port, "thingledger-gateway-demo", user, pw) == 0
    assert connack(HOST, mq.port, a.hex, a.hex, b.password()) not in (0, None)
    assert connack(HOST, mq.port, a.hex, a.hex, "00" * 64) not in (0, None)
    assert connack(HOST, mq.port, r.hex, r.hex, r.password()) not in (0, None)  # revoked
    assert connack(HOST, mq.port, "anon") not in (0, None)  # anonymous

    # ACL: a cannot write on b's topics; b receives the gateway's message only
    gw = clients(mq, gwp, client_id="thingledger-gateway-demo").connected()
    assert gw.subscribe(f"tl/{DOMAIN}/#") == 1
    sb = clients(mq, b).connected()
    assert sb.subscribe(f"tl/{DOMAIN}/dev/{b.hex}/#") == 1
    for topic in (b.topic("rx"), b.topic("status"), f"tl/{DOMAIN}/blocks",
                  f"tl/{DOMAIN}/q/{b.hex}/req", f"tl/{DOMAIN}/q/{a.hex}/res"):
        # mosquitto 2.0.11 answers a denied QoS 1 PUBLISH from an MQTT 3.1.1
        # client with a v5-style PUBACK and drops the connection: either way
        # the broker has handled the message once one of the two is seen
        forger = clients(mq, a).connected()
        info = forger.client.publish(topic, b"forged", qos=1)
        forger.wait(lambda c, i=info: i.is_published() or c.disconnected, 10, "PUBACK or drop")
        forger.close()
    sa = clients(mq, a).connected()
    sa.publish(f"tl/{DOMAIN}/tx", b"tx-from-a")
    gw.wait_message(f"tl/{DOMAIN}/tx", b"tx-from-a")
    gw.publish(b.topic("rx"), b"receipt-for-b")
    sb.wait_message(b.topic("rx"), b"receipt-for-b")
    assert not sb.got(payload=b"forged") and not gw.got(payload=b"forged")
    # a reads b's data (granted), never b's rx
    # mosquitto 2.0.11 grants the subscription and checks read access on each
    # delivery (newer versions refuse it): a never receives b's rx either way
    assert sa.subscribe(b.topic("rx")) in (0x80, 1)
    gw.publish(b.topic("rx"), b"private-to-b")
    sb.wait_message(b.topic("rx"), b"private-to-b")
    assert sa.subscribe(f"tl/{DOMAIN}/data/{b.hex}/#") == 1
    sb.publish(f"tl/{DOMAIN}/data/{b.hex}/temp", b"2160")
    sa.wait_message(f"tl/{DOMAIN}/data/{b.hex}/temp", b"2160")
    assert not sa.got(b.topic("rx"))
    # chain queries: a asks under its own name and reads its own answers
    assert sa.subscribe(f"tl/{DOMAIN}/q/{a.hex}/res") == 1
    sa.publish(f"tl/{DOMAIN}/q/{a.hex}/req", b"query-of-a")
    gw.wait_message(f"tl/{DOMAIN}/q/{a.hex}/req", b"query-of-a")
    gw.publish(f"tl/{DOMAIN}/q/{a.hex}/res", b"answer-to-a")
    sa.wait_message(f"tl/{DOMAIN}/q/{a.hex}/res", b"answer-to-a")
    assert not sa.got(payload=b"forged")

    # the owner revokes a: new export, SIGHUP; a's login is refused, b's still works
    world.access.inactive.add(a.id)
    assert sa.disconnected == 0
    assert export(chain, out) == 0
    assert a.hex not in (out / "passwd").read_text()
    mq.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: connack(HOST, mq.port, a.hex, a.hex, a.password()) not in (0, None),
               10, interval=0.1, what="mosquitto to refuse the revoked device")
    # mosquitto also dropped a's open connection (its login is no longer
    # valid), and paho's automatic reconnects are refused
    sa.wait(lambda c: c.disconnected, 10, "a's connection to be dropped")
    sa.client.publish(f"tl/{DOMAIN}/tx", b"after-revocation", qos=1)
    sb.publish(f"tl/{DOMAIN}/tx", b"barrier")
    gw.wait_message(f"tl/{DOMAIN}/tx", b"barrier")
    assert not gw.got(payload=b"after-revocation")
    # b still logs in (with use_username_as_clientid this takes sb's session over)
    assert connack(HOST, mq.port, f"{b.hex}-2", b.hex, b.password()) == 0
    assert mq.proc.poll() is None, mq.log_text()


def test_mosquitto_accepts_our_hash_and_mosquitto_passwd_agrees(tmp_path):
    """Our $7$ lines are what mosquitto_passwd writes (same KDF, same encoding)."""
    exe = "/usr/bin/mosquitto_passwd"
    try:
        f = tmp_path / "pw"
        f.write_text("")
        subprocess.run([exe, "-b", str(f), "alice", "s3cret"], check=True, timeout=10,
                       capture_output=True)
    except (FileNotFoundError, subprocess.CalledProcessError):
        pytest.skip("mosquitto_passwd not available")
    hashed = f.read_text().strip().split(":", 1)[1]
    assert broker_auth.mosquitto_check("s3cret", hashed)
    assert not broker_auth.mosquitto_check("other", hashed)
    mine = broker_auth.mosquitto_hash("s3cret")
    parts, theirs = mine.split("$"), hashed.split("$")
    assert [len(x) for x in parts] == [len(x) for x in theirs]
    assert parts[:3] == theirs[:3] == ["", "7", "101"]


def test_watch_lets_a_buyer_read_the_stream_it_bought_after_the_export(
        chain, world, tmp_path, mosquitto_factory, clients):
    """`broker export --watch`: a stream bought after mosquitto was started
    becomes readable once the chain has a new block, with no manual export;
    a revocation drops the login the same way."""
    out = tmp_path / "mq"
    assert export(chain, out) == 0
    mq = start_mosquitto(mosquitto_factory, out)
    pid_file = tmp_path / "mosquitto.pid"
    pid_file.write_text(f"{mq.proc.pid}\n")
    args = cli.build_parser().parse_args(
        ["broker", "export", "--out", str(out), "--data-dir", str(chain), "--watch",
         "--reload-pid-file", str(pid_file)])
    job = cli_broker.Exporter.from_args(args)
    logged: queue.Queue[str] = queue.Queue()
    stop = threading.Event()
    watch = broker_sync.Watch(job, job.head, lambda: broker_sync.reload_by_pid_file(pid_file),
                              logged.put)
    t = threading.Thread(target=watch.run, args=(stop, 0.1), daemon=True)
    t.start()
    # b buys a's readings (the world lets a read b's data, not b a's)
    supplier, buyer, gwp = world.a, world.b, world.gw
    agreement = b"\xa1" * 16
    stream = f"tl/{DOMAIN}/data/{supplier.hex}/{agreement.hex()}"
    try:
        assert "reloaded mosquitto" in logged.get(timeout=10)  # the first export
        gw = clients(mq, gwp, client_id="thingledger-gateway-demo").connected()
        sup = clients(mq, supplier).connected()
        buy = clients(mq, buyer).connected()
        assert buy.subscribe(stream) in (0x80, 1)  # not bought yet: never delivered
        assert buy.subscribe(buyer.topic("rx")) == 1
        sup.publish(stream, b"r0")
        gw.publish(buyer.topic("rx"), b"barrier")  # the buyer's deliveries keep their order
        buy.wait_message(buyer.topic("rx"), b"barrier")
        assert not buy.got(stream)

        world.access.purchases[buyer.id] = {(supplier.id, agreement)}  # its DEMAND matched
        empty_block(chain)
        line = logged.get(timeout=10)
        assert "reloaded mosquitto" in line and stream in (out / "acl").read_text()
        assert buy.subscribe(stream) == 1  # a fresh subscription, under the new rules
        sup.publish(stream, b"r1")
        buy.wait_message(stream, b"r1")

        world.access.inactive.add(buyer.id)  # revoked by its owner
        empty_block(chain)
        assert "reloaded mosquitto" in logged.get(timeout=10)
        wait_until(lambda: connack(HOST, mq.port, buyer.hex, buyer.hex, buyer.password())
                   not in (0, None), 10, interval=0.1, what="mosquitto to refuse the revoked one")
    finally:
        stop.set()
        t.join(10)
    assert not t.is_alive() and mq.proc.poll() is None, mq.log_text()


def test_export_refuses_an_unknown_group_or_owner(chain, tmp_path, capsys):
    out = tmp_path / "mq"
    for opt in ("--group", "--owner"):
        assert cli.main(["broker", "export", "--out", str(out), "--data-dir", str(chain),
                         opt, "no-such-name-tl"]) == cli.EXIT_USAGE
        assert "no-such-name-tl" in capsys.readouterr().err
        assert not (out / "passwd").exists()


@pytest.fixture
def shared_dir():
    """A folder another user can enter (pytest's tmp_path is 0700 root's)."""
    d = Path(tempfile.mkdtemp(prefix="tl-mq-"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_mosquitto_as_its_own_user_reads_an_export_for_its_group(
        chain, world, shared_dir, mosquitto_factory):
    """Deployed mosquitto drops root for its own user (Debian: `mosquitto`;
    here `nobody`, group `nogroup`). `--group nogroup` gives it the files
    (0640 root:nogroup) and logins work after export + SIGHUP; a plain
    export (0600, the exporter's) locks every login out at the next reload."""
    if os.getuid() != 0:
        pytest.skip("needs root: mosquitto must drop to another user")
    try:
        nobody, nogroup = pwd.getpwnam("nobody"), grp.getgrnam("nogroup")
    except KeyError:
        pytest.skip("no user nobody / group nogroup")
    out = shared_dir / "mq"

    def export_for(*opts: str) -> None:
        assert cli.main(["broker", "export", "--out", str(out), "--data-dir", str(chain),
                         *opts]) == 0

    a = world.a
    export_for("--group", "nogroup")
    for f in ("passwd", "acl"):
        st = (out / f).stat()
        assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o640, 0, nogroup.gr_gid)
    mq = mosquitto_factory(user=nobody.pw_name, persistence="false",
                           password_file=out / "passwd", acl_file=out / "acl",
                           **broker_auth.MOSQUITTO_OPTIONS)
    assert connack(HOST, mq.port, a.hex, a.hex, a.password()) == 0

    def reload_until(code_ok: bool, what: str) -> None:
        mq.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: (connack(HOST, mq.port, a.hex, a.hex, a.password()) == 0) == code_ok,
                   10, interval=0.1, what=what)

    export_for()  # the files as they were written before --group: 0600 root's
    assert stat.S_IMODE((out / "passwd").stat().st_mode) == 0o600
    reload_until(False, "mosquitto (as nobody) to lose the 0600 files: every login refused")
    export_for("--group", "nogroup")
    reload_until(True, "a's login to work again after export --group + SIGHUP")
    assert mq.proc.poll() is None, mq.log_text()


def test_the_gateway_reads_the_connection_count_on_the_exported_mosquitto(
        chain, world, tmp_path, mosquitto_factory):
    """The broker-connections gauge on an enforcing mosquitto (docs/API.md,
    "Metrics"): the export's $SYS reader logs in beside the gateway's own
    persistent session, reads $SYS/broker/clients/connected, and takes no
    session over (use_username_as_clientid); it may read nothing else."""
    import asyncio

    import paho.mqtt.client as mqtt

    from gateway.node.sysclients import SysClients

    out = tmp_path / "mq"
    assert export(chain, out) == 0
    mq = mosquitto_factory(password_file=out / "passwd", acl_file=out / "acl", sys_interval=1,
                           **broker_auth.MOSQUITTO_OPTIONS)
    user, pw = broker_auth.gateway_credentials(world.gw.priv, DOMAIN)
    sys_user = broker_auth.sys_user(user)
    gone = threading.Event()
    gw = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="thingledger-gateway-demo",
                     clean_session=False, protocol=mqtt.MQTTv311)
    gw.username_pw_set(user, pw)
    gw.on_disconnect = lambda *a: gone.set()
    gw.connect(HOST, mq.port)
    gw.loop_start()
    got: list[float] = []
    try:
        assert connack(HOST, mq.port, sys_user, sys_user, pw) == 0
        assert connack(HOST, mq.port, sys_user, sys_user, world.a.password()) not in (0, None)

        async def read() -> None:
            both = asyncio.Event()  # on_value runs in this loop (call_soon_threadsafe)

            def on_value(n: float) -> None:
                got.append(n)
                if n >= 2:
                    both.set()

            sc = SysClients(mq.url, sys_user, on_value, asyncio.get_running_loop(),
                            username=sys_user, password=pw)
            sc.start()
            try:  # mosquitto publishes the count when it changes (sys_interval 1 s)
                await asyncio.wait_for(both.wait(), 15)
            finally:
                sc.stop()

        asyncio.run(read())
        assert got[-1] >= 2, got  # the gateway's session and the reader, read by the reader
        assert not gone.is_set(), mq.log_text()  # the gateway's session was not taken over
        assert "already connected" not in mq.log_text()
        # the reader's grant is that one topic: it receives nothing of the domain
        spy = AuthClient(mq, sys_user, pw, client_id=sys_user).connected()
        assert spy.subscribe(f"tl/{DOMAIN}/#") in (0x80, 1)
        gw.publish(f"tl/{DOMAIN}/blocks", b"not-for-the-reader", qos=1).wait_for_publish(10)
        assert spy.subscribe(broker_auth.SYS_CLIENTS_TOPIC) in (0, 1)  # granted
        spy.wait(lambda c: c.got(broker_auth.SYS_CLIENTS_TOPIC), 15, "a $SYS count after it")
        assert not spy.got(f"tl/{DOMAIN}/blocks")
        spy.close()
    finally:
        gw.loop_stop()
        gw.disconnect()
