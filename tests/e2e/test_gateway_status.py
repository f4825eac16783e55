"""The gateway says it is up like a device does: retained `online` on its
status topic (tl/<d>/dev/<authority id>/status) while connected, `offline`
when it stops; coordination nodes follow it to reassign light nodes."""

from __future__ import annotations

from shared import topics, tx
from tests.support.brokers import wait_until
from tests.support.e2e_devices import GatewayThread, authority_of
from tests.support.waits import retained


def test_gateway_status_online_then_offline(tmp_path, mosquitto_broker):
    gw = GatewayThread(tmp_path / "gw", mosquitto_broker.url).start()
    topic = topics.status("demo", tx.device_id(authority_of(tmp_path / "gw")).hex())
    try:
        wait_until(lambda: retained(mosquitto_broker, topic) == b"online", 10,
                   what="gateway online")
    finally:
        gw.stop()
    wait_until(lambda: retained(mosquitto_broker, topic) == b"offline", 10,
               what="gateway offline after stop")
