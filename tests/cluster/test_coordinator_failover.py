"""The coordinator moves to the next broker when its own dies (tools/coordinator.py,
as a board does): on a 3-node NATS cluster it follows the statuses through
node 1; node 1 is SIGKILLed; it connects to node 2, announces itself there
and reads the retained statuses again, and a status published after the
kill (through node 3) reaches it."""

from __future__ import annotations

from types import SimpleNamespace

import paho.mqtt.client as mqtt

from shared import topics
from tests.support.brokers import unique, wait_until
from tests.support.gwtest import DOMAIN, Node, key
from tests.support.waits import retained
from tools.coordinator import Coordinator
from tools.keys import KeyPair


def test_coordinator_fails_over_to_the_next_broker(tmp_path, nats_cluster):
    node = Node(tmp_path / "gw")  # a chain to read (the coordinator decides nothing here)
    node.close()
    priv, pub = key("coordinator")
    urls = [f"mqtt://127.0.0.1:{n.mqtt_port}" for n in nats_cluster.nodes]
    full = "ab" * 16
    lines: list[str] = []
    peer = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=unique("full"),
                       protocol=mqtt.MQTTv311)
    peer.connect("127.0.0.1", nats_cluster.nodes[2].mqtt_port)
    peer.loop_start()
    c = Coordinator(KeyPair(priv, pub), urls[:2], tmp_path / "gw", out=lines.append,
                    failover_s=1.0)
    try:
        peer.publish(topics.status(DOMAIN, full), b"online", qos=1,
                     retain=True).wait_for_publish(10)
        c.start(connect_timeout=20)
        assert c.broker_url == urls[0]
        wait_until(lambda: bytes.fromhex(full) in c.online(), 20, what="status via node 1")

        nats_cluster.nodes[0].kill()
        wait_until(lambda: c.check_broker() and c.broker_url == urls[1], 60,
                   what=f"on node 2 with the statuses read: {lines}")
        assert f"broker {urls[0]} gone: now on {urls[1]}" in lines
        assert bytes.fromhex(full) in c.online()  # the retained status, read again
        me = topics.status(DOMAIN, c.id.hex())
        n2 = nats_cluster.nodes[1]
        b2 = SimpleNamespace(host="127.0.0.1", port=n2.mqtt_port)
        wait_until(lambda: retained(b2, me, 2.0) == b"online", 30,
                   what="its own status on node 2")
        peer.publish(topics.status(DOMAIN, full), b"offline", qos=1,
                     retain=True).wait_for_publish(10)
        wait_until(lambda: bytes.fromhex(full) not in c.online(), 20,
                   what="a status published after the failover")
    finally:
        c.close()
        peer.loop_stop()
        peer.disconnect()
