"""Dynamic trust (docs/TRUST.md): misbehaviour proofs and reports on chain,
each principal's score and level in the state (`standing`), their consensus
rules (`rules`, `evidence`)."""
