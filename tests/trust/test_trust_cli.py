"""`thingledger trust ID` and `thingledger trust --list` read the levels,
scores and history from the chain in a data dir."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.trust import standing as st
from shared import tx as txm
from tests.support.gwtest import Device, Node
from tools.cli.app import main


def test_trust_shows_level_score_and_history(tmp_path: Path, alice: Device, bob: Device,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    n = Node(tmp_path / "gw", {alice.pub: 10, bob.pub: 10}, trust=True)
    a = alice.reading(1)
    b = alice.reading(2, seq=alice.seq)
    n.submit_all([a, bob.reading()])
    n.produce()
    n.submit_all([bob.make(txm.TYPE_PROOF, {1: "tx-equivocation", 2: a, 3: b})])
    proof_block = n.produce()
    n.close()
    data = ["--data-dir", str(tmp_path / "gw")]
    assert main(["trust", alice.id.hex(), *data]) == 0
    out = capsys.readouterr().out
    assert "level     banned" in out
    assert "proof:tx-equivocation" in out and proof_block.txs[0].id.hex()[:16] in out
    assert "banned key " + alice.pub.hex() in out
    assert main(["trust", "--list", *data]) == 0
    rows = {line.split()[0]: line.split()[1] for line in capsys.readouterr().out.splitlines()
            if len(line.split()) == 5 and line.split()[0] != "id"}
    assert rows[alice.id.hex()] == st.BANNED and rows[bob.id.hex()] == st.PROBATION
    assert main(["trust", Device("nobody").id.hex(), *data]) == 1
