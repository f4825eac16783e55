"""Market events count only from the agreement contract (docs/MARKET.md):
a contract event has the emitting contract's address first, and a copy of
the agreement contract deployed under another label emits events of the
same shape for any agreement id it is given. The operator's keeper
(MarketNode) and a buyer's reading check (market.node.proofs) must not take
such a look-alike `delivery-committed` for the real agreement's."""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace

from gateway.contracts import runtime as crt
from gateway.db import genesis_files as genesis
from gateway.market.ledger import rules as ledger
from gateway.market.node import proofs
from gateway.node.config import GatewayConfig
from gateway.node.service import Gateway
from tests.support.gwtest import DOMAIN, Device

AID = bytes(range(16))
ROOT = bytes(32)
COPY = crt.contract_address("agreement-copy")


def committed(contract: bytes, batch: int) -> list:
    return [contract, "delivery-committed", AID, batch, 4 * batch, 4, ROOT]


def test_the_keeper_owes_a_verdict_only_for_the_agreement_contracts_commitment(
        tmp_path: Path) -> None:
    sup = Device("sup")
    genesis.create_domain(tmp_path, DOMAIN, {sup.pub: 0})
    gw = Gateway(GatewayConfig(domain=DOMAIN, data_dir=tmp_path, market_fee_bps=500),
                 freeze_gc=False)
    try:
        m, now = gw.market, time.time()
        m._event(committed(COPY, 0), gw.led.state, now)
        assert (AID, 0) not in m._pending  # a copy's look-alike: no verdict owed
        m._event(committed(ledger.AGREEMENT, 1), gw.led.state, now)
        assert (AID, 1) in m._pending
    finally:
        gw._writer.shutdown(wait=True)
        gw.market.close()
        gw.reader.close()
        gw.led.store.close()


def test_a_readings_commitment_is_the_agreement_contracts() -> None:
    def store(*contracts: bytes) -> SimpleNamespace:
        txs = [SimpleNamespace(events=[committed(c, 0)], height=h + 1, id=bytes([h]) * 32)
               for h, c in enumerate(contracts)]
        return SimpleNamespace(txs_of_type=lambda _type: iter(txs))

    assert proofs.commitment(store(COPY), AID, 1) is None  # type: ignore[arg-type]
    got = proofs.commitment(store(COPY, ledger.AGREEMENT), AID, 1)  # type: ignore[arg-type]
    assert got is not None and got.height == 2
