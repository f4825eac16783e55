"""`thingledger xdomain demo` (`make run-xdomain`): two live gateways, a
transfer relayed with its proof and acknowledged, a second one refunded on
timeout while no relayer ran, and a cross-domain purchase: bob in dom-b pays
sam of dom-a with a packet, and checks sam's readings, read on dom-b's
broker as the relayer republishes dom-a's data topic, against the batch roots committed in dom-a and proven in
dom-b's light client; dom-a's operator pays sam. Then a virtual buyer board in
dom-b (the market buyer firmware, unchanged) buys the same readings through a
reseller in dom-b (`thingledger xdomain resell`), which buys them of sam in
dom-a, checks them and streams them to the board; both operators pay."""

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
    # the board part: dora, a virtual buyer board in dom-b (the market buyer
    # firmware), buys through rex, a reseller in dom-b, who buys sam's readings in dom-a
    assert re.search(r"rex: resell: offers temperature in dom-b at 5 a reading", out), out
    h = re.search(r"dora: demand service=temperature agreement=(\w{8}) quantity=4", out)
    assert h, out
    assert re.search(r"rex: resell: agreement %s\w{24} in dom-b: \w{32} buys 4 readings of "
                     r"temperature at 5" % h[1], out), out
    assert re.search(r"rex: resell: bought in dom-a: agreement \w{32} of \w{32}, 4 readings at "
                     r"3, proven and recorded in dom-b", out), out
    for i in range(4):
        assert re.search(r"dora: bought agreement=%s index=%d value=%d scale=-2\n"
                         % (h[1], i, 2150 + 7 * i), out), out
    assert re.search(r"dora: done agreement=%s readings=4 " % h[1], out), out
    assert re.search(r"rex: resell: agreement %s\w{24} in dom-b: 4 of 4 readings delivered"
                     % h[1], out), out
    assert "dom-b's operator judged the batches: rex holds 108 in dom-b" in out, out
    assert "sam holds 24 in dom-a" in out, out
    # both purchases of dom-a's readings are recorded in dom-b: bob's and rex's
    assert "2 purchase(s)" in out and len(re.findall(
        r"in dom-a agreement \w{32} buyer \w{32} supplier \w{32} temperature: 4 at 3, "
        r"committed 4 of 4", out)) == 2, out
    for d in ("dom-a", "dom-b"):
        v = subprocess.run([tool("thingledger"), "chain", "verify", "--data-dir",
                            str(tmp_path / "d" / d)], capture_output=True, text=True, timeout=60)
        assert v.returncode == 0, v.stdout + v.stderr
