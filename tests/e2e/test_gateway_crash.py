"""Crash safety (issue 3 item 8): SIGKILL the gateway process while
transactions flow, restart it, and check the chain and the receipts.

The gateway runs as a subprocess (`thingledger run --no-boards --broker ...`),
as deployed. Simulated devices (tests/support/e2e_devices.py) publish
readings continuously, pipelined (several unconfirmed at a time, like the
firmware's outbox), and resend (same bytes) what has no receipt after a
timeout or a reconnect.

mosquitto (docs/mosquitto.conf settings): the gateway's persistent session
keeps everything the gateway had not acknowledged. The gateway acknowledges a
transaction only after the block holding it is committed, so what it held in
memory at the SIGKILL is delivered again after the restart, in order: every
transaction ends up committed exactly once and every one gets a receipt.

amqtt (the embedded broker, here in the test process, so it keeps running
while the gateway restarts): amqtt keeps no messages for a disconnected
client that authenticated anonymously (every client, with its
AnonymousAuthPlugin), so what devices publish while the gateway is down is
lost at the broker. Devices resend it, but a resent seq below one already
committed is a replay by design (seq strictly increasing): such a tx gets a
`replay` rejection and is not in the chain. Everything else still holds.

test_stop_while_a_block_commits: Ctrl-C (Gateway.stop) while the writer
thread commits a block finishes that block (state, receipts) before closing.
"""

from __future__ import annotations

import threading

from tests.support.brokers import wait_until
from tests.support.e2e_devices import (
    GatewayProcess,
    GatewayThread,
    SimDevice,
    chain_txs,
    new_domain,
    shipped_mosquitto_options,
    thingledger,
)

N_DEVICES = 4
BLOCK_INTERVAL = 0.2
TICK = 0.02            # each device publishes a reading every ~20 ms
RESEND_AFTER = 1.5     # seconds without receipt before a device resends
MAX_ROUNDS = 1500      # bound on the publishing loop (it is stopped much earlier)


class Publisher(threading.Thread):
    """Every TICK: one new reading per device, and resends of what is overdue."""

    def __init__(self, devices: list[SimDevice]) -> None:
        super().__init__(name="publisher", daemon=True)
        self.devices = devices
        self.count = 0
        self.stop_event = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            for i in range(MAX_ROUNDS):
                if self.stop_event.is_set():
                    return
                for d in self.devices:
                    d.submit(d.reading_tx(2000 + i))
                    d.resend_due(RESEND_AFTER)
                    self.count += 1
                self.stop_event.wait(TICK)  # pacing, not synchronisation
        except BaseException as e:  # reported by stop()
            self.error = e

    def stop(self) -> None:
        self.stop_event.set()
        self.join(10)
        assert not self.is_alive()
        assert self.error is None, repr(self.error)


def receipts(devices) -> int:
    return sum(len(d.receipts) for d in devices)


