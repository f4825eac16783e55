"""Plugs the feature packages into the ledger core: identity, market,
contracts, trust, firmware and xdomain register their tx types (schema, precheck,
apply) with the ledger's registry (gateway/ledger/txtypes.py), and xdomain its
hold on payments with the market's (market/ledger/rules.guard_payment).
Imported by gateway/__init__.py, so any import of a gateway module finds
every tx type registered; the ledger itself never imports a feature package."""

from __future__ import annotations

from gateway.firmware import rules as firmware_rules
from gateway.identity import rules as identity_rules
from gateway.ledger import consensus, txtypes
from gateway.ledger import validate as _core  # noqa: F401 - registers register/reading/transfer
from gateway.market.ledger import rules as market_rules
from gateway.market.ledger import schema as market_schema
from gateway.trust import rules as trust_rules
from gateway.xdomain import recorded as xdomain_recorded
from gateway.xdomain import rules as xdomain_rules
from shared import tx as txm

MARKET_TYPES = (txm.TYPE_OFFER, txm.TYPE_WITHDRAW, txm.TYPE_DEMAND, txm.TYPE_CLOSE)
# the contracts' tx types: run by the market's ledger module through the
# contracts' ledger binding (gateway/contracts/binding.py)
CONTRACT_TYPES = (txm.TYPE_CONTRACT_CALL, txm.TYPE_CONTRACT_ADMIN)


def _feature(code: int, owner: str) -> txtypes.TxType:
    return txtypes.TxType(code, owner, market_schema.check, market_rules.precheck,
                          market_rules.apply, isolated=True)


txtypes.register(*identity_rules.TX_TYPES)
txtypes.register(*consensus.TX_TYPES)  # VALSET
txtypes.register(*firmware_rules.TX_TYPES)
txtypes.register(*(_feature(c, "market") for c in MARKET_TYPES))
txtypes.register(*(_feature(c, "contracts") for c in CONTRACT_TYPES))
txtypes.register(*trust_rules.TX_TYPES)
txtypes.observe(trust_rules.observe)
txtypes.register(*xdomain_rules.TX_TYPES)
# a batch of an agreement a cross-domain purchase serves is paid once A's batch is proven
market_rules.guard_payment(xdomain_recorded.payment_hold)
