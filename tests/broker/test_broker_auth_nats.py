"""`thingledger broker export --nats FILE` loaded by a real NATS server: paho
clients over its MQTT listener log in with their chain credentials, publish
only their own topics, and a device revoked on chain is refused after a
re-export and SIGHUP (gateway/broker/nats_export.py)."""

from __future__ import annotations

import stat
from types import SimpleNamespace

import pytest

from gateway.broker import gateway_credentials
from gateway.broker.nats_export import nats_check, subjects
from tests.support.ba_world import DOMAIN, connack, empty_block
from tests.support.brokers import HOST
from tools import cli


def export_nats(data, path) -> int:
    return cli.main(["broker", "export", "--nats", str(path), "--data-dir", str(data)])


def test_subjects_of_mqtt_filters():
    assert subjects("tl/d/tx") == ["tl.d.tx"]
    assert subjects("tl/d/dev/+/status") == ["tl.d.dev.*.status"]
    assert subjects("tl/d/dev/ab/#") == ["tl.d.dev.ab", "tl.d.dev.ab.>"]
    for bad in ("tl//x", "tl/a.b/x"):
        with pytest.raises(ValueError):
            subjects(bad)


def test_export_file(chain, world, tmp_path, capsys):
    path = tmp_path / "nats" / "auth.conf"
    assert export_nats(chain, path) == 0
    assert "3 users" in capsys.readouterr().out
    text = path.read_text()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert world.r.hex not in text  # revoked
    a, b = world.a.hex, world.b.hex
    line_a = next(x for x in text.splitlines() if f'user: "{a}"' in x)
    assert (f'publish: {{allow: ["tl.{DOMAIN}.tx", "tl.{DOMAIN}.dev.{a}.status", '
            f'"tl.{DOMAIN}.data.{a}", "tl.{DOMAIN}.data.{a}.>", "tl.{DOMAIN}.q.{a}.req"]}}'
            ) in line_a
    assert f'"tl.{DOMAIN}.q.{a}.res"' in line_a and f'"tl.{DOMAIN}.q.{b}.' not in line_a
    assert f'"tl.{DOMAIN}.data.{b}.>"' in line_a and f'"tl.{DOMAIN}.dev.{b}' not in line_a
    hashed = line_a.split('password: "')[1].split('"')[0]
    assert hashed.startswith("$2b$") and nats_check(world.a.password(), hashed)
    assert not nats_check(world.b.password(), hashed)
    assert cli.main(["broker", "export", "--data-dir", str(chain)]) == cli.EXIT_USAGE


