"""Cross-domain exchange (docs/CROSSDOMAIN.md): light clients of other domains
kept in the state (`client`), packets with escrow, proofs and timeouts, and
their tx types (`rules`), the relayer process (`relayer`) and the reads the
CLI shows (`view`)."""
