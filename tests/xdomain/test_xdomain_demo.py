"""`thingledger xdomain demo` (`make run-xdomain`): two live gateways, a
transfer relayed with its proof and acknowledged, a second one refunded on
timeout while no relayer ran."""

from __future__ import annotations

import re
import subprocess

from tools.build import tool


def test_the_demo_shows_a_transfer_and_a_timeout_refund(tmp_path) -> None:
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
    v = subprocess.run([tool("thingledger"), "chain", "verify", "--data-dir",
                        str(tmp_path / "d" / "dom-b")], capture_output=True, text=True, timeout=60)
    assert v.returncode == 0, v.stdout + v.stderr
