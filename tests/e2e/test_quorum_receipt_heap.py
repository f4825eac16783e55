"""A plain board checks a quorum receipt (2 of 3 votes) within 64 KiB, with
the real MQTT client object (issue 11 item 4).

The board is wired and booted as `python -m bench.receipt_heap` does it
(mpy-cross build, boot file, firmware/startup.py's wiring, the real Node and
MQTTClient, never connected; bench/mp_receipt_heap.py) under
`micropython -X heapsize=64k`, and checks the receipt of its first reading in
its own MQTT callback while holding a ballast; the largest ballast with which
the check still succeeds is a lower bound of the free heap at the check's
lowest point. It must be at least MARGIN: a regression of the code every
plain board keeps (firmware/mqtt.py, firmware/node.py, the shared modules it
loads) or of the check's peak (shared/commit.py, shared/cose.py,
shared/p256.py) shows up here. When firmware/mqtt.py started to ask a refused
SUBSCRIBE again (96 B more resident), this check failed outright (no
ballast at all); bench/README.md has the figures."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import receipt_heap

pytestmark = pytest.mark.micropython

MARGIN = 128  # bytes; the figure itself (320 B when written) is the bench's to report


def test_a_plain_board_checks_two_of_three_votes_in_64k(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(receipt_heap, "HEAP", "64k")  # whatever BENCH_HEAP says
    build_dir = tmp_path / "fw"
    receipt_heap.build(build_dir, "unix")
    receipt_heap.compile_stale(receipt_heap.SCRIPT, build_dir / "mp_receipt_heap.mpy",
                               receipt_heap.SCRIPT.name, ("-O3",))
    before, low = receipt_heap.run(build_dir, tmp_path, "plain", "2 of 3")
    assert before > 0, "out of heap before the first transaction"
    assert low >= MARGIN, f"lowest free heap during the check: {low} B (free before: {before} B)"
