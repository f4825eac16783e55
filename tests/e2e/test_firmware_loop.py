"""The whole firmware loop on a virtual board: the real firmware (mpy-cross
build) under `micropython -X heapsize=64k` registers, signs and publishes
readings through a real broker (amqtt in-process; Debian's mosquitto); a
CPython subscriber verifies every published message with `cryptography`
(shared.cose's backend) and with pycose; the gateway commits them; the board
checks each receipt against the signed header with its Merkle proof."""

from __future__ import annotations

import re

import pytest
from pycose.messages import Sign1Message

from gateway.db.store import Store
from shared import topics, tx
from tests.support.e2e_devices import GatewayThread
from tests.support.mpyrun import firmware_build
from tests.support.pycose_keys import pycose_key
from tests.support.waits import lines, wait_line
from tools.vboard import VirtualBoard

RECEIPTS = 4


@pytest.mark.micropython
@pytest.mark.parametrize("broker_name", ["amqtt_broker", "mosquitto_broker"])
def test_firmware_loop_on_64k_heap(request, broker_name, tmp_path, paho_client):
    broker = request.getfixturevalue(broker_name)
    gw = GatewayThread(tmp_path / "gateway", broker.url, block_interval=0.3).start()
    sniffer = paho_client(broker, [topics.tx("demo")])
    board = VirtualBoard("fw", tmp_path / "board")
    board.configure(domain="demo", authority_hex=gw.gw.led.genesis.authority.hex(),
                    host=broker.host, port=broker.port, interval_ms=250)
    proc = board.start(firmware_build(), heap="64k")
    q, seen = lines(proc), []
    try:
        for _ in range(RECEIPTS):
            wait_line(q, r"^receipt-verified", 30, seen)
        assert not [ln for ln in seen if "Error" in ln], "\n".join(seen)
    finally:
        proc.terminate()
        proc.wait(10)
        gw.stop()

    frees = [int(f) for f in re.findall(r"free=(\d+)", "\n".join(seen))]
    assert len(frees) == RECEIPTS and min(frees) > 0

    # every message the board published verifies independently
    published = sniffer.payloads(topics.tx("demo"))
    assert len(published) >= RECEIPTS
    with Store(tmp_path / "gateway" / "chain.db", readonly=True) as store:
        state = store.load_state()
        for m in published:
            t = tx.decode(m)
            pub = state.get(t.sender).pubkey
            t.verify(pub)  # cryptography backend
            msg = Sign1Message.decode(m)
            msg.key = pycose_key(pub)
            assert msg.verify_signature()
        committed = [store.get_tx(tx.tx_id(m)) for m in published]
    assert sum(1 for c in committed if c is not None) >= RECEIPTS
