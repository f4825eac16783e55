"""The gateway's persistent session (issue 3 item 5).

The gateway connects with a fixed client id, clean session off, and
subscribes to tl/<domain>/tx at QoS 1, so a broker may keep transactions for
it while it is down.

mosquitto (docs/mosquitto.conf settings) does: transactions published while
the gateway is stopped are delivered when it comes back, and with persistence
on they also survive a restart of mosquitto itself. The devices here never
resend, so every receipt proves the broker kept the original message.

amqtt 0.12 (the embedded broker) does not: its AnonymousAuthPlugin (the only
way to accept the boards, which send no credentials) marks every session
anonymous, and amqtt keeps neither offline QoS 1 messages nor the session of
an anonymous client (broker.py `_run_broadcast`: "not is_anonymous"; the
session monitor drops disconnected anonymous sessions within a second).
Transactions published while the gateway is down are lost at the broker; the
devices' resend of unconfirmed transactions (same bytes, in seq order) is what
brings them in. With `thingledger run` the embedded broker lives in the
gateway's process, so it never outlives a gateway stop anyway.
"""

from __future__ import annotations

from tests.support.e2e_devices import GatewayThread, SimDevice, chain_txs, new_domain

N = 25


def test_mosquitto_keeps_txs_for_stopped_gateway(shipped_mosquitto, tmp_path):
    broker = shipped_mosquitto
    data = tmp_path / "gw"
    authority = new_domain(data)
    d = SimDevice(broker.host, broker.port, authority, resend_on_reconnect=False).connect()
    try:
        gw = GatewayThread(data, broker.url).start()
        d.submit(d.register_tx())
        d.wait_confirmed(10)
        gw.stop()

        # 1. the gateway is down, the broker runs: N txs, each PUBACKed by mosquitto
        first = [d.submit(d.reading_tx(100 + i), wait_ack=10) for i in range(N)]
        gw = GatewayThread(data, broker.url).start()
        d.wait_confirmed(15)  # no resend: the broker delivered them
        assert set(first) <= set(d.receipts)
        assert gw.gw.counters.received == N and gw.gw.counters.committed == N
        gw.stop()

        # 2. the gateway is down and mosquitto restarts (SIGTERM saves its
        #    persistence file): the queue survives
        second = [d.submit(d.reading_tx(200 + i), wait_ack=10) for i in range(N)]
        broker.restart()
        d.wait_reconnected(2)  # the device's rx subscription is back
        gw = GatewayThread(data, broker.url).start()
        d.wait_confirmed(15)
        assert set(second) <= set(d.receipts)
        assert gw.gw.counters.received == N and gw.gw.counters.committed == N
        gw.stop()
    finally:
        d.close()
    assert d.resends == 0
    assert not d.bad_replies and not d.rejections
    chain = [t.id for t in chain_txs(data)]
    assert set(first + second) <= set(chain) and len(chain) == 2 * N + 1


def test_amqtt_drops_txs_for_stopped_gateway(amqtt_broker, tmp_path):
    """What amqtt does (see module docstring): nothing published while the
    gateway is down reaches it; the devices' resends do."""
    broker = amqtt_broker
    data = tmp_path / "gw"
    authority = new_domain(data)
    d = SimDevice(broker.host, broker.port, authority).connect()
    try:
        gw = GatewayThread(data, broker.url).start()
        d.submit(d.register_tx())
        d.wait_confirmed(10)
        gw.stop()

        offline = [d.submit(d.reading_tx(100 + i), wait_ack=10) for i in range(N)]
        gw = GatewayThread(data, broker.url).start()
        # the broker kept nothing: only the resends (sent after the gateway
        # subscribed again) reach it, and all of them are committed
        assert d.resend_due(0.0) == N
        d.wait_confirmed(15)
        assert set(offline) <= set(d.receipts)
        c = gw.gw.counters
        assert (c.received, c.committed, c.rejected, c.resent_receipts) == (N, N, 0, 0)
        gw.stop()
    finally:
        d.close()
    assert not d.bad_replies and not d.rejections
    assert len(chain_txs(data)) == N + 1


def test_mosquitto_restart_under_running_gateway(shipped_mosquitto, tmp_path):
    """mosquitto restarts while the gateway and a device run: both reconnect
    by themselves (the device resends what had no receipt, the broker
    redelivers what the gateway had not acknowledged); every tx is committed
    once and answered."""
    broker = shipped_mosquitto
    data = tmp_path / "gw"
    authority = new_domain(data)
    gw = GatewayThread(data, broker.url).start()
    d = SimDevice(broker.host, broker.port, authority).connect()
    try:
        d.submit(d.register_tx())
        d.wait_confirmed(10)
        before = [d.submit(d.reading_tx(300 + i)) for i in range(N)]  # some in flight
        broker.restart()
        d.wait_reconnected(2)
        after = [d.submit(d.reading_tx(400 + i), wait_ack=10) for i in range(N)]
        d.wait_confirmed(20, resend_after=2.0)
        assert set(before + after) <= set(d.receipts)
        gw.wait_event(r"block height=\d+", 5)
    finally:
        d.close()
        gw.stop()
    assert not d.bad_replies and not d.rejections
    chain = [t.id for t in chain_txs(data)]
    assert len(chain) == len(set(chain)) == 2 * N + 1
