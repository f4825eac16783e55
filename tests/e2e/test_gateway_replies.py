"""Rejections as devices act on them (docs/PROTOCOL.md, "Replies"): sealed
by the domain authority, final or retryable.

- A real board (the firmware under MicroPython, 64 KiB heap) loses no
  reading to a full mempool: another client floods a gateway whose mempool
  holds 40 transactions (and sends what was refused again, so the gateway's
  hold of its order does not end the flood), the board's readings are
  refused `mempool-full`
  (a retryable reason, with a retry hint), it keeps them and sends them
  again after its backoff, oldest first, and every seq it signed ends up
  in the chain.
- Anyone may write a device's rx topic on an open domain: an unsigned
  rejection, or one sealed by another key, makes a board drop nothing (the
  transaction is committed once a gateway is there).
- `thingledger`'s submit takes only the reply about its own transaction,
  sealed by the authority: not one about another tx with the same seq, not
  an unsigned or forged one."""

from __future__ import annotations

import concurrent.futures
import queue
import re
import time

import pytest

from shared import messages, notice, p256, topics
from shared import tx as txm
from tests.support.e2e_devices import DOMAIN, GatewayThread, SimDevice, chain_txs, new_domain
from tests.support.mpyrun import firmware_build
from tests.support.waits import lines, wait_line
from tools import submit as submit_mod
from tools.vboard import VirtualBoard

MEMPOOL = 40  # transactions
BLOCK_S = 0.5  # so the mempool takes at most 80 tx/s
FLOOD_PER_S = 150
FLOOD_S = 8.0


def _seqs(pattern: str, seen: list[str]) -> set[int]:
    return {int(s) for s in re.findall(pattern, "\n".join(seen), re.M)}


@pytest.mark.micropython
def test_a_board_loses_no_reading_to_a_full_mempool(mosquitto_broker, tmp_path):
    broker = mosquitto_broker
    data = tmp_path / "gateway"
    authority = new_domain(data)
    gw = GatewayThread(data, broker.url, block_interval=BLOCK_S, mempool_capacity=MEMPOOL).start()
    flooder = SimDevice(broker.host, broker.port, authority, name="flooder").connect()
    board = VirtualBoard("steady", tmp_path / "board")
    board.configure(domain=DOMAIN, authority_hex=authority.hex(), host=broker.host,
                    port=broker.port, interval_ms=200)
    proc = board.start(firmware_build(), heap="64k")
    q, seen = lines(proc), []
    try:
        flooder.receipt_for(flooder.submit(flooder.register_tx()), 15)
        wait_line(q, r"^receipt-verified seq=1 ", 30, seen)  # the board's register
        flood = [flooder.reading_tx(value=i) for i in range(int(FLOOD_PER_S * FLOOD_S))]
        step, t0 = FLOOD_PER_S // 10, time.monotonic()
        for i in range(0, len(flood), step):  # paced load: ~FLOOD_PER_S new, every 0.1 s
            for m in flood[i:i + step]:
                flooder.submit(m)
            if i % (5 * step) == 0:  # and, like a device, what was refused, oldest first
                flooder.resend_due(0.5, limit=2 * MEMPOOL)
            while (pause := t0 + (i + step) / FLOOD_PER_S - time.monotonic()) > 0:
                try:
                    seen.append(q.get(timeout=pause))
                except queue.Empty:
                    pass
        last = max(_seqs(r"^reading seq=(\d+)", seen))
        signed = {s for s in _seqs(r"^reading seq=(\d+)", seen) if s <= last}
        deadline = time.monotonic() + 90
        while True:  # until each reading signed during the flood is settled on the board
            settled = (_seqs(r"^receipt-verified seq=(\d+)", seen)
                       | _seqs(r"^rejected seq=(\d+)", seen))
            if signed <= settled:
                break
            assert time.monotonic() < deadline, "\n".join(seen[-40:])
            wait_line(q, r"^(receipt-verified|rejected) ", max(1.0, deadline - time.monotonic()),
                      seen)
    finally:
        proc.terminate()
        proc.wait(10)
        flooder.close()
        gw.stop()

    refused = [ln for ln in seen if re.match(r"^(retry|rejected) seq=\d+ reason=mempool-full", ln)]
    assert len(refused) >= 3, f"the flood hardly filled the mempool: {refused}"
    board_id = bytes.fromhex(re.search(r"^online id=([0-9a-f]{32})", "\n".join(seen), re.M)[1])
    committed = {t.seq for t in chain_txs(data) if t.sender == board_id}
    lost = sorted(signed - committed)
    assert not lost, f"{len(lost)} of {len(signed)} readings lost: seqs {lost}; " \
                     f"{len(refused)} refusals, e.g. {refused[:3]}"
    assert not [ln for ln in seen if ln.startswith("rejected")]


