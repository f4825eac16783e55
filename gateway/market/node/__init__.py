"""The market's off-chain side (the node, never in consensus): the market
service that notifies, keeps the directory and settles verdicts (service), the
stream store of delivered readings (streams), derived services (analytics)
and the proofs a buyer checks (proofs)."""