def test_nats_enforces_the_export(chain, world, tmp_path, nats_factory, clients):
    path = tmp_path / "auth.conf"
    assert export_nats(chain, path) == 0
    node = nats_factory(1, include=path).nodes[0]
    mq = SimpleNamespace(host=HOST, port=node.mqtt_port)
    a, b, r, gwp = world.a, world.b, world.r, world.gw

    # logins
    assert connack(HOST, mq.port, a.hex, a.hex, a.password()) == 0
    user, pw = gateway_credentials(gwp.priv, DOMAIN)
    assert connack(HOST, mq.port, "thingledger-gateway-demo", user, pw) == 0
    assert connack(HOST, mq.port, a.hex, a.hex, b.password()) not in (0, None)
    assert connack(HOST, mq.port, a.hex, a.hex, "00" * 64) not in (0, None)
    assert connack(HOST, mq.port, r.hex, r.hex, r.password()) not in (0, None)  # revoked
    assert connack(HOST, mq.port, "anon") not in (0, None)  # anonymous

    # a publishes its own topics, is refused b's; b sees only the gateway's message
    gw = clients(mq, gwp, client_id="thingledger-gateway-demo").connected()
    assert gw.subscribe(f"tl/{DOMAIN}/#") == 1
    sb = clients(mq, b).connected()
    assert sb.subscribe(f"tl/{DOMAIN}/dev/{b.hex}/#") == 1
    for topic in (b.topic("rx"), b.topic("status"), f"tl/{DOMAIN}/blocks"):
        forger = clients(mq, a, client_id=f"{a.hex}-forger").connected()
        info = forger.client.publish(topic, b"forged", qos=1)
        forger.wait(lambda c, i=info: i.is_published() or c.disconnected, 10,
                    "PUBACK or drop")
        forger.close()
    sa = clients(mq, a).connected()
    sa.publish(f"tl/{DOMAIN}/tx", b"tx-from-a")
    gw.wait_message(f"tl/{DOMAIN}/tx", b"tx-from-a")
    sa.publish(f"tl/{DOMAIN}/data/{a.hex}/temp", b"2150")
    gw.wait_message(f"tl/{DOMAIN}/data/{a.hex}/temp", b"2150")
    gw.publish(b.topic("rx"), b"receipt-for-b")
    sb.wait_message(b.topic("rx"), b"receipt-for-b")
    assert not sb.got(payload=b"forged") and not gw.got(payload=b"forged")
    # a may read b's data (granted), never b's rx
    assert sa.subscribe(b.topic("rx")) == 0x80
    assert sa.subscribe(f"tl/{DOMAIN}/data/{b.hex}/#") == 1
    sb.publish(f"tl/{DOMAIN}/data/{b.hex}/temp", b"2160")
    sa.wait_message(f"tl/{DOMAIN}/data/{b.hex}/temp", b"2160")
    gw.publish(b.topic("rx"), b"private-to-b")
    sb.wait_message(b.topic("rx"), b"private-to-b")
    assert not sa.got(b.topic("rx"))

    # NATS does not tie the MQTT client id to the user: a may present b's client id
    # and take b's persistent session, but is not handed what was queued for b
    sb.close()
    sb_persistent = clients(mq, b, client_id=b.hex, clean_session=False).connected()
    assert sb_persistent.subscribe(b.topic("rx")) == 1
    sb_persistent.close()
    gw.publish(b.topic("rx"), b"queued-for-b")
    thief = clients(mq, a, client_id=b.hex, clean_session=False).connected()
    assert thief.subscribe(a.topic("rx")) == 1
    gw.publish(a.topic("rx"), b"barrier-for-a")
    thief.wait_message(a.topic("rx"), b"barrier-for-a")
    assert not thief.got(payload=b"queued-for-b")
    thief.close()
    sb = clients(mq, b, client_id=b.hex, clean_session=False).connected()
    sb.wait_message(b.topic("rx"), b"queued-for-b")  # still b's

    # the owner revokes a: re-export, SIGHUP; a's login is refused, b's still works
    world.access.inactive.add(a.id)
    assert export_nats(chain, path) == 0
    assert a.hex not in path.read_text()
    node.reload()  # returns once the server has finished reloading
    assert connack(HOST, mq.port, f"{a.hex}-2", a.hex, a.password()) == 5  # not authorised
    sa.client.publish(f"tl/{DOMAIN}/tx", b"after-revocation", qos=1)
    sb.publish(f"tl/{DOMAIN}/tx", b"barrier")
    gw.wait_message(f"tl/{DOMAIN}/tx", b"barrier")
    assert not gw.got(payload=b"after-revocation")
    assert connack(HOST, mq.port, f"{b.hex}-2", b.hex, b.password()) == 0
    assert node.running(), node.log_text()


