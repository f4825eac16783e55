"""The board's MQTT client (firmware/mqtt.py) with two broker endpoints in
its list: when its broker dies (SIGKILL), it connects to the next one, keeps
its subscription and sends again every QoS 1 message the dead broker had not
acknowledged, so every heartbeat reaches one broker or the other. Real
mosquitto brokers on loopback, the client under MicroPython
(tests/e2e/firmware_scripts/mqtt_failover.py)."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from tests.support.brokers import ROOT, unique

pytestmark = [pytest.mark.micropython, pytest.mark.mosquitto]
SCRIPTS = Path(__file__).resolve().parent / "firmware_scripts"


def test_moves_to_the_next_broker_when_its_broker_dies(mosquitto_factory, micropython_proc,
                                                        firmware_mpy, paho_client) -> None:
    first, second = mosquitto_factory(), mosquitto_factory()
    prefix, cid = unique("tl"), unique("dev")
    subs = [paho_client(b, f"{prefix}/up", client_id=unique("paho")) for b in (first, second)]
    p = micropython_proc(SCRIPTS / "mqtt_failover.py", ROOT, firmware_mpy, first.host,
                         first.port, prefix, cid, second.port)
    p.expect(r"^READY$")
    subs[0].wait_for(lambda c: len(c.payloads()) >= 3, 10, what="heartbeats on the first")
    first.proc.send_signal(signal.SIGKILL)  # the broker dies: no DISCONNECT, no will
    first.proc.wait(5)
    p.expect(r"^DOWN ", timeout=15)
    m = p.expect(r"^UP port=%d reconnects=1 failures=\d+ resent=(\d+) pending=\d+$"
                 % second.port, timeout=15)
    subs[1].wait_for(lambda c: len(c.payloads()) >= 3, 10, what="heartbeats on the second")
    ctl = paho_client(second)
    ctl.publish(f"{prefix}/down", "stop", qos=1)  # reaches it: subscribed again there
    done = p.expect(r"^DONE last=(\d+) pending=0$", timeout=15)
    assert p.wait_exit() == 0, p.output()
    last = int(done[1])
    want = {b"hb-%d" % i for i in range(1, last + 1)}
    subs[1].wait_for(lambda c: want <= set(subs[0].payloads()) | set(c.payloads()), 10,
                     what="every heartbeat on one broker or the other")
    # what was in flight or published offline went out again to the second broker
    offline = [ln for ln in p.lines if ln.endswith(" offline")]
    assert not offline or int(m[1]) >= 1, p.output()
