"""One device must not stall or crowd out the others (issue 9 items 4, 11).

- A device resending its old committed transactions at 80/s (mosquitto with
  the shipped settings) gets every receipt again, each one checking against
  the authority key, while another device's transactions all commit; the
  resend path reads proofs from the stored receipts trees and rebuilds none
  (a spy on the store's tree building).
- A device flooding new transactions is refused with the retryable
  `rate-limited` beyond its share while another device's transactions all
  commit; with the limit switched off (rate_limit_tps = 0) it is not. Both
  with every check in the gateway's process and with worker processes
  (`workers`, gateway/node/verifier.py).

Latency and CPU figures of the same scenarios are in bench/gateway.py
(`--scenario resend-flood` and `--scenario sender-flood`), not asserted here.
"""

from __future__ import annotations

import time

from shared.reasons import RATE_LIMITED, RETRYABLE
from tests.support.e2e_devices import GatewayThread, SimDevice, new_domain
from tests.support.spies import count_rebuilds

RESEND_RATE = 80.0  # resends per second
RESENDS = 240  # 3 s of them
OLD = 200  # committed txs the flooder resends from


def test_resend_flood_is_answered_from_stored_proofs(shipped_mosquitto, tmp_path, monkeypatch):
    broker = shipped_mosquitto
    data = tmp_path / "gw"
    authority = new_domain(data)
    gw = GatewayThread(data, broker.url, block_interval=0.2).start()
    flood = SimDevice(broker.host, broker.port, authority, name="flood").connect()
    other = SimDevice(broker.host, broker.port, authority, name="other").connect()
    try:
        flood.submit(flood.register_tx())
        other.submit(other.register_tx())
        for part in range(2):  # history in a few blocks, within the default limit
            for i in range(OLD // 2):
                flood.submit(flood.reading_tx(1000 * part + i))
            flood.wait_confirmed(30)
        other.wait_confirmed(10)
        old = [i for i in flood.sent if i in flood.receipts]
        assert len(old) == OLD + 1
        rebuilds = count_rebuilds(monkeypatch)
        resent_before = gw.gw.counters.resent_receipts

        # the flood: 80 resends/s of old committed txs; meanwhile `other`
        # submits a new reading every 4th tick (20/s)
        mine = []
        t0 = time.monotonic()
        for k in range(RESENDS):
            delay = t0 + k / RESEND_RATE - time.monotonic()
            if delay > 0:
                time.sleep(delay)  # pacing the sender, not waiting for a result
            flood.publish_raw(flood.sent[old[k % len(old)]], wait_ack=None)
            if k % 4 == 0:
                mine.append(other.submit(other.reading_tx(k)))

        other.wait_confirmed(30)  # every new tx of the other device committed
        flood.wait(lambda: flood.duplicate_receipts >= RESENDS, 30, "every resend answered")
    finally:
        flood.close()
        other.close()
        gw.stop()
    assert all(other.receipts[i].status == 0 for i in mine) and not other.rejections
    assert flood.duplicate_receipts == RESENDS and not flood.bad_replies  # each one checked
    assert not flood.rejections  # 80/s is within the default per-sender limit
    assert gw.gw.counters.resent_receipts - resent_before == RESENDS
    assert rebuilds[0] == 0  # no receipts tree rebuilt on the resend path


def flood_run(broker, tmp_path, n: int, **limit) -> tuple[SimDevice, SimDevice, float]:
    """`flood` sends n readings as fast as it can while `other` sends 10;
    returns both devices (answers collected) and the seconds the flood took
    from its first publish to its last answer."""
    data = tmp_path / "gw"
    authority = new_domain(data)
    gw = GatewayThread(data, broker.url, block_interval=0.2, **limit).start()
    flood = SimDevice(broker.host, broker.port, authority, name="flood").connect()
    other = SimDevice(broker.host, broker.port, authority, name="other").connect()
    try:
        for d in (flood, other):
            d.submit(d.register_tx())
            d.wait_confirmed(10)
        t0 = time.monotonic()
        for i in range(n):
            flood.submit(flood.reading_tx(i))
            if i % (n // 10) == 0:
                other.submit(other.reading_tx(i))
        other.wait_confirmed(30)
        # a receipt or a refusal for every one (a refused one stays in its
        # outbox for a retry, which this flooder never makes)
        flood.wait(lambda: len(flood.receipts) + len({r.tx_id for r in flood.rejections})
                   >= n + 1, 30, "every tx answered")
        took = time.monotonic() - t0
        if limit.get("workers"):  # the flood's messages went through the worker processes
            assert gw.gw.verifier.checked >= n
    finally:
        flood.close()
        other.close()
        gw.stop()
    return flood, other, took


def test_flooding_device_is_rate_limited(amqtt_broker, tmp_path, workers):
    rate, burst, n = 10.0, 20, 300
    flood, other, took = flood_run(amqtt_broker, tmp_path, n, rate_limit_tps=rate,
                                   rate_limit_burst=burst, workers=workers)
    assert len(other.receipts) == 11 and not other.rejections  # all committed
    limited = [r for r in flood.rejections if r.reason == RATE_LIMITED]
    assert limited and RATE_LIMITED in RETRYABLE
    assert len(limited) + len(flood.receipts) == n + 1
    assert {r.reason for r in flood.rejections} == {RATE_LIMITED}
    # never more than its share: the burst plus what refilled while it flooded
    assert len(flood.receipts) - 1 <= burst + rate * took + 1


def test_rate_limit_switched_off(amqtt_broker, tmp_path, workers):
    flood, other, _ = flood_run(amqtt_broker, tmp_path, 300, rate_limit_tps=0, workers=workers)
    assert len(flood.receipts) == 301 and not flood.rejections
    assert len(other.receipts) == 11 and not other.rejections
