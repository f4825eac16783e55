"""The market node of a gateway that is not, then becomes, the operator of
a replicated domain (gateway/cluster/issuer.py drives `issuing` and
`take_over`). The gateway runs in-process without a broker, as in
test_verdict_retry.py: transactions enter through `Gateway.handle`, blocks
are cut by hand, the market clock is ticked by hand.

- not issuing: a committed batch is followed (pending) but no verdict,
  close or other operator transaction is made;
- taking over while the former issuer's verdict on that batch waits in the
  mempool (it came through the intake): that verdict is kept, no second one
  is signed, and the batch is paid once."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from gateway.db import genesis_files as genesis
from gateway.db import verify as replay
from gateway.market.ledger import rules as ledger
from gateway.market.node.service import FUEL, PLAUSIBILITY_ROUND_S, VERDICT_RETRY_MAX_S
from gateway.node.config import GatewayConfig
from gateway.node.service import Gateway
from shared import merkle, stream, topics
from shared import tx as txm
from tests.support.gwtest import DOMAIN, Device

PRICE, QUANTITY, BATCH, FEE_BPS = 5, 4, 4, 500


def test_take_over_keeps_the_former_issuers_verdict(tmp_path: Path) -> None:
    sup, buyer = Device("sup"), Device("buyer")
    genesis.create_domain(tmp_path, DOMAIN, {sup.pub: 0, buyer.pub: 1000})
    gw = Gateway(GatewayConfig(domain=DOMAIN, data_dir=tmp_path, market_fee_bps=FEE_BPS),
                 freeze_gc=False)
    market, op = gw.market, gw.market.op

    async def settle() -> None:
        while len(gw.pool):
            await gw._cut_block()

    def authority_txs() -> list[txm.Tx]:
        return [t for t in gw.pool.queued() if t.sender == op.id]

    async def main() -> None:
        market.start(gw.led.state)  # issuing (a lone gateway): deploys the contract
        await settle()
        assert ledger.agreement_active(gw.led.state)
        for msg in (sup.make(txm.TYPE_OFFER, {1: "temperature", 2: "cC", 3: PRICE, 4: 60,
                                               5: "", 6: 600, 7: 1}),
                    buyer.make(txm.TYPE_DEMAND, {1: "temperature", 2: PRICE, 3: QUANTITY,
                                                 4: 60, 5: "latest"})):
            assert gw.handle(msg) is not None
            await settle()
        aid = txm.decode(msg).id[:16]
        topic = topics.data(DOMAIN, sup.id.hex() + "/" + aid.hex())
        readings = [stream.reading(sup.priv, sup.id, aid, i, 2100 + i, -2)
                    for i in range(QUANTITY)]
        for r in readings:
            market.on_data(topic, r, gw.led.state)
        # a follower now: the batch committed is followed, nothing is sent
        market.issuing = False
        assert gw.handle(sup.make(txm.TYPE_CONTRACT_CALL, {
            1: ledger.AGREEMENT, 2: "commit", 3: [aid, 0, 0, BATCH, merkle.root(readings)],
            4: 0, 5: 50_000})) is not None
        await settle()
        now = time.time()
        for k in range(3):
            market.tick(gw.led.state, now + k * VERDICT_RETRY_MAX_S)
        assert len(gw.pool) == 0
        assert ledger.agreement(gw.led.state, aid)["pending"]
        # the former issuer's verdict arrives through the intake
        v = market.streams.check_batch(aid, 0, BATCH, merkle.root(readings))
        assert v.ok
        seq = gw.led.state.get(op.id).last_seq + 1
        theirs = txm.make(op.priv, op.id, txm.TYPE_CONTRACT_CALL, DOMAIN, seq, 0, {
            1: ledger.AGREEMENT, 2: "verdict",
            3: [aid, 0, True, v.mean, int(now) // PLAUSIBILITY_ROUND_S], 4: 0, 5: FUEL})
        assert gw.handle(theirs) is not None
        # this gateway takes the lease over (the issuer has read the seq: op.seq)
        op.seq = seq
        market.issuing = True
        market.take_over(gw.led.state, authority_txs(), now)
        for k in range(3):
            market.tick(gw.led.state, now + k * VERDICT_RETRY_MAX_S)
        assert [t.message for t in authority_txs()] == [theirs]  # no second verdict
        before = gw.led.state.get(sup.id).balance
        await settle()
        fee = PRICE * BATCH * FEE_BPS // 10_000
        assert gw.led.state.get(sup.id).balance == before + PRICE * BATCH - fee
        assert ledger.agreement(gw.led.state, aid)["pending"] == {}

    try:
        asyncio.run(main())
        with gw.reader as st:
            assert replay.verify_chain(st, genesis.load(gw.cfg.genesis_file)).ok
    finally:
        gw._writer.shutdown(wait=True)
        market.close()
        gw.led.store.close()