@pytest.mark.micropython
def test_a_forged_rejection_makes_a_board_drop_nothing(amqtt_broker, paho_client, tmp_path):
    broker = amqtt_broker
    data = tmp_path / "gateway"
    authority = new_domain(data)
    sniffer = paho_client(broker, [topics.tx(DOMAIN)])
    board = VirtualBoard("target", tmp_path / "board")
    board.configure(domain=DOMAIN, authority_hex=authority.hex(), host=broker.host,
                    port=broker.port, interval_ms=300)
    proc = board.start(firmware_build(), heap="64k")
    q, seen = lines(proc), []
    gw = None
    try:
        # no gateway yet: the board's register waits in its outbox; an
        # outsider who reads it on the tx topic answers with rejections
        reg = sniffer.wait_count(1, topics.tx(DOMAIN), 30)[0].payload
        t = txm.decode(reg)
        rx = topics.rx(DOMAIN, t.sender.hex())
        plain = messages.rejection(t.id, t.seq, "not-authorized", "forged")
        other, _ = p256.keygen()
        aid = txm.device_id(authority)
        for forged in (plain, notice.seal(other, aid, plain)):
            sniffer.publish(rx, forged)
        gw = GatewayThread(data, broker.url, block_interval=0.3).start()
        wait_line(q, r"^receipt-verified seq=1 ", 30, seen)  # resent, committed
    finally:
        proc.terminate()
        proc.wait(10)
        if gw is not None:
            gw.stop()
    assert [x.id for x in chain_txs(data) if x.sender == t.sender][:1] == [t.id]
    # both were read before the gateway was there, and changed nothing
    assert [ln for ln in seen if ln.startswith("bad-reply")] == [
        "bad-reply reason=bad-proof detail=unsigned-rejection",
        "bad-reply reason=bad-signature detail=bad-signature"], seen


def test_submit_takes_only_the_sealed_reply_about_its_transaction(amqtt_broker, paho_client):
    broker = amqtt_broker
    auth_priv, auth_pub = p256.keygen()
    aid = txm.device_id(auth_pub)
    person_priv, person_pub = p256.keygen()
    pid = txm.device_id(person_pub)
    seq = 7
    message = txm.make(person_priv, pid, txm.TYPE_READING, DOMAIN, seq, 0, {1: 1, 2: 0})
    tx_id = txm.tx_id(message)
    other_tx = txm.make(person_priv, pid, txm.TYPE_READING, DOMAIN, seq, 0, {1: 2, 2: 0})
    other_key, _ = p256.keygen()
    replier = paho_client(broker, [topics.tx(DOMAIN)])
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        reply = pool.submit(submit_mod.submit, broker.url, DOMAIN, message, auth_pub, 20.0)
        replier.wait_count(1, topics.tx(DOMAIN), 20)
        rx = topics.rx(DOMAIN, pid.hex())
        decoys = [
            # sealed by the authority, same seq, another transaction
            notice.seal(auth_priv, aid, messages.rejection(txm.tx_id(other_tx), seq, "replay", "")),
            messages.rejection(tx_id, seq, "bad-tx", "unsigned"),  # not sealed
            notice.seal(other_key, aid, messages.rejection(tx_id, seq, "bad-tx", "forged")),
            # a receipt about it whose header does not check (receipts are not sealed:
            # their header's signature or certificate is their proof)
            messages.receipt(tx_id, seq, 0, "ok", [], 1, b"not a signed header", 0, 1, []),
        ]
        for d in decoys:
            replier.publish(rx, d)
        replier.publish(rx, notice.seal(auth_priv, aid, messages.rejection(
            tx_id, seq, "insufficient-funds", "the answer")))
        got = reply.result(30)
    assert (got.ok, got.reason, got.detail, got.retry_ms) == (
        False, "insufficient-funds", "the answer", None)


def test_submit_says_when_the_only_receipt_fails_its_check(amqtt_broker, paho_client):
    """A receipt whose header does not check (a wrong validator set, a
    forgery sealed with a leaked key) is not taken as the answer, and the
    time-out says that one came and why it was refused."""
    broker = amqtt_broker
    _, auth_pub = p256.keygen()
    person_priv, person_pub = p256.keygen()
    pid = txm.device_id(person_pub)
    message = txm.make(person_priv, pid, txm.TYPE_READING, DOMAIN, 1, 0, {1: 1, 2: 0})
    replier = paho_client(broker, [topics.tx(DOMAIN)])
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        reply = pool.submit(submit_mod.submit, broker.url, DOMAIN, message, auth_pub, 3.0)
        replier.wait_count(1, topics.tx(DOMAIN), 20)
        replier.publish(topics.rx(DOMAIN, pid.hex()), messages.receipt(
            txm.tx_id(message), 1, 0, "ok", [], 1, b"not a signed header", 0, 1, []))
        with pytest.raises(submit_mod.SubmitError) as out:
            reply.result(30)
    assert "failed its check" in str(out.value)
