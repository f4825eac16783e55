"""The consensus core, pure (no network, database, threads or clock): records
and the Merkle state (state), the kv key layout (keys), validation (validate),
blocks and receipts (blocks), the genesis (genesis) and the tx-type registry
the feature packages plug into (txtypes). It imports no feature package."""
