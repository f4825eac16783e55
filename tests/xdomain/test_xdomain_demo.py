"""`thingledger xdomain demo` (`make run-xdomain`): two live gateways, a
transfer relayed with its proof and acknowledged, a second one refunded on
timeout while no relayer ran, and a cross-domain purchase: bob in dom-b pays
sam of dom-a with a packet, and checks sam's readings, read on dom-b's
broker as the relayer republishes dom-a's data topic, against the batch roots committed in dom-a and proven in
dom-b's light client; dom-a's operator pays sam."""

from __future__ import annotations

import re
import subprocess

from tools.build import tool


def test_the_demo_shows_a_transfer_a_timeout_refund_and_a_purchase(tmp_path) -> None:
    p = subprocess.run([tool("thingledger"), "xdomain", "demo", "--dir", str(tmp_path / "d")],
                       capture_output=True, text=True, timeout=300)
    out = p.stdout
    assert p.returncode == 0, out + p.stderr
    assert re.search(r"relay: recv +in dom-b packet 1 ok", out), out
    assert re.search(r"relay: ack +in dom-a packet 1 ok", out), out
    assert "alice 900 in dom-a, bob 600 in dom-b" in out, out
    assert re.search(r"relay: timeout in dom-a packet 2 ok", out), out
    assert "alice 900 in dom-a (refunded), bob 599 in dom-b" in out, out
    assert re.search(r"from dom-a +seq 1 +ok", out), out
    # the purchase: offers and readings of dom-a read on dom-b's broker, bridged by the relayer
    assert re.search(r"bob reads dom-a's offer directory on dom-b's broker \(bridged by the "
                     r"relayer\): \w{8} at 3", out), out
    assert re.search(r"bob listens on tl/dom-b/data/\w{32}/x/dom-a/data/\w{32}/\w{32}\n", out)
    assert re.search(r"the offer of \w{8} proven in dom-b's light client of dom-a: price 3",
                     out), out
    assert "bob paid 12 from dom-b to his id in dom-a with a packet: 12 there" in out, out
    assert re.search(r"agreement \w{8} proven in dom-b: supplier \w{8}, 4 readings at 3", out)
    for batch, first, last in ((0, 0, 1), (1, 2, 3)):
        assert re.search(r"batch %d: readings %d..%d in the root committed at dom-a height \d+, "
                         r"proven in dom-b" % (batch, first, last), out), out
    assert "bob verified 4 readings: 0:2150e-2, 1:2157e-2, 2:2164e-2, 3:2171e-2" in out, out
    assert "sam holds 12 in dom-a" in out, out
    for d in ("dom-a", "dom-b"):
        v = subprocess.run([tool("thingledger"), "chain", "verify", "--data-dir",
                            str(tmp_path / "d" / d)], capture_output=True, text=True, timeout=60)
        assert v.returncode == 0, v.stdout + v.stderr
