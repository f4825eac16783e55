"""The coordinator on one connection (tools/coordinator.py over
tools/mqtt_ask.Line) against a mosquitto loaded with the `thingledger broker
export` files: `use_username_as_clientid true`, so a second connection under
the coordination node's login takes the first one's session over (mosquitto
logs "already connected" and drops the older). Its status subscription, its
retained "online" and its NODE_ASSIGN submissions (each answered on its rx
topic) go over one connection: it assigns a light node, and reassigns it
when its full node's last will says offline, with one connection of its
login in mosquitto's log."""

from __future__ import annotations

import re
import signal
import subprocess
import threading
from pathlib import Path

import pytest

from gateway import broker as broker_auth
from gateway.db.genesis_files import write_key
from gateway.db.store import Store
from gateway.identity import statements as itx
from gateway.node.config import DB_FILE
from tests.support.brokers import wait_until
from tests.support.gwtest import DOMAIN, Node, key
from tests.support.waits import lines, wait_line
from tests.tools.test_coordination_node import StatusStandIn
from tools import cli
from tools.build import tool
from tools.coordinator import Coordinator
from tools.keys import KeyPair
from tools.submit import login_for

pytestmark = pytest.mark.mosquitto

FULL = {"power": "mains", "ram_kib": 4 << 20, "lifetime": "long"}
LIGHT = {"power": "battery", "ram_kib": 264, "lifetime": "short"}
COORD = {"power": "usb", "ram_kib": 512, "lifetime": "long"}


def keypair(name: str) -> KeyPair:
    return KeyPair(*key(name))


def presence(broker, who: KeyPair) -> StatusStandIn:
    """A full node's status under its own login: retained "online", last
    will "offline"."""
    return StatusStandIn(broker, who.id.hex(), login_for(who, DOMAIN))


def assigned(data: Path, light: bytes) -> bytes:
    with Store(data / DB_FILE, readonly=True) as s:
        return dict(s.devices())[light].assigned


def test_the_coordinator_keeps_one_connection_on_an_exported_mosquitto(
        tmp_path: Path, mosquitto_factory) -> None:
    owner, coord = keypair("onecoord-owner"), keypair("onecoord-coord")
    fa, fb, light = keypair("onecoord-full-a"), keypair("onecoord-full-b"), \
        keypair("onecoord-light")
    full_a, full_b = sorted((fa, fb), key=lambda k: k.id)  # a: the lower id
    data = tmp_path / "gw"
    # the chain first (the export's acl lets a coordination node read every status)
    n = Node(data, {coord.public: 0, light.public: 0}, owner=owner.public)
    n.submit_all([itx.build_node_join(coord, DOMAIN, "coordination", COORD, 1),
                  itx.build_node_join(light, DOMAIN, "light", LIGHT, 1)]
                 + [itx.build_node_join(f, DOMAIN, "full", FULL, 1,
                                        itx.node_certificate(owner, DOMAIN, f.id), True)
                    for f in (fa, fb)])
    n.produce()
    n.close()
    keys = []
    for i, p in enumerate((coord, fa, fb)):
        write_key(tmp_path / ("p%d.key" % i), p.private)
        keys += ["--key", str(tmp_path / ("p%d.key" % i))]
    out = tmp_path / "mq"
    assert cli.main(["broker", "export", "--out", str(out), "--data-dir", str(data),
                     *keys]) == 0
    assert "use_username_as_clientid" in broker_auth.MOSQUITTO_OPTIONS
    log = tmp_path / "mosquitto.log"
    mq = mosquitto_factory(password_file=out / "passwd", acl_file=out / "acl",
                           log_dest="file %s" % log, log_type="all",
                           **broker_auth.MOSQUITTO_OPTIONS)
    gw = subprocess.Popen(
        [tool("thingledger"), "run", "--no-boards", "--no-http", "--data-dir", str(data),
         "--domain", DOMAIN, "--broker", mq.url, "--block-interval", "0.2"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen: list[str] = []
    said: list[str] = []
    present: list[StatusStandIn] = []
    co: Coordinator | None = None
    try:
        wait_line(lines(gw), r"chain %s at height" % DOMAIN, 60, seen)
        present = [presence(mq, full_a), presence(mq, full_b)]
        co = Coordinator(coord, mq.url, data, out=said.append, timeout=10).start()
        t = threading.Thread(target=co.run, kwargs={"poll_s": 0.1}, daemon=True)
        t.start()
        def assigns() -> list[str]:
            return [s for s in said if s.startswith("assign ")]
        # the light node goes to the lowest id, then moves when a's will says offline
        # (each assignment's line comes once its receipt came)
        wait_until(lambda: assigned(data, light.id) == full_a.id and len(assigns()) == 1, 20,
                   what="the light node assigned: %s" % said)
        present[0].crash()
        wait_until(lambda: assigned(data, light.id) == full_b.id and len(assigns()) == 2, 20,
                   what="the light node reassigned: %s" % said)
        assert all("(ok)" in s for s in assigns()), said
        assert assigns()[1].startswith("assign light node %s -> full node %s (was %s: offline)"
                                       % (light.id.hex(), full_b.id.hex(), full_a.id.hex()))
        text = log.read_text(errors="replace")
        assert "already connected" not in text, text
        assert len(re.findall(r"New client connected from \S+ as %s " % coord.id.hex(),
                              text)) == 1, text
        assert co.line.connects == 1 and co.line.url == mq.url
        co.request_stop()
        t.join(15)
        assert not t.is_alive()
    finally:
        if co is not None:
            co.request_stop()
            co.close()
        for p in present:
            p.close()
        if gw.poll() is None:
            gw.send_signal(signal.SIGINT)
            try:
                gw.wait(30)
            except subprocess.TimeoutExpired:
                gw.kill()
                gw.wait()
