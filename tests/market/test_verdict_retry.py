"""A refused operator verdict is sent again until the batch is judged on
chain (issue 9, item 5). The gateway runs in-process (gateway.node.service.Gateway,
no broker): transactions enter through its ingress (`Gateway.handle`, the
path the operator's own verdicts take), blocks are cut by its producer, and
the market clock is ticked by hand. A mempool of capacity 1 that another
device fills while the commitment's block is written refuses the verdict
(mempool-full);
before the fix that verdict was forgotten and the supplier never paid."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from gateway.db import genesis_files as genesis
from gateway.db import verify as replay
from gateway.market.ledger import rules as ledger
from gateway.market.node.service import VERDICT_RETRY_MAX_S
from gateway.node.config import GatewayConfig
from gateway.node.service import Gateway
from shared import merkle, stream, topics
from shared import tx as txm
from tests.support.gwtest import DOMAIN, Device

FEE_BPS = 500
PRICE, QUANTITY, BATCH = 5, 8, 4
INTERVAL = 60  # the agreement runs 8 x 60 x 2 + 120 s: the test's clock stays inside


class Rig:
    def __init__(self, data: Path) -> None:
        self.sup, self.buyer, self.flood = Device("sup"), Device("buyer"), Device("flood")
        genesis.create_domain(data, DOMAIN, {self.sup.pub: 0, self.buyer.pub: 1000,
                                             self.flood.pub: 0})
        self.data = data
        self.open()

    def open(self) -> None:
        data = self.data
        # one tx per block and room for one waiting tx: a tx that arrives
        # while a block is written fills the mempool
        self.gw = Gateway(GatewayConfig(domain=DOMAIN, data_dir=data, mempool_capacity=1,
                                        block_max_txs=1, market_fee_bps=FEE_BPS),
                          freeze_gc=False)
        self.events: list[str] = []
        self.gw.on_event = self.events.append
        self.gw.market.log = self.events.append
        self.clock = time.time()
        self.blocks: list = []

    def close(self) -> None:
        self.gw._writer.shutdown(wait=True)
        self.gw.market.close()
        self.gw.reader.close()
        self.gw.led.store.close()

    @property
    def state(self):
        return self.gw.led.state

    def balance(self, d: Device) -> int:
        r = self.state.get(d.id)
        return 0 if r is None else r.balance

    async def block(self) -> None:
        n = self.gw.led.head.height
        await self.gw._cut_block()
        assert self.gw.led.head.height == n + 1
        self.blocks.append(self.gw.led.head)

    async def block_and_flood(self) -> None:
        """Cut a block; while it is written (the producer waits on the store
        thread) another device's tx arrives and fills the mempool, so the
        operator's verdict on the block's commitment is refused."""
        n = self.gw.led.head.height
        cut = asyncio.create_task(self.gw._cut_block())
        while len(self.gw.pool):  # until the producer has taken the queued txs
            await asyncio.sleep(0)
        assert self.gw.led.head.height == n  # not committed yet
        assert self.gw.handle(self.flood.make(txm.TYPE_READING, {1: 1, 2: 0})) is not None
        await cut
        assert self.gw.led.head.height == n + 1
        self.blocks.append(self.gw.led.head)

    def refused_verdicts(self) -> int:
        me = self.gw.market.op.id.hex()[:8]
        n = sum(f"rejected contract-call from={me} reason=mempool-full" in e for e in self.events)
        self.events.clear()
        return n

    async def settle(self) -> None:
        """Cut blocks until the mempool is empty."""
        while len(self.gw.pool):
            await self.block()

    async def send(self, d: Device, type_: int, body: dict) -> bytes:
        msg = d.make(type_, body)
        assert self.gw.handle(msg) is not None, self.events[-3:]
        await self.settle()
        return msg

    def tick(self, seconds: float) -> None:
        self.clock += seconds
        self.gw.market.tick(self.state, self.clock)

    def paid_events(self) -> list[list]:
        return [e for b in self.blocks for r in b.receipts for e in r.events
                if len(e) > 1 and e[1] == "delivery-paid"]


@pytest.fixture
def rig(tmp_path: Path):
    r = Rig(tmp_path / "gw")
    yield r
    r.close()


async def _trade(rig: Rig) -> tuple[bytes, list[bytes]]:
    """Deploy, offer, demand: the agreement id and its readings (all delivered)."""
    rig.gw.market.start(rig.state)  # the operator deploys the agreement contract
    await rig.settle()
    assert ledger.agreement_active(rig.state)
    await rig.send(rig.sup, txm.TYPE_OFFER, {1: "temperature", 2: "cC", 3: PRICE,
                                             4: INTERVAL, 5: "", 6: 600, 7: 1})
    msg = await rig.send(rig.buyer, txm.TYPE_DEMAND, {1: "temperature", 2: PRICE,
                                                      3: QUANTITY, 4: 60, 5: "latest"})
    aid = txm.decode(msg).id[:16]
    assert ledger.agreement(rig.state, aid)["state"] == "open"
    topic = topics.data(DOMAIN, rig.sup.id.hex() + "/" + aid.hex())
    readings = [stream.reading(rig.sup.priv, rig.sup.id, aid, i, 2100 + i, -2)
                for i in range(QUANTITY)]
    for r in readings:
        rig.gw.market.on_data(topic, r, rig.state)
    return aid, readings


def _commit(rig: Rig, aid: bytes, batch: int, leaves: list[bytes]) -> None:
    msg = rig.sup.make(txm.TYPE_CONTRACT_CALL, {
        1: ledger.AGREEMENT, 2: "commit",
        3: [aid, batch, batch * BATCH, len(leaves), merkle.root(leaves)], 4: 0, 5: 50_000})
    assert rig.gw.handle(msg) is not None


def test_a_refused_verdict_is_sent_again_and_the_batch_paid(rig: Rig) -> None:
    async def main() -> None:
        aid, readings = await _trade(rig)
        for batch in range(QUANTITY // BATCH):
            before = rig.balance(rig.sup)
            _commit(rig, aid, batch, readings[batch * BATCH:(batch + 1) * BATCH])
            await rig.block_and_flood()  # the verdict goes out at once and is refused
            assert rig.refused_verdicts() == 1
            await rig.settle()  # the flood's block: nothing judged the batch
            assert rig.balance(rig.sup) == before
            assert ledger.agreement(rig.state, aid)["pending"] != {}
            rig.tick(VERDICT_RETRY_MAX_S)  # the retry is due
            await rig.settle()
            assert rig.balance(rig.sup) == before + PRICE * BATCH - PRICE * BATCH * FEE_BPS \
                // 10_000
        # every batch paid once; the agreement closed itself; nothing more goes out
        assert [e[3] for e in rig.paid_events()] == list(range(QUANTITY // BATCH))
        assert ledger.agreement(rig.state, aid)["state"] == "closed"
        rig.tick(VERDICT_RETRY_MAX_S)
        assert len(rig.gw.pool) == 0 and not rig.gw.market._pending

    asyncio.run(main())
    with rig.gw.reader as st:
        assert replay.verify_chain(st, genesis.load(rig.gw.cfg.genesis_file)).ok


def test_a_resend_never_pays_twice(rig: Rig) -> None:
    """A retry that comes due while the first verdict is still queued sends
    the same signed tx: one pending tx, one payment. A refused verdict whose
    seq the operator has since used up (another operator tx got in) is a
    replay: a fresh verdict with the next seq is signed. Each batch is paid
    exactly once (and the contract refuses a second verdict for a batch:
    unknown-batch, tests/contracts)."""
    async def main() -> None:
        aid, readings = await _trade(rig)
        gw, op = rig.gw, rig.gw.market.op
        # batch 0: the retry is due before its block
        _commit(rig, aid, 0, readings[:BATCH])
        await rig.block()  # the verdict is admitted (queued)
        queued = gw.pool.pending
        rig.tick(VERDICT_RETRY_MAX_S)
        rig.tick(VERDICT_RETRY_MAX_S)
        assert gw.pool.pending == queued  # the same tx, not a second one
        await rig.settle()
        assert len(rig.paid_events()) == 1
        # batch 1: refused, then the operator signs another tx (a grant)
        _commit(rig, aid, 1, readings[BATCH:])
        await rig.block_and_flood()
        assert rig.refused_verdicts() == 1
        await rig.settle()
        refused_seq = op.seq
        op.send(rig.state, txm.TYPE_TRANSFER, {1: rig.flood.id, 2: 1})
        await rig.settle()
        rig.tick(VERDICT_RETRY_MAX_S)  # the old verdict is a replay now: a fresh one
        assert op.seq == refused_seq + 2
        await rig.settle()
        paid = rig.paid_events()
        assert [e[3] for e in paid] == [0, 1]
        fee = PRICE * BATCH * FEE_BPS // 10_000
        assert rig.balance(rig.sup) == 2 * (PRICE * BATCH - fee)
        rig.tick(VERDICT_RETRY_MAX_S)
        assert len(gw.pool) == 0

    asyncio.run(main())


def test_a_verdict_pending_at_a_stop_is_sent_after_the_restart(rig: Rig) -> None:
    """The gateway stops with a batch committed and its verdict refused: the
    restarted gateway judges it from the stream store and pays it."""
    async def main() -> tuple[bytes, int]:
        aid, readings = await _trade(rig)
        _commit(rig, aid, 0, readings[:BATCH])
        await rig.block_and_flood()
        assert rig.refused_verdicts() == 1
        await rig.settle()
        return aid, rig.balance(rig.sup)

    aid, before = asyncio.run(main())
    assert before == 0
    rig.close()
    rig.open()

    async def after() -> None:
        rig.gw.market.start(rig.state)
        rig.tick(VERDICT_RETRY_MAX_S)
        await rig.settle()

    asyncio.run(after())
    assert rig.balance(rig.sup) == PRICE * BATCH - PRICE * BATCH * FEE_BPS // 10_000
    assert [e[3] for e in rig.paid_events()] == [0]
