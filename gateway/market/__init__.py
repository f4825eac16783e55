"""The service economy on the gateway: the off-chain stream store that checks
suppliers' delivery commitments, the retained offers directory, edge
analytics for derived services, and (as they land) matching and the
operator's keeper (docs/MARKET.md). `ledger/` holds the consensus files,
`node/` the off-chain node's; modules are imported by name, this package
imports nothing.
"""