def run_crash(broker, tmp_path, lossy_broker: bool, kills: int) -> None:
    data = tmp_path / "gw"
    authority = new_domain(data)
    gwp = GatewayProcess(data, broker.url, block_interval=BLOCK_INTERVAL)
    devices: list[SimDevice] = []
    pub: Publisher | None = None
    try:
        gwp.start()
        devices = [SimDevice(broker.host, broker.port, authority, name=f"dev{i}").connect()
                   for i in range(N_DEVICES)]
        for d in devices:
            d.submit(d.register_tx())
        for d in devices:
            d.wait_confirmed(10)
        pub = Publisher(devices)
        pub.start()

        in_flight: list[bytes] = []
        for n in range(kills):
            if n == 0:  # a few blocks committed, transactions flowing
                wait_until(lambda: receipts(devices) >= N_DEVICES + 60, 20,
                           what="first receipts")
            else:       # right after a commit (receipts, acks on their way)
                gwp.expect(r"block height=\d+ txs=[1-9]", 10)
            gwp.kill()
            killed_at = pub.count
            in_flight += [i for d in devices for i in d.unconfirmed()]
            # devices keep publishing while the gateway is down
            wait_until(lambda k=killed_at: pub.count >= k + 40, 10, what="publishing while down")
            before = receipts(devices)
            gwp.start()
            wait_until(lambda b=before: receipts(devices) >= b + 80, 20,
                       what="receipts after restart")
        pub.stop()
        for d in devices:  # the devices resend until everything is answered
            d.wait_confirmed(30, resend_after=RESEND_AFTER)
        for d in devices:  # a resend of a committed tx is answered with its receipt
            dup = d.duplicate_receipts
            d.publish_raw(d.sent[min(d.receipts, key=lambda i: d.receipts[i].seq)])
            d.wait(lambda d=d, dup=dup: d.duplicate_receipts > dup, 10, "receipt again")
        assert gwp.interrupt() == 0, "\n".join(gwp.lines[-20:])
    finally:
        if pub is not None and pub.is_alive():
            pub.stop_event.set()
            pub.join(10)
        for d in devices:
            d.close()
        gwp.close()

    # the chain on disk is whole and re-validates from genesis
    verify = thingledger("chain", "verify", "--data-dir", str(data))
    assert verify.returncode == 0, verify.stdout + verify.stderr

    chain = chain_txs(data)
    ids = [t.id for t in chain]
    assert len(ids) == len(set(ids)), "a transaction is in the chain twice"
    keys = [(t.sender, t.seq) for t in chain]
    assert len(keys) == len(set(keys)), "a (sender, seq) is in the chain twice"
    where = {t.id: t for t in chain}
    for d in devices:
        assert not d.bad_replies, d.bad_replies
        seqs = [t.seq for t in chain if t.sender == d.id]
        assert seqs == sorted(set(seqs)), f"{d.name}: seq not strictly increasing in the chain"
        # every tx that got a receipt is in the chain, at the receipt's height
        for tx_id, r in d.receipts.items():
            assert tx_id in where, f"{d.name}: receipted tx {tx_id.hex()[:12]} not in chain"
            assert where[tx_id].height == r.height
        answers = d.answered()
        assert set(answers) == set(d.sent), f"{d.name}: some txs never got an answer"
        lost = {i for i, a in answers.items() if a != "receipt"}
        if lossy_broker:
            # amqtt dropped what was published while the gateway was down
            assert all(answers[i] == "replay" for i in lost), {answers[i] for i in lost}
            assert not lost & set(where), "a refused tx is in the chain"
        else:
            assert not lost, f"{d.name}: {len(lost)} txs without receipt: " \
                             f"{sorted(answers[i] for i in lost)[:5]}"
    committed = sum(len(d.receipts) for d in devices)
    assert len(chain) == committed
    assert in_flight, "nothing was in flight at a SIGKILL"
    if not lossy_broker:
        assert all(i in where for i in in_flight)
    print(f"{len(in_flight)} txs unconfirmed at the SIGKILLs; "
          f"{len(chain)} txs committed, {sum(d.resends for d in devices)} resends, "
          f"{sum(d.duplicate_receipts for d in devices)} duplicate receipts, "
          f"{sum(len(d.sent) - len(d.receipts) for d in devices)} lost at the broker")


def test_sigkill_mosquitto(mosquitto_factory, tmp_path):
    broker = mosquitto_factory(**shipped_mosquitto_options())
    run_crash(broker, tmp_path, lossy_broker=False, kills=2)


def test_sigkill_amqtt_broker_keeps_running(amqtt_broker, tmp_path):
    run_crash(amqtt_broker, tmp_path, lossy_broker=True, kills=1)


def test_stop_while_a_block_commits(shipped_mosquitto, tmp_path):
    """Ctrl-C (Gateway.stop) while the writer thread commits a block: the
    block is finished (state, receipts, PUBACKs) before the store closes."""
    broker = shipped_mosquitto
    data = tmp_path / "gw"
    authority = new_domain(data)
    gw = GatewayThread(data, broker.url).start()
    d = SimDevice(broker.host, broker.port, authority).connect()
    try:
        store = gw.gw.led.store
        real = store.commit_block
        entered, release = threading.Event(), threading.Event()

        def slow_commit(block, meta=None):
            entered.set()
            assert release.wait(10)
            return real(block, meta)

        store.commit_block = slow_commit
        tx_id = d.submit(d.register_tx())
        assert entered.wait(10), "no block was cut"
        errors: list[BaseException] = []

        def stop() -> None:
            try:
                gw.stop()
            except BaseException as e:  # reported below
                errors.append(e)

        stopper = threading.Thread(target=stop)
        stopper.start()
        wait_until(lambda: gw.gw._stopping, 10, what="stop() under way")
        release.set()  # the commit finishes while stop() waits for it
        stopper.join(20)
        assert not stopper.is_alive() and not errors, errors
        d.receipt_for(tx_id, 10)
    finally:
        d.close()
        gw.stop()
    assert [t.id for t in chain_txs(data)] == [tx_id]