def test_watch_reloads_nats_after_a_revocation(chain, world, tmp_path, nats_factory):
    """`broker export --nats FILE --watch --reload-pid-file`: a revocation on
    chain (a new block) is exported and the node SIGHUPed, with no manual step."""
    import queue
    import threading

    from tools import broker_sync
    from tools.cli import broker as cli_broker

    path = tmp_path / "auth.conf"
    assert export_nats(chain, path) == 0
    node = nats_factory(1, include=path, pid_dir=tmp_path / "run").nodes[0]
    assert node.pid_file is not None and node.pid_file.exists()
    args = cli.build_parser().parse_args(
        ["broker", "export", "--nats", str(path), "--data-dir", str(chain), "--watch",
         "--reload-pid-file", str(node.pid_file)])
    job = cli_broker.Exporter.from_args(args)
    logged: queue.Queue[str] = queue.Queue()
    stop = threading.Event()
    watch = broker_sync.Watch(job, job.head,
                              lambda: broker_sync.reload_by_pid_file(node.pid_file), logged.put)
    t = threading.Thread(target=watch.run, args=(stop, 0.1), daemon=True)
    reloads = node.reloads()
    t.start()
    a = world.a
    try:
        assert "reloaded" in logged.get(timeout=10)  # the first export
        node.wait_reloaded(reloads)  # a login during a reload may be refused
        assert connack(HOST, node.mqtt_port, a.hex, a.hex, a.password()) == 0
        reloads = node.reloads()
        world.access.inactive.add(a.id)
        empty_block(chain)
        assert "reloaded" in logged.get(timeout=10)
        assert a.hex not in path.read_text()
        node.wait_reloaded(reloads)
        assert connack(HOST, node.mqtt_port, a.hex, a.hex, a.password()) == 5
        assert node.running(), node.log_text()
    finally:
        stop.set()
        t.join(10)


def test_nats_refuses_a_banned_device_after_export(tmp_path, nats_factory):
    """A key banned by the chain's trust levels (docs/TRUST.md: a proved
    equivocation) is left out of the NATS export: after the re-export and a
    SIGHUP the real NATS server refuses its login; the others still log in."""
    from gateway.broker import mqtt_password
    from gateway.broker.nats_export import export_nats as write_nats
    from gateway.identity.access import Access
    from gateway.trust import standing
    from shared import tx as txm
    from tests.support import gwtest

    alice, bob = gwtest.Device("alice"), gwtest.Device("bob")
    n = gwtest.Node(tmp_path / "gw", {alice.pub: 1000, bob.pub: 1000}, trust=True)
    try:
        d = gwtest.DOMAIN
        creds = {x.id: mqtt_password(x.priv, d, x.id) for x in (alice, bob)}
        gateway = gateway_credentials(n.ledger.authority_priv, d)
        path = tmp_path / "auth.conf"

        def export():  # -> Export
            return write_nats(path, d, Access.from_state(n.state, d), creds, gateway, cost=4)

        assert sorted(export().users) == sorted([gateway[0], alice.id.hex(), bob.id.hex()])
        node = nats_factory(1, include=path).nodes[0]
        port = node.mqtt_port
        assert connack(HOST, port, alice.id.hex(), alice.id.hex(), creds[alice.id]) == 0

        # alice signs two different txs with one seq; bob proves it: banned at once
        a, b = alice.reading(100), alice.reading(200, seq=alice.seq)
        n.submit_all([a, bob.reading()])
        n.produce()
        n.submit_all([bob.make(txm.TYPE_PROOF, {1: "tx-equivocation", 2: a, 3: b})])
        n.produce()
        assert standing.level_of(n.state, alice.id) == standing.BANNED
        ex = export()
        assert ex.skipped[alice.id.hex()] == "banned (docs/TRUST.md)"
        assert alice.id.hex() not in path.read_text()
        node.reload()  # returns once the server has finished reloading
        assert connack(HOST, port, f"{alice.id.hex()}-2", alice.id.hex(), creds[alice.id]) == 5
        assert connack(HOST, port, bob.id.hex(), bob.id.hex(), creds[bob.id]) == 0
        user, pw = gateway
        assert connack(HOST, port, "thingledger-gateway-demo", user, pw) == 0
        assert node.running(), node.log_text()
    finally:
        n.close()
