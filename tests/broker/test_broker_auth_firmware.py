"""The firmware's broker credential under MicroPython (the mpy-cross build, as
on a board): the same password as CPython computes, and accepted by the
enforcing embedded broker when the real firmware MQTT client logs in."""

from __future__ import annotations

import pytest

from gateway import broker as broker_auth
from gateway.broker.embedded import ThreadedBroker
from shared import p256
from tests.support.ba_world import DOMAIN, FakeAccess, Principal
from tests.support.brokers import HOST, free_port
from tests.support.mpyrun import firmware_build, run_micropython

pytestmark = pytest.mark.micropython

SCRIPT = """
import sys, os
sys.path.insert(0, {build!r})
os.chdir({flash!r})
from firmware import wallet
w = wallet.load_or_create()
print("ID", w.hex)
print("PW", w.mqtt_password({domain!r}))
port = {port}
if port:
    from firmware.mqtt import MQTTClient
    c = MQTTClient(w.hex, "127.0.0.1", port=port, user=w.hex,
                   password=w.mqtt_password({password_domain!r}), keepalive=30)
    try:
        c.connect()
    except OSError as e:
        print("REFUSED", e.args[0])
        sys.exit(0)
    c.publish("tl/{domain}/tx", b"from-firmware", qos=1)
    n = 0
    while c.pending() and n < 100:
        c.check_msg(50)
        n += 1
    print("PUBACKED", c.pending() == 0)
    c.disconnect()
"""


def run_board(tmp_path, flash, port=0, password_domain=DOMAIN) -> dict[str, str]:
    script = tmp_path / f"board_{port}_{password_domain}.py"
    script.write_text(SCRIPT.format(build=str(firmware_build()), flash=str(flash),
                                    domain=DOMAIN, port=port, password_domain=password_domain))
    proc = run_micropython([str(script)], timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return dict(line.split(" ", 1) for line in proc.stdout.splitlines() if " " in line)


def test_firmware_password_matches_cpython_and_logs_in(tmp_path, clients):
    flash = tmp_path / "flash"
    flash.mkdir()
    out = run_board(tmp_path, flash)
    raw = (flash / "wallet.key").read_bytes()  # id || private key, as the board stores it
    dev_id, priv = raw[:16], raw[16:]
    assert out["ID"] == dev_id.hex()
    assert out["PW"] == broker_auth.mqtt_password(priv, DOMAIN, dev_id)
    pub = p256.public_key(priv)
    assert broker_auth.verify_password(pub, DOMAIN, dev_id, out["PW"])

    # the real firmware client logs in to the enforcing embedded broker
    gw = Principal("authority")
    access = FakeAccess(keys={dev_id: pub, gw.id: gw.pub})
    tb = ThreadedBroker(HOST, free_port(), access=lambda: access, domain=DOMAIN,
                        authority=gw.pub)
    tb.start()
    try:
        tb.host, tb.port = HOST, tb.broker.port
        observer = clients(tb, gw, client_id="thingledger-gateway-demo").connected()
        assert observer.subscribe(f"tl/{DOMAIN}/tx") == 1
        out = run_board(tmp_path, flash, tb.port)
        assert out.get("PUBACKED") == "True", out
        observer.wait_message(f"tl/{DOMAIN}/tx", b"from-firmware")
        # a password for another domain is refused (CONNACK 4)
        out = run_board(tmp_path, flash, tb.port, password_domain="elsewhere")
        assert out.get("REFUSED") == str(broker_auth.BAD_USERNAME_PASSWORD), out
    finally:
        tb.stop(5)
