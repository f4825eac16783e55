"""A domain replicated over NATS JetStream (docs/CONSENSUS.md, "Replication over NATS
JetStream"): the proposal log, the signature side channel, the transaction intake.
Generic over the bytes of blocks and proposals: the consensus core decides what they mean."""
