"""People report and prove with `thingledger report` / `thingledger proof`
against a running gateway (real amqtt broker): the report is weighed, the
proof bans the key, and the banned device's next tx is refused over MQTT."""

from __future__ import annotations

from pathlib import Path

from gateway.db import genesis_files as genesis
from gateway.db.store import Store
from gateway.node.config import DB_FILE
from gateway.trust import standing as st
from shared import messages, reasons
from shared import tx as txm
from tests.support.e2e_devices import DOMAIN, GatewayThread, SimDevice, authority_of, thingledger


def test_report_and_proof_from_the_command_line(amqtt_broker, tmp_path: Path) -> None:
    data = tmp_path / "gw"
    genesis.create_domain(data, DOMAIN, trust=True)
    gw = GatewayThread(data, amqtt_broker.url).start()
    devs = [SimDevice(amqtt_broker.host, amqtt_broker.port, authority_of(data),
                      name=n).connect() for n in ("reporter", "target")]
    try:
        reporter, target = devs
        for d in devs:
            r = d.receipt_for(d.submit(d.register_tx()), 10)
            assert r.status == messages.STATUS_OK
        first = target.reading_tx(100)
        assert target.receipt_for(target.submit(first), 10).status == messages.STATUS_OK
        twin = target.sign(txm.TYPE_READING, {1: 101, 2: -2}, seq=txm.decode(first).seq)
        key = tmp_path / "reporter.key"
        key.write_text(reporter.priv.hex())
        key.chmod(0o600)
        net = ["--key", str(key), "--broker", amqtt_broker.url, "--data-dir", str(data),
               "--seq", "0"]
        out = thingledger("report", target.hex, "--kind", "implausible-reading", *net)
        assert out.returncode == 0 and "committed" in out.stdout, out.stdout + out.stderr
        with Store(data / DB_FILE, readonly=True) as s:
            rec = st.get(s.load_state(), target.id)
        assert rec is not None and rec.reports_received == 1 and rec.report_points == 0
        a, b = tmp_path / "a.cose", tmp_path / "b.cose"
        a.write_bytes(first)
        b.write_bytes(twin)
        out = thingledger("proof", str(a), str(b), *net)
        assert out.returncode == 0 and "committed" in out.stdout, out.stdout + out.stderr
        gw.wait_event(rf"trust {target.hex[:8]} probation -> banned")
        refused = target.rejection_for(target.submit(target.reading_tx(102)), 10)
        assert refused.reason == reasons.BANNED
        out = thingledger("trust", target.hex, "--data-dir", str(data))
        assert "level     banned" in out.stdout and "report:implausible-reading:w0" in out.stdout
    finally:
        for d in devs:
            d.close()
        gw.stop()


def test_gateway_sees_a_second_session_under_one_id_on_mosquitto(mosquitto_broker,
                                                                 tmp_path: Path) -> None:
    """mosquitto takes a session over (the first connection dropped, its
    will `offline` published) where the embedded broker refuses the newcomer:
    the gateway notices the id coming online again within seconds."""
    import paho.mqtt.client as mqtt

    from shared import topics

    data = tmp_path / "gw"
    genesis.create_domain(data, DOMAIN, trust=True)
    gw = GatewayThread(data, mosquitto_broker.url).start()
    dev = "ab" * 16
    status = topics.status(DOMAIN, dev)
    clients = []

    def connect() -> mqtt.Client:
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=dev, protocol=mqtt.MQTTv311)
        c.will_set(status, b"offline", qos=1, retain=True)
        c.connect(mosquitto_broker.host, mosquitto_broker.port)
        c.loop_start()
        c.publish(status, b"online", qos=1, retain=True).wait_for_publish(5)
        clients.append(c)
        return c

    try:
        first = connect()
        # a tx published after the status: its block means the status was read
        other = SimDevice(mosquitto_broker.host, mosquitto_broker.port, authority_of(data))
        first.publish(topics.tx(DOMAIN), other.register_tx(), qos=1).wait_for_publish(5)
        gw.wait_event(r"block height=")
        assert not any("second session" in e for e in gw.events)
        connect()  # the same client id: mosquitto takes the session over
        gw.wait_event(rf"possible second session for {dev[:8]}")
    finally:
        for c in clients:
            c.loop_stop()
            c.disconnect()
        gw.stop()
